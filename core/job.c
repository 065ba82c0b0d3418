/* job — one drawer's way through the policy, the LLM and the write. The engine owns the list of
 * jobs and asks each what it needs next (job_next_action); everything here runs on the loop thread
 * (hooks run on hook threads and call back here, on the loop, through hooks.c).
 *
 *                 claim
 *                   |
 *                   v          split hook fails / charged
 *   +--------> WAIT_SPLIT ----------------------------------+
 *   |               | job_split                             |
 *   |               v                                       v
 *   |          SPLITTING --(0 chunks / blank)--+        FAILING --(recorded)--> RETRY_WAIT
 *   |               | chunks                   |            |  (parked, claim lost)  |  |
 *   | context       v                          |            v                        |  | due, not split
 *   +--------- CHUNKS: request hook, HTTP,     |          DONE <---------------------+  +--> WAIT_SPLIT
 *   | (resplit)  answer, parse hook per chunk  |            ^                        |
 *   |               | all chunks answered      |            |                        | due, split
 *   |               v                          v            |                        +--> CHUNKS
 *   |            WRITING <---------------------+            |
 *   |            |  |  \--(written / claim lost)------------+
 *   |  transient |  | write failed (facts redone)
 *   |            v  +-------------------------------------> WAIT_SPLIT, charged
 *   |       WRITE_WAIT --(due)--> WRITING
 *   +-- (a charged failure moves CHUNKS / SPLITTING to FAILING; with --dry-run straight to RETRY_WAIT)
 *
 * The moves allowed are a table in jobstate.c; job_set_state() is the one place a job changes state
 * and keeps the per-state counts. Which failure is charged, waited out or split is the table in
 * outcome.c. */
#include "engine_int.h"
#include "answer.h"
#include "drops.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "status.h"
#include "sink.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* The one place a job changes state (and the per-state counts stay true). */
void job_set_state(job_t *j, job_state_t st)
{
    if (!job_transition_ok(j->state, st) && j->state != st)
        log_err("drawer=%s job state %s -> %s is not in the table (a bug); moving anyway", j->row.drawer_id,
                job_state_name(j->state), job_state_name(st));
    j->e->jobs_in[j->state]--;
    j->state = st;
    j->e->jobs_in[st]++;
}

/* Due retries move on; then the job says what it needs. */
job_action_t job_next_action(job_t *j, uint64_t now)
{
    if ((j->state == JOB_RETRY_WAIT || j->state == JOB_WRITE_WAIT) && j->not_before > now) return JOB_ACT_NONE;
    switch (j->state) {
    case JOB_RETRY_WAIT:
        job_set_state(j, j->split_done ? JOB_CHUNKS : JOB_WAIT_SPLIT);
        return job_next_action(j, now);
    case JOB_WAIT_SPLIT: return JOB_ACT_SPLIT;
    case JOB_WRITE_WAIT: return JOB_ACT_WRITE;
    case JOB_CHUNKS:
        if (j->ndone == j->nchunks) return JOB_ACT_WRITE;
        for (size_t i = 0; i < j->nchunks; i++)
            if (j->chunks[i].state == CH_PENDING) return JOB_ACT_SEND;
        return JOB_ACT_NONE;
    case JOB_DONE: return JOB_ACT_FREE;
    default: return JOB_ACT_NONE;
    }
}

/* Units of work that could use a slot now: a split to run, or chunks waiting to be sent. */
size_t job_ready_units(const job_t *j)
{
    if (j->state == JOB_WAIT_SPLIT) return 1;
    if (j->state != JOB_CHUNKS) return 0;
    size_t n = 0;
    for (size_t i = 0; i < j->nchunks; i++) n += j->chunks[i].state == CH_PENDING;
    return n;
}

/* The next chunk to send (CHUNKS, not waiting), or NULL. */
chunk_t *job_next_chunk(job_t *j)
{
    if (j->state != JOB_CHUNKS) return NULL;
    for (size_t i = 0; i < j->nchunks; i++)
        if (j->chunks[i].state == CH_PENDING) return &j->chunks[i];
    return NULL;
}

/* When a waiting job wants the pump again (loop time, ms), or 0. */
uint64_t job_wake_at(const job_t *j)
{
    return j->state == JOB_RETRY_WAIT || j->state == JOB_WRITE_WAIT || j->state == JOB_WAIT_SPLIT ? j->not_before : 0;
}

/* Waiting for the database to answer about this job (a stop lets that finish). */
int job_db_busy(const job_t *j) { return j->state == JOB_WRITING || j->state == JOB_FAILING; }

/* ------------------------------------------------------------------ jobs */

/* A slot of --workers (and of the endpoint) is held from the request hook to the HTTP answer. */
static void chunk_release(job_t *j, chunk_t *c)
{
    if (c->ep) c->ep->in_flight--;
    j->e->in_flight--;
    kgx_metrics.in_flight = j->e->in_flight;
}

