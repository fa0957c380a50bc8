#include <stdlib.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "cloister/crypto.h"
#include "cloister/secmem.h"

struct cl_hash {
    EVP_MD_CTX *ctx;
    const EVP_MD *md;
};

static const EVP_MD *cl_hash_md(enum cl_hash_alg a)
{
    switch (a) {
    case CL_HASH_SHA256: return EVP_sha256();
    case CL_HASH_SHA384: return EVP_sha384();
    case CL_HASH_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

static const char *cl_hash_name(enum cl_hash_alg a)
{
    switch (a) {
    case CL_HASH_SHA256: return "SHA256";
    case CL_HASH_SHA384: return "SHA384";
    case CL_HASH_SHA512: return "SHA512";
    default: return NULL;
    }
}

size_t cl_hash_len(enum cl_hash_alg a)
{
    switch (a) {
    case CL_HASH_SHA256: return 32;
    case CL_HASH_SHA384: return 48;
    case CL_HASH_SHA512: return 64;
    default: return 0;
    }
}

cl_err cl_hash_new(enum cl_hash_alg a, cl_hash **out)
{
    const EVP_MD *md = cl_hash_md(a);
    if (!md)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "unknown hash algorithm %d", (int)a);
    cl_hash *h = calloc(1, sizeof(*h));
    if (!h)
        return CL_E_CORE_NOMEM;
    h->md = md;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, md, NULL) != 1) {
        cl_hash_free(h);
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_DigestInit");
    }
    *out = h;
    return CL_OK;
}

cl_err cl_hash_update(cl_hash *h, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(h->ctx, p, n) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_DigestUpdate");
    return CL_OK;
}

cl_err cl_hash_final(cl_hash *h, uint8_t *out)
{
    if (EVP_DigestFinal_ex(h->ctx, out, NULL) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_DigestFinal");
    return CL_OK;
}

cl_err cl_hash_reset(cl_hash *h)
{
    if (EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_DigestInit");
    return CL_OK;
}

void cl_hash_free(cl_hash *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

cl_err cl_hash_oneshot(enum cl_hash_alg a, const void *p, size_t n, uint8_t *out)
{
    const EVP_MD *md = cl_hash_md(a);
    if (!md)
        return CL_E_CORE_INVALID_ARG;
    if (EVP_Digest(p, n, out, NULL, md, NULL) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_Digest");
    return CL_OK;
}

cl_err cl_sha256(const void *p, size_t n, uint8_t out[CL_SHA256_LEN]) { return cl_hash_oneshot(CL_HASH_SHA256, p, n, out); }
cl_err cl_sha384(const void *p, size_t n, uint8_t out[CL_SHA384_LEN]) { return cl_hash_oneshot(CL_HASH_SHA384, p, n, out); }

cl_err cl_hmac(enum cl_hash_alg a, const void *key, size_t keylen, const void *p, size_t n, uint8_t *out)
{
    const char *name = cl_hash_name(a);
    size_t outlen = 0;
    if (!name)
        return CL_E_CORE_INVALID_ARG;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, name, NULL, key, keylen, p, n, out, cl_hash_len(a), &outlen))
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "HMAC");
    return CL_OK;
}

/* mode is one of EVP_KDF_HKDF_MODE_*; salt/ikm/info are optional per mode. */
static cl_err cl_hkdf_run(int mode, enum cl_hash_alg a, const void *salt, size_t saltlen, const void *key,
                          size_t keylen, const void *info, size_t infolen, uint8_t *out, size_t outlen)
{
    const char *name = cl_hash_name(a);
    if (!name)
        return CL_E_CORE_INVALID_ARG;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (!ctx)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "HKDF fetch");
    /* OpenSSL rejects an empty key; HKDF-Extract with empty IKM is legal
     * (RFC 5869), so pass one zero byte's worth of pointer with length 0 via
     * a dummy when needed. */
    static const uint8_t empty[1];
    OSSL_PARAM params[6], *p = params;
    *p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)name, 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(keylen ? key : empty), keylen);
    if (salt)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(saltlen ? salt : empty), saltlen);
    if (info)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)(infolen ? info : empty), infolen);
    *p = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(ctx, out, outlen, params);
    EVP_KDF_CTX_free(ctx);
    if (ok != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "HKDF derive");
    return CL_OK;
}

cl_err cl_hkdf_extract(enum cl_hash_alg a, const void *salt, size_t saltlen, const void *ikm, size_t ikmlen,
                       uint8_t *prk)
{
    /* RFC 5869: an absent salt is HashLen zero bytes. */
    static const uint8_t zeros[CL_HASH_MAX_LEN];
    if (!salt || !saltlen) {
        salt = zeros;
        saltlen = cl_hash_len(a);
    }
    return cl_hkdf_run(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, a, salt, saltlen, ikm, ikmlen, NULL, 0, prk, cl_hash_len(a));
}

cl_err cl_hkdf_expand(enum cl_hash_alg a, const void *prk, size_t prklen, const void *info, size_t infolen,
                      uint8_t *out, size_t outlen)
{
    return cl_hkdf_run(EVP_KDF_HKDF_MODE_EXPAND_ONLY, a, NULL, 0, prk, prklen, info ? info : "", infolen, out,
                       outlen);
}

cl_err cl_hkdf(enum cl_hash_alg a, const void *salt, size_t saltlen, const void *ikm, size_t ikmlen,
               const void *info, size_t infolen, uint8_t *out, size_t outlen)
{
    uint8_t prk[CL_HASH_MAX_LEN];
    cl_err rc = cl_hkdf_extract(a, salt, saltlen, ikm, ikmlen, prk);
    if (rc == CL_OK)
        rc = cl_hkdf_expand(a, prk, cl_hash_len(a), info, infolen, out, outlen);
    cl_wipe(prk, sizeof(prk));
    return rc;
}
