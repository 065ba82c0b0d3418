/* db — see db.h. Non-blocking libpq connections driven by uv_poll_t (the blocking connections and
 * the errors by class are db_open.c's).
 *
 * Each connection moves DOWN → CONNECTING (PQconnectPoll) → SETUP (setup_sql, then LISTENs on
 * the listen connection, one PQsendQuery at a time) → IDLE ⇄ BUSY (one user statement), and
 * back to DOWN on any failure, from where a timer reconnects it with backoff.
 *
 * Reentrancy: user callbacks may queue statements, add LISTENs or free the handle. Queued
 * statements are dispatched from a zero-delay timer (never from inside kgx_db_query, so that a
 * send failure cannot call back into the caller of kgx_db_query), and every loop callback
 * brackets its work with db_enter/db_leave so that kgx_db_free from inside a callback only
 * releases memory once the outermost callback returns. */
#include "db.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000
/* Statements queued with kgx_db_query_prepared are parsed and planned once per connection (a named
 * prepared statement, made at its first use there) instead of at every call: the write function's
 * call cost 0.14-0.16 ms as an unnamed statement and 0.10 ms prepared (pgbench, -M extended vs -M
 * prepared). Up to DB_PREP_MAX texts per connection; later ones run unnamed. */
#define DB_PREP_MAX 16

enum conn_state { C_DOWN, C_CONNECTING, C_SETUP, C_IDLE, C_BUSY };

typedef struct db_stmt {
    char *sql;
    int prepare;                 /* kgx_db_query_prepared */
    int nparams;
    char **params;
    kgx_db_cb cb;
    void *ud;
    struct db_stmt *next;
} db_stmt_t;

typedef struct db_listen {
    char *channel;
    kgx_db_notify_cb cb;
    void *ud;
    struct db_listen *next;
} db_listen_t;

typedef struct db_conn {
    kgx_db_t *db;
    int id;                      /* for logs; the listen connection is -1 */
    int is_listen;
    enum conn_state state;
    PGconn *pg;
    uv_poll_t *poll;             /* separate allocation, freed in its close callback */
    int poll_fd;
    uv_timer_t *timer;           /* reconnect backoff; separate allocation */
    int backoff_ms;
    int setup_idx;               /* next setup item: setup_sql[0..n), then listen channels */
    db_stmt_t *running;          /* user statement in flight (state C_BUSY) */
    PGresult *res;               /* result kept for the statement in flight */
    char fatal[256];             /* last FATAL notice: why the server is about to close */
    struct { char *sql; unsigned id; } prep[DB_PREP_MAX];   /* prepared in this session as kgx_<id> */
    int nprep;
    unsigned prep_seq;           /* names are never reused: a forgotten one may still exist there */
    int preparing;               /* 1 + the prep[] entry whose PREPARE is in flight (state C_BUSY) */
} db_conn_t;

struct kgx_db {
    uv_loop_t *loop;
    char *dsn;
    char **setup;                /* NULL-terminated copy */
    int nsetup;
    kgx_db_state_cb on_state;
    void *state_ud;
    const char *label;           /* (static) a second pool's name in its log lines */
    int reported;                /* last state reported: -1 none yet, 0 down, 1 up */
    int pool_size;
    db_conn_t **pool;
    db_conn_t *listen;           /* NULL until kgx_db_listen */
    db_listen_t *channels;       /* in registration order */
    int nchannels;
    db_stmt_t *q_head, *q_tail;  /* waiting statements */
    size_t queued, running;
    uv_timer_t *kick;            /* zero-delay dispatch */
    int depth;                   /* nesting of loop callbacks */
    int closing;
    uint64_t fail_logged_at;     /* last error line for a refused connection (uv_now ms) */
};

static void conn_lost(db_conn_t *c, const char *why);
static void conn_next_setup(db_conn_t *c);
static void on_poll(uv_poll_t *p, int status, int events);

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void stmt_free(db_stmt_t *s)
{
    if (!s) return;
    for (int i = 0; i < s->nparams; i++) free(s->params[i]);
    free(s->params);
    free(s->sql);
    free(s);
}

static void handle_free_cb(uv_handle_t *h) { free(h); }

static void db_enter(kgx_db_t *db) { db->depth++; }

static void db_release(kgx_db_t *db)
{
    for (int i = 0; i < db->pool_size; i++) free(db->pool[i]);
    free(db->pool);
    free(db->listen);
    for (int i = 0; db->setup && i < db->nsetup; i++) free(db->setup[i]);
    free(db->setup);
    free(db->dsn);
    free(db);
}

