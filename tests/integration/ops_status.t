#!/usr/bin/perl
# ops_status.t — `kgx-run --status [--json]` against a real database: the seed's keys plus kgx's
# (parked, retrying, completed_total, policy name/version, graph), with values that
# match the queue; and the operator guide's SQL for re-queueing parked drawers works.
use strict;
use warnings;
use KgxTest;

my $dsn = fresh_db('status');
psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
             INSERT INTO mempalace_drawers
             SELECT 'd' || lpad(i::text, 3, '0'), 'w', 'r' || (i % 3),
                    'Person' || i || ' works on Project' || (i % 4) || '. Project' || (i % 4) || ' uses Postgres.', '{}'
               FROM generate_series(1, 20) i});

# a quarter of the texts fail with HTTP 500 on every request: they are parked after 2 attempts
my $fake = start_fake('--parallel', 4, '--fault', '500:0.25:1000000', '--seed', 7);
my %env = (KGX_RETRY_BASE_MS => 5);
my $r = run_kgx({ env => \%env, timeout => 90 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill',
                '--max-attempts', 2);
is($r->{rc}, 0, 'backfill with failing texts exits 0') or diag($r->{err});
my ($parked_db) = psql($dsn, q{SELECT count(*) FROM mempalace_kg_extraction_queue WHERE error IS NOT NULL AND completed_at IS NULL});
my ($done_db) = psql($dsn, q{SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL});
ok($parked_db > 0 && $parked_db < 20, "some drawers parked ($parked_db), the rest completed ($done_db)");
is($parked_db + $done_db, 20, 'every drawer is either completed or parked');
like($r->{err}, qr/^final: completed=$done_db pending=0 in_flight=0 errors=$parked_db$/m, 'final line counts them');
my ($att) = psql($dsn, q{SELECT min(attempts) || '/' || max(attempts) FROM mempalace_kg_extraction_queue WHERE error IS NOT NULL});
is($att, '2/2', 'parked rows carry their attempt count (--max-attempts 2)');

# rows in other states, set by hand: two that failed once, one claimed long ago (stale), one in flight
psql($dsn, q{INSERT INTO mempalace_drawers VALUES ('x1','w','r','A is a B.','{}'), ('x2','w','r','C is a D.','{}'),
                                                  ('x3','w','r','E is a F.','{}'), ('x4','w','r','G is a H.','{}');
             SET kgx.internal = '1';
             INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room, attempts, last_error)
             VALUES ('x1','w','r',1,'llm http 500'), ('x2','w','r',1,'llm http 500');
             INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room, started_at, worker_id)
             VALUES ('x3','w','r', now() - interval '2000 seconds', 'gone:1:dead'),
                    ('x4','w','r', now() - interval '10 seconds', 'busy:2:live')});

my @seed_keys = qw(queue_depth in_progress completed_today errors_total triples_extracted_5m
                   drawers_per_min_5m stale_reclaimable);
$r = run_kgx('--dsn', $dsn, '--status', '--json');
is($r->{rc}, 0, '--status --json exits 0') or diag($r->{err});
my $st = eval { json_decode($r->{out}) } or diag("not JSON: $r->{out}");
ok(exists $st->{$_}, "key $_") for @seed_keys, qw(parked retrying completed_total total policy graph workers);
is_deeply($st->{workers}, [], 'workers: none running');
is($st->{completed_total}, $done_db, 'completed_total');
is($st->{completed_today}, $done_db, 'completed_today');
is($st->{errors_total}, $parked_db, 'errors_total = parked rows (the seed meaning: rows with an error)');
is($st->{parked}, $parked_db, 'parked');
is($st->{retrying}, 2, 'retrying: pending rows with attempts > 0');
ok(!exists $st->{waiting_retry}, 'no waiting_retry: kgx waits out a backoff in memory, holding the claim');
is($st->{queue_depth}, 3, 'queue_depth: pending + stale claims (x1, x2, x3)');
is($st->{in_progress}, 1, 'in_progress: claims within the lease (x4)');
is($st->{stale_reclaimable}, 1, 'stale_reclaimable: claims past the 900 s lease (x3)');
is($st->{total}, 24, 'total rows');
ok($st->{triples_extracted_5m} > 0, 'triples_extracted_5m > 0');
is($st->{drawers_per_min_5m}, $done_db / 5, 'drawers_per_min_5m = completed in 5 min / 5 (seed definition)');
is($st->{policy}{name}, 'default', 'policy name');
like($st->{policy}{version} // '', qr/\S/, 'policy version');
ok($st->{graph}{entities} > 0 && $st->{graph}{edges} > 0 && $st->{graph}{supports} >= $st->{graph}{edges},
   'graph entities, edges, supports');

$r = run_kgx('--dsn', $dsn, '--status', '--json', '--lease-seconds', 3000);
$st = json_decode($r->{out});
is($st->{stale_reclaimable}, 0, '--lease-seconds 3000: x3 is no longer stale');
is($st->{in_progress}, 2, '... but in progress');

$r = run_kgx('--dsn', $dsn, '--status');
is($r->{rc}, 0, '--status (text) exits 0');
for my $k (@seed_keys, qw(completed_total retrying policy graph)) {
    like($r->{out}, qr/^\Q$k\E\s+\S/m, "text status has $k");
}
like($r->{out}, qr/^errors_total\s+$parked_db\b/m, 'text errors_total value');

# the operator guide's re-queue of parked rows: the trigger resets attempts, the daemon retries them
psql($dsn, q{UPDATE mempalace_kg_extraction_queue
                SET error = NULL, started_at = NULL, completed_at = NULL, queued_at = now()
              WHERE error IS NOT NULL AND completed_at IS NULL});
my ($reset) = psql($dsn, q{SELECT count(*) FROM mempalace_kg_extraction_queue
                            WHERE drawer_id LIKE 'd%' AND completed_at IS NULL AND attempts = 0 AND parked_at IS NULL});
is($reset, $parked_db, 're-queued rows have attempts reset');
psql($dsn, q{DELETE FROM mempalace_kg_extraction_queue WHERE drawer_id LIKE 'x%'});
fake_config($fake, { faults => [] });
$r = run_kgx({ env => \%env, timeout => 90 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill');
is($r->{rc}, 0, 'backfill after re-queue exits 0') or diag($r->{err});
$st = json_decode(run_kgx('--dsn', $dsn, '--status', '--json')->{out});
is($st->{parked}, 0, 'nothing parked any more');
is($st->{completed_total}, 24, 'all 24 drawers completed (x1..x4 re-seeded by the backfill)');

# a database kgx never ran on: a one-line error, rc 1
my $empty = fresh_db('status_empty');
$r = run_kgx('--dsn', $empty, '--status');
is($r->{rc}, 1, '--status on a database without the queue table: rc 1');
like($r->{err}, qr/^error: .*mempalace_kg_extraction_queue/m, 'naming the missing table');

done_testing();
