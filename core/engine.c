/* engine — see engine.h. The loop: claims, the pump, timers, signals, status, life cycle; one
 * drawer's own way is job.c's. */
#include "engine_int.h"
#include "drops.h"
#include "graph.h"
#include "jsonl.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "progress.h"
#include "sink.h"
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void pump(kgx_engine_t *e);
static void finish(kgx_engine_t *e, int code);

static int stopping(const kgx_engine_t *e) { return e->phase >= ENGINE_STOPPING; }
static int finished(const kgx_engine_t *e) { return e->phase == ENGINE_FINISHED; }

/* Fresh time: a hook may have run for a while since the loop last looked at the clock. */
static uint64_t now_ms(kgx_engine_t *e)
{
    uv_update_time(&e->loop);
    return uv_now(&e->loop);
}

uint64_t kgx_engine_now(kgx_engine_t *e) { return now_ms(e); }
static void wake_cb(uv_timer_t *t);
/* A job's callback (an answer, a hook's result, a write) asks for a pump: it runs once the loop has
 * delivered every event of this turn (a zero timer runs before the next poll), so that the answers
 * curl hands over together cost one walk over the jobs, not one each (B1: ~600 job visits a drawer
 * when every callback pumped at once). */
void kgx_engine_pump(kgx_engine_t *e)
{
    if (finished(e)) return;
    if (e->pumping) e->repump = 1;
    else if (!e->pump_due) {
        e->pump_due = 1;
        uv_timer_start(&e->wake, wake_cb, 0, 0);
    }
}
void kgx_engine_finish(kgx_engine_t *e, int code) { finish(e, code); }
int kgx_engine_stopping(const kgx_engine_t *e) { return stopping(e); }

/* ------------------------------------------------------------------ claiming */

static size_t ready_units(kgx_engine_t *e)
{
    size_t n = 0;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) n += job_ready_units(j);
    return n;
}

static void maybe_claim(kgx_engine_t *e)
{
    kgx_config_t *c = e->cfg;
    if (stopping(e) || e->claiming || e->idle) return;
    if (c->mode == KGX_MODE_ONCE && e->claims > 0) return;
    if (kgx_endpoints_up(&e->eps) == 0) return;          /* outage: keep the queue's attempts */
    int cap = kgx_endpoints_capacity(&e->eps);
    if (cap > e->max_in_flight) cap = e->max_in_flight;
    if (ready_units(e) >= (size_t)cap) return;
    if (kgx_budget_waiting(e)) return;                   /* budget: claimed drawers wait for room first */
    int room = e->max_in_flight + 2 * c->batch_size - e->njobs;
    if (room <= 0) return;
    int want = room < c->batch_size ? room : c->batch_size;
    int code;
    if (e->sink->exhausted(e, &code)) return;
    if (e->sink->claim(e, want)) e->repump = 1;   /* added synchronously: dispatch them now */
    if (!e->sink->durable) e->claims++;
}

/* ------------------------------------------------------------------ the pump */

static void wake_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    e->pump_due = 0;
    pump(e);
}

static void arm_wake(kgx_engine_t *e)
{
    uint64_t now = now_ms(e), next = 0;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) {
        uint64_t at = job_wake_at(j);
        if (at > now && (!next || at < next)) next = at;
    }
    if (next && !e->pump_due) uv_timer_start(&e->wake, wake_cb, next - now, 0);
}

static void maybe_finish(kgx_engine_t *e);
static void maybe_stop(kgx_engine_t *e);

