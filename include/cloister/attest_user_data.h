/* Cloister's user_data in attestation documents (docs/protocol.md section 2):
 * what the enclave binds into every document it has the NSM sign, written by
 * the enclave and read by clients with one encoder and one strict parser. */
#ifndef CLOISTER_ATTEST_USER_DATA_H
#define CLOISTER_ATTEST_USER_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/err.h"

#define CL_ATTEST_UD_VERSION 3
#define CL_ATTEST_UD_MAX_AUDIT_KEY 256 /* P-384 SPKI DER is 120 bytes */
#define CL_ATTEST_UD_MAX_KMS_TEXT 256  /* key ARN, endpoint */

struct cl_attest_user_data {
    uint8_t audit_key[CL_ATTEST_UD_MAX_AUDIT_KEY]; /* SubjectPublicKeyInfo DER */
    size_t audit_key_len;
    uint8_t model_sha256[32];  /* computed by the enclave over the plaintext it loaded */
    uint8_t config_sha256[32]; /* SHA-256 of the public boot configuration text */
    /* The key service that released the model key, as the enclave used it. */
    char kms_key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1];  /* KeyId the key service answered with */
    char kms_endpoint[CL_ATTEST_UD_MAX_KMS_TEXT + 1]; /* URL the enclave connected to */
    bool has_kms_ca;
    uint8_t kms_ca_sha256[32]; /* SHA-256 of the extra CA's PEM text the host supplied */
    bool has_mmproj;
    uint8_t mmproj_sha256[32]; /* vision projector, computed like model_sha256 (when one is loaded) */
};

/* Canonical CBOR: {"v": 3, "kms": {"ca": bstr(0|32), "key": tstr, "endpoint": tstr},
 * "audit_key": bstr, "model_sha256": bstr(32), "config_sha256": bstr(32),
 * "mmproj_sha256": bstr(0|32)}. */
CL_MUST_CHECK cl_err cl_attest_user_data_encode(const struct cl_attest_user_data *u, struct cl_buf *out);
/* Requires exactly those keys, v = 3, the sizes above, printable text, and
 * the canonical encoding. CL_E_ATTEST_USER_DATA_MALFORMED naming the field. */
CL_MUST_CHECK cl_err cl_attest_user_data_parse(const uint8_t *p, size_t n, struct cl_attest_user_data *out);

#endif
