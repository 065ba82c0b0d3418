/* script_load — policy text (kgx_policy_src_t) and building a Lua state from it: libraries, JIT off,
 * the state's own allocator and lua-cjson instance, the policy environment and its hooks.
 *
 * Ownership: a kgx_policy_src_t is refcounted (atomic); the thread that reads it (the loop, or a test)
 * and the first load (one thread) may fill it, after which it is sealed and read-only. A script_vm_t
 * is owned by one thread; script_vm_free closes its state — never called on a state abandoned by
 * hooks.c (its thread closes it itself if its C call ever returns). */
#include "script_int.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <luajit.h>

static const char *const hook_names[KGX_HOOK_N] = { "split", "request", "parse", "accept", "skip", "load" };

const char *kgx_hook_name(kgx_hook_t h) { return h < KGX_HOOK_N ? hook_names[h] : "?"; }

/* ---------------------------------------------------------------- policy text */

/* Reads a whole file (a policy or a plugin, at most 64 MiB); NULL with err set when it cannot. */
char *script_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) { script_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    size_t cap = 16384, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = cap < ((size_t)64 << 20) ? realloc(b, cap *= 2) : NULL;
            if (!nb) { free(b); b = NULL; }
            else b = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        script_set_err(err, errlen, "cannot read %s", path);
        return NULL;
    }
    *len = n;
    return b;
}

static void conf_free(script_conf_t *c)
{
    free(c->path);
    free(c->plugins_dir);
    free(c->policy_dir);
    free(c->model);
    free(c->base_name);
}

static int conf_init(script_conf_t *c, const kgx_script_opts_t *o)
{
    memset(c, 0, sizeof *c);
    c->path = script_dup_str(o->policy_path);
    c->model = script_dup_str(o->model ? o->model : "");
    c->n_ctx = o->n_ctx > 0 ? o->n_ctx : 0;
    c->min_confidence = o->min_confidence > 0 ? o->min_confidence : KGX_DEFAULT_MIN_CONFIDENCE;
    c->max_triples = o->max_triples > 0 ? o->max_triples : KGX_DEFAULT_MAX_TRIPLES;
    c->hook_timeout_ms = o->hook_timeout_ms > 0 ? o->hook_timeout_ms : KGX_DEFAULT_HOOK_TIMEOUT_MS;
    c->max_memory = o->max_memory ? o->max_memory : (size_t)256 << 20;
    c->max_chunks = o->max_chunks ? o->max_chunks : 4096;
    c->max_body = o->max_body ? o->max_body : (size_t)4 << 20;
    c->max_triples_raw = o->max_triples_raw ? o->max_triples_raw : 1000;
    /* policy_dir = dirname(path); plugins_dir = sibling "plugins" of policy_dir */
    if (c->path) {
        const char *slash = strrchr(c->path, '/');
        c->policy_dir = slash ? script_dup_lstr(c->path, slash == c->path ? 1 : (size_t)(slash - c->path))
                              : script_dup_str(".");
        const char *base = slash ? slash + 1 : c->path;
        size_t bl = strlen(base);
        if (bl > 4 && !strcmp(base + bl - 4, ".lua")) bl -= 4;
        c->base_name = script_dup_lstr(base, bl);
    }
    if (o->plugins_dir) c->plugins_dir = script_dup_str(o->plugins_dir);
    else if (c->policy_dir) {
        const char *pd = c->policy_dir;
        const char *slash = strrchr(pd, '/');
        const char *last = slash ? slash + 1 : pd;
        size_t n = strlen(pd) + 16;
        c->plugins_dir = malloc(n);
        if (c->plugins_dir) {
            if (!strcmp(last, ".") || !strcmp(last, "..") || !*last) snprintf(c->plugins_dir, n, "%s/../plugins", pd);
            else if (!slash) snprintf(c->plugins_dir, n, "plugins");
            else snprintf(c->plugins_dir, n, "%.*s/plugins", (int)(slash - pd), pd);
        }
    }
    return c->path && c->model && c->policy_dir && c->base_name && c->plugins_dir ? 0 : -1;
}

