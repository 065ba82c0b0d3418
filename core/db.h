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
} kgx_db_opts_t;

kgx_db_t *kgx_db_new(uv_loop_t *loop, const kgx_db_opts_t *opts);
/* Shutdown: drops queued and running statements without calling their callbacks, closes the handles. */
void kgx_db_free(kgx_db_t *db);
/* Queues one statement ($1… text params, copied; NULL param = SQL NULL). Returns 0, or <0 when the
 * handle is shutting down or the arguments are bad (cb never called). The callback never runs
 * inside kgx_db_query; callbacks may queue statements or free the handle. */
int kgx_db_query(kgx_db_t *db, const char *sql, int nparams, const char *const *params,
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

#endif
