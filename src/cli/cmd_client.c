/* `cloister measure`, `cloister ask`, `cloister chat`: the consumer's side.
 * measure writes TRUST.json (docs/formats/trust.md); ask and chat verify a
 * fresh attestation against it before the question leaves the machine. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/bootcfg.h"
#include "cloister/client.h"
#include "cloister/image.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/seal.h"
#include "cloister/secmem.h"

#define CL_CMDC_MAX_PCR_FILE (1 << 20)
#define CL_CMDC_MAX_QUESTION ((size_t)1 << 20)
#define CL_CMDC_MAX_LINE ((size_t)64 << 10)

/* ---------------------------------------------------------------- measure */

static void cl_measure_help(FILE *f)
{
    fprintf(f,
            "usage: cloister measure (--sim-image IMAGE | --nitro-pcrs FILE.json | --pcr N=HEX... | --debug)\n"
            "                        --root ROOT.pem (--model MODEL.sealed | --model-sha256 HEX)\n"
            "                        -o TRUST.json [--max-age SECS] [--allow-debug] [--force]\n"
            "                        [--kms-key-arn ARN] [--kms-endpoint URL] [--kms-ca FILE|none]\n"
            "                        [--config-sha256 HEX] [--mmproj PROJECTOR.sealed | --mmproj-sha256 HEX]\n\n"
            "Writes TRUST.json (docs/formats/trust.md): what `cloister ask` and `cloister chat` pin\n"
            "before they send anything to an enclave.\n\n"
            "  --sim-image IMAGE     PCR0-2 of a cloister-sim enclave image (as `cloister-sim measure`)\n"
            "  --nitro-pcrs FILE     nitro-cli build-enclave/describe-eif JSON output:\n"
            "                        {\"Measurements\": {\"HashAlgorithm\": \"Sha384 { ... }\", \"PCR0\": ..}}\n"
            "  --pcr N=HEX           an expected PCR (0-31, 96 hex digits); repeatable; adds to the above\n"
            "  --root ROOT.pem       attestation root certificate (cloister-sim root, or the AWS Nitro root)\n"
            "  --model MODEL.sealed  the sealed model: its header's plaintext SHA-256 is pinned\n"
            "  --model-sha256 HEX    the model digest given directly instead\n"
            "  --kms-key-arn ARN     pin the key the enclave's model key must come from (default: the\n"
            "                        key ARN in the sealed model's header, when --model names one)\n"
            "  --kms-endpoint URL    pin the key-service endpoint the enclave connects to\n"
            "  --kms-ca FILE|none    pin the extra CA the host gives the enclave for that endpoint\n"
            "                        (its PEM file), or none: a CA from the host is then refused\n"
            "  --config-sha256 HEX   pin the enclave's whole public configuration (limits, key service)\n"
            "  --mmproj FILE         the sealed vision projector: its digest is pinned, and an enclave\n"
            "                        without exactly this projector is refused\n"
            "  --mmproj-sha256 HEX   the projector digest given directly instead\n"
            "  -o, --output FILE     where to write TRUST.json (refuses to overwrite without --force)\n"
            "  --max-age SECS        attestation freshness window, 1-86400 (default 300)\n"
            "  --allow-debug         accept debug-mode enclaves (PCR0-2 zero): never for real data\n"
            "  --debug               pin a debug-mode enclave: PCR0-2 all zero, implies --allow-debug\n"
            "                        (a debug enclave reports zeros, not its image's measurements)\n\n"
            "exit status: 0 written, 1 failure, 2 usage error.\n");
}

static bool cl_measure_parse_pcr(const char *arg, struct cl_trust *t)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || eq - arg > 2)
        return false;
    char idx[3] = {0};
    memcpy(idx, arg, (size_t)(eq - arg));
    uint64_t i;
    if (!cl_cli_parse_u64(idx, 0, CL_ATTEST_MAX_PCRS - 1, &i))
        return false;
    if (cl_hex_decode_fixed(eq + 1, strlen(eq + 1), t->pcr[i], CL_ATTEST_PCR_LEN) != CL_OK)
        return false;
    t->pcr_present |= 1u << i;
    return true;
}

/* nitro-cli prints {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": hex, ...}};
 * describe-eif adds other top-level keys, which are ignored. */
static cl_err cl_measure_nitro(const char *path, struct cl_trust *t)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    json_t *root = NULL;
    cl_buf_init(&b, CL_CMDC_MAX_PCR_FILE, CL_BUF_NONE);
    CL_GUARD(cl_file_read(path, CL_CMDC_MAX_PCR_FILE, &b));
    json_error_t jerr;
    root = json_loadb(b.data ? (const char *)b.data : "", b.len, JSON_REJECT_DUPLICATES, &jerr);
    CL_ENSURE_D(root && json_is_object(root), CL_E_CLI_USAGE, "%s: not a JSON object (line %d)", path, jerr.line);
    json_t *m = json_object_get(root, "Measurements");
    CL_ENSURE_D(json_is_object(m), CL_E_CLI_USAGE, "%s: no \"Measurements\" object", path);
    const char *key;
    json_t *val;
    bool alg = false;
    json_object_foreach(m, key, val) {
        if (!strcmp(key, "HashAlgorithm")) {
            CL_ENSURE_D(json_is_string(val) && !strncmp(json_string_value(val), "Sha384", 6), CL_E_CLI_USAGE,
                        "%s: Measurements.HashAlgorithm is not Sha384", path);
            alg = true;
            continue;
        }
        uint64_t i;
        CL_ENSURE_D(!strncmp(key, "PCR", 3) && cl_cli_parse_u64(key + 3, 0, CL_ATTEST_MAX_PCRS - 1, &i),
                    CL_E_CLI_USAGE, "%s: unexpected key in Measurements", path);
        CL_ENSURE_D(json_is_string(val) && cl_hex_decode_fixed(json_string_value(val), json_string_length(val),
                                                               t->pcr[i], CL_ATTEST_PCR_LEN) == CL_OK,
                    CL_E_CLI_USAGE, "%s: Measurements.PCR%u is not 96 hex digits", path, (unsigned)i);
        t->pcr_present |= 1u << i;
    }
    CL_ENSURE_D(alg, CL_E_CLI_USAGE, "%s: Measurements.HashAlgorithm missing", path);
