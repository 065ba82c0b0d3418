/* script_marshal — data across the C/Lua border: drawers, ctx and chunks pushed into a state, and what
 * hooks return (chunks, requests, triples, drops) copied out as plain C. Every size is checked before
 * anything is copied. Runs on the thread that owns the state. */
#include "script_int.h"
#include "buf.h"
#include "log.h"
#include "utf8.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHUNK_TOTAL ((size_t)64 << 20)   /* all of one drawer's chunks together */
#define MAX_DROP_FIELD 1024                  /* model text kept with a drop, per field */

/* ---------------------------------------------------------------- canonical JSON of a request body
 * economy (issue 14): a request body given as a table is encoded with its object keys sorted
 * bytewise and arrays in order, so the same request has the same bytes in every state (a table's own
 * order is not: string hashes are seeded per state) — answer reuse keys on those bytes. Leaves get
 * lua-cjson's bytes (this state's settings: numbers %.14g, '/' escaped, NaN/Inf refused), a table is an
 * array when its keys are exactly 1..n (lua-cjson's rule), an empty table is lua-cjson's. In C: the same
 * encoder in Lua, interpreted (the JIT is off), took 13 % of kgx-run's CPU in B1. */
#define CANON_MAX_DEPTH 1000

typedef struct {
    kgx_buf_t b;
    size_t max;               /* max_body: stop once past it */
    int too_big;
    int cj_encode;            /* registry ref of this state's cjson.encode (empty tables) */
} canon_t;

typedef struct {
    const char *name;         /* a string key's bytes; NULL: a number, formatted in nbuf */
    size_t len;
    lua_Number num;
    char nbuf[32];
} canon_key_t;

#define CANON_NAME(k) ((k)->name ? (k)->name : (k)->nbuf)   /* (entries move when sorted) */

static const char *const canon_esc[32] = {
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
};

static void canon_check(lua_State *L, canon_t *c)
{
    if (c->b.len > c->max) {
        c->too_big = 1;
        luaL_error(L, "body is more than max_body");
    }
}

static void canon_str(canon_t *c, const char *p, size_t n)
{
    size_t run = 0;
    kgx_buf_add(&c->b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 32 && ch != '"' && ch != '\\' && ch != '/' && ch != 127) continue;   /* as it is */
        const char *e = ch < 32 ? canon_esc[ch] : ch == '"' ? "\\\"" : ch == '\\' ? "\\\\"
                      : ch == '/' ? "\\/" : ch == 127 ? "\\u007f" : NULL;
        if (!e) continue;
        kgx_buf_add(&c->b, p + run, i - run);
        kgx_buf_adds(&c->b, e);
        run = i + 1;
    }
    kgx_buf_add(&c->b, p + run, n - run);
    kgx_buf_add(&c->b, "\"", 1);
}

