/* outcome — the failure policy as one table (see outcome.h). The rule: nothing lost,
 * nothing silent — a failure either is not the drawer's fault (it waits, uncharged) or is charged
 * (retried with backoff, parked with its error after --max-attempts); never "done with 0 facts".
 *
 *   outcome         action          metric     why
 *   --------------  --------------  ---------  ------------------------------------------------
 *   ok              accept          -          a whole answer, parsed
 *   connect         wait endpoint   connect    the server is away: no attempt charged
 *   loading (503)   wait endpoint   http_5xx   the server is loading its model (see below)
 *   reset           ask /health     reset      down -> wait; up -> the drawer's answer broke it
 *   timeout         charge + check  timeout    the drawer took too long; /health looks too
 *   too big         charge          too_big    an answer over the cap will be so again
 *   transport       charge          reset      anything else the transfer did
 *   context         resplit         context    split smaller (charged after MAX_SHRINK rounds)
 *   http 5xx        charge          http_5xx
 *   http 4xx        charge          http_4xx
 *   unparseable     charge          parse      parse refused the answer
 *   policy          charge          policy     a hook raised, returned garbage, or was stopped
 *   db transient    retry same      db         the same write again (retry policy: dbretry.h)
 *   db              charge          db         facts are redone from scratch next attempt
 *   cut_npredict    split chunk     parse      only that chunk, smaller (MAX_CUT_SPLITS deep); then
 *                                              charged, naming n_predict
 *   cut_context     resplit         context    truncated: true — the context filled mid-answer
 *   capacity        fewer           http_5xx   server busy (429, full unified KV pool): the
 *                                              endpoint's in-flight limit halves, not charged
 *   malformed       charge          parse      the server ended it, the list breaks off (verdict)
 *
 * [answer] An LLM answer is classified once (answer.c) and lands on a row here:
 *   whole -> ok; overflow -> context; transport -> core's transport kinds; refused -> http 4xx/5xx.
 *
 * Why a 503 waits for the endpoint instead of lowering the in-flight limit like the other capacity
 * signals: llama-server answers 503 "Loading model" (unavailable_error) only while its model loads,
 * and then to every request, /health and /props included (a middleware in front of all routes; its
 * only other 503, "no slot available", is /slots?fail_on_no_slot). It is the endpoint not being ready,
 * not a server too busy for this many requests: set aside and asked /health until 200 (then /props
 * again: slots and n_ctx may have changed with the model), nothing charged, nothing split. Taken as
 * capacity it would halve the limit to 1 and then, alone at 1 and still refused, split drawers for as
 * long as the model loads (core_outage.t: 62 of 80 drawers parked after a 2.5 s reload).
 */
#include "outcome.h"
#include "answer.h"
#include "http.h"

#include <stdlib.h>

static const kgx_outcome_rule_t rules[KGX_OUT__N] = {
    [KGX_OUT_OK]           = { KGX_OUT_OK,           KGX_DO_ACCEPT,        -1,                 "ok" },
    [KGX_OUT_CONNECT]      = { KGX_OUT_CONNECT,      KGX_DO_WAIT_ENDPOINT, KGX_M_ERR_CONNECT,  "connect" },
    [KGX_OUT_LOADING]      = { KGX_OUT_LOADING,      KGX_DO_WAIT_ENDPOINT, KGX_M_ERR_HTTP_5XX, "loading" },
    [KGX_OUT_RESET]        = { KGX_OUT_RESET,        KGX_DO_ASK_HEALTH,    KGX_M_ERR_RESET,    "reset" },
    [KGX_OUT_TIMEOUT]      = { KGX_OUT_TIMEOUT,      KGX_DO_CHARGE_CHECK,  KGX_M_ERR_TIMEOUT,  "timeout" },
    [KGX_OUT_TOO_BIG]      = { KGX_OUT_TOO_BIG,      KGX_DO_CHARGE,        KGX_M_ERR_TOO_BIG,  "too_big" },
    [KGX_OUT_TRANSPORT]    = { KGX_OUT_TRANSPORT,    KGX_DO_CHARGE,        KGX_M_ERR_RESET,    "transport" },
    [KGX_OUT_CONTEXT]      = { KGX_OUT_CONTEXT,      KGX_DO_RESPLIT,       KGX_M_ERR_CONTEXT,  "context" },
    [KGX_OUT_HTTP_5XX]     = { KGX_OUT_HTTP_5XX,     KGX_DO_CHARGE,        KGX_M_ERR_HTTP_5XX, "http_5xx" },
    [KGX_OUT_HTTP_4XX]     = { KGX_OUT_HTTP_4XX,     KGX_DO_CHARGE,        KGX_M_ERR_HTTP_4XX, "http_4xx" },
    [KGX_OUT_UNPARSEABLE]  = { KGX_OUT_UNPARSEABLE,  KGX_DO_CHARGE,        KGX_M_ERR_PARSE,    "unparseable" },
    [KGX_OUT_POLICY]       = { KGX_OUT_POLICY,       KGX_DO_CHARGE,        KGX_M_ERR_POLICY,   "policy" },
    [KGX_OUT_DB_TRANSIENT] = { KGX_OUT_DB_TRANSIENT, KGX_DO_RETRY_SAME,    KGX_M_ERR_DB,       "db_transient" },
    [KGX_OUT_DB]           = { KGX_OUT_DB,           KGX_DO_CHARGE,        KGX_M_ERR_DB,       "db" },
    /* [answer] */
    [KGX_OUT_CUT_NPREDICT] = { KGX_OUT_CUT_NPREDICT, KGX_DO_SPLIT_CHUNK,   KGX_M_ERR_PARSE,    "cut_npredict" },
    [KGX_OUT_CUT_CONTEXT]  = { KGX_OUT_CUT_CONTEXT,  KGX_DO_RESPLIT,       KGX_M_ERR_CONTEXT,  "cut_context" },
    [KGX_OUT_CAPACITY]     = { KGX_OUT_CAPACITY,     KGX_DO_FEWER,         KGX_M_ERR_HTTP_5XX, "capacity" },
    [KGX_OUT_MALFORMED]    = { KGX_OUT_MALFORMED,    KGX_DO_CHARGE,        KGX_M_ERR_PARSE,    "malformed" },
};

