/* The enclave's request gateway: OHTTP decapsulation, binary HTTP routing,
 * OpenAI chat-completions parsing, generation through a pluggable generator,
 * and the encrypted (optionally streamed) answer. Transport-agnostic: the
 * caller moves bytes (vsock frames in cloister-enclave, memory in tests). */
#ifndef CLOISTER_ENCLAVE_H
#define CLOISTER_ENCLAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/chat.h"
#include "cloister/ohttp.h"

/* Requests one OHTTP key may open. The gateway remembers every encapsulated
 * key its current key pair opened; when that seen-set is full it makes a new
 * key pair (attested like the first) and wipes the old one, so a recorded
 * request can never be replayed: within a key's life it is in the seen-set,
 * afterwards nothing can open it. Clients re-attest once when the key
 * changes. Tests may lower it (cl_enclave_limits.replay_window,
 * cloister-enclave --replay-window), never raise it. */
#ifndef CL_GW_REPLAY_WINDOW
#define CL_GW_REPLAY_WINDOW 16384u
#endif

struct cl_enclave_limits {
    size_t max_request_bytes; /* decapsulated request */
    uint32_t max_tokens;      /* per answer */
    uint32_t max_prompt_tokens;
    uint32_t max_messages;
    uint32_t max_sessions;    /* concurrent exchanges */
    uint32_t request_timeout_ms;
    uint32_t replay_window;   /* requests per OHTTP key, 1..CL_GW_REPLAY_WINDOW */
    uint32_t max_images;      /* image content parts per request (0: images refused) */
    size_t max_image_bytes;   /* decoded from base64, per image */
    bool kv_f16;              /* sequences' key/value caches in F16 (boot configuration kv_cache_bits=16) */
};
void cl_enclave_limits_default(struct cl_enclave_limits *l);

enum cl_chat_finish { CL_CHAT_FINISH_NONE = 0, CL_CHAT_FINISH_STOP, CL_CHAT_FINISH_LENGTH, CL_CHAT_FINISH_COUNT };

#define CL_CHAT_MAX_STOP 4
#define CL_CHAT_MAX_STOP_LEN 64
#define CL_CHAT_MAX_IMAGES 16 /* the boot configuration's max_images is at most this */
/* Where an image part stood in a message's text (as llama.cpp's mtmd); text
 * that contains it is refused. */
#define CL_CHAT_MEDIA_MARKER "<__media__>"

/* An image of a request: its encoded bytes (PNG, JPEG or DICOM) decoded from
 * a data: URL, in the request's secure memory. */
struct cl_chat_image {
    const uint8_t *data;
    size_t len;
};

struct cl_chat_params {
    const struct cl_chat_msg *msgs;
    size_t n_msgs;
    uint32_t max_tokens;
    float temperature;
    float top_p;
    int32_t top_k;
    float min_p;
    float repeat_penalty;
    uint64_t seed;
    bool has_seed;
    size_t n_stop;
    char stop[CL_CHAT_MAX_STOP][CL_CHAT_MAX_STOP_LEN + 1];
    bool stream;
    /* When the engine is full: wait for room (batch jobs) instead of failing
     * with CL_E_PROTO_BUSY (interactive requests, answered 429). */
    bool wait_for_slot;
    unsigned set; /* which optional sampling fields the request gave (CL_CHAT_SET_*) */
    /* Image parts, in order; message i's content holds a CL_CHAT_MEDIA_MARKER
     * where each stood. Contents assembled from parts and image bytes live in
     * owned (secure memory): release with cl_chat_params_release. */
    struct cl_chat_image images[CL_CHAT_MAX_IMAGES];
    size_t n_images;
    struct cl_buf owned;
};

enum cl_chat_set {
    CL_CHAT_SET_NONE = 0,
    CL_CHAT_SET_TOP_P = 1 << 0,
    CL_CHAT_SET_TOP_K = 1 << 1,
    CL_CHAT_SET_MIN_P = 1 << 2,
    CL_CHAT_SET_REPEAT = 1 << 3,
};

