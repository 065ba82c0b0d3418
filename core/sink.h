/* sink — where drawers come from and where their results go, chosen once at start:
 *   kgx_sink_db   (sink_db.c)   the queue table and the graph: claims, failures recorded in the row,
 *                               one write transaction per drawer, rows given back on stop;
 *   kgx_sink_dry  (sink_dry.c)  --dry-run: drawers read from a JSON-lines file, attempts counted in
 *                               memory, reports printed to stdout; no database.
 * The job path calls the sink and never asks which one it is. Loop thread only. */
#ifndef KGX_SINK_H
#define KGX_SINK_H

#include "engine_int.h"

struct kgx_sink {
    const char *name;
    int durable;        /* a queue behind it: progress/heartbeat/status timers; an unreachable LLM waits */
    int keeps_answers;  /* raw answers are stored with the facts (when --keep-answers) */
    int reads_text;     /* a drawer's text is read after the claim, under the memory budget, and read
                         * again for a new split (budget.c); else it comes with the row, the only copy */
    int (*open)(kgx_engine_t *e, char *err, size_t errlen);   /* 0, or -1 with err (exit 2) */
    void (*close)(kgx_engine_t *e);
    /* Ask for up to `want` drawers: job_new() for each, now or later (then kgx_engine_pump()).
     * Returns 1 when drawers were added synchronously, else 0. */
    int (*claim)(kgx_engine_t *e, int want);
    /* Nothing more will come (a one-shot source at its end): finish with *code. */
    int (*exhausted)(kgx_engine_t *e, int *code);
    /* A charged failure of j's attempt: record it, then job_failed() (now or later). */
    void (*fail)(job_t *j, const char *msg);
    /* What one answer gave (report lines); may be NULL. */
    void (*result)(job_t *j, size_t idx, const kgx_result_t *r);
    /* j's facts (job_write_json): write them, then job_written() (now or later). */
    void (*write)(job_t *j);
    /* economy (issue 14): stored whole answers by request key (reuse.h's query); NULL: none stored. */
    int (*lookup)(void *e, const char *keys_json, kgx_reuse_rows_cb cb, void *ud);
    /* Stopping: give claimed rows back; returns 0 when there is nothing to wait for. The release
     * callback ends the run itself (kgx_engine_finish). */
    int (*release)(kgx_engine_t *e);
};

extern const kgx_sink_t kgx_sink_db, kgx_sink_dry;

#endif
