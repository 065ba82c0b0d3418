#!/usr/bin/perl
# ops_install.t — `make install PREFIX=… [DESTDIR=…]` puts everything an operator needs in place
# (binary, policies, plugins, systemd unit and env example, docs, man page), and the INSTALLED binary
# finds the INSTALLED policy (bin/../share/kgx/prompts/default.lua) when run from a directory outside
# the repository: --dry-run against the fake, --status against a real database.
use strict;
use warnings;
use KgxTest;
use File::Temp qw(tempdir);
use Cwd qw(getcwd abs_path);

my $root = abs_path(kgx_root());
my $tmp = tempdir('kgx-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# make install uses the plain build; `make test` has built it (make would rebuild it when stale)
sub make_install {
    my (@vars) = @_;
    my $out = `make -s -C '$root' install @vars 2>&1`;
    return ($? >> 8, $out);
}

sub installed_files_ok {
    my ($base, $what) = @_;
    ok(-x "$base/bin/kgx-run", "$what: bin/kgx-run is executable");
    for my $f (qw(prompts/default.lua prompts/code.lua plugins/llama.lua plugins/parse.lua plugins/split.lua
                  plugins/vocab.lua plugins/entity.lua systemd/kgx.service systemd/kgx.env.example)) {
        ok(-f "$base/share/kgx/$f", "$what: share/kgx/$f");
    }
    for my $f (qw(README.md kg-extraction.md policy.md)) {
        ok(-f "$base/share/doc/kgx/$f", "$what: share/doc/kgx/$f");
    }
    ok(-f "$base/share/man/man1/kgx-run.1", "$what: share/man/man1/kgx-run.1");
    my @lua = glob("$root/prompts/*.lua $root/plugins/*.lua");
    my @inst = glob("$base/share/kgx/prompts/*.lua $base/share/kgx/plugins/*.lua");
    is(scalar @inst, scalar @lua, "$what: every prompt and plugin installed");
}

# ---- PREFIX
my $prefix = "$tmp/prefix";
my ($rc, $out) = make_install("PREFIX='$prefix'");
is($rc, 0, 'make install PREFIX=… succeeds') or diag($out);
installed_files_ok($prefix, 'PREFIX');

# ---- DESTDIR (staged: the files land under DESTDIR/PREFIX)
my $dest = "$tmp/dest";
($rc, $out) = make_install("PREFIX=/usr/local", "DESTDIR='$dest'");
is($rc, 0, 'make install PREFIX=/usr/local DESTDIR=… succeeds') or diag($out);
installed_files_ok("$dest/usr/local", 'DESTDIR');
ok(!-e '/usr/local/bin/kgx-run' || (stat '/usr/local/bin/kgx-run')[9] < time - 60,
   'DESTDIR install did not write to the real /usr/local');

# ---- the installed binary runs its installed policy, from a cwd outside the repo
# Mark the installed default policy so that the log shows which file was loaded.
my $pol = "$prefix/share/kgx/prompts/default.lua";
my $src = read_file($pol);
ok($src =~ s/^version\s*=\s*"[^"]*"/version = "installed-copy"/m, 'default.lua has a version line');
open(my $fh, '>', $pol) or die "$pol: $!";
print $fh $src;
close $fh;

my $work = "$tmp/elsewhere";
mkdir $work or die "mkdir $work: $!";
open($fh, '>', "$work/two.jsonl") or die $!;
print $fh qq({"id":"d1","wing":"w","room":"r","document":"Ada Lovelace works on the Analytical Engine."}\n);
print $fh qq({"id":"d2","wing":"w","room":"r","document":"The billing service calls the search API."}\n);
close $fh;

my $fake = start_fake('--parallel', 2);
my $cwd = getcwd();
chdir $work or die "chdir $work: $!";
{
    local $ENV{KGX_BIN} = "$prefix/bin/kgx-run";
    my %env = (KGX_POLICY => undef, MEMPALACE_POSTGRES_DSN => undef);

    my $r = run_kgx({ env => \%env, timeout => 60 },
                    '--endpoint', $fake->{url}, '--dry-run', "$work/two.jsonl", '--json');
    is($r->{rc}, 0, 'installed kgx-run --dry-run exits 0') or diag($r->{err});
    like($r->{err}, qr/policy=default version=installed-copy/, 'it loaded the installed prompts/default.lua')
        or diag($r->{err});
    like($r->{out}, qr/Ada Lovelace/i, 'dry-run printed triples of drawer d1') or diag($r->{out});
    like($r->{out}, qr/billing service/i, 'dry-run printed triples of drawer d2');

    # a backfill of the two drawers with the installed binary, then its --status
    my $dsn = fresh_db('install');
    psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
                 INSERT INTO mempalace_drawers VALUES
                   ('d1', 'w', 'r', 'Ada Lovelace works on the Analytical Engine.', '{}'),
                   ('d2', 'w', 'r', 'The billing service calls the search API.', '{}')});
    $r = run_kgx({ env => \%env, timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
    is($r->{rc}, 0, 'installed kgx-run --backfill exits 0') or diag($r->{err});
    like($r->{err}, qr/^final: completed=2 pending=0 in_flight=0 errors=0$/m, 'both drawers completed');
    $r = run_kgx({ env => \%env, timeout => 60 }, '--dsn', $dsn, '--status', '--json');
    is($r->{rc}, 0, 'installed kgx-run --status --json exits 0') or diag($r->{err});
    my $st = eval { json_decode($r->{out}) };
    ok($st, 'status is JSON') or diag($r->{out});
    is($st->{policy}{version}, 'installed-copy', 'status reports the installed policy version');

    # the DESTDIR copy: bin/../share/kgx is found there as well (the real PREFIX is not)
    local $ENV{KGX_BIN} = "$dest/usr/local/bin/kgx-run";
    $r = run_kgx({ env => \%env, timeout => 60 }, '--endpoint', $fake->{url}, '--dry-run', "$work/two.jsonl");
    is($r->{rc}, 0, 'DESTDIR-staged kgx-run --dry-run exits 0') or diag($r->{err});
    like($r->{err}, qr/policy=default version=(?!installed-copy)/, 'it loaded its own staged policy');

    # no policy anywhere: a clear configuration error, rc 2
    rename "$prefix/share/kgx/prompts", "$prefix/share/kgx/prompts.away" or die $!;
    local $ENV{KGX_BIN} = "$prefix/bin/kgx-run";
    $r = run_kgx({ env => \%env, timeout => 30 }, '--endpoint', $fake->{url}, '--dry-run', "$work/two.jsonl");
    if (-f '/usr/local/share/kgx/prompts/default.lua') {
        pass('a system-wide install exists: the compiled-in fallback would find it (not checked)');
    } else {
        is($r->{rc}, 2, 'no policy found -> exit 2');
        like($r->{err}, qr/^error: no policy: .*--policy/m, 'with a one-line message naming --policy');
    }
    rename "$prefix/share/kgx/prompts.away", "$prefix/share/kgx/prompts" or die $!;
}
chdir $cwd;

# man page renders without warnings (man-db comes with the test command: scripts/install-deps test)
ok(`command -v man 2>/dev/null` ne '', 'man is installed (man-db)');
my $w = `MANWIDTH=100 man --warnings -l '$prefix/share/man/man1/kgx-run.1' 2>&1 >/dev/null`;
is($w, '', 'installed man page renders without warnings');

done_testing();