static void pump(kgx_engine_t *e)
{
    if (finished(e)) return;
    if (stopping(e)) {            /* completions while stopping: see whether we can go now */
        maybe_stop(e);
        return;
    }
    if (e->pumping) {
        e->repump = 1;
        return;
    }
    e->pumping = 1;
    do {
        e->repump = 0;
        if (stopping(e)) break;
        kgx_budget_admit(e);      /* budget: read the text of claimed drawers that fit */
        uint64_t now = now_ms(e);
        /* what each job needs: splits, writes (and write retries) that are due, the finished freed */
        for (job_t *j = e->jobs.next, *nx; j != &e->jobs; j = nx) {
            nx = j->next;
            switch (job_next_action(j, now)) {
            case JOB_ACT_SPLIT: job_split(j); break;
            case JOB_ACT_WRITE: job_write(j); break;
            case JOB_ACT_FREE: job_free(j); break;
            default: break;
            }
        }
        /* fill the free slots, oldest drawer first */
        for (job_t *j = e->jobs.next, *nx; j != &e->jobs && e->in_flight < e->max_in_flight; j = nx) {
            nx = j->next;
            chunk_t *c;
            while (e->in_flight < e->max_in_flight && (c = job_next_chunk(j))) {
                kgx_endpoint_t *ep = kgx_endpoints_pick(&e->eps);
                if (!ep) goto full;
                job_send_chunk(e, j, c, ep);
            }
        }
    full:
        maybe_claim(e);
    } while (e->repump);
    e->pumping = 0;
    uint64_t now = now_ms(e);
    for (job_t *j = e->jobs.next, *nx; j != &e->jobs; j = nx) {
        nx = j->next;
        if (job_next_action(j, now) == JOB_ACT_FREE) job_free(j);
    }
    maybe_finish(e);
    if (!finished(e)) arm_wake(e);
}

/* ------------------------------------------------------------------ end of modes */

static void print_progress(kgx_engine_t *e, const kgx_queue_counts_t *c, int final)
{
    uint64_t now = now_ms(e);
    double dt = (double)(now - e->prev_t) / 1000.0;
    double rate = e->prev_t ? kgx_progress_rate(e->prev_completed, c->completed_total, dt) : 0.0;
    if (rate < 0) rate = 0;
    kgx_progress_t p = { c->completed_total, c->in_progress, c->queue_depth, c->errors_total, rate,
                         (double)(now - e->start_t) / 1000.0 };
    char line[512];
    if (final) kgx_progress_final(line, sizeof line, &p);
    else kgx_progress_line(line, sizeof line, &p);
    const char *js = getenv("JOURNAL_STREAM");
    fprintf(stderr, "%s%s%s\n", e->tty ? "\r\033[K" : "", js && *js ? "<6>" : "", line);
    char st[600];                 /* `systemctl status kgx` shows the latest line */
    snprintf(st, sizeof st, "STATUS=%s", line);
    kgx_notify(st);
    e->prev_completed = c->completed_total;
    e->prev_t = now;
}

static void backfill_check_cb(const kgx_queue_counts_t *c, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    e->counts_busy = 0;
    if (finished(e) || stopping(e)) return;
    if (err) {
        log_warn("counting the queue failed: %s", err);
    } else {
        e->counts = *c;
        e->have_counts = 1;
        if (c->queue_depth == 0 && c->in_progress == 0 && e->njobs == 0) {
            print_progress(e, c, 1);
            finish(e, 0);
            return;
        }
    }
    /* rows still waiting for a retry or held by other processes: the poll timer looks again */
}

static void maybe_finish(kgx_engine_t *e)
{
    if (finished(e) || stopping(e) || e->njobs || e->claiming) return;
    switch (e->cfg->mode) {
    case KGX_MODE_ONCE:
        if (e->claims > 0) finish(e, 0);
        break;
    case KGX_MODE_DRY_RUN: {
        int code;
        if (e->sink->exhausted(e, &code)) finish(e, code);
        break;
    }
    case KGX_MODE_BACKFILL:
        if (e->idle && !e->counts_busy) {
            e->counts_busy = 1;
            if (kgx_queue_counts(e->db, e->cfg->lease_seconds, backfill_check_cb, e)) e->counts_busy = 0;
        }
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ timers, signals */

static void poll_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    e->idle = 0;
    pump(e);
}

static void progress_counts_cb(const kgx_queue_counts_t *c, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (err) {
        log_warn("progress: counting the queue failed: %s", err);
        return;
    }
    e->counts = *c;
    e->have_counts = 1;
    kgx_metrics.queue_depth = c->queue_depth;
    /* while working (or in a backfill): quiet when an idle daemon has nothing to say */
    if (e->cfg->mode == KGX_MODE_BACKFILL || e->njobs || c->completed_total != e->prev_completed || !e->prev_t)
        print_progress(e, c, 0);
    else
        e->prev_t = now_ms(e);
}

static void progress_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (e->sink->durable && !stopping(e)) kgx_queue_counts(e->db, e->cfg->lease_seconds, progress_counts_cb, e);
}

