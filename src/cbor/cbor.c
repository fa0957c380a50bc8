#include "cloister/cbor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct cl_cbor_limits cl_cbor_default_limits = {
    .max_depth = 16, .max_items = 65536, .max_input = 1u << 20, .max_map_pairs = 1024};

/* Caller-supplied limits are clamped so recursion stays shallow. */
#define CL_CBOR_HARD_MAX_DEPTH 64
#define CL_CBOR_BLOCK_ITEMS 128

struct cl_cbor_block {
    struct cl_cbor_block *next;
    size_t used;
    struct cl_cbor_item items[CL_CBOR_BLOCK_ITEMS];
};

struct cl_cbor_blob {
    struct cl_cbor_blob *next;
    uint8_t data[];
};

struct cl_cbor_doc {
    struct cl_cbor_block *blocks;
    struct cl_cbor_blob *blobs;
    struct cl_cbor_item *root;
    size_t nitems;
};

struct cl_cbor_state {
    struct cl_cursor *c;
    struct cl_cbor_doc *doc;
    struct cl_cbor_limits lim;
};

void cl_cbor_free(cl_cbor_doc *d)
{
    if (!d)
        return;
    while (d->blocks) {
        struct cl_cbor_block *n = d->blocks->next;
        free(d->blocks);
        d->blocks = n;
    }
    while (d->blobs) {
        struct cl_cbor_blob *n = d->blobs->next;
        free(d->blobs);
        d->blobs = n;
    }
    free(d);
}

const struct cl_cbor_item *cl_cbor_root(const cl_cbor_doc *d) { return d ? d->root : NULL; }

static cl_err cl_cbor_new_item(struct cl_cbor_state *st, struct cl_cbor_item **out)
{
    struct cl_cbor_doc *d = st->doc;
    if (d->nitems >= st->lim.max_items)
        return cl_err_fail(CL_E_CBOR_TOO_MANY_ITEMS, "more than %zu items", st->lim.max_items);
    if (!d->blocks || d->blocks->used == CL_CBOR_BLOCK_ITEMS) {
        struct cl_cbor_block *b = calloc(1, sizeof(*b));
        if (!b)
            return CL_E_CORE_NOMEM;
        b->next = d->blocks;
        d->blocks = b;
    }
    *out = &d->blocks->items[d->blocks->used++];
    memset(*out, 0, sizeof(**out));
    d->nitems++;
    return CL_OK;
}

static cl_err cl_cbor_read_arg(struct cl_cursor *c, unsigned ai, uint64_t *v)
{
    cl_err rc = CL_OK;
    if (ai < 24) {
        *v = ai;
        return CL_OK;
    }
    switch (ai) {
    case 24: { uint8_t x; rc = cl_cursor_u8(c, &x); *v = x; break; }
    case 25: { uint16_t x; rc = cl_cursor_u16be(c, &x); *v = x; break; }
    case 26: { uint32_t x; rc = cl_cursor_u32be(c, &x); *v = x; break; }
    case 27: rc = cl_cursor_u64be(c, v); break;
    default: return cl_err_fail(CL_E_CBOR_MALFORMED, "reserved additional info %u at offset %zu", ai, c->off);
    }
    if (rc != CL_OK)
        return cl_err_fail(CL_E_CBOR_TRUNCATED, "argument at offset %zu", c->off);
    return CL_OK;
}

