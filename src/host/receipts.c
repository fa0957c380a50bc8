/* The store of interactive receipts (cloister-host --receipts, docs/receipts.md).
 * The enclave sends a RECEIPT frame after each chat answer; the worker that
 * relayed the answer hands it here and returns. One writer thread stores them
 * in the results + receipts schema of the batch worker, in each chain's
 * sequence order: receipts of concurrent requests reach the host in any
 * order, and the audit names a receipt stored out of sequence as reordered.
 * A receipt whose predecessor has not come within CL_HOST_RCPT_WAIT_US is
 * stored anyway (the missing one is a real gap, reported as deleted). The
 * client never waits on the store: a full queue or a failed write is logged
 * and counted. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/batch_store.h"
#include "cloister/log.h"
#include "cloister/wire_job.h"
#include "host_internal.h"

#define CL_HOST_RCPT_QUEUE_MAX 1024u
#define CL_HOST_RCPT_WAIT_US (1000u * 1000u)
#define CL_HOST_RCPT_CHAINS 16u

struct cl_host_rcpt_item {
    struct cl_host_rcpt_item *next;
    char chain[65];
    char id[CL_WIRE_JOB_ID_MAX + 1];
    uint64_t seq;
    uint64_t t_us; /* when it arrived */
    int checked;   /* the store was asked for its predecessor (a batch worker may have written it) */
    size_t rlen, alen;
    uint8_t *receipt; /* rlen bytes, then alen bytes of attestation, one allocation */
};

struct cl_host_rcpt_chain {
    char chain[65];
    uint64_t next; /* the seq expected next */
    uint64_t used_us;
};

struct cl_host_receipts {
    struct cl_host *h;
    cl_bstore_results *store;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cl_host_rcpt_item *in; /* arrived, not yet taken by the writer */
    unsigned queued;              /* in the list and pending in the writer */
    int stop;
    pthread_t thr;
    int started;
    /* writer-thread state */
    struct cl_host_rcpt_item *pending; /* sorted by chain, seq */
    struct cl_host_rcpt_chain chains[CL_HOST_RCPT_CHAINS];
};

static void cl_host_rcpt_free_item(struct cl_host_rcpt_item *it)
{
    if (!it)
        return;
    free(it->receipt);
    free(it);
}

static struct cl_host_rcpt_chain *cl_host_rcpt_chain(struct cl_host_receipts *R, const char *chain)
{
    struct cl_host_rcpt_chain *lru = &R->chains[0];
    for (unsigned i = 0; i < CL_HOST_RCPT_CHAINS; i++) {
        struct cl_host_rcpt_chain *c = &R->chains[i];
        if (c->chain[0] && !strcmp(c->chain, chain)) {
            c->used_us = cl_now_us();
            return c;
        }
        if (!c->chain[0] || c->used_us < lru->used_us)
            lru = c;
        if (!c->chain[0])
            break;
    }
    /* A chain seen first (or again after eviction): continue after what the store has. */
    uint64_t max = 0;
    if (cl_bstore_results_chain_max(R->store, chain, &max) != CL_OK)
        max = 0;
    memcpy(lru->chain, chain, sizeof(lru->chain));
    lru->next = max + 1;
    lru->used_us = cl_now_us();
    return lru;
}

static void cl_host_rcpt_write(struct cl_host_receipts *R, struct cl_host_rcpt_item *it)
{
    cl_err rc = cl_bstore_results_put_receipt(R->store, it->chain, it->seq, it->id, it->receipt, it->rlen,
                                              it->receipt + it->rlen, it->alen);
    if (rc == CL_OK) {
        atomic_fetch_add(&R->h->m.receipts_stored, 1);
        CL_LOG(CL_LOG_DEBUG, "receipt_stored", CL_LOG_COUNT("seq", it->seq), CL_LOG_SIZE("receipt_bytes", it->rlen));
    } else {
        atomic_fetch_add(&R->h->m.receipts_failed, 1);
        CL_LOG(CL_LOG_ERROR, "receipt_store_failed", CL_LOG_COUNT("seq", it->seq), CL_LOG_ERR(rc));
    }
}

/* Inserts into the sorted pending list. */
static void cl_host_rcpt_pend(struct cl_host_receipts *R, struct cl_host_rcpt_item *it)
{
    struct cl_host_rcpt_item **pp = &R->pending;
    while (*pp) {
        int c = strcmp((*pp)->chain, it->chain);
        if (c > 0 || (c == 0 && (*pp)->seq > it->seq))
            break;
        pp = &(*pp)->next;
    }
    it->next = *pp;
    *pp = it;
}

/* Writes every pending receipt that is next in its chain, has waited long
 * enough for its predecessor, or (flush) all of them. */
