/* cloister-kms operations through the request handler: AWS JSON shapes and
 * exceptions, Recipient (sim-signed and real Nitro documents), and the
 * attestation policy matrix. */
#include "testutil.h"

#include <jansson.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/file.h"
#include "cloister/kms.h"
#include "cloister/kms_attest.h"
#include "cloister/kms_client.h"

#define ENCLAVE "arn:aws:iam::111122223333:user/enclave"
#define OWNER "arn:aws:iam::111122223333:user/owner"
#define OUTSIDER "arn:aws:iam::999988887777:user/mallory"

static char t_dir[256];
static struct cl_kms_store *t_st;
static struct cl_kms_attest_roots *t_roots;
static cl_attest_signer *t_signer, *t_rogue;
static cl_pkey *t_rsa;
static struct cl_kms_server_config t_cfg;
static int64_t t_fixed_now_ms;
static int64_t t_now(void) { return t_fixed_now_ms; }

static int t_setup(void **state)
{
    (void)state;
    snprintf(t_dir, sizeof(t_dir), "/tmp/cl_kms_api_XXXXXX");
    if (!mkdtemp(t_dir))
        return -1;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/store", t_dir);
    struct cl_buf root;
    cl_buf_init(&root, 8192, CL_BUF_NONE);
    if (cl_kms_store_init(sub, "us-east-1", "111122223333") || cl_kms_store_open(sub, &t_st) ||
        cl_attest_signer_ephemeral(&t_signer) || cl_attest_signer_ephemeral(&t_rogue) ||
        cl_attest_signer_root_der(t_signer, &root) || cl_pkey_generate(CL_PKEY_RSA, &t_rsa))
        return -1;
    const uint8_t *p[1] = {root.data};
    size_t l[1] = {root.len};
    if (cl_kms_attest_roots_from_der(p, l, 1, 300000, &t_roots))
        return -1;
    cl_buf_free(&root);
    t_cfg.store = t_st;
    t_cfg.attest = cl_kms_attest_verify;
    t_cfg.attest_arg = t_roots;
    return 0;
}

