#!/usr/bin/perl
# core_hookthreads.t — "a bad policy never stalls the others: the loop keeps serving while a hook runs, and the
# watchdog stops any hook, whatever it is doing". A policy that behaves like prompts/default.lua
# except in parse on marker drawers:
#   REDOS  string.find with a backtracking pattern: minutes inside one C call, where no Lua debug
#          hook fires (the same shape as ("a"):rep(24) / ("a*"):rep(12).."b", a little smaller so an
#          abandoned thread gives its core back sooner);
#   SPIN   while true do end;
#   HOG    one 200 MiB string.rep (the allocator refuses it: "not enough memory").
# During a backfill of 240 normal drawers: normal drawers keep completing (no gap longer than the
# watchdog limit + 1 s), /healthz answers within 1 s throughout, each marker drawer fails every
# attempt and is parked after --max-attempts with the watchdog's (or the allocator's) message, and
# the run exits 0 without waiting for the abandoned threads. Then a SIGTERM sent while a REDOS
# hook is stuck exits 0 within 10 s with no claimed row left behind.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use KgxGraph;
use PolTest ();
use HTTP::Tiny;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);

my $LIMIT_MS = 2000;      # the hook watchdog (KGX_HOOK_TIMEOUT_MS)
my $VG = $ENV{KGX_VALGRIND} ? 1 : 0;
# Under memcheck every hook is ~30x slower, so the wall-clock watchdog (raised to 15 s there by
# tests/valgrind-kgx) cannot tell a stuck hook from a slow one within a test's time: the hook threads
# are exercised under memcheck by policy_hooks.t, policy_reload.t and policy_dryrun.t instead.
plan skip_all => 'timing-driven: not under valgrind' if $VG;
my $root = kgx_root();


