/* script — the Lua policy host; see script.h for the contract.
 *
 * Layout of the one lua_State:
 *   host globals      luaL_openlibs + a private lua-cjson instance; never visible to policy code.
 *   policy env        a fresh whitelisted table per load (policy file), one per plugin; all the envs
 *                     of one load share one `kgx` table and one `require` (with its cache).
 *   registry          hook functions and the current env (refs held in kgx_policy_t), jobs
 *                     ({drawer=, chunks=} tables marked with job_key), this handle (script_key).
 *
 * Watchdog: the JIT is off for the whole state (debug hooks do not fire in compiled traces) and a
 * count hook checks a monotonic deadline and the heap size while a policy call is armed. Once
 * tripped it keeps raising, and the sandbox pcall/xpcall re-raise, so policy code cannot swallow it.
 */
#include "script.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#define WATCHDOG_COUNT 10000          /* VM instructions between watchdog checks */
#define MAX_FIELD_BYTES 4096          /* subject/predicate/object after accept */
#define MAX_PATH_BYTES 2048           /* request path */
#define MAX_MODULE_NAME 128
#define DEFAULT_CONFIDENCE 0.7

enum { HOOK_SPLIT, HOOK_REQUEST, HOOK_PARSE, HOOK_ACCEPT, HOOK_N };
static const char *const hook_names[HOOK_N] = { "split", "request", "parse", "accept" };

/* Registry keys (addresses are unique). */
static char script_key;     /* registry[&script_key] = lightuserdata(kgx_script_t *) */
static char job_key;        /* job[&job_key] = true marks a job table */
static char loading_key;    /* require cache sentinel while a plugin is running */

/* One loaded policy: what a reload builds and swaps. */
typedef struct {
    int env;                /* registry ref: the policy's environment table */
    int kgx;                /* registry ref: its kgx table (kgx.config is updated in place) */
    int hook[HOOK_N];       /* registry refs; LUA_NOREF = default (split/accept) */
    char *name, *version;   /* owned */
} kgx_policy_t;

struct kgx_script {
    lua_State *L;
    char *path, *plugins_dir, *policy_dir, *model, *base_name;   /* owned */
    int n_ctx, max_triples, hook_timeout_ms;
    double min_confidence;
    size_t max_memory, max_chunks, max_body, max_triples_raw;
    int cj_encode, cj_decode;     /* registry refs: the private cjson instance's functions */
    kgx_policy_t pol;
    const char *log_name;         /* name used by print/kgx.log: the policy's, or the file's while loading */
    /* watchdog */
    int armed, tripped, trip_memory;
    struct timespec deadline;
    char label[160];              /* "hook 'split'" or "load of prompts/x.lua" */
    char trip_msg[512];
};

/* ---------------------------------------------------------------- small helpers */

static size_t utf8_seq(const unsigned char *p, size_t n);

/* Error strings may quote policy or model text and end up in the database: keep them valid UTF-8
 * (also after truncation) by turning stray bytes into '?'. */
static void err_sanitize(char *err)
{
    unsigned char *p = (unsigned char *)err;
    size_t n = strlen(err);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l) i += l;
        else p[i++] = '?';
    }
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    err_sanitize(err);
}

static char *dup_lstr(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static char *dup_str(const char *p) { return p ? dup_lstr(p, strlen(p)) : NULL; }

/* Length of the strict UTF-8 sequence at p (no NUL, no overlongs, no surrogates, <= U+10FFFF),
 * 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    if (n < len) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* Copy with invalid UTF-8 and NUL replaced by U+FFFD: drops carry model text into the database. */
static char *dup_sanitized(const char *s, size_t n)
{
    if (utf8_valid(s, n)) return dup_lstr(s, n);
    char *d = malloc(n * 3 + 1);
    if (!d) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l) { memcpy(d + o, p + i, l); o += l; i += l; }
        else { memcpy(d + o, "\xEF\xBF\xBD", 3); o += 3; i++; }
    }
    d[o] = '\0';
    return d;
}

static double now_diff_ms(const struct timespec *a, const struct timespec *b)
{
    return (double)(a->tv_sec - b->tv_sec) * 1e3 + (double)(a->tv_nsec - b->tv_nsec) / 1e6;
}

/* Folds a Lua error with traceback into one line: "<prefix>file:line: msg | traceback: f1 | f2 ...". */
static void fold_error(char *err, size_t errlen, const char *prefix, const char *msg)
{
    if (!err || !errlen) return;
    size_t o = 0;
    int in_tb = 0, frames = 0, first = 1;
    err[0] = '\0';
#define PUT(p, n) do { size_t n_ = (n); const char *p_ = (p); \
        for (size_t k_ = 0; k_ < n_ && o + 1 < errlen; k_++) { char c_ = p_[k_]; \
            err[o++] = ((unsigned char)c_ < 0x20 || c_ == 0x7f) ? ' ' : c_; } err[o] = '\0'; } while (0)
    if (prefix) PUT(prefix, strlen(prefix));
    for (const char *p = msg ? msg : "(no message)"; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *line = p;
        p = nl ? nl + 1 : p + len;
        if (!first) while (len && (*line == '\t' || *line == ' ')) { line++; len--; }
        if (!len) continue;
        if (!in_tb && len >= 16 && !strncmp(line, "stack traceback:", 16)) {
            in_tb = 1;
            PUT(" | traceback:", 13);
            continue;
        }
        if (in_tb) {
            if (frames == 5) { PUT(" ...", 4); frames++; continue; }
            if (frames > 5) continue;
            PUT(frames ? " | " : " ", frames ? 3 : 1);
            frames++;
        } else if (!first) {
            PUT(" | ", 3);
        }
        PUT(line, len);
        first = 0;
    }
#undef PUT
    err_sanitize(err);
}

/* Pushes t[key] for the table at idx without metamethods: tables made by policy code may carry an
 * __index that would otherwise run outside the watchdog. */
static void rawfield(lua_State *L, int idx, const char *key)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}

/* ---------------------------------------------------------------- watchdog */

