/* Job and result objects: magic, public JSON header, AES-256-GCM ciphertext
 * whose additional data is everything before it (docs/formats/job.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/batch.h"
#include "cloister/encode.h"
#include "cloister/json_secure.h"
#include "cloister/secmem.h"

static const uint8_t cl_batch_magic_job[8] = {'C', 'L', 'J', 'O', 'B', 0, 1, 0};
static const uint8_t cl_batch_magic_res[8] = {'C', 'L', 'R', 'E', 'S', 0, 1, 0};

bool cl_batch_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > CL_BATCH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

bool cl_batch_text_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

cl_err cl_batch_derive(const uint8_t job_key[CL_BATCH_KEY_LEN], const char *job_id, enum cl_batch_kind k,
                       uint8_t out[CL_BATCH_KEY_LEN])
{
    const char *info = k == CL_BATCH_KIND_JOB ? "cloister job v1 request"
                       : k == CL_BATCH_KIND_RESULT ? "cloister job v1 result"
                                                   : NULL;
    if (!info || !cl_batch_id_valid(job_id))
        return cl_err_fail(CL_E_PROTO_JOB_MALFORMED, "key derivation: bad kind or job id");
    return cl_hkdf(CL_HASH_SHA256, job_id, strlen(job_id), job_key, CL_BATCH_KEY_LEN, info, strlen(info), out,
                   CL_BATCH_KEY_LEN);
}

/* magic | u32 hlen | header | nonce | ct | tag, sealed under key. */
static cl_err cl_batch_obj_seal(const uint8_t magic[8], const char *header, const uint8_t key[CL_BATCH_KEY_LEN],
                                const uint8_t *pt, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    cl_aead *a = NULL;
    uint8_t *dst = NULL;
    size_t hlen = strlen(header);
    size_t start = out->len;
    CL_ENSURE_D(hlen >= 2 && hlen <= CL_BATCH_HEADER_MAX, CL_E_PROTO_JOB_MALFORMED, "header of %zu bytes", hlen);
    CL_GUARD(cl_buf_append(out, magic, 8));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)hlen));
    CL_GUARD(cl_buf_append(out, header, hlen));
    size_t aadlen = out->len - start;
    uint8_t nonce[CL_GCM_NONCE_LEN];
    CL_GUARD(cl_random_bytes(nonce, sizeof(nonce)));
    CL_GUARD(cl_buf_append(out, nonce, sizeof(nonce)));
    CL_GUARD(cl_buf_extend(out, n + CL_AEAD_TAG_LEN, &dst));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, key, CL_BATCH_KEY_LEN, &a));
    CL_GUARD(cl_aead_seal(a, nonce, out->data + start, aadlen, pt, n, dst, dst + n));
out:
    cl_aead_free(a);
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

struct cl_batch_obj {
    const char *header; /* not NUL-terminated */
    size_t hlen;
    size_t aadlen;
    const uint8_t *nonce;
    const uint8_t *ct; /* ciphertext, then the tag */
    size_t ctlen;      /* without the tag */
};

static cl_err cl_batch_obj_split(const uint8_t *p, size_t n, const uint8_t magic[8], struct cl_batch_obj *o)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    const uint8_t *m = NULL, *h = NULL;
    uint32_t hlen = 0;
    cl_cursor_init(&c, p, n);
    CL_ENSURE_D(cl_cursor_bytes(&c, 8, &m) == CL_OK && memcmp(m, magic, 8) == 0, CL_E_PROTO_JOB_MALFORMED,
                "magic: not a Cloister %s object", magic[2] == 'J' ? "job" : "result");
    CL_ENSURE_D(cl_cursor_u32be(&c, &hlen) == CL_OK && hlen >= 2 && hlen <= CL_BATCH_HEADER_MAX,
                CL_E_PROTO_JOB_MALFORMED, "header length");
    CL_ENSURE_D(cl_cursor_bytes(&c, hlen, &h) == CL_OK, CL_E_PROTO_JOB_MALFORMED, "header truncated");
    o->header = (const char *)h;
    o->hlen = hlen;
    o->aadlen = c.off;
    CL_ENSURE_D(cl_cursor_bytes(&c, CL_GCM_NONCE_LEN, &o->nonce) == CL_OK, CL_E_PROTO_JOB_MALFORMED, "nonce truncated");
    CL_ENSURE_D(cl_cursor_left(&c) >= CL_AEAD_TAG_LEN, CL_E_PROTO_JOB_MALFORMED, "ciphertext truncated");
    o->ct = p + c.off;
    o->ctlen = cl_cursor_left(&c) - CL_AEAD_TAG_LEN;
out:
    return rc;
}

static cl_err cl_batch_obj_open(const uint8_t *p, const struct cl_batch_obj *o, const uint8_t key[CL_BATCH_KEY_LEN],
                                size_t max, struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    cl_aead *a = NULL;
    uint8_t *dst = NULL;
    size_t start = pt->len;
    CL_ENSURE_D(o->ctlen <= max, CL_E_PROTO_LIMIT, "plaintext of %zu bytes", o->ctlen);
    CL_GUARD(cl_buf_extend(pt, o->ctlen, &dst));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, key, CL_BATCH_KEY_LEN, &a));
    rc = cl_aead_open(a, o->nonce, p, o->aadlen, o->ct, o->ctlen, o->ct + o->ctlen, dst);
    if (rc != CL_OK)
        rc = cl_err_fail(CL_E_CRYPTO_AUTH, "the object does not open with this job's key (altered, or another key)");
