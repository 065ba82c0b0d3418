#!/usr/bin/perl
# LLM outage: the only endpoint down for REL_OUTAGE_S seconds (default 60; quick 5) mid-run, then back
# on the same port: no drawer parked or charged for it, work resumes by itself. And one of two
# endpoints (--endpoint URL1,URL2) down for good: the other carries the load.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use Time::HiRes qw(sleep);
use List::Util qw(max sum);

my $N = quick() ? 120 : 400;
my $OUT = $ENV{REL_OUTAGE_S} // (quick() ? 5 : 60);
my $T = quick() ? 1 : (trials(3) < 2 ? trials(3) : 2);
my $ref = clean_ref($N);
my $done_sql = 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL';

{
    my ($pass, $lost, $dups, @rec, @notes) = (0, 0, 0);
    for my $t (1 .. $T) {
        my $dsn = rel_db('outage', $N);
        my $f = start_fake('--latency-ms', 60);
        my $port = $f->{port};
        my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill', '--progress-interval', 5);
        sleep 1.5;
        stop_fake($f);
        my $at_down = count0($dsn, $done_sql);
        sleep $OUT;
        my $before = count0($dsn, $done_sql);
        my $t_up = now();
        $f = start_fake_at($port, '--latency-ms', 60);
        my $moved = wait_until(120, sub { count0($dsn, $done_sql) > $before }, 0.1);
        my $rec = now() - $t_up;
        my $st = wait_pid($kg->{pid}, 180) // stop_kgx($kg, 'KILL', 1);
        my $rc = defined $st ? $st >> 8 : -1;
        stop_fake($f);
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "exit $rc" if $rc != 0;
        push @d, 'no progress after the endpoint came back' unless $moved;
        push @d, "the queue drained before the outage ($at_down done)" if $at_down >= $N;
        my $charged = grep { $_->{attempts} > 0 } values %{ $c->{rows} };
        push @d, "$charged drawers charged an attempt for the outage" if $charged;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        push @rec, $rec;
        ok(!@d, sprintf('outage %ds trial %d: %d done when down, %d during, resumed %.1fs after the endpoint came back', $OUT, $t, $at_down, $before - $at_down, $rec))
            or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -2000));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => "llm outage ${OUT}s (all endpoints)", trials => $T, passes => $pass, lost => $lost, dups => $dups,
           recover_s => sprintf('%.1f', max(@rec)),
           note => 'fake killed 1.5 s in, restarted on the same port; recover = endpoint back -> next drawer completed (max); no attempt charged'
                   . (@notes ? '; ' . join(' | ', @notes) : ''));
}

{
    my $T2 = quick() ? 1 : trials(3);
    my ($pass, $lost, $dups, @secs, @notes) = (0, 0, 0);
    for my $t (1 .. $T2) {
        my $dsn = rel_db('outage2', $N);
        my $f1 = start_fake('--latency-ms', 150);
        my $f2 = start_fake('--latency-ms', 150);
        my $t0 = now();
        my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', "$f1->{url},$f2->{url}", '--backfill', '--progress-interval', 5);
        sleep 0.8;
        my $s1 = fake_stats($f1)->{extraction_requests};
        stop_fake($f1);
        my $st = wait_pid($kg->{pid}, 180) // stop_kgx($kg, 'KILL', 1);
        my $secs = now() - $t0;
        my $rc = defined $st ? $st >> 8 : -1;
        my $s2 = fake_stats($f2)->{extraction_requests};
        stop_fake($f2);
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "exit $rc" if $rc != 0;
        push @d, "endpoint 1 served nothing before it went down" unless $s1;
        push @d, "endpoint 2 served only $s2" unless $s2 >= $N - $s1;
        my $charged = grep { $_->{attempts} > 0 } values %{ $c->{rows} };
        push @d, "$charged drawers charged an attempt" if $charged;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        push @secs, $secs;
        ok(!@d, sprintf('one of two endpoints down, trial %d: ep1 %d, ep2 %d requests, %.1fs', $t, $s1, $s2, $secs))
            or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -2000));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => 'llm one of two endpoints down', trials => $T2, passes => $pass, lost => $lost, dups => $dups,
           recover_s => sprintf('%.1f', max(@secs)),
           note => 'first endpoint killed 0.8 s in for good (150 ms answers); recover = whole run (max)' . (@notes ? '; ' . join(' | ', @notes) : ''));
}
done_testing();
