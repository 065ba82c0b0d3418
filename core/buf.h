/* buf — a growable byte buffer and JSON text helpers (status output, write payloads).
 * Allocation failure aborts: the daemon cannot do anything sensible without memory, and
 * systemd restarts it (MemoryMax is the bound that matters). */
#ifndef KGX_BUF_H
#define KGX_BUF_H

#include <stddef.h>

typedef struct { char *p; size_t len, cap; } kgx_buf_t;

void kgx_buf_add(kgx_buf_t *b, const void *data, size_t len);
void kgx_buf_adds(kgx_buf_t *b, const char *s);
void kgx_buf_printf(kgx_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes included). Bytes that are not valid UTF-8 become
 * U+FFFD, and so does NUL (PostgreSQL text cannot hold it); control characters are escaped;
 * NULL becomes null. */
void kgx_buf_json_str(kgx_buf_t *b, const char *s);
void kgx_buf_json_strn(kgx_buf_t *b, const char *s, size_t len);
/* Detaches the NUL-terminated string (caller frees); the buffer is left empty. */
char *kgx_buf_steal(kgx_buf_t *b, size_t *len);
void kgx_buf_free(kgx_buf_t *b);
void kgx_buf_reset(kgx_buf_t *b);

#endif
