/* keygen, seal, unseal, inspect: the model owner's sealed-file commands. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/attest_user_data.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/kms_client.h"
#include "cloister/policy.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"

static void cl_seal_progress_cb(void *arg, uint64_t done) { cl_progress_update(arg, done); }

static unsigned cl_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static bool cl_path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static void cl_keygen_help(FILE *f)
{
    fprintf(f, "usage: cloister keygen -o KEYFILE\n\n"
               "Creates a new random 256-bit key file readable only by you (mode 0600).\n"
               "Refuses to overwrite an existing file. Keep it off shared storage: whoever\n"
               "holds it can unseal every model sealed under it.\n");
}

int cl_cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'}, CL_CLI_OPT_HELP, CL_CLI_OPT_END};
    const char *out = NULL;
    struct cl_cli_args args = {.cmd = "keygen", .help = cl_keygen_help, .shortopts = "o:", .longopts = opts};
    for (int c; (c = cl_cli_next(&args, argc, argv)) != -1;) {
        if (c != 'o')
            return args.exit;
        out = optarg;
    }
    if (!out || optind != argc)
        return cl_cli_usage_error("keygen", "expected -o KEYFILE and nothing else");
    if (cl_cli_harden("keygen") != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    cl_err rc = cl_seal_keyfile_create(out);
    if (rc != CL_OK)
        return cl_cli_fail("keygen", out, rc);
    fprintf(stderr, "cloister keygen: wrote %s (mode 0600)\n", out);
    return CL_EXIT_OK;
}

/* GGUF metadata that goes into the header; failures here mean "not a model". */
static cl_err cl_seal_read_meta(const cl_gguf *g, char *name, size_t nlen, char *arch, size_t alen, uint32_t *ftype)
{
    struct cl_gguf_str s;
    int64_t v;
    if (cl_gguf_get_str(g, "general.architecture", &s) == CL_OK)
        snprintf(arch, alen, "%.*s", (int)s.len, s.p);
    else
        snprintf(arch, alen, "unknown");
    if (cl_gguf_get_str(g, "general.name", &s) == CL_OK)
        snprintf(name, nlen, "%.*s", (int)s.len, s.p);
    *ftype = cl_gguf_get_int(g, "general.file_type", &v) == CL_OK && v >= 0 && v <= UINT32_MAX ? (uint32_t)v : 0;
    /* Names end up printed by `inspect`: keep only printable bytes. */
    for (char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    for (char *p = arch; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return CL_OK;
}

/* GenerateDataKey with the sealed file's encryption context: the key
 * service returns the data key and the blob that goes into the header. */
static cl_err cl_seal_kms_data_key(const char *url, const char *key_id, const char *region_opt,
                                   const struct cl_seal_ctx_pair *ctx, size_t n_ctx, uint8_t dk[32], uint8_t *wrapped, size_t cap,
                                   size_t *wl, char *key_arn, size_t arn_cap)
{
    cl_err rc = CL_OK;
    struct cl_kmsc_credentials *cred = NULL;
    struct cl_buf key, blob;
    char region[64] = "us-east-1";
    void *mem = NULL;
    cl_buf_init(&key, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, cap, CL_BUF_NONE);
    CL_GUARD(cl_secmem_alloc(sizeof(*cred), &mem));
    cred = mem;
    CL_GUARD(cl_kmsc_credentials_load(cred));
    if (region_opt)
        snprintf(region, sizeof(region), "%s", region_opt);
    else
        CL_GUARD(cl_kmsc_region_load(region, sizeof(region)));
    struct cl_aws_kv kv[3];
    for (size_t i = 0; i < n_ctx && i < 3; i++)
        kv[i] = (struct cl_aws_kv){ctx[i].key, ctx[i].value};
    struct cl_kmsc_endpoint ep = {.url = strcmp(url, "aws") ? url : NULL, .region = region};
    CL_GUARD(cl_kmsc_generate_data_key(&ep, cred, key_id, kv, n_ctx, &key, &blob, key_arn, arn_cap));
    CL_ENSURE_D(key.len == 32, CL_E_SEAL_UNWRAP, "data key of %zu bytes (want 32: use AES_256)", key.len);
    memcpy(dk, key.data, 32);
    memcpy(wrapped, blob.data, blob.len);
    *wl = blob.len;
out:
    if (cred)
        cl_kmsc_credentials_wipe(cred);
    cl_secmem_free(mem);
    cl_buf_free(&key);
    cl_buf_free(&blob);
    return rc;
}

static void cl_seal_help(FILE *f)
{
    fprintf(f, "usage: cloister seal MODEL.gguf -o MODEL.sealed (--key-file KEYFILE | --kms URL --key-id ID) [options]\n\n"
           "Encrypts a GGUF model into a sealed model file (docs/formats/sealed-model.md):\n"
           "a fresh data key per file, wrapped under KEYFILE or by the key service\n"
           "(GenerateDataKey), bound to an encryption context naming the model and its\n"
           "SHA-256 (cloister:model, cloister:model-sha256).\n\n"
           "options:\n"
           "  -o, --output FILE       sealed output (must not exist unless --force)\n"
           "  --key-file FILE         256-bit key file from `cloister keygen` (mode 0600)\n"
           "  --kms URL               key service: a cloister-kms URL, or `aws` for AWS KMS in --region\n"
           "  --key-id ID             key id, ARN or alias/NAME at the key service\n"
           "  --region R              signing region (default: AWS_REGION, the AWS config, else us-east-1)\n"
           "                          credentials come from the usual AWS variables or files\n"
           "  --name NAME             model name in the header (default: general.name, else file name)\n"
           "  --chunk-size BYTES      chunk size, 4096..268435456 (default 4194304)\n"
           "  -t, --threads N         encryption threads (default: all CPUs)\n"
           "  --force                 replace an existing output file\n"
           "  --licence-key-sha256 HEX  licensed model (docs/licensing.md): adds the encryption context\n"
           "                          cloister:licence-key-sha256 = HEX, the SHA-256 of the key service's\n"
           "                          licence key for --key-id (`cloister kms licence key` prints it); the\n"
           "                          enclave then serves only licensed consumers, under a renewed lease\n");
}

int cl_cmd_seal(int argc, char **argv)
{
    enum { O_KEYFILE = 256, O_NAME, O_CHUNK, O_FORCE, O_KMS, O_KEYID, O_REGION, O_LICKEY };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},   {"key-file", required_argument, 0, O_KEYFILE},
        {"kms", required_argument, 0, O_KMS},    {"key-id", required_argument, 0, O_KEYID},
        {"region", required_argument, 0, O_REGION}, {"licence-key-sha256", required_argument, 0, O_LICKEY},
        {"name", required_argument, 0, O_NAME},  {"chunk-size", required_argument, 0, O_CHUNK},
        CL_CLI_OPT_THREADS,  {"force", no_argument, 0, O_FORCE},
        CL_CLI_OPT_HELP,                         CL_CLI_OPT_END};
    const char *out = NULL, *keyfile = NULL, *name_opt = NULL, *kms = NULL, *key_id = NULL, *region_opt = NULL,
               *lickey = NULL;
    uint64_t chunk = CL_SEAL_DEFAULT_CHUNK, threads = cl_default_threads();
    bool force = false;
    struct cl_cli_args args = {.cmd = "seal", .help = cl_seal_help, .shortopts = "o:t:", .longopts = opts,
                               .threads = &threads, .max_threads = 64};
    for (int c; (c = cl_cli_next(&args, argc, argv)) != -1;) {
        switch (c) {
        case 'o': out = optarg; break;
        case O_KEYFILE: keyfile = optarg; break;
        case O_NAME: name_opt = optarg; break;
        case O_KMS: kms = optarg; break;
        case O_KEYID: key_id = optarg; break;
        case O_REGION: region_opt = optarg; break;
        case O_LICKEY:
            lickey = optarg;
            if (strlen(lickey) != 64 || strspn(lickey, "0123456789abcdef") != 64)
                return cl_cli_usage_error("seal", "--licence-key-sha256 must be 64 lower-case hex digits");
            break;
        case O_CHUNK:
            if (!cl_cli_parse_u64(optarg, CL_SEAL_MIN_CHUNK, CL_SEAL_MAX_CHUNK, &chunk))
                return cl_cli_usage_error("seal", "--chunk-size must be %u..%u", CL_SEAL_MIN_CHUNK, CL_SEAL_MAX_CHUNK);
            break;
        case O_FORCE: force = true; break;
        default: return args.exit;
        }
    }
    if (optind + 1 != argc)
        return cl_cli_usage_error("seal", "expected exactly one MODEL.gguf");
    if (!out)
        return cl_cli_usage_error("seal", "missing -o MODEL.sealed");
    if (!!keyfile == !!kms)
        return cl_cli_usage_error("seal", "give exactly one of --key-file KEYFILE or --kms URL");
    if (kms && !key_id)
        return cl_cli_usage_error("seal", "--kms needs --key-id ID");
    if (lickey && !kms)
        return cl_cli_usage_error("seal", "--licence-key-sha256 needs --kms: licences live in the key service");
    const char *in = argv[optind];
    if (!force && cl_path_exists(out)) {
        fprintf(stderr, "cloister seal: %s already exists (use --force to replace it)\n", out);
        return CL_EXIT_FAIL;
    }
    if (cl_cli_harden("seal") != CL_EXIT_OK)
        return CL_EXIT_FAIL;

    int status = CL_EXIT_FAIL;
    cl_err rc;
    cl_gguf *g = NULL;
    uint8_t *keys = NULL; /* kek | dk in secure memory */
    uint8_t salt[32], digest[32], wrapped[CL_SEAL_MAX_WRAPPED];
    size_t wl = 0;
    char name[CL_SEAL_MAX_NAME + 1] = "", arch[CL_SEAL_MAX_ARCH + 1], keyid[32], digest_hex[65], key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1];
    uint32_t ftype = 0;
    if ((rc = cl_gguf_open_file(in, &g)) != CL_OK) {
        status = cl_cli_fail("seal", in, rc);
        goto out;
    }
    size_t len = 0;
    const uint8_t *pt = cl_gguf_buffer(g, &len);
    (void)cl_seal_read_meta(g, name, sizeof(name), arch, sizeof(arch), &ftype);
    if (name_opt)
        snprintf(name, sizeof(name), "%s", name_opt);
    if (!name[0]) {
        const char *base = strrchr(in, '/');
        snprintf(name, sizeof(name), "%s", base ? base + 1 : in);
    }
    void *mem = NULL;
    if ((rc = cl_secmem_alloc(64, &mem)) != CL_OK) {
        status = cl_cli_fail("seal", "secure memory", rc);
        goto out;
    }
    keys = mem;
    if ((rc = cl_sha256(pt, len, digest)) != CL_OK || (rc = cl_random_bytes(salt, sizeof(salt))) != CL_OK) {
        status = cl_cli_fail("seal", "digest", rc);
        goto out;
    }
    cl_hex_encode(digest, 32, digest_hex);
    struct cl_seal_ctx_pair ctx[3];
    size_t n_ctx = 2;
    snprintf(ctx[0].key, sizeof(ctx[0].key), "cloister:model");
    snprintf(ctx[0].value, sizeof(ctx[0].value), "%s", name);
    snprintf(ctx[1].key, sizeof(ctx[1].key), "cloister:model-sha256");
    snprintf(ctx[1].value, sizeof(ctx[1].value), "%s", digest_hex);
    if (lickey) {
        snprintf(ctx[2].key, sizeof(ctx[2].key), "cloister:licence-key-sha256");
        snprintf(ctx[2].value, sizeof(ctx[2].value), "%s", lickey);
        n_ctx = 3;
    }
    enum cl_seal_provider provider = keyfile ? CL_SEAL_PROVIDER_KEYFILE : CL_SEAL_PROVIDER_KMS;
    const char *kid = keyid;
    if (keyfile) {
        if ((rc = cl_seal_keyfile_load(keyfile, keys)) != CL_OK) {
            status = cl_cli_fail("seal", keyfile, rc);
            goto out;
        }
        if ((rc = cl_random_bytes(keys + 32, 32)) != CL_OK || (rc = cl_seal_keyfile_id(keys, keyid)) != CL_OK ||
            (rc = cl_seal_keyfile_wrap(keys, keys + 32, ctx, 2, salt, wrapped, &wl)) != CL_OK) {
            status = cl_cli_fail("seal", "wrap data key", rc);
            goto out;
        }
    } else {
        /* The header records the key's ARN as the service named it, which is
         * what an enclave attests after Decrypt (and what measure pins). */
        kid = key_arn;
        if ((rc = cl_seal_kms_data_key(kms, key_id, region_opt, ctx, n_ctx, keys + 32, wrapped, sizeof(wrapped), &wl,
                                       key_arn, sizeof(key_arn))) != CL_OK) {
            status = cl_cli_fail("seal", "key service GenerateDataKey", rc);
            goto out;
        }
    }
    struct cl_seal_params p = {.chunk_size = (uint32_t)chunk, .name = name, .arch = arch,
                               .tensor_count = cl_gguf_n_tensors(g), .file_type = ftype, .n_ctx = n_ctx, .ctx = ctx,
                               .provider = provider, .key_id = kid, .wrapped = wrapped,
                               .wrapped_len = wl};
    struct cl_progress prog;
    cl_progress_start(&prog, "sealing", len);
    rc = cl_seal_write_file(out, pt, len, digest, &p, keys + 32, salt, (unsigned)threads, cl_seal_progress_cb, &prog);
    cl_progress_finish(&prog);
    if (rc != CL_OK) {
        status = cl_cli_fail("seal", out, rc);
        goto out;
    }
    double secs = (double)(cl_now_us() - prog.start_us) / 1e6;
    printf("sealed %s -> %s\n  model      %s (%s, %zu tensors)\n  size       %zu bytes\n  sha256     %s\n"
           "  key        %s\n  time       %.2f s\n",
           in, out, name, arch, cl_gguf_n_tensors(g), len, digest_hex, kid, secs);
    status = CL_EXIT_OK;
