/* GGUF (v2 and v3, little-endian) reader and writer.
 *
 * The reader parses and validates a whole file held in memory the caller owns
 * (for example secure memory with a decrypted model) or in a read-only mmap of
 * a file. Tensor data and string values are used in place: pointers returned
 * here point into that memory and stay valid until cl_gguf_free (and, for
 * cl_gguf_open_memory, as long as the caller keeps the buffer). Only key and
 * tensor names are copied (NUL-terminated). */
#ifndef CLOISTER_GGUF_H
#define CLOISTER_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"
#include "cloister/ggml_types.h"

/* Value types as stored on disk; like cl_ggml_type the values are the
 * on-disk ids, so 0 is a real type (UINT8) rather than a NONE value. */
enum cl_gguf_type {
    CL_GGUF_UINT8 = 0,
    CL_GGUF_INT8 = 1,
    CL_GGUF_UINT16 = 2,
    CL_GGUF_INT16 = 3,
    CL_GGUF_UINT32 = 4,
    CL_GGUF_INT32 = 5,
    CL_GGUF_FLOAT32 = 6,
    CL_GGUF_BOOL = 7,
    CL_GGUF_STRING = 8,
    CL_GGUF_ARRAY = 9,
    CL_GGUF_UINT64 = 10,
    CL_GGUF_INT64 = 11,
    CL_GGUF_FLOAT64 = 12,
    CL_GGUF_TYPE_COUNT = 13
};

#define CL_GGUF_MAGIC 0x46554747u /* "GGUF" read as little-endian u32 */
#define CL_GGUF_DEFAULT_ALIGNMENT 32u
#define CL_GGUF_MAX_DIMS 4u
#define CL_GGUF_MAX_NAME 63u        /* tensor name bytes, as ggml's GGML_MAX_NAME-1 */
#define CL_GGUF_MAX_KEY 1024u       /* key bytes */
#define CL_GGUF_MAX_TENSORS 65536u
#define CL_GGUF_MAX_KV 65536u
#define CL_GGUF_MAX_ALIGNMENT 65536u

typedef struct cl_gguf cl_gguf;

/* A byte string inside the model buffer; not NUL-terminated. */
struct cl_gguf_str {
    const char *p;
    size_t len;
};

struct cl_gguf_kv {
    const char *key;            /* NUL-terminated copy */
    enum cl_gguf_type type;
    enum cl_gguf_type arr_type; /* element type when type == ARRAY */
    uint64_t n;                 /* array element count; 1 for scalars and strings */
    const uint8_t *data;        /* value bytes in the buffer: scalar, string bytes, or first array element */
    size_t nbytes;              /* bytes at data (for string arrays: the whole encoded array) */
};

struct cl_gguf_tensor {
    const char *name;      /* NUL-terminated copy */
    enum cl_ggml_type type;
    uint32_t n_dims;       /* 1..4 */
    int64_t ne[4];         /* elements per dimension; unused dimensions are 1 */
    uint64_t offset;       /* from the start of the data section */
    const void *data;      /* in place, aligned to the file's alignment relative to the buffer start */
    size_t nbytes;
    uint32_t layout;       /* CL_GGUF_LAYOUT_*: how data is laid out now */
};

/* A tensor's bytes as the file has them, or rewritten in place by the model
 * loader into 16 interleaved rows (kernels.h, CL_K_ROWS16). */
#define CL_GGUF_LAYOUT_FILE 0u
#define CL_GGUF_LAYOUT_ROWS16 1u

/* Parses buf[0..len). The buffer must outlive the handle and not change. */
CL_MUST_CHECK cl_err cl_gguf_open_memory(const void *buf, size_t len, cl_gguf **out);
/* Maps path read-only (private) and parses it. */
CL_MUST_CHECK cl_err cl_gguf_open_file(const char *path, cl_gguf **out);
/* Gives the model loader leave to rewrite weight tensors in place
 * (cl_model_load repacks rows for faster kernels). buf must be the buffer g
 * was opened on, writable by the caller, and from then on read through g
 * only (its tensors say their layout). NULL for a file g mapped itself: g
 * moves to a private anonymous copy of the file (the file never changes; the
 * copy costs what the first read of every page would), so call it before
 * anything keeps pointers into g. CORE_INVALID_ARG when buf is not g's
 * buffer; NOMEM-like errno errors for the copy. */
