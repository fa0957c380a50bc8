/* Growable byte buffers with a hard cap fixed at creation, and bounded read
 * cursors. Every parser in Cloister reads through a cursor. */
#ifndef CLOISTER_BUF_H
#define CLOISTER_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"

enum cl_buf_flags {
    CL_BUF_NONE = 0,
    CL_BUF_SECURE = 1 << 0, /* storage from cl_secmem: locked, not dumped, wiped */
};

struct cl_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* hard cap: no operation grows len beyond it */
    unsigned flags;
};

/* max must be > 0. No allocation happens until the first write. */
void cl_buf_init(struct cl_buf *b, size_t max, unsigned flags);
/* Frees storage (wiping it first if secure or if wipe requested). */
void cl_buf_free(struct cl_buf *b);
void cl_buf_reset(struct cl_buf *b); /* len = 0, keeps storage (wiped) */
CL_MUST_CHECK cl_err cl_buf_reserve(struct cl_buf *b, size_t extra);
CL_MUST_CHECK cl_err cl_buf_append(struct cl_buf *b, const void *p, size_t n);
CL_MUST_CHECK cl_err cl_buf_append_u8(struct cl_buf *b, uint8_t v);
CL_MUST_CHECK cl_err cl_buf_append_u16be(struct cl_buf *b, uint16_t v);
CL_MUST_CHECK cl_err cl_buf_append_u32be(struct cl_buf *b, uint32_t v);
CL_MUST_CHECK cl_err cl_buf_append_u64be(struct cl_buf *b, uint64_t v);
CL_MUST_CHECK cl_err cl_buf_append_str(struct cl_buf *b, const char *s);
CL_MUST_CHECK cl_err cl_buf_appendf(struct cl_buf *b, const char *fmt, ...) CL_PRINTF(2, 3);
/* Reserves n bytes at the end and returns a pointer to them (len grows by n). */
CL_MUST_CHECK cl_err cl_buf_extend(struct cl_buf *b, size_t n, uint8_t **out);

/* A read cursor over memory it does not own. Reads past the end fail with
 * CL_E_CORE_TRUNCATED and leave the cursor where it was. */
struct cl_cursor {
    const uint8_t *p;
    size_t len;
    size_t off;
};

void cl_cursor_init(struct cl_cursor *c, const void *p, size_t len);
static inline size_t cl_cursor_left(const struct cl_cursor *c) { return c->len - c->off; }
static inline bool cl_cursor_done(const struct cl_cursor *c) { return c->off == c->len; }
CL_MUST_CHECK cl_err cl_cursor_u8(struct cl_cursor *c, uint8_t *v);
CL_MUST_CHECK cl_err cl_cursor_u16be(struct cl_cursor *c, uint16_t *v);
CL_MUST_CHECK cl_err cl_cursor_u32be(struct cl_cursor *c, uint32_t *v);
CL_MUST_CHECK cl_err cl_cursor_u64be(struct cl_cursor *c, uint64_t *v);
CL_MUST_CHECK cl_err cl_cursor_u16le(struct cl_cursor *c, uint16_t *v);
CL_MUST_CHECK cl_err cl_cursor_u32le(struct cl_cursor *c, uint32_t *v);
CL_MUST_CHECK cl_err cl_cursor_u64le(struct cl_cursor *c, uint64_t *v);
/* Points *p at the next n bytes (no copy). */
CL_MUST_CHECK cl_err cl_cursor_bytes(struct cl_cursor *c, size_t n, const uint8_t **p);
CL_MUST_CHECK cl_err cl_cursor_copy(struct cl_cursor *c, void *dst, size_t n);
CL_MUST_CHECK cl_err cl_cursor_skip(struct cl_cursor *c, size_t n);
/* Fails with CL_E_CORE_TRAILING unless every byte was consumed. */
CL_MUST_CHECK cl_err cl_cursor_expect_end(const struct cl_cursor *c);

/* Overflow-checked size arithmetic. */
CL_MUST_CHECK cl_err cl_size_add(size_t a, size_t b, size_t *out);
CL_MUST_CHECK cl_err cl_size_mul(size_t a, size_t b, size_t *out);

#endif
