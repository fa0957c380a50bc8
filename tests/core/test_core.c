#include "testutil.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cloister/cpu.h"
#include "cloister/file.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

static void test_err_table_complete(void **state)
{
    (void)state;
    /* Walk every category's code range: each defined code has a name, a real
     * message and the right category; the first undefined code ends the run. */
    unsigned total = 0;
    for (int cat = CL_ERRCAT_CORE; cat < CL_ERRCAT_COUNT; cat++) {
        unsigned in_cat = 0;
        for (int r = 1; r < 256; r++) {
            cl_err e = (cat << 8) | r;
            if (!cl_err_name(e))
                break;
            assert_string_not_equal(cl_err_str(e), "unknown error");
            assert_true(strlen(cl_err_str(e)) > 5);
            assert_int_equal(cl_err_category(e), cat);
            assert_string_not_equal(cl_err_category_name(e), "unknown");
            in_cat++;
        }
        assert_true(in_cat > 0);
        total += in_cat;
    }
    assert_true(total > 40);
    assert_string_equal(cl_err_str(CL_OK), "success");
    assert_string_equal(cl_err_str(0x7fff), "unknown error");
    assert_null(cl_err_name(0x7fff));
}

static void test_err_detail(void **state)
{
    (void)state;
    char buf[128];
    cl_err e = cl_err_fail(CL_E_SEAL_CHUNK_AUTH, "chunk %d of %d", 3, 9);
    assert_int_equal(e, CL_E_SEAL_CHUNK_AUTH);
    assert_string_equal(cl_err_format(e, buf, sizeof(buf)), "sealed chunk failed authentication: chunk 3 of 9");
    cl_err_clear_detail();
    assert_string_equal(cl_err_format(e, buf, sizeof(buf)), "sealed chunk failed authentication");
}

static void test_buf_cap(void **state)
{
    (void)state;
    struct cl_buf b;
    cl_buf_init(&b, 10, CL_BUF_NONE);
    assert_ok(cl_buf_append(&b, "0123456789", 10));
    assert_err(cl_buf_append_u8(&b, 'x'), CL_E_CORE_LIMIT);
    assert_int_equal(b.len, 10);
    assert_err(cl_buf_reserve(&b, SIZE_MAX), CL_E_CORE_LIMIT);
    cl_buf_reset(&b);
    assert_ok(cl_buf_appendf(&b, "%d-%s", 42, "ab"));
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "42-ab", 5);
    assert_err(cl_buf_appendf(&b, "%s", "123456"), CL_E_CORE_LIMIT);
    cl_buf_free(&b);

    cl_buf_init(&b, 1 << 20, CL_BUF_SECURE);
    for (int i = 0; i < 1000; i++)
        assert_ok(cl_buf_append_u32be(&b, (uint32_t)i));
    assert_int_equal(b.len, 4000);
    assert_int_equal(b.data[3999], 999 & 0xff);
    cl_buf_free(&b);
}

