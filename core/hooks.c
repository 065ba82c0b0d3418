/* hooks — see hooks.h for the contract and why threads.
 *
 * Ownership (which thread owns what):
 *   kgx_hooks_t           the loop thread; the fields under `mu` (queue, done list, thread list,
 *                         each thread's call/started/abandoned/script pointer, counts) are shared.
 *   kgx_hook_call_t       inputs: written by the loop before submit, read-only afterwards.
 *                         outputs: written by the running thread, read by the loop after the call
 *                         moved to the done list (under mu: that is the running -> done handoff).
 *                         cb/ud/cancelled: the loop's alone. Freed by the loop after its callback,
 *                         or — once abandoned — by the thread if its C call ever returns.
 *   hook_thread_t         its kgx_script_t (Lua state) belongs to the thread alone; nobody else ever
 *                         calls into it. Abandoned (running -> abandoned, under mu): the loop drops
 *                         every pointer to it and never looks at it again; the thread frees itself.
 *   uv_async_t done       the one way results come back; only threads that are not abandoned send
 *                         on it, and those are joined before it is closed, so it outlives them.
 *
 *   queued --(a thread takes it)--> running --(thread, under mu)--> done --(async)--> callback, freed
 *                                      |
 *                                      +--(loop timer: past limit + grace)--> abandoned
 *                                           failure callback at once; the thread frees the call
 *                                           and itself when (if) its C call returns */
#include "hooks.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { CALL_SPLIT, CALL_REQUEST, CALL_ANSWER, CALL_ACCEPT, CALL_LOAD } call_kind_t;
typedef enum { CALL_QUEUED, CALL_RUNNING, CALL_DONE } call_state_t;

typedef struct hook_thread hook_thread_t;

struct kgx_hook_call {
    kgx_hook_call_t *next;           /* queue or done list, under mu */
    call_state_t state;              /* under mu */
    /* inputs */
    call_kind_t kind;
    kgx_hooks_t *h;
    kgx_policy_src_t *src;           /* owned ref */
    kgx_drawer_box_t *box;           /* a reference */
    const kgx_drawer_t *drawer;      /* box's drawer */
    kgx_chunk_t chunk;               /* owned copy; text NULL: no chunk */
    kgx_ctx_t ctx;
    char *endpoint;                  /* ctx.endpoint's copy */
    char *body;
    size_t body_len;
    char *raw[3];                    /* accept: subject, predicate, object */
    double confidence;
    char logctx[240];
    /* outputs */
    kgx_hook_outcome_t out;
    char err[1024];
    char why[512];                   /* accept */
    /* the loop's */
    kgx_hook_cb cb;
    void *ud;
};

struct hook_thread {
    hook_thread_t *next;             /* live threads, under mu */
    uv_thread_t tid;
    kgx_hooks_t *h;
    kgx_script_t *script;            /* the thread's; the pointer itself is read by the loop under mu */
    kgx_hook_call_t *call;           /* under mu */
    uint64_t started_ms;             /* under mu */
    int abandoned;                   /* under mu */
    int awake;                       /* under mu: not waiting on cv (running a call, or about to take one) */
    uv_cond_t cv;                    /* its own: the loop wakes one chosen thread, never a herd */
    int n_ctx;
};

struct kgx_hooks {
    uv_loop_t *loop;
    uv_async_t done_async;
    uv_timer_t tick;
    uv_check_t wake_check;           /* calls submitted in a loop turn: one wake-up, after its events */
    uv_idle_t wake_idle;             /* active while one is due: the loop does not block before it */
    int wake_due;                    /* the loop's */
    uv_mutex_t mu;
    kgx_hook_call_t *head, *tail;    /* queued, under mu */
    kgx_hook_call_t *done;           /* under mu */
    hook_thread_t *threads;          /* live (not abandoned), under mu */
    int abandoned_alive;             /* under mu */
    int quit;                        /* under mu */
    int live, idle;                  /* threads not abandoned / asleep on their cv, under mu */
    atomic_int n_ctx;
    kgx_policy_src_t *current;       /* the loop's */
    int timeout_ms;
    void (*on_cap)(void *);
    void *ud;
    int capped;
};

