/* endpoint — the llama-server endpoints: slots and per-slot context from /props, health, choice.
 *
 * Each endpoint is probed at start (GET /props: total_slots, default_generation_settings.n_ctx).
 * A failing endpoint is set aside (DOWN) and re-probed on GET /health with backoff (0.5 s doubling
 * to 30 s); when /health answers 200 it is asked /props again and comes back UP. Requests go to the
 * UP endpoint with the lowest in_flight/slots. When none is UP the engine stops claiming. */
#ifndef KGX_ENDPOINT_H
#define KGX_ENDPOINT_H

#include <stdint.h>
#include <uv.h>
#include "http.h"

enum kgx_ep_state { KGX_EP_PROBING, KGX_EP_UP, KGX_EP_DOWN };

typedef struct kgx_endpoints kgx_endpoints_t;

typedef struct kgx_endpoint {
    char *base;                /* normalised base URL */
    char *model_id;            /* economy (issue 14): the model behind it (/props model_path and chat
                                * template), NULL until known; a stored answer is reused only for it */
    char *url_id;              /* "url BASE": the identity when /props names no model */
    int state;
    int slots;                 /* from /props or --slots; 0 unknown */
    int n_ctx;                 /* per-slot context; 0 unknown */
    int in_flight;
    int cap;                   /* max in flight here (slots, --workers) */
    int limit;                 /* adaptive in-flight limit <= cap: lowered on capacity signals */
    int ok_run;                /* whole answers since the limit last moved */
    uint64_t lowered_at;       /* loop ms of the last lowering (one lowering per burst) */
    int told;                  /* the capacity advice was logged */
    double backoff_ms;
    unsigned long long requests, failures;
    char last_error[200];
    uv_timer_t timer;
    kgx_http_req_t *probe;
    int probe_stage;           /* 0 /health, 1 /props */
    kgx_endpoints_t *set;
} kgx_endpoint_t;

/* on_change runs whenever an endpoint changes state (the engine re-pumps / resolves suspects). */
typedef void (*kgx_endpoints_change_cb)(kgx_endpoint_t *ep, void *ud);

struct kgx_endpoints {
    kgx_endpoint_t *ep;
    int n;
    int max_in_flight, cfg_slots, cfg_n_ctx;   /* max_in_flight: --workers */
    uv_loop_t *loop;
    kgx_http_t *http;
    kgx_endpoints_change_cb on_change;
    void *ud;
    int closing;
};

int kgx_endpoints_init(kgx_endpoints_t *s, uv_loop_t *loop, kgx_http_t *http, char *const *bases, int n,
                       int max_in_flight, int cfg_slots, int cfg_n_ctx, kgx_endpoints_change_cb cb, void *ud);
void kgx_endpoints_start(kgx_endpoints_t *s);     /* probes all */
void kgx_endpoints_close(kgx_endpoints_t *s);     /* cancels probes, closes timers (run loop after) */
void kgx_endpoints_free(kgx_endpoints_t *s);      /* after the loop closed the timers */
/* The UP endpoint with the most free room, or NULL. */
kgx_endpoint_t *kgx_endpoints_pick(kgx_endpoints_t *s);
int kgx_endpoints_up(const kgx_endpoints_t *s);   /* number of UP endpoints */
int kgx_endpoints_capacity(const kgx_endpoints_t *s);  /* sum of caps of UP endpoints */
/* Smallest known per-slot context among UP endpoints (or configured); 0 unknown. */
int kgx_endpoints_n_ctx(const kgx_endpoints_t *s);
/* The endpoint failed in a way that suggests it is down: set it aside and probe /health. */
void kgx_endpoint_down(kgx_endpoint_t *ep, const char *why);
/* Ask /health now (after a reset or timeout) unless a probe is already running. */
void kgx_endpoint_check(kgx_endpoint_t *ep);
/* A capacity signal (500 "Context size has been exceeded", 429 — not 503 "Loading model", which sets
 * the endpoint aside: outcome.c): the server is busy, not the
 * request at fault. Halves the endpoint's in-flight limit (once per burst: every request active when
 * a unified KV pool fills gets the same 500), logs once what to change on the server, and returns
 * the limit as it was before this signal (1: the request was sent with nothing beside it allowed). */
int kgx_endpoint_busy(kgx_endpoint_t *ep, long status);
/* A whole answer: the limit climbs back by one after 8 x limit whole answers in a row. */
void kgx_endpoint_ok(kgx_endpoint_t *ep);
/* Whether an answer of `prompt` + `completion` tokens filled this endpoint's per-slot context: 1 when
 * they reach n_ctx - 1 (llama-server stopped it because the slot was full), 0 when not, -1 when n_ctx
 * or the counts are unknown. A chat completion has no "truncated": finish_reason is "length" for a cut
 * at max_tokens and for a full context alike; measured on llama-server 0.7.0, a full context gives
 * usage.prompt_tokens + usage.completion_tokens = n_ctx (509 + 3 of 512), a cut at max_tokens
 * completion_tokens = max_tokens far below it (39 + 6). */
int kgx_endpoint_context_full(const kgx_endpoint_t *ep, long prompt, long completion);
/* Learned from a 400 context-size answer. */
void kgx_endpoint_learn_n_ctx(kgx_endpoint_t *ep, int n_ctx);
const char *kgx_endpoint_state_name(int state);
/* Pure helpers (tested): numbers from a /props body; -1 when absent. */
int kgx_props_total_slots(const char *body);
int kgx_props_n_ctx(const char *body);
/* economy (issue 14): "MODEL_PATH template=HASH" from a /props body (malloc'd), NULL without model_path. */
char *kgx_props_model(const char *body);
/* What answers are reused for: the model identity, else the endpoint's URL. */
const char *kgx_endpoint_identity(const kgx_endpoint_t *ep);
int kgx_error_n_ctx(const char *body);                    /* n_ctx from an exceed_context_size_error body */
/* First integer member "key" anywhere in a response body (token counts); -1 when absent. */
long kgx_body_int(const char *body, const char *key);

#endif
