/* outcome — what happened to one try of one chunk (or one write), and what the engine does about it.
 *
 * The engine turns every HTTP answer, hook result and database answer into one kgx_outcome_t and asks
 * kgx_outcome_rule() what to do; the decisions live in one table (outcome.c, also drawn there), not in
 * a chain of branches. To teach the engine a new case (for example the classes of an LLM answer: cut
 * at n_predict, cut by a full context, server at capacity), add an enum value here and a row to the
 * table; the engine needs no other change. Pure data: any thread. */
#ifndef KGX_OUTCOME_H
#define KGX_OUTCOME_H

#include "metrics.h"

typedef enum {
    KGX_OUT_OK,                 /* whole answer, parsed */
    KGX_OUT_CONNECT,            /* connection refused / cannot resolve: the endpoint is down */
    KGX_OUT_LOADING,            /* 503: the server is loading its model (every route answers 503 then) */
    KGX_OUT_RESET,              /* connection reset or empty reply after connecting */
    KGX_OUT_TIMEOUT,            /* --request-timeout (or the policy's timeout_ms) passed */
    KGX_OUT_TOO_BIG,            /* answer over the byte cap */
    KGX_OUT_TRANSPORT,          /* any other transport failure */
    KGX_OUT_CONTEXT,            /* 400/500 "context size exceeded": the chunk did not fit */
    KGX_OUT_HTTP_5XX,
    KGX_OUT_HTTP_4XX,
    KGX_OUT_UNPARSEABLE,        /* parse returned nil, reason or raised: the answer is bad */
    KGX_OUT_POLICY,             /* split/request/accept failed, or any hook was stopped by the watchdog */
    KGX_OUT_DB_TRANSIENT,       /* deadlock, serialization failure, lost connection on the write */
    KGX_OUT_DB,                 /* any other database error on the write */
    /* [answer] the classes of an LLM answer (answer.h) that core's kinds above do not already name */
    KGX_OUT_CUT_NPREDICT,       /* 200 ended at n_predict (stop_type limit): the answer is cut */
    KGX_OUT_CUT_CONTEXT,        /* 200 with truncated true: the slot's context filled up mid-answer */
    KGX_OUT_CAPACITY,           /* 429, or 500 "Context size has been exceeded" (a full unified KV pool) */
    KGX_OUT_MALFORMED,          /* 200 ended by the server, but parse's verdict says the list breaks off */
    KGX_OUT__N
} kgx_outcome_t;

/* What the engine does with an outcome. */
typedef enum {
    KGX_DO_ACCEPT,              /* keep the answer */
    KGX_DO_WAIT_ENDPOINT,       /* not the drawer's fault: set the endpoint aside, the chunk waits */
    KGX_DO_ASK_HEALTH,          /* ambiguous: /health decides (down: wait; up: charge) */
    KGX_DO_CHARGE,              /* a failed attempt: backoff, parked after --max-attempts */
    KGX_DO_CHARGE_CHECK,        /* charge, and have /health look at the endpoint */
    KGX_DO_RESPLIT,             /* split the drawer smaller (not charged, up to a limit) */
    KGX_DO_RETRY_SAME,          /* try the same step again after a short backoff (not charged) */
    KGX_DO_SPLIT_CHUNK,         /* [answer] split only this chunk smaller (bounded depth; charged naming
                                 * n_predict when it cannot be split further) */
    KGX_DO_FEWER,               /* [answer] the server is busy: lower the endpoint's in-flight limit,
                                 * the chunk waits, not charged (alone at a limit of 1: resplit) */
} kgx_action_t;

typedef struct {
    kgx_outcome_t outcome;
    kgx_action_t action;
    int metric;                 /* enum kgx_metric_error counted, or -1 */
    const char *name;           /* for logs and tests */
} kgx_outcome_rule_t;

const kgx_outcome_rule_t *kgx_outcome_rule(kgx_outcome_t o);

/* HTTP result -> outcome (err: enum kgx_http_err; status; context_error: the body says the context
 * was exceeded). */
kgx_outcome_t kgx_outcome_of_http(int err, long status, int context_error);
/* [answer] HTTP result + the answer's class (kgx_answer_outcome_t of answer.h: whole, cut at
 * n_predict, cut by a full context, capacity, overflow, transport, refused, malformed) -> outcome.
 * A 503 stays "loading" (the endpoint waits; not capacity: see outcome.c); overflow is "context";
 * transport and refused keep core's kinds. */
kgx_outcome_t kgx_outcome_of_answer(int err, long status, int answer);

/* The one retry policy for transient database errors (daemon writes and --reapply): the delay before
 * try number `tries` (1, 2, …) in ms, with jitter, or -1 once KGX_DB_RETRIES tries are used up. */
#define KGX_DB_RETRIES 30
long kgx_db_retry_ms(int tries);

#endif
