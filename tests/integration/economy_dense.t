#!/usr/bin/perl
# economy_dense.t — dense chunks lose nothing (issue 14, B13). The schema caps an answer at
# max_triples (10) facts; a chunk stating 30 gave 10 and silently lost 20. Now an answer holding
# exactly the cap has its chunk asked again as two halves (bounded depth), and the facts of the answer
# and its halves are united without duplicates: drawers stating 3x the cap keep every fact, drawers
# stating exactly the cap keep theirs (the halves restate them), the graph is exact, and the splits
# are logged; the request count stays bounded (at most 2^(depth+1) - 1 per chunk).
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my @names = ('Alice', 'Bob', 'Carol', 'Dave', 'Eve', 'Mallory', 'Trent', 'Peggy', 'Victor', 'Walter',
             'Kafka', 'Postgres', 'Redis', 'Nginx', 'Grafana', 'Prometheus', 'Kubernetes', 'Rust', 'Python',
             'Edge Cache', 'Build Farm', 'Test Harness', 'Release Train', 'Design Doc');
my @verbs = grep { $_ ne 'likes' } VERBS();
my $seed = 7;
my $rand = sub { $seed = (69069 * $seed + 1) % 4294967296; int(($seed / 4294967296) * $_[0]) };

my (%docs, %facts);
my $mk = sub {
    my ($id, $k) = @_;
    my (%used, @sent, @f);
    while (@f < $k) {
        my ($s, $v, $o) = ($names[$rand->(scalar @names)], $verbs[$rand->(scalar @verbs)], $names[$rand->(scalar @names)]);
        next if $s eq $o || $used{ fact_key($s, $v, $o) }++;
        push @sent, "$s $v $o.";
        push @f, [name_key($s), $KgxGraph::VERBS{$v}, name_key($o), $v];
    }
    $docs{$id} = join(' ', @sent) . " Note $id was filed.";
    $facts{$id} = \@f;
};
$mk->(sprintf('dense%02d', $_), 30) for 1 .. 20;   # 3x the cap
$mk->(sprintf('full%02d', $_), 10) for 1 .. 5;     # exactly the cap
$mk->(sprintf('few%02d', $_), 4) for 1 .. 5;       # under it: one request each
my $c = { docs => \%docs, facts => \%facts };
my $x = expected_graph($c);

my $dsn = fresh_db('econ_dense');
create_drawers($dsn, $c);
my $fake = start_fake();
my $r = run_kgx({ timeout => 180 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--log-level', 'info');
is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
like($r->{err}, qr/^final: completed=30 pending=0 in_flight=0 errors=0$/m, 'every drawer completed');

my $q = queue_rows($dsn);
my @short = grep { $q->{$_}{triples} != $x->{triples}{$_} } sort keys %$q;
is(scalar @short, 0, 'triples_extracted = every fact the drawer states (30, 10, 4)')
    or diag(join ', ', map { "$_: $q->{$_}{triples} of $x->{triples}{$_}" } @short);
graph_matches(graph_dump($dsn), $x, 'dense drawers');

my @splits = $r->{err} =~ /^.*answer holds the cap \(10 facts\): asking its two halves.*$/mg;
cmp_ok(scalar @splits, '>=', 25 + 20, 'dense answers were split (every dense and full drawer at least once)');
unlike($r->{err}, qr/split no further/, 'no answer reached the depth limit');
my $s = fake_stats($fake);
cmp_ok($s->{extraction_requests}, '<=', 25 * 15 + 5, 'requests bounded: at most 15 per dense chunk');
cmp_ok($s->{extraction_requests}, '>=', 20 * 3 + 5 * 3 + 5, 'each dense chunk asked at least as itself and two halves');
diag("requests: $s->{extraction_requests} for 30 drawers (20 stating 30 facts, 5 stating 10, 5 stating 4)");
done_testing();
