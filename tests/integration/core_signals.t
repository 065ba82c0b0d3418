#!/usr/bin/env perl
# core_signals — SIGTERM mid-run: exit 0 within 10 s, none of the worker's rows left claimed;
# SIGKILL mid-run, then a run with a short lease: everything completes, the graph is identical to a
# clean run's.
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use Time::HiRes qw(time);

my $c = gen_corpus(n => 240, seed => 41, pool => 120);
my $x = expected_graph($c);

# ---- the clean run, for comparison
my $clean = fresh_db('core_signals_clean');
create_drawers($clean, $c);
my $f0 = start_fake();
my $r = run_kgx('--dsn', $clean, '--endpoint', $f0->{url}, '--backfill');
is($r->{rc}, 0, 'clean run') or diag($r->{err});
my $g0 = graph_dump($clean);
graph_matches($g0, $x, 'clean run');
my $canon = graph_canon($g0);
stop_fake($f0);

my $fake = start_fake('--latency-ms', 200, '--parallel', 4);
sub completed { queue_count($_[0], 'completed_at IS NOT NULL') }
sub claimed { queue_count($_[0], 'completed_at IS NULL AND started_at IS NOT NULL') }

# ---- SIGTERM
my $dsn = fresh_db('core_signals_term');
create_drawers($dsn, $c);
my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--worker-id', 'sig-term',
                  '--workers', 4, '--batch-size', 10);
ok(wait_until(30, sub { completed($dsn) >= 10 && claimed($dsn) > 0 && fake_stats($fake)->{in_flight} > 0 }),
   'working: rows completed, rows claimed, requests in flight') or diag(read_file($k->{errfile}));
my $t0 = time;
kill 'TERM', $k->{pid};
my $st = wait_pid($k->{pid}, 12);
my $dt = time - $t0;
is($st, 0, 'SIGTERM: exit 0') or diag(read_file($k->{errfile}));
cmp_ok($dt, '<=', 10, 'SIGTERM: gone within 10 s');
note(sprintf 'SIGTERM to exit: %.2f s', $dt);
my $done = completed($dsn);
cmp_ok($done, '<', 240, 'stopped mid-run');
is(scalar psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NULL AND started_at IS NOT NULL"),
   0, 'no row left claimed (started_at NULL for every row not completed)');
is(scalar psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NULL AND worker_id = 'sig-term'"),
   0, 'no unfinished row still names the stopped worker');
is(scalar psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE error IS NOT NULL'), 0, 'nothing parked');
# the rest, normally: the released rows are claimable at once (default 900 s lease)
fake_config($fake, { latency_ms => 0 });
$r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
is($r->{rc}, 0, 'after SIGTERM, a second run finishes') or diag($r->{err});
is(completed($dsn), 240, 'all completed');
canon_is(graph_canon(graph_dump($dsn)), $canon, 'after SIGTERM + resume: graph identical to the clean run');

# ---- SIGKILL
fake_config($fake, { latency_ms => 200 });
fake_reset($fake);
$dsn = fresh_db('core_signals_kill');
create_drawers($dsn, $c);
$k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--worker-id', 'sig-kill',
               '--workers', 4, '--batch-size', 10);
ok(wait_until(30, sub { completed($dsn) >= 10 && claimed($dsn) > 0 }), 'working before SIGKILL')
    or diag(read_file($k->{errfile}));
kill 'KILL', $k->{pid};
wait_pid($k->{pid}, 10);
my $held = claimed($dsn);
cmp_ok($held, '>', 0, "SIGKILL leaves rows claimed ($held)");
fake_config($fake, { latency_ms => 0 });
$r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--lease-seconds', 2,
             '--poll-interval', 1, '--worker-id', 'sig-after');
is($r->{rc}, 0, 'a run with a 2 s lease finishes') or diag($r->{err});
is(completed($dsn), 240, 'everything completed, the killed worker\'s rows too');
is(scalar psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE worker_id = 'sig-kill' AND completed_at IS NULL"),
   0, 'no row left with the killed worker');
my $g = graph_dump($dsn);
graph_matches($g, $x, 'after SIGKILL');
canon_is(graph_canon($g), $canon, 'after SIGKILL + lease: graph identical to the clean run');

# ---- SIGTERM while every request hangs (no answer ever comes) and others wait for a retry
{
    local $ENV{KGX_RETRY_BASE_MS} = 5000;
    my $hf = start_fake('--fault', 'hang:0.5', '--fault', '500:1.0', '--hang-ms', 600000);
    my $d = fresh_db('core_signals_hang');
    create_drawers($d, $c);
    my $hk = spawn_kgx('--dsn', $d, '--endpoint', $hf->{url}, '--backfill', '--worker-id', 'sig-hang',
                       '--request-timeout', 120, '--workers', 8, '--batch-size', 10);
    ok(wait_until(20, sub { fake_stats($hf)->{in_flight} >= 2 && queue_count($d, 'attempts > 0') >= 1 }),
       'requests hanging and rows waiting for a retry') or diag(read_file($hk->{errfile}));
    my $t = time;
    kill 'TERM', $hk->{pid};
    my $hst = wait_pid($hk->{pid}, 12);
    my $hdt = time - $t;
    is($hst, 0, 'SIGTERM with hanging requests: exit 0') or diag(read_file($hk->{errfile}));
    cmp_ok($hdt, '<=', 10, 'SIGTERM with hanging requests: gone within 10 s');
    is(queue_count($d, 'completed_at IS NULL AND (started_at IS NOT NULL OR worker_id IS NOT NULL)'), 0,
       'hanging and retrying rows given back');
    is(queue_count($d, 'error IS NOT NULL'), 0, 'nothing parked by the stop');
    ok(wait_until(5, sub { fake_stats($hf)->{in_flight} == 0 }), 'the hanging requests were cancelled (connections closed)');
}

done_testing();
