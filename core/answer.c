/* answer — see answer.h. A small JSON walker over llama-server's own output: values are skipped by
 * their syntax (strings with escapes, nested containers), never searched for by text, so a key that
 * appears inside the model's content cannot be taken for the server's. Nesting depth is bounded. */
#include "answer.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct { const char *p, *end; } cur_t;

static void ws(cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Skips one value; returns 0, or -1 on bad JSON (the cursor is then somewhere inside). */
static int skip(cur_t *c, int depth)
{
    ws(c);
    if (c->p >= c->end || depth > MAX_DEPTH) return -1;
    char ch = *c->p;
    if (ch == '"') {
        /* the next quote not escaped: one preceded by an even run of backslashes */
        const char *from = c->p + 1;
        for (const char *q; (q = memchr(from, '"', (size_t)(c->end - from))); from = q + 1) {
            const char *b = q;
            while (b > c->p + 1 && b[-1] == '\\') b--;
            if (((q - b) & 1) == 0) { c->p = q + 1; return 0; }
        }
        return -1;
    }
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == close) { c->p++; return 0; }
        for (;;) {
            if (ch == '{') {
                if (skip(c, depth + 1)) return -1;        /* key */
                ws(c);
                if (c->p >= c->end || *c->p != ':') return -1;
                c->p++;
            }
            if (skip(c, depth + 1)) return -1;
            ws(c);
            if (c->p >= c->end) return -1;
            if (*c->p == ',') { c->p++; continue; }
            if (*c->p == close) { c->p++; return 0; }
            return -1;
        }
    }
    /* number, true, false, null */
    const char *s = c->p;
    while (c->p < c->end && !strchr(",]} \t\r\n", *c->p)) c->p++;
    return c->p > s ? 0 : -1;
}

/* Calls f(key, klen, value cursor) for each member of the object at the cursor; -1 on bad JSON. */
typedef void (*member_fn)(const char *k, size_t klen, const char *v, const char *vend, void *ud);
static int members(const char *p, const char *end, member_fn f, void *ud)
{
    cur_t c = { p, end };
    ws(&c);
    if (c.p >= c.end || *c.p != '{') return -1;
    c.p++;
    ws(&c);
    if (c.p < c.end && *c.p == '}') return 0;
    for (;;) {
        ws(&c);
        if (c.p >= c.end || *c.p != '"') return -1;
        const char *k = c.p + 1;
        if (skip(&c, 1)) return -1;
        size_t klen = (size_t)(c.p - 1 - k);
        ws(&c);
        if (c.p >= c.end || *c.p != ':') return -1;
        c.p++;
        ws(&c);
        const char *v = c.p;
        if (skip(&c, 1)) return -1;
        f(k, klen, v, c.p, ud);
        ws(&c);
        if (c.p >= c.end) return -1;
        if (*c.p == ',') { c.p++; continue; }
        if (*c.p == '}') return 0;
        return -1;
    }
}

#define KEY(k, lit) (klen == sizeof(lit) - 1 && memcmp(k, lit, klen) == 0)

static long num(const char *v, const char *vend)
{
    if (v >= vend || (*v != '-' && (*v < '0' || *v > '9'))) return -1;
    char tmp[32];
    size_t n = (size_t)(vend - v) < sizeof tmp - 1 ? (size_t)(vend - v) : sizeof tmp - 1;
    memcpy(tmp, v, n);
    tmp[n] = 0;
    return strtol(tmp, NULL, 10);
}

static double dnum(const char *v, const char *vend)
{
    if (v >= vend || (*v != '-' && (*v < '0' || *v > '9'))) return -1;
    char tmp[48];
    size_t n = (size_t)(vend - v) < sizeof tmp - 1 ? (size_t)(vend - v) : sizeof tmp - 1;
    memcpy(tmp, v, n);
    tmp[n] = 0;
    return strtod(tmp, NULL);
}

static int str_is(const char *v, const char *vend, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(vend - v) == n + 2 && v[0] == '"' && memcmp(v + 1, lit, n) == 0;
}

static int stop_of(const char *v, const char *vend)
{
    if (str_is(v, vend, "eos") || str_is(v, vend, "stop")) return KGX_STOP_EOS;
    if (str_is(v, vend, "word")) return KGX_STOP_WORD;
    if (str_is(v, vend, "limit") || str_is(v, vend, "length")) return KGX_STOP_LIMIT;
    if (str_is(v, vend, "none") || (vend - v == 4 && memcmp(v, "null", 4) == 0)) return KGX_STOP_UNKNOWN;
    return *v == '"' ? KGX_STOP_OTHER : KGX_STOP_UNKNOWN;
}