static void test_cursor(void **state)
{
    (void)state;
    const uint8_t data[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    struct cl_cursor c;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    const uint8_t *p;
    cl_cursor_init(&c, data, sizeof(data));
    assert_ok(cl_cursor_u8(&c, &u8));
    assert_int_equal(u8, 1);
    assert_ok(cl_cursor_u16be(&c, &u16));
    assert_int_equal(u16, 0x0203);
    assert_ok(cl_cursor_u32le(&c, &u32));
    assert_int_equal(u32, 0x07060504);
    assert_ok(cl_cursor_u64be(&c, &u64));
    assert_true(u64 == 0x08090a0b0c0d0e0fULL);
    assert_true(cl_cursor_done(&c));
    assert_err(cl_cursor_u8(&c, &u8), CL_E_CORE_TRUNCATED);

    cl_cursor_init(&c, data, 3);
    assert_err(cl_cursor_u32be(&c, &u32), CL_E_CORE_TRUNCATED);
    assert_int_equal(c.off, 0); /* failed read does not move */
    assert_err(cl_cursor_bytes(&c, SIZE_MAX, &p), CL_E_CORE_TRUNCATED);
    assert_ok(cl_cursor_skip(&c, 1));
    assert_err(cl_cursor_expect_end(&c), CL_E_CORE_TRAILING);
    assert_ok(cl_cursor_bytes(&c, 2, &p));
    assert_ptr_equal(p, data + 1);
    assert_ok(cl_cursor_expect_end(&c));

    size_t r;
    assert_err(cl_size_add(SIZE_MAX, 1, &r), CL_E_CORE_OVERFLOW);
    assert_err(cl_size_mul(SIZE_MAX / 2 + 1, 2, &r), CL_E_CORE_OVERFLOW);
    assert_ok(cl_size_mul(3, 4, &r));
    assert_int_equal(r, 12);
}

static void test_hex(void **state)
{
    (void)state;
    struct cl_buf b;
    char out[16];
    uint8_t fixed[2];
    cl_buf_init(&b, 64, CL_BUF_NONE);
    assert_ok(cl_hex_decode("00ffA5", 6, &b));
    assert_int_equal(b.len, 3);
    cl_hex_encode(b.data, b.len, out);
    assert_string_equal(out, "00ffa5");
    assert_err(cl_hex_decode("abc", 3, &b), CL_E_CORE_BAD_HEX);
    assert_err(cl_hex_decode("zz", 2, &b), CL_E_CORE_BAD_HEX);
    assert_int_equal(b.len, 3); /* failed decode appends nothing */
    assert_err(cl_hex_decode_fixed("0011", 4, fixed, 3), CL_E_CORE_BAD_HEX);
    assert_ok(cl_hex_decode_fixed("0a11", 4, fixed, 2));
    assert_int_equal(fixed[0], 10);
    cl_buf_free(&b);
}

static void test_base64(void **state)
{
    (void)state;
    /* RFC 4648 section 10 vectors. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    struct cl_buf b;
    cl_buf_init(&b, 1024, CL_BUF_NONE);
    for (size_t i = 0; i < 7; i++) {
        cl_buf_reset(&b);
        assert_ok(cl_b64_encode((const uint8_t *)plain[i], strlen(plain[i]), CL_B64_STD, &b));
        assert_int_equal(b.len, strlen(std[i]));
        assert_memory_equal(b.data, std[i], b.len);
        cl_buf_reset(&b);
        assert_ok(cl_b64_encode((const uint8_t *)plain[i], strlen(plain[i]), CL_B64_URL, &b));
        assert_int_equal(b.len, strlen(url[i]));
        cl_buf_reset(&b);
        assert_ok(cl_b64_decode(std[i], strlen(std[i]), CL_B64_STD, &b));
        assert_int_equal(b.len, strlen(plain[i]));
        assert_memory_equal(b.data ? (char *)b.data : "", plain[i], b.len);
        cl_buf_reset(&b);
        assert_ok(cl_b64_decode(url[i], strlen(url[i]), CL_B64_URL, &b));
        assert_int_equal(b.len, strlen(plain[i]));
    }
    cl_buf_reset(&b);
    assert_err(cl_b64_decode("Zg=", 3, CL_B64_STD, &b), CL_E_CORE_BAD_BASE64);
    assert_err(cl_b64_decode("Zh==", 4, CL_B64_STD, &b), CL_E_CORE_BAD_BASE64); /* non-canonical */
    assert_err(cl_b64_decode("Zm9v\n", 5, CL_B64_STD, &b), CL_E_CORE_BAD_BASE64);
    assert_err(cl_b64_decode("Z", 1, CL_B64_URL, &b), CL_E_CORE_BAD_BASE64);
    assert_err(cl_b64_decode("Zm-_", 4, CL_B64_STD, &b), CL_E_CORE_BAD_BASE64);
    assert_int_equal(b.len, 0);
    cl_buf_free(&b);
}

static void test_secmem(void **state)
{
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        cl_secmem_disable_memfd_secret(pass == 1);
        void *p = NULL;
        assert_ok(cl_secmem_alloc(100000, &p));
        assert_int_equal(cl_secmem_size(p), 100000);
        assert_int_equal((uintptr_t)p % 4096, 0);
        enum cl_secmem_backend be = cl_secmem_backend_of(p);
        assert_true(be > CL_SECMEM_BACKEND_NONE && be < CL_SECMEM_BACKEND_COUNT);
        if (pass == 1)
            assert_int_not_equal(be, CL_SECMEM_BACKEND_MEMFD_SECRET);
        uint8_t *b = p;
        for (int i = 0; i < 100000; i++)
            assert_int_equal(b[i], 0);
        memset(p, 0xAB, 100000);
        print_message("secmem backend: %s\n", cl_secmem_backend_name(be));
        cl_secmem_free(p);
    }
    cl_secmem_disable_memfd_secret(false);
    cl_secmem_free(NULL);
}

