#!/usr/bin/perl
# Fault matrix: every fault kind of the fake alone on 30 % of first attempts (KIND:0.3:1), then mixed,
# then all kinds at once; final graph and every drawer's facts identical to a clean run. Then permanent
# failures (500 on every request of ~10 % of the texts): parked with reason and attempt count, the rest exact.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;

my $N = quick() ? 60 : 200;
my $T = trials(3);
# prosecut, limitcut, ctxcut, kv500: answers that are not whole (cut JSON after prose, a cut at
# n_predict, a full context) and the unified-KV capacity 500; "answers" = those four plus mix, at once
my @kinds = quick() ? qw(mix) : qw(500 503 hang reset malformed truncated empty fence prose pad mix all all-but-truncated
                                   prosecut limitcut ctxcut kv500 answers);
@kinds = split /,/, $ENV{REL_FAULTS} if $ENV{REL_FAULTS};
my $ref = clean_ref($N);

for my $kind (@kinds) {
    my @faults = $kind eq 'all' ? map { "--fault=$_:0.3:1" } qw(500 503 hang reset malformed truncated empty fence prose pad)
               : $kind eq 'all-but-truncated' ? map { "--fault=$_:0.3:1" } qw(500 503 hang reset malformed empty fence prose pad)
               : $kind eq 'answers' ? map { "--fault=$_:0.3:1" } qw(prosecut limitcut ctxcut kv500 mix)
               : ("--fault=$kind:0.3:1");
    my ($pass, $lost, $dups, $secs, @notes) = (0, 0, 0, 0);
    for my $t (1 .. $T) {
        (my $tag = $kind) =~ s/\W/_/g;
        my $dsn = rel_db("f_$tag", $N);
        my $f = start_fake('--hang-ms', 300, '--seed', $t, map { split /=/, $_, 2 } @faults);
        my $r = backfill($dsn, $f, '--request-timeout', 5);
        my $st = fake_stats($f);
        stop_fake($f);
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "exit $r->{rc}" if $r->{rc} != 0;
        my $nf = 0; $nf += $_ for values %{ $st->{faults} // {} };
        push @d, "no fault fired" if !$nf;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        $secs += $r->{secs};
        ok(!@d, "fault $kind trial $t ($nf faults injected, $r->{secs}s)") or diag(join("\n", @d), "\n", substr($r->{err}, -1500));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => "fault $kind:0.3:1", trials => $T, passes => $pass, lost => $lost, dups => $dups,
           recover_s => sprintf('%.1f', $secs / $T), note => sprintf('backfill of %d drawers, mean %.1fs (clean %.1fs)%s', $N, $secs / $T, $ref->{secs}, @notes ? '; ' . join(' | ', @notes) : ''));
}

# permanent failures
unless ($ENV{REL_FAULTS}) {
    my ($pass, $lost, $dups, @notes) = (0, 0, 0);
    my $Tp = quick() ? 1 : $T;
    for my $t (1 .. $Tp) {
        my $dsn = rel_db('f_perm', $N);
        my $f = start_fake('--seed', $t, '--fault', '500:0.1:1000');
        my $r = backfill($dsn, $f, '--max-attempts', 3);
        my $st = fake_stats($f);
        my $by = (eval { json_decode(HTTP::Tiny->new->get("$f->{url}/fake/stats?texts=1")->{content}) } // {})->{by_text} // {};
        stop_fake($f);
        my $c = canon($dsn);
        my @parked = sort grep { $c->{queue}{$_} eq 'parked' } keys %{ $c->{queue} };
        my @d;
        push @d, "exit $r->{rc}" if $r->{rc} != 0;
        push @d, "no drawer parked" unless @parked;
        push @d, "too many parked: " . scalar(@parked) if @parked > $N * 0.3;
        for my $id (@parked) {
            my $row = $c->{rows}{$id};
            push @d, "$id parked with attempts=$row->{attempts}" if $row->{attempts} != 3;
            push @d, "$id parked without a 500 reason: '$row->{error}'" unless $row->{error} =~ /500/;
        }
        # texts requested more than max-attempts times = a retry beyond parking
        my $over = grep { $_ > 3 } values %$by;
        push @d, "$over texts requested more than 3 times" if $over;
        my $sub = clean_ref($N, exclude => \@parked);
        my %pk = map { $_ => 1 } @parked;
        push @d, compare($ref, $c, parked => \%pk);
        # the graph equals a clean run of the drawers that were not parked
        push @d, 'edges differ from a clean run without the parked drawers' if join("\n", @{ $sub->{edges} }) ne join("\n", @{ $c->{edges} });
        $lost += total_lost($ref, $c, parked => \%pk);
        $dups += $c->{dup_v} + $c->{dup_e};
        ok(!@d, "permanent 500 trial $t: " . scalar(@parked) . " parked") or diag(join("\n", @d));
        $pass++ unless @d;
        push @notes, "t$t: " . scalar(@parked) . " parked" . (@d ? " @d" : '');
    }
    record(scenario => 'fault 500 permanent (10 %)', trials => $Tp, passes => $pass, lost => $lost, dups => $dups,
           recover_s => '-', note => 'parked after --max-attempts 3 with the 500 message; ' . join(' | ', @notes));
}
done_testing();
