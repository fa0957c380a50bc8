/* RFC 9458 and draft-ietf-ohai-chunked-ohttp. */
#include <stdlib.h>
#include <string.h>

#include "cloister/ohttp.h"
#include "cloister/secmem.h"

static const char cl_lbl_req[] = "message/bhttp request";
static const char cl_lbl_res[] = "message/bhttp response";
static const char cl_lbl_creq[] = "message/bhttp chunked request";
static const char cl_lbl_cres[] = "message/bhttp chunked response";

cl_err cl_varint_put(struct cl_buf *b, uint64_t v)
{
    if (v < 64)
        return cl_buf_append_u8(b, (uint8_t)v);
    if (v < 16384)
        return cl_buf_append_u16be(b, (uint16_t)(0x4000 | v));
    if (v < (1u << 30))
        return cl_buf_append_u32be(b, (uint32_t)(0x80000000u | v));
    if (v < ((uint64_t)1 << 62))
        return cl_buf_append_u64be(b, 0xC000000000000000ull | v);
    return cl_err_fail(CL_E_CORE_OVERFLOW, "varint %llu", (unsigned long long)v);
}

cl_err cl_varint_get(struct cl_cursor *c, uint64_t *v)
{
    uint8_t first;
    const uint8_t *p;
    if (cl_cursor_u8(c, &first) != CL_OK)
        return CL_E_CORE_TRUNCATED;
    size_t len = (size_t)1 << (first >> 6);
    uint64_t x = first & 0x3f;
    if (cl_cursor_bytes(c, len - 1, &p) != CL_OK) {
        c->off--;
        return CL_E_CORE_TRUNCATED;
    }
    for (size_t i = 0; i < len - 1; i++)
        x = x << 8 | p[i];
    *v = x;
    return CL_OK;
}

cl_err cl_ohttp_keyconfig_encode(const struct cl_ohttp_keyconfig *kc, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(kc->n_suites > 0 && kc->n_suites <= CL_OHTTP_MAX_SUITES, CL_E_CORE_INVALID_ARG, "%zu suites",
                kc->n_suites);
    CL_GUARD(cl_buf_append_u8(out, kc->key_id));
    CL_GUARD(cl_buf_append_u16be(out, kc->kem));
    CL_GUARD(cl_buf_append(out, kc->pk, 32));
    CL_GUARD(cl_buf_append_u16be(out, (uint16_t)(4 * kc->n_suites)));
    for (size_t i = 0; i < kc->n_suites; i++) {
        CL_GUARD(cl_buf_append_u16be(out, kc->suites[i].kdf));
        CL_GUARD(cl_buf_append_u16be(out, kc->suites[i].aead));
    }
out:
    return rc;
}

/* Parses one configuration from a cursor; unsupported KEMs are reported as
 * CL_E_CORE_UNSUPPORTED so a list parser can skip them. */
static cl_err cl_ohttp_keyconfig_read(struct cl_cursor *c, struct cl_ohttp_keyconfig *kc)
{
    uint16_t slen;
    memset(kc, 0, sizeof(*kc));
    if (cl_cursor_u8(c, &kc->key_id) != CL_OK || cl_cursor_u16be(c, &kc->kem) != CL_OK)
        return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "truncated key configuration");
    if (kc->kem != CL_HPKE_KEM_X25519_SHA256)
        return cl_err_fail(CL_E_CORE_UNSUPPORTED, "KEM 0x%04x", kc->kem);
    if (cl_cursor_copy(c, kc->pk, 32) != CL_OK || cl_cursor_u16be(c, &slen) != CL_OK)
        return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "truncated key configuration");
    if (slen == 0 || slen % 4 || cl_cursor_left(c) < slen)
        return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "algorithm list of %u bytes", slen);
    for (size_t i = 0; i < slen / 4u; i++) {
        uint16_t kdf, aead;
        if (cl_cursor_u16be(c, &kdf) != CL_OK || cl_cursor_u16be(c, &aead) != CL_OK)
            return CL_E_PROTO_OHTTP_KEY_CONFIG;
        struct cl_hpke_suite s = {kc->kem, kdf, aead};
        if (aead == CL_HPKE_AEAD_EXPORT_ONLY || cl_hpke_suite_check(&s) != CL_OK ||
            kc->n_suites == CL_OHTTP_MAX_SUITES)
            continue; /* an algorithm we cannot use is simply not offered to us */
        kc->suites[kc->n_suites].kdf = kdf;
        kc->suites[kc->n_suites].aead = aead;
        kc->n_suites++;
    }
    if (!kc->n_suites)
        return cl_err_fail(CL_E_CORE_UNSUPPORTED, "no supported HPKE algorithms");
    return CL_OK;
}

