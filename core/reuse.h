/* reuse — no LLM request for an answer kgx already has (economy, issue 14).
 *
 * A request is known by its key: the identity of the model behind the endpoint (endpoint.c reads it
 * from /props), the path and the body, byte for byte. Two ways an answer is reused:
 *
 *   flights   A request whose key equals one in flight in this process is not sent: it follows that
 *             one (holding no slot) and, when the first is answered whole, parses the same answer.
 *             When the first is not answered whole (a failure of any kind, a cut, a cancel), its
 *             followers are sent on their own — nothing waits on a request that will not answer.
 *             A whole answer stays in the table until its leader's drawer is written (then the
 *             answers table has it): a request identical to it meanwhile takes it at once.
 *   stored    Before a request is sent, its key is looked up in the answers table by its SHA-256
 *             (an index, not a scan; the database computes the hash, so no hash code lives here).
 *             Keys go at once when no lookup is out, else together (≤ 64 a query) when the one out
 *             comes back: one round trip more at most for a key, far fewer queries. A hit is parsed as if the
 *             server had just sent it; a miss (or a lookup that failed: reuse never holds up
 *             extraction) is sent. The hash comes back either way and is stored with the answer.
 *
 * Only whole answers are stored (job.c stores an answer after its parse said whole), so only whole
 * answers are reused. A changed model changes the identity, so nothing stored for the old model is
 * reused; `--fresh-answers` turns both ways off (answers are still stored, with their hashes).
 *
 * Ownership: loop thread only. The table owns the flights; a flight owns its key; the leader and the
 * followers are the caller's opaque pointers (job.c's chunks), never dereferenced here. A flight whose
 * lookup is in the database when it ends is kept until the answer comes back, then freed. */
#ifndef KGX_REUSE_H
#define KGX_REUSE_H

#include <stddef.h>
#include <uv.h>

typedef struct kgx_reuse kgx_reuse_t;
typedef struct kgx_flight kgx_flight_t;

/* A stored (or just received) whole answer. */
typedef struct {
    const char *body;
    size_t len;
    long prompt_tokens, completion_tokens;   /* -1 unknown */
} kgx_reuse_answer_t;

/* The lookup query: keys_json is a JSON array of key strings; the callback gets, per key in order,
 * its SHA-256 in hex and the stored answer or NULL (rows == NULL: the lookup failed, err says why). */
typedef struct {
    const char *hash_hex;
    const kgx_reuse_answer_t *answer;
} kgx_reuse_row_t;
typedef void (*kgx_reuse_rows_cb)(const kgx_reuse_row_t *rows, size_t n, const char *err, void *ud);
typedef int (*kgx_reuse_query_fn)(void *qud, const char *keys_json, kgx_reuse_rows_cb cb, void *ud);

/* What the caller is told:
 *   found(leader, hash_hex, answer)   the lookup of leader's key came back: answer NULL = send it;
 *                                     hash_hex NULL = the lookup failed (send it, store no hash)
 *   landed(follower, hash_hex, answer) the flight it followed ended: answer = parse this one;
 *                                     NULL = the first was not answered whole, send your own. */
typedef struct {
    void (*found)(void *leader, const char *hash_hex, const kgx_reuse_answer_t *answer, void *ud);
    void (*landed)(void *follower, const char *hash_hex, const kgx_reuse_answer_t *answer, void *ud);
    void *ud;
} kgx_reuse_cbs_t;

/* query may be NULL: flights only, nothing looked up. */
kgx_reuse_t *kgx_reuse_new(uv_loop_t *loop, kgx_reuse_query_fn query, void *qud, const kgx_reuse_cbs_t *cbs);
/* Closes the batch timer (run the loop after). Flights still open are freed without callbacks. */
void kgx_reuse_close(kgx_reuse_t *r);
void kgx_reuse_free(kgx_reuse_t *r);   /* after the loop closed the timer */

/* The key of a request: identity '\n' path '\n' body (malloc'd; *len set; the body at *body_off). */
char *kgx_reuse_key(const char *identity, const char *path, const char *body, size_t body_len, size_t *len,
                    size_t *body_off);

/* The flight with this key, or NULL. */
kgx_flight_t *kgx_reuse_find(kgx_reuse_t *r, const char *key, size_t len);
/* A new flight led by `leader`; takes key. With lookup, the key is looked up (found() follows, never
 * inside this call) — unless the reuse has no query (answers not kept), is closing or is out of memory:
 * kgx_flight_looking() says which. Without a lookup the caller sends at once. NULL when out of memory
 * (key freed). */
kgx_flight_t *kgx_reuse_open(kgx_reuse_t *r, char *key, size_t len, void *leader, int lookup);
/* follower waits for f (0, or -1 when out of memory: then send it). */
int kgx_reuse_follow(kgx_flight_t *f, void *follower);
/* follower stops waiting (cancelled). */
void kgx_reuse_unfollow(kgx_flight_t *f, void *follower);
/* The flight ends: answer = the leader's whole answer (followers parse it), NULL = followers send
 * their own. With an answer, the flight stays in the table, holding a copy of it (kgx_flight_answer),
 * until kgx_reuse_retire: an identical request in that window (its drawer's write not committed yet)
 * takes the answer at once; returns 1 then. Without one (or beyond the cap, or out of memory) it
 * returns 0 and f is gone after this — do not touch it again (its lookup, if still in the database, is
 * ignored). */
int kgx_reuse_land(kgx_reuse_t *r, kgx_flight_t *f, const kgx_reuse_answer_t *answer);   /* 1: kept */
/* The leader is done with a landed flight (its drawer written or given up): f is gone after this. */
void kgx_reuse_retire(kgx_reuse_t *r, kgx_flight_t *f);
/* A landed flight's answer, or NULL while it is in flight. */
const kgx_reuse_answer_t *kgx_flight_answer(const kgx_flight_t *f);

const char *kgx_flight_key(const kgx_flight_t *f, size_t *len);
const char *kgx_flight_hash(const kgx_flight_t *f);   /* hex, once the lookup came back; else NULL */
size_t kgx_reuse_open_flights(const kgx_reuse_t *r);
int kgx_flight_looking(const kgx_flight_t *f);        /* 1: its lookup is queued, found() will follow */
size_t kgx_flight_followers(const kgx_flight_t *f);

#endif
