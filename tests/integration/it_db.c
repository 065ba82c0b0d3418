/* it_db — kgx_db against a real PostgreSQL (KGX_TEST_DSN, a superuser DSN; fails when unset).
 * AGE is not needed. A blocking side connection terminates backends and sends NOTIFYs. */
#include "db.h"
/* tap.h's ok() trips -Wmisleading-indentation under -Werror (gcc 12) */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

static uv_loop_t loop;
static PGconn *side;
static const char *const setup[] = { "SET application_name = 'kgx-test'", "SET statement_timeout = '20s'", NULL };

/* ---- loop helpers ---- */

static void on_wake(uv_timer_t *t) {}

/* Runs the loop until *flag >= want or ms elapsed; returns whether the flag got there. */
static int run_until(const int *flag, int want, long ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_wake, 20, 20);   /* keeps uv_run from blocking forever */
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while ((!flag || *flag < want) && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return flag && *flag >= want;
}

static void run_for(long ms) { run_until(NULL, 0, ms); }

static PGresult *side_exec(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(side, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) diag("side: %s", PQresultErrorMessage(r));
    return r;
}

static int side_count(const char *sql)
{
    PGresult *r = side_exec(sql, 0, NULL);
    int n = PQntuples(r) > 0 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* ---- recording callbacks ---- */

typedef struct {
    int calls;
    int has_res;
    ExecStatusType status;
    char err[512];
    char sqlstate[8];
    char v0[256], v1[256];
    int ntuples;
} rec_t;

static void rec_cb(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    rec_t *r = ud;
    r->calls++;
    r->has_res = res != NULL;
    r->status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", sqlstate ? sqlstate : "");
    r->ntuples = res ? PQntuples(res) : -1;
    r->v0[0] = r->v1[0] = '\0';
    if (res && PQntuples(res) > 0) {
        snprintf(r->v0, sizeof r->v0, "%s", PQgetvalue(res, 0, 0));
        if (PQnfields(res) > 1) snprintf(r->v1, sizeof r->v1, "%s", PQgetvalue(res, 0, 1));
    }
}

static int state_up, state_down;
static char state_err[512];
static void state_cb(int up, const char *err, void *ud)
{
    if (up) state_up++;
    else { state_down++; snprintf(state_err, sizeof state_err, "%s", err ? err : "(null)"); }
}

static rec_t query(kgx_db_t *db, const char *sql, int n, const char *const *params)
{
    rec_t r = { 0 };
    if (kgx_db_query(db, sql, n, params, rec_cb, &r) != 0) { r.calls = -1; return r; }
    run_until(&r.calls, 1, 15000);
    return r;
}

/* ---- tests ---- */

static void t_setup(kgx_db_t *db)
{
    ok(run_until(&state_up, 1, 10000), "on_state(1) after connect");
    ok(kgx_db_is_up(db), "is_up");
    rec_t r = query(db, "SELECT current_setting('application_name')", 0, NULL);
    is_int(r.calls, 1, "query completes once");
    is_int(r.status, PGRES_TUPLES_OK, "TUPLES_OK");
    is_str(r.v0, "kgx-test", "setup_sql ran on the connection");
    r = query(db, "SELECT current_setting('statement_timeout')", 0, NULL);
    is_str(r.v0, "20s", "second setup statement ran too");
    r = query(db, "CREATE TEMP TABLE IF NOT EXISTS t_x(a int)", 0, NULL);
    is_int(r.status, PGRES_COMMAND_OK, "COMMAND_OK for DDL");
}

static const char *tricky[] = {
    "it's", "$$dollar$$ quoting $1", "back\\slash \\\\ double", NULL, "emoji 🦀🎉 and 日本語",
    "", "tab\tand\nnewline\r\n", "\"double\" quotes", "E'\\x41' not an escape", "'; DROP TABLE x; --",
};
#define NTRICKY (int)(sizeof tricky / sizeof tricky[0])

typedef struct { int idx; int calls; int good; int order; } many_t;
static int many_seq;
static void many_cb(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    many_t *m = ud;
    m->calls++;
    m->order = many_seq++;
    const char *want = tricky[m->idx % NTRICKY];
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) { m->good = 0; return; }
    int null_ok = want ? !PQgetisnull(res, 0, 0) && !strcmp(PQgetvalue(res, 0, 0), want)
                       : PQgetisnull(res, 0, 0);
    m->good = null_ok && atoi(PQgetvalue(res, 0, 1)) == m->idx;
}

