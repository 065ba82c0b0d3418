/* engine_int — what engine.c (the loop: claims, pump, timers, signals, life cycle) and job*.c (one
 * drawer's way through the policy, the LLM and the write: job.c, job_chunk.c, job_rechunk.c) share. Not
 * an API: only those (and budget.c, which admits claimed drawers' text, and the sinks) include it. */
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
#include "hooks.h"
#include "httpd.h"
#include "jobstate.h"
#include "outcome.h"
#include "queue.h"
#include "reuse.h"
#include "script.h"

/* Limits and timings of the loop, in one place (flags and their defaults: config.c). */
#define MAX_ANSWER_BYTES (8u << 20)     /* hostile answers keep memory bounded */
#define MAX_SHRINK 6                    /* context-size resplits of one drawer before it is charged */
#define MAX_CUT_SPLITS 3                /* [answer] a chunk cut at n_predict is split again at most this deep */
#define EXTRA_CHUNKS 32                 /* [answer] room for those pieces (never realloc: callbacks point at chunks) */
/* economy (issue 14): an answer holding the per-call cap is asked again as two halves, at most this
 * deep (one chunk costs at most 2^(d+1) - 1 requests); shorter chunks are not halved */
#define MAX_DENSE_DEPTH 3
#define DENSE_MIN_BYTES 24
#define STOP_DEADLINE_MS 8000           /* SIGTERM: rows left to their lease after this (exit within 10 s) */
#define DRAIN_TICK_MS 20                /* finishing: how often the loop looks at the database's queue */
#define DRAIN_TICKS_MAX 150             /* ... and for how many ticks at most (~3 s) */
#define REFRESH_MS 5000                 /* the counters behind /status */
#define BAR_MS 1000                     /* the live progress bar on a terminal */
#define PUBLISH_FIRST_MS 200            /* this process's row in kgx_workers: first, then every ... */
#define PUBLISH_MS 5000
#define FAIL_RECORD_RETRY_MS 1000       /* the database was away while recording a failure */
#define RETRY_BACKOFF_MAX_MS 60000.0 /* a charged failure waits KGX_RETRY_BASE_MS doubling per attempt, up to this */
#define WRITE_START_RETRY_MS 500        /* no connection to start a write on */
#define TEXT_REREAD_MS 1000             /* a drawer's text could not be read: again after this (budget.c) */
#define RELOAD_DEBOUNCE_MS 500          /* a policy file changed: reload once the editor's writes settle */

/* The engine's life cycle: running; stopping (no claims, requests cancelled, waiting for the database
 * to answer what it was asked); releasing (giving the claimed rows back); finished (the loop drains). */
typedef enum { ENGINE_RUNNING, ENGINE_STOPPING, ENGINE_RELEASING, ENGINE_FINISHED } engine_phase_t;
/* CH_REQUEST and CH_PARSE: the request/parse hook runs on a hook thread (CH_REQUEST holds a slot).
 * CH_RESPLIT [answer]: its answer was cut at n_predict and the split hook cuts it smaller.
 * economy (issue 14, reuse.h): CH_LOOKUP holds a slot while its request is looked up among the stored
 * answers; CH_TWIN holds none while an identical request in flight answers for it. A chunk leading a
 * flight keeps it open in CH_LOOKUP, CH_INFLIGHT and CH_PARSE; any other state ends it (chunk_to). */
typedef enum { CH_PENDING, CH_REQUEST, CH_LOOKUP, CH_INFLIGHT, CH_PARSE, CH_SUSPECT, CH_RESPLIT, CH_TWIN,
               CH_DONE } chunk_state_t;
typedef enum { REUSED_NO, REUSED_STORED, REUSED_FLIGHT } chunk_reused_t;

typedef struct job job_t;
typedef struct kgx_sink kgx_sink_t;

typedef struct {
    int state;
    size_t idx;
    job_t *job;
    kgx_http_req_t *req;
    kgx_endpoint_t *ep;
    kgx_hook_call_t *call;      /* the request or parse hook running for it */
    double ms;                  /* the answer's latency and token counts, kept for the stored answer */
    long pt, ct;
    char *suspect;              /* the failure waiting for /health's verdict */
    int cut_depth;              /* [answer] times this text was split again after a cut at n_predict */
    int depth;                  /* economy (issue 14): halvings of a dense answer's chunk it comes from */
    long parent;                /* economy (issue 14): index of the chunk it is a half of, -1 for split's */
    uint64_t *facts;            /* economy (issue 14): hashes of its answer's facts (kept and dropped) */
    size_t nfacts;
    kgx_flight_t *flight;       /* economy (issue 14): the flight it leads or follows (reuse.h) */
    int leads;                  /* ... 1: it leads that flight (its request is the one asked) */
    long timeout_ms;            /* ... its request's timeout, kept while it is looked up */
    char req_hash[65];          /* ... SHA-256 of its request key (hex), "" unknown: stored with the answer */
    chunk_reused_t reused;      /* ... its answer came from a stored answer or a twin request */
} chunk_t;

