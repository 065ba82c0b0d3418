/* job — one drawer's way through the policy, the LLM and the write (see engine.h for the failure
 * policy). The engine owns the list of jobs and calls in here; everything below runs on the loop. */
#include "engine_int.h"
#include "drops.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* The one place a job changes state (and the per-state counts stay true). */
void job_set_state(job_t *j, int st)
{
    j->e->jobs_in[j->state]--;
    j->state = st;
    j->e->jobs_in[st]++;
}

/* ------------------------------------------------------------------ jobs */

void job_chunk_cancel(job_t *j, chunk_t *c)
{
    if (c->state == CH_INFLIGHT && c->req) {
        kgx_http_cancel(c->req);
        c->req = NULL;
        if (c->ep) c->ep->in_flight--;
        j->e->in_flight--;
    }
    free(c->suspect);
    c->suspect = NULL;
    c->state = CH_PENDING;
}

static void job_reset_chunks(job_t *j)
{
    for (size_t i = 0; i < j->nchunks; i++) job_chunk_cancel(j, &j->chunks[i]);
    free(j->chunks);
    j->chunks = NULL;
    j->nchunks = j->ndone = 0;
    j->split_done = 0;
    kgx_script_job_free(j->e->script, j->script_job);
    j->script_job = 0;
    kgx_buf_reset(&j->triples);
    kgx_buf_reset(&j->answers);
    kgx_buf_reset(&j->report);
    j->kept = j->dropped = 0;
    j->n_triples = 0;
}

void job_free(job_t *j)
{
    kgx_engine_t *e = j->e;
    kgx_budget_release(e, j);     /* budget: its charge back, its text read (if any) orphaned */
    job_reset_chunks(j);
    j->prev->next = j->next;
    j->next->prev = j->prev;
    e->njobs--;
    e->jobs_in[j->state]--;
    kgx_buf_free(&j->triples);
    kgx_buf_free(&j->answers);
    kgx_buf_free(&j->report);
    free(j->row.drawer_id);
    free(j->row.wing);
    free(j->row.room);
    free(j->row.document);
    free(j->row.metadata);
    free(j);
}

job_t *job_new(kgx_engine_t *e, kgx_claim_row_t *row)
{
    /* rows are freed as an array by kgx_claim_rows_free: copy the struct, then steal */
    job_t *j = calloc(1, sizeof *j);
    j->e = e;
    j->row = *row;
    memset(row, 0, sizeof *row);
    j->attempts = j->row.attempts;
    j->state = JOB_ACTIVE;
    e->jobs_in[JOB_ACTIVE]++;
    j->prev = e->jobs.prev;
    j->next = &e->jobs;
    e->jobs.prev->next = j;
    e->jobs.prev = j;
    e->njobs++;
    return j;
}

/* While policy code runs for a job, log lines (kgx.log from hooks too) name the drawer. */
static void job_context(const job_t *j)
{
    char ctx[240];
    snprintf(ctx, sizeof ctx, "drawer=%.180s attempt=%d", j->row.drawer_id, j->attempts + 1);
    kgx_log_set_context(ctx);
}

#define job_log(j, lvl, fmt, ...) \
    kgx_log(lvl, "drawer=%s attempt=%d " fmt, (j)->row.drawer_id, (j)->attempts + 1, __VA_ARGS__)

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