out:
    json_decref(root);
    cl_buf_free(&b);
    return rc;
}

static cl_err cl_measure_sim(const char *path, struct cl_trust *t)
{
    cl_err rc = CL_OK;
    struct cl_buf img;
    uint8_t pcr[3][CL_ATTEST_PCR_LEN];
    cl_buf_init(&img, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_file_read(path, CL_SIM_IMAGE_MAX, &img));
    CL_GUARD(cl_sim_image_measure(img.data ? img.data : (const uint8_t *)"", img.len, pcr));
    for (unsigned i = 0; i < 3; i++) {
        memcpy(t->pcr[i], pcr[i], CL_ATTEST_PCR_LEN);
        t->pcr_present |= 1u << i;
    }
out:
    cl_buf_free(&img);
    return rc;
}

static cl_err cl_measure_model(const char *path, uint8_t digest[32], char *key_id, size_t cap)
{
    cl_err rc = CL_OK;
    struct cl_buf raw;
    struct cl_seal_header *h = NULL;
    cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        CL_GUARD(cl_err_from_errno(errno, "open sealed model"));
    h = calloc(1, sizeof(*h));
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_seal_read_header(fd, &raw, h));
    memcpy(digest, h->digest, 32);
    snprintf(key_id, cap, "%s", h->provider == CL_SEAL_PROVIDER_KMS ? h->key_id : "");
out:
    if (fd >= 0)
        close(fd);
    free(h);
    cl_buf_free(&raw);
    return rc;
}