out:
    cl_aead_free(a);
    if (rc != CL_OK) {
        if (pt->len > start)
            cl_wipe(pt->data + start, pt->len - start);
        pt->len = start;
    }
    return rc;
}

/* Strict header JSON: an object with exactly the members named in keys. */
static cl_err cl_batch_header_json(const struct cl_batch_obj *o, const char *const *keys, size_t nkeys, json_t **out)
{
    cl_err rc = CL_OK;
    json_error_t e;
    json_t *j = json_loadb(o->header, o->hlen, JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(j && json_is_object(j), CL_E_PROTO_JOB_MALFORMED, "header is not a JSON object");
    CL_ENSURE_D(json_object_size(j) == nkeys, CL_E_PROTO_JOB_MALFORMED, "header has %zu members, expected %zu",
                json_object_size(j), nkeys);
    for (size_t i = 0; i < nkeys; i++)
        CL_ENSURE_D(json_object_get(j, keys[i]), CL_E_PROTO_JOB_MALFORMED, "header member %s missing", keys[i]);
    json_t *v = json_object_get(j, "v");
    CL_ENSURE_D(json_is_integer(v) && json_integer_value(v) == 1, CL_E_PROTO_JOB_MALFORMED, "header version");
    *out = j;
    j = NULL;
out:
    json_decref(j);
    return rc;
}

static cl_err cl_batch_str(json_t *j, const char *k, char *dst, size_t cap)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return cl_err_fail(CL_E_PROTO_JOB_MALFORMED, "header member %s", k);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CL_OK;
}

cl_err cl_batch_job_seal(const struct cl_batch_job_header *h, const uint8_t job_key[CL_BATCH_KEY_LEN],
                         const uint8_t *pt, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf b64, hdr;
    uint8_t k[CL_BATCH_KEY_LEN];
    cl_buf_init(&b64, 2 * CL_BATCH_WRAPPED_MAX, CL_BUF_NONE);
    cl_buf_init(&hdr, CL_BATCH_HEADER_MAX + 1, CL_BUF_NONE);
    CL_ENSURE_D(cl_batch_id_valid(h->job_id), CL_E_PROTO_JOB_MALFORMED, "job id: 1..64 of A-Z a-z 0-9 . _ -");
    CL_ENSURE_D(cl_batch_text_valid(h->consumer, CL_BATCH_CONSUMER_MAX), CL_E_PROTO_JOB_MALFORMED,
                "consumer: 1..128 printable ASCII without quotes or backslashes");
    CL_ENSURE_D(cl_batch_text_valid(h->key_id, CL_BATCH_KEY_ID_MAX), CL_E_PROTO_JOB_MALFORMED, "key id");
    CL_ENSURE_D(h->wrapped_len >= 1 && h->wrapped_len <= CL_BATCH_WRAPPED_MAX, CL_E_PROTO_JOB_MALFORMED,
                "wrapped key of %zu bytes", h->wrapped_len);
    CL_ENSURE_D(n <= CL_BATCH_JOB_MAX_PLAINTEXT, CL_E_PROTO_LIMIT, "job of %zu bytes (max %zu)", n,
                CL_BATCH_JOB_MAX_PLAINTEXT);
    CL_GUARD(cl_b64_encode(h->wrapped, h->wrapped_len, CL_B64_STD, &b64));
    CL_GUARD(cl_buf_append_u8(&b64, 0));
    CL_GUARD(cl_buf_appendf(&hdr, "{\"v\":1,\"job_id\":\"%s\",\"consumer\":\"%s\",\"key_id\":\"%s\",\"wrapped_key\":\"%s\"}",
                            h->job_id, h->consumer, h->key_id, (const char *)b64.data));
    CL_GUARD(cl_buf_append_u8(&hdr, 0));
    CL_GUARD(cl_batch_derive(job_key, h->job_id, CL_BATCH_KIND_JOB, k));
    CL_GUARD(cl_batch_obj_seal(cl_batch_magic_job, (const char *)hdr.data, k, pt, n, out));
out:
    cl_wipe(k, sizeof(k));
    cl_buf_free(&b64);
    cl_buf_free(&hdr);
    return rc;
}

