/* db — PostgreSQL on the loop: a small pool of non-blocking libpq connections.
 *
 * Each connection connects with PQconnectStart/PQconnectPoll on a uv_poll_t, runs the setup
 * statements given in the options (e.g. LOAD 'age'; SET search_path …) after every (re)connect,
 * then serves queued statements one at a time with PQsendQueryParams (text params, text results).
 * Statements are dispatched to an idle connection in FIFO order. A lost connection fails its
 * running statement (cb with res == NULL and err "connection lost: …"), is reconnected with
 * backoff (100 ms doubling to 5 s), and queued statements wait for it — nothing is dropped silently.
 * One extra connection is dedicated to LISTEN when kgx_db_listen is used; it re-LISTENs on
 * reconnect. Only queue.c and graph.c compose SQL; this file is the transport. */
#ifndef KGX_DB_H
#define KGX_DB_H

#include <stddef.h>
#include <libpq-fe.h>
#include <uv.h>

typedef struct kgx_db kgx_db_t;

/* res: the (last) PGresult of the statement (PGRES_COMMAND_OK / TUPLES_OK / FATAL_ERROR …),
 * freed by db after the callback returns; NULL when the connection failed, then err says why.
 * For FATAL_ERROR results err holds PQresultErrorMessage (one line) and sqlstate the code. */
typedef void (*kgx_db_cb)(const PGresult *res, const char *err, const char *sqlstate, void *ud);
typedef void (*kgx_db_notify_cb)(const char *channel, const char *payload, void *ud);
/* up = 1 when at least one pool connection is ready, 0 when all are down. */
typedef void (*kgx_db_state_cb)(int up, const char *err, void *ud);

typedef struct {
    const char *dsn;
    int pool_size;                 /* default 2 */
    const char *const *setup_sql;  /* NULL-terminated list run on each new connection */
    kgx_db_state_cb on_state; void *state_ud;
    const char *label;             /* NULL: logs "db up" / "db down"; else "db LABEL up" (a second pool) */
} kgx_db_opts_t;

kgx_db_t *kgx_db_new(uv_loop_t *loop, const kgx_db_opts_t *opts);
/* Shutdown: drops queued and running statements without calling their callbacks, closes the handles. */
void kgx_db_free(kgx_db_t *db);
/* Queues one statement ($1… text params, copied; NULL param = SQL NULL). Returns 0, or <0 when the
 * handle is shutting down or the arguments are bad (cb never called). The callback never runs
 * inside kgx_db_query; callbacks may queue statements or free the handle. */
int kgx_db_query(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
                 kgx_db_cb cb, void *ud);
/* The same, for a statement run again and again with the same text (the write, the fold, the text
 * reads and answer lookups): parsed and planned once per connection, as a named prepared statement
 * (PostgreSQL's plan cache decides custom or generic plans). Not for statements whose best plan
 * depends on their parameters' values. */
int kgx_db_query_prepared(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
                          kgx_db_cb cb, void *ud);
/* LISTEN on channel over the dedicated connection; cb runs per notification. cb(NULL, NULL, ud)
 * also runs each time the listen connection becomes ready (first connect, every reconnect): work
 * whose NOTIFY was missed while it was down should be re-checked then. */
int kgx_db_listen(kgx_db_t *db, const char *channel, kgx_db_notify_cb cb, void *ud);
int kgx_db_is_up(const kgx_db_t *db);
size_t kgx_db_pending(const kgx_db_t *db);   /* queued + running statements */

/* err = prefix + the first line of r's error message (trailing blanks trimmed): the one-line
 * form every blocking caller reports. */
void kgx_db_result_error(char *err, size_t errlen, const char *prefix, const PGresult *r);

/* Blocking helper for one-shot CLI paths (--status, setup before the loop starts, tests):
 * connects, runs setup_sql, returns the connection or NULL with err set. */
PGconn *kgx_db_connect_blocking(const char *dsn, const char *const *setup_sql, char *err, size_t errlen);

/* ---- database errors by class ----
 * Some failures are not "the database is not up yet" but a configuration an operator must fix: told
 * apart by the SQLSTATE the server sent (at connection time libpq keeps it only in the message text,
 * so connections are made with verbose errors and the code is read back from it). */
typedef enum {
    KGX_DB_FAIL_NONE = 0,
    KGX_DB_FAIL_OTHER,          /* unreachable, shutting down, too many connections …: wait and retry */
    KGX_DB_FAIL_AUTH,           /* 28P01: wrong password */
    KGX_DB_FAIL_ROLE,           /* 28000: unknown role, NOLOGIN, no pg_hba.conf entry */
    KGX_DB_FAIL_DATABASE,       /* 3D000: unknown database */
    KGX_DB_FAIL_AGE,            /* 58P01 / 0A000 on age: Apache AGE not installed on the server */
    KGX_DB_FAIL_AGE_CREATE,     /* AGE installed but not created in this database, and this role may not */
} kgx_db_fail_t;

/* The class of a failure from its SQLSTATE (NULL when none) and message. */
kgx_db_fail_t kgx_db_classify(const char *sqlstate, const char *msg);
/* 1 for the classes an operator must fix (auth, role, database, AGE). */
int kgx_db_fail_permanent(kgx_db_fail_t f);
/* One sentence naming the fix for a permanent class ("" otherwise). */
const char *kgx_db_fail_fix(kgx_db_fail_t f);
/* The SQLSTATE inside a verbose libpq message ("FATAL:  28P01: …"), copied into code[6]; 0 or -1. */
int kgx_db_message_sqlstate(const char *msg, char code[6]);
/* 0 when PQconninfoParse accepts dsn; else -1 with libpq's reason (one line) in err. */
int kgx_db_dsn_check(const char *dsn, char *err, size_t errlen);
/* kgx_db_connect_blocking that also says which class a failure is (why may be NULL). For permanent
 * classes err reads "<what the server said> [SQLSTATE]; fix: <the fix>". */
PGconn *kgx_db_open(const char *dsn, const char *const *setup_sql, char *err, size_t errlen, kgx_db_fail_t *why);
/* Apache AGE usable in the connected database? 0, or -1 with err (and *why = AGE / AGE_CREATE / OTHER).
 * A superuser may create the extension itself later (schema setup does), so that is not a failure. */
int kgx_db_check_age(PGconn *c, char *err, size_t errlen, kgx_db_fail_t *why);

/* Shared by db.c (the pool) and db_open.c (blocking): the first line of msg, trailing blanks trimmed,
 * into buf (returns buf); and err = prefix + that line without the verbose "XXXXX: " of a connection
 * error, plus " [code]; fix: …" for a permanent class. */
const char *kgx_db_first_line(const char *msg, char *buf, size_t len);
void kgx_db_class_error(char *err, size_t errlen, const char *prefix, const char *msg, const char *code,
                        kgx_db_fail_t f);

#endif