static bool cl_cbor_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((b & 0xe0) == 0xc0) { need = 1; cp = b & 0x1f; min = 0x80; }
        else if ((b & 0xf0) == 0xe0) { need = 2; cp = b & 0x0f; min = 0x800; }
        else if ((b & 0xf8) == 0xf0) { need = 3; cp = b & 0x07; min = 0x10000; }
        else return false;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static double cl_cbor_half_to_double(uint16_t h)
{
    int e = (h >> 10) & 0x1f;
    int m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static cl_err cl_cbor_decode_item(struct cl_cbor_state *st, size_t depth, struct cl_cbor_item **out, bool *is_break);

static cl_err cl_cbor_decode_children(struct cl_cbor_state *st, struct cl_cbor_item *it, size_t depth, uint64_t n,
                                      bool indef, bool is_map)
{
    cl_err rc = CL_OK;
    struct cl_cbor_item **tail = &it->child;
    size_t count = 0;
    for (;;) {
        if (!indef && count == n)
            break;
        if (is_map && count >= st->lim.max_map_pairs)
            CL_FAIL(CL_E_CBOR_TOO_MANY_ITEMS, "map with more than %zu pairs", st->lim.max_map_pairs);
        struct cl_cbor_item *k = NULL, *v = NULL;
        bool brk = false;
        CL_GUARD(cl_cbor_decode_item(st, depth + 1, &k, &brk));
        if (brk) {
            if (!indef)
                CL_FAIL(CL_E_CBOR_MALFORMED, "break inside definite-length item at offset %zu", st->c->off - 1);
            break;
        }
        *tail = k;
        tail = &k->next;
        if (is_map) {
            for (const struct cl_cbor_item *p = it->child; p != k; p = p->next->next)
                if (cl_cbor_equal(p, k))
                    CL_FAIL(CL_E_CBOR_DUPLICATE_KEY, "duplicate map key at offset %zu",
                            (size_t)(k->raw - st->c->p));
            CL_GUARD(cl_cbor_decode_item(st, depth + 1, &v, &brk));
            if (brk)
                CL_FAIL(CL_E_CBOR_MALFORMED, "break in place of a map value at offset %zu", st->c->off - 1);
            *tail = v;
            tail = &v->next;
        }
        count++;
    }
    it->count = count;
out:
    return rc;
}

static cl_err cl_cbor_decode_string(struct cl_cbor_state *st, struct cl_cbor_item *it, unsigned mt, unsigned ai,
                                    uint64_t arg, size_t depth)
{
    cl_err rc = CL_OK;
    if (ai != 31) {
        CL_ENSURE_D(arg <= cl_cursor_left(st->c), CL_E_CBOR_TRUNCATED, "string of %llu bytes at offset %zu",
                    (unsigned long long)arg, st->c->off);
        CL_GUARD(cl_cursor_bytes(st->c, (size_t)arg, &it->p));
        it->len = (size_t)arg;
        if (mt == 3 && !cl_cbor_utf8_valid(it->p, it->len))
            CL_FAIL(CL_E_CBOR_BAD_UTF8, "text string at offset %zu", (size_t)(it->raw - st->c->p));
        return CL_OK;
    }
    /* Chunks count as items and each is at least one byte, so the joined
     * length is bounded by the input size. */
    it->indefinite = true;
    struct cl_cbor_item **tail = &it->child;
    size_t total = 0;
    for (;;) {
        struct cl_cbor_item *ch = NULL;
        bool brk = false;
        size_t at = st->c->off;
        CL_GUARD(cl_cbor_decode_item(st, depth + 1, &ch, &brk));
        if (brk)
            break;
        CL_ENSURE_D(ch->type == it->type && !ch->indefinite, CL_E_CBOR_MALFORMED,
                    "indefinite string chunk of another type at offset %zu", at);
        CL_GUARD(cl_size_add(total, ch->len, &total));
        *tail = ch;
        tail = &ch->next;
        it->count++;
    }
    size_t sz;
    CL_GUARD(cl_size_add(sizeof(struct cl_cbor_blob), total + 1, &sz));
    struct cl_cbor_blob *blob = malloc(sz);
    CL_ENSURE(blob, CL_E_CORE_NOMEM);
    blob->next = st->doc->blobs;
    st->doc->blobs = blob;
    size_t off = 0;
    for (const struct cl_cbor_item *ch = it->child; ch; ch = ch->next) {
        if (ch->len)
            memcpy(blob->data + off, ch->p, ch->len);
        off += ch->len;
    }
    it->p = blob->data;
    it->len = total;
    /* Chunks were validated one by one; a code point split across chunks
     * is invalid by RFC 8949, which per-chunk validation already enforces. */
out:
    return rc;
}

static cl_err cl_cbor_decode_item(struct cl_cbor_state *st, size_t depth, struct cl_cbor_item **out, bool *is_break)
{
    cl_err rc = CL_OK;
    struct cl_cursor *c = st->c;
    size_t start = c->off;
    uint8_t ib;
    *is_break = false;
    if (depth > st->lim.max_depth)
        return cl_err_fail(CL_E_CBOR_DEPTH, "nesting deeper than %zu at offset %zu", st->lim.max_depth, start);
    if (cl_cursor_u8(c, &ib) != CL_OK)
        return cl_err_fail(CL_E_CBOR_TRUNCATED, "item expected at offset %zu", start);
    unsigned mt = ib >> 5, ai = ib & 31;
    if (ib == 0xff) {
        *is_break = true;
        return CL_OK;
    }
    struct cl_cbor_item *it = NULL;
    CL_GUARD(cl_cbor_new_item(st, &it));
    it->raw = c->p + start;
    uint64_t arg = 0;
    if (ai == 31) {
        if (mt == 0 || mt == 1 || mt == 6 || mt == 7)
            CL_FAIL(CL_E_CBOR_MALFORMED, "indefinite length for major type %u at offset %zu", mt, start);
    } else if (mt != 7) {
        CL_GUARD(cl_cbor_read_arg(c, ai, &arg));
    }
    switch (mt) {
    case 0: it->type = CL_CBOR_UINT; it->u = arg; break;
    case 1: it->type = CL_CBOR_NINT; it->u = arg; break;
    case 2:
    case 3:
        it->type = mt == 2 ? CL_CBOR_BYTES : CL_CBOR_TEXT;
        CL_GUARD(cl_cbor_decode_string(st, it, mt, ai, arg, depth));
        break;
    case 4:
    case 5:
        it->type = mt == 4 ? CL_CBOR_ARRAY : CL_CBOR_MAP;
        it->indefinite = ai == 31;
        /* Each element takes at least one byte: reject impossible counts
         * before looping on them. */
        if (!it->indefinite && (arg > cl_cursor_left(c) || (mt == 5 && arg > cl_cursor_left(c) / 2)))
            CL_FAIL(CL_E_CBOR_TRUNCATED, "%s of %llu entries at offset %zu", mt == 4 ? "array" : "map",
                    (unsigned long long)arg, start);
        CL_GUARD(cl_cbor_decode_children(st, it, depth, arg, it->indefinite, mt == 5));
        break;
    case 6: {
        it->type = CL_CBOR_TAG;
        it->u = arg;
        bool brk = false;
        CL_GUARD(cl_cbor_decode_item(st, depth + 1, &it->child, &brk));
        CL_ENSURE_D(!brk, CL_E_CBOR_MALFORMED, "break as tag content at offset %zu", start);
        it->count = 1;
        break;
    }
    default:
        if (ai < 24) {
            it->type = CL_CBOR_SIMPLE;
            it->u = ai;
        } else if (ai == 24) {
            uint8_t v;
            CL_ENSURE_D(cl_cursor_u8(c, &v) == CL_OK, CL_E_CBOR_TRUNCATED, "simple value at offset %zu", start);
            CL_ENSURE_D(v >= 32, CL_E_CBOR_MALFORMED, "two-byte simple value %u below 32 at offset %zu", v, start);
            it->type = CL_CBOR_SIMPLE;
            it->u = v;
        } else if (ai == 25) {
            uint16_t h;
            CL_ENSURE_D(cl_cursor_u16be(c, &h) == CL_OK, CL_E_CBOR_TRUNCATED, "half float at offset %zu", start);
            it->type = CL_CBOR_FLOAT;
            it->f = cl_cbor_half_to_double(h);
        } else if (ai == 26) {
            uint32_t w;
            float fl;
            CL_ENSURE_D(cl_cursor_u32be(c, &w) == CL_OK, CL_E_CBOR_TRUNCATED, "float at offset %zu", start);
            memcpy(&fl, &w, sizeof(fl));
            it->type = CL_CBOR_FLOAT;
            it->f = fl;
        } else if (ai == 27) {
            uint64_t w;
            CL_ENSURE_D(cl_cursor_u64be(c, &w) == CL_OK, CL_E_CBOR_TRUNCATED, "double at offset %zu", start);
            memcpy(&it->f, &w, sizeof(it->f));
            it->type = CL_CBOR_FLOAT;
        } else {
            CL_FAIL(CL_E_CBOR_MALFORMED, "reserved additional info %u at offset %zu", ai, start);
        }
        break;
    }
    it->raw_len = c->off - start;
    *out = it;
out:
    return rc;
}

static cl_err cl_cbor_decode_common(struct cl_cursor *c, const struct cl_cbor_limits *lim, bool whole,
                                    cl_cbor_doc **out)
{
    cl_err rc = CL_OK;
    struct cl_cbor_state st = {.c = c, .lim = lim ? *lim : cl_cbor_default_limits};
    struct cl_cursor saved = *c;
    if (st.lim.max_depth > CL_CBOR_HARD_MAX_DEPTH)
        st.lim.max_depth = CL_CBOR_HARD_MAX_DEPTH;
    CL_ENSURE_D(cl_cursor_left(c) <= st.lim.max_input, CL_E_CBOR_TOO_LARGE, "input of %zu bytes, limit %zu",
                cl_cursor_left(c), st.lim.max_input);
    st.doc = calloc(1, sizeof(*st.doc));
    CL_ENSURE(st.doc, CL_E_CORE_NOMEM);
    bool brk = false;
    CL_GUARD(cl_cbor_decode_item(&st, 1, &st.doc->root, &brk));
    CL_ENSURE_D(!brk, CL_E_CBOR_MALFORMED, "break outside an indefinite-length item at offset %zu", c->off - 1);
    if (whole)
        CL_ENSURE_D(cl_cursor_done(c), CL_E_CBOR_TRAILING, "%zu bytes after the item", cl_cursor_left(c));
    *out = st.doc;
    st.doc = NULL;
out:
    if (rc != CL_OK)
        *c = saved;
    cl_cbor_free(st.doc);
    return rc;
}

cl_err cl_cbor_decode(struct cl_cursor *c, const struct cl_cbor_limits *lim, cl_cbor_doc **out)
{
    return cl_cbor_decode_common(c, lim, true, out);
}

cl_err cl_cbor_decode_prefix(struct cl_cursor *c, const struct cl_cbor_limits *lim, cl_cbor_doc **out)
{
    return cl_cbor_decode_common(c, lim, false, out);
}

/* ---- lookups ---- */

bool cl_cbor_equal(const struct cl_cbor_item *a, const struct cl_cbor_item *b)
{
    if (!a || !b || a->type != b->type)
        return false;
    switch (a->type) {
    case CL_CBOR_UINT:
    case CL_CBOR_NINT:
    case CL_CBOR_SIMPLE: return a->u == b->u;
    case CL_CBOR_FLOAT: return a->f == b->f || (isnan(a->f) && isnan(b->f));
    case CL_CBOR_BYTES:
    case CL_CBOR_TEXT: return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
    case CL_CBOR_TAG: return a->u == b->u && cl_cbor_equal(a->child, b->child);
    case CL_CBOR_ARRAY: {
        if (a->count != b->count)
            return false;
        for (const struct cl_cbor_item *x = a->child, *y = b->child; x; x = x->next, y = y->next)
            if (!cl_cbor_equal(x, y))
                return false;
        return true;
    }
    case CL_CBOR_MAP: {
        /* Keys are unique within a decoded map, so matching each key of a
         * in b is enough. */
        if (a->count != b->count)
            return false;
        for (const struct cl_cbor_item *k = a->child; k; k = k->next->next) {
            const struct cl_cbor_item *m = b->child;
            while (m && !cl_cbor_equal(k, m))
                m = m->next->next;
            if (!m || !cl_cbor_equal(k->next, m->next))
                return false;
        }
        return true;
    }
    default: return false;
    }
}

const struct cl_cbor_item *cl_cbor_map_get_text(const struct cl_cbor_item *map, const char *key)
{
    if (!map || map->type != CL_CBOR_MAP)
        return NULL;
    for (const struct cl_cbor_item *k = map->child; k; k = k->next->next)
        if (cl_cbor_is_text(k, key))
            return k->next;
    return NULL;
}

const struct cl_cbor_item *cl_cbor_map_get_int(const struct cl_cbor_item *map, int64_t key)
{
    if (!map || map->type != CL_CBOR_MAP)
        return NULL;
    for (const struct cl_cbor_item *k = map->child; k; k = k->next->next) {
        int64_t v;
        if ((k->type == CL_CBOR_UINT || k->type == CL_CBOR_NINT) && cl_cbor_get_int(k, &v) == CL_OK && v == key)
            return k->next;
    }
    return NULL;
}

const struct cl_cbor_item *cl_cbor_array_at(const struct cl_cbor_item *arr, size_t i)
{
    if (!arr || arr->type != CL_CBOR_ARRAY || i >= arr->count)
        return NULL;
    const struct cl_cbor_item *e = arr->child;
    while (i--)
        e = e->next;
    return e;
}

cl_err cl_cbor_get_int(const struct cl_cbor_item *it, int64_t *out)
{
    if (!it || (it->type != CL_CBOR_UINT && it->type != CL_CBOR_NINT))
        return cl_err_fail(CL_E_CBOR_TYPE, "integer expected");
    if (it->u > (uint64_t)INT64_MAX)
        return cl_err_fail(CL_E_CBOR_RANGE, "integer outside the 64-bit signed range");
    *out = it->type == CL_CBOR_UINT ? (int64_t)it->u : -1 - (int64_t)it->u;
    return CL_OK;
}

bool cl_cbor_is_null(const struct cl_cbor_item *it) { return it && it->type == CL_CBOR_SIMPLE && it->u == CL_CBOR_NULL; }

bool cl_cbor_is_text(const struct cl_cbor_item *it, const char *s)
{
    size_t n = strlen(s);
    return it && it->type == CL_CBOR_TEXT && it->len == n && (n == 0 || memcmp(it->p, s, n) == 0);
}

/* ---- encoder ---- */

static cl_err cl_cbor_put_head(struct cl_buf *b, unsigned mt, uint64_t v)
{
    uint8_t h[9];
    size_t n;
    uint8_t m = (uint8_t)(mt << 5);
    if (v < 24) { h[0] = m | (uint8_t)v; n = 1; }
    else if (v <= 0xff) { h[0] = m | 24; h[1] = (uint8_t)v; n = 2; }
    else if (v <= 0xffff) { h[0] = m | 25; h[1] = (uint8_t)(v >> 8); h[2] = (uint8_t)v; n = 3; }
    else if (v <= 0xffffffffu) {
        h[0] = m | 26;
        for (int i = 0; i < 4; i++) h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
        n = 5;
    } else {
        h[0] = m | 27;
        for (int i = 0; i < 8; i++) h[1 + i] = (uint8_t)(v >> (56 - 8 * i));
        n = 9;
    }
    return cl_buf_append(b, h, n);
}

cl_err cl_cbor_put_uint(struct cl_buf *b, uint64_t v) { return cl_cbor_put_head(b, 0, v); }
cl_err cl_cbor_put_nint(struct cl_buf *b, uint64_t u) { return cl_cbor_put_head(b, 1, u); }
cl_err cl_cbor_put_int(struct cl_buf *b, int64_t v)
{
    return v >= 0 ? cl_cbor_put_head(b, 0, (uint64_t)v) : cl_cbor_put_head(b, 1, (uint64_t)(-1 - v));
}

cl_err cl_cbor_put_bytes(struct cl_buf *b, const void *p, size_t n)
{
    cl_err rc = cl_cbor_put_head(b, 2, n);
    return rc == CL_OK && n ? cl_buf_append(b, p, n) : rc;
}

cl_err cl_cbor_put_textn(struct cl_buf *b, const char *s, size_t n)
{
    cl_err rc = cl_cbor_put_head(b, 3, n);
    return rc == CL_OK && n ? cl_buf_append(b, s, n) : rc;
}

cl_err cl_cbor_put_text(struct cl_buf *b, const char *s) { return cl_cbor_put_textn(b, s, strlen(s)); }
cl_err cl_cbor_put_array(struct cl_buf *b, uint64_t count) { return cl_cbor_put_head(b, 4, count); }
cl_err cl_cbor_put_map(struct cl_buf *b, uint64_t pairs) { return cl_cbor_put_head(b, 5, pairs); }
cl_err cl_cbor_put_tag(struct cl_buf *b, uint64_t tag) { return cl_cbor_put_head(b, 6, tag); }
cl_err cl_cbor_put_bool(struct cl_buf *b, bool v) { return cl_buf_append_u8(b, v ? 0xf5 : 0xf4); }
cl_err cl_cbor_put_null(struct cl_buf *b) { return cl_buf_append_u8(b, 0xf6); }

cl_err cl_cbor_put_simple(struct cl_buf *b, uint8_t v)
{
    if (v >= 24 && v < 32)
        return cl_err_fail(CL_E_CBOR_RANGE, "simple value %u is reserved", v);
    if (v < 24)
        return cl_buf_append_u8(b, (uint8_t)(0xe0 | v));
    uint8_t h[2] = {0xf8, v};
    return cl_buf_append(b, h, 2);
}

/* Half-precision bits for v when the conversion is exact. */
static bool cl_cbor_double_to_half(double v, uint16_t *out)
{
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (isnan(v)) { *out = 0x7e00; return true; }
    if (isinf(v)) { *out = sign | 0x7c00; return true; }
    if (a == 0) { *out = sign; return true; }
    int e;
    (void)frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int ex = e - 1;     /* a = 1.x * 2^ex */
    if (ex >= -14 && ex <= 15) {
        double frac = (ldexp(a, -ex) - 1.0) * 1024.0;
        if (frac != floor(frac))
            return false;
        *out = (uint16_t)(sign | (uint16_t)((ex + 15) << 10) | (uint16_t)frac);
        return true;
    }
    if (ex < -14) {
        double m = ldexp(a, 24);
        if (m != floor(m) || m >= 1024)
            return false;
        *out = (uint16_t)(sign | (uint16_t)m);
        return true;
    }
    return false;
}

cl_err cl_cbor_put_float(struct cl_buf *b, double v)
{
    uint16_t h;
    uint8_t o[9];
    if (cl_cbor_double_to_half(v, &h)) {
        o[0] = 0xf9; o[1] = (uint8_t)(h >> 8); o[2] = (uint8_t)h;
        return cl_buf_append(b, o, 3);
    }
    float f = (float)v;
    if ((double)f == v) {
        uint32_t w;
        memcpy(&w, &f, sizeof(w));
        o[0] = 0xfa;
        for (int i = 0; i < 4; i++) o[1 + i] = (uint8_t)(w >> (24 - 8 * i));
        return cl_buf_append(b, o, 5);
    }
    uint64_t w;
    memcpy(&w, &v, sizeof(w));
    o[0] = 0xfb;
    for (int i = 0; i < 8; i++) o[1 + i] = (uint8_t)(w >> (56 - 8 * i));
    return cl_buf_append(b, o, 9);
}

struct cl_cbor_kv {
    struct cl_buf k, v;
};

static int cl_cbor_kv_cmp(const void *pa, const void *pb)
{
    const struct cl_cbor_kv *a = pa, *b = pb;
    size_t n = a->k.len < b->k.len ? a->k.len : b->k.len;
    int c = memcmp(a->k.data, b->k.data, n);
    if (c)
        return c;
    return a->k.len < b->k.len ? -1 : a->k.len > b->k.len;
}

cl_err cl_cbor_encode_item(struct cl_buf *b, const struct cl_cbor_item *it)
{
    cl_err rc = CL_OK;
    struct cl_cbor_kv *kv = NULL;
    size_t nkv = 0;
    switch (it->type) {
    case CL_CBOR_UINT: return cl_cbor_put_head(b, 0, it->u);
    case CL_CBOR_NINT: return cl_cbor_put_head(b, 1, it->u);
    case CL_CBOR_BYTES: return cl_cbor_put_bytes(b, it->p, it->len);
    case CL_CBOR_TEXT: return cl_cbor_put_textn(b, (const char *)it->p, it->len);
    case CL_CBOR_SIMPLE: return cl_cbor_put_simple(b, (uint8_t)it->u);
    case CL_CBOR_FLOAT: return cl_cbor_put_float(b, it->f);
    case CL_CBOR_TAG:
        CL_GUARD(cl_cbor_put_head(b, 6, it->u));
        return cl_cbor_encode_item(b, it->child);
    case CL_CBOR_ARRAY:
        CL_GUARD(cl_cbor_put_head(b, 4, it->count));
        for (const struct cl_cbor_item *e = it->child; e; e = e->next)
            CL_GUARD(cl_cbor_encode_item(b, e));
        break;
    case CL_CBOR_MAP: {
        CL_GUARD(cl_cbor_put_head(b, 5, it->count));
        if (!it->count)
            break;
        kv = calloc(it->count, sizeof(*kv));
        CL_ENSURE(kv, CL_E_CORE_NOMEM);
        for (const struct cl_cbor_item *k = it->child; k; k = k->next->next, nkv++) {
            cl_buf_init(&kv[nkv].k, b->max, CL_BUF_NONE);
            cl_buf_init(&kv[nkv].v, b->max, CL_BUF_NONE);
            CL_GUARD(cl_cbor_encode_item(&kv[nkv].k, k));
            CL_GUARD(cl_cbor_encode_item(&kv[nkv].v, k->next));
        }
        qsort(kv, nkv, sizeof(*kv), cl_cbor_kv_cmp);
        for (size_t i = 0; i < nkv; i++) {
            CL_GUARD(cl_buf_append(b, kv[i].k.data, kv[i].k.len));
            CL_GUARD(cl_buf_append(b, kv[i].v.data, kv[i].v.len));
        }
        break;
    }
    default: return cl_err_fail(CL_E_CBOR_UNSUPPORTED, "item type %d", (int)it->type);
    }
out:
    if (kv) {
        for (size_t i = 0; i < it->count; i++) {
            cl_buf_free(&kv[i].k);
            cl_buf_free(&kv[i].v);
        }
        free(kv);
    }
    return rc;
}

/* ---- diagnostic notation ---- */

static cl_err cl_cbor_diag_float(double f, struct cl_buf *out)
{
    if (isnan(f))
        return cl_buf_append_str(out, "NaN");
    if (isinf(f))
        return cl_buf_append_str(out, f < 0 ? "-Infinity" : "Infinity");
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof(s), "%.*g", prec, f);
        if (strtod(s, NULL) == f)
            break;
    }
    if (!strpbrk(s, ".eEn"))
        strncat(s, ".0", sizeof(s) - strlen(s) - 1);
    return cl_buf_append_str(out, s);
}

