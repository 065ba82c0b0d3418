/* script — one state's public calls (see script.h for the contract, script_int.h for the files).
 *
 * A hook call takes plain C data (drawer, chunk, ctx) and gives plain C data back; nothing of a job
 * stays in the Lua state between calls. The int-id jobs below keep a drawer and its chunks in C for
 * the callers that drive one state directly (--reapply, tests). */
#include "script_int.h"
#include "answer.h"      /* [answer] enum kgx_verdict */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kgx_drawer_t *drawer;       /* NULL: free slot */
    kgx_chunk_t *chunks;
    size_t n;
} script_job_t;

struct kgx_script {
    script_vm_t *vm;            /* replaced whole by a reload */
    script_job_t *jobs;
    size_t cap;
};

/* ---------------------------------------------------------------- states */

kgx_script_t *kgx_script_new_src(kgx_policy_src_t *src, char *err, size_t errlen)
{
    kgx_script_t *s = calloc(1, sizeof *s);
    if (!s) { script_set_err(err, errlen, "script: out of memory"); return NULL; }
    if (!(s->vm = script_vm_new(src, err, errlen))) {
        free(s);
        return NULL;
    }
    return s;
}

/* Owned: returns a handle the caller frees with kgx_script_free. */
kgx_script_t *kgx_script_new(const kgx_script_opts_t *opts, char *err, size_t errlen)
{
    kgx_policy_src_t *src = kgx_policy_src_read(opts, err, errlen);
    if (!src) return NULL;
    kgx_script_t *s = kgx_script_new_src(src, err, errlen);
    kgx_policy_src_unref(src);
    return s;
}


int kgx_script_reload(kgx_script_t *s, char *err, size_t errlen)
{
    kgx_policy_src_t *src = kgx_policy_src_reread(s->vm->src, err, errlen);
    if (!src) return -1;
    script_vm_t *vm = script_vm_new(src, err, errlen);
    kgx_policy_src_unref(src);
    if (!vm) return -1;
    if (kgx_policy_src_check_reload(s->vm->src, vm->src, err, errlen) != 0) {
        script_vm_free(vm);
        return -1;
    }
    int n_ctx = s->vm->n_ctx;
    script_vm_free(s->vm);
    s->vm = vm;
    if (n_ctx != vm->n_ctx) script_api_set_n_ctx(vm, n_ctx);
    return 0;
}

void kgx_script_free(kgx_script_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->cap; i++) kgx_script_job_free(s, (int)i + 1);
    free(s->jobs);
    script_vm_free(s->vm);
    free(s);
}

kgx_policy_src_t *kgx_script_src(const kgx_script_t *s) { return s ? s->vm->src : NULL; }
const char *kgx_script_name(const kgx_script_t *s) { return s ? s->vm->src->name : NULL; }
const char *kgx_script_version(const kgx_script_t *s) { return s ? s->vm->src->version : NULL; }
const char *kgx_script_plugins_dir(const kgx_script_t *s) { return s ? s->vm->conf->plugins_dir : NULL; }
const char *kgx_script_path(const kgx_script_t *s) { return s ? s->vm->conf->path : NULL; }
int kgx_script_running(const kgx_script_t *s) { return s ? atomic_load(&s->vm->running) : -1; }

void kgx_script_set_n_ctx(kgx_script_t *s, int n_ctx)
{
    if (s && n_ctx != s->vm->n_ctx) script_api_set_n_ctx(s->vm, n_ctx);
}

/* ---------------------------------------------------------------- hook calls */

