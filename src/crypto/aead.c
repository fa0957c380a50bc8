#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>

#include "cloister/crypto.h"
#include "cloister/secmem.h"

struct cl_aead {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    enum cl_aead_alg alg;
};

size_t cl_aead_key_len(enum cl_aead_alg a)
{
    switch (a) {
    case CL_AEAD_AES128GCM: return 16;
    case CL_AEAD_AES256GCM:
    case CL_AEAD_CHACHA20POLY1305: return 32;
    default: return 0;
    }
}

static const EVP_CIPHER *cl_aead_cipher(enum cl_aead_alg a)
{
    switch (a) {
    case CL_AEAD_AES128GCM: return EVP_aes_128_gcm();
    case CL_AEAD_AES256GCM: return EVP_aes_256_gcm();
    case CL_AEAD_CHACHA20POLY1305: return EVP_chacha20_poly1305();
    default: return NULL;
    }
}

void cl_aead_free(cl_aead *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->enc); /* also cleanses the key schedule */
    EVP_CIPHER_CTX_free(c->dec);
    free(c);
}

cl_err cl_aead_new(enum cl_aead_alg a, const uint8_t *key, size_t keylen, cl_aead **out)
{
    const EVP_CIPHER *ci = cl_aead_cipher(a);
    if (!ci)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "unknown AEAD %d", (int)a);
    if (keylen != cl_aead_key_len(a))
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY_SIZE, "AEAD key of %zu bytes, expected %zu", keylen, cl_aead_key_len(a));
    cl_aead *c = calloc(1, sizeof(*c));
    if (!c)
        return CL_E_CORE_NOMEM;
    c->alg = a;
    c->enc = EVP_CIPHER_CTX_new();
    c->dec = EVP_CIPHER_CTX_new();
    if (!c->enc || !c->dec || EVP_EncryptInit_ex(c->enc, ci, NULL, key, NULL) != 1 ||
        EVP_DecryptInit_ex(c->dec, ci, NULL, key, NULL) != 1) {
        cl_aead_free(c);
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD init");
    }
    *out = c;
    return CL_OK;
}

/* EVP takes int lengths; process long inputs in pieces. */
#define CL_AEAD_STEP ((size_t)1 << 30)

cl_err cl_aead_seal(cl_aead *c, const uint8_t nonce[CL_GCM_NONCE_LEN], const void *aad, size_t aadlen,
                    const uint8_t *pt, size_t n, uint8_t *ct, uint8_t tag[CL_AEAD_TAG_LEN])
{
    int len;
    if (aadlen > INT_MAX)
        return CL_E_CORE_LIMIT;
    if (EVP_EncryptInit_ex(c->enc, NULL, NULL, NULL, nonce) != 1 ||
        (aadlen && EVP_EncryptUpdate(c->enc, NULL, &len, aad, (int)aadlen) != 1))
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD seal init");
    for (size_t off = 0; off < n; off += CL_AEAD_STEP) {
        size_t step = n - off < CL_AEAD_STEP ? n - off : CL_AEAD_STEP;
        if (EVP_EncryptUpdate(c->enc, ct + off, &len, pt + off, (int)step) != 1)
            return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD seal");
    }
    if (EVP_EncryptFinal_ex(c->enc, ct + n, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_AEAD_GET_TAG, CL_AEAD_TAG_LEN, tag) != 1)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD seal final");
    return CL_OK;
}

cl_err cl_aead_open(cl_aead *c, const uint8_t nonce[CL_GCM_NONCE_LEN], const void *aad, size_t aadlen,
                    const uint8_t *ct, size_t n, const uint8_t tag[CL_AEAD_TAG_LEN], uint8_t *pt)
{
    int len;
    if (aadlen > INT_MAX)
        return CL_E_CORE_LIMIT;
    if (EVP_DecryptInit_ex(c->dec, NULL, NULL, NULL, nonce) != 1 ||
        EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_AEAD_SET_TAG, CL_AEAD_TAG_LEN, (void *)tag) != 1 ||
        (aadlen && EVP_DecryptUpdate(c->dec, NULL, &len, aad, (int)aadlen) != 1))
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD open init");
    for (size_t off = 0; off < n; off += CL_AEAD_STEP) {
        size_t step = n - off < CL_AEAD_STEP ? n - off : CL_AEAD_STEP;
        if (EVP_DecryptUpdate(c->dec, pt + off, &len, ct + off, (int)step) != 1) {
            cl_wipe(pt, n);
            return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "AEAD open");
        }
    }
    if (EVP_DecryptFinal_ex(c->dec, pt + n, &len) != 1) {
        cl_wipe(pt, n);
        ERR_clear_error();
        return CL_E_CRYPTO_AUTH;
    }
    return CL_OK;
}
