#!/usr/bin/perl
# Database faults: every kgx backend terminated from the server side (pg_terminate_backend),
# repeatedly, mid-backfill; and the PostgreSQL server restarted (scripts/sandbox-db restart, fast
# mode) mid-backfill. kgx must reconnect and finish: nothing lost, nothing doubled.
# The restart needs REL_SANDBOX_ID (a sandbox this run owns; never a shared one).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use RelLib;
use KgxTest;
use Time::HiRes qw(sleep);
use List::Util qw(max sum);

my $N = quick() ? 120 : 400;
my $T = trials(3);
my $ref = clean_ref($N);
my $root = kgx_root();

sub scenario {
    my ($name, $trials, $fault) = @_;
    my ($pass, $lost, $dups, @secs, @notes) = (0, 0, 0);
    for my $t (1 .. $trials) {
        my $dsn = rel_db("db_$name", $N);
        my $f = start_fake('--latency-ms', 60);
        my $t0 = now();
        my $kg = spawn_kgx({ env => kgx_env() }, '--dsn', $dsn, '--endpoint', $f->{url}, '--backfill', '--progress-interval', 5);
        my $hits = 0;
        my $deadline = now() + 180;
        my $st;
        while (!defined($st = wait_pid($kg->{pid}, 0.01)) && now() < $deadline) {
            sleep 0.3 + rand(0.5);
            $hits += $fault->($dsn);
        }
        $st //= stop_kgx($kg, "KILL", 1);
        my $secs = now() - $t0;
        push @secs, $secs;
        my $rc = defined $st ? $st >> 8 : -1;
        # whatever the first process could not do, a second run finishes (a failed run is still noted)
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "kgx exit $rc" if $rc != 0;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        stop_fake($f);
        ok(!@d, sprintf('%s trial %d: %d faults, finished in %.1fs, exit %s', $name, $t, $hits, $secs, $rc))
            or diag(join("\n", @d), "\n", substr(read_file($kg->{errfile}) // '', -2000));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    return ($pass, $lost, $dups, \@secs, \@notes);
}

my $admin = admin_dsn();
{
    my ($p, $l, $d, $s, $n) = scenario('terminate', $T, sub {
        my $dsn = shift;
        my $db = ($dsn =~ m{/([^/?]+)(?:\?|$)})[0];
        my $k = psql($admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()");
        return $k > 0 ? 1 : 0;
    });
    record(scenario => 'db: pg_terminate_backend (repeated)', trials => $T, passes => $p, lost => $l, dups => $d,
           recover_s => sprintf('%.1f', max(@$s)),
           note => sprintf('all kgx backends killed every 0.3-0.8 s through the run; %d drawers at 60 ms/answer (clean %.1fs at 0 ms); recover = whole run, max%s',
                           $N, $ref->{secs}, @$n ? '; ' . join(' | ', @$n) : ''));
}

# write transactions aborted by the server: a trigger on the provenance table raises 40P01 (deadlock)
# on the first 60 rows inserted and 40001 (serialization failure) on the next 60 (sequences are not
# rolled back, so every failure is a distinct write attempt). Transient: retried, never charged.
{
    my $Tw = quick() ? 1 : $T;
    my ($pass, $lost, $dups, @secs, @notes) = (0, 0, 0);
    for my $t (1 .. $Tw) {
        my $dsn = rel_db('db_wfail', 0);
        my $f = start_fake();
        my $r0 = backfill($dsn, $f);   # no drawers: creates the schema
        psql($dsn, q{INSERT INTO public.mempalace_drawers SELECT 'd' || lpad(i::text, 5, '0'), 'wing' || (i % 3), 'room', }
                 . RelLib::gen_text_sql() . qq{, '{}'::jsonb FROM generate_series(1, $N) i;
            CREATE SEQUENCE rel_wfail;
            CREATE FUNCTION rel_wfail() RETURNS trigger LANGUAGE plpgsql AS \$\$
            DECLARE n bigint := nextval('rel_wfail');
            BEGIN
                IF n <= 60 THEN RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; END IF;
                IF n <= 120 THEN RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001'; END IF;
                RETURN NEW;
            END \$\$;
            CREATE TRIGGER rel_wfail BEFORE INSERT ON public.kgx_mempalace_kg_support FOR EACH ROW EXECUTE FUNCTION rel_wfail();});
        my $r = backfill($dsn, $f, { timeout => 120 });
        stop_fake($f);
        my $fired = psql($dsn, 'SELECT last_value FROM rel_wfail');
        my $c = canon($dsn);
        my @d = compare($ref, $c);
        push @d, "exit $r->{rc}" if $r->{rc} != 0;
        push @d, "only $fired trigger calls" if $fired < 120;
        my $charged = grep { $_->{attempts} > 0 } values %{ $c->{rows} };
        push @d, "$charged drawers charged an attempt" if $charged;
        $lost += total_lost($ref, $c);
        $dups += $c->{dup_v} + $c->{dup_e};
        push @secs, $r->{secs};
        ok(!@d, sprintf('120 write transactions aborted (40P01, 40001), trial %d: %.1fs', $t, $r->{secs}))
            or diag(join("\n", @d), "\n", substr($r->{err}, -2000));
        $pass++ unless @d;
        push @notes, "t$t: @d" if @d;
    }
    record(scenario => 'db: write aborted 40P01/40001', trials => $Tw, passes => $pass, lost => $lost, dups => $dups,
           recover_s => sprintf('%.1f', max(@secs)),
           note => sprintf('a trigger fails 60 writes with deadlock_detected and 60 with serialization_failure; %d drawers; retried as transient, no attempt charged%s',
                           $N, @notes ? '; ' . join(' | ', @notes) : ''));
}

if (my $sid = $ENV{REL_SANDBOX_ID}) {
    my $Tr = quick() ? 1 : $T;
    my $restarts = 0;
    my ($p, $l, $d, $s, $n) = scenario('restart', $Tr, sub {
        # at most two restarts per trial, ~1 s apart
        return 0 if $restarts >= 2;
        sleep 0.7;
        system("$root/scripts/sandbox-db restart $sid >/dev/null 2>&1") == 0 or die "sandbox-db restart failed";
        $restarts++;
        return 1;
    });
    record(scenario => 'db: PostgreSQL restart (fast)', trials => $Tr, passes => $p, lost => $l, dups => $d,
           recover_s => sprintf('%.1f', max(@$s)),
           note => sprintf('pg_ctl restart -m fast twice per run (same data dir and port); recover = whole run, max%s',
                           @$n ? '; ' . join(' | ', @$n) : ''));
} else {
    diag('REL_SANDBOX_ID not set: PostgreSQL restart scenario not run');
}
done_testing();
