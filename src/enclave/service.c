/* The service port: one exchange per connection, a thread per connection,
 * bounded. Only ciphertext, attestation documents and public status leave. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cloister/encode.h"
#include "cloister/log.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"
#include "cloister/enclave_runtime.h"

pthread_mutex_t cl_enclave_nsm_mu = PTHREAD_MUTEX_INITIALIZER; /* one NSM exchange at a time */
static atomic_uint cl_svc_conns;

struct cl_svc_conn {
    struct cl_service *s;
    int fd;
};

/* Best effort: the peer may already be gone, which changes nothing here. */
static void cl_svc_send_error(int fd, unsigned status, cl_err code)
{
    if (cl_wire_send_error(fd, status, code) != CL_OK)
        CL_LOG(CL_LOG_DEBUG, "error_frame_not_sent");
}

/* The answer's frames, and the digest of their bytes for the receipt. */
struct cl_svc_out {
    int fd;
    cl_hash *h;
    cl_err hrc;
};

static cl_err cl_svc_emit(void *ctx, enum cl_gw_out kind, const uint8_t *p, size_t n)
{
    struct cl_svc_out *o = ctx;
    if (o->h && o->hrc == CL_OK)
        o->hrc = cl_hash_update(o->h, p, n);
    return cl_wire_send(o->fd, kind == CL_GW_OUT_CHUNK ? CL_WIRE_OHTTP_CHUNK : CL_WIRE_OHTTP_RES, 0, p, n);
}

/* One OHTTP exchange; a chat completion's receipt follows its answer (after END when chunked). */
static cl_err cl_svc_ohttp(struct cl_service *s, int fd, const struct cl_buf *in, bool chunked)
{
    struct cl_svc_out o = {fd, NULL, CL_OK};
    struct cl_gw_outcome oc;
    uint8_t req_sha[32], res_sha[32];
    uint64_t t0 = cl_now_us(), started_ms = (uint64_t)time(NULL) * 1000;
    if (s->jobs)
        o.hrc = cl_hash_new(CL_HASH_SHA256, &o.h);
    cl_err rc = cl_gateway_handle_ex(s->gw, in->data, in->len, chunked, cl_svc_emit, &o, &oc);
    if (rc == CL_OK && chunked)
        rc = cl_wire_send(fd, CL_WIRE_END, 0, NULL, 0);
    else if (rc != CL_OK)
        cl_svc_send_error(fd, cl_gateway_http_status(rc), rc);
    if (rc == CL_OK && oc.chat && s->jobs) {
        cl_err r2 = o.hrc;
        if (r2 == CL_OK)
            r2 = cl_hash_final(o.h, res_sha);
        if (r2 == CL_OK)
            r2 = cl_sha256(in->data, in->len, req_sha);
        if (r2 == CL_OK)
            r2 = cl_jobs_receipt_interactive(s->jobs, fd, &oc, req_sha, res_sha, started_ms, cl_now_us() - t0);
        if (r2 != CL_OK)
            CL_LOG(CL_LOG_WARN, "receipt_failed", CL_LOG_ERR(r2));
    }
    cl_hash_free(o.h);
    return rc;
}

