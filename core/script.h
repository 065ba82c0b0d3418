/* script — the Lua policy host. Only core/script*.c include lua.h.
 *
 * A policy (prompts/NAME.lua) and the plugins it `require`s (resolved only inside the plugins
 * directory) are loaded as text only into a whitelisted environment. Hooks are Lua globals looked
 * up once at load:
 *
 *   split(drawer, ctx)            -> list of chunks (strings or tables); default: { drawer.document }
 *   request(chunk, drawer, ctx)   -> { path=..., body=table-or-string, timeout_ms=? }   (required)
 *   parse(body, chunk, drawer)    -> list of raw triples, verdict ("whole"|"incomplete")   (required)
 *   accept(triple, drawer)        -> triple to write, or nil, reason; default: keep as is
 *   skip(chunk, drawer)           -> a reason (truthy) to complete the chunk with no LLM request, or
 *                                    nil; default: plugins/text.lua's skip (fewer than 3 letters outside
 *                                    markup); `skip = false` turns it off. Run right after split.
 *
 * Metadata globals `name` and `version` (strings) name the policy in logs, status and stored answers.
 * A hook global of the wrong type is a load error naming file and hook. Every call runs under
 * lua_pcall with a traceback and a watchdog (instruction-count hook with the JIT off for policy
 * code); every state has its own allocator that refuses any allocation past the memory ceiling
 * (a catchable "not enough memory"). An error fails that drawer's attempt with the message, never
 * the daemon. Sizes returned by hooks are capped (see kgx_script_opts_t) before anything is copied.
 *
 * The `kgx` table exposed to scripts:
 *   kgx.json.encode(v) -> string | raises;  kgx.json.decode(s) -> value | nil, err;  kgx.json.null
 *   kgx.log(level, msg)        level "debug"|"info"|"warn"|"error"
 *   kgx.tokens(s)              conservative token estimate (ceil(bytes / 3))
 *   kgx.config                 { model, n_ctx (per-slot context, 0 = unknown), min_confidence,
 *                                max_triples, policy_dir, plugins_dir }  (read-mostly copy)
 *   kgx.utf8_valid(s)          true when s is valid UTF-8 without NUL bytes
 * ctx passed to split/request: { n_ctx, shrink (count of context-size errors so far for this
 *   drawer: budget with n_ctx * 0.7^shrink), attempt, model, endpoint, max_tokens (split only, and
 *   only when the host re-splits one chunk whose answer was cut at n_predict: pieces of at most this
 *   many tokens) }
 * drawer: { id, wing, room, document, metadata (decoded table or nil) }
 *
 * Data lives in C, not in a Lua state: a drawer is a kgx_drawer_t, a chunk a kgx_chunk_t (a string,
 * or a table kept as its JSON text and decoded again for each hook), so any state built from the same
 * policy text can run any hook of any drawer — and a state can be thrown away with nothing lost.
 *
 * Threads: a kgx_script_t is used by one thread at a time (hooks.c gives each hook thread its own);
 * kgx_policy_src_t (the policy text) is shared read-only once loaded. kgx_script_running() is the one
 * call another thread may make on a state.
 */
#ifndef KGX_SCRIPT_H
#define KGX_SCRIPT_H

#include <stddef.h>
#include "triple.h"

typedef struct kgx_script kgx_script_t;
typedef struct kgx_policy_src kgx_policy_src_t;

/* Which policy code ran (or failed): the failing hook is passed explicitly, never guessed from text. */
/* KGX_HOOK_SKIP: economy (issue 14) */
typedef enum { KGX_HOOK_SPLIT, KGX_HOOK_REQUEST, KGX_HOOK_PARSE, KGX_HOOK_ACCEPT, KGX_HOOK_SKIP, KGX_HOOK_LOAD,
               KGX_HOOK_N } kgx_hook_t;
const char *kgx_hook_name(kgx_hook_t h);   /* "split" ... "load" */

