package Grammar;
# The fake llama-server's grammar (tests/fake/GRAMMAR.md) and the default policy's accept step
# (plugins/entity.lua + plugins/vocab.lua for the predicates the grammar can send), in Perl, so the
# policy_*.t tests compute what a drawer must yield instead of hard-coding it.
#
#   my @raw  = Grammar::facts($text);          # [subject, predicate, object, confidence 0..100]
#   my ($kept, $dropped) = Grammar::default_policy($text, $max_triples // 10, $min_conf // 0.5);
#       $kept:    [{s, p, o, c, raw}]      (c in 0..1, raw = raw predicate when mapped, else undef)
#       $dropped: [{subject, predicate, object, reason}]
# Strings are Perl character strings (decode UTF-8 first).
use strict;
use warnings;

my $WS = qr/[\t\n\x0b\f\r ]/;    # Lua's %s in the C locale
my @VERBS = (['works on', 'works_on'], ['uses', 'uses'], ['depends on', 'depends_on'],
             ['is part of', 'part_of'], ['created', 'creates'], ['owns', 'owns'], ['calls', 'calls'],
             ['requires', 'requires'], ['is a', 'is_a'], ['mentions', 'mentions'], ['likes', 'likes']);

sub trim { my $s = shift; $s =~ s/^$WS+//; $s =~ s/$WS+$//; return $s }

sub fact {
    my ($s) = @_;
    my $conf = 90;
    if ($s =~ /^(.*?) \(([0-9][0-9]?[0-9]?)%\)$/s && $2 <= 100) { ($s, $conf) = ($1, $2 + 0) }
    my ($best, $blen, $pred);
    for my $v (@VERBS) {
        my $p = index($s, " $v->[0] ");
        next if $p < 0;
        if (!defined $best || $p < $best || ($p == $best && length($v->[0]) > $blen)) {
            ($best, $blen, $pred) = ($p, length $v->[0], $v->[1]);
        }
    }
    return unless defined $best;
    my $subj = trim(substr($s, 0, $best));
    my $obj  = trim(substr($s, $best + $blen + 2));
    return if $subj eq '' || $obj eq '';
    return [$subj, $pred, $obj, $conf];
}

sub facts {
    my ($text) = @_;
    my @out;
    my $start = 0;
    my $n = length $text;
    my $cut = sub { my $f = fact(trim(substr($text, $start, $_[0] - $start))); push @out, $f if $f };
    for my $i (0 .. $n - 1) {
        my $c = substr($text, $i, 1);
        if ($c eq "\n") { $cut->($i); $start = $i + 1 }
        elsif ($c eq '.' || $c eq '!' || $c eq '?') {
            my $nx = $i + 1 < $n ? substr($text, $i + 1, 1) : '';
            if ($nx eq '' || $nx =~ $WS) { $cut->($i); $start = $i + 1 }
        }
    }
    $cut->($n) if $start < $n;
    return @out;
}

my %STOP = map { $_ => 1 } qw(it this that they the a an user agent system you i we me us them he she one none);
my @WRAP = (['"', '"'], ["'", "'"], ['`', '`'], ["\x{201c}", "\x{201d}"], ["\x{2018}", "\x{2019}"], ["\x{ab}", "\x{bb}"]);
# predicates the grammar sends -> canonical (default vocabulary); likes is unknown -> other
my %MAP = (works_on => 'works_on', uses => 'uses', depends_on => 'depends_on', part_of => 'part_of',
           creates => 'creates', owns => 'owns', calls => 'calls', requires => 'depends_on', is_a => 'is_a',
           mentions => 'mentions', likes => 'other');

sub alc { my $x = shift; $x =~ tr/A-Z/a-z/; return $x }   # Lua lower() in the C locale

sub clean {
    my ($name, $role) = @_;
    return (undef, "$role is not valid UTF-8 or contains NUL") if $name =~ /\x00/;
    my $s = trim($name);
    $s =~ s/$WS+/ /g;
    for (1 .. 4) {
        my $changed = 0;
        for my $w (@WRAP) {
            my ($a, $b) = @$w;
            if (length($s) >= length($a) + length($b) && substr($s, 0, length $a) eq $a && substr($s, -length $b) eq $b) {
                $s = trim(substr($s, length $a, length($s) - length($a) - length($b)));
                $changed = 1;
            }
        }
        last unless $changed;
    }
    return (undef, "$role is empty") if $s eq '';
    return (undef, "$role longer than 256 characters") if length($s) > 256;
    return (undef, "$role is a stopword: $s") if $STOP{alc($s)};
    return ($s);
}

sub default_policy {
    my ($text, $max, $min) = @_;
    $max //= 10;
    $min //= 0.5;
    my (@kept, @dropped);
    my $i = 0;
    for my $f (facts($text)) {
        my ($s0, $p0, $o0, $c0) = @$f;
        my $drop = sub { push @dropped, { subject => $s0, predicate => $p0, object => $o0, reason => $_[0] } };
        # the policy's schema says maxItems = max_triples and the fake (like a model under
        # constrained decoding) sends no more than that: the rest never reach the policy
        last if ++$i > $max;
        my ($s, $e1) = clean($s0, 'subject');
        if (!defined $s) { $drop->($e1); next }
        my ($o, $e2) = clean($o0, 'object');
        if (!defined $o) { $drop->($e2); next }
        if (alc($s) eq alc($o)) { $drop->("subject equals object: $s"); next }
        my $c = $c0 > 1 ? $c0 / 100 : $c0;
        if ($c < $min) { $drop->(sprintf('confidence %.2f < %.2f', $c, $min)); next }
        my $p = $MAP{$p0};
        push @kept, { s => $s, p => $p, o => $o, c => $c, raw => ($p eq $p0 ? undef : $p0) };
    }
    return (\@kept, \@dropped);
}

1;
