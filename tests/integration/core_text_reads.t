#!/usr/bin/env perl
# core_text_reads — a claimed drawer's text, under the byte budget (budget.c): small texts (up to 16 KiB)
# come with their claim; larger ones are read after it, up to 64 KiB admitted together in one query, a
# text over 64 KiB alone in pieces. What a read after the claim finds is checked against the claim, in a
# batch as alone: a drawer whose text changed between the claim and the read is given back and done with
# its new text; a drawer deleted meanwhile is parked with a reason; the drawers beside them in the same
# batch are unaffected. The changes are made by a trigger on the claim itself, so they land exactly
# between the claim and the read.
use strict;
use warnings;
use KgxTest;
use KgxGraph;

my $dsn = fresh_db('core_text_reads');
my $c = gen_corpus(n => 40, seed => 5, pool => 60);
create_drawers($dsn, { docs => {} });
my $fake = start_fake();
my @common = ('--dsn', $dsn, '--endpoint', $fake->{url}, '--backfill', '--workers', 16, '--batch-size', 20,
              '--progress-interval', 3600, '--log-level', 'debug');

# the schema (the queue) first: nothing to do yet
my $r = run_kgx(@common);
is($r->{rc}, 0, 'empty backfill exits 0') or diag($r->{err});

# on the claim of 'chg' its text changes (once); on the claim of 'gone' its drawer row goes
psql($dsn, <<'SQL');
CREATE TABLE t_changed (done int);
CREATE FUNCTION t_on_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.worker_id IS NOT NULL AND OLD.worker_id IS NULL THEN
        IF NEW.drawer_id = 'chg' AND NOT EXISTS (SELECT 1 FROM t_changed) THEN
            UPDATE mempalace_drawers SET document = 'Zed Zulu owns Quux Box. A longer text than before.' WHERE id = 'chg';
            INSERT INTO t_changed VALUES (1);
        ELSIF NEW.drawer_id = 'gone' THEN
            DELETE FROM mempalace_drawers WHERE id = 'gone';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER t_on_claim BEFORE UPDATE ON mempalace_kg_extraction_queue FOR EACH ROW EXECUTE FUNCTION t_on_claim();
SQL
my %docs = %{ $c->{docs} };
my $pad = ' ' x 20000;                                      # over 16 KiB: read after the claim
my @padded = (sort keys %docs)[0 .. 7];
$docs{$_} .= $pad for @padded;
$docs{chg} = 'Old Name owns Old Thing.' . $pad;
$docs{gone} = 'Lost Name owns Lost Thing.' . $pad;
$docs{big} = 'Bigco owns Bigthing. ' x 4000;                # 84,000 bytes: read alone, in pieces
add_drawers($dsn, { docs => \%docs });

$r = run_kgx(@common);
is($r->{rc}, 0, 'backfill exits 0') or diag(substr($r->{err}, -3000));
is(queue_count($dsn, 'completed_at IS NOT NULL'), 42, 'the 40 drawers, the big one and the changed one completed');
my ($gone) = psql($dsn, "SELECT coalesce(error, '') FROM mempalace_kg_extraction_queue WHERE drawer_id = 'gone'");
like($gone, qr/drawer not found in mempalace_drawers/, 'the deleted drawer is parked with its reason');
like($r->{err}, qr/drawer=chg changed while its text was read: given back/, 'the changed drawer is given back (logged)');
like($r->{err}, qr/drawer=gone not found in mempalace_drawers: parked/, 'the deleted one is parked (logged)');
my @reads = $r->{err} =~ /budget read drawer=(\S+) bytes=\d+ pieces=(\d+)/g;
my %pieces = @reads;
is($pieces{big} // 0, 1, 'the big text read on its own (one piece of up to 1 Mi characters)');
my %claimed = map { $_ => 1 } $r->{err} =~ /budget admit drawer=(\S+) [^\n]*\(text with the claim\)/g;
is_deeply([sort grep { !$claimed{$_} } keys %{ $c->{docs} }], [sort @padded],
          'every small text came with its claim (the padded ones did not)');
is_deeply([sort grep { $pieces{$_} } @padded], [sort @padded], 'the padded texts were read after the claim');
my @batches = $r->{err} =~ /budget admit drawer=\S+ text_bytes=2\d{4} charge=\d+ used=\d+ holders=(\d+)$/mg;
cmp_ok(scalar @batches, '>=', 8, 'the padded texts admitted for reads after their claim');
my ($chg) = psql($dsn, "SELECT string_agg(subject_key || ' ' || relation_type || ' ' || object_key, ',')"
                     . " FROM kgx_mempalace_kg_support WHERE drawer_id = 'chg'");
is($chg, 'zed zulu owns quux box', "the changed drawer's facts are its new text's");

# the graph: the corpus's facts, the big drawer's and the changed drawer's new one, nothing of the old
my %facts = %{ $c->{facts} };
$facts{chg} = [['zed zulu', 'owns', 'quux box', 'owns']];
$facts{big} = [['bigco', 'owns', 'bigthing', 'owns']];
graph_matches(graph_dump($dsn), expected_graph({ docs => \%docs, facts => \%facts }), 'after the reads');

done_testing();
