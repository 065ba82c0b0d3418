/* graph — see graph.h. */
#include "graph.h"
#include "log.h"
#include "names.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char schema_sql[] =
#include "schema_sql.h"
    ;

/* LOAD needs a superuser; an ordinary role works when the server preloads AGE
 * (session_preload_libraries = 'age'), so a refused LOAD is not fatal here: the first cypher()
 * call would say so clearly if AGE is really missing. */
const char *const kgx_graph_session_sql[] = {
    "DO $$BEGIN LOAD 'age'; EXCEPTION WHEN insufficient_privilege THEN NULL; END$$",
    "SET search_path = ag_catalog, \"$user\", public",
    "SET kgx.internal = '1'",
    NULL
};

/* [dropin] the whole check (derived identifiers' length, reserved words, foreign schemas) is core/names.c's */
int kgx_graph_name_ok(const char *g)
{
    return kgx_names_check_graph(g, NULL, 0) == 0;
}

char *kgx_graph_subst(const char *tmpl, const char *graph)
{
    kgx_buf_t b = { 0 };
    const char *p = tmpl, *m;
    while ((m = strstr(p, "@G@"))) {
        kgx_buf_add(&b, p, (size_t)(m - p));
        kgx_buf_adds(&b, graph);
        p = m + 3;
    }
    kgx_buf_adds(&b, p);
    return kgx_buf_steal(&b, NULL);
}

