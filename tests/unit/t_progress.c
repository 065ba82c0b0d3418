/* t_progress — the progress line is an operator contract (grep'd by humans and scripts). */
#include "progress.h"
/* tap.h's one-line macros trip -Wmisleading-indentation under -Werror */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

static const char *eta(long long pending, double rate)
{
    static char buf[32];
    return kgx_progress_eta(buf, sizeof buf, pending, rate);
}

int main(void)
{
    char buf[512];

    /* the seed's pinned cases */
    is_str(eta(100, 0.0), "unknown", "eta unknown at rate 0");
    is_str(eta(100, -3.0), "unknown", "eta unknown at a negative rate");
    is_str(eta(100, 1.0), "1.7h", "100 pending at 1/min is 1.7h");
    is_str(eta(100000, 1.0), "69.4d", "100000 pending at 1/min is 69.4d");
    is_str(eta(30, 1.0), "30m", "30 pending at 1/min is 30m");
    is_str(eta(0, 5.0), "0m", "nothing pending is 0m");
    is_str(eta(59, 1.0), "59m", "59 minutes stays in minutes");
    is_str(eta(60, 1.0), "1.0h", "60 minutes is 1.0h");
    is_str(eta(1439, 1.0), "24.0h", "just under a day is hours");
    is_str(eta(1440, 1.0), "1.0d", "a day is 1.0d");
    is_str(eta(350000, 24.6), "9.9d", "350000 at 24.6/min");

    kgx_progress_t p = { .completed = 12345, .in_flight = 7, .pending = 350000, .errors = 12,
                         .rate_per_min = 24.6, .elapsed_s = 1800 };
    int n = kgx_progress_line(buf, sizeof buf, &p);
    is_str(buf, "drawers_completed=12345 in_flight=7 pending=350000 rate=24.6/min errors=12 eta=9.9d elapsed=1800s",
           "progress line: field order and formats");
    is_int(n, (long long)strlen(buf), "returns the length");

    kgx_progress_t z = { .completed = 0, .in_flight = 0, .pending = 100, .errors = 0,
                         .rate_per_min = kgx_progress_rate(0, 0, 0.0), .elapsed_s = 0 };
    kgx_progress_line(buf, sizeof buf, &z);
    is_str(buf, "drawers_completed=0 in_flight=0 pending=100 rate=0.0/min errors=0 eta=unknown elapsed=0s",
           "first tick: rate 0.0, eta unknown");

    ok(kgx_progress_rate(0, 100, 0.0) == 0.0, "rate with dt 0 is 0.0 (first tick)");
    ok(kgx_progress_rate(0, 100, -1.0) == 0.0, "rate with negative dt is 0.0");
    ok(kgx_progress_rate(100, 160, 60.0) == 60.0, "60 drawers in 60 s is 60/min");
    ok(kgx_progress_rate(100, 110, 120.0) == 5.0, "10 drawers in 2 min is 5/min");
    ok(kgx_progress_rate(100, 50, 60.0) == 0.0, "counter going backwards is rate 0");

    kgx_progress_t q = { .completed = 1, .in_flight = 2, .pending = 100, .errors = 3, .rate_per_min = 1.0,
                         .elapsed_s = 59.6 };
    kgx_progress_line(buf, sizeof buf, &q);
    is_str(buf, "drawers_completed=1 in_flight=2 pending=100 rate=1.0/min errors=3 eta=1.7h elapsed=60s",
           "rate and elapsed rounding");

    kgx_progress_final(buf, sizeof buf, &p);
    is_str(buf, "final: completed=12345 pending=350000 in_flight=7 errors=12", "final line");

    /* truncation is snprintf-like */
    char small[16];
    n = kgx_progress_line(small, sizeof small, &p);
    ok(n > (int)sizeof small && strlen(small) == sizeof small - 1, "truncates, returns the full length");

    kgx_progress_t b = { .completed = 1234, .in_flight = 0, .pending = 1496, .errors = 0, .rate_per_min = 24.6 };
    kgx_progress_bar(buf, sizeof buf, &b, 10);
    is_str(buf, "[#####.....] 45.2% 1234/2730 24.6/min eta 1.0h", "bar");
    kgx_progress_t e = { 0 };
    kgx_progress_bar(buf, sizeof buf, &e, 4);
    is_str(buf, "[####] 100.0% 0/0 0.0/min eta unknown", "bar with nothing to do");
    kgx_progress_t f = { .completed = 0, .pending = 10 };
    kgx_progress_bar(buf, sizeof buf, &f, 0);
    is_str(buf, "[.] 0.0% 0/10 0.0/min eta unknown", "bar width clamps to 1");
    kgx_progress_bar(buf, sizeof buf, &b, 100000);
    ok(strlen(buf) < sizeof buf, "huge width clamps");

    return done_testing();
}
