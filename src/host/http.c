/* The host's HTTP API: libmicrohttpd with a small pool of epoll threads that
 * never block; every wait on the enclave runs on the worker pool (pool.c)
 * while the connection is suspended. Relays attestation and OHTTP to the
 * enclave, one fresh enclave connection per request, and exports health and
 * Prometheus metrics. Request and response bodies are opaque here and never
 * logged. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cloister/listen.h"
#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_ATTEST_DOC_MAX (1u << 20)
#define CL_HOST_STATUS_MAX (64u << 10)
#define CL_HOST_RECEIPT_FRAME_MAX (1u << 20)

static const char *const cl_host_route_names[CL_HOST_ROUTE_COUNT] = {
    [CL_HOST_ROUTE_NONE] = "none",       [CL_HOST_ROUTE_ATTESTATION] = "attestation", [CL_HOST_ROUTE_OHTTP] = "ohttp",
    [CL_HOST_ROUTE_HEALTHZ] = "healthz", [CL_HOST_ROUTE_READYZ] = "readyz",           [CL_HOST_ROUTE_METRICS] = "metrics",
    [CL_HOST_ROUTE_OTHER] = "other",
};

static const unsigned cl_host_status_codes[CL_HOST_STATUS_SLOTS] = {200, 400, 401, 403, 404, 405, 408,
                                                                    413, 429, 500, 501, 502, 503, 504};

/* Upper bounds in microseconds (Prometheus `le` in seconds). */
static const uint64_t cl_host_lat_us[CL_HOST_LAT_BUCKETS] = {1000,   5000,   10000,   25000,   50000,   100000,
                                                            250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const cl_host_lat_le[CL_HOST_LAT_BUCKETS] = {"0.001", "0.005", "0.01", "0.025", "0.05", "0.1",
                                                                "0.25",  "0.5",   "1",    "2.5",   "5",    "10"};

static const char *const cl_host_state_names[CL_HOST_ENCLAVE_STATE_COUNT] = {
    [CL_HOST_ENCLAVE_UNKNOWN] = "unknown", [CL_HOST_ENCLAVE_UNREACHABLE] = "unreachable",
    [CL_HOST_ENCLAVE_NOT_READY] = "not_ready", [CL_HOST_ENCLAVE_READY] = "ready"};

static const char *const cl_host_svc_names[CL_HOST_SVC_COUNT] = {
    [CL_HOST_SVC_NONE] = "none", [CL_HOST_SVC_MODEL] = "model", [CL_HOST_SVC_BOOT] = "boot",
    [CL_HOST_SVC_KMS_PROXY] = "kms_proxy", [CL_HOST_SVC_MMPROJ] = "mmproj"};

enum cl_host_job_kind { CL_HOST_JOB_NONE = 0, CL_HOST_JOB_ATTEST, CL_HOST_JOB_OHTTP, CL_HOST_JOB_STATUS, CL_HOST_JOB_COUNT };

/* One HTTP request. Enclave exchanges run on the worker pool while the
 * connection is suspended: mu orders the worker's results and resumes
 * against the HTTP thread's suspends (a connection is resumed only when it
 * is suspended, and suspended only while a worker is bound to resume it). */
struct cl_host_req {
    struct cl_host *h;
    atomic_int refs; /* the connection, a queued or running job, a streaming response */
    struct cl_reqid id;
    uint64_t t0;
    enum cl_host_route route;
    unsigned status;
    uint64_t bytes_in;
    atomic_uint_fast64_t bytes_out;
    struct cl_buf body;
    int too_large;
    int too_busy;
    uint64_t held; /* bytes of body counted in h->body_inflight */
    int started;
    cl_err enclave_err;
    struct cl_host_conn *hc;
    /* the enclave job */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct MHD_Connection *conn;
    int suspended;
    struct cl_host_job job;
    enum cl_host_job_kind kind;
    int job_queued;
    int job_done;
    int chunked;
    struct cl_buf nonce;
    cl_err job_rc;
    enum cl_wire_type job_t;
    enum cl_host_enclave_state job_state;
    struct cl_buf frame; /* the first answer frame */
    /* streaming: frames the worker read, not yet taken by the HTTP thread */
    int streaming;
    struct cl_buf pending;
    size_t pending_off;
    int stream_done;
    atomic_int aborted;    /* the stream failed (read by the completion callback without mu) */
    atomic_int stream_err; /* why */
    atomic_int gone; /* the HTTP side finished with this request */
};

#define CL_HOST_STREAM_HIGH (256u << 10) /* the worker stops reading the enclave above this */

static void cl_host_req_drop_body(struct cl_host_req *r)
{
    atomic_fetch_sub(&r->h->body_inflight, r->held);
    r->held = 0;
    cl_buf_free(&r->body);
}

static void cl_host_req_unref(struct cl_host_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    cl_host_req_drop_body(r);
    cl_buf_free(&r->frame);
    cl_buf_free(&r->pending);
    cl_buf_free(&r->nonce);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Under r->mu. */
static void cl_host_req_suspend(struct cl_host_req *r)
{
    if (r->suspended)
        return;
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
}

/* Under r->mu. */
static void cl_host_req_resume(struct cl_host_req *r)
{
    if (!r->suspended)
        return;
    r->suspended = 0;
    MHD_resume_connection(r->conn);
}

static enum MHD_Result cl_host_respond(struct MHD_Connection *conn, struct cl_host_req *r, unsigned status,
                                       const char *ctype, const void *data, size_t n)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, (void *)(n ? data : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route == CL_HOST_ROUTE_OHTTP ? "POST" : "GET");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    atomic_fetch_add(&r->bytes_out, n);
    return ret;
}

/* Host errors carry a fixed text only. */
static enum MHD_Result cl_host_error(struct MHD_Connection *conn, struct cl_host_req *r, unsigned status,
                                     const char *text)
{
    char b[160];
    int n = snprintf(b, sizeof(b), "{\"error\":\"%s\"}", text);
    return cl_host_respond(conn, r, status, "application/json", b, (size_t)n);
}

/* Maps a failed enclave exchange to the protocol's status codes. */
static enum MHD_Result cl_host_enclave_failure(struct MHD_Connection *conn, struct cl_host_req *r, cl_err rc)
{
    r->enclave_err = rc;
    if (rc == CL_E_NET_HOST_ENCLAVE_CONNECT)
        return cl_host_error(conn, r, MHD_HTTP_BAD_GATEWAY, "enclave unavailable");
    if (rc == CL_E_NET_HOST_ENCLAVE_TIMEOUT)
        return cl_host_error(conn, r, MHD_HTTP_GATEWAY_TIMEOUT, "enclave timeout");
    if (rc == CL_E_NET_HOST_QUEUE_FULL)
        return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "host stopping");
    return cl_host_error(conn, r, MHD_HTTP_BAD_GATEWAY, "enclave connection failed");
}

