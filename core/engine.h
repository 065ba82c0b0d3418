/* engine — the extraction loop: claims drawers, runs each through the policy and the LLM, writes
 * the facts, and keeps --workers requests in flight.
 *
 * A job is one claimed drawer. Its state is data (enum kgx_job_state) and moves only through
 * job_set_state(), which keeps the counters true. Chunks of one drawer are independent requests:
 * they fan out over the free slots; the drawer is written once every chunk has its answer.
 * Claims refill continuously (whenever fewer ready chunks than free slots remain), so one slow
 * drawer never idles the others.
 *
 * Failure policy (DESIGN.md invariant 1):
 *   - connect refused / 503 loading: the endpoint is set aside; the chunk waits, no attempt charged;
 *   - reset or timeout: /health decides — endpoint down → not charged, endpoint fine → charged;
 *   - 5xx, other 4xx, unparseable answer, policy error: charged; retried after exponential
 *     backoff with jitter; parked with its error after --max-attempts;
 *   - 400 context size: the drawer is split again smaller (shrink), not charged;
 *   - database errors on the write: transient ones (deadlock, lost connection) retried as they are,
 *     others charged.
 * With --dry-run the same machinery reads drawers from a file and prints instead of writing. */
#ifndef KGX_ENGINE_H
#define KGX_ENGINE_H

#include "config.h"
#include "queue.h"

typedef struct kgx_engine kgx_engine_t;

/* Builds the engine (loop, http, db pool, policy, endpoints, timers, signals). NULL + err on failure
 * (err is one line; *exit_code tells 1 or 2). */
kgx_engine_t *kgx_engine_new(kgx_config_t *cfg, const char *policy_path, char *err, size_t errlen, int *exit_code);
/* Runs until the mode is done or a signal stops it. Returns the process exit code. */
int kgx_engine_run(kgx_engine_t *e);
void kgx_engine_free(kgx_engine_t *e);

#endif
