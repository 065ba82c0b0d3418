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
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void pump(kgx_engine_t *e);
static void finish(kgx_engine_t *e, int code);

/* Fresh time: a hook may have run for a while since the loop last looked at the clock. */
static uint64_t now_ms(kgx_engine_t *e)
{
    uv_update_time(&e->loop);
    return uv_now(&e->loop);
}

uint64_t kgx_engine_now(kgx_engine_t *e) { return now_ms(e); }
void kgx_engine_pump(kgx_engine_t *e) { pump(e); }

/* ------------------------------------------------------------------ claiming */

static void deleted_write_cb(int n, const char *err, const char *sqlstate, void *ud)
{
    (void)n; (void)sqlstate; (void)ud;
    if (err) log_warn("retracting a deleted drawer's facts failed (retried after its lease): %s", err);
}

static void claim_cb(kgx_claim_row_t *rows, int n, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    e->claiming = 0;
    e->claims++;
    if (err) {
        log_warn("claim failed: %s", err);
        e->idle = 1;               /* the poll timer tries again */
    }
    for (int i = 0; i < n; i++) {
        if (e->stopping) break;
        job_t *j = job_new(e, &rows[i]);
        if (j->row.missing) {
            /* scale: the drawer is gone; the write retracts its facts and completes the row with status
             * 'deleted' (a write error leaves the claim to its lease: the next claim tries again) */
            log_info("drawer=%s not found in mempalace_drawers: retracting its facts (status deleted)", j->row.drawer_id);
            kgx_graph_write(e->db, e->cfg->graph, j->row.drawer_id, e->worker, j->row.token, "[]", NULL,
                            deleted_write_cb, NULL);
            job_free(j);
        }
    }
    if (e->stopping) {
        /* claimed while stopping: give them back at once */
        for (int i = 0; i < n; i++)
            if (rows[i].drawer_id) kgx_queue_unclaim(e->db, rows[i].drawer_id, rows[i].token, NULL, NULL);
    }
    kgx_claim_rows_free(rows, n);
    if (!err && n == 0) e->idle = 1;
    pump(e);
}

static int dry_claim(kgx_engine_t *e, int want)
{
    int got = 0;
    while (got < want && !e->dry_eof) {
        kgx_claim_row_t row = { 0 };
        char err[256];
        int rc = kgx_jsonl_next(e->dry_in, ++e->dry_seq, &row.drawer_id, &row.wing, &row.room,
                                &row.document, &row.document_len, err, sizeof err);
        if (rc == 0) {
            e->dry_eof = 1;
            break;
        }
        if (rc < 0) {
            fprintf(stderr, "error: --dry-run input line %ld: %s\n", e->dry_seq, err);
            e->dry_failed++;
            continue;
        }
        job_new(e, &row);
        got++;
    }
    return got;
}

static size_t ready_units(kgx_engine_t *e)
{
    size_t n = 0;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next) {
        if (j->state != JOB_ACTIVE) continue;
        if (!j->split_done) { n++; continue; }
        for (size_t i = 0; i < j->nchunks; i++) n += j->chunks[i].state == CH_PENDING;
    }
    return n;
}

static void maybe_claim(kgx_engine_t *e)
{
    kgx_config_t *c = e->cfg;
    if (e->stopping || e->claiming || e->idle) return;
    if (c->mode == KGX_MODE_ONCE && e->claims > 0) return;
    if (kgx_endpoints_up(&e->eps) == 0) return;          /* outage: keep the queue's attempts */
    int cap = kgx_endpoints_capacity(&e->eps);
    if (cap > c->workers) cap = c->workers;
    if (ready_units(e) >= (size_t)cap) return;
    if (kgx_budget_waiting(e)) return;                   /* budget: claimed drawers wait for room first */
    int room = c->workers + 2 * c->batch_size - e->njobs;
    if (room <= 0) return;
    int want = room < c->batch_size ? room : c->batch_size;
    if (!e->db) {
        if (e->dry_eof) return;
        if (dry_claim(e, want) > 0) e->repump = 1;   /* read synchronously: dispatch them now */
        e->claims++;
        return;
    }
    e->claiming = 1;
    if (kgx_queue_claim(e->db, e->worker, c->lease_seconds, want, claim_cb, e)) e->claiming = 0;
}

