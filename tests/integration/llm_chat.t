#!/usr/bin/env perl
# llm_chat — the default policy through the model's chat template against the real llama-server, and
# the same policy as a raw /completion prompt: both answer every sample drawer without a protocol error,
# and the chat path keeps the instructions a byte-identical prefix, so each slot reuses them from its
# prompt cache (llamacpp:prompt_tokens_cached_total; timings.cache_n per answer).
use strict;
use warnings;
use lib "$ENV{KGX_ROOT}/tests/llm";
use KgxTest;
use RealLlm;
use File::Temp ();

my $root = kgx_root();
my %ENV0 = (MEMPALACE_POSTGRES_DSN => undef, KGX_POLICY => undef, MEMPALACE_KG_LLM_ENDPOINT => undef);
diag("real server: " . llm_version());

# the same policy, asking /completion with the raw prompt (what the default did before)
my $tmp = File::Temp->newdir();
mkdir "$tmp/prompts";
symlink("$root/plugins", "$tmp/plugins") or die "symlink: $!";
my $pol = read_file("$root/prompts/default.lua");
my $raw = $pol;
$raw =~ s/llama\.chat\(/llama.completion(/g or die 'no llama.chat in prompts/default.lua';
$raw =~ s/overhead_tokens\(PROMPT, "chat"\)/overhead_tokens(PROMPT, "completion")/;
open(my $pf, '>', "$tmp/prompts/raw.lua") or die; print $pf $raw; close $pf;

sub metric { my ($m, $k) = @_; return $m =~ /^llamacpp:\Q$k\E (\S+)$/m ? $1 + 0 : 0 }

my %got;
for my $mode (['chat', "$root/prompts/default.lua"], ['completion', "$tmp/prompts/raw.lua"]) {
    my ($name, $policy) = @$mode;
    my $s = llm_up(np => 4, ctx => 8192, name => $name);
    my $r = run_kgx({ env => \%ENV0, timeout => 400 }, '--dry-run', "$root/samples/drawers.jsonl", '--json',
                    '--endpoint', $s->{url}, '--policy', $policy);
    is($r->{rc}, 0, "$name: dry-run of the samples exits 0") or diag(substr($r->{err}, -2000));
    my @lines = grep { /\S/ } split /\n/, $r->{out};
    is(scalar(grep { /"error"/ } @lines), 0, "$name: no drawer failed");
    is(scalar(grep { /"would_write"/ } @lines), 120, "$name: 120 drawers answered");
    my $m = llm_get($s, '/metrics')->{body} // '';
    my $cached = metric($m, 'prompt_tokens_cached_total');
    my $evald = metric($m, 'prompt_tokens_total');
    my $req = () = llm_log($s) =~ /launch_slot_/g;
    my $errs = () = $r->{err} =~ /llm http [45]\d\d/g;
    $got{$name} = { share => ($cached + $evald) ? $cached / ($cached + $evald) : 0, req => $req };
    diag(sprintf "%s: %d requests, %d prompt tokens from the cache, %d evaluated: %.1f %% reused; %d HTTP errors",
         $name, $req, $cached, $evald, 100 * $got{$name}{share}, $errs);
    llm_down($s);
}
cmp_ok($got{chat}{share}, '>', 0.3, 'chat: the instructions come from the slot cache (byte-identical prefix)');
cmp_ok($got{chat}{share}, '>=', $got{completion}{share} - 0.1, 'chat reuses about as much as the raw prompt');
done_testing();
