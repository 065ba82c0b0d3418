/* db_open — the blocking side of db: one-shot connections (CLI modes, the setup before the loop starts,
 * tests) and database errors by class, which the loop's pool (db.c) reports the same way. See db.h. */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- messages, errors by class ---- */

const char *kgx_db_first_line(const char *msg, char *buf, size_t len)
{
    if (!msg || !*msg) msg = "unknown error";
    size_t n = strcspn(msg, "\r\n");
    while (n > 0 && (msg[n - 1] == ' ' || msg[n - 1] == '\t')) n--;
    if (n >= len) n = len - 1;
    memcpy(buf, msg, n);
    buf[n] = '\0';
    return buf;
}

void kgx_db_result_error(char *err, size_t errlen, const char *prefix, const PGresult *r)
{
    char line[1024];
    kgx_db_first_line(r ? PQresultErrorMessage(r) : NULL, line, sizeof line);
    snprintf(err, errlen, "%s%s", prefix ? prefix : "", line);
}

kgx_db_fail_t kgx_db_classify(const char *sqlstate, const char *msg)
{
    if (!sqlstate || !*sqlstate) return msg ? KGX_DB_FAIL_OTHER : KGX_DB_FAIL_NONE;
    if (!strcmp(sqlstate, "28P01")) return KGX_DB_FAIL_AUTH;
    if (!strcmp(sqlstate, "28000")) return KGX_DB_FAIL_ROLE;
    if (!strcmp(sqlstate, "3D000")) return KGX_DB_FAIL_DATABASE;
    /* LOAD 'age' without the library (58P01), CREATE EXTENSION age without its control file (0A000
     * "extension \"age\" is not available" since PostgreSQL 15, 58P01 before) */
    if ((!strcmp(sqlstate, "58P01") || !strcmp(sqlstate, "0A000")) && msg && strstr(msg, "age"))
        return KGX_DB_FAIL_AGE;
    if (!strcmp(sqlstate, "3F000") && msg && strstr(msg, "ag_catalog")) return KGX_DB_FAIL_AGE;
    return KGX_DB_FAIL_OTHER;
}

int kgx_db_fail_permanent(kgx_db_fail_t f)
{
    return f == KGX_DB_FAIL_AUTH || f == KGX_DB_FAIL_ROLE || f == KGX_DB_FAIL_DATABASE
        || f == KGX_DB_FAIL_AGE || f == KGX_DB_FAIL_AGE_CREATE;
}

const char *kgx_db_fail_fix(kgx_db_fail_t f)
{
    switch (f) {
    case KGX_DB_FAIL_AUTH:
        return "authentication failed: fix the password (password= in the DSN, PGPASSWORD or ~/.pgpass)";
    case KGX_DB_FAIL_ROLE:
        return "the server does not let this role in: check user= in the DSN, create the role "
               "(CREATE ROLE name LOGIN), or allow it in pg_hba.conf";
    case KGX_DB_FAIL_DATABASE:
        return "no such database: fix dbname= in the DSN, or create it (createdb NAME)";
    case KGX_DB_FAIL_AGE:
        return "Apache AGE is not installed on the database server: install it (Debian: postgresql-NN-age) "
               "and restart PostgreSQL";
    case KGX_DB_FAIL_AGE_CREATE:
        return "Apache AGE is not created in this database and this role may not create it: "
               "run CREATE EXTENSION age; in it once as a superuser";
    default:
        return "";
    }
}

int kgx_db_message_sqlstate(const char *msg, char code[6])
{
    static const char *const sev[] = { "FATAL:  ", "ERROR:  ", "PANIC:  ", NULL };
    for (int i = 0; msg && sev[i]; i++) {
        for (const char *p = strstr(msg, sev[i]); p; p = strstr(p + 1, sev[i])) {
            const char *c = p + strlen(sev[i]);
            int k = 0;
            while (k < 5 && ((c[k] >= '0' && c[k] <= '9') || (c[k] >= 'A' && c[k] <= 'Z'))) k++;
            if (k == 5 && c[5] == ':') {
                memcpy(code, c, 5);
                code[5] = '\0';
                return 0;
            }
        }
    }
    code[0] = '\0';
    return -1;
}

int kgx_db_dsn_check(const char *dsn, char *err, size_t errlen)
{
    char *msg = NULL;
    PQconninfoOption *o = PQconninfoParse(dsn ? dsn : "", &msg);
    if (o) {
        PQconninfoFree(o);
        return 0;
    }
    char line[512];
    kgx_db_first_line(msg ? msg : "out of memory", line, sizeof line);
    snprintf(err, errlen, "%s", line);
    if (msg) PQfreemem(msg);
    return -1;
}

void kgx_db_class_error(char *err, size_t errlen, const char *prefix, const char *msg, const char *code,
                        kgx_db_fail_t f)
{
    char line[512], clean[512];
    kgx_db_first_line(msg, line, sizeof line);
    const char *at = code && *code ? strstr(line, code) : NULL;
    if (at && at[5] == ':' && at[6] == ' ')
        snprintf(clean, sizeof clean, "%.*s%s", (int)(at - line), line, at + 7);
    else
        snprintf(clean, sizeof clean, "%s", line);
    if (kgx_db_fail_permanent(f))
        snprintf(err, errlen, "%s%s [%s]; fix: %s", prefix, clean, code && *code ? code : "-", kgx_db_fail_fix(f));
    else
        snprintf(err, errlen, "%s%s", prefix, clean);
}

