/* queue — see queue.h. All SQL on the queue table lives here (the completing write is graph.c's). */
#include "queue.h"
#include "budget.h"
#include "buf.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define Q "public.mempalace_kg_extraction_queue"

static char *dup_or_null(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) return NULL;
    return strdup(PQgetvalue(r, row, col));
}

static const char *result_error(const PGresult *res, const char *err)
{
    if (!res) return err ? err : "database error";
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return NULL;
    return err ? err : "database error";
}

/* ------------------------------------------------------------------ claim */

/* Oldest pending rows first. Each drawer's text comes with its claim when it is small (at most
 * KGX_CLAIM_TEXT_MAX bytes) and, counted in claim order, within $4 bytes (room of the memory budget,
 * which the caller holds for them: budget.c); for the others their size only (octet_length, a TOAST
 * header: the text is not read), their text fetched afterwards within the budget
 * (kgx_queue_fetch_text[s]). B1: one query per claim instead of two. */
#define STR_(x) #x
#define STR(x) STR_(x)
#define CLAIM_TEXT_MAX STR(KGX_CLAIM_TEXT_MAX)
static const char claim_sql[] =
    "WITH c AS ("
    "  SELECT drawer_id, queued_at FROM " Q
    "   WHERE completed_at IS NULL AND error IS NULL"
    "     AND (started_at IS NULL OR started_at < now() - make_interval(secs => $2::float8))"
    "   ORDER BY queued_at, drawer_id LIMIT $3::int FOR UPDATE SKIP LOCKED),"
    /* (the drawers row is joined here for the sizes and again below for the text: carried through
     *  this CTE, every claimed text — 10 MB ones too — was detoasted into the join's hash table,
     *  28 MB for five; joined below, only a returned text is read) */
    " s AS (SELECT c.drawer_id, sum(CASE WHEN octet_length(d.document) <= " CLAIM_TEXT_MAX
    "              THEN octet_length(d.document) END) OVER (ORDER BY c.queued_at, c.drawer_id) AS run"
    "         FROM c LEFT JOIN public.mempalace_drawers d ON d.id = c.drawer_id)"
    " UPDATE " Q " q SET started_at = now(), worker_id = $1, claim_token = nextval('public.kgx_claim_seq')"
    "  FROM s LEFT JOIN public.mempalace_drawers d ON d.id = s.drawer_id"
    " WHERE q.drawer_id = s.drawer_id"
    " RETURNING q.drawer_id, coalesce(d.wing, q.wing), coalesce(d.room, q.room), octet_length(d.document),"
    "           d.metadata::text, q.claim_token, q.attempts, (d.id IS NULL),"
    "           CASE WHEN octet_length(d.document) <= " CLAIM_TEXT_MAX " AND s.run <= $4::bigint"
    "                THEN d.document END";

typedef struct {
    kgx_queue_claim_cb cb;
    void *ud;
    kgx_db_t *db;
    char *params[4];
    int tries;
} claim_ctx_t;

static void claim_free(claim_ctx_t *c)
{
    for (int i = 0; i < 4; i++) free(c->params[i]);
    free(c);
}

static void claim_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    claim_ctx_t *c = ud;
    const char *e = result_error(res, err);
    /* a claim cancelled by statement_timeout (57014) claimed nothing; the index entries of rows that
     * left the queue, which it walked past, are marked dead on the way, so the next try goes further:
     * tried again at once, a few times, before the caller hears of it */
    if (e && sqlstate && !strcmp(sqlstate, "57014") && ++c->tries < 8) {
        log_debug("claim cancelled by statement_timeout: trying again (%d)", c->tries);
        if (!kgx_db_query(c->db, claim_sql, 4, (const char *const *)c->params, claim_done, c)) return;
    }
    if (e) {
        c->cb(NULL, 0, e, c->ud);
        claim_free(c);
        return;
    }
    int n = PQntuples(res);
    kgx_claim_row_t *rows = calloc((size_t)(n ? n : 1), sizeof *rows);
    for (int i = 0; i < n; i++) {
        kgx_claim_row_t *r = &rows[i];
        r->drawer_id = dup_or_null(res, i, 0);
        r->wing = dup_or_null(res, i, 1);
        r->room = dup_or_null(res, i, 2);
        /* budget: column 3 is the text's size; column 8 the text, when it came with the claim (else
         * it comes later: kgx_queue_fetch_text[s]) */
        r->text_pending = !PQgetisnull(res, i, 3);
        r->document_len = r->text_pending ? (size_t)strtoull(PQgetvalue(res, i, 3), NULL, 10) : 0;
        if (r->text_pending && !PQgetisnull(res, i, 8) && (size_t)PQgetlength(res, i, 8) == r->document_len
            && (r->document = malloc(r->document_len + 1))) {
            memcpy(r->document, PQgetvalue(res, i, 8), r->document_len);
            r->document[r->document_len] = '\0';
            r->text_pending = 0;
        }
        r->metadata = dup_or_null(res, i, 4);
        r->token = strtoll(PQgetvalue(res, i, 5), NULL, 10);
        r->attempts = atoi(PQgetvalue(res, i, 6));
        r->missing = PQgetvalue(res, i, 7)[0] == 't';
    }
    c->cb(rows, n, NULL, c->ud);
    claim_free(c);
}

