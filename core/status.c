/* status — see status.h. */
#include "status.h"
#include "drops.h"
#include "metrics.h"

#include <string.h>
#include <unistd.h>

void kgx_status_process_json(kgx_buf_t *b, const kgx_process_view_t *p)
{
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    kgx_buf_adds(b, "\"worker_id\":");
    kgx_buf_json_str(b, p->worker_id);
    kgx_buf_adds(b, ",\"host\":");
    kgx_buf_json_str(b, host);
    kgx_buf_printf(b, ",\"pid\":%d,\"policy\":{\"name\":", (int)getpid());
    kgx_buf_json_str(b, p->policy_name);
    kgx_buf_adds(b, ",\"version\":");
    kgx_buf_json_str(b, p->policy_version);
    kgx_buf_printf(b, "},\"in_flight\":%d,\"drawers_in_memory\":%d,\"completed\":%llu,"
                      "\"parked\":%llu,\"retries\":%llu,\"stopping\":%s,\"uptime_s\":%.0f",
                   p->in_flight, p->drawers_in_memory, p->completed, p->parked, p->retries,
                   p->stopping ? "true" : "false", p->uptime_s);
    kgx_buf_printf(b, ",\"jobs\":{\"active\":%d,\"recording_failure\":%d,\"writing\":%d,\"write_retry\":%d}",
                   p->jobs_active, p->jobs_recording_failure, p->jobs_writing, p->jobs_write_retry);
    kgx_buf_adds(b, ",");                       /* [dropin] drops by reason class, capped answers */
    kgx_drops_json(b);
    /* economy (issue 14): LLM work saved, from the process counters */
    kgx_buf_printf(b, ",\"llm\":{\"requests\":%llu,\"chunks_skipped\":%llu,\"dense_splits\":%llu,"
                      "\"dense_at_limit\":%llu,\"answers_reused\":%llu,\"answers_reused_in_flight\":%llu}",
                   kgx_metrics.llm_requests, kgx_metrics.llm_chunks_skipped, kgx_metrics.llm_dense_splits,
                   kgx_metrics.llm_dense_unsplit, kgx_metrics.llm_reused[KGX_M_REUSED_STORED],
                   kgx_metrics.llm_reused[KGX_M_REUSED_FLIGHT]);
    kgx_buf_adds(b, ",\"endpoints\":[");
    for (int i = 0; p->eps && i < p->eps->n; i++) {
        const kgx_endpoint_t *ep = &p->eps->ep[i];
        kgx_buf_adds(b, i ? ",{\"url\":" : "{\"url\":");
        kgx_buf_json_str(b, ep->base);
        kgx_buf_printf(b, ",\"state\":\"%s\",\"in_flight\":%d,\"slots\":%d,\"n_ctx\":%d,"
                          "\"requests\":%llu,\"last_error\":",
                       kgx_endpoint_state_name(ep->state), ep->in_flight, ep->slots, ep->n_ctx, ep->requests);
        kgx_buf_json_str(b, ep->last_error[0] ? ep->last_error : NULL);
        kgx_buf_adds(b, "}");
    }
    kgx_buf_adds(b, "]");
}

char *kgx_status_json(const kgx_queue_counts_t *c, const kgx_process_view_t *p, const char *workers_json,
                      const char *policy_name, const char *policy_version, size_t *len)
{
    kgx_buf_t b = { 0 };
    kgx_buf_printf(&b, "{\"queue_depth\":%lld,\"in_progress\":%lld,\"completed_today\":%lld,"
                       "\"errors_total\":%lld,\"triples_extracted_5m\":%lld,\"drawers_per_min_5m\":%.1f,"
                       "\"stale_reclaimable\":%lld,\"completed_total\":%lld,\"parked\":%lld,"
                       "\"retrying\":%lld,\"total\":%lld,\"deleted\":%lld",
                   c->queue_depth, c->in_progress, c->completed_today, c->errors_total,
                   c->triples_extracted_5m, c->drawers_per_min_5m, c->stale_reclaimable,
                   c->completed_total, c->errors_total, c->retrying, c->total, c->deleted);
    kgx_buf_adds(&b, ",\"policy\":{\"name\":");
    kgx_buf_json_str(&b, policy_name);
    kgx_buf_adds(&b, ",\"version\":");
    kgx_buf_json_str(&b, policy_version);
    kgx_buf_adds(&b, "}");
    if (p) {
        kgx_buf_adds(&b, ",\"process\":{");
        kgx_status_process_json(&b, p);
        kgx_buf_adds(&b, "}");
    }
    if (workers_json) kgx_buf_printf(&b, ",\"workers\":%s", workers_json);
    kgx_buf_printf(&b, ",\"version\":\"%s\"}", KGX_VERSION);
    return kgx_buf_steal(&b, len);
}

void kgx_status_print_text(FILE *out, const kgx_queue_counts_t *c, const char *policy_name,
                           const char *policy_version, int have_graph, long long entities,
                           long long edges, long long supports, const char *workers_text)
{
    fprintf(out, "queue_depth          %lld\n", c->queue_depth);
    fprintf(out, "in_progress          %lld\n", c->in_progress);
    fprintf(out, "completed_today      %lld\n", c->completed_today);
    fprintf(out, "errors_total         %lld   (parked: kgx-run will not retry them until re-queued)\n", c->errors_total);
    fprintf(out, "triples_extracted_5m %lld\n", c->triples_extracted_5m);
    fprintf(out, "drawers_per_min_5m   %.1f\n", c->drawers_per_min_5m);
    fprintf(out, "stale_reclaimable    %lld\n", c->stale_reclaimable);
    fprintf(out, "completed_total      %lld\n", c->completed_total);
    fprintf(out, "retrying             %lld\n", c->retrying);
    fprintf(out, "deleted              %lld   (drawer gone from mempalace_drawers: facts retracted)\n", c->deleted);
    fprintf(out, "policy               %s %s\n", policy_name ? policy_name : "(not loaded)",
            policy_version ? policy_version : "");
    if (have_graph)
        fprintf(out, "graph                %lld entities, %lld edges, %lld supports\n", entities, edges, supports);
    if (!workers_text || !workers_text[0])
        fprintf(out, "workers              none running (none seen in the last 60 s)\n");
    else
        fprintf(out, "workers\n%s\n", workers_text);
}
