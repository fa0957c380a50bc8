/* One OHTTP exchange: decapsulate, refuse replays, route the binary HTTP
 * request, generate, and encapsulate the answer (whole or streamed). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cloister/bhttp.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/enclave_runtime.h"

/* One OHTTP key pair and what it has opened. Requests are counted against
 * the key: when the seen-set is full the key is retired and a fresh one
 * takes its place, so the seen-set covers the key's whole life and a
 * request recorded under a retired key can never be opened again. */
struct cl_gw_key {
    cl_pkey *sk;
    struct cl_ohttp_keyconfig kc;
    unsigned users; /* decapsulations in progress (under the gateway lock) */
    bool retired;
};

struct cl_gateway {
    struct cl_enclave_limits lim;
    struct cl_generator gen;
    pthread_mutex_t mu;
    struct cl_gw_key *key; /* current key */
    uint32_t window;       /* requests per key */
    /* Encapsulated keys opened by the current key: open addressing, salted
     * hash (the sender picks enc, so positions must not be predictable). */
    uint8_t (*seen)[CL_HPKE_ENC_LEN];
    uint8_t *used;
    size_t slots, seen_count;
    uint8_t salt[32];
    uint8_t retired_ids[32]; /* bit i: key id i belonged to a retired key */
    uint64_t rotations;
    atomic_uint active;
    cl_licence_table *licences; /* NULL: unlicensed model, anyone who reaches the enclave is served */
    bool wiped;                 /* the private keys are gone (a licence lease ended): nothing opens */
};

static void cl_gw_key_free(struct cl_gw_key *k)
{
    if (!k)
        return;
    cl_pkey_free(k->sk); /* OpenSSL clears the private key when it frees it */
    cl_wipe(k, sizeof(*k));
    free(k);
}

static cl_err cl_gw_key_new(uint8_t key_id, struct cl_gw_key **out)
{
    cl_err rc = CL_OK;
    struct cl_gw_key *k = calloc(1, sizeof(*k));
    CL_ENSURE(k, CL_E_CORE_NOMEM);
    CL_GUARD(cl_pkey_generate(CL_PKEY_X25519, &k->sk));
    CL_GUARD(cl_x25519_public_raw(k->sk, k->kc.pk));
    k->kc.key_id = key_id;
    k->kc.kem = CL_HPKE_KEM_X25519_SHA256;
    const uint16_t aeads[3] = {CL_HPKE_AEAD_AES256GCM, CL_HPKE_AEAD_CHACHA20POLY1305, CL_HPKE_AEAD_AES128GCM};
    for (int i = 0; i < 3; i++) {
        k->kc.suites[i].kdf = CL_HPKE_KDF_SHA256;
        k->kc.suites[i].aead = aeads[i];
    }
    k->kc.n_suites = 3;
    *out = k;
    k = NULL;
out:
    cl_gw_key_free(k);
    return rc;
}

cl_err cl_gateway_new(const struct cl_enclave_limits *l, const struct cl_generator *gen, uint8_t key_id,
                      cl_gateway **out)
{
    cl_err rc = CL_OK;
    cl_gateway *g = NULL;
    CL_ENSURE_D(l->replay_window >= 1 && l->replay_window <= CL_GW_REPLAY_WINDOW, CL_E_CORE_INVALID_ARG,
                "replay_window %u: must be 1..%u", l->replay_window, (unsigned)CL_GW_REPLAY_WINDOW);
    g = calloc(1, sizeof(*g));
    CL_ENSURE(g, CL_E_CORE_NOMEM);
    pthread_mutex_init(&g->mu, NULL);
    g->lim = *l;
    g->gen = *gen;
    g->window = l->replay_window;
    g->slots = 2;
    while (g->slots < 2 * (size_t)g->window) /* at most half full: short probes */
        g->slots *= 2;
    g->seen = calloc(g->slots, CL_HPKE_ENC_LEN);
    g->used = calloc(g->slots, 1);
    CL_ENSURE(g->seen && g->used, CL_E_CORE_NOMEM);
    CL_GUARD(cl_random_bytes(g->salt, sizeof(g->salt)));
    CL_GUARD(cl_gw_key_new(key_id, &g->key));
    *out = g;
    g = NULL;
out:
    cl_gateway_free(g);
    return rc;
}

