/* Enclave boot: configuration from the host, the sealed model's header, the
 * data key from the key service (Decrypt + Recipient: only this attested
 * enclave can read it), then the model decrypted in parallel into locked
 * memory and loaded in place. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/encode.h"
#include "cloister/infer/model.h"
#include "cloister/kms_client.h"
#include "cloister/licence.h"
#include "cloister/log.h"
#include "cloister/nsm.h"
#include "cloister/policy.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"
#include "cloister/enclave_runtime.h"
#include "kms_bridge.h"

static cl_err cl_boot_dial(uint32_t port, int *fd)
{
    cl_err rc = cl_vsock_connect(CL_WIRE_CID_PARENT, port, fd);
    if (rc != CL_OK)
        return cl_err_fail(CL_E_NET_INTERNAL, "parent port %u unreachable", port);
    return CL_OK;
}

/* Takes the checked boot configuration into the enclave's own settings. */
_Static_assert(sizeof(((struct cl_bootcfg *)0)->access_key_id) == sizeof(((struct cl_kmsc_credentials *)0)->access_key) &&
                   sizeof(((struct cl_bootcfg *)0)->secret_access_key) == sizeof(((struct cl_kmsc_credentials *)0)->secret) &&
                   sizeof(((struct cl_bootcfg *)0)->session_token) == sizeof(((struct cl_kmsc_credentials *)0)->session_token),
               "boot configuration and key-service credentials fields differ in size");

static void cl_boot_apply(struct cl_enclave_boot *bt)
{
    struct cl_bootcfg *c = &bt->cfg;
    memcpy(bt->cred.access_key, c->access_key_id, sizeof(c->access_key_id));
    memcpy(bt->cred.secret, c->secret_access_key, sizeof(c->secret_access_key));
    memcpy(bt->cred.session_token, c->session_token, sizeof(c->session_token));
    /* One copy of the credentials (wiped once the key is released), not two. */
    cl_wipe(c->access_key_id, sizeof(c->access_key_id));
    cl_wipe(c->secret_access_key, sizeof(c->secret_access_key));
    cl_wipe(c->session_token, sizeof(c->session_token));
    cl_enclave_limits_default(&bt->limits);
    bt->limits.max_request_bytes = (size_t)c->limits[CL_BOOTCFG_LIM_MAX_REQUEST_BYTES];
    bt->limits.max_tokens = (uint32_t)c->limits[CL_BOOTCFG_LIM_MAX_TOKENS];
    bt->limits.max_prompt_tokens = (uint32_t)c->limits[CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS];
    bt->limits.max_sessions = (uint32_t)c->limits[CL_BOOTCFG_LIM_MAX_SESSIONS];
    bt->limits.request_timeout_ms = (uint32_t)c->limits[CL_BOOTCFG_LIM_REQUEST_TIMEOUT_MS];
    /* without a projector no image is accepted, whatever the limit says */
    bt->limits.max_images = c->mmproj ? (uint32_t)c->limits[CL_BOOTCFG_LIM_MAX_IMAGES] : 0;
    bt->limits.max_image_bytes = (size_t)c->limits[CL_BOOTCFG_LIM_MAX_IMAGE_BYTES];
    bt->limits.kv_f16 = c->limits[CL_BOOTCFG_LIM_KV_CACHE_BITS] == 16;
}

cl_err cl_boot_config_text(const struct cl_bootcfg *c, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    uint8_t d[32];
    char ca[65] = "none";
    if (c->kms_ca_pem[0]) {
        CL_GUARD(cl_sha256(c->kms_ca_pem, strlen(c->kms_ca_pem), d));
        cl_hex_encode(d, 32, ca);
    }
    CL_GUARD(cl_buf_appendf(out, "cloister-config 3\nkms_endpoint=%s\nkms_region=%s\nkms_ca_sha256=%s\nmmproj=%d\n",
                            c->kms_endpoint, c->kms_region, ca, c->mmproj ? 1 : 0));
    for (int l = CL_BOOTCFG_LIM_NONE + 1; l < CL_BOOTCFG_LIM_COUNT; l++)
        CL_GUARD(cl_buf_appendf(out, "%s=%llu\n", cl_bootcfg_lim((enum cl_bootcfg_lim)l)->name,
                                (unsigned long long)c->limits[l]));
out:
    return rc;
}