static size_t canon_num(lua_State *L, lua_Number x, char *buf, size_t len)
{
    if (isinf(x) || isnan(x)) luaL_error(L, "Cannot serialise number: must not be NaN or Inf");
    /* a whole number below 1e14 (n_predict, a seed, a slot): its digits, as %.14g writes them
     * (-0 excepted: "-0") */
    if (x > -1e14 && x < 1e14 && x == (lua_Number)(long long)x && !(x == 0 && signbit(x))) {
        char tmp[24];
        long long v = (long long)x;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        size_t n = 0;
        do tmp[n++] = (char)('0' + u % 10); while (u /= 10);
        if (v < 0) tmp[n++] = '-';
        if (n >= len) return 0;
        for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
        buf[n] = 0;
        return n;
    }
    int n = snprintf(buf, len, "%.14g", (double)x);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

static void canon_value(lua_State *L, int idx, canon_t *c, int depth);

static int canon_key_cmp(const void *a, const void *b)
{
    const canon_key_t *x = a, *y = b;
    int r = memcmp(CANON_NAME(x), CANON_NAME(y), x->len < y->len ? x->len : y->len);
    return r ? r : x->len < y->len ? -1 : x->len > y->len;
}

static void canon_table(lua_State *L, int idx, canon_t *c, int depth)
{
    if (depth > CANON_MAX_DEPTH) luaL_error(L, "Cannot serialise, excessive nesting (%d)", depth);
    luaL_checkstack(L, 6, "canonical JSON");
    size_t n = 0;
    int arr = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (arr) {
            lua_Number k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
            if (lua_type(L, -1) != LUA_TNUMBER || k < 1 || k != floor(k) || k > (lua_Number)n * 2 + 10) arr = 0;
        }
    }
    if (n == 0) {                                          /* lua-cjson's own bytes */
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->cj_encode);
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
        size_t len;
        const char *e = lua_tolstring(L, -1, &len);
        kgx_buf_add(&c->b, e, len);
        lua_pop(L, 1);
        return;
    }
    for (size_t i = 1; arr && i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        if (lua_isnil(L, -1)) arr = 0;
        lua_pop(L, 1);
    }
    if (arr) {
        kgx_buf_add(&c->b, "[", 1);
        for (size_t i = 1; i <= n; i++) {
            if (i > 1) kgx_buf_add(&c->b, ",", 1);
            lua_rawgeti(L, idx, (int)i);
            canon_value(L, lua_gettop(L), c, depth + 1);
            lua_pop(L, 1);
        }
        kgx_buf_add(&c->b, "]", 1);
        return;
    }
    /* the keys (string keys stay alive as keys of the table), in a userdata the GC frees on error */
    canon_key_t *k = lua_newuserdata(L, n * sizeof *k);
    size_t m = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) && m < n) {
        lua_pop(L, 1);
        canon_key_t *e = &k[m++];
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            e->name = lua_tolstring(L, -1, &e->len);
        } else if (t == LUA_TNUMBER) {
            e->num = lua_tonumber(L, -1);
            e->len = canon_num(L, e->num, e->nbuf, sizeof e->nbuf);
            e->name = NULL;
        } else {
            luaL_error(L, "Cannot serialise %s: table key must be a number or string", lua_typename(L, t));
        }
    }
    qsort(k, m, sizeof *k, canon_key_cmp);
    kgx_buf_add(&c->b, "{", 1);
    for (size_t i = 0; i < m; i++) {
        if (i) kgx_buf_add(&c->b, ",", 1);
        canon_str(c, CANON_NAME(&k[i]), k[i].len);
        kgx_buf_add(&c->b, ":", 1);
        if (!k[i].name) lua_pushnumber(L, k[i].num);
        else lua_pushlstring(L, k[i].name, k[i].len);
        lua_rawget(L, idx);
        canon_value(L, lua_gettop(L), c, depth + 1);
        lua_pop(L, 1);
        canon_check(L, c);
    }
    kgx_buf_add(&c->b, "}", 1);
    lua_pop(L, 1);                                         /* the keys */
}

