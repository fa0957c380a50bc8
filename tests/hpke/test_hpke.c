#include "testutil.h"

#include <jansson.h>

#include "cloister/hpke.h"
#include "cloister/secmem.h"

static uint8_t *jhex(json_t *o, const char *k, size_t *n)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) {
        *n = 0;
        return NULL;
    }
    return cl_test_unhex(json_string_value(v), n);
}

static void expect_hex_eq(const uint8_t *got, size_t n, json_t *o, const char *k)
{
    size_t wn;
    uint8_t *want = jhex(o, k, &wn);
    assert_int_equal(n, wn);
    assert_memory_equal(got, want, n);
    free(want);
}

static int run_vector(json_t *v)
{
    int mode = (int)json_integer_value(json_object_get(v, "mode"));
    struct cl_hpke_suite s = {(uint16_t)json_integer_value(json_object_get(v, "kem_id")),
                              (uint16_t)json_integer_value(json_object_get(v, "kdf_id")),
                              (uint16_t)json_integer_value(json_object_get(v, "aead_id"))};
    size_t n_ikmr, n_ikme, n_ikms, n_info, n_psk, n_pskid, n_pkr, n;
    uint8_t *ikm_r = jhex(v, "ikmR", &n_ikmr), *ikm_e = jhex(v, "ikmE", &n_ikme), *ikm_s = jhex(v, "ikmS", &n_ikms);
    uint8_t *info = jhex(v, "info", &n_info), *psk = jhex(v, "psk", &n_psk), *psk_id = jhex(v, "psk_id", &n_pskid);
    uint8_t *pk_r = jhex(v, "pkRm", &n_pkr);
    cl_pkey *sk_r = NULL, *sk_s = NULL;
    uint8_t pk[32], pk_s[32], enc[32];
    assert_ok(cl_hpke_derive_keypair(s.kem, ikm_r, n_ikmr, &sk_r));
    assert_ok(cl_x25519_public_raw(sk_r, pk));
    expect_hex_eq(pk, 32, v, "pkRm");
    struct cl_hpke_opts so = {.psk = psk, .psk_len = n_psk, .psk_id = psk_id, .psk_id_len = n_pskid,
                              .ikm_e = ikm_e, .ikm_e_len = n_ikme};
    struct cl_hpke_opts ro = {.psk = psk, .psk_len = n_psk, .psk_id = psk_id, .psk_id_len = n_pskid};
    if (ikm_s) {
        assert_ok(cl_hpke_derive_keypair(s.kem, ikm_s, n_ikms, &sk_s));
        assert_ok(cl_x25519_public_raw(sk_s, pk_s));
        expect_hex_eq(pk_s, 32, v, "pkSm");
        so.sk_sender = sk_s;
        ro.pk_sender = pk_s;
    }
    cl_hpke_ctx *cs = NULL, *cr = NULL;
    assert_ok(cl_hpke_setup_sender(&s, mode, pk_r, info, n_info, &so, enc, &cs));
    expect_hex_eq(enc, 32, v, "enc");
    assert_ok(cl_hpke_setup_recipient(&s, mode, enc, sk_r, info, n_info, &ro, &cr));
    struct cl_hpke_debug d;
    cl_hpke_debug_get(cs, &d);
    expect_hex_eq(d.shared_secret, 32, v, "shared_secret");
    if (s.aead != CL_HPKE_AEAD_EXPORT_ONLY) {
        expect_hex_eq(d.key, cl_hpke_aead_key_len(s.aead), v, "key");
        expect_hex_eq(d.base_nonce, 12, v, "base_nonce");
    }
    json_t *encs = json_object_get(v, "encryptions"), *e;
    size_t i;
    struct cl_buf ct, pt;
    cl_buf_init(&ct, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&pt, 1 << 16, CL_BUF_SECURE);
    json_array_foreach(encs, i, e) {
        size_t naad, npt;
        uint8_t *aad = jhex(e, "aad", &naad), *p = jhex(e, "pt", &npt);
        cl_buf_reset(&ct);
        cl_buf_reset(&pt);
        assert_ok(cl_hpke_seal(cs, aad, naad, p, npt, &ct));
        expect_hex_eq(ct.data, ct.len, e, "ct");
        assert_ok(cl_hpke_open(cr, aad, naad, ct.data, ct.len, &pt));
        assert_int_equal(pt.len, npt);
        if (npt)
            assert_memory_equal(pt.data, p, npt);
        free(aad);
        free(p);
    }
    json_t *exps = json_object_get(v, "exports");
    json_array_foreach(exps, i, e) {
        size_t nctx;
        uint8_t *ectx = jhex(e, "exporter_context", &nctx), out[128];
        size_t L = (size_t)json_integer_value(json_object_get(e, "L"));
        assert_true(L <= sizeof(out));
        assert_ok(cl_hpke_export(cs, ectx, nctx, out, L));
        expect_hex_eq(out, L, e, "exported_value");
        assert_ok(cl_hpke_export(cr, ectx, nctx, out, L));
        expect_hex_eq(out, L, e, "exported_value");
        free(ectx);
    }
    n = json_array_size(encs);
    cl_buf_free(&ct);
    cl_buf_free(&pt);
    cl_hpke_free(cs);
    cl_hpke_free(cr);
    cl_pkey_free(sk_r);
    cl_pkey_free(sk_s);
    free(ikm_r);
    free(ikm_e);
    free(ikm_s);
    free(info);
    free(psk);
    free(psk_id);
    free(pk_r);
    return (int)n;
}

