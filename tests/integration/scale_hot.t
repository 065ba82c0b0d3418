#!/usr/bin/env perl
# scale_hot — a fact every drawer states (issue 12, hot facts): a writer updates an edge's aggregate at
# once only when no other transaction holds its row (SKIP LOCKED); else it appends an aggregate delta
# (kgx_<graph>_edge_delta) and kgx_<graph>_fold applies them to the edge in batches.
#   1. three --backfill processes whose drawers all state one shared fact: no deadlock, nothing left to
#      fold when they exit, the graph is the one the sentences imply and every edge's properties and
#      aggregates equal those recomputed from its support rows;
#   2. a running daemon folds what it wrote within a few seconds (the edge lags, then is exact);
#   3. writes that met a held aggregate row, whose fold never ran (a process killed in between), leave
#      the edge consistent with its deltas (aggregate + pending = support rows), and the next start
#      folds them; a write nobody contends leaves the edge exact at once, nothing to fold;
#   4. a fold never deletes an edge a writer holds: the writer (past its edge locks, before its
#      aggregates) adding the edge's only support commits after the fold, and the edge is there, exact.
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use POSIX ();
use Time::HiRes qw(time);

my $AGE = qq{LOAD 'age'; SET search_path = ag_catalog, "\$user", public;\n};
my $fake = start_fake('--parallel', 8, '--latency-ms', 5);
my @SHARED = ('Omega Point', 'owns', 'Delta Force');
my $hub = join '|', name_key($SHARED[0]), 'owns', name_key($SHARED[2]);

# every drawer also states the shared fact
sub hot_corpus {
    my (%o) = @_;
    my $c = gen_corpus(%o, names => 12, pool => 40);
    for my $id (keys %{ $c->{docs} }) {
        $c->{docs}{$id} .= " $SHARED[0] $SHARED[1] $SHARED[2].";
        push @{ $c->{facts}{$id} }, [name_key($SHARED[0]), 'owns', name_key($SHARED[2]), 'owns'];
    }
    return $c;
}

# edges whose properties or aggregates differ from those recomputed from their support rows, support
# rows of edges that do not exist, and pending deltas
sub agg_check {
    my ($dsn) = @_;
    my ($bad, $lost, $pending) = split /\|/, psql($dsn, $AGE . q{
        WITH s AS (SELECT edge_id, count(*) AS n, sum(round(confidence * 1000000)::bigint)::bigint AS m,
                          round(sum(round(confidence * 1000000)::bigint)::numeric / count(*) / 1000000, 4)::float8 AS c,
                          (array_agg(drawer_id ORDER BY confidence DESC, drawer_id))[1] AS src,
                          (array_agg(raw_relation_type ORDER BY confidence DESC, drawer_id) FILTER (WHERE raw_relation_type IS NOT NULL))[1] AS raw
                     FROM kgx_mempalace_kg_support GROUP BY edge_id),
             e AS (SELECT id, agtype_out(properties)::text::jsonb AS p FROM mempalace_kg."RELATION"
                    WHERE agtype_access_operator(VARIADIC ARRAY[properties, '"support"'::agtype]) IS NOT NULL)
        SELECT (SELECT count(*) FROM e FULL JOIN s ON s.edge_id = e.id
                 WHERE e.id IS NULL OR s.edge_id IS NULL OR (e.p->>'support')::bigint <> s.n
                    OR (e.p->>'confidence')::float8 <> s.c OR e.p->>'source' <> 'drawer:' || s.src
                    OR e.p->>'raw_relation_type' IS DISTINCT FROM s.raw
                    OR (SELECT row(g.n, g.conf_micro) FROM kgx_mempalace_kg_edge_agg g WHERE g.edge_id = e.id)
                       IS DISTINCT FROM row(s.n::integer, s.m)),
               (SELECT count(*) FROM kgx_mempalace_kg_support s
                 WHERE NOT EXISTS (SELECT 1 FROM mempalace_kg."RELATION" r WHERE r.id = s.edge_id)),
               (SELECT count(*) FROM kgx_mempalace_kg_edge_delta)});
    return { bad => $bad, lost => $lost, pending => $pending };
}

