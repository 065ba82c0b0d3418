#!/usr/bin/env perl
# core_cli — the command-line contract: no DSN, bad flag values (rc 2, one line), --help/--version,
# endpoint URL normalisation, --status [--json] on a known queue, --once claims one batch.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my %noenv = (MEMPALACE_POSTGRES_DSN => undef, MEMPALACE_KG_LLM_ENDPOINT => undef, KGX_POLICY => undef,
             MEMPALACE_KG_CLAIM_LEASE_SECONDS => undef);

# ---- no DSN
for my $args ([], ['--once'], ['--backfill'], ['--status', '--json']) {
    my $r = run_kgx({ env => \%noenv }, @$args);
    is($r->{rc}, 2, "no DSN (@$args): rc 2");
    is($r->{err}, "error: --dsn is required (or set MEMPALACE_POSTGRES_DSN)\n", "no DSN (@$args): exactly the seed's message");
    is($r->{out}, '', "no DSN (@$args): nothing on stdout");
}

# ---- bad values: rc 2 and one line on stderr, before touching the database
my $dsn = fresh_db('core_cli');
for my $bad (['--workers', '0'], ['--workers', 'abc'], ['--workers', '5x'], ['--workers', '99999999999999'],
             ['--batch-size', '-1'], ['--batch-size', '0'], ['--poll-interval', 'x'], ['--poll-interval', '0'],
             ['--lease-seconds', '0'], ['--lease-seconds', 'soon'], ['--max-attempts', '0'], ['--request-timeout', '0'],
             ['--progress-interval', '-5'], ['--backfill-limit', '-3'], ['--ctx-size', 'abc'],
             ['--log-level', 'loud'], ['--graph', 'bad;name'], ['--graph', 'x'], ['--endpoint', 'ftp://x'],
             ['--endpoint', 'http://'], ['--policy', '/nonexistent/policy.lua'], ['--frobnicate'],
             ['--once', '--backfill'], ['--status', '--dry-run', '-'], ['--http', 'nohostport', '--once'],
             ['--http', '10.0.0.1:80', '--once'], ['--dsn'], ['stray'] ) {
    my @a = $bad->[0] eq '--dsn' ? @$bad : ('--dsn', $dsn, @$bad);
    my $r = run_kgx({ env => \%noenv, timeout => 20 }, @a);
    is($r->{rc}, 2, "@$bad: rc 2") or diag($r->{err});
    like($r->{err}, qr/\Aerror: [^\n]+\n\z/, "@$bad: one line on stderr") or diag($r->{err});
}
my $nq = psql($dsn, "SELECT count(*) FROM pg_class WHERE relname = 'mempalace_kg_extraction_queue'");
is($nq, 0, 'usage errors do not touch the database');

# ---- --help, --version
my $r = run_kgx({ env => \%noenv }, '--help');
is($r->{rc}, 0, '--help: rc 0');
like($r->{out}, qr/^usage: kgx-run/m, '--help: usage on stdout');
like($r->{out}, qr/--dsn DSN/, '--help lists --dsn');
$r = run_kgx({ env => \%noenv }, '--version');
is($r->{rc}, 0, '--version: rc 0');
my $ver = read_file(kgx_root() . '/VERSION');
$ver =~ s/\s+$//;
like($r->{out}, qr/^kgx-run \Q$ver\E\n\z/, "--version prints kgx-run $ver");

