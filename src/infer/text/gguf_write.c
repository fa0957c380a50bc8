/* GGUF v3 writer: KVs are encoded as they are added; tensor bytes are kept
 * per tensor and streamed out after the header. */
#include "cloister/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/buf.h"
#include "cloister/file.h"

#define CL_GGUF_WRITER_MAX_META ((size_t)1 << 31)

struct cl_gguf_wtensor {
    char name[CL_GGUF_MAX_NAME + 1];
    enum cl_ggml_type type;
    uint32_t n_dims;
    int64_t ne[4];
    uint64_t offset;
    uint8_t *data;
    size_t nbytes;
};

struct cl_gguf_writer {
    uint32_t alignment;
    struct cl_buf kvs; /* encoded KV pairs */
    size_t n_kv;
    char **keys;
    size_t keys_cap;
    struct cl_gguf_wtensor *t;
    size_t n_t, t_cap;
    uint64_t data_size; /* running, aligned */
};

static cl_err cl_gguf_w_le(struct cl_buf *b, uint64_t v, unsigned n)
{
    uint8_t x[8];
    for (unsigned i = 0; i < n; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    return cl_buf_append(b, x, n);
}

static cl_err cl_gguf_w_str(struct cl_buf *b, const char *s, size_t len)
{
    cl_err e = cl_gguf_w_le(b, len, 8);
    return e == CL_OK ? cl_buf_append(b, s, len) : e;
}

cl_err cl_gguf_writer_new(uint32_t alignment, cl_gguf_writer **out)
{
    cl_err rc = CL_OK;
    cl_gguf_writer *w = NULL;
    if (!alignment)
        alignment = CL_GGUF_DEFAULT_ALIGNMENT;
    CL_ENSURE_D(!(alignment & (alignment - 1)) && alignment <= CL_GGUF_MAX_ALIGNMENT, CL_E_INFER_GGUF_ALIGN,
                "alignment %u is not a power of two <= %u", alignment, CL_GGUF_MAX_ALIGNMENT);
    w = calloc(1, sizeof(*w));
    CL_ENSURE(w, CL_E_CORE_NOMEM);
    w->alignment = alignment;
    cl_buf_init(&w->kvs, CL_GGUF_WRITER_MAX_META, CL_BUF_NONE);
    if (alignment != CL_GGUF_DEFAULT_ALIGNMENT)
        CL_GUARD(cl_gguf_writer_add_u32(w, "general.alignment", alignment));
    *out = w;
    w = NULL;
out:
    cl_gguf_writer_free(w);
    return rc;
}

void cl_gguf_writer_free(cl_gguf_writer *w)
{
    if (!w)
        return;
    cl_buf_free(&w->kvs);
    for (size_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].data);
    free(w->t);
    free(w);
}

/* Checks the key, records it, and writes key + type. */
static cl_err cl_gguf_w_key(cl_gguf_writer *w, const char *key, enum cl_gguf_type type)
{
    if (!w || !key)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "gguf writer key");
    size_t len = strlen(key);
    if (!len || len > CL_GGUF_MAX_KEY)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_KEY, "key length %zu", len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] >= 0x7f)
            return cl_err_fail(CL_E_INFER_GGUF_BAD_KEY, "key is not printable ASCII");
    if (w->n_kv >= CL_GGUF_MAX_KV)
        return cl_err_fail(CL_E_INFER_GGUF_LIMIT, "more than %u keys", CL_GGUF_MAX_KV);
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key))
            return cl_err_fail(CL_E_INFER_GGUF_BAD_KEY, "duplicate key %s", key);
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 16;
        char **k = realloc(w->keys, cap * sizeof(*k));
        if (!k)
            return CL_E_CORE_NOMEM;
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return CL_E_CORE_NOMEM;
    size_t mark = w->kvs.len;
    cl_err e = cl_gguf_w_str(&w->kvs, key, len);
    if (e == CL_OK)
        e = cl_gguf_w_le(&w->kvs, (uint32_t)type, 4);
    if (e != CL_OK) {
        w->kvs.len = mark;
        free(copy);
        return e;
    }
    w->keys[w->n_kv++] = copy;
    return CL_OK;
}

