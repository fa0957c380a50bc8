/* GGUF reader: one validating pass over the buffer through a cursor. */
#include "cloister/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/buf.h"
#include "cloister/file.h"

struct cl_gguf {
    const uint8_t *buf;
    size_t len;
    void *map; /* set when the buffer is our own mmap */
    uint8_t *wbuf; /* the buffer, when the owner let it be rewritten (cl_gguf_set_writable) */
    size_t map_len;
    uint32_t version;
    uint32_t alignment;
    size_t data_off;
    struct cl_gguf_kv *kv;
    size_t n_kv;
    struct cl_gguf_tensor *t;
    size_t n_t;
    const struct cl_gguf_kv **kv_sorted; /* by key, for bsearch */
    const struct cl_gguf_tensor **t_sorted;
    struct cl_buf names; /* NUL-terminated keys and tensor names */
};

/* Smallest encodings: a kv is key length (8) + >= 1 key byte + type (4) + a
 * 1-byte value; a tensor info is name length (8) + >= 1 byte + n_dims (4) +
 * one dim (8) + type (4) + offset (8). Used to bound counts before allocating. */
#define CL_GGUF_MIN_KV_BYTES 14u
#define CL_GGUF_MIN_TENSOR_BYTES 33u

static const char *const cl_gguf_type_names[CL_GGUF_TYPE_COUNT] = {
    [CL_GGUF_UINT8] = "u8",   [CL_GGUF_INT8] = "i8",       [CL_GGUF_UINT16] = "u16",
    [CL_GGUF_INT16] = "i16",  [CL_GGUF_UINT32] = "u32",    [CL_GGUF_INT32] = "i32",
    [CL_GGUF_FLOAT32] = "f32", [CL_GGUF_BOOL] = "bool",    [CL_GGUF_STRING] = "string",
    [CL_GGUF_ARRAY] = "array", [CL_GGUF_UINT64] = "u64",   [CL_GGUF_INT64] = "i64",
    [CL_GGUF_FLOAT64] = "f64",
};

const char *cl_gguf_type_name(enum cl_gguf_type t)
{
    return (unsigned)t < CL_GGUF_TYPE_COUNT ? cl_gguf_type_names[t] : "invalid";
}

size_t cl_gguf_scalar_size(uint32_t t)
{
    switch (t) {
    case CL_GGUF_UINT8: case CL_GGUF_INT8: case CL_GGUF_BOOL: return 1;
    case CL_GGUF_UINT16: case CL_GGUF_INT16: return 2;
    case CL_GGUF_UINT32: case CL_GGUF_INT32: case CL_GGUF_FLOAT32: return 4;
    case CL_GGUF_UINT64: case CL_GGUF_INT64: case CL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Copies a name into dst for an error detail: printable ASCII only, bounded. */
static const char *cl_gguf_safe(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
    }
    dst[n] = 0;
    return dst;
}

static cl_err cl_gguf_read_str(struct cl_cursor *c, size_t cap, const char **p, size_t *len)
{
    uint64_t n;
    const uint8_t *q;
    if (cl_cursor_u64le(c, &n) != CL_OK)
        return CL_E_INFER_GGUF_TRUNCATED;
    if (n > cl_cursor_left(c))
        return CL_E_INFER_GGUF_TRUNCATED;
    if (n > cap)
        return CL_E_INFER_GGUF_LIMIT;
    if (cl_cursor_bytes(c, (size_t)n, &q) != CL_OK)
        return CL_E_INFER_GGUF_TRUNCATED;
    *p = (const char *)q;
    *len = (size_t)n;
    return CL_OK;
}

/* Validates and skips one value of scalar or string type. */
static cl_err cl_gguf_skip_value(struct cl_cursor *c, uint32_t type, const uint8_t **data, size_t *nbytes)
{
    if (type == CL_GGUF_STRING) {
        const char *p;
        size_t len;
        cl_err e = cl_gguf_read_str(c, SIZE_MAX, &p, &len);
        *data = (const uint8_t *)p;
        *nbytes = len;
        return e;
    }
    size_t sz = cl_gguf_scalar_size(type);
    if (!sz)
        return CL_E_INFER_GGUF_BAD_TYPE;
    if (cl_cursor_bytes(c, sz, data) != CL_OK)
        return CL_E_INFER_GGUF_TRUNCATED;
    if (type == CL_GGUF_BOOL && **data > 1)
        return CL_E_INFER_GGUF_BAD_VALUE;
    *nbytes = sz;
    return CL_OK;
}

static int cl_gguf_kv_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct cl_gguf_kv *const *)a)->key, (*(const struct cl_gguf_kv *const *)b)->key);
}

