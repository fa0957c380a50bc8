/* A small fixed-size thread pool for the inference engine. One job at a time:
 * cl_pool_run() calls fn on every thread (the caller is thread 0) and returns
 * when all are done. Concurrent callers (several sequences served by one model)
 * are serialized, so a pool may be shared. */
#ifndef CLOISTER_INFER_POOL_H
#define CLOISTER_INFER_POOL_H

#include <stdatomic.h>

#include "cloister/err.h"

#define CL_POOL_MAX_THREADS 64u

struct cl_pool;

/* fn runs once per thread with ith in [0, nth). */
typedef void (*cl_pool_fn)(void *ctx, unsigned ith, unsigned nth);

/* n_threads counts the calling thread; 1 means no worker threads. */
CL_MUST_CHECK cl_err cl_pool_new(unsigned n_threads, struct cl_pool **out);
void cl_pool_free(struct cl_pool *p);
unsigned cl_pool_threads(const struct cl_pool *p);
void cl_pool_run(struct cl_pool *p, cl_pool_fn fn, void *ctx);

/* Inside a job: returns once all nth threads of the job have called it with
 * the same counter (zeroed before the job; one use per counter). */
void cl_pool_arrive_wait(atomic_uint *arrived, unsigned nth);
/* Splits [0, n) into nth near-equal parts rounded to multiples of align;
 * part ith is [*lo, *hi). */
void cl_pool_split(size_t n, size_t align, unsigned ith, unsigned nth, size_t *lo, size_t *hi);

#endif