int kgx_script_run_split(kgx_script_t *sc, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                         kgx_chunk_t **chunks, size_t *nchunks, kgx_hook_t *failed, char *err, size_t errlen)
{
    script_vm_t *s = sc->vm;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    size_t n = 0;
    int res;
    *chunks = NULL;
    *nchunks = 0;
    *failed = KGX_HOOK_SPLIT;
    s->skipped_last = 0;
    if (s->pol.hook[KGX_HOOK_SPLIT] == LUA_NOREF && s->pol.hook[KGX_HOOK_SKIP] != LUA_NOREF) {
        /* economy (issue 14): the default chunk through the skip hook */
        lua_createtable(L, 1, 0);
        lua_pushlstring(L, d->document ? d->document : "", d->document ? d->document_len : 0);
        lua_rawseti(L, -2, 1);                              /* stack: { document } */
        n = 1;
        goto skip;
    }
    if (s->pol.hook[KGX_HOOK_SPLIT] == LUA_NOREF) {
        /* default: one chunk, the whole document */
        kgx_chunk_t *c = calloc(1, sizeof *c);
        if (!c || !(c->text = script_dup_lstr(d->document ? d->document : "", d->document ? d->document_len : 0))) {
            free(c);
            script_set_err(err, errlen, "split: out of memory");
            return -1;
        }
        c->len = d->document ? d->document_len : 0;
        c->tokens = (int)((c->len + 2) / 3);
        *chunks = c;
        *nchunks = 1;
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_SPLIT]);
    script_push_drawer(s, d, 1);
    script_push_ctx(s, ctx);                                /* stack: split drawer ctx */
    if (script_call_hook(s, KGX_HOOK_SPLIT, 2, 1, err, errlen) != 0) goto fail;
    res = lua_gettop(L);                                    /* stack: result */
    if (!lua_istable(L, res)) {
        script_set_err(err, errlen, "split: returned %s, expected a list of chunks", luaL_typename(L, res));
        goto fail;
    }
    if (!script_is_list(L, res, &n)) {
        script_set_err(err, errlen, "split: returned a table that is not a list (return { chunk, ... })");
        goto fail;
    }
    if (n > s->conf->max_chunks) {
        script_set_err(err, errlen, "split: returned %zu chunks, more than max_chunks %zu", n, s->conf->max_chunks);
        goto fail;
    }
skip:
    if (n && s->pol.hook[KGX_HOOK_SKIP] != LUA_NOREF) {
        /* economy (issue 14): chunks the skip hook calls factless leave the list: no request for them */
        int all = lua_gettop(L);                            /* stack: list */
        lua_createtable(L, (int)n, 0);                      /* stack: list kept */
        script_push_drawer(s, d, 0);                        /* stack: list kept drawer */
        size_t k = 0;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_SKIP]);
            lua_rawgeti(L, all, (int)i);
            lua_pushvalue(L, all + 2);                      /* stack: list kept drawer skip chunk drawer */
            if (script_call_hook(s, KGX_HOOK_SKIP, 2, 1, err, errlen) != 0) {
                *failed = KGX_HOOK_SKIP;
                lua_settop(L, top);
                script_name_hook(s, KGX_HOOK_SKIP, err, errlen);
                return -1;
            }
            if (lua_toboolean(L, -1)) {
                s->skipped_last++;
                log_debug("chunk=%zu skipped, no request: %s", i - 1,
                          lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "the skip hook said so");
            } else {
                lua_rawgeti(L, all, (int)i);
                lua_rawseti(L, all + 1, (int)++k);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);                                      /* stack: list kept */
        n = k;
    }
    res = lua_gettop(L);
    if (script_take_chunks(s, res, n, chunks, err, errlen) != 0) goto fail;
    lua_settop(L, top);
    *nchunks = n;
    return 0;
fail:
    lua_settop(L, top);
    script_name_hook(s, KGX_HOOK_SPLIT, err, errlen);
    return -1;
}

size_t kgx_script_skipped_last(const kgx_script_t *s) { return s ? s->vm->skipped_last : 0; }

/* See script.h and push_document (script_marshal.c). */
void kgx_script_call_done(kgx_script_t *sc)
{
    script_vm_t *s = sc->vm;
    s->drawer_cur = NULL;
    if (s->doc_big) {
        s->doc_big = 0;
        lua_gc(s->L, LUA_GCCOLLECT, 0);
    }
}