void job_chunk_cancel(job_t *j, chunk_t *c)
{
    if (c->state == CH_INFLIGHT && c->req) {
        kgx_http_cancel(c->req);
        c->req = NULL;
        chunk_release(j, c);
    } else if (c->state == CH_REQUEST) {
        kgx_hooks_cancel(c->call);
        c->call = NULL;
        chunk_release(j, c);
    } else if (c->state == CH_PARSE || c->state == CH_RESPLIT) {
        kgx_hooks_cancel(c->call);
        c->call = NULL;
    }
    free(c->suspect);
    c->suspect = NULL;
    c->state = CH_PENDING;
}

static void job_reset_chunks(job_t *j)
{
    for (size_t i = 0; i < j->nchunks; i++) {
        job_chunk_cancel(j, &j->chunks[i]);
        free(j->chunks[i].facts);          /* economy (issue 14) */
    }
    free(j->chunks);
    j->chunks = NULL;
    j->nchunks = j->ndone = 0;
    j->split_done = 0;
    kgx_hooks_cancel(j->split_call);
    j->split_call = NULL;
    kgx_drawer_box_unref(j->box);
    j->box = NULL;
    kgx_chunks_free(j->texts, j->nchunks_texts);
    j->texts = NULL;
    j->nchunks_texts = 0;
    kgx_buf_reset(&j->triples);
    kgx_buf_reset(&j->answers);
    kgx_buf_reset(&j->report);
    j->kept = j->dropped = 0;
    j->n_triples = 0;
    j->chunks_cap = 0;
}

/* Stopping: cancel what is in flight for it (not a write or a failure being recorded). */
void job_cancel(job_t *j)
{
    if (job_db_busy(j)) return;
    for (size_t i = 0; i < j->nchunks; i++) job_chunk_cancel(j, &j->chunks[i]);
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
    kgx_policy_src_unref(j->src);
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
    j->state = JOB_WAIT_SPLIT;
    e->jobs_in[JOB_WAIT_SPLIT]++;
    j->prev = e->jobs.prev;
    j->next = &e->jobs;
    e->jobs.prev->next = j;
    e->jobs.prev = j;
    e->njobs++;
    return j;
}

/* While policy code runs for a job, the hook thread's log lines (kgx.log too) name the drawer. */
static const char *job_context(const job_t *j, char *buf, size_t len)
{
    snprintf(buf, len, "drawer=%.180s attempt=%d", j->row.drawer_id, j->attempts + 1);
    return buf;
}

static kgx_drawer_t job_drawer(const job_t *j)
{
    kgx_drawer_t d = { j->row.drawer_id, j->row.wing, j->row.room, j->row.document, j->row.document_len,
                       j->row.metadata };
    return d;
}

#define job_log(j, lvl, fmt, ...) \
    kgx_log(lvl, "drawer=%s attempt=%d " fmt, (j)->row.drawer_id, (j)->attempts + 1, __VA_ARGS__)

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

static void split_cb(kgx_hook_outcome_t *o, void *ud)
{
    job_t *j = ud;
    kgx_engine_t *e = j->e;
    j->split_call = NULL;
    if (o->rc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "policy: %s", o->err);
        job_charge(j, KGX_OUT_POLICY, msg);     /* split again when the retry is due */
        kgx_engine_pump(e);
        return;
    }
    size_t n = o->nchunks;
    kgx_metrics.llm_chunks_skipped += o->skipped;   /* economy (issue 14) */
    /* room, allocated once (chunks[] never moves: callbacks point at its entries; texts[] grows with
     * it): economy (issue 14) for dense answers' halves, [answer] for the pieces of chunks cut at n_predict */
    size_t cap = n + (n < 64 ? n : 64) * ((2u << MAX_DENSE_DEPTH) - 2) + EXTRA_CHUNKS;
    kgx_chunk_t *texts = realloc(o->chunks, cap * sizeof *texts);
    chunk_t *chunks = calloc(cap, sizeof *chunks);
    if (!texts || !chunks) {
        free(chunks);
        if (texts) o->chunks = texts;
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
        kgx_engine_pump(e);
        return;
    }
    memset(texts + n, 0, (cap - n) * sizeof *texts);
    j->split_done = 1;
    j->texts = texts;
    j->nchunks_texts = n;
    o->chunks = NULL;
    o->nchunks = 0;
    j->nchunks = n;
    j->ndone = 0;
    j->chunks_cap = cap;
    j->chunks = chunks;
    for (size_t i = 0; i < n; i++) {
        j->chunks[i].idx = i;
        j->chunks[i].job = j;
        j->chunks[i].parent = -1;          /* economy (issue 14) */
    }
    if (n == 0) job_write(j);
    else job_set_state(j, JOB_CHUNKS);
    kgx_engine_pump(e);
}

