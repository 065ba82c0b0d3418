/* status — what operators read, formatted: the status JSON (`--status --json`, GET /kg-extract/status,
 * and each process's live state published to kgx_workers) and the readable `--status` text.
 * Formatting: the numbers come from queue.c (the database) and the engine (this process); the one
 * thing kept here is the token budget the policy last reported (below). */
#ifndef KGX_STATUS_H
#define KGX_STATUS_H

#include <stdio.h>
#include <libpq-fe.h>
#include "buf.h"
#include "endpoint.h"
#include "queue.h"

/* [budget] What one request leaves for drawer text. The policy reports it from split (kgx.budget(n_ctx,
 * instruction_tokens, output_cap), which llama.budget_warning calls); every answer says how many prompt
 * tokens the server counted, which less its chunk's estimate is what the instructions really took. This
 * process keeps the last report and the smallest such count since, and publishes them with its state
 * (process.budget), so `--status` — another process — reads them from kgx_workers. The instructions
 * count as the larger of the policy's estimate and the server's count (the estimate is ceil(bytes/3); a
 * tokenizer can split finer: the test model counts the shipped prompt ~1.5x the estimate). Tiny: the
 * instructions and the output cap leave under a quarter of the slot for text. */
typedef struct { int n_ctx, instruction_tokens, output_cap, counted; } kgx_status_budget_t;
/* Records a report (any thread); returns 1 when it is tiny. The first time a given budget (n_ctx,
 * instructions, output cap) is tiny, one warning with the numbers and the fix is logged. n_ctx <= 0
 * (unknown) records nothing. A new instructions estimate (another prompt) forgets the server's count. */
int kgx_status_note_budget(int n_ctx, int instruction_tokens, int output_cap);
/* An answer's prompt tokens as the server counted them (tokens_evaluated, usage.prompt_tokens) and the
 * estimate of its chunk's text (kgx.tokens); ignored when either is unknown (< 0). Any thread. */
void kgx_status_note_prompt(long prompt_tokens, long text_tokens);
kgx_status_budget_t kgx_status_budget(void);       /* the last report; n_ctx 0: none yet */
void kgx_status_budget_reset(void);                /* tests */
long kgx_status_budget_left(const kgx_status_budget_t *b);   /* tokens left for text (may be < 0) */
int kgx_status_budget_tiny(const kgx_status_budget_t *b);
/* The warning sentence: numbers and fix. */
void kgx_status_budget_warning(kgx_buf_t *out, const kgx_status_budget_t *b);
/* --status: the live workers' budgets (kgx_workers, seen in the last 60 s), one line each distinct
 * budget on `text` (when given) and a "warning: …" line when tiny; the tiny ones' warnings appended to
 * `warnings` as JSON strings, comma-separated (when given). 0, or -1 with err. */
int kgx_status_live_budgets(PGconn *c, FILE *text, kgx_buf_t *warnings, char *err, size_t errlen);

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
 * endpoints [{url, state, in_flight, slots, n_ctx, requests, last_error}], budget ({n_ctx,
 * instruction_tokens, instruction_tokens_counted, output_cap, text_tokens, text_percent, tiny, warning} or null:
 * none reported yet). */
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