void job_split(job_t *j)
{
    kgx_engine_t *e = j->e;
    if (kgx_budget_need_text(e, j)) return;   /* budget: text not in memory; the pump splits once read */
    j->split_done = 1;
    if (!j->row.document || is_blank(j->row.document, j->row.document_len)) {
        j->nchunks = 0;
        job_write(j);
        return;
    }
    kgx_drawer_t d = { j->row.drawer_id, j->row.wing, j->row.room, j->row.document,
                       j->row.document_len, j->row.metadata };
    kgx_ctx_t ctx = { kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1, NULL };
    char err[1024];
    size_t n = 0;
    job_context(j);
    int ref = kgx_script_split(e->script, &d, &ctx, &n, err, sizeof err);
    kgx_log_set_context(NULL);
    if (ref < 0) {
        j->split_done = 0;          /* split again on the next attempt */
        char msg[1100];
        snprintf(msg, sizeof msg, "policy: %s", err);
        j->split_done = 0;        /* split again when the retry is due (else the job never moves again) */
        job_charge(j, KGX_M_ERR_POLICY, msg);
        return;
    }
    j->script_job = ref;
    kgx_budget_split_done(e, j);    /* budget: the C copy of the text goes (Lua holds it) */
    j->nchunks = n;
    j->ndone = 0;
    j->chunks = calloc(n ? n : 1, sizeof *j->chunks);
    for (size_t i = 0; i < n; i++) {
        j->chunks[i].idx = i;
        j->chunks[i].job = j;
    }
    if (n == 0) job_write(j);
}

/* ------------------------------------------------------------------ failures */

static double backoff_ms(kgx_engine_t *e, int attempts)
{
    double d = e->retry_base_ms;
    for (int i = 1; i < attempts && d < 60000; i++) d *= 2;
    if (d > 60000) d = 60000;
    return d * (0.5 + (double)rand() / RAND_MAX);   /* jitter: 0.5x .. 1.5x */
}

static void fail_cb(int attempts, int parked, int stale, const char *err, void *ud)
{
    job_t *j = ud;
    kgx_engine_t *e = j->e;
    if (err) {
        /* the database is away: keep the claim, try again shortly */
        log_warn("drawer=%s recording a failure failed: %s", j->row.drawer_id, err);
        job_set_state(j, JOB_ACTIVE);
        j->not_before = kgx_engine_now(e) + 1000;
    } else if (stale) {
        log_warn("drawer=%s claim lost (lease expired or re-queued); dropping this copy", j->row.drawer_id);
        kgx_metrics.drawers[KGX_M_DRAWER_STALE]++;
        job_free(j);
    } else if (parked) {
        log_err("drawer=%s parked after %d attempts", j->row.drawer_id, attempts);
        kgx_metrics.drawers[KGX_M_DRAWER_PARKED]++;
        e->parked_here++;
        job_free(j);
    } else {
        j->attempts = attempts;
        job_set_state(j, JOB_ACTIVE);
        j->not_before = kgx_engine_now(e) + (uint64_t)backoff_ms(e, attempts);
        kgx_metrics.retries++;
        e->retries_here++;
    }
    kgx_engine_pump(e);
}

/* A charged failure of this attempt: one charge per round, however many chunks fail with it. */
void job_charge(job_t *j, int kind, const char *msg)
{
    kgx_engine_t *e = j->e;
    kgx_metrics.errors[kind]++;
    if (j->state == JOB_FAILING || j->not_before > kgx_engine_now(e)) return;
    job_log(j, KGX_LOG_WARN, "error=%s %s", kgx_metric_error_name(kind), msg);
    if (!e->db) {                 /* --dry-run: count attempts locally */
        j->attempts++;
        if (j->attempts >= e->cfg->max_attempts) {
            kgx_buf_printf(&j->report, "  FAILED after %d attempts: %s\n", j->attempts, msg);
            if (e->cfg->json) {
                kgx_buf_t b = { 0 };
                kgx_buf_adds(&b, "{\"id\":");
                kgx_buf_json_str(&b, j->row.drawer_id);
                kgx_buf_adds(&b, ",\"error\":");
                kgx_buf_json_str(&b, msg);
                kgx_buf_adds(&b, "}\n");
                fwrite(b.p, 1, b.len, stdout);
                kgx_buf_free(&b);
            } else {
                printf("drawer %s: FAILED after %d attempts: %s\n", j->row.drawer_id, j->attempts, msg);
            }
            fflush(stdout);
            e->dry_failed++;
            job_reset_chunks(j);
            job_set_state(j, JOB_DEAD);
        } else {
            j->not_before = kgx_engine_now(e) + (uint64_t)backoff_ms(e, j->attempts);
        }
        return;
    }
    job_set_state(j, JOB_FAILING);
    if (kgx_queue_fail(e->db, j->row.drawer_id, j->row.token, msg, e->cfg->max_attempts, fail_cb, j)) {
        job_set_state(j, JOB_ACTIVE);
        j->not_before = kgx_engine_now(e) + 1000;
    }
}