void job_split(job_t *j)
{
    kgx_engine_t *e = j->e;
    if (kgx_budget_need_text(e, j)) return;   /* budget: text not in memory; the pump splits once read */
    if (!j->row.document || is_blank(j->row.document, j->row.document_len)) {
        j->split_done = 1;
        j->nchunks = 0;
        job_write(j);
        return;
    }
    kgx_policy_src_unref(j->src);
    j->src = kgx_policy_src_ref(kgx_hooks_src(e->hooks));   /* this attempt's policy text */
    kgx_drawer_t d = job_drawer(j);
    kgx_ctx_t ctx = { kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1, NULL, 0 };
    char lc[240];
    job_set_state(j, JOB_SPLITTING);
    kgx_drawer_box_unref(j->box);
    j->box = kgx_drawer_box_new(&d);
    if (j->box) kgx_budget_split_done(e, j);   /* budget: the box holds the text now; the row's copy goes */
    j->split_call = j->box ? kgx_hooks_split(e->hooks, j->src, j->box, &ctx, job_context(j, lc, sizeof lc), split_cb, j)
                           : NULL;
    if (!j->split_call) job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
}

/* ------------------------------------------------------------------ failures */

static double backoff_ms(kgx_engine_t *e, int attempts)
{
    double d = e->retry_base_ms;
    for (int i = 1; i < attempts && d < 60000; i++) d *= 2;
    if (d > 60000) d = 60000;
    return d * (0.5 + (double)rand() / RAND_MAX);   /* jitter: 0.5x .. 1.5x */
}

/* The sink recorded (or could not record) a charged failure. */
void job_failed(job_t *j, int attempts, int parked, int stale, const char *err)
{
    kgx_engine_t *e = j->e;
    if (err) {
        /* the database is away: keep the claim, try again shortly */
        log_warn("drawer=%s recording a failure failed: %s", j->row.drawer_id, err);
        j->not_before = kgx_engine_now(e) + FAIL_RECORD_RETRY_MS;
        job_set_state(j, JOB_RETRY_WAIT);
    } else if (stale) {
        log_warn("drawer=%s claim lost (lease expired or re-queued); dropping this copy", j->row.drawer_id);
        kgx_metrics.drawers[KGX_M_DRAWER_STALE]++;
        job_set_state(j, JOB_DONE);
    } else if (parked) {
        log_err("drawer=%s parked after %d attempts", j->row.drawer_id, attempts);
        kgx_metrics.drawers[KGX_M_DRAWER_PARKED]++;
        e->parked_here++;
        job_set_state(j, JOB_DONE);
    } else {
        j->attempts = attempts;
        j->not_before = kgx_engine_now(e) + (uint64_t)backoff_ms(e, attempts);
        job_set_state(j, JOB_RETRY_WAIT);
        kgx_metrics.retries++;
        e->retries_here++;
    }
    kgx_engine_pump(e);
}

/* A charged failure of this attempt: one charge per round, however many chunks fail with it. */
void job_charge(job_t *j, kgx_outcome_t oc, const char *msg)
{
    kgx_engine_t *e = j->e;
    int kind = kgx_outcome_rule(oc)->metric;
    if (kind >= 0) kgx_metrics.errors[kind]++;
    if (j->state == JOB_FAILING || j->state == JOB_RETRY_WAIT || j->state == JOB_DONE) return;
    job_log(j, KGX_LOG_WARN, "error=%s %s", kind >= 0 ? kgx_metric_error_name(kind) : kgx_outcome_rule(oc)->name, msg);
    job_set_state(j, JOB_FAILING);
    e->sink->fail(j, msg);
}

/* ------------------------------------------------------------------ answers */

static void add_answer(job_t *j, size_t idx, const char *body, size_t len, double ms, long pt, long ct)
{
    kgx_engine_t *e = j->e;
    if (!e->cfg->keep_answers || !e->sink->keeps_answers) return;
    kgx_buf_adds(&j->answers, j->answers.len ? "," : "[");
    kgx_buf_printf(&j->answers, "{\"chunk\":%zu,\"body\":", idx);
    /* [answer] what matters of the answer, not the prompt echo and generation settings */
    kgx_buf_t compact = { 0 };
    if (kgx_answer_compact(body, len, &compact) == 0) kgx_buf_json_strn(&j->answers, compact.p, compact.len);
    else kgx_buf_json_strn(&j->answers, body, len);
    kgx_buf_free(&compact);
    kgx_buf_adds(&j->answers, ",\"model\":");
    kgx_buf_json_str(&j->answers, e->cfg->model);
    kgx_buf_adds(&j->answers, ",\"policy\":");
    kgx_buf_json_str(&j->answers, kgx_policy_src_name(j->src));
    kgx_buf_adds(&j->answers, ",\"policy_version\":");
    kgx_buf_json_str(&j->answers, kgx_policy_src_version(j->src));
    kgx_buf_printf(&j->answers, ",\"latency_ms\":%.1f", ms);
    if (pt >= 0) kgx_buf_printf(&j->answers, ",\"prompt_tokens\":%ld", pt);
    if (ct >= 0) kgx_buf_printf(&j->answers, ",\"completion_tokens\":%ld", ct);
    kgx_buf_adds(&j->answers, "}");
}