/* An ERROR frame from the enclave: its status (when sane) and its code name. */
static enum MHD_Result cl_host_enclave_error_frame(struct MHD_Connection *conn, struct cl_host_req *r,
                                                   const struct cl_buf *payload)
{
    unsigned status = 0;
    cl_err code = CL_OK;
    char b[200];
    if (cl_wire_parse_error(payload, &status, &code) != CL_OK || status < 400 || status > 599)
        return cl_host_error(conn, r, MHD_HTTP_BAD_GATEWAY, "malformed error from enclave");
    const char *name = cl_err_name(code);
    int n = snprintf(b, sizeof(b), "{\"error\":\"enclave error\",\"code\":\"%s\"}", name ? name : "UNKNOWN");
    r->enclave_err = code;
    return cl_host_respond(conn, r, status, "application/json", b, (size_t)n);
}

/* Sends one frame on a fresh connection and reads the first answer frame.
 * On success *fd stays open (the caller closes it or keeps streaming).
 * Runs on an enclave worker, never on an HTTP thread. */
static cl_err cl_host_enclave_call(struct cl_host *h, enum cl_wire_type t, unsigned flags, const void *p, size_t n,
                                   size_t max, enum cl_wire_type *rt, struct cl_buf *resp, int *fd)
{
    cl_err rc = CL_OK;
    unsigned rflags = 0;
    int efd = -1;
    if (atomic_load(&h->stopping))
        CL_FAIL(CL_E_NET_HOST_QUEUE_FULL, "host is stopping");
    CL_GUARD(cl_host_enclave_connect(h, &efd));
    if (cl_wire_send(efd, t, flags, p, n) != CL_OK)
        CL_FAIL(CL_E_NET_HOST_ENCLAVE_CLOSED, "sending %s", cl_wire_type_name(t));
    CL_GUARD(cl_host_enclave_recv(h, efd, max, rt, &rflags, resp));
    *fd = efd;
    efd = -1;
out:
    if (efd >= 0)
        close(efd);
    return rc;
}

/* Worker side of a chunked answer: reads frames until END, an error, the
 * client going away or the host stopping, handing each to the HTTP thread.
 * Holds at most CL_HOST_STREAM_HIGH bytes (plus one frame) per request. */
