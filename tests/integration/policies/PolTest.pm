package PolTest;
# Database helpers shared by tests/integration/policy_*.t (on top of tests/lib/KgxTest.pm).
#
#   add_drawers($dsn, [{id, document, wing?, room?, metadata?}, …])   creates mempalace_drawers when
#        missing; values travel as one JSON document (byte-exact, no quoting of the text itself)
#   my $rows = sql_json($dsn, 'SELECT …')      rows as a list of hashes (json_agg), exact strings
#   my $edges = edges($dsn)                     [{s, rel, o, support, raw}] read through Cypher
#   my $q = queue($dsn)                         { drawer_id => {completed, error, attempts, triples} }
use strict;
use warnings;
use KgxTest;
use JSON::PP ();
use Exporter 'import';
our @EXPORT = qw(add_drawers sql_json edges queue cypher_json AGE likes_policy);

my $J = JSON::PP->new->utf8->canonical;
use constant AGE => qq{LOAD 'age';\nSET search_path = ag_catalog, "\$user", public;\n};

sub _tag { my $t; do { $t = sprintf('j%08x', int rand 0xffffffff) } while (index($_[0], "\$$t\$") >= 0); return "\$$t\$" }

# prompts/default.lua with `likes` added to the vocabulary (name likes, version 2), written into a temp
# policy tree beside a link to plugins/: the change under test, and nothing else, always in step with
# the default policy.
sub likes_policy {
    require File::Temp;
    my $root = $ENV{KGX_ROOT} // die 'KGX_ROOT unset';
    my $dir = File::Temp::tempdir('kgx-likes-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$dir/prompts" or die "mkdir: $!";
    symlink("$root/plugins", "$dir/plugins") or die "symlink: $!";
    open(my $in, '<', "$root/prompts/default.lua") or die "default.lua: $!";
    my $src = do { local $/; <$in> };
    close $in;
    $src =~ s/^name = "default"$/name = "likes"/m or die 'default.lua: no name line';
    $src =~ s/^version = "1"$/version = "2"/m or die 'default.lua: no version line';
    $src =~ s/^local VOCAB\s*=.*$/local VOCAB = vocab.custom({ likes = { "enjoys", "loves" } })   -- the change under test/m
        or die 'default.lua: no VOCAB line';
    open(my $out, '>', "$dir/prompts/likes.lua") or die "likes.lua: $!";
    print $out $src;
    close $out;
    return "$dir/prompts/likes.lua";
}

sub add_drawers {
    my ($dsn, $list) = @_;
    my $json = $J->encode([map { { id => $_->{id}, wing => $_->{wing} // 'w', room => $_->{room} // 'r',
                                   document => $_->{document}, metadata => $_->{metadata} } } @$list]);
    my $tag = _tag($json);
    psql($dsn, "CREATE TABLE IF NOT EXISTS public.mempalace_drawers (id text PRIMARY KEY, wing text, room text, document text, metadata jsonb);\n"
             . "INSERT INTO public.mempalace_drawers (id, wing, room, document, metadata)\n"
             . " SELECT id, wing, room, document, metadata FROM jsonb_to_recordset($tag$json${tag}::jsonb)"
             . " AS x(id text, wing text, room text, document text, metadata jsonb)");
}

sub sql_json {
    my ($dsn, $sql, $prefix) = @_;
    my $out = psql($dsn, ($prefix // '') . "SELECT coalesce(json_agg(x), '[]'::json) FROM ($sql) x");
    $out =~ s/^.*\n//s while $out =~ /\n/ && $out !~ /^\s*\[/;   # LOAD/SET print nothing with -q, but be safe
    return $J->decode($out);
}

# a Cypher query whose RETURN columns are listed in @cols (agtype); values come back as agtype::text
# (a string exactly as stored, without quotes; numbers as text)
sub cypher_json {
    my ($dsn, $graph, $query, @cols) = @_;
    my $tag = _tag($query);
    my $as = join(', ', map { "$_ agtype" } @cols);
    my $sel = join(', ', map { "$_\::text AS $_" } @cols);
    my $rows = sql_json($dsn, "SELECT $sel FROM cypher('$graph', $tag$query$tag) AS ($as)", AGE);
    return $rows;
}

sub edges {
    my ($dsn, $graph) = @_;
    my $rows = cypher_json($dsn, $graph // 'mempalace_kg',
        'MATCH (a:Entity)-[r:RELATION]->(b:Entity) RETURN a.name, r.relation_type, b.name, r.support, r.raw_relation_type',
        qw(s rel o support raw));
    return [sort { "$a->{s}|$a->{rel}|$a->{o}" cmp "$b->{s}|$b->{rel}|$b->{o}" } @$rows];
}

sub queue {
    my ($dsn) = @_;
    my $rows = sql_json($dsn, 'SELECT drawer_id, completed_at IS NOT NULL AS completed, error, attempts, triples_extracted AS triples'
                            . ' FROM public.mempalace_kg_extraction_queue');
    return { map { $_->{drawer_id} => $_ } @$rows };
}

1;
