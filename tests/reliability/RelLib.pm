package RelLib;
# Shared helpers of the reliability scenarios (tests/reliability/*.pl, tests/integration/rel_smoke.t).
#
#   my $dsn = rel_db('faults', 200);          # fresh database + mempalace_drawers with 200 generated drawers
#   my $ref = clean_ref(200);                 # canonical dump of a clean backfill of the same drawers (cached)
#   my $r = backfill($dsn, $fake, @extra);    # run_kgx --backfill with short retry backoff
#   my $c = canon($dsn);                      # {edges, vertices, dup_v, dup_e, queue{id=>state}, facts{id=>..}, rows{id=>..}}
#   my @d = compare($ref, $c, parked => {id=>1});   # differences (empty = identical)
#   record(scenario => 'fault:500', trials => 3, passes => 3, lost => 0, dups => 0, recover_s => 1.2, note => '');
#
# REL_TRIALS (default 3) scales the trial counts; REL_QUICK=1 = the CI subset sizes.
# REL_RESULTS: file the result lines (JSON, one per scenario row) are appended to.
use strict;
use warnings;
use lib ($ENV{KGX_ROOT} // do { require File::Basename; require Cwd;
         Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..') }) . '/tests/lib';
use KgxTest;
use POSIX ();
use Time::HiRes ();
use IO::Socket::INET;
use Exporter 'import';

our @EXPORT = qw(rel_db gen_text clean_ref canon compare backfill record trials quick kgx_env
                 start_fake_at fake_url rss_kb now total_lost dump_drawer_facts graph_name count0);

# a count from the queue, 0 while it does not exist yet (a kgx-run on a loaded machine may still be
# setting up its schema when a trial looks, or was stopped before it did)
sub count0 {
    my ($dsn, $sql) = @_;
    return 0 unless psql($dsn, "SELECT to_regclass('public.mempalace_kg_extraction_queue') IS NOT NULL") eq 't';
    my $n = psql($dsn, $sql);
    return defined $n && length $n ? $n : 0;
}
sub trials { my $d = shift // 3; my $t = $ENV{REL_TRIALS} // $d; return $t < 1 ? 1 : $t }
sub quick  { return ($ENV{REL_QUICK} // '') ? 1 : 0 }
sub now    { Time::HiRes::time() }
sub graph_name { 'mempalace_kg' }
sub kgx_env { return { KGX_RETRY_BASE_MS => ($ENV{KGX_RETRY_BASE_MS} // 20), @_ } }

# The drawer text of drawer i: 4 facts, entities shared across drawers (so edges get support > 1
# and concurrent writers contend on the same rows).
sub gen_text_sql {
    return q{format('Person%s works on Project%s. Person%s uses Tool%s. Project%s depends on Lib%s (80%%). Tool%s is part of Suite%s.',
                    i, i % 37, i, i % 11, i % 37, i % 53, i % 11, i % 5)};
}
sub gen_text {
    my $i = shift;
    return sprintf('Person%d works on Project%d. Person%d uses Tool%d. Project%d depends on Lib%d (80%%). Tool%d is part of Suite%d.',
                   $i, $i % 37, $i, $i % 11, $i % 37, $i % 53, $i % 11, $i % 5);
}

# fresh database with $n drawers d00001..; $opt{extra} = [[id, text], ...] more drawers
sub rel_db {
    my ($tag, $n, %opt) = @_;
    my $dsn = fresh_db("rel_$tag");
    my $t = gen_text_sql();
    psql($dsn, "CREATE TABLE public.mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text, metadata jsonb);"
             . "INSERT INTO public.mempalace_drawers SELECT 'd' || lpad(i::text, 5, '0'), 'wing' || (i % 3), 'room', $t, '{}'::jsonb"
             . " FROM generate_series(1, $n) i;");
    for my $x (@{ $opt{extra} // [] }) {
        my ($id, $text) = @$x;
        psql($dsn, 'INSERT INTO public.mempalace_drawers VALUES (' . q_lit($id) . ", 'wing', 'room', " . q_lit($text) . ", '{}')");
    }
    return $dsn;
}

sub q_lit { my $s = shift; $s =~ s/'/''/g; return "'$s'" }

sub fake_url { $_[0]->{url} }

# a fake on a fixed port (for outage restarts); returns like start_fake
sub start_fake_at {
    my ($port, @args) = @_;
    my $f;
    for my $try (1 .. 50) {
        $f = eval { start_fake('--port', $port, @args) };
        return $f if $f && $f->{port} == $port;
        Time::HiRes::sleep(0.1);
    }
    die "could not restart the fake on port $port: $@";
}

sub backfill {
    my ($dsn, $fake, @extra) = @_;
    my $opt = ref $extra[0] eq 'HASH' ? shift @extra : {};
    my $t0 = now();
    my $r = run_kgx({ env => kgx_env(%{ $opt->{env} // {} }), timeout => $opt->{timeout} // 300 },
                    '--dsn', $dsn, '--endpoint', ref $fake ? $fake->{url} : $fake, '--backfill',
                    '--progress-interval', 5, @extra);
    $r->{secs} = now() - $t0;
    return $r;
}

my $G = 'mempalace_kg';
sub canon {
    my ($dsn) = @_;
    my %c;
    my $k = q{(agtype_access_operator(VARIADIC ARRAY[x.properties, '"key"'::agtype])::text)};
    $c{edges} = [psql($dsn, qq{SET search_path = ag_catalog, public; SELECT (agtype_access_operator(VARIADIC ARRAY[a.properties, '"key"'::agtype])::text) || '|' || (agtype_access_operator(VARIADIC ARRAY[r.properties, '"relation_type"'::agtype])::text) || '|' ||
        (agtype_access_operator(VARIADIC ARRAY[b.properties, '"key"'::agtype])::text) || '|' || (agtype_access_operator(VARIADIC ARRAY[r.properties, '"support"'::agtype])::text) || '|' || (agtype_access_operator(VARIADIC ARRAY[r.properties, '"confidence"'::agtype])::text)
        FROM $G."RELATION" r JOIN $G."Entity" a ON a.id = r.start_id JOIN $G."Entity" b ON b.id = r.end_id ORDER BY 1})];
    $c{vertices} = [psql($dsn, qq{SET search_path = ag_catalog, public; SELECT (agtype_access_operator(VARIADIC ARRAY[properties, '"key"'::agtype])::text) FROM $G."Entity" ORDER BY 1})];
    $c{dup_v} = 0 + psql($dsn, qq{SET search_path = ag_catalog, public; SELECT count(*) - count(DISTINCT agtype_access_operator(VARIADIC ARRAY[properties, '"key"'::agtype])::text) FROM $G."Entity"});
    $c{dup_e} = 0 + psql($dsn, qq{SET search_path = ag_catalog, public; SELECT count(*) - count(DISTINCT (start_id, end_id, agtype_access_operator(VARIADIC ARRAY[properties, '"relation_type"'::agtype])::text)) FROM $G."RELATION"});
    my %q;
    for (psql($dsn, q{SELECT drawer_id || '|' || CASE WHEN completed_at IS NOT NULL THEN 'completed' WHEN error IS NOT NULL THEN 'parked'
                      WHEN started_at IS NOT NULL THEN 'claimed' ELSE 'pending' END || '|' || attempts || '|' || coalesce(replace(error, E'\n', ' '), '')
                      FROM public.mempalace_kg_extraction_queue})) {
        my ($id, $st, $att, $err) = split /\|/, $_, 4;
        $q{$id} = $st;
        $c{rows}{$id} = { state => $st, attempts => $att, error => $err };
    }
    $c{queue} = \%q;
    my %f;
    for (psql($dsn, qq{SET search_path = ag_catalog, public; SELECT drawer_id || '|' || string_agg(subject_key || '>' || relation_type || '>' || object_key || '>' || confidence, ';'
                       ORDER BY subject_key, relation_type, object_key) FROM public.kgx_${G}_support GROUP BY drawer_id})) {
        my ($id, $facts) = split /\|/, $_, 2;
        $f{$id} = $facts;
    }
    $c{facts} = \%f;
    return \%c;
}

sub dump_drawer_facts { my ($c, $id) = @_; return $c->{facts}{$id} // '' }

# differences between a reference and a trial. parked => {id=>1}: drawers expected parked (their facts
# are retracted from the expectation: the graph is then compared against the reference's edges minus
# only those drawers' support — so we compare per-drawer facts and skip edge/vertex equality).
sub compare {
    my ($ref, $got, %o) = @_;
    my @d;
    my $parked = $o{parked} // {};
    push @d, "duplicate vertices: $got->{dup_v}" if $got->{dup_v};
    push @d, "duplicate edges: $got->{dup_e}" if $got->{dup_e};
    if (!%$parked) {
        my ($re, $ge) = (join("\n", @{ $ref->{edges} }), join("\n", @{ $got->{edges} }));
        push @d, "edges differ (" . scalar(@{ $ref->{edges} }) . " vs " . scalar(@{ $got->{edges} }) . ")" if $re ne $ge;
        push @d, "vertices differ (" . scalar(@{ $ref->{vertices} }) . " vs " . scalar(@{ $got->{vertices} }) . ")"
            if join("\n", @{ $ref->{vertices} }) ne join("\n", @{ $got->{vertices} });
    }
    my ($lost, $wrong, $badpark) = (0, 0, 0);
    my @ex;
    for my $id (sort keys %{ $ref->{queue} }) {
        my $st = $got->{queue}{$id} // 'absent';
        if ($parked->{$id}) {
            if ($st ne 'parked') { $badpark++; push @ex, "$id expected parked, is $st" }
            elsif (($got->{facts}{$id} // '') ne '') { $wrong++; push @ex, "$id parked but has facts" }
            next;
        }
        if ($st ne 'completed') { $lost++; push @ex, "$id is $st" . ($got->{rows}{$id} ? " ($got->{rows}{$id}{error})" : ''); next }
        if (($ref->{facts}{$id} // '') ne ($got->{facts}{$id} // '')) { $wrong++; push @ex, "$id facts differ" }
    }
    push @d, "drawers not completed: $lost" if $lost;
    push @d, "drawers completed with facts unlike the clean run: $wrong" if $wrong;
    push @d, "drawers not parked as expected: $badpark" if $badpark;
    push @d, 'e.g. ' . join('; ', @ex[0 .. ($#ex < 4 ? $#ex : 4)]) if @ex;
    return @d;
}

# drawers lost or wrong in a trial (for the table's "lost" column)
sub total_lost {
    my ($ref, $got, %o) = @_;
    my $parked = $o{parked} // {};
    my $n = 0;
    for my $id (keys %{ $ref->{queue} }) {
        next if $parked->{$id};
        my $st = $got->{queue}{$id} // 'absent';
        $n++ if $st ne 'completed' || ($ref->{facts}{$id} // '') ne ($got->{facts}{$id} // '');
    }
    return $n;
}

# clean reference for $n generated drawers (+ extra), computed once per process
my %REF;
sub clean_ref {
    my ($n, %opt) = @_;
    my $key = join ',', $n, (map { "@$_" } @{ $opt{extra} // [] }), 'x', @{ $opt{exclude} // [] };
    return $REF{$key} if $REF{$key};
    my $dsn = rel_db('clean', $n, %opt);
    if (my $ex = $opt{exclude}) {
        psql($dsn, 'DELETE FROM public.mempalace_drawers WHERE id IN (' . join(',', map { q_lit($_) } @$ex) . ')') if @$ex;
    }
    my $f = start_fake();
    my $r = backfill($dsn, $f);
    stop_fake($f);
    die "clean reference run failed: rc $r->{rc}\n$r->{err}" if $r->{rc} != 0;
    my $c = canon($dsn);
    my @bad = grep { $c->{queue}{$_} ne 'completed' } keys %{ $c->{queue} };
    die "clean reference run left " . scalar(@bad) . " drawers not completed" if @bad;
    $c->{secs} = $r->{secs};
    psql(admin_dsn(), qq{DROP DATABASE IF EXISTS "} . ($dsn =~ m{/([^/?]+)(?:\?|$)})[0] . qq{" WITH (FORCE)}) unless $ENV{KGX_KEEP_DB};
    return $REF{$key} = $c;
}

sub rss_kb {
    my $pid = shift;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

sub record {
    my %r = @_;
    $r{lost} //= 0; $r{dups} //= 0;
    my $line = json_encode(\%r);
    if (my $f = $ENV{REL_RESULTS}) {
        open my $fh, '>>', $f or die "$f: $!";
        print $fh "$line\n";
        close $fh;
    }
    diag(sprintf('RESULT %-28s trials=%s passes=%s lost=%s dups=%s recover=%s %s', $r{scenario}, $r{trials}, $r{passes},
                 $r{lost}, $r{dups}, $r{recover_s} // '-', $r{note} // ''));
}

1;