static kgx_script_t *script_of(lua_State *L)
{
    lua_pushlightuserdata(L, &script_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    kgx_script_t *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

/* Position of the innermost Lua frame, "file:line: " or "". */
static void where_lua(lua_State *L, char *buf, size_t len)
{
    lua_Debug ar;
    buf[0] = '\0';
    for (int lvl = 0; lvl < 8 && lua_getstack(L, lvl, &ar); lvl++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(buf, len, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
}

static void watchdog_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    kgx_script_t *s = script_of(L);
    if (!s || !s->armed) return;
    if (!s->tripped) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        char where[200];
        if (now_diff_ms(&now, &s->deadline) >= 0) {
            where_lua(L, where, sizeof where);
            snprintf(s->trip_msg, sizeof s->trip_msg, "%swatchdog: %s exceeded %d ms", where,
                     s->label, s->hook_timeout_ms);
            s->tripped = 1;
        } else if ((size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 > s->max_memory) {
            /* garbage counts too: collect once before calling it a runaway */
            lua_gc(L, LUA_GCCOLLECT, 0);
            if ((size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 > s->max_memory) {
                where_lua(L, where, sizeof where);
                snprintf(s->trip_msg, sizeof s->trip_msg, "%swatchdog: %s exceeded the memory limit (%zu MiB)",
                         where, s->label, s->max_memory >> 20);
                s->tripped = 1;
                s->trip_memory = 1;
            }
        }
        if (!s->tripped) return;
    }
    lua_pushstring(L, s->trip_msg);
    lua_error(L);
}

static void arm(kgx_script_t *s, const char *fmt, const char *arg)
{
    snprintf(s->label, sizeof s->label, fmt, arg);
    clock_gettime(CLOCK_MONOTONIC, &s->deadline);
    s->deadline.tv_sec += s->hook_timeout_ms / 1000;
    s->deadline.tv_nsec += (long)(s->hook_timeout_ms % 1000) * 1000000L;
    if (s->deadline.tv_nsec >= 1000000000L) { s->deadline.tv_sec++; s->deadline.tv_nsec -= 1000000000L; }
    s->tripped = s->trip_memory = 0;
    s->armed = 1;
}

static int traceback_cb(lua_State *L)
{
    /* stack: errobj. Never runs policy code (no __tostring): the watchdog may have tripped. */
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls the function below nargs arguments under the watchdog. On error folds the message into err
 * (prefixed with `prefix`), leaves nothing of the call on the stack and returns -1; on success the
 * nres results replace function and arguments. */
static int call_guarded(kgx_script_t *s, int nargs, int nres, const char *prefix, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs;           /* the function */
    lua_pushcfunction(L, traceback_cb);
    lua_insert(L, base);                        /* stack: handler fn args... */
    int rc = lua_pcall(L, nargs, nres, base);
    s->armed = 0;
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        /* a tripped watchdog wins over whatever policy error handlers made of it */
        if (s->tripped && (!msg || !strstr(msg, "watchdog: "))) msg = s->trip_msg;
        if (!msg) msg = rc == LUA_ERRMEM ? "not enough memory" : "(no error message)";
        fold_error(err, errlen, prefix, msg);
        lua_settop(L, base - 1);
        if (s->trip_memory || rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
        return -1;
    }
    lua_remove(L, base);
    return 0;
}

/* Runs hook h (function and args already pushed) with its own deadline. */
static int call_hook(kgx_script_t *s, int h, int nargs, int nres, char *err, size_t errlen)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s: ", hook_names[h]);
    arm(s, "hook '%s'", hook_names[h]);
    return call_guarded(s, nargs, nres, prefix, err, errlen);
}

/* ---------------------------------------------------------------- sandbox functions */

/* pcall/xpcall for policy code: like the real ones, but a tripped watchdog is re-raised. */
static int sb_finish_pcall(lua_State *L, kgx_script_t *s, int status, int first)
{
    if (s->tripped) {
        lua_pushstring(L, s->trip_msg);
        return lua_error(L);
    }
    lua_pushboolean(L, status == 0);
    lua_insert(L, first);
    return lua_gettop(L) - first + 1;
}

static int sb_pcall(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    return sb_finish_pcall(L, s, status, 1);
}

static int sb_xpcall(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checkany(L, 2);
    /* stack: f handler args... -> handler f args... */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_replace(L, 1);
    lua_replace(L, 2);
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
    return sb_finish_pcall(L, s, status, 2);
}

/* Renders a value for print/kgx.log without calling metamethods. */
static const char *plain_tostring(lua_State *L, int i)
{
    switch (lua_type(L, i)) {
    case LUA_TSTRING: case LUA_TNUMBER: { lua_pushvalue(L, i); return lua_tostring(L, -1); }
    case LUA_TBOOLEAN: return lua_pushfstring(L, "%s", lua_toboolean(L, i) ? "true" : "false");
    case LUA_TNIL: return lua_pushfstring(L, "nil");
    default: return lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i));
    }
}

static void log_policy(kgx_script_t *s, int level, const char *msg, size_t n)
{
    char line[1024];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < sizeof line; i++) {
        unsigned char c = (unsigned char)msg[i];
        line[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    line[o] = '\0';
    kgx_log(level, "policy=%s %s", s->log_name ? s->log_name : "?", line);
}

static int sb_print(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        plain_tostring(L, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    log_policy(s, KGX_LOG_INFO, msg, len);
    return 0;
}

static int api_log(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    const char *lv = luaL_checkstring(L, 1);
    int level = kgx_log_level_parse(lv);
    if (level < 0) return luaL_error(L, "kgx.log: unknown level '%s' (debug|info|warn|error)", lv);
    plain_tostring(L, 2);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (level <= kgx_log_get_level()) log_policy(s, level, msg, len);
    return 0;
}

static int api_tokens(lua_State *L)
{
    size_t n;
    luaL_checklstring(L, 1, &n);
    lua_pushnumber(L, (lua_Number)((n + 2) / 3));
    return 1;
}

static int api_utf8_valid(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, utf8_valid(p, n));
    return 1;
}

/* kgx.json.decode(s) -> value | nil, err. Bad JSON never raises; a non-string argument does. */
static int api_json_decode(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);                       /* stack: decode s */
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);                  /* stack: nil err */
        return 2;
    }
    return 1;
}

