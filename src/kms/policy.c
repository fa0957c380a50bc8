/* IAM-style key policy parser and evaluator (jansson). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cloister/clock.h"
#include "cloister/encode.h"
#include "cloister/policy.h"
#include "cloister/sigv4.h"

struct cl_policy {
    json_t *root;
    json_t *stmts; /* array (a single statement object is wrapped) */
};

enum cl_pol_op {
    CL_POL_OP_NONE = 0,
    CL_POL_OP_STR_EQ,
    CL_POL_OP_STR_NE,
    CL_POL_OP_STR_EQ_IC,
    CL_POL_OP_STR_NE_IC,
    CL_POL_OP_STR_LIKE,
    CL_POL_OP_STR_NOT_LIKE,
    CL_POL_OP_DATE_EQ,
    CL_POL_OP_DATE_NE,
    CL_POL_OP_DATE_LT,
    CL_POL_OP_DATE_LE,
    CL_POL_OP_DATE_GT,
    CL_POL_OP_DATE_GE,
    CL_POL_OP_BOOL,
    CL_POL_OP_NULL,
    CL_POL_OP_COUNT
};

static const struct {
    const char *name;
    enum cl_pol_op op;
    bool negated;
} cl_pol_ops[] = {
    {"StringEquals", CL_POL_OP_STR_EQ, false},
    {"StringNotEquals", CL_POL_OP_STR_NE, true},
    {"StringEqualsIgnoreCase", CL_POL_OP_STR_EQ_IC, false},
    {"StringNotEqualsIgnoreCase", CL_POL_OP_STR_NE_IC, true},
    {"StringLike", CL_POL_OP_STR_LIKE, false},
    {"StringNotLike", CL_POL_OP_STR_NOT_LIKE, true},
    {"DateEquals", CL_POL_OP_DATE_EQ, false},
    {"DateNotEquals", CL_POL_OP_DATE_NE, true},
    {"DateLessThan", CL_POL_OP_DATE_LT, false},
    {"DateLessThanEquals", CL_POL_OP_DATE_LE, false},
    {"DateGreaterThan", CL_POL_OP_DATE_GT, false},
    {"DateGreaterThanEquals", CL_POL_OP_DATE_GE, false},
    {"Bool", CL_POL_OP_BOOL, false},
    {"Null", CL_POL_OP_NULL, false},
};

enum cl_pol_set { CL_POL_SET_NONE = 0, CL_POL_SET_ANY, CL_POL_SET_ALL, CL_POL_SET_COUNT };

struct cl_pol_opspec {
    enum cl_pol_op op;
    bool negated;
    bool if_exists;
    enum cl_pol_set set;
};

static bool cl_pol_parse_op(const char *name, struct cl_pol_opspec *o)
{
    memset(o, 0, sizeof(*o));
    if (!strncmp(name, "ForAnyValue:", 12)) {
        o->set = CL_POL_SET_ANY;
        name += 12;
    } else if (!strncmp(name, "ForAllValues:", 13)) {
        o->set = CL_POL_SET_ALL;
        name += 13;
    }
    size_t n = strlen(name);
    if (n > 8 && !strcmp(name + n - 8, "IfExists")) {
        o->if_exists = true;
        n -= 8;
    }
    for (size_t i = 0; i < sizeof(cl_pol_ops) / sizeof(cl_pol_ops[0]); i++) {
        if (strlen(cl_pol_ops[i].name) == n && !strncmp(cl_pol_ops[i].name, name, n)) {
            o->op = cl_pol_ops[i].op;
            o->negated = cl_pol_ops[i].negated;
            if (o->op == CL_POL_OP_NULL && (o->if_exists || o->set))
                return false;
            return true;
        }
    }
    return false;
}

static bool cl_pol_digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

