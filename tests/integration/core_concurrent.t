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

done_testing();
