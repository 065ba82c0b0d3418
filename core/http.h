/* http — outgoing HTTP on the loop: libcurl multi driven by libuv (curl's multi-uv pattern).
 *
 * A handle (kgx_http_t) owns one CURLM and its poll/timer handles. Each submitted request
 * completes exactly once through its callback, unless cancelled first (then never).
 * Bodies are POSTed as application/json; GET when body is NULL. Responses larger than
 * max_body abort the transfer with an error (hostile answers keep memory bounded). */
#ifndef KGX_HTTP_H
#define KGX_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct kgx_http kgx_http_t;
typedef struct kgx_http_req kgx_http_req_t;

enum kgx_http_err {
    KGX_HTTP_OK = 0,          /* got a status line (any status) */
    KGX_HTTP_ECONNECT,        /* could not connect / resolve: the endpoint is down */
    KGX_HTTP_ETIMEOUT,        /* total timeout */
    KGX_HTTP_ERESET,          /* connection reset / empty reply / receive error after connecting */
    KGX_HTTP_ETOOBIG,         /* body over max_body */
    KGX_HTTP_EOTHER
};

typedef struct {
    int err;                  /* enum kgx_http_err */
    long status;              /* HTTP status when err == KGX_HTTP_OK */
    const char *errmsg;       /* one line, never NULL */
    const char *body;         /* NUL-terminated; valid only during the callback */
    size_t body_len;
    double total_ms;
} kgx_http_resp_t;

typedef void (*kgx_http_cb)(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud);

kgx_http_t *kgx_http_new(uv_loop_t *loop);
/* Cancels outstanding requests (no callbacks), closes handles. NULL ok. After this the loop
 * needs one more uv_run to finish closing handles. */
void kgx_http_free(kgx_http_t *h);
/* Starts a request. method "GET" or "POST"; body copied. timeout_ms total (0 = none; connecting
 * is capped at 5 s); max_body 0 = 8 MiB. Returns NULL on synchronous failure (cb is then never
 * called). The callback never runs inside kgx_http_submit; from a callback one may submit, cancel
 * other requests, or kgx_http_free the handle. */
kgx_http_req_t *kgx_http_submit(kgx_http_t *h, const char *method, const char *url,
                                const char *body, size_t body_len, long timeout_ms,
                                size_t max_body, kgx_http_cb cb, void *ud);
/* Cancels a pending request: its callback will not run. NULL ok; a no-op on the request whose
 * callback is running (it is freed when the callback returns). */
void kgx_http_cancel(kgx_http_req_t *req);
size_t kgx_http_active(const kgx_http_t *h);

#endif
