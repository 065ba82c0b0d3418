/* t_http — kgx_http against a tiny blocking HTTP/1.1 server running in threads of this process.
 *
 * Server paths: /ok → 200 "hello"; /500 → 500 "oops"; /big?n=N → 200 with N bytes;
 * /sleep?ms=N → waits N ms then 200; /close → closes without answering; /echo → 200 with the
 * request body. Connections are kept alive (Content-Length framing). */
#include "http.h"
/* tap.h's ok() trips -Wmisleading-indentation under -Werror (gcc 12) */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server ---- */

static int srv_fd = -1;
static int srv_port;
static atomic_int srv_quit;
static pthread_t srv_thread;
static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t conn_threads[1024];
static int n_conn_threads;

static void msleep(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int status, const char *body, size_t len)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n", status, len);
    if (send_all(fd, hdr, (size_t)n) < 0) return -1;
    return send_all(fd, body, len);
}

static long query_num(const char *path, const char *key, long dflt)
{
    const char *q = strstr(path, key);
    return q ? atol(q + strlen(key)) : dflt;
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        /* read headers */
        char *eoh;
        while (!(eoh = memmem(buf, len, "\r\n\r\n", 4))) {
            if (len + 4096 > cap) { cap *= 2; buf = realloc(buf, cap); }
            ssize_t r = recv(fd, buf + len, cap - len, 0);
            if (r <= 0) goto out;
            len += (size_t)r;
        }
        size_t hlen = (size_t)(eoh - buf) + 4;
        char method[16] = "", path[512] = "";
        char line[600];
        size_t ll = hlen < sizeof line - 1 ? hlen : sizeof line - 1;
        memcpy(line, buf, ll);
        line[ll] = '\0';
        sscanf(line, "%15s %511s", method, path);
        size_t clen = 0;
        const char *cl = memmem(buf, hlen, "Content-Length:", 15);
        if (!cl) cl = memmem(buf, hlen, "content-length:", 15);
        if (cl) clen = (size_t)atol(cl + 15);
        while (len < hlen + clen) {
            if (hlen + clen + 1 > cap) { cap = hlen + clen + 1; buf = realloc(buf, cap); }
            ssize_t r = recv(fd, buf + len, cap - len, 0);
            if (r <= 0) goto out;
            len += (size_t)r;
        }
        char *body = buf + hlen;
        int rc = 0;
        if (!strncmp(path, "/ok", 3)) rc = respond(fd, 200, "hello", 5);
        else if (!strncmp(path, "/500", 4)) rc = respond(fd, 500, "oops", 4);
        else if (!strncmp(path, "/big", 4)) {
            size_t n = (size_t)query_num(path, "n=", 1 << 20);
            char *b = malloc(n);
            memset(b, 'x', n);
            rc = respond(fd, 200, b, n);
            free(b);
        } else if (!strncmp(path, "/chunked", 8)) {   /* no Content-Length: the cap must hit mid-stream */
            size_t n = (size_t)query_num(path, "n=", 1 << 20);
            char chunk[4096 + 16];
            const char *h = "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n";
            rc = send_all(fd, h, strlen(h));
            while (rc == 0 && n) {
                size_t k = n < 4096 ? n : 4096;
                int hl = snprintf(chunk, sizeof chunk, "%zx\r\n", k);
                memset(chunk + hl, 'y', k);
                memcpy(chunk + hl + k, "\r\n", 2);
                rc = send_all(fd, chunk, (size_t)hl + k + 2);
                n -= k;
            }
            if (rc == 0) rc = send_all(fd, "0\r\n\r\n", 5);
        } else if (!strncmp(path, "/sleep", 6)) {
            msleep(query_num(path, "ms=", 1000));
            rc = respond(fd, 200, "slept", 5);
        } else if (!strncmp(path, "/close", 6)) {
            goto out;
        } else if (!strncmp(path, "/echo", 5)) {
            rc = respond(fd, 200, body, clen);
        } else rc = respond(fd, 404, "", 0);
        if (rc < 0) goto out;
        memmove(buf, buf + hlen + clen, len - hlen - clen);
        len -= hlen + clen;
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *srv_main(void *arg)
{
    for (;;) {
        int c = accept(srv_fd, NULL, NULL);
        if (atomic_load(&srv_quit)) { if (c >= 0) close(c); break; }
        if (c < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; break; }
        pthread_mutex_lock(&srv_mu);
        if (n_conn_threads < 1024 &&
            pthread_create(&conn_threads[n_conn_threads], NULL, conn_main, (void *)(intptr_t)c) == 0)
            n_conn_threads++;
        else close(c);
        pthread_mutex_unlock(&srv_mu);
    }
    return NULL;
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 256) < 0) return -1;
    getsockname(fd, (struct sockaddr *)&a, &al);
    *port = ntohs(a.sin_port);
    return fd;
}

