#!/usr/bin/env perl
# scale_reapply — a --reapply that retracts and re-adds the facts of 300 drawers sharing a few
# entities (their writes in flight together): no deadlock (pg_stat_database.deadlocks unchanged), the
# graph is the one the policy implies after each pass, and every edge's aggregates (support, mean
# confidence, best source, raw predicate) equal those recomputed from its support rows.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use KgxGraph;
use PolTest;
use Time::HiRes qw(time);

my $AGE = qq{LOAD 'age'; SET search_path = ag_catalog, "\$user", public;\n};
my $root = kgx_root();
my $likes = likes_policy();
my $default = "$root/prompts/default.lua";
my %ENV0 = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);

my $dsn = fresh_db('scale_reapply');
my $c = gen_corpus(n => 300, seed => 41, pool => 30, names => 10);
create_drawers($dsn, $c);
my $f = start_fake('--parallel', 8);
my $deadlocks = sub { psql($dsn, q{SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()}) };
my $agg = sub {
    psql($dsn, $AGE . q{
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
            OR (SELECT g.n::bigint * 1000000 + g.conf_micro FROM kgx_mempalace_kg_edge_agg g WHERE g.edge_id = e.id)
               IS DISTINCT FROM s.n * 1000000 + (SELECT sum(round(confidence * 1000000)::bigint) FROM kgx_mempalace_kg_support x WHERE x.edge_id = e.id)})
};

my $r = run_kgx({ env => \%ENV0, timeout => 120 }, '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $default,
                '--backfill', '--workers', 16, '--batch-size', 10);
is($r->{rc}, 0, 'backfill') or diag($r->{err});
my $x = expected_graph($c);
graph_matches(graph_dump($dsn), $x, 'backfill');
is($agg->(), 0, 'backfill: aggregates = recomputed from support');
my $likes_facts = grep { $_->[3] eq 'likes' } map { @$_ } values %{ $c->{facts} };
cmp_ok($likes_facts, '>=', 20, "the corpus states likes facts ($likes_facts)");
# a graph written before the aggregates existed: no kgx_<graph>_edge_agg, an older schema stamp; the next
# start migrates it (the passes below then move the aggregates by differences only)
psql($dsn, q{DROP TABLE kgx_mempalace_kg_edge_agg;
             COMMENT ON FUNCTION kgx_mempalace_kg_write(text, text, bigint, jsonb, jsonb) IS 'kgx schema old'});
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $default, '--once');
is($r->{rc}, 0, 'a start on the older graph') or diag($r->{err});
is(psql($dsn, q{SELECT count(*) FROM kgx_mempalace_kg_edge_agg}), scalar(@{ $x->{edges} }), 'aggregates migrated: one row per edge');
my $d0 = $deadlocks->();
like($d0, qr/^\d+$/, 'deadlocks counted');

# the likes policy: every likes fact moves from `other` (raw likes) to `likes`
my %cl = (docs => $c->{docs}, facts => {});
for my $id (keys %{ $c->{facts} }) {
    $cl{facts}{$id} = [map { $_->[3] eq 'likes' ? [$_->[0], 'likes', $_->[2], 'likes_kept'] : $_ } @{ $c->{facts}{$id} }];
}
for my $pass ([$likes, \%cl, 'likes'], [$default, $c, 'default'], [$likes, \%cl, 'likes again']) {
    my ($pol, $corpus, $label) = @$pass;
    my $t0 = time;
    $r = run_kgx({ env => \%ENV0, timeout => 120 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $pol, '--reapply');
    my $dt = time - $t0;
    is($r->{rc}, 0, "reapply ($label): rc 0") or diag($r->{err});
    like($r->{err}, qr/failed=0/, "reapply ($label): no drawer failed");
    note(sprintf 'reapply (%s): %.2f s', $label, $dt);
    cmp_ok($dt, '<', 30, "reapply ($label) without deadlock waits");
    graph_matches(graph_dump($dsn), expected_graph($corpus), "reapply ($label)");
    is($agg->(), 0, "reapply ($label): aggregates = recomputed from support");
}
sleep 1;   # backends flush their statistics when they exit
is($deadlocks->(), $d0, 'no deadlock detected');
done_testing();