/* The counters the status endpoint serves, refreshed every 5 s; on a terminal during a backfill (never
 * under systemd or when piped) every second, redrawing the live bar in place. */
static void refresh_counts_cb(const kgx_queue_counts_t *c, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (err) return;
    e->counts = *c;
    e->have_counts = 1;
    kgx_metrics.queue_depth = c->queue_depth;
    if (!e->bar || finished(e) || stopping(e)) return;
    kgx_progress_t p = { c->completed_total, c->in_progress, c->queue_depth, c->errors_total,
                         c->drawers_per_min_5m, (double)(now_ms(e) - e->start_t) / 1000.0 };
    char bar[256];
    kgx_progress_bar(bar, sizeof bar, &p, 30);
    fprintf(stderr, "\r%s\033[K", bar);
}

static void refresh_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (e->sink->durable && !stopping(e)) kgx_queue_counts(e->db, e->cfg->lease_seconds, refresh_counts_cb, e);
}

static void heartbeat_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (e->sink->durable && !stopping(e) && e->njobs) kgx_queue_heartbeat(e->db, e->worker_id, NULL, NULL);
}

static void watchdog_cb(uv_timer_t *t) { kgx_notify("WATCHDOG=1"); }

static void endpoints_changed(kgx_endpoint_t *ep, void *ud)
{
    kgx_engine_t *e = ud;
    if (finished(e)) return;
    job_resolve_suspects(e, ep);
    if (ep->state == KGX_EP_UP) {
        int n = kgx_endpoints_n_ctx(&e->eps);
        if (n > 0) kgx_hooks_set_n_ctx(e->hooks, n);
    }
    if (!e->sink->durable && ep->state == KGX_EP_DOWN && kgx_endpoints_up(&e->eps) == 0) {
        fprintf(stderr, "error: cannot reach the LLM at %s: %s\n", ep->base, ep->last_error);
        finish(e, 1);
        return;
    }
    pump(e);
}

static void maybe_stop(kgx_engine_t *e)
{
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next)
        if (job_db_busy(j)) return;   /* let the database answer */
    if (e->claiming) return;
    /* drop what is left in memory and give its rows back */
    while (e->jobs.next != &e->jobs) job_free(e->jobs.next);
    if (finished(e)) return;
    if (e->phase == ENGINE_STOPPING) {
        e->phase = ENGINE_RELEASING;
        if (!e->sink->release(e)) finish(e, 0);   /* else its callback finishes */
    }
}

static void deadline_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    log_warn("stop deadline reached; leaving the remaining rows to their lease");
    finish(e, 0);
}

static void begin_stop(kgx_engine_t *e, const char *why)
{
    if (stopping(e)) return;
    log_info("%s: stopping (no new claims, cancelling requests, giving rows back)", why);
    kgx_notify("STOPPING=1");
    e->phase = ENGINE_STOPPING;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) job_cancel(j);
    uv_timer_start(&e->stop_deadline, deadline_cb, STOP_DEADLINE_MS, 0);
    maybe_stop(e);
}


static const char *policy_name(const kgx_engine_t *e) { return kgx_policy_src_name(kgx_hooks_src(e->hooks)); }
static const char *policy_version(const kgx_engine_t *e) { return kgx_policy_src_version(kgx_hooks_src(e->hooks)); }