void cl_gateway_free(cl_gateway *g)
{
    if (!g)
        return;
    cl_gw_key_free(g->key);
    free(g->seen);
    free(g->used);
    pthread_mutex_destroy(&g->mu);
    cl_wipe(g->salt, sizeof(g->salt));
    free(g);
}

void cl_gateway_keyconfig(cl_gateway *g, struct cl_ohttp_keyconfig *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->key->kc;
    pthread_mutex_unlock(&g->mu);
}

void cl_gateway_set_licences(cl_gateway *g, cl_licence_table *t)
{
    pthread_mutex_lock(&g->mu);
    g->licences = t;
    pthread_mutex_unlock(&g->mu);
}

void cl_gateway_wipe_keys(cl_gateway *g)
{
    pthread_mutex_lock(&g->mu);
    if (!g->wiped) {
        struct cl_gw_key *old = g->key, *dead = calloc(1, sizeof(*dead));
        g->wiped = true;
        if (dead) { /* the public configuration only: attestation and status keep answering */
            dead->kc = old->kc;
            dead->retired = true;
            g->key = dead;
            old->retired = true;
            if (!old->users) /* else freed by the last request that holds it */
                cl_gw_key_free(old);
        } else { /* no memory for a stand-in: free the private key in place once unused */
            old->retired = true;
            if (!old->users) {
                cl_pkey_free(old->sk);
                old->sk = NULL;
            }
        }
        memset(g->used, 0, g->slots);
        cl_wipe(g->seen, g->slots * CL_HPKE_ENC_LEN);
        cl_wipe(g->salt, sizeof(g->salt));
    }
    pthread_mutex_unlock(&g->mu);
    CL_LOG(CL_LOG_WARN, "ohttp_keys_wiped");
}

uint64_t cl_gateway_rotations(cl_gateway *g)
{
    pthread_mutex_lock(&g->mu);
    uint64_t n = g->rotations;
    pthread_mutex_unlock(&g->mu);
    return n;
}

unsigned cl_gateway_http_status(cl_err rc)
{
    switch (rc) {
    case CL_E_PROTO_OHTTP_KEY_ID:
    case CL_E_PROTO_OHTTP_KEY_RETIRED:
    case CL_E_PROTO_OHTTP_AUTH: return 401; /* stale key: the client re-attests */
    case CL_E_PROTO_LIMIT: return 413;
    case CL_E_PROTO_LICENCE_LEASE_ENDED: return 503; /* the keys are gone: nothing opens any more */
    default: return 400;
    }
}

/* Replaces the current key (gateway lock held). The old key is wiped as
 * soon as no decapsulation uses it any more. */
static cl_err cl_gw_rotate_locked(cl_gateway *g)
{
    struct cl_gw_key *old = g->key, *k = NULL;
    cl_err rc = cl_gw_key_new((uint8_t)(old->kc.key_id + 1), &k);
    if (rc != CL_OK)
        return rc;
    g->retired_ids[old->kc.key_id / 8] |= (uint8_t)(1u << (old->kc.key_id % 8));
    g->key = k;
    old->retired = true;
    if (!old->users)
        cl_gw_key_free(old);
    memset(g->used, 0, g->slots);
    cl_wipe(g->seen, g->slots * CL_HPKE_ENC_LEN);
    g->seen_count = 0;
    g->rotations++;
    CL_LOG(CL_LOG_INFO, "ohttp_key_rotated", CL_LOG_COUNT("key_id", k->kc.key_id),
           CL_LOG_COUNT("rotations", g->rotations), CL_LOG_COUNT("window", g->window));
    return CL_OK;
}

