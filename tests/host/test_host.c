#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cloister/host.h"
#include "cloister/wire.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cl-host-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static cl_err get(const char *json, const char *key, char *out, size_t outlen)
{
    struct cl_buf b;
    cl_buf_init(&b, 256, CL_BUF_NONE);
    cl_err rc = cl_host_json_get_string(json, strlen(json), key, &b);
    if (rc == CL_OK) {
        assert_true(b.len < outlen);
        memcpy(out, b.data, b.len);
        out[b.len] = 0;
    }
    cl_buf_free(&b);
    return rc;
}

static void test_json_get(void **state)
{
    (void)state;
    char v[256];
    assert_ok(get("{\"a\":\"x\",\"state\":\"ready\"}", "state", v, sizeof(v)));
    assert_string_equal(v, "ready");
    assert_ok(get(" {\n\"n\": [1, -2.5e+3, {\"state\": \"no\"}, true, false, null], \"state\" : \"r\\u00e9\\n\\/\"}\t",
                  "state", v, sizeof(v)));
    assert_string_equal(v, "r\xc3\xa9\n/");
    assert_ok(get("{\"k\":\"\\ud83d\\ude00 \xe2\x82\xac\"}", "k", v, sizeof(v)));
    assert_string_equal(v, "\xf0\x9f\x98\x80 \xe2\x82\xac");
    /* nested members with the same name are not top-level */
    assert_err(get("{\"o\":{\"state\":\"ready\"}}", "state", v, sizeof(v)), CL_E_CORE_NOT_FOUND);
    assert_err(get("{}", "state", v, sizeof(v)), CL_E_CORE_NOT_FOUND);
    assert_err(get("{\"state\":1}", "state", v, sizeof(v)), CL_E_NET_HOST_JSON);
    assert_err(get("{\"state\":\"a\",\"state\":\"b\"}", "state", v, sizeof(v)), CL_E_NET_HOST_JSON);
    /* a long key is validated and simply does not match */
    char longkey[300];
    snprintf(longkey, sizeof(longkey), "{\"%0200d\":\"x\",\"k\":\"y\"}", 0);
    assert_ok(get(longkey, "k", v, sizeof(v)));
    assert_string_equal(v, "y");
}

static void test_json_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",          "[]",          "\"s\"",         "{",            "{\"a\"}",        "{\"a\":}",
        "{\"a\":1,}", "{,}",        "{\"a\":1} x",   "{\"a\":01}",   "{\"a\":1.}",     "{\"a\":-}",
        "{\"a\":1e}", "{\"a\":tru}", "{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"a\":\"\xe2\x82\"}", "{\"a\":[1 2]}", "{\"a\":\"unterminated}", "{'a':1}", "{\"a\":1}}",
    };
    char v[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cl_err rc = get(bad[i], "a", v, sizeof(v));
        if (rc != CL_E_NET_HOST_JSON)
            fail_msg("case %zu accepted or wrong error (%d)", i, rc);
    }
    /* depth 16 is fine, 17 is not */
    char deep[128] = "{\"a\":", deeper[128] = "{\"a\":";
    for (int i = 0; i < 15; i++)
        strcat(deep, "[");
    for (int i = 0; i < 15; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    assert_err(get(deep, "a", v, sizeof(v)), CL_E_NET_HOST_JSON); /* found, but not a string */
    assert_ok(cl_host_json_check_keys(deep, strlen(deep), (const char *const[]){"a", NULL}));
    for (int i = 0; i < 16; i++)
        strcat(deeper, "[");
    for (int i = 0; i < 16; i++)
        strcat(deeper, "]");
    strcat(deeper, "}");
    assert_err(cl_host_json_check_keys(deeper, strlen(deeper), (const char *const[]){"a", NULL}), CL_E_NET_HOST_JSON);
}