static kgx_policy_src_t *src_new(const script_conf_t *from, const kgx_script_opts_t *opts, char *err, size_t errlen)
{
    kgx_policy_src_t *src = calloc(1, sizeof *src);
    if (!src) { script_set_err(err, errlen, "script: out of memory"); return NULL; }
    atomic_init(&src->refs, 1);
    kgx_script_opts_t o = { 0 };
    if (from) {
        o.policy_path = from->path;
        o.plugins_dir = from->plugins_dir;
        o.model = from->model;
        o.n_ctx = from->n_ctx;
        o.min_confidence = from->min_confidence;
        o.max_triples = from->max_triples;
        o.hook_timeout_ms = from->hook_timeout_ms;
        o.max_memory = from->max_memory;
        o.max_chunks = from->max_chunks;
        o.max_body = from->max_body;
        o.max_triples_raw = from->max_triples_raw;
        opts = &o;
    }
    if (conf_init(&src->conf, opts) != 0) {
        script_set_err(err, errlen, "script: out of memory");
        kgx_policy_src_unref(src);
        return NULL;
    }
    if (!(src->text = script_read_file(src->conf.path, &src->len, err, errlen))) {
        kgx_policy_src_unref(src);
        return NULL;
    }
    return src;
}

kgx_policy_src_t *kgx_policy_src_read(const kgx_script_opts_t *opts, char *err, size_t errlen)
{
    if (!opts || !opts->policy_path || !*opts->policy_path) {
        script_set_err(err, errlen, "script: no policy path");
        return NULL;
    }
    return src_new(NULL, opts, err, errlen);
}

kgx_policy_src_t *kgx_policy_src_reread(const kgx_policy_src_t *old, char *err, size_t errlen)
{
    return src_new(&old->conf, NULL, err, errlen);
}

kgx_policy_src_t *kgx_policy_src_ref(kgx_policy_src_t *src)
{
    if (src) atomic_fetch_add(&src->refs, 1);
    return src;
}

void kgx_policy_src_unref(kgx_policy_src_t *src)
{
    if (!src || atomic_fetch_sub(&src->refs, 1) != 1) return;
    conf_free(&src->conf);
    free(src->text);
    for (size_t i = 0; i < src->nmods; i++) {
        free(src->mods[i].name);
        free(src->mods[i].text);
    }
    free(src->mods);
    free(src->name);
    free(src->version);
    free(src);
}

const char *kgx_policy_src_name(const kgx_policy_src_t *src) { return src ? src->name : NULL; }
const char *kgx_policy_src_version(const kgx_policy_src_t *src) { return src ? src->version : NULL; }
const char *kgx_policy_src_path(const kgx_policy_src_t *src) { return src ? src->conf.path : NULL; }
const char *kgx_policy_src_plugins_dir(const kgx_policy_src_t *src) { return src ? src->conf.plugins_dir : NULL; }
const char *kgx_policy_src_hook_where(const kgx_policy_src_t *src, kgx_hook_t h)
{
    return src && h < KGX_HOOK_N ? src->hook_where[h] : "";
}

int kgx_policy_src_check_reload(const kgx_policy_src_t *old, const kgx_policy_src_t *fresh, char *err, size_t errlen)
{
    for (int h = 0; h < KGX_HOOK_LOAD; h++)
        if (old->hook_where[h][0] && !fresh->hook_where[h][0] && !fresh->declares_default[h]) {
            script_set_err(err, errlen, "%s: hook '%s' is gone (the running policy defines it, and without it the "
                           "default applies); put it back, or declare defaults = { \"%s\" } to mean it",
                           fresh->conf.path, hook_names[h], hook_names[h]);
            return -1;
        }
    return 0;
}

int kgx_policy_src_timeout_ms(const kgx_policy_src_t *src) { return src ? src->conf.hook_timeout_ms : KGX_DEFAULT_HOOK_TIMEOUT_MS; }

const char *script_module_text(const kgx_policy_src_t *src, const char *name, size_t *len)
{
    for (size_t i = 0; i < src->nmods; i++)
        if (!strcmp(src->mods[i].name, name)) {
            *len = src->mods[i].len;
            return src->mods[i].text;
        }
    return NULL;
}

/* ---------------------------------------------------------------- loading */

static void policy_init(kgx_policy_t *p)
{
    p->env = p->kgx = LUA_NOREF;
    for (int h = 0; h < KGX_HOOK_N; h++) p->hook[h] = LUA_NOREF;
}

