/* The gateway with a licence table: the consumer's credential travels inside
 * the OHTTP encryption; consumers without a valid licence get an encrypted
 * 401/403 naming the reason, and generation never runs for them. */
#include "testutil.h"

#include <jansson.h>
#include <time.h>

#include "cloister/bhttp.h"
#include "cloister/enclave.h"
#include "cloister/enclave_runtime.h"
#include "cloister/licence.h"

static int gen_calls;
/* Set by a test: after the first piece of the answer the generator runs
 * this (a renewal arriving mid-answer), then offers a second piece. */
static void (*cl_t_mid_answer)(void);
static int cl_t_pieces_taken;
static cl_err cl_t_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *ctx,
                            struct cl_chat_result *res)
{
    (void)self;
    (void)p;
    gen_calls++;
    cl_t_pieces_taken = 0;
    if (!piece(ctx, "ok", 2))
        return CL_E_CORE_IO;
    cl_t_pieces_taken++;
    if (cl_t_mid_answer) {
        cl_t_mid_answer();
        if (!piece(ctx, " and more", 9))
            return CL_E_CORE_IO;
        cl_t_pieces_taken++;
    }
    res->prompt_tokens = 30;
    res->completion_tokens = 20;
    res->finish = CL_CHAT_FINISH_STOP;
    return CL_OK;
}
static const struct cl_generator cl_t_gen = {cl_t_generate, NULL, "licensed-test"};

static cl_err cl_t_sink(void *ctx, enum cl_gw_out kind, const uint8_t *p, size_t n)
{
    (void)kind;
    return cl_buf_append(ctx, p, n);
}

static const char cl_t_chat[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const uint8_t cl_t_model[32] = {7, 7, 7};
#define CRED_OK "licensed-consumer-credential-5b1e2a"
#define CRED_REVOKED "revoked-consumer-credential-9c0d11"
#define CRED_EXPIRED "expired-consumer-credential-44aa01"

/* What the last exchange reported for its receipt. */
static struct cl_gw_outcome cl_t_oc;

/* One chat exchange with an optional authorization value; returns the status
 * and the error message (if any) in msg. enc_out gets what the host saw. */
static uint16_t cl_t_chat_as(cl_gateway *g, const char *auth, char *msg, size_t msglen, struct cl_buf *host_saw)
{
    struct cl_buf req, enc, out, plain, body;
    cl_ohttp_client *c;
    struct cl_ohttp_keyconfig kc;
    struct cl_bhttp_reader r;
    uint16_t st;
    cl_buf_init(&req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&out, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&plain, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&body, 1 << 20, CL_BUF_NONE);
    struct cl_bhttp_msg m = {.method = "POST", .method_len = 4, .scheme = "https", .scheme_len = 5,
                             .path = "/v1/chat/completions", .path_len = 20, .n_fields = auth ? 2 : 1,
                             .content = (const uint8_t *)cl_t_chat, .content_len = strlen(cl_t_chat)};
    m.fields[0] = (struct cl_bhttp_field){"content-type", 12, "application/json", 16};
    if (auth)
        m.fields[1] = (struct cl_bhttp_field){"authorization", 13, auth, strlen(auth)};
    assert_ok(cl_bhttp_encode(&m, &req));
    cl_gateway_keyconfig(g, &kc);
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, false, req.data, req.len, &enc,
                                    &c));
    assert_ok(cl_gateway_handle_ex(g, enc.data, enc.len, false, cl_t_sink, &out, &cl_t_oc));
    assert_ok(cl_ohttp_client_decap(c, out.data, out.len, &plain));
    cl_bhttp_reader_init(&r, 1 << 20);
    assert_ok(cl_bhttp_reader_feed(&r, plain.data, plain.len, &body));
    st = r.status;
    msg[0] = 0;
    if (st != 200) {
        json_error_t e;
        json_t *j = json_loadb((const char *)body.data, body.len, 0, &e);
        assert_non_null(j);
        snprintf(msg, msglen, "%s|%s", json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                 json_string_value(json_object_get(json_object_get(j, "error"), "message")));
        json_decref(j);
    }
    if (host_saw) {
        assert_ok(cl_buf_append(host_saw, enc.data, enc.len));
        assert_ok(cl_buf_append(host_saw, out.data, out.len));
    }
    cl_bhttp_reader_free(&r);
    cl_ohttp_client_free(c);
    cl_buf_free(&req);
    cl_buf_free(&enc);
    cl_buf_free(&out);
    cl_buf_free(&plain);
    cl_buf_free(&body);
    return st;
}