const kgx_outcome_rule_t *kgx_outcome_rule(kgx_outcome_t o)
{
    return &rules[(unsigned)o < KGX_OUT__N ? o : KGX_OUT_TRANSPORT];
}

kgx_outcome_t kgx_outcome_of_http(int err, long status, int context_error)
{
    switch (err) {
    case KGX_HTTP_OK: break;
    case KGX_HTTP_ECONNECT: return KGX_OUT_CONNECT;
    case KGX_HTTP_ERESET: return KGX_OUT_RESET;
    case KGX_HTTP_ETIMEOUT: return KGX_OUT_TIMEOUT;
    case KGX_HTTP_ETOOBIG: return KGX_OUT_TOO_BIG;
    default: return KGX_OUT_TRANSPORT;
    }
    if (status == 503) return KGX_OUT_LOADING;
    if (context_error) return KGX_OUT_CONTEXT;
    if (status == 200) return KGX_OUT_OK;
    return status >= 500 ? KGX_OUT_HTTP_5XX : KGX_OUT_HTTP_4XX;
}

/* [answer] */
kgx_outcome_t kgx_outcome_of_answer(int err, long status, int answer)
{
    if (err != KGX_HTTP_OK) return kgx_outcome_of_http(err, status, 0);
    if (status == 503) return KGX_OUT_LOADING;          /* loading: the endpoint waits (see above), whatever
                                                         * answer.c's class (capacity) */
    switch ((kgx_answer_outcome_t)answer) {
    case KGX_ANSWER_WHOLE: return status == 200 ? KGX_OUT_OK : kgx_outcome_of_http(err, status, 0);
    case KGX_ANSWER_CUT_NPREDICT: return KGX_OUT_CUT_NPREDICT;
    case KGX_ANSWER_CUT_CONTEXT: return KGX_OUT_CUT_CONTEXT;
    case KGX_ANSWER_CAPACITY: return KGX_OUT_CAPACITY;
    case KGX_ANSWER_OVERFLOW: return KGX_OUT_CONTEXT;
    case KGX_ANSWER_MALFORMED: return KGX_OUT_MALFORMED;
    case KGX_ANSWER_TRANSPORT: return KGX_OUT_TRANSPORT;
    case KGX_ANSWER_REFUSED: break;
    }
    return kgx_outcome_of_http(err, status, 0);
}

/* 20 ms doubling up to ~2.5 s, jittered 0.5x..1.5x: a deadlock clears at once, a restarting
 * server within the ~40 s the 30 tries span. */
long kgx_db_retry_ms(int tries)
{
    if (tries < 1 || tries > KGX_DB_RETRIES) return -1;
    double d = 20.0 * (1 << (tries < 7 ? tries : 7));
    return (long)(d * (0.5 + (double)rand() / RAND_MAX));
}