static void test_json_keys_and_put(void **state)
{
    (void)state;
    const char *const allowed[] = {"a", "b", NULL};
    const char *ok = "{\"a\":1,\"b\":[\"c\"]}", *no = "{\"a\":1,\"c\":2}";
    assert_ok(cl_host_json_check_keys(ok, strlen(ok), allowed));
    assert_err(cl_host_json_check_keys(no, strlen(no), allowed), CL_E_NET_HOST_JSON);
    struct cl_buf b;
    cl_buf_init(&b, 256, CL_BUF_NONE);
    assert_ok(cl_buf_append_str(&b, "{\"k\":"));
    const char raw[] = "q\"b\\s\x01\x7f/\xc3\xa9";
    assert_ok(cl_host_json_put_string(&b, raw, sizeof(raw) - 1));
    assert_ok(cl_buf_append_str(&b, "}"));
    assert_int_equal(b.len, strlen("{\"k\":\"q\\\"b\\\\s\\u0001\\u007f/\xc3\xa9\"}"));
    assert_memory_equal(b.data, "{\"k\":\"q\\\"b\\\\s\\u0001\\u007f/\xc3\xa9\"}", b.len);
    struct cl_buf back;
    cl_buf_init(&back, 64, CL_BUF_NONE);
    assert_ok(cl_host_json_get_string(b.data, b.len, "k", &back));
    assert_int_equal(back.len, sizeof(raw) - 1);
    assert_memory_equal(back.data, raw, back.len);
    cl_buf_free(&b);
    cl_buf_free(&back);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static cl_err load(const char *text, mode_t mode, struct cl_host_creds *c)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/creds.json", tmpdir);
    unlink(p);
    write_file(p, text, mode);
    return cl_host_creds_load(p, c);
}

static void test_creds(void **state)
{
    (void)state;
    struct cl_host_creds c;
    assert_ok(load("{\"access_key_id\":\"AKID\",\"secret_access_key\":\"se/cr+et\",\"region\":\"us-east-1\"}", 0600, &c));
    assert_string_equal((char *)c.access_key_id.data, "AKID");
    assert_string_equal((char *)c.secret_access_key.data, "se/cr+et");
    assert_string_equal((char *)c.region.data, "us-east-1");
    assert_int_equal(c.session_token.len, 0);
    assert_true(c.secret_access_key.flags & CL_BUF_SECURE);
    cl_host_creds_free(&c);
    assert_ok(load("{\"access_key_id\":\"A\",\"secret_access_key\":\"S\",\"region\":\"r\",\"session_token\":\"T\"}", 0400,
                   &c));
    assert_string_equal((char *)c.session_token.data, "T");
    cl_host_creds_free(&c);
    const char *good = "{\"access_key_id\":\"A\",\"secret_access_key\":\"S\",\"region\":\"r\"}";
    assert_err(load(good, 0640, &c), CL_E_CORE_INSECURE_FILE);
    assert_err(load(good, 0604, &c), CL_E_CORE_INSECURE_FILE);
    assert_err(load(good, 0620, &c), CL_E_CORE_INSECURE_FILE);
    assert_err(load("{\"access_key_id\":\"A\",\"region\":\"r\"}", 0600, &c), CL_E_NET_HOST_CREDENTIALS);
    assert_err(load("{\"access_key_id\":\"\",\"secret_access_key\":\"S\",\"region\":\"r\"}", 0600, &c),
               CL_E_NET_HOST_CREDENTIALS);
    assert_err(load("{\"access_key_id\":\"A\\n\",\"secret_access_key\":\"S\",\"region\":\"r\"}", 0600, &c),
               CL_E_NET_HOST_CREDENTIALS);
    assert_err(load("{\"access_key_id\":\"A\",\"secret_access_key\":\"S\",\"region\":\"r\",\"x\":\"y\"}", 0600, &c),
               CL_E_NET_HOST_JSON);
    assert_err(load("{\"access_key_id\":\"A\",\"secret_access_key\":5,\"region\":\"r\"}", 0600, &c),
               CL_E_NET_HOST_JSON);
    assert_err(load("not json", 0600, &c), CL_E_NET_HOST_JSON);
    char p[128], l[128];
    snprintf(p, sizeof(p), "%s/missing.json", tmpdir);
    assert_err(cl_host_creds_load(p, &c), CL_E_CORE_NOT_FOUND);
    assert_err(cl_host_creds_load(tmpdir, &c), CL_E_NET_HOST_CREDENTIALS);
    /* a symbolic link is not followed */
    snprintf(p, sizeof(p), "%s/creds.json", tmpdir);
    snprintf(l, sizeof(l), "%s/link.json", tmpdir);
    assert_ok(load(good, 0600, &c));
    cl_host_creds_free(&c);
    assert_int_equal(symlink(p, l), 0);
    assert_int_not_equal(cl_host_creds_load(l, &c), CL_OK);
}

