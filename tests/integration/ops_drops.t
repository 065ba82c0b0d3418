#!/usr/bin/env perl
# ops_drops — what the policy drops is visible in daemon mode: each rejected triple is logged at debug
# level with its drawer and reason class; counts per class and answers that hit the per-call triple cap
# show in /kg-extract/status, /metrics and --status (text and JSON, summed over live workers); and two
# daemons running different policies on one queue are warned about in the log, the status endpoint and
# --status.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use HTTP::Tiny;

my %noenv = (MEMPALACE_POSTGRES_DSN => undef, MEMPALACE_KG_LLM_ENDPOINT => undef, KGX_POLICY => undef);
my $dsn = fresh_db('drops');
my $f = start_fake();
my $long = 'N' . ('x' x 300);
add_drawers($dsn, [
    { id => 'stop', document => 'It works on Apollo.' },
    { id => 'low',  document => 'Alice works on Apollo (20%).' },
    { id => 'same', document => 'Alice uses alice.' },
    { id => 'long', document => "$long works on Apollo." },
    { id => 'cap',  document => join(' ', map { "Person $_ works on Project $_." } 1 .. 15) },
    { id => 'fine', document => 'Bob works on Apollo.' },
]);
my $port = 20000 + int(rand(30000));
my $k = spawn_kgx({ env => \%noenv }, '--dsn', $dsn, '--endpoint', $f->{url}, '--log-level', 'debug',
                  '--http', "127.0.0.1:$port", '--poll-interval', '1');
my $log = sub { read_file($k->{errfile}) // '' };
ok(wait_until(30, sub { (psql_ok($dsn, 'SELECT 1 FROM mempalace_kg_extraction_queue LIMIT 0'))[0] }), 'daemon up');
psql($dsn, q{INSERT INTO mempalace_kg_extraction_queue (drawer_id) SELECT id FROM mempalace_drawers});
ok(wait_until(60, sub { psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL') == 6 }),
   'all six drawers completed') or diag($log->());

# ---- the log: one debug line per dropped triple, with drawer and class
for my $c (['stop', 'stopword'], ['low', 'low_confidence'], ['same', 'same_entity'], ['long', 'too_long']) {
    like($log->(), qr/debug drawer=$c->[0] chunk=0 drop class=$c->[1] reason="[^"]+"/, "log: drawer=$c->[0] class=$c->[1]");
}
like($log->(), qr/debug drawer=cap chunk=0 answer over the per-call triple cap/, 'log: the capped answer');

# ---- the status endpoint and /metrics
my $http = HTTP::Tiny->new(timeout => 10);
my $st = json_decode($http->get("http://127.0.0.1:$port/kg-extract/status")->{content});
my $d = $st->{process}{drops};
is($d->{$_->[0]}, $_->[1], "status endpoint: drops.$_->[0] = $_->[1]")
    for ['stopword', 1], ['low_confidence', 1], ['same_entity', 1], ['too_long', 1], ['answers_capped', 1];
is_deeply($st->{process}{warnings}, [], 'status endpoint: no warning with one policy');
my $m = $http->get("http://127.0.0.1:$port/metrics")->{content};
like($m, qr/^kgx_triples_dropped_total\{reason="stopword"\} 1$/m, '/metrics: by reason');
like($m, qr/^kgx_triples_dropped_total\{reason="low_confidence"\} 1$/m, '/metrics: low_confidence');
like($m, qr/^kgx_answers_capped_total 1$/m, '/metrics: capped answers');

# ---- --status (from the workers' published state)
ok(wait_until(15, sub { my $r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status'); $r->{out} =~ /^drops .*stopword=1/m }),
   '--status: a drops line');
my $r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json');
my $j = json_decode($r->{out});
is($j->{drops}{same_entity}, 1, '--status --json: drops summed over live workers');
is_deeply($j->{warnings}, [], '--status --json: no warning');

# ---- a second daemon with another policy on the same queue: warned everywhere
my $k2 = spawn_kgx({ env => \%noenv }, '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', likes_policy(),
                   '--poll-interval', '1');
ok(wait_until(30, sub { $log->() =~ /warn 2 policies are active on this queue \((default 1, likes 2|likes 2, default 1)\)/ }),
   'log: two policies warned') or diag($log->());
ok(wait_until(15, sub {
    my $s = json_decode($http->get("http://127.0.0.1:$port/kg-extract/status")->{content});
    grep { /2 policies are active/ } @{ $s->{process}{warnings} } }), 'status endpoint: the warning');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status');
like($r->{out}, qr/^warning: 2 policies are active on this queue/m, '--status: the warning');
$j = json_decode(run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json')->{out});
is(scalar(grep { /2 policies are active/ } @{ $j->{warnings} }), 1, '--status --json: the warning');
is(stop_kgx($k2), 0, 'the second daemon stops');
is(stop_kgx($k), 0, 'the first daemon stops');
done_testing();
