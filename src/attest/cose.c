#include "cloister/cose.h"

#include <openssl/evp.h>
#include <string.h>

/* {1: -35} */
static const uint8_t cl_cose_prot_es384[] = {0xa1, 0x01, 0x38, 0x22};

void cl_cose_sign1_free(struct cl_cose_sign1 *s)
{
    if (!s)
        return;
    cl_cbor_free(s->doc);
    memset(s, 0, sizeof(*s));
}

static cl_err cl_cose_alg_from(const struct cl_cbor_item *map, bool *present, int64_t *alg)
{
    const struct cl_cbor_item *a = cl_cbor_map_get_int(map, 1);
    *present = a != NULL;
    if (!a)
        return CL_OK;
    if (a->type != CL_CBOR_UINT && a->type != CL_CBOR_NINT)
        return cl_err_fail(CL_E_COSE_UNSUPPORTED_ALG, "alg is not an integer");
    if (cl_cbor_get_int(a, alg) != CL_OK)
        return cl_err_fail(CL_E_COSE_UNSUPPORTED_ALG, "alg out of range");
    return CL_OK;
}

cl_err cl_cose_sign1_parse(const uint8_t *p, size_t n, enum cl_cose_profile prof, const struct cl_cbor_limits *lim,
                           struct cl_cose_sign1 *out)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    cl_cbor_doc *pdoc = NULL;
    struct cl_cursor c;
    CL_ENSURE_D(prof == CL_COSE_PROFILE_NITRO || prof == CL_COSE_PROFILE_GENERIC, CL_E_CORE_INVALID_ARG, "profile");
    cl_cursor_init(&c, p, n);
    CL_GUARD(cl_cbor_decode(&c, lim, &s.doc));
    const struct cl_cbor_item *top = cl_cbor_root(s.doc);
    if (top->type == CL_CBOR_TAG) {
        CL_ENSURE_D(top->u == CL_COSE_TAG_SIGN1, CL_E_COSE_BAD_TAG, "tag %llu, expected 18",
                    (unsigned long long)top->u);
        s.tagged = true;
        top = top->child;
    }
    CL_ENSURE_D(top->type == CL_CBOR_ARRAY && top->count == 4, CL_E_COSE_MALFORMED, "not an array of 4 items");
    const struct cl_cbor_item *prot = top->child, *unprot = prot->next, *payload = unprot->next,
                              *sig = payload->next;
    CL_ENSURE_D(prot->type == CL_CBOR_BYTES, CL_E_COSE_MALFORMED, "protected header is not a byte string");
    CL_ENSURE_D(unprot->type == CL_CBOR_MAP, CL_E_COSE_BAD_HEADER, "unprotected header is not a map");
    CL_ENSURE_D(payload->type == CL_CBOR_BYTES, CL_E_COSE_MALFORMED, "payload is not a byte string");
    CL_ENSURE_D(sig->type == CL_CBOR_BYTES, CL_E_COSE_MALFORMED, "signature is not a byte string");
    s.protected_raw = prot->p;
    s.protected_len = prot->len;
    s.unprotected = unprot;
    s.payload = payload->p;
    s.payload_len = payload->len;
    s.sig = sig->p;
    s.sig_len = sig->len;
    if (prof == CL_COSE_PROFILE_NITRO) {
        CL_ENSURE_D(prot->len == sizeof(cl_cose_prot_es384) &&
                        memcmp(prot->p, cl_cose_prot_es384, sizeof(cl_cose_prot_es384)) == 0,
                    CL_E_COSE_BAD_HEADER, "protected header is not exactly {1: -35}");
        CL_ENSURE_D(!cl_cbor_map_get_int(unprot, 1), CL_E_COSE_BAD_HEADER, "alg in the unprotected header");
        s.alg = CL_COSE_ALG_ES384;
    } else {
        bool in_prot = false, in_unprot = false;
        int64_t alg = 0;
        if (prot->len) {
            struct cl_cursor pc;
            cl_cursor_init(&pc, prot->p, prot->len);
            CL_ENSURE_D(cl_cbor_decode(&pc, lim, &pdoc) == CL_OK, CL_E_COSE_BAD_HEADER,
                        "protected header is not one CBOR item");
            const struct cl_cbor_item *pm = cl_cbor_root(pdoc);
            CL_ENSURE_D(pm->type == CL_CBOR_MAP, CL_E_COSE_BAD_HEADER, "protected header is not a map");
            CL_GUARD(cl_cose_alg_from(pm, &in_prot, &alg));
            /* RFC 9052 section 3: an empty protected map is signed as a
             * zero-length byte string, however the sender encoded it. */
            if (pm->count == 0)
                s.protected_len = 0;
        }
        int64_t ualg = 0;
        CL_GUARD(cl_cose_alg_from(unprot, &in_unprot, &ualg));
        CL_ENSURE_D(!(in_prot && in_unprot), CL_E_COSE_BAD_HEADER, "alg in both headers");
        CL_ENSURE_D(in_prot || in_unprot, CL_E_COSE_BAD_HEADER, "no alg");
        if (in_unprot)
            alg = ualg;
        CL_ENSURE_D(alg == CL_COSE_ALG_ES256 || alg == CL_COSE_ALG_ES384, CL_E_COSE_UNSUPPORTED_ALG, "alg %lld",
                    (long long)alg);
        s.alg = alg;
    }
    *out = s;
    s.doc = NULL;