/* string.rep refusing results larger than the memory ceiling (one call can allocate it all). */
static int sb_string_rep(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    size_t len, seplen = 0;
    luaL_checklstring(L, 1, &len);
    lua_Number n = luaL_checknumber(L, 2);
    if (lua_type(L, 3) == LUA_TSTRING) lua_tolstring(L, 3, &seplen);
    if (n > 0 && ((double)len + (double)seplen) * n > (double)s->max_memory)
        return luaL_error(L, "string.rep: result of %.0f bytes exceeds the memory limit",
                          ((double)len + (double)seplen) * n);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static const char *const sb_globals[] = {
    "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
    "unpack", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable", NULL
};
static const char *const sb_libs[] = { "string", "table", "math", "bit", NULL };

/* Pushes a fresh sandbox environment (library tables are copies of the host's, which state_init
 * already stripped of string.dump). `load` is the index of this load's shared table
 * {kgx=, require=}. */
static void push_sandbox_env(kgx_script_t *s, int load)
{
    lua_State *L = s->L;
    lua_newtable(L);                                        /* stack: env */
    for (int i = 0; sb_globals[i]; i++) {
        lua_getglobal(L, sb_globals[i]);
        lua_setfield(L, -2, sb_globals[i]);
    }
    for (int i = 0; sb_libs[i]; i++) {
        lua_newtable(L);                                    /* stack: env copy */
        lua_getglobal(L, sb_libs[i]);                       /* stack: env copy lib */
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);                           /* stack: env copy lib k v k v */
            lua_rawset(L, -6);
        }
        lua_pop(L, 1);                                      /* stack: env copy */
        lua_setfield(L, -2, sb_libs[i]);
    }
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, sb_pcall, 1);
    lua_setfield(L, -2, "pcall");
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, sb_xpcall, 1);
    lua_setfield(L, -2, "xpcall");
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, sb_print, 1);
    lua_setfield(L, -2, "print");
    rawfield(L, load, "kgx");
    lua_setfield(L, -2, "kgx");
    rawfield(L, load, "require");
    lua_setfield(L, -2, "require");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");                              /* stack: env */
}

static int valid_module_name(const char *n, size_t len)
{
    if (len == 0 || len > MAX_MODULE_NAME) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)n[i];
        int word = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!word && (i == 0 || (c != '.' && c != '-'))) return 0;
    }
    return 1;
}

/* require(name): only <plugins_dir>/<name with . -> />.lua, text only, own sandbox env, cached per
 * load. Upvalues: s, the load table {kgx=, require=, cache=}. */
static int sb_require(lua_State *L)
{
    kgx_script_t *s = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (!valid_module_name(name, len))
        return luaL_error(L, "require: invalid module name '%s' (plugins are required by name, "
                             "e.g. \"vocab\" or \"dir.mod\")", name);
    lua_settop(L, 1);
    rawfield(L, lua_upvalueindex(2), "cache");          /* stack: name cache */
    lua_pushvalue(L, 1);
    lua_rawget(L, 2);                                       /* stack: name cache cached */
    if (lua_touserdata(L, 3) == &loading_key)
        return luaL_error(L, "require: loop while loading module '%s'", name);
    if (!lua_isnil(L, 3)) return 1;
    lua_pop(L, 1);

    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, s->plugins_dir);
    luaL_addchar(&b, '/');
    for (size_t i = 0; i < len; i++) luaL_addchar(&b, name[i] == '.' ? '/' : name[i]);
    luaL_addstring(&b, ".lua");
    luaL_pushresult(&b);                                    /* stack: name cache path */
    const char *path = lua_tostring(L, 3);
    int rc = luaL_loadfilex(L, path, "t");                  /* stack: name cache path chunk|err */
    if (rc == LUA_ERRFILE && access(path, F_OK) != 0)
        return luaL_error(L, "module '%s' not found: no file '%s'", name, path);
    if (rc != 0) return lua_error(L);

    lua_pushlightuserdata(L, &loading_key);
    lua_setfield(L, 2, name);
    push_sandbox_env(s, lua_upvalueindex(2));               /* stack: name cache path chunk env */
    lua_setfenv(L, 4);
    lua_pushvalue(L, 1);                                    /* stack: name cache path chunk name */
    rc = lua_pcall(L, 1, 1, 0);                             /* stack: name cache path result|err */
    if (rc != 0 || s->tripped) {
        lua_pushnil(L);
        lua_setfield(L, 2, name);
        if (s->tripped) lua_pushstring(L, s->trip_msg);
        return lua_error(L);
    }
    if (lua_isnil(L, 4)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 4);
    lua_setfield(L, 2, name);                               /* stack: name cache path result */
    return 1;
}

/* ---------------------------------------------------------------- loading */

static void policy_init(kgx_policy_t *p)
{
    memset(p, 0, sizeof *p);
    p->env = p->kgx = LUA_NOREF;
    for (int h = 0; h < HOOK_N; h++) p->hook[h] = LUA_NOREF;
}

/* Releases the refs (L may be NULL when the state is going away) and the strings. */
static void policy_clear(lua_State *L, kgx_policy_t *p)
{
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->env);
        luaL_unref(L, LUA_REGISTRYINDEX, p->kgx);
        for (int h = 0; h < HOOK_N; h++) luaL_unref(L, LUA_REGISTRYINDEX, p->hook[h]);
    }
    free(p->name);
    free(p->version);
    policy_init(p);
}

/* Builds this load's kgx table (the one place the Lua API is defined). stack: -> kgx */
static void push_kgx_api(kgx_script_t *s)
{
    lua_State *L = s->L;
    lua_newtable(L);                                        /* stack: kgx */
    lua_newtable(L);                                        /* stack: kgx json */
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_encode);
    lua_setfield(L, -2, "encode");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_decode);
    lua_pushcclosure(L, api_json_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, NULL);                         /* cjson.null */
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");                            /* stack: kgx */
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, api_log, 1);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, api_tokens);
    lua_setfield(L, -2, "tokens");
    lua_pushcfunction(L, api_utf8_valid);
    lua_setfield(L, -2, "utf8_valid");
    lua_newtable(L);                                        /* stack: kgx config */
    lua_pushstring(L, s->model ? s->model : "");
    lua_setfield(L, -2, "model");
    lua_pushinteger(L, s->n_ctx);
    lua_setfield(L, -2, "n_ctx");
    lua_pushnumber(L, s->min_confidence);
    lua_setfield(L, -2, "min_confidence");
    lua_pushinteger(L, s->max_triples);
    lua_setfield(L, -2, "max_triples");
    lua_pushstring(L, s->policy_dir);
    lua_setfield(L, -2, "policy_dir");
    lua_pushstring(L, s->plugins_dir);
    lua_setfield(L, -2, "plugins_dir");
    lua_setfield(L, -2, "config");                          /* stack: kgx */
}

/* Reads global `key` of the env at index env as an owned string (numbers allowed), or def. */
static int env_string(lua_State *L, int env, const char *key, const char *def, char **out,
                      const char *path, char *err, size_t errlen)
{
    rawfield(L, env, key);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) *out = dup_str(def);
    else if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        *out = dup_lstr(v, n);
    } else {
        set_err(err, errlen, "%s: global '%s' must be a string (got %s)", path, key, lua_typename(L, t));
        lua_pop(L, 1);
        return -1;
    }
    lua_pop(L, 1);
    if (!*out) { set_err(err, errlen, "%s: out of memory", path); return -1; }
    return 0;
}

