/* reapply — see reapply.h. Blocking libpq is fine here: this is a one-shot CLI mode, not the loop. */
#include "reapply.h"
#include "buf.h"
#include "db.h"
#include "graph.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 500

static int write_one(PGconn *c, const char *graph, const char *drawer, const char *triples, char *err, size_t errlen)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT public.kgx_%s_write($1, NULL, NULL, $2::jsonb, NULL)", graph);
    const char *p[] = { drawer, triples };
    for (int attempt = 0; attempt < 20; attempt++) {
        PGresult *r = PQexecParams(c, sql, 2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            int n = atoi(PQgetvalue(r, 0, 0));
            PQclear(r);
            return n;
        }
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        char *nl = strchr(err, '\n');
        if (nl) *nl = 0;
        int transient = kgx_graph_is_transient(st, err);
        PQclear(r);
        if (!transient) return -2;
    }
    return -2;
}

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
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH ids AS (SELECT DISTINCT a.drawer_id FROM public.kgx_%s_answers a"
             "   JOIN public.mempalace_kg_extraction_queue q ON q.drawer_id = a.drawer_id AND q.completed_at IS NOT NULL"
             "  WHERE a.drawer_id > $1 AND ($2::text IS NULL OR a.drawer_id = $2)"
             "  ORDER BY a.drawer_id LIMIT %d)"
             " SELECT a.drawer_id, d.wing, d.room, d.document, d.metadata::text, a.chunk, a.body"
             "   FROM ids JOIN public.kgx_%s_answers a ON a.drawer_id = ids.drawer_id"
             "   LEFT JOIN public.mempalace_drawers d ON d.id = a.drawer_id"
             "  ORDER BY a.drawer_id, a.chunk", cfg->graph, PAGE, cfg->graph);
    char *after = strdup("");
    long long drawers = 0, facts = 0, dropped = 0, failed = 0, stale = 0;
    int rc = 0;
    for (;;) {
        const char *p[] = { after, cfg->reapply_where };
        PGresult *r = PQexecParams(c, sql, 2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "error: reading stored answers: %s", PQresultErrorMessage(r));
            PQclear(r);
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
                int w = write_one(c, cfg->graph, id, t.p, err, sizeof err);
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
