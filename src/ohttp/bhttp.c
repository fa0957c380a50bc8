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
    size_t at = c->off;
    if (cl_varint_get(c, &len) != CL_OK)
        return cl_err_fail(CL_E_CORE_TRUNCATED, "%s", what);
    if (len <= max && len > cl_cursor_left(c)) {
        c->off = at;
        return cl_err_fail(CL_E_CORE_TRUNCATED, "%s", what);
    }
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
            /* the section itself is complete, so a short field inside it is malformed */
            return rc == CL_E_CORE_TRUNCATED ? cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "field line is truncated") : rc;
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
    if (rc == CL_E_CORE_TRUNCATED)
        rc = cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "message is truncated");
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

/* ---- streaming ---- */

cl_err cl_bhttp_stream_head(uint16_t status, const struct cl_bhttp_field *fields, size_t n, struct cl_buf *out)
{
    size_t start = out->len;
    cl_err rc = status >= 200 && status <= 599 ? CL_OK : cl_err_fail(CL_E_CORE_INVALID_ARG, "status %u", status);
    if (rc == CL_OK)
        rc = cl_varint_put(out, 3);
    if (rc == CL_OK)
        rc = cl_varint_put(out, status);
    for (size_t i = 0; rc == CL_OK && i < n; i++) {
        if (!fields[i].name_len)
            rc = cl_err_fail(CL_E_CORE_INVALID_ARG, "empty field name");
        if (rc == CL_OK)
            rc = cl_bhttp_put_str(out, fields[i].name, fields[i].name_len);
        if (rc == CL_OK)
            rc = cl_bhttp_put_str(out, fields[i].value, fields[i].value_len);
    }
    if (rc == CL_OK)
        rc = cl_varint_put(out, 0);
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

cl_err cl_bhttp_stream_data(const void *p, size_t n, struct cl_buf *out)
{
    /* A zero-length chunk would terminate the content: send nothing instead. */
    return n ? cl_bhttp_put_str(out, p, n) : CL_OK;
}

cl_err cl_bhttp_stream_end(struct cl_buf *out)
{
    cl_err rc = cl_varint_put(out, 0); /* content terminator */
    return rc == CL_OK ? cl_varint_put(out, 0) : rc; /* empty trailer section */
}

void cl_bhttp_reader_init(struct cl_bhttp_reader *r, size_t max_content)
{
    memset(r, 0, sizeof(*r));
    r->state = CL_BHTTP_R_FRAMING;
    r->max_content = max_content;
    cl_buf_init(&r->pending, max_content + (1 << 20), CL_BUF_SECURE);
    cl_buf_init(&r->fields, 1 << 20, CL_BUF_NONE);
}

void cl_bhttp_reader_free(struct cl_bhttp_reader *r)
{
    cl_buf_free(&r->pending);
    cl_buf_free(&r->fields);
}

static cl_err cl_bhttp_keep_field(struct cl_bhttp_reader *r, const char *name, size_t nl, const char *val, size_t vl)
{
    for (size_t i = 0; i < nl; i++)
        if (name[i] >= 'A' && name[i] <= 'Z')
            return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "upper-case field name");
    if (!nl || memchr(name, 0, nl) || memchr(val, 0, vl))
        return cl_err_fail(CL_E_PROTO_BHTTP_MALFORMED, "field name empty or NUL in a field");
    cl_err rc = cl_buf_append(&r->fields, name, nl);
    if (rc == CL_OK)
        rc = cl_buf_append_u8(&r->fields, 0);
    if (rc == CL_OK)
        rc = cl_buf_append(&r->fields, val, vl);
    if (rc == CL_OK)
        rc = cl_buf_append_u8(&r->fields, 0);
    return rc;
}

/* One parsing step over c; CL_E_CORE_TRUNCATED means "need more bytes" and
 * leaves the cursor where the step began. */
