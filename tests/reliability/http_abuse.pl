#!/usr/bin/perl
# Status endpoint abuse: --http with KGX_API_KEY while a backfill runs. 60 slow clients (one byte per
# second, reconnecting when dropped), requests without / with a wrong key, oversized heads, garbage
# request lines, a steady stream of good requests. Extraction must finish on time (vs the same
# backfill without abuse) and exactly; good requests must be answered; bad ones refused.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use IO::Socket::INET;
use Time::HiRes qw(sleep);
use List::Util qw(max sum);
use POSIX ();

my $T = quick() ? 1 : trials(3);
my $N = quick() ? 150 : 400;
my $SLOW = 60;
my $KEY = 'rel-secret-key';
my $ref = clean_ref($N);

sub free_port { my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die; my $p = $s->sockport; close $s; $p }

sub raw {   # one request on a fresh connection; returns the status code or a word
    my ($port, $req, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 2) or return 'noconnect';
    local $SIG{PIPE} = 'IGNORE';
    print $s $req;
    my $buf = '';
    my $rin = ''; vec($rin, fileno($s), 1) = 1;
    my $deadline = now() + ($timeout // 5);
    while (now() < $deadline) {
        my $r = select(my $rout = $rin, undef, undef, 0.1);
        next unless $r > 0;
        my $n = sysread($s, my $b, 65536);
        last unless $n;
        $buf .= $b;
        last if $buf =~ /\r\n\r\n/ && $buf =~ /^HTTP\/1\.\d (\d+)/;
    }
    close $s;
    return $buf =~ /^HTTP\/1\.\d (\d+)/ ? $1 : ($buf eq '' ? 'closed' : 'garbage');
}

sub slowloris {   # child: keep $SLOW connections open, one byte per second each
    my ($port, $secs) = @_;
    my $pid = fork // die;
    return $pid if $pid;
    $SIG{PIPE} = 'IGNORE';
    my $req = "GET /kg-extract/status HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\n" . ('X-Pad: ' . ('p' x 50) . "\r\n") x 40 . "\r\n";
    my @c;
    my $end = now() + $secs;
    while (now() < $end) {
        for my $i (0 .. $SLOW - 1) {
            if (!$c[$i] || !$c[$i]{s}->connected) {
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1) or next;
                $c[$i] = { s => $s, off => 0 };
            }
            my $ch = substr($req, $c[$i]{off}++ % length($req), 1);
            if (!defined syswrite($c[$i]{s}, $ch)) { close $c[$i]{s}; $c[$i] = undef }
        }
        sleep 1;
    }
    POSIX::_exit(0);
}

my ($pass, $lost, $dups, @notes, @ratio, %codes) = (0, 0, 0);
for my $t (1 .. $T) {
    my %secs;
    for my $abuse (0, 1) {
        my $dsn = rel_db('http', $N);
        my $f = start_fake('--latency-ms', 100);
        my $port = free_port();
        my $t0 = now();
        my $kg = spawn_kgx({ env => kgx_env(KGX_API_KEY => $KEY) }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill',
                           '--http', "127.0.0.1:$port", '--progress-interval', 5);
        wait_until(10, sub { raw($port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1) =~ /^\d+$/ }, 0.05);
        my ($lpid, @good, @bad, $iter);
        if ($abuse) {
            $lpid = slowloris($port, 120);
            sleep 1;
        }
        my $st;
        while (!defined($st = wait_pid($kg->{pid}, 0.01)) && now() - $t0 < 240) {
            my $a = now();
            my $g = raw($port, "GET /kg-extract/status HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\n\r\n", 3);
            push @good, [$g, now() - $a] if $g ne 'noconnect' || !defined wait_pid($kg->{pid}, 0);
            next unless $abuse && ++$iter % 3 == 0;
            push @bad, ['nokey', raw($port, "GET /kg-extract/status HTTP/1.1\r\nHost: x\r\n\r\n", 2)];
            push @bad, ['wrongkey', raw($port, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-API-Key: nope\r\n\r\n", 2)];
            push @bad, ['bighead', raw($port, "GET /kg-extract/status HTTP/1.1\r\nHost: x\r\nX-API-Key: $KEY\r\nX-Big: " . ('b' x 65536) . "\r\n\r\n", 2)];
            push @bad, ['garbage', raw($port, "\x00\xff\x13GARBAGE / / / HTTP/9\r\n\r\n", 2)];
            push @bad, ['noline', raw($port, "\r\n\r\n\r\n", 6)];
            sleep 0.2;
        }
        $st //= stop_kgx($kg, 'KILL', 1);
        my $secs = now() - $t0;
        if ($lpid) { kill 'KILL', $lpid; waitpid($lpid, 0) }
        stop_fake($f);
        $secs{$abuse} = $secs;
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, 'exit ' . ($st >> 8) if $st != 0;
        # requests made while kgx was exiting may find nothing listening: only count answered ones
        my @gans = grep { $_->[0] =~ /^\d+$/ } @good;
        my @gbad = grep { $_->[0] ne '200' } @gans;
        push @d, scalar(@gbad) . ' of ' . scalar(@gans) . ' good requests not 200 (' . join(',', map { $_->[0] } @gbad[0 .. ($#gbad < 5 ? $#gbad : 5)]) . ')' if @gbad;
        push @d, 'no good request answered' unless @gans;
        my $slowest = max(map { $_->[1] } @gans) // 0;
        for my $b (@bad) {
            $codes{$b->[0]}{$b->[1]}++;
            my $okc = { nokey => qr/^401$/, wrongkey => qr/^401$/, bighead => qr/^(431|400|closed)$/,
                        garbage => qr/^(400|closed)$/, noline => qr/^(400|closed|408)$/ }->{$b->[0]};
            push @d, "$b->[0] answered $b->[1]" if $b->[1] !~ $okc && $b->[1] ne 'noconnect';
        }
        my %seen; @d = grep { !$seen{$_}++ } @d;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        if ($abuse) {
            my $allowed = $secs{0} * 1.5 + 2;
            push @d, sprintf('backfill took %.1fs under abuse vs %.1fs (allowed %.1f)', $secs, $secs{0}, $allowed) if $secs > $allowed;
            push @ratio, sprintf('%.1f/%.1fs, slowest good answer %.2fs', $secs, $secs{0}, $slowest);
            ok(!@d, sprintf('http abuse trial %d: %.1fs vs %.1fs, %d good answered (slowest %.2fs), %d bad requests', $t, $secs, $secs{0}, scalar(@gans), $slowest, scalar(@bad)))
                or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -1500));
            $pass++ unless @d;
            push @notes, "t$t: @d" if @d;
        } elsif (@d) {
            push @notes, "t$t baseline: @d";
        }
    }
}
my $cd = join(', ', map { my $k = $_; "$k=" . join('/', map { "$_ x$codes{$k}{$_}" } sort keys %{ $codes{$k} }) } sort keys %codes);
diag("bad request answers: $cd");
record(scenario => 'status endpoint abuse', trials => $T, passes => $pass, lost => $lost, dups => $dups, recover_s => '-',
       note => sprintf('%d slow clients (1 byte/s) + no/wrong key, 64 KiB head, garbage lines during a %d-drawer backfill; time abused/clean %s; answers %s%s',
                       $SLOW, $N, join('; ', @ratio), $cd, @notes ? '; ' . join(' | ', @notes) : ''));
done_testing();
