/* AWS KMS JSON 1.1 request handling: authentication, operations, errors, audit. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/kms.h"
#include "cloister/aws.h"
#include "cloister/secmem.h"
#include "cloister/sigv4.h"
#include "cloister/attest_user_data.h"
#include "kms_internal.h"

#define CL_KMS_TARGET_PREFIX "TrentService."

struct cl_kms_req {
    const struct cl_kms_server_config *cfg;
    struct cl_kms_store *st;
    json_t *in;
    json_t *out;
    const char *principal;
    int64_t now_ms;
    struct cl_kms_audit_row audit;
    const char *err_type; /* set when a specific exception applies */
    bool decided;
    struct cl_kms_attestation att;
    bool has_att;
};

void cl_kms_response_init(struct cl_kms_response *r)
{
    memset(r, 0, sizeof(*r));
    cl_buf_init(&r->body, 1 << 20, CL_BUF_SECURE);
}

void cl_kms_response_free(struct cl_kms_response *r)
{
    if (r->body.data)
        cl_wipe(r->body.data, r->body.cap);
    cl_buf_free(&r->body);
}

static int64_t cl_kms_real_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cl_kms_new_request_id(char out[40])
{
    uint8_t r[16] = {0};
    if (cl_random_bytes(r, sizeof(r)) != CL_OK)
        memset(r, 0, sizeof(r));
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
}

/* ---- error mapping ---- */

static const char *cl_kms_exception(cl_err e)
{
    switch (e) {
    case CL_E_KMS_NOT_FOUND: return "NotFoundException";
    case CL_E_KMS_EXISTS: return "AlreadyExistsException";
    case CL_E_KMS_DISABLED: return "DisabledException";
    case CL_E_KMS_INVALID_STATE: return "KMSInvalidStateException";
    case CL_E_KMS_ACCESS_DENIED: return "AccessDeniedException";
    case CL_E_KMS_BAD_CIPHERTEXT: return "InvalidCiphertextException";
    case CL_E_KMS_BAD_ALIAS: return "InvalidAliasNameException";
    case CL_E_KMS_POLICY_MALFORMED:
    case CL_E_KMS_POLICY_LIMIT: return "MalformedPolicyDocumentException";
    case CL_E_KMS_VALIDATION:
    case CL_E_CORE_BAD_BASE64:
    case CL_E_CORE_LIMIT: return "ValidationException";
    case CL_E_KMS_RECIPIENT: return "ValidationException";
    case CL_E_KMS_USAGE_REPORT: return "ValidationException";
    default: return "KMSInternalException";
    }
}

static void cl_kms_error_body(struct cl_kms_response *resp, int status, const char *type, const char *msg)
{
    json_t *o = json_pack("{s:s,s:s}", "__type", type, "message", msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    resp->status = status;
    snprintf(resp->error_type, sizeof(resp->error_type), "%s", type);
    cl_buf_reset(&resp->body);
    if (!s || cl_buf_append_str(&resp->body, s) != CL_OK) {
        cl_buf_reset(&resp->body);
        if (cl_buf_append_str(&resp->body, "{\"__type\":\"KMSInternalException\",\"message\":\"internal\"}"))
            resp->body.len = 0;
    }
    free(s);
    json_decref(o);
}

/* ---- JSON input helpers ---- */

static cl_err cl_kms_get_str(const json_t *in, const char *name, bool required, size_t maxlen, const char **out)
{
    const json_t *v = json_object_get(in, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return cl_err_fail(CL_E_KMS_VALIDATION, "%s is required", name);
        return CL_OK;
    }
    if (!json_is_string(v))
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be a string", name);
    size_t n = json_string_length(v);
    if (n < 1 || n > maxlen || strlen(json_string_value(v)) != n)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s length must be 1..%zu", name, maxlen);
    *out = json_string_value(v);
    return CL_OK;
}

static cl_err cl_kms_get_int(const json_t *in, const char *name, int64_t lo, int64_t hi, int64_t *out, bool *present)
{
    const json_t *v = json_object_get(in, name);
    *present = false;
    if (!v || json_is_null(v))
        return CL_OK;
    if (!json_is_integer(v))
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be an integer", name);
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be in %lld..%lld", name, (long long)lo, (long long)hi);
    *out = x;
    *present = true;
    return CL_OK;
}

/* Base64 blob field into out (max decoded bytes). */
static cl_err cl_kms_get_b64(const json_t *in, const char *name, bool required, size_t minlen, size_t maxlen,
                             struct cl_buf *out, bool *present)
{
    const json_t *v = json_object_get(in, name);
    if (present)
        *present = false;
    if (!v || json_is_null(v)) {
        if (required)
            return cl_err_fail(CL_E_KMS_VALIDATION, "%s is required", name);
        return CL_OK;
    }
    if (!json_is_string(v))
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be a base64 string", name);
    size_t n = json_string_length(v);
    if (n > (maxlen / 3 + 2) * 4)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s is longer than %zu bytes", name, maxlen);
    size_t start = out->len;
    cl_err rc = cl_b64_decode(json_string_value(v), n, CL_B64_STD, out);
    if (rc)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s is not valid base64", name);
    size_t got = out->len - start;
    if (got < minlen || got > maxlen)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s length %zu must be %zu..%zu bytes", name, got, minlen, maxlen);
    if (present)
        *present = true;
    return CL_OK;
}

struct cl_kms_ctx {
    struct cl_aws_kv kv[CL_KMS_MAX_ENC_CTX_PAIRS];
    size_t n;
};

static cl_err cl_kms_get_ctx(const json_t *in, const char *name, struct cl_kms_ctx *c)
{
    const json_t *v = json_object_get(in, name);
    c->n = 0;
    if (!v || json_is_null(v))
        return CL_OK;
    if (!json_is_object(v))
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be an object of strings", name);
    if (json_object_size(v) > CL_KMS_MAX_ENC_CTX_PAIRS)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s has more than %d pairs", name, CL_KMS_MAX_ENC_CTX_PAIRS);
    const char *k;
    json_t *e;
    size_t total = 0;
    json_object_foreach((json_t *)v, k, e) {
        if (!json_is_string(e))
            return cl_err_fail(CL_E_KMS_VALIDATION, "%s values must be strings", name);
        size_t kl = strlen(k), vl = json_string_length(e);
        if (kl == 0 || strlen(json_string_value(e)) != vl)
            return cl_err_fail(CL_E_KMS_VALIDATION, "%s has an empty key or a NUL byte", name);
        total += kl + vl;
        if (total > CL_KMS_MAX_ENC_CTX_BYTES)
            return cl_err_fail(CL_E_KMS_VALIDATION, "%s is larger than %d bytes", name, CL_KMS_MAX_ENC_CTX_BYTES);
        c->kv[c->n].key = k;
        c->kv[c->n].value = json_string_value(e);
        c->n++;
    }
    return CL_OK;
}

/* ---- output helpers ---- */

static cl_err cl_kms_set_b64(json_t *out, const char *name, const uint8_t *p, size_t n)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    cl_buf_init(&b, cl_b64_encoded_len(n, CL_B64_STD) + 1, CL_BUF_SECURE);
    CL_GUARD(cl_b64_encode(p, n, CL_B64_STD, &b));
    CL_ENSURE(json_object_set_new(out, name, json_stringn((const char *)b.data, b.len)) == 0, CL_E_CORE_NOMEM);
out:
    cl_buf_free(&b);
    return rc;
}

static json_t *cl_kms_key_metadata(struct cl_kms_store *st, const struct cl_kms_key_meta *m)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:[s],s:b}", "AWSAccountId",
                          cl_kms_store_account(st), "KeyId", m->key_id, "Arn", m->arn, "CreationDate",
                          (json_int_t)m->created, "Enabled", m->state == CL_KMS_STATE_ENABLED, "Description",
                          m->description, "KeyUsage", "ENCRYPT_DECRYPT", "KeyState", cl_kms_state_name(m->state),
                          "Origin", "AWS_KMS", "KeyManager", "CUSTOMER", "CustomerMasterKeySpec",
                          "SYMMETRIC_DEFAULT", "KeySpec", "SYMMETRIC_DEFAULT", "EncryptionAlgorithms",
                          "SYMMETRIC_DEFAULT", "MultiRegion", 0);
    if (o && m->state == CL_KMS_STATE_PENDING_DELETION)
        json_object_set_new(o, "DeletionDate", json_integer(m->deletion_date));
    return o;
}

/* ---- authorization ---- */