static void test_ct_equal(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0};
    assert_true(cl_ct_equal(a, b, 32));
    b[31] = 1;
    assert_false(cl_ct_equal(a, b, 32));
    b[31] = 0;
    b[0] = 0x80;
    assert_false(cl_ct_equal(a, b, 32));
    assert_true(cl_ct_equal(a, b, 0));
}

static void test_log_json(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct cl_reqid id;
    memset(id.b, 0xab, sizeof(id.b));
    cl_log_set_stream(f);
    cl_log_set_component("test");
    CL_LOG(CL_LOG_INFO, "request_done", CL_LOG_ID("request_id", &id), CL_LOG_SIZE("bytes", 1234),
           CL_LOG_US("duration_us", 99), CL_LOG_ERR(CL_E_SEAL_CHUNK_AUTH), CL_LOG_LIT("route", "a\"b"));
    CL_LOG(CL_LOG_DEBUG, "hidden");
    cl_log_set_stream(NULL);
    fclose(f);
    assert_non_null(strstr(text, "\"event\":\"request_done\""));
    assert_non_null(strstr(text, "\"request_id\":\"abababababababababababababababab\""));
    assert_non_null(strstr(text, "\"bytes\":1234"));
    assert_non_null(strstr(text, "\"duration_us\":99"));
    assert_non_null(strstr(text, "\"error\":\"SEAL_CHUNK_AUTH\""));
    assert_non_null(strstr(text, "\"route\":\"a\\\"b\""));
    assert_null(strstr(text, "hidden"));
    assert_int_equal(text[len - 1], '\n');
    free(text);
}

static void test_file_atomic(void **state)
{
    (void)state;
    char dir[] = "/tmp/cl_test_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/out", dir);
    assert_ok(cl_file_write_atomic(path, "hello", 5, 0600, 1));
    assert_err(cl_file_write_atomic(path, "again", 5, 0600, 1), CL_E_CORE_EXISTS);
    assert_ok(cl_file_write_atomic(path, "world!", 6, 0600, 0));
    struct cl_buf b;
    cl_buf_init(&b, 100, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 100, &b));
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "world!", 6);
    cl_buf_reset(&b);
    assert_err(cl_file_read(path, 3, &b), CL_E_CORE_LIMIT);
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    assert_err(cl_file_read(missing, 3, &b), CL_E_CORE_NOT_FOUND);
    assert_err(cl_file_read(dir, 3, &b), CL_E_CORE_INVALID_ARG);
    cl_buf_free(&b);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* no temp files left behind */
}

static void test_secure_process(void **state)
{
    (void)state;
    assert_ok(cl_secure_process_init());
    assert_int_equal(prctl(PR_GET_DUMPABLE), 0);
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    assert_int_equal(rl.rlim_cur, 0);
}

static void test_cpu(void **state)
{
    (void)state;
    enum cl_cpu_level l = cl_cpu_level();
    assert_true(l >= CL_CPU_SCALAR && l < CL_CPU_COUNT);
    cl_cpu_set_level(CL_CPU_SCALAR);
    assert_int_equal(cl_cpu_level(), CL_CPU_SCALAR);
    cl_cpu_set_level(CL_CPU_NONE);
    assert_int_equal(cl_cpu_level(), l);
    print_message("cpu level: %s\n", cl_cpu_level_name(l));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_table_complete), cmocka_unit_test(test_err_detail),
        cmocka_unit_test(test_buf_cap),            cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_hex),                cmocka_unit_test(test_base64),
        cmocka_unit_test(test_secmem),             cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_log_json),           cmocka_unit_test(test_file_atomic),
        cmocka_unit_test(test_cpu),                cmocka_unit_test(test_secure_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
