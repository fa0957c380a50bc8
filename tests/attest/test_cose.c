#include "testutil.h"

#include <jansson.h>

#include "cloister/cose.h"
#include "cloister/crypto.h"

/* SubjectPublicKeyInfo DER prefixes for uncompressed P-256 / P-384 points. */
static const char *spki_p256 = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
static const char *spki_p384 = "3076301006072a8648ce3d020106052b81040022036200";

static json_t *load_json(const char *rel)
{
    char path[512];
    if (!cl_test_path("CLOISTER_TESTDATA", rel, path, sizeof(path)))
        return NULL;
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j)
        fail_msg("cannot load %s: %s", rel, e.text);
    return j;
}

/* Public key from the example's JWK x/y, or NULL for curves we do not take. */
static cl_pkey *jwk_key(const json_t *key)
{
    const char *crv = json_string_value(json_object_get(key, "crv"));
    const char *prefix = !strcmp(crv, "P-256") ? spki_p256 : !strcmp(crv, "P-384") ? spki_p384 : NULL;
    if (!prefix)
        return NULL;
    struct cl_buf der;
    cl_buf_init(&der, 512, CL_BUF_NONE);
    assert_ok(cl_hex_decode(prefix, strlen(prefix), &der));
    assert_ok(cl_buf_append_u8(&der, 0x04));
    const char *x = json_string_value(json_object_get(key, "x")), *y = json_string_value(json_object_get(key, "y"));
    assert_ok(cl_b64_decode(x, strlen(x), CL_B64_URL, &der));
    assert_ok(cl_b64_decode(y, strlen(y), CL_B64_URL, &der));
    cl_pkey *k = NULL;
    assert_ok(cl_pkey_parse(der.data, der.len, &k));
    cl_buf_free(&der);
    return k;
}

static uint8_t *output_cbor(const json_t *j, size_t *n)
{
    return cl_test_unhex(json_string_value(json_object_get(json_object_get(j, "output"), "cbor")), n);
}

static void test_ecdsa_examples(void **state)
{
    (void)state;
    const char *names[] = {"01", "02", "03", "04"};
    for (size_t i = 0; i < 4; i++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "cose/ecdsa-examples/ecdsa-sig-%s.json", names[i]);
        json_t *j = load_json(rel);
        if (!j)
            skip();
        const json_t *sign0 = json_object_get(json_object_get(j, "input"), "sign0");
        const char *alg = json_string_value(json_object_get(sign0, "alg"));
        size_t n;
        uint8_t *msg = output_cbor(j, &n);
        struct cl_cose_sign1 s;
        if (!strcmp(alg, "ES512")) {
            assert_err(cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_GENERIC, NULL, &s), CL_E_COSE_UNSUPPORTED_ALG);
        } else {
            cl_pkey *k = jwk_key(json_object_get(sign0, "key"));
            assert_ok(cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_GENERIC, NULL, &s));
            assert_true(s.tagged);
            /* Our Sig_structure equals the published ToBeSign bytes. */
            struct cl_buf tbs;
            cl_buf_init(&tbs, 4096, CL_BUF_NONE);
            assert_ok(cl_cose_sig_structure(s.protected_raw, s.protected_len, NULL, 0, s.payload, s.payload_len, &tbs));
            size_t tn;
            uint8_t *want = cl_test_unhex(
                json_string_value(json_object_get(json_object_get(j, "intermediates"), "ToBeSign_hex")), &tn);
            assert_int_equal(tbs.len, tn);
            assert_memory_equal(tbs.data, want, tn);
            assert_ok(cl_cose_sign1_verify(&s, k, NULL, 0));
            if (!strcmp(alg, "ES384")) {
                struct cl_cose_sign1 s2;
                assert_ok(cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_NITRO, NULL, &s2));
                assert_ok(cl_cose_sign1_verify(&s2, k, NULL, 0));
                cl_cose_sign1_free(&s2);
                /* External AAD is bound into the signature. */
                assert_err(cl_cose_sign1_verify(&s, k, (const uint8_t *)"x", 1), CL_E_COSE_BAD_SIGNATURE);
            } else {
                assert_err(cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_BAD_HEADER);
            }
            free(want);
            cl_buf_free(&tbs);
            cl_cose_sign1_free(&s);
            cl_pkey_free(k);
        }
        free(msg);
        json_decref(j);
    }
}

struct sign1_case {
    const char *name;
    cl_err generic_parse, generic_verify;
};

