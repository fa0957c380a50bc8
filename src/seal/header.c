#include <stdlib.h>
#include <string.h>

#include "cloister/crypto.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"
#include "seal_internal.h"

/* Parses a u16-length-prefixed string into a NUL-terminated field. Control
 * characters are refused so names can be printed safely. */
static cl_err cl_seal_get_str(struct cl_cursor *c, const char *field, char *dst, size_t max)
{
    uint16_t len;
    const uint8_t *p;
    if (cl_cursor_u16be(c, &len) != CL_OK || cl_cursor_bytes(c, len, &p) != CL_OK)
        return cl_err_fail(CL_E_SEAL_BAD_HEADER, "field %s is truncated", field);
    if (len > max)
        return cl_err_fail(CL_E_SEAL_BAD_HEADER, "field %s: length %u exceeds %zu", field, len, max);
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return cl_err_fail(CL_E_SEAL_BAD_HEADER, "field %s: control character at offset %zu", field, i);
    memcpy(dst, p, len);
    dst[len] = '\0';
    return CL_OK;
}

static cl_err cl_seal_put_str(struct cl_buf *b, const char *field, const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    if (len > max)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "%s: length %zu exceeds %zu", field, len, max);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return cl_err_fail(CL_E_CORE_INVALID_ARG, "%s contains a control character", field);
    cl_err rc = cl_buf_append_u16be(b, (uint16_t)len);
    return rc == CL_OK ? cl_buf_append(b, s, len) : rc;
}

cl_err cl_seal_header_len(const uint8_t *p, size_t n, uint32_t *len)
{
    struct cl_cursor c;
    uint16_t version, suite;
    uint32_t hl;
    const uint8_t *magic;
    cl_cursor_init(&c, p, n);
    if (cl_cursor_bytes(&c, CL_SEAL_MAGIC_LEN, &magic) != CL_OK)
        return cl_err_fail(CL_E_SEAL_TRUNCATED, "file is shorter than the %d-byte header prefix", CL_SEAL_FIXED_LEN);
    if (memcmp(magic, CL_SEAL_MAGIC, CL_SEAL_MAGIC_LEN) != 0)
        return cl_err_fail(CL_E_SEAL_BAD_MAGIC, "field magic");
    if (cl_cursor_u16be(&c, &version) != CL_OK || cl_cursor_u16be(&c, &suite) != CL_OK ||
        cl_cursor_u32be(&c, &hl) != CL_OK)
        return cl_err_fail(CL_E_SEAL_TRUNCATED, "file is shorter than the %d-byte header prefix", CL_SEAL_FIXED_LEN);
    if (version != CL_SEAL_VERSION)
        return cl_err_fail(CL_E_SEAL_BAD_VERSION, "field version: %u (this build reads %d)", version, CL_SEAL_VERSION);
    if (suite != CL_SEAL_SUITE_AES256GCM_HKDF_SHA256)
        return cl_err_fail(CL_E_SEAL_BAD_SUITE, "field suite: %u", suite);
    if (hl < CL_SEAL_FIXED_LEN + 64 || hl > CL_SEAL_MAX_HEADER)
        return cl_err_fail(CL_E_SEAL_BAD_HEADER, "field header_length: %u out of range", hl);
    *len = hl;
    return CL_OK;
}

cl_err cl_seal_chunk_count(uint64_t pt_size, uint32_t chunk_size, uint64_t *n)
{
    /* An empty model still has one (empty, final) chunk so truncation to the
     * bare header is detected. */
    uint64_t k = pt_size == 0 ? 1 : pt_size / chunk_size + (pt_size % chunk_size != 0);
    if (k > UINT32_MAX)
        return cl_err_fail(CL_E_SEAL_BAD_HEADER, "%llu chunks exceed the 2^32 limit", (unsigned long long)k);
    *n = k;
    return CL_OK;
}