out:
    cl_secmem_free(keys);
    cl_gguf_free(g);
    return status;
}

static void cl_unseal_help(FILE *f)
{
    fprintf(f, "usage: cloister unseal MODEL.sealed --key-file KEYFILE (-o OUT | --verify) [options]\n\n"
           "Authenticates every chunk of a sealed model and decrypts it. With -o the plaintext\n"
           "is written to a temporary file that is renamed to OUT only after every chunk and\n"
           "the model digest verified; nothing is left behind on failure. With --verify\n"
           "nothing is written: the model is checked in memory and its SHA-256 printed.\n\n"
           "options:\n"
           "  --key-file FILE         the key file the model was sealed under\n"
           "  -o, --output FILE       plaintext output (must not exist unless --force)\n"
           "  --verify                check only, print the digest\n"
           "  -t, --threads N         decryption threads (default: all CPUs)\n"
           "  --force                 replace an existing output file\n"
           "  --licence-key-sha256 HEX  licensed model (docs/licensing.md): adds the encryption context\n"
           "                          cloister:licence-key-sha256 = HEX, the SHA-256 of the key service's\n"
           "                          licence key for --key-id (`cloister kms licence key` prints it); the\n"
           "                          enclave then serves only licensed consumers, under a renewed lease\n");
}