int kgx_script_run_request(kgx_script_t *sc, const kgx_drawer_t *d, const kgx_chunk_t *c,
                           const kgx_ctx_t *ctx, kgx_request_t *out, kgx_hook_t *failed,
                           char *err, size_t errlen)
{
    script_vm_t *s = sc->vm;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    memset(out, 0, sizeof *out);
    *failed = KGX_HOOK_REQUEST;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_REQUEST]);
    script_push_chunk(s, c);
    script_push_drawer(s, d, 0);
    script_push_ctx(s, ctx);                                /* stack: request chunk drawer ctx */
    if (script_call_hook(s, KGX_HOOK_REQUEST, 3, 1, err, errlen) != 0
        || script_take_request(s, top + 1, out, err, errlen) != 0) {
        lua_settop(L, top);
        script_name_hook(s, KGX_HOOK_REQUEST, err, errlen);
        kgx_request_clear(out);
        return -1;
    }
    lua_settop(L, top);
    return 0;
}

int kgx_script_run_answer(kgx_script_t *sc, const kgx_drawer_t *d, const kgx_chunk_t *c,
                          const char *body, size_t len, kgx_result_t *out, kgx_hook_t *failed,
                          char *err, size_t errlen)
{
    script_vm_t *s = sc->vm;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    size_t n;
    kgx_hook_t hook = KGX_HOOK_PARSE;       /* the hook a failure is charged to */
    memset(out, 0, sizeof *out);
    script_push_drawer(s, d, 0);                            /* stack: drawer */
    int drawer = top + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_PARSE]);
    lua_pushlstring(L, body ? body : "", body ? len : 0);
    script_push_chunk(s, c);
    lua_pushvalue(L, drawer);                               /* stack: drawer parse body chunk drawer */
    if (script_call_hook(s, KGX_HOOK_PARSE, 3, 2, err, errlen) != 0) goto fail;
    int res = drawer + 1;                                   /* stack: drawer list|nil reason */
    if (lua_isnil(L, res)) {
        const char *why = lua_isstring(L, res + 1) ? lua_tostring(L, res + 1) : "returned nil";
        char tmp[512];
        script_fold_error(tmp, sizeof tmp, NULL, why);
        script_set_err(err, errlen, "parse: %s", tmp);
        lua_settop(L, top);      /* the answer is bad, not the policy: no file:line */
        *failed = hook;
        return -1;
    }
    if (!lua_istable(L, res)) {
        script_set_err(err, errlen, "parse: returned %s, expected a list of triples or nil, reason", luaL_typename(L, res));
        goto fail;
    }
    if (!script_is_list(L, res, &n)) {
        script_set_err(err, errlen, "parse: returned a table that is not a list (return { triple, ... })");
        goto fail;
    }
    if (n > s->conf->max_triples_raw) {
        script_set_err(err, errlen, "parse: returned %zu triples, more than max_triples_raw %zu", n, s->conf->max_triples_raw);
        goto fail;
    }
    /* [answer] the verdict beside the triples: "whole", or anything else = the list broke off */
    if (lua_isnil(L, res + 1)) out->verdict = KGX_VERDICT_NONE;
    else if (lua_type(L, res + 1) == LUA_TSTRING && strcmp(lua_tostring(L, res + 1), "whole") == 0)
        out->verdict = KGX_VERDICT_WHOLE;
    else out->verdict = KGX_VERDICT_INCOMPLETE;
    lua_settop(L, res);
    for (size_t k = 1; k <= n; k++) {
        lua_rawgeti(L, res, (int)k);                        /* stack: drawer list raw */
        int raw = res + 1;
        if (!lua_istable(L, raw)) {
            if (script_add_drop(L, out, 0, "triple is not a table", 21) != 0) goto oom;
            lua_settop(L, res);
            continue;
        }
        int acc = raw;
        if (s->pol.hook[KGX_HOOK_ACCEPT] != LUA_NOREF) {
            hook = KGX_HOOK_ACCEPT;
            lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_ACCEPT]);
            lua_pushvalue(L, raw);
            lua_pushvalue(L, drawer);
            if (script_call_hook(s, KGX_HOOK_ACCEPT, 2, 2, err, errlen) != 0) goto fail;
            hook = KGX_HOOK_PARSE;
            acc = raw + 1;                                  /* stack: ... raw triple|nil reason */
            if (lua_isnil(L, acc)) {
                size_t rl;
                const char *why = lua_isstring(L, acc + 1) ? lua_tolstring(L, acc + 1, &rl) : NULL;
                if (!why) { why = "rejected by accept"; rl = strlen(why); }
                if (script_add_drop(L, out, raw, why, rl) != 0) goto oom;
                lua_settop(L, res);
                continue;
            }
            if (!lua_istable(L, acc)) {
                char why[64];
                snprintf(why, sizeof why, "accept returned %s", luaL_typename(L, acc));
                if (script_add_drop(L, out, raw, why, strlen(why)) != 0) goto oom;
                lua_settop(L, res);
                continue;
            }
        }
        kgx_triple_t t;
        char why[128] = "";
        if (script_take_triple(L, acc, &t, why, sizeof why)) {
            script_triple_free(&t);
            if (script_add_drop(L, out, raw, why, strlen(why)) != 0) goto oom;
        } else {
            kgx_triple_t *nt = realloc(out->triples, (out->n_triples + 1) * sizeof *nt);
            if (!nt) { script_triple_free(&t); goto oom; }
            out->triples = nt;
            nt[out->n_triples++] = t;
        }
        lua_settop(L, res);
    }
    lua_settop(L, top);
    return 0;
