/* Client library against an in-process fake gateway: a libmicrohttpd server
 * that signs attestation documents with the simulated signer and answers
 * OHTTP with canned chat completions (streamed or not). Counts requests so
 * the tests can show that nothing is sent before attestation passes. */
#include "testutil.h"

#include <microhttpd.h>
#include <jansson.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/bhttp.h"
#include "cloister/client.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/hpke.h"
#include "cloister/log.h"
#include "cloister/ohttp.h"

#define T_KEY_ARN "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001"

enum fake_mode {
    FAKE_NONE = 0,
    FAKE_WRONG_NONCE,
    FAKE_WRONG_PCR,
    FAKE_WRONG_MODEL,
    FAKE_OTHER_ROOT,
    FAKE_STALE,
    FAKE_DEBUG,
    FAKE_BAD_USER_DATA,
    FAKE_NO_KEY,
    FAKE_TAMPER,      /* one byte of the OHTTP answer flipped */
    FAKE_TRUNCATE,    /* streamed answer without its final chunk, cleanly ended */
    FAKE_CUT,         /* streamed answer: connection dropped mid-way */
    FAKE_ALWAYS_400,  /* gateway refuses every request (key unchanged) */
    FAKE_ENCLAVE_429, /* encrypted error answer */
    FAKE_MODE_COUNT
};

static const char *const answer_tokens[] = {"Rest", ",", " fluids", " and", " paracetamol", "."};
#define N_TOKENS (sizeof(answer_tokens) / sizeof(answer_tokens[0]))

struct fake {
    struct MHD_Daemon *d;
    char url[64];
    char dir[64];
    cl_attest_signer *signer, *other;
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    uint8_t model[32];
    struct cl_ohttp_keyconfig kc;
    cl_pkey *sk;
    struct cl_buf kc_bytes;
    _Atomic int mode;
    atomic_int n_attest, n_ohttp;
    char last_request[4096]; /* JSON the enclave side decrypted */
    bool last_stream;
};

static struct fake F;

struct conn {
    bool is_ohttp;
    bool chunked;
    struct cl_buf body;
};

struct stream_ctx {
    struct cl_buf data;
    size_t off;
    bool cut;
};

static void fake_set_key(uint8_t key_id)
{
    cl_pkey_free(F.sk);
    F.sk = NULL;
    memset(&F.kc, 0, sizeof(F.kc));
    F.kc.key_id = key_id;
    F.kc.kem = CL_HPKE_KEM_X25519_SHA256;
    F.kc.n_suites = 2;
    F.kc.suites[0].kdf = CL_HPKE_KDF_SHA256;
    F.kc.suites[0].aead = CL_HPKE_AEAD_AES256GCM;
    F.kc.suites[1].kdf = CL_HPKE_KDF_SHA256;
    F.kc.suites[1].aead = CL_HPKE_AEAD_CHACHA20POLY1305;
    assert_ok(cl_pkey_generate(CL_PKEY_X25519, &F.sk));
    assert_ok(cl_x25519_public_raw(F.sk, F.kc.pk));
    cl_buf_reset(&F.kc_bytes);
    assert_ok(cl_ohttp_keyconfig_encode(&F.kc, &F.kc_bytes));
}

static enum MHD_Result fake_send(struct MHD_Connection *conn, unsigned status, const char *ctype, const void *p,
                                 size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)(n ? p : ""), MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static uint64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static enum MHD_Result fake_attest(struct MHD_Connection *conn)
{
    atomic_fetch_add(&F.n_attest, 1);
    const char *hex = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "nonce");
    uint8_t nonce[64];
    size_t nl = hex ? strlen(hex) / 2 : 0;
    if (!hex || nl < 16 || nl > 64 || cl_hex_decode_fixed(hex, strlen(hex), nonce, nl) != CL_OK)
        return fake_send(conn, 400, "application/json", "{\"error\":\"bad nonce\"}", 21);
    int mode = atomic_load(&F.mode);
    struct cl_attest_user_data ud;
    memset(&ud, 0, sizeof(ud));
    memcpy(ud.model_sha256, F.model, 32);
    memset(ud.config_sha256, 0xc0, 32);
    memset(ud.audit_key, 0xa0, 97);
    ud.audit_key_len = 97;
    snprintf(ud.kms_key_arn, sizeof(ud.kms_key_arn), "%s", T_KEY_ARN);
    snprintf(ud.kms_endpoint, sizeof(ud.kms_endpoint), "https://kms.example");
    if (mode == FAKE_WRONG_MODEL)
        ud.model_sha256[5] ^= 1;
    struct cl_buf udb, doc;
    cl_buf_init(&udb, 4096, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_attest_user_data_encode(&ud, &udb));
    if (mode == FAKE_BAD_USER_DATA)
        udb.data[0] = 0xa3; /* claims three pairs: malformed */
    if (mode == FAKE_WRONG_NONCE)
        nonce[0] ^= 0x80;
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    memcpy(pcr, F.pcr, sizeof(pcr));
    if (mode == FAKE_WRONG_PCR)
        pcr[2][47] ^= 1;
    if (mode == FAKE_DEBUG)
        memset(pcr, 0, 3 * CL_ATTEST_PCR_LEN);
    cl_attest_signer *s = mode == FAKE_OTHER_ROOT ? F.other : F.signer;
    cl_attest_signer_set_pcrs(s, 0x7, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    uint64_t ts = now_ms() - (mode == FAKE_STALE ? 600 * 1000 : 0);
    const uint8_t *pk = mode == FAKE_NO_KEY ? NULL : F.kc_bytes.data;
    size_t pkl = mode == FAKE_NO_KEY ? 0 : F.kc_bytes.len;
    assert_ok(cl_attest_signer_sign_at(s, ts, pk, pkl, udb.data, udb.len, nonce, nl, &doc));
    enum MHD_Result ret = fake_send(conn, 200, "application/cbor", doc.data, doc.len);
    cl_buf_free(&udb);
    cl_buf_free(&doc);
    return ret;
}

