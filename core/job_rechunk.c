/* job_rechunk — chunks made while a drawer is answered: the halves of an answer that holds the
 * per-call cap (economy, issue 14: nothing a dense chunk states is lost) and the pieces of a chunk whose
 * answer was cut at n_predict ([answer]); the facts of a half are only what its ancestors did not give.
 * Loop thread only. */
#include "job_int.h"
#include "answer.h"
#include "drops.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "sink.h"

#include <stdlib.h>
#include <string.h>

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
void add_result(job_t *j, chunk_t *c, const kgx_result_t *r)
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
    chunk_to(c, CH_PENDING);
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
        chunk_to(c, CH_DONE);             /* replaced by its pieces */
        j->ndone++;
    }
    kgx_engine_pump(e);
}

void job_split_cut(job_t *j, chunk_t *c)
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
    chunk_to(c, CH_RESPLIT);
    c->call = box ? kgx_hooks_split(e->hooks, j->src, box, &ctx, job_context(j, lc, sizeof lc), split_cut_cb, c)
                  : NULL;
    kgx_drawer_box_unref(box);          /* the call holds its own reference */
    if (!c->call) {
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
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
int dense_split(job_t *j, chunk_t *c, const kgx_result_t *r)
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

