/* fake-llama — a stand-in for llama.cpp's llama-server, for kgx's tests and benchmarks.
 *
 * One libuv loop, one thread. HTTP is parsed by libhttp-parser; everything JSON (request parsing, the
 * "model" of GRAMMAR.md, response bodies, stats) lives in tests/fake/model.lua run by an embedded
 * LuaJIT with lua-cjson. This file owns what must be exact and fast: connections and keep-alive,
 * slots with a FIFO queue, the prefix cache, the latency model (one uv_timer per request), seeded
 * fault injection and the counters behind /fake/stats. See README.md for flags and endpoints. */
#include <errno.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_BODY (256u << 20) /* refuse bodies above 256 MiB (413) */

/* ------------------------------------------------------------------ growable byte buffer */
typedef struct { char *p; size_t len, cap; } buf_t;

static void buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { fprintf(stderr, "fake-llama: out of memory\n"); exit(1); }
    b->p = p, b->cap = cap;
}
static void buf_add(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_free(buf_t *b) { free(b->p); memset(b, 0, sizeof *b); }

/* ------------------------------------------------------------------ options */
static struct {
    const char *host, *port_file, *model, *script;
    int port, parallel, ctx_size, n_ctx; /* n_ctx: per slot (the whole pool with --kv-unified) */
    int kv_unified;                      /* slots share one KV pool of ctx_size tokens */
    double latency_ms, prompt_us, gen_us, tail_sigma;
    uint64_t seed;
    long loading_ms, hang_ms;
} opt = { .host = "127.0.0.1", .model = "/models/fake-llama.gguf", .parallel = 4, .ctx_size = 8192,
          .seed = 1, .hang_ms = 600000 };

/* ------------------------------------------------------------------ faults */
enum { F_NONE, F_500, F_503, F_HANG, F_RESET, F_MALFORMED, F_TRUNCATED, F_EMPTY, F_FENCE, F_PROSE,
       F_PAD, F_MIX, F_KV500, F_PROSECUT, F_LIMITCUT, F_CTXCUT, F_COUNT };
static const char *fault_names[F_COUNT] = { "", "500", "503", "hang", "reset", "malformed", "truncated",
                                            "empty", "fence", "prose", "pad", "mix",
                                            "kv500", "prosecut", "limitcut", "ctxcut" };
/* what `mix` chooses from: every kind but hang (and mix) */
static const int mix_kinds[] = { F_500, F_503, F_RESET, F_MALFORMED, F_TRUNCATED, F_EMPTY, F_FENCE,
                                 F_PROSE, F_PAD };

typedef struct { int kind; double share; long first_n; /* -1: independent per request */ } fault_t;
static fault_t *faults;
static int n_faults;

/* "KIND:SHARE[:FIRST_N]" → 0, or -1 with a message on stderr */
static int fault_parse(const char *spec, fault_t *f)
{
    char kind[32];
    const char *c1 = strchr(spec, ':');
    if (!c1 || (size_t)(c1 - spec) >= sizeof kind) goto bad;
    memcpy(kind, spec, (size_t)(c1 - spec));
    kind[c1 - spec] = 0;
    f->kind = F_NONE;
    for (int k = 1; k < F_COUNT; k++)
        if (!strcmp(kind, fault_names[k])) f->kind = k;
    if (f->kind == F_NONE) goto bad;
    char *end;
    f->share = strtod(c1 + 1, &end);
    if (end == c1 + 1 || f->share < 0 || f->share > 1) goto bad;
    f->first_n = -1;
    if (*end == ':') {
        const char *s = end + 1;
        f->first_n = strtol(s, &end, 10);
        if (end == s || f->first_n < 0) goto bad;
    }
    if (*end) goto bad;
    return 0;
bad:
    fprintf(stderr, "fake-llama: bad fault spec '%s' (want KIND:SHARE[:FIRST_N], KIND one of "
                    "500 503 hang reset malformed truncated empty fence prose pad mix)\n", spec);
    return -1;
}

/* splitmix64: the seeded PRNG (two streams: faults and latency, so one does not shift the other) */
static uint64_t rng_fault, rng_lat;
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unit(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

/* seeded hash of (seed, kind, text[, n]) — FNV-1a then a splitmix finaliser */
static uint64_t text_hash(const char *kind, const char *text, size_t len, long n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ opt.seed;
    const char *parts[2] = { kind, text };
    size_t lens[2] = { strlen(kind) + 1 /* the NUL separates kind from text */, len };
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < lens[k]; i++) h = (h ^ (unsigned char)parts[k][i]) * 0x100000001b3ull;
    h ^= (uint64_t)n * 0x9E3779B97F4A7C15ull;
    return splitmix(&h);
}

/* The fault for this request; count = how many extraction requests this text has had (1-based). */
static int fault_decide(const char *text, size_t len, long count)
{
    for (int i = 0; i < n_faults; i++) {
        const fault_t *f = &faults[i];
        int fires = f->first_n >= 0
            ? unit(text_hash(fault_names[f->kind], text, len, 0)) < f->share && count <= f->first_n
            : unit(splitmix(&rng_fault)) < f->share;
        if (!fires) continue;
        if (f->kind != F_MIX) return f->kind;
        return mix_kinds[text_hash("mix", text, len, count) % (sizeof mix_kinds / sizeof *mix_kinds)];
    }
    return F_NONE;
}

/* ------------------------------------------------------------------ Lua */
static lua_State *L;
static int model_ref; /* registry ref of the table model.lua returns */

static void lua_fn(const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, model_ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}
/* pcall with the error printed; returns 0 on success */
static int lua_call_ok(int nargs, int nres)
{
    if (lua_pcall(L, nargs, nres, 0) == 0) return 0;
    fprintf(stderr, "fake-llama: lua: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
}
static double field_num(int idx, const char *k)
{
    lua_getfield(L, idx, k);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}
static void set_num(const char *k, double v) { lua_pushnumber(L, v); lua_setfield(L, -2, k); }

/* ------------------------------------------------------------------ state */
typedef struct conn conn_t;
typedef struct job job_t;

struct job {
    conn_t *conn;        /* NULL once the client has gone: the slot still runs to the end */
    int ref;             /* Lua registry ref of the prepared request (model.lua prepare) */
    int hang;            /* a `hang` fault: no slot, only a timer that closes the connection */
    char *prompt;        /* for the prefix cache; handed to the slot when the job starts */
    size_t plen;
    int n_prompt, id_slot, cache_prompt, predicted, slot, cached;
    int pool;            /* --kv-unified: tokens this job holds in the shared pool */
    double prompt_ms, predicted_ms;
    job_t *next;         /* FIFO queue */
    uv_timer_t timer;
    int timer_init;
};

typedef struct {
    job_t *job;          /* running job or NULL */
    char *last;          /* previous prompt (prefix cache) */
    size_t last_len;
    long requests;
    uint64_t busy_ns, busy_since;
} slot_t;

struct conn {
    uv_tcp_t tcp;
    http_parser parser;
    buf_t in;            /* bytes read but not yet parsed (parser paused while a request is served) */
    buf_t url, body, hfield, hval;
    int in_value, expect_continue, msg_done, too_big;
    int busy;            /* a request is being served: parsing waits */
    int in_feed, closing, keep_alive, reset;
    job_t *job;
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static slot_t *slots;
static job_t *q_head, *q_tail;
static uint64_t t_start, t_stats; /* hrtime at start / at last reset */
static time_t t_epoch;
static long n_conns_live;
static conn_t **conns; /* live connections, for shutdown */
static long conns_cap;
static struct {
    long requests_total, extraction_requests, prompt_tokens, cached_tokens, queue_len, queue_max,
        in_flight, seq;
} st;

static http_parser_settings parser_settings;

/* ------------------------------------------------------------------ responses */
static const char *status_text(int s)
{
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

typedef struct { uv_write_t w; conn_t *c; int close_after; char mem[]; } wreq_t;

static void conn_close(conn_t *c);
static void conn_feed(conn_t *c);

static void on_written(uv_write_t *w, int status)
{
    wreq_t *r = (wreq_t *)w;
    if ((status < 0 || r->close_after) && !r->c->closing) conn_close(r->c);
    free(r);
}

static void write_raw(conn_t *c, const char *s, size_t n, int close_after)
{
    wreq_t *r = malloc(sizeof *r + n);
    if (!r) exit(1);
    r->c = c, r->close_after = close_after;
    memcpy(r->mem, s, n);
    uv_buf_t b = uv_buf_init(r->mem, (unsigned)n);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(r);
        conn_close(c);
    }
}

/* Send one response; then the connection takes its next request (keep-alive) or closes. */
static void respond(conn_t *c, int status, const char *body, size_t len)
{
    if (!c || c->closing) return;
    if (status >= 400) c->keep_alive = 0;   /* llama-server closes the connection after every error */
    buf_t b = { 0 };
    buf_printf(&b, "HTTP/1.1 %d %s\r\nServer: fake-llama\r\nContent-Type: application/json; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n%s\r\n",
               status, status_text(status), len, c->keep_alive ? "" : "Connection: close\r\n");
    buf_add(&b, body, len);
    write_raw(c, b.p, b.len, !c->keep_alive);
    buf_free(&b);
    c->job = NULL;
    if (!c->keep_alive) return; /* stays busy: nothing more is parsed */
    c->busy = 0;
    if (!c->in_feed) conn_feed(c);
}
static void respond_str(conn_t *c, int status, const char *body) { respond(c, status, body, strlen(body)); }

static void respond_error(conn_t *c, int code, const char *type, const char *msg)
{
    char b[512];
    snprintf(b, sizeof b, "{\"error\":{\"code\":%d,\"message\":\"%s\",\"type\":\"%s\"}}", code, msg, type);
    respond_str(c, code, b);
}
static void respond_loading(conn_t *c) { respond_error(c, 503, "unavailable_error", "Loading model"); }

/* JSON string escaping for the few strings C writes itself (model path) */
static void buf_json_str(buf_t *b, const char *s)
{
    buf_add(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_printf(b, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) buf_printf(b, "\\u%04x", *s);
        else buf_add(b, s, 1);
    }
    buf_add(b, "\"", 1);
}

/* ------------------------------------------------------------------ jobs and slots */
static void on_job_timer_closed(uv_handle_t *h) { free(h->data); }

static void job_free(job_t *j)
{
    st.in_flight--;
    if (j->ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, j->ref);
    free(j->prompt);
    if (j->conn && j->conn->job == j) j->conn->job = NULL;
    if (j->timer_init) {
        uv_timer_stop(&j->timer);
        j->timer.data = j;
        uv_close((uv_handle_t *)&j->timer, on_job_timer_closed);
    } else {
        free(j);
    }
}

static double gauss(void)
{ /* Box-Muller on the latency stream */
    double u1 = unit(splitmix(&rng_lat)), u2 = unit(splitmix(&rng_lat));
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static void job_done(uv_timer_t *t);

/* --kv-unified: the slots share one pool of ctx_size tokens. When the jobs on the slots together need
 * more, llama-server answers 500 "Context size has been exceeded." to every request active at that
 * moment; here that happens one loop turn later (a 0 ms timer), then the queue refills the slots. */
static long pool_used;
static uv_timer_t kv_timer;
static void job_start(job_t *j, int s);
static void kv_check(uv_timer_t *t)
{
    (void)t;
    if (pool_used <= opt.ctx_size) return;
    uint64_t now = uv_hrtime();
    for (int i = 0; i < opt.parallel; i++) {
        job_t *j = slots[i].job;
        if (!j) continue;
        slots[i].busy_ns += now - slots[i].busy_since;
        slots[i].job = NULL;
        pool_used -= j->pool;
        j->pool = 0;
        if (j->conn) respond_error(j->conn, 500, "server_error", "Context size has been exceeded.");
        job_free(j);
    }
    while (q_head) {
        int s = -1;
        for (int i = 0; i < opt.parallel && s < 0; i++) if (!slots[i].job) s = i;
        if (s < 0) break;
        job_t *n = q_head;
        q_head = n->next;
        if (!q_head) q_tail = NULL;
        st.queue_len--;
        job_start(n, s);
    }
}

/* Start j on slot s: prefix cache, latency, then hold the slot for that long. */
static void job_start(job_t *j, int s)
{
    slot_t *sl = &slots[s];
    size_t lcp = 0;
    if (sl->last && j->cache_prompt)
        while (lcp < sl->last_len && lcp < j->plen && sl->last[lcp] == j->prompt[lcp]) lcp++;
    long cached = (long)(lcp / 4); /* whole tokens of the shared prefix */
    if (cached > j->n_prompt - 1) cached = j->n_prompt - 1; /* the last prompt token is always evaluated */
    if (cached < 0) cached = 0;
    j->cached = (int)cached;
    j->slot = s;
    free(sl->last); /* the slot now remembers this prompt */
    sl->last = j->prompt, sl->last_len = j->plen;
    j->prompt = NULL;

    double fixed = opt.latency_ms;
    if (opt.tail_sigma > 0) fixed *= exp(opt.tail_sigma * gauss()); /* lognormal, median 1 */
    j->prompt_ms = fixed + (j->n_prompt - cached) * opt.prompt_us / 1000.0;
    j->predicted_ms = j->predicted * opt.gen_us / 1000.0;
    uint64_t ms = (uint64_t)llround(j->prompt_ms + j->predicted_ms);

    st.prompt_tokens += j->n_prompt;
    st.cached_tokens += cached;
    sl->job = j;
    sl->requests++;
    sl->busy_since = uv_hrtime();
    uv_timer_init(loop, &j->timer);
    j->timer_init = 1;
    j->timer.data = j;
    uv_timer_start(&j->timer, job_done, ms, 0);
    if (opt.kv_unified) {
        j->pool = j->n_prompt + j->predicted;
        pool_used += j->pool;
        if (pool_used > opt.ctx_size) uv_timer_start(&kv_timer, kv_check, 0, 0);
    }
}

/* An idle slot for j: the one whose last prompt shares the longest prefix, else the lowest idle id. */
static int slot_pick(const job_t *j)
{
    if (j->id_slot >= 0 && j->id_slot < opt.parallel && !slots[j->id_slot].job) return j->id_slot;
    int best = -1;
    size_t best_lcp = 0;
    for (int i = 0; i < opt.parallel; i++) {
        if (slots[i].job) continue;
        size_t lcp = 0;
        const slot_t *s = &slots[i];
        if (s->last)
            while (lcp < s->last_len && lcp < j->plen && s->last[lcp] == j->prompt[lcp]) lcp++;
        if (best < 0 || lcp > best_lcp) best = i, best_lcp = lcp;
    }
    return best;
}

static void job_submit(job_t *j)
{
    int s = slot_pick(j);
    if (s >= 0) { job_start(j, s); return; }
    j->next = NULL; /* every slot busy: wait in the FIFO queue */
    if (q_tail) q_tail->next = j; else q_head = j;
    q_tail = j;
    if (++st.queue_len > st.queue_max) st.queue_max = st.queue_len;
}

static void job_done(uv_timer_t *t)
{
    job_t *j = t->data;
    slot_t *sl = &slots[j->slot];
    uint64_t now = uv_hrtime();
    sl->busy_ns += now - sl->busy_since;
    sl->job = NULL;
    pool_used -= j->pool;
    /* free slot first goes to the queue head (FIFO) */
    if (q_head) {
        job_t *n = q_head;
        q_head = n->next;
        if (!q_head) q_tail = NULL;
        st.queue_len--;
        job_start(n, slot_pick(n));
    }
    if (j->conn) {
        lua_fn("respond");
        lua_rawgeti(L, LUA_REGISTRYINDEX, j->ref);
        lua_newtable(L);
        set_num("cached", j->cached);
        set_num("prompt_ms", j->prompt_ms);
        set_num("predicted_ms", j->predicted_ms);
        set_num("slot", j->slot);
        set_num("seq", (double)++st.seq);
        conn_t *c = j->conn;
        if (lua_call_ok(2, 1) == 0) {
            size_t len;
            const char *body = lua_tolstring(L, -1, &len);
            respond(c, 200, body, len);
            lua_pop(L, 1);
        } else {
            respond_error(c, 500, "server_error", "fake model failed");
        }
    }
    job_free(j);
}

static void job_hang_over(uv_timer_t *t)
{
    job_t *j = t->data;
    if (j->conn) conn_close(j->conn); /* frees the job */
}

/* ------------------------------------------------------------------ endpoints */
static uint64_t loading_until;   /* hrtime: --loading-ms after start, or /fake/config loading_ms (a reload) */
static int loading(void) { return uv_hrtime() < loading_until; }

static int query_has(const char *q, size_t qlen, const char *kv)
{
    size_t n = strlen(kv);
    for (size_t i = 0; i < qlen;) {
        size_t e = i;
        while (e < qlen && q[e] != '&') e++;
        if (e - i == n && !memcmp(q + i, kv, n)) return 1;
        i = e + 1;
    }
    return 0;
}

static void ep_props(conn_t *c)
{
    buf_t b = { 0 };
    buf_printf(&b, "{\"default_generation_settings\":{\"id\":0,\"id_task\":-1,\"n_ctx\":%d,\"speculative\":false,"
                   "\"is_processing\":false,\"params\":{\"n_predict\":-1,\"temperature\":0.8}},"
                   "\"total_slots\":%d,\"model_path\":", opt.n_ctx, opt.parallel);
    buf_json_str(&b, opt.model);
    buf_str(&b, ",\"chat_template\":\"\",\"build_info\":\"fake-llama\"}");
    respond(c, 200, b.p, b.len);
    buf_free(&b);
}

static void ep_slots(conn_t *c, const char *q, size_t qlen)
{
    int busy = 0;
    for (int i = 0; i < opt.parallel; i++) busy += slots[i].job != NULL;
    if (busy == opt.parallel && query_has(q, qlen, "fail_on_no_slot=1")) {
        respond_error(c, 503, "unavailable_error", "no slot available");
        return;
    }
    buf_t b = { 0 };
    buf_add(&b, "[", 1);
    for (int i = 0; i < opt.parallel; i++)
        buf_printf(&b, "%s{\"id\":%d,\"id_task\":%d,\"n_ctx\":%d,\"speculative\":false,\"is_processing\":%s}",
                   i ? "," : "", i, slots[i].job ? 1 : -1, opt.n_ctx, slots[i].job ? "true" : "false");
    buf_add(&b, "]", 1);
    respond(c, 200, b.p, b.len);
    buf_free(&b);
}

static void ep_models(conn_t *c)
{
    const char *base = strrchr(opt.model, '/');
    base = base ? base + 1 : opt.model;
    buf_t b = { 0 };
    buf_str(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    buf_json_str(&b, base);
    buf_printf(&b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"llamacpp\",\"meta\":{\"n_ctx_train\":%d}}]}",
               (long)t_epoch, opt.ctx_size);
    respond(c, 200, b.p, b.len);
    buf_free(&b);
}

static const char *model_name(void)
{
    const char *base = strrchr(opt.model, '/');
    return base ? base + 1 : opt.model;
}

/* /completion and /v1/chat/completions */
static void ep_extract(conn_t *c, const char *kind)
{
    st.extraction_requests++;
    lua_fn("prepare");
    lua_pushstring(L, kind);
    lua_pushlstring(L, c->body.p ? c->body.p : "", c->body.len);
    lua_pushinteger(L, opt.n_ctx);
    lua_pushstring(L, model_name());
    if (lua_call_ok(4, 2)) { respond_error(c, 500, "server_error", "fake model failed"); return; }
    int status = (int)lua_tointeger(L, -2);
    if (status != 200) { /* bad JSON, context overflow: the body is ready */
        size_t len;
        const char *body = lua_tolstring(L, -1, &len);
        respond(c, status, body, len);
        lua_pop(L, 2);
        return;
    }
    int req = lua_gettop(L);
    size_t tlen;
    lua_getfield(L, req, "text");
    const char *text = lua_tolstring(L, -1, &tlen);
    lua_fn("note_text");
    lua_pushvalue(L, -2);
    long count = 1;
    if (lua_call_ok(1, 1) == 0) count = (long)lua_tointeger(L, -1), lua_pop(L, 1);
    int fault = fault_decide(text, tlen, count);
    lua_pop(L, 1); /* text */
    if (fault) {
        lua_fn("note_fault");
        lua_pushstring(L, fault_names[fault]);
        lua_call_ok(1, 0);
    }
    job_t *j = NULL;
    switch (fault) {
    case F_500: respond_error(c, 500, "server_error", "Internal server error (injected fault)"); break;
    case F_503: respond_loading(c); break;
    /* a unified KV pool that filled up: llama-server's answer to every request active at that moment */
    case F_KV500: respond_error(c, 500, "server_error", "Context size has been exceeded."); break;
    case F_RESET: c->reset = 1, conn_close(c); break;
    case F_HANG:
        j = calloc(1, sizeof *j);
        j->ref = LUA_NOREF, j->hang = 1, j->conn = c;
        c->job = j;
        st.in_flight++;
        uv_timer_init(loop, &j->timer);
        j->timer_init = 1;
        j->timer.data = j;
        uv_timer_start(&j->timer, job_hang_over, (uint64_t)opt.hang_ms, 0);
        break;
    default: {
        lua_fn("produce");
        lua_pushvalue(L, req);
        lua_pushstring(L, fault_names[fault]);
        lua_pushinteger(L, opt.n_ctx);
        if (lua_call_ok(3, 1)) { respond_error(c, 500, "server_error", "fake model failed"); break; }
        j = calloc(1, sizeof *j);
        j->predicted = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        j->conn = c;
        j->n_prompt = (int)field_num(req, "n_prompt");
        j->id_slot = (int)field_num(req, "id_slot");
        lua_getfield(L, req, "cache_prompt");
        j->cache_prompt = lua_toboolean(L, -1);
        lua_getfield(L, req, "prompt");
        const char *p = lua_tolstring(L, -1, &j->plen);
        j->prompt = malloc(j->plen + 1);
        memcpy(j->prompt, p, j->plen + 1);
        lua_pop(L, 2);
        lua_pushvalue(L, req);
        j->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        c->job = j;
        st.in_flight++;
        job_submit(j);
    }
    }
    lua_settop(L, req - 2);
}

static void ep_tokenize(conn_t *c)
{
    lua_fn("tokenize");
    lua_pushlstring(L, c->body.p ? c->body.p : "", c->body.len);
    if (lua_call_ok(1, 2)) { respond_error(c, 500, "server_error", "fake model failed"); return; }
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    respond(c, (int)lua_tointeger(L, -2), body, len);
    lua_pop(L, 2);
}

static void ep_stats(conn_t *c, int with_texts)
{
    uint64_t now = uv_hrtime(), busy = 0;
    lua_fn("stats");
    lua_newtable(L);
    set_num("requests_total", st.requests_total);
    set_num("extraction_requests", st.extraction_requests);
    set_num("prompt_tokens", st.prompt_tokens);
    set_num("cached_tokens", st.cached_tokens);
    set_num("queue_max", st.queue_max);
    set_num("queue_len", st.queue_len);
    set_num("in_flight", st.in_flight);
    set_num("elapsed_ms", (double)(now - t_stats) / 1e6);
    lua_newtable(L);
    for (int i = 0; i < opt.parallel; i++) {
        uint64_t b = slots[i].busy_ns + (slots[i].job ? now - slots[i].busy_since : 0);
        busy += b;
        lua_newtable(L);
        set_num("id", i);
        set_num("requests", slots[i].requests);
        set_num("busy_ms", (double)b / 1e6);
        lua_pushboolean(L, slots[i].job != NULL);
        lua_setfield(L, -2, "is_processing");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "slots");
    double el = (double)(now - t_stats) * opt.parallel;
    set_num("utilisation", el > 0 ? (double)busy / el : 0);
    lua_pushboolean(L, with_texts);
    if (lua_call_ok(2, 1)) { respond_error(c, 500, "server_error", "stats failed"); return; }
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    respond(c, 200, body, len);
    lua_pop(L, 1);
}

static void ep_reset(conn_t *c)
{
    long in_flight = st.in_flight, qlen = st.queue_len;
    memset(&st, 0, sizeof st);
    st.in_flight = in_flight, st.queue_len = st.queue_max = qlen;
    uint64_t now = uv_hrtime();
    t_stats = now;
    for (int i = 0; i < opt.parallel; i++) {
        slots[i].requests = 0, slots[i].busy_ns = 0;
        if (slots[i].job) slots[i].busy_since = now;
    }
    lua_fn("reset");
    lua_call_ok(0, 0);
    respond_str(c, 200, "{\"ok\":true}");
}

static void ep_config(conn_t *c)
{
    lua_fn("config");
    lua_pushlstring(L, c->body.p ? c->body.p : "", c->body.len);
    if (lua_call_ok(1, 2)) { respond_error(c, 500, "server_error", "config failed"); return; }
    int t = lua_gettop(L);
    if (lua_tointeger(L, t - 1) != 200) {
        size_t len;
        const char *body = lua_tolstring(L, t, &len);
        respond(c, 400, body, len);
        lua_settop(L, t - 2);
        return;
    }
    lua_getfield(L, t, "faults");
    if (lua_istable(L, -1)) { /* replace the whole list, or nothing when one spec is bad */
        int n = (int)lua_objlen(L, -1);
        fault_t *nf = calloc((size_t)n + 1, sizeof *nf);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            int bad = fault_parse(lua_tostring(L, -1), &nf[i]);
            lua_pop(L, 1);
            if (bad) {
                free(nf);
                lua_settop(L, t - 2);
                respond_error(c, 400, "invalid_request_error", "bad fault spec (want KIND:SHARE[:FIRST_N])");
                return;
            }
        }
        free(faults);
        faults = nf, n_faults = n;
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "latency_ms");
    if (lua_isnumber(L, -1)) opt.latency_ms = lua_tonumber(L, -1);
    lua_getfield(L, t, "prompt_us_per_token");
    if (lua_isnumber(L, -1)) opt.prompt_us = lua_tonumber(L, -1);
    lua_getfield(L, t, "gen_us_per_token");
    if (lua_isnumber(L, -1)) opt.gen_us = lua_tonumber(L, -1);
    lua_getfield(L, t, "loading_ms");      /* the model reloads: 503 "Loading model" everywhere for N ms */
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0)
        loading_until = uv_hrtime() + (uint64_t)(lua_tonumber(L, -1) * 1e6);
    lua_settop(L, t - 2);
    respond_str(c, 200, "{\"ok\":true}");
}

static void dispatch(conn_t *c)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *path = "/", *q = "";
    size_t plen = 1, qlen = 0;
    if (http_parser_parse_url(c->url.p, c->url.len, 0, &u) == 0) {
        if (u.field_set & (1 << UF_PATH))
            path = c->url.p + u.field_data[UF_PATH].off, plen = u.field_data[UF_PATH].len;
        if (u.field_set & (1 << UF_QUERY))
            q = c->url.p + u.field_data[UF_QUERY].off, qlen = u.field_data[UF_QUERY].len;
    }
    char p[256];
    snprintf(p, sizeof p, "%.*s", (int)(plen < sizeof p ? plen : sizeof p - 1), path);
    st.requests_total++;
    lua_fn("note_path");
    lua_pushstring(L, p);
    lua_call_ok(1, 0);
    int get = c->parser.method == HTTP_GET, post = c->parser.method == HTTP_POST;

    if (c->too_big) { respond_error(c, 413, "invalid_request_error", "request body too large"); return; }
    if (!strncmp(p, "/fake/", 6)) {
        if (get && !strcmp(p, "/fake/stats")) ep_stats(c, query_has(q, qlen, "texts=1"));
        else if (post && !strcmp(p, "/fake/reset")) ep_reset(c);
        else if (post && !strcmp(p, "/fake/config")) ep_config(c);
        else respond_error(c, 404, "not_found_error", "File Not Found");
        return;
    }
    if (loading()) { respond_loading(c); return; } /* llama-server answers 503 everywhere while loading */
    if (get && !strcmp(p, "/health")) respond_str(c, 200, "{\"status\":\"ok\"}");
    else if (get && !strcmp(p, "/props")) ep_props(c);
    else if (get && !strcmp(p, "/slots")) ep_slots(c, q, qlen);
    else if (get && (!strcmp(p, "/v1/models") || !strcmp(p, "/models"))) ep_models(c);
    else if (post && !strcmp(p, "/tokenize")) ep_tokenize(c);
    else if (post && (!strcmp(p, "/completion") || !strcmp(p, "/completions"))) ep_extract(c, "completion");
    else if (post && (!strcmp(p, "/v1/chat/completions") || !strcmp(p, "/chat/completions"))) ep_extract(c, "chat");
    else respond_error(c, 404, "not_found_error", "File Not Found");
}

/* ------------------------------------------------------------------ HTTP parsing */
static void header_done(conn_t *c)
{
    if (c->hfield.len && !strcasecmp(c->hfield.p, "expect") && c->hval.p && !strcasecmp(c->hval.p, "100-continue"))
        c->expect_continue = 1;
    c->hfield.len = c->hval.len = 0;
}
static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->url.len = c->body.len = c->hfield.len = c->hval.len = 0;
    c->in_value = c->expect_continue = c->too_big = 0;
    return 0;
}
static int on_url(http_parser *p, const char *s, size_t n) { buf_add(&((conn_t *)p->data)->url, s, n); return 0; }
static int on_header_field(http_parser *p, const char *s, size_t n)
{
    conn_t *c = p->data;
    if (c->in_value) header_done(c), c->in_value = 0;
    buf_add(&c->hfield, s, n);
    return 0;
}
static int on_header_value(http_parser *p, const char *s, size_t n)
{
    conn_t *c = p->data;
    c->in_value = 1;
    buf_add(&c->hval, s, n);
    return 0;
}
static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    if (c->in_value) header_done(c), c->in_value = 0;
    /* libcurl sends Expect: 100-continue for big bodies and waits ~1 s unless told to go on */
    if (c->expect_continue) write_raw(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0);
    return 0;
}
static int on_body(http_parser *p, const char *s, size_t n)
{
    conn_t *c = p->data;
    if (c->body.len + n > MAX_BODY) c->too_big = 1;
    else buf_add(&c->body, s, n);
    return 0;
}
static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    c->msg_done = 1;
    c->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* one request at a time: the rest of the bytes wait in c->in */
    return 0;
}

