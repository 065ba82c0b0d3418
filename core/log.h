/* log — one line per event on stderr.
 *
 * Lines look like `2026-11-25T10:00:00Z info drawer=abc attempt=2 llm http 500 from …`.
 * When JOURNAL_STREAM is set (systemd), each line instead starts with the syslog priority
 * prefix `<N>` and carries no timestamp (the journal adds its own). */
#ifndef KGX_LOG_H
#define KGX_LOG_H

#include <stdarg.h>

enum kgx_log_level { KGX_LOG_ERR = 3, KGX_LOG_WARN = 4, KGX_LOG_INFO = 6, KGX_LOG_DEBUG = 7 };

/* Parse "debug|info|warn|warning|error" (case-insensitive); -1 when unknown. */
int kgx_log_level_parse(const char *s);
void kgx_log_set_level(int level);
int kgx_log_get_level(void);
/* Detects JOURNAL_STREAM; call once at start (tests may call it again). */
void kgx_log_init(void);

/* A prefix for every line of this thread until cleared (NULL): a hook thread names the drawer while
 * policy code runs, so a kgx.log() from a hook says which drawer it is about. */
void kgx_log_set_context(const char *ctx);

void kgx_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kgx_vlog(int level, const char *fmt, va_list ap);

#define log_err(...)   kgx_log(KGX_LOG_ERR, __VA_ARGS__)
#define log_warn(...)  kgx_log(KGX_LOG_WARN, __VA_ARGS__)
#define log_info(...)  kgx_log(KGX_LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (kgx_log_get_level() >= KGX_LOG_DEBUG) kgx_log(KGX_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
