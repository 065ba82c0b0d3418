/* drops — see drops.h. */
#include "drops.h"
#include "db.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kgx_drops_t kgx_drops;
static char *policy_warning;     /* two policies on one queue (kgx_drops_check_policies) */

static const char *const names[KGX_DROP__N] = {
    "stopword", "low_confidence", "too_long", "invalid_text", "same_entity", "predicate", "over_cap",
    "answer_cut", "other",
};

const char *kgx_drops_class_name(kgx_drop_class_t c)
{
    return c >= 0 && c < KGX_DROP__N ? names[c] : "other";
}

kgx_drop_class_t kgx_drops_class(const char *r)
{
    if (!r) return KGX_DROP_OTHER;
    if (strstr(r, "over max_triples")) return KGX_DROP_OVER_CAP;
    if (strstr(r, "answer cut")) return KGX_DROP_ANSWER_CUT;
    if (strstr(r, "stopword")) return KGX_DROP_STOPWORD;
    if (strstr(r, "equals object") || strstr(r, "same entity")) return KGX_DROP_SAME_ENTITY;
    if (!strncmp(r, "confidence ", 11) && strstr(r, " < ")) return KGX_DROP_LOW_CONFIDENCE;
    if (strstr(r, "longer than")) return KGX_DROP_TOO_LONG;
    if (strstr(r, "predicate looks like code") || strstr(r, "predicate has digits")
        || strstr(r, "not in the vocabulary"))
        return KGX_DROP_PREDICATE;
    if (strstr(r, "UTF-8") || strstr(r, "NUL") || strstr(r, "not a string") || strstr(r, "is empty")
        || strstr(r, "empty predicate") || strstr(r, "not a triple") || strstr(r, "is not a table")
        || strstr(r, "fewer than 3") || strstr(r, "missing") || strstr(r, "not a number")
        || strstr(r, "accept returned"))
        return KGX_DROP_INVALID_TEXT;
    return KGX_DROP_OTHER;
}

unsigned long long kgx_drops_weight(const char *r)
{
    const char *m = r ? strstr(r, " more triples not listed") : NULL;
    if (!m) return 1;
    const char *p = m;
    while (p > r && p[-1] >= '0' && p[-1] <= '9') p--;
    return p < m ? 1 + strtoull(p, NULL, 10) : 1;
}

void kgx_drops_record(const char *drawer_id, long chunk, const kgx_result_t *r, int max_triples)
{
    int capped = r && max_triples > 0 && r->n_triples + r->n_drops >= (size_t)max_triples;
    for (size_t i = 0; r && i < r->n_drops; i++) {
        const kgx_drop_t *d = &r->drops[i];
        kgx_drop_class_t c = kgx_drops_class(d->reason);
        kgx_drops.by_class[c] += kgx_drops_weight(d->reason);
        if (c == KGX_DROP_OVER_CAP) capped = 1;
        log_debug("drawer=%s chunk=%ld drop class=%s reason=\"%s\" subject=\"%s\" predicate=\"%s\" object=\"%s\"",
                  drawer_id ? drawer_id : "?", chunk, names[c], d->reason ? d->reason : "",
                  d->subject ? d->subject : "", d->predicate ? d->predicate : "", d->object ? d->object : "");
    }
    if (capped) {
        kgx_drops.answers_capped++;
        log_debug("drawer=%s chunk=%ld answer over the per-call triple cap: the triples past it are dropped "
                 "(MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER)", drawer_id ? drawer_id : "?", chunk);
    }
}

void kgx_drops_json(kgx_buf_t *b)
{
    kgx_buf_adds(b, "\"drops\":{");
    for (int i = 0; i < KGX_DROP__N; i++)
        kgx_buf_printf(b, "%s\"%s\":%llu", i ? "," : "", names[i], kgx_drops.by_class[i]);
    kgx_buf_printf(b, ",\"answers_capped\":%llu}", kgx_drops.answers_capped);
    kgx_buf_adds(b, ",\"warnings\":[");
    if (policy_warning) kgx_buf_json_str(b, policy_warning);
    kgx_buf_adds(b, "]");
}

