/* RFC 9292 known-length messages. Framing indicator 0 = request, 1 = response;
 * informational (1xx) responses are refused, trailers must be empty, and
 * trailing zero bytes (padding) are accepted. */
#include <string.h>
#include <strings.h>

#include "cloister/bhttp.h"
#include "cloister/ohttp.h"

static cl_err cl_bhttp_put_str(struct cl_buf *b, const char *s, size_t n)
{
    cl_err rc = cl_varint_put(b, n);
    return rc == CL_OK ? cl_buf_append(b, s, n) : rc;
}

cl_err cl_bhttp_encode(const struct cl_bhttp_msg *m, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf fields;
    size_t start = out->len;
    cl_buf_init(&fields, 1 << 20, CL_BUF_NONE);
    CL_ENSURE(m->n_fields <= CL_BHTTP_MAX_FIELDS, CL_E_CORE_INVALID_ARG);
    CL_GUARD(cl_varint_put(out, m->is_response ? 1 : 0));
    if (m->is_response) {
        CL_ENSURE_D(m->status >= 200 && m->status <= 599, CL_E_CORE_INVALID_ARG, "status %u", m->status);
        CL_GUARD(cl_varint_put(out, m->status));
    } else {
        CL_GUARD(cl_bhttp_put_str(out, m->method, m->method_len));
        CL_GUARD(cl_bhttp_put_str(out, m->scheme, m->scheme_len));
        CL_GUARD(cl_bhttp_put_str(out, m->authority, m->authority_len));
        CL_GUARD(cl_bhttp_put_str(out, m->path, m->path_len));
    }
    for (size_t i = 0; i < m->n_fields; i++) {
        CL_GUARD(cl_bhttp_put_str(&fields, m->fields[i].name, m->fields[i].name_len));
        CL_GUARD(cl_bhttp_put_str(&fields, m->fields[i].value, m->fields[i].value_len));
    }
    CL_GUARD(cl_bhttp_put_str(out, (const char *)fields.data, fields.len));
    CL_GUARD(cl_bhttp_put_str(out, (const char *)m->content, m->content_len));
    CL_GUARD(cl_varint_put(out, 0)); /* no trailers */
out:
    if (rc != CL_OK)
        out->len = start;
    cl_buf_free(&fields);
    return rc;
}

static cl_err cl_bhttp_get_str(struct cl_cursor *c, size_t max, const char *what, const char **s, size_t *n)
{
    uint64_t len;
    const uint8_t *p;
    if (cl_varint_get(c, &len) != CL_OK || len > cl_cursor_left(c))
        return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "%s is truncated", what);
    if (len > max)
        return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "%s of %llu bytes (max %zu)", what, (unsigned long long)len, max);
    if (cl_cursor_bytes(c, (size_t)len, &p) != CL_OK)
        return CL_E_PROTO_BHTTP_MALFORMED;
    *s = (const char *)p;
    *n = (size_t)len;
    return CL_OK;
}

static cl_err cl_bhttp_fields(struct cl_cursor *c, struct cl_bhttp_msg *m)
{
    const char *sec;
    size_t seclen;
    cl_err rc = cl_bhttp_get_str(c, (size_t)1 << 20, "field section", &sec, &seclen);
    if (rc != CL_OK)
        return rc;
    struct cl_cursor f;
    cl_cursor_init(&f, sec, seclen);
    m->n_fields = 0;
    while (!cl_cursor_done(&f)) {
        if (m->n_fields == CL_BHTTP_MAX_FIELDS)
            return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "more than %d fields", CL_BHTTP_MAX_FIELDS);
        struct cl_bhttp_field *x = &m->fields[m->n_fields++];
        if ((rc = cl_bhttp_get_str(&f, CL_BHTTP_MAX_TOKEN, "field name", &x->name, &x->name_len)) != CL_OK ||
            (rc = cl_bhttp_get_str(&f, (size_t)64 << 10, "field value", &x->value, &x->value_len)) != CL_OK)
            return rc;
        if (!x->name_len)
            return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "empty field name");
        for (size_t i = 0; i < x->name_len; i++)
            if (x->name[i] >= 'A' && x->name[i] <= 'Z')
                return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "upper-case field name");
    }
    return CL_OK;
}

cl_err cl_bhttp_decode(const uint8_t *p, size_t n, size_t max_content, struct cl_bhttp_msg *m)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    uint64_t framing, v;
    const char *content;
    memset(m, 0, sizeof(*m));
    cl_cursor_init(&c, p, n);
    CL_ENSURE_D(cl_varint_get(&c, &framing) == CL_OK, CL_E_PROTO_BHTTP_MALFORMED, "empty message");
    CL_ENSURE_D(framing <= 1, CL_E_PROTO_BHTTP_MALFORMED, "framing indicator %llu (only known-length accepted)",
                (unsigned long long)framing);
    m->is_response = framing == 1;
    if (m->is_response) {
        CL_ENSURE_D(cl_varint_get(&c, &v) == CL_OK, CL_E_PROTO_BHTTP_MALFORMED, "status is truncated");
        CL_ENSURE_D(v >= 200 && v <= 599, CL_E_PROTO_BHTTP_MALFORMED, "status %llu", (unsigned long long)v);
        m->status = (uint16_t)v;
    } else {
        CL_GUARD(cl_bhttp_get_str(&c, 64, "method", &m->method, &m->method_len));
        CL_GUARD(cl_bhttp_get_str(&c, 64, "scheme", &m->scheme, &m->scheme_len));
        CL_GUARD(cl_bhttp_get_str(&c, 1024, "authority", &m->authority, &m->authority_len));
        CL_GUARD(cl_bhttp_get_str(&c, CL_BHTTP_MAX_TOKEN, "path", &m->path, &m->path_len));
        CL_ENSURE_D(m->method_len > 0, CL_E_PROTO_BHTTP_MALFORMED, "empty method");
    }
    CL_GUARD(cl_bhttp_fields(&c, m));
    /* A message may end after the header section (RFC 9292 section 3.8). */
    if (cl_cursor_done(&c))
        goto out;
    CL_GUARD(cl_bhttp_get_str(&c, max_content, "content", &content, &m->content_len));
    m->content = (const uint8_t *)content;
    if (cl_cursor_done(&c))
        goto out;
    CL_ENSURE_D(cl_varint_get(&c, &v) == CL_OK && v == 0, CL_E_PROTO_BHTTP_MALFORMED, "trailers are not accepted");
    while (!cl_cursor_done(&c)) {
        uint8_t pad;
        CL_GUARD(cl_cursor_u8(&c, &pad));
        CL_ENSURE_D(pad == 0, CL_E_PROTO_BHTTP_MALFORMED, "non-zero bytes after the message");
    }
out:
    return rc;
}

const struct cl_bhttp_field *cl_bhttp_find(const struct cl_bhttp_msg *m, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->n_fields; i++)
        if (m->fields[i].name_len == n && strncasecmp(m->fields[i].name, name, n) == 0)
            return &m->fields[i];
    return NULL;
}
