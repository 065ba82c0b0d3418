#!/usr/bin/env perl
# core_race — claims under pressure: two processes with a lease (2 s) shorter than one LLM request
# (2.5 s) still send each drawer once (the heartbeat keeps the lease); a drawer re-queued with new text
# while its old text is in flight ends with the new text's facts only (the stale write is refused).
use strict;
use warnings;
use KgxTest;
use KgxGraph;

$ENV{KGX_RETRY_BASE_MS} = 50;

# ---- lease shorter than a request, two processes
{
    my $dsn = fresh_db('core_race_lease');
    my $c = gen_corpus(n => 24, seed => 91, pool => 30);
    create_drawers($dsn, $c);
    my $fake = start_fake('--latency-ms', 2500, '--parallel', 16, '--ctx-size', 131072);
    my @k = map { spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--lease-seconds', 2,
                            '--poll-interval', 1, '--workers', 8, '--batch-size', 4, '--worker-id', "lease-$_") } 1 .. 2;
    for (@k) { is(wait_pid($_->{pid}, 60), 0, 'process exits 0') or diag(read_file($_->{errfile})) }
    my $s = fake_stats($fake);
    is($s->{max_requests_per_text}, 1, 'no drawer sent twice although each request outlives the lease')
        or diag("requests=$s->{extraction_requests} over_once=$s->{texts_over_once}");
    is($s->{texts_distinct}, 24, 'every drawer sent');
    is(queue_count($dsn, 'completed_at IS NOT NULL'), 24, 'all completed');
    graph_matches(graph_dump($dsn), expected_graph($c), 'short lease');
}

# ---- re-queued with new text while the old text is in flight
{
    my $dsn = fresh_db('core_race_requeue');
    my $c = gen_corpus(n => 20, seed => 92, pool => 25);
    create_drawers($dsn, $c);
    my $fake = start_fake('--latency-ms', 1500, '--parallel', 32, '--ctx-size', 131072);
    my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--poll-interval', 1, '--workers', 32,
                      '--log-level', 'debug');
    psql($dsn, 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) SELECT id, wing, room FROM mempalace_drawers')
        if wait_until(20, sub { queue_count($dsn) == 0 && eval { psql($dsn, 'SELECT 1 FROM mempalace_kg_extraction_queue LIMIT 0'); 1 } });
    ok(wait_until(10, sub { fake_stats($fake)->{in_flight} >= 20 }), 'all 20 old texts in flight')
        or diag(read_file($k->{errfile}));
    # new text for 10 of them, re-queued the seed's way while their old text is with the LLM
    my $new = gen_corpus(n => 10, seed => 93, pool => 25);
    my %c2 = (docs => { %{ $c->{docs} } }, facts => { %{ $c->{facts} } });
    for my $id (keys %{ $new->{docs} }) {
        $c2{docs}{$id} = "Second version. " . $new->{docs}{$id};
        $c2{facts}{$id} = $new->{facts}{$id};
    }
    add_drawers($dsn, \%c2);
    psql($dsn, 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) VALUES '
             . join(',', map { "('$_', 'w', 'r')" } sort keys %{ $new->{docs} })
             . ' ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL,'
             . ' error = NULL, worker_id = NULL');
    ok(wait_until(30, sub {
        queue_count($dsn, 'completed_at IS NOT NULL') == 20 && fake_stats($fake)->{in_flight} == 0
            && fake_stats($fake)->{extraction_requests} >= 30 }), 'everything completed, new texts included')
        or diag(read_file($k->{errfile}));
    sleep 1;
    is(queue_count($dsn, 'completed_at IS NOT NULL'), 20, 'still all completed');
    my $x2 = expected_graph(\%c2);
    my $q = queue_rows($dsn);
    my @bad = grep { $q->{$_}{triples} ne $x2->{triples}{$_} } sort keys %$q;
    is(scalar @bad, 0, 'triples_extracted follows the new texts') or diag("@bad");
    graph_matches(graph_dump($dsn), $x2, 're-queued in flight');
    my $s = fake_stats($fake);
    is($s->{max_requests_per_text}, 1, 'each text version sent once');
    is($s->{texts_distinct}, 30, '20 old texts + 10 new ones');
    is(stop_kgx($k, 'TERM', 10), 0, 'daemon exits 0');
}

done_testing();