/* Loads the policy file into a fresh env; fills *p (refs + strings). On error *p is left clear. */
static int policy_load(kgx_script_t *s, kgx_policy_t *p, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    policy_init(p);

    lua_newtable(L);                                        /* stack: load */
    int load = lua_gettop(L);
    push_kgx_api(s);
    lua_setfield(L, load, "kgx");
    lua_newtable(L);
    lua_setfield(L, load, "cache");
    lua_pushlightuserdata(L, s);
    lua_pushvalue(L, load);
    lua_pushcclosure(L, sb_require, 2);
    lua_setfield(L, load, "require");

    if (luaL_loadfilex(L, s->path, "t") != 0) {             /* stack: load chunk|err */
        const char *msg = lua_tostring(L, -1);
        /* syntax errors start with "path:line:"; mode errors ("wrong mode") name no file */
        int named = msg && !strncmp(msg, s->path, strlen(s->path));
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s: ", s->path);
        fold_error(err, errlen, named ? NULL : prefix, msg);
        lua_settop(L, top);
        return -1;
    }
    push_sandbox_env(s, load);                              /* stack: load chunk env */
    lua_pushvalue(L, -1);
    lua_insert(L, load + 1);                                /* stack: load env chunk env */
    lua_setfenv(L, -2);                                     /* stack: load env chunk */
    int env = load + 1;

    const char *saved_name = s->log_name;
    s->log_name = s->base_name;
    arm(s, "load of %s", s->path);
    int rc = call_guarded(s, 0, 0, NULL, err, errlen);      /* stack: load env */
    s->log_name = saved_name;
    if (rc != 0) { lua_settop(L, top); return -1; }

    for (int h = 0; h < HOOK_N; h++) {
        lua_pushstring(L, hook_names[h]);
        lua_rawget(L, env);
        int t = lua_type(L, -1);
        if (t == LUA_TFUNCTION) {
            p->hook[h] = luaL_ref(L, LUA_REGISTRYINDEX);
            continue;
        }
        lua_pop(L, 1);
        if (t == LUA_TNIL && (h == HOOK_SPLIT || h == HOOK_ACCEPT)) continue;
        if (t == LUA_TNIL) set_err(err, errlen, "%s: hook '%s' missing", s->path, hook_names[h]);
        else set_err(err, errlen, "%s: hook '%s' must be a function (got %s)", s->path, hook_names[h],
                     lua_typename(L, t));
        goto fail;
    }
    if (env_string(L, env, "name", s->base_name, &p->name, s->path, err, errlen) != 0) goto fail;
    if (env_string(L, env, "version", "0", &p->version, s->path, err, errlen) != 0) goto fail;

    rawfield(L, load, "kgx");
    p->kgx = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, env);
    p->env = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return 0;
fail:
    policy_clear(L, p);
    lua_settop(L, top);
    return -1;
}

