/* Enclave boot: configuration from the host, the sealed model's header, the
 * data key from the key service (Decrypt + Recipient: only this attested
 * enclave can read it), then the model decrypted in parallel into locked
 * memory and loaded in place. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/cbor.h"
#include "cloister/encode.h"
#include "cloister/kms_client.h"
#include "cloister/log.h"
#include "cloister/nsm.h"
#include "cloister/policy.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"
#include "enclave_boot.h"

static cl_err cl_boot_dial(uint32_t port, int *fd)
{
    cl_err rc = cl_vsock_connect(CL_WIRE_CID_PARENT, port, fd);
    if (rc != CL_OK)
        return cl_err_fail(CL_E_NET_INTERNAL, "parent port %u unreachable", port);
    return CL_OK;
}

static bool cl_boot_str(json_t *o, const char *k, char *dst, size_t cap, bool required)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return !required;
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return false;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static cl_err cl_boot_config_parse(const struct cl_buf *b, struct cl_enclave_boot *bt)
{
    cl_err rc = CL_OK;
    json_error_t je;
    json_t *j = json_loadb((const char *)b->data, b->len, JSON_REJECT_DUPLICATES, &je);
    json_t *k = json_object_get(j, "kms"), *l = json_object_get(j, "limits");
    CL_ENSURE_D(json_is_object(k), CL_E_PROTO_REQUEST_INVALID, "boot configuration: kms");
    CL_ENSURE_D(cl_boot_str(k, "endpoint", bt->kms_url, sizeof(bt->kms_url), true) &&
                    cl_boot_str(k, "region", bt->kms_region, sizeof(bt->kms_region), true) &&
                    cl_boot_str(k, "access_key_id", bt->cred.access_key, sizeof(bt->cred.access_key), true) &&
                    cl_boot_str(k, "secret_access_key", bt->cred.secret, sizeof(bt->cred.secret), true) &&
                    cl_boot_str(k, "session_token", bt->cred.session_token, sizeof(bt->cred.session_token), false) &&
                    cl_boot_str(k, "ca_pem", bt->kms_ca, sizeof(bt->kms_ca), false),
                CL_E_PROTO_REQUEST_INVALID, "boot configuration: kms fields");
    cl_enclave_limits_default(&bt->limits);
    if (json_is_object(l)) {
        json_t *v;
#define CL_LIM(key, field, lo, hi)                                                                     \
    if ((v = json_object_get(l, key))) {                                                               \
        CL_ENSURE_D(json_is_integer(v) && json_integer_value(v) >= (lo) && json_integer_value(v) <= (hi), \
                    CL_E_PROTO_REQUEST_INVALID, "boot configuration: limits.%s", key);                  \
        bt->limits.field = (__typeof__(bt->limits.field))json_integer_value(v);                        \
    }
        CL_LIM("max_request_bytes", max_request_bytes, 1024, 32 << 20);
        CL_LIM("max_tokens", max_tokens, 1, 1 << 16);
        CL_LIM("max_prompt_tokens", max_prompt_tokens, 1, 1 << 20);
        CL_LIM("max_sessions", max_sessions, 1, 256);
        CL_LIM("request_timeout_ms", request_timeout_ms, 100, 3600000);
#undef CL_LIM
    }
out:
    json_decref(j);
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
    CL_GUARD(cl_boot_config_parse(&b, bt));
    /* Digest of what the enclave runs with, credentials excluded: it goes
     * into every attestation so clients see the limits and key service. */
    struct cl_buf pub;
    cl_buf_init(&pub, 8192, CL_BUF_NONE);
    uint8_t ca_digest[32];
    char ca_hex[65] = "none";
    if (bt->kms_ca[0] && cl_sha256(bt->kms_ca, strlen(bt->kms_ca), ca_digest) == CL_OK)
        cl_hex_encode(ca_digest, 32, ca_hex);
    rc = cl_buf_appendf(&pub, "kms=%s\nkms_ca_sha256=%s\nregion=%s\nmax_request_bytes=%zu\nmax_tokens=%u\nmax_prompt_tokens=%u\n"
                              "max_sessions=%u\nrequest_timeout_ms=%u\n",
                        bt->kms_url, ca_hex, bt->kms_region, bt->limits.max_request_bytes, bt->limits.max_tokens,
                        bt->limits.max_prompt_tokens, bt->limits.max_sessions, bt->limits.request_timeout_ms);
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
                                uint8_t dk[CL_SEAL_KEY_LEN])
{
    cl_err rc = CL_OK;
    cl_pkey *rsa = NULL;
    struct cl_buf spki, doc, key;
    struct cl_policy_kv ctx[CL_SEAL_MAX_CTX];
    cl_buf_init(&spki, 4096, CL_BUF_NONE);
    cl_buf_init(&doc, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    cl_buf_init(&key, 256, CL_BUF_SECURE);
    CL_ENSURE_D(h->provider == CL_SEAL_PROVIDER_KMS, CL_E_SEAL_WRONG_KEY,
                "the model was sealed with a local key file; an enclave needs a key-service-sealed model");
    CL_GUARD(cl_pkey_generate(CL_PKEY_RSA, &rsa));
    CL_GUARD(cl_pkey_public_der(rsa, &spki));
    CL_GUARD(cl_nsm_attestation(nsm, NULL, 0, NULL, 0, spki.data, spki.len, &doc));
    for (size_t i = 0; i < h->n_ctx; i++)
        ctx[i] = (struct cl_policy_kv){h->ctx[i].key, h->ctx[i].value};
    char bridge[64];
    CL_GUARD(cl_kms_bridge_start(bridge, sizeof(bridge)));
    struct cl_kms_endpoint ep = {.url = bt->kms_url, .region = bt->kms_region, .unix_socket = bridge,
                                 .ca_pem = bt->kms_ca[0] ? bt->kms_ca : NULL};
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_kms_decrypt_for_recipient(&ep, &bt->cred, h->key_id, h->wrapped, h->wrapped_len, ctx, h->n_ctx,
                                          doc.data, doc.len, rsa, &key));
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
};

