#!/usr/bin/env perl
# core_faults — faults on the first two attempts of 30 % of drawers (mix, and each kind alone: 500,
# 503, reset, malformed, truncated, empty, hang with --request-timeout 1): every drawer completes with
# exactly its facts, none "completed" with a failure, the graph identical to a clean run's.
# (truncated and mix fail while plugins/parse.lua salvages the complete objects of an answer cut short
# without stop_type "limit": the drawer is completed with part of its facts.)
use strict;
use warnings;
use KgxTest;
use KgxGraph;

$ENV{KGX_RETRY_BASE_MS} = 50;
my $N = 120;
my $c = gen_corpus(n => $N, seed => 51, pool => 80);
my $x = expected_graph($c);

my $clean = fresh_db('core_faults_clean');
create_drawers($clean, $c);
my $f0 = start_fake();
my $r = run_kgx('--dsn', $clean, '--endpoint', $f0->{url}, '--backfill');
is($r->{rc}, 0, 'clean run') or diag($r->{err});
my $canon = graph_canon(graph_dump($clean));
stop_fake($f0);

for my $kind (qw(mix 500 503 reset malformed truncated empty hang)) {
    my $dsn = fresh_db("core_faults_$kind");
    create_drawers($dsn, $c);
    my $fake = start_fake('--fault', "$kind:0.3:2", '--parallel', 8);
    my @extra = $kind eq 'hang' ? ('--request-timeout', 1, '--workers', 16) : ();
    $r = run_kgx({ timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--max-attempts', 5, @extra);
    is($r->{rc}, 0, "$kind: backfill exits 0") or diag($r->{err});
    my $s = fake_stats($fake);
    my $nf = 0;
    $nf += $_ for values %{ $s->{faults} // {} };
    cmp_ok($nf, '>=', 0.15 * $N, "$kind: faults were injected ($nf)");
    cmp_ok($s->{max_requests_per_text}, '>=', 3, "$kind: faulty drawers were retried");
    my $q = queue_rows($dsn);
    is(scalar(grep { $_->{completed} } values %$q), $N, "$kind: every drawer completed");
    is(scalar(grep { $_->{error} } values %$q), 0, "$kind: none parked");
    my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
    is(scalar @bad, 0, "$kind: no drawer completed with fewer facts (a failure taken for an answer)")
        or diag(join ', ', map { "$_: $q->{$_}{triples} want $x->{triples}{$_}" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    my $retried = psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE attempts > 0');
    note("$kind: faults=$nf, rows with charged attempts=$retried, requests=$s->{extraction_requests}");
    if ($kind ne '503') {
        cmp_ok($retried, '>', 0, "$kind: failures are charged as attempts");
    } else {   # 503 "Loading model": the endpoint is not ready — waited for, never the drawer's fault
        is($retried, 0, '503: not charged (the endpoint waits for /health)');
        unlike($r->{err}, qr/capacity signal|splitting smaller|split into \d+ smaller/,
               '503: neither the in-flight limit lowered nor a drawer split smaller');
    }
    canon_is(graph_canon(graph_dump($dsn)), $canon, "$kind: graph identical to the clean run");
    stop_fake($fake);
}

done_testing();