static void db_leave(kgx_db_t *db)
{
    if (--db->depth == 0 && db->closing) db_release(db);
}

static int pool_ready(const kgx_db_t *db)
{
    for (int i = 0; i < db->pool_size; i++)
        if (db->pool[i]->state == C_IDLE || db->pool[i]->state == C_BUSY) return 1;
    return 0;
}

/* Reports up/down transitions to the owner. May run user code: callers check db->closing. */
static void report_state(kgx_db_t *db, const char *err)
{
    int up = pool_ready(db);
    if (up == db->reported) return;
    db->reported = up;
    if (up) log_info("db %s%sup", db->label ? db->label : "", db->label ? " " : "");
    else log_warn("db %s%sdown: %s", db->label ? db->label : "", db->label ? " " : "", err ? err : "no connection");
    if (db->on_state) db->on_state(up, up ? NULL : (err ? err : "no connection"), db->state_ud);
}

static void kick_cb(uv_timer_t *t);

static void kick(kgx_db_t *db)
{
    if (!db->closing && db->q_head) uv_timer_start(db->kick, kick_cb, 0, 0);
}

/* ---- polling ---- */

static void poll_close(db_conn_t *c)
{
    if (!c->poll) return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, handle_free_cb);
    c->poll = NULL;
}

/* Watches PQsocket for events. rearm forces an epoll re-registration: while connecting, libpq may
 * close its socket and open a new one that gets the same fd number. */
