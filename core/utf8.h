/* utf8 — the one strict UTF-8 validator of the core (drawer text, model answers, policy output).
 * Strict: no overlong forms, no surrogates, nothing above U+10FFFF, and NUL is refused (PostgreSQL
 * text cannot hold it). Pure functions; safe from any thread. */
#ifndef KGX_UTF8_H
#define KGX_UTF8_H

#include <stddef.h>

/* Length (1..4) of the valid sequence at p (n bytes available), 0 when invalid or NUL. */
size_t kgx_utf8_seq(const unsigned char *p, size_t n);
/* 1 when s[0..n) is valid UTF-8 without NUL bytes. */
int kgx_utf8_valid(const char *s, size_t n);

#endif
