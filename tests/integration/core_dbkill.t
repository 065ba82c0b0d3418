#!/usr/bin/env perl
# core_dbkill — the database drops every kgx connection, again and again, during a backfill (the server
# side terminates them: what a database restart looks like to a client): kgx reconnects and finishes,
# nothing lost, nothing duplicated, the graph is the one the sentences imply.
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use Time::HiRes qw(sleep);

$ENV{KGX_RETRY_BASE_MS} = 50;
my $dsn = fresh_db('core_dbkill');
my $c = gen_corpus(n => 400, seed => 71, pool => 150);
create_drawers($dsn, $c);
my $x = expected_graph($c);
my $fake = start_fake('--latency-ms', 80, '--parallel', 8);

my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--poll-interval', 1,
                  '--workers', 8, '--batch-size', 10, '--max-attempts', 5);
my $done = sub { queue_count($dsn, 'completed_at IS NOT NULL') };
ok(wait_until(30, sub { $done->() >= 20 }), 'working') or diag(read_file($k->{errfile}));
my ($rounds, $killed, $st) = (0, 0, undef);
while ($rounds < 25 && !defined($st = wait_pid($k->{pid}, 0))) {
    my $n = psql($dsn, 'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity'
                     . ' WHERE datname = current_database() AND pid <> pg_backend_pid()');
    $killed += $n;
    $rounds++;
    sleep 0.1 + rand(0.3);
}
note("terminated $killed connections in $rounds rounds; completed when the killing stopped: " . $done->());
cmp_ok($rounds, '>=', 5, 'the connections were killed while the backfill ran');
cmp_ok($killed, '>=', 5, 'connections terminated');
$st //= wait_pid($k->{pid}, 60);
is($st, 0, 'the backfill finishes with exit 0') or diag(read_file($k->{errfile}));
like(read_file($k->{errfile}), qr/database unreachable|reconnect|db down/i, 'it saw the database go away')
    or diag(read_file($k->{errfile}));

my $q = queue_rows($dsn);
is(scalar(grep { $_->{completed} } values %$q), 400, 'every drawer completed');
is(scalar(grep { $_->{error} } values %$q), 0, 'nothing parked');
is(scalar(grep { $_->{started} && !$_->{completed} } values %$q), 0, 'nothing left claimed');
my @bad = grep { $q->{$_}{triples} ne $x->{triples}{$_} } sort keys %$q;
is(scalar @bad, 0, 'triples_extracted per row') or diag("@bad");
graph_matches(graph_dump($dsn), $x, 'after connection kills');

done_testing();