int kgx_queue_claim(kgx_db_t *db, const char *worker, double lease_s, int limit, size_t text_bytes,
                    kgx_queue_claim_cb cb, void *ud)
{
    char lease[32], lim[16], bytes[24];
    snprintf(lease, sizeof lease, "%.3f", lease_s);
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(bytes, sizeof bytes, "%zu", text_bytes);
    const char *p[] = { worker, lease, lim, bytes };
    claim_ctx_t *c = calloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    c->db = db;
    for (int i = 0; i < 4; i++) c->params[i] = strdup(p[i]);
    int rc = kgx_db_query(db, claim_sql, 4, p, claim_done, c);
    if (rc) claim_free(c);
    return rc;
}

void kgx_claim_rows_free(kgx_claim_row_t *rows, int n)
{
    if (!rows) return;
    for (int i = 0; i < n; i++) {
        free(rows[i].drawer_id);
        free(rows[i].wing);
        free(rows[i].room);
        free(rows[i].document);
        free(rows[i].metadata);
    }
    free(rows);
}

/* ------------------------------------------------------------------ drawer text, in pieces */

/* One piece of the text: substr counts characters, so each piece also says how many bytes the
 * whole text has now (a drawer edited since the claim is noticed) and whether the row still exists
 * (no row: no result row). Pieces keep the transient copies (libpq's buffer, the result) small
 * whatever the drawer's size; the server-side cost of substr on a compressed TOAST value grows with
 * the offset, hence few, large pieces (see piece_chars). */
static const char text_sql[] =
    "SELECT substr(document, $2::int, $3::int), octet_length(document)"
    "  FROM public.mempalace_drawers WHERE id = $1";

/* Several small texts in one query (budget.c gathers the drawers admitted in one pump): one round
 * trip instead of one per drawer, the same checks (no row: gone; another size: changed). */
static const char texts_sql[] =
    "SELECT d.document, octet_length(d.document)"
    "  FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY AS u(id, i)"
    "  LEFT JOIN public.mempalace_drawers d ON d.id = u.id ORDER BY u.i";

struct kgx_text_fetch {
    kgx_db_t *db;
    /* a batch (kgx_queue_fetch_texts): n drawers of the sizes claimed, one callback each */
    int n;
    size_t *lens;
    kgx_queue_texts_cb bcb;
    /* one text in pieces (kgx_queue_fetch_text) */
    char *drawer_id;
    char *buf;                 /* len + 1 bytes, filled up to got */
    size_t len, got;
    long long next_char;       /* 1-based character position of the next piece */
    long long piece;           /* characters per piece */
    int pieces;                /* queries answered */
    kgx_queue_text_cb cb;
    void *ud;
};

/* characters per piece: 1 Mi, or 1/32 of the text for huge drawers (bounds the number of queries) */
static long long piece_chars(size_t len)
{
    long long p = (long long)(len / 32);
    return p < (1LL << 20) ? (1LL << 20) : p;
}

static void text_fetch_free(kgx_text_fetch_t *f)
{
    free(f->lens);
    free(f->drawer_id);
    free(f->buf);
    free(f);
}

static int text_query(kgx_text_fetch_t *f);

