/* reapply — see reapply.h. Blocking libpq is fine here: this is a one-shot CLI mode, not the loop;
 * the SQL is graph.c's. */
#include "reapply.h"
#include "buf.h"
#include "db.h"
#include "graph.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 500

int kgx_reapply_run(const kgx_config_t *cfg, kgx_script_t *script)
{
    char err[1024];
    PGconn *c = kgx_db_connect_blocking(cfg->dsn, kgx_graph_session_sql, err, sizeof err);
    if (!c) {
        fprintf(stderr, "error: database: %s\n", err);
        return 1;
    }
    if (kgx_graph_setup(c, cfg->graph, 0, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        PQfinish(c);
        return 1;
    }
    char *after = strdup("");
    long long drawers = 0, facts = 0, dropped = 0, failed = 0, stale = 0;
    int rc = 0;
    for (;;) {
        PGresult *r = kgx_graph_answers_fetch(c, cfg->graph, after, cfg->reapply_where, PAGE, err, sizeof err);
        if (!r) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
            break;
        }
        int n = PQntuples(r);
        if (n == 0) {
            PQclear(r);
            break;
        }
        for (int i = 0; i < n;) {
            const char *id = PQgetvalue(r, i, 0);
            kgx_drawer_t d = { id, PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1),
                               PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                               PQgetisnull(r, i, 3) ? "" : PQgetvalue(r, i, 3),
                               PQgetisnull(r, i, 3) ? 0 : (size_t)PQgetlength(r, i, 3),
                               PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4) };
            int job = kgx_script_job_new(script, &d, err, sizeof err);
            kgx_buf_t t = { 0 };
            int ok = job > 0;
            if (!ok) log_warn("drawer=%s reapply: %s", id, err);
            int j = i;
            for (; j < n && !strcmp(PQgetvalue(r, j, 0), id); j++) {
                if (!ok) continue;
                kgx_result_t res = { 0 };
                int chunk = atoi(PQgetvalue(r, j, 5));
                /* chunk index beyond the job's chunks: the hook gets chunk = nil */
                if (kgx_script_answer(script, job, (size_t)chunk + 1000000u, PQgetvalue(r, j, 6),
                                      (size_t)PQgetlength(r, j, 6), &res, err, sizeof err)) {
                    log_warn("drawer=%s chunk=%d reapply: %s", id, chunk, err);
                    ok = 0;
                    continue;
                }
                for (size_t k = 0; k < res.n_triples; k++) {
                    const kgx_triple_t *x = &res.triples[k];
                    kgx_buf_adds(&t, t.len ? "," : "[");
                    kgx_buf_adds(&t, "{\"s\":");
                    kgx_buf_json_str(&t, x->subject);
                    kgx_buf_adds(&t, ",\"p\":");
                    kgx_buf_json_str(&t, x->predicate);
                    kgx_buf_adds(&t, ",\"o\":");
                    kgx_buf_json_str(&t, x->object);
                    kgx_buf_printf(&t, ",\"c\":%.4f,\"raw\":", x->confidence);
                    kgx_buf_json_str(&t, x->raw_predicate);
                    kgx_buf_printf(&t, ",\"chunk\":%d}", chunk);
                }
                dropped += (long long)res.n_drops;
                kgx_result_clear(&res);
            }
            kgx_script_job_free(script, job);
            if (ok) {
                kgx_buf_adds(&t, t.len ? "]" : "[]");
                int w = kgx_graph_write_blocking(c, cfg->graph, id, t.p, err, sizeof err);
                if (w >= 0) { drawers++; facts += w; }
                else if (w == -1) stale++;
                else { failed++; log_warn("drawer=%s reapply write failed: %s", id, err); }
            } else {
                failed++;
            }
            kgx_buf_free(&t);
            free(after);
            after = strdup(id);
            i = j;
        }
        PQclear(r);
        if (cfg->reapply_where) break;
    }
    free(after);
    PQfinish(c);
    fprintf(stderr, "reapply: drawers=%lld facts=%lld dropped=%lld failed=%lld skipped=%lld\n",
            drawers, facts, dropped, failed, stale);
    return rc ? rc : failed ? 1 : 0;
}