/* The new text loads on a hook thread (its top-level code is policy code too); drawers in flight
 * finish with the text they started with. Reloads may overlap (a SIGHUP and a file change): each
 * carries its own reason. */
typedef struct { kgx_engine_t *e; const char *why; } reload_t;

static void reloaded_cb(kgx_hook_outcome_t *o, void *ud)
{
    reload_t *r = ud;
    kgx_engine_t *e = r->e;
    if (o->rc)
        log_err("policy reload (%s) failed, keeping %s %s: %s", r->why, policy_name(e), policy_version(e), o->err);
    else
        log_info("policy reloaded (%s): %s version %s", r->why, policy_name(e), policy_version(e));
    kgx_notify("READY=1");
    free(r);
}

static void reload_policy(kgx_engine_t *e, const char *why)
{
    char err[1024];
    reload_t *r = malloc(sizeof *r);
    kgx_notify("RELOADING=1");
    if (r) *r = (reload_t){ e, why };
    if (!r || kgx_hooks_reload(e->hooks, reloaded_cb, r, err, sizeof err)) {
        log_err("policy reload (%s) failed, keeping %s %s: %s", why, policy_name(e), policy_version(e),
                r ? err : "out of memory");
        free(r);
        kgx_notify("READY=1");
    }
}

static void reload_debounce_cb(uv_timer_t *t) { reload_policy(t->data, "file changed"); }

static void watch_cb(uv_fs_event_t *w, const char *filename, int events, int status)
{
    kgx_engine_t *e = w->data;
    size_t n = filename ? strlen(filename) : 0;
    if (status < 0 || n < 4 || strcmp(filename + n - 4, ".lua")) return;
    uv_timer_start(&e->reload_debounce, reload_debounce_cb, RELOAD_DEBOUNCE_MS, 0);
}

static void start_watching(kgx_engine_t *e)
{
    char dir[4096];
    kgx_policy_src_t *src = kgx_hooks_src(e->hooks);
    snprintf(dir, sizeof dir, "%s", kgx_policy_src_path(src));
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    uv_fs_event_init(&e->loop, &e->watch_policy);
    uv_fs_event_init(&e->loop, &e->watch_plugins);
    e->watch_policy.data = e->watch_plugins.data = e;
    int a = uv_fs_event_start(&e->watch_policy, watch_cb, dir, 0);
    int b = kgx_policy_src_plugins_dir(src)
        ? uv_fs_event_start(&e->watch_plugins, watch_cb, kgx_policy_src_plugins_dir(src), 0) : -1;
    if (a < 0 && b < 0) log_warn("cannot watch the policy files (%s); reload with SIGHUP", uv_strerror(a));
    else log_debug("watching %s for policy changes", dir);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    kgx_engine_t *e = s->data;
    if (signum == SIGHUP) {
        reload_policy(e, "SIGHUP");
        return;
    }
    begin_stop(e, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Stops the loop once the database has answered everything asked of it (at most ~3 s): a statement
 * still queued when the pool closes would be dropped, and with it the memory of its request. */
static void drain_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (kgx_db_pending(e->db) > 0 && e->drain_ticks++ < DRAIN_TICKS_MAX) return;
    uv_timer_stop(t);
    uv_stop(&e->loop);
}

/* Ends the run: no more timers that ask the database anything; the worker's row in kgx_workers
 * goes (best effort); the loop stops when the pool is idle. */
static void finish(kgx_engine_t *e, int code)
{
    if (finished(e)) return;
    e->phase = ENGINE_FINISHED;
    e->exit_code = code ? code : e->stop_code;
    uv_timer_t *quiet[] = { &e->poll, &e->progress, &e->heartbeat, &e->refresh, &e->publish,
                            &e->wake, &e->stop_deadline };
    for (size_t i = 0; i < sizeof quiet / sizeof *quiet; i++) uv_timer_stop(quiet[i]);
    if (e->sink->durable && kgx_db_is_up(e->db)) kgx_queue_forget_worker(e->db, e->worker_id, NULL, NULL);
    uv_timer_start(&e->stop_deadline, drain_cb, 0, DRAIN_TICK_MS);
}

/* ------------------------------------------------------------------ status */

static void engine_view(const kgx_engine_t *e, kgx_process_view_t *v)
{
    memset(v, 0, sizeof *v);
    v->worker_id = e->worker_id;
    v->policy_name = policy_name(e);
    v->policy_version = policy_version(e);
    v->in_flight = e->in_flight;
    v->drawers_in_memory = e->njobs;
    v->stopping = stopping(e);
    v->completed = e->done_here;
    v->parked = e->parked_here;
    v->retries = e->retries_here;
    v->jobs_active = e->jobs_in[JOB_WAIT_SPLIT] + e->jobs_in[JOB_SPLITTING] + e->jobs_in[JOB_CHUNKS]
                   + e->jobs_in[JOB_RETRY_WAIT];
    v->jobs_recording_failure = e->jobs_in[JOB_FAILING];
    v->jobs_writing = e->jobs_in[JOB_WRITING];
    v->jobs_write_retry = e->jobs_in[JOB_WRITE_WAIT];
    v->uptime_s = (double)(uv_now((uv_loop_t *)&e->loop) - e->start_t) / 1000.0;
    v->eps = &e->eps;
}

static void publish_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (!e->sink->durable || stopping(e) || !kgx_db_is_up(e->db)) return;
    kgx_process_view_t v;
    engine_view(e, &v);
    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "{");
    kgx_status_process_json(&b, &v);
    kgx_buf_adds(&b, "}");
    kgx_queue_publish_worker(e->db, e->worker_id, b.p, NULL, NULL);
    kgx_buf_free(&b);
    kgx_drops_check_policies(e->db);             /* [dropin] two policies on one queue: warn */
}

