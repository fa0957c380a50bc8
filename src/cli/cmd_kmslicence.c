/* `cloister kms licence key|create|list|show|revoke` and `cloister kms usage`:
 * the model owner's licence management at cloister-kms (docs/licensing.md),
 * with the owner's SigV4 credentials from the usual AWS variables or files.
 * A consumer credential is generated here and written only to a 0600 file:
 * the key service receives its SHA-256. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms_client.h"
#include "cloister/licence.h"
#include "cloister/secmem.h"

static void cl_lic_cli_help(FILE *f)
{
    fprintf(f,
            "usage: cloister kms licence key    --kms URL --key-id K [--lease-s N] [--out FILE.der] [--json]\n"
            "       cloister kms licence create --kms URL --key-id K --id ID --consumer NAME --model-digest HEX\n"
            "                                   (--credential-out FILE | --credential-sha256 HEX)\n"
            "                                   [--not-before UNIX] [--not-after UNIX | --days N] [--period-s N]\n"
            "                                   [--max-requests N] [--max-tokens N] [--rate-per-min N] [--json]\n"
            "       cloister kms licence list   --kms URL --key-id K [--json]\n"
            "       cloister kms licence show   --kms URL --key-id K --id ID [--json]\n"
            "       cloister kms licence revoke --kms URL --key-id K --id ID [--json]\n"
            "       cloister kms usage          --kms URL --key-id K [--json]\n\n"
            "Licences of a sealed model's key at cloister-kms (docs/licensing.md), managed by the\n"
            "key's administrator (the owner: the principal its policy allows kms:PutKeyPolicy).\n"
            "Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared credentials file.\n\n"
            "key     prints the SHA-256 of the key's licence-verification key (P-384, made on first\n"
            "        use): seal the model with `cloister seal --licence-key-sha256 HEX`. --lease-s\n"
            "        sets the lease the enclave must renew within (1..86400, default 900 = 15 min);\n"
            "        --out writes the public key (DER).\n"
            "create  issues a licence: --credential-out FILE generates the consumer's credential (32\n"
            "        random bytes, 64 hex characters) into FILE (mode 0600, must not exist); or give\n"
            "        --credential-sha256 of a credential made elsewhere. The key service stores only\n"
            "        the SHA-256. Validity NotBefore..NotAfter (default now .. now + --days, 365),\n"
            "        quotas per --period-s (default 30 days; 0 = no limit), --rate-per-min.\n"
            "revoke  revokes (a new serial): running enclaves refuse it from their next renewal.\n"
            "usage   use per licence (consumer) and period from the enclaves' signed usage reports,\n"
            "        and the report events the key service noticed (gap, replay, reorder, altered).\n");
}

struct cl_lic_cli {
    const char *url, *key_id, *region, *id, *consumer, *digest, *cred_out, *cred_sha, *out;
    uint64_t lease_s, not_before, not_after, days, period_s, max_req, max_tok, rate;
    bool has_lease, has_nb, has_na, has_days, has_period, json;
};

static int cl_lic_cli_call(const char *cmd, const struct cl_lic_cli *a, const char *op, json_t *req, json_t **resp)
{
    int status = CL_EXIT_FAIL;
    void *mem = NULL;
    char region[64] = "us-east-1", *body = NULL;
    cl_err rc;
    if ((rc = cl_secmem_alloc(sizeof(struct cl_kmsc_credentials), &mem)) != CL_OK ||
        (rc = cl_kmsc_credentials_load(mem)) != CL_OK) {
        status = cl_cli_fail(cmd, "credentials", rc);
        goto out;
    }
    if (a->region)
        snprintf(region, sizeof(region), "%s", a->region);
    else if ((rc = cl_kmsc_region_load(region, sizeof(region))) != CL_OK) {
        status = cl_cli_fail(cmd, "region", rc);
        goto out;
    }
    struct cl_kmsc_endpoint ep = {.url = a->url, .region = region};
    json_object_set_new(req, "KeyId", json_string(a->key_id));
    body = json_dumps(req, JSON_COMPACT);
    if (!body || (rc = cl_kmsc_call(&ep, mem, op, body, resp)) != CL_OK) {
        status = cl_cli_fail(cmd, op, body ? rc : CL_E_CORE_NOMEM);
        goto out;
    }
    status = CL_EXIT_OK;
out:
    if (mem)
        cl_kmsc_credentials_wipe(mem);
    cl_secmem_free(mem);
    free(body);
    return status;
}

static void cl_lic_cli_print(const json_t *l)
{
    time_t nb = (time_t)json_integer_value(json_object_get(l, "NotBefore"));
    time_t na = (time_t)json_integer_value(json_object_get(l, "NotAfter"));
    char b1[32], b2[32];
    struct tm t1, t2;
    strftime(b1, sizeof(b1), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&nb, &t1));
    strftime(b2, sizeof(b2), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&na, &t2));
    printf("%-20s %-24s serial %-4lld %s  %s..%s  period %llds  max_requests %lld  max_tokens %lld  rate %lld/min\n",
           json_string_value(json_object_get(l, "LicenceId")), json_string_value(json_object_get(l, "Consumer")),
           (long long)json_integer_value(json_object_get(l, "Serial")),
           json_is_true(json_object_get(l, "Revoked")) ? "REVOKED" : "active ", b1, b2,
           (long long)json_integer_value(json_object_get(l, "PeriodSeconds")),
           (long long)json_integer_value(json_object_get(l, "MaxRequests")),
           (long long)json_integer_value(json_object_get(l, "MaxTokens")),
           (long long)json_integer_value(json_object_get(l, "RatePerMinute")));
}

static void cl_lic_cli_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s)
        printf("%s\n", s);
    free(s);
}

/* A fresh credential into a new 0600 file; hex receives its SHA-256. */
static cl_err cl_lic_cli_new_credential(const char *path, char hex[65])
{
    cl_err rc = CL_OK;
    uint8_t r[32], h[32];
    char *cred = NULL;
    CL_GUARD(cl_secmem_alloc(66, (void **)&cred));
    CL_GUARD(cl_random_bytes(r, sizeof(r)));
    cl_hex_encode(r, sizeof(r), cred);
    CL_GUARD(cl_licence_credential_hash((const uint8_t *)cred, 64, h));
    cred[64] = '\n';
    CL_GUARD(cl_file_write_atomic(path, cred, 65, 0600, 1));
    cl_hex_encode(h, sizeof(h), hex);
out:
    cl_wipe(r, sizeof(r));
    if (cred)
        cl_wipe(cred, 66);
    cl_secmem_free(cred);
    return rc;
}