/* Runs in the first decryption worker while the main thread keeps reading
 * the model: key release, then authentication of the header with it. */
static cl_err cl_boot_key_wait(void *arg, uint8_t dk[CL_SEAL_KEY_LEN])
{
    struct cl_boot_key_job *j = arg;
    cl_err rc = cl_boot_fetch_key(j->bt, j->nsm, j->h, dk);
    if (rc == CL_OK)
        rc = cl_seal_header_verify(j->h, j->raw, dk);
    return rc;
}

cl_err cl_boot_load_model(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads)
{
    cl_err rc = CL_OK;
    int fd = -1;
    struct cl_buf raw;
    void *pt = NULL;
    struct cl_seal_header *h = malloc(sizeof(*h));
    cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_boot_dial(CL_WIRE_PORT_MODEL, &fd));
    int big = 8 << 20; /* fewer wake-ups per byte of a multi-GB stream; best effort */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    CL_GUARD(cl_seal_read_header(fd, &raw, h));
    CL_ENSURE_D(h->provider == CL_SEAL_PROVIDER_KMS, CL_E_SEAL_WRONG_KEY,
                "the model was sealed with a local key file; an enclave needs a key-service-sealed model");
    CL_GUARD(cl_secmem_alloc(h->plaintext_size, &pt));
    uint64_t t1 = cl_now_us();
    struct cl_boot_key_job job = {bt, nsm, h, raw.data};
    CL_GUARD(cl_seal_decrypt_stream_keyed(fd, h, cl_boot_key_wait, &job, pt, threads, CL_SEAL_OPEN_NONE, NULL, NULL));
    CL_LOG(CL_LOG_INFO, "model_decrypted", CL_LOG_SIZE("bytes", h->plaintext_size),
           CL_LOG_COUNT("chunks", h->n_chunks), CL_LOG_US("key_and_decrypt_us", cl_now_us() - t1),
           CL_LOG_US("boot_us", cl_now_us() - t0));
    memcpy(bt->model_sha256, h->digest, 32);
    bt->model = pt;
    bt->model_len = h->plaintext_size;
    pt = NULL;
out:
    if (fd >= 0)
        close(fd);
    cl_secmem_free(pt);
    cl_buf_free(&raw);
    free(h);
    return rc;
}

cl_err cl_boot_user_data(const struct cl_enclave_boot *bt, const cl_pkey *audit, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf spki;
    cl_buf_init(&spki, 1024, CL_BUF_NONE);
    CL_GUARD(cl_pkey_public_der(audit, &spki));
    /* canonical order: keys sorted by their encoded bytes (shorter first) */
    CL_GUARD(cl_cbor_put_map(out, 4));
    CL_GUARD(cl_cbor_put_text(out, "v"));
    CL_GUARD(cl_cbor_put_uint(out, 1));
    CL_GUARD(cl_cbor_put_text(out, "audit_key"));
    CL_GUARD(cl_cbor_put_bytes(out, spki.data, spki.len));
    CL_GUARD(cl_cbor_put_text(out, "model_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, bt->model_sha256, 32));
    CL_GUARD(cl_cbor_put_text(out, "config_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, bt->config_sha256, 32));
out:
    cl_buf_free(&spki);
    return rc;
}

void cl_boot_free(struct cl_enclave_boot *bt)
{
    cl_secmem_free(bt->model);
    cl_wipe(bt, sizeof(*bt));
}