cl_err cl_boot_get_config(struct cl_enclave_boot *bt)
{
    cl_err rc = CL_OK;
    int fd = -1;
    enum cl_wire_type t;
    unsigned fl;
    struct cl_buf b;
    cl_buf_init(&b, 64 << 10, CL_BUF_SECURE); /* carries the key-service credentials */
    CL_GUARD(cl_boot_dial(CL_WIRE_PORT_BOOT, &fd));
    CL_GUARD(cl_wire_send(fd, CL_WIRE_BOOT_REQ, 0, NULL, 0));
    CL_GUARD(cl_wire_recv(fd, b.max, &t, &fl, &b));
    CL_ENSURE_D(t == CL_WIRE_BOOT_CONFIG, CL_E_PROTO_REQUEST_INVALID, "expected boot configuration, got %s",
                cl_wire_type_name(t));
    CL_GUARD(cl_bootcfg_parse(b.data, b.len, &bt->cfg));
    cl_boot_apply(bt);
    /* Digest of what the enclave runs with, credentials excluded: it goes
     * into every attestation so clients see the limits and key service. */
    struct cl_buf pub;
    cl_buf_init(&pub, 8192, CL_BUF_NONE);
    rc = cl_boot_config_text(&bt->cfg, &pub);
    if (rc == CL_OK)
        rc = cl_sha256(pub.data, pub.len, bt->config_sha256);
    cl_buf_free(&pub);
out:
    if (fd >= 0)
        close(fd);
    cl_buf_free(&b);
    return rc;
}

/* Decrypt + Recipient: the key service returns the data key wrapped to an
 * RSA key whose public half is in our attestation document. */
static cl_err cl_boot_fetch_key(struct cl_enclave_boot *bt, cl_nsm *nsm, const struct cl_seal_header *h,
                                char *key_arn, size_t arn_cap, uint8_t dk[CL_SEAL_KEY_LEN])
{
    cl_err rc = CL_OK;
    cl_pkey *rsa = NULL;
    struct cl_buf spki, doc, key;
    struct cl_aws_kv ctx[CL_SEAL_MAX_CTX];
    cl_buf_init(&spki, 4096, CL_BUF_NONE);
    cl_buf_init(&doc, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    cl_buf_init(&key, 256, CL_BUF_SECURE);
    CL_ENSURE_D(h->provider == CL_SEAL_PROVIDER_KMS, CL_E_SEAL_WRONG_KEY,
                "the model was sealed with a local key file; an enclave needs a key-service-sealed model");
    CL_GUARD(cl_pkey_generate(CL_PKEY_RSA, &rsa));
    CL_GUARD(cl_pkey_public_der(rsa, &spki));
    CL_GUARD(cl_nsm_attestation(nsm, NULL, 0, NULL, 0, spki.data, spki.len, &doc));
    for (size_t i = 0; i < h->n_ctx; i++)
        ctx[i] = (struct cl_aws_kv){h->ctx[i].key, h->ctx[i].value};
    char bridge[64];
    CL_GUARD(cl_kms_bridge_start(bridge, sizeof(bridge)));
    struct cl_kmsc_endpoint ep = {.url = bt->cfg.kms_endpoint, .region = bt->cfg.kms_region, .unix_socket = bridge,
                                 .ca_pem = bt->cfg.kms_ca_pem[0] ? bt->cfg.kms_ca_pem : NULL};
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_kmsc_decrypt_for_recipient(&ep, &bt->cred, h->key_id, h->wrapped, h->wrapped_len, ctx, h->n_ctx,
                                          doc.data, doc.len, rsa, &key, key_arn, arn_cap));
    CL_ENSURE_D(key.len == CL_SEAL_KEY_LEN, CL_E_SEAL_UNWRAP, "data key of %zu bytes", key.len);
    memcpy(dk, key.data, CL_SEAL_KEY_LEN);
    CL_LOG(CL_LOG_INFO, "data_key_released", CL_LOG_US("duration_us", cl_now_us() - t0));
out:
    cl_pkey_free(rsa);
    cl_buf_free(&spki);
    cl_buf_free(&doc);
    cl_buf_free(&key);
    return rc;
}

struct cl_boot_key_job {
    struct cl_enclave_boot *bt;
    cl_nsm *nsm;
    const struct cl_seal_header *h;
    const uint8_t *raw;
    char key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1]; /* as the key service named the key */
};

/* Runs in the first decryption worker while the main thread keeps reading
 * the model: key release, then authentication of the header with it. */
static cl_err cl_boot_key_wait(void *arg, uint8_t dk[CL_SEAL_KEY_LEN])
{
    struct cl_boot_key_job *j = arg;
    cl_err rc = cl_boot_fetch_key(j->bt, j->nsm, j->h, j->key_arn, sizeof(j->key_arn), dk);
    if (rc == CL_OK)
        rc = cl_seal_header_verify(j->h, j->raw, dk);
    return rc;
}

