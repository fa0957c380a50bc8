#include "testutil.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cloister/attest.h"
#include "cloister/file.h"

static const char *const real_docs[] = {
    "nitro/docs/blocky_2024-09-07_prod_1024B-fields.b64",
    "nitro/docs/blocky_2024-09-07_debug_1024B-fields.b64",
    "nitro/docs/blocky_2023-07-10_prod_rsa-pubkey.b64",
    "nitro/docs/evervault_2022-10-12_debug.cbor",
    "nitro/docs/evervault_2023-09-18_debug.b64",
};
static const bool real_debug[] = {false, true, false, true, true};
#define PROD_DOC 0

static struct cl_buf load_raw(const char *rel)
{
    char path[512];
    struct cl_buf file, raw;
    cl_buf_init(&file, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&raw, 1 << 20, CL_BUF_NONE);
    if (!cl_test_path("CLOISTER_TESTDATA", rel, path, sizeof(path)))
        return raw;
    assert_ok(cl_file_read(path, 1 << 20, &file));
    assert_ok(cl_attest_decode_input(file.data, file.len, &raw));
    cl_buf_free(&file);
    return raw;
}

static struct cl_buf aws_root(void)
{
    char path[512];
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, CL_BUF_NONE);
    if (!cl_test_path("CLOISTER_TESTDATA", "nitro/root/AWS_NitroEnclaves_Root-G1.pem", path, sizeof(path)))
        return b;
    struct cl_buf pem;
    cl_buf_init(&pem, 1 << 16, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 1 << 16, &pem));
    assert_ok(cl_attest_cert_to_der(pem.data, pem.len, &b));
    cl_buf_free(&pem);
    return b;
}

/* [max notBefore, min notAfter] over the chain, in seconds. */
static void doc_window(const struct cl_attest_doc *d, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MIN;
    *hi = INT64_MAX;
    for (size_t i = 0; i <= d->ncabundle; i++) {
        const struct cl_attest_span *s = i < d->ncabundle ? &d->cabundle[i] : &d->certificate;
        int64_t nb, na;
        assert_ok(cl_attest_cert_validity(s->p, s->len, &nb, &na));
        if (nb > *lo)
            *lo = nb;
        if (na < *hi)
            *hi = na;
    }
}

static struct cl_attest_policy base_policy(const struct cl_buf *root, const struct cl_attest_doc *d)
{
    int64_t lo, hi;
    doc_window(d, &lo, &hi);
    struct cl_attest_policy p = {.root_der = root->data, .root_len = root->len, .allow_any_pcr = true,
                                 .allow_debug = true};
    p.at_ms = (lo + (hi - lo) / 2) * 1000;
    return p;
}

static void check(cl_err got, cl_err want, const char *what)
{
    if (got != want)
        fail_msg("%s: got %s (%s), expected %s", what, cl_err_name(got) ? cl_err_name(got) : "OK", cl_err_detail(),
                 cl_err_name(want) ? cl_err_name(want) : "OK");
}

static void test_real_docs(void **state)
{
    (void)state;
    struct cl_buf root = aws_root();
    if (!root.len)
        skip();
    for (size_t i = 0; i < sizeof(real_docs) / sizeof(real_docs[0]); i++) {
        struct cl_buf raw = load_raw(real_docs[i]);
        struct cl_attest_doc d;
        assert_ok(cl_attest_parse(raw.data, raw.len, &d));
        assert_int_equal(cl_attest_is_debug(&d), real_debug[i]);
        assert_int_equal(d.ncabundle, 4);
        struct cl_attest_policy p = base_policy(&root, &d);
        check(cl_attest_verify(&d, &p), CL_OK, real_docs[i]);
        int64_t lo, hi;
        doc_window(&d, &lo, &hi);
        p.at_ms = lo * 1000 + 1000;
        check(cl_attest_verify(&d, &p), CL_OK, "start of window");
        p.at_ms = hi * 1000 - 1000;
        check(cl_attest_verify(&d, &p), CL_OK, "end of window");
        p.at_ms = (hi + 1) * 1000;
        check(cl_attest_verify(&d, &p), CL_E_ATTEST_CERT_EXPIRED, "after window");
        p.at_ms = (lo - 1) * 1000;
        check(cl_attest_verify(&d, &p), CL_E_ATTEST_CERT_NOT_YET_VALID, "before window");
        p = base_policy(&root, &d);
        p.allow_debug = false;
        check(cl_attest_verify(&d, &p), real_debug[i] ? CL_E_ATTEST_DEBUG : CL_OK, "debug policy");
        /* Now (2026+) is outside every real document's window. */
        p.at_ms = 0;
        check(cl_attest_verify(&d, &p), CL_E_ATTEST_CERT_EXPIRED, "now");
        cl_attest_doc_free(&d);
        cl_buf_free(&raw);
    }
    cl_buf_free(&root);
}

static void test_fields(void **state)
{
    (void)state;
    struct cl_buf raw = load_raw("nitro/docs/evervault_2022-10-12_debug.cbor");
    if (!raw.len)
        skip();
    struct cl_attest_doc d;
    assert_ok(cl_attest_parse(raw.data, raw.len, &d));
    assert_int_equal(d.public_key.len, 19);
    assert_memory_equal(d.public_key.p, "my super secret key", 19);
    assert_int_equal(d.user_data.len, 13);
    assert_int_equal(d.nonce.len, 0); /* null */
    assert_int_equal(d.timestamp_ms, 1665582606081ull);
    assert_true(d.pcr_present & (1u << 3));
    cl_attest_doc_free(&d);
    cl_buf_free(&raw);
    raw = load_raw("nitro/docs/blocky_2023-07-10_prod_rsa-pubkey.b64");
    assert_ok(cl_attest_parse(raw.data, raw.len, &d));
    assert_int_equal(d.public_key.len, 426);
    assert_int_equal(d.user_data.len, 0);
    assert_int_equal(d.npcrs, 16);
    cl_attest_doc_free(&d);
    cl_buf_free(&raw);
}

