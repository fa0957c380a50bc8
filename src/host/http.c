/* The host's HTTP API (libmicrohttpd, one thread per connection): relays
 * attestation and OHTTP to the enclave, one fresh enclave connection per
 * request, and exports health and Prometheus metrics. Request and response
 * bodies are opaque here and never logged. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_ATTEST_DOC_MAX (1u << 20)
#define CL_HOST_STATUS_MAX (64u << 10)
#define CL_HOST_MHD_CONN_LIMIT 256u

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
    [CL_HOST_SVC_KMS_PROXY] = "kms_proxy"};

struct cl_host_req {
    struct cl_host *h;
    atomic_int refs; /* the connection and, while streaming, the response */
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
    /* streaming */
    int efd;
    struct cl_buf frame;
    size_t frame_off;
    int stream_done;
    int aborted;
};

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
    if (r->efd >= 0)
        close(r->efd);
    cl_host_req_drop_body(r);
    cl_buf_free(&r->frame);
    free(r);
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
 * On success *fd stays open (the caller closes it or keeps streaming). */
static cl_err cl_host_enclave_call(struct cl_host *h, enum cl_wire_type t, unsigned flags, const void *p, size_t n,
                                   size_t max, enum cl_wire_type *rt, struct cl_buf *resp, int *fd)
{
    cl_err rc = CL_OK;
    unsigned rflags = 0;
    int efd = -1;
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

static enum MHD_Result cl_host_attestation(struct MHD_Connection *conn, struct cl_host_req *r)
{
    struct cl_buf nonce, doc;
    enum cl_wire_type t = CL_WIRE_NONE;
    enum MHD_Result ret;
    int fd = -1;
    cl_buf_init(&nonce, CL_HOST_NONCE_MAX, CL_BUF_NONE);
    cl_buf_init(&doc, CL_HOST_ATTEST_DOC_MAX, CL_BUF_NONE);
    const char *hex = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "nonce");
    if (cl_host_nonce_parse(hex, &nonce) != CL_OK) {
        ret = cl_host_error(conn, r, MHD_HTTP_BAD_REQUEST, "nonce must be 16 to 64 bytes of hex");
        goto out;
    }
    cl_err rc = cl_host_enclave_call(r->h, CL_WIRE_ATTEST_REQ, 0, nonce.data, nonce.len, CL_HOST_ATTEST_DOC_MAX, &t,
                                     &doc, &fd);
    if (rc != CL_OK)
        ret = cl_host_enclave_failure(conn, r, rc);
    else if (t == CL_WIRE_ATTEST_DOC)
        ret = cl_host_respond(conn, r, MHD_HTTP_OK, "application/cbor", doc.data, doc.len);
    else if (t == CL_WIRE_ERROR)
        ret = cl_host_enclave_error_frame(conn, r, &doc);
    else
        ret = cl_host_enclave_failure(conn, r, CL_E_NET_HOST_ENCLAVE_PROTOCOL);
out:
    if (fd >= 0)
        close(fd);
    cl_buf_free(&nonce);
    cl_buf_free(&doc);
    return ret;
}

