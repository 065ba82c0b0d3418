/* config — see config.h. */
#include "config.h"
#include "log.h"
#include "names.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
"usage: kgx-run [options]\n"
"Turn MemPalace drawers into a knowledge graph in Apache AGE with a local LLM.\n"
"\n"
"modes (default: daemon)\n"
"  --once                    claim one batch, drain it, exit\n"
"  --backfill                queue every drawer not yet completed, drain, exit 0\n"
"  --backfill-limit N        queue at most N drawers\n"
"  --status [--json]         print queue counters and exit\n"
"  --dry-run FILE|- [--json] run the policy and the LLM on JSONL/plain-text drawers; no database\n"
"  --reapply [--reapply-drawer ID]  re-run parse/accept of the current policy over stored answers\n"
"  --adopt [--dry-run] [--requeue-empty]  take over a graph the Python worker wrote\n"
"  --prune [--dry-run]       retract the facts of drawers no longer in mempalace_drawers\n"
"  --follow-deletes on|off   install/remove the trigger on mempalace_drawers that re-queues a\n"
"                            deleted drawer so the daemon retracts it (DDL on MemPalace's table)\n"
"\n"
"connections\n"
"  --dsn DSN                 PostgreSQL (env MEMPALACE_POSTGRES_DSN); required except for --dry-run\n"
"  --endpoint URL[,URL...]   llama-server base URL(s) (env MEMPALACE_KG_LLM_ENDPOINT; default http://localhost:11436)\n"
"  --model NAME              model name sent to the server (env MEMPALACE_KG_LLM_MODEL; default phi-4-mini)\n"
"  --graph NAME              AGE graph (default mempalace_kg)\n"
"\n"
"policy\n"
"  --policy FILE             Lua policy (env KGX_POLICY; default: the installed prompts/default.lua)\n"
"  --ctx-size N              per-slot context in tokens (default: from the server's /props)\n"
"  env MEMPALACE_KG_MIN_CONFIDENCE (0.5), MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER (10, per LLM call)\n"
"\n"
"work\n"
"  --workers N               LLM requests in flight (default 8)\n"
"  --slots N                 slots per endpoint (default: the server's /props total_slots)\n"
"  --batch-size N            rows per claim (default 20)\n"
"  --poll-interval S         fallback poll when idle (default 30; NOTIFY wakes sooner)\n"
"  --lease-seconds S         claim lease (env MEMPALACE_KG_CLAIM_LEASE_SECONDS; default 900)\n"
"  --max-attempts N          attempts before a drawer is parked (default 5)\n"
"  --request-timeout S       total timeout of one LLM request (default 120)\n"
"  --no-keep-answers         do not store raw LLM answers (disables --reapply and answer reuse)\n"
"  --fresh-answers           ask the LLM even when the same request was answered before\n"
"                            (env KGX_FRESH_ANSWERS=1; answers are still stored)\n"
"  --worker-id ID            default host:pid:random\n"
"  --memory-budget SIZE      bytes held for drawers in flight, e.g. 64M, 1G (default 64M)\n"
"\n"
"observability\n"
"  --progress-interval S     progress line period (default 60)\n"
"  --http HOST:PORT          serve /kg-extract/status, /metrics, /healthz (loopback only unless\n"
"                            --http-allow-remote; env KGX_API_KEY requires X-API-Key)\n"
"  --log-level LEVEL         debug|info|warn|error (default info)\n"
"  --help, --version\n"
"\n"
"exit codes: 0 done, 1 runtime failure, 2 usage or configuration error\n";

const char *kgx_config_usage(void) { return usage_text; }

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = xstrdup(v);
}

char *kgx_config_endpoint_base(const char *url)
{
    if (!url) return NULL;
    while (isspace((unsigned char)*url)) url++;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) return NULL;
    char *s = strdup(url);
    if (!s) return NULL;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    size_t host_at = (size_t)(strstr(s, "://") - s) + 3;   /* the scheme was checked above */
    static const char *suffixes[] = { "/v1/chat/completions", "/chat/completions", "/completion",
                                      "/completions", "/v1", NULL };
    for (;;) {
        while (n > host_at && s[n - 1] == '/') s[--n] = 0;
        int stripped = 0;
        for (int i = 0; suffixes[i]; i++) {
            size_t k = strlen(suffixes[i]);
            if (n >= host_at + k && strcmp(s + n - k, suffixes[i]) == 0) {
                n -= k;
                s[n] = 0;
                stripped = 1;
                break;
            }
        }
        if (!stripped) break;
    }
    if (n <= host_at || s[host_at] == '/') { free(s); return NULL; }
    return s;
}