/* A pool left behind with stuck threads still running: they lock its mutex when they return. */
static kgx_hooks_t *leaked_pools[8];

struct kgx_drawer_box { atomic_int refs; kgx_drawer_t *d; };

kgx_drawer_box_t *kgx_drawer_box_new(const kgx_drawer_t *d)
{
    kgx_drawer_box_t *b = malloc(sizeof *b);
    if (!b) return NULL;
    if (!(b->d = kgx_drawer_dup(d))) { free(b); return NULL; }
    atomic_init(&b->refs, 1);
    return b;
}

void kgx_drawer_box_unref(kgx_drawer_box_t *b)
{
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
    free(b->d);
    free(b);
}

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

static void call_free(kgx_hook_call_t *c)
{
    if (!c) return;
    kgx_policy_src_unref(c->src);
    kgx_drawer_box_unref(c->box);
    free(c->chunk.text);
    free(c->endpoint);
    free(c->body);
    for (int i = 0; i < 3; i++) free(c->raw[i]);
    kgx_triple_t *t = &c->out.triple;
    free(t->subject); free(t->predicate); free(t->object); free(t->raw_predicate);
    kgx_chunks_free(c->out.chunks, c->out.nchunks);
    kgx_request_clear(&c->out.request);
    kgx_result_clear(&c->out.result);
    free(c);
}

/* ------------------------------------------------------------------ hook threads */

/* Runs one call on this thread's state (built, or rebuilt, from the call's policy text). */
static void run_call(hook_thread_t *t, kgx_hook_call_t *c)
{
    kgx_hooks_t *h = t->h;
    kgx_hook_outcome_t *o = &c->out;
    o->err = c->err;
    kgx_log_set_context(c->logctx[0] ? c->logctx : NULL);
    if (c->kind == CALL_LOAD || !t->script || kgx_script_src(t->script) != c->src) {
        kgx_script_t *old = t->script;
        uv_mutex_lock(&h->mu);
        t->script = NULL;                 /* the loop reads `running` through this pointer */
        uv_mutex_unlock(&h->mu);
        kgx_script_free(old);
        kgx_script_t *s = kgx_script_new_src(c->src, c->err, sizeof c->err);
        uv_mutex_lock(&h->mu);
        t->script = s;
        uv_mutex_unlock(&h->mu);
        t->n_ctx = -1;
        if (!s) {
            o->rc = -1;
            o->failed = KGX_HOOK_LOAD;
            kgx_log_set_context(NULL);
            return;
        }
    }
    int n_ctx = atomic_load(&h->n_ctx);
    if (n_ctx != t->n_ctx && n_ctx > 0) kgx_script_set_n_ctx(t->script, n_ctx);
    t->n_ctx = n_ctx;
    const kgx_chunk_t *chunk = c->chunk.text ? &c->chunk : NULL;
    switch (c->kind) {
    case CALL_SPLIT:
        o->rc = kgx_script_run_split(t->script, c->drawer, &c->ctx, &o->chunks, &o->nchunks, &o->failed,
                                     c->err, sizeof c->err);
        o->skipped = kgx_script_skipped_last(t->script);   /* economy (issue 14) */
        break;
    case CALL_REQUEST:
        o->rc = kgx_script_run_request(t->script, c->drawer, chunk, &c->ctx, &o->request, &o->failed,
                                       c->err, sizeof c->err);
        break;
    case CALL_ANSWER:
        o->rc = kgx_script_run_answer(t->script, c->drawer, chunk, c->body, c->body_len, &o->result,
                                      &o->failed, c->err, sizeof c->err);
        break;
    case CALL_ACCEPT:
        o->rc = kgx_script_run_accept(t->script, c->drawer, c->raw[0], c->raw[1], c->raw[2], c->confidence,
                                      &o->triple, c->why, sizeof c->why, &o->failed, c->err, sizeof c->err);
        if (o->rc == 1) { o->rc = 0; o->rejected = 1; }
        break;
    case CALL_LOAD:
        o->rc = 0;
        break;
    }
    if (c->kind != CALL_LOAD) kgx_script_call_done(t->script);   /* a large document read goes now */
    kgx_log_set_context(NULL);
}

