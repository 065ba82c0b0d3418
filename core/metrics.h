/* metrics — process counters and histograms, rendered in Prometheus text exposition format.
 *
 * One global registry, touched only by the loop thread (hook threads never count anything). Names
 * are fixed here so /metrics is stable:
 *   kgx_drawers_total{result="completed|empty|parked|stale"}   counter
 *   kgx_triples_total{result="written|dropped"}                counter
 *   kgx_errors_total{kind="timeout|connect|reset|http_4xx|http_5xx|parse|policy|db|too_big|context"} counter
 *   kgx_retries_total                                          counter
 *   kgx_llm_requests_total                                     counter
 *   kgx_llm_chunks_skipped_total                               counter (chunks completed with no request)
 *   kgx_llm_dense_splits_total{result="split|at_limit"}        counter (answers holding the per-call cap)
 *   kgx_llm_answers_reused_total{source="stored|in_flight"}    counter (answers parsed with no request sent)
 *   kgx_in_flight                                              gauge (LLM requests)
 *   kgx_queue_depth                                            gauge (pending rows, last status read)
 *   kgx_llm_latency_seconds                                    histogram
 *   kgx_llm_prompt_tokens, kgx_llm_completion_tokens           histograms
 * and, per llama-server endpoint (label endpoint="<base URL>"), when the caller passes them:
 *   kgx_endpoint_up, kgx_endpoint_slots, kgx_endpoint_in_flight  gauges (slots busy = in flight)
 *   kgx_endpoint_requests_total                                  counter
 * deploy/grafana/kgx-dashboard.json queries these names; tests/integration/ops_prometheus.t checks
 * the rendering with promtool and every metric the dashboard uses.
 */
#ifndef KGX_METRICS_H
#define KGX_METRICS_H

#include <stddef.h>

enum kgx_metric_drawer { KGX_M_DRAWER_COMPLETED, KGX_M_DRAWER_EMPTY, KGX_M_DRAWER_PARKED, KGX_M_DRAWER_STALE, KGX_M_DRAWER__N };
enum kgx_metric_error {
    KGX_M_ERR_TIMEOUT, KGX_M_ERR_CONNECT, KGX_M_ERR_RESET, KGX_M_ERR_HTTP_4XX, KGX_M_ERR_HTTP_5XX,
    KGX_M_ERR_PARSE, KGX_M_ERR_POLICY, KGX_M_ERR_DB, KGX_M_ERR_TOO_BIG, KGX_M_ERR_CONTEXT, KGX_M_ERR__N
};

/* economy (issue 14): where a reused answer came from (reuse.h) */
enum { KGX_M_REUSED_STORED, KGX_M_REUSED_FLIGHT };

typedef struct {
    unsigned long long drawers[KGX_M_DRAWER__N];
    unsigned long long triples_written, triples_dropped;
    unsigned long long errors[KGX_M_ERR__N];
    unsigned long long retries, llm_requests;
    unsigned long long llm_chunks_skipped;      /* economy (issue 14) */
    unsigned long long llm_dense_splits, llm_dense_unsplit;   /* economy (issue 14) */
    unsigned long long llm_reused[2];           /* economy (issue 14): KGX_M_REUSED_* */
    long long in_flight, queue_depth;
} kgx_metrics_t;

extern kgx_metrics_t kgx_metrics;

const char *kgx_metric_error_name(int kind);
void kgx_metrics_observe_latency(double seconds);
void kgx_metrics_observe_tokens(long prompt_tokens, long completion_tokens);
/* One endpoint's numbers at render time (the engine fills these from its endpoint set). */
typedef struct {
    const char *url;
    int up, slots, in_flight;
    unsigned long long requests;
} kgx_metrics_endpoint_t;

/* Renders everything (plus kgx_build_info{version=…}, kgx_up) into a malloc'd string. */
char *kgx_metrics_render(size_t *len);
/* The same, with the per-endpoint families for eps[0..n). */
char *kgx_metrics_render_endpoints(size_t *len, const kgx_metrics_endpoint_t *eps, int n);
void kgx_metrics_reset(void);   /* tests */

#endif
