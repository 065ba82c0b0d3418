#!/usr/bin/perl
# economy_factless.t — nothing factless reaches the LLM (issue 14). Drawers whose text holds fewer
# than three letters outside markup (punctuation, digits, tags, entities, emoji, CJK punctuation…)
# are completed with no request: the fake counts no extraction request for them, the drawers with
# text are asked exactly once each and give exactly their facts, the daemon counts the skipped chunks
# in /metrics (kgx_llm_chunks_skipped_total) and the status JSON (process.llm.chunks_skipped) and logs
# each at debug level. A policy saying `skip = false` sends them all (the hook is what saves them).
use strict;
use warnings;
use utf8;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use KgxGraph;
use PolTest ();
use IO::Socket::INET;
use HTTP::Tiny;
use File::Temp ();

my @factless = ('...', "---\n***\n___", '<br/>', '<div><span class="x"></span></div>', '&nbsp;&#8212;&amp;',
                '2024-01-01 12:00:00', '🎉🎉🎉 ✔ →', '。、「」！？', '１２３４', '| --- | --- |', 'Al', '<!-- x -->');
my $c = gen_corpus(n => 30, seed => 5);
my $x = expected_graph($c);


sub setup {
    my ($name) = @_;
    my $dsn = fresh_db($name);
    create_drawers($dsn, $c);
    PolTest::add_drawers($dsn, [map { { id => sprintf('z%02d', $_), document => $factless[$_] } } 0 .. $#factless]);
    return $dsn;
}

# ---- 1. the default policy: factless drawers cost no request
my $dsn = setup('econ_factless');
my $fake = start_fake();
my $port = free_port();
my $ua = HTTP::Tiny->new(timeout => 10);
my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "127.0.0.1:$port", '--poll-interval', 1,
                  '--log-level', 'debug', '--worker-id', 'econ');
ok(wait_until(20, sub { ($ua->get("http://127.0.0.1:$port/healthz")->{status} // 0) == 200 }), 'daemon up')
    or diag(read_file($k->{errfile}));
psql($dsn, 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) SELECT id, wing, room FROM mempalace_drawers');
my $total = 30 + @factless;
ok(wait_until(60, sub { my ($n) = psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL'); $n == $total }),
   "every drawer completed ($total)") or diag(read_file($k->{errfile}));

my $s = fake_stats($fake);
is($s->{extraction_requests}, 30, 'one request per drawer with text, none for the factless ones');
is($s->{texts_distinct}, 30, 'no factless text was sent');

my $m = $ua->get("http://127.0.0.1:$port/metrics")->{content};
like($m, qr/^kgx_llm_chunks_skipped_total \Q${\ scalar @factless}\E$/m, 'metrics: kgx_llm_chunks_skipped_total = ' . @factless);
like($m, qr/^kgx_llm_requests_total 30$/m, 'metrics: kgx_llm_requests_total = 30');
my $st = json_decode($ua->get("http://127.0.0.1:$port/kg-extract/status")->{content});
is($st->{process}{llm}{chunks_skipped}, scalar @factless, 'status: process.llm.chunks_skipped');
is($st->{process}{llm}{requests}, 30, 'status: process.llm.requests');
stop_kgx($k);
my $log = read_file($k->{errfile}) // '';
my @lines = $log =~ /^.*debug drawer=z\d\d attempt=1 .*chunk=0 skipped, no request: no text to ask about.*$/mg;
is(scalar @lines, scalar @factless, 'one debug line per skipped chunk, naming the drawer and the reason')
    or diag(join "\n", grep { /skipped/ } split /\n/, $log);

my $q = queue_rows($dsn);
is(scalar(grep { $_->{completed} && !$_->{error} } values %$q), $total, 'none parked');
is(scalar(grep { /^z/ && $q->{$_}{triples} != 0 } keys %$q), 0, 'factless drawers: 0 triples');
graph_matches(graph_dump($dsn), $x, 'graph = the facts of the drawers with text');

# ---- 2. a policy that turns the hook off sends them
my $dir = File::Temp::tempdir('kgx-noskip-XXXXXX', TMPDIR => 1, CLEANUP => 1);
mkdir "$dir/prompts" or die;
symlink(kgx_root() . '/plugins', "$dir/plugins") or die;
my $src = read_file(kgx_root() . '/prompts/default.lua');
open my $fh, '>', "$dir/prompts/noskip.lua" or die;
print $fh $src, "\nskip = false   -- every chunk goes to the LLM\n";
close $fh;
my $dsn2 = setup('econ_noskip');
fake_reset($fake);
my $r = run_kgx({ timeout => 120 }, '--dsn', $dsn2, '--endpoint', $fake->{url}, '--policy', "$dir/prompts/noskip.lua", '--backfill');
is($r->{rc}, 0, 'skip = false: backfill exits 0') or diag($r->{err});
is(fake_stats($fake)->{extraction_requests}, $total, 'skip = false: every drawer is asked');

done_testing();
