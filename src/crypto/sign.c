#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/crypto.h"

static const EVP_MD *cl_sig_md(enum cl_hash_alg h)
{
    switch (h) {
    case CL_HASH_SHA256: return EVP_sha256();
    case CL_HASH_SHA384: return EVP_sha384();
    case CL_HASH_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

static size_t cl_ec_coord_len(const cl_pkey *k)
{
    int bits = EVP_PKEY_get_bits(cl_pkey_evp(k));
    return bits > 0 ? ((size_t)bits + 7) / 8 : 0;
}

cl_err cl_ecdsa_raw_to_der(const uint8_t *raw, size_t rawlen, struct cl_buf *der)
{
    if (rawlen == 0 || rawlen % 2 || rawlen > 2 * 66)
        return cl_err_fail(CL_E_CRYPTO_BAD_SIGNATURE_ENCODING, "raw signature of %zu bytes", rawlen);
    cl_err rc = CL_OK;
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)(rawlen / 2), NULL), *sv = BN_bin2bn(raw + rawlen / 2, (int)(rawlen / 2), NULL);
    unsigned char *out = NULL;
    if (!s || !r || !sv || ECDSA_SIG_set0(s, r, sv) != 1) {
        BN_free(r);
        BN_free(sv);
        rc = cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "ECDSA_SIG");
        goto out;
    }
    int n = i2d_ECDSA_SIG(s, &out);
    if (n <= 0) {
        rc = cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "i2d_ECDSA_SIG");
        goto out;
    }
    rc = cl_buf_append(der, out, (size_t)n);
out:
    OPENSSL_free(out);
    ECDSA_SIG_free(s);
    return rc;
}

cl_err cl_ecdsa_der_to_raw(const uint8_t *der, size_t derlen, size_t coord_len, struct cl_buf *raw)
{
    cl_err rc = CL_OK;
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    uint8_t tmp[2 * 66];
    if (!s || p != der + derlen) {
        ERR_clear_error();
        CL_FAIL(CL_E_CRYPTO_BAD_SIGNATURE_ENCODING, "malformed DER ECDSA signature");
    }
    CL_ENSURE(coord_len && coord_len <= 66, CL_E_CORE_INVALID_ARG);
    const BIGNUM *r, *sv;
    ECDSA_SIG_get0(s, &r, &sv);
    if (BN_bn2binpad(r, tmp, (int)coord_len) < 0 || BN_bn2binpad(sv, tmp + coord_len, (int)coord_len) < 0)
        CL_FAIL(CL_E_CRYPTO_BAD_SIGNATURE_ENCODING, "signature value larger than the curve");
    rc = cl_buf_append(raw, tmp, 2 * coord_len);
out:
    ECDSA_SIG_free(s);
    return rc;
}

cl_err cl_ecdsa_sign(const cl_pkey *k, enum cl_hash_alg h, const void *msg, size_t n, enum cl_sig_format f,
                     struct cl_buf *sig)
{
    cl_err rc = CL_OK;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[160];
    size_t derlen = sizeof(der);
    const EVP_MD *md = cl_sig_md(h);
    CL_ENSURE(md && ctx, CL_E_CORE_INVALID_ARG);
    if (EVP_DigestSignInit(ctx, NULL, md, NULL, cl_pkey_evp(k)) != 1 ||
        EVP_DigestSign(ctx, der, &derlen, msg, n) != 1) {
        rc = cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "ECDSA sign");
        goto out;
    }
    if (f == CL_SIG_RAW)
        rc = cl_ecdsa_der_to_raw(der, derlen, cl_ec_coord_len(k), sig);
    else
        rc = cl_buf_append(sig, der, derlen);
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

cl_err cl_ecdsa_verify(const cl_pkey *k, enum cl_hash_alg h, const void *msg, size_t n, const void *sig,
                       size_t siglen, enum cl_sig_format f)
{
    cl_err rc = CL_OK;
    struct cl_buf der;
    cl_buf_init(&der, 256, CL_BUF_NONE);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const EVP_MD *md = cl_sig_md(h);
    CL_ENSURE(md && ctx, CL_E_CORE_INVALID_ARG);
    if (f == CL_SIG_RAW) {
        CL_ENSURE_D(siglen == 2 * cl_ec_coord_len(k), CL_E_CRYPTO_BAD_SIGNATURE_ENCODING,
                    "raw signature is %zu bytes, expected %zu", siglen, 2 * cl_ec_coord_len(k));
        CL_GUARD(cl_ecdsa_raw_to_der(sig, siglen, &der));
    } else {
        CL_GUARD(cl_buf_append(&der, sig, siglen));
    }
    if (EVP_DigestVerifyInit(ctx, NULL, md, NULL, cl_pkey_evp(k)) != 1) {
        rc = cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "ECDSA verify init");
        goto out;
    }
    if (EVP_DigestVerify(ctx, der.data, der.len, msg, n) != 1) {
        ERR_clear_error();
        rc = CL_E_CRYPTO_BAD_SIGNATURE;
    }
