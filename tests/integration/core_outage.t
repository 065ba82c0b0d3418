#!/usr/bin/env perl
# core_outage — a drawer that always fails is parked with its error and attempts = --max-attempts; every
# endpoint down for a while (the fake stopped, a new one on the same port ~5 s later): nothing parked,
# no attempt charged for the outage, work resumes and completes. The same for a server still loading
# its model at start and for a model reload mid-run (503 "Loading model" everywhere).
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use HTTP::Tiny;

$ENV{KGX_RETRY_BASE_MS} = 50;
my $http_ua = HTTP::Tiny->new(timeout => 10);

# ---- always failing: parked after 3 attempts, with the error
{
    my $dsn = fresh_db('core_outage_park');
    my $c = gen_corpus(n => 5, seed => 61, prefix => 'p');
    create_drawers($dsn, $c);
    my $fake = start_fake('--fault', '500:1.0');
    my $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 3);
    is($r->{rc}, 0, 'backfill with an always-failing LLM exits 0 (it drained the queue)') or diag($r->{err});
    like($r->{err}, qr/^final: completed=0 pending=0 in_flight=0 errors=5$/m, 'final line counts the parked rows');
    my @rows = psql($dsn, 'SELECT drawer_id, attempts, completed_at IS NULL, parked_at IS NOT NULL, started_at IS NULL,'
                        . ' worker_id IS NULL, error FROM mempalace_kg_extraction_queue ORDER BY 1');
    is(scalar @rows, 5, 'five rows');
    for (@rows) {
        my ($id, $att, $notdone, $parked, $unstarted, $noworker, $err) = split /\|/, $_, 7;
        is($att, 3, "$id: attempts = 3");
        ok($notdone eq 't' && $parked eq 't', "$id: parked, not completed");
        ok($unstarted eq 't' && $noworker eq 't', "$id: not left claimed");
        like($err, qr/500/, "$id: error says what failed") or diag($err);
    }
    is(fake_stats($fake)->{extraction_requests}, 15, 'exactly 3 requests per drawer');
    my $s = run_kgx('--dsn', $dsn, '--status', '--json');
    is(json_decode($s->{out})->{errors_total}, 5, '--status counts them in errors_total');
    is(scalar psql($dsn, qq{LOAD 'age'; SELECT count(*) FROM mempalace_kg."RELATION"}), 0, 'nothing written');
    # a parked row stays parked on the next backfill, and is re-queued the seed's way
    fake_config($fake, { faults => [] });
    $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
    is(scalar psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE parked_at IS NOT NULL'), 5,
       'parked rows stay parked on the next backfill');
    psql($dsn, q{INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) SELECT id, wing, room FROM mempalace_drawers
                 ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL,
                 error = NULL, worker_id = NULL});
    is(scalar psql($dsn, 'SELECT sum(attempts) FROM mempalace_kg_extraction_queue'), 0, "the seed's re-queue resets attempts");
    $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--once');
    is($r->{rc}, 0, '--once after the re-queue') or diag($r->{err});
    graph_matches(graph_dump($dsn), expected_graph($c), 're-queued parked rows');
    stop_fake($fake);
}

# ---- every endpoint down for a while
{
    my $dsn = fresh_db('core_outage_down');
    my $c = gen_corpus(n => 200, seed => 62, pool => 100);
    create_drawers($dsn, $c);
    my $fake = start_fake('--latency-ms', 30, '--parallel', 4);
    my $port = $fake->{port};
    my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 2,
                      '--poll-interval', 1, '--workers', 4, '--batch-size', 10);
    my $done = sub { queue_count($dsn, 'completed_at IS NOT NULL') };
    ok(wait_until(30, sub { $done->() >= 20 }), 'working before the outage') or diag(read_file($k->{errfile}));
    stop_fake($fake);
    my $at_stop = $done->();
    sleep 5;
    my $during = $done->();
    cmp_ok($during, '<', 200, "the outage stops the work ($at_stop at the stop, $during after 5 s)");
    is(scalar psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE error IS NOT NULL'), 0,
       'nothing parked during the outage');
    ok(!defined wait_pid($k->{pid}, 0.1), 'the daemon waits for the endpoint');
    my $f2 = start_fake('--port', $port, '--parallel', 4);
    is($f2->{port}, $port, 'a new fake on the same port');
    my $st = wait_pid($k->{pid}, 60);
    is($st, 0, 'the backfill finishes once the endpoint is back') or diag(read_file($k->{errfile}));
    my $q = queue_rows($dsn);
    is(scalar(grep { $_->{completed} } values %$q), 200, 'every drawer completed');
    is(scalar(grep { $_->{error} } values %$q), 0, 'nothing parked');
    my $charged = grep { $_->{attempts} > 0 } values %$q;
    note("rows with a charged attempt: $charged");
    cmp_ok($charged, '<=', 4, 'the outage is not charged to the drawers (at most the in-flight ones once)');
    my $x = expected_graph($c);
    my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
    is(scalar @bad, 0, 'triples_extracted per row');
    graph_matches(graph_dump($dsn), $x, 'after the outage');
    like(read_file($k->{errfile}), qr/state=down/, 'the endpoint was seen down') or diag(read_file($k->{errfile}));
}