static void text_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    kgx_text_fetch_t *f = ud;
    (void)sqlstate;
    const char *e = result_error(res, err);
    int status = 0;
    if (e) {
        status = KGX_TEXT_ERROR;
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        status = KGX_TEXT_GONE;
    } else if ((size_t)strtoull(PQgetvalue(res, 0, 1), NULL, 10) != f->len) {
        status = KGX_TEXT_CHANGED;
    } else {
        size_t n = (size_t)PQgetlength(res, 0, 0);
        if (n > f->len - f->got) {
            status = KGX_TEXT_CHANGED;
        } else {
            memcpy(f->buf + f->got, PQgetvalue(res, 0, 0), n);
            f->got += n;
            f->pieces++;
            f->next_char += f->piece;
            if (n > 0 && f->got < f->len) {
                if (text_query(f) == 0) return;   /* the next piece */
                status = KGX_TEXT_ERROR;
                e = "database handle closing";
            } else if (f->got != f->len) {
                status = KGX_TEXT_CHANGED;        /* shorter than its octet_length said */
            }
        }
    }
    kgx_queue_text_cb cb = f->cb;
    void *cud = f->ud;
    int pieces = f->pieces;
    char *text = NULL;
    size_t len = 0;
    if (status == 0) {
        f->buf[f->len] = '\0';
        text = f->buf;
        len = f->len;
        f->buf = NULL;
    }
    text_fetch_free(f);
    cb(status, text, len, pieces, status == KGX_TEXT_ERROR ? (e ? e : "database error") : NULL, cud);
}

static int text_query(kgx_text_fetch_t *f)
{
    char from[32], count[32];
    snprintf(from, sizeof from, "%lld", f->next_char);
    snprintf(count, sizeof count, "%lld", f->piece);
    const char *p[] = { f->drawer_id, from, count };
    return kgx_db_query(f->db, text_sql, 3, p, text_done, f);
}

kgx_text_fetch_t *kgx_queue_fetch_text(kgx_db_t *db, const char *drawer_id, size_t len,
                                       kgx_queue_text_cb cb, void *ud)
{
    kgx_text_fetch_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->db = db;
    f->drawer_id = strdup(drawer_id);
    f->buf = malloc(len + 1);
    f->len = len;
    f->next_char = 1;
    f->piece = piece_chars(len);
    f->cb = cb;
    f->ud = ud;
    if (!f->drawer_id || !f->buf || text_query(f) != 0) {
        text_fetch_free(f);
        return NULL;
    }
    return f;
}

static void texts_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    kgx_text_fetch_t *f = ud;
    (void)sqlstate;
    const char *e = result_error(res, err);
    if (!e && PQntuples(res) != f->n) e = "drawer texts: unexpected row count";
    for (int i = 0; i < f->n; i++) {
        int status = 0;
        const char *why = e;          /* the query's error, or this drawer's */
        char *text = NULL;
        size_t len = 0;
        if (e) {
            status = KGX_TEXT_ERROR;
        } else if (PQgetisnull(res, i, 0)) {
            status = KGX_TEXT_GONE;
        } else if ((size_t)strtoull(PQgetvalue(res, i, 1), NULL, 10) != f->lens[i]
                   || (size_t)PQgetlength(res, i, 0) != f->lens[i]) {
            status = KGX_TEXT_CHANGED;
        } else if (!(text = malloc(f->lens[i] + 1))) {
            status = KGX_TEXT_ERROR;
            why = "out of memory";
        } else {
            len = f->lens[i];
            memcpy(text, PQgetvalue(res, i, 0), len);
            text[len] = '\0';
        }
        f->bcb(i, status, text, len, status == KGX_TEXT_ERROR ? why : NULL, f->ud);
    }
    text_fetch_free(f);
}

kgx_text_fetch_t *kgx_queue_fetch_texts(kgx_db_t *db, int n, const char *const *ids, const size_t *lens,
                                        kgx_queue_texts_cb cb, void *ud)
{
    kgx_text_fetch_t *f = calloc(1, sizeof *f);
    kgx_buf_t b = { 0 };
    if (!f || n < 1 || !(f->lens = malloc((size_t)n * sizeof *f->lens))) goto fail;
    f->db = db;
    f->n = n;
    f->bcb = cb;
    f->ud = ud;
    kgx_buf_adds(&b, "[");
    for (int i = 0; i < n; i++) {
        f->lens[i] = lens[i];
        if (i) kgx_buf_adds(&b, ",");
        kgx_buf_json_str(&b, ids[i]);
    }
    kgx_buf_adds(&b, "]");
    const char *p[] = { b.p };
    if (kgx_db_query_prepared(db, texts_sql, 1, p, texts_done, f) != 0) goto fail;
    kgx_buf_free(&b);
    return f;
fail:
    kgx_buf_free(&b);
    if (f) text_fetch_free(f);
    return NULL;
}

