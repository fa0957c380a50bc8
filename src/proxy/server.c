/* The proxy's HTTP side: libmicrohttpd, one thread per connection (a chat
 * call blocks for the whole generation), one cl_client per request taken
 * from a small pool (a client handle is not thread-safe). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <microhttpd.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/listen.h"
#include "cloister/log.h"
#include "cloister/proxy.h"
#include "cloister/secmem.h"

#define CL_PROXY_MAX_SSE_QUEUE ((size_t)4 << 20)

struct cl_proxy_state { /* the last attestation verification */
    bool checked, ok;
    uint64_t checked_ms; /* wall clock */
    cl_err err;
    char message[400];
    bool have_att;
    struct cl_client_attestation att;
    uint64_t verifications, refusals;
};

struct cl_proxy {
    struct cl_proxy_config cfg;
    struct cl_trust trust;
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    cl_client *pool[CL_PROXY_MAX_CLIENTS];
    size_t npool;
    struct cl_proxy_state st;
    char *cred; /* secure memory, NUL-terminated; NULL: no licence credential */
    size_t cred_len;
};

struct cl_proxy_conn {
    struct cl_buf body;
    bool too_large;
    struct cl_reqid id;
    uint64_t t0;
};

/* ---- clients and the attestation record ---- */

static uint64_t cl_proxy_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Records what an attestation established or why it failed. attest_call: rc
 * is cl_client_attest's own (any failure counts, the host unreachable too);
 * otherwise rc is a chat's, which re-attests only when the key changed. */
static void cl_proxy_note(cl_proxy *p, cl_client *c, unsigned before, cl_err rc, bool attest_call)
{
    const struct cl_client_attestation *a = cl_client_attestation(c);
    bool fresh = a && a->count != before;
    bool failed = rc != CL_OK && (attest_call || cl_proxy_is_attestation_error(rc));
    if (!fresh && !failed)
        return;
    pthread_mutex_lock(&p->mu);
    p->st.checked = true;
    p->st.checked_ms = cl_proxy_wall_ms();
    if (failed) {
        p->st.ok = false;
        p->st.err = rc;
        cl_err_format(rc, p->st.message, sizeof(p->st.message));
        p->st.refusals++;
    } else {
        p->st.ok = true;
        p->st.err = CL_OK;
        p->st.message[0] = 0;
        p->st.att = *a;
        p->st.have_att = true;
        p->st.verifications++;
    }
    pthread_mutex_unlock(&p->mu);
}

static cl_err cl_proxy_client_get(cl_proxy *p, cl_client **out)
{
    cl_err rc = CL_OK;
    cl_client *c = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->npool)
        c = p->pool[--p->npool];
    pthread_mutex_unlock(&p->mu);
    if (!c) {
        CL_GUARD(cl_client_new(p->cfg.host_url, &p->trust, &c));
        if (p->cfg.timeout_ms)
            cl_client_set_timeout_ms(c, p->cfg.timeout_ms);
        if (p->cred)
            CL_GUARD(cl_client_set_credential(c, p->cred, p->cred_len));
    }
    if (!cl_client_attestation(c)) {
        rc = cl_client_attest(c);
        cl_proxy_note(p, c, 0, rc, true);
        CL_GUARD(rc);
    }
    *out = c;
    c = NULL;
out:
    cl_client_free(c);
    return rc;
}

