#!/usr/bin/perl
# ops_prometheus.t — /metrics as Prometheus itself reads it, and the Grafana dashboard against it.
#   - `promtool check metrics` (Debian's prometheus package) passes on a live daemon's /metrics, after
#     real work (counters, histograms and per-endpoint samples all present); it is also shown to fail
#     on a broken exposition, so the check can fail.
#   - deploy/grafana/kgx-dashboard.json is valid JSON with panels and targets; every expression is
#     valid PromQL (`promtool check rules` on them as recording rules); every kgx_* metric it queries,
#     and every label="value" it matches on, exists in /metrics.
# promtool missing is a failure, not a skip: `scripts/kgx test` installs prometheus.
use strict;
use warnings;
use KgxTest;
use IO::Socket::INET;
use HTTP::Tiny;
use File::Temp qw(tempdir);

my $root = kgx_root();
my $tmp = tempdir('kgx-prom-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chomp(my $promtool = `command -v promtool 2>/dev/null` // '');
ok($promtool ne '', 'promtool is installed')
    or do { diag('promtool not found: scripts/install-deps test (Debian package prometheus)'); done_testing(); exit 1 };

sub write_file { my ($p, $s) = @_; open(my $fh, '>', $p) or die "$p: $!"; print $fh $s; close $fh; return $p }
# promtool with a file on stdin (or as arguments); returns (exit code, output)
sub promtool {
    my ($stdin, @args) = @_;
    my $cmd = join(' ', map { "'$_'" } $promtool, @args) . ($stdin ? " <'$stdin'" : '') . ' 2>&1';
    my $out = `$cmd`;
    return ($? >> 8, $out);
}

# ---------------------------------------------------------------- a daemon that has done work
my $dsn = fresh_db('prom');
psql($dsn, q{CREATE TABLE mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text NOT NULL, metadata jsonb)});
my $fake = start_fake('--parallel', 2);
my $ua = HTTP::Tiny->new(timeout => 10);
my $port = free_port();
my $base = "http://127.0.0.1:$port";
my $k = spawn_kgx({ env => { KGX_API_KEY => undef } }, '--dsn', $dsn, '--endpoint', $fake->{url},
                  '--http', "127.0.0.1:$port", '--poll-interval', 1, '--worker-id', 'ops-prom');
ok(wait_until(20, sub { $ua->get("$base/healthz")->{status} == 200 }), 'daemon serves /healthz');
psql($dsn, q{INSERT INTO mempalace_drawers
             SELECT 'p' || i, 'w', 'r', 'Service' || i || ' calls the gateway. Service' || i || ' uses Redis.', '{}'
               FROM generate_series(1, 6) i;
             INSERT INTO mempalace_kg_extraction_queue (drawer_id, wing, room)
             SELECT id, wing, room FROM mempalace_drawers});