static void srv_start(void)
{
    srv_fd = listen_any(&srv_port);
    pthread_create(&srv_thread, NULL, srv_main, NULL);
}

static void srv_stop(void)
{
    atomic_store(&srv_quit, 1);
    /* wake accept() */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    connect(c, (struct sockaddr *)&a, sizeof a);
    close(c);
    pthread_join(srv_thread, NULL);
    close(srv_fd);
    for (int i = 0; i < n_conn_threads; i++) pthread_join(conn_threads[i], NULL);
}

/* ---- client side helpers ---- */

static uv_loop_t loop;
static kgx_http_t *H;

typedef struct {
    int calls;
    int err;
    long status;
    char errmsg[256];
    char *body;
    size_t body_len;
} result_t;

static void rec_cb(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud)
{
    result_t *r = ud;
    r->calls++;
    r->err = resp->err;
    r->status = resp->status;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", resp->errmsg);
    free(r->body);
    r->body = malloc(resp->body_len + 1);
    memcpy(r->body, resp->body, resp->body_len + 1);
    r->body_len = resp->body_len;
}

static char url_buf[256];
static const char *url(const char *path)
{
    snprintf(url_buf, sizeof url_buf, "http://127.0.0.1:%d%s", srv_port, path);
    return url_buf;
}