int cl_cmd_measure(int argc, char **argv)
{
    const char *cmd = "measure";
    const char *sim = NULL, *nitro = NULL, *root = NULL, *model = NULL, *model_hex = NULL, *outp = NULL;
    const char *kms_arn = NULL, *kms_ep = NULL, *kms_ca = NULL, *config_hex = NULL, *mmproj = NULL,
               *mmproj_hex = NULL;
    bool force = false, debug = false;
    struct cl_trust t;
    memset(&t, 0, sizeof(t));
    t.max_age_seconds = CL_TRUST_MAX_AGE_DEFAULT;
    struct cl_trust extra;
    memset(&extra, 0, sizeof(extra));
    enum {
        O_ALLOW_DEBUG = 256, O_FORCE, O_DEBUG, O_SIM, O_NITRO, O_ROOT, O_MODEL, O_MODEL_SHA, O_PCR, O_MAX_AGE,
        O_KMS_ARN, O_KMS_EP, O_KMS_CA, O_CONFIG_SHA, O_MMPROJ, O_MMPROJ_SHA,
    };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP,
        {"allow-debug", no_argument, NULL, O_ALLOW_DEBUG},
        {"force", no_argument, NULL, O_FORCE},
        {"debug", no_argument, NULL, O_DEBUG},
        {"sim-image", required_argument, NULL, O_SIM},
        {"nitro-pcrs", required_argument, NULL, O_NITRO},
        {"root", required_argument, NULL, O_ROOT},
        {"model", required_argument, NULL, O_MODEL},
        {"model-sha256", required_argument, NULL, O_MODEL_SHA},
        {"output", required_argument, NULL, 'o'},
        {"pcr", required_argument, NULL, O_PCR},
        {"max-age", required_argument, NULL, O_MAX_AGE},
        {"kms-key-arn", required_argument, NULL, O_KMS_ARN},
        {"kms-endpoint", required_argument, NULL, O_KMS_EP},
        {"kms-ca", required_argument, NULL, O_KMS_CA},
        {"config-sha256", required_argument, NULL, O_CONFIG_SHA},
        {"mmproj", required_argument, NULL, O_MMPROJ},
        {"mmproj-sha256", required_argument, NULL, O_MMPROJ_SHA},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args a = {.cmd = cmd, .help = cl_measure_help, .shortopts = "o:", .longopts = opts};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case O_ALLOW_DEBUG: t.allow_debug = true; break;
        case O_FORCE: force = true; break;
        case O_DEBUG:
            debug = true;
            t.allow_debug = true;
            break;
        case O_SIM: sim = optarg; break;
        case O_NITRO: nitro = optarg; break;
        case O_ROOT: root = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_MODEL_SHA: model_hex = optarg; break;
        case 'o': outp = optarg; break;
        case O_KMS_ARN: kms_arn = optarg; break;
        case O_KMS_EP: kms_ep = optarg; break;
        case O_KMS_CA: kms_ca = optarg; break;
        case O_CONFIG_SHA: config_hex = optarg; break;
        case O_MMPROJ: mmproj = optarg; break;
        case O_MMPROJ_SHA: mmproj_hex = optarg; break;
        case O_PCR:
            if (!cl_measure_parse_pcr(optarg, &extra))
                return cl_cli_usage_error(cmd, "--pcr expects N=HEX with N 0-31 and 96 hex digits");
            break;
        case O_MAX_AGE:
            if (!cl_cli_u64_opt(cmd, optarg, 1, CL_TRUST_MAX_AGE_LIMIT, &t.max_age_seconds,
                                "--max-age expects 1-%d seconds", CL_TRUST_MAX_AGE_LIMIT))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (sim && nitro)
        return cl_cli_usage_error(cmd, "--sim-image and --nitro-pcrs are exclusive");
    if (debug && (sim || nitro))
        return cl_cli_usage_error(cmd, "--debug pins zero PCRs: it excludes --sim-image and --nitro-pcrs");
    if (!sim && !nitro && !extra.pcr_present && !debug)
        return cl_cli_usage_error(cmd, "one of --sim-image, --nitro-pcrs, --pcr or --debug is required");
    if (!root)
        return cl_cli_usage_error(cmd, "--root is required");
    if (!!model == !!model_hex)
        return cl_cli_usage_error(cmd, "exactly one of --model and --model-sha256 is required");
    if (!outp)
        return cl_cli_usage_error(cmd, "-o TRUST.json is required");
    if (model_hex && cl_hex_decode_fixed(model_hex, strlen(model_hex), t.model_sha256, 32) != CL_OK)
        return cl_cli_usage_error(cmd, "--model-sha256 expects 64 hex digits");
    if (config_hex && cl_hex_decode_fixed(config_hex, strlen(config_hex), t.config_sha256, 32) != CL_OK)
        return cl_cli_usage_error(cmd, "--config-sha256 expects 64 hex digits");
    t.pin_config = config_hex != NULL;
    if (mmproj && mmproj_hex)
        return cl_cli_usage_error(cmd, "--mmproj and --mmproj-sha256 are exclusive");
    if (mmproj_hex && cl_hex_decode_fixed(mmproj_hex, strlen(mmproj_hex), t.mmproj_sha256, 32) != CL_OK)
        return cl_cli_usage_error(cmd, "--mmproj-sha256 expects 64 hex digits");
    t.pin_mmproj = mmproj || mmproj_hex;
    if ((kms_ep || kms_ca) && !kms_arn && !model)
        return cl_cli_usage_error(cmd, "--kms-endpoint and --kms-ca need the key: --kms-key-arn or --model");
    if (kms_arn && (strlen(kms_arn) >= sizeof(t.kms_key_arn) || !*kms_arn))
        return cl_cli_usage_error(cmd, "--kms-key-arn: 1-%zu characters", sizeof(t.kms_key_arn) - 1);
    if (kms_ep && (strlen(kms_ep) >= sizeof(t.kms_endpoint) || !*kms_ep))
        return cl_cli_usage_error(cmd, "--kms-endpoint: 1-%zu characters", sizeof(t.kms_endpoint) - 1);
    if (kms_arn)
        snprintf(t.kms_key_arn, sizeof(t.kms_key_arn), "%s", kms_arn);
    if (kms_ep) {
        snprintf(t.kms_endpoint, sizeof(t.kms_endpoint), "%s", kms_ep);
        t.pin_kms_endpoint = true;
    }

    int ret = CL_EXIT_FAIL;
    cl_err rc;
    struct cl_buf rootb, der, out;
    cl_buf_init(&rootb, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&der, CL_ATTEST_MAX_CERT, CL_BUF_NONE);
    cl_buf_init(&out, CL_TRUST_MAX_FILE, CL_BUF_NONE);
    if (sim && (rc = cl_measure_sim(sim, &t)) != CL_OK) {
        ret = cl_cli_fail(cmd, sim, rc);
        goto done;
    }
    if (nitro && (rc = cl_measure_nitro(nitro, &t)) != CL_OK) {
        ret = cl_cli_fail(cmd, nitro, rc);
        goto done;
    }
    if (debug)
        t.pcr_present |= 0x7; /* zeros already */
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (extra.pcr_present & (1u << i)) {
            memcpy(t.pcr[i], extra.pcr[i], CL_ATTEST_PCR_LEN);
            t.pcr_present |= 1u << i;
        }
    for (unsigned i = 0; i < 3; i++)
        if (!(t.pcr_present & (1u << i))) {
            fprintf(stderr, "cloister measure: PCR%u is not known (give --pcr %u=HEX)\n", i, i);
            ret = CL_EXIT_USAGE;
            goto done;
        }
    if ((rc = cl_file_read(root, 1 << 20, &rootb)) != CL_OK ||
        (rc = cl_attest_cert_to_der(rootb.data ? rootb.data : (const uint8_t *)"", rootb.len, &der)) != CL_OK) {
        ret = cl_cli_fail(cmd, root, rc);
        goto done;
    }
    t.root_der = der.data;
    t.root_len = der.len;
    char header_key[CL_SEAL_MAX_KEY_ID + 1] = "";
    if (model && (rc = cl_measure_model(model, t.model_sha256, header_key, sizeof(header_key))) != CL_OK) {
        ret = cl_cli_fail(cmd, model, rc);
        goto done;
    }
    char mmproj_key[CL_SEAL_MAX_KEY_ID + 1] = "";
    if (mmproj && (rc = cl_measure_model(mmproj, t.mmproj_sha256, mmproj_key, sizeof(mmproj_key))) != CL_OK) {
        ret = cl_cli_fail(cmd, mmproj, rc);
        goto done;
    }
    if (mmproj && model && strcmp(mmproj_key, header_key) != 0) {
        fprintf(stderr, "cloister measure: the projector is sealed under another key than the model; an enclave "
                        "refuses that: seal both with the same --kms-key\n");
        ret = CL_EXIT_FAIL;
        goto done;
    }
    /* The key named in the sealed header, when it is a key ARN (what the
     * key service answers and the enclave attests). */
    if (!kms_arn && !strncmp(header_key, "arn:", 4) && strstr(header_key, ":key/") &&
        strlen(header_key) < sizeof(t.kms_key_arn))
        memcpy(t.kms_key_arn, header_key, strlen(header_key) + 1); /* length checked just above */
    if ((kms_ep || kms_ca) && !t.kms_key_arn[0]) {
        fprintf(stderr, "cloister measure: the sealed header names no key ARN: give --kms-key-arn\n");
        ret = CL_EXIT_USAGE;
        goto done;
    }
    t.pin_kms = t.kms_key_arn[0] != 0;
    if (kms_ca && !strcmp(kms_ca, "none")) {
        t.pin_kms_ca = t.kms_ca_none = true;
    } else if (kms_ca) {
        struct cl_buf pem;
        cl_buf_init(&pem, CL_BOOTCFG_MAX_CA_PEM, CL_BUF_NONE);
        rc = cl_file_read(kms_ca, CL_BOOTCFG_MAX_CA_PEM, &pem);
        if (rc == CL_OK)
            rc = cl_sha256(pem.data ? pem.data : (const uint8_t *)"", pem.len, t.kms_ca_sha256);
        cl_buf_free(&pem);
        if (rc != CL_OK) {
            ret = cl_cli_fail(cmd, kms_ca, rc);
            goto done;
        }
        t.pin_kms_ca = true;
    }
    if ((rc = cl_trust_encode(&t, &out)) != CL_OK ||
        (rc = cl_file_write_atomic(outp, out.data, out.len, 0644, !force)) != CL_OK) {
        ret = cl_cli_fail(cmd, outp, rc);
        goto done;
    }
    char hex[2 * CL_ATTEST_PCR_LEN + 1];
    fprintf(stderr, "cloister measure: wrote %s\n", outp);
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (t.pcr_present & (1u << i)) {
            cl_hex_encode(t.pcr[i], CL_ATTEST_PCR_LEN, hex);
            fprintf(stderr, "  PCR%-2u  %s\n", i, hex);
        }
    cl_hex_encode(t.model_sha256, 32, hex);
    fprintf(stderr, "  model  %s\n", hex);
    if (t.pin_mmproj) {
        cl_hex_encode(t.mmproj_sha256, 32, hex);
        fprintf(stderr, "  mmproj %s\n", hex);
    }
    if (t.pin_kms)
        fprintf(stderr, "  key    %s%s%s\n", t.kms_key_arn, t.pin_kms_endpoint ? " at " : "",
                t.pin_kms_endpoint ? t.kms_endpoint : "");
    ret = CL_EXIT_OK;
done:
    t.root_der = NULL;
    cl_buf_free(&rootb);
    cl_buf_free(&der);
    cl_buf_free(&out);
    return ret;
}