/* ------------------------------------------------------------------ the pump */

static void wake_cb(uv_timer_t *t) { pump(t->data); }

static void arm_wake(kgx_engine_t *e)
{
    uint64_t now = now_ms(e), next = 0;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next)
        if ((j->state == JOB_ACTIVE || j->state == JOB_WRITE_WAIT) && j->not_before > now)
            if (!next || j->not_before < next) next = j->not_before;
    if (next) uv_timer_start(&e->wake, wake_cb, next - now, 0);
}

static void maybe_finish(kgx_engine_t *e);
static void maybe_stop(kgx_engine_t *e);

static void pump(kgx_engine_t *e)
{
    if (e->finished) return;
    if (e->stopping) {            /* completions while stopping: see whether we can go now */
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
        if (e->stopping) break;
        kgx_budget_admit(e);      /* budget: read the text of claimed drawers that fit */
        uint64_t now = now_ms(e);
        /* splits and write retries that are due */
        for (job_t *j = e->jobs.next, *nx; j != &e->jobs; j = nx) {
            nx = j->next;
            if (j->state == JOB_DEAD) { job_free(j); continue; }
            if (j->not_before > now) continue;
            if (j->state == JOB_WRITE_WAIT) job_write(j);
            else if (j->state == JOB_ACTIVE && !j->split_done) job_split(j);
            else if (j->state == JOB_ACTIVE && j->nchunks && j->ndone == j->nchunks) job_write(j);
        }
        /* fill the free slots, oldest drawer first */
        for (job_t *j = e->jobs.next, *nx; j != &e->jobs && e->in_flight < e->cfg->workers; j = nx) {
            nx = j->next;
            if (j->state != JOB_ACTIVE || !j->split_done || j->not_before > now) continue;
            for (size_t i = 0; i < j->nchunks && e->in_flight < e->cfg->workers; i++) {
                if (j->chunks[i].state != CH_PENDING) continue;
                kgx_endpoint_t *ep = kgx_endpoints_pick(&e->eps);
                if (!ep) goto full;
                job_send_chunk(e, j, &j->chunks[i], ep);
                if (j->state != JOB_ACTIVE || j->not_before > now) break;
            }
        }
    full:
        maybe_claim(e);
    } while (e->repump);
    e->pumping = 0;
    for (job_t *j = e->jobs.next, *nx; j != &e->jobs; j = nx) {
        nx = j->next;
        if (j->state == JOB_DEAD) job_free(j);
    }
    maybe_finish(e);
    if (!e->finished) arm_wake(e);
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
    if (e->finished || e->stopping) return;
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
    if (e->finished || e->stopping || e->njobs || e->claiming) return;
    switch (e->cfg->mode) {
    case KGX_MODE_ONCE:
        if (e->claims > 0) finish(e, 0);
        break;
    case KGX_MODE_DRY_RUN:
        if (e->dry_eof) finish(e, e->dry_failed ? 1 : 0);
        break;
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

static void notify_cb(const char *channel, const char *payload, void *ud)
{
    kgx_engine_t *e = ud;
    if (e->idle) log_debug("woken by %s", channel ? "NOTIFY" : "LISTEN reconnect");
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
    if (e->db && !e->stopping) kgx_queue_counts(e->db, e->cfg->lease_seconds, progress_counts_cb, e);
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
    if (!e->bar || e->finished || e->stopping) return;
    kgx_progress_t p = { c->completed_total, c->in_progress, c->queue_depth, c->errors_total,
                         c->drawers_per_min_5m, (double)(now_ms(e) - e->start_t) / 1000.0 };
    char bar[256];
    kgx_progress_bar(bar, sizeof bar, &p, 30);
    fprintf(stderr, "\r%s\033[K", bar);
}

static void refresh_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (e->db && !e->stopping) kgx_queue_counts(e->db, e->cfg->lease_seconds, refresh_counts_cb, e);
}

static void heartbeat_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (e->db && !e->stopping && e->njobs) kgx_queue_heartbeat(e->db, e->worker, NULL, NULL);
}