static void test_kms_url(void **state)
{
    (void)state;
    struct cl_host_kms_url u;
    assert_ok(cl_host_kms_url_parse("http://127.0.0.1:8443", &u));
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8443);
    assert_false(u.https);
    assert_ok(cl_host_kms_url_parse("https://kms.eu-west-1.amazonaws.com/", &u));
    assert_string_equal(u.host, "kms.eu-west-1.amazonaws.com");
    assert_int_equal(u.port, 443);
    assert_true(u.https);
    assert_string_equal(u.endpoint, "https://kms.eu-west-1.amazonaws.com/");
    assert_ok(cl_host_kms_url_parse("http://[::1]:9000/x", &u));
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9000);
    assert_ok(cl_host_kms_url_parse("http://localhost", &u));
    assert_int_equal(u.port, 80);
    static const char *const bad[] = {"",
                                      "ftp://x",
                                      "http://",
                                      "http:///path",
                                      "http://u:p@host",
                                      "http://host:0",
                                      "http://host:65536",
                                      "http://host:",
                                      "http://host:12a",
                                      "http://[::1",
                                      "http://[::1]x",
                                      "http://ho st",
                                      "host:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (cl_host_kms_url_parse(bad[i], &u) != CL_E_NET_URL)
            fail_msg("URL case %zu accepted", i);
}

static void test_boot_config(void **state)
{
    (void)state;
    struct cl_host_creds c;
    struct cl_host_kms_url u;
    struct cl_buf b, v;
    assert_ok(load("{\"access_key_id\":\"AK\",\"secret_access_key\":\"S\\\"x\",\"region\":\"eu\"}", 0600, &c));
    assert_ok(cl_host_kms_url_parse("http://127.0.0.1:4000", &u));
    struct cl_host_config cfg = {.kms = &u, .creds = &c, .max_body = 1024, .timeout_ms = 100, .max_tokens = 7,
                                 .max_sessions = 2};
    cl_buf_init(&b, 4096, CL_BUF_SECURE);
    cl_buf_init(&v, 64, CL_BUF_NONE);
    assert_ok(cl_host_boot_config(&cfg, &b));
    const char *want = "{\"kms\":{\"endpoint\":\"http://127.0.0.1:4000\",\"region\":\"eu\",\"access_key_id\":\"AK\","
                       "\"secret_access_key\":\"S\\\"x\"},\"limits\":{\"max_request_bytes\":1024,\"max_tokens\":7,"
                       "\"max_prompt_tokens\":4096,\"max_sessions\":2,\"request_timeout_ms\":100,\"max_images\":4,"
                       "\"max_image_bytes\":8388608,\"kv_cache_bits\":32}}";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    assert_ok(cl_host_json_check_keys(b.data, b.len, (const char *const[]){"kms", "limits", NULL}));
    assert_err(cl_host_json_get_string(b.data, b.len, "kms", &v), CL_E_NET_HOST_JSON);
    /* --kv-cache f16 reaches the enclave as kv_cache_bits 16 */
    cl_buf_reset(&b);
    cfg.kv_f16 = true;
    assert_ok(cl_host_boot_config(&cfg, &b));
    assert_non_null(memmem(b.data, b.len, "\"kv_cache_bits\":16}", 18));
    cfg.kv_f16 = false;
    /* The host refuses what the enclave would refuse: one table of limits. */
    cl_buf_reset(&b);
    cfg.timeout_ms = 99;
    assert_err(cl_host_boot_config(&cfg, &b), CL_E_NET_HOST_CONFIG);
    assert_int_equal(b.len, 0);
    cfg.timeout_ms = 100;
    cfg.creds = NULL;
    assert_err(cl_host_boot_config(&cfg, &b), CL_E_NET_HOST_CONFIG);
    cl_buf_free(&b);
    cl_buf_free(&v);
    cl_host_creds_free(&c);
}

