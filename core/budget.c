/* budget — see budget.h. The accounting is pure; the admission of claimed drawers runs on the loop
 * beside the pump (engine.c) and reads each admitted drawer's text with kgx_queue_fetch_text. */
#include "budget.h"
#include "engine_int.h"
#include "log.h"
#include "metrics.h"
#include "sink.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#define TEXT_FAILURES_CHARGED 5
/* Texts up to TEXT_BATCH_BYTES admitted in one pump are read together, up to TEXT_BATCH_MAX drawers
 * or TEXT_BATCH_TOTAL bytes per query (one round trip, not one per drawer: B1 read 4,000 texts in
 * 4,000 queries); larger ones are read alone, in pieces (queue.c). */
#define TEXT_BATCH_BYTES (64u << 10)
#define TEXT_BATCH_MAX 32
#define TEXT_BATCH_TOTAL (2u << 20)

void kgx_budget_init(kgx_budget_t *b, size_t limit)
{
    /* Drawer texts, chunks and answers are large buffers that come and go. glibc's sliding mmap
     * threshold moves up after the first large free and then serves them from the heap, where they
     * stay resident; a fixed threshold maps each one and gives it back to the system when freed. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    /* The hook threads (hooks.c) would each get a malloc arena of their own, and the chunk-sized
     * buffers a large drawer leaves in an arena stay resident there, unusable by the next drawer's
     * allocations in another arena: one arena for the whole process (B10a, 8 x 10 MB drawers, default
     * budget: 71.4 MiB with two arenas, 55.2 MiB with one; small allocations still come from each
     * thread's own cache, so the threads rarely wait for each other: kgx-run's CPU time on 3,000
     * drawers was the same). */
    mallopt(M_ARENA_MAX, 1);
    *b = (kgx_budget_t){ 0 };
    b->limit = limit;
    /* never below one drawer's fixed share: a tiny budget still makes progress, one drawer at a time */
    b->avail = limit > KGX_BUDGET_BASE + KGX_BUDGET_PER_DRAWER ? limit - KGX_BUDGET_BASE : KGX_BUDGET_PER_DRAWER;
}

size_t kgx_budget_cost(size_t text_len)
{
    if (text_len > ((size_t)-1 - KGX_BUDGET_PER_DRAWER) / KGX_BUDGET_COPIES)
        return (size_t)-1;
    return text_len * KGX_BUDGET_COPIES + KGX_BUDGET_PER_DRAWER;
}

int kgx_budget_fits(const kgx_budget_t *b, size_t cost)
{
    return b->holders == 0 || (b->used <= b->avail && cost <= b->avail - b->used);
}

void kgx_budget_take(kgx_budget_t *b, size_t cost)
{
    b->used = cost > (size_t)-1 - b->used ? (size_t)-1 : b->used + cost;
    b->holders++;
    if (b->used > b->peak) b->peak = b->used;
}

void kgx_budget_give(kgx_budget_t *b, size_t cost)
{
    b->look = 1;                  /* room freed: a drawer waiting for it may fit now */
    b->used = cost > b->used ? 0 : b->used - cost;
    if (b->holders > 0) b->holders--;
}

size_t kgx_budget_claim_hold(kgx_budget_t *b, int want, size_t *held)
{
    *held = 0;
    if (want <= 0) return 0;
    size_t room = b->holders == 0 ? b->avail : b->used < b->avail ? b->avail - b->used : 0;
    size_t fixed = (size_t)want * KGX_BUDGET_PER_DRAWER;
    if (room <= fixed) return 0;
    size_t bytes = (room - fixed) / KGX_BUDGET_COPIES;
    if (bytes > KGX_CLAIM_TEXT_TOTAL) bytes = KGX_CLAIM_TEXT_TOTAL;
    *held = bytes * KGX_BUDGET_COPIES + fixed;
    kgx_budget_take(b, *held);
    return bytes;
}

void kgx_budget_claim_release(kgx_budget_t *b, size_t *held)
{
    if (*held) kgx_budget_give(b, *held);
    *held = 0;
}

/* ------------------------------------------------------------------ admission */

/* Charges an admitted drawer (cost 0: it holds its charge already) and says so in the debug log. */
static void charge(kgx_budget_t *b, kgx_claim_row_t *r, size_t cost, const char *how)
{
    log_debug("budget admit drawer=%s text_bytes=%zu charge=%zu used=%zu holders=%d%s", r->drawer_id,
              r->document_len, cost, b->used, b->holders, how);
    if (cost) {
        kgx_budget_take(b, cost);
        r->budget_held = cost;
    }
}

