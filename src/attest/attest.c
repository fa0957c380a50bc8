#include "cloister/attest.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/encode.h"
#include "cloister/secmem.h"

void cl_attest_doc_free(struct cl_attest_doc *d)
{
    if (!d)
        return;
    cl_cose_sign1_free(&d->cose);
    cl_cbor_free(d->payload_doc);
    free(d->raw);
    memset(d, 0, sizeof(*d));
}

/* Optional byte fields: absent, null and an empty byte string all mean "none". */
static cl_err cl_attest_optional_bytes(const struct cl_cbor_item *map, const char *name, size_t max,
                                       struct cl_attest_span *out)
{
    const struct cl_cbor_item *v = cl_cbor_map_get_text(map, name);
    out->p = NULL;
    out->len = 0;
    if (!v || cl_cbor_is_null(v))
        return CL_OK;
    if (v->type != CL_CBOR_BYTES)
        return cl_err_fail(CL_E_ATTEST_FIELD, "%s is not a byte string", name);
    if (v->len > max)
        return cl_err_fail(CL_E_ATTEST_FIELD_LIMIT, "%s of %zu bytes, limit %zu", name, v->len, max);
    out->p = v->p;
    out->len = v->len;
    return CL_OK;
}

static const char *const cl_attest_known_fields[] = {"module_id", "digest",     "timestamp", "pcrs",  "certificate",
                                                     "cabundle",  "public_key", "user_data", "nonce"};

