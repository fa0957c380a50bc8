/* The real client library (cloister/client.h) against the real enclave
 * gateway (cloister/enclave.h), in one process: a libmicrohttpd server plays
 * the host, signing attestation documents over the gateway's current OHTTP
 * key with an in-memory simulated signer and passing encapsulated requests to
 * cl_gateway_handle, with the status mapping the enclave's service uses.
 * The generator is a stub; everything else is production code.
 *
 * Also the replay attack of issue 9 through HTTP: a recorded request is
 * refused while its key lives (seen-set) and after the key rotated (retired,
 * the private key is gone), while clients keep working across rotations by
 * re-attesting once, streamed or not. */
#include "testutil.h"

#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cloister/attest.h"
#include "cloister/attest_user_data.h"
#include "cloister/chat.h"
#include "cloister/client.h"
#include "cloister/enclave.h"
#include "cloister/hpke.h"
#include "cloister/json_secure.h"
#include "cloister/ohttp.h"

#define WINDOW 4

static atomic_int gen_calls;
static cl_err stub_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *ctx,
                            struct cl_chat_result *res)
{
    (void)self;
    atomic_fetch_add(&gen_calls, 1);
    static const char *const pieces[] = {"Rest", ", fluids", " and caf", "\xc3", "\xa9", "."};
    uint32_t n = 0;
    for (; n < 6 && n < p->max_tokens; n++)
        if (!piece(ctx, pieces[n], strlen(pieces[n])))
            return CL_E_CORE_IO;
    res->prompt_tokens = (uint32_t)(7 * p->n_msgs);
    res->completion_tokens = n;
    res->finish = n < 6 ? CL_CHAT_FINISH_LENGTH : CL_CHAT_FINISH_STOP;
    return CL_OK;
}

static const struct cl_generator stub = {stub_generate, NULL, "stub-model"};

static struct {
    struct MHD_Daemon *d;
    char url[64];
    cl_attest_signer *signer;
    cl_gateway *gw;
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    uint8_t model[32];
    atomic_int n_attest, n_ohttp;
    pthread_mutex_t mu;
    struct cl_buf last; /* the last encapsulated request, as the host records it */
    bool last_chunked;
} H;

struct conn {
    bool is_ohttp, chunked;
    struct cl_buf body;
};

static enum MHD_Result host_send(struct MHD_Connection *conn, unsigned status, const char *ctype, const void *p,
                                 size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)(n ? p : ""), MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result host_attest(struct MHD_Connection *conn)
{
    atomic_fetch_add(&H.n_attest, 1);
    const char *hex = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "nonce");
    uint8_t nonce[64];
    size_t nl = hex ? strlen(hex) / 2 : 0;
    if (!hex || nl < 16 || nl > 64 || cl_hex_decode_fixed(hex, strlen(hex), nonce, nl) != CL_OK)
        return host_send(conn, 400, "application/json", "{\"error\":\"bad nonce\"}", 21);
    struct cl_attest_user_data ud;
    memset(&ud, 0, sizeof(ud));
    memcpy(ud.model_sha256, H.model, 32);
    memset(ud.config_sha256, 0xc0, 32);
    memset(ud.audit_key, 0xa0, 97);
    ud.audit_key_len = 97;
    snprintf(ud.kms_key_arn, sizeof(ud.kms_key_arn), "arn:aws:kms:us-east-1:111122223333:key/test");
    snprintf(ud.kms_endpoint, sizeof(ud.kms_endpoint), "https://kms.example");
    struct cl_buf udb, kcb, doc;
    cl_buf_init(&udb, 4096, CL_BUF_NONE);
    cl_buf_init(&kcb, 1024, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    struct cl_ohttp_keyconfig kc;
    cl_gateway_keyconfig(H.gw, &kc); /* as the enclave's service does for each attestation */
    enum MHD_Result ret = MHD_NO;
    if (cl_attest_user_data_encode(&ud, &udb) == CL_OK && cl_ohttp_keyconfig_encode(&kc, &kcb) == CL_OK &&
        cl_attest_signer_sign(H.signer, kcb.data, kcb.len, udb.data, udb.len, nonce, nl, &doc) == CL_OK)
        ret = host_send(conn, 200, "application/cbor", doc.data, doc.len);
    cl_buf_free(&udb);
    cl_buf_free(&kcb);
    cl_buf_free(&doc);
    return ret;
}

