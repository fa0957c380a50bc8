/* Key policy engine: parser negatives and a decision matrix. */
#include "testutil.h"

#include "cloister/policy.h"

#define ALICE "arn:aws:iam::111122223333:user/alice"
#define BOB "arn:aws:iam::444455556666:user/bob"
#define KEY "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#define PCR0 "aa"
#define T_NOW 1750000000 /* 2025-06-15T15:06:40Z */

static struct cl_policy *t_parse(const char *json)
{
    struct cl_policy *p = NULL;
    assert_ok(cl_policy_parse(json, strlen(json), &p));
    return p;
}

static struct cl_policy_recipient t_rcpt;

static void t_make_recipient(uint8_t pcr0_byte, bool debug)
{
    memset(&t_rcpt, 0, sizeof(t_rcpt));
    for (int i = 0; i < 16; i++) {
        memset(t_rcpt.pcrs[i], debug && i < 3 ? 0 : pcr0_byte + i, CL_POLICY_PCR_LEN);
        t_rcpt.pcr_mask |= 1u << i;
    }
    memcpy(t_rcpt.image_sha384, t_rcpt.pcrs[0], CL_POLICY_PCR_LEN);
    t_rcpt.debug = debug;
}

struct t_case {
    const char *name;
    const char *principal;
    const char *account;
    const char *action;
    const char *ec_key, *ec_val; /* one encryption-context pair or NULL */
    int recipient;               /* 0 none, 1 pcr byte 0xaa, 2 pcr byte 0xbb, 3 debug */
    int64_t now;
    enum cl_policy_effect want;
    bool want_explicit;
    const char *want_stmt;
};

static void t_run(const struct cl_policy *p, const struct t_case *c)
{
    struct cl_aws_kv kv[2] = {{c->ec_key, c->ec_val}, {"extra", "x"}};
    struct cl_policy_ctx ctx = {
        .principal_arn = c->principal,
        .caller_account = c->account,
        .action = c->action,
        .resource = KEY,
        .now = c->now ? c->now : T_NOW,
        .enc_ctx = c->ec_key ? kv : NULL,
        .n_enc_ctx = c->ec_key ? 1 : 0,
        .recipient = NULL,
    };
    if (c->recipient) {
        t_make_recipient(c->recipient == 2 ? 0xbb : 0xaa, c->recipient == 3);
        ctx.recipient = &t_rcpt;
    }
    struct cl_policy_decision d;
    assert_ok(cl_policy_evaluate(p, &ctx, &d));
    if (d.effect != c->want || d.explicit_deny != c->want_explicit || strcmp(d.statement, c->want_stmt))
        fail_msg("case %s: got effect %d explicit %d stmt '%s', want %d %d '%s'", c->name, d.effect,
                 d.explicit_deny, d.statement, c->want, c->want_explicit, c->want_stmt);
}

#define PCR_AA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define PCR_AB "abababababababababababababababababababababababababababababababababababababababababababababababab"

