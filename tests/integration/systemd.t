#!/usr/bin/perl
# systemd.t — deploy/systemd/kgx.service passes `systemd-analyze verify` with no warnings, and keeps
# the settings operators rely on (docs/kg-extraction.md, "Running under systemd"). The unit is copied
# to a temp dir with ExecStart pointing at the built binary ($KGX_BIN, default build/bin/kgx-run),
# since verify insists that the binary exists. systemd-analyze missing is a failure, not a skip: CI
# installs systemd.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path(__FILE__)) . '/../..');
my $unit = "$root/deploy/systemd/kgx.service";
my $bin  = $ENV{KGX_BIN} // "$root/build/bin/kgx-run";
$bin = "$root/$bin" unless $bin =~ m{^/};

my $sa = `command -v systemd-analyze 2>/dev/null`;
chomp $sa;
ok($sa ne '', 'systemd-analyze is installed') or BAIL_OUT('systemd-analyze not found (apt-get install systemd)');
ok(-x $bin, "kgx-run binary at $bin") or BAIL_OUT("no executable $bin: build it first (make)");

open(my $fh, '<', $unit) or BAIL_OUT("cannot read $unit: $!");
my $text = do { local $/; <$fh> };
close $fh;

# settings that are part of the contract
my %want = (
    'Type'                     => 'notify',
    'ExecStart'                => '/usr/local/bin/kgx-run --workers 8 --batch-size 20 --poll-interval 30',
    'ExecReload'               => '/bin/kill -HUP $MAINPID',
    'WatchdogSec'              => '60',
    'TimeoutStopSec'           => '15',
    'KillSignal'               => 'SIGTERM',
    'Restart'                  => 'on-failure',
    'RestartSec'               => '10',
    'MemoryMax'                => '384M',     # = --memory-budget 64M + Lua ceiling 256M + 64M
    'CPUQuota'                 => '200%',
    'SyslogIdentifier'         => 'kgx',
    'NoNewPrivileges'          => 'yes',
    'ProtectSystem'            => 'strict',
    'ProtectHome'              => 'yes',
    'PrivateTmp'               => 'yes',
    'PrivateDevices'           => 'yes',
    'ProtectKernelTunables'    => 'yes',
    'ProtectKernelModules'     => 'yes',
    'ProtectControlGroups'     => 'yes',
    'RestrictAddressFamilies'  => 'AF_UNIX AF_INET AF_INET6',
    'RestrictNamespaces'       => 'yes',
    'LockPersonality'          => 'yes',
    'SystemCallFilter'         => '@system-service',
);
for my $k (sort keys %want) {
    my ($v) = $text =~ /^\Q$k\E=(.*)$/m;
    is($v, $want{$k}, "$k=$want{$k}");
}
like($text, qr{^EnvironmentFile=/etc/mempalace/kg-extract\.env$}m, 'the seed env file is read');
like($text, qr{^EnvironmentFile=-/etc/kgx/kgx\.env$}m, 'optional /etc/kgx/kgx.env');
like($text, qr{^After=.*\bllama-server-extractor\.service\b}m, 'After= llama-server-extractor');
like($text, qr{^Wants=.*\bllama-server-extractor\.service\b}m, 'Wants= llama-server-extractor');
unlike($text, qr{^MemoryDenyWriteExecute=yes}m, 'MemoryDenyWriteExecute stays off (LuaJIT needs W+X)');
unlike($text, qr{^User=}m, 'User= left as a commented suggestion');

# verify a copy that points at the real binary
my $dir = tempdir(CLEANUP => 1);
(my $copy = $text) =~ s{^ExecStart=/usr/local/bin/kgx-run}{ExecStart=$bin}m;
open(my $out, '>', "$dir/kgx.service") or die $!;
print $out $copy;
close $out;

my $cmd = "cd '$dir' && SYSTEMD_LOG_COLOR=0 '$sa' verify --man=no ./kgx.service 2>&1";
my $log = `$cmd`;
my $rc = $? >> 8;
is($rc, 0, 'systemd-analyze verify exits 0') or diag($log);
is($log, '', 'and prints no warnings') or diag($log);

done_testing();
