/* t_httpd — the status server over real sockets: the loop runs in the main thread, plain blocking
 * clients in a second one. Also the pure pieces: request parser, listen address, key compare. */
#include "httpd.h"
#include "metrics.h"
/* tap.h's one-line macros trip -Wmisleading-indentation under -Werror */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int port_open, port_key, port_slow, port_cap;
static kgx_httpd_t *h_open, *h_key, *h_slow, *h_cap;
static uv_async_t done_async;

static void handler(const char *path, kgx_httpd_resp_t *resp, void *ud)
{
    if (strcmp(path, "/healthz") == 0) {
        resp->status = 200;
        resp->content_type = "text/plain; charset=utf-8";
        resp->body = strdup("ok\n");
        resp->body_len = 3;
    } else if (strcmp(path, "/metrics") == 0) {
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        resp->body = kgx_metrics_render(&resp->body_len);
    } else if (strcmp(path, "/kg-extract/status") == 0) {
        resp->status = 200;
        resp->content_type = "application/json";
        resp->body = strdup("{\"queue_depth\":1}");
        resp->body_len = strlen(resp->body);
    } else if (strcmp(path, "/teapot") == 0) {
        resp->body = strdup("ignored");   /* no status: 404, body freed by httpd */
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until EOF (or error/timeout); returns a malloc'd NUL-terminated string. */
static char *read_all(int fd, int *err)
{
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    *err = 0;
    for (;;) {
        if (len + 1024 > cap)
            b = realloc(b, cap *= 2);
        ssize_t r = recv(fd, b + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *err = errno;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    b[len] = '\0';
    return b;
}

static int status_of(const char *resp)
{
    int st = 0;
    if (sscanf(resp, "HTTP/1.1 %d ", &st) != 1)
        return -1;
    return st;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p ? p + 4 : "";
}

static char *roundtrip(int port, const char *req, size_t len)
{
    int fd = connect_to(port), err;
    if (fd < 0)
        return strdup("");
    send_all(fd, req, len);
    char *r = read_all(fd, &err);
    close(fd);
    return r;
}

#define RT(port, s) roundtrip(port, s, strlen(s))

static void *client_thread(void *arg)
{
    char *r;

    /* basics */
    r = RT(port_open, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    is_int(status_of(r), 200, "GET /healthz 200");
    is_str(body_of(r), "ok\n", "body");
    ok(strstr(r, "\r\nContent-Type: text/plain; charset=utf-8\r\n") != NULL, "Content-Type");
    ok(strstr(r, "\r\nContent-Length: 3\r\n") != NULL, "Content-Length");
    ok(strstr(r, "\r\nConnection: close\r\n") != NULL, "Connection: close");
    ok(strstr(r, "\r\nCache-Control: no-store\r\n") != NULL, "Cache-Control: no-store");
    free(r);

    r = RT(port_open, "GET /healthz?verbose=1#frag HTTP/1.0\r\n\r\n");
    is_int(status_of(r), 200, "query string stripped, HTTP/1.0 accepted");
    free(r);

    r = RT(port_open, "GET http://localhost/healthz HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 200, "absolute-form URL");
    free(r);

    r = RT(port_open, "HEAD /healthz HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 200, "HEAD 200");
    ok(strstr(r, "\r\nContent-Length: 3\r\n") != NULL, "HEAD: Content-Length of the GET body");
    is_str(body_of(r), "", "HEAD: no body");
    free(r);

    r = RT(port_open, "GET /metrics HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 200, "GET /metrics 200");
    ok(strstr(body_of(r), "# TYPE kgx_drawers_total counter") != NULL, "metrics body");
    free(r);

    r = RT(port_open, "GET /nope HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 404, "unknown path 404");
    ok(strstr(r, "Content-Type: application/json") && strstr(body_of(r), "\"error\""), "404 JSON body");
    free(r);

    r = RT(port_open, "GET /teapot HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 404, "handler without status: 404 (its body freed)");
    free(r);

    r = RT(port_open, "POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    is_int(status_of(r), 405, "POST 405");
    ok(strstr(r, "\r\nAllow: GET, HEAD\r\n") != NULL, "405 carries Allow");
    free(r);

    r = RT(port_open, "DELETE / HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 405, "DELETE 405");
    free(r);

    r = RT(port_open, "GARBAGE\r\n\r\n");
    is_int(status_of(r), 400, "garbage request line 400");
    free(r);

    r = RT(port_open, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
    is_int(status_of(r), 400, "malformed header 400");
    free(r);

    r = RT(port_open, "GET /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd");
    is_int(status_of(r), 413, "GET with a body 413");
    free(r);

    r = RT(port_open, "GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    is_int(status_of(r), 413, "chunked body 413");
    free(r);

    r = RT(port_open, "GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    is_int(status_of(r), 200, "Content-Length: 0 is fine");
    free(r);

    {
        size_t n = 9000;
        char *big = malloc(n + 64);
        int off = sprintf(big, "GET /healthz HTTP/1.1\r\nX-Big: ");
        memset(big + off, 'a', n);
        strcpy(big + off + n, "\r\n\r\n");
        r = roundtrip(port_open, big, strlen(big));
        is_int(status_of(r), 431, "headers over 8 KiB 431");
        free(r);
        /* a long head that fits: 8000 bytes */
        off = sprintf(big, "GET /healthz HTTP/1.1\r\nX-Big: ");
        memset(big + off, 'a', 7900);
        strcpy(big + off + 7900, "\r\n\r\n");
        r = roundtrip(port_open, big, strlen(big));
        is_int(status_of(r), 200, "a 7.9 KiB head is fine");
        free(r);
        free(big);
    }

    /* a client that half-closes after its request still gets the answer */
    {
        int fd = connect_to(port_open), err;
        const char *q = "GET /healthz HTTP/1.1\r\n\r\n";
        send_all(fd, q, strlen(q));
        shutdown(fd, SHUT_WR);
        r = read_all(fd, &err);
        is_int(status_of(r), 200, "half-closed client gets 200");
        free(r);
        close(fd);
    }

    /* byte by byte */
    {
        int fd = connect_to(port_open), err;
        const char *q = "GET /kg-extract/status HTTP/1.1\r\nHost: a\r\n\r\n";
        for (size_t i = 0; q[i]; i++) {
            send_all(fd, q + i, 1);
            usleep(1000);
        }
        r = read_all(fd, &err);
        is_int(status_of(r), 200, "request sent byte by byte");
        is_str(body_of(r), "{\"queue_depth\":1}", "status body");
        free(r);
        close(fd);
    }

    /* API key */
    r = RT(port_key, "GET /healthz HTTP/1.1\r\n\r\n");
    is_int(status_of(r), 401, "no key 401");
    ok(strstr(r, "Content-Type: application/json") && strstr(body_of(r), "{\"error\":"), "401 JSON error body");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nX-API-Key: s3cret-wrong\r\n\r\n");
    is_int(status_of(r), 401, "wrong key 401");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nX-API-Key: s3cre\r\n\r\n");
    is_int(status_of(r), 401, "prefix of the key 401");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nX-API-Key:\r\n\r\n");
    is_int(status_of(r), 401, "empty key 401");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nX-API-Key: s3cret\r\n\r\n");
    is_int(status_of(r), 200, "right key 200");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nx-api-key: s3cret\r\n\r\n");
    is_int(status_of(r), 200, "header name is case-insensitive");
    free(r);
    r = RT(port_key, "GET /healthz HTTP/1.1\r\nX-API-Key: s3cret\r\nX-API-Key: other\r\n\r\n");
    is_int(status_of(r), 400, "two keys 400");
    free(r);
    r = RT(port_key, "GET /nope HTTP/1.1\r\nX-API-Key: s3cret\r\n\r\n");
    is_int(status_of(r), 404, "right key, unknown path 404");
    free(r);

    /* slow clients (server with a 300 ms deadline) */
    {
        double t0 = now_s();
        int fd = connect_to(port_slow), err;
        send_all(fd, "GET /healthz HT", 15);
        r = read_all(fd, &err);
        double dt = now_s() - t0;
        is_int(status_of(r), 408, "partial request: 408");
        ok(dt >= 0.25 && dt < 3.0, "closed after the deadline (%.2f s)", dt);
        is_int(err, 0, "then EOF, not a reset");
        free(r);
        close(fd);

        t0 = now_s();
        fd = connect_to(port_slow);
        r = read_all(fd, &err);
        dt = now_s() - t0;
        is_int(status_of(r), 408, "silent client: 408");
        ok(dt < 3.0, "silent client closed (%.2f s)", dt);
        free(r);
        close(fd);
    }

    /* many at once */
    {
        enum { N = 50 };
        int fds[N], good = 0, err;
        const char *q = "GET /healthz HTTP/1.1\r\n\r\n";
        for (int i = 0; i < N; i++)
            fds[i] = connect_to(port_open);
        for (int i = 0; i < N; i++)
            if (fds[i] >= 0)
                send_all(fds[i], q, strlen(q));
        for (int i = 0; i < N; i++) {
            if (fds[i] < 0)
                continue;
            r = read_all(fds[i], &err);
            good += status_of(r) == 200;
            free(r);
            close(fds[i]);
        }
        is_int(good, N, "%d concurrent connections all answered", N);
    }

    /* slots full (8 on h_cap): a new client is still admitted and served, the quietest
     * unfinished connection is closed to make room; the others keep their slots */
    {
        enum { N = 8 };
        int fds[N], err;
        const char *q = "GET /healthz HTTP/1.1\r\n\r\n";
        for (int i = 0; i < N; i++) {
            fds[i] = connect_to(port_cap);
            usleep(20000);              /* distinct accept times: fds[0] is the quietest */
        }
        if (N > 0)
            send_all(fds[N - 1], "GET /heal", 9);   /* a head in progress, more recent */
        usleep(100000);
        double t0 = now_s();
        r = RT(port_cap, q);
        double dt = now_s() - t0;
        is_int(status_of(r), 200, "slots full: a new client is still served /healthz");
        ok(dt < 1.0, "at once (%.2f s)", dt);
        free(r);
        t0 = now_s();
        r = read_all(fds[0], &err);
        dt = now_s() - t0;
        ok(r[0] == '\0' && dt < 1.0, "the quietest connection was closed to make room (%.2f s)", dt);
        free(r);
        r = RT(port_cap, q);
        is_int(status_of(r), 200, "a second newcomer is served too");
        free(r);
        /* (its slot came from the first newcomer if that one was still lingering, else from fds[1]) */
        send_all(fds[N - 1], "thz HTTP/1.1\r\n\r\n", 17);
        r = read_all(fds[N - 1], &err);
        is_int(status_of(r), 200, "a client that was sending its head kept its slot and is served");
        free(r);
        for (int i = 0; i < N; i++)
            close(fds[i]);
    }

    /* the head deadline is short even with a long answer deadline */
    {
        int fd = connect_to(port_open), err;
        double t0 = now_s();
        r = read_all(fd, &err);
        double dt = now_s() - t0;
        is_int(status_of(r), 408, "silent client on the default server: 408");
        ok(dt >= 1.5 && dt < 3.5, "after the 2 s head deadline (%.2f s)", dt);
        free(r);
        close(fd);
    }

    uv_async_send(&done_async);
    return NULL;
}

static void done_cb(uv_async_t *a)
{
    kgx_httpd_free(h_open);
    kgx_httpd_free(h_key);
    kgx_httpd_free(h_slow);
    kgx_httpd_free(h_cap);
    uv_close((uv_handle_t *)a, NULL);
}

static void test_pure(void)
{
    char host[64], path[64];
    int port = -1;

    is_int(kgx_httpd_parse_listen("127.0.0.1:9464", host, sizeof host, &port), 0, "listen v4");
    ok(strcmp(host, "127.0.0.1") == 0 && port == 9464, "v4 host and port");
    is_int(kgx_httpd_parse_listen("[::1]:9464", host, sizeof host, &port), 0, "listen [v6]");
    is_str(host, "::1", "v6 host without brackets");
    is_int(kgx_httpd_parse_listen(":9464", host, sizeof host, &port), 0, "listen :PORT");
    is_str(host, "127.0.0.1", ":PORT is loopback");
    is_int(kgx_httpd_parse_listen("localhost:0", host, sizeof host, &port), 0, "hostname, port 0");
    ok(port == 0 && strcmp(host, "localhost") == 0, "localhost:0");
    is_int(kgx_httpd_parse_listen("0.0.0.0:65535", host, sizeof host, &port), 0, "port 65535");
    const char *bad[] = { "", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "127.0.0.1:+80", "127.0.0.1:80x", "::1:9464", "[::1]9464", "[::1]:", "[]:80",
                          "[::1:80", "a b:80", "127.0.0.1:123456", "host/x:80" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        is_int(kgx_httpd_parse_listen(bad[i], host, sizeof host, &port), -1, "bad listen '%s'", bad[i]);
    char tiny[4];
    is_int(kgx_httpd_parse_listen("127.0.0.1:80", tiny, sizeof tiny, &port), -1, "host buffer too small");
    is_int(kgx_httpd_parse_listen(NULL, host, sizeof host, &port), -1, "NULL listen");

    is_int(kgx_httpd_parse_request("GET /a?b HTTP/1.1\r\n\r\n", 21, path, sizeof path), 1, "parse GET");
    is_str(path, "/a", "path without query");
    is_int(kgx_httpd_parse_request("GET /a HTTP/1.1\r\n", 17, NULL, 0), 0, "incomplete: need more");
    is_int(kgx_httpd_parse_request("PUT /a HTTP/1.1\r\n\r\n", 19, NULL, 0), 405, "PUT 405");
    is_int(kgx_httpd_parse_request("\x01\x02\x03", 3, NULL, 0), 400, "binary 400");

    kgx_httpd_req_t *r = kgx_httpd_req_new();
    const char *q = "HEAD /x HTTP/1.1\r\nX-Api-Key: k1\r\n\r\nGET /y HTTP/1.1\r\n\r\n";
    is_int(kgx_httpd_req_feed(r, q, strlen(q)), 1, "pipelined: first request complete");
    is_str(kgx_httpd_req_path(r), "/x", "first path only");
    ok(kgx_httpd_req_is_head(r), "HEAD seen");
    size_t kl;
    const char *k = kgx_httpd_req_api_key(r, &kl);
    ok(k && kl == 2 && memcmp(k, "k1", 2) == 0, "key captured");
    is_int(kgx_httpd_req_feed(r, "junk", 4), 1, "later feeds keep the verdict");
    kgx_httpd_req_free(r);
    kgx_httpd_req_free(NULL);

    /* the head cap is exact: 8192 bytes pass, 8193 do not */
    char *big = malloc(9000);
    for (int extra = 0; extra <= 1; extra++) {
        size_t total = 8192 + (size_t)extra;
        int off = sprintf(big, "GET / HTTP/1.1\r\nX: ");
        memset(big + off, 'a', total - (size_t)off - 4);
        memcpy(big + total - 4, "\r\n\r\n", 4);
        r = kgx_httpd_req_new();
        int rc = 0;
        for (size_t i = 0; i < total && rc == 0; i += 1000)
            rc = kgx_httpd_req_feed(r, big + i, total - i < 1000 ? total - i : 1000);
        is_int(rc, extra ? 431 : 1, "head of %zu bytes", total);
        kgx_httpd_req_free(r);
    }
    free(big);

    ok(kgx_httpd_key_equal("abc", 3, "abc", 3), "key equal");
    ok(!kgx_httpd_key_equal("abc", 3, "abd", 3), "key differs");
    ok(!kgx_httpd_key_equal("abc", 3, "abcabc", 6), "repeat of the key is not the key");
    ok(!kgx_httpd_key_equal("", 0, "abc", 3), "empty vs key");
    ok(kgx_httpd_key_equal("", 0, "", 0), "empty vs empty");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_pure();

    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];

    ok(kgx_httpd_new(&loop, "nonsense", NULL, handler, NULL, err, sizeof err) == NULL, "bad address refused");
    ok(strstr(err, "nonsense") != NULL, "error names the address: %s", err);
    ok(kgx_httpd_new(&loop, "example.com:80", NULL, handler, NULL, err, sizeof err) == NULL,
       "non-numeric host refused");

    h_open = kgx_httpd_new(&loop, "127.0.0.1:0", NULL, handler, NULL, err, sizeof err);
    ok(h_open != NULL, "open server up %s", err);
    h_key = kgx_httpd_new(&loop, ":0", "s3cret", handler, NULL, err, sizeof err);
    ok(h_key != NULL, "keyed server up %s", err);
    h_slow = kgx_httpd_new(&loop, "localhost:0", "", handler, NULL, err, sizeof err);
    ok(h_slow != NULL, "slow-test server up %s", err);
    kgx_httpd_set_timeout_ms(h_slow, 300);
    h_cap = kgx_httpd_new(&loop, "127.0.0.1:0", NULL, handler, NULL, err, sizeof err);
    ok(h_cap != NULL, "small-slots server up %s", err);
    ok(kgx_httpd_max_clients(h_cap) >= 64, "default slots: %d (more than the old 64 unless the fd limit is low)",
       kgx_httpd_max_clients(h_cap));
    kgx_httpd_set_max_clients(h_cap, 8);
    port_cap = kgx_httpd_port(h_cap);
    port_open = kgx_httpd_port(h_open);
    port_key = kgx_httpd_port(h_key);
    port_slow = kgx_httpd_port(h_slow);
    ok(port_open > 0 && port_key > 0 && port_slow > 0, "bound ports %d %d %d", port_open, port_key, port_slow);

    kgx_httpd_t *dup = kgx_httpd_new(&loop, "127.0.0.1:0", NULL, handler, NULL, err, sizeof err);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port_open);
    kgx_httpd_free(dup);
    ok(kgx_httpd_new(&loop, addr, NULL, handler, NULL, err, sizeof err) == NULL, "port in use: NULL");
    ok(strstr(err, "address already in use") != NULL, "error says why: %s", err);
    kgx_httpd_free(NULL);
    is_int(kgx_httpd_port(NULL), -1, "port of NULL");

    uv_async_init(&loop, &done_async, done_cb);
    pthread_t th;
    pthread_create(&th, NULL, client_thread, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    is_int(uv_loop_close(&loop), 0, "every handle closed: loop closes cleanly");
    return done_testing();
}