cl_err cl_seal_sealed_size(uint32_t header_len, uint64_t n, uint32_t chunk_size, uint64_t *out)
{
    uint64_t chunks = 0, total;
    cl_err rc = cl_seal_chunk_count(n, chunk_size, &chunks);
    if (rc != CL_OK)
        return rc;
    if (__builtin_add_overflow(n, chunks * CL_SEAL_TAG_LEN, &total) ||
        __builtin_add_overflow(total, (uint64_t)header_len, &total))
        return CL_E_CORE_OVERFLOW;
    *out = total;
    return CL_OK;
}

static int cl_seal_ctx_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cl_seal_ctx_pair *)a)->key, ((const struct cl_seal_ctx_pair *)b)->key);
}

static cl_err cl_seal_ctx_put(struct cl_buf *b, const struct cl_seal_ctx_pair *ctx, size_t n)
{
    cl_err rc = CL_OK;
    struct cl_seal_ctx_pair *sorted = NULL;
    CL_ENSURE_D(n <= CL_SEAL_MAX_CTX, CL_E_CORE_INVALID_ARG, "encryption context has %zu pairs (max %d)", n,
                CL_SEAL_MAX_CTX);
    if (n) {
        sorted = malloc(n * sizeof(*sorted));
        CL_ENSURE(sorted, CL_E_CORE_NOMEM);
        memcpy(sorted, ctx, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), cl_seal_ctx_cmp);
    }
    CL_GUARD(cl_buf_append_u16be(b, (uint16_t)n));
    for (size_t i = 0; i < n; i++) {
        CL_ENSURE_D(i == 0 || strcmp(sorted[i - 1].key, sorted[i].key) != 0, CL_E_CORE_INVALID_ARG,
                    "duplicate encryption context key");
        CL_ENSURE_D(sorted[i].key[0], CL_E_CORE_INVALID_ARG, "empty encryption context key");
        CL_GUARD(cl_seal_put_str(b, "encryption context key", sorted[i].key, CL_SEAL_MAX_CTX_KEY));
        CL_GUARD(cl_seal_put_str(b, "encryption context value", sorted[i].value, CL_SEAL_MAX_CTX_VALUE));
    }
out:
    free(sorted);
    return rc;
}

cl_err cl_seal_ctx_encode(const struct cl_seal_ctx_pair *ctx, size_t n, struct cl_buf *out)
{
    return cl_seal_ctx_put(out, ctx, n);
}