static cl_err cl_kms_authorize(struct cl_kms_req *q, const struct cl_kms_key_meta *m, const char *action,
                               const struct cl_kms_ctx *ctx)
{
    cl_err rc = CL_OK;
    struct cl_buf pol;
    struct cl_policy *p = NULL;
    struct cl_policy_decision d;
    cl_buf_init(&pol, CL_POLICY_MAX_BYTES + 1, CL_BUF_NONE);
    snprintf(q->audit.key_id, sizeof(q->audit.key_id), "%s", m->key_id);
    CL_GUARD(cl_kms_policy_get(q->st, m->key_id, &pol));
    CL_GUARD(cl_policy_parse((const char *)pol.data, pol.len, &p));
    struct cl_policy_ctx pc = {
        .principal_arn = q->principal,
        .caller_account = cl_kms_store_account(q->st),
        .action = action,
        .resource = m->arn,
        .now = q->now_ms / 1000,
        .enc_ctx = ctx ? ctx->kv : NULL,
        .n_enc_ctx = ctx ? ctx->n : 0,
        .recipient = q->has_att ? &q->att.r : NULL,
    };
    /* kms:CallerAccount is the caller's account, from its ARN. */
    char acct[16] = "";
    if (q->principal && !strncmp(q->principal, "arn:aws:iam::", 13) && strlen(q->principal) > 25 &&
        q->principal[25] == ':' && strspn(q->principal + 13, "0123456789") == 12)
        memcpy(acct, q->principal + 13, 12);
    pc.caller_account = acct[0] ? acct : NULL;
    CL_GUARD(cl_policy_evaluate(p, &pc, &d));
    q->decided = true;
    snprintf(q->audit.decision, sizeof(q->audit.decision), "%s", d.effect == CL_POLICY_ALLOW ? "allow" : "deny");
    snprintf(q->audit.statement, sizeof(q->audit.statement), "%s", d.statement);
    if (d.effect != CL_POLICY_ALLOW) {
        /* Message shape follows AWS's, reordered so that the reason (and
         * the deciding statement) comes before the key ARN: error details
         * are bounded (256 bytes) and the reason must survive. Principal,
         * action and statement names are not secret. */
        if (d.explicit_deny)
            CL_FAIL(CL_E_KMS_ACCESS_DENIED,
                    "User: %s is not authorized to perform: %s with an explicit deny in a resource-based policy "
                    "(statement %s) on resource: %s",
                    q->principal, action, d.statement, m->arn);
        if (d.unpinned_root)
            CL_FAIL(CL_E_KMS_ACCESS_DENIED,
                    "User: %s is not authorized to perform: %s: statement %s does not pin " CL_POLICY_ROOT_KEY
                    " (%u roots trusted) on resource: %s",
                    q->principal, action, d.unpinned_statement, q->att.roots_trusted, m->arn);
        CL_FAIL(CL_E_KMS_ACCESS_DENIED,
                "User: %s is not authorized to perform: %s because no resource-based policy allows the %s action "
                "on resource: %s",
                q->principal, action, action, m->arn);
    }
out:
    cl_policy_free(p);
    cl_buf_free(&pol);
    return rc;
}

/* Resolves KeyId and checks the key can be used for cryptography. */
static cl_err cl_kms_usable(const struct cl_kms_key_meta *m)
{
    if (m->state == CL_KMS_STATE_DISABLED)
        return cl_err_fail(CL_E_KMS_DISABLED, "%s is disabled.", m->arn);
    if (m->state != CL_KMS_STATE_ENABLED)
        return cl_err_fail(CL_E_KMS_INVALID_STATE, "%s is pending deletion.", m->arn);
    return CL_OK;
}

/* Keys and aliases live in the store's home account (the model owner's).
 * Principals of other accounts use keys as the key policy allows, by key id
 * or ARN, but like on AWS they cannot create keys or aliases there and do
 * not see its aliases (so nobody can plant an alias the owner then seals
 * under). */
static bool cl_kms_home_caller(const struct cl_kms_req *q)
{
    const char *acct = cl_kms_store_account(q->st);
    return q->principal && !strncmp(q->principal, "arn:aws:iam::", 13) && strlen(q->principal) > 25 &&
           q->principal[25] == ':' && !strncmp(q->principal + 13, acct, 12) && strlen(acct) == 12;
}

static cl_err cl_kms_home_only(const struct cl_kms_req *q, const char *action)
{
    if (cl_kms_home_caller(q))
        return CL_OK;
    return cl_err_fail(CL_E_KMS_ACCESS_DENIED,
                       "User: %s is not authorized to perform: %s: keys and aliases here belong to account %s",
                       q->principal, action, cl_kms_store_account(q->st));
}

static cl_err cl_kms_get_key(struct cl_kms_req *q, const char *field, bool required, struct cl_kms_key_meta *m,
                             bool *present)
{
    const char *id;
    cl_err rc = cl_kms_get_str(q->in, field, required, 2048, &id);
    if (present)
        *present = id != NULL;
    if (rc || !id)
        return rc;
    if ((!strncmp(id, "alias/", 6) || (!strncmp(id, "arn:", 4) && strstr(id, ":alias/"))) && !cl_kms_home_caller(q))
        return cl_err_fail(CL_E_KMS_NOT_FOUND, "Alias is not found in the caller's account (use the key ARN)");
    rc = cl_kms_key_get(q->st, id, m);
    if (rc == CL_E_KMS_NOT_FOUND)
        return cl_err_fail(CL_E_KMS_NOT_FOUND, "Invalid keyId %s", "(not found)");
    return rc;
}

/* Recipient {KeyEncryptionAlgorithm, AttestationDocument}: verified here,
 * before the policy is evaluated, so its PCRs feed the conditions. */
static cl_err cl_kms_recipient(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_buf doc;
    cl_buf_init(&doc, 32 * 1024, CL_BUF_NONE);
    const json_t *r = json_object_get(q->in, "Recipient");
    if (!r || json_is_null(r))
        return CL_OK;
    CL_ENSURE_D(json_is_object(r), CL_E_KMS_VALIDATION, "Recipient must be an object");
    const char *alg;
    CL_GUARD(cl_kms_get_str(r, "KeyEncryptionAlgorithm", false, 64, &alg));
    CL_ENSURE_D(!alg || !strcmp(alg, "RSAES_OAEP_SHA_256"), CL_E_KMS_VALIDATION,
                "Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256");
    CL_GUARD(cl_kms_get_b64(r, "AttestationDocument", true, 1, 32 * 1024, &doc, NULL));
    CL_ENSURE_D(q->cfg->attest, CL_E_KMS_RECIPIENT, "this key service has no trusted attestation roots configured");
    memset(&q->att, 0, sizeof(q->att));
    rc = q->cfg->attest(q->cfg->attest_arg, doc.data, doc.len, q->now_ms, &q->att);
    if (rc) {
        char why[256];
        cl_err_format(rc, why, sizeof(why));
        CL_FAIL(CL_E_KMS_RECIPIENT, "Recipient attestation document was refused: %s", why);
    }
    CL_ENSURE_D(q->att.public_key_len > 0, CL_E_KMS_RECIPIENT, "attestation document has no public_key");
    /* Fail closed: a verifier that cannot say which root it used must not
     * feed a policy that may pin one. */
    CL_ENSURE_D(q->att.r.has_root && q->att.roots_trusted >= 1, CL_E_KMS_RECIPIENT,
                "attestation verifier did not report the verifying root");
    q->att.r.require_root_pin = q->att.roots_trusted > 1;
    q->has_att = true;
    snprintf(q->audit.module_id, sizeof(q->audit.module_id), "%.95s", q->att.module_id);
    char h[3][2 * CL_POLICY_PCR_LEN + 1];
    for (int i = 0; i < 3; i++)
        cl_hex_encode(q->att.r.pcrs[i], CL_POLICY_PCR_LEN, h[i]);
    snprintf(q->audit.pcrs, sizeof(q->audit.pcrs), "%s,%s,%s", h[0], h[1], h[2]);
out:
    cl_buf_free(&doc);
    return rc;
}

/* Plaintext out: to the recipient as CMS, or base64 in Plaintext. */
static cl_err cl_kms_emit_plaintext(struct cl_kms_req *q, const uint8_t *pt, size_t n)
{
    cl_err rc = CL_OK;
    struct cl_buf cms;
    cl_buf_init(&cms, CL_AWS_CMS_MAX, CL_BUF_NONE);
    if (q->has_att) {
        CL_GUARD(cl_aws_recipient_wrap(q->att.public_key, q->att.public_key_len, pt, n, &cms));
        CL_GUARD(cl_kms_set_b64(q->out, "CiphertextForRecipient", cms.data, cms.len));
    } else {
        CL_GUARD(cl_kms_set_b64(q->out, "Plaintext", pt, n));
    }
out:
    cl_buf_free(&cms);
    return rc;
}

/* ---- operations ---- */

/* The default policy of CreateKey: the creating principal, not every user
 * of its account, may do everything (AWS gives kms:* to the account root
 * and leaves the rest to IAM, which cloister-kms does not have). */
#define CL_KMS_CALLER_POLICY_FMT                                                                                     \
    "{\"Version\":\"2012-10-17\",\"Id\":\"key-default-1\",\"Statement\":[{\"Sid\":\"Enable key creator "      \
    "permissions\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"%s\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}"

static bool cl_kms_get_bool(const json_t *in, const char *name)
{
    return json_is_true(json_object_get(in, name));
}

struct cl_kms_rp {
    const char *p[4 * CL_POLICY_MAX_STATEMENTS];
    size_t n;
    bool overflow; /* more than we can check: refuse rather than skip any */
};

static void cl_kms_rp_add(void *arg, const char *principal)
{
    struct cl_kms_rp *r = arg;
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->p[i], principal))
            return;
    if (r->n < sizeof(r->p) / sizeof(r->p[0]))
        r->p[r->n++] = principal;
    else
        r->overflow = true;
}

/* What PutKeyPolicy and CreateKey check before a policy is stored:
 * - AWS's lockout safety check: the caller must still be allowed
 *   kms:PutKeyPolicy (BypassPolicyLockoutSafetyCheck skips it);
 * - no release principal (one that the old or the new policy lets act only
 *   with an attestation document) may, under the new policy, Decrypt or
 *   GenerateDataKey without one, re-encrypt, change the policy or create
 *   grants (the cloister extension CloisterAllowUnattestedRelease skips it). */
