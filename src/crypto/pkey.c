#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/crypto.h"

struct cl_pkey {
    EVP_PKEY *k;
};

cl_err cl_pkey_wrap(struct evp_pkey_st *evp, cl_pkey **out)
{
    cl_pkey *k = calloc(1, sizeof(*k));
    if (!k)
        return CL_E_CORE_NOMEM;
    if (EVP_PKEY_up_ref(evp) != 1) {
        free(k);
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "EVP_PKEY_up_ref");
    }
    k->k = evp;
    *out = k;
    return CL_OK;
}

struct evp_pkey_st *cl_pkey_evp(const cl_pkey *k) { return k->k; }

void cl_pkey_free(cl_pkey *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->k);
    free(k);
}

static cl_err cl_pkey_take(EVP_PKEY *evp, cl_pkey **out)
{
    cl_err rc = cl_pkey_wrap(evp, out);
    EVP_PKEY_free(evp); /* the handle holds its own reference */
    return rc;
}

cl_err cl_pkey_generate(enum cl_pkey_type t, cl_pkey **out)
{
    EVP_PKEY *evp = NULL;
    switch (t) {
    case CL_PKEY_P384: evp = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"); break;
    case CL_PKEY_RSA: evp = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048); break;
    case CL_PKEY_X25519: evp = EVP_PKEY_Q_keygen(NULL, NULL, "X25519"); break;
    default: return cl_err_fail(CL_E_CORE_INVALID_ARG, "cannot generate key type %d", (int)t);
    }
    if (!evp)
        return cl_ossl_fail(CL_E_CRYPTO_INTERNAL, "key generation");
    return cl_pkey_take(evp, out);
}

static EVP_PKEY *cl_pkey_decode(const void *p, size_t n, int selection)
{
    EVP_PKEY *evp = NULL;
    const unsigned char *q = p;
    size_t left = n;
    OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&evp, NULL, NULL, NULL, selection, NULL, NULL);
    if (!d)
        return NULL;
    if (OSSL_DECODER_from_data(d, &q, &left) != 1 || left != 0) {
        EVP_PKEY_free(evp);
        evp = NULL;
    }
    OSSL_DECODER_CTX_free(d);
    return evp;
}

cl_err cl_pkey_parse(const void *p, size_t n, cl_pkey **out)
{
    if (!p || !n)
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "empty key");
    /* PEM decoders accept trailing whitespace; strip it for the left==0 check. */
    const char *s = p;
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        n--;
    EVP_PKEY *evp = cl_pkey_decode(p, n, EVP_PKEY_KEYPAIR);
    if (!evp)
        evp = cl_pkey_decode(p, n, EVP_PKEY_PUBLIC_KEY);
    if (!evp) {
        ERR_clear_error();
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "not a PEM or DER private or public key");
    }
    return cl_pkey_take(evp, out);
}

enum cl_pkey_type cl_pkey_type(const cl_pkey *k)
{
    if (EVP_PKEY_is_a(k->k, "X25519"))
        return CL_PKEY_X25519;
    if (EVP_PKEY_is_a(k->k, "RSA"))
        return CL_PKEY_RSA;
    if (EVP_PKEY_is_a(k->k, "EC")) {
        char group[32] = "";
        size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(k->k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) == 1 &&
            (!strcmp(group, "secp384r1") || !strcmp(group, "P-384")))
            return CL_PKEY_P384;
    }
    return CL_PKEY_OTHER;
}

int cl_pkey_is_private(const cl_pkey *k)
{
    BIGNUM *bn = NULL;
    /* RSA names its private exponent "d"; EC and X25519 use "priv". */
    const char *name = EVP_PKEY_is_a(k->k, "RSA") ? OSSL_PKEY_PARAM_RSA_D : OSSL_PKEY_PARAM_PRIV_KEY;
    if (EVP_PKEY_get_bn_param(k->k, name, &bn) == 1) {
        BN_clear_free(bn);
        return 1;
    }
    uint8_t raw[64];
    size_t len = sizeof(raw);
    int ok = EVP_PKEY_get_octet_string_param(k->k, OSSL_PKEY_PARAM_PRIV_KEY, raw, sizeof(raw), &len) == 1;
    OPENSSL_cleanse(raw, sizeof(raw));
    ERR_clear_error();
    return ok;
}

cl_err cl_pkey_public_der(const cl_pkey *k, struct cl_buf *out)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k->k, &der);
    if (n <= 0)
        return cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "encode public key");
    cl_err rc = cl_buf_append(out, der, (size_t)n);
    OPENSSL_free(der);
    return rc;
}

cl_err cl_pkey_private_pem(const cl_pkey *k, struct cl_buf *out)
{
    BIO *b = BIO_new(BIO_s_secmem());
    if (!b)
        return cl_ossl_fail(CL_E_CORE_NOMEM, "BIO");
    cl_err rc = CL_OK;
    char *data = NULL;
    if (PEM_write_bio_PrivateKey(b, k->k, NULL, NULL, 0, NULL, NULL) != 1) {
        rc = cl_ossl_fail(CL_E_CRYPTO_BAD_KEY, "encode private key");
    } else {
        long n = BIO_get_mem_data(b, &data);
        rc = cl_buf_append(out, data, (size_t)n);
    }
    BIO_free(b); /* secmem BIO cleanses on free */
    return rc;
}
