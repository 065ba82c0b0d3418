/* reapply — see reapply.h. Pages of stored answers are read on one blocking connection; the policy
 * re-parses each drawer's answers on the hook threads (hooks.c), as the daemon does, so the watchdog
 * stops a hook stuck inside a C call: that drawer fails with the watchdog's message, its facts stay as
 * they were, and the others go on. The rewrites go through the loop's connection pool, several in
 * flight at once (each its own transaction), so the database's cores do the work in parallel. The SQL
 * is graph.c's.
 *
 * Ownership: everything here belongs to the calling thread, which runs the loop; the hook threads see
 * only the copies hooks.c makes of a call's inputs, and their results come back through callbacks on
 * the loop. A drawer goes: parsing (its answers on hook threads) -> writing (the pool) -> done. */
#include "reapply.h"
#include "adopt.h"
#include "buf.h"
#include "db.h"
#include "graph.h"
#include "hooks.h"
#include "log.h"
#include "outcome.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 500
#define POOL 4
#define PARSING_MAX (2 * KGX_HOOK_THREADS)   /* drawers with hook calls in flight at once */

typedef struct {
    uv_loop_t loop;
    kgx_db_t *db;
    kgx_hooks_t *hooks;
    uv_timer_t keep;            /* keeps uv_run(ONCE) waiting: the pool's own handles are unref'd */
    const char *graph;
    long long drawers, facts, dropped, failed, skipped;
    int parsing, pending;       /* drawers on hook threads / rewrites in flight */
    int stopping;               /* the pool reached its cap of stuck threads */
} reapply_t;

typedef struct rewrite rewrite_t;

typedef struct {                /* one stored answer of a drawer */
    rewrite_t *w;
    int chunk;
    kgx_result_t res;
} answer_t;

struct rewrite {
    reapply_t *ra;
    char *id, *triples;
    answer_t *ans;
    int n, left, bad;           /* answers; parses not back yet; parses that failed */
    int tries;
    uv_timer_t retry;           /* the daemon's retry policy for transient errors (kgx_db_retry_ms) */
};

static void submit(rewrite_t *w);

static void rewrite_free_cb(uv_handle_t *h)
{
    rewrite_t *w = h->data;
    for (int i = 0; i < w->n; i++) kgx_result_clear(&w->ans[i].res);
    free(w->ans);
    free(w->id);
    free(w->triples);
    free(w);
}

static void rewrite_done(rewrite_t *w)
{
    w->ra->pending--;
    uv_close((uv_handle_t *)&w->retry, rewrite_free_cb);
}

static void retry_cb(uv_timer_t *t) { submit(t->data); }

static void rewrite_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    rewrite_t *w = ud;
    reapply_t *ra = w->ra;
    long delay = err && kgx_graph_is_transient(sqlstate, err) ? kgx_db_retry_ms(++w->tries) : -1;
    if (delay >= 0) {               /* deadlock or lost connection: the pool reconnects; again */
        uv_timer_start(&w->retry, retry_cb, (uint64_t)delay, 0);
        return;
    }
    if (err) {
        ra->failed++;
        log_warn("drawer=%s reapply write failed: %s", w->id, err);
    } else if (n < 0) {
        ra->skipped++;              /* re-queued meanwhile: the daemon owns it now */
    } else {
        ra->drawers++;
        ra->facts += n;
    }
    rewrite_done(w);
}

static void submit(rewrite_t *w)
{
    if (kgx_graph_write(w->ra->db, w->ra->graph, w->id, NULL, -1, w->triples, NULL, rewrite_cb, w)) {
        w->ra->failed++;
        rewrite_done(w);
    }
}

/* Every answer of the drawer is back: its triples JSON in answer order, then the write. */
static void parsed_all(rewrite_t *w)
{
    reapply_t *ra = w->ra;
    ra->parsing--;
    ra->pending++;
    if (w->bad) {                   /* its facts stay as they were */
        ra->failed++;
        rewrite_done(w);
        return;
    }
    kgx_buf_t t = { 0 };
    long long dropped = 0;
    for (int i = 0; i < w->n; i++) {
        answer_t *a = &w->ans[i];
        for (size_t x = 0; x < a->res.n_triples; x++) kgx_graph_triple_json(&t, &a->res.triples[x], a->chunk);
        dropped += (long long)a->res.n_drops;
        kgx_result_clear(&a->res);
    }
    kgx_buf_adds(&t, t.len ? "]" : "[]");
    w->triples = kgx_buf_steal(&t, NULL);
    ra->dropped += dropped;
    submit(w);
}

static void parsed_cb(kgx_hook_outcome_t *o, void *ud)
{
    answer_t *a = ud;
    rewrite_t *w = a->w;
    if (o->rc) {
        log_warn("drawer=%s chunk=%d reapply: %s", w->id, a->chunk, o->err);
        w->bad++;
    } else {
        a->res = o->result;
        memset(&o->result, 0, sizeof o->result);
    }
    if (--w->left == 0) parsed_all(w);
}

/* Sends the drawer's stored answers (rows i..j-1 of the page) to the hook threads: parse, then accept,
 * with chunk = nil (the chunks are not stored). */
