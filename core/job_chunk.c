/* job_chunk — one chunk's way (job.c draws the drawer's): the request hook, answer reuse (reuse.h),
 * the HTTP request and what its outcome means (outcome.c's table), the parse hook, and the chunk's
 * end — answered whole, charged, waited out or split. Loop thread only.
 *
 *   PENDING --slot--> REQUEST --hook--> LOOKUP --stored answer--> PARSE --whole--> DONE
 *      ^                 |                 |  \--miss------> INFLIGHT --200--^   |
 *      |                 |                 |                    | (failure table)  +--> halves (dense)
 *      |                 +--twin in flight--> TWIN --its answer--> PARSE
 *      +--------- failure / twin failed / cancelled (chunk_to ends a flight) ------+
 *   INFLIGHT --reset--> SUSPECT (/health decides); --cut at n_predict--> RESPLIT --> its pieces */
#include "job_int.h"
#include "answer.h"
#include "drops.h"
#include "graph.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "sink.h"
#include "status.h"

#include <stdlib.h>
#include <string.h>

/* A slot of --workers (and of the endpoint) is held from the request hook to the HTTP answer. */
void chunk_release(job_t *j, chunk_t *c)
{
    if (c->ep) c->ep->in_flight--;
    j->e->in_flight--;
    kgx_metrics.in_flight = j->e->in_flight;
}

/* economy (issue 14): the one place a chunk changes state once it may lead or follow a flight. A
 * leader leaving CH_LOOKUP / CH_INFLIGHT / CH_PARSE ends its flight: the followers are sent on their
 * own (answer_cb lands a whole answer on them first). A follower leaving CH_TWIN stops following. */
void chunk_to(chunk_t *c, int st)
{
    kgx_flight_t *f = c->flight;
    if (f && !c->leads && st != CH_TWIN) {
        kgx_reuse_unfollow(f, c);
        c->flight = NULL;
    } else if (f && c->leads && kgx_flight_answer(f)) {
        if (st != CH_DONE) {                /* answered whole: retired when the chunk goes (write, reset) */
            c->flight = NULL;
            kgx_reuse_retire(c->job->e->reuse, f);
        }
    } else if (f && c->leads && st != CH_LOOKUP && st != CH_INFLIGHT && st != CH_PARSE) {
        c->flight = NULL;
        kgx_reuse_land(c->job->e->reuse, f, NULL);
    }
    c->state = st;
}

void job_chunk_cancel(job_t *j, chunk_t *c)
{
    if (c->state == CH_INFLIGHT && c->req) {
        kgx_http_cancel(c->req);
        c->req = NULL;
        chunk_release(j, c);
    } else if (c->state == CH_LOOKUP) {    /* its lookup's answer is ignored (the flight ends below) */
        chunk_release(j, c);
    } else if (c->state == CH_REQUEST) {
        kgx_hooks_cancel(c->call);
        c->call = NULL;
        chunk_release(j, c);
    } else if (c->state == CH_PARSE || c->state == CH_RESPLIT) {
        kgx_hooks_cancel(c->call);
        c->call = NULL;
    }
    free(c->suspect);
    c->suspect = NULL;
    chunk_to(c, CH_PENDING);
}


void add_answer(job_t *j, const chunk_t *c, const char *body, size_t len)
{
    kgx_engine_t *e = j->e;
    if (!e->cfg->keep_answers || !e->sink->keeps_answers) return;
    double ms = c->ms;
    long pt = c->pt, ct = c->ct;
    kgx_buf_adds(&j->answers, j->answers.len ? "," : "[");
    kgx_buf_printf(&j->answers, "{\"chunk\":%zu,\"body\":", c->idx);
    /* [answer] what matters of the answer, not the prompt echo and generation settings */
    kgx_buf_t compact = { 0 };
    if (kgx_answer_compact(body, len, &compact) == 0) kgx_buf_json_strn(&j->answers, compact.p, compact.len);
    else kgx_buf_json_strn(&j->answers, body, len);
    kgx_buf_free(&compact);
    kgx_buf_adds(&j->answers, ",\"model\":");
    kgx_buf_json_str(&j->answers, e->cfg->model);
    kgx_buf_adds(&j->answers, ",\"policy\":");
    kgx_buf_json_str(&j->answers, kgx_policy_src_name(j->src));
    kgx_buf_adds(&j->answers, ",\"policy_version\":");
    kgx_buf_json_str(&j->answers, kgx_policy_src_version(j->src));
    kgx_buf_printf(&j->answers, ",\"latency_ms\":%.1f", ms);
    if (pt >= 0) kgx_buf_printf(&j->answers, ",\"prompt_tokens\":%ld", pt);
    if (ct >= 0) kgx_buf_printf(&j->answers, ",\"completion_tokens\":%ld", ct);
    /* economy (issue 14): what the answer is found by next time, and whether it was reused */
    if (c->req_hash[0]) kgx_buf_printf(&j->answers, ",\"req\":\"%s\"", c->req_hash);
    if (c->reused) kgx_buf_adds(&j->answers, ",\"reused\":true");
    kgx_buf_adds(&j->answers, "}");
}