/* ------------------------------------------------------------ ask / chat */

#define CL_CMDC_MAX_IMAGES 16
#define CL_CMDC_MAX_IMAGE_FILE ((size_t)32 << 20)

struct cl_askopt {
    const char *host, *trust, *system, *question;
    const char *credential_file;
    const char *images[CL_CMDC_MAX_IMAGES];
    size_t n_images;
    bool stream, json;
    struct cl_client_params p;
    uint64_t timeout_s;
};

static void cl_ask_help(FILE *f, const char *cmd)
{
    bool ask = !strcmp(cmd, "ask");
    if (ask)
        fprintf(f, "usage: cloister ask --host URL --trust TRUST.json [--stream] [-n N] [--temp T] [--top-p P]\n"
                   "                    [--seed S] [--system TEXT] [--image FILE]... [--json] [--timeout SECS]\n"
                   "                    QUESTION|-\n\n"
                   "Asks one question. QUESTION '-' (or none, with stdin not a terminal) reads it from\n"
                   "stdin, which keeps it out of the process list.\n\n");
    else
        fprintf(f, "usage: cloister chat --host URL --trust TRUST.json [-n N] [--temp T] [--top-p P]\n"
                   "                     [--seed S] [--system TEXT] [--timeout SECS]\n\n"
                   "Interactive: one message per line on stdin, answers streamed as they are produced;\n"
                   "the conversation is kept. '/image FILE' attaches an image (PNG, JPEG or DICOM) to\n"
                   "the next message. '/quit' or end of input ends it.\n\n");
    fprintf(f,
            "Before anything is sent, the enclave's attestation is requested with a fresh random nonce and\n"
            "verified against TRUST.json (see `cloister measure`): chain to the pinned root, signature,\n"
            "PCRs, nonce, freshness, model digest. The question is then encrypted (Oblivious HTTP, HPKE\n"
            "X25519/HKDF-SHA256/AES-256-GCM) to the attested key: the host sees only ciphertext. If the\n"
            "enclave restarted with a new key, the client re-attests once.\n\n"
            "  --host URL        the cloister-host endpoint, e.g. http://127.0.0.1:8080\n"
            "  --trust FILE      TRUST.json\n"
            "  -n, --max-tokens N  at most N tokens in the answer\n"
            "  --temp T          sampling temperature (0 = greedy)\n"
            "  --top-p P         nucleus sampling\n"
            "  --seed S          sampling seed\n"
            "  --system TEXT     system message\n"
            "  --image FILE      (ask) an image for the question: PNG, JPEG or DICOM, sent encrypted like\n"
            "                    the text (repeatable, up to 16; the enclave needs a vision projector)\n"
            "  --timeout SECS    limit for each HTTP exchange (default 300)\n"
            "  --credential-file FILE  consumer credential for a licensed model (else $CLOISTER_CREDENTIAL);\n"
            "                    sent only inside the encrypted request, never on the command line\n");
    if (ask)
        fprintf(f, "  --stream          print the answer token by token as it arrives\n"
                   "  --json            print {answer, finish_reason, request_id, usage, attestation} as JSON\n"
                   "                    on stdout; request_id names the enclave's signed receipt for this\n"
                   "                    request in the host's store ('cloister audit show')\n\n"
                   "The answer goes to stdout; the verified measurements to stderr (or into --json).\n");
    fprintf(f, "\nexit status: 0 answered, 1 failure (attestation refused, transport, enclave error), 2 usage.\n");
}

static void cl_ask_help_ask(FILE *f) { cl_ask_help(f, "ask"); }
static void cl_ask_help_chat(FILE *f) { cl_ask_help(f, "chat"); }

