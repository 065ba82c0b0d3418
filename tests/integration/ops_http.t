#!/usr/bin/perl
# ops_http.t — the daemon's --http server as an operator meets it: /kg-extract/status JSON keys,
# /metrics as Prometheus text (with kgx_drawers_total moving as work is done), /healthz, 404, 405,
# a malformed request line (400), KGX_API_KEY (401 without or with a wrong X-API-Key, 200 with it),
# and the loopback rule (non-loopback without --http-allow-remote: exit 2).
use strict;
use warnings;
use KgxTest;
use IO::Socket::INET;
use HTTP::Tiny;


# raw request: returns the whole response text ('' when the server closed without answering)
sub raw_http {
    my ($port, $bytes) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or return "connect failed: $!";
    print $s $bytes;
    local $/;
    my $resp = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 10;
        $resp = <$s> // '';
        alarm 0;
    };
    close $s;
    return $resp;
}

my $dsn = fresh_db('http');
psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb)});
my $fake = start_fake('--parallel', 2);
my $ua = HTTP::Tiny->new(timeout => 10);

# ---------------------------------------------------------------- open server
my $port = free_port();
my $base = "http://127.0.0.1:$port";
my $k = spawn_kgx({ env => { KGX_API_KEY => undef } }, '--dsn', $dsn, '--endpoint', $fake->{url},
                  '--http', "127.0.0.1:$port", '--poll-interval', 1, '--worker-id', 'ops-http');
ok(wait_until(20, sub { my $r = $ua->get("$base/healthz"); $r->{status} == 200 }), 'GET /healthz answers 200')
    or diag(read_file($k->{errfile}));
my $r = $ua->get("$base/healthz");
is($r->{content}, "ok\n", '/healthz body');

$r = $ua->get("$base/kg-extract/status");
is($r->{status}, 200, 'GET /kg-extract/status 200');
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'as application/json');
my $st = eval { json_decode($r->{content}) } or diag("not JSON: $r->{content}");
ok(exists $st->{$_}, "status key $_") for qw(queue_depth in_progress completed_today errors_total
    triples_extracted_5m drawers_per_min_5m stale_reclaimable parked retrying completed_total policy
    process version);
is($st->{policy}{name}, 'default', 'policy name');
my $p = $st->{process} // {};
is($p->{worker_id}, 'ops-http', 'process.worker_id is ours');
ok(exists $p->{$_}, "process.$_") for qw(in_flight completed parked retries stopping endpoints);
is(ref $p->{endpoints}, 'ARRAY', 'process.endpoints list');
is($p->{endpoints}[0]{url}, $fake->{url}, 'endpoint url');
is($p->{endpoints}[0]{state}, 'up', 'endpoint state up');

# work arrives while the daemon runs (the seed's enqueue): NOTIFY wakes it
psql($dsn, q{INSERT INTO mempalace_drawers
             SELECT 'h' || i, 'w', 'r', 'Service' || i || ' calls the gateway. Service' || i || ' uses Redis.', '{}'
               FROM generate_series(1, 5) i;
             INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)
             SELECT id, wing, room FROM mempalace_drawers});