static int t_teardown(void **state)
{
    (void)state;
    cl_kms_store_close(t_st);
    cl_kms_attest_roots_free(t_roots);
    cl_attest_signer_free(t_signer);
    cl_attest_signer_free(t_rogue);
    cl_pkey_free(t_rsa);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Runs op; returns the parsed response (caller decrefs) and the status. */
static json_t *t_call(const char *principal, const char *op, const char *body, int *status, char *err_type)
{
    struct cl_kms_response r;
    cl_kms_response_init(&r);
    cl_kms_handle_op(&t_cfg, principal, op, (const uint8_t *)body, strlen(body), &r);
    *status = r.status;
    if (err_type)
        snprintf(err_type, 64, "%s", r.error_type);
    json_error_t je;
    json_t *o = json_loadb((const char *)r.body.data, r.body.len, 0, &je);
    if (!o)
        fail_msg("response is not JSON: %.*s", (int)r.body.len, (const char *)r.body.data);
    if (r.status != 200)
        assert_string_equal(json_string_value(json_object_get(o, "__type")), r.error_type);
    cl_kms_response_free(&r);
    return o;
}

static json_t *t_ok(const char *principal, const char *op, const char *body)
{
    int st;
    json_t *o = t_call(principal, op, body, &st, NULL);
    if (st != 200)
        fail_msg("%s failed: %s", op, json_dumps(o, 0));
    return o;
}

static void t_expect(const char *principal, const char *op, const char *body, const char *type)
{
    int st;
    char et[64];
    json_t *o = t_call(principal, op, body, &st, et);
    if (st == 200 || strcmp(et, type))
        fail_msg("%s: want %s, got %d %s", op, type, st, json_dumps(o, 0));
    json_decref(o);
}

static char *t_doc_b64(cl_attest_signer *s, bool debug, uint8_t pcr_base)
{
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    for (int i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        memset(pcr[i], (debug && i < 3) ? 0 : pcr_base + i, CL_ATTEST_PCR_LEN);
    cl_attest_signer_set_pcrs(s, 0xffff, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    struct cl_buf pub, doc, b64;
    cl_buf_init(&pub, 4096, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    cl_buf_init(&b64, 4 * CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_pkey_public_der(t_rsa, &pub));
    assert_ok(cl_attest_signer_sign(s, pub.data, pub.len, NULL, 0, NULL, 0, &doc));
    assert_ok(cl_b64_encode(doc.data, doc.len, CL_B64_STD, &b64));
    assert_ok(cl_buf_append_u8(&b64, 0));
    cl_buf_free(&pub);
    cl_buf_free(&doc);
    return (char *)b64.data;
}

static void t_expect_msg(const char *principal, const char *op, const char *body, const char *type, const char *sub)
{
    int st;
    char et[64];
    json_t *o = t_call(principal, op, body, &st, et);
    const char *msg = json_string_value(json_object_get(o, "message"));
    if (st == 200 || strcmp(et, type) || !msg || !strstr(msg, sub))
        fail_msg("%s: want %s containing '%s', got %d %s", op, type, sub, st, json_dumps(o, 0));
    json_decref(o);
}

/* {"KeyId": kid, "Policy": <policy as a string>, flag: true} (caller frees). */
static char *t_put_body(const char *kid, json_t *policy, const char *flag)
{
    char *ps = json_dumps(policy, JSON_COMPACT);
    json_t *b = json_pack("{s:s,s:s}", kid ? "KeyId" : "Description", kid ? kid : "x", "Policy", ps);
    if (flag)
        json_object_set_new(b, flag, json_true());
    char *out = json_dumps(b, JSON_COMPACT);
    free(ps);
    json_decref(b);
    json_decref(policy);
    return out;
}

static json_t *t_stmt(const char *sid, const char *effect, const char *principal, const char *action, json_t *cond)
{
    json_t *st = json_pack("{s:s,s:s,s:{s:s},s:s,s:s}", "Sid", sid, "Effect", effect, "Principal", "AWS", principal,
                           "Action", action, "Resource", "*");
    if (cond)
        json_object_set_new(st, "Condition", cond);
    return st;
}

static json_t *t_pcr0_cond(void)
{
    char p0[97];
    for (int i = 0; i < 48; i++)
        snprintf(p0 + 2 * i, 3, "%02x", 0x10);
    return json_pack("{s:{s:s}}", "StringEqualsIgnoreCase", "kms:RecipientAttestation:PCR0", p0);
}

/* Issue 9 part 2: CreateKey's default policy, the lockout and
 * unattested-release checks on PutKeyPolicy/CreateKey, CreateGrant. */
static void test_policy_safety(void **state)
{
    (void)state;
    json_t *k = t_ok(OWNER, "CreateKey", "{}");
    const char *kid = json_string_value(json_object_get(json_object_get(k, "KeyMetadata"), "KeyId"));
    char body[512];
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", kid);
    /* the default policy is the creator's, not its account's */
    json_t *gp = t_ok(OWNER, "GetKeyPolicy", body);
    assert_non_null(strstr(json_string_value(json_object_get(gp, "Policy")), "\"AWS\":\"" OWNER "\""));
    json_decref(gp);
    t_expect_msg(ENCLAVE, "DescribeKey", body, "AccessDeniedException", "no resource-based policy allows");
    /* grants: policy first, then unsupported */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"GranteePrincipal\":\"%s\",\"Operations\":[\"Decrypt\"]}", kid,
             ENCLAVE);
    t_expect_msg(ENCLAVE, "CreateGrant", body, "AccessDeniedException", "kms:CreateGrant");
    t_expect_msg(OWNER, "CreateGrant", body, "UnsupportedOperationException", "grants are not supported");
    /* lockout safety check, and its bypass */
    char *b = t_put_body(kid, json_pack("{s:[o]}", "Statement", t_stmt("Use", "Allow", OWNER, "kms:Encrypt", NULL)),
                         NULL);
    t_expect_msg(OWNER, "PutKeyPolicy", b, "MalformedPolicyDocumentException", "lockout safety check");
    free(b);
    b = t_put_body(NULL, json_pack("{s:[o]}", "Statement", t_stmt("Use", "Allow", OWNER, "kms:Encrypt", NULL)), NULL);
    t_expect_msg(OWNER, "CreateKey", b, "MalformedPolicyDocumentException", "lockout safety check");
    free(b);
    /* the release principal (ENCLAVE, attested Decrypt) may not get anything unattested */
    json_t *base = json_pack("{s:[o,o]}", "Statement", t_stmt("Admin", "Allow", OWNER, "kms:*", NULL),
                             t_stmt("Release", "Allow", ENCLAVE, "kms:Decrypt", t_pcr0_cond()));
    b = t_put_body(kid, json_incref(base), NULL);
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    free(b);
    static const char *const bad_actions[] = {"kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*",
                                              "kms:PutKeyPolicy", "kms:CreateGrant"};
    for (size_t i = 0; i < sizeof(bad_actions) / sizeof(bad_actions[0]); i++) {
        json_t *p = json_deep_copy(base);
        json_array_append_new(json_object_get(p, "Statement"), t_stmt("Oops", "Allow", ENCLAVE, bad_actions[i], NULL));
        b = t_put_body(kid, p, NULL);
        t_expect_msg(OWNER, "PutKeyPolicy", b, "MalformedPolicyDocumentException",
                     "release principal " ENCLAVE " perform");
        free(b);
    }
    /* dropping the attestation condition is caught too (ENCLAVE was a release principal of the old policy) */
    b = t_put_body(kid, json_pack("{s:[o,o]}", "Statement", t_stmt("Admin", "Allow", OWNER, "kms:*", NULL),
                                  t_stmt("Release", "Allow", ENCLAVE, "kms:Decrypt", NULL)),
                   NULL);
    t_expect_msg(OWNER, "PutKeyPolicy", b, "MalformedPolicyDocumentException", "(statement Release)");
    free(b);
    /* ...unless the owner forces it */
    b = t_put_body(kid, json_pack("{s:[o,o]}", "Statement", t_stmt("Admin", "Allow", OWNER, "kms:*", NULL),
                                  t_stmt("Release", "Allow", ENCLAVE, "kms:Decrypt", NULL)),
                   "CloisterAllowUnattestedRelease");
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    free(b);
    /* an unattested Allow for ENCLAVE covered by a Deny that certainly applies is fine */
    json_t *p = json_deep_copy(base);
    json_array_append_new(json_object_get(p, "Statement"), t_stmt("Broad", "Allow", ENCLAVE, "kms:Decrypt", NULL));
    json_array_append_new(json_object_get(p, "Statement"),
                          json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:{s:s}}}", "Sid", "NoDoc", "Effect", "Deny", "Principal",
                                    "*", "Action", "kms:Decrypt", "Resource", "*", "Condition", "Null",
                                    "kms:RecipientAttestation:PCR0", "true"));
    b = t_put_body(kid, p, NULL);
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    free(b);
    json_decref(base);
    json_decref(k);
}