int kgx_graph_exec(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char pre[128];
        snprintf(pre, sizeof pre, "%s: ", what);
        kgx_db_result_error(err, errlen, pre, r);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* FNV-1a of the schema text: the version stamp that lets a restart skip DDL (and its locks on the
 * live queue table) when the database already has this exact schema. */
static unsigned long long schema_hash(const char *sql)
{
    unsigned long long h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static int schema_current(PGconn *c, const char *graph, const char *stamp)
{
    char sql[512];
    /* plain catalog scans (fresh snapshot), not to_regprocedure(): after waiting for the advisory
     * lock, this backend's syscache may still hold a negative entry for the function from the first
     * check (an advisory lock does not process invalidations), and the re-check would then redo the
     * DDL under running workers -> deadlock with their claims. */
    snprintf(sql, sizeof sql,
             "SELECT d.description FROM pg_catalog.pg_proc p"
             " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'"
             " JOIN pg_catalog.pg_description d ON d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_proc'::regclass"
             " AND d.objsubid = 0"
             " WHERE p.proname = 'kgx_%s_write' AND p.pronargs = 5",
             graph);
    PGresult *r = PQexec(c, sql);
    int same = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) && !strcmp(PQgetvalue(r, 0, 0), stamp);
    PQclear(r);
    return same;
}

/* The part of the schema after the "kgx:concurrently" marker: statements run one at a time outside a
 * transaction, with statement_timeout off (CREATE INDEX CONCURRENTLY on a large live queue). */
const char kgx_graph_concurrent_marker[] = "-- ===== kgx:concurrently";

static int run_concurrent(PGconn *c, char *part, char *err, size_t errlen)
{
    int rc = kgx_graph_exec(c, "SET statement_timeout = 0", "schema", err, errlen);
    /* statements end with ';' at the end of a line; comment lines are skipped */
    char *p = part;
    while (!rc && *p) {
        char *end = strstr(p, ";\n");
        if (!end) end = p + strlen(p);
        char save = *end;
        *end = 0;
        const char *stmt = p;
        while (*stmt) { /* skip blank and comment lines */
            const char *q = stmt + strspn(stmt, " \t\r\n");
            if (q[0] == '-' && q[1] == '-') { const char *nl = strchr(q, '\n'); stmt = nl ? nl + 1 : q + strlen(q); }
            else { stmt = q; break; }
        }
        if (*stmt) {
            /* an index left invalid by an interrupted CONCURRENTLY build is dropped and built again */
            const char *k = strstr(stmt, "IF NOT EXISTS ");
            if (k && !strncmp(stmt, "CREATE", 6) && strstr(stmt, "CONCURRENTLY")) {
                char name[128] = "", q[512];
                sscanf(k + 14, "%127[a-z0-9_]", name);
                snprintf(q, sizeof q, "SELECT 1 FROM pg_catalog.pg_index WHERE indexrelid = to_regclass('public.%s')"
                         " AND NOT indisvalid", name);
                PGresult *r = PQexec(c, q);
                int invalid = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
                PQclear(r);
                if (invalid) {
                    log_warn("schema: index %s was left invalid by an interrupted build: building it again", name);
                    snprintf(q, sizeof q, "DROP INDEX CONCURRENTLY IF EXISTS public.%s", name);
                    rc = kgx_graph_exec(c, q, "schema", err, errlen);
                }
            }
            if (!rc) rc = kgx_graph_exec(c, stmt, "schema (concurrently)", err, errlen);
        }
        *end = save;
        p = *end ? end + 2 : end;
    }
    PGresult *r = PQexec(c, "RESET statement_timeout");
    PQclear(r);
    return rc;
}

/* Deltas a process left when it died between a write and its fold: folded before this one starts.
 * Not fatal: the daemon folds after its first write anyway. */
static int fold_leftovers(PGconn *c, const char *graph)
{
    char err[512];
    if (kgx_graph_fold_all(c, graph, err, sizeof err)) log_warn("%s", err);
    return 0;
}

int kgx_graph_setup(PGconn *c, const char *graph, int need_drawers, char *err, size_t errlen)
{
    if (!kgx_graph_name_ok(graph)) {
        snprintf(err, errlen, "invalid graph name '%s'", graph);
        return -1;
    }
    if (need_drawers) {
        PGresult *r = PQexec(c, "SELECT to_regclass('public.mempalace_drawers') IS NOT NULL");
        int have = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (!have) {
            snprintf(err, errlen, "table mempalace_drawers not found (is this the MemPalace database?)");
            return -1;
        }
    }
    char *sql = kgx_graph_subst(schema_sql, graph);
    char stamp[64], comment[256];
    snprintf(stamp, sizeof stamp, "kgx schema %016llx", schema_hash(sql));
    if (schema_current(c, graph, stamp)) {
        free(sql);
        return fold_leftovers(c, graph);
    }
    /* Serialised across processes starting together by a session advisory lock, taken with
     * pg_try_advisory_lock in a loop: a session waiting inside a statement (or a transaction) would
     * hold a snapshot that CREATE INDEX CONCURRENTLY waits for, while it waits for the builder. */
    for (int tries = 0;; tries++) {
        PGresult *r = PQexec(c, "SELECT pg_try_advisory_lock(hashtext('kgx-schema'))");
        int bad = PQresultStatus(r) != PGRES_TUPLES_OK;
        int got = !bad && PQgetvalue(r, 0, 0)[0] == 't';
        if (bad) kgx_db_result_error(err, errlen, "schema lock: ", r);
        PQclear(r);
        if (bad) {
            free(sql);
            return -1;
        }
        if (got) break;
        if (tries == 0) log_info("schema: another process is updating the schema; waiting");
        struct timespec ts = { 0, 100 * 1000000L };
        nanosleep(&ts, NULL);
    }
    int rc = 0;
    if (schema_current(c, graph, stamp)) goto done;
    char *conc = strstr(sql, kgx_graph_concurrent_marker);
    if (conc) {
        *conc = 0;
        conc = strchr(conc + 1, '\n');
        if (!conc) conc = (char *)"";
    }
    snprintf(comment, sizeof comment,
             "COMMENT ON FUNCTION public.kgx_%s_write(text,text,bigint,jsonb,jsonb) IS '%s'", graph, stamp);
    /* one transaction, then the part outside it; the stamp is written last, so an interrupted index
     * build is redone by the next start */
    rc = kgx_graph_exec(c, "BEGIN", "schema", err, errlen);
    if (!rc) rc = kgx_graph_exec(c, "SET LOCAL client_min_messages = warning", "schema", err, errlen);
    if (!rc) rc = kgx_graph_exec(c, "SET LOCAL statement_timeout = 0", "schema", err, errlen);
    if (!rc) rc = kgx_graph_exec(c, "CREATE EXTENSION IF NOT EXISTS age", "CREATE EXTENSION age", err, errlen);
    if (!rc) rc = kgx_graph_exec(c, sql, "schema", err, errlen);
    if (!rc) rc = kgx_graph_exec(c, "COMMIT", "schema commit", err, errlen);
    else {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    if (!rc && conc) {
        PGresult *r = PQexec(c, "SET client_min_messages = warning");
        PQclear(r);
        rc = run_concurrent(c, conc, err, errlen);
        r = PQexec(c, "RESET client_min_messages");
        PQclear(r);
    }
    if (!rc) rc = kgx_graph_exec(c, comment, "schema stamp", err, errlen);
done:;
    PGresult *u = PQexec(c, "SELECT pg_advisory_unlock(hashtext('kgx-schema'))");
    PQclear(u);
    free(sql);
    return rc ? rc : fold_leftovers(c, graph);
}

/* ------------------------------------------------------------------ aggregate folds
 * A write appends aggregate deltas for the facts that already had an edge (schema.sql.in,
 * kgx_<graph>_edge_delta); kgx_<graph>_fold applies them to the edges. Each process folds after its
 * own writes, one fold in flight per pool. A completed write starts one when it was the last write in
 * flight (the writes have paused: fold what they left), or when FOLD_EVERY writes or FOLD_PACE_MS have
 * passed since the last fold started (a steady stream of writes folds in batches: each fold has a
 * fixed cost — a statement, a scan of the delta index, a transaction — that per-drawer folds paid
 * once per write; B1: 418 folds for 4,000 drawers before, ~60 after). So the edge properties lag
 * the support rows by at most FOLD_EVERY writes or FOLD_PACE_MS plus one fold, and a hot fact's edge
 * row is updated once per fold instead of once per drawer. A fold cancelled by statement_timeout is
 * retried with half as many edges. kgx_graph_fold_all (blocking) folds what is left, at setup and at
 * exit. */
#define FOLD_LIMIT 500
#define FOLD_EVERY 64           /* writes completed since the last fold started */
#define FOLD_PACE_MS 1000
#define FOLD_LOST_MS 60000      /* a fold unanswered this long went with its pool (kgx_db_free drops callbacks) */

static struct fold_slot {
    kgx_db_t *db;
    char graph[64];
    int inflight, again, limit;
    int writing;                /* writes in flight on this pool */
    uint64_t started_ms;
    unsigned long long writes, writes_at_start;
} fold_slots[4];
static int fold_dirty;          /* writes completed since the last fold that ended with nothing left */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct fold_slot *fold_slot(kgx_db_t *db, const char *graph)
{
    struct fold_slot *free_slot = NULL, *oldest = &fold_slots[0];
    for (size_t i = 0; i < sizeof fold_slots / sizeof *fold_slots; i++) {
        struct fold_slot *f = &fold_slots[i];
        if (f->db == db && !strcmp(f->graph, graph)) return f;
        if (!f->db && !free_slot) free_slot = f;
        if (f->started_ms < oldest->started_ms) oldest = f;
    }
    struct fold_slot *f = free_slot ? free_slot : oldest;
    memset(f, 0, sizeof *f);
    f->db = db;
    snprintf(f->graph, sizeof f->graph, "%s", graph);
    f->limit = FOLD_LIMIT;
    return f;
}

static void fold_start(struct fold_slot *f);

static void fold_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    struct fold_slot *f = ud;
    f->inflight = 0;
    int more = 0;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        more = PQgetvalue(res, 0, 1)[0] == 't';
        if (f->limit < FOLD_LIMIT) f->limit = f->limit * 2 > FOLD_LIMIT ? FOLD_LIMIT : f->limit * 2;
        if (!more && !f->again && f->writes == f->writes_at_start) fold_dirty = 0;
    } else if (sqlstate && !strcmp(sqlstate, "57014") && f->limit > 1) {
        f->limit /= 2;          /* statement_timeout: smaller batches */
        more = 1;
    } else {
        /* the pool's trouble (its writers see it too); the next write or the exit folds again */
        log_debug("aggregate fold failed: %s", err ? err : "no result");
        f->again = 0;
        return;
    }
    if (more || f->again) fold_start(f);
}

