/* httpd_req — the status server's request parser and listen-address parser (see httpd.h). Pure:
 * bytes in, a verdict out, no sockets, so the connection layer (httpd.c), the fuzzers and the tests
 * drive it alike. Only GET/HEAD; the request head is capped at MAX_HEAD bytes (431); a body is
 * refused (413). */
#include "httpd.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEAD     8192        /* request line + headers */
#define KEY_HEADER   "x-api-key"

/* ------------------------------------------------------------------------------------------ */
/* Request parser                                                                              */

struct kgx_httpd_req {
    http_parser parser;
    int status;                  /* 0 reading, 1 complete, else the HTTP error status */
    int headers_done;
    size_t head_bytes;           /* bytes fed while the head was incomplete */
    char *url;
    size_t url_len;
    char *path;                  /* set on completion */
    /* header being read: is it X-API-Key? The name may arrive in pieces. */
    char field[sizeof KEY_HEADER];
    size_t field_len;            /* > sizeof field - 1 means "longer than X-API-Key" */
    int last_was_value;
    int in_key;
    char *key;
    size_t key_len;
    int key_seen;
};

/* Appends to a malloc'd buffer; the head cap bounds the total. -1 on OOM. */
static int append(char **buf, size_t *len, const char *at, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);
    if (!p)
        return -1;
    memcpy(p + *len, at, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
    return 0;
}

static int method_ok(const http_parser *p)
{
    return p->method == HTTP_GET || p->method == HTTP_HEAD;
}

static int on_message_begin(http_parser *p)
{
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    kgx_httpd_req_t *r = p->data;
    if (!method_ok(p)) {
        r->status = 405;
        return -1;
    }
    return append(&r->url, &r->url_len, at, n) < 0 ? (r->status = 500, -1) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    kgx_httpd_req_t *r = p->data;
    if (r->last_was_value) {            /* a new header starts */
        r->field_len = 0;
        r->in_key = 0;
        r->last_was_value = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (r->field_len < sizeof r->field - 1) {
            char c = at[i];
            r->field[r->field_len] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        if (r->field_len <= sizeof r->field - 1)
            r->field_len++;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    kgx_httpd_req_t *r = p->data;
    if (!r->last_was_value) {           /* first piece of this value: is the name ours? */
        r->last_was_value = 1;
        r->in_key = r->field_len == sizeof r->field - 1 &&
                    memcmp(r->field, KEY_HEADER, sizeof r->field - 1) == 0;
        if (r->in_key) {
            if (r->key_seen) {          /* two keys: which one is meant? Refuse to guess. */
                r->status = 400;
                return -1;
            }
            r->key_seen = 1;
            if (append(&r->key, &r->key_len, "", 0) < 0)
                return r->status = 500, -1;
        }
    }
    if (r->in_key && append(&r->key, &r->key_len, at, n) < 0)
        return r->status = 500, -1;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    kgx_httpd_req_t *r = p->data;
    r->headers_done = 1;
    if (!method_ok(p)) {
        r->status = 405;
        return -1;
    }
    /* A status server has no use for request bodies: refuse any, whatever their framing. */
    if ((p->flags & F_CHUNKED) || p->uses_transfer_encoding ||
        ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)) {
        r->status = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    kgx_httpd_req_t *r = p->data;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!r->url || http_parser_parse_url(r->url, r->url_len, 0, &u) != 0) {
        r->status = 400;
        return -1;
    }
    const char *path = "/";
    size_t plen = 1;
    if (u.field_set & (1 << UF_PATH)) {
        path = r->url + u.field_data[UF_PATH].off;
        plen = u.field_data[UF_PATH].len;
    }
    r->path = malloc(plen + 1);
    if (!r->path) {
        r->status = 500;
        return -1;
    }
    memcpy(r->path, path, plen);
    r->path[plen] = '\0';
    r->status = 1;
    http_parser_pause(p, 1);            /* one request per connection: ignore what follows */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

kgx_httpd_req_t *kgx_httpd_req_new(void)
{
    kgx_httpd_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    return r;
}

void kgx_httpd_req_free(kgx_httpd_req_t *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->path);
    free(r->key);
    free(r);
}

int kgx_httpd_req_feed(kgx_httpd_req_t *r, const char *buf, size_t len)
{
    if (r->status)
        return r->status;
    if (len == 0)
        return 0;                       /* http_parser reads 0 bytes as EOF; we do not */
    size_t n = len;
    if (!r->headers_done) {
        size_t room = MAX_HEAD - r->head_bytes;
        if (room == 0)
            return r->status = 431;
        if (n > room)
            n = room;
    }
    size_t got = http_parser_execute(&r->parser, &settings, buf, n);
    if (!r->headers_done)
        r->head_bytes += got;
    if (r->status)                      /* a callback decided (1, 405, 413, …) */
        return r->status;
    if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK || got != n)
        return r->status = 400;
    if (!r->headers_done && n < len)    /* the cap cut the head short */
        return r->status = 431;
    return 0;
}