static void watchdog_cb(uv_timer_t *t) { kgx_notify("WATCHDOG=1"); }

static void endpoints_changed(kgx_endpoint_t *ep, void *ud)
{
    kgx_engine_t *e = ud;
    if (e->finished) return;
    job_resolve_suspects(e, ep);
    if (ep->state == KGX_EP_UP) {
        int n = kgx_endpoints_n_ctx(&e->eps);
        if (n > 0) kgx_script_set_n_ctx(e->script, n);
    }
    if (!e->db && ep->state == KGX_EP_DOWN && kgx_endpoints_up(&e->eps) == 0) {
        fprintf(stderr, "error: cannot reach the LLM at %s: %s\n", ep->base, ep->last_error);
        finish(e, 1);
        return;
    }
    pump(e);
}

static void release_cb(long long n, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (err) log_err("giving back claimed rows failed: %s (their lease will expire)", err);
    else log_info("gave back %lld claimed row%s", n, n == 1 ? "" : "s");
    finish(e, 0);
}

static void maybe_stop(kgx_engine_t *e)
{
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next)
        if (j->state == JOB_WRITING || j->state == JOB_FAILING) return;   /* let the database answer */
    if (e->claiming) return;
    /* drop what is left in memory and give its rows back */
    while (e->jobs.next != &e->jobs) job_free(e->jobs.next);
    if (e->finished) return;
    if (!e->db) { finish(e, 0); return; }
    if (e->stopping == 1) {
        e->stopping = 2;
        if (kgx_queue_release_all(e->db, e->worker, release_cb, e)) finish(e, 0);
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
    if (e->stopping) return;
    log_info("%s: stopping (no new claims, cancelling requests, giving rows back)", why);
    kgx_notify("STOPPING=1");
    e->stopping = 1;
    for (job_t *j = e->jobs.next; j != &e->jobs; j = j->next)
        if (j->state != JOB_WRITING && j->state != JOB_FAILING)
            for (size_t i = 0; i < j->nchunks; i++) job_chunk_cancel(j, &j->chunks[i]);
    uv_timer_start(&e->stop_deadline, deadline_cb, STOP_DEADLINE_MS, 0);
    maybe_stop(e);
}


static void reload_policy(kgx_engine_t *e, const char *why)
{
    char err[1024];
    kgx_notify("RELOADING=1");
    if (kgx_script_reload(e->script, err, sizeof err))
        log_err("policy reload (%s) failed, keeping %s %s: %s", why, kgx_script_name(e->script),
                kgx_script_version(e->script), err);
    else
        log_info("policy reloaded (%s): %s version %s", why, kgx_script_name(e->script), kgx_script_version(e->script));
    kgx_notify("READY=1");
}

static void reload_debounce_cb(uv_timer_t *t) { reload_policy(t->data, "file changed"); }

static void watch_cb(uv_fs_event_t *w, const char *filename, int events, int status)
{
    kgx_engine_t *e = w->data;
    size_t n = filename ? strlen(filename) : 0;
    if (status < 0 || n < 4 || strcmp(filename + n - 4, ".lua")) return;
    uv_timer_start(&e->reload_debounce, reload_debounce_cb, 500, 0);
}

