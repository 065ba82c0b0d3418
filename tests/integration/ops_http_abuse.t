#!/usr/bin/perl
# ops_http_abuse.t — the status endpoint stays reachable under abuse: /healthz (with the key)
# answers every check while 200 half-open unauthenticated connections are held open (half send
# nothing, half a head they never finish, with a wrong key), re-opened as soon as the server drops
# them. Twice: with the default slots (more than 200), and with the slots cut to 64 by a low
# RLIMIT_NOFILE, where the server must close idle connections to admit the monitor's.
use strict;
use warnings;
use KgxTest;
use IO::Socket::INET;
use IO::Select;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use File::Temp;

my $TMP = File::Temp->newdir('kgxabuse-XXXXXX', TMPDIR => 1, CLEANUP => 1);


my $N = 200;
my $dsn = fresh_db('httpabuse');
psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb)});
my $fake = start_fake('--parallel', 2);
my $ua = HTTP::Tiny->new(timeout => 3);
my $bin = $ENV{KGX_BIN} // kgx_root() . '/build/bin/kgx-run';

# One abuser: connects, then either says nothing or starts a head it never finishes.
sub abuser {
    my ($port, $i) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2)
        or return undef;
    if ($i % 2) {
        syswrite $s, "GET /kg-extract/status HTTP/1.1\r\nHost: x\r\nX-API-Key: wro";
    }
    return $s;
}

sub run_phase {
    my ($name, $nofile) = @_;
    my $port = free_port();
    my $base = "http://127.0.0.1:$port";
    my @cmd = ($bin, '--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "127.0.0.1:$port",
               '--poll-interval', 1, '--worker-id', "abuse-$name", '--log-level', 'info');
    @cmd = ('/bin/sh', '-c', "ulimit -n $nofile && exec \"\$0\" \"\$@\"", @cmd) if $nofile;
    my $err = "$TMP/abuse-$name.err";
    my $pid = KgxTest::_spawn(\@cmd, undef, '/dev/null', $err, { KGX_API_KEY => 'k3y' });
    my %auth = (headers => { 'X-API-Key' => 'k3y' });
    ok(wait_until(20, sub { $ua->get("$base/healthz", \%auth)->{status} == 200 }), "$name: daemon up")
        or diag(read_file($err));

    my @ab = map { abuser($port, $_) } 0 .. $N - 1;
    my $held = grep { defined } @ab;
    is($held, $N, "$name: $N half-open unauthenticated connections open");
    my ($good, $checks, $reopened, $worst) = (0, 0, 0, 0);
    my $until = time + 7;                # longer than the 2 s head deadline: abusers come back
    while (time < $until) {
        # re-open whatever the server dropped (408 or closed to make room)
        my $sel = IO::Select->new(grep { defined } @ab);
        my %ready = map { (fileno($_) => 1) } $sel->can_read(0);
        for my $i (0 .. $#ab) {
            next if defined $ab[$i] && !$ready{fileno($ab[$i])};
            close $ab[$i] if defined $ab[$i];
            $ab[$i] = abuser($port, $i);
            $reopened++;
        }
        my $t0 = time;
        my $r = $ua->get("$base/healthz", \%auth);
        my $dt = time - $t0;
        $worst = $dt if $dt > $worst;
        $checks++;
        $good++ if $r->{status} == 200 && $r->{content} eq "ok\n";
        diag("$name: /healthz $r->{status} after ${dt}s: $r->{content}") unless $r->{status} == 200;
        sleep 0.2;
    }
    is($good, $checks, "$name: /healthz answered $good of $checks checks under abuse (worst ${\ sprintf '%.3f', $worst} s)");
    cmp_ok($reopened, '>=', $N / 2, "$name: the server dropped idle abusers ($reopened re-opened)");
    my $r = $ua->get("$base/healthz");
    is($r->{status}, 401, "$name: still 401 without the key");
    close $_ for grep { defined } @ab;
    kill 'TERM', $pid;
    my $st = wait_pid($pid, 15);
    is($st, 0, "$name: clean exit") or do { kill 'KILL', $pid; waitpid($pid, 0) };
    return read_file($err) // '';
}

my $log = run_phase('default', 0);
unlike($log, qr/slots full/, 'default: 200 abusers fit the default slots');

$log = run_phase('lowfd', 320);      # 320 descriptors - 256 reserved = 64 slots
like($log, qr/httpd slots full \(64\): closed an idle connection/, 'lowfd: 64 slots, idle connections closed to admit new ones');

done_testing();
