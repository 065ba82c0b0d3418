/* engine — the extraction loop: claims drawers, runs each through the policy and the LLM, writes
 * the facts, and keeps --workers requests in flight.
 *
 * Threads: one loop thread (libuv) runs everything here — claims, HTTP, the database, timers,
 * signals, status — plus hook threads (hooks.h) that run policy code beside it; results cross back
 * to the loop, so a slow or stuck hook never holds it.
 *
 * A job is one claimed drawer. Its state is data (job_state_t, drawn at the top of job.c) and moves
 * only through job_set_state(), which keeps the counters true; the loop asks each job what it needs
 * next (job_next_action). Chunks of one drawer are independent requests: they fan out over the free
 * slots; the drawer is written once every chunk has its answer. Claims refill continuously (whenever
 * fewer ready chunks than free slots remain), so one slow drawer never idles the others.
 *
 * Failure policy (nothing lost, nothing silent): one table, in outcome.c — which HTTP, hook and database
 * outcome is waited out, asked about (/health), charged (backoff, parked after --max-attempts),
 * split smaller or retried as is.
 * Where drawers come from and where results go is a sink (sink.h): the database, or with --dry-run a
 * file and stdout. */
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
