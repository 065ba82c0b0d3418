/* prune — see prune.h. One blocking connection; the only state carried between batches is the last
 * drawer id looked at, so an interrupted run loses nothing and a rerun starts over safely. */
#include "prune.h"
#include "adopt.h"
#include "db.h"
#include "graph.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRUNE_BATCH 200      /* drawers looked at per transaction (KGX_PRUNE_BATCH) */
#define PRUNE_RETRIES 5      /* a batch cancelled by a deadlock, a timeout …: tried again */

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) { (void)sig; g_stop = 1; }

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Connection, schema (unless report_only) and the --adopt guard, held shared until PQfinish.
 * NULL with the message printed. */
static PGconn *open_guarded(const kgx_config_t *cfg, int need_schema)
{
    char err[1024];
    kgx_db_fail_t why;
    PGconn *c = kgx_db_open(cfg->dsn, kgx_graph_session_sql, err, sizeof err, &why);
    if (!c) {
        fprintf(stderr, "error: database: %s\n", err);
        return NULL;
    }
    if (need_schema && kgx_graph_setup(c, cfg->graph, 1, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return NULL;
    }
    /* an --adopt holds this lock exclusively; ours, shared, makes an --adopt started later wait */
    const char *p[] = { cfg->graph };
    PGresult *r = PQexecParams(c, "SELECT pg_try_advisory_lock_shared(hashtext('kgx-adopt'), hashtext($1))",
                               1, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    int got = ok && PQgetvalue(r, 0, 0)[0] == 't';
    if (!ok) kgx_db_result_error(err, sizeof err, "checking for --adopt: ", r);
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return NULL;
    }
    if (!got) {
        fprintf(stderr, "error: kgx-run --adopt is running on graph %s: run this again when it has finished\n",
                cfg->graph);
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int exec_ok(PGconn *c, const char *sql, int n, const char *const *p, PGresult **out,
                   char *err, size_t errlen, const char *what, int *transient)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out) *out = r; else PQclear(r);
        return 0;
    }
    char pre[96];
    snprintf(pre, sizeof pre, "%s: ", what);
    kgx_db_result_error(err, errlen, pre, r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* a lost connection is not retried here: the rerun is the retry */
    if (transient) *transient = state && PQstatus(c) == CONNECTION_OK && kgx_graph_is_transient(state, err);
    PQclear(r);
    return -1;
}

/* --prune --dry-run: what a prune would remove now, in one read-only snapshot. */
static int prune_report(PGconn *c, const kgx_config_t *cfg)
{
    char err[1024], sql[2048];
    const char *g = cfg->graph;
    snprintf(sql, sizeof sql, "SELECT to_regclass('public.kgx_%s_support') IS NOT NULL,"
             " to_regclass('public.mempalace_drawers') IS NOT NULL", g);
    PGresult *r = NULL;
    if (exec_ok(c, sql, 0, NULL, &r, err, sizeof err, "prune", NULL)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int have = PQgetvalue(r, 0, 0)[0] == 't', drawers = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    if (!drawers) {
        fprintf(stderr, "error: table mempalace_drawers not found (is this the MemPalace database?)\n");
        return 1;
    }
    if (!have) {
        printf("prune (dry run): graph %s has no kgx facts in this database: nothing to prune\n", g);
        return 0;
    }
    snprintf(sql, sizeof sql,
             "WITH gone AS (SELECT DISTINCT s.drawer_id FROM public.kgx_%s_support s"
             "               WHERE NOT EXISTS (SELECT 1 FROM public.mempalace_drawers d WHERE d.id = s.drawer_id)),"
             "     gs AS (SELECT s.edge_id FROM public.kgx_%s_support s JOIN gone USING (drawer_id)),"
             "     ge AS (SELECT DISTINCT edge_id FROM gs)"
             " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gs),"
             "        (SELECT count(*) FROM ge WHERE NOT EXISTS (SELECT 1 FROM public.kgx_%s_support s"
             "                WHERE s.edge_id = ge.edge_id AND s.drawer_id NOT IN (SELECT drawer_id FROM gone))),"
             "        (SELECT string_agg(drawer_id, ' ' ORDER BY drawer_id) FROM (SELECT drawer_id FROM gone"
             "                ORDER BY drawer_id LIMIT 10) x)", g, g, g);
    if (exec_ok(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL, err, sizeof err, "prune", NULL)
        || exec_ok(c, sql, 0, NULL, &r, err, sizeof err, "prune (dry run)", NULL)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    long long n = atoll(PQgetvalue(r, 0, 0));
    printf("prune (dry run): drawers=%lld support_rows=%s edges=%s\n", n, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    if (n > 0)
        printf("prune (dry run): first drawers: %s%s\n", PQgetvalue(r, 0, 3), n > 10 ? " ..." : "");
    printf("prune (dry run): nothing changed%s\n", n > 0 ? "; kgx-run --prune retracts them" : "");
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    return 0;
}

/* One batch, one transaction: the prune function over up to nb drawers after `after`, then the count of
 * what went. *n drawers, *sup support rows and *edg edges removed; *last the last drawer id examined
 * (malloc'd; NULL: none left). -1 with err (and *transient) when it failed, rolled back. */
static int prune_batch(PGconn *c, const char *seen, const char *call, const char *count, const char *after,
                       const char *nb, long long *n, long long *sup, long long *edg, char **last,
                       char *err, size_t errlen, int *transient)
{
    const char *p[] = { after, nb };
    const char *q[1];
    PGresult *r = NULL, *k = NULL;
    *last = NULL;
    if (exec_ok(c, "BEGIN", 0, NULL, NULL, err, errlen, "prune", transient)
        || exec_ok(c, seen, 2, p, NULL, err, errlen, "prune", transient)
        || exec_ok(c, call, 2, p, &r, err, errlen, "prune", transient))
        goto fail;
    *n = atoll(PQgetvalue(r, 0, 0));
    *last = PQgetisnull(r, 0, 1) ? NULL : strdup(PQgetvalue(r, 0, 1));
    PQclear(r);
    r = NULL;
    q[0] = *last;
    if (exec_ok(c, count, 1, q, &k, err, errlen, "prune", transient)
        || exec_ok(c, "COMMIT", 0, NULL, NULL, err, errlen, "prune", transient))
        goto fail;
    *sup = atoll(PQgetvalue(k, 0, 0));
    *edg = atoll(PQgetvalue(k, 0, 1));
    PQclear(k);
    return 0;
fail:
    PQclear(r);
    PQclear(k);
    free(*last);
    *last = NULL;
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

int kgx_prune_run(const kgx_config_t *cfg)
{
    if (!kgx_graph_name_ok(cfg->graph)) {
        fprintf(stderr, "error: invalid graph name '%s'\n", cfg->graph);
        return 2;
    }
    int dry = cfg->adopt_dry_run;
    PGconn *c = open_guarded(cfg, !dry);
    if (!c) return 1;
    if (dry) {
        int rc = prune_report(c, cfg);
        PQfinish(c);
        return rc;
    }
    int batch = PRUNE_BATCH;
    const char *e = getenv("KGX_PRUNE_BATCH");
    if (e && atoi(e) > 0) batch = atoi(e);
    char nb[16];
    snprintf(nb, sizeof nb, "%d", batch);
    const char *g = cfg->graph;
    char seen[1024], call[256], count[1024], err[1024];
    /* the support rows of the batch's deleted drawers (the same batch the function takes), so that what
     * went can be counted after the call, in the same transaction */
    snprintf(seen, sizeof seen,
             "INSERT INTO pg_temp.kgx_prune_seen (drawer_id, edge_id)"
             " SELECT s.drawer_id, s.edge_id FROM public.kgx_%s_support s"
             "  WHERE s.drawer_id IN (SELECT DISTINCT drawer_id FROM public.kgx_%s_support"
             "                         WHERE drawer_id > coalesce($1, '') ORDER BY drawer_id LIMIT $2::integer)"
             "    AND NOT EXISTS (SELECT 1 FROM public.mempalace_drawers d WHERE d.id = s.drawer_id)", g, g);
    snprintf(call, sizeof call, "SELECT pruned, last FROM public.kgx_%s_prune($1, $2::integer)", g);
    snprintf(count, sizeof count,
             "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM public.kgx_%s_support s"
             "                         WHERE s.drawer_id = k.drawer_id AND s.edge_id = k.edge_id)),"
             "       count(DISTINCT k.edge_id) FILTER (WHERE NOT EXISTS (SELECT 1 FROM public.kgx_%s_edge_agg a"
             "                         WHERE a.edge_id = k.edge_id))"
             "  FROM pg_temp.kgx_prune_seen k WHERE $1::text IS NULL OR k.drawer_id <= $1", g, g);
    if (exec_ok(c, "CREATE TEMP TABLE IF NOT EXISTS kgx_prune_seen (drawer_id text, edge_id ag_catalog.graphid)"
                   " ON COMMIT DELETE ROWS", 0, NULL, NULL, err, sizeof err, "prune", NULL)) {
        fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return 1;
    }
    g_stop = 0;
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    long long drawers = 0, support = 0, edges = 0, batches = 0;
    char *after = NULL;
    int rc = 1, done = 0, tries = 0;
    struct timespec t0, last_log;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    last_log = t0;
    log_info("prune: graph %s, batches of %d drawers", g, batch);
    while (!g_stop) {
        long long n = 0, sup = 0, edg = 0;
        char *last = NULL;
        int transient = 0;
        if (prune_batch(c, seen, call, count, after, nb, &n, &sup, &edg, &last, err, sizeof err, &transient)) {
            if (transient && ++tries <= PRUNE_RETRIES) {
                log_warn("prune: batch after %s retried (%d): %s", after ? after : "(start)", tries, err);
                sleep_ms(200L * tries);
                continue;
            }
            fprintf(stderr, "error: %s\n", err);
            break;
        }
        tries = 0;
        batches++;
        drawers += n;
        support += sup;
        edges += edg;
        free(after);
        after = last;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - last_log.tv_sec >= 5) {
            last_log = now;
            log_info("prune: drawers=%lld support_rows_removed=%lld edges_removed=%lld (at drawer %s)",
                     drawers, support, edges, after ? after : "end");
        }
        if (!after) {
            done = 1;
            rc = 0;
            break;
        }
    }
    free(after);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    PQfinish(c);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("prune: drawers=%lld support_rows_removed=%lld edges_removed=%lld batches=%lld seconds=%.1f\n",
           drawers, support, edges, batches, secs);
    printf("prune: %s\n", done ? "done"
                               : g_stop ? "interrupted: run kgx-run --prune again to finish"
                                        : "failed: run kgx-run --prune again to finish");
    fflush(stdout);
    return rc;
}

int kgx_follow_deletes_run(const kgx_config_t *cfg)
{
    if (!kgx_graph_name_ok(cfg->graph)) {
        fprintf(stderr, "error: invalid graph name '%s'\n", cfg->graph);
        return 2;
    }
    PGconn *c = open_guarded(cfg, 1);
    if (!c) return 1;
    char err[1024];
    int on = cfg->follow_deletes;
    /* DDL on MemPalace's table waits for its open transactions: not forever */
    PQclear(PQexec(c, "SET lock_timeout = '10s'"));
    PQclear(PQexec(c, "SET client_min_messages = warning"));   /* not "trigger … does not exist, skipping" */
    int rc = exec_ok(c, on ? "SELECT public.kgx_follow_deletes(true)" : "SELECT public.kgx_follow_deletes(false)",
                     0, NULL, NULL, err, sizeof err, "--follow-deletes", NULL);
    if (rc) {
        if (strstr(err, "must be owner") || strstr(err, "permission denied"))
            fprintf(stderr, "error: %s (a trigger on mempalace_drawers needs its owner: give --dsn with the role "
                    "that owns MemPalace's tables)\n", err);
        else if (strstr(err, "lock timeout"))
            fprintf(stderr, "error: %s (mempalace_drawers was busy for 10 s: try again)\n", err);
        else
            fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return 1;
    }
    PQfinish(c);
    if (on) {
        printf("follow-deletes: on: trigger kgx_follow_deletes on public.mempalace_drawers re-queues a deleted "
               "drawer's row; a running daemon retracts its facts\n");
        printf("follow-deletes: not covered: TRUNCATE mempalace_drawers, and drawers deleted before now: "
               "run kgx-run --prune\n");
    } else {
        printf("follow-deletes: off: trigger kgx_follow_deletes removed from public.mempalace_drawers\n");
    }
    return 0;
}
