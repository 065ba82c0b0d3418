/* status — what operators read, formatted: the status JSON (`--status --json`, GET /kg-extract/status,
 * and each process's live state published to kgx_workers) and the readable `--status` text.
 * Pure formatting: the numbers come from queue.c (the database) and the engine (this process). */
#ifndef KGX_STATUS_H
#define KGX_STATUS_H

#include <stdio.h>
#include "buf.h"
#include "endpoint.h"
#include "queue.h"

/* One process's live state, as the engine sees it. */
typedef struct {
    const char *worker_id, *policy_name, *policy_version;
    int in_flight, drawers_in_memory, stopping;
    unsigned long long completed, parked, retries;
    int jobs_active, jobs_recording_failure, jobs_writing, jobs_write_retry;   /* drawers in memory by state */
    double uptime_s;
    const kgx_endpoints_t *eps;
} kgx_process_view_t;

/* The process's state as JSON object members (no braces): worker_id, host, pid, policy, counters,
 * endpoints [{url, state, in_flight, slots, n_ctx, requests, last_error}]. */
void kgx_status_process_json(kgx_buf_t *b, const kgx_process_view_t *p);
/* The status object: the seed's keys (queue_depth, in_progress, completed_today, errors_total,
 * triples_extracted_5m, drawers_per_min_5m, stale_reclaimable) plus kgx's (completed_total, parked,
 * retrying, total, policy, version), then "process" when p is given and "workers" (a
 * JSON array from kgx_workers) when given. malloc'd. */
char *kgx_status_json(const kgx_queue_counts_t *c, const kgx_process_view_t *p, const char *workers_json,
                      const char *policy_name, const char *policy_version, size_t *len);
/* The readable --status: counters, policy, graph size (when have_graph), live workers (text lines). */
void kgx_status_print_text(FILE *out, const kgx_queue_counts_t *c, const char *policy_name,
                           const char *policy_version, int have_graph, long long entities,
                           long long edges, long long supports, const char *workers_text);

#endif
