package KgxQuiet;
# Quiet tests: prove shows a test's TAP lines and its failures, nothing else.
#
# Loaded first by tests/tap-exec (perl -MKgxQuiet) for every Perl test, and by tests/lib/KgxTest.pm.
# From then on the test's standard error — Perl warnings, and whatever child processes (daemons,
# fakes, psql, scripts) print there — goes to $KGX_TEST_LOGDIR/<test>.log (scripts/run-tests sets
# build/test-logs; else a temp file). Test::More's failure messages and diag() still go to the
# terminal. When the test fails (a failed assertion, or a non-zero exit), the log's last
# KGX_TEST_LOG_LINES lines (default 150) are printed after the failures, with the log's path.
# KGX_TEST_LOUD=1: nothing is redirected.
use strict;
use warnings;
use POSIX ();
use File::Temp ();
use Test::Builder ();

my ($LOG, $TERM_ERR, $TMP);
my $CREATOR = $$;

sub log_path { $LOG }

sub _setup {
    return if $ENV{KGX_TEST_LOUD};
    my $dir = $ENV{KGX_TEST_LOGDIR};
    if (!defined $dir || !length $dir) {
        $TMP = File::Temp->newdir('kgxlog-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        $dir = "$TMP";
    }
    eval { require File::Path; File::Path::make_path($dir) };
    my $name = $0;
    $name =~ s{^\./}{};
    my $root = $ENV{KGX_ROOT};
    $name =~ s{^\Q$root\E/}{} if defined $root && length $root;
    $name =~ s{[^A-Za-z0-9_.-]+}{_}g;
    my $log = "$dir/$name.log";
    open(my $saved, '>&', \*STDERR) or return;       # the terminal (prove's stderr)
    open(my $lf, '>', $log) or return;
    close $lf;
    my $tb = Test::Builder->new;
    $tb->failure_output($saved);
    $tb->todo_output($saved);
    open(STDERR, '>>', $log) or return;
    STDERR->autoflush(1);
    ($LOG, $TERM_ERR) = ($log, $saved);
    printf STDERR "=== %s: %s (pid %d)\n", POSIX::strftime('%FT%TZ', gmtime), $0, $$;
}
_setup();

END {
    my $status = $?;
    if ($LOG && $TERM_ERR && $$ == $CREATOR) {
        my $tb = Test::Builder->new;
        if ($status != 0 || !$tb->is_passing) {
            my $n = $ENV{KGX_TEST_LOG_LINES} // 150;
            open(my $fh, '<', $LOG);
            my @lines = $fh ? <$fh> : ();
            chomp @lines;
            my $from = @lines > $n ? @lines - $n : 0;
            print $TERM_ERR "# ---- $LOG" . ($from ? " (last $n of " . scalar(@lines) . " lines)" : '') . "\n";
            print $TERM_ERR "#  $_\n" for @lines[$from .. $#lines];
            print $TERM_ERR "# ---- end of $LOG\n";
        }
    }
    $? = $status;
}

1;
