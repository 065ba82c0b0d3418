#!/usr/bin/env perl
# core_dberr — database errors by class (core/db.c): a DSN libpq cannot parse is a usage error (rc 2);
# a wrong password (28P01), an unknown role (28000), an unknown database (3D000) and AGE not created
# in the database (a role that may not create it) give one error-level line naming the fix: --status
# and --once exit 1 at once, the daemon repeats the line with its backoff (never "waiting") and a
# SIGTERM still ends it with 0.
use strict;
use warnings;
use KgxTest;
use Time::HiRes ();

my %noenv = (MEMPALACE_POSTGRES_DSN => undef, MEMPALACE_KG_LLM_ENDPOINT => undef, KGX_POLICY => undef);
my $admin = admin_dsn();
my $dsn = fresh_db('dberr');
psql($dsn, 'CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb)');
my $fake = start_fake();

# ---- invalid DSN: a usage error, before anything else
for my $bad ('host=127.0.0.1 bogus=1', 'postgresql://x:y@[::1', "dbname='unterminated") {
    for my $mode (['--once'], ['--status'], []) {
        my $r = run_kgx({ env => \%noenv, timeout => 20 }, '--dsn', $bad, @$mode);
        is($r->{rc}, 2, "DSN '$bad' @$mode: rc 2") or diag($r->{err});
        like($r->{err}, qr/\Aerror: --dsn: [^\n]+\n\z/, "DSN '$bad' @$mode: one line");
    }
}
my $r = run_kgx({ env => { %noenv, MEMPALACE_POSTGRES_DSN => 'nohost=1' }, timeout => 20 }, '--status');
is($r->{rc}, 2, 'invalid DSN from the environment: rc 2');

# ---- the refusals: (label, DSN, SQLSTATE, words of the fix)
my $pid = $$;
my ($role_pw, $role_noage) = ("kgx_pw_$pid", "kgx_noage_$pid");
psql($admin, "CREATE ROLE $role_pw LOGIN PASSWORD 'right-$pid'");
psql($admin, "CREATE ROLE $role_noage LOGIN");

# the sandbox trusts every local connection: require a password of this one role only
my $hba_file = psql($admin, 'SHOW hba_file');
my $hba = psql($admin, "SELECT pg_read_file(current_setting('hba_file'))");
sub write_hba {
    my ($text) = @_;
    (my $q = $text) =~ s/'/''/g;
    psql($admin, "DO \$\$DECLARE l oid := lo_from_bytea(0, convert_to('$q', 'UTF8')); BEGIN"
               . " PERFORM lo_export(l, current_setting('hba_file')); PERFORM lo_unlink(l); END\$\$");
    psql($admin, 'SELECT pg_reload_conf()');
}
write_hba("host all $role_pw 127.0.0.1/32 scram-sha-256\nhost all $role_pw ::1/128 scram-sha-256\n$hba\n");
END { eval { write_hba($hba) } if defined $hba && $$ == $pid }
Time::HiRes::sleep(0.5);

(my $base = $dsn) =~ s{^postgres(?:ql)?://[^@/]*@}{postgresql://};
die "unexpected DSN form: $dsn" unless $base =~ m{^postgresql://([^/]+)/(\w+)};
my ($hostport, $db) = ($1, $2);
# AGE not created in a database this role may use but not extend
my $noage = fresh_db('dberr_noage');
psql($noage, 'DROP EXTENSION IF EXISTS age CASCADE');
psql($noage, "GRANT ALL ON SCHEMA public TO $role_noage");
(my $noage_db = $noage) =~ s{.*/}{};

my @cases = (
    ['wrong password', "postgresql://$role_pw:wrong\@$hostport/$db", '28P01', qr/password/],
    ['unknown role', "postgresql://nosuchrole_$pid\@$hostport/$db", '28000', qr/CREATE ROLE|pg_hba/],
    ['unknown database', "postgresql://postgres\@$hostport/nosuchdb_$pid", '3D000', qr/createdb|dbname=/],
    ['AGE not created', "postgresql://$role_noage\@$hostport/$noage_db", undef, qr/CREATE EXTENSION age/],
);
# the right password works (so the refusal above is the password's)
$r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', "postgresql://$role_pw:right-$pid\@$hostport/$db", '--status');
like($r->{err}, qr/status query failed/, 'the right password: connected (then no queue table yet)') or diag($r->{err});
unlike($r->{err}, qr/28P01|password/, 'the right password: no refusal');

for my $c (@cases) {
    my ($label, $d, $code, $fix) = @$c;
    # --status reads only the queue: AGE matters to the modes that write
    for my $mode ($code ? ['--status'] : (), ['--once'], ['--backfill']) {
        my $t0 = Time::HiRes::time();
        my $r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', $d, '--endpoint', $fake->{url}, @$mode);
        my $dt = Time::HiRes::time() - $t0;
        is($r->{rc}, 1, "$label @$mode: rc 1") or diag($r->{err});
        ok($dt < 10, sprintf("$label @$mode: at once (%.1f s)", $dt));
        like($r->{err}, qr/^error: database: .*fix: /m, "$label @$mode: one line naming the fix") or diag($r->{err});
        like($r->{err}, qr/\[\Q$code\E\]/, "$label @$mode: the SQLSTATE $code") if $code;
        like($r->{err}, $fix, "$label @$mode: the fix");
    }
    # the daemon keeps trying, visibly, at error level
    my $k = spawn_kgx({ env => \%noenv }, '--dsn', $d, '--endpoint', $fake->{url});
    my $lines = wait_until(20, sub {
        my @l = grep { /\berror database: .*fix: / } split /\n/, (read_file($k->{errfile}) // '');
        return @l >= 2 ? scalar @l : 0;
    });
    ok($lines >= 2, "$label daemon: the error line repeats with the backoff") or diag(read_file($k->{errfile}));
    my $log = read_file($k->{errfile}) // '';
    unlike($log, qr/waiting for the database/, "$label daemon: not taken for a database still starting");
    my $st = stop_kgx($k, 'TERM', 10);
    is($st, 0, "$label daemon: SIGTERM ends it with 0");
}

# a database that is merely down still waits (warn), as before
my $k = spawn_kgx({ env => \%noenv }, '--dsn', 'postgresql://postgres@127.0.0.1:1/x?connect_timeout=2',
                  '--endpoint', $fake->{url});
ok(wait_until(15, sub { (read_file($k->{errfile}) // '') =~ /warn waiting for the database/ }),
   'an unreachable server: still "waiting for the database"') or diag(read_file($k->{errfile}));
stop_kgx($k, 'TERM', 10);

END {
    if ($$ == $pid) {
        eval { psql($noage, "DROP OWNED BY $role_noage") };
        eval { psql($admin, "DROP ROLE IF EXISTS $role_noage") };
        eval { psql($admin, "DROP ROLE IF EXISTS $role_pw") };
    }
}
done_testing();
