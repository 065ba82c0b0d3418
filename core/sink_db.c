/* sink_db — the production source and destination: drawers claimed from the queue table
 * (queue.c), failures recorded in their row, facts written by graph.c's write function in one
 * transaction per drawer, claimed rows given back on stop. */
#include "sink.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <string.h>

static void notify_cb(const char *channel, const char *payload, void *ud)
{
    kgx_engine_t *e = ud;
    if (e->idle) log_debug("woken by %s", channel ? "NOTIFY" : "LISTEN reconnect");
    e->idle = 0;
    kgx_engine_pump(e);
}

static void db_state_cb(int up, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (up) {                     /* db.c logs the state changes itself */
        e->idle = 0;
        kgx_engine_pump(e);
    }
}

static int db_open(kgx_engine_t *e, char *err, size_t errlen)
{
    kgx_db_opts_t dbo = { 0 };
    dbo.dsn = e->cfg->dsn;
    dbo.pool_size = 3;
    dbo.setup_sql = kgx_graph_session_sql;
    dbo.on_state = db_state_cb;
    dbo.state_ud = e;
    e->db = kgx_db_new(&e->loop, &dbo);
    if (!e->db) {
        snprintf(err, errlen, "error: cannot start the database pool");
        return -1;
    }
    if (e->cfg->mode == KGX_MODE_DAEMON) kgx_db_listen(e->db, "kgx_queue", notify_cb, e);
    if (e->cfg->keep_answers && !e->cfg->fresh_answers) {
        kgx_db_opts_t lo = { 0 };
        lo.dsn = e->cfg->dsn;
        lo.pool_size = 1;
        lo.setup_sql = kgx_graph_session_sql;
        lo.label = "lookups";
        e->db_lookup = kgx_db_new(&e->loop, &lo);   /* NULL: lookups share the main pool */
    }
    return 0;
}

static void db_close(kgx_engine_t *e)
{
    kgx_db_free(e->db_lookup);
    e->db_lookup = NULL;
    kgx_db_free(e->db);
    e->db = NULL;
}

static void deleted_write_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    (void)n; (void)sqlstate; (void)ud;
    if (err) log_warn("retracting a deleted drawer's facts failed (retried after its lease): %s", err);
}

static void claim_cb(kgx_claim_row_t *rows, int n, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    e->claiming = 0;
    e->claims++;
    kgx_budget_claim_release(&e->budget, &e->claim_held);   /* its texts are charged below */
    if (err) {
        log_warn("claim failed: %s", err);
        e->idle = 1;               /* the poll timer tries again */
    }
    int stop = kgx_engine_stopping(e);
    for (int i = 0; i < n; i++) {
        if (stop)                  /* claimed while stopping: give them back at once */
            kgx_queue_unclaim(e->db, rows[i].drawer_id, rows[i].token, NULL, NULL);
        else if (rows[i].missing) {
            /* the drawer is gone; the write retracts its facts and completes the row with status
             * 'deleted' (a write error leaves the claim to its lease: the next claim tries again) */
            log_info("drawer=%s not found in mempalace_drawers: retracting its facts (status deleted)", rows[i].drawer_id);
            kgx_graph_write(e->db, e->cfg->graph, rows[i].drawer_id, e->worker_id, rows[i].token, "[]", NULL,
                            deleted_write_cb, NULL);
        } else {
            kgx_budget_claimed(e, &rows[i]);
            job_new(e, &rows[i]);
        }
    }
    kgx_claim_rows_free(rows, n);
    if (!err && n == 0) e->idle = 1;
    kgx_engine_pump(e);
}

static int db_claim(kgx_engine_t *e, int want)
{
    e->claiming = 1;
    size_t bytes = kgx_budget_claim_hold(&e->budget, want, &e->claim_held);
    if (kgx_queue_claim(e->db, e->worker_id, e->cfg->lease_seconds, want, bytes, claim_cb, e)) {
        e->claiming = 0;
        kgx_budget_claim_release(&e->budget, &e->claim_held);
    }
    return 0;
}

static int db_exhausted(kgx_engine_t *e, int *code) { (void)e; (void)code; return 0; }

static void fail_cb(int attempts, int parked, int stale, const char *err, void *ud)
{
    job_failed(ud, attempts, parked, stale, err);
}

static void db_fail(job_t *j, const char *msg)
{
    kgx_engine_t *e = j->e;
    if (kgx_queue_fail(e->db, j->row.drawer_id, j->row.token, msg, e->cfg->max_attempts, fail_cb, j))
        job_failed(j, j->attempts, 0, 0, "the database is not reachable");
}

static void write_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    job_written(ud, n, err, sqlstate);
}

static void db_write(job_t *j)
{
    kgx_engine_t *e = j->e;
    kgx_buf_t t = { 0 }, a = { 0 };
    job_write_json(j, &t, e->cfg->keep_answers ? &a : NULL);
    if (kgx_graph_write(e->db, e->cfg->graph, j->row.drawer_id, e->worker_id, j->row.token, t.p,
                        e->cfg->keep_answers ? a.p : NULL, write_cb, j))
        job_write_again(j, WRITE_START_RETRY_MS);
    kgx_buf_free(&t);
    kgx_buf_free(&a);
}

static int db_lookup(void *ep, const char *keys_json, kgx_reuse_rows_cb cb, void *ud)
{
    kgx_engine_t *e = ep;
    return kgx_graph_answers_lookup(e->db_lookup ? e->db_lookup : e->db, e->cfg->graph, keys_json, cb, ud);
}

static void release_cb(long long n, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (err) log_err("giving back claimed rows failed: %s (their lease will expire)", err);
    else log_info("gave back %lld claimed row%s", n, n == 1 ? "" : "s");
    kgx_engine_finish(e, 0);
}

static int db_release(kgx_engine_t *e)
{
    return kgx_queue_release_all(e->db, e->worker_id, release_cb, e) == 0;
}

const kgx_sink_t kgx_sink_db = {
    .name = "database", .durable = 1, .keeps_answers = 1,
    .reads_text = 1,
    .open = db_open, .close = db_close, .claim = db_claim, .exhausted = db_exhausted,
    .fail = db_fail, .result = NULL, .write = db_write, .release = db_release, .lookup = db_lookup,
};
