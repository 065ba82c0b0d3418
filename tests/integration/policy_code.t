#!/usr/bin/perl
# policy_code.t — the second shipped policy, prompts/code.lua, end to end against the fake: chat
# completions (/v1/chat/completions), its code vocabulary (strict: unknown predicates dropped), its
# 0.75 confidence threshold; a backfill completes and writes code-vocabulary relations.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/lib", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;

my $root = kgx_root();
my $code = "$root/prompts/code.lua";
my %ENV0 = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);

my $dsn = fresh_db('pol_code');
my $f = start_fake();
add_drawers($dsn, [
    { id => 'c1', wing => 'code', document => "parser.c calls lexer.c.\nThe scheduler uses Redis.\nkgx-run depends on libuv." },
    { id => 'c2', wing => 'code', document => "HttpClient is a Component. The worker requires libpq (80%). script.c owns the Lua state." },
    { id => 'c3', wing => 'code', document => "The engine likes speed. The README mentions kgx. Graph created Edge (70%). Queue is part of Engine." },
    { id => 'c4', wing => 'code', document => "def main(): pass  # no facts here" },
]);

my $r = run_kgx({ env => \%ENV0, timeout => 60 }, '--dsn', $dsn, '--endpoint', $f->{url}, '--policy', $code, '--backfill');
is($r->{rc}, 0, 'backfill with prompts/code.lua: rc 0') or diag($r->{err});
like($r->{err}, qr/policy=code version=1/, 'the log names the code policy');
like($r->{err}, qr/^final: completed=4 pending=0 in_flight=0 errors=0$/m, 'final: 4 completed, no errors');

my $st = fake_stats($f);
is($st->{by_path}{'/v1/chat/completions'}, 4, 'fake: four requests on /v1/chat/completions');
ok(!$st->{by_path}{'/completion'}, 'fake: none on /completion');

my $q = queue($dsn);
is_deeply({ map { $_ => [$q->{$_}{completed} ? 1 : 0, $q->{$_}{triples}] } keys %$q },
          { c1 => [1, 3], c2 => [1, 3], c3 => [1, 1], c4 => [1, 0] }, 'every drawer completed with its fact count');

is_deeply([map { "$_->{s}|$_->{rel}|$_->{o}" . ($_->{raw} ? "|$_->{raw}" : '') } @{edges($dsn)}],
          ['HttpClient|is_a|Component', 'Queue|part_of|Engine', 'The scheduler|uses|Redis', 'The worker|depends_on|libpq|requires',
           'kgx-run|depends_on|libuv', 'parser.c|calls|lexer.c', 'script.c|owns|the Lua state'],
          'code-vocabulary relations written; likes/mentions (not in the vocabulary) and the 70% fact are not');
my %vocab = map { $_ => 1 } qw(imports calls implements extends depends_on returns defines uses raises tests configures
                               part_of is_a creates owns works_on);
my @rels = map { $_->{relation_type} } @{sql_json($dsn, 'SELECT DISTINCT relation_type FROM public.kgx_mempalace_kg_support')};
is(scalar(grep { !$vocab{$_} } @rels), 0, 'every stored relation_type is in the code vocabulary');
is_deeply([map { "$_->{policy}/$_->{policy_version}" } @{sql_json($dsn, 'SELECT DISTINCT policy, policy_version FROM public.kgx_mempalace_kg_answers')}],
          ['code/1'], 'stored answers carry policy code/1');
# the stored answers are chat envelopes
my $a = sql_json($dsn, q{SELECT body FROM public.kgx_mempalace_kg_answers WHERE drawer_id = 'c1'});
my $env = eval { json_decode($a->[0]{body}) } || {};
ok(ref $env->{choices} eq 'ARRAY' && defined $env->{choices}[0]{message}{content}, 'the stored answer is a chat completion envelope');

# the drops, through --dry-run with the same policy
$r = run_kgx({ env => \%ENV0, timeout => 30, stdin => '{"id":"c3","document":"The engine likes speed. The README mentions kgx. Graph created Edge (70%). Queue is part of Engine."}' . "\n" },
             '--dry-run', '-', '--json', '--endpoint', $f->{url}, '--policy', $code);
is($r->{rc}, 0, 'dry-run with the code policy: rc 0') or diag($r->{err});
my $o = eval { json_decode((split /\n/, $r->{out})[0]) } || {};
is_deeply([sort map { $_->{reason} } @{$o->{dropped} || []}],
          ['confidence 0.70 < 0.75', "predicate 'likes' is not in the vocabulary", "predicate 'mentions' is not in the vocabulary"],
          'dropped with reasons: unknown predicates (strict) and the 0.75 threshold');

done_testing();
