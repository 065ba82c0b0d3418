#!/usr/bin/perl
# ops_deb.t — `make deb` (scripts/build-deb): a .deb built with debhelper from deploy/debian/, lintian
# without errors, and the package's contents where Debian puts them: kgx-run in /usr/bin, policies and
# plugins in /usr/share/kgx, the man page, the systemd unit in /lib/systemd/system with
# ExecStart=/usr/bin/kgx-run, neither enabled nor started by the maintainer scripts, the env example
# and the Grafana dashboard in /usr/share/doc/kgx/examples. The unpacked binary runs (--version), the
# unpacked man page renders without warnings, and the unpacked unit passes systemd-analyze verify.
# (scripts/fresh-check also installs the package in a Debian 12 root and checks it there.)
use strict;
use warnings;
use KgxTest;
use File::Temp qw(tempdir);

my $root = kgx_root();
my $tmp = tempdir('kgx-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1);
for my $c (qw(dpkg-buildpackage dh lintian dpkg-deb systemd-analyze man)) {
    ok(system("command -v $c >/dev/null 2>&1") == 0, "$c is installed")
        or do { diag("$c missing: scripts/install-deps test"); done_testing(); exit 1 };
}
chomp(my $version = read_file("$root/VERSION") // '');

my $out = `cd '$root' && KGX_DEB_OUT='$tmp/out' scripts/build-deb 2>'$tmp/build.err'`;
my $rc = $? >> 8;
is($rc, 0, 'scripts/build-deb succeeds (dpkg-buildpackage -b, lintian --fail-on error)')
    or diag(read_file("$tmp/build.err"), read_file("$tmp/out/build.log") // '');
my ($deb) = $out =~ /(\S+\.deb)\s*\z/;
# no package: this file fails here, the rest of the suite goes on
ok($deb && -f $deb, 'a .deb was built') or do { done_testing(); exit 1 };
like($deb, qr{/kgx_\Q$version\E_[a-z0-9]+\.deb$}, "named kgx_${version}_ARCH.deb");

# lintian: no error (E:) lines; the build already failed on them, this shows them if any
my $lint = `lintian '$deb' 2>&1`;
my @errors = grep { /^E: / } split /\n/, $lint;
is(scalar @errors, 0, 'lintian: no errors') or diag(join "\n", @errors);

my %files = map { s{^\./}{/}r => 1 } map { (split ' ', $_)[5] } split /\n/, `dpkg-deb -c '$deb'`;
for my $f ('/usr/bin/kgx-run', '/usr/share/kgx/prompts/default.lua', '/usr/share/kgx/prompts/code.lua',
           '/usr/share/man/man1/kgx-run.1.gz', '/lib/systemd/system/kgx.service',
           '/usr/share/doc/kgx/copyright', '/usr/share/doc/kgx/changelog.gz') {
    ok($files{$f}, "package has $f");
}
ok(scalar(grep { m{^/usr/share/doc/kgx/examples/kgx\.env\.example(\.gz)?$} } keys %files), 'env example in /usr/share/doc/kgx/examples');
ok(scalar(grep { m{^/usr/share/doc/kgx/examples/kgx-dashboard\.json(\.gz)?$} } keys %files), 'Grafana dashboard in examples');
for my $dir (qw(prompts plugins)) {
    my @src = map { s{.*/}{}r } glob("$root/$dir/*.lua");
    my @missing = grep { !$files{"/usr/share/kgx/$dir/$_"} } @src;
    is_deeply(\@missing, [], "every $dir/*.lua is in /usr/share/kgx/$dir");
}
ok(!scalar(grep { m{^/usr/local/} } keys %files), 'nothing under /usr/local');
ok(!scalar(grep { m{^/usr/share/kgx/systemd} } keys %files), 'the unit only in /lib/systemd/system');

my $info = `dpkg-deb -f '$deb' Depends`;
like($info, qr/\blua-cjson\b/, 'Depends: lua-cjson (loaded at run time)');
like($info, qr/\bprocps\b/, 'Depends: procps (/bin/kill in ExecReload)');
like($info, qr/\blibluajit/, 'Depends: the shared libraries (shlibs)');

# maintainer scripts: installed, not enabled, not started
system("dpkg-deb -e '$deb' '$tmp/control'") == 0 or die 'dpkg-deb -e failed';
my $maint = join '', map { read_file($_) // '' } glob("$tmp/control/{preinst,postinst,prerm,postrm}");
like($maint, qr/deb-systemd-helper/, 'maintainer scripts know the unit (dh_installsystemd)');
unlike($maint, qr/deb-systemd-invoke\s+\S*\s*start|_dh_action=.*start|systemctl\s+(--\S+\s+)*start/, 'the unit is not started on install');
# --no-enable: dh_installsystemd re-enables only a unit the admin had enabled (inside `was-enabled`)
(my $unguarded = $maint) =~ s/if deb-systemd-helper --quiet was-enabled[^\n]*\n[^\n]*\n[^\n]*deb-systemd-helper enable[^\n]*\n//g;
unlike($unguarded, qr/deb-systemd-helper enable/, 'the unit is not enabled on install (only re-enabled if it was)');

# unpacked: the binary runs, the man page renders, the unit verifies
system("dpkg-deb -x '$deb' '$tmp/x'") == 0 or die 'dpkg-deb -x failed';
my $v = `'$tmp/x/usr/bin/kgx-run' --version 2>&1`;
is($? >> 8, 0, 'unpacked kgx-run --version exits 0');
like($v, qr/\b\Q$version\E\b/, "and prints $version");
my $w = `MANWIDTH=100 man --warnings -l '$tmp/x/usr/share/man/man1/kgx-run.1.gz' 2>&1 >/dev/null`;
is($w, '', 'the packaged man page renders without warnings');
like(`MANWIDTH=100 MANPAGER=cat man -l '$tmp/x/usr/share/man/man1/kgx-run.1.gz' 2>/dev/null`, qr/kgx-run/, 'man -l shows it');
my $unit = read_file("$tmp/x/lib/systemd/system/kgx.service") // '';
like($unit, qr{^ExecStart=/usr/bin/kgx-run }m, 'unit: ExecStart=/usr/bin/kgx-run');
unlike($unit, qr{/usr/local/}, 'unit: no /usr/local paths');
# systemd-analyze verify insists the binary exists: point a copy at the unpacked one
(my $u2 = $unit) =~ s{^ExecStart=/usr/bin/kgx-run }{ExecStart=$tmp/x/usr/bin/kgx-run }m;
mkdir "$tmp/unit";
open(my $fh, '>', "$tmp/unit/kgx.service") or die $!;
print $fh $u2;
close $fh;
my $va = `cd '$tmp/unit' && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no ./kgx.service 2>&1`;
is($va, '', 'systemd-analyze verify of the packaged unit: no findings') or diag($va);

done_testing();