static bool cl_ask_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Returns -1 to continue, else an exit code. */
static int cl_ask_args(const char *cmd, int argc, char **argv, struct cl_askopt *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_s = 300;
    bool ask = !strcmp(cmd, "ask");
    enum { O_STREAM = 256, O_HOST, O_TRUST, O_SYSTEM, O_TEMP, O_TOP_P, O_SEED, O_TIMEOUT, O_IMAGE, O_CRED };
#define CL_ASK_OPTS                                                                                                     \
    CL_CLI_OPT_HELP, {"host", required_argument, NULL, O_HOST}, {"trust", required_argument, NULL, O_TRUST},          \
        {"system", required_argument, NULL, O_SYSTEM}, {"max-tokens", required_argument, NULL, 'n'},                    \
        {"temp", required_argument, NULL, O_TEMP}, {"top-p", required_argument, NULL, O_TOP_P},                         \
        {"seed", required_argument, NULL, O_SEED}, {"timeout", required_argument, NULL, O_TIMEOUT},      \
        {"credential-file", required_argument, NULL, O_CRED}
    static const struct option ask_opts[] = {
        CL_ASK_OPTS, CL_CLI_OPT_JSON, {"stream", no_argument, NULL, O_STREAM}, {"image", required_argument, NULL, O_IMAGE},
        CL_CLI_OPT_END};
    static const struct option chat_opts[] = {CL_ASK_OPTS, CL_CLI_OPT_END};
#undef CL_ASK_OPTS
    struct cl_cli_args a = {.cmd = cmd,
                            .help = ask ? cl_ask_help_ask : cl_ask_help_chat,
                            .shortopts = "n:",
                            .longopts = ask ? ask_opts : chat_opts,
                            .json = &o->json};
    for (int c; (c = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (c) {
        case O_STREAM: o->stream = true; break;
        case O_IMAGE:
            if (o->n_images == CL_CMDC_MAX_IMAGES)
                return cl_cli_usage_error(cmd, "at most %d --image", CL_CMDC_MAX_IMAGES);
            o->images[o->n_images++] = optarg;
            break;
        case O_HOST: o->host = optarg; break;
        case O_CRED: o->credential_file = optarg; break;
        case O_TRUST: o->trust = optarg; break;
        case O_SYSTEM: o->system = optarg; break;
        case 'n':
            if (!cl_cli_u64_opt(cmd, optarg, 1, 1u << 20, &o->p.max_tokens, "-n/--max-tokens expects a number of tokens 1-%u", 1u << 20))
                return CL_EXIT_USAGE;
            o->p.has_max_tokens = true;
            break;
        case O_TEMP:
            if (!cl_ask_parse_double(optarg, 0, 100, &o->p.temperature))
                return cl_cli_usage_error(cmd, "--temp expects a number 0-100");
            o->p.has_temperature = true;
            break;
        case O_TOP_P:
            if (!cl_ask_parse_double(optarg, 0, 1, &o->p.top_p))
                return cl_cli_usage_error(cmd, "--top-p expects a number 0-1");
            o->p.has_top_p = true;
            break;
        case O_SEED:
            if (!cl_cli_u64_opt(cmd, optarg, 0, UINT64_MAX, &o->p.seed, "--seed expects a non-negative integer"))
                return CL_EXIT_USAGE;
            o->p.has_seed = true;
            break;
        case O_TIMEOUT:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 86400, &o->timeout_s, "--timeout expects 1-86400 seconds"))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (ask && optind < argc)
        o->question = argv[optind++];
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o->host)
        return cl_cli_usage_error(cmd, "--host URL is required");
    if (!o->trust)
        return cl_cli_usage_error(cmd, "--trust TRUST.json is required");
    if (ask && !o->question) {
        if (isatty(STDIN_FILENO))
            return cl_cli_usage_error(cmd, "QUESTION is required (or '-' to read it from stdin)");
        o->question = "-";
    }
    return -1;
}

static void cl_ask_time(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "?");
}

static void cl_ask_print_attestation(FILE *f, const struct cl_client_attestation *a)
{
    char ts[64], hex[2 * CL_ATTEST_UD_MAX_AUDIT_KEY + 1];
    cl_ask_time(a->timestamp_ms, ts, sizeof(ts));
    fprintf(f, "verified enclave %s, attested %s%s\n", a->module_id, ts, a->debug ? " (DEBUG MODE)" : "");
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (a->pcr_present & (1u << i) && i < 3) {
            cl_hex_encode(a->pcr[i], CL_ATTEST_PCR_LEN, hex);
            fprintf(f, "  PCR%u    %s\n", i, hex);
        }
    cl_hex_encode(a->user_data.model_sha256, 32, hex);
    fprintf(f, "  model   %s\n", hex);
    if (a->user_data.has_mmproj) {
        cl_hex_encode(a->user_data.mmproj_sha256, 32, hex);
        fprintf(f, "  mmproj  %s\n", hex);
    }
    cl_hex_encode(a->user_data.config_sha256, 32, hex);
    fprintf(f, "  config  %s\n", hex);
    fprintf(f, "  key     %s\n  kms     %s\n", a->user_data.kms_key_arn, a->user_data.kms_endpoint);
    if (a->user_data.has_kms_ca)
        cl_hex_encode(a->user_data.kms_ca_sha256, 32, hex);
    fprintf(f, "  kms CA  %s\n", a->user_data.has_kms_ca ? hex : "none (system store)");
    fprintf(f, "  OHTTP key id %u (X25519)\n", (unsigned)a->key.key_id);
}

