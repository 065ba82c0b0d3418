#!/usr/bin/env perl
# core_requeue — an idle daemon (--poll-interval 120) is woken by NOTIFY when a row is enqueued the
# seed's way; changing a drawer's text and re-queueing it replaces its facts (retracted when no other
# drawer supports them, support decremented otherwise); re-queueing unchanged text changes nothing.
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use Time::HiRes qw(time);

my $dsn = fresh_db('core_requeue');
my $c = gen_corpus(n => 60, seed => 21, pool => 40);
# d00024's facts are its own: its names must vanish with them
$c->{docs}{d00024} = 'Lonely   Hermit owns hermit crab. lonely hermit uses Tide Pool.';
$c->{facts}{d00024} = [['lonely hermit', 'owns', 'hermit crab', 'owns'], ['lonely hermit', 'uses', 'tide pool', 'uses']];
create_drawers($dsn, { docs => {} });
my $fake = start_fake();

my $SEED_ENQUEUE = 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) VALUES %s'
    . ' ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL,'
    . ' error = NULL, worker_id = NULL';
sub enqueue { my @ids = @_; psql($dsn, sprintf($SEED_ENQUEUE, join ',', map { "('$_', 'wing_t', 'room_t')" } @ids)) }
sub completed { queue_count($dsn, 'completed_at IS NOT NULL') }

my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--poll-interval', 120, '--log-level', 'debug');
ok(wait_until(20, sub { (read_file($k->{errfile}) // '') =~ /\bdb up\b/ }), 'daemon up')
    or diag(read_file($k->{errfile}));
# let it go idle: its first claim finds an empty queue
sleep 1;

# ---- 3. one row, the seed's way: NOTIFY wakes the daemon long before its 120 s poll
add_drawers($dsn, { docs => { d00001 => $c->{docs}{d00001} } });
my $t0 = time;
enqueue('d00001');
ok(wait_until(10, sub { completed() == 1 }), 'an enqueued row is completed by the idle daemon');
my $dt = time - $t0;
cmp_ok($dt, '<', 5, 'woken by NOTIFY, not by the 120 s poll') or diag("took ${dt}s");
note(sprintf 'NOTIFY wake-up to completion: %.2f s', $dt);

# ---- the rest of the corpus, enqueued the seed's way in a few statements
add_drawers($dsn, $c);
my @ids = sort keys %{ $c->{docs} };
enqueue(@ids[1 .. 29]);
enqueue(@ids[30 .. $#ids]);
ok(wait_until(30, sub { completed() == 60 }), 'all 60 completed') or diag(read_file($k->{errfile}));
my $x1 = expected_graph($c);
graph_matches(graph_dump($dsn), $x1, 'initial');
my $req1 = fake_stats($fake)->{extraction_requests};
is($req1, 60, 'one request per drawer');

# ---- 4. change 12 drawers' text; re-queue them the seed's way
my $new = gen_corpus(n => 12, seed => 77, pool => 30, prefix => 'd');
my %c2 = (docs => { %{ $c->{docs} } }, facts => { %{ $c->{facts} } });
for my $id (keys %{ $new->{docs} }) {
    $c2{docs}{$id} = "Changed text. " . $new->{docs}{$id};
    $c2{facts}{$id} = $new->{facts}{$id};
}
# and 12 more drawers stop stating anything at all
for my $i (13 .. 24) {
    my $id = sprintf 'd%05d', $i;
    $c2{docs}{$id} = "Drawer $id was emptied of facts.";
    $c2{facts}{$id} = [];
}
my $x2 = expected_graph(\%c2);
my %e1 = map { $_ => 1 } @{ $x1->{edges} };
my %e2 = map { $_ => 1 } @{ $x2->{edges} };
my @gone = grep { !$e2{$_} } keys %e1;
my @added = grep { !$e1{$_} } keys %e2;
my @less = grep { $e2{$_} && $x2->{support}{$_} < $x1->{support}{$_} } keys %e1;
my %k2 = %{ $x2->{keys} };
my @keys_gone = grep { !$k2{$_} } keys %{ $x1->{keys} };
cmp_ok(scalar @gone, '>', 0, 'the change retracts some facts (' . scalar(@gone) . ')');
cmp_ok(scalar @added, '>', 0, 'the change adds some facts (' . scalar(@added) . ')');
cmp_ok(scalar @less, '>', 0, 'the change lowers the support of facts other drawers still state (' . scalar(@less) . ')');
is_deeply([sort @keys_gone], ['hermit crab', 'lonely hermit', 'tide pool'], 'the change leaves three names without facts');

my $before = { map { split /\|/ } psql($dsn, "SELECT drawer_id, completed_at FROM mempalace_kg_extraction_queue") };
add_drawers($dsn, \%c2);
my @changed = map { sprintf 'd%05d', $_ } 1 .. 24;
enqueue(@changed);
ok(wait_until(30, sub {
    my $n = psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL AND drawer_id IN ("
                       . join(',', map { "'$_'" } @changed) . ")");
    $n == 24 }), 're-queued drawers completed again') or diag(read_file($k->{errfile}));
is(fake_stats($fake)->{extraction_requests}, $req1 + 24, 'one request per re-queued drawer');
my $q = queue_rows($dsn);
my @bad = grep { $q->{$_}{triples} ne $x2->{triples}{$_} } sort keys %$q;
is(scalar @bad, 0, 'triples_extracted per row follows the new text')
    or diag(join ', ', map { "$_: $q->{$_}{triples} want $x2->{triples}{$_}" } @bad);
my $g2 = graph_dump($dsn);
graph_matches($g2, $x2, 'after the change');
my %have = map { $_ => 1 } @{ $g2->{edges} };
is(scalar(grep { $have{$_} } @gone), 0, 'facts no drawer states any more are retracted');
is(scalar(grep { $g2->{keys}{$_} } @keys_gone), 0, 'entities left without facts are gone');

# ---- unchanged text re-queued: same graph (support not counted twice)
my $canon = graph_canon($g2);
enqueue(map { sprintf 'd%05d', $_ } 30 .. 45);
ok(wait_until(30, sub { completed() == 60 }), 'unchanged re-queued drawers completed');
canon_is(graph_canon(graph_dump($dsn)), $canon, 're-queueing unchanged drawers leaves the graph as it was');

my $st = stop_kgx($k, 'TERM', 10);
is($st, 0, 'daemon exits 0 on SIGTERM');
unlike(read_file($k->{errfile}) // '', qr/ error |AddressSanitizer|runtime error/, 'no error in the log');

done_testing();