struct job {
    job_t *prev, *next;
    kgx_engine_t *e;
    kgx_claim_row_t row;
    job_state_t state;          /* job.c's alone: moves through job_set_state() */
    int split_done;
    kgx_policy_src_t *src;      /* the policy text this attempt started with (ref) */
    kgx_hook_call_t *split_call;
    kgx_drawer_box_t *box;      /* the drawer as its hook calls share it (this attempt's) */
    kgx_chunk_t *texts;         /* split's chunks */
    size_t nchunks_texts;
    chunk_t *chunks;
    size_t nchunks, ndone;
    size_t chunks_cap;          /* economy (issue 14): room for the halves of dense answers and
                                 * [answer] the pieces of chunks cut at n_predict (the array
                                 * never moves: in-flight calls hold chunk pointers) */
    int shrink, attempts, write_retries;
    int fresh;                  /* economy (issue 14): a reused answer did not parse: ask the LLM only */
    uint64_t not_before;        /* ms, loop time */
    kgx_buf_t triples, answers, report;
    long long kept, dropped;
    int n_triples;
};

struct kgx_engine {
    kgx_config_t *cfg;
    uv_loop_t loop;
    kgx_http_t *http;
    const kgx_sink_t *sink;     /* where drawers come from and results go (sink.h) */
    kgx_db_t *db;               /* the database sink's pool; NULL with --dry-run */
    kgx_db_t *db_lookup;        /* economy (issue 14): one connection for answer lookups, never queued
                                 * behind writes (a chunk holds its LLM slot while it is looked up) */
    kgx_hooks_t *hooks;
    kgx_reuse_t *reuse;         /* economy (issue 14): flights and stored answers; NULL = always ask */
    kgx_endpoints_t eps;
    kgx_httpd_t *httpd;
    kgx_budget_t budget;        /* --memory-budget: drawers' text admitted within it (budget.c) */
    size_t claim_held;          /* held of it for the texts the claim in flight may bring */
    char worker_id[256];        /* this process in the queue (worker_id column) and kgx_workers */
    job_t jobs;                 /* list sentinel, FIFO */
    int njobs, in_flight;
    int max_in_flight;          /* --workers */
    int jobs_in[JOB__N];        /* jobs per state, kept by job_set_state() */
    engine_phase_t phase;
    int claiming, claims, idle, exit_code, stop_code, pumping, repump;
    int pump_due;                 /* a pump asked for by a callback: the wake timer is at 0 */
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
    /* --dry-run (sink_dry.c) */
    FILE *dry_in;
    int dry_eof, dry_failed;
    long dry_seq;
    /* cumulative, this process */
    unsigned long long done_here, parked_here, retries_here;
};

/* engine.c */
void kgx_engine_pump(kgx_engine_t *e);                 /* dispatch, claim, finish: after any event,
                                                        * once the loop turn's events are delivered */
void kgx_engine_finish(kgx_engine_t *e, int code);     /* end the run (the loop drains, then stops) */
int kgx_engine_stopping(const kgx_engine_t *e);        /* no new work: stopping or finished */
uint64_t kgx_engine_now(kgx_engine_t *e);              /* fresh loop time, ms */

/* job.c — one drawer. Ownership: the engine's list holds every job; job_free unlinks and frees. */
job_t *job_new(kgx_engine_t *e, kgx_claim_row_t *row);  /* takes row's strings */
void job_free(job_t *j);
void job_set_state(job_t *j, job_state_t st);          /* the one place a job changes state */
job_action_t job_next_action(job_t *j, uint64_t now);  /* what the engine should do for it now */
chunk_t *job_next_chunk(job_t *j);                     /* the next chunk to send, or NULL */
size_t job_ready_units(const job_t *j);                /* splits + chunks that could use a slot */
uint64_t job_wake_at(const job_t *j);                  /* loop time a waiting job wants the pump, or 0 */
int job_db_busy(const job_t *j);                       /* the database is answering about it */
void job_cancel(job_t *j);                             /* stopping: cancel its hooks and requests */
void job_split(job_t *j);                              /* split (or charge a policy error) */
void job_write(job_t *j);                              /* all chunks answered: hand the facts to the sink */
void job_write_json(const job_t *j, kgx_buf_t *triples, kgx_buf_t *answers);   /* the write payload */
void job_write_again(job_t *j, uint64_t ms);           /* write retry after ms */
void job_written(job_t *j, int n, const char *err, const char *sqlstate);      /* the sink's answer */
void job_failed(job_t *j, int attempts, int parked, int stale, const char *err); /* failure recorded */
void job_charge(job_t *j, kgx_outcome_t oc, const char *msg);  /* a charged failure of this attempt */
void job_send_chunk(kgx_engine_t *e, job_t *j, chunk_t *c, kgx_endpoint_t *ep);
void job_chunk_cancel(job_t *j, chunk_t *c);
void job_resolve_suspects(kgx_engine_t *e, kgx_endpoint_t *ep);
/* economy (issue 14): reuse.h's callbacks (leader/follower are chunks) */
void job_reuse_found(void *leader, const char *hash_hex, const kgx_reuse_answer_t *a, void *ud);
void job_reuse_landed(void *follower, const char *hash_hex, const kgx_reuse_answer_t *a, void *ud);

#endif
