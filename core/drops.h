/* drops — what the policy rejected, made visible: every dropped triple is logged at debug level with
 * its drawer and reason, and counted by reason class, a small fixed set an operator can alert on
 * (/metrics kgx_triples_dropped_total{reason=…}, the status JSON's "drops", --status). Answers that
 * reached the per-call triple cap (MEMPALACE_KG_MAX_TRIPLES_PER_DRAWER) are counted too: the triples
 * past the cap are lost to the graph. Process-wide counters, loop thread only. */
#ifndef KGX_DROPS_H
#define KGX_DROPS_H

#include <libpq-fe.h>
#include <stddef.h>
#include "buf.h"
#include "db.h"
#include "script.h"

typedef enum {
    KGX_DROP_STOPWORD,        /* subject/object is a stopword */
    KGX_DROP_LOW_CONFIDENCE,  /* below MEMPALACE_KG_MIN_CONFIDENCE */
    KGX_DROP_TOO_LONG,        /* a name or predicate over its length limit */
    KGX_DROP_INVALID_TEXT,    /* not a string, invalid UTF-8, NUL, empty, not a triple */
    KGX_DROP_SAME_ENTITY,     /* subject equals object */
    KGX_DROP_PREDICATE,       /* the vocabulary rejects the predicate (code, digits, strict) */
    KGX_DROP_OVER_CAP,        /* past the per-call triple cap */
    KGX_DROP_ANSWER_CUT,      /* after the point where the server cut the answer */
    KGX_DROP_OTHER,           /* any other reason a policy gives */
    KGX_DROP__N
} kgx_drop_class_t;

typedef struct {
    unsigned long long by_class[KGX_DROP__N];
    unsigned long long answers_capped;     /* answers with triples past the cap */
} kgx_drops_t;

extern kgx_drops_t kgx_drops;

/* The class of a drop reason (the policy's text: plugins/entity.lua, vocab.lua, parse.lua, script.c). */
kgx_drop_class_t kgx_drops_class(const char *reason);
/* "stopword", "low_confidence", … (the label used everywhere). */
const char *kgx_drops_class_name(kgx_drop_class_t c);
/* How many triples one drop stands for (a cap summary "N more triples not listed" stands for N + 1). */
unsigned long long kgx_drops_weight(const char *reason);
/* Logs (debug) and counts the drops of one answer of drawer_id (chunk = its index). The answer hit the
 * per-call cap when it brought max_triples triples or more (a schema-constrained model stops there:
 * what the text stated beyond is never seen) or when the policy dropped some as over the cap. */
void kgx_drops_record(const char *drawer_id, long chunk, const kgx_result_t *r, int max_triples);
/* "drops":{…},"warnings":[…] members (the caller places them in an object). */
void kgx_drops_json(kgx_buf_t *b);
/* Two policies (name/version) on one queue split facts into competing edges: every few seconds the
 * daemon asks which policies the live workers run (async, on db); when more than one, a warning is
 * logged (when it changes) and shown in "warnings" until they agree again. */
void kgx_drops_check_policies(kgx_db_t *db);
const char *kgx_drops_policy_warning(void);   /* NULL when none */
/* Prometheus lines for /metrics (malloc'd). */
char *kgx_drops_metrics(void);
/* --status: the drops of the workers seen in the last 60 s, summed ("class=n …" text and a JSON object),
 * and a warning when they run more than one policy (name/version) on this queue (NULL when not).
 * Strings malloc'd (free with kgx_drops_live_free). 0, or -1 with err. Blocking. */
typedef struct { char *text, *json, *warning; } kgx_drops_live_t;
int kgx_drops_workers(PGconn *c, kgx_drops_live_t *out, char *err, size_t errlen);
void kgx_drops_live_free(kgx_drops_live_t *l);
void kgx_drops_reset(void);   /* tests */

#endif