static int run_many(kgx_db_t *db, many_t *m, int n)
{
    many_seq = 0;
    for (int i = 0; i < n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        const char *p[2] = { tricky[i % NTRICKY], num };
        m[i] = (many_t){ .idx = i };
        if (kgx_db_query(db, "SELECT $1::text AS v, $2::int AS i", 2, p, many_cb, &m[i]) != 0) return -1;
    }
    return run_until(&many_seq, n, 30000) ? 0 : -1;
}

static void t_many(kgx_db_t *db, kgx_db_t *db1)
{
    static many_t m[200];
    ok(run_many(db, m, 200) == 0, "200 queued statements complete");
    int once = 1, good = 1;
    for (int i = 0; i < 200; i++) { once &= m[i].calls == 1; good &= m[i].good; }
    ok(once, "each callback exactly once");
    ok(good, "params round-trip exactly (quotes, $$, backslashes, NULL, emoji)");
    is_int(kgx_db_pending(db), 0, "nothing pending");

    ok(run_until(&state_up, 2, 10000), "single-connection pool up");
    ok(run_many(db1, m, 60) == 0, "60 statements on a 1-connection pool");
    int in_order = 1;
    for (int i = 0; i < 60; i++) in_order &= m[i].order == i && m[i].good;
    ok(in_order, "one connection: completions in FIFO order");
}

static void t_errors(kgx_db_t *db)
{
    rec_t r = query(db, "SELEC 1", 0, NULL);
    ok(r.has_res, "syntax error still has a result");
    is_int(r.status, PGRES_FATAL_ERROR, "FATAL_ERROR");
    is_str(r.sqlstate, "42601", "sqlstate 42601");
    ok(strstr(r.err, "syntax error") && !strchr(r.err, '\n'), "err one line: %s", r.err);

    r = query(db, "SELECT 1/$1::int", 1, (const char *const[]){ "0" });
    is_int(r.status, PGRES_FATAL_ERROR, "division by zero FATAL_ERROR");
    is_str(r.sqlstate, "22012", "sqlstate 22012");
    ok(strstr(r.err, "division by zero") != NULL, "err: %s", r.err);

    r = query(db, "SELECT 'ok'", 0, NULL);
    is_str(r.v0, "ok", "connection usable after errors");
    is_str(r.err, "", "no err on success");

    ok(kgx_db_query(db, NULL, 0, NULL, rec_cb, &r) < 0, "NULL sql rejected synchronously");

    /* a 4 MB parameter does not fit the socket buffer: exercises the PQflush/writable path */
    size_t n = 4u << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++) big[i] = i % 2 ? 'b' : 'a';
    big[n] = '\0';
    r = query(db, "SELECT length($1)::text, ($1 = repeat('ab', 2097152))::text", 1, (const char *const[]){ big });
    free(big);
    is_str(r.v0, "4194304", "4 MB parameter arrives whole");
    is_str(r.v1, "true", "4 MB parameter arrives intact");
}

static void t_parallel(kgx_db_t *db)
{
    rec_t a = { 0 }, b = { 0 };
    const char *sql = "SELECT pg_backend_pid()::text, pg_sleep(0.3)::text";
    kgx_db_query(db, sql, 0, NULL, rec_cb, &a);
    kgx_db_query(db, sql, 0, NULL, rec_cb, &b);
    is_int(kgx_db_pending(db), 2, "2 pending");
    uint64_t t0 = uv_hrtime();
    int both = 0;
    while (both < 2 && uv_hrtime() - t0 < 10000000000ull) { run_until(&a.calls, 1, 50); both = a.calls + b.calls; }
    diag("two pg_sleep(0.3) took %.0f ms", (double)(uv_hrtime() - t0) / 1e6);
    is_int(a.calls + b.calls, 2, "both finish");
    ok(a.v0[0] && b.v0[0] && strcmp(a.v0, b.v0) != 0, "ran on two backends (%s, %s)", a.v0, b.v0);
}

