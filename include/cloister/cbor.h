/* Strict, bounded CBOR (RFC 8949) decoder and canonical encoder.
 *
 * The decoder builds a tree of items in memory it owns. It accepts definite
 * and indefinite lengths, and rejects: nesting deeper than the limit, more
 * items or bytes than the limits allow, duplicate map keys (compared by
 * value, not by encoding), trailing bytes after the top item, reserved
 * additional-info values, simple values 24..31 in two-byte form, break codes
 * outside indefinite items and indefinite strings whose chunks are not
 * definite strings of the same major type. Text strings must be valid UTF-8.
 *
 * The encoder writes the deterministic encoding (RFC 8949 section 4.2.1):
 * shortest heads, definite lengths, map keys sorted by their encoded bytes,
 * floats in the shortest form that keeps the value. */
#ifndef CLOISTER_CBOR_H
#define CLOISTER_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

enum cl_cbor_type {
    CL_CBOR_NONE = 0,
    CL_CBOR_UINT,   /* value u */
    CL_CBOR_NINT,   /* value -1 - u */
    CL_CBOR_BYTES,  /* p, len */
    CL_CBOR_TEXT,   /* p, len (UTF-8, not NUL-terminated) */
    CL_CBOR_ARRAY,  /* count children */
    CL_CBOR_MAP,    /* count pairs: children are key, value, key, value ... */
    CL_CBOR_TAG,    /* tag number u, one child */
    CL_CBOR_SIMPLE, /* u = simple value: 20 false, 21 true, 22 null, 23 undefined, others */
    CL_CBOR_FLOAT,  /* f */
    CL_CBOR_COUNT
};

#define CL_CBOR_FALSE 20
#define CL_CBOR_TRUE 21
#define CL_CBOR_NULL 22
#define CL_CBOR_UNDEFINED 23

struct cl_cbor_item {
    enum cl_cbor_type type;
    bool indefinite;   /* encoded with indefinite length (strings: chunks are the children) */
    uint64_t u;
    double f;
    const uint8_t *p;  /* string content (for indefinite strings: the joined chunks) */
    size_t len;
    size_t count;      /* array elements, map pairs, string chunks */
    struct cl_cbor_item *child;
    struct cl_cbor_item *next;
    const uint8_t *raw; /* this item's encoded bytes within the input */
    size_t raw_len;
};

struct cl_cbor_limits {
    size_t max_depth;     /* nesting of arrays, maps and tags; the top item is depth 1 */
    size_t max_items;     /* total items in the tree */
    size_t max_input;     /* bytes of input */
    size_t max_map_pairs; /* per map (duplicate detection is quadratic) */
};

/* depth 16, 65536 items, 1 MiB input, 1024 pairs per map. */
extern const struct cl_cbor_limits cl_cbor_default_limits;

typedef struct cl_cbor_doc cl_cbor_doc;

/* Decodes exactly one item spanning the cursor's remaining bytes. The tree
 * points into the input, which must outlive the document. */
CL_MUST_CHECK cl_err cl_cbor_decode(struct cl_cursor *c, const struct cl_cbor_limits *lim, cl_cbor_doc **out);
/* Decodes one item from the cursor and leaves the cursor after it (for
 * framed streams). */
CL_MUST_CHECK cl_err cl_cbor_decode_prefix(struct cl_cursor *c, const struct cl_cbor_limits *lim, cl_cbor_doc **out);
const struct cl_cbor_item *cl_cbor_root(const cl_cbor_doc *d);
void cl_cbor_free(cl_cbor_doc *d);

/* ---- lookups (NULL when absent or of another type) ---- */
const struct cl_cbor_item *cl_cbor_map_get_text(const struct cl_cbor_item *map, const char *key);
const struct cl_cbor_item *cl_cbor_map_get_int(const struct cl_cbor_item *map, int64_t key);
const struct cl_cbor_item *cl_cbor_array_at(const struct cl_cbor_item *arr, size_t i);
/* Value as int64; fails for non-integers and out-of-range values. */
CL_MUST_CHECK cl_err cl_cbor_get_int(const struct cl_cbor_item *it, int64_t *out);
bool cl_cbor_is_null(const struct cl_cbor_item *it);
bool cl_cbor_is_text(const struct cl_cbor_item *it, const char *s);
/* Deep equality by value (encoding differences ignored). */
bool cl_cbor_equal(const struct cl_cbor_item *a, const struct cl_cbor_item *b);

/* ---- encoder ---- */
CL_MUST_CHECK cl_err cl_cbor_put_uint(struct cl_buf *b, uint64_t v);
CL_MUST_CHECK cl_err cl_cbor_put_int(struct cl_buf *b, int64_t v);
CL_MUST_CHECK cl_err cl_cbor_put_nint(struct cl_buf *b, uint64_t u); /* encodes -1 - u */
CL_MUST_CHECK cl_err cl_cbor_put_bytes(struct cl_buf *b, const void *p, size_t n);
CL_MUST_CHECK cl_err cl_cbor_put_text(struct cl_buf *b, const char *s);
CL_MUST_CHECK cl_err cl_cbor_put_textn(struct cl_buf *b, const char *s, size_t n);
CL_MUST_CHECK cl_err cl_cbor_put_array(struct cl_buf *b, uint64_t count);
/* The caller writes keys in canonical order (shorter first, then bytewise). */
CL_MUST_CHECK cl_err cl_cbor_put_map(struct cl_buf *b, uint64_t pairs);
CL_MUST_CHECK cl_err cl_cbor_put_tag(struct cl_buf *b, uint64_t tag);
CL_MUST_CHECK cl_err cl_cbor_put_simple(struct cl_buf *b, uint8_t v);
CL_MUST_CHECK cl_err cl_cbor_put_bool(struct cl_buf *b, bool v);
CL_MUST_CHECK cl_err cl_cbor_put_null(struct cl_buf *b);
CL_MUST_CHECK cl_err cl_cbor_put_float(struct cl_buf *b, double v);
/* Deterministic encoding of a decoded item (sorts map keys). */
CL_MUST_CHECK cl_err cl_cbor_encode_item(struct cl_buf *b, const struct cl_cbor_item *it);

/* Diagnostic notation (RFC 8949 section 8) for tests and `show` commands. */
CL_MUST_CHECK cl_err cl_cbor_diag(const struct cl_cbor_item *it, struct cl_buf *out);

#endif