cl_err cl_batch_job_header_parse(const uint8_t *p, size_t n, struct cl_batch_job_header *h)
{
    static const char *const keys[] = {"v", "job_id", "consumer", "key_id", "wrapped_key"};
    cl_err rc = CL_OK;
    struct cl_batch_obj o;
    json_t *j = NULL;
    struct cl_buf w;
    cl_buf_init(&w, CL_BATCH_WRAPPED_MAX, CL_BUF_NONE);
    memset(h, 0, sizeof(*h));
    CL_GUARD(cl_batch_obj_split(p, n, cl_batch_magic_job, &o));
    CL_GUARD(cl_batch_header_json(&o, keys, 5, &j));
    CL_GUARD(cl_batch_str(j, "job_id", h->job_id, sizeof(h->job_id)));
    CL_GUARD(cl_batch_str(j, "consumer", h->consumer, sizeof(h->consumer)));
    CL_GUARD(cl_batch_str(j, "key_id", h->key_id, sizeof(h->key_id)));
    CL_ENSURE_D(cl_batch_id_valid(h->job_id), CL_E_PROTO_JOB_MALFORMED, "header member job_id");
    CL_ENSURE_D(cl_batch_text_valid(h->consumer, CL_BATCH_CONSUMER_MAX), CL_E_PROTO_JOB_MALFORMED,
                "header member consumer");
    CL_ENSURE_D(cl_batch_text_valid(h->key_id, CL_BATCH_KEY_ID_MAX), CL_E_PROTO_JOB_MALFORMED, "header member key_id");
    json_t *wk = json_object_get(j, "wrapped_key");
    CL_ENSURE_D(json_is_string(wk) && json_string_length(wk) <= 2 * CL_BATCH_WRAPPED_MAX &&
                    cl_b64_decode(json_string_value(wk), json_string_length(wk), CL_B64_STD, &w) == CL_OK &&
                    w.len >= 1,
                CL_E_PROTO_JOB_MALFORMED, "header member wrapped_key");
    memcpy(h->wrapped, w.data, w.len);
    h->wrapped_len = w.len;
out:
    json_decref(j);
    cl_buf_free(&w);
    return rc;
}

cl_err cl_batch_job_open(const uint8_t *p, size_t n, const uint8_t job_key[CL_BATCH_KEY_LEN], struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    struct cl_batch_obj o;
    uint8_t k[CL_BATCH_KEY_LEN];
    struct cl_batch_job_header *h = malloc(sizeof(*h));
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_batch_job_header_parse(p, n, h));
    CL_GUARD(cl_batch_obj_split(p, n, cl_batch_magic_job, &o));
    CL_GUARD(cl_batch_derive(job_key, h->job_id, CL_BATCH_KIND_JOB, k));
    CL_GUARD(cl_batch_obj_open(p, &o, k, CL_BATCH_JOB_MAX_PLAINTEXT, pt));
out:
    cl_wipe(k, sizeof(k));
    free(h);
    return rc;
}

cl_err cl_batch_result_seal(const char *job_id, bool ok, const uint8_t job_key[CL_BATCH_KEY_LEN], const uint8_t *pt,
                            size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char hdr[160];
    uint8_t k[CL_BATCH_KEY_LEN];
    CL_ENSURE_D(cl_batch_id_valid(job_id), CL_E_PROTO_JOB_MALFORMED, "job id");
    CL_ENSURE_D(n <= CL_BATCH_RESULT_MAX_PLAINTEXT, CL_E_PROTO_LIMIT, "result of %zu bytes", n);
    snprintf(hdr, sizeof(hdr), "{\"v\":1,\"job_id\":\"%s\",\"status\":\"%s\"}", job_id, ok ? "ok" : "error");
    CL_GUARD(cl_batch_derive(job_key, job_id, CL_BATCH_KIND_RESULT, k));
    CL_GUARD(cl_batch_obj_seal(cl_batch_magic_res, hdr, k, pt, n, out));
out:
    cl_wipe(k, sizeof(k));
    return rc;
}

cl_err cl_batch_result_open(const uint8_t *p, size_t n, const char *job_id, const uint8_t job_key[CL_BATCH_KEY_LEN],
                            bool *ok, struct cl_buf *pt)
{
    static const char *const keys[] = {"v", "job_id", "status"};
    cl_err rc = CL_OK;
    struct cl_batch_obj o;
    json_t *j = NULL;
    char id[CL_BATCH_ID_MAX + 1], st[8];
    uint8_t k[CL_BATCH_KEY_LEN];
    CL_GUARD(cl_batch_obj_split(p, n, cl_batch_magic_res, &o));
    CL_GUARD(cl_batch_header_json(&o, keys, 3, &j));
    CL_GUARD(cl_batch_str(j, "job_id", id, sizeof(id)));
    CL_GUARD(cl_batch_str(j, "status", st, sizeof(st)));
    CL_ENSURE_D(!strcmp(st, "ok") || !strcmp(st, "error"), CL_E_PROTO_JOB_MALFORMED, "header member status");
    CL_ENSURE_D(!strcmp(id, job_id), CL_E_PROTO_JOB_MISMATCH, "the result names job %s, not the one asked for",
                cl_batch_id_valid(id) ? id : "(invalid)");
    CL_GUARD(cl_batch_derive(job_key, job_id, CL_BATCH_KIND_RESULT, k));
    CL_GUARD(cl_batch_obj_open(p, &o, k, CL_BATCH_RESULT_MAX_PLAINTEXT, pt));
    *ok = !strcmp(st, "ok");
out:
    cl_wipe(k, sizeof(k));
    json_decref(j);
    return rc;
}