/* The key to open a request with, held until cl_gw_key_release. */
static cl_err cl_gw_key_acquire(cl_gateway *g, const uint8_t *enc_req, size_t n, struct cl_gw_key **out)
{
    cl_err rc = CL_OK;
    pthread_mutex_lock(&g->mu);
    CL_ENSURE_D(!g->wiped, CL_E_PROTO_LICENCE_LEASE_ENDED,
                "the licence lease ended: the enclave wiped its OHTTP private keys");
    /* A rotation that failed (no randomness) is retried: a full key opens nothing more. */
    if (g->seen_count >= g->window)
        CL_GUARD(cl_gw_rotate_locked(g));
    if (n && enc_req[0] != g->key->kc.key_id && (g->retired_ids[enc_req[0] / 8] & (1u << (enc_req[0] % 8))))
        CL_FAIL(CL_E_PROTO_OHTTP_KEY_RETIRED, "key id %u was retired (the key changes every %u requests), serving %u",
                enc_req[0], g->window, g->key->kc.key_id);
    g->key->users++;
    *out = g->key;
out:
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static void cl_gw_key_release_locked(struct cl_gw_key *k)
{
    if (--k->users == 0 && k->retired)
        cl_gw_key_free(k);
}

static void cl_gw_key_release(cl_gateway *g, struct cl_gw_key *k)
{
    pthread_mutex_lock(&g->mu);
    cl_gw_key_release_locked(k);
    pthread_mutex_unlock(&g->mu);
}

static size_t cl_gw_slot(const cl_gateway *g, const uint8_t enc[CL_HPKE_ENC_LEN], cl_err *rc)
{
    uint8_t in[sizeof(g->salt) + CL_HPKE_ENC_LEN], h[CL_SHA256_LEN];
    memcpy(in, g->salt, sizeof(g->salt));
    memcpy(in + sizeof(g->salt), enc, CL_HPKE_ENC_LEN);
    *rc = cl_sha256(in, sizeof(in), h);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | h[i];
    cl_wipe(in, sizeof(in));
    return (size_t)(v & (g->slots - 1));
}

/* Records the encapsulated key of a request that k opened; refuses a key
 * seen before (encapsulated keys are fresh per request, so a repeat is a
 * replay) and a request whose key was retired while it was being opened.
 * Releases k either way. */
static cl_err cl_gw_admit(cl_gateway *g, struct cl_gw_key *k, const uint8_t enc[CL_HPKE_ENC_LEN])
{
    cl_err rc = CL_OK;
    pthread_mutex_lock(&g->mu);
    CL_ENSURE_D(!k->retired, CL_E_PROTO_OHTTP_KEY_RETIRED, "key id %u was retired while the request was opened",
                k->kc.key_id);
    CL_ENSURE_D(g->seen_count < g->window, CL_E_PROTO_OHTTP_KEY_RETIRED, "key id %u opened its %u requests",
                k->kc.key_id, g->window);
    size_t i = cl_gw_slot(g, enc, &rc);
    CL_GUARD(rc);
    for (; g->used[i]; i = (i + 1) & (g->slots - 1))
        CL_ENSURE_D(memcmp(g->seen[i], enc, CL_HPKE_ENC_LEN) != 0, CL_E_PROTO_REPLAY,
                    "encapsulated key seen before by key id %u", k->kc.key_id);
    memcpy(g->seen[i], enc, CL_HPKE_ENC_LEN);
    g->used[i] = 1;
    if (++g->seen_count == g->window && cl_gw_rotate_locked(g) != CL_OK)
        CL_LOG(CL_LOG_ERROR, "ohttp_key_rotation_failed"); /* retried by the next request */
out:
    cl_gw_key_release_locked(k);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

struct cl_gw_x {
    cl_gateway *g;
    cl_ohttp_server *srv;
    bool chunked;
    cl_gw_emit_fn emit;
    void *emit_ctx;
    char id[40];
    long long created;
    /* streaming state */
    bool streaming;
    struct cl_buf pending; /* bytes of a split UTF-8 character */
    struct cl_buf text;    /* whole answer (non-streaming) */
    cl_err stream_rc;
    uint64_t deadline_us;  /* generation stops here (request_timeout_ms) */
    bool timed_out;
    struct cl_gw_outcome *oc; /* for the receipt */
    cl_licence_table *lt;     /* licensed: the table and the slot that admitted the request, */
    size_t lslot;             /* re-checked at every piece of the answer */
    cl_err licence_cut;       /* why the licence stopped the answer (revoked, expired, lease ended) */
};

/* Sends plaintext bytes of the answer through OHTTP. */
static cl_err cl_gw_send(struct cl_gw_x *x, const uint8_t *p, size_t n, bool final)
{
    struct cl_buf out;
    cl_buf_init(&out, CL_OHTTP_MAX_MESSAGE, CL_BUF_NONE);
    cl_err rc = x->chunked ? cl_ohttp_server_chunk(x->srv, p, n, final, &out) : cl_ohttp_server_encap(x->srv, p, n, &out);
    if (rc == CL_OK)
        rc = x->emit(x->emit_ctx, x->chunked ? CL_GW_OUT_CHUNK : CL_GW_OUT_RESPONSE, out.data, out.len);
    cl_buf_free(&out);
    return rc;
}

/* A complete known-length answer: status, content type and body. */
static cl_err cl_gw_answer(struct cl_gw_x *x, uint16_t status, const char *ctype, const uint8_t *body, size_t n)
{
    struct cl_bhttp_msg m = {.is_response = 1, .status = status, .n_fields = 1, .content = body, .content_len = n};
    x->oc->status = status;
    m.fields[0] = (struct cl_bhttp_field){"content-type", 12, ctype, strlen(ctype)};
    struct cl_buf b;
    cl_buf_init(&b, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    cl_err rc = cl_bhttp_encode(&m, &b);
    if (rc == CL_OK)
        rc = cl_gw_send(x, b.data, b.len, true);
    cl_buf_free(&b);
    return rc;
}

static cl_err cl_gw_json_answer(struct cl_gw_x *x, uint16_t status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    cl_err rc = s ? cl_gw_answer(x, status, "application/json", (const uint8_t *)s, strlen(s)) : CL_E_CORE_NOMEM;
    cl_json_free_str(s);
    json_decref(j);
    return rc;
}

static cl_err cl_gw_error(struct cl_gw_x *x, uint16_t status, const char *type, const char *msg)
{
    /* "id" names the receipt of a refused chat request too (docs/receipts.md) */
    json_t *j = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", msg, "type", type, "code");
    if (j && x->id[0])
        json_object_set_new(j, "id", json_string(x->id));
    return cl_gw_json_answer(x, status, j);
}

static const char *cl_gw_finish_name(enum cl_chat_finish f) { return f == CL_CHAT_FINISH_LENGTH ? "length" : "stop"; }

static json_t *cl_gw_chunk_json(struct cl_gw_x *x, json_t *delta, json_t *finish)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o}]}", "id", x->id, "object", "chat.completion.chunk",
                     "created", (json_int_t)x->created, "model", x->g->gen.model_name, "choices", "index", 0,
                     "delta", delta, "finish_reason", finish);
}