static ssize_t cl_host_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct cl_host_req *r = cls;
    (void)pos;
    while (r->frame_off >= r->frame.len) {
        enum cl_wire_type t = CL_WIRE_NONE;
        unsigned flags = 0;
        if (r->stream_done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        cl_err rc = cl_host_enclave_recv(r->h, r->efd, CL_WIRE_MAX_FRAME, &t, &flags, &r->frame);
        r->frame_off = 0;
        if (rc == CL_OK && t == CL_WIRE_END) {
            r->stream_done = 1;
            r->frame.len = 0;
        } else if (rc != CL_OK || t != CL_WIRE_OHTTP_CHUNK) {
            /* Ending with an error makes MHD drop the connection without the
             * final zero-length chunk: the client sees a truncated body. */
            r->enclave_err = rc != CL_OK ? rc : CL_E_NET_HOST_ENCLAVE_PROTOCOL;
            r->aborted = 1;
            r->frame.len = 0;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = r->frame.len - r->frame_off;
    if (n > max)
        n = max;
    memcpy(buf, r->frame.data + r->frame_off, n);
    r->frame_off += n;
    atomic_fetch_add(&r->bytes_out, n);
    return (ssize_t)n;
}

static void cl_host_stream_free(void *cls) { cl_host_req_unref(cls); }

static enum MHD_Result cl_host_ohttp(struct MHD_Connection *conn, struct cl_host_req *r, int chunked)
{
    enum cl_wire_type t = CL_WIRE_NONE;
    enum MHD_Result ret;
    int fd = -1;
    cl_buf_init(&r->frame, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    cl_err rc = cl_host_enclave_call(r->h, CL_WIRE_OHTTP_REQ, chunked ? CL_WIRE_FLAG_CHUNKED : 0, r->body.data,
                                     r->body.len, CL_WIRE_MAX_FRAME, &t, &r->frame, &fd);
    cl_host_req_drop_body(r);
    if (rc != CL_OK)
        return cl_host_enclave_failure(conn, r, rc);
    if (t == CL_WIRE_ERROR) {
        ret = cl_host_enclave_error_frame(conn, r, &r->frame);
    } else if (!chunked && t == CL_WIRE_OHTTP_RES) {
        ret = cl_host_respond(conn, r, MHD_HTTP_OK, "message/ohttp-res", r->frame.data, r->frame.len);
    } else if (chunked && (t == CL_WIRE_OHTTP_CHUNK || t == CL_WIRE_END)) {
        r->efd = fd;
        fd = -1;
        r->frame_off = 0;
        if (t == CL_WIRE_END) {
            r->stream_done = 1;
            r->frame.len = 0;
        }
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
        ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
    } else {
        ret = cl_host_enclave_failure(conn, r, CL_E_NET_HOST_ENCLAVE_PROTOCOL);
    }
    if (fd >= 0)
        close(fd);
    return ret;
}

static enum MHD_Result cl_host_readyz(struct MHD_Connection *conn, struct cl_host_req *r)
{
    struct cl_buf st, state;
    enum cl_wire_type t = CL_WIRE_NONE;
    enum cl_host_enclave_state es = CL_HOST_ENCLAVE_UNREACHABLE;
    int fd = -1;
    cl_buf_init(&st, CL_HOST_STATUS_MAX, CL_BUF_NONE);
    cl_buf_init(&state, 64, CL_BUF_NONE);
    cl_err rc = cl_host_enclave_call(r->h, CL_WIRE_STATUS_REQ, 0, NULL, 0, CL_HOST_STATUS_MAX, &t, &st, &fd);
    if (rc == CL_OK) {
        es = CL_HOST_ENCLAVE_NOT_READY;
        if (t == CL_WIRE_STATUS_RES && cl_host_json_get_string(st.data, st.len, "state", &state) == CL_OK &&
            state.len == 5 && !memcmp(state.data, "ready", 5))
            es = CL_HOST_ENCLAVE_READY;
    } else {
        r->enclave_err = rc;
    }
    atomic_store(&r->h->m.enclave_state, es);
    if (fd >= 0)
        close(fd);
    cl_buf_free(&st);
    cl_buf_free(&state);
    if (es == CL_HOST_ENCLAVE_READY)
        return cl_host_respond(conn, r, MHD_HTTP_OK, "application/json", "{\"state\":\"ready\"}", 17);
    return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE,
                         es == CL_HOST_ENCLAVE_UNREACHABLE ? "enclave unreachable" : "enclave not ready");
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
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_request_bytes_total HTTP request body bytes received.\n"
                                  "# TYPE cloister_host_request_bytes_total counter\n"));
    for (int rt = CL_HOST_ROUTE_ATTESTATION; rt < CL_HOST_ROUTE_COUNT; rt++)
        CL_GUARD(cl_buf_appendf(o, "cloister_host_request_bytes_total{route=\"%s\"} %llu\n", cl_host_route_names[rt],
                                (unsigned long long)atomic_load(&m->bytes_in[rt])));
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_response_bytes_total HTTP response body bytes sent.\n"
                                  "# TYPE cloister_host_response_bytes_total counter\n"));
    for (int rt = CL_HOST_ROUTE_ATTESTATION; rt < CL_HOST_ROUTE_COUNT; rt++)
        CL_GUARD(cl_buf_appendf(o, "cloister_host_response_bytes_total{route=\"%s\"} %llu\n", cl_host_route_names[rt],
                                (unsigned long long)atomic_load(&m->bytes_out[rt])));
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
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_vsock_connections_total Enclave connections to boot services.\n"
                                  "# TYPE cloister_host_vsock_connections_total counter\n"));
    for (int s = CL_HOST_SVC_MODEL; s < CL_HOST_SVC_COUNT; s++)
        CL_GUARD(cl_buf_appendf(o, "cloister_host_vsock_connections_total{service=\"%s\"} %llu\n", cl_host_svc_names[s],
                                (unsigned long long)atomic_load(&m->svc_connections[s])));
    CL_GUARD(cl_buf_append_str(o, "# HELP cloister_host_vsock_failures_total Boot service connections that failed.\n"
                                  "# TYPE cloister_host_vsock_failures_total counter\n"));
    for (int s = CL_HOST_SVC_MODEL; s < CL_HOST_SVC_COUNT; s++)
        CL_GUARD(cl_buf_appendf(o, "cloister_host_vsock_failures_total{service=\"%s\"} %llu\n", cl_host_svc_names[s],
                                (unsigned long long)atomic_load(&m->svc_failures[s])));
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
        r->h = h;
        atomic_init(&r->refs, 1);
        r->efd = -1;
        r->t0 = cl_now_us();
        cl_reqid_new(&r->id);
        r->route = cl_host_route_of(url);
        cl_buf_init(&r->body, h->cfg.max_body ? h->cfg.max_body : 1, CL_BUF_NONE);
        cl_buf_init(&r->frame, 1, CL_BUF_NONE);
        *con_cls = r;
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
    if (r->started)
        return MHD_YES;
    r->started = 1;
    if (r->too_large)
        return cl_host_error(conn, r, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (r->too_busy) {
        atomic_fetch_add(&h->m.busy_rejects, 1);
        return cl_host_error(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "host busy");
    }
    switch (r->route) {
    case CL_HOST_ROUTE_ATTESTATION: return cl_host_attestation(conn, r);
    case CL_HOST_ROUTE_OHTTP: {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!r->body.len)
            return cl_host_error(conn, r, MHD_HTTP_BAD_REQUEST, "empty request body");
        return cl_host_ohttp(conn, r, cl_host_ctype_is(ct, "message/ohttp-chunked-req"));
    }
    case CL_HOST_ROUTE_HEALTHZ: return cl_host_respond(conn, r, MHD_HTTP_OK, "text/plain", "ok\n", 3);
    case CL_HOST_ROUTE_READYZ: return cl_host_readyz(conn, r);
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
    uint64_t us = cl_now_us() - r->t0, out = atomic_load(&r->bytes_out);
    int slot = CL_HOST_STATUS_SLOTS, b = 0;
    for (int i = 0; i < CL_HOST_STATUS_SLOTS; i++)
        if (cl_host_status_codes[i] == r->status)
            slot = i;
    while (b < CL_HOST_LAT_BUCKETS && us > cl_host_lat_us[b])
        b++;
    int aborted = r->aborted || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (r->aborted)
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
               CL_LOG_LIT("outcome", "aborted"), CL_LOG_ERR(r->enclave_err));
    else
        CL_LOG(CL_LOG_INFO, "http_request", CL_LOG_ID("request_id", &r->id), route, CL_LOG_COUNT("status", r->status),
               CL_LOG_SIZE("bytes_in", r->bytes_in), CL_LOG_SIZE("bytes_out", out), CL_LOG_US("duration_us", us),
               CL_LOG_ERR(r->enclave_err));
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
    char host[128];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || colon == addr)
        return cl_err_fail(CL_E_NET_HOST_CONFIG, "--listen must be HOST:PORT");
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof(host))
        return cl_err_fail(CL_E_NET_HOST_CONFIG, "--listen host too long");
    memcpy(host, addr, hl);
    host[hl] = 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || colon[1] == 0 || port < 0 || port > 65535)
        return cl_err_fail(CL_E_NET_HOST_CONFIG, "--listen port must be 0..65535");
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = 0;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return cl_err_fail(CL_E_NET_HOST_CONFIG, "--listen IPv6 address");
        *sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, !strcmp(host, "localhost") ? "127.0.0.1" : host, &s4->sin_addr) != 1)
            return cl_err_fail(CL_E_NET_HOST_CONFIG, "--listen IPv4 address");
        *sl = sizeof(*s4);
    }
    return CL_OK;
}