static void cl_proxy_client_put(cl_proxy *p, cl_client *c)
{
    pthread_mutex_lock(&p->mu);
    if (c && p->npool < CL_PROXY_MAX_CLIENTS) {
        p->pool[p->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    cl_client_free(c);
}

/* ---- responses ---- */

static void cl_proxy_free_secure(void *cls)
{
    struct cl_buf *b = cls;
    cl_buf_free(b);
    free(b);
}

static void cl_proxy_common_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
}

/* Sends b (taken over; wiped when sent). */
static enum MHD_Result cl_proxy_send_buf(struct MHD_Connection *conn, unsigned status, const char *ctype,
                                         struct cl_buf *b)
{
    struct cl_buf *hb = malloc(sizeof(*hb));
    if (!hb) {
        cl_buf_free(b);
        return MHD_NO;
    }
    *hb = *b;
    memset(b, 0, sizeof(*b));
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback_cls(
        hb->len, hb->data ? hb->data : (uint8_t *)"", cl_proxy_free_secure, hb);
    if (!r) {
        cl_proxy_free_secure(hb);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    cl_proxy_common_headers(r);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result cl_proxy_send_error(struct MHD_Connection *conn, const struct cl_proxy_error *e)
{
    struct cl_buf b;
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    if (cl_proxy_error_json(e, &b) != CL_OK) {
        cl_buf_free(&b);
        return MHD_NO;
    }
    return cl_proxy_send_buf(conn, e->status, "application/json", &b);
}

static enum MHD_Result cl_proxy_fail(struct MHD_Connection *conn, uint16_t status, const char *type,
                                     const char *code, const char *msg)
{
    struct cl_proxy_error e;
    memset(&e, 0, sizeof(e));
    e.status = status;
    e.type = type;
    snprintf(e.code, sizeof(e.code), "%s", code);
    snprintf(e.message, sizeof(e.message), "%s", msg);
    return cl_proxy_send_error(conn, &e);
}

static enum MHD_Result cl_proxy_send_static(struct MHD_Connection *conn, const unsigned char *p, size_t n,
                                            const char *ctype, bool page)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)(uintptr_t)p, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    cl_proxy_common_headers(r);
    if (page)
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'none'; script-src 'self'; style-src 'self'; img-src data: blob:; "
                                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- /v1/models and /v1/attestation ---- */

static enum MHD_Result cl_proxy_models(cl_proxy *p, struct MHD_Connection *conn)
{
    char hex[65];
    struct cl_buf b;
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    cl_hex_encode(p->trust.model_sha256, 32, hex);
    pthread_mutex_lock(&p->mu);
    bool ok = p->st.checked && p->st.ok;
    pthread_mutex_unlock(&p->mu);
    if (cl_buf_appendf(&b,
                       "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\",\"created\":0,"
                       "\"owned_by\":\"cloister\",\"model_sha256\":\"%s\",\"attested\":%s}]}\n",
                       p->cfg.model_id, hex, ok ? "true" : "false") != CL_OK) {
        cl_buf_free(&b);
        return MHD_NO;
    }
    return cl_proxy_send_buf(conn, MHD_HTTP_OK, "application/json", &b);
}

static void cl_proxy_iso(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "?");
}

static cl_err cl_proxy_pcrs_json(struct cl_buf *b, uint32_t present, const uint8_t (*pcr)[CL_ATTEST_PCR_LEN])
{
    cl_err rc = CL_OK;
    char hex[2 * CL_ATTEST_PCR_LEN + 1];
    bool first = true;
    CL_GUARD(cl_buf_append_u8(b, '{'));
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (present & (1u << i)) {
            cl_hex_encode(pcr[i], CL_ATTEST_PCR_LEN, hex);
            CL_GUARD(cl_buf_appendf(b, "%s\"%u\":\"%s\"", first ? "" : ",", i, hex));
            first = false;
        }
    CL_GUARD(cl_buf_append_u8(b, '}'));
out:
    return rc;
}

static cl_err cl_proxy_attestation_json(cl_proxy *p, struct cl_buf *b)
{
    cl_err rc = CL_OK;
    char hex[2 * CL_ATTEST_UD_MAX_AUDIT_KEY + 1], ts[64];
    struct cl_proxy_state st;
    pthread_mutex_lock(&p->mu);
    st = p->st;
    pthread_mutex_unlock(&p->mu);
    const struct cl_trust *t = &p->trust;
    uint8_t root[32];
    CL_GUARD(cl_sha256(t->root_der, t->root_len, root));
    cl_hex_encode(root, 32, hex);
    cl_proxy_iso(st.checked_ms, ts, sizeof(ts));
    CL_GUARD(cl_buf_appendf(b, "{\"object\":\"attestation\",\"checked\":%s,\"ok\":%s,\"checked_at\":", st.checked ? "true" : "false",
                            st.checked && st.ok ? "true" : "false"));
    if (st.checked)
        CL_GUARD(cl_buf_appendf(b, "\"%s\"", ts));
    else
        CL_GUARD(cl_buf_append_str(b, "null"));
    CL_GUARD(cl_buf_appendf(b, ",\"verifications\":%llu,\"refusals\":%llu,\"failure\":",
                            (unsigned long long)st.verifications, (unsigned long long)st.refusals));
    if (st.checked && !st.ok) {
        const char *name = cl_err_name(st.err);
        CL_GUARD(cl_buf_appendf(b, "{\"check\":\"%s\",\"message\":\"", name ? name : "UNKNOWN"));
        CL_GUARD(cl_json_escape((const uint8_t *)st.message, strlen(st.message), b));
        CL_GUARD(cl_buf_append_str(b, "\"}"));
    } else {
        CL_GUARD(cl_buf_append_str(b, "null"));
    }
    /* What TRUST.json pins. */
    CL_GUARD(cl_buf_appendf(b, ",\"trust\":{\"root_sha256\":\"%s\",\"pcrs\":", hex));
    CL_GUARD(cl_proxy_pcrs_json(b, t->pcr_present, t->pcr));
    cl_hex_encode(t->model_sha256, 32, hex);
    CL_GUARD(cl_buf_appendf(b, ",\"model_sha256\":\"%s\",\"max_age_seconds\":%llu,\"allow_debug\":%s", hex,
                            (unsigned long long)t->max_age_seconds, t->allow_debug ? "true" : "false"));
    if (t->pin_kms) {
        CL_GUARD(cl_buf_append_str(b, ",\"kms\":{\"key_arn\":\""));
        CL_GUARD(cl_json_escape((const uint8_t *)t->kms_key_arn, strlen(t->kms_key_arn), b));
        CL_GUARD(cl_buf_append_str(b, "\",\"endpoint\":"));
        if (t->pin_kms_endpoint) {
            CL_GUARD(cl_buf_append_u8(b, '"'));
            CL_GUARD(cl_json_escape((const uint8_t *)t->kms_endpoint, strlen(t->kms_endpoint), b));
            CL_GUARD(cl_buf_append_u8(b, '"'));
        } else {
            CL_GUARD(cl_buf_append_str(b, "null"));
        }
        if (t->pin_kms_ca && !t->kms_ca_none)
            cl_hex_encode(t->kms_ca_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, ",\"ca_sha256\":%s%s%s}", t->pin_kms_ca ? "\"" : "",
                                t->pin_kms_ca ? (t->kms_ca_none ? "none" : hex) : "null", t->pin_kms_ca ? "\"" : ""));
    } else {
        CL_GUARD(cl_buf_append_str(b, ",\"kms\":null"));
    }
    if (t->pin_mmproj) {
        cl_hex_encode(t->mmproj_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, ",\"mmproj_sha256\":\"%s\"", hex));
    } else {
        CL_GUARD(cl_buf_append_str(b, ",\"mmproj_sha256\":null"));
    }
    if (t->pin_config) {
        cl_hex_encode(t->config_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, ",\"config_sha256\":\"%s\"}", hex));
    } else {
        CL_GUARD(cl_buf_append_str(b, ",\"config_sha256\":null}"));
    }
    /* What the last verified attestation document said. */
    CL_GUARD(cl_buf_append_str(b, ",\"attested\":"));
    if (st.checked && st.ok && st.have_att) {
        const struct cl_client_attestation *a = &st.att;
        cl_proxy_iso(a->timestamp_ms, ts, sizeof(ts));
        CL_GUARD(cl_buf_append_str(b, "{\"module_id\":\""));
        CL_GUARD(cl_json_escape((const uint8_t *)a->module_id, strlen(a->module_id), b));
        CL_GUARD(cl_buf_appendf(b, "\",\"timestamp\":\"%s\",\"debug\":%s,\"pcrs\":", ts, a->debug ? "true" : "false"));
        CL_GUARD(cl_proxy_pcrs_json(b, a->pcr_present & 0xffffu, a->pcr));
        cl_hex_encode(a->user_data.model_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, ",\"model_sha256\":\"%s\"", hex));
        if (a->user_data.has_mmproj) {
            cl_hex_encode(a->user_data.mmproj_sha256, 32, hex);
            CL_GUARD(cl_buf_appendf(b, ",\"mmproj_sha256\":\"%s\"", hex));
        } else {
            CL_GUARD(cl_buf_append_str(b, ",\"mmproj_sha256\":null"));
        }
        cl_hex_encode(a->user_data.config_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, ",\"config_sha256\":\"%s\",\"kms_key_arn\":\"", hex));
        CL_GUARD(cl_json_escape((const uint8_t *)a->user_data.kms_key_arn, strlen(a->user_data.kms_key_arn), b));
        CL_GUARD(cl_buf_append_str(b, "\",\"kms_endpoint\":\""));
        CL_GUARD(cl_json_escape((const uint8_t *)a->user_data.kms_endpoint, strlen(a->user_data.kms_endpoint), b));
        if (a->user_data.has_kms_ca)
            cl_hex_encode(a->user_data.kms_ca_sha256, 32, hex);
        CL_GUARD(cl_buf_appendf(b, "\",\"kms_ca_sha256\":%s%s%s,\"ohttp_key_id\":%u}",
                                a->user_data.has_kms_ca ? "\"" : "", a->user_data.has_kms_ca ? hex : "null",
                                a->user_data.has_kms_ca ? "\"" : "", (unsigned)a->key.key_id));
        /* Every check that passed, in the order the client library made them. */
        CL_GUARD(cl_buf_append_str(b, ",\"checks\":[\"root\",\"signature\",\"nonce\",\"freshness\""));
        for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
            if (t->pcr_present & (1u << i))
                CL_GUARD(cl_buf_appendf(b, ",\"pcr%u\"", i));
        CL_GUARD(cl_buf_append_str(b, ",\"model_sha256\""));
        if (t->pin_mmproj)
            CL_GUARD(cl_buf_append_str(b, ",\"mmproj_sha256\""));
        if (t->pin_kms)
            CL_GUARD(cl_buf_append_str(b, ",\"kms\""));
        if (t->pin_config)
            CL_GUARD(cl_buf_append_str(b, ",\"config_sha256\""));
        CL_GUARD(cl_buf_append_str(b, "]"));
    } else {
        CL_GUARD(cl_buf_append_str(b, "null,\"checks\":[]"));
    }
    CL_GUARD(cl_buf_append_str(b, "}\n"));
