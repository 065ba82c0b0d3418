#!/usr/bin/env perl
# llm_real — Debian's real llama-server (scripts/sandbox-llm, a tiny model kgx makes itself) speaks the
# protocol kgx relies on, and kgx handles every shape it produces: /props with and without -np, a
# completion and a chat answer under the schema, a prompt over the slot's context (400, Connection:
# close), a cut at n_predict, a cut by a full context (truncated), the unified-KV 500, prompt-cache
# reuse from timings.cache_n — then kgx itself: a cut at n_predict splits only that chunk, a whole
# backfill of samples/drawers.jsonl completes with -np 4 and without -np (≤ 1.3× the requests).
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/llm", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use RealLlm;
use POSIX ();

my $root = kgx_root();
my $s = llm_server();
diag("real server: " . llm_version());

# ---------------------------------------------------------------- /props, -np 4 (the suite's server)
my $p = llm_get($s, '/props');
is($p->{status}, 200, '/props answers') or BAIL_OUT("the real llama-server does not answer /props (" . llm_version() . ")");
is($p->{json}{total_slots}, 4, '/props: total_slots 4 with -np 4');
is($p->{json}{default_generation_settings}{n_ctx}, 2048, '/props: n_ctx per slot = --ctx-size / -np = 2048');
like($p->{json}{build_info} // '', qr/\S/, "/props: build_info $p->{json}{build_info}");

# ---------------------------------------------------------------- /completion and chat under the schema
my $schema = llm_schema();
my $r = llm_post($s, '/completion', { prompt => "Extract facts.\nTEXT:\nAlice works on Apollo.", n_predict => 300,
                                      json_schema => $schema, cache_prompt => JSON::PP::true });
is($r->{status}, 200, '/completion with json_schema: 200');
is($r->{json}{stop_type}, 'eos', '/completion: the model ends its answer itself (stop_type eos)');
ok($r->{json}{truncated} eq '0' || !$r->{json}{truncated}, '/completion: truncated false');
my $c = eval { json_decode($r->{json}{content}) } || {};
ok(ref $c->{triples} eq 'ARRAY' && @{ $c->{triples} } >= 1, 'the content is {"triples":[…]} with at least one triple')
    or diag($r->{json}{content});
is(scalar(grep { 4 == keys %$_ && defined $_->{subject} && defined $_->{confidence} } @{ $c->{triples} || [] }),
   scalar @{ $c->{triples} || [] }, 'every triple has subject, predicate, object, confidence');
ok(exists $r->{json}{prompt} && exists $r->{json}{generation_settings}, 'the real 200 body echoes the prompt and the generation settings');

$r = llm_post($s, '/v1/chat/completions', {
    messages => [{ role => 'system', content => 'Extract facts.' }, { role => 'user', content => "TEXT:\nAlice works on Apollo." }],
    max_tokens => 300, response_format => { type => 'json_schema', json_schema => { name => 'triples', schema => $schema } } });
is($r->{status}, 200, 'chat with response_format: 200 (chat template tokens are control tokens)') or diag($r->{body});
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'chat: finish_reason stop');
$c = eval { json_decode($r->{json}{choices}[0]{message}{content}) } || {};
ok(ref $c->{triples} eq 'ARRAY', 'chat: the content is the schema\'s object');