static cl_err cl_t_publish(cl_licence_table *t, const cl_pkey *k, struct cl_licence *ls, size_t n)
{
    struct cl_buf b[4];
    const uint8_t *p[4];
    size_t len[4];
    cl_err rc;
    for (size_t i = 0; i < n; i++) {
        cl_buf_init(&b[i], CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
        assert_ok(cl_licence_sign(&ls[i], k, &b[i]));
        p[i] = b[i].data;
        len[i] = b[i].len;
    }
    rc = cl_licence_table_update(t, p, len, n, (uint64_t)time(NULL), 600);
    for (size_t i = 0; i < n; i++)
        cl_buf_free(&b[i]);
    return rc;
}

static void cl_t_lic(struct cl_licence *l, const char *id, const char *cred)
{
    uint64_t now = (uint64_t)time(NULL);
    memset(l, 0, sizeof(*l));
    snprintf(l->id, sizeof(l->id), "%s", id);
    snprintf(l->consumer, sizeof(l->consumer), "consumer %s", id);
    assert_ok(cl_licence_credential_hash((const uint8_t *)cred, strlen(cred), l->credential_sha256));
    memcpy(l->model_sha256, cl_t_model, 32);
    l->serial = 1;
    l->not_before = now - 3600;
    l->not_after = now + 3600;
    l->period_s = 86400;
}

static void test_gateway_licensed(void **state)
{
    (void)state;
    struct cl_enclave_limits lim;
    cl_gateway *g;
    cl_pkey *k;
    cl_licence_table *t;
    struct cl_licence ls[3];
    char msg[256];
    struct cl_buf host;
    cl_buf_init(&host, 1 << 22, CL_BUF_NONE);
    cl_enclave_limits_default(&lim);
    assert_ok(cl_gateway_new(&lim, &cl_t_gen, 1, &g));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));

    /* Unlicensed model (no table): served without a credential, as before. */
    gen_calls = 0;
    assert_int_equal(cl_t_chat_as(g, NULL, msg, sizeof(msg), NULL), 200);
    cl_gateway_set_licences(g, t);
    /* Licensed, but no licence set received yet: fails closed. */
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 503);
    assert_non_null(strstr(msg, "lease"));

    cl_t_lic(&ls[0], "ok", CRED_OK);
    ls[0].max_requests = 2;
    cl_t_lic(&ls[1], "revoked", CRED_REVOKED);
    ls[1].revoked = true;
    cl_t_lic(&ls[2], "expired", CRED_EXPIRED);
    ls[2].not_after = ls[2].not_before + 60;
    assert_ok(cl_t_publish(t, k, ls, 3));

    gen_calls = 0;
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), &host), 200);
    assert_int_equal(gen_calls, 1);
    {
        /* the receipt names an admitted consumer by the licence that admitted it */
        assert_string_equal(cl_t_oc.consumer, "licence:ok");
        assert_int_equal(cl_t_oc.status, 200);
    }
    assert_int_equal(cl_t_chat_as(g, NULL, msg, sizeof(msg), &host), 401);
    assert_string_equal(cl_t_oc.consumer, "-");
    assert_int_equal(cl_t_oc.status, 401);
    assert_true(cl_t_oc.chat);
    assert_string_equal(msg, "authentication_error|licence: no consumer credential in the request");
    assert_int_equal(cl_t_chat_as(g, "Bearer someone-else-credential-000000", msg, sizeof(msg), &host), 401);
    assert_string_equal(msg, "authentication_error|licence: consumer credential matches no licence");
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_REVOKED, msg, sizeof(msg), &host), 403);
    assert_string_equal(msg, "permission_error|licence: licence revoked");
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_EXPIRED, msg, sizeof(msg), &host), 403);
    assert_string_equal(msg, "permission_error|licence: licence expired");
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), &host), 200);
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), &host), 403);
    assert_string_equal(msg, "permission_error|licence: licence quota for this period used up");
    assert_int_equal(gen_calls, 2); /* refused consumers never reached the model */
    {
        uint64_t rq = 0, tk = 0;
        assert_true(cl_licence_table_usage(t, "ok", (uint64_t)time(NULL), &rq, &tk));
        assert_int_equal(rq, 2);
        assert_int_equal(tk, 100);
    }
    /* Everything the host carried: no credential in the clear. */
    assert_null(memmem(host.data, host.len, CRED_OK, strlen(CRED_OK)));
    assert_null(memmem(host.data, host.len, CRED_REVOKED, strlen(CRED_REVOKED)));
    assert_null(memmem(host.data, host.len, "licence", 7));

    /* Revocation arrives with the next renewal. */
    ls[0].serial = 2;
    ls[0].max_requests = 0;
    assert_ok(cl_t_publish(t, k, ls, 3));
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 200);
    ls[0].serial = 3;
    ls[0].revoked = true;
    assert_ok(cl_t_publish(t, k, ls, 3));
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 403);
    assert_string_equal(msg, "permission_error|licence: licence revoked");

    cl_gateway_set_licences(g, NULL);
    cl_gateway_free(g);
    cl_licence_table_free(t);
    cl_pkey_free(k);
    cl_buf_free(&host);
}

