/* cloister batch submit|status|result and cloister audit verify|show
 * (docs/batch.md): the consumer's side of the batch pipeline and the
 * auditor's check of the enclave's receipts. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/attest_user_data.h"
#include "cloister/batch.h"
#include "cloister/batch_store.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/json_secure.h"
#include "cloister/kms_client.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

#define CL_BATCH_MAX_IMAGES 8
#define CL_BATCH_MAX_PCR_PINS 4

/* ---------------- shared: key service, attestation of the audit key ---------------- */

struct cl_bcli_kms {
    const char *url;
    const char *region;
};

static cl_err cl_bcli_creds(struct cl_kmsc_credentials **cred, char region[64], const char *region_opt)
{
    cl_err rc = CL_OK;
    void *mem = NULL;
    snprintf(region, 64, "us-east-1");
    CL_GUARD(cl_secmem_alloc(sizeof(**cred), &mem));
    CL_GUARD(cl_kmsc_credentials_load(mem));
    if (region_opt)
        snprintf(region, 64, "%s", region_opt);
    else
        CL_GUARD(cl_kmsc_region_load(region, 64));
    *cred = mem;
    mem = NULL;
out:
    if (mem) {
        cl_kmsc_credentials_wipe(mem);
        cl_secmem_free(mem);
    }
    return rc;
}

static void cl_bcli_creds_free(struct cl_kmsc_credentials *cred)
{
    if (!cred)
        return;
    cl_kmsc_credentials_wipe(cred);
    cl_secmem_free(cred);
}

struct cl_bcli_pins {
    const char *root;
    struct cl_attest_pcr_expect pcr[CL_BATCH_MAX_PCR_PINS];
    size_t npcr;
    bool has_model;
    uint8_t model[32];
};

static bool cl_bcli_pcr_opt(const char *cmd, const char *v, struct cl_bcli_pins *p)
{
    const char *eq = strchr(v, '=');
    uint64_t idx = 0;
    char num[4];
    if (!eq || eq == v || (size_t)(eq - v) >= sizeof(num) || p->npcr == CL_BATCH_MAX_PCR_PINS) {
        cl_cli_usage_error(cmd, "--pcr: expected N=HEX (at most %d), got '%s'", CL_BATCH_MAX_PCR_PINS, v);
        return false;
    }
    memcpy(num, v, (size_t)(eq - v));
    num[eq - v] = 0;
    if (!cl_cli_parse_u64(num, 0, CL_ATTEST_MAX_PCRS - 1, &idx) ||
        cl_hex_decode_fixed(eq + 1, strlen(eq + 1), p->pcr[p->npcr].value, CL_ATTEST_PCR_LEN) != CL_OK) {
        cl_cli_usage_error(cmd, "--pcr: expected N=HEX with N 0-31 and 96 hex digits, got '%s'", v);
        return false;
    }
    p->pcr[p->npcr++].index = (unsigned)idx;
    return true;
}

static bool cl_bcli_model_opt(const char *cmd, const char *v, struct cl_bcli_pins *p)
{
    if (cl_hex_decode_fixed(v, strlen(v), p->model, 32) != CL_OK) {
        cl_cli_usage_error(cmd, "--model-digest must be 64 hex digits");
        return false;
    }
    p->has_model = true;
    return true;
}

/* The attestation document named by a receipt: its digest, chain to the
 * pinned root, PCRs; then its user_data's audit key. */
static cl_err cl_bcli_audit_key(cl_bstore_results *rs, const struct cl_bcli_pins *pins, const uint8_t sha[32],
                                cl_pkey **key, uint8_t model_out[32])
{
    cl_err rc = CL_OK;
    char hex[65];
    uint8_t d[32];
    struct cl_buf doc, rootf, rootd;
    struct cl_attest_doc ad;
    struct cl_attest_user_data *ud = calloc(1, sizeof(*ud));
    bool parsed = false;
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    cl_buf_init(&rootf, 64 << 10, CL_BUF_NONE);
    cl_buf_init(&rootd, 64 << 10, CL_BUF_NONE);
    CL_ENSURE(ud, CL_E_CORE_NOMEM);
    cl_hex_encode(sha, 32, hex);
    CL_GUARD(cl_bstore_results_attestation(rs, hex, &doc));
    CL_GUARD(cl_sha256(doc.data, doc.len, d));
    CL_ENSURE_D(cl_ct_equal(d, sha, 32), CL_E_PROTO_RECEIPT_SIGNATURE,
                "the stored attestation document is not the one the receipt names");
    CL_GUARD(cl_file_read(pins->root, rootf.max, &rootf));
    CL_GUARD(cl_attest_cert_to_der(rootf.data, rootf.len, &rootd));
    CL_GUARD(cl_attest_parse(doc.data, doc.len, &ad));
    parsed = true;
    struct cl_attest_policy pol = {.root_der = rootd.data, .root_len = rootd.len, .pcrs = pins->pcr, .npcrs = pins->npcr};
    /* No freshness: the document certifies a key that signed in the past.
     * Its certificates must still be valid now, as for any client. */
    CL_GUARD(cl_attest_verify(&ad, &pol));
    CL_GUARD(cl_attest_user_data_parse(ad.user_data.p, ad.user_data.len, ud));
    if (pins->has_model)
        CL_ENSURE_D(cl_ct_equal(ud->model_sha256, pins->model, 32), CL_E_ATTEST_USER_DATA_MALFORMED,
                    "the attested enclave ran another model than --model-digest");
    CL_GUARD(cl_pkey_parse(ud->audit_key, ud->audit_key_len, key));
    if (model_out)
        memcpy(model_out, ud->model_sha256, 32);
out:
    if (parsed)
        cl_attest_doc_free(&ad);
    free(ud);
    cl_buf_free(&doc);
    cl_buf_free(&rootf);
    cl_buf_free(&rootd);
    return rc;
}

/* ---------------- batch submit ---------------- */

static void cl_bcli_submit_help(FILE *f)
{
    fprintf(f,
            "usage: cloister batch submit --kms URL --key-id ID --consumer NAME --objects URL --queue URL\n"
            "                             [--region R] [-n N] [--temp T] [--seed S] [--system TEXT]\n"
            "                             [--image FILE]... [--credential-file FILE] [--json]\n"
            "                             (TEXT | - | --jsonl FILE)\n\n"
            "Encrypts jobs for the enclave and queues them (docs/batch.md, docs/formats/job.md). Each job\n"
            "gets a fresh data key from GenerateDataKey under the consumer's own key (--key-id at --kms,\n"
            "with the encryption context cloister:job-id and cloister:consumer), the request sealed with\n"
            "it, the object written to --objects as ID.job and a message sent to --queue. Only the\n"
            "attested enclave (the key policy of 'cloister kms policy --consumer NAME') and the\n"
            "consumer can unwrap it. Prints one job id per line (--json: an array of objects).\n\n"
            "  TEXT | -          the question, or '-' to read it from stdin (off the process list)\n"
            "  --jsonl FILE      many jobs: one OpenAI chat-completions request object per line\n"
            "                    ('-' for stdin); a progress bar on stderr when it is a terminal\n"
            "  --image FILE      attach a PNG or JPEG as an image_url content part (repeatable)\n"
            "  -n N              max_tokens (default 64)   --temp T  temperature (default 0)\n"
            "  --seed S          sampling seed             --system TEXT  a system message\n"
            "  --credential-file FILE  consumer credential for a licensed model (else $CLOISTER_CREDENTIAL),\n"
            "                    carried inside the job encryption in every job (docs/licensing.md)\n"
            "  --kms URL         the consumer's key service (a cloister-kms URL, or `aws`)\n"
            "  --region R        signing region; credentials come from the usual AWS variables or files\n"
            "  --objects dir:PATH   --queue sqlite:PATH   the pipeline's stores\n"
            "                    (or s3://BUCKET[/PREFIX][?endpoint=URL], sqs://QUEUE[?endpoint=URL];\n"
            "                    AWS credentials and AWS_REGION from the environment or ~/.aws)\n");
}

