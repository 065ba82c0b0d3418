/* httpd — the small status HTTP server on the loop (GET /kg-extract/status, /metrics, /healthz).
 *
 * Two layers. The request parser (kgx_httpd_req_*, httpd_req.c) is pure: bytes in, a verdict out,
 * no sockets, so the fuzzer and the tests drive it directly. This file is the connection layer: it
 * owns one uv_tcp_t and one uv_timer_t per client and moves each connection through
 *
 *     READ ──(request complete, or an error status, or the deadline)──► WRITE ──► LINGER ──► CLOSED
 *
 * One request per connection, answered with Connection: close. After the answer is written we
 * shut down our side and keep draining what the client still sends (briefly) before closing:
 * closing a socket with unread input makes the kernel send RST, and the client may then lose
 * the 4xx we just wrote — exactly when it matters (431, 413).
 *
 * Everything is bounded: 8 KiB of request head, a short deadline for the head (2 s), a deadline
 * for writing the answer, and a number of client slots (1024, fewer when the process may open
 * fewer files). Nothing here blocks the loop.
 *
 * Under abuse (a crowd of clients that connect and send nothing, or a head byte by byte) the slots
 * fill up. A new connection is then always admitted, and a slot is taken back from the client that
 * has shown the least: first one already answered (lingering), then the one in READ that has been
 * quiet longest (it has not finished a request, so it is not authenticated either), last the
 * oldest one still being written to. A monitor's /healthz therefore gets through whatever the
 * crowd does, and each abuser holds a slot at most for the head deadline. */
#include "httpd.h"

#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS  1024        /* client slots (capped by RLIMIT_NOFILE, see slots_for_fd_limit) */
#define FD_RESERVE   256         /* descriptors left for the database, curl and the rest */
#define MIN_CLIENTS  64
#define HEAD_TIMEOUT_MS 2000     /* connect → complete request head */
#define TIMEOUT_MS   5000        /* writing the answer */
#define LINGER_MS    1000        /* upper bound on draining after the answer */

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                 */

enum conn_state { C_READ, C_WRITE, C_LINGER, C_CLOSED };

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t sd;
    kgx_httpd_t *h;
    kgx_httpd_req_t *req;
    char *out;
    int state;
    int open_handles;
    int peer_eof;
    uint64_t last_active;        /* loop time (ms) of accept or of the last bytes read */
    struct conn *prev, *next;
    char rbuf[4096];
} conn_t;

struct kgx_httpd {
    uv_loop_t *loop;
    uv_tcp_t server;
    char *api_key;
    size_t api_key_len;
    kgx_httpd_handler handler;
    void *ud;
    unsigned timeout_ms;
    int max_clients;
    unsigned long evicted;       /* slots taken back from idle clients (logged, for tests) */
    int nclients;                /* allocated (includes closing ones): h lives while > 0 */
    int nactive;                 /* not yet closing: what the client cap counts */
    int closing;
    int server_open;
    conn_t *clients;
};

static void httpd_maybe_release(kgx_httpd_t *h)
{
    if (h->closing && !h->server_open && h->nclients == 0) {
        free(h->api_key);
        free(h);
    }
}

static void server_close_cb(uv_handle_t *handle)
{
    kgx_httpd_t *h = handle->data;
    h->server_open = 0;
    httpd_maybe_release(h);
}

static void conn_close_cb(uv_handle_t *handle)
{
    conn_t *c = handle->data;
    if (--c->open_handles > 0)
        return;
    kgx_httpd_t *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nclients--;
    kgx_httpd_req_free(c->req);
    free(c->out);
    free(c);
    httpd_maybe_release(h);
}

static void conn_close(conn_t *c)
{
    if (c->state == C_CLOSED)
        return;
    c->state = C_CLOSED;
    c->h->nactive--;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

/* Our own error answers: small JSON objects, like the status endpoint. */
static char *error_body(int status, size_t *len)
{
    const char *msg;
    switch (status) {
    case 400: msg = "bad request"; break;
    case 401: msg = "missing or wrong X-API-Key"; break;
    case 404: msg = "not found"; break;
    case 405: msg = "method not allowed (GET and HEAD only)"; break;
    case 408: msg = "request timeout"; break;
    case 413: msg = "request bodies are not accepted"; break;
    case 431: msg = "request head over 8 KiB"; break;
    default:  msg = reason(status); break;
    }
    char *b = NULL;
    int n = asprintf(&b, "{\"error\":\"%s\",\"status\":%d}\n", msg, status);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return b;
}

static void timer_cb(uv_timer_t *t);
static void write_cb(uv_write_t *wr, int status);

/* Builds and starts writing the answer; takes ownership of body. */
static void conn_respond(conn_t *c, int status, const char *ctype, char *body, size_t blen, int head)
{
    if (!ctype)
        ctype = "text/plain; charset=utf-8";
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "Content-Length: %zu\r\n"
                      "Cache-Control: no-store\r\n"
                      "X-Content-Type-Options: nosniff\r\n"
                      "%s"
                      "Connection: close\r\n"
                      "\r\n",
                      status, reason(status), ctype, blen, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (hl < 0 || (size_t)hl >= sizeof hdr) {
        free(body);
        conn_close(c);
        return;
    }
    size_t send_body = head ? 0 : blen;
    c->out = malloc((size_t)hl + send_body);
    if (!c->out) {
        free(body);
        conn_close(c);
        return;
    }
    memcpy(c->out, hdr, (size_t)hl);
    if (send_body)
        memcpy(c->out + hl, body, send_body);
    free(body);

    c->state = C_WRITE;
    /* The same deadline again bounds a client that will not read its answer. */
    uv_timer_start(&c->timer, timer_cb, c->h->timeout_ms, 0);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)((size_t)hl + send_body));
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0)
        conn_close(c);
}