/* economy (issue 14): the halves of a dense chunk restate what its answer gave; a fact (FNV-1a of
 * subject, predicate, object) an ancestor chunk gave is left out of a half's result. Ancestors always
 * answer before their halves, so what is kept does not depend on the order answers arrive in. */
static uint64_t fact_hash3(const char *sub, const char *pred, const char *obj, uint64_t salt)
{
    uint64_t h = 1469598103934665603ull ^ salt;
    const char *parts[3] = { sub, pred, obj };
    for (int k = 0; k < 3; k++) {
        for (const unsigned char *p = (const unsigned char *)(parts[k] ? parts[k] : ""); *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0x1f) * 1099511628211ull;
    }
    return h ? h : 1;
}

/* 1 when an ancestor of chunk c (the chunk it is a half of, and so on) gave fact h. */
static int ancestor_gave(const job_t *j, const chunk_t *c, uint64_t h)
{
    for (long p = c->parent; p >= 0; p = j->chunks[p].parent)
        for (size_t i = 0; i < j->chunks[p].nfacts; i++)
            if (j->chunks[p].facts[i] == h) return 1;
    return 0;
}

/* The answer of chunk c: its facts join the job's. For a half of a dense chunk (economy, issue 14)
 * only what no ancestor gave (kept or dropped) is added; an ordinary answer is taken whole, as always
 * (the write function unites repeats by entity key). */
static void add_result(job_t *j, chunk_t *c, const kgx_result_t *r)
{
    kgx_engine_t *e = j->e;
    size_t idx = c->idx;
    kgx_result_t fresh = *r;
    kgx_triple_t *tv = c->depth > 0 && r->n_triples ? malloc(r->n_triples * sizeof *tv) : NULL;
    kgx_drop_t *dv = c->depth > 0 && r->n_drops ? malloc(r->n_drops * sizeof *dv) : NULL;
    if (tv) fresh.triples = tv, fresh.n_triples = 0;
    if (dv) fresh.drops = dv, fresh.n_drops = 0;
    free(c->facts);
    c->nfacts = 0;
    c->facts = malloc((r->n_triples + r->n_drops + 1) * sizeof *c->facts);
    for (size_t i = 0; i < r->n_triples; i++) {
        const kgx_triple_t *t = &r->triples[i];
        uint64_t h = fact_hash3(t->subject, t->predicate, t->object, 0);
        if (c->facts) c->facts[c->nfacts++] = h;
        if (tv) { if (ancestor_gave(j, c, h)) continue; tv[fresh.n_triples++] = *t; }
        kgx_graph_triple_json(&j->triples, t, (long)idx);
        j->n_triples++;
        j->kept++;
    }
    kgx_drops_record(j->row.drawer_id, (long)idx, &fresh, e->cfg->max_triples);   /* [dropin] logged and counted by class */
    for (size_t i = 0; i < r->n_drops; i++) {
        const kgx_drop_t *d = &r->drops[i];
        uint64_t h = fact_hash3(d->subject, d->predicate, d->object, 0x5eed);
        if (c->facts) c->facts[c->nfacts++] = h;
        if (dv && !ancestor_gave(j, c, h)) dv[fresh.n_drops++] = *d;
    }
    j->dropped += (long long)fresh.n_drops;
    kgx_metrics.triples_dropped += fresh.n_drops;
    if (e->sink->result) e->sink->result(j, idx, &fresh);
    free(tv);
    free(dv);
}

static void job_resplit(job_t *j, int learned)
{
    kgx_engine_t *e = j->e;
    job_reset_chunks(j);
    j->shrink++;
    kgx_metrics.errors[KGX_M_ERR_CONTEXT]++;
    if (j->state == JOB_CHUNKS) job_set_state(j, JOB_WAIT_SPLIT);
    if (learned > 0) kgx_hooks_set_n_ctx(e->hooks, kgx_endpoints_n_ctx(&e->eps));
    job_log(j, KGX_LOG_INFO, "context exceeded (n_ctx=%d): splitting smaller, shrink=%d", learned, j->shrink);
    if (j->shrink > MAX_SHRINK) {
        j->shrink = 0;
        job_charge(j, KGX_OUT_CONTEXT, "context exceeded even after splitting smaller");
    }
}

/* [answer] The answer to chunk c was cut at n_predict: only that chunk is split smaller (the split
 * hook on a drawer whose document is that chunk's text, ctx.max_tokens = half its tokens) and asked
 * again; the answered chunks are kept. Bounded: MAX_CUT_SPLITS deep, EXTRA_CHUNKS pieces per drawer
 * (chunks[] never moves: callbacks point at its entries). A chunk that cannot be split further is a
 * charged failure naming n_predict, so the drawer is parked with that reason once its attempts are
 * spent. */