void kgx_queue_fetch_abandon(kgx_text_fetch_t *f)
{
    if (f) text_fetch_free(f);
}

/* ------------------------------------------------------------------ failures */

static const char fail_sql[] =
    "UPDATE " Q " SET attempts = attempts + 1, last_error = left($3, 2000),"
    "       error = CASE WHEN attempts + 1 >= $4::int THEN left($3, 2000) END,"
    "       parked_at = CASE WHEN attempts + 1 >= $4::int THEN now() END,"
    "       started_at = CASE WHEN attempts + 1 >= $4::int THEN NULL ELSE now() END,"
    "       worker_id = CASE WHEN attempts + 1 >= $4::int THEN NULL ELSE worker_id END"
    " WHERE drawer_id = $1 AND claim_token = $2::bigint AND completed_at IS NULL AND error IS NULL"
    " RETURNING attempts, error IS NOT NULL";

typedef struct { kgx_queue_fail_cb cb; kgx_queue_done_cb done; void *ud; } op_ctx_t;

static void fail_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    op_ctx_t *c = ud;
    const char *e = result_error(res, err);
    if (e) c->cb(0, 0, 0, e, c->ud);
    else if (PQntuples(res) == 0) c->cb(0, 0, 1, NULL, c->ud);
    else c->cb(atoi(PQgetvalue(res, 0, 0)), PQgetvalue(res, 0, 1)[0] == 't', 0, NULL, c->ud);
    free(c);
}

static void op_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    op_ctx_t *c = ud;
    const char *e = result_error(res, err);
    if (c->done) c->done(e ? -1 : strtoll(PQcmdTuples((PGresult *)res), NULL, 10), e, c->ud);
    free(c);
}

static int run_op(kgx_db_t *db, const char *sql, int n, const char *const *p,
                  kgx_db_cb fn, kgx_queue_fail_cb fcb, kgx_queue_done_cb dcb, void *ud)
{
    op_ctx_t *c = malloc(sizeof *c);
    c->cb = fcb;
    c->done = dcb;
    c->ud = ud;
    int rc = kgx_db_query(db, sql, n, p, fn, c);
    if (rc) free(c);
    return rc;
}

int kgx_queue_fail(kgx_db_t *db, const char *drawer_id, long long token, const char *msg,
                   int max_attempts, kgx_queue_fail_cb cb, void *ud)
{
    char tok[32], max[16];
    snprintf(tok, sizeof tok, "%lld", token);
    snprintf(max, sizeof max, "%d", max_attempts);
    const char *p[] = { drawer_id, tok, msg, max };
    return run_op(db, fail_sql, 4, p, fail_done, cb, NULL, ud);
}

int kgx_queue_park(kgx_db_t *db, const char *drawer_id, long long token, const char *msg,
                   kgx_queue_done_cb cb, void *ud)
{
    static const char sql[] =
        "UPDATE " Q " SET error = left($3, 2000), last_error = left($3, 2000), parked_at = now(),"
        "       started_at = NULL, worker_id = NULL"
        " WHERE drawer_id = $1 AND claim_token = $2::bigint AND completed_at IS NULL AND error IS NULL";
    char tok[32];
    snprintf(tok, sizeof tok, "%lld", token);
    const char *p[] = { drawer_id, tok, msg };
    return run_op(db, sql, 3, p, op_done, NULL, cb, ud);
}

int kgx_queue_unclaim(kgx_db_t *db, const char *drawer_id, long long token, kgx_queue_done_cb cb, void *ud)
{
    static const char sql[] =
        "UPDATE " Q " SET started_at = NULL, worker_id = NULL, claim_token = NULL"
        " WHERE drawer_id = $1 AND claim_token = $2::bigint AND completed_at IS NULL";
    char tok[32];
    snprintf(tok, sizeof tok, "%lld", token);
    const char *p[] = { drawer_id, tok };
    return run_op(db, sql, 2, p, op_done, NULL, cb, ud);
}

int kgx_queue_release_all(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud)
{
    /* Only this worker's rows: other processes keep theirs (the seed released everyone's). */
    static const char sql[] =
        "UPDATE " Q " SET started_at = NULL, worker_id = NULL, claim_token = NULL"
        " WHERE worker_id = $1 AND completed_at IS NULL AND error IS NULL";
    const char *p[] = { worker };
    return run_op(db, sql, 1, p, op_done, NULL, cb, ud);
}