static cl_err cl_kms_check_new_policy(struct cl_kms_req *q, const struct cl_policy *old, const char *pol,
                                      const char *key_arn)
{
    static const char *const actions[] = {"kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom",
                                          "kms:PutKeyPolicy", "kms:CreateGrant"};
    cl_err rc = CL_OK;
    struct cl_policy *np = NULL;
    struct cl_kms_rp rp;
    rp.n = 0;
    rp.overflow = false;
    CL_GUARD(cl_policy_parse(pol, strlen(pol), &np));
    if (!cl_kms_get_bool(q->in, "BypassPolicyLockoutSafetyCheck")) {
        char acct[13] = "";
        if (q->principal && !strncmp(q->principal, "arn:aws:iam::", 13) && strlen(q->principal) > 25)
            snprintf(acct, sizeof(acct), "%.12s", q->principal + 13);
        struct cl_policy_ctx pc = {.principal_arn = q->principal, .caller_account = acct[0] ? acct : NULL,
                                   .action = "kms:PutKeyPolicy", .resource = key_arn, .now = q->now_ms / 1000};
        struct cl_policy_decision d;
        CL_GUARD(cl_policy_evaluate(np, &pc, &d));
        CL_ENSURE_D(d.effect == CL_POLICY_ALLOW, CL_E_KMS_POLICY_MALFORMED,
                    "The new key policy will not allow you to update the key policy in the future "
                    "(lockout safety check; BypassPolicyLockoutSafetyCheck skips it)");
    }
    if (!cl_kms_get_bool(q->in, "CloisterAllowUnattestedRelease")) {
        if (old)
            CL_GUARD(cl_policy_release_principals(old, cl_kms_rp_add, &rp));
        CL_GUARD(cl_policy_release_principals(np, cl_kms_rp_add, &rp));
        CL_ENSURE_D(!rp.overflow, CL_E_KMS_POLICY_LIMIT, "more than %zu release principals to check",
                    sizeof(rp.p) / sizeof(rp.p[0]));
        for (size_t i = 0; i < rp.n; i++) {
            /* "*" stands for anyone: probe with a principal nobody has. */
            const char *who = strcmp(rp.p[i], "*") ? rp.p[i] : "arn:aws:iam::000000000000:user/cloister-any-principal";
            for (size_t a = 0; a < sizeof(actions) / sizeof(actions[0]); a++) {
                bool unsafe;
                char stmt[72];
                CL_GUARD(cl_policy_unattested_allow(np, who, actions[a], key_arn, &unsafe, stmt));
                CL_ENSURE_D(!unsafe, CL_E_KMS_POLICY_MALFORMED,
                            "The new key policy lets the release principal %s perform %s without an attestation "
                            "document (statement %s); CloisterAllowUnattestedRelease forces it",
                            rp.p[i], actions[a], stmt);
            }
        }
    }
out:
    cl_policy_free(np);
    return rc;
}

static cl_err cl_kms_op_create_key(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    const char *desc, *pol, *usage, *spec, *origin;
    char defpol[CL_KMS_ARN_MAX + 512];
    struct cl_kms_key_meta m;
    CL_GUARD(cl_kms_get_str(q->in, "Description", false, CL_KMS_MAX_DESCRIPTION, &desc));
    CL_GUARD(cl_kms_get_str(q->in, "Policy", false, CL_POLICY_MAX_BYTES, &pol));
    CL_GUARD(cl_kms_get_str(q->in, "KeyUsage", false, 64, &usage));
    CL_ENSURE_D(!usage || !strcmp(usage, "ENCRYPT_DECRYPT"), CL_E_KMS_VALIDATION, "KeyUsage must be ENCRYPT_DECRYPT");
    CL_GUARD(cl_kms_get_str(q->in, "KeySpec", false, 64, &spec));
    if (!spec)
        CL_GUARD(cl_kms_get_str(q->in, "CustomerMasterKeySpec", false, 64, &spec));
    CL_ENSURE_D(!spec || !strcmp(spec, "SYMMETRIC_DEFAULT"), CL_E_KMS_VALIDATION, "KeySpec must be SYMMETRIC_DEFAULT");
    CL_GUARD(cl_kms_get_str(q->in, "Origin", false, 64, &origin));
    CL_ENSURE_D(!origin || !strcmp(origin, "AWS_KMS"), CL_E_KMS_VALIDATION, "Origin must be AWS_KMS");
    CL_GUARD(cl_kms_home_only(q, "kms:CreateKey"));
    if (pol) {
        char probe[CL_KMS_ARN_MAX];
        /* The key's ARN is not known yet; the checks see a placeholder in
         * the store's account (a policy naming its own key ARN would only
         * make them stricter). */
        snprintf(probe, sizeof(probe), "arn:aws:kms:%s:%s:key/00000000-0000-4000-8000-000000000000",
                 cl_kms_store_region(q->st), cl_kms_store_account(q->st));
        CL_GUARD(cl_kms_check_new_policy(q, NULL, pol, probe));
    } else {
        CL_ENSURE_D(q->principal && strlen(q->principal) < CL_KMS_ARN_MAX && !strchr(q->principal, '"') &&
                        !strchr(q->principal, '\\'),
                    CL_E_KMS_VALIDATION, "caller ARN cannot be named in a default key policy");
        snprintf(defpol, sizeof(defpol), CL_KMS_CALLER_POLICY_FMT, q->principal);
        pol = defpol;
    }
    CL_GUARD(cl_kms_key_create(q->st, desc, pol, &m));
    snprintf(q->audit.key_id, sizeof(q->audit.key_id), "%s", m.key_id);
    json_t *md = cl_kms_key_metadata(q->st, &m);
    CL_ENSURE(md && json_object_set_new(q->out, "KeyMetadata", md) == 0, CL_E_CORE_NOMEM);
out:
    return rc;
}

static cl_err cl_kms_op_describe_key(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_authorize(q, &m, "kms:DescribeKey", NULL));
    json_t *md = cl_kms_key_metadata(q->st, &m);
    CL_ENSURE(md && json_object_set_new(q->out, "KeyMetadata", md) == 0, CL_E_CORE_NOMEM);
out:
    return rc;
}

static void cl_kms_list_key_cb(void *arg, const struct cl_kms_key_meta *m)
{
    json_array_append_new((json_t *)arg, json_pack("{s:s,s:s}", "KeyId", m->key_id, "KeyArn", m->arn));
}

static cl_err cl_kms_op_list_keys(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    int64_t limit = 100;
    bool has, trunc;
    const char *marker;
    CL_GUARD(cl_kms_get_int(q->in, "Limit", 1, 1000, &limit, &has));
    CL_GUARD(cl_kms_get_str(q->in, "Marker", false, 1024, &marker));
    json_t *arr = json_array();
    CL_ENSURE(arr && json_object_set_new(q->out, "Keys", arr) == 0, CL_E_CORE_NOMEM);
    trunc = false;
    if (cl_kms_home_caller(q)) /* other accounts have no keys here */
        CL_GUARD(cl_kms_key_list(q->st, marker, (size_t)limit, cl_kms_list_key_cb, arr, &trunc));
    json_object_set_new(q->out, "Truncated", json_boolean(trunc));
    if (trunc && json_array_size(arr))
        json_object_set_new(q->out, "NextMarker",
                            json_incref(json_object_get(json_array_get(arr, json_array_size(arr) - 1), "KeyId")));
out:
    return rc;
}

static cl_err cl_kms_alias_key(struct cl_kms_req *q, const char *alias, struct cl_kms_key_meta *m)
{
    cl_err rc = cl_kms_key_get(q->st, alias, m);
    if (rc == CL_E_KMS_NOT_FOUND)
        return cl_err_fail(CL_E_KMS_NOT_FOUND, "Alias %s is not found.", alias);
    return rc;
}

static cl_err cl_kms_op_create_alias(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    const char *alias;
    struct cl_kms_key_meta m, tmp;
    CL_GUARD(cl_kms_get_str(q->in, "AliasName", true, 256, &alias));
    CL_GUARD(cl_kms_home_only(q, "kms:CreateAlias"));
    CL_GUARD(cl_kms_get_key(q, "TargetKeyId", true, &m, NULL));
    CL_ENSURE_D(strncmp(alias, "alias/", 6) == 0, CL_E_KMS_VALIDATION, "AliasName must begin with alias/");
    CL_GUARD(cl_kms_authorize(q, &m, "kms:CreateAlias", NULL));
    CL_ENSURE_D(m.state != CL_KMS_STATE_PENDING_DELETION, CL_E_KMS_INVALID_STATE, "%s is pending deletion.", m.arn);
    if (cl_kms_key_get(q->st, alias, &tmp) == CL_OK)
        CL_FAIL(CL_E_KMS_EXISTS, "An alias with the name %s already exists", "given");
    CL_GUARD(cl_kms_alias_create(q->st, alias, m.key_id));
out:
    return rc;
}

struct cl_kms_alias_page {
    struct cl_kms_req *q;
    const char *marker;
    size_t limit, n;
    bool truncated;
    char last[300];
};

static void cl_kms_list_alias_cb(void *arg, const char *alias, const char *key_id, int64_t created)
{
    struct cl_kms_alias_page *pg = arg;
    struct cl_kms_req *q = pg->q;
    if (pg->marker && strcmp(alias, pg->marker) <= 0)
        return;
    if (pg->n == pg->limit) {
        pg->truncated = true;
        return;
    }
    char arn[CL_KMS_ARN_MAX + 300];
    snprintf(arn, sizeof(arn), "arn:aws:kms:%s:%s:%s", cl_kms_store_region(q->st), cl_kms_store_account(q->st),
             alias);
    json_array_append_new(json_object_get(q->out, "Aliases"),
                          json_pack("{s:s,s:s,s:s,s:I,s:I}", "AliasName", alias, "AliasArn", arn, "TargetKeyId",
                                    key_id, "CreationDate", (json_int_t)created, "LastUpdatedDate",
                                    (json_int_t)created));
    snprintf(pg->last, sizeof(pg->last), "%s", alias);
    pg->n++;
}

static cl_err cl_kms_op_list_aliases(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    bool has_key, has;
    int64_t limit = 100;
    struct cl_kms_alias_page pg;
    memset(&pg, 0, sizeof(pg));
    pg.q = q;
    CL_GUARD(cl_kms_get_int(q->in, "Limit", 1, 100, &limit, &has));
    CL_GUARD(cl_kms_get_str(q->in, "Marker", false, 320, &pg.marker));
    pg.limit = (size_t)limit;
    CL_GUARD(cl_kms_get_key(q, "KeyId", false, &m, &has_key));
    json_t *arr = json_array();
    CL_ENSURE(arr && json_object_set_new(q->out, "Aliases", arr) == 0, CL_E_CORE_NOMEM);
    if (cl_kms_home_caller(q))
        CL_GUARD(cl_kms_alias_list(q->st, has_key ? m.key_id : NULL, cl_kms_list_alias_cb, &pg));
    json_object_set_new(q->out, "Truncated", json_boolean(pg.truncated));
    if (pg.truncated)
        json_object_set_new(q->out, "NextMarker", json_string(pg.last));
out:
    return rc;
}