/* ---- blocking connections ---- */

/* connect_timeout from the DSN (libpq applies it only to PQconnectdb, not to a polled connection) */
static int dsn_connect_timeout_ms(PGconn *pg)
{
    int ms = -1;
    PQconninfoOption *o = PQconninfo(pg);
    for (PQconninfoOption *x = o; x && x->keyword; x++)
        if (!strcmp(x->keyword, "connect_timeout") && x->val && atoi(x->val) > 0) ms = atoi(x->val) * 1000;
    PQconninfoFree(o);
    if (ms > 0 && ms < 2000) ms = 2000;   /* libpq's own minimum */
    return ms;
}

PGconn *kgx_db_open(const char *dsn, const char *const *setup_sql, char *err, size_t errlen, kgx_db_fail_t *why)
{
    char buf[8];
    if (!err || !errlen) { err = buf; errlen = sizeof buf; }
    err[0] = '\0';
    kgx_db_fail_t dummy;
    if (!why) why = &dummy;
    *why = KGX_DB_FAIL_NONE;
    PGconn *pg = PQconnectStart(dsn ? dsn : "");
    if (!pg) {
        snprintf(err, errlen, "out of memory");
        *why = KGX_DB_FAIL_OTHER;
        return NULL;
    }
    /* verbose errors while connecting: the only way to see the server's SQLSTATE of a refusal */
    PQsetErrorVerbosity(pg, PQERRORS_VERBOSE);
    int timeout = dsn_connect_timeout_ms(pg);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    PostgresPollingStatusType st = PQstatus(pg) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p = { PQsocket(pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0 };
        int wait = -1;
        if (timeout > 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= timeout) break;
            wait = (int)(timeout - el);
        }
        int n = poll(&p, 1, wait);
        if (n < 0 && errno != EINTR) break;
        if (n == 0 && timeout > 0) continue;     /* re-checks the deadline */
        if (n > 0 || errno != EINTR) st = PQconnectPoll(pg);
    }
    if (st != PGRES_POLLING_OK) {
        char code[6];
        const char *msg = st == PGRES_POLLING_FAILED ? PQerrorMessage(pg) : "timeout expired";
        kgx_db_message_sqlstate(msg, code);
        *why = kgx_db_classify(code[0] ? code : NULL, msg);
        if (*why == KGX_DB_FAIL_NONE) *why = KGX_DB_FAIL_OTHER;
        kgx_db_class_error(err, errlen, "", msg, code, *why);
        PQfinish(pg);
        return NULL;
    }
    PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);
    for (int i = 0; setup_sql && setup_sql[i]; i++) {
        PGresult *r = PQexec(pg, setup_sql[i]);
        ExecStatusType rs = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
            const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
            const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(pg);
            char pre[64];
            *why = kgx_db_classify(code, msg);
            if (*why == KGX_DB_FAIL_NONE) *why = KGX_DB_FAIL_OTHER;
            snprintf(pre, sizeof pre, "setup statement %d failed: ", i + 1);
            kgx_db_class_error(err, errlen, pre, msg, code, *why);
            PQclear(r);
            PQfinish(pg);
            return NULL;
        }
        PQclear(r);
    }
    return pg;
}

PGconn *kgx_db_connect_blocking(const char *dsn, const char *const *setup_sql, char *err, size_t errlen)
{
    return kgx_db_open(dsn, setup_sql, err, errlen, NULL);
}

int kgx_db_check_age(PGconn *c, char *err, size_t errlen, kgx_db_fail_t *why)
{
    kgx_db_fail_t dummy;
    if (!why) why = &dummy;
    *why = KGX_DB_FAIL_NONE;
    PGresult *r = PQexec(c,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'age'),"
        "       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'age'),"
        "       coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false),"
        "       current_database()");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "checking for AGE: ", r);
        *why = KGX_DB_FAIL_OTHER;
        PQclear(r);
        return -1;
    }
    int created = PQgetvalue(r, 0, 0)[0] == 't', available = PQgetvalue(r, 0, 1)[0] == 't';
    int super = PQgetvalue(r, 0, 2)[0] == 't';
    int rc = 0;
    if (!created && !available) {
        *why = KGX_DB_FAIL_AGE;
        snprintf(err, errlen, "extension \"age\" is not available on the server; fix: %s", kgx_db_fail_fix(*why));
        rc = -1;
    } else if (!created && !super) {
        *why = KGX_DB_FAIL_AGE_CREATE;
        snprintf(err, errlen, "extension \"age\" is not created in database \"%s\"; fix: %s",
                 PQgetvalue(r, 0, 3), kgx_db_fail_fix(*why));
        rc = -1;
    }
    PQclear(r);
    return rc;
}
