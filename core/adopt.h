/* adopt — `kgx-run --adopt`: takes over a graph the Python worker wrote, in one pass that is safe to
 * interrupt and to run again (the SQL is core/adopt.sql.in; this file drives it in batches).
 *
 *   0. refuses while kgx workers are alive on the database or rows are in flight, and holds an advisory
 *      lock that keeps kgx daemons from starting meanwhile (kgx_adopt_running);
 *   1. maps every relation type of the old edges through the policy's accept hook (no threshold, no
 *      stopword filter: a probe triple with confidence 1 and neutral names);
 *   2. keys every Entity vertex, merging the vertices of one key (edges of every label re-pointed);
 *   3. turns the old RELATION edges into kgx facts with support rows per drawer;
 *   4. removes Entity vertices left without any edge;
 *   5. with --requeue-empty, queues again the Python era's rows completed with 0 triples.
 * Each batch is its own transaction (--dry-run: one transaction, rolled back, so the counts are exact).
 * Counts go to stdout, progress to stderr. */
#ifndef KGX_ADOPT_H
#define KGX_ADOPT_H

#include <libpq-fe.h>
#include <stddef.h>

#include "config.h"
#include "script.h"

/* Runs --adopt; takes the policy state (its hooks run on a hook thread, hooks.c). Returns the exit
 * code (0 done, 1 refused or failed). */
int kgx_adopt_run(const kgx_config_t *cfg, kgx_script_t *policy);

/* 1 when an --adopt holds the graph (a daemon must not start writing), 0 when not, -1 on error (err). */
int kgx_adopt_running(PGconn *c, const char *graph, char *err, size_t errlen);

#endif
