/* httpd — the small status HTTP server (GET /kg-extract/status, /metrics, /healthz) on the loop.
 *
 * Requests are parsed with Debian's libhttp-parser. Only GET/HEAD; request line + headers capped
 * at 8 KiB, bodies refused (413), a client that does not finish its request within 5 s is
 * dropped (408), at most 64 connections at once; one request per connection
 * (Connection: close). When api_key is set, every request needs a matching X-API-Key header
 * (compared in constant time) or gets 401. Nothing here can block or slow the extraction loop. */
#ifndef KGX_HTTPD_H
#define KGX_HTTPD_H

#include <stddef.h>
#include <uv.h>

typedef struct kgx_httpd kgx_httpd_t;

typedef struct {
    int status;                 /* 200, 404, … */
    const char *content_type;   /* static string */
    char *body;                 /* malloc'd; httpd frees it */
    size_t body_len;
} kgx_httpd_resp_t;

/* path without query string. Fill *resp; returning without setting status gives 404. */
typedef void (*kgx_httpd_handler)(const char *path, kgx_httpd_resp_t *resp, void *ud);

/* listen is "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464", ":9464" = loopback).
 * Returns NULL with err set on bad address or bind failure. api_key NULL/"" = open. */
kgx_httpd_t *kgx_httpd_new(uv_loop_t *loop, const char *listen, const char *api_key,
                           kgx_httpd_handler handler, void *ud, char *err, size_t errlen);
void kgx_httpd_free(kgx_httpd_t *h);    /* closes listener and clients; NULL ok */
/* Parses "HOST:PORT" into host/port (pure; exposed for tests and the fuzzer). 0 ok, -1 bad. */
int kgx_httpd_parse_listen(const char *listen, char *host, size_t hostlen, int *port);

#endif
