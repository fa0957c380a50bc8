#include "testutil.h"

#include <sys/socket.h>
#include <unistd.h>

#include "cloister/bootcfg.h"
#include "cloister/wire.h"

static void test_frames(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct cl_buf b;
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    enum cl_wire_type t;
    unsigned fl, st;
    cl_err code;
    assert_ok(cl_wire_send(sv[0], CL_WIRE_ATTEST_REQ, 0, "nonce", 5));
    assert_ok(cl_wire_send(sv[0], CL_WIRE_OHTTP_REQ, CL_WIRE_FLAG_CHUNKED, NULL, 0));
    assert_ok(cl_wire_send_error(sv[0], 400, CL_E_PROTO_OHTTP_AUTH));
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_ATTEST_REQ);
    assert_int_equal(b.len, 5);
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_OHTTP_REQ);
    assert_int_equal(fl, CL_WIRE_FLAG_CHUNKED);
    assert_int_equal(b.len, 0);
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_ERROR);
    assert_ok(cl_wire_parse_error(&b, &st, &code));
    assert_int_equal(st, 400);
    assert_int_equal(code, CL_E_PROTO_OHTTP_AUTH);
    /* over the limit (a framing error ends the connection: the stream is
     * out of step, so each case uses a fresh pair) */
    assert_ok(cl_wire_send(sv[0], CL_WIRE_ATTEST_REQ, 0, "0123456789", 10));
    assert_err(cl_wire_recv(sv[1], 9, &t, &fl, &b), CL_E_PROTO_LIMIT);
    close(sv[0]);
    close(sv[1]);
    /* bad type and reserved bits */
    const uint8_t bad[2][8] = {{0x42, 0, 0, 0, 0, 0, 0, 0}, {1, 0x80, 0, 0, 0, 0, 0, 0}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        assert_int_equal(write(sv[0], bad[i], 8), 8);
        assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_PROTO_REQUEST_INVALID);
        close(sv[0]);
        close(sv[1]);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* truncated payload, then clean EOF */
    const uint8_t part[10] = {1, 0, 0, 0, 0, 0, 0, 9, 'a', 'b'};
    assert_int_equal(write(sv[0], part, 10), 10);
    close(sv[0]);
    assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_PROTO_OHTTP_MALFORMED);
    assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_CORE_EOF);
    close(sv[1]);
    cl_buf_free(&b);
    assert_string_equal(cl_wire_type_name(CL_WIRE_END), "end");
}

/* The host's writer and the enclave's reader of the boot configuration,
 * against each other and against what a hostile host could send. */
static void test_bootcfg(void **state)
{
    (void)state;
    static struct cl_bootcfg c, back;
    struct cl_buf b;
    cl_buf_init(&b, CL_BOOTCFG_MAX_BYTES, CL_BUF_SECURE);
    cl_bootcfg_init(&c);
    strcpy(c.kms_endpoint, "https://kms.us-east-1.amazonaws.com");
    strcpy(c.kms_region, "us-east-1");
    strcpy(c.access_key_id, "AKIDEXAMPLE");
    strcpy(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    strcpy(c.kms_ca_pem, "-----BEGIN CERTIFICATE-----\nMIIB\\\"x\n-----END CERTIFICATE-----\n");
    for (int l = CL_BOOTCFG_LIM_NONE + 1; l < CL_BOOTCFG_LIM_COUNT; l++)
        c.limits[l] = cl_bootcfg_lim((enum cl_bootcfg_lim)l)->max; /* every limit at its edge */
    c.mmproj = true;
    assert_ok(cl_bootcfg_write(&c, &b));
    assert_ok(cl_bootcfg_parse(b.data, b.len, &back));
    assert_memory_equal(&c, &back, sizeof(c));
    c.mmproj = false;
    /* limits absent: defaults */
    const char *min = "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\","
                      "\"secret_access_key\":\"s\"}}";
    assert_ok(cl_bootcfg_parse((const uint8_t *)min, strlen(min), &back));
    assert_int_equal(back.limits[CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS],
                     cl_bootcfg_lim(CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS)->def);
    assert_false(back.mmproj);
    assert_int_equal(back.limits[CL_BOOTCFG_LIM_KV_CACHE_BITS], 32); /* F32 unless asked */
    const char *f16 = "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\","
                      "\"secret_access_key\":\"s\"},\"limits\":{\"kv_cache_bits\":16}}";
    assert_ok(cl_bootcfg_parse((const uint8_t *)f16, strlen(f16), &back));
    assert_int_equal(back.limits[CL_BOOTCFG_LIM_KV_CACHE_BITS], 16);
    c.limits[CL_BOOTCFG_LIM_KV_CACHE_BITS] = 20;
    cl_buf_reset(&b);
    assert_err(cl_bootcfg_write(&c, &b), CL_E_PROTO_BOOT_CONFIG);
    c.limits[CL_BOOTCFG_LIM_KV_CACHE_BITS] = 16;
    /* what the writer refuses, the reader refuses too */
    c.limits[CL_BOOTCFG_LIM_MAX_SESSIONS] = 257;
    cl_buf_reset(&b);
    assert_err(cl_bootcfg_write(&c, &b), CL_E_PROTO_BOOT_CONFIG);
    assert_int_equal(b.len, 0);
    c.limits[CL_BOOTCFG_LIM_MAX_SESSIONS] = 4;
    strcpy(c.kms_endpoint, "ftp://x");
    assert_err(cl_bootcfg_write(&c, &b), CL_E_PROTO_BOOT_CONFIG);
    static const char *const bad[] = {
        "",
        "[]",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"x\":1}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\",\"y\":\"\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"endpoint\":\"http://j\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\\nx\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\\u0000\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\",\"ca_pem\":\"junk\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"max_tokens\":0}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"max_tokens\":-1}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"max_tokens\":\"9\"}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"threads\":2}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"max_sessions\":257}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"mmproj\":1}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"max_images\":17}}",
        /* the key/value cache type is F16 or F32, nothing between */
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"kv_cache_bits\":24}}",
        "{\"kms\":{\"endpoint\":\"http://k\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"},\"limits\":{\"kv_cache_bits\":8}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (cl_bootcfg_parse((const uint8_t *)bad[i], strlen(bad[i]), &back) != CL_E_PROTO_BOOT_CONFIG)
            fail_msg("boot configuration case %zu accepted", i);
    /* an endpoint one byte over the cap */
    cl_buf_reset(&b);
    assert_ok(cl_buf_append_str(&b, "{\"kms\":{\"endpoint\":\"http://"));
    for (int i = 0; i < CL_BOOTCFG_MAX_ENDPOINT - 6; i++)
        assert_ok(cl_buf_append_u8(&b, 'a'));
    assert_ok(cl_buf_append_str(&b, "\",\"region\":\"r\",\"access_key_id\":\"a\",\"secret_access_key\":\"s\"}}"));
    assert_err(cl_bootcfg_parse(b.data, b.len, &back), CL_E_PROTO_BOOT_CONFIG);
    cl_buf_free(&b);
    cl_bootcfg_wipe(&c);
    cl_bootcfg_wipe(&back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_frames), cmocka_unit_test(test_bootcfg)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
