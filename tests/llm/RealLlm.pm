package RealLlm;
# Helpers for the tests against Debian's real llama-server (tests/integration/llm_*.t).
#
#   my $s = llm_server();                  # the suite's server (KGX_TEST_LLM_URL, -np 4, ctx 8192)
#   my $s = llm_up(np => 'none', ctx => 1024);   # a server of our own; taken down at END
#   my $r = llm_post($s, '/completion', {...});  # {status, headers, body, json}
#   my $r = llm_get($s, '/props');
#   llm_schema(%opts)                       # the triples JSON schema (min_items, max_items)
# Every failure to bring a server up dies with scripts/sandbox-llm's reason and the version.
use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use JSON::PP;

our @EXPORT = qw(llm_server llm_up llm_down llm_post llm_get llm_schema llm_version llm_log);

my $J = JSON::PP->new->canonical->allow_nonref;
my @ours;
my $root = $ENV{KGX_ROOT} // do { require File::Basename; require Cwd;
                                   Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..') };

sub llm_version { $ENV{KGX_TEST_LLM_VERSION} // 'unknown version' }

sub llm_server {
    my $url = $ENV{KGX_TEST_LLM_URL}
        or die "KGX_TEST_LLM_URL is not set: run through scripts/run-tests (it brings up scripts/sandbox-llm)\n";
    return { url => $url, id => 'suite', version => llm_version() };
}

sub llm_up {
    my (%o) = @_;
    local $ENV{KGX_SANDBOX_LLM_NP} = $o{np} // 4;
    local $ENV{KGX_SANDBOX_LLM_CTX} = $o{ctx} // 8192;
    local $ENV{KGX_SANDBOX_QUIET} = 1;
    local $ENV{KGX_TEST_LLM_URL};           # always a server of our own here
    delete $ENV{KGX_TEST_LLM_URL};
    my $name = $o{name} // 'llmtest';
    my $out = `"$root/scripts/sandbox-llm" up $name 2>&1`;
    my %e = $out =~ /^export (\w+)=(.*)$/mg;
    for (values %e) { s/^'(.*)'$/$1/; s/\\(.)/$1/g }
    die "scripts/sandbox-llm up failed (" . llm_version() . "): $out\n" unless $? == 0 && $e{KGX_TEST_LLM_URL};
    my $s = { url => $e{KGX_TEST_LLM_URL}, id => $e{KGX_LLM_SANDBOX_ID}, version => $e{KGX_TEST_LLM_VERSION} };
    push @ours, $s->{id};
    return $s;
}

# the server's own log (a server this test brought up), for counting what it was asked
sub llm_log {
    my ($s) = @_;
    my $cache = $ENV{KGX_SANDBOX_CACHE} // "$root/.cache/sandbox";
    open(my $fh, '<', "$cache/runs-llm/$s->{id}.env") or return '';
    my ($run) = map { /^HOSTRUN=(.*)$/ ? $1 : () } <$fh>;
    return '' unless $run && open(my $lf, '<', "$run/server.log");
    local $/;
    return <$lf>;
}

sub llm_down {
    my ($s) = @_;
    system("\"$root/scripts/sandbox-llm\" down '$s->{id}' >/dev/null 2>&1") if $s->{id} =~ /^[\w-]+$/;
    @ours = grep { $_ ne $s->{id} } @ours;
}

END {
    my $rc = $?;
    system("\"$root/scripts/sandbox-llm\" down '$_' >/dev/null 2>&1") for grep { /^[\w-]+$/ } @ours;
    $? = $rc;
}

my $http = HTTP::Tiny->new(timeout => 120, keep_alive => 0);

sub _res {
    my ($r) = @_;
    my $j = eval { $J->decode($r->{content}) };
    return { status => $r->{status}, headers => $r->{headers}, body => $r->{content}, json => $j };
}

sub llm_post {
    my ($s, $path, $body) = @_;
    return _res($http->request('POST', "$s->{url}$path",
                               { headers => { 'Content-Type' => 'application/json' },
                                 content => ref $body ? $J->encode($body) : $body }));
}

sub llm_get { my ($s, $path) = @_; return _res($http->request('GET', "$s->{url}$path")) }

sub llm_schema {
    my (%o) = @_;
    my $items = { type => 'object',
                  properties => { subject => { type => 'string' }, predicate => { type => 'string' },
                                  object => { type => 'string' },
                                  confidence => { type => 'integer', minimum => 0, maximum => 100 } },
                  required => [qw(subject predicate object confidence)] };
    my $list = { type => 'array', items => $items, maxItems => $o{max_items} // 10 };
    $list->{minItems} = $o{min_items} if $o{min_items};
    return { type => 'object', properties => { triples => $list }, required => ['triples'] };
}

1;