cl_err cl_policy_parse_time(const char *s, int64_t *out)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 40)
        return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date value length");
    bool all_digits = true;
    for (size_t i = 0; i < n; i++)
        all_digits &= isdigit((unsigned char)s[i]) != 0;
    if (all_digits) {
        if (n > 12)
            return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "epoch date too large");
        int64_t v = 0;
        for (size_t i = 0; i < n; i++)
            v = v * 10 + (s[i] - '0');
        *out = v;
        return CL_OK;
    }
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h = 0, mi = 0, se = 0;
    if (n < 10 || s[4] != '-' || s[7] != '-' || !cl_pol_digits(s, 4, &y) || !cl_pol_digits(s + 5, 2, &mo) ||
        !cl_pol_digits(s + 8, 2, &d))
        return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date format (want YYYY-MM-DD[THH:MM:SS[.fff]Z])");
    if (n > 10) {
        if (n < 20 || s[10] != 'T' || s[13] != ':' || s[16] != ':' || !cl_pol_digits(s + 11, 2, &h) ||
            !cl_pol_digits(s + 14, 2, &mi) || !cl_pol_digits(s + 17, 2, &se))
            return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date time part");
        size_t i = 19;
        if (s[i] == '.') {
            i++;
            size_t f = i;
            while (i < n && isdigit((unsigned char)s[i]))
                i++;
            if (i == f)
                return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date fraction");
        }
        if (i + 1 != n || s[i] != 'Z')
            return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date must end in Z");
    }
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "date range");
    *out = cl_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    return CL_OK;
}

/* Condition values: a scalar or an array of scalars. Scalars are strings,
 * booleans or integers, compared as their string form. */
static bool cl_pol_scalar(const json_t *v, char *buf, size_t n, const char **out)
{
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return true;
    }
    if (json_is_true(v) || json_is_false(v)) {
        *out = json_is_true(v) ? "true" : "false";
        return true;
    }
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        *out = buf;
        return true;
    }
    return false;
}

static cl_err cl_pol_check_strlist(const json_t *v, const char *what, size_t idx, bool allow_empty)
{
    if (json_is_string(v))
        return json_string_length(v) > 0 ? CL_OK
                                         : cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "statement %zu %s is empty", idx,
                                                       what);
    if (!json_is_array(v) || (!allow_empty && json_array_size(v) == 0))
        return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "statement %zu %s must be a string or list", idx, what);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e) || json_string_length(e) == 0)
            return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "statement %zu %s[%zu] must be a string", idx, what, i);
    }
    return CL_OK;
}

