/* Licence renewals and usage reports at the key service (docs/licensing.md),
 * through the request handler with a stand-in attestation verifier: the
 * grant is bound to the nonce, the set and the report; a dropped (gap),
 * replayed, reordered and altered usage report is each named; the enclave
 * side refuses a substituted licence key and a grant it did not ask for. */
#include "testutil.h"

#include <jansson.h>
#include <unistd.h>

#include "cloister/attest_user_data.h"
#include "cloister/encode.h"
#include "cloister/kms.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"

#define OWNER "arn:aws:iam::111122223333:user/owner"
#define ENCLAVE "arn:aws:iam::444455556666:user/operator"
#define DIGEST "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"

static char t_dir[256];
static struct cl_kms_store *t_st;
static struct cl_kms_server_config t_cfg;
static cl_pkey *t_rsa, *t_audit;
static struct cl_buf t_ud;
static char t_key[64], t_lksha[65], t_blob[8192];

/* Stands in for the Nitro/sim verifier: a document that "verified" with the
 * enclave's RSA key and user_data (its audit key). */
static cl_err t_attest(void *arg, const uint8_t *doc, size_t n, int64_t now_ms, struct cl_kms_attestation *out)
{
    (void)arg;
    (void)doc;
    (void)n;
    (void)now_ms;
    struct cl_buf spki;
    cl_buf_init(&spki, 4096, CL_BUF_NONE);
    memset(out, 0, sizeof(*out));
    if (cl_pkey_public_der(t_rsa, &spki) != CL_OK)
        return CL_E_ATTEST_PUBLIC_KEY;
    memcpy(out->public_key, spki.data, spki.len);
    out->public_key_len = spki.len;
    cl_buf_free(&spki);
    memcpy(out->user_data, t_ud.data, t_ud.len);
    out->user_data_len = t_ud.len;
    out->r.pcr_mask = 1;
    out->r.has_root = true;
    out->roots_trusted = 1;
    snprintf(out->module_id, sizeof(out->module_id), "i-test");
    return CL_OK;
}

static json_t *t_call(const char *who, const char *op, const char *body, int *status, char *msg, size_t cap)
{
    struct cl_kms_response r;
    cl_kms_response_init(&r);
    cl_kms_handle_op(&t_cfg, who, op, (const uint8_t *)body, strlen(body), &r);
    *status = r.status;
    json_error_t je;
    json_t *o = json_loadb((const char *)r.body.data, r.body.len, 0, &je);
    assert_non_null(o);
    if (msg)
        snprintf(msg, cap, "%s: %s", r.error_type, json_string_value(json_object_get(o, "message")) ?: "");
    cl_kms_response_free(&r);
    return o;
}

static json_t *t_ok(const char *who, const char *op, const char *body)
{
    int st;
    char m[512];
    json_t *o = t_call(who, op, body, &st, m, sizeof(m));
    if (st != 200)
        fail_msg("%s: %s", op, m);
    return o;
}

static void t_refused(const char *who, const char *op, const char *body, const char *want)
{
    int st;
    char m[512];
    json_decref(t_call(who, op, body, &st, m, sizeof(m)));
    if (st == 200 || !strstr(m, want))
        fail_msg("%s: want '%s', got %d %s", op, want, st, m);
}