static void cl_host_stream_pump(struct cl_host_req *r, int efd)
{
    struct cl_host *h = r->h;
    struct cl_buf f;
    cl_buf_init(&f, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    for (;;) {
        enum cl_wire_type t = CL_WIRE_NONE;
        unsigned flags = 0;
        cl_err rc = CL_OK;
        uint64_t stall0 = cl_now_us();
        pthread_mutex_lock(&r->mu);
        while (r->pending.len - r->pending_off >= CL_HOST_STREAM_HIGH && !atomic_load(&r->gone) &&
               !atomic_load(&h->stopping) && cl_now_us() - stall0 < (uint64_t)h->cfg.idle_timeout_s * 1000000u) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        int stop = atomic_load(&r->gone) || atomic_load(&h->stopping) ||
                   r->pending.len - r->pending_off >= CL_HOST_STREAM_HIGH;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            rc = cl_err_fail(CL_E_NET_HOST_ENCLAVE_CLOSED, "client gone, stalled or host stopping");
        else
            rc = cl_host_enclave_recv(h, efd, CL_WIRE_MAX_FRAME, &t, &flags, &f);
        pthread_mutex_lock(&r->mu);
        if (rc == CL_OK && t == CL_WIRE_OHTTP_CHUNK) {
            if (r->pending_off) {
                memmove(r->pending.data, r->pending.data + r->pending_off, r->pending.len - r->pending_off);
                r->pending.len -= r->pending_off;
                r->pending_off = 0;
            }
            if (cl_buf_append(&r->pending, f.data, f.len) != CL_OK)
                rc = cl_err_fail(CL_E_NET_HOST_ENCLAVE_PROTOCOL, "answer chunk over the stream buffer");
        } else if (rc == CL_OK && t == CL_WIRE_END) {
            r->stream_done = 1;
        } else if (rc == CL_OK) {
            rc = cl_err_fail(CL_E_NET_HOST_ENCLAVE_PROTOCOL, "unexpected %s in a stream", cl_wire_type_name(t));
        }
        if (rc != CL_OK) {
            /* Ending with an error makes MHD drop the connection without the
             * final zero-length chunk: the client sees a truncated body. */
            atomic_store(&r->stream_err, (int)rc);
            r->aborted = 1;
        }
        int done = r->stream_done || r->aborted;
        cl_host_req_resume(r);
        pthread_mutex_unlock(&r->mu);
        f.len = 0;
        if (done)
            break;
    }
    cl_buf_free(&f);
}

/* The frame after an answer: the enclave's receipt for a chat completion,
 * else the end of the connection. Without --receipts it is not read. */
static void cl_host_receipt_read(struct cl_host *h, int fd)
{
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned fl = 0;
    struct cl_buf f;
    if (!h->receipts) {
        atomic_fetch_add(&h->m.receipts_discarded, 1);
        return;
    }
    cl_buf_init(&f, CL_HOST_RECEIPT_FRAME_MAX, CL_BUF_NONE);
    cl_err rc = cl_host_enclave_recv(h, fd, f.max, &t, &fl, &f);
    if (rc == CL_OK && t == CL_WIRE_RECEIPT) {
        cl_host_receipts_take(h, &f);
    } else if (rc != CL_E_NET_HOST_ENCLAVE_CLOSED || t != CL_WIRE_NONE) {
        /* closed without a frame: not a chat completion (or an enclave without receipts) */
        atomic_fetch_add(&h->m.receipts_missing, 1);
        CL_LOG(CL_LOG_WARN, "receipt_missing", CL_LOG_COUNT("frame_type", t), CL_LOG_ERR(rc));
    }
    cl_buf_free(&f);
}

static void cl_host_job_run(struct cl_host_job *j)
{
    struct cl_host_req *r = (struct cl_host_req *)((char *)j - offsetof(struct cl_host_req, job));
    struct cl_host *h = r->h;
    enum cl_wire_type t = CL_WIRE_NONE;
    enum cl_host_enclave_state es = CL_HOST_ENCLAVE_UNKNOWN;
    struct cl_buf resp;
    int fd = -1, stream = 0;
    cl_err rc;
    cl_buf_init(&resp, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    switch (r->kind) {
    case CL_HOST_JOB_ATTEST:
        rc = cl_host_enclave_call(h, CL_WIRE_ATTEST_REQ, 0, r->nonce.data, r->nonce.len, CL_HOST_ATTEST_DOC_MAX, &t,
                                  &resp, &fd);
        break;
    case CL_HOST_JOB_OHTTP:
        rc = cl_host_enclave_call(h, CL_WIRE_OHTTP_REQ, r->chunked ? CL_WIRE_FLAG_CHUNKED : 0, r->body.data,
                                  r->body.len, CL_WIRE_MAX_FRAME, &t, &resp, &fd);
        cl_host_req_drop_body(r);
        stream = rc == CL_OK && r->chunked && (t == CL_WIRE_OHTTP_CHUNK || t == CL_WIRE_END);
        break;
    default: {
        struct cl_buf state;
        cl_buf_init(&state, 64, CL_BUF_NONE);
        rc = cl_host_enclave_call(h, CL_WIRE_STATUS_REQ, 0, NULL, 0, CL_HOST_STATUS_MAX, &t, &resp, &fd);
        es = CL_HOST_ENCLAVE_UNREACHABLE;
        if (rc == CL_OK) {
            es = CL_HOST_ENCLAVE_NOT_READY;
            if (t == CL_WIRE_STATUS_RES && cl_host_json_get_string(resp.data, resp.len, "state", &state) == CL_OK &&
                state.len == 5 && !memcmp(state.data, "ready", 5))
                es = CL_HOST_ENCLAVE_READY;
        }
        if (rc != CL_E_NET_HOST_QUEUE_FULL)
            atomic_store(&h->m.enclave_state, es);
        cl_buf_free(&state);
        break;
    }
    }
    /* A chat answer is followed by its receipt: read after the client has its answer. */
    int receipt = r->kind == CL_HOST_JOB_OHTTP && rc == CL_OK && (t == CL_WIRE_OHTTP_RES || stream);
    if (fd >= 0 && !stream && !receipt) {
        close(fd);
        fd = -1;
    }
    pthread_mutex_lock(&r->mu);
    r->job_rc = rc;
    r->job_t = t;
    r->job_state = es;
    if (stream) {
        r->streaming = 1;
        if (t == CL_WIRE_END)
            r->stream_done = 1;
        else if (cl_buf_append(&r->pending, resp.data, resp.len) != CL_OK)
            r->aborted = 1;
    } else {
        /* swap the answer into the request */
        struct cl_buf tmp = r->frame;
        r->frame = resp;
        resp = tmp;
    }
    r->job_done = 1;
    cl_host_req_resume(r);
    int pump = stream && !r->stream_done && !r->aborted;
    pthread_mutex_unlock(&r->mu);
    cl_buf_free(&resp);
    if (pump)
        cl_host_stream_pump(r, fd);
    if (receipt && stream) {
        pthread_mutex_lock(&r->mu);
        receipt = r->stream_done && !r->aborted;
        pthread_mutex_unlock(&r->mu);
    }
    if (receipt && fd >= 0)
        cl_host_receipt_read(h, fd);
    if (fd >= 0)
        close(fd);
    cl_host_req_unref(r);
}

/* Queues the enclave exchange and parks the connection until it is done. */
static enum MHD_Result cl_host_start_job(struct MHD_Connection *conn, struct cl_host_req *r, enum cl_host_job_kind k)
{
    struct cl_host *h = r->h;
    if (!cl_host_pool_reserve(h)) {
        atomic_fetch_add(&h->m.queue_rejects, 1);
        r->enclave_err = CL_E_NET_HOST_QUEUE_FULL;
        return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE,
                             atomic_load(&h->stopping) ? "host stopping" : "enclave queue full");
    }
    r->kind = k;
    r->job.run = cl_host_job_run;
    r->job_queued = 1;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_lock(&r->mu);
    r->conn = conn;
    cl_host_req_suspend(r);
    pthread_mutex_unlock(&r->mu);
    cl_host_pool_push(h, &r->job);
    return MHD_YES;
}

static ssize_t cl_host_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct cl_host_req *r = cls;
    ssize_t ret;
    (void)pos;
    pthread_mutex_lock(&r->mu);
    size_t n = r->pending.len - r->pending_off;
    if (n) {
        if (n > max)
            n = max;
        memcpy(buf, r->pending.data + r->pending_off, n);
        r->pending_off += n;
        if (r->pending_off == r->pending.len)
            r->pending.len = r->pending_off = 0;
        atomic_fetch_add(&r->bytes_out, n);
        pthread_cond_signal(&r->cv);
        ret = (ssize_t)n;
    } else if (r->aborted) {
        ret = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (r->stream_done) {
        ret = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing yet: park the connection; the worker resumes it. */
        cl_host_req_suspend(r);
        ret = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

static void cl_host_stream_free(void *cls) { cl_host_req_unref(cls); }

/* Builds the answer once the worker is done (the connection was resumed). */
static enum MHD_Result cl_host_job_answer(struct MHD_Connection *conn, struct cl_host_req *r)
{
    cl_err rc = r->job_rc;
    enum cl_wire_type t = r->job_t;
    if (r->kind == CL_HOST_JOB_STATUS) {
        if (rc == CL_E_NET_HOST_QUEUE_FULL)
            return cl_host_enclave_failure(conn, r, rc);
        if (rc != CL_OK)
            r->enclave_err = rc;
        if (r->job_state == CL_HOST_ENCLAVE_READY)
            return cl_host_respond(conn, r, MHD_HTTP_OK, "application/json", "{\"state\":\"ready\"}", 17);
        return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE,
                             r->job_state == CL_HOST_ENCLAVE_UNREACHABLE ? "enclave unreachable" : "enclave not ready");
    }
    if (rc != CL_OK)
        return cl_host_enclave_failure(conn, r, rc);
    if (t == CL_WIRE_ERROR)
        return cl_host_enclave_error_frame(conn, r, &r->frame);
    if (r->kind == CL_HOST_JOB_ATTEST)
        return t == CL_WIRE_ATTEST_DOC
                   ? cl_host_respond(conn, r, MHD_HTTP_OK, "application/cbor", r->frame.data, r->frame.len)
                   : cl_host_enclave_failure(conn, r, CL_E_NET_HOST_ENCLAVE_PROTOCOL);
    if (!r->chunked && t == CL_WIRE_OHTTP_RES)
        return cl_host_respond(conn, r, MHD_HTTP_OK, "message/ohttp-res", r->frame.data, r->frame.len);
    if (!r->streaming)
        return cl_host_enclave_failure(conn, r, CL_E_NET_HOST_ENCLAVE_PROTOCOL);
    atomic_fetch_add(&r->refs, 1);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16u << 10, cl_host_stream_read, r, cl_host_stream_free);
    if (!resp) {
        cl_host_req_unref(r);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "message/ohttp-chunked-res");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    r->status = MHD_HTTP_OK;
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}


/* One counter family with a label over a range of named slots. */
static cl_err cl_host_metric_labeled(struct cl_buf *o, const char *name, const char *help, const char *label,
                                     const char *const *names, const atomic_uint_fast64_t *v, int from, int to)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_appendf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name));
    for (int i = from; i < to; i++)
        CL_GUARD(cl_buf_appendf(o, "%s{%s=\"%s\"} %llu\n", name, label, names[i],
                                (unsigned long long)atomic_load(&v[i])));