static ssize_t fake_stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_ctx *s = cls;
    (void)pos;
    if (s->cut && s->off >= s->data.len / 2)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->off >= s->data.len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* Small pieces so the client sees chunks split at odd places. */
    size_t n = s->data.len - s->off;
    if (n > 13)
        n = 13;
    if (n > max)
        n = max;
    memcpy(buf, s->data.data + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void fake_stream_free(void *cls)
{
    struct stream_ctx *s = cls;
    cl_buf_free(&s->data);
    free(s);
}

static void fake_answer_json(struct cl_buf *out, int mode)
{
    if (mode == FAKE_ENCLAVE_429) {
        assert_ok(cl_buf_append_str(out, "{\"error\":{\"message\":\"too many sessions\",\"type\":\"rate_limit\","
                                         "\"code\":\"sessions\"}}"));
        return;
    }
    assert_ok(cl_buf_append_str(out, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
                                     "\"model\":\"tiny\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                                     "\"assistant\",\"content\":\""));
    for (size_t i = 0; i < N_TOKENS; i++)
        assert_ok(cl_buf_append_str(out, answer_tokens[i]));
    assert_ok(cl_buf_append_str(out, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":11,"
                                     "\"completion_tokens\":6,\"total_tokens\":17}}"));
}

static enum MHD_Result fake_ohttp(struct MHD_Connection *conn, struct conn *c)
{
    int mode = atomic_load(&F.mode);
    struct cl_buf req, res, enc;
    cl_buf_init(&req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&res, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 20, CL_BUF_NONE);
    cl_ohttp_server *s = NULL;
    enum MHD_Result ret;
    if (mode == FAKE_ALWAYS_400 ||
        cl_ohttp_server_decap(&F.kc, F.sk, c->chunked, c->body.data, c->body.len, &req, &s) != CL_OK) {
        ret = fake_send(conn, 400, "application/json", "{\"error\":\"enclave refused the request\"}", 39);
        goto out;
    }
    struct cl_bhttp_msg m;
    assert_ok(cl_bhttp_decode(req.data, req.len, 1 << 20, &m));
    assert_false(m.is_response);
    assert_int_equal(m.path_len, strlen("/v1/chat/completions"));
    assert_memory_equal(m.path, "/v1/chat/completions", m.path_len);
    const struct cl_bhttp_field *ct = cl_bhttp_find(&m, "content-type");
    assert_non_null(ct);
    size_t cl = m.content_len < sizeof(F.last_request) - 1 ? m.content_len : sizeof(F.last_request) - 1;
    memcpy(F.last_request, m.content, cl);
    F.last_request[cl] = 0;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)m.content, m.content_len, 0, &jerr);
    assert_non_null(j);
    F.last_stream = json_is_true(json_object_get(j, "stream"));
    json_decref(j);
    assert_int_equal(F.last_stream, c->chunked);
    if (!c->chunked) {
        struct cl_buf body;
        cl_buf_init(&body, 1 << 16, CL_BUF_NONE);
        fake_answer_json(&body, mode);
        struct cl_bhttp_msg r;
        memset(&r, 0, sizeof(r));
        r.is_response = 1;
        r.status = mode == FAKE_ENCLAVE_429 ? 429 : 200;
        r.n_fields = 1;
        r.fields[0] = (struct cl_bhttp_field){"content-type", 12, "application/json", 16};
        r.content = body.data;
        r.content_len = body.len;
        assert_ok(cl_bhttp_encode(&r, &res));
        cl_buf_free(&body);
        assert_ok(cl_ohttp_server_encap(s, res.data, res.len, &enc));
        if (mode == FAKE_TAMPER)
            enc.data[enc.len - 5] ^= 0x01;
        ret = fake_send(conn, 200, "message/ohttp-res", enc.data, enc.len);
        goto out;
    }
    if (mode == FAKE_ENCLAVE_429) {
        /* An error answered on the streaming path: a complete error response. */
        struct cl_buf body;
        cl_buf_init(&body, 1 << 16, CL_BUF_NONE);
        fake_answer_json(&body, mode);
        struct cl_bhttp_field ef = {"content-type", 12, "application/json", 16};
        assert_ok(cl_bhttp_stream_head(429, &ef, 1, &res));
        assert_ok(cl_bhttp_stream_data(body.data, body.len, &res));
        assert_ok(cl_bhttp_stream_end(&res));
        assert_ok(cl_ohttp_server_chunk(s, res.data, res.len, true, &enc));
        cl_buf_free(&body);
        ret = fake_send(conn, 200, "message/ohttp-chunked-res", enc.data, enc.len);
        goto out;
    }
    struct stream_ctx *sc = calloc(1, sizeof(*sc));
    assert_non_null(sc);
    cl_buf_init(&sc->data, 1 << 20, CL_BUF_NONE);
    sc->cut = mode == FAKE_CUT;
    struct cl_bhttp_field f = {"content-type", 12, "text/event-stream", 17};
    assert_ok(cl_bhttp_stream_head(200, &f, 1, &res));
    assert_ok(cl_ohttp_server_chunk(s, res.data, res.len, false, &sc->data));
    for (size_t i = 0; i < N_TOKENS; i++) {
        char ev[256];
        snprintf(ev, sizeof(ev),
                 "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
                 answer_tokens[i]);
        cl_buf_reset(&res);
        assert_ok(cl_bhttp_stream_data(ev, strlen(ev), &res));
        size_t before = sc->data.len;
        assert_ok(cl_ohttp_server_chunk(s, res.data, res.len, false, &sc->data));
        if (mode == FAKE_TAMPER && i == 2)
            sc->data.data[before + 3] ^= 0x40;
    }
    cl_buf_reset(&res);
    const char *last = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                       "\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":11,"
                       "\"completion_tokens\":6,\"total_tokens\":17}}\n\ndata: [DONE]\n\n";
    assert_ok(cl_bhttp_stream_data(last, strlen(last), &res));
    assert_ok(cl_bhttp_stream_end(&res));
    if (mode != FAKE_TRUNCATE)
        assert_ok(cl_ohttp_server_chunk(s, res.data, res.len, true, &sc->data));
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, fake_stream_cb, sc,
                                                               fake_stream_free);
    MHD_add_response_header(r, "Content-Type", "message/ohttp-chunked-res");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