static void canon_value(lua_State *L, int idx, canon_t *c, int depth)
{
    char nb[32];
    size_t len;
    const char *p;
    switch (lua_type(L, idx)) {
    case LUA_TTABLE:
        canon_table(L, idx, c, depth);
        break;
    case LUA_TSTRING:
        p = lua_tolstring(L, idx, &len);
        canon_str(c, p, len);
        break;
    case LUA_TNUMBER:
        len = canon_num(L, lua_tonumber(L, idx), nb, sizeof nb);
        kgx_buf_add(&c->b, nb, len);
        break;
    case LUA_TBOOLEAN:
        kgx_buf_adds(&c->b, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNIL:
        kgx_buf_adds(&c->b, "null");
        break;
    case LUA_TLIGHTUSERDATA:
        if (!lua_touserdata(L, idx)) {                     /* cjson.null */
            kgx_buf_adds(&c->b, "null");
            break;
        }
        /* fall through */
    default:
        luaL_error(L, "Cannot serialise %s: type not supported", luaL_typename(L, idx));
    }
    canon_check(L, c);
}

static int canon_entry(lua_State *L)
{
    canon_t *c = lua_touserdata(L, 2);
    canon_value(L, 1, c, 1);
    return 0;
}

/* The value on top of L's stack (popped), as canonical JSON in *out (malloc'd, NUL-terminated: the
 * request's own copy, never a Lua string). -1 with err when it cannot be encoded or is larger than max. */
static int canon_encode(script_vm_t *s, size_t max, char **out, size_t *outlen, char *err, size_t errlen)
{
    lua_State *L = s->L;
    canon_t c = { .max = max, .cj_encode = s->cj_encode };
    lua_pushcfunction(L, canon_entry);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        if (c.too_big) script_set_err(err, errlen, "request: body is more than max_body %zu bytes", max);
        else script_set_err(err, errlen, "request: cannot encode body as JSON: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        kgx_buf_free(&c.b);
        return -1;
    }
    *out = kgx_buf_steal(&c.b, outlen);
    return *out ? 0 : -1;
}

/* ---------------------------------------------------------------- plain C types */

kgx_drawer_t *kgx_drawer_dup(const kgx_drawer_t *d)
{
    const char *f[5] = { d->id, d->wing, d->room, d->metadata_json, NULL };
    size_t need = sizeof *d + d->document_len + 1;
    for (int i = 0; i < 4; i++) need += f[i] ? strlen(f[i]) + 1 : 0;
    kgx_drawer_t *c = malloc(need);
    if (!c) return NULL;
    char *p = (char *)(c + 1);
    const char **dst[4] = { &c->id, &c->wing, &c->room, &c->metadata_json };
    for (int i = 0; i < 4; i++) {
        if (!f[i]) { *dst[i] = NULL; continue; }
        size_t n = strlen(f[i]) + 1;
        memcpy(p, f[i], n);
        *dst[i] = p;
        p += n;
    }
    if (d->document_len) memcpy(p, d->document, d->document_len);
    p[d->document_len] = '\0';
    c->document = p;
    c->document_len = d->document_len;
    return c;
}

void kgx_chunks_free(kgx_chunk_t *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i].text);
    free(v);
}

void kgx_request_clear(kgx_request_t *r)
{
    if (!r) return;
    free(r->path);
    free(r->body);
    memset(r, 0, sizeof *r);
}

void script_triple_free(kgx_triple_t *t)
{
    free(t->subject); free(t->predicate); free(t->object); free(t->raw_predicate);
}

void kgx_result_clear(kgx_result_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_triples; i++) script_triple_free(&r->triples[i]);
    for (size_t i = 0; i < r->n_drops; i++) {
        kgx_drop_t *d = &r->drops[i];
        free(d->subject); free(d->predicate); free(d->object); free(d->reason);
    }
    free(r->triples);
    free(r->drops);
    memset(r, 0, sizeof *r);
}

double kgx_confidence_clamp(double c)
{
    if (isnan(c)) return 0;
    return c < 0 ? 0 : c > 1 ? 1 : c;
}

/* ---------------------------------------------------------------- C -> Lua */

