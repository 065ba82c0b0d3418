/* triple — what a policy's parse + accept make of one answer: facts to write and drops with their
 * reasons. Plain C data (malloc'd strings, valid UTF-8), owned by whoever holds the result; safe to
 * hand from a hook thread to the loop. */
#ifndef KGX_TRIPLE_H
#define KGX_TRIPLE_H

#include <stddef.h>

#define KGX_CONFIDENCE_DEFAULT 0.7    /* a triple without confidence; values are clamped to 0..1 */

typedef struct {
    char *subject, *predicate, *object;   /* predicate = canonical relation_type */
    char *raw_predicate;                   /* may be NULL */
    double confidence;                     /* 0..1 */
} kgx_triple_t;

typedef struct {
    char *subject, *predicate, *object;   /* as the model sent them (stringified), may be NULL */
    char *reason;
} kgx_drop_t;

typedef struct {
    kgx_triple_t *triples; size_t n_triples;
    kgx_drop_t *drops;     size_t n_drops;
} kgx_result_t;

void kgx_result_clear(kgx_result_t *r);    /* frees the contents; NULL ok */
/* Clamps a confidence to 0..1 (NaN -> 0). */
double kgx_confidence_clamp(double c);

#endif
