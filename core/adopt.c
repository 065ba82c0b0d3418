/* adopt — see adopt.h. One blocking connection; every step's work list is read from the graph itself,
 * so the only state carried between batches is a cursor, and a rerun starts over safely. */
#include "adopt.h"
#include "buf.h"
#include "db.h"
#include "graph.h"
#include "hooks.h"
#include "log.h"
#include "names.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char adopt_sql[] =
#include "adopt_sql.h"
    ;
/* --dry-run applies kgx's schema inside its own (rolled back) transaction instead of graph.c's setup,
 * which commits. */
static const char schema_sql[] =
#include "schema_sql.h"
    ;

#define ALIVE_SECONDS 15     /* kgx workers publish every 5 s */
#define MAP_CHUNK 500

typedef struct {
    PGconn *c;
    const kgx_config_t *cfg;
    int dry;
    int batch;
    long long rel_mapped, rel_other, rel_rejected;
    long long keys, keyed, merged, moved;
    long long examined, converted, facts_new, support, same, rejected, superseded, nosource, nonentity;
    long long orphans, requeued;
    struct timespec last_progress;
} adopt_t;

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) { (void)sig; g_stop = 1; }

/* Runs sql (no params) on the adopt connection: kgx_graph_exec. */
static int exec(adopt_t *a, const char *sql, const char *what, char *err, size_t errlen)
{
    return kgx_graph_exec(a->c, sql, what, err, errlen);
}

/* One statement returning one row; NULL with err on failure (caller PQclear()s). */
static PGresult *query(adopt_t *a, const char *sql, int n, const char *const *p, const char *what,
                       char *err, size_t errlen)
{
    PGresult *r = PQexecParams(a->c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
        char pre[128];
        snprintf(pre, sizeof pre, "%s: ", what);
        kgx_db_result_error(err, errlen, pre, r);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* A batch: its own transaction, unless --dry-run keeps everything in one. */
static int tx_begin(adopt_t *a, char *err, size_t errlen)
{
    return a->dry ? 0 : exec(a, "BEGIN", "begin", err, errlen);
}
static int tx_commit(adopt_t *a, char *err, size_t errlen)
{
    return a->dry ? 0 : exec(a, "COMMIT", "commit", err, errlen);
}
static void tx_abort(adopt_t *a)
{
    if (!a->dry) PQclear(PQexec(a->c, "ROLLBACK"));
}

static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void progress(adopt_t *a, int force)
{
    if (!force && since(&a->last_progress) < 5.0) return;
    clock_gettime(CLOCK_MONOTONIC, &a->last_progress);
    log_info("adopt: keyed=%lld merged=%lld edges_examined=%lld converted=%lld removed=%lld orphans=%lld",
             a->keyed, a->merged, a->examined, a->converted, a->same + a->rejected + a->superseded, a->orphans);
}

/* Live kgx workers or rows in flight: a one-line refusal in err. */
static int check_idle(adopt_t *a, char *err, size_t errlen)
{
    char sql[1024], lease[32];
    snprintf(lease, sizeof lease, "%.0f", a->cfg->lease_seconds);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM public.kgx_workers WHERE seen_at > now() - interval '%d seconds'),"
             "       (SELECT string_agg(worker_id, ', ' ORDER BY worker_id) FROM public.kgx_workers"
             "         WHERE seen_at > now() - interval '%d seconds'),"
             "       (SELECT count(*) FROM public.mempalace_kg_extraction_queue WHERE completed_at IS NULL"
             "          AND error IS NULL AND started_at > now() - make_interval(secs => $1::float8))",
             ALIVE_SECONDS, ALIVE_SECONDS);
    const char *p[] = { lease };
    PGresult *r = query(a, sql, 1, p, "checking for workers", err, errlen);
    if (!r) return -1;
    long long workers = atoll(PQgetvalue(r, 0, 0)), inflight = atoll(PQgetvalue(r, 0, 2));
    int rc = 0;
    if (workers > 0) {
        snprintf(err, errlen, "%lld kgx worker%s alive on this database (%s): stop %s first "
                 "(systemctl stop kgx-run), then run --adopt again", workers, workers == 1 ? " is" : "s are",
                 PQgetvalue(r, 0, 1), workers == 1 ? "it" : "them");
        rc = 1;
    } else if (inflight > 0) {
        snprintf(err, errlen, "%lld queue row%s claimed within the lease (a worker is running, maybe the Python "
                 "one): stop it first; rows of a worker that died become free after --lease-seconds",
                 inflight, inflight == 1 ? " is" : "s are");
        rc = 1;
    }
    PQclear(r);
    return rc;
}