static cl_err cl_kms_op_delete_alias(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    const char *alias;
    struct cl_kms_key_meta m;
    CL_GUARD(cl_kms_get_str(q->in, "AliasName", true, 256, &alias));
    CL_ENSURE_D(strncmp(alias, "alias/", 6) == 0, CL_E_KMS_VALIDATION, "AliasName must begin with alias/");
    CL_GUARD(cl_kms_home_only(q, "kms:DeleteAlias"));
    CL_GUARD(cl_kms_alias_key(q, alias, &m));
    CL_GUARD(cl_kms_authorize(q, &m, "kms:DeleteAlias", NULL));
    CL_GUARD(cl_kms_alias_delete(q->st, alias));
out:
    return rc;
}

static cl_err cl_kms_op_state(struct cl_kms_req *q, const char *action)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_authorize(q, &m, action, NULL));
    if (!strcmp(action, "kms:EnableKey") || !strcmp(action, "kms:DisableKey")) {
        CL_ENSURE_D(m.state != CL_KMS_STATE_PENDING_DELETION, CL_E_KMS_INVALID_STATE, "%s is pending deletion.",
                    m.arn);
        CL_GUARD(cl_kms_key_set_state(q->st, m.key_id,
                                      !strcmp(action, "kms:EnableKey") ? CL_KMS_STATE_ENABLED : CL_KMS_STATE_DISABLED,
                                      0));
    } else if (!strcmp(action, "kms:ScheduleKeyDeletion")) {
        int64_t days = 30;
        bool has;
        CL_GUARD(cl_kms_get_int(q->in, "PendingWindowInDays", 7, 30, &days, &has));
        CL_ENSURE_D(m.state != CL_KMS_STATE_PENDING_DELETION, CL_E_KMS_INVALID_STATE, "%s is pending deletion.",
                    m.arn);
        int64_t when = q->now_ms / 1000 + days * 86400;
        CL_GUARD(cl_kms_key_set_state(q->st, m.key_id, CL_KMS_STATE_PENDING_DELETION, when));
        json_object_set_new(q->out, "KeyId", json_string(m.arn));
        json_object_set_new(q->out, "DeletionDate", json_integer(when));
        json_object_set_new(q->out, "KeyState", json_string("PendingDeletion"));
        json_object_set_new(q->out, "PendingWindowInDays", json_integer(days));
    } else if (!strcmp(action, "kms:CancelKeyDeletion")) {
        CL_ENSURE_D(m.state == CL_KMS_STATE_PENDING_DELETION, CL_E_KMS_INVALID_STATE, "%s is not pending deletion.",
                    m.arn);
        CL_GUARD(cl_kms_key_set_state(q->st, m.key_id, CL_KMS_STATE_DISABLED, 0));
        json_object_set_new(q->out, "KeyId", json_string(m.arn));
    } else if (!strcmp(action, "kms:RotateKeyOnDemand")) {
        CL_GUARD(cl_kms_usable(&m));
        uint32_t v;
        CL_GUARD(cl_kms_key_rotate(q->st, m.key_id, &v));
        json_object_set_new(q->out, "KeyId", json_string(m.arn));
    }
out:
    return rc;
}

static cl_err cl_kms_op_get_policy(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    const char *name;
    struct cl_buf pol;
    cl_buf_init(&pol, CL_POLICY_MAX_BYTES + 1, CL_BUF_NONE);
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_get_str(q->in, "PolicyName", false, 128, &name));
    CL_ENSURE_D(!name || !strcmp(name, "default"), CL_E_KMS_NOT_FOUND, "PolicyName must be default");
    CL_GUARD(cl_kms_authorize(q, &m, "kms:GetKeyPolicy", NULL));
    CL_GUARD(cl_kms_policy_get(q->st, m.key_id, &pol));
    json_object_set_new(q->out, "Policy", json_stringn((const char *)pol.data, pol.len));
    json_object_set_new(q->out, "PolicyName", json_string("default"));
out:
    cl_buf_free(&pol);
    return rc;
}

static cl_err cl_kms_op_put_policy(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    const char *name, *pol;
    struct cl_buf cur;
    struct cl_policy *old = NULL;
    cl_buf_init(&cur, CL_POLICY_MAX_BYTES + 1, CL_BUF_NONE);
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_get_str(q->in, "PolicyName", false, 128, &name));
    CL_ENSURE_D(!name || !strcmp(name, "default"), CL_E_KMS_NOT_FOUND, "PolicyName must be default");
    CL_GUARD(cl_kms_get_str(q->in, "Policy", true, CL_POLICY_MAX_BYTES, &pol));
    CL_GUARD(cl_kms_authorize(q, &m, "kms:PutKeyPolicy", NULL));
    CL_GUARD(cl_kms_policy_get(q->st, m.key_id, &cur));
    CL_GUARD(cl_policy_parse((const char *)cur.data, cur.len, &old));
    CL_GUARD(cl_kms_check_new_policy(q, old, pol, m.arn));
    CL_GUARD(cl_kms_policy_put(q->st, m.key_id, pol));
out:
    cl_policy_free(old);
    cl_buf_free(&cur);
    return rc;
}

/* Grants are not implemented: the key policy is the only authority. The
 * policy still decides first, so a caller it does not allow learns that,
 * not merely that the operation is missing. */
static cl_err cl_kms_op_create_grant(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_authorize(q, &m, "kms:CreateGrant", NULL));
    q->err_type = "UnsupportedOperationException";
    CL_FAIL(CL_E_KMS_VALIDATION, "grants are not supported by cloister-kms; use the key policy");
out:
    return rc;
}

static cl_err cl_kms_check_alg(struct cl_kms_req *q, const char *field)
{
    const char *alg;
    cl_err rc = cl_kms_get_str(q->in, field, false, 64, &alg);
    if (rc)
        return rc;
    if (alg && strcmp(alg, "SYMMETRIC_DEFAULT"))
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be SYMMETRIC_DEFAULT", field);
    return CL_OK;
}

static cl_err cl_kms_op_encrypt(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_kms_ctx ctx;
    struct cl_buf pt, blob;
    cl_buf_init(&pt, CL_KMS_MAX_PLAINTEXT + 3, CL_BUF_SECURE);
    cl_buf_init(&blob, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_get_b64(q->in, "Plaintext", true, 1, CL_KMS_MAX_PLAINTEXT, &pt, NULL));
    CL_GUARD(cl_kms_get_ctx(q->in, "EncryptionContext", &ctx));
    CL_GUARD(cl_kms_check_alg(q, "EncryptionAlgorithm"));
    CL_GUARD(cl_kms_authorize(q, &m, "kms:Encrypt", &ctx));
    CL_GUARD(cl_kms_usable(&m));
    CL_GUARD(cl_kms_encrypt(q->st, m.key_id, pt.data, pt.len, ctx.kv, ctx.n, &blob));
    CL_GUARD(cl_kms_set_b64(q->out, "CiphertextBlob", blob.data, blob.len));
    json_object_set_new(q->out, "KeyId", json_string(m.arn));
    json_object_set_new(q->out, "EncryptionAlgorithm", json_string("SYMMETRIC_DEFAULT"));
out:
    cl_buf_free(&pt);
    cl_buf_free(&blob);
    return rc;
}

/* Decrypts CiphertextBlob after checking KeyId (if given) and the policy. */
static cl_err cl_kms_open_blob(struct cl_kms_req *q, const char *blob_field, const char *key_field,
                               const char *ctx_field, const char *action, struct cl_kms_key_meta *m,
                               struct cl_kms_ctx *ctx, struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    struct cl_buf blob;
    char kid[CL_KMS_KEY_ID_LEN + 1];
    struct cl_kms_key_meta given;
    bool has_given;
    cl_buf_init(&blob, CL_KMS_MAX_CIPHERTEXT + 3, CL_BUF_NONE);
    CL_GUARD(cl_kms_get_b64(q->in, blob_field, true, 1, CL_KMS_MAX_CIPHERTEXT, &blob, NULL));
    CL_GUARD(cl_kms_get_ctx(q->in, ctx_field, ctx));
    CL_GUARD(cl_kms_get_key(q, key_field, false, &given, &has_given));
    if (cl_kms_blob_key_id(blob.data, blob.len, kid) != CL_OK)
        CL_FAIL(CL_E_KMS_BAD_CIPHERTEXT, "%s is not a ciphertext of this key service", blob_field);
    rc = cl_kms_key_get(q->st, kid, m);
    if (rc == CL_E_KMS_NOT_FOUND)
        CL_FAIL(CL_E_KMS_BAD_CIPHERTEXT, "%s names no key of this key service", blob_field);
    CL_GUARD(rc);
    if (has_given && strcmp(given.key_id, m->key_id)) {
        q->err_type = "IncorrectKeyException";
        CL_FAIL(CL_E_KMS_VALIDATION, "The key ID in the request does not identify the key that encrypted the "
                                     "ciphertext.");
    }
    CL_GUARD(cl_kms_authorize(q, m, action, ctx));
    CL_GUARD(cl_kms_usable(m));
    rc = cl_kms_decrypt(q->st, blob.data, blob.len, ctx->kv, ctx->n, pt);
    if (rc == CL_E_KMS_BAD_CIPHERTEXT)
        rc = cl_err_fail(CL_E_KMS_BAD_CIPHERTEXT, "The ciphertext or its encryption context is invalid");
out:
    cl_buf_free(&blob);
    return rc;
}

