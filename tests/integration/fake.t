#!/usr/bin/perl
# fake.t — the fake llama-server (tests/fake): endpoint shapes, grammar, slots/queue, prefix cache,
# every fault kind, FIRST_N, /fake/* control endpoints, signals. No database needed.
# Binary: $KGX_FAKE, default build/bin/fake-llama under the repo root.
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);
use POSIX qw(:sys_wait_h);
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path(__FILE__)) . '/../..');
my $bin  = $ENV{KGX_FAKE} // "$root/build/bin/fake-llama";
$bin = "$root/$bin" unless $bin =~ m{^/};
plan skip_all => "no fake-llama at $bin (make build/bin/fake-llama)" unless -x $bin;

my $J = JSON::PP->new->canonical;

# ---------------------------------------------------------------- helpers
my $psock;   # kept-alive socket for POSTs (see post)
sub start_fake {
    my @args = @_;
    my $pid = open(my $out, '-|', $bin, '--port', '0', @args) or die "cannot start $bin: $!";
    my $line = <$out>;
    die "fake did not start" unless defined $line;
    my ($host, $port) = $line =~ /^listening on (\S+):(\d+)$/ or die "bad first line: $line";
    return { pid => $pid, port => $port, out => $out, line => $line };
}
sub stop_fake {
    my ($f, $sig) = @_;
    kill $sig // 'TERM', $f->{pid};
    my $t0 = time;
    my $r;
    while (($r = waitpid($f->{pid}, WNOHANG)) == 0 && time - $t0 < 5) { sleep 0.01 }
    my $status = $r == $f->{pid} ? $? : -1;
    my $took = time - $t0;
    close $f->{out};   # (close would overwrite $?)
    if ($psock) { close $psock; undef $psock }
    return ($status, $took);
}