void kgx_budget_claimed(kgx_engine_t *e, kgx_claim_row_t *r)
{
    if (r->document) charge(&e->budget, r, kgx_budget_cost(r->document_len), " (text with the claim)");
}

/* One text read in flight: one drawer's, or a batch's. job[k] NULL: that job ended meanwhile; its
 * text is dropped on arrival. */
struct budget_read {
    struct budget_read *prev, *next;
    kgx_engine_t *e;
    kgx_text_fetch_t *fetch;
    int n;
    job_t *job[TEXT_BATCH_MAX];
};

static void read_unlink(kgx_budget_t *b, struct budget_read *r)
{
    if (r->prev) r->prev->next = r->next;
    else b->reads = r->next;
    if (r->next) r->next->prev = r->prev;
    b->reading--;
}

/* One drawer's text arrived (or could not be read). */
static void text_arrived(kgx_engine_t *e, job_t *j, int status, char *text, size_t len, int pieces,
                         const char *err)
{
    if (!j) {                   /* the job ended (stop, lost claim) while its text was on the way */
        free(text);
        return;
    }
    j->row.text_pending = 0;
    switch (status) {
    case 0:
        log_debug("budget read drawer=%s bytes=%zu pieces=%d", j->row.drawer_id, len, pieces);
        j->row.text_failures = 0;
        j->row.document = text;
        j->row.document_len = len;
        break;
    case KGX_TEXT_GONE:
        log_warn("drawer=%s not found in mempalace_drawers: parked", j->row.drawer_id);
        kgx_queue_park(e->db, j->row.drawer_id, j->row.token, "drawer not found in mempalace_drawers", NULL, NULL);
        kgx_metrics.drawers[KGX_M_DRAWER_PARKED]++;
        job_free(j);
        break;
    case KGX_TEXT_CHANGED:
        /* edited since the claim: give it back; the next claim sees (and charges) its new size */
        log_info("drawer=%s changed while its text was read: given back", j->row.drawer_id);
        kgx_queue_unclaim(e->db, j->row.drawer_id, j->row.token, NULL, NULL);
        job_free(j);
        break;
    default:
        /* keep the claim, give the room back, read again shortly; a read that keeps failing
         * (not only a database restart) is charged to the drawer like any failed attempt */
        kgx_budget_give(&e->budget, j->row.budget_held);
        j->row.budget_held = 0;
        j->row.text_pending = 1;
        e->budget.look = 1;
        if (++j->row.text_failures >= TEXT_FAILURES_CHARGED) {
            char msg[600];
            snprintf(msg, sizeof msg, "reading the drawer's text failed %d times: %s", j->row.text_failures,
                     err ? err : "database error");
            j->row.text_failures = 0;
            job_charge(j, KGX_OUT_DB, msg);   /* [core] outcome, not metric */
        } else {
            log_warn("drawer=%s reading its text failed: %s", j->row.drawer_id, err ? err : "?");
            j->not_before = kgx_engine_now(e) + TEXT_REREAD_MS;
        }
        break;
    }
}

static void text_cb(int status, char *text, size_t len, int pieces, const char *err, void *ud)
{
    struct budget_read *r = ud;
    kgx_engine_t *e = r->e;
    job_t *j = r->job[0];
    read_unlink(&e->budget, r);
    free(r);
    text_arrived(e, j, status, text, len, pieces, err);
    kgx_engine_pump(e);
}

static void texts_cb(int i, int status, char *text, size_t len, const char *err, void *ud)
{
    struct budget_read *r = ud;
    kgx_engine_t *e = r->e;
    text_arrived(e, r->job[i], status, text, len, 1, err);
    if (i < r->n - 1) return;
    read_unlink(&e->budget, r);
    free(r);
    kgx_engine_pump(e);
}

static void read_link(kgx_budget_t *b, struct budget_read *r)
{
    r->next = b->reads;
    if (b->reads) b->reads->prev = r;
    b->reads = r;
    b->reading++;
}

/* Sends the gathered batch; its drawers are admitted already (charged, text_pending 2). A batch
 * that cannot be sent gives their room back: a later pump admits them again. */
