/* cl_kmsc (the KMS client) against a real cloister-kms: GenerateDataKey,
 * Decrypt, Decrypt with Recipient, errors; AWS credential/region loading. */
#include "testutil.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/file.h"
#include "cloister/kms.h"
#include "cloister/kms_client.h"

static char t_arn[257]; /* KeyId of the last Decrypt + Recipient */

static char t_dir[256], t_url[64];
static pid_t t_pid;
static struct cl_kmsc_credentials t_cred;
static cl_attest_signer *t_signer;

static int t_setup(void **state)
{
    (void)state;
    snprintf(t_dir, sizeof(t_dir), "/tmp/cl_kms_cli_XXXXXX");
    if (!mkdtemp(t_dir))
        return -1;
    char store[300], root[300];
    snprintf(store, sizeof(store), "%s/store", t_dir);
    snprintf(root, sizeof(root), "%s/root.der", t_dir);
    struct cl_kms_store *st = NULL;
    struct cl_buf rd;
    cl_buf_init(&rd, 8192, CL_BUF_NONE);
    char ak[CL_KMS_ACCESS_KEY_LEN + 1], sk[CL_KMS_SECRET_LEN + 1];
    if (cl_kms_store_init(store, "eu-west-1", "111122223333") || cl_kms_store_open(store, &st) ||
        cl_kms_user_add(st, "tool", ak, sk) || cl_attest_signer_ephemeral(&t_signer) ||
        cl_attest_signer_root_der(t_signer, &rd) || cl_file_write_atomic(root, rd.data, rd.len, 0644, 0))
        return -1;
    cl_kms_store_close(st);
    cl_buf_free(&rd);
    snprintf(t_cred.access_key, sizeof(t_cred.access_key), "%s", ak);
    snprintf(t_cred.secret, sizeof(t_cred.secret), "%s", sk);
    const char *b = getenv("CLOISTER_BUILD_DIR");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/tools/cloister-kms/cloister-kms", b ? b : ".");
    int fds[2];
    if (pipe(fds))
        return -1;
    t_pid = fork();
    if (t_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl(bin, bin, "serve", store, "--listen", "127.0.0.1:0", "--trust-root", root, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[128] = {0};
    size_t n = 0;
    while (n < sizeof(line) - 1 && read(fds[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    close(fds[0]);
    char *colon = strrchr(line, ':');
    unsigned port;
    if (!colon || sscanf(colon + 1, "%u", &port) != 1)
        return -1;
    snprintf(t_url, sizeof(t_url), "http://127.0.0.1:%u", port);
    return 0;
}

static int t_teardown(void **state)
{
    (void)state;
    kill(t_pid, SIGTERM);
    waitpid(t_pid, NULL, 0);
    cl_attest_signer_free(t_signer);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_gdk_decrypt_recipient(void **state)
{
    (void)state;
    struct cl_kmsc_endpoint ep = {.url = t_url, .region = "eu-west-1"};
    json_t *o = NULL;
    assert_ok(cl_kmsc_call(&ep, &t_cred, "CreateKey", "{}", (struct json_t **)&o));
    char key_id[64];
    snprintf(key_id, sizeof(key_id), "%s",
             json_string_value(json_object_get(json_object_get(o, "KeyMetadata"), "KeyId")));
    json_decref(o);

    struct cl_aws_kv ctx[2] = {{"cloister:model", "tiny"}, {"cloister:model-sha256", "ab"}};
    struct cl_buf pk, blob, pt;
    cl_buf_init(&pk, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, 8192, CL_BUF_NONE);
    cl_buf_init(&pt, 64, CL_BUF_SECURE);
    assert_ok(cl_kmsc_generate_data_key(&ep, &t_cred, key_id, ctx, 2, &pk, &blob, NULL, 0));
    assert_int_equal(pk.len, 32);
    assert_ok(cl_kmsc_decrypt(&ep, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt));
    assert_int_equal(pt.len, 32);
    assert_memory_equal(pt.data, pk.data, 32);
    /* wrong context: the KMS exception is named */
    cl_buf_reset(&pt);
    assert_err(cl_kmsc_decrypt(&ep, &t_cred, NULL, blob.data, blob.len, ctx, 1, &pt), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "InvalidCiphertextException"));
    /* Recipient: sim-signed document with a fresh RSA key */
    cl_pkey *rsa = NULL;
    struct cl_buf pub, doc;
    cl_buf_init(&pub, 4096, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_pkey_generate(CL_PKEY_RSA, &rsa));
    assert_ok(cl_pkey_public_der(rsa, &pub));
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    memset(pcr, 0x42, sizeof(pcr));
    cl_attest_signer_set_pcrs(t_signer, 7, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    assert_ok(cl_attest_signer_sign(t_signer, pub.data, pub.len, NULL, 0, NULL, 0, &doc));
    cl_buf_reset(&pt);
    assert_ok(cl_kmsc_decrypt_for_recipient(&ep, &t_cred, key_id, blob.data, blob.len, ctx, 2, doc.data, doc.len, rsa,
                                           &pt, t_arn, sizeof(t_arn)));
    assert_memory_equal(pt.data, pk.data, 32);
    assert_true(!strncmp(t_arn, "arn:aws:kms:", 12)); /* the key's ARN, which the enclave attests */
    /* a bad secret, a bad URL, a closed port */
    struct cl_kmsc_credentials bad = t_cred;
    bad.secret[0] ^= 1;
    cl_buf_reset(&pt);
    assert_err(cl_kmsc_decrypt(&ep, &bad, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "InvalidSignatureException"));
    struct cl_kmsc_endpoint bad_url = {.url = "ftp://x", .region = "eu-west-1"};
    assert_err(cl_kmsc_decrypt(&bad_url, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_URL);
    struct cl_kmsc_endpoint closed = {.url = "http://127.0.0.1:1", .region = "eu-west-1"};
    assert_err(cl_kmsc_decrypt(&closed, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_HTTP);
    struct cl_buf notsecure;
    cl_buf_init(&notsecure, 64, CL_BUF_NONE);
    assert_err(cl_kmsc_generate_data_key(&ep, &t_cred, key_id, ctx, 2, &notsecure, &blob, NULL, 0), CL_E_CORE_INVALID_ARG);
    cl_pkey_free(rsa);
    cl_buf_free(&pub);
    cl_buf_free(&doc);
    cl_buf_free(&pk);
    cl_buf_free(&blob);
    cl_buf_free(&pt);
}

static void t_doc(cl_attest_signer *s, cl_pkey *rsa, uint8_t pcr_byte, bool debug, struct cl_buf *doc)
{
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    for (int i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        memset(pcr[i], (debug && i < 3) ? 0 : pcr_byte, CL_ATTEST_PCR_LEN);
    cl_attest_signer_set_pcrs(s, 7, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    struct cl_buf pub;
    cl_buf_init(&pub, 4096, CL_BUF_NONE);
    assert_ok(cl_pkey_public_der(rsa, &pub));
    cl_buf_reset(doc);
    assert_ok(cl_attest_signer_sign(s, pub.data, pub.len, NULL, 0, NULL, 0, doc));
    cl_buf_free(&pub);
}

/* The attestation policy matrix end to end: real server, HTTP, SigV4, the
 * policy `cloister kms policy` would print, sim-signed documents. */
static void test_policy_matrix_http(void **state)
{
    (void)state;
    struct cl_kmsc_endpoint ep = {.url = t_url, .region = "eu-west-1"};
    json_t *o = NULL;
    assert_ok(cl_kmsc_call(&ep, &t_cred, "CreateKey", "{}", (struct json_t **)&o));
    char kid[64], body[8192], pcr[97];
    snprintf(kid, sizeof(kid), "%s", json_string_value(json_object_get(json_object_get(o, "KeyMetadata"), "KeyId")));
    json_decref(o);
    memset(pcr, 'a', 96);
    pcr[96] = 0;
    const char *digest = "abababababababababababababababababababababababababababababababab";
    /* the tool user both seals and is the enclave principal: that lets the
     * release principal GenerateDataKey without attestation and locks the
     * policy, so both safety checks have to be overridden explicitly */
    snprintf(body, sizeof(body),
             "{\"KeyId\":\"%s\",\"Policy\":\"{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":["
             "{\\\"Sid\\\":\\\"Admin\\\",\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":"
             "\\\"arn:aws:iam::111122223333:user/tool\\\"},\\\"Action\\\":[\\\"kms:GenerateDataKey\\\",\\\"kms:"
             "DisableKey\\\",\\\"kms:EnableKey\\\"],\\\"Resource\\\":\\\"*\\\"},"
             "{\\\"Sid\\\":\\\"Release\\\",\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":"
             "\\\"arn:aws:iam::111122223333:user/tool\\\"},\\\"Action\\\":\\\"kms:Decrypt\\\",\\\"Resource\\\":"
             "\\\"*\\\",\\\"Condition\\\":{\\\"StringEqualsIgnoreCase\\\":{\\\"kms:RecipientAttestation:PCR0\\\":"
             "\\\"%s\\\"},\\\"StringEquals\\\":{\\\"kms:EncryptionContext:cloister:model-sha256\\\":\\\"%s\\\"}}},"
             "{\\\"Sid\\\":\\\"DenyPCR0\\\",\\\"Effect\\\":\\\"Deny\\\",\\\"Principal\\\":\\\"*\\\","
             "\\\"Action\\\":\\\"kms:Decrypt\\\",\\\"Resource\\\":\\\"*\\\",\\\"Condition\\\":{"
             "\\\"StringNotEqualsIgnoreCase\\\":{\\\"kms:RecipientAttestation:PCR0\\\":\\\"%s\\\"}}}]}\"%s}",
             kid, pcr, digest, pcr, "");
    /* refused without the overrides, each naming its reason */
    assert_err(cl_kmsc_call(&ep, &t_cred, "PutKeyPolicy", body, (struct json_t **)&o), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "lockout safety check"));
    body[strlen(body) - 1] = 0;
    strcat(body, ",\"BypassPolicyLockoutSafetyCheck\":true}");
    assert_err(cl_kmsc_call(&ep, &t_cred, "PutKeyPolicy", body, (struct json_t **)&o), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "perform kms:GenerateDataKey without an attestation document"));
    body[strlen(body) - 1] = 0;
    strcat(body, ",\"CloisterAllowUnattestedRelease\":true}");
    assert_ok(cl_kmsc_call(&ep, &t_cred, "PutKeyPolicy", body, (struct json_t **)&o));
    json_decref(o);
    struct cl_aws_kv ctx[1] = {{"cloister:model-sha256", digest}};
    struct cl_aws_kv bad_ctx[1] = {{"cloister:model-sha256", "00"}};
    struct cl_buf pk, blob, pt, doc;
    cl_buf_init(&pk, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, 8192, CL_BUF_NONE);
    cl_buf_init(&pt, 64, CL_BUF_SECURE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_kmsc_generate_data_key(&ep, &t_cred, kid, ctx, 1, &pk, &blob, t_arn, sizeof(t_arn)));
    cl_pkey *rsa = NULL;
    assert_ok(cl_pkey_generate(CL_PKEY_RSA, &rsa));
    cl_attest_signer *rogue = NULL;
    assert_ok(cl_attest_signer_ephemeral(&rogue));
#define T_REFUSED(dctx, n, want)                                                                                   \
    do {                                                                                                           \
        cl_buf_reset(&pt);                                                                                         \
        assert_err(cl_kmsc_decrypt_for_recipient(&ep, &t_cred, NULL, blob.data, blob.len, dctx, n, doc.data,        \
                                                doc.len, rsa, &pt, t_arn, sizeof(t_arn)),                          \
                   CL_E_NET_HTTP_STATUS);                                                                          \
        if (!strstr(cl_err_detail(), want))                                                                        \
            fail_msg("want %s, got %s", want, cl_err_detail());                                                    \
    } while (0)
    /* release with matching PCRs */
    t_doc(t_signer, rsa, 0xaa, false, &doc);
    cl_buf_reset(&pt);
    assert_ok(cl_kmsc_decrypt_for_recipient(&ep, &t_cred, kid, blob.data, blob.len, ctx, 1, doc.data, doc.len, rsa,
                                           &pt, t_arn, sizeof(t_arn)));
    assert_memory_equal(pt.data, pk.data, 32);
    /* wrong / missing encryption context */
    T_REFUSED(bad_ctx, 1, "AccessDeniedException");
    T_REFUSED(ctx, 0, "AccessDeniedException");
    /* disabled key */
    snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", kid);
    assert_ok(cl_kmsc_call(&ep, &t_cred, "DisableKey", body, (struct json_t **)&o));
    json_decref(o);
    T_REFUSED(ctx, 1, "DisabledException");
    assert_ok(cl_kmsc_call(&ep, &t_cred, "EnableKey", body, (struct json_t **)&o));
    json_decref(o);
    /* wrong PCR: the Deny statement decides */
    t_doc(t_signer, rsa, 0xbb, false, &doc);
    T_REFUSED(ctx, 1, "explicit deny");
    /* debug document */
    t_doc(t_signer, rsa, 0xaa, true, &doc);
    T_REFUSED(ctx, 1, "AccessDeniedException");
    /* untrusted root */
    t_doc(rogue, rsa, 0xaa, false, &doc);
    T_REFUSED(ctx, 1, "ValidationException");
    /* no Recipient: the Release condition fails and the Deny applies */
    cl_buf_reset(&pt);
    assert_err(cl_kmsc_decrypt(&ep, &t_cred, NULL, blob.data, blob.len, ctx, 1, &pt), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "explicit deny"));
#undef T_REFUSED
    cl_attest_signer_free(rogue);
    cl_pkey_free(rsa);
    cl_buf_free(&pk);
    cl_buf_free(&blob);
    cl_buf_free(&pt);
    cl_buf_free(&doc);
}

static void test_credentials(void **state)
{
    (void)state;
    struct cl_kmsc_credentials c;
    char path[400], cfg[400], region[64] = "";
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "tok", 1);
    assert_ok(cl_kmsc_credentials_load(&c));
    assert_string_equal(c.access_key, "AKIDENV");
    assert_string_equal(c.session_token, "tok");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    snprintf(path, sizeof(path), "%s/credentials", t_dir);
    const char *ini = "# comment\n[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key=defsecret\n\n"
                      "[ other ]\n aws_access_key_id = AKIDOTHER \naws_secret_access_key = othersecret\n";
    assert_ok(cl_file_write_atomic(path, ini, strlen(ini), 0600, 0));
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    assert_ok(cl_kmsc_credentials_load(&c));
    assert_string_equal(c.access_key, "AKIDDEF");
    assert_string_equal(c.secret, "defsecret");
    setenv("AWS_PROFILE", "other", 1);
    assert_ok(cl_kmsc_credentials_load(&c));
    assert_string_equal(c.access_key, "AKIDOTHER");
    assert_string_equal(c.secret, "othersecret");
    setenv("AWS_PROFILE", "missing", 1);
    assert_err(cl_kmsc_credentials_load(&c), CL_E_NET_CREDENTIALS);
    snprintf(cfg, sizeof(cfg), "%s/config", t_dir);
    const char *ci = "[default]\nregion = us-west-2\n[profile other]\nregion=ap-south-1\n";
    assert_ok(cl_file_write_atomic(cfg, ci, strlen(ci), 0600, 0));
    setenv("AWS_CONFIG_FILE", cfg, 1);
    setenv("AWS_PROFILE", "other", 1);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    assert_ok(cl_kmsc_region_load(region, sizeof(region)));
    assert_string_equal(region, "ap-south-1");
    setenv("AWS_REGION", "eu-central-1", 1);
    assert_ok(cl_kmsc_region_load(region, sizeof(region)));
    assert_string_equal(region, "eu-central-1");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_REGION");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_CONFIG_FILE");
    cl_kmsc_credentials_wipe(&c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gdk_decrypt_recipient),
        cmocka_unit_test(test_policy_matrix_http),
        cmocka_unit_test(test_credentials),
    };
    int r = cmocka_run_group_tests(tests, t_setup, t_teardown);
    curl_global_cleanup();
    return r;
}
