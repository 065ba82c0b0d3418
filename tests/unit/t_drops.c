/* t_drops — drop reasons into their classes (the policy's own texts: plugins/entity.lua, vocab.lua,
 * parse.lua, script.c), the weight of a cap summary, counting, the capped-answer count, the status JSON
 * members and the /metrics lines. */
#include "drops.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

int main(void)
{
    struct { const char *reason; kgx_drop_class_t want; } cases[] = {
        { "subject is a stopword: it", KGX_DROP_STOPWORD },
        { "object is a stopword: The", KGX_DROP_STOPWORD },
        { "confidence 0.30 < 0.50", KGX_DROP_LOW_CONFIDENCE },
        { "confidence 0.4999 < 0.5000", KGX_DROP_LOW_CONFIDENCE },
        { "subject longer than 256 characters", KGX_DROP_TOO_LONG },
        { "predicate longer than 256 bytes", KGX_DROP_TOO_LONG },
        { "object longer than 4096 bytes", KGX_DROP_TOO_LONG },
        { "subject is not valid UTF-8 or contains NUL", KGX_DROP_INVALID_TEXT },
        { "object is not a string (null)", KGX_DROP_INVALID_TEXT },
        { "subject is empty", KGX_DROP_INVALID_TEXT },
        { "empty predicate", KGX_DROP_INVALID_TEXT },
        { "not a triple: number", KGX_DROP_INVALID_TEXT },
        { "triple is not a table", KGX_DROP_INVALID_TEXT },
        { "confidence is a string, not a number", KGX_DROP_INVALID_TEXT },
        { "subject equals object: Alice", KGX_DROP_SAME_ENTITY },
        { "predicate looks like code: appendchild", KGX_DROP_PREDICATE },
        { "predicate has digits: step2", KGX_DROP_PREDICATE },
        { "predicate 'likes' is not in the vocabulary", KGX_DROP_PREDICATE },
        { "over max_triples 10", KGX_DROP_OVER_CAP },
        { "over max_triples 10: 304890 more triples not listed", KGX_DROP_OVER_CAP },
        { "answer cut at n_predict: triples after the cut are lost", KGX_DROP_ANSWER_CUT },
        { "my policy says no", KGX_DROP_OTHER },
        { NULL, KGX_DROP_OTHER },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        is_str(kgx_drops_class_name(kgx_drops_class(cases[i].reason)), kgx_drops_class_name(cases[i].want),
               "'%s' -> %s", cases[i].reason ? cases[i].reason : "(null)", kgx_drops_class_name(cases[i].want));

    is_int(kgx_drops_weight("over max_triples 10"), 1, "one drop, one triple");
    is_int(kgx_drops_weight("over max_triples 10: 304890 more triples not listed"), 304891, "a cap summary stands for N + 1");

    kgx_drops_reset();
    kgx_drop_t d[3] = { { NULL, NULL, NULL, (char *)"subject is a stopword: it" },
                        { NULL, NULL, NULL, (char *)"over max_triples 10" },
                        { NULL, NULL, NULL, (char *)"over max_triples 10: 5 more triples not listed" } };
    kgx_result_t r = { NULL, 0, d, 3 };
    kgx_drops_record("d1", 0, &r, 10);
    is_int(kgx_drops.by_class[KGX_DROP_STOPWORD], 1, "stopword counted");
    is_int(kgx_drops.by_class[KGX_DROP_OVER_CAP], 7, "cap: 1 + (5 + 1)");
    is_int(kgx_drops.answers_capped, 1, "one capped answer");
    kgx_result_t r2 = { NULL, 0, d, 1 };
    kgx_drops_record("d2", 0, &r2, 10);
    is_int(kgx_drops.answers_capped, 1, "an answer without cap drops, under the cap, is not capped");
    kgx_triple_t t[3] = { { 0 } };
    kgx_result_t r3 = { t, 3, NULL, 0 };
    kgx_drops_record("d3", 0, &r3, 3);
    is_int(kgx_drops.answers_capped, 2, "an answer with max_triples triples hit the cap (the model stopped there)");

    kgx_buf_t b = { 0 };
    kgx_buf_adds(&b, "{");
    kgx_drops_json(&b);
    kgx_buf_adds(&b, "}");
    ok(strstr(b.p, "\"stopword\":2") && strstr(b.p, "\"over_cap\":7") && strstr(b.p, "\"answers_capped\":2")
       && strstr(b.p, "\"warnings\":[]"), "status JSON: %s", b.p);
    kgx_buf_free(&b);
    char *m = kgx_drops_metrics();
    ok(m && strstr(m, "kgx_triples_dropped_total{reason=\"stopword\"} 2\n")
         && strstr(m, "kgx_answers_capped_total 2\n") && strstr(m, "# TYPE kgx_triples_dropped_total counter"),
       "metrics lines");
    free(m);
    return done_testing();
}