/* ------------------------------------------------------------------ answers */

static void add_answer(job_t *j, size_t idx, const char *body, size_t len, double ms, long pt, long ct)
{
    kgx_engine_t *e = j->e;
    if (!e->cfg->keep_answers || !e->db) return;
    kgx_buf_adds(&j->answers, j->answers.len ? "," : "[");
    kgx_buf_printf(&j->answers, "{\"chunk\":%zu,\"body\":", idx);
    kgx_buf_json_strn(&j->answers, body, len);
    kgx_buf_adds(&j->answers, ",\"model\":");
    kgx_buf_json_str(&j->answers, e->cfg->model);
    kgx_buf_adds(&j->answers, ",\"policy\":");
    kgx_buf_json_str(&j->answers, kgx_script_name(e->script));
    kgx_buf_adds(&j->answers, ",\"policy_version\":");
    kgx_buf_json_str(&j->answers, kgx_script_version(e->script));
    kgx_buf_printf(&j->answers, ",\"latency_ms\":%.1f", ms);
    if (pt >= 0) kgx_buf_printf(&j->answers, ",\"prompt_tokens\":%ld", pt);
    if (ct >= 0) kgx_buf_printf(&j->answers, ",\"completion_tokens\":%ld", ct);
    kgx_buf_adds(&j->answers, "}");
}

static void add_result(job_t *j, size_t idx, const kgx_result_t *r)
{
    kgx_engine_t *e = j->e;
    for (size_t i = 0; i < r->n_triples; i++) {
        const kgx_triple_t *t = &r->triples[i];
        kgx_graph_triple_json(&j->triples, t, (long)idx);
        j->n_triples++;
        j->kept++;
        if (!e->db) {
            if (e->cfg->json) continue;
            kgx_buf_printf(&j->report, "  keep  %s | %s | %s  (%.2f%s%s)\n", t->subject, t->predicate,
                           t->object, t->confidence, t->raw_predicate ? ", raw " : "",
                           t->raw_predicate ? t->raw_predicate : "");
        }
    }
    kgx_drops_record(j->row.drawer_id, (long)idx, r, e->cfg->max_triples);   /* [dropin] logged and counted by class */
    for (size_t i = 0; i < r->n_drops; i++) {
        const kgx_drop_t *d = &r->drops[i];
        j->dropped++;
        kgx_metrics.triples_dropped++;
        if (e->db) continue;
        if (e->cfg->json) {
            kgx_buf_adds(&j->report, j->report.len ? "," : "");
            kgx_buf_adds(&j->report, "{\"subject\":");
            kgx_buf_json_str(&j->report, d->subject);
            kgx_buf_adds(&j->report, ",\"predicate\":");
            kgx_buf_json_str(&j->report, d->predicate);
            kgx_buf_adds(&j->report, ",\"object\":");
            kgx_buf_json_str(&j->report, d->object);
            kgx_buf_adds(&j->report, ",\"reason\":");
            kgx_buf_json_str(&j->report, d->reason);
            kgx_buf_adds(&j->report, "}");
        } else {
            kgx_buf_printf(&j->report, "  drop  %s | %s | %s  -- %s\n", d->subject ? d->subject : "?",
                           d->predicate ? d->predicate : "?", d->object ? d->object : "?", d->reason);
        }
    }
}

static int is_context_error(const kgx_http_resp_t *r)
{
    if (r->status != 400 && r->status != 500) return 0;
    if (!r->body) return 0;
    return strstr(r->body, "exceed_context_size") || strstr(r->body, "context size")
        || strstr(r->body, "Context size") || strstr(r->body, "context length");
}

