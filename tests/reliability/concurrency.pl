#!/usr/bin/perl
# Concurrency: four kgx processes started together on one queue of 4 × REL_CONC_PER drawers (default
# 2,000 each): every drawer extracted exactly once (the fake's max_requests_per_text == 1), no
# duplicate vertex or edge, graph identical to a clean run. And a drawer updated and re-queued (the
# seed's enqueue upsert) while its request is in flight: the final facts are those of the new text.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use Time::HiRes qw(sleep);
use List::Util qw(max sum);

my $PER = $ENV{REL_CONC_PER} // (quick() ? 100 : 2000);
my $P = 4;
my $N = $P * $PER;
my $T = quick() ? 1 : trials(3);

{
    my $ref = clean_ref($N);
    my ($pass, $lost, $dups, @secs, @notes) = (0, 0, 0);
    for my $t (1 .. $T) {
        my $dsn = rel_db('conc', $N);
        my $f = start_fake('--parallel', 8);
        my $t0 = now();
        my @k = map { spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill',
                                '--worker-id', "rel-conc-$_", '--progress-interval', 10) } 1 .. $P;
        my @rc = map { my $s = wait_pid($_->{pid}, 600) // stop_kgx($_, 'KILL', 1); defined $s ? $s >> 8 : -1 } @k;
        my $secs = now() - $t0;
        my $st = fake_stats($f);
        stop_fake($f);
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "exit codes @rc" if grep { $_ != 0 } @rc;
        push @d, "max_requests_per_text $st->{max_requests_per_text} (texts over once: $st->{texts_over_once})" if $st->{max_requests_per_text} != 1;
        push @d, "extraction requests $st->{extraction_requests} for $N drawers" if $st->{extraction_requests} != $N;
        my %by = map { /\|(\S+)$/ ? ($1 => 1) : () } psql($dsn, "SELECT drawer_id || '|' || worker_id FROM mempalace_kg_extraction_queue");
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e} + ($st->{texts_over_once} // 0);
        push @secs, $secs;
        ok(!@d, sprintf('%d processes x %d drawers, trial %d: %.1fs, %d workers wrote, max requests per text %d', $P, $PER, $t, $secs, scalar(keys %by), $st->{max_requests_per_text}))
            or diag(join("\n", @d), "\n", map { substr(read_file($_->{errfile}) // '', -800) } @k);
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => "concurrency ${P} procs x $PER drawers", trials => $T, passes => $pass, lost => $lost, dups => $dups,
           recover_s => '-', note => sprintf('all started with --backfill at once; run %.1f-%.1fs (clean single process %.1fs); dups counts texts extracted twice too%s',
                                            (sort { $a <=> $b } @secs)[0], max(@secs), $ref->{secs}, @notes ? '; ' . join(' | ', @notes) : ''));
}

{
    my $T2 = quick() ? 1 : trials(3);
    my ($pass, $lost, @notes) = (0, 0);
    my $old = 'Alice works on Apollo. Alice uses Hammer.';
    my $new = 'Alice works on Zeus. Bob owns Hammer.';
    for my $t (1 .. $T2) {
        my $dsn = rel_db('requeue', 20, extra => [['dz', $old]]);
        my $f = start_fake('--latency-ms', quick() ? 2500 : 3000);   # long enough for the re-queue to land while it runs, even on a loaded machine
        my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill', '--progress-interval', 5);
        my $infl = wait_until(20, sub {
            my $r = HTTP::Tiny->new->get("$f->{url}/fake/stats?texts=1");
            my $s = eval { json_decode($r->{content}) } // {};
            return ($s->{by_text} // {})->{$old};
        }, 0.05);
        sleep 0.2;
        # the seed's update + enqueue, while the old text's request is in flight
        psql($dsn, "UPDATE mempalace_drawers SET document = '$new' WHERE id = 'dz';"
                 . "INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) VALUES ('dz', 'wing', 'room')"
                 . " ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL, error = NULL, worker_id = NULL");
        my $st = wait_pid($kg->{pid}, 120) // stop_kgx($kg, 'KILL', 1);
        my $rc = defined $st ? $st >> 8 : -1;
        my $s = eval { json_decode(HTTP::Tiny->new->get("$f->{url}/fake/stats?texts=1")->{content}) } // {};
        stop_fake($f);
        my $c = canon($dsn);
        my $facts = $c->{facts}{dz} // '';
        my $want = 'alice>works_on>zeus>0.9;bob>owns>hammer>0.9';
        my @d;
        push @d, 'the old text was never in flight' unless $infl;
        push @d, "exit $rc" if $rc != 0;
        push @d, "dz is $c->{queue}{dz}" if ($c->{queue}{dz} // '') ne 'completed';
        push @d, "dz facts '$facts', want '$want'" if $facts ne $want;
        push @d, 'the new text was never requested' unless ($s->{by_text} // {})->{$new};
        my @stale = grep { /apollo/ } @{ $c->{edges} };
        push @d, "old facts still in the graph: @stale" if @stale;
        $lost++ if @d;
        ok(!@d, "re-queue during extraction, trial $t: final facts are the new text's") or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -2000));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => 're-queue while in flight', trials => $T2, passes => $pass, lost => $lost, dups => 0, recover_s => '-',
           note => 'drawer text updated + seed enqueue upsert while its 2.5–3 s request runs; lost = trials whose final facts were not the new text\'s'
                   . (@notes ? '; ' . join(' | ', @notes) : ''));
}
done_testing();