void job_resplit(job_t *j, int learned)
{
    kgx_engine_t *e = j->e;
    job_reset_chunks(j);
    j->shrink++;
    kgx_metrics.errors[KGX_M_ERR_CONTEXT]++;
    if (j->state == JOB_CHUNKS) job_set_state(j, JOB_WAIT_SPLIT);
    if (learned > 0) kgx_hooks_set_n_ctx(e->hooks, kgx_endpoints_n_ctx(&e->eps));
    job_log(j, KGX_LOG_INFO, "context exceeded (n_ctx=%d): splitting smaller, shrink=%d", learned, j->shrink);
    if (j->shrink > MAX_SHRINK) {
        j->shrink = 0;
        job_charge(j, KGX_OUT_CONTEXT, "context exceeded even after splitting smaller");
    }
}

/* Resolves a suspect chunk once /health has spoken: endpoint down → not charged. */
void job_resolve_suspects(kgx_engine_t *e, kgx_endpoint_t *ep)
{
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) {
        for (size_t i = 0; i < j->nchunks; i++) {
            chunk_t *c = &j->chunks[i];
            if (c->state != CH_SUSPECT || c->ep != ep) continue;
            char *msg = c->suspect;
            c->suspect = NULL;
            chunk_to(c, CH_PENDING);
            if (ep->state == KGX_EP_UP) job_charge(j, KGX_OUT_RESET, msg ? msg : "request failed");
            free(msg);
        }
    }
}

static void answer_cb(kgx_hook_outcome_t *o, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    char msg[700];
    c->call = NULL;
    if (c->reused && (o->rc ? !o->abandoned
                            : kgx_answer_classify(0, 200, NULL, 0, NULL, o->result.verdict) != KGX_ANSWER_WHOLE)) {
        /* economy (issue 14): an answer this request did not ask for that this policy does not read
         * whole is nobody's fault: the drawer asks the LLM afresh, uncharged */
        job_log(j, KGX_LOG_INFO, "chunk=%zu a reused answer does not parse whole (%.200s): asking the LLM afresh",
                c->idx, o->rc ? o->err : "its list breaks off");
        j->fresh = 1;
        chunk_to(c, CH_PENDING);
        kgx_engine_pump(e);
        return;
    }
    if (o->rc) {
        chunk_to(c, CH_PENDING);
        if (o->abandoned) {
            snprintf(msg, sizeof msg, "policy: %s", o->err);
            job_charge(j, KGX_OUT_POLICY, msg);
        } else {
            snprintf(msg, sizeof msg, "unparseable answer from %s: %.500s", c->ep ? c->ep->base : "?", o->err);
            job_charge(j, KGX_OUT_UNPARSEABLE, msg);
        }
        kgx_engine_pump(e);
        return;
    }
    /* [answer] whole only when the server ended it itself (chunk_cb) and the list parsed to its end */
    if (kgx_answer_classify(0, 200, NULL, 0, NULL, o->result.verdict) != KGX_ANSWER_WHOLE) {
        snprintf(msg, sizeof msg, "answer from %s not whole: its list breaks off (parse verdict)",
                 c->ep ? c->ep->base : "?");
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_MALFORMED, msg);
        kgx_engine_pump(e);
        return;
    }
    if (c->ep && !c->reused) kgx_endpoint_ok(c->ep);
    if (c->flight && c->leads) {              /* economy (issue 14): its twins parse this answer */
        kgx_reuse_answer_t a = { o->body, o->body_len, c->pt, c->ct };
        kgx_flight_t *f = c->flight;
        c->flight = NULL;
        if (kgx_reuse_land(e->reuse, f, &a)) c->flight = f;   /* kept: retired when the chunk goes */
    }
    add_result(j, c, &o->result);
    dense_split(j, c, &o->result);              /* economy (issue 14) */
    if (!c->reused) kgx_metrics_observe_tokens(c->pt, c->ct);
    add_answer(j, c, o->body, o->body_len);
    chunk_to(c, CH_DONE);
    j->ndone++;
    if (j->ndone == j->nchunks && j->state == JOB_CHUNKS) job_write(j);
    kgx_engine_pump(e);
}