/* Waits (running the loop) until the side connection sees n kgx-test backends running sql_like. */
static int wait_active(const char *like, int n)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kgx-test' "
             "AND state = 'active' AND query LIKE '%s'", like);
    for (int i = 0; i < 200; i++) {
        if (side_count(sql) >= n) return 1;
        run_for(25);
    }
    return 0;
}

static rec_t requeued;
static kgx_db_t *loss_db;
static void lost_cb(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    rec_cb(res, err, sqlstate, ud);
    /* queued while the pool is down: must wait for the reconnect, not fail */
    if (!res) kgx_db_query(loss_db, "SELECT current_setting('application_name'), pg_backend_pid()::text",
                           0, NULL, rec_cb, &requeued);
}

static void t_loss(kgx_db_t *db)
{
    rec_t a = { 0 }, b = { 0 };
    int up0 = state_up, down0 = state_down;
    loss_db = db;
    kgx_db_query(db, "SELECT pg_sleep(10)", 0, NULL, lost_cb, &a);
    kgx_db_query(db, "SELECT pg_sleep(10)", 0, NULL, rec_cb, &b);
    ok(wait_active("SELECT pg_sleep(10)%", 2), "both pool connections are sleeping");
    int killed = side_count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'kgx-test' AND query LIKE 'SELECT pg_sleep(10)%'");
    is_int(killed, 2, "terminated both pool backends");
    run_until(&b.calls, 1, 5000);
    run_until(&a.calls, 1, 5000);
    is_int(a.calls, 1, "running statement's callback once");
    ok(!a.has_res, "res NULL on connection loss");
    ok(!strncmp(a.err, "connection lost", 15), "err: %s", a.err);
    ok(!b.has_res && !strncmp(b.err, "connection lost", 15), "other statement too: %s", b.err);
    ok(run_until(&state_down, down0 + 1, 5000), "on_state(0) when no connection is left: %s", state_err);
    ok(run_until(&state_up, up0 + 1, 10000), "on_state(1) after reconnecting by itself");
    ok(run_until(&requeued.calls, 1, 10000), "statement queued while down completes");
    is_int(requeued.status, PGRES_TUPLES_OK, "and succeeds");
    is_str(requeued.v0, "kgx-test", "setup re-run on the new connection");
    rec_t c = query(db, "SELECT 42", 0, NULL);
    is_str(c.v0, "42", "next statement succeeds");
}

/* ---- LISTEN ---- */

static int n_null, n_notes;
static char last_payload[256], last_channel[256];
static void note_cb(const char *channel, const char *payload, void *ud)
{
    if (!channel) { n_null++; return; }
    n_notes++;
    snprintf(last_channel, sizeof last_channel, "%s", channel);
    snprintf(last_payload, sizeof last_payload, "%s", payload ? payload : "(null)");
}

static void notify(const char *chan, const char *payload)
{
    const char *p[2] = { chan, payload };
    PQclear(side_exec("SELECT pg_notify($1, $2)", 2, p));
}

static void t_listen(kgx_db_t *db)
{
    const char *chan = "kgx \"odd\" Chan";   /* needs identifier quoting, keeps its case */
    is_int(kgx_db_listen(db, chan, note_cb, NULL), 0, "kgx_db_listen");
    ok(run_until(&n_null, 1, 10000), "notify cb with channel NULL once listening");
    notify(chan, "payload 🦀 'x'");
    ok(run_until(&n_notes, 1, 5000), "notification delivered");
    is_str(last_channel, chan, "channel name");
    is_str(last_payload, "payload 🦀 'x'", "payload");
    notify("other_channel", "nope");
    run_for(200);
    is_int(n_notes, 1, "other channels not delivered");

    int killed = side_count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'kgx-test' AND query LIKE 'LISTEN%'");
    is_int(killed, 1, "terminated the LISTEN connection");
    ok(run_until(&n_null, 2, 10000), "notify cb with channel NULL after the reconnect");
    notify(chan, "after reconnect");
    ok(run_until(&n_notes, 2, 5000), "notification after reconnect delivered");
    is_str(last_payload, "after reconnect", "payload after reconnect");
    rec_t r = query(db, "SELECT 1", 0, NULL);
    is_str(r.v0, "1", "pool unaffected by the LISTEN connection loss");
}

/* ---- down database, free with pending work ---- */

