#!/usr/bin/perl
# policy_reapply.t — `kgx-run --reapply` after a vocabulary change rewrites relation types from the
# stored answers without one LLM request; `--reapply-drawer ID` limits it to one drawer.
# Default policy: "X likes Y" -> relation_type other (raw likes). likes_policy() (prompts/default.lua
# with vocab.custom{likes}, PolTest.pm) -> relation_type likes.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;

my $root = kgx_root();
my $likes = likes_policy();
my $default = "$root/prompts/default.lua";
my %ENV0 = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);

my $dsn = fresh_db('pol_reapply');
my $f = start_fake();
add_drawers($dsn, [
    { id => 'd1', document => "Alice likes Bob. Alice works on Apollo." },
    { id => 'd2', document => "Carol likes Dave (80%).\nCarol uses Redis." },
    { id => 'd3', document => "Eve likes Frank. Gina likes Hugo." },
    { id => 'd4', document => "Carol likes Dave (60%). Ivan owns Juno." },   # a second drawer for Carol-likes-Dave
]);

my $r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $default, '--backfill');
is($r->{rc}, 0, 'backfill with the default policy: rc 0') or diag($r->{err});
my $q = queue($dsn);
is(scalar(grep { $_->{completed} } values %$q), 4, 'all four drawers completed');
my $req0 = fake_stats($f)->{extraction_requests};
is($req0, 4, 'one LLM request per drawer');

my $fmt = sub { [map { "$_->{s} -$_->{rel}" . ($_->{raw} ? "($_->{raw})" : '') . "-> $_->{o} x$_->{support}" } @{$_[0]}] };
my @before = ('Alice -other(likes)-> Bob x1', 'Alice -works_on-> Apollo x1', 'Carol -other(likes)-> Dave x2',
              'Carol -uses-> Redis x1', 'Eve -other(likes)-> Frank x1', 'Gina -other(likes)-> Hugo x1', 'Ivan -owns-> Juno x1');
is_deeply($fmt->(edges($dsn)), \@before, 'default policy: likes facts are `other` edges with raw likes');
my $sup = sub {
    [map { "$_->{drawer_id}:$_->{subject}|$_->{relation_type}|" . ($_->{raw_relation_type} // '-') . "|$_->{object}|$_->{confidence}" }
     @{sql_json($dsn, 'SELECT drawer_id, subject, relation_type, raw_relation_type, object, confidence FROM public.kgx_mempalace_kg_support'
                    . ' ORDER BY drawer_id, subject, relation_type, object')}]
};
is_deeply($sup->(), ['d1:Alice|other|likes|Bob|0.9', 'd1:Alice|works_on|-|Apollo|0.9', 'd2:Carol|other|likes|Dave|0.8',
                     'd2:Carol|uses|-|Redis|0.9', 'd3:Eve|other|likes|Frank|0.9', 'd3:Gina|other|likes|Hugo|0.9',
                     'd4:Carol|other|likes|Dave|0.6', 'd4:Ivan|owns|-|Juno|0.9'], 'support rows after the backfill');
my $answers0 = sql_json($dsn, 'SELECT drawer_id, chunk, md5(body) AS h, policy, policy_version FROM public.kgx_mempalace_kg_answers ORDER BY 1, 2');
is(scalar @$answers0, 4, 'one stored answer per drawer');
is_deeply([map { "$_->{policy}/$_->{policy_version}" } @$answers0], [('default/1') x 4], 'stored answers name the default policy');
my $n_vertices = sub { psql($dsn, AGE . q{SELECT count(*) FROM cypher('mempalace_kg', $$ MATCH (n) RETURN n $$) AS (n agtype)}) };
my $v0 = $n_vertices->();

# ------------------------------------------------ --reapply-drawer d2 with the likes policy
# the LLM endpoint points nowhere: reapply must not need it
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $likes, '--reapply-drawer', 'd2');
is($r->{rc}, 0, '--reapply-drawer d2: rc 0') or diag($r->{err});
like($r->{err}, qr/^reapply: drawers=1 facts=2 dropped=0 failed=0/m, '--reapply-drawer d2: one drawer, two facts');
is(fake_stats($f)->{extraction_requests}, $req0, '--reapply-drawer: no LLM request');
is_deeply($fmt->(edges($dsn)),
          ['Alice -other(likes)-> Bob x1', 'Alice -works_on-> Apollo x1', 'Carol -likes-> Dave x1', 'Carol -other(likes)-> Dave x1',
           'Carol -uses-> Redis x1', 'Eve -other(likes)-> Frank x1', 'Gina -other(likes)-> Hugo x1', 'Ivan -owns-> Juno x1'],
          'only d2 rewritten: Carol-likes->Dave now, the `other` edge stays with d4\'s support');
is_deeply($sup->(), ['d1:Alice|other|likes|Bob|0.9', 'd1:Alice|works_on|-|Apollo|0.9', 'd2:Carol|likes|-|Dave|0.8',
                     'd2:Carol|uses|-|Redis|0.9', 'd3:Eve|other|likes|Frank|0.9', 'd3:Gina|other|likes|Hugo|0.9',
                     'd4:Carol|other|likes|Dave|0.6', 'd4:Ivan|owns|-|Juno|0.9'], 'support rows: only d2\'s rewritten');

# ------------------------------------------------ --reapply (all) with the likes policy
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $likes, '--reapply');
is($r->{rc}, 0, '--reapply: rc 0') or diag($r->{err});
like($r->{err}, qr/^reapply: drawers=4 facts=8 dropped=0 failed=0/m, '--reapply: four drawers, eight facts');
is(fake_stats($f)->{extraction_requests}, $req0, '--reapply: still no LLM request');
my $after = $fmt->(edges($dsn));
is_deeply($after, ['Alice -likes-> Bob x1', 'Alice -works_on-> Apollo x1', 'Carol -likes-> Dave x2', 'Carol -uses-> Redis x1',
                   'Eve -likes-> Frank x1', 'Gina -likes-> Hugo x1', 'Ivan -owns-> Juno x1'],
          'every likes fact is a `likes` edge; the `other` edges are gone');