/* Host state: libs, JIT off, string.dump gone, private cjson, watchdog hook. */
static int state_init(kgx_script_t *s, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    if (!L) { set_err(err, errlen, "lua: cannot create state"); return -1; }
    s->L = L;
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    lua_pushlightuserdata(L, &script_key);
    lua_pushlightuserdata(L, s);
    lua_rawset(L, LUA_REGISTRYINDEX);

    /* The real string table is what string methods ("x"):rep(...) reach: no dump, capped rep. */
    lua_getglobal(L, "string");                             /* stack: string */
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pushlightuserdata(L, s);
    rawfield(L, -2, "rep");
    lua_pushcclosure(L, sb_string_rep, 2);
    lua_setfield(L, -2, "rep");
    lua_pop(L, 1);
    lua_pushstring(L, "");
    if (lua_getmetatable(L, -1)) {                          /* stack: "" mt */
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");                 /* getmetatable("") -> false */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* lua-cjson through the host's require; never from the working directory. */
    static const char boot[] =
        "package.cpath = package.cpath:gsub('%./[^;]*;?', '')\n"
        "local cj = require('cjson').new()\n"
        "cj.encode_sparse_array(true)\n"
        "cj.encode_number_precision(14)\n"
        "cj.decode_max_depth(1000)\n"
        "cj.encode_max_depth(1000)\n"
        "cj.decode_invalid_numbers(false)\n"
        "return cj.encode, cj.decode\n";
    if (luaL_loadbuffer(L, boot, sizeof boot - 1, "=kgx-boot") != 0 || lua_pcall(L, 0, 2, 0) != 0) {
        set_err(err, errlen, "lua-cjson: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    s->cj_decode = luaL_ref(L, LUA_REGISTRYINDEX);
    s->cj_encode = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, watchdog_hook, LUA_MASKCOUNT, WATCHDOG_COUNT);
    return 0;
}

/* Owned: returns a handle the caller frees with kgx_script_free. */
kgx_script_t *kgx_script_new(const kgx_script_opts_t *opts, char *err, size_t errlen)
{
    if (!opts || !opts->policy_path || !*opts->policy_path) {
        set_err(err, errlen, "script: no policy path");
        return NULL;
    }
    kgx_script_t *s = calloc(1, sizeof *s);
    if (!s) { set_err(err, errlen, "script: out of memory"); return NULL; }
    policy_init(&s->pol);
    s->cj_encode = s->cj_decode = LUA_NOREF;
    s->path = dup_str(opts->policy_path);
    s->model = dup_str(opts->model ? opts->model : "");
    s->n_ctx = opts->n_ctx > 0 ? opts->n_ctx : 0;
    s->min_confidence = opts->min_confidence > 0 ? opts->min_confidence : 0.5;
    s->max_triples = opts->max_triples > 0 ? opts->max_triples : 10;
    s->hook_timeout_ms = opts->hook_timeout_ms > 0 ? opts->hook_timeout_ms : 2000;
    s->max_memory = opts->max_memory ? opts->max_memory : (size_t)256 << 20;
    s->max_chunks = opts->max_chunks ? opts->max_chunks : 4096;
    s->max_body = opts->max_body ? opts->max_body : (size_t)4 << 20;
    s->max_triples_raw = opts->max_triples_raw ? opts->max_triples_raw : 1000;

    /* policy_dir = dirname(path); plugins_dir = sibling "plugins" of policy_dir */
    if (s->path) {
        const char *slash = strrchr(s->path, '/');
        s->policy_dir = slash ? dup_lstr(s->path, slash == s->path ? 1 : (size_t)(slash - s->path)) : dup_str(".");
        const char *base = slash ? slash + 1 : s->path;
        size_t bl = strlen(base);
        if (bl > 4 && !strcmp(base + bl - 4, ".lua")) bl -= 4;
        s->base_name = dup_lstr(base, bl);
    }
    if (opts->plugins_dir) s->plugins_dir = dup_str(opts->plugins_dir);
    else if (s->policy_dir) {
        const char *pd = s->policy_dir;
        const char *slash = strrchr(pd, '/');
        const char *last = slash ? slash + 1 : pd;
        size_t n = strlen(pd) + 16;
        s->plugins_dir = malloc(n);
        if (s->plugins_dir) {
            if (!strcmp(last, ".") || !strcmp(last, "..") || !*last)
                snprintf(s->plugins_dir, n, "%s/../plugins", pd);
            else if (!slash) snprintf(s->plugins_dir, n, "plugins");
            else snprintf(s->plugins_dir, n, "%.*s/plugins", (int)(slash - pd), pd);
        }
    }
    if (!s->path || !s->model || !s->policy_dir || !s->base_name || !s->plugins_dir) {
        set_err(err, errlen, "script: out of memory");
        kgx_script_free(s);
        return NULL;
    }
    s->log_name = s->base_name;
    if (state_init(s, err, errlen) != 0 || policy_load(s, &s->pol, err, errlen) != 0) {
        kgx_script_free(s);
        return NULL;
    }
    s->log_name = s->pol.name;
    return s;
}

/* [dropin] 1 when the policy's global `defaults` (a list of hook names) names hook h: the policy says
 * it leaves that hook to the host's default on purpose. */
static int declares_default(lua_State *L, const kgx_policy_t *p, int h)
{
    int top = lua_gettop(L), found = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->env);              /* stack: env */
    rawfield(L, top + 1, "defaults");                       /* stack: env defaults */
    if (lua_istable(L, top + 2)) {
        for (int i = 1; !found; i++) {
            lua_rawgeti(L, top + 2, i);
            if (lua_isnil(L, -1)) break;
            found = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), hook_names[h]);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return found;
}

int kgx_script_reload(kgx_script_t *s, char *err, size_t errlen)
{
    kgx_policy_t fresh;
    if (policy_load(s, &fresh, err, errlen) != 0) return -1;
    /* [dropin] a file saved without a hook the running policy defines (its vocabulary, threshold and
     * stopwords live in accept) would silently fall back to keeping everything: refused, unless the new
     * policy declares it, e.g. defaults = { "accept" } */
    for (int h = 0; h < HOOK_N; h++) {
        if (s->pol.hook[h] != LUA_NOREF && fresh.hook[h] == LUA_NOREF && !declares_default(s->L, &fresh, h)) {
            set_err(err, errlen, "%s: hook '%s' is gone (the running policy defines it, and without it the "
                    "default applies); put it back, or declare defaults = { \"%s\" } to mean it",
                    s->path, hook_names[h], hook_names[h]);
            policy_clear(s->L, &fresh);
            return -1;
        }
    }
    policy_clear(s->L, &s->pol);
    s->pol = fresh;
    s->log_name = s->pol.name;
    lua_gc(s->L, LUA_GCCOLLECT, 0);
    return 0;
}

void kgx_script_free(kgx_script_t *s)
{
    if (!s) return;
    policy_clear(NULL, &s->pol);   /* refs die with the state */
    if (s->L) lua_close(s->L);
    free(s->path);
    free(s->plugins_dir);
    free(s->policy_dir);
    free(s->model);
    free(s->base_name);
    free(s);
}

const char *kgx_script_name(const kgx_script_t *s) { return s ? s->pol.name : NULL; }
const char *kgx_script_version(const kgx_script_t *s) { return s ? s->pol.version : NULL; }
const char *kgx_script_plugins_dir(const kgx_script_t *s) { return s ? s->plugins_dir : NULL; }

const char *kgx_script_path(const kgx_script_t *s) { return s ? s->path : NULL; }

void kgx_script_set_n_ctx(kgx_script_t *s, int n_ctx)
{
    if (!s) return;
    s->n_ctx = n_ctx > 0 ? n_ctx : 0;
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.kgx);          /* stack: kgx */
    if (lua_istable(L, -1)) {
        rawfield(L, -1, "config");                      /* stack: kgx config */
        if (lua_istable(L, -1)) {
            lua_pushstring(L, "n_ctx");
            lua_pushinteger(L, s->n_ctx);
            lua_rawset(L, -3);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* ---------------------------------------------------------------- jobs */

/* Decodes JSON with the private cjson instance: stack: -> value | nothing (returns -1, msg in err). */
static int push_json_decoded(kgx_script_t *s, const char *json, size_t len, char *err, size_t errlen)
{
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_decode);
    lua_pushlstring(L, json, len);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        set_err(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* stack: -> drawer */
static void push_drawer(kgx_script_t *s, const kgx_drawer_t *d)
{
    lua_State *L = s->L;
    lua_createtable(L, 0, 6);
    if (d->id) { lua_pushstring(L, d->id); lua_setfield(L, -2, "id"); }
    if (d->wing) { lua_pushstring(L, d->wing); lua_setfield(L, -2, "wing"); }
    if (d->room) { lua_pushstring(L, d->room); lua_setfield(L, -2, "room"); }
    lua_pushlstring(L, d->document ? d->document : "", d->document ? d->document_len : 0);
    lua_setfield(L, -2, "document");
    if (d->metadata_json && *d->metadata_json) {
        char e[256];
        if (push_json_decoded(s, d->metadata_json, strlen(d->metadata_json), e, sizeof e) == 0)
            lua_setfield(L, -2, "metadata");
        else
            log_warn("drawer=%s metadata is not valid JSON, passed as nil: %s", d->id ? d->id : "?", e);
    }
}

/* stack: -> ctx */
static void push_ctx(kgx_script_t *s, const kgx_ctx_t *c)
{
    lua_State *L = s->L;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, c && c->n_ctx > 0 ? c->n_ctx : s->n_ctx);
    lua_setfield(L, -2, "n_ctx");
    lua_pushinteger(L, c ? c->shrink : 0);
    lua_setfield(L, -2, "shrink");
    lua_pushinteger(L, c ? c->attempt : 0);
    lua_setfield(L, -2, "attempt");
    lua_pushstring(L, s->model);
    lua_setfield(L, -2, "model");
    if (c && c->endpoint) { lua_pushstring(L, c->endpoint); lua_setfield(L, -2, "endpoint"); }
}

/* Is the table at idx a list 1..n with no other keys? Sets *n. */
static int is_list(lua_State *L, int idx, size_t *n)
{
    size_t len = lua_objlen(L, idx), keys = 0;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        keys++;
        if (lua_type(L, -2) != LUA_TNUMBER) { lua_pop(L, 2); return 0; }
        lua_Number k = lua_tonumber(L, -2);
        if (k != floor(k) || k < 1 || k > (lua_Number)len) { lua_pop(L, 2); return 0; }
    }
    *n = len;
    return keys == len;
}

/* Pushes the job table for ref; 0, or -1 (nothing pushed) when ref is not a live job. */
static int push_job(kgx_script_t *s, int job)
{
    lua_State *L = s->L;
    if (job <= 0) return -1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, job);
    if (lua_istable(L, -1)) {
        lua_pushlightuserdata(L, &job_key);
        lua_rawget(L, -2);
        int ok = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (ok) return 0;
    }
    lua_pop(L, 1);
    return -1;
}

/* stack: drawer chunks|nil -> ; returns the ref */
static int make_job(lua_State *L)
{
    lua_createtable(L, 0, 3);                               /* stack: drawer chunks job */
    lua_insert(L, -3);                                      /* stack: job drawer chunks */
    lua_setfield(L, -3, "chunks");
    lua_setfield(L, -2, "drawer");
    lua_pushlightuserdata(L, &job_key);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Errors the host finds in what a hook returned (not raised by Lua) get the hook's file and the line
 * where it is defined, so every drawer failure points into the policy: "prompts/x.lua:41: request: …". */
static void name_hook(kgx_script_t *s, int hook, char *err, size_t errlen)
{
    if (strstr(err, ".lua:") || s->pol.hook[hook] == LUA_NOREF) return;
    lua_State *L = s->L;
    lua_Debug ar;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[hook]);   /* stack: fn */
    if (!lua_getinfo(L, ">S", &ar)) return;                  /* pops fn */
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", err);
    snprintf(err, errlen, "%s:%d: %s", ar.short_src, ar.linedefined, copy);
}

int kgx_script_split(kgx_script_t *s, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                     size_t *nchunks, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    if (!d) { set_err(err, errlen, "split: no drawer"); return -1; }
    push_drawer(s, d);                                      /* stack: drawer */
    int drawer = lua_gettop(L);
    size_t n = 0;
    if (s->pol.hook[HOOK_SPLIT] == LUA_NOREF) {
        lua_createtable(L, 1, 0);
        rawfield(L, drawer, "document");
        lua_rawseti(L, -2, 1);                              /* stack: drawer chunks */
        n = 1;
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[HOOK_SPLIT]);
        lua_pushvalue(L, drawer);
        push_ctx(s, ctx);                                   /* stack: drawer split drawer ctx */
        if (call_hook(s, HOOK_SPLIT, 2, 1, err, errlen) != 0) goto fail;
        int res = lua_gettop(L);                            /* stack: drawer result */
        if (!lua_istable(L, res)) {
            set_err(err, errlen, "split: returned %s, expected a list of chunks", luaL_typename(L, res));
            goto fail;
        }
        if (!is_list(L, res, &n)) {
            set_err(err, errlen, "split: returned a table that is not a list (return { chunk, ... })");
            goto fail;
        }
        if (n > s->max_chunks) {
            set_err(err, errlen, "split: returned %zu chunks, more than max_chunks %zu", n, s->max_chunks);
            goto fail;
        }
        lua_createtable(L, (int)n, 0);                      /* stack: drawer result chunks */
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, res, (int)i);
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && t != LUA_TTABLE) {
                set_err(err, errlen, "split: chunk %zu is a %s, expected a string or a table", i,
                        lua_typename(L, t));
                goto fail;
            }
            lua_rawseti(L, -2, (int)i);
        }
        lua_remove(L, res);                                 /* stack: drawer chunks */
    }
    int ref = make_job(L);
    lua_settop(L, top);
    if (nchunks) *nchunks = n;
    return ref;