static void timings_cb(const char *k, size_t klen, const char *v, const char *vend, void *ud)
{
    kgx_answer_t *a = ud;
    if (KEY(k, "cache_n")) a->cache_n = num(v, vend);
    else if (KEY(k, "prompt_n")) a->prompt_n = num(v, vend);
    else if (KEY(k, "predicted_n")) a->predicted_n = num(v, vend);
    else if (KEY(k, "prompt_ms")) a->prompt_ms = dnum(v, vend);
    else if (KEY(k, "predicted_ms")) a->predicted_ms = dnum(v, vend);
}

static void usage_cb(const char *k, size_t klen, const char *v, const char *vend, void *ud)
{
    kgx_answer_t *a = ud;
    if (KEY(k, "completion_tokens")) a->tokens_predicted = num(v, vend);
    else if (KEY(k, "prompt_tokens")) a->tokens_evaluated = num(v, vend);
}

static void message_cb(const char *k, size_t klen, const char *v, const char *vend, void *ud)
{
    kgx_answer_t *a = ud;
    if (KEY(k, "content") && *v == '"') { a->content = v; a->content_len = (size_t)(vend - v); }
}

static void choice_cb(const char *k, size_t klen, const char *v, const char *vend, void *ud)
{
    kgx_answer_t *a = ud;
    if (KEY(k, "finish_reason")) a->stop = stop_of(v, vend);
    else if (KEY(k, "message")) members(v, vend, message_cb, a);
    else if (KEY(k, "text") && *v == '"' && !a->content) { a->content = v; a->content_len = (size_t)(vend - v); }
}

static void top_cb(const char *k, size_t klen, const char *v, const char *vend, void *ud)
{
    kgx_answer_t *a = ud;
    if (KEY(k, "content") && *v == '"') { a->content = v; a->content_len = (size_t)(vend - v); }
    else if (KEY(k, "stop_type")) a->stop = stop_of(v, vend);
    else if (KEY(k, "truncated")) a->truncated = (vend - v == 4 && !memcmp(v, "true", 4)) ? 1 : (vend - v == 5 && !memcmp(v, "false", 5)) ? 0 : -1;
    else if (KEY(k, "tokens_predicted")) a->tokens_predicted = num(v, vend);
    else if (KEY(k, "tokens_evaluated")) a->tokens_evaluated = num(v, vend);
    else if (KEY(k, "tokens_cached")) a->tokens_cached = num(v, vend);
    else if (KEY(k, "timings")) members(v, vend, timings_cb, a);
    else if (KEY(k, "usage")) members(v, vend, usage_cb, a);
    else if (KEY(k, "model") && *v == '"') { a->model = v; a->model_len = (size_t)(vend - v); }
    else if (KEY(k, "choices") && *v == '[') {
        a->chat = 1;
        cur_t c = { v + 1, vend };
        ws(&c);
        if (c.p < c.end && *c.p == '{') {
            const char *s = c.p;
            if (!skip(&c, 1)) members(s, c.p, choice_cb, a);
        }
    }
}

static void absent(kgx_answer_t *a)
{
    memset(a, 0, sizeof *a);
    a->truncated = -1;
    a->tokens_predicted = a->tokens_evaluated = a->tokens_cached = -1;
    a->cache_n = a->prompt_n = a->predicted_n = -1;
    a->prompt_ms = a->predicted_ms = -1;
}

void kgx_answer_read(const char *body, size_t len, kgx_answer_t *out)
{
    absent(out);
    if (body && members(body, body + len, top_cb, out) != 0)
        absent(out);                        /* bad JSON: nothing it said can be trusted */
}

static int has(const char *body, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (!body || len < n) return 0;
    for (size_t i = 0; i + n <= len; i++)
        if (body[i] == needle[0] && memcmp(body + i, needle, n) == 0) return 1;
    return 0;
}