static int cl_gguf_t_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct cl_gguf_tensor *const *)a)->name, (*(const struct cl_gguf_tensor *const *)b)->name);
}

static int cl_gguf_off_cmp(const void *a, const void *b)
{
    uint64_t x = (*(const struct cl_gguf_tensor *const *)a)->offset;
    uint64_t y = (*(const struct cl_gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

cl_err cl_gguf_tensor_size(uint32_t t, uint32_t n_dims, const int64_t *ne, size_t *nbytes)
{
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(t);
    if (!ti)
        return cl_err_fail(CL_E_INFER_GGUF_TENSOR_TYPE, "type id %u", t);
    if (n_dims < 1 || n_dims > CL_GGUF_MAX_DIMS)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_DIMS, "n_dims %u not in 1..4", n_dims);
    size_t elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0)
            return cl_err_fail(CL_E_INFER_GGUF_BAD_DIMS, "dimension %u is %lld", d, (long long)ne[d]);
        if ((uint64_t)ne[d] > SIZE_MAX || cl_size_mul(elems, (size_t)ne[d], &elems) != CL_OK ||
            elems > (size_t)INT64_MAX)
            return cl_err_fail(CL_E_INFER_GGUF_OVERFLOW, "element count at dimension %u", d);
    }
    if (ne[0] % ti->block_elems)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_DIMS, "ne[0]=%lld not a multiple of the %s block size %u",
                           (long long)ne[0], ti->name, ti->block_elems);
    size_t bytes;
    if (cl_size_mul(elems / ti->block_elems, ti->block_bytes, &bytes) != CL_OK)
        return cl_err_fail(CL_E_INFER_GGUF_OVERFLOW, "tensor byte size");
    *nbytes = bytes;
    return CL_OK;
}

void cl_gguf_free(cl_gguf *g)
{
    if (!g)
        return;
    free(g->kv);
    free(g->t);
    free(g->kv_sorted);
    free(g->t_sorted);
    cl_buf_free(&g->names);
    if (g->map)
        munmap(g->map, g->map_len);
    free(g);
}

static cl_err cl_gguf_parse_kvs(cl_gguf *g, struct cl_cursor *c, size_t *key_off)
{
    cl_err rc = CL_OK;
    char nm[72];
    for (size_t i = 0; i < g->n_kv; i++) {
        struct cl_gguf_kv *kv = &g->kv[i];
        const char *key;
        size_t klen;
        uint32_t type;
        cl_err e = cl_gguf_read_str(c, CL_GGUF_MAX_KEY, &key, &klen);
        CL_ENSURE_D(e == CL_OK, e, "kv #%zu: key length", i);
        CL_ENSURE_D(klen > 0, CL_E_INFER_GGUF_BAD_KEY, "kv #%zu: empty key", i);
        for (size_t j = 0; j < klen; j++)
            CL_ENSURE_D((unsigned char)key[j] >= 0x20 && (unsigned char)key[j] < 0x7f, CL_E_INFER_GGUF_BAD_KEY,
                        "kv #%zu: key is not printable ASCII", i);
        key_off[i] = g->names.len;
        CL_GUARD(cl_buf_append(&g->names, key, klen));
        CL_GUARD(cl_buf_append_u8(&g->names, 0));
        cl_gguf_safe(nm, sizeof(nm), key, klen);
        CL_ENSURE_D(cl_cursor_u32le(c, &type) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "kv %s: type", nm);
        CL_ENSURE_D(type < CL_GGUF_TYPE_COUNT, CL_E_INFER_GGUF_BAD_TYPE, "kv %s: type id %u", nm, type);
        kv->type = (enum cl_gguf_type)type;
        kv->arr_type = CL_GGUF_TYPE_COUNT;
        kv->n = 1;
        if (type != CL_GGUF_ARRAY) {
            e = cl_gguf_skip_value(c, type, &kv->data, &kv->nbytes);
            CL_ENSURE_D(e == CL_OK, e, "kv %s: %s value", nm, cl_gguf_type_name(kv->type));
            continue;
        }
        uint32_t et;
        uint64_t n;
        CL_ENSURE_D(cl_cursor_u32le(c, &et) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "kv %s: array type", nm);
        CL_ENSURE_D(et < CL_GGUF_TYPE_COUNT && et != CL_GGUF_ARRAY, CL_E_INFER_GGUF_BAD_TYPE,
                    "kv %s: array element type id %u", nm, et);
        CL_ENSURE_D(cl_cursor_u64le(c, &n) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "kv %s: array length", nm);
        kv->arr_type = (enum cl_gguf_type)et;
        kv->n = n;
        size_t start = c->off;
        if (et == CL_GGUF_STRING) {
            CL_ENSURE_D(n <= cl_cursor_left(c) / 8, CL_E_INFER_GGUF_TRUNCATED, "kv %s: array of %llu strings", nm,
                        (unsigned long long)n);
            for (uint64_t j = 0; j < n; j++) {
                const char *p;
                size_t len;
                e = cl_gguf_read_str(c, SIZE_MAX, &p, &len);
                CL_ENSURE_D(e == CL_OK, e, "kv %s: string element %llu", nm, (unsigned long long)j);
            }
        } else {
            size_t sz = cl_gguf_scalar_size(et);
            CL_ENSURE_D(n <= cl_cursor_left(c) / sz, CL_E_INFER_GGUF_TRUNCATED, "kv %s: array of %llu %s", nm,
                        (unsigned long long)n, cl_gguf_type_name(kv->arr_type));
            const uint8_t *p;
            CL_ENSURE_D(cl_cursor_bytes(c, (size_t)n * sz, &p) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "kv %s", nm);
            if (et == CL_GGUF_BOOL)
                for (size_t j = 0; j < (size_t)n; j++)
                    CL_ENSURE_D(p[j] <= 1, CL_E_INFER_GGUF_BAD_VALUE, "kv %s: bool element %zu", nm, j);
        }
        kv->data = c->p + start;
        kv->nbytes = c->off - start;
    }
out:
    return rc;
}