static void conn_respond_error(conn_t *c, int status, int head)
{
    size_t len = 0;
    char *body = error_body(status, &len);
    conn_respond(c, status, "application/json", body, body ? len : 0, head);
}

/* The request is complete (rc 1) or refused (rc = status): answer it. */
static void conn_answer(conn_t *c, int rc)
{
    kgx_httpd_t *h = c->h;
    int head = kgx_httpd_req_is_head(c->req);
    if (rc != 1) {
        log_debug("httpd status=%d refused", rc);
        conn_respond_error(c, rc, head);
        return;
    }
    const char *path = kgx_httpd_req_path(c->req);
    if (h->api_key) {
        size_t klen;
        const char *key = kgx_httpd_req_api_key(c->req, &klen);
        if (!key || !kgx_httpd_key_equal(key, klen, h->api_key, h->api_key_len)) {
            log_debug("httpd status=401 path=%s", path);
            conn_respond_error(c, 401, head);
            return;
        }
    }
    kgx_httpd_resp_t resp = { 0 };
    h->handler(path, &resp, h->ud);
    if (c->state != C_READ) {           /* the handler freed the server under us */
        free(resp.body);
        return;
    }
    if (resp.status == 0) {
        free(resp.body);
        log_debug("httpd status=404 path=%s", path);
        conn_respond_error(c, 404, head);
        return;
    }
    log_debug("httpd status=%d path=%s bytes=%zu", resp.status, path, resp.body_len);
    conn_respond(c, resp.status, resp.content_type, resp.body, resp.body ? resp.body_len : 0, head);
}

static void shutdown_cb(uv_shutdown_t *sd, int status)
{
    conn_t *c = sd->data;
    if (status < 0)
        conn_close(c);
}

static void write_cb(uv_write_t *wr, int status)
{
    conn_t *c = wr->data;
    free(c->out);
    c->out = NULL;
    if (c->state == C_CLOSED)
        return;
    if (status < 0 || c->peer_eof) {
        conn_close(c);
        return;
    }
    /* Send FIN, then drain until the client closes (or briefly): see the top of the file. */
    c->state = C_LINGER;
    unsigned linger = c->h->timeout_ms < LINGER_MS ? c->h->timeout_ms : LINGER_MS;
    uv_timer_start(&c->timer, timer_cb, linger, 0);
    if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, shutdown_cb) != 0)
        conn_close(c);
}

static void timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state == C_READ) {
        log_debug("httpd status=408 client too slow");
        conn_respond_error(c, 408, 0);
    } else {
        conn_close(c);
    }
}

/* The request head must be complete within this (the answer gets timeout_ms). */
static unsigned head_timeout_ms(const kgx_httpd_t *h)
{
    return h->timeout_ms < HEAD_TIMEOUT_MS ? h->timeout_ms : HEAD_TIMEOUT_MS;
}

/* The slots are full: take one back, never from `keep` (the connection just accepted). Order: a
 * lingering one (already answered), the quietest one still reading its request (unauthenticated:
 * the key is checked only on a complete head), the oldest one being written to. Closed without
 * an answer: writing one would keep the slot. */
static void evict_one(kgx_httpd_t *h, conn_t *keep)
{
    conn_t *best = NULL;
    int best_rank = 0;
    for (conn_t *c = h->clients; c; c = c->next) {
        if (c == keep || c->state == C_CLOSED)
            continue;
        int rank = c->state == C_LINGER ? 3 : c->state == C_READ ? 2 : 1;
        /* list is newest first: on a tie in time, "<=" moves on to the older one */
        if (!best || rank > best_rank || (rank == best_rank && c->last_active <= best->last_active)) {
            best = c;
            best_rank = rank;
        }
    }
    if (!best) {                        /* cannot happen while max_clients >= 1 */
        conn_close(keep);
        return;
    }
    if (h->evicted++ % 100 == 0)        /* an abuser makes this frequent: log a sample */
        log_info("httpd slots full (%d): closed an idle connection to admit a new one (%lu so far)",
                 h->max_clients, h->evicted);
    conn_close(best);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = handle->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state == C_WRITE && nread == UV_EOF) {
            /* Half-close after the request (curl, nc): still let the answer go out. */
            c->peer_eof = 1;
            uv_read_stop(s);
        } else {
            conn_close(c);
        }
        return;
    }
    if (c->state != C_READ)
        return;                         /* draining */
    c->last_active = uv_now(c->h->loop);
    int rc = kgx_httpd_req_feed(c->req, buf->base, (size_t)nread);
    if (rc != 0)
        conn_answer(c, rc);
}