static cl_err cl_kms_op_decrypt(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_kms_ctx ctx;
    struct cl_buf pt;
    cl_buf_init(&pt, CL_KMS_MAX_CIPHERTEXT, CL_BUF_SECURE);
    CL_GUARD(cl_kms_check_alg(q, "EncryptionAlgorithm"));
    CL_GUARD(cl_kms_recipient(q));
    CL_GUARD(cl_kms_open_blob(q, "CiphertextBlob", "KeyId", "EncryptionContext", "kms:Decrypt", &m, &ctx, &pt));
    CL_GUARD(cl_kms_emit_plaintext(q, pt.data, pt.len));
    json_object_set_new(q->out, "KeyId", json_string(m.arn));
    json_object_set_new(q->out, "EncryptionAlgorithm", json_string("SYMMETRIC_DEFAULT"));
out:
    cl_buf_free(&pt);
    return rc;
}

static cl_err cl_kms_op_reencrypt(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta src, dst;
    struct cl_kms_ctx sctx, dctx;
    struct cl_buf pt, blob;
    cl_buf_init(&pt, CL_KMS_MAX_CIPHERTEXT, CL_BUF_SECURE);
    cl_buf_init(&blob, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    CL_GUARD(cl_kms_check_alg(q, "SourceEncryptionAlgorithm"));
    CL_GUARD(cl_kms_check_alg(q, "DestinationEncryptionAlgorithm"));
    CL_GUARD(cl_kms_get_key(q, "DestinationKeyId", true, &dst, NULL));
    CL_GUARD(cl_kms_get_ctx(q->in, "DestinationEncryptionContext", &dctx));
    CL_GUARD(cl_kms_open_blob(q, "CiphertextBlob", "SourceKeyId", "SourceEncryptionContext", "kms:ReEncryptFrom",
                              &src, &sctx, &pt));
    CL_GUARD(cl_kms_authorize(q, &dst, "kms:ReEncryptTo", &dctx));
    CL_GUARD(cl_kms_usable(&dst));
    CL_GUARD(cl_kms_encrypt(q->st, dst.key_id, pt.data, pt.len, dctx.kv, dctx.n, &blob));
    CL_GUARD(cl_kms_set_b64(q->out, "CiphertextBlob", blob.data, blob.len));
    json_object_set_new(q->out, "SourceKeyId", json_string(src.arn));
    json_object_set_new(q->out, "KeyId", json_string(dst.arn));
    json_object_set_new(q->out, "SourceEncryptionAlgorithm", json_string("SYMMETRIC_DEFAULT"));
    json_object_set_new(q->out, "DestinationEncryptionAlgorithm", json_string("SYMMETRIC_DEFAULT"));
out:
    cl_buf_free(&pt);
    cl_buf_free(&blob);
    return rc;
}

static cl_err cl_kms_op_gdk(struct cl_kms_req *q, bool with_plaintext)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_kms_ctx ctx;
    const char *spec;
    int64_t nb = 0;
    bool has_nb;
    uint8_t *key = NULL;
    struct cl_buf blob;
    cl_buf_init(&blob, CL_KMS_MAX_CIPHERTEXT, CL_BUF_NONE);
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, &m, NULL));
    CL_GUARD(cl_kms_get_str(q->in, "KeySpec", false, 32, &spec));
    CL_GUARD(cl_kms_get_int(q->in, "NumberOfBytes", 1, CL_KMS_DATA_KEY_MAX, &nb, &has_nb));
    CL_ENSURE_D(!(spec && has_nb), CL_E_KMS_VALIDATION, "give KeySpec or NumberOfBytes, not both");
    if (spec) {
        CL_ENSURE_D(!strcmp(spec, "AES_256") || !strcmp(spec, "AES_128"), CL_E_KMS_VALIDATION,
                    "KeySpec must be AES_256 or AES_128");
        nb = !strcmp(spec, "AES_256") ? 32 : 16;
    }
    CL_ENSURE_D(nb > 0, CL_E_KMS_VALIDATION, "KeySpec or NumberOfBytes is required");
    CL_GUARD(cl_kms_get_ctx(q->in, "EncryptionContext", &ctx));
    if (with_plaintext)
        CL_GUARD(cl_kms_recipient(q));
    else
        CL_ENSURE_D(!json_object_get(q->in, "Recipient"), CL_E_KMS_VALIDATION,
                    "Recipient is not a parameter of GenerateDataKeyWithoutPlaintext");
    CL_GUARD(cl_kms_authorize(q, &m, with_plaintext ? "kms:GenerateDataKey" : "kms:GenerateDataKeyWithoutPlaintext",
                              &ctx));
    CL_GUARD(cl_kms_usable(&m));
    CL_GUARD(cl_secmem_alloc((size_t)nb, (void **)&key));
    CL_GUARD(cl_random_bytes(key, (size_t)nb));
    CL_GUARD(cl_kms_encrypt(q->st, m.key_id, key, (size_t)nb, ctx.kv, ctx.n, &blob));
    CL_GUARD(cl_kms_set_b64(q->out, "CiphertextBlob", blob.data, blob.len));
    if (with_plaintext)
        CL_GUARD(cl_kms_emit_plaintext(q, key, (size_t)nb));
    json_object_set_new(q->out, "KeyId", json_string(m.arn));
out:
    cl_secmem_free(key);
    cl_buf_free(&blob);
    return rc;
}

static cl_err cl_kms_op_generate_random(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    int64_t nb = 0;
    bool has;
    uint8_t *r = NULL;
    CL_GUARD(cl_kms_get_int(q->in, "NumberOfBytes", 1, CL_KMS_DATA_KEY_MAX, &nb, &has));
    CL_ENSURE_D(has, CL_E_KMS_VALIDATION, "NumberOfBytes is required");
    CL_ENSURE_D(!json_object_get(q->in, "CustomKeyStoreId"), CL_E_KMS_VALIDATION, "CustomKeyStoreId is not supported");
    CL_GUARD(cl_kms_recipient(q));
    CL_GUARD(cl_secmem_alloc((size_t)nb, (void **)&r));
    CL_GUARD(cl_random_bytes(r, (size_t)nb));
    CL_GUARD(cl_kms_emit_plaintext(q, r, (size_t)nb));
out:
    cl_secmem_free(r);
    return rc;
}

/* ---- licences (docs/licensing.md): cloister extensions ---- */

/* Licences of a key are managed by its administrator: a principal of the
 * home account whom the key policy allows kms:PutKeyPolicy without an
 * attestation document. The generated policy gives that to --admin (the
 * owner) alone and denies it to the release principal (the operator); a
 * consumer is named nowhere. */
static cl_err cl_kms_licence_admin(struct cl_kms_req *q, struct cl_kms_key_meta *m, const char *op)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_kms_get_key(q, "KeyId", true, m, NULL));
    CL_ENSURE_D(!json_object_get(q->in, "Recipient"), CL_E_KMS_VALIDATION, "Recipient is not a parameter of %s", op);
    if (!cl_kms_home_caller(q))
        CL_FAIL(CL_E_KMS_ACCESS_DENIED,
                "User: %s is not authorized to perform: cloister:%s: licences are managed by the key's "
                "administrator in account %s",
                q->principal, op, cl_kms_store_account(q->st));
    rc = cl_kms_authorize(q, m, "kms:PutKeyPolicy", NULL);
    if (rc == CL_E_KMS_ACCESS_DENIED)
        CL_FAIL(CL_E_KMS_ACCESS_DENIED,
                "User: %s is not authorized to perform: cloister:%s: licences are managed only by the key's "
                "administrator (a principal the key policy allows kms:PutKeyPolicy; statement %s) on resource: %s",
                q->principal, op, q->audit.statement, m->arn);
    CL_GUARD(rc);
out:
    return rc;
}

static cl_err cl_kms_lic_hexfield(struct cl_kms_req *q, const char *name, uint8_t out[32])
{
    const char *v;
    cl_err rc = cl_kms_get_str(q->in, name, true, 64, &v);
    if (rc)
        return rc;
    if (strlen(v) != 64 || cl_hex_decode_fixed(v, 64, out, 32) != CL_OK)
        return cl_err_fail(CL_E_KMS_VALIDATION, "%s must be 64 hex digits (SHA-256)", name);
    return CL_OK;
}

static json_t *cl_kms_licence_json(const struct cl_licence *l)
{
    char cred[65], model[65];
    cl_hex_encode(l->credential_sha256, 32, cred);
    cl_hex_encode(l->model_sha256, 32, model);
    return json_pack("{s:s,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "LicenceId", l->id, "Serial",
                     (json_int_t)l->serial, "Consumer", l->consumer, "CredentialSha256", cred, "ModelSha256", model,
                     "NotBefore", (json_int_t)l->not_before, "NotAfter", (json_int_t)l->not_after, "PeriodSeconds",
                     (json_int_t)l->period_s, "MaxRequests", (json_int_t)l->max_requests, "MaxTokens",
                     (json_int_t)l->max_tokens, "RatePerMinute", (json_int_t)l->rate_per_min, "Revoked",
                     l->revoked);
}

