/* script_sandbox — the allocator with its ceiling, the watchdog, guarded calls and the sandbox
 * environment policy code runs in (see script_int.h for the files and the thread rule).
 *
 * Watchdog: the JIT is off for the whole state (debug hooks do not fire in compiled traces) and a
 * count hook checks a monotonic deadline while a policy call is armed. Once tripped it keeps raising,
 * and the sandbox pcall/xpcall re-raise, so policy code cannot swallow it. Time spent inside one C
 * function (a pattern match that backtracks for minutes) is beyond any debug hook: hooks.c's loop
 * timer notices that and abandons the state.
 *
 * Memory: every state allocates through script_alloc, which refuses any allocation that would take
 * the state past its ceiling — one huge string.rep included — so the failure is Lua's ordinary,
 * catchable "not enough memory" and the state stays usable. */
#include "script_int.h"
#include "log.h"
#include "utf8.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char loading_key;    /* require cache sentinel while a plugin is running */

/* ---------------------------------------------------------------- small helpers */

/* Error strings may quote policy or model text and end up in the database: keep them valid UTF-8
 * (also after truncation) by turning stray bytes into '?'. */
static void err_sanitize(char *err)
{
    unsigned char *p = (unsigned char *)err;
    size_t n = strlen(err);
    for (size_t i = 0; i < n;) {
        size_t l = kgx_utf8_seq(p + i, n - i);
        if (l) i += l;
        else p[i++] = '?';
    }
}

void script_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    err_sanitize(err);
}

char *script_dup_lstr(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *script_dup_str(const char *p) { return p ? script_dup_lstr(p, strlen(p)) : NULL; }

/* Copy with invalid UTF-8 and NUL replaced by U+FFFD: drops carry model text into the database. */
char *script_dup_sanitized(const char *s, size_t n)
{
    if (kgx_utf8_valid(s, n)) return script_dup_lstr(s, n);
    char *d = malloc(n * 3 + 1);
    if (!d) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = kgx_utf8_seq(p + i, n - i);
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
void script_fold_error(char *err, size_t errlen, const char *prefix, const char *msg)
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
void script_rawfield(lua_State *L, int idx, const char *key)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}
/* ---------------------------------------------------------------- allocator */

/* lua_Alloc with a ceiling, in front of the state's own allocator. Shrinking never fails. */
void *script_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    script_mem_t *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        m->base(m->based, ptr, osize, 0);
        m->used = m->used > old ? m->used - old : 0;
        return NULL;
    }
    if (nsize > old && (nsize - old > m->limit || m->used + (nsize - old) > m->limit)) return NULL;
    void *p = m->base(m->based, ptr, osize, nsize);
    if (!p) return NULL;
    m->used = m->used - old + nsize;
    return p;
}

/* ---------------------------------------------------------------- watchdog */

static script_vm_t *vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return (script_vm_t *)((char *)ud - offsetof(script_vm_t, mem));
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

/* What the armed call is, for its messages: "hook 'split'", "load of prompts/x.lua". */
static void script_label(const script_vm_t *s, char *buf, size_t len)
{
    snprintf(buf, len, s->label_fmt ? s->label_fmt : "%s", s->label_arg ? s->label_arg : "");
}

void script_watchdog_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    script_vm_t *s = vm_of(L);
    if (!s->armed) return;
    if (!s->tripped) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now_diff_ms(&now, &s->deadline) < 0) return;
        char where[200], label[160];
        where_lua(L, where, sizeof where);
        script_label(s, label, sizeof label);
        snprintf(s->trip_msg, sizeof s->trip_msg, "%swatchdog: %s exceeded %d ms", where, label,
                 s->conf->hook_timeout_ms);
        s->tripped = 1;
    }
    lua_pushstring(L, s->trip_msg);
    lua_error(L);
}

/* fmt and arg outlive the call (a string literal, a hook's name, the file being loaded) */
void script_arm(script_vm_t *s, const char *fmt, const char *arg)
{
    s->label_fmt = fmt;
    s->label_arg = arg;
    clock_gettime(CLOCK_MONOTONIC, &s->deadline);
    int ms = s->conf->hook_timeout_ms;
    s->deadline.tv_sec += ms / 1000;
    s->deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
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
int script_call_guarded(script_vm_t *s, int nargs, int nres, const char *prefix, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs;           /* the function */
    lua_pushcfunction(L, traceback_cb);
    lua_insert(L, base);                        /* stack: handler fn args... */
    int rc = lua_pcall(L, nargs, nres, base);
    s->armed = 0;
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        char mem[300];
        /* a tripped watchdog wins over whatever policy error handlers made of it */
        if (s->tripped && (!msg || !strstr(msg, "watchdog: "))) msg = s->trip_msg;
        if (rc == LUA_ERRMEM) {
            /* the allocator refused: no traceback could be built, say which limit */
            char label[160];
            script_label(s, label, sizeof label);
            snprintf(mem, sizeof mem, "not enough memory: %s exceeded the memory limit (%zu MiB)",
                     label, s->conf->max_memory >> 20);
            msg = mem;
        }
        if (!msg) msg = "(no error message)";
        script_fold_error(err, errlen, prefix, msg);
        lua_settop(L, base - 1);
        if (rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
        return -1;
    }
    lua_remove(L, base);
    return 0;
}

/* Runs hook h (function and args already pushed) with its own deadline. */
int script_call_hook(script_vm_t *s, kgx_hook_t h, int nargs, int nres, char *err, size_t errlen)
{
    char prefix[32];
    const char *name = kgx_hook_name(h);
    size_t n = strlen(name) < sizeof prefix - 3 ? strlen(name) : sizeof prefix - 3;
    memcpy(prefix, name, n);
    memcpy(prefix + n, ": ", 3);
    script_arm(s, "hook '%s'", name);
    atomic_store(&s->running, (int)h);
    int rc = script_call_guarded(s, nargs, nres, prefix, err, errlen);
    atomic_store(&s->running, -1);
    return rc;
}

/* ---------------------------------------------------------------- sandbox functions */

/* pcall/xpcall for policy code: like the real ones, but a tripped watchdog is re-raised. */
static int sb_finish_pcall(lua_State *L, script_vm_t *s, int status, int first)
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
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    return sb_finish_pcall(L, vm_of(L), status, 1);
}