static void http_handler(const char *path, kgx_httpd_resp_t *resp, void *ud)
{
    kgx_engine_t *e = ud;
    if (!strcmp(path, "/kg-extract/status") || !strcmp(path, "/status")) {
        kgx_queue_counts_t zero = { 0 };
        kgx_process_view_t v;
        engine_view(e, &v);
        resp->status = 200;
        resp->content_type = "application/json";
        resp->body = kgx_status_json(e->have_counts ? &e->counts : &zero, &v, NULL, v.policy_name,
                                     v.policy_version, &resp->body_len);
    } else if (!strcmp(path, "/metrics")) {
        kgx_metrics.in_flight = e->in_flight;
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        /* per-endpoint gauges and counters (slots busy per endpoint on the dashboard) */
        kgx_metrics_endpoint_t *mep = calloc(e->eps.n > 0 ? (size_t)e->eps.n : 1, sizeof *mep);
        for (int i = 0; mep && i < e->eps.n; i++) {
            const kgx_endpoint_t *ep = &e->eps.ep[i];
            mep[i] = (kgx_metrics_endpoint_t){ ep->base, ep->state == KGX_EP_UP, ep->slots, ep->in_flight,
                                               ep->requests };
        }
        resp->body = kgx_metrics_render_endpoints(&resp->body_len, mep, mep ? e->eps.n : 0);
        free(mep);
    } else if (!strcmp(path, "/healthz")) {
        int ok = kgx_db_is_up(e->db) && !stopping(e);
        resp->status = ok ? 200 : 503;
        resp->content_type = "text/plain";
        resp->body = strdup(ok ? "ok\n" : "unavailable\n");
        resp->body_len = strlen(resp->body);
    }
}

/* ------------------------------------------------------------------ life cycle */

/* Too many hook threads stuck in C calls (see hooks.h): a restart is the only way to get the cores
 * back, so stop claiming, give the rows back and exit 1 (systemd restarts the service). */
static void hooks_cap_cb(void *ud)
{
    kgx_engine_t *e = ud;
    log_err("hooks: %d hook threads are stuck in policy code (the cap); stopping: no new claims, claimed rows "
            "given back, exit 1 so the service is restarted", KGX_HOOK_MAX_ABANDONED);
    e->stop_code = 1;
    begin_stop(e, "stuck policy hooks");
}