is(scalar(grep { /-other/ } @$after), 0, 'no `other` edge left');
is_deeply($sup->(), ['d1:Alice|likes|-|Bob|0.9', 'd1:Alice|works_on|-|Apollo|0.9', 'd2:Carol|likes|-|Dave|0.8',
                     'd2:Carol|uses|-|Redis|0.9', 'd3:Eve|likes|-|Frank|0.9', 'd3:Gina|likes|-|Hugo|0.9',
                     'd4:Carol|likes|-|Dave|0.6', 'd4:Ivan|owns|-|Juno|0.9'], 'support/provenance rows rewritten');
my $cd = cypher_json($dsn, 'mempalace_kg', q{MATCH (:Entity {name: 'Carol'})-[r:RELATION]->(:Entity {name: 'Dave'}) RETURN r.relation_type, r.support, r.confidence, r.source},
                     qw(rel support conf src));
is_deeply($cd, [{ rel => 'likes', support => 2, conf => 0.7, src => 'drawer:d2' }], 'Carol-likes->Dave: support 2, mean confidence, source the best drawer');
is($n_vertices->(), $v0, 'no vertex added or lost');
my $answers1 = sql_json($dsn, 'SELECT drawer_id, chunk, md5(body) AS h, policy, policy_version FROM public.kgx_mempalace_kg_answers ORDER BY 1, 2');
is_deeply($answers1, $answers0, 'stored answers untouched');
$q = queue($dsn);
is_deeply({ map { $_ => [$q->{$_}{completed} ? 1 : 0, $q->{$_}{triples}] } keys %$q },
          { d1 => [1, 2], d2 => [1, 2], d3 => [1, 2], d4 => [1, 2] }, 'queue rows still completed, triples_extracted kept');

# ------------------------------------------------ reapply is idempotent, and reversible
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $likes, '--reapply');
is($r->{rc}, 0, 'second --reapply: rc 0');
is_deeply($fmt->(edges($dsn)), $after, 'second --reapply: same graph');
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $default, '--reapply');
is($r->{rc}, 0, '--reapply with the default policy again: rc 0') or diag($r->{err});
is_deeply($fmt->(edges($dsn)), \@before, 'back to `other` edges, exactly as after the backfill');
is(fake_stats($f)->{extraction_requests}, $req0, 'no LLM request in any reapply');

# a drawer that is not there
$r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', 'http://127.0.0.1:1', '--policy', $likes, '--reapply-drawer', 'nope');
is($r->{rc}, 0, '--reapply-drawer of an unknown id: rc 0');
like($r->{err}, qr/^reapply: drawers=0 /m, '--reapply-drawer of an unknown id: nothing done');
is_deeply($fmt->(edges($dsn)), \@before, '... and the graph is unchanged');

done_testing();