/* Undo the last key after a failed value write, so the writer stays usable. */
static cl_err cl_gguf_w_undo(cl_gguf_writer *w, size_t mark, cl_err e)
{
    w->kvs.len = mark;
    free(w->keys[--w->n_kv]);
    return e;
}

static cl_err cl_gguf_w_scalar(cl_gguf_writer *w, const char *key, enum cl_gguf_type t, uint64_t bits, unsigned n)
{
    size_t mark = w ? w->kvs.len : 0;
    cl_err e = cl_gguf_w_key(w, key, t);
    if (e != CL_OK)
        return e;
    e = cl_gguf_w_le(&w->kvs, bits, n);
    return e == CL_OK ? CL_OK : cl_gguf_w_undo(w, mark, e);
}

cl_err cl_gguf_writer_add_u8(cl_gguf_writer *w, const char *key, uint8_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_UINT8, v, 1); }
cl_err cl_gguf_writer_add_i8(cl_gguf_writer *w, const char *key, int8_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_INT8, (uint8_t)v, 1); }
cl_err cl_gguf_writer_add_u16(cl_gguf_writer *w, const char *key, uint16_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_UINT16, v, 2); }
cl_err cl_gguf_writer_add_i16(cl_gguf_writer *w, const char *key, int16_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_INT16, (uint16_t)v, 2); }
cl_err cl_gguf_writer_add_u32(cl_gguf_writer *w, const char *key, uint32_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_UINT32, v, 4); }
cl_err cl_gguf_writer_add_i32(cl_gguf_writer *w, const char *key, int32_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_INT32, (uint32_t)v, 4); }
cl_err cl_gguf_writer_add_u64(cl_gguf_writer *w, const char *key, uint64_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_UINT64, v, 8); }
cl_err cl_gguf_writer_add_i64(cl_gguf_writer *w, const char *key, int64_t v) { return cl_gguf_w_scalar(w, key, CL_GGUF_INT64, (uint64_t)v, 8); }
cl_err cl_gguf_writer_add_bool(cl_gguf_writer *w, const char *key, bool v) { return cl_gguf_w_scalar(w, key, CL_GGUF_BOOL, v ? 1 : 0, 1); }

cl_err cl_gguf_writer_add_f32(cl_gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return cl_gguf_w_scalar(w, key, CL_GGUF_FLOAT32, bits, 4);
}

cl_err cl_gguf_writer_add_f64(cl_gguf_writer *w, const char *key, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    return cl_gguf_w_scalar(w, key, CL_GGUF_FLOAT64, bits, 8);
}

cl_err cl_gguf_writer_add_strn(cl_gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (!s && len)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "string value for %s", key ? key : "?");
    size_t mark = w ? w->kvs.len : 0;
    cl_err e = cl_gguf_w_key(w, key, CL_GGUF_STRING);
    if (e != CL_OK)
        return e;
    e = cl_gguf_w_str(&w->kvs, s, len);
    return e == CL_OK ? CL_OK : cl_gguf_w_undo(w, mark, e);
}

cl_err cl_gguf_writer_add_str(cl_gguf_writer *w, const char *key, const char *s)
{
    if (!s)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "string value for %s", key ? key : "?");
    return cl_gguf_writer_add_strn(w, key, s, strlen(s));
}

