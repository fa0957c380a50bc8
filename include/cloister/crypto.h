/* Thin wrappers over OpenSSL 3. OpenSSL's return conventions (1 = success,
 * <= 0 = failure, error queue) are normalised here into cl_err codes; the
 * error queue is drained so failures never leak into later calls. */
#ifndef CLOISTER_CRYPTO_H
#define CLOISTER_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_SHA256_LEN 32
#define CL_SHA384_LEN 48
#define CL_HASH_MAX_LEN 64
#define CL_GCM_NONCE_LEN 12
#define CL_AEAD_TAG_LEN 16
#define CL_X25519_LEN 32
#define CL_P384_RAW_SIG_LEN 96

/* ---- randomness ---- */
CL_MUST_CHECK cl_err cl_random_bytes(void *out, size_t n);

/* ---- hashes, HMAC, HKDF ---- */
enum cl_hash_alg { CL_HASH_NONE = 0, CL_HASH_SHA256, CL_HASH_SHA384, CL_HASH_SHA512, CL_HASH_COUNT };
size_t cl_hash_len(enum cl_hash_alg a);

typedef struct cl_hash cl_hash; /* incremental hash, opaque */
CL_MUST_CHECK cl_err cl_hash_new(enum cl_hash_alg a, cl_hash **out);
CL_MUST_CHECK cl_err cl_hash_update(cl_hash *h, const void *p, size_t n);
/* Writes cl_hash_len() bytes; the context can then be reused after cl_hash_reset. */
CL_MUST_CHECK cl_err cl_hash_final(cl_hash *h, uint8_t *out);
CL_MUST_CHECK cl_err cl_hash_reset(cl_hash *h);
void cl_hash_free(cl_hash *h);
CL_MUST_CHECK cl_err cl_hash_oneshot(enum cl_hash_alg a, const void *p, size_t n, uint8_t *out);
CL_MUST_CHECK cl_err cl_sha256(const void *p, size_t n, uint8_t out[CL_SHA256_LEN]);
CL_MUST_CHECK cl_err cl_sha384(const void *p, size_t n, uint8_t out[CL_SHA384_LEN]);

CL_MUST_CHECK cl_err cl_hmac(enum cl_hash_alg a, const void *key, size_t keylen, const void *p, size_t n, uint8_t *out);
CL_MUST_CHECK cl_err cl_hkdf_extract(enum cl_hash_alg a, const void *salt, size_t saltlen, const void *ikm,
                                     size_t ikmlen, uint8_t *prk);
CL_MUST_CHECK cl_err cl_hkdf_expand(enum cl_hash_alg a, const void *prk, size_t prklen, const void *info,
                                    size_t infolen, uint8_t *out, size_t outlen);
CL_MUST_CHECK cl_err cl_hkdf(enum cl_hash_alg a, const void *salt, size_t saltlen, const void *ikm, size_t ikmlen,
                             const void *info, size_t infolen, uint8_t *out, size_t outlen);

/* ---- AEAD ---- */
enum cl_aead_alg { CL_AEAD_NONE = 0, CL_AEAD_AES128GCM, CL_AEAD_AES256GCM, CL_AEAD_CHACHA20POLY1305, CL_AEAD_COUNT };
size_t cl_aead_key_len(enum cl_aead_alg a);

/* A keyed AEAD context, reused across messages; one per thread. */
typedef struct cl_aead cl_aead;
CL_MUST_CHECK cl_err cl_aead_new(enum cl_aead_alg a, const uint8_t *key, size_t keylen, cl_aead **out);
void cl_aead_free(cl_aead *c);
/* Nonces are 12 bytes, tags 16. ct may equal pt (in place). */
CL_MUST_CHECK cl_err cl_aead_seal(cl_aead *c, const uint8_t nonce[CL_GCM_NONCE_LEN], const void *aad, size_t aadlen,
                                  const uint8_t *pt, size_t n, uint8_t *ct, uint8_t tag[CL_AEAD_TAG_LEN]);
