/* COSE_Sign1 (RFC 9052) with ECDSA, tagged (18) or untagged.
 *
 * Two profiles: NITRO, the only one attestation uses, requires the protected
 * header to be exactly the bytes of {1: -35} (ES384) and an unprotected map;
 * GENERIC also takes ES256, reads `alg` from the protected header or, when
 * the protected header is empty, from the unprotected one (the COSE working
 * group's test vectors use both). Signatures are raw r||s. Detached payloads
 * are not supported. */
#ifndef CLOISTER_COSE_H
#define CLOISTER_COSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/cbor.h"
#include "cloister/crypto.h"

#define CL_COSE_TAG_SIGN1 18
#define CL_COSE_ALG_ES256 (-7)
#define CL_COSE_ALG_ES384 (-35)

enum cl_cose_profile { CL_COSE_PROFILE_NONE = 0, CL_COSE_PROFILE_NITRO, CL_COSE_PROFILE_GENERIC, CL_COSE_PROFILE_COUNT };

struct cl_cose_sign1 {
    cl_cbor_doc *doc;
    bool tagged;
    int64_t alg;
    const uint8_t *protected_raw; /* contents of the protected bstr */
    size_t protected_len;
    const struct cl_cbor_item *unprotected;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *sig;
    size_t sig_len;
};

/* Parses (does not verify). The structure points into p, which must outlive it. */
CL_MUST_CHECK cl_err cl_cose_sign1_parse(const uint8_t *p, size_t n, enum cl_cose_profile prof,
                                         const struct cl_cbor_limits *lim, struct cl_cose_sign1 *out);
void cl_cose_sign1_free(struct cl_cose_sign1 *s);
/* CL_OK only when the signature verifies with key, whose curve must match alg. */
CL_MUST_CHECK cl_err cl_cose_sign1_verify(const struct cl_cose_sign1 *s, const cl_pkey *key, const uint8_t *aad,
                                          size_t aadlen);
/* Sig_structure ["Signature1", protected, external_aad, payload]. */
CL_MUST_CHECK cl_err cl_cose_sig_structure(const uint8_t *prot, size_t protlen, const uint8_t *aad, size_t aadlen,
                                           const uint8_t *payload, size_t n, struct cl_buf *out);
/* ES384 with a P-384 private key: protected {1: -35}, unprotected {}. */
CL_MUST_CHECK cl_err cl_cose_sign1_sign_es384(const cl_pkey *key, const uint8_t *payload, size_t n, bool tagged,
                                              struct cl_buf *out);

#endif