static int parse_int(const char *v, long lo, long hi, long *out)
{
    if (!v || !*v) return -1;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int parse_num(const char *v, double lo, double hi, double *out)
{
    if (!v || !*v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !isfinite(x) || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

/* memory budget: the one place its default lives (docs, the unit's MemoryMax and B10 follow it) */
#define KGX_MEMORY_BUDGET_DEFAULT ((size_t)64 << 20)
#define KGX_MEMORY_BUDGET_MIN     ((size_t)24 << 20)

/* "64M", "64MiB", "1G", "67108864": bytes with an optional K/M/G (binary) suffix. */
static int parse_bytes(const char *v, size_t lo, size_t hi, size_t *out)
{
    if (!v || !*v || !isdigit((unsigned char)*v)) return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno) return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift && (!strcasecmp(end, "iB") || !strcasecmp(end, "B"))) end += strlen(end);
    if (*end || x > (unsigned long long)hi >> shift) return -1;
    x <<= shift;
    if (x < lo || x > hi) return -1;
    *out = (size_t)x;
    return 0;
}

static int set_endpoints(kgx_config_t *c, const char *list, char *err, size_t errlen)
{
    for (int i = 0; i < c->n_endpoints; i++) free(c->endpoints[i]);
    c->n_endpoints = 0;
    char *copy = strdup(list), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        if (!*tok) continue;
        if (c->n_endpoints == KGX_MAX_ENDPOINTS) {
            snprintf(err, errlen, "error: --endpoint: at most %d endpoints", KGX_MAX_ENDPOINTS);
            rc = 2;
            break;
        }
        char *b = kgx_config_endpoint_base(tok);
        if (!b) {
            snprintf(err, errlen, "error: --endpoint: not an http(s) URL: %s", tok);
            rc = 2;
            break;
        }
        c->endpoints[c->n_endpoints++] = b;
    }
    free(copy);
    if (!rc && c->n_endpoints == 0) {
        snprintf(err, errlen, "error: --endpoint: no URL given");
        rc = 2;
    }
    return rc;
}

enum {
    O_DSN = 256, O_ENDPOINT, O_MODEL, O_POLICY, O_WORKERS, O_BATCH, O_POLL, O_LEASE, O_ATTEMPTS,
    O_TIMEOUT, O_GRAPH, O_BACKFILL, O_BACKFILL_LIMIT, O_PROGRESS, O_ONCE, O_STATUS, O_JSON,
    O_DRY_RUN, O_HTTP, O_HTTP_PUBLIC, O_WORKER_ID, O_LOG_LEVEL, O_HELP, O_VERSION, O_REAPPLY,
    O_REAPPLY_DRAWER, O_CTX, O_SLOTS, O_NO_KEEP, O_ADOPT, O_ADOPT_DRY, O_REQUEUE_EMPTY,
    O_PRUNE, O_FOLLOW_DELETES, O_FRESH,
    O_MEMORY_BUDGET
};