out:
    return rc;
}
static cl_err cl_host_metrics_text(struct cl_host *h, struct cl_buf *o)
{
    cl_err rc = CL_OK;
    struct cl_host_metrics *m = &h->m;
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_requests_total HTTP requests by route and status.\n"
                                  "# TYPE cloister_host_requests_total counter\n"));
    for (int rt = CL_HOST_ROUTE_ATTESTATION; rt < CL_HOST_ROUTE_COUNT; rt++)
        for (int s = 0; s <= CL_HOST_STATUS_SLOTS; s++) {
            uint64_t v = atomic_load(&m->requests[rt][s]);
            if (!v)
                continue;
            if (s < CL_HOST_STATUS_SLOTS)
                CL_GUARD(cl_buf_appendf(o, "cloister_host_requests_total{route=\"%s\",code=\"%u\"} %llu\n",
                                        cl_host_route_names[rt], cl_host_status_codes[s], (unsigned long long)v));
            else
                CL_GUARD(cl_buf_appendf(o, "cloister_host_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                                        cl_host_route_names[rt], (unsigned long long)v));
        }
    CL_GUARD(cl_host_metric_labeled(o, "cloister_host_request_bytes_total",
                                    "HTTP request body bytes received.",
                                    "route", cl_host_route_names, m->bytes_in,
                                    CL_HOST_ROUTE_ATTESTATION, CL_HOST_ROUTE_COUNT));
    CL_GUARD(cl_host_metric_labeled(o, "cloister_host_response_bytes_total",
                                    "HTTP response body bytes sent.",
                                    "route", cl_host_route_names, m->bytes_out,
                                    CL_HOST_ROUTE_ATTESTATION, CL_HOST_ROUTE_COUNT));
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_request_duration_seconds Time from request to last byte.\n"
                                  "# TYPE cloister_host_request_duration_seconds histogram\n"));
    for (int rt = CL_HOST_ROUTE_ATTESTATION; rt < CL_HOST_ROUTE_COUNT; rt++) {
        uint64_t cum = 0;
        for (int b = 0; b <= CL_HOST_LAT_BUCKETS; b++) {
            cum += atomic_load(&m->lat_bucket[rt][b]);
            CL_GUARD(cl_buf_appendf(o, "cloister_host_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %llu\n",
                                    cl_host_route_names[rt], b < CL_HOST_LAT_BUCKETS ? cl_host_lat_le[b] : "+Inf",
                                    (unsigned long long)cum));
        }
        uint64_t sum = atomic_load(&m->lat_sum_us[rt]);
        CL_GUARD(cl_buf_appendf(o, "cloister_host_request_duration_seconds_sum{route=\"%s\"} %llu.%06llu\n",
                                cl_host_route_names[rt], (unsigned long long)(sum / 1000000),
                                (unsigned long long)(sum % 1000000)));
        CL_GUARD(cl_buf_appendf(o, "cloister_host_request_duration_seconds_count{route=\"%s\"} %llu\n",
                                cl_host_route_names[rt], (unsigned long long)cum));
    }
    unsigned es = atomic_load(&m->enclave_state);
    CL_GUARD(cl_buf_appendf(o,
                            "# HELP cloister_host_enclave_ready 1 when the enclave last reported state ready.\n"
                            "# TYPE cloister_host_enclave_ready gauge\n"
                            "cloister_host_enclave_ready %d\n"
                            "# HELP cloister_host_enclave_state Enclave state seen by the last readiness check.\n"
                            "# TYPE cloister_host_enclave_state gauge\n",
                            es == CL_HOST_ENCLAVE_READY));
    for (unsigned s = 0; s < CL_HOST_ENCLAVE_STATE_COUNT; s++)
        CL_GUARD(cl_buf_appendf(o, "cloister_host_enclave_state{state=\"%s\"} %d\n", cl_host_state_names[s], s == es));
    CL_GUARD(cl_buf_appendf(o,
                            "# HELP cloister_host_enclave_connect_failures_total Failed connections to the enclave.\n"
                            "# TYPE cloister_host_enclave_connect_failures_total counter\n"
                            "cloister_host_enclave_connect_failures_total %llu\n"
                            "# HELP cloister_host_enclave_timeouts_total Enclave frames that did not come in time.\n"
                            "# TYPE cloister_host_enclave_timeouts_total counter\n"
                            "cloister_host_enclave_timeouts_total %llu\n"
                            "# HELP cloister_host_stream_aborts_total Chunked answers cut off mid-stream.\n"
                            "# TYPE cloister_host_stream_aborts_total counter\n"
                            "cloister_host_stream_aborts_total %llu\n"
                            "# HELP cloister_host_busy_rejects_total Requests refused: request bodies in flight over budget.\n"
                            "# TYPE cloister_host_busy_rejects_total counter\n"
                            "cloister_host_busy_rejects_total %llu\n",
                            (unsigned long long)atomic_load(&m->enclave_connect_failures),
                            (unsigned long long)atomic_load(&m->enclave_timeouts),
                            (unsigned long long)atomic_load(&m->stream_aborts),
                            (unsigned long long)atomic_load(&m->busy_rejects)));
    unsigned open_conns;
    pthread_mutex_lock(&h->conn_mu);
    open_conns = h->conn_count;
    pthread_mutex_unlock(&h->conn_mu);
    CL_GUARD(cl_buf_appendf(o,
                            "# HELP cloister_host_http_connections Open HTTP client connections.\n"
                            "# TYPE cloister_host_http_connections gauge\n"
                            "cloister_host_http_connections %u\n"
                            "# HELP cloister_host_http_connections_total HTTP client connections accepted.\n"
                            "# TYPE cloister_host_http_connections_total counter\n"
                            "cloister_host_http_connections_total %llu\n"
                            "# HELP cloister_host_http_connections_released_total Connections the sweeper took off the "
                            "counts: client gone, library slow to close.\n"
                            "# TYPE cloister_host_http_connections_released_total counter\n"
                            "cloister_host_http_connections_released_total %llu\n"
                            "# HELP cloister_host_http_connection_rejects_total Connections refused with 503 at accept.\n"
                            "# TYPE cloister_host_http_connection_rejects_total counter\n"
                            "cloister_host_http_connection_rejects_total{reason=\"host_limit\"} %llu\n"
                            "cloister_host_http_connection_rejects_total{reason=\"client_limit\"} %llu\n"
                            "# HELP cloister_host_http_header_timeouts_total Connections closed: headers not complete in time.\n"
                            "# TYPE cloister_host_http_header_timeouts_total counter\n"
                            "cloister_host_http_header_timeouts_total %llu\n"
                            "# HELP cloister_host_http_body_timeouts_total Connections closed: request body not complete in time.\n"
                            "# TYPE cloister_host_http_body_timeouts_total counter\n"
                            "cloister_host_http_body_timeouts_total %llu\n"
                            "# HELP cloister_host_enclave_queue_rejects_total Requests refused: enclave queue full.\n"
                            "# TYPE cloister_host_enclave_queue_rejects_total counter\n"
                            "cloister_host_enclave_queue_rejects_total %llu\n"
                            "# HELP cloister_host_enclave_queue_depth Enclave exchanges waiting for a worker.\n"
                            "# TYPE cloister_host_enclave_queue_depth gauge\n"
                            "cloister_host_enclave_queue_depth %u\n"
                            "# HELP cloister_host_enclave_workers_busy Enclave workers in an exchange.\n"
                            "# TYPE cloister_host_enclave_workers_busy gauge\n"
                            "cloister_host_enclave_workers_busy %u\n",
                            open_conns, (unsigned long long)atomic_load(&m->conn_accepted),
                            (unsigned long long)atomic_load(&m->conn_released_late),
                            (unsigned long long)atomic_load(&m->conn_rejects[0]),
                            (unsigned long long)atomic_load(&m->conn_rejects[1]),
                            (unsigned long long)atomic_load(&m->header_timeouts),
                            (unsigned long long)atomic_load(&m->body_timeouts),
                            (unsigned long long)atomic_load(&m->queue_rejects), atomic_load(&m->queue_depth),
                            atomic_load(&m->workers_busy)));
    CL_GUARD(cl_host_metric_labeled(o, "cloister_host_vsock_connections_total",
                                    "Enclave connections to boot services.",
                                    "service", cl_host_svc_names, m->svc_connections,
                                    CL_HOST_SVC_MODEL, CL_HOST_SVC_COUNT));
    CL_GUARD(cl_host_metric_labeled(o, "cloister_host_vsock_failures_total",
                                    "Boot service connections that failed.",
                                    "service", cl_host_svc_names, m->svc_failures,
                                    CL_HOST_SVC_MODEL, CL_HOST_SVC_COUNT));
    CL_GUARD(cl_buf_appendf(o,
                            "# HELP cloister_host_model_bytes_total Sealed model bytes streamed to the enclave.\n"
                            "# TYPE cloister_host_model_bytes_total counter\n"
                            "cloister_host_model_bytes_total %llu\n"
                            "# HELP cloister_host_kms_proxy_bytes_total Bytes piped between enclave and key service.\n"
                            "# TYPE cloister_host_kms_proxy_bytes_total counter\n"
                            "cloister_host_kms_proxy_bytes_total{direction=\"to_kms\"} %llu\n"
                            "cloister_host_kms_proxy_bytes_total{direction=\"from_kms\"} %llu\n",
                            (unsigned long long)atomic_load(&m->model_bytes),
                            (unsigned long long)atomic_load(&m->kms_bytes_to),
                            (unsigned long long)atomic_load(&m->kms_bytes_from)));
    CL_GUARD(cl_buf_appendf(o,
                            "# HELP cloister_host_receipts_total Interactive receipts from the enclave, by outcome.\n"
                            "# TYPE cloister_host_receipts_total counter\n"
                            "cloister_host_receipts_total{result=\"stored\"} %llu\n"
                            "cloister_host_receipts_total{result=\"failed\"} %llu\n"
                            "cloister_host_receipts_total{result=\"dropped\"} %llu\n"
                            "cloister_host_receipts_total{result=\"missing\"} %llu\n"
                            "cloister_host_receipts_total{result=\"discarded\"} %llu\n",
                            (unsigned long long)atomic_load(&m->receipts_stored),
                            (unsigned long long)atomic_load(&m->receipts_failed),
                            (unsigned long long)atomic_load(&m->receipts_dropped),
                            (unsigned long long)atomic_load(&m->receipts_missing),
                            (unsigned long long)atomic_load(&m->receipts_discarded)));