int kgx_adopt_running(PGconn *c, const char *graph, char *err, size_t errlen)
{
    const char *p[] = { graph };
    PGresult *r = PQexecParams(c,
        "SELECT CASE WHEN pg_try_advisory_lock_shared(hashtext('kgx-adopt'), hashtext($1))"
        " THEN NOT pg_advisory_unlock_shared(hashtext('kgx-adopt'), hashtext($1)) ELSE true END",
        1, NULL, p, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "checking for --adopt: ", r);
        rc = -1;
    } else {
        rc = PQgetvalue(r, 0, 0)[0] == 't';
        if (rc) snprintf(err, errlen, "kgx-run --adopt is running on graph %s: waiting for it to finish", graph);
    }
    PQclear(r);
    return rc;
}

/* ---- step 1: relation types through the policy ----
 * The accept calls run on the hook threads (hooks.c) with a loop of their own, as the daemon's do: the
 * watchdog stops an accept stuck inside a C call too, and --adopt then fails with its message (nothing
 * of this step is committed; a rerun starts it over). The mapping is built in the order of the list. */

typedef struct mapper mapper_t;

typedef struct {
    mapper_t *m;
    char *rel, *raw_kept, *why;     /* kept: rel (and the raw predicate kept); rejected: why */
    int state;                      /* 0 waiting, 1 kept, 2 rejected, 3 failed */
} relmap_t;

struct mapper {
    uv_loop_t loop;
    kgx_hooks_t *hooks;
    uv_timer_t keep;                /* keeps uv_run(ONCE) waiting: the pool's own handles are unref'd */
    int inflight, failed, closing;
    char err[1024];                 /* the first failure */
};

#define ACCEPT_INFLIGHT 64

static void accepted_cb(kgx_hook_outcome_t *o, void *ud)
{
    relmap_t *x = ud;
    mapper_t *m = x->m;
    m->inflight--;
    if (o->rc && m->closing) {      /* given up on: interrupted, or after an earlier failure */
        x->state = 3;
    } else if (o->rc) {
        if (!m->failed) snprintf(m->err, sizeof m->err, "%s", o->err);
        m->failed = 1;
        x->state = 3;
    } else if (o->rejected) {
        x->why = strdup(o->why ? o->why : "");
        x->state = 2;
    } else {
        x->rel = o->triple.predicate;
        x->raw_kept = o->triple.raw_predicate;
        o->triple.predicate = o->triple.raw_predicate = NULL;
        x->state = 1;
    }
}

static void keep_cb(uv_timer_t *t) { (void)t; }
static void handle_closed(uv_handle_t *h) { (void)h; }

/* Runs accept on every relation type of r (column 0) into v; takes the policy. 0, 1 interrupted, -1 + err. */
static int accept_all(kgx_script_t *policy, PGresult *r, relmap_t *v, char *err, size_t errlen)
{
    mapper_t m = { 0 };
    uv_loop_init(&m.loop);
    /* no cap callback: the first accept the watchdog gives up on fails the step, so one thread at most */
    if (!(m.hooks = kgx_hooks_new(&m.loop, policy, NULL, NULL, err, errlen))) {   /* takes the state */
        uv_loop_close(&m.loop);
        return -1;
    }
    uv_timer_init(&m.loop, &m.keep);
    uv_timer_start(&m.keep, keep_cb, 1000, 1000);
    kgx_drawer_t d = { "kgx-adopt", NULL, NULL, "", 0, NULL };
    kgx_drawer_box_t *box = kgx_drawer_box_new(&d);
    int n = PQntuples(r);
    for (int i = 0; i < n && box && !m.failed && !g_stop; i++) {
        v[i].m = &m;
        if (PQgetisnull(r, i, 0)) continue;          /* no relation_type at all: rejected by the SQL */
        while (m.inflight >= ACCEPT_INFLIGHT && !m.failed && !g_stop) uv_run(&m.loop, UV_RUN_ONCE);
        /* neutral names and full confidence: only the predicate can be judged */
        if (!kgx_hooks_accept(m.hooks, NULL, box, "adopted subject", PQgetvalue(r, i, 0), "adopted object", 1.0,
                              "adopt", accepted_cb, &v[i])) {
            snprintf(m.err, sizeof m.err, "relation map: out of memory");
            m.failed = 1;
            break;
        }
        m.inflight++;
    }
    if (!box) { snprintf(m.err, sizeof m.err, "relation map: out of memory"); m.failed = 1; }
    while (m.inflight > 0 && !m.failed && !g_stop) uv_run(&m.loop, UV_RUN_ONCE);
    kgx_drawer_box_unref(box);
    m.closing = 1;
    kgx_hooks_free(m.hooks);        /* never waits for a stuck hook; what is still out fails now */
    uv_close((uv_handle_t *)&m.keep, handle_closed);
    uv_run(&m.loop, UV_RUN_DEFAULT);
    uv_loop_close(&m.loop);
    if (m.failed) {
        snprintf(err, errlen, "%s", m.err);
        return -1;
    }
    return g_stop ? 1 : 0;
}