# ---- two endpoints, one of them dead all along: everything goes to the live one, nothing charged
{
    my $dsn = fresh_db('core_outage_half');
    my $c = gen_corpus(n => 60, seed => 64, pool => 40);
    create_drawers($dsn, $c);
    my $fake = start_fake();
    my $dead = start_fake();
    my $dead_url = $dead->{url};
    stop_fake($dead);
    my $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', "$dead_url,$fake->{url}", '--backfill',
                    '--max-attempts', 1, '--poll-interval', 1);
    is($r->{rc}, 0, 'one dead endpoint of two: backfill exits 0') or diag($r->{err});
    is(queue_count($dsn, 'completed_at IS NOT NULL'), 60, 'one dead endpoint: every drawer completed');
    is(queue_count($dsn, 'error IS NOT NULL'), 0, 'one dead endpoint: nothing parked with --max-attempts 1');
    is(fake_stats($fake)->{extraction_requests}, 60, 'the live endpoint got every drawer once');
    graph_matches(graph_dump($dsn), expected_graph($c), 'one dead endpoint');
}

# ---- the server still loading its model (503 on every endpoint for 3 s): waited for, never charged
{
    my $dsn = fresh_db('core_outage_loading');
    my $c = gen_corpus(n => 40, seed => 63, pool => 30);
    create_drawers($dsn, $c);
    my $fake = start_fake('--loading-ms', 3000);
    my $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 1,
                    '--poll-interval', 1);
    is($r->{rc}, 0, 'loading server: backfill exits 0') or diag($r->{err});
    is(queue_count($dsn, 'completed_at IS NOT NULL'), 40, 'loading server: every drawer completed');
    is(queue_count($dsn, 'error IS NOT NULL'), 0, 'loading server: nothing parked with --max-attempts 1');
    is(queue_count($dsn, 'attempts > 0'), 0, 'loading server: no attempt charged');
    graph_matches(graph_dump($dsn), expected_graph($c), 'after loading');
}

# ---- the model reloads mid-run: llama-server answers 503 "Loading model" to every request, /health
#      included, until it is loaded. That is the endpoint not being ready, not a busy server: the
#      endpoint is set aside and /health asked until it answers 200 — nothing charged, no drawer split
#      smaller, the in-flight limit left alone (halving it would end, at a limit of 1, in splitting
#      drawers for as long as the model loads).
{
    my $dsn = fresh_db('core_outage_reload');
    my $c = gen_corpus(n => 80, seed => 64, pool => 50);
    create_drawers($dsn, $c);
    my $fake = start_fake('--parallel', 4, '--latency-ms', 40);
    my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 1,
                      '--poll-interval', 1);
    ok(wait_until(60, sub { fake_stats($fake)->{extraction_requests} >= 12 }), 'reload: work under way');
    fake_config($fake, { loading_ms => 2500 });
    my $r = $http_ua->get("$fake->{url}/health");
    is($r->{status}, 503, 'reload: /health answers 503 while the model loads');
    my $st = wait_pid($k->{pid}, 90);
    my $err = read_file($k->{errfile}) // '';
    is($st, 0, 'reload: backfill exits 0') or diag(substr($err, -3000));
    is(queue_count($dsn, 'completed_at IS NOT NULL'), 80, 'reload: every drawer completed');
    is(queue_count($dsn, 'attempts > 0'), 0, 'reload: no attempt charged (--max-attempts 1)');
    like($err, qr/state=down reason="503 loading"/, 'reload: the endpoint was set aside (503 loading)');
    like($err, qr/state=down reason="503 loading".*\bstate=up\b/s, 'reload: ... and came back up');
    unlike($err, qr/capacity signal|in-flight limit \d+ -> /, 'reload: the in-flight limit was not lowered');
    unlike($err, qr/splitting smaller|split into \d+ smaller/, 'reload: no drawer split smaller');
    graph_matches(graph_dump($dsn), expected_graph($c), 'after a reload');
}

done_testing();