/* Issue 9 part 3: with two trusted roots, release only through a statement
 * pinning cloister:attestation-root-sha256, and only for that root. */
static void test_two_roots(void **state)
{
    (void)state;
    struct cl_buf r1, r2;
    cl_buf_init(&r1, 8192, CL_BUF_NONE);
    cl_buf_init(&r2, 8192, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(t_signer, &r1));
    assert_ok(cl_attest_signer_root_der(t_rogue, &r2));
    const uint8_t *p[2] = {r1.data, r2.data};
    size_t l[2] = {r1.len, r2.len};
    struct cl_kms_attest_roots *two = NULL;
    assert_ok(cl_kms_attest_roots_from_der(p, l, 2, 300000, &two));
    char fp[65], fp_rogue[65];
    assert_ok(cl_kms_attest_root_fingerprint(two, 0, fp));
    assert_ok(cl_kms_attest_root_fingerprint(two, 1, fp_rogue));
    assert_string_not_equal(fp, fp_rogue);
    assert_err(cl_kms_attest_root_fingerprint(two, 2, fp), CL_E_CORE_INVALID_ARG);
    void *saved = t_cfg.attest_arg;
    t_cfg.attest_arg = two;

    json_t *k = t_ok(OWNER, "CreateKey", "{}");
    const char *kid = json_string_value(json_object_get(json_object_get(k, "KeyMetadata"), "KeyId"));
    json_t *pinned = t_pcr0_cond();
    json_object_set_new(pinned, "StringEquals", json_pack("{s:s}", CL_POLICY_ROOT_KEY, fp));
    char *b = t_put_body(kid, json_pack("{s:[o,o]}", "Statement", t_stmt("Admin", "Allow", OWNER, "kms:*", NULL),
                                        t_stmt("Pinned", "Allow", ENCLAVE, "kms:Decrypt", pinned)),
                         "CloisterAllowUnattestedRelease"); /* OWNER may decrypt unattested here: not the point */
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    free(b);
    char gdk[256], *good = t_doc_b64(t_signer, false, 0x10), *rogue = t_doc_b64(t_rogue, false, 0x10);
    snprintf(gdk, sizeof(gdk), "{\"KeyId\":\"%s\",\"KeySpec\":\"AES_256\"}", kid);
    json_t *g = t_ok(OWNER, "GenerateDataKey", gdk);
    static char body[32768];
#define T_DEC2(doc)                                                                                                \
    (snprintf(body, sizeof(body), "{\"CiphertextBlob\":\"%s\",\"Recipient\":{\"AttestationDocument\":\"%s\"}}",     \
              json_string_value(json_object_get(g, "CiphertextBlob")), doc),                                       \
     body)
    json_decref(t_ok(ENCLAVE, "Decrypt", T_DEC2(good)));
    t_expect_msg(ENCLAVE, "Decrypt", T_DEC2(rogue), "AccessDeniedException", "no resource-based policy allows");
    /* an unpinned statement: nothing for either root, with the reason */
    b = t_put_body(kid, json_pack("{s:[o,o]}", "Statement", t_stmt("Admin", "Allow", OWNER, "kms:*", NULL),
                                  t_stmt("Unpinned", "Allow", ENCLAVE, "kms:Decrypt", t_pcr0_cond())),
                   "CloisterAllowUnattestedRelease");
    json_decref(t_ok(OWNER, "PutKeyPolicy", b));
    free(b);
    t_expect_msg(ENCLAVE, "Decrypt", T_DEC2(rogue), "AccessDeniedException",
                 "statement Unpinned does not pin " CL_POLICY_ROOT_KEY " (2 roots trusted)");
    t_expect_msg(ENCLAVE, "Decrypt", T_DEC2(good), "AccessDeniedException", "does not pin");
    /* GenerateRandom needs no key and no policy: unaffected */
    snprintf(body, sizeof(body), "{\"NumberOfBytes\":8,\"Recipient\":{\"AttestationDocument\":\"%s\"}}", rogue);
    json_decref(t_ok(ENCLAVE, "GenerateRandom", body));
#undef T_DEC2
    t_cfg.attest_arg = saved;
    cl_kms_attest_roots_free(two);
    free(good);
    free(rogue);
    json_decref(g);
    json_decref(k);
    cl_buf_free(&r1);
    cl_buf_free(&r2);
}