static void job_resplit(job_t *j, int learned)
{
    kgx_engine_t *e = j->e;
    job_reset_chunks(j);
    j->shrink++;
    kgx_metrics.errors[KGX_M_ERR_CONTEXT]++;
    if (learned > 0) kgx_script_set_n_ctx(e->script, kgx_endpoints_n_ctx(&e->eps));
    job_log(j, KGX_LOG_INFO, "context exceeded (n_ctx=%d): splitting smaller, shrink=%d", learned, j->shrink);
    if (j->shrink > MAX_SHRINK) {
        j->shrink = 0;
        job_charge(j, KGX_M_ERR_CONTEXT, "context exceeded even after splitting smaller");
    }
}

/* Resolves a suspect chunk once /health has spoken: endpoint down → not charged. */
void job_resolve_suspects(kgx_engine_t *e, kgx_endpoint_t *ep)
{
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) {
        for (size_t i = 0; i < j->nchunks; i++) {
            chunk_t *c = &j->chunks[i];
            if (c->state != CH_SUSPECT || c->ep != ep) continue;
            char *msg = c->suspect;
            c->suspect = NULL;
            c->state = CH_PENDING;
            if (ep->state == KGX_EP_UP) job_charge(j, KGX_M_ERR_RESET, msg ? msg : "request failed");
            free(msg);
        }
    }
}

static void chunk_cb(kgx_http_req_t *req, const kgx_http_resp_t *r, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    c->req = NULL;
    ep->in_flight--;
    e->in_flight--;
    kgx_metrics.in_flight = e->in_flight;
    kgx_metrics_observe_latency(r->total_ms / 1000.0);
    char msg[600];

    if (r->err == KGX_HTTP_ECONNECT || (r->err == KGX_HTTP_OK && r->status == 503)) {
        /* endpoint down or still loading: not the drawer's fault */
        kgx_metrics.errors[r->err == KGX_HTTP_ECONNECT ? KGX_M_ERR_CONNECT : KGX_M_ERR_HTTP_5XX]++;
        snprintf(msg, sizeof msg, "%s", r->err == KGX_HTTP_ECONNECT ? r->errmsg : "503 loading");
        c->state = CH_PENDING;
        kgx_endpoint_down(ep, msg);
        kgx_engine_pump(e);
        return;
    }
    if (r->err == KGX_HTTP_ERESET || r->err == KGX_HTTP_ETIMEOUT) {
        snprintf(msg, sizeof msg, "llm %s from %s: %s", r->err == KGX_HTTP_ETIMEOUT ? "timeout" : "reset",
                 ep->base, r->errmsg);
        if (r->err == KGX_HTTP_ETIMEOUT) {
            c->state = CH_PENDING;
            job_charge(j, KGX_M_ERR_TIMEOUT, msg);
            kgx_endpoint_check(ep);
        } else {
            c->state = CH_SUSPECT;
            c->suspect = strdup(msg);
            kgx_endpoint_check(ep);
            if (!ep->probe) job_resolve_suspects(e, ep);
        }
        kgx_engine_pump(e);
        return;
    }
    if (r->err != KGX_HTTP_OK) {
        snprintf(msg, sizeof msg, "llm request to %s failed: %s", ep->base, r->errmsg);
        c->state = CH_PENDING;
        job_charge(j, r->err == KGX_HTTP_ETOOBIG ? KGX_M_ERR_TOO_BIG : KGX_M_ERR_RESET, msg);
        kgx_engine_pump(e);
        return;
    }
    if (is_context_error(r)) {
        int n = kgx_error_n_ctx(r->body);
        if (n > 0) kgx_endpoint_learn_n_ctx(ep, n);
        job_resplit(j, n);
        kgx_engine_pump(e);
        return;
    }
    if (r->status != 200) {
        snprintf(msg, sizeof msg, "llm http %ld from %s: %.300s", r->status, ep->base, r->body ? r->body : "");
        c->state = CH_PENDING;
        job_charge(j, r->status >= 500 ? KGX_M_ERR_HTTP_5XX : KGX_M_ERR_HTTP_4XX, msg);
        kgx_engine_pump(e);
        return;
    }
    kgx_result_t res = { 0 };
    char err[1024];
    job_context(j);
    int arc = kgx_script_answer(e->script, j->script_job, c->idx, r->body, r->body_len, &res, err, sizeof err);
    kgx_log_set_context(NULL);
    if (arc) {
        snprintf(msg, sizeof msg, "unparseable answer from %s: %.500s", ep->base, err);
        c->state = CH_PENDING;
        job_charge(j, KGX_M_ERR_PARSE, msg);
        kgx_engine_pump(e);
        return;
    }
    add_result(j, c->idx, &res);
    kgx_result_clear(&res);
    long pt = kgx_body_int(r->body, "tokens_evaluated"), ct = kgx_body_int(r->body, "tokens_predicted");
    if (pt < 0) pt = kgx_body_int(r->body, "prompt_tokens");
    if (ct < 0) ct = kgx_body_int(r->body, "completion_tokens");
    kgx_metrics_observe_tokens(pt, ct);
    add_answer(j, c->idx, r->body, r->body_len, r->total_ms, pt, ct);
    c->state = CH_DONE;
    j->ndone++;
    if (j->ndone == j->nchunks && j->state == JOB_ACTIVE) job_write(j);
    kgx_engine_pump(e);
}