out:
    cl_ohttp_server_free(s);
    cl_buf_free(&req);
    cl_buf_free(&res);
    cl_buf_free(&enc);
    return ret;
}

static enum MHD_Result fake_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        cl_buf_init(&c->body, 1 << 20, CL_BUF_NONE);
        *con_cls = c;
        if (!strcmp(method, "POST") && !strcmp(url, "/v1/ohttp")) {
            c->is_ohttp = true;
            atomic_fetch_add(&F.n_ohttp, 1);
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
            c->chunked = ct && !strcmp(ct, "message/ohttp-chunked-req");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (cl_buf_append(&c->body, upload, *upload_size) != CL_OK)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(method, "GET") && !strcmp(url, "/v1/attestation"))
        return fake_attest(conn);
    if (c->is_ohttp)
        return fake_ohttp(conn, c);
    return fake_send(conn, 404, "application/json", "{\"error\":\"not found\"}", 21);
}

static void fake_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)conn;
    (void)t;
    struct conn *c = *con_cls;
    if (c) {
        cl_buf_free(&c->body);
        free(c);
    }
    *con_cls = NULL;
}

static void make_trust(struct cl_trust *t, const cl_attest_signer *s)
{
    memset(t, 0, sizeof(*t));
    struct cl_buf root;
    cl_buf_init(&root, 8192, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(s, &root));
    t->root_der = root.data;
    t->root_len = root.len;
    t->pcr_present = 0x7;
    memcpy(t->pcr, F.pcr, sizeof(F.pcr));
    memcpy(t->model_sha256, F.model, 32);
    t->max_age_seconds = 300;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    snprintf(F.dir, sizeof(F.dir), "/tmp/cl-test-client-XXXXXX");
    if (!mkdtemp(F.dir))
        return -1;
    char sim[256];
    snprintf(sim, sizeof(sim), "%s/sim", F.dir);
    /* Serve mode: fakes started by one script share a root. */
    const char *shared = getenv("CL_FAKE_SIM_DIR");
    struct stat st;
    if (shared)
        snprintf(sim, sizeof(sim), "%s", shared);
    if ((!shared || stat(sim, &st) != 0) && cl_attest_sim_init(sim) != CL_OK)
        return -1;
    if (cl_attest_signer_load(sim, &F.signer) != CL_OK ||
        cl_attest_signer_ephemeral(&F.other) != CL_OK)
        return -1;
    for (int i = 0; i < 3; i++)
        memset(F.pcr[i], 0x11 * (i + 1), CL_ATTEST_PCR_LEN);
    memset(F.model, 0x5a, sizeof(F.model));
    cl_buf_init(&F.kc_bytes, 1024, CL_BUF_NONE);
    fake_set_key(1);
    F.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_access, NULL,
                           MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL, MHD_OPTION_END);
    if (!F.d)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(F.d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(F.url, sizeof(F.url), "http://127.0.0.1:%u", (unsigned)di->port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(F.d);
    cl_attest_signer_free(F.signer);
    cl_attest_signer_free(F.other);
    cl_pkey_free(F.sk);
    cl_buf_free(&F.kc_bytes);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", F.dir);
    if (system(cmd) != 0)
        return -1;
    return 0;
}

static void reset_counts(int mode)
{
    atomic_store(&F.mode, mode);
    atomic_store(&F.n_attest, 0);
    atomic_store(&F.n_ohttp, 0);
}

struct tokens {
    char text[512];
    size_t len;
    int calls;
};

static cl_err on_token(void *arg, const char *p, size_t n)
{
    struct tokens *t = arg;
    assert_true(t->len + n < sizeof(t->text));
    memcpy(t->text + t->len, p, n);
    t->len += n;
    t->text[t->len] = 0;
    t->calls++;
    return CL_OK;
}

static const struct cl_client_msg question[] = {
    {.role = "system", .content = "You are a careful medical assistant.", .content_len = 36},
    {.role = "user", .content = "What helps with a \"mild\" fever?\n", .content_len = 32},
};

static cl_err ask(cl_client *c, bool stream, struct cl_client_result *res, struct tokens *t)
{
    struct cl_client_params p;
    memset(&p, 0, sizeof(p));
    p.has_max_tokens = true;
    p.max_tokens = 32;
    p.has_seed = true;
    p.seed = 7;
    p.has_temperature = true;
    p.temperature = 0.5;
    return cl_client_chat(c, question, 2, &p, stream ? on_token : NULL, t, res);
}

static void expect_answer(const struct cl_client_result *res)
{
    const char *want = "Rest, fluids and paracetamol.";
    assert_int_equal(res->content.len, strlen(want));
    assert_memory_equal(res->content.data, want, strlen(want));
    assert_string_equal(res->finish_reason, "stop");
    assert_true(res->has_usage);
    assert_int_equal(res->prompt_tokens, 11);
    assert_int_equal(res->completion_tokens, 6);
    assert_int_equal(res->total_tokens, 17);
}

static void test_happy(void **state)
{
    (void)state;
    reset_counts(FAKE_NONE);
    /* Everything the client logs, at the most verbose level. */
    char *logbuf = NULL;
    size_t loglen = 0;
    FILE *logf = open_memstream(&logbuf, &loglen);
    assert_non_null(logf);
    cl_log_set_stream(logf);
    cl_log_set_level(CL_LOG_DEBUG);
    struct cl_trust t;
    make_trust(&t, F.signer);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, &t, &c));
    assert_null(cl_client_attestation(c));
    struct cl_client_result res;
    cl_client_result_init(&res);
    assert_ok(ask(c, false, &res, NULL));
    expect_answer(&res);
    assert_true(res.content.flags & CL_BUF_SECURE);
    assert_non_null(strstr(F.last_request, "\"stream\":false"));
    assert_non_null(strstr(F.last_request, "\"max_tokens\":32"));
    assert_non_null(strstr(F.last_request, "\"seed\":7"));
    assert_non_null(strstr(F.last_request, "a \\\"mild\\\" fever?\\n"));
    const struct cl_client_attestation *a = cl_client_attestation(c);
    assert_non_null(a);
    assert_int_equal(a->count, 1);
    assert_memory_equal(a->pcr[1], F.pcr[1], CL_ATTEST_PCR_LEN);
    assert_memory_equal(a->user_data.model_sha256, F.model, 32);
    assert_int_equal(a->user_data.config_sha256[0], 0xc0);
    assert_int_equal(a->key.key_id, F.kc.key_id);
    assert_false(a->debug);
    assert_true(strlen(a->module_id) > 0);
    assert_true(a->timestamp_ms > 0);

    /* Streamed, on the same attestation. */
    struct tokens tk;
    memset(&tk, 0, sizeof(tk));
    assert_ok(ask(c, true, &res, &tk));
    expect_answer(&res);
    assert_string_equal(tk.text, "Rest, fluids and paracetamol.");
    assert_int_equal(tk.calls, (int)N_TOKENS);
    assert_non_null(strstr(F.last_request, "\"stream\":true"));
    assert_int_equal(atomic_load(&F.n_attest), 1);
    assert_int_equal(atomic_load(&F.n_ohttp), 2);
    cl_client_result_free(&res);
    cl_client_free(c);
    cl_trust_free(&t);
    cl_log_set_stream(stderr);
    cl_log_set_level(CL_LOG_WARN);
    fclose(logf);
    assert_non_null(strstr(logbuf, "client_attested"));
    assert_null(strstr(logbuf, "fever"));
    assert_null(strstr(logbuf, "paracetamol"));
    assert_null(strstr(logbuf, "medical"));
    free(logbuf);
}