/* The parse hook on an answer for chunk c (the server's, or a reused one): its latency and token counts
 * are kept for the stored answer. */
static void chunk_parse(job_t *j, chunk_t *c, const char *body, size_t len, double ms, long pt, long ct)
{
    kgx_engine_t *e = j->e;
    char lc[240];
    c->ms = ms;
    c->pt = pt;
    c->ct = ct;
    chunk_to(c, CH_PARSE);
    c->call = kgx_hooks_answer(e->hooks, j->src, j->box, &j->texts[c->idx], body, len,
                               job_context(j, lc, sizeof lc), answer_cb, c);
    if (!c->call) {
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
    }
}

static void chunk_cb(kgx_http_req_t *req, const kgx_http_resp_t *r, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    c->req = NULL;
    chunk_release(j, c);
    kgx_metrics_observe_latency(r->total_ms / 1000.0);
    /* [answer] one classification of what the server did with this request (answer.c), landing on a
     * row of the failure table (outcome.c); the parse verdict is judged after the parse hook */
    kgx_answer_t ans;
    kgx_answer_read(r->err == KGX_HTTP_OK && r->status == 200 ? r->body : NULL, r->body_len, &ans);
    /* [answer] a chat answer says "length" for both cuts: its token counts against the slot tell them apart */
    if (ans.stop == KGX_STOP_LIMIT && ans.truncated < 0)
        ans.truncated = kgx_endpoint_context_full(ep, ans.tokens_evaluated, ans.tokens_predicted);
    {   /* [budget] what the instructions took, as the server counts: the prompt less the chunk's estimate */
        const kgx_chunk_t *t = &j->texts[c->idx];
        kgx_status_note_prompt(ans.tokens_evaluated, t->tokens >= 0 ? t->tokens : (long)(t->len + 2) / 3);
    }
    int aoc = r->err == KGX_HTTP_OK
        ? (int)kgx_answer_classify(0, r->status, r->body ? r->body : "", r->body ? r->body_len : 0, &ans,
                                   KGX_VERDICT_NONE)
        : (int)KGX_ANSWER_TRANSPORT;
    kgx_outcome_t oc = kgx_outcome_of_answer(r->err, r->status, aoc);
    const kgx_outcome_rule_t *rule = kgx_outcome_rule(oc);
    char msg[600];
    switch (oc) {
    case KGX_OUT_CONNECT: snprintf(msg, sizeof msg, "%s", r->errmsg); break;
    case KGX_OUT_LOADING: snprintf(msg, sizeof msg, "503 loading"); break;
    case KGX_OUT_RESET: case KGX_OUT_TIMEOUT:
        snprintf(msg, sizeof msg, "llm %s from %s: %s", oc == KGX_OUT_TIMEOUT ? "timeout" : "reset", ep->base, r->errmsg);
        break;
    case KGX_OUT_TOO_BIG: case KGX_OUT_TRANSPORT:
        snprintf(msg, sizeof msg, "llm request to %s failed: %s", ep->base, r->errmsg);
        break;
    case KGX_OUT_MALFORMED:            /* [answer] */
        snprintf(msg, sizeof msg, "answer from %s not whole: the server ended it with an unknown stop type", ep->base);
        break;
    default:
        snprintf(msg, sizeof msg, "llm http %ld from %s: %.300s", r->status, ep->base, r->body ? r->body : "");
    }
    switch (rule->action) {
    case KGX_DO_ACCEPT:
        break;
    case KGX_DO_WAIT_ENDPOINT:          /* not the drawer's fault */
        if (rule->metric >= 0) kgx_metrics.errors[rule->metric]++;
        chunk_to(c, CH_PENDING);
        kgx_endpoint_down(ep, msg);
        kgx_engine_pump(e);
        return;
    case KGX_DO_ASK_HEALTH:             /* /health decides: job_resolve_suspects */
        chunk_to(c, CH_SUSPECT);
        c->suspect = strdup(msg);
        kgx_endpoint_check(ep);
        if (!ep->probe) job_resolve_suspects(e, ep);
        kgx_engine_pump(e);
        return;
    case KGX_DO_FEWER: {                /* [answer] the server is busy: fewer in flight, not charged */
        int was = kgx_endpoint_busy(ep, r->status);
        if (!(was == 1 && ep->in_flight == 0)) {
            if (rule->metric >= 0) kgx_metrics.errors[rule->metric]++;
            chunk_to(c, CH_PENDING);
            kgx_engine_pump(e);
            return;
        }
        /* alone on the endpoint at a limit of 1 and still refused: the drawer's own overflow */
        job_log(j, KGX_LOG_INFO, "llm http %ld alone at in-flight limit 1: the request itself overflows", r->status);
    }
    /* fall through */
    case KGX_DO_RESPLIT: {
        if (oc == KGX_OUT_CUT_CONTEXT) {    /* [answer] the slot's context filled up during the answer */
            job_log(j, KGX_LOG_INFO, "answer cut by a full context (truncated) at %ld+%ld tokens", ans.tokens_evaluated,
                    ans.tokens_predicted);
            job_resplit(j, 0);
            kgx_engine_pump(e);
            return;
        }
        int n = kgx_error_n_ctx(r->body);
        if (n > 0) kgx_endpoint_learn_n_ctx(ep, n);
        job_resplit(j, n);
        kgx_engine_pump(e);
        return;
    }
    case KGX_DO_SPLIT_CHUNK:            /* [answer] cut at n_predict: only this chunk, smaller */
        job_split_cut(j, c);
        kgx_engine_pump(e);
        return;
    case KGX_DO_CHARGE: case KGX_DO_CHARGE_CHECK: case KGX_DO_RETRY_SAME:
        chunk_to(c, CH_PENDING);
        if (rule->action != KGX_DO_RETRY_SAME) job_charge(j, oc, msg);
        if (rule->action == KGX_DO_CHARGE_CHECK) kgx_endpoint_check(ep);
        kgx_engine_pump(e);
        return;
    }
    long pt = kgx_body_int(r->body, "tokens_evaluated"), ct = kgx_body_int(r->body, "tokens_predicted");
    if (pt < 0) pt = kgx_body_int(r->body, "prompt_tokens");
    if (ct < 0) ct = kgx_body_int(r->body, "completion_tokens");
    chunk_parse(j, c, r->body, r->body_len, r->total_ms, pt, ct);
    kgx_engine_pump(e);
}