# aggregate + pending deltas = support rows, for every edge (the invariant at every commit)
sub invariant_breaks {
    my ($dsn) = @_;
    return psql($dsn, $AGE . q{
        SELECT count(*) FROM kgx_mempalace_kg_edge_agg g
          LEFT JOIN (SELECT edge_id, sum(dn) AS dn, sum(dm) AS dm FROM kgx_mempalace_kg_edge_delta GROUP BY 1) d
            ON d.edge_id = g.edge_id
          LEFT JOIN (SELECT edge_id, count(*) AS n, sum(round(confidence * 1000000)::bigint) AS m
                       FROM kgx_mempalace_kg_support GROUP BY 1) s ON s.edge_id = g.edge_id
         WHERE g.n + coalesce(d.dn, 0) <> coalesce(s.n, 0) OR g.conf_micro + coalesce(d.dm, 0) <> coalesce(s.m, 0)});
}

sub hub_support {
    my ($dsn) = @_;
    return psql($dsn, $AGE . qq{SELECT (agtype_out(r.properties)::text::jsonb->>'support')::int
        FROM mempalace_kg."RELATION" r JOIN kgx_mempalace_kg_support s ON s.edge_id = r.id
       WHERE s.subject_key = '@{[ name_key($SHARED[0]) ]}' AND s.object_key = '@{[ name_key($SHARED[2]) ]}' LIMIT 1});
}

my $deadlocks = sub { psql($_[0], q{SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()}) };

# ---- 1. three processes, one shared fact
my $dsn = fresh_db('scale_hot');
my $c = hot_corpus(n => 450, seed => 61);
create_drawers($dsn, $c);
my $x = expected_graph($c);
is($x->{support}{$hub}, 450, 'every drawer states the shared fact');
my @k = map {
    spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--batch-size', 5, '--workers', 8,
              '--worker-id', "hot-$_", '--progress-interval', 3600)
} 1 .. 3;
for my $i (0 .. 2) {
    is(wait_pid($k[$i]{pid}, 120), 0, "process $i exits 0") or diag(read_file($k[$i]{errfile}));
}
my %by = map { split /\|/ } psql($dsn, 'SELECT worker_id, count(*) FROM mempalace_kg_extraction_queue GROUP BY 1');
cmp_ok(scalar(grep { /^hot-/ && $by{$_} > 0 } keys %by), '>=', 2, 'the drawers were shared by several processes')
    or diag(join ', ', map { "$_=$by{$_}" } sort keys %by);
graph_matches(graph_dump($dsn), $x, 'three processes');
my $v1 = agg_check($dsn);
is($v1->{pending}, 0, 'three processes: nothing left to fold');
is($v1->{bad}, 0, 'three processes: every edge = recomputed from its support rows');
is($v1->{lost}, 0, 'three processes: no support row of a missing edge');
is(hub_support($dsn), 450, 'the shared edge: support 450');
sleep 1;   # backends flush their statistics when they exit
is($deadlocks->($dsn), 0, 'three processes: no deadlock detected');

# ---- 2. a running daemon: the edge lags by a fold, then is exact
{
    my $d = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--poll-interval', 1, '--workers', 8,
                      '--batch-size', 5, '--worker-id', 'hot-daemon');
    my $c2 = hot_corpus(n => 120, seed => 62, prefix => 'e');
    add_drawers($dsn, $c2);
    psql($dsn, q{INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)
                 SELECT id, wing, room FROM mempalace_drawers WHERE id LIKE 'e%'});
    ok(wait_until(60, sub { queue_count($dsn, q{drawer_id LIKE 'e%' AND completed_at IS NOT NULL}) == 120 }),
       'daemon: 120 more drawers completed') or diag(read_file($d->{errfile}));
    my $t0 = time;
    ok(wait_until(10, sub { my $v = agg_check($dsn); $v->{bad} == 0 && $v->{pending} == 0 }, 0.1),
       'daemon: the edges are exact within 10 s of the last completion');
    note(sprintf 'daemon: exact %.2f s after the last completion was seen', time - $t0);
    is(hub_support($dsn), 570, 'daemon: the shared edge: support 570');
    is(stop_kgx($d), 0, 'daemon stops cleanly');
    my %all = (docs => { %{ $c->{docs} }, %{ $c2->{docs} } }, facts => { %{ $c->{facts} }, %{ $c2->{facts} } });
    graph_matches(graph_dump($dsn), expected_graph(\%all), 'daemon');
}