static cl_err cl_gguf_parse_tensors(cl_gguf *g, struct cl_cursor *c, size_t *name_off)
{
    cl_err rc = CL_OK;
    char nm[72];
    for (size_t i = 0; i < g->n_t; i++) {
        struct cl_gguf_tensor *t = &g->t[i];
        const char *name;
        size_t nlen;
        uint32_t nd, type;
        cl_err e = cl_gguf_read_str(c, CL_GGUF_MAX_NAME, &name, &nlen);
        CL_ENSURE_D(e == CL_OK, e == CL_E_INFER_GGUF_LIMIT ? CL_E_INFER_GGUF_BAD_NAME : e,
                    "tensor #%zu: name length (max %u)", i, CL_GGUF_MAX_NAME);
        CL_ENSURE_D(nlen > 0, CL_E_INFER_GGUF_BAD_NAME, "tensor #%zu: empty name", i);
        CL_ENSURE_D(!memchr(name, 0, nlen), CL_E_INFER_GGUF_BAD_NAME, "tensor #%zu: NUL in name", i);
        cl_gguf_safe(nm, sizeof(nm), name, nlen);
        name_off[i] = g->names.len;
        CL_GUARD(cl_buf_append(&g->names, name, nlen));
        CL_GUARD(cl_buf_append_u8(&g->names, 0));
        CL_ENSURE_D(cl_cursor_u32le(c, &nd) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "tensor %s: n_dims", nm);
        CL_ENSURE_D(nd >= 1 && nd <= CL_GGUF_MAX_DIMS, CL_E_INFER_GGUF_BAD_DIMS, "tensor %s: n_dims %u", nm, nd);
        t->n_dims = nd;
        for (uint32_t d = 0; d < 4; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            CL_ENSURE_D(cl_cursor_u64le(c, &v) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "tensor %s: dim %u", nm, d);
            CL_ENSURE_D(v > 0 && v <= (uint64_t)INT64_MAX, CL_E_INFER_GGUF_BAD_DIMS, "tensor %s: dim %u is %llu", nm,
                        d, (unsigned long long)v);
            t->ne[d] = (int64_t)v;
        }
        CL_ENSURE_D(cl_cursor_u32le(c, &type) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "tensor %s: type", nm);
        CL_ENSURE_D(cl_ggml_type_info(type), CL_E_INFER_GGUF_TENSOR_TYPE, "tensor %s: type id %u", nm, type);
        t->type = (enum cl_ggml_type)type;
        CL_ENSURE_D(cl_cursor_u64le(c, &t->offset) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "tensor %s: offset", nm);
        e = cl_gguf_tensor_size(type, nd, t->ne, &t->nbytes);
        if (e != CL_OK) {
            char d0[200];
            snprintf(d0, sizeof(d0), "%s", cl_err_detail());
            CL_FAIL(e, "tensor %s: %s", nm, d0);
        }
    }
out:
    return rc;
}