/* One server-sent event carrying j, as a binary HTTP content chunk. */
static cl_err cl_gw_sse(struct cl_gw_x *x, json_t *j, bool done)
{
    cl_err rc = CL_OK;
    struct cl_buf ev, wire;
    cl_buf_init(&ev, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    cl_buf_init(&wire, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    CL_ENSURE(s || done, CL_E_CORE_NOMEM);
    if (s)
        CL_GUARD(cl_buf_appendf(&ev, "data: %s\n\n", s));
    if (done)
        CL_GUARD(cl_buf_append_str(&ev, "data: [DONE]\n\n"));
    CL_GUARD(cl_bhttp_stream_data(ev.data, ev.len, &wire));
    if (done)
        CL_GUARD(cl_bhttp_stream_end(&wire));
    CL_GUARD(cl_gw_send(x, wire.data, wire.len, done));
out:
    cl_json_free_str(s);
    cl_buf_free(&ev);
    cl_buf_free(&wire);
    return rc;
}

static bool cl_gw_piece(void *ctx, const char *text, size_t len)
{
    struct cl_gw_x *x = ctx;
    if (cl_now_us() > x->deadline_us) {
        x->timed_out = true; /* the answer so far is kept; finish_reason says "length" */
        return false;
    }
    /* a renewal that revoked (or dropped, or let expire) this consumer's
     * licence ends its answer here, not when the answer is done */
    if (x->lt) {
        cl_err lc = cl_licence_table_still(x->lt, x->lslot, (uint64_t)time(NULL));
        if (lc != CL_OK) {
            x->licence_cut = lc;
            return false;
        }
    }
    struct cl_buf whole;
    size_t used = 0;
    cl_buf_init(&whole, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    cl_err rc = cl_buf_append(&x->pending, text, len);
    if (rc == CL_OK)
        rc = cl_utf8_take(x->pending.data, x->pending.len, false, x->streaming ? &whole : &x->text, &used);
    if (rc == CL_OK) {
        memmove(x->pending.data, x->pending.data + used, x->pending.len - used);
        x->pending.len -= used;
    }
    if (rc == CL_OK && x->streaming && whole.len)
        rc = cl_gw_sse(x, cl_gw_chunk_json(x, json_pack("{s:s%}", "content", (const char *)whole.data, whole.len),
                                           json_null()),
                       false);
    cl_buf_free(&whole);
    if (rc != CL_OK)
        x->stream_rc = rc;
    return rc == CL_OK;
}

static cl_err cl_gw_stream_begin(struct cl_gw_x *x)
{
    const struct cl_bhttp_field f[2] = {{"content-type", 12, "text/event-stream", 17},
                                        {"cache-control", 13, "no-store", 8}};
    struct cl_buf head;
    cl_buf_init(&head, 4096, CL_BUF_NONE);
    cl_err rc = cl_bhttp_stream_head(200, f, 2, &head);
    x->oc->status = 200;
    if (rc == CL_OK)
        rc = cl_gw_send(x, head.data, head.len, false);
    cl_buf_free(&head);
    if (rc == CL_OK)
        rc = cl_gw_sse(x, cl_gw_chunk_json(x, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), json_null()),
                       false);
    return rc;
}

/* The consumer's credential rides inside the encrypted request as
 * `authorization: Bearer <credential>` (docs/formats/licence.md). A refusal
 * names its reason to the consumer, inside the encryption, and logs only the
 * code. */
static cl_err cl_gw_licence(struct cl_gw_x *x, const struct cl_bhttp_msg *req, cl_licence_table *t, size_t *slot,
                            bool *refused)
{
    const struct cl_bhttp_field *a = cl_bhttp_find(req, "authorization");
    const uint8_t *cred = NULL;
    size_t n = 0;
    char msg[200];
    *refused = false;
    if (a && a->value_len > 7 && !strncasecmp(a->value, "Bearer ", 7)) {
        cred = (const uint8_t *)a->value + 7;
        n = a->value_len - 7;
    } else if (a) {
        cred = (const uint8_t *)a->value; /* a malformed header is an unknown credential, not a missing one */
        n = a->value_len ? a->value_len : 1;
    }
    cl_err lrc = cl_licence_table_admit(t, cred, n, (uint64_t)time(NULL), slot);
    if (lrc == CL_OK) {
        /* the receipt names the consumer by the licence that admitted it */
        char id[CL_LICENCE_ID_MAX + 1];
        if (cl_licence_table_slot_id(t, *slot, id))
            snprintf(x->oc->consumer, sizeof(x->oc->consumer), "licence:%s", id);
        return CL_OK;
    }
    *refused = true;
    CL_LOG(CL_LOG_INFO, "licence_refused", CL_LOG_ERR(lrc));
    int st = cl_licence_http_status(lrc);
    snprintf(msg, sizeof(msg), "licence: %s", cl_err_str(lrc));
    return cl_gw_error(x, (uint16_t)(st ? st : 403),
                       st == 401 ? "authentication_error" : st == 429 ? "rate_limit_error" : "permission_error", msg);
}

static cl_err cl_gw_chat(struct cl_gw_x *x, const struct cl_bhttp_msg *req)
{
    cl_err rc = CL_OK;
    json_t *root = NULL;
    struct cl_chat_params p;
    bool parsed = false;
    struct cl_chat_result res = {0};
    const char *why = NULL;
    struct cl_chat_msg *msgs = calloc(x->g->lim.max_messages + 1, sizeof(*msgs));
    CL_ENSURE(msgs, CL_E_CORE_NOMEM);
    const struct cl_bhttp_field *ct = cl_bhttp_find(req, "content-type");
    if (ct && (ct->value_len < 16 || strncmp(ct->value, "application/json", 16) != 0)) {
        rc = cl_gw_error(x, 415, "invalid_request_error", "content-type must be application/json");
        goto out;
    }
    rc = cl_chat_request_parse(req->content, req->content_len, &x->g->lim, &root, msgs, &p, &why);
    if (rc != CL_OK) {
        rc = cl_gw_error(x, rc == CL_E_PROTO_LIMIT ? 413 : 400, "invalid_request_error", why);
        goto out;
    }
    parsed = true;
    x->oc->images = p.n_images > 0;
    pthread_mutex_lock(&x->g->mu);
    cl_licence_table *lt = x->g->licences;
    pthread_mutex_unlock(&x->g->mu);
    size_t lslot = 0;
    if (lt) {
        bool refused = false;
        rc = cl_gw_licence(x, req, lt, &lslot, &refused);
        if (rc != CL_OK || refused)
            goto out;
        x->lt = lt;
        x->lslot = lslot;
    }
    unsigned active = atomic_fetch_add(&x->g->active, 1) + 1;
    if (active > x->g->lim.max_sessions) {
        atomic_fetch_sub(&x->g->active, 1);
        rc = cl_gw_error(x, 429, "rate_limit_error", "too many concurrent requests in this enclave");
        goto out;
    }
    /* Streaming needs the chunked OHTTP form; without it the events still
     * come, in one response, so OpenAI-style clients keep working. */
    x->streaming = p.stream && x->chunked;
    uint64_t t0 = cl_now_us();
    x->deadline_us = t0 + (uint64_t)x->g->lim.request_timeout_ms * 1000u;
    cl_err grc = x->streaming ? cl_gw_stream_begin(x) : CL_OK;
    if (grc == CL_OK)
        grc = x->g->gen.generate(x->g->gen.self, &p, cl_gw_piece, x, &res);
    if (grc == CL_OK)
        grc = x->stream_rc;
    if (x->timed_out)
        res.finish = CL_CHAT_FINISH_LENGTH;
    x->oc->prompt_tokens = res.prompt_tokens;
    x->oc->completion_tokens = res.completion_tokens;
    x->oc->failed = grc != CL_OK;
    atomic_fetch_sub(&x->g->active, 1);
    if (lt)
        cl_licence_table_charge_split(lt, lslot, res.prompt_tokens, res.completion_tokens);
    size_t used = 0;
    if (grc == CL_OK) /* flush a trailing partial character as U+FFFD */
        grc = cl_utf8_take(x->pending.data, x->pending.len, true, x->streaming ? &x->text : &x->text, &used);
    CL_LOG(CL_LOG_INFO, "generation", CL_LOG_COUNT("prompt_tokens", res.prompt_tokens),
           CL_LOG_COUNT("completion_tokens", res.completion_tokens), CL_LOG_US("duration_us", cl_now_us() - t0),
           CL_LOG_ERR(grc));
    /* An image is the client's input: its failure is named (which image,
     * what kind of fault), never its content. */
    char img_err[160] = "";
    if (grc != CL_OK && res.bad_image)
        snprintf(img_err, sizeof(img_err), "image %u could not be used: %s", (unsigned)res.bad_image, cl_err_str(grc));
    if (x->licence_cut != CL_OK) /* whatever the generator made of the stop: the licence is the reason */
        grc = x->licence_cut;
    bool lease_cut = grc == CL_E_PROTO_LICENCE_LEASE_ENDED || x->licence_cut != CL_OK; /* named to the consumer, inside the encryption */
    char lease_msg[160];
    snprintf(lease_msg, sizeof(lease_msg), "licence: %s", cl_err_str(lease_cut ? grc : CL_E_PROTO_LICENCE_LEASE_ENDED));
    if (x->streaming) {
        json_t *last;
        if (grc == CL_OK)
            last = cl_gw_chunk_json(x, x->text.len ? json_pack("{s:s%}", "content", (const char *)x->text.data, x->text.len)
                                                   : json_object(),
                                    json_string(cl_gw_finish_name(res.finish)));
        else
            last = grc == CL_E_PROTO_BUSY
                       ? json_pack("{s:{s:s,s:s}}", "error", "message", "the inference engine is full, retry later",
                                   "type", "rate_limit_error")
                       : json_pack("{s:{s:s,s:s}}", "error", "message",
                                   img_err[0] ? img_err : lease_cut ? lease_msg : "generation failed", "type",
                                   img_err[0] ? "invalid_request_error" : "server_error");
        /* usage rides on the last chunk, as OpenAI's stream_options.include_usage does */
        if (grc == CL_OK && last)
            json_object_set_new(last, "usage",
                                json_pack("{s:i,s:i,s:i}", "prompt_tokens", res.prompt_tokens, "completion_tokens",
                                          res.completion_tokens, "total_tokens",
                                          res.prompt_tokens + res.completion_tokens));
        rc = cl_gw_sse(x, last, true);
        goto out;
    }
    if (img_err[0]) {
        rc = cl_gw_error(x, cl_err_category(grc) == CL_ERRCAT_IMAGE ? 400 : 500, "invalid_request_error", img_err);
        goto out;
    }
    if (grc == CL_E_PROTO_BUSY) { /* the engine's sequences or KV budget are all taken */
        rc = cl_gw_error(x, 429, "rate_limit_error", "the inference engine is full, retry later");
        goto out;
    }
    if (lease_cut) {
        int lst = cl_licence_http_status(grc);
        if (!lst)
            lst = 503;
        rc = cl_gw_error(x, (uint16_t)lst,
                         lst == 503 ? "server_error" : lst == 401 ? "authentication_error" : "permission_error",
                         lease_msg);
        goto out;
    }
    if (grc != CL_OK) {
        rc = cl_gw_error(x, 500, "server_error", "generation failed");
        goto out;
    }
    json_t *usage = json_pack("{s:i,s:i,s:i}", "prompt_tokens", res.prompt_tokens, "completion_tokens",
                              res.completion_tokens, "total_tokens", res.prompt_tokens + res.completion_tokens);
    json_t *msg = json_pack("{s:s,s:s%}", "role", "assistant", "content", x->text.data ? (const char *)x->text.data : "",
                            x->text.len);
    if (p.stream) {
        /* stream requested over plain OHTTP: all events in one answer */
        struct cl_buf ev;
        cl_buf_init(&ev, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
        json_t *c1 = cl_gw_chunk_json(x, json_incref(msg), json_string(cl_gw_finish_name(res.finish)));
        char *s = c1 ? json_dumps(c1, JSON_COMPACT) : NULL;
        json_decref(c1);
        rc = s ? cl_buf_appendf(&ev, "data: %s\n\ndata: [DONE]\n\n", s) : CL_E_CORE_NOMEM;
        if (rc == CL_OK)
            rc = cl_gw_answer(x, 200, "text/event-stream", ev.data, ev.len);
        cl_json_free_str(s);
        cl_buf_free(&ev);
        json_decref(msg);
        json_decref(usage);
        goto out;
    }
    rc = cl_gw_json_answer(x, 200,
                           json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}],s:o}", "id", x->id, "object", "chat.completion",
                                     "created", (json_int_t)x->created, "model", x->g->gen.model_name, "choices",
                                     "index", 0, "message", msg, "finish_reason", cl_gw_finish_name(res.finish),
                                     "usage", usage));