static cl_err cl_kms_op_licence_key(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    int64_t lease = 0;
    bool has_lease;
    uint64_t cur;
    uint8_t h[32];
    char hex[65];
    struct cl_buf der;
    cl_buf_init(&der, 1024, CL_BUF_NONE);
    CL_GUARD(cl_kms_licence_admin(q, &m, "GetLicenceKey"));
    CL_GUARD(cl_kms_get_int(q->in, "LeaseSeconds", 1, CL_LICENCE_LEASE_MAX_S, &lease, &has_lease));
    CL_GUARD(cl_kms_lickey_get(q->st, m.key_id, NULL, &der, &cur));
    if (has_lease) {
        CL_GUARD(cl_kms_lickey_set_lease(q->st, m.key_id, (uint64_t)lease));
        cur = (uint64_t)lease;
    }
    CL_GUARD(cl_sha256(der.data, der.len, h));
    cl_hex_encode(h, 32, hex);
    CL_GUARD(cl_kms_set_b64(q->out, "PublicKey", der.data, der.len));
    json_object_set_new(q->out, "PublicKeySha256", json_string(hex));
    json_object_set_new(q->out, "EncryptionContextKey", json_string(CL_LICENCE_CTX_KEY));
    json_object_set_new(q->out, "LeaseSeconds", json_integer((json_int_t)cur));
    json_object_set_new(q->out, "KeyId", json_string(m.arn));
out:
    cl_buf_free(&der);
    return rc;
}

static cl_err cl_kms_lic_u64(struct cl_kms_req *q, const char *name, int64_t lo, int64_t hi, uint64_t def,
                             uint64_t *out)
{
    int64_t v;
    bool has;
    cl_err rc = cl_kms_get_int(q->in, name, lo, hi, &v, &has);
    if (rc)
        return rc;
    *out = has ? (uint64_t)v : def;
    return CL_OK;
}

/* The licence as the answer's "Licence" member. */
static cl_err cl_kms_licence_out(struct cl_kms_req *q, const struct cl_licence *l)
{
    json_t *lj = cl_kms_licence_json(l);
    if (!lj || json_object_set_new(q->out, "Licence", lj) != 0)
        return cl_err_fail(CL_E_CORE_NOMEM, "licence answer");
    return CL_OK;
}

static cl_err cl_kms_op_licence_create(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_licence l;
    const char *id, *consumer;
    memset(&l, 0, sizeof(l));
    CL_GUARD(cl_kms_licence_admin(q, &m, "CreateLicence"));
    CL_GUARD(cl_kms_get_str(q->in, "LicenceId", true, CL_LICENCE_ID_MAX, &id));
    CL_ENSURE_D(cl_licence_id_valid(id), CL_E_KMS_VALIDATION, "LicenceId must be [A-Za-z0-9._-]{1,%d}",
                CL_LICENCE_ID_MAX);
    CL_GUARD(cl_kms_get_str(q->in, "Consumer", true, CL_LICENCE_CONSUMER_MAX, &consumer));
    CL_ENSURE_D(cl_licence_consumer_valid(consumer), CL_E_KMS_VALIDATION,
                "Consumer must be 1..%d printable ASCII characters without '\"' or '\\'", CL_LICENCE_CONSUMER_MAX);
    snprintf(l.id, sizeof(l.id), "%s", id);
    snprintf(l.consumer, sizeof(l.consumer), "%s", consumer);
    CL_GUARD(cl_kms_lic_hexfield(q, "CredentialSha256", l.credential_sha256));
    CL_GUARD(cl_kms_lic_hexfield(q, "ModelSha256", l.model_sha256));
    int64_t now = q->now_ms / 1000;
    CL_GUARD(cl_kms_lic_u64(q, "NotBefore", 0, (int64_t)CL_LICENCE_TIME_MAX, (uint64_t)now, &l.not_before));
    CL_GUARD(cl_kms_lic_u64(q, "NotAfter", 1, (int64_t)CL_LICENCE_TIME_MAX, l.not_before + 365 * 86400ull,
                            &l.not_after));
    CL_ENSURE_D(l.not_after > l.not_before, CL_E_KMS_VALIDATION, "NotAfter must be after NotBefore");
    CL_GUARD(cl_kms_lic_u64(q, "PeriodSeconds", 1, (int64_t)CL_LICENCE_PERIOD_MAX, 30 * 86400, &l.period_s));
    CL_GUARD(cl_kms_lic_u64(q, "MaxRequests", 0, (int64_t)(UINT64_MAX >> 12), 0, &l.max_requests));
    CL_GUARD(cl_kms_lic_u64(q, "MaxTokens", 0, (int64_t)(UINT64_MAX >> 12), 0, &l.max_tokens));
    CL_GUARD(cl_kms_lic_u64(q, "RatePerMinute", 0, (int64_t)(UINT64_MAX >> 12), 0, &l.rate_per_min));
    l.serial = 1;
    CL_GUARD(cl_kms_licence_store(q->st, m.key_id, &l, true, now));
    CL_GUARD(cl_kms_licence_out(q, &l));
out:
    return rc;
}

/* The licence a request names (LicenceId), for the owner's principal. */
static cl_err cl_kms_licence_lookup(struct cl_kms_req *q, const char *action, struct cl_kms_key_meta *m,
                                    struct cl_licence *l)
{
    cl_err rc = CL_OK;
    const char *id;
    CL_GUARD(cl_kms_licence_admin(q, m, action));
    CL_GUARD(cl_kms_get_str(q->in, "LicenceId", true, CL_LICENCE_ID_MAX, &id));
    CL_GUARD(cl_kms_licence_get(q->st, m->key_id, id, l));
out:
    return rc;
}

static cl_err cl_kms_op_licence_revoke(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_licence l;
    CL_GUARD(cl_kms_licence_lookup(q, "RevokeLicence", &m, &l));
    if (!l.revoked) {
        l.revoked = true;
        l.serial++;
        CL_GUARD(cl_kms_licence_store(q->st, m.key_id, &l, false, q->now_ms / 1000));
    }
    CL_GUARD(cl_kms_licence_out(q, &l));
out:
    return rc;
}

static cl_err cl_kms_op_licence_describe(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_licence l;
    CL_GUARD(cl_kms_licence_lookup(q, "DescribeLicence", &m, &l));
    CL_GUARD(cl_kms_licence_out(q, &l));
out:
    return rc;
}

static void cl_kms_licence_list_cb(void *arg, const struct cl_licence *l, const uint8_t *rec, size_t n)
{
    (void)rec;
    (void)n;
    json_array_append_new((json_t *)arg, cl_kms_licence_json(l));
}

static cl_err cl_kms_op_licence_list(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    json_t *arr = json_array();
    CL_ENSURE(arr && json_object_set_new(q->out, "Licences", arr) == 0, CL_E_CORE_NOMEM);
    CL_GUARD(cl_kms_licence_admin(q, &m, "ListLicences"));
    CL_GUARD(cl_kms_licence_list(q->st, m.key_id, cl_kms_licence_list_cb, arr));
out:
    return rc;
}

static void cl_kms_op_usage_row(void *arg, const char *licence_id, uint64_t period_start, uint64_t requests,
                            uint64_t prompt_tokens, uint64_t completion_tokens, uint64_t enclaves)
{
    struct cl_kms_req *q = arg;
    struct cl_licence l;
    const char *kid = q->audit.key_id;
    bool known = cl_kms_licence_get(q->st, kid, licence_id, &l) == CL_OK;
    json_array_append_new(json_object_get(q->out, "Usage"),
                          json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "LicenceId", licence_id, "Consumer",
                                    known ? l.consumer : "", "PeriodStart", (json_int_t)period_start, "Requests",
                                    (json_int_t)requests, "PromptTokens", (json_int_t)prompt_tokens,
                                    "CompletionTokens", (json_int_t)completion_tokens, "Enclaves",
                                    (json_int_t)enclaves));
}

static void cl_kms_op_usage_event(void *arg, int64_t time, const char *chain, uint64_t report_seq, const char *kind,
                                  const char *detail)
{
    struct cl_kms_req *q = arg;
    json_array_append_new(json_object_get(q->out, "Events"),
                          json_pack("{s:I,s:s,s:I,s:s,s:s}", "Time", (json_int_t)time, "Enclave", chain,
                                    "ReportSeq", (json_int_t)report_seq, "Kind", kind, "Detail", detail));
}

static cl_err cl_kms_op_usage(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    CL_ENSURE(json_object_set_new(q->out, "Usage", json_array()) == 0 &&
                  json_object_set_new(q->out, "Events", json_array()) == 0,
              CL_E_CORE_NOMEM);
    CL_GUARD(cl_kms_licence_admin(q, &m, "GetUsage"));
    CL_GUARD(cl_kms_usage_list(q->st, m.key_id, cl_kms_op_usage_row, cl_kms_op_usage_event, q));
out:
    return rc;
}

struct cl_kms_renew_set {
    json_t *arr;
    const uint8_t *recs[CL_LICENCE_TABLE_MAX];
    size_t lens[CL_LICENCE_TABLE_MAX];
    uint8_t *copies[CL_LICENCE_TABLE_MAX];
    size_t n;
    bool overflow;
};

static void cl_kms_renew_cb(void *arg, const struct cl_licence *l, const uint8_t *rec, size_t n)
{
    struct cl_kms_renew_set *s = arg;
    (void)l;
    if (s->n == CL_LICENCE_TABLE_MAX || !(s->copies[s->n] = malloc(n))) {
        s->overflow = true;
        return;
    }
    memcpy(s->copies[s->n], rec, n);
    s->recs[s->n] = s->copies[s->n];
    s->lens[s->n] = n;
    s->n++;
}

/* The enclave's renewal: authorized exactly as the key release (kms:Decrypt
 * of the sealed model's data key, with a Recipient attestation), so key
 * state, PCRs and root pins are decided again each time. The answer is the
 * licence key, the signed set and a grant signed by the licence key that
 * names the enclave's nonce and the usage report accepted. */