static json_t *cl_ask_attestation_json(const struct cl_client_attestation *a)
{
    char hex[2 * CL_ATTEST_UD_MAX_AUDIT_KEY + 1], ts[64];
    json_t *o = json_object(), *pcrs = json_object();
    if (!o || !pcrs) {
        json_decref(o);
        json_decref(pcrs);
        return NULL;
    }
    json_object_set_new(o, "module_id", json_string(a->module_id));
    json_object_set_new(o, "timestamp", json_integer((json_int_t)a->timestamp_ms));
    cl_ask_time(a->timestamp_ms, ts, sizeof(ts));
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "debug", json_boolean(a->debug));
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if (a->pcr_present & (1u << i)) {
            char k[8];
            snprintf(k, sizeof(k), "%u", i);
            cl_hex_encode(a->pcr[i], CL_ATTEST_PCR_LEN, hex);
            json_object_set_new(pcrs, k, json_string(hex));
        }
    json_object_set_new(o, "pcrs", pcrs);
    cl_hex_encode(a->user_data.model_sha256, 32, hex);
    json_object_set_new(o, "model_sha256", json_string(hex));
    cl_hex_encode(a->user_data.config_sha256, 32, hex);
    json_object_set_new(o, "config_sha256", json_string(hex));
    if (a->user_data.has_mmproj) {
        cl_hex_encode(a->user_data.mmproj_sha256, 32, hex);
        json_object_set_new(o, "mmproj_sha256", json_string(hex));
    }
    cl_hex_encode(a->user_data.audit_key, a->user_data.audit_key_len, hex);
    json_object_set_new(o, "audit_key", json_string(hex));
    json_t *k = json_object();
    if (k) {
        json_object_set_new(k, "key_arn", json_string(a->user_data.kms_key_arn));
        json_object_set_new(k, "endpoint", json_string(a->user_data.kms_endpoint));
        if (a->user_data.has_kms_ca)
            cl_hex_encode(a->user_data.kms_ca_sha256, 32, hex);
        json_object_set_new(k, "ca_sha256", json_string(a->user_data.has_kms_ca ? hex : "none"));
        json_object_set_new(o, "kms", k);
    }
    json_object_set_new(o, "ohttp_key_id", json_integer(a->key.key_id));
    return o;
}

static int cl_ask_fail(const char *cmd, cl_err rc, const struct cl_client_result *res)
{
    if (rc == CL_E_NET_CLIENT_ANSWER_STATUS && res->status) {
        fprintf(stderr, "cloister %s: the enclave answered %u%s%s%s: %s%s%s%s\n", cmd, (unsigned)res->status,
                res->error_type[0] ? " (" : "", res->error_type, res->error_type[0] ? ")" : "",
                res->error_message[0] ? res->error_message : "(no message)", res->id[0] ? " (request " : "", res->id,
                res->id[0] ? ")" : "");
        return CL_EXIT_FAIL;
    }
    return cl_cli_fail(cmd, "request", rc);
}

static cl_err cl_ask_print_token(void *arg, const char *p, size_t n)
{
    (void)arg;
    if (fwrite(p, 1, n, stdout) != n || fflush(stdout) != 0)
        return cl_err_fail(CL_E_CORE_IO, "writing the answer to stdout");
    return CL_OK;
}

static cl_err cl_ask_ignore_token(void *arg, const char *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return CL_OK;
}

/* Reads the whole of stdin into secure memory. */
static cl_err cl_ask_read_stdin(struct cl_buf *q)
{
    cl_err rc = CL_OK;
    for (;;) {
        uint8_t *p;
        CL_ENSURE_D(q->len < CL_CMDC_MAX_QUESTION, CL_E_NET_CLIENT_LIMIT, "question over %zu bytes",
                    CL_CMDC_MAX_QUESTION);
        CL_GUARD(cl_buf_reserve(q, 4096));
        p = q->data + q->len;
        ssize_t r = read(STDIN_FILENO, p, 4096);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            CL_GUARD(cl_err_from_errno(errno, "read stdin"));
        if (r == 0)
            break;
        q->len += (size_t)r;
    }
    while (q->len && (q->data[q->len - 1] == '\n' || q->data[q->len - 1] == '\r'))
        q->len--;
out:
    return rc;
}

static cl_err cl_ask_open(const char *cmd, const struct cl_askopt *o, cl_client **c)
{
    struct cl_trust t;
    cl_err rc = cl_trust_load(o->trust, &t);
    if (rc != CL_OK) {
        cl_cli_fail(cmd, o->trust, rc);
        return rc;
    }
    rc = cl_client_new(o->host, &t, c);
    cl_trust_free(&t);
    if (rc != CL_OK) {
        cl_cli_fail(cmd, o->host, rc);
        return rc;
    }
    cl_client_set_timeout_ms(*c, o->timeout_s * 1000);
    /* The licence credential: from a file or the environment, never argv. */
    const char *env = getenv("CLOISTER_CREDENTIAL");
    if (o->credential_file) {
        struct cl_buf cb;
        cl_buf_init(&cb, 1024, CL_BUF_SECURE);
        rc = cl_file_read(o->credential_file, 1024, &cb);
        if (rc == CL_OK)
            rc = cl_client_set_credential(*c, cb.data ? (const char *)cb.data : "", cb.len);
        cl_buf_free(&cb);
        if (rc != CL_OK) {
            cl_cli_fail(cmd, o->credential_file, rc);
            cl_client_free(*c);
            *c = NULL;
            return rc;
        }
    } else if (env && *env) {
        rc = cl_client_set_credential(*c, env, strlen(env));
        if (rc != CL_OK) {
            cl_cli_fail(cmd, "CLOISTER_CREDENTIAL", rc);
            cl_client_free(*c);
            *c = NULL;
            return rc;
        }
    }
    return CL_OK;
}

/* An image file for a message: read into secure memory (it is patient
 * data), its type told by its first bytes. */
static cl_err cl_ask_image(const char *path, struct cl_buf *b, struct cl_client_image *im)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_file_read(path, CL_CMDC_MAX_IMAGE_FILE, b));
    switch (cl_image_sniff(b->data, b->len)) {
    case CL_IMAGE_FMT_PNG: im->mime = "image/png"; break;
    case CL_IMAGE_FMT_JPEG: im->mime = "image/jpeg"; break;
    case CL_IMAGE_FMT_DICOM: im->mime = "application/dicom"; break;
    default: CL_FAIL(CL_E_IMAGE_FORMAT, "not PNG, JPEG or DICOM");
    }
    im->data = b->data;
    im->len = b->len;
