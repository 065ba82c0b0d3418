/* reapply — see reapply.h. Pages of stored answers are read on one blocking connection; the
 * policy re-parses each drawer; the rewrites go through the loop's connection pool, several in
 * flight at once (each its own transaction), so the database's cores do the work in parallel.
 * The SQL is graph.c's. */
#include "reapply.h"
#include "adopt.h"
#include "buf.h"
#include "db.h"
#include "graph.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 500
#define POOL 4
#define MAX_TRIES 20

typedef struct {
    uv_loop_t loop;
    kgx_db_t *db;
    const char *graph;
    long long drawers, facts, dropped, failed, skipped;
    int pending;
} reapply_t;

typedef struct {
    reapply_t *ra;
    char *id, *triples;
    int tries;
} rewrite_t;

static void submit(rewrite_t *w);

static void rewrite_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    rewrite_t *w = ud;
    reapply_t *ra = w->ra;
    if (err && kgx_graph_is_transient(sqlstate, err) && ++w->tries < MAX_TRIES) {
        submit(w);                  /* deadlock or lost connection: the pool reconnects; again */
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
    ra->pending--;
    free(w->id);
    free(w->triples);
    free(w);
}

static void submit(rewrite_t *w)
{
    if (kgx_graph_write(w->ra->db, w->ra->graph, w->id, NULL, -1, w->triples, NULL, rewrite_cb, w)) {
        w->ra->failed++;
        w->ra->pending--;
        free(w->id);
        free(w->triples);
        free(w);
    }
}

/* Re-parses one drawer's stored answers (rows i..j-1 of the page) into a triples JSON array. */
static char *reparse(kgx_script_t *script, reapply_t *ra, PGresult *r, int i, int j)
{
    const char *id = PQgetvalue(r, i, 0);
    char err[1024];
    kgx_drawer_t d = { id, PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1),
                       PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                       PQgetisnull(r, i, 3) ? "" : PQgetvalue(r, i, 3),
                       PQgetisnull(r, i, 3) ? 0 : (size_t)PQgetlength(r, i, 3),
                       PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4) };
    int job = kgx_script_job_new(script, &d, err, sizeof err);
    if (job <= 0) {
        log_warn("drawer=%s reapply: %s", id, err);
        return NULL;
    }
    kgx_buf_t t = { 0 };
    int ok = 1;
    for (int k = i; k < j && ok; k++) {
        kgx_result_t res = { 0 };
        int chunk = atoi(PQgetvalue(r, k, 5));
        /* a job made by kgx_script_job_new has no chunks: the hooks get chunk = nil */
        if (kgx_script_answer(script, job, (size_t)chunk, PQgetvalue(r, k, 6),
                              (size_t)PQgetlength(r, k, 6), &res, err, sizeof err)) {
            log_warn("drawer=%s chunk=%d reapply: %s", id, chunk, err);
            ok = 0;
            break;
        }
        for (size_t x = 0; x < res.n_triples; x++) kgx_graph_triple_json(&t, &res.triples[x], chunk);
        ra->dropped += (long long)res.n_drops;
        kgx_result_clear(&res);
    }
    kgx_script_job_free(script, job);
    if (!ok) {
        kgx_buf_free(&t);
        return NULL;
    }
    kgx_buf_adds(&t, t.len ? "]" : "[]");
    return kgx_buf_steal(&t, NULL);
}

static void close_cb(uv_handle_t *h) { (void)h; }
static void walk_close(uv_handle_t *h, void *arg) { if (!uv_is_closing(h)) uv_close(h, close_cb); }

int kgx_reapply_run(const kgx_config_t *cfg, kgx_script_t *script)
{
    char err[1024];
    PGconn *c = kgx_db_connect_blocking(cfg->dsn, kgx_graph_session_sql, err, sizeof err);
    if (!c) {
        fprintf(stderr, "error: database: %s\n", err);
        return 1;
    }
    if (kgx_graph_setup(c, cfg->graph, 0, err, sizeof err) || kgx_adopt_running(c, cfg->graph, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);       /* [dropin] nor beside a running --adopt */
        PQfinish(c);
        return 1;
    }
    reapply_t ra = { 0 };
    ra.graph = cfg->graph;
    uv_loop_init(&ra.loop);
    kgx_db_opts_t dbo = { 0 };
    dbo.dsn = cfg->dsn;
    dbo.pool_size = POOL;
    dbo.setup_sql = kgx_graph_session_sql;
    ra.db = kgx_db_new(&ra.loop, &dbo);
    char *after = strdup("");
    int rc = 0;
    while (ra.db) {
        PGresult *r = kgx_graph_answers_fetch(c, cfg->graph, after, cfg->reapply_where, PAGE, err, sizeof err);
        if (!r) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
            break;
        }
        int n = PQntuples(r);
        for (int i = 0, j; i < n; i = j) {
            const char *id = PQgetvalue(r, i, 0);
            for (j = i; j < n && !strcmp(PQgetvalue(r, j, 0), id); j++) {}
            char *triples = reparse(script, &ra, r, i, j);
            if (!triples) {
                ra.failed++;
            } else {
                rewrite_t *w = calloc(1, sizeof *w);
                w->ra = &ra;
                w->id = strdup(id);
                w->triples = triples;
                ra.pending++;
                submit(w);
            }
            free(after);
            after = strdup(id);
        }
        PQclear(r);
        /* this page's rewrites, several at a time over the pool */
        while (ra.pending > 0) uv_run(&ra.loop, UV_RUN_ONCE);
        if (n == 0 || cfg->reapply_where) break;
    }
    free(after);
    kgx_db_free(ra.db);
    uv_run(&ra.loop, UV_RUN_NOWAIT);
    uv_walk(&ra.loop, walk_close, NULL);
    uv_run(&ra.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ra.loop);
    PQfinish(c);
    fprintf(stderr, "reapply: drawers=%lld facts=%lld dropped=%lld failed=%lld skipped=%lld\n",
            ra.drawers, ra.facts, ra.dropped, ra.failed, ra.skipped);
    return rc ? rc : ra.failed ? 1 : 0;
}
