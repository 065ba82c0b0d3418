/* reuse — see reuse.h. */
#include "reuse.h"
#include "buf.h"
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024          /* flights: at most one per request in flight */
#define BATCH_MAX 64           /* keys per lookup query */
#define LANDED_MAX_BYTES ((size_t)2 << 20)   /* answered flights kept findable (keys + answers), at most */

struct kgx_flight {
    kgx_flight_t *next;        /* bucket chain (while open) */
    char *key;
    size_t len;
    uint64_t h;
    void *leader;
    void **fol;
    size_t nfol, capfol;
    char hash[65];             /* "" until the lookup came back */
    kgx_reuse_answer_t ans;    /* landed whole: its answer (own copy), served until the leader retires it */
    char *ans_body;
    int refs;                  /* 1 while open + 1 while its lookup is pending or in the database */
    int open;
    int looking;               /* a lookup was queued for it (kgx_flight_looking) */
    kgx_reuse_t *r;            /* (for the landed bytes, while it holds an answer) */
};

typedef struct batch {
    struct batch *prev, *next;
    kgx_reuse_t *r;
    kgx_flight_t **fv;
    size_t n;
} batch_t;

struct kgx_reuse {
    uv_timer_t timer;
    kgx_reuse_query_fn query;
    void *qud;
    kgx_reuse_cbs_t cbs;
    kgx_flight_t *bucket[NBUCKETS];
    size_t nopen;
    kgx_flight_t **pend;       /* waiting for the next lookup query */
    size_t npend, cappend;
    batch_t batches;           /* in the database (list sentinel) */
    size_t landed_bytes;       /* keys + answers of the landed flights still in the table */
    int timer_on, closing;
};

/* Keys are whole request bodies (kilobytes): hashed eight bytes a step (a multiply-xorshift mix),
 * the tail byte by byte. Only for the in-process table: the database keys on SHA-256. */
static uint64_t key_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 32);
}

static void flight_unref(kgx_flight_t *f)
{
    if (--f->refs > 0) return;
    if (f->ans_body) f->r->landed_bytes -= f->len + f->ans.len;
    free(f->ans_body);
    free(f->key);
    free(f->fol);
    free(f);
}

kgx_reuse_t *kgx_reuse_new(uv_loop_t *loop, kgx_reuse_query_fn query, void *qud, const kgx_reuse_cbs_t *cbs)
{
    kgx_reuse_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->query = query;
    r->qud = qud;
    r->cbs = *cbs;
    r->batches.prev = r->batches.next = &r->batches;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    return r;
}

char *kgx_reuse_key(const char *identity, const char *path, const char *body, size_t body_len, size_t *len,
                    size_t *body_off)
{
    size_t a = strlen(identity ? identity : ""), b = strlen(path ? path : "");
    char *k = malloc(a + b + body_len + 3);
    if (!k) return NULL;
    memcpy(k, identity ? identity : "", a);
    k[a] = '\n';
    memcpy(k + a + 1, path ? path : "", b);
    k[a + 1 + b] = '\n';
    if (body_len) memcpy(k + a + b + 2, body, body_len);
    k[a + b + 2 + body_len] = 0;
    *len = a + b + 2 + body_len;
    if (body_off) *body_off = a + b + 2;
    return k;
}

kgx_flight_t *kgx_reuse_find(kgx_reuse_t *r, const char *key, size_t len)
{
    uint64_t h = key_hash(key, len);
    for (kgx_flight_t *f = r->bucket[h % NBUCKETS]; f; f = f->next)
        if (f->h == h && f->len == len && !memcmp(f->key, key, len)) return f;
    return NULL;
}

static void unlink_flight(kgx_reuse_t *r, kgx_flight_t *f)
{
    kgx_flight_t **pp = &r->bucket[f->h % NBUCKETS];
    while (*pp && *pp != f) pp = &(*pp)->next;
    if (*pp) *pp = f->next;
    f->next = NULL;
    f->open = 0;
    r->nopen--;
}

static void lookup_done(const kgx_reuse_row_t *rows, size_t n, const char *err, void *ud);
static void flush(uv_timer_t *t);

/* Keys go to the database in batches: at once when no lookup is there, else when the one there
 * comes back — the keys gathered meanwhile go in one query (B1: 2,367 lookup queries for 4,000
 * requests when each loop turn sent its own; a key waits at most one lookup's round trip more). */
