/* main — kgx-run: parses the command line, then runs one mode.
 *   daemon / --once / --backfill / --dry-run : the engine (engine.c)
 *   --status [--json]                         : counters from the database, printed once
 *   --reapply                                 : stored answers re-parsed by the current policy
 *   --adopt, --prune, --follow-deletes        : adopt.c, prune.c */
#include "adopt.h"
#include "config.h"
#include "db.h"
#include "drops.h"
#include "engine.h"
#include "graph.h"
#include "httpd.h"
#include "log.h"
#include "prune.h"
#include "queue.h"
#include "reapply.h"
#include "script.h"
#include "status.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The default policy: the build tree's own (build/bin, build/asan/bin), then the install prefix
 * relative to the binary (bin/../share/kgx), then the compiled-in prefix. */
static int find_default_policy(char *out, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        const char *rel[] = { "/../../prompts/default.lua", "/../../../prompts/default.lua",
                              "/../share/kgx/prompts/default.lua", NULL };
        for (int i = 0; rel[i]; i++) {
            char cand[PATH_MAX + 64];
            snprintf(cand, sizeof cand, "%s%s", exe, rel[i]);
            char *real = realpath(cand, NULL);
            if (real && file_exists(real)) {
                snprintf(out, len, "%s", real);
                free(real);
                return 0;
            }
            free(real);
        }
    }
    snprintf(out, len, "%s/prompts/default.lua", KGX_SHAREDIR);
    return file_exists(out) ? 0 : -1;
}

static int is_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost") || !host[0];
}

static kgx_script_t *load_policy(const kgx_config_t *cfg, const char *path, char *err, size_t errlen)
{
    kgx_script_opts_t so = { 0 };
    so.policy_path = path;
    so.model = cfg->model;
    so.n_ctx = cfg->n_ctx;
    so.min_confidence = cfg->min_confidence;
    so.max_triples = cfg->max_triples;
    so.hook_timeout_ms = cfg->hook_timeout_ms;
    return kgx_script_new(&so, err, errlen);
}