out:
    return rc;
}

static enum MHD_Result cl_host_metrics(struct MHD_Connection *conn, struct cl_host_req *r)
{
    struct cl_buf o;
    cl_buf_init(&o, 1u << 20, CL_BUF_NONE);
    enum MHD_Result ret = cl_host_metrics_text(r->h, &o) == CL_OK
                              ? cl_host_respond(conn, r, MHD_HTTP_OK, "text/plain; version=0.0.4", o.data, o.len)
                              : cl_host_error(conn, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics unavailable");
    cl_buf_free(&o);
    return ret;
}

/* Media type without parameters or surrounding spaces, compared case-insensitively. */
static int cl_host_ctype_is(const char *v, const char *want)
{
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, ";");
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n == strlen(want) && !strncasecmp(v, want, n);
}

/* How much of an oversized body is read and dropped before the connection is cut. */
static uint64_t cl_host_drain_max(const struct cl_host *h) { return (uint64_t)h->cfg.max_body * 2 + (1u << 20); }

static enum cl_host_route cl_host_route_of(const char *url)
{
    if (!strcmp(url, "/v1/attestation"))
        return CL_HOST_ROUTE_ATTESTATION;
    if (!strcmp(url, "/v1/ohttp"))
        return CL_HOST_ROUTE_OHTTP;
    if (!strcmp(url, "/healthz"))
        return CL_HOST_ROUTE_HEALTHZ;
    if (!strcmp(url, "/readyz"))
        return CL_HOST_ROUTE_READYZ;
    if (!strcmp(url, "/metrics"))
        return CL_HOST_ROUTE_METRICS;
    return CL_HOST_ROUTE_OTHER;
}

