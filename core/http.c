/* http — see http.h. libcurl multi driven by libuv, after curl's docs/examples/multi-uv.c.
 *
 * curl tells us which sockets to watch (socket_cb → one uv_poll_t per socket, found again through
 * curl_multi_assign) and when to wake it up (timer_cb → one uv_timer_t). Readiness and timer
 * expiry are fed back through curl_multi_socket_action, after which finished transfers are
 * drained from curl_multi_info_read and their callbacks run.
 *
 * Reentrancy: a callback runs outside any libcurl call, so it may submit new requests, cancel
 * others (curl drops a cancelled handle's queued completion message) or even free the handle:
 * the free is then finished by the outermost dispatch once the callback returns. */
#include "http.h"
#include "log.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_MAXCONNECTS 64
#define HTTP_CONNECT_TIMEOUT_MS 5000L
#define HTTP_DEFAULT_MAX_BODY ((size_t)8 << 20)

/* One watched socket. Freed in its close callback. */
typedef struct http_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    kgx_http_t *h;
    struct http_sock *prev, *next;
} http_sock_t;

struct kgx_http_req {
    kgx_http_t *h;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;                  /* our copy of the POST body */
    char *resp;                  /* growable response buffer, NUL-terminated */
    size_t resp_len, resp_cap, max_body;
    int toobig;
    int done;                    /* completion callback running: cancel is a no-op */
    long timeout_ms;
    uint64_t start_ns;
    kgx_http_cb cb;
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
    kgx_http_req_t *prev, *next;
};

struct kgx_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t *timer;           /* separate allocation: freed in its close callback */
    kgx_http_req_t *reqs;        /* submitted, not yet completed or cancelled */
    http_sock_t *socks;          /* polls currently open */
    size_t active;
    int depth;                   /* nesting of dispatch (poll/timer callbacks) */
    int closing;                 /* kgx_http_free called while dispatching */
};

static void http_destroy(kgx_http_t *h);

static void req_unlink(kgx_http_req_t *r)
{
    kgx_http_t *h = r->h;
    if (r->prev) r->prev->next = r->next; else h->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    h->active--;
}

static void req_free(kgx_http_req_t *r)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->body);
    free(r->resp);
    free(r);
}

/* ---- socket and timer plumbing ---- */

static void sock_close_cb(uv_handle_t *hd) { free(hd->data); }

static void sock_close(http_sock_t *s)
{
    kgx_http_t *h = s->h;
    if (s->prev) s->prev->next = s->next; else h->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, sock_close_cb);
}

static void check_multi_info(kgx_http_t *h);

static void dispatch_end(kgx_http_t *h)
{
    if (--h->depth == 0 && h->closing) http_destroy(h);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    http_sock_t *s = p->data;
    kgx_http_t *h = s->h;
    int flags = 0, running;
    if (status < 0) flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    h->depth++;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);  /* may close s */
    check_multi_info(h);
    dispatch_end(h);
}

static void timer_cb(uv_timer_t *t)
{
    kgx_http_t *h = t->data;
    int running;
    h->depth++;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(h);
    dispatch_end(h);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arm the uv timer; curl is called from timer_cb. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    kgx_http_t *h = userp;
    if (timeout_ms < 0) uv_timer_stop(h->timer);
    else uv_timer_start(h->timer, timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: start/update/stop the poll of one socket. */
static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    kgx_http_t *h = userp;
    http_sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(s);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) { free(s); return -1; }
        s->fd = fd;
        s->h = h;
        s->poll.data = s;
        s->next = h->socks;
        if (h->socks) h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

/* ---- per-request callbacks ---- */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userp)
{
    kgx_http_req_t *r = userp;
    size_t n = size * nmemb;
    if (n > r->max_body - r->resp_len) { r->toobig = 1; return 0; }  /* → CURLE_WRITE_ERROR */
    if (r->resp_len + n + 1 > r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap : 4096;
        while (cap < r->resp_len + n + 1) cap *= 2;
        char *p = realloc(r->resp, cap);
        if (!p) return 0;
        r->resp = p;
        r->resp_cap = cap;
    }
    memcpy(r->resp + r->resp_len, ptr, n);
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

static int map_code(kgx_http_req_t *r, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return KGX_HTTP_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return KGX_HTTP_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT: {
        /* A connect timeout that fired before the total deadline means the endpoint is
         * unreachable rather than slow. */
        curl_off_t conn = 0;
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &conn);
        uint64_t el_ms = (uv_hrtime() - r->start_ns) / 1000000;
        if (conn == 0 && (r->timeout_ms == 0 || (r->timeout_ms > HTTP_CONNECT_TIMEOUT_MS
                                               && el_ms + 100 < (uint64_t)r->timeout_ms)))
            return KGX_HTTP_ECONNECT;
        return KGX_HTTP_ETIMEOUT;
    }
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return KGX_HTTP_ERESET;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        return r->toobig || rc == CURLE_FILESIZE_EXCEEDED ? KGX_HTTP_ETOOBIG : KGX_HTTP_EOTHER;
    default:
        return KGX_HTTP_EOTHER;
    }
}