static const char *const t_policy_sealed =
    "{\"Version\":\"2012-10-17\",\"Statement\":["
    "{\"Sid\":\"Admin\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" ALICE "\"},"
    " \"Action\":[\"kms:Describe*\",\"kms:Get*\",\"kms:PutKeyPolicy\"],\"Resource\":\"*\"},"
    "{\"Sid\":\"Seal\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":[\"" ALICE "\"]},"
    " \"Action\":\"kms:GenerateDataKey*\",\"Resource\":\"*\","
    " \"Condition\":{\"StringEquals\":{\"kms:EncryptionContext:model\":\"medgemma\"}}},"
    "{\"Sid\":\"Release\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" BOB "\"},"
    " \"Action\":\"kms:Decrypt\",\"Resource\":\"" KEY "\","
    " \"Condition\":{\"StringEqualsIgnoreCase\":{\"kms:RecipientAttestation:PCR0\":\"" PCR_AA "\"},"
    "   \"StringEquals\":{\"kms:EncryptionContext:model\":\"medgemma\"}}},"
    "{\"Sid\":\"DenyNoAttest\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:Decrypt\",\"Resource\":\"*\","
    " \"Condition\":{\"StringNotEqualsIgnoreCase\":{\"kms:RecipientAttestation:ImageSha384\":\"" PCR_AA "\"}}}"
    "]}";

static void test_matrix_sealed(void **state)
{
    (void)state;
    struct cl_policy *p = t_parse(t_policy_sealed);
    const struct t_case cases[] = {
        {"admin describe", ALICE, "111122223333", "kms:DescribeKey", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "Admin"},
        {"admin action case", ALICE, "111122223333", "KMS:describekey", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false,
         "Admin"},
        {"other account", BOB, "444455556666", "kms:DescribeKey", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"seal ok", ALICE, "111122223333", "kms:GenerateDataKey", "model", "medgemma", 0, 0, CL_POLICY_ALLOW, false,
         "Seal"},
        {"seal wildcard", ALICE, "111122223333", "kms:GenerateDataKeyWithoutPlaintext", "model", "medgemma", 0, 0,
         CL_POLICY_ALLOW, false, "Seal"},
        {"seal wrong ctx", ALICE, "111122223333", "kms:GenerateDataKey", "model", "other", 0, 0, CL_POLICY_DENY,
         false, ""},
        {"seal ctx key case", ALICE, "111122223333", "kms:GenerateDataKey", "Model", "medgemma", 0, 0,
         CL_POLICY_DENY, false, ""},
        {"seal no ctx", ALICE, "111122223333", "kms:GenerateDataKey", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"release ok", BOB, "444455556666", "kms:Decrypt", "model", "medgemma", 1, 0, CL_POLICY_ALLOW, false,
         "Release"},
        {"release wrong pcr", BOB, "444455556666", "kms:Decrypt", "model", "medgemma", 2, 0, CL_POLICY_DENY, true,
         "DenyNoAttest"},
        {"release no recipient", BOB, "444455556666", "kms:Decrypt", "model", "medgemma", 0, 0, CL_POLICY_DENY, true,
         "DenyNoAttest"},
        {"release debug doc", BOB, "444455556666", "kms:Decrypt", "model", "medgemma", 3, 0, CL_POLICY_DENY, true,
         "DenyNoAttest"},
        {"release wrong ctx", BOB, "444455556666", "kms:Decrypt", "model", "x", 1, 0, CL_POLICY_DENY, false, ""},
        {"release no ctx", BOB, "444455556666", "kms:Decrypt", NULL, NULL, 1, 0, CL_POLICY_DENY, false, ""},
        {"admin decrypt no recipient", ALICE, "111122223333", "kms:Decrypt", NULL, NULL, 0, 0, CL_POLICY_DENY, true,
         "DenyNoAttest"},
        {"alice not release principal", ALICE, "111122223333", "kms:Decrypt", "model", "medgemma", 1, 0,
         CL_POLICY_DENY, false, ""},
        {"encrypt not granted", ALICE, "111122223333", "kms:Encrypt", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        t_run(p, &cases[i]);
    cl_policy_free(p);
}

static void test_matrix_operators(void **state)
{
    (void)state;
    struct cl_policy *p = t_parse(
        "{\"Statement\":["
        "{\"Sid\":\"Like\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:Encrypt\",\"Resource\":\"*\","
        " \"Condition\":{\"StringLike\":{\"aws:PrincipalArn\":\"arn:aws:iam::111122223333:user/a?i*\"}}},"
        "{\"Sid\":\"Window\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:Decrypt\",\"Resource\":\"*\","
        " \"Condition\":{\"DateGreaterThan\":{\"aws:CurrentTime\":\"2025-01-01T00:00:00Z\"},"
        "   \"DateLessThan\":{\"aws:CurrentTime\":\"2026-01-01\"}}},"
        "{\"Sid\":\"Acct\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"*\"},\"Action\":\"kms:GenerateRandom\","
        " \"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"kms:CallerAccount\":[\"111122223333\",\"999\"]}}},"
        "{\"Sid\":\"NotBob\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:ReEncrypt*\",\"Resource\":\"*\","
        " \"Condition\":{\"StringNotEquals\":{\"aws:PrincipalArn\":\"" ALICE "\"}}},"
        "{\"Sid\":\"Re\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:ReEncrypt*\",\"Resource\":\"*\"},"
        "{\"Sid\":\"AnyKey\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:GenerateDataKey\","
        " \"Resource\":\"*\",\"Condition\":{\"ForAnyValue:StringEquals\":{\"kms:EncryptionContextKeys\":[\"tenant\"]}}},"
        "{\"Sid\":\"AllKeys\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:GenerateDataKeyWithoutPlaintext\","
        " \"Resource\":\"*\",\"Condition\":{\"ForAllValues:StringEquals\":{\"kms:EncryptionContextKeys\":[\"tenant\",\"model\"]}}},"
        "{\"Sid\":\"NullCtx\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:DescribeKey\",\"Resource\":\"*\","
        " \"Condition\":{\"Null\":{\"kms:EncryptionContext:model\":\"true\"}}},"
        "{\"Sid\":\"PresentCtx\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:GetKeyPolicy\",\"Resource\":\"*\","
        " \"Condition\":{\"Null\":{\"kms:EncryptionContext:model\":false}}},"
        "{\"Sid\":\"BoolDebug\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:ListAliases\",\"Resource\":\"*\","
        " \"Condition\":{\"Bool\":{\"cloister:RecipientAttestation:Debug\":\"true\"}}},"
        "{\"Sid\":\"IfExists\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:ListKeys\",\"Resource\":\"*\","
        " \"Condition\":{\"StringEqualsIfExists\":{\"kms:EncryptionContext:model\":\"m\"}}},"
        "{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:EnableKey\",\"Resource\":\"arn:aws:kms:*:111122223333:key/*\"},"
        "{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:DisableKey\",\"Resource\":\"arn:aws:kms:*:999:key/*\"},"
        "{\"Sid\":\"Pcr1Like\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:CreateAlias\",\"Resource\":\"*\","
        " \"Condition\":{\"StringLike\":{\"kms:RecipientAttestation:PCR1\":\"abab*\"}}}"
        "]}");
    const struct t_case cases[] = {
        {"like ok", ALICE, "111122223333", "kms:Encrypt", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "Like"},
        {"like no", BOB, "444455556666", "kms:Encrypt", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"date in", ALICE, "1", "kms:Decrypt", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "Window"},
        {"date after", ALICE, "1", "kms:Decrypt", NULL, NULL, 0, 1767225601, CL_POLICY_DENY, false, ""},
        {"date before", ALICE, "1", "kms:Decrypt", NULL, NULL, 0, 1735689599, CL_POLICY_DENY, false, ""},
        {"acct list", ALICE, "111122223333", "kms:GenerateRandom", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "Acct"},
        {"acct no", BOB, "444455556666", "kms:GenerateRandom", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"deny wins", BOB, "444455556666", "kms:ReEncryptFrom", NULL, NULL, 0, 0, CL_POLICY_DENY, true, "NotBob"},
        {"deny skipped", ALICE, "111122223333", "kms:ReEncryptTo", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "Re"},
        {"any value", ALICE, "1", "kms:GenerateDataKey", "tenant", "t1", 0, 0, CL_POLICY_ALLOW, false, "AnyKey"},
        {"any value miss", ALICE, "1", "kms:GenerateDataKey", "other", "t1", 0, 0, CL_POLICY_DENY, false, ""},
        {"any value absent", ALICE, "1", "kms:GenerateDataKey", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"all values", ALICE, "1", "kms:GenerateDataKeyWithoutPlaintext", "model", "m", 0, 0, CL_POLICY_ALLOW, false,
         "AllKeys"},
        {"all values extra", ALICE, "1", "kms:GenerateDataKeyWithoutPlaintext", "bad", "m", 0, 0, CL_POLICY_DENY,
         false, ""},
        {"all values empty", ALICE, "1", "kms:GenerateDataKeyWithoutPlaintext", NULL, NULL, 0, 0, CL_POLICY_ALLOW,
         false, "AllKeys"},
        {"null absent", ALICE, "1", "kms:DescribeKey", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "NullCtx"},
        {"null present", ALICE, "1", "kms:DescribeKey", "model", "m", 0, 0, CL_POLICY_DENY, false, ""},
        {"notnull present", ALICE, "1", "kms:GetKeyPolicy", "model", "m", 0, 0, CL_POLICY_ALLOW, false, "PresentCtx"},
        {"notnull absent", ALICE, "1", "kms:GetKeyPolicy", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"bool debug", ALICE, "1", "kms:ListAliases", NULL, NULL, 3, 0, CL_POLICY_ALLOW, false, "BoolDebug"},
        {"bool not debug", ALICE, "1", "kms:ListAliases", NULL, NULL, 1, 0, CL_POLICY_DENY, false, ""},
        {"bool no recipient", ALICE, "1", "kms:ListAliases", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"ifexists absent", ALICE, "1", "kms:ListKeys", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "IfExists"},
        {"ifexists wrong", ALICE, "1", "kms:ListKeys", "model", "z", 0, 0, CL_POLICY_DENY, false, ""},
        {"resource glob", ALICE, "1", "kms:EnableKey", NULL, NULL, 0, 0, CL_POLICY_ALLOW, false, "#11"},
        {"resource glob miss", ALICE, "1", "kms:DisableKey", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"pcr1 like", ALICE, "1", "kms:CreateAlias", NULL, NULL, 1, 0, CL_POLICY_ALLOW, false, "Pcr1Like"},
        {"pcr1 like no recipient", ALICE, "1", "kms:CreateAlias", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"pcr1 like debug refused", ALICE, "1", "kms:CreateAlias", NULL, NULL, 3, 0, CL_POLICY_DENY, false, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        t_run(p, &cases[i]);
    cl_policy_free(p);
}

static void test_recipient_positive_fails_without_recipient(void **state)
{
    (void)state;
    /* every RecipientAttestation key, with a positive operator, fails without a Recipient */
    const char *keys[] = {"kms:RecipientAttestation:ImageSha384", "kms:RecipientAttestation:PCR0",
                          "kms:RecipientAttestation:PCR15", "kms:RecipientAttestation:PCR31"};
    const char *ops[] = {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ForAnyValue:StringEquals"};
    for (size_t k = 0; k < 4; k++)
        for (size_t o = 0; o < 4; o++) {
            char json[1024];
            snprintf(json, sizeof(json),
                     "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:Decrypt\","
                     "\"Resource\":\"*\",\"Condition\":{\"%s\":{\"%s\":\"*\"}}}}",
                     ops[o], keys[k]);
            struct cl_policy *p = t_parse(json);
            struct cl_policy_ctx ctx = {.principal_arn = ALICE, .caller_account = "1", .action = "kms:Decrypt",
                                        .resource = KEY, .now = T_NOW};
            struct cl_policy_decision d;
            assert_ok(cl_policy_evaluate(p, &ctx, &d));
            assert_int_equal(d.effect, CL_POLICY_DENY);
            cl_policy_free(p);
        }
}

/* An account principal names the account's root identity only: with no IAM
 * layer it must not stand for the account's users (the operator among them). */
static void test_account_principal_is_root_only(void **state)
{
    (void)state;
    struct cl_policy *p = t_parse("{\"Statement\":["
                                  "{\"Sid\":\"RootArn\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":"
                                  "\"arn:aws:iam::111122223333:root\"},\"Action\":\"kms:PutKeyPolicy\",\"Resource\":\"*\"},"
                                  "{\"Sid\":\"BareAcct\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"444455556666\"},"
                                  "\"Action\":\"kms:Decrypt\",\"Resource\":\"*\"}]}");
    const struct t_case cases[] = {
        {"user of the root's account", ALICE, "111122223333", "kms:PutKeyPolicy", NULL, NULL, 0, 0, CL_POLICY_DENY,
         false, ""},
        {"the root itself", "arn:aws:iam::111122223333:root", "111122223333", "kms:PutKeyPolicy", NULL, NULL, 0, 0,
         CL_POLICY_ALLOW, false, "RootArn"},
        {"user of a bare account", BOB, "444455556666", "kms:Decrypt", NULL, NULL, 0, 0, CL_POLICY_DENY, false, ""},
        {"bare account's root", "arn:aws:iam::444455556666:root", "444455556666", "kms:Decrypt", NULL, NULL, 0, 0,
         CL_POLICY_ALLOW, false, "BareAcct"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        t_run(p, &cases[i]);
    cl_policy_free(p);
}

#define ROOT_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* cloister:attestation-root-sha256, and the rule that a key service with
 * several roots releases only through a statement that pins one. */
static void test_root_pin(void **state)
{
    (void)state;
    struct cl_policy *pinned = t_parse(
        "{\"Statement\":[{\"Sid\":\"Pinned\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" BOB "\"},"
        "\"Action\":\"kms:Decrypt\",\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{"
        "\"cloister:attestation-root-sha256\":\"" ROOT_A "\"}}}]}");
    struct cl_policy *unpinned = t_parse(
        "{\"Statement\":[{\"Sid\":\"Unpinned\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" BOB "\"},"
        "\"Action\":\"kms:Decrypt\",\"Resource\":\"*\",\"Condition\":{\"StringEqualsIgnoreCase\":{"
        "\"kms:RecipientAttestation:PCR0\":\"" PCR_AA "\"}}}]}");
    t_make_recipient(0xaa, false);
    struct cl_policy_ctx ctx = {.principal_arn = BOB, .caller_account = "444455556666", .action = "kms:Decrypt",
                                .resource = KEY, .now = T_NOW, .recipient = &t_rcpt};
    struct cl_policy_decision d;
    /* one root: an unpinned statement releases as before */
    assert_ok(cl_policy_evaluate(unpinned, &ctx, &d));
    assert_int_equal(d.effect, CL_POLICY_ALLOW);
    /* several roots: it does not, and the decision says why */
    t_rcpt.require_root_pin = true;
    t_rcpt.has_root = true;
    memset(t_rcpt.root_sha256, 0xaa, sizeof(t_rcpt.root_sha256));
    assert_ok(cl_policy_evaluate(unpinned, &ctx, &d));
    assert_int_equal(d.effect, CL_POLICY_DENY);
    assert_true(d.unpinned_root);
    assert_string_equal(d.unpinned_statement, "Unpinned");
    /* the pinned statement releases for its root only */
    assert_ok(cl_policy_evaluate(pinned, &ctx, &d));
    assert_int_equal(d.effect, CL_POLICY_ALLOW);
    assert_false(d.unpinned_root);
    memset(t_rcpt.root_sha256, 0xbb, sizeof(t_rcpt.root_sha256));
    assert_ok(cl_policy_evaluate(pinned, &ctx, &d));
    assert_int_equal(d.effect, CL_POLICY_DENY);
    /* without a Recipient the root key is absent: the positive match fails */
    ctx.recipient = NULL;
    assert_ok(cl_policy_evaluate(pinned, &ctx, &d));
    assert_int_equal(d.effect, CL_POLICY_DENY);
    cl_policy_free(pinned);
    cl_policy_free(unpinned);
}

struct t_rp {
    char p[8][96];
    int n;
};
static void t_rp_cb(void *arg, const char *pr)
{
    struct t_rp *r = arg;
    if (r->n < 8)
        snprintf(r->p[r->n++], sizeof(r->p[0]), "%s", pr);
}

/* The static check behind PutKeyPolicy: can a release principal get at the
 * key without an attestation document? */
static void test_unattested_allow(void **state)
{
    (void)state;
    bool unsafe;
    char stmt[72];
    /* the sealed-model policy: BOB is a release principal and gets nothing unattested */
    struct cl_policy *p = t_parse(t_policy_sealed);
    struct t_rp rp = {.n = 0};
    assert_ok(cl_policy_release_principals(p, t_rp_cb, &rp));
    assert_int_equal(rp.n, 1);
    assert_string_equal(rp.p[0], BOB);
    assert_ok(cl_policy_unattested_allow(p, BOB, "kms:Decrypt", KEY, &unsafe, stmt));
    assert_false(unsafe);
    assert_ok(cl_policy_unattested_allow(p, BOB, "kms:PutKeyPolicy", KEY, &unsafe, stmt));
    assert_false(unsafe);
    /* ALICE may seal (GenerateDataKey under a context condition): reported */
    assert_ok(cl_policy_unattested_allow(p, ALICE, "kms:GenerateDataKey", KEY, &unsafe, stmt));
    assert_true(unsafe);
    assert_string_equal(stmt, "Seal");
    /* ...but her unattested Decrypt is certainly denied */
    assert_ok(cl_policy_unattested_allow(p, ALICE, "kms:Decrypt", KEY, &unsafe, stmt));
    assert_false(unsafe);
    cl_policy_free(p);
    /* allow-all for an account root that now means nobody but the root;
     * for "*" it means everyone, with an IfExists condition that holds unattested */
    p = t_parse("{\"Statement\":[{\"Sid\":\"All\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:*\","
                "\"Resource\":\"*\",\"Condition\":{\"StringEqualsIfExists\":{\"kms:RecipientAttestation:PCR0\":\"aa\"}}},"
                "{\"Sid\":\"CtxDeny\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:Decrypt\","
                "\"Resource\":\"*\",\"Condition\":{\"StringNotEquals\":{\"kms:EncryptionContext:m\":\"x\"}}}]}");
    rp.n = 0;
    assert_ok(cl_policy_release_principals(p, t_rp_cb, &rp));
    assert_int_equal(rp.n, 1);
    assert_string_equal(rp.p[0], "*");
    /* a Deny on another key does not certainly apply: still unsafe */
    assert_ok(cl_policy_unattested_allow(p, BOB, "kms:Decrypt", KEY, &unsafe, stmt));
    assert_true(unsafe);
    assert_string_equal(stmt, "All");
    assert_ok(cl_policy_unattested_allow(p, BOB, "kms:CreateGrant", KEY, &unsafe, stmt));
    assert_true(unsafe);
    cl_policy_free(p);
    /* Null: {key: true} Deny covers every unattested request */
    p = t_parse("{\"Statement\":[{\"Sid\":\"All\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" BOB "\"},"
                "\"Action\":\"kms:Decrypt\",\"Resource\":\"*\"},"
                "{\"Sid\":\"NoDoc\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:*\",\"Resource\":\"*\","
                "\"Condition\":{\"Null\":{\"kms:RecipientAttestation:PCR0\":\"true\"}}}]}");
    assert_ok(cl_policy_unattested_allow(p, BOB, "kms:Decrypt", KEY, &unsafe, stmt));
    assert_false(unsafe);
    assert_ok(cl_policy_unattested_allow(NULL, BOB, "kms:Decrypt", KEY, &unsafe, stmt) == CL_OK ? CL_E_CORE_INVALID_ARG
                                                                                                : CL_OK);
    cl_policy_free(p);
}

static void test_parse_negative(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "[]",
        "{}",
        "{\"Statement\":[]}",
        "{\"Statement\":[1]}",
        "{\"Version\":\"2020-01-01\",\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Permit\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"me\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":{\"Federated\":\"x\"},\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":[],\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":[1],\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"StringWhatever\":{\"k\":\"v\"}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"k\":{}}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"DateLessThan\":{\"aws:CurrentTime\":\"yesterday\"}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"Null\":{\"k\":\"maybe\"}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Condition\":{\"ForAnyValue:Null\":{\"k\":\"true\"}}}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"NotAction\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\",\"Extra\":1}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\"}}",
        "{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"a\",\"Resource\":\"*\"}} x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cl_policy *p = NULL;
        cl_err rc = cl_policy_parse(bad[i], strlen(bad[i]), &p);
        if (rc != CL_E_KMS_POLICY_MALFORMED)
            fail_msg("bad[%zu] -> %s", i, cl_err_name(rc) ? cl_err_name(rc) : "OK");
        assert_null(p);
    }
    /* size limit */
    size_t n = CL_POLICY_MAX_BYTES + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    struct cl_policy *p = NULL;
    assert_err(cl_policy_parse(big, n, &p), CL_E_KMS_POLICY_LIMIT);
    free(big);
}

static void test_times(void **state)
{
    (void)state;
    int64_t t;
    assert_ok(cl_policy_parse_time("2025-06-15T15:06:40Z", &t));
    assert_int_equal(t, T_NOW);
    assert_ok(cl_policy_parse_time("2025-06-15T15:06:40.123Z", &t));
    assert_int_equal(t, T_NOW);
    assert_ok(cl_policy_parse_time("1750000000", &t));
    assert_int_equal(t, T_NOW);
    assert_ok(cl_policy_parse_time("1970-01-02", &t));
    assert_int_equal(t, 86400);
    assert_err(cl_policy_parse_time("2025-13-01", &t), CL_E_KMS_POLICY_MALFORMED);
    assert_err(cl_policy_parse_time("2025-06-15T15:06:40", &t), CL_E_KMS_POLICY_MALFORMED);
    assert_err(cl_policy_parse_time("2025-06-15T15:06:40.Z", &t), CL_E_KMS_POLICY_MALFORMED);
    assert_err(cl_policy_parse_time("", &t), CL_E_KMS_POLICY_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_sealed),
        cmocka_unit_test(test_matrix_operators),
        cmocka_unit_test(test_recipient_positive_fails_without_recipient),
        cmocka_unit_test(test_account_principal_is_root_only),
        cmocka_unit_test(test_root_pin),
        cmocka_unit_test(test_unattested_allow),
        cmocka_unit_test(test_parse_negative),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
