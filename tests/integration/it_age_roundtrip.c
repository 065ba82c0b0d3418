/* it_age_roundtrip.c — hostile text reaches Apache AGE as a bind parameter and comes back byte-exact.
 *
 * Needs KGX_TEST_DSN (a superuser on a server with AGE; `scripts/sandbox-db up` gives one). It is a
 * failure, never a skip, when it is missing. Creates its own database, drops it at the end
 * (KGX_KEEP_DB=1 keeps it).
 *
 * Facts this test pins down (AGE 1.5 / PG17 and AGE 1.8 / PG18):
 *  - cypher('g', $$ … $name … $$, $1) takes the parameters as ONE bind parameter, an agtype map given
 *    as JSON text; PQexecParams with paramTypes NULL lets the server infer agtype.
 *  - the text output of an agtype string is JSON-quoted ("O'Brien \"q\" back\\slash"); decode it.
 *  - ag_catalog.agtype_to_text(x) gives the raw string.
 */
#include <libpq-fe.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
/* tap.h's ok() puts `if (..) printf(..); fflush(..);` on one line, which gcc 12 flags */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#define GRAPH "it_age_rt"

static PGconn *admin, *conn;
static char dbname[64];
static int db_created;

static void cleanup(void)
{
    if (conn) { PQfinish(conn); conn = NULL; }
    if (admin && db_created) {
        const char *keep = getenv("KGX_KEEP_DB");
        if (keep && *keep == '1') {
            diag("KGX_KEEP_DB=1: keeping database %s", dbname);
        } else {
            char sql[160];
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", dbname);
            PGresult *r = PQexec(admin, sql);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) diag("drop database %s: %s", dbname, PQerrorMessage(admin));
            PQclear(r);
        }
        db_created = 0;
    }
    if (admin) { PQfinish(admin); admin = NULL; }
}

static void bail(const char *why)
{
    printf("Bail out! %s\n", why);
    fflush(stdout);
    cleanup();
    exit(1);
}

/* run a statement that returns nothing interesting; ok() it */
static int exec_ok(PGconn *c, const char *sql, const char *name)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    ok(good, "%s", name);
    if (!good) diag("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return good;
}

/* JSON-quote s (UTF-8 passes through); caller frees */
static char *json_quote(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 6 + 3), *o = out;
    if (!out) bail("out of memory");
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':  *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\b': *o++ = '\\'; *o++ = 'b'; break;
        case '\f': *o++ = '\\'; *o++ = 'f'; break;
        default:
            if (*p < 0x20) o += sprintf(o, "\\u%04x", *p);
            else *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *o = 0;
    return out;
}

static void put_utf8(char **o, uint32_t cp)
{
    unsigned char *u = (unsigned char *)*o;
    if (cp < 0x80) { *u++ = (unsigned char)cp; }
    else if (cp < 0x800) { *u++ = 0xC0 | (cp >> 6); *u++ = 0x80 | (cp & 0x3F); }
    else if (cp < 0x10000) { *u++ = 0xE0 | (cp >> 12); *u++ = 0x80 | ((cp >> 6) & 0x3F); *u++ = 0x80 | (cp & 0x3F); }
    else { *u++ = 0xF0 | (cp >> 18); *u++ = 0x80 | ((cp >> 12) & 0x3F); *u++ = 0x80 | ((cp >> 6) & 0x3F); *u++ = 0x80 | (cp & 0x3F); }
    *o = (char *)u;
}

/* decode a JSON string literal (agtype string output); NULL when it is not one; caller frees */
static char *json_unquote(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || s[0] != '"' || s[n - 1] != '"') return NULL;
    char *out = malloc(n), *o = out;
    if (!out) bail("out of memory");
    for (const char *p = s + 1; p < s + n - 1; p++) {
        if (*p != '\\') { *o++ = *p; continue; }
        p++;
        if (p >= s + n - 1) { free(out); return NULL; }
        switch (*p) {
        case '"': case '\\': case '/': *o++ = *p; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            uint32_t cp = 0;
            if (sscanf(p + 1, "%4x", &cp) != 1 || p + 4 >= s + n - 1) { free(out); return NULL; }
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
                uint32_t lo = 0;
                if (sscanf(p + 3, "%4x", &lo) == 1 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            put_utf8(&o, cp);
            break;
        }
        default: free(out); return NULL;
        }
    }
    *o = 0;
    return out;
}

/* the one bind parameter: {"name": <value>} as JSON text */
static char *name_param(const char *value)
{
    char *q = json_quote(value);
    size_t n = strlen(q) + 16;
    char *p = malloc(n);
    if (!p) bail("out of memory");
    snprintf(p, n, "{\"name\": %s}", q);
    free(q);
    return p;
}

static PGresult *cypher1(const char *sql, const char *param)
{
    const char *vals[1] = { param };
    return PQexecParams(conn, sql, 1, NULL, vals, NULL, NULL, 0);
}