static void test_sign1_vectors(void **state)
{
    (void)state;
    const struct sign1_case cases[] = {
        {"sign-pass-01", CL_OK, CL_OK},
        {"sign-pass-02", CL_OK, CL_OK},
        {"sign-pass-03", CL_OK, CL_OK},
        {"sign-fail-01", CL_E_COSE_BAD_TAG, 0},
        {"sign-fail-02", CL_OK, CL_E_COSE_BAD_SIGNATURE},
        {"sign-fail-03", CL_E_COSE_UNSUPPORTED_ALG, 0},
        {"sign-fail-04", CL_E_COSE_UNSUPPORTED_ALG, 0},
        {"sign-fail-06", CL_OK, CL_E_COSE_BAD_SIGNATURE},
        {"sign-fail-07", CL_OK, CL_E_COSE_BAD_SIGNATURE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "cose/sign1-tests/%s.json", cases[i].name);
        json_t *j = load_json(rel);
        if (!j)
            skip();
        const json_t *sign0 = json_object_get(json_object_get(j, "input"), "sign0");
        size_t n, aadn = 0;
        uint8_t *msg = output_cbor(j, &n), *aad = NULL;
        const char *ext = json_string_value(json_object_get(sign0, "external"));
        if (ext)
            aad = cl_test_unhex(ext, &aadn);
        cl_pkey *k = jwk_key(json_object_get(sign0, "key"));
        struct cl_cose_sign1 s;
        cl_err rc = cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_GENERIC, NULL, &s);
        if (rc != cases[i].generic_parse)
            fail_msg("%s: parse -> %s", cases[i].name, cl_err_name(rc) ? cl_err_name(rc) : "OK");
        if (rc == CL_OK) {
            rc = cl_cose_sign1_verify(&s, k, aad, aadn);
            if (rc != cases[i].generic_verify)
                fail_msg("%s: verify -> %s", cases[i].name, cl_err_name(rc) ? cl_err_name(rc) : "OK");
            if (rc == CL_OK && aad) /* without the external AAD it fails */
                assert_err(cl_cose_sign1_verify(&s, k, NULL, 0), CL_E_COSE_BAD_SIGNATURE);
            cl_cose_sign1_free(&s);
        }
        /* None is ES384 with the exact protected header Nitro uses. */
        rc = cl_cose_sign1_parse(msg, n, CL_COSE_PROFILE_NITRO, NULL, &s);
        assert_true(rc == CL_E_COSE_BAD_HEADER || rc == CL_E_COSE_BAD_TAG);
        cl_pkey_free(k);
        free(msg);
        free(aad);
        json_decref(j);
    }
}

static void test_sign_roundtrip(void **state)
{
    (void)state;
    cl_pkey *k = NULL, *other = NULL;
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &other));
    for (int tagged = 0; tagged < 2; tagged++) {
        struct cl_buf out;
        cl_buf_init(&out, 4096, CL_BUF_NONE);
        assert_ok(cl_cose_sign1_sign_es384(k, (const uint8_t *)"hello", 5, tagged, &out));
        assert_int_equal(out.data[0], tagged ? 0xd2 : 0x84);
        struct cl_cose_sign1 s;
        assert_ok(cl_cose_sign1_parse(out.data, out.len, CL_COSE_PROFILE_NITRO, NULL, &s));
        assert_int_equal(s.tagged, tagged);
        assert_int_equal(s.payload_len, 5);
        assert_ok(cl_cose_sign1_verify(&s, k, NULL, 0));
        assert_err(cl_cose_sign1_verify(&s, other, NULL, 0), CL_E_COSE_BAD_SIGNATURE);
        cl_cose_sign1_free(&s);
        /* Every single-byte flip is rejected, at parse or at verify. */
        for (size_t i = 0; i < out.len; i++) {
            out.data[i] ^= 0x01;
            cl_err rc = cl_cose_sign1_parse(out.data, out.len, CL_COSE_PROFILE_NITRO, NULL, &s);
            if (rc == CL_OK) {
                rc = cl_cose_sign1_verify(&s, k, NULL, 0);
                cl_cose_sign1_free(&s);
            }
            if (rc == CL_OK)
                fail_msg("flip at %zu accepted", i);
            out.data[i] ^= 0x01;
        }
        /* Trailing byte rejected. */
        assert_ok(cl_buf_append_u8(&out, 0));
        assert_err(cl_cose_sign1_parse(out.data, out.len, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_CBOR_TRAILING);
        cl_buf_free(&out);
    }
    /* Wrong tag, wrong shape, non-map unprotected header, ES256 key for ES384. */
    size_t n;
    uint8_t *m = cl_test_unhex("d18444a1013822a0404100", &n);
    struct cl_cose_sign1 s;
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_BAD_TAG);
    free(m);
    m = cl_test_unhex("8344a1013822a040", &n);
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_MALFORMED);
    free(m);
    m = cl_test_unhex("8444a1013822f6404100", &n);
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_BAD_HEADER);
    free(m);
    m = cl_test_unhex("8445a201382203004040", &n); /* extra protected attribute */
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_BAD_HEADER);
    free(m);
    m = cl_test_unhex("8444a1013822a1013822404100", &n); /* alg repeated unprotected */
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_BAD_HEADER);
    free(m);
    m = cl_test_unhex("8444a1013822a0f64100", &n); /* detached payload */
    assert_err(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s), CL_E_COSE_MALFORMED);
    free(m);
    m = cl_test_unhex("8444a1013822a0404100", &n);
    assert_ok(cl_cose_sign1_parse(m, n, CL_COSE_PROFILE_NITRO, NULL, &s));
    assert_err(cl_cose_sign1_verify(&s, k, NULL, 0), CL_E_COSE_BAD_SIGNATURE);
    cl_pkey *x = NULL;
    assert_ok(cl_pkey_generate(CL_PKEY_X25519, &x));
    assert_err(cl_cose_sign1_verify(&s, x, NULL, 0), CL_E_COSE_KEY_MISMATCH);
    cl_pkey_free(x);
    cl_cose_sign1_free(&s);
    free(m);
    cl_pkey_free(k);
    cl_pkey_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ecdsa_examples),
        cmocka_unit_test(test_sign1_vectors),
        cmocka_unit_test(test_sign_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