CL_MUST_CHECK cl_err cl_gguf_set_writable(cl_gguf *g, void *buf);
/* Writable bytes of one of g's tensors, NULL when g is not writable or t is
 * not g's. */
void *cl_gguf_tensor_data_mut(cl_gguf *g, const struct cl_gguf_tensor *t);
/* Records that t's bytes now have another layout (t must be g's). */
void cl_gguf_tensor_set_layout(cl_gguf *g, const struct cl_gguf_tensor *t, uint32_t layout);
/* NULL is a no-op. Unmaps a file opened with cl_gguf_open_file. */
void cl_gguf_free(cl_gguf *g);

uint32_t cl_gguf_version(const cl_gguf *g);
uint32_t cl_gguf_alignment(const cl_gguf *g);
/* Offset of the data section in the buffer. */
size_t cl_gguf_data_offset(const cl_gguf *g);
const void *cl_gguf_buffer(const cl_gguf *g, size_t *len);

/* Key/value pairs, in file order. */
size_t cl_gguf_n_kv(const cl_gguf *g);
const struct cl_gguf_kv *cl_gguf_kv_at(const cl_gguf *g, size_t i);
/* NULL when absent. */
const struct cl_gguf_kv *cl_gguf_find_kv(const cl_gguf *g, const char *key);
const char *cl_gguf_type_name(enum cl_gguf_type t);
/* Bytes of one value of a scalar metadata type (any number read from the
 * file may be passed); 0 for STRING, ARRAY and unknown types. */
size_t cl_gguf_scalar_size(uint32_t t);

/* Typed getters. Missing key: CL_E_INFER_GGUF_KEY_MISSING; stored with another
 * type: CL_E_INFER_GGUF_KEY_TYPE. The detail names the key. */
CL_MUST_CHECK cl_err cl_gguf_get_u32(const cl_gguf *g, const char *key, uint32_t *out);
CL_MUST_CHECK cl_err cl_gguf_get_i32(const cl_gguf *g, const char *key, int32_t *out);
CL_MUST_CHECK cl_err cl_gguf_get_u64(const cl_gguf *g, const char *key, uint64_t *out);
CL_MUST_CHECK cl_err cl_gguf_get_f32(const cl_gguf *g, const char *key, float *out);
CL_MUST_CHECK cl_err cl_gguf_get_bool(const cl_gguf *g, const char *key, bool *out);
CL_MUST_CHECK cl_err cl_gguf_get_str(const cl_gguf *g, const char *key, struct cl_gguf_str *out);
/* Any integer type (u8..i64), range-checked into int64/uint32: for keys whose
 * width differs between converters. */
CL_MUST_CHECK cl_err cl_gguf_get_int(const cl_gguf *g, const char *key, int64_t *out);
CL_MUST_CHECK cl_err cl_gguf_get_uint32_any(const cl_gguf *g, const char *key, uint32_t *out);
/* Either FLOAT32 or FLOAT64 (narrowed). */
CL_MUST_CHECK cl_err cl_gguf_get_float(const cl_gguf *g, const char *key, float *out);

/* Arrays. cl_gguf_get_arr checks the element type (pass CL_GGUF_TYPE_COUNT to
 * accept any) and returns the kv. */
CL_MUST_CHECK cl_err cl_gguf_get_arr(const cl_gguf *g, const char *key, enum cl_gguf_type elem,
                                     const struct cl_gguf_kv **out);
/* Array of strings: *out is a malloc'd table of n views into the buffer
 * (caller frees the table with free()). */
CL_MUST_CHECK cl_err cl_gguf_get_arr_str(const cl_gguf *g, const char *key, struct cl_gguf_str **out, size_t *n);
/* Array of FLOAT32 (or FLOAT64) copied into a malloc'd float table. */
CL_MUST_CHECK cl_err cl_gguf_get_arr_f32(const cl_gguf *g, const char *key, float **out, size_t *n);
/* Array of any integer type copied into a malloc'd int32 table (range-checked). */
CL_MUST_CHECK cl_err cl_gguf_get_arr_i32(const cl_gguf *g, const char *key, int32_t **out, size_t *n);