static void test_basic_ops(void **state)
{
    (void)state;
    json_t *k = t_ok(OWNER, "CreateKey", "{\"Description\":\"d\",\"KeyUsage\":\"ENCRYPT_DECRYPT\"}");
    json_t *md = json_object_get(k, "KeyMetadata");
    const char *kid = json_string_value(json_object_get(md, "KeyId"));
    assert_string_equal(json_string_value(json_object_get(md, "KeyState")), "Enabled");
    assert_true(json_is_true(json_object_get(md, "Enabled")));
    assert_string_equal(json_string_value(json_object_get(md, "AWSAccountId")), "111122223333");
    char body[1024];
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Plaintext\":\"aGVsbG8=\"}", kid);
    json_t *e = t_ok(OWNER, "Encrypt", body);
    snprintf(body, sizeof(body), "{\"CiphertextBlob\":\"%s\"}",
             json_string_value(json_object_get(e, "CiphertextBlob")));
    json_t *d = t_ok(OWNER, "Decrypt", body);
    assert_string_equal(json_string_value(json_object_get(d, "Plaintext")), "aGVsbG8=");
    /* outsiders are refused by the default policy */
    t_expect(OUTSIDER, "Decrypt", body, "AccessDeniedException");
    /* validation and unknown-operation errors */
    t_expect(OWNER, "Encrypt", "{\"KeyId\":\"alias/none\",\"Plaintext\":\"aGVsbG8=\"}", "NotFoundException");
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Plaintext\":\"not base64!\"}", kid);
    t_expect(OWNER, "Encrypt", body, "ValidationException");
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", kid);
    t_expect(OWNER, "Encrypt", body, "ValidationException");
    t_expect(OWNER, "GenerateRandom", "{\"NumberOfBytes\":1025}", "ValidationException");
    t_expect(OWNER, "GenerateRandom", "{\"NumberOfBytes\":\"8\"}", "ValidationException");
    t_expect(OWNER, "Frobnicate", "{}", "UnknownOperationException");
    t_expect(OWNER, "ListKeys", "[1]", "SerializationException");
    t_expect(OWNER, "ListKeys", "{\"Limit\":1,\"Limit\":2}", "SerializationException");
    t_expect(OWNER, "Decrypt", "{\"CiphertextBlob\":\"AAAA\"}", "InvalidCiphertextException");
    t_expect(OWNER, "CreateKey", "{\"Policy\":\"{}\"}", "MalformedPolicyDocumentException");
    t_expect(OWNER, "CreateKey", "{\"KeySpec\":\"RSA_2048\"}", "ValidationException");
    snprintf(body, sizeof(body), "{\"AliasName\":\"alias/aws/x\",\"TargetKeyId\":\"%s\"}", kid);
    t_expect(OWNER, "CreateAlias", body, "InvalidAliasNameException");
    /* alias paging */
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof(body), "{\"AliasName\":\"alias/page-%d\",\"TargetKeyId\":\"%s\"}", i, kid);
        json_decref(t_ok(OWNER, "CreateAlias", body));
    }
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Limit\":2}", kid);
    json_t *la = t_ok(OWNER, "ListAliases", body);
    assert_int_equal(json_array_size(json_object_get(la, "Aliases")), 2);
    assert_true(json_is_true(json_object_get(la, "Truncated")));
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Limit\":2,\"Marker\":\"%s\"}", kid,
             json_string_value(json_object_get(la, "NextMarker")));
    json_decref(la);
    la = t_ok(OWNER, "ListAliases", body);
    assert_int_equal(json_array_size(json_object_get(la, "Aliases")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(la, "Aliases"), 0),
                                                          "AliasName")), "alias/page-2");
    assert_true(json_is_false(json_object_get(la, "Truncated")));
    json_decref(la);
    /* deletion lifecycle */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"PendingWindowInDays\":6}", kid);
    t_expect(OWNER, "ScheduleKeyDeletion", body, "ValidationException");
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"PendingWindowInDays\":7}", kid);
    json_decref(t_ok(OWNER, "ScheduleKeyDeletion", body));
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Plaintext\":\"aGVsbG8=\"}", kid);
    t_expect(OWNER, "Encrypt", body, "KMSInvalidStateException");
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", kid);
    json_decref(t_ok(OWNER, "CancelKeyDeletion", body));
    json_t *dk = t_ok(OWNER, "DescribeKey", body);
    assert_string_equal(json_string_value(json_object_get(json_object_get(dk, "KeyMetadata"), "KeyState")),
                        "Disabled");
    json_decref(dk);
    json_decref(t_ok(OWNER, "EnableKey", body));
    json_decref(t_ok(OWNER, "RotateKeyOnDemand", body));
    /* the blob made before rotation still decrypts */
    snprintf(body, sizeof(body), "{\"CiphertextBlob\":\"%s\"}",
             json_string_value(json_object_get(e, "CiphertextBlob")));
    json_decref(t_ok(OWNER, "Decrypt", body));
    /* GenerateDataKeyWithoutPlaintext has no Plaintext */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"NumberOfBytes\":64}", kid);
    json_t *g = t_ok(OWNER, "GenerateDataKeyWithoutPlaintext", body);
    assert_null(json_object_get(g, "Plaintext"));
    assert_non_null(json_object_get(g, "CiphertextBlob"));
    json_decref(g);
    json_decref(d);
    json_decref(e);
    json_decref(k);
}

