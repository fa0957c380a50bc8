/* RFC 9180. The labeled HKDF helpers build "HPKE-v1" || suite_id || label ||
 * input, exactly as section 4 specifies. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/hpke.h"
#include "cloister/secmem.h"

#define CL_HPKE_MAX_NH 64

struct cl_hpke_ctx {
    struct cl_hpke_suite s;
    uint8_t suite_id[10];
    cl_aead *aead; /* NULL for export-only */
    uint8_t key[32];
    uint8_t base_nonce[12];
    uint8_t exporter_secret[CL_HPKE_MAX_NH];
    uint8_t shared_secret[32];
    uint64_t seq;
};

static enum cl_hash_alg cl_hpke_kdf_hash(uint16_t kdf)
{
    switch (kdf) {
    case CL_HPKE_KDF_SHA256: return CL_HASH_SHA256;
    case CL_HPKE_KDF_SHA384: return CL_HASH_SHA384;
    case CL_HPKE_KDF_SHA512: return CL_HASH_SHA512;
    default: return CL_HASH_NONE;
    }
}

static enum cl_aead_alg cl_hpke_aead_alg(uint16_t aead)
{
    switch (aead) {
    case CL_HPKE_AEAD_AES128GCM: return CL_AEAD_AES128GCM;
    case CL_HPKE_AEAD_AES256GCM: return CL_AEAD_AES256GCM;
    case CL_HPKE_AEAD_CHACHA20POLY1305: return CL_AEAD_CHACHA20POLY1305;
    default: return CL_AEAD_NONE;
    }
}

size_t cl_hpke_aead_key_len(uint16_t aead) { return cl_aead_key_len(cl_hpke_aead_alg(aead)); }
size_t cl_hpke_aead_nonce_len(uint16_t aead) { return cl_hpke_aead_alg(aead) != CL_AEAD_NONE ? 12 : 0; }

cl_err cl_hpke_suite_check(const struct cl_hpke_suite *s)
{
    if (s->kem != CL_HPKE_KEM_X25519_SHA256)
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "unsupported HPKE KEM 0x%04x", s->kem);
    if (cl_hpke_kdf_hash(s->kdf) == CL_HASH_NONE)
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "unsupported HPKE KDF 0x%04x", s->kdf);
    if (s->aead != CL_HPKE_AEAD_EXPORT_ONLY && cl_hpke_aead_alg(s->aead) == CL_AEAD_NONE)
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "unsupported HPKE AEAD 0x%04x", s->aead);
    return CL_OK;
}

/* LabeledExtract(salt, label, ikm) with the given suite id. */
static cl_err cl_hpke_lextract(enum cl_hash_alg h, const uint8_t *sid, size_t sidlen, const uint8_t *salt,
                               size_t saltlen, const char *label, const uint8_t *ikm, size_t ikmlen, uint8_t *out)
{
    struct cl_buf b;
    cl_buf_init(&b, 7 + sidlen + strlen(label) + ikmlen + 1, CL_BUF_SECURE);
    cl_err rc = cl_buf_append(&b, "HPKE-v1", 7);
    if (rc == CL_OK)
        rc = cl_buf_append(&b, sid, sidlen);
    if (rc == CL_OK)
        rc = cl_buf_append_str(&b, label);
    if (rc == CL_OK)
        rc = cl_buf_append(&b, ikm, ikmlen);
    if (rc == CL_OK)
        rc = cl_hkdf_extract(h, salt, saltlen, b.data, b.len, out);
    cl_buf_free(&b);
    return rc;
}

/* LabeledExpand(prk, label, info, L). */
static cl_err cl_hpke_lexpand(enum cl_hash_alg h, const uint8_t *sid, size_t sidlen, const uint8_t *prk,
                              const char *label, const uint8_t *info, size_t infolen, uint8_t *out, size_t L)
{
    struct cl_buf b;
    if (L > 255 * cl_hash_len(h))
        return cl_err_fail(CL_E_CORE_LIMIT, "HPKE expand of %zu bytes", L);
    cl_buf_init(&b, 2 + 7 + sidlen + strlen(label) + infolen + 1, CL_BUF_SECURE);
    cl_err rc = cl_buf_append_u16be(&b, (uint16_t)L);
    if (rc == CL_OK)
        rc = cl_buf_append(&b, "HPKE-v1", 7);
    if (rc == CL_OK)
        rc = cl_buf_append(&b, sid, sidlen);
    if (rc == CL_OK)
        rc = cl_buf_append_str(&b, label);
    if (rc == CL_OK)
        rc = cl_buf_append(&b, info, infolen);
    if (rc == CL_OK)
        rc = cl_hkdf_expand(h, prk, cl_hash_len(h), b.data, b.len, out, L);
    cl_buf_free(&b);
    return rc;
}