int kgx_queue_heartbeat(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud)
{
    static const char sql[] =
        "UPDATE " Q " SET started_at = now()"
        " WHERE worker_id = $1 AND completed_at IS NULL AND error IS NULL AND started_at IS NOT NULL";
    const char *p[] = { worker };
    return run_op(db, sql, 1, p, op_done, NULL, cb, ud);
}

/* ------------------------------------------------------------------ counters */

/* Cheap at any queue size: the row classes and the completions of the last 24 h / 5 min come from
 * the maintained counters (kgx_queue_counts_at(): 10-second buckets, so the windows are exact to ±10 s),
 * read in one snapshot with the claimed rows (kgx_queue_started_idx: pending = unfinished - claimed is
 * never negative); the rest from small, indexed sets — rows that failed
 * (kgx_queue_retry_idx), rows with a status (kgx_queue_status_idx). */
static const char counts_sql[] =
    "WITH r AS (SELECT count(*) AS retrying FROM " Q     /* first: a missing queue is what an error names */
    "        WHERE completed_at IS NULL AND error IS NULL AND attempts > 0),"
    " s AS (SELECT count(*) FILTER (WHERE status = 'deleted') AS deleted FROM " Q " WHERE status IS NOT NULL),"
    " t AS (SELECT * FROM public.kgx_queue_counts_at($1::float8))"
    " SELECT t.unfinished - t.live, t.live, t.done_24h, t.parked, t.triples_5m, t.done_5m / 5.0, t.stale,"
    "        t.completed, r.retrying, t.total, s.deleted"
    "   FROM t, r, s";

static void parse_counts(const PGresult *r, kgx_queue_counts_t *o)
{
    memset(o, 0, sizeof *o);
    o->queue_depth = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    o->in_progress = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    o->completed_today = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    o->errors_total = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    o->triples_extracted_5m = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    o->drawers_per_min_5m = strtod(PQgetvalue(r, 0, 5), NULL);
    o->stale_reclaimable = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
    o->completed_total = strtoll(PQgetvalue(r, 0, 7), NULL, 10);
    o->retrying = strtoll(PQgetvalue(r, 0, 8), NULL, 10);
    o->total = strtoll(PQgetvalue(r, 0, 9), NULL, 10);
    o->deleted = strtoll(PQgetvalue(r, 0, 10), NULL, 10);
}

typedef struct { kgx_queue_counts_cb cb; void *ud; } counts_ctx_t;

static void counts_done(const PGresult *res, const char *err, const char *sqlstate, void *ud)
{
    counts_ctx_t *c = ud;
    const char *e = result_error(res, err);
    kgx_queue_counts_t k;
    if (!e) parse_counts(res, &k);
    c->cb(e ? NULL : &k, e, c->ud);
    free(c);
}

int kgx_queue_counts(kgx_db_t *db, double lease_s, kgx_queue_counts_cb cb, void *ud)
{
    char lease[32];
    snprintf(lease, sizeof lease, "%.3f", lease_s);
    const char *p[] = { lease };
    counts_ctx_t *c = malloc(sizeof *c);
    c->cb = cb;
    c->ud = ud;
    int rc = kgx_db_query(db, counts_sql, 1, p, counts_done, c);
    if (rc) free(c);
    return rc;
}

int kgx_queue_counts_blocking(PGconn *c, double lease_s, kgx_queue_counts_t *out, char *err, size_t errlen)
{
    char lease[32];
    snprintf(lease, sizeof lease, "%.3f", lease_s);
    const char *p[] = { lease };
    PGresult *r = PQexecParams(c, counts_sql, 1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kgx_db_result_error(err, errlen, "status query failed: ", r);
        rc = -1;
    } else {
        parse_counts(r, out);
    }
    PQclear(r);
    return rc;
}