static void flush_soon(kgx_reuse_t *r)
{
    if (r->timer_on || !r->npend || r->closing || r->batches.next != &r->batches) return;
    r->timer_on = 1;
    uv_timer_start(&r->timer, flush, 0, 0);
}

static void flush(uv_timer_t *t)
{
    kgx_reuse_t *r = t->data;
    r->timer_on = 0;
    while (r->npend && !r->closing) {
        /* this slice is ours before any callback runs (a callback may open flights) */
        size_t take = r->npend < BATCH_MAX ? r->npend : BATCH_MAX;
        kgx_flight_t *slice[BATCH_MAX];
        memcpy(slice, r->pend, take * sizeof *slice);
        memmove(r->pend, r->pend + take, (r->npend - take) * sizeof *r->pend);
        r->npend -= take;
        batch_t *b = calloc(1, sizeof *b);
        kgx_flight_t **fv = b ? malloc(take * sizeof *fv) : NULL;
        kgx_buf_t keys = { 0 };
        size_t n = 0;
        kgx_buf_adds(&keys, "[");
        for (size_t i = 0; i < take; i++) {
            kgx_flight_t *f = slice[i];
            if (f->open && fv && kgx_utf8_valid(f->key, f->len)) {
                if (n) kgx_buf_adds(&keys, ",");
                kgx_buf_json_strn(&keys, f->key, f->len);
                fv[n++] = f;
            } else {
                slice[i - n] = f;   /* (i - n) <= i: compacts the ones to tell below in place */
            }
        }
        kgx_buf_adds(&keys, "]");
        size_t nskip = take - n;
        if (n) {
            b->r = r;
            b->fv = fv;
            b->n = n;
            b->next = &r->batches;
            b->prev = r->batches.prev;
            r->batches.prev->next = b;
            r->batches.prev = b;
        } else {
            free(fv);
            free(b);
        }
        /* gone already, or a key jsonb cannot hold (bad UTF-8, NUL): sent without a lookup */
        for (size_t i = 0; i < nskip; i++) {
            kgx_flight_t *f = slice[i];
            if (f->open) r->cbs.found(f->leader, NULL, NULL, r->cbs.ud);
            flight_unref(f);
        }
        if (n && r->query(r->qud, keys.p, lookup_done, b) != 0) lookup_done(NULL, 0, "lookup not started", b);
        kgx_buf_free(&keys);
    }
}

static void lookup_done(const kgx_reuse_row_t *rows, size_t n, const char *err, void *ud)
{
    batch_t *b = ud;
    kgx_reuse_t *r = b->r;
    (void)err;
    b->prev->next = b->next;
    b->next->prev = b->prev;
    for (size_t i = 0; i < b->n; i++) {
        kgx_flight_t *f = b->fv[i];
        const kgx_reuse_row_t *row = rows && i < n ? &rows[i] : NULL;
        if (f->open) {
            if (row && row->hash_hex && strlen(row->hash_hex) == 64) memcpy(f->hash, row->hash_hex, 65);
            /* found() may land f (a hit parsed at once cannot, but a failure can): keep our ref till after */
            r->cbs.found(f->leader, f->hash[0] ? f->hash : NULL, row ? row->answer : NULL, r->cbs.ud);
        }
        flight_unref(f);
    }
    free(b->fv);
    free(b);
    flush_soon(r);
}

kgx_flight_t *kgx_reuse_open(kgx_reuse_t *r, char *key, size_t len, void *leader, int lookup)
{
    kgx_flight_t *f = calloc(1, sizeof *f);
    if (!f) {
        free(key);
        return NULL;
    }
    if (lookup && r->query && r->npend == r->cappend) {
        size_t cap = r->cappend ? r->cappend * 2 : 64;
        kgx_flight_t **p = realloc(r->pend, cap * sizeof *p);
        if (!p) lookup = 0;
        else r->pend = p, r->cappend = cap;
    }
    f->key = key;
    f->len = len;
    f->h = key_hash(key, len);
    f->leader = leader;
    f->r = r;
    f->refs = 1;
    f->open = 1;
    f->next = r->bucket[f->h % NBUCKETS];
    r->bucket[f->h % NBUCKETS] = f;
    r->nopen++;
    if (lookup && r->query && !r->closing) {
        f->refs++;
        f->looking = 1;
        r->pend[r->npend++] = f;
        flush_soon(r);
    }
    return f;
}

