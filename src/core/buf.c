#include "cloister/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/secmem.h"

void cl_buf_init(struct cl_buf *b, size_t max, unsigned flags)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
    b->flags = flags;
}

static void cl_buf_release(uint8_t *p, size_t cap, unsigned flags)
{
    if (!p)
        return;
    if (flags & CL_BUF_SECURE) {
        cl_secmem_free(p);
    } else {
        cl_wipe(p, cap);
        free(p);
    }
}

void cl_buf_free(struct cl_buf *b)
{
    cl_buf_release(b->data, b->cap, b->flags);
    b->data = NULL;
    b->len = b->cap = 0;
}

void cl_buf_reset(struct cl_buf *b)
{
    if (b->data)
        cl_wipe(b->data, b->cap);
    b->len = 0;
}

cl_err cl_buf_reserve(struct cl_buf *b, size_t extra)
{
    size_t need;
    if (cl_size_add(b->len, extra, &need) != CL_OK || need > b->max)
        return cl_err_fail(CL_E_CORE_LIMIT, "buffer of at most %zu bytes", b->max);
    if (need <= b->cap)
        return CL_OK;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > b->max / 2 ? b->max : ncap * 2;
    uint8_t *p = NULL;
    if (b->flags & CL_BUF_SECURE) {
        void *q = NULL;
        cl_err rc = cl_secmem_alloc(ncap, &q);
        if (rc != CL_OK)
            return rc;
        p = q;
    } else {
        p = malloc(ncap);
        if (!p)
            return CL_E_CORE_NOMEM;
    }
    if (b->len)
        memcpy(p, b->data, b->len);
    cl_buf_release(b->data, b->cap, b->flags);
    b->data = p;
    b->cap = ncap;
    return CL_OK;
}

cl_err cl_buf_extend(struct cl_buf *b, size_t n, uint8_t **out)
{
    cl_err rc = cl_buf_reserve(b, n);
    if (rc != CL_OK)
        return rc;
    *out = b->data + b->len;
    b->len += n;
    return CL_OK;
}

cl_err cl_buf_append(struct cl_buf *b, const void *p, size_t n)
{
    uint8_t *dst;
    if (n == 0)
        return CL_OK;
    cl_err rc = cl_buf_extend(b, n, &dst);
    if (rc == CL_OK)
        memcpy(dst, p, n);
    return rc;
}

cl_err cl_buf_append_u8(struct cl_buf *b, uint8_t v) { return cl_buf_append(b, &v, 1); }

cl_err cl_buf_append_u16be(struct cl_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return cl_buf_append(b, x, 2);
}

cl_err cl_buf_append_u32be(struct cl_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return cl_buf_append(b, x, 4);
}

cl_err cl_buf_append_u64be(struct cl_buf *b, uint64_t v)
{
    cl_err rc = cl_buf_append_u32be(b, (uint32_t)(v >> 32));
    return rc == CL_OK ? cl_buf_append_u32be(b, (uint32_t)v) : rc;
}

cl_err cl_buf_append_str(struct cl_buf *b, const char *s) { return cl_buf_append(b, s, strlen(s)); }

cl_err cl_buf_appendf(struct cl_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cl_err rc = CL_E_CORE_INVALID_ARG;
    if (n >= 0) {
        /* +1 for vsnprintf's NUL, which is then dropped from len. */
        rc = cl_buf_reserve(b, (size_t)n + 1);
        if (rc == CL_OK) {
            vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap2);
            b->len += (size_t)n;
        }
    }
    va_end(ap2);
    return rc;
}

void cl_cursor_init(struct cl_cursor *c, const void *p, size_t len)
{
    c->p = p;
    c->len = p ? len : 0;
    c->off = 0;
}

cl_err cl_cursor_bytes(struct cl_cursor *c, size_t n, const uint8_t **p)
{
    if (n > cl_cursor_left(c))
        return CL_E_CORE_TRUNCATED;
    *p = c->p + c->off;
    c->off += n;
    return CL_OK;
}

cl_err cl_cursor_copy(struct cl_cursor *c, void *dst, size_t n)
{
    const uint8_t *p;
    cl_err rc = cl_cursor_bytes(c, n, &p);
    if (rc == CL_OK && n)
        memcpy(dst, p, n);
    return rc;
}

cl_err cl_cursor_skip(struct cl_cursor *c, size_t n)
{
    const uint8_t *p;
    return cl_cursor_bytes(c, n, &p);
}

static cl_err cl_cursor_uint(struct cl_cursor *c, unsigned n, int big, uint64_t *v)
{
    const uint8_t *p;
    cl_err rc = cl_cursor_bytes(c, n, &p);
    if (rc != CL_OK)
        return rc;
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++)
        x |= (uint64_t)p[big ? i : n - 1 - i] << (8 * (n - 1 - i));
    *v = x;
    return CL_OK;
}

cl_err cl_cursor_u8(struct cl_cursor *c, uint8_t *v)
{
    uint64_t x;
    cl_err rc = cl_cursor_uint(c, 1, 1, &x);
    if (rc == CL_OK)
        *v = (uint8_t)x;
    return rc;
}

#define CL_CURSOR_UINT(name, type, n, big)                 \
    cl_err name(struct cl_cursor *c, type *v)              \
    {                                                      \
        uint64_t x;                                        \
        cl_err rc = cl_cursor_uint(c, n, big, &x);         \
        if (rc == CL_OK)                                   \
            *v = (type)x;                                  \
        return rc;                                         \
    }
CL_CURSOR_UINT(cl_cursor_u16be, uint16_t, 2, 1)
CL_CURSOR_UINT(cl_cursor_u32be, uint32_t, 4, 1)
CL_CURSOR_UINT(cl_cursor_u64be, uint64_t, 8, 1)
CL_CURSOR_UINT(cl_cursor_u16le, uint16_t, 2, 0)
CL_CURSOR_UINT(cl_cursor_u32le, uint32_t, 4, 0)
CL_CURSOR_UINT(cl_cursor_u64le, uint64_t, 8, 0)

cl_err cl_cursor_expect_end(const struct cl_cursor *c)
{
    return cl_cursor_done(c) ? CL_OK : cl_err_fail(CL_E_CORE_TRAILING, "%zu trailing bytes", cl_cursor_left(c));
}

cl_err cl_size_add(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return CL_E_CORE_OVERFLOW;
    *out = r;
    return CL_OK;
}

cl_err cl_size_mul(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return CL_E_CORE_OVERFLOW;
    *out = r;
    return CL_OK;
}
