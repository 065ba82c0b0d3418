#!/usr/bin/perl
# policy_hooks.t — "a bad policy fails a drawer, not the daemon", with the real
# daemon, PostgreSQL+AGE and the fake. policies/prompts/hostile_hooks.lua behaves like the default
# policy except on drawers carrying a marker: BOOM (parse raises), LOOP (split never returns), HUGE
# (request returns a 100 MB body), WRONG (parse returns a number), ESCAPE1-4 (os.execute, io.open,
# require "os", loadstring), DEEP (unbounded recursion), ACCFAIL (accept raises).
# A backfill with --max-attempts 2 parks exactly those drawers with the error (file and line) and
# attempts = 2, completes every other drawer with its facts, and exits 0.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use Time::HiRes qw(time);

my $root = kgx_root();
my $pfile = "$root/tests/integration/policies/prompts/hostile_hooks.lua";
my %line;   # marker -> line number in the policy
{
    open my $fh, '<', $pfile or die "$pfile: $!";
    while (<$fh>) { $line{$1} = $. if /-- \@(\w+)\s*$/ }
}
my $escaped = "/tmp/kgx-policy-escaped";
unlink $escaped;

my $dsn = fresh_db('pol_hooks');
my $f = start_fake();
my @good = (
    { id => 'g1', document => 'Alice works on Apollo. Bob uses Redis.' },
    { id => 'g2', document => 'Carol owns Castle.' },
    { id => 'g3', document => "Dave depends on Postgres.\nErin created Atlas (70%)." },
    { id => 'g4', document => 'Fay calls the scheduler.' },
);
my %bad = (   # id => [marker, hook, must the message name file:line?]
    b_boom  => ['BOOM', 'parse'],    b_loop => ['LOOP', 'split'],     b_huge => ['HUGE', 'request'],
    b_wrong => ['WRONG', 'parse'],   b_esc1 => ['ESCAPE1', 'request'], b_esc2 => ['ESCAPE2', 'request'],
    b_esc3  => ['ESCAPE3', 'request'], b_esc4 => ['ESCAPE4', 'request'], b_deep => ['DEEP', 'split'],
    b_acc   => ['ACCFAIL', 'accept'],
);
add_drawers($dsn, [@good, map { { id => $_, document => "$bad{$_}[0] Zed owns Zanzibar." } } sort keys %bad]);

my $t0 = time;
my $r = run_kgx({ env => { KGX_RETRY_BASE_MS => 50, MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef }, timeout => 90 },
                '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $pfile, '--backfill', '--max-attempts', '2',
                '--progress-interval', '1');
my $took = time - $t0;
is($r->{rc}, 0, sprintf('backfill with a hostile policy: rc 0 (%.1f s)', $took)) or diag(substr($r->{err}, -3000));
ok(!$r->{signal}, 'the daemon was not killed by a signal');
like($r->{err}, qr/^final: completed=4 pending=0 in_flight=0 errors=10$/m, 'final line: 4 completed, 10 errors');

my $q = queue($dsn);
for my $g (@good) {
    my $x = $q->{$g->{id}} || {};
    ok($x->{completed} && !defined $x->{error}, "$g->{id}: completed") or diag(explain($x));
}
for my $id (sort keys %bad) {
    my ($mark, $hook) = @{$bad{$id}};
    my $x = $q->{$id} || {};
    ok(!$x->{completed}, "$id ($mark): not completed");
    is($x->{attempts}, 2, "$id ($mark): attempts = 2");
    ok(defined $x->{error} && length $x->{error}, "$id ($mark): parked with an error message");
    my $e = $x->{error} // '';
    like($e, qr/\b$hook\b/, "$id ($mark): the message names the hook ($hook)");
    # HUGE and WRONG are caught by the host after the hook returned (body over max_body, parse
    # returned a number): the message names the hook's file and the line where it is defined.
    like($e, qr/hostile_hooks\.lua:\d+/, "$id ($mark): the message names the policy file and a line") or diag("error: $e");
    like($e, qr/hostile_hooks\.lua:$line{$mark}\b/, "$id ($mark): ... the line of the faulty statement ($line{$mark})")
        if $mark ne 'HUGE' && $mark ne 'WRONG';
}
like($q->{b_loop}{error} // '', qr/watchdog/, 'LOOP: stopped by the watchdog');
# building 100 MB is time spent in one C call, and the watchdog counts it: on a slow build (ASan on a
# busy machine) the hook can pass the limit before the size check
like($q->{b_huge}{error} // '', qr/max_body|memory|string\.rep|too large|watchdog: hook 'request' exceeded/i,
     'HUGE: rejected for its size (or its time)');
like($q->{b_wrong}{error} // '', qr/number/, 'WRONG: says what parse returned');
ok(!-e $escaped, 'ESCAPE: no file was created through os/io');

# every good drawer's facts are in the graph, and nothing from a bad one
my @edges = map { "$_->{s}|$_->{rel}|$_->{o}" } @{edges($dsn)};
is_deeply([sort @edges], [sort 'Alice|works_on|Apollo', 'Bob|uses|Redis', 'Carol|owns|Castle', 'Dave|depends_on|Postgres',
                          'Erin|creates|Atlas', 'Fay|calls|the scheduler'], 'the graph holds exactly the good drawers\' facts');
is(fake_stats($f)->{extraction_requests} > 0, 1, 'the LLM was asked');

# the same daemon keeps working afterwards: a new good row is extracted
add_drawers($dsn, [{ id => 'g5', document => 'Gus likes Golf. Hal uses Helm.' }]);
$r = run_kgx({ env => { KGX_RETRY_BASE_MS => 50, MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef }, timeout => 60 },
             '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $pfile, '--backfill', '--max-attempts', '2');
is($r->{rc}, 0, 'a second backfill: rc 0') or diag($r->{err});
$q = queue($dsn);
ok($q->{g5}{completed}, 'g5 completed');
is($q->{g5}{triples}, 2, 'g5: two facts');
is(scalar(grep { !$q->{$_}{completed} && $q->{$_}{attempts} == 2 } keys %bad), scalar keys %bad, 'the parked rows stay parked');

done_testing();
