/* progress — the operator's progress line, the `final:` line and ETA formatting.
 *
 * The field order and formats are an operator contract (they grep it; docs/kg-extraction.md, "Backfill"): change
 * nothing here without changing tests/unit/t_progress.c and the docs together. */
#include "progress.h"

#include <math.h>
#include <stdio.h>

char *kgx_progress_eta(char *buf, size_t len, long long pending, double rate_per_min)
{
    if (!buf || len == 0)
        return buf;
    if (!(rate_per_min > 0.0) || !isfinite(rate_per_min) || pending < 0) {
        snprintf(buf, len, "unknown");
        return buf;
    }
    double m = (double)pending / rate_per_min;
    /* "Nm" below an hour once rounded: 59.6 minutes is "1.0h", never "60m". */
    if (m < 59.5)
        snprintf(buf, len, "%.0fm", m);
    else if (m < 1440.0)
        snprintf(buf, len, "%.1fh", m / 60.0);
    else
        snprintf(buf, len, "%.1fd", m / 1440.0);
    return buf;
}

static double finite_or_zero(double v)
{
    return isfinite(v) ? v : 0.0;
}

int kgx_progress_line(char *buf, size_t len, const kgx_progress_t *p)
{
    char eta[32];
    kgx_progress_eta(eta, sizeof eta, p->pending, p->rate_per_min);
    double rate = finite_or_zero(p->rate_per_min), el = finite_or_zero(p->elapsed_s);
    return snprintf(buf, len,
                    "drawers_completed=%lld in_flight=%lld pending=%lld rate=%.1f/min errors=%lld"
                    " eta=%s elapsed=%.0fs",
                    p->completed, p->in_flight, p->pending, rate < 0 ? 0.0 : rate, p->errors, eta,
                    el < 0 ? 0.0 : el);
}

int kgx_progress_final(char *buf, size_t len, const kgx_progress_t *p)
{
    return snprintf(buf, len, "final: completed=%lld pending=%lld in_flight=%lld errors=%lld",
                    p->completed, p->pending, p->in_flight, p->errors);
}

double kgx_progress_rate(long long prev_completed, long long now_completed, double dt_s)
{
    if (!(dt_s > 0.0) || !isfinite(dt_s))
        return 0.0;
    double r = (double)(now_completed - prev_completed) * 60.0 / dt_s;
    return r > 0.0 ? r : 0.0;   /* a counter reset (restart) is not a negative rate */
}

int kgx_progress_bar(char *buf, size_t len, const kgx_progress_t *p, int width)
{
    char eta[32], bar[256];
    long long done = p->completed > 0 ? p->completed : 0;
    long long rest = (p->pending > 0 ? p->pending : 0) + (p->in_flight > 0 ? p->in_flight : 0);
    long long total = done + rest;
    double frac = total > 0 ? (double)done / (double)total : 1.0;

    if (width < 1)
        width = 1;
    if (width > (int)sizeof bar - 1)
        width = (int)sizeof bar - 1;
    int fill = (int)(frac * width + 0.5);
    if (fill > width)
        fill = width;
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';

    kgx_progress_eta(eta, sizeof eta, p->pending, p->rate_per_min);
    double rate = finite_or_zero(p->rate_per_min);
    return snprintf(buf, len, "[%s] %.1f%% %lld/%lld %.1f/min eta %s", bar, frac * 100.0, done, total,
                    rate < 0 ? 0.0 : rate, eta);
}
