/* config — the command line and environment (flag wins over env), validated into kgx_config_t.
 * Contract: ../README.md and docs/kg-extraction.md list every flag; exit code 2 for any usage error
 * with a one-line message. Pure: no I/O besides getenv, so it is unit-tested. */
#ifndef KGX_CONFIG_H
#define KGX_CONFIG_H

#include <stddef.h>

#define KGX_MAX_ENDPOINTS 16

/* Defaults config.c applies that the policy host (script_load.c) also falls back to when a caller
 * leaves the option 0 (the unit tests): defined here, once. */
#define KGX_DEFAULT_MIN_CONFIDENCE 0.5     /* MEMPALACE_KG_MIN_CONFIDENCE */
#define KGX_DEFAULT_MAX_TRIPLES 10         /* MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER: per LLM call */
#define KGX_DEFAULT_HOOK_TIMEOUT_MS 2000   /* KGX_HOOK_TIMEOUT_MS: the policy hook watchdog */

typedef enum { KGX_MODE_DAEMON, KGX_MODE_ONCE, KGX_MODE_BACKFILL, KGX_MODE_STATUS,
               KGX_MODE_DRY_RUN, KGX_MODE_REAPPLY, KGX_MODE_HELP, KGX_MODE_VERSION,
               KGX_MODE_ADOPT, KGX_MODE_PRUNE, KGX_MODE_FOLLOW_DELETES } kgx_mode_t;

typedef struct {
    kgx_mode_t mode;
    char *dsn;
    char *endpoints[KGX_MAX_ENDPOINTS];  /* normalised base URLs, no trailing slash */
    int n_endpoints;
    char *model;
    char *policy;            /* NULL: resolved by main (build tree, then install prefix) */
    int max_in_flight;       /* --workers (the flag keeps its name): LLM requests in flight */
    int batch_size;
    double poll_interval, lease_seconds, request_timeout, progress_interval;
    int max_attempts;
    char *graph;
    long backfill_limit;     /* 0 = all */
    int json;                /* --status --json, --dry-run --json */
    char *dry_run_input;     /* FILE or "-" */
    char *http_listen;       /* --http HOST:PORT */
    int http_public;         /* --http-allow-remote */
    char *api_key;           /* KGX_API_KEY */
    char *worker_id;
    int log_level;
    double min_confidence;
    int max_triples;
    int n_ctx;               /* --ctx-size override of the per-slot context; 0 = from /props */
    int slots;               /* --slots override of an endpoint's slot count; 0 = from /props */
    int keep_answers;        /* store raw answers (default 1) */
    int fresh_answers;       /* --fresh-answers / KGX_FRESH_ANSWERS=1: no answer reuse (economy, issue 14) */
    int hook_timeout_ms;     /* KGX_HOOK_TIMEOUT_MS: the policy hook watchdog */
    double retry_base_ms;    /* KGX_RETRY_BASE_MS: first backoff after a charged failure (default 1000) */
    size_t memory_budget;    /* --memory-budget: bytes for drawers in flight (budget.c; default in config.c) */
    char *reapply_where;     /* --reapply-drawer ID (optional filter) */
    int adopt_dry_run;       /* --adopt --dry-run, --prune --dry-run: report only */
    int requeue_empty;       /* --adopt --requeue-empty */
    int follow_deletes;      /* --follow-deletes on (1) | off (0) */
} kgx_config_t;

/* Parses argv/env into cfg. Returns 0, or 2 with a one-line message in err (usage error). */
int kgx_config_parse(kgx_config_t *cfg, int argc, char **argv, char *err, size_t errlen);
void kgx_config_free(kgx_config_t *cfg);
/* Normalises an endpoint as operators write it: trailing '/', '/v1', '/v1/', '/v1/chat/completions',
 * '/completion' are stripped. Returns malloc'd base URL or NULL when not http(s)://. */
char *kgx_config_endpoint_base(const char *url);
const char *kgx_config_usage(void);
#endif