static const struct option options[] = {
    { "dsn", required_argument, 0, O_DSN },
    { "endpoint", required_argument, 0, O_ENDPOINT },
    { "model", required_argument, 0, O_MODEL },
    { "policy", required_argument, 0, O_POLICY },
    { "workers", required_argument, 0, O_WORKERS },
    { "batch-size", required_argument, 0, O_BATCH },
    { "poll-interval", required_argument, 0, O_POLL },
    { "lease-seconds", required_argument, 0, O_LEASE },
    { "max-attempts", required_argument, 0, O_ATTEMPTS },
    { "request-timeout", required_argument, 0, O_TIMEOUT },
    { "graph", required_argument, 0, O_GRAPH },
    { "backfill", no_argument, 0, O_BACKFILL },
    { "backfill-limit", required_argument, 0, O_BACKFILL_LIMIT },
    { "progress-interval", required_argument, 0, O_PROGRESS },
    { "once", no_argument, 0, O_ONCE },
    { "status", no_argument, 0, O_STATUS },
    { "json", no_argument, 0, O_JSON },
    { "dry-run", required_argument, 0, O_DRY_RUN },
    { "reapply", no_argument, 0, O_REAPPLY },
    { "reapply-drawer", required_argument, 0, O_REAPPLY_DRAWER },
    { "http", required_argument, 0, O_HTTP },
    { "http-allow-remote", no_argument, 0, O_HTTP_PUBLIC },
    { "worker-id", required_argument, 0, O_WORKER_ID },
    { "log-level", required_argument, 0, O_LOG_LEVEL },
    { "ctx-size", required_argument, 0, O_CTX },
    { "slots", required_argument, 0, O_SLOTS },
    { "no-keep-answers", no_argument, 0, O_NO_KEEP },
    { "fresh-answers", no_argument, 0, O_FRESH },
    { "memory-budget", required_argument, 0, O_MEMORY_BUDGET },
    { "adopt", no_argument, 0, O_ADOPT },
    { "adopt-dry-run", no_argument, 0, O_ADOPT_DRY },    /* --dry-run next to --adopt (see below) */
    { "requeue-empty", no_argument, 0, O_REQUEUE_EMPTY },
    { "prune", no_argument, 0, O_PRUNE },
    { "follow-deletes", required_argument, 0, O_FOLLOW_DELETES },
    { "help", no_argument, 0, O_HELP },
    { "version", no_argument, 0, O_VERSION },
    { 0, 0, 0, 0 }
};