/* Each bad document is refused before any OHTTP request leaves. */
static void refused(int mode, cl_err want, struct cl_trust *t)
{
    reset_counts(mode);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, t, &c));
    struct cl_client_result res;
    cl_client_result_init(&res);
    struct tokens tk;
    memset(&tk, 0, sizeof(tk));
    assert_err(ask(c, mode % 2 == 0, &res, &tk), want);
    assert_int_equal(res.content.len, 0);
    assert_int_equal(atomic_load(&F.n_attest), 1);
    assert_int_equal(atomic_load(&F.n_ohttp), 0);
    assert_null(cl_client_attestation(c));
    cl_client_result_free(&res);
    cl_client_free(c);
}

static void test_refusals(void **state)
{
    (void)state;
    struct cl_trust t;
    make_trust(&t, F.signer);
    refused(FAKE_WRONG_NONCE, CL_E_ATTEST_NONCE, &t);
    refused(FAKE_WRONG_PCR, CL_E_ATTEST_PCR_MISMATCH, &t);
    refused(FAKE_WRONG_MODEL, CL_E_NET_CLIENT_MODEL, &t);
    refused(FAKE_OTHER_ROOT, CL_E_ATTEST_ROOT_MISMATCH, &t);
    refused(FAKE_STALE, CL_E_ATTEST_STALE, &t);
    refused(FAKE_DEBUG, CL_E_ATTEST_DEBUG, &t);
    refused(FAKE_BAD_USER_DATA, CL_E_ATTEST_USER_DATA_MALFORMED, &t);
    refused(FAKE_NO_KEY, CL_E_NET_CLIENT_PUBLIC_KEY, &t);
    /* Pins of the key service and configuration the enclave attests. */
    t.pin_kms = true;
    snprintf(t.kms_key_arn, sizeof(t.kms_key_arn), "arn:aws:kms:us-east-1:999988887777:key/other");
    refused(FAKE_NONE, CL_E_NET_CLIENT_KMS, &t);
    snprintf(t.kms_key_arn, sizeof(t.kms_key_arn), "%s", T_KEY_ARN);
    t.pin_kms_endpoint = true;
    snprintf(t.kms_endpoint, sizeof(t.kms_endpoint), "https://kms.operator.example");
    refused(FAKE_NONE, CL_E_NET_CLIENT_KMS, &t);
    snprintf(t.kms_endpoint, sizeof(t.kms_endpoint), "https://kms.example");
    t.pin_kms_ca = true; /* a CA is pinned, the enclave used none */
    memset(t.kms_ca_sha256, 0x11, 32);
    refused(FAKE_NONE, CL_E_NET_CLIENT_KMS, &t);
    t.kms_ca_none = true;
    t.pin_config = true;
    memset(t.config_sha256, 0xc1, 32);
    refused(FAKE_NONE, CL_E_NET_CLIENT_CONFIG, &t);
    t.pin_kms = t.pin_kms_endpoint = t.pin_kms_ca = t.kms_ca_none = t.pin_config = false;
    /* A projector pinned: this enclave loaded none. */
    t.pin_mmproj = true;
    memset(t.mmproj_sha256, 0x5a, 32);
    refused(FAKE_NONE, CL_E_NET_CLIENT_MODEL, &t);
    t.pin_mmproj = false;
    /* Another root pinned by the client: the genuine document is refused. */
    struct cl_trust t2;
    make_trust(&t2, F.other);
    refused(FAKE_NONE, CL_E_ATTEST_ROOT_MISMATCH, &t2);
    cl_trust_free(&t2);
    /* A debug document is accepted only when TRUST.json allows it (and pins zeros). */
    t.allow_debug = true;
    memset(t.pcr, 0, 3 * CL_ATTEST_PCR_LEN);
    reset_counts(FAKE_DEBUG);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, &t, &c));
    assert_ok(cl_client_attest(c));
    assert_true(cl_client_attestation(c)->debug);
    cl_client_free(c);
    cl_trust_free(&t);
}