static const uint8_t cl_hpke_kem_sid[5] = {'K', 'E', 'M', 0x00, 0x20};

cl_err cl_hpke_derive_keypair(uint16_t kem, const uint8_t *ikm, size_t ikm_len, cl_pkey **out)
{
    uint8_t prk[32], sk[32];
    if (kem != CL_HPKE_KEM_X25519_SHA256)
        return cl_err_fail(CL_E_CRYPTO_BAD_KEY, "unsupported HPKE KEM 0x%04x", kem);
    cl_err rc = cl_hpke_lextract(CL_HASH_SHA256, cl_hpke_kem_sid, 5, NULL, 0, "dkp_prk", ikm, ikm_len, prk);
    if (rc == CL_OK)
        rc = cl_hpke_lexpand(CL_HASH_SHA256, cl_hpke_kem_sid, 5, prk, "sk", NULL, 0, sk, 32);
    if (rc == CL_OK)
        rc = cl_x25519_from_raw(sk, 1, out);
    cl_wipe(prk, sizeof(prk));
    cl_wipe(sk, sizeof(sk));
    return rc;
}

/* ExtractAndExpand(dh, kem_context) of DHKEM. */
static cl_err cl_hpke_eae(const uint8_t *dh, size_t dhlen, const uint8_t *kctx, size_t kctxlen, uint8_t ss[32])
{
    uint8_t prk[32];
    cl_err rc = cl_hpke_lextract(CL_HASH_SHA256, cl_hpke_kem_sid, 5, NULL, 0, "eae_prk", dh, dhlen, prk);
    if (rc == CL_OK)
        rc = cl_hpke_lexpand(CL_HASH_SHA256, cl_hpke_kem_sid, 5, prk, "shared_secret", kctx, kctxlen, ss, 32);
    cl_wipe(prk, sizeof(prk));
    return rc;
}

static bool cl_hpke_is_auth(int mode) { return mode == CL_HPKE_MODE_AUTH || mode == CL_HPKE_MODE_AUTH_PSK; }
static bool cl_hpke_is_psk(int mode) { return mode == CL_HPKE_MODE_PSK || mode == CL_HPKE_MODE_AUTH_PSK; }

static cl_err cl_hpke_key_schedule(cl_hpke_ctx *c, int mode, const uint8_t *info, size_t info_len,
                                   const struct cl_hpke_opts *o)
{
    cl_err rc = CL_OK;
    enum cl_hash_alg h = cl_hpke_kdf_hash(c->s.kdf);
    size_t nh = cl_hash_len(h);
    uint8_t ksc[1 + 2 * CL_HPKE_MAX_NH], secret[CL_HPKE_MAX_NH];
    const uint8_t *psk = o && o->psk ? o->psk : (const uint8_t *)"";
    const uint8_t *psk_id = o && o->psk_id ? o->psk_id : (const uint8_t *)"";
    size_t psk_len = o ? o->psk_len : 0, psk_id_len = o ? o->psk_id_len : 0;
    /* VerifyPSKInputs */
    CL_ENSURE_D(cl_hpke_is_psk(mode) == (psk_len > 0) && (psk_len > 0) == (psk_id_len > 0), CL_E_CORE_INVALID_ARG,
                "HPKE psk and psk_id must be given exactly in psk modes");
    CL_ENSURE_D(!cl_hpke_is_psk(mode) || psk_len >= 32, CL_E_CORE_INVALID_ARG, "HPKE psk shorter than 32 bytes");
    ksc[0] = (uint8_t)mode;
    CL_GUARD(cl_hpke_lextract(h, c->suite_id, 10, NULL, 0, "psk_id_hash", psk_id, psk_id_len, ksc + 1));
    CL_GUARD(cl_hpke_lextract(h, c->suite_id, 10, NULL, 0, "info_hash", info, info_len, ksc + 1 + nh));
    CL_GUARD(cl_hpke_lextract(h, c->suite_id, 10, c->shared_secret, 32, "secret", psk, psk_len, secret));
    if (c->s.aead != CL_HPKE_AEAD_EXPORT_ONLY) {
        size_t nk = cl_hpke_aead_key_len(c->s.aead);
        CL_GUARD(cl_hpke_lexpand(h, c->suite_id, 10, secret, "key", ksc, 1 + 2 * nh, c->key, nk));
        CL_GUARD(cl_hpke_lexpand(h, c->suite_id, 10, secret, "base_nonce", ksc, 1 + 2 * nh, c->base_nonce, 12));
        CL_GUARD(cl_aead_new(cl_hpke_aead_alg(c->s.aead), c->key, nk, &c->aead));
    }
    CL_GUARD(cl_hpke_lexpand(h, c->suite_id, 10, secret, "exp", ksc, 1 + 2 * nh, c->exporter_secret, nh));
out:
    cl_wipe(secret, sizeof(secret));
    return rc;
}

