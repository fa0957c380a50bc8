#include "testutil.h"

#include <jansson.h>
#include <math.h>

#include "cloister/cbor.h"
#include "cloister/file.h"

static cl_err decode_hex(const char *hex, const struct cl_cbor_limits *lim, uint8_t **bytes, cl_cbor_doc **doc)
{
    size_t n;
    *bytes = cl_test_unhex(hex, &n);
    struct cl_cursor c;
    cl_cursor_init(&c, *bytes, n);
    return cl_cbor_decode(&c, lim, doc);
}

static void expect_fail(const char *hex, cl_err code)
{
    uint8_t *b = NULL;
    cl_cbor_doc *d = NULL;
    cl_err rc = decode_hex(hex, NULL, &b, &d);
    if (rc != code)
        fail_msg("%s -> %s, expected %s", hex, cl_err_name(rc) ? cl_err_name(rc) : "OK", cl_err_name(code));
    assert_null(d);
    free(b);
}

static bool json_matches(const json_t *j, const struct cl_cbor_item *it)
{
    switch (json_typeof(j)) {
    case JSON_REAL: {
        double v = json_real_value(j);
        if (it->type == CL_CBOR_UINT)
            return (double)it->u == v;
        if (it->type == CL_CBOR_NINT)
            return -1.0 - (double)it->u == v;
        if (it->type == CL_CBOR_TAG && (it->u == 2 || it->u == 3) && it->child->type == CL_CBOR_BYTES) {
            double m = 0;
            for (size_t i = 0; i < it->child->len; i++)
                m = m * 256 + it->child->p[i];
            return (it->u == 2 ? m : -1 - m) == v;
        }
        return it->type == CL_CBOR_FLOAT && (it->f == v && signbit(it->f) == signbit(v));
    }
    case JSON_INTEGER: return false;
    case JSON_STRING:
        return it->type == CL_CBOR_TEXT && it->len == json_string_length(j) &&
               memcmp(it->p, json_string_value(j), it->len) == 0;
    case JSON_TRUE: return it->type == CL_CBOR_SIMPLE && it->u == CL_CBOR_TRUE;
    case JSON_FALSE: return it->type == CL_CBOR_SIMPLE && it->u == CL_CBOR_FALSE;
    case JSON_NULL: return cl_cbor_is_null(it);
    case JSON_ARRAY: {
        if (it->type != CL_CBOR_ARRAY || it->count != json_array_size(j))
            return false;
        size_t i = 0;
        for (const struct cl_cbor_item *e = it->child; e; e = e->next, i++)
            if (!json_matches(json_array_get(j, i), e))
                return false;
        return true;
    }
    case JSON_OBJECT: {
        if (it->type != CL_CBOR_MAP || it->count != json_object_size(j))
            return false;
        for (const struct cl_cbor_item *k = it->child; k; k = k->next->next) {
            if (k->type != CL_CBOR_TEXT)
                return false;
            char key[64];
            if (k->len >= sizeof(key))
                return false;
            memcpy(key, k->p, k->len);
            key[k->len] = 0;
            const json_t *v = json_object_get(j, key);
            if (!v || !json_matches(v, k->next))
                return false;
        }
        return true;
    }
    }
    return false;
}

