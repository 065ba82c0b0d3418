package KgxGraph;
# Graph helpers for the core integration tests (tests/integration/core_*.t). Core modules only.
#
#   use KgxGraph;
#   my $c = gen_corpus(n => 500, seed => 7);     # {docs => {id => text}, facts => {id => [[sk,rel,ok],..]},
#                                                 #  names => [...]}: sentences per tests/fake/GRAMMAR.md
#   create_drawers($dsn, $c);                     # CREATE TABLE mempalace_drawers + rows (COPY-free, batched)
#   my $x = expected_graph($c);                   # what the default policy must write for those drawers:
#                                                 #  {edges => [sorted 'sk|rel|ok'], support => {fact => n},
#                                                 #   triples => {id => n}, keys => {key => 1}, raw => {fact => raw}}
#   my $g = graph_dump($dsn);                     # what is in the graph (see below)
#   graph_matches($g, $x, 'label');               # Test::More checks: same facts, support, no duplicates
#   is(graph_canon($g1), graph_canon($g2));       # order/run-independent text of a graph ("identical")
#   canon_is(graph_canon($g1), $canon, 'label'); # the same, diagnosing only the differing lines
#   fact_key('  Alice ', 'likes', 'BOB') eq 'alice|other|bob'
#   queue_count($dsn, 'completed_at IS NOT NULL')   # 0 until kgx has created the queue table
#
# graph_dump returns {edges => [sorted 'sk|rel|ok' per RELATION edge, duplicates kept], vertices => n,
# edge_count => n, dup_vertices => extra vertices sharing a key, dup_edges => extra edges sharing
# (start, end, relation_type), orphans => kgx vertices without an edge, support => {fact => edge's support
# property}, support_rows => {fact => rows in the provenance table}, props => {fact => properties hash},
# keys => {key => name}, bad_keys => vertices whose key is not kgx_key(name)}.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use KgxTest qw(psql);
use Exporter 'import';

our @EXPORT = qw(gen_corpus create_drawers add_drawers expected_graph graph_dump graph_matches graph_canon
                 canon_is fact_key name_key queue_rows queue_count VERBS);

# the fake's verb phrases and what the default policy makes of them (vocab.lua)
our %VERBS = (
    'works on' => 'works_on', 'uses' => 'uses', 'depends on' => 'depends_on', 'is part of' => 'part_of',
    'created' => 'creates', 'owns' => 'owns', 'calls' => 'calls', 'requires' => 'depends_on',
    'is a' => 'is_a', 'mentions' => 'mentions', 'likes' => 'other',
);
our %RAW = (likes => 'likes', requires => 'requires');   # raw_relation_type: the model's predicate when mapped
sub VERBS { sort keys %VERBS }

my @NAMES = (
    'Alice', 'Bob', 'Carol', 'Dave', 'Eve', 'Mallory', 'Trent', 'Peggy', 'Victor', 'Walter',
    'Project Apollo', 'Project Gemini', 'Data Lake', 'Tool X', 'Search Index', 'Billing Service',
    'Auth Gateway', 'Kafka', 'Postgres', 'Redis', 'Nginx', 'Grafana', 'Prometheus', 'Kubernetes',
    'Mars Rover', 'Blue Team', 'Red Team', 'Core Library', 'Web Frontend', 'Mobile App',
    'Rust', 'Python', 'Go Compiler', 'Lua Policy', 'Graph Store', 'Queue Worker', 'Model Server',
    'Edge Cache', 'Build Farm', 'Test Harness', 'Release Train', 'Design Doc', 'Incident Review',
    'Quarterly Plan', 'Ops Runbook', 'Alpha Cluster', 'Beta Cluster', 'Gamma Ray', 'Delta Force',
    'Omega Point',
);

sub name_key {
    my ($s) = @_;
    $s =~ s/^\s+//;
    $s =~ s/\s+$//;
    $s =~ s/\s+/ /g;
    return lc $s;
}

sub fact_key {
    my ($s, $verb_or_rel, $o) = @_;
    my $rel = $VERBS{$verb_or_rel} // $verb_or_rel;
    return name_key($s) . '|' . $rel . '|' . name_key($o);
}