static int t_setup(void **state)
{
    (void)state;
    snprintf(t_dir, sizeof(t_dir), "/tmp/cl_lic_kms_XXXXXX");
    if (!mkdtemp(t_dir))
        return -1;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/store", t_dir);
    if (cl_kms_store_init(sub, "us-east-1", "111122223333") || cl_kms_store_open(sub, &t_st) ||
        cl_pkey_generate(CL_PKEY_RSA, &t_rsa) || cl_pkey_generate(CL_PKEY_P384, &t_audit))
        return -1;
    t_cfg.store = t_st;
    t_cfg.attest = t_attest;
    struct cl_attest_user_data u;
    struct cl_buf spki;
    memset(&u, 0, sizeof(u));
    cl_buf_init(&spki, 512, CL_BUF_NONE);
    if (cl_pkey_public_der(t_audit, &spki))
        return -1;
    memcpy(u.audit_key, spki.data, spki.len);
    u.audit_key_len = spki.len;
    cl_buf_free(&spki);
    snprintf(u.kms_key_arn, sizeof(u.kms_key_arn), "k");
    snprintf(u.kms_endpoint, sizeof(u.kms_endpoint), "http://127.0.0.1");
    cl_buf_init(&t_ud, 1024, CL_BUF_NONE);
    if (cl_attest_user_data_encode(&u, &t_ud))
        return -1;
    /* owner: key (the operator may only Decrypt), licence key, sealed data key, one licence */
    json_t *o = t_ok(OWNER, "CreateKey",
                     "{\"Policy\":\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":[{\\\"Sid\\\":\\\"Admin\\\","
                     "\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":\\\"" OWNER "\\\"},\\\"Action\\\":"
                     "\\\"kms:*\\\",\\\"Resource\\\":\\\"*\\\"},{\\\"Sid\\\":\\\"Release\\\",\\\"Effect\\\":\\\"Allow\\\","
                     "\\\"Principal\\\":{\\\"AWS\\\":\\\"" ENCLAVE "\\\"},\\\"Action\\\":\\\"kms:Decrypt\\\","
                     "\\\"Resource\\\":\\\"*\\\"}]}\"}");
    snprintf(t_key, sizeof(t_key), "%s", json_string_value(json_object_get(json_object_get(o, "KeyMetadata"), "KeyId")));
    json_decref(o);
    char b[1024];
    snprintf(b, sizeof(b), "{\"KeyId\":\"%s\",\"LeaseSeconds\":2}", t_key);
    o = t_ok(OWNER, "CloisterGetLicenceKey", b);
    snprintf(t_lksha, sizeof(t_lksha), "%s", json_string_value(json_object_get(o, "PublicKeySha256")));
    json_decref(o);
    snprintf(b, sizeof(b),
             "{\"KeyId\":\"%s\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":{\"cloister:model-sha256\":\"" DIGEST
             "\",\"" CL_LICENCE_CTX_KEY "\":\"%s\"}}",
             t_key, t_lksha);
    o = t_ok(OWNER, "GenerateDataKey", b);
    snprintf(t_blob, sizeof(t_blob), "%s", json_string_value(json_object_get(o, "CiphertextBlob")));
    json_decref(o);
    snprintf(b, sizeof(b),
             "{\"KeyId\":\"%s\",\"LicenceId\":\"lic-a\",\"Consumer\":\"Clinic A\",\"CredentialSha256\":\"" DIGEST
             "\",\"ModelSha256\":\"" DIGEST "\"}",
             t_key);
    json_decref(t_ok(OWNER, "CloisterCreateLicence", b));
    return 0;
}

static int t_teardown(void **state)
{
    (void)state;
    cl_kms_store_close(t_st);
    cl_pkey_free(t_rsa);
    cl_pkey_free(t_audit);
    cl_buf_free(&t_ud);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A signed usage report: seq, chained to prev, lic-a with n requests. */
static void t_report(uint64_t seq, const uint8_t prev[32], uint64_t n, struct cl_buf *out, uint8_t sha[32])
{
    struct cl_licence_usage *u = calloc(1, sizeof(*u));
    assert_non_null(u);
    u->seq = seq;
    memcpy(u->prev_sha256, prev, 32);
    u->time = 1700000000;
    u->n = 1;
    snprintf(u->rows[0].id, sizeof(u->rows[0].id), "lic-a");
    u->rows[0].period_start = 1699999000;
    u->rows[0].requests = n;
    u->rows[0].prompt_tokens = 10 * n;
    u->rows[0].completion_tokens = 7 * n;
    assert_ok(cl_licence_usage_sign(u, t_audit, out));
    assert_ok(cl_sha256(out->data, out->len, sha));
    free(u);
}

static char *t_renew_body(const char *nonce_hex, const struct cl_buf *rep, const char *ctx_override)
{
    struct cl_buf b64;
    cl_buf_init(&b64, 1 << 17, CL_BUF_NONE);
    if (rep)
        assert_ok(cl_b64_encode(rep->data, rep->len, CL_B64_STD, &b64));
    assert_ok(cl_buf_append_u8(&b64, 0));
    char *s = malloc(1 << 18);
    assert_non_null(s);
    char ctx[512];
    snprintf(ctx, sizeof(ctx), "{\"cloister:model-sha256\":\"" DIGEST "\",\"" CL_LICENCE_CTX_KEY "\":\"%s\"}",
             ctx_override ? ctx_override : t_lksha);
    snprintf(s, 1 << 18,
             "{\"CiphertextBlob\":\"%s\",\"EncryptionContext\":%s,\"Recipient\":{\"KeyEncryptionAlgorithm\":"
             "\"RSAES_OAEP_SHA_256\",\"AttestationDocument\":\"AAAA\"},\"Nonce\":\"%s\"%s%s%s}",
             t_blob, ctx, nonce_hex, rep ? ",\"UsageReport\":\"" : "", rep ? (const char *)b64.data : "",
             rep ? "\"" : "");
    cl_buf_free(&b64);
    return s;
}

static void t_b64_field(json_t *o, const char *name, struct cl_buf *out)
{
    const char *v = json_string_value(json_object_get(o, name));
    assert_non_null(v);
    assert_ok(cl_b64_decode(v, strlen(v), CL_B64_STD, out));
}

static void test_renewal_grant(void **state)
{
    (void)state;
    const char *nonce = "0101010101010101010101010101010101010101010101010101010101010101";
    uint8_t zero[32] = {0}, sha[32];
    struct cl_buf rep, der, gb, rec;
    cl_buf_init(&rep, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&der, 1024, CL_BUF_NONE);
    cl_buf_init(&gb, 4096, CL_BUF_NONE);
    cl_buf_init(&rec, 8192, CL_BUF_NONE);
    t_report(1, zero, 0, &rep, sha);
    char *body = t_renew_body(nonce, &rep, NULL);
    json_t *o = t_ok(ENCLAVE, "CloisterRenewLicence", body);
    free(body);
    assert_int_equal(json_integer_value(json_object_get(o, "LeaseSeconds")), 2);
    /* the enclave's checks: key bound to the context value, grant fresh and complete */
    cl_pkey *lk = NULL, *other = NULL;
    t_b64_field(o, "LicenceKey", &der);
    assert_ok(cl_licence_key_bind(der.data, der.len, t_lksha, &lk));
    t_b64_field(o, "Grant", &gb);
    struct cl_licence_grant g;
    assert_ok(cl_licence_grant_verify(gb.data, gb.len, lk, &g));
    uint8_t want_nonce[32], set[32];
    memset(want_nonce, 1, 32);
    assert_memory_equal(g.nonce, want_nonce, 32);
    assert_true(g.has_report);
    assert_memory_equal(g.report_sha256, sha, 32);
    json_t *arr = json_object_get(o, "Licences");
    assert_int_equal(json_array_size(arr), 1);
    const char *r0 = json_string_value(json_array_get(arr, 0));
    assert_ok(cl_b64_decode(r0, strlen(r0), CL_B64_STD, &rec));
    const uint8_t *recs[1] = {rec.data};
    size_t lens[1] = {rec.len};
    assert_ok(cl_licence_set_digest(recs, lens, 1, set));
    assert_memory_equal(g.set_sha256, set, 32);
    /* the host substituting its own licence key: refused by the binding, and
     * a grant it signs does not verify under the bound key */
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &other));
    struct cl_buf oder, forged;
    cl_buf_init(&oder, 1024, CL_BUF_NONE);
    cl_buf_init(&forged, 4096, CL_BUF_NONE);
    assert_ok(cl_pkey_public_der(other, &oder));
    cl_pkey *sub = NULL;
    assert_err(cl_licence_key_bind(oder.data, oder.len, t_lksha, &sub), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_null(sub);
    g.lease_s = 86400;
    assert_ok(cl_licence_grant_sign(&g, other, &forged));
    assert_err(cl_licence_grant_verify(forged.data, forged.len, lk, &g), CL_E_PROTO_LICENCE_GRANT);
    cl_pkey_free(lk);
    cl_pkey_free(other);
    cl_buf_free(&oder);
    cl_buf_free(&forged);
    json_decref(o);
    /* the host cannot change the pinned value: the context is the blob's AAD */
    body = t_renew_body(nonce, NULL, DIGEST);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "InvalidCiphertextException");
    free(body);
    /* a model the owner sealed pinning another licence key is not renewed */
    char saved[sizeof(t_blob)], gdk[1024];
    memcpy(saved, t_blob, sizeof(saved));
    snprintf(gdk, sizeof(gdk),
             "{\"KeyId\":\"%s\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":{\"cloister:model-sha256\":\"" DIGEST
             "\",\"" CL_LICENCE_CTX_KEY "\":\"" DIGEST "\"}}",
             t_key);
    o = t_ok(OWNER, "GenerateDataKey", gdk);
    snprintf(t_blob, sizeof(t_blob), "%s", json_string_value(json_object_get(o, "CiphertextBlob")));
    json_decref(o);
    body = t_renew_body(nonce, NULL, DIGEST);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "differs from this key's licence key");
    free(body);
    memcpy(t_blob, saved, sizeof(saved));
    cl_buf_free(&rep);
    cl_buf_free(&der);
    cl_buf_free(&gb);
    cl_buf_free(&rec);
}

static void test_usage_chain(void **state)
{
    (void)state;
    const char *nonce = "0202020202020202020202020202020202020202020202020202020202020202";
    uint8_t prev[32] = {0}, sha[32], sha3[32], sha4[32];
    struct cl_buf r1, r2, r3, r4, r5, bad;
    cl_buf_init(&r1, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&r2, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&r3, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&r4, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&r5, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&bad, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    /* a fresh enclave (new audit key): its chain starts at 1 */
    cl_pkey_free(t_audit);
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &t_audit));
    struct cl_attest_user_data u;
    assert_ok(cl_attest_user_data_parse(t_ud.data, t_ud.len, &u));
    struct cl_buf spki;
    cl_buf_init(&spki, 512, CL_BUF_NONE);
    assert_ok(cl_pkey_public_der(t_audit, &spki));
    memcpy(u.audit_key, spki.data, spki.len);
    u.audit_key_len = spki.len;
    cl_buf_free(&spki);
    cl_buf_reset(&t_ud);
    assert_ok(cl_attest_user_data_encode(&u, &t_ud));

    t_report(1, prev, 1, &r1, sha);
    char *body = t_renew_body(nonce, &r1, NULL);
    json_decref(t_ok(ENCLAVE, "CloisterRenewLicence", body));
    free(body);
    t_report(2, sha, 2, &r2, sha);
    t_report(3, sha, 3, &r3, sha3); /* the host drops this one */
    t_report(4, sha3, 4, &r4, sha4);
    body = t_renew_body(nonce, &r2, NULL);
    json_decref(t_ok(ENCLAVE, "CloisterRenewLicence", body));
    free(body);
    body = t_renew_body(nonce, &r4, NULL);
    json_t *o = t_ok(ENCLAVE, "CloisterRenewLicence", body);
    assert_string_equal(json_string_value(json_object_get(o, "UsageReportEvent")), "gap");
    json_decref(o);
    free(body);
    /* replayed: the same report again */
    body = t_renew_body(nonce, &r4, NULL);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "usage report replay");
    free(body);
    /* reordered: the dropped one arrives late */
    body = t_renew_body(nonce, &r3, NULL);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "usage report reorder");
    free(body);
    /* altered: a payload byte changed, so the signature fails */
    assert_ok(cl_buf_append(&bad, r4.data, r4.len));
    for (size_t i = 0; i + 9 < bad.len; i++)
        if (!memcmp(bad.data + i, "\"requests\":4", 12)) {
            bad.data[i + 11] = '9';
            break;
        }
    body = t_renew_body(nonce, &bad, NULL);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "usage report altered");
    free(body);
    /* altered chain: report 5 does not follow report 4 */
    t_report(5, sha3, 5, &r5, sha);
    body = t_renew_body(nonce, &r5, NULL);
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "does not chain to report 4");
    free(body);
    /* the owner sees the use of the latest accepted report and every event, named */
    char b[256];
    snprintf(b, sizeof(b), "{\"KeyId\":\"%s\"}", t_key);
    o = t_ok(OWNER, "CloisterGetUsage", b);
    json_t *rows = json_object_get(o, "Usage"), *ev = json_object_get(o, "Events");
    bool found = false;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        if (json_integer_value(json_object_get(r, "Requests")) == 4) {
            assert_int_equal(json_integer_value(json_object_get(r, "PromptTokens")), 40);
            assert_int_equal(json_integer_value(json_object_get(r, "CompletionTokens")), 28);
            assert_string_equal(json_string_value(json_object_get(r, "Consumer")), "Clinic A");
            found = true;
        }
    }
    assert_true(found);
    const char *kinds[] = {"gap", "replay", "reorder", "altered", "altered"};
    assert_int_equal(json_array_size(ev), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(ev, i), "Kind")), kinds[i]);
    json_decref(o);
    cl_buf_free(&r1);
    cl_buf_free(&r2);
    cl_buf_free(&r3);
    cl_buf_free(&r4);
    cl_buf_free(&r5);
    cl_buf_free(&bad);
}