static int run_status(const kgx_config_t *cfg, const char *policy)
{
    char err[1024];
    PGconn *c = kgx_db_connect_blocking(cfg->dsn, kgx_graph_session_sql, err, sizeof err);
    if (!c) {
        fprintf(stderr, "error: database: %s\n", err);
        return 1;
    }
    kgx_queue_counts_t k;
    if (kgx_queue_counts_blocking(c, cfg->lease_seconds, &k, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return 1;
    }
    long long ents = 0, edges = 0, sup = 0;
    int have_graph = kgx_graph_stats(c, cfg->graph, &ents, &edges, &sup, err, sizeof err) == 0;
    char *workers = cfg->json ? kgx_queue_workers_json(c, err, sizeof err) : kgx_queue_workers_text(c, err, sizeof err);
    kgx_drops_live_t live;                       /* [dropin] drops by class, policy mix */
    int have_live = kgx_drops_workers(c, &live, err, sizeof err) == 0;
    /* [dropin] whether deletes are followed by the optional trigger (kgx-run --follow-deletes) */
    PGresult *fr = PQexec(c, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = 'kgx_follow_deletes'"
                             " AND tgrelid = to_regclass('public.mempalace_drawers'))");
    int follow = PQresultStatus(fr) == PGRES_TUPLES_OK && PQgetvalue(fr, 0, 0)[0] == 't';
    PQclear(fr);
    /* [budget] what the live workers' requests leave for drawer text (tiny: a warning with the fix) */
    kgx_buf_t bwarn = { 0 };
    char *btext = NULL;
    size_t btext_len = 0;
    FILE *bf = cfg->json ? NULL : open_memstream(&btext, &btext_len);
    if (kgx_status_live_budgets(c, bf, &bwarn, err, sizeof err)) fprintf(stderr, "warning: %s\n", err);
    if (bf) fclose(bf);
    PQfinish(c);
    char perr[1024];
    kgx_script_t *s = policy ? load_policy(cfg, policy, perr, sizeof perr) : NULL;
    const char *pname = s ? kgx_script_name(s) : NULL, *pver = s ? kgx_script_version(s) : NULL;
    if (cfg->json) {
        size_t len;
        char *js = kgx_status_json(&k, NULL, workers ? workers : "[]", pname, pver, &len);
        /* graph numbers ride along when the graph exists */
        if (have_graph && len > 1) {
            js[len - 1] = 0;
            printf("%s,\"graph\":{\"entities\":%lld,\"edges\":%lld,\"supports\":%lld}", js, ents, edges, sup);
        } else if (len > 1) {
            js[len - 1] = 0;
            printf("%s", js);
        }
        /* [dropin] the live workers' drops summed, and a warning when they run different policies */
        if (len > 1) {
            kgx_buf_t x = { 0 };
            kgx_buf_printf(&x, ",\"drops\":%s,\"follow_deletes\":%s", have_live ? live.json : "{}",
                           follow ? "true" : "false");
            kgx_buf_adds(&x, ",\"warnings\":[");
            if (have_live && live.warning) kgx_buf_json_str(&x, live.warning);
            if (bwarn.len) kgx_buf_printf(&x, "%s%s", have_live && live.warning ? "," : "", bwarn.p);   /* [budget] */
            kgx_buf_adds(&x, "]}");
            printf("%s\n", x.p);
            kgx_buf_free(&x);
        }
        free(js);
    } else {
        kgx_status_print_text(stdout, &k, pname, pver, have_graph, ents, edges, sup, workers);
        if (have_live && *live.text) printf("drops                %s   (live workers)\n", live.text);   /* [dropin] */
        if (have_live && live.warning) printf("%s\n", live.warning);
        printf("follow_deletes       %s\n", follow ? "on   (trigger on mempalace_drawers: deleted drawers re-queued)"
                                                 : "off  (drawers deleted after completion: kgx-run --prune)");   /* [dropin] */
        if (btext_len) fputs(btext, stdout);   /* [budget] */
    }
    free(btext);
    kgx_buf_free(&bwarn);
    kgx_drops_live_free(&live);
    free(workers);
    kgx_script_free(s);
    return 0;
}

/* Waiting for PostgreSQL at start: SIGTERM/SIGINT end the wait (the loop's handlers are not up yet). */
static volatile sig_atomic_t g_stop_waiting;
static void stop_waiting(int sig) { (void)sig; g_stop_waiting = 1; }

/* SIGTERM/SIGINT outside the loop (setup, seeding, loading the policy; the final fold after it): no
 * row is claimed then and every statement is its own transaction (an interrupted index build is redone
 * and unfolded aggregate deltas are folded by the next start), so stopping at once is clean — exit 0, as
 * a stop during the run would. */
static void stop_outside_loop(int sig)
{
    static const char m[] = "stopped outside the run (nothing claimed)\n";
    (void)sig;
    if (write(2, m, sizeof m - 1) < 0) { /* nothing to do */ }
    _exit(0);
}

/* Sleeps ms unless SIGTERM/SIGINT arrives first; returns 1 when told to stop. */
static int wait_or_stop(long ms)
{
    for (long slept = 0; slept < ms && !g_stop_waiting; slept += 100) {
        struct timespec ts = { 0, 100 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return g_stop_waiting != 0;
}

/* One attempt: 0 done, 1 failed for good (err printed), -1 the database is unreachable or refuses us
 * (err set; *why says which class: db.h). */
static int setup_once(const kgx_config_t *cfg, int backfill, char *err, size_t errlen, kgx_db_fail_t *why)
{
    PGconn *c = kgx_db_open(cfg->dsn, kgx_graph_session_sql, err, errlen, why);  /* [dropin] classified */
    if (!c) return -1;
    int rc = 0;
    if (kgx_db_check_age(c, err, errlen, why)) {    /* [dropin] AGE missing: a class an operator fixes */
        PQfinish(c);
        return -1;
    }
    if (kgx_graph_setup(c, cfg->graph, 1, err, errlen)) {
        rc = PQstatus(c) == CONNECTION_BAD ? -1 : 1;
    } else if (kgx_adopt_running(c, cfg->graph, err, errlen)) {   /* [dropin] no writes under --adopt */
        rc = -1;
    } else if (backfill) {
        long long n = 0;
        if (kgx_queue_seed_backfill(c, cfg->backfill_limit, &n, err, errlen))
            rc = PQstatus(c) == CONNECTION_BAD ? -1 : 1;
        else
            log_info("backfill: queued %lld new drawer%s", n, n == 1 ? "" : "s");
    }
    if (rc == 1) fprintf(stderr, "error: %s\n", err);
    PQfinish(c);
    return rc;
}

/* Schema setup before the loop: blocking, once, safe with several processes starting together.
 * A daemon waits for an unreachable database (backoff 1 s .. 30 s; SIGTERM ends the wait, exit 0):
 * started before PostgreSQL, it simply begins when PostgreSQL does. One-shot modes fail at once. */
static int setup_database(const kgx_config_t *cfg, int backfill, int *stopped)
{
    char err[1024];
    long delay = 1000;
    *stopped = 0;
    for (;;) {
        kgx_db_fail_t why = KGX_DB_FAIL_NONE;
        int rc = setup_once(cfg, backfill, err, sizeof err, &why);
        if (rc >= 0) return rc;
        if (cfg->mode != KGX_MODE_DAEMON) {
            fprintf(stderr, "error: database: %s\n", err);
            return 1;
        }
        /* [dropin] a refusal an operator must fix is an error, not waiting; systemd keeps us trying */
        if (kgx_db_fail_permanent(why))
            log_err("database: %s (retry in %.0f s)", err, delay / 1000.0);
        else
            log_warn("waiting for the database (retry in %.0f s): %s", delay / 1000.0, err);
        signal(SIGTERM, stop_waiting);      /* the wait ends at once; the log says so */
        signal(SIGINT, stop_waiting);
        int stop = wait_or_stop(delay);
        signal(SIGTERM, stop_outside_loop);
        signal(SIGINT, stop_outside_loop);
        if (stop) {
            log_info("stopped while waiting for the database");
            *stopped = 1;
            return 0;
        }
        delay = delay * 2 > 30000 ? 30000 : delay * 2;
    }
}

/* What this process's writes left to fold (a fold dropped with its pool when the run ended): the edge
 * properties are exact when kgx-run exits (graph.c, kgx_graph_fold_all). */
static void fold_before_exit(const kgx_config_t *cfg)
{
    if (!kgx_graph_fold_pending() || !cfg->dsn) return;
    char err[1024] = "";
    PGconn *c = kgx_db_connect_blocking(cfg->dsn, kgx_graph_session_sql, err, sizeof err);
    if (!c || kgx_graph_fold_all(c, cfg->graph, err, sizeof err))
        log_warn("edge aggregates left to fold (the next kgx-run start folds them): %s", err);
    if (c) PQfinish(c);
}

int main(int argc, char **argv)
{
    kgx_log_init();
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    signal(SIGPIPE, SIG_IGN);
    kgx_config_t cfg;
    char err[1024];
    int rc = kgx_config_parse(&cfg, argc, argv, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        kgx_config_free(&cfg);
        return rc;
    }
    if (cfg.mode == KGX_MODE_HELP) {
        fputs(kgx_config_usage(), stdout);
        kgx_config_free(&cfg);
        return 0;
    }
    if (cfg.mode == KGX_MODE_VERSION) {
        printf("kgx-run %s\n", KGX_VERSION);
        kgx_config_free(&cfg);
        return 0;
    }
    kgx_log_set_level(cfg.log_level);
    /* [dropin] a DSN libpq cannot parse is a usage error, found before any connection */
    if (cfg.mode != KGX_MODE_DRY_RUN && cfg.dsn && kgx_db_dsn_check(cfg.dsn, err, sizeof err)) {
        fprintf(stderr, "error: --dsn: %s\n", err);
        kgx_config_free(&cfg);
        return 2;
    }

    char policy[PATH_MAX];
    if (cfg.policy) {
        snprintf(policy, sizeof policy, "%s", cfg.policy);
        if (!file_exists(policy)) {
            fprintf(stderr, "error: --policy: no such file: %s\n", policy);
            kgx_config_free(&cfg);
            return 2;
        }
    } else if (find_default_policy(policy, sizeof policy)) {
        if (cfg.mode != KGX_MODE_STATUS && cfg.mode != KGX_MODE_PRUNE && cfg.mode != KGX_MODE_FOLLOW_DELETES) {
            fprintf(stderr, "error: no policy: prompts/default.lua not found (give --policy FILE or set KGX_POLICY)\n");
            kgx_config_free(&cfg);
            return 2;
        }
        policy[0] = 0;
    }
    if (cfg.http_listen) {
        char host[256];
        int port;
        if (kgx_httpd_parse_listen(cfg.http_listen, host, sizeof host, &port) < 0) {
            fprintf(stderr, "error: --http %s: bad listen address '%s' (want HOST:PORT, [IPv6]:PORT or :PORT)\n",
                    cfg.http_listen, cfg.http_listen);
            kgx_config_free(&cfg);
            return 2;
        }
        if (!cfg.http_public && !is_loopback(host)) {
            fprintf(stderr, "error: --http %s: not a loopback address (add --http-allow-remote to serve it)\n",
                    cfg.http_listen);
            kgx_config_free(&cfg);
            return 2;
        }
    }

    switch (cfg.mode) {
    case KGX_MODE_STATUS:
        rc = run_status(&cfg, policy[0] ? policy : NULL);
        break;
    case KGX_MODE_ADOPT: {                /* [dropin] core/adopt.c */
        kgx_script_t *s = load_policy(&cfg, policy, err, sizeof err);
        if (!s) {
            fprintf(stderr, "error: policy %s: %s\n", policy, err);
            rc = 2;
            break;
        }
        rc = kgx_adopt_run(&cfg, s);      /* takes s */
        break;
    }
    case KGX_MODE_PRUNE:                  /* [dropin] core/prune.c */
        rc = kgx_prune_run(&cfg);
        break;
    case KGX_MODE_FOLLOW_DELETES:         /* [dropin] core/prune.c */
        rc = kgx_follow_deletes_run(&cfg);
        break;
    case KGX_MODE_REAPPLY: {
        kgx_script_t *s = load_policy(&cfg, policy, err, sizeof err);
        if (!s) {
            fprintf(stderr, "error: policy %s: %s\n", policy, err);
            rc = 2;
            break;
        }
        rc = kgx_reapply_run(&cfg, s);    /* takes s */
        fold_before_exit(&cfg);
        break;
    }
    default: {
        int stopped = 0;
        signal(SIGTERM, stop_outside_loop);   /* until the loop's handlers take over (engine.c) */
        signal(SIGINT, stop_outside_loop);
        if (cfg.mode != KGX_MODE_DRY_RUN && (rc = setup_database(&cfg, cfg.mode == KGX_MODE_BACKFILL, &stopped)))
            break;
        if (stopped) break;
        int code = 1;
        kgx_engine_t *e = kgx_engine_new(&cfg, policy, err, sizeof err, &code);
        if (!e) {
            fprintf(stderr, "%s\n", err);
            rc = code;
            break;
        }
        rc = kgx_engine_run(e);
        kgx_engine_free(e);
        signal(SIGTERM, stop_outside_loop);  /* the loop's handlers are gone */
        signal(SIGINT, stop_outside_loop);
        if (cfg.mode != KGX_MODE_DRY_RUN) fold_before_exit(&cfg);
        break;
    }
    }
    kgx_config_free(&cfg);
    return rc;
}