/* Parse what is buffered; serve each complete request before looking at the next (pipelining-safe). */
static void conn_feed(conn_t *c)
{
    c->in_feed = 1;
    while (!c->busy && !c->closing && c->in.len > 0) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.p, c->in.len);
        memmove(c->in.p, c->in.p + n, c->in.len - n);
        c->in.len -= n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) http_parser_pause(&c->parser, 0);
        else if (e != HPE_OK) {
            c->keep_alive = 0;
            c->busy = 1;
            respond_error(c, 400, "invalid_request_error", http_errno_description(e));
            break;
        }
        if (c->msg_done) {
            c->msg_done = 0;
            c->busy = 1;
            dispatch(c); /* may answer at once (and clear busy) or later */
        } else if (e != HPE_PAUSED) {
            break; /* need more bytes */
        }
    }
    c->in_feed = 0;
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    buf_free(&c->in), buf_free(&c->url), buf_free(&c->body), buf_free(&c->hfield), buf_free(&c->hval);
    free(c);
}

/* Close a connection (abortively, RST, for the `reset` fault). A running job keeps its slot until its
 * timer ends, as in llama-server where a client disconnect does not stop the generation. */
static void conn_close(conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    for (long i = 0; i < n_conns_live; i++)
        if (conns[i] == c) { conns[i] = conns[--n_conns_live]; break; }
    job_t *j = c->job;
    c->job = NULL;
    if (j) {
        j->conn = NULL;
        if (j->hang) job_free(j);
    }
    if (c->reset && uv_tcp_close_reset(&c->tcp, on_conn_closed) == 0) return;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    conn_t *c = h->data;
    buf_reserve(&c->in, 65536);
    *b = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (n < 0) { conn_close(c); return; } /* EOF or error; a pending job runs on without a listener */
    c->in.len += (size_t)n;
    if (!c->busy) conn_feed(c);
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0) return;
    conn_t *c = calloc(1, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) { uv_close((uv_handle_t *)&c->tcp, on_conn_closed); return; }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (n_conns_live == conns_cap) {
        conns_cap = conns_cap ? conns_cap * 2 : 64;
        conns = realloc(conns, (size_t)conns_cap * sizeof *conns);
    }
    conns[n_conns_live++] = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ------------------------------------------------------------------ shutdown */