oom:
    script_set_err(err, errlen, "parse: out of memory");
fail:
    lua_settop(L, top);
    script_name_hook(s, hook, err, errlen);
    *failed = hook;
    kgx_result_clear(out);
    return -1;
}

/* ---------------------------------------------------------------- int-id jobs */

static script_job_t *job_at(kgx_script_t *s, int job)
{
    if (!s || job <= 0 || (size_t)job > s->cap || !s->jobs[job - 1].drawer) return NULL;
    return &s->jobs[job - 1];
}

/* Takes d (copied) and chunks (owned); returns the id. */
static int job_add(kgx_script_t *s, const kgx_drawer_t *d, kgx_chunk_t *chunks, size_t n, char *err, size_t errlen)
{
    size_t i = 0;
    while (i < s->cap && s->jobs[i].drawer) i++;
    if (i == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        script_job_t *nj = realloc(s->jobs, cap * sizeof *nj);
        if (!nj) goto oom;
        memset(nj + s->cap, 0, (cap - s->cap) * sizeof *nj);
        s->jobs = nj;
        s->cap = cap;
    }
    if (!(s->jobs[i].drawer = kgx_drawer_dup(d))) goto oom;
    s->jobs[i].chunks = chunks;
    s->jobs[i].n = n;
    return (int)i + 1;
oom:
    kgx_chunks_free(chunks, n);
    script_set_err(err, errlen, "job: out of memory");
    return -1;
}

int kgx_script_split(kgx_script_t *s, const kgx_drawer_t *d, const kgx_ctx_t *ctx,
                     size_t *nchunks, char *err, size_t errlen)
{
    if (!d) { script_set_err(err, errlen, "split: no drawer"); return -1; }
    kgx_chunk_t *chunks;
    size_t n;
    kgx_hook_t failed;
    if (kgx_script_run_split(s, d, ctx, &chunks, &n, &failed, err, errlen) != 0) return -1;
    int id = job_add(s, d, chunks, n, err, errlen);
    if (id > 0 && nchunks) *nchunks = n;
    return id;
}

int kgx_script_job_new(kgx_script_t *s, const kgx_drawer_t *d, char *err, size_t errlen)
{
    if (!d) { script_set_err(err, errlen, "job: no drawer"); return -1; }
    return job_add(s, d, NULL, 0, err, errlen);
}