/* Policy for the matrix: release to ENCLAVE with PCR0/1 = 0x10.., 0x11..
 * and model context; per-PCR Deny; an explicit Deny for a context value. */
static const char *t_matrix_policy(char *buf, size_t n, bool debug_ok)
{
    char p0[97], p1[97];
    memset(p0, 0, sizeof(p0));
    for (int i = 0; i < 48; i++) {
        snprintf(p0 + 2 * i, 3, "%02x", 0x10);
        snprintf(p1 + 2 * i, 3, "%02X", 0x11); /* upper case: IgnoreCase matters */
    }
    snprintf(buf, n,
             "{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":["
             "{\\\"Sid\\\":\\\"Admin\\\",\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":\\\"" OWNER
             "\\\"},\\\"Action\\\":[\\\"kms:GenerateDataKey\\\",\\\"kms:DescribeKey\\\",\\\"kms:DisableKey\\\","
             "\\\"kms:EnableKey\\\",\\\"kms:PutKeyPolicy\\\",\\\"kms:Decrypt\\\"],\\\"Resource\\\":\\\"*\\\"},"
             "{\\\"Sid\\\":\\\"Release\\\",\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":\\\"" ENCLAVE
             "\\\"},\\\"Action\\\":[\\\"kms:Decrypt\\\",\\\"kms:GenerateDataKey\\\"],\\\"Resource\\\":\\\"*\\\","
             "\\\"Condition\\\":{\\\"StringEqualsIgnoreCase\\\":{\\\"kms:RecipientAttestation:PCR0\\\":[\\\"%s\\\"%s],"
             "\\\"kms:RecipientAttestation:PCR1\\\":[\\\"%s\\\"%s]},"
             "\\\"StringEquals\\\":{\\\"kms:EncryptionContext:cloister:model\\\":\\\"m\\\"}%s}},"
             "{\\\"Sid\\\":\\\"DenyPCR0\\\",\\\"Effect\\\":\\\"Deny\\\",\\\"Principal\\\":\\\"*\\\",\\\"Action\\\":"
             "\\\"kms:Decrypt\\\",\\\"Resource\\\":\\\"*\\\",\\\"Condition\\\":{\\\"StringNotEqualsIgnoreCase\\\":"
             "{\\\"kms:RecipientAttestation:PCR0\\\":[\\\"%s\\\",\\\"%s\\\"]}}},"
             "{\\\"Sid\\\":\\\"DenyRevoked\\\",\\\"Effect\\\":\\\"Deny\\\",\\\"Principal\\\":\\\"*\\\",\\\"Action\\\":"
             "\\\"kms:Decrypt\\\",\\\"Resource\\\":\\\"*\\\",\\\"Condition\\\":{\\\"StringEquals\\\":"
             "{\\\"kms:EncryptionContext:cloister:model\\\":\\\"revoked\\\"}}}]}",
             p0, debug_ok ? ",\\\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\\\"" : "",
             p1, debug_ok ? ",\\\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\\\"" : "",
             debug_ok ? ",\\\"Bool\\\":{\\\"cloister:RecipientAttestation:Debug\\\":\\\"true\\\"}" : "", p0,
             debug_ok ? "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                      : p0);
    return buf;
}

static char t_last_pt[128];

static char *t_gdk(const char *kid, const char *model)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":"
                                 "{\"cloister:model\":\"%s\"}}", kid, model);
    json_t *g = t_ok(OWNER, "GenerateDataKey", body);
    char *blob = strdup(json_string_value(json_object_get(g, "CiphertextBlob")));
    snprintf(t_last_pt, sizeof(t_last_pt), "%s", json_string_value(json_object_get(g, "Plaintext")));
    json_decref(g);
    return blob;
}