static enum MHD_Result cl_host_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct cl_host *h = cls;
    struct cl_host_req *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        if (pthread_mutex_init(&r->mu, NULL) != 0) {
            free(r);
            return MHD_NO;
        }
        if (pthread_cond_init(&r->cv, NULL) != 0) {
            pthread_mutex_destroy(&r->mu);
            free(r);
            return MHD_NO;
        }
        r->h = h;
        atomic_init(&r->refs, 1);
        r->t0 = cl_now_us();
        cl_reqid_new(&r->id);
        r->route = cl_host_route_of(url);
        r->conn = conn;
        cl_buf_init(&r->body, h->cfg.max_body ? h->cfg.max_body : 1, CL_BUF_NONE);
        cl_buf_init(&r->frame, 1, CL_BUF_NONE);
        cl_buf_init(&r->pending, (size_t)CL_HOST_STREAM_HIGH + CL_WIRE_MAX_FRAME, CL_BUF_NONE);
        cl_buf_init(&r->nonce, CL_HOST_NONCE_MAX, CL_BUF_NONE);
        *con_cls = r;
        /* The headers are complete: the header deadline is met; a POST's
         * body is on its own clock. */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->hc = ci ? ci->socket_context : NULL;
        cl_host_conn_headers_done(r->hc, !strcmp(method, MHD_HTTP_METHOD_POST));
        int post = !strcmp(method, MHD_HTTP_METHOD_POST), get = !strcmp(method, MHD_HTTP_METHOD_GET);
        if (r->route == CL_HOST_ROUTE_OTHER)
            return cl_host_error(conn, r, MHD_HTTP_NOT_FOUND, "not found");
        if ((r->route == CL_HOST_ROUTE_OHTTP && !post) || (r->route != CL_HOST_ROUTE_OHTTP && !get))
            return cl_host_error(conn, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
        if (r->route == CL_HOST_ROUTE_OHTTP) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (!cl_host_ctype_is(ct, "message/ohttp-req") && !cl_host_ctype_is(ct, "message/ohttp-chunked-req"))
                return cl_host_error(conn, r, MHD_HTTP_BAD_REQUEST,
                                     "content type must be message/ohttp-req or message/ohttp-chunked-req");
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(cl, &end, 10);
                if (errno || *end || v > h->cfg.max_body) {
                    /* A client waiting for 100-continue has sent nothing yet:
                     * answer now. Others are already sending; drain (up to a
                     * bound) so they can read the answer instead of a reset. */
                    const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                    if ((ex && !strcasecmp(ex, "100-continue")) || errno || *end || v > cl_host_drain_max(h))
                        return cl_host_error(conn, r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
                    r->too_large = 1;
                    cl_buf_free(&r->body);
                }
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        r->bytes_in += *upload_data_size;
        if ((r->too_large || r->too_busy) && r->bytes_in > cl_host_drain_max(h))
            return MHD_NO;
        if (!r->too_large && !r->too_busy) {
            uint64_t n = *upload_data_size;
            r->held += n;
            if (atomic_fetch_add(&h->body_inflight, n) + n > h->body_budget)
                r->too_busy = 1;
            else if (cl_buf_append(&r->body, upload_data, *upload_data_size) != CL_OK)
                r->too_large = 1;
            if (r->too_large || r->too_busy)
                cl_host_req_drop_body(r);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->job_queued) {
        /* Called again after the worker resumed the connection. */
        pthread_mutex_lock(&r->mu);
        int done = r->job_done;
        if (!done)
            cl_host_req_suspend(r);
        pthread_mutex_unlock(&r->mu);
        if (!done)
            return MHD_YES;
        r->job_queued = 0;
        return cl_host_job_answer(conn, r);
    }
    if (r->started)
        return MHD_YES;
    r->started = 1;
    cl_host_conn_body_done(r->hc);
    if (r->too_large)
        return cl_host_error(conn, r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (r->too_busy) {
        atomic_fetch_add(&h->m.busy_rejects, 1);
        return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "host busy");
    }
    switch (r->route) {
    case CL_HOST_ROUTE_ATTESTATION: {
        const char *hex = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "nonce");
        if (cl_host_nonce_parse(hex, &r->nonce) != CL_OK)
            return cl_host_error(conn, r, MHD_HTTP_BAD_REQUEST, "nonce must be 16 to 64 bytes of hex");
        return cl_host_start_job(conn, r, CL_HOST_JOB_ATTEST);
    }
    case CL_HOST_ROUTE_OHTTP: {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!r->body.len)
            return cl_host_error(conn, r, MHD_HTTP_BAD_REQUEST, "empty request body");
        r->chunked = cl_host_ctype_is(ct, "message/ohttp-chunked-req");
        return cl_host_start_job(conn, r, CL_HOST_JOB_OHTTP);
    }
    case CL_HOST_ROUTE_HEALTHZ: return cl_host_respond(conn, r, MHD_HTTP_OK, "text/plain", "ok\n", 3);
    case CL_HOST_ROUTE_READYZ: return cl_host_start_job(conn, r, CL_HOST_JOB_STATUS);
    case CL_HOST_ROUTE_METRICS: return cl_host_metrics(conn, r);
    default: return cl_host_error(conn, r, MHD_HTTP_NOT_FOUND, "not found");
    }
}

