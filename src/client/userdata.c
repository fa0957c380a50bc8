/* The attestation document's user_data (docs/protocol.md section 2). */
#include <string.h>

#include "client_internal.h"
#include "cloister/cbor.h"

cl_err cl_client_user_data_encode(const struct cl_client_user_data *u, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(u->audit_key_len > 0 && u->audit_key_len <= CL_CLIENT_MAX_AUDIT_KEY, CL_E_NET_CLIENT_USER_DATA,
                "audit_key of %zu bytes", u->audit_key_len);
    /* Canonical order: shorter keys first, then bytewise. */
    CL_GUARD(cl_cbor_put_map(out, 4));
    CL_GUARD(cl_cbor_put_text(out, "v"));
    CL_GUARD(cl_cbor_put_uint(out, 1));
    CL_GUARD(cl_cbor_put_text(out, "audit_key"));
    CL_GUARD(cl_cbor_put_bytes(out, u->audit_key, u->audit_key_len));
    CL_GUARD(cl_cbor_put_text(out, "model_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, u->model_sha256, CL_CLIENT_DIGEST_LEN));
    CL_GUARD(cl_cbor_put_text(out, "config_sha256"));
    CL_GUARD(cl_cbor_put_bytes(out, u->config_sha256, CL_CLIENT_DIGEST_LEN));
out:
    return rc;
}

static cl_err cl_client_ud_bytes(const struct cl_cbor_item *map, const char *key, size_t min, size_t max,
                                 uint8_t *dst, size_t *len)
{
    const struct cl_cbor_item *it = cl_cbor_map_get_text(map, key);
    if (!it)
        return cl_err_fail(CL_E_NET_CLIENT_USER_DATA, "%s: missing", key);
    if (it->type != CL_CBOR_BYTES)
        return cl_err_fail(CL_E_NET_CLIENT_USER_DATA, "%s: expected a byte string", key);
    if (it->len < min || it->len > max)
        return cl_err_fail(CL_E_NET_CLIENT_USER_DATA, "%s: %zu bytes, expected %zu-%zu", key, it->len, min, max);
    memcpy(dst, it->p, it->len);
    if (len)
        *len = it->len;
    return CL_OK;
}

cl_err cl_client_user_data_parse(const uint8_t *p, size_t n, struct cl_client_user_data *out)
{
    cl_err rc = CL_OK;
    cl_cbor_doc *doc = NULL;
    struct cl_buf re;
    struct cl_client_user_data u;
    memset(&u, 0, sizeof(u));
    cl_buf_init(&re, CL_ATTEST_MAX_DOC_FIELD + 64, CL_BUF_NONE);
    struct cl_cursor c;
    CL_ENSURE_D(n > 0, CL_E_NET_CLIENT_USER_DATA, "absent");
    CL_ENSURE_D(n <= CL_ATTEST_MAX_DOC_FIELD, CL_E_NET_CLIENT_USER_DATA, "%zu bytes", n);
    cl_cursor_init(&c, p, n);
    struct cl_cbor_limits lim = cl_cbor_default_limits;
    lim.max_depth = 2;
    lim.max_items = 16;
    lim.max_map_pairs = 8;
    if (cl_cbor_decode(&c, &lim, &doc) != CL_OK)
        CL_FAIL(CL_E_NET_CLIENT_USER_DATA, "not a CBOR item");
    const struct cl_cbor_item *m = cl_cbor_root(doc);
    CL_ENSURE_D(m->type == CL_CBOR_MAP, CL_E_NET_CLIENT_USER_DATA, "expected a map");
    CL_ENSURE_D(m->count == 4, CL_E_NET_CLIENT_USER_DATA, "%zu keys, expected 4", m->count);
    const struct cl_cbor_item *v = cl_cbor_map_get_text(m, "v");
    CL_ENSURE_D(v && v->type == CL_CBOR_UINT && v->u == 1, CL_E_NET_CLIENT_USER_DATA, "v: expected 1");
    CL_GUARD(cl_client_ud_bytes(m, "model_sha256", CL_CLIENT_DIGEST_LEN, CL_CLIENT_DIGEST_LEN, u.model_sha256,
                                NULL));
    CL_GUARD(cl_client_ud_bytes(m, "config_sha256", CL_CLIENT_DIGEST_LEN, CL_CLIENT_DIGEST_LEN, u.config_sha256,
                                NULL));
    CL_GUARD(cl_client_ud_bytes(m, "audit_key", 1, CL_CLIENT_MAX_AUDIT_KEY, u.audit_key, &u.audit_key_len));
    /* One encoding only, so the bytes the enclave bound are the ones checked. */
    CL_GUARD(cl_cbor_encode_item(&re, m));
    CL_ENSURE_D(re.len == n && !memcmp(re.data, p, n), CL_E_NET_CLIENT_USER_DATA, "not canonical CBOR");
    *out = u;
out:
    cl_buf_free(&re);
    cl_cbor_free(doc);
    return rc;
}