my $http = HTTP::Tiny->new(timeout => 10);
my $PORT;
sub url { my $p = shift; return "http://127.0.0.1:$PORT$p" }
sub get  { my $r = $http->get(url(shift)); return ($r, eval { decode_json($r->{content}) }) }
# POSTs go over one kept-alive raw socket, written in one piece: HTTP::Tiny writes headers and body
# separately, and Nagle + delayed ACK then cost 40 ms per request.
our $last_close = 0;   # the last response raw_read read said Connection: close
sub post {
    my ($p, $body) = @_;
    $body = encode_json($body) if ref $body;
    for my $try (1, 2) {
        $psock //= raw_connect();
        print $psock raw_req('POST', $p, $body);
        my ($st, $content) = raw_read($psock);
        if ($st =~ /^\d+$/) {
            my $close = $last_close;
            if ($close) { close $psock; undef $psock }      # the server said Connection: close
            return ({ status => $st, content => $content, headers => { connection => $close ? 'close' : '' } },
                    eval { decode_json($content) });
        }
        close $psock;
        undef $psock;   # the fake closed it (reset fault): reconnect once
        return ({ status => 599, content => $st }) if $try == 2;
    }
}
sub config { my ($r) = post('/fake/config', shift); die "config: $r->{content}" unless $r->{status} == 200 }
sub reset_stats { post('/fake/reset', '') }
sub stats { my (undef, $s) = get('/fake/stats' . (shift // '')); return $s }
sub complete {
    my ($text, %o) = @_;
    return post('/completion', { prompt => "Extract facts as JSON.\nTEXT:\n$text", n_predict => 256, %o });
}

# raw socket: send bytes, read one HTTP response (status, body) or undef on EOF/reset
sub raw_connect {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $PORT, Proto => 'tcp') or die $!;
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    return $s;
}
sub raw_req {
    my ($method, $path, $body) = @_;
    $body //= '';
    return "$method $path HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        . length($body) . "\r\n\r\n$body";
}
my %rbuf;
sub raw_read {
    my ($s, $timeout) = @_;
    my $buf = delete $rbuf{$s} // '';   # bytes of the next response already read
    my $deadline = time + ($timeout // 10);
    my ($status, $len, $hlen);
    while (1) {
        if (!defined $hlen && $buf =~ /\r\n\r\n/) {
            $hlen = $+[0];
            ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
            ($len) = $buf =~ /Content-Length: (\d+)/i;
            $last_close = substr($buf, 0, $hlen) =~ /^Connection: close\r$/mi ? 1 : 0;
            $len //= 0;
        }
        if (defined $hlen && length($buf) >= $hlen + $len) {
            $rbuf{$s} = substr($buf, $hlen + $len);
            return ($status, substr($buf, $hlen, $len));
        }
        my $rin = '';
        vec($rin, fileno($s), 1) = 1;
        my $left = $deadline - time;
        return ('timeout') if $left <= 0 || !select(my $rout = $rin, undef, undef, $left);
        my $n = sysread($s, $buf, 65536, length $buf);
        return (defined $n ? 'eof' : 'error:' . ($! + 0)) unless $n;
    }
}

# ---------------------------------------------------------------- start
my $f = start_fake('--parallel', 2, '--ctx-size', 2048, '--hang-ms', 400, '--model', '/m/tiny.gguf');
$PORT = $f->{port};
like($f->{line}, qr/^listening on 127\.0\.0\.1:\d+$/, 'startup line');

# ---------------------------------------------------------------- endpoint shapes
{
    my ($r, $j) = get('/health');
    is($r->{status}, 200, '/health 200');
    is_deeply($j, { status => 'ok' }, '/health body');
    ($r, $j) = get('/props');
    is($j->{default_generation_settings}{n_ctx}, 1024, '/props n_ctx is per slot');
    is($j->{total_slots}, 2, '/props total_slots');
    is($j->{model_path}, '/m/tiny.gguf', '/props model_path');
    ($r, $j) = get('/slots');
    is(scalar @$j, 2, '/slots lists every slot');
    is_deeply([map { [$_->{id}, $_->{n_ctx}, $_->{is_processing} ? 1 : 0] } @$j], [[0, 1024, 0], [1, 1024, 0]], '/slots id n_ctx is_processing');
    ($r, $j) = get('/slots?fail_on_no_slot=1');
    is($r->{status}, 200, '/slots?fail_on_no_slot=1 with idle slots is 200');
    ($r, $j) = get('/v1/models');
    is($j->{data}[0]{id}, 'tiny.gguf', '/v1/models id');
    ($r, $j) = post('/tokenize', { content => 'hello world', add_special => JSON::PP::false });
    is(scalar @{ $j->{tokens} }, 3, '/tokenize: ceil(11/4) tokens');
    my (undef, $j2) = post('/tokenize', { content => 'hello world' });
    is_deeply($j2, $j, '/tokenize is deterministic');
    ($r, $j) = get('/nope');
    is($r->{status}, 404, 'unknown path 404');
    is($j->{error}{code}, 404, '404 error body');
    ($r, $j) = post('/completion', '{"prompt": ');
    is($r->{status}, 400, 'bad JSON 400');
    is($j->{error}{type}, 'invalid_request_error', 'bad JSON type');
}

# ---------------------------------------------------------------- /completion, grammar
{
    my ($r, $j) = complete("Alice works on Apollo (40%). Bob uses Rust! Nothing here.\nCarol is part of Team A");
    is($r->{status}, 200, '/completion 200');
    is_deeply(decode_json($j->{content}), [
        { subject => 'Alice', predicate => 'works_on', object => 'Apollo', confidence => 40 },
        { subject => 'Bob', predicate => 'uses', object => 'Rust', confidence => 90 },
        { subject => 'Carol', predicate => 'part_of', object => 'Team A', confidence => 90 },
    ], 'grammar: sentences, predicates, confidence');
    ok(exists $j->{$_}, "/completion has $_") for qw(content tokens_predicted tokens_evaluated tokens_cached truncated stop_type model timings);
    ok(exists $j->{timings}{$_}, "timings.$_") for qw(prompt_n prompt_ms predicted_n predicted_ms cache_n);
    is($j->{stop_type}, 'eos', 'stop_type eos');
    ok(!$j->{truncated}, 'not truncated');
    is($j->{tokens_predicted}, int((length($j->{content}) + 3) / 4), 'tokens_predicted = ceil(bytes/4)');

    my $t = sub { my (undef, $x) = complete(shift); decode_json($x->{content}) };
    is_deeply($t->("A uses B depends on C."), [{ subject => 'A', predicate => 'uses', object => 'B depends on C', confidence => 90 }], 'earliest phrase wins');
    is_deeply($t->("Kgx v1.2 requires libuv"), [{ subject => 'Kgx v1.2', predicate => 'requires', object => 'libuv', confidence => 90 }], 'no cut inside 1.2');
    is_deeply($t->("A uses B (150%)"), [{ subject => 'A', predicate => 'uses', object => 'B (150%)', confidence => 90 }], '150% is no marker');
    is_deeply($t->("Bob created X. Zed is a cat? uses nothing. Y owns"), [
        { subject => 'Bob', predicate => 'creates', object => 'X', confidence => 90 },
        { subject => 'Zed', predicate => 'is_a', object => 'cat', confidence => 90 }], 'empty subject/object are no facts');
    my (undef, $x) = post('/completion', { prompt => "Ann likes tea.\nTEXT:\nBen calls Cy.\nTEXT:\nDi mentions Ed.", n_predict => 100 });
    is_deeply([map { $_->{subject} } @{ decode_json($x->{content}) }], ['Ben', 'Di'], 'text after the first TEXT: line');
    (undef, $x) = post('/completion', { prompt => "Ann likes tea.", n_predict => 100 });
    is(decode_json($x->{content})->[0]{subject}, 'Ann', 'no TEXT: line: whole prompt');
    (undef, $x) = complete("Nothing at all.");
    is($x->{content}, '[]', 'no facts: []');

    (undef, $x) = complete("A uses B.", json_schema => { type => 'object' });
    is(ref decode_json($x->{content}), 'HASH', 'json_schema object → {"triples":...}');
    ok(exists decode_json($x->{content})->{triples}, 'triples key');
    (undef, $x) = complete("A uses B.", json_schema => { type => 'array' });
    is(ref decode_json($x->{content}), 'ARRAY', 'json_schema array → bare array');

    (undef, $x) = complete("A uses B. C uses D. E uses F.", n_predict => 5);
    is($x->{stop_type}, 'limit', 'n_predict cap: stop_type limit');
    ok(!$x->{truncated}, 'n_predict cap: truncated false (as llama-server: truncated means a full context)');
    is($x->{tokens_predicted}, 5, 'n_predict cap: tokens_predicted');
    ok(length($x->{content}) <= 20, 'n_predict cap: content cut');

    ($r, $x) = post('/completion', { prompt => 'x' x (1024 * 4), n_predict => 10 });
    is($r->{status}, 400, 'prompt = n_ctx tokens → 400');
    is($x->{error}{type}, 'exceed_context_size_error', 'exceed_context_size_error');
    is($x->{error}{n_prompt_tokens}, 1024, 'n_prompt_tokens');
    is($x->{error}{n_ctx}, 1024, 'n_ctx');
    ($r, $x) = post('/completion', { prompt => 'x' x (1023 * 4), n_predict => 10 });
    is($r->{status}, 200, 'prompt just below n_ctx is fine');
    is($x->{tokens_predicted}, 1, 'output capped by the context left');
    my $tail = "TEXT:\nA uses B. C uses D. E uses F.";
    ($r, $x) = post('/completion', { prompt => ('x' x (1020 * 4 - length $tail)) . $tail, n_predict => 100 });
    ok($x->{stop_type} eq 'limit' && $x->{truncated}, 'an answer that runs into the end of the context: truncated true')
        or diag("stop_type=$x->{stop_type} predicted=$x->{tokens_predicted}");
}

# ---------------------------------------------------------------- chat
{
    my $msgs = [{ role => 'system', content => 'Extract facts.' }, { role => 'user', content => "TEXT:\nX likes Y." }];
    my ($r, $j) = post('/v1/chat/completions', { messages => $msgs, max_tokens => 200, response_format => { type => 'json_object' } });
    is($r->{status}, 200, 'chat 200');
    is($j->{object}, 'chat.completion', 'chat object');
    ok($j->{id} && $j->{model}, 'chat id, model');
    is($j->{choices}[0]{message}{role}, 'assistant', 'chat role');
    is_deeply(decode_json($j->{choices}[0]{message}{content}), { triples => [{ subject => 'X', predicate => 'likes', object => 'Y', confidence => 90 }] }, 'json_object → {"triples"}');
    is($j->{choices}[0]{finish_reason}, 'stop', 'finish_reason stop');
    my $u = $j->{usage};
    is($u->{total_tokens}, $u->{prompt_tokens} + $u->{completion_tokens}, 'usage totals');
    is($u->{prompt_tokens}, int((length("Extract facts.\nTEXT:\nX likes Y.") + 3) / 4), 'prompt = contents joined by \n');
    ok(exists $u->{prompt_tokens_details}{cached_tokens}, 'usage.prompt_tokens_details.cached_tokens');
    ok(exists $j->{timings}{prompt_n}, 'chat timings');
    (undef, $j) = post('/v1/chat/completions', { messages => $msgs, response_format => { type => 'json_schema', json_schema => { name => 't', schema => { type => 'array' } } } });
    is(ref decode_json($j->{choices}[0]{message}{content}), 'ARRAY', 'json_schema array → bare array');
    (undef, $j) = post('/v1/chat/completions', { messages => $msgs });
    is(ref decode_json($j->{choices}[0]{message}{content}), 'ARRAY', 'no response_format → bare array');
    (undef, $j) = post('/v1/chat/completions', { messages => $msgs, max_tokens => 3 });
    is($j->{choices}[0]{finish_reason}, 'length', 'max_tokens cap → finish_reason length');
    is($j->{usage}{completion_tokens}, 3, 'completion_tokens capped');
}

# ---------------------------------------------------------------- prefix cache
{
    my $instr = "You extract facts. " x 20;   # 380 bytes, identical prefix
    my (undef, $a) = post('/completion', { prompt => "${instr}TEXT:\nQ uses R.", n_predict => 100 });
    my (undef, $b) = post('/completion', { prompt => "${instr}TEXT:\nS uses T.", n_predict => 100 });
    my $lcp = length("${instr}TEXT:\n");
    is($b->{timings}{cache_n}, int($lcp / 4), 'second request: timings.cache_n = shared prefix tokens');
    is($b->{tokens_cached}, $b->{tokens_evaluated} + $b->{tokens_predicted} - 1,
       'tokens_cached = what the slot holds afterwards (as llama-server), not the reuse');
    is($b->{timings}{prompt_n}, $b->{tokens_evaluated} - $b->{timings}{cache_n}, 'only the suffix is evaluated');
    (undef, $b) = post('/completion', { prompt => "${instr}TEXT:\nS uses T.", n_predict => 100, cache_prompt => JSON::PP::false });
    is($b->{timings}{cache_n}, 0, 'cache_prompt false: nothing reused');
}

# ---------------------------------------------------------------- keep-alive, pipelining, Expect
{
    my $s = raw_connect();
    print $s raw_req('GET', '/health');
    my ($st, $body) = raw_read($s);
    is($st, 200, 'keep-alive: first');
    print $s raw_req('POST', '/completion', '{"prompt":"A uses B","n_predict":50}');
    ($st, $body) = raw_read($s);
    is($st, 200, 'keep-alive: second on the same socket');
    print $s raw_req('GET', '/health') . raw_req('POST', '/tokenize', '{"content":"abcdefgh"}') . raw_req('GET', '/props');
    my @got = map { [raw_read($s)] } 1 .. 3;
    is_deeply([map { $_->[0] } @got], [200, 200, 200], 'pipelined: three answers in order');
    is(decode_json($got[1][1])->{tokens} && scalar @{ decode_json($got[1][1])->{tokens} }, 2, 'pipelined: second is the tokenize');
    my $big = encode_json({ prompt => "TEXT:\nA uses B.", n_predict => 50 });
    print $s "POST /completion HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " . length($big) . "\r\n\r\n";
    my $line = '';
    sysread($s, $line, 25);
    is($line, "HTTP/1.1 100 Continue\r\n\r\n", 'Expect: 100-continue answered');
    print $s $big;
    ($st, $body) = raw_read($s);
    is($st, 200, 'body after 100 Continue answered');
    print $s "GARBAGE\r\n\r\n";
    ($st) = raw_read($s);
    is($st, 400, 'unparsable request → 400');
    close $s;
}

# ---------------------------------------------------------------- faults, one kind at a time
my $clean;
{
    reset_stats();
    config({ faults => [] });
    my (undef, $j) = complete("Ann uses Vim. Ben owns a boat.");
    $clean = $j->{content};
    my %want = (
        malformed => sub { !eval { decode_json($_[0]); 1 } },
        truncated => sub { $_[0] eq substr($clean, 0, int(length($clean) / 2)) },
        empty     => sub { $_[0] eq '' },
        fence     => sub { $_[0] eq "```json\n$clean\n```" },
        prose     => sub { $_[0] eq "Here are the facts:\n$clean\nHope this helps!" },
    );
    for my $k (sort keys %want) {
        config({ faults => ["$k:1.0"] });
        my ($r, $x) = complete("Ann uses Vim. Ben owns a boat.");
        is($r->{status}, 200, "$k: 200");
        ok($want{$k}->($x->{content}), "$k: content") or diag($x->{content});
    }
    config({ faults => ['pad:1.0'] });
    my ($r, $x) = complete("Ann uses Vim. Ben owns a boat.", n_predict => 40);
    like($x->{content}, qr/^\Q$clean\E\s+$/, 'pad: JSON then whitespace');
    is($x->{stop_type}, 'limit', 'pad: stop_type limit');
    is($x->{tokens_predicted}, 40, 'pad: fills n_predict');
    is(length $x->{content}, 160, 'pad: 40 tokens of bytes');

    # the cuts kgx must never take as an answer
    config({ faults => ['prosecut:1.0'] });
    ($r, $x) = complete("Ann uses Vim. Ben owns a boat.");
    is($x->{content}, "Here are the facts I found:\n" . substr($clean, 0, int(length($clean) / 2)), 'prosecut: prose, then cut JSON');
    is($x->{stop_type}, 'eos', 'prosecut: stop_type eos (only parsing sees the cut)');
    config({ faults => ['limitcut:1.0'] });
    ($r, $x) = complete("Ann uses Vim. Ben owns a boat.");
    ok($x->{stop_type} eq 'limit' && !$x->{truncated}, 'limitcut: stop_type limit, truncated false (cut at n_predict)');
    config({ faults => ['ctxcut:1.0'] });
    ($r, $x) = complete("Ann uses Vim. Ben owns a boat.");
    ok($x->{stop_type} eq 'limit' && $x->{truncated}, 'ctxcut: stop_type limit, truncated true (a full context)');
    is($x->{tokens_evaluated} + $x->{tokens_predicted}, 1024, 'ctxcut: prompt + predicted tokens = the slot\'s n_ctx');
    ($r, $x) = post('/v1/chat/completions', { messages => [{ role => 'user', content => "TEXT:\nAnn uses Vim." }], max_tokens => 256 });
    ok($x->{choices}[0]{finish_reason} eq 'length' && !exists $x->{truncated},
       'ctxcut, chat: finish_reason length and no truncated (as llama-server)');
    is($x->{usage}{prompt_tokens} + $x->{usage}{completion_tokens}, 1024,
       'ctxcut, chat: prompt + completion tokens = n_ctx (what tells it from a cut at max_tokens)');
    config({ faults => ['kv500:1.0'] });
    ($r, $x) = complete("A uses B.");
    is($r->{status}, 500, 'kv500: 500');
    is($x->{error}{message}, 'Context size has been exceeded.', 'kv500: the unified-KV message');
    is(lc($r->{headers}{connection} // ''), 'close', 'an error closes the connection (as llama-server)');

    config({ faults => ['500:1.0'] });
    ($r, $x) = complete("A uses B.");
    is($r->{status}, 500, '500: status');
    is($x->{error}{type}, 'server_error', '500: server_error body');
    ($r) = get('/health');
    is($r->{status}, 200, 'faults hit extraction requests only');
    config({ faults => ['503:1.0'] });
    ($r, $x) = post('/v1/chat/completions', { messages => [{ role => 'user', content => 'A uses B.' }] });
    is($r->{status}, 503, '503: status (chat)');
    is($x->{error}{type}, 'unavailable_error', '503: loading body');
    is($x->{error}{message}, 'Loading model', '503: message');

    config({ faults => ['reset:1.0'] });
    ($r) = complete("A uses B.");
    is($r->{status}, 599, 'reset: the client sees a dropped connection');
    $r = $http->post(url('/completion'), { content => '{"prompt":"A uses B.","n_predict":10}' });
    is($r->{status}, 599, 'reset: HTTP::Tiny sees a connection error');
    my $s = raw_connect();
    print $s raw_req('POST', '/completion', '{"prompt":"A uses B.","n_predict":10}');
    my ($st) = raw_read($s, 3);
    like($st, qr/^(error:\d+|eof)$/, "reset: no response, connection dropped ($st)");
    close $s;

    config({ faults => ['hang:1.0'] });
    $s = raw_connect();
    print $s raw_req('POST', '/completion', '{"prompt":"A uses B.","n_predict":10}');
    ($st) = raw_read($s, 0.2);
    is($st, 'timeout', 'hang: no answer');
    is(stats()->{in_flight}, 1, 'hang: counted in flight');
    my $t0 = time;
    ($st) = raw_read($s, 3);
    is($st, 'eof', 'hang: closed after --hang-ms');
    ok(time - $t0 < 1, 'hang: --hang-ms honoured');
    close $s;
    $s = raw_connect();
    print $s raw_req('POST', '/completion', '{"prompt":"A uses B.","n_predict":10}');
    sleep 0.05;
    close $s;  # client gives up first
    sleep 0.05;
    is(stats()->{in_flight}, 0, 'hang: client close frees it');

    config({ faults => ['500:1.0', 'empty:1.0'] });
    ($r) = complete("A uses B.");
    is($r->{status}, 500, 'first listed fault wins');
    ($r, $x) = post('/fake/config', { faults => ['bogus:1'] });
    is($r->{status}, 400, 'bad fault spec → 400');
    ($r) = complete("A uses B.");
    is($r->{status}, 500, 'bad config leaves the old list');
    my $fs = stats()->{faults};
    is($fs->{$_}, 1, "stats faults.$_") for qw(malformed truncated empty fence prose pad 503);
    is($fs->{reset}, 4, 'stats faults.reset (post retried once)');
    is($fs->{hang}, 2, 'stats faults.hang');
    is($fs->{500}, 3, 'stats faults.500');
}

# ---------------------------------------------------------------- FIRST_N, shares, mix
{
    reset_stats();
    config({ faults => ['500:1.0:2'] });
    my @st = map { (complete("Mo uses Go."))[0]{status} } 1 .. 4;
    is_deeply(\@st, [500, 500, 200, 200], 'FIRST_N: first 2 attempts fail, then clean');
    is((complete("Al uses Ada."))[0]{status}, 500, 'FIRST_N counts per text');
    reset_stats();
    is((complete("Mo uses Go."))[0]{status}, 500, 'reset restarts per-text counts');

    config({ faults => ['500:0.5:1'] });
    reset_stats();
    my @first = map { (complete("T$_ uses X$_."))[0]{status} } 1 .. 200;
    my @second = map { (complete("T$_ uses X$_."))[0]{status} } 1 .. 200;
    my $sel = grep { $_ == 500 } @first;
    ok($sel > 60 && $sel < 140, "share 0.5 selects about half the texts ($sel/200)");
    is((grep { $_ == 500 } @second), 0, 'selected texts fail only their first attempt');
    reset_stats();
    my @again = map { (complete("T$_ uses X$_."))[0]{status} } 1 .. 200;
    is_deeply(\@again, \@first, 'selection is deterministic (seeded hash of the text)');

    config({ faults => ['500:0.3'] });
    my $n = grep { (complete("P uses Q."))[0]{status} == 500 } 1 .. 300;
    ok($n > 50 && $n < 130, "share 0.3 per request ($n/300)");

    config({ faults => ['mix:1.0:3'] });
    reset_stats();
    my %kinds;
    for my $i (1 .. 40) {
        my @r = map { [complete("M$i uses N$i.")] } 1 .. 4;
        is($r[3][0]{status}, 200, "mix: 4th attempt of text $i clean") if $i <= 3;
        $kinds{ $r[3][1]{content} eq '' ? 'bad' : 'ok' }++;
    }
    my $s = stats();
    my $total = 0;
    $total += $_ for values %{ $s->{faults} };
    is($total, 120, 'mix: exactly the first 3 attempts of each text faulted');
    ok(!exists $s->{faults}{hang} && !exists $s->{faults}{mix}, 'mix never hangs; counted by resolved kind');
    ok(keys %{ $s->{faults} } >= 6, 'mix: several kinds (' . join(',', sort keys %{ $s->{faults} }) . ')');
    config({ faults => [] });
}

# ---------------------------------------------------------------- stats and reset
{
    reset_stats();
    my $s0 = stats();
    is($s0->{requests_total}, 1, 'after reset: only the stats request itself');
    complete("S1 uses T1.") for 1 .. 3;
    complete("S2 uses T2.");
    get('/health');
    my $s = stats('?texts=1');
    is($s->{extraction_requests}, 4, 'extraction_requests');
    is($s->{requests_total}, 7, 'requests_total');
    is($s->{by_path}{'/completion'}, 4, 'by_path /completion');
    is($s->{by_path}{'/health'}, 1, 'by_path /health');
    is($s->{texts_distinct}, 2, 'texts_distinct');
    is($s->{max_requests_per_text}, 3, 'max_requests_per_text');
    is($s->{texts_over_once}, 1, 'texts_over_once');
    is_deeply($s->{by_text}, { 'S1 uses T1.' => 3, 'S2 uses T2.' => 1 }, 'by_text with ?texts=1');
    ok(!exists stats()->{by_text}, 'no by_text without ?texts=1');
    ok($s->{prompt_tokens} > 0, 'prompt_tokens');
    ok($s->{cached_tokens} > 0, 'cached_tokens');
    is(scalar @{ $s->{slots} }, 2, 'slots in stats');
    is($s->{slots}[0]{requests} + $s->{slots}[1]{requests}, 4, 'slot request counts');
    ok($s->{utilisation} >= 0 && $s->{utilisation} <= 1, 'utilisation in [0,1]');
    ok(exists $s->{$_}, "stats has $_") for qw(queue_max queue_len in_flight faults);
}

# ---------------------------------------------------------------- queue and latency
{
    config({ faults => [], latency_ms => 150 });
    reset_stats();
    my $t0 = time;
    my @socks = map { my $s = raw_connect(); print $s raw_req('POST', '/completion', qq({"prompt":"TEXT:\\nQ$_ uses R.","n_predict":20})); $s } 1 .. 6;
    sleep 0.05;
    my ($r, $j) = get('/slots?fail_on_no_slot=1');
    is($r->{status}, 503, 'fail_on_no_slot=1 when all slots busy');
    my (undef, $sl) = get('/slots');
    is(scalar(grep { $_->{is_processing} } @$sl), 2, 'both slots processing');
    my $mid = stats();
    is($mid->{queue_len}, 4, 'queue_len while waiting');
    is($mid->{in_flight}, 6, 'in_flight while waiting');
    my @st = map { (raw_read($_))[0] } @socks;
    my $el = time - $t0;
    is_deeply(\@st, [(200) x 6], 'more requests than slots: all answered');
    ok($el >= 0.42, sprintf('3 waves of 150 ms (%.2fs)', $el));
    my $s = stats();
    is($s->{queue_max}, 4, 'queue_max');
    is($s->{queue_len}, 0, 'queue drained');
    ok($s->{utilisation} > 0.3, "utilisation ($s->{utilisation})");
    config({ latency_ms => 0 });
}

my ($rc, $took) = stop_fake($f);
is($rc, 0, 'SIGTERM: exit 0');
ok($took < 2, 'SIGTERM: prompt');

# ---------------------------------------------------------------- loading, port file, per-token latency, tail, SIGINT
{
    my $pf = "/tmp/fake-t-port.$$";
    my $g = start_fake('--loading-ms', 300, '--port-file', $pf, '--prompt-us-per-token', 1000,
                       '--gen-us-per-token', 2000, '--latency-tail', 'lognormal:1', '--latency-ms', 5, '--seed', 7);
    $PORT = $g->{port};
    open(my $fh, '<', $pf) or die;
    chomp(my $p = <$fh>);
    close $fh;
    unlink $pf;
    is($p, $PORT, '--port-file');
    my ($r, $j) = get('/health');
    is($r->{status}, 503, 'loading: /health 503');
    is_deeply($j, { error => { code => 503, message => 'Loading model', type => 'unavailable_error' } }, 'loading body');
    sleep 0.35;
    ($r) = get('/health');
    is($r->{status}, 200, 'loaded: 200');
    my $t0 = time;
    ($r, $j) = post('/completion', { prompt => 'y' x 400, n_predict => 10 });
    my $el = time - $t0;
    is($j->{timings}{predicted_ms}, 2 * $j->{tokens_predicted}, 'predicted_ms = gen us/token');
    ok($j->{timings}{prompt_ms} >= 100, "prompt_ms includes 100 tokens x 1 ms ($j->{timings}{prompt_ms})");
    ok($el >= 0.1, sprintf('the request waited (%.3fs)', $el));
    my %seen;
    for (1 .. 5) { my (undef, $x) = post('/completion', { prompt => 'A uses B', n_predict => 5 }); $seen{ sprintf '%.3f', $x->{timings}{prompt_ms} }++ }
    ok(keys %seen > 1, 'lognormal tail varies the fixed latency');
    my ($rc2) = stop_fake($g, 'INT');
    is($rc2, 0, 'SIGINT: exit 0');
}

done_testing();