# ---- endpoint URL normalisation: base, trailing /, /v1, /v1/chat/completions all reach the fake
my $fake = start_fake();
for my $suffix ('', '/', '/v1', '/v1/', '/v1/chat/completions', '/completion') {
    my $u = $fake->{url} . $suffix;
    my $before = fake_stats($fake)->{extraction_requests};
    $r = run_kgx({ env => \%noenv, stdin => "Alice works on Apollo.\n", timeout => 30 },
                 '--dry-run', '-', '--json', '--endpoint', $u);
    is($r->{rc}, 0, "endpoint '$u': rc 0") or diag($r->{err});
    my $j = eval { json_decode((split /\n/, $r->{out})[0]) } // {};
    is_deeply([map { "$_->{s}|$_->{p}|$_->{o}" } @{ $j->{triples} // [] }], ['Alice|works_on|Apollo'],
              "endpoint '$u': the fact comes back");
    is(fake_stats($fake)->{extraction_requests}, $before + 1, "endpoint '$u': one request reached the fake");
}
my $s = fake_stats($fake);
is($s->{by_path}{'/completion'}, 6, 'every variant posted to the server\'s /completion')
    or diag(json_encode($s->{by_path}));
$r = run_kgx({ env => { %noenv, MEMPALACE_KG_LLM_ENDPOINT => "$fake->{url}/v1" }, stdin => "Bob uses Redis.\n" },
             '--dry-run', '-', '--json');
like($r->{out}, qr/"s":"Bob","p":"uses","o":"Redis"/, 'MEMPALACE_KG_LLM_ENDPOINT is read');

# ---- --once: one batch, then exit
my $c = gen_corpus(n => 30, seed => 81, prefix => 'o');
create_drawers($dsn, $c);
psql($dsn, 'CREATE TABLE IF NOT EXISTS mempalace_kg_extraction_queue (drawer_id text PRIMARY KEY, wing text, room text,'
         . ' queued_at timestamptz DEFAULT now(), started_at timestamptz, completed_at timestamptz, error text,'
         . ' worker_id text, triples_extracted int)');
psql($dsn, 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) SELECT id, wing, room FROM mempalace_drawers');
$r = run_kgx({ env => \%noenv, timeout => 60 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--once', '--batch-size', 7);
is($r->{rc}, 0, '--once: rc 0') or diag($r->{err});
is(queue_count($dsn, 'completed_at IS NOT NULL'), 7, '--once --batch-size 7: exactly 7 drawers completed');
is(queue_count($dsn, 'started_at IS NOT NULL AND completed_at IS NULL'), 0, '--once: nothing left claimed');
my @first7 = psql($dsn, 'SELECT drawer_id FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL ORDER BY 1');
is_deeply(\@first7, [map { sprintf 'o%05d', $_ } 1 .. 7], '--once took the oldest rows');
$r = run_kgx({ env => { %noenv, MEMPALACE_POSTGRES_DSN => $dsn }, timeout => 60 }, '--endpoint', $fake->{url}, '--once');
is($r->{rc}, 0, '--once with the DSN from MEMPALACE_POSTGRES_DSN');
is(queue_count($dsn, 'completed_at IS NOT NULL'), 27, '--once (batch 20): 20 more');

# ---- --status on a known queue
psql($dsn, q{
    DELETE FROM mempalace_kg_extraction_queue;
    INSERT INTO mempalace_kg_extraction_queue (drawer_id, queued_at, started_at, completed_at, error, worker_id, triples_extracted) VALUES
      ('pend1', now(), NULL, NULL, NULL, NULL, NULL),
      ('pend2', now(), NULL, NULL, NULL, NULL, NULL),
      ('pend3', now(), NULL, NULL, NULL, NULL, NULL),
      ('run1',  now(), now() - interval '10 seconds', NULL, NULL, 'w:1', NULL),
      ('run2',  now(), now() - interval '20 seconds', NULL, NULL, 'w:1', NULL),
      ('stale', now(), now() - interval '2 hours', NULL, NULL, 'w:dead', NULL),
      ('new1',  now(), now() - interval '1 minute', now() - interval '1 minute', NULL, 'w:1', 2),
      ('new2',  now(), now() - interval '1 minute', now() - interval '2 minutes', NULL, 'w:1', 3),
      ('new3',  now(), now() - interval '1 minute', now() - interval '3 minutes', NULL, 'w:1', 0),
      ('new4',  now(), now() - interval '1 minute', now() - interval '4 minutes', NULL, 'w:1', 5),
      ('new5',  now(), now() - interval '1 minute', now() - interval '30 seconds', NULL, 'w:1', 5),
      ('old1',  now(), NULL, now() - interval '2 hours', NULL, 'w:1', 7),
      ('old2',  now(), NULL, now() - interval '3 days', NULL, 'w:1', 9),
      ('bad1',  now(), NULL, NULL, 'llm http 500', NULL, NULL),
      ('bad2',  now(), NULL, NULL, 'llm http 500', NULL, NULL);
});
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status', '--json');
is($r->{rc}, 0, '--status --json: rc 0') or diag($r->{err});
my $st = eval { json_decode($r->{out}) } // {};
my %want = (queue_depth => 4, in_progress => 2, completed_today => 6, errors_total => 2,
            triples_extracted_5m => 15, drawers_per_min_5m => 1, stale_reclaimable => 1);
for my $key (sort keys %want) {
    ok(exists $st->{$key}, "--status --json has $key");
    cmp_ok($st->{$key} // -1, '==', $want{$key}, "$key = $want{$key}") or diag($r->{out});
}
note('queue_depth counts the stale (reclaimable) row as pending work');
$r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', $dsn, '--status', '--json', '--lease-seconds', 10000);
$st = eval { json_decode($r->{out}) } // {};
is($st->{stale_reclaimable}, 0, '--lease-seconds moves the stale threshold');
is($st->{in_progress}, 3, '... and the stale row is in progress again');
$r = run_kgx({ env => \%noenv }, '--dsn', $dsn, '--status');
is($r->{rc}, 0, '--status: rc 0');
for my $key (sort keys %want) {
    like($r->{out}, qr/\b\Q$key\E\b\D{0,20}\Q$want{$key}\E\b/, "--status text shows $key");
}
like($r->{out} . $r->{err}, qr/\S/, '--status prints something');

# a bad DSN: one line, not a usage error but a runtime failure
$r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', 'postgresql://nobody@127.0.0.1:1/none', '--status');
ok($r->{rc} == 1 || $r->{rc} == 2, 'unreachable database: rc 1 or 2') or diag($r->{err});
like($r->{err}, qr/\Aerror: [^\n]+\n\z/, 'unreachable database: one line') or diag($r->{err});

# one-shot modes fail at once on an unreachable database; a daemon waits for it (started before
# PostgreSQL, it begins when PostgreSQL does) and a SIGTERM ends the wait with rc 0
$r = run_kgx({ env => \%noenv, timeout => 30 }, '--dsn', 'postgresql://nobody@127.0.0.1:1/none', '--once');
is($r->{rc}, 1, '--once, unreachable database: rc 1');
like($r->{err}, qr/^error: database: /m, '--once, unreachable database: says so') or diag($r->{err});
my $k = spawn_kgx('--dsn', 'postgresql://nobody@127.0.0.1:1/none', '--endpoint', 'http://127.0.0.1:1');
ok(wait_until(10, sub { (read_file($k->{errfile}) // '') =~ /waiting for the database/ }), 'daemon, unreachable database: waits and says so')
    or diag(read_file($k->{errfile}));
ok(!defined wait_pid($k->{pid}, 1.5), 'daemon, unreachable database: still running (retrying with backoff)');
kill 'TERM', $k->{pid};
my $wst = wait_pid($k->{pid}, 10);
is($wst, 0, 'daemon waiting for the database: SIGTERM exits 0') or diag(read_file($k->{errfile}));

done_testing();