# a random case/whitespace variant of a name
sub _variant {
    my ($rand, $name) = @_;
    my $r = $rand->(6);
    my $v = $r == 0 ? lc $name : $r == 1 ? uc $name : $r == 2 ? join('', map { $rand->(2) ? uc : lc } split //, $name)
          : $name;
    $v =~ s/ /' ' x (1 + $rand->(3))/ge if $rand->(2);
    $v = (' ' x $rand->(3)) . $v . (' ' x $rand->(3)) if $rand->(3) == 0;
    return $v;
}

# deterministic PRNG (an LCG), so a seed gives the same corpus everywhere
sub _rng {
    my ($seed) = @_;
    my $x = ($seed * 7919 + 12345) % 4294967296;    # 69069 * 2**32 < 2**53: exact in a double
    return sub {
        my ($n) = @_;
        $x = (69069 * $x + 1) % 4294967296;
        return int(($x / 4294967296) * $n);
    };
}

# n drawers of 1..max_facts (6) sentences drawn from a pool (300) of facts over the shared names (50),
# each name in a random case/whitespace variant, plus one unique non-fact sentence per drawer
sub gen_corpus {
    my (%o) = @_;
    my $n = $o{n} // 500;
    my $rand = _rng($o{seed} // 1);
    my @names = @NAMES[0 .. (($o{names} // 50) - 1)];
    my @verbs = sort keys %VERBS;
    my $prefix = $o{prefix} // 'd';
    # facts come from a pool, so that many are stated by several drawers
    my @pool;
    for (1 .. ($o{pool} // 300)) {
        my $s = $names[$rand->(scalar @names)];
        my $t;
        do { $t = $names[$rand->(scalar @names)] } while ($t eq $s);
        push @pool, [$s, $verbs[$rand->(scalar @verbs)], $t];
    }
    my (%docs, %facts);
    for my $i (1 .. $n) {
        my $id = sprintf('%s%05d', $prefix, $i);
        my $k = 1 + $rand->($o{max_facts} // 6);
        my (@sent, @f);
        for (1 .. $k) {
            my ($s, $v, $t) = @{ $pool[$rand->(scalar @pool)] };
            push @sent, _variant($rand, $s) . " $v " . _variant($rand, $t);
            push @f, [name_key($s), $VERBS{$v}, name_key($t), $v];
        }
        # the unique sentence makes every text distinct and states nothing
        splice @sent, $rand->(@sent + 1), 0, "Note $i of batch $prefix was filed";
        my $doc = '';
        for my $j (0 .. $#sent) {
            $doc .= $sent[$j];
            $doc .= $j == $#sent ? '.' : ('. ', '! ', ".\n", '? ')[$rand->(4)];
        }
        $docs{$id} = $doc;
        $facts{$id} = \@f;
    }
    return { docs => \%docs, facts => \%facts, names => \@names };
}

sub _q { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

sub create_drawers {
    my ($dsn, $c) = @_;
    psql($dsn, 'CREATE TABLE IF NOT EXISTS mempalace_drawers (id text PRIMARY KEY, wing text, room text,'
             . ' document text NOT NULL, metadata jsonb)');
    add_drawers($dsn, $c);
}

# insert or update drawers (docs of $c)
sub add_drawers {
    my ($dsn, $c) = @_;
    my @ids = sort keys %{ $c->{docs} };
    while (my @b = splice @ids, 0, 200) {
        psql($dsn, 'INSERT INTO mempalace_drawers (id, wing, room, document) VALUES '
                 . join(',', map { '(' . _q($_) . ",'wing_t','room_t'," . _q($c->{docs}{$_}) . ')' } @b)
                 . ' ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document');
    }
}

sub expected_graph {
    my ($c) = @_;
    my (%support, %triples, %keys, %raw);
    for my $id (keys %{ $c->{facts} }) {
        my %mine;
        for my $f (@{ $c->{facts}{$id} }) {
            my $fk = "$f->[0]|$f->[1]|$f->[2]";
            $raw{$fk} = $RAW{$f->[3]} if $RAW{$f->[3]};
            $mine{$fk} = 1;
        }
        $triples{$id} = scalar keys %mine;
        for my $fk (keys %mine) {
            $support{$fk}++;
            my ($s, undef, $o) = split /\|/, $fk;
            $keys{$s} = $keys{$o} = 1;
        }
    }
    return { edges => [sort keys %support], support => \%support, triples => \%triples, keys => \%keys,
             raw => \%raw };
}

my $JSON = JSON::PP->new->utf8->canonical;
my $AGE = qq{LOAD 'age'; SET search_path = ag_catalog, "\$user", public;\n};

sub graph_dump {
    my ($dsn, %o) = @_;
    my $g = $o{graph} // 'mempalace_kg';
    die "bad graph name" unless $g =~ /^[a-z_][a-z0-9_]*$/;
    my (%key_of, %name_of, %nkey);
    my $bad_keys = 0;
    for my $row (psql($dsn, $AGE . qq{SELECT id::text, public.kgx_key(agtype_access_operator(properties, '"name"')::text)
                                         = public.kgx_key(agtype_access_operator(properties, '"key"')::text),
                                     properties FROM $g."Entity"})) {
        my ($id, $ok, $p) = split /\|/, $row, 3;
        my $h = $JSON->decode($p);
        my $k = $h->{key} // '(nokey)';
        $key_of{$id} = $k;
        $name_of{$k} = $h->{name};
        $nkey{$k}++;
        $bad_keys++ unless $ok eq 't' && defined $h->{key} && $h->{key} eq name_key($h->{name} // '');
    }
    my (@edges, %seen, %support, %props, %deg);
    for my $row (psql($dsn, $AGE . qq{SELECT start_id::text, end_id::text, properties FROM $g."RELATION"})) {
        my ($s, $e, $p) = split /\|/, $row, 3;
        my $h = $JSON->decode($p);
        my $fk = join '|', $key_of{$s} // "?$s", $h->{relation_type} // '?', $key_of{$e} // "?$e";
        push @edges, $fk;
        $seen{"$s|$e|" . ($h->{relation_type} // '?')}++;
        $support{$fk} = $h->{support};
        $props{$fk} = $h;
        $deg{$s}++;
        $deg{$e}++;
    }
    my %support_rows;
    my ($ok) = eval { psql($dsn, "SELECT 1 FROM pg_class WHERE relname = 'kgx_${g}_support'") };
    if ($ok) {
        for my $row (psql($dsn, "SELECT subject_key, relation_type, object_key, count(*) FROM public.kgx_${g}_support"
                                . " GROUP BY 1, 2, 3")) {
            my ($s, $r, $o, $n) = split /\|/, $row;
            $support_rows{"$s|$r|$o"} = $n;
        }
    }
    my $dupv = 0;
    $dupv += $_ - 1 for values %nkey;
    my $dupe = 0;
    $dupe += $_ - 1 for values %seen;
    return {
        edges => [sort @edges], vertices => scalar(keys %key_of), edge_count => scalar(@edges),
        dup_vertices => $dupv, dup_edges => $dupe, orphans => scalar(grep { !$deg{$_} } keys %key_of),
        support => \%support, support_rows => \%support_rows, props => \%props, keys => \%name_of,
        bad_keys => $bad_keys,
    };
}

# a graph as text, independent of ids and of which drawer wrote a vertex first
sub graph_canon {
    my ($g) = @_;
    my @l = map {
        my $p = $g->{props}{$_};
        join ' ', $_, map { "$_=" . (defined $p->{$_} ? $p->{$_} : '') } sort keys %$p
    } @{ $g->{edges} };
    return join("\n", "vertices=$g->{vertices} edges=$g->{edge_count} dupv=$g->{dup_vertices} dupe=$g->{dup_edges}",
                "keys=" . join(',', sort keys %{ $g->{keys} }), @l) . "\n";
}

# is(graph_canon($g), $canon) with a short diagnostic: the first differing lines only
sub canon_is {
    my ($got, $want, $label) = @_;
    return pass($label) if $got eq $want;
    my %g = map { $_ => 1 } split /\n/, $got;
    my %w = map { $_ => 1 } split /\n/, $want;
    my @only_g = grep { !$w{$_} } split /\n/, $got;
    my @only_w = grep { !$g{$_} } split /\n/, $want;
    fail($label);
    diag('only in this graph: ' . scalar(@only_g) . ', only in the reference: ' . scalar(@only_w));
    diag("  + $_") for @only_g[0 .. ($#only_g < 7 ? $#only_g : 7)];
    diag("  - $_") for @only_w[0 .. ($#only_w < 7 ? $#only_w : 7)];
    return 0;
}

# the checks every "graph as implied" test makes
sub graph_matches {
    my ($g, $x, $label) = @_;
    $label //= 'graph';
    my %want = map { $_ => 1 } @{ $x->{edges} };
    my %have = map { $_ => 1 } @{ $g->{edges} };
    my @missing = grep { !$have{$_} } @{ $x->{edges} };
    my @extra = grep { !$want{$_} } sort keys %have;
    is(scalar(@missing), 0, "$label: no missing edge") or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");
    is(scalar(@extra), 0, "$label: no extra edge") or diag("extra: @extra[0 .. ($#extra < 9 ? $#extra : 9)]");
    is($g->{dup_edges}, 0, "$label: no duplicate edge (same start, end, relation_type)");
    is($g->{dup_vertices}, 0, "$label: no duplicate vertex (same key)");
    is($g->{edge_count}, scalar(@{ $x->{edges} }), "$label: edge count");
    is($g->{vertices}, scalar(keys %{ $x->{keys} }), "$label: vertex count = distinct keys");
    is_deeply([sort keys %{ $g->{keys} }], [sort keys %{ $x->{keys} }], "$label: vertex keys");
    is($g->{orphans}, 0, "$label: no vertex without an edge");
    is($g->{bad_keys}, 0, "$label: every key is kgx_key(name)");
    my @bad_support = grep { ($g->{support}{$_} // -1) != $x->{support}{$_} } @{ $x->{edges} };
    is(scalar(@bad_support), 0, "$label: support = drawers stating the fact")
        or diag(join ', ', map { "$_ support=" . ($g->{support}{$_} // 'undef') . " want=$x->{support}{$_}" }
                          @bad_support[0 .. ($#bad_support < 9 ? $#bad_support : 9)]);
    my @bad_rows = grep { ($g->{support_rows}{$_} // -1) != $x->{support}{$_} } @{ $x->{edges} };
    is(scalar(@bad_rows), 0, "$label: provenance rows = drawers stating the fact");
    my @bad_raw = grep { ($g->{props}{$_}{raw_relation_type} // '') ne ($x->{raw}{$_} // '') } @{ $x->{edges} };
    is(scalar(@bad_raw), 0, "$label: raw_relation_type kept exactly on mapped predicates")
        or diag("bad raw: @bad_raw[0 .. ($#bad_raw < 9 ? $#bad_raw : 9)]");
}

# rows of the queue matching a condition; 0 while kgx has not created the table yet
sub queue_count {
    my ($dsn, $where) = @_;
    my $n = eval { psql($dsn, 'SELECT count(*) FROM mempalace_kg_extraction_queue WHERE ' . ($where // 'true')) };
    return defined $n && length $n ? $n : 0;
}

# queue rows as {id => {completed, error, attempts, triples, started, worker, last_error}}
sub queue_rows {
    my ($dsn) = @_;
    my %q;
    for my $r (psql($dsn, q{SELECT drawer_id, completed_at IS NOT NULL, coalesce(triples_extracted::text, ''),
                                   attempts, started_at IS NOT NULL, coalesce(worker_id, ''),
                                   error IS NOT NULL, parked_at IS NOT NULL
                              FROM mempalace_kg_extraction_queue})) {
        my ($id, $c, $t, $a, $s, $w, $e, $p) = split /\|/, $r;
        $q{$id} = { completed => $c eq 't', triples => $t, attempts => $a, started => $s eq 't',
                    worker => $w, error => $e eq 't', parked => $p eq 't' };
    }
    return \%q;
}

1;
