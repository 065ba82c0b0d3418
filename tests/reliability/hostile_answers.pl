#!/usr/bin/perl
# Hostile answers (tests/reliability/hostile-llm.pl): 100 MB bodies (with and without a length),
# 10,000-deep nesting (content and body), 10,000 triples, invalid UTF-8, wrong types, a non-string
# content. kgx's RSS is sampled all along: memory stays bounded; each hostile drawer ends parked with a
# reason (or completed with sane, capped facts); the normal drawers beside them are all completed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use Time::HiRes qw(sleep);
use List::Util qw(max);

my $T = quick() ? 1 : trials(3);
my $RSS_LIMIT_MB = $ENV{REL_RSS_LIMIT_MB} // 256;
my @kinds = qw(big bigchunk deep deepbody many utf8 types content);
my $NN = 40;

sub start_hostile {
    my $log = "/tmp/rel-hostile-$$.log";
    my $pid = open(my $fh, '-|', $^X, "$FindBin::Bin/hostile-llm.pl") or die "hostile-llm: $!";
    my $line = <$fh>;
    my ($port) = ($line // '') =~ /:(\d+)$/ or die "hostile-llm did not start";
    return { pid => $pid, fh => $fh, url => "http://127.0.0.1:$port" };
}
sub stop_hostile { my $h = shift; kill 'TERM', $h->{pid}; kill 'KILL', $h->{pid}; close $h->{fh} }

my ($pass, $lost, $maxrss, @notes, %outcome) = (0, 0, 0);
for my $t (1 .. $T) {
    my $dsn = rel_db('hostile', 0, extra => [(map { ["n$_", "NORMAL-$_ text."] } 1 .. $NN), map { ["h_$_", "HOSTILE-$_ text."] } @kinds]);
    my $h = start_hostile();
    my $t0 = now();
    my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $h->{url}, '--backfill', '--max-attempts', 2,
                       '--request-timeout', 60, '--progress-interval', 5);
    my ($rss, $st) = (0);
    while (!defined($st = wait_pid($kg->{pid}, 0.05)) && now() - $t0 < 300) { $rss = max($rss, rss_kb($kg->{pid})) }
    $st //= stop_kgx($kg, 'KILL', 1);
    my $secs = now() - $t0;
    stop_hostile($h);
    my $rc = $st >> 8;
    my $c = canon($dsn);
    my @d;
    push @d, "exit $rc" . ($st & 127 ? ' signal ' . ($st & 127) : '') if $st != 0;
    push @d, sprintf('max RSS %.0f MB over %d MB', $rss / 1024, $RSS_LIMIT_MB) if $rss / 1024 > $RSS_LIMIT_MB;
    my $bad_normal = grep { ($c->{queue}{"n$_"} // '') ne 'completed' || ($c->{facts}{"n$_"} // '') ne "normal$_>uses>thing>0.9" } 1 .. $NN;
    push @d, "$bad_normal normal drawers not completed right" if $bad_normal;
    for my $k (@kinds) {
        my $row = $c->{rows}{"h_$k"} // { state => 'absent', error => '' };
        my @f = split /;/, ($c->{facts}{"h_$k"} // '');
        my $o;
        if ($row->{state} eq 'parked' && length $row->{error}) { $o = 'parked: ' . substr($row->{error}, 0, 90) }
        elsif ($row->{state} eq 'completed' && @f <= 10) { $o = 'completed with ' . scalar(@f) . ' facts' }
        else { $o = "BAD $row->{state} (" . scalar(@f) . " facts) $row->{error}"; push @d, "h_$k: $o" }
        $outcome{$k} = $o;
    }
    $lost += $bad_normal;
    $maxrss = max($maxrss, $rss);
    ok(!@d, sprintf('hostile answers trial %d: %.1fs, max RSS %.0f MB', $t, $secs, $rss / 1024))
        or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -2500));
    $pass++ unless @d;
    push @notes, "t$t: @d" if @d;
}
diag("outcome $_: $outcome{$_}") for @kinds;
record(scenario => 'hostile answers', trials => $T, passes => $pass, lost => $lost, dups => 0, recover_s => '-',
       note => sprintf('max RSS %.0f MB (limit %d); %s%s', $maxrss / 1024, $RSS_LIMIT_MB,
                       join('; ', map { "$_ -> $outcome{$_}" } @kinds), @notes ? '; ' . join(' | ', @notes) : ''));
done_testing();
