/* The consumer's side of Cloister (lib cl_client): what it trusts
 * (TRUST.json, docs/formats/trust.md), attestation of the enclave before a
 * single byte of the question leaves, and chat completions through OHTTP
 * (docs/protocol.md sections 1-3), streamed or not.
 *
 * The client never sends anything to the OHTTP endpoint until a fresh
 * attestation document, requested with its own random nonce, verified
 * against the pinned root, the expected PCRs, the nonce, the freshness bound
 * and the expected model digest. When the gateway refuses the key (HTTP 400
 * or 401 to an encapsulated request), the client re-attests once and retries
 * with the new key; an unchanged key is an error.
 *
 * Prompts and answers live in CL_BUF_SECURE buffers. The first call into
 * this library routes jansson's allocations, process-wide, through
 * allocators that wipe on free (json_set_alloc_funcs): make it before the
 * program holds any jansson object. Nothing here logs payloads. A client
 * handle is not thread-safe; use one per thread. */
#ifndef CLOISTER_CLIENT_H
#define CLOISTER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/attest.h"
#include "cloister/attest_user_data.h"
#include "cloister/buf.h"
#include "cloister/ohttp.h"

#define CL_CLIENT_NONCE_LEN 32
#define CL_CLIENT_DIGEST_LEN 32
#define CL_TRUST_MAX_FILE (64 * 1024)
#define CL_TRUST_MAX_AGE_DEFAULT 300
#define CL_TRUST_MAX_AGE_LIMIT 86400
#define CL_CLIENT_MAX_ANSWER ((size_t)16 << 20)
#define CL_CLIENT_MAX_MESSAGES 1024

/* ---- TRUST.json ---- */

struct cl_trust {
    uint8_t *root_der; /* pinned root certificate, DER (heap) */
    size_t root_len;
    uint32_t pcr_present; /* bit i: PCR i is pinned */
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    uint8_t model_sha256[CL_CLIENT_DIGEST_LEN];
    uint64_t max_age_seconds;
    bool allow_debug;
    /* Optional pins of the key service the enclave got the model key from
     * ("kms": {"key_arn", "endpoint"?, "ca_sha256"? (hex or "none")}) and of
     * its whole public configuration ("config_sha256"). */
    bool pin_kms, pin_kms_endpoint, pin_kms_ca, pin_config;
    char kms_key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1];
    char kms_endpoint[CL_ATTEST_UD_MAX_KMS_TEXT + 1];
    bool kms_ca_none; /* pinned: no extra CA at all */
    uint8_t kms_ca_sha256[CL_CLIENT_DIGEST_LEN];
    uint8_t config_sha256[CL_CLIENT_DIGEST_LEN];
    /* Optional pin of the vision projector ("mmproj_sha256"): the enclave
     * must have loaded exactly this one. */
    bool pin_mmproj;
    uint8_t mmproj_sha256[CL_CLIENT_DIGEST_LEN];
};

/* Strict parse: a JSON object with exactly the documented keys (root_pem,
 * pcrs with at least PCR0-2, model_sha256; optional max_age_seconds,
 * allow_debug, kms and config_sha256), no duplicates. Fails with CL_E_NET_CLIENT_TRUST and a detail
 * naming the key. */
CL_MUST_CHECK cl_err cl_trust_parse(const uint8_t *p, size_t n, struct cl_trust *out);
CL_MUST_CHECK cl_err cl_trust_load(const char *path, struct cl_trust *out);
/* Pretty-printed TRUST.json (root as PEM). */
CL_MUST_CHECK cl_err cl_trust_encode(const struct cl_trust *t, struct cl_buf *out);
void cl_trust_free(struct cl_trust *t);

/* ---- client ---- */

/* What the last successful attestation established. */
struct cl_client_attestation {
    char module_id[CL_ATTEST_MAX_MODULE_ID + 1];
    uint64_t timestamp_ms;
    uint32_t pcr_present;
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    bool debug;
    struct cl_attest_user_data user_data;
    struct cl_ohttp_keyconfig key;
    uint8_t nonce[CL_CLIENT_NONCE_LEN];
    unsigned count; /* attestations verified by this client so far */
};

typedef struct cl_client cl_client;

/* host_url: http(s)://host[:port][/prefix]. Copies trust. Sends nothing. */
CL_MUST_CHECK cl_err cl_client_new(const char *host_url, const struct cl_trust *trust, cl_client **out);
void cl_client_free(cl_client *c);
/* Total time allowed per HTTP exchange (default 300 s; 0 = none). */
void cl_client_set_timeout_ms(cl_client *c, uint64_t ms);
/* The consumer credential for a licensed model (16..512 printable ASCII
 * characters; trailing newlines dropped), kept in locked memory and sent as
 * `authorization: Bearer ...` inside every encrypted request. */