/* A lease ended: the OHTTP private keys are wiped; a request sealed to the
 * attested key before the wipe opens no more (PROTO_LICENCE_LEASE_ENDED, 503
 * on the wire), generation never runs, and the public configuration stays. */
static void test_gateway_keys_wiped(void **state)
{
    (void)state;
    struct cl_enclave_limits lim;
    cl_gateway *g;
    struct cl_ohttp_keyconfig kc, kc2;
    struct cl_buf req, enc, out;
    cl_ohttp_client *c;
    cl_buf_init(&req, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&out, 1 << 16, CL_BUF_NONE);
    cl_enclave_limits_default(&lim);
    assert_ok(cl_gateway_new(&lim, &cl_t_gen, 1, &g));
    struct cl_bhttp_msg m = {.method = "POST", .method_len = 4, .scheme = "https", .scheme_len = 5,
                             .path = "/v1/chat/completions", .path_len = 20, .n_fields = 1,
                             .content = (const uint8_t *)cl_t_chat, .content_len = strlen(cl_t_chat)};
    m.fields[0] = (struct cl_bhttp_field){"content-type", 12, "application/json", 16};
    assert_ok(cl_bhttp_encode(&m, &req));
    cl_gateway_keyconfig(g, &kc);
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, false, req.data, req.len, &enc,
                                    &c));
    cl_gateway_wipe_keys(g);
    cl_gateway_wipe_keys(g); /* twice: harmless */
    gen_calls = 0;
    cl_err rc = cl_gateway_handle(g, enc.data, enc.len, false, cl_t_sink, &out);
    assert_int_equal(rc, CL_E_PROTO_LICENCE_LEASE_ENDED);
    assert_non_null(strstr(cl_err_detail(), "wiped its OHTTP private keys"));
    assert_int_equal(cl_gateway_http_status(rc), 503);
    assert_int_equal(gen_calls, 0);
    assert_int_equal(out.len, 0);
    cl_gateway_keyconfig(g, &kc2);
    assert_memory_equal(kc.pk, kc2.pk, sizeof(kc.pk));
    cl_ohttp_client_free(c);
    cl_gateway_free(g);
    cl_buf_free(&req);
    cl_buf_free(&enc);
    cl_buf_free(&out);
}

/* A renewal that revokes the consumer's licence while its answer is being
 * made ends that answer at the next piece, with the reason, inside the
 * encryption; a renewal that leaves the licence valid does not. */
static cl_licence_table *cl_t_mid_table;
static cl_pkey *cl_t_mid_key;
static struct cl_licence cl_t_mid_lic;
static void cl_t_renew_revoking(void)
{
    cl_t_mid_lic.serial++;
    cl_t_mid_lic.revoked = true;
    assert_ok(cl_t_publish(cl_t_mid_table, cl_t_mid_key, &cl_t_mid_lic, 1));
}
static void cl_t_renew_keeping(void)
{
    cl_t_mid_lic.serial++;
    assert_ok(cl_t_publish(cl_t_mid_table, cl_t_mid_key, &cl_t_mid_lic, 1));
}

static void test_gateway_revoked_mid_answer(void **state)
{
    (void)state;
    cl_gateway *g;
    cl_pkey *k;
    cl_licence_table *t;
    char msg[256];
    struct cl_enclave_limits lim;
    cl_enclave_limits_default(&lim);
    assert_ok(cl_gateway_new(&lim, &cl_t_gen, 1, &g));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    cl_t_lic(&cl_t_mid_lic, "ok", CRED_OK);
    assert_ok(cl_t_publish(t, k, &cl_t_mid_lic, 1));
    cl_gateway_set_licences(g, t);
    cl_t_mid_table = t;
    cl_t_mid_key = k;

    cl_t_mid_answer = cl_t_renew_keeping;
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 200);
    assert_int_equal(cl_t_pieces_taken, 2);

    cl_t_mid_answer = cl_t_renew_revoking;
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 403);
    assert_int_equal(cl_t_pieces_taken, 1); /* the piece after the revocation was refused */
    assert_string_equal(msg, "permission_error|licence: licence revoked");
    assert_true(cl_t_oc.failed);
    cl_t_mid_answer = NULL;
    /* and the next request is refused at admission */
    assert_int_equal(cl_t_chat_as(g, "Bearer " CRED_OK, msg, sizeof(msg), NULL), 403);

    cl_gateway_free(g);
    cl_licence_table_free(t);
    cl_pkey_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gateway_licensed),
        cmocka_unit_test(test_gateway_keys_wiped),
        cmocka_unit_test(test_gateway_revoked_mid_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