/* The KEM's shared secret from the Diffie-Hellman results and the KEM
 * context (ExtractAndExpand), then the key schedule: both sides' common end. */
static cl_err cl_hpke_derive(cl_hpke_ctx *c, int mode, const uint8_t *dh, size_t dhlen, const uint8_t *kctx,
                             size_t klen, const uint8_t *info, size_t info_len, const struct cl_hpke_opts *o)
{
    cl_err rc = cl_hpke_eae(dh, dhlen, kctx, klen, c->shared_secret);
    if (rc == CL_OK)
        rc = cl_hpke_key_schedule(c, mode, info, info_len, o);
    return rc;
}

static cl_err cl_hpke_ctx_new(const struct cl_hpke_suite *s, int mode, const struct cl_hpke_opts *o, cl_hpke_ctx **out)
{
    cl_err rc = cl_hpke_suite_check(s);
    if (rc != CL_OK)
        return rc;
    if (mode < CL_HPKE_MODE_BASE || mode > CL_HPKE_MODE_AUTH_PSK)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "HPKE mode %d", mode);
    if (cl_hpke_is_auth(mode) && !(o && (o->sk_sender || o->pk_sender)))
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "HPKE auth mode without a sender key");
    void *mem = NULL;
    rc = cl_secmem_alloc(sizeof(cl_hpke_ctx), &mem);
    if (rc != CL_OK)
        return rc;
    cl_hpke_ctx *c = mem;
    c->s = *s;
    memcpy(c->suite_id, "HPKE", 4);
    const uint16_t ids[3] = {s->kem, s->kdf, s->aead};
    for (int i = 0; i < 3; i++) {
        c->suite_id[4 + 2 * i] = (uint8_t)(ids[i] >> 8);
        c->suite_id[5 + 2 * i] = (uint8_t)ids[i];
    }
    *out = c;
    return CL_OK;
}

void cl_hpke_free(cl_hpke_ctx *c)
{
    if (!c)
        return;
    cl_aead_free(c->aead);
    cl_secmem_free(c);
}

cl_err cl_hpke_setup_sender(const struct cl_hpke_suite *s, int mode, const uint8_t pk_r[32], const uint8_t *info,
                            size_t info_len, const struct cl_hpke_opts *o, uint8_t enc[CL_HPKE_ENC_LEN],
                            cl_hpke_ctx **out)
{
    cl_err rc = CL_OK;
    cl_hpke_ctx *c = NULL;
    cl_pkey *eph = NULL;
    uint8_t dh[64], kctx[96], pk_s[32];
    size_t dhlen = 32, klen = 64;
    CL_ENSURE_D(info_len <= CL_HPKE_MAX_INFO, CL_E_CORE_LIMIT, "HPKE info of %zu bytes", info_len);
    CL_GUARD(cl_hpke_ctx_new(s, mode, o, &c));
    if (o && o->ikm_e)
        CL_GUARD(cl_hpke_derive_keypair(s->kem, o->ikm_e, o->ikm_e_len, &eph));
    else
        CL_GUARD(cl_pkey_generate(CL_PKEY_X25519, &eph));
    CL_GUARD(cl_x25519_public_raw(eph, enc));
    CL_GUARD(cl_x25519_derive(eph, pk_r, dh));
    memcpy(kctx, enc, 32);
    memcpy(kctx + 32, pk_r, 32);
    if (cl_hpke_is_auth(mode)) {
        CL_ENSURE_D(o->sk_sender, CL_E_CORE_INVALID_ARG, "HPKE auth sender key");
        CL_GUARD(cl_x25519_derive(o->sk_sender, pk_r, dh + 32));
        CL_GUARD(cl_x25519_public_raw(o->sk_sender, pk_s));
        memcpy(kctx + 64, pk_s, 32);
        dhlen = 64;
        klen = 96;
    }
    CL_GUARD(cl_hpke_derive(c, mode, dh, dhlen, kctx, klen, info, info_len, o));
    *out = c;
    c = NULL;
out:
    cl_wipe(dh, sizeof(dh));
    cl_pkey_free(eph);
    cl_hpke_free(c);
    return rc;
}

