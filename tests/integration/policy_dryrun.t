#!/usr/bin/perl
# policy_dryrun.t — `kgx-run --dry-run` end to end with the real daemon and the fake llama-server,
# no database: the text report (chunks, kept, dropped with reasons, would write), --json (one object
# per drawer, kept/dropped equal to what tests/fake/GRAMMAR.md + the default policy imply), plain
# text on stdin, an unreachable LLM, a bad JSONL line, a policy that fails to load (rc 2).
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use Grammar;
use JSON::PP ();
use Time::HiRes qw(time);
use File::Temp qw(tempdir);

my $root = kgx_root();
my $samples = "$root/samples/drawers.jsonl";
my $pol = "$root/tests/integration/policies";
my %NODB = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);

my $f = start_fake();
my @EP = ('--endpoint', $f->{url});

# the sample drawers, decoded
my (@drawers, %drawer);
{
    open my $fh, '<:raw', $samples or die "$samples: $!";
    while (my $l = <$fh>) { my $d = JSON::PP->new->utf8->decode($l); push @drawers, $d; $drawer{$d->{id}} = $d }
}
is(scalar @drawers, 120, 'samples: 120 drawers');

# ---------------------------------------------------------------- --json
my $r = run_kgx({ env => \%NODB, timeout => 60 }, '--dry-run', $samples, '--json', @EP);
is($r->{rc}, 0, '--dry-run --json samples: rc 0 without --dsn') or diag($r->{err});
my @lines = split /\n/, $r->{out};
is(scalar @lines, 120, 'one JSON line per drawer');
my %got;
my $bad = 0;
for my $l (@lines) {
    my $o = eval { JSON::PP->new->utf8->decode($l) };
    if (!$o || ref $o ne 'HASH') { $bad++; diag("not a JSON object: " . substr($l, 0, 200)); next }
    my @missing = grep { !exists $o->{$_} } qw(id chunks triples dropped would_write);
    if (@missing) { $bad++; diag("$o->{id}: missing keys @missing"); next }
    $got{$o->{id}} = $o;
}
is($bad, 0, 'every line is a JSON object with id, chunks, triples, dropped, would_write');
is_deeply([sort keys %got], [sort map { $_->{id} } @drawers], 'every drawer reported once');

# kept and dropped equal the grammar + default policy, for every single-chunk drawer
my ($checked, $mismatch, $total_chunks) = (0, 0, 0);
my $norm_t = sub { [map { { s => $_->{s}, p => $_->{p}, o => $_->{o}, c => sprintf('%.4f', $_->{c}), raw => $_->{raw} } } @{$_[0]}] };
my $norm_d = sub { [map { { subject => $_->{subject}, predicate => $_->{predicate}, object => $_->{object}, reason => $_->{reason} } } @{$_[0]}] };
for my $d (@drawers) {
    my $o = $got{$d->{id}} or next;
    $total_chunks += @{$o->{chunks}};
    next unless @{$o->{chunks}} == 1;
    $checked++;
    my ($kept, $dropped) = Grammar::default_policy($d->{document});
    my $ok = is_deeply($norm_t->($o->{triples}), $norm_t->($kept), "$d->{id}: kept triples as the grammar implies")
           & is_deeply($norm_d->($o->{dropped}), $norm_d->($dropped), "$d->{id}: dropped triples and reasons");
    $ok &&= is($o->{would_write}, scalar @$kept, "$d->{id}: would_write") if @$kept;
    $mismatch++ unless $ok;
    cmp_ok($_->{tokens}, '>', 0, "$d->{id}: chunk token size") for @{$o->{chunks}};
}
# (drawers whose answer held the per-call cap are asked again in halves: more than one chunk, issue 14)
cmp_ok($checked, '>=', 90, "compared $checked single-chunk drawers with the grammar");
is($mismatch, 0, 'no single-chunk drawer differs from the grammar');

# known drawers, spelled out
my $t = $got{'drawer-0112'};
is_deeply([map { "$_->{s}|$_->{p}|$_->{o}|$_->{raw}" } @{$t->{triples}}], ['Bob|other|tabs|likes'],
          'drawer-0112: "Bob likes tabs (100%)" kept as other, raw likes');