int kgx_config_parse(kgx_config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->mode = KGX_MODE_DAEMON;
    c->max_in_flight = 8;
    c->batch_size = 20;
    c->poll_interval = 30;
    c->lease_seconds = 900;
    c->max_attempts = 5;
    c->request_timeout = 120;
    c->progress_interval = 60;
    c->log_level = KGX_LOG_INFO;
    c->min_confidence = KGX_DEFAULT_MIN_CONFIDENCE;
    c->max_triples = KGX_DEFAULT_MAX_TRIPLES;
    c->keep_answers = 1;
    c->hook_timeout_ms = KGX_DEFAULT_HOOK_TIMEOUT_MS;
    c->retry_base_ms = 1000;       /* [core] first retry backoff of a charged failure */
    c->memory_budget = KGX_MEMORY_BUDGET_DEFAULT;
    c->graph = strdup("mempalace_kg");
    c->model = strdup("phi-4-mini");
    err[0] = 0;

    /* environment first; flags override */
    const char *e;
    if ((e = getenv("MEMPALACE_POSTGRES_DSN")) && *e) set_str(&c->dsn, e);
    if ((e = getenv("MEMPALACE_KG_LLM_MODEL")) && *e) set_str(&c->model, e);
    if ((e = getenv("KGX_POLICY")) && *e) set_str(&c->policy, e);
    if ((e = getenv("KGX_API_KEY")) && *e) set_str(&c->api_key, e);
    int rc = set_endpoints(c, ((e = getenv("MEMPALACE_KG_LLM_ENDPOINT")) && *e) ? e : "http://localhost:11436",
                           err, errlen);
    if (rc) {
        /* name the variable, not the flag */
        snprintf(err, errlen, "error: MEMPALACE_KG_LLM_ENDPOINT: not an http(s) URL: %s", e);
        return 2;
    }
    if ((e = getenv("MEMPALACE_KG_CLAIM_LEASE_SECONDS")) && *e
        && parse_num(e, 1, 86400 * 7, &c->lease_seconds)) {
        snprintf(err, errlen, "error: MEMPALACE_KG_CLAIM_LEASE_SECONDS: expected seconds, got '%s'", e);
        return 2;
    }
    if ((e = getenv("MEMPALACE_KG_MIN_CONFIDENCE")) && *e && parse_num(e, 0, 1, &c->min_confidence)) {
        snprintf(err, errlen, "error: MEMPALACE_KG_MIN_CONFIDENCE: expected a number 0..1, got '%s'", e);
        return 2;
    }
    long l;
    /* [core] operator/test knobs without flags: KGX_HOOK_TIMEOUT_MS, KGX_RETRY_BASE_MS */
    if ((e = getenv("KGX_HOOK_TIMEOUT_MS")) && *e) {
        if (parse_int(e, 10, 3600000, &l)) {
            snprintf(err, errlen, "error: KGX_HOOK_TIMEOUT_MS: expected milliseconds 10..3600000, got '%s'", e);
            return 2;
        }
        c->hook_timeout_ms = (int)l;
    }
    if ((e = getenv("KGX_RETRY_BASE_MS")) && *e && parse_num(e, 1, 3600000, &c->retry_base_ms)) {
        snprintf(err, errlen, "error: KGX_RETRY_BASE_MS: expected milliseconds, got '%s'", e);
        return 2;
    }
    if ((e = getenv("MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER")) && *e) {
        if (parse_int(e, 1, 1000, &l)) {
            snprintf(err, errlen, "error: MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER: expected 1..1000, got '%s'", e);
            return 2;
        }
        c->max_triples = (int)l;
    }

    if ((e = getenv("KGX_FRESH_ANSWERS")) && *e) {
        if (strcmp(e, "0") && strcmp(e, "1")) {
            snprintf(err, errlen, "error: KGX_FRESH_ANSWERS: expected 0 or 1, got '%s'", e);
            return 2;
        }
        c->fresh_answers = *e == '1';
    }

    int backfill = 0, once = 0, status = 0, reapply = 0, adopt = 0, requeue_empty = 0, prune = 0, follow = 0;
    /* next to --adopt or --prune, --dry-run takes no FILE: it means "report only" */
    char *args[argc + 1];
    int with_adopt = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--adopt") || !strcmp(argv[i], "--prune")) with_adopt = 1;
    for (int i = 0; i < argc; i++)
        args[i] = with_adopt && !strcmp(argv[i], "--dry-run") ? (char *)"--adopt-dry-run" : argv[i];
    args[argc] = NULL;
    argv = args;
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "hV", options, NULL)) != -1) {
        const char *v = optarg;
        const char *name = NULL;
        for (const struct option *o = options; o->name; o++)
            if (o->val == opt) name = o->name;
#define BAD(fmt) do { snprintf(err, errlen, "error: --%s: " fmt, name, v); return 2; } while (0)
        switch (opt) {
        case O_DSN: set_str(&c->dsn, v); break;
        case O_ENDPOINT: if (set_endpoints(c, v, err, errlen)) return 2; break;
        case O_MODEL: set_str(&c->model, v); break;
        case O_POLICY: set_str(&c->policy, v); break;
        case O_WORKERS: if (parse_int(v, 1, 4096, &l)) BAD("expected 1..4096, got '%s'"); c->max_in_flight = (int)l; break;
        case O_BATCH: if (parse_int(v, 1, 10000, &l)) BAD("expected 1..10000, got '%s'"); c->batch_size = (int)l; break;
        case O_POLL: if (parse_num(v, 0.01, 86400, &c->poll_interval)) BAD("expected seconds, got '%s'"); break;
        case O_LEASE: if (parse_num(v, 1, 86400 * 7, &c->lease_seconds)) BAD("expected seconds, got '%s'"); break;
        case O_ATTEMPTS: if (parse_int(v, 1, 1000, &l)) BAD("expected 1..1000, got '%s'"); c->max_attempts = (int)l; break;
        case O_TIMEOUT: if (parse_num(v, 0.05, 86400, &c->request_timeout)) BAD("expected seconds, got '%s'"); break;
        case O_GRAPH: {
            /* every identifier derived from it must fit PostgreSQL's 63 bytes (core/names.c) */
            char why[400];
            if (kgx_names_check_graph(v, why, sizeof why)) {
                snprintf(err, errlen, "error: --graph: %s", why);
                return 2;
            }
            set_str(&c->graph, v);
            break;
        }
        case O_BACKFILL: backfill = 1; break;
        case O_BACKFILL_LIMIT:
            if (parse_int(v, 1, 1L << 40, &l)) BAD("expected a positive count, got '%s'");
            c->backfill_limit = l;
            backfill = 1;
            break;
        case O_PROGRESS: if (parse_num(v, 0.1, 86400, &c->progress_interval)) BAD("expected seconds, got '%s'"); break;
        case O_ONCE: once = 1; break;
        case O_STATUS: status = 1; break;
        case O_JSON: c->json = 1; break;
        case O_DRY_RUN: set_str(&c->dry_run_input, v); break;
        case O_REAPPLY: reapply = 1; break;
        case O_REAPPLY_DRAWER: set_str(&c->reapply_where, v); reapply = 1; break;
        case O_HTTP: set_str(&c->http_listen, v); break;
        case O_HTTP_PUBLIC: c->http_public = 1; break;
        case O_WORKER_ID:
            if (!*v || strlen(v) > 200) BAD("expected 1-200 characters, got '%s'");
            set_str(&c->worker_id, v);
            break;
        case O_LOG_LEVEL:
            if ((c->log_level = kgx_log_level_parse(v)) < 0) BAD("expected debug|info|warn|error, got '%s'");
            break;
        case O_CTX: if (parse_int(v, 64, 1 << 24, &l)) BAD("expected 64..16777216 tokens, got '%s'"); c->n_ctx = (int)l; break;
        case O_SLOTS: if (parse_int(v, 1, 1024, &l)) BAD("expected 1..1024, got '%s'"); c->slots = (int)l; break;
        case O_NO_KEEP: c->keep_answers = 0; break;
        case O_FRESH: c->fresh_answers = 1; break;
        case O_MEMORY_BUDGET:
            if (parse_bytes(v, KGX_MEMORY_BUDGET_MIN, (size_t)1 << 40, &c->memory_budget))
                BAD("expected a size from 24M to 1024G (e.g. 64M, 1G), got '%s'");
            break;
        case O_ADOPT: adopt = 1; break;
        case O_ADOPT_DRY: c->adopt_dry_run = 1; break;
        case O_REQUEUE_EMPTY: requeue_empty = 1; break;
        case O_PRUNE: prune = 1; break;
        case O_FOLLOW_DELETES:
            if (!strcmp(v, "on")) c->follow_deletes = 1;
            else if (!strcmp(v, "off")) c->follow_deletes = 0;
            else BAD("expected on or off, got '%s'");
            follow = 1;
            break;
        case 'h': case O_HELP: c->mode = KGX_MODE_HELP; return 0;
        case 'V': case O_VERSION: c->mode = KGX_MODE_VERSION; return 0;
        case '?':
        default:
            if (optopt && optopt < 256)
                snprintf(err, errlen, "error: unknown option -%c (see --help)", optopt);
            else if (optopt)
                snprintf(err, errlen, "error: %s needs a value (see --help)", argv[optind - 1]);
            else
                snprintf(err, errlen, "error: unknown option %s (see --help)", argv[optind - 1]);
            return 2;
        }
#undef BAD
    }
    if (optind < argc) {
        snprintf(err, errlen, "error: unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    int modes = backfill + once + status + (c->dry_run_input != NULL) + reapply + adopt + prune + follow;
    if (modes > 1) {
        snprintf(err, errlen, "error: choose one of --backfill, --once, --status, --dry-run, --reapply, --adopt,"
                 " --prune, --follow-deletes");
        return 2;
    }
    if (requeue_empty && !adopt) {
        snprintf(err, errlen, "error: --requeue-empty goes with --adopt");
        return 2;
    }
    c->requeue_empty = requeue_empty;
    if (adopt) c->mode = KGX_MODE_ADOPT;
    else if (prune) c->mode = KGX_MODE_PRUNE;
    else if (follow) c->mode = KGX_MODE_FOLLOW_DELETES;
    else if (backfill) c->mode = KGX_MODE_BACKFILL;
    else if (once) c->mode = KGX_MODE_ONCE;
    else if (status) c->mode = KGX_MODE_STATUS;
    else if (c->dry_run_input) c->mode = KGX_MODE_DRY_RUN;
    else if (reapply) c->mode = KGX_MODE_REAPPLY;
    if (c->json && c->mode != KGX_MODE_STATUS && c->mode != KGX_MODE_DRY_RUN) {
        snprintf(err, errlen, "error: --json goes with --status or --dry-run");
        return 2;
    }
    if (c->mode != KGX_MODE_DRY_RUN && (!c->dsn || !*c->dsn)) {
        snprintf(err, errlen, "error: --dsn is required (or set MEMPALACE_POSTGRES_DSN)");
        return 2;
    }
    return 0;
}

void kgx_config_free(kgx_config_t *c)
{
    if (!c) return;
    free(c->dsn);
    for (int i = 0; i < c->n_endpoints; i++) free(c->endpoints[i]);
    free(c->model);
    free(c->policy);
    free(c->graph);
    free(c->dry_run_input);
    free(c->http_listen);
    free(c->api_key);
    free(c->worker_id);
    free(c->reapply_where);
    memset(c, 0, sizeof *c);
}