typedef struct {
    const char *policy_path;   /* prompts/default.lua (required) */
    const char *plugins_dir;   /* NULL: "<dir of policy>/../plugins" */
    const char *model;
    int n_ctx;                 /* per-slot context; 0 unknown */
    double min_confidence;     /* MEMPALACE_KG_MIN_CONFIDENCE; 0: KGX_DEFAULT_MIN_CONFIDENCE (config.h) */
    int max_triples;           /* MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER (per LLM call); 0: the default */
    int hook_timeout_ms;       /* watchdog per hook call; default KGX_DEFAULT_HOOK_TIMEOUT_MS */
    size_t max_memory;         /* Lua heap ceiling in bytes per state; default 256 MiB */
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

/* Deep copy into one allocation (free with free()); NULL on out of memory. */
kgx_drawer_t *kgx_drawer_dup(const kgx_drawer_t *d);

typedef struct {
    int n_ctx;                 /* per-slot context of the chosen endpoint, 0 unknown */
    int shrink;
    int attempt;
    const char *endpoint;      /* base URL, may be NULL */
    int max_tokens;            /* [answer] > 0: re-splitting one cut chunk, pieces of at most this */
} kgx_ctx_t;

/* One chunk split returned: a string, or a table kept as JSON (table = 1). */
typedef struct {
    char *text;
    size_t len;
    int table;
    int tokens;                /* kgx.tokens of the string, or of the table's `text`; -1 unknown */
} kgx_chunk_t;
void kgx_chunks_free(kgx_chunk_t *v, size_t n);   /* NULL ok */

typedef struct {
    char *path;                /* e.g. "/completion"; malloc'd */
    char *body;                /* JSON text (tables are encoded by the host); malloc'd */
    size_t body_len;
    int timeout_ms;            /* 0: use the daemon's --request-timeout */
} kgx_request_t;
void kgx_request_clear(kgx_request_t *r);
/* After a hook call (split, request or answer) on a state: its drawer's document is no longer
 * readable (drawer.document is read on access, see script_marshal.c), and a large document the call
 * read is collected now, so a state holds one only while a hook uses it. */
void kgx_script_call_done(kgx_script_t *s);

/* ---- policy text */

/* Reads the policy file (the plugins are read by the first load). NULL + err on failure. */
kgx_policy_src_t *kgx_policy_src_read(const kgx_script_opts_t *opts, char *err, size_t errlen);
/* The same file and options read again (reload). */
kgx_policy_src_t *kgx_policy_src_reread(const kgx_policy_src_t *old, char *err, size_t errlen);
kgx_policy_src_t *kgx_policy_src_ref(kgx_policy_src_t *src);
void kgx_policy_src_unref(kgx_policy_src_t *src);          /* NULL ok */
/* After a successful load: the policy's name and version. */
const char *kgx_policy_src_name(const kgx_policy_src_t *src);
const char *kgx_policy_src_version(const kgx_policy_src_t *src);
const char *kgx_policy_src_path(const kgx_policy_src_t *src);
const char *kgx_policy_src_plugins_dir(const kgx_policy_src_t *src);
int kgx_policy_src_timeout_ms(const kgx_policy_src_t *src);
/* A reload must not lose a hook the running policy defines (its vocabulary, threshold and stopwords
 * live in accept: without it everything would be kept), unless the new policy declares it, e.g.
 * defaults = { "accept" }. 0 when `fresh` may replace `old`, else -1 with err. */
int kgx_policy_src_check_reload(const kgx_policy_src_t *old, const kgx_policy_src_t *fresh, char *err, size_t errlen);
/* "prompts/x.lua:41": where hook h is defined ("" for a default or the load), for messages that
 * cannot ask the Lua state (an abandoned one). */
const char *kgx_policy_src_hook_where(const kgx_policy_src_t *src, kgx_hook_t h);

/* ---- a state */

/* Loads the policy file. NULL on failure with a one-line message in err ("prompts/x.lua:12: ..."). */
kgx_script_t *kgx_script_new(const kgx_script_opts_t *opts, char *err, size_t errlen);
/* Builds a state from policy text (takes its own ref); the first build seals src. */
kgx_script_t *kgx_script_new_src(kgx_policy_src_t *src, char *err, size_t errlen);
/* Reloads the policy file into a fresh state; swaps only on success (0), else keeps the old one and
 * returns -1 with err set. Jobs created before stay valid. */
int kgx_script_reload(kgx_script_t *s, char *err, size_t errlen);
void kgx_script_free(kgx_script_t *s);              /* NULL ok */
kgx_policy_src_t *kgx_script_src(const kgx_script_t *s);   /* borrowed */
const char *kgx_script_name(const kgx_script_t *s);
const char *kgx_script_version(const kgx_script_t *s);
const char *kgx_script_path(const kgx_script_t *s);
const char *kgx_script_plugins_dir(const kgx_script_t *s);
/* Update kgx.config.n_ctx (the server's per-slot context learned from /props). */
void kgx_script_set_n_ctx(kgx_script_t *s, int n_ctx);
/* The hook this state is running now, or -1. Any thread. */
int kgx_script_running(const kgx_script_t *s);

/* ---- one hook call on C data (what hook threads run). On error: -1, the failing hook in *failed,
 * the message in err. Outputs are the caller's (free with kgx_chunks_free/kgx_request_clear/
 * kgx_result_clear). */
int kgx_script_run_split(kgx_script_t *s, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                         kgx_chunk_t **chunks, size_t *n, kgx_hook_t *failed, char *err, size_t errlen);
/* economy (issue 14): chunks the skip hook took out of the last run_split on this state (they are
 * completed with no request and are not in its list). Read on the thread that ran the split. */
size_t kgx_script_skipped_last(const kgx_script_t *s);
int kgx_script_run_request(kgx_script_t *s, const kgx_drawer_t *d, const kgx_chunk_t *c,
                           const kgx_ctx_t *ctx, kgx_request_t *out, kgx_hook_t *failed,
                           char *err, size_t errlen);
/* parse on the answer body (c == NULL: chunk = nil), then accept on each raw triple. */
int kgx_script_run_answer(kgx_script_t *s, const kgx_drawer_t *d, const kgx_chunk_t *c,
                          const char *body, size_t len, kgx_result_t *out, kgx_hook_t *failed,
                          char *err, size_t errlen);

/* [dropin] accept on one host-built raw triple {subject, predicate, object, confidence} (no parse):
 * 0 with *out filled (free its fields), 1 rejected (reason in why), -1 the hook failed (err). --adopt
 * maps old predicates through the policy with it (hooks.c: kgx_hooks_accept). */
int kgx_script_run_accept(kgx_script_t *s, const kgx_drawer_t *d, const char *subject, const char *predicate,
                          const char *object, double confidence, kgx_triple_t *out, char *why, size_t whylen,
                          kgx_hook_t *failed, char *err, size_t errlen);

/* ---- jobs on one state (unit tests): the drawer and its chunks kept in C under an int id */

/* Runs split. On success returns a job id (>0) and the number of chunks in *nchunks
 * (0 is allowed: nothing to ask). On error returns -1 with err set. */
int kgx_script_split(kgx_script_t *s, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                     size_t *nchunks, char *err, size_t errlen);
/* Creates a job without running split (the hooks get chunk = nil, as for --reapply's stored answers). Returns the id (>0) or -1 with err set. */
int kgx_script_job_new(kgx_script_t *s, const kgx_drawer_t *d, char *err, size_t errlen);
/* Token estimate of chunk i (kgx.tokens of its text) for reports; -1 if unknown. */
int kgx_script_chunk_tokens(kgx_script_t *s, int job, size_t i);
/* Runs request for chunk i (0-based). Fills *out (caller frees with kgx_request_clear). */
int kgx_script_request(kgx_script_t *s, int job, size_t i, const kgx_ctx_t *ctx,
                       kgx_request_t *out, char *err, size_t errlen);
/* Runs parse on the answer body for chunk i (i beyond the chunks: chunk = nil), then accept on each
 * raw triple. Accepted triples and drops go to *out (caller frees with kgx_result_clear). */
int kgx_script_answer(kgx_script_t *s, int job, size_t i, const char *body, size_t len,
                      kgx_result_t *out, char *err, size_t errlen);
/* Releases the job. Unknown/0 ids are a no-op. */
void kgx_script_job_free(kgx_script_t *s, int job);

#endif