out:
    return rc;
}

int cl_cmd_ask(int argc, char **argv)
{
    struct cl_askopt o;
    int ret = cl_ask_args("ask", argc, argv, &o);
    if (ret >= 0)
        return ret;
    if (cl_cli_harden("ask") != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    ret = CL_EXIT_FAIL;
    cl_client *c = NULL;
    struct cl_buf q;
    struct cl_client_result res;
    struct cl_buf imgb[CL_CMDC_MAX_IMAGES];
    struct cl_client_image imgs[CL_CMDC_MAX_IMAGES];
    size_t n_imgb = 0;
    cl_buf_init(&q, CL_CMDC_MAX_QUESTION + 4096, CL_BUF_SECURE);
    cl_client_result_init(&res);
    cl_err rc;
    if (!strcmp(o.question, "-")) {
        if ((rc = cl_ask_read_stdin(&q)) != CL_OK) {
            ret = cl_cli_fail("ask", "stdin", rc);
            goto done;
        }
    } else if ((rc = cl_buf_append_str(&q, o.question)) != CL_OK) {
        ret = cl_cli_fail("ask", "question", rc);
        goto done;
    }
    if (!q.len) {
        ret = cl_cli_usage_error("ask", "the question is empty");
        goto done;
    }
    for (size_t i = 0; i < o.n_images; i++) {
        cl_buf_init(&imgb[i], CL_CMDC_MAX_IMAGE_FILE, CL_BUF_SECURE);
        n_imgb = i + 1;
        if ((rc = cl_ask_image(o.images[i], &imgb[i], &imgs[i])) != CL_OK) {
            ret = cl_cli_fail("ask", o.images[i], rc);
            goto done;
        }
    }
    if (cl_ask_open("ask", &o, &c) != CL_OK)
        goto done;
    struct cl_client_msg msgs[2];
    size_t n = 0;
    if (o.system)
        msgs[n++] = (struct cl_client_msg){.role = "system", .content = o.system, .content_len = strlen(o.system)};
    msgs[n++] = (struct cl_client_msg){.role = "user", .content = (const char *)q.data, .content_len = q.len,
                                       .images = imgs, .n_images = o.n_images};
    /* Attest first, so the measurements are shown even if the answer fails. */
    if ((rc = cl_client_attest(c)) != CL_OK) {
        ret = cl_cli_fail("ask", "attestation refused, nothing was sent", rc);
        goto done;
    }
    if (!o.json)
        cl_ask_print_attestation(stderr, cl_client_attestation(c));
    cl_client_token_fn fn = o.stream ? (o.json ? cl_ask_ignore_token : cl_ask_print_token) : NULL;
    rc = cl_client_chat(c, msgs, n, &o.p, fn, NULL, &res);
    if (rc != CL_OK) {
        if (o.stream && !o.json && res.content.len)
            fputc('\n', stdout);
        ret = cl_ask_fail("ask", rc, &res);
        goto done;
    }
    if (o.json) {
        json_t *j = json_object(), *u = json_object();
        json_object_set_new(j, "answer", json_stringn((const char *)(res.content.data ? res.content.data
                                                                                       : (const uint8_t *)""),
                                                      res.content.len));
        json_object_set_new(j, "finish_reason", json_string(res.finish_reason));
        /* the enclave's signed receipt for this request carries this id (cloister audit show) */
        json_object_set_new(j, "request_id", json_string(res.id));
        if (res.has_usage) {
            json_object_set_new(u, "prompt_tokens", json_integer((json_int_t)res.prompt_tokens));
            json_object_set_new(u, "completion_tokens", json_integer((json_int_t)res.completion_tokens));
            json_object_set_new(u, "total_tokens", json_integer((json_int_t)res.total_tokens));
        }
        json_object_set_new(j, "usage", u);
        json_object_set_new(j, "attestation", cl_ask_attestation_json(cl_client_attestation(c)));
        json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(j);
    } else if (o.stream) {
        fputc('\n', stdout);
    } else {
        fwrite(res.content.data ? res.content.data : (const uint8_t *)"", 1, res.content.len, stdout);
        fputc('\n', stdout);
    }
    if (!o.json && res.has_usage)
        fprintf(stderr, "(%llu prompt + %llu answer tokens, finish: %s%s%s)\n", (unsigned long long)res.prompt_tokens,
                (unsigned long long)res.completion_tokens, res.finish_reason[0] ? res.finish_reason : "?",
                res.id[0] ? ", request " : "", res.id);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "cloister ask: writing stdout failed\n");
        goto done;
    }
    ret = CL_EXIT_OK;
done:
    for (size_t i = 0; i < n_imgb; i++)
        cl_buf_free(&imgb[i]);
    cl_client_result_free(&res);
    cl_buf_free(&q);
    cl_client_free(c);
    return ret;
}

/* One turn of the conversation kept by `chat`, with the images attached to
 * it (kept: the whole conversation is sent each time). */
struct cl_chat_turn {
    const char *role;
    struct cl_buf text; /* CL_BUF_SECURE */
    struct cl_buf *img_bufs;
    struct cl_client_image *imgs;
    size_t n_imgs;
};

static void cl_chat_turn_free(struct cl_chat_turn *t)
{
    cl_buf_free(&t->text);
    for (size_t i = 0; i < t->n_imgs; i++)
        cl_buf_free(&t->img_bufs[i]);
    free(t->img_bufs);
    free(t->imgs);
    memset(t, 0, sizeof(*t));
}