static void cl_host_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct cl_host *h = cls;
    struct cl_host_req *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    atomic_store(&r->gone, 1);
    /* The next request's headers are on the clock from now. */
    cl_host_conn_request_done(r->hc);
    uint64_t us = cl_now_us() - r->t0, out = atomic_load(&r->bytes_out);
    int slot = CL_HOST_STATUS_SLOTS, b = 0;
    for (int i = 0; i < CL_HOST_STATUS_SLOTS; i++)
        if (cl_host_status_codes[i] == r->status)
            slot = i;
    while (b < CL_HOST_LAT_BUCKETS && us > cl_host_lat_us[b])
        b++;
    int stream_aborted = atomic_load(&r->aborted);
    int aborted = stream_aborted || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    cl_err err = r->enclave_err != CL_OK ? r->enclave_err : (cl_err)atomic_load(&r->stream_err);
    if (stream_aborted)
        atomic_fetch_add(&h->m.stream_aborts, 1);
    atomic_fetch_add(&h->m.requests[r->route][slot], 1);
    atomic_fetch_add(&h->m.bytes_in[r->route], r->bytes_in);
    atomic_fetch_add(&h->m.bytes_out[r->route], out);
    atomic_fetch_add(&h->m.lat_bucket[r->route][b], 1);
    atomic_fetch_add(&h->m.lat_sum_us[r->route], us);
    /* Route names are fixed strings from a constant table. */
    const struct cl_log_field route = {CL_LOGF_LITERAL, "route", {.lit = cl_host_route_names[r->route]}};
    if (aborted)
        CL_LOG(CL_LOG_WARN, "http_request", CL_LOG_ID("request_id", &r->id), route, CL_LOG_COUNT("status", r->status),
               CL_LOG_SIZE("bytes_in", r->bytes_in), CL_LOG_SIZE("bytes_out", out), CL_LOG_US("duration_us", us),
               CL_LOG_LIT("outcome", "aborted"), CL_LOG_ERR(err));
    else
        CL_LOG(CL_LOG_INFO, "http_request", CL_LOG_ID("request_id", &r->id), route, CL_LOG_COUNT("status", r->status),
               CL_LOG_SIZE("bytes_in", r->bytes_in), CL_LOG_SIZE("bytes_out", out), CL_LOG_US("duration_us", us),
               CL_LOG_ERR(err));
    cl_host_req_unref(r);
}

static void cl_host_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls, (void)fmt, (void)ap;
    /* libmicrohttpd's own messages are free text; only note that one happened. */
    CL_LOG(CL_LOG_DEBUG, "http_library_message");
}

static cl_err cl_host_parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sl)
{
    return cl_listen_parse(addr, CL_E_NET_HOST_CONFIG, ss, sl, NULL);
}

