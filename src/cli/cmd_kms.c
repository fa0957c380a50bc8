/* cloister kms: sealed-model key policy generation and key creation. The audit
 * listing reads the key service's own database: it is `cloister-kms audit`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/policy.h"

static void cl_kms_cli_help(FILE *f)
{
    fprintf(f,
            "usage: cloister kms policy --pcr0 HEX [--pcr1 HEX] [--pcr2 HEX] [--pcr8 HEX]\n"
            "                           (--model-digest HEX | --consumer NAME) --root ROOT.pem --principal ARN\n"
            "                           --admin ARN\n\n"
            "policy  prints a least-privilege key policy for a sealed model: Decrypt is allowed\n"
            "        to PRINCIPAL (the operator's release principal) only with a Recipient\n"
            "        attestation whose PCRs match, verified by the pinned ROOT\n"
            "        (cloister:attestation-root-sha256 = SHA-256 of its DER; --root may repeat),\n"
            "        and with the encryption context cloister:model-sha256 = the model digest\n"
            "        (--model-digest may repeat, up to 4: the model and its vision projector).\n"
            "        Explicit Denies refuse any Decrypt whose attestation or root does not match,\n"
            "        and deny PRINCIPAL PutKeyPolicy, CreateGrant, ReEncrypt*, GenerateDataKey*.\n"
            "        ADMIN (required; the owner's own principal, not PRINCIPAL and not the root of\n"
            "        PRINCIPAL's account) manages the key and seals (GenerateDataKey) with the\n"
            "        same context. The output is checked: PRINCIPAL gets nothing unattested.\n"
            "        PCR values are 48-byte SHA-384 (96 hex); the digest is SHA-256 (64 hex).\n\n"
            "        With --consumer NAME instead of --model-digest: a batch consumer's job key\n"
            "        (docs/batch.md). The context is cloister:consumer = NAME; ADMIN (the consumer)\n"
            "        submits jobs (GenerateDataKey) and reads results (Decrypt) with it; PRINCIPAL\n"
            "        gets the job keys only with the attested enclave's Recipient document, and the\n"
            "        Denies name PRINCIPAL (the consumer's own Decrypt needs no enclave).\n\n"
            "Licences (docs/licensing.md): 'cloister kms licence key|create|list|show|revoke --help',\n"
            "'cloister kms usage --help'.\n"
            "The audit listing reads the key service's database: 'cloister-kms audit DIR [--json]'.\n");
}

static bool cl_kms_cli_hex_ok(const char *s, size_t bytes)
{
    if (strlen(s) != 2 * bytes)
        return false;
    for (size_t i = 0; i < 2 * bytes; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    return true;
}

/* An IAM principal ARN "arn:aws:iam::ACCOUNT:..." with a 12-digit account;
 * acct receives the account. */
static bool cl_kms_cli_iam_arn(const char *arn, char acct[13])
{
    if (!arn || strncmp(arn, "arn:aws:iam::", 13) || strlen(arn) > 512 || strlen(arn) < 27 || arn[25] != ':' ||
        strspn(arn + 13, "0123456789") != 12 || strpbrk(arn, "\"\\*?"))
        return false;
    memcpy(acct, arn + 13, 12);
    acct[12] = 0;
    return true;
}

static cl_err cl_kms_cli_root_fp(const char *path, char hex[65])
{
    cl_err rc = CL_OK;
    struct cl_buf f, der;
    uint8_t h[CL_SHA256_LEN];
    cl_buf_init(&f, 64 * 1024, CL_BUF_NONE);
    cl_buf_init(&der, 64 * 1024, CL_BUF_NONE);
    CL_GUARD(cl_file_read(path, 64 * 1024, &f));
    CL_GUARD(cl_attest_cert_to_der(f.data, f.len, &der));
    CL_GUARD(cl_sha256(der.data, der.len, h));
    cl_hex_encode(h, sizeof(h), hex);
out:
    cl_buf_free(&f);
    cl_buf_free(&der);
    return rc;
}

#define CL_KMS_CLI_MAX_ROOTS 4