static void reparse(reapply_t *ra, PGresult *r, int i, int j)
{
    const char *id = PQgetvalue(r, i, 0);
    kgx_drawer_t d = { id, PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1),
                       PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                       PQgetisnull(r, i, 3) ? "" : PQgetvalue(r, i, 3),
                       PQgetisnull(r, i, 3) ? 0 : (size_t)PQgetlength(r, i, 3),
                       PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4) };
    rewrite_t *w = calloc(1, sizeof *w);
    kgx_drawer_box_t *box = w ? kgx_drawer_box_new(&d) : NULL;
    if (w) w->ans = calloc((size_t)(j - i), sizeof *w->ans);
    if (!w || !box || !w->ans || !(w->id = strdup(id))) {
        log_warn("drawer=%s reapply: out of memory", id);
        ra->failed++;
        kgx_drawer_box_unref(box);
        if (w) { free(w->ans); free(w); }
        return;
    }
    w->ra = ra;
    w->n = w->left = j - i;
    uv_timer_init(&ra->loop, &w->retry);
    w->retry.data = w;
    ra->parsing++;
    for (int k = i; k < j; k++) {
        answer_t *a = &w->ans[k - i];
        char lc[240];
        a->w = w;
        a->chunk = atoi(PQgetvalue(r, k, 5));
        snprintf(lc, sizeof lc, "drawer=%s chunk=%d", id, a->chunk);
        if (!kgx_hooks_answer(ra->hooks, NULL, box, NULL, PQgetvalue(r, k, 6), (size_t)PQgetlength(r, k, 6), lc,
                              parsed_cb, a)) {
            log_warn("drawer=%s chunk=%d reapply: out of memory", id, a->chunk);
            w->bad++;
            w->left--;
        }
    }
    kgx_drawer_box_unref(box);      /* the calls hold their own references */
    if (w->left == 0) parsed_all(w);
}

static void hooks_cap_cb(void *ud)
{
    reapply_t *ra = ud;
    log_err("reapply: %d hook threads are stuck in policy code (the cap); stopping: the drawers not yet "
            "rewritten keep their facts", KGX_HOOK_MAX_ABANDONED);
    ra->stopping = 1;
}

/* One turn of the loop. At the cap the pool is freed here, outside uv_run: the calls it still holds
 * fail ("stopping") and their drawers count as failed. */
static void turn(reapply_t *ra)
{
    uv_run(&ra->loop, UV_RUN_ONCE);
    if (ra->stopping && ra->hooks) {
        kgx_hooks_free(ra->hooks);
        ra->hooks = NULL;
    }
}

static void keep_cb(uv_timer_t *t) { (void)t; }
static void close_cb(uv_handle_t *h) { (void)h; }
static void walk_close(uv_handle_t *h, void *arg) { (void)arg; if (!uv_is_closing(h)) uv_close(h, close_cb); }

int kgx_reapply_run(const kgx_config_t *cfg, kgx_script_t *script)
{
    char err[1024];
    PGconn *c = kgx_db_connect_blocking(cfg->dsn, kgx_graph_session_sql, err, sizeof err);
    if (!c) {
        fprintf(stderr, "error: database: %s\n", err);
        kgx_script_free(script);
        return 1;
    }
    if (kgx_graph_setup(c, cfg->graph, 0, err, sizeof err) || kgx_adopt_running(c, cfg->graph, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);       /* [dropin] nor beside a running --adopt */
        PQfinish(c);
        kgx_script_free(script);
        return 1;
    }
    reapply_t ra = { 0 };
    ra.graph = cfg->graph;
    uv_loop_init(&ra.loop);
    ra.hooks = kgx_hooks_new(&ra.loop, script, hooks_cap_cb, &ra, err, sizeof err);   /* takes the state */
    if (!ra.hooks) {
        fprintf(stderr, "error: %s\n", err);
        uv_loop_close(&ra.loop);
        PQfinish(c);
        return 1;
    }
    uv_timer_init(&ra.loop, &ra.keep);
    uv_timer_start(&ra.keep, keep_cb, 1000, 1000);
    kgx_db_opts_t dbo = { 0 };
    dbo.dsn = cfg->dsn;
    dbo.pool_size = POOL;
    dbo.setup_sql = kgx_graph_session_sql;
    ra.db = kgx_db_new(&ra.loop, &dbo);
    char *after = strdup("");
    int rc = 0;
    while (ra.db && after && !ra.stopping) {
        PGresult *r = kgx_graph_answers_fetch(c, cfg->graph, after, cfg->reapply_where, PAGE, err, sizeof err);
        if (!r) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
            break;
        }
        int n = PQntuples(r);
        for (int i = 0, j; i < n && !ra.stopping; i = j) {
            const char *id = PQgetvalue(r, i, 0);
            for (j = i; j < n && !strcmp(PQgetvalue(r, j, 0), id); j++) {}
            while (ra.parsing >= PARSING_MAX && !ra.stopping) turn(&ra);
            if (ra.stopping) break;
            reparse(&ra, r, i, j);          /* the calls copy what they need from r */
            free(after);
            after = strdup(id);
        }
        PQclear(r);
        /* this page's parses and rewrites, several at a time over the hook threads and the pool */
        while (ra.parsing > 0 || ra.pending > 0) turn(&ra);
        if (n == 0 || cfg->reapply_where) break;
    }
    if (!after) rc = 1;
    free(after);
    kgx_hooks_free(ra.hooks);       /* never waits for a stuck hook */
    kgx_db_free(ra.db);
    uv_run(&ra.loop, UV_RUN_NOWAIT);
    uv_walk(&ra.loop, walk_close, NULL);
    uv_run(&ra.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ra.loop);
    PQfinish(c);
    fprintf(stderr, "reapply: drawers=%lld facts=%lld dropped=%lld failed=%lld skipped=%lld\n",
            ra.drawers, ra.facts, ra.dropped, ra.failed, ra.skipped);
    if (ra.stopping) fprintf(stderr, "reapply: stopped at the cap of stuck hook threads: run it again once the policy is fixed\n");
    return rc || ra.stopping ? 1 : ra.failed ? 1 : 0;
}