static void test_operator_cannot_manage(void **state)
{
    (void)state;
    char b[9000];
    snprintf(b, sizeof(b), "{\"KeyId\":\"%s\",\"LicenceId\":\"lic-a\"}", t_key);
    t_refused(ENCLAVE, "CloisterRevokeLicence", b, "licences are managed");
    t_refused(ENCLAVE, "CloisterGetUsage", b, "licences are managed");
    t_refused("arn:aws:iam::111122223333:user/colleague", "CloisterListLicences", b, "managed only by the key's");
    /* renewal is the enclave's path only: no Recipient, no renewal */
    snprintf(b, sizeof(b), "{\"CiphertextBlob\":\"%s\",\"Nonce\":\"" DIGEST "\"}", t_blob);
    t_refused(ENCLAVE, "CloisterRenewLicence", b, "requires a Recipient");
}

/* The key policy is evaluated again at each renewal: an owner who drops the
 * release statement (as when the enclave's PCRs leave the policy), or
 * schedules the key's deletion, stops renewals. Runs last: it breaks the key. */
static void test_policy_and_key_state_stop_renewals(void **state)
{
    (void)state;
    const char *nonce = "0303030303030303030303030303030303030303030303030303030303030303";
    char *body = t_renew_body(nonce, NULL, NULL), b[2048];
    json_decref(t_ok(ENCLAVE, "CloisterRenewLicence", body));
    snprintf(b, sizeof(b),
             "{\"KeyId\":\"%s\",\"Policy\":\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":[{"
             "\\\"Sid\\\":\\\"Admin\\\",\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":"
             "\\\"" OWNER "\\\"},\\\"Action\\\":\\\"kms:*\\\",\\\"Resource\\\":\\\"*\\\"}]}\"}",
             t_key);
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    t_refused(ENCLAVE, "CloisterRenewLicence", body, "AccessDeniedException");
    snprintf(b, sizeof(b), "{\"KeyId\":\"%s\",\"PendingWindowInDays\":7}", t_key);
    json_decref(t_ok(OWNER, "ScheduleKeyDeletion", b));
    t_refused(OWNER, "CloisterRenewLicence", body, "pending deletion");
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renewal_grant),
        cmocka_unit_test(test_usage_chain),
        cmocka_unit_test(test_operator_cannot_manage),
        cmocka_unit_test(test_policy_and_key_state_stop_renewals),
    };
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