int cl_cmd_chat(int argc, char **argv)
{
    struct cl_askopt o;
    int ret = cl_ask_args("chat", argc, argv, &o);
    if (ret >= 0)
        return ret;
    if (cl_cli_harden("chat") != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    ret = CL_EXIT_FAIL;
    cl_client *c = NULL;
    struct cl_chat_turn *turns = calloc(CL_CLIENT_MAX_MESSAGES, sizeof(*turns));
    struct cl_client_msg *msgs = calloc(CL_CLIENT_MAX_MESSAGES, sizeof(*msgs));
    char *line = NULL;
    size_t nt = 0;
    bool tty = isatty(STDIN_FILENO);
    struct cl_client_result res;
    cl_client_result_init(&res);
    cl_err rc;
    if (!turns || !msgs) {
        fprintf(stderr, "cloister chat: out of memory\n");
        goto done;
    }
    if ((rc = cl_secmem_alloc(CL_CMDC_MAX_LINE, (void **)&line)) != CL_OK) {
        ret = cl_cli_fail("chat", "line buffer", rc);
        goto done;
    }
    if (cl_ask_open("chat", &o, &c) != CL_OK)
        goto done;
    if ((rc = cl_client_attest(c)) != CL_OK) {
        ret = cl_cli_fail("chat", "attestation refused, nothing was sent", rc);
        goto done;
    }
    cl_ask_print_attestation(stderr, cl_client_attestation(c));
    if (o.system) {
        turns[nt].role = "system";
        cl_buf_init(&turns[nt].text, CL_CMDC_MAX_LINE, CL_BUF_SECURE);
        if ((rc = cl_buf_append_str(&turns[nt].text, o.system)) != CL_OK) {
            ret = cl_cli_fail("chat", "system", rc);
            goto done;
        }
        nt++;
    }
    if (tty)
        fprintf(stderr, "(type a message; /quit to leave)\n");
    unsigned seen = cl_client_attestation(c)->count;
    for (;;) {
        if (tty)
            fprintf(stderr, "> ");
        if (!fgets(line, (int)CL_CMDC_MAX_LINE, stdin))
            break;
        size_t l = strlen(line);
        if (l == CL_CMDC_MAX_LINE - 1 && line[l - 1] != '\n') {
            fprintf(stderr, "cloister chat: line longer than %zu bytes\n", CL_CMDC_MAX_LINE - 2);
            goto done;
        }
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        line[l] = 0;
        if (!l)
            continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit"))
            break;
        if (!strncmp(line, "/image ", 7)) {
            /* attached to the next message, kept pending in turns[nt] */
            struct cl_chat_turn *t = &turns[nt];
            if (!t->imgs && (!(t->imgs = calloc(CL_CMDC_MAX_IMAGES, sizeof(*t->imgs))) ||
                             !(t->img_bufs = calloc(CL_CMDC_MAX_IMAGES, sizeof(*t->img_bufs))))) {
                fprintf(stderr, "cloister chat: out of memory\n");
                goto done;
            }
            if (t->n_imgs == CL_CMDC_MAX_IMAGES) {
                fprintf(stderr, "cloister chat: at most %d images per message\n", CL_CMDC_MAX_IMAGES);
                continue;
            }
            cl_buf_init(&t->img_bufs[t->n_imgs], CL_CMDC_MAX_IMAGE_FILE, CL_BUF_SECURE);
            if ((rc = cl_ask_image(line + 7, &t->img_bufs[t->n_imgs], &t->imgs[t->n_imgs])) != CL_OK) {
                cl_buf_free(&t->img_bufs[t->n_imgs]);
                cl_cli_fail("chat", "image", rc); /* the path is the user's own input: not echoed */
                continue;
            }
            t->n_imgs++;
            if (tty)
                fprintf(stderr, "(image %zu attached to your next message)\n", t->n_imgs);
            continue;
        }
        if (nt + 2 > CL_CLIENT_MAX_MESSAGES) {
            fprintf(stderr, "cloister chat: conversation over %d messages\n", CL_CLIENT_MAX_MESSAGES);
            goto done;
        }
        turns[nt].role = "user";
        cl_buf_init(&turns[nt].text, CL_CMDC_MAX_LINE, CL_BUF_SECURE);
        if ((rc = cl_buf_append(&turns[nt].text, line, l)) != CL_OK) {
            ret = cl_cli_fail("chat", "message", rc);
            goto done;
        }
        nt++;
        for (size_t i = 0; i < nt; i++)
            msgs[i] = (struct cl_client_msg){.role = turns[i].role, .content = (const char *)turns[i].text.data,
                                             .content_len = turns[i].text.len, .images = turns[i].imgs,
                                             .n_images = turns[i].n_imgs};
        rc = cl_client_chat(c, msgs, nt, &o.p, cl_ask_print_token, NULL, &res);
        fputc('\n', stdout);
        fflush(stdout);
        if (rc != CL_OK) {
            ret = cl_ask_fail("chat", rc, &res);
            goto done;
        }
        if (cl_client_attestation(c)->count != seen) {
            seen = cl_client_attestation(c)->count;
            fprintf(stderr, "(the enclave's key changed: re-attested)\n");
            cl_ask_print_attestation(stderr, cl_client_attestation(c));
        }
        turns[nt].role = "assistant";
        cl_buf_init(&turns[nt].text, CL_CLIENT_MAX_ANSWER, CL_BUF_SECURE);
        if ((rc = cl_buf_append(&turns[nt].text, res.content.data ? res.content.data : (const uint8_t *)"",
                                res.content.len)) != CL_OK) {
            ret = cl_cli_fail("chat", "answer", rc);
            goto done;
        }
        nt++;
    }
    ret = CL_EXIT_OK;
done:
    if (turns) /* with the pending turn's images */
        for (size_t i = 0; i <= nt && i < CL_CLIENT_MAX_MESSAGES; i++)
            cl_chat_turn_free(&turns[i]);
    free(turns);
    free(msgs);
    cl_secmem_free(line);
    cl_client_result_free(&res);
    cl_client_free(c);
    return ret;
}