cl_err cl_gguf_writer_add_arr(cl_gguf_writer *w, const char *key, enum cl_gguf_type elem, const void *elems, size_t n)
{
    size_t sz = cl_gguf_scalar_size(elem), bytes;
    if (!sz)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_TYPE, "array element type %s for %s", cl_gguf_type_name(elem),
                           key ? key : "?");
    if (cl_size_mul(n, sz, &bytes) != CL_OK || (!elems && n))
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "array value for %s", key ? key : "?");
    if (elem == CL_GGUF_BOOL)
        for (size_t i = 0; i < n; i++)
            if (((const uint8_t *)elems)[i] > 1)
                return cl_err_fail(CL_E_INFER_GGUF_BAD_VALUE, "bool element %zu of %s", i, key ? key : "?");
    size_t mark = w ? w->kvs.len : 0;
    cl_err e = cl_gguf_w_key(w, key, CL_GGUF_ARRAY);
    if (e != CL_OK)
        return e;
    e = cl_gguf_w_le(&w->kvs, (uint32_t)elem, 4);
    if (e == CL_OK)
        e = cl_gguf_w_le(&w->kvs, n, 8);
    /* Element bytes are host order; GGUF is little-endian, as is every
     * platform Cloister targets. */
    if (e == CL_OK)
        e = cl_buf_append(&w->kvs, elems, bytes);
    return e == CL_OK ? CL_OK : cl_gguf_w_undo(w, mark, e);
}

cl_err cl_gguf_writer_add_arr_str(cl_gguf_writer *w, const char *key, const char *const *strs, size_t n)
{
    if (!strs && n)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "array value for %s", key ? key : "?");
    size_t mark = w ? w->kvs.len : 0;
    cl_err e = cl_gguf_w_key(w, key, CL_GGUF_ARRAY);
    if (e != CL_OK)
        return e;
    e = cl_gguf_w_le(&w->kvs, CL_GGUF_STRING, 4);
    if (e == CL_OK)
        e = cl_gguf_w_le(&w->kvs, n, 8);
    for (size_t i = 0; i < n && e == CL_OK; i++)
        e = strs[i] ? cl_gguf_w_str(&w->kvs, strs[i], strlen(strs[i])) : CL_E_CORE_INVALID_ARG;
    return e == CL_OK ? CL_OK : cl_gguf_w_undo(w, mark, e);
}

cl_err cl_gguf_writer_add_kv(cl_gguf_writer *w, const struct cl_gguf_kv *kv)
{
    if (!kv || (!kv->data && kv->nbytes))
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "kv to copy");
    if ((unsigned)kv->type >= CL_GGUF_TYPE_COUNT)
        return cl_err_fail(CL_E_INFER_GGUF_BAD_TYPE, "kv type %d", (int)kv->type);
    /* general.alignment is owned by the writer (set at creation) */
    if (w && !strcmp(kv->key, "general.alignment")) {
        for (size_t i = 0; i < w->n_kv; i++)
            if (!strcmp(w->keys[i], kv->key))
                return CL_OK;
    }
    size_t mark = w ? w->kvs.len : 0;
    cl_err e = cl_gguf_w_key(w, kv->key, kv->type);
    if (e != CL_OK)
        return e;
    if (kv->type == CL_GGUF_STRING) {
        e = cl_gguf_w_str(&w->kvs, (const char *)kv->data, kv->nbytes);
    } else if (kv->type == CL_GGUF_ARRAY) {
        /* kv->data holds the elements exactly as encoded in the source */
        e = cl_gguf_w_le(&w->kvs, (uint32_t)kv->arr_type, 4);
        if (e == CL_OK)
            e = cl_gguf_w_le(&w->kvs, kv->n, 8);
        if (e == CL_OK)
            e = cl_buf_append(&w->kvs, kv->data, kv->nbytes);
    } else {
        e = cl_buf_append(&w->kvs, kv->data, kv->nbytes);
    }
    return e == CL_OK ? CL_OK : cl_gguf_w_undo(w, mark, e);
}

