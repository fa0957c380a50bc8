/* cl_awsclient's KMS client against a real cloister-kms: GenerateDataKey,
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

static char t_dir[256], t_url[64];
static pid_t t_pid;
static struct cl_aws_credentials t_cred;
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
    struct cl_kms_endpoint ep = {t_url, "eu-west-1", NULL};
    json_t *o = NULL;
    assert_ok(cl_kms_client_call(&ep, &t_cred, "CreateKey", "{}", (struct json_t **)&o));
    char key_id[64];
    snprintf(key_id, sizeof(key_id), "%s",
             json_string_value(json_object_get(json_object_get(o, "KeyMetadata"), "KeyId")));
    json_decref(o);

    struct cl_policy_kv ctx[2] = {{"cloister:model", "tiny"}, {"cloister:model-sha256", "ab"}};
    struct cl_buf pk, blob, pt;
    cl_buf_init(&pk, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, 8192, CL_BUF_NONE);
    cl_buf_init(&pt, 64, CL_BUF_SECURE);
    assert_ok(cl_kms_generate_data_key(&ep, &t_cred, key_id, ctx, 2, &pk, &blob));
    assert_int_equal(pk.len, 32);
    assert_ok(cl_kms_decrypt_blob(&ep, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt));
    assert_int_equal(pt.len, 32);
    assert_memory_equal(pt.data, pk.data, 32);
    /* wrong context: the KMS exception is named */
    cl_buf_reset(&pt);
    assert_err(cl_kms_decrypt_blob(&ep, &t_cred, NULL, blob.data, blob.len, ctx, 1, &pt), CL_E_NET_HTTP_STATUS);
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
    assert_ok(cl_kms_decrypt_for_recipient(&ep, &t_cred, key_id, blob.data, blob.len, ctx, 2, doc.data, doc.len, rsa,
                                           &pt));
    assert_memory_equal(pt.data, pk.data, 32);
    /* a bad secret, a bad URL, a closed port */
    struct cl_aws_credentials bad = t_cred;
    bad.secret[0] ^= 1;
    cl_buf_reset(&pt);
    assert_err(cl_kms_decrypt_blob(&ep, &bad, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_HTTP_STATUS);
    assert_non_null(strstr(cl_err_detail(), "InvalidSignatureException"));
    struct cl_kms_endpoint bad_url = {"ftp://x", "eu-west-1", NULL};
    assert_err(cl_kms_decrypt_blob(&bad_url, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_URL);
    struct cl_kms_endpoint closed = {"http://127.0.0.1:1", "eu-west-1", NULL};
    assert_err(cl_kms_decrypt_blob(&closed, &t_cred, NULL, blob.data, blob.len, ctx, 2, &pt), CL_E_NET_HTTP);
    struct cl_buf notsecure;
    cl_buf_init(&notsecure, 64, CL_BUF_NONE);
    assert_err(cl_kms_generate_data_key(&ep, &t_cred, key_id, ctx, 2, &notsecure, &blob), CL_E_CORE_INVALID_ARG);
    cl_pkey_free(rsa);
    cl_buf_free(&pub);
    cl_buf_free(&doc);
    cl_buf_free(&pk);
    cl_buf_free(&blob);
    cl_buf_free(&pt);
}

static void test_credentials(void **state)
{
    (void)state;
    struct cl_aws_credentials c;
    char path[400], cfg[400], region[64] = "";
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_SESSION_TOKEN", "tok", 1);
    assert_ok(cl_aws_credentials_load(&c));
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
    assert_ok(cl_aws_credentials_load(&c));
    assert_string_equal(c.access_key, "AKIDDEF");
    assert_string_equal(c.secret, "defsecret");
    setenv("AWS_PROFILE", "other", 1);
    assert_ok(cl_aws_credentials_load(&c));
    assert_string_equal(c.access_key, "AKIDOTHER");
    assert_string_equal(c.secret, "othersecret");
    setenv("AWS_PROFILE", "missing", 1);
    assert_err(cl_aws_credentials_load(&c), CL_E_NET_CREDENTIALS);
    snprintf(cfg, sizeof(cfg), "%s/config", t_dir);
    const char *ci = "[default]\nregion = us-west-2\n[profile other]\nregion=ap-south-1\n";
    assert_ok(cl_file_write_atomic(cfg, ci, strlen(ci), 0600, 0));
    setenv("AWS_CONFIG_FILE", cfg, 1);
    setenv("AWS_PROFILE", "other", 1);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    assert_ok(cl_aws_region_load(region, sizeof(region)));
    assert_string_equal(region, "ap-south-1");
    setenv("AWS_REGION", "eu-central-1", 1);
    assert_ok(cl_aws_region_load(region, sizeof(region)));
    assert_string_equal(region, "eu-central-1");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_REGION");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_CONFIG_FILE");
    cl_aws_credentials_wipe(&c);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gdk_decrypt_recipient),
        cmocka_unit_test(test_credentials),
    };
    int r = cmocka_run_group_tests(tests, t_setup, t_teardown);
    curl_global_cleanup();
    return r;
}