struct cl_bcli_submit {
    const char *kms, *key_id, *consumer, *objects, *queue, *region, *system, *jsonl, *credential_file;
    const char *credential; /* secure memory: the licence credential, NULL for none */
    const char *images[CL_BATCH_MAX_IMAGES];
    size_t nimages;
    uint64_t max_tokens, seed;
    double temp;
    bool has_seed, json;
};

/* Inside the job encryption only (docs/formats/job.md); the enclave's name
 * for it is CL_JOB_CREDENTIAL_MEMBER. */
#define CL_BCLI_CREDENTIAL_MEMBER "cloister_credential"

/* The licence credential from --credential-file or CLOISTER_CREDENTIAL (never
 * argv): 16..512 printable ASCII, a trailing newline dropped; into secure memory. */
static cl_err cl_bcli_credential(const char *file, char **out, const char **what)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    char *p = NULL;
    const char *env = getenv("CLOISTER_CREDENTIAL");
    cl_buf_init(&b, 1024, CL_BUF_SECURE);
    *out = NULL;
    *what = file ? file : "CLOISTER_CREDENTIAL";
    if (file)
        CL_GUARD(cl_file_read(file, 1024, &b));
    else if (env && *env)
        CL_GUARD(cl_buf_append(&b, env, strlen(env)));
    else
        goto out;
    size_t n = b.len;
    while (n && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r'))
        n--;
    CL_ENSURE_D(n >= 16 && n <= 512, CL_E_CLI_USAGE, "credential of %zu characters (16..512)", n);
    for (size_t i = 0; i < n; i++)
        CL_ENSURE_D(b.data[i] > 0x20 && b.data[i] < 0x7f, CL_E_CLI_USAGE,
                    "credential character %zu is not printable ASCII", i);
    CL_GUARD(cl_secmem_alloc(n + 1, (void **)&p));
    memcpy(p, b.data, n);
    p[n] = 0;
    *out = p;
    p = NULL;
out:
    cl_secmem_free(p);
    cl_buf_free(&b);
    return rc;
}

static void cl_bcli_credential_free(char *p)
{
    if (p) {
        cl_wipe(p, strlen(p));
        cl_secmem_free(p);
    }
}

static cl_err cl_bcli_image_part(const char *path, json_t **out)
{
    cl_err rc = CL_OK;
    struct cl_buf f, b64;
    cl_buf_init(&f, 20 << 20, CL_BUF_SECURE);
    cl_buf_init(&b64, 28 << 20, CL_BUF_SECURE);
    CL_GUARD(cl_file_read(path, f.max, &f));
    const char *mime = f.len > 8 && !memcmp(f.data, "\x89PNG", 4)         ? "image/png"
                       : f.len > 3 && !memcmp(f.data, "\xff\xd8\xff", 3) ? "image/jpeg"
                                                                          : NULL;
    CL_ENSURE_D(mime, CL_E_CLI_USAGE, "%s is not a PNG or JPEG image", path);
    CL_GUARD(cl_buf_appendf(&b64, "data:%s;base64,", mime));
    CL_GUARD(cl_b64_encode(f.data, f.len, CL_B64_STD, &b64));
    *out = json_pack("{s:s,s:{s:s%}}", "type", "image_url", "image_url", "url", (const char *)b64.data, b64.len);
    CL_ENSURE(*out, CL_E_CORE_NOMEM);
out:
    cl_buf_free(&f);
    cl_buf_free(&b64);
    return rc;
}

static cl_err cl_bcli_request(const struct cl_bcli_submit *o, const char *text, size_t n, char **out)
{
    cl_err rc = CL_OK;
    json_t *msgs = json_array(), *content = NULL, *req = NULL;
    CL_ENSURE(msgs, CL_E_CORE_NOMEM);
    if (o->system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", o->system));
    if (o->nimages) {
        /* images first, then the text: the order cloister ask and run use */
        content = json_array();
        for (size_t i = 0; i < o->nimages; i++) {
            json_t *part = NULL;
            CL_GUARD(cl_bcli_image_part(o->images[i], &part));
            json_array_append_new(content, part);
        }
        json_array_append_new(content, json_pack("{s:s,s:s%}", "type", "text", "text", text, n));
    } else {
        content = json_stringn(text, n);
        CL_ENSURE_D(content, CL_E_CLI_USAGE, "the question is not valid UTF-8");
    }
    json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", content));
    req = json_pack("{s:O,s:I,s:f}", "messages", msgs, "max_tokens", (json_int_t)o->max_tokens, "temperature", o->temp);
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    if (o->has_seed)
        json_object_set_new(req, "seed", json_integer((json_int_t)o->seed));
    if (o->credential)
        json_object_set_new(req, CL_BCLI_CREDENTIAL_MEMBER, json_string(o->credential));
    *out = json_dumps(req, JSON_COMPACT);
    CL_ENSURE(*out, CL_E_CORE_NOMEM);
out:
    json_decref(req);
    json_decref(content);
    json_decref(msgs);
    return rc;
}

static cl_err cl_bcli_submit_one(const struct cl_bcli_submit *o, const struct cl_kmsc_credentials *cred,
                                 const char *region, cl_bstore_objects *objs, cl_bstore_queue *q, const char *req,
                                 char job_id[CL_BATCH_ID_MAX + 1])
{
    cl_err rc = CL_OK;
    uint8_t r[16];
    char object[CL_BATCH_ID_MAX + 8];
    struct cl_buf key, blob, obj;
    struct cl_batch_job_header *h = calloc(1, sizeof(*h));
    cl_buf_init(&key, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, CL_BATCH_WRAPPED_MAX, CL_BUF_NONE);
    cl_buf_init(&obj, CL_BATCH_JOB_MAX_PLAINTEXT + CL_BATCH_OVERHEAD, CL_BUF_NONE);
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_random_bytes(r, sizeof(r)));
    cl_hex_encode(r, sizeof(r), h->job_id);
    snprintf(h->consumer, sizeof(h->consumer), "%s", o->consumer);
    snprintf(h->key_id, sizeof(h->key_id), "%s", o->key_id);
    struct cl_aws_kv ctx[2] = {{CL_BATCH_CTX_CONSUMER, h->consumer}, {CL_BATCH_CTX_JOB_ID, h->job_id}};
    struct cl_kmsc_endpoint ep = {.url = strcmp(o->kms, "aws") ? o->kms : NULL, .region = region};
    CL_GUARD(cl_kmsc_generate_data_key(&ep, cred, o->key_id, ctx, 2, &key, &blob, NULL, 0));
    CL_ENSURE_D(key.len == CL_BATCH_KEY_LEN, CL_E_SEAL_UNWRAP, "data key of %zu bytes (want 32: AES_256)", key.len);
    memcpy(h->wrapped, blob.data, blob.len);
    h->wrapped_len = blob.len;
    CL_GUARD(cl_batch_job_seal(h, key.data, (const uint8_t *)req, strlen(req), &obj));
    snprintf(object, sizeof(object), "%s.job", h->job_id);
    CL_GUARD(cl_bstore_objects_put(objs, object, obj.data, obj.len));
    CL_GUARD(cl_bstore_queue_send(q, h->job_id, object));
    memcpy(job_id, h->job_id, sizeof(h->job_id));
out:
    free(h);
    cl_buf_free(&key);
    cl_buf_free(&blob);
    cl_buf_free(&obj);
    return rc;
}

