/* fuzz_listen — libFuzzer target for kgx_httpd_parse_listen ("HOST:PORT", "[v6]:PORT", ":PORT"),
 * which reads --http from the command line. Checks the outputs stay in bounds. */
#include "httpd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t sizes[] = { 1, 8, 64, 256 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *host = malloc(sizes[i]);  /* exact size, so ASan sees any overrun */
        int port = -7;
        int rc = kgx_httpd_parse_listen(s, host, sizes[i], &port);
        if (rc != 0 && rc != -1)
            abort();
        if (rc == 0) {
            if (port < 0 || port > 65535)
                abort();
            size_t hl = strnlen(host, sizes[i]);
            if (hl == 0 || hl >= sizes[i])
                abort();
            if (!strchr(s, ':'))
                abort();
        }
        free(host);
    }
    free(s);
    return 0;
}