cl_err cl_gguf_open_memory(const void *buf, size_t len, cl_gguf **out)
{
    cl_err rc = CL_OK;
    cl_gguf *g = NULL;
    size_t *offs = NULL;
    struct cl_cursor c;
    uint32_t magic;
    uint64_t n_t, n_kv;
    CL_ENSURE_D(buf || !len, CL_E_CORE_INVALID_ARG, "gguf buffer");
    cl_cursor_init(&c, buf, len);
    CL_ENSURE_D(cl_cursor_u32le(&c, &magic) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "magic");
    CL_ENSURE_D(magic == CL_GGUF_MAGIC, CL_E_INFER_GGUF_MAGIC, "magic is 0x%08x", magic);
    g = calloc(1, sizeof(*g));
    CL_ENSURE(g, CL_E_CORE_NOMEM);
    cl_buf_init(&g->names, len + 1, CL_BUF_NONE);
    g->buf = buf;
    g->len = len;
    CL_ENSURE_D(cl_cursor_u32le(&c, &g->version) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "version");
    CL_ENSURE_D(g->version != 0x03000000u && g->version != 0x02000000u, CL_E_INFER_GGUF_VERSION,
                "big-endian GGUF is not supported");
    CL_ENSURE_D(g->version == 2 || g->version == 3, CL_E_INFER_GGUF_VERSION, "version %u (want 2 or 3)", g->version);
    CL_ENSURE_D(cl_cursor_u64le(&c, &n_t) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "tensor count");
    CL_ENSURE_D(cl_cursor_u64le(&c, &n_kv) == CL_OK, CL_E_INFER_GGUF_TRUNCATED, "kv count");
    CL_ENSURE_D(n_t <= CL_GGUF_MAX_TENSORS, CL_E_INFER_GGUF_LIMIT, "tensor count %llu > %u", (unsigned long long)n_t,
                CL_GGUF_MAX_TENSORS);
    CL_ENSURE_D(n_kv <= CL_GGUF_MAX_KV, CL_E_INFER_GGUF_LIMIT, "kv count %llu > %u", (unsigned long long)n_kv,
                CL_GGUF_MAX_KV);
    CL_ENSURE_D(n_kv <= cl_cursor_left(&c) / CL_GGUF_MIN_KV_BYTES, CL_E_INFER_GGUF_TRUNCATED,
                "kv count %llu does not fit the file", (unsigned long long)n_kv);
    g->n_kv = (size_t)n_kv;
    g->n_t = (size_t)n_t;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kv));
    g->kv_sorted = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kv_sorted));
    offs = calloc(g->n_kv + g->n_t + 1, sizeof(*offs));
    CL_ENSURE(g->kv && g->kv_sorted && offs, CL_E_CORE_NOMEM);
    CL_GUARD(cl_gguf_parse_kvs(g, &c, offs));

    CL_ENSURE_D(g->n_t <= cl_cursor_left(&c) / CL_GGUF_MIN_TENSOR_BYTES, CL_E_INFER_GGUF_TRUNCATED,
                "tensor count %zu does not fit the file", g->n_t);
    g->t = calloc(g->n_t ? g->n_t : 1, sizeof(*g->t));
    g->t_sorted = calloc(g->n_t ? g->n_t : 1, sizeof(*g->t_sorted));
    CL_ENSURE(g->t && g->t_sorted, CL_E_CORE_NOMEM);
    CL_GUARD(cl_gguf_parse_tensors(g, &c, offs + g->n_kv));

    /* Names are final now: resolve offsets into the arena, then sort. */
    for (size_t i = 0; i < g->n_kv; i++) {
        g->kv[i].key = (const char *)g->names.data + offs[i];
        g->kv_sorted[i] = &g->kv[i];
    }
    for (size_t i = 0; i < g->n_t; i++) {
        g->t[i].name = (const char *)g->names.data + offs[g->n_kv + i];
        g->t_sorted[i] = &g->t[i];
    }
    char nm[72];
    qsort(g->kv_sorted, g->n_kv, sizeof(*g->kv_sorted), cl_gguf_kv_cmp);
    for (size_t i = 1; i < g->n_kv; i++)
        CL_ENSURE_D(strcmp(g->kv_sorted[i - 1]->key, g->kv_sorted[i]->key) != 0, CL_E_INFER_GGUF_BAD_KEY,
                    "duplicate key %s", cl_gguf_safe(nm, sizeof(nm), g->kv_sorted[i]->key, strlen(g->kv_sorted[i]->key)));
    qsort(g->t_sorted, g->n_t, sizeof(*g->t_sorted), cl_gguf_t_cmp);
    for (size_t i = 1; i < g->n_t; i++)
        CL_ENSURE_D(strcmp(g->t_sorted[i - 1]->name, g->t_sorted[i]->name) != 0, CL_E_INFER_GGUF_BAD_NAME,
                    "duplicate tensor name %s",
                    cl_gguf_safe(nm, sizeof(nm), g->t_sorted[i]->name, strlen(g->t_sorted[i]->name)));

    g->alignment = CL_GGUF_DEFAULT_ALIGNMENT;
    const struct cl_gguf_kv *al = cl_gguf_find_kv(g, "general.alignment");
    if (al) {
        uint32_t a;
        CL_ENSURE_D(al->type == CL_GGUF_UINT32, CL_E_INFER_GGUF_ALIGN, "general.alignment has type %s (want u32)",
                    cl_gguf_type_name(al->type));
        memcpy(&a, al->data, 4);
        CL_ENSURE_D(a && !(a & (a - 1)) && a <= CL_GGUF_MAX_ALIGNMENT, CL_E_INFER_GGUF_ALIGN,
                    "general.alignment %u is not a power of two <= %u", a, CL_GGUF_MAX_ALIGNMENT);
        g->alignment = a;
    }
    size_t pad = (g->alignment - c.off % g->alignment) % g->alignment;
    g->data_off = c.off + pad;
    if (g->n_t) {
        CL_ENSURE_D(g->data_off <= len, CL_E_INFER_GGUF_TRUNCATED, "data section starts at %zu past the end %zu",
                    g->data_off, len);
        size_t room = len - g->data_off;
        for (size_t i = 0; i < g->n_t; i++) {
            struct cl_gguf_tensor *t = &g->t[i];
            cl_gguf_safe(nm, sizeof(nm), t->name, strlen(t->name));
            CL_ENSURE_D(t->offset % g->alignment == 0, CL_E_INFER_GGUF_ALIGN, "tensor %s: offset %llu not aligned to %u",
                        nm, (unsigned long long)t->offset, g->alignment);
            CL_ENSURE_D(t->offset <= room && t->nbytes <= room - t->offset, CL_E_INFER_GGUF_BOUNDS,
                        "tensor %s: %zu bytes at offset %llu exceed the %zu-byte data section", nm, t->nbytes,
                        (unsigned long long)t->offset, room);
            t->data = g->buf + g->data_off + t->offset;
        }
        /* Overlap check over a copy ordered by offset. */
        const struct cl_gguf_tensor **byoff = malloc(g->n_t * sizeof(*byoff));
        CL_ENSURE(byoff, CL_E_CORE_NOMEM);
        for (size_t i = 0; i < g->n_t; i++)
            byoff[i] = &g->t[i];
        qsort(byoff, g->n_t, sizeof(*byoff), cl_gguf_off_cmp);
        size_t bad = 0;
        for (size_t i = 1; i < g->n_t && !bad; i++)
            if (byoff[i - 1]->offset + byoff[i - 1]->nbytes > byoff[i]->offset)
                bad = i;
        if (bad) {
            char nm2[72];
            cl_gguf_safe(nm, sizeof(nm), byoff[bad - 1]->name, strlen(byoff[bad - 1]->name));
            cl_gguf_safe(nm2, sizeof(nm2), byoff[bad]->name, strlen(byoff[bad]->name));
            free(byoff);
            CL_FAIL(CL_E_INFER_GGUF_OVERLAP, "tensors %s and %s", nm, nm2);
        }
        free(byoff);
    }
    *out = g;
    g = NULL;