static int map_relations(adopt_t *a, kgx_script_t *policy, char *err, size_t errlen)
{
    char sql[1024];
    const char *g = a->cfg->graph;
    snprintf(sql, sizeof sql,
             "SELECT DISTINCT coalesce(agtype_access_operator(VARIADIC ARRAY[properties, '\"raw_relation_type\"'::agtype])::text,"
             "                         agtype_access_operator(VARIADIC ARRAY[properties, '\"relation_type\"'::agtype])::text)"
             "  FROM %s.\"RELATION\""
             " WHERE agtype_access_operator(VARIADIC ARRAY[properties, '\"support\"'::agtype]) IS NULL", g);
    PGresult *r = PQexec(a->c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "reading relation types: ", r);
        PQclear(r);
        kgx_script_free(policy);
        return -1;
    }
    int n = PQntuples(r);
    relmap_t *v = calloc((size_t)n + 1, sizeof *v);
    int rc = v ? accept_all(policy, r, v, err, errlen) : -1;
    if (!v) { kgx_script_free(policy); snprintf(err, errlen, "relation map: out of memory"); }
    if (!rc) rc = tx_begin(a, err, errlen);
    char del[256];
    snprintf(del, sizeof del, "DELETE FROM public.kgx_%s_adopt_rel", g);
    if (!rc) rc = exec(a, del, "relation map", err, errlen);
    char ins[512];
    snprintf(ins, sizeof ins,
             "INSERT INTO public.kgx_%s_adopt_rel (raw, rel, raw_kept, reason)"
             " SELECT raw, rel, raw_kept, reason FROM jsonb_to_recordset($1::jsonb)"
             " AS x(raw text, rel text, raw_kept text, reason text)", g);
    kgx_buf_t b = { 0 };
    int inbuf = 0;
    for (int i = 0; i < n && !rc; i++) {
        relmap_t *x = &v[i];
        if (x->state == 1 || x->state == 2) {
            const char *raw = PQgetvalue(r, i, 0);
            kgx_buf_adds(&b, inbuf ? ",{\"raw\":" : "[{\"raw\":");
            kgx_buf_json_str(&b, raw);
            if (x->state == 1) {
                kgx_buf_adds(&b, ",\"rel\":");
                kgx_buf_json_str(&b, x->rel);
                kgx_buf_adds(&b, ",\"raw_kept\":");
                if (x->raw_kept) kgx_buf_json_str(&b, x->raw_kept); else kgx_buf_adds(&b, "null");
                if (!strcmp(x->rel, "other")) a->rel_other++;
                a->rel_mapped++;
            } else {
                kgx_buf_adds(&b, ",\"reason\":");
                kgx_buf_json_str(&b, x->why);
                a->rel_rejected++;
                log_debug("adopt: relation type '%s' rejected by the policy: %s", raw, x->why);
            }
            kgx_buf_adds(&b, "}");
            inbuf++;
        }
        if (inbuf && (inbuf == MAP_CHUNK || i == n - 1)) {   /* the last rows may be NULL predicates */
            kgx_buf_adds(&b, "]");
            const char *p[] = { b.p };
            PGresult *x2 = PQexecParams(a->c, ins, 1, NULL, p, NULL, NULL, 0);
            if (PQresultStatus(x2) != PGRES_COMMAND_OK) {
                kgx_db_result_error(err, errlen, "relation map: ", x2);
                rc = -1;
            }
            PQclear(x2);
            b.len = 0;
            if (b.p) b.p[0] = 0;
            inbuf = 0;
        }
    }
    kgx_buf_free(&b);
    for (int i = 0; v && i < n; i++) { free(v[i].rel); free(v[i].raw_kept); free(v[i].why); }
    free(v);
    PQclear(r);
    if (!rc) rc = tx_commit(a, err, errlen);
    else if (rc < 0) tx_abort(a);
    return rc;
}

