#!/usr/bin/perl
# economy_reuse.t — no LLM request for an answer kgx already has (issue 14 item 2, B12). A request
# whose exact bytes (model identity, path, body) were answered whole before is served from the stored
# answer (looked up by the SHA-256 of the request, an index probe), and one identical to a request in
# flight waits for that one's answer. Pinned here against the fake llama-server and a real database:
#   - duplicate drawers next to their originals cost no request (twins in flight) and the graph is exact;
#   - a re-queue of unchanged drawers costs no request (stored answers), graph and counts unchanged;
#   - counted: kgx_llm_answers_reused_total, the answers table's `reused` rows;
#   - --fresh-answers (and KGX_FRESH_ANSWERS=1) asks the LLM for every chunk again;
#   - a different model behind the endpoint (its /props model_path) reuses nothing stored for the old;
#   - a stored answer the policy no longer reads whole is asked afresh, not charged to the drawer;
#   - --reapply still works from the stored answers;
#   - --no-keep-answers (nothing stored, nothing looked up) still completes every drawer, exactly.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $c = gen_corpus(n => 60, seed => 14, prefix => 'r');
# 30 duplicates: the same text under another id, queued right after its original (claimed together)
my @orig = sort keys %{ $c->{docs} };
for my $i (0 .. 29) {
    my $o = $orig[$i * 2];
    $c->{docs}{"${o}dup"} = $c->{docs}{$o};
    $c->{facts}{"${o}dup"} = $c->{facts}{$o};
}
my $x = expected_graph($c);
my $n = scalar keys %{ $c->{docs} };

my $dsn = fresh_db('econ_reuse');
create_drawers($dsn, $c);
my $fake = start_fake('--parallel', 4, '--model', '/models/first.gguf');
my @base = ('--dsn', $dsn, '--endpoint', $fake->{url}, '--workers', 8, '--log-level', 'info');

sub requests { fake_stats($_[0])->{extraction_requests} }
sub reused_rows { psql($dsn, 'SELECT count(*) FROM kgx_mempalace_kg_answers WHERE reused') + 0 }
my $SEED_ENQUEUE = 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)'
    . ' SELECT id, wing, room FROM mempalace_drawers %s'
    . ' ON CONFLICT (drawer_id) DO UPDATE SET queued_at = now(), started_at = NULL, completed_at = NULL,'
    . ' error = NULL, worker_id = NULL';