/* Reads global `key` of the env at index env as an owned string (numbers allowed), or def. */
static int env_string(lua_State *L, int env, const char *key, const char *def, char **out,
                      const char *path, char *err, size_t errlen)
{
    script_rawfield(L, env, key);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) *out = script_dup_str(def);
    else if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        *out = script_dup_lstr(v, n);
    } else {
        script_set_err(err, errlen, "%s: global '%s' must be a string (got %s)", path, key, lua_typename(L, t));
        lua_pop(L, 1);
        return -1;
    }
    lua_pop(L, 1);
    if (!*out) { script_set_err(err, errlen, "%s: out of memory", path); return -1; }
    return 0;
}

/* economy (issue 14): the default `skip` hook is plugins/text.lua's skip(chunk), required in the
 * policy's own load (a policy tree with its own text.lua gets its own). No such plugin: no skipping. */
static void default_skip(script_vm_t *s, int load)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    char err[512];
    script_rawfield(L, load, "require");
    lua_pushstring(L, "text");                              /* stack: require "text" */
    script_arm(s, "load of %s", "plugins/text.lua");
    if (script_call_guarded(s, 1, 1, NULL, err, sizeof err) == 0 && lua_istable(L, -1)) {
        script_rawfield(L, -1, "skip");                     /* stack: text skip */
        if (lua_isfunction(L, -1)) s->pol.hook[KGX_HOOK_SKIP] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_settop(L, top);
}

/* Runs the policy text in a fresh env and looks up its hooks into s->pol. The first load of a
 * source fills in its name/version and seals it. */
static int policy_load(script_vm_t *s, char *err, size_t errlen)
{
    lua_State *L = s->L;
    const script_conf_t *c = s->conf;
    int top = lua_gettop(L);
    policy_init(&s->pol);

    lua_newtable(L);                                        /* stack: load */
    int load = lua_gettop(L);
    script_push_kgx_api(s);
    lua_setfield(L, load, "kgx");
    lua_newtable(L);
    lua_setfield(L, load, "cache");
    lua_pushvalue(L, load);
    lua_pushcclosure(L, script_sb_require, 1);
    lua_setfield(L, load, "require");

    if (script_load_text(L, s->src->text, s->src->len, c->path) != 0) {   /* stack: load chunk|err */
        const char *msg = lua_tostring(L, -1);
        /* syntax errors start with "path:line:"; mode errors ("wrong mode") name no file */
        int named = msg && !strncmp(msg, c->path, strlen(c->path));
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s: ", c->path);
        script_fold_error(err, errlen, named ? NULL : prefix, msg);
        lua_settop(L, top);
        return -1;
    }
    script_push_sandbox_env(s, load);                       /* stack: load chunk env */
    lua_pushvalue(L, -1);
    lua_insert(L, load + 1);                                /* stack: load env chunk env */
    lua_setfenv(L, -2);                                     /* stack: load env chunk */
    int env = load + 1;

    s->log_name = c->base_name;
    script_arm(s, "load of %s", c->path);
    atomic_store(&s->running, (int)KGX_HOOK_LOAD);
    int rc = script_call_guarded(s, 0, 0, NULL, err, errlen);   /* stack: load env */
    atomic_store(&s->running, -1);
    if (rc != 0) { lua_settop(L, top); return -1; }

    for (int h = 0; h < KGX_HOOK_LOAD; h++) {
        lua_pushstring(L, hook_names[h]);
        lua_rawget(L, env);
        int t = lua_type(L, -1), on = lua_toboolean(L, -1);
        if (t == LUA_TFUNCTION) {
            s->pol.hook[h] = luaL_ref(L, LUA_REGISTRYINDEX);
            continue;
        }
        lua_pop(L, 1);
        if (t == LUA_TNIL && (h == KGX_HOOK_SPLIT || h == KGX_HOOK_ACCEPT)) continue;
        /* economy (issue 14): no `skip` → the text plugin's default; `skip = false` → none */
        if (h == KGX_HOOK_SKIP && t == LUA_TNIL) { default_skip(s, load); continue; }
        if (h == KGX_HOOK_SKIP && t == LUA_TBOOLEAN && !on) continue;
        if (t == LUA_TNIL) script_set_err(err, errlen, "%s: hook '%s' missing", c->path, hook_names[h]);
        else script_set_err(err, errlen, "%s: hook '%s' must be a function (got %s)", c->path, hook_names[h],
                            lua_typename(L, t));
        lua_settop(L, top);
        return -1;
    }
    if (!s->src->sealed) {
        if (env_string(L, env, "name", c->base_name, &s->src->name, c->path, err, errlen) != 0
            || env_string(L, env, "version", "0", &s->src->version, c->path, err, errlen) != 0) {
            lua_settop(L, top);
            return -1;
        }
        for (int h = 0; h < KGX_HOOK_LOAD; h++) {
            lua_Debug ar;
            if (s->pol.hook[h] == LUA_NOREF) continue;
            lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[h]);      /* stack: ... fn */
            if (lua_getinfo(L, ">S", &ar))                           /* pops fn */
                snprintf(s->src->hook_where[h], sizeof s->src->hook_where[h], "%s:%d", ar.short_src, ar.linedefined);
        }
        script_rawfield(L, env, "defaults");                    /* stack: ... defaults */
        if (lua_istable(L, -1))
            for (int i = 1;; i++) {
                lua_rawgeti(L, -1, i);
                if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
                for (int h = 0; h < KGX_HOOK_LOAD; h++)
                    if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), hook_names[h]))
                        s->src->declares_default[h] = 1;
                lua_pop(L, 1);
            }
        lua_pop(L, 1);
        s->src->sealed = 1;
    }
    s->log_name = s->src->name;
    script_rawfield(L, load, "kgx");
    s->pol.kgx = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, env);
    s->pol.env = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return 0;
}

