/* sink_dry — --dry-run: drawers from a JSON-lines file (or stdin), the policy and the LLM as in
 * production, and instead of the database a report per drawer on stdout (text, or one JSON object a
 * line with --json). Attempts are counted here; the exit code says whether any drawer failed. */
#include "sink.h"
#include "jsonl.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dry_open(kgx_engine_t *e, char *err, size_t errlen)
{
    const char *in = e->cfg->dry_run_input;
    if (!strcmp(in, "-")) e->dry_in = stdin;
    else if (!(e->dry_in = fopen(in, "r"))) {
        snprintf(err, errlen, "error: --dry-run: cannot open %s: %s", in, strerror(errno));
        return -1;
    }
    return 0;
}

static void dry_close(kgx_engine_t *e)
{
    if (e->dry_in && e->dry_in != stdin) fclose(e->dry_in);
    e->dry_in = NULL;
}

static int dry_claim(kgx_engine_t *e, int want)
{
    int got = 0;
    while (got < want && !e->dry_eof) {
        kgx_claim_row_t row = { 0 };
        char err[256];
        int rc = kgx_jsonl_next(e->dry_in, ++e->dry_seq, &row.drawer_id, &row.wing, &row.room,
                                &row.document, &row.document_len, err, sizeof err);
        if (rc == 0) {
            e->dry_eof = 1;
            break;
        }
        if (rc < 0) {
            fprintf(stderr, "error: --dry-run input line %ld: %s\n", e->dry_seq, err);
            e->dry_failed++;
            continue;
        }
        job_new(e, &row);
        got++;
    }
    return got > 0;
}

static int dry_exhausted(kgx_engine_t *e, int *code)
{
    *code = e->dry_failed ? 1 : 0;
    return e->dry_eof;
}

static void dry_fail(job_t *j, const char *msg)
{
    kgx_engine_t *e = j->e;
    int attempts = j->attempts + 1;
    int parked = attempts >= e->cfg->max_attempts;
    if (parked) {
        if (e->cfg->json) {
            kgx_buf_t b = { 0 };
            kgx_buf_adds(&b, "{\"id\":");
            kgx_buf_json_str(&b, j->row.drawer_id);
            kgx_buf_adds(&b, ",\"error\":");
            kgx_buf_json_str(&b, msg);
            kgx_buf_adds(&b, "}\n");
            fwrite(b.p, 1, b.len, stdout);
            kgx_buf_free(&b);
        } else {
            printf("drawer %s: FAILED after %d attempts: %s\n", j->row.drawer_id, attempts, msg);
        }
        fflush(stdout);
        e->dry_failed++;
    }
    job_failed(j, attempts, parked, 0, NULL);
}

static void dry_result(job_t *j, size_t idx, const kgx_result_t *r)
{
    kgx_engine_t *e = j->e;
    for (size_t i = 0; i < r->n_triples && !e->cfg->json; i++) {
        const kgx_triple_t *t = &r->triples[i];
        kgx_buf_printf(&j->report, "  keep  %s | %s | %s  (%.2f%s%s)\n", t->subject, t->predicate,
                       t->object, t->confidence, t->raw_predicate ? ", raw " : "",
                       t->raw_predicate ? t->raw_predicate : "");
    }
    for (size_t i = 0; i < r->n_drops; i++) {
        const kgx_drop_t *d = &r->drops[i];
        if (e->cfg->json) {
            kgx_buf_adds(&j->report, j->report.len ? "," : "");
            kgx_buf_adds(&j->report, "{\"subject\":");
            kgx_buf_json_str(&j->report, d->subject);
            kgx_buf_adds(&j->report, ",\"predicate\":");
            kgx_buf_json_str(&j->report, d->predicate);
            kgx_buf_adds(&j->report, ",\"object\":");
            kgx_buf_json_str(&j->report, d->object);
            kgx_buf_adds(&j->report, ",\"reason\":");
            kgx_buf_json_str(&j->report, d->reason);
            kgx_buf_adds(&j->report, "}");
        } else {
            kgx_buf_printf(&j->report, "  drop  %s | %s | %s  -- %s\n", d->subject ? d->subject : "?",
                           d->predicate ? d->predicate : "?", d->object ? d->object : "?", d->reason);
        }
    }
}

static void dry_write(job_t *j)
{
    kgx_engine_t *e = j->e;
    if (e->cfg->json) {
        kgx_buf_t b = { 0 }, t = { 0 };
        job_write_json(j, &t, NULL);
        kgx_buf_adds(&b, "{\"id\":");
        kgx_buf_json_str(&b, j->row.drawer_id);
        kgx_buf_adds(&b, ",\"chunks\":[");
        for (size_t i = 0; i < j->nchunks; i++)
            kgx_buf_printf(&b, "%s{\"tokens\":%d}", i ? "," : "", j->texts[i].tokens);
        kgx_buf_adds(&b, "],\"triples\":");
        kgx_buf_add(&b, t.p, t.len);
        kgx_buf_adds(&b, ",\"dropped\":[");
        if (j->report.len) kgx_buf_add(&b, j->report.p, j->report.len);
        kgx_buf_printf(&b, "],\"kept\":%lld,\"would_write\":%d}\n", j->kept, j->n_triples);
        fwrite(b.p, 1, b.len, stdout);
        kgx_buf_free(&b);
        kgx_buf_free(&t);
    } else {
        printf("drawer %s: %zu chunk%s (tokens:", j->row.drawer_id, j->nchunks, j->nchunks == 1 ? "" : "s");
        for (size_t i = 0; i < j->nchunks && i < 32; i++) printf(" %d", j->texts[i].tokens);
        if (j->nchunks > 32) printf(" …");
        printf(")\n");
        if (j->report.len) fwrite(j->report.p, 1, j->report.len, stdout);
        printf("  would write %d fact%s, dropped %lld\n", j->n_triples, j->n_triples == 1 ? "" : "s", j->dropped);
    }
    fflush(stdout);
    job_written(j, j->n_triples, NULL, NULL);
}

static int dry_release(kgx_engine_t *e) { (void)e; return 0; }

const kgx_sink_t kgx_sink_dry = {
    .name = "dry-run", .durable = 0, .keeps_answers = 0,
    .open = dry_open, .close = dry_close, .claim = dry_claim, .exhausted = dry_exhausted,
    .fail = dry_fail, .result = dry_result, .write = dry_write, .release = dry_release,
};