/* ---- the batched steps ---- */

static int step_vertices(adopt_t *a, char *err, size_t errlen)
{
    char sql[256], lim[16];
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_adopt_v($1::int)", a->cfg->graph);
    snprintf(lim, sizeof lim, "%d", a->batch);
    const char *p[] = { lim };
    for (;;) {
        if (g_stop) return 1;
        if (!a->dry && check_idle(a, err, errlen)) return -1;
        if (tx_begin(a, err, errlen)) return -1;
        PGresult *r = query(a, sql, 1, p, "keying vertices", err, errlen);
        if (!r) { tx_abort(a); return -1; }
        long long v[4] = { 0 };
        sscanf(PQgetvalue(r, 0, 0), "{%lld,%lld,%lld,%lld}", &v[0], &v[1], &v[2], &v[3]);
        PQclear(r);
        if (tx_commit(a, err, errlen)) return -1;
        if (v[0] == 0) return 0;
        a->keys += v[0]; a->keyed += v[1]; a->merged += v[2]; a->moved += v[3];
        progress(a, 0);
    }
}

static int step_edges(adopt_t *a, char *err, size_t errlen)
{
    char sql[256], lim[16], after[32] = "0";
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_adopt_e($1, $2::int)", a->cfg->graph);
    snprintf(lim, sizeof lim, "%d", a->batch);
    for (;;) {
        if (g_stop) return 1;
        if (!a->dry && check_idle(a, err, errlen)) return -1;
        if (tx_begin(a, err, errlen)) return -1;
        const char *p[] = { after, lim };
        PGresult *r = query(a, sql, 2, p, "converting edges", err, errlen);
        if (!r) { tx_abort(a); return -1; }
        char last[32] = "";
        long long v[9] = { 0 };
        const char *s = PQgetvalue(r, 0, 0);
        int done = !strncmp(s, "{NULL,", 6);
        if (!done) sscanf(s, "{%31[0-9],%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld}", last, &v[0], &v[1], &v[2],
                          &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]);
        PQclear(r);
        if (tx_commit(a, err, errlen)) return -1;
        if (done || !last[0]) return 0;
        snprintf(after, sizeof after, "%s", last);
        a->examined += v[0]; a->converted += v[1]; a->facts_new += v[2];
        a->same += v[4]; a->rejected += v[5]; a->superseded += v[6]; a->nosource += v[7]; a->nonentity += v[8];
        progress(a, 0);
    }
}

static int step_orphans(adopt_t *a, char *err, size_t errlen)
{
    char sql[256], lim[16], after[32] = "0";
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_adopt_o($1, $2::int)", a->cfg->graph);
    snprintf(lim, sizeof lim, "%d", a->batch);
    for (;;) {
        if (g_stop) return 1;
        if (tx_begin(a, err, errlen)) return -1;
        const char *p[] = { after, lim };
        PGresult *r = query(a, sql, 2, p, "removing edge-less vertices", err, errlen);
        if (!r) { tx_abort(a); return -1; }
        char last[32] = "";
        long long n = 0;
        const char *s = PQgetvalue(r, 0, 0);
        int done = !strncmp(s, "{NULL,", 6);
        if (!done) sscanf(s, "{%31[0-9],%lld}", last, &n);
        PQclear(r);
        if (tx_commit(a, err, errlen)) return -1;
        if (done || !last[0]) return 0;
        snprintf(after, sizeof after, "%s", last);
        a->orphans += n;
        progress(a, 0);
    }
}

static int step_requeue(adopt_t *a, char *err, size_t errlen)
{
    char sql[256], lim[16];
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_adopt_q($1::int)", a->cfg->graph);
    snprintf(lim, sizeof lim, "%d", a->batch);
    const char *p[] = { lim };
    for (;;) {
        if (g_stop) return 1;
        if (tx_begin(a, err, errlen)) return -1;
        PGresult *r = query(a, sql, 1, p, "re-queueing", err, errlen);
        if (!r) { tx_abort(a); return -1; }
        long long n = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (tx_commit(a, err, errlen)) return -1;
        if (n == 0) return 0;
        a->requeued += n;
    }
}