void kgx_script_job_free(kgx_script_t *s, int job)
{
    script_job_t *j = job_at(s, job);
    if (!j) return;
    free(j->drawer);
    kgx_chunks_free(j->chunks, j->n);
    memset(j, 0, sizeof *j);
}

int kgx_script_chunk_tokens(kgx_script_t *s, int job, size_t i)
{
    script_job_t *j = job_at(s, job);
    return j && i < j->n ? j->chunks[i].tokens : -1;
}

int kgx_script_request(kgx_script_t *s, int job, size_t i, const kgx_ctx_t *ctx,
                       kgx_request_t *out, char *err, size_t errlen)
{
    script_job_t *j = job_at(s, job);
    memset(out, 0, sizeof *out);
    if (!j) { script_set_err(err, errlen, "request: unknown job %d", job); return -1; }
    if (i >= j->n) { script_set_err(err, errlen, "request: no chunk %zu (the job has %zu)", i, j->n); return -1; }
    kgx_hook_t failed;
    return kgx_script_run_request(s, j->drawer, &j->chunks[i], ctx, out, &failed, err, errlen);
}

int kgx_script_answer(kgx_script_t *s, int job, size_t i, const char *body, size_t len,
                      kgx_result_t *out, char *err, size_t errlen)
{
    script_job_t *j = job_at(s, job);
    memset(out, 0, sizeof *out);
    if (!j) { script_set_err(err, errlen, "parse: unknown job %d", job); return -1; }
    kgx_hook_t failed;
    return kgx_script_run_answer(s, j->drawer, i < j->n ? &j->chunks[i] : NULL, body, len, out, &failed,
                                 err, errlen);
}

/* [dropin] --adopt (core/adopt.c), on a hook thread: the policy's accept hook on one triple the host
 * builds itself, so an old edge's predicate is mapped exactly as a new answer's would be. */
int kgx_script_run_accept(kgx_script_t *sc, const kgx_drawer_t *d, const char *subject, const char *predicate,
                          const char *object, double confidence, kgx_triple_t *out, char *why, size_t whylen,
                          kgx_hook_t *failed, char *err, size_t errlen)
{
    script_vm_t *s = sc->vm;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    *failed = KGX_HOOK_ACCEPT;
    script_push_drawer(s, d, 0);                            /* stack: drawer */
    int drawer = top + 1;
    lua_createtable(L, 0, 4);                               /* stack: drawer raw */
    int raw = drawer + 1;
    lua_pushstring(L, subject); lua_setfield(L, raw, "subject");
    lua_pushstring(L, predicate); lua_setfield(L, raw, "predicate");
    lua_pushstring(L, object); lua_setfield(L, raw, "object");
    lua_pushnumber(L, confidence); lua_setfield(L, raw, "confidence");
    int acc = raw;
    if (s->pol.hook[KGX_HOOK_ACCEPT] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->pol.hook[KGX_HOOK_ACCEPT]);
        lua_pushvalue(L, raw);
        lua_pushvalue(L, drawer);
        if (script_call_hook(s, KGX_HOOK_ACCEPT, 2, 2, err, errlen) != 0) {
            lua_settop(L, top);
            script_name_hook(s, KGX_HOOK_ACCEPT, err, errlen);
            return -1;
        }
        acc = raw + 1;                                      /* stack: drawer raw triple|nil reason */
        if (!lua_istable(L, acc)) {
            if (lua_isnil(L, acc) && lua_isstring(L, acc + 1)) snprintf(why, whylen, "%s", lua_tostring(L, acc + 1));
            else if (lua_isnil(L, acc)) snprintf(why, whylen, "rejected by accept");
            else snprintf(why, whylen, "accept returned %s", luaL_typename(L, acc));
            lua_settop(L, top);
            return 1;
        }
    }
    int rc = script_take_triple(L, acc, out, why, whylen) ? 1 : 0;
    if (rc) { script_triple_free(out); memset(out, 0, sizeof *out); }
    lua_settop(L, top);
    return rc;
}
