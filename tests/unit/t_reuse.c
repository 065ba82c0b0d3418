/* t_reuse — answer reuse's bookkeeping (reuse.c) without a database: request keys, flights and their
 * followers (a whole answer reaches every follower, a failed one sends each on its own), lookups
 * batched per loop turn and answered in order, a failed lookup never holds a request up, a flight
 * that ends while its lookup is in the database ignores the late answer, and the model identity read
 * from /props (endpoint.c). */
#include "reuse.h"
#include "endpoint.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

typedef struct { int id; int found, landed; char hash[65]; char body[64]; int got_answer; } who_t;

static int nqueries;
static char last_keys[4096];
static kgx_reuse_rows_cb pending_cb;
static void *pending_ud;
static int fail_start;

static int query(void *qud, const char *keys_json, kgx_reuse_rows_cb cb, void *ud)
{
    (void)qud;
    if (fail_start) return -1;
    nqueries++;
    snprintf(last_keys, sizeof last_keys, "%s", keys_json);
    pending_cb = cb;
    pending_ud = ud;
    return 0;
}

static void note(who_t *w, const char *hash, const kgx_reuse_answer_t *a)
{
    if (hash) memcpy(w->hash, hash, 65);
    w->got_answer = a != NULL;
    if (a) snprintf(w->body, sizeof w->body, "%.*s", (int)a->len, a->body);
}
static void found(void *leader, const char *hash, const kgx_reuse_answer_t *a, void *ud)
{
    (void)ud;
    ((who_t *)leader)->found++;
    note(leader, hash, a);
}
static void landed(void *follower, const char *hash, const kgx_reuse_answer_t *a, void *ud)
{
    (void)ud;
    ((who_t *)follower)->landed++;
    note(follower, hash, a);
}