static void thread_main(void *arg)
{
    hook_thread_t *t = arg;
    kgx_hooks_t *h = t->h;
    uv_mutex_lock(&h->mu);
    for (;;) {
        if (!h->head && !h->quit && !t->abandoned) {     /* nothing queued: asleep until woken */
            t->awake = 0;
            h->idle++;
            while (!t->awake && !h->quit) uv_cond_wait(&t->cv, &h->mu);
            if (!t->awake) { t->awake = 1; h->idle--; }  /* quit (wake_one does both otherwise) */
        }
        if (h->quit || t->abandoned) break;
        if (!h->head) continue;
        kgx_hook_call_t *c = h->head;
        h->head = c->next;
        if (!h->head) h->tail = NULL;
        c->next = NULL;
        c->state = CALL_RUNNING;
        t->call = c;
        t->started_ms = mono_ms();
        uv_mutex_unlock(&h->mu);

        run_call(t, c);

        uv_mutex_lock(&h->mu);
        t->call = NULL;
        if (t->abandoned) {               /* the loop gave up on us: the call is ours to free */
            call_free(c);
            break;
        }
        c->state = CALL_DONE;
        c->next = h->done;
        h->done = c;
        uv_async_send(&h->done_async);
    }
    int abandoned = t->abandoned;
    if (abandoned) h->abandoned_alive--;
    uv_mutex_unlock(&h->mu);
    kgx_script_free(t->script);           /* ours alone, also when abandoned */
    t->script = NULL;
    if (abandoned) {                      /* detached: nobody joins us */
        uv_cond_destroy(&t->cv);
        free(t);
    }
}

