/* `cloister proxy` (lib cl_proxy, docs/proxy.md): a local OpenAI-compatible
 * HTTP endpoint in front of the attested client library. Every chat request
 * is validated here, then sent unchanged (text and image_url content parts)
 * inside an OHTTP request to an enclave whose attestation verified against
 * TRUST.json; nothing reaches the host's OHTTP endpoint otherwise.
 *
 * The proxy keeps no prompt, image or answer beyond the request that carries
 * it (CL_BUF_SECURE buffers, jansson's wiping allocators) and logs only ids,
 * sizes, timings and error codes. */
#ifndef CLOISTER_PROXY_H
#define CLOISTER_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cloister/buf.h"
#include "cloister/client.h"

#define CL_PROXY_MAX_REQUEST_DEFAULT ((size_t)8 << 20)
/* The client library's own bound (the host's largest body less OHTTP framing). */
#define CL_PROXY_MAX_REQUEST_LIMIT (((size_t)32 << 20) - 16384)
#define CL_PROXY_MAX_PARTS 64
#define CL_PROXY_MAX_MODEL_ID 64
#define CL_PROXY_MAX_CLIENTS 16

/* An OpenAI error: {"error":{"message","type","param","code"}} and its status. */
struct cl_proxy_error {
    uint16_t status;
    const char *type;  /* "invalid_request_error", "authentication_error", ... */
    char param[64];    /* "" = null */
    char code[64];     /* "" = null */
    char message[512]; /* fixed text and error details: never request content */
};

/* Validates an OpenAI chat-completions request and writes the body sent to
 * the enclave into out (give a CL_BUF_SECURE buffer): model, messages with
 * their content (a string or text/image_url parts, unchanged), temperature,
 * top_p, max_tokens (or max_completion_tokens), stop, seed, stream. Other
 * members are dropped. A bad request fails with CL_E_NET_PROXY_REQUEST and
 * fills e (400, or 404 for another model than model_id). */
CL_MUST_CHECK cl_err cl_proxy_request_check(const uint8_t *body, size_t n, const char *model_id, struct cl_buf *out,
                                            bool *stream, struct cl_proxy_error *e);
/* The error object's JSON. */
CL_MUST_CHECK cl_err cl_proxy_error_json(const struct cl_proxy_error *e, struct cl_buf *out);
/* A whole chat.completion object for a result. */
CL_MUST_CHECK cl_err cl_proxy_completion_json(const char *id, uint64_t created, const char *model,
                                              const struct cl_client_result *r, struct cl_buf *out);
/* One server-sent event carrying a chat.completion.chunk: a piece of the
 * answer (first: with the assistant role) or, with finish set, the last
 * chunk with its finish_reason. */
CL_MUST_CHECK cl_err cl_proxy_chunk_sse(const char *id, uint64_t created, const char *model, bool first,
                                        const char *text, size_t n, const char *finish, struct cl_buf *out);
/* OpenAI error fields for a failure of the client library (attestation
 * refused: 502 naming the check; host unreachable: 503; ...). */
void cl_proxy_error_from(cl_err rc, const struct cl_client_result *res, struct cl_proxy_error *e);
/* True for a failure of the attestation or of a TRUST.json pin. */
bool cl_proxy_is_attestation_error(cl_err rc);

/* HOST:PORT (IPv4, [IPv6] or localhost) into ss; *loopback says whether it is
 * 127.0.0.0/8 or ::1. */
CL_MUST_CHECK cl_err cl_proxy_parse_listen(const char *addr, struct sockaddr_storage *ss, bool *loopback);

typedef struct cl_proxy cl_proxy;

struct cl_proxy_config {
    const char *host_url;
    const struct cl_trust *trust;
    struct sockaddr_storage listen; /* port 0 = any */
    bool loopback;                  /* the listen address is loopback (Host header checked) */
    bool has_token;
    uint8_t token_sha256[32];       /* SHA-256 of the bearer token: the token itself is not kept */
    char model_id[CL_PROXY_MAX_MODEL_ID + 1];
    size_t max_request;
    uint64_t timeout_ms;            /* per exchange with the host */
    /* The consumer's licence credential (docs/licensing.md), sent inside the
     * OHTTP encryption with every request; NULL for none. The proxy keeps its
     * own copy in secure memory (wiped at cl_proxy_stop). */
    const char *credential;
    size_t credential_len;
};

/* Starts serving (one thread per connection) and attests once. */
CL_MUST_CHECK cl_err cl_proxy_start(const struct cl_proxy_config *cfg, cl_proxy **out);
uint16_t cl_proxy_port(const cl_proxy *p);
void cl_proxy_stop(cl_proxy *p);

/* Embedded web page (generated from src/proxy/page/). */
extern const unsigned char cl_proxy_page_html[], cl_proxy_page_js[], cl_proxy_page_css[];
extern const size_t cl_proxy_page_html_len, cl_proxy_page_js_len, cl_proxy_page_css_len;

#endif