/* Accepts clients ourselves and hands them to libmicrohttpd, so the capture
 * hook can interpose on the socket. */
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
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        int fd = accept4(h->http_fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
        if (fd < 0) {
            /* Out of descriptors or memory: back off instead of spinning. */
            if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
                poll(NULL, 0, 50);
            continue;
        }
        if (cl_host_capture_wrap(h, "http", &fd) != CL_OK)
            continue;
        if (MHD_add_connection(h->mhd, fd, (struct sockaddr *)&peer, pl) != MHD_YES)
            CL_LOG(CL_LOG_WARN, "http_connection_refused");
    }
    return NULL;
}

cl_err cl_host_http_start(struct cl_host *h)
{
    cl_err rc = CL_OK;
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int one = 1;
    CL_GUARD(cl_host_parse_listen(h->cfg.listen, &ss, &sl));
    h->http_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CL_ENSURE_D(h->http_fd >= 0, CL_E_NET_HOST_LISTEN, "socket errno %d", errno);
    (void)setsockopt(h->http_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    CL_ENSURE_D(bind(h->http_fd, (struct sockaddr *)&ss, sl) == 0, CL_E_NET_HOST_LISTEN, "bind %s errno %d",
                "--listen address", errno);
    CL_ENSURE_D(listen(h->http_fd, 128) == 0, CL_E_NET_HOST_LISTEN, "listen errno %d", errno);
    sl = sizeof(ss);
    CL_ENSURE_D(getsockname(h->http_fd, (struct sockaddr *)&ss, &sl) == 0, CL_E_NET_HOST_LISTEN, "getsockname");
    h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    unsigned client_timeout_s = h->cfg.timeout_ms / 1000u + 30u;
    h->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                  MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC | MHD_USE_ERROR_LOG,
                              0, NULL, NULL, cl_host_access, h, MHD_OPTION_NOTIFY_COMPLETED, cl_host_completed, h,
                              MHD_OPTION_CONNECTION_TIMEOUT, client_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
                              CL_HOST_MHD_CONN_LIMIT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10),
                              MHD_OPTION_EXTERNAL_LOGGER, cl_host_mhd_log, NULL, MHD_OPTION_END);
    CL_ENSURE_D(h->mhd, CL_E_NET_HOST_LISTEN, "HTTP daemon did not start");
    CL_ENSURE_D(pthread_create(&h->http_thr, NULL, cl_host_accept_main, h) == 0, CL_E_CORE_THREAD, "accept thread");
    h->http_thr_started = 1;
out:
    return rc;
}

void cl_host_http_stop(struct cl_host *h)
{
    if (h->http_thr_started)
        pthread_join(h->http_thr, NULL);
    h->http_thr_started = 0;
    if (h->http_fd >= 0)
        close(h->http_fd);
    h->http_fd = -1;
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    h->mhd = NULL;
}
