/* HPKE (RFC 9180) on OpenSSL 3.0 primitives: DHKEM(X25519, HKDF-SHA256);
 * HKDF-SHA256/384/512; AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 and
 * export-only; modes base, psk, auth and auth_psk; secret export. */
#ifndef CLOISTER_HPKE_H
#define CLOISTER_HPKE_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/crypto.h"

/* Registry values from RFC 9180 (wire values, hence no NONE entry). */
#define CL_HPKE_KEM_X25519_SHA256 0x0020
#define CL_HPKE_KDF_SHA256 0x0001
#define CL_HPKE_KDF_SHA384 0x0002
#define CL_HPKE_KDF_SHA512 0x0003
#define CL_HPKE_AEAD_AES128GCM 0x0001
#define CL_HPKE_AEAD_AES256GCM 0x0002
#define CL_HPKE_AEAD_CHACHA20POLY1305 0x0003
#define CL_HPKE_AEAD_EXPORT_ONLY 0xFFFF
#define CL_HPKE_MODE_BASE 0
#define CL_HPKE_MODE_PSK 1
#define CL_HPKE_MODE_AUTH 2
#define CL_HPKE_MODE_AUTH_PSK 3
#define CL_HPKE_ENC_LEN 32
#define CL_HPKE_MAX_INFO 65535

struct cl_hpke_suite {
    uint16_t kem;
    uint16_t kdf;
    uint16_t aead;
};

/* Optional inputs; zero-initialise and fill what the mode needs. */
struct cl_hpke_opts {
    const uint8_t *psk;       /* psk modes */
    size_t psk_len;
    const uint8_t *psk_id;
    size_t psk_id_len;
    const cl_pkey *sk_sender; /* auth modes, sender side */
    const uint8_t *pk_sender; /* auth modes, recipient side: 32-byte X25519 */
    const uint8_t *ikm_e;     /* deterministic ephemeral key (test vectors only) */
    size_t ikm_e_len;
};

typedef struct cl_hpke_ctx cl_hpke_ctx;

/* Sizes for a suite; fails with CL_E_CRYPTO_BAD_KEY for unknown ids. */
CL_MUST_CHECK cl_err cl_hpke_suite_check(const struct cl_hpke_suite *s);
size_t cl_hpke_aead_key_len(uint16_t aead);
size_t cl_hpke_aead_nonce_len(uint16_t aead);

/* DeriveKeyPair (RFC 9180 7.1.3) for X25519. */
CL_MUST_CHECK cl_err cl_hpke_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len, cl_pkey **out);

/* Sender: writes enc (CL_HPKE_ENC_LEN bytes). */
CL_MUST_CHECK cl_err cl_hpke_setup_sender(const struct cl_hpke_suite *s, int mode, const uint8_t pk_r[32],
                                          const uint8_t *info, size_t info_len, const struct cl_hpke_opts *o,
                                          uint8_t enc[CL_HPKE_ENC_LEN], cl_hpke_ctx **out);
CL_MUST_CHECK cl_err cl_hpke_setup_recipient(const struct cl_hpke_suite *s, int mode, const uint8_t enc[CL_HPKE_ENC_LEN],
                                             const cl_pkey *sk_r, const uint8_t *info, size_t info_len,
                                             const struct cl_hpke_opts *o, cl_hpke_ctx **out);
/* Appends ciphertext || tag to ct. Sequence numbers advance per call. */
CL_MUST_CHECK cl_err cl_hpke_seal(cl_hpke_ctx *c, const void *aad, size_t aad_len, const void *pt, size_t n,
                                  struct cl_buf *ct);
/* Appends the plaintext to pt; CL_E_CRYPTO_AUTH on a bad ciphertext. */
CL_MUST_CHECK cl_err cl_hpke_open(cl_hpke_ctx *c, const void *aad, size_t aad_len, const void *ct, size_t n,
                                  struct cl_buf *pt);
CL_MUST_CHECK cl_err cl_hpke_export(const cl_hpke_ctx *c, const void *exp_ctx, size_t exp_len, uint8_t *out,
                                    size_t out_len);
void cl_hpke_free(cl_hpke_ctx *c);

/* Test hook: the key schedule outputs, for comparing with published vectors. */
struct cl_hpke_debug {
    uint8_t shared_secret[64];
    uint8_t key[32];
    uint8_t base_nonce[12];
    uint8_t exporter_secret[64];
};
void cl_hpke_debug_get(const cl_hpke_ctx *c, struct cl_hpke_debug *d);

#endif