static char *key(const char *body, size_t *len)
{
    return kgx_reuse_key("/models/m.gguf template=0", "/completion", body, strlen(body), len, NULL);
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    kgx_reuse_cbs_t cbs = { found, landed, NULL };
    kgx_reuse_t *r = kgx_reuse_new(&loop, query, NULL, &cbs);

    /* keys: identity, path and body, byte for byte */
    size_t n1, n2, off;
    char *k1 = kgx_reuse_key("id", "/p", "{\"a\":1}", 7, &n1, &off);
    is_str(k1, "id\n/p\n{\"a\":1}", "key = identity \\n path \\n body");
    is_int(off, 6, "the body starts after the second line");
    char *k2 = kgx_reuse_key("id2", "/p", "{\"a\":1}", 7, &n2, NULL);
    ok(n1 != n2 || memcmp(k1, k2, n1), "another model identity, another key");
    free(k1);
    free(k2);

    /* a leader, two followers; the lookup batches all three loop-turn keys in one query */
    who_t a = { .id = 1 }, b = { .id = 2 }, c = { .id = 3 }, d = { .id = 4 };
    size_t la, lc;
    char *ka = key("{\"prompt\":\"x\"}", &la);
    kgx_flight_t *fa = kgx_reuse_open(r, ka, la, &a, 1);
    ok(fa != NULL, "flight opened");
    char *probe = key("{\"prompt\":\"x\"}", &la);
    ok(kgx_reuse_find(r, probe, la) == fa, "an identical request finds the flight");
    free(probe);
    probe = key("{\"prompt\":\"y\"}", &la);
    ok(kgx_reuse_find(r, probe, la) == NULL, "a different body does not");
    free(probe);
    is_int(kgx_reuse_follow(fa, &b), 0, "b follows a");
    is_int(kgx_reuse_follow(fa, &d), 0, "d follows a");
    kgx_reuse_unfollow(fa, &d);
    is_int(kgx_flight_followers(fa), 1, "d stopped following (cancelled)");
    char *kc = key("{\"prompt\":\"z\"}", &lc);
    kgx_flight_t *fc = kgx_reuse_open(r, kc, lc, &c, 1);
    is_int(nqueries, 0, "no query inside open: the keys of one loop turn go together");
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(nqueries, 1, "one query for two keys");
    ok(strstr(last_keys, "\\\"x\\\"") && strstr(last_keys, "\\\"z\\\"") && last_keys[0] == '[', "keys sent as a JSON array");

    /* the database answers: a hit for a, a miss for c; every key has its hash */
    static const char h1[] = "1111111111111111111111111111111111111111111111111111111111111111";
    static const char h2[] = "2222222222222222222222222222222222222222222222222222222222222222";
    kgx_reuse_answer_t stored = { "{\"content\":\"[]\"}", 16, 10, 2 };
    kgx_reuse_row_t rows[2] = { { h1, &stored }, { h2, NULL } };
    pending_cb(rows, 2, NULL, pending_ud);
    ok(a.found == 1 && a.got_answer && !strcmp(a.body, "{\"content\":\"[]\"}") && !strcmp(a.hash, h1),
       "a: found the stored answer with its hash");
    ok(c.found == 1 && !c.got_answer && !strcmp(c.hash, h2), "c: a miss, with its hash (sent, then stored)");
    is_str(kgx_flight_hash(fa), h1, "the flight knows its hash");

    /* a's answer parses whole: its follower gets the same answer and hash */
    kgx_reuse_land(r, fa, &stored);
    ok(b.landed == 1 && b.got_answer && !strcmp(b.hash, h1), "b: landed with a's answer");
    is_int(d.landed, 0, "d (unfollowed) is not told");
    /* until a's drawer is written, the same request finds the answer in the table at once */
    probe = key("{\"prompt\":\"x\"}", &la);
    kgx_flight_t *again = kgx_reuse_find(r, probe, la);
    free(probe);
    ok(again == fa && kgx_flight_answer(again) && kgx_flight_answer(again)->len == 16 &&
       !memcmp(kgx_flight_answer(again)->body, "{\"content\":\"[]\"}", 16) && kgx_flight_answer(again)->prompt_tokens == 10,
       "a landed flight holds its own copy of the answer, with its token counts");
    ok(kgx_flight_answer(fc) == NULL, "a flight in the air has no answer yet");
    kgx_reuse_retire(r, fa);
    probe = key("{\"prompt\":\"x\"}", &la);
    ok(kgx_reuse_find(r, probe, la) == NULL, "retired (its drawer written): gone from the table");
    free(probe);
    /* c's request fails: followers are sent on their own */
    is_int(kgx_reuse_follow(fc, &d), 0, "d follows c");
    kgx_reuse_land(r, fc, NULL);
    ok(d.landed == 1 && !d.got_answer, "d: c failed, d sends its own");
    is_int(kgx_reuse_open_flights(r), 0, "no flight left open");

    /* a flight that ends while its lookup is in the database: the late answer is ignored */
    who_t e = { .id = 5 };
    size_t le;
    char *ke = key("{\"prompt\":\"late\"}", &le);
    kgx_flight_t *fe = kgx_reuse_open(r, ke, le, &e, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(nqueries, 2, "looked up");
    kgx_reuse_land(r, fe, NULL);                  /* cancelled meanwhile */
    kgx_reuse_row_t late[1] = { { h1, &stored } };
    pending_cb(late, 1, NULL, pending_ud);
    is_int(e.found, 0, "the late answer reaches nobody");

    /* a lookup that fails (database away, or not started): the request is sent, with no hash */
    who_t f = { .id = 6 }, g = { .id = 7 };
    size_t lf, lg;
    char *kf = key("{\"prompt\":\"f\"}", &lf);
    kgx_flight_t *ff = kgx_reuse_open(r, kf, lf, &f, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    pending_cb(NULL, 0, "connection lost", pending_ud);
    ok(f.found == 1 && !f.got_answer && !f.hash[0], "failed lookup: sent, no hash");
    kgx_reuse_land(r, ff, NULL);
    fail_start = 1;
    char *kg = key("{\"prompt\":\"g\"}", &lg);
    kgx_flight_t *fg = kgx_reuse_open(r, kg, lg, &g, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    ok(g.found == 1 && !g.got_answer, "a lookup that cannot start: sent at once");
    kgx_reuse_land(r, fg, NULL);
    fail_start = 0;

    /* a key jsonb cannot hold (invalid UTF-8) is sent without a lookup; the others still go */
    who_t h = { .id = 8 }, i = { .id = 9 };
    size_t lh, li;
    char *kh = kgx_reuse_key("id", "/p", "\xff\xfe", 2, &lh, NULL);
    char *ki = key("{\"prompt\":\"i\"}", &li);
    kgx_flight_t *fh = kgx_reuse_open(r, kh, lh, &h, 1), *fi = kgx_reuse_open(r, ki, li, &i, 1);
    int before = nqueries;
    uv_run(&loop, UV_RUN_NOWAIT);
    ok(h.found == 1 && !h.got_answer, "invalid UTF-8 key: sent without a lookup");
    is_int(nqueries, before + 1, "the valid key is still looked up");
    ok(!strstr(last_keys, "\\u00ff") && strstr(last_keys, "\\\"i\\\""), "only the valid key in the query");
    kgx_reuse_row_t one[1] = { { h2, NULL } };
    pending_cb(one, 1, NULL, pending_ud);
    is_int(i.found, 1, "i: answered");
    kgx_reuse_land(r, fh, NULL);
    kgx_reuse_land(r, fi, NULL);

    /* many keys in one turn: queries of at most 64 keys, each key looked up once */
    who_t many[150];
    kgx_flight_t *mf[150];
    before = nqueries;
    for (int k = 0; k < 150; k++) {
        char body[32];
        size_t lk;
        memset(&many[k], 0, sizeof many[k]);
        snprintf(body, sizeof body, "{\"n\":%d}", k);
        char *kk = kgx_reuse_key("id", "/p", body, strlen(body), &lk, NULL);
        mf[k] = kgx_reuse_open(r, kk, lk, &many[k], 1);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(nqueries - before, 3, "150 keys: 3 queries (64 + 64 + 22)");
    for (int k = 0; k < 150; k++) kgx_reuse_land(r, mf[k], NULL);

    /* answered flights are kept findable within 2 MiB (keys + answers): a drawer of many chunks does not
     * hold every request of it until its write */
    {
        size_t big = (size_t)1 << 20, lb;
        char *body = malloc(big);
        memset(body, 'x', big);
        who_t p = { .id = 11 }, q = { .id = 12 };
        char *kp = kgx_reuse_key("id", "/p", body, big, &lb, NULL);
        kgx_flight_t *fp = kgx_reuse_open(r, kp, lb, &p, 0);
        body[0] = 'y';
        char *kq = kgx_reuse_key("id", "/p", body, big, &lb, NULL);
        kgx_flight_t *fq = kgx_reuse_open(r, kq, lb, &q, 0);
        kgx_reuse_answer_t small = { "{}", 2, -1, -1 };
        is_int(kgx_reuse_land(r, fp, &small), 1, "a 1 MiB request's answer is kept");
        ok(kgx_flight_answer(fp) != NULL, "... findable");
        is_int(kgx_reuse_open_flights(r), 2, "... its flight stays in the table");
        is_int(kgx_reuse_land(r, fq, &small), 0, "a second 1 MiB one would pass 2 MiB: not kept");
        is_int(kgx_reuse_open_flights(r), 1, "... gone from the table");
        kgx_reuse_retire(r, fp);
        is_int(kgx_reuse_open_flights(r), 0, "retired");
        free(body);
    }

    /* a flight still open at the end is freed without callbacks (no leak under valgrind) */
    who_t z = { .id = 10 };
    size_t lz;
    char *kz = key("{\"prompt\":\"end\"}", &lz);
    kgx_reuse_open(r, kz, lz, &z, 0);
    kgx_reuse_close(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    kgx_reuse_free(r);

    /* answers not kept (no query): flights still pair twins, but nothing is looked up — the leader
     * is told so and sends at once (it once waited in CH_LOOKUP for ever) */
    kgx_reuse_t *nq = kgx_reuse_new(&loop, NULL, NULL, &cbs);
    size_t ln;
    char *kn = key("{\"prompt\":\"nokeep\"}", &ln);
    kgx_flight_t *fn = kgx_reuse_open(nq, kn, ln, &a, 1);
    ok(fn != NULL && !kgx_flight_looking(fn), "no query: the flight opens without a lookup");
    char *pn = key("{\"prompt\":\"nokeep\"}", &ln);
    ok(kgx_reuse_find(nq, pn, ln) == fn, "no query: a twin still finds the flight");
    free(pn);
    kgx_reuse_land(nq, fn, NULL);
    kgx_reuse_close(nq);
    uv_run(&loop, UV_RUN_DEFAULT);
    kgx_reuse_free(nq);
    uv_loop_close(&loop);

    /* the model identity behind an endpoint, from /props */
    char *m1 = kgx_props_model("{\"default_generation_settings\":{\"n_ctx\":2048},\"total_slots\":4,"
                               "\"model_path\":\"/models/a.gguf\",\"chat_template\":\"{{ x }}\"}");
    char *m2 = kgx_props_model("{\"model_path\":\"/models/a.gguf\",\"chat_template\":\"{{ y }}\"}");
    char *m3 = kgx_props_model("{\"model_path\" : \"/models/b \\\"q\\\".gguf\"}");
    char *m4 = kgx_props_model("{\"total_slots\":4}");
    ok(m1 && !strncmp(m1, "/models/a.gguf template=", 24), "identity: the model path and its template") ;
    ok(m1 && m2 && strcmp(m1, m2), "another chat template, another identity");
    ok(m3 && !strncmp(m3, "/models/b \\\"q\\\".gguf", 18), "escaped quotes in the path are kept");
    ok(m4 == NULL, "no model_path: no identity (the endpoint URL stands in)");
    free(m1);
    free(m2);
    free(m3);
    free(m4);
    return done_testing();
}