/* On failure (CL_E_CRYPTO_AUTH) the output is wiped. pt may equal ct. */
CL_MUST_CHECK cl_err cl_aead_open(cl_aead *c, const uint8_t nonce[CL_GCM_NONCE_LEN], const void *aad, size_t aadlen,
                                  const uint8_t *ct, size_t n, const uint8_t tag[CL_AEAD_TAG_LEN], uint8_t *pt);

/* ---- public keys: P-384 ECDSA, RSA-2048 OAEP, X25519 ---- */
enum cl_pkey_type { CL_PKEY_NONE = 0, CL_PKEY_P384, CL_PKEY_RSA, CL_PKEY_X25519, CL_PKEY_OTHER, CL_PKEY_COUNT };

typedef struct cl_pkey cl_pkey; /* an EVP_PKEY, public or private */
CL_MUST_CHECK cl_err cl_pkey_generate(enum cl_pkey_type t, cl_pkey **out);
/* PEM or DER; private key (PKCS#8 or traditional) or SubjectPublicKeyInfo. */
CL_MUST_CHECK cl_err cl_pkey_parse(const void *p, size_t n, cl_pkey **out);
void cl_pkey_free(cl_pkey *k);
enum cl_pkey_type cl_pkey_type(const cl_pkey *k);
int cl_pkey_is_private(const cl_pkey *k);
/* SubjectPublicKeyInfo DER. */
CL_MUST_CHECK cl_err cl_pkey_public_der(const cl_pkey *k, struct cl_buf *out);
/* PKCS#8 PEM of the private key; give out a CL_BUF_SECURE buffer. */
CL_MUST_CHECK cl_err cl_pkey_private_pem(const cl_pkey *k, struct cl_buf *out);
/* A handle owning a new reference to an existing EVP_PKEY (for X.509 code). */
struct evp_pkey_st;
CL_MUST_CHECK cl_err cl_pkey_wrap(struct evp_pkey_st *evp, cl_pkey **out);
struct evp_pkey_st *cl_pkey_evp(const cl_pkey *k);

enum cl_sig_format { CL_SIG_NONE = 0, CL_SIG_RAW, CL_SIG_DER, CL_SIG_COUNT };
/* ECDSA over hash(msg); RAW is r||s, each left-padded to the curve size (COSE). */
CL_MUST_CHECK cl_err cl_ecdsa_sign(const cl_pkey *k, enum cl_hash_alg h, const void *msg, size_t n,
                                   enum cl_sig_format f, struct cl_buf *sig);
/* CL_OK only for a valid signature; CL_E_CRYPTO_BAD_SIGNATURE otherwise. */
CL_MUST_CHECK cl_err cl_ecdsa_verify(const cl_pkey *k, enum cl_hash_alg h, const void *msg, size_t n,
                                     const void *sig, size_t siglen, enum cl_sig_format f);
CL_MUST_CHECK cl_err cl_ecdsa_raw_to_der(const uint8_t *raw, size_t rawlen, struct cl_buf *der);
CL_MUST_CHECK cl_err cl_ecdsa_der_to_raw(const uint8_t *der, size_t derlen, size_t coord_len, struct cl_buf *raw);

/* RSAES-OAEP with SHA-256 and MGF1-SHA-256. */
CL_MUST_CHECK cl_err cl_rsa_oaep_encrypt(const cl_pkey *k, const void *pt, size_t n, struct cl_buf *ct);
CL_MUST_CHECK cl_err cl_rsa_oaep_decrypt(const cl_pkey *k, const void *ct, size_t n, struct cl_buf *pt);

CL_MUST_CHECK cl_err cl_x25519_from_raw(const uint8_t *raw, int is_private, cl_pkey **out);
CL_MUST_CHECK cl_err cl_x25519_public_raw(const cl_pkey *k, uint8_t out[CL_X25519_LEN]);
CL_MUST_CHECK cl_err cl_x25519_private_raw(const cl_pkey *k, uint8_t out[CL_X25519_LEN]);
CL_MUST_CHECK cl_err cl_x25519_derive(const cl_pkey *priv, const uint8_t peer[CL_X25519_LEN], uint8_t out[CL_X25519_LEN]);

/* Drains OpenSSL's error queue into the error detail; returns code. */
cl_err cl_ossl_fail(cl_err code, const char *what);

#endif
