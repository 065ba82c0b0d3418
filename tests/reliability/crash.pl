#!/usr/bin/perl
# Crash points: SIGTERM at random moments (exit 0 within 10 s, none of its rows left claimed), and
# SIGKILL at random moments followed by a restart with --lease-seconds 2 (final graph identical to a
# clean run, no duplicate vertex or edge).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use Time::HiRes qw(sleep);
use List::Util qw(max sum);

my $N = quick() ? 120 : 400;
my $K = $ENV{REL_CRASHES} // (quick() ? 3 : max(20, int(20 * trials(3) / 3)));   # kill moments per signal
my $PER_DB = 5;
my $ref = clean_ref($N);
srand($ENV{REL_SEED} // time);

for my $sig (qw(TERM KILL)) {
    my ($pass, $lost, $dups, @rec, @notes) = (0, 0, 0);
    my $done = 0;
    while ($done < $K) {
        my $dsn = rel_db("crash_" . lc $sig, $N);
        # alternate fast answers and slow ones (in-flight requests to cancel at SIGTERM)
        my $lat = (int($done / $PER_DB) % 2) ? 1500 : 150;
        my $f = start_fake('--latency-ms', $lat);
        my $round_ok = 1;
        for my $k (1 .. $PER_DB) {
            last if $done >= $K;
            $done++;
            my $wid = "rel-$sig-$done";
            my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill',
                               '--lease-seconds', 2, '--worker-id', $wid, '--progress-interval', 5);
            my $at = 0.2 + rand(2.3);
            sleep $at;
            my $t0 = now();
            my $st = stop_kgx($kg, $sig, 15);
            my $took = now() - $t0;
            if ($sig eq 'TERM') {
                my $held = count0($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE worker_id = '$wid' AND completed_at IS NULL AND error IS NULL AND started_at IS NOT NULL");
                my $rc = defined $st ? ($st & 127 ? 'signal ' . ($st & 127) : $st >> 8) : 'timeout';
                my $good = defined $st && $st == 0 && $took < 10 && $held == 0;
                push @rec, $took;
                ok($good, sprintf('SIGTERM at %.2fs: exit %s in %.2fs, %d rows left claimed', $at, $rc, $took, $held))
                    or diag(substr(read_file($kg->{errfile}) // '', -1500));
                $pass++ if $good;
                push @notes, sprintf('kill %d: exit %s in %.1fs, %d held', $done, $rc, $took, $held) unless $good;
            }
        }
        my $left = psql($dsn, "SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NULL");
        # finish: a restart with a short lease drains everything
        fake_config($f, { latency_ms => 0 });
        my $t0 = now();
        my $r = backfill($dsn, $f, '--lease-seconds', 2);
        my $rec = now() - $t0;
        stop_fake($f);
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "final run exit $r->{rc}" if $r->{rc} != 0;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        ok(!@d, "SIG$sig round ending at kill $done: final state identical to a clean run (restart took " . sprintf('%.1f', $rec) . "s, $left left)")
            or diag(join("\n", @d));
        if ($sig eq 'KILL') {
            my $n = $done % $PER_DB || $PER_DB;
            $pass += $n if !@d;
            push @rec, $rec;
        } elsif (@d) {
            $pass -= 0;   # TERM trials already counted; a bad final state is noted
            push @notes, "round ending $done: @d";
        }
        push @notes, "round ending $done: @d" if @d && $sig eq 'KILL';
    }
    my $what = $sig eq 'TERM' ? 'exit time' : 'restart-to-drained';
    record(scenario => "crash SIG$sig", trials => $K, passes => $pass, lost => $lost, dups => $dups,
           recover_s => sprintf('%.1f', max(@rec)),
           note => sprintf('%d random moments in 0.2-2.5 s, %d drawers/db, fake latency 150/1500 ms; recover = max %s (mean %.1fs)%s',
                           $K, $N, $what, sum(@rec) / @rec, @notes ? '; ' . join(' | ', @notes) : ''));
}
done_testing();