out:
    EVP_MD_CTX_free(ctx);
    cl_buf_free(&der);
    return rc;
}

static cl_err cl_rsa_oaep(const cl_pkey *k, int encrypt, const void *in, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, cl_pkey_evp(k), NULL);
    size_t outlen = 0;
    uint8_t *dst;
    CL_ENSURE(ctx, CL_E_CORE_NOMEM);
    CL_ENSURE_D(cl_pkey_type(k) == CL_PKEY_RSA, CL_E_CRYPTO_BAD_KEY, "not an RSA key");
    if ((encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1) {
        rc = cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "RSA-OAEP init");
        goto out;
    }
    if ((encrypt ? EVP_PKEY_encrypt(ctx, NULL, &outlen, in, n) : EVP_PKEY_decrypt(ctx, NULL, &outlen, in, n)) != 1) {
        rc = cl_ossl_fail(encrypt ? CL_E_CRYPTO_INTERNAL : CL_E_CRYPTO_DECRYPT, "RSA-OAEP size");
        goto out;
    }
    size_t start = out->len;
    CL_GUARD(cl_buf_extend(out, outlen, &dst));
    if ((encrypt ? EVP_PKEY_encrypt(ctx, dst, &outlen, in, n) : EVP_PKEY_decrypt(ctx, dst, &outlen, in, n)) != 1) {
        out->len = start;
        ERR_clear_error();
        rc = encrypt ? CL_E_CRYPTO_INTERNAL : CL_E_CRYPTO_DECRYPT;
        goto out;
    }
    out->len = start + outlen;
out:
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

cl_err cl_rsa_oaep_encrypt(const cl_pkey *k, const void *pt, size_t n, struct cl_buf *ct)
{
    return cl_rsa_oaep(k, 1, pt, n, ct);
}

cl_err cl_rsa_oaep_decrypt(const cl_pkey *k, const void *ct, size_t n, struct cl_buf *pt)
{
    return cl_rsa_oaep(k, 0, ct, n, pt);
}

cl_err cl_x25519_from_raw(const uint8_t *raw, int is_private, cl_pkey **out)
{
    EVP_PKEY *evp = is_private ? EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, raw, CL_X25519_LEN)
                               : EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, raw, CL_X25519_LEN);
    if (!evp)
        return cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "X25519 key");
    cl_err rc = cl_pkey_wrap(evp, out);
    EVP_PKEY_free(evp);
    return rc;
}

cl_err cl_x25519_public_raw(const cl_pkey *k, uint8_t out[CL_X25519_LEN])
{
    size_t len = CL_X25519_LEN;
    if (EVP_PKEY_get_raw_public_key(cl_pkey_evp(k), out, &len) != 1 || len != CL_X25519_LEN)
        return cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "X25519 public key");
    return CL_OK;
}

cl_err cl_x25519_private_raw(const cl_pkey *k, uint8_t out[CL_X25519_LEN])
{
    size_t len = CL_X25519_LEN;
    if (EVP_PKEY_get_raw_private_key(cl_pkey_evp(k), out, &len) != 1 || len != CL_X25519_LEN)
        return cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "X25519 private key");
    return CL_OK;
}

cl_err cl_x25519_derive(const cl_pkey *priv, const uint8_t peer[CL_X25519_LEN], uint8_t out[CL_X25519_LEN])
{
    cl_err rc = CL_OK;
    cl_pkey *pk = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = CL_X25519_LEN;
    CL_GUARD(cl_x25519_from_raw(peer, 0, &pk));
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, cl_pkey_evp(priv), NULL);
    /* OpenSSL rejects an all-zero shared secret (small-order peer), as RFC 9180 requires. */
    if (!ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, cl_pkey_evp(pk)) != 1 ||
        EVP_PKEY_derive(ctx, out, &len) != 1 || len != CL_X25519_LEN)
        rc = cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "X25519 derive");
out:
    EVP_PKEY_CTX_free(ctx);
    cl_pkey_free(pk);
    return rc;
}
