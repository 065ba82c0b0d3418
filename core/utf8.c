/* utf8 — see utf8.h. */
#include "utf8.h"

size_t kgx_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    if (n < len) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

int kgx_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] - 1u < 0x7Fu) {       /* ASCII other than NUL: most of any text */
            i++;
            continue;
        }
        size_t l = kgx_utf8_seq(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}
