/* t_endpoint — telling a chat answer cut by a full context from one cut at max_tokens: both say
 * finish_reason "length" and carry no "truncated"; the token counts against the slot's n_ctx differ.
 * Numbers as measured on llama-server 0.7.0 with 512-token slots. */
#include "endpoint.h"
#include "tap.h"

int main(void)
{
    kgx_endpoint_t ep = { .n_ctx = 512 };
    is_int(kgx_endpoint_context_full(&ep, 509, 3), 1, "509 + 3 of 512: a full context");
    is_int(kgx_endpoint_context_full(&ep, 511, 1), 1, "511 + 1 of 512: a full context");
    is_int(kgx_endpoint_context_full(&ep, 500, 11), 1, "one short of n_ctx still counts (the last position)");
    is_int(kgx_endpoint_context_full(&ep, 39, 6), 0, "39 + 6 (max_tokens 6): a cut at max_tokens");
    is_int(kgx_endpoint_context_full(&ep, 300, 150), 0, "300 + 150 of 512: a cut at max_tokens");
    is_int(kgx_endpoint_context_full(&ep, -1, 6), -1, "no usage in the answer: unknown");
    is_int(kgx_endpoint_context_full(&ep, 39, -1), -1, "no completion count: unknown");
    kgx_endpoint_t unknown = { .n_ctx = 0 };
    is_int(kgx_endpoint_context_full(&unknown, 509, 3), -1, "the slot's n_ctx unknown: unknown");
    is_int(kgx_endpoint_context_full(NULL, 509, 3), -1, "no endpoint: unknown");
    return done_testing();
}