static void test_appendix_a(void **state)
{
    (void)state;
    char path[512];
    CL_TESTDATA("cbor/appendix_a.json", path);
    json_error_t jerr;
    /* Integers beyond int64 appear in the vectors: load all numbers as doubles. */
    json_t *arr = json_load_file(path, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    assert_non_null(arr);
    size_t idx, passed = 0, rejected = 0;
    json_t *e;
    json_array_foreach(arr, idx, e) {
        const char *hex = json_string_value(json_object_get(e, "hex"));
        bool roundtrip = json_is_true(json_object_get(e, "roundtrip"));
        uint8_t *bytes = NULL;
        cl_cbor_doc *doc = NULL;
        cl_err rc = decode_hex(hex, NULL, &bytes, &doc);
        if (!strcmp(hex, "f818")) {
            /* RFC 8949 made two-byte simple values below 32 not well-formed
             * (RFC 7049 listed it as simple(24)). */
            assert_int_equal(rc, CL_E_CBOR_MALFORMED);
            rejected++;
            free(bytes);
            continue;
        }
        if (rc != CL_OK)
            fail_msg("entry %zu (%s) did not decode: %s", idx, hex, cl_err_name(rc));
        const struct cl_cbor_item *root = cl_cbor_root(doc);
        if (roundtrip) {
            struct cl_buf b;
            cl_buf_init(&b, 4096, CL_BUF_NONE);
            assert_ok(cl_cbor_encode_item(&b, root));
            size_t n = strlen(hex) / 2;
            if (b.len != n || memcmp(b.data, bytes, n) != 0)
                fail_msg("entry %zu (%s) did not round-trip", idx, hex);
            cl_buf_free(&b);
        }
        const json_t *dec = json_object_get(e, "decoded");
        const json_t *diag = json_object_get(e, "diagnostic");
        if (dec && !json_matches(dec, root))
            fail_msg("entry %zu (%s) decoded to another value", idx, hex);
        if (diag) {
            struct cl_buf b;
            cl_buf_init(&b, 4096, CL_BUF_NONE);
            assert_ok(cl_cbor_diag(root, &b));
            assert_ok(cl_buf_append_u8(&b, 0));
            if (strcmp((char *)b.data, json_string_value(diag)) != 0)
                fail_msg("entry %zu (%s): diag %s, expected %s", idx, hex, (char *)b.data, json_string_value(diag));
            cl_buf_free(&b);
        }
        passed++;
        cl_cbor_free(doc);
        free(bytes);
    }
    print_message("appendix A: %zu passed, %zu rejected (not well-formed under RFC 8949)\n", passed, rejected);
    assert_int_equal(passed + rejected, json_array_size(arr));
    assert_true(passed >= 81);
    json_decref(arr);
}

static void test_rejects(void **state)
{
    (void)state;
    expect_fail("0000", CL_E_CBOR_TRAILING);
    expect_fail("a201020103", CL_E_CBOR_DUPLICATE_KEY);
    expect_fail("a20102180103", CL_E_CBOR_DUPLICATE_KEY);   /* same key, non-shortest encoding */
    expect_fail("a2616101781861", CL_E_CBOR_TRUNCATED);
    expect_fail("a26161016161f6", CL_E_CBOR_DUPLICATE_KEY);
    expect_fail("bf6161016161f6ff", CL_E_CBOR_DUPLICATE_KEY);
    expect_fail("a281820102018182010203", CL_E_CBOR_DUPLICATE_KEY);
    expect_fail("", CL_E_CBOR_TRUNCATED);
    expect_fail("5affffffff00", CL_E_CBOR_TRUNCATED);
    expect_fail("9bffffffffffffffff", CL_E_CBOR_TRUNCATED);
    expect_fail("bbffffffffffffffff", CL_E_CBOR_TRUNCATED);
    expect_fail("1c", CL_E_CBOR_MALFORMED);
    expect_fail("1f", CL_E_CBOR_MALFORMED);
    expect_fail("3f", CL_E_CBOR_MALFORMED);
    expect_fail("df00", CL_E_CBOR_MALFORMED);
    expect_fail("fc", CL_E_CBOR_MALFORMED);
    expect_fail("ff", CL_E_CBOR_MALFORMED);
    expect_fail("81ff", CL_E_CBOR_MALFORMED);
    expect_fail("a1ff00", CL_E_CBOR_MALFORMED);
    expect_fail("a1ff", CL_E_CBOR_TRUNCATED);
    expect_fail("bf01ff", CL_E_CBOR_MALFORMED);
    expect_fail("c6ff", CL_E_CBOR_MALFORMED);
    expect_fail("5f6161ff", CL_E_CBOR_MALFORMED);   /* text chunk in a byte string */
    expect_fail("5f5fffff", CL_E_CBOR_MALFORMED);   /* nested indefinite chunk */
    expect_fail("5f01ff", CL_E_CBOR_MALFORMED);
    expect_fail("5f41", CL_E_CBOR_TRUNCATED);
    expect_fail("9f01", CL_E_CBOR_TRUNCATED);
    expect_fail("62c328", CL_E_CBOR_BAD_UTF8);
    expect_fail("63eda080", CL_E_CBOR_BAD_UTF8);    /* surrogate */
    expect_fail("62c0af", CL_E_CBOR_BAD_UTF8);      /* overlong */
    expect_fail("64f4908080", CL_E_CBOR_BAD_UTF8);  /* > U+10FFFF */
    expect_fail("f81f", CL_E_CBOR_MALFORMED);
    expect_fail("f9", CL_E_CBOR_TRUNCATED);
    expect_fail("fb0000", CL_E_CBOR_TRUNCATED);
    expect_fail("1900", CL_E_CBOR_TRUNCATED);
    expect_fail("c0", CL_E_CBOR_TRUNCATED);
}

static void test_limits(void **state)
{
    (void)state;
    /* 100 nested arrays: over the default depth of 16. */
    char hex[256];
    for (int i = 0; i < 100; i++)
        memcpy(hex + 2 * i, "81", 2);
    memcpy(hex + 200, "00", 3);
    expect_fail(hex, CL_E_CBOR_DEPTH);
    /* Exactly at the depth limit passes. */
    struct cl_cbor_limits lim = cl_cbor_default_limits;
    lim.max_depth = 4;
    uint8_t *b = NULL;
    cl_cbor_doc *d = NULL;
    assert_ok(decode_hex("81818100", &lim, &b, &d));
    cl_cbor_free(d);
    free(b);
    assert_err(decode_hex("8181818100", &lim, &b, &d), CL_E_CBOR_DEPTH);
    free(b);
    /* Tags count as nesting. */
    assert_err(decode_hex("c1c1c1c100", &lim, &b, &d), CL_E_CBOR_DEPTH);
    free(b);
    lim = cl_cbor_default_limits;
    lim.max_items = 3;
    assert_err(decode_hex("83010203", &lim, &b, &d), CL_E_CBOR_TOO_MANY_ITEMS);
    free(b);
    lim = cl_cbor_default_limits;
    lim.max_input = 2;
    assert_err(decode_hex("820102", &lim, &b, &d), CL_E_CBOR_TOO_LARGE);
    free(b);
    lim = cl_cbor_default_limits;
    lim.max_map_pairs = 1;
    assert_err(decode_hex("a201020304", &lim, &b, &d), CL_E_CBOR_TOO_MANY_ITEMS);
    free(b);
}

static void test_prefix_and_lookup(void **state)
{
    (void)state;
    size_t n;
    /* {"a": 1, -2: h'00', 7: null} followed by one more byte */
    uint8_t *b = cl_test_unhex("a361610121410007f601", &n);
    struct cl_cursor c;
    cl_cursor_init(&c, b, n);
    cl_cbor_doc *d = NULL;
    assert_err(cl_cbor_decode(&c, NULL, &d), CL_E_CBOR_TRAILING);
    assert_int_equal(c.off, 0);
    assert_ok(cl_cbor_decode_prefix(&c, NULL, &d));
    assert_int_equal(cl_cursor_left(&c), 1);
    const struct cl_cbor_item *r = cl_cbor_root(d);
    int64_t v;
    assert_ok(cl_cbor_get_int(cl_cbor_map_get_text(r, "a"), &v));
    assert_int_equal(v, 1);
    assert_non_null(cl_cbor_map_get_int(r, -2));
    assert_true(cl_cbor_is_null(cl_cbor_map_get_int(r, 7)));
    assert_null(cl_cbor_map_get_text(r, "b"));
    assert_err(cl_cbor_get_int(cl_cbor_map_get_int(r, -2), &v), CL_E_CBOR_TYPE);
    assert_int_equal(r->raw_len, n - 1);
    cl_cbor_free(d);
    free(b);
    uint8_t big[] = {0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0};
    cl_cursor_init(&c, big, sizeof(big));
    assert_ok(cl_cbor_decode(&c, NULL, &d));
    assert_err(cl_cbor_get_int(cl_cbor_root(d), &v), CL_E_CBOR_RANGE);
    cl_cbor_free(d);
}

static void test_encoder(void **state)
{
    (void)state;
    struct cl_buf b;
    cl_buf_init(&b, 1024, CL_BUF_NONE);
    assert_ok(cl_cbor_put_map(&b, 2));
    assert_ok(cl_cbor_put_int(&b, 1));
    assert_ok(cl_cbor_put_int(&b, -35));
    assert_ok(cl_cbor_put_text(&b, "k"));
    assert_ok(cl_cbor_put_array(&b, 4));
    assert_ok(cl_cbor_put_uint(&b, 65536));
    assert_ok(cl_cbor_put_bytes(&b, "\x01\x02", 2));
    assert_ok(cl_cbor_put_null(&b));
    assert_ok(cl_cbor_put_float(&b, 0.5));
    char hex[128];
    cl_hex_encode(b.data, b.len, hex);
    assert_string_equal(hex, "a2013822616b841a0001000042010" "2f6f93800");
    assert_err(cl_cbor_put_simple(&b, 25), CL_E_CBOR_RANGE);
    /* Non-canonical input re-encodes canonically (sorted keys, shortest heads). */
    size_t n;
    uint8_t *in = cl_test_unhex("bf61620218010a5f4101ff1900ffff", &n);
    struct cl_cursor c;
    cl_cursor_init(&c, in, n);
    cl_cbor_doc *d = NULL;
    assert_ok(cl_cbor_decode(&c, NULL, &d));
    cl_buf_reset(&b);
    assert_ok(cl_cbor_encode_item(&b, cl_cbor_root(d)));
    cl_hex_encode(b.data, b.len, hex);
    assert_string_equal(hex, "a3010a410118ff616202");
    cl_cbor_free(d);
    free(in);
    cl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appendix_a),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_prefix_and_lookup),
        cmocka_unit_test(test_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