/* Run the loop until *flag != 0 or ms elapsed. */
static void run_until(int *flag, long ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while ((!flag || !*flag) && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
}

static void on_wake(uv_timer_t *t) {}

/* Run the loop for ms regardless (a timer keeps it alive). */
static void run_for(long ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_wake, (uint64_t)ms, 0);
    run_until(NULL, ms);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static result_t one(const char *method, const char *path, const char *body, size_t blen,
                    long timeout, size_t max_body)
{
    result_t r = { 0 };
    kgx_http_req_t *q = kgx_http_submit(H, method, url(path), body, blen, timeout, max_body, rec_cb, &r);
    if (!q) { r.calls = -1; return r; }
    run_until(&r.calls, 10000);
    return r;
}

/* ---- tests ---- */

static void t_basic(void)
{
    result_t r = one("GET", "/ok", NULL, 0, 2000, 0);
    is_int(r.calls, 1, "GET /ok completes once");
    is_int(r.err, KGX_HTTP_OK, "GET /ok err OK");
    is_int(r.status, 200, "status 200");
    is_str(r.body, "hello", "body");
    is_int(r.body_len, 5, "body_len");
    is_int(kgx_http_active(H), 0, "nothing active after completion");
    free(r.body);

    r = one("POST", "/500", "{}", 2, 2000, 0);
    is_int(r.err, KGX_HTTP_OK, "500 is a transport success");
    is_int(r.status, 500, "status 500");
    is_str(r.body, "oops", "500 body");
    free(r.body);

    r = one("GET", "/big?n=1000000", NULL, 0, 5000, 0);
    is_int(r.err, KGX_HTTP_OK, "1 MB body under default max");
    is_int(r.body_len, 1000000, "1 MB body length");
    free(r.body);

    r = one("GET", "/big?n=1000000", NULL, 0, 5000, 1000);
    is_int(r.err, KGX_HTTP_ETOOBIG, "body over max_body -> ETOOBIG (%s)", r.errmsg);
    ok(r.errmsg[0] != 0, "ETOOBIG errmsg: %s", r.errmsg);
    ok(r.body_len <= 1000, "kept at most max_body bytes (%zu)", r.body_len);
    free(r.body);

    r = one("GET", "/chunked?n=100000", NULL, 0, 5000, 0);
    is_int(r.err, KGX_HTTP_OK, "chunked body ok");
    is_int(r.body_len, 100000, "chunked body length");
    free(r.body);

    r = one("GET", "/chunked?n=1000000", NULL, 0, 5000, 10000);
    is_int(r.err, KGX_HTTP_ETOOBIG, "chunked body over max_body -> ETOOBIG (%s)", r.errmsg);
    ok(r.body_len <= 10000, "kept at most max_body bytes (%zu)", r.body_len);
    free(r.body);

    r = one("GET", "/ok", NULL, 0, 2000, 0);
    is_int(r.status, 200, "handle still fine after an aborted transfer");
    free(r.body);

    uint64_t t0 = uv_hrtime();
    r = one("POST", "/sleep?ms=1500", "{}", 2, 300, 0);
    double el = (double)(uv_hrtime() - t0) / 1e6;
    is_int(r.err, KGX_HTTP_ETIMEOUT, "slow answer -> ETIMEOUT (%s)", r.errmsg);
    ok(el >= 250 && el < 1400, "timed out after ~300 ms (%.0f ms)", el);
    free(r.body);

    r = one("POST", "/close", "{}", 2, 2000, 0);
    is_int(r.err, KGX_HTTP_ERESET, "closed without answer -> ERESET (%s)", r.errmsg);
    ok(strchr(r.errmsg, '\n') == NULL && r.errmsg[0], "errmsg is one line: %s", r.errmsg);
    free(r.body);

    int port;
    int fd = listen_any(&port);
    close(fd);   /* nothing listens there now */
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", port);
    result_t c = { 0 };
    ok(kgx_http_submit(H, "GET", u, NULL, 0, 2000, 0, rec_cb, &c) != NULL, "submit to closed port");
    run_until(&c.calls, 5000);
    is_int(c.err, KGX_HTTP_ECONNECT, "closed port -> ECONNECT (%s)", c.errmsg);
    free(c.body);

    ok(kgx_http_submit(H, "GET", NULL, NULL, 0, 100, 0, rec_cb, &c) == NULL, "NULL url -> NULL");
    ok(kgx_http_submit(NULL, "GET", "http://x/", NULL, 0, 100, 0, rec_cb, &c) == NULL, "NULL handle -> NULL");
}

static int conc_done;
static void conc_cb(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud)
{
    int *slot = ud;
    slot[0]++;
    slot[1] = resp->err == KGX_HTTP_OK && resp->status == 200 && resp->body_len == (size_t)slot[2]
              && !memcmp(resp->body, (char *)&slot[3], (size_t)slot[2]);
    conc_done++;
}

static void t_concurrent(void)
{
    enum { N = 50 };
    /* slot: calls, good, body length, body bytes */
    static int slots[N][12];
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < N; i++) {
        char *b = (char *)&slots[i][3];
        slots[i][2] = snprintf(b, 32, "{\"i\":%d}", i);
        char p[64];
        snprintf(p, sizeof p, "/echo?i=%d", i);
        if (!kgx_http_submit(H, "POST", url(p), b, (size_t)slots[i][2], 5000, 0, conc_cb, slots[i]))
            diag("submit %d failed", i);
    }
    is_int(kgx_http_active(H), N, "50 active");
    uint64_t end = uv_hrtime() + 10000000000ull;
    while (conc_done < N && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
    run_for(50);
    int once = 1, good = 1;
    for (int i = 0; i < N; i++) { once &= slots[i][0] == 1; good &= slots[i][1]; }
    is_int(conc_done, N, "50 concurrent callbacks");
    ok(once, "each exactly once");
    ok(good, "each got its own body back");
    is_int(kgx_http_active(H), 0, "none active");
}

static void t_cancel(void)
{
    result_t a = { 0 }, b = { 0 };
    kgx_http_req_t *qa = kgx_http_submit(H, "POST", url("/sleep?ms=200"), "{}", 2, 3000, 0, rec_cb, &a);
    kgx_http_submit(H, "GET", url("/ok"), NULL, 0, 3000, 0, rec_cb, &b);
    kgx_http_cancel(qa);
    is_int(kgx_http_active(H), 1, "cancel removes from active");
    run_until(&b.calls, 3000);
    run_for(500);
    is_int(a.calls, 0, "cancelled request: no callback");
    is_int(b.calls, 1, "other request completes");
    kgx_http_cancel(NULL);
    free(a.body); free(b.body);

    /* cancel immediately after submit, before the loop ever ran */
    result_t c = { 0 };
    kgx_http_cancel(kgx_http_submit(H, "GET", url("/ok"), NULL, 0, 3000, 0, rec_cb, &c));
    run_for(100);
    is_int(c.calls, 0, "cancel before the loop runs: no callback");
}

/* A's callback cancels B (still sleeping), cancels itself (no-op), and submits C. */
static kgx_http_req_t *qb;
static result_t ra, rb, rc;
static void a_cb(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud)
{
    rec_cb(req, resp, ud);
    kgx_http_cancel(qb);
    kgx_http_cancel(req);
    if (!kgx_http_submit(H, "GET", url("/ok"), NULL, 0, 3000, 0, rec_cb, &rc)) diag("submit C failed");
}

/* Two fast requests; whichever finishes first cancels the other: exactly one callback overall,
 * even when both completions were already queued by curl. */
static kgx_http_req_t *pair[2];
static int pair_calls[2];
static void pair_cb(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud)
{
    int i = (int)(intptr_t)ud;
    pair_calls[i]++;
    kgx_http_cancel(pair[1 - i]);
}

static void t_cancel_in_cb(void)
{
    kgx_http_submit(H, "GET", url("/ok"), NULL, 0, 3000, 0, a_cb, &ra);
    qb = kgx_http_submit(H, "GET", url("/sleep?ms=300"), NULL, 0, 3000, 0, rec_cb, &rb);
    run_until(&rc.calls, 3000);
    run_for(500);
    is_int(ra.calls, 1, "A called once");
    is_int(rb.calls, 0, "B cancelled from A's callback: never called");
    is_int(rc.calls, 1, "C submitted from A's callback completes");
    is_int(rc.status, 200, "C status 200");
    free(ra.body); free(rb.body); free(rc.body);

    for (int round = 0; round < 20; round++) {
        pair_calls[0] = pair_calls[1] = 0;
        for (int i = 0; i < 2; i++)
            pair[i] = kgx_http_submit(H, "GET", url("/ok"), NULL, 0, 3000, 0, pair_cb, (void *)(intptr_t)i);
        uint64_t end = uv_hrtime() + 3000000000ull;
        while (!pair_calls[0] && !pair_calls[1] && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
        run_for(20);
        if (pair_calls[0] + pair_calls[1] != 1) {
            ok(0, "round %d: %d+%d callbacks", round, pair_calls[0], pair_calls[1]);
            return;
        }
    }
    ok(1, "first of a pair cancels the other: exactly one callback (20 rounds)");
}

static void t_echo(void)
{
    const char *u8 = "{\"text\":\"Grüße — naïve café 日本語 🦀🎉 \\\"quoted\\\" \\\\ back\"}";
    result_t r = one("POST", "/echo", u8, strlen(u8), 3000, 0);
    is_int(r.status, 200, "echo status");
    is_int(r.body_len, strlen(u8), "UTF-8 echo length");
    ok(r.body && !memcmp(r.body, u8, strlen(u8)), "UTF-8 echo byte-exact");
    free(r.body);

    size_t n = 2u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)(1 + (i * 7919 + i / 251) % 255);  /* no NUL */
    r = one("POST", "/echo", big, n, 10000, 4u << 20);
    is_int(r.err, KGX_HTTP_OK, "2 MB echo ok (%s)", r.errmsg);
    is_int(r.body_len, n, "2 MB echo length");
    ok(r.body && !memcmp(r.body, big, n), "2 MB echo byte-exact");
    ok(r.body && r.body[n] == '\0', "body NUL-terminated");
    free(r.body);
    free(big);

    r = one("POST", "/echo", NULL, 0, 3000, 0);
    is_int(r.status, 200, "POST with NULL body");
    is_int(r.body_len, 0, "empty echo");
    free(r.body);
}

/* Freeing the handle with requests in flight: no callbacks, loop closes cleanly. */
static void t_free_inflight(void)
{
    kgx_http_t *h2 = kgx_http_new(&loop);
    result_t r = { 0 };
    kgx_http_submit(h2, "POST", url("/sleep?ms=200"), "{}", 2, 3000, 0, rec_cb, &r);
    kgx_http_submit(h2, "GET", url("/ok"), NULL, 0, 3000, 0, rec_cb, &r);
    run_for(50);
    int before = r.calls;
    kgx_http_free(h2);
    run_for(300);
    is_int(r.calls, before, "no callbacks after kgx_http_free");
    kgx_http_free(NULL);
    free(r.body);
}

/* Freeing the handle from inside a callback. */
static kgx_http_t *h3;
static int h3_calls;
static void free_cb(kgx_http_req_t *req, const kgx_http_resp_t *resp, void *ud)
{
    h3_calls++;
    kgx_http_free(h3);
}

static void t_free_in_cb(void)
{
    h3 = kgx_http_new(&loop);
    kgx_http_submit(h3, "GET", url("/ok"), NULL, 0, 3000, 0, free_cb, NULL);
    kgx_http_submit(h3, "GET", url("/ok"), NULL, 0, 3000, 0, free_cb, NULL);
    kgx_http_submit(h3, "GET", url("/sleep?ms=100"), NULL, 0, 3000, 0, free_cb, NULL);
    run_until(&h3_calls, 3000);
    run_for(300);
    is_int(h3_calls, 1, "free from a callback: no further callbacks");
}

int main(void)
{
    srv_start();
    uv_loop_init(&loop);
    H = kgx_http_new(&loop);
    ok(H != NULL, "kgx_http_new");
    t_basic();
    t_concurrent();
    t_cancel();
    t_cancel_in_cb();
    t_echo();
    t_free_inflight();
    t_free_in_cb();
    kgx_http_free(H);
    uv_run(&loop, UV_RUN_DEFAULT);   /* finish closing handles */
    is_int(uv_loop_close(&loop), 0, "loop closes: no handles left");
    srv_stop();
    return done_testing();
}