kgx_engine_t *kgx_engine_new(kgx_config_t *cfg, const char *policy_path, char *err, size_t errlen, int *exit_code)
{
    kgx_engine_t *e = calloc(1, sizeof *e);
    e->cfg = cfg;
    e->max_in_flight = cfg->max_in_flight;   /* --workers: LLM requests in flight (the flag keeps its name) */
    kgx_budget_init(&e->budget, cfg->memory_budget);   /* budget: --memory-budget */
    e->jobs.next = e->jobs.prev = &e->jobs;
    *exit_code = 1;
    uv_loop_init(&e->loop);
    e->retry_base_ms = cfg->retry_base_ms;   /* config.c: KGX_RETRY_BASE_MS, default 1000 */
    e->tty = isatty(2) && !getenv("JOURNAL_STREAM");
    if (cfg->worker_id) {
        snprintf(e->worker_id, sizeof e->worker_id, "%s", cfg->worker_id);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(e->worker_id, sizeof e->worker_id, "%s:%d:%08x", host, (int)getpid(), (unsigned)rand());
    }

    kgx_script_opts_t so = { 0 };
    so.policy_path = policy_path;
    so.model = cfg->model;
    so.n_ctx = cfg->n_ctx;
    so.min_confidence = cfg->min_confidence;
    so.max_triples = cfg->max_triples;
    so.hook_timeout_ms = cfg->hook_timeout_ms;
    char serr[1024];
    /* the policy loads once here (a bad one is a configuration error, exit 2) and that state goes to the
     * first hook thread; later threads build theirs from the same text */
    kgx_policy_src_t *src = kgx_policy_src_read(&so, serr, sizeof serr);
    kgx_script_t *probe = src ? kgx_script_new_src(src, serr, sizeof serr) : NULL;
    if (probe) e->hooks = kgx_hooks_new(&e->loop, probe, hooks_cap_cb, e, serr, sizeof serr);   /* takes it */
    kgx_policy_src_unref(src);
    if (!e->hooks) {
        snprintf(err, errlen, "error: policy %s: %s", policy_path, serr);
        *exit_code = probe ? 1 : 2;
        kgx_engine_free(e);
        return NULL;
    }
    e->http = kgx_http_new(&e->loop);
    kgx_endpoints_init(&e->eps, &e->loop, e->http, cfg->endpoints, cfg->n_endpoints, cfg->max_in_flight,
                       cfg->slots, cfg->n_ctx, endpoints_changed, e);
    e->sink = cfg->mode == KGX_MODE_DRY_RUN ? &kgx_sink_dry : &kgx_sink_db;
    if (e->sink->open(e, err, errlen)) {
        *exit_code = cfg->mode == KGX_MODE_DRY_RUN ? 2 : 1;
        kgx_engine_free(e);
        return NULL;
    }
    /* economy (issue 14): twins always share one answer; stored answers are looked up where the sink
     * keeps them (not with --dry-run or --no-keep-answers); --fresh-answers: neither */
    if (!cfg->fresh_answers && e->sink->lookup) {
        kgx_reuse_cbs_t rc = { job_reuse_found, job_reuse_landed, e };
        e->reuse = kgx_reuse_new(&e->loop, cfg->keep_answers ? (kgx_reuse_query_fn)e->sink->lookup : NULL, e, &rc);
    }
    if (cfg->http_listen) {
        char herr[256];
        e->httpd = kgx_httpd_new(&e->loop, cfg->http_listen, cfg->api_key, http_handler, e, herr, sizeof herr);
        if (!e->httpd) {
            snprintf(err, errlen, "error: --http %s: %s", cfg->http_listen, herr);
            *exit_code = 2;
            kgx_engine_free(e);
            return NULL;
        }
    }
    uv_timer_t *timers[] = { &e->wake, &e->poll, &e->progress, &e->heartbeat, &e->refresh,
                             &e->stop_deadline, &e->watchdog, &e->publish, &e->reload_debounce };
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        uv_timer_init(&e->loop, timers[i]);
        timers[i]->data = e;
    }
    uv_signal_t *sigs[] = { &e->sig_term, &e->sig_int, &e->sig_hup };
    int signums[] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&e->loop, sigs[i]);
        sigs[i]->data = e;
        uv_signal_start(sigs[i], signal_cb, signums[i]);
    }
    *exit_code = 0;
    return e;
}