/* Decodes JSON with the state's own cjson: stack: -> value | nothing (returns -1, msg in err). */
int script_push_json(script_vm_t *s, const char *json, size_t len, char *err, size_t errlen)
{
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_decode);
    lua_pushlstring(L, json, len);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        script_set_err(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* stack: -> drawer. Bad metadata JSON is passed as nil (reported when warn: once per drawer, by split). */
/* stack: -> document. A Lua string is a copy: a drawer of 10 MB read by a hook is 10 MB more in
 * that state, garbage once the call returns but freed only at the collector's pace — and the pace is
 * set by what the state allocates next, which may be little (a state that split one large drawer
 * then builds small requests). So a call that made a large document a string ends with a full
 * collection (script_call_done): a state holds a large document only while a hook uses it. */
#define SCRIPT_DOC_BIG 65536
static void push_document(script_vm_t *s, const kgx_drawer_t *d)
{
    size_t n = d->document ? d->document_len : 0;
    lua_pushlstring(s->L, d->document ? d->document : "", n);
    if (n >= SCRIPT_DOC_BIG) s->doc_big = 1;
}

/* __index of a drawer table: drawer.document is made a Lua string when a hook reads it, not for
 * every call — the default policy reads it in split only, so the request and parse calls of a drawer
 * cut into 800 chunks copy nothing of it. Upvalues: the vm, the generation of the table. A table kept
 * past its call (in a global) no longer has a document: that is an error, not stale memory. */
static int drawer_index(lua_State *L)
{
    script_vm_t *s = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "document") != 0) return 0;
    if (!s->drawer_cur || lua_tointeger(L, lua_upvalueindex(2)) != s->drawer_gen)
        return luaL_error(L, "drawer.document: a drawer table is valid only during the hook call it was given to");
    push_document(s, s->drawer_cur);
    return 1;
}

void script_push_drawer(script_vm_t *s, const kgx_drawer_t *d, int warn)
{
    lua_State *L = s->L;
    lua_createtable(L, 0, 6);
    if (d->id) { lua_pushstring(L, d->id); lua_setfield(L, -2, "id"); }
    if (d->wing) { lua_pushstring(L, d->wing); lua_setfield(L, -2, "wing"); }
    if (d->room) { lua_pushstring(L, d->room); lua_setfield(L, -2, "room"); }
    s->drawer_cur = d;
    s->drawer_gen++;
    lua_createtable(L, 0, 1);                               /* its metatable: document on access */
    lua_pushlightuserdata(L, s);
    lua_pushinteger(L, s->drawer_gen);
    lua_pushcclosure(L, drawer_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    if (d->metadata_json && *d->metadata_json) {
        char e[256];
        if (script_push_json(s, d->metadata_json, strlen(d->metadata_json), e, sizeof e) == 0)
            lua_setfield(L, -2, "metadata");
        else if (warn)
            kgx_log(KGX_LOG_WARN, "drawer=%s metadata is not valid JSON, passed as nil: %s", d->id ? d->id : "?", e);
    }
}

/* stack: -> ctx */
void script_push_ctx(script_vm_t *s, const kgx_ctx_t *c)
{
    lua_State *L = s->L;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, c && c->n_ctx > 0 ? c->n_ctx : s->n_ctx);
    lua_setfield(L, -2, "n_ctx");
    lua_pushinteger(L, c ? c->shrink : 0);
    lua_setfield(L, -2, "shrink");
    lua_pushinteger(L, c ? c->attempt : 0);
    lua_setfield(L, -2, "attempt");
    lua_pushstring(L, s->conf->model);
    lua_setfield(L, -2, "model");
    if (c && c->endpoint) { lua_pushstring(L, c->endpoint); lua_setfield(L, -2, "endpoint"); }
    if (c && c->max_tokens > 0) { lua_pushinteger(L, c->max_tokens); lua_setfield(L, -2, "max_tokens"); }   /* [answer] */
}

/* stack: -> chunk (nil for NULL; a table chunk is decoded from its JSON) */
void script_push_chunk(script_vm_t *s, const kgx_chunk_t *c)
{
    lua_State *L = s->L;
    if (!c) { lua_pushnil(L); return; }
    if (!c->table || script_push_json(s, c->text, c->len, NULL, 0) != 0)
        lua_pushlstring(L, c->text, c->len);
}

/* ---------------------------------------------------------------- Lua -> C */

/* Is the table at idx a list 1..n with no other keys? Sets *n. */
int script_is_list(lua_State *L, int idx, size_t *n)
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

static int tokens_of(size_t len) { return (int)((len + 2) / 3 > INT32_MAX ? INT32_MAX : (len + 2) / 3); }