int kgx_queue_seed_backfill(PGconn *c, long limit, long long *inserted, char *err, size_t errlen)
{
    /* Drawers never queued are added; rows already there (pending, parked or done) are left alone:
     * parked rows keep their error until an operator re-queues them. In slices of drawer ids, one
     * statement each (a short statement_timeout is enough; a slice cancelled by it is halved and
     * tried again): each slice gets its own queued_at, in id order, so claims walk the claim index
     * from its head. */
    static const char sql[] =
        "WITH s AS (SELECT d.id, d.wing, d.room FROM public.mempalace_drawers d"
        "            WHERE d.id > $1 ORDER BY d.id LIMIT $2::int),"
        " i AS (INSERT INTO " Q " (drawer_id, wing, room)"
        "       SELECT s.id, s.wing, s.room FROM s"
        "        WHERE NOT EXISTS (SELECT 1 FROM " Q " q WHERE q.drawer_id = s.id)"
        "        ORDER BY s.id LIMIT $3::bigint"
        "       ON CONFLICT (drawer_id) DO NOTHING RETURNING 1)"
        " SELECT (SELECT max(id) FROM s), (SELECT count(*) FROM i)";
    char *last = strdup("");
    long long total = 0;
    int slice = 2000, rc = 0;
    for (;;) {
        char sl[16], rem[32];
        snprintf(sl, sizeof sl, "%d", slice);
        snprintf(rem, sizeof rem, "%lld", limit > 0 ? (long long)limit - total : 1000000000LL);
        const char *p[] = { last, sl, rem };
        PGresult *r = PQexecParams(c, sql, 3, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (st && !strcmp(st, "57014") && slice > 10) {
                slice /= 2;
                PQclear(r);
                continue;
            }
            kgx_db_result_error(err, errlen, "backfill seeding failed: ", r);
            PQclear(r);
            rc = -1;
            break;
        }
        if (PQgetisnull(r, 0, 0)) {
            PQclear(r);
            break;
        }
        free(last);
        last = strdup(PQgetvalue(r, 0, 0));
        total += strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        PQclear(r);
        if (limit > 0 && total >= limit) break;
        if (slice < 2000) slice *= 2;
    }
    free(last);
    if (inserted) *inserted = total;
    return rc;
}

/* ------------------------------------------------------------------ live workers */

/* The single value of a one-row, one-column query (malloc'd), or NULL with err. */
static char *one_value(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    char *out = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) kgx_db_result_error(err, errlen, "workers: ", r);
    else out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return out;
}

int kgx_queue_publish_worker(kgx_db_t *db, const char *worker, const char *state_json, kgx_queue_done_cb cb, void *ud)
{
    static const char sql[] =
        "INSERT INTO public.kgx_workers (worker_id, state) VALUES ($1, $2::jsonb)"
        " ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), state = EXCLUDED.state";
    const char *p[] = { worker, state_json };
    return run_op(db, sql, 2, p, op_done, NULL, cb, ud);
}

int kgx_queue_forget_worker(kgx_db_t *db, const char *worker, kgx_queue_done_cb cb, void *ud)
{
    static const char sql[] = "DELETE FROM public.kgx_workers WHERE worker_id = $1 OR seen_at < now() - interval '1 day'";
    const char *p[] = { worker };
    return run_op(db, sql, 1, p, op_done, NULL, cb, ud);
}

char *kgx_queue_workers_json(PGconn *c, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT coalesce(jsonb_agg(jsonb_build_object('worker_id', worker_id, 'started_at', started_at,"
        "       'seen_at', seen_at) || state ORDER BY worker_id), '[]'::jsonb)::text"
        "  FROM public.kgx_workers WHERE seen_at > now() - interval '60 seconds'";
    return one_value(c, sql, err, errlen);
}

char *kgx_queue_workers_text(PGconn *c, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT coalesce(string_agg(format('  %s  policy=%s %s  in_flight=%s  completed=%s  seen %ss ago\n%s%s',"
        "         worker_id, state->'policy'->>'name', state->'policy'->>'version', state->>'in_flight',"
        "         state->>'completed', round(extract(epoch FROM now() - seen_at))::int,"
        /* economy (issue 14): what this process asked the LLM and what it did not need to */
        "         CASE WHEN state ? 'llm' THEN format(E'    llm requests=%s answers_reused=%s (in flight: %s) chunks_skipped=%s"
        " dense_splits=%s\n', state->'llm'->>'requests', coalesce(state->'llm'->>'answers_reused', '0'),"
        "              coalesce(state->'llm'->>'answers_reused_in_flight', '0'), state->'llm'->>'chunks_skipped',"
        "              state->'llm'->>'dense_splits') ELSE '' END,"
        "         (SELECT string_agg(format('    endpoint %s %s in_flight=%s slots=%s n_ctx=%s%s', e->>'url',"
        "                  e->>'state', e->>'in_flight', e->>'slots', e->>'n_ctx',"
        "                  coalesce(' last_error=' || (e->>'last_error'), '')), E'\n')"
        "            FROM jsonb_array_elements(state->'endpoints') e)), E'\n' ORDER BY worker_id), '')"
        "  FROM public.kgx_workers WHERE seen_at > now() - interval '60 seconds'";
    return one_value(c, sql, err, errlen);
}