static cl_err cl_pol_validate_stmt(const json_t *s, size_t idx)
{
    cl_err rc = CL_OK;
    const char *k;
    json_t *v;
    CL_ENSURE_D(json_is_object(s), CL_E_KMS_POLICY_MALFORMED, "statement %zu is not an object", idx);
    json_object_foreach((json_t *)s, k, v) {
        if (!strcmp(k, "Sid")) {
            CL_ENSURE_D(json_is_string(v) && json_string_length(v) <= 64, CL_E_KMS_POLICY_MALFORMED,
                        "statement %zu Sid must be a string of at most 64 chars", idx);
        } else if (!strcmp(k, "Effect")) {
            CL_ENSURE_D(json_is_string(v) &&
                            (!strcmp(json_string_value(v), "Allow") || !strcmp(json_string_value(v), "Deny")),
                        CL_E_KMS_POLICY_MALFORMED, "statement %zu Effect must be Allow or Deny", idx);
        } else if (!strcmp(k, "Principal")) {
            if (json_is_string(v)) {
                CL_ENSURE_D(!strcmp(json_string_value(v), "*"), CL_E_KMS_POLICY_MALFORMED,
                            "statement %zu Principal string must be \"*\"", idx);
            } else {
                CL_ENSURE_D(json_is_object(v) && json_object_size(v) > 0, CL_E_KMS_POLICY_MALFORMED,
                            "statement %zu Principal must be \"*\" or an object", idx);
                const char *pk;
                json_t *pv;
                json_object_foreach(v, pk, pv) {
                    CL_ENSURE_D(!strcmp(pk, "AWS") || !strcmp(pk, "Service"), CL_E_KMS_POLICY_MALFORMED,
                                "statement %zu Principal type must be AWS or Service", idx);
                    CL_GUARD(cl_pol_check_strlist(pv, "Principal", idx, false));
                }
            }
        } else if (!strcmp(k, "Action") || !strcmp(k, "Resource")) {
            CL_GUARD(cl_pol_check_strlist(v, k, idx, false));
        } else if (!strcmp(k, "Condition")) {
            CL_ENSURE_D(json_is_object(v), CL_E_KMS_POLICY_MALFORMED, "statement %zu Condition must be an object",
                        idx);
            const char *opn;
            json_t *blk;
            json_object_foreach(v, opn, blk) {
                struct cl_pol_opspec o;
                CL_ENSURE_D(cl_pol_parse_op(opn, &o), CL_E_KMS_POLICY_MALFORMED,
                            "statement %zu unsupported condition operator", idx);
                CL_ENSURE_D(json_is_object(blk) && json_object_size(blk) > 0, CL_E_KMS_POLICY_MALFORMED,
                            "statement %zu condition block must be a non-empty object", idx);
                const char *ck;
                json_t *cv;
                json_object_foreach(blk, ck, cv) {
                    CL_ENSURE_D(strlen(ck) > 0 && strlen(ck) <= 256, CL_E_KMS_POLICY_MALFORMED,
                                "statement %zu condition key length", idx);
                    size_t nv = json_is_array(cv) ? json_array_size(cv) : 1;
                    CL_ENSURE_D(nv > 0 && nv <= 256, CL_E_KMS_POLICY_MALFORMED,
                                "statement %zu condition value count", idx);
                    for (size_t i = 0; i < nv; i++) {
                        const json_t *e = json_is_array(cv) ? json_array_get(cv, i) : cv;
                        char nb[32];
                        const char *sv;
                        CL_ENSURE_D(cl_pol_scalar(e, nb, sizeof(nb), &sv), CL_E_KMS_POLICY_MALFORMED,
                                    "statement %zu condition value must be a string, bool or integer", idx);
                        if (o.op >= CL_POL_OP_DATE_EQ && o.op <= CL_POL_OP_DATE_GE) {
                            int64_t t;
                            CL_GUARD(cl_policy_parse_time(sv, &t));
                        }
                        if (o.op == CL_POL_OP_NULL || o.op == CL_POL_OP_BOOL)
                            CL_ENSURE_D(!strcmp(sv, "true") || !strcmp(sv, "false"), CL_E_KMS_POLICY_MALFORMED,
                                        "statement %zu Bool/Null value must be true or false", idx);
                    }
                }
            }
        } else if (!strcmp(k, "NotAction") || !strcmp(k, "NotResource") || !strcmp(k, "NotPrincipal")) {
            CL_FAIL(CL_E_KMS_POLICY_MALFORMED, "statement %zu uses an unsupported Not* element", idx);
        } else {
            CL_FAIL(CL_E_KMS_POLICY_MALFORMED, "statement %zu has an unknown element", idx);
        }
    }
    CL_ENSURE_D(json_object_get(s, "Effect"), CL_E_KMS_POLICY_MALFORMED, "statement %zu lacks Effect", idx);
    CL_ENSURE_D(json_object_get(s, "Principal"), CL_E_KMS_POLICY_MALFORMED, "statement %zu lacks Principal", idx);
    CL_ENSURE_D(json_object_get(s, "Action"), CL_E_KMS_POLICY_MALFORMED, "statement %zu lacks Action", idx);
    CL_ENSURE_D(json_object_get(s, "Resource"), CL_E_KMS_POLICY_MALFORMED, "statement %zu lacks Resource", idx);
out:
    return rc;
}