static void arm_poll(kgx_engine_t *e);

int kgx_engine_run(kgx_engine_t *e)
{
    kgx_config_t *c = e->cfg;
    e->start_t = now_ms(e);
    log_info("kgx %s worker=%s policy=%s version=%s endpoints=%d workers=%d mode=%s", KGX_VERSION, e->worker_id,
             policy_name(e), policy_version(e), c->n_endpoints, c->max_in_flight,
             c->mode == KGX_MODE_BACKFILL ? "backfill" : c->mode == KGX_MODE_ONCE ? "once"
             : c->mode == KGX_MODE_DRY_RUN ? "dry-run" : "daemon");
    kgx_endpoints_start(&e->eps);
    if (e->sink->durable) {
        uv_timer_start(&e->progress, progress_cb, (uint64_t)(c->progress_interval * 1000),
                       (uint64_t)(c->progress_interval * 1000));
        uint64_t hb = (uint64_t)(c->lease_seconds * 1000 / 3);
        uv_timer_start(&e->heartbeat, heartbeat_cb, hb, hb);
        e->bar = e->tty && c->mode == KGX_MODE_BACKFILL;
        if (e->httpd || e->bar) uv_timer_start(&e->refresh, refresh_cb, e->bar ? BAR_MS : 0, e->bar ? BAR_MS : REFRESH_MS);
        uv_timer_start(&e->publish, publish_cb, PUBLISH_FIRST_MS, PUBLISH_MS);
    }
    if (c->mode == KGX_MODE_DAEMON) start_watching(e);
    long wd = kgx_notify_watchdog_ms();
    if (wd > 0) uv_timer_start(&e->watchdog, watchdog_cb, (uint64_t)wd / 2, (uint64_t)wd / 2);
    kgx_notify("READY=1");
    arm_poll(e);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    return e->exit_code;
}

static void poll_timer_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    poll_cb(t);
    arm_poll(e);
}

static void arm_poll(kgx_engine_t *e)
{
    /* idle daemons poll at --poll-interval (NOTIFY wakes them sooner); a backfill checks each second */
    double s = e->cfg->mode == KGX_MODE_DAEMON ? e->cfg->poll_interval : 1.0;
    if (e->cfg->mode != KGX_MODE_DAEMON && e->cfg->poll_interval < s) s = e->cfg->poll_interval;
    uv_timer_start(&e->poll, poll_timer_cb, (uint64_t)(s * 1000), (uint64_t)(s * 1000));
}

static void close_cb(uv_handle_t *h) { (void)h; }

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, close_cb);
}

void kgx_engine_free(kgx_engine_t *e)
{
    if (!e) return;
    while (e->jobs.next != &e->jobs) job_free(e->jobs.next);
    kgx_endpoints_close(&e->eps);
    kgx_http_free(e->http);
    if (e->sink) e->sink->close(e);
    if (e->reuse) kgx_reuse_close(e->reuse);   /* after the pool: no lookup answers any more */
    kgx_budget_abandon(e);        /* budget: text reads the pool dropped */
    kgx_httpd_free(e->httpd);
    kgx_hooks_free(e->hooks);     /* never waits for a stuck hook */
    uv_run(&e->loop, UV_RUN_NOWAIT);
    uv_walk(&e->loop, walk_close, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    kgx_reuse_free(e->reuse);
    kgx_endpoints_free(&e->eps);
    free(e);
}