static void cut_fail(job_t *j, chunk_t *c, const char *why)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "answer cut at n_predict (stop_type limit) and chunk %zu (%d tokens) cannot be "
             "split further%s%.900s: raise n_predict or lower max_triples", c->idx, j->texts[c->idx].tokens,
             why && *why ? ": " : "", why ? why : "");
    c->state = CH_PENDING;
    job_charge(j, KGX_OUT_CUT_NPREDICT, msg);
}

static void split_cut_cb(kgx_hook_outcome_t *o, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    c->call = NULL;
    size_t m = o->rc ? 0 : o->nchunks;
    if (o->rc || m < 2) {
        cut_fail(j, c, o->rc ? o->err : NULL);
    } else if (j->nchunks + m > j->chunks_cap) {
        /* more pieces than there is room for: start the drawer over on its next attempt */
        job_reset_chunks(j);
        job_charge(j, KGX_OUT_CUT_NPREDICT, "answer cut at n_predict; its chunk splits into more pieces than kgx "
                   "keeps room for: raise n_predict or lower max_triples");
    } else {
        int tokens = j->texts[c->idx].tokens;
        for (size_t k = 0; k < m; k++) {
            size_t i = j->nchunks + k;
            j->texts[i] = o->chunks[k];
            chunk_t *n = &j->chunks[i];
            memset(n, 0, sizeof *n);
            n->idx = i;
            n->job = j;
            n->depth = c->depth;            /* economy's halving depth and ancestors carry over */
            n->parent = (long)(c - j->chunks);
            n->cut_depth = c->cut_depth + 1;
            n->state = CH_PENDING;
        }
        free(o->chunks);                /* the texts are j->texts' now */
        o->chunks = NULL;
        o->nchunks = 0;
        j->nchunks += m;
        j->nchunks_texts += m;
        job_log(j, KGX_LOG_INFO, "answer cut at n_predict: chunk %zu (%d tokens) split into %zu smaller chunks",
                c->idx, tokens, m);
        c->state = CH_DONE;             /* replaced by its pieces */
        j->ndone++;
    }
    kgx_engine_pump(e);
}

static void job_split_cut(job_t *j, chunk_t *c)
{
    kgx_engine_t *e = j->e;
    const kgx_chunk_t *t = &j->texts[c->idx];
    int tokens = t->tokens >= 0 ? t->tokens : (int)((t->len + 2) / 3);
    if (c->cut_depth >= MAX_CUT_SPLITS || tokens < 16 || t->table || j->nchunks + 2 > j->chunks_cap) {
        cut_fail(j, c, t->table ? "a table chunk is not split again" : NULL);
        return;
    }
    kgx_drawer_t d = job_drawer(j);
    d.document = t->text;
    d.document_len = t->len;
    kgx_drawer_box_t *box = kgx_drawer_box_new(&d);
    kgx_endpoint_t *ep = c->ep;
    kgx_ctx_t ctx = { ep && ep->n_ctx ? ep->n_ctx : kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1,
                      ep ? ep->base : NULL, (tokens + 1) / 2 };
    char lc[240];
    c->state = CH_RESPLIT;
    c->call = box ? kgx_hooks_split(e->hooks, j->src, box, &ctx, job_context(j, lc, sizeof lc), split_cut_cb, c)
                  : NULL;
    kgx_drawer_box_unref(box);          /* the call holds its own reference */
    if (!c->call) {
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
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
            if (ep->state == KGX_EP_UP) job_charge(j, KGX_OUT_RESET, msg ? msg : "request failed");
            free(msg);
        }
    }
}

/* economy (issue 14): where to cut a chunk's text in two — the sentence end, else the whitespace,
 * nearest the middle (both halves non-empty), else the middle itself on a UTF-8 boundary. */
static size_t half_point(const char *s, size_t n)
{
    size_t mid = n / 2, best = 0, best_ws = 0;
    for (size_t d = 0; d < mid; d++) {
        size_t cand[2] = { mid - d, mid + d };
        for (int k = 0; k < 2; k++) {
            size_t i = cand[k];
            if (i == 0 || i >= n) continue;
            unsigned char c = (unsigned char)s[i], p = (unsigned char)s[i - 1];
            if (!best && (p == '\n' || ((p == '.' || p == '!' || p == '?') && (c == ' ' || c == '\n')))) best = i;
            if (!best_ws && (c == ' ' || c == '\n' || c == '\t')) best_ws = i;
        }
        if (best) return best;
    }
    if (best_ws) return best_ws;
    while (mid > 0 && ((unsigned char)s[mid] & 0xC0) == 0x80) mid--;
    return mid;
}

/* economy (issue 14): an answer holding exactly the per-call cap may have left facts out. Its chunk
 * is asked again as two halves (appended as new chunks of the job); the facts already kept stay and
 * the halves add only new ones. Returns 1 when the halves were queued. */
