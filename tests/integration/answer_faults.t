#!/usr/bin/env perl
# answer_faults — answers that are not whole never complete a drawer. Faults on the first two attempts
# of 30 % of drawers, each kind alone and all together: cut JSON wrapped in prose (stop_type eos), a cut
# at n_predict (only that chunk is split smaller), a cut by a full context (truncated: re-split), the
# unified-KV capacity 500 (not charged: fewer requests in flight). Every drawer completes with exactly
# its facts and the graph is the clean run's.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

$ENV{KGX_RETRY_BASE_MS} = 50;
my $N = 120;
my $c = gen_corpus(n => $N, seed => 61, pool => 80);
my $x = expected_graph($c);

my $clean = fresh_db('answer_faults_clean');
create_drawers($clean, $c);
my $f0 = start_fake();
my $r = run_kgx('--dsn', $clean, '--endpoint', $f0->{url}, '--backfill');
is($r->{rc}, 0, 'clean run') or diag($r->{err});
my $canon = graph_canon(graph_dump($clean));
stop_fake($f0);

my %runs = (
    prosecut => ['prosecut:0.3:2'],
    limitcut => ['limitcut:0.3:2'],
    ctxcut   => ['ctxcut:0.3:2'],
    kv500    => ['kv500:0.3:2'],
    all      => [map { "$_:0.05:2" } qw(prosecut limitcut ctxcut kv500 mix truncated)],
);
for my $kind (qw(prosecut limitcut ctxcut kv500 all)) {
    my $dsn = fresh_db("answer_faults_$kind");
    create_drawers($dsn, $c);
    my $fake = start_fake((map { ('--fault', $_) } @{ $runs{$kind} }), '--parallel', 8);
    $r = run_kgx({ timeout => 120 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 6);
    is($r->{rc}, 0, "$kind: backfill exits 0") or diag(substr($r->{err}, -3000));
    my $s = fake_stats($fake);
    my $nf = 0;
    $nf += $_ for values %{ $s->{faults} // {} };
    cmp_ok($nf, '>=', 0.15 * $N, "$kind: faults were injected ($nf)");
    my $q = queue_rows($dsn);
    is(scalar(grep { $_->{completed} } values %$q), $N, "$kind: every drawer completed");
    is(scalar(grep { $_->{error} } values %$q), 0, "$kind: none parked");
    my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
    is(scalar @bad, 0, "$kind: no drawer completed on a partial answer")
        or diag(join ', ', map { "$_: $q->{$_}{triples} want $x->{triples}{$_}" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    canon_is(graph_canon(graph_dump($dsn)), $canon, "$kind: graph identical to the clean run");
    if ($kind eq 'limitcut') {
        like($r->{err}, qr/answer cut at n_predict: chunk \d+ \(\d+ tokens\) split into \d+ smaller chunks/,
             'limitcut: only the cut chunk is split smaller');
    }
    if ($kind eq 'ctxcut') {   # chat answers (the default policy): "length" and no truncated, as llama-server
        like($r->{err}, qr/answer cut by a full context \(truncated\) at \d+\+\d+ tokens/,
             'ctxcut: a chat answer that filled the slot is told from a cut at max_tokens (its token counts)');
        unlike($r->{err}, qr/answer cut at n_predict/, 'ctxcut: none taken for a cut at n_predict');
    }
    if ($kind eq 'kv500') {
        my $charged = psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE attempts > 0');
        is($charged, 0, 'kv500: capacity is not the drawers\' fault: no attempt charged');
        my $told = () = $r->{err} =~ /--no-kv-unified/g;
        is($told, 1, 'kv500: what to change on the server is logged once');
        like($r->{err}, qr/in-flight limit \d+ -> \d+/, 'kv500: the in-flight limit was lowered');
    }
    note("$kind: faults=$nf requests=$s->{extraction_requests}");
    stop_fake($fake);
}

# ---------------------------------------------------------------- one unified KV pool
# (the fake's --kv-unified: llama-server without -np) against the same slots with a pool each
{
    my %sent;
    for my $mode (['separate', '--ctx-size', 4096], ['unified', '--ctx-size', 1024, '--kv-unified']) {
        my ($name, @args) = @$mode;
        my $dsn = fresh_db("answer_kv_$name");
        create_drawers($dsn, $c);
        my $fake = start_fake('--parallel', 4, '--latency-ms', 20, '--gen-us-per-token', 2000, @args);
        $r = run_kgx({ timeout => 180 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 6);
        is($r->{rc}, 0, "kv $name: backfill exits 0") or diag(substr($r->{err}, -3000));
        my $q = queue_rows($dsn);
        is(scalar(grep { $_->{completed} } values %$q), $N, "kv $name: every drawer completed");
        canon_is(graph_canon(graph_dump($dsn)), $canon, "kv $name: graph identical to the clean run");
        my $s = fake_stats($fake);
        $sent{$name} = $s->{extraction_requests};
        my $f500 = () = $r->{err} =~ /capacity signal/g;
        note("kv $name: $sent{$name} requests; lowered the limit $f500 times");
        if ($name eq 'unified') {
            like($r->{err}, qr/--no-kv-unified/, 'kv unified: the fix is logged');
            is(psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE attempts > 0'), 0,
               'kv unified: no attempt charged');
        }
        stop_fake($fake);
    }
    cmp_ok($sent{unified}, '<=', 1.3 * $sent{separate}, "one shared pool: $sent{unified} requests, at most 1.3 x the $sent{separate} of separate slots");
}

done_testing();