fail:
    lua_settop(L, top);
    name_hook(s, HOOK_SPLIT, err, errlen);
    return -1;
}

int kgx_script_job_new(kgx_script_t *s, const kgx_drawer_t *d, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    if (!d) { set_err(err, errlen, "job: no drawer"); return -1; }
    push_drawer(s, d);
    lua_pushnil(L);
    int ref = make_job(L);
    lua_settop(L, top);
    return ref;
}

void kgx_script_job_free(kgx_script_t *s, int job)
{
    if (!s || push_job(s, job) != 0) return;
    lua_pop(s->L, 1);
    luaL_unref(s->L, LUA_REGISTRYINDEX, job);
}

/* Pushes chunk i of the job at index j (nil when absent); returns 1 if it exists. */
static int push_chunk(lua_State *L, int j, size_t i, size_t *n)
{
    rawfield(L, j, "chunks");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); lua_pushnil(L); *n = 0; return 0; }
    *n = lua_objlen(L, -1);
    if (i >= *n || i >= (size_t)INT32_MAX) { lua_pop(L, 1); lua_pushnil(L); return 0; }
    lua_rawgeti(L, -1, (int)(i + 1));
    lua_remove(L, -2);
    return 1;
}

int kgx_script_chunk_tokens(kgx_script_t *s, int job, size_t i)
{
    lua_State *L = s->L;
    int top = lua_gettop(L), tokens = -1;
    size_t n;
    if (push_job(s, job) != 0) return -1;
    if (push_chunk(L, top + 1, i, &n)) {
        if (lua_istable(L, -1)) rawfield(L, -1, "text");
        size_t len;
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_tolstring(L, -1, &len);
            tokens = (int)((len + 2) / 3 > INT32_MAX ? INT32_MAX : (len + 2) / 3);
        }
    }
    lua_settop(L, top);
    return tokens;
}

void kgx_request_clear(kgx_request_t *r)
{
    if (!r) return;
    free(r->path);
    free(r->body);
    memset(r, 0, sizeof *r);
}