static cl_err host_collect(void *ctx, enum cl_gw_out kind, const uint8_t *p, size_t n)
{
    (void)kind;
    return cl_buf_append(ctx, p, n);
}

static enum MHD_Result host_ohttp(struct MHD_Connection *conn, struct conn *c)
{
    atomic_fetch_add(&H.n_ohttp, 1);
    pthread_mutex_lock(&H.mu);
    cl_buf_reset(&H.last);
    cl_err rc = cl_buf_append(&H.last, c->body.data ? c->body.data : (const uint8_t *)"", c->body.len);
    H.last_chunked = c->chunked;
    pthread_mutex_unlock(&H.mu);
    struct cl_buf out;
    cl_buf_init(&out, 1 << 22, CL_BUF_NONE);
    if (rc == CL_OK)
        rc = cl_gateway_handle(H.gw, c->body.data ? c->body.data : (const uint8_t *)"", c->body.len, c->chunked,
                               host_collect, &out);
    enum MHD_Result ret;
    if (rc != CL_OK) {
        /* what cloister-host answers for the enclave's error frame */
        char b[160];
        int n = snprintf(b, sizeof(b), "{\"error\":\"enclave error\",\"code\":\"%s\"}", cl_err_name(rc));
        ret = host_send(conn, cl_gateway_http_status(rc), "application/json", b, (size_t)n);
    } else {
        ret = host_send(conn, 200, c->chunked ? "message/ohttp-chunked-res" : "message/ohttp-res", out.data,
                        out.len);
    }
    cl_buf_free(&out);
    return ret;
}

static enum MHD_Result host_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        cl_buf_init(&c->body, 1 << 22, CL_BUF_NONE);
        *con_cls = c;
        if (!strcmp(method, "POST") && !strcmp(url, "/v1/ohttp")) {
            c->is_ohttp = true;
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
        return host_attest(conn);
    if (c->is_ohttp)
        return host_ohttp(conn, c);
    return host_send(conn, 404, "application/json", "{\"error\":\"not found\"}", 21);
}

static void host_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t)
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

static cl_gateway *new_gateway(uint32_t max_sessions)
{
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    l.max_tokens = 64;
    l.max_sessions = max_sessions;
    l.replay_window = WINDOW;
    cl_gateway *g = NULL;
    assert_ok(cl_gateway_new(&l, &stub, 200, &g));
    return g;
}

