/* jobstate — see jobstate.h; the diagram is at the top of job.c. */
#include "jobstate.h"

static const char *const names[JOB__N] = {
    "wait_split", "splitting", "chunks", "failing", "retry_wait", "write_wait", "writing", "done",
};

const char *job_state_name(job_state_t s) { return (unsigned)s < JOB__N ? names[s] : "?"; }

#define B(s) (1u << (s))
/* allowed[from] = the states `from` may move to */
static const unsigned allowed[JOB__N] = {
    [JOB_WAIT_SPLIT] = B(JOB_SPLITTING) | B(JOB_WRITING) | B(JOB_RETRY_WAIT) | B(JOB_FAILING) | B(JOB_DONE),
    [JOB_SPLITTING]  = B(JOB_CHUNKS) | B(JOB_WRITING) | B(JOB_FAILING) | B(JOB_RETRY_WAIT) | B(JOB_WAIT_SPLIT)
                     | B(JOB_DONE),
    [JOB_CHUNKS]     = B(JOB_WRITING) | B(JOB_FAILING) | B(JOB_RETRY_WAIT) | B(JOB_WAIT_SPLIT) | B(JOB_DONE),
    [JOB_FAILING]    = B(JOB_RETRY_WAIT) | B(JOB_DONE),
    [JOB_RETRY_WAIT] = B(JOB_WAIT_SPLIT) | B(JOB_CHUNKS) | B(JOB_DONE),
    [JOB_WRITE_WAIT] = B(JOB_WRITING) | B(JOB_DONE),
    [JOB_WRITING]    = B(JOB_DONE) | B(JOB_WRITE_WAIT) | B(JOB_WAIT_SPLIT),
    [JOB_DONE]       = 0,
};
#undef B

int job_transition_ok(job_state_t from, job_state_t to)
{
    if ((unsigned)from >= JOB__N || (unsigned)to >= JOB__N) return 0;
    return (allowed[from] >> to) & 1u;
}