static void policies_cb(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    (void)sqlstate; (void)ud;
    if (err || !res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) return;
    long long n = atoll(PQgetvalue(res, 0, 0));
    if (n <= 1) {
        if (policy_warning) log_info("one policy on this queue again");
        free(policy_warning);
        policy_warning = NULL;
        return;
    }
    kgx_buf_t w = { 0 };
    kgx_buf_printf(&w, "%lld policies are active on this queue (%s): the same facts may be written differently "
                       "(e.g. likes vs other); run one policy everywhere", n, PQgetvalue(res, 0, 1));
    if (!policy_warning || strcmp(policy_warning, w.p)) log_warn("%s", w.p);
    free(policy_warning);
    policy_warning = kgx_buf_steal(&w, NULL);
}

void kgx_drops_check_policies(kgx_db_t *db)
{
    static const char sql[] =
        "SELECT count(DISTINCT (state->'policy'->>'name', state->'policy'->>'version')),"
        "       string_agg(DISTINCT (state->'policy'->>'name') || ' ' || coalesce(state->'policy'->>'version', ''), ', ')"
        "  FROM public.kgx_workers WHERE seen_at > now() - interval '30 seconds'";
    if (db) kgx_db_query(db, sql, 0, NULL, policies_cb, NULL);
}

const char *kgx_drops_policy_warning(void) { return policy_warning; }

char *kgx_drops_metrics(void)
{
    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "# HELP kgx_triples_dropped_total Triples the policy rejected, by reason class.\n"
                     "# TYPE kgx_triples_dropped_total counter\n");
    for (int i = 0; i < KGX_DROP__N; i++)
        kgx_buf_printf(&b, "kgx_triples_dropped_total{reason=\"%s\"} %llu\n", names[i], kgx_drops.by_class[i]);
    kgx_buf_adds(&b, "# HELP kgx_answers_capped_total LLM answers with triples past the per-call cap.\n"
                     "# TYPE kgx_answers_capped_total counter\n");
    kgx_buf_printf(&b, "kgx_answers_capped_total %llu\n", kgx_drops.answers_capped);
    return kgx_buf_steal(&b, NULL);
}

int kgx_drops_workers(PGconn *c, kgx_drops_live_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY ord), ''),"
                     " coalesce(jsonb_object_agg(k, n), '{}')::text,"
                     " (SELECT string_agg(DISTINCT (state->'policy'->>'name') || ' ' || coalesce(state->'policy'->>'version', ''), ', ')"
                     "    FROM public.kgx_workers WHERE seen_at > now() - interval '60 seconds'),"
                     " (SELECT count(DISTINCT (state->'policy'->>'name', state->'policy'->>'version'))"
                     "    FROM public.kgx_workers WHERE seen_at > now() - interval '60 seconds')"
                     " FROM (SELECT x.key AS k, sum(x.value::bigint) AS n, min(o.ord) AS ord"
                     "         FROM public.kgx_workers w CROSS JOIN LATERAL jsonb_each_text(coalesce(w.state->'drops', '{}')) x"
                     "         LEFT JOIN (VALUES ");
    for (int i = 0; i < KGX_DROP__N; i++) kgx_buf_printf(&b, "%s('%s', %d)", i ? "," : "", names[i], i);
    kgx_buf_printf(&b, ",('answers_capped', %d)) o(k, ord) ON o.k = x.key"
                       "        WHERE w.seen_at > now() - interval '60 seconds' GROUP BY x.key) s", KGX_DROP__N);
    PGresult *r = PQexec(c, b.p);
    kgx_buf_free(&b);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "drops: ", r);
        PQclear(r);
        return -1;
    }
    out->text = strdup(PQgetvalue(r, 0, 0));
    out->json = strdup(PQgetvalue(r, 0, 1));
    if (atoll(PQgetvalue(r, 0, 3)) > 1) {
        kgx_buf_t w = { 0 };
        kgx_buf_printf(&w, "warning: %s policies are active on this queue (%s): the same facts may be written "
                           "differently (e.g. likes vs other)", PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 2));
        out->warning = kgx_buf_steal(&w, NULL);
    }
    PQclear(r);
    return 0;
}

void kgx_drops_live_free(kgx_drops_live_t *l)
{
    if (!l) return;
    free(l->text);
    free(l->json);
    free(l->warning);
    memset(l, 0, sizeof *l);
}

void kgx_drops_reset(void) { memset(&kgx_drops, 0, sizeof kgx_drops); }
