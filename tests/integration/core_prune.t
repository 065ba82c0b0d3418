#!/usr/bin/env perl
# core_prune — drawers deleted from mempalace_drawers, through the command line:
#   1. drawers completed with facts, some deleted: `--prune --dry-run` reports them and changes nothing;
#      `--prune` (in batches) retracts exactly theirs — the graph equals a clean backfill of the remaining
#      drawers (no edge or support row of the deleted ones, shared facts keep the support of the
#      remaining drawers), their rows complete as 'deleted'; a rerun changes nothing;
#   2. --prune refuses while an --adopt holds the graph; interrupted (SIGINT, SIGKILL) and run again, it
#      ends with the same graph;
#   3. --follow-deletes on: a running daemon retracts a deleted drawer by itself; off removes the trigger;
#   4. a drawer deleted while its request is in flight (slow fake LLM) completes as 'deleted', its earlier
#      facts retracted.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my %noenv = (MEMPALACE_POSTGRES_DSN => undef, MEMPALACE_KG_LLM_ENDPOINT => undef, KGX_POLICY => undef);
my $fake = start_fake('--parallel', 4);
my $c = gen_corpus(n => 40, seed => 23, pool => 60);

# the clean reference: a backfill of the drawers of $c in a database of its own
sub reference_canon {
    my ($c) = @_;
    my $ref = fresh_db('prune_ref');
    create_drawers($ref, $c);
    my $r = run_kgx({ env => \%noenv }, '--dsn', $ref, '--endpoint', $fake->{url}, '--backfill');
    is($r->{rc}, 0, 'reference backfill') or diag($r->{err});
    return graph_canon(graph_dump($ref));
}

sub dump_counts {
    my ($dsn) = @_;
    return psql($dsn, q{SELECT (SELECT count(*) FROM kgx_mempalace_kg_support) || '/' || (SELECT count(*) FROM kgx_mempalace_kg_edge_agg)
                          || '/' || (SELECT count(*) FROM kgx_mempalace_kg_answers)});
}

my $dsn = fresh_db('prune');
create_drawers($dsn, $c);
my $r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
is($r->{rc}, 0, 'backfill') or diag($r->{err});
graph_matches(graph_dump($dsn), expected_graph($c), 'before deletes');

# ---- 1. deleted after completion, not re-queued
my @gone = qw(d00002 d00009 d00010 d00011 d00025 d00040);
my $before = expected_graph($c);
my %c2 = (docs => { %{ $c->{docs} } }, facts => { %{ $c->{facts} } }, names => $c->{names});
delete $c2{docs}{$_}, delete $c2{facts}{$_} for @gone;
my $after = expected_graph(\%c2);
my $want_support = 0;
$want_support += $before->{triples}{$_} for @gone;
my %left = map { $_ => 1 } @{ $after->{edges} };
my $want_edges = grep { !$left{$_} } @{ $before->{edges} };
my $shared = grep { $left{$_} && $after->{support}{$_} < $before->{support}{$_} } @{ $before->{edges} };
cmp_ok($want_edges, '>', 0, "the deleted drawers have facts of their own ($want_edges)");
cmp_ok($shared, '>', 0, "and facts shared with remaining drawers ($shared)");

psql($dsn, 'DELETE FROM mempalace_drawers WHERE id IN (' . join(',', map { "'$_'" } @gone) . ')');
my $canon0 = graph_canon(graph_dump($dsn));
my $counts0 = dump_counts($dsn);

$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune', '--dry-run');
is($r->{rc}, 0, '--prune --dry-run: rc 0') or diag($r->{err});
like($r->{out}, qr/^prune \(dry run\): drawers=6 support_rows=$want_support edges=$want_edges$/m,
     '--dry-run reports the drawers, support rows and edges a prune removes') or diag($r->{out});
like($r->{out}, qr/first drawers: d00002 d00009 d00010 d00011 d00025 d00040$/m, 'and names the drawers');
canon_is(graph_canon(graph_dump($dsn)), $canon0, '--dry-run: the graph is unchanged');
is(dump_counts($dsn), $counts0, '--dry-run: support, aggregates, answers unchanged');
is(queue_count($dsn, q{status = 'deleted'}), 0, '--dry-run: no row marked');

