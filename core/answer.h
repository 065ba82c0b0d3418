/* answer — what became of one LLM request: whole, or why not (pure functions, no I/O).
 *
 * An answer counts only when it is whole: the server ended it itself (/completion stop_type "eos"
 * or "word", chat finish_reason "stop") and the policy's parse hook read a list to its end (verdict
 * "whole"). Answers that carry no ending (another server, old stored bodies) are judged by the parse
 * verdict alone. Everything else has one outcome that says what to do next:
 *
 *   WHOLE        keep the chunk's triples
 *   CUT_NPREDICT stop_type "limit" (chat "length") with truncated false: only this chunk is split
 *                smaller and asked again; parked, naming n_predict, when it cannot be split further
 *   CUT_CONTEXT  truncated true: the slot's context filled up during the answer — like an overflow
 *   CAPACITY     500 "Context size has been exceeded." (a unified KV pool is full), 429: the server
 *                is busy, not the drawer at fault — not charged, fewer in flight. 503 (loading) is
 *                classed here too, but outcome.c makes it wait for the endpoint instead
 *   OVERFLOW     400 exceed_context_size_error: the prompt is over the slot's context — split
 *   TRANSPORT    no HTTP answer (connect, reset, timeout, too big)
 *   REFUSED      any other HTTP error status (charged, retried)
 *   MALFORMED    200, the server ended it, but the list does not parse to its end (charged, retried)
 */
#ifndef KGX_ANSWER_H
#define KGX_ANSWER_H

#include <stddef.h>
#include "buf.h"

/* The parse hook's verdict (the second value it returns beside the triples). */
enum kgx_verdict {
    KGX_VERDICT_NONE,          /* the hook returned no verdict (an older policy) */
    KGX_VERDICT_WHOLE,         /* "whole": the list parsed to its end */
    KGX_VERDICT_INCOMPLETE,    /* "incomplete" (or anything else): the list broke off */
    KGX_VERDICT_FAILED         /* nil, reason / an error: nothing usable */
};

typedef enum {
    KGX_ANSWER_WHOLE,
    KGX_ANSWER_CUT_NPREDICT,
    KGX_ANSWER_CUT_CONTEXT,
    KGX_ANSWER_CAPACITY,
    KGX_ANSWER_OVERFLOW,
    KGX_ANSWER_TRANSPORT,
    KGX_ANSWER_REFUSED,
    KGX_ANSWER_MALFORMED
} kgx_answer_outcome_t;

enum kgx_stop { KGX_STOP_UNKNOWN, KGX_STOP_EOS, KGX_STOP_WORD, KGX_STOP_LIMIT, KGX_STOP_OTHER };

/* What a 200 body says about itself. Spans point into the body (not NUL-terminated); -1 = absent. */
typedef struct {
    int chat;                  /* a chat completion envelope (choices[]) */
    int stop;                  /* enum kgx_stop; UNKNOWN when the body says nothing */
    int truncated;             /* 1, 0, or -1 absent */
    long tokens_predicted, tokens_evaluated, tokens_cached;   /* chat: usage.completion/prompt_tokens */
    long cache_n, prompt_n, predicted_n;                       /* timings */
    double prompt_ms, predicted_ms;                            /* timings; < 0 absent */
    const char *content; size_t content_len;   /* the raw JSON value of content (a string token) */
    const char *model; size_t model_len;       /* the raw JSON string of model */
} kgx_answer_t;

/* Reads the fields above from a /completion or chat body. Never fails: an unreadable body leaves
 * everything absent (stop UNKNOWN). Linear in len; walks the JSON, so a field name inside the
 * model's content is never mistaken for the server's. */
void kgx_answer_read(const char *body, size_t len, kgx_answer_t *out);

/* The outcome. http_err is the transport result (0 = an HTTP answer came), status its status,
 * body/len the response body (for error kinds), a the fields read from a 200 body (may be NULL),
 * verdict the parse hook's (ignored unless status is 200). */
kgx_answer_outcome_t kgx_answer_classify(int http_err, long status, const char *body, size_t len,
                                         const kgx_answer_t *a, int verdict);
const char *kgx_answer_outcome_name(kgx_answer_outcome_t o);

/* What is worth storing of a 200 answer, as one JSON object: content, how it ended (stop_type,
 * truncated), token counts, cache_n and timings, model — not the prompt echo or the generation
 * settings (on the real server ~95 % of the body). A chat body keeps its envelope shape
 * ({"choices":[{"message":{"content":…},"finish_reason":…}],…}) so that a parser reads it as before.
 * Appends to out; returns 0, or -1 when the body is not a JSON object (then nothing is appended and
 * the caller stores the body as is). */
int kgx_answer_compact(const char *body, size_t len, kgx_buf_t *out);

#endif
