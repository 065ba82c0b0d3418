/* budget — the byte budget for what kgx holds in memory on account of drawers (--memory-budget).
 *
 * Every claimed drawer is charged, while it is worked on, an estimate of what it makes kgx hold:
 * its text in C, the copy in the policy's Lua state, the chunks split from it, the request bodies
 * built from them, and the answers and triples that come back — KGX_BUDGET_COPIES times its size,
 * plus KGX_BUDGET_PER_DRAWER for the tables, answers and results of a small drawer. KGX_BUDGET_BASE
 * is set aside for the process itself (code, LuaJIT, libpq, libcurl, the status server), so the
 * budget bounds the resident size, not only the drawers' share of it.
 *
 * A claim brings the texts of small drawers (up to 16 KiB each, 256 KiB in all, in claim order) while they fit the
 * room the claim holds for them (kgx_budget_claim_hold: taken before the claim is sent, given back
 * when it returns, each drawer that came with its text then charged as usual); for the others it
 * returns ids and sizes only (queue.c), and a drawer's text is read — in pieces — once it is
 * admitted: in claim order, while the charges fit the budget. A drawer alone is always admitted,
 * so one larger than the whole budget is processed alone. Nothing new is claimed while a claimed
 * drawer waits for room. The charge is given back when the job ends (job_free).
 *
 * text_pending in the claimed row: 0 text in memory (or none), 1 waiting for room, 2 being read,
 * 3 released after the split (the Lua state has it; read again only if the drawer is split again). */
#ifndef KGX_BUDGET_H
#define KGX_BUDGET_H

#include "queue.h"

#include <stddef.h>

#define KGX_BUDGET_COPIES      4u
#define KGX_BUDGET_PER_DRAWER  ((size_t)64 << 10)
#define KGX_BUDGET_BASE        ((size_t)20 << 20)
/* texts that may come with their claim: each at most KGX_CLAIM_TEXT_MAX bytes, all of one claim at
 * most KGX_CLAIM_TEXT_TOTAL (a claim is one statement: its rows arrive together) */
#define KGX_CLAIM_TEXT_MAX     16384
#define KGX_CLAIM_TEXT_TOTAL   ((size_t)256 << 10)

struct budget_read;

typedef struct {
    size_t limit;              /* --memory-budget, bytes */
    size_t avail;              /* limit - KGX_BUDGET_BASE: what drawers may be charged together */
    size_t used, peak;         /* charged now / at most, bytes */
    int holders;               /* drawers charged now */
    int reading;               /* text reads in flight */
    unsigned long long alone;  /* drawers admitted alone because they did not fit beside others */
    struct budget_read *reads; /* text reads in flight (their job may be gone) */
    int look;                  /* a job may wait for its text: kgx_budget_admit scans the jobs (else it
                                * returns at once: it runs on every pump) */
} kgx_budget_t;

/* Pure accounting (unit-tested). */
void kgx_budget_init(kgx_budget_t *b, size_t limit);
size_t kgx_budget_cost(size_t text_len);                /* the charge of one drawer of text_len bytes */
int kgx_budget_fits(const kgx_budget_t *b, size_t cost); /* 1: may be charged now (always when empty) */
void kgx_budget_take(kgx_budget_t *b, size_t cost);
void kgx_budget_give(kgx_budget_t *b, size_t cost);
/* Room for the texts of a claim of `want` drawers: returns how many bytes of text may come with it
 * (0: none) and holds, in *held, what those drawers could be charged — give it back when the claim
 * returns (then charge the drawers that came with their text). */
size_t kgx_budget_claim_hold(kgx_budget_t *b, int want, size_t *held);
void kgx_budget_claim_release(kgx_budget_t *b, size_t *held);      /* gives *held back, sets it 0 */

/* The engine's side (budget.c includes engine_int.h). */
typedef struct kgx_engine kgx_engine_t;
typedef struct job job_t;
/* A claimed drawer about to become a job: charged now when its text came with the claim. */
void kgx_budget_claimed(kgx_engine_t *e, kgx_claim_row_t *r);
/* Starts the text reads of waiting drawers, in claim order, while they fit. From the pump. */
void kgx_budget_admit(kgx_engine_t *e);
/* 1 while a claimed drawer waits for room or for its text: the engine claims no more then. */
int kgx_budget_waiting(kgx_engine_t *e);
/* From job_split, first: 1 when the job's text is not in memory (yet, or again), so it cannot split
 * now; the pump splits it once the text is read. */
int kgx_budget_need_text(kgx_engine_t *e, job_t *j);
/* From job_split, after a successful split: the policy's Lua state holds the text now (the drawer
 * table its hooks see), so the C copy is freed; a later split (a retry) reads it again within the
 * drawer's charge. One copy of a large drawer in C and one in Lua, never more. */
void kgx_budget_split_done(kgx_engine_t *e, job_t *j);
/* From job_free: gives the job's charge back; a read in flight for it is left to finish and freed. */
void kgx_budget_release(kgx_engine_t *e, job_t *j);
/* After kgx_db_free (pending callbacks dropped): frees the reads that will never complete. */
void kgx_budget_abandon(kgx_engine_t *e);

#endif