static int sb_xpcall(lua_State *L)
{
    luaL_checkany(L, 2);
    /* stack: f handler args... -> handler f args... */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_replace(L, 1);
    lua_replace(L, 2);
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
    return sb_finish_pcall(L, vm_of(L), status, 2);
}

/* Renders a value for print/kgx.log without calling metamethods. */
const char *script_plain_tostring(lua_State *L, int i)
{
    switch (lua_type(L, i)) {
    case LUA_TSTRING: case LUA_TNUMBER: { lua_pushvalue(L, i); return lua_tostring(L, -1); }
    case LUA_TBOOLEAN: return lua_pushfstring(L, "%s", lua_toboolean(L, i) ? "true" : "false");
    case LUA_TNIL: return lua_pushfstring(L, "nil");
    default: return lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i));
    }
}

/* kgx_log is thread-safe and its drawer context is per thread (the hook thread sets it). */
void script_log_policy(script_vm_t *s, int level, const char *msg, size_t n)
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
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        script_plain_tostring(L, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    script_log_policy(vm_of(L), KGX_LOG_INFO, msg, len);
    return 0;
}

static const char *const sb_globals[] = {
    "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
    "unpack", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable", NULL
};
static const char *const sb_libs[] = { "string", "table", "math", "bit", NULL };

/* Pushes a fresh sandbox environment (library tables are copies of the host's, which the state's
 * setup already stripped of string.dump). `load` is the index of this load's shared table
 * {kgx=, require=}. */
void script_push_sandbox_env(script_vm_t *s, int load)
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
    lua_pushcfunction(L, sb_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_pushcfunction(L, sb_print);
    lua_setfield(L, -2, "print");
    script_rawfield(L, load, "kgx");
    lua_setfield(L, -2, "kgx");
    script_rawfield(L, load, "require");
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

/* Compiles policy text as a chunk named "@path" (errors point at file:line); text only, never
 * bytecode; a first line starting with '#' is skipped as luaL_loadfile does. */
int script_load_text(lua_State *L, const char *text, size_t len, const char *path)
{
    char name[4200];
    snprintf(name, sizeof name, "@%s", path);
    size_t skip = 0;
    if (len && text[0] == '#')
        while (skip < len && text[skip] != '\n') skip++;
    return luaL_loadbufferx(L, text + skip, len - skip, name, "t");
}

/* Records a plugin's text in a policy source that is still being loaded (one thread owns it). */
static void remember_module(kgx_policy_src_t *src, const char *name, const char *text, size_t len)
{
    if (src->sealed) return;
    script_module_t *m = realloc(src->mods, (src->nmods + 1) * sizeof *m);
    if (!m) return;
    src->mods = m;
    m[src->nmods].name = script_dup_str(name);
    m[src->nmods].text = script_dup_lstr(text, len);
    m[src->nmods].len = len;
    if (m[src->nmods].name && m[src->nmods].text) src->nmods++;
    else { free(m[src->nmods].name); free(m[src->nmods].text); }
}

/* require(name): only <plugins_dir>/<name with . -> />.lua, text only, own sandbox env, cached per
 * load. A state built from sealed policy text takes the plugin text the first load read, so a
 * replacement state runs what the drawers in flight started with. Upvalue: the load table
 * {kgx=, require=, cache=}. */
int script_sb_require(lua_State *L)
{
    script_vm_t *s = vm_of(L);
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (!valid_module_name(name, len))
        return luaL_error(L, "require: invalid module name '%s' (plugins are required by name, "
                             "e.g. \"vocab\" or \"dir.mod\")", name);
    lua_settop(L, 1);
    script_rawfield(L, lua_upvalueindex(1), "cache");       /* stack: name cache */
    lua_pushvalue(L, 1);
    lua_rawget(L, 2);                                       /* stack: name cache cached */
    if (lua_touserdata(L, 3) == &loading_key)
        return luaL_error(L, "require: loop while loading module '%s'", name);
    if (!lua_isnil(L, 3)) return 1;
    lua_pop(L, 1);

    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, s->conf->plugins_dir);
    luaL_addchar(&b, '/');
    for (size_t i = 0; i < len; i++) luaL_addchar(&b, name[i] == '.' ? '/' : name[i]);
    luaL_addstring(&b, ".lua");
    luaL_pushresult(&b);                                    /* stack: name cache path */
    const char *path = lua_tostring(L, 3);
    size_t tlen = 0;
    const char *text = script_module_text(s->src, name, &tlen);
    char *owned = NULL;
    if (!text) {
        if (access(path, F_OK) != 0) return luaL_error(L, "module '%s' not found: no file '%s'", name, path);
        if (!(owned = script_read_file(path, &tlen, NULL, 0))) return luaL_error(L, "cannot read %s", path);
        remember_module(s->src, name, owned, tlen);
        text = owned;
    }
    int rc = script_load_text(L, text, tlen, path);        /* stack: name cache path chunk|err */
    free(owned);
    if (rc != 0) return lua_error(L);

    lua_pushlightuserdata(L, &loading_key);
    lua_setfield(L, 2, name);
    script_push_sandbox_env(s, lua_upvalueindex(1));       /* stack: name cache path chunk env */
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
