/* httpd — the small status HTTP server (GET /kg-extract/status, /metrics, /healthz) on the loop.
 *
 * Requests are parsed with Debian's libhttp-parser. Only GET/HEAD; request line + headers capped
 * at 8 KiB, bodies refused (413), a client that does not finish its request head within 2 s is
 * answered 408 and dropped, an answer must be taken within 5 s; up to 1024 connections at once
 * (fewer under a low RLIMIT_NOFILE), and when every slot is taken a new connection is still
 * admitted by closing the quietest one that has not finished a request; one request per
 * connection (Connection: close). When api_key is set, every request needs a matching X-API-Key header
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
/* Closes the listener and every client; NULL ok. libuv closes handles asynchronously: the memory
 * is released from close callbacks, so run the loop (uv_run) afterwards before uv_loop_close(). */
void kgx_httpd_free(kgx_httpd_t *h);
/* The port actually bound (useful with ":0"); -1 on error. */
int kgx_httpd_port(const kgx_httpd_t *h);
/* Per-connection deadline for connections accepted from now on (default 5000 ms; tests shorten it).
 * The request head's deadline is the smaller of this and 2000 ms. */
void kgx_httpd_set_timeout_ms(kgx_httpd_t *h, unsigned ms);
/* Client slots (default 1024, or RLIMIT_NOFILE's soft limit less 256; tests make it small). */
void kgx_httpd_set_max_clients(kgx_httpd_t *h, int n);
int kgx_httpd_max_clients(const kgx_httpd_t *h);                 /* -1 for NULL */
/* How many connections were closed to admit new ones (slots full). */
unsigned long kgx_httpd_evicted(const kgx_httpd_t *h);
/* Parses "HOST:PORT" into host/port (pure; exposed for tests and the fuzzer). 0 ok, -1 bad. */
int kgx_httpd_parse_listen(const char *listen, char *host, size_t hostlen, int *port);

/* One request being parsed, without sockets (the connection code, tests and the fuzzer drive it). */
typedef struct kgx_httpd_req kgx_httpd_req_t;
kgx_httpd_req_t *kgx_httpd_req_new(void);          /* NULL on OOM; free with kgx_httpd_req_free */
void kgx_httpd_req_free(kgx_httpd_req_t *r);       /* NULL ok */
/* Feeds the next bytes. Returns 0 = need more, 1 = a complete GET/HEAD, or the HTTP error status
 * to answer with (400 malformed, 405 method, 413 body, 431 headers over 8 KiB). Once non-zero,
 * later calls return the same value and ignore their bytes (one request per connection). */
int kgx_httpd_req_feed(kgx_httpd_req_t *r, const char *buf, size_t len);
const char *kgx_httpd_req_path(const kgx_httpd_req_t *r);   /* after 1: path, no query; else NULL */
int kgx_httpd_req_is_head(const kgx_httpd_req_t *r);
/* The X-API-Key header value (NULL when absent), its length in *len. */
const char *kgx_httpd_req_api_key(const kgx_httpd_req_t *r, size_t *len);
/* Whole-buffer convenience: feed buf in one go; on 1 the path is copied (truncated) into path. */
int kgx_httpd_parse_request(const char *buf, size_t len, char *path, size_t pathlen);
/* 1 when equal. Time depends only on max(alen, blen), not on where the strings differ. */
int kgx_httpd_key_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