static void test_recipient_matrix(void **state)
{
    (void)state;
    static char pol[8192], body[32768];
    json_t *k = t_ok(OWNER, "CreateKey", "{}");
    const char *kid = json_string_value(json_object_get(json_object_get(k, "KeyMetadata"), "KeyId"));
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Policy\":\"%s\"}", kid, t_matrix_policy(pol, sizeof(pol), false));
    json_decref(t_ok(OWNER, "PutKeyPolicy", body));
    char *blob = t_gdk(kid, "m");
    char *good = t_doc_b64(t_signer, false, 0x10);
    char *wrong = t_doc_b64(t_signer, false, 0x20);
    char *debug = t_doc_b64(t_signer, true, 0x10);
    char *rogue = t_doc_b64(t_rogue, false, 0x10);
#define T_DEC(ctx, doc)                                                                                            \
    (snprintf(body, sizeof(body),                                                                                  \
              "{\"CiphertextBlob\":\"%s\",\"EncryptionContext\":%s%s%s%s}", blob, ctx,                             \
              (doc) ? ",\"Recipient\":{\"KeyEncryptionAlgorithm\":\"RSAES_OAEP_SHA_256\",\"AttestationDocument\":\"" \
                    : "",                                                                                          \
              (doc) ? (doc) : "", (doc) ? "\"}" : ""),                                                             \
     body)
    /* release with matching PCRs: CiphertextForRecipient, no Plaintext, unwraps */
    json_t *d = t_ok(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", good));
    assert_null(json_object_get(d, "Plaintext"));
    const char *cfr = json_string_value(json_object_get(d, "CiphertextForRecipient"));
    assert_non_null(cfr);
    struct cl_buf cms, key;
    cl_buf_init(&cms, CL_AWS_CMS_MAX, CL_BUF_NONE);
    cl_buf_init(&key, 1024, CL_BUF_SECURE);
    assert_ok(cl_b64_decode(cfr, strlen(cfr), CL_B64_STD, &cms));
    assert_ok(cl_aws_recipient_unwrap(t_rsa, cms.data, cms.len, &key));
    assert_int_equal(key.len, 32);
    /* the same key GenerateDataKey gave the owner */
    struct cl_buf okey;
    cl_buf_init(&okey, 1024, CL_BUF_SECURE);
    assert_ok(cl_b64_decode(t_last_pt, strlen(t_last_pt), CL_B64_STD, &okey));
    /* even the owner cannot Decrypt without a matching attestation */
    t_expect(OWNER, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", NULL), "AccessDeniedException");
    assert_memory_equal(okey.data, key.data, 32);
    /* a tampered envelope or another key does not unwrap */
    cl_pkey *other = NULL;
    assert_ok(cl_pkey_generate(CL_PKEY_RSA, &other));
    cl_buf_reset(&key);
    assert_err(cl_aws_recipient_unwrap(other, cms.data, cms.len, &key), CL_E_KMS_CMS);
    cms.data[cms.len - 5] ^= 1;
    assert_err(cl_aws_recipient_unwrap(t_rsa, cms.data, cms.len, &key), CL_E_KMS_CMS);
    assert_err(cl_aws_recipient_unwrap(t_rsa, cms.data, cms.len - 1, &key), CL_E_KMS_CMS);
    cl_pkey_free(other);
    json_decref(d);
    /* refused: wrong PCR (explicit deny), debug doc, untrusted root, context */
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", wrong), "AccessDeniedException");
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", debug), "AccessDeniedException");
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", rogue), "ValidationException");
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"x\"}", good), "AccessDeniedException");
    t_expect(ENCLAVE, "Decrypt", T_DEC("{}", good), "AccessDeniedException");
    /* no Recipient: the Release conditions fail and the Deny applies, even for the owner */
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", NULL), "AccessDeniedException");
    /* a garbage document */
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", "AAAA"), "ValidationException");
    /* disabled key */
    snprintf(pol, sizeof(pol), "{\"KeyId\":\"%s\"}", kid);
    json_decref(t_ok(OWNER, "DisableKey", pol));
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", good), "DisabledException");
    json_decref(t_ok(OWNER, "EnableKey", pol));
    /* a matching Deny statement wins over Release */
    free(blob);
    blob = t_gdk(kid, "revoked");
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"revoked\"}", good), "AccessDeniedException");
    free(blob);
    /* GenerateDataKey and GenerateRandom with a Recipient */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"KeySpec\":\"AES_256\",\"EncryptionContext\":"
                                 "{\"cloister:model\":\"m\"},\"Recipient\":{\"AttestationDocument\":\"%s\"}}", kid, good);
    json_t *g = t_ok(ENCLAVE, "GenerateDataKey", body);
    assert_null(json_object_get(g, "Plaintext"));
    assert_non_null(json_object_get(g, "CiphertextForRecipient"));
    json_decref(g);
    snprintf(body, sizeof(body), "{\"NumberOfBytes\":24,\"Recipient\":{\"AttestationDocument\":\"%s\"}}", good);
    json_t *rr = t_ok(ENCLAVE, "GenerateRandom", body);
    cfr = json_string_value(json_object_get(rr, "CiphertextForRecipient"));
    cl_buf_reset(&cms);
    cl_buf_reset(&key);
    assert_ok(cl_b64_decode(cfr, strlen(cfr), CL_B64_STD, &cms));
    assert_ok(cl_aws_recipient_unwrap(t_rsa, cms.data, cms.len, &key));
    assert_int_equal(key.len, 24);
    json_decref(rr);
    snprintf(body, sizeof(body), "{\"NumberOfBytes\":24,\"Recipient\":{\"AttestationDocument\":\"%s\"}}", rogue);
    t_expect(ENCLAVE, "GenerateRandom", body, "ValidationException");
    snprintf(body, sizeof(body), "{\"NumberOfBytes\":24,\"Recipient\":{\"KeyEncryptionAlgorithm\":\"RSA\","
                                 "\"AttestationDocument\":\"%s\"}}", good);
    t_expect(ENCLAVE, "GenerateRandom", body, "ValidationException");

    /* debug documents only with a policy that names the debug key */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Policy\":\"%s\"}", kid, t_matrix_policy(pol, sizeof(pol), true));
    json_decref(t_ok(OWNER, "PutKeyPolicy", body));
    blob = t_gdk(kid, "m");
    json_decref(t_ok(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", debug)));
    /* ...and that policy no longer releases to a production document */
    t_expect(ENCLAVE, "Decrypt", T_DEC("{\"cloister:model\":\"m\"}", good), "AccessDeniedException");
    free(blob);
#undef T_DEC
    free(good);
    free(wrong);
    free(debug);
    free(rogue);
    cl_buf_free(&cms);
    cl_buf_free(&key);
    cl_buf_free(&okey);
    json_decref(k);
}

static void t_audit_cb(void *arg, int64_t seq, const struct cl_kms_audit_row *r)
{
    (void)seq;
    int *c = arg;
    c[0]++;
    if (!strcmp(r->operation, "Decrypt") && r->module_id[0] && !strcmp(r->decision, "allow")) {
        c[1]++;
        assert_string_equal(r->statement, "Release");
        assert_int_equal(strlen(r->pcrs), 3 * 96 + 2);
    }
    if (!strcmp(r->decision, "deny") && !strcmp(r->statement, "DenyPCR0"))
        c[2]++;
    assert_null(strstr(r->pcrs, "aGVsbG8")); /* never payloads */
}

static void test_deletion_window(void **state)
{
    (void)state;
    char body[512];
    t_cfg.now_ms = t_now;
    t_fixed_now_ms = 1800000000000LL;
    json_t *k = t_ok(OWNER, "CreateKey", "{}");
    const char *kid = json_string_value(json_object_get(json_object_get(k, "KeyMetadata"), "KeyId"));
    snprintf(body, sizeof(body), "{\"AliasName\":\"alias/doomed\",\"TargetKeyId\":\"%s\"}", kid);
    json_decref(t_ok(OWNER, "CreateAlias", body));
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"Plaintext\":\"aGVsbG8=\"}", kid);
    json_t *e = t_ok(OWNER, "Encrypt", body);
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\",\"PendingWindowInDays\":7}", kid);
    json_t *sd = t_ok(OWNER, "ScheduleKeyDeletion", body);
    assert_int_equal(json_integer_value(json_object_get(sd, "DeletionDate")), 1800000000LL + 7 * 86400);
    json_decref(sd);
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", kid);
    t_fixed_now_ms += (7 * 86400 - 1) * 1000LL;
    json_decref(t_ok(OWNER, "DescribeKey", body)); /* still pending */
    t_fixed_now_ms += 2000;
    t_expect(OWNER, "DescribeKey", body, "NotFoundException");
    t_expect(OWNER, "DescribeKey", "{\"KeyId\":\"alias/doomed\"}", "NotFoundException");
    snprintf(body, sizeof(body), "{\"CiphertextBlob\":\"%s\"}", json_string_value(json_object_get(e, "CiphertextBlob")));
    t_expect(OWNER, "Decrypt", body, "InvalidCiphertextException");
    json_decref(e);
    json_decref(k);
    t_cfg.now_ms = NULL;
}

