/* graph — the AGE graph and its side tables: schema setup and the one-transaction-per-drawer write.
 *
 * Graph model: vertex label Entity {name, key} (key = lower-cased, whitespace-collapsed name: the
 * identity), edge label RELATION {relation_type, confidence, source, support[, raw_relation_type]}
 * — exactly one edge per (subject, relation_type, object), unique-indexed so concurrent writers
 * cannot duplicate. Provenance per drawer lives in kgx_<graph>_support; raw LLM answers in
 * kgx_<graph>_answers. The write itself is a server-side function (core/schema.sql.in) called with
 * bind parameters only: one round trip, atomic, and it re-checks the claim token. */
#ifndef KGX_GRAPH_H
#define KGX_GRAPH_H

#include <stddef.h>
#include "buf.h"
#include "db.h"
#include "reuse.h"
#include "script.h"

/* The graph-name whitelist ([a-z_][a-z0-9_]{2,62}: AGE wants 3-63 characters): the name goes into
 * SQL identifiers, so config checks it and graph.c checks it again before splicing. */
int kgx_graph_name_ok(const char *g);

/* Session setup every connection runs: LOAD 'age', search_path, kgx.internal. */
extern const char *const kgx_graph_session_sql[];

/* Creates/updates tables, trigger, graph, labels, indexes and functions (idempotent, under an
 * advisory lock). Blocking; runs before the loop starts. Fails when mempalace_drawers is missing
 * and need_drawers is set. */
int kgx_graph_setup(PGconn *c, const char *graph, int need_drawers, char *err, size_t errlen);

/* n = distinct facts written; -1 = the claim is not ours any more (nothing written).
 * err/sqlstate set on database errors (40P01 / 40001 / connection loss are transient). */
typedef void (*kgx_graph_write_cb)(int n, const char *err, const char *sqlstate, void *ud);

/* Appends one accepted triple to the JSON array being built in b (opening it with '[' when b is empty;
 * the caller closes it with ']'): the p_triples form the write function reads. */
void kgx_graph_triple_json(kgx_buf_t *b, const kgx_triple_t *t, long chunk);

/* triples_json: [{"s","p","o","c","raw","chunk"}…]; answers_json: [{chunk, body, model, policy,
 * policy_version, prompt_tokens, completion_tokens, latency_ms}…] or NULL to keep stored answers.
 * token < 0 = reapply a completed drawer. */
int kgx_graph_write(kgx_db_t *db, const char *graph, const char *drawer_id, const char *worker,
                    long long token, const char *triples_json, const char *answers_json,
                    kgx_graph_write_cb cb, void *ud);
int kgx_graph_is_transient(const char *sqlstate, const char *err);

/* Aggregate folds (kgx_<graph>_fold, schema.sql.in): kgx_graph_write starts them by itself after its
 * writes. kgx_graph_fold_all folds every pending delta (blocking; 0, or -1 with err);
 * kgx_graph_fold_pending is 1 while this process's writes may have left deltas to fold (a fold
 * dropped with its pool, or not yet done): then the caller runs kgx_graph_fold_all before exiting. */
int kgx_graph_fold_all(PGconn *c, const char *graph, char *err, size_t errlen);
int kgx_graph_fold_pending(void);

/* Reapply (blocking, a CLI mode): stored answers of completed drawers after `after` (keyset paging by
 * id; `only` limits to one drawer). Row: drawer id, wing, room, document, metadata, chunk, body — the
 * rows of one drawer adjacent. NULL with err on failure; caller PQclear()s. */
/* economy (issue 14): looks up stored whole answers for a JSON array of request keys (reuse.h);
 * cb gets one row per key in order (rows NULL: the lookup failed). 0, or -1 (cb never called). */
int kgx_graph_answers_lookup(kgx_db_t *db, const char *graph, const char *keys_json, kgx_reuse_rows_cb cb, void *ud);
PGresult *kgx_graph_answers_fetch(PGconn *c, const char *graph, const char *after, const char *only,
                                  int limit, char *err, size_t errlen);
/* Graph statistics (for --status and the demo): entities, edges, supports. Blocking. */
int kgx_graph_stats(PGconn *c, const char *graph, long long *entities, long long *edges,
                    long long *supports, char *err, size_t errlen);

/* The schema text after this marker runs outside a transaction (CREATE INDEX CONCURRENTLY): a caller
 * that applies the schema inside its own transaction (--adopt --dry-run) stops there. */
extern const char kgx_graph_concurrent_marker[];
/* A SQL template with every @G@ replaced by the graph name (checked by the caller); malloc'd. */
char *kgx_graph_subst(const char *tmpl, const char *graph);
/* Runs sql (no parameters, blocking); 0, or -1 with err = "what: " + the server's first line. */
int kgx_graph_exec(PGconn *c, const char *sql, const char *what, char *err, size_t errlen);

#endif