static int dense_split(job_t *j, chunk_t *c, const kgx_result_t *r)
{
    kgx_engine_t *e = j->e;
    size_t raw = r->n_triples + r->n_drops;
    int cap = e->cfg->max_triples > 0 ? e->cfg->max_triples : 10;
    const kgx_chunk_t *t = &j->texts[c->idx];
    if (raw < (size_t)cap || j->state != JOB_CHUNKS) return 0;
    if (c->depth >= MAX_DENSE_DEPTH || t->table || t->len < DENSE_MIN_BYTES || j->nchunks + 2 > j->chunks_cap) {
        kgx_metrics.llm_dense_unsplit++;
        job_log(j, KGX_LOG_INFO, "chunk=%zu answer holds the cap (%d facts) but is split no further "
                "(depth %d of %d, %zu bytes)", c->idx, cap, c->depth, MAX_DENSE_DEPTH, t->len);
        return 0;
    }
    if (j->nchunks_texts + 2 > j->chunks_cap) return 0;
    size_t cut = half_point(t->text, t->len);
    if (cut == 0 || cut >= t->len) return 0;
    kgx_chunk_t *texts = realloc(j->texts, j->chunks_cap * sizeof *texts);   /* hooks copy chunk texts */
    if (!texts) return 0;
    j->texts = texts;
    t = &j->texts[c->idx];
    const char *src = t->text;
    size_t len = t->len;
    size_t from[2] = { 0, cut }, n[2] = { cut, len - cut };
    char *half[2] = { malloc(n[0] + 1), malloc(n[1] + 1) };
    if (!half[0] || !half[1]) { free(half[0]); free(half[1]); return 0; }
    for (int k = 0; k < 2; k++) {
        kgx_chunk_t *h = &j->texts[j->nchunks_texts];
        memset(h, 0, sizeof *h);
        h->text = half[k];
        memcpy(h->text, src + from[k], n[k]);
        h->text[n[k]] = 0;
        h->len = n[k];
        h->tokens = (int)((n[k] + 2) / 3);
        chunk_t *hc = &j->chunks[j->nchunks];
        memset(hc, 0, sizeof *hc);
        hc->idx = j->nchunks_texts;
        hc->job = j;
        hc->depth = c->depth + 1;
        hc->parent = (long)(c - j->chunks);
        hc->state = CH_PENDING;
        j->nchunks_texts++;
        j->nchunks++;
    }
    kgx_metrics.llm_dense_splits++;
    job_log(j, KGX_LOG_INFO, "chunk=%zu answer holds the cap (%d facts): asking its two halves (chunks %zu, %zu; depth %d)",
            c->idx, cap, j->nchunks - 2, j->nchunks - 1, c->depth + 1);
    return 1;
}

static void answer_cb(kgx_hook_outcome_t *o, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    char msg[700];
    c->call = NULL;
    if (o->rc) {
        c->state = CH_PENDING;
        if (o->abandoned) {
            snprintf(msg, sizeof msg, "policy: %s", o->err);
            job_charge(j, KGX_OUT_POLICY, msg);
        } else {
            snprintf(msg, sizeof msg, "unparseable answer from %s: %.500s", c->ep ? c->ep->base : "?", o->err);
            job_charge(j, KGX_OUT_UNPARSEABLE, msg);
        }
        kgx_engine_pump(e);
        return;
    }
    /* [answer] whole only when the server ended it itself (chunk_cb) and the list parsed to its end */
    if (kgx_answer_classify(0, 200, NULL, 0, NULL, o->result.verdict) != KGX_ANSWER_WHOLE) {
        snprintf(msg, sizeof msg, "answer from %s not whole: its list breaks off (parse verdict)",
                 c->ep ? c->ep->base : "?");
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_MALFORMED, msg);
        kgx_engine_pump(e);
        return;
    }
    if (c->ep) kgx_endpoint_ok(c->ep);
    add_result(j, c, &o->result);
    dense_split(j, c, &o->result);              /* economy (issue 14) */
    kgx_metrics_observe_tokens(c->pt, c->ct);
    add_answer(j, c->idx, o->body, o->body_len, c->ms, c->pt, c->ct);
    c->state = CH_DONE;
    j->ndone++;
    if (j->ndone == j->nchunks && j->state == JOB_CHUNKS) job_write(j);
    kgx_engine_pump(e);
}