/* Tensors, in file order. */
size_t cl_gguf_n_tensors(const cl_gguf *g);
const struct cl_gguf_tensor *cl_gguf_tensor_at(const cl_gguf *g, size_t i);
/* NULL when absent. */
const struct cl_gguf_tensor *cl_gguf_find_tensor(const cl_gguf *g, const char *name);
/* Like find, but CL_E_INFER_GGUF_TENSOR_MISSING naming the tensor. */
CL_MUST_CHECK cl_err cl_gguf_get_tensor(const cl_gguf *g, const char *name, const struct cl_gguf_tensor **out);
/* Element count and byte size of a tensor of type t and shape ne[0..n_dims),
 * with the same checks as the reader (block multiple, overflow). */
CL_MUST_CHECK cl_err cl_gguf_tensor_size(uint32_t t, uint32_t n_dims, const int64_t *ne, size_t *nbytes);

/* ---- writer ---- */

typedef struct cl_gguf_writer cl_gguf_writer;

/* alignment 0 means the default (32); a non-default one is written as
 * general.alignment. */
CL_MUST_CHECK cl_err cl_gguf_writer_new(uint32_t alignment, cl_gguf_writer **out);
void cl_gguf_writer_free(cl_gguf_writer *w);

/* Keys must be unique; values are copied. */
CL_MUST_CHECK cl_err cl_gguf_writer_add_u8(cl_gguf_writer *w, const char *key, uint8_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_i8(cl_gguf_writer *w, const char *key, int8_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_u16(cl_gguf_writer *w, const char *key, uint16_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_i16(cl_gguf_writer *w, const char *key, int16_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_u32(cl_gguf_writer *w, const char *key, uint32_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_i32(cl_gguf_writer *w, const char *key, int32_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_u64(cl_gguf_writer *w, const char *key, uint64_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_i64(cl_gguf_writer *w, const char *key, int64_t v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_f32(cl_gguf_writer *w, const char *key, float v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_f64(cl_gguf_writer *w, const char *key, double v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_bool(cl_gguf_writer *w, const char *key, bool v);
CL_MUST_CHECK cl_err cl_gguf_writer_add_str(cl_gguf_writer *w, const char *key, const char *s);
CL_MUST_CHECK cl_err cl_gguf_writer_add_strn(cl_gguf_writer *w, const char *key, const char *s, size_t len);
/* Array of a fixed-size element type (not STRING/ARRAY); elems holds n
 * little-endian (host-order on x86) values of that type. */
CL_MUST_CHECK cl_err cl_gguf_writer_add_arr(cl_gguf_writer *w, const char *key, enum cl_gguf_type elem,
                                            const void *elems, size_t n);
CL_MUST_CHECK cl_err cl_gguf_writer_add_arr_str(cl_gguf_writer *w, const char *key, const char *const *strs, size_t n);
/* Copies a KV read by cl_gguf (any type, arrays included) under its key,
 * for rewriting or converting a model's metadata. */
CL_MUST_CHECK cl_err cl_gguf_writer_add_kv(cl_gguf_writer *w, const struct cl_gguf_kv *kv);
/* Tensor with raw bytes in the type's on-disk layout (copied); ne[0..n_dims). */
CL_MUST_CHECK cl_err cl_gguf_writer_add_tensor(cl_gguf_writer *w, const char *name, enum cl_ggml_type type,
                                               uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes);
/* Tensor whose bytes are produced later: returns a zeroed in-writer buffer of
 * exactly the tensor's size for the caller to fill (avoids a second copy of
 * large weights). The pointer is valid until cl_gguf_writer_free. */
CL_MUST_CHECK cl_err cl_gguf_writer_add_tensor_alloc(cl_gguf_writer *w, const char *name, enum cl_ggml_type type,
                                                     uint32_t n_dims, const int64_t *ne, void **data);
/* Serialises to path atomically (temp file + fsync + rename), mode 0644. */
CL_MUST_CHECK cl_err cl_gguf_writer_write_file(cl_gguf_writer *w, const char *path);
/* Serialises to a malloc'd buffer (caller frees). */
CL_MUST_CHECK cl_err cl_gguf_writer_write_memory(cl_gguf_writer *w, uint8_t **out, size_t *len);

#endif