out:
    free(offs);
    cl_gguf_free(g);
    return rc;
}

cl_err cl_gguf_open_file(const char *path, cl_gguf **out)
{
    cl_err rc = CL_OK;
    struct stat st;
    void *map = NULL;
    size_t len = 0;
    cl_gguf *g = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_from_errno(errno, "open model");
    CL_ENSURE_D(fstat(fd, &st) == 0, CL_E_CORE_IO, "stat model");
    CL_ENSURE_D(S_ISREG(st.st_mode), CL_E_CORE_INVALID_ARG, "model is not a regular file");
    CL_ENSURE_D(st.st_size > 0, CL_E_INFER_GGUF_TRUNCATED, "model file is empty");
    CL_ENSURE_D((uint64_t)st.st_size <= SIZE_MAX, CL_E_INFER_GGUF_LIMIT, "model file too large");
    len = (size_t)st.st_size;
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        CL_GUARD(cl_err_from_errno(errno, "mmap model"));
    }
    CL_GUARD(cl_gguf_open_memory(map, len, &g));
    g->map = map;
    g->map_len = len;
    map = NULL;
    *out = g;
out:
    if (map)
        munmap(map, len);
    close(fd);
    return rc;
}

cl_err cl_gguf_set_writable(cl_gguf *g, void *buf)
{
    if (!g)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "gguf is NULL");
    if (!buf) {
        if (!g->map)
            return cl_err_fail(CL_E_CORE_INVALID_ARG, "no buffer given and the gguf is not a file it mapped");
        if (g->wbuf)
            return CL_OK;
        /* Anonymous memory (huge pages where the kernel gives them) with a copy
         * of the file: writing a private file map would copy every 4 KiB page
         * on its first write, several times slower. */
        void *nb = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (nb == MAP_FAILED)
            return cl_err_from_errno(errno, "memory for a writable copy of the model");
        (void)madvise(nb, g->map_len, MADV_HUGEPAGE);
        /* in chunks, each dropped from the file map once copied: resident
         * memory stays one copy of the model */
        for (size_t off = 0; off < g->map_len; off += (size_t)64 << 20) {
            size_t k = g->map_len - off < ((size_t)64 << 20) ? g->map_len - off : (size_t)64 << 20;
            memcpy((uint8_t *)nb + off, (const uint8_t *)g->map + off, k);
            (void)madvise((uint8_t *)g->map + off, k, MADV_DONTNEED);
        }
        const uint8_t *old = g->buf;
        for (size_t i = 0; i < g->n_kv; i++)
            g->kv[i].data = (const uint8_t *)nb + (g->kv[i].data - old);
        for (size_t i = 0; i < g->n_t; i++)
            g->t[i].data = (const uint8_t *)nb + ((const uint8_t *)g->t[i].data - old);
        munmap(g->map, g->map_len);
        g->map = nb;
        g->buf = nb;
        g->wbuf = nb;
        return CL_OK;
    }
    if ((const uint8_t *)buf != g->buf)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "writable buffer is not the one the gguf was opened on");
    g->wbuf = buf;
    return CL_OK;
}