/* The HTTP request of chunk c (which holds its slot). */
static void chunk_send(job_t *j, chunk_t *c, const char *path, const char *body, size_t len)
{
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", ep->base, path);
    c->req = kgx_http_submit(e->http, "POST", url, body, len, c->timeout_ms, MAX_ANSWER_BYTES, chunk_cb, c);
    if (!c->req) {
        chunk_release(j, c);
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_TRANSPORT, "could not start the HTTP request");
    } else {
        chunk_to(c, CH_INFLIGHT);
        ep->requests++;
        kgx_metrics.llm_requests++;
    }
}

/* economy (issue 14): a whole answer chunk c did not ask for (stored, or its twin's) is parsed as if
 * the server had just sent it. */
static void chunk_answer(job_t *j, chunk_t *c, chunk_reused_t how, const kgx_reuse_answer_t *a)
{
    c->reused = how;
    chunk_parse(j, c, a->body, a->len, 0, a->prompt_tokens, a->completion_tokens);
}

static void request_cb(kgx_hook_outcome_t *o, void *ud)
{
    chunk_t *c = ud;
    job_t *j = c->job;
    kgx_engine_t *e = j->e;
    kgx_endpoint_t *ep = c->ep;
    c->call = NULL;
    if (o->rc) {
        char msg[1100];
        snprintf(msg, sizeof msg, "policy: %s", o->err);
        chunk_release(j, c);
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_POLICY, msg);
        kgx_engine_pump(e);
        return;
    }
    kgx_request_t *rq = &o->request;
    c->timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : (long)(e->cfg->request_timeout * 1000);
    c->req_hash[0] = 0;
    c->reused = REUSED_NO;
    if (e->reuse && !j->fresh) {                /* economy (issue 14): an answer we already have? */
        size_t klen, boff;
        char *key = kgx_reuse_key(kgx_endpoint_identity(ep), rq->path, rq->body, rq->body_len, &klen, &boff);
        kgx_flight_t *f = key ? kgx_reuse_find(e->reuse, key, klen) : NULL;
        if (f && kgx_flight_answer(f)) {         /* answered whole a moment ago: take it */
            free(key);
            chunk_release(j, c);
            if (kgx_flight_hash(f)) memcpy(c->req_hash, kgx_flight_hash(f), 65);
            kgx_metrics.llm_reused[KGX_M_REUSED_FLIGHT]++;
            chunk_answer(j, c, REUSED_FLIGHT, kgx_flight_answer(f));
            kgx_engine_pump(e);
            return;
        }
        if (f && kgx_reuse_follow(f, c) == 0) {
            free(key);                          /* its twin answers for it: no slot held meanwhile */
            chunk_release(j, c);
            c->flight = f;
            c->leads = 0;
            chunk_to(c, CH_TWIN);
            kgx_engine_pump(e);
            return;
        }
        if (!f && key) {
            c->flight = kgx_reuse_open(e->reuse, key, klen, c, 1);
            c->leads = 1;
            if (c->flight && kgx_flight_looking(c->flight)) {
                chunk_to(c, CH_LOOKUP);         /* job_reuse_found() goes on */
                return;
            }
            /* no lookup (answers not kept): the leader of its twins sends now */
        } else {
            free(key);
        }
    }
    chunk_send(j, c, rq->path, rq->body, rq->body_len);
    kgx_engine_pump(e);
}

