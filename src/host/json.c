/* A small strict JSON reader for the two documents the host reads: the
 * credentials file and the enclave's STATUS_RES. It validates the whole text
 * and hands back top-level members; it never builds a tree. */
#include <string.h>

#include "cloister/encode.h"
#include "cloister/host.h"

#define CL_HJ_MAX_DEPTH 16
#define CL_HJ_MAX_KEY 64

enum cl_hj_kind { CL_HJ_NONE = 0, CL_HJ_STRING, CL_HJ_OTHER, CL_HJ_KIND_COUNT };

struct cl_hj {
    struct cl_cursor c;
    unsigned depth;
};

/* Called for each top-level member; key is decoded (truncated keys have
 * key_len > CL_HJ_MAX_KEY and never match), value spans [v, v + vn). */
typedef cl_err (*cl_hj_member_fn)(void *ctx, const char *key, size_t key_len, enum cl_hj_kind kind, const uint8_t *v,
                                  size_t vn);

static void cl_hj_ws(struct cl_hj *j)
{
    while (!cl_cursor_done(&j->c)) {
        uint8_t ch = j->c.p[j->c.off];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            break;
        j->c.off++;
    }
}

static cl_err cl_hj_peek(struct cl_hj *j, uint8_t *ch)
{
    if (cl_cursor_done(&j->c))
        return cl_err_fail(CL_E_NET_HOST_JSON, "unexpected end at offset %zu", j->c.off);
    *ch = j->c.p[j->c.off];
    return CL_OK;
}

static cl_err cl_hj_expect(struct cl_hj *j, uint8_t want)
{
    uint8_t ch = 0;
    cl_err rc = cl_cursor_u8(&j->c, &ch);
    if (rc != CL_OK || ch != want)
        return cl_err_fail(CL_E_NET_HOST_JSON, "expected '%c' at offset %zu", want, j->c.off);
    return CL_OK;
}

static cl_err cl_hj_hex4(struct cl_hj *j, unsigned *v)
{
    const uint8_t *p;
    cl_err rc = cl_cursor_bytes(&j->c, 4, &p);
    if (rc != CL_OK)
        return cl_err_fail(CL_E_NET_HOST_JSON, "truncated \\u escape at offset %zu", j->c.off);
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned d;
        if (p[i] >= '0' && p[i] <= '9')
            d = p[i] - '0';
        else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f')
            d = (p[i] | 0x20) - 'a' + 10u;
        else
            return cl_err_fail(CL_E_NET_HOST_JSON, "bad \\u escape at offset %zu", j->c.off);
        *v = *v << 4 | d;
    }
    return CL_OK;
}

static cl_err cl_hj_put(struct cl_buf *out, const uint8_t *p, size_t n)
{
    return out ? cl_buf_append(out, p, n) : CL_OK;
}

static cl_err cl_hj_put_cp(struct cl_buf *out, unsigned cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | cp >> 6);
        u[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xe0 | cp >> 12);
        u[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | cp >> 18);
        u[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return cl_hj_put(out, u, n);
}

