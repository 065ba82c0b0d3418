/* script — the Lua policy host. The only file that includes lua.h.
 *
 * One lua_State on the loop thread. A policy (prompts/NAME.lua) and the plugins it `require`s
 * (resolved only inside the plugins directory) are loaded as text only into a whitelisted
 * environment. Hooks are Lua globals looked up once at load:
 *
 *   split(drawer, ctx)            -> list of chunks (strings or tables); default: { drawer.document }
 *   request(chunk, drawer, ctx)   -> { path=..., body=table-or-string, timeout_ms=? }   (required)
 *   parse(body, chunk, drawer)    -> list of raw triples;                                (required)
 *   accept(triple, drawer)        -> triple to write, or nil, reason; default: keep as is
 *
 * Metadata globals `name` and `version` (strings) name the policy in logs, status and stored answers.
 * A hook global of the wrong type is a load error naming file and hook. Every call runs under
 * lua_pcall with a traceback and a watchdog (instruction-count hook with the JIT off for policy
 * code, plus a memory ceiling); an error fails that drawer's attempt with the message, never the
 * daemon. Sizes returned by hooks are capped (see kgx_script_opts_t).
 *
 * The `kgx` table exposed to scripts:
 *   kgx.json.encode(v) -> string | raises;  kgx.json.decode(s) -> value | nil, err;  kgx.json.null
 *   kgx.log(level, msg)        level "debug"|"info"|"warn"|"error"
 *   kgx.tokens(s)              conservative token estimate (ceil(bytes / 3))
 *   kgx.config                 { model, n_ctx (per-slot context, 0 = unknown), min_confidence,
 *                                max_triples, policy_dir, plugins_dir }  (read-mostly copy)
 *   kgx.utf8_valid(s)          true when s is valid UTF-8 without NUL bytes
 * ctx passed to split/request: { n_ctx, shrink (count of context-size errors so far for this
 *   drawer: budget with n_ctx * 0.7^shrink), attempt, model, endpoint }
 * drawer: { id, wing, room, document, metadata (decoded table or nil) }
 *
 * A job (one drawer's policy state: its drawer table and chunks) lives in the Lua registry
 * between calls and is identified by an int reference.
 */
#ifndef KGX_SCRIPT_H
#define KGX_SCRIPT_H

#include <stddef.h>

typedef struct kgx_script kgx_script_t;

typedef struct {
    const char *policy_path;   /* prompts/default.lua (required) */
    const char *plugins_dir;   /* NULL: "<dir of policy>/../plugins" */
    const char *model;
    int n_ctx;                 /* per-slot context; 0 unknown */
    double min_confidence;     /* MEMPALACE_KG_MIN_CONFIDENCE, default 0.5 */
    int max_triples;           /* MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER, default 10 (per LLM call) */
    int hook_timeout_ms;       /* watchdog per hook call; default 2000 */
    size_t max_memory;         /* Lua heap ceiling in bytes; default 256 MiB */
    size_t max_chunks;         /* cap on split's list; default 4096 */
    size_t max_body;           /* cap on request body bytes; default 4 MiB */
    size_t max_triples_raw;    /* cap on parse's list; default 1000 */
} kgx_script_opts_t;

typedef struct {
    const char *id, *wing, *room;   /* wing/room may be NULL */
    const char *document;
    size_t document_len;
    const char *metadata_json;      /* may be NULL */
} kgx_drawer_t;

typedef struct {
    int n_ctx;                 /* per-slot context of the chosen endpoint, 0 unknown */
    int shrink;
    int attempt;
    const char *endpoint;      /* base URL, may be NULL */
} kgx_ctx_t;

typedef struct {
    char *path;                /* e.g. "/completion"; malloc'd */
    char *body;                /* JSON text (tables are encoded by the host); malloc'd */
    size_t body_len;
    int timeout_ms;            /* 0: use the daemon's --request-timeout */
} kgx_request_t;

typedef struct {
    char *subject, *predicate, *object;   /* predicate = canonical relation_type */
    char *raw_predicate;                   /* may be NULL */
    double confidence;                     /* 0..1 */
} kgx_triple_t;

typedef struct {
    char *subject, *predicate, *object;   /* as the model sent them (stringified), may be NULL */
    char *reason;
} kgx_drop_t;

typedef struct {
    kgx_triple_t *triples; size_t n_triples;
    kgx_drop_t *drops;     size_t n_drops;
} kgx_result_t;

/* Loads the policy. NULL on failure with a one-line message in err ("prompts/x.lua:12: ..."). */
kgx_script_t *kgx_script_new(const kgx_script_opts_t *opts, char *err, size_t errlen);
/* Reloads the policy file into a fresh environment; swaps only on success (0), else keeps the
 * old one and returns -1 with err set. Jobs created before stay valid. */
int kgx_script_reload(kgx_script_t *s, char *err, size_t errlen);
void kgx_script_free(kgx_script_t *s);              /* NULL ok */
const char *kgx_script_name(const kgx_script_t *s);
const char *kgx_script_version(const kgx_script_t *s);
const char *kgx_script_path(const kgx_script_t *s);
const char *kgx_script_plugins_dir(const kgx_script_t *s);
/* Update kgx.config.n_ctx (the server's per-slot context learned from /props). */
void kgx_script_set_n_ctx(kgx_script_t *s, int n_ctx);

/* Runs split. On success returns a job ref (>0) and the number of chunks in *nchunks
 * (0 is allowed: nothing to ask). On error returns -1 with err set. */
int kgx_script_split(kgx_script_t *s, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                     size_t *nchunks, char *err, size_t errlen);
/* Creates a job without running split (used by --reapply: stored answers are re-parsed with
 * chunk = nil). Returns the ref (>0) or -1 with err set. */
int kgx_script_job_new(kgx_script_t *s, const kgx_drawer_t *d, char *err, size_t errlen);
/* Token estimate of chunk i (kgx.tokens of its text) for reports; -1 if unknown. */
int kgx_script_chunk_tokens(kgx_script_t *s, int job, size_t i);
/* Runs request for chunk i (0-based). Fills *out (caller frees with kgx_request_clear). */
int kgx_script_request(kgx_script_t *s, int job, size_t i, const kgx_ctx_t *ctx,
                       kgx_request_t *out, char *err, size_t errlen);
void kgx_request_clear(kgx_request_t *r);
/* Runs parse on the answer body for chunk i (i beyond the chunks: chunk = nil), then accept on each raw triple. Accepted
 * triples and drops go to *out (caller frees with kgx_result_clear). A parse error is -1. */
int kgx_script_answer(kgx_script_t *s, int job, size_t i, const char *body, size_t len,
                      kgx_result_t *out, char *err, size_t errlen);
void kgx_result_clear(kgx_result_t *r);
/* [dropin] Runs accept on one host-built raw triple {subject, predicate, object, confidence} (no parse):
 * 0 with *out filled (free with kgx_result-style frees of its fields), 1 rejected (reason in why),
 * -1 the hook failed (err). Used by --adopt to map old predicates through the policy. */
int kgx_script_accept_one(kgx_script_t *s, int job, const char *subject, const char *predicate,
                          const char *object, double confidence, kgx_triple_t *out,
                          char *why, size_t whylen, char *err, size_t errlen);
/* Releases the job's registry state. Unknown/0 refs are a no-op. */
void kgx_script_job_free(kgx_script_t *s, int job);

#endif