static void start_watching(kgx_engine_t *e)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", kgx_script_path(e->script));
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    uv_fs_event_init(&e->loop, &e->watch_policy);
    uv_fs_event_init(&e->loop, &e->watch_plugins);
    e->watch_policy.data = e->watch_plugins.data = e;
    int a = uv_fs_event_start(&e->watch_policy, watch_cb, dir, 0);
    int b = kgx_script_plugins_dir(e->script)
        ? uv_fs_event_start(&e->watch_plugins, watch_cb, kgx_script_plugins_dir(e->script), 0) : -1;
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
    if (e->db && kgx_db_pending(e->db) > 0 && e->drain_ticks++ < 150) return;
    uv_timer_stop(t);
    uv_stop(&e->loop);
}

/* Ends the run: no more timers that ask the database anything; the worker's row in kgx_workers
 * goes (best effort); the loop stops when the pool is idle. */
static void finish(kgx_engine_t *e, int code)
{
    if (e->finished) return;
    e->finished = 1;
    e->exit_code = code;
    uv_timer_t *quiet[] = { &e->poll, &e->progress, &e->heartbeat, &e->refresh, &e->publish,
                            &e->wake, &e->stop_deadline };
    for (size_t i = 0; i < sizeof quiet / sizeof *quiet; i++) uv_timer_stop(quiet[i]);
    if (e->db && kgx_db_is_up(e->db)) kgx_queue_forget_worker(e->db, e->worker, NULL, NULL);
    uv_timer_start(&e->stop_deadline, drain_cb, 0, 20);
}

/* ------------------------------------------------------------------ status */

static void engine_view(const kgx_engine_t *e, kgx_process_view_t *v)
{
    memset(v, 0, sizeof *v);
    v->worker_id = e->worker;
    v->policy_name = kgx_script_name(e->script);
    v->policy_version = kgx_script_version(e->script);
    v->in_flight = e->in_flight;
    v->drawers_in_memory = e->njobs;
    v->stopping = e->stopping != 0;
    v->completed = e->done_here;
    v->parked = e->parked_here;
    v->retries = e->retries_here;
    v->jobs_active = e->jobs_in[JOB_ACTIVE];
    v->jobs_recording_failure = e->jobs_in[JOB_FAILING];
    v->jobs_writing = e->jobs_in[JOB_WRITING];
    v->jobs_write_retry = e->jobs_in[JOB_WRITE_WAIT];
    v->uptime_s = (double)(uv_now((uv_loop_t *)&e->loop) - e->start_t) / 1000.0;
    v->eps = &e->eps;
}

static void publish_cb(uv_timer_t *t)
{
    kgx_engine_t *e = t->data;
    if (!e->db || e->stopping || !kgx_db_is_up(e->db)) return;
    kgx_process_view_t v;
    engine_view(e, &v);
    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "{");
    kgx_status_process_json(&b, &v);
    kgx_buf_adds(&b, "}");
    kgx_queue_publish_worker(e->db, e->worker, b.p, NULL, NULL);
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
        int ok = kgx_db_is_up(e->db) && !e->stopping;
        resp->status = ok ? 200 : 503;
        resp->content_type = "text/plain";
        resp->body = strdup(ok ? "ok\n" : "unavailable\n");
        resp->body_len = strlen(resp->body);
    }
}

/* ------------------------------------------------------------------ life cycle */

static void db_state_cb(int up, const char *err, void *ud)
{
    kgx_engine_t *e = ud;
    if (up) {                     /* db.c logs the state changes itself */
        e->idle = 0;
        pump(e);
    }
}

