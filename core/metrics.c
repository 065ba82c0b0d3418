/* metrics — process counters and histograms in Prometheus text exposition format 0.0.4.
 *
 * One global registry: the daemon is one thread on one loop, so plain integers suffice. Counters
 * are monotone for the life of the process (Prometheus handles the reset at restart); the two
 * gauges are set by their owners. Histogram buckets are stored per bucket and rendered cumulative. */
#include "metrics.h"
#include "drops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KGX_VERSION
#define KGX_VERSION "0.0.0"
#endif

kgx_metrics_t kgx_metrics;

static const double latency_le[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };
static const double tokens_le[] = { 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384 };
#define N_LAT (sizeof latency_le / sizeof latency_le[0])
#define N_TOK (sizeof tokens_le / sizeof tokens_le[0])
#define MAX_BUCKETS 16

typedef struct {
    const char *name, *help;
    const double *le;
    size_t n;
    unsigned long long bucket[MAX_BUCKETS + 1];   /* [n] is the +Inf overflow */
    unsigned long long count;
    double sum;
} histogram_t;

static histogram_t h_latency = { "kgx_llm_latency_seconds", "LLM request latency, seconds, first byte sent to last byte received.",
                                 latency_le, N_LAT, { 0 }, 0, 0 };
static histogram_t h_prompt = { "kgx_llm_prompt_tokens", "Prompt tokens per LLM request, as reported by the server.",
                                tokens_le, N_TOK, { 0 }, 0, 0 };
static histogram_t h_completion = { "kgx_llm_completion_tokens", "Completion tokens per LLM request, as reported by the server.",
                                    tokens_le, N_TOK, { 0 }, 0, 0 };

static const char *drawer_names[KGX_M_DRAWER__N] = { "completed", "empty", "parked", "stale" };
static const char *error_names[KGX_M_ERR__N] = { "timeout", "connect", "reset", "http_4xx", "http_5xx",
                                                  "parse", "policy", "db", "too_big", "context" };

const char *kgx_metric_error_name(int kind)
{
    if (kind < 0 || kind >= KGX_M_ERR__N)
        return "unknown";
    return error_names[kind];
}

static void observe(histogram_t *h, double v)
{
    if (isnan(v))
        return;               /* NaN would poison _sum forever */
    if (v < 0)
        v = 0;
    size_t i = 0;
    while (i < h->n && v > h->le[i])
        i++;
    h->bucket[i]++;
    h->count++;
    if (isfinite(v))
        h->sum += v;
}

void kgx_metrics_observe_latency(double seconds)
{
    observe(&h_latency, seconds);
}

/* A negative count means "the server did not say" and is not observed. */
void kgx_metrics_observe_tokens(long prompt_tokens, long completion_tokens)
{
    if (prompt_tokens >= 0)
        observe(&h_prompt, (double)prompt_tokens);
    if (completion_tokens >= 0)
        observe(&h_completion, (double)completion_tokens);
}

void kgx_metrics_reset(void)
{
    memset(&kgx_metrics, 0, sizeof kgx_metrics);
    histogram_t *hs[] = { &h_latency, &h_prompt, &h_completion };
    for (size_t i = 0; i < 3; i++) {
        memset(hs[i]->bucket, 0, sizeof hs[i]->bucket);
        hs[i]->count = 0;
        hs[i]->sum = 0;
    }
}

/* ---- rendering: a growable buffer; on allocation failure the render returns NULL ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

__attribute__((format(printf, 2, 3)))
static void put(buf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void head(buf_t *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Prometheus floats: shortest round-tripping form; +Inf/-Inf/NaN spelled its way. */
static const char *fmt_float(char *s, size_t n, double v)
{
    if (isnan(v))
        snprintf(s, n, "NaN");
    else if (isinf(v))
        snprintf(s, n, v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(s, n, "%.15g", v);          /* "0.05", not "0.050000000000000003" */
        if (strtod(s, NULL) != v)
            snprintf(s, n, "%.17g", v);
    }
    return s;
}

static void render_histogram(buf_t *b, const histogram_t *h)
{
    char le[64], sum[64];
    head(b, h->name, "histogram", h->help);
    unsigned long long cum = 0;
    for (size_t i = 0; i < h->n; i++) {
        cum += h->bucket[i];
        put(b, "%s_bucket{le=\"%s\"} %llu\n", h->name, fmt_float(le, sizeof le, h->le[i]), cum);
    }
    cum += h->bucket[h->n];
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n", h->name, cum);
    put(b, "%s_sum %s\n", h->name, fmt_float(sum, sizeof sum, h->sum));
    put(b, "%s_count %llu\n", h->name, h->count);
}

/* a label value: backslash, double quote and newline escaped (exposition format 0.0.4) */
static void put_label(buf_t *b, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            put(b, "\\%c", *p);
        else if (*p == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *p);
    }
}