static long long support_rows(adopt_t *a, char *err, size_t errlen)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.kgx_%s_support", a->cfg->graph);
    PGresult *r = query(a, sql, 0, NULL, "counting support rows", err, errlen);
    if (!r) return -1;
    long long n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static int graph_exists(adopt_t *a, char *err, size_t errlen)
{
    const char *p[] = { a->cfg->graph };
    PGresult *r = query(a, "SELECT count(*) FROM ag_catalog.ag_graph WHERE name = $1", 1, p, "graph", err, errlen);
    if (!r) return -1;
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!n) snprintf(err, errlen, "no graph named %s in this database: nothing to adopt (--graph NAME)", a->cfg->graph);
    return n ? 0 : -1;
}

static void report(const adopt_t *a, int complete)
{
    const char *pre = a->dry ? "adopt (dry run, nothing written)" : "adopt";
    printf("%s: relation types mapped=%lld (to other=%lld) rejected_by_policy=%lld\n", pre,
           a->rel_mapped, a->rel_other, a->rel_rejected);
    printf("%s: vertices keyed=%lld merged=%lld edge_ends_repointed=%lld\n", pre, a->keyed, a->merged, a->moved);
    long long dups = a->converted - a->support > 0 ? a->converted - a->support : 0;
    printf("%s: old relation edges=%lld converted=%lld (parallel_duplicates=%lld) dropped=%lld (same_entity=%lld"
           " rejected_predicate=%lld superseded_by_kgx=%lld) kept=%lld (no_drawer_source=%lld"
           " not_between_entities=%lld)\n", pre, a->examined, a->converted, dups, a->same + a->rejected + a->superseded,
           a->same, a->rejected, a->superseded, a->nosource + a->nonentity, a->nosource, a->nonentity);
    printf("%s: facts new=%lld support_rows_added=%lld\n", pre, a->facts_new, a->support);
    printf("%s: edge-less vertices deleted=%lld\n", pre, a->orphans);
    if (a->cfg->requeue_empty) printf("%s: rows re-queued=%lld\n", pre, a->requeued);
    printf("%s: %s\n", pre, complete ? "done" : "interrupted: run kgx-run --adopt again to finish");
    fflush(stdout);
}

