/* IAM-style JSON key policies, evaluated the way AWS KMS evaluates a key
 * policy: an explicit Deny wins over any Allow; with no matching Allow the
 * request is implicitly denied. The decision names the deciding statement
 * (its Sid, or "#<index>" when it has none). */
#ifndef CLOISTER_POLICY_H
#define CLOISTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"

#define CL_POLICY_MAX_BYTES 32768 /* AWS key policy size limit */
#define CL_POLICY_MAX_STATEMENTS 100
#define CL_POLICY_PCR_COUNT 32
#define CL_POLICY_PCR_LEN 48
/* Cloister extension: a debug (all-zero PCR) attestation document is only
 * accepted by an Allow statement that names this key in its Condition,
 * e.g. "Bool": {"cloister:RecipientAttestation:Debug": "true"}. */
#define CL_POLICY_DEBUG_KEY "cloister:RecipientAttestation:Debug"

struct cl_policy; /* parsed, validated policy */

CL_MUST_CHECK cl_err cl_policy_parse(const char *json, size_t len, struct cl_policy **out);
void cl_policy_free(struct cl_policy *p);

struct cl_policy_kv {
    const char *key;
    const char *value;
};

/* What a verified attestation document contributes to conditions. */
struct cl_policy_recipient {
    uint8_t image_sha384[CL_POLICY_PCR_LEN]; /* = PCR0 on Nitro */
    uint8_t pcrs[CL_POLICY_PCR_COUNT][CL_POLICY_PCR_LEN];
    uint32_t pcr_mask; /* bit n set when PCRn is present */
    bool debug;        /* PCR0..2 all zero */
};

struct cl_policy_ctx {
    const char *principal_arn;  /* arn:aws:iam::111122223333:user/alice */
    const char *caller_account; /* 111122223333 */
    const char *action;         /* kms:Decrypt */
    const char *resource;       /* key ARN */
    int64_t now;                /* aws:CurrentTime, seconds since the epoch */
    const struct cl_policy_kv *enc_ctx;
    size_t n_enc_ctx;
    const struct cl_policy_recipient *recipient; /* NULL: no Recipient in the request */
};

enum cl_policy_effect { CL_POLICY_EFFECT_NONE = 0, CL_POLICY_ALLOW, CL_POLICY_DENY, CL_POLICY_EFFECT_COUNT };

struct cl_policy_decision {
    enum cl_policy_effect effect; /* ALLOW or DENY */
    bool explicit_deny;           /* a Deny statement matched */
    char statement[72];           /* Sid, "#<index>", or "" for the implicit deny */
};

CL_MUST_CHECK cl_err cl_policy_evaluate(const struct cl_policy *p, const struct cl_policy_ctx *ctx,
                                        struct cl_policy_decision *out);

/* ISO 8601 ("2025-01-31T12:00:00Z", optional fraction, or a date) or epoch
 * seconds, as policy Date conditions accept. */
CL_MUST_CHECK cl_err cl_policy_parse_time(const char *s, int64_t *out);

#endif