/* Host state: libs, JIT off, string.dump gone, private cjson, watchdog hook. */
static int state_init(script_vm_t *s, char *err, size_t errlen)
{
    /* LuaJIT's own allocator (a heap of the state's own: B1's hook calls spent a tenth of kgx-run's
     * CPU in the process-wide malloc, which every thread shares), behind script_alloc's ceiling from
     * here on; what the new state holds already is counted */
    lua_State *L = luaL_newstate();
    if (!L) { script_set_err(err, errlen, "lua: cannot create state"); return -1; }
    s->L = L;
    s->mem.base = lua_getallocf(L, &s->mem.based);
    s->mem.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, script_alloc, &s->mem);
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    /* The real string table is what string methods ("x"):dump() reach. */
    lua_getglobal(L, "string");                             /* stack: string */
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushstring(L, "");
    if (lua_getmetatable(L, -1)) {                          /* stack: "" mt */
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");                 /* getmetatable("") -> false */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* lua-cjson through the host's require; never from the working directory. One instance per
     * state: its buffers and settings are never shared between threads. */
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
        script_set_err(err, errlen, "lua-cjson: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    s->cj_decode = luaL_ref(L, LUA_REGISTRYINDEX);
    s->cj_encode = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, script_watchdog_hook, LUA_MASKCOUNT, WATCHDOG_COUNT);
    return 0;
}

script_vm_t *script_vm_new(kgx_policy_src_t *src, char *err, size_t errlen)
{
    script_vm_t *s = calloc(1, sizeof *s);
    if (!s) { script_set_err(err, errlen, "script: out of memory"); return NULL; }
    s->src = kgx_policy_src_ref(src);
    s->conf = &src->conf;
    s->n_ctx = src->conf.n_ctx;
    s->mem.limit = src->conf.max_memory;
    s->cj_encode = s->cj_decode = LUA_NOREF;
    policy_init(&s->pol);
    atomic_init(&s->running, -1);
    s->log_name = src->conf.base_name;
    if (state_init(s, err, errlen) != 0 || policy_load(s, err, errlen) != 0) {
        script_vm_free(s);
        return NULL;
    }
    return s;
}

void script_vm_free(script_vm_t *s)
{
    if (!s) return;
    if (s->L) {
        /* closed through the allocator it was made with: LuaJIT then gives back its whole heap */
        lua_setallocf(s->L, s->mem.base, s->mem.based);
        lua_close(s->L);          /* refs die with the state */
    }
    kgx_policy_src_unref(s->src);
    free(s);
}

/* Errors the host finds in what a hook returned (not raised by Lua) get the hook's file and the line
 * where it is defined, so every drawer failure points into the policy: "prompts/x.lua:41: request: …". */
void script_name_hook(script_vm_t *s, kgx_hook_t hook, char *err, size_t errlen)
{
    if (hook >= KGX_HOOK_LOAD || strstr(err, ".lua:") || s->pol.hook[hook] == LUA_NOREF) return;
    lua_State *L = s->L;
    lua_Debug ar;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[hook]);   /* stack: fn */
    if (!lua_getinfo(L, ">S", &ar)) return;                  /* pops fn */
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", err);
    snprintf(err, errlen, "%s:%d: %s", ar.short_src, ar.linedefined, copy);
}