static void on_signal(uv_signal_t *h, int signum)
{
    /* exit 0 promptly, but tidily: free everything so ASan/valgrind see no leaks */
    for (int i = 0; i < opt.parallel; i++)
        if (slots[i].job) { job_t *j = slots[i].job; slots[i].job = NULL; job_free(j); }
    while (q_head) { job_t *j = q_head; q_head = j->next; job_free(j); }
    q_tail = NULL;
    while (n_conns_live) conn_close(conns[n_conns_live - 1]);
    uv_close((uv_handle_t *)&server, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&kv_timer, NULL);
}

/* ------------------------------------------------------------------ main */
static void usage(void)
{
    fprintf(stderr,
            "usage: fake-llama [--host H] [--port N] [--port-file F] [--parallel N] [--ctx-size C]\n"
            "  [--latency-ms F] [--prompt-us-per-token X] [--gen-us-per-token Y] [--latency-tail lognormal:S]\n"
            "  [--loading-ms N] [--hang-ms N] [--seed N] [--fault KIND:SHARE[:FIRST_N]]... [--model PATH]\n"
            "  [--model-script model.lua] [--kv-unified]\n");
    exit(2);
}

static void load_model(void)
{
    char path[4096];
    if (opt.script) {
        snprintf(path, sizeof path, "%s", opt.script);
    } else { /* build/bin/fake-llama or build/asan/bin/fake-llama → <repo>/tests/fake/model.lua */
        char exe[4000];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n < 0) { perror("readlink /proc/self/exe"); exit(1); }
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(path, sizeof path, "%s/../../tests/fake/model.lua", exe);
        if (access(path, R_OK)) snprintf(path, sizeof path, "%s/../../../tests/fake/model.lua", exe);
    }
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_loadfile(L, path) || lua_pcall(L, 0, 1, 0) || !lua_istable(L, -1)) {
        fprintf(stderr, "fake-llama: cannot load %s: %s\n", path,
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "did not return a table");
        exit(1);
    }
    model_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && (v || (usage(), 0)) && ++i)
        if (ARG("--host")) opt.host = v;
        else if (ARG("--port")) opt.port = atoi(v);
        else if (ARG("--port-file")) opt.port_file = v;
        else if (ARG("--parallel") || ARG("-np")) opt.parallel = atoi(v);
        else if (ARG("--ctx-size") || ARG("-c")) opt.ctx_size = atoi(v);
        else if (ARG("--latency-ms")) opt.latency_ms = atof(v);
        else if (ARG("--prompt-us-per-token")) opt.prompt_us = atof(v);
        else if (ARG("--gen-us-per-token")) opt.gen_us = atof(v);
        else if (ARG("--latency-tail")) {
            if (strncmp(v, "lognormal:", 10) || (opt.tail_sigma = atof(v + 10)) < 0) usage();
        } else if (ARG("--loading-ms")) opt.loading_ms = atol(v);
        else if (ARG("--hang-ms")) opt.hang_ms = atol(v);
        else if (ARG("--seed")) opt.seed = strtoull(v, NULL, 10);
        else if (ARG("--model") || ARG("-m")) opt.model = v;
        else if (ARG("--model-script")) opt.script = v;
        else if (!strcmp(a, "--kv-unified")) opt.kv_unified = 1;
        else if (ARG("--fault")) {
            faults = realloc(faults, (size_t)(n_faults + 1) * sizeof *faults);
            if (fault_parse(v, &faults[n_faults++])) exit(2);
        } else usage();