cl_err cl_attest_parse(const uint8_t *p, size_t n, struct cl_attest_doc *out)
{
    cl_err rc = CL_OK;
    struct cl_attest_doc d;
    memset(&d, 0, sizeof(d));
    CL_ENSURE_D(n <= CL_ATTEST_MAX_DOC, CL_E_ATTEST_TOO_LARGE, "document of %zu bytes, limit %d", n,
                CL_ATTEST_MAX_DOC);
    CL_ENSURE_D(n > 0, CL_E_ATTEST_MALFORMED, "empty document");
    d.raw = malloc(n);
    CL_ENSURE(d.raw, CL_E_CORE_NOMEM);
    memcpy(d.raw, p, n);
    d.raw_len = n;
    struct cl_cbor_limits lim = cl_cbor_default_limits;
    lim.max_input = CL_ATTEST_MAX_DOC;
    lim.max_depth = 8;
    lim.max_items = 4096;
    lim.max_map_pairs = 64;
    CL_GUARD(cl_cose_sign1_parse(d.raw, n, CL_COSE_PROFILE_NITRO, &lim, &d.cose));
    CL_ENSURE_D(d.cose.payload_len <= CL_ATTEST_MAX_PAYLOAD, CL_E_ATTEST_TOO_LARGE, "payload of %zu bytes, limit %d",
                d.cose.payload_len, CL_ATTEST_MAX_PAYLOAD);
    struct cl_cursor c;
    cl_cursor_init(&c, d.cose.payload, d.cose.payload_len);
    CL_GUARD(cl_cbor_decode(&c, &lim, &d.payload_doc));
    const struct cl_cbor_item *m = cl_cbor_root(d.payload_doc);
    CL_ENSURE_D(m->type == CL_CBOR_MAP, CL_E_ATTEST_MALFORMED, "payload is not a map");
    for (const struct cl_cbor_item *k = m->child; k; k = k->next->next) {
        bool known = false;
        for (size_t i = 0; i < sizeof(cl_attest_known_fields) / sizeof(cl_attest_known_fields[0]); i++)
            known = known || cl_cbor_is_text(k, cl_attest_known_fields[i]);
        CL_ENSURE_D(known, CL_E_ATTEST_MALFORMED, "unknown payload field at offset %zu",
                    (size_t)(k->raw - d.cose.payload));
    }

    const struct cl_cbor_item *v = cl_cbor_map_get_text(m, "module_id");
    CL_ENSURE_D(v && v->type == CL_CBOR_TEXT && v->len > 0, CL_E_ATTEST_FIELD, "module_id missing or not text");
    CL_ENSURE_D(v->len <= CL_ATTEST_MAX_MODULE_ID, CL_E_ATTEST_FIELD_LIMIT, "module_id of %zu bytes", v->len);
    d.module_id.p = v->p;
    d.module_id.len = v->len;

    v = cl_cbor_map_get_text(m, "digest");
    CL_ENSURE_D(v && v->type == CL_CBOR_TEXT, CL_E_ATTEST_FIELD, "digest missing or not text");
    CL_ENSURE_D(cl_cbor_is_text(v, "SHA384"), CL_E_ATTEST_DIGEST, "digest is not \"SHA384\"");

    v = cl_cbor_map_get_text(m, "timestamp");
    CL_ENSURE_D(v && v->type == CL_CBOR_UINT && v->u > 0, CL_E_ATTEST_FIELD, "timestamp missing or not a positive integer");
    d.timestamp_ms = v->u;

    v = cl_cbor_map_get_text(m, "pcrs");
    CL_ENSURE_D(v && v->type == CL_CBOR_MAP, CL_E_ATTEST_FIELD, "pcrs missing or not a map");
    CL_ENSURE_D(v->count >= 1 && v->count <= CL_ATTEST_MAX_PCRS, CL_E_ATTEST_PCRS, "%zu PCRs, expected 1..%d",
                v->count, CL_ATTEST_MAX_PCRS);
    for (const struct cl_cbor_item *k = v->child; k; k = k->next->next) {
        CL_ENSURE_D(k->type == CL_CBOR_UINT && k->u < CL_ATTEST_MAX_PCRS, CL_E_ATTEST_PCRS,
                    "PCR index not an integer in 0..31");
        const struct cl_cbor_item *val = k->next;
        CL_ENSURE_D(val->type == CL_CBOR_BYTES, CL_E_ATTEST_PCRS, "PCR%u is not a byte string", (unsigned)k->u);
        CL_ENSURE_D(val->len == CL_ATTEST_PCR_LEN, CL_E_ATTEST_PCR_LENGTH, "PCR%u of %zu bytes, expected %d",
                    (unsigned)k->u, val->len, CL_ATTEST_PCR_LEN);
        d.pcr_present |= 1u << k->u;
        d.pcr[k->u].p = val->p;
        d.pcr[k->u].len = val->len;
        d.npcrs++;
    }

    v = cl_cbor_map_get_text(m, "certificate");
    CL_ENSURE_D(v && v->type == CL_CBOR_BYTES && v->len > 0, CL_E_ATTEST_FIELD, "certificate missing or not bytes");
    CL_ENSURE_D(v->len <= CL_ATTEST_MAX_CERT, CL_E_ATTEST_FIELD_LIMIT, "certificate of %zu bytes", v->len);
    d.certificate.p = v->p;
    d.certificate.len = v->len;

    v = cl_cbor_map_get_text(m, "cabundle");
    CL_ENSURE_D(v && v->type == CL_CBOR_ARRAY, CL_E_ATTEST_CABUNDLE, "cabundle missing or not an array");
    CL_ENSURE_D(v->count >= 1 && v->count <= CL_ATTEST_MAX_CABUNDLE, CL_E_ATTEST_CABUNDLE,
                "cabundle of %zu certificates, expected 1..%d", v->count, CL_ATTEST_MAX_CABUNDLE);
    for (const struct cl_cbor_item *e = v->child; e; e = e->next) {
        CL_ENSURE_D(e->type == CL_CBOR_BYTES && e->len > 0, CL_E_ATTEST_CABUNDLE, "cabundle[%zu] is not bytes",
                    d.ncabundle);
        CL_ENSURE_D(e->len <= CL_ATTEST_MAX_CERT, CL_E_ATTEST_FIELD_LIMIT, "cabundle[%zu] of %zu bytes", d.ncabundle,
                    e->len);
        d.cabundle[d.ncabundle].p = e->p;
        d.cabundle[d.ncabundle].len = e->len;
        d.ncabundle++;
    }

    CL_GUARD(cl_attest_optional_bytes(m, "public_key", CL_ATTEST_MAX_DOC_FIELD, &d.public_key));
    CL_GUARD(cl_attest_optional_bytes(m, "user_data", CL_ATTEST_MAX_DOC_FIELD, &d.user_data));
    CL_GUARD(cl_attest_optional_bytes(m, "nonce", CL_ATTEST_MAX_DOC_FIELD, &d.nonce));
    *out = d;
    memset(&d, 0, sizeof(d));
out:
    cl_attest_doc_free(&d);
    return rc;
}

bool cl_attest_is_debug(const struct cl_attest_doc *d)
{
    for (unsigned i = 0; i < 3; i++) {
        if (!(d->pcr_present & (1u << i)))
            return false;
        for (size_t k = 0; k < d->pcr[i].len; k++)
            if (d->pcr[i].p[k])
                return false;
    }
    return true;
}

/* ---- certificates ---- */

