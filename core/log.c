/* log — see log.h. Writes each line with one write(2) so lines from concurrent processes (and from
 * the loop and hook threads of one process) sharing a journal stream never interleave mid-line.
 * Threads: the level and journal flag are set once at start, before any hook thread exists; the
 * drawer context is per thread. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int g_level = KGX_LOG_INFO;
static int g_journal = 0;
static _Thread_local char g_ctx[256];

void kgx_log_set_context(const char *ctx)
{
    snprintf(g_ctx, sizeof g_ctx, "%s", ctx ? ctx : "");
}

int kgx_log_level_parse(const char *s)
{
    if (!s) return -1;
    if (!strcasecmp(s, "debug")) return KGX_LOG_DEBUG;
    if (!strcasecmp(s, "info")) return KGX_LOG_INFO;
    if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return KGX_LOG_WARN;
    if (!strcasecmp(s, "error") || !strcasecmp(s, "err")) return KGX_LOG_ERR;
    return -1;
}

void kgx_log_set_level(int level) { g_level = level; }
int kgx_log_get_level(void) { return g_level; }

void kgx_log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    g_journal = js && *js;
}

static const char *level_name(int level)
{
    switch (level) {
    case KGX_LOG_ERR: return "error";
    case KGX_LOG_WARN: return "warn";
    case KGX_LOG_INFO: return "info";
    default: return "debug";
    }
}

void kgx_vlog(int level, const char *fmt, va_list ap)
{
    if (level > g_level) return;
    char line[4096];
    int n;
    if (g_journal) {
        n = snprintf(line, sizeof line, "<%d>", level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
        n += snprintf(line + n, sizeof line - (size_t)n, "%s ", level_name(level));
    }
    if (g_ctx[0]) n += snprintf(line + n, sizeof line - (size_t)n, "%s ", g_ctx);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2;
    /* one event, one line: fold embedded newlines */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void kgx_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kgx_vlog(level, fmt, ap);
    va_end(ap);
}