kgx_answer_outcome_t kgx_answer_classify(int http_err, long status, const char *body, size_t len,
                                         const kgx_answer_t *a, int verdict)
{
    if (http_err != 0) return KGX_ANSWER_TRANSPORT;
    if (status == 429 || status == 503) return KGX_ANSWER_CAPACITY;
    if (status == 400 && (has(body, len, "exceed_context_size") || has(body, len, "context size")
                          || has(body, len, "context length")))
        return KGX_ANSWER_OVERFLOW;
    /* a unified KV pool that filled up answers every active request with this 500 */
    if (status == 500 && (has(body, len, "Context size has been exceeded") || has(body, len, "context size has been exceeded")))
        return KGX_ANSWER_CAPACITY;
    if (status != 200) return KGX_ANSWER_REFUSED;
    int stop = a ? a->stop : KGX_STOP_UNKNOWN;
    if (a && a->truncated == 1) return KGX_ANSWER_CUT_CONTEXT;
    if (stop == KGX_STOP_LIMIT) return KGX_ANSWER_CUT_NPREDICT;
    if (verdict == KGX_VERDICT_WHOLE) return stop == KGX_STOP_OTHER ? KGX_ANSWER_MALFORMED : KGX_ANSWER_WHOLE;
    if (verdict == KGX_VERDICT_NONE)       /* an older policy: the server's word alone */
        return stop == KGX_STOP_OTHER ? KGX_ANSWER_MALFORMED : KGX_ANSWER_WHOLE;
    return KGX_ANSWER_MALFORMED;
}

const char *kgx_answer_outcome_name(kgx_answer_outcome_t o)
{
    switch (o) {
    case KGX_ANSWER_WHOLE: return "whole";
    case KGX_ANSWER_CUT_NPREDICT: return "cut_npredict";
    case KGX_ANSWER_CUT_CONTEXT: return "cut_context";
    case KGX_ANSWER_CAPACITY: return "capacity";
    case KGX_ANSWER_OVERFLOW: return "overflow";
    case KGX_ANSWER_TRANSPORT: return "transport";
    case KGX_ANSWER_REFUSED: return "refused";
    case KGX_ANSWER_MALFORMED: return "malformed";
    }
    return "?";
}

static void raw(kgx_buf_t *b, const char *key, const char *v, size_t n)
{
    kgx_buf_printf(b, ",\"%s\":", key);
    kgx_buf_add(b, v, n);
}

int kgx_answer_compact(const char *body, size_t len, kgx_buf_t *out)
{
    kgx_answer_t a;
    kgx_answer_read(body, len, &a);
    if (!a.content) return -1;              /* not an answer we can read: the caller keeps it whole */
    static const char *const stops[] = { NULL, "eos", "word", "limit", NULL };
    if (a.chat) {
        kgx_buf_adds(out, "{\"choices\":[{\"message\":{\"content\":");
        kgx_buf_add(out, a.content, a.content_len);
        kgx_buf_adds(out, "}");
        if (a.stop == KGX_STOP_EOS) kgx_buf_adds(out, ",\"finish_reason\":\"stop\"");
        else if (a.stop == KGX_STOP_LIMIT) kgx_buf_adds(out, ",\"finish_reason\":\"length\"");
        kgx_buf_adds(out, "}]");
    } else {
        kgx_buf_adds(out, "{\"content\":");
        kgx_buf_add(out, a.content, a.content_len);
        if (a.stop > 0 && a.stop < KGX_STOP_OTHER) kgx_buf_printf(out, ",\"stop_type\":\"%s\"", stops[a.stop]);
    }
    if (a.truncated >= 0) kgx_buf_printf(out, ",\"truncated\":%s", a.truncated ? "true" : "false");
    if (a.tokens_predicted >= 0) kgx_buf_printf(out, ",\"tokens_predicted\":%ld", a.tokens_predicted);
    if (a.tokens_evaluated >= 0) kgx_buf_printf(out, ",\"tokens_evaluated\":%ld", a.tokens_evaluated);
    if (a.tokens_cached >= 0) kgx_buf_printf(out, ",\"tokens_cached\":%ld", a.tokens_cached);
    if (a.cache_n >= 0 || a.prompt_n >= 0 || a.predicted_n >= 0) {
        kgx_buf_adds(out, ",\"timings\":{");
        const char *sep = "";
        if (a.cache_n >= 0) { kgx_buf_printf(out, "%s\"cache_n\":%ld", sep, a.cache_n); sep = ","; }
        if (a.prompt_n >= 0) { kgx_buf_printf(out, "%s\"prompt_n\":%ld", sep, a.prompt_n); sep = ","; }
        if (a.prompt_ms >= 0) { kgx_buf_printf(out, "%s\"prompt_ms\":%.3f", sep, a.prompt_ms); sep = ","; }
        if (a.predicted_n >= 0) { kgx_buf_printf(out, "%s\"predicted_n\":%ld", sep, a.predicted_n); sep = ","; }
        if (a.predicted_ms >= 0) kgx_buf_printf(out, "%s\"predicted_ms\":%.3f", sep, a.predicted_ms);
        kgx_buf_adds(out, "}");
    }
    if (a.model) raw(out, "model", a.model, a.model_len);
    kgx_buf_adds(out, "}");
    return 0;
}