static void test_tampered(void **state)
{
    (void)state;
    struct cl_trust t;
    make_trust(&t, F.signer);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, &t, &c));
    struct cl_client_result res;
    cl_client_result_init(&res);
    struct tokens tk;

    reset_counts(FAKE_TAMPER);
    assert_err(ask(c, false, &res, NULL), CL_E_PROTO_OHTTP_AUTH);
    memset(&tk, 0, sizeof(tk));
    assert_err(ask(c, true, &res, &tk), CL_E_PROTO_OHTTP_AUTH);
    assert_int_equal(tk.calls, 2); /* the pieces before the bad chunk, nothing after */

    reset_counts(FAKE_TRUNCATE);
    memset(&tk, 0, sizeof(tk));
    assert_err(ask(c, true, &res, &tk), CL_E_PROTO_OHTTP_TRUNCATED);

    reset_counts(FAKE_CUT);
    memset(&tk, 0, sizeof(tk));
    assert_err(ask(c, true, &res, &tk), CL_E_NET_CLIENT_STREAM_INCOMPLETE);

    /* An encrypted error from the enclave. */
    reset_counts(FAKE_ENCLAVE_429);
    assert_err(ask(c, false, &res, NULL), CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(res.status, 429);
    assert_string_equal(res.error_type, "rate_limit");
    assert_string_equal(res.error_message, "too many sessions");
    memset(&tk, 0, sizeof(tk));
    cl_client_result_free(&res);
    cl_client_result_init(&res);
    assert_err(ask(c, true, &res, &tk), CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(res.status, 429);
    assert_string_equal(res.error_type, "rate_limit");
    assert_int_equal(tk.calls, 0);

    /* Every failure above kept the same attestation: one document. */
    reset_counts(FAKE_NONE);
    assert_ok(ask(c, false, &res, NULL));
    expect_answer(&res);
    assert_int_equal(cl_client_attestation(c)->count, 1);
    cl_client_result_free(&res);
    cl_client_free(c);
    cl_trust_free(&t);
}

static void test_key_rotation(void **state)
{
    (void)state;
    struct cl_trust t;
    make_trust(&t, F.signer);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, &t, &c));
    struct cl_client_result res;
    cl_client_result_init(&res);
    reset_counts(FAKE_NONE);
    assert_ok(cl_client_attest(c));
    uint8_t old_id = cl_client_attestation(c)->key.key_id;

    /* The enclave restarts with a new key: refused once, re-attested, retried. */
    fake_set_key((uint8_t)(old_id + 1));
    struct tokens tk;
    memset(&tk, 0, sizeof(tk));
    assert_ok(ask(c, true, &res, &tk));
    expect_answer(&res);
    assert_int_equal(atomic_load(&F.n_attest), 2);
    assert_int_equal(atomic_load(&F.n_ohttp), 2);
    assert_int_equal(cl_client_attestation(c)->count, 2);
    assert_int_equal(cl_client_attestation(c)->key.key_id, old_id + 1);

    /* Same again, not streamed. */
    fake_set_key((uint8_t)(old_id + 2));
    assert_ok(ask(c, false, &res, NULL));
    expect_answer(&res);
    assert_int_equal(cl_client_attestation(c)->count, 3);

    /* Refused although the attested key did not change: an error, no loop. */
    reset_counts(FAKE_ALWAYS_400);
    assert_err(ask(c, false, &res, NULL), CL_E_NET_CLIENT_KEY_UNCHANGED);
    assert_int_equal(atomic_load(&F.n_attest), 1);
    assert_int_equal(atomic_load(&F.n_ohttp), 1);

    /* The key changed but the new document fails: the request is not
     * resent and the old attestation stays. */
    fake_set_key((uint8_t)(old_id + 3));
    reset_counts(FAKE_WRONG_PCR);
    assert_err(ask(c, false, &res, NULL), CL_E_ATTEST_PCR_MISMATCH);
    assert_int_equal(atomic_load(&F.n_attest), 1);
    assert_int_equal(atomic_load(&F.n_ohttp), 1);
    assert_int_equal(cl_client_attestation(c)->count, 4);
    reset_counts(FAKE_NONE);
    cl_client_free(c);
    cl_trust_free(&t);
}

static void test_http_errors(void **state)
{
    (void)state;
    struct cl_trust t;
    make_trust(&t, F.signer);
    cl_client *c = NULL;
    assert_err(cl_client_new("ftp://127.0.0.1", &t, &c), CL_E_NET_CLIENT_URL);
    assert_err(cl_client_new("http://", &t, &c), CL_E_NET_CLIENT_URL);
    assert_err(cl_client_new("http://a b", &t, &c), CL_E_NET_CLIENT_URL);
    assert_err(cl_client_new("http://host/?x", &t, &c), CL_E_NET_CLIENT_URL);
    /* Wrong path prefix: 404 from the host. */
    char url[128];
    snprintf(url, sizeof(url), "%s/prefix/", F.url);
    assert_ok(cl_client_new(url, &t, &c));
    assert_err(cl_client_attest(c), CL_E_NET_CLIENT_HTTP_STATUS);
    cl_client_free(c);
    /* Nothing listening. */
    assert_ok(cl_client_new("http://127.0.0.1:1", &t, &c));
    assert_err(cl_client_attest(c), CL_E_NET_CLIENT_HTTP);
    cl_client_free(c);
    cl_trust_free(&t);
}

/* A prepared request body goes to the enclave byte for byte (content parts
 * included); a bad body fails before anything is sent. */
static void test_chat_json(void **state)
{
    (void)state;
    reset_counts(FAKE_NONE);
    struct cl_trust t;
    make_trust(&t, F.signer);
    cl_client *c = NULL;
    assert_ok(cl_client_new(F.url, &t, &c));
    struct cl_client_result res;
    cl_client_result_init(&res);
    assert_err(cl_client_chat_json(c, (const uint8_t *)"", 0, NULL, NULL, &res), CL_E_CORE_INVALID_ARG);
    uint8_t *big = calloc(1, ((size_t)32 << 20) + 1);
    assert_non_null(big);
    assert_err(cl_client_chat_json(c, big, ((size_t)32 << 20) + 1, NULL, NULL, &res), CL_E_NET_CLIENT_LIMIT);
    free(big);
    assert_int_equal(atomic_load(&F.n_attest), 0);
    assert_int_equal(atomic_load(&F.n_ohttp), 0);
    static const char body[] =
        "{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"what?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}],"
        "\"stream\":true}";
    struct tokens tk;
    memset(&tk, 0, sizeof(tk));
    assert_ok(cl_client_chat_json(c, (const uint8_t *)body, sizeof(body) - 1, on_token, &tk, &res));
    expect_answer(&res);
    assert_string_equal(F.last_request, body);
    assert_int_equal(atomic_load(&F.n_attest), 1);
    cl_client_result_free(&res);
    cl_client_free(c);
    cl_trust_free(&t);
}