cl_err cl_ohttp_keyconfig_parse(const uint8_t *p, size_t n, struct cl_ohttp_keyconfig *kc)
{
    struct cl_cursor c;
    cl_cursor_init(&c, p, n);
    cl_err rc = cl_ohttp_keyconfig_read(&c, kc);
    if (rc == CL_E_CORE_UNSUPPORTED)
        return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "%s", cl_err_detail());
    if (rc == CL_OK && !cl_cursor_done(&c))
        return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "%zu trailing bytes", cl_cursor_left(&c));
    return rc;
}

cl_err cl_ohttp_keys_encode(const struct cl_ohttp_keyconfig *kc, struct cl_buf *out)
{
    size_t at = out->len;
    cl_err rc = cl_buf_append_u16be(out, 0);
    if (rc == CL_OK)
        rc = cl_ohttp_keyconfig_encode(kc, out);
    if (rc != CL_OK) {
        out->len = at;
        return rc;
    }
    size_t len = out->len - at - 2;
    out->data[at] = (uint8_t)(len >> 8);
    out->data[at + 1] = (uint8_t)len;
    return CL_OK;
}

cl_err cl_ohttp_keys_parse(const uint8_t *p, size_t n, struct cl_ohttp_keyconfig *kc)
{
    struct cl_cursor c, one;
    uint16_t len;
    const uint8_t *body;
    cl_cursor_init(&c, p, n);
    while (!cl_cursor_done(&c)) {
        if (cl_cursor_u16be(&c, &len) != CL_OK || cl_cursor_bytes(&c, len, &body) != CL_OK)
            return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "truncated key configuration list");
        cl_cursor_init(&one, body, len);
        cl_err rc = cl_ohttp_keyconfig_read(&one, kc);
        if (rc == CL_OK && cl_cursor_done(&one))
            return CL_OK;
        if (rc != CL_E_CORE_UNSUPPORTED && rc != CL_OK)
            return rc;
    }
    return cl_err_fail(CL_E_PROTO_OHTTP_KEY_CONFIG, "no usable key configuration");
}

/* ---- shared state ---- */

struct cl_ohttp_resp_keys {
    cl_aead *aead;
    uint8_t nonce[12];
    uint64_t counter;
};

struct cl_ohttp_client {
    cl_hpke_ctx *hpke;
    struct cl_hpke_suite suite;
    uint8_t enc[CL_HPKE_ENC_LEN];
    bool chunked;
    bool have_nonce; /* chunked: response nonce received and keys derived */
    bool done;       /* final chunk authenticated */
    struct cl_ohttp_resp_keys rk;
    struct cl_buf pending; /* chunked: bytes not yet forming a whole chunk */
};

struct cl_ohttp_server {
    cl_hpke_ctx *hpke;
    struct cl_hpke_suite suite;
    uint8_t enc[CL_HPKE_ENC_LEN];
    bool chunked;
    bool started;
    bool finished;
    struct cl_ohttp_resp_keys rk;
};

static size_t cl_ohttp_nonce_len(const struct cl_hpke_suite *s)
{
    size_t nk = cl_hpke_aead_key_len(s->aead), nn = 12;
    return nk > nn ? nk : nn;
}

static void cl_ohttp_hdr(uint8_t hdr[CL_OHTTP_HDR_LEN], uint8_t key_id, const struct cl_hpke_suite *s)
{
    hdr[0] = key_id;
    hdr[1] = (uint8_t)(s->kem >> 8);
    hdr[2] = (uint8_t)s->kem;
    hdr[3] = (uint8_t)(s->kdf >> 8);
    hdr[4] = (uint8_t)s->kdf;
    hdr[5] = (uint8_t)(s->aead >> 8);
    hdr[6] = (uint8_t)s->aead;
}

