/* fuzz_jsonl — the --dry-run input reader (kgx_jsonl_parse): any bytes, no crash, and when a line is
 * accepted its outputs are consistent (id and document present, document length exact). */
#include "jsonl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *id, *wing, *room, *doc, err[256];
    size_t dl;
    int rc = kgx_jsonl_parse((const char *)data, size, 7, &id, &wing, &room, &doc, &dl, err, sizeof err);
    if (rc == 1) {
        if (!id || !doc || strlen(doc) > dl) abort();
        free(id); free(wing); free(room); free(doc);
    } else if (rc != -1 || id || doc) {
        abort();
    }
    return 0;
}
