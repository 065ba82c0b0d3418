#!/usr/bin/env perl
# core_long — a 200 KB drawer holding 50 distinct facts from start to end, against 1,024-token slots
# (--ctx-size 4096 --parallel 4): split into chunks that fit, all 50 facts extracted, nothing cut.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $dsn = fresh_db('core_long');
my @filler = ('The weather was mild and the meeting ran long', 'Several notes were taken about the agenda',
              'Nobody could find the projector remote again', 'Coffee ran out before noon as usual',
              'The draft was revised twice before lunch');
my ($doc, %facts) = ('');
my $i = 0;
for my $n (1 .. 50) {
    # about 4 KB of filler before each fact: facts spread from the first KB to the last
    while (length($doc) < ($n - 1) * 4000 + 500) { $doc .= $filler[$i % @filler] . " on day " . $i++ . ". " }
    my $s = sprintf 'Subject Number %02d', $n;
    my $o = sprintf 'Object Number %02d', $n;
    $doc .= "$s uses $o. ";
    $facts{ fact_key($s, 'uses', $o) } = 1;
}
while (length($doc) < 200_000) { $doc .= $filler[$i % @filler] . " on day " . $i++ . ". " }
cmp_ok(length($doc), '>=', 200_000, 'the drawer is 200 KB');
my $c = { docs => { big => $doc, small => 'Alice works on Apollo.' },
          facts => { big => [ map { [split(/\|/), 'uses'] } sort keys %facts ], small => [['alice', 'works_on', 'apollo', 'works on']] } };
create_drawers($dsn, $c);

my $fake = start_fake('--ctx-size', 4096, '--parallel', 4);
my $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--log-level', 'debug');
is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
like($r->{err}, qr/n_ctx=1024/, 'the per-slot context (1024) was learned from the server');
my $q = queue_rows($dsn);
ok($q->{big}{completed}, 'the big drawer is completed');
is($q->{big}{triples}, 50, 'all 50 facts extracted');
is($q->{small}{triples}, 1, 'the small drawer too');
graph_matches(graph_dump($dsn), expected_graph($c), 'long drawer');

my $s = fake_stats($fake);
cmp_ok($s->{extraction_requests}, '>=', 50, "split into many requests ($s->{extraction_requests})");
is($s->{max_requests_per_text}, 1, 'each chunk sent once (no context overflow retries)');
my @chunks = psql($dsn, "SELECT DISTINCT chunk FROM kgx_mempalace_kg_support WHERE drawer_id = 'big' ORDER BY 1");
cmp_ok(scalar @chunks, '>=', 25, 'facts come from many chunks (' . scalar(@chunks) . ')');
my $first = psql($dsn, "SELECT chunk FROM kgx_mempalace_kg_support WHERE drawer_id = 'big' AND subject_key = 'subject number 01'");
my $last = psql($dsn, "SELECT chunk FROM kgx_mempalace_kg_support WHERE drawer_id = 'big' AND subject_key = 'subject number 50'");
cmp_ok($last, '>', $first, 'the last fact is in a later chunk than the first');
# the stored answers cover the whole drawer
my $nans = psql($dsn, "SELECT count(*) FROM kgx_mempalace_kg_answers WHERE drawer_id = 'big'");
is($nans, $s->{extraction_requests} - 1, 'one stored answer per chunk');

# told a wrong (too large) per-slot context: the server's 400 exceed_context_size teaches the real one
my $dsn2 = fresh_db('core_long_wrong_ctx');
create_drawers($dsn2, $c);
fake_reset($fake);
$r = run_kgx({ timeout => 60 }, '--dsn', $dsn2, '--endpoint', $fake->{url}, '--backfill', '--ctx-size', 16384);
is($r->{rc}, 0, 'with --ctx-size 16384 (wrong): backfill exits 0') or diag($r->{err});
$q = queue_rows($dsn2);
is($q->{big}{triples}, 50, 'with a wrong --ctx-size: all 50 facts extracted (split smaller on the 400)')
    or diag($r->{err});
is(scalar(grep { $_->{error} } values %$q), 0, 'nothing parked');
graph_matches(graph_dump($dsn2), expected_graph($c), 'long drawer, wrong --ctx-size');

done_testing();
