/* script_int — what the script_*.c files share. Not an API: only core/script*.c include it (and
 * only they include lua.h).
 *
 * Files by concern (as lua-nginx-module gives each API area its own file):
 *   script.c          the public calls: one drawer's split/request/answer on one state, C jobs
 *   script_sandbox.c  the allocator with its ceiling, the watchdog, guarded calls, the sandbox
 *                     environment (pcall/xpcall/print/require), error folding
 *   script_api.c      the `kgx` table exposed to policies
 *   script_load.c     policy text (kgx_policy_src_t), building a state from it, loading hooks
 *   script_marshal.c  C -> Lua (drawer, ctx, chunks) and Lua -> C (chunks, request, triples, drops),
 *                     with the size caps checked before anything is copied
 *
 * Threads: a script_vm_t (one lua_State and everything reachable from it) belongs to exactly one
 * thread at a time and is never shared; the only field another thread may read is `running` (an
 * atomic). A kgx_policy_src_t is immutable once sealed and may be read from any thread. */
#ifndef KGX_SCRIPT_INT_H
#define KGX_SCRIPT_INT_H

#include "script.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#define WATCHDOG_COUNT 10000          /* VM instructions between watchdog checks */
#define MAX_FIELD_BYTES 4096          /* subject/predicate/object after accept */
#define MAX_PATH_BYTES 2048           /* request path */
#define MAX_MODULE_NAME 128

/* Everything a load needs besides the text: copied from kgx_script_opts_t, immutable. */
typedef struct {
    char *path, *plugins_dir, *policy_dir, *model, *base_name;
    int n_ctx, max_triples, hook_timeout_ms;
    double min_confidence;
    size_t max_memory, max_chunks, max_body, max_triples_raw;
} script_conf_t;

typedef struct { char *name, *text; size_t len; } script_module_t;

/* The policy as text: what a fresh state is built from (also a replacement for an abandoned one),
 * never re-read from disk once sealed. Refcounted; the first load fills plugins/name/version and
 * seals it (until then one thread owns it). */
struct kgx_policy_src {
    atomic_int refs;
    int sealed;
    script_conf_t conf;
    char *text;
    size_t len;
    script_module_t *mods;     /* plugins the first load required, by module name */
    size_t nmods;
    char *name, *version;      /* set by the first load */
    char hook_where[KGX_HOOK_N][160];   /* "prompts/x.lua:41" where each Lua hook is defined, or "" */
    int declares_default[KGX_HOOK_N];   /* named in the policy's `defaults` list */
};

/* One loaded policy: registry refs into its state. */
typedef struct {
    int env;                   /* the policy's environment table */
    int kgx;                   /* its kgx table (kgx.config is updated in place) */
    int hook[KGX_HOOK_N];      /* LUA_NOREF = default (split/accept) or not a Lua hook (load) */
} kgx_policy_t;

/* Allocator accounting: the ceiling holds for every allocation, one huge one included. The memory
 * itself comes from the state's own allocator (LuaJIT's, one heap per state: no lock shared with
 * other threads), which script_alloc wraps: base/based are what luaL_newstate gave the state. */
typedef struct {
    size_t used, limit;
    lua_Alloc base;
    void *based;
} script_mem_t;

typedef struct script_vm {
    lua_State *L;
    script_mem_t mem;          /* the allocator's ud: a vm never moves */
    kgx_policy_src_t *src;     /* owned ref */
    const script_conf_t *conf; /* &src->conf */
    int n_ctx;
    int cj_encode, cj_decode;  /* registry refs: this state's own lua-cjson instance */
    kgx_policy_t pol;
    const char *log_name;      /* print/kgx.log: the policy's name, or the file's while loading */
    /* watchdog */
    int armed, tripped, trip_memory;
    struct timespec deadline;
    const char *label_fmt;     /* "hook '%s'" or "load of %s", with label_arg: formatted only */
    const char *label_arg;     /* when a message names the call (script_label) */
    char trip_msg[512];
    atomic_int running;        /* kgx_hook_t being run, -1 when idle; read by other threads */
    size_t skipped_last;       /* economy (issue 14): chunks the last run_split's skip hook took out */
    int doc_big;               /* the running call made a large document a Lua string (script_call_done) */
    const kgx_drawer_t *drawer_cur;   /* the drawer of the hook call running (drawer.document reads it) */
    lua_Integer drawer_gen;    /* bumped by every drawer table pushed: an older table's document is gone */
} script_vm_t;

/* script_sandbox.c */
void script_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reads a whole file (at most 64 MiB); NULL with err set (err may be NULL) when it cannot. */
char *script_read_file(const char *path, size_t *len, char *err, size_t errlen);
void script_fold_error(char *err, size_t errlen, const char *prefix, const char *msg);
char *script_dup_lstr(const char *p, size_t n);
char *script_dup_str(const char *p);
char *script_dup_sanitized(const char *s, size_t n);
void script_rawfield(lua_State *L, int idx, const char *key);
void *script_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
void script_watchdog_hook(lua_State *L, lua_Debug *ar);
void script_arm(script_vm_t *s, const char *fmt, const char *arg);
int script_call_guarded(script_vm_t *s, int nargs, int nres, const char *prefix, char *err, size_t errlen);
int script_call_hook(script_vm_t *s, kgx_hook_t h, int nargs, int nres, char *err, size_t errlen);
void script_push_sandbox_env(script_vm_t *s, int load);
int script_sb_require(lua_State *L);
int script_load_text(lua_State *L, const char *text, size_t len, const char *path);
void script_log_policy(script_vm_t *s, int level, const char *msg, size_t n);
const char *script_plain_tostring(lua_State *L, int i);

/* script_api.c */
void script_push_kgx_api(script_vm_t *s);
void script_api_set_n_ctx(script_vm_t *s, int n_ctx);

/* script_load.c */
script_vm_t *script_vm_new(kgx_policy_src_t *src, char *err, size_t errlen);
void script_vm_free(script_vm_t *s);
const char *script_module_text(const kgx_policy_src_t *src, const char *name, size_t *len);
void script_name_hook(script_vm_t *s, kgx_hook_t hook, char *err, size_t errlen);

/* script_marshal.c */
int script_push_json(script_vm_t *s, const char *json, size_t len, char *err, size_t errlen);
void script_push_drawer(script_vm_t *s, const kgx_drawer_t *d, int warn);
void script_push_ctx(script_vm_t *s, const kgx_ctx_t *c);
void script_push_chunk(script_vm_t *s, const kgx_chunk_t *c);
int script_is_list(lua_State *L, int idx, size_t *n);
int script_take_chunks(script_vm_t *s, int res, size_t n, kgx_chunk_t **out, char *err, size_t errlen);
int script_take_request(script_vm_t *s, int res, kgx_request_t *out, char *err, size_t errlen);
int script_add_drop(lua_State *L, kgx_result_t *out, int idx, const char *reason, size_t rlen);
const char *script_take_triple(lua_State *L, int idx, kgx_triple_t *t, char *why, size_t whylen);
void script_triple_free(kgx_triple_t *t);

#endif