# ---------------------------------------------------------------- a prompt over the slot's context
my $tk = llm_post($s, '/tokenize', { content => 'Alice works on Apollo. ' x 10 });
my $per10 = scalar @{ $tk->{json}{tokens} || [] };
cmp_ok($per10, '>', 10, "/tokenize: 10 sentences are $per10 tokens");
$r = llm_post($s, '/completion', { prompt => 'Alice works on Apollo. ' x (10 * int(2100 / $per10 + 1)), n_predict => 8 });
is($r->{status}, 400, 'a prompt over the slot context: 400');
is($r->{json}{error}{type}, 'exceed_context_size_error', '… exceed_context_size_error');
is($r->{json}{error}{n_ctx}, 2048, '… with the slot\'s n_ctx');
cmp_ok($r->{json}{error}{n_prompt_tokens} // 0, '>=', 2048, '… and the prompt\'s token count');
is(lc($r->{headers}{connection} // ''), 'close', 'an error answer carries Connection: close');
$r = llm_get($s, '/no-such-endpoint');
is($r->{status}, 404, 'an unknown path: 404');
is(lc($r->{headers}{connection} // ''), 'close', '… with Connection: close');

# ---------------------------------------------------------------- cuts
$r = llm_post($s, '/completion', { prompt => "Extract facts.\nTEXT:\nBob uses Kafka.", n_predict => 6, json_schema => $schema });
is($r->{json}{stop_type}, 'limit', 'n_predict 6: stop_type limit');
ok(!$r->{json}{truncated}, '… truncated false: a cut at n_predict is not a full context');
my $fill = 'Alice works on Apollo. ' x (10 * int(1990 / $per10));
$r = llm_post($s, '/completion', { prompt => $fill, n_predict => 400, json_schema => llm_schema(min_items => 8, max_items => 10) });
is($r->{status}, 200, 'a prompt that fits, with an answer that cannot: accepted');
is($r->{json}{stop_type}, 'limit', '… cut: stop_type limit');
ok($r->{json}{truncated}, '… truncated true: the slot\'s context filled up')
    or diag("tokens_evaluated=$r->{json}{tokens_evaluated} predicted=$r->{json}{tokens_predicted}");
# a chat answer carries no "truncated": finish_reason is "length" for both cuts; only the token counts
# against the slot's n_ctx tell them apart (what kgx reads, core/endpoint.c kgx_endpoint_context_full)
my $chat_fmt = { type => 'json_schema', json_schema => { name => 'triples', schema => llm_schema(min_items => 8, max_items => 10) } };
$r = llm_post($s, '/v1/chat/completions', { messages => [{ role => 'user', content => "TEXT:\nBob uses Kafka." }],
                                            max_tokens => 6, response_format => $chat_fmt });
is($r->{json}{choices}[0]{finish_reason}, 'length', 'chat, max_tokens 6: finish_reason length');
ok(!exists $r->{json}{truncated} && !exists $r->{json}{choices}[0]{truncated}, '… no truncated in a chat answer');
is($r->{json}{usage}{completion_tokens}, 6, '… completion_tokens = max_tokens');
cmp_ok($r->{json}{usage}{prompt_tokens} + $r->{json}{usage}{completion_tokens}, '<', 2047, '… far from the slot\'s n_ctx');
my $cfill = 'Alice works on Apollo. ' x (10 * int(1960 / $per10));
$r = llm_post($s, '/v1/chat/completions', { messages => [{ role => 'user', content => $cfill }], max_tokens => 400,
                                            response_format => $chat_fmt });
is($r->{status}, 200, 'chat: a prompt that fits, with an answer that cannot: accepted') or diag($r->{body});
is($r->{json}{choices}[0]{finish_reason}, 'length', '… finish_reason length, as for a cut at max_tokens');
ok(!exists $r->{json}{truncated} && !exists $r->{json}{choices}[0]{truncated}, '… and no truncated');
cmp_ok($r->{json}{usage}{completion_tokens} // 0, '<', 400, '… fewer tokens than max_tokens');
is(($r->{json}{usage}{prompt_tokens} // 0) + ($r->{json}{usage}{completion_tokens} // 0), 2048,
   '… prompt + completion tokens = the slot\'s n_ctx: a full context');

# ---------------------------------------------------------------- prompt cache
my $prompt = "Extract facts from the text.\nTEXT:\nCarol depends on the search service. " . ('Dave maintains the database. ' x 20);
my $r1 = llm_post($s, '/completion', { prompt => $prompt, n_predict => 4, id_slot => 1, cache_prompt => JSON::PP::true });
my $r2 = llm_post($s, '/completion', { prompt => $prompt, n_predict => 4, id_slot => 1, cache_prompt => JSON::PP::true });
my $n = $r2->{json}{tokens_evaluated} // 0;
is($r2->{json}{timings}{cache_n}, $n - 1, "the same prompt again: timings.cache_n = prompt tokens − 1 ($n − 1)");
is($r2->{json}{timings}{prompt_n}, 1, '… and prompt_n 1');
is($r2->{json}{tokens_cached}, $n + ($r2->{json}{tokens_predicted} // 0) - 1,
   'tokens_cached = evaluated + predicted - 1: what the slot holds afterwards, not the reuse');

# ---------------------------------------------------------------- no -np: four slots, one unified KV pool
my $u = llm_up(np => 'none', ctx => 1024, name => 'unified');
$p = llm_get($u, '/props');
is($p->{json}{total_slots}, 4, 'without -np: 4 slots');
is($p->{json}{default_generation_settings}{n_ctx}, 1024, '… each reporting the whole pool as its n_ctx');
my $dir = POSIX::getcwd();
my @kids;
for my $i (1 .. 4) {
    my $pid = fork();
    if (!$pid) {
        my $x = llm_post($u, '/completion', { prompt => 'Alice works on Apollo. ' x 25, n_predict => 900,
                                             json_schema => llm_schema(min_items => 40, max_items => 50) });
        open(my $fh, '>', "/tmp/kgx-llm-real-$$.out");
        print $fh "$x->{status} " . lc($x->{headers}{connection} // '-') . " $x->{body}\n";
        close $fh;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
my @res;
for my $pid (@kids) { waitpid($pid, 0); push @res, read_file("/tmp/kgx-llm-real-$pid.out") // ''; unlink "/tmp/kgx-llm-real-$pid.out" }
my @five = grep { /^500 / } @res;
cmp_ok(scalar @five, '>=', 1, 'parallel requests that each fit fill the shared pool: 500') or diag(join "\n", map { substr($_, 0, 200) } @res);
like($five[0] // '', qr/Context size has been exceeded/, '… "Context size has been exceeded."');
like($five[0] // '', qr/^500 close /, '… with Connection: close');
llm_down($u);

done_testing();