cl_err cl_seal_header_build(const struct cl_seal_params *p, const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t salt[32],
                            const uint8_t digest[32], uint64_t pt_size, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_seal_keys *k = NULL;
    uint64_t chunks;
    uint32_t cs = p->chunk_size ? p->chunk_size : CL_SEAL_DEFAULT_CHUNK;
    size_t start = out->len, len_at;
    uint8_t mac[32];
    CL_ENSURE_D(cs >= CL_SEAL_MIN_CHUNK && cs <= CL_SEAL_MAX_CHUNK, CL_E_CORE_INVALID_ARG,
                "chunk size %u outside %u..%u", cs, CL_SEAL_MIN_CHUNK, CL_SEAL_MAX_CHUNK);
    CL_ENSURE_D(p->provider > CL_SEAL_PROVIDER_NONE && p->provider < CL_SEAL_PROVIDER_COUNT, CL_E_CORE_INVALID_ARG,
                "key provider");
    CL_ENSURE_D(p->wrapped_len > 0 && p->wrapped_len <= CL_SEAL_MAX_WRAPPED, CL_E_CORE_INVALID_ARG,
                "wrapped key of %zu bytes", p->wrapped_len);
    CL_GUARD(cl_seal_chunk_count(pt_size, cs, &chunks));
    CL_GUARD(cl_seal_keys_derive(dk, salt, &k));

    CL_GUARD(cl_buf_append(out, CL_SEAL_MAGIC, CL_SEAL_MAGIC_LEN));
    CL_GUARD(cl_buf_append_u16be(out, CL_SEAL_VERSION));
    CL_GUARD(cl_buf_append_u16be(out, CL_SEAL_SUITE_AES256GCM_HKDF_SHA256));
    len_at = out->len;
    CL_GUARD(cl_buf_append_u32be(out, 0)); /* patched below */
    CL_GUARD(cl_buf_append_u32be(out, cs));
    CL_GUARD(cl_buf_append_u64be(out, pt_size));
    CL_GUARD(cl_buf_append(out, digest, 32));
    CL_GUARD(cl_buf_append(out, salt, 32));
    CL_GUARD(cl_seal_put_str(out, "model name", p->name, CL_SEAL_MAX_NAME));
    CL_GUARD(cl_seal_put_str(out, "architecture", p->arch, CL_SEAL_MAX_ARCH));
    CL_GUARD(cl_buf_append_u64be(out, p->tensor_count));
    CL_GUARD(cl_buf_append_u32be(out, p->file_type));
    CL_GUARD(cl_seal_ctx_put(out, p->ctx, p->n_ctx));
    CL_GUARD(cl_buf_append_u8(out, (uint8_t)p->provider));
    CL_GUARD(cl_seal_put_str(out, "key id", p->key_id, CL_SEAL_MAX_KEY_ID));
    CL_GUARD(cl_buf_append_u16be(out, (uint16_t)p->wrapped_len));
    CL_GUARD(cl_buf_append(out, p->wrapped, p->wrapped_len));
    CL_GUARD(cl_buf_append(out, k->commitment, 32));
    size_t total = out->len - start + 32;
    CL_ENSURE_D(total <= CL_SEAL_MAX_HEADER, CL_E_CORE_LIMIT, "header of %zu bytes", total);
    for (int i = 0; i < 4; i++)
        out->data[len_at + (size_t)i] = (uint8_t)(total >> (24 - 8 * i));
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k->header, 32, out->data + start, out->len - start, mac));
    CL_GUARD(cl_buf_append(out, mac, 32));
out:
    if (rc != CL_OK)
        out->len = start;
    cl_seal_keys_free(k);
    return rc;
}

cl_err cl_seal_header_parse(const uint8_t *p, size_t n, struct cl_seal_header *h)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    uint32_t hl;
    uint16_t nctx, wl;
    uint8_t prov;
    const uint8_t *skip;
    memset(h, 0, sizeof(*h));
    CL_GUARD(cl_seal_header_len(p, n, &hl));
    CL_ENSURE_D(n >= hl, CL_E_SEAL_TRUNCATED, "header needs %u bytes, have %zu", hl, n);
    cl_cursor_init(&c, p, hl);
    CL_GUARD(cl_cursor_bytes(&c, CL_SEAL_MAGIC_LEN, &skip));
    CL_GUARD(cl_cursor_u16be(&c, &h->version));
    CL_GUARD(cl_cursor_u16be(&c, &h->suite));
    CL_GUARD(cl_cursor_u32be(&c, &h->header_len));