/* ---- TRUST.json ---- */

static void trust_json(char *out, size_t cap, const char *pem_json, const char *extra)
{
    char h0[97], h1[97], h2[97], m[65];
    cl_hex_encode(F.pcr[0], 48, h0);
    cl_hex_encode(F.pcr[1], 48, h1);
    cl_hex_encode(F.pcr[2], 48, h2);
    cl_hex_encode(F.model, 32, m);
    snprintf(out, cap,
             "{\"root_pem\": %s, \"pcrs\": {\"0\": \"%s\", \"1\": \"%s\", \"2\": \"%s\"}, "
             "\"model_sha256\": \"%s\"%s}",
             pem_json, h0, h1, h2, m, extra);
}

static void test_trust(void **state)
{
    (void)state;
    struct cl_trust t0, t;
    make_trust(&t0, F.signer);
    struct cl_buf enc;
    cl_buf_init(&enc, 1 << 16, CL_BUF_NONE);
    t0.allow_debug = true;
    t0.max_age_seconds = 60;
    assert_ok(cl_trust_encode(&t0, &enc));
    assert_ok(cl_trust_parse(enc.data, enc.len, &t));
    assert_int_equal(t.root_len, t0.root_len);
    assert_memory_equal(t.root_der, t0.root_der, t0.root_len);
    assert_int_equal(t.pcr_present, 7);
    assert_memory_equal(t.pcr, t0.pcr, sizeof(t.pcr));
    assert_memory_equal(t.model_sha256, F.model, 32);
    assert_int_equal(t.max_age_seconds, 60);
    assert_true(t.allow_debug);
    cl_trust_free(&t);

    /* The PEM as a JSON string, taken from the encoded file. */
    json_t *j = json_loadb((const char *)enc.data, enc.len, 0, NULL);
    assert_non_null(j);
    static char pem[8192];
    size_t pl = json_dumpb(json_object_get(j, "root_pem"), pem, sizeof(pem) - 1, JSON_ENCODE_ANY);
    assert_true(pl > 0 && pl < sizeof(pem) - 1);
    pem[pl] = 0;
    static char doc[16384];
    trust_json(doc, sizeof(doc), pem, "");
    assert_ok(cl_trust_parse((const uint8_t *)doc, strlen(doc), &t));
    assert_int_equal(t.max_age_seconds, CL_TRUST_MAX_AGE_DEFAULT);
    assert_false(t.allow_debug);
    cl_trust_free(&t);

    /* Load from a file. */
    char path[128];
    snprintf(path, sizeof(path), "%s/TRUST.json", F.dir);
    assert_ok(cl_file_write_atomic(path, doc, strlen(doc), 0644, 0));
    assert_ok(cl_trust_load(path, &t));
    cl_trust_free(&t);
    snprintf(path, sizeof(path), "%s/missing.json", F.dir);
    assert_int_not_equal(cl_trust_load(path, &t), CL_OK);

    const char *bad_extra[] = {
        ", \"max_age_seconds\": 0",        ", \"max_age_seconds\": 86401", ", \"max_age_seconds\": \"300\"",
        ", \"allow_debug\": 1",            ", \"unknown\": 1",             ", \"model_sha256\": \"00\"",
        ", \"pcrs\": {}",                  ", \"root_pem\": \"x\"",
    };
    for (size_t i = 0; i < sizeof(bad_extra) / sizeof(bad_extra[0]); i++) {
        trust_json(doc, sizeof(doc), pem, bad_extra[i]);
        assert_err(cl_trust_parse((const uint8_t *)doc, strlen(doc), &t), CL_E_NET_CLIENT_TRUST);
    }
    const char *bad[] = {
        "", "[]", "{", "{}", "{\"pcrs\":{}}", "null",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_err(cl_trust_parse((const uint8_t *)bad[i], strlen(bad[i]), &t), CL_E_NET_CLIENT_TRUST);
    /* Field-level checks by replacing parts of a good document. */
    char h[97];
    cl_hex_encode(F.pcr[0], 48, h);
    const char *variants[][2] = {
        {"\"0\": \"", "\"00\": \""}, /* leading zero */
        {"\"1\": \"", "\"32\": \""}, /* out of range, and PCR1 missing */
        {"\"2\": \"", "\"x\": \""},  /* not an index */
        {"-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATX-----"},
    };
    trust_json(doc, sizeof(doc), pem, "");
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        static char mod[16384];
        char *at = strstr(doc, variants[i][0]);
        assert_non_null(at);
        size_t pre = (size_t)(at - doc);
        snprintf(mod, sizeof(mod), "%.*s%s%s", (int)pre, doc, variants[i][1], at + strlen(variants[i][0]));
        assert_err(cl_trust_parse((const uint8_t *)mod, strlen(mod), &t), CL_E_NET_CLIENT_TRUST);
    }
    /* A PCR digit that is not hex. */
    {
        static char mod[16384];
        snprintf(mod, sizeof(mod), "%s", doc);
        char *at = strstr(mod, h);
        assert_non_null(at);
        at[10] = 'g';
        assert_err(cl_trust_parse((const uint8_t *)mod, strlen(mod), &t), CL_E_NET_CLIENT_TRUST);
    }
    /* Duplicate key. */
    trust_json(doc, sizeof(doc), pem, ", \"allow_debug\": false, \"allow_debug\": true");
    assert_err(cl_trust_parse((const uint8_t *)doc, strlen(doc), &t), CL_E_NET_CLIENT_TRUST);
    json_decref(j);
    cl_buf_free(&enc);
    cl_trust_free(&t0);
}

/* ---- user_data, request JSON, answers, SSE ---- */