static void test_audit_rows(void **state)
{
    (void)state;
    int c[3] = {0};
    assert_ok(cl_kms_audit_list(t_st, t_audit_cb, c));
    assert_true(c[0] > 30);
    assert_true(c[1] >= 1);
    assert_true(c[2] >= 1);
}

static void test_real_nitro_document(void **state)
{
    (void)state;
    char path[1024], rootp[1024];
    CL_TESTDATA("nitro/docs/blocky_2023-07-10_prod_rsa-pubkey.b64", path);
    CL_TESTDATA("nitro/root/AWS_NitroEnclaves_Root-G1.der", rootp);
    struct cl_buf b64;
    cl_buf_init(&b64, 1 << 16, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 1 << 16, &b64));
    while (b64.len && (b64.data[b64.len - 1] == '\n' || b64.data[b64.len - 1] == '\r'))
        b64.len--;
    assert_ok(cl_buf_append_u8(&b64, 0));
    const char *roots[1] = {rootp};
    struct cl_kms_attest_roots *nitro = NULL;
    assert_ok(cl_kms_attest_roots_load(roots, 1, 3600 * 1000, &nitro));
    struct cl_kms_server_config saved = t_cfg;
    t_cfg.attest_arg = nitro;
    t_cfg.now_ms = t_now;
    t_fixed_now_ms = 1688992470620LL + 60000; /* a minute after the document's timestamp */
    static char body[16384];
    snprintf(body, sizeof(body), "{\"NumberOfBytes\":32,\"Recipient\":{\"AttestationDocument\":\"%s\"}}",
             (const char *)b64.data);
    json_t *r = t_ok(ENCLAVE, "GenerateRandom", body);
    assert_null(json_object_get(r, "Plaintext"));
    assert_non_null(json_object_get(r, "CiphertextForRecipient"));
    json_decref(r);
    /* outside the certificate window it is refused */
    t_fixed_now_ms = 1688992470620LL + 4 * 3600 * 1000LL;
    t_expect(ENCLAVE, "GenerateRandom", body, "ValidationException");
    t_cfg = saved;
    cl_kms_attest_roots_free(nitro);
    cl_buf_free(&b64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_ops),
        cmocka_unit_test(test_recipient_matrix),
        cmocka_unit_test(test_audit_rows),
        cmocka_unit_test(test_policy_safety),
        cmocka_unit_test(test_two_roots),
        cmocka_unit_test(test_deletion_window),
        cmocka_unit_test(test_real_nitro_document),
    };
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
