/* buf — see buf.h. */
#include "buf.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void grow(kgx_buf_t *b, size_t need)
{
    if (b->len + need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) abort();
    b->p = p;
    b->cap = cap;
}

void kgx_buf_add(kgx_buf_t *b, const void *data, size_t len)
{
    grow(b, len);
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = 0;
}

void kgx_buf_adds(kgx_buf_t *b, const char *s) { kgx_buf_add(b, s, strlen(s)); }

void kgx_buf_printf(kgx_buf_t *b, const char *fmt, ...)
{
    /* formatted once into the room there is (most calls fit), again only when it was too small */
    va_list ap;
    grow(b, 64);
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->p[b->len] = 0;
        return;
    }
    if ((size_t)n >= room) {
        grow(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void kgx_buf_json_strn(kgx_buf_t *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    grow(b, len + 2);
    b->p[b->len++] = '"';
    size_t i = 0, run = 0;   /* bytes [run, i) go out as they are, in one copy */
    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            i++;
            continue;
        }
        size_t n = c >= 0x80 ? kgx_utf8_seq(u + i, len - i) : 0;
        if (n) {
            i += n;
            continue;
        }
        if (i > run) kgx_buf_add(b, u + run, i - run);
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            kgx_buf_add(b, esc, 2);
        } else if (c >= 0x80) {
            kgx_buf_add(b, "\xEF\xBF\xBD", 3);     /* not UTF-8 */
        } else {
            char esc[8];
            switch (c) {
            case '\n': kgx_buf_add(b, "\\n", 2); break;
            case '\r': kgx_buf_add(b, "\\r", 2); break;
            case '\t': kgx_buf_add(b, "\\t", 2); break;
            case 0: /* PostgreSQL text cannot hold NUL */
                kgx_buf_add(b, "\xEF\xBF\xBD", 3);
                break;
            default:
                snprintf(esc, sizeof esc, "\\u%04x", c);
                kgx_buf_add(b, esc, 6);
            }
        }
        run = ++i;
    }
    if (i > run) kgx_buf_add(b, u + run, i - run);
    kgx_buf_add(b, "\"", 1);
}

void kgx_buf_json_str(kgx_buf_t *b, const char *s)
{
    if (!s) kgx_buf_adds(b, "null");
    else kgx_buf_json_strn(b, s, strlen(s));
}

char *kgx_buf_steal(kgx_buf_t *b, size_t *len)
{
    if (!b->p) grow(b, 0), b->p[0] = 0;
    char *p = b->p;
    if (len) *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void kgx_buf_reset(kgx_buf_t *b) { b->len = 0; if (b->p) b->p[0] = 0; }

void kgx_buf_free(kgx_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