cl_err cl_policy_parse(const char *json, size_t len, struct cl_policy **out)
{
    cl_err rc = CL_OK;
    struct cl_policy *p = NULL;
    json_error_t jerr;
    CL_ENSURE_D(json && len > 0, CL_E_KMS_POLICY_MALFORMED, "policy is empty");
    CL_ENSURE_D(len <= CL_POLICY_MAX_BYTES, CL_E_KMS_POLICY_LIMIT, "policy %zu bytes > %d", len,
                CL_POLICY_MAX_BYTES);
    p = calloc(1, sizeof(*p));
    CL_ENSURE(p, CL_E_CORE_NOMEM);
    p->root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    CL_ENSURE_D(p->root, CL_E_KMS_POLICY_MALFORMED, "JSON syntax at line %d column %d", jerr.line, jerr.column);
    CL_ENSURE_D(json_is_object(p->root), CL_E_KMS_POLICY_MALFORMED, "policy is not an object");
    const char *k;
    json_t *v;
    json_object_foreach(p->root, k, v) {
        if (!strcmp(k, "Version")) {
            CL_ENSURE_D(json_is_string(v) && (!strcmp(json_string_value(v), "2012-10-17") ||
                                              !strcmp(json_string_value(v), "2008-10-17")),
                        CL_E_KMS_POLICY_MALFORMED, "Version must be 2012-10-17 or 2008-10-17");
        } else if (!strcmp(k, "Id")) {
            CL_ENSURE_D(json_is_string(v), CL_E_KMS_POLICY_MALFORMED, "Id must be a string");
        } else if (strcmp(k, "Statement")) {
            CL_FAIL(CL_E_KMS_POLICY_MALFORMED, "unknown top-level element");
        }
    }
    v = json_object_get(p->root, "Statement");
    CL_ENSURE_D(v, CL_E_KMS_POLICY_MALFORMED, "Statement missing");
    if (json_is_object(v)) {
        p->stmts = json_array();
        CL_ENSURE(p->stmts, CL_E_CORE_NOMEM);
        CL_ENSURE(json_array_append(p->stmts, v) == 0, CL_E_CORE_NOMEM);
    } else {
        CL_ENSURE_D(json_is_array(v), CL_E_KMS_POLICY_MALFORMED, "Statement must be an object or a list");
        p->stmts = json_incref(v);
    }
    CL_ENSURE_D(json_array_size(p->stmts) > 0, CL_E_KMS_POLICY_MALFORMED, "Statement list is empty");
    CL_ENSURE_D(json_array_size(p->stmts) <= CL_POLICY_MAX_STATEMENTS, CL_E_KMS_POLICY_LIMIT, "statements > %d",
                CL_POLICY_MAX_STATEMENTS);
    for (size_t i = 0; i < json_array_size(p->stmts); i++)
        CL_GUARD(cl_pol_validate_stmt(json_array_get(p->stmts, i), i));
    *out = p;
    p = NULL;
out:
    cl_policy_free(p);
    return rc;
}

void cl_policy_free(struct cl_policy *p)
{
    if (!p)
        return;
    json_decref(p->stmts);
    json_decref(p->root);
    free(p);
}

/* Glob with '*' and '?', optionally case-insensitive; iterative with one
 * backtrack point, so linear-ish and never recursive. */
static bool cl_pol_glob(const char *pat, const char *s, bool icase)
{
    const char *star = NULL, *ss = NULL;
    while (*s) {
        char pc = *pat, sc = *s;
        if (icase) {
            pc = (char)tolower((unsigned char)pc);
            sc = (char)tolower((unsigned char)sc);
        }
        if (*pat == '*') {
            star = pat++;
            ss = s;
        } else if (*pat && (*pat == '?' || pc == sc)) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++ss;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == 0;
}

static bool cl_pol_list_any(const json_t *v, bool (*match)(const char *pat, const void *arg), const void *arg)
{
    if (json_is_string(v))
        return match(json_string_value(v), arg);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (match(json_string_value(e), arg))
            return true;
    }
    return false;
}

static bool cl_pol_match_action(const char *pat, const void *arg) { return cl_pol_glob(pat, arg, true); }
static bool cl_pol_match_resource(const char *pat, const void *arg) { return cl_pol_glob(pat, arg, false); }

static bool cl_pol_match_aws_principal(const char *pat, const void *arg)
{
    const struct cl_policy_ctx *c = arg;
    if (!strcmp(pat, "*"))
        return true;
    if (!c->principal_arn)
        return false;
    if (!strcmp(pat, c->principal_arn))
        return true;
    /* An account principal (bare 12-digit id or arn:aws:iam::ACCOUNT:root)
     * is that account's root identity and nothing more. AWS delegates it
     * to the account's IAM policies; cloister-kms has no IAM layer, so it
     * never stands for the account's other principals (which would make
     * the operator an administrator of any key that names its account). */
    if (strlen(pat) == 12 && strspn(pat, "0123456789") == 12) {
        char root[64];
        snprintf(root, sizeof(root), "arn:aws:iam::%s:root", pat);
        return !strcmp(root, c->principal_arn);
    }
    return false;
}