static int setup(void **state)
{
    (void)state;
    cl_json_secure();
    pthread_mutex_init(&H.mu, NULL);
    cl_buf_init(&H.last, 1 << 22, CL_BUF_NONE);
    if (cl_attest_signer_ephemeral(&H.signer) != CL_OK)
        return -1;
    for (int i = 0; i < 3; i++)
        memset(H.pcr[i], 0x21 * (i + 1), CL_ATTEST_PCR_LEN);
    cl_attest_signer_set_pcrs(H.signer, 0x7, (const uint8_t(*)[CL_ATTEST_PCR_LEN])H.pcr);
    memset(H.model, 0x6b, sizeof(H.model));
    H.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, host_access, NULL,
                           MHD_OPTION_NOTIFY_COMPLETED, host_done, NULL, MHD_OPTION_END);
    if (!H.d)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(H.d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(H.url, sizeof(H.url), "http://127.0.0.1:%u", (unsigned)di->port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(H.d);
    cl_gateway_free(H.gw);
    cl_attest_signer_free(H.signer);
    cl_buf_free(&H.last);
    return 0;
}

static cl_client *new_client(void)
{
    struct cl_trust t;
    memset(&t, 0, sizeof(t));
    struct cl_buf root;
    cl_buf_init(&root, 8192, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(H.signer, &root));
    t.root_der = root.data;
    t.root_len = root.len;
    t.pcr_present = 0x7;
    memcpy(t.pcr, H.pcr, sizeof(H.pcr));
    memcpy(t.model_sha256, H.model, 32);
    t.max_age_seconds = 300;
    cl_client *c = NULL;
    assert_ok(cl_client_new(H.url, &t, &c));
    cl_trust_free(&t);
    return c;
}

struct tokens {
    char text[256];
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
    {.role = "system", .content = "Be brief.", .content_len = 9},
    {.role = "user", .content = "PHI-MARKER-51c2: what helps with a fever?", .content_len = 41},
};
#define ANSWER "Rest, fluids and caf\xc3\xa9."

/* One chat through c; checks the answer when it must succeed. */
static cl_err chat(cl_client *c, bool stream, struct cl_client_result *res)
{
    struct cl_client_params p;
    memset(&p, 0, sizeof(p));
    p.has_max_tokens = true;
    p.max_tokens = 32;
    struct tokens tk;
    memset(&tk, 0, sizeof(tk));
    cl_err rc = cl_client_chat(c, question, 2, &p, stream ? on_token : NULL, &tk, res);
    if (rc == CL_OK) {
        assert_int_equal(res->status, 200);
        assert_int_equal(res->content.len, strlen(ANSWER));
        assert_memory_equal(res->content.data, ANSWER, strlen(ANSWER));
        assert_string_equal(res->finish_reason, "stop");
        if (stream)
            assert_string_equal(tk.text, ANSWER); /* the split character arrives whole */
    }
    return rc;
}

/* POSTs bytes to /v1/ohttp as an attacker on the host would (curl). */
static long post_raw(const struct cl_buf *body, bool chunked, char *resp, size_t cap)
{
    CURL *k = curl_easy_init();
    assert_non_null(k);
    char url[96];
    snprintf(url, sizeof(url), "%s/v1/ohttp", H.url);
    struct curl_slist *h = curl_slist_append(
        NULL, chunked ? "Content-Type: message/ohttp-chunked-req" : "Content-Type: message/ohttp-req");
    FILE *f = fmemopen(resp, cap, "w");
    assert_non_null(f);
    curl_easy_setopt(k, CURLOPT_URL, url);
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(k, CURLOPT_POSTFIELDS, (const char *)body->data);
    curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE, (long)body->len);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, f);
    assert_int_equal(curl_easy_perform(k), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &status);
    fclose(f);
    curl_slist_free_all(h);
    curl_easy_cleanup(k);
    return status;
}

static void record_last(struct cl_buf *out, bool *chunked)
{
    pthread_mutex_lock(&H.mu);
    cl_buf_reset(out);
    assert_ok(cl_buf_append(out, H.last.data, H.last.len));
    *chunked = H.last_chunked;
    pthread_mutex_unlock(&H.mu);
}

static void use_gateway(cl_gateway *g)
{
    cl_gateway *old = H.gw;
    H.gw = g;
    cl_gateway_free(old);
}

