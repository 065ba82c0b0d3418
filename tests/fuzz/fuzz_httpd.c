/* fuzz_httpd — libFuzzer target for the status server's request parser (kgx_httpd_req_feed),
 * the code that reads bytes from any client that can reach the port. The first input byte
 * chooses how the rest is chunked, so split reads (one byte at a time, random cuts) are covered
 * as well as the whole-buffer path. Checks the parser's contract, not just "no crash". */
#include "httpd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_verdict(int rc, kgx_httpd_req_t *r)
{
    if (rc != 0 && rc != 1 && rc != 400 && rc != 405 && rc != 413 && rc != 431 && rc != 500)
        abort();
    if (rc == 1) {
        const char *p = kgx_httpd_req_path(r);
        if (!p || p[0] == '\0')
            abort();
        size_t kl;
        const char *k = kgx_httpd_req_api_key(r, &kl);
        if (k && strlen(k) > kl)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned step = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    /* whole buffer */
    char path[64];
    int whole = kgx_httpd_parse_request(buf, len, path, sizeof path);
    if (whole == 1 && path[0] == '\0')
        abort();

    /* chunked: step 0 = one byte at a time, else chunks of `step` bytes */
    kgx_httpd_req_t *r = kgx_httpd_req_new();
    if (!r)
        return 0;
    int rc = 0;
    size_t chunk = step ? step : 1;
    for (size_t i = 0; i < len; i += chunk) {
        size_t n = len - i < chunk ? len - i : chunk;
        int prev = rc;
        rc = kgx_httpd_req_feed(r, buf + i, n);
        if (prev != 0 && rc != prev)    /* a verdict is final */
            abort();
    }
    check_verdict(rc, r);
    /* Splitting must not change a success into something else when the head is small. */
    if (whole == 1 && rc != 1 && len < 8192)
        abort();
    kgx_httpd_req_free(r);
    return 0;
}