void job_send_chunk(kgx_engine_t *e, job_t *j, chunk_t *c, kgx_endpoint_t *ep)
{
    kgx_ctx_t ctx = { ep->n_ctx ? ep->n_ctx : kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1, ep->base };
    kgx_request_t rq = { 0 };
    char err[1024];
    job_context(j);
    int rrc = kgx_script_request(e->script, j->script_job, c->idx, &ctx, &rq, err, sizeof err);
    kgx_log_set_context(NULL);
    if (rrc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "policy: %s", err);
        job_charge(j, KGX_M_ERR_POLICY, msg);
        return;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s%s", ep->base, rq.path);
    long timeout = rq.timeout_ms > 0 ? rq.timeout_ms : (long)(e->cfg->request_timeout * 1000);
    c->req = kgx_http_submit(e->http, "POST", url, rq.body, rq.body_len, timeout, MAX_ANSWER_BYTES, chunk_cb, c);
    kgx_request_clear(&rq);
    if (!c->req) {
        job_charge(j, KGX_M_ERR_CONNECT, "could not start the HTTP request");
        return;
    }
    c->state = CH_INFLIGHT;
    c->ep = ep;
    c->t0 = kgx_engine_now(e);
    ep->in_flight++;
    ep->requests++;
    e->in_flight++;
    kgx_metrics.in_flight = e->in_flight;
    kgx_metrics.llm_requests++;
}

/* ------------------------------------------------------------------ writing */

static void print_dry_report(job_t *j)
{
    kgx_engine_t *e = j->e;
    if (e->cfg->json) {
        kgx_buf_t b = { 0 };
        kgx_buf_adds(&b, "{\"id\":");
        kgx_buf_json_str(&b, j->row.drawer_id);
        kgx_buf_adds(&b, ",\"chunks\":[");
        for (size_t i = 0; i < j->nchunks; i++)
            kgx_buf_printf(&b, "%s{\"tokens\":%d}", i ? "," : "", kgx_script_chunk_tokens(e->script, j->script_job, i));
        kgx_buf_adds(&b, "],\"triples\":");
        kgx_buf_adds(&b, j->triples.len ? j->triples.p : "[");
        kgx_buf_adds(&b, "],\"dropped\":[");
        if (j->report.len) kgx_buf_add(&b, j->report.p, j->report.len);
        kgx_buf_printf(&b, "],\"kept\":%lld,\"would_write\":%d}\n", j->kept, j->n_triples);
        fwrite(b.p, 1, b.len, stdout);
        kgx_buf_free(&b);
    } else {
        printf("drawer %s: %zu chunk%s (tokens:", j->row.drawer_id, j->nchunks, j->nchunks == 1 ? "" : "s");
        for (size_t i = 0; i < j->nchunks && i < 32; i++)
            printf(" %d", kgx_script_chunk_tokens(e->script, j->script_job, i));
        if (j->nchunks > 32) printf(" …");
        printf(")\n");
        if (j->report.len) fwrite(j->report.p, 1, j->report.len, stdout);
        printf("  would write %d fact%s, dropped %lld\n", j->n_triples, j->n_triples == 1 ? "" : "s", j->dropped);
    }
    fflush(stdout);
}