kgx_engine_t *kgx_engine_new(kgx_config_t *cfg, const char *policy_path, char *err, size_t errlen, int *exit_code)
{
    kgx_engine_t *e = calloc(1, sizeof *e);
    e->cfg = cfg;
    kgx_budget_init(&e->budget, cfg->memory_budget);   /* budget: --memory-budget */
    e->jobs.next = e->jobs.prev = &e->jobs;
    *exit_code = 1;
    uv_loop_init(&e->loop);
    const char *rb = getenv("KGX_RETRY_BASE_MS");
    e->retry_base_ms = rb && *rb ? atof(rb) : 1000.0;
    if (e->retry_base_ms < 1) e->retry_base_ms = 1;
    e->tty = isatty(2) && !getenv("JOURNAL_STREAM");
    if (cfg->worker_id) {
        snprintf(e->worker, sizeof e->worker, "%s", cfg->worker_id);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(e->worker, sizeof e->worker, "%s:%d:%08x", host, (int)getpid(), (unsigned)rand());
    }

    kgx_script_opts_t so = { 0 };
    so.policy_path = policy_path;
    so.model = cfg->model;
    so.n_ctx = cfg->n_ctx;
    so.min_confidence = cfg->min_confidence;
    so.max_triples = cfg->max_triples;
    char serr[1024];
    e->script = kgx_script_new(&so, serr, sizeof serr);
    if (!e->script) {
        snprintf(err, errlen, "error: policy %s: %s", policy_path, serr);
        *exit_code = 2;
        kgx_engine_free(e);
        return NULL;
    }
    e->http = kgx_http_new(&e->loop);
    kgx_endpoints_init(&e->eps, &e->loop, e->http, cfg->endpoints, cfg->n_endpoints, cfg->workers,
                       cfg->slots, cfg->n_ctx, endpoints_changed, e);
    if (cfg->mode == KGX_MODE_DRY_RUN) {
        if (!strcmp(cfg->dry_run_input, "-")) e->dry_in = stdin;
        else if (!(e->dry_in = fopen(cfg->dry_run_input, "r"))) {
            snprintf(err, errlen, "error: --dry-run: cannot open %s: %s", cfg->dry_run_input, strerror(errno));
            *exit_code = 2;
            kgx_engine_free(e);
            return NULL;
        }
    } else {
        kgx_db_opts_t dbo = { 0 };
        dbo.dsn = cfg->dsn;
        dbo.pool_size = 3;
        dbo.setup_sql = kgx_graph_session_sql;
        dbo.on_state = db_state_cb;
        dbo.state_ud = e;
        e->db = kgx_db_new(&e->loop, &dbo);
        if (!e->db) {
            snprintf(err, errlen, "error: cannot start the database pool");
            kgx_engine_free(e);
            return NULL;
        }
        if (cfg->mode == KGX_MODE_DAEMON) kgx_db_listen(e->db, "kgx_queue", notify_cb, e);
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
    log_info("kgx %s worker=%s policy=%s version=%s endpoints=%d workers=%d mode=%s", KGX_VERSION, e->worker,
             kgx_script_name(e->script), kgx_script_version(e->script), c->n_endpoints, c->workers,
             c->mode == KGX_MODE_BACKFILL ? "backfill" : c->mode == KGX_MODE_ONCE ? "once"
             : c->mode == KGX_MODE_DRY_RUN ? "dry-run" : "daemon");
    kgx_endpoints_start(&e->eps);
    if (e->db) {
        uv_timer_start(&e->progress, progress_cb, (uint64_t)(c->progress_interval * 1000),
                       (uint64_t)(c->progress_interval * 1000));
        uint64_t hb = (uint64_t)(c->lease_seconds * 1000 / 3);
        uv_timer_start(&e->heartbeat, heartbeat_cb, hb, hb);
        e->bar = e->tty && c->mode == KGX_MODE_BACKFILL;
        if (e->httpd || e->bar) uv_timer_start(&e->refresh, refresh_cb, e->bar ? 1000 : 0, e->bar ? 1000 : 5000);
        uv_timer_start(&e->publish, publish_cb, 200, 5000);
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
    kgx_db_free(e->db);
    kgx_budget_abandon(e);        /* budget: text reads the pool dropped */
    kgx_httpd_free(e->httpd);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    uv_walk(&e->loop, walk_close, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    kgx_endpoints_free(&e->eps);
    kgx_script_free(e->script);
    if (e->dry_in && e->dry_in != stdin) fclose(e->dry_in);
    free(e);
}