static bool cl_lic_cli_hex64(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdefABCDEF") == 64;
}


int cl_cmd_kms_licence(int argc, char **argv)
{
    /* argv[0] = "kms", argv[1] = "licence" or "usage", argv[2] = verb */
    bool usage = !strcmp(argv[1], "usage");
    const char *verb = usage ? "usage" : argc > 2 ? argv[2] : "";
    char cmd[48];
    snprintf(cmd, sizeof(cmd), usage ? "kms usage" : "kms licence %.20s", verb);
    if (!usage && (argc < 3 || cl_cli_is_help(argv[2]))) {
        cl_lic_cli_help(argc < 3 ? stderr : stdout);
        return argc < 3 ? CL_EXIT_USAGE : CL_EXIT_OK;
    }
    static const char *const verbs[] = {"key", "create", "list", "show", "revoke", "usage"};
    bool known = false;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        known |= !strcmp(verb, verbs[i]);
    if (!known)
        return cl_cli_usage_error("kms licence", "unknown subcommand '%s' (key, create, list, show or revoke)", verb);
    enum { O_KMS = 256, O_KEY, O_REGION, O_ID, O_CONSUMER, O_DIGEST, O_CREDOUT, O_CREDSHA, O_OUT, O_LEASE, O_NB,
           O_NA, O_DAYS, O_PERIOD, O_MAXREQ, O_MAXTOK, O_RATE };
    static const struct option opts[] = {
        {"kms", required_argument, 0, O_KMS}, {"key-id", required_argument, 0, O_KEY},
        {"region", required_argument, 0, O_REGION}, {"id", required_argument, 0, O_ID},
        {"consumer", required_argument, 0, O_CONSUMER}, {"model-digest", required_argument, 0, O_DIGEST},
        {"credential-out", required_argument, 0, O_CREDOUT}, {"credential-sha256", required_argument, 0, O_CREDSHA},
        {"out", required_argument, 0, O_OUT}, {"lease-s", required_argument, 0, O_LEASE},
        {"not-before", required_argument, 0, O_NB}, {"not-after", required_argument, 0, O_NA},
        {"days", required_argument, 0, O_DAYS}, {"period-s", required_argument, 0, O_PERIOD},
        {"max-requests", required_argument, 0, O_MAXREQ}, {"max-tokens", required_argument, 0, O_MAXTOK},
        {"rate-per-min", required_argument, 0, O_RATE}, CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, CL_CLI_OPT_END};
    struct cl_lic_cli a;
    memset(&a, 0, sizeof(a));
    struct cl_cli_args args = {.cmd = cmd, .help = cl_lic_cli_help, .longopts = opts, .json = &a.json};
    int skip = usage ? 1 : 2;
    const uint64_t big = UINT64_MAX >> 12;
    for (int c; (c = cl_cli_next(&args, argc - skip, argv + skip)) != -1;) {
        switch (c) {
        case O_KMS: a.url = optarg; break;
        case O_KEY: a.key_id = optarg; break;
        case O_REGION: a.region = optarg; break;
        case O_ID: a.id = optarg; break;
        case O_CONSUMER: a.consumer = optarg; break;
        case O_DIGEST: a.digest = optarg; break;
        case O_CREDOUT: a.cred_out = optarg; break;
        case O_CREDSHA: a.cred_sha = optarg; break;
        case O_OUT: a.out = optarg; break;
        case O_LEASE:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 86400, &a.lease_s, "--lease-s needs %s", "1..86400 seconds"))
                return CL_EXIT_USAGE;
            a.has_lease = true;
            break;
        case O_NB:
            if (!cl_cli_u64_opt(cmd, optarg, 0, CL_LICENCE_TIME_MAX, &a.not_before, "--not-before needs %s",
                                "Unix seconds"))
                return CL_EXIT_USAGE;
            a.has_nb = true;
            break;
        case O_NA:
            if (!cl_cli_u64_opt(cmd, optarg, 1, CL_LICENCE_TIME_MAX, &a.not_after, "--not-after needs %s",
                                "Unix seconds"))
                return CL_EXIT_USAGE;
            a.has_na = true;
            break;
        case O_DAYS:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 36500, &a.days, "--days needs %s", "1..36500"))
                return CL_EXIT_USAGE;
            a.has_days = true;
            break;
        case O_PERIOD:
            if (!cl_cli_u64_opt(cmd, optarg, 1, CL_LICENCE_PERIOD_MAX, &a.period_s, "--period-s needs %s",
                                "1..31622400 seconds"))
                return CL_EXIT_USAGE;
            a.has_period = true;
            break;
        case O_MAXREQ:
            if (!cl_cli_u64_opt(cmd, optarg, 0, big, &a.max_req, "--max-requests needs %s", "a count (0 = no limit)"))
                return CL_EXIT_USAGE;
            break;
        case O_MAXTOK:
            if (!cl_cli_u64_opt(cmd, optarg, 0, big, &a.max_tok, "--max-tokens needs %s", "a count (0 = no limit)"))
                return CL_EXIT_USAGE;
            break;
        case O_RATE:
            if (!cl_cli_u64_opt(cmd, optarg, 0, big, &a.rate, "--rate-per-min needs %s", "a count (0 = no limit)"))
                return CL_EXIT_USAGE;
            break;
        default: return args.exit;
        }
    }
    if (optind != argc - skip)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[skip + optind]);
    if (!a.url || !a.key_id)
        return cl_cli_usage_error(cmd, "--kms URL and --key-id K are required");
    bool needs_id = !strcmp(verb, "create") || !strcmp(verb, "show") || !strcmp(verb, "revoke");
    if (needs_id && (!a.id || !cl_licence_id_valid(a.id)))
        return cl_cli_usage_error(cmd, "--id must be [A-Za-z0-9._-]{1,64}");
    if (!strcmp(verb, "create")) {
        if (!a.consumer || !cl_licence_consumer_valid(a.consumer))
            return cl_cli_usage_error(cmd, "--consumer must be 1..128 printable characters without '\"' or '\\'");
        if (!a.digest || !cl_lic_cli_hex64(a.digest))
            return cl_cli_usage_error(cmd, "--model-digest must be 64 hex digits (the sealed model's sha256)");
        if (!!a.cred_out == !!a.cred_sha)
            return cl_cli_usage_error(cmd, "give exactly one of --credential-out FILE or --credential-sha256 HEX");
        if (a.cred_sha && !cl_lic_cli_hex64(a.cred_sha))
            return cl_cli_usage_error(cmd, "--credential-sha256 must be 64 hex digits");
        if (a.has_na && a.has_days)
            return cl_cli_usage_error(cmd, "give --not-after or --days, not both");
        if (a.cred_out && access(a.cred_out, F_OK) == 0) {
            fprintf(stderr, "cloister %s: %s already exists: refusing to overwrite a credential\n", cmd, a.cred_out);
            return CL_EXIT_FAIL;
        }
    }
    if (cl_cli_harden(cmd) != CL_EXIT_OK)
        return CL_EXIT_FAIL;

    int status = CL_EXIT_FAIL;
    json_t *req = json_object(), *resp = NULL;
    char hex[65];
    const char *op = !strcmp(verb, "key")      ? "CloisterGetLicenceKey"
                     : !strcmp(verb, "create") ? "CloisterCreateLicence"
                     : !strcmp(verb, "list")   ? "CloisterListLicences"
                     : !strcmp(verb, "show")   ? "CloisterDescribeLicence"
                     : !strcmp(verb, "revoke") ? "CloisterRevokeLicence"
                                               : "CloisterGetUsage";
    if (a.id)
        json_object_set_new(req, "LicenceId", json_string(a.id));
    if (!strcmp(verb, "key") && a.has_lease)
        json_object_set_new(req, "LeaseSeconds", json_integer((json_int_t)a.lease_s));
    if (!strcmp(verb, "create")) {
        uint64_t nb = a.has_nb ? a.not_before : (uint64_t)time(NULL);
        uint64_t na = a.has_na ? a.not_after : nb + (a.has_days ? a.days : 365) * 86400ull;
        if (na <= nb || na > CL_LICENCE_TIME_MAX) {
            status = cl_cli_usage_error(cmd, "the licence must end after it begins (and before year 10000)");
            goto out;
        }
        if (a.cred_out) {
            cl_err rc = cl_lic_cli_new_credential(a.cred_out, hex);
            if (rc != CL_OK) {
                status = cl_cli_fail(cmd, a.cred_out, rc);
                goto out;
            }
        } else {
            for (size_t i = 0; i < 64; i++)
                hex[i] = (char)((a.cred_sha[i] >= 'A' && a.cred_sha[i] <= 'F') ? a.cred_sha[i] + 32 : a.cred_sha[i]);
            hex[64] = 0;
        }
        char dg[65];
        for (size_t i = 0; i < 64; i++)
            dg[i] = (char)((a.digest[i] >= 'A' && a.digest[i] <= 'F') ? a.digest[i] + 32 : a.digest[i]);
        dg[64] = 0;
        json_object_set_new(req, "Consumer", json_string(a.consumer));
        json_object_set_new(req, "CredentialSha256", json_string(hex));
        json_object_set_new(req, "ModelSha256", json_string(dg));
        json_object_set_new(req, "NotBefore", json_integer((json_int_t)nb));
        json_object_set_new(req, "NotAfter", json_integer((json_int_t)na));
        json_object_set_new(req, "PeriodSeconds", json_integer((json_int_t)(a.has_period ? a.period_s : 30 * 86400)));
        json_object_set_new(req, "MaxRequests", json_integer((json_int_t)a.max_req));
        json_object_set_new(req, "MaxTokens", json_integer((json_int_t)a.max_tok));
        json_object_set_new(req, "RatePerMinute", json_integer((json_int_t)a.rate));
    }
    if ((status = cl_lic_cli_call(cmd, &a, op, req, &resp)) != CL_EXIT_OK) {
        if (a.cred_out) /* no licence for it: the credential file would only mislead */
            (void)remove(a.cred_out);
        goto out;
    }
    status = CL_EXIT_FAIL;
    if (!strcmp(verb, "key")) {
        const char *sha = json_string_value(json_object_get(resp, "PublicKeySha256"));
        if (!sha) {
            fprintf(stderr, "cloister %s: response has no PublicKeySha256\n", cmd);
            goto out;
        }
        if (a.out) {
            struct cl_buf der;
            const char *b64 = json_string_value(json_object_get(resp, "PublicKey"));
            cl_buf_init(&der, 2048, CL_BUF_NONE);
            cl_err rc = b64 ? cl_b64_decode(b64, strlen(b64), CL_B64_STD, &der) : CL_E_CORE_INVALID_ARG;
            if (rc == CL_OK)
                rc = cl_file_write_atomic(a.out, der.data, der.len, 0644, 0);
            cl_buf_free(&der);
            if (rc != CL_OK) {
                status = cl_cli_fail(cmd, a.out, rc);
                goto out;
            }
        }
        if (a.json)
            cl_lic_cli_json(resp);
        else
            printf("%s\n", sha);
        if (!a.json)
            fprintf(stderr, "licence key for %s: seal with --licence-key-sha256 %s (lease %lld s)\n",
                    json_string_value(json_object_get(resp, "KeyId")), sha,
                    (long long)json_integer_value(json_object_get(resp, "LeaseSeconds")));
    } else if (!strcmp(verb, "list")) {
        json_t *arr = json_object_get(resp, "Licences"), *l;
        size_t i;
        if (a.json)
            cl_lic_cli_json(arr);
        else
            json_array_foreach(arr, i, l) cl_lic_cli_print(l);
    } else if (!strcmp(verb, "usage")) {
        if (a.json) {
            cl_lic_cli_json(resp);
        } else {
            json_t *arr = json_object_get(resp, "Usage"), *u;
            size_t i;
            printf("%-20s %-24s %-20s %10s %14s %18s %8s\n", "licence", "consumer", "period_start", "requests",
                   "prompt_tokens", "completion_tokens", "enclaves");
            json_array_foreach(arr, i, u) {
                time_t ps = (time_t)json_integer_value(json_object_get(u, "PeriodStart"));
                char b[32];
                struct tm tmv;
                strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&ps, &tmv));
                printf("%-20s %-24s %-20s %10lld %14lld %18lld %8lld\n",
                       json_string_value(json_object_get(u, "LicenceId")),
                       json_string_value(json_object_get(u, "Consumer")), b,
                       (long long)json_integer_value(json_object_get(u, "Requests")),
                       (long long)json_integer_value(json_object_get(u, "PromptTokens")),
                       (long long)json_integer_value(json_object_get(u, "CompletionTokens")),
                       (long long)json_integer_value(json_object_get(u, "Enclaves")));
            }
            arr = json_object_get(resp, "Events");
            json_array_foreach(arr, i, u)
                printf("event: %s report %lld of enclave %.16s: %s\n", json_string_value(json_object_get(u, "Kind")),
                       (long long)json_integer_value(json_object_get(u, "ReportSeq")),
                       json_string_value(json_object_get(u, "Enclave")),
                       json_string_value(json_object_get(u, "Detail")));
        }
    } else {
        json_t *l = json_object_get(resp, "Licence");
        if (a.json)
            cl_lic_cli_json(l);
        else
            cl_lic_cli_print(l);
        if (a.cred_out && !a.json)
            fprintf(stderr, "credential written to %s (mode 0600): hand it to the consumer; the key service keeps "
                            "only its SHA-256\n",
                    a.cred_out);
    }
    status = CL_EXIT_OK;
out:
    json_decref(req);
    json_decref(resp);
    return status;
}