static int conn_watch(db_conn_t *c, int events, int rearm)
{
    int fd = PQsocket(c->pg);
    if (fd < 0) return -1;
    if (c->poll && c->poll_fd != fd) poll_close(c);
    if (!c->poll) {
        c->poll = malloc(sizeof *c->poll);
        if (!c->poll) return -1;
        if (uv_poll_init_socket(c->db->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return -1;
        }
        c->poll->data = c;
        c->poll_fd = fd;
    } else if (rearm) {
        uv_poll_stop(c->poll);
    }
    return uv_poll_start(c->poll, events, on_poll) == 0 ? 0 : -1;
}

/* ---- connecting ---- */

/* The session's prepared statements are gone with it (or no longer usable: see conn_stmt_done). */
static void prep_forget(db_conn_t *c)
{
    for (int i = 0; i < c->nprep; i++) free(c->prep[i].sql);
    c->nprep = 0;
    c->preparing = 0;
}

static int prep_find(const db_conn_t *c, const char *sql)
{
    for (int i = 0; i < c->nprep; i++)
        if (!strcmp(c->prep[i].sql, sql)) return i;
    return -1;
}

static void prep_name(char *buf, size_t len, unsigned id) { snprintf(buf, len, "kgx_%u", id); }

static int send_prepared(db_conn_t *c, const db_stmt_t *s, unsigned id)
{
    char name[32];
    prep_name(name, sizeof name, id);
    return PQsendQueryPrepared(c->pg, name, s->nparams, (const char *const *)s->params, NULL, NULL, 0);
}

static void conn_close(db_conn_t *c)
{
    prep_forget(c);
    poll_close(c);                      /* before PQfinish closes the fd */
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    if (c->res) PQclear(c->res);
    c->res = NULL;
    c->state = C_DOWN;
}

/* Notices go to the log instead of libpq's stderr default. A FATAL error sent while the
 * connection is idle (pg_terminate_backend, shutdown) arrives this way before the close. */
static void notice_cb(void *arg, const char *message)
{
    db_conn_t *c = arg;
    char line[256];
    kgx_db_first_line(message, line, sizeof line);
    if (!strncmp(line, "FATAL", 5)) snprintf(c->fatal, sizeof c->fatal, "%s", line);
    log_debug("db notice conn=%d: %s", c->id, line);
}

static void conn_start(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    c->fatal[0] = '\0';
    c->pg = PQconnectStart(db->dsn);
    if (!c->pg) { conn_lost(c, "out of memory"); return; }
    PQsetNoticeProcessor(c->pg, notice_cb, c);
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);   /* a refusal's SQLSTATE (see conn_lost) */
    if (PQstatus(c->pg) == CONNECTION_BAD) { conn_lost(c, PQerrorMessage(c->pg)); return; }
    c->state = C_CONNECTING;
    /* as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    if (conn_watch(c, UV_WRITABLE, 1) < 0) conn_lost(c, "cannot poll the connection socket");
}

static void timer_cb(uv_timer_t *t)
{
    db_conn_t *c = t->data;
    kgx_db_t *db = c->db;
    db_enter(db);
    if (!db->closing && c->state == C_DOWN) conn_start(c);
    db_leave(db);
}

static void conn_connect_step(db_conn_t *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (conn_watch(c, UV_READABLE, 1) < 0) conn_lost(c, "cannot poll the connection socket");
        return;
    case PGRES_POLLING_WRITING:
        if (conn_watch(c, UV_WRITABLE, 1) < 0) conn_lost(c, "cannot poll the connection socket");
        return;
    case PGRES_POLLING_OK:
        PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
        if (PQsetnonblocking(c->pg, 1) != 0) { conn_lost(c, PQerrorMessage(c->pg)); return; }
        c->state = C_SETUP;
        c->setup_idx = 0;
        conn_next_setup(c);
        return;
    default:
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
}

/* ---- sending and reading ---- */

/* After a send: flush, then wait for the answer (and for writability while output remains). */
static int conn_flush(db_conn_t *c)
{
    int r = PQflush(c->pg);
    if (r < 0) return -1;
    return conn_watch(c, r == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE, 0);
}

static void conn_ready(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    c->state = C_IDLE;
    c->backoff_ms = DB_BACKOFF_MIN_MS;
    if (c->is_listen) {
        log_info("db listen connection ready channels=%d", db->nchannels);
        /* channel NULL: (re)connected, re-check for work whose notification may have been missed */
        for (db_listen_t *l = db->channels; l; l = l->next) {
            if (l->cb) l->cb(NULL, NULL, l->ud);
            if (db->closing) return;
        }
        return;
    }
    log_debug("db connection %d ready", c->id);
    report_state(db, NULL);
    if (db->closing) return;
    kick(db);
}

/* Sends setup item c->setup_idx, or marks the connection ready when none is left. */
static void conn_next_setup(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    int total = db->nsetup + (c->is_listen ? db->nchannels : 0);
    if (c->setup_idx >= total) { conn_ready(c); return; }
    int ok;
    if (c->setup_idx < db->nsetup) {
        ok = PQsendQuery(c->pg, db->setup[c->setup_idx]);
    } else {
        db_listen_t *l = db->channels;
        for (int i = db->nsetup; i < c->setup_idx; i++) l = l->next;
        char *id = PQescapeIdentifier(c->pg, l->channel, strlen(l->channel));
        if (!id) { conn_lost(c, PQerrorMessage(c->pg)); return; }
        size_t n = strlen(id) + 8;
        char *sql = malloc(n);
        if (!sql) { PQfreemem(id); conn_lost(c, "out of memory"); return; }
        snprintf(sql, n, "LISTEN %s", id);
        PQfreemem(id);
        ok = PQsendQuery(c->pg, sql);
        free(sql);
    }
    c->state = C_SETUP;
    if (!ok || conn_flush(c) < 0) conn_lost(c, PQerrorMessage(c->pg));
}

/* Sends c->running (or, for a statement to prepare here first, its PREPARE). */
static int conn_send(db_conn_t *c, db_stmt_t *s)
{
    if (s->prepare) {
        int k = prep_find(c, s->sql);
        if (k >= 0) return send_prepared(c, s, c->prep[k].id);
        if (c->nprep < DB_PREP_MAX) {
            char name[32];
            k = c->nprep;
            c->prep[k].id = ++c->prep_seq;
            c->prep[k].sql = NULL;              /* recorded once the server has it */
            prep_name(name, sizeof name, c->prep[k].id);
            c->preparing = k + 1;
            return PQsendPrepare(c->pg, name, s->sql, s->nparams, NULL);
        }
    }
    return PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, (const char *const *)s->params, NULL, NULL, 0);
}

static void conn_run_failed(db_conn_t *c, db_stmt_t *s);

/* Starts stmt on the idle connection c. */
static void conn_run(db_conn_t *c, db_stmt_t *s)
{
    c->state = C_BUSY;
    c->running = s;
    c->db->running++;
    if (!conn_send(c, s)) {
        conn_run_failed(c, s);
        return;
    }
    if (conn_flush(c) < 0) conn_lost(c, PQerrorMessage(c->pg));
}

/* A send that failed: refused locally (e.g. bad params), only this statement fails; else the
 * connection is gone. */