static void fold_start(struct fold_slot *f)
{
    char sql[160], lim[16];
    snprintf(sql, sizeof sql, "SELECT folded, more FROM public.kgx_%s_fold($1::integer)", f->graph);
    snprintf(lim, sizeof lim, "%d", f->limit);
    const char *p[] = { lim };
    f->again = 0;
    f->writes_at_start = f->writes;
    f->started_ms = mono_ms();
    if (kgx_db_query_prepared(f->db, sql, 1, p, fold_done, f) == 0) f->inflight = 1;
}

/* After a write completed (or failed): fold now, once the fold in flight is done, or when a later
 * write completes (see the pace above; the last write in flight always folds). */
static void fold_after_write(kgx_db_t *db, const char *graph, int ok)
{
    struct fold_slot *f = fold_slot(db, graph);
    if (f->writing > 0) f->writing--;
    if (!ok && !fold_dirty) return;
    f->writes += ok;
    fold_dirty = 1;
    uint64_t now = mono_ms();
    int due = f->writing == 0 || f->writes - f->writes_at_start >= FOLD_EVERY
              || now - f->started_ms >= FOLD_PACE_MS;
    if (f->inflight && now - f->started_ms < FOLD_LOST_MS) f->again |= due;
    else if (due) fold_start(f);
}