int kgx_reuse_follow(kgx_flight_t *f, void *follower)
{
    if (f->nfol == f->capfol) {
        size_t cap = f->capfol ? f->capfol * 2 : 4;
        void **p = realloc(f->fol, cap * sizeof *p);
        if (!p) return -1;
        f->fol = p;
        f->capfol = cap;
    }
    f->fol[f->nfol++] = follower;
    return 0;
}

void kgx_reuse_unfollow(kgx_flight_t *f, void *follower)
{
    for (size_t i = 0; i < f->nfol; i++)
        if (f->fol[i] == follower) {
            memmove(f->fol + i, f->fol + i + 1, (f->nfol - i - 1) * sizeof *f->fol);
            f->nfol--;
            return;
        }
}

int kgx_reuse_land(kgx_reuse_t *r, kgx_flight_t *f, const kgx_reuse_answer_t *answer)
{
    if (!f->open) return 0;
    /* a whole answer stays findable (a copy of it) until the leader retires the flight: its drawer's
     * write, which stores it, may not have committed yet when the next identical request comes. Kept
     * within LANDED_MAX_BYTES (a drawer of many chunks would otherwise hold every request of it until
     * its write); beyond that, the window is left to the stored answers. */
    int keep = answer && !f->ans_body && r->landed_bytes + f->len + answer->len <= LANDED_MAX_BYTES;
    char *copy = keep ? malloc(answer->len + 1) : NULL;
    if (copy) {
        r->landed_bytes += f->len + answer->len;
        memcpy(copy, answer->body, answer->len);
        copy[answer->len] = 0;
        f->ans_body = copy;
        f->ans = *answer;
        f->ans.body = copy;
    } else {
        unlink_flight(r, f);
    }
    /* followers are told in the order they came; the list is ours now (a landed() may open a new
     * flight with the same key once this one is unlinked: it is a new flight) */
    void **fol = f->fol;
    size_t n = f->nfol;
    f->fol = NULL;
    f->nfol = f->capfol = 0;
    for (size_t i = 0; i < n; i++) r->cbs.landed(fol[i], f->hash[0] ? f->hash : NULL, answer, r->cbs.ud);
    free(fol);
    if (!copy) flight_unref(f);
    return copy != NULL;
}

void kgx_reuse_retire(kgx_reuse_t *r, kgx_flight_t *f)
{
    if (!f->open) return;
    unlink_flight(r, f);
    for (size_t i = 0; i < f->nfol; i++) r->cbs.landed(f->fol[i], NULL, NULL, r->cbs.ud);   /* (none: see land) */
    f->nfol = 0;
    flight_unref(f);
}

const kgx_reuse_answer_t *kgx_flight_answer(const kgx_flight_t *f) { return f->ans_body ? &f->ans : NULL; }

const char *kgx_flight_key(const kgx_flight_t *f, size_t *len)
{
    if (len) *len = f->len;
    return f->key;
}

const char *kgx_flight_hash(const kgx_flight_t *f) { return f->hash[0] ? f->hash : NULL; }
size_t kgx_reuse_open_flights(const kgx_reuse_t *r) { return r->nopen; }
int kgx_flight_looking(const kgx_flight_t *f) { return f->looking; }
size_t kgx_flight_followers(const kgx_flight_t *f) { return f->nfol; }

void kgx_reuse_close(kgx_reuse_t *r)
{
    r->closing = 1;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
}

void kgx_reuse_free(kgx_reuse_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->npend; i++) flight_unref(r->pend[i]);
    free(r->pend);
    while (r->batches.next != &r->batches) {      /* lookups the database will never answer now */
        batch_t *b = r->batches.next;
        b->prev->next = b->next;
        b->next->prev = b->prev;
        for (size_t i = 0; i < b->n; i++) flight_unref(b->fv[i]);
        free(b->fv);
        free(b);
    }
    for (size_t i = 0; i < NBUCKETS; i++)
        while (r->bucket[i]) {
            kgx_flight_t *f = r->bucket[i];
            r->bucket[i] = f->next;
            flight_unref(f);
        }
    free(r);
}