ok(wait_until(30, sub { my ($n) = psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL'); $n == 5 }),
   'the daemon completed 5 queued drawers');

$r = $ua->get("$base/metrics");
is($r->{status}, 200, 'GET /metrics 200');
like($r->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4}, 'Prometheus text content type');
my ($bad, %type, %seen) = (0);
for my $line (split /\n/, $r->{content}) {
    next if $line eq '';
    if ($line =~ /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S/) { next }
    if ($line =~ /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/) { $type{$1} = $2; next }
    if ($line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$/) {
        my ($name, $labels, $v) = ($1, $2 // '', $3);
        my $family = $name;
        $family = $1 if !$type{$name} && $name =~ /^(.*)_(?:bucket|sum|count)$/;
        $bad++, diag("sample before its TYPE: $line") unless $type{$family};
        $seen{"$name$labels"} = $v;
        next;
    }
    $bad++;
    diag("not Prometheus text: $line");
}
is($bad, 0, '/metrics parses as Prometheus text exposition');
is($type{kgx_drawers_total}, 'counter', 'kgx_drawers_total is a counter');
is($seen{'kgx_drawers_total{result="completed"}'}, 5, 'kgx_drawers_total{result="completed"} = 5');
ok(($seen{'kgx_triples_total{result="written"}'} // 0) > 0, 'kgx_triples_total{result="written"} > 0');
ok(exists $seen{kgx_up}, 'kgx_up');

$r = $ua->get("$base/kg-extract/status");
$st = json_decode($r->{content});
is($st->{process}{completed}, 5, 'status process.completed = 5');
is_deeply($st->{process}{jobs}, { active => 0, recording_failure => 0, writing => 0, write_retry => 0 },
          'status process.jobs: every drawer done, none left in memory in any state') or diag(explain($st->{process}));

# --status from another process lists the running daemon (it publishes itself to kgx_workers)
my $ws;
ok(wait_until(15, sub {
       my $x = run_kgx('--dsn', $dsn, '--status', '--json');
       $ws = eval { json_decode($x->{out}) } or return 0;
       return grep { ($_->{worker_id} // '') eq 'ops-http' } @{ $ws->{workers} // [] };
   }), '--status --json lists the daemon under workers');
my ($w) = grep { ($_->{worker_id} // '') eq 'ops-http' } @{ $ws->{workers} // [] };
ok($w && exists $w->{seen_at} && ref $w->{endpoints} eq 'ARRAY', 'with seen_at and its endpoints');
like(run_kgx('--dsn', $dsn, '--status')->{out}, qr/^workers\n\s+ops-http\b/m, 'text --status lists it too');

$r = $ua->get("$base/no/such/path");
is($r->{status}, 404, 'unknown path: 404');
$r = $ua->request('POST', "$base/kg-extract/status", { content => '' });
is($r->{status}, 405, 'POST: 405');
like(raw_http($port, "GARBAGE\r\n\r\n"), qr{^HTTP/1\.[01] 400 }, 'malformed request line: 400');
like(raw_http($port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), qr{^HTTP/1\.[01] 200 .*\r\n\r\nok\n\z}s,
     'a raw GET is answered 200');

my $stt = stop_kgx($k);
is($stt, 0, 'SIGTERM: daemon exits 0');

# ---------------------------------------------------------------- with KGX_API_KEY
$port = free_port();
$base = "http://127.0.0.1:$port";
$k = spawn_kgx({ env => { KGX_API_KEY => 'secret' } }, '--dsn', $dsn, '--endpoint', $fake->{url},
               '--http', "127.0.0.1:$port", '--poll-interval', 1);
ok(wait_until(20, sub { my $x = $ua->get("$base/healthz", { headers => { 'X-API-Key' => 'secret' } }); $x->{status} == 200 }),
   'with KGX_API_KEY: /healthz with the key answers 200') or diag(read_file($k->{errfile}));
for my $path (qw(/kg-extract/status /metrics /healthz)) {
    is($ua->get("$base$path")->{status}, 401, "$path without X-API-Key: 401");
    is($ua->get("$base$path", { headers => { 'X-API-Key' => 'wrong' } })->{status}, 401, "$path with a wrong key: 401");
    is($ua->get("$base$path", { headers => { 'X-API-Key' => 'secretX' } })->{status}, 401, "$path with a longer key: 401");
    is($ua->get("$base$path", { headers => { 'X-API-Key' => 'secret' } })->{status}, 200, "$path with the key: 200");
}
is(stop_kgx($k), 0, 'daemon with key exits 0 on SIGTERM');

# ---------------------------------------------------------------- the loopback rule
$port = free_port();
$r = run_kgx({ timeout => 30 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "0.0.0.0:$port", '--once');
is($r->{rc}, 2, '--http 0.0.0.0:PORT without --http-allow-remote: exit 2');
like($r->{err}, qr/^error: --http 0\.0\.0\.0:\d+: not a loopback address .*--http-allow-remote/m, 'one-line reason');
$r = run_kgx({ timeout => 30 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "0.0.0.0:$port",
             '--http-allow-remote', '--once');
is($r->{rc}, 0, '... accepted with --http-allow-remote') or diag($r->{err});
$r = run_kgx({ timeout => 30 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "no-such-host:$port", '--once');
is($r->{rc}, 2, '--http with a host name that is not an address: exit 2');
like($r->{err}, qr/^error: --http /m, 'one-line reason');

done_testing();
