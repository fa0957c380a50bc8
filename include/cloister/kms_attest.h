/* Adapter between cloister-kms's Recipient interface (cl_kms_attest_fn)
 * and the Nitro attestation verifier (cloister/attest.h). Lib cl_kms_attest. */
#ifndef CLOISTER_KMS_ATTEST_H
#define CLOISTER_KMS_ATTEST_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/kms.h"

#define CL_KMS_ATTEST_MAX_ROOTS 8

struct cl_kms_attest_roots;
/* Trusted roots from PEM or DER files (the AWS Nitro root, a cloister-sim
 * root, ...). max_age_ms: freshness window for the document timestamp. */
CL_MUST_CHECK cl_err cl_kms_attest_roots_load(const char *const *paths, size_t n, uint64_t max_age_ms,
                                              struct cl_kms_attest_roots **out);
/* Same from DER bytes in memory. */
CL_MUST_CHECK cl_err cl_kms_attest_roots_from_der(const uint8_t *const *der, const size_t *len, size_t n,
                                                  uint64_t max_age_ms, struct cl_kms_attest_roots **out);
void cl_kms_attest_roots_free(struct cl_kms_attest_roots *r);
/* Root i's SHA-256 over its DER certificate, lowercase hex (the value the
 * condition key cloister:attestation-root-sha256 takes). */
CL_MUST_CHECK cl_err cl_kms_attest_root_fingerprint(const struct cl_kms_attest_roots *r, size_t i,
                                                    char hex[2 * 32 + 1]);
/* cl_kms_attest_fn: arg is a struct cl_kms_attest_roots. Accepts a
 * document that verifies (chain to one pinned root, signature, validity at
 * now_ms, freshness) with any PCRs; debug documents are returned flagged. */
CL_MUST_CHECK cl_err cl_kms_attest_verify(void *arg, const uint8_t *doc, size_t n, int64_t now_ms,
                                          struct cl_kms_attestation *out);

#endif
