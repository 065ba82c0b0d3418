#!/usr/bin/env perl
# core_backfill — a backfill of 520 drawers gives exactly the graph their sentences imply (one vertex per
# case/whitespace-insensitive name, one edge per fact, support = drawers stating it, triples_extracted
# per row); a second backfill sends no LLM request and changes nothing.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $dsn = fresh_db('core_backfill');
my $c = gen_corpus(n => 520, seed => 11);
create_drawers($dsn, $c);
my $x = expected_graph($c);
cmp_ok(scalar @{ $x->{edges} }, '>=', 250, 'the corpus states many distinct facts');
cmp_ok(scalar(grep { $_ > 1 } values %{ $x->{support} }), '>', 50, 'many facts are stated by several drawers');

my $fake = start_fake();
my @base = ('--dsn', $dsn, '--endpoint', $fake->{url}, '--progress-interval', 1);

my $r = run_kgx({ timeout => 120 }, @base, '--backfill');
is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
like($r->{err}, qr/^final: completed=520 pending=0 in_flight=0 errors=0$/m, 'final line');

my $q = queue_rows($dsn);
is(scalar keys %$q, 520, 'every drawer queued');
is(scalar(grep { $_->{completed} } values %$q), 520, 'every drawer completed');
is(scalar(grep { $_->{error} } values %$q), 0, 'none parked');
my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
is(scalar @bad, 0, 'triples_extracted per row = distinct facts its text states')
    or diag(join ', ', map { "$_: $q->{$_}{triples} want $x->{triples}{$_}" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]);

my $g = graph_dump($dsn);
graph_matches($g, $x, 'backfill');
my @conf = grep { abs($g->{props}{$_}{confidence} - 0.9) > 1e-9 } @{ $g->{edges} };
is(scalar @conf, 0, 'confidence = 0.9 (the fake says 90) on every edge');
my @src = grep { ($g->{props}{$_}{source} // '') !~ /^drawer:d\d{5}$/ } @{ $g->{edges} };
is(scalar @src, 0, 'source = drawer:<id>');

my $s = fake_stats($fake);
is($s->{extraction_requests}, 520, 'one LLM request per drawer');
is($s->{max_requests_per_text}, 1, 'no text sent twice');
is($s->{texts_distinct}, 520, 'every drawer text sent');

# ---- 2. again: nothing to do
my $canon = graph_canon($g);
my $before = join "\n", psql($dsn, 'SELECT drawer_id, completed_at, triples_extracted FROM mempalace_kg_extraction_queue ORDER BY 1');
$r = run_kgx({ timeout => 60 }, @base, '--backfill');
is($r->{rc}, 0, 'second backfill exits 0') or diag($r->{err});
like($r->{err}, qr/backfill: queued 0 new drawers/, 'nothing queued');
is(fake_stats($fake)->{extraction_requests}, 520, 'second backfill sends no LLM request');
canon_is(graph_canon(graph_dump($dsn)), $canon, 'graph unchanged');
is(join("\n", psql($dsn, 'SELECT drawer_id, completed_at, triples_extracted FROM mempalace_kg_extraction_queue ORDER BY 1')),
   $before, 'queue rows unchanged');
my $ent = psql($dsn, qq{LOAD 'age'; SELECT count(*) FROM mempalace_kg."Entity"});
is($ent, $g->{vertices}, 'vertex count unchanged');

done_testing();
