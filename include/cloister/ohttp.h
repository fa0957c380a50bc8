/* Oblivious HTTP message encapsulation (RFC 9458) and its chunked form
 * (draft-ietf-ohai-chunked-ohttp) for streamed answers, over HPKE. The
 * encapsulated content is opaque here (the client and enclave carry binary
 * HTTP messages, RFC 9292, see cloister/bhttp.h). */
#ifndef CLOISTER_OHTTP_H
#define CLOISTER_OHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/hpke.h"

#define CL_OHTTP_MAX_SUITES 16
#define CL_OHTTP_HDR_LEN 7
#define CL_OHTTP_MAX_MESSAGE ((size_t)32 << 20)

struct cl_ohttp_keyconfig {
    uint8_t key_id;
    uint16_t kem;
    uint8_t pk[32];
    size_t n_suites;
    struct { uint16_t kdf, aead; } suites[CL_OHTTP_MAX_SUITES];
};

/* One key configuration (RFC 9458 section 3). */
CL_MUST_CHECK cl_err cl_ohttp_keyconfig_encode(const struct cl_ohttp_keyconfig *kc, struct cl_buf *out);
CL_MUST_CHECK cl_err cl_ohttp_keyconfig_parse(const uint8_t *p, size_t n, struct cl_ohttp_keyconfig *kc);
/* application/ohttp-keys: a list of u16-length-prefixed configurations;
 * picks the first whose KEM and a suite Cloister supports. */
CL_MUST_CHECK cl_err cl_ohttp_keys_encode(const struct cl_ohttp_keyconfig *kc, struct cl_buf *out);
CL_MUST_CHECK cl_err cl_ohttp_keys_parse(const uint8_t *p, size_t n, struct cl_ohttp_keyconfig *kc);

/* ---- client ---- */
typedef struct cl_ohttp_client cl_ohttp_client;
/* Encapsulates a request. With chunked set, uses the chunked format (the
 * whole request as its final chunk) so the gateway may stream its answer. */
CL_MUST_CHECK cl_err cl_ohttp_client_encap(const struct cl_ohttp_keyconfig *kc, uint16_t kdf, uint16_t aead,
                                           bool chunked, const uint8_t *req, size_t n, struct cl_buf *enc_req,
                                           cl_ohttp_client **out);
/* Non-chunked response: decapsulates the whole message. */
CL_MUST_CHECK cl_err cl_ohttp_client_decap(cl_ohttp_client *c, const uint8_t *res, size_t n, struct cl_buf *out);
/* Chunked response: feed bytes as they arrive; complete plaintext chunks are
 * appended to out. Call with end=true once the stream ended: it fails unless
 * a final chunk authenticated (so truncation is detected). */
CL_MUST_CHECK cl_err cl_ohttp_client_feed(cl_ohttp_client *c, const uint8_t *p, size_t n, bool end,
                                          struct cl_buf *out);
bool cl_ohttp_client_done(const cl_ohttp_client *c);
void cl_ohttp_client_free(cl_ohttp_client *c);

/* ---- gateway (enclave) ---- */
typedef struct cl_ohttp_server cl_ohttp_server;
/* Decapsulates a request for key sk (config kc). Detects the chunked form by
 * the caller's flag (it comes from the media type). */
CL_MUST_CHECK cl_err cl_ohttp_server_decap(const struct cl_ohttp_keyconfig *kc, const cl_pkey *sk, bool chunked,
                                           const uint8_t *enc_req, size_t n, struct cl_buf *req,
                                           cl_ohttp_server **out);
CL_MUST_CHECK cl_err cl_ohttp_server_encap(cl_ohttp_server *s, const uint8_t *res, size_t n, struct cl_buf *out);
/* Chunked response: each call appends one encapsulated chunk (the first call
 * also the response nonce). After a final chunk no more may follow. */
CL_MUST_CHECK cl_err cl_ohttp_server_chunk(cl_ohttp_server *s, const uint8_t *p, size_t n, bool final,
                                           struct cl_buf *out);
void cl_ohttp_server_free(cl_ohttp_server *s);

/* QUIC variable-length integers (RFC 9000 section 16). */
CL_MUST_CHECK cl_err cl_varint_put(struct cl_buf *b, uint64_t v);
CL_MUST_CHECK cl_err cl_varint_get(struct cl_cursor *c, uint64_t *v);

#endif
