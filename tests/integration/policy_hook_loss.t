#!/usr/bin/env perl
# policy_hook_loss — a reload whose new policy loses a hook the running one defines is refused (one
# error line, the old policy kept: its vocabulary still applies), unless the new policy declares the
# hooks it leaves to the defaults (`defaults = { "accept" }`).
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use File::Temp qw(tempdir);

my $root = kgx_root();
my $dir = tempdir('kgx-hookloss-XXXXXX', TMPDIR => 1, CLEANUP => 1);
mkdir "$dir/prompts" or die;
symlink("$root/plugins", "$dir/plugins") or die "symlink: $!";
my $pol = "$dir/prompts/live.lua";
my $src = read_file("$root/prompts/default.lua");
sub put {
    my ($text) = @_;
    open(my $o, '>', "$pol.tmp") or die; print $o $text; close $o;
    rename("$pol.tmp", $pol) or die "rename: $!";
}
put($src);
(my $no_accept = $src) =~ s/^function accept\(.*?^end\n//ms or die 'default.lua: no accept hook';
$no_accept =~ s/^version = "1"$/version = "2"/m or die;

my $dsn = fresh_db('hook_loss');
my $f = start_fake();
add_drawers($dsn, [{ id => 'h1', document => 'Alice likes Bob.' }, { id => 'h2', document => 'Carol likes Dave.' }]);
my $k = spawn_kgx({ env => { MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef } },
                  '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $pol, '--poll-interval', '1');
my $log = sub { read_file($k->{errfile}) // '' };
ok(wait_until(20, sub { $log->() =~ /policy=default version=1/ }), 'daemon started with the default policy') or diag($log->());
ok(wait_until(20, sub { (psql_ok($dsn, 'SELECT 1 FROM public.mempalace_kg_extraction_queue LIMIT 0'))[0] }), 'queue table created');
my $rel = sub { my $e = edges($dsn); my ($x) = grep { $_->{s} eq $_[0] } @$e; $x ? $x->{rel} : undef };

# ---- saved without accept: refused, the old policy stays
my $at = length $log->();
put($no_accept);
ok(wait_until(20, sub { substr($log->(), $at) =~ /error policy reload \(file changed\) failed, keeping default 1: .*hook 'accept' is gone/ }),
   'reload without accept: one error line, keeping default 1') or diag($log->());
unlike(substr($log->(), $at), qr/policy reloaded/, 'and no "policy reloaded"');
psql($dsn, "INSERT INTO mempalace_kg_extraction_queue (drawer_id) VALUES ('h1')");
ok(wait_until(30, sub { defined $rel->('Alice') }), 'h1 written');
is($rel->('Alice'), 'other', 'the old accept still maps likes -> other');

# ---- the same file declaring it: reloaded, the default accept (keep as is) applies
$at = length $log->();
(my $declared = $no_accept) =~ s/^version = "2"$/version = "3"\ndefaults = { "accept" }   -- keep every triple as the model sent it/m or die;
put($declared);
ok(wait_until(20, sub { substr($log->(), $at) =~ /policy reloaded \(file changed\): default version 3/ }),
   'declared defaults = { "accept" }: reloaded') or diag($log->());
psql($dsn, "INSERT INTO mempalace_kg_extraction_queue (drawer_id) VALUES ('h2')");
ok(wait_until(30, sub { defined $rel->('Carol') }), 'h2 written');
is($rel->('Carol'), 'likes', 'without accept, the predicate is kept as the model sent it');
is(stop_kgx($k), 0, 'daemon stops');
done_testing();