static void expect_b64(const json_t *j, const struct cl_attest_span *s, const char *what)
{
    const char *b64 = json_string_value(j);
    if (!b64)
        fail_msg("%s missing in the upstream JSON", what);
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, CL_BUF_NONE);
    assert_ok(cl_b64_decode(b64, strlen(b64), CL_B64_STD, &b));
    if (b.len != s->len || (b.len && memcmp(b.data, s->p, b.len) != 0))
        fail_msg("%s differs from the upstream decoding", what);
    cl_buf_free(&b);
}

/* Our decoding of a real document equals the upstream JSON rendering. */
static void test_upstream_json(void **state)
{
    (void)state;
    char path[512];
    CL_TESTDATA("nitro/docs/blocky_2023-07-10_prod_rsa-pubkey.payload.json", path);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    assert_non_null(j);
    struct cl_buf raw = load_raw("nitro/docs/blocky_2023-07-10_prod_rsa-pubkey.b64");
    struct cl_attest_doc d;
    assert_ok(cl_attest_parse(raw.data, raw.len, &d));
    const char *mid = json_string_value(json_object_get(j, "module_id"));
    assert_int_equal(strlen(mid), d.module_id.len);
    assert_memory_equal(mid, d.module_id.p, d.module_id.len);
    assert_int_equal((uint64_t)json_integer_value(json_object_get(j, "timestamp")), d.timestamp_ms);
    assert_string_equal(json_string_value(json_object_get(j, "digest")), "SHA384");
    const json_t *pcrs = json_object_get(j, "pcrs");
    assert_int_equal(json_object_size(pcrs), d.npcrs);
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        char key[8];
        snprintf(key, sizeof(key), "%u", i);
        const json_t *v = json_object_get(pcrs, key);
        assert_int_equal(v != NULL, (d.pcr_present >> i) & 1);
        if (v)
            expect_b64(v, &d.pcr[i], key);
    }
    expect_b64(json_object_get(j, "certificate"), &d.certificate, "certificate");
    const json_t *bundle = json_object_get(j, "cabundle");
    assert_int_equal(json_array_size(bundle), d.ncabundle);
    for (size_t i = 0; i < d.ncabundle; i++)
        expect_b64(json_array_get(bundle, i), &d.cabundle[i], "cabundle entry");
    expect_b64(json_object_get(j, "public_key"), &d.public_key, "public_key");
    /* Empty user_data and nonce are absent or null upstream. */
    const json_t *ud = json_object_get(j, "user_data"), *nonce = json_object_get(j, "nonce");
    assert_true(!ud || json_is_null(ud) || !strcmp(json_string_value(ud), ""));
    assert_true(!nonce || json_is_null(nonce) || !strcmp(json_string_value(nonce), ""));
    assert_int_equal(d.user_data.len, 0);
    assert_int_equal(d.nonce.len, 0);
    cl_attest_doc_free(&d);
    cl_buf_free(&raw);
    json_decref(j);
}

/* Re-encodes a parsed document's payload with changes, keeping its
 * original signature (which then no longer covers it). */
static struct cl_buf rebuild(const struct cl_attest_doc *d, const struct cl_attest_span *cert,
                             const struct cl_attest_span *bundle, size_t nbundle)
{
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN] = {{0}};
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (d->pcr_present & (1u << i))
            memcpy(pcr[i], d->pcr[i].p, CL_ATTEST_PCR_LEN);
    char module_id[CL_ATTEST_MAX_MODULE_ID + 1];
    memcpy(module_id, d->module_id.p, d->module_id.len);
    module_id[d->module_id.len] = 0;
    struct cl_attest_fields f = {.module_id = module_id,
                                 .timestamp_ms = d->timestamp_ms,
                                 .pcr_present = d->pcr_present,
                                 .pcr = (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr,
                                 .certificate = cert ? *cert : d->certificate,
                                 .cabundle = bundle ? bundle : d->cabundle,
                                 .ncabundle = bundle ? nbundle : d->ncabundle,
                                 .public_key = d->public_key,
                                 .user_data = d->user_data,
                                 .nonce = d->nonce};
    struct cl_buf payload, out;
    cl_buf_init(&payload, CL_ATTEST_MAX_PAYLOAD, CL_BUF_NONE);
    cl_buf_init(&out, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_attest_encode_payload(&f, &payload));
    assert_ok(cl_cbor_put_array(&out, 4));
    assert_ok(cl_cbor_put_bytes(&out, "\xa1\x01\x38\x22", 4));
    assert_ok(cl_cbor_put_map(&out, 0));
    assert_ok(cl_cbor_put_bytes(&out, payload.data, payload.len));
    assert_ok(cl_cbor_put_bytes(&out, d->cose.sig, d->cose.sig_len));
    cl_buf_free(&payload);
    return out;
}

static cl_err verify_buf(const struct cl_buf *b, const struct cl_attest_policy *p)
{
    return cl_attest_verify_bytes(b->data, b->len, p);
}

