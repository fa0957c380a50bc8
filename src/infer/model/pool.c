/* Thread pool: workers spin briefly on a generation counter (jobs arrive
 * every few microseconds while decoding), then sleep on a condition variable
 * so idle pools cost nothing. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cloister/infer/pool.h"
#include "cloister/log.h"

/* Short busy-wait, then yield (the machine may have fewer free cores than
 * threads, and a spinning thread would hold the core its peer needs). */
#define CL_POOL_SPIN 4000
#define CL_POOL_PAUSE 256

struct cl_pool_worker {
    struct cl_pool *pool;
    unsigned ith;
    pthread_t th;
};

struct cl_pool {
    unsigned n;
    unsigned started;
    struct cl_pool_worker *w;
    pthread_mutex_t mu;      /* guards sleeping on cv_work/cv_done */
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    pthread_mutex_t run_mu;  /* one job at a time */
    atomic_uint gen;
    atomic_uint pending;
    atomic_bool stop;
    cl_pool_fn fn;
    void *ctx;
};

static inline void cl_pool_relax(int i)
{
    if (i >= CL_POOL_PAUSE) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void cl_pool_arrive_wait(atomic_uint *arrived, unsigned nth)
{
    atomic_fetch_add(arrived, 1);
    for (int i = 0; atomic_load(arrived) < nth; i = i < CL_POOL_PAUSE ? i + 1 : i)
        cl_pool_relax(i);
}

static void *cl_pool_main(void *arg)
{
    struct cl_pool_worker *w = arg;
    struct cl_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load(&p->gen);
        for (int i = 0; g == seen && i < CL_POOL_SPIN && !atomic_load(&p->stop); i++) {
            cl_pool_relax(i);
            g = atomic_load(&p->gen);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        p->fn(p->ctx, w->ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

cl_err cl_pool_new(unsigned n_threads, struct cl_pool **out)
{
    cl_err rc = CL_OK;
    struct cl_pool *p = NULL;
    CL_ENSURE_D(n_threads >= 1 && n_threads <= CL_POOL_MAX_THREADS, CL_E_CORE_INVALID_ARG,
                "threads %u not in 1..%u", n_threads, CL_POOL_MAX_THREADS);
    p = calloc(1, sizeof(*p));
    CL_ENSURE(p, CL_E_CORE_NOMEM);
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    p->w = calloc(n_threads, sizeof(*p->w));
    CL_ENSURE(p->w, CL_E_CORE_NOMEM);
    for (unsigned i = 1; i < n_threads; i++) {
        p->w[i].pool = p;
        p->w[i].ith = i;
        CL_ENSURE_D(pthread_create(&p->w[i].th, NULL, cl_pool_main, &p->w[i]) == 0, CL_E_CORE_THREAD,
                    "pool worker %u", i);
        p->started = i;
    }
    *out = p;
    p = NULL;
out:
    cl_pool_free(p);
    return rc;
}

void cl_pool_free(struct cl_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 1; i <= p->started; i++)
        pthread_join(p->w[i].th, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p->w);
    free(p);
}

unsigned cl_pool_threads(const struct cl_pool *p) { return p ? p->n : 1; }

void cl_pool_run(struct cl_pool *p, cl_pool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    for (int i = 0; atomic_load(&p->pending) != 0 && i < CL_POOL_SPIN; i++)
        cl_pool_relax(i);
    if (atomic_load(&p->pending) != 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) != 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->run_mu);
}

void cl_pool_split(size_t n, size_t align, unsigned ith, unsigned nth, size_t *lo, size_t *hi)
{
    if (align == 0)
        align = 1;
    size_t units = (n + align - 1) / align;
    size_t per = units / nth, extra = units % nth;
    size_t a = ith * per + (ith < extra ? ith : extra);
    size_t b = a + per + (ith < extra ? 1 : 0);
    a *= align;
    b *= align;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}