static bool cl_pol_principal(const json_t *p, const struct cl_policy_ctx *c)
{
    if (json_is_string(p))
        return true; /* validated to be "*" */
    const json_t *aws = json_object_get(p, "AWS");
    return aws && cl_pol_list_any(aws, cl_pol_match_aws_principal, c);
}

/* The request's values for a condition key. */
struct cl_pol_vals {
    const char **v;
    size_t n;
    bool present;
    char hex[2 * CL_POLICY_PCR_LEN + 1];
    char num[32];
    const char *one[1];
};

static bool cl_pol_prefix_ic(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncasecmp(s, prefix, n))
        return false;
    *rest = s + n;
    return true;
}

static cl_err cl_pol_lookup(const struct cl_policy_ctx *c, const char *key, struct cl_pol_vals *out)
{
    const char *rest;
    out->n = 0;
    out->present = false;
    out->v = out->one;
    if (!strcasecmp(key, "aws:PrincipalArn")) {
        if (c->principal_arn)
            out->one[out->n++] = c->principal_arn;
    } else if (!strcasecmp(key, "kms:CallerAccount")) {
        if (c->caller_account)
            out->one[out->n++] = c->caller_account;
    } else if (!strcasecmp(key, "aws:CurrentTime") || !strcasecmp(key, "aws:EpochTime")) {
        snprintf(out->num, sizeof(out->num), "%lld", (long long)c->now);
        out->one[out->n++] = out->num;
    } else if (!strcasecmp(key, "kms:EncryptionContextKeys")) {
        if (c->n_enc_ctx) {
            out->v = calloc(c->n_enc_ctx, sizeof(*out->v));
            if (!out->v)
                return CL_E_CORE_NOMEM;
            for (size_t i = 0; i < c->n_enc_ctx; i++)
                out->v[out->n++] = c->enc_ctx[i].key;
        }
    } else if (cl_pol_prefix_ic(key, "kms:EncryptionContext:", &rest)) {
        for (size_t i = 0; i < c->n_enc_ctx; i++)
            if (!strcmp(c->enc_ctx[i].key, rest)) {
                out->one[out->n++] = c->enc_ctx[i].value;
                break;
            }
    } else if (!strcasecmp(key, "kms:RecipientAttestation:ImageSha384")) {
        if (c->recipient) {
            cl_hex_encode(c->recipient->image_sha384, CL_POLICY_PCR_LEN, out->hex);
            out->one[out->n++] = out->hex;
        }
    } else if (cl_pol_prefix_ic(key, "kms:RecipientAttestation:PCR", &rest)) {
        unsigned idx = 0;
        size_t l = strlen(rest);
        if (c->recipient && l >= 1 && l <= 2 && cl_pol_digits(rest, l, &idx) && (l == 1 || rest[0] != '0') &&
            idx < CL_POLICY_PCR_COUNT && (c->recipient->pcr_mask >> idx & 1)) {
            cl_hex_encode(c->recipient->pcrs[idx], CL_POLICY_PCR_LEN, out->hex);
            out->one[out->n++] = out->hex;
        }
    } else if (!strcasecmp(key, CL_POLICY_DEBUG_KEY)) {
        if (c->recipient)
            out->one[out->n++] = c->recipient->debug ? "true" : "false";
    } else if (!strcasecmp(key, CL_POLICY_ROOT_KEY)) {
        if (c->recipient && c->recipient->has_root) {
            cl_hex_encode(c->recipient->root_sha256, CL_POLICY_ROOT_SHA256_LEN, out->hex);
            out->one[out->n++] = out->hex;
        }
    }
    out->present = out->n > 0;
    return CL_OK;
}

static void cl_pol_vals_free(struct cl_pol_vals *v)
{
    if (v->v != v->one)
        free(v->v);
}

/* One request value against one policy value, with the positive form of the
 * operator (negation is applied by the caller). */