static void test_tamper(void **state)
{
    (void)state;
    struct cl_buf root = aws_root();
    if (!root.len)
        skip();
    struct cl_buf raw = load_raw(real_docs[PROD_DOC]);
    struct cl_attest_doc d;
    assert_ok(cl_attest_parse(raw.data, raw.len, &d));
    struct cl_attest_policy p = base_policy(&root, &d);
    check(verify_buf(&raw, &p), CL_OK, "untouched");

    /* A flipped byte in the payload (inside module_id: still well-formed). */
    size_t off = (size_t)(d.module_id.p - d.raw);
    raw.data[off] ^= 0x01;
    check(verify_buf(&raw, &p), CL_E_ATTEST_SIGNATURE, "payload byte");
    raw.data[off] ^= 0x01;
    /* ... and in the signature. */
    off = (size_t)(d.cose.sig - d.raw) + 10;
    raw.data[off] ^= 0x01;
    check(verify_buf(&raw, &p), CL_E_ATTEST_SIGNATURE, "signature byte");
    raw.data[off] ^= 0x01;
    /* ... in each cabundle certificate's signature, and the leaf's. */
    for (size_t i = 0; i <= d.ncabundle; i++) {
        const struct cl_attest_span *s = i < d.ncabundle ? &d.cabundle[i] : &d.certificate;
        off = (size_t)(s->p - d.raw) + s->len - 2;
        raw.data[off] ^= 0x01;
        char what[64];
        snprintf(what, sizeof(what), "certificate %zu", i);
        check(verify_buf(&raw, &p), i == 0 ? CL_E_ATTEST_ROOT_MISMATCH : CL_E_ATTEST_CHAIN_SIGNATURE, what);
        raw.data[off] ^= 0x01;
    }
    check(verify_buf(&raw, &p), CL_OK, "restored");

    /* Re-encoding alone changes the signed bytes. */
    struct cl_buf b = rebuild(&d, NULL, NULL, 0);
    check(verify_buf(&b, &p), CL_E_ATTEST_SIGNATURE, "re-encoded payload");
    cl_buf_free(&b);

    /* The leaf swapped for another genuine leaf of the same instance: the
     * chain holds, but that leaf did not sign the document. */
    struct cl_buf raw2 = load_raw(real_docs[1]);
    struct cl_attest_doc d2;
    assert_ok(cl_attest_parse(raw2.data, raw2.len, &d2));
    b = rebuild(&d, &d2.certificate, NULL, 0);
    check(verify_buf(&b, &p), CL_E_ATTEST_SIGNATURE, "leaf swapped, same issuer");
    cl_buf_free(&b);
    /* ... and for a leaf from another instance: not issued by cabundle[3]. */
    struct cl_buf raw3 = load_raw(real_docs[2]);
    struct cl_attest_doc d3;
    assert_ok(cl_attest_parse(raw3.data, raw3.len, &d3));
    b = rebuild(&d, &d3.certificate, NULL, 0);
    check(verify_buf(&b, &p), CL_E_ATTEST_CHAIN_ISSUER, "leaf swapped, other issuer");
    cl_buf_free(&b);
    cl_attest_doc_free(&d3);
    cl_buf_free(&raw3);
    /* A certificate removed from the middle of the chain. */
    struct cl_attest_span bundle[CL_ATTEST_MAX_CABUNDLE];
    bundle[0] = d.cabundle[0];
    bundle[1] = d.cabundle[1];
    bundle[2] = d.cabundle[3];
    b = rebuild(&d, NULL, bundle, 3);
    check(verify_buf(&b, &p), CL_E_ATTEST_CHAIN_ISSUER, "certificate removed");
    cl_buf_free(&b);
    /* The issuer of the leaf removed. */
    b = rebuild(&d, NULL, d.cabundle, 3);
    check(verify_buf(&b, &p), CL_E_ATTEST_CHAIN_ISSUER, "leaf issuer removed");
    cl_buf_free(&b);
    /* Reordered. */
    bundle[0] = d.cabundle[0];
    bundle[1] = d.cabundle[2];
    bundle[2] = d.cabundle[1];
    bundle[3] = d.cabundle[3];
    b = rebuild(&d, NULL, bundle, 4);
    check(verify_buf(&b, &p), CL_E_ATTEST_CHAIN_ISSUER, "cabundle reordered");
    cl_buf_free(&b);
    /* Root dropped: cabundle[0] is then the regional CA. */
    b = rebuild(&d, NULL, d.cabundle + 1, 3);
    check(verify_buf(&b, &p), CL_E_ATTEST_ROOT_MISMATCH, "root dropped");
    cl_buf_free(&b);

    /* Another pinned root. */
    cl_attest_signer *sim = NULL;
    assert_ok(cl_attest_signer_ephemeral(&sim));
    struct cl_buf simroot;
    cl_buf_init(&simroot, 1 << 16, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(sim, &simroot));
    struct cl_attest_policy p2 = p;
    p2.root_der = simroot.data;
    p2.root_len = simroot.len;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_ROOT_MISMATCH, "another root");
    p2.root_der = NULL;
    p2.root_len = 0;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_NO_ROOT, "no root");

    /* PCR policy. */
    struct cl_attest_pcr_expect want[2];
    want[0].index = 0;
    memcpy(want[0].value, d.pcr[0].p, CL_ATTEST_PCR_LEN);
    want[1].index = 4;
    memcpy(want[1].value, d.pcr[4].p, CL_ATTEST_PCR_LEN);
    p2 = p;
    p2.allow_any_pcr = false;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_NO_PCR_POLICY, "empty PCR list");
    p2.pcrs = want;
    p2.npcrs = 2;
    check(verify_buf(&raw, &p2), CL_OK, "right PCRs");
    want[1].value[47] ^= 1;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_PCR_MISMATCH, "wrong PCR4");
    want[1].value[47] ^= 1;
    want[1].index = 20;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_PCR_MISSING, "missing PCR20");

    /* Optional fields. */
    uint8_t ones[1024], pk[1024];
    memset(ones, 1, sizeof(ones));
    memset(pk, 1, sizeof(pk));
    p2 = p;
    p2.check_public_key = p2.check_user_data = p2.check_nonce = true;
    p2.public_key = (struct cl_attest_span){pk, 1024};
    p2.user_data = (struct cl_attest_span){ones, 1024};
    p2.nonce = (struct cl_attest_span){ones, 1024};
    check(verify_buf(&raw, &p2), CL_OK, "1024-byte fields as expected");
    p2.nonce.len = 1023;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_NONCE, "nonce one byte short");
    p2.nonce.len = 1024;
    pk[100] = 2;
    check(verify_buf(&raw, &p2), CL_E_ATTEST_PUBLIC_KEY, "public_key one byte off");
    pk[100] = 1;

    cl_buf_free(&simroot);
    cl_attest_signer_free(sim);
    cl_attest_doc_free(&d2);
    cl_buf_free(&raw2);
    cl_attest_doc_free(&d);
    cl_buf_free(&raw);
    cl_buf_free(&root);
}