static void conn_run_failed(db_conn_t *c, db_stmt_t *s)
{
    kgx_db_t *db = c->db;
    c->preparing = 0;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    char err[512];
    kgx_db_first_line(PQerrorMessage(c->pg), err, sizeof err);
    c->running = NULL;
    db->running--;
    c->state = C_IDLE;
    if (s->cb) s->cb(NULL, err, NULL, s->ud);
    stmt_free(s);
    kick(db);
}

static void dispatch(kgx_db_t *db)
{
    while (!db->closing && db->q_head) {
        db_conn_t *c = NULL;
        for (int i = 0; i < db->pool_size && !c; i++)
            if (db->pool[i]->state == C_IDLE) c = db->pool[i];
        if (!c) return;
        db_stmt_t *s = db->q_head;
        db->q_head = s->next;
        if (!db->q_head) db->q_tail = NULL;
        s->next = NULL;
        db->queued--;
        conn_run(c, s);
    }
}

static void kick_cb(uv_timer_t *t)
{
    kgx_db_t *db = t->data;
    db_enter(db);
    dispatch(db);
    db_leave(db);
}

static int is_error_result(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR;
}

/* The statement in flight on c has all its results: finish it. */
static void conn_stmt_done(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    PGresult *res = c->res;
    c->res = NULL;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        /* e.g. pg_terminate_backend: the FATAL error arrives as the statement's result */
        char why[512];
        kgx_db_first_line(res && is_error_result(res) ? PQresultErrorMessage(res) : PQerrorMessage(c->pg),
                   why, sizeof why);
        if (res) PQclear(res);
        conn_lost(c, why);
        return;
    }
    if (c->state == C_SETUP) {
        if (res && is_error_result(res)) {
            char why[512], msg[600];
            kgx_db_first_line(PQresultErrorMessage(res), why, sizeof why);
            snprintf(msg, sizeof msg, "setup statement %d failed: %s", c->setup_idx + 1, why);
            PQclear(res);
            conn_lost(c, msg);
            return;
        }
        if (res) PQclear(res);
        c->setup_idx++;
        conn_next_setup(c);
        return;
    }
    if (c->preparing && res && !is_error_result(res)) {
        /* the statement is prepared here now: run it */
        int k = c->preparing - 1;
        c->preparing = 0;
        PQclear(res);
        if ((c->prep[k].sql = xstrdup(c->running->sql))) c->nprep++;
        if (!send_prepared(c, c->running, c->prep[k].id)) conn_run_failed(c, c->running);
        else if (conn_flush(c) < 0) conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    c->preparing = 0;           /* (a PREPARE that failed: the statement gets its error) */
    db_stmt_t *s = c->running;
    c->running = NULL;
    db->running--;
    c->state = C_IDLE;
    char err[512];
    const char *e = NULL, *sqlstate = NULL;
    if (res && is_error_result(res)) {
        e = kgx_db_first_line(PQresultErrorMessage(res), err, sizeof err);
        sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        /* a prepared statement the session no longer has (26000), or whose plan the schema changed
         * under it (0A000, "cached plan must not change result type"): prepared again next time */
        if (s && s->prepare && sqlstate && (!strcmp(sqlstate, "26000") || !strcmp(sqlstate, "0A000")))
            prep_forget(c);
    } else if (!res) {
        e = "no result";
    }
    if (s && s->cb) s->cb(res, e, sqlstate, s->ud);
    if (res) PQclear(res);
    stmt_free(s);
    if (db->closing) return;
    kick(db);
}

static void conn_notifies(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    PGnotify *n;
    while (c->pg && (n = PQnotifies(c->pg))) {
        for (db_listen_t *l = c->is_listen ? db->channels : NULL; l; l = l->next) {
            if (!l->cb || strcmp(l->channel, n->relname)) continue;
            l->cb(n->relname, n->extra, l->ud);
            if (db->closing) break;          /* the list is gone */
        }
        PQfreemem(n);
        if (db->closing) return;
    }
}