ok(wait_until(30, sub { my ($n) = psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE completed_at IS NOT NULL'); $n == 6 }),
   'the daemon completed 6 drawers');
# the queue depth gauge follows the status timer; wait until the endpoint shows its requests
my $metrics = '';
ok(wait_until(15, sub { $metrics = $ua->get("$base/metrics")->{content} // ''; $metrics =~ /^kgx_endpoint_requests_total\{[^}]*\} [1-9]/m }),
   '/metrics shows the endpoint\'s requests') or diag($metrics);
is(stop_kgx($k), 0, 'daemon stops with 0');

# ---------------------------------------------------------------- promtool check metrics
my $mfile = write_file("$tmp/metrics.txt", $metrics);
my ($rc, $out) = promtool($mfile, 'check', 'metrics');
is($rc, 0, 'promtool check metrics: exit 0 on /metrics') or diag($out);
is($out, '', 'promtool check metrics: no lint findings') or diag($out);
like($metrics, qr/^kgx_llm_latency_seconds_bucket\{le="\+Inf"\} [1-9]/m, 'latency histogram has observations');
like($metrics, qr/^kgx_endpoint_slots\{endpoint="\Q$fake->{url}\E"\} 2$/m, 'kgx_endpoint_slots of the fake: 2');
like($metrics, qr/^kgx_endpoint_up\{endpoint="\Q$fake->{url}\E"\} 1$/m, 'kgx_endpoint_up of the fake: 1');
# the check can fail: a counter without _total and a sample with a broken label
my $broken = $metrics . "# HELP kgx_bad a counter named badly\n# TYPE kgx_bad counter\nkgx_bad 1\n";
($rc, $out) = promtool(write_file("$tmp/bad1.txt", $broken), 'check', 'metrics');
isnt($rc, 0, 'promtool check metrics fails on a counter without _total') or diag($out);
($rc, $out) = promtool(write_file("$tmp/bad2.txt", $metrics . "kgx_up{x=\"1} 1\n"), 'check', 'metrics');
isnt($rc, 0, 'promtool check metrics fails on a broken sample line') or diag($out);

# samples: name -> { 'label="value"' => 1 }
my (%names, %labels);
for my $line (split /\n/, $metrics) {
    next if $line =~ /^#/ || $line eq '';
    my ($name, $lab) = $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/ or next;
    $names{$name} = 1;
    $labels{$name}{"$1=\"$2\""} = 1 while defined $lab && $lab =~ /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;
}

# ---------------------------------------------------------------- the dashboard
my $dfile = "$root/deploy/grafana/kgx-dashboard.json";
my $dash = eval { json_decode(read_file($dfile) // '') };
ok($dash && ref $dash eq 'HASH', 'deploy/grafana/kgx-dashboard.json is valid JSON') or diag($@);
$dash //= {};
ok(($dash->{title} // '') ne '' && ($dash->{uid} // '') ne '', 'dashboard has a title and a uid');
my @panels = grep { ($_->{type} // '') ne 'row' } @{ $dash->{panels} // [] };
cmp_ok(scalar @panels, '>=', 10, 'dashboard has at least 10 panels');
my %titles = map { $_->{title} => 1 } @panels;
for my $t ('Drawers / min', 'ETA (queue / rate)', 'Queue depth', 'Slots busy per endpoint', 'Errors / min by kind', 'LLM latency',
           'Answer reuse: LLM requests saved / min') {
    ok($titles{$t}, "panel '$t'");
}
my (@exprs, %ids);
for my $p (@panels) {
    ok(!$ids{$p->{id}}++, "panel id $p->{id} is unique");
    my @t = @{ $p->{targets} // [] };
    ok(@t > 0, "panel '$p->{title}' has targets");
    push @exprs, map { [$p->{title}, $_->{expr} // ''] } @t;
}
# every expression is PromQL (promtool parses recording rules)
my $rules = "groups:\n  - name: kgx-dashboard\n    rules:\n";
for my $i (0 .. $#exprs) {
    (my $e = $exprs[$i][1]) =~ s/'/''/g;
    $rules .= "      - record: kgx:dashboard_expr_$i\n        expr: '$e'\n";
}
($rc, $out) = promtool(undef, 'check', 'rules', write_file("$tmp/rules.yml", $rules));
is($rc, 0, 'every dashboard expression is valid PromQL (promtool check rules, ' . scalar(@exprs) . ' expressions)')
    or diag($out);
# every metric and label="value" matcher exists in /metrics
my %used;
for my $x (@exprs) {
    my ($title, $e) = @$x;
    while ($e =~ /\b(kgx_[a-z0-9_]+)(\{([^}]*)\})?/g) {
        my ($m, $sel) = ($1, $3);
        $used{$m}++;
        ok($names{$m}, "'$title': $m is in /metrics");
        next unless defined $sel;
        while ($sel =~ /(\w+)\s*(=~|=)\s*"([^"]*)"/g) {
            my ($l, $op, $v) = ($1, $2, $3);
            for my $alt ($op eq '=~' ? split(/\|/, $v) : ($v)) {
                ok($labels{$m}{"$l=\"$alt\""}, "'$title': $m\{$l=\"$alt\"} is in /metrics");
            }
        }
    }
    while ($e =~ /\bby \(([^)]*)\)/g) {
        for my $l (grep { $_ ne 'le' } split /\s*,\s*/, $1) {
            ok(scalar(grep { /\Q$l\E="/ } map { keys %{ $labels{$_} // {} } } grep { /^kgx_/ } keys %names),
               "'$title': label $l exists on some kgx metric");
        }
    }
}
cmp_ok(scalar keys %used, '>=', 10, 'the dashboard uses at least 10 kgx metrics (' . join(' ', sort keys %used) . ')');

done_testing();
