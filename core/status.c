/* status — see status.h. */
#include "status.h"
#include "db.h"
#include "drops.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ [budget] the token budget */

static pthread_mutex_t budget_mu = PTHREAD_MUTEX_INITIALIZER;
static kgx_status_budget_t budget_now;          /* the last report, with the instructions counted since */
static kgx_status_budget_t budget_warned;       /* n_ctx, instruction_tokens, output_cap last warned about */
static long prompt_smallest;                     /* the smallest prompt counted: budget_now.counted is from it */

/* The instructions as they count: the policy's estimate, or what the server's counts say when that is
 * more (the estimate is ceil(bytes/3); a tokenizer can split finer). */
static long instructions(const kgx_status_budget_t *b)
{
    return b->counted > b->instruction_tokens ? b->counted : b->instruction_tokens;
}

long kgx_status_budget_left(const kgx_status_budget_t *b)
{
    return (long)b->n_ctx - instructions(b) - b->output_cap;
}

int kgx_status_budget_tiny(const kgx_status_budget_t *b)
{
    return b->n_ctx > 0 && kgx_status_budget_left(b) * 4 < b->n_ctx;
}

void kgx_status_budget_warning(kgx_buf_t *out, const kgx_status_budget_t *b)
{
    long left = kgx_status_budget_left(b);
    if (left < 0) left = 0;
    kgx_buf_printf(out, "tiny budget: slot context %d tokens, instructions ~%d", b->n_ctx, b->instruction_tokens);
    if (b->counted > b->instruction_tokens)
        kgx_buf_printf(out, " (~%d as the server counts them)", b->counted);
    kgx_buf_printf(out, " + output cap %d leave %ld tokens (%ld %%) for drawer text: every drawer becomes many small "
                        "requests. Give each slot more context (llama-server --ctx-size C -np N: each slot gets C/N "
                        "tokens) or shorten the prompt", b->output_cap, left, b->n_ctx > 0 ? left * 100 / b->n_ctx : 0);
}

/* Under budget_mu: whether `budget_now` is tiny and not yet said; marks it said. */
static int should_warn(void)
{
    if (!kgx_status_budget_tiny(&budget_now)) return 0;
    if (budget_warned.n_ctx == budget_now.n_ctx && budget_warned.instruction_tokens == budget_now.instruction_tokens
        && budget_warned.output_cap == budget_now.output_cap)
        return 0;
    budget_warned = budget_now;
    return 1;
}

static void warn(const kgx_status_budget_t *b)
{
    kgx_buf_t w = { 0 };
    kgx_status_budget_warning(&w, b);
    log_warn("%s", w.p);
    kgx_buf_free(&w);
}

int kgx_status_note_budget(int n_ctx, int instruction_tokens, int output_cap)
{
    if (n_ctx <= 0 || instruction_tokens < 0 || output_cap < 0) return 0;
    pthread_mutex_lock(&budget_mu);
    if (budget_now.instruction_tokens != instruction_tokens) budget_now.counted = 0;   /* another prompt */
    budget_now.n_ctx = n_ctx;
    budget_now.instruction_tokens = instruction_tokens;
    budget_now.output_cap = output_cap;
    kgx_status_budget_t b = budget_now;
    int say = should_warn();
    pthread_mutex_unlock(&budget_mu);
    if (say) warn(&b);
    return kgx_status_budget_tiny(&b);
}

/* The count is taken from the smallest prompt: its chunk is the smallest, so the estimate subtracted
 * for the chunk errs least (ceil(bytes/3) can be off by a sixth either way; on a 1,500-byte chunk that is
 * more than the margin between tiny and not). */
void kgx_status_note_prompt(long prompt_tokens, long text_tokens)
{
    long counted = prompt_tokens - text_tokens;
    if (prompt_tokens <= 0 || prompt_tokens > 1 << 28 || text_tokens < 0 || counted <= 0) return;
    pthread_mutex_lock(&budget_mu);
    int say = 0;
    kgx_status_budget_t b = { 0 };
    if (budget_now.counted == 0 || prompt_tokens < prompt_smallest) {
        prompt_smallest = prompt_tokens;
        budget_now.counted = (int)counted;
        b = budget_now;
        say = should_warn();
    }
    pthread_mutex_unlock(&budget_mu);
    if (say) warn(&b);
}

