/* cloister-host --worker: the untrusted batch worker (docs/batch.md). It
 * moves ciphertext between the queue, the object store, the enclave and the
 * result store; it never holds a key, a prompt or an answer. */
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cloister/batch_store.h"
#include "cloister/host.h"
#include "cloister/log.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"
#include "cloister/wire_job.h"

static void cl_worker_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One exchange with the enclave: JOB_REQ out, JOB_RES (or ERROR) back. A
 * transport failure is CL_E_NET_*, an enclave refusal its own code. */
static cl_err cl_worker_exchange(const struct cl_host_worker_config *c, const struct cl_buf *job, struct cl_buf *res)
{
    cl_err rc = CL_OK;
    int fd = -1;
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned fl = 0;
    if (cl_vsock_connect(c->enclave_cid, CL_WIRE_PORT_SERVICE, &fd) != CL_OK)
        CL_FAIL(CL_E_NET_HOST_ENCLAVE_CONNECT, "enclave CID %u port %u", c->enclave_cid, CL_WIRE_PORT_SERVICE);
    struct timeval tv = {(time_t)(c->timeout_ms / 1000), (suseconds_t)(c->timeout_ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    /* A refusal (an oversized job, say) may come while the job is still
     * being sent: read the answer even when the send failed. */
    bool sent = cl_wire_send(fd, CL_WIRE_JOB_REQ, 0, job->data, job->len) == CL_OK;
    if (cl_wire_recv(fd, res->max, &t, &fl, res) != CL_OK)
        CL_FAIL(CL_E_NET_HOST_ENCLAVE_CLOSED, sent ? "the enclave closed or timed out mid-job" : "sending the job");
    if (t == CL_WIRE_ERROR) {
        unsigned status = 0;
        cl_err code = CL_OK;
        CL_GUARD(cl_wire_parse_error(res, &status, &code));
        rc = code != CL_OK ? code : CL_E_PROTO_REQUEST_INVALID;
        goto out;
    }
    CL_ENSURE_D(t == CL_WIRE_JOB_RES, CL_E_PROTO_REQUEST_INVALID, "expected job_res, got %s", cl_wire_type_name(t));
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Transient: the enclave or the key service unreachable. Such failures do
 * not bring a job closer to the dead-letter queue. */
static bool cl_worker_transient(cl_err rc)
{
    /* A key service that answered (HTTP status, malformed answer, signature)
     * refused: that counts. One that could not be reached does not. */
    bool net_refusal = rc == CL_E_NET_HTTP_STATUS || rc == CL_E_NET_RESPONSE || rc == CL_E_NET_CREDENTIALS ||
                       rc == CL_E_NET_URL || (rc >= CL_E_NET_SIGV4_MALFORMED && rc <= CL_E_NET_SIGV4_LIMIT);
    return (cl_err_category(rc) == CL_ERRCAT_NET && !net_refusal) || rc == CL_E_PROTO_BUSY ||
           cl_bstore_err_transient(rc);
}

static cl_err cl_worker_one(const struct cl_host_worker_config *c, cl_bstore_queue *q, cl_bstore_objects *o,
                            cl_bstore_results *r, const struct cl_bstore_msg *m, struct cl_buf *job,
                            struct cl_buf *res, uint64_t receive_us)
{
    cl_err rc = CL_OK;
    struct cl_wire_job_res wr;
    bool stored = false;
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_bstore_objects_get(o, m->object, CL_WIRE_MAX_FRAME - 1024, job));
    uint64_t t1 = cl_now_us();
    CL_GUARD(cl_worker_exchange(c, job, res));
    uint64_t t2 = cl_now_us();
    CL_GUARD(cl_wire_job_res_parse(res->data, res->len, &wr));
    struct cl_bstore_put p = {wr.job_id, wr.ok, wr.result, wr.result_len, wr.receipt, wr.receipt_len,
                              wr.attestation, wr.attestation_len, wr.chain, wr.seq};
    CL_GUARD(cl_bstore_results_put(r, &p, &stored));
    uint64_t t3 = cl_now_us();
    CL_GUARD(cl_bstore_queue_delete(q, m));
    CL_LOG(CL_LOG_INFO, "job_stored", CL_LOG_COUNT("message", m->id), CL_LOG_COUNT("first_result", stored),
           CL_LOG_COUNT("receives", m->receives), CL_LOG_COUNT("seq", wr.seq), CL_LOG_SIZE("job_bytes", job->len),
           CL_LOG_SIZE("result_bytes", wr.result_len), CL_LOG_US("fetch_us", t1 - t0),
           CL_LOG_US("enclave_us", t2 - t1), CL_LOG_US("store_us", t3 - t2),
           CL_LOG_US("queue_us", receive_us + (cl_now_us() - t3)));
out:
    return rc;
}

cl_err cl_host_worker_run(const struct cl_host_worker_config *c, const volatile sig_atomic_t *stop)
{
    cl_err rc = CL_OK;
    cl_bstore_queue *q = NULL;
    cl_bstore_objects *o = NULL;
    cl_bstore_results *r = NULL;
    struct cl_buf job, res;
    cl_buf_init(&job, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    cl_buf_init(&res, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    CL_GUARD(cl_bstore_queue_open(c->queue_url, &q));
    CL_GUARD(cl_bstore_objects_open(c->objects_url, &o));
    CL_GUARD(cl_bstore_results_open(c->results_url, &r));
    CL_LOG(CL_LOG_INFO, "worker_started", CL_LOG_COUNT("enclave_cid", c->enclave_cid));
    while (!*stop) {
        struct cl_bstore_msg m;
        bool got = false;
        uint64_t tr = cl_now_us();
        cl_err e = cl_bstore_queue_receive(q, c->visibility_ms, &m, &got);
        uint64_t receive_us = cl_now_us() - tr;
        if (e != CL_OK) {
            CL_LOG(CL_LOG_WARN, "queue_receive_failed", CL_LOG_ERR(e));
            cl_worker_sleep_ms(c->poll_ms);
            continue;
        }
        if (!got) {
            cl_worker_sleep_ms(c->poll_ms);
            continue;
        }
        e = cl_worker_one(c, q, o, r, &m, &job, &res, receive_us);
        if (e == CL_OK)
            continue;
        bool transient = cl_worker_transient(e);
        if (!transient && m.receives >= c->max_receives) {
            cl_err d = cl_bstore_queue_dead_letter(q, &m, cl_err_name(e) ? cl_err_name(e) : "UNKNOWN");
            CL_LOG(CL_LOG_WARN, "job_dead_letter", CL_LOG_COUNT("message", m.id), CL_LOG_COUNT("receives", m.receives),
                   CL_LOG_ERR(e));
            if (d != CL_OK)
                CL_LOG(CL_LOG_ERROR, "dead_letter_failed", CL_LOG_ERR(d));
        } else {
            unsigned delay = c->retry_ms * (m.receives < 10 ? m.receives : 10);
            cl_err d = cl_bstore_queue_release(q, &m, delay);
            CL_LOG(CL_LOG_WARN, "job_retry", CL_LOG_COUNT("message", m.id), CL_LOG_COUNT("receives", m.receives),
                   CL_LOG_COUNT("transient", transient), CL_LOG_ERR(e));
            if (d != CL_OK)
                CL_LOG(CL_LOG_ERROR, "release_failed", CL_LOG_ERR(d));
            if (transient)
                cl_worker_sleep_ms(c->poll_ms);
        }
    }
    CL_LOG(CL_LOG_INFO, "worker_stopped");
out:
    cl_bstore_queue_close(q);
    cl_bstore_objects_close(o);
    cl_bstore_results_close(r);
    cl_buf_free(&job);
    cl_buf_free(&res);
    return rc;
}
