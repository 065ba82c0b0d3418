/* endpoint — see endpoint.h. */
#include "endpoint.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS 500.0
#define BACKOFF_MAX_MS 30000.0

const char *kgx_endpoint_state_name(int state)
{
    switch (state) {
    case KGX_EP_UP: return "up";
    case KGX_EP_DOWN: return "down";
    default: return "probing";
    }
}

/* First integer value of "key" at or after `from` in a JSON text (llama-server's own output). */
static int json_int_after(const char *body, const char *from_key, const char *key)
{
    if (!body) return -1;
    const char *p = body;
    if (from_key) {
        const char *f = strstr(body, from_key);
        if (f) p = f;
    }
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *k = strstr(p, pat);
    if (!k) return -1;
    k += strlen(pat);
    while (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r') k++;
    if (*k != ':') return -1;
    k++;
    while (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r') k++;
    char *end;
    long v = strtol(k, &end, 10);
    if (end == k || v < 0 || v > 1 << 28) return -1;
    return (int)v;
}

long kgx_body_int(const char *body, const char *key) { return json_int_after(body, NULL, key); }
int kgx_props_total_slots(const char *body) { return json_int_after(body, NULL, "total_slots"); }
int kgx_props_n_ctx(const char *body) { return json_int_after(body, "\"default_generation_settings\"", "n_ctx"); }
int kgx_error_n_ctx(const char *body) { return json_int_after(body, "\"error\"", "n_ctx"); }

/* The raw text of the JSON string value of "key" (escapes kept), malloc'd; NULL when absent. */
static char *json_str_raw(const char *body, const char *key, size_t *len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *k = body ? strstr(body, pat) : NULL;
    if (!k) return NULL;
    k += strlen(pat);
    while (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r') k++;
    if (*k++ != ':') return NULL;
    while (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r') k++;
    if (*k++ != '"') return NULL;
    const char *e = k;
    while (*e && *e != '"') e += (*e == '\\' && e[1]) ? 2 : 1;
    if (*e != '"') return NULL;
    char *out = malloc((size_t)(e - k) + 1);
    if (!out) return NULL;
    memcpy(out, k, (size_t)(e - k));
    out[e - k] = 0;
    *len = (size_t)(e - k);
    return out;
}

char *kgx_props_model(const char *body)
{
    size_t plen = 0, tlen = 0;
    char *path = json_str_raw(body, "model_path", &plen);
    if (!path || !plen) {
        free(path);
        return NULL;
    }
    /* the chat template shapes every chat prompt: a new one is a new model as far as answers go */
    char *tmpl = json_str_raw(body, "chat_template", &tlen);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; tmpl && i < tlen; i++) h = (h ^ (unsigned char)tmpl[i]) * 1099511628211ull;
    size_t n = plen + 40;
    char *id = malloc(n);
    if (id) snprintf(id, n, "%s template=%016llx", path, tmpl ? (unsigned long long)h : 0ull);
    free(path);
    free(tmpl);
    return id;
}

const char *kgx_endpoint_identity(const kgx_endpoint_t *ep)
{
    return ep->model_id ? ep->model_id : ep->url_id;
}

static void recompute_cap(kgx_endpoint_t *ep)
{
    int w = ep->set->max_in_flight;
    ep->cap = ep->slots > 0 && ep->slots < w ? ep->slots : w;
    if (ep->cap < 1) ep->cap = 1;
    if (ep->limit <= 0 || ep->limit > ep->cap) ep->limit = ep->cap;
}

int kgx_endpoint_busy(kgx_endpoint_t *ep, long status)
{
    int was = ep->limit > 0 ? ep->limit : ep->cap;
    uint64_t now = uv_now(ep->set->loop);
    ep->ok_run = 0;
    if (was > 1 && (ep->lowered_at == 0 || now - ep->lowered_at >= 1000)) {
        ep->limit = was / 2 > 0 ? was / 2 : 1;
        ep->lowered_at = now;
        log_info("endpoint=%s capacity signal (http %ld): in-flight limit %d -> %d", ep->base, status, was, ep->limit);
    }
    if (!ep->told) {
        ep->told = 1;
        if (status == 500)
            log_warn("endpoint=%s answered 500 \"Context size has been exceeded\" with %d requests in flight: its "
                     "slots share one KV pool (llama-server started without -np). kgx sends fewer requests at once; "
                     "to use all slots, start llama-server with -np N (each slot then gets --ctx-size/N tokens) "
                     "or --no-kv-unified", ep->base, ep->in_flight + 1);
        else
            log_warn("endpoint=%s is busy (http %ld): kgx sends fewer requests at once; give the server more "
                     "slots (-np N) or run fewer workers (--workers)", ep->base, status);
    }
    return was;
}

void kgx_endpoint_ok(kgx_endpoint_t *ep)
{
    if (ep->limit <= 0 || ep->limit >= ep->cap) return;
    if (++ep->ok_run >= 8 * ep->limit) {
        ep->ok_run = 0;
        ep->limit++;
        log_info("endpoint=%s in-flight limit back up to %d", ep->base, ep->limit);
    }
}

static void set_state(kgx_endpoint_t *ep, int st, const char *why)
{
    if (ep->state == st) return;
    int old = ep->state;
    ep->state = st;
    if (st == KGX_EP_UP)
        log_info("endpoint=%s state=up slots=%d n_ctx=%d", ep->base, ep->slots, ep->n_ctx);
    else if (st == KGX_EP_DOWN)
        log_warn("endpoint=%s state=down reason=\"%s\"", ep->base, why ? why : "");
    (void)old;
}

static void changed(kgx_endpoint_t *ep)
{
    if (ep->set->on_change && !ep->set->closing) ep->set->on_change(ep, ep->set->ud);
}

static void probe_start(kgx_endpoint_t *ep, int stage);

static void timer_cb(uv_timer_t *t)
{
    kgx_endpoint_t *ep = t->data;
    if (!ep->set->closing && !ep->probe) probe_start(ep, 0);
}

static void schedule_probe(kgx_endpoint_t *ep)
{
    if (ep->set->closing) return;
    double d = ep->backoff_ms;
    ep->backoff_ms = ep->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ep->backoff_ms * 2;
    uv_timer_start(&ep->timer, timer_cb, (uint64_t)d, 0);
}

static void probe_cb(kgx_http_req_t *req, const kgx_http_resp_t *r, void *ud)
{
    kgx_endpoint_t *ep = ud;
    ep->probe = NULL;
    int ok = r->err == KGX_HTTP_OK && r->status == 200;
    if (!ok) {
        char why[200];
        if (r->err == KGX_HTTP_OK) snprintf(why, sizeof why, "%s answered %ld", ep->probe_stage ? "/props" : "/health", r->status);
        else snprintf(why, sizeof why, "%s", r->errmsg);
        snprintf(ep->last_error, sizeof ep->last_error, "%s", why);
        set_state(ep, KGX_EP_DOWN, why);
        schedule_probe(ep);
        changed(ep);
        return;
    }
    if (ep->probe_stage == 0) {         /* healthy: now learn slots and context */
        probe_start(ep, 1);
        return;
    }
    int slots = kgx_props_total_slots(r->body), n_ctx = kgx_props_n_ctx(r->body);
    char *model = kgx_props_model(r->body);     /* economy (issue 14): whose answers are reused */
    if (model && ep->model_id && strcmp(model, ep->model_id))
        log_warn("endpoint=%s model changed (%s -> %s): answers stored for the old model are not reused",
                 ep->base, ep->model_id, model);
    else if (!model && !ep->model_id)
        log_debug("endpoint=%s /props names no model_path: stored answers are reused per endpoint URL", ep->base);
    if (model || !ep->model_id) {
        free(ep->model_id);
        ep->model_id = model;
    }
    if (ep->set->cfg_slots > 0) ep->slots = ep->set->cfg_slots;
    else if (slots > 0) ep->slots = slots;
    if (ep->set->cfg_n_ctx > 0) ep->n_ctx = ep->set->cfg_n_ctx;
    else if (n_ctx > 0 && (ep->n_ctx == 0 || n_ctx < ep->n_ctx)) ep->n_ctx = n_ctx;
    recompute_cap(ep);
    ep->backoff_ms = BACKOFF_MIN_MS;
    set_state(ep, KGX_EP_UP, NULL);
    changed(ep);
}

static void probe_start(kgx_endpoint_t *ep, int stage)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", ep->base, stage ? "/props" : "/health");
    ep->probe_stage = stage;
    ep->probe = kgx_http_submit(ep->set->http, "GET", url, NULL, 0, PROBE_TIMEOUT_MS, 1 << 20, probe_cb, ep);
    if (!ep->probe) {
        set_state(ep, KGX_EP_DOWN, "cannot start probe");
        schedule_probe(ep);
        changed(ep);
    }
}

int kgx_endpoints_init(kgx_endpoints_t *s, uv_loop_t *loop, kgx_http_t *http, char *const *bases, int n,
                       int max_in_flight, int cfg_slots, int cfg_n_ctx, kgx_endpoints_change_cb cb, void *ud)
{
    memset(s, 0, sizeof *s);
    s->ep = calloc((size_t)n, sizeof *s->ep);
    s->n = n;
    s->loop = loop;
    s->http = http;
    s->max_in_flight = max_in_flight;
    s->cfg_slots = cfg_slots;
    s->cfg_n_ctx = cfg_n_ctx;
    s->on_change = cb;
    s->ud = ud;
    for (int i = 0; i < n; i++) {
        kgx_endpoint_t *ep = &s->ep[i];
        ep->base = strdup(bases[i]);
        size_t ul = strlen(bases[i]) + 8;
        ep->url_id = malloc(ul);
        if (ep->url_id) snprintf(ep->url_id, ul, "url %s", bases[i]);
        ep->set = s;
        ep->state = KGX_EP_PROBING;
        ep->backoff_ms = BACKOFF_MIN_MS;
        ep->slots = cfg_slots;
        ep->n_ctx = cfg_n_ctx;
        recompute_cap(ep);
        uv_timer_init(loop, &ep->timer);
        ep->timer.data = ep;
    }
    return 0;
}

void kgx_endpoints_start(kgx_endpoints_t *s)
{
    for (int i = 0; i < s->n; i++) probe_start(&s->ep[i], 1);
}

static void timer_closed(uv_handle_t *h) { (void)h; }

void kgx_endpoints_close(kgx_endpoints_t *s)
{
    if (!s->ep) return;
    s->closing = 1;
    for (int i = 0; i < s->n; i++) {
        kgx_endpoint_t *ep = &s->ep[i];
        kgx_http_cancel(ep->probe);
        ep->probe = NULL;
        uv_timer_stop(&ep->timer);
        uv_close((uv_handle_t *)&ep->timer, timer_closed);
    }
}

void kgx_endpoints_free(kgx_endpoints_t *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->ep[i].base);
        free(s->ep[i].model_id);
        free(s->ep[i].url_id);
    }
    free(s->ep);
    s->ep = NULL;
    s->n = 0;
}

