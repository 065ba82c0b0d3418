#!/usr/bin/perl
# ops_progress.t — the operator's progress line (they grep it) as seen on stderr during a real
# backfill, the final: line, and --backfill-limit.
use strict;
use warnings;
use KgxTest;

my $LINE = qr/^drawers_completed=\d+ in_flight=\d+ pending=\d+ rate=\d+\.\d\/min errors=\d+ eta=(unknown|\d+m|\d+\.\d[hd]) elapsed=\d+s$/;

my $dsn = fresh_db('progress');
psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
             INSERT INTO mempalace_drawers
             SELECT 'p' || lpad(i::text, 3, '0'), 'w', 'r',
                    'Person' || i || ' works on Project' || (i % 5) || '.', '{}'
               FROM generate_series(1, 60) i});
# 2 slots x 100 ms: about 3 s of work, a progress line every 0.5 s
my $fake = start_fake('--parallel', 2, '--latency-ms', 100);
my $r = run_kgx({ timeout => 90 }, '--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill',
                '--progress-interval', 0.5, '--workers', 2);
is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
my @lines = grep { /^drawers_completed=/ } split /\n/, $r->{err};
ok(@lines >= 3, scalar(@lines) . ' progress lines') or diag($r->{err});
my $bad = grep { $_ !~ $LINE } @lines;
is($bad, 0, 'every progress line has the exact format') or diag(join "\n", grep { $_ !~ $LINE } @lines);
like($lines[0], qr/ rate=0\.0\/min .* eta=unknown /, 'the first line: rate 0.0, eta unknown');
ok((grep { / eta=(\d+m|\d+\.\d[hd]) / } @lines), 'later lines estimate an eta');
my @done = map { /drawers_completed=(\d+)/ } @lines;
my @el = map { /elapsed=(\d+)s/ } @lines;
ok(!(grep { $done[$_] < $done[$_ - 1] } 1 .. $#done), 'drawers_completed never goes down');
ok(!(grep { $el[$_] < $el[$_ - 1] } 1 .. $#el), 'elapsed never goes down');
my @final = grep { /^final: / } split /\n/, $r->{err};
is(scalar @final, 1, 'one final: line');
is($final[0], 'final: completed=60 pending=0 in_flight=0 errors=0', 'final: completed=60 pending=0 in_flight=0 errors=0');
like((split /\n/, $r->{err})[-1] // '', qr/^final: /, 'final: is the last line') or diag($r->{err});

# counts read while drawers complete every few milliseconds: the queue counters and the claimed rows come
# from one snapshot, so pending (unfinished - claimed) is never negative (it once showed pending=-1 when
# a completion committed between the two reads)
{
    my $dsn3 = fresh_db('progress_busy');
    psql($dsn3, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
                  INSERT INTO mempalace_drawers SELECT 'b' || lpad(i::text, 4, '0'), 'w', 'r',
                         'Owner' || i || ' runs Shop' || (i % 7) || '.', '{}' FROM generate_series(1, 600) i});
    my $busy = start_fake('--parallel', 8, '--latency-ms', 0);
    my $rb = run_kgx({ timeout => 120 }, '--dsn', $dsn3, '--endpoint', $busy->{url}, '--backfill',
                     '--progress-interval', 0.1, '--workers', 8);
    is($rb->{rc}, 0, 'busy backfill exits 0') or diag($rb->{err});
    my @bl = grep { /^drawers_completed=/ } split /\n/, $rb->{err};
    ok(@bl >= 3, scalar(@bl) . ' progress lines while 600 drawers complete');
    is(scalar(grep { $_ !~ $LINE } @bl), 0, 'busy: every progress line has the exact format (pending never negative)')
        or diag(join "\n", grep { $_ !~ $LINE } @bl);
    stop_fake($busy);
}

# --backfill-limit N queues at most N more drawers, then drains them
my $dsn2 = fresh_db('progress_limit');
psql($dsn2, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb);
              INSERT INTO mempalace_drawers SELECT 'q' || i, 'w', 'r', 'Team' || i || ' owns Service' || i || '.', '{}'
                FROM generate_series(1, 30) i});
fake_config($fake, { latency_ms => 0 });
$r = run_kgx({ timeout => 60 }, '--dsn', $dsn2, '--endpoint', $fake->{url}, '--backfill-limit', 10);
is($r->{rc}, 0, '--backfill-limit 10 exits 0') or diag($r->{err});
like($r->{err}, qr/backfill: queued 10 new drawers/, 'queued 10');
like($r->{err}, qr/^final: completed=10 pending=0 in_flight=0 errors=0$/m, 'final: completed=10');
is(scalar psql($dsn2, 'SELECT count(*) FROM mempalace_kg_extraction_queue'), 10, '10 queue rows');
$r = run_kgx({ timeout => 60 }, '--dsn', $dsn2, '--endpoint', $fake->{url}, '--backfill');
like($r->{err}, qr/backfill: queued 20 new drawers/, 'a full backfill afterwards queues the other 20');
like($r->{err}, qr/^final: completed=30 pending=0 in_flight=0 errors=0$/m, 'final: completed=30 (the queue total)');

done_testing();