static void conn_readable(db_conn_t *c)
{
    kgx_db_t *db = c->db;
    if (!PQconsumeInput(c->pg)) { conn_lost(c, PQerrorMessage(c->pg)); return; }
    conn_notifies(c);
    if (db->closing || !c->pg) return;
    if (c->state == C_SETUP || c->state == C_BUSY) {
        while (!PQisBusy(c->pg)) {
            PGresult *r = PQgetResult(c->pg);
            if (!r) { conn_stmt_done(c); return; }
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                PQclear(r);
                conn_lost(c, "COPY is not supported");
                return;
            }
            /* keep the first error if any, else the last result */
            if (c->res && is_error_result(c->res)) PQclear(r);
            else { if (c->res) PQclear(c->res); c->res = r; }
        }
    } else if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->pg));
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    db_conn_t *c = p->data;
    kgx_db_t *db = c->db;
    db_enter(db);
    if (status < 0) {
        /* libuv reports EPOLLERR as UV_EBADF (the poll is stopped): let libpq find the real cause */
        char why[256];
        snprintf(why, sizeof why, "socket error: %s", uv_strerror(status));
        if (c->state == C_CONNECTING) conn_connect_step(c);
        else if (c->pg) conn_readable(c);
        if (!db->closing && c->poll == p) conn_lost(c, why);
    } else if (c->state == C_CONNECTING) {
        conn_connect_step(c);
    } else if (c->pg) {
        if (events & UV_WRITABLE) {
            if (conn_flush(c) < 0) { conn_lost(c, PQerrorMessage(c->pg)); goto out; }
        }
        if (events & UV_READABLE) conn_readable(c);
    }
out:
    db_leave(db);
}

/* Closes c, fails its statement, schedules the reconnect. May run user callbacks. */
static void conn_lost(db_conn_t *c, const char *why)
{
    kgx_db_t *db = c->db;
    char msg[600], line[512];
    enum conn_state was = c->state;
    if (was == C_CONNECTING) {
        /* a refusal an operator must fix (wrong password, unknown role or database): one error line
         * naming the fix, at most every 30 s, while the reconnects go on with their backoff */
        char code[6];
        kgx_db_message_sqlstate(why, code);
        kgx_db_fail_t f = kgx_db_classify(code[0] ? code : NULL, why);
        kgx_db_class_error(line, sizeof line, "", why, code, f);
        uint64_t now = uv_now(db->loop);
        if (kgx_db_fail_permanent(f) && (!db->fail_logged_at || now - db->fail_logged_at >= 30000)) {
            db->fail_logged_at = now;
            log_err("database: %s", line);
        }
    } else {
        kgx_db_first_line(c->fatal[0] ? c->fatal : why, line, sizeof line);
    }
    conn_close(c);
    int delay = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : c->backoff_ms * 2;
    uv_timer_start(c->timer, timer_cb, (uint64_t)delay, 0);
    if (c->is_listen) log_warn("db listen connection lost: %s (retry in %d ms)", line, delay);
    else if (was == C_IDLE || was == C_BUSY) log_warn("db connection %d lost: %s (retry in %d ms)", c->id, line, delay);
    else log_debug("db connection %d failed: %s (retry in %d ms)", c->id, line, delay);

    db_stmt_t *s = c->running;
    c->running = NULL;
    if (s) {
        db->running--;
        snprintf(msg, sizeof msg, "connection lost: %s", line);
        if (s->cb) s->cb(NULL, msg, NULL, s->ud);
        stmt_free(s);
        if (db->closing) return;
    }
    if (!c->is_listen) report_state(db, line);
}

/* ---- API ---- */

static db_conn_t *conn_new(kgx_db_t *db, int id, int is_listen)
{
    db_conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->timer = malloc(sizeof *c->timer);
    if (!c->timer) { free(c); return NULL; }
    c->db = db;
    c->id = id;
    c->is_listen = is_listen;
    c->state = C_DOWN;
    c->backoff_ms = DB_BACKOFF_MIN_MS;
    uv_timer_init(db->loop, c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, timer_cb, 0, 0);   /* connect from the loop, not from here */
    return c;
}

kgx_db_t *kgx_db_new(uv_loop_t *loop, const kgx_db_opts_t *opts)
{
    if (!loop || !opts || !opts->dsn) return NULL;
    kgx_db_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->loop = loop;
    db->reported = -1;
    db->on_state = opts->on_state;
    db->state_ud = opts->state_ud;
    db->label = opts->label;
    db->pool_size = opts->pool_size > 0 ? opts->pool_size : 2;
    db->dsn = xstrdup(opts->dsn);
    if (opts->setup_sql)
        while (opts->setup_sql[db->nsetup]) db->nsetup++;
    db->setup = calloc((size_t)db->nsetup + 1, sizeof *db->setup);
    db->pool = calloc((size_t)db->pool_size, sizeof *db->pool);
    db->kick = malloc(sizeof *db->kick);
    if (!db->dsn || !db->setup || !db->pool || !db->kick) goto fail;
    for (int i = 0; i < db->nsetup; i++)
        if (!(db->setup[i] = xstrdup(opts->setup_sql[i]))) goto fail;
    uv_timer_init(loop, db->kick);
    db->kick->data = db;
    for (int i = 0; i < db->pool_size; i++) {
        if (!(db->pool[i] = conn_new(db, i, 0))) {
            kgx_db_free(db);
            return NULL;
        }
    }
    return db;
fail:
    free(db->kick);
    db->kick = NULL;
    db->pool_size = 0;
    db_release(db);
    return NULL;
}