#define CL_SEAL_NEED(expr, field) CL_ENSURE_D((expr) == CL_OK, CL_E_SEAL_BAD_HEADER, "field %s is truncated", field)
    CL_SEAL_NEED(cl_cursor_u32be(&c, &h->chunk_size), "chunk_size");
    CL_ENSURE_D(h->chunk_size >= CL_SEAL_MIN_CHUNK && h->chunk_size <= CL_SEAL_MAX_CHUNK, CL_E_SEAL_BAD_HEADER,
                "field chunk_size: %u out of range", h->chunk_size);
    CL_SEAL_NEED(cl_cursor_u64be(&c, &h->plaintext_size), "plaintext_size");
    CL_ENSURE_D(h->plaintext_size < ((uint64_t)1 << 50), CL_E_SEAL_BAD_HEADER, "field plaintext_size: too large");
    CL_GUARD(cl_seal_chunk_count(h->plaintext_size, h->chunk_size, &h->n_chunks));
    CL_SEAL_NEED(cl_cursor_copy(&c, h->digest, 32), "digest");
    CL_SEAL_NEED(cl_cursor_copy(&c, h->salt, 32), "salt");
    CL_GUARD(cl_seal_get_str(&c, "name", h->name, CL_SEAL_MAX_NAME));
    CL_GUARD(cl_seal_get_str(&c, "architecture", h->arch, CL_SEAL_MAX_ARCH));
    CL_SEAL_NEED(cl_cursor_u64be(&c, &h->tensor_count), "tensor_count");
    CL_SEAL_NEED(cl_cursor_u32be(&c, &h->file_type), "file_type");
    CL_SEAL_NEED(cl_cursor_u16be(&c, &nctx), "encryption_context");
    CL_ENSURE_D(nctx <= CL_SEAL_MAX_CTX, CL_E_SEAL_BAD_HEADER, "field encryption_context: %u pairs (max %d)", nctx,
                CL_SEAL_MAX_CTX);
    for (size_t i = 0; i < nctx; i++) {
        CL_GUARD(cl_seal_get_str(&c, "encryption_context key", h->ctx[i].key, CL_SEAL_MAX_CTX_KEY));
        CL_GUARD(cl_seal_get_str(&c, "encryption_context value", h->ctx[i].value, CL_SEAL_MAX_CTX_VALUE));
        CL_ENSURE_D(h->ctx[i].key[0] && (i == 0 || strcmp(h->ctx[i - 1].key, h->ctx[i].key) < 0),
                    CL_E_SEAL_BAD_HEADER, "field encryption_context: keys empty, unsorted or duplicated");
    }
    h->n_ctx = nctx;
    CL_SEAL_NEED(cl_cursor_u8(&c, &prov), "key_provider");
    CL_ENSURE_D(prov > CL_SEAL_PROVIDER_NONE && prov < CL_SEAL_PROVIDER_COUNT, CL_E_SEAL_BAD_HEADER,
                "field key_provider: %u", prov);
    h->provider = (enum cl_seal_provider)prov;
    CL_GUARD(cl_seal_get_str(&c, "key_id", h->key_id, CL_SEAL_MAX_KEY_ID));
    CL_SEAL_NEED(cl_cursor_u16be(&c, &wl), "wrapped_key");
    CL_ENSURE_D(wl > 0 && wl <= CL_SEAL_MAX_WRAPPED, CL_E_SEAL_BAD_HEADER, "field wrapped_key: %u bytes", wl);
    CL_SEAL_NEED(cl_cursor_copy(&c, h->wrapped, wl), "wrapped_key");
    h->wrapped_len = wl;
    CL_SEAL_NEED(cl_cursor_copy(&c, h->commitment, 32), "key_commitment");
    CL_SEAL_NEED(cl_cursor_copy(&c, h->mac, 32), "header_mac");
#undef CL_SEAL_NEED
    CL_ENSURE_D(cl_cursor_done(&c), CL_E_SEAL_BAD_HEADER, "header_length says %u but fields end at %zu", hl, c.off);
    CL_GUARD(cl_sha256(p, hl, h->header_hash));
out:
    if (rc == CL_E_CORE_TRUNCATED)
        rc = cl_err_fail(CL_E_SEAL_BAD_HEADER, "header prefix");
    return rc;
}

cl_err cl_seal_header_verify(const struct cl_seal_header *h, const uint8_t *raw, const uint8_t dk[CL_SEAL_KEY_LEN])
{
    cl_err rc = CL_OK;
    struct cl_seal_keys *k = NULL;
    uint8_t mac[32];
    CL_GUARD(cl_seal_keys_derive(dk, h->salt, &k));
    CL_ENSURE_D(cl_ct_equal(k->commitment, h->commitment, 32), CL_E_SEAL_COMMITMENT,
                "field key_commitment (altered, or the data key belongs to another file)");
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k->header, 32, raw, h->header_len - 32, mac));
    CL_ENSURE_D(cl_ct_equal(mac, h->mac, 32), CL_E_SEAL_HEADER_AUTH, "field header_mac: a header field was altered");
out:
    cl_seal_keys_free(k);
    return rc;
}