static bool cl_pol_cmp1(enum cl_pol_op op, const char *req, const char *pol)
{
    int64_t a, b;
    switch (op) {
    case CL_POL_OP_STR_EQ:
    case CL_POL_OP_STR_NE:
    case CL_POL_OP_BOOL:
        return !strcmp(req, pol);
    case CL_POL_OP_STR_EQ_IC:
    case CL_POL_OP_STR_NE_IC:
        return !strcasecmp(req, pol);
    case CL_POL_OP_STR_LIKE:
    case CL_POL_OP_STR_NOT_LIKE:
        return cl_pol_glob(pol, req, false);
    case CL_POL_OP_DATE_EQ:
    case CL_POL_OP_DATE_NE:
    case CL_POL_OP_DATE_LT:
    case CL_POL_OP_DATE_LE:
    case CL_POL_OP_DATE_GT:
    case CL_POL_OP_DATE_GE:
        if (cl_policy_parse_time(req, &a) != CL_OK || cl_policy_parse_time(pol, &b) != CL_OK)
            return false;
        switch (op) {
        case CL_POL_OP_DATE_LT: return a < b;
        case CL_POL_OP_DATE_LE: return a <= b;
        case CL_POL_OP_DATE_GT: return a > b;
        case CL_POL_OP_DATE_GE: return a >= b;
        default: return a == b;
        }
    default:
        return false;
    }
}

/* Does one request value match any of the policy values (positive sense)? */
static bool cl_pol_value_matches(enum cl_pol_op op, const char *req, const json_t *pv)
{
    size_t n = json_is_array(pv) ? json_array_size(pv) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_is_array(pv) ? json_array_get(pv, i) : pv;
        char nb[32];
        const char *s;
        if (cl_pol_scalar(e, nb, sizeof(nb), &s) && cl_pol_cmp1(op, req, s))
            return true;
    }
    return false;
}

static cl_err cl_pol_condition_key(const struct cl_pol_opspec *o, const char *key, const json_t *pv,
                                   const struct cl_policy_ctx *c, bool *result)
{
    struct cl_pol_vals vals;
    memset(&vals, 0, sizeof(vals));
    cl_err rc = cl_pol_lookup(c, key, &vals);
    if (rc)
        return rc;
    bool r;
    if (o->op == CL_POL_OP_NULL) {
        /* "true": the key must be absent; "false": present. */
        bool want_absent = cl_pol_value_matches(CL_POL_OP_STR_EQ, "true", pv);
        r = want_absent ? !vals.present : vals.present;
    } else if (o->set == CL_POL_SET_ANY) {
        r = false;
        for (size_t i = 0; i < vals.n && !r; i++) {
            bool m = cl_pol_value_matches(o->op, vals.v[i], pv);
            r = o->negated ? !m : m;
        }
    } else if (o->set == CL_POL_SET_ALL) {
        r = true; /* vacuously true for an absent or empty key, as on AWS */
        for (size_t i = 0; i < vals.n && r; i++) {
            bool m = cl_pol_value_matches(o->op, vals.v[i], pv);
            r = o->negated ? !m : m;
        }
    } else if (!vals.present) {
        /* Missing key: positive operators fail, negated ones hold;
         * ...IfExists holds. This is why a Recipient condition fails
         * without a Recipient while a Deny on its negation applies. */
        r = o->if_exists || o->negated;
    } else {
        bool m = false;
        for (size_t i = 0; i < vals.n && !m; i++)
            m = cl_pol_value_matches(o->op, vals.v[i], pv);
        r = o->negated ? !m : m;
    }
    cl_pol_vals_free(&vals);
    *result = r;
    return CL_OK;
}

static cl_err cl_pol_conditions(const json_t *cond, const struct cl_policy_ctx *c, bool *result)
{
    const char *opn, *ck;
    json_t *blk, *cv;
    *result = true;
    if (!cond)
        return CL_OK;
    json_object_foreach((json_t *)cond, opn, blk) {
        struct cl_pol_opspec o;
        if (!cl_pol_parse_op(opn, &o))
            return cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "condition operator");
        json_object_foreach(blk, ck, cv) {
            bool r;
            cl_err rc = cl_pol_condition_key(&o, ck, cv, c, &r);
            if (rc)
                return rc;
            if (!r) {
                *result = false;
                return CL_OK;
            }
        }
    }
    return CL_OK;
}

static bool cl_pol_mentions(const json_t *cond, const char *key)
{
    const char *opn, *ck;
    json_t *blk, *cv;
    if (!cond)
        return false;
    json_object_foreach((json_t *)cond, opn, blk) {
        json_object_foreach(blk, ck, cv) {
            if (!strcasecmp(ck, key))
                return true;
        }
    }
    return false;
}

