/* progress — the operator's progress line, the `final:` line and ETA formatting (pure functions).
 *
 *   drawers_completed=12345 in_flight=7 pending=350000 rate=24.6/min errors=12 eta=10.2d elapsed=1800s
 *
 * rate is drawers per minute (one decimal); eta is `unknown` at rate 0, else pending/rate minutes
 * printed as `Nm` (< 60, rounded), `N.Nh` (< 1440 min), `N.Nd`. */
#ifndef KGX_PROGRESS_H
#define KGX_PROGRESS_H

#include <stddef.h>

typedef struct {
    long long completed, in_flight, pending, errors;
    double rate_per_min;
    double elapsed_s;
} kgx_progress_t;

/* eta into buf ("unknown", "42m", "1.7h", "69.4d"). Returns buf. */
char *kgx_progress_eta(char *buf, size_t len, long long pending, double rate_per_min);
/* The progress line without trailing newline. Returns snprintf-style length. */
int kgx_progress_line(char *buf, size_t len, const kgx_progress_t *p);
/* "final: completed=N pending=N in_flight=N errors=N" */
int kgx_progress_final(char *buf, size_t len, const kgx_progress_t *p);
/* rate from two completed counts dt seconds apart; 0.0 when dt <= 0 (first tick). */
double kgx_progress_rate(long long prev_completed, long long now_completed, double dt_s);
/* A one-line terminal bar: "[#####.....] 45.2% 1234/2730 24.6/min eta 1.7h" (for TTYs only). */
int kgx_progress_bar(char *buf, size_t len, const kgx_progress_t *p, int width);

#endif