int kgx_script_request(kgx_script_t *s, int job, size_t i, const kgx_ctx_t *ctx,
                       kgx_request_t *out, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    size_t n, len;
    memset(out, 0, sizeof *out);
    if (push_job(s, job) != 0) { set_err(err, errlen, "request: unknown job %d", job); return -1; }
    int j = top + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[HOOK_REQUEST]);
    if (!push_chunk(L, j, i, &n)) {
        set_err(err, errlen, "request: no chunk %zu (the job has %zu)", i, n);
        goto fail;
    }
    rawfield(L, j, "drawer");
    push_ctx(s, ctx);                                       /* stack: job request chunk drawer ctx */
    if (call_hook(s, HOOK_REQUEST, 3, 1, err, errlen) != 0) goto fail;
    int res = lua_gettop(L);                                /* stack: job result */
    if (!lua_istable(L, res)) {
        set_err(err, errlen, "request: returned %s, expected { path=, body= }", luaL_typename(L, res));
        goto fail;
    }
    rawfield(L, res, "path");
    const char *path = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!path || path[0] != '/') {
        set_err(err, errlen, "request: 'path' must be a string starting with '/'");
        goto fail;
    }
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)path[k] <= 0x20 || (unsigned char)path[k] >= 0x7f) {
            set_err(err, errlen, "request: 'path' contains a space or control/non-ASCII byte at %zu", k);
            goto fail;
        }
    if (len > MAX_PATH_BYTES) { set_err(err, errlen, "request: 'path' longer than %d bytes", MAX_PATH_BYTES); goto fail; }
    if (!(out->path = dup_lstr(path, len))) goto oom;
    lua_pop(L, 1);

    rawfield(L, res, "body");                           /* stack: job result body */
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_encode);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            set_err(err, errlen, "request: cannot encode body as JSON: %s", lua_tostring(L, -1));
            goto fail;
        }
    } else if (lua_type(L, -1) != LUA_TSTRING) {
        set_err(err, errlen, "request: 'body' must be a string or a table (got %s)", luaL_typename(L, -1));
        goto fail;
    }
    const char *body = lua_tolstring(L, -1, &len);
    if (len > s->max_body) {
        set_err(err, errlen, "request: body is %zu bytes, more than max_body %zu", len, s->max_body);
        lua_settop(L, top);
        lua_gc(L, LUA_GCCOLLECT, 0);      /* let the huge string go now */
        goto fail;
    }
    if (!(out->body = dup_lstr(body, len))) goto oom;
    out->body_len = len;
    lua_pop(L, 1);

    rawfield(L, res, "timeout_ms");
    if (!lua_isnil(L, -1)) {
        lua_Number t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        if (t < 0 || t != floor(t) || t > INT32_MAX) {
            set_err(err, errlen, "request: 'timeout_ms' must be a non-negative integer");
            goto fail;
        }
        out->timeout_ms = (int)t;
    }
    lua_settop(L, top);
    return 0;
oom:
    set_err(err, errlen, "request: out of memory");
fail:
    lua_settop(L, top);
    name_hook(s, HOOK_REQUEST, err, errlen);
    kgx_request_clear(out);
    return -1;
}

void kgx_result_clear(kgx_result_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_triples; i++) {
        kgx_triple_t *t = &r->triples[i];
        free(t->subject); free(t->predicate); free(t->object); free(t->raw_predicate);
    }
    for (size_t i = 0; i < r->n_drops; i++) {
        kgx_drop_t *d = &r->drops[i];
        free(d->subject); free(d->predicate); free(d->object); free(d->reason);
    }
    free(r->triples);
    free(r->drops);
    memset(r, 0, sizeof *r);
}

/* Field of the table at idx as a sanitized copy when it is a string/number, else NULL. */
static char *raw_field(lua_State *L, int idx, const char *k1, const char *k2)
{
    char *v = NULL;
    rawfield(L, idx, k1);
    if (k2 && lua_isnil(L, -1)) { lua_pop(L, 1); rawfield(L, idx, k2); }
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        v = dup_sanitized(p, n);
    }
    lua_pop(L, 1);
    return v;
}

/* Adds a drop for raw triple at idx (0: not a table). */
static int add_drop(lua_State *L, kgx_result_t *out, int idx, const char *reason, size_t rlen)
{
    kgx_drop_t *nd = realloc(out->drops, (out->n_drops + 1) * sizeof *nd);
    if (!nd) return -1;
    out->drops = nd;
    kgx_drop_t *d = &nd[out->n_drops++];
    memset(d, 0, sizeof *d);
    if (idx && lua_istable(L, idx)) {
        d->subject = raw_field(L, idx, "subject", NULL);
        d->predicate = raw_field(L, idx, "predicate", "relation_type");
        d->object = raw_field(L, idx, "object", NULL);
    }
    d->reason = dup_sanitized(reason, rlen);
    return d->reason ? 0 : -1;
}

/* Validates the accepted triple at idx; returns NULL and fills *t, or the drop reason. */
static const char *take_triple(lua_State *L, int idx, kgx_triple_t *t, char *why, size_t whylen)
{
    static const char *const keys[3] = { "subject", "predicate", "object" };
    char **dst[3] = { &t->subject, &t->predicate, &t->object };
    memset(t, 0, sizeof *t);
    for (int k = 0; k < 3; k++) {
        rawfield(L, idx, keys[k]);
        if (k == 1 && lua_isnil(L, -1)) { lua_pop(L, 1); rawfield(L, idx, "relation_type"); }
        size_t n;
        const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (!v) snprintf(why, whylen, "%s missing or not a string", keys[k]);
        else if (n == 0) snprintf(why, whylen, "%s is empty", keys[k]);
        else if (n > MAX_FIELD_BYTES) snprintf(why, whylen, "%s longer than %d bytes", keys[k], MAX_FIELD_BYTES);
        else if (!utf8_valid(v, n)) snprintf(why, whylen, "%s is not valid UTF-8", keys[k]);
        else if (!(*dst[k] = dup_lstr(v, n))) snprintf(why, whylen, "out of memory");
        lua_pop(L, 1);
        if (!*dst[k]) return why;
    }
    rawfield(L, idx, "confidence");
    int ct = lua_type(L, -1);
    double c = DEFAULT_CONFIDENCE;
    if (ct == LUA_TNUMBER) c = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ct != LUA_TNIL && ct != LUA_TNUMBER) {
        snprintf(why, whylen, "confidence is a %s, not a number", lua_typename(L, ct));
        return why;
    }
    if (isnan(c)) c = 0;
    t->confidence = c < 0 ? 0 : c > 1 ? 1 : c;
    rawfield(L, idx, "raw_predicate");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); rawfield(L, idx, "raw_relation_type"); }
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        if (!(t->raw_predicate = dup_sanitized(v, n))) snprintf(why, whylen, "out of memory");
    }
    lua_pop(L, 1);
    return t->raw_predicate || !why[0] ? NULL : why;
}