static cl_err cl_kms_op_licence_renew(struct cl_kms_req *q)
{
    cl_err rc = CL_OK;
    struct cl_kms_key_meta m;
    struct cl_kms_ctx ctx;
    struct cl_buf pt, rep, der, gb;
    cl_pkey *lk = NULL, *audit = NULL;
    struct cl_licence_grant g;
    struct cl_licence_usage *u = NULL;
    struct cl_attest_user_data *ud = NULL;
    struct cl_kms_renew_set *set = calloc(1, sizeof(*set));
    uint64_t lease;
    bool has_rep;
    const char *pin = NULL;
    char event[64] = "";
    memset(&g, 0, sizeof(g));
    cl_buf_init(&pt, CL_KMS_MAX_CIPHERTEXT, CL_BUF_SECURE);
    cl_buf_init(&rep, CL_LICENCE_USAGE_MAX + 3, CL_BUF_NONE);
    cl_buf_init(&der, 1024, CL_BUF_NONE);
    cl_buf_init(&gb, CL_LICENCE_GRANT_MAX, CL_BUF_NONE);
    CL_ENSURE(set, CL_E_CORE_NOMEM);
    CL_ENSURE_D(json_object_get(q->in, "Recipient"), CL_E_KMS_VALIDATION,
                "CloisterRenewLicence requires a Recipient attestation document");
    CL_GUARD(cl_kms_lic_hexfield(q, "Nonce", g.nonce));
    CL_GUARD(cl_kms_get_b64(q->in, "UsageReport", false, 1, CL_LICENCE_USAGE_MAX, &rep, &has_rep));
    CL_GUARD(cl_kms_recipient(q));
    CL_GUARD(cl_kms_open_blob(q, "CiphertextBlob", "KeyId", "EncryptionContext", "kms:Decrypt", &m, &ctx, &pt));
    cl_buf_reset(&pt); /* the data key is not sent again: the enclave holds it */
    for (size_t i = 0; i < ctx.n; i++)
        if (!strcmp(ctx.kv[i].key, CL_LICENCE_CTX_KEY))
            pin = ctx.kv[i].value;
    CL_ENSURE_D(pin, CL_E_KMS_VALIDATION, "the encryption context has no %s: the model is not licensed",
                CL_LICENCE_CTX_KEY);
    CL_GUARD(cl_kms_lickey_get(q->st, m.key_id, &lk, &der, &lease));
    {
        cl_pkey *chk = NULL;
        rc = cl_licence_key_bind(der.data, der.len, pin, &chk);
        cl_pkey_free(chk);
        CL_ENSURE_D(rc == CL_OK, CL_E_KMS_VALIDATION, "%s differs from this key's licence key (reseal the model "
                    "with the key's PublicKeySha256)", CL_LICENCE_CTX_KEY);
    }
    if (has_rep) {
        /* The audit key is the one the Recipient document certifies. */
        uint8_t ah[32];
        char chain[65];
        ud = calloc(1, sizeof(*ud));
        u = calloc(1, sizeof(*u));
        CL_ENSURE(ud && u, CL_E_CORE_NOMEM);
        CL_ENSURE_D(cl_attest_user_data_parse(q->att.user_data, q->att.user_data_len, ud) == CL_OK,
                    CL_E_KMS_VALIDATION, "a usage report needs the enclave's user_data in the attestation document");
        CL_GUARD(cl_pkey_parse(ud->audit_key, ud->audit_key_len, &audit));
        CL_GUARD(cl_sha256(ud->audit_key, ud->audit_key_len, ah));
        cl_hex_encode(ah, 32, chain);
        rc = cl_licence_usage_verify(rep.data, rep.len, audit, u);
        if (rc != CL_OK) {
            CL_GUARD(cl_kms_usage_event(q->st, m.key_id, chain, 0, "altered",
                                        "signature does not verify with the attested audit key", q->now_ms / 1000));
            CL_FAIL(CL_E_KMS_USAGE_REPORT, "usage report altered: its signature does not verify with the attested "
                                           "audit key");
        }
        CL_GUARD(cl_kms_usage_accept(q->st, m.key_id, chain, u, rep.data, rep.len, q->now_ms / 1000, event));
        CL_GUARD(cl_sha256(rep.data, rep.len, g.report_sha256));
        g.has_report = true;
    }
    CL_GUARD(cl_kms_licence_list(q->st, m.key_id, cl_kms_renew_cb, set));
    CL_ENSURE_D(!set->overflow, CL_E_KMS_VALIDATION, "more than %d licences", CL_LICENCE_TABLE_MAX);
    json_t *arr = json_array();
    CL_ENSURE(arr && json_object_set_new(q->out, "Licences", arr) == 0, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < set->n; i++) {
        struct cl_buf b64;
        cl_buf_init(&b64, 8192, CL_BUF_NONE);
        rc = cl_b64_encode(set->recs[i], set->lens[i], CL_B64_STD, &b64);
        if (rc == CL_OK)
            json_array_append_new(arr, json_stringn((const char *)b64.data, b64.len));
        cl_buf_free(&b64);
        CL_GUARD(rc);
    }
    CL_GUARD(cl_licence_set_digest(set->recs, set->lens, set->n, g.set_sha256));
    g.lease_s = lease;
    g.time = (uint64_t)(q->now_ms / 1000);
    CL_GUARD(cl_licence_grant_sign(&g, lk, &gb));
    CL_GUARD(cl_kms_set_b64(q->out, "LicenceKey", der.data, der.len));
    CL_GUARD(cl_kms_set_b64(q->out, "Grant", gb.data, gb.len));
    json_object_set_new(q->out, "LeaseSeconds", json_integer((json_int_t)lease));
    json_object_set_new(q->out, "UsageReportEvent", json_string(event));
    json_object_set_new(q->out, "KeyId", json_string(m.arn));
out:
    if (set)
        for (size_t i = 0; i < set->n; i++)
            free(set->copies[i]);
    free(set);
    free(u);
    free(ud);
    cl_pkey_free(lk);
    cl_pkey_free(audit);
    cl_buf_free(&pt);
    cl_buf_free(&rep);
    cl_buf_free(&der);
    cl_buf_free(&gb);
    return rc;
}

struct cl_kms_opdef {
    const char *name;
    cl_err (*fn)(struct cl_kms_req *q);
};

static cl_err cl_kms_op_enable(struct cl_kms_req *q) { return cl_kms_op_state(q, "kms:EnableKey"); }
static cl_err cl_kms_op_disable(struct cl_kms_req *q) { return cl_kms_op_state(q, "kms:DisableKey"); }
static cl_err cl_kms_op_schedule(struct cl_kms_req *q) { return cl_kms_op_state(q, "kms:ScheduleKeyDeletion"); }
static cl_err cl_kms_op_cancel(struct cl_kms_req *q) { return cl_kms_op_state(q, "kms:CancelKeyDeletion"); }
static cl_err cl_kms_op_rotate(struct cl_kms_req *q) { return cl_kms_op_state(q, "kms:RotateKeyOnDemand"); }
static cl_err cl_kms_op_gdk_pt(struct cl_kms_req *q) { return cl_kms_op_gdk(q, true); }
static cl_err cl_kms_op_gdk_nopt(struct cl_kms_req *q) { return cl_kms_op_gdk(q, false); }

static const struct cl_kms_opdef cl_kms_ops[] = {
    {"CreateKey", cl_kms_op_create_key},
    {"DescribeKey", cl_kms_op_describe_key},
    {"ListKeys", cl_kms_op_list_keys},
    {"CreateAlias", cl_kms_op_create_alias},
    {"ListAliases", cl_kms_op_list_aliases},
    {"DeleteAlias", cl_kms_op_delete_alias},
    {"EnableKey", cl_kms_op_enable},
    {"DisableKey", cl_kms_op_disable},
    {"ScheduleKeyDeletion", cl_kms_op_schedule},
    {"CancelKeyDeletion", cl_kms_op_cancel},
    {"RotateKeyOnDemand", cl_kms_op_rotate},
    {"GetKeyPolicy", cl_kms_op_get_policy},
    {"PutKeyPolicy", cl_kms_op_put_policy},
    {"CreateGrant", cl_kms_op_create_grant},
    {"Encrypt", cl_kms_op_encrypt},
    {"Decrypt", cl_kms_op_decrypt},
    {"ReEncrypt", cl_kms_op_reencrypt},
    {"GenerateDataKey", cl_kms_op_gdk_pt},
    {"GenerateDataKeyWithoutPlaintext", cl_kms_op_gdk_nopt},
    {"GenerateRandom", cl_kms_op_generate_random},
    /* cloister extensions: licences (docs/licensing.md) */
    {"CloisterGetLicenceKey", cl_kms_op_licence_key},
    {"CloisterCreateLicence", cl_kms_op_licence_create},
    {"CloisterRevokeLicence", cl_kms_op_licence_revoke},
    {"CloisterDescribeLicence", cl_kms_op_licence_describe},
    {"CloisterListLicences", cl_kms_op_licence_list},
    {"CloisterGetUsage", cl_kms_op_usage},
    {"CloisterRenewLicence", cl_kms_op_licence_renew},
};

static void cl_kms_finish(struct cl_kms_req *q, struct cl_kms_response *resp, int status, const char *type,
                          const char *msg)
{
    if (type) {
        cl_kms_error_body(resp, status, type, msg);
        if (!q->decided || !strcmp(q->audit.decision, "allow"))
            snprintf(q->audit.decision, sizeof(q->audit.decision), "%s",
                     !strcmp(type, "AccessDeniedException") ? "deny" : "error");
        snprintf(q->audit.error, sizeof(q->audit.error), "%s", type);
    } else if (!q->decided) {
        snprintf(q->audit.decision, sizeof(q->audit.decision), "allow");
        snprintf(q->audit.statement, sizeof(q->audit.statement), "authenticated");
    }
    snprintf(q->audit.request_id, sizeof(q->audit.request_id), "%s", resp->request_id);
    q->audit.time_ms = q->now_ms;
    if (cl_kms_audit_append(q->st, &q->audit) != CL_OK && !type) {
        /* An unaudited success is not a success. */
        cl_kms_error_body(resp, 500, "KMSInternalException", "audit log write failed");
    }
}