/* The n chunks of split's list at res become C chunks: strings as they are, tables as JSON. */
int script_take_chunks(script_vm_t *s, int res, size_t n, kgx_chunk_t **out, char *err, size_t errlen)
{
    lua_State *L = s->L;
    size_t total = 0;
    *out = calloc(n ? n : 1, sizeof **out);
    if (!*out) { script_set_err(err, errlen, "split: out of memory"); return -1; }
    for (size_t i = 0; i < n; i++) {
        kgx_chunk_t *c = &(*out)[i];
        lua_rawgeti(L, res, (int)(i + 1));                  /* stack: ... chunk */
        int t = lua_type(L, -1);
        c->tokens = -1;
        if (t == LUA_TTABLE) {
            script_rawfield(L, -1, "text");
            if (lua_type(L, -1) == LUA_TSTRING) c->tokens = tokens_of(lua_objlen(L, -1));
            lua_pop(L, 1);
            lua_rawgeti(L, LUA_REGISTRYINDEX, s->cj_encode);
            lua_insert(L, -2);                              /* stack: ... encode chunk */
            if (lua_pcall(L, 1, 1, 0) != 0) {
                script_set_err(err, errlen, "split: chunk %zu cannot be kept as JSON: %s", i + 1, lua_tostring(L, -1));
                goto fail;
            }
            c->table = 1;
        } else if (t == LUA_TSTRING) {
            c->tokens = tokens_of(lua_objlen(L, -1));
        } else {
            script_set_err(err, errlen, "split: chunk %zu is a %s, expected a string or a table", i + 1,
                           lua_typename(L, t));
            goto fail;
        }
        size_t len;
        const char *p = lua_tolstring(L, -1, &len);
        total += len;
        if (total > MAX_CHUNK_TOTAL) {
            script_set_err(err, errlen, "split: chunks of more than %zu MiB in all", MAX_CHUNK_TOTAL >> 20);
            goto fail;
        }
        if (!(c->text = script_dup_lstr(p, len))) { script_set_err(err, errlen, "split: out of memory"); goto fail; }
        c->len = len;
        lua_pop(L, 1);
    }
    return 0;
fail:
    lua_settop(L, res);
    kgx_chunks_free(*out, n);
    *out = NULL;
    return -1;
}

/* Reads request's result table at res into *out. */
int script_take_request(script_vm_t *s, int res, kgx_request_t *out, char *err, size_t errlen)
{
    lua_State *L = s->L;
    size_t len;
    if (!lua_istable(L, res)) {
        script_set_err(err, errlen, "request: returned %s, expected { path=, body= }", luaL_typename(L, res));
        return -1;
    }
    script_rawfield(L, res, "path");
    const char *path = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!path || path[0] != '/') {
        script_set_err(err, errlen, "request: 'path' must be a string starting with '/'");
        return -1;
    }
    if (len > MAX_PATH_BYTES) {
        script_set_err(err, errlen, "request: 'path' longer than %d bytes", MAX_PATH_BYTES);
        return -1;
    }
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)path[k] <= 0x20 || (unsigned char)path[k] >= 0x7f) {
            script_set_err(err, errlen, "request: 'path' contains a space or control/non-ASCII byte at %zu", k);
            return -1;
        }
    if (!(out->path = script_dup_lstr(path, len))) goto oom;
    lua_pop(L, 1);

    script_rawfield(L, res, "body");                        /* stack: ... result body */
    if (lua_istable(L, -1)) {
        /* sorted keys: the same request, the same bytes */
        if (canon_encode(s, s->conf->max_body, &out->body, &out->body_len, err, errlen) != 0) return -1;
    } else if (lua_type(L, -1) != LUA_TSTRING) {
        script_set_err(err, errlen, "request: 'body' must be a string or a table (got %s)", luaL_typename(L, -1));
        return -1;
    } else {
        const char *body = lua_tolstring(L, -1, &len);
        if (len > s->conf->max_body) {
            script_set_err(err, errlen, "request: body is %zu bytes, more than max_body %zu", len, s->conf->max_body);
            lua_settop(L, res - 1);
            lua_gc(L, LUA_GCCOLLECT, 0);      /* let the huge string go now */
            return -1;
        }
        if (!(out->body = script_dup_lstr(body, len))) goto oom;
        out->body_len = len;
        lua_pop(L, 1);
    }

    script_rawfield(L, res, "timeout_ms");
    if (!lua_isnil(L, -1)) {
        lua_Number t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        if (t < 0 || t != floor(t) || t > INT32_MAX) {
            script_set_err(err, errlen, "request: 'timeout_ms' must be a non-negative integer");
            return -1;
        }
        out->timeout_ms = (int)t;
    }
    lua_pop(L, 1);
    return 0;