static void test_nonce_freshness(void **state)
{
    (void)state;
    struct cl_buf root = aws_root();
    if (!root.len)
        skip();
    struct cl_buf raw = load_raw("nitro/docs/evervault_2023-09-18_debug.b64");
    struct cl_attest_doc d;
    assert_ok(cl_attest_parse(raw.data, raw.len, &d));
    assert_int_equal(d.nonce.len, 256);
    assert_int_equal(d.user_data.len, 91);
    struct cl_attest_policy p = base_policy(&root, &d);
    p.check_nonce = true;
    p.nonce = d.nonce;
    check(cl_attest_verify(&d, &p), CL_OK, "right nonce");
    uint8_t wrong[256];
    memcpy(wrong, d.nonce.p, 256);
    wrong[0] ^= 1;
    p.nonce.p = wrong;
    check(cl_attest_verify(&d, &p), CL_E_ATTEST_NONCE, "wrong nonce");
    p.nonce.len = 255;
    check(cl_attest_verify(&d, &p), CL_E_ATTEST_NONCE, "short nonce");
    p.check_nonce = false;
    p.check_user_data = true;
    p.user_data = d.user_data;
    check(cl_attest_verify(&d, &p), CL_OK, "right user_data");
    p.user_data.len--;
    check(cl_attest_verify(&d, &p), CL_E_ATTEST_USER_DATA, "wrong user_data");
    p.check_user_data = false;
    p.check_public_key = true;
    p.public_key = (struct cl_attest_span){NULL, 0};
    check(cl_attest_verify(&d, &p), CL_OK, "public_key null matches none");
    p.public_key = (struct cl_attest_span){wrong, 10};
    check(cl_attest_verify(&d, &p), CL_E_ATTEST_PUBLIC_KEY, "public_key expected but null");
    p.check_public_key = false;

    /* Freshness: the document is ~3 h old at the end of its window. */
    int64_t lo, hi;
    doc_window(&d, &lo, &hi);
    p.max_age_ms = 60 * 1000;
    p.at_ms = (int64_t)d.timestamp_ms + 10 * 1000;
    check(cl_attest_verify(&d, &p), CL_OK, "fresh");
    p.at_ms = hi * 1000 - 1000;
    check(cl_attest_verify(&d, &p), CL_E_ATTEST_STALE, "stale");
    cl_attest_doc_free(&d);
    cl_buf_free(&raw);
    cl_buf_free(&root);
}

static void test_selfsigned(void **state)
{
    (void)state;
    struct cl_buf root = aws_root();
    if (!root.len)
        skip();
    struct cl_buf raw = load_raw("nitro/bad/blocky_selfsigned_attestation.b64");
    struct cl_attest_policy p = {.root_der = root.data, .root_len = root.len, .allow_any_pcr = true,
                                 .allow_debug = true, .at_ms = 1713379906000LL};
    /* Unprotected header null: not a COSE_Sign1 by RFC 9052. */
    check(verify_buf(&raw, &p), CL_E_COSE_BAD_HEADER, "self-signed as is");
    /* With the header fixed, cabundle null: no chain to any root. */
    assert_int_equal(raw.data[6], 0xf6);
    raw.data[6] = 0xa0;
    check(verify_buf(&raw, &p), CL_E_ATTEST_CABUNDLE, "self-signed, header fixed");
    cl_buf_free(&raw);
    cl_buf_free(&root);
}

