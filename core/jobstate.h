/* jobstate — the states of one drawer's way (a job) and the moves between them, as data. job.c draws
 * the diagram and is the only caller of job_set_state(), which refuses (and logs) a move this table
 * does not allow. Pure: unit-tested (t_jobstate). */
#ifndef KGX_JOBSTATE_H
#define KGX_JOBSTATE_H

typedef enum {
    JOB_WAIT_SPLIT,     /* claimed, or redone from scratch: split as soon as the pump gets to it */
    JOB_SPLITTING,      /* the split hook runs on a hook thread */
    JOB_CHUNKS,         /* chunks out: requests, answers, parse hooks (each chunk_t says where it is) */
    JOB_FAILING,        /* a charged failure is being recorded in the queue row */
    JOB_RETRY_WAIT,     /* backoff after a charged failure, until not_before */
    JOB_WRITE_WAIT,     /* the write failed transiently (or could not start): again at not_before */
    JOB_WRITING,        /* the write transaction is in flight */
    JOB_DONE,           /* finished with (completed, parked, claim lost): freed by the next pump */
    JOB__N
} job_state_t;

/* What the engine should do for a job now. */
typedef enum {
    JOB_ACT_NONE,       /* waiting on something else (a hook, an answer, the database, a timer) */
    JOB_ACT_SPLIT,      /* call job_split */
    JOB_ACT_SEND,       /* has chunks waiting for a free slot: job_next_chunk / job_send_chunk */
    JOB_ACT_WRITE,      /* call job_write */
    JOB_ACT_FREE,       /* call job_free */
} job_action_t;

const char *job_state_name(job_state_t s);
/* 1 when a job may move from `from` to `to`. */
int job_transition_ok(job_state_t from, job_state_t to);

#endif