static bool cl_gguf_owns(const cl_gguf *g, const struct cl_gguf_tensor *t)
{
    return g && t && g->n_t && t >= g->t && t < g->t + g->n_t;
}

void *cl_gguf_tensor_data_mut(cl_gguf *g, const struct cl_gguf_tensor *t)
{
    if (!cl_gguf_owns(g, t) || !g->wbuf)
        return NULL;
    return g->wbuf + ((const uint8_t *)t->data - g->buf);
}

void cl_gguf_tensor_set_layout(cl_gguf *g, const struct cl_gguf_tensor *t, uint32_t layout)
{
    if (cl_gguf_owns(g, t))
        g->t[t - g->t].layout = layout;
}

uint32_t cl_gguf_version(const cl_gguf *g) { return g->version; }
uint32_t cl_gguf_alignment(const cl_gguf *g) { return g->alignment; }
size_t cl_gguf_data_offset(const cl_gguf *g) { return g->data_off; }

const void *cl_gguf_buffer(const cl_gguf *g, size_t *len)
{
    if (len)
        *len = g->len;
    return g->buf;
}

size_t cl_gguf_n_kv(const cl_gguf *g) { return g->n_kv; }
const struct cl_gguf_kv *cl_gguf_kv_at(const cl_gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t cl_gguf_n_tensors(const cl_gguf *g) { return g->n_t; }
const struct cl_gguf_tensor *cl_gguf_tensor_at(const cl_gguf *g, size_t i) { return i < g->n_t ? &g->t[i] : NULL; }

static int cl_gguf_kv_key_cmp(const void *k, const void *e)
{
    return strcmp(k, (*(const struct cl_gguf_kv *const *)e)->key);
}

static int cl_gguf_t_key_cmp(const void *k, const void *e)
{
    return strcmp(k, (*(const struct cl_gguf_tensor *const *)e)->name);
}

const struct cl_gguf_kv *cl_gguf_find_kv(const cl_gguf *g, const char *key)
{
    if (!g || !key || !g->n_kv)
        return NULL;
    const struct cl_gguf_kv *const *r = bsearch(key, g->kv_sorted, g->n_kv, sizeof(*g->kv_sorted), cl_gguf_kv_key_cmp);
    return r ? *r : NULL;
}

const struct cl_gguf_tensor *cl_gguf_find_tensor(const cl_gguf *g, const char *name)
{
    if (!g || !name || !g->n_t)
        return NULL;
    const struct cl_gguf_tensor *const *r = bsearch(name, g->t_sorted, g->n_t, sizeof(*g->t_sorted), cl_gguf_t_key_cmp);
    return r ? *r : NULL;
}

cl_err cl_gguf_get_tensor(const cl_gguf *g, const char *name, const struct cl_gguf_tensor **out)
{
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, name);
    if (!t)
        return cl_err_fail(CL_E_INFER_GGUF_TENSOR_MISSING, "tensor %s", name);
    *out = t;
    return CL_OK;
}