cl_err cl_hpke_setup_recipient(const struct cl_hpke_suite *s, int mode, const uint8_t enc[CL_HPKE_ENC_LEN],
                               const cl_pkey *sk_r, const uint8_t *info, size_t info_len,
                               const struct cl_hpke_opts *o, cl_hpke_ctx **out)
{
    cl_err rc = CL_OK;
    cl_hpke_ctx *c = NULL;
    uint8_t dh[64], kctx[96];
    size_t dhlen = 32, klen = 64;
    CL_ENSURE_D(info_len <= CL_HPKE_MAX_INFO, CL_E_CORE_LIMIT, "HPKE info of %zu bytes", info_len);
    CL_GUARD(cl_hpke_ctx_new(s, mode, o, &c));
    CL_GUARD(cl_x25519_derive(sk_r, enc, dh));
    memcpy(kctx, enc, 32);
    CL_GUARD(cl_x25519_public_raw(sk_r, kctx + 32));
    if (cl_hpke_is_auth(mode)) {
        CL_ENSURE_D(o->pk_sender, CL_E_CORE_INVALID_ARG, "HPKE auth sender public key");
        CL_GUARD(cl_x25519_derive(sk_r, o->pk_sender, dh + 32));
        memcpy(kctx + 64, o->pk_sender, 32);
        dhlen = 64;
        klen = 96;
    }
    CL_GUARD(cl_hpke_derive(c, mode, dh, dhlen, kctx, klen, info, info_len, o));
    *out = c;
    c = NULL;
out:
    cl_wipe(dh, sizeof(dh));
    cl_hpke_free(c);
    return rc;
}

static cl_err cl_hpke_nonce(cl_hpke_ctx *c, uint8_t nonce[12])
{
    if (!c->aead)
        return cl_err_fail(CL_E_CORE_STATE, "HPKE export-only context cannot seal or open");
    if (c->seq == UINT64_MAX)
        return cl_err_fail(CL_E_CORE_LIMIT, "HPKE sequence number exhausted");
    memcpy(nonce, c->base_nonce, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(c->seq >> (8 * i));
    return CL_OK;
}

cl_err cl_hpke_seal(cl_hpke_ctx *c, const void *aad, size_t aad_len, const void *pt, size_t n, struct cl_buf *ct)
{
    uint8_t nonce[12], *dst;
    size_t start = ct->len, total;
    cl_err rc = cl_hpke_nonce(c, nonce);
    if (rc == CL_OK)
        rc = cl_size_add(n, CL_AEAD_TAG_LEN, &total);
    if (rc == CL_OK)
        rc = cl_buf_extend(ct, total, &dst);
    if (rc == CL_OK)
        rc = cl_aead_seal(c->aead, nonce, aad, aad_len, pt, n, dst, dst + n);
    if (rc == CL_OK)
        c->seq++;
    else if (ct->len != start)
        ct->len = start;
    return rc;
}

cl_err cl_hpke_open(cl_hpke_ctx *c, const void *aad, size_t aad_len, const void *ct, size_t n, struct cl_buf *pt)
{
    uint8_t nonce[12], *dst;
    size_t start = pt->len;
    if (n < CL_AEAD_TAG_LEN)
        return cl_err_fail(CL_E_CRYPTO_AUTH, "HPKE ciphertext shorter than its tag");
    cl_err rc = cl_hpke_nonce(c, nonce);
    if (rc == CL_OK)
        rc = cl_buf_extend(pt, n - CL_AEAD_TAG_LEN, &dst);
    if (rc == CL_OK)
        rc = cl_aead_open(c->aead, nonce, aad, aad_len, ct, n - CL_AEAD_TAG_LEN,
                          (const uint8_t *)ct + n - CL_AEAD_TAG_LEN, dst);
    if (rc == CL_OK)
        c->seq++;
    else
        pt->len = start;
    return rc;
}

cl_err cl_hpke_export(const cl_hpke_ctx *c, const void *exp_ctx, size_t exp_len, uint8_t *out, size_t out_len)
{
    enum cl_hash_alg h = cl_hpke_kdf_hash(c->s.kdf);
    return cl_hpke_lexpand(h, c->suite_id, 10, c->exporter_secret, "sec", exp_ctx, exp_len, out, out_len);
}

void cl_hpke_debug_get(const cl_hpke_ctx *c, struct cl_hpke_debug *d)
{
    memcpy(d->shared_secret, c->shared_secret, 32);
    memcpy(d->key, c->key, 32);
    memcpy(d->base_nonce, c->base_nonce, 12);
    memcpy(d->exporter_secret, c->exporter_secret, sizeof(d->exporter_secret));
}