static void test_malformed(void **state)
{
    (void)state;
    struct cl_attest_doc d;
    size_t n;
    uint8_t *m = cl_test_unhex("8444a1013822a0404100", &n);
    assert_err(cl_attest_parse(m, n, &d), CL_E_CBOR_TRUNCATED); /* empty payload is not CBOR */
    free(m);
    m = cl_test_unhex("8444a1013822a0410141", &n);
    assert_err(cl_attest_parse(m, n, &d), CL_E_CBOR_TRUNCATED);
    free(m);
    m = cl_test_unhex("8444a1013822a041a04100", &n);
    assert_err(cl_attest_parse(m, n, &d), CL_E_ATTEST_FIELD);
    free(m);
    m = cl_test_unhex("8444a1013822a04101" "4100", &n);
    assert_err(cl_attest_parse(m, n, &d), CL_E_ATTEST_MALFORMED);
    free(m);
    uint8_t *big = calloc(1, CL_ATTEST_MAX_DOC + 1);
    assert_err(cl_attest_parse(big, CL_ATTEST_MAX_DOC + 1, &d), CL_E_ATTEST_TOO_LARGE);
    free(big);
    struct cl_buf raw;
    cl_buf_init(&raw, 100, CL_BUF_NONE);
    assert_err(cl_attest_decode_input((const uint8_t *)" !!! ", 5, &raw), CL_E_ATTEST_MALFORMED);
    assert_err(cl_attest_decode_input((const uint8_t *)"  ", 2, &raw), CL_E_ATTEST_MALFORMED);
    cl_buf_free(&raw);
}

/* A hand-built payload for parser checks; each knob breaks one field. */
struct craft {
    const char *digest, *module_id, *extra_key;
    unsigned pcr_index;
    size_t pcr_len, ncabundle, cert_len, user_data_len, nonce_len, public_key_len;
    uint64_t timestamp;
    bool nonce_as_text, no_certificate;
};

static const struct craft craft_ok = {.digest = "SHA384", .module_id = "i-test", .pcr_index = 0, .pcr_len = 48,
                                      .ncabundle = 1, .timestamp = 1700000000000ull};

static cl_err parse_crafted(const struct craft *k)
{
    static uint8_t filler[4096];
    struct cl_buf pl, doc;
    cl_buf_init(&pl, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&doc, 1 << 17, CL_BUF_NONE);
    size_t n = 8 + (k->extra_key ? 1 : 0) - (k->no_certificate ? 1 : 0);
    assert_ok(cl_cbor_put_map(&pl, n + 1));
    assert_ok(cl_cbor_put_text(&pl, "module_id"));
    assert_ok(cl_cbor_put_text(&pl, k->module_id));
    assert_ok(cl_cbor_put_text(&pl, "digest"));
    assert_ok(cl_cbor_put_text(&pl, k->digest));
    assert_ok(cl_cbor_put_text(&pl, "timestamp"));
    assert_ok(cl_cbor_put_uint(&pl, k->timestamp));
    assert_ok(cl_cbor_put_text(&pl, "pcrs"));
    assert_ok(cl_cbor_put_map(&pl, 1));
    assert_ok(cl_cbor_put_uint(&pl, k->pcr_index));
    assert_ok(cl_cbor_put_bytes(&pl, filler, k->pcr_len));
    if (!k->no_certificate) {
        assert_ok(cl_cbor_put_text(&pl, "certificate"));
        assert_ok(cl_cbor_put_bytes(&pl, "\x30\x00", 2));
    }
    assert_ok(cl_cbor_put_text(&pl, "cabundle"));
    assert_ok(cl_cbor_put_array(&pl, k->ncabundle));
    for (size_t i = 0; i < k->ncabundle; i++)
        assert_ok(k->cert_len ? cl_cbor_put_bytes(&pl, filler, k->cert_len) : cl_cbor_put_bytes(&pl, "\x30\x00", 2));
    assert_ok(cl_cbor_put_text(&pl, "public_key"));
    assert_ok(cl_cbor_put_bytes(&pl, filler, k->public_key_len));
    assert_ok(cl_cbor_put_text(&pl, "user_data"));
    assert_ok(k->user_data_len ? cl_cbor_put_bytes(&pl, filler, k->user_data_len) : cl_cbor_put_null(&pl));
    assert_ok(cl_cbor_put_text(&pl, "nonce"));
    assert_ok(k->nonce_as_text ? cl_cbor_put_text(&pl, "n") : cl_cbor_put_bytes(&pl, filler, k->nonce_len));
    if (k->extra_key) {
        assert_ok(cl_cbor_put_text(&pl, k->extra_key));
        assert_ok(cl_cbor_put_null(&pl));
    }
    assert_ok(cl_cbor_put_array(&doc, 4));
    assert_ok(cl_cbor_put_bytes(&doc, "\xa1\x01\x38\x22", 4));
    assert_ok(cl_cbor_put_map(&doc, 0));
    assert_ok(cl_cbor_put_bytes(&doc, pl.data, pl.len));
    assert_ok(cl_cbor_put_bytes(&doc, filler, 96));
    struct cl_attest_doc d;
    cl_err rc = cl_attest_parse(doc.data, doc.len, &d);
    if (rc == CL_OK)
        cl_attest_doc_free(&d);
    cl_buf_free(&pl);
    cl_buf_free(&doc);
    return rc;
}