out:
    return rc;
}

static enum MHD_Result cl_proxy_attestation(cl_proxy *p, struct MHD_Connection *conn)
{
    struct cl_buf b;
    cl_buf_init(&b, 64 * 1024, CL_BUF_NONE);
    if (cl_proxy_attestation_json(p, &b) != CL_OK) {
        cl_buf_free(&b);
        return cl_proxy_fail(conn, 500, "server_error", "internal", "could not encode the attestation record");
    }
    return cl_proxy_send_buf(conn, MHD_HTTP_OK, "application/json", &b);
}

/* ---- chat ---- */

struct cl_proxy_stream {
    cl_proxy *p;
    cl_client *c;
    struct cl_buf req; /* the body for the enclave (secure) */
    char id[48];
    uint64_t created;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cl_buf q; /* SSE bytes not yet sent (secure) */
    size_t qoff;
    bool started, done, abandoned;
    cl_err rc;
    struct cl_client_result res;
    uint64_t pieces;
    struct cl_reqid rid;
    uint64_t t0;
};

static cl_err cl_proxy_on_piece(void *arg, const char *text, size_t n)
{
    struct cl_proxy_stream *s = arg;
    cl_err rc = CL_OK;
    pthread_mutex_lock(&s->mu);
    CL_ENSURE_D(!s->abandoned, CL_E_NET_CLIENT_STREAM_INCOMPLETE, "the proxy's caller went away");
    if (s->qoff == s->q.len) {
        cl_buf_reset(&s->q);
        s->qoff = 0;
    }
    CL_GUARD(cl_proxy_chunk_sse(s->id, s->created, s->p->cfg.model_id, !s->started, text, n, NULL, &s->q));
    s->started = true;
    s->pieces++;
    pthread_cond_broadcast(&s->cv);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void *cl_proxy_stream_main(void *arg)
{
    struct cl_proxy_stream *s = arg;
    unsigned before = cl_client_attestation(s->c) ? cl_client_attestation(s->c)->count : 0;
    cl_err rc = cl_client_chat_json(s->c, s->req.data, s->req.len, cl_proxy_on_piece, s, &s->res);
    cl_proxy_note(s->p, s->c, before, rc, false);
    pthread_mutex_lock(&s->mu);
    if (s->started) {
        cl_err e2 = CL_OK;
        if (rc == CL_OK) {
            if (s->qoff == s->q.len) {
                cl_buf_reset(&s->q);
                s->qoff = 0;
            }
            e2 = cl_proxy_chunk_sse(s->id, s->created, s->p->cfg.model_id, false, NULL, 0,
                                    s->res.finish_reason[0] ? s->res.finish_reason : "stop", &s->q);
            if (e2 == CL_OK)
                e2 = cl_buf_append_str(&s->q, "data: [DONE]\n\n");
        } else {
            /* Headers are out: the error goes in the stream, and no [DONE]. */
            struct cl_proxy_error e;
            cl_proxy_error_from(rc, &s->res, &e);
            e2 = cl_buf_append_str(&s->q, "data: ");
            if (e2 == CL_OK)
                e2 = cl_proxy_error_json(&e, &s->q);
            if (e2 == CL_OK)
                e2 = cl_buf_append_str(&s->q, "\n");
        }
        if (rc == CL_OK)
            rc = e2;
    }
    s->rc = rc;
    s->done = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void cl_proxy_stream_free(struct cl_proxy_stream *s)
{
    if (!s)
        return;
    CL_LOG(CL_LOG_INFO, "proxy_chat", CL_LOG_ID("id", &s->rid), CL_LOG_LIT("mode", "stream"),
           CL_LOG_SIZE("request", s->req.len), CL_LOG_SIZE("answer", s->res.content.len),
           CL_LOG_COUNT("pieces", s->pieces), CL_LOG_US("elapsed", cl_now_us() - s->t0), CL_LOG_ERR(s->rc));
    cl_proxy_client_put(s->p, s->c);
    cl_buf_free(&s->req);
    cl_buf_free(&s->q);
    cl_client_result_free(&s->res);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    cl_wipe(s, sizeof(*s));
    free(s);
}

static ssize_t cl_proxy_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct cl_proxy_stream *s = cls;
    ssize_t n;
    pthread_mutex_lock(&s->mu);
    while (s->qoff == s->q.len && !s->done)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->qoff == s->q.len) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        size_t k = s->q.len - s->qoff < max ? s->q.len - s->qoff : max;
        memcpy(buf, s->q.data + s->qoff, k);
        s->qoff += k;
        n = (ssize_t)k;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void cl_proxy_stream_done(void *cls)
{
    struct cl_proxy_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    s->abandoned = true;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    cl_proxy_stream_free(s);
}

static void cl_proxy_new_id(char *id, size_t cap)
{
    uint8_t r[12];
    char hex[25];
    if (cl_random_bytes(r, sizeof(r)) != CL_OK)
        memset(r, 0, sizeof(r));
    cl_hex_encode(r, sizeof(r), hex);
    snprintf(id, cap, "chatcmpl-%s", hex);
}

static enum MHD_Result cl_proxy_chat_stream(cl_proxy *p, struct MHD_Connection *conn, cl_client *c,
                                            struct cl_buf *req, const struct cl_proxy_conn *pc)
{
    struct cl_proxy_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        cl_proxy_client_put(p, c);
        return cl_proxy_fail(conn, 500, "server_error", "internal", "out of memory");
    }
    s->p = p;
    s->c = c;
    s->req = *req;
    memset(req, 0, sizeof(*req));
    s->rid = pc->id;
    s->t0 = pc->t0;
    s->created = cl_proxy_wall_ms() / 1000;
    cl_proxy_new_id(s->id, sizeof(s->id));
    cl_buf_init(&s->q, CL_PROXY_MAX_SSE_QUEUE, CL_BUF_SECURE);
    cl_client_result_init(&s->res);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->th, NULL, cl_proxy_stream_main, s) != 0) {
        s->rc = CL_E_NET_INTERNAL;
        cl_proxy_stream_free(s);
        return cl_proxy_fail(conn, 500, "server_error", "internal", "cannot start a thread");
    }
    /* The status waits for the first piece: a refusal before it is a plain error. */
    pthread_mutex_lock(&s->mu);
    while (!s->started && !s->done)
        pthread_cond_wait(&s->cv, &s->mu);
    bool failed = !s->started;
    pthread_mutex_unlock(&s->mu);
    if (failed) {
        pthread_join(s->th, NULL);
        struct cl_proxy_error e;
        cl_proxy_error_from(s->rc == CL_OK ? CL_E_NET_CLIENT_RESPONSE : s->rc, &s->res, &e);
        enum MHD_Result ret = cl_proxy_send_error(conn, &e);
        cl_proxy_stream_free(s);
        return ret;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, cl_proxy_stream_read, s, cl_proxy_stream_done);
    if (!r) {
        cl_proxy_stream_done(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    cl_proxy_common_headers(r);
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result cl_proxy_chat(cl_proxy *p, struct MHD_Connection *conn, struct cl_proxy_conn *pc)
{
    struct cl_proxy_error e;
    struct cl_buf req, out;
    bool stream = false;
    cl_client *c = NULL;
    enum MHD_Result ret;
    cl_buf_init(&req, p->cfg.max_request + 4096, CL_BUF_SECURE);
    cl_buf_init(&out, CL_CLIENT_MAX_ANSWER * 2 + 4096, CL_BUF_SECURE);
    struct cl_client_result res;
    cl_client_result_init(&res);
    cl_err rc = cl_proxy_request_check(pc->body.data, pc->body.len, p->cfg.model_id, &req, &stream, &e);
    if (rc != CL_OK) {
        if (rc != CL_E_NET_PROXY_REQUEST)
            cl_proxy_error_from(rc, NULL, &e);
        CL_LOG(CL_LOG_INFO, "proxy_chat_refused", CL_LOG_ID("id", &pc->id), CL_LOG_SIZE("request", pc->body.len),
               CL_LOG_COUNT("status", e.status), CL_LOG_ERR(rc));
        ret = cl_proxy_send_error(conn, &e);
        goto done;
    }
    rc = cl_proxy_client_get(p, &c);
    if (rc != CL_OK) {
        cl_proxy_error_from(rc, NULL, &e);
        CL_LOG(CL_LOG_WARN, "proxy_chat_refused", CL_LOG_ID("id", &pc->id), CL_LOG_SIZE("request", pc->body.len),
               CL_LOG_COUNT("status", e.status), CL_LOG_ERR(rc));
        ret = cl_proxy_send_error(conn, &e);
        goto done;
    }
    if (stream) {
        ret = cl_proxy_chat_stream(p, conn, c, &req, pc);
        goto done;
    }
    unsigned before = cl_client_attestation(c)->count;
    rc = cl_client_chat_json(c, req.data, req.len, NULL, NULL, &res);
    cl_proxy_note(p, c, before, rc, false);
    cl_proxy_client_put(p, c);
    char id[48];
    cl_proxy_new_id(id, sizeof(id));
    if (rc == CL_OK)
        rc = cl_proxy_completion_json(id, cl_proxy_wall_ms() / 1000, p->cfg.model_id, &res, &out);
    CL_LOG(CL_LOG_INFO, "proxy_chat", CL_LOG_ID("id", &pc->id), CL_LOG_LIT("mode", "whole"),
           CL_LOG_SIZE("request", req.len), CL_LOG_SIZE("answer", res.content.len),
           CL_LOG_US("elapsed", cl_now_us() - pc->t0), CL_LOG_ERR(rc));
    if (rc != CL_OK) {
        cl_proxy_error_from(rc, &res, &e);
        ret = cl_proxy_send_error(conn, &e);
        goto done;
    }
    ret = cl_proxy_send_buf(conn, MHD_HTTP_OK, "application/json", &out);
done:
    cl_client_result_free(&res);
    cl_buf_free(&req);
    cl_buf_free(&out);
    return ret;
}

/* ---- routing and access checks ---- */

/* With a loopback listener, only Host: 127.0.0.1:PORT, localhost:PORT or
 * [::1]:PORT: a page elsewhere that rebinds its DNS name to 127.0.0.1 sends
 * its own name and is refused. */
static bool cl_proxy_host_ok(const cl_proxy *p, const char *host)
{
    if (!host)
        return false;
    char want[32];
    snprintf(want, sizeof(want), ":%u", (unsigned)p->port);
    const char *names[] = {"127.0.0.1", "localhost", "[::1]"};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(names[i]);
        if (!strncasecmp(host, names[i], l) && !strcmp(host + l, want))
            return true;
    }
    return false;
}

static bool cl_proxy_token_ok(const cl_proxy *p, const char *auth)
{
    uint8_t d[32];
    if (!auth || strncasecmp(auth, "Bearer ", 7))
        return false;
    const char *t = auth + 7;
    if (cl_sha256(t, strnlen(t, 4096), d) != CL_OK)
        return false;
    bool ok = cl_ct_equal(d, p->cfg.token_sha256, sizeof(d));
    cl_wipe(d, sizeof(d));
    return ok;
}

static enum MHD_Result cl_proxy_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                       const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    cl_proxy *p = cls;
    struct cl_proxy_conn *pc = *con_cls;
    if (!pc) {
        pc = calloc(1, sizeof(*pc));
        if (!pc)
            return MHD_NO;
        cl_buf_init(&pc->body, p->cfg.max_request, CL_BUF_SECURE);
        cl_reqid_new(&pc->id);
        pc->t0 = cl_now_us();
        *con_cls = pc;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > p->cfg.max_request)
            pc->too_large = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!pc->too_large && cl_buf_append(&pc->body, upload, *upload_size) != CL_OK) {
            pc->too_large = true;
            cl_buf_free(&pc->body);
            cl_buf_init(&pc->body, p->cfg.max_request, CL_BUF_SECURE);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (p->cfg.loopback && !cl_proxy_host_ok(p, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host")))
        return cl_proxy_fail(conn, 403, "permission_error", "host_refused",
                             "the Host header must name this loopback proxy (127.0.0.1, localhost or [::1] with "
                             "its port)");
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (origin) {
        const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
        if (!host || strncmp(origin, "http://", 7) || strcasecmp(origin + 7, host))
            return cl_proxy_fail(conn, 403, "permission_error", "origin_refused",
                                 "cross-origin requests are refused: only the proxy's own page may call it");
    }
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (get && !strcmp(url, "/"))
        return cl_proxy_send_static(conn, cl_proxy_page_html, cl_proxy_page_html_len, "text/html; charset=utf-8",
                                    true);
    if (get && !strcmp(url, "/app.js"))
        return cl_proxy_send_static(conn, cl_proxy_page_js, cl_proxy_page_js_len, "text/javascript; charset=utf-8",
                                    false);
    if (get && !strcmp(url, "/app.css"))
        return cl_proxy_send_static(conn, cl_proxy_page_css, cl_proxy_page_css_len, "text/css; charset=utf-8", false);
    if (p->cfg.has_token && !cl_proxy_token_ok(p, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"))) {
        CL_LOG(CL_LOG_WARN, "proxy_unauthorized", CL_LOG_ID("id", &pc->id));
        return cl_proxy_fail(conn, 401, "authentication_error", "invalid_api_key",
                             "a valid bearer token is required (Authorization: Bearer ...)");
    }
    if (!strcmp(url, "/v1/chat/completions")) {
        if (strcmp(method, "POST"))
            return cl_proxy_fail(conn, 405, "invalid_request_error", "method_not_allowed",
                                 "/v1/chat/completions takes POST");
        if (pc->too_large) {
            CL_LOG(CL_LOG_INFO, "proxy_chat_refused", CL_LOG_ID("id", &pc->id), CL_LOG_COUNT("status", 413));
            char msg[128];
            snprintf(msg, sizeof(msg), "the request body is larger than the proxy's limit of %zu bytes",
                     p->cfg.max_request);
            return cl_proxy_fail(conn, 413, "invalid_request_error", "request_too_large", msg);
        }
        return cl_proxy_chat(p, conn, pc);
    }
    if (get && !strcmp(url, "/v1/models"))
        return cl_proxy_models(p, conn);
    if (get && !strncmp(url, "/v1/models/", 11)) {
        if (strcmp(url + 11, p->cfg.model_id))
            return cl_proxy_fail(conn, 404, "invalid_request_error", "model_not_found", "no such model");
        return cl_proxy_models(p, conn);
    }
    if (get && !strcmp(url, "/v1/attestation"))
        return cl_proxy_attestation(p, conn);
    return cl_proxy_fail(conn, 404, "invalid_request_error", "unknown_url", "unknown URL or method");
}

static void cl_proxy_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                               enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct cl_proxy_conn *pc = *con_cls;
    if (!pc)
        return;
    cl_buf_free(&pc->body);
    free(pc);
    *con_cls = NULL;
}

cl_err cl_proxy_start(const struct cl_proxy_config *cfg, cl_proxy **out)
{
    cl_err rc = CL_OK;
    cl_proxy *p = calloc(1, sizeof(*p));
    CL_ENSURE(p, CL_E_CORE_NOMEM);
    pthread_mutex_init(&p->mu, NULL);
    p->cfg = *cfg;
    if (!p->cfg.max_request)
        p->cfg.max_request = CL_PROXY_MAX_REQUEST_DEFAULT;
    p->trust = *cfg->trust;
    p->trust.root_der = malloc(cfg->trust->root_len);
    CL_ENSURE(p->trust.root_der, CL_E_CORE_NOMEM);
    memcpy(p->trust.root_der, cfg->trust->root_der, cfg->trust->root_len);
    p->cfg.trust = &p->trust;
    p->cfg.credential = NULL;
    if (cfg->credential) {
        CL_ENSURE_D(cfg->credential_len >= 16 && cfg->credential_len <= 512, CL_E_CORE_INVALID_ARG,
                    "credential of %zu characters (16..512)", cfg->credential_len);
        CL_GUARD(cl_secmem_alloc(cfg->credential_len + 1, (void **)&p->cred));
        memcpy(p->cred, cfg->credential, cfg->credential_len);
        p->cred[cfg->credential_len] = 0;
        p->cred_len = cfg->credential_len;
    }
    CL_ENSURE_D(p->cfg.loopback || p->cfg.has_token, CL_E_NET_PROXY_LISTEN,
                "a non-loopback address needs a bearer token");
    bool v6 = cfg->listen.ss_family == AF_INET6;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    p->d = MHD_start_daemon(flags, 0, NULL, NULL, cl_proxy_access, p, MHD_OPTION_SOCK_ADDR,
                            (const struct sockaddr *)&p->cfg.listen, MHD_OPTION_NOTIFY_COMPLETED, cl_proxy_completed,
                            p, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)64, MHD_OPTION_END);
    CL_ENSURE_D(p->d, CL_E_NET_PROXY_LISTEN, "libmicrohttpd could not listen (address in use?)");
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(p->d, MHD_DAEMON_INFO_BIND_PORT);
    p->port = di ? di->port : 0;
    /* Attest once now, so /v1/attestation and the page have something to show. */
    cl_client *c = NULL;
    if (cl_proxy_client_get(p, &c) == CL_OK)
        cl_proxy_client_put(p, c);
    *out = p;
    p = NULL;
out:
    cl_proxy_stop(p);
    return rc;
}

uint16_t cl_proxy_port(const cl_proxy *p) { return p->port; }

void cl_proxy_stop(cl_proxy *p)
{
    if (!p)
        return;
    if (p->d)
        MHD_stop_daemon(p->d);
    for (size_t i = 0; i < p->npool; i++)
        cl_client_free(p->pool[i]);
    cl_trust_free(&p->trust);
    if (p->cred) {
        cl_wipe(p->cred, p->cred_len);
        cl_secmem_free(p->cred);
    }
    pthread_mutex_destroy(&p->mu);
    cl_wipe(p, sizeof(*p));
    free(p);
}

cl_err cl_proxy_parse_listen(const char *addr, struct sockaddr_storage *ss, bool *loopback)
{
    return cl_listen_parse(addr, CL_E_NET_PROXY_LISTEN, ss, NULL, loopback);
}
