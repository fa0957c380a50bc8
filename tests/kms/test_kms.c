/* cloister-kms storage, ciphertext blobs, users, audit. */
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/kms.h"

static char t_dir[256];

static int t_setup(void **state)
{
    (void)state;
    snprintf(t_dir, sizeof(t_dir), "/tmp/cl_kms_test_XXXXXX");
    if (!mkdtemp(t_dir))
        return -1;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/store", t_dir);
    return cl_kms_store_init(sub, "us-east-1", "111122223333") == CL_OK ? 0 : -1;
}

static int t_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct cl_kms_store *t_open(void)
{
    char sub[300];
    struct cl_kms_store *s = NULL;
    snprintf(sub, sizeof(sub), "%s/store", t_dir);
    assert_ok(cl_kms_store_open(sub, &s));
    return s;
}

static void test_init_twice_and_perms(void **state)
{
    (void)state;
    char sub[300], key[340];
    snprintf(sub, sizeof(sub), "%s/store", t_dir);
    assert_err(cl_kms_store_init(sub, "us-east-1", "111122223333"), CL_E_CORE_EXISTS);
    assert_err(cl_kms_store_init("/tmp/x", "us-east-1", "12"), CL_E_KMS_VALIDATION);
    snprintf(key, sizeof(key), "%s/root.key", sub);
    struct stat sb;
    assert_int_equal(stat(key, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, 32);
    assert_int_equal(chmod(key, 0644), 0);
    struct cl_kms_store *s = NULL;
    assert_err(cl_kms_store_open(sub, &s), CL_E_CORE_INSECURE_FILE);
    assert_int_equal(chmod(key, 0600), 0);
    s = t_open();
    assert_string_equal(cl_kms_store_region(s), "us-east-1");
    assert_string_equal(cl_kms_store_account(s), "111122223333");
    assert_ok(cl_kms_store_check(s));
    cl_kms_store_close(s);
    char missing[340];
    snprintf(missing, sizeof(missing), "%s/nothing", t_dir);
    assert_err(cl_kms_store_open(missing, &s), CL_E_KMS_ROOT_KEY);
}

static void test_keys_encrypt_decrypt(void **state)
{
    (void)state;
    struct cl_kms_store *s = t_open();
    struct cl_kms_key_meta m, m2;
    assert_ok(cl_kms_key_create(s, "test key", NULL, &m));
    assert_int_equal(strlen(m.key_id), 36);
    assert_int_equal(m.state, CL_KMS_STATE_ENABLED);
    assert_int_equal(m.current_version, 1);
    assert_non_null(strstr(m.arn, "arn:aws:kms:us-east-1:111122223333:key/"));
    assert_ok(cl_kms_key_get(s, m.arn, &m2));
    assert_string_equal(m2.key_id, m.key_id);
    assert_err(cl_kms_key_get(s, "arn:aws:kms:eu-west-1:111122223333:key/x", &m2), CL_E_KMS_NOT_FOUND);
    assert_err(cl_kms_key_get(s, "00000000-0000-4000-8000-000000000000", &m2), CL_E_KMS_NOT_FOUND);
    assert_err(cl_kms_key_get(s, "not-a-key", &m2), CL_E_KMS_NOT_FOUND);

    struct cl_aws_kv ctx[2] = {{"model", "medgemma"}, {"digest", "abc"}};
    struct cl_aws_kv ctx_rev[2] = {{"digest", "abc"}, {"model", "medgemma"}};
    struct cl_aws_kv ctx_bad[2] = {{"model", "medgemma"}, {"digest", "abd"}};
    const char *pt = "PLAINTEXT-MARKER-0123456789";
    struct cl_buf blob, out;
    cl_buf_init(&blob, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    cl_buf_init(&out, CL_KMS_MAX_PLAINTEXT, CL_BUF_SECURE);
    assert_ok(cl_kms_encrypt(s, m.key_id, (const uint8_t *)pt, strlen(pt), ctx, 2, &blob));
    assert_int_equal(blob.len, strlen(pt) + CL_KMS_BLOB_OVERHEAD);
    char kid[37];
    assert_ok(cl_kms_blob_key_id(blob.data, blob.len, kid));
    assert_string_equal(kid, m.key_id);
    /* context order does not matter; content does */
    assert_ok(cl_kms_decrypt(s, blob.data, blob.len, ctx_rev, 2, &out));
    assert_int_equal(out.len, strlen(pt));
    assert_memory_equal(out.data, pt, out.len);
    cl_buf_reset(&out);
    assert_err(cl_kms_decrypt(s, blob.data, blob.len, ctx_bad, 2, &out), CL_E_KMS_BAD_CIPHERTEXT);
    assert_err(cl_kms_decrypt(s, blob.data, blob.len, ctx, 1, &out), CL_E_KMS_BAD_CIPHERTEXT);
    assert_err(cl_kms_decrypt(s, blob.data, blob.len, NULL, 0, &out), CL_E_KMS_BAD_CIPHERTEXT);
    assert_int_equal(out.len, 0);
    /* every byte of the blob matters */
    for (size_t i = 0; i < blob.len; i++) {
        blob.data[i] ^= 0x01;
        cl_err rc = cl_kms_decrypt(s, blob.data, blob.len, ctx, 2, &out);
        assert_true(rc == CL_E_KMS_BAD_CIPHERTEXT || rc == CL_E_KMS_NOT_FOUND);
        blob.data[i] ^= 0x01;
    }
    assert_err(cl_kms_decrypt(s, blob.data, blob.len - 1, ctx, 2, &out), CL_E_KMS_BAD_CIPHERTEXT);
    assert_err(cl_kms_decrypt(s, blob.data, 10, ctx, 2, &out), CL_E_KMS_BAD_CIPHERTEXT);
    /* limits */
    uint8_t big[CL_KMS_MAX_PLAINTEXT + 1] = {0};
    struct cl_buf b2;
    cl_buf_init(&b2, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    assert_ok(cl_kms_encrypt(s, m.key_id, big, CL_KMS_MAX_PLAINTEXT, NULL, 0, &b2));
    cl_buf_reset(&b2);
    assert_err(cl_kms_encrypt(s, m.key_id, big, CL_KMS_MAX_PLAINTEXT + 1, NULL, 0, &b2), CL_E_KMS_VALIDATION);
    assert_err(cl_kms_encrypt(s, m.key_id, big, 0, NULL, 0, &b2), CL_E_KMS_VALIDATION);
    struct cl_aws_kv dup[2] = {{"a", "1"}, {"a", "2"}};
    assert_err(cl_kms_encrypt(s, m.key_id, big, 1, dup, 2, &b2), CL_E_KMS_VALIDATION);
    cl_buf_free(&b2);

    /* rotation keeps the earlier version decryptable and uses the new one */
    uint32_t v;
    assert_ok(cl_kms_key_rotate(s, m.key_id, &v));
    assert_int_equal(v, 2);
    cl_buf_reset(&out);
    assert_ok(cl_kms_decrypt(s, blob.data, blob.len, ctx, 2, &out));
    struct cl_buf blob2;
    cl_buf_init(&blob2, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    assert_ok(cl_kms_encrypt(s, m.key_id, (const uint8_t *)pt, strlen(pt), ctx, 2, &blob2));
    assert_int_equal(blob2.data[3 + 1 + 36 + 3], 2);
    cl_buf_reset(&out);
    assert_ok(cl_kms_decrypt(s, blob2.data, blob2.len, ctx, 2, &out));

    /* state */
    assert_ok(cl_kms_key_set_state(s, m.key_id, CL_KMS_STATE_DISABLED, 0));
    assert_ok(cl_kms_key_get(s, m.key_id, &m2));
    assert_int_equal(m2.state, CL_KMS_STATE_DISABLED);
    assert_string_equal(cl_kms_state_name(m2.state), "Disabled");
    assert_err(cl_kms_key_set_state(s, "00000000-0000-4000-8000-000000000000", CL_KMS_STATE_ENABLED, 0),
               CL_E_KMS_NOT_FOUND);

    /* a second store with a different root key cannot read this blob's key */
    cl_kms_store_close(s);
    /* plaintext never reaches the database files */
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "cat '%s'/store/kms.db* | grep -c PLAINTEXT-MARKER >/dev/null", t_dir);
    assert_int_not_equal(system(cmd), 0);
    cl_buf_free(&blob);
    cl_buf_free(&blob2);
    cl_buf_free(&out);
}

static void t_count_keys(void *arg, const struct cl_kms_key_meta *m)
{
    (void)m;
    (*(int *)arg)++;
}
static void t_count_alias(void *arg, const char *a, const char *k, int64_t c)
{
    (void)a;
    (void)k;
    (void)c;
    (*(int *)arg)++;
}

static void test_aliases_list_policy(void **state)
{
    (void)state;
    struct cl_kms_store *s = t_open();
    struct cl_kms_key_meta a, b, r;
    assert_ok(cl_kms_key_create(s, "a", NULL, &a));
    assert_ok(cl_kms_key_create(s, "b", NULL, &b));
    assert_ok(cl_kms_alias_create(s, "alias/model-key", a.key_id));
    assert_err(cl_kms_alias_create(s, "alias/model-key", b.key_id), CL_E_KMS_EXISTS);
    assert_err(cl_kms_alias_create(s, "model-key", b.key_id), CL_E_KMS_BAD_ALIAS);
    assert_err(cl_kms_alias_create(s, "alias/aws/x", b.key_id), CL_E_KMS_BAD_ALIAS);
    assert_err(cl_kms_alias_create(s, "alias/a b", b.key_id), CL_E_KMS_BAD_ALIAS);
    assert_ok(cl_kms_key_get(s, "alias/model-key", &r));
    assert_string_equal(r.key_id, a.key_id);
    assert_ok(cl_kms_key_get(s, "arn:aws:kms:us-east-1:111122223333:alias/model-key", &r));
    assert_string_equal(r.key_id, a.key_id);
    int n = 0;
    assert_ok(cl_kms_alias_list(s, NULL, t_count_alias, &n));
    assert_int_equal(n, 1);
    n = 0;
    assert_ok(cl_kms_alias_list(s, b.key_id, t_count_alias, &n));
    assert_int_equal(n, 0);
    assert_ok(cl_kms_alias_delete(s, "alias/model-key"));
    assert_err(cl_kms_alias_delete(s, "alias/model-key"), CL_E_KMS_NOT_FOUND);
    assert_err(cl_kms_key_get(s, "alias/model-key", &r), CL_E_KMS_NOT_FOUND);

    bool trunc;
    n = 0;
    assert_ok(cl_kms_key_list(s, NULL, 1, t_count_keys, &n, &trunc));
    assert_int_equal(n, 1);
    assert_true(trunc);
    n = 0;
    assert_ok(cl_kms_key_list(s, a.key_id, 100, t_count_keys, &n, &trunc));
    assert_int_equal(n, 1);
    assert_false(trunc);

    struct cl_buf pol;
    cl_buf_init(&pol, CL_POLICY_MAX_BYTES, CL_BUF_NONE);
    assert_ok(cl_kms_policy_get(s, a.key_id, &pol));
    assert_non_null(memmem(pol.data, pol.len, "arn:aws:iam::111122223333:root", 30));
    assert_err(cl_kms_policy_put(s, a.key_id, "{\"Statement\":[]}"), CL_E_KMS_POLICY_MALFORMED);
    assert_ok(cl_kms_policy_put(s, a.key_id,
                                "{\"Statement\":{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"*\","
                                "\"Resource\":\"*\"}}"));
    cl_buf_reset(&pol);
    assert_ok(cl_kms_policy_get(s, a.key_id, &pol));
    assert_non_null(memmem(pol.data, pol.len, "Deny", 4));
    assert_err(cl_kms_key_create(s, "c", "{bad", &r), CL_E_KMS_POLICY_MALFORMED);
    cl_buf_free(&pol);
    cl_kms_store_close(s);
}

static void t_audit_cb(void *arg, int64_t seq, const struct cl_kms_audit_row *r)
{
    (void)seq;
    assert_string_equal(r->operation, "Decrypt");
    (*(int *)arg)++;
}

static void test_users_audit(void **state)
{
    (void)state;
    struct cl_kms_store *s = t_open();
    char ak[CL_KMS_ACCESS_KEY_LEN + 1], sk[CL_KMS_SECRET_LEN + 1], sk2[CL_KMS_SECRET_LEN + 1], arn[CL_KMS_ARN_MAX];
    assert_ok(cl_kms_user_add(s, "alice", ak, sk));
    assert_int_equal(strlen(ak), 20);
    assert_int_equal(strlen(sk), 40);
    assert_err(cl_kms_user_add(s, "alice", ak, sk2), CL_E_CORE_EXISTS);
    assert_err(cl_kms_user_add(s, "bad name", ak, sk2), CL_E_KMS_VALIDATION);
    assert_err(cl_kms_user_add(s, "", ak, sk2), CL_E_KMS_VALIDATION);
    char ak1[CL_KMS_ACCESS_KEY_LEN + 1];
    assert_ok(cl_kms_user_add(s, "bob", ak1, sk2));
    assert_ok(cl_kms_user_lookup(s, ak1, sk2, arn));
    assert_string_equal(arn, "arn:aws:iam::111122223333:user/bob");
    assert_err(cl_kms_user_lookup(s, "CLKANOPE", sk2, arn), CL_E_KMS_AUTH);
    struct cl_kms_audit_row r;
    memset(&r, 0, sizeof(r));
    r.time_ms = 1;
    snprintf(r.operation, sizeof(r.operation), "Decrypt");
    snprintf(r.decision, sizeof(r.decision), "deny");
    assert_ok(cl_kms_audit_append(s, &r));
    assert_ok(cl_kms_audit_append(s, &r));
    int n = 0;
    assert_ok(cl_kms_audit_list(s, t_audit_cb, &n));
    assert_int_equal(n, 2);
    cl_kms_store_close(s);
    /* user secrets are not stored in the clear */
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "cat '%s'/store/kms.db* | grep -c -F '%s' >/dev/null", t_dir, sk);
    assert_int_not_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_twice_and_perms),
        cmocka_unit_test(test_keys_encrypt_decrypt),
        cmocka_unit_test(test_aliases_list_policy),
        cmocka_unit_test(test_users_audit),
    };
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