int kgx_adopt_run(const kgx_config_t *cfg, kgx_script_t *policy)
{
    char err[1024];
    adopt_t a = { 0 };
    a.cfg = cfg;
    a.dry = cfg->adopt_dry_run;
    a.batch = 1000;
    const char *e = getenv("KGX_ADOPT_BATCH");
    if (e && atoi(e) > 0) a.batch = atoi(e);
    clock_gettime(CLOCK_MONOTONIC, &a.last_progress);
    kgx_db_fail_t why;
    a.c = kgx_db_open(cfg->dsn, kgx_graph_session_sql, err, sizeof err, &why);
    if (!a.c) {
        fprintf(stderr, "error: database: %s\n", err);
        return 1;
    }
    g_stop = 0;
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    int rc = -1, complete = 0;
    char *sql = NULL, *schema = NULL;
    const char *p[] = { cfg->graph };
    PGresult *r = query(&a, "SELECT pg_try_advisory_lock(hashtext('kgx-adopt'), hashtext($1))", 1, p, "lock", err, sizeof err);
    if (!r) goto out;
    int locked = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!locked) {
        /* another --adopt, a daemon checking for one, or the backend of a run just killed still
         * finishing its statement: wait a while */
        log_info("adopt: graph %s is held by another session; waiting up to 60 s", cfg->graph);
        PQclear(PQexec(a.c, "SET lock_timeout = '60s'"));
        PGresult *w = PQexecParams(a.c, "SELECT pg_advisory_lock(hashtext('kgx-adopt'), hashtext($1))", 1, NULL, p,
                                   NULL, NULL, 0);
        locked = PQresultStatus(w) == PGRES_TUPLES_OK;
        PQclear(w);
        PQclear(PQexec(a.c, "RESET lock_timeout"));
        if (!locked) {
            snprintf(err, sizeof err, "another kgx-run --adopt holds graph %s: try again when it has finished", cfg->graph);
            goto out;
        }
    }
    if (graph_exists(&a, err, sizeof err)) goto out;
    if (a.dry) {
        /* kgx's schema inside the rolled-back transaction, only when kgx never ran here: its DDL would
         * otherwise hold locks on the live queue table (MemPalace's enqueue) for the whole dry run */
        char probe[256];
        snprintf(probe, sizeof probe, "SELECT to_regprocedure('public.kgx_%s_write(text,text,bigint,jsonb,jsonb)') IS NOT NULL",
                 cfg->graph);
        PGresult *pr = query(&a, probe, 0, NULL, "schema", err, sizeof err);
        if (!pr) goto out;
        int have = PQgetvalue(pr, 0, 0)[0] == 't';
        PQclear(pr);
        schema = kgx_graph_subst(schema_sql, cfg->graph);
        char *conc = schema ? strstr(schema, kgx_graph_concurrent_marker) : NULL;
        if (conc) *conc = 0;      /* indexes built CONCURRENTLY: not inside a rolled-back dry run */
        if (exec(&a, "BEGIN", "begin", err, sizeof err)
            || exec(&a, "SET LOCAL client_min_messages = warning", "schema", err, sizeof err)
            || (!have && exec(&a, "CREATE EXTENSION IF NOT EXISTS age", "CREATE EXTENSION age", err, sizeof err))
            || (!have && exec(&a, schema, "schema", err, sizeof err)))
            goto out;
    } else if (kgx_graph_setup(a.c, cfg->graph, cfg->requeue_empty, err, sizeof err)) {
        goto out;
    }
    if (check_idle(&a, err, sizeof err)) goto out;
    sql = kgx_graph_subst(adopt_sql, cfg->graph);
    if (tx_begin(&a, err, sizeof err) || exec(&a, "SET LOCAL client_min_messages = warning", "adopt", err, sizeof err)
        || exec(&a, sql, "adopt setup", err, sizeof err) || tx_commit(&a, err, sizeof err)) {
        tx_abort(&a);
        goto out;
    }
    {
        /* statistics for the new work-list indexes, so each batch's plan reads only its batch */
        char an[256];
        snprintf(an, sizeof an, "ANALYZE %s.\"Entity\"; ANALYZE %s.\"RELATION\"", cfg->graph, cfg->graph);
        if (exec(&a, an, "analyze", err, sizeof err)) goto out;
    }
    log_info("adopt: graph %s%s, batches of %d", cfg->graph, a.dry ? " (dry run)" : "", a.batch);
    int s = map_relations(&a, policy, err, sizeof err);   /* takes the policy */
    policy = NULL;
    if (!s) s = step_vertices(&a, err, sizeof err);
    long long sup0 = -1;
    if (!s && (sup0 = support_rows(&a, err, sizeof err)) < 0) goto out;
    if (!s) s = step_edges(&a, err, sizeof err);
    if (s >= 0 && sup0 >= 0) {
        /* upserts of one drawer's fact split over batches count once: the table's growth */
        long long sup1 = support_rows(&a, err, sizeof err);
        if (sup1 < 0) goto out;
        a.support = sup1 - sup0;
    }
    if (!s) s = step_orphans(&a, err, sizeof err);
    if (!s && cfg->requeue_empty) s = step_requeue(&a, err, sizeof err);
    if (s < 0) goto out;
    if (s == 0) {
        /* the work lists are empty: drop them, and let the planner see the new graph */
        char fin[512];
        snprintf(fin, sizeof fin,
                 "DROP INDEX IF EXISTS %s.kgx_adopt_nkey; DROP INDEX IF EXISTS %s.kgx_adopt_old;"
                 " DROP TABLE IF EXISTS public.kgx_%s_adopt_rel", cfg->graph, cfg->graph, cfg->graph);
        if (exec(&a, fin, "finishing", err, sizeof err)) goto out;
        if (!a.dry) {
            snprintf(fin, sizeof fin, "ANALYZE %s.\"Entity\"; ANALYZE %s.\"RELATION\"", cfg->graph, cfg->graph);
            if (exec(&a, fin, "analyze", err, sizeof err)) goto out;
        }
        complete = 1;
    }
    progress(&a, 1);
    report(&a, complete);
    rc = complete ? 0 : 1;
out:
    if (rc < 0) fprintf(stderr, "error: adopt: %s\n", err);
    if (a.dry) PQclear(PQexec(a.c, "ROLLBACK"));
    PQfinish(a.c);
    free(sql);
    free(schema);
    kgx_script_free(policy);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    return rc < 0 ? 1 : rc;
}