kgx_endpoint_t *kgx_endpoints_pick(kgx_endpoints_t *s)
{
    kgx_endpoint_t *best = NULL;
    double best_load = 0;
    for (int i = 0; i < s->n; i++) {
        kgx_endpoint_t *ep = &s->ep[i];
        int lim = ep->limit > 0 && ep->limit < ep->cap ? ep->limit : ep->cap;
        if (ep->state != KGX_EP_UP || ep->in_flight >= lim) continue;
        double load = (double)ep->in_flight / lim;
        if (!best || load < best_load) {
            best = ep;
            best_load = load;
        }
    }
    return best;
}

int kgx_endpoints_up(const kgx_endpoints_t *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++) n += s->ep[i].state == KGX_EP_UP;
    return n;
}

int kgx_endpoints_capacity(const kgx_endpoints_t *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->ep[i].state == KGX_EP_UP) n += s->ep[i].cap;
    return n;
}

int kgx_endpoints_n_ctx(const kgx_endpoints_t *s)
{
    int best = 0;
    for (int i = 0; i < s->n; i++) {
        const kgx_endpoint_t *ep = &s->ep[i];
        if (ep->state == KGX_EP_UP && ep->n_ctx > 0 && (best == 0 || ep->n_ctx < best)) best = ep->n_ctx;
    }
    if (!best) best = s->cfg_n_ctx;
    return best;
}