static void connection_cb(uv_stream_t *server, int status)
{
    kgx_httpd_t *h = server->data;
    if (status < 0) {
        log_warn("httpd accept: %s", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;                         /* libuv calls us again; nothing else to do */
    c->h = h;
    c->tcp.data = c->timer.data = c->wr.data = c->sd.data = c;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->open_handles = 2;
    c->next = h->clients;
    if (h->clients)
        h->clients->prev = c;
    h->clients = c;
    h->nclients++;
    h->nactive++;

    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (h->nactive > h->max_clients)
        evict_one(h, c);
    c->req = kgx_httpd_req_new();
    if (!c->req) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->last_active = uv_now(h->loop);
    uv_timer_start(&c->timer, timer_cb, head_timeout_ms(h), 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_close(c);
}

/* MAX_CLIENTS, fewer when the soft RLIMIT_NOFILE leaves less than that beside FD_RESERVE. */
static int slots_for_fd_limit(void)
{
    struct rlimit rl;
    int n = MAX_CLIENTS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)MAX_CLIENTS + FD_RESERVE)
        n = rl.rlim_cur > (rlim_t)FD_RESERVE + MIN_CLIENTS ? (int)(rl.rlim_cur - FD_RESERVE) : MIN_CLIENTS;
    return n;
}

kgx_httpd_t *kgx_httpd_new(uv_loop_t *loop, const char *addr, const char *api_key,
                           kgx_httpd_handler handler, void *ud, char *err, size_t errlen)
{
    char host[256];
    int port;
    struct sockaddr_storage ss;
    if (!err || errlen == 0) {
        static char scratch[1];
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (!loop || !handler) {
        snprintf(err, errlen, "httpd: no loop or handler");
        return NULL;
    }
    if (kgx_httpd_parse_listen(addr, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "bad listen address '%s' (want HOST:PORT, [IPv6]:PORT or :PORT)",
                 addr ? addr : "");
        return NULL;
    }
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "bad listen address '%s': host must be a numeric IPv4/IPv6 address or localhost",
                 addr);
        return NULL;
    }

    kgx_httpd_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "httpd: out of memory");
        return NULL;
    }
    h->loop = loop;
    h->handler = handler;
    h->ud = ud;
    h->timeout_ms = TIMEOUT_MS;
    h->max_clients = slots_for_fd_limit();
    if (api_key && *api_key) {
        h->api_key = strdup(api_key);
        if (!h->api_key) {
            free(h);
            snprintf(err, errlen, "httpd: out of memory");
            return NULL;
        }
        h->api_key_len = strlen(api_key);
    }
    /* Bind and listen on a plain socket first, so that every likely failure (address in use,
     * permission) happens before a libuv handle exists and h can be freed right here. */
    struct sockaddr *sa = (struct sockaddr *)&ss;
    socklen_t salen = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int one = 1, rc = 0;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, sa, salen) < 0 || listen(fd, 128) < 0)
        rc = -errno;
    if (rc == 0)
        rc = uv_tcp_init(loop, &h->server);
    if (rc != 0) {
        snprintf(err, errlen, "httpd %s: %s", addr, uv_strerror(rc));
        if (fd >= 0)
            close(fd);
        free(h->api_key);
        free(h);
        return NULL;
    }
    h->server.data = h;
    h->server_open = 1;
    rc = uv_tcp_open(&h->server, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 128, connection_cb);
    if (rc != 0) {                      /* unlikely past a successful addr() */
        snprintf(err, errlen, "httpd %s: %s", addr, uv_strerror(rc));
        h->closing = 1;
        uv_close((uv_handle_t *)&h->server, server_close_cb);   /* closes fd, frees h on the next loop turn */
        return NULL;
    }
    return h;
}

void kgx_httpd_free(kgx_httpd_t *h)
{
    if (!h || h->closing)
        return;
    h->closing = 1;
    for (conn_t *c = h->clients; c; c = c->next)
        conn_close(c);                  /* unlinks happen later, in the close callbacks */
    uv_close((uv_handle_t *)&h->server, server_close_cb);
}

int kgx_httpd_port(const kgx_httpd_t *h)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!h || uv_tcp_getsockname(&h->server, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

void kgx_httpd_set_timeout_ms(kgx_httpd_t *h, unsigned ms)
{
    if (h)
        h->timeout_ms = ms ? ms : 1;
}

void kgx_httpd_set_max_clients(kgx_httpd_t *h, int n)
{
    if (h)
        h->max_clients = n > 0 ? n : 1;
}

int kgx_httpd_max_clients(const kgx_httpd_t *h)
{
    return h ? h->max_clients : -1;
}

unsigned long kgx_httpd_evicted(const kgx_httpd_t *h)
{
    return h ? h->evicted : 0;
}
