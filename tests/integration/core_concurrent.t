#!/usr/bin/env perl
# core_concurrent — three kgx-run --backfill processes side by side on one queue: every drawer goes to
# the LLM exactly once, no duplicate vertex or edge, the graph is the one the sentences imply.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $dsn = fresh_db('core_concurrent');
my $c = gen_corpus(n => 600, seed => 31, pool => 150);
create_drawers($dsn, $c);
my $x = expected_graph($c);
# some latency so that the three really overlap; small batches so that they interleave
my $fake = start_fake('--parallel', 8, '--latency-ms', 5);

my @k = map {
    spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--batch-size', 5, '--workers', 4,
              '--worker-id', "core-concurrent-$_", '--progress-interval', 2)
} 1 .. 3;
for my $i (0 .. 2) {
    my $st = wait_pid($k[$i]{pid}, 90);
    is($st, 0, "process $i exits 0") or diag(read_file($k[$i]{errfile}));
}
my %by = map { split /\|/ } psql($dsn, 'SELECT worker_id, count(*) FROM mempalace_kg_extraction_queue GROUP BY 1');
note('completed per worker: ' . join ', ', map { "$_=$by{$_}" } sort keys %by);
my $workers = grep { /^core-concurrent-/ && $by{$_} > 0 } keys %by;
cmp_ok($workers, '>=', 2, 'the work was shared by several processes');

my $q = queue_rows($dsn);
is(scalar(grep { $_->{completed} } values %$q), 600, 'every drawer completed');
my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
is(scalar @bad, 0, 'triples_extracted per row');

my $s = fake_stats($fake);
is($s->{max_requests_per_text}, 1, 'no drawer sent to the LLM twice');
is($s->{texts_distinct}, 600, 'every drawer sent');
is($s->{extraction_requests}, 600, 'exactly one request per drawer');
graph_matches(graph_dump($dsn), $x, 'three processes');
is(psql($dsn, q{SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()}),
   0, 'three processes: no deadlock detected');

# ---- four processes, faults, one of them SIGKILLed, rows re-queued (same text) while they run:
#      the graph is still exactly the one a clean run gives
{
    local $ENV{KGX_RETRY_BASE_MS} = 50;
    my $d = fresh_db('core_concurrent_chaos');
    my $c2 = gen_corpus(n => 300, seed => 32, pool => 100);
    create_drawers($d, $c2);
    my $x2 = expected_graph($c2);
    my $f = start_fake('--parallel', 8, '--latency-ms', 20, '--fault', '500:0.2:1', '--fault', 'reset:0.1:1',
                       '--fault', 'malformed:0.1:1', '--fault', 'empty:0.05:2');
    my @p = map {
        spawn_kgx('--dsn', $d, '--endpoint', $f->{url}, '--backfill', '--batch-size', 5, '--workers', 4,
                  '--lease-seconds', 2, '--poll-interval', 1, '--worker-id', "chaos-$_")
    } 1 .. 4;
    ok(wait_until(30, sub { queue_count($d, 'completed_at IS NOT NULL') >= 60 }), 'chaos: working')
        or diag(read_file($p[0]{errfile}));
    kill 'KILL', $p[3]{pid};
    wait_pid($p[3]{pid}, 5);
    psql($d, q{INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)
               SELECT id, wing, room FROM mempalace_drawers WHERE id LIKE 'd0000%' OR id LIKE 'd0015%' OR id LIKE 'd0029%'
               ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL,
               error = NULL, worker_id = NULL});
    for my $i (0 .. 2) {
        is(wait_pid($p[$i]{pid}, 60), 0, "chaos: process $i exits 0") or diag(read_file($p[$i]{errfile}));
    }
    my $q2 = queue_rows($d);
    is(scalar(grep { $_->{completed} } values %$q2), 300, 'chaos: every drawer completed');
    is(scalar(grep { $_->{error} } values %$q2), 0, 'chaos: none parked');
    my @b2 = grep { $q2->{$_}{triples} ne $x2->{triples}{$_} } sort keys %$q2;
    is(scalar @b2, 0, 'chaos: triples_extracted per row') or diag("@b2");
    graph_matches(graph_dump($d), $x2, 'chaos');
    # writers of drawers sharing entities take their locks in one order: none ever waits for a deadlock
    is(psql($d, q{SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()}),
       0, 'chaos: no deadlock detected');
}

done_testing();
