#!/usr/bin/perl
# hostile-llm.pl — a tiny llama-server impostor for the hostile-answer scenario. Answers /health and
# /props like llama-server; /completion answers by a marker in the prompt text:
#   HOSTILE-big        200, a 100 MB body (Content-Length given)
#   HOSTILE-bigchunk   200, a 100 MB body, chunked (no length known up front)
#   HOSTILE-deep       content = 10,000-deep nested arrays
#   HOSTILE-deepbody   the response body itself nested 10,000 deep
#   HOSTILE-many       content = 10,000 triples
#   HOSTILE-utf8       content with invalid UTF-8 in names
#   HOSTILE-types      triples with wrong types (numbers, lists, objects, null, "high")
#   HOSTILE-content    "content" is a number / the body is a JSON string
#   NORMAL-<n>         a valid answer: Normal<n> uses Thing
# Usage: hostile-llm.pl [--port N]  (prints "listening on 127.0.0.1:PORT"). One forked child per connection.
use strict;
use warnings;
use IO::Socket::INET;
use POSIX ();

my $port = 0;
for (my $i = 0; $i < @ARGV; $i++) { $port = $ARGV[++$i] if $ARGV[$i] eq '--port' }
my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 128, ReuseAddr => 1, Proto => 'tcp')
    or die "listen: $!";
$| = 1;
print "listening on 127.0.0.1:" . $srv->sockport . "\n";
$SIG{PIPE} = 'IGNORE';
$SIG{CHLD} = sub { 1 while waitpid(-1, POSIX::WNOHANG()) > 0 };
$SIG{TERM} = sub { kill 'TERM', -$$ if 0; exit 0 };

while (1) {
    my $c = $srv->accept or next;
    my $pid = fork;
    if (!defined $pid) { close $c; next }
    if ($pid == 0) { close $srv; serve($c); POSIX::_exit(0) }
    close $c;
}

sub jstr { my $s = shift; $s =~ s/(["\\])/\\$1/g; $s =~ s/\n/\\n/g; $s =~ s/([\x00-\x1f])/sprintf('\\u%04x', ord $1)/ge; return qq{"$s"} }

sub reply {
    my ($c, $status, $body, $extra) = @_;
    print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\n" . ($extra // '') . "\r\n" . $body;
}

sub completion_body { my $content = shift; return '{"content":' . jstr($content) . ',"stop":true,"stop_type":"eos","truncated":false,"tokens_predicted":10,"tokens_evaluated":10}' }

sub serve {
    my $c = shift;
    binmode $c;
    while (1) {
        my $head = '';
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread($c, my $buf, 65536);
            return unless $n;
            $head .= $buf;
            return if length $head > 1 << 20;
        }
        my ($h, $body) = split /\r\n\r\n/, $head, 2;
        my ($method, $path) = $h =~ /^(\S+) (\S+)/;
        my ($len) = $h =~ /\r\ncontent-length:\s*(\d+)/i;
        $len //= 0;
        while (length $body < $len) { my $n = sysread($c, my $buf, 65536); return unless $n; $body .= $buf }
        $path //= '/';
        if ($path eq '/health') { reply($c, '200 OK', '{"status":"ok"}'); next }
        if ($path eq '/props') {
            reply($c, '200 OK', '{"default_generation_settings":{"id":0,"id_task":-1,"n_ctx":2048,"params":{"n_predict":-1}},"total_slots":4,"model_path":"/models/hostile.gguf","build_info":"hostile"}');
            next;
        }
        if ($path !~ m{^/(completion|completions|v1/chat/completions)$}) { reply($c, '404 Not Found', '{"error":{"code":404,"message":"not found","type":"not_found_error"}}'); next }
        my ($kind) = $body =~ /HOSTILE-(\w+)/;
        $kind //= '';
        if ($kind eq 'big' || $kind eq 'bigchunk') {
            my $total = 100 << 20;
            my $pre = '{"content":"';
            my $post = '","stop":true}';
            my $blk = 'a' x 65536;
            if ($kind eq 'big') {
                print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: $total\r\n\r\n$pre";
                my $left = $total - length($pre) - length($post);
                while ($left > 0) { my $n = $left < 65536 ? $left : 65536; print $c substr($blk, 0, $n) or return; $left -= $n }
                print $c $post;
            } else {
                print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                my $ch = sub { my $d = shift; print $c sprintf("%x\r\n", length $d) . $d . "\r\n" };
                $ch->($pre) or return;
                for (1 .. ($total >> 16)) { $ch->($blk) or return }
                $ch->($post); print $c "0\r\n\r\n";
            }
            next;
        }
        my $content;
        if ($kind eq 'deep') { $content = ('[' x 10000) . (']' x 10000) }
        elsif ($kind eq 'deepbody') { reply($c, '200 OK', '{"content":' . ('[' x 10000) . (']' x 10000) . '}'); next }
        elsif ($kind eq 'many') {
            $content = '{"triples":[' . join(',', map { qq({"subject":"Many$_","predicate":"uses","object":"Thing$_","confidence":90}) } 1 .. 10000) . ']}';
        }
        elsif ($kind eq 'utf8') {
            reply($c, '200 OK', qq({"content":"{\\"triples\\":[{\\"subject\\":\\"Al\xff\xfece\\",\\"predicate\\":\\"works_on\\",\\"object\\":\\"Ap\xc3\\",\\"confidence\\":90},{\\"subject\\":\\"Bad\xed\xa0\x80Surrogate\\",\\"predicate\\":\\"uses\\",\\"object\\":\\"Thing\xf8\x88\x80\x80\x80\\",\\"confidence\\":90}]}","stop":true,"stop_type":"eos"}));
            next;
        }
        elsif ($kind eq 'types') {
            $content = '{"triples":[{"subject":123,"predicate":"uses","object":"Thing","confidence":90},'
                     . '{"subject":["A"],"predicate":"uses","object":{"x":1},"confidence":"high"},'
                     . '{"subject":null,"predicate":7,"object":true,"confidence":null},'
                     . '{"subject":"TypesOk","predicate":"uses","object":"Thing","confidence":[1]},"just a string",42]}';
        }
        elsif ($kind eq 'content') { reply($c, '200 OK', '{"content":42,"stop":true}'); next }
        elsif ($body =~ /NORMAL-(\d+)/) { $content = qq({"triples":[{"subject":"Normal$1","predicate":"uses","object":"Thing","confidence":90}]}) }
        else { $content = '{"triples":[]}' }
        reply($c, '200 OK', completion_body($content));
    }
}
