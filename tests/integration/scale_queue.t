#!/usr/bin/env perl
# scale_queue — cost at palace size and deleted drawers:
#   1. with 300,000 pending rows the claim walks an index (EXPLAIN, and the claim index is what the
#      daemon's claims used), and claims work under statement_timeout = 50ms;
#   2. --backfill seeds 20,000 drawers in slices under statement_timeout = 50ms, then claims;
#   3. a write cancelled by statement_timeout (57014) is retried without charging the drawer;
#   4. deleted drawers: a pending row whose drawer is gone completes with status 'deleted' (not parked),
#      kgx_<graph>_prune retracts the facts of drawers deleted after completion, the optional trigger
#      lets a running daemon retract by itself; --status counts them; the graph is the one the remaining
#      drawers imply and every edge's aggregates equal those recomputed from its support rows.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $AGE = qq{LOAD 'age'; SET search_path = ag_catalog, "\$user", public;\n};
my $fake = start_fake('--parallel', 8);

# kgx's sessions (only theirs) under a statement timeout, set through the DSN
sub with_timeout {
    my ($dsn, $t) = @_;
    my $o = "-c statement_timeout=$t";
    if ($dsn =~ m{^postgres(?:ql)?://}) { (my $e = $o) =~ s/ /%20/g; $e =~ s/=/%3D/g; return $dsn . ($dsn =~ /\?/ ? '&' : '?') . "options=$e" }
    return "$dsn options='$o'";
}

# every kgx edge's properties against its support rows (the rule of the write function, recomputed
# from scratch): number of mismatching edges
sub agg_mismatches {
    my ($dsn) = @_;
    return psql($dsn, $AGE . q{
        WITH s AS (SELECT edge_id, count(*) AS n, round(sum(round(confidence * 1000000)::bigint)::numeric / count(*) / 1000000, 4)::float8 AS c,
                          (array_agg(drawer_id ORDER BY confidence DESC, drawer_id))[1] AS src,
                          (array_agg(raw_relation_type ORDER BY confidence DESC, drawer_id) FILTER (WHERE raw_relation_type IS NOT NULL))[1] AS raw
                     FROM kgx_mempalace_kg_support GROUP BY edge_id),
             e AS (SELECT id, agtype_out(properties)::text::jsonb AS p FROM mempalace_kg."RELATION"
                    WHERE agtype_access_operator(VARIADIC ARRAY[properties, '"support"'::agtype]) IS NOT NULL)
        SELECT count(*) FROM e FULL JOIN s ON s.edge_id = e.id
         WHERE e.id IS NULL OR s.edge_id IS NULL OR (e.p->>'support')::bigint <> s.n
            OR (e.p->>'confidence')::float8 <> s.c OR e.p->>'source' <> 'drawer:' || s.src
            OR e.p->>'raw_relation_type' IS DISTINCT FROM s.raw
            OR (SELECT n FROM kgx_mempalace_kg_edge_agg g WHERE g.edge_id = e.id) <> s.n});
}

# ---- 1. 300,000 pending rows
{
    my $dsn = fresh_db('scale_claim');
    create_drawers($dsn, { docs => {} });
    my $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--once');
    is($r->{rc}, 0, 'schema set up') or diag($r->{err});
    psql($dsn, q{INSERT INTO mempalace_drawers (id, wing, room, document)
                 SELECT 'p' || lpad(g::text, 7, '0'), 'w', 'r', 'Alice knows Bob number ' || g FROM generate_series(1, 300000) g});
    # the seed's way: one statement, every row with the same queued_at
    psql($dsn, q{INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)
                 SELECT id, wing, room FROM mempalace_drawers; ANALYZE mempalace_kg_extraction_queue});
    # hundreds of thousands of updates at the head of the queue (completed rows leave the index)
    psql($dsn, q{UPDATE mempalace_kg_extraction_queue SET completed_at = now(), triples_extracted = 0
                  WHERE drawer_id <= 'p0100000'});
    my $plan = join "\n", psql($dsn, q{EXPLAIN
        SELECT drawer_id FROM mempalace_kg_extraction_queue
         WHERE completed_at IS NULL AND error IS NULL
           AND (started_at IS NULL OR started_at < now() - make_interval(secs => 900::float8))
         ORDER BY queued_at, drawer_id LIMIT 20 FOR UPDATE SKIP LOCKED});
    like($plan, qr/Index Scan using kgx_queue_claim_order_idx/, 'the claim walks the claim index') or diag($plan);
    unlike($plan, qr/\bSort\b/, 'no sort of the pending rows') or diag($plan);
    my $n0 = psql($dsn, q{SELECT pg_stat_get_numscans('kgx_queue_claim_order_idx'::regclass)});
    my $tdsn = with_timeout($dsn, '50ms');
    $r = run_kgx('--dsn', $tdsn, '--endpoint', $fake->{url}, '--once', '--batch-size', 20, '--log-level', 'debug');
    is($r->{rc}, 0, 'a claim and its writes under statement_timeout = 50ms with 200,000 pending rows') or diag($r->{err});
    is(queue_count($dsn, q{drawer_id > 'p0100000' AND completed_at IS NOT NULL}), 20, 'one batch of 20 completed')
        or diag($r->{err});
    $r = run_kgx('--dsn', $tdsn, '--status', '--json');
    is($r->{rc}, 0, '--status under statement_timeout = 50ms') or diag($r->{err});
    my $st = eval { json_decode($r->{out}) } // {};
    is($st->{queue_depth}, 199980, '--status: queue_depth');
    is($st->{completed_total}, 100020, '--status: completed_total');
    is($st->{total}, 300000, '--status: total');
    sleep 1;   # statistics are flushed by the server within a second
    my $n1 = psql($dsn, q{SELECT pg_stat_get_numscans('kgx_queue_claim_order_idx'::regclass)});
    cmp_ok($n1, '>', $n0, "the daemon's claim used the claim index ($n0 -> $n1 scans)");
}

# ---- 2. --backfill seeds in slices under a 50 ms statement_timeout
{
    my $dsn = fresh_db('scale_seed');
    create_drawers($dsn, { docs => {} });
    my $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--once');
    is($r->{rc}, 0, 'schema set up') or diag($r->{err});
    psql($dsn, q{INSERT INTO mempalace_drawers (id, wing, room, document)
                 SELECT 's' || lpad(g::text, 6, '0'), 'w', 'r', 'Carol likes Dave number ' || g FROM generate_series(1, 20000) g});
    my $tdsn = with_timeout($dsn, '50ms');
    my $k = spawn_kgx('--dsn', $tdsn, '--endpoint', $fake->{url}, '--backfill', '--batch-size', 20);
    ok(wait_until(60, sub { (read_file($k->{errfile}) // '') =~ /backfill: queued 20000 new drawers/ }),
       'all 20,000 drawers queued under statement_timeout = 50ms') or diag(read_file($k->{errfile}));
    ok(wait_until(30, sub { queue_count($dsn, 'completed_at IS NOT NULL') >= 100 }), 'and claimed, written');
    stop_kgx($k);
    is(queue_count($dsn, 'true'), 20000, 'each drawer queued once');
    my $order = psql($dsn, q{SELECT count(*) FROM (SELECT drawer_id, lag(drawer_id) OVER (ORDER BY queued_at, drawer_id) AS prev
                                                  FROM mempalace_kg_extraction_queue) x WHERE prev > drawer_id});
    is($order, 0, 'seeded rows in id order along the claim order');
}

# ---- 3. 57014 on a write is transient
{
    my $dsn = fresh_db('scale_57014');
    my $c = gen_corpus(n => 12, seed => 7, pool => 10);
    create_drawers($dsn, { docs => {} });
    my $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--once');
    is($r->{rc}, 0, 'schema set up') or diag($r->{err});
    # the first three writes of d00003 outlast the statement timeout
    psql($dsn, q{CREATE SEQUENCE slow_seq;
        CREATE FUNCTION slow_support() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.drawer_id = 'd00003' AND nextval('slow_seq') <= 3 THEN PERFORM pg_sleep(0.5); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER slow BEFORE INSERT ON kgx_mempalace_kg_support FOR EACH ROW EXECUTE FUNCTION slow_support()});
    add_drawers($dsn, $c);
    my $tdsn = with_timeout($dsn, '300ms');
    $r = run_kgx('--dsn', $tdsn, '--endpoint', $fake->{url}, '--backfill', '--log-level', 'debug');
    is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
    like($r->{err}, qr/drawer=d00003 write retry 1: .*statement timeout/, 'the cancelled write was retried');
    my $row = psql($dsn, q{SELECT completed_at IS NOT NULL, attempts, coalesce(last_error, '') FROM mempalace_kg_extraction_queue
                            WHERE drawer_id = 'd00003'});
    is($row, 't|0|', 'completed, no attempt charged');
    cmp_ok(psql($dsn, q{SELECT last_value FROM slow_seq}), '>=', 4, 'three writes were cancelled');
    graph_matches(graph_dump($dsn), expected_graph($c), '57014');
}

# ---- 4. deleted drawers
{
    my $dsn = fresh_db('scale_deleted');
    my $c = gen_corpus(n => 40, seed => 11, pool => 15);
    create_drawers($dsn, $c);
    my $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
    is($r->{rc}, 0, 'backfill') or diag($r->{err});
    graph_matches(graph_dump($dsn), expected_graph($c), 'before deletes');
    is(agg_mismatches($dsn), 0, 'aggregates = recomputed from support');

    my $del = sub {
        my @ids = @_;
        psql($dsn, 'DELETE FROM mempalace_drawers WHERE id IN (' . join(',', map { "'$_'" } @ids) . ')');
        delete $c->{docs}{$_}, delete $c->{facts}{$_} for @ids;
    };
    # deleted after completion, without a re-queue: kgx_<graph>_prune retracts them
    $del->(qw(d00003 d00017 d00018));
    # the way a C caller walks it: batches of 4 drawers, each call continuing after the last one seen
    my ($tot, $calls, $after) = (0, 0, 'NULL');
    while (1) {
        my ($n, $last) = split /\|/, psql($dsn, $AGE . "SELECT pruned, coalesce(last, '') FROM kgx_mempalace_kg_prune($after, 4)");
        $tot += $n;
        $calls++;
        last if $last eq '' || $calls > 100;
        $after = "'$last'";
    }
    is($tot, 3, 'prune: three drawers');
    cmp_ok($calls, '>=', 10, "in batches ($calls calls)");
    graph_matches(graph_dump($dsn), expected_graph($c), 'after prune');
    is(agg_mismatches($dsn), 0, 'aggregates after prune');
    is(queue_count($dsn, q{status = 'deleted' AND completed_at IS NOT NULL AND triples_extracted = 0}), 3,
       'pruned rows: completed, status deleted, 0 facts');

    # deleted and re-queued the seed's way: completed with status deleted, not parked
    $del->('d00020');
    psql($dsn, q{UPDATE mempalace_kg_extraction_queue SET completed_at = NULL, started_at = NULL, error = NULL
                  WHERE drawer_id = 'd00020'});
    $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--once');
    is($r->{rc}, 0, '--once') or diag($r->{err});
    is(psql($dsn, q{SELECT concat_ws('|', completed_at IS NOT NULL, error IS NULL, status) FROM mempalace_kg_extraction_queue
                     WHERE drawer_id = 'd00020'}), 't|t|deleted', 'a re-queued deleted drawer completes as deleted');
    graph_matches(graph_dump($dsn), expected_graph($c), 'after a re-queued delete');

    # the optional trigger: a running daemon follows deletes by itself
    psql($dsn, q{SELECT kgx_follow_deletes(true)});
    my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--poll-interval', 60);
    ok(wait_until(20, sub { (read_file($k->{errfile}) // '') =~ /\bdb up\b/ }), 'daemon up') or diag(read_file($k->{errfile}));
    $del->(qw(d00030 d00031));
    ok(wait_until(20, sub { queue_count($dsn, q{status = 'deleted'}) == 6 && queue_count($dsn, 'completed_at IS NULL') == 0 }),
       'the daemon retracted the deleted drawers (trigger)');
    stop_kgx($k);
    graph_matches(graph_dump($dsn), expected_graph($c), 'after the trigger');
    is(agg_mismatches($dsn), 0, 'aggregates after the trigger');
    psql($dsn, q{SELECT kgx_follow_deletes(false)});
    is(psql($dsn, q{SELECT count(*) FROM pg_trigger WHERE tgname = 'kgx_follow_deletes'}), 0, 'trigger removed');
    $r = run_kgx('--dsn', $dsn, '--status', '--json');
    my $st = eval { json_decode($r->{out}) } // {};
    is($st->{deleted}, 6, '--status counts deleted drawers');
    is($st->{errors_total}, 0, 'none parked');
    $r = run_kgx('--dsn', $dsn, '--status');
    like($r->{out}, qr/^deleted\s+6\b/m, '--status text shows them');
}

done_testing();