static int cl_bcli_submit(int argc, char **argv)
{
    const char *cmd = "batch submit";
    enum { O_KMS = 256, O_KEY, O_CONSUMER, O_OBJECTS, O_QUEUE, O_REGION, O_SYSTEM, O_JSONL, O_IMAGE, O_TEMP, O_SEED, O_CRED };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, {"kms", required_argument, NULL, O_KMS},
        {"key-id", required_argument, NULL, O_KEY}, {"consumer", required_argument, NULL, O_CONSUMER},
        {"objects", required_argument, NULL, O_OBJECTS}, {"queue", required_argument, NULL, O_QUEUE},
        {"region", required_argument, NULL, O_REGION}, {"system", required_argument, NULL, O_SYSTEM},
        {"jsonl", required_argument, NULL, O_JSONL}, {"image", required_argument, NULL, O_IMAGE},
        {"temp", required_argument, NULL, O_TEMP}, {"seed", required_argument, NULL, O_SEED},
        {"max-tokens", required_argument, NULL, 'n'}, {"credential-file", required_argument, NULL, O_CRED},
        CL_CLI_OPT_END};
    struct cl_bcli_submit o = {.max_tokens = 64};
    struct cl_cli_args a = {.cmd = cmd, .help = cl_bcli_submit_help, .shortopts = "n:", .longopts = opts, .json = &o.json};
    for (int c; (c = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (c) {
        case O_KMS: o.kms = optarg; break;
        case O_KEY: o.key_id = optarg; break;
        case O_CONSUMER: o.consumer = optarg; break;
        case O_OBJECTS: o.objects = optarg; break;
        case O_QUEUE: o.queue = optarg; break;
        case O_REGION: o.region = optarg; break;
        case O_SYSTEM: o.system = optarg; break;
        case O_JSONL: o.jsonl = optarg; break;
        case O_CRED: o.credential_file = optarg; break;
        case O_IMAGE:
            if (o.nimages == CL_BATCH_MAX_IMAGES)
                return cl_cli_usage_error(cmd, "at most %d --image", CL_BATCH_MAX_IMAGES);
            o.images[o.nimages++] = optarg;
            break;
        case 'n':
            if (!cl_cli_u64_opt(cmd, optarg, 1, 65536, &o.max_tokens, "-n expects a number of tokens 1-65536"))
                return CL_EXIT_USAGE;
            break;
        case O_TEMP: {
            char *end = NULL;
            o.temp = strtod(optarg, &end);
            if (!*optarg || *end || !(o.temp >= 0 && o.temp <= 100))
                return cl_cli_usage_error(cmd, "--temp expects a number 0-100");
            break;
        }
        case O_SEED:
            if (!cl_cli_u64_opt(cmd, optarg, 0, INT64_MAX, &o.seed, "--seed expects a non-negative integer"))
                return CL_EXIT_USAGE;
            o.has_seed = true;
            break;
        default: return a.exit;
        }
    }
    if (!o.kms || !o.key_id || !o.consumer || !o.objects || !o.queue)
        return cl_cli_usage_error(cmd, "--kms, --key-id, --consumer, --objects and --queue are required");
    if (!cl_batch_text_valid(o.consumer, CL_BATCH_CONSUMER_MAX))
        return cl_cli_usage_error(cmd, "--consumer must be 1-128 printable ASCII characters without quotes or backslashes");
    if (!cl_batch_text_valid(o.key_id, CL_BATCH_KEY_ID_MAX))
        return cl_cli_usage_error(cmd, "--key-id must be 1-256 printable ASCII characters");
    if (!!o.jsonl == (optind < argc))
        return cl_cli_usage_error(cmd, "give the question (TEXT or '-') or --jsonl FILE, not both");
    if (optind + 1 < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s' (quote the question)", argv[optind + 1]);
    if (o.jsonl && o.nimages)
        return cl_cli_usage_error(cmd, "--image goes with a single question; in --jsonl put image_url parts in the lines");
    if (cl_cli_harden(cmd) != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    cl_json_secure();

    int ret = CL_EXIT_FAIL;
    cl_err rc = CL_OK;
    struct cl_kmsc_credentials *cred = NULL;
    char region[64];
    cl_bstore_objects *objs = NULL;
    cl_bstore_queue *q = NULL;
    struct cl_buf in;
    char *req = NULL;
    const char *what = "credentials";
    size_t done = 0, total = 0;
    struct cl_progress prog = {0};
    char *lcred = NULL;
    cl_buf_init(&in, (size_t)256 << 20, CL_BUF_SECURE);
    if ((rc = cl_bcli_credential(o.credential_file, &lcred, &what)) != CL_OK)
        goto out;
    o.credential = lcred;
    what = "credentials";
    if ((rc = cl_bcli_creds(&cred, region, o.region)) != CL_OK)
        goto out;
    what = "--objects";
    if ((rc = cl_bstore_objects_open(o.objects, &objs)) != CL_OK)
        goto out;
    what = "--queue";
    if ((rc = cl_bstore_queue_open(o.queue, &q)) != CL_OK)
        goto out;
    const char *src = o.jsonl ? o.jsonl : argv[optind];
    what = "input";
    if (!strcmp(src, "-")) {
        rc = cl_file_read("/dev/stdin", in.max - 1, &in);
    } else if (o.jsonl) {
        rc = cl_file_read(src, in.max - 1, &in);
    } else {
        rc = cl_buf_append(&in, src, strlen(src));
    }
    if (rc == CL_OK)
        rc = cl_buf_append_u8(&in, 0);
    if (rc != CL_OK)
        goto out;
    if (o.json)
        printf("[");
    if (!o.jsonl) {
        size_t n = in.len - 1;
        while (n && (in.data[n - 1] == '\n' || in.data[n - 1] == '\r'))
            n--;
        if (!n) {
            ret = cl_cli_usage_error(cmd, "the question is empty");
            goto out;
        }
        what = "request";
        if ((rc = cl_bcli_request(&o, (const char *)in.data, n, &req)) != CL_OK)
            goto out;
        char id[CL_BATCH_ID_MAX + 1];
        what = "submit";
        if ((rc = cl_bcli_submit_one(&o, cred, region, objs, q, req, id)) != CL_OK)
            goto out;
        printf(o.json ? "{\"job_id\":\"%s\",\"object\":\"%s.job\"}" : "%s\n", id, id);
        done = total = 1;
    } else {
        for (char *p = (char *)in.data; *p; p++)
            total += *p == '\n';
        total += in.len > 1 && in.data[in.len - 2] != '\n';
        cl_progress_start(&prog, "submitting", total);
        size_t line = 0;
        for (char *p = (char *)in.data, *nl; *p; p = nl ? nl + 1 : p + strlen(p)) {
            nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            line++;
            if (!n || (n == 1 && *p == '\r'))
                continue;
            json_error_t e;
            json_t *j = json_loadb(p, n, JSON_REJECT_DUPLICATES, &e);
            if (!j || !json_is_object(j) || !json_is_array(json_object_get(j, "messages"))) {
                json_decref(j);
                cl_progress_finish(&prog);
                fprintf(stderr, "cloister %s: --jsonl line %zu: not a chat-completions request object with "
                                "\"messages\" (%zu jobs submitted before it)\n", cmd, line, done);
                goto out;
            }
            if (o.credential)
                json_object_set_new(j, CL_BCLI_CREDENTIAL_MEMBER, json_string(o.credential));
            req = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            char id[CL_BATCH_ID_MAX + 1];
            what = "submit";
            if (!req || (rc = cl_bcli_submit_one(&o, cred, region, objs, q, req, id)) != CL_OK) {
                rc = rc ? rc : CL_E_CORE_NOMEM;
                cl_progress_finish(&prog);
                fprintf(stderr, "cloister %s: line %zu failed; %zu jobs submitted before it\n", cmd, line, done);
                goto out;
            }
            cl_json_free_str(req);
            req = NULL;
            printf(o.json ? "%s{\"job_id\":\"%s\",\"object\":\"%s.job\"}" : "%s%s\n", o.json && done ? "," : "", id,
                   id);
            done++;
            cl_progress_update(&prog, done);
        }
        cl_progress_finish(&prog);
    }
    if (o.json)
        printf("]\n");
    ret = CL_EXIT_OK;
out:
    if (rc != CL_OK)
        ret = cl_cli_fail(cmd, what, rc);
    fflush(stdout);
    cl_json_free_str(req);
    cl_bcli_creds_free(cred);
    cl_bcli_credential_free(lcred);
    cl_bstore_objects_close(objs);
    cl_bstore_queue_close(q);
    cl_buf_free(&in);
    return ret;
}

/* ---------------- batch status ---------------- */

static void cl_bcli_status_help(FILE *f)
{
    fprintf(f, "usage: cloister batch status --queue URL --results URL [JOB... | --jobs FILE] [--wait]\n"
               "                             [--timeout S] [--json]\n\n"
               "Counts of queued (visible), in-flight and dead-lettered messages, stored results and\n"
               "receipts; for each JOB given: done, error (the enclave answered with an error, sealed\n"
               "for the consumer), dead (with the error record's code and receive count) or pending.\n"
               "Reads only public metadata: no key is needed (AWS stores need their credentials).\n"
               "Store URLs: --queue sqlite:PATH | sqs://QUEUE[?endpoint=URL] (counts are SQS's\n"
               "approximate ones, dead letters in QUEUE-dlq); --results sqlite:PATH |\n"
               "dynamodb://TABLE[?endpoint=URL]. AWS credentials and AWS_REGION as for the AWS CLI.\n\n"
               "  --jobs FILE   job ids, one per line (what 'batch submit' printed; '-' for stdin)\n"
               "  --wait        wait until every JOB is done, error or dead (without JOBs: until the\n"
               "                queue is empty), with a progress bar on stderr when it is a terminal\n"
               "  --timeout S   give up waiting after S seconds, 1..604800 (default 3600): exit 1\n");
}

static int cl_bcli_status(int argc, char **argv)
{
    const char *cmd = "batch status";
    enum { O_QUEUE = 256, O_RESULTS, O_WAIT, O_TIMEOUT, O_JOBS };
    static const struct option opts[] = {CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, {"queue", required_argument, NULL, O_QUEUE},
                                         {"results", required_argument, NULL, O_RESULTS},
                                         {"wait", no_argument, NULL, O_WAIT},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {"jobs", required_argument, NULL, O_JOBS}, CL_CLI_OPT_END};
    const char *qu = NULL, *ru = NULL, *jobs_file = NULL;
    bool json = false, wait = false;
    uint64_t timeout_s = 3600;
    struct cl_cli_args a = {.cmd = cmd, .help = cl_bcli_status_help, .longopts = opts, .json = &json};
    for (int c; (c = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (c) {
        case O_QUEUE: qu = optarg; break;
        case O_RESULTS: ru = optarg; break;
        case O_WAIT: wait = true; break;
        case O_JOBS: jobs_file = optarg; break;
        case O_TIMEOUT:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 604800, &timeout_s, "--timeout expects 1-604800 seconds"))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (!qu || !ru)
        return cl_cli_usage_error(cmd, "--queue and --results are required");
    if (jobs_file && optind < argc)
        return cl_cli_usage_error(cmd, "give JOB ids or --jobs FILE, not both");
    cl_bstore_queue *q = NULL;
    cl_bstore_results *r = NULL;
    struct cl_bstore_queue_counts qc;
    uint64_t nres = 0, nrec = 0;
    struct cl_buf a1, a2;
    cl_buf_init(&a1, CL_BATCH_RESULT_MAX_PLAINTEXT + CL_BATCH_OVERHEAD, CL_BUF_NONE);
    cl_buf_init(&a2, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    struct cl_buf idf;
    char **ids = NULL;
    size_t nids = 0;
    cl_buf_init(&idf, 64 << 20, CL_BUF_NONE);
    int ret = CL_EXIT_OK;
    cl_err rc = CL_OK;
    if (jobs_file) {
        rc = cl_file_read(!strcmp(jobs_file, "-") ? "/dev/stdin" : jobs_file, idf.max - 1, &idf);
        if (rc == CL_OK)
            rc = cl_buf_append_u8(&idf, 0);
        if (rc != CL_OK) {
            ret = cl_cli_fail(cmd, "--jobs", rc);
            goto out;
        }
        for (size_t i = 0; i + 1 < idf.len; i++)
            nids += idf.data[i] == '\n' || i + 2 == idf.len;
        ids = calloc(nids + 1, sizeof(*ids));
        nids = 0;
        for (char *sv = NULL, *t = ids ? strtok_r((char *)idf.data, "\r\n", &sv) : NULL; t; t = strtok_r(NULL, "\r\n", &sv))
            ids[nids++] = t;
    } else {
        ids = argv + optind;
        nids = (size_t)(argc - optind);
    }
    if (jobs_file && !ids) {
        ret = cl_cli_fail(cmd, "memory", CL_E_CORE_NOMEM);
        goto out;
    }
    rc = cl_bstore_queue_open(qu, &q);
    if (rc == CL_OK)
        rc = cl_bstore_results_open(ru, &r);
    struct cl_progress prog = {0};
    uint64_t t_end = cl_now_us() + timeout_s * 1000000u;
    if (wait)
        cl_progress_start(&prog, "waiting", nids ? nids : 1);
    for (;;) {
        if (rc == CL_OK)
            rc = cl_bstore_queue_counts(q, &qc);
        if (rc == CL_OK)
            rc = cl_bstore_results_count(r, &nres, &nrec);
        if (rc != CL_OK || !wait)
            break;
        size_t final = 0;
        for (size_t i = 0; i < nids; i++) {
            bool ok = false, found = false;
            char err[CL_BSTORE_ERROR_MAX + 1];
            uint32_t rcv = 0;
            if (!cl_batch_id_valid(ids[i]) || cl_bstore_results_get(r, ids[i], &ok, &a1, &a2) == CL_OK ||
                (cl_bstore_queue_dead_find(q, ids[i], err, &rcv, &found) == CL_OK && found))
                final++;
        }
        bool done = nids ? final == nids : qc.visible + qc.in_flight == 0;
        cl_progress_update(&prog, nids ? final : done);
        if (done)
            break;
        if (cl_now_us() > t_end) {
            cl_progress_finish(&prog);
            fprintf(stderr, "cloister %s: --timeout: %zu of %zu jobs finished after %llu s\n", cmd, final, nids,
                    (unsigned long long)timeout_s);
            ret = CL_EXIT_FAIL;
            break;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (wait)
        cl_progress_finish(&prog);
    if (rc != CL_OK) {
        ret = cl_cli_fail(cmd, "stores", rc);
        goto out;
    }
    if (json)
        printf("{\"queued\":%llu,\"in_flight\":%llu,\"dead\":%llu,\"results\":%llu,\"receipts\":%llu,\"jobs\":[",
               (unsigned long long)qc.visible, (unsigned long long)qc.in_flight, (unsigned long long)qc.dead,
               (unsigned long long)nres, (unsigned long long)nrec);
    else
        printf("queued %llu, in flight %llu, dead letters %llu, results %llu, receipts %llu\n",
               (unsigned long long)qc.visible, (unsigned long long)qc.in_flight, (unsigned long long)qc.dead,
               (unsigned long long)nres, (unsigned long long)nrec);
    for (size_t i = 0; i < nids; i++) {
        const char *id = ids[i];
        bool ok = false, found = false;
        char err[CL_BSTORE_ERROR_MAX + 1] = "";
        uint32_t rcv = 0;
        const char *st = "pending";
        if (!cl_batch_id_valid(id)) {
            st = "invalid-id";
        } else if (cl_bstore_results_get(r, id, &ok, &a1, &a2) == CL_OK) {
            st = ok ? "done" : "error";
        } else if (cl_bstore_queue_dead_find(q, id, err, &rcv, &found) == CL_OK && found) {
            st = "dead";
        }
        if (json)
            printf("%s{\"job_id\":\"%s\",\"state\":\"%s\",\"error\":\"%s\",\"receives\":%u}", i ? "," : "",
                   cl_batch_id_valid(id) ? id : "", st, err, rcv);
        else if (!strcmp(st, "dead"))
            printf("%s dead (%s after %u receives)\n", id, err, rcv);
        else
            printf("%s %s\n", cl_batch_id_valid(id) ? id : "?", st);
    }
    if (json)
        printf("]}\n");
out:
    if (jobs_file)
        free(ids);
    cl_buf_free(&idf);
    cl_bstore_queue_close(q);
    cl_bstore_results_close(r);
    cl_buf_free(&a1);
    cl_buf_free(&a2);
    return ret;
}

/* ---------------- batch result ---------------- */

static void cl_bcli_result_help(FILE *f)
{
    fprintf(f,
            "usage: cloister batch result JOB --results URL --objects URL --kms URL [--region R]\n"
            "                             --root ROOT.pem --pcr N=HEX... [--model-digest HEX] [--json]\n\n"
            "Fetches JOB's result and receipt, verifies the receipt (the attestation document it names\n"
            "chains to ROOT with the given PCRs and certifies the audit key that signed it; the receipt\n"
            "names JOB and the stored result's digest), unwraps the job key with the consumer's own\n"
            "credentials (Decrypt with the job's encryption context), decrypts the result and prints\n"
            "the answer (--json: the chat.completion object with the receipt's fields).\n\n"
            "  --pcr N=HEX        expected PCR N of the enclave (96 hex digits); at least one, repeatable\n"
            "  --model-digest HEX require the attested model's SHA-256\n"
            "  --results URL      sqlite:PATH or dynamodb://TABLE[?endpoint=URL]\n"
            "  --objects URL      dir:PATH or s3://BUCKET[/PREFIX][?endpoint=URL]\n"
            "                     (AWS credentials and AWS_REGION from the environment or ~/.aws)\n");
}

static int cl_bcli_result(int argc, char **argv)
{
    const char *cmd = "batch result";
    enum { O_RESULTS = 256, O_OBJECTS, O_KMS, O_REGION, O_ROOT, O_PCR, O_MODEL };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, {"results", required_argument, NULL, O_RESULTS},
        {"objects", required_argument, NULL, O_OBJECTS}, {"kms", required_argument, NULL, O_KMS},
        {"region", required_argument, NULL, O_REGION}, {"root", required_argument, NULL, O_ROOT},
        {"pcr", required_argument, NULL, O_PCR}, {"model-digest", required_argument, NULL, O_MODEL}, CL_CLI_OPT_END};
    const char *ru = NULL, *ou = NULL, *kms = NULL, *region_opt = NULL;
    struct cl_bcli_pins pins = {0};
    bool json = false;
    struct cl_cli_args a = {.cmd = cmd, .help = cl_bcli_result_help, .longopts = opts, .json = &json};
    for (int c; (c = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (c) {
        case O_RESULTS: ru = optarg; break;
        case O_OBJECTS: ou = optarg; break;
        case O_KMS: kms = optarg; break;
        case O_REGION: region_opt = optarg; break;
        case O_ROOT: pins.root = optarg; break;
        case O_PCR:
            if (!cl_bcli_pcr_opt(cmd, optarg, &pins))
                return CL_EXIT_USAGE;
            break;
        case O_MODEL:
            if (!cl_bcli_model_opt(cmd, optarg, &pins))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind + 1 != argc)
        return cl_cli_usage_error(cmd, "give exactly one JOB id");
    const char *job = argv[optind];
    if (!cl_batch_id_valid(job))
        return cl_cli_usage_error(cmd, "JOB must be 1-64 of A-Z a-z 0-9 . _ -");
    if (!ru || !ou || !kms || !pins.root || !pins.npcr)
        return cl_cli_usage_error(cmd, "--results, --objects, --kms, --root and at least one --pcr are required");
    if (cl_cli_harden(cmd) != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    cl_json_secure();

    int ret = CL_EXIT_FAIL;
    cl_err rc = CL_OK;
    const char *what = "--results";
    cl_bstore_results *rs = NULL;
    cl_bstore_objects *os = NULL;
    cl_pkey *audit = NULL;
    struct cl_kmsc_credentials *cred = NULL;
    char region[64];
    bool ok = false;
    struct cl_batch_receipt r;
    struct cl_batch_job_header *h = calloc(1, sizeof(*h));
    uint8_t d[32];
    json_t *ans = NULL;
    struct cl_buf res, rcpt, jobo, key, pt;
    cl_buf_init(&res, CL_BATCH_RESULT_MAX_PLAINTEXT + CL_BATCH_OVERHEAD, CL_BUF_NONE);
    cl_buf_init(&rcpt, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    cl_buf_init(&jobo, CL_BATCH_JOB_MAX_PLAINTEXT + CL_BATCH_OVERHEAD, CL_BUF_NONE);
    cl_buf_init(&key, 64, CL_BUF_SECURE);
    cl_buf_init(&pt, CL_BATCH_RESULT_MAX_PLAINTEXT, CL_BUF_SECURE);
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_bstore_results_open(ru, &rs));
    what = "result";
    CL_GUARD(cl_bstore_results_get(rs, job, &ok, &res, &rcpt));
    what = "receipt";
    CL_GUARD(cl_batch_receipt_parse(rcpt.data, rcpt.len, &r));
    CL_ENSURE_D(!strcmp(r.job_id, job), CL_E_PROTO_JOB_MISMATCH, "the stored receipt is for another job");
    CL_GUARD(cl_bcli_audit_key(rs, &pins, r.attestation_sha256, &audit, NULL));
    CL_GUARD(cl_batch_receipt_verify(rcpt.data, rcpt.len, audit));
    CL_GUARD(cl_sha256(res.data, res.len, d));
    CL_ENSURE_D(cl_ct_equal(d, r.result_sha256, 32), CL_E_PROTO_RECEIPT_SIGNATURE,
                "the stored result is not the one the receipt signs (altered)");
    what = "job object";
    char object[CL_BATCH_ID_MAX + 8];
    snprintf(object, sizeof(object), "%s.job", job);
    CL_GUARD(cl_bstore_objects_open(ou, &os));
    CL_GUARD(cl_bstore_objects_get(os, object, jobo.max, &jobo));
    CL_GUARD(cl_batch_job_header_parse(jobo.data, jobo.len, h));
    CL_ENSURE_D(!strcmp(h->job_id, job), CL_E_PROTO_JOB_MISMATCH, "the job object is for another job");
    CL_GUARD(cl_sha256(jobo.data, jobo.len, d));
    CL_ENSURE_D(cl_ct_equal(d, r.job_sha256, 32), CL_E_PROTO_JOB_MISMATCH,
                "the job object is not the one the enclave ran (the receipt names another digest)");
    what = "job key";
    CL_GUARD(cl_bcli_creds(&cred, region, region_opt));
    struct cl_aws_kv ctx[2] = {{CL_BATCH_CTX_CONSUMER, h->consumer}, {CL_BATCH_CTX_JOB_ID, h->job_id}};
    struct cl_kmsc_endpoint ep = {.url = strcmp(kms, "aws") ? kms : NULL, .region = region};
    CL_GUARD(cl_kmsc_decrypt(&ep, cred, h->key_id, h->wrapped, h->wrapped_len, ctx, 2, &key));
    CL_ENSURE_D(key.len == CL_BATCH_KEY_LEN, CL_E_SEAL_UNWRAP, "job key of %zu bytes", key.len);
    what = "decrypt";
    bool ok2 = false;
    CL_GUARD(cl_batch_result_open(res.data, res.len, job, key.data, &ok2, &pt));
    json_error_t e;
    ans = json_loadb((const char *)pt.data, pt.len, 0, &e);
    CL_ENSURE_D(ans && json_is_object(ans), CL_E_PROTO_JOB_MALFORMED, "the result is not a JSON object");
    if (json) {
        char mh[65];
        cl_hex_encode(r.model_sha256, 32, mh);
        json_object_set_new(ans, "receipt",
                            json_pack("{s:I,s:s,s:s,s:s,s:i,s:i,s:I}", "seq", (json_int_t)r.seq, "consumer", r.consumer,
                                      "model_sha256", mh, "status", r.ok ? "ok" : "error", "prompt_tokens",
                                      (int)r.prompt_tokens, "completion_tokens", (int)r.completion_tokens,
                                      "duration_us", (json_int_t)r.duration_us));
        char *s = json_dumps(ans, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        cl_json_free_str(s);
    } else {
        json_t *content = json_object_get(json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message"),
                                          "content");
        if (!ok2 || !json_is_string(content)) {
            json_t *m = json_object_get(json_object_get(ans, "error"), "message");
            fprintf(stderr, "cloister %s: the enclave answered job %s with an error: %s\n", cmd, job,
                    json_is_string(m) ? json_string_value(m) : "(no message)");
            goto out;
        }
        fwrite(json_string_value(content), 1, json_string_length(content), stdout);
        printf("\n");
    }
    ret = CL_EXIT_OK;
out:
    if (rc != CL_OK)
        ret = cl_cli_fail(cmd, what, rc);
    json_decref(ans);
    free(h);
    cl_pkey_free(audit);
    cl_bcli_creds_free(cred);
    cl_bstore_results_close(rs);
    cl_bstore_objects_close(os);
    cl_buf_free(&res);
    cl_buf_free(&rcpt);
    cl_buf_free(&jobo);
    cl_buf_free(&key);
    cl_buf_free(&pt);
    return ret;
}

/* ---------------- cloister batch ---------------- */

static void cl_bcli_help(FILE *f)
{
    fprintf(f, "usage: cloister batch (submit | status | result) ...\n\n"
               "  submit   encrypt jobs under the consumer's key and queue them\n"
               "  status   queue, dead-letter and result counts; the state of given jobs\n"
               "  result   fetch, verify the receipt, decrypt and print a job's answer\n\n"
               "'cloister batch SUBCOMMAND --help' describes each. The worker is 'cloister-host --worker';\n"
               "the receipts' audit is 'cloister audit verify'. Design: docs/batch.md.\n");
}

int cl_cmd_batch(int argc, char **argv)
{
    if (argc < 2 || cl_cli_is_help(argv[1])) {
        cl_bcli_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? CL_EXIT_USAGE : CL_EXIT_OK;
    }
    if (!strcmp(argv[1], "submit"))
        return cl_bcli_submit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "status"))
        return cl_bcli_status(argc - 1, argv + 1);
    if (!strcmp(argv[1], "result"))
        return cl_bcli_result(argc - 1, argv + 1);
    return cl_cli_usage_error("batch", "unknown subcommand '%s' (submit, status or result)", argv[1]);
}

/* ---------------- cloister audit verify | show ---------------- */

struct cl_audit_rec {
    int64_t rowid;
    int chain; /* index into chains, -1 when the receipt does not parse */
    struct cl_batch_receipt r;
    uint8_t hash[32];
    bool sig_ok;
    const char *why; /* fixed text when the record failed */
};

struct cl_audit_chain {
    uint8_t att[32];
    cl_pkey *key;
    cl_err key_rc;
};

#define CL_AUDIT_MAX_CHAINS 256
#define CL_AUDIT_MAX_RECORDS (1u << 20)

struct cl_audit {
    cl_bstore_results *rs;
    const struct cl_bcli_pins *pins;
    struct cl_audit_rec *recs;
    size_t n, cap;
    struct cl_audit_chain chains[CL_AUDIT_MAX_CHAINS];
    size_t nchains;
    size_t findings;
    bool json, show;
    cl_err rc;
};

static void cl_audit_finding(struct cl_audit *A, const char *kind, const struct cl_audit_rec *rec, const char *fmt, ...)
    CL_PRINTF(4, 5);
static void cl_audit_finding(struct cl_audit *A, const char *kind, const struct cl_audit_rec *rec, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* an interactive receipt names its request (the answer's "id"), a batch one its job */
    bool inter = rec && !strcmp(rec->r.kind, CL_BATCH_KIND_INTERACTIVE);
    if (A->json) {
        printf("%s{\"finding\":\"%s\",\"record\":%lld,\"seq\":%llu,\"kind\":\"%s\",\"%s\":\"%s\",\"detail\":\"",
               A->findings ? "," : "", kind, rec ? (long long)rec->rowid : -1LL,
               rec ? (unsigned long long)rec->r.seq : 0ULL, inter ? "interactive" : "batch",
               inter ? "request_id" : "job_id", rec && cl_batch_id_valid(rec->r.job_id) ? rec->r.job_id : "");
        cl_cli_json_str(stdout, (const uint8_t *)msg, strlen(msg));
        printf("\"}");
    } else
        printf("%s: record %lld (seq %llu, %s %s): %s\n", kind, rec ? (long long)rec->rowid : -1LL,
               rec ? (unsigned long long)rec->r.seq : 0ULL, inter ? "request" : "job",
               rec && cl_batch_id_valid(rec->r.job_id) ? rec->r.job_id : "?", msg);
    A->findings++;
}

static int cl_audit_chain_of(struct cl_audit *A, const uint8_t att[32])
{
    for (size_t i = 0; i < A->nchains; i++)
        if (!memcmp(A->chains[i].att, att, 32))
            return (int)i;
    if (A->nchains == CL_AUDIT_MAX_CHAINS)
        return -1;
    struct cl_audit_chain *c = &A->chains[A->nchains];
    memcpy(c->att, att, 32);
    c->key = NULL;
    c->key_rc = A->pins->root ? cl_bcli_audit_key(A->rs, A->pins, att, &c->key, NULL)
                              : cl_err_fail(CL_E_CLI_USAGE, "no --root given");
    return (int)A->nchains++;
}

static bool cl_audit_collect(void *ctx, int64_t rowid, const uint8_t *p, size_t n)
{
    struct cl_audit *A = ctx;
    if (A->n == A->cap) {
        size_t cap = A->cap ? A->cap * 2 : 256;
        struct cl_audit_rec *nr = cap <= CL_AUDIT_MAX_RECORDS ? realloc(A->recs, cap * sizeof(*nr)) : NULL;
        if (!nr) {
            A->rc = cl_err_fail(CL_E_CORE_LIMIT, "more than %u receipts", CL_AUDIT_MAX_RECORDS);
            return false;
        }
        A->recs = nr;
        A->cap = cap;
    }
    struct cl_audit_rec *rec = &A->recs[A->n++];
    memset(rec, 0, sizeof(*rec));
    rec->rowid = rowid;
    rec->chain = -1;
    if (cl_sha256(p, n, rec->hash) != CL_OK || cl_batch_receipt_parse(p, n, &rec->r) != CL_OK) {
        rec->why = "not a receipt (malformed COSE_Sign1 or payload)";
        return true;
    }
    rec->chain = cl_audit_chain_of(A, rec->r.attestation_sha256);
    if (rec->chain < 0) {
        rec->why = "too many chains";
        return true;
    }
    struct cl_audit_chain *c = &A->chains[rec->chain];
    if (c->key_rc != CL_OK) {
        rec->why = "signed by a key that no valid attestation certifies";
        return true;
    }
    rec->sig_ok = cl_batch_receipt_verify(p, n, c->key) == CL_OK;
    if (!rec->sig_ok)
        rec->why = "the signature does not verify with the attested audit key";
    return true;
}

static int cl_audit_seq_cmp(const void *a, const void *b)
{
    const struct cl_audit_rec *x = *(const struct cl_audit_rec *const *)a, *y = *(const struct cl_audit_rec *const *)b;
    if (x->r.seq != y->r.seq)
        return x->r.seq < y->r.seq ? -1 : 1;
    return x->rowid < y->rowid ? -1 : x->rowid > y->rowid;
}

struct cl_audit_res_ctx {
    struct cl_audit *A;
};

static bool cl_audit_result(void *ctx, const char *job_id, const uint8_t *res, size_t n, const uint8_t *rcpt, size_t rn)
{
    struct cl_audit *A = ctx;
    struct cl_audit_rec tmp;
    uint8_t d[32];
    memset(&tmp, 0, sizeof(tmp));
    tmp.rowid = -1;
    snprintf(tmp.r.job_id, sizeof(tmp.r.job_id), "%s", cl_batch_id_valid(job_id) ? job_id : "?");
    if (!rcpt || cl_batch_receipt_parse(rcpt, rn, &tmp.r) != CL_OK) {
        cl_audit_finding(A, "deleted", &tmp, "result of job %s has no receipt", tmp.r.job_id);
        return true;
    }
    if (strcmp(tmp.r.job_id, job_id) != 0) {
        cl_audit_finding(A, "altered", &tmp, "a result is stored under another job's receipt");
        return true;
    }
    if (cl_sha256(res, n, d) != CL_OK || !cl_ct_equal(d, tmp.r.result_sha256, 32))
        cl_audit_finding(A, "altered", &tmp, "the stored result differs from the one its receipt signs");
    return true;
}

static void cl_audit_help(FILE *f)
{
    fprintf(f,
            "usage: cloister audit verify --results URL --root ROOT.pem --pcr N=HEX... [--model-digest HEX] [--json]\n"
            "       cloister audit show --results URL [--root ROOT.pem --pcr N=HEX...] [--json]\n\n"
            "verify  checks every receipt in the results store (docs/batch.md): the attestation document\n"
            "        it names chains to ROOT with the PCRs and certifies the audit key in its user_data;\n"
            "        the signature; per enclave boot (audit key) the sequence numbers and each receipt's\n"
            "        hash link to the one before; every stored result's digest against its receipt.\n"
            "        Each finding is named: altered (signature or digest), deleted (a missing sequence\n"
            "        number or link), inserted (a duplicate, or a key no valid attestation certifies),\n"
            "        reordered (stored out of sequence). Exit 0 when none, 1 otherwise.\n"
            "        A deletion of a chain's newest receipts leaves no gap; compare the newest seq with\n"
            "        the enclave's own count when that matters.\n"
            "show    lists the receipts (record, chain, seq, job or request, status, tokens, duration),\n"
            "        and with --root and --pcr the verdict of each; --json adds every signed field\n"
            "        (kind, consumer, model and projector digests, ciphertext digests, timings).\n"
            "--results sqlite:PATH or dynamodb://TABLE[?endpoint=URL] (receipts in write order; AWS\n"
            "        credentials and AWS_REGION from the environment or ~/.aws).\n\n"
            "Both kinds of receipt live in one store and one chain per enclave boot: batch jobs\n"
            "(stored by cloister-host --worker) and interactive chat completions (stored by\n"
            "cloister-host --receipts; their request id is the answer's \"id\", which\n"
            "'cloister ask --json' prints as request_id). See docs/receipts.md.\n");
}

int cl_cmd_audit(int argc, char **argv)
{
    if (argc < 2 || cl_cli_is_help(argv[1])) {
        cl_audit_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? CL_EXIT_USAGE : CL_EXIT_OK;
    }
    bool show = !strcmp(argv[1], "show");
    if (!show && strcmp(argv[1], "verify"))
        return cl_cli_usage_error("audit", "unknown subcommand '%s' (verify or show)", argv[1]);
    const char *cmd = show ? "audit show" : "audit verify";
    enum { O_RESULTS = 256, O_ROOT, O_PCR, O_MODEL };
    static const struct option opts[] = {CL_CLI_OPT_HELP, CL_CLI_OPT_JSON,
                                         {"results", required_argument, NULL, O_RESULTS},
                                         {"root", required_argument, NULL, O_ROOT},
                                         {"pcr", required_argument, NULL, O_PCR},
                                         {"model-digest", required_argument, NULL, O_MODEL}, CL_CLI_OPT_END};
    const char *ru = NULL;
    struct cl_bcli_pins pins = {0};
    bool json = false;
    struct cl_cli_args a = {.cmd = cmd, .help = cl_audit_help, .longopts = opts, .json = &json};
    argc--;
    argv++;
    for (int c; (c = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (c) {
        case O_RESULTS: ru = optarg; break;
        case O_ROOT: pins.root = optarg; break;
        case O_PCR:
            if (!cl_bcli_pcr_opt(cmd, optarg, &pins))
                return CL_EXIT_USAGE;
            break;
        case O_MODEL:
            if (!cl_bcli_model_opt(cmd, optarg, &pins))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!ru)
        return cl_cli_usage_error(cmd, "--results URL is required");
    bool verify = !show || pins.root;
    if (verify && (!pins.root || !pins.npcr))
        return cl_cli_usage_error(cmd, "--root ROOT.pem and at least one --pcr N=HEX are required");

    struct cl_audit *A = calloc(1, sizeof(*A));
    if (!A)
        return cl_cli_fail(cmd, "memory", CL_E_CORE_NOMEM);
    int ret = CL_EXIT_FAIL;
    const struct cl_audit_rec **sorted = NULL;
    A->pins = &pins;
    A->json = json;
    A->show = show;
    cl_err rc = cl_bstore_results_open(ru, &A->rs);
    if (rc != CL_OK) {
        ret = cl_cli_fail(cmd, "--results", rc);
        goto out;
    }
    if (verify) {
        rc = cl_bstore_results_each_receipt(A->rs, cl_audit_collect, A);
        if (rc == CL_OK)
            rc = A->rc;
    } else {
        struct cl_bcli_pins none = {0};
        A->pins = &none;
        rc = cl_bstore_results_each_receipt(A->rs, cl_audit_collect, A); /* parses; verdicts need --root */
        A->pins = &pins;
    }
    if (rc != CL_OK) {
        ret = cl_cli_fail(cmd, "receipts", rc);
        goto out;
    }
    if (show) {
        if (json)
            printf("{\"receipts\":[");
        for (size_t i = 0; i < A->n; i++) {
            const struct cl_audit_rec *r = &A->recs[i];
            char att[65], din[65], dout[65], model[65], proj[65];
            cl_hex_encode(r->r.attestation_sha256, 32, att);
            cl_hex_encode(r->r.job_sha256, 32, din);
            cl_hex_encode(r->r.result_sha256, 32, dout);
            cl_hex_encode(r->r.model_sha256, 32, model);
            cl_hex_encode(r->r.projector_sha256, 32, proj);
            bool inter = !strcmp(r->r.kind, CL_BATCH_KIND_INTERACTIVE), parsed = r->chain >= 0 || r->r.seq;
            const char *verdict = !verify ? "unchecked" : r->why ? r->why : "signature ok";
            const char *id = cl_batch_id_valid(r->r.job_id) ? r->r.job_id : "";
            if (json) {
                /* fields come from the signed payload (printable, no quotes: checked by the parser) */
                printf("%s{\"record\":%lld,\"chain\":\"%.16s\",\"seq\":%llu,\"kind\":\"%s\",\"%s\":\"%s\","
                       "\"consumer\":\"%s\",\"model_sha256\":\"%s\",",
                       i ? "," : "", (long long)r->rowid, att, (unsigned long long)r->r.seq,
                       parsed ? (inter ? "interactive" : "batch") : "", inter ? "request_id" : "job_id", id,
                       cl_batch_text_valid(r->r.consumer, CL_BATCH_CONSUMER_MAX) ? r->r.consumer : "",
                       parsed ? model : "");
                if (r->r.has_projector)
                    printf("\"projector_sha256\":\"%s\",", proj);
                printf("\"%s\":\"%s\",\"%s\":\"%s\",\"status\":\"%s\",\"error\":\"%s\",\"prompt_tokens\":%u,"
                       "\"completion_tokens\":%u,\"started_ms\":%llu,\"duration_us\":%llu,\"verdict\":\"%s\"}",
                       inter ? "request_sha256" : "job_sha256", parsed ? din : "",
                       inter ? "response_sha256" : "result_sha256", parsed ? dout : "", r->r.ok ? "ok" : "error",
                       cl_batch_id_valid(r->r.error) ? r->r.error : "", r->r.prompt_tokens, r->r.completion_tokens,
                       (unsigned long long)r->r.started_ms, (unsigned long long)r->r.duration_us, verdict);
            } else {
                printf("%6lld  chain %.16s  seq %-6llu  %-7s %-33s  %-5s  %u+%u tokens  %llu us  %s\n",
                       (long long)r->rowid, att, (unsigned long long)r->r.seq, inter ? "request" : "job",
                       id[0] ? id : "?", r->r.ok ? "ok" : "error", r->r.prompt_tokens, r->r.completion_tokens,
                       (unsigned long long)r->r.duration_us, verdict);
            }
        }
        if (json)
            printf("]}\n");
        ret = CL_EXIT_OK;
        goto out;
    }

    if (json)
        printf("{\"findings\":[");
    /* per record: parse, attestation, signature */
    for (size_t i = 0; i < A->n; i++) {
        struct cl_audit_rec *r = &A->recs[i];
        if (!r->why)
            continue;
        if (r->chain >= 0 && A->chains[r->chain].key_rc != CL_OK) {
            char b[200];
            cl_audit_finding(A, "inserted", r, "%s (%s)", r->why,
                             cl_err_format(A->chains[r->chain].key_rc, b, sizeof(b)));
        } else {
            cl_audit_finding(A, "altered", r, "%s", r->why);
        }
    }
    /* per chain: stored order, sequence, links (only records whose signature verified) */
    sorted = calloc(A->n ? A->n : 1, sizeof(*sorted));
    if (!sorted) {
        ret = cl_cli_fail(cmd, "memory", CL_E_CORE_NOMEM);
        goto out;
    }
    for (size_t c = 0; c < A->nchains; c++) {
        size_t m = 0;
        uint64_t maxseq = 0;
        for (size_t i = 0; i < A->n; i++) {
            const struct cl_audit_rec *r = &A->recs[i];
            if (r->chain != (int)c || !r->sig_ok)
                continue;
            if (r->r.seq < maxseq)
                cl_audit_finding(A, "reordered", r, "stored after seq %llu of the same enclave",
                                 (unsigned long long)maxseq);
            if (r->r.seq > maxseq)
                maxseq = r->r.seq;
            sorted[m++] = r;
        }
        qsort(sorted, m, sizeof(*sorted), cl_audit_seq_cmp);
        static const uint8_t zero[32];
        for (size_t k = 0; k < m; k++) {
            const struct cl_audit_rec *r = sorted[k], *p = k ? sorted[k - 1] : NULL;
            if (p && p->r.seq == r->r.seq) {
                cl_audit_finding(A, "inserted", r, "a second receipt with seq %llu (record %lld has it)",
                                 (unsigned long long)r->r.seq, (long long)p->rowid);
                continue;
            }
            uint64_t want = p ? p->r.seq + 1 : 1;
            if (r->r.seq > want) {
                cl_audit_finding(A, "deleted", r, "seq %llu..%llu of this enclave are missing",
                                 (unsigned long long)want, (unsigned long long)(r->r.seq - 1));
                continue;
            }
            const uint8_t *link = p ? p->hash : zero;
            if (!cl_ct_equal(r->r.prev, link, 32))
                cl_audit_finding(A, "altered", r, "its link does not match the receipt with seq %llu",
                                 (unsigned long long)(r->r.seq - 1));
        }
    }
    /* results against their receipts */
    rc = cl_bstore_results_each_result(A->rs, cl_audit_result, A);
    if (json)
        printf("],\"receipts\":%zu,\"chains\":%zu,\"ok\":%s}\n", A->n, A->nchains, A->findings ? "false" : "true");
    else if (!A->findings)
        printf("ok - %zu receipts in %zu chains: signatures, attestations, sequence and links verify\n", A->n,
               A->nchains);
    if (rc != CL_OK) {
        ret = cl_cli_fail(cmd, "results", rc);
    } else if (A->findings) {
        char b[200];
        fprintf(stderr, "cloister %s: %zu findings: %s\n", cmd, A->findings,
                cl_err_format(cl_err_fail(CL_E_PROTO_AUDIT_FINDINGS, "%zu receipts checked", A->n), b, sizeof(b)));
        ret = CL_EXIT_FAIL;
    } else {
        ret = CL_EXIT_OK;
    }
out:
    for (size_t i = 0; i < A->nchains; i++)
        cl_pkey_free(A->chains[i].key);
    free(sorted);
    free(A->recs);
    cl_bstore_results_close(A->rs);
    free(A);
    return ret;
}