static cl_err cl_gguf_typed(const cl_gguf *g, const char *key, enum cl_gguf_type want, const struct cl_gguf_kv **out)
{
    const struct cl_gguf_kv *kv = cl_gguf_find_kv(g, key);
    if (!kv)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_MISSING, "key %s", key);
    if (kv->type != want)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is %s, want %s", key, cl_gguf_type_name(kv->type),
                           cl_gguf_type_name(want));
    *out = kv;
    return CL_OK;
}

/* A fixed-size scalar of the wanted type, copied out only on success. */
static cl_err cl_gguf_get_fixed(const cl_gguf *g, const char *key, enum cl_gguf_type want, void *out, size_t size)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_typed(g, key, want, &kv);
    if (e == CL_OK)
        memcpy(out, kv->data, size);
    return e;
}

cl_err cl_gguf_get_u32(const cl_gguf *g, const char *key, uint32_t *out)
{
    return cl_gguf_get_fixed(g, key, CL_GGUF_UINT32, out, 4);
}

cl_err cl_gguf_get_i32(const cl_gguf *g, const char *key, int32_t *out)
{
    return cl_gguf_get_fixed(g, key, CL_GGUF_INT32, out, 4);
}

cl_err cl_gguf_get_u64(const cl_gguf *g, const char *key, uint64_t *out)
{
    return cl_gguf_get_fixed(g, key, CL_GGUF_UINT64, out, 8);
}

cl_err cl_gguf_get_f32(const cl_gguf *g, const char *key, float *out)
{
    return cl_gguf_get_fixed(g, key, CL_GGUF_FLOAT32, out, 4);
}

cl_err cl_gguf_get_bool(const cl_gguf *g, const char *key, bool *out)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_typed(g, key, CL_GGUF_BOOL, &kv);
    if (e == CL_OK)
        *out = kv->data[0] != 0;
    return e;
}

cl_err cl_gguf_get_str(const cl_gguf *g, const char *key, struct cl_gguf_str *out)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_typed(g, key, CL_GGUF_STRING, &kv);
    if (e == CL_OK) {
        out->p = (const char *)kv->data;
        out->len = kv->nbytes;
    }
    return e;
}

/* Reads element i of fixed-size integer type t at p as int64 (u64 above
 * INT64_MAX fails). */
static bool cl_gguf_int_at(uint32_t t, const uint8_t *p, int64_t *v)
{
    switch (t) {
    case CL_GGUF_UINT8: *v = p[0]; return true;
    case CL_GGUF_INT8: *v = (int8_t)p[0]; return true;
    case CL_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); *v = x; return true; }
    case CL_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); *v = x; return true; }
    case CL_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); *v = x; return true; }
    case CL_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); *v = x; return true; }
    case CL_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); *v = x; return true; }
    case CL_GGUF_UINT64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > (uint64_t)INT64_MAX)
            return false;
        *v = (int64_t)x;
        return true;
    }
    default: return false;
    }
}

static bool cl_gguf_is_int(uint32_t t)
{
    return t <= CL_GGUF_INT32 || t == CL_GGUF_UINT64 || t == CL_GGUF_INT64;
}

cl_err cl_gguf_get_int(const cl_gguf *g, const char *key, int64_t *out)
{
    const struct cl_gguf_kv *kv = cl_gguf_find_kv(g, key);
    if (!kv)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_MISSING, "key %s", key);
    if (!cl_gguf_is_int(kv->type))
        return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is %s, want an integer", key, cl_gguf_type_name(kv->type));
    if (!cl_gguf_int_at(kv->type, kv->data, out))
        return cl_err_fail(CL_E_INFER_GGUF_BAD_VALUE, "key %s out of range", key);
    return CL_OK;
}

cl_err cl_gguf_get_uint32_any(const cl_gguf *g, const char *key, uint32_t *out)
{
    int64_t v;
    cl_err e = cl_gguf_get_int(g, key, &v);
    if (e != CL_OK)
        return e;
    if (v < 0 || v > (int64_t)UINT32_MAX)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_VALUE, "key %s = %lld out of u32 range", key, (long long)v);
    *out = (uint32_t)v;
    return CL_OK;
}