static void complete(kgx_http_t *h, kgx_http_req_t *r, CURLcode rc)
{
    kgx_http_resp_t resp;
    char msg[CURL_ERROR_SIZE + 64];
    memset(&resp, 0, sizeof resp);
    resp.err = map_code(r, rc);
    if (resp.err == KGX_HTTP_OK) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        msg[0] = '\0';
    } else if (resp.err == KGX_HTTP_ETOOBIG) {
        snprintf(msg, sizeof msg, "response body over %zu bytes", r->max_body);
    } else {
        snprintf(msg, sizeof msg, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        msg[strcspn(msg, "\r\n")] = '\0';
    }
    resp.errmsg = msg;
    resp.body = r->resp ? r->resp : "";
    resp.body_len = r->resp_len;
    resp.total_ms = (double)(uv_hrtime() - r->start_ns) / 1e6;

    curl_multi_remove_handle(h->multi, r->easy);
    req_unlink(r);
    r->done = 1;
    if (r->cb) r->cb(r, &resp, r->ud);
    req_free(r);
}

static void check_multi_info(kgx_http_t *h)
{
    CURLMsg *m;
    int left;
    while (!h->closing && (m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        kgx_http_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = m->data.result;   /* m is invalid once the handle is removed */
        if (r) complete(h, r, rc);
    }
}

/* ---- API ---- */

kgx_http_t *kgx_http_new(uv_loop_t *loop)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
        global_done = 1;
    }
    kgx_http_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->loop = loop;
    h->timer = malloc(sizeof *h->timer);
    h->multi = curl_multi_init();
    if (!h->timer || !h->multi) {
        if (h->multi) curl_multi_cleanup(h->multi);
        free(h->timer);
        free(h);
        return NULL;
    }
    uv_timer_init(loop, h->timer);
    h->timer->data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_MAXCONNECTS);
    return h;
}

static void timer_close_cb(uv_handle_t *hd) { free(hd); }

static void cancel_all(kgx_http_t *h)
{
    while (h->reqs) kgx_http_cancel(h->reqs);
}

static void http_destroy(kgx_http_t *h)
{
    cancel_all(h);
    /* curl_multi_cleanup closes cached connections without necessarily telling socket_cb:
     * detach the callback and close every poll ourselves while the fds are still open. */
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, NULL);
    while (h->socks) sock_close(h->socks);
    curl_multi_cleanup(h->multi);
    uv_timer_stop(h->timer);
    uv_close((uv_handle_t *)h->timer, timer_close_cb);
    free(h);
}

void kgx_http_free(kgx_http_t *h)
{
    if (!h || h->closing) return;
    if (h->depth > 0) {          /* inside one of our callbacks: finish in dispatch_end */
        cancel_all(h);
        h->closing = 1;
        return;
    }
    h->closing = 1;
    http_destroy(h);
}

kgx_http_req_t *kgx_http_submit(kgx_http_t *h, const char *method, const char *url,
                                const char *body, size_t body_len, long timeout_ms,
                                size_t max_body, kgx_http_cb cb, void *ud)
{
    if (!h || h->closing || !url) return NULL;
    if (timeout_ms < 0) timeout_ms = 0;   /* 0: no total timeout */
    kgx_http_req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->h = h;
    r->cb = cb;
    r->ud = ud;
    r->timeout_ms = timeout_ms;
    r->max_body = max_body ? max_body : HTTP_DEFAULT_MAX_BODY;
    r->easy = curl_easy_init();
    if (!r->easy) goto fail;

    int post = body != NULL || (method && !strcasecmp(method, "POST"));
    if (post) {
        r->body = malloc(body_len + 1);
        if (!r->body) goto fail;
        if (body_len) memcpy(r->body, body, body_len);
        r->body[body_len] = '\0';
    }
    struct curl_slist *hd = NULL;
    if (post) {
        hd = curl_slist_append(NULL, "Content-Type: application/json");
        if (!hd) goto fail;
        r->hdrs = hd;
    }
    hd = curl_slist_append(r->hdrs, "Expect:");   /* no 100-continue round trip */
    if (!hd) goto fail;
    r->hdrs = hd;

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);   /* total: llama-server is silent until done */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms && timeout_ms < HTTP_CONNECT_TIMEOUT_MS
                     ? timeout_ms : HTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (post) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        if (method && strcasecmp(method, "POST")) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (method && strcasecmp(method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    r->start_ns = uv_hrtime();

    r->next = h->reqs;
    if (h->reqs) h->reqs->prev = r;
    h->reqs = r;
    h->active++;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        req_unlink(r);
        goto fail;
    }
    return r;
fail:
    req_free(r);
    return NULL;
}

void kgx_http_cancel(kgx_http_req_t *r)
{
    if (!r || r->done) return;
    curl_multi_remove_handle(r->h->multi, r->easy);   /* also drops a queued DONE message */
    req_unlink(r);
    req_free(r);
}

size_t kgx_http_active(const kgx_http_t *h) { return h ? h->active : 0; }