static void test_chat(void **state)
{
    (void)state;
    use_gateway(new_gateway(4));
    cl_client *c = new_client();
    struct cl_client_result res;
    cl_client_result_init(&res);
    assert_ok(chat(c, false, &res));
    assert_true(res.has_usage);
    assert_int_equal(res.prompt_tokens, 14);
    assert_int_equal(res.completion_tokens, 6);
    assert_ok(chat(c, true, &res));
    assert_true(res.has_usage);
    assert_int_equal(res.total_tokens, 20);
    const struct cl_client_attestation *a = cl_client_attestation(c);
    assert_int_equal(a->count, 1);
    assert_int_equal(a->key.key_id, 200);
    /* an error the real gateway encrypts comes out as a status and message */
    struct cl_client_params p;
    memset(&p, 0, sizeof(p));
    p.has_max_tokens = true;
    p.max_tokens = 100000;
    assert_err(cl_client_chat(c, question, 2, &p, NULL, NULL, &res), CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(res.status, 413);
    assert_string_equal(res.error_type, "invalid_request_error");
    assert_err(cl_client_chat(c, question, 2, &p, on_token, &(struct tokens){0}, &res),
               CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(res.status, 413);
    cl_client_result_free(&res);
    cl_client_free(c);
    /* too many sessions: 429 through the streamed path too */
    use_gateway(new_gateway(0));
    c = new_client();
    cl_client_result_init(&res);
    assert_err(chat(c, true, &res), CL_E_NET_CLIENT_ANSWER_STATUS);
    assert_int_equal(res.status, 429);
    assert_string_equal(res.error_type, "rate_limit_error");
    cl_client_result_free(&res);
    cl_client_free(c);
}

/* Clients across key rotations: a client whose key was retired gets 401,
 * re-attests once, and is answered, streamed or not. */
static void test_rotation_reattest(void **state)
{
    (void)state;
    use_gateway(new_gateway(4));
    cl_client *c = new_client(), *other = new_client();
    struct cl_client_result res;
    cl_client_result_init(&res);
    for (int round = 0; round < 2; round++) {
        bool stream = round == 1;
        assert_ok(chat(c, stream, &res));
        unsigned count = cl_client_attestation(c)->count;
        uint8_t key_id = cl_client_attestation(c)->key.key_id;
        uint64_t rot = cl_gateway_rotations(H.gw);
        /* others use up the rest of this key's requests */
        while (cl_gateway_rotations(H.gw) == rot)
            assert_ok(chat(other, false, &res));
        int attests = atomic_load(&H.n_attest);
        assert_ok(chat(c, stream, &res));
        assert_int_equal(cl_client_attestation(c)->count, count + 1); /* re-attested once */
        assert_int_equal(atomic_load(&H.n_attest), attests + 1);
        struct cl_ohttp_keyconfig now;
        cl_gateway_keyconfig(H.gw, &now);
        assert_int_not_equal(cl_client_attestation(c)->key.key_id, key_id);
        assert_int_equal(cl_client_attestation(c)->key.key_id, now.key_id);
    }
    cl_client_result_free(&res);
    cl_client_free(c);
    cl_client_free(other);
}

/* The attack: the host records a client's request, replays it at once,
 * then pushes more than a seen-set's worth of valid requests of its own
 * (anyone can make them: the key is public) and replays it again. */
static void test_replay_across_rotation(void **state)
{
    (void)state;
    use_gateway(new_gateway(4));
    struct cl_client_result res;
    cl_client_result_init(&res);
    char body[512];
    for (int round = 0; round < 2; round++) {
        bool stream = round == 1;
        cl_client *victim = new_client();
        assert_ok(chat(victim, stream, &res));
        struct cl_buf rec;
        bool chunked = false;
        cl_buf_init(&rec, 1 << 22, CL_BUF_NONE);
        record_last(&rec, &chunked);
        assert_int_equal(chunked, stream);
        int before = atomic_load(&gen_calls);
        memset(body, 0, sizeof(body));
        assert_int_equal(post_raw(&rec, chunked, body, sizeof(body) - 1), 400);
        assert_int_equal(atomic_load(&gen_calls), before);
        assert_non_null(strstr(body, "\"PROTO_REPLAY\""));
        /* capacity + N other valid requests, from fresh clients */
        uint64_t rot = cl_gateway_rotations(H.gw);
        for (int i = 0; i < WINDOW + 2; i++) {
            cl_client *mint = new_client();
            assert_ok(chat(mint, i % 2, &res));
            cl_client_free(mint);
        }
        assert_true(cl_gateway_rotations(H.gw) >= rot + 1);
        before = atomic_load(&gen_calls);
        memset(body, 0, sizeof(body));
        assert_int_equal(post_raw(&rec, chunked, body, sizeof(body) - 1), 401);
        assert_non_null(strstr(body, "\"PROTO_OHTTP_KEY_RETIRED\""));
        /* relabelled with the current key id: no key can open it any more */
        struct cl_ohttp_keyconfig kc;
        cl_gateway_keyconfig(H.gw, &kc);
        rec.data[0] = kc.key_id;
        memset(body, 0, sizeof(body));
        assert_int_equal(post_raw(&rec, chunked, body, sizeof(body) - 1), 401);
        assert_non_null(strstr(body, "\"PROTO_OHTTP_AUTH\""));
        assert_int_equal(atomic_load(&gen_calls), before); /* never executed again */
        /* a fresh client still works after the rotations, and so does the victim */
        cl_client *fresh = new_client();
        assert_ok(chat(fresh, stream, &res));
        cl_client_free(fresh);
        assert_ok(chat(victim, stream, &res));
        cl_client_free(victim);
        cl_buf_free(&rec);
    }
    cl_client_result_free(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_rotation_reattest),
        cmocka_unit_test(test_replay_across_rotation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
