/* hooks — policy hooks off the event loop: a small pool of hook threads, each with its own Lua state
 * (own allocator and ceiling, own lua-cjson) built from the policy text.
 *
 * Why threads and not a child process: a hook's inputs and outputs are plain C data that cross by
 * pointer, with no serialisation on the hot path (three calls per drawer), and a state that will not
 * come back is simply never touched again. The price: a thread stuck inside one C call (a pattern
 * match that backtracks for minutes) cannot be killed and keeps a core busy until the call returns.
 * So at most KGX_HOOK_MAX_ABANDONED abandoned threads may exist at once; at the cap the pool calls
 * on_cap and the engine stops claiming, gives its rows back and exits 1 with a clear line: systemd
 * restarts the service, and a new process has no stuck threads. (SIGTERM never waits for them
 * either: a stuck thread is not joined.)
 *
 * Contract: calls are submitted and their callbacks run on the loop thread; a callback runs exactly
 * once unless the call was cancelled first (then never). A hook running past the watchdog limit
 * (also inside a C function, where the Lua debug hook cannot fire) fails with
 * "watchdog: hook 'parse' exceeded N ms": a loop timer notices it, abandons that state and starts a
 * replacement thread whose state is built from the same policy text. Every call carries the policy
 * text (kgx_policy_src_t) its drawer started with; a reload only changes what new drawers get. */
#ifndef KGX_HOOKS_H
#define KGX_HOOKS_H

#include <uv.h>
#include "script.h"

#define KGX_HOOK_THREADS 4          /* at most this many hook threads (states) side by side */
#define KGX_HOOK_MAX_ABANDONED 4    /* stuck threads allowed at once; at the cap: on_cap */
#define KGX_HOOK_GRACE_MS 1000      /* past the limit, before the loop gives a state up: a hook in Lua
                                     * code stops itself at the limit; one inside a C call (a huge
                                     * string.rep under a slow allocator) gets this much slack */
#define KGX_HOOK_TICK_MS 100        /* how often the loop looks at running hooks */
#define KGX_HOOK_SLOW_MS 20         /* a call running this long no longer counts as taking the queue:
                                     * another thread is woken for what waits (hooks.c, staff) */

typedef struct kgx_hooks kgx_hooks_t;
typedef struct kgx_hook_call kgx_hook_call_t;

/* One drawer shared by its hook calls (refcounted, immutable): a 10 MB drawer split into 1,000
 * chunks is not copied for each request and parse. Any thread may drop a reference. */
typedef struct kgx_drawer_box kgx_drawer_box_t;
kgx_drawer_box_t *kgx_drawer_box_new(const kgx_drawer_t *d);   /* refcount 1; NULL on out of memory */
void kgx_drawer_box_unref(kgx_drawer_box_t *b);                 /* NULL ok */

/* What a call gave. The callback may take the outputs (then clear what it took: NULL / zero). */
typedef struct {
    int rc;                      /* 0, or -1 with err and failed */
    kgx_hook_t failed;
    int abandoned;               /* the watchdog gave up on the state */
    const char *err;
    kgx_chunk_t *chunks;         /* split */
    size_t nchunks;
    size_t skipped;              /* split: chunks the skip hook completed with no request (issue 14) */
    kgx_request_t request;       /* request */
    kgx_result_t result;         /* answer */
    int rejected;                /* accept: 1 rejected (why), 0 kept (triple) */
    kgx_triple_t triple;         /* accept */
    const char *why;             /* accept (valid during the callback) */
    const char *body;            /* answer: the body that was parsed (valid during the callback) */
    size_t body_len;
    kgx_policy_src_t *src;       /* the policy text the call ran (borrowed) */
} kgx_hook_outcome_t;

typedef void (*kgx_hook_cb)(kgx_hook_outcome_t *o, void *ud);

/* Starts the pool with one hook thread that takes `first` (a state the caller loaded; owned, its
 * policy text becomes the current one); another thread is woken or started, up to KGX_HOOK_THREADS,
 * only while calls wait behind ones running for KGX_HOOK_SLOW_MS (hooks.c, staff), so a process whose
 * hooks are quick holds one Lua state. NULL + err on failure. */
kgx_hooks_t *kgx_hooks_new(uv_loop_t *loop, kgx_script_t *first, void (*on_cap)(void *ud), void *ud,
                           char *err, size_t errlen);
/* Joins idle threads, abandons running ones (never waits for a stuck hook); NULL ok. Call before
 * uv_loop_close: closes its handles with uv_close and runs the loop once. */
void kgx_hooks_free(kgx_hooks_t *h);
kgx_policy_src_t *kgx_hooks_src(const kgx_hooks_t *h);        /* current policy text (borrowed) */
void kgx_hooks_set_n_ctx(kgx_hooks_t *h, int n_ctx);           /* kgx.config.n_ctx of every state */
int kgx_hooks_abandoned(kgx_hooks_t *h);                       /* stuck threads alive now */
int kgx_hooks_threads(kgx_hooks_t *h);                         /* hook threads alive, not abandoned */

/* Submit one hook call on copies of the inputs (src NULL: the current text). logctx prefixes the
 * thread's log lines ("drawer=… attempt=…"). NULL only on out of memory (cb never called). */
kgx_hook_call_t *kgx_hooks_split(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                 const kgx_ctx_t *ctx, const char *logctx, kgx_hook_cb cb, void *ud);
kgx_hook_call_t *kgx_hooks_request(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                   const kgx_chunk_t *c, const kgx_ctx_t *ctx, const char *logctx,
                                   kgx_hook_cb cb, void *ud);
kgx_hook_call_t *kgx_hooks_answer(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                  const kgx_chunk_t *c, const char *body, size_t len, const char *logctx,
                                  kgx_hook_cb cb, void *ud);
/* [dropin] --adopt: accept on one host-built raw triple (no parse), kgx_script_run_accept. */
kgx_hook_call_t *kgx_hooks_accept(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d, const char *subject,
                                  const char *predicate, const char *object, double confidence,
                                  const char *logctx, kgx_hook_cb cb, void *ud);
/* Re-reads the policy file and loads it on a hook thread; on success it becomes the current text.
 * The callback gets rc/err (src = the new text). -1 (err set, no callback) when the file cannot be read. */
int kgx_hooks_reload(kgx_hooks_t *h, kgx_hook_cb cb, void *ud, char *err, size_t errlen);
/* The callback will not run; the call is freed when its thread is done with it. NULL ok. */
void kgx_hooks_cancel(kgx_hook_call_t *c);

#endif
