package KgxTest;
# Helpers shared by the Perl integration tests (tests/integration/*.t). Core modules only.
#
#   use lib "$ENV{KGX_ROOT}/tests/lib";   # scripts/run-tests also sets PERL5LIB
#   use KgxTest;                          # exports the functions below, and Test::More's
#
#   my $dsn = fresh_db('backfill');       # new database on KGX_TEST_DSN's server, AGE available; dropped at END
#   my @rows = psql($dsn, 'SELECT a, b FROM t');      # rows as 'a|b' strings; dies with stderr on error
#   my $one  = psql($dsn, 'SELECT count(*) FROM t');  # scalar context: the whole output, chomped
#   my $f = start_fake('--slots', 2);     # {pid, host, port, url, log}; killed at END
#   fake_config($f, { faults => ['http500:1.0:3'] }); my $s = fake_stats($f); stop_fake($f);
#   my $r = run_kgx('--dsn', $dsn, '--once');         # {rc, out, err, signal, timed_out}
#   my $r = run_kgx({ stdin => $text, env => { KGX_POLICY => $p }, timeout => 60 }, @args);
#   my $k = spawn_kgx(@args);             # {pid, errfile, outfile}; read_file($k->{errfile}); killed at END
#   my $st = wait_pid($k->{pid}, 10);     # exit status ($? form) or undef on timeout
#   wait_until(10, sub { ...true when done... }) or fail('...');
#
# KGX_TEST_DSN, KGX_BIN, KGX_FAKE, KGX_ROOT come from scripts/run-tests. KGX_KEEP_DB=1 keeps databases.
#
# Quiet (tests/lib/KgxQuiet.pm): the test's standard error goes to its per-test log file, and every
# kgx-run's and fake's output is appended there with a header when the process ends; a failing test
# prints the log's end. Test::More's failure messages and diag() still reach the terminal.
# psql rows: one per output line, columns joined by '|' (psql -A -t): avoid selecting values with newlines.
use strict;
use warnings;
use Test::More;
use POSIX ();
use Time::HiRes ();
use File::Temp ();
use JSON::PP ();
use HTTP::Tiny ();
use Exporter 'import';

our @EXPORT = (qw(fresh_db dsn_for psql psql_ok start_fake stop_fake fake_stats fake_config fake_reset
                  run_kgx spawn_kgx stop_kgx wait_pid wait_until read_file json_decode json_encode
                  admin_dsn kgx_root free_port http_get),
               @Test::More::EXPORT);