static void t_down(void)
{
    int down0 = state_down, up0 = state_up;
    kgx_db_opts_t o = { .dsn = "host=127.0.0.1 port=1 connect_timeout=2", .pool_size = 1,
                        .on_state = state_cb };
    kgx_db_t *db = kgx_db_new(&loop, &o);
    ok(db != NULL, "kgx_db_new on an unreachable server still returns a handle");
    rec_t r = { 0 };
    is_int(kgx_db_query(db, "SELECT 1", 0, NULL, rec_cb, &r), 0, "query queued");
    ok(run_until(&state_down, down0 + 1, 5000), "on_state(0) for a server that is down: %s", state_err);
    ok(strstr(state_err, "refused") != NULL, "err says why");
    run_for(300);
    is_int(r.calls, 0, "queued statement waits, no callback");
    is_int(kgx_db_pending(db), 1, "1 pending");
    ok(!kgx_db_is_up(db), "not up");
    is_int(state_up, up0, "never up");
    kgx_db_free(db);
    run_for(50);
    is_int(r.calls, 0, "kgx_db_free drops pending statements without callbacks");
    kgx_db_free(NULL);
}

static void t_blocking(const char *dsn)
{
    char err[256];
    PGconn *c = kgx_db_connect_blocking(dsn, setup, err, sizeof err);
    ok(c != NULL, "connect_blocking");
    if (c) {
        PGresult *r = PQexec(c, "SELECT current_setting('application_name')");
        is_str(PQgetvalue(r, 0, 0), "kgx-test", "connect_blocking ran setup_sql");
        PQclear(r);
        PQfinish(c);
    }
    const char *bad[] = { "SELECT 1", "SELEC 2", NULL };
    c = kgx_db_connect_blocking(dsn, bad, err, sizeof err);
    ok(c == NULL && strstr(err, "setup statement 2") && !strchr(err, '\n'), "bad setup: %s", err);
    c = kgx_db_connect_blocking("host=127.0.0.1 port=1", NULL, err, sizeof err);
    ok(c == NULL && err[0] && !strchr(err, '\n'), "unreachable: %s", err);
}

static rec_t pquery(kgx_db_t *db, const char *sql, int n, const char *const *params)
{
    rec_t r = { 0 };
    if (kgx_db_query_prepared(db, sql, n, params, rec_cb, &r) != 0) { r.calls = -1; return r; }
    run_until(&r.calls, 1, 15000);
    return r;
}

/* Prepared statements (one connection): made at the first use, reused after, made again in a new
 * session and after the session lost them; a bad one fails like any statement. */
static void t_prepared(const char *dsn)
{
    int up0 = state_up;
    kgx_db_opts_t o = { .dsn = dsn, .pool_size = 1, .setup_sql = setup, .on_state = state_cb };
    kgx_db_t *db = kgx_db_new(&loop, &o);
    ok(run_until(&state_up, up0 + 1, 10000), "prepared: pool up");
    const char *sql = "SELECT $1::int * 2, (SELECT count(*) FROM pg_prepared_statements)";
    const char *p1[] = { "21" }, *p2[] = { "50" };
    rec_t r = pquery(db, sql, 1, p1);
    is_int(r.status, PGRES_TUPLES_OK, "prepared: runs");
    is_str(r.v0, "42", "prepared: result");
    is_str(r.v1, "1", "prepared: the session holds one prepared statement");
    r = pquery(db, sql, 1, p2);
    is_str(r.v0, "100", "prepared: second call, other parameter");
    is_str(r.v1, "1", "prepared: the same statement reused (still one)");
    r = pquery(db, "SELECT $1::text || 'x', (SELECT count(*) FROM pg_prepared_statements)", 1, p1);
    is_str(r.v0, "21x", "prepared: another text");
    is_str(r.v1, "2", "prepared: its own statement");
    r = query(db, "SELECT count(*) FROM pg_prepared_statements", 0, NULL);
    is_str(r.v0, "2", "unnamed statements prepare nothing");

    /* the session loses them: the next call fails once (its error, as for any statement), then
     * works again, prepared anew */
    query(db, "DEALLOCATE ALL", 0, NULL);
    r = pquery(db, sql, 1, p1);
    is_str(r.sqlstate, "26000", "prepared: a statement the session lost fails: %s", r.err);
    r = pquery(db, sql, 1, p1);
    is_int(r.status, PGRES_TUPLES_OK, "prepared: and is prepared again at its next use");
    is_str(r.v0, "42", "prepared: result after preparing again");

    /* a new session (the backend killed) has none: prepared again, transparently */
    int killed = side_count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'kgx-test' AND query LIKE '%pg_prepared_statements%'");
    is_int(killed, 1, "prepared: the pool's backend terminated");
    r = pquery(db, sql, 1, p2);
    if (r.status != PGRES_TUPLES_OK) r = pquery(db, sql, 1, p2);   /* the first may see the loss */
    is_int(r.status, PGRES_TUPLES_OK, "prepared: runs in the new session");
    is_str(r.v0, "100", "prepared: result in the new session");
    is_str(r.v1, "1", "prepared: made there anew");

    /* a statement that cannot be prepared fails with its error; the connection goes on */
    r = pquery(db, "SELECT * FROM kgx_no_such_table WHERE a = $1", 1, p1);
    ok(r.calls == 1 && strstr(r.err, "kgx_no_such_table"), "prepared: a bad statement fails: %s", r.err);
    is_str(r.sqlstate, "42P01", "prepared: with its SQLSTATE");
    r = pquery(db, sql, 1, p1);
    is_str(r.v0, "42", "prepared: the connection goes on");
    kgx_db_free(db);
}