/* economy (issue 14): the stored answer (or none) for a chunk's request came back. */
void job_reuse_found(void *leader, const char *hash_hex, const kgx_reuse_answer_t *a, void *ud)
{
    chunk_t *c = leader;
    job_t *j = c->job;
    kgx_engine_t *e = ud;
    if (c->state != CH_LOOKUP) return;
    if (hash_hex) memcpy(c->req_hash, hash_hex, 65);
    if (a) {
        chunk_release(j, c);
        kgx_metrics.llm_reused[KGX_M_REUSED_STORED]++;
        chunk_answer(j, c, REUSED_STORED, a);
    } else {
        size_t klen, boff = 0;
        const char *key = kgx_flight_key(c->flight, &klen);
        /* the key is identity '\n' path '\n' body: the path is its second line */
        const char *p1 = memchr(key, '\n', klen);
        const char *p2 = p1 ? memchr(p1 + 1, '\n', klen - (size_t)(p1 + 1 - key)) : NULL;
        if (!p2) {
            chunk_release(j, c);
            chunk_to(c, CH_PENDING);
            job_charge(j, KGX_OUT_TRANSPORT, "could not start the HTTP request");
        } else {
            char path[1024];
            snprintf(path, sizeof path, "%.*s", (int)(p2 - p1 - 1), p1 + 1);
            boff = (size_t)(p2 + 1 - key);
            chunk_send(j, c, path, key + boff, klen - boff);
        }
    }
    kgx_engine_pump(e);
}

/* economy (issue 14): the request a twin followed ended: its whole answer, or none (send our own). */
void job_reuse_landed(void *follower, const char *hash_hex, const kgx_reuse_answer_t *a, void *ud)
{
    chunk_t *c = follower;
    job_t *j = c->job;
    kgx_engine_t *e = ud;
    c->flight = NULL;                           /* the flight is gone: nothing to unfollow */
    if (c->state != CH_TWIN) return;
    if (hash_hex) memcpy(c->req_hash, hash_hex, 65);
    if (a) {
        kgx_metrics.llm_reused[KGX_M_REUSED_FLIGHT]++;
        chunk_answer(j, c, REUSED_FLIGHT, a);
    } else {
        chunk_to(c, CH_PENDING);                /* sent on its own by the next pump */
    }
    kgx_engine_pump(e);                         /* (this may run inside another chunk's cancel) */
}

void job_send_chunk(kgx_engine_t *e, job_t *j, chunk_t *c, kgx_endpoint_t *ep)
{
    kgx_ctx_t ctx = { ep->n_ctx ? ep->n_ctx : kgx_endpoints_n_ctx(&e->eps), j->shrink, j->attempts + 1, ep->base, 0 };
    char lc[240];
    /* the slot is taken now: the request hook runs for this endpoint */
    chunk_to(c, CH_REQUEST);
    c->ep = ep;
    ep->in_flight++;
    e->in_flight++;
    kgx_metrics.in_flight = e->in_flight;
    c->call = kgx_hooks_request(e->hooks, j->src, j->box, &j->texts[c->idx], &ctx, job_context(j, lc, sizeof lc),
                                request_cb, c);
    if (!c->call) {
        chunk_release(j, c);
        chunk_to(c, CH_PENDING);
        job_charge(j, KGX_OUT_POLICY, "policy: out of memory");
    }
}