static void conn_shutdown(db_conn_t *c)
{
    if (!c) return;
    conn_close(c);
    stmt_free(c->running);
    c->running = NULL;
    uv_timer_stop(c->timer);
    uv_close((uv_handle_t *)c->timer, handle_free_cb);
    c->timer = NULL;
}

void kgx_db_free(kgx_db_t *db)
{
    if (!db || db->closing) return;
    db->closing = 1;
    for (int i = 0; i < db->pool_size; i++) conn_shutdown(db->pool[i]);
    conn_shutdown(db->listen);
    while (db->q_head) {
        db_stmt_t *s = db->q_head;
        db->q_head = s->next;
        stmt_free(s);
    }
    db->q_tail = NULL;
    db->queued = db->running = 0;
    while (db->channels) {
        db_listen_t *l = db->channels;
        db->channels = l->next;
        free(l->channel);
        free(l);
    }
    if (db->kick) {
        uv_timer_stop(db->kick);
        uv_close((uv_handle_t *)db->kick, handle_free_cb);
        db->kick = NULL;
    }
    if (db->depth == 0) db_release(db);
}

static int queue_stmt(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
                      kgx_db_cb cb, void *ud, int prepare)
{
    if (!db || db->closing) return -1;
    if (!sql || nparams < 0 || (nparams > 0 && !params)) return -2;
    db_stmt_t *s = calloc(1, sizeof *s);
    if (!s) return -3;
    s->prepare = prepare;
    s->sql = xstrdup(sql);
    s->cb = cb;
    s->ud = ud;
    if (nparams) s->params = calloc((size_t)nparams, sizeof *s->params);
    if (!s->sql || (nparams && !s->params)) { stmt_free(s); return -3; }
    s->nparams = nparams;
    for (int i = 0; i < nparams; i++) {
        if (params[i] && !(s->params[i] = xstrdup(params[i]))) { stmt_free(s); return -3; }
    }
    if (db->q_tail) db->q_tail->next = s; else db->q_head = s;
    db->q_tail = s;
    db->queued++;
    kick(db);
    return 0;
}

int kgx_db_query(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
                 kgx_db_cb cb, void *ud)
{
    return queue_stmt(db, sql, nparams, params, cb, ud, 0);
}

int kgx_db_query_prepared(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
                          kgx_db_cb cb, void *ud)
{
    return queue_stmt(db, sql, nparams, params, cb, ud, 1);
}

int kgx_db_listen(kgx_db_t *db, const char *channel, kgx_db_notify_cb cb, void *ud)
{
    if (!db || db->closing) return -1;
    if (!channel || !*channel) return -2;
    db_listen_t *l = calloc(1, sizeof *l);
    if (!l || !(l->channel = xstrdup(channel))) { free(l); return -3; }
    l->cb = cb;
    l->ud = ud;
    db_listen_t **pp = &db->channels;
    while (*pp) pp = &(*pp)->next;
    *pp = l;
    db->nchannels++;
    if (!db->listen) {
        if (!(db->listen = conn_new(db, -1, 1))) return -3;   /* LISTENs everything once connected */
    } else if (db->listen->state == C_IDLE) {
        /* connected and idle: LISTEN the new channel now; every registration then gets a NULL call */
        db_conn_t *c = db->listen;
        c->setup_idx = db->nsetup + db->nchannels - 1;
        conn_next_setup(c);
    }
    /* SETUP in progress: conn_next_setup reaches the new channel; DOWN/CONNECTING: done on connect */
    return 0;
}

int kgx_db_is_up(const kgx_db_t *db) { return db && !db->closing && pool_ready(db); }

size_t kgx_db_pending(const kgx_db_t *db) { return db ? db->queued + db->running : 0; }