const char *kgx_httpd_req_path(const kgx_httpd_req_t *r)
{
    return r->status == 1 ? r->path : NULL;
}

int kgx_httpd_req_is_head(const kgx_httpd_req_t *r)
{
    return r->parser.method == HTTP_HEAD;
}

const char *kgx_httpd_req_api_key(const kgx_httpd_req_t *r, size_t *len)
{
    if (len)
        *len = r->key_seen ? r->key_len : 0;
    return r->key_seen ? r->key : NULL;
}

int kgx_httpd_parse_request(const char *buf, size_t len, char *path, size_t pathlen)
{
    kgx_httpd_req_t *r = kgx_httpd_req_new();
    if (!r)
        return 500;
    int rc = kgx_httpd_req_feed(r, buf, len);
    if (rc == 1 && path && pathlen)
        snprintf(path, pathlen, "%s", r->path);
    kgx_httpd_req_free(r);
    return rc;
}

int kgx_httpd_key_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen > blen ? alen : blen;
    volatile unsigned char diff = alen != blen;
    for (size_t i = 0; i < n; i++) {
        /* Index modulo the length instead of branching on it: same work for every i. */
        unsigned char ca = alen ? (unsigned char)a[i % alen] : 0;
        unsigned char cb = blen ? (unsigned char)b[i % blen] : 0;
        diff |= ca ^ cb;
    }
    return diff == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Listen address                                                                              */

static int host_char_ok(char c, int bracketed)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_' || (bracketed && (c == ':' || c == '%'));
}

int kgx_httpd_parse_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    if (!listen || !host || hostlen == 0 || !port)
        return -1;
    const char *hs, *he, *ps;
    int bracketed = listen[0] == '[';
    if (bracketed) {
        hs = listen + 1;
        he = strchr(hs, ']');
        if (!he || he == hs || he[1] != ':')
            return -1;
        ps = he + 2;
    } else {
        hs = listen;
        he = strrchr(listen, ':');
        if (!he)
            return -1;
        ps = he + 1;
    }
    for (const char *c = hs; c < he; c++)
        if (!host_char_ok(*c, bracketed))
            return -1;                  /* also rejects an unbracketed IPv6 address */

    size_t pl = strlen(ps);
    if (pl == 0 || pl > 5)
        return -1;
    int v = 0;
    for (size_t i = 0; i < pl; i++) {
        if (ps[i] < '0' || ps[i] > '9')
            return -1;
        v = v * 10 + (ps[i] - '0');
    }
    if (v > 65535)
        return -1;

    size_t hl = (size_t)(he - hs);
    if (hl == 0) {
        hs = "127.0.0.1";               /* ":PORT" means loopback, never "all interfaces" */
        hl = strlen(hs);
    }
    if (hl + 1 > hostlen)
        return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = v;
    return 0;
}
