/* t_metrics — /metrics must parse as Prometheus text exposition 0.0.4: HELP/TYPE before samples,
 * counters end in _total, histogram buckets cumulative and ending in +Inf = _count. */
#include "metrics.h"
/* tap.h's one-line macros trip -Wmisleading-indentation under -Werror */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#include <math.h>
#include <regex.h>

static regex_t re_sample, re_help, re_type;

/* Walks the exposition; returns the number of bad lines (and diag()s them). */
static int check_format(const char *text)
{
    int bad = 0;
    char typed[64][128];
    int ntyped = 0;
    char *copy = strdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            if (regexec(&re_help, line, 0, NULL, 0) != 0) { bad++; diag("bad HELP: %s", line); }
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            if (regexec(&re_type, line, 0, NULL, 0) != 0) { bad++; diag("bad TYPE: %s", line); continue; }
            char name[128], type[32];
            sscanf(line, "# TYPE %127s %31s", name, type);
            for (int i = 0; i < ntyped; i++)
                if (strcmp(typed[i], name) == 0) { bad++; diag("TYPE twice: %s", name); }
            if (ntyped < 64)
                snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
            size_t l = strlen(name);
            if (strcmp(type, "counter") == 0 && (l < 6 || strcmp(name + l - 6, "_total") != 0)) {
                bad++; diag("counter without _total: %s", name);
            }
            continue;
        }
        if (regexec(&re_sample, line, 0, NULL, 0) != 0) { bad++; diag("bad sample: %s", line); continue; }
        /* the sample's family must have had its TYPE already */
        char fam[128];
        size_t n = strcspn(line, "{ ");
        snprintf(fam, sizeof fam, "%.*s", (int)n, line);
        int found = 0;
        for (int i = 0; i < ntyped && !found; i++) {
            size_t tl = strlen(typed[i]);
            if (strcmp(fam, typed[i]) == 0)
                found = 1;
            else if (strncmp(fam, typed[i], tl) == 0 &&
                     (!strcmp(fam + tl, "_bucket") || !strcmp(fam + tl, "_sum") || !strcmp(fam + tl, "_count")))
                found = 1;
        }
        if (!found) { bad++; diag("sample before its TYPE: %s", line); }
    }
    free(copy);
    return bad;
}

typedef struct { double le[32]; double cum[32]; int n; double sum, count; } hist_t;

static double value_of(const char *line)
{
    const char *sp = strrchr(line, ' ');
    if (!strcmp(sp + 1, "+Inf")) return INFINITY;
    return strtod(sp + 1, NULL);
}

static void read_hist(const char *text, const char *name, hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->sum = h->count = -1;
    char pre_b[160], pre_s[160], pre_c[160];
    snprintf(pre_b, sizeof pre_b, "%s_bucket{le=\"", name);
    snprintf(pre_s, sizeof pre_s, "%s_sum ", name);
    snprintf(pre_c, sizeof pre_c, "%s_count ", name);
    char *copy = strdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, pre_b, strlen(pre_b)) && h->n < 32) {
            const char *le = line + strlen(pre_b);
            h->le[h->n] = !strncmp(le, "+Inf", 4) ? INFINITY : strtod(le, NULL);
            h->cum[h->n++] = value_of(line);
        } else if (!strncmp(line, pre_s, strlen(pre_s))) {
            h->sum = value_of(line);
        } else if (!strncmp(line, pre_c, strlen(pre_c))) {
            h->count = value_of(line);
        }
    }
    free(copy);
}

static int hist_sane(const hist_t *h)
{
    if (h->n < 2 || !isinf(h->le[h->n - 1]))
        return 0;
    for (int i = 1; i < h->n; i++)
        if (!(h->le[i] > h->le[i - 1]) || h->cum[i] < h->cum[i - 1])
            return 0;
    return h->cum[h->n - 1] == h->count;
}