like($t->{dropped}[0]{reason}, qr/^confidence 0\.05 < 0\.50$/, 'drawer-0112: the 5% fact dropped with its confidence');
$t = $got{'drawer-0108'};
is_deeply([sort map { $_->{reason} } @{$t->{dropped}}],
          ['subject is a stopword: It', 'subject is a stopword: They', 'subject is a stopword: This'] , 'drawer-0108: pronoun subjects dropped');
$t = $got{'drawer-0110'};
like($t->{dropped}[0]{reason} // '', qr/longer than 256 characters/, 'drawer-0110: a 300-char name dropped with a reason');
for my $id ('drawer-0113', 'drawer-0114') {
    is_deeply([$got{$id}{chunks}, $got{$id}{triples}, $got{$id}{would_write}], [[], [], 0], "$id (empty/blank): 0 chunks, 0 triples");
}
my ($multi) = grep { @{$_->{chunks}} > 1 } values %got;
ok($multi, 'a long drawer is split into several chunks') and
    ok(!grep({ $_->{tokens} <= 0 } @{$multi->{chunks}}), "$multi->{id}: every chunk has a token size");

my $st = fake_stats($f);
is($st->{extraction_requests}, $total_chunks, "one LLM request per chunk ($total_chunks), none for empty drawers");

# ---------------------------------------------------------------- text report
$r = run_kgx({ env => \%NODB, timeout => 60 }, '--dry-run', $samples, @EP);
is($r->{rc}, 0, '--dry-run samples (text): rc 0') or diag($r->{err});
my %txt;
{
    my $cur;
    for my $l (split /\n/, $r->{out}) {
        if ($l =~ /^drawer (\S+): (\d+) chunks? \(tokens:([ \d]*)/) { $cur = $1; $txt{$cur} = { n => $2, tokens => [split ' ', $3], keep => 0, drop => [] } }
        elsif ($l =~ /^  keep  (.*)$/) { $txt{$cur}{keep}++ }
        elsif ($l =~ /^  drop  (.*) -- (.*)$/) { push @{$txt{$cur}{drop}}, $2 }
        elsif ($l =~ /^  would write (\d+) facts?, dropped (\d+)$/) { $txt{$cur}{would} = $1; $txt{$cur}{dropped} = $2 }
    }
}
is(scalar keys %txt, 120, 'text: a header per drawer');
my $tbad = 0;
for my $id (keys %got) {
    my ($j, $x) = ($got{$id}, $txt{$id});
    $tbad++, diag("$id: text report differs from --json") unless $x
        && $x->{n} == @{$j->{chunks}} && (@{$j->{chunks}} > 32 || join(' ', sort @{$x->{tokens}}) eq join(' ', sort map { $_->{tokens} } @{$j->{chunks}}))   # halves of dense chunks are appended in answer order (issue 14); text lists 32
        && $x->{keep} == @{$j->{triples}} && defined $x->{would} && $x->{would} == $j->{would_write}
        && join("|", sort @{$x->{drop}}) eq join("|", sort map { $_->{reason} } @{$j->{dropped}});   # chunks answer in any order
}
is($tbad, 0, 'text report: chunk counts and token sizes, keep lines, drop lines with reasons, would write — as --json');
like($r->{out}, qr/^drawer drawer-0112: 1 chunk \(tokens: \d+\)\n  keep  Bob \| other \| tabs  \(1\.00, raw likes\)\n  drop  Percent \(150%\) and Alice \| likes \| jazz  -- confidence 0\.05 < 0\.50\n  would write 1 fact, dropped 1$/m,
     'text report of drawer-0112, line by line');

# ---------------------------------------------------------------- plain text on stdin
fake_reset($f);
$r = run_kgx({ env => \%NODB, stdin => "Alice works on Apollo.\nBob uses Redis (80%). Carol likes tea.\n", timeout => 30 },
             '--dry-run', '-', '--json', @EP);
is($r->{rc}, 0, 'plain text on stdin: rc 0') or diag($r->{err});
my @pl = split /\n/, $r->{out};
is(scalar @pl, 1, 'plain text is one drawer');
my $po = eval { JSON::PP->new->utf8->decode($pl[0] // '') } || {};
is_deeply([map { "$_->{s}|$_->{p}|$_->{o}|" . sprintf('%.2f', $_->{c}) } @{$po->{triples} || []}],
          ['Alice|works_on|Apollo|0.90', 'Bob|uses|Redis|0.80', 'Carol|other|tea|0.90'], 'plain text: its three facts');
is(fake_stats($f)->{extraction_requests}, 1, 'plain text: one LLM request');

# ---------------------------------------------------------------- the LLM cannot be reached
my $t0 = time;
$r = run_kgx({ env => \%NODB, timeout => 30 }, '--dry-run', $samples, '--endpoint', 'http://127.0.0.1:1');
my $took = time - $t0;
isnt($r->{rc}, 0, 'unreachable LLM: non-zero exit');
ok(!$r->{timed_out} && $took < 15, sprintf('unreachable LLM: gives up quickly (%.1f s)', $took));
my @errl = grep { /^error: / } split /\n/, $r->{err};
is(scalar @errl, 1, 'unreachable LLM: one error line') or diag($r->{err});
like($errl[0] // '', qr/^error: cannot reach the LLM at http:\/\/127\.0\.0\.1:1\b.*\S/, 'unreachable LLM: "error: cannot reach the LLM …"');
is($r->{out}, '', 'unreachable LLM: no drawer reported as done');

# ---------------------------------------------------------------- a bad JSONL line
fake_reset($f);
my $in = join("\n", '{"id":"ok-1","document":"Alice works on Apollo."}', '{"id":"bad-2","document":', '{"id":"ok-3","document":"Bob uses Redis."}',
              '["not an object"]', '{"id":"ok-5","document":"Carol owns Castle."}') . "\n";
$r = run_kgx({ env => \%NODB, stdin => $in, timeout => 30 }, '--dry-run', '-', '--json', @EP);
isnt($r->{rc}, 0, 'bad JSONL lines: non-zero exit');
like($r->{err}, qr/^error: --dry-run input line 2: .+/m, 'bad JSONL: line 2 reported by number');
like($r->{err}, qr/^error: --dry-run input line 4: .+/m, 'bad JSONL: line 4 reported by number');
my %ids = map { (eval { JSON::PP->new->utf8->decode($_)->{id} } // '?') => 1 } split /\n/, $r->{out};
is_deeply([sort keys %ids], ['ok-1', 'ok-3', 'ok-5'], 'bad JSONL: the other lines are processed');

# ---------------------------------------------------------------- policies that fail to load
for my $case (['load_syntax.lua', qr/load_syntax\.lua:\d+:/], ['load_raise.lua', qr/load_raise\.lua:7:/],
              ['load_hooktype.lua', qr/load_hooktype\.lua.*\b(request|parse)\b/], ['load_require.lua', qr/load_require\.lua:\d+:.*no_such_plugin/]) {
    my ($file, $re) = @$case;
    $t0 = time;
    $r = run_kgx({ env => \%NODB, timeout => 30 }, '--policy', "$pol/prompts/$file", '--dry-run', $samples, @EP);
    is($r->{rc}, 2, "$file: rc 2");
    my @el = grep { length } split /\n/, $r->{err};
    is(scalar @el, 1, "$file: one line on stderr") or diag($r->{err});
    like($el[0] // '', $re, "$file: names the file and line / hook") or diag($r->{err});
    is($r->{out}, '', "$file: nothing on stdout");
}
$r = run_kgx({ env => \%NODB, timeout => 30 }, '--policy', "$pol/prompts/no_such_policy.lua", '--dry-run', $samples, @EP);
is($r->{rc}, 2, 'a missing policy file: rc 2');
like($r->{err}, qr/no_such_policy\.lua/, 'a missing policy file: named');

done_testing();