/* A new hook thread; it starts with `script` (owned, may be NULL: built at its first call). */
static int spawn(kgx_hooks_t *h, kgx_script_t *script)
{
    hook_thread_t *t = calloc(1, sizeof *t);
    if (!t) { kgx_script_free(script); return -1; }
    t->h = h;
    t->n_ctx = -1;
    t->script = script;
    t->awake = 1;                         /* goes straight to the queue */
    if (uv_cond_init(&t->cv) != 0) { kgx_script_free(script); free(t); return -1; }
    uv_mutex_lock(&h->mu);
    t->next = h->threads;
    h->threads = t;
    h->live++;
    uv_mutex_unlock(&h->mu);
    if (uv_thread_create(&t->tid, thread_main, t) != 0) {
        uv_mutex_lock(&h->mu);
        h->threads = t->next;
        h->live--;
        uv_mutex_unlock(&h->mu);
        kgx_script_free(t->script);
        uv_cond_destroy(&t->cv);
        free(t);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the loop's side */

/* Who takes the queue (under mu). One awake thread drains it: hook calls are short, and each extra
 * thread woken for them costs two context switches and a core that PostgreSQL wanted (B1: kgx-run's
 * CPU per drawer 0.72 ms with every idle thread woken per call, 0.54 ms with one thread). Another
 * thread is woken — or started, up to KGX_HOOK_THREADS — only while every awake thread is inside a
 * call older than KGX_HOOK_SLOW_MS: a slow or stuck hook never holds the others up longer than that
 * (plus the loop's tick when nothing is submitted meanwhile). Returns 1: start a thread (after mu). */
static int staff(kgx_hooks_t *h, uint64_t now)
{
    if (!h->head) return 0;
    hook_thread_t *sleeper = NULL;
    for (hook_thread_t *t = h->threads; t; t = t->next) {
        if (!t->awake) { sleeper = t; continue; }
        if (!t->call || now < t->started_ms || now - t->started_ms < KGX_HOOK_SLOW_MS) return 0;
    }
    if (sleeper) {
        sleeper->awake = 1;
        h->idle--;
        uv_cond_signal(&sleeper->cv);
        return 0;
    }
    return h->live < KGX_HOOK_THREADS && !h->capped;
}

static void wake_idle_cb(uv_idle_t *i) { (void)i; }

static void wake_check_cb(uv_check_t *k)
{
    kgx_hooks_t *h = k->data;
    if (!h->wake_due) return;
    h->wake_due = 0;
    uv_idle_stop(&h->wake_idle);
    uv_mutex_lock(&h->mu);
    int grow = staff(h, mono_ms());
    uv_mutex_unlock(&h->mu);
    if (grow && spawn(h, NULL) != 0) log_warn("hooks: cannot start another hook thread");
}

static void deliver(kgx_hook_call_t *c)
{
    if (c->cb) {
        c->out.src = c->src;
        c->out.err = c->err;
        c->out.body = c->body;
        c->out.body_len = c->body_len;
        c->out.why = c->why;
        c->cb(&c->out, c->ud);
    }
    call_free(c);
}

static void done_cb(uv_async_t *a)
{
    kgx_hooks_t *h = a->data;
    uv_mutex_lock(&h->mu);
    kgx_hook_call_t *list = h->done;
    h->done = NULL;
    uv_mutex_unlock(&h->mu);
    /* oldest first */
    kgx_hook_call_t *rev = NULL;
    while (list) { kgx_hook_call_t *n = list->next; list->next = rev; rev = list; list = n; }
    while (rev) {
        kgx_hook_call_t *n = rev->next;
        deliver(rev);
        rev = n;
    }
}

static const char *call_hook_name(call_kind_t k)
{
    switch (k) {
    case CALL_SPLIT: return "split";
    case CALL_REQUEST: return "request";
    case CALL_ANSWER: return "parse";
    case CALL_ACCEPT: return "accept";
    default: return "load";
    }
}

/* The watchdog's loop half: a hook past its limit (+ grace) is inside a C call the Lua debug hook
 * cannot interrupt. Its state is abandoned, its drawer's attempt failed, a replacement started. */
static void tick_cb(uv_timer_t *tm)
{
    kgx_hooks_t *h = tm->data;
    struct { kgx_hook_cb cb; void *ud; kgx_hook_t hook; const char *name; kgx_policy_src_t *src; } late[16];
    int nlate = 0, alive;
    uv_mutex_lock(&h->mu);
    uint64_t now = mono_ms();   /* under mu: no thread can have started a call after this instant */
    for (hook_thread_t **pp = &h->threads, *t; (t = *pp) && nlate < 16;) {
        kgx_hook_call_t *c = t->call;
        if (!c || now < t->started_ms || now - t->started_ms <= (uint64_t)(h->timeout_ms + KGX_HOOK_GRACE_MS)) {
            pp = &t->next;
            continue;
        }
        int running = t->script ? kgx_script_running(t->script) : (int)KGX_HOOK_LOAD;
        late[nlate].cb = c->cb;
        late[nlate].ud = c->ud;
        late[nlate].hook = running >= 0 ? (kgx_hook_t)running : c->kind == CALL_REQUEST ? KGX_HOOK_REQUEST
                         : c->kind == CALL_SPLIT ? KGX_HOOK_SPLIT : c->kind == CALL_LOAD ? KGX_HOOK_LOAD
                         : c->kind == CALL_ACCEPT ? KGX_HOOK_ACCEPT : KGX_HOOK_PARSE;
        late[nlate].name = running >= 0 ? kgx_hook_name((kgx_hook_t)running) : call_hook_name(c->kind);
        late[nlate].src = kgx_policy_src_ref(c->src);
        nlate++;
        c->cb = NULL;                     /* the thread frees it, the loop never sees it again */
        t->abandoned = 1;
        *pp = t->next;                    /* no longer ours */
        h->live--;
        pthread_detach(t->tid);
        h->abandoned_alive++;
    }
    alive = h->abandoned_alive;
    int grow = nlate == 0 && staff(h, now);   /* a slow call and nothing submitted since */
    uv_mutex_unlock(&h->mu);
    if (grow && spawn(h, NULL) != 0) log_warn("hooks: cannot start another hook thread");
    for (int i = 0; i < nlate; i++) {
        log_err("watchdog: hook '%s' exceeded %d ms; its state is abandoned (%d stuck hook thread%s of at most %d)",
                late[i].name, h->timeout_ms, alive, alive == 1 ? "" : "s", KGX_HOOK_MAX_ABANDONED);
        if (alive < KGX_HOOK_MAX_ABANDONED && spawn(h, NULL) != 0) log_err("hooks: cannot start a replacement thread");
        if (late[i].cb) {
            char err[200];
            kgx_hook_outcome_t o = { 0 };
            const char *where = kgx_policy_src_hook_where(late[i].src, late[i].hook);
            snprintf(err, sizeof err, "%s%swatchdog: hook '%s' exceeded %d ms", where, *where ? ": " : "",
                     late[i].name, h->timeout_ms);
            o.rc = -1;
            o.failed = late[i].hook;
            o.abandoned = 1;
            o.err = err;
            o.src = late[i].src;
            late[i].cb(&o, late[i].ud);
        }
        kgx_policy_src_unref(late[i].src);
    }
    if (alive >= KGX_HOOK_MAX_ABANDONED && !h->capped) {
        h->capped = 1;
        if (h->on_cap) h->on_cap(h->ud);
    }
}

kgx_hooks_t *kgx_hooks_new(uv_loop_t *loop, kgx_script_t *first, void (*on_cap)(void *), void *ud,
                           char *err, size_t errlen)
{
    kgx_policy_src_t *src = kgx_script_src(first);
    kgx_hooks_t *h = calloc(1, sizeof *h);
    if (!h) { snprintf(err, errlen, "hooks: out of memory"); kgx_script_free(first); return NULL; }
    h->loop = loop;
    h->current = kgx_policy_src_ref(src);
    h->timeout_ms = kgx_policy_src_timeout_ms(src);
    h->on_cap = on_cap;
    h->ud = ud;
    atomic_init(&h->n_ctx, 0);
    uv_mutex_init(&h->mu);
    uv_async_init(loop, &h->done_async, done_cb);
    h->done_async.data = h;
    uv_timer_init(loop, &h->tick);
    h->tick.data = h;
    uv_timer_start(&h->tick, tick_cb, KGX_HOOK_TICK_MS, KGX_HOOK_TICK_MS);
    uv_unref((uv_handle_t *)&h->tick);
    uv_check_init(loop, &h->wake_check);
    h->wake_check.data = h;
    uv_check_start(&h->wake_check, wake_check_cb);
    uv_unref((uv_handle_t *)&h->wake_check);
    uv_idle_init(loop, &h->wake_idle);
    uv_unref((uv_handle_t *)&h->done_async);
    /* one thread now, with the state the caller loaded; more when calls wait behind slow ones (staff) */
    if (spawn(h, first) != 0) {
        snprintf(err, errlen, "hooks: cannot start a hook thread");
        kgx_hooks_free(h);
        return NULL;
    }
    return h;
}

static void closed_cb(uv_handle_t *hd) { (void)hd; }

void kgx_hooks_free(kgx_hooks_t *h)
{
    if (!h) return;
    struct { kgx_hook_cb cb; void *ud; } gone[64];
    int ngone = 0;
    uv_mutex_lock(&h->mu);
    h->quit = 1;
    hook_thread_t *idle = NULL;
    for (hook_thread_t *t = h->threads, *n; t; t = n) {
        n = t->next;
        if (t->call) {                    /* running: never wait for it */
            if (t->call->cb && ngone < 64) {
                gone[ngone].cb = t->call->cb;
                gone[ngone++].ud = t->call->ud;
            }
            t->call->cb = NULL;
            t->abandoned = 1;
            pthread_detach(t->tid);
            h->abandoned_alive++;
        } else {
            t->next = idle;
            idle = t;
        }
    }
    h->threads = NULL;
    kgx_hook_call_t *queued = h->head, *done = h->done;
    h->head = h->tail = h->done = NULL;
    for (hook_thread_t *t = idle; t; t = t->next) uv_cond_signal(&t->cv);
    uv_mutex_unlock(&h->mu);
    for (hook_thread_t *t = idle, *n; t; t = n) {
        n = t->next;
        uv_thread_join(&t->tid);
        uv_cond_destroy(&t->cv);
        free(t);
    }
    /* a callback runs exactly once unless cancelled: what never ran fails now */
    kgx_hook_outcome_t stop = { .rc = -1, .failed = KGX_HOOK_LOAD, .err = "stopping" };
    for (int i = 0; i < ngone; i++) gone[i].cb(&stop, gone[i].ud);
    for (kgx_hook_call_t *c = queued, *n; c; c = n) {
        n = c->next;
        if (c->cb) { stop.src = c->src; c->cb(&stop, c->ud); }
        call_free(c);
    }
    for (kgx_hook_call_t *c = done, *n; c; c = n) { n = c->next; deliver(c); }
    uv_close((uv_handle_t *)&h->done_async, closed_cb);
    uv_close((uv_handle_t *)&h->tick, closed_cb);
    uv_close((uv_handle_t *)&h->wake_check, closed_cb);
    uv_close((uv_handle_t *)&h->wake_idle, closed_cb);
    uv_run(h->loop, UV_RUN_NOWAIT);
    kgx_policy_src_unref(h->current);
    h->current = NULL;
    uv_mutex_lock(&h->mu);
    int stuck = h->abandoned_alive;
    uv_mutex_unlock(&h->mu);
    if (stuck > 0) {
        /* stuck threads still hold h->mu's address: keep the pool (reachable) for the process life */
        log_warn("hooks: leaving %d stuck hook thread%s behind", stuck, stuck == 1 ? "" : "s");
        for (size_t i = 0; i < sizeof leaked_pools / sizeof *leaked_pools; i++)
            if (!leaked_pools[i]) { leaked_pools[i] = h; return; }
        return;
    }
    uv_mutex_destroy(&h->mu);
    free(h);
}

int kgx_hooks_threads(kgx_hooks_t *h)
{
    uv_mutex_lock(&h->mu);
    int n = h->live;
    uv_mutex_unlock(&h->mu);
    return n;
}

kgx_policy_src_t *kgx_hooks_src(const kgx_hooks_t *h) { return h ? h->current : NULL; }

void kgx_hooks_set_n_ctx(kgx_hooks_t *h, int n_ctx)
{
    if (h) atomic_store(&h->n_ctx, n_ctx > 0 ? n_ctx : 0);
}

int kgx_hooks_abandoned(kgx_hooks_t *h)
{
    uv_mutex_lock(&h->mu);
    int n = h->abandoned_alive;
    uv_mutex_unlock(&h->mu);
    return n;
}

static kgx_hook_call_t *call_new(kgx_hooks_t *h, call_kind_t kind, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                 const char *logctx, kgx_hook_cb cb, void *ud)
{
    kgx_hook_call_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->h = h;
    c->kind = kind;
    c->src = kgx_policy_src_ref(src ? src : h->current);
    c->cb = cb;
    c->ud = ud;
    if (logctx) snprintf(c->logctx, sizeof c->logctx, "%s", logctx);
    if (d) {
        atomic_fetch_add(&d->refs, 1);
        c->box = d;
        c->drawer = d->d;
    }
    return c;
}

static int set_ctx(kgx_hook_call_t *c, const kgx_ctx_t *ctx)
{
    if (!ctx) return 0;
    c->ctx = *ctx;
    c->ctx.endpoint = NULL;
    if (ctx->endpoint && !(c->endpoint = strdup(ctx->endpoint))) return -1;
    c->ctx.endpoint = c->endpoint;
    return 0;
}

static int set_chunk(kgx_hook_call_t *c, const kgx_chunk_t *ch)
{
    if (!ch) return 0;
    c->chunk = *ch;
    if (!(c->chunk.text = malloc(ch->len + 1))) return -1;
    memcpy(c->chunk.text, ch->text, ch->len);
    c->chunk.text[ch->len] = '\0';
    return 0;
}

/* A call joins the queue; who takes it is settled once the loop has delivered this turn's events
 * (wake_check_cb), so that the calls one turn submits (the answers curl hands over together) cost
 * one wake-up of a sleeping thread, not one each. A thread that is awake takes them meanwhile. */
static kgx_hook_call_t *submit(kgx_hooks_t *h, kgx_hook_call_t *c)
{
    uv_mutex_lock(&h->mu);
    c->state = CALL_QUEUED;
    if (h->tail) h->tail->next = c;
    else h->head = c;
    h->tail = c;
    uv_mutex_unlock(&h->mu);
    if (!h->wake_due) {
        h->wake_due = 1;
        uv_idle_start(&h->wake_idle, wake_idle_cb);
    }
    return c;
}

kgx_hook_call_t *kgx_hooks_split(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                 const kgx_ctx_t *ctx, const char *logctx, kgx_hook_cb cb, void *ud)
{
    if (!d) return NULL;
    kgx_hook_call_t *c = call_new(h, CALL_SPLIT, src, d, logctx, cb, ud);
    if (!c || set_ctx(c, ctx) != 0) { call_free(c); return NULL; }
    return submit(h, c);
}

kgx_hook_call_t *kgx_hooks_request(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                   const kgx_chunk_t *ch, const kgx_ctx_t *ctx, const char *logctx,
                                   kgx_hook_cb cb, void *ud)
{
    if (!d) return NULL;
    kgx_hook_call_t *c = call_new(h, CALL_REQUEST, src, d, logctx, cb, ud);
    if (!c || set_ctx(c, ctx) != 0 || set_chunk(c, ch) != 0) { call_free(c); return NULL; }
    return submit(h, c);
}

kgx_hook_call_t *kgx_hooks_answer(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d,
                                  const kgx_chunk_t *ch, const char *body, size_t len, const char *logctx,
                                  kgx_hook_cb cb, void *ud)
{
    if (!d) return NULL;
    kgx_hook_call_t *c = call_new(h, CALL_ANSWER, src, d, logctx, cb, ud);
    if (!c || set_chunk(c, ch) != 0 || !(c->body = malloc(len + 1))) { call_free(c); return NULL; }
    if (len) memcpy(c->body, body, len);
    c->body[len] = '\0';
    c->body_len = len;
    return submit(h, c);
}

kgx_hook_call_t *kgx_hooks_accept(kgx_hooks_t *h, kgx_policy_src_t *src, kgx_drawer_box_t *d, const char *subject,
                                  const char *predicate, const char *object, double confidence,
                                  const char *logctx, kgx_hook_cb cb, void *ud)
{
    if (!d) return NULL;
    kgx_hook_call_t *c = call_new(h, CALL_ACCEPT, src, d, logctx, cb, ud);
    if (!c) return NULL;
    const char *raw[3] = { subject, predicate, object };
    for (int i = 0; i < 3; i++)
        if (!(c->raw[i] = strdup(raw[i] ? raw[i] : ""))) { call_free(c); return NULL; }
    c->confidence = confidence;
    return submit(h, c);
}

typedef struct { kgx_hooks_t *h; kgx_hook_cb cb; void *ud; } reload_t;

static void reload_cb(kgx_hook_outcome_t *o, void *ud)
{
    reload_t *r = ud;
    char err[600];
    if (o->rc == 0 && kgx_policy_src_check_reload(r->h->current, o->src, err, sizeof err) != 0) {
        o->rc = -1;                       /* loaded, but it would drop a hook: the old text stays */
        o->failed = KGX_HOOK_LOAD;
        o->err = err;
    }
    if (o->rc == 0) {
        kgx_policy_src_unref(r->h->current);
        r->h->current = kgx_policy_src_ref(o->src);
    }
    if (r->cb) r->cb(o, r->ud);
    free(r);
}

int kgx_hooks_reload(kgx_hooks_t *h, kgx_hook_cb cb, void *ud, char *err, size_t errlen)
{
    kgx_policy_src_t *src = kgx_policy_src_reread(h->current, err, errlen);
    if (!src) return -1;
    reload_t *r = calloc(1, sizeof *r);
    kgx_hook_call_t *c = r ? call_new(h, CALL_LOAD, src, NULL, "", reload_cb, r) : NULL;
    kgx_policy_src_unref(src);
    if (!c) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->h = h;
    r->cb = cb;
    r->ud = ud;
    submit(h, c);
    return 0;
}

void kgx_hooks_cancel(kgx_hook_call_t *c)
{
    if (!c) return;
    kgx_hooks_t *h = c->h;
    uv_mutex_lock(&h->mu);
    if (c->state == CALL_QUEUED) {        /* no thread has it yet: unlink and free now */
        kgx_hook_call_t **pp = &h->head, *prev = NULL;
        while (*pp && *pp != c) { prev = *pp; pp = &(*pp)->next; }
        if (*pp) {
            *pp = c->next;
            if (h->tail == c) h->tail = prev;
            uv_mutex_unlock(&h->mu);
            call_free(c);
            return;
        }
    }
    uv_mutex_unlock(&h->mu);
    c->cb = NULL;
}