$r = run_kgx({ env => { %noenv, KGX_PRUNE_BATCH => 4 } }, '--dsn', $dsn, '--prune');
is($r->{rc}, 0, '--prune: rc 0') or diag($r->{err});
like($r->{out}, qr/^prune: drawers=6 support_rows_removed=$want_support edges_removed=$want_edges batches=(\d+) /m,
     '--prune prints what it removed') or diag($r->{out});
my ($batches) = $r->{out} =~ /batches=(\d+)/;
cmp_ok($batches // 0, '>=', 10, 'in batches of 4 drawers (' . ($batches // '?') . ' transactions)');
like($r->{out}, qr/^prune: done$/m, 'and says done');
graph_matches(graph_dump($dsn), $after, 'after --prune');
my $canon1 = graph_canon(graph_dump($dsn));
canon_is($canon1, reference_canon(\%c2), 'after --prune: the graph of a clean backfill of the remaining drawers');
is(psql($dsn, 'SELECT count(*) FROM kgx_mempalace_kg_support WHERE drawer_id IN (' . join(',', map { "'$_'" } @gone) . ')'), 0,
   'no support row of a deleted drawer');
is(psql($dsn, 'SELECT count(*) FROM kgx_mempalace_kg_answers WHERE drawer_id IN (' . join(',', map { "'$_'" } @gone) . ')'), 0,
   'no stored answer of a deleted drawer');
is(queue_count($dsn, q{status = 'deleted' AND completed_at IS NOT NULL AND triples_extracted = 0}), 6,
   'their rows: completed, status deleted, 0 facts');
is(queue_count($dsn, q{status IS NOT NULL}), 6, 'no other row touched');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json');
is((eval { json_decode($r->{out}) } // {})->{deleted}, 6, '--status counts them as deleted');

my $counts1 = dump_counts($dsn);
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune');
is($r->{rc}, 0, 'second --prune: rc 0') or diag($r->{err});
like($r->{out}, qr/^prune: drawers=0 support_rows_removed=0 edges_removed=0 /m, 'second --prune: nothing to do') or diag($r->{out});
canon_is(graph_canon(graph_dump($dsn)), $canon1, 'second --prune: the same graph');
is(dump_counts($dsn), $counts1, 'second --prune: the same support, aggregates, answers');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune', '--dry-run');
like($r->{out}, qr/^prune \(dry run\): drawers=0 support_rows=0 edges=0$/m, '--dry-run after: nothing') or diag($r->{out});

# ---- 2. never beside an --adopt
{
    my $holder = KgxTest::_spawn(['psql', '-X', '-q', '-d', $dsn, '-c',
        "SELECT pg_advisory_lock(hashtext('kgx-adopt'), hashtext('mempalace_kg')), pg_sleep(30)"],
        undef, '/dev/null', '/dev/null', { PGAPPNAME => 'kgx_test_lock_holder' });
    ok(wait_until(10, sub { psql($dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") > 0 }),
       'an --adopt holds the graph');
    $r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune');
    is($r->{rc}, 1, '--prune meanwhile: rc 1') or diag($r->{out} . $r->{err});
    like($r->{err}, qr/^error: kgx-run --adopt is running on graph mempalace_kg/m, 'and says why');
    unlike($r->{out}, qr/prune: drawers=/, 'and does nothing');
    psql($dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kgx_test_lock_holder'");
    waitpid($holder, 0);
}

# ---- interrupted (SIGINT, then SIGKILL) and run again: the same end
{
    my @more = qw(d00004 d00005 d00006 d00007 d00008 d00013);
    # each deleted drawer's retraction made slow: a stored answer's delete takes 0.3 s
    psql($dsn, q{CREATE FUNCTION slow_del() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN OLD; END $$;
                 CREATE TRIGGER slow BEFORE DELETE ON kgx_mempalace_kg_answers FOR EACH ROW EXECUTE FUNCTION slow_del()});
    psql($dsn, 'DELETE FROM mempalace_drawers WHERE id IN (' . join(',', map { "'$_'" } @more) . ')');
    delete $c2{docs}{$_}, delete $c2{facts}{$_} for @more;
    my $k = spawn_kgx({ env => { %noenv, KGX_PRUNE_BATCH => 1 } }, '--dsn', $dsn, '--prune');
    ok(wait_until(30, sub { queue_count($dsn, q{status = 'deleted'}) >= 7 }, 0.05), 'a prune under way');
    kill 'INT', $k->{pid};
    my $st = wait_pid($k->{pid}, 15);
    is(defined $st ? $st >> 8 : -1, 1, 'SIGINT: exit 1');
    my $out = read_file($k->{outfile}) // '';
    like($out, qr/^prune: drawers=(\d+) .*\nprune: interrupted: run kgx-run --prune again to finish$/m, 'and says so')
        or diag($out);
    my ($first) = $out =~ /^prune: drawers=(\d+)/m;
    ok(defined $first && $first >= 1 && $first < 6, 'after the batch under way (' . ($first // '?') . ' pruned)');
    KgxTest::_log_spawned($k->{pid}, $st);
    my $n0 = queue_count($dsn, q{status = 'deleted'});
    $k = spawn_kgx({ env => { %noenv, KGX_PRUNE_BATCH => 1 } }, '--dsn', $dsn, '--prune');
    ok(wait_until(30, sub { queue_count($dsn, q{status = 'deleted'}) > $n0 }, 0.05), 'a second prune under way');
    kill 'KILL', $k->{pid};
    $st = wait_pid($k->{pid}, 15);
    is(defined $st ? $st & 127 : -1, 9, 'SIGKILL');
    KgxTest::_log_spawned($k->{pid}, $st);
    my $n1 = queue_count($dsn, q{status = 'deleted'});
    cmp_ok($n1, '<', 12, "not finished ($n1 of 12 rows deleted)");
    $r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune');
    is($r->{rc}, 0, 'rerun: rc 0') or diag($r->{err});
    like($r->{out}, qr/^prune: done$/m, 'rerun: done');
    is(queue_count($dsn, q{status = 'deleted'}), 12, 'every deleted drawer marked once');
    psql($dsn, 'DROP TRIGGER slow ON kgx_mempalace_kg_answers');
    graph_matches(graph_dump($dsn), expected_graph(\%c2), 'after interruptions and a rerun');
    canon_is(graph_canon(graph_dump($dsn)), reference_canon(\%c2), 'after interruptions: the graph of a clean backfill');
}

# ---- usage
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--follow-deletes', 'maybe');
is($r->{rc}, 2, '--follow-deletes maybe: rc 2');
like($r->{err}, qr/^error: --follow-deletes: expected on or off, got 'maybe'$/m, 'one line');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune', '--once');
is($r->{rc}, 2, '--prune with another mode: rc 2');
$r = run_kgx({ env => \%noenv }, '--prune');
is($r->{rc}, 2, '--prune without a DSN: rc 2');

# ---- 3. the optional trigger: a running daemon follows deletes by itself
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--follow-deletes', 'on');
is($r->{rc}, 0, '--follow-deletes on: rc 0') or diag($r->{err});
like($r->{out}, qr/TRUNCATE/, 'and names what is not covered');
is(psql($dsn, q{SELECT count(*) FROM pg_trigger WHERE tgname = 'kgx_follow_deletes' AND tgrelid = 'mempalace_drawers'::regclass}), 1,
   'the trigger is on mempalace_drawers');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--follow-deletes', 'on');
is($r->{rc}, 0, '--follow-deletes on again: rc 0');
is(psql($dsn, q{SELECT count(*) FROM pg_trigger WHERE tgname = 'kgx_follow_deletes'}), 1, 'still one trigger');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json');
is((eval { json_decode($r->{out}) } // {})->{follow_deletes}, JSON::PP::true, '--status --json: follow_deletes true');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status');
like($r->{out}, qr/^follow_deletes\s+on\b/m, '--status: follow_deletes on');
{
    my $k = spawn_kgx({ env => \%noenv }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--poll-interval', 60);
    ok(wait_until(30, sub { (read_file($k->{errfile}) // '') =~ /\bdb up\b/ }), 'daemon up') or diag(read_file($k->{errfile}));
    my @more = qw(d00003 d00030);
    psql($dsn, 'DELETE FROM mempalace_drawers WHERE id IN (' . join(',', map { "'$_'" } @more) . ')');
    delete $c2{docs}{$_}, delete $c2{facts}{$_} for @more;
    ok(wait_until(30, sub { queue_count($dsn, q{status = 'deleted'}) == 14 && queue_count($dsn, 'completed_at IS NULL') == 0 }),
       'the daemon retracted the deleted drawers by itself');
    is(stop_kgx($k), 0, 'daemon stops');
    graph_matches(graph_dump($dsn), expected_graph(\%c2), 'after the trigger');
}
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--follow-deletes', 'off');
is($r->{rc}, 0, '--follow-deletes off: rc 0') or diag($r->{err});
is(psql($dsn, q{SELECT count(*) FROM pg_trigger WHERE tgname = 'kgx_follow_deletes'}), 0, 'the trigger is gone');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json');
is((eval { json_decode($r->{out}) } // {})->{follow_deletes}, JSON::PP::false, '--status --json: follow_deletes false');
psql($dsn, q{DELETE FROM mempalace_drawers WHERE id = 'd00031'});
is(queue_count($dsn, q{drawer_id = 'd00031' AND completed_at IS NOT NULL AND status IS NULL}), 1,
   'without it a delete leaves the row alone');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--prune');
like($r->{out}, qr/^prune: drawers=1 /m, '--prune picks it up') or diag($r->{out} . $r->{err});
delete $c2{docs}{d00031}, delete $c2{facts}{d00031};
graph_matches(graph_dump($dsn), expected_graph(\%c2), 'after the last prune');

# ---- 4. deleted while its request is in flight: completes as 'deleted', earlier facts retracted
{
    my $slow = start_fake('--parallel', 2, '--latency-ms', 4000);
    my $id = 'd00012';
    cmp_ok(psql($dsn, "SELECT count(*) FROM kgx_mempalace_kg_support WHERE drawer_id = '$id'"), '>', 0, "$id has facts");
    # its text changed and it was re-queued (an unchanged text would be served from its stored answer),
    # claimed by a daemon whose LLM takes 4 s per request
    psql($dsn, "UPDATE mempalace_drawers SET document = document || ' Its text changed.' WHERE id = '$id'");
    psql($dsn, "UPDATE mempalace_kg_extraction_queue SET completed_at = NULL, started_at = NULL WHERE drawer_id = '$id'");
    my $k = spawn_kgx({ env => \%noenv }, '--dsn', $dsn, '--endpoint', $slow->{url}, '--poll-interval', 60);
    ok(wait_until(30, sub { queue_count($dsn, "drawer_id = '$id' AND started_at IS NOT NULL AND completed_at IS NULL") == 1 }),
       'claimed');
    ok(wait_until(10, sub { (fake_stats($slow)->{in_flight} // 0) > 0 }), 'its request is in flight');
    psql($dsn, "DELETE FROM mempalace_drawers WHERE id = '$id'");
    delete $c2{docs}{$id}, delete $c2{facts}{$id};
    ok(wait_until(30, sub { queue_count($dsn, "drawer_id = '$id' AND completed_at IS NOT NULL") == 1 }), 'the row completes');
    is(psql($dsn, "SELECT concat_ws('|', status, triples_extracted, error IS NULL, parked_at IS NULL) FROM mempalace_kg_extraction_queue"
                . " WHERE drawer_id = '$id'"), 'deleted|0|t|t', "as 'deleted', 0 facts, not parked");
    is(stop_kgx($k), 0, 'daemon stops');
    cmp_ok(fake_stats($slow)->{extraction_requests}, '>=', 1, 'the LLM was asked (the answer came after the delete)');
    is(psql($dsn, "SELECT count(*) FROM kgx_mempalace_kg_support WHERE drawer_id = '$id'"), 0, 'no support row of it');
    graph_matches(graph_dump($dsn), expected_graph(\%c2), 'after the in-flight delete');
    stop_fake($slow);
}

done_testing();