static cl_err cl_attest_x509(const struct cl_attest_span *s, const char *what, size_t idx, X509 **out)
{
    const unsigned char *q = s->p;
    X509 *x = d2i_X509(NULL, &q, (long)s->len);
    if (!x || q != s->p + s->len) {
        X509_free(x);
        cl_err e = cl_ossl_fail(CL_E_ATTEST_CERT_PARSE, "d2i_X509");
        (void)e;
        return cl_err_fail(CL_E_ATTEST_CERT_PARSE, "%s %zu is not one DER certificate", what, idx);
    }
    *out = x;
    return CL_OK;
}

static void cl_attest_cert_name(size_t i, size_t nca, char *buf, size_t len)
{
    if (i < nca)
        snprintf(buf, len, "cabundle[%zu]", i);
    else
        snprintf(buf, len, "leaf certificate");
}

static cl_err cl_attest_check_chain(const struct cl_attest_doc *d, const struct cl_attest_policy *pol)
{
    cl_err rc = CL_OK;
    X509 *certs[CL_ATTEST_MAX_CABUNDLE + 1] = {0};
    size_t n = d->ncabundle + 1;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    STACK_OF(X509) *untrusted = NULL;
    char name[32];
    time_t at = (time_t)(pol->at_ms / 1000);

    CL_ENSURE_D(pol->root_der && pol->root_len, CL_E_ATTEST_NO_ROOT, "policy has no root");
    CL_ENSURE_D(d->cabundle[0].len == pol->root_len && memcmp(d->cabundle[0].p, pol->root_der, pol->root_len) == 0,
                CL_E_ATTEST_ROOT_MISMATCH, "cabundle[0] differs from the pinned root");
    for (size_t i = 0; i < n; i++) {
        const struct cl_attest_span *s = i < d->ncabundle ? &d->cabundle[i] : &d->certificate;
        CL_GUARD(cl_attest_x509(s, i < d->ncabundle ? "cabundle" : "leaf", i, &certs[i]));
    }
    for (size_t i = 0; i < n; i++) {
        X509 *x = certs[i];
        cl_attest_cert_name(i, d->ncabundle, name, sizeof(name));
        uint32_t flags = X509_get_extension_flags(x);
        CL_ENSURE_D(!(flags & EXFLAG_INVALID), CL_E_ATTEST_CERT_PARSE, "%s has invalid extensions", name);
        CL_ENSURE_D(!(flags & EXFLAG_CRITICAL), CL_E_ATTEST_CERT_CRITICAL_EXT, "%s", name);
        if (i > 0) {
            X509 *issuer = certs[i - 1];
            CL_ENSURE_D(X509_check_issued(issuer, x) == X509_V_OK, CL_E_ATTEST_CHAIN_ISSUER,
                        "%s not issued by the certificate before it", name);
            EVP_PKEY *ik = X509_get0_pubkey(issuer);
            CL_ENSURE_D(ik && X509_verify(x, ik) == 1, CL_E_ATTEST_CHAIN_SIGNATURE, "%s", name);
        } else {
            EVP_PKEY *rk = X509_get0_pubkey(x);
            CL_ENSURE_D(rk && X509_verify(x, rk) == 1, CL_E_ATTEST_CHAIN_SIGNATURE, "root is not self-signed");
        }
        if (i < d->ncabundle) {
            CL_ENSURE_D((flags & EXFLAG_BCONS) && (flags & EXFLAG_CA), CL_E_ATTEST_CERT_NOT_CA, "%s", name);
            CL_ENSURE_D((flags & EXFLAG_KUSAGE) && (X509_get_key_usage(x) & KU_KEY_CERT_SIGN), CL_E_ATTEST_CERT_KEY_USAGE,
                        "%s lacks keyCertSign", name);
            long pl = X509_get_pathlen(x);
            /* CA certificates after this one, not counting the leaf. */
            size_t below = d->ncabundle - 1 - i;
            CL_ENSURE_D(pl < 0 || (size_t)pl >= below, CL_E_ATTEST_CERT_PATHLEN, "%s allows %ld, %zu follow", name,
                        pl, below);
        } else {
            CL_ENSURE_D(!(flags & EXFLAG_CA), CL_E_ATTEST_CERT_NOT_CA, "leaf certificate is a CA");
            CL_ENSURE_D(!(flags & EXFLAG_KUSAGE) || (X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE),
                        CL_E_ATTEST_CERT_KEY_USAGE, "leaf certificate lacks digitalSignature");
        }
        /* X509_cmp_time: -1 when the certificate time is at or before `at`. */
        int nb = X509_cmp_time(X509_get0_notBefore(x), &at);
        int na = X509_cmp_time(X509_get0_notAfter(x), &at);
        CL_ENSURE_D(nb != 0 && na != 0, CL_E_ATTEST_CERT_PARSE, "%s has unreadable validity", name);
        CL_ENSURE_D(nb < 0, CL_E_ATTEST_CERT_NOT_YET_VALID, "%s", name);
        CL_ENSURE_D(na > 0, CL_E_ATTEST_CERT_EXPIRED, "%s", name);
    }
    EVP_PKEY *lk = X509_get0_pubkey(certs[n - 1]);
    CL_ENSURE_D(lk && EVP_PKEY_is_a(lk, "EC") && EVP_PKEY_get_bits(lk) == 384, CL_E_ATTEST_LEAF_KEY, "leaf key");

    /* Defence in depth: OpenSSL's RFC 5280 path validation over the same
     * chain, anchored only at the pinned root. */
    store = X509_STORE_new();
    untrusted = sk_X509_new_null();
    ctx = X509_STORE_CTX_new();
    CL_ENSURE(store && untrusted && ctx, CL_E_CORE_NOMEM);
    CL_ENSURE(X509_STORE_add_cert(store, certs[0]) == 1, CL_E_ATTEST_INTERNAL);
    for (size_t i = 1; i + 1 < n; i++)
        CL_ENSURE(sk_X509_push(untrusted, certs[i]) > 0, CL_E_CORE_NOMEM);
    CL_ENSURE(X509_STORE_CTX_init(ctx, store, certs[n - 1], untrusted) == 1, CL_E_ATTEST_INTERNAL);
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(vp, at);
    /* Not X509_V_FLAG_X509_STRICT: genuine Nitro leaf certificates lack an
     * authority key identifier, which strict mode refuses. */
    X509_VERIFY_PARAM_set_depth(vp, CL_ATTEST_MAX_CABUNDLE + 1);
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        CL_FAIL(CL_E_ATTEST_CHAIN, "%s at depth %d", X509_verify_cert_error_string(e),
                X509_STORE_CTX_get_error_depth(ctx));
    }
out:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(store);
    for (size_t i = 0; i < n; i++)
        X509_free(certs[i]);
    return rc;
}

static cl_err cl_attest_check_signature(const struct cl_attest_doc *d)
{
    cl_err rc = CL_OK;
    X509 *leaf = NULL;
    cl_pkey *k = NULL;
    CL_GUARD(cl_attest_x509(&d->certificate, "leaf", 0, &leaf));
    CL_GUARD(cl_pkey_wrap(X509_get0_pubkey(leaf), &k));
    if (cl_cose_sign1_verify(&d->cose, k, NULL, 0) != CL_OK)
        CL_FAIL(CL_E_ATTEST_SIGNATURE, "COSE_Sign1 ES384 over the payload");
out:
    cl_pkey_free(k);
    X509_free(leaf);
    return rc;
}

static bool cl_attest_span_eq(const struct cl_attest_span *a, const struct cl_attest_span *b)
{
    return a->len == b->len && (a->len == 0 || cl_ct_equal(a->p, b->p, a->len));
}

cl_err cl_attest_verify(const struct cl_attest_doc *d, const struct cl_attest_policy *pol)
{
    cl_err rc = CL_OK;
    struct cl_attest_policy p = *pol;
    if (p.at_ms == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        p.at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    CL_ENSURE_D(p.at_ms > 0, CL_E_CORE_INVALID_ARG, "verification time");
    CL_GUARD(cl_attest_check_chain(d, &p));
    CL_GUARD(cl_attest_check_signature(d));

    CL_ENSURE_D(p.allow_debug || !cl_attest_is_debug(d), CL_E_ATTEST_DEBUG, "PCR0, PCR1 and PCR2 are all zero");
    CL_ENSURE_D(p.npcrs > 0 || p.allow_any_pcr, CL_E_ATTEST_NO_PCR_POLICY, "empty PCR expectation");
    for (size_t i = 0; i < p.npcrs; i++) {
        unsigned idx = p.pcrs[i].index;
        CL_ENSURE_D(idx < CL_ATTEST_MAX_PCRS, CL_E_CORE_INVALID_ARG, "expected PCR index %u", idx);
        CL_ENSURE_D(d->pcr_present & (1u << idx), CL_E_ATTEST_PCR_MISSING, "PCR%u", idx);
        CL_ENSURE_D(d->pcr[idx].len == CL_ATTEST_PCR_LEN && cl_ct_equal(d->pcr[idx].p, p.pcrs[i].value, CL_ATTEST_PCR_LEN),
                    CL_E_ATTEST_PCR_MISMATCH, "PCR%u", idx);
    }
    if (p.check_nonce)
        CL_ENSURE_D(p.nonce.len > 0 && cl_attest_span_eq(&d->nonce, &p.nonce), CL_E_ATTEST_NONCE,
                    "nonce of %zu bytes does not match", d->nonce.len);
    if (p.max_age_ms) {
        uint64_t at = (uint64_t)p.at_ms;
        CL_ENSURE_D(d->timestamp_ms <= at + CL_ATTEST_CLOCK_SKEW_MS, CL_E_ATTEST_FUTURE,
                    "timestamp %llu ms after the verification time",
                    (unsigned long long)(d->timestamp_ms - at));
        CL_ENSURE_D(d->timestamp_ms >= at || at - d->timestamp_ms <= p.max_age_ms, CL_E_ATTEST_STALE,
                    "document is %llu ms old, limit %llu", (unsigned long long)(at - d->timestamp_ms),
                    (unsigned long long)p.max_age_ms);
    }
    if (p.check_public_key)
        CL_ENSURE_D(cl_attest_span_eq(&d->public_key, &p.public_key), CL_E_ATTEST_PUBLIC_KEY, "public_key");
    if (p.check_user_data)
        CL_ENSURE_D(cl_attest_span_eq(&d->user_data, &p.user_data), CL_E_ATTEST_USER_DATA, "user_data");
out:
    return rc;
}

cl_err cl_attest_verify_bytes(const uint8_t *p, size_t n, const struct cl_attest_policy *pol)
{
    struct cl_attest_doc d;
    cl_err rc = cl_attest_parse(p, n, &d);
    if (rc != CL_OK)
        return rc;
    rc = cl_attest_verify(&d, pol);
    cl_attest_doc_free(&d);
    return rc;
}

cl_err cl_attest_decode_input(const uint8_t *p, size_t n, struct cl_buf *raw)
{
    size_t a = 0, b = n;
    while (a < b && isspace(p[a]))
        a++;
    while (b > a && isspace(p[b - 1]))
        b--;
    if (a == b)
        return cl_err_fail(CL_E_ATTEST_MALFORMED, "empty input");
    /* A COSE_Sign1 starts with 0x84 (array of 4) or 0xd2 (tag 18): neither
     * is a base64 character. */
    if (p[a] == 0x84 || p[a] == 0xd2)
        return cl_buf_append(raw, p, n);
    cl_err rc = cl_b64_decode((const char *)p + a, b - a, CL_B64_STD, raw);
    if (rc != CL_OK)
        return cl_err_fail(CL_E_ATTEST_MALFORMED, "neither raw COSE_Sign1 nor base64");
    return CL_OK;
}

cl_err cl_attest_cert_to_der(const uint8_t *p, size_t n, struct cl_buf *der)
{
    cl_err rc = CL_OK;
    X509 *x = NULL;
    BIO *bio = NULL;
    unsigned char *out = NULL;
    CL_ENSURE_D(n > 0 && n <= 1 << 20, CL_E_ATTEST_CERT_PARSE, "certificate of %zu bytes", n);
    if (n > 10 && memcmp(p, "-----BEGIN", 10) == 0) {
        bio = BIO_new_mem_buf(p, (int)n);
        CL_ENSURE(bio, CL_E_CORE_NOMEM);
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    } else {
        const unsigned char *q = p;
        x = d2i_X509(NULL, &q, (long)n);
        if (x && q != p + n)
            CL_FAIL(CL_E_ATTEST_CERT_PARSE, "trailing bytes after the DER certificate");
    }
    if (!x)
        CL_FAIL(cl_ossl_fail(CL_E_ATTEST_CERT_PARSE, "certificate"), "not a PEM or DER certificate");
    int len = i2d_X509(x, &out);
    CL_ENSURE_D(len > 0, CL_E_ATTEST_CERT_PARSE, "re-encoding");
    CL_GUARD(cl_buf_append(der, out, (size_t)len));
out:
    OPENSSL_free(out);
    X509_free(x);
    BIO_free(bio);
    return rc;
}

static cl_err cl_attest_asn1_time(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return cl_err_fail(CL_E_ATTEST_CERT_PARSE, "validity time");
    *out = (int64_t)timegm(&tm);
    return CL_OK;
}

cl_err cl_attest_cert_validity(const uint8_t *der, size_t n, int64_t *not_before, int64_t *not_after)
{
    cl_err rc = CL_OK;
    X509 *x = NULL;
    struct cl_attest_span s = {der, n};
    CL_GUARD(cl_attest_x509(&s, "certificate", 0, &x));
    CL_GUARD(cl_attest_asn1_time(X509_get0_notBefore(x), not_before));
    CL_GUARD(cl_attest_asn1_time(X509_get0_notAfter(x), not_after));
out:
    X509_free(x);
    return rc;
}