/* One UTF-8 sequence starting with lead byte b (already consumed). */
static cl_err cl_hj_utf8(struct cl_hj *j, uint8_t b, struct cl_buf *out)
{
    size_t more;
    unsigned cp, min;
    if (b >= 0xc2 && b <= 0xdf) {
        more = 1, cp = b & 0x1fu, min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        more = 2, cp = b & 0x0fu, min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        more = 3, cp = b & 0x07u, min = 0x10000;
    } else {
        return cl_err_fail(CL_E_NET_HOST_JSON, "invalid UTF-8 at offset %zu", j->c.off);
    }
    const uint8_t *p;
    if (cl_cursor_bytes(&j->c, more, &p) != CL_OK)
        return cl_err_fail(CL_E_NET_HOST_JSON, "truncated UTF-8 at offset %zu", j->c.off);
    for (size_t i = 0; i < more; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return cl_err_fail(CL_E_NET_HOST_JSON, "invalid UTF-8 at offset %zu", j->c.off);
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return cl_err_fail(CL_E_NET_HOST_JSON, "non-canonical UTF-8 at offset %zu", j->c.off);
    cl_err rc = cl_hj_put(out, &b, 1);
    return rc == CL_OK ? cl_hj_put(out, p, more) : rc;
}

/* A string; decoded into out when out is not NULL. */
static cl_err cl_hj_string(struct cl_hj *j, struct cl_buf *out)
{
    cl_err rc = cl_hj_expect(j, '"');
    if (rc != CL_OK)
        return rc;
    for (;;) {
        uint8_t b;
        if (cl_cursor_u8(&j->c, &b) != CL_OK)
            return cl_err_fail(CL_E_NET_HOST_JSON, "unterminated string");
        if (b == '"')
            return CL_OK;
        if (b < 0x20)
            return cl_err_fail(CL_E_NET_HOST_JSON, "control character in string at offset %zu", j->c.off);
        if (b >= 0x80) {
            rc = cl_hj_utf8(j, b, out);
        } else if (b != '\\') {
            rc = cl_hj_put(out, &b, 1);
        } else {
            uint8_t e;
            if (cl_cursor_u8(&j->c, &e) != CL_OK)
                return cl_err_fail(CL_E_NET_HOST_JSON, "unterminated escape");
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *hit = e ? strchr(from, e) : NULL;
            if (hit) {
                uint8_t d = (uint8_t)to[hit - from];
                rc = cl_hj_put(out, &d, 1);
            } else if (e == 'u') {
                unsigned cp, lo;
                rc = cl_hj_hex4(j, &cp);
                if (rc != CL_OK)
                    return rc;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return cl_err_fail(CL_E_NET_HOST_JSON, "lone low surrogate at offset %zu", j->c.off);
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (cl_hj_expect(j, '\\') != CL_OK || cl_hj_expect(j, 'u') != CL_OK)
                        return cl_err_fail(CL_E_NET_HOST_JSON, "lone high surrogate at offset %zu", j->c.off);
                    rc = cl_hj_hex4(j, &lo);
                    if (rc != CL_OK)
                        return rc;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return cl_err_fail(CL_E_NET_HOST_JSON, "bad surrogate pair at offset %zu", j->c.off);
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                rc = cl_hj_put_cp(out, cp);
            } else {
                return cl_err_fail(CL_E_NET_HOST_JSON, "unknown escape at offset %zu", j->c.off);
            }
        }
        if (rc != CL_OK)
            return rc;
    }
}

static int cl_hj_digit(struct cl_hj *j)
{
    return !cl_cursor_done(&j->c) && j->c.p[j->c.off] >= '0' && j->c.p[j->c.off] <= '9';
}

static cl_err cl_hj_number(struct cl_hj *j)
{
    size_t start = j->c.off;
    if (j->c.p[j->c.off] == '-')
        j->c.off++;
    if (!cl_hj_digit(j))
        return cl_err_fail(CL_E_NET_HOST_JSON, "bad number at offset %zu", start);
    if (j->c.p[j->c.off] == '0') {
        j->c.off++;
    } else {
        while (cl_hj_digit(j))
            j->c.off++;
    }
    if (!cl_cursor_done(&j->c) && j->c.p[j->c.off] == '.') {
        j->c.off++;
        if (!cl_hj_digit(j))
            return cl_err_fail(CL_E_NET_HOST_JSON, "bad fraction at offset %zu", start);
        while (cl_hj_digit(j))
            j->c.off++;
    }
    if (!cl_cursor_done(&j->c) && (j->c.p[j->c.off] | 0x20) == 'e') {
        j->c.off++;
        if (!cl_cursor_done(&j->c) && (j->c.p[j->c.off] == '+' || j->c.p[j->c.off] == '-'))
            j->c.off++;
        if (!cl_hj_digit(j))
            return cl_err_fail(CL_E_NET_HOST_JSON, "bad exponent at offset %zu", start);
        while (cl_hj_digit(j))
            j->c.off++;
    }
    return CL_OK;
}

static cl_err cl_hj_literal(struct cl_hj *j, const char *lit)
{
    size_t n = strlen(lit);
    const uint8_t *p;
    if (cl_cursor_bytes(&j->c, n, &p) != CL_OK || memcmp(p, lit, n) != 0)
        return cl_err_fail(CL_E_NET_HOST_JSON, "bad literal at offset %zu", j->c.off);
    return CL_OK;
}

static cl_err cl_hj_value(struct cl_hj *j, enum cl_hj_kind *kind, cl_hj_member_fn fn, void *ctx);

/* Object or array; fn (when set) sees the members of this object only. */
static cl_err cl_hj_container(struct cl_hj *j, uint8_t open, cl_hj_member_fn fn, void *ctx)
{
    cl_err rc;
    uint8_t ch = 0, close = open == '{' ? '}' : ']';
    if (++j->depth > CL_HJ_MAX_DEPTH)
        return cl_err_fail(CL_E_NET_HOST_JSON, "nesting deeper than %d", CL_HJ_MAX_DEPTH);
    j->c.off++;
    cl_hj_ws(j);
    if ((rc = cl_hj_peek(j, &ch)) != CL_OK)
        return rc;
    if (ch == close) {
        j->c.off++;
        j->depth--;
        return CL_OK;
    }
    for (;;) {
        char key[CL_HJ_MAX_KEY + 1];
        size_t key_len = 0;
        enum cl_hj_kind kind;
        if (open == '{') {
            uint8_t kb[CL_HJ_MAX_KEY + 1];
            struct cl_buf k = {kb, 0, sizeof(kb), sizeof(kb), CL_BUF_NONE};
            /* A fixed buffer: a longer key fails to append and simply never matches. */
            size_t start = j->c.off;
            rc = cl_hj_string(j, &k);
            if (rc == CL_E_CORE_LIMIT) {
                j->c.off = start;
                rc = cl_hj_string(j, NULL);
                key_len = CL_HJ_MAX_KEY + 1;
            } else {
                key_len = k.len;
            }
            if (rc != CL_OK)
                return rc;
            if (key_len <= CL_HJ_MAX_KEY)
                memcpy(key, kb, key_len);
            key[key_len <= CL_HJ_MAX_KEY ? key_len : 0] = 0;
            cl_hj_ws(j);
            if ((rc = cl_hj_expect(j, ':')) != CL_OK)
                return rc;
            cl_hj_ws(j);
        }
        size_t vstart = j->c.off;
        if ((rc = cl_hj_value(j, &kind, NULL, NULL)) != CL_OK)
            return rc;
        if (fn && open == '{' && (rc = fn(ctx, key, key_len, kind, j->c.p + vstart, j->c.off - vstart)) != CL_OK)
            return rc;
        cl_hj_ws(j);
        if ((rc = cl_hj_peek(j, &ch)) != CL_OK)
            return rc;
        j->c.off++;
        if (ch == close)
            break;
        if (ch != ',')
            return cl_err_fail(CL_E_NET_HOST_JSON, "expected ',' at offset %zu", j->c.off - 1);
        cl_hj_ws(j);
    }
    j->depth--;
    return CL_OK;
}

static cl_err cl_hj_value(struct cl_hj *j, enum cl_hj_kind *kind, cl_hj_member_fn fn, void *ctx)
{
    uint8_t ch = 0;
    cl_err rc = cl_hj_peek(j, &ch);
    if (rc != CL_OK)
        return rc;
    *kind = CL_HJ_OTHER;
    switch (ch) {
    case '{':
    case '[': return cl_hj_container(j, ch, fn, ctx);
    case '"': *kind = CL_HJ_STRING; return cl_hj_string(j, NULL);
    case 't': return cl_hj_literal(j, "true");
    case 'f': return cl_hj_literal(j, "false");
    case 'n': return cl_hj_literal(j, "null");
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9'))
            return cl_hj_number(j);
        return cl_err_fail(CL_E_NET_HOST_JSON, "unexpected character at offset %zu", j->c.off);
    }
}

static cl_err cl_hj_walk(const void *p, size_t n, cl_hj_member_fn fn, void *ctx)
{
    struct cl_hj j = {{0}, 0};
    enum cl_hj_kind kind;
    uint8_t ch = 0;
    cl_cursor_init(&j.c, p, n);
    cl_hj_ws(&j);
    cl_err rc = cl_hj_peek(&j, &ch);
    if (rc != CL_OK)
        return rc;
    if (ch != '{')
        return cl_err_fail(CL_E_NET_HOST_JSON, "top level is not an object");
    if ((rc = cl_hj_value(&j, &kind, fn, ctx)) != CL_OK)
        return rc;
    cl_hj_ws(&j);
    if (!cl_cursor_done(&j.c))
        return cl_err_fail(CL_E_NET_HOST_JSON, "trailing bytes at offset %zu", j.c.off);
    return CL_OK;
}

struct cl_hj_find {
    const char *key;
    const uint8_t *v;
    size_t vn;
    enum cl_hj_kind kind;
    unsigned hits;
};

static cl_err cl_hj_find_cb(void *ctx, const char *key, size_t key_len, enum cl_hj_kind kind, const uint8_t *v,
                            size_t vn)
{
    struct cl_hj_find *f = ctx;
    if (key_len != strlen(f->key) || memcmp(key, f->key, key_len) != 0)
        return CL_OK;
    if (f->hits++)
        return cl_err_fail(CL_E_NET_HOST_JSON, "member %s repeats", f->key);
    f->v = v;
    f->vn = vn;
    f->kind = kind;
    return CL_OK;
}

cl_err cl_host_json_get_string(const void *p, size_t n, const char *key, struct cl_buf *out)
{
    struct cl_hj_find f = {key, NULL, 0, CL_HJ_NONE, 0};
    cl_err rc = cl_hj_walk(p, n, cl_hj_find_cb, &f);
    if (rc != CL_OK)
        return rc;
    if (!f.hits)
        return cl_err_fail(CL_E_CORE_NOT_FOUND, "member %s", key);
    if (f.kind != CL_HJ_STRING)
        return cl_err_fail(CL_E_NET_HOST_JSON, "member %s is not a string", key);
    struct cl_hj j = {{0}, 0};
    cl_cursor_init(&j.c, f.v, f.vn);
    size_t start = out->len;
    rc = cl_hj_string(&j, out);
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

struct cl_hj_keys {
    const char *const *allowed;
};

static cl_err cl_hj_keys_cb(void *ctx, const char *key, size_t key_len, enum cl_hj_kind kind, const uint8_t *v,
                            size_t vn)
{
    struct cl_hj_keys *k = ctx;
    (void)kind, (void)v, (void)vn;
    for (const char *const *a = k->allowed; *a; a++)
        if (key_len == strlen(*a) && memcmp(key, *a, key_len) == 0)
            return CL_OK;
    return cl_err_fail(CL_E_NET_HOST_JSON, "unknown member");
}

cl_err cl_host_json_check_keys(const void *p, size_t n, const char *const *allowed)
{
    struct cl_hj_keys k = {allowed};
    return cl_hj_walk(p, n, cl_hj_keys_cb, &k);
}

cl_err cl_host_json_put_string(struct cl_buf *out, const char *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    cl_err rc = cl_buf_append_u8(out, '"');
    for (size_t i = 0; rc == CL_OK && i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        if (b == '"' || b == '\\') {
            uint8_t e[2] = {'\\', b};
            rc = cl_buf_append(out, e, 2);
        } else if (b < 0x20 || b == 0x7f) {
            uint8_t e[6] = {'\\', 'u', '0', '0', (uint8_t)hexd[b >> 4], (uint8_t)hexd[b & 15]};
            rc = cl_buf_append(out, e, 6);
        } else {
            rc = cl_buf_append_u8(out, b);
        }
    }
    return rc == CL_OK ? cl_buf_append_u8(out, '"') : rc;
}

cl_err cl_host_nonce_parse(const char *hex, struct cl_buf *out)
{
    size_t n = hex ? strlen(hex) : 0;
    if (n < 2 * CL_HOST_NONCE_MIN || n > 2 * CL_HOST_NONCE_MAX)
        return cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "nonce must be %d..%d bytes of hex, got %zu digits",
                           CL_HOST_NONCE_MIN, CL_HOST_NONCE_MAX, n);
    return cl_hex_decode(hex, n, out);
}
