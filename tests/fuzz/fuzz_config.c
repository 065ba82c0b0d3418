/* fuzz_config — the bytes operators and servers hand the core: endpoint URLs (kgx_config_endpoint_base),
 * llama-server /props and error bodies (kgx_props_*, kgx_error_n_ctx, kgx_body_int), and JSON string
 * escaping (kgx_buf_json_strn must always produce one well-formed, quoted, NUL-free literal). */
#include "buf.h"
#include "config.h"
#include "endpoint.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    char *b = kgx_config_endpoint_base(s);
    if (b && strncmp(b, "http", 4)) abort();
    free(b);
    (void)kgx_props_total_slots(s);
    (void)kgx_props_n_ctx(s);
    (void)kgx_error_n_ctx(s);
    (void)kgx_body_int(s, "tokens_evaluated");
    kgx_buf_t j = { 0 };
    kgx_buf_json_strn(&j, (const char *)data, size);
    if (j.len < 2 || j.p[0] != '"' || j.p[j.len - 1] != '"' || strlen(j.p) != j.len) abort();
    kgx_buf_free(&j);
    free(s);
    return 0;
}
