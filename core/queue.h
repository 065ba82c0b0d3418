/* queue — the work queue table (mempalace_kg_extraction_queue): claims with SKIP LOCKED and a
 * lease, charged failures and parking, give-back, heartbeats, counters, backfill seeding.
 *
 * Row states (derived from columns, compatible with the seed):
 *   pending   completed_at NULL, error NULL, started_at NULL or older than the lease (a failed attempt
 *             waits out its backoff in the claimant's memory, holding the claim: the retry_at column
 *             kgx's schema added is never set)
 *   claimed   completed_at NULL, error NULL, started_at within the lease, worker_id = claimant
 *   parked    completed_at NULL, error NOT NULL (after --max-attempts; error = last failure)
 *   completed completed_at NOT NULL (written by graph.c in the same transaction as the facts);
 *             status 'deleted' when the drawer was gone (its facts retracted, 0 written)
 * Every claim gets a fresh claim_token; writes and failures of a claim that is no longer current
 * (lease lost, drawer re-queued) are refused by the database. */
#ifndef KGX_QUEUE_H
#define KGX_QUEUE_H

#include <stddef.h>
#include "db.h"

typedef struct {
    char *drawer_id, *wing, *room, *document, *metadata;  /* document NULL when missing or not read yet */
    size_t document_len;   /* with text_pending: the text's size in bytes (octet_length) */
    int text_pending;      /* budget: text not in memory (claimed without it, or released); budget.h */
    size_t budget_held;    /* budget: bytes this row holds of the memory budget (budget.c) */
    int text_failures;     /* budget: failed reads of the text in a row */
    long long token;
    int attempts;          /* charged failures so far */
    int missing;           /* no mempalace_drawers row */
} kgx_claim_row_t;

/* rows is malloc'd and owned by the callback (free with kgx_claim_rows_free). err non-NULL on failure. */
typedef void (*kgx_queue_claim_cb)(kgx_claim_row_t *rows, int n, const char *err, void *ud);
typedef void (*kgx_queue_fail_cb)(int attempts, int parked, int stale, const char *err, void *ud);
typedef void (*kgx_queue_done_cb)(long long affected, const char *err, void *ud);

typedef struct {
    long long queue_depth, in_progress, completed_today, errors_total, triples_extracted_5m,
              stale_reclaimable, completed_total, retrying, total,
              deleted;   /* completed with status 'deleted': the drawer was gone, its facts retracted */
    double drawers_per_min_5m;
} kgx_queue_counts_t;
typedef void (*kgx_queue_counts_cb)(const kgx_queue_counts_t *c, const char *err, void *ud);

/* text_bytes: how many bytes of small drawers' texts (in claim order) may come with the claim
 * (0: none; the rows then say text_pending and their size). */
int kgx_queue_claim(kgx_db_t *db, const char *worker, double lease_s, int limit, size_t text_bytes,
                    kgx_queue_claim_cb cb, void *ud);
void kgx_claim_rows_free(kgx_claim_row_t *rows, int n);
/* Drawer text read in pieces after the claim (budget.c decides when). cb gets status 0 and the
 * malloc'd text (NUL-terminated, len bytes, read in `pieces` queries; the callee owns it), or KGX_TEXT_GONE (no drawer row),
 * KGX_TEXT_CHANGED (its size is no longer the claimed one), KGX_TEXT_ERROR (err says why). Returns
 * NULL when nothing was queued (cb never called). The handle lives until cb has run; after
 * kgx_db_free (which drops pending callbacks) kgx_queue_fetch_abandon frees one that never will. */
enum { KGX_TEXT_GONE = 1, KGX_TEXT_CHANGED = 2, KGX_TEXT_ERROR = 3 };
typedef struct kgx_text_fetch kgx_text_fetch_t;
typedef void (*kgx_queue_text_cb)(int status, char *text, size_t len, int pieces, const char *err, void *ud);
kgx_text_fetch_t *kgx_queue_fetch_text(kgx_db_t *db, const char *drawer_id, size_t len,
                                       kgx_queue_text_cb cb, void *ud);
/* n small texts (each read whole) in one query: cb(i, …) for i = 0 … n-1, in order, with the statuses
 * above (pieces is 1). NULL when nothing was queued. */
typedef void (*kgx_queue_texts_cb)(int i, int status, char *text, size_t len, const char *err, void *ud);
kgx_text_fetch_t *kgx_queue_fetch_texts(kgx_db_t *db, int n, const char *const *ids, const size_t *lens,
                                        kgx_queue_texts_cb cb, void *ud);
void kgx_queue_fetch_abandon(kgx_text_fetch_t *f);

/* A charged failure: attempts+1, last_error = msg; at max_attempts the row is parked (error = msg,
 * claim released). Otherwise the claim is kept and its lease renewed (the caller retries). */
int kgx_queue_fail(kgx_db_t *db, const char *drawer_id, long long token, const char *msg,
                   int max_attempts, kgx_queue_fail_cb cb, void *ud);
/* Parks at once (e.g. the drawer row is gone). */
int kgx_queue_park(kgx_db_t *db, const char *drawer_id, long long token, const char *msg,
                   kgx_queue_done_cb cb, void *ud);
/* Gives one claimed row back unchanged (no attempt charged). */
int kgx_queue_unclaim(kgx_db_t *db, const char *drawer_id, long long token, kgx_queue_done_cb cb, void *ud);
/* Gives back every row this worker holds (SIGTERM). */
int kgx_queue_release_all(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud);
/* Renews the lease of every row this worker holds. */
int kgx_queue_heartbeat(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud);
/* Publishes this worker's live state (a JSON object) into kgx_workers; gone = remove the row. */
int kgx_queue_publish_worker(kgx_db_t *db, const char *worker, const char *state_json, kgx_queue_done_cb cb, void *ud);
int kgx_queue_forget_worker(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud);
/* JSON array of the workers seen in the last 60 s (malloc'd), or NULL with err. Blocking. */
char *kgx_queue_workers_json(PGconn *c, char *err, size_t errlen);
/* The same as readable lines (malloc'd; "" when none). */
char *kgx_queue_workers_text(PGconn *c, char *err, size_t errlen);
int kgx_queue_counts(kgx_db_t *db, double lease_s, kgx_queue_counts_cb cb, void *ud);
int kgx_queue_counts_blocking(PGconn *c, double lease_s, kgx_queue_counts_t *out, char *err, size_t errlen);
/* Queues every drawer not yet in the queue or not completed (at most limit; 0 = all). */
int kgx_queue_seed_backfill(PGconn *c, long limit, long long *inserted, char *err, size_t errlen);

#endif