# the policy: prompts/default.lua with parse wrapped
my $ptop = ($ENV{TMPDIR} // '/tmp') . "/kgx-hookthreads-$$";
my $pdir = "$ptop/prompts";
system('mkdir', '-p', $pdir) == 0 or die "mkdir $pdir";
symlink("$root/plugins", "$ptop/plugins") or die "symlink plugins: $!";
my $pfile = "$pdir/hookthreads.lua";
{
    my $base = read_file("$root/prompts/default.lua") // die "prompts/default.lua: $!";
    open my $fh, '>', $pfile or die "$pfile: $!";
    print $fh $base, <<'LUA';

-- core_hookthreads.t: parse misbehaves on marker drawers
name = "hookthreads"
local default_parse = parse
function parse(body, chunk, drawer)
    local doc = drawer.document
    if doc:find("REDOS", 1, true) then string.find(("a"):rep(22), ("a*"):rep(11) .. "b") end
    if doc:find("SPIN", 1, true) then while true do end end
    if doc:find("HOG", 1, true) then local s = string.rep("x", 200 * 1024 * 1024) return { { subject = s } } end
    return default_parse(body, chunk, drawer)
end
LUA
    close $fh;
}

my $ua = HTTP::Tiny->new(timeout => 5);
sub completed { queue_count($_[0], 'completed_at IS NOT NULL') }
sub claimed { queue_count($_[0], 'completed_at IS NULL AND started_at IS NOT NULL') }

# ---------------------------------------------------------------- a backfill with stuck hooks
my $c = gen_corpus(n => 240, seed => 77, pool => 120);
my %marks = (c_redos => 'REDOS', c_spin => 'SPIN', c_hog => 'HOG');
$c->{docs}{$_} = "$marks{$_} Zed owns Zanzibar." for keys %marks;
my $dsn = fresh_db('core_hookthreads');
create_drawers($dsn, $c);
my $fake = start_fake('--latency-ms', 120, '--parallel', 4);
my $port = free_port();
my $t0 = time;
my $k = spawn_kgx({ env => { KGX_RETRY_BASE_MS => 50, MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef } },
                  '--dsn', $dsn, '--endpoint', $fake->{url}, '--policy', $pfile, '--backfill', '--max-attempts', 3,
                  '--workers', 4, '--batch-size', 10, '--http', "127.0.0.1:$port", '--worker-id', 'hookthreads',
                  '--progress-interval', 1);
my (@health, @done);     # [t, seconds, status] and [t, completed]
my $st;
while (1) {
    my $h0 = time;
    my $r = $ua->get("http://127.0.0.1:$port/healthz");
    push @health, [$h0 - $t0, time - $h0, $r->{status}] if $r->{status} != 599 || @health;   # 599: not listening yet
    push @done, [time - $t0, completed($dsn)];
    last if defined($st = wait_pid($k->{pid}, 0.15));
    last if time - $t0 > 150;
}
$st //= stop_kgx($k, 'KILL', 5);
# the run's last moments: a finished backfill answers 503 while it drains, then nothing at all
pop @health while @health && $health[-1][2] != 200;
# ... and its first: /healthz is 503 until the database pool is up
shift @health while @health && $health[0][2] != 200;
my $took = time - $t0;
note(sprintf 'backfill: %.1f s, %d /healthz probes', $took, scalar @health);
my $err = read_file($k->{errfile}) // '';
is($st, 0, sprintf('backfill with stuck hooks: exit 0 (%.1f s)', $took)) or diag(substr($err, -4000));

my $q = PolTest::queue($dsn);
my @normal = grep { !$marks{$_} } keys %$q;
is(scalar(grep { $q->{$_}{completed} } @normal), 240, 'every normal drawer completed');
for my $id (sort keys %marks) {
    my $x = $q->{$id} || {};
    ok(!$x->{completed}, "$id: not completed");
    is($x->{attempts}, 3, "$id: parked after --max-attempts 3");
    my $want = $marks{$id} eq 'HOG' ? qr/not enough memory/ : qr/watchdog: hook 'parse' exceeded $LIMIT_MS ms/;
    like($x->{error} // '', $want, "$id: the error says why") or diag($x->{error});
    like($x->{error} // '', qr/hookthreads\.lua:\d+/, "$id: ... and names the policy file and line") or diag($x->{error});
}
like($err, qr/watchdog: hook 'parse' exceeded $LIMIT_MS ms; its state is abandoned/, 'the REDOS state was abandoned');
unlike($err, qr/watchdog: hook '\w+' exceeded \d+ ms; its state is abandoned.*\n(?:.*\n)*.*SPIN/, 'SPIN was stopped by the Lua watchdog, never abandoned');

# /healthz throughout
my @slow = grep { $_->[1] >= 1.0 || $_->[2] != 200 } @health;
cmp_ok(scalar @health, '>=', 5, scalar(@health) . ' /healthz probes during the run');
is(scalar(grep { $_->[2] != 200 } @health), 0, '/healthz answered 200 every time');
$VG ? note(scalar(@slow) . ' probes slower than 1 s under valgrind') : is(scalar @slow, 0, '/healthz answered 200 within 1 s every time')
    or diag(join "\n", map { sprintf 't=%.2f took %.2f s status %s', @$_ } @slow[0 .. ($#slow < 9 ? $#slow : 9)]);
my $maxh = 0;
$_->[1] > $maxh and $maxh = $_->[1] for @health;
note(sprintf 'slowest /healthz: %.3f s', $maxh);

# progress: while normal drawers remained, completions never stalled past the limit + 1 s
my ($gap, $at, $last_t, $last_n) = (0, 0, undef, -1);
for my $d (@done) {
    my ($t, $n) = @$d;
    last if $n >= 240;
    next unless $n > 0;       # start-up is not a stall
    if ($n != $last_n) { ($last_t, $last_n) = ($t, $n); next }
    if (defined $last_t && $t - $last_t > $gap) { $gap = $t - $last_t; $at = $last_t }
}
my $stall = sprintf('longest stall of completions: %.2f s (at t=%.1f)', $gap, $at);
$VG ? note($stall) : cmp_ok($gap, '<=', $LIMIT_MS / 1000 + 1, $stall);
is(claimed($dsn), 0, 'no row left claimed');

# ---------------------------------------------------------------- SIGTERM while a hook is stuck
$dsn = fresh_db('core_hookthreads_term');
my $c2 = gen_corpus(n => 30, seed => 78, pool => 40);
$c2->{docs}{c_redos} = 'REDOS Zed owns Zanzibar.';
create_drawers($dsn, $c2);
fake_config($fake, { latency_ms => 0 });
fake_reset($fake);
$k = spawn_kgx({ env => { MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef } },
               '--dsn', $dsn, '--endpoint', $fake->{url}, '--policy', $pfile, '--backfill', '--max-attempts', 5,
               '--worker-id', 'hookthreads-term');
# every normal drawer done and the marker's answer in: its parse hook is the one running
ok(wait_until(60, sub { completed($dsn) >= 30 && fake_stats($fake)->{requests_total} >= 31 }),
   'the REDOS parse is running') or diag(read_file($k->{errfile}));
sleep 0.3;
my $t1 = time;
kill 'TERM', $k->{pid};
$st = wait_pid($k->{pid}, 15);
my $dt = time - $t1;
is($st, 0, 'SIGTERM with a stuck hook: exit 0') or diag(substr(read_file($k->{errfile}) // '', -3000));
cmp_ok($dt, '<=', $VG ? 30 : 10, sprintf('SIGTERM with a stuck hook: gone in %.2f s', $dt));
is(claimed($dsn), 0, 'no row left claimed');
is(scalar psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NULL AND worker_id = 'hookthreads-term'"),
   0, 'no unfinished row names the stopped worker');

system('rm', '-rf', $ptop);
done_testing();