cl_err cl_policy_evaluate(const struct cl_policy *p, const struct cl_policy_ctx *ctx, struct cl_policy_decision *out)
{
    cl_err rc = CL_OK;
    struct cl_policy_decision d;
    memset(&d, 0, sizeof(d));
    d.effect = CL_POLICY_DENY;
    bool allowed = false;
    CL_ENSURE_D(p && ctx && ctx->action && ctx->resource, CL_E_CORE_INVALID_ARG, "policy context incomplete");
    for (size_t i = 0; i < json_array_size(p->stmts); i++) {
        const json_t *s = json_array_get(p->stmts, i);
        bool deny = !strcmp(json_string_value(json_object_get(s, "Effect")), "Deny");
        if (!deny && allowed)
            continue; /* already allowed; only a Deny can change the outcome */
        if (!cl_pol_principal(json_object_get(s, "Principal"), ctx))
            continue;
        if (!cl_pol_list_any(json_object_get(s, "Action"), cl_pol_match_action, ctx->action))
            continue;
        if (!cl_pol_list_any(json_object_get(s, "Resource"), cl_pol_match_resource, ctx->resource))
            continue;
        const json_t *cond = json_object_get(s, "Condition");
        bool ok;
        CL_GUARD(cl_pol_conditions(cond, ctx, &ok));
        if (!ok)
            continue;
        const json_t *sid = json_object_get(s, "Sid");
        char name[sizeof(d.statement)];
        if (sid && json_string_length(sid) > 0)
            snprintf(name, sizeof(name), "%s", json_string_value(sid));
        else
            snprintf(name, sizeof(name), "#%zu", i);
        if (deny) {
            d.effect = CL_POLICY_DENY;
            d.explicit_deny = true;
            memcpy(d.statement, name, sizeof(name));
            break;
        }
        /* A debug document is released only by a statement that says so. */
        if (ctx->recipient && ctx->recipient->debug && !cl_pol_mentions(cond, CL_POLICY_DEBUG_KEY))
            continue;
        /* With several trusted roots, whoever holds any one of them could
         * mint a document with the pinned PCRs: only a statement that names
         * the verifying root may release. */
        if (ctx->recipient && ctx->recipient->require_root_pin && !cl_pol_mentions(cond, CL_POLICY_ROOT_KEY)) {
            if (!d.unpinned_root) {
                d.unpinned_root = true;
                memcpy(d.unpinned_statement, name, sizeof(name));
            }
            continue;
        }
        allowed = true;
        d.effect = CL_POLICY_ALLOW;
        memcpy(d.statement, name, sizeof(name));
    }
    if (d.effect == CL_POLICY_ALLOW)
        d.unpinned_root = false;
    *out = d;
out:
    return rc;
}

/* ---- static checks used by PutKeyPolicy and the policy generator ---- */

static bool cl_pol_is_attest_key(const char *k)
{
    const char *rest;
    return cl_pol_prefix_ic(k, "kms:RecipientAttestation:", &rest) || !strcasecmp(k, CL_POLICY_DEBUG_KEY) ||
           !strcasecmp(k, CL_POLICY_ROOT_KEY);
}

/* Does one condition entry hold when its key is absent from the request? */
static bool cl_pol_holds_when_absent(const struct cl_pol_opspec *o, const json_t *pv)
{
    if (o->op == CL_POL_OP_NULL)
        return cl_pol_value_matches(CL_POL_OP_STR_EQ, "true", pv);
    if (o->set == CL_POL_SET_ANY)
        return false;
    if (o->set == CL_POL_SET_ALL)
        return true;
    return o->if_exists || o->negated;
}

/* For a request without attestation: may the statement's conditions hold
 * (other keys assumed satisfiable), and do they certainly hold (every
 * entry is on an attestation key and holds when absent)? */