static void test_field_checks(void **state)
{
    (void)state;
    struct craft k = craft_ok;
    assert_ok(parse_crafted(&k));
    /* Limits: 1024 accepted for every optional field, 1025 refused. */
    k.public_key_len = k.user_data_len = k.nonce_len = 1024;
    assert_ok(parse_crafted(&k));
    k.user_data_len = 1025;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD_LIMIT);
    k = craft_ok;
    k.nonce_len = 1025;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD_LIMIT);
    k = craft_ok;
    k.public_key_len = 1025;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD_LIMIT);
    k = craft_ok;
    k.nonce_as_text = true;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD);
    k = craft_ok;
    k.digest = "SHA256";
    assert_err(parse_crafted(&k), CL_E_ATTEST_DIGEST);
    k = craft_ok;
    k.pcr_len = 32;
    assert_err(parse_crafted(&k), CL_E_ATTEST_PCR_LENGTH);
    k = craft_ok;
    k.pcr_len = 64;
    assert_err(parse_crafted(&k), CL_E_ATTEST_PCR_LENGTH);
    k = craft_ok;
    k.pcr_index = 32;
    assert_err(parse_crafted(&k), CL_E_ATTEST_PCRS);
    k = craft_ok;
    k.module_id = "";
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD);
    k = craft_ok;
    k.timestamp = 0;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD);
    k = craft_ok;
    k.ncabundle = 0;
    assert_err(parse_crafted(&k), CL_E_ATTEST_CABUNDLE);
    k = craft_ok;
    k.ncabundle = 9;
    assert_err(parse_crafted(&k), CL_E_ATTEST_CABUNDLE);
    k = craft_ok;
    k.no_certificate = true;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD);
    k = craft_ok;
    k.extra_key = "debug";
    assert_err(parse_crafted(&k), CL_E_ATTEST_MALFORMED);
    k = craft_ok;
    k.extra_key = "nonce"; /* duplicate key */
    assert_err(parse_crafted(&k), CL_E_CBOR_DUPLICATE_KEY);
    /* Payload over 16 KiB (the document itself still under its cap). */
    k = craft_ok;
    k.ncabundle = 5;
    k.cert_len = 3200;
    assert_ok(parse_crafted(&k));
    k.cert_len = 3300;
    assert_err(parse_crafted(&k), CL_E_ATTEST_TOO_LARGE);
    k.cert_len = 4097;
    k.ncabundle = 1;
    assert_err(parse_crafted(&k), CL_E_ATTEST_FIELD_LIMIT);
}

/* ---- X.509 checks on chains built here ---- */

static X509 *mk_cert(const char *cn, cl_pkey *key, X509 *issuer, cl_pkey *issuer_key, const char *bc, const char *ku,
                     bool unknown_critical)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    assert_true(x && name);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, cl_pkey_evp(key));
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    const struct { int nid; const char *v; } ext[] = {{NID_basic_constraints, bc}, {NID_key_usage, ku},
                                                      {NID_subject_key_identifier, "hash"},
                                                      {NID_authority_key_identifier, "keyid:always"}};
    for (size_t i = 0; i < 4; i++) {
        if (!ext[i].v)
            continue;
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, ext[i].nid, ext[i].v);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (unknown_critical) {
        ASN1_OBJECT *obj = OBJ_txt2obj("1.3.6.1.4.1.99999.1", 1);
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(os, (const unsigned char *)"\x05\x00", 2);
        X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, obj, 1, os);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        ASN1_OCTET_STRING_free(os);
        ASN1_OBJECT_free(obj);
    }
    assert_true(X509_sign(x, cl_pkey_evp(issuer_key), EVP_sha384()) > 0);
    X509_NAME_free(name);
    return x;
}

static struct cl_attest_span der_of(X509 *x, uint8_t **store)
{
    int n = i2d_X509(x, store);
    assert_true(n > 0);
    return (struct cl_attest_span){*store, (size_t)n};
}

struct chain_case {
    const char *what;
    const char *root_bc, *root_ku, *inter_bc, *inter_ku, *leaf_bc, *leaf_ku;
    bool inter_critical;
    cl_err want;
};