cl_err cl_gguf_writer_add_tensor_alloc(cl_gguf_writer *w, const char *name, enum cl_ggml_type type, uint32_t n_dims,
                                       const int64_t *ne, void **data)
{
    cl_err rc = CL_OK;
    size_t nbytes, len;
    CL_ENSURE_D(w && name && ne && data, CL_E_CORE_INVALID_ARG, "gguf writer tensor");
    len = strlen(name);
    CL_ENSURE_D(len > 0 && len <= CL_GGUF_MAX_NAME, CL_E_INFER_GGUF_BAD_NAME, "tensor name length %zu (1..%u)", len,
                CL_GGUF_MAX_NAME);
    CL_ENSURE_D(w->n_t < CL_GGUF_MAX_TENSORS, CL_E_INFER_GGUF_LIMIT, "more than %u tensors", CL_GGUF_MAX_TENSORS);
    for (size_t i = 0; i < w->n_t; i++)
        CL_ENSURE_D(strcmp(w->t[i].name, name) != 0, CL_E_INFER_GGUF_BAD_NAME, "duplicate tensor %s", name);
    CL_GUARD(cl_gguf_tensor_size(type, n_dims, ne, &nbytes));
    uint64_t off = w->data_size;
    size_t end;
    CL_ENSURE_D(cl_size_add(off, nbytes, &end) == CL_OK && end <= SIZE_MAX - w->alignment, CL_E_INFER_GGUF_OVERFLOW,
                "data section size");
    if (w->n_t == w->t_cap) {
        size_t cap = w->t_cap ? w->t_cap * 2 : 16;
        struct cl_gguf_wtensor *t = realloc(w->t, cap * sizeof(*t));
        CL_ENSURE(t, CL_E_CORE_NOMEM);
        w->t = t;
        w->t_cap = cap;
    }
    struct cl_gguf_wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof(*t));
    t->data = calloc(1, nbytes);
    CL_ENSURE_D(t->data, CL_E_CORE_NOMEM, "tensor %s: %zu bytes", name, nbytes);
    memcpy(t->name, name, len + 1);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->offset = off;
    t->nbytes = nbytes;
    w->data_size = (end + w->alignment - 1) / w->alignment * w->alignment;
    w->n_t++;
    *data = t->data;
out:
    return rc;
}

cl_err cl_gguf_writer_add_tensor(cl_gguf_writer *w, const char *name, enum cl_ggml_type type, uint32_t n_dims,
                                 const int64_t *ne, const void *data, size_t nbytes)
{
    cl_err rc = CL_OK;
    size_t want;
    void *dst;
    CL_ENSURE_D(w && ne && (data || !nbytes), CL_E_CORE_INVALID_ARG, "gguf writer tensor");
    CL_GUARD(cl_gguf_tensor_size(type, n_dims, ne, &want));
    CL_ENSURE_D(want == nbytes, CL_E_INFER_GGUF_WRITER, "tensor %s: %zu bytes given, shape needs %zu",
                name ? name : "?", nbytes, want);
    CL_GUARD(cl_gguf_writer_add_tensor_alloc(w, name, type, n_dims, ne, &dst));
    memcpy(dst, data, nbytes);
out:
    return rc;
}

/* Header, KVs, tensor infos and padding up to the data section. */
static cl_err cl_gguf_w_head(const cl_gguf_writer *w, struct cl_buf *h)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_gguf_w_le(h, CL_GGUF_MAGIC, 4));
    CL_GUARD(cl_gguf_w_le(h, 3, 4));
    CL_GUARD(cl_gguf_w_le(h, w->n_t, 8));
    CL_GUARD(cl_gguf_w_le(h, w->n_kv, 8));
    CL_GUARD(cl_buf_append(h, w->kvs.data, w->kvs.len));
    for (size_t i = 0; i < w->n_t; i++) {
        const struct cl_gguf_wtensor *t = &w->t[i];
        CL_GUARD(cl_gguf_w_str(h, t->name, strlen(t->name)));
        CL_GUARD(cl_gguf_w_le(h, t->n_dims, 4));
        for (uint32_t d = 0; d < t->n_dims; d++)
            CL_GUARD(cl_gguf_w_le(h, (uint64_t)t->ne[d], 8));
        CL_GUARD(cl_gguf_w_le(h, (uint32_t)t->type, 4));
        CL_GUARD(cl_gguf_w_le(h, t->offset, 8));
    }
    while (h->len % w->alignment)
        CL_GUARD(cl_buf_append_u8(h, 0));
