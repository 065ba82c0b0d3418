#!/usr/bin/env perl
# core_graph_name — graph names are checked up front (core/names.c): a name whose derived identifiers
# (kgx_<graph>_support_edge …) would pass PostgreSQL's 63 bytes, a reserved word, or a schema that is not
# a graph's own exits 2 with one line before any connection to the database or the LLM; the longest name
# accepted, and names that are keywords PostgreSQL allows as schema names, really work end to end.
use strict;
use warnings;
use KgxTest;

my %noenv = (MEMPALACE_POSTGRES_DSN => undef, MEMPALACE_KG_LLM_ENDPOINT => undef, KGX_POLICY => undef);
my $dsn = fresh_db('graph_name');
psql($dsn, 'CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb)');

# a DSN and an endpoint nobody listens on: a refusal must come before either is tried
my $nodb = 'postgresql://nobody@127.0.0.1:1/none?connect_timeout=2';
# the limit follows the longest name the SQL templates derive (46 with kgx_<graph>_support_edge)
my $probe = run_kgx({ env => \%noenv }, '--dsn', $nodb, '--graph', 'a' x 63, '--once');
my ($max) = $probe->{err} =~ /use at most (\d+) characters/;
ok($max && $max <= 46, "the longest graph name: $max characters") or diag($probe->{err});
$max //= 46;
for my $g ('a' x ($max + 1), 'a' x 58, 'a' x 63, 'select', 'user', 'public', 'ag_catalog', 'information_schema',
           'pg_catalog', 'pg_graph', 'My_Graph') {
    for my $mode (['--once'], ['--status'], []) {
        my $r = run_kgx({ env => \%noenv, timeout => 20 }, '--dsn', $nodb, '--endpoint', 'http://127.0.0.1:1',
                        '--graph', $g, @$mode);
        is($r->{rc}, 2, "--graph $g @$mode: rc 2") or diag($r->{err});
        like($r->{err}, qr/\Aerror: --graph: [^\n]+\n\z/, "--graph $g @$mode: one line naming the flag")
            or diag($r->{err});
        unlike($r->{err}, qr/database|connect/i, "--graph $g @$mode: no connection was tried");
    }
}
my $r = run_kgx({ env => \%noenv }, '--dsn', $nodb, '--graph', 'a' x ($max + 1), '--once');
like($r->{err}, qr/kgx derives kgx_<graph>\w+ from it \(64 bytes\) .*63.*at most $max/, 'the message names the longest derived name and the limit');

# accepted names work end to end: the longest one, and keywords PostgreSQL allows unquoted as a schema
psql($dsn, "INSERT INTO mempalace_drawers (id, document) VALUES ('d1', 'Alice works on Apollo.')");
my $fake = start_fake();
for my $g ('g' x $max, 'between', 'graph', 'users') {
    my $r = run_kgx({ env => \%noenv, timeout => 60 }, '--dsn', $dsn, '--graph', $g, '--backfill',
                    '--endpoint', $fake->{url});
    is($r->{rc}, 0, "--graph $g: a backfill works") or diag($r->{err});
    is(psql($dsn, "SELECT count(*) FROM public.kgx_${g}_support"), 1, "--graph $g: the fact is written");
    psql($dsn, 'DELETE FROM mempalace_kg_extraction_queue');
    is(psql($dsn, "SELECT count(*) FROM ag_catalog.ag_graph WHERE name = '$g'"), 1, "--graph $g: the graph exists");
    is(psql($dsn, "SELECT count(*) FROM pg_class WHERE relname IN ('kgx_${g}_support', 'kgx_${g}_answers',"
                . " 'kgx_${g}_support_best')"), 3, "--graph $g: its side tables and index exist under their full names");
    $r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', $dsn, '--graph', $g, '--status', '--json');
    is($r->{rc}, 0, "--graph $g: --status works") or diag($r->{err});
}

done_testing();
