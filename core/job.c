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
#include "job_int.h"
#include "answer.h"
#include "drops.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
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

void job_reset_chunks(job_t *j)
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
    if (j->row.text_pending == 1) e->budget.look = 1;   /* its text is read when it fits */
    j->prev = e->jobs.prev;
    j->next = &e->jobs;
    e->jobs.prev->next = j;
    e->jobs.prev = j;
    e->njobs++;
    return j;
}

/* While policy code runs for a job, the hook thread's log lines (kgx.log too) name the drawer. */
const char *job_context(const job_t *j, char *buf, size_t len)
{
    snprintf(buf, len, "drawer=%.180s attempt=%d", j->row.drawer_id, j->attempts + 1);
    return buf;
}

kgx_drawer_t job_drawer(const job_t *j)
{
    kgx_drawer_t d = { j->row.drawer_id, j->row.wing, j->row.room, j->row.document, j->row.document_len,
                       j->row.metadata };
    return d;
}


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
    for (int i = 1; i < attempts && d < RETRY_BACKOFF_MAX_MS; i++) d *= 2;
    if (d > RETRY_BACKOFF_MAX_MS) d = RETRY_BACKOFF_MAX_MS;
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
