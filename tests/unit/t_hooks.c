/* t_hooks — the hook threads (hooks.c) with a real policy and a real loop, no database: results come
 * back on the loop; a hook stuck inside one C call (a backtracking string.find) is abandoned by the
 * loop's watchdog while other calls keep completing on the other threads (queued right behind it, or
 * later); a burst of quick calls is drained by one thread; a runaway Lua loop is
 * stopped by the state's own watchdog (no abandonment); a cancelled call never calls back; freeing
 * the pool never waits for a stuck thread. */
#include "hooks.h"
#include "log.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char policy[] =
    "name = 't_hooks'\n"
    "function request(chunk) return { path = '/x', body = chunk } end\n"
    "function parse(body)\n"
    "  if body == 'REDOS' then string.find(('a'):rep(22), ('a*'):rep(11) .. 'b') end\n"
    "  if body == 'SPIN' then while true do end end\n"
    "  return { { subject = body, predicate = 'p', object = 'o' } }\n"
    "end\n";

typedef struct { int done, rc, abandoned, n; char err[300]; double at; } res_t;

static uv_loop_t loop;
static uint64_t t0;
static double now_s(void) { return (double)(uv_hrtime() - t0) / 1e9; }

static void cb(kgx_hook_outcome_t *o, void *ud)
{
    res_t *r = ud;
    r->done++;
    r->rc = o->rc;
    r->abandoned = o->abandoned;
    r->n = (int)o->result.n_triples;
    snprintf(r->err, sizeof r->err, "%s", o->err ? o->err : "");
    r->at = now_s();
}

static void keep_cb(uv_timer_t *t) { (void)t; }
static void cap_cb(void *ud) { (*(int *)ud)++; }

static void never_cb(kgx_hook_outcome_t *o, void *ud) { (void)o; (*(int *)ud)++; }

/* runs the loop until *flag or the deadline (s) */
static void run_until(int *flag, double deadline)
{
    while (!*flag && now_s() < deadline) uv_run(&loop, UV_RUN_ONCE);
}

static kgx_hook_call_t *answer(kgx_hooks_t *h, const char *body, res_t *r)
{
    kgx_drawer_t d = { .id = "d1", .document = body, .document_len = strlen(body) };
    kgx_drawer_box_t *b = kgx_drawer_box_new(&d);
    kgx_hook_call_t *c = kgx_hooks_answer(h, NULL, b, NULL, body, strlen(body), "drawer=d1 attempt=1", cb, r);
    kgx_drawer_box_unref(b);
    return c;
}

