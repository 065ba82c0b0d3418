/* engine_int — what engine.c (the loop: claims, pump, timers, signals, life cycle) and job.c (one
 * drawer's way through the policy, the LLM and the write) share. Not an API: only those two (and
 * budget.c, which admits claimed drawers' text) include it. */
#ifndef KGX_ENGINE_INT_H
#define KGX_ENGINE_INT_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>
#include "budget.h"
#include "buf.h"
#include "config.h"
#include "db.h"
#include "endpoint.h"
#include "engine.h"
#include "http.h"
#include "httpd.h"
#include "queue.h"
#include "script.h"

#define MAX_ANSWER_BYTES (8u << 20)     /* hostile answers keep memory bounded */
#define MAX_SHRINK 6
#define MAX_WRITE_RETRIES 30
#define STOP_DEADLINE_MS 8000

/* JOB_DEAD: finished with, freed by the next pump (never freed under a caller's feet). */
typedef enum { JOB_ACTIVE, JOB_FAILING, JOB_WRITE_WAIT, JOB_WRITING, JOB_DEAD } job_state_t;
typedef enum { CH_PENDING, CH_INFLIGHT, CH_SUSPECT, CH_DONE } chunk_state_t;

typedef struct job job_t;

typedef struct {
    int state;
    size_t idx;
    job_t *job;
    kgx_http_req_t *req;
    kgx_endpoint_t *ep;
    uint64_t t0;
    char *suspect;              /* the failure waiting for /health's verdict */
} chunk_t;

struct job {
    job_t *prev, *next;
    kgx_engine_t *e;
    kgx_claim_row_t row;
    int state;
    int split_done;
    int script_job;
    chunk_t *chunks;
    size_t nchunks, ndone;
    int shrink, attempts, write_retries;
    uint64_t not_before;        /* ms, loop time */
    kgx_buf_t triples, answers, report;
    long long kept, dropped;
    int n_triples;
};

struct kgx_engine {
    kgx_config_t *cfg;
    uv_loop_t loop;
    kgx_http_t *http;
    kgx_db_t *db;
    kgx_script_t *script;
    kgx_endpoints_t eps;
    kgx_httpd_t *httpd;
    kgx_budget_t budget;        /* --memory-budget: drawers' text admitted within it (budget.c) */
    char worker[256];
    job_t jobs;                 /* list sentinel, FIFO */
    int njobs, in_flight;
    int jobs_in[JOB_DEAD + 1];      /* jobs per state, kept by job_set_state() */
    int claiming, claims, idle, stopping, finished, exit_code, pumping, repump;
    double retry_base_ms;
    uv_timer_t wake, poll, progress, heartbeat, refresh, stop_deadline, watchdog, publish;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_fs_event_t watch_policy, watch_plugins;   /* editors save by rename: watch the directories */
    uv_timer_t reload_debounce;
    int drain_ticks;
    kgx_queue_counts_t counts;
    int have_counts, counts_busy;
    long long prev_completed;
    uint64_t prev_t, start_t;
    int tty, bar;                /* bar: live progress bar (a terminal, a backfill) */
    /* --dry-run */
    FILE *dry_in;
    int dry_eof, dry_failed;
    long dry_seq;
    /* cumulative, this process */
    unsigned long long done_here, parked_here, retries_here;
};

/* engine.c */
void kgx_engine_pump(kgx_engine_t *e);                 /* dispatch, claim, finish: after any event */
uint64_t kgx_engine_now(kgx_engine_t *e);              /* fresh loop time, ms */

/* job.c — one drawer. Ownership: the engine's list holds every job; job_free unlinks and frees. */
job_t *job_new(kgx_engine_t *e, kgx_claim_row_t *row);  /* takes row's strings */
void job_free(job_t *j);
void job_set_state(job_t *j, int st);                  /* the one place a job changes state */
void job_split(job_t *j);                              /* split (or charge a policy error) */
void job_write(job_t *j);                              /* all chunks answered: write (or print) */
void job_charge(job_t *j, int kind, const char *msg);  /* a charged failure of this attempt */
void job_send_chunk(kgx_engine_t *e, job_t *j, chunk_t *c, kgx_endpoint_t *ep);
void job_chunk_cancel(job_t *j, chunk_t *c);
void job_resolve_suspects(kgx_engine_t *e, kgx_endpoint_t *ep);

#endif