sub requeue { psql($dsn, sprintf($SEED_ENQUEUE, $_[0] // '')) }
sub backfill {
    my (@extra) = @_;
    my $r = run_kgx({ timeout => 180 }, @base, '--backfill', @extra);
    is($r->{rc}, 0, 'backfill exits 0') or diag($r->{err});
    like($r->{err}, qr/^final: completed=\d+ pending=0 in_flight=0 errors=0$/m, 'every drawer completed');
    return $r;
}

# 1. the first backfill: the duplicates follow their originals' requests
my $r = backfill();
graph_matches(graph_dump($dsn), $x, 'first backfill: exact graph');
my $req1 = requests($fake);
is($req1, $n - 30, "$n drawers, 30 of them duplicates: " . ($n - 30) . ' requests')
    or diag("requests $req1");
is(reused_rows(), 30, 'the 30 duplicates are stored as reused answers');
is(psql($dsn, 'SELECT count(*) FROM kgx_mempalace_kg_answers WHERE request_hash IS NULL') + 0, 0,
   'every stored answer carries its request hash');
is(psql($dsn, 'SELECT count(DISTINCT request_hash) FROM kgx_mempalace_kg_answers') + 0, $n - 30,
   'one request hash per distinct text');
my $q1 = queue_rows($dsn);

# 2. MemPalace re-queues on every upsert: unchanged drawers cost no request
requeue();
fake_reset($fake);
$r = backfill();
is(requests($fake), 0, 're-queue of unchanged drawers: 0 requests');
is(reused_rows(), $n, 'every answer now reused');
graph_matches(graph_dump($dsn), $x, 're-queue: graph unchanged');
my $q2 = queue_rows($dsn);
is_deeply({ map { $_ => $q2->{$_}{triples} } keys %$q2 }, { map { $_ => $q1->{$_}{triples} } keys %$q1 },
          'triples_extracted unchanged');

# 3. counted in /metrics and in the status the daemon publishes
{
    requeue("WHERE id IN ('r00001', 'r00002', 'r00003')");
    my $url = '127.0.0.1:' . free_port();
    my $k = spawn_kgx(@base, '--http', $url, '--poll-interval', 1);
    ok(wait_until(20, sub { defined http_get("http://$url/healthz") }), 'http up')
        or diag(read_file($k->{errfile}));
    ok(wait_until(20, sub { queue_count($dsn, 'completed_at IS NULL') == 0 }), 'the re-queued drawers complete');
    my $m = '';
    wait_until(10, sub { $m = http_get("http://$url/metrics") // ''; $m =~ /kgx_llm_answers_reused_total\{source="stored"\} [1-9]/ });
    like($m, qr/^kgx_llm_answers_reused_total\{source="stored"\} 3$/m, 'metrics: 3 answers reused from storage');
    like($m, qr/^kgx_llm_answers_reused_total\{source="in_flight"\} 0$/m, 'metrics: none in flight');
    like($m, qr/^kgx_llm_requests_total 0$/m, 'metrics: no request sent');
    my $st = http_get("http://$url/kg-extract/status") // '{}';
    my $j = eval { json_decode($st) } // {};
    is($j->{process}{llm}{answers_reused}, 3, 'status: answers_reused') or diag($st);
    my $txt = '';
    wait_until(15, sub { $txt = run_kgx({ timeout => 30 }, '--dsn', $dsn, '--status')->{out} // ''; $txt =~ /answers_reused=3\b/ });
    like($txt, qr/^    llm requests=0 answers_reused=3 \(in flight: 0\)/m, '--status: the live worker\'s LLM line') or diag($txt);
    stop_kgx($k);
}

# 4. --fresh-answers: every chunk asked again (answers still stored, with their hash)
requeue();
fake_reset($fake);
$r = backfill('--fresh-answers');
is(requests($fake), $n, "--fresh-answers: $n requests (no twins, no stored answers)");
is(reused_rows(), 0, '--fresh-answers: no answer marked reused');
graph_matches(graph_dump($dsn), $x, '--fresh-answers: exact graph');
requeue("WHERE id = 'r00004'");
fake_reset($fake);
{
    local $ENV{KGX_FRESH_ANSWERS} = '1';
    $r = backfill();
}
is(requests($fake), 1, 'KGX_FRESH_ANSWERS=1: the re-queued drawer is asked again');
{
    local $ENV{KGX_FRESH_ANSWERS} = 'yes';
    my $bad = run_kgx({ timeout => 30 }, @base, '--backfill');
    is($bad->{rc}, 2, 'KGX_FRESH_ANSWERS=yes: usage error');
    like($bad->{err}, qr/KGX_FRESH_ANSWERS: expected 0 or 1/, 'one clear line');
}

# 5. another model behind the endpoint: nothing stored for the old model is reused
stop_fake($fake);
$fake = start_fake('--parallel', 4, '--model', '/models/second.gguf');
@base = ('--dsn', $dsn, '--endpoint', $fake->{url}, '--workers', 8, '--log-level', 'info');
requeue();
$r = backfill();
is(requests($fake), $n - 30, 'a new model: the stored answers are not reused (duplicates still share)');
graph_matches(graph_dump($dsn), $x, 'new model: exact graph');

# 6. a stored answer the policy does not read whole: asked afresh, not charged
psql($dsn, q{UPDATE kgx_mempalace_kg_answers SET body = '{"content":"[[\"Broken","stop_type":"eos"}' WHERE drawer_id = 'r00005'});
my $h = psql($dsn, q{SELECT encode(request_hash, 'hex') FROM kgx_mempalace_kg_answers WHERE drawer_id = 'r00005'});
psql($dsn, "DELETE FROM kgx_mempalace_kg_answers WHERE drawer_id <> 'r00005' AND encode(request_hash, 'hex') = '$h'");
requeue("WHERE id = 'r00005'");
fake_reset($fake);
$r = backfill();
is(requests($fake), 1, 'the broken stored answer is replaced by one fresh request');
like($r->{err}, qr/drawer=r00005 .*a reused answer does not parse whole/, 'logged');
is(psql($dsn, "SELECT attempts FROM mempalace_kg_extraction_queue WHERE drawer_id = 'r00005'") + 0, 0,
   'not charged to the drawer');
graph_matches(graph_dump($dsn), $x, 'after the broken answer: exact graph');

# 7. --reapply works from what is stored, reused rows included
$r = run_kgx({ timeout => 120 }, '--dsn', $dsn, '--reapply');
is($r->{rc}, 0, '--reapply exits 0') or diag($r->{err});
graph_matches(graph_dump($dsn), $x, '--reapply: exact graph');

# 8. --no-keep-answers: no answer stored, none looked up — every chunk still goes to the LLM (a chunk
#    once waited for a lookup that was never sent: the backfill hung with every drawer claimed)
{
    my $dsn2 = fresh_db('econ_reuse_nokeep');
    create_drawers($dsn2, $c);
    fake_reset($fake);
    my $r2 = run_kgx({ timeout => 120 }, '--dsn', $dsn2, '--endpoint', $fake->{url}, '--workers', 8,
                     '--backfill', '--no-keep-answers');
    is($r2->{rc}, 0, '--no-keep-answers: backfill exits 0') or diag($r2->{err});
    like($r2->{err}, qr/^final: completed=$n pending=0 in_flight=0 errors=0$/m, "--no-keep-answers: all $n drawers completed");
    graph_matches(graph_dump($dsn2), $x, '--no-keep-answers: exact graph');
    is(psql($dsn2, 'SELECT count(*) FROM kgx_mempalace_kg_answers') + 0, 0, '--no-keep-answers: no answer stored');
    my $req = requests($fake);
    ok($req >= $n - 30 && $req <= $n, "--no-keep-answers: one request per drawer at most ($req for $n drawers, "
       . ($n - 30) . ' distinct texts)');
}

stop_fake($fake);
done_testing();