static void test_nonce(void **state)
{
    (void)state;
    struct cl_buf b;
    cl_buf_init(&b, CL_HOST_NONCE_MAX, CL_BUF_NONE);
    assert_ok(cl_host_nonce_parse("00112233445566778899AABBCCDDEEff", &b));
    assert_int_equal(b.len, 16);
    assert_int_equal(b.data[15], 0xff);
    cl_buf_reset(&b);
    char max[2 * CL_HOST_NONCE_MAX + 3];
    memset(max, 'a', sizeof(max));
    max[2 * CL_HOST_NONCE_MAX] = 0;
    assert_ok(cl_host_nonce_parse(max, &b));
    assert_int_equal(b.len, CL_HOST_NONCE_MAX);
    cl_buf_reset(&b);
    max[2 * CL_HOST_NONCE_MAX] = 'a';
    max[2 * CL_HOST_NONCE_MAX + 2] = 0;
    assert_err(cl_host_nonce_parse(max, &b), CL_E_PROTO_REQUEST_INVALID);
    assert_err(cl_host_nonce_parse("001122334455667788990011223344", &b), CL_E_PROTO_REQUEST_INVALID);
    assert_err(cl_host_nonce_parse(NULL, &b), CL_E_PROTO_REQUEST_INVALID);
    assert_err(cl_host_nonce_parse("0011223344556677889900112233445g", &b), CL_E_CORE_BAD_HEX);
    assert_err(cl_host_nonce_parse("0011223344556677889900112233445", &b), CL_E_PROTO_REQUEST_INVALID);
    assert_err(cl_host_nonce_parse("00112233445566778899001122334455a", &b), CL_E_CORE_BAD_HEX);
    cl_buf_free(&b);
}

static void test_start_rejects_bad_config(void **state)
{
    (void)state;
    struct cl_host_creds c;
    struct cl_host_kms_url u;
    struct cl_host *h = NULL;
    char model[128], notdir[128];
    assert_ok(load("{\"access_key_id\":\"AK\",\"secret_access_key\":\"S\",\"region\":\"eu\"}", 0600, &c));
    assert_ok(cl_host_kms_url_parse("http://127.0.0.1:4000", &u));
    snprintf(model, sizeof(model), "%s/missing.sealed", tmpdir);
    struct cl_host_config cfg = {.listen = "127.0.0.1:0", .enclave_cid = 16, .model_path = model, .kms = &u,
                                 .creds = &c};
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    snprintf(model, sizeof(model), "%s/creds.json", tmpdir);
    cfg.max_body = (size_t)CL_WIRE_MAX_FRAME + 1;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.max_body = 4096;
    cfg.max_inflight = 4095;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.max_inflight = 0;
    cfg.max_body = 0;
    snprintf(notdir, sizeof(notdir), "%s/creds.json", tmpdir);
    cfg.capture_dir = notdir;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.capture_dir = NULL;
    cfg.listen = "127.0.0.1";
    setenv("CLOISTER_VSOCK_DIR", tmpdir, 1);
    chmod(tmpdir, 0700);
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.listen = "999.0.0.1:80";
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    /* Front-door limits beyond their caps are refused, not clamped. */
    cfg.listen = "127.0.0.1:0";
    cfg.max_connections = CL_HOST_MAX_CONNECTIONS_LIMIT + 1;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.max_connections = 0;
    cfg.http_threads = CL_HOST_MAX_HTTP_THREADS + 1;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    cfg.http_threads = 0;
    cfg.enclave_workers = CL_HOST_MAX_ENCLAVE_WORKERS + 1;
    assert_err(cl_host_start(&cfg, &h), CL_E_NET_HOST_CONFIG);
    assert_null(h);
    unsetenv("CLOISTER_VSOCK_DIR");
    cl_host_creds_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_get),         cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_json_keys_and_put), cmocka_unit_test(test_creds),
        cmocka_unit_test(test_kms_url),          cmocka_unit_test(test_boot_config),
        cmocka_unit_test(test_nonce),            cmocka_unit_test(test_start_rejects_bad_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