static unsigned cl_host_rcpt_drain(struct cl_host_receipts *R, int flush)
{
    unsigned done = 0;
    uint64_t now = cl_now_us();
    struct cl_host_rcpt_item **pp = &R->pending;
    while (*pp) {
        struct cl_host_rcpt_item *it = *pp;
        struct cl_host_rcpt_chain *c = cl_host_rcpt_chain(R, it->chain);
        uint64_t max = 0;
        if (it->seq > c->next && !it->checked) {
            /* the chain is shared with batch jobs, whose receipts the worker stores */
            it->checked = 1;
            if (cl_bstore_results_chain_max(R->store, it->chain, &max) == CL_OK && max + 1 > c->next)
                c->next = max + 1;
        }
        if (it->seq <= c->next || flush || now - it->t_us >= CL_HOST_RCPT_WAIT_US) {
            *pp = it->next;
            if (it->seq > c->next)
                CL_LOG(CL_LOG_WARN, "receipt_gap", CL_LOG_COUNT("expected_seq", c->next), CL_LOG_COUNT("seq", it->seq));
            if (it->seq >= c->next)
                c->next = it->seq + 1;
            cl_host_rcpt_write(R, it);
            cl_host_rcpt_free_item(it);
            done++;
            pp = &R->pending; /* a write may release the next of the chain */
            continue;
        }
        pp = &it->next;
    }
    return done;
}

static void *cl_host_rcpt_main(void *arg)
{
    struct cl_host_receipts *R = arg;
    pthread_mutex_lock(&R->mu);
    for (;;) {
        struct cl_host_rcpt_item *in = R->in;
        R->in = NULL;
        int stop = R->stop;
        if (!in && !stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (R->pending)
                pthread_cond_timedwait(&R->cv, &R->mu, &ts);
            else
                pthread_cond_wait(&R->cv, &R->mu);
            in = R->in;
            R->in = NULL;
            stop = R->stop;
        }
        pthread_mutex_unlock(&R->mu);
        while (in) {
            struct cl_host_rcpt_item *n = in->next;
            cl_host_rcpt_pend(R, in);
            in = n;
        }
        unsigned done = cl_host_rcpt_drain(R, stop);
        pthread_mutex_lock(&R->mu);
        R->queued -= done;
        if (stop && !R->in && !R->pending)
            break;
    }
    pthread_mutex_unlock(&R->mu);
    return NULL;
}

cl_err cl_host_receipts_start(struct cl_host *h, const char *url, struct cl_host_receipts **out)
{
    cl_err rc = CL_OK;
    struct cl_host_receipts *R = calloc(1, sizeof(*R));
    CL_ENSURE(R, CL_E_CORE_NOMEM);
    R->h = h;
    pthread_mutex_init(&R->mu, NULL);
    pthread_cond_init(&R->cv, NULL);
    CL_GUARD(cl_bstore_results_open(url, &R->store));
    CL_ENSURE_D(pthread_create(&R->thr, NULL, cl_host_rcpt_main, R) == 0, CL_E_CORE_THREAD, "receipt writer thread");
    R->started = 1;
    *out = R;
    R = NULL;
out:
    cl_host_receipts_stop(R);
    return rc;
}

void cl_host_receipts_stop(struct cl_host_receipts *R)
{
    if (!R)
        return;
    if (R->started) {
        pthread_mutex_lock(&R->mu);
        R->stop = 1;
        pthread_cond_signal(&R->cv);
        pthread_mutex_unlock(&R->mu);
        pthread_join(R->thr, NULL);
    }
    while (R->in) {
        struct cl_host_rcpt_item *n = R->in->next;
        cl_host_rcpt_free_item(R->in);
        R->in = n;
    }
    cl_bstore_results_close(R->store);
    pthread_cond_destroy(&R->cv);
    pthread_mutex_destroy(&R->mu);
    free(R);
}

void cl_host_receipts_take(struct cl_host *h, const struct cl_buf *frame)
{
    struct cl_host_receipts *R = h->receipts;
    struct cl_wire_receipt wr;
    struct cl_host_rcpt_item *it = NULL;
    if (!R)
        return;
    cl_err rc = cl_wire_receipt_parse(frame->data, frame->len, &wr);
    if (rc != CL_OK) {
        atomic_fetch_add(&h->m.receipts_failed, 1);
        CL_LOG(CL_LOG_WARN, "receipt_malformed", CL_LOG_SIZE("frame_bytes", frame->len), CL_LOG_ERR(rc));
        return;
    }
    it = calloc(1, sizeof(*it));
    if (it)
        it->receipt = malloc(wr.receipt_len + wr.attestation_len);
    if (!it || !it->receipt) {
        cl_host_rcpt_free_item(it);
        atomic_fetch_add(&h->m.receipts_dropped, 1);
        CL_LOG(CL_LOG_ERROR, "receipt_dropped", CL_LOG_COUNT("seq", wr.seq));
        return;
    }
    memcpy(it->chain, wr.chain, sizeof(it->chain));
    memcpy(it->id, wr.request_id, sizeof(it->id));
    it->seq = wr.seq;
    it->t_us = cl_now_us();
    it->rlen = wr.receipt_len;
    it->alen = wr.attestation_len;
    memcpy(it->receipt, wr.receipt, wr.receipt_len);
    memcpy(it->receipt + wr.receipt_len, wr.attestation, wr.attestation_len);
    pthread_mutex_lock(&R->mu);
    int full = R->queued >= CL_HOST_RCPT_QUEUE_MAX || R->stop;
    if (!full) {
        it->next = R->in;
        R->in = it;
        R->queued++;
        pthread_cond_signal(&R->cv);
    }
    pthread_mutex_unlock(&R->mu);
    if (full) {
        cl_host_rcpt_free_item(it);
        atomic_fetch_add(&h->m.receipts_dropped, 1);
        CL_LOG(CL_LOG_ERROR, "receipt_dropped", CL_LOG_COUNT("seq", wr.seq), CL_LOG_COUNT("queued", CL_HOST_RCPT_QUEUE_MAX));
    }
}