/* Accepts clients ourselves, so the connection limits answer 503 before
 * libmicrohttpd ever sees an excess socket (0.9.75 leaks a lock if an
 * externally added connection finds its own limit reached, which wedged every
 * thread), and so the capture hook can interpose on the socket. */
static void cl_host_accept_one(struct cl_host *h, int fd, struct sockaddr_storage *peer, socklen_t pl)
{
    struct cl_host_conn *c = NULL;
    if (!cl_host_conn_admit(h, fd, (struct sockaddr *)peer, pl, &c))
        return;
    if (cl_host_capture_wrap(h, "http", &fd) != CL_OK) {
        cl_host_conn_release(h, c);
        return;
    }
    if (!cl_host_conn_bind(h, c, fd)) {
        close(fd);
        return;
    }
    /* On failure libmicrohttpd has closed fd (our duplicate goes with c). A
     * later failure inside the library, unreported, is cleaned up when the
     * number comes back from accept or by the sweeper. */
    if (MHD_add_connection(h->mhd, fd, (struct sockaddr *)peer, pl) != MHD_YES) {
        cl_host_conn_release(h, c);
        CL_LOG(CL_LOG_WARN, "http_connection_dropped");
    }
}

static void *cl_host_accept_main(void *arg)
{
    struct cl_host *h = arg;
    for (;;) {
        struct pollfd p[2] = {{h->http_fd, POLLIN, 0}, {h->stop_pipe[0], POLLIN, 0}};
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || p[1].revents)
            break;
        for (int burst = 0; burst < 256; burst++) {
            struct sockaddr_storage peer;
            socklen_t pl = sizeof(peer);
            int fd = accept4(h->http_fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                /* Out of descriptors or memory: back off instead of spinning. */
                if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN && errno != EWOULDBLOCK)
                    poll(NULL, 0, 50);
                break;
            }
            cl_host_accept_one(h, fd, &peer, pl);
        }
    }
    return NULL;
}

static unsigned cl_host_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2u : n > 16 ? 16u : (unsigned)n;
}

cl_err cl_host_http_start(struct cl_host *h)
{
    cl_err rc = CL_OK;
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int one = 1;
    CL_GUARD(cl_host_parse_listen(h->cfg.listen, &ss, &sl));
    h->http_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CL_ENSURE_D(h->http_fd >= 0, CL_E_NET_HOST_LISTEN, "socket errno %d", errno);
    (void)setsockopt(h->http_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    CL_ENSURE_D(bind(h->http_fd, (struct sockaddr *)&ss, sl) == 0, CL_E_NET_HOST_LISTEN, "bind %s errno %d",
                "--listen address", errno);
    CL_ENSURE_D(listen(h->http_fd, 4096) == 0, CL_E_NET_HOST_LISTEN, "listen errno %d", errno);
    sl = sizeof(ss);
    CL_ENSURE_D(getsockname(h->http_fd, (struct sockaddr *)&ss, &sl) == 0, CL_E_NET_HOST_LISTEN, "getsockname");
    h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    CL_GUARD(cl_host_conn_init(h));
    CL_GUARD(cl_host_pool_start(h));
    unsigned threads = h->cfg.http_threads ? h->cfg.http_threads : cl_host_default_threads();
    /* Our own limits (conn.c) stop admission long before libmicrohttpd's:
     * its limit is split across its threads and counts closing connections
     * for a while, so it gets ample room and is never the one to refuse. */
    unsigned mhd_limit = (h->max_conns * 2u + 64u) * threads;
    h->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME |
                                  MHD_USE_ERROR_LOG,
                              0, NULL, NULL, cl_host_access, h, MHD_OPTION_NOTIFY_COMPLETED, cl_host_completed, h,
                              MHD_OPTION_NOTIFY_CONNECTION, cl_host_conn_notify, h, MHD_OPTION_THREAD_POOL_SIZE,
                              threads, MHD_OPTION_CONNECTION_TIMEOUT, h->cfg.idle_timeout_s,
                              MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t)(64u << 10), MHD_OPTION_EXTERNAL_LOGGER, cl_host_mhd_log, NULL, MHD_OPTION_END);
    CL_ENSURE_D(h->mhd, CL_E_NET_HOST_LISTEN, "HTTP daemon did not start");
    CL_GUARD(cl_host_sweep_start(h));
    CL_ENSURE_D(pthread_create(&h->http_thr, NULL, cl_host_accept_main, h) == 0, CL_E_CORE_THREAD, "accept thread");
    h->http_thr_started = 1;
    CL_LOG(CL_LOG_INFO, "http_front_door", CL_LOG_COUNT("http_threads", threads),
           CL_LOG_COUNT("max_connections", h->max_conns),
           CL_LOG_COUNT("max_client_connections", h->cfg.max_client_connections),
           CL_LOG_COUNT("header_timeout_ms", h->cfg.header_timeout_ms),
           CL_LOG_COUNT("body_timeout_ms", h->cfg.body_timeout_ms),
           CL_LOG_COUNT("idle_timeout_s", h->cfg.idle_timeout_s),
           CL_LOG_COUNT("enclave_workers", h->cfg.enclave_workers),
           CL_LOG_COUNT("enclave_queue", h->cfg.enclave_queue));
out:
    return rc;
}

/* Order matters: no new connections, then every enclave job finishes (each
 * resumes its connection; libmicrohttpd refuses to stop with one suspended),
 * then libmicrohttpd closes the connections, then our bookkeeping goes. */
void cl_host_http_stop(struct cl_host *h)
{
    if (h->http_thr_started)
        pthread_join(h->http_thr, NULL);
    h->http_thr_started = 0;
    if (h->http_fd >= 0)
        close(h->http_fd);
    h->http_fd = -1;
    cl_host_pool_stop(h);
    cl_host_conn_shutdown_all(h);
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    h->mhd = NULL;
    cl_host_sweep_stop(h);
    cl_host_conn_fini(h);
}
