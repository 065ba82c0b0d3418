/* names — see names.h. */
#include "names.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The SQL templates, exactly as compiled into graph.c and adopt.c. */
static const char *const templates[] = {
#include "schema_sql.h"
    ,
#include "adopt_sql.h"
};

/* PostgreSQL's reserved keywords and its type/function-name keywords (pg_get_keywords() catcode R
 * and T on PostgreSQL 16-18): neither may stand unquoted as a schema name, which is how kgx's SQL
 * names the graph ("@G@"."Entity"). Sorted. */
static const char *const reserved[] = {
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "freeze",
    "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner", "intersect",
    "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
    "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order",
    "outer", "overlaps", "placing", "primary", "references", "returning", "right", "select",
    "session_user", "similar", "some", "symmetric", "system_user", "table", "tablesample", "then",
    "to", "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when",
    "where", "window", "with",
};

/* Schemas that belong to PostgreSQL, AGE or everyone: never a graph of kgx's. */
static const char *const foreign_schemas[] = { "public", "ag_catalog", "information_schema", NULL };

static int ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* The longest name derived from a graph name: the same whatever the graph (its letters around "@G@"),
 * so the templates are scanned once. */
static struct { size_t l, r; const char *at; } derived;
static pthread_once_t derived_once = PTHREAD_ONCE_INIT;

static void derived_scan(void)
{
    for (size_t t = 0; t < sizeof templates / sizeof *templates; t++) {
        const char *s = templates[t];
        for (const char *m = strstr(s, "@G@"); m; m = strstr(m + 3, "@G@")) {
            size_t l = 0, r = 0;
            while (m - l > s && ident_char(m[-(ptrdiff_t)l - 1])) l++;
            while (ident_char(m[3 + r])) r++;
            if (l + r > derived.l + derived.r) { derived.l = l; derived.r = r; derived.at = m; }
        }
    }
}

size_t kgx_names_longest(size_t n, char *longest, size_t len)
{
    pthread_once(&derived_once, derived_scan);
    if (longest && len) {
        if (derived.at) snprintf(longest, len, "%.*s<graph>%.*s", (int)derived.l, derived.at - derived.l,
                                 (int)derived.r, derived.at + 3);
        else snprintf(longest, len, "<graph>");
    }
    return n + derived.l + derived.r;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int kgx_names_check_graph(const char *g, char *err, size_t errlen)
{
    char buf[1];
    if (!err) { err = buf; errlen = sizeof buf; }
    size_t n = strlen(g);
    for (size_t i = 0; i < n; i++) {
        char c = g[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (i && c >= '0' && c <= '9'))) {
            snprintf(err, errlen, "'%s' is not a graph name: lower-case letters, digits and _, starting with a letter or _", g);
            return -1;
        }
    }
    char longest[128];
    size_t total = kgx_names_longest(n, longest, sizeof longest);
    size_t max = KGX_NAMES_MAX - (total - n);
    if (n < 3 || total > KGX_NAMES_MAX) {
        if (n < 3) snprintf(err, errlen, "'%s' is too short: AGE wants 3 to %zu characters", g, max);
        else snprintf(err, errlen, "'%s' is too long: kgx derives %s from it (%zu bytes) and PostgreSQL "
                      "cuts identifiers at %d; use at most %zu characters", g, longest, total, KGX_NAMES_MAX, max);
        return -1;
    }
    if (bsearch(&g, reserved, sizeof reserved / sizeof *reserved, sizeof *reserved, cmp_str)) {
        snprintf(err, errlen, "'%s' is a reserved word in PostgreSQL: choose another graph name", g);
        return -1;
    }
    for (int i = 0; foreign_schemas[i]; i++)
        if (!strcmp(g, foreign_schemas[i])) {
            snprintf(err, errlen, "'%s' is a schema of PostgreSQL or AGE, not a graph: choose another graph name", g);
            return -1;
        }
    if (!strncmp(g, "pg_", 3)) {
        snprintf(err, errlen, "'%s' starts with pg_, which PostgreSQL reserves for its own schemas", g);
        return -1;
    }
    return 0;
}