out:
    if (parsed)
        cl_chat_params_release(&p);
    json_decref(root);
    free(msgs);
    return rc;
}

static cl_err cl_gw_route(struct cl_gw_x *x, const uint8_t *plain, size_t n)
{
    struct cl_bhttp_msg req;
    if (cl_bhttp_decode(plain, n, x->g->lim.max_request_bytes, &req) != CL_OK || req.is_response)
        return cl_gw_error(x, 400, "invalid_request_error", "malformed binary HTTP request");
#define CL_IS(field, lit) (req.field##_len == sizeof(lit) - 1 && !memcmp(req.field, lit, sizeof(lit) - 1))
    if (CL_IS(path, "/v1/chat/completions")) {
        if (!CL_IS(method, "POST"))
            return cl_gw_error(x, 405, "invalid_request_error", "use POST");
        x->oc->chat = true;
        return cl_gw_chat(x, &req);
    }
    if (CL_IS(path, "/v1/models")) {
        if (!CL_IS(method, "GET"))
            return cl_gw_error(x, 405, "invalid_request_error", "use GET");
        return cl_gw_json_answer(x, 200, json_pack("{s:s,s:[{s:s,s:s,s:s}]}", "object", "list", "data", "id",
                                                   x->g->gen.model_name, "object", "model", "owned_by", "cloister"));
    }
#undef CL_IS
    return cl_gw_error(x, 404, "invalid_request_error", "unknown path");
}