/* Free from inside a statement callback, with work still queued and running. */
static kgx_db_t *free_db;
static int free_calls;
static void free_cb(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    free_calls++;
    kgx_db_free(free_db);
}

static void t_free_in_cb(const char *dsn)
{
    kgx_db_opts_t o = { .dsn = dsn, .pool_size = 2, .setup_sql = setup };
    free_db = kgx_db_new(&loop, &o);
    kgx_db_listen(free_db, "kgx_free_test", note_cb, NULL);
    kgx_db_query(free_db, "SELECT 1", 0, NULL, free_cb, NULL);
    kgx_db_query(free_db, "SELECT pg_sleep(0.2)", 0, NULL, free_cb, NULL);
    kgx_db_query(free_db, "SELECT 3", 0, NULL, free_cb, NULL);
    run_until(&free_calls, 1, 10000);
    run_for(400);
    is_int(free_calls, 1, "kgx_db_free inside a callback: no further callbacks");
}

int main(void)
{
    const char *dsn = getenv("KGX_TEST_DSN");
    if (!dsn || !*dsn) {
        ok(0, "KGX_TEST_DSN is set (eval \"$(scripts/sandbox-db up)\")");
        return done_testing();
    }
    char err[256];
    side = kgx_db_connect_blocking(dsn, NULL, err, sizeof err);
    if (!side) {
        ok(0, "side connection: %s", err);
        return done_testing();
    }
    uv_loop_init(&loop);

    t_blocking(dsn);
    kgx_db_opts_t o = { .dsn = dsn, .pool_size = 2, .setup_sql = setup, .on_state = state_cb };
    kgx_db_t *db = kgx_db_new(&loop, &o);
    ok(db != NULL, "kgx_db_new");
    kgx_db_opts_t o1 = { .dsn = dsn, .pool_size = 1, .setup_sql = setup, .on_state = state_cb };

    t_setup(db);
    kgx_db_t *db1 = kgx_db_new(&loop, &o1);
    t_many(db, db1);
    kgx_db_free(db1);
    t_errors(db);
    t_parallel(db);
    t_listen(db);
    t_loss(db);

    /* free with a statement running and more queued: no callbacks */
    rec_t r1 = { 0 }, r2 = { 0 };
    kgx_db_query(db, "SELECT pg_sleep(0.5)", 0, NULL, rec_cb, &r1);
    kgx_db_query(db, "SELECT pg_sleep(0.5)", 0, NULL, rec_cb, &r2);
    kgx_db_query(db, "SELECT pg_sleep(0.5)", 0, NULL, rec_cb, &r2);
    run_for(100);
    kgx_db_free(db);
    run_for(100);
    is_int(r1.calls + r2.calls, 0, "kgx_db_free: running and queued statements get no callback");

    t_down();
    t_prepared(dsn);
    t_free_in_cb(dsn);

    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "loop closes: no handles left");
    PQfinish(side);
    return done_testing();
}