static void write_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    job_t *j = ud;
    kgx_engine_t *e = j->e;
    if (err) {
        if (kgx_graph_is_transient(sqlstate, err) && ++j->write_retries <= MAX_WRITE_RETRIES) {
            log_debug("drawer=%s write retry %d: %s", j->row.drawer_id, j->write_retries, err);
            kgx_metrics.errors[KGX_M_ERR_DB]++;
            double d = 20.0 * (1 << (j->write_retries < 7 ? j->write_retries : 7));
            job_set_state(j, JOB_WRITE_WAIT);
            j->not_before = kgx_engine_now(e) + (uint64_t)(d * (0.5 + (double)rand() / RAND_MAX));
        } else {
            char msg[800];
            snprintf(msg, sizeof msg, "db write failed%s%s: %s", sqlstate ? " " : "", sqlstate ? sqlstate : "", err);
            /* the facts are redone from scratch on the next attempt */
            job_reset_chunks(j);
            j->write_retries = 0;
            job_set_state(j, JOB_ACTIVE);
            job_charge(j, KGX_M_ERR_DB, msg);
        }
    } else if (n < 0) {
        log_warn("drawer=%s claim lost before the write (lease expired or re-queued); nothing written",
                 j->row.drawer_id);
        kgx_metrics.drawers[KGX_M_DRAWER_STALE]++;
        job_free(j);
    } else {
        log_debug("drawer=%s completed triples=%d chunks=%zu", j->row.drawer_id, n, j->nchunks);
        kgx_metrics.drawers[j->nchunks ? KGX_M_DRAWER_COMPLETED : KGX_M_DRAWER_EMPTY]++;
        kgx_metrics.triples_written += (unsigned long long)n;
        e->done_here++;
        job_free(j);
    }
    kgx_engine_pump(e);
}

void job_write(job_t *j)
{
    kgx_engine_t *e = j->e;
    job_set_state(j, JOB_WRITING);
    if (!e->db) {
        print_dry_report(j);
        e->done_here++;
        job_reset_chunks(j);
        job_set_state(j, JOB_DEAD);
        return;
    }
    const char *triples = "[]";
    if (j->triples.len) {
        kgx_buf_adds(&j->triples, "]");
        triples = j->triples.p;
    }
    const char *answers = NULL;
    if (e->cfg->keep_answers) {
        if (j->answers.len) kgx_buf_adds(&j->answers, "]");
        answers = j->answers.len ? j->answers.p : "[]";
    }
    int rc = kgx_graph_write(e->db, e->cfg->graph, j->row.drawer_id, e->worker, j->row.token, triples,
                             answers, write_cb, j);
    /* the closing brackets go again: a retry rebuilds them */
    if (j->triples.len && j->triples.p[j->triples.len - 1] == ']') j->triples.p[--j->triples.len] = 0;
    if (j->answers.len && j->answers.p[j->answers.len - 1] == ']') j->answers.p[--j->answers.len] = 0;
    if (rc) {
        job_set_state(j, JOB_WRITE_WAIT);
        j->not_before = kgx_engine_now(e) + 500;
    }
}