cl_err cl_cbor_diag(const struct cl_cbor_item *it, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    switch (it->type) {
    case CL_CBOR_UINT: return cl_buf_appendf(out, "%llu", (unsigned long long)it->u);
    case CL_CBOR_NINT:
        if (it->u == UINT64_MAX)
            return cl_buf_append_str(out, "-18446744073709551616");
        return cl_buf_appendf(out, "-%llu", (unsigned long long)it->u + 1);
    case CL_CBOR_BYTES:
    case CL_CBOR_TEXT:
        if (it->indefinite) {
            CL_GUARD(cl_buf_append_str(out, "(_ "));
            for (const struct cl_cbor_item *ch = it->child; ch; ch = ch->next) {
                CL_GUARD(cl_cbor_diag(ch, out));
                if (ch->next)
                    CL_GUARD(cl_buf_append_str(out, ", "));
            }
            return cl_buf_append_str(out, ")");
        }
        if (it->type == CL_CBOR_BYTES) {
            CL_GUARD(cl_buf_append_str(out, "h'"));
            for (size_t i = 0; i < it->len; i++)
                CL_GUARD(cl_buf_appendf(out, "%02x", it->p[i]));
            return cl_buf_append_str(out, "'");
        }
        CL_GUARD(cl_buf_append_str(out, "\""));
        for (size_t i = 0; i < it->len; i++) {
            uint8_t ch = it->p[i];
            if (ch == '"' || ch == '\\')
                CL_GUARD(cl_buf_appendf(out, "\\%c", ch));
            else if (ch < 0x20)
                CL_GUARD(cl_buf_appendf(out, "\\u%04x", ch));
            else
                CL_GUARD(cl_buf_append_u8(out, ch));
        }
        return cl_buf_append_str(out, "\"");
    case CL_CBOR_ARRAY:
    case CL_CBOR_MAP: {
        bool map = it->type == CL_CBOR_MAP;
        CL_GUARD(cl_buf_append_str(out, map ? "{" : "["));
        if (it->indefinite)
            CL_GUARD(cl_buf_append_str(out, "_ "));
        for (const struct cl_cbor_item *e = it->child; e; e = e->next) {
            CL_GUARD(cl_cbor_diag(e, out));
            if (map) {
                e = e->next;
                CL_GUARD(cl_buf_append_str(out, ": "));
                CL_GUARD(cl_cbor_diag(e, out));
            }
            if (e->next)
                CL_GUARD(cl_buf_append_str(out, ", "));
        }
        return cl_buf_append_str(out, map ? "}" : "]");
    }
    case CL_CBOR_TAG:
        CL_GUARD(cl_buf_appendf(out, "%llu(", (unsigned long long)it->u));
        CL_GUARD(cl_cbor_diag(it->child, out));
        return cl_buf_append_str(out, ")");
    case CL_CBOR_SIMPLE:
        switch (it->u) {
        case CL_CBOR_FALSE: return cl_buf_append_str(out, "false");
        case CL_CBOR_TRUE: return cl_buf_append_str(out, "true");
        case CL_CBOR_NULL: return cl_buf_append_str(out, "null");
        case CL_CBOR_UNDEFINED: return cl_buf_append_str(out, "undefined");
        default: return cl_buf_appendf(out, "simple(%llu)", (unsigned long long)it->u);
        }
    case CL_CBOR_FLOAT: return cl_cbor_diag_float(it->f, out);
    default: return cl_err_fail(CL_E_CBOR_UNSUPPORTED, "item type %d", (int)it->type);
    }
out:
    return rc;
}