static cl_err cl_bhttp_reader_step(struct cl_bhttp_reader *r, struct cl_cursor *c, struct cl_buf *content)
{
    uint64_t v;
    const char *a, *b;
    size_t al, bl, at = c->off;
    cl_err rc = CL_OK;
    switch (r->state) {
    case CL_BHTTP_R_FRAMING:
        CL_GUARD(cl_varint_get(c, &v));
        CL_ENSURE_D(v == 1 || v == 3, CL_E_PROTO_BHTTP_MALFORMED, "framing indicator %llu is not a response",
                    (unsigned long long)v);
        r->indefinite = v == 3;
        r->state = CL_BHTTP_R_STATUS;
        break;
    case CL_BHTTP_R_STATUS:
        CL_GUARD(cl_varint_get(c, &v));
        CL_ENSURE_D(v >= 200 && v <= 599, CL_E_PROTO_BHTTP_MALFORMED, "status %llu", (unsigned long long)v);
        r->status = (uint16_t)v;
        r->state = CL_BHTTP_R_FIELDS;
        break;
    case CL_BHTTP_R_FIELDS:
        if (r->indefinite) {
            CL_GUARD(cl_varint_get(c, &v));
            if (v == 0) {
                r->state = CL_BHTTP_R_CONTENT;
                break;
            }
            c->off = at;
            CL_GUARD(cl_bhttp_get_str(c, CL_BHTTP_MAX_TOKEN, "field name", &a, &al));
            CL_GUARD(cl_bhttp_get_str(c, (size_t)64 << 10, "field value", &b, &bl));
            CL_GUARD(cl_bhttp_keep_field(r, a, al, b, bl));
        } else {
            struct cl_bhttp_msg m;
            CL_GUARD(cl_bhttp_fields(c, &m)); /* whole section, or TRUNCATED */
            /* The content length must be here too before anything is kept,
             * so a retried step does not keep the fields twice. */
            CL_GUARD(cl_varint_get(c, &v));
            for (size_t i = 0; i < m.n_fields; i++)
                CL_GUARD(cl_bhttp_keep_field(r, m.fields[i].name, m.fields[i].name_len, m.fields[i].value,
                                             m.fields[i].value_len));
            r->state = CL_BHTTP_R_CONTENT;
            CL_ENSURE_D(v <= r->max_content, CL_E_PROTO_LIMIT, "content of %llu bytes", (unsigned long long)v);
            r->content_left = v;
            if (v == 0)
                r->state = CL_BHTTP_R_TRAILERS;
        }
        break;
    case CL_BHTTP_R_CONTENT:
        if (r->indefinite) {
            CL_GUARD(cl_varint_get(c, &v));
            if (v == 0) {
                r->state = CL_BHTTP_R_TRAILERS;
                break;
            }
            CL_ENSURE_D(v <= r->max_content - r->content_total, CL_E_PROTO_LIMIT, "content over %zu bytes",
                        r->max_content);
            if (cl_cursor_left(c) < v) {
                c->off = at;
                return CL_E_CORE_TRUNCATED;
            }
            CL_GUARD(cl_buf_append(content, c->p + c->off, (size_t)v));
            c->off += (size_t)v;
            r->content_total += (size_t)v;
        } else {
            size_t take = cl_cursor_left(c) < r->content_left ? cl_cursor_left(c) : (size_t)r->content_left;
            if (!take)
                return CL_E_CORE_TRUNCATED;
            CL_GUARD(cl_buf_append(content, c->p + c->off, take));
            c->off += take;
            r->content_left -= take;
            r->content_total += take;
            if (!r->content_left)
                r->state = CL_BHTTP_R_TRAILERS;
        }
        break;
    case CL_BHTTP_R_TRAILERS:
        CL_GUARD(cl_varint_get(c, &v));
        CL_ENSURE_D(v == 0, CL_E_PROTO_BHTTP_MALFORMED, "trailers are not accepted");
        r->state = CL_BHTTP_R_DONE;
        break;
    case CL_BHTTP_R_DONE: {
        uint8_t pad;
        CL_GUARD(cl_cursor_u8(c, &pad));
        CL_ENSURE_D(pad == 0, CL_E_PROTO_BHTTP_MALFORMED, "non-zero bytes after the message");
        break;
    }
    default:
        rc = CL_E_CORE_STATE;
    }
out:
    if (rc == CL_E_CORE_TRUNCATED)
        c->off = at;
    return rc;
}

cl_err cl_bhttp_reader_feed(struct cl_bhttp_reader *r, const uint8_t *p, size_t n, struct cl_buf *content)
{
    cl_err rc = cl_buf_append(&r->pending, p, n);
    if (rc != CL_OK)
        return rc;
    struct cl_cursor c;
    cl_cursor_init(&c, r->pending.data, r->pending.len);
    while (!cl_cursor_done(&c)) {
        rc = cl_bhttp_reader_step(r, &c, content);
        if (rc == CL_E_CORE_TRUNCATED) {
            rc = CL_OK;
            break;
        }
        if (rc != CL_OK)
            return rc;
    }
    if (c.off) {
        memmove(r->pending.data, r->pending.data + c.off, r->pending.len - c.off);
        r->pending.len -= c.off;
    }
    return CL_OK;
}

const char *cl_bhttp_reader_field(const struct cl_bhttp_reader *r, const char *name)
{
    const char *p = (const char *)r->fields.data, *end = p + r->fields.len;
    while (p && p < end) {
        const char *val = p + strlen(p) + 1;
        if (!strcasecmp(p, name))
            return val;
        p = val + strlen(val) + 1;
    }
    return NULL;
}
