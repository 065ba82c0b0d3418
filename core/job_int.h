/* job_int — what job.c (the drawer's way), job_chunk.c (one chunk's way: request, reuse, HTTP, parse)
 * and job_rechunk.c (dense halves, pieces of a cut answer) share. Not an API: only those three include
 * it. Loop thread only. */
#ifndef KGX_JOB_INT_H
#define KGX_JOB_INT_H

#include "engine_int.h"
#include "log.h"

#define job_log(j, lvl, fmt, ...) \
    kgx_log(lvl, "drawer=%s attempt=%d " fmt, (j)->row.drawer_id, (j)->attempts + 1, __VA_ARGS__)

/* job.c */
const char *job_context(const job_t *j, char *buf, size_t len);   /* "drawer=… attempt=…" for hook logs */
kgx_drawer_t job_drawer(const job_t *j);
void job_reset_chunks(job_t *j);           /* cancels and frees every chunk: the drawer is split again */

/* job_chunk.c */
void chunk_release(job_t *j, chunk_t *c);  /* gives back the slot the chunk holds */
void chunk_to(chunk_t *c, int st);         /* the one place a chunk changes state (flights end here) */
void add_answer(job_t *j, const chunk_t *c, const char *body, size_t len);   /* the stored answer */
void job_resplit(job_t *j, int learned);   /* context exceeded: the whole drawer, smaller */

/* job_rechunk.c */
void add_result(job_t *j, chunk_t *c, const kgx_result_t *r);   /* an answer's facts join the job's */
int dense_split(job_t *j, chunk_t *c, const kgx_result_t *r);   /* 1: its halves were queued */
void job_split_cut(job_t *j, chunk_t *c);  /* cut at n_predict: that chunk, smaller */

#endif