/* create a vertex named `value`, read it back three ways, compare byte for byte */
static void roundtrip(const char *label, const char *value, const char *param_json)
{
    char *param = param_json ? strdup(param_json) : name_param(value);
    PGresult *r;

    r = cypher1("SELECT * FROM ag_catalog.cypher('" GRAPH "', $$ CREATE (n:Entity {name: $name}) RETURN n.name $$, $1) AS (x agtype)", param);
    ok(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: CREATE with one bind parameter", label);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) diag("%s", PQresultErrorMessage(r));
    else if (PQntuples(r) == 1) {
        char *dec = json_unquote(PQgetvalue(r, 0, 0));
        is_str(dec, value, "%s: CREATE ... RETURN n.name decodes to the input", label);
        free(dec);
    }
    PQclear(r);

    /* WHERE n.name = $name (btree-style equality) */
    r = cypher1("SELECT x, ag_catalog.agtype_to_text(x) FROM ag_catalog.cypher('" GRAPH "', $$ MATCH (n:Entity) WHERE n.name = $name RETURN n.name $$, $1) AS (x agtype)", param);
    ok(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: MATCH ... WHERE n.name = $name runs", label);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) diag("%s", PQresultErrorMessage(r));
    else {
        is_int(PQntuples(r), 1, "%s: exactly one vertex matches", label);
        if (PQntuples(r) == 1) {
            char *want_q = json_quote(value);
            is_str(PQgetvalue(r, 0, 0), want_q, "%s: agtype output is the JSON-quoted string", label);
            char *dec = json_unquote(PQgetvalue(r, 0, 0));
            is_str(dec, value, "%s: decoded agtype output is byte-exact", label);
            is_str(PQgetvalue(r, 0, 1), value, "%s: agtype_to_text() is byte-exact", label);
            is_int(PQgetlength(r, 0, 1), (long long)strlen(value), "%s: same length in bytes", label);
            free(dec);
            free(want_q);
        }
    }
    PQclear(r);

    /* {name: $name} pattern (containment) */
    r = cypher1("SELECT count(*) FROM ag_catalog.cypher('" GRAPH "', $$ MATCH (n:Entity {name: $name}) RETURN n $$, $1) AS (x agtype)", param);
    ok(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "1") == 0,
       "%s: MATCH (n:Entity {name: $name}) finds it once", label);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) diag("%s", PQresultErrorMessage(r));
    PQclear(r);
    free(param);
}

int main(void)
{
    const char *dsn = getenv("KGX_TEST_DSN");
    if (!dsn || !*dsn) {
        ok(0, "KGX_TEST_DSN is set (run under scripts/run-tests, or eval \"$(scripts/sandbox-db up)\")");
        return done_testing();
    }
    admin = PQconnectdb(dsn);
    if (PQstatus(admin) != CONNECTION_OK) {
        ok(0, "connect to KGX_TEST_DSN");
        diag("%s", PQerrorMessage(admin));
        cleanup();
        return done_testing();
    }
    ok(1, "connect to KGX_TEST_DSN");
    PQclear(PQexec(admin, "SET client_min_messages = warning"));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    snprintf(dbname, sizeof dbname, "it_age_rt_%d_%ld_%04x", (int)getpid(), (long)ts.tv_sec, rand() & 0xffff);
    {
        char sql[128];
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", dbname);
        if (!exec_ok(admin, sql, "create a private database")) bail("cannot create a database");
        db_created = 1;
    }

    const char *kw[] = { "dbname", "dbname", NULL };
    const char *vals[] = { dsn, dbname, NULL };
    conn = PQconnectdbParams(kw, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) { diag("%s", PQerrorMessage(conn)); bail("cannot connect to the private database"); }
    ok(1, "connect to %s", dbname);
    PQsetClientEncoding(conn, "UTF8");
    PQclear(PQexec(conn, "SET client_min_messages = warning"));

    if (!exec_ok(conn, "CREATE EXTENSION IF NOT EXISTS age", "CREATE EXTENSION IF NOT EXISTS age")) bail("no AGE");
    exec_ok(conn, "LOAD 'age'", "LOAD 'age'");
    exec_ok(conn, "SET search_path = ag_catalog, \"$user\", public", "search_path");
    {
        PGresult *r = PQexec(conn, "SELECT extversion FROM pg_extension WHERE extname = 'age'");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            diag("server %d, AGE %s", PQserverVersion(conn), PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (!exec_ok(conn, "SELECT ag_catalog.create_graph('" GRAPH "')", "create_graph")) bail("create_graph failed");
    /* pre-create the label (label creation races under concurrency; kgx does the same) */
    exec_ok(conn, "SELECT ag_catalog.create_vlabel('" GRAPH "', 'Entity')", "create_vlabel Entity");

    /* the required case, the parameter exactly as written in the task */
    roundtrip("hostile", "O'Brien \"quoted\" $$ dollar $tag$ back\\slash",
              "{\"name\": \"O'Brien \\\"quoted\\\" $$ dollar $tag$ back\\\\slash\"}");
    /* more of invariant 4: Cypher/SQL fragments, control characters, any Unicode */
    roundtrip("injection", "x'}) DETACH DELETE n; MATCH (m) RETURN m //'); DROP TABLE ag_catalog.ag_graph; --", NULL);
    roundtrip("unicode", "Ærøskøbing — 東京 \xF0\x9F\x98\x80 tab\there\nnewline \\u0041 /slash/", NULL);

    {
        PGresult *r = PQexec(conn, "SELECT count(*) FROM " GRAPH ".\"Entity\"");
        ok(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "3") == 0,
           "exactly the 3 vertices written exist (nothing executed)");
        PQclear(r);
        r = PQexec(conn, "SELECT count(*) FROM ag_catalog.ag_graph WHERE name = '" GRAPH "'");
        ok(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0, "ag_graph intact");
        PQclear(r);
    }
    exec_ok(conn, "SELECT ag_catalog.drop_graph('" GRAPH "', true)", "drop_graph");
    PQfinish(conn);
    conn = NULL;

    cleanup();
    return done_testing();
}