cl_err cl_gguf_get_float(const cl_gguf *g, const char *key, float *out)
{
    const struct cl_gguf_kv *kv = cl_gguf_find_kv(g, key);
    if (!kv)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_MISSING, "key %s", key);
    if (kv->type == CL_GGUF_FLOAT32) {
        memcpy(out, kv->data, 4);
        return CL_OK;
    }
    if (kv->type == CL_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
        return CL_OK;
    }
    return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is %s, want a float", key, cl_gguf_type_name(kv->type));
}

cl_err cl_gguf_get_arr(const cl_gguf *g, const char *key, enum cl_gguf_type elem, const struct cl_gguf_kv **out)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_typed(g, key, CL_GGUF_ARRAY, &kv);
    if (e != CL_OK)
        return e;
    if (elem != CL_GGUF_TYPE_COUNT && kv->arr_type != elem)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is an array of %s, want %s", key,
                           cl_gguf_type_name(kv->arr_type), cl_gguf_type_name(elem));
    *out = kv;
    return CL_OK;
}

cl_err cl_gguf_get_arr_str(const cl_gguf *g, const char *key, struct cl_gguf_str **out, size_t *n)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_get_arr(g, key, CL_GGUF_STRING, &kv);
    if (e != CL_OK)
        return e;
    size_t cnt = (size_t)kv->n;
    struct cl_gguf_str *tab = calloc(cnt ? cnt : 1, sizeof(*tab));
    if (!tab)
        return CL_E_CORE_NOMEM;
    struct cl_cursor c;
    cl_cursor_init(&c, kv->data, kv->nbytes);
    for (size_t i = 0; i < cnt; i++) {
        /* Already validated by the parser. */
        if (cl_gguf_read_str(&c, SIZE_MAX, &tab[i].p, &tab[i].len) != CL_OK) {
            free(tab);
            return cl_err_fail(CL_E_INFER_INTERNAL, "key %s: array re-read", key);
        }
    }
    *out = tab;
    *n = cnt;
    return CL_OK;
}

cl_err cl_gguf_get_arr_f32(const cl_gguf *g, const char *key, float **out, size_t *n)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_get_arr(g, key, CL_GGUF_TYPE_COUNT, &kv);
    if (e != CL_OK)
        return e;
    if (kv->arr_type != CL_GGUF_FLOAT32 && kv->arr_type != CL_GGUF_FLOAT64)
        return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is an array of %s, want floats", key,
                           cl_gguf_type_name(kv->arr_type));
    size_t cnt = (size_t)kv->n;
    float *tab = malloc((cnt ? cnt : 1) * sizeof(*tab));
    if (!tab)
        return CL_E_CORE_NOMEM;
    for (size_t i = 0; i < cnt; i++) {
        if (kv->arr_type == CL_GGUF_FLOAT32) {
            memcpy(&tab[i], kv->data + 4 * i, 4);
        } else {
            double d;
            memcpy(&d, kv->data + 8 * i, 8);
            tab[i] = (float)d;
        }
    }
    *out = tab;
    *n = cnt;
    return CL_OK;
}

cl_err cl_gguf_get_arr_i32(const cl_gguf *g, const char *key, int32_t **out, size_t *n)
{
    const struct cl_gguf_kv *kv = NULL;
    cl_err e = cl_gguf_get_arr(g, key, CL_GGUF_TYPE_COUNT, &kv);
    if (e != CL_OK)
        return e;
    if (!cl_gguf_is_int(kv->arr_type))
        return cl_err_fail(CL_E_INFER_GGUF_KEY_TYPE, "key %s is an array of %s, want integers", key,
                           cl_gguf_type_name(kv->arr_type));
    size_t cnt = (size_t)kv->n, sz = cl_gguf_scalar_size(kv->arr_type);
    int32_t *tab = malloc((cnt ? cnt : 1) * sizeof(*tab));
    if (!tab)
        return CL_E_CORE_NOMEM;
    for (size_t i = 0; i < cnt; i++) {
        int64_t v;
        if (!cl_gguf_int_at(kv->arr_type, kv->data + sz * i, &v) || v < INT32_MIN || v > INT32_MAX) {
            free(tab);
            return cl_err_fail(CL_E_INFER_GGUF_BAD_VALUE, "key %s element %zu out of i32 range", key, i);
        }
        tab[i] = (int32_t)v;
    }
    *out = tab;
    *n = cnt;
    return CL_OK;
}