int kgx_graph_fold_pending(void) { return fold_dirty; }

int kgx_graph_fold_all(PGconn *c, const char *graph, char *err, size_t errlen)
{
    if (!kgx_graph_name_ok(graph)) {
        snprintf(err, errlen, "invalid graph name");
        return -1;
    }
    char sql[160], lim[16];
    snprintf(sql, sizeof sql, "SELECT folded, more FROM public.kgx_%s_fold($1::integer)", graph);
    for (int limit = FOLD_LIMIT;;) {
        snprintf(lim, sizeof lim, "%d", limit);
        const char *p[] = { lim };
        PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            int more = PQgetvalue(r, 0, 1)[0] == 't';
            PQclear(r);
            if (!more) break;
            continue;
        }
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st && !strcmp(st, "57014") && limit > 1) {
            PQclear(r);
            limit /= 2;
            continue;
        }
        kgx_db_result_error(err, errlen, "folding edge aggregates: ", r);
        PQclear(r);
        return -1;
    }
    fold_dirty = 0;
    return 0;
}

typedef struct { kgx_graph_write_cb cb; void *ud; kgx_db_t *db; char graph[64]; } write_ctx_t;

static void write_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    write_ctx_t *w = ud;
    /* before the callback, which may end the run (the fold is then one more statement the drain waits
     * for) or free the pool */
    fold_after_write(w->db, w->graph, res != NULL);
    if (!res) w->cb(0, err ? err : "connection lost", "08006", w->ud);
    else if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        w->cb(0, err ? err : "write failed", sqlstate, w->ud);
    else
        w->cb(atoi(PQgetvalue(res, 0, 0)), NULL, NULL, w->ud);
    free(w);
}