static void chunk_cb(kgx_http_req_t *req, const kgx_http_resp_t *r, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    c->req = NULL;
    chunk_release(j, c);
    kgx_metrics_observe_latency(r->total_ms / 1000.0);
    /* [answer] one classification of what the server did with this request (answer.c), landing on a
     * row of the failure table (outcome.c); the parse verdict is judged after the parse hook */
    kgx_answer_t ans;
    kgx_answer_read(r->err == KGX_HTTP_OK && r->status == 200 ? r->body : NULL, r->body_len, &ans);
    /* [answer] a chat answer says "length" for both cuts: its token counts against the slot tell them apart */
    if (ans.stop == KGX_STOP_LIMIT && ans.truncated < 0)
        ans.truncated = kgx_endpoint_context_full(ep, ans.tokens_evaluated, ans.tokens_predicted);
    {   /* [budget] what the instructions took, as the server counts: the prompt less the chunk's estimate */
        const kgx_chunk_t *t = &j->texts[c->idx];
        kgx_status_note_prompt(ans.tokens_evaluated, t->tokens >= 0 ? t->tokens : (long)(t->len + 2) / 3);
    }
    int aoc = r->err == KGX_HTTP_OK
        ? (int)kgx_answer_classify(0, r->status, r->body ? r->body : "", r->body ? r->body_len : 0, &ans,
                                   KGX_VERDICT_NONE)
        : (int)KGX_ANSWER_TRANSPORT;
    kgx_outcome_t oc = kgx_outcome_of_answer(r->err, r->status, aoc);
    const kgx_outcome_rule_t *rule = kgx_outcome_rule(oc);
    char msg[600];
    switch (oc) {
    case KGX_OUT_CONNECT: snprintf(msg, sizeof msg, "%s", r->errmsg); break;
    case KGX_OUT_LOADING: snprintf(msg, sizeof msg, "503 loading"); break;
    case KGX_OUT_RESET: case KGX_OUT_TIMEOUT:
        snprintf(msg, sizeof msg, "llm %s from %s: %s", oc == KGX_OUT_TIMEOUT ? "timeout" : "reset", ep->base, r->errmsg);
        break;
    case KGX_OUT_TOO_BIG: case KGX_OUT_TRANSPORT:
        snprintf(msg, sizeof msg, "llm request to %s failed: %s", ep->base, r->errmsg);
        break;
    case KGX_OUT_MALFORMED:            /* [answer] */
        snprintf(msg, sizeof msg, "answer from %s not whole: the server ended it with an unknown stop type", ep->base);
        break;
    default:
        snprintf(msg, sizeof msg, "llm http %ld from %s: %.300s", r->status, ep->base, r->body ? r->body : "");
    }
    switch (rule->action) {
    case KGX_DO_ACCEPT:
        break;
    case KGX_DO_WAIT_ENDPOINT:          /* not the drawer's fault */
        if (rule->metric >= 0) kgx_metrics.errors[rule->metric]++;
        c->state = CH_PENDING;
        kgx_endpoint_down(ep, msg);
        kgx_engine_pump(e);
        return;
    case KGX_DO_ASK_HEALTH:             /* /health decides: job_resolve_suspects */
        c->state = CH_SUSPECT;
        c->suspect = strdup(msg);
        kgx_endpoint_check(ep);
        if (!ep->probe) job_resolve_suspects(e, ep);
        kgx_engine_pump(e);
        return;
    case KGX_DO_FEWER: {                /* [answer] the server is busy: fewer in flight, not charged */
        int was = kgx_endpoint_busy(ep, r->status);
        if (!(was == 1 && ep->in_flight == 0)) {
            if (rule->metric >= 0) kgx_metrics.errors[rule->metric]++;
            c->state = CH_PENDING;
            kgx_engine_pump(e);
            return;
        }
        /* alone on the endpoint at a limit of 1 and still refused: the drawer's own overflow */
        job_log(j, KGX_LOG_INFO, "llm http %ld alone at in-flight limit 1: the request itself overflows", r->status);
    }
    /* fall through */
    case KGX_DO_RESPLIT: {
        if (oc == KGX_OUT_CUT_CONTEXT) {    /* [answer] the slot's context filled up during the answer */
            job_log(j, KGX_LOG_INFO, "answer cut by a full context (truncated) at %ld+%ld tokens", ans.tokens_evaluated,
                    ans.tokens_predicted);
            job_resplit(j, 0);
            kgx_engine_pump(e);
            return;
        }
        int n = kgx_error_n_ctx(r->body);
        if (n > 0) kgx_endpoint_learn_n_ctx(ep, n);
        job_resplit(j, n);
        kgx_engine_pump(e);
        return;
    }
    case KGX_DO_SPLIT_CHUNK:            /* [answer] cut at n_predict: only this chunk, smaller */
        job_split_cut(j, c);
        kgx_engine_pump(e);
        return;
    case KGX_DO_CHARGE: case KGX_DO_CHARGE_CHECK: case KGX_DO_RETRY_SAME:
        c->state = CH_PENDING;
        if (rule->action != KGX_DO_RETRY_SAME) job_charge(j, oc, msg);
        if (rule->action == KGX_DO_CHARGE_CHECK) kgx_endpoint_check(ep);
        kgx_engine_pump(e);
        return;
    }
    long pt = kgx_body_int(r->body, "tokens_evaluated"), ct = kgx_body_int(r->body, "tokens_predicted");
    if (pt < 0) pt = kgx_body_int(r->body, "prompt_tokens");
    if (ct < 0) ct = kgx_body_int(r->body, "completion_tokens");
    c->ms = r->total_ms;
    c->pt = pt;
    c->ct = ct;
    char lc[240];
    c->state = CH_PARSE;
    c->call = kgx_hooks_answer(e->hooks, j->src, j->box, &j->texts[c->idx], r->body, r->body_len,
                               job_context(j, lc, sizeof lc), answer_cb, c);
    if (!c->call) {
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
    }
    kgx_engine_pump(e);
}

