#!/usr/bin/env perl
# answer_budget — a tiny token budget is said, not only logged: against llama-server slots of 512 tokens
# the default policy's instructions and output cap leave under a quarter of the slot for drawer text. The
# daemon logs one warning (however many hook threads split drawers), publishes the numbers with its
# state, and `kgx-run --status` — another process — shows them with the fix (text and JSON), as does the
# daemon's own GET /kg-extract/status. With 4096-token slots the same shows the budget, no warning.
use strict;
use warnings;
use KgxTest;
use KgxGraph;
use HTTP::Tiny;


my $ua = HTTP::Tiny->new(timeout => 10);

# A daemon against a fake with slots of $slot tokens; returns (kgx, base URL, fake) once it has completed
# drawers and published a budget.
sub daemon {
    my ($name, $slot) = @_;
    my $dsn = fresh_db("answer_budget_$name");
    create_drawers($dsn, gen_corpus(n => 24, seed => 71, pool => 20));
    my $fake = start_fake('--parallel', 4, '--ctx-size', 4 * $slot);
    my $port = free_port();
    my $k = spawn_kgx('--dsn', $dsn, '--endpoint', $fake->{url}, '--http', "127.0.0.1:$port", '--poll-interval', 1,
                      '--worker-id', "budget-$name");
    ok(wait_until(120, sub { $ua->get("http://127.0.0.1:$port/healthz")->{status} == 200 }), "$name: the daemon is up")
        or diag(read_file($k->{errfile}));
    psql($dsn, 'INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room) SELECT id, wing, room FROM mempalace_drawers');
    my $seen = wait_until(60, sub {
        my $st = eval { json_decode(run_kgx('--dsn', $dsn, '--status', '--json')->{out}) } or return 0;
        my ($w) = grep { $_->{worker_id} eq "budget-$name" } @{ $st->{workers} // [] };
        return $w && ref $w->{budget} eq 'HASH' && queue_count($dsn, 'completed_at IS NOT NULL') >= 4;
    }, 0.5);
    ok($seen, "$name: the daemon works and has published its budget") or diag(read_file($k->{errfile}));
    return ($dsn, $k, "http://127.0.0.1:$port", $fake);
}

# ---------------------------------------------------------------- 512-token slots: tiny
{
    my ($dsn, $k, $base) = daemon('tiny', 512);

    my $r = run_kgx('--dsn', $dsn, '--status');
    is($r->{rc}, 0, 'tiny: --status exits 0') or diag($r->{err});
    my ($instr, $counted, $cap, $left, $pct) = $r->{out} =~
        /^budget\s+slot context 512 tokens: instructions ~(\d+) \(~(\d+) as the server counts them\) \+ output cap (\d+), (\d+) left for drawer text \((\d+) %\) TINY\s+\(workers: budget-tiny\)$/m;
    ok(defined $instr, '--status shows the budget of the live worker: slot, instructions (estimated, and as the '
                       . 'server counts them: prompt less chunk), output cap, what is left') or diag($r->{out});
    is($cap, 256, 'the output cap for a 512-token slot (sized with max_triples: 7 triples a call)');
    my $used = $counted > $instr ? $counted : $instr;
    is($left, (512 - $used - $cap) > 0 ? 512 - $used - $cap : 0, 'what is left = slot - instructions - output cap');
    cmp_ok($left * 4, '<', 512, 'under a quarter of the slot');
    like($r->{out}, qr/^warning: tiny budget: slot context 512 tokens, instructions ~$instr \+ output cap $cap leave $left tokens \($pct %\) for drawer text: every drawer becomes many small requests\. Give each slot more context \(llama-server --ctx-size C -np N: each slot gets C\/N tokens\) or shorten the prompt$/m,
         '--status: the warning with the numbers and the fix');

    $r = run_kgx('--dsn', $dsn, '--status', '--json');
    my $st = eval { json_decode($r->{out}) } or diag("not JSON: $r->{out}");
    my ($w) = grep { $_->{worker_id} eq 'budget-tiny' } @{ $st->{workers} // [] };
    is_deeply([ @{ $w->{budget} }{qw(n_ctx instruction_tokens instruction_tokens_counted output_cap text_tokens tiny)} ],
              [ 512, $instr, $counted, $cap, $left, JSON::PP::true ], '--status --json: workers[].budget has the numbers');
    is(scalar(grep { /^tiny budget: slot context 512 tokens/ && /--ctx-size C -np N/ } @{ $st->{warnings} // [] }), 1,
       '--status --json: warnings has it once');

    my $h = $ua->get("$base/kg-extract/status");
    my $hs = eval { json_decode($h->{content}) } // {};
    is($hs->{process}{budget}{n_ctx}, 512, 'GET /kg-extract/status: process.budget');
    ok($hs->{process}{budget}{tiny} && ($hs->{process}{budget}{warning} // '') =~ /--ctx-size C -np N/,
       '... tiny, with the warning');

    is(stop_kgx($k), 0, 'tiny: the daemon stops');
    my $log = read_file($k->{errfile}) // '';
    my $n = () = $log =~ /tiny budget: slot context 512 tokens/g;
    is($n, 1, 'the daemon logged the warning once (several hook threads split drawers)');
}

# ---------------------------------------------------------------- 4096-token slots: said, not tiny
{
    my ($dsn, $k, $base) = daemon('roomy', 4096);
    my $r = run_kgx('--dsn', $dsn, '--status');
    like($r->{out}, qr/^budget\s+slot context 4096 tokens: instructions ~\d+ \(~\d+ as the server counts them\) \+ output cap 512, \d+ left for drawer text \((\d+) %\)\s+\(workers: budget-roomy\)$/m,
         'roomy: --status shows the budget, not marked tiny') or diag($r->{out});
    unlike($r->{out}, qr/tiny budget/, 'roomy: no warning');
    my $st = json_decode(run_kgx('--dsn', $dsn, '--status', '--json')->{out});
    is(scalar(grep { /tiny budget/ } @{ $st->{warnings} // [] }), 0, 'roomy: --status --json has no budget warning');
    is(stop_kgx($k), 0, 'roomy: the daemon stops');
    unlike(read_file($k->{errfile}) // '', qr/tiny budget/, 'roomy: nothing logged');
}

done_testing();