my $CREATOR = $$;                 # END cleanup runs only in the process that loaded us
my (@dbs, %fakes, %kgxs);
my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;
my $TMP = File::Temp->newdir('kgxtest-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# ------------------------------------------------------------------ the per-test log (KgxQuiet)
use KgxQuiet ();
my $LOG = KgxQuiet::log_path();
sub test_log { $LOG }

# append a finished process's output files to the log
sub _log_output {
    my ($what, @files) = @_;
    return unless $LOG;
    open(my $fh, '>>', $LOG) or return;
    for my $f (@files) {
        next unless defined $f && -s $f;
        my $s = read_file($f);
        $s .= "\n" unless $s =~ /\n\z/;
        print $fh "--- $what: " . ($f =~ m{(?:/err-\d+|\.err)\z} ? 'stderr' : 'stdout') . "\n$s";
    }
    close $fh;
}

sub kgx_root { $ENV{KGX_ROOT} // do { require File::Basename; require Cwd;
    Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..') } }

sub json_decode { $JSON->decode($_[0]) }
sub json_encode { $JSON->encode($_[0]) }

sub read_file {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _write_file {
    my ($path, $data) = @_;
    open my $fh, '>:raw', $path or die "write $path: $!";
    print $fh $data;
    close $fh or die "close $path: $!";
}

my $tmpn = 0;
sub _tmpname { sprintf('%s/%s-%d', "$TMP", $_[0] // 'f', ++$tmpn) }

# fork+exec @cmd with stdin from $in_file (or /dev/null), stdout/stderr to files; returns pid
sub _spawn {
    my ($cmd, $in_file, $out_file, $err_file, $env) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval {
            open STDIN, '<', ($in_file // '/dev/null') or die "stdin: $!";
            open STDOUT, '>', $out_file or die "stdout: $!";
            open STDERR, '>', $err_file or die "stderr: $!";
            if ($env) { for my $k (keys %$env) {
                if (defined $env->{$k}) { $ENV{$k} = $env->{$k} } else { delete $ENV{$k} } } }
            exec { $cmd->[0] } @$cmd or die "exec $cmd->[0]: $!";
        };
        print STDERR $@ if $@;
        POSIX::_exit(127);
    }
    return $pid;
}

# ------------------------------------------------------------------ processes

sub wait_pid {
    my ($pid, $timeout) = @_;
    $timeout //= 30;
    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        return $? if $r == $pid;
        return undef if $r < 0;          # not our child / already reaped
        return undef if Time::HiRes::time() >= $deadline;
        Time::HiRes::sleep(0.02);
    }
}

sub wait_until {
    my ($timeout, $cond, $interval) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if Time::HiRes::time() >= $deadline;
        Time::HiRes::sleep($interval // 0.05);
    }
}

sub _kill_wait {
    my ($pid, $sig, $grace) = @_;
    kill $sig, $pid;
    my $st = wait_pid($pid, $grace // 5);
    return $st if defined $st;
    kill 'KILL', $pid;
    return wait_pid($pid, 5);
}

# ------------------------------------------------------------------ psql

sub admin_dsn {
    my $d = $ENV{KGX_TEST_DSN};
    die "KGX_TEST_DSN is not set: run under scripts/run-tests or eval \"\$(scripts/sandbox-db up)\"\n"
        unless defined $d && length $d;
    return $d;
}

# the DSN of database $db on the same server as $base (URI or key=value form)
sub dsn_for {
    my ($base, $db) = @_;
    if ($base =~ m{^postgres(?:ql)?://}) {
        my ($main, $query) = split /\?/, $base, 2;
        $main =~ s{^(postgres(?:ql)?://[^/]*)(?:/.*)?$}{$1/$db};
        return defined $query ? "$main?$query" : $main;
    }
    return "$base dbname=$db";
}

sub _psql_run {
    my ($dsn, $sql) = @_;
    my $in = _tmpname('sql');
    _write_file($in, $sql);
    my ($out, $err) = (_tmpname('out'), _tmpname('err'));
    my $pid = _spawn(['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $dsn, '-f', $in],
                     undef, $out, $err, { PGCONNECT_TIMEOUT => 10, PGOPTIONS => '-c client_min_messages=warning' });
    waitpid($pid, 0);
    my $rc = $?;
    my ($o, $e) = (read_file($out), read_file($err));
    unlink $in, $out, $err;
    return ($rc, $o, $e);
}

sub psql {
    my ($dsn, $sql) = @_;
    my ($rc, $o, $e) = _psql_run($dsn, $sql);
    if ($rc != 0) {
        my $short = length($sql) > 300 ? substr($sql, 0, 300) . '...' : $sql;
        die "psql failed (rc " . ($rc >> 8) . "): $e\n  SQL: $short\n";
    }
    chomp $o;
    return wantarray ? (length $o ? split(/\n/, $o, -1) : ()) : $o;
}

# like psql, but returns (ok, output, stderr) instead of dying
sub psql_ok {
    my ($dsn, $sql) = @_;
    my ($rc, $o, $e) = _psql_run($dsn, $sql);
    chomp $o;
    return ($rc == 0, $o, $e);
}

sub fresh_db {
    my ($tag) = @_;
    $tag = lc($tag // 't');
    $tag =~ s/[^a-z0-9_]+/_/g;
    $tag = substr($tag, 0, 24);
    my $name = sprintf('kgxt_%s_%d_%d_%04x', $tag, $$, time, int(rand(65536)));
    $name = substr($name, 0, 63);
    my $admin = admin_dsn();
    psql($admin, qq{CREATE DATABASE "$name"});
    push @dbs, $name;
    my $dsn = dsn_for($admin, $name);
    psql($dsn, 'CREATE EXTENSION IF NOT EXISTS age');   # template1 has it in a sandbox; a user server may not
    return $dsn;
}

# ------------------------------------------------------------------ the fake llama-server

sub start_fake {
    my (@args) = @_;
    my $bin = $ENV{KGX_FAKE} // kgx_root() . '/build/bin/fake-llama';
    die "fake-llama not found at $bin (KGX_FAKE)\n" unless -x $bin;
    my $log = _tmpname('fake');
    my $pid = _spawn([$bin, '--port', '0', @args], undef, $log, "$log.err");
    my ($host, $port);
    my $ok = wait_until(15, sub {
        for my $f ($log, "$log.err") {
            my $s = read_file($f) // '';
            if ($s =~ /listening on (\S+):(\d+)/) { ($host, $port) = ($1, $2); return 1 }
        }
        return 1 if waitpid($pid, POSIX::WNOHANG()) == $pid;   # died
        return 0;
    });
    unless ($ok && defined $port) {
        kill 'KILL', $pid; waitpid($pid, 0);
        die "fake-llama did not start (@args): " . (read_file($log) // '') . (read_file("$log.err") // '') . "\n";
    }
    $host = '127.0.0.1' if $host eq '0.0.0.0' || $host eq '*';
    $host = "[$host]" if $host =~ /:/ && $host !~ /^\[/;
    my $f = { pid => $pid, host => $host, port => $port, url => "http://$host:$port", log => $log, errlog => "$log.err" };
    $fakes{$pid} = $f;
    return $f;
}

sub stop_fake {
    my ($f) = @_;
    return unless $f && $fakes{$f->{pid}};
    delete $fakes{$f->{pid}};
    my $st = _kill_wait($f->{pid}, 'TERM', 5);
    _log_output("fake-llama $f->{url} (pid $f->{pid})", $f->{log}, $f->{errlog});
    return $st;
}

my $http = HTTP::Tiny->new(timeout => 10);

# a TCP port free on 127.0.0.1 right now (for --http HOST:PORT)
sub free_port {
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# GET url: the body of a 2xx answer, else undef
sub http_get {
    my ($url) = @_;
    my $r = $http->get($url);
    return $r->{success} ? $r->{content} : undef;
}

sub fake_stats {
    my ($f) = @_;
    my $r = $http->get("$f->{url}/fake/stats");
    die "GET /fake/stats: $r->{status} $r->{content}\n" unless $r->{success};
    return json_decode($r->{content});
}

sub fake_config {
    my ($f, $cfg) = @_;
    my $r = $http->post("$f->{url}/fake/config",
                        { headers => { 'Content-Type' => 'application/json' }, content => json_encode($cfg) });
    die "POST /fake/config: $r->{status} $r->{content}\n" unless $r->{success};
    return $r->{content} =~ /^\s*[\[{]/ ? json_decode($r->{content}) : $r->{content};
}

sub fake_reset {
    my ($f) = @_;
    my $r = $http->post("$f->{url}/fake/reset", { content => '' });
    return $r->{success};
}

# ------------------------------------------------------------------ kgx-run

sub _kgx_bin {
    my $bin = $ENV{KGX_BIN} // kgx_root() . '/build/bin/kgx-run';
    die "kgx-run not found at $bin (KGX_BIN)\n" unless -x $bin;
    return $bin;
}

sub run_kgx {
    my $opt = ref $_[0] eq 'HASH' ? shift : {};
    my @args = @_;
    my ($in, $out, $err) = (undef, _tmpname('out'), _tmpname('err'));
    if (defined $opt->{stdin}) { $in = _tmpname('in'); _write_file($in, $opt->{stdin}) }
    my $pid = _spawn([_kgx_bin(), @args], $in, $out, $err, $opt->{env});
    $kgxs{$pid} = 1;
    my $st = wait_pid($pid, $opt->{timeout} // 120);
    my $timed_out = !defined $st;
    $st = _kill_wait($pid, 'KILL', 5) if $timed_out;
    delete $kgxs{$pid};
    my %r = (rc => (defined $st && !($st & 127)) ? $st >> 8 : -1,
             signal => defined $st ? $st & 127 : 9,
             out => read_file($out) // '', err => read_file($err) // '', timed_out => $timed_out ? 1 : 0);
    $r{err} .= "\n[KgxTest: killed after " . ($opt->{timeout} // 120) . " s timeout]\n" if $timed_out;
    _log_output("kgx-run @args (pid $pid, rc $r{rc}" . ($r{signal} ? ", signal $r{signal}" : '') . ')', $out, $err);
    unlink grep { defined } $in, $out, $err;
    return \%r;
}

sub spawn_kgx {
    my $opt = ref $_[0] eq 'HASH' ? shift : {};
    my @args = @_;
    my ($out, $err) = (_tmpname('out'), _tmpname('err'));
    my $in;
    if (defined $opt->{stdin}) { $in = _tmpname('in'); _write_file($in, $opt->{stdin}) }
    my $pid = _spawn([_kgx_bin(), @args], $in, $out, $err, $opt->{env});
    $kgxs{$pid} = { args => "@args", out => $out, err => $err };
    return { pid => $pid, errfile => $err, outfile => $out };
}

sub _log_spawned {
    my ($pid, $st) = @_;
    my $k = delete $kgxs{$pid};
    return unless ref $k;
    _log_output("kgx-run $k->{args} (pid $pid, " . (defined $st ? "status $st" : 'still running') . ')', $k->{out}, $k->{err});
}

# SIGTERM (or $sig), wait up to $grace seconds; returns the exit status or undef
sub stop_kgx {
    my ($k, $sig, $grace) = @_;
    my $st = _kill_wait($k->{pid}, $sig // 'TERM', $grace // 15);
    _log_spawned($k->{pid}, $st);
    return $st;
}

END {
    my $keep_status = $?;
    if ($$ == $CREATOR) {
        for my $pid (keys %kgxs) { kill 'KILL', $pid; waitpid($pid, 0); _log_spawned($pid, undef) }
        for my $f (values %fakes) { kill 'TERM', $f->{pid} }
        for my $f (values %fakes) { wait_pid($f->{pid}, 3) // do { kill 'KILL', $f->{pid}; waitpid($f->{pid}, 0) };
                                    _log_output("fake-llama $f->{url} (pid $f->{pid})", $f->{log}, $f->{errlog}) }
        if (@dbs && !($ENV{KGX_KEEP_DB} // '')) {
            for my $db (@dbs) {
                my ($ok, undef, $e) = eval { psql_ok(admin_dsn(), qq{DROP DATABASE IF EXISTS "$db" WITH (FORCE)}) };
                print STDERR "# KgxTest: could not drop $db: " . ($e // $@) . "\n" unless $ok;
            }
        } elsif (@dbs) {
            print STDERR "# KgxTest: KGX_KEEP_DB=1, kept: @dbs\n";
        }
    }
    $? = $keep_status;
}

1;
