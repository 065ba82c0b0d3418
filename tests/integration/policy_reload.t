#!/usr/bin/perl
# policy_reload.t — SIGHUP reloads the policy of a running daemon: a policy that fails to load is
# reported and the old one keeps working; a good one with another name/version takes over (the log
# says so, and the next extraction uses it: stored answers name it, its vocabulary shows in the graph).
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use File::Temp qw(tempdir);
use File::Copy qw(copy);

my $root = kgx_root();
my $dir = tempdir('kgx-reload-XXXXXX', TMPDIR => 1, CLEANUP => 1);
mkdir "$dir/prompts" or die;
symlink("$root/plugins", "$dir/plugins") or die "symlink: $!";
my $pol = "$dir/prompts/live.lua";
copy("$root/prompts/default.lua", $pol) or die "copy: $!";
sub put { my ($src) = @_; copy($src, "$pol.tmp") or die "copy $src: $!"; rename("$pol.tmp", $pol) or die "rename: $!" }

my $dsn = fresh_db('pol_reload');
my $f = start_fake();
add_drawers($dsn, [{ id => 'r1', document => 'Alice likes Bob.' }, { id => 'r2', document => 'Carol likes Dave.' },
                   { id => 'r3', document => 'Erin likes Fay.' }]);
# the daemon creates the queue; rows are enqueued one at a time below
my $k = spawn_kgx({ env => { MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef } },
                  '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $pol, '--poll-interval', '1');
my $log = sub { read_file($k->{errfile}) // '' };
ok(wait_until(20, sub { $log->() =~ /policy=default version=1/ }), 'daemon started with the default policy') or diag($log->());
ok(wait_until(20, sub { (psql_ok($dsn, 'SELECT 1 FROM public.mempalace_kg_extraction_queue LIMIT 0'))[0] }), 'queue table created');

my $enqueue_and_wait = sub {
    my ($id) = @_;
    psql($dsn, "INSERT INTO public.mempalace_kg_extraction_queue (drawer_id, wing, room) VALUES ('$id', 'w', 'r')");
    return wait_until(30, sub { psql($dsn, "SELECT count(*) FROM public.mempalace_kg_extraction_queue WHERE drawer_id = '$id' AND completed_at IS NOT NULL") == 1 });
};
my $policy_of = sub { psql($dsn, "SELECT policy || '/' || policy_version FROM public.kgx_mempalace_kg_answers WHERE drawer_id = '$_[0]'") };
my $rel_of = sub {
    my ($s) = @_;
    join ',', map { $_->{rel} } grep { $_->{s} eq $s } @{edges($dsn)};
};

ok($enqueue_and_wait->('r1'), 'r1 extracted');
is($policy_of->('r1'), 'default/1', 'r1: answer stored under default/1');
is($rel_of->('Alice'), 'other', 'r1: likes -> other under the default policy');

# ---- a broken policy + HUP: reported, the old one stays
put("$root/tests/integration/policies/prompts/load_syntax.lua");
kill 'HUP', $k->{pid};
ok(wait_until(20, sub { $log->() =~ /reload \(SIGHUP\) failed/ }), 'HUP with a broken file: "reload failed" logged') or diag($log->());
my ($fail) = $log->() =~ /^(.*reload \(SIGHUP\) failed.*)$/m;
like($fail // '', qr/keeping default 1: .*live\.lua:4:/, 'the failure names the kept policy and the file:line of the error');
ok(kill(0, $k->{pid}), 'the daemon is still running');
ok($enqueue_and_wait->('r2'), 'r2 (enqueued after the failed reload) extracted');
is($policy_of->('r2'), 'default/1', 'r2: still the default policy');
is($rel_of->('Carol'), 'other', 'r2: likes -> other (old vocabulary)');

# ---- a good policy with another name/version + HUP: it takes over
put(likes_policy());
my $before = length $log->();
kill 'HUP', $k->{pid};
ok(wait_until(20, sub { substr($log->(), $before) =~ /policy reloaded \(SIGHUP\): likes version 2/ }), 'HUP with a good file: "policy reloaded (SIGHUP): likes version 2"')
    or diag($log->());
ok($enqueue_and_wait->('r3'), 'r3 extracted after the reload');
is($policy_of->('r3'), 'likes/2', 'r3: answer stored under the new policy likes/2');
is($rel_of->('Erin'), 'likes', 'r3: likes is now a relation type (new vocabulary)');
is($rel_of->('Carol'), 'other', 'r2\'s fact untouched by the reload');

# ---- no signal at all: saving the file (an editor's write-and-rename) is enough
{
    open(my $in, '<', $pol) or die;
    my $src = do { local $/; <$in> };
    close $in;
    $src =~ s/^version = "2"$/version = "3"/m or die 'no version line';
    open(my $out, '>', "$pol.tmp") or die;
    print $out $src;
    close $out;
    my $at = length $log->();
    rename("$pol.tmp", $pol) or die;
    ok(wait_until(20, sub { substr($log->(), $at) =~ /policy reloaded \(file changed\): likes version 3/ }),
       'saving the policy file reloads it: "policy reloaded (file changed): likes version 3"') or diag($log->());
}

my $st = stop_kgx($k, 'TERM', 15);
is($st, 0, 'SIGTERM: exit 0');
unlike($log->(), qr/AddressSanitizer|panic|Segmentation/, 'no crash in the log');

done_testing();