int main(void)
{
    kgx_log_init();
    kgx_log_set_level(KGX_LOG_ERR - 1);   /* quiet: the abandon lines are expected */
    char path[] = "/tmp/kgx_t_hooks_XXXXXX.lua";
    int fd = mkstemps(path, 4);
    if (fd < 0 || write(fd, policy, sizeof policy - 1) != (ssize_t)(sizeof policy - 1)) { perror("policy"); return 2; }
    close(fd);
    uv_loop_init(&loop);
    uv_timer_t keep;                 /* the pool's own handles do not keep a loop alive */
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, keep_cb, 20, 20);
    t0 = uv_hrtime();
    char err[512] = "";
    kgx_script_opts_t o = { .policy_path = path, .plugins_dir = "/nonexistent", .hook_timeout_ms = 300 };
    kgx_policy_src_t *src = kgx_policy_src_read(&o, err, sizeof err);
    kgx_script_t *probe = src ? kgx_script_new_src(src, err, sizeof err) : NULL;
    ok(probe != NULL, "policy loads: %s", err);
    int capped = 0;
    kgx_hooks_t *h = kgx_hooks_new(&loop, probe, cap_cb, &capped, err, sizeof err);
    kgx_policy_src_unref(src);
    ok(h != NULL, "pool starts");
    if (!h) return done_testing();

    /* a plain call comes back on the loop */
    res_t a = { 0 };
    answer(h, "alice", &a);
    run_until(&a.done, 5);
    ok(a.done == 1 && a.rc == 0 && a.n == 1, "a parse call completes (rc %d, %d triple)", a.rc, a.n);

    /* a burst of quick calls is drained by the awake thread: no herd of threads woken or started for
     * it (each costs context switches and a core); under valgrind a quick call can pass the 20 ms */
    static res_t burst[200];
    for (int i = 0; i < 200; i++) answer(h, "carol", &burst[i]);
    for (int i = 0; i < 200; i++) run_until(&burst[i].done, now_s() + 10);
    int allb = 1;
    for (int i = 0; i < 200; i++) allb &= burst[i].done == 1 && burst[i].rc == 0;
    ok(allb, "200 quick calls complete");
    if (!getenv("KGX_VALGRIND"))
        ok(kgx_hooks_threads(h) <= 2, "... on %d hook thread(s) (at most %d)", kgx_hooks_threads(h), KGX_HOOK_THREADS);

    /* stuck in C: abandoned by the loop; meanwhile other calls complete */
    res_t stuck = { 0 }, spin = { 0 }, others[20] = { { 0 } };
    double s0 = now_s();
    answer(h, "REDOS", &stuck);
    /* queued right behind it (the loop's tick wakes another thread), and once it is past
     * KGX_HOOK_SLOW_MS (the submit does) */
    for (int i = 0; i < 10; i++) answer(h, "bob", &others[i]);
    usleep(50000);
    for (int i = 10; i < 20; i++) answer(h, "bob", &others[i]);
    for (int i = 0; i < 20; i++) run_until(&others[i].done, 5);   /* hook threads finish in any order */
    int all = 1;
    for (int i = 0; i < 20; i++) all &= others[i].done == 1 && others[i].rc == 0;
    ok(all && !stuck.done, "20 calls completed while one hook is stuck (%.2f s)", now_s() - s0);
    run_until(&stuck.done, s0 + 5);
    ok(stuck.done == 1 && stuck.rc == -1 && stuck.abandoned, "the stuck hook fails, abandoned (after %.2f s)", stuck.at - s0);
    ok(strstr(stuck.err, "watchdog: hook 'parse' exceeded 300 ms") != NULL, "... with the watchdog message: %s", stuck.err);
    ok(strstr(stuck.err, ".lua:3") != NULL, "... naming where the hook is defined");
    ok(stuck.at - s0 < 0.3 + KGX_HOOK_GRACE_MS / 1000.0 + 0.5, "... within the limit + grace");
    is_int(kgx_hooks_abandoned(h), 1, "one stuck thread counted");

    /* a Lua loop: the state's own watchdog; nothing abandoned */
    s0 = now_s();
    answer(h, "SPIN", &spin);
    run_until(&spin.done, s0 + 5);
    ok(spin.done == 1 && spin.rc == -1 && !spin.abandoned && strstr(spin.err, "watchdog: hook 'parse' exceeded 300 ms"),
       "while true do end: stopped by the Lua watchdog, state kept: %s", spin.err);
    res_t after = { 0 };
    answer(h, "carol", &after);
    run_until(&after.done, now_s() + 5);
    ok(after.done && after.rc == 0, "calls still complete afterwards");

    /* cancel: never calls back */
    int never = 0;
    kgx_drawer_t d = { .id = "d2", .document = "x", .document_len = 1 };
    kgx_drawer_box_t *db = kgx_drawer_box_new(&d);
    for (int i = 0; i < 10; i++) kgx_hooks_cancel(kgx_hooks_answer(h, NULL, db, NULL, "dave", 4, NULL, never_cb, &never));
    kgx_drawer_box_unref(db);
    res_t last = { 0 };
    answer(h, "erin", &last);
    run_until(&last.done, now_s() + 5);
    is_int(never, 0, "cancelled calls never call back");

    /* at the cap of stuck threads: on_cap, once */
    res_t more[3] = { { 0 } };
    s0 = now_s();
    for (int i = 0; i < 3; i++) answer(h, "REDOS", &more[i]);
    run_until(&capped, s0 + 8);
    is_int(capped, 1, "%d stuck threads: on_cap called (after %.2f s)", KGX_HOOK_MAX_ABANDONED, now_s() - s0);
    is_int(kgx_hooks_abandoned(h), KGX_HOOK_MAX_ABANDONED, "... with %d stuck threads alive", KGX_HOOK_MAX_ABANDONED);
    ok(more[0].done && more[1].done && more[2].done && more[2].abandoned, "... each stuck call failed once");

    /* free with a stuck hook running: does not wait for it */
    res_t stuck2 = { 0 };
    answer(h, "REDOS", &stuck2);
    usleep(100000);
    s0 = now_s();
    kgx_hooks_free(h);
    double took = now_s() - s0;
    ok(took < 0.5, "free with a stuck hook returns at once (%.3f s)", took);
    ok(stuck2.done == 1 && stuck2.rc == -1, "... and the stuck call's callback ran once (failed: %s)", stuck2.err);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    unlink(path);
    return done_testing();
}