void kgx_graph_triple_json(kgx_buf_t *b, const kgx_triple_t *t, long chunk)
{
    kgx_buf_adds(b, b->len ? ",{\"s\":" : "[{\"s\":");
    kgx_buf_json_str(b, t->subject);
    kgx_buf_adds(b, ",\"p\":");
    kgx_buf_json_str(b, t->predicate);
    kgx_buf_adds(b, ",\"o\":");
    kgx_buf_json_str(b, t->object);
    kgx_buf_printf(b, ",\"c\":%.4f,\"raw\":", t->confidence);
    kgx_buf_json_str(b, t->raw_predicate);
    kgx_buf_printf(b, ",\"chunk\":%ld}", chunk);
}

int kgx_graph_write(kgx_db_t *db, const char *graph, const char *drawer_id, const char *worker,
                    long long token, const char *triples_json, const char *answers_json,
                    kgx_graph_write_cb cb, void *ud)
{
    if (!kgx_graph_name_ok(graph)) return -1;
    char sql[160], tok[32];
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_write($1, $2, $3::bigint, $4::jsonb, $5::jsonb)", graph);
    snprintf(tok, sizeof tok, "%lld", token);
    const char *p[] = { drawer_id, worker, token >= 0 ? tok : NULL, triples_json, answers_json };
    write_ctx_t *w = malloc(sizeof *w);
    if (!w) return -1;
    w->cb = cb;
    w->ud = ud;
    w->db = db;
    snprintf(w->graph, sizeof w->graph, "%s", graph);
    int rc = kgx_db_query_prepared(db, sql, 5, p, write_done, w);
    if (rc) free(w);
    else fold_slot(db, graph)->writing++;
    return rc;
}

/* economy (issue 14): stored whole answers by the SHA-256 of their request's key (reuse.h). One row
 * per key, in order: the hash always, the answer when one is stored (any one: they are the same
 * request answered whole). */
typedef struct { kgx_reuse_rows_cb cb; void *ud; } lookup_ctx_t;

static void lookup_rows(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    lookup_ctx_t *l = ud;
    (void)sqlstate;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        l->cb(NULL, 0, err ? err : "lookup failed", l->ud);
        free(l);
        return;
    }
    size_t n = (size_t)PQntuples(res);
    kgx_reuse_row_t *rows = calloc(n ? n : 1, sizeof *rows);
    kgx_reuse_answer_t *ans = calloc(n ? n : 1, sizeof *ans);
    if (!rows || !ans) {
        free(rows);
        free(ans);
        l->cb(NULL, 0, "out of memory", l->ud);
        free(l);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i].hash_hex = PQgetisnull(res, (int)i, 0) ? NULL : PQgetvalue(res, (int)i, 0);
        if (PQgetisnull(res, (int)i, 1)) continue;
        ans[i].body = PQgetvalue(res, (int)i, 1);
        ans[i].len = (size_t)PQgetlength(res, (int)i, 1);
        ans[i].prompt_tokens = PQgetisnull(res, (int)i, 2) ? -1 : atol(PQgetvalue(res, (int)i, 2));
        ans[i].completion_tokens = PQgetisnull(res, (int)i, 3) ? -1 : atol(PQgetvalue(res, (int)i, 3));
        rows[i].answer = &ans[i];
    }
    l->cb(rows, n, NULL, l->ud);
    free(rows);
    free(ans);
    free(l);
}

int kgx_graph_answers_lookup(kgx_db_t *db, const char *graph, const char *keys_json, kgx_reuse_rows_cb cb, void *ud)
{
    if (!kgx_graph_name_ok(graph)) return -1;
    char sql[900];
    snprintf(sql, sizeof sql,
             "SELECT encode(k.h, 'hex'), a.body, a.prompt_tokens, a.completion_tokens"
             "  FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY AS q(key, i)"
             "  CROSS JOIN LATERAL (SELECT sha256(convert_to(q.key, 'UTF8')) AS h) k"
             "  LEFT JOIN LATERAL (SELECT x.body, x.prompt_tokens, x.completion_tokens"
             "                       FROM public.kgx_%s_answers x WHERE x.request_hash = k.h LIMIT 1) a ON true"
             " ORDER BY q.i", graph);
    lookup_ctx_t *l = malloc(sizeof *l);
    if (!l) return -1;
    l->cb = cb;
    l->ud = ud;
    const char *p[] = { keys_json };
    int rc = kgx_db_query_prepared(db, sql, 1, p, lookup_rows, l);
    if (rc) free(l);
    return rc;
}

