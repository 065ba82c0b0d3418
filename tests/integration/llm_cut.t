#!/usr/bin/env perl
# llm_cut — kgx against Debian's real llama-server (scripts/sandbox-llm): a prompt over the slot's
# context (400, learned n_ctx, re-split); an answer cut at n_predict splits only that chunk, bounded,
# and names n_predict when it cannot go further.
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/llm", "$ENV{KGX_ROOT}/tests/integration/policies";
use KgxTest;
use PolTest;
use RealLlm;
use File::Temp ();

my $root = kgx_root();
my %ENV0 = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);
diag("real server: " . llm_version());

# ---------------------------------------------------------------- a prompt over the slot's context
my $s2 = llm_up(np => 4, ctx => 4096, name => 'small');      # 1024 tokens a slot
my $dsn = fresh_db('llm_overflow');
add_drawers($dsn, [{ id => 'big', document => join(' ', map { "Alice works on Apollo number $_." } 1 .. 300) }]);
my $r = run_kgx({ env => \%ENV0, timeout => 300 }, '--dsn', $dsn, '--endpoint', $s2->{url}, '--backfill',
                '--ctx-size', 8192);
is($r->{rc}, 0, 'kgx told 8192 tokens a slot, the server has 1024: still completes') or diag(substr($r->{err}, -2000));
like($r->{err}, qr/context exceeded \(n_ctx=1024\)/, 'the 400 taught kgx the slot\'s real n_ctx and it split the drawer');
like($r->{err}, qr/^final: completed=1 pending=0/m, 'the drawer completed');

# ---------------------------------------------------------------- cut at n_predict
my $tmp = File::Temp->newdir();
mkdir "$tmp/prompts";
symlink("$root/plugins", "$tmp/plugins") or die "symlink: $!";
my $pol = read_file("$root/prompts/default.lua");
$pol =~ s/n_ctx = ctx\.n_ctx, temperature = TEMPERATURE,/$& extra = { n_predict = 20 },/ or die 'policy edit';
# the list is the schema itself (tuples, the default format) or its `triples` property (objects)
$pol .= "\nlocal list_ = SCHEMA.properties and SCHEMA.properties.triples or SCHEMA\nlist_.minItems = 2\n";
open(my $pf, '>', "$tmp/prompts/short.lua") or die; print $pf $pol; close $pf;
my $doc = join(' ', map { "Bob uses Kafka in team $_." } 1 .. 40);
$r = run_kgx({ env => \%ENV0, timeout => 120, stdin => json_encode({ id => 'cut', document => $doc }) . "\n" },
             '--dry-run', '-', '--endpoint', $s2->{url}, '--policy', "$tmp/prompts/short.lua", '--max-attempts', 1);
like($r->{err}, qr/answer cut at n_predict: chunk 0 \(\d+ tokens\) split into \d+ smaller chunks/,
     'an answer cut at n_predict splits only that chunk smaller') or diag(substr($r->{err}, -2000));
like($r->{out}, qr/FAILED after 1 attempts: answer cut at n_predict/,
     'bounded: when the pieces are still cut the drawer fails with a reason naming n_predict') or diag($r->{out});
unlike($r->{out}, qr/would write/, 'nothing written from a cut answer');
llm_down($s2);

done_testing();
