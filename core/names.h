/* names — the graph name and every identifier kgx derives from it.
 *
 * The graph name becomes an AGE graph (a PostgreSQL schema of that name) and part of kgx's own
 * identifiers (public.kgx_<graph>_support, its index kgx_<graph>_support_edge, …: every "@G@" in the
 * compiled-in SQL templates core/schema.sql.in and core/adopt.sql.in). PostgreSQL silently cuts
 * identifiers at 63 bytes, so two derived names can become one; the name is also spliced unquoted
 * into SQL, so a reserved word breaks every statement; and a schema that is not a graph's own
 * (public, ag_catalog, information_schema, pg_*) must never be taken for one. All of this is checked
 * here, up front, from the templates themselves: a new derived name in a template is covered without
 * touching this file. Pure (no I/O), unit-tested in tests/unit/t_config.c. */
#ifndef KGX_NAMES_H
#define KGX_NAMES_H

#include <stddef.h>

/* PostgreSQL's identifier limit (NAMEDATALEN - 1). */
#define KGX_NAMES_MAX 63

/* 0 when g is a usable graph name; else -1 with one line (no "error:" prefix) in err saying why and
 * what would be accepted. err may be NULL. */
int kgx_names_check_graph(const char *g, char *err, size_t errlen);

/* The longest identifier the templates derive from a graph name of n bytes, written into longest
 * (with the name "<graph>" in place) when given; returns its length for a name of n bytes. */
size_t kgx_names_longest(size_t n, char *longest, size_t len);

#endif