int kgx_graph_is_transient(const char *sqlstate, const char *err)
{
    if (!sqlstate) return err != NULL; /* connection-level failure */
    /* serialization/deadlock, connection exceptions, admin shutdown, too many connections,
     * statement_timeout (57014: the caller retries a bounded number of times, then charges) */
    return !strcmp(sqlstate, "40P01") || !strcmp(sqlstate, "57014") || !strcmp(sqlstate, "40001") || !strncmp(sqlstate, "08", 2)
        || !strcmp(sqlstate, "57P01") || !strcmp(sqlstate, "57P02") || !strcmp(sqlstate, "57P03")
        || !strcmp(sqlstate, "53300") || !strcmp(sqlstate, "55P03");
}

PGresult *kgx_graph_answers_fetch(PGconn *c, const char *graph, const char *after, const char *only,
                                  int limit, char *err, size_t errlen)
{
    if (!kgx_graph_name_ok(graph)) {
        snprintf(err, errlen, "invalid graph name");
        return NULL;
    }
    char sql[1024], lim[16];
    snprintf(sql, sizeof sql,
             "WITH ids AS (SELECT DISTINCT a.drawer_id FROM public.kgx_%s_answers a"
             "   JOIN public.mempalace_kg_extraction_queue q ON q.drawer_id = a.drawer_id AND q.completed_at IS NOT NULL"
             "  WHERE a.drawer_id > $1 AND ($2::text IS NULL OR a.drawer_id = $2)"
             "  ORDER BY a.drawer_id LIMIT $3::int)"
             " SELECT a.drawer_id, d.wing, d.room, d.document, d.metadata::text, a.chunk, a.body"
             "   FROM ids JOIN public.kgx_%s_answers a ON a.drawer_id = ids.drawer_id"
             "   LEFT JOIN public.mempalace_drawers d ON d.id = a.drawer_id"
             "  ORDER BY a.drawer_id, a.chunk", graph, graph);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = { after ? after : "", only, lim };
    PGresult *r = PQexecParams(c, sql, 3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "reading stored answers: ", r);
        PQclear(r);
        return NULL;
    }
    return r;
}

int kgx_graph_stats(PGconn *c, const char *graph, long long *entities, long long *edges,
                    long long *supports, char *err, size_t errlen)
{
    if (!kgx_graph_name_ok(graph)) {
        snprintf(err, errlen, "invalid graph name");
        return -1;
    }
    /* exact below 200,000 rows; beyond, the planner's estimate (pg_class.reltuples, kept by
     * autovacuum/ANALYZE): a count(*) of a palace-sized label every few seconds is a full scan */
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT CASE WHEN e.reltuples < 200000 THEN (SELECT count(*) FROM %s.\"Entity\") ELSE e.reltuples::bigint END,"
             " CASE WHEN r.reltuples < 200000 THEN (SELECT count(*) FROM %s.\"RELATION\") ELSE r.reltuples::bigint END,"
             " CASE WHEN s.reltuples < 200000 THEN (SELECT count(*) FROM public.kgx_%s_support) ELSE s.reltuples::bigint END"
             " FROM pg_catalog.pg_class e, pg_catalog.pg_class r, pg_catalog.pg_class s"
             " WHERE e.oid = '%s.\"Entity\"'::regclass AND r.oid = '%s.\"RELATION\"'::regclass"
             " AND s.oid = 'public.kgx_%s_support'::regclass", graph, graph, graph, graph, graph, graph);
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "graph statistics: ", r);
        rc = -1;
    } else {
        *entities = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        *edges = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        *supports = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    return rc;
}