/* info = label || 0x00 || hdr */
static cl_err cl_ohttp_info(const char *label, const uint8_t hdr[CL_OHTTP_HDR_LEN], struct cl_buf *info)
{
    cl_err rc = cl_buf_append_str(info, label);
    if (rc == CL_OK)
        rc = cl_buf_append_u8(info, 0);
    if (rc == CL_OK)
        rc = cl_buf_append(info, hdr, CL_OHTTP_HDR_LEN);
    return rc;
}

/* Response keys: secret = Export(label, max(Nn,Nk)); salt = enc || nonce;
 * prk = Extract(salt, secret); key = Expand(prk,"key",Nk); nonce = Expand(prk,"nonce",Nn). */
static cl_err cl_ohttp_resp_derive(cl_hpke_ctx *h, const struct cl_hpke_suite *s, const uint8_t enc[32],
                                   const char *label, const uint8_t *rnonce, struct cl_ohttp_resp_keys *rk)
{
    cl_err rc = CL_OK;
    size_t nl = cl_ohttp_nonce_len(s), nk = cl_hpke_aead_key_len(s->aead);
    enum cl_hash_alg ha = s->kdf == CL_HPKE_KDF_SHA256 ? CL_HASH_SHA256
                          : s->kdf == CL_HPKE_KDF_SHA384 ? CL_HASH_SHA384 : CL_HASH_SHA512;
    uint8_t secret[32], salt[64], prk[64], key[32];
    CL_GUARD(cl_hpke_export(h, label, strlen(label), secret, nl));
    memcpy(salt, enc, 32);
    memcpy(salt + 32, rnonce, nl);
    CL_GUARD(cl_hkdf_extract(ha, salt, 32 + nl, secret, nl, prk));
    CL_GUARD(cl_hkdf_expand(ha, prk, cl_hash_len(ha), "key", 3, key, nk));
    CL_GUARD(cl_hkdf_expand(ha, prk, cl_hash_len(ha), "nonce", 5, rk->nonce, 12));
    enum cl_aead_alg a = s->aead == CL_HPKE_AEAD_AES128GCM   ? CL_AEAD_AES128GCM
                         : s->aead == CL_HPKE_AEAD_AES256GCM ? CL_AEAD_AES256GCM
                                                             : CL_AEAD_CHACHA20POLY1305;
    CL_GUARD(cl_aead_new(a, key, nk, &rk->aead));
    rk->counter = 0;
out:
    cl_wipe(secret, sizeof(secret));
    cl_wipe(prk, sizeof(prk));
    cl_wipe(key, sizeof(key));
    return rc;
}