static void test_chain_checks(void **state)
{
    (void)state;
    const char *ca = "critical,CA:TRUE", *ca_ku = "critical,keyCertSign", *ee = "critical,CA:FALSE",
               *ee_ku = "critical,digitalSignature";
    const struct chain_case cases[] = {
        {"good", ca, ca_ku, ca, ca_ku, ee, ee_ku, false, CL_OK},
        {"good, no leaf extensions", ca, ca_ku, ca, ca_ku, NULL, NULL, false, CL_OK},
        {"intermediate not a CA", ca, ca_ku, ee, ca_ku, ee, ee_ku, false, CL_E_ATTEST_CERT_NOT_CA},
        {"intermediate without basicConstraints", ca, ca_ku, NULL, ca_ku, ee, ee_ku, false, CL_E_ATTEST_CERT_NOT_CA},
        {"intermediate without keyCertSign", ca, ca_ku, ca, "critical,digitalSignature", ee, ee_ku, false,
         CL_E_ATTEST_CERT_KEY_USAGE},
        {"intermediate without keyUsage", ca, ca_ku, ca, NULL, ee, ee_ku, false, CL_E_ATTEST_CERT_KEY_USAGE},
        {"root pathlen 0 above an intermediate", "critical,CA:TRUE,pathlen:0", ca_ku, ca, ca_ku, ee, ee_ku, false,
         CL_E_ATTEST_CERT_PATHLEN},
        {"leaf is a CA", ca, ca_ku, ca, ca_ku, ca, ee_ku, false, CL_E_ATTEST_CERT_NOT_CA},
        {"leaf without digitalSignature", ca, ca_ku, ca, ca_ku, ee, "critical,keyCertSign", false,
         CL_E_ATTEST_CERT_KEY_USAGE},
        {"unknown critical extension", ca, ca_ku, ca, ca_ku, ee, ee_ku, true, CL_E_ATTEST_CERT_CRITICAL_EXT},
    };
    cl_pkey *rk = NULL, *ik = NULL, *lk = NULL;
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &rk));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &ik));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &lk));
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    memset(pcr, 7, sizeof(pcr));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct chain_case *c = &cases[i];
        X509 *root = mk_cert("root", rk, NULL, rk, c->root_bc, c->root_ku, false);
        X509 *inter = mk_cert("inter", ik, root, rk, c->inter_bc, c->inter_ku, c->inter_critical);
        X509 *leaf = mk_cert("leaf", lk, inter, ik, c->leaf_bc, c->leaf_ku, false);
        uint8_t *d0 = NULL, *d1 = NULL, *d2 = NULL;
        struct cl_attest_span bundle[2] = {der_of(root, &d0), der_of(inter, &d1)};
        struct cl_attest_fields f = {.module_id = "i-chain", .timestamp_ms = (uint64_t)time(NULL) * 1000,
                                     .pcr_present = 0xffff, .pcr = (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr,
                                     .certificate = der_of(leaf, &d2), .cabundle = bundle, .ncabundle = 2};
        struct cl_buf payload, doc;
        cl_buf_init(&payload, CL_ATTEST_MAX_PAYLOAD, CL_BUF_NONE);
        cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
        assert_ok(cl_attest_encode_payload(&f, &payload));
        assert_ok(cl_cose_sign1_sign_es384(lk, payload.data, payload.len, false, &doc));
        struct cl_attest_policy p = {.root_der = bundle[0].p, .root_len = bundle[0].len, .allow_any_pcr = true};
        check(verify_buf(&doc, &p), c->want, c->what);
        cl_buf_free(&payload);
        cl_buf_free(&doc);
        OPENSSL_free(d0);
        OPENSSL_free(d1);
        OPENSSL_free(d2);
        X509_free(root);
        X509_free(inter);
        X509_free(leaf);
    }
    cl_pkey_free(rk);
    cl_pkey_free(ik);
    cl_pkey_free(lk);
}

/* ---- simulated signer ---- */

static struct cl_attest_policy sim_policy(const struct cl_buf *root)
{
    struct cl_attest_policy p = {.root_der = root->data, .root_len = root->len, .allow_any_pcr = true};
    return p;
}

static void test_sim_sign(void **state)
{
    (void)state;
    cl_attest_signer *s = NULL;
    assert_ok(cl_attest_signer_ephemeral(&s));
    struct cl_buf root, doc;
    cl_buf_init(&root, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(s, &root));
    /* Default PCRs are zero: a debug document. */
    assert_ok(cl_attest_signer_sign(s, NULL, 0, NULL, 0, NULL, 0, &doc));
    struct cl_attest_policy p = sim_policy(&root);
    check(verify_buf(&doc, &p), CL_E_ATTEST_DEBUG, "sim debug");
    p.allow_debug = true;
    check(verify_buf(&doc, &p), CL_OK, "sim debug allowed");

    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        memset(pcr[i], (int)i + 1, CL_ATTEST_PCR_LEN);
    cl_attest_signer_set_pcrs(s, 0xffffffffu, pcr);
    uint8_t pk[91], ud[512], nonce[32];
    memset(pk, 0x11, sizeof(pk));
    memset(ud, 0x22, sizeof(ud));
    memset(nonce, 0x33, sizeof(nonce));
    cl_buf_reset(&doc);
    doc.len = 0;
    assert_ok(cl_attest_signer_sign(s, pk, sizeof(pk), ud, sizeof(ud), nonce, sizeof(nonce), &doc));
    struct cl_attest_doc d;
    assert_ok(cl_attest_parse(doc.data, doc.len, &d));
    assert_int_equal(d.npcrs, 32);
    assert_int_equal(d.ncabundle, 2);
    cl_attest_doc_free(&d);
    p = sim_policy(&root);
    struct cl_attest_pcr_expect want[3] = {{.index = 0}, {.index = 8}, {.index = 31}};
    for (int i = 0; i < 3; i++)
        memcpy(want[i].value, pcr[want[i].index], CL_ATTEST_PCR_LEN);
    p.pcrs = want;
    p.npcrs = 3;
    p.allow_any_pcr = false;
    p.check_nonce = true;
    p.nonce = (struct cl_attest_span){nonce, sizeof(nonce)};
    p.check_public_key = true;
    p.public_key = (struct cl_attest_span){pk, sizeof(pk)};
    p.check_user_data = true;
    p.user_data = (struct cl_attest_span){ud, sizeof(ud)};
    p.max_age_ms = 5000;
    check(verify_buf(&doc, &p), CL_OK, "sim full policy");
    /* Fails with the AWS root. */
    struct cl_buf aws = aws_root();
    if (aws.len) {
        struct cl_attest_policy pa = p;
        pa.root_der = aws.data;
        pa.root_len = aws.len;
        check(verify_buf(&doc, &pa), CL_E_ATTEST_ROOT_MISMATCH, "sim doc, AWS root");
    }
    cl_buf_free(&aws);
    /* Freshness both ways. */
    cl_buf_reset(&doc);
    doc.len = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000;
    assert_ok(cl_attest_signer_sign_at(s, now - 3600 * 1000, pk, sizeof(pk), ud, sizeof(ud), nonce, sizeof(nonce), &doc));
    check(verify_buf(&doc, &p), CL_E_ATTEST_STALE, "sim stale");
    cl_buf_reset(&doc);
    doc.len = 0;
    assert_ok(cl_attest_signer_sign_at(s, now + 600 * 1000, pk, sizeof(pk), ud, sizeof(ud), nonce, sizeof(nonce), &doc));
    check(verify_buf(&doc, &p), CL_E_ATTEST_FUTURE, "sim future");
    /* Limits enforced on encoding too. */
    uint8_t too_big[513] = {0};
    assert_err(cl_attest_signer_sign(s, NULL, 0, too_big, sizeof(too_big), NULL, 0, &doc), CL_E_ATTEST_FIELD_LIMIT);
    assert_err(cl_attest_signer_sign(s, NULL, 0, NULL, 0, too_big, sizeof(too_big), &doc), CL_E_ATTEST_FIELD_LIMIT);
    /* A fresh leaf is not renewed. */
    struct cl_attest_doc before, after;
    assert_ok(cl_attest_parse(doc.data, doc.len, &before));
    assert_ok(cl_attest_signer_refresh(s));
    struct cl_buf doc2;
    cl_buf_init(&doc2, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_attest_signer_sign(s, NULL, 0, NULL, 0, NULL, 0, &doc2));
    assert_ok(cl_attest_parse(doc2.data, doc2.len, &after));
    assert_int_equal(before.certificate.len, after.certificate.len);
    assert_memory_equal(before.certificate.p, after.certificate.p, before.certificate.len);
    cl_attest_doc_free(&before);
    cl_attest_doc_free(&after);
    cl_buf_free(&doc2);
    /* The leaf is only valid for hours. */
    cl_buf_reset(&doc);
    doc.len = 0;
    assert_ok(cl_attest_signer_sign(s, NULL, 0, NULL, 0, NULL, 0, &doc));
    p = sim_policy(&root);
    p.at_ms = (int64_t)now + 4 * 3600 * 1000;
    check(verify_buf(&doc, &p), CL_E_ATTEST_CERT_EXPIRED, "sim leaf after 4 h");
    cl_buf_free(&doc);
    cl_buf_free(&root);
    cl_attest_signer_free(s);
}