static void cl_pol_unattested(const json_t *cond, bool *may, bool *certain)
{
    const char *opn, *ck;
    json_t *blk, *cv;
    *may = true;
    *certain = true;
    if (!cond)
        return;
    json_object_foreach((json_t *)cond, opn, blk) {
        struct cl_pol_opspec o;
        if (!cl_pol_parse_op(opn, &o)) {
            *may = *certain = false;
            return;
        }
        json_object_foreach(blk, ck, cv) {
            if (!cl_pol_is_attest_key(ck)) {
                *certain = false;
                continue;
            }
            if (!cl_pol_holds_when_absent(&o, cv))
                *may = *certain = false;
        }
    }
}

static void cl_pol_account_of(const char *arn, char acct[13])
{
    acct[0] = 0;
    if (arn && !strncmp(arn, "arn:aws:iam::", 13) && strlen(arn) > 25 && arn[25] == ':' &&
        strspn(arn + 13, "0123456789") == 12) {
        memcpy(acct, arn + 13, 12);
        acct[12] = 0;
    }
}

cl_err cl_policy_unattested_allow(const struct cl_policy *p, const char *principal_arn, const char *action,
                                  const char *resource, bool *unsafe, char stmt[72])
{
    cl_err rc = CL_OK;
    char acct[13];
    bool allow = false, denied = false;
    char name[72] = "";
    CL_ENSURE_D(p && principal_arn && action && resource, CL_E_CORE_INVALID_ARG, "unattested check arguments");
    cl_pol_account_of(principal_arn, acct);
    struct cl_policy_ctx c = {.principal_arn = principal_arn, .caller_account = acct[0] ? acct : NULL,
                              .action = action, .resource = resource};
    for (size_t i = 0; i < json_array_size(p->stmts); i++) {
        const json_t *s = json_array_get(p->stmts, i);
        bool deny = !strcmp(json_string_value(json_object_get(s, "Effect")), "Deny");
        if (!cl_pol_principal(json_object_get(s, "Principal"), &c) ||
            !cl_pol_list_any(json_object_get(s, "Action"), cl_pol_match_action, action) ||
            !cl_pol_list_any(json_object_get(s, "Resource"), cl_pol_match_resource, resource))
            continue;
        bool may, certain;
        cl_pol_unattested(json_object_get(s, "Condition"), &may, &certain);
        if (deny && certain)
            denied = true;
        if (!deny && may && !allow) {
            allow = true;
            const json_t *sid = json_object_get(s, "Sid");
            if (sid && json_string_length(sid) > 0)
                snprintf(name, sizeof(name), "%s", json_string_value(sid));
            else
                snprintf(name, sizeof(name), "#%zu", i);
        }
    }
    *unsafe = allow && !denied;
    snprintf(stmt, 72, "%s", *unsafe ? name : "");
out:
    return rc;
}

static void cl_pol_report_principal(const json_t *v, cl_policy_principal_cb cb, void *arg)
{
    char root[64];
    const char *s = json_string_value(v);
    if (!s)
        return;
    if (strlen(s) == 12 && strspn(s, "0123456789") == 12) {
        snprintf(root, sizeof(root), "arn:aws:iam::%s:root", s);
        s = root;
    }
    cb(arg, s);
}

cl_err cl_policy_release_principals(const struct cl_policy *p, cl_policy_principal_cb cb, void *arg)
{
    if (!p || !cb)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "release principals arguments");
    for (size_t i = 0; i < json_array_size(p->stmts); i++) {
        const json_t *s = json_array_get(p->stmts, i);
        if (strcmp(json_string_value(json_object_get(s, "Effect")), "Allow"))
            continue;
        const json_t *cond = json_object_get(s, "Condition");
        bool attested = false;
        const char *opn, *ck;
        json_t *blk, *cv;
        if (cond)
            json_object_foreach((json_t *)cond, opn, blk) {
                json_object_foreach(blk, ck, cv) {
                    attested |= cl_pol_is_attest_key(ck);
                }
            }
        if (!attested)
            continue;
        const json_t *pr = json_object_get(s, "Principal");
        if (json_is_string(pr)) {
            cb(arg, "*");
            continue;
        }
        const json_t *aws = json_object_get(pr, "AWS");
        if (json_is_string(aws)) {
            cl_pol_report_principal(aws, cb, arg);
        } else if (json_is_array(aws)) {
            size_t j;
            json_t *e;
            json_array_foreach(aws, j, e) {
                cl_pol_report_principal(e, cb, arg);
            }
        }
    }
    return CL_OK;
}
