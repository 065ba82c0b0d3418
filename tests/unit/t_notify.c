/* t_notify — sd_notify datagrams reach a socket bound where $NOTIFY_SOCKET points (path and
 * abstract), and the watchdog interval honours WATCHDOG_USEC/WATCHDOG_PID. */
#include "notify.h"
/* tap.h's one-line macros trip -Wmisleading-indentation under -Werror */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tap.h"

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static int bind_dgram(const char *name, int abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(name);
    socklen_t len;
    if (abstract) {
        memcpy(sa.sun_path + 1, name, n);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    } else {
        memcpy(sa.sun_path, name, n);
        len = sizeof sa;
    }
    if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
        diag("bind %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static const char *recv_str(int fd)
{
    static char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0)
        return NULL;
    buf[n] = '\0';
    return buf;
}

int main(void)
{
    char dir[] = "/tmp/t_notify.XXXXXX", path[128], env[160];
    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/notify.sock", dir);

    unsetenv("NOTIFY_SOCKET");
    is_int(kgx_notify("READY=1"), 1, "no NOTIFY_SOCKET: nothing sent, returns 1");
    setenv("NOTIFY_SOCKET", "", 1);
    is_int(kgx_notify("READY=1"), 1, "empty NOTIFY_SOCKET: returns 1");

    int fd = bind_dgram(path, 0);
    ok(fd >= 0, "bound %s", path);
    setenv("NOTIFY_SOCKET", path, 1);
    is_int(kgx_notify("READY=1"), 0, "READY=1 sent");
    is_str(recv_str(fd), "READY=1", "READY=1 received");
    is_int(kgx_notify("STATUS=drawers_completed=3 pending=7"), 0, "STATUS sent");
    is_str(recv_str(fd), "STATUS=drawers_completed=3 pending=7", "STATUS received verbatim");
    is_int(kgx_notify("WATCHDOG=1"), 0, "WATCHDOG=1 sent");
    is_str(recv_str(fd), "WATCHDOG=1", "WATCHDOG=1 received");
    close(fd);
    unlink(path);
    ok(kgx_notify("READY=1") < 0, "socket gone: negative error, no crash");

    snprintf(env, sizeof env, "@kgx-t-notify-%d", (int)getpid());
    fd = bind_dgram(env + 1, 1);
    ok(fd >= 0, "bound abstract %s", env);
    setenv("NOTIFY_SOCKET", env, 1);
    is_int(kgx_notify("STOPPING=1"), 0, "abstract: STOPPING=1 sent");
    is_str(recv_str(fd), "STOPPING=1", "abstract: received");
    close(fd);

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    ok(kgx_notify("READY=1") < 0, "relative path refused");
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    setenv("NOTIFY_SOCKET", longp, 1);
    ok(kgx_notify("READY=1") < 0, "over-long path refused");
    unsetenv("NOTIFY_SOCKET");
    rmdir(dir);

    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    is_int(kgx_notify_watchdog_ms(), 0, "no WATCHDOG_USEC: 0");
    setenv("WATCHDOG_USEC", "60000000", 1);
    is_int(kgx_notify_watchdog_ms(), 60000, "60 s without WATCHDOG_PID");
    setenv("WATCHDOG_PID", pid, 1);
    is_int(kgx_notify_watchdog_ms(), 60000, "WATCHDOG_PID is us");
    setenv("WATCHDOG_PID", "1", 1);
    is_int(kgx_notify_watchdog_ms(), 0, "WATCHDOG_PID is someone else: 0");
    setenv("WATCHDOG_PID", "12x", 1);
    is_int(kgx_notify_watchdog_ms(), 0, "garbage WATCHDOG_PID: 0");
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "1500", 1);
    is_int(kgx_notify_watchdog_ms(), 2, "1500 us rounds up to 2 ms");
    setenv("WATCHDOG_USEC", "0", 1);
    is_int(kgx_notify_watchdog_ms(), 0, "0 us: none");
    setenv("WATCHDOG_USEC", "-5", 1);
    is_int(kgx_notify_watchdog_ms(), 0, "negative: none");
    setenv("WATCHDOG_USEC", "abc", 1);
    is_int(kgx_notify_watchdog_ms(), 0, "garbage: none");
    unsetenv("WATCHDOG_USEC");

    return done_testing();
}
