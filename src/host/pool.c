/* The enclave worker pool: a fixed set of threads that do every blocking
 * exchange with the enclave (connect, send, wait for frames), fed by a
 * bounded queue. libmicrohttpd's threads only suspend the connection and
 * queue the job, so a slow or dead enclave never holds an HTTP thread and
 * /healthz keeps answering; a full queue is a 503 at once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_WORKER_STACK (256u << 10)

static void *cl_host_pool_main(void *arg)
{
    struct cl_host *h = arg;
    struct cl_host_pool *p = &h->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* A reserved slot is a job on its way: stay until it has run. */
        while (!p->head && !(p->stopping && !p->reserved))
            pthread_cond_wait(&p->cv, &p->mu);
        struct cl_host_job *j = p->head;
        if (!j)
            break; /* stopping and drained */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        p->busy++;
        atomic_store(&h->m.queue_depth, p->queued + p->reserved);
        atomic_store(&h->m.workers_busy, p->busy);
        pthread_mutex_unlock(&p->mu);
        j->run(j);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        atomic_store(&h->m.workers_busy, p->busy);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cl_err cl_host_pool_start(struct cl_host *h)
{
    cl_err rc = CL_OK;
    struct cl_host_pool *p = &h->pool;
    pthread_attr_t a;
    int attr = 0;
    CL_ENSURE_D(pthread_mutex_init(&p->mu, NULL) == 0, CL_E_CORE_THREAD, "pool mutex");
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        CL_FAIL(CL_E_CORE_THREAD, "pool condition");
    }
    p->init = 1;
    p->threads = calloc(h->cfg.enclave_workers, sizeof(*p->threads));
    CL_ENSURE(p->threads, CL_E_CORE_NOMEM);
    CL_ENSURE_D(pthread_attr_init(&a) == 0, CL_E_CORE_THREAD, "thread attributes");
    attr = 1;
    pthread_attr_setstacksize(&a, CL_HOST_WORKER_STACK);
    for (unsigned i = 0; i < h->cfg.enclave_workers; i++) {
        int e = pthread_create(&p->threads[i], &a, cl_host_pool_main, h);
        CL_ENSURE_D(e == 0, CL_E_CORE_THREAD, "enclave worker %u of %u: pthread_create %d", i + 1,
                    h->cfg.enclave_workers, e);
        p->nthreads++;
    }
out:
    if (attr)
        pthread_attr_destroy(&a);
    return rc;
}

int cl_host_pool_reserve(struct cl_host *h)
{
    struct cl_host_pool *p = &h->pool;
    int ok = 0;
    pthread_mutex_lock(&p->mu);
    /* Capacity: a job for every idle worker plus the queue proper. */
    if (!p->stopping && p->queued + p->reserved + p->busy < p->nthreads + h->cfg.enclave_queue) {
        p->reserved++;
        ok = 1;
    }
    atomic_store(&h->m.queue_depth, p->queued + p->reserved);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void cl_host_pool_push(struct cl_host *h, struct cl_host_job *j)
{
    struct cl_host_pool *p = &h->pool;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    p->reserved--;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued++;
    atomic_store(&h->m.queue_depth, p->queued + p->reserved);
    if (p->stopping)
        pthread_cond_broadcast(&p->cv);
    else
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void cl_host_pool_stop(struct cl_host *h)
{
    struct cl_host_pool *p = &h->pool;
    if (!p->init)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
    free(p->threads);
    p->threads = NULL;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    p->init = 0;
}