static void cl_kms_run_op(struct cl_kms_req *q, const char *op, const uint8_t *body, size_t n,
                          struct cl_kms_response *resp)
{
    char msg[512];
    json_error_t jerr;
    const struct cl_kms_opdef *def = NULL;
    snprintf(q->audit.operation, sizeof(q->audit.operation), "%.40s", op);
    for (size_t i = 0; i < sizeof(cl_kms_ops) / sizeof(cl_kms_ops[0]); i++)
        if (!strcmp(cl_kms_ops[i].name, op))
            def = &cl_kms_ops[i];
    if (!def) {
        snprintf(q->audit.operation, sizeof(q->audit.operation), "unknown");
        cl_kms_finish(q, resp, 400, "UnknownOperationException", "The operation is not supported by this service");
        return;
    }
    /* Keys whose deletion window has passed are gone before anything runs. */
    size_t purged;
    if (cl_kms_key_purge_expired(q->st, q->now_ms / 1000, &purged) != CL_OK) {
        cl_kms_finish(q, resp, 500, "KMSInternalException", "key deletion sweep failed");
        return;
    }
    q->in = json_loadb((const char *)(n ? (const void *)body : "{}"), n ? n : 2,
                       JSON_REJECT_DUPLICATES, &jerr);
    if (!q->in || !json_is_object(q->in)) {
        cl_kms_finish(q, resp, 400, "SerializationException", "request body is not a JSON object");
        return;
    }
    q->out = json_object();
    cl_err rc = q->out ? def->fn(q) : CL_E_CORE_NOMEM;
    if (rc) {
        const char *type = q->err_type ? q->err_type : cl_kms_exception(rc);
        int status = !strcmp(type, "KMSInternalException") ? 500 : 400;
        if (status == 500)
            snprintf(msg, sizeof(msg), "internal error (%s)", cl_err_name(rc) ? cl_err_name(rc) : "?");
        else
            snprintf(msg, sizeof(msg), "%s", cl_err_detail()[0] ? cl_err_detail() : cl_err_str(rc));
        cl_kms_finish(q, resp, status, type, msg);
        return;
    }
    char *s = json_dumps(q->out, JSON_COMPACT);
    resp->status = 200;
    cl_buf_reset(&resp->body);
    if (!s || cl_buf_append_str(&resp->body, s) != CL_OK) {
        cl_kms_finish(q, resp, 500, "KMSInternalException", "response encoding");
    } else {
        cl_kms_finish(q, resp, 200, NULL, NULL);
    }
    if (s) {
        cl_wipe(s, strlen(s));
        free(s);
    }
}

static void cl_kms_req_init(struct cl_kms_req *q, const struct cl_kms_server_config *cfg,
                            struct cl_kms_response *resp)
{
    memset(q, 0, sizeof(*q));
    q->cfg = cfg;
    q->st = cfg->store;
    q->now_ms = cfg->now_ms ? cfg->now_ms() : cl_kms_real_now_ms();
    cl_kms_new_request_id(resp->request_id);
}

/* jansson frees strings without wiping: clear key-bearing fields first. */
static void cl_kms_wipe_field(json_t *o, const char *name)
{
    json_t *v = o ? json_object_get(o, name) : NULL;
    if (json_is_string(v))
        cl_wipe((void *)json_string_value(v), json_string_length(v));
}

static void cl_kms_req_done(struct cl_kms_req *q)
{
    cl_kms_wipe_field(q->in, "Plaintext");
    cl_kms_wipe_field(q->out, "Plaintext");
    json_decref(q->in);
    json_decref(q->out);
    cl_wipe(&q->att, sizeof(q->att));
}

void cl_kms_handle_op(const struct cl_kms_server_config *cfg, const char *principal_arn, const char *op,
                      const uint8_t *body, size_t n, struct cl_kms_response *resp)
{
    struct cl_kms_req q;
    cl_kms_req_init(&q, cfg, resp);
    q.principal = principal_arn;
    snprintf(q.audit.principal, sizeof(q.audit.principal), "%s", principal_arn);
    cl_kms_run_op(&q, op, body, n, resp);
    cl_kms_req_done(&q);
}

static bool cl_kms_header_is(const struct cl_sigv4_header *h, const char *v)
{
    size_t n = strlen(v);
    return h && h->value_len >= n && !strncasecmp(h->value, v, n) &&
           (h->value_len == n || h->value[n] == ';' || h->value[n] == ' ');
}

void cl_kms_handle_http(const struct cl_kms_server_config *cfg, const struct cl_sigv4_request *req,
                        struct cl_kms_response *resp)
{
    struct cl_kms_req q;
    char secret[CL_KMS_SECRET_LEN + 1] = {0};
    char arn[CL_KMS_ARN_MAX];
    char op[64];
    char msg[512];
    cl_kms_req_init(&q, cfg, resp);
    snprintf(q.audit.operation, sizeof(q.audit.operation), "unknown");

    const struct cl_sigv4_header *tgt = cl_sigv4_find_header(req, "x-amz-target");
    const struct cl_sigv4_header *ct = cl_sigv4_find_header(req, "content-type");
    const struct cl_sigv4_header *az = cl_sigv4_find_header(req, "authorization");
    if (strcmp(req->method, "POST") || (req->path && strcmp(req->path, "/") && *req->path)) {
        cl_kms_finish(&q, resp, 404, "UnknownOperationException", "only POST / is served");
        goto done;
    }
    if (!tgt || tgt->value_len <= strlen(CL_KMS_TARGET_PREFIX) || tgt->value_len >= sizeof(op) + 13 ||
        strncmp(tgt->value, CL_KMS_TARGET_PREFIX, strlen(CL_KMS_TARGET_PREFIX))) {
        cl_kms_finish(&q, resp, 400, "UnknownOperationException", "X-Amz-Target must be TrentService.<Operation>");
        goto done;
    }
    size_t oplen = tgt->value_len - strlen(CL_KMS_TARGET_PREFIX);
    if (oplen >= sizeof(op)) {
        cl_kms_finish(&q, resp, 400, "UnknownOperationException", "operation name too long");
        goto done;
    }
    memcpy(op, tgt->value + strlen(CL_KMS_TARGET_PREFIX), oplen);
    op[oplen] = 0;
    for (size_t i = 0; i < oplen; i++)
        if (!isalnum((unsigned char)op[i]))
            op[i] = '_';
    snprintf(q.audit.operation, sizeof(q.audit.operation), "%.40s", op);
    if (!cl_kms_header_is(ct, "application/x-amz-json-1.1") && !cl_kms_header_is(ct, "application/x-amz-json-1.0")) {
        cl_kms_finish(&q, resp, 400, "SerializationException",
                      "Content-Type must be application/x-amz-json-1.1");
        goto done;
    }
    if (!az) {
        cl_kms_finish(&q, resp, 400, "MissingAuthenticationTokenException", "Missing Authentication Token");
        goto done;
    }
    struct cl_sigv4_authz a;
    if (cl_sigv4_parse_authz(az->value, az->value_len, &a) != CL_OK) {
        snprintf(msg, sizeof(msg), "Authorization header is malformed: %s", cl_err_detail());
        cl_kms_finish(&q, resp, 400, "IncompleteSignatureException", msg);
        goto done;
    }
    snprintf(q.audit.principal, sizeof(q.audit.principal), "unauthenticated:%.100s", a.access_key);
    /* The operation must be covered by the signature, or a captured
     * GenerateDataKeyWithoutPlaintext could be replayed as GenerateDataKey. */
    {
        bool signed_target = false;
        const char *p = a.signed_headers;
        while (*p) {
            size_t l = strcspn(p, ";");
            if (l == 12 && !strncmp(p, "x-amz-target", 12))
                signed_target = true;
            p += l + (p[l] == ';');
        }
        if (!signed_target) {
            cl_kms_finish(&q, resp, 400, "IncompleteSignatureException", "X-Amz-Target must be a signed header");
            goto done;
        }
    }
    if (cl_kms_user_lookup(q.st, a.access_key, secret, arn) != CL_OK) {
        cl_kms_finish(&q, resp, 400, "UnrecognizedClientException", "The security token included in the request is "
                                                                   "invalid.");
        goto done;
    }
    cl_err rc = cl_sigv4_verify(req, &a, secret, strlen(secret), cl_kms_store_region(q.st), "kms", q.now_ms / 1000,
                                cfg->skew_s > 0 ? cfg->skew_s : CL_SIGV4_DEFAULT_SKEW_S);
    cl_wipe(secret, sizeof(secret));
    if (rc == CL_E_NET_SIGV4_EXPIRED) {
        char nowd[CL_SIGV4_DATE_LEN + 1];
        cl_sigv4_format_date(q.now_ms / 1000, nowd);
        const struct cl_sigv4_header *dh = cl_sigv4_find_header(req, "x-amz-date");
        snprintf(msg, sizeof(msg), "Signature expired: %.16s is now earlier than %s (%s - 5 min.)",
                 dh ? dh->value : "?", nowd, nowd);
        cl_kms_finish(&q, resp, 400, "InvalidSignatureException", msg);
        goto done;
    }
    if (rc == CL_E_NET_SIGV4_MISMATCH) {
        cl_kms_finish(&q, resp, 400, "InvalidSignatureException",
                      "The request signature we calculated does not match the signature you provided. Check your AWS "
                      "Secret Access Key and signing method. Consult the service documentation for details.");
        goto done;
    }
    if (rc) {
        snprintf(msg, sizeof(msg), "%s", cl_err_detail());
        cl_kms_finish(&q, resp, 400,
                      rc == CL_E_NET_SIGV4_SCOPE ? "InvalidSignatureException" : "IncompleteSignatureException", msg);
        goto done;
    }
    snprintf(q.audit.principal, sizeof(q.audit.principal), "%s", arn);
    q.principal = arn;
    cl_kms_run_op(&q, op, req->body, req->body_len, resp);
done:
    cl_kms_req_done(&q);
}