static void cl_ohttp_chunk_nonce(const struct cl_ohttp_resp_keys *rk, uint8_t nonce[12])
{
    memcpy(nonce, rk->nonce, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(rk->counter >> (8 * i));
}

/* ---- client ---- */

cl_err cl_ohttp_client_encap(const struct cl_ohttp_keyconfig *kc, uint16_t kdf, uint16_t aead, bool chunked,
                             const uint8_t *req, size_t n, struct cl_buf *enc_req, cl_ohttp_client **out)
{
    cl_err rc = CL_OK;
    cl_ohttp_client *c = calloc(1, sizeof(*c));
    struct cl_buf info;
    uint8_t hdr[CL_OHTTP_HDR_LEN];
    size_t start = enc_req->len;
    cl_buf_init(&info, 128, CL_BUF_NONE);
    CL_ENSURE(c, CL_E_CORE_NOMEM);
    cl_buf_init(&c->pending, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    c->suite = (struct cl_hpke_suite){kc->kem, kdf, aead};
    c->chunked = chunked;
    bool offered = false;
    for (size_t i = 0; i < kc->n_suites; i++)
        offered |= kc->suites[i].kdf == kdf && kc->suites[i].aead == aead;
    CL_ENSURE_D(offered, CL_E_PROTO_OHTTP_SUITE, "KDF 0x%04x / AEAD 0x%04x not in the key configuration", kdf, aead);
    cl_ohttp_hdr(hdr, kc->key_id, &c->suite);
    CL_GUARD(cl_ohttp_info(chunked ? cl_lbl_creq : cl_lbl_req, hdr, &info));
    CL_GUARD(cl_hpke_setup_sender(&c->suite, CL_HPKE_MODE_BASE, kc->pk, info.data, info.len, NULL, c->enc, &c->hpke));
    CL_GUARD(cl_buf_append(enc_req, hdr, sizeof(hdr)));
    CL_GUARD(cl_buf_append(enc_req, c->enc, sizeof(c->enc)));
    if (chunked)
        CL_GUARD(cl_varint_put(enc_req, 0)); /* the whole request is the final chunk */
    CL_GUARD(cl_hpke_seal(c->hpke, chunked ? "final" : "", chunked ? 5 : 0, req, n, enc_req));
    *out = c;
    c = NULL;
out:
    if (rc != CL_OK)
        enc_req->len = start;
    cl_buf_free(&info);
    cl_ohttp_client_free(c);
    return rc;
}

cl_err cl_ohttp_client_decap(cl_ohttp_client *c, const uint8_t *res, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t nl = cl_ohttp_nonce_len(&c->suite);
    uint8_t nonce[12], *dst;
    size_t start = out->len;
    CL_ENSURE_D(!c->chunked, CL_E_CORE_STATE, "chunked response: use cl_ohttp_client_feed");
    CL_ENSURE_D(n >= nl + CL_AEAD_TAG_LEN, CL_E_PROTO_OHTTP_MALFORMED, "response of %zu bytes", n);
    CL_GUARD(cl_ohttp_resp_derive(c->hpke, &c->suite, c->enc, cl_lbl_res, res, &c->rk));
    cl_ohttp_chunk_nonce(&c->rk, nonce);
    CL_GUARD(cl_buf_extend(out, n - nl - CL_AEAD_TAG_LEN, &dst));
    if (cl_aead_open(c->rk.aead, nonce, NULL, 0, res + nl, n - nl - CL_AEAD_TAG_LEN, res + n - CL_AEAD_TAG_LEN, dst) !=
        CL_OK)
        CL_FAIL(CL_E_PROTO_OHTTP_AUTH, "response");
    c->done = true;
out:
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

/* Opens one response chunk (sealed under counter) into out. */
static cl_err cl_ohttp_open_chunk(struct cl_ohttp_resp_keys *rk, const uint8_t *p, size_t n, bool final,
                                  struct cl_buf *out)
{
    uint8_t nonce[12], *dst;
    size_t start = out->len;
    if (n < CL_AEAD_TAG_LEN)
        return cl_err_fail(CL_E_PROTO_OHTTP_MALFORMED, "chunk %llu shorter than its tag", (unsigned long long)rk->counter);
    cl_err rc = cl_buf_extend(out, n - CL_AEAD_TAG_LEN, &dst);
    if (rc != CL_OK)
        return rc;
    cl_ohttp_chunk_nonce(rk, nonce);
    if (cl_aead_open(rk->aead, nonce, final ? "final" : "", final ? 5 : 0, p, n - CL_AEAD_TAG_LEN,
                     p + n - CL_AEAD_TAG_LEN, dst) != CL_OK) {
        out->len = start;
        return cl_err_fail(CL_E_PROTO_OHTTP_AUTH, "%schunk %llu", final ? "final " : "", (unsigned long long)rk->counter);
    }
    rk->counter++;
    return CL_OK;
}

cl_err cl_ohttp_client_feed(cl_ohttp_client *c, const uint8_t *p, size_t n, bool end, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t nl = cl_ohttp_nonce_len(&c->suite);
    CL_ENSURE_D(c->chunked, CL_E_CORE_STATE, "not a chunked exchange");
    CL_ENSURE_D(!c->done || n == 0, CL_E_PROTO_OHTTP_STATE, "%zu bytes after the final chunk", n);
    CL_GUARD(cl_buf_append(&c->pending, p, n));
    if (!c->have_nonce) {
        if (c->pending.len < nl)
            goto check_end;
        CL_GUARD(cl_ohttp_resp_derive(c->hpke, &c->suite, c->enc, cl_lbl_cres, c->pending.data, &c->rk));
        c->have_nonce = true;
        memmove(c->pending.data, c->pending.data + nl, c->pending.len - nl);
        c->pending.len -= nl;
    }
    for (;;) {
        struct cl_cursor cur;
        uint64_t len;
        cl_cursor_init(&cur, c->pending.data, c->pending.len);
        if (cl_varint_get(&cur, &len) != CL_OK)
            break;
        if (len == 0) {
            /* final chunk: everything to the end of the stream */
            if (!end)
                break;
            CL_GUARD(cl_ohttp_open_chunk(&c->rk, cur.p + cur.off, cl_cursor_left(&cur), true, out));
            c->done = true;
            c->pending.len = 0;
            break;
        }
        CL_ENSURE_D(len <= CL_OHTTP_MAX_MESSAGE, CL_E_PROTO_OHTTP_MALFORMED, "chunk of %llu bytes",
                    (unsigned long long)len);
        if (cl_cursor_left(&cur) < len)
            break;
        CL_GUARD(cl_ohttp_open_chunk(&c->rk, cur.p + cur.off, (size_t)len, false, out));
        size_t used = cur.off + (size_t)len;
        memmove(c->pending.data, c->pending.data + used, c->pending.len - used);
        c->pending.len -= used;
    }
check_end:
    CL_ENSURE_D(!end || c->done, CL_E_PROTO_OHTTP_TRUNCATED, "after %llu chunks", (unsigned long long)c->rk.counter);
out:
    return rc;
}

bool cl_ohttp_client_done(const cl_ohttp_client *c) { return c->done; }

void cl_ohttp_client_free(cl_ohttp_client *c)
{
    if (!c)
        return;
    cl_hpke_free(c->hpke);
    cl_aead_free(c->rk.aead);
    cl_buf_free(&c->pending);
    free(c);
}

/* ---- gateway ---- */

cl_err cl_ohttp_server_decap(const struct cl_ohttp_keyconfig *kc, const cl_pkey *sk, bool chunked,
                             const uint8_t *enc_req, size_t n, struct cl_buf *req, cl_ohttp_server **out)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    struct cl_buf info;
    const uint8_t *hdr, *enc;
    uint8_t key_id;
    uint16_t kem, kdf, aead;
    size_t start = req->len;
    cl_ohttp_server *s = calloc(1, sizeof(*s));
    cl_buf_init(&info, 128, CL_BUF_NONE);
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    CL_ENSURE_D(n <= CL_OHTTP_MAX_MESSAGE, CL_E_PROTO_LIMIT, "encapsulated request of %zu bytes", n);
    cl_cursor_init(&c, enc_req, n);
    CL_ENSURE_D(cl_cursor_bytes(&c, CL_OHTTP_HDR_LEN, &hdr) == CL_OK, CL_E_PROTO_OHTTP_MALFORMED, "header");
    key_id = hdr[0];
    kem = (uint16_t)(hdr[1] << 8 | hdr[2]);
    kdf = (uint16_t)(hdr[3] << 8 | hdr[4]);
    aead = (uint16_t)(hdr[5] << 8 | hdr[6]);
    CL_ENSURE_D(key_id == kc->key_id, CL_E_PROTO_OHTTP_KEY_ID, "key id %u, serving %u", key_id, kc->key_id);
    CL_ENSURE_D(kem == kc->kem, CL_E_PROTO_OHTTP_SUITE, "KEM 0x%04x", kem);
    bool offered = false;
    for (size_t i = 0; i < kc->n_suites; i++)
        offered |= kc->suites[i].kdf == kdf && kc->suites[i].aead == aead;
    CL_ENSURE_D(offered, CL_E_PROTO_OHTTP_SUITE, "KDF 0x%04x / AEAD 0x%04x", kdf, aead);
    s->suite = (struct cl_hpke_suite){kem, kdf, aead};
    s->chunked = chunked;
    CL_ENSURE_D(cl_cursor_bytes(&c, CL_HPKE_ENC_LEN, &enc) == CL_OK, CL_E_PROTO_OHTTP_MALFORMED, "encapsulated key");
    memcpy(s->enc, enc, CL_HPKE_ENC_LEN);
    CL_GUARD(cl_ohttp_info(chunked ? cl_lbl_creq : cl_lbl_req, hdr, &info));
    rc = cl_hpke_setup_recipient(&s->suite, CL_HPKE_MODE_BASE, s->enc, sk, info.data, info.len, NULL, &s->hpke);
    CL_ENSURE_D(rc == CL_OK, CL_E_PROTO_OHTTP_AUTH, "encapsulated key rejected");
    if (!chunked) {
        rc = cl_hpke_open(s->hpke, NULL, 0, c.p + c.off, cl_cursor_left(&c), req);
        CL_ENSURE_D(rc == CL_OK, CL_E_PROTO_OHTTP_AUTH, "request");
    } else {
        for (uint64_t i = 0;; i++) {
            uint64_t len;
            CL_ENSURE_D(cl_varint_get(&c, &len) == CL_OK, CL_E_PROTO_OHTTP_TRUNCATED, "request chunk %llu",
                        (unsigned long long)i);
            bool final = len == 0;
            size_t take = final ? cl_cursor_left(&c) : (size_t)len;
            CL_ENSURE_D(final || len <= cl_cursor_left(&c), CL_E_PROTO_OHTTP_TRUNCATED, "request chunk %llu",
                        (unsigned long long)i);
            rc = cl_hpke_open(s->hpke, final ? "final" : "", final ? 5 : 0, c.p + c.off, take, req);
            CL_ENSURE_D(rc == CL_OK, CL_E_PROTO_OHTTP_AUTH, "request chunk %llu", (unsigned long long)i);
            c.off += take;
            if (final)
                break;
        }
    }
    *out = s;
    s = NULL;
out:
    if (rc != CL_OK)
        req->len = start;
    cl_buf_free(&info);
    cl_ohttp_server_free(s);
    return rc;
}

cl_err cl_ohttp_server_encap(cl_ohttp_server *s, const uint8_t *res, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t nl = cl_ohttp_nonce_len(&s->suite), start = out->len;
    uint8_t rnonce[32], nonce[12], *dst;
    CL_ENSURE_D(!s->chunked, CL_E_CORE_STATE, "chunked exchange: use cl_ohttp_server_chunk");
    CL_ENSURE_D(!s->finished, CL_E_PROTO_OHTTP_STATE, "response already sent");
    CL_GUARD(cl_random_bytes(rnonce, nl));
    CL_GUARD(cl_ohttp_resp_derive(s->hpke, &s->suite, s->enc, cl_lbl_res, rnonce, &s->rk));
    CL_GUARD(cl_buf_append(out, rnonce, nl));
    cl_ohttp_chunk_nonce(&s->rk, nonce);
    CL_GUARD(cl_buf_extend(out, n + CL_AEAD_TAG_LEN, &dst));
    CL_GUARD(cl_aead_seal(s->rk.aead, nonce, NULL, 0, res, n, dst, dst + n));
    s->finished = true;
out:
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

cl_err cl_ohttp_server_chunk(cl_ohttp_server *s, const uint8_t *p, size_t n, bool final, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t nl = cl_ohttp_nonce_len(&s->suite), start = out->len;
    uint8_t rnonce[32], nonce[12], *dst;
    CL_ENSURE_D(s->chunked, CL_E_CORE_STATE, "not a chunked exchange");
    CL_ENSURE_D(!s->finished, CL_E_PROTO_OHTTP_STATE, "chunk after the final chunk");
    /* A non-final chunk may not be empty: length 0 marks the final one. */
    CL_ENSURE_D(final || n > 0, CL_E_CORE_INVALID_ARG, "empty non-final chunk");
    if (!s->started) {
        CL_GUARD(cl_random_bytes(rnonce, nl));
        CL_GUARD(cl_ohttp_resp_derive(s->hpke, &s->suite, s->enc, cl_lbl_cres, rnonce, &s->rk));
        CL_GUARD(cl_buf_append(out, rnonce, nl));
        s->started = true;
    }
    CL_GUARD(cl_varint_put(out, final ? 0 : n + CL_AEAD_TAG_LEN));
    cl_ohttp_chunk_nonce(&s->rk, nonce);
    CL_GUARD(cl_buf_extend(out, n + CL_AEAD_TAG_LEN, &dst));
    CL_GUARD(cl_aead_seal(s->rk.aead, nonce, final ? "final" : "", final ? 5 : 0, p, n, dst, dst + n));
    s->rk.counter++;
    s->finished = final;
out:
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

void cl_ohttp_server_free(cl_ohttp_server *s)
{
    if (!s)
        return;
    cl_hpke_free(s->hpke);
    cl_aead_free(s->rk.aead);
    free(s);
}