static void test_user_data(void **state)
{
    (void)state;
    struct cl_attest_user_data u, back;
    memset(&u, 0, sizeof(u));
    memset(u.model_sha256, 1, 32);
    memset(u.config_sha256, 2, 32);
    memset(u.audit_key, 3, 120);
    u.audit_key_len = 120;
    snprintf(u.kms_key_arn, sizeof(u.kms_key_arn), "%s", T_KEY_ARN);
    snprintf(u.kms_endpoint, sizeof(u.kms_endpoint), "https://127.0.0.1:8443");
    u.has_kms_ca = true;
    memset(u.kms_ca_sha256, 4, 32);
    u.has_mmproj = true;
    memset(u.mmproj_sha256, 5, 32);
    struct cl_buf b;
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    assert_ok(cl_attest_user_data_encode(&u, &b));
    assert_true(b.len <= CL_ATTEST_MAX_DOC_FIELD);
    assert_ok(cl_attest_user_data_parse(b.data, b.len, &back));
    assert_memory_equal(&u, &back, sizeof(u));
    assert_err(cl_attest_user_data_parse(b.data, b.len - 1, &back), CL_E_ATTEST_USER_DATA_MALFORMED);
    assert_err(cl_attest_user_data_parse(b.data, 0, &back), CL_E_ATTEST_USER_DATA_MALFORMED);
    /* v = 2 (an older enclave) */
    assert_int_equal(b.data[3], 0x03);
    b.data[3] = 0x02;
    assert_err(cl_attest_user_data_parse(b.data, b.len, &back), CL_E_ATTEST_USER_DATA_MALFORMED);
    b.data[3] = 0x03;
    /* Not canonical: same map with keys out of order. */
    struct cl_buf nc;
    cl_buf_init(&nc, 4096, CL_BUF_NONE);
    assert_ok(cl_cbor_put_map(&nc, 6));
    assert_ok(cl_cbor_put_text(&nc, "audit_key"));
    assert_ok(cl_cbor_put_bytes(&nc, u.audit_key, 120));
    assert_ok(cl_cbor_put_text(&nc, "v"));
    assert_ok(cl_cbor_put_uint(&nc, 3));
    assert_ok(cl_cbor_put_text(&nc, "kms"));
    assert_ok(cl_cbor_put_map(&nc, 3));
    assert_ok(cl_cbor_put_text(&nc, "ca"));
    assert_ok(cl_cbor_put_bytes(&nc, u.kms_ca_sha256, 0));
    assert_ok(cl_cbor_put_text(&nc, "key"));
    assert_ok(cl_cbor_put_text(&nc, T_KEY_ARN));
    assert_ok(cl_cbor_put_text(&nc, "endpoint"));
    assert_ok(cl_cbor_put_text(&nc, "https://kms.example"));
    assert_ok(cl_cbor_put_text(&nc, "model_sha256"));
    assert_ok(cl_cbor_put_bytes(&nc, u.model_sha256, 32));
    assert_ok(cl_cbor_put_text(&nc, "config_sha256"));
    assert_ok(cl_cbor_put_bytes(&nc, u.config_sha256, 32));
    assert_ok(cl_cbor_put_text(&nc, "mmproj_sha256"));
    assert_ok(cl_cbor_put_bytes(&nc, u.mmproj_sha256, 0));
    assert_err(cl_attest_user_data_parse(nc.data, nc.len, &back), CL_E_ATTEST_USER_DATA_MALFORMED);
    /* A projector digest of neither 0 nor 32 bytes. */
    {
        struct cl_buf x;
        cl_buf_init(&x, 4096, CL_BUF_NONE);
        assert_ok(cl_attest_user_data_encode(&u, &x));
        size_t at = x.len - 33; /* bstr(32) header byte 0x58 0x20 ... is the last item */
        assert_int_equal(x.data[at - 1], 0x58);
        x.data[at] = 0x1f;
        x.len--;
        assert_err(cl_attest_user_data_parse(x.data, x.len, &back), CL_E_ATTEST_USER_DATA_MALFORMED);
        cl_buf_free(&x);
    }
    /* No projector: an empty byte string. */
    u.has_mmproj = false;
    memset(u.mmproj_sha256, 0, 32);
    /* No extra CA; a key id with a space; no audit key. */
    u.has_kms_ca = false;
    memset(u.kms_ca_sha256, 0, 32);
    cl_buf_reset(&nc);
    assert_ok(cl_attest_user_data_encode(&u, &nc));
    assert_ok(cl_attest_user_data_parse(nc.data, nc.len, &back));
    assert_false(back.has_kms_ca);
    snprintf(u.kms_key_arn, sizeof(u.kms_key_arn), "arn with space");
    assert_err(cl_attest_user_data_encode(&u, &nc), CL_E_ATTEST_USER_DATA_MALFORMED);
    snprintf(u.kms_key_arn, sizeof(u.kms_key_arn), "%s", T_KEY_ARN);
    u.audit_key_len = 0;
    assert_err(cl_attest_user_data_encode(&u, &nc), CL_E_ATTEST_USER_DATA_MALFORMED);
    cl_buf_free(&nc);
    cl_buf_free(&b);
}

static void test_request_json(void **state)
{
    (void)state;
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, CL_BUF_SECURE);
    const char ctl[] = "tab\there\x01 \xc3\xa9";
    struct cl_client_msg m[] = {{.role = "user", .content = ctl, .content_len = sizeof(ctl) - 1}};
    struct cl_client_params p;
    memset(&p, 0, sizeof(p));
    p.has_top_p = true;
    p.top_p = 0.9;
    assert_ok(cl_client_request_json(m, 1, &p, true, &b));
    json_error_t e;
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
    assert_non_null(j);
    json_t *c = json_object_get(json_array_get(json_object_get(j, "messages"), 0), "content");
    assert_int_equal(json_string_length(c), sizeof(ctl) - 1);
    assert_memory_equal(json_string_value(c), ctl, sizeof(ctl) - 1);
    assert_true(json_is_true(json_object_get(j, "stream")));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "cloister");
    assert_null(json_object_get(j, "seed"));
    json_decref(j);
    struct cl_client_msg badrole[] = {{.role = "tool", .content = "x", .content_len = 1}};
    assert_err(cl_client_request_json(badrole, 1, NULL, false, &b), CL_E_CORE_INVALID_ARG);
    assert_err(cl_client_request_json(m, 0, NULL, false, &b), CL_E_CORE_INVALID_ARG);
    p.top_p = 2;
    assert_err(cl_client_request_json(m, 1, &p, false, &b), CL_E_CORE_INVALID_ARG);
    cl_buf_free(&b);
}