static void render_endpoints(buf_t *b, const kgx_metrics_endpoint_t *eps, int n)
{
    static const struct { const char *name, *type, *help; } fam[] = {
        { "kgx_endpoint_up", "gauge", "1 while the llama-server endpoint is up (answers /health), else 0." },
        { "kgx_endpoint_slots", "gauge", "Slots of the endpoint (/props total_slots or --slots); 0 unknown." },
        { "kgx_endpoint_in_flight", "gauge", "LLM requests in flight at the endpoint (slots busy)." },
        { "kgx_endpoint_requests_total", "counter", "LLM requests sent to the endpoint." },
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        head(b, fam[f].name, fam[f].type, fam[f].help);
        for (int i = 0; i < n; i++) {
            put(b, "%s{endpoint=\"", fam[f].name);
            put_label(b, eps[i].url);
            switch (f) {
            case 0: put(b, "\"} %d\n", eps[i].up ? 1 : 0); break;
            case 1: put(b, "\"} %d\n", eps[i].slots); break;
            case 2: put(b, "\"} %d\n", eps[i].in_flight); break;
            default: put(b, "\"} %llu\n", eps[i].requests); break;
            }
        }
    }
}

char *kgx_metrics_render(size_t *len)
{
    return kgx_metrics_render_endpoints(len, NULL, 0);
}

char *kgx_metrics_render_endpoints(size_t *len, const kgx_metrics_endpoint_t *eps, int n)
{
    buf_t b = { malloc(4096), 0, 4096, 0 };
    if (!b.p)
        return NULL;
    b.p[0] = '\0';
    const kgx_metrics_t *m = &kgx_metrics;

    head(&b, "kgx_build_info", "gauge", "Build information; the value is always 1.");
    put(&b, "kgx_build_info{version=\"%s\"} 1\n", KGX_VERSION);
    head(&b, "kgx_up", "gauge", "1 while the process is serving.");
    put(&b, "kgx_up 1\n");

    head(&b, "kgx_drawers_total", "counter", "Drawers finished by this process, by result.");
    for (int i = 0; i < KGX_M_DRAWER__N; i++)
        put(&b, "kgx_drawers_total{result=\"%s\"} %llu\n", drawer_names[i], m->drawers[i]);

    head(&b, "kgx_triples_total", "counter", "Triples returned by the policy, written or dropped.");
    put(&b, "kgx_triples_total{result=\"written\"} %llu\n", m->triples_written);
    put(&b, "kgx_triples_total{result=\"dropped\"} %llu\n", m->triples_dropped);

    head(&b, "kgx_errors_total", "counter", "Failed drawer attempts, by kind.");
    for (int i = 0; i < KGX_M_ERR__N; i++)
        put(&b, "kgx_errors_total{kind=\"%s\"} %llu\n", error_names[i], m->errors[i]);

    head(&b, "kgx_retries_total", "counter", "Drawer attempts scheduled again after a failure.");
    put(&b, "kgx_retries_total %llu\n", m->retries);
    head(&b, "kgx_llm_requests_total", "counter", "LLM requests sent.");
    put(&b, "kgx_llm_requests_total %llu\n", m->llm_requests);
    /* economy (issue 14) */
    head(&b, "kgx_llm_chunks_skipped_total", "counter", "Chunks the policy's skip hook completed with no LLM request.");
    put(&b, "kgx_llm_chunks_skipped_total %llu\n", m->llm_chunks_skipped);
    head(&b, "kgx_llm_dense_splits_total", "counter",
         "Answers holding the per-call triple cap: chunk asked again as two halves, or at the depth limit.");
    put(&b, "kgx_llm_dense_splits_total{result=\"split\"} %llu\n", m->llm_dense_splits);
    put(&b, "kgx_llm_dense_splits_total{result=\"at_limit\"} %llu\n", m->llm_dense_unsplit);
    head(&b, "kgx_llm_answers_reused_total", "counter",
         "Whole answers parsed without an LLM request: stored for an identical request, or an identical request in flight.");
    put(&b, "kgx_llm_answers_reused_total{source=\"stored\"} %llu\n", m->llm_reused[KGX_M_REUSED_STORED]);
    put(&b, "kgx_llm_answers_reused_total{source=\"in_flight\"} %llu\n", m->llm_reused[KGX_M_REUSED_FLIGHT]);

    head(&b, "kgx_in_flight", "gauge", "LLM requests in flight.");
    put(&b, "kgx_in_flight %lld\n", m->in_flight);
    head(&b, "kgx_queue_depth", "gauge", "Pending queue rows at the last status read.");
    put(&b, "kgx_queue_depth %lld\n", m->queue_depth);

    char *drops = kgx_drops_metrics();          /* [dropin] kgx_triples_dropped_total{reason=…} */
    if (drops) { put(&b, "%s", drops); free(drops); }

    render_histogram(&b, &h_latency);
    render_histogram(&b, &h_prompt);
    render_histogram(&b, &h_completion);
    if (eps && n > 0)
        render_endpoints(&b, eps, n);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
