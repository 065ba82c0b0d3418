#!/usr/bin/perl
# ops_demo.t — `scripts/demo` (the body of `make demo`) runs to the end against the test server:
# with KGX_TEST_DSN set it works in a database of its own there and drops it. It needs the plain
# build (build/bin), which `make test` builds; it takes about 10 s.
use strict;
use warnings;
use KgxTest;
use Time::HiRes ();

my $root = kgx_root();
SKIP: {
    skip 'build/bin/kgx-run or build/bin/fake-llama not built (make)', 9
        unless -x "$root/build/bin/kgx-run" && -x "$root/build/bin/fake-llama";
    admin_dsn();   # dies with the reason when there is no test server
    my $t0 = Time::HiRes::time();
    my $out = `cd '$root' && timeout -k 5 90 scripts/demo 2>&1`;
    my $rc = $? >> 8;
    my $dt = Time::HiRes::time() - $t0;
    is($rc, 0, sprintf('scripts/demo exits 0 (%.1f s)', $dt)) or diag($out);
    ok($dt < 90, 'in under 90 s');
    like($out, qr/^\s+120 \|/m, '120 sample drawers loaded');
    like($out, qr/^final: completed=120 pending=0 in_flight=0 errors=0$/m, 'the backfill completed every drawer');
    like($out, qr/^drawers_completed=\d+ in_flight=\d+ pending=\d+ rate=/m, 'progress lines were shown');
    like($out, qr/^queue_depth\s+0$/m, '--status printed');
    like($out, qr/^top entities by degree$/m, 'Cypher queries ran');
    like($out, qr/duplicate_facts\s*\n-+\s*\n\s+0\s*$/m, 'no duplicate edges');
    my @left = psql(admin_dsn(), q{SELECT datname FROM pg_database WHERE datname LIKE 'kgx\_demo\_%'});
    is(scalar @left, 0, 'the demo dropped its database') or diag("@left");
}
done_testing();