# a psql session in the background: SQL, then a 4 s sleep tagged $tag (so the test can wait until it
# is there), then more SQL, in one transaction; returns its pid
sub hold_session {
    my ($dsn, $tag, $before, $after) = @_;
    my $sqlf = "/tmp/scale_hot_${tag}_$$.sql";
    open my $fh, '>', $sqlf or die "$sqlf: $!";
    print $fh $AGE . "BEGIN;\n$before\nSELECT pg_sleep(4), '$tag';\n" . ($after // '') . "\nCOMMIT;\n";
    close $fh;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        exec('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $dsn, '-f', $sqlf) or POSIX::_exit(127);
    }
    ok(wait_until(20, sub { psql($dsn, qq{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%$tag%'
                                           AND state = 'active' AND pid <> pg_backend_pid()}) == 1 }),
       "session $tag is in its transaction");
    return ($pid, $sqlf);
}

# ---- 3. writes that met a held aggregate row and whose fold never ran: consistent, folded by the next start
{
    # another transaction holds every aggregate row (what a writer in its last step holds) while the
    # write function is called directly (what a process killed after its commit leaves): two drawers
    # restate the shared fact with another confidence, one drawer is re-extracted with no facts at all
    my ($pid, $sqlf) = hold_session($dsn, 'scale_hot_session_b',
        'SELECT count(*) FROM (SELECT 1 FROM kgx_mempalace_kg_edge_agg ORDER BY edge_id FOR NO KEY UPDATE) x;');
    psql($dsn, $AGE . q{
        SELECT kgx_mempalace_kg_write(id, NULL, NULL,
               '[{"s":"Omega Point","p":"owns","o":"Delta Force","c":0.95,"raw":null,"chunk":0}]'::jsonb, NULL)
          FROM (VALUES ('d00001'), ('d00002')) v(id);
        SELECT kgx_mempalace_kg_write('d00003', NULL, NULL, '[]'::jsonb, NULL);});
    is(wait_pid($pid, 30), 0, 'the session holding the aggregate rows ended');
    unlink $sqlf;
    my $v = agg_check($dsn);
    cmp_ok($v->{pending}, '>', 0, 'direct writes: deltas pending');
    cmp_ok($v->{bad}, '>', 0, 'direct writes: the edges lag');
    is(invariant_breaks($dsn), 0, 'direct writes: aggregate + pending deltas = support rows, for every edge');
    my $r = run_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--progress-interval', 3600);
    is($r->{rc}, 0, 'the next start') or diag($r->{err});
    $v = agg_check($dsn);
    is($v->{pending}, 0, 'the next start folded the deltas');
    is($v->{bad}, 0, 'the next start: every edge = recomputed from its support rows');
    is(hub_support($dsn), 569, 'the shared edge: support 569 (d00003 retracted)');
    # a fact few drawers state, nobody holding its row: the edge is updated by the write itself (born by
    # d00003's first write, restated with another confidence by its second)
    psql($dsn, $AGE . q{SELECT kgx_mempalace_kg_write('d00003', NULL, NULL,
               '[{"s":"Omega Point","p":"uses","o":"Zeta Gate","c":0.9,"raw":null,"chunk":0}]'::jsonb, NULL);
        SELECT kgx_mempalace_kg_write('d00003', NULL, NULL,
               '[{"s":"Omega Point","p":"uses","o":"Zeta Gate","c":0.4,"raw":"employs","chunk":0}]'::jsonb, NULL)});
    $v = agg_check($dsn);
    is($v->{pending}, 0, 'an uncontended write of a fact few drawers state: no delta');
    is($v->{bad}, 0, 'an uncontended write: every edge exact at once (confidence, raw predicate)');
    # a hot fact (32 supports or more): its edge row is not rewritten by each drawer, the change waits
    # for the fold
    psql($dsn, $AGE . q{SELECT kgx_mempalace_kg_write('d00001', NULL, NULL,
               '[{"s":"Omega Point","p":"owns","o":"Delta Force","c":0.55,"raw":null,"chunk":0}]'::jsonb, NULL)});
    $v = agg_check($dsn);
    is($v->{pending}, 1, 'a hot fact restated: one delta');
    is(invariant_breaks($dsn), 0, 'a hot fact restated: aggregate + pending deltas = support rows');
    psql($dsn, $AGE . q{SELECT * FROM kgx_mempalace_kg_fold(1000)});
    is(agg_check($dsn)->{bad}, 0, 'and exact after the fold');
}

# ---- 4. a fold does not delete an edge a writer holds
{
    my $f = psql($dsn, $AGE . q{SELECT count(*) FROM mempalace_kg."RELATION" r
                  WHERE agtype_access_operator(VARIADIC ARRAY[r.properties, '"relation_type"'::agtype]) = '"mentions"'::agtype
                    AND agtype_access_operator(VARIADIC ARRAY[r.properties, '"support"'::agtype]) IS NOT NULL
                    AND r.start_id = (SELECT id FROM mempalace_kg."Entity" WHERE agtype_access_operator(VARIADIC ARRAY[properties, '"key"'::agtype]) = '"omega point"'::agtype)});
    is($f, 0, 'the fact "Omega Point mentions Alice" is not in the graph yet');
    my $fact = '[{"s":"Omega Point","p":"mentions","o":"Alice","c":0.8,"raw":null,"chunk":0}]';
    psql($dsn, $AGE . qq{SELECT kgx_mempalace_kg_write('d00010', NULL, NULL, '$fact'::jsonb, NULL);
                         SELECT * FROM kgx_mempalace_kg_fold(1000)});
    my $edge = sub { psql($dsn, $AGE . q{SELECT count(*) FROM kgx_mempalace_kg_edge_agg g JOIN mempalace_kg."RELATION" r ON r.id = g.edge_id
                            WHERE agtype_access_operator(VARIADIC ARRAY[r.properties, '"relation_type"'::agtype]) = '"mentions"'::agtype
                              AND r.start_id = (SELECT id FROM mempalace_kg."Entity" WHERE agtype_access_operator(VARIADIC ARRAY[properties, '"key"'::agtype]) = '"omega point"'::agtype)}) };
    is($edge->(), 1, 'the fact has its edge (one support: d00010)');
    # session A is a writer past its edge locks (it holds the edge, key-share) and before its support
    # and aggregates; meanwhile d00010 retracts the only committed support and a fold runs: the edge's
    # aggregate reaches 0, but A holds the edge. Then A adds d00011's support and commits.
    my $edge_sql = q{SELECT count(*) FROM (SELECT 1 FROM mempalace_kg."RELATION" r
                       WHERE agtype_access_operator(VARIADIC ARRAY[r.properties, '"relation_type"'::agtype]) = '"mentions"'::agtype
                         AND agtype_access_operator(VARIADIC ARRAY[r.properties, '"support"'::agtype]) IS NOT NULL
                         AND r.start_id = (SELECT id FROM mempalace_kg."Entity" WHERE agtype_access_operator(VARIADIC ARRAY[properties, '"key"'::agtype]) = '"omega point"'::agtype)
                       FOR KEY SHARE OF r) x;};
    my ($pid, $sqlf) = hold_session($dsn, 'scale_hot_session_a', $edge_sql,
        "SELECT kgx_mempalace_kg_write('d00011', NULL, NULL, '$fact'::jsonb, NULL);");
    psql($dsn, $AGE . q{SELECT kgx_mempalace_kg_write('d00010', NULL, NULL, '[]'::jsonb, NULL);
                        SELECT * FROM kgx_mempalace_kg_fold(1000)});
    is($edge->(), 1, 'the fold left the edge session A holds (its aggregate is 0 for now)');
    cmp_ok(psql($dsn, q{SELECT count(*) FROM kgx_mempalace_kg_edge_delta}), '>=', 1, 'and a delta brings it back to the next fold');
    is(wait_pid($pid, 30), 0, 'session A committed');
    unlink $sqlf;
    psql($dsn, $AGE . q{SELECT * FROM kgx_mempalace_kg_fold(1000)});
    is($edge->(), 1, 'after the next fold: the edge is there');
    my $v = agg_check($dsn);
    is($v->{lost}, 0, 'no support row of a missing edge');
    is($v->{bad}, 0, 'every edge = recomputed from its support rows (d00011 is the source)');
    is($v->{pending}, 0, 'nothing left to fold');
    # and an edge nobody holds goes when its support does, with its entities left without edges
    psql($dsn, $AGE . q{SELECT kgx_mempalace_kg_write('d00011', NULL, NULL, '[]'::jsonb, NULL);
                        SELECT * FROM kgx_mempalace_kg_fold(1000)});
    is($edge->(), 0, 'retracted by its last supporter: the edge is deleted by the fold');
    is(psql($dsn, $AGE . q{SELECT count(*) FROM mempalace_kg."Entity" v WHERE agtype_access_operator(VARIADIC ARRAY[v.properties, '"key"'::agtype]) IS NOT NULL
                             AND NOT EXISTS (SELECT 1 FROM mempalace_kg._ag_label_edge e WHERE e.start_id = v.id OR e.end_id = v.id)}),
       0, 'no entity left without edges');
}
done_testing();