#undef ARG
    }
    if (opt.parallel < 1 || opt.ctx_size < opt.parallel || opt.port < 0 || opt.port > 65535) usage();
    opt.n_ctx = opt.kv_unified ? opt.ctx_size : opt.ctx_size / opt.parallel;
    rng_fault = opt.seed ^ 0x5EEDFA17ull;
    rng_lat = opt.seed ^ 0x1A7E9C1ull;

    load_model();
    loop = uv_default_loop();
    slots = calloc((size_t)opt.parallel, sizeof *slots);
    uv_timer_init(loop, &kv_timer);
    t_start = t_stats = uv_hrtime();
    loading_until = t_start + (uint64_t)(opt.loading_ms > 0 ? opt.loading_ms : 0) * 1000000;
    t_epoch = time(NULL);

    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    struct sockaddr_storage addr;
    if (uv_ip4_addr(opt.host, opt.port, (struct sockaddr_in *)&addr) &&
        uv_ip6_addr(opt.host, opt.port, (struct sockaddr_in6 *)&addr)) {
        fprintf(stderr, "fake-llama: bad --host %s (numeric address expected)\n", opt.host);
        return 2;
    }
    uv_tcp_init(loop, &server);
    int r = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0);
    if (!r) r = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (r) { fprintf(stderr, "fake-llama: listen %s:%d: %s\n", opt.host, opt.port, uv_strerror(r)); return 1; }
    int alen = sizeof addr;
    uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &alen);
    int port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                : ((struct sockaddr_in *)&addr)->sin_port);
    if (opt.port_file) {
        FILE *f = fopen(opt.port_file, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f)) { perror(opt.port_file); return 1; }
    }
    printf("listening on %s:%d\n", opt.host, port);
    fflush(stdout);

    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    uv_run(loop, UV_RUN_DEFAULT);

    uv_loop_close(loop);
    lua_close(L);
    for (int i = 0; i < opt.parallel; i++) free(slots[i].last);
    free(slots), free(faults), free(conns);
    return 0;
}