static void test_parse_answers(void **state)
{
    (void)state;
    struct cl_client_result r;
    cl_client_result_init(&r);
    const char *bad[] = {"", "[]", "{}", "{\"choices\":[]}", "{\"choices\":[{\"message\":{}}]}",
                         "{\"choices\":[{\"message\":{\"content\":5}}]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_err(cl_client_parse_completion((const uint8_t *)bad[i], strlen(bad[i]), 200, &r),
                   CL_E_NET_CLIENT_RESPONSE);
    const char *err = "{\"error\":{\"message\":\"bad\\u0007 field\",\"type\":\"invalid_request_error\"}}";
    assert_err(cl_client_parse_completion((const uint8_t *)err, strlen(err), 400, &r),
               CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.error_message, "bad? field");

    /* SSE: split at every position. */
    const char *s = ": comment\r\n"
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n"
                    "event: x\ndata:{\"choices\":[{\"delta\":{\"content\":\" there\"},\"finish_reason\":\"length\"}]}\n\n"
                    "data: [DONE]\n\n";
    for (size_t cut = 0; cut <= strlen(s); cut++) {
        struct tokens tk;
        memset(&tk, 0, sizeof(tk));
        struct cl_client_sse sse;
        cl_buf_reset(&r.content);
        cl_client_sse_init(&sse, on_token, &tk, &r);
        assert_ok(cl_client_sse_feed(&sse, (const uint8_t *)s, cut));
        assert_ok(cl_client_sse_feed(&sse, (const uint8_t *)s + cut, strlen(s) - cut));
        assert_ok(cl_client_sse_finish(&sse));
        assert_string_equal(tk.text, "Hi there");
        assert_string_equal(r.finish_reason, "length");
        cl_client_sse_free(&sse);
    }
    struct cl_client_sse sse;
    cl_client_sse_init(&sse, NULL, NULL, &r);
    const char *nodone = "data: {\"choices\":[]}\n\n";
    assert_ok(cl_client_sse_feed(&sse, (const uint8_t *)nodone, strlen(nodone)));
    assert_err(cl_client_sse_finish(&sse), CL_E_NET_CLIENT_STREAM_INCOMPLETE);
    const char *after = "data: [DONE]\n\ndata: {}\n\n";
    assert_err(cl_client_sse_feed(&sse, (const uint8_t *)after, strlen(after)), CL_E_NET_CLIENT_RESPONSE);
    cl_client_sse_free(&sse);
    cl_client_sse_init(&sse, NULL, NULL, &r);
    const char *junk = "data: nope\n";
    assert_err(cl_client_sse_feed(&sse, (const uint8_t *)junk, strlen(junk)), CL_E_NET_CLIENT_RESPONSE);
    cl_client_sse_free(&sse);
    cl_client_sse_init(&sse, NULL, NULL, &r);
    const char *e2 = "data: {\"error\":{\"message\":\"oops\",\"type\":\"server_error\"}}\n";
    assert_err(cl_client_sse_feed(&sse, (const uint8_t *)e2, strlen(e2)), CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_string_equal(r.error_type, "server_error");
    assert_ok(cl_client_sse_feed(&sse, (const uint8_t *)"partial", 7));
    assert_err(cl_client_sse_finish(&sse), CL_E_NET_CLIENT_STREAM_INCOMPLETE);
    cl_client_sse_free(&sse);
    cl_client_result_free(&r);
}

/* `test_client serve DIR`: runs the fake gateway for the CLI test
 * (test_client_cli.sh) until killed. Writes DIR/url, DIR/root.pem and
 * DIR/nitro.json (the PCRs in nitro-cli's format). CL_FAKE_MODE selects a
 * misbehaviour, CL_FAKE_MODEL the attested model digest (hex). */
static int serve(const char *dir)
{
    if (setup(NULL) != 0)
        return 1;
    const char *m = getenv("CL_FAKE_MODEL");
    if (m && cl_hex_decode_fixed(m, strlen(m), F.model, 32) != CL_OK)
        return 1;
    const char *mode = getenv("CL_FAKE_MODE");
    if (mode)
        atomic_store(&F.mode, atoi(mode));
    struct cl_buf der, pem;
    cl_buf_init(&der, 8192, CL_BUF_NONE);
    cl_buf_init(&pem, 16384, CL_BUF_NONE);
    char path[512], h[3][97], js[1024];
    if (cl_attest_signer_root_der(F.signer, &der) != CL_OK || cl_b64_encode(der.data, der.len, CL_B64_STD, &pem))
        return 1;
    FILE *f;
    snprintf(path, sizeof(path), "%s/root.pem", dir);
    if (!(f = fopen(path, "w")))
        return 1;
    fprintf(f, "-----BEGIN CERTIFICATE-----\n");
    for (size_t o = 0; o < pem.len; o += 64)
        fprintf(f, "%.*s\n", (int)(pem.len - o < 64 ? pem.len - o : 64), (const char *)pem.data + o);
    fprintf(f, "-----END CERTIFICATE-----\n");
    fclose(f);
    for (int i = 0; i < 3; i++)
        cl_hex_encode(F.pcr[i], 48, h[i]);
    snprintf(js, sizeof(js),
             "{\"Measurements\": {\"HashAlgorithm\": \"Sha384 { ... }\", \"PCR0\": \"%s\", \"PCR1\": \"%s\", "
             "\"PCR2\": \"%s\"}}\n", h[0], h[1], h[2]);
    snprintf(path, sizeof(path), "%s/nitro.json", dir);
    if (cl_file_write_atomic(path, js, strlen(js), 0644, 0) != CL_OK)
        return 1;
    /* The URL last: its presence tells the script everything is ready. */
    snprintf(path, sizeof(path), "%s/url", dir);
    if (cl_file_write_atomic(path, F.url, strlen(F.url), 0644, 0) != CL_OK)
        return 1;
    cl_buf_free(&der);
    cl_buf_free(&pem);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return serve(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trust),          cmocka_unit_test(test_user_data),
        cmocka_unit_test(test_request_json),   cmocka_unit_test(test_parse_answers),
        cmocka_unit_test(test_happy),          cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_tampered),       cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_http_errors),    cmocka_unit_test(test_chat_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
