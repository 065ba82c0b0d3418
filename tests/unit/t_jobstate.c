/* t_jobstate — the job state machine (jobstate.c) and the failure classification table (outcome.c):
 * the moves a drawer's way takes are allowed, the ones it must never take are not, and every outcome
 * maps to the action the failure policy promises. */
#include "jobstate.h"
#include "outcome.h"
#include "http.h"
#include "tap.h"

#include <string.h>

static void test_paths(void)
{
    /* the ways a drawer goes, each move in turn */
    static const job_state_t happy[] = { JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_CHUNKS, JOB_WRITING, JOB_DONE };
    static const job_state_t retry[] = { JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_CHUNKS, JOB_FAILING, JOB_RETRY_WAIT,
                                         JOB_CHUNKS, JOB_WRITING, JOB_WRITE_WAIT, JOB_WRITING, JOB_DONE };
    static const job_state_t parked[] = { JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_FAILING, JOB_RETRY_WAIT,
                                          JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_FAILING, JOB_DONE };
    static const job_state_t resplit[] = { JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_CHUNKS, JOB_WAIT_SPLIT,
                                           JOB_SPLITTING, JOB_CHUNKS, JOB_WRITING, JOB_DONE };
    static const job_state_t redo[] = { JOB_CHUNKS, JOB_WRITING, JOB_WAIT_SPLIT, JOB_FAILING, JOB_RETRY_WAIT,
                                        JOB_WAIT_SPLIT };
    static const job_state_t empty[] = { JOB_WAIT_SPLIT, JOB_WRITING, JOB_DONE };
    static const job_state_t nothing[] = { JOB_WAIT_SPLIT, JOB_SPLITTING, JOB_WRITING, JOB_DONE };
    static const struct { const char *name; const job_state_t *p; size_t n; } paths[] = {
        { "happy", happy, sizeof happy / sizeof *happy },
        { "retry then write retry", retry, sizeof retry / sizeof *retry },
        { "split fails until parked", parked, sizeof parked / sizeof *parked },
        { "context: resplit", resplit, sizeof resplit / sizeof *resplit },
        { "write fails: facts redone", redo, sizeof redo / sizeof *redo },
        { "blank drawer", empty, sizeof empty / sizeof *empty },
        { "split gives no chunks", nothing, sizeof nothing / sizeof *nothing },
    };
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        int good = 1;
        for (size_t k = 1; k < paths[i].n; k++)
            if (!job_transition_ok(paths[i].p[k - 1], paths[i].p[k])) {
                diag("%s: %s -> %s refused", paths[i].name, job_state_name(paths[i].p[k - 1]), job_state_name(paths[i].p[k]));
                good = 0;
            }
        ok(good, "path allowed: %s", paths[i].name);
    }
}