out:
    cl_cbor_free(pdoc);
    cl_cbor_free(s.doc);
    return rc;
}

cl_err cl_cose_sig_structure(const uint8_t *prot, size_t protlen, const uint8_t *aad, size_t aadlen,
                             const uint8_t *payload, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_cbor_put_array(out, 4));
    CL_GUARD(cl_cbor_put_text(out, "Signature1"));
    CL_GUARD(cl_cbor_put_bytes(out, prot, protlen));
    CL_GUARD(cl_cbor_put_bytes(out, aad, aadlen));
    CL_GUARD(cl_cbor_put_bytes(out, payload, n));
out:
    return rc;
}

cl_err cl_cose_sign1_verify(const struct cl_cose_sign1 *s, const cl_pkey *key, const uint8_t *aad, size_t aadlen)
{
    cl_err rc = CL_OK;
    struct cl_buf tbs;
    size_t max;
    enum cl_hash_alg h = s->alg == CL_COSE_ALG_ES384 ? CL_HASH_SHA384 : CL_HASH_SHA256;
    int want_bits = s->alg == CL_COSE_ALG_ES384 ? 384 : 256;
    cl_buf_init(&tbs, 1, CL_BUF_NONE);
    CL_ENSURE_D(s->alg == CL_COSE_ALG_ES384 || s->alg == CL_COSE_ALG_ES256, CL_E_COSE_UNSUPPORTED_ALG, "alg %lld",
                (long long)s->alg);
    CL_ENSURE_D(EVP_PKEY_is_a(cl_pkey_evp(key), "EC") && EVP_PKEY_get_bits(cl_pkey_evp(key)) == want_bits,
                CL_E_COSE_KEY_MISMATCH, "key is not a P-%d key", want_bits);
    CL_ENSURE_D(s->sig_len == (size_t)want_bits / 4, CL_E_COSE_BAD_SIGNATURE, "signature of %zu bytes, expected %d",
                s->sig_len, want_bits / 4);
    CL_GUARD(cl_size_add(s->protected_len, s->payload_len, &max));
    CL_GUARD(cl_size_add(max, aadlen, &max));
    CL_GUARD(cl_size_add(max, 64, &max));
    tbs.max = max;
    CL_GUARD(cl_cose_sig_structure(s->protected_raw, s->protected_len, aad, aadlen, s->payload, s->payload_len, &tbs));
    if (cl_ecdsa_verify(key, h, tbs.data, tbs.len, s->sig, s->sig_len, CL_SIG_RAW) != CL_OK)
        CL_FAIL(CL_E_COSE_BAD_SIGNATURE, "ES%d signature does not verify", want_bits);
out:
    cl_buf_free(&tbs);
    return rc;
}

cl_err cl_cose_sign1_sign_es384(const cl_pkey *key, const uint8_t *payload, size_t n, bool tagged, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf tbs, sig;
    size_t max;
    cl_buf_init(&tbs, 1, CL_BUF_NONE);
    cl_buf_init(&sig, 256, CL_BUF_NONE);
    CL_ENSURE_D(cl_pkey_type(key) == CL_PKEY_P384 && cl_pkey_is_private(key), CL_E_COSE_KEY_MISMATCH,
                "ES384 needs a P-384 private key");
    CL_GUARD(cl_size_add(n, 64, &max));
    tbs.max = max;
    CL_GUARD(cl_cose_sig_structure(cl_cose_prot_es384, sizeof(cl_cose_prot_es384), NULL, 0, payload, n, &tbs));
    CL_GUARD(cl_ecdsa_sign(key, CL_HASH_SHA384, tbs.data, tbs.len, CL_SIG_RAW, &sig));
    if (tagged)
        CL_GUARD(cl_cbor_put_tag(out, CL_COSE_TAG_SIGN1));
    CL_GUARD(cl_cbor_put_array(out, 4));
    CL_GUARD(cl_cbor_put_bytes(out, cl_cose_prot_es384, sizeof(cl_cose_prot_es384)));
    CL_GUARD(cl_cbor_put_map(out, 0));
    CL_GUARD(cl_cbor_put_bytes(out, payload, n));
    CL_GUARD(cl_cbor_put_bytes(out, sig.data, sig.len));
out:
    cl_buf_free(&tbs);
    cl_buf_free(&sig);
    return rc;
}