CL_MUST_CHECK cl_err cl_client_set_credential(cl_client *c, const char *cred, size_t n);
/* Requests and verifies a fresh attestation (replacing the previous one
 * only on success). Chat calls do this on their own when needed. */
CL_MUST_CHECK cl_err cl_client_attest(cl_client *c);
/* NULL until an attestation verified. */
const struct cl_client_attestation *cl_client_attestation(const cl_client *c);

/* An image sent with a message: its encoded bytes (PNG, JPEG or DICOM),
 * sent as a base64 data: URL content part inside the encryption. */
struct cl_client_image {
    const uint8_t *data;
    size_t len;
    const char *mime; /* "image/png", "image/jpeg" or "application/dicom" */
};

struct cl_client_msg {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
    size_t content_len;
    /* Images (user messages): sent before the text, as content parts. */
    const struct cl_client_image *images;
    size_t n_images;
};

/* Unset fields are omitted from the request (the enclave's defaults apply). */
struct cl_client_params {
    const char *model; /* NULL = "cloister" */
    bool has_max_tokens, has_temperature, has_top_p, has_seed;
    uint64_t max_tokens;
    double temperature, top_p;
    uint64_t seed;
};

struct cl_client_result {
    struct cl_buf content; /* the answer, CL_BUF_SECURE (cl_client_result_free) */
    char finish_reason[32];
    /* The answer's "id" (printable ASCII, truncated): the request id of the
     * enclave's signed receipt for this exchange (docs/receipts.md). */
    char id[64];
    uint64_t prompt_tokens, completion_tokens, total_tokens;
    bool has_usage;
    /* When the enclave answered with an error status: its status, and the
     * error object's type and message (printable ASCII, truncated). */
    uint16_t status;
    char error_type[64];
    char error_message[256];
};

void cl_client_result_init(struct cl_client_result *r);
void cl_client_result_free(struct cl_client_result *r);

/* Called for each streamed piece of the answer (not NUL-terminated); a
 * non-OK return aborts the exchange with that code. */
typedef cl_err (*cl_client_token_fn)(void *arg, const char *text, size_t n);

/* One chat completion. With on_token set the answer is streamed (chunked
 * OHTTP, server-sent events) and each piece is passed to on_token as it
 * authenticates; res->content gets the whole answer either way. An error
 * status from the enclave fails with CL_E_NET_CLIENT_ANSWER_STATUS and fills
 * res->status/error_*. */
CL_MUST_CHECK cl_err cl_client_chat(cl_client *c, const struct cl_client_msg *msgs, size_t n,
                                    const struct cl_client_params *p, cl_client_token_fn on_token, void *arg,
                                    struct cl_client_result *res);

/* The same with a prepared OpenAI chat-completions request body (JSON, at
 * most 8 MiB; its "stream" member must agree with on_token): sent unchanged
 * inside the OHTTP request, so content parts the caller validated (text,
 * image_url) reach the enclave as they are. Attestation, re-attestation and
 * the answer handling are those of cl_client_chat. */
CL_MUST_CHECK cl_err cl_client_chat_json(cl_client *c, const uint8_t *body, size_t body_len,
                                         cl_client_token_fn on_token, void *arg, struct cl_client_result *res);

/* ---- pieces exposed for tests and fuzzing ---- */

/* OpenAI chat-completions request JSON into out (give a CL_BUF_SECURE buffer). */
CL_MUST_CHECK cl_err cl_client_request_json(const struct cl_client_msg *msgs, size_t n,
                                            const struct cl_client_params *p, bool stream, struct cl_buf *out);
/* Parses a chat.completion (status 200) or error object body into res. */
CL_MUST_CHECK cl_err cl_client_parse_completion(const uint8_t *p, size_t n, uint16_t status,
                                                struct cl_client_result *res);

/* Incremental server-sent-events reader for chat.completion.chunk streams. */
struct cl_client_sse {
    struct cl_buf line; /* CL_BUF_SECURE: bytes of the current event */
    bool done;          /* data: [DONE] seen */
    cl_client_token_fn on_token;
    void *arg;
    struct cl_client_result *res;
};
void cl_client_sse_init(struct cl_client_sse *s, cl_client_token_fn on_token, void *arg, struct cl_client_result *res);
/* Feeds content bytes; complete events are parsed and passed on. */
CL_MUST_CHECK cl_err cl_client_sse_feed(struct cl_client_sse *s, const uint8_t *p, size_t n);
/* Fails unless data: [DONE] arrived (and nothing after it but blank lines). */
CL_MUST_CHECK cl_err cl_client_sse_finish(struct cl_client_sse *s);
void cl_client_sse_free(struct cl_client_sse *s);

#endif