static double bucket(const hist_t *h, double le)
{
    for (int i = 0; i < h->n; i++)
        if (h->le[i] == le)
            return h->cum[i];
    return -1;
}

int main(void)
{
    regcomp(&re_sample, "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\",?)*\\})? "
                        "([-+]?[0-9.]+([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$", REG_EXTENDED | REG_NOSUB);
    regcomp(&re_help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED | REG_NOSUB);
    regcomp(&re_type, "^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped)$",
            REG_EXTENDED | REG_NOSUB);

    kgx_metrics_reset();
    size_t len = 0;
    char *t = kgx_metrics_render(&len);
    ok(t != NULL, "renders");
    is_int(len, strlen(t), "length matches");
    ok(len > 0 && t[len - 1] == '\n', "ends with a newline");
    is_int(check_format(t), 0, "empty registry: every line is valid exposition");
    ok(strstr(t, "\nkgx_up 1\n") != NULL, "kgx_up 1");
    ok(strstr(t, "kgx_build_info{version=\"") != NULL, "build info");
    ok(strstr(t, "kgx_errors_total{kind=\"too_big\"} 0\n") != NULL, "every error kind present at 0");
    hist_t h;
    read_hist(t, "kgx_llm_latency_seconds", &h);
    ok(hist_sane(&h) && h.count == 0 && h.sum == 0, "empty latency histogram");
    is_int(h.n, 13, "12 latency buckets + +Inf");
    ok(h.le[0] == 0.05 && h.le[11] == 300, "latency buckets 0.05 … 300");
    ok(strstr(t, "kgx_llm_latency_seconds_bucket{le=\"0.05\"} 0\n") != NULL, "le printed short (0.05)");
    read_hist(t, "kgx_llm_prompt_tokens", &h);
    ok(hist_sane(&h) && h.le[0] == 16 && h.le[h.n - 2] == 16384, "token buckets 16 … 16384");
    free(t);

    kgx_metrics.drawers[KGX_M_DRAWER_COMPLETED] = 7;
    kgx_metrics.drawers[KGX_M_DRAWER_PARKED] = 2;
    kgx_metrics.triples_written = 30;
    kgx_metrics.triples_dropped = 4;
    kgx_metrics.errors[KGX_M_ERR_HTTP_5XX] = 3;
    kgx_metrics.retries = 5;
    kgx_metrics.llm_requests = 12;
    kgx_metrics.in_flight = 3;
    kgx_metrics.queue_depth = 350000;
    double lat[] = { 0.01, 0.05, 0.2, 1.5, 3, 45, 299, 300, 301, 1e9, -1, NAN };
    for (size_t i = 0; i < sizeof lat / sizeof lat[0]; i++)
        kgx_metrics_observe_latency(lat[i]);
    kgx_metrics_observe_tokens(10, 16);
    kgx_metrics_observe_tokens(17, -1);
    kgx_metrics_observe_tokens(100000, 500);
    kgx_metrics_observe_tokens(-1, -1);

    t = kgx_metrics_render(&len);
    is_int(check_format(t), 0, "filled registry: every line is valid exposition");
    ok(strstr(t, "kgx_drawers_total{result=\"completed\"} 7\n") != NULL, "drawers completed");
    ok(strstr(t, "kgx_drawers_total{result=\"parked\"} 2\n") != NULL, "drawers parked");
    ok(strstr(t, "kgx_triples_total{result=\"written\"} 30\n") != NULL, "triples written");
    ok(strstr(t, "kgx_triples_total{result=\"dropped\"} 4\n") != NULL, "triples dropped");
    ok(strstr(t, "kgx_errors_total{kind=\"http_5xx\"} 3\n") != NULL, "errors by kind");
    ok(strstr(t, "\nkgx_retries_total 5\n") != NULL, "retries");
    ok(strstr(t, "\nkgx_llm_requests_total 12\n") != NULL, "llm requests");
    ok(strstr(t, "\nkgx_in_flight 3\n") != NULL, "in flight gauge");
    ok(strstr(t, "\nkgx_queue_depth 350000\n") != NULL, "queue depth gauge");
    ok(strstr(t, "# TYPE kgx_llm_latency_seconds histogram\n") != NULL, "histogram TYPE");

    read_hist(t, "kgx_llm_latency_seconds", &h);
    ok(hist_sane(&h), "latency buckets monotone, +Inf = _count");
    is_int(h.count, 11, "NaN not observed; 11 observations counted");
    is_int(bucket(&h, 0.05), 3, "le=0.05 holds 0.01, 0.05 and the clamped -1 (le is inclusive)");
    is_int(bucket(&h, 0.25), 4, "le=0.25 cumulative");
    is_int(bucket(&h, 300), 9, "le=300 includes 300");
    is_int(bucket(&h, INFINITY), 11, "+Inf holds everything");
    ok(fabs(h.sum - (0.01 + 0.05 + 0.2 + 1.5 + 3 + 45 + 299 + 300 + 301 + 1e9)) < 1e-3, "sum");

    read_hist(t, "kgx_llm_prompt_tokens", &h);
    ok(hist_sane(&h), "prompt tokens sane");
    is_int(h.count, 3, "prompt tokens: negative not observed");
    is_int(bucket(&h, 16), 1, "prompt le=16");
    is_int(bucket(&h, 32), 2, "prompt le=32");
    is_int(bucket(&h, 16384), 2, "100000 only in +Inf");
    ok(h.sum == 10 + 17 + 100000, "prompt sum");
    read_hist(t, "kgx_llm_completion_tokens", &h);
    ok(hist_sane(&h) && h.count == 2 && bucket(&h, 16) == 1 && bucket(&h, 512) == 2, "completion tokens");
    free(t);

    is_str(kgx_metric_error_name(KGX_M_ERR_CONTEXT), "context", "error name");
    is_str(kgx_metric_error_name(-1), "unknown", "out of range error name");
    is_str(kgx_metric_error_name(KGX_M_ERR__N), "unknown", "out of range error name (high)");

    /* per-endpoint families: one sample per endpoint, label values escaped */
    kgx_metrics_endpoint_t eps[2] = { { "http://127.0.0.1:8080", 1, 4, 3, 17 },
                                      { "http://h/\"q\"\\x\n", 0, 0, 0, 0 } };
    t = kgx_metrics_render_endpoints(NULL, eps, 2);
    ok(t && strstr(t, "# TYPE kgx_endpoint_slots gauge\n"), "endpoint slots family");
    ok(t && strstr(t, "kgx_endpoint_up{endpoint=\"http://127.0.0.1:8080\"} 1\n"), "endpoint up");
    ok(t && strstr(t, "kgx_endpoint_slots{endpoint=\"http://127.0.0.1:8080\"} 4\n"), "endpoint slots");
    ok(t && strstr(t, "kgx_endpoint_in_flight{endpoint=\"http://127.0.0.1:8080\"} 3\n"), "endpoint slots busy");
    ok(t && strstr(t, "kgx_endpoint_requests_total{endpoint=\"http://127.0.0.1:8080\"} 17\n"), "endpoint requests");
    ok(t && strstr(t, "kgx_endpoint_up{endpoint=\"http://h/\\\"q\\\"\\\\x\\n\"} 0\n"), "label value escaped");
    free(t);
    t = kgx_metrics_render(NULL);
    ok(t && !strstr(t, "kgx_endpoint_"), "no endpoint families without endpoints");
    free(t);

    kgx_metrics_reset();
    t = kgx_metrics_render(NULL);
    read_hist(t, "kgx_llm_latency_seconds", &h);
    ok(h.count == 0 && kgx_metrics.retries == 0, "reset clears counters and histograms");
    free(t);

    regfree(&re_sample);
    regfree(&re_help);
    regfree(&re_type);
    return done_testing();
}