static void request_cb(kgx_hook_outcome_t *o, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    c->call = NULL;
    if (o->rc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "policy: %s", o->err);
        chunk_release(j, c);
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_POLICY, msg);
        kgx_engine_pump(e);
        return;
    }
    kgx_request_t *rq = &o->request;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", ep->base, rq->path);
    long timeout = rq->timeout_ms > 0 ? rq->timeout_ms : (long)(e->cfg->request_timeout * 1000);
    c->req = kgx_http_submit(e->http, "POST", url, rq->body, rq->body_len, timeout, MAX_ANSWER_BYTES, chunk_cb, c);
    if (!c->req) {
        chunk_release(j, c);
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_TRANSPORT, "could not start the HTTP request");
    } else {
        c->state = CH_INFLIGHT;
        ep->requests++;
        kgx_metrics.llm_requests++;
    }
    kgx_engine_pump(e);
}

void job_send_chunk(kgx_engine_t *e, job_t *j, chunk_t *c, kgx_endpoint_t *ep)
{
    kgx_ctx_t ctx = { ep->n_ctx ? ep->n_ctx : kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1, ep->base, 0 };
    char lc[240];
    /* the slot is taken now: the request hook runs for this endpoint */
    c->state = CH_REQUEST;
    c->ep = ep;
    ep->in_flight++;
    e->in_flight++;
    kgx_metrics.in_flight = e->in_flight;
    c->call = kgx_hooks_request(e->hooks, j->src, j->box, &j->texts[c->idx], &ctx, job_context(j, lc, sizeof lc),
                                request_cb, c);
    if (!c->call) {
        chunk_release(j, c);
        c->state = CH_PENDING;
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
    }
}
/* ------------------------------------------------------------------ writing */

/* The one owner of a drawer's write payload: the triples array (and the answers array) as the
 * write function reads them, closed — the job's own buffers are never touched. */
void job_write_json(const job_t *j, kgx_buf_t *triples, kgx_buf_t *answers)
{
    if (j->triples.len) {
        kgx_buf_add(triples, j->triples.p, j->triples.len);
        kgx_buf_adds(triples, "]");
    } else {
        kgx_buf_adds(triples, "[]");
    }
    if (!answers) return;
    if (j->answers.len) {
        kgx_buf_add(answers, j->answers.p, j->answers.len);
        kgx_buf_adds(answers, "]");
    } else {
        kgx_buf_adds(answers, "[]");
    }
}

void job_write_again(job_t *j, uint64_t ms)
{
    j->not_before = kgx_engine_now(j->e) + ms;
    job_set_state(j, JOB_WRITE_WAIT);
}

/* The sink's answer about the write: n facts, -1 the claim was lost, or an error. */
void job_written(job_t *j, int n, const char *err, const char *sqlstate)
{
    kgx_engine_t *e = j->e;
    if (err) {
        kgx_outcome_t oc = kgx_graph_is_transient(sqlstate, err) ? KGX_OUT_DB_TRANSIENT : KGX_OUT_DB;
        long delay = kgx_outcome_rule(oc)->action == KGX_DO_RETRY_SAME ? kgx_db_retry_ms(++j->write_retries) : -1;
        if (delay >= 0) {
            log_debug("drawer=%s write retry %d: %s", j->row.drawer_id, j->write_retries, err);
            kgx_metrics.errors[KGX_M_ERR_DB]++;
            job_write_again(j, (uint64_t)delay);
        } else {
            char msg[800];
            snprintf(msg, sizeof msg, "db write failed%s%s: %s", sqlstate ? " " : "", sqlstate ? sqlstate : "", err);
            /* the facts are redone from scratch on the next attempt */
            job_reset_chunks(j);
            j->write_retries = 0;
            job_set_state(j, JOB_WAIT_SPLIT);
            job_charge(j, KGX_OUT_DB, msg);
        }
    } else if (n < 0) {
        log_warn("drawer=%s claim lost before the write (lease expired or re-queued); nothing written",
                 j->row.drawer_id);
        kgx_metrics.drawers[KGX_M_DRAWER_STALE]++;
        job_set_state(j, JOB_DONE);
    } else {
        log_debug("drawer=%s completed triples=%d chunks=%zu", j->row.drawer_id, n, j->nchunks);
        kgx_metrics.drawers[j->nchunks ? KGX_M_DRAWER_COMPLETED : KGX_M_DRAWER_EMPTY]++;
        kgx_metrics.triples_written += (unsigned long long)n;
        e->done_here++;
        job_set_state(j, JOB_DONE);
    }
    kgx_engine_pump(e);
}

void job_write(job_t *j)
{
    job_set_state(j, JOB_WRITING);
    j->e->sink->write(j);
}