cl_err cl_gateway_handle(cl_gateway *g, const uint8_t *enc_req, size_t n, bool chunked, cl_gw_emit_fn emit,
                         void *emit_ctx)
{
    struct cl_gw_outcome oc;
    return cl_gateway_handle_ex(g, enc_req, n, chunked, emit, emit_ctx, &oc);
}

cl_err cl_gateway_handle_ex(cl_gateway *g, const uint8_t *enc_req, size_t n, bool chunked, cl_gw_emit_fn emit,
                            void *emit_ctx, struct cl_gw_outcome *oc)
{
    cl_err rc = CL_OK;
    struct cl_buf plain;
    struct cl_gw_x x = {.g = g, .chunked = chunked, .emit = emit, .emit_ctx = emit_ctx, .oc = oc};
    uint8_t rid[12];
    struct cl_gw_key *k = NULL;
    cl_buf_init(&plain, g->lim.max_request_bytes + 4096, CL_BUF_SECURE);
    cl_buf_init(&x.pending, 64, CL_BUF_SECURE);
    cl_buf_init(&x.text, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    memset(oc, 0, sizeof(*oc));
    oc->consumer[0] = '-';
    CL_ENSURE_D(n <= g->lim.max_request_bytes + 4096, CL_E_PROTO_LIMIT, "encapsulated request of %zu bytes", n);
    CL_GUARD(cl_gw_key_acquire(g, enc_req, n, &k));
    rc = cl_ohttp_server_decap(&k->kc, k->sk, chunked, enc_req, n, &plain, &x.srv);
    if (rc != CL_OK) {
        cl_gw_key_release(g, k);
        goto out;
    }
    CL_GUARD(cl_gw_admit(g, k, enc_req + CL_OHTTP_HDR_LEN));
    CL_GUARD(cl_random_bytes(rid, sizeof(rid)));
    memcpy(x.id, "chatcmpl-", 9);
    cl_hex_encode(rid, sizeof(rid), x.id + 9);
    x.created = (long long)time(NULL);
    memcpy(oc->request_id, x.id, sizeof(oc->request_id));
    rc = cl_gw_route(&x, plain.data, plain.len);
out:
    cl_ohttp_server_free(x.srv);
    cl_buf_free(&plain);
    cl_buf_free(&x.pending);
    cl_buf_free(&x.text);
    return rc;
}