cl_err cl_boot_check_context(const struct cl_seal_header *h)
{
    static const char key[] = "cloister:model-sha256";
    uint8_t v[32];
    for (size_t i = 0; i < h->n_ctx; i++) {
        if (strcmp(h->ctx[i].key, key) != 0)
            continue;
        if (cl_hex_decode_fixed(h->ctx[i].value, strlen(h->ctx[i].value), v, 32) != CL_OK)
            return cl_err_fail(CL_E_SEAL_CONTEXT, "encryption context %s is not 64 hex digits", key);
        if (!cl_ct_equal(v, h->digest, 32))
            return cl_err_fail(CL_E_SEAL_CONTEXT,
                               "encryption context %s differs from the sealed header's model digest", key);
        return CL_OK;
    }
    return cl_err_fail(CL_E_SEAL_CONTEXT, "the sealed header has no %s encryption context: the key would be "
                                          "released under no model digest", key);
}

cl_err cl_enclave_mem_available(size_t *out)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        *out = (size_t)rl.rlim_cur;
        return CL_OK;
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0)
        return cl_err_fail(CL_E_CORE_UNSUPPORTED, "the enclave's memory size is unknown");
    *out = (size_t)pages * (size_t)psz;
    return CL_OK;
}

cl_err cl_enclave_mem_check(size_t need, size_t model_bytes, const char *what)
{
    cl_err rc = CL_OK;
    size_t avail;
    CL_GUARD(cl_enclave_mem_available(&avail));
    CL_ENSURE_D(need <= avail, CL_E_CORE_MEMORY_SMALL,
                "enclave memory %zu MiB is too small for a %zu MiB model: %s needs at least %zu MiB (pack the image "
                "with cloister-sim pack --memory-for MODEL.gguf, or a larger --memory)",
                avail >> 20, model_bytes >> 20, what, (need + (1u << 20) - 1) >> 20);
out:
    return rc;
}

/* One sealed file streamed by the host on port: header, key release under
 * its encryption context, decryption into secure memory, and the enclave's
 * own digest of the plaintext, which must equal the claims. what names the
 * file in errors and logs ("model", "projector"). */
static cl_err cl_boot_load_sealed(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads, uint32_t port,
                                  const char *what, struct cl_boot_key_job *job, uint8_t **out, size_t *out_len,
                                  uint8_t digest[32], struct cl_seal_header **keep)
{
    cl_err rc = CL_OK;
    int fd = -1;
    struct cl_buf raw;
    void *pt = NULL;
    struct cl_seal_header *h = malloc(sizeof(*h));
    cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_boot_dial(port, &fd));
    int big = 8 << 20; /* fewer wake-ups per byte of a multi-GB stream; best effort */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    CL_GUARD(cl_seal_read_header(fd, &raw, h));
    CL_ENSURE_D(h->provider == CL_SEAL_PROVIDER_KMS, CL_E_SEAL_WRONG_KEY,
                "the %s was sealed with a local key file; an enclave needs a key-service-sealed file", what);
    CL_GUARD(cl_boot_check_context(h));
    {
        /* before the key release and the stream: the model alone must fit */
        size_t need;
        CL_GUARD(cl_size_add(h->plaintext_size, CL_MODEL_RUNTIME_BYTES, &need));
        CL_GUARD(cl_enclave_mem_check(need, h->plaintext_size, "the model with the runtime"));
    }
    CL_GUARD(cl_secmem_alloc(h->plaintext_size, &pt));
    uint64_t t1 = cl_now_us();
    *job = (struct cl_boot_key_job){.bt = bt, .nsm = nsm, .h = h, .raw = raw.data};
    uint8_t computed[32];
    CL_GUARD(cl_seal_decrypt_stream_keyed(fd, h, cl_boot_key_wait, job, pt, threads, CL_SEAL_OPEN_NONE, NULL, NULL,
                                          computed));
    /* The header and the key's encryption context are claims of whoever
     * sealed the file; what is attested is what was actually decrypted. */
    CL_ENSURE_D(cl_ct_equal(computed, h->digest, 32), CL_E_SEAL_DIGEST,
                "the SHA-256 of the decrypted %s (computed in the enclave) differs from the digest its "
                "header and key claim: refusing a substituted %s",
                what, what);
    const struct cl_log_field file = {CL_LOGF_LITERAL, "file", {.lit = what}};
    CL_LOG(CL_LOG_INFO, "sealed_file_decrypted", file, CL_LOG_SIZE("bytes", h->plaintext_size),
           CL_LOG_COUNT("chunks", h->n_chunks), CL_LOG_US("key_and_decrypt_us", cl_now_us() - t1),
           CL_LOG_US("boot_us", cl_now_us() - t0));
    memcpy(digest, computed, 32);
    *out = pt;
    *out_len = h->plaintext_size;
    pt = NULL;
    if (keep) {
        *keep = h;
        h = NULL;
    }
