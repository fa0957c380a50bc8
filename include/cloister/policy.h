/* IAM-style JSON key policies, evaluated the way AWS KMS evaluates a key
 * policy: an explicit Deny wins over any Allow; with no matching Allow the
 * request is implicitly denied. The decision names the deciding statement
 * (its Sid, or "#<index>" when it has none). Lib cl_kms_policy (no SQLite,
 * no HTTP server), which cl_kms links. */
#ifndef CLOISTER_POLICY_H
#define CLOISTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/aws.h"
#include "cloister/err.h"

#define CL_POLICY_MAX_BYTES 32768 /* AWS key policy size limit */
#define CL_POLICY_MAX_STATEMENTS 100
#define CL_POLICY_PCR_COUNT 32
#define CL_POLICY_PCR_LEN 48
/* Cloister extension: a debug (all-zero PCR) attestation document is only
 * accepted by an Allow statement that names this key in its Condition,
 * e.g. "Bool": {"cloister:RecipientAttestation:Debug": "true"}. */
#define CL_POLICY_DEBUG_KEY "cloister:RecipientAttestation:Debug"
/* Cloister extension: the SHA-256 (64 lowercase hex) of the DER root
 * certificate that verified the Recipient's attestation document. A key
 * service that trusts more than one root releases only through an Allow
 * statement that names this key in its Condition (see require_root_pin). */
#define CL_POLICY_ROOT_KEY "cloister:attestation-root-sha256"
#define CL_POLICY_ROOT_SHA256_LEN 32

struct cl_policy; /* parsed, validated policy */

CL_MUST_CHECK cl_err cl_policy_parse(const char *json, size_t len, struct cl_policy **out);
void cl_policy_free(struct cl_policy *p);

/* What a verified attestation document contributes to conditions. */
struct cl_policy_recipient {
    uint8_t image_sha384[CL_POLICY_PCR_LEN]; /* = PCR0 on Nitro */
    uint8_t pcrs[CL_POLICY_PCR_COUNT][CL_POLICY_PCR_LEN];
    uint32_t pcr_mask; /* bit n set when PCRn is present */
    bool debug;        /* PCR0..2 all zero */
    uint8_t root_sha256[CL_POLICY_ROOT_SHA256_LEN]; /* the root that verified the document */
    bool has_root;
    /* Set when the key service trusts several roots: an Allow statement
     * counts only if its Condition names CL_POLICY_ROOT_KEY. */
    bool require_root_pin;
};

struct cl_policy_ctx {
    const char *principal_arn;  /* arn:aws:iam::111122223333:user/alice */
    const char *caller_account; /* 111122223333 */
    const char *action;         /* kms:Decrypt */
    const char *resource;       /* key ARN */
    int64_t now;                /* aws:CurrentTime, seconds since the epoch */
    const struct cl_aws_kv *enc_ctx;
    size_t n_enc_ctx;
    const struct cl_policy_recipient *recipient; /* NULL: no Recipient in the request */
};

enum cl_policy_effect { CL_POLICY_EFFECT_NONE = 0, CL_POLICY_ALLOW, CL_POLICY_DENY, CL_POLICY_EFFECT_COUNT };

struct cl_policy_decision {
    enum cl_policy_effect effect; /* ALLOW or DENY */
    bool explicit_deny;           /* a Deny statement matched */
    char statement[72];           /* Sid, "#<index>", or "" for the implicit deny */
    /* Implicit deny only: an Allow statement matched but was passed over
     * because it does not pin the attestation root (require_root_pin). */
    bool unpinned_root;
    char unpinned_statement[72];
};

CL_MUST_CHECK cl_err cl_policy_evaluate(const struct cl_policy *p, const struct cl_policy_ctx *ctx,
                                        struct cl_policy_decision *out);

/* Does an Allow in p possibly let principal_arn perform action on resource
 * in a request WITHOUT a Recipient attestation document, with no Deny that
 * certainly refuses every such request? Conditions on keys other than the
 * attestation keys are taken as satisfiable (the check is conservative).
 * *unsafe receives the answer and stmt the Allow statement that would
 * apply. Actions that never carry a Recipient (PutKeyPolicy, CreateGrant,
 * ReEncrypt*) are covered by the same question. */
CL_MUST_CHECK cl_err cl_policy_unattested_allow(const struct cl_policy *p, const char *principal_arn,
                                                const char *action, const char *resource, bool *unsafe,
                                                char stmt[72]);

/* Calls cb for every principal that p lets act only with an attestation
 * document: the AWS principals of Allow statements whose Condition names a
 * kms:RecipientAttestation:* or cloister attestation key. A bare account
 * id is reported as its arn:aws:iam::ACCOUNT:root ARN; "*" as "*". */
typedef void (*cl_policy_principal_cb)(void *arg, const char *principal);
CL_MUST_CHECK cl_err cl_policy_release_principals(const struct cl_policy *p, cl_policy_principal_cb cb, void *arg);

/* ISO 8601 ("2025-01-31T12:00:00Z", optional fraction, or a date) or epoch
 * seconds, as policy Date conditions accept. */
CL_MUST_CHECK cl_err cl_policy_parse_time(const char *s, int64_t *out);

#endif