int cl_cmd_unseal(int argc, char **argv)
{
    enum { O_KEYFILE = 256, O_VERIFY, O_FORCE };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"key-file", required_argument, 0, O_KEYFILE},
        {"verify", no_argument, 0, O_VERIFY},  CL_CLI_OPT_THREADS,
        {"force", no_argument, 0, O_FORCE},    CL_CLI_OPT_HELP, CL_CLI_OPT_END};
    const char *out = NULL, *keyfile = NULL;
    bool verify = false, force = false;
    uint64_t threads = cl_default_threads();
    struct cl_cli_args args = {.cmd = "unseal", .help = cl_unseal_help, .shortopts = "o:t:", .longopts = opts,
                               .threads = &threads, .max_threads = 64};
    for (int c; (c = cl_cli_next(&args, argc, argv)) != -1;) {
        switch (c) {
        case 'o': out = optarg; break;
        case O_KEYFILE: keyfile = optarg; break;
        case O_VERIFY: verify = true; break;
        case O_FORCE: force = true; break;
        default: return args.exit;
        }
    }
    if (optind + 1 != argc)
        return cl_cli_usage_error("unseal", "expected exactly one MODEL.sealed");
    if (!keyfile)
        return cl_cli_usage_error("unseal", "missing --key-file KEYFILE");
    if (!!out == verify)
        return cl_cli_usage_error("unseal", "give exactly one of -o OUT or --verify");
    const char *in = argv[optind];
    if (out && !force && cl_path_exists(out)) {
        fprintf(stderr, "cloister unseal: %s already exists (use --force to replace it)\n", out);
        return CL_EXIT_FAIL;
    }
    if (cl_cli_harden("unseal") != CL_EXIT_OK)
        return CL_EXIT_FAIL;

    int status = CL_EXIT_FAIL;
    cl_err rc;
    void *kek = NULL;
    uint8_t *dk = NULL, *pt = NULL;
    struct cl_seal_header *h = malloc(sizeof(*h));
    int fd = open(in, O_RDONLY | O_CLOEXEC);
    if (!h) {
        status = cl_cli_fail("unseal", "memory", CL_E_CORE_NOMEM);
        goto out;
    }
    if (fd < 0) {
        status = cl_cli_fail("unseal", in, cl_err_from_errno(errno, "open"));
        goto out;
    }
    if ((rc = cl_secmem_alloc(32, &kek)) != CL_OK || (rc = cl_seal_keyfile_load(keyfile, kek)) != CL_OK) {
        status = cl_cli_fail("unseal", keyfile, rc);
        goto out;
    }
    if ((rc = cl_seal_open_header(fd, cl_seal_keyfile_resolver, kek, h, &dk)) != CL_OK) {
        status = cl_cli_fail("unseal", in, rc);
        goto out;
    }
    struct cl_progress prog;
    cl_progress_start(&prog, verify ? "verifying" : "unsealing", h->plaintext_size + h->n_chunks * CL_SEAL_TAG_LEN);
    if (verify) {
        void *mem = NULL;
        rc = cl_secmem_alloc(h->plaintext_size, &mem);
        pt = mem;
        if (rc == CL_OK)
            rc = cl_seal_decrypt_stream(fd, h, dk, pt, (unsigned)threads, CL_SEAL_OPEN_VERIFY_DIGEST,
                                        cl_seal_progress_cb, &prog);
    } else {
        rc = cl_seal_decrypt_to_file(fd, h, dk, out, (unsigned)threads, CL_SEAL_OPEN_VERIFY_DIGEST,
                                     cl_seal_progress_cb, &prog);
    }
    cl_progress_finish(&prog);
    if (rc != CL_OK) {
        status = cl_cli_fail("unseal", in, rc);
        goto out;
    }
    char hex[65];
    cl_hex_encode(h->digest, 32, hex);
    if (verify)
        printf("ok: %s verified (%llu chunks, %llu bytes)\nsha256 %s\n", in, (unsigned long long)h->n_chunks,
               (unsigned long long)h->plaintext_size, hex);
    else
        printf("unsealed %s -> %s (%llu bytes, sha256 %s)\n", in, out, (unsigned long long)h->plaintext_size, hex);
    status = CL_EXIT_OK;