out:
    return rc;
}

cl_err cl_gguf_writer_write_memory(cl_gguf_writer *w, uint8_t **out, size_t *len)
{
    cl_err rc = CL_OK;
    struct cl_buf h;
    size_t total;
    uint8_t *buf = NULL;
    cl_buf_init(&h, CL_GGUF_WRITER_MAX_META * 2, CL_BUF_NONE);
    CL_ENSURE_D(w && out && len, CL_E_CORE_INVALID_ARG, "gguf writer output");
    CL_GUARD(cl_gguf_w_head(w, &h));
    CL_ENSURE_D(cl_size_add(h.len, w->data_size, &total) == CL_OK, CL_E_INFER_GGUF_OVERFLOW, "file size");
    buf = calloc(1, total ? total : 1);
    CL_ENSURE_D(buf, CL_E_CORE_NOMEM, "%zu-byte GGUF image", total);
    memcpy(buf, h.data, h.len);
    for (size_t i = 0; i < w->n_t; i++)
        memcpy(buf + h.len + w->t[i].offset, w->t[i].data, w->t[i].nbytes);
    *out = buf;
    *len = total;
    buf = NULL;
out:
    free(buf);
    cl_buf_free(&h);
    return rc;
}

cl_err cl_gguf_writer_write_file(cl_gguf_writer *w, const char *path)
{
    cl_err rc = CL_OK;
    struct cl_buf h;
    char *tmp = NULL, *dircopy = NULL;
    int fd = -1;
    static const uint8_t zeros[64];
    cl_buf_init(&h, CL_GGUF_WRITER_MAX_META * 2, CL_BUF_NONE);
    CL_ENSURE_D(w && path && *path, CL_E_CORE_INVALID_ARG, "gguf writer path");
    CL_GUARD(cl_gguf_w_head(w, &h));
    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    CL_ENSURE(tmp, CL_E_CORE_NOMEM);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        tmp = NULL;
        CL_GUARD(cl_err_from_errno(errno, "create temporary GGUF file"));
    }
    CL_ENSURE_D(fchmod(fd, 0644) == 0, CL_E_CORE_IO, "chmod temporary GGUF file");
    CL_GUARD(cl_write_full(fd, h.data, h.len));
    uint64_t pos = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct cl_gguf_wtensor *t = &w->t[i];
        while (pos < t->offset) {
            size_t n = t->offset - pos < sizeof(zeros) ? (size_t)(t->offset - pos) : sizeof(zeros);
            CL_GUARD(cl_write_full(fd, zeros, n));
            pos += n;
        }
        CL_GUARD(cl_write_full(fd, t->data, t->nbytes));
        pos += t->nbytes;
    }
    while (pos < w->data_size) {
        size_t n = w->data_size - pos < sizeof(zeros) ? (size_t)(w->data_size - pos) : sizeof(zeros);
        CL_GUARD(cl_write_full(fd, zeros, n));
        pos += n;
    }
    if (fsync(fd) != 0)
        CL_GUARD(cl_err_from_errno(errno, "fsync GGUF file"));
    if (close(fd) != 0) {
        fd = -1;
        CL_GUARD(cl_err_from_errno(errno, "close GGUF file"));
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        CL_GUARD(cl_err_from_errno(errno, "rename GGUF file into place"));
    free(tmp);
    tmp = NULL;
    dircopy = strdup(path);
    CL_ENSURE(dircopy, CL_E_CORE_NOMEM);
    int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(dircopy);
    cl_buf_free(&h);
    return rc;
}
