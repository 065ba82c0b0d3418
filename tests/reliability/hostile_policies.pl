#!/usr/bin/perl
# Hostile policies (tests/reliability/policies/hostile.lua): hooks that raise, loop forever, return
# enormous values or the wrong types, for marked drawers. Each of those drawers must end parked with a
# message; the normal drawers beside them come out exactly as in a clean run with the default policy,
# at the same pace (allowing for the watchdog's 2 s per runaway hook call, which blocks the one loop).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use List::Util qw(max sum);
use File::Temp ();

my $T = quick() ? 1 : trials(3);
my $N = quick() ? 100 : 300;
my @kinds = quick() ? qw(split_raise request_loop parse_type accept_huge)
                    : qw(split_raise split_loop split_huge split_type split_mem request_raise request_loop request_huge
                         request_type parse_raise parse_huge parse_type accept_raise accept_loop accept_type accept_huge);
my $loops = grep { /loop|mem|parse_raise/ } @kinds;   # hooks that run into the 2 s watchdog
# accept returning junk drops that triple (with a reason), it does not fail the drawer: such drawers
# may end completed without facts
my %soft = map { $_ => 1 } qw(accept_type accept_huge);
# the policy finds its plugins in ../plugins: give it a directory whose plugins/ is the tree's
my $pdir = File::Temp->newdir("rel-policy-XXXXXX", TMPDIR => 1);
mkdir "$pdir/prompts";
symlink(kgx_root() . "/plugins", "$pdir/plugins") or die "symlink: $!";
# prompts/default.lua with the hostile hooks appended (they wrap the default ones)
system("sh", "-c", 'cat "$1" "$2" > "$3"', "sh", kgx_root() . "/prompts/default.lua",
       "$FindBin::Bin/policies/hostile.lua", "$pdir/prompts/hostile.lua") == 0 or die;
my $policy = "$pdir/prompts/hostile.lua";
my $ref = clean_ref($N);
my $ATT = 2;

my ($pass, $pace_pass, $lost, @notes, %outcome, @ratio) = (0, 0, 0);
for my $t (1 .. $T) {
    # baseline: the same policy, normal drawers only; then with the hostile drawers
    my ($base, $hostile);
    for my $with (0, 1) {
        my $dsn = rel_db('hpol', $N, extra => $with ? [map { ["p_$_", "POLICY-$_ Eve uses Knife."] } @kinds] : []);
        my $f = start_fake('--latency-ms', 20);
        my $r = backfill($dsn, $f, { env => { KGX_POLICY => $policy } }, '--policy', $policy, '--max-attempts', $ATT);
        stop_fake($f);
        my $c = canon($dsn);
        my @d = compare($ref, $c, parked => { map { ("p_$_" => 1) } grep { !$soft{$_} } ($with ? @kinds : ()) });
        # compare() checks p_* are parked without facts; it ignores extra rows otherwise
        push @d, "exit $r->{rc}" if $r->{rc} != 0;
        for my $k ($with ? @kinds : ()) {
            my $row = $c->{rows}{"p_$k"} // { state => 'absent', error => '', attempts => 0 };
            $outcome{$k} = "$row->{state} after $row->{attempts}: " . substr($row->{error}, 0, 100);
            push @d, "p_$k parked without a message" if $row->{state} eq 'parked' && !length $row->{error};
            push @d, "p_$k is $row->{state} with facts '" . ($c->{facts}{"p_$k"} // '') . "'"
                if $soft{$k} && !($row->{state} eq 'parked' || ($row->{state} eq 'completed' && !length($c->{facts}{"p_$k"} // '')));
        }
        $lost += total_lost($ref, $c, parked => { map { ("p_$_" => 1) } @kinds });
        push @notes, "t$t " . ($with ? 'hostile' : 'baseline') . ": @d" if @d;
        if ($with) { $hostile = [$r->{secs}, \@d, $r] } else { $base = [$r->{secs}, \@d, $r] }
    }
    # pace: the slowdown must be explained by the watchdog stalls alone (2 s each, the loop is blocked)
    my $allowed = $base->[0] * 1.5 + 2 + $loops * $ATT * 2.5;
    my @d = (@{ $base->[1] }, @{ $hostile->[1] });
    push @ratio, sprintf('%.1f/%.1fs', $hostile->[0], $base->[0]);
    ok(!@d, sprintf('hostile policies trial %d: hostile drawers failed with messages, others exact', $t))
        or diag(join("\n", @d), "\n", substr($hostile->[2]{err}, -3000));
    $pass++ unless @d;
    my $paced = $hostile->[0] <= $allowed;
    ok($paced, sprintf('pace trial %d: %.1fs with hostile drawers vs %.1fs baseline (allowed %.1f)', $t, $hostile->[0], $base->[0], $allowed));
    $pace_pass++ if $paced;
}
diag("outcome $_: $outcome{$_}") for @kinds;
record(scenario => 'hostile policies', trials => $T, passes => $pass, lost => $lost, dups => 0, recover_s => '-',
       note => sprintf('%d hostile hooks among %d drawers, --max-attempts %d; run time hostile/baseline %s (%d runaway hooks x %d attempts x 2 s watchdog allowed); %s%s',
                       scalar(@kinds), $N, $ATT, join(' ', @ratio), $loops, $ATT,
                       join('; ', map { "$_ -> $outcome{$_}" } @kinds), @notes ? '; ' . join(' | ', @notes) : ''));
record(scenario => 'hostile policies: pace', trials => $T, passes => $pace_pass, lost => 0, dups => 0, recover_s => '-',
       note => sprintf('run time with hostile drawers / without: %s. Not "unaffected": each runaway hook call (loop, memory bomb) blocks the one event loop, so every drawer, for the watchdog\'s 2 s; %d runaway hooks x %d attempts here. Pass = slowdown within base x 1.5 + 2 s + 2.5 s per runaway call',
                       join(' ', @ratio), $loops, $ATT));
done_testing();