static void batch_send(kgx_engine_t *e, struct budget_read *r)
{
    if (!r->n) return;
    const char *ids[TEXT_BATCH_MAX];
    size_t lens[TEXT_BATCH_MAX];
    for (int k = 0; k < r->n; k++) {
        ids[k] = r->job[k]->row.drawer_id;
        lens[k] = r->job[k]->row.document_len;
    }
    struct budget_read *b = malloc(sizeof *b);
    if (b) {
        *b = *r;
        b->prev = b->next = NULL;
        b->fetch = kgx_queue_fetch_texts(e->db, r->n, ids, lens, texts_cb, b);
    }
    if (!b || !b->fetch) {
        free(b);
        for (int k = 0; k < r->n; k++) {
            job_t *j = r->job[k];
            kgx_budget_give(&e->budget, j->row.budget_held);
            j->row.budget_held = 0;
            j->row.text_pending = 1;
        }
        e->budget.look = 1;
    } else {
        read_link(&e->budget, b);
    }
    r->n = 0;
}

void kgx_budget_admit(kgx_engine_t *e)
{
    kgx_budget_t *b = &e->budget;
    if (!e->sink->reads_text || kgx_engine_stopping(e) || !b->look) return;
    b->look = 0;                  /* set again below when a job is left waiting */
    uint64_t now = kgx_engine_now(e);
    struct budget_read batch = { .e = e };
    size_t batch_bytes = 0;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) {
        if (j->row.text_pending != 1) continue;
        if (j->state != JOB_WAIT_SPLIT || j->not_before > now) {
            b->look = 1;
            continue;
        }
        /* a re-read for a new split keeps the charge it holds; a first read must fit */
        size_t cost = j->row.budget_held ? 0 : kgx_budget_cost(j->row.document_len);
        if (cost && !kgx_budget_fits(b, cost)) {       /* claim order: later drawers wait behind it */
            b->look = 1;
            break;
        }
        if (j->row.document_len <= TEXT_BATCH_BYTES) {
            if (batch.n == TEXT_BATCH_MAX || batch_bytes + j->row.document_len > TEXT_BATCH_TOTAL) {
                batch_send(e, &batch);
                batch_bytes = 0;
            }
            batch.job[batch.n++] = j;
            batch_bytes += j->row.document_len;
        } else {
            struct budget_read *r = calloc(1, sizeof *r);
            if (!r) {
                b->look = 1;
                break;
            }
            r->e = e;
            r->n = 1;
            r->job[0] = j;
            r->fetch = kgx_queue_fetch_text(e->db, j->row.drawer_id, j->row.document_len, text_cb, r);
            if (!r->fetch) {    /* out of memory or the pool closing: try again on a later pump */
                free(r);
                b->look = 1;
                break;
            }
            read_link(b, r);
        }
        if (b->holders == 0 && cost > b->avail && ++b->alone)
            log_info("drawer=%s text_bytes=%zu is larger than the memory budget (%zu MiB): processed alone",
                     j->row.drawer_id, j->row.document_len, b->limit >> 20);
        charge(b, &j->row, cost, "");
        j->row.text_pending = 2;
    }
    batch_send(e, &batch);
}

int kgx_budget_waiting(kgx_engine_t *e)
{
    /* newest first: the drawers waiting for their text are the last claimed */
    for (job_t *j = e->jobs.prev; j != &e->jobs; j = j->prev)
        if (j->row.text_pending == 1 || j->row.text_pending == 2) return 1;
    return 0;
}

int kgx_budget_need_text(kgx_engine_t *e, job_t *j)
{
    if (j->row.text_pending == 3) {                          /* split again: read the text again */
        j->row.text_pending = 1;
        e->budget.look = 1;
    }
    return j->row.text_pending != 0;
}

void kgx_budget_split_done(kgx_engine_t *e, job_t *j)
{
    if (!e->sink->reads_text || !j->row.document) return;   /* --dry-run: the only copy there is */
    free(j->row.document);
    j->row.document = NULL;
    j->row.text_pending = 3;
}

void kgx_budget_release(kgx_engine_t *e, job_t *j)
{
    if (j->row.text_pending == 2)
        for (struct budget_read *r = e->budget.reads; r; r = r->next)
            for (int k = 0; k < r->n; k++)
                if (r->job[k] == j) r->job[k] = NULL;
    if (j->row.budget_held) {
        kgx_budget_give(&e->budget, j->row.budget_held);
        j->row.budget_held = 0;
    }
}

void kgx_budget_abandon(kgx_engine_t *e)
{
    kgx_budget_t *b = &e->budget;
    while (b->reads) {
        struct budget_read *r = b->reads;
        read_unlink(b, r);
        kgx_queue_fetch_abandon(r->fetch);
        free(r);
    }
}