static int cl_kms_cli_policy(int argc, char **argv)
{
    const char *pcr[CL_POLICY_PCR_COUNT] = {0};
    const char *digests[CL_KMS_CLI_MAX_ROOTS], *principal = NULL, *admin = NULL, *consumer = NULL;
    size_t ndigests = 0;
    const char *roots[CL_KMS_CLI_MAX_ROOTS];
    size_t nroots = 0;
    /* --pcr0 .. --pcr31: option values 0..31 */
    enum { O_DIGEST = 256, O_PRINCIPAL, O_ADMIN, O_ROOT, O_CONSUMER };
    static char names[CL_POLICY_PCR_COUNT][8];
    static struct option opts[CL_POLICY_PCR_COUNT + 7] = {
        CL_CLI_OPT_HELP,
        {"model-digest", required_argument, NULL, O_DIGEST},
        {"principal", required_argument, NULL, O_PRINCIPAL},
        {"admin", required_argument, NULL, O_ADMIN},
        {"root", required_argument, NULL, O_ROOT},
        {"consumer", required_argument, NULL, O_CONSUMER},
    };
    for (unsigned k = 0; k < CL_POLICY_PCR_COUNT; k++) {
        snprintf(names[k], sizeof(names[k]), "pcr%u", k);
        opts[6 + k] = (struct option){names[k], required_argument, NULL, (int)k};
    }
    struct cl_cli_args args = {.cmd = "kms policy", .help = cl_kms_cli_help, .longopts = opts};
    for (int o; (o = cl_cli_next(&args, argc - 1, argv + 1)) != -1;) {
        switch (o) {
        case O_DIGEST:
            if (ndigests == CL_KMS_CLI_MAX_ROOTS)
                return cl_cli_usage_error("kms policy", "at most %d --model-digest", CL_KMS_CLI_MAX_ROOTS);
            if (!cl_kms_cli_hex_ok(optarg, 32))
                return cl_cli_usage_error("kms policy", "--model-digest must be 64 hex digits (SHA-256)");
            digests[ndigests++] = optarg;
            break;
        case O_PRINCIPAL: principal = optarg; break;
        case O_CONSUMER:
            consumer = optarg;
            if (strlen(consumer) < 1 || strlen(consumer) > 128 || strpbrk(consumer, "\"\\*?"))
                return cl_cli_usage_error("kms policy", "--consumer must be 1..128 characters without quotes, "
                                                        "backslashes or wildcards");
            break;
        case O_ADMIN: admin = optarg; break;
        case O_ROOT:
            if (nroots == CL_KMS_CLI_MAX_ROOTS)
                return cl_cli_usage_error("kms policy", "at most %d --root", CL_KMS_CLI_MAX_ROOTS);
            roots[nroots++] = optarg;
            break;
        default:
            if (o < 0 || o >= CL_POLICY_PCR_COUNT)
                return args.exit;
            if (!cl_kms_cli_hex_ok(optarg, CL_POLICY_PCR_LEN))
                return cl_cli_usage_error("kms policy", "--pcr%d must be 96 hex digits (SHA-384)", o);
            pcr[o] = optarg;
        }
    }
    if (optind + 1 < argc)
        return cl_cli_usage_error("kms policy", "unexpected argument '%s'", argv[optind + 1]);
    if (!pcr[0])
        return cl_cli_usage_error("kms policy", "--pcr0 is required");
    if (!ndigests == !consumer)
        return cl_cli_usage_error("kms policy", "give exactly one of --model-digest HEX (a sealed model's key; may "
                                                "repeat) or --consumer NAME (a batch consumer's job key)");
    if (!nroots)
        return cl_cli_usage_error("kms policy", "--root ROOT.pem is required (the attestation root the key "
                                         "service must have verified the enclave's document with)");
    char pacct[13], aacct[13];
    if (!cl_kms_cli_iam_arn(principal, pacct))
        return cl_cli_usage_error("kms policy", "--principal must be an IAM ARN (arn:aws:iam::ACCOUNT:user/NAME "
                                         "or :role/NAME), without wildcards");
    if (!strcmp(principal + 26, "root"))
        return cl_cli_usage_error("kms policy", "--principal must name one principal, not an account root "
                                         "(on AWS that is every principal the account's IAM allows)");
    if (!admin)
        return cl_cli_usage_error("kms policy", "--admin ARN is required: the owner's administrator, a "
                                         "principal other than --principal");
    if (!cl_kms_cli_iam_arn(admin, aacct))
        return cl_cli_usage_error("kms policy", "--admin must be an IAM ARN (arn:aws:iam::ACCOUNT:...), without "
                                         "wildcards");
    if (!strcmp(admin, principal))
        return cl_cli_usage_error("kms policy", "--admin must differ from --principal: the release principal "
                                         "(the operator's credentials) must not administer the key");
    if (!strcmp(admin + 26, "root") && !strcmp(aacct, pacct))
        return cl_cli_usage_error("kms policy", "--admin %s is the account root of --principal's account: on AWS "
                                         "it delegates to that account's IAM, so the operator could administer "
                                         "the key; name the owner's own principal",
                                  admin);
    char fps[CL_KMS_CLI_MAX_ROOTS][65];
    for (size_t i = 0; i < nroots; i++) {
        cl_err frc = cl_kms_cli_root_fp(roots[i], fps[i]);
        if (frc)
            return cl_cli_fail("kms", "policy: read --root", frc);
    }
    /* One digest: a string; several: any of them (an array); a consumer's name. */
    json_t *ctx_val = ndigests > 1 ? json_array() : NULL;
    for (size_t d = 0; d < ndigests; d++) {
        char lower[65];
        for (size_t i = 0; i < 64; i++)
            lower[i] = (char)(digests[d][i] | 0x20);
        lower[64] = 0;
        if (ctx_val)
            json_array_append_new(ctx_val, json_string(lower));
        else
            ctx_val = json_string(lower);
    }
    if (consumer)
        ctx_val = json_string(consumer);
    const char *ctx_key =
        consumer ? "kms:EncryptionContext:cloister:consumer" : "kms:EncryptionContext:cloister:model-sha256";
    const char *deny_who = consumer ? principal : "*";
    json_t *rootv = nroots == 1 ? json_string(fps[0]) : json_array();
    for (size_t i = 0; nroots > 1 && i < nroots; i++)
        json_array_append_new(rootv, json_string(fps[i]));
    json_t *stmts = json_array();
    json_array_append_new(
        stmts, json_pack("{s:s,s:s,s:{s:s},s:[s,s,s,s,s,s,s,s,s],s:s}", "Sid", "KeyAdministration", "Effect", "Allow",
                         "Principal", "AWS", admin, "Action", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                         "kms:EnableKey", "kms:DisableKey", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                         "kms:CreateAlias", "kms:DeleteAlias", "Resource", "*"));
    json_array_append_new(stmts, json_pack("{s:s,s:s,s:{s:s},s:s,s:s,s:{s:{s:O}}}", "Sid",
                                           consumer ? "SubmitJobs" : "SealModel", "Effect", "Allow", "Principal",
                                           "AWS", admin, "Action", "kms:GenerateDataKey", "Resource", "*",
                                           "Condition", "StringEquals", ctx_key, ctx_val));
    if (consumer) /* the consumer reads its own results */
        json_array_append_new(stmts, json_pack("{s:s,s:s,s:{s:s},s:s,s:s,s:{s:{s:O}}}", "Sid", "ReadResults",
                                               "Effect", "Allow", "Principal", "AWS", admin, "Action", "kms:Decrypt",
                                               "Resource", "*", "Condition", "StringEquals", ctx_key, ctx_val));
    json_t *pcr_cond = json_object();
    for (unsigned i = 0; i < CL_POLICY_PCR_COUNT; i++)
        if (pcr[i]) {
            char k[64];
            snprintf(k, sizeof(k), "kms:RecipientAttestation:PCR%u", i);
            json_object_set_new(pcr_cond, k, json_string(pcr[i]));
        }
    json_array_append_new(stmts, json_pack("{s:s,s:s,s:{s:s},s:s,s:s,s:{s:O,s:{s:O,s:O}}}", "Sid",
                                           "ReleaseToAttestedEnclave", "Effect", "Allow", "Principal", "AWS",
                                           principal, "Action", "kms:Decrypt", "Resource", "*", "Condition",
                                           "StringEqualsIgnoreCase", pcr_cond, "StringEquals", ctx_key, ctx_val,
                                           CL_POLICY_ROOT_KEY, rootv));
    /* One Deny per PCR: a Decrypt whose attestation lacks or differs in
     * any pinned PCR is refused whatever else the policy says. */
    for (unsigned i = 0; i < CL_POLICY_PCR_COUNT; i++)
        if (pcr[i]) {
            char sid[64], k[64];
            snprintf(sid, sizeof(sid), "DenyDecryptUnlessAttestedPCR%u", i);
            snprintf(k, sizeof(k), "kms:RecipientAttestation:PCR%u", i);
            json_array_append_new(stmts, json_pack("{s:s,s:s,s:o,s:s,s:s,s:{s:{s:s}}}", "Sid", sid, "Effect", "Deny",
                                                   "Principal", consumer ? json_pack("{s:s}", "AWS", deny_who)
                                                                         : json_string("*"),
                                                   "Action", "kms:Decrypt", "Resource", "*",
                                                   "Condition", "StringNotEqualsIgnoreCase", k, pcr[i]));
        }
    /* The same for the root that verified the document: a document from
     * any other trusted root (another party's cloister-sim root, say) is
     * refused even with the pinned PCRs. */
    json_array_append_new(stmts, json_pack("{s:s,s:s,s:o,s:s,s:s,s:{s:{s:O}}}", "Sid",
                                           "DenyDecryptUnlessAttestationRoot", "Effect", "Deny", "Principal",
                                           consumer ? json_pack("{s:s}", "AWS", deny_who) : json_string("*"),
                                           "Action", "kms:Decrypt", "Resource", "*", "Condition", "StringNotEquals",
                                           CL_POLICY_ROOT_KEY, rootv));
    /* The release principal's credentials are the operator's: explicitly
     * (so also against IAM grants on AWS) no key control and no way to a
     * data key without the enclave. */
    json_array_append_new(stmts, json_pack("{s:s,s:s,s:{s:s},s:[s,s,s,s,s,s],s:s}", "Sid",
                                           "DenyReleasePrincipalKeyControl", "Effect", "Deny", "Principal", "AWS",
                                           principal, "Action", "kms:PutKeyPolicy", "kms:CreateGrant",
                                           "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Encrypt",
                                           "kms:ScheduleKeyDeletion", "Resource", "*"));
    json_decref(pcr_cond);
    json_decref(rootv);
    json_decref(ctx_val);
    json_t *doc = json_pack("{s:s,s:o}", "Version", "2012-10-17", "Statement", stmts);
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    /* Self-check: what we print must parse as a key policy, and the release
     * principal must get nothing without an attestation document. */
    struct cl_policy *pp = NULL;
    cl_err rc = s ? cl_policy_parse(s, strlen(s), &pp) : CL_E_CORE_NOMEM;
    static const char *const sensitive[] = {"kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom",
                                            "kms:ReEncryptTo", "kms:PutKeyPolicy", "kms:CreateGrant"};
    for (size_t a = 0; !rc && a < sizeof(sensitive) / sizeof(sensitive[0]); a++) {
        bool unsafe = false;
        char stmt[72];
        rc = cl_policy_unattested_allow(pp, principal, sensitive[a], "*", &unsafe, stmt);
        if (!rc && unsafe)
            rc = cl_err_fail(CL_E_KMS_POLICY_MALFORMED, "release principal could %s without attestation (statement %s)",
                             sensitive[a], stmt);
    }
    cl_policy_free(pp);
    if (rc) {
        free(s);
        return cl_cli_fail("kms", "policy self-check", rc);
    }
    printf("%s\n", s);
    free(s);
    return CL_EXIT_OK;
}

int cl_cmd_kms(int argc, char **argv)
{
    if (argc < 2 || cl_cli_is_help(argv[1])) {
        cl_kms_cli_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? CL_EXIT_USAGE : CL_EXIT_OK;
    }
    if (!strcmp(argv[1], "audit"))
        return cl_cli_usage_error("kms", "audit has moved to the key service: run 'cloister-kms audit DIR [--json]'");
    if (!strcmp(argv[1], "policy"))
        return cl_kms_cli_policy(argc, argv);
    if (!strcmp(argv[1], "create-key"))
        return cl_cmd_kms_create_key(argc, argv);
    if (!strcmp(argv[1], "licence") || !strcmp(argv[1], "usage"))
        return cl_cmd_kms_licence(argc, argv);
    return cl_cli_usage_error("kms", "unknown subcommand '%s' (policy, create-key, licence or usage)", argv[1]);
}