void kgx_endpoint_down(kgx_endpoint_t *ep, const char *why)
{
    snprintf(ep->last_error, sizeof ep->last_error, "%s", why ? why : "");
    if (ep->state == KGX_EP_DOWN && (ep->probe || uv_is_active((uv_handle_t *)&ep->timer))) return;
    set_state(ep, KGX_EP_DOWN, why);
    if (!ep->probe && !uv_is_active((uv_handle_t *)&ep->timer)) schedule_probe(ep);
    changed(ep);
}

void kgx_endpoint_check(kgx_endpoint_t *ep)
{
    if (ep->probe || ep->set->closing) return;
    if (ep->state == KGX_EP_DOWN && uv_is_active((uv_handle_t *)&ep->timer)) return;
    probe_start(ep, 0);
}

int kgx_endpoint_context_full(const kgx_endpoint_t *ep, long prompt, long completion)
{
    if (!ep || ep->n_ctx <= 0 || prompt < 0 || completion < 0) return -1;
    return prompt + completion >= (long)ep->n_ctx - 1;
}

void kgx_endpoint_learn_n_ctx(kgx_endpoint_t *ep, int n_ctx)
{
    if (n_ctx > 0 && (ep->n_ctx == 0 || n_ctx < ep->n_ctx)) ep->n_ctx = n_ctx;
}