oom:
    script_set_err(err, errlen, "request: out of memory");
    return -1;
}

/* Field of the table at idx as a sanitized, capped copy when it is a string/number, else NULL. */
static char *raw_field(lua_State *L, int idx, const char *k1, const char *k2)
{
    char *v = NULL;
    script_rawfield(L, idx, k1);
    if (k2 && lua_isnil(L, -1)) { lua_pop(L, 1); script_rawfield(L, idx, k2); }
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        v = script_dup_sanitized(p, n > MAX_DROP_FIELD ? MAX_DROP_FIELD : n);
    }
    lua_pop(L, 1);
    return v;
}

/* Adds a drop for raw triple at idx (0: not a table). */
int script_add_drop(lua_State *L, kgx_result_t *out, int idx, const char *reason, size_t rlen)
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
    d->reason = script_dup_sanitized(reason, rlen > MAX_DROP_FIELD ? MAX_DROP_FIELD : rlen);
    return d->reason ? 0 : -1;
}

/* Validates the accepted triple at idx; returns NULL and fills *t, or the drop reason. */
const char *script_take_triple(lua_State *L, int idx, kgx_triple_t *t, char *why, size_t whylen)
{
    static const char *const keys[3] = { "subject", "predicate", "object" };
    char **dst[3] = { &t->subject, &t->predicate, &t->object };
    memset(t, 0, sizeof *t);
    for (int k = 0; k < 3; k++) {
        script_rawfield(L, idx, keys[k]);
        if (k == 1 && lua_isnil(L, -1)) { lua_pop(L, 1); script_rawfield(L, idx, "relation_type"); }
        size_t n;
        const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (!v) snprintf(why, whylen, "%s missing or not a string", keys[k]);
        else if (n == 0) snprintf(why, whylen, "%s is empty", keys[k]);
        else if (n > MAX_FIELD_BYTES) snprintf(why, whylen, "%s longer than %d bytes", keys[k], MAX_FIELD_BYTES);
        else if (!kgx_utf8_valid(v, n)) snprintf(why, whylen, "%s is not valid UTF-8", keys[k]);
        else if (!(*dst[k] = script_dup_lstr(v, n))) snprintf(why, whylen, "out of memory");
        lua_pop(L, 1);
        if (!*dst[k]) return why;
    }
    script_rawfield(L, idx, "confidence");
    int ct = lua_type(L, -1);
    double c = KGX_CONFIDENCE_DEFAULT;
    if (ct == LUA_TNUMBER) c = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ct != LUA_TNIL && ct != LUA_TNUMBER) {
        snprintf(why, whylen, "confidence is a %s, not a number", lua_typename(L, ct));
        return why;
    }
    t->confidence = kgx_confidence_clamp(c);
    script_rawfield(L, idx, "raw_predicate");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); script_rawfield(L, idx, "raw_relation_type"); }
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        if (!(t->raw_predicate = script_dup_sanitized(v, n > MAX_FIELD_BYTES ? MAX_FIELD_BYTES : n)))
            snprintf(why, whylen, "out of memory");
    }
    lua_pop(L, 1);
    return t->raw_predicate || !why[0] ? NULL : why;
}
