#!/usr/bin/perl
# Memory safety: the daemon under valgrind memcheck for a small backfill (zero errors, with faults
# injected so the retry paths run too), and the libFuzzer targets (tests/fuzz/run.sh) for a bounded
# time. (The integration suite under ASan/UBSan is `make test`'s default; scripts/reliability reports it
# when REL_WITH_TESTS=1.)
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;

my $N = quick() ? 20 : 60;
my $root = kgx_root();
my $bin = "$root/build/bin/kgx-run";
my $ref = clean_ref($N);

if (system('command -v valgrind >/dev/null 2>&1') == 0) {
    my ($pass, @notes) = (0);
    my $T = quick() ? 1 : 2;
    for my $t (1 .. $T) {
        my $dsn = rel_db('vg', $N);
        # retry paths too
        my $f = start_fake((map { ('--fault', "$_:0.3:1") } qw(500 reset malformed empty)), '--seed', $t);
        my $t0 = now();
        # run_kgx execs KGX_BIN directly: wrap valgrind by hand
        my $log = "/tmp/rel-vg-$$-$t.log";
        my $cmd = join ' ', map { quotemeta } ('valgrind', '--error-exitcode=9', '--leak-check=full', '--errors-for-leak-kinds=definite',
                  "--log-file=$log", $bin, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill', '--progress-interval', 5);
        my $rc = system("KGX_RETRY_BASE_MS=20 timeout 600 $cmd >/dev/null 2>&1") >> 8;
        my $secs = now() - $t0;
        stop_fake($f);
        my $vg = read_file($log) // '';
        unlink $log;
        my ($errs) = $vg =~ /ERROR SUMMARY: (\d+) errors/;
        my ($def) = $vg =~ /definitely lost: ([\d,]+) bytes/;
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "valgrind exit $rc" if $rc != 0;
        push @d, 'ERROR SUMMARY ' . ($errs // 'missing') if !defined $errs || $errs != 0;
        ok(!@d, sprintf('valgrind memcheck backfill trial %d: %s errors, definitely lost %s bytes, %.0fs', $t, $errs // '?', $def // '0', $secs))
            or diag(join("\n", @d), "\n", substr($vg, 0, 4000));
        $pass++ unless @d;
        push @notes, sprintf('t%d: %s errors, definitely lost %s B, %.0fs%s', $t, $errs // '?', $def // '0', $secs, @d ? " (@d)" : '');
    }
    record(scenario => 'valgrind memcheck backfill', trials => $T, passes => $pass, lost => 0, dups => 0, recover_s => '-',
           note => "$N drawers, 500/reset/malformed/empty faults on 30 % of first attempts, --leak-check=full --error-exitcode=9; " . join(' | ', @notes));
} else {
    record(scenario => 'valgrind memcheck backfill', trials => 0, passes => 0, note => 'NOT RUN: valgrind not installed');
    fail('valgrind not installed');
}

{
    my $secs = $ENV{REL_FUZZ_SECONDS} // (quick() ? 5 : 60);
    my $out = `cd $root && FUZZ_SECONDS=$secs sh tests/fuzz/run.sh 2>&1`;
    my $rc = $? >> 8;
    my @runs = $out =~ /(Done \d+ runs in \d+ second\(s\))/g;
    ok($rc == 0, "fuzz targets, $secs s each: exit $rc") or diag(substr($out, -3000));
    record(scenario => 'fuzz targets (httpd, listen)', trials => 1, passes => $rc == 0 ? 1 : 0, lost => 0, dups => 0, recover_s => '-',
           note => "tests/fuzz/run.sh, FUZZ_SECONDS=$secs per target: " . (@runs ? join('; ', @runs) : 'no run summary') . ($rc ? " EXIT $rc" : ''));
}
done_testing();