kgx_status_budget_t kgx_status_budget(void)
{
    pthread_mutex_lock(&budget_mu);
    kgx_status_budget_t b = budget_now;
    pthread_mutex_unlock(&budget_mu);
    return b;
}

void kgx_status_budget_reset(void)
{
    pthread_mutex_lock(&budget_mu);
    memset(&budget_now, 0, sizeof budget_now);
    memset(&budget_warned, 0, sizeof budget_warned);
    pthread_mutex_unlock(&budget_mu);
}

static void budget_json(kgx_buf_t *out, const kgx_status_budget_t *b)
{
    if (b->n_ctx <= 0) {
        kgx_buf_adds(out, "null");
        return;
    }
    long left = kgx_status_budget_left(b);
    int tiny = kgx_status_budget_tiny(b);
    kgx_buf_printf(out, "{\"n_ctx\":%d,\"instruction_tokens\":%d,\"instruction_tokens_counted\":", b->n_ctx,
                   b->instruction_tokens);
    if (b->counted > 0) kgx_buf_printf(out, "%d", b->counted);
    else kgx_buf_adds(out, "null");
    kgx_buf_printf(out, ",\"output_cap\":%d,\"text_tokens\":%ld,\"text_percent\":%ld,\"tiny\":%s,\"warning\":",
                   b->output_cap, left > 0 ? left : 0, left > 0 ? left * 100 / b->n_ctx : 0, tiny ? "true" : "false");
    if (tiny) {
        kgx_buf_t w = { 0 };
        kgx_status_budget_warning(&w, b);
        kgx_buf_json_str(out, w.p);
        kgx_buf_free(&w);
    } else {
        kgx_buf_adds(out, "null");
    }
    kgx_buf_adds(out, "}");
}

int kgx_status_live_budgets(PGconn *c, FILE *text, kgx_buf_t *warnings, char *err, size_t errlen)
{
    PGresult *r = PQexec(c,
        "SELECT (state->'budget'->>'n_ctx')::int, (state->'budget'->>'instruction_tokens')::int,"
        "       (state->'budget'->>'output_cap')::int, coalesce(max((state->'budget'->>'instruction_tokens_counted')::int), 0),"
        "       string_agg(worker_id, ', ' ORDER BY worker_id)"
        "  FROM public.kgx_workers"
        " WHERE seen_at > now() - interval '60 seconds' AND jsonb_typeof(state->'budget') = 'object'"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "budget: ", r);
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        kgx_status_budget_t b = { atoi(PQgetvalue(r, i, 0)), atoi(PQgetvalue(r, i, 1)), atoi(PQgetvalue(r, i, 2)),
                                  atoi(PQgetvalue(r, i, 3)) };
        long left = kgx_status_budget_left(&b);
        int tiny = kgx_status_budget_tiny(&b);
        kgx_buf_t w = { 0 };
        if (tiny) kgx_status_budget_warning(&w, &b);
        if (text) {
            fprintf(text, "budget               slot context %d tokens: instructions ~%d", b.n_ctx, b.instruction_tokens);
            if (b.counted > 0) fprintf(text, " (~%d as the server counts them)", b.counted);
            fprintf(text, " + output cap %d, %ld left for drawer text (%ld %%)%s   (workers: %s)\n", b.output_cap,
                    left > 0 ? left : 0, left > 0 && b.n_ctx > 0 ? left * 100 / b.n_ctx : 0, tiny ? " TINY" : "",
                    PQgetvalue(r, i, 4));
            if (tiny) fprintf(text, "warning: %s\n", w.p);
        }
        if (warnings && tiny) {
            if (warnings->len) kgx_buf_adds(warnings, ",");
            kgx_buf_json_str(warnings, w.p);
        }
        kgx_buf_free(&w);
    }
    PQclear(r);
    return 0;
}

/* ------------------------------------------------------------------ status JSON and text */

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
    kgx_buf_adds(b, ",\"budget\":");             /* [budget] what a request leaves for drawer text */
    kgx_status_budget_t nb = kgx_status_budget();
    budget_json(b, &nb);
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