static void test_refused(void)
{
    static const struct { job_state_t a, b; const char *why; } bad[] = {
        { JOB_DONE, JOB_WAIT_SPLIT, "nothing comes back from done" },
        { JOB_DONE, JOB_WRITING, "done is final" },
        { JOB_WAIT_SPLIT, JOB_CHUNKS, "no chunks without a split" },
        { JOB_SPLITTING, JOB_WRITE_WAIT, "no write retry before a write" },
        { JOB_FAILING, JOB_CHUNKS, "a failure is recorded before anything else" },
        { JOB_FAILING, JOB_WRITING, "never write while a failure is being recorded" },
        { JOB_RETRY_WAIT, JOB_WRITING, "a due retry goes through its chunks first" },
        { JOB_WRITE_WAIT, JOB_CHUNKS, "a write retry only writes" },
        { JOB_WRITING, JOB_CHUNKS, "a failed write redoes the facts from scratch" },
        { JOB_WRITING, JOB_FAILING, "a failed write resets first" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ok(!job_transition_ok(bad[i].a, bad[i].b), "refused %s -> %s: %s", job_state_name(bad[i].a),
           job_state_name(bad[i].b), bad[i].why);
    ok(!job_transition_ok(JOB__N, JOB_DONE) && !job_transition_ok(JOB_DONE, (job_state_t)99), "out of range refused");
    for (int s = 0; s < JOB__N; s++)
        ok(s == JOB_DONE || job_transition_ok((job_state_t)s, JOB_DONE) || s == JOB_FAILING,
           "%s can end (stop, park or finish)", job_state_name((job_state_t)s));
    is_str(job_state_name(JOB_RETRY_WAIT), "retry_wait", "names");
}

static void test_outcomes(void)
{
    static const struct { int err; long status; int ctx; kgx_outcome_t want; kgx_action_t act; } cases[] = {
        { KGX_HTTP_OK, 200, 0, KGX_OUT_OK, KGX_DO_ACCEPT },
        { KGX_HTTP_ECONNECT, 0, 0, KGX_OUT_CONNECT, KGX_DO_WAIT_ENDPOINT },
        { KGX_HTTP_OK, 503, 0, KGX_OUT_LOADING, KGX_DO_WAIT_ENDPOINT },
        { KGX_HTTP_OK, 503, 1, KGX_OUT_LOADING, KGX_DO_WAIT_ENDPOINT },
        { KGX_HTTP_ERESET, 0, 0, KGX_OUT_RESET, KGX_DO_ASK_HEALTH },
        { KGX_HTTP_ETIMEOUT, 0, 0, KGX_OUT_TIMEOUT, KGX_DO_CHARGE_CHECK },
        { KGX_HTTP_ETOOBIG, 200, 0, KGX_OUT_TOO_BIG, KGX_DO_CHARGE },
        { KGX_HTTP_EOTHER, 0, 0, KGX_OUT_TRANSPORT, KGX_DO_CHARGE },
        { KGX_HTTP_OK, 400, 1, KGX_OUT_CONTEXT, KGX_DO_RESPLIT },
        { KGX_HTTP_OK, 500, 1, KGX_OUT_CONTEXT, KGX_DO_RESPLIT },
        { KGX_HTTP_OK, 500, 0, KGX_OUT_HTTP_5XX, KGX_DO_CHARGE },
        { KGX_HTTP_OK, 400, 0, KGX_OUT_HTTP_4XX, KGX_DO_CHARGE },
        { KGX_HTTP_OK, 404, 0, KGX_OUT_HTTP_4XX, KGX_DO_CHARGE },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kgx_outcome_t o = kgx_outcome_of_http(cases[i].err, cases[i].status, cases[i].ctx);
        ok(o == cases[i].want && kgx_outcome_rule(o)->action == cases[i].act, "http err=%d status=%ld ctx=%d -> %s",
           cases[i].err, cases[i].status, cases[i].ctx, kgx_outcome_rule(o)->name);
    }
    is_int(kgx_outcome_rule(KGX_OUT_UNPARSEABLE)->action, KGX_DO_CHARGE, "unparseable answer: charged");
    is_int(kgx_outcome_rule(KGX_OUT_UNPARSEABLE)->metric, KGX_M_ERR_PARSE, "... counted as parse");
    is_int(kgx_outcome_rule(KGX_OUT_POLICY)->action, KGX_DO_CHARGE, "policy error: charged");
    is_int(kgx_outcome_rule(KGX_OUT_DB_TRANSIENT)->action, KGX_DO_RETRY_SAME, "transient db error: retried as is");
    is_int(kgx_outcome_rule(KGX_OUT_DB)->action, KGX_DO_CHARGE, "other db error: charged");
    for (int o = 0; o < KGX_OUT__N; o++) {
        const kgx_outcome_rule_t *r = kgx_outcome_rule((kgx_outcome_t)o);
        ok(r->outcome == (kgx_outcome_t)o && r->name && *r->name, "row %d (%s) in place", o, r->name);
    }
    ok(kgx_outcome_rule((kgx_outcome_t)999)->action == KGX_DO_CHARGE, "an unknown outcome is charged, never dropped");

    /* the one retry policy for transient database errors */
    int ok_all = 1;
    for (int t = 1; t <= KGX_DB_RETRIES; t++) {
        long d = kgx_db_retry_ms(t);
        if (d < 0 || d > 4000) ok_all = 0;
    }
    ok(ok_all, "db retry: %d tries with a bounded delay", KGX_DB_RETRIES);
    is_int(kgx_db_retry_ms(KGX_DB_RETRIES + 1), -1, "db retry: then given up");
    is_int(kgx_db_retry_ms(0), -1, "db retry: try numbers start at 1");
}

int main(void)
{
    test_paths();
    test_refused();
    test_outcomes();
    return done_testing();
}
