/* The attestation user_data (cloister/attest_user_data.h). */
#include <string.h>

#include "cloister/attest.h"
#include "cloister/attest_user_data.h"
#include "cloister/cbor.h"

static bool cl_ud_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return n > 0;
}

cl_err cl_attest_user_data_encode(const struct cl_attest_user_data *u, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t start = out->len, arn = strlen(u->kms_key_arn), ep = strlen(u->kms_endpoint);
    CL_ENSURE_D(u->audit_key_len > 0 && u->audit_key_len <= CL_ATTEST_UD_MAX_AUDIT_KEY, CL_E_ATTEST_USER_DATA_MALFORMED,
                "audit_key of %zu bytes", u->audit_key_len);
    CL_ENSURE_D(arn <= CL_ATTEST_UD_MAX_KMS_TEXT && cl_ud_printable(u->kms_key_arn, arn), CL_E_ATTEST_USER_DATA_MALFORMED,
                "kms.key: 1..%d printable characters", CL_ATTEST_UD_MAX_KMS_TEXT);
    CL_ENSURE_D(ep <= CL_ATTEST_UD_MAX_KMS_TEXT && cl_ud_printable(u->kms_endpoint, ep), CL_E_ATTEST_USER_DATA_MALFORMED,
                "kms.endpoint: 1..%d printable characters", CL_ATTEST_UD_MAX_KMS_TEXT);
    /* canonical order: keys sorted by their encoded bytes (shorter first) */
    CL_GUARD(cl_cbor_put_map(out, 6));
    CL_GUARD(cl_cbor_put_text(out, "v"));
    CL_GUARD(cl_cbor_put_uint(out, CL_ATTEST_UD_VERSION));
    CL_GUARD(cl_cbor_put_text(out, "kms"));
    CL_GUARD(cl_cbor_put_map(out, 3));
    CL_GUARD(cl_cbor_put_text(out, "ca"));
    CL_GUARD(cl_cbor_put_bytes(out, u->kms_ca_sha256, u->has_kms_ca ? 32 : 0));
    CL_GUARD(cl_cbor_put_text(out, "key"));
    CL_GUARD(cl_cbor_put_text(out, u->kms_key_arn));
    CL_GUARD(cl_cbor_put_text(out, "endpoint"));
    CL_GUARD(cl_cbor_put_text(out, u->kms_endpoint));
    CL_GUARD(cl_cbor_put_text(out, "audit_key"));
    CL_GUARD(cl_cbor_put_bytes(out, u->audit_key, u->audit_key_len));
    CL_GUARD(cl_cbor_put_text(out, "model_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, u->model_sha256, 32));
    CL_GUARD(cl_cbor_put_text(out, "config_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, u->config_sha256, 32));
    CL_GUARD(cl_cbor_put_text(out, "mmproj_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, u->mmproj_sha256, u->has_mmproj ? 32 : 0));
    CL_ENSURE_D(out->len - start <= CL_ATTEST_MAX_DOC_FIELD, CL_E_ATTEST_USER_DATA_MALFORMED, "%zu bytes, over %d",
                out->len - start, CL_ATTEST_MAX_DOC_FIELD);
out:
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

static cl_err cl_ud_bytes(const struct cl_cbor_item *map, const char *key, size_t min, size_t max, uint8_t *dst,
                          size_t *len)
{
    const struct cl_cbor_item *it = cl_cbor_map_get_text(map, key);
    if (!it)
        return cl_err_fail(CL_E_ATTEST_USER_DATA_MALFORMED, "%s: missing", key);
    if (it->type != CL_CBOR_BYTES)
        return cl_err_fail(CL_E_ATTEST_USER_DATA_MALFORMED, "%s: expected a byte string", key);
    if (it->len < min || it->len > max)
        return cl_err_fail(CL_E_ATTEST_USER_DATA_MALFORMED, "%s: %zu bytes, expected %zu-%zu", key, it->len, min, max);
    memcpy(dst, it->p, it->len);
    if (len)
        *len = it->len;
    return CL_OK;
}

static cl_err cl_ud_text(const struct cl_cbor_item *map, const char *key, char *dst, size_t cap)
{
    const struct cl_cbor_item *it = cl_cbor_map_get_text(map, key);
    if (!it)
        return cl_err_fail(CL_E_ATTEST_USER_DATA_MALFORMED, "kms.%s: missing", key);
    if (it->type != CL_CBOR_TEXT || it->len >= cap || !cl_ud_printable((const char *)it->p, it->len))
        return cl_err_fail(CL_E_ATTEST_USER_DATA_MALFORMED, "kms.%s: expected 1..%zu printable characters", key, cap - 1);
    memcpy(dst, it->p, it->len);
    dst[it->len] = 0;
    return CL_OK;
}

cl_err cl_attest_user_data_parse(const uint8_t *p, size_t n, struct cl_attest_user_data *out)
{
    cl_err rc = CL_OK;
    cl_cbor_doc *doc = NULL;
    struct cl_buf re;
    struct cl_attest_user_data u;
    size_t ca_len = 0, mp_len = 0;
    memset(&u, 0, sizeof(u));
    cl_buf_init(&re, CL_ATTEST_MAX_DOC_FIELD + 64, CL_BUF_NONE);
    struct cl_cursor c;
    CL_ENSURE_D(n > 0, CL_E_ATTEST_USER_DATA_MALFORMED, "absent");
    CL_ENSURE_D(n <= CL_ATTEST_MAX_DOC_FIELD, CL_E_ATTEST_USER_DATA_MALFORMED, "%zu bytes", n);
    cl_cursor_init(&c, p, n);
    struct cl_cbor_limits lim = cl_cbor_default_limits;
    lim.max_depth = 3;
    lim.max_items = 26;
    lim.max_map_pairs = 8;
    if (cl_cbor_decode(&c, &lim, &doc) != CL_OK)
        CL_FAIL(CL_E_ATTEST_USER_DATA_MALFORMED, "not a CBOR item");
    const struct cl_cbor_item *m = cl_cbor_root(doc);
    CL_ENSURE_D(m->type == CL_CBOR_MAP, CL_E_ATTEST_USER_DATA_MALFORMED, "expected a map");
    const struct cl_cbor_item *v = cl_cbor_map_get_text(m, "v");
    CL_ENSURE_D(v && v->type == CL_CBOR_UINT, CL_E_ATTEST_USER_DATA_MALFORMED, "v: missing");
    CL_ENSURE_D(v->u == CL_ATTEST_UD_VERSION, CL_E_ATTEST_USER_DATA_MALFORMED,
                "v: version %llu, expected %d (an enclave older than this client)", (unsigned long long)v->u,
                CL_ATTEST_UD_VERSION);
    CL_ENSURE_D(m->count == 6, CL_E_ATTEST_USER_DATA_MALFORMED, "%zu keys, expected 6", m->count);
    CL_GUARD(cl_ud_bytes(m, "model_sha256", 32, 32, u.model_sha256, NULL));
    CL_GUARD(cl_ud_bytes(m, "config_sha256", 32, 32, u.config_sha256, NULL));
    CL_GUARD(cl_ud_bytes(m, "audit_key", 1, CL_ATTEST_UD_MAX_AUDIT_KEY, u.audit_key, &u.audit_key_len));
    CL_GUARD(cl_ud_bytes(m, "mmproj_sha256", 0, 32, u.mmproj_sha256, &mp_len));
    CL_ENSURE_D(mp_len == 0 || mp_len == 32, CL_E_ATTEST_USER_DATA_MALFORMED, "mmproj_sha256: %zu bytes, expected 0 or 32",
                mp_len);
    u.has_mmproj = mp_len == 32;
    const struct cl_cbor_item *k = cl_cbor_map_get_text(m, "kms");
    CL_ENSURE_D(k && k->type == CL_CBOR_MAP && k->count == 3, CL_E_ATTEST_USER_DATA_MALFORMED,
                "kms: expected a map of ca, key, endpoint");
    CL_GUARD(cl_ud_text(k, "key", u.kms_key_arn, sizeof(u.kms_key_arn)));
    CL_GUARD(cl_ud_text(k, "endpoint", u.kms_endpoint, sizeof(u.kms_endpoint)));
    CL_GUARD(cl_ud_bytes(k, "ca", 0, 32, u.kms_ca_sha256, &ca_len));
    CL_ENSURE_D(ca_len == 0 || ca_len == 32, CL_E_ATTEST_USER_DATA_MALFORMED, "kms.ca: %zu bytes, expected 0 or 32", ca_len);
    u.has_kms_ca = ca_len == 32;
    /* One encoding only, so the bytes the enclave bound are the ones checked. */
    CL_GUARD(cl_cbor_encode_item(&re, m));
    CL_ENSURE_D(re.len == n && !memcmp(re.data, p, n), CL_E_ATTEST_USER_DATA_MALFORMED, "not canonical CBOR");
    *out = u;
out:
    cl_buf_free(&re);
    cl_cbor_free(doc);
    return rc;
}