static void test_rfc9180_vectors(void **state)
{
    (void)state;
    char path[512];
    CL_TESTDATA("hpke/test-vectors.json", path);
    json_error_t err;
    json_t *all = json_load_file(path, 0, &err);
    assert_non_null(all);
    size_t i, vectors = 0, encs = 0;
    json_t *v;
    json_array_foreach(all, i, v) {
        if (json_integer_value(json_object_get(v, "kem_id")) != CL_HPKE_KEM_X25519_SHA256)
            continue;
        encs += (size_t)run_vector(v);
        vectors++;
    }
    print_message("RFC 9180 vectors (X25519): %zu suites/modes, %zu encryptions checked\n", vectors, encs);
    assert_int_equal(vectors, 32);
    json_decref(all);
}

static void test_negative(void **state)
{
    (void)state;
    struct cl_hpke_suite s = {CL_HPKE_KEM_X25519_SHA256, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM};
    cl_pkey *sk;
    uint8_t pk[32], enc[32];
    assert_ok(cl_pkey_generate(CL_PKEY_X25519, &sk));
    assert_ok(cl_x25519_public_raw(sk, pk));
    cl_hpke_ctx *cs, *cr;
    assert_ok(cl_hpke_setup_sender(&s, CL_HPKE_MODE_BASE, pk, (const uint8_t *)"info", 4, NULL, enc, &cs));
    assert_ok(cl_hpke_setup_recipient(&s, CL_HPKE_MODE_BASE, enc, sk, (const uint8_t *)"info", 4, NULL, &cr));
    struct cl_buf ct, pt;
    cl_buf_init(&ct, 1024, CL_BUF_NONE);
    cl_buf_init(&pt, 1024, CL_BUF_NONE);
    assert_ok(cl_hpke_seal(cs, "a", 1, "hello", 5, &ct));
    ct.data[0] ^= 1;
    assert_err(cl_hpke_open(cr, "a", 1, ct.data, ct.len, &pt), CL_E_CRYPTO_AUTH);
    ct.data[0] ^= 1;
    assert_err(cl_hpke_open(cr, "b", 1, ct.data, ct.len, &pt), CL_E_CRYPTO_AUTH);
    assert_ok(cl_hpke_open(cr, "a", 1, ct.data, ct.len, &pt));
    /* replay: the recipient's sequence moved on */
    cl_buf_reset(&pt);
    assert_err(cl_hpke_open(cr, "a", 1, ct.data, ct.len, &pt), CL_E_CRYPTO_AUTH);
    assert_err(cl_hpke_open(cr, "a", 1, ct.data, 3, &pt), CL_E_CRYPTO_AUTH);
    cl_hpke_free(cr);
    /* wrong info */
    assert_ok(cl_hpke_setup_recipient(&s, CL_HPKE_MODE_BASE, enc, sk, (const uint8_t *)"infx", 4, NULL, &cr));
    assert_err(cl_hpke_open(cr, "a", 1, ct.data, ct.len, &pt), CL_E_CRYPTO_AUTH);
    cl_hpke_free(cr);
    /* bad parameters */
    struct cl_hpke_suite bad = {0x0010, 1, 1};
    assert_err(cl_hpke_setup_sender(&bad, 0, pk, NULL, 0, NULL, enc, &cr), CL_E_CRYPTO_BAD_KEY);
    assert_err(cl_hpke_setup_sender(&s, CL_HPKE_MODE_AUTH, pk, NULL, 0, NULL, enc, &cr), CL_E_CORE_INVALID_ARG);
    struct cl_hpke_opts shortpsk = {.psk = (const uint8_t *)"short", .psk_len = 5, .psk_id = (const uint8_t *)"i",
                                    .psk_id_len = 1};
    assert_err(cl_hpke_setup_sender(&s, CL_HPKE_MODE_PSK, pk, NULL, 0, &shortpsk, enc, &cr), CL_E_CORE_INVALID_ARG);
    assert_err(cl_hpke_setup_sender(&s, CL_HPKE_MODE_BASE, pk, NULL, 0, &shortpsk, enc, &cr), CL_E_CORE_INVALID_ARG);
    uint8_t zero[32] = {0};
    assert_err(cl_hpke_setup_sender(&s, CL_HPKE_MODE_BASE, zero, NULL, 0, NULL, enc, &cr), CL_E_CRYPTO_BAD_KEY);
    struct cl_hpke_suite exp = {CL_HPKE_KEM_X25519_SHA256, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_EXPORT_ONLY};
    assert_ok(cl_hpke_setup_sender(&exp, 0, pk, NULL, 0, NULL, enc, &cr));
    assert_err(cl_hpke_seal(cr, NULL, 0, "x", 1, &ct), CL_E_CORE_STATE);
    cl_hpke_free(cr);
    cl_hpke_free(cs);
    cl_pkey_free(sk);
    cl_buf_free(&ct);
    cl_buf_free(&pt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_rfc9180_vectors), cmocka_unit_test(test_negative)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
