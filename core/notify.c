/* notify — systemd's sd_notify protocol, written directly (no libsystemd dependency).
 *
 * The protocol is one datagram per state change to the AF_UNIX socket named by $NOTIFY_SOCKET;
 * a leading '@' names a Linux abstract socket. Failures are returned, never fatal: a daemon
 * must run the same with or without systemd. */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int kgx_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 1;
    if (!state)
        return -EINVAL;
    /* Only filesystem paths and abstract names; systemd also knows vsock, which we do not need. */
    if (path[0] != '/' && path[0] != '@')
        return -EAFNOSUPPORT;

    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t plen = strlen(path);
    if (plen > sizeof sa.sun_path - (path[0] == '/'))   /* a path needs room for its NUL */
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    size_t len = strlen(state);
    ssize_t n;
    do
        n = sendto(fd, state, len, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    while (n < 0 && errno == EINTR);
    int rc = n < 0 ? -errno : ((size_t)n == len ? 0 : -EIO);
    close(fd);
    return rc;
}

/* Strict decimal; rejects empty, signs, trailing junk and overflow. */
static int parse_ull(const char *s, unsigned long long *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

long kgx_notify_watchdog_ms(void)
{
    unsigned long long usec, pid;
    if (parse_ull(getenv("WATCHDOG_USEC"), &usec) < 0 || usec == 0)
        return 0;
    const char *p = getenv("WATCHDOG_PID");
    if (p && *p) {
        if (parse_ull(p, &pid) < 0 || pid != (unsigned long long)getpid())
            return 0;   /* the watchdog is meant for another process (e.g. our parent) */
    }
    unsigned long long ms = (usec + 999) / 1000;
    if (ms > (unsigned long long)0x7fffffffL)
        ms = 0x7fffffffL;
    return (long)ms;
}