struct cl_chat_result {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    enum cl_chat_finish finish;
    uint32_t bad_image; /* on an image error: which image (1-based) could not be used */
};

/* Receives answer text as it is produced; return false to stop early. */
typedef bool (*cl_chat_piece_fn)(void *ctx, const char *text, size_t len);

struct cl_generator {
    /* Renders the conversation, generates, calls piece() for each new piece
     * of text (after stop-string handling). */
    cl_err (*generate)(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *piece_ctx,
                       struct cl_chat_result *res);
    void *self;
    const char *model_name; /* reported in answers */
};

/* Output of one exchange: the encapsulated response (whole, or chunk by chunk). */
enum cl_gw_out { CL_GW_OUT_NONE = 0, CL_GW_OUT_RESPONSE, CL_GW_OUT_CHUNK, CL_GW_OUT_COUNT };
typedef cl_err (*cl_gw_emit_fn)(void *ctx, enum cl_gw_out kind, const uint8_t *p, size_t n);

typedef struct cl_gateway cl_gateway;
/* The gateway owns a fresh X25519 key and its OHTTP key configuration with
 * the given key id; each rotation takes the next id (mod 256). */
CL_MUST_CHECK cl_err cl_gateway_new(const struct cl_enclave_limits *l, const struct cl_generator *gen,
                                    uint8_t key_id, cl_gateway **out);
void cl_gateway_free(cl_gateway *g);
/* The current key configuration (what an attestation must carry now). */
void cl_gateway_keyconfig(cl_gateway *g, struct cl_ohttp_keyconfig *out);
/* Key rotations so far. */
uint64_t cl_gateway_rotations(cl_gateway *g);
/* Licensed model: every chat request must carry a credential the table
 * admits (docs/formats/licence.md); the table must outlive the gateway.
 * NULL (the default) serves unlicensed. */
struct cl_licence_table;
void cl_gateway_set_licences(cl_gateway *g, struct cl_licence_table *t);
/* A licence lease ended: frees (and so clears) the OHTTP private keys; every
 * request after is refused with PROTO_LICENCE_LEASE_ENDED. The public key
 * configuration stays readable. */
void cl_gateway_wipe_keys(cl_gateway *g);
/* HTTP status for an error of cl_gateway_handle: 401 when the request's key
 * is stale (the client re-attests), 413 over a limit, else 400. */
unsigned cl_gateway_http_status(cl_err rc);
/* Handles one encapsulated request. Returns an error (and emits nothing)
 * only when the request cannot be decapsulated, is a replay
 * (CL_E_PROTO_REPLAY) or is for a retired key (CL_E_PROTO_OHTTP_KEY_RETIRED);
 * every later failure becomes an encrypted HTTP error answer and CL_OK. */
CL_MUST_CHECK cl_err cl_gateway_handle(cl_gateway *g, const uint8_t *enc_req, size_t n, bool chunked,
                                       cl_gw_emit_fn emit, void *emit_ctx);

/* What one exchange was, for its receipt (docs/receipts.md): public facts
 * only, never content. */
struct cl_gw_outcome {
    bool chat;            /* a POST to /v1/chat/completions was answered: a receipt is due */
    char request_id[40];  /* the answer's "id" (chatcmpl-HEX), also in the receipt */
    char consumer[80];    /* "-", or "licence:ID" for a licensed consumer */
    bool images;          /* the request carried images (the projector was involved) */
    uint16_t status;      /* HTTP status of the answer */
    bool failed;          /* a streamed answer ended with an error event */
    uint32_t prompt_tokens, completion_tokens;
};
/* cl_gateway_handle that also reports the outcome (oc is zeroed first). */
CL_MUST_CHECK cl_err cl_gateway_handle_ex(cl_gateway *g, const uint8_t *enc_req, size_t n, bool chunked,
                                          cl_gw_emit_fn emit, void *emit_ctx, struct cl_gw_outcome *oc);


#endif