out:
    cl_secmem_free(pt);
    cl_secmem_free(dk);
    cl_secmem_free(kek);
    if (fd >= 0)
        close(fd);
    free(h);
    return status;
}

static const char *cl_provider_name(enum cl_seal_provider p)
{
    switch (p) {
    case CL_SEAL_PROVIDER_KEYFILE: return "key-file";
    case CL_SEAL_PROVIDER_KMS: return "kms";
    default: return "unknown";
    }
}

static void cl_inspect_print(const struct cl_seal_header *h, bool json)
{
    char digest[65], salt[65];
    cl_hex_encode(h->digest, 32, digest);
    cl_hex_encode(h->salt, 32, salt);
    if (!json) {
        printf("format      cloister sealed model v%u (suite %u: AES-256-GCM chunks, HKDF-SHA256)\n"
               "model       %s\narchitecture %s\ntensors     %llu\nfile type   %u\n"
               "size        %llu bytes in %llu chunks of %u\nsha256      %s\nkey         %s (%s)\n",
               h->version, h->suite, h->name, h->arch, (unsigned long long)h->tensor_count, h->file_type,
               (unsigned long long)h->plaintext_size, (unsigned long long)h->n_chunks, h->chunk_size, digest,
               h->key_id, cl_provider_name(h->provider));
        for (size_t i = 0; i < h->n_ctx; i++)
            printf("context     %s = %s\n", h->ctx[i].key, h->ctx[i].value);
        printf("(header not authenticated: that needs the key; `cloister unseal --verify` checks everything)\n");
        return;
    }
    json_t *ctx = json_object();
    for (size_t i = 0; i < h->n_ctx; i++)
        json_object_set_new(ctx, h->ctx[i].key, json_string(h->ctx[i].value));
    json_t *o = json_pack("{s:i, s:i, s:s, s:s, s:I, s:i, s:I, s:I, s:i, s:i, s:s, s:s, s:s, s:s, s:o, s:b}",
                          "version", h->version, "suite", h->suite, "name", h->name, "architecture", h->arch,
                          "tensor_count", (json_int_t)h->tensor_count, "file_type", (int)h->file_type,
                          "plaintext_size", (json_int_t)h->plaintext_size, "chunks", (json_int_t)h->n_chunks,
                          "chunk_size", (int)h->chunk_size, "header_size", (int)h->header_len, "sha256", digest,
                          "salt", salt, "key_id", h->key_id, "key_provider", cl_provider_name(h->provider),
                          "encryption_context", ctx, "authenticated", 0);
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

static void cl_inspect_help(FILE *f)
{
    fprintf(f, "usage: cloister inspect MODEL.sealed [--json]\n\n"
               "Prints the sealed model's header: name, architecture, sizes, digest, key id,\n"
               "encryption context. Never prints or needs a key; the header is authenticated\n"
               "only by `cloister unseal`.\n");
}

int cl_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {CL_CLI_OPT_JSON, CL_CLI_OPT_HELP, CL_CLI_OPT_END};
    bool json = false;
    struct cl_cli_args args = {.cmd = "inspect", .help = cl_inspect_help, .longopts = opts, .json = &json};
    if (cl_cli_next(&args, argc, argv) != -1)
        return args.exit;
    if (optind + 1 != argc)
        return cl_cli_usage_error("inspect", "expected exactly one MODEL.sealed");
    const char *in = argv[optind];
    int status = CL_EXIT_FAIL;
    struct cl_buf raw;
    struct cl_seal_header *h = malloc(sizeof(*h));
    cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    int fd = open(in, O_RDONLY | O_CLOEXEC);
    cl_err rc;
    if (!h)
        status = cl_cli_fail("inspect", "memory", CL_E_CORE_NOMEM);
    else if (fd < 0)
        status = cl_cli_fail("inspect", in, cl_err_from_errno(errno, "open"));
    else if ((rc = cl_seal_read_header(fd, &raw, h)) != CL_OK)
        status = cl_cli_fail("inspect", in, rc);
    else {
        cl_inspect_print(h, json);
        status = CL_EXIT_OK;
    }
    if (fd >= 0)
        close(fd);
    cl_buf_free(&raw);
    free(h);
    return status;
}