static cl_err cl_svc_attest(struct cl_service *s, int fd, const struct cl_buf *nonce)
{
    struct cl_buf kc, doc;
    struct cl_ohttp_keyconfig cur;
    cl_buf_init(&kc, 1024, CL_BUF_NONE);
    cl_buf_init(&doc, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    cl_err rc = nonce->len <= 64 ? CL_OK : cl_err_fail(CL_E_PROTO_LIMIT, "nonce of %zu bytes", nonce->len);
    if (rc == CL_OK) {
        cl_gateway_keyconfig(s->gw, &cur); /* the key now: it changes every limits->replay_window requests */
        rc = cl_ohttp_keyconfig_encode(&cur, &kc);
    }
    if (rc == CL_OK) {
        pthread_mutex_lock(&cl_enclave_nsm_mu);
        rc = cl_nsm_attestation(s->nsm, s->user_data, s->user_data_len, nonce->len ? nonce->data : NULL, nonce->len,
                                kc.data, kc.len, &doc);
        pthread_mutex_unlock(&cl_enclave_nsm_mu);
    }
    rc = rc == CL_OK ? cl_wire_send(fd, CL_WIRE_ATTEST_DOC, 0, doc.data, doc.len)
                     : cl_wire_send_error(fd, rc == CL_E_PROTO_LIMIT ? 400 : 500, rc);
    cl_buf_free(&kc);
    cl_buf_free(&doc);
    return rc;
}

static cl_err cl_svc_status(struct cl_service *s, int fd)
{
    char hex[65];
    cl_hex_encode(s->model_sha256, 32, hex);
    json_t *j = json_pack("{s:s,s:s,s:s,s:i,s:I}", "state", "ready", "model", s->model_name, "model_sha256", hex,
                          "connections", (int)atomic_load(&cl_svc_conns), "ohttp_key_rotations",
                          (json_int_t)cl_gateway_rotations(s->gw));
    /* a licensed enclave whose lease ended serves nothing: not ready */
    if (j && s->lease && cl_lease_status(s->lease, j))
        json_object_set_new(j, "state", json_string("licence_lease_ended"));
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    cl_err rc = txt ? cl_wire_send(fd, CL_WIRE_STATUS_RES, 0, txt, strlen(txt)) : CL_E_CORE_NOMEM;
    cl_json_free_str(txt);
    json_decref(j);
    return rc;
}

static void *cl_svc_conn_main(void *arg)
{
    struct cl_svc_conn *c = arg;
    struct cl_service *s = c->s;
    struct cl_reqid id;
    struct cl_buf in;
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned fl = 0;
    uint64_t t0 = cl_now_us();
    cl_reqid_new(&id);
    cl_buf_init(&in, s->limits->max_request_bytes + 8192, CL_BUF_NONE);
    struct timeval tv = {(time_t)(s->limits->request_timeout_ms / 1000), (suseconds_t)(s->limits->request_timeout_ms % 1000) * 1000};
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cl_err rc = cl_wire_recv(c->fd, in.max, &t, &fl, &in);
    if (rc == CL_E_PROTO_LIMIT) /* named, so a worker counts an oversized job instead of retrying it */
        cl_svc_send_error(c->fd, 413, rc);
    if (rc == CL_OK) {
        switch (t) {
        case CL_WIRE_ATTEST_REQ: rc = cl_svc_attest(s, c->fd, &in); break;
        case CL_WIRE_STATUS_REQ: rc = cl_svc_status(s, c->fd); break;
        case CL_WIRE_OHTTP_REQ: rc = cl_svc_ohttp(s, c->fd, &in, fl & CL_WIRE_FLAG_CHUNKED); break;
        case CL_WIRE_JOB_REQ:
            rc = s->jobs ? cl_jobs_handle(s->jobs, c->fd, in.data, in.len)
                         : cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "batch jobs are not served");
            if (rc != CL_OK)
                cl_svc_send_error(c->fd, rc == CL_E_PROTO_LIMIT ? 413 : 400, rc);
            break;
        default:
            rc = cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "unexpected %s", cl_wire_type_name(t));
            cl_svc_send_error(c->fd, 400, rc);
        }
    }
    CL_LOG(rc == CL_OK ? CL_LOG_INFO : CL_LOG_WARN, "exchange", CL_LOG_ID("request_id", &id),
           CL_LOG_COUNT("frame_type", t), CL_LOG_SIZE("request_bytes", in.len),
           CL_LOG_US("duration_us", cl_now_us() - t0), CL_LOG_ERR(rc));
    close(c->fd);
    cl_buf_free(&in);
    free(c);
    atomic_fetch_sub(&cl_svc_conns, 1);
    return NULL;
}

cl_err cl_service_run(struct cl_service *s)
{
    int lfd = -1;
    cl_err rc = cl_vsock_listen(CL_VSOCK_CID_ANY, CL_WIRE_PORT_SERVICE, 64, &lfd);
    if (rc != CL_OK)
        return rc;
    CL_LOG(CL_LOG_INFO, "serving", CL_LOG_COUNT("port", CL_WIRE_PORT_SERVICE));
    unsigned max_conns = s->limits->max_sessions * 2 + 8;
    for (;;) {
        int fd = -1;
        rc = cl_vsock_accept(lfd, &fd);
        if (rc != CL_OK) {
            CL_LOG(CL_LOG_WARN, "accept_failed", CL_LOG_ERR(rc));
            continue;
        }
        if (atomic_fetch_add(&cl_svc_conns, 1) >= max_conns) {
            atomic_fetch_sub(&cl_svc_conns, 1);
            cl_svc_send_error(fd, 503, CL_E_PROTO_BUSY);
            close(fd);
            continue;
        }
        struct cl_svc_conn *c = malloc(sizeof(*c));
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (!c || (c->s = s, c->fd = fd, pthread_create(&th, &at, cl_svc_conn_main, c) != 0)) {
            free(c);
            close(fd);
            atomic_fetch_sub(&cl_svc_conns, 1);
        }
        pthread_attr_destroy(&at);
    }
}