static void triple_free(kgx_triple_t *t)
{
    free(t->subject); free(t->predicate); free(t->object); free(t->raw_predicate);
}

int kgx_script_answer(kgx_script_t *s, int job, size_t i, const char *body, size_t len,
                      kgx_result_t *out, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    size_t n;
    memset(out, 0, sizeof *out);
    if (push_job(s, job) != 0) { set_err(err, errlen, "parse: unknown job %d", job); return -1; }
    int j = top + 1;
    rawfield(L, j, "drawer");                           /* stack: job drawer */
    int drawer = j + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[HOOK_PARSE]);
    lua_pushlstring(L, body ? body : "", body ? len : 0);
    push_chunk(L, j, i, &n);
    lua_pushvalue(L, drawer);                               /* stack: job drawer parse body chunk drawer */
    if (call_hook(s, HOOK_PARSE, 3, 2, err, errlen) != 0) goto fail;
    int res = drawer + 1;                                   /* stack: job drawer list|nil reason */
    if (lua_isnil(L, res)) {
        const char *why = lua_isstring(L, res + 1) ? lua_tostring(L, res + 1) : "returned nil";
        char tmp[512];
        fold_error(tmp, sizeof tmp, NULL, why);
        set_err(err, errlen, "parse: %s", tmp);
        lua_settop(L, top);      /* the answer is bad, not the policy: no file:line */
        kgx_result_clear(out);
        return -1;
    }
    if (!lua_istable(L, res)) {
        set_err(err, errlen, "parse: returned %s, expected a list of triples or nil, reason", luaL_typename(L, res));
        goto fail;
    }
    if (!is_list(L, res, &n)) {
        set_err(err, errlen, "parse: returned a table that is not a list (return { triple, ... })");
        goto fail;
    }
    if (n > s->max_triples_raw) {
        set_err(err, errlen, "parse: returned %zu triples, more than max_triples_raw %zu", n, s->max_triples_raw);
        goto fail;
    }
    lua_settop(L, res);
    for (size_t k = 1; k <= n; k++) {
        lua_rawgeti(L, res, (int)k);                        /* stack: job drawer list raw */
        int raw = res + 1;
        if (!lua_istable(L, raw)) {
            if (add_drop(L, out, 0, "triple is not a table", 21) != 0) goto oom;
            lua_settop(L, res);
            continue;
        }
        int acc = raw;
        if (s->pol.hook[HOOK_ACCEPT] != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[HOOK_ACCEPT]);
            lua_pushvalue(L, raw);
            lua_pushvalue(L, drawer);
            if (call_hook(s, HOOK_ACCEPT, 2, 2, err, errlen) != 0) goto fail;
            acc = raw + 1;                                  /* stack: ... raw triple|nil reason */
            if (lua_isnil(L, acc)) {
                size_t rl;
                const char *why = lua_isstring(L, acc + 1) ? lua_tolstring(L, acc + 1, &rl) : NULL;
                if (!why) { why = "rejected by accept"; rl = strlen(why); }
                if (add_drop(L, out, raw, why, rl) != 0) goto oom;
                lua_settop(L, res);
                continue;
            }
            if (!lua_istable(L, acc)) {
                char why[64];
                snprintf(why, sizeof why, "accept returned %s", luaL_typename(L, acc));
                if (add_drop(L, out, raw, why, strlen(why)) != 0) goto oom;
                lua_settop(L, res);
                continue;
            }
        }
        kgx_triple_t t;
        char why[128] = "";
        if (take_triple(L, acc, &t, why, sizeof why)) {
            triple_free(&t);
            if (add_drop(L, out, raw, why, strlen(why)) != 0) goto oom;
        } else {
            kgx_triple_t *nt = realloc(out->triples, (out->n_triples + 1) * sizeof *nt);
            if (!nt) { triple_free(&t); goto oom; }
            out->triples = nt;
            nt[out->n_triples++] = t;
        }
        lua_settop(L, res);
    }
    lua_settop(L, top);
    return 0;
oom:
    set_err(err, errlen, "parse: out of memory");
fail:
    lua_settop(L, top);
    name_hook(s, strncmp(err, "accept", 6) ? HOOK_PARSE : HOOK_ACCEPT, err, errlen);
    kgx_result_clear(out);
    return -1;
}

/* [dropin] --adopt (core/adopt.c): the policy's accept hook on one triple the host builds itself,
 * so an old edge's predicate is mapped exactly as a new answer's would be. */
int kgx_script_accept_one(kgx_script_t *s, int job, const char *subject, const char *predicate,
                          const char *object, double confidence, kgx_triple_t *out,
                          char *why, size_t whylen, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    if (push_job(s, job) != 0) { set_err(err, errlen, "accept: unknown job %d", job); return -1; }
    rawfield(L, top + 1, "drawer");                          /* stack: job drawer */
    int drawer = top + 2;
    lua_createtable(L, 0, 4);                                /* stack: job drawer raw */
    int raw = drawer + 1;
    lua_pushstring(L, subject); lua_setfield(L, raw, "subject");
    lua_pushstring(L, predicate); lua_setfield(L, raw, "predicate");
    lua_pushstring(L, object); lua_setfield(L, raw, "object");
    lua_pushnumber(L, confidence); lua_setfield(L, raw, "confidence");
    int acc = raw;
    if (s->pol.hook[HOOK_ACCEPT] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[HOOK_ACCEPT]);
        lua_pushvalue(L, raw);
        lua_pushvalue(L, drawer);
        if (call_hook(s, HOOK_ACCEPT, 2, 2, err, errlen) != 0) {
            lua_settop(L, top);
            name_hook(s, HOOK_ACCEPT, err, errlen);
            return -1;
        }
        acc = raw + 1;                                       /* stack: job drawer raw triple|nil reason */
        if (!lua_istable(L, acc)) {
            if (lua_isnil(L, acc) && lua_isstring(L, acc + 1)) snprintf(why, whylen, "%s", lua_tostring(L, acc + 1));
            else if (lua_isnil(L, acc)) snprintf(why, whylen, "rejected by accept");
            else snprintf(why, whylen, "accept returned %s", luaL_typename(L, acc));
            lua_settop(L, top);
            return 1;
        }
    }
    int rc = take_triple(L, acc, out, why, whylen) ? 1 : 0;
    if (rc) { triple_free(out); memset(out, 0, sizeof *out); }
    lua_settop(L, top);
    return rc;
}