static void test_sim_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/cl-attest-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/sim", dir);
    assert_ok(cl_attest_sim_init(sub));
    assert_err(cl_attest_sim_init(sub), CL_E_CORE_EXISTS);
    struct stat st;
    char path[256];
    snprintf(path, sizeof(path), "%s/root.key", sub);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/intermediate.key", sub);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    cl_attest_signer *a = NULL, *b = NULL;
    assert_ok(cl_attest_signer_load(sub, &a));
    assert_ok(cl_attest_signer_load(sub, &b));
    struct cl_buf ra, rb, pem, doc;
    cl_buf_init(&ra, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&rb, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&pem, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_attest_signer_root_der(a, &ra));
    assert_ok(cl_attest_signer_root_der(b, &rb));
    assert_int_equal(ra.len, rb.len);
    assert_memory_equal(ra.data, rb.data, ra.len);
    /* root.pem is the same certificate. */
    snprintf(path, sizeof(path), "%s/root.pem", sub);
    assert_ok(cl_file_read(path, 1 << 16, &pem));
    cl_buf_reset(&rb);
    rb.len = 0;
    assert_ok(cl_attest_cert_to_der(pem.data, pem.len, &rb));
    assert_memory_equal(ra.data, rb.data, ra.len);
    /* Fresh leaf per boot: two signers, two leaves, both verify. */
    struct cl_attest_policy p = {.root_der = ra.data, .root_len = ra.len, .allow_any_pcr = true, .allow_debug = true};
    assert_ok(cl_attest_signer_sign(a, NULL, 0, NULL, 0, NULL, 0, &doc));
    struct cl_attest_doc da, db;
    assert_ok(cl_attest_parse(doc.data, doc.len, &da));
    check(cl_attest_verify(&da, &p), CL_OK, "boot a");
    cl_buf_reset(&doc);
    doc.len = 0;
    assert_ok(cl_attest_signer_sign(b, NULL, 0, NULL, 0, NULL, 0, &doc));
    assert_ok(cl_attest_parse(doc.data, doc.len, &db));
    check(cl_attest_verify(&db, &p), CL_OK, "boot b");
    assert_true(da.certificate.len != db.certificate.len ||
                memcmp(da.certificate.p, db.certificate.p, da.certificate.len) != 0);
    cl_attest_doc_free(&da);
    cl_attest_doc_free(&db);
    /* A key readable by others is refused. */
    snprintf(path, sizeof(path), "%s/intermediate.key", sub);
    assert_int_equal(chmod(path, 0644), 0);
    cl_attest_signer *c = NULL;
    assert_err(cl_attest_signer_load(sub, &c), CL_E_CORE_INSECURE_FILE);
    const char *files[] = {"root.pem", "root.key", "intermediate.pem", "intermediate.key"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", sub, files[i]);
        unlink(path);
    }
    rmdir(sub);
    rmdir(dir);
    cl_buf_free(&ra);
    cl_buf_free(&rb);
    cl_buf_free(&pem);
    cl_buf_free(&doc);
    cl_attest_signer_free(a);
    cl_attest_signer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_docs),     cmocka_unit_test(test_fields),
        cmocka_unit_test(test_upstream_json), cmocka_unit_test(test_field_checks),
        cmocka_unit_test(test_chain_checks),
        cmocka_unit_test(test_tamper),        cmocka_unit_test(test_nonce_freshness),
        cmocka_unit_test(test_selfsigned),    cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sim_sign),      cmocka_unit_test(test_sim_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
