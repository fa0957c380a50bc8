/* Licences (docs/formats/licence.md): records signed by the model owner's
 * licence key (COSE_Sign1, ES384, over one compact JSON object), and the
 * enclave's licence table, which admits or refuses a consumer's request by the
 * SHA-256 of its credential and counts use per licence and period.
 *
 * The table fails closed: it admits nothing before the first update and
 * nothing once its lease (set by each successful update) has ended. */
#ifndef CLOISTER_LICENCE_H
#define CLOISTER_LICENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/crypto.h"
#include "cloister/err.h"

#define CL_LICENCE_CTX_KEY "cloister:licence-key-sha256" /* encryption-context entry pinning the key */
#define CL_LICENCE_ID_MAX 64                             /* [A-Za-z0-9._-]{1,64} */
#define CL_LICENCE_CONSUMER_MAX 128                      /* printable ASCII, no '"' or '\\' */
#define CL_LICENCE_RECORD_MAX 4096                       /* bytes of one signed record */
#define CL_LICENCE_TABLE_MAX 1024                        /* licences one table holds, ever */
#define CL_LICENCE_CREDENTIAL_MIN 16                     /* bytes of a consumer credential */
#define CL_LICENCE_CREDENTIAL_MAX 512
#define CL_LICENCE_PERIOD_MAX (366ull * 86400ull)        /* seconds */
#define CL_LICENCE_TIME_MAX 253402300799ull              /* 9999-12-31T23:59:59Z */

struct cl_licence {
    char id[CL_LICENCE_ID_MAX + 1];
    char consumer[CL_LICENCE_CONSUMER_MAX + 1];
    uint64_t serial;                   /* raised by the key service on every change */
    uint8_t credential_sha256[CL_SHA256_LEN];
    uint8_t model_sha256[CL_SHA256_LEN];
    uint64_t not_before, not_after;    /* Unix seconds; valid for not_before <= t < not_after */
    uint64_t period_s;                 /* quota period, 1..CL_LICENCE_PERIOD_MAX, counted from not_before */
    uint64_t max_requests, max_tokens; /* per period; 0 = no limit */
    uint64_t rate_per_min;             /* requests per clock minute; 0 = no limit */
    bool revoked;
};

bool cl_licence_id_valid(const char *s);
bool cl_licence_consumer_valid(const char *s);
/* Checks the fields, then signs (P-384 private key). */
CL_MUST_CHECK cl_err cl_licence_sign(const struct cl_licence *l, const cl_pkey *key, struct cl_buf *out);
/* Parses without verifying (for display by the owner's own tools). */
CL_MUST_CHECK cl_err cl_licence_parse(const uint8_t *p, size_t n, struct cl_licence *out);
/* Verifies the signature with key, then parses. */
CL_MUST_CHECK cl_err cl_licence_verify(const uint8_t *p, size_t n, const cl_pkey *key, struct cl_licence *out);
/* SHA-256 of a consumer credential (what licences and the key service store). */
CL_MUST_CHECK cl_err cl_licence_credential_hash(const uint8_t *cred, size_t n, uint8_t out[CL_SHA256_LEN]);
/* Accepts a licence-verification key (SubjectPublicKeyInfo DER, P-384) only when
 * its SHA-256 equals pinned_hex, the value of the model's encryption-context
 * entry CL_LICENCE_CTX_KEY: the host cannot substitute its own key. */
CL_MUST_CHECK cl_err cl_licence_key_bind(const uint8_t *der, size_t n, const char *pinned_hex, cl_pkey **out);

typedef struct cl_licence_table cl_licence_table;

/* The table takes its own reference to key (it must outlive the table). */
CL_MUST_CHECK cl_err cl_licence_table_new(const cl_pkey *key, const uint8_t model_sha256[CL_SHA256_LEN],
                                          cl_licence_table **out);
void cl_licence_table_free(cl_licence_table *t);
/* Replaces the licence set with n signed records, all or nothing: every
 * record must verify, ids must be unique and no record may carry a lower
 * serial than one the table accepted before for the same id. On success the
 * lease runs until now + lease_s; use counters of licences that stay are kept. */
CL_MUST_CHECK cl_err cl_licence_table_update(cl_licence_table *t, const uint8_t *const *recs, const size_t *lens,
                                             size_t n, uint64_t now, uint64_t lease_s);
/* Admits one request with credential cred at time now, counting it; *slot
 * then names the licence for cl_licence_table_charge. Refusals are
 * CL_E_PROTO_LICENCE_{MISSING,UNKNOWN,EXPIRED,NOT_YET_VALID,REVOKED,
 * WRONG_MODEL,QUOTA,RATE,LEASE_ENDED}. */
CL_MUST_CHECK cl_err cl_licence_table_admit(cl_licence_table *t, const uint8_t *cred, size_t n, uint64_t now,
                                            size_t *slot);
/* Adds tokens used by an admitted request (the request that crosses the token
 * quota completes; the next one is refused). */
void cl_licence_table_charge(cl_licence_table *t, size_t slot, uint64_t tokens);
/* Use in the current period of licence id (false when unknown). */
bool cl_licence_table_usage(cl_licence_table *t, const char *id, uint64_t now, uint64_t *requests, uint64_t *tokens);
uint64_t cl_licence_table_lease_end(cl_licence_table *t);
/* Whether the licence an admitted request's slot names still allows serving
 * at time now, checked while its answer is made: CL_OK, or
 * CL_E_PROTO_LICENCE_{LEASE_ENDED,UNKNOWN (dropped from the set),REVOKED,
 * EXPIRED}. Quotas are not re-checked: the request that crosses one completes. */
CL_MUST_CHECK cl_err cl_licence_table_still(cl_licence_table *t, size_t slot, uint64_t now);
/* The id of the licence an admitted request's slot names (false for a slot
 * the table does not hold). */
CL_MUST_CHECK bool cl_licence_table_slot_id(cl_licence_table *t, size_t slot, char out[CL_LICENCE_ID_MAX + 1]);
/* HTTP status for a refusal: 401 (missing, unknown), 429 (rate), 503 (lease
 * ended), 403 (the others); 0 for other errors. */
int cl_licence_http_status(cl_err rc);

#endif