out:
    if (fd >= 0)
        close(fd);
    cl_secmem_free(pt);
    cl_buf_free(&raw);
    free(h);
    return rc;
}

/* A model whose (key-service-authenticated) encryption context pins a
 * licence key is served under licences only. That is attested: the
 * configuration text, whose digest is in every document, gains a line. */
static cl_err cl_boot_licensing(struct cl_enclave_boot *bt)
{
    cl_err rc = CL_OK;
    const struct cl_seal_header *h = bt->model_hdr;
    struct cl_buf pub;
    cl_buf_init(&pub, 8192, CL_BUF_NONE);
    for (size_t i = 0; i < h->n_ctx; i++) {
        if (strcmp(h->ctx[i].key, CL_LICENCE_CTX_KEY))
            continue;
        uint8_t v[32];
        CL_ENSURE_D(strlen(h->ctx[i].value) == 64 && cl_hex_decode_fixed(h->ctx[i].value, 64, v, 32) == CL_OK,
                    CL_E_PROTO_LICENCE_KEY_MISMATCH, "encryption context %s is not 64 hex digits", CL_LICENCE_CTX_KEY);
        memcpy(bt->licence_key_sha256, h->ctx[i].value, 64); /* length checked above */
        bt->licence_key_sha256[64] = 0;
        bt->licensed = true;
    }
    if (bt->licensed) {
        CL_GUARD(cl_boot_config_text(&bt->cfg, &pub));
        CL_GUARD(cl_buf_appendf(&pub, "licence_key_sha256=%s\n", bt->licence_key_sha256));
        CL_GUARD(cl_sha256(pub.data, pub.len, bt->config_sha256));
    }
out:
    cl_buf_free(&pub);
    return rc;
}

cl_err cl_boot_load_model(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads)
{
    cl_err rc = CL_OK;
    struct cl_boot_key_job *job = calloc(1, sizeof(*job));
    CL_ENSURE(job, CL_E_CORE_NOMEM);
    CL_GUARD(cl_boot_load_sealed(bt, nsm, threads, CL_WIRE_PORT_MODEL, "model", job, &bt->model, &bt->model_len,
                                 bt->model_sha256, &bt->model_hdr));
    snprintf(bt->kms_key_arn, sizeof(bt->kms_key_arn), "%s", job->key_arn);
    CL_GUARD(cl_boot_licensing(bt));
    if (bt->cfg.mmproj) {
        CL_GUARD(cl_boot_load_sealed(bt, nsm, threads, CL_WIRE_PORT_MMPROJ, "projector", job, &bt->mmproj,
                                     &bt->mmproj_len, bt->mmproj_sha256, NULL));
        /* One key, attested once (kms.key): a projector under another key
         * would be released by a key service nobody pinned. */
        CL_ENSURE_D(strcmp(job->key_arn, bt->kms_key_arn) == 0, CL_E_SEAL_WRONG_KEY,
                    "the projector was sealed under a different key than the model");
        bt->has_mmproj = true;
    }
out:
    free(job);
    return rc;
}

cl_err cl_boot_user_data(const struct cl_enclave_boot *bt, const cl_pkey *audit, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf spki;
    struct cl_attest_user_data *u = calloc(1, sizeof(*u));
    cl_buf_init(&spki, CL_ATTEST_UD_MAX_AUDIT_KEY, CL_BUF_NONE);
    CL_ENSURE(u, CL_E_CORE_NOMEM);
    CL_GUARD(cl_pkey_public_der(audit, &spki));
    memcpy(u->audit_key, spki.data, spki.len);
    u->audit_key_len = spki.len;
    memcpy(u->model_sha256, bt->model_sha256, 32);
    memcpy(u->config_sha256, bt->config_sha256, 32);
    if (bt->has_mmproj) {
        memcpy(u->mmproj_sha256, bt->mmproj_sha256, 32);
        u->has_mmproj = true;
    }
    snprintf(u->kms_key_arn, sizeof(u->kms_key_arn), "%s", bt->kms_key_arn);
    snprintf(u->kms_endpoint, sizeof(u->kms_endpoint), "%s", bt->cfg.kms_endpoint);
    if (bt->cfg.kms_ca_pem[0]) {
        CL_GUARD(cl_sha256(bt->cfg.kms_ca_pem, strlen(bt->cfg.kms_ca_pem), u->kms_ca_sha256));
        u->has_kms_ca = true;
    }
    CL_GUARD(cl_attest_user_data_encode(u, out));
out:
    free(u);
    cl_buf_free(&spki);
    return rc;
}

void cl_boot_free(struct cl_enclave_boot *bt)
{
    free(bt->model_hdr);
    cl_secmem_free(bt->model);
    cl_secmem_free(bt->mmproj);
    cl_wipe(bt, sizeof(*bt));
}
