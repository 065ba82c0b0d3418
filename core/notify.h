/* notify — systemd's sd_notify protocol written directly (no libsystemd): a datagram to
 * $NOTIFY_SOCKET (path or abstract "@name"). No-ops when the variable is unset. */
#ifndef KGX_NOTIFY_H
#define KGX_NOTIFY_H

/* Sends e.g. "READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=…". Returns 0 sent, 1 no socket, <0 error. */
int kgx_notify(const char *state);
/* Watchdog interval from $WATCHDOG_USEC (and $WATCHDOG_PID matching us) in ms; 0 = none. */
long kgx_notify_watchdog_ms(void);

#endif
