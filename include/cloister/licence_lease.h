/* Lease grants and usage reports (docs/formats/licence.md): what the key
 * service and the enclave exchange at each licence renewal.
 *
 * A grant is signed by the key's licence key and names the enclave's fresh
 * nonce, the lease length, the licence set it comes with and the usage
 * report it accepted: a host can neither replay an old grant to stretch a
 * lease nor strip the report. A usage report is signed by the enclave's
 * attested audit key, numbered and chained to its predecessor, so the key
 * service notices a dropped, replayed, reordered or altered one. */
#ifndef CLOISTER_LICENCE_LEASE_H
#define CLOISTER_LICENCE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/crypto.h"
#include "cloister/err.h"
#include "cloister/licence.h"

#define CL_LICENCE_NONCE_LEN 32
#define CL_LICENCE_LEASE_DEFAULT_S 900 /* 15 minutes */
#define CL_LICENCE_LEASE_MAX_S 86400
#define CL_LICENCE_GRANT_MAX 2048
#define CL_LICENCE_USAGE_ROWS 256       /* rows (licence, period) in one report */
#define CL_LICENCE_USAGE_MAX (64 << 10) /* bytes of one signed report */

struct cl_licence_grant {
    uint8_t nonce[CL_LICENCE_NONCE_LEN];
    uint64_t lease_s;                  /* 1..CL_LICENCE_LEASE_MAX_S */
    uint64_t time;                     /* the key service's clock, Unix seconds */
    uint8_t set_sha256[CL_SHA256_LEN]; /* cl_licence_set_digest of the records sent with it */
    bool has_report;
    uint8_t report_sha256[CL_SHA256_LEN]; /* SHA-256 of the usage report it accepted */
};

/* SHA-256 over the SHA-256 of each record, in order. */
CL_MUST_CHECK cl_err cl_licence_set_digest(const uint8_t *const *recs, const size_t *lens, size_t n,
                                           uint8_t out[CL_SHA256_LEN]);
CL_MUST_CHECK cl_err cl_licence_grant_sign(const struct cl_licence_grant *g, const cl_pkey *key, struct cl_buf *out);
/* CL_E_PROTO_LICENCE_GRANT when the signature or the shape is wrong. */
CL_MUST_CHECK cl_err cl_licence_grant_verify(const uint8_t *p, size_t n, const cl_pkey *key,
                                             struct cl_licence_grant *out);

struct cl_licence_usage_row {
    char id[CL_LICENCE_ID_MAX + 1];
    uint64_t period_start; /* Unix seconds: not_before + k * period_s */
    uint64_t requests, prompt_tokens, completion_tokens; /* since the enclave booted, in that period */
};
struct cl_licence_usage {
    uint64_t seq;                       /* 1, 2, ... per enclave (audit key) */
    uint8_t prev_sha256[CL_SHA256_LEN]; /* SHA-256 of report seq-1; zeros for seq 1 */
    uint64_t time;
    uint8_t model_sha256[CL_SHA256_LEN];
    size_t n;
    struct cl_licence_usage_row rows[CL_LICENCE_USAGE_ROWS];
};
CL_MUST_CHECK cl_err cl_licence_usage_sign(const struct cl_licence_usage *u, const cl_pkey *audit,
                                           struct cl_buf *out);
/* Verifies with the audit key, then parses (strict: exact members, bounds). */
CL_MUST_CHECK cl_err cl_licence_usage_verify(const uint8_t *p, size_t n, const cl_pkey *audit,
                                             struct cl_licence_usage *out);

/* Snapshot of the table's metering: per licence and period, cumulative
 * since the table was made (at most CL_LICENCE_USAGE_ROWS rows). */
void cl_licence_table_meter(cl_licence_table *t, struct cl_licence_usage *u);
/* As cl_licence_table_charge, with the split that metering reports. */
void cl_licence_table_charge_split(cl_licence_table *t, size_t slot, uint64_t prompt_tokens,
                                   uint64_t completion_tokens);

#endif
