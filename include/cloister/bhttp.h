/* Binary HTTP messages (RFC 9292), known-length form: what travels inside
 * OHTTP between the client and the enclave. Decoding is bounded and strict;
 * indefinite-length messages are refused. */
#ifndef CLOISTER_BHTTP_H
#define CLOISTER_BHTTP_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_BHTTP_MAX_FIELDS 64
#define CL_BHTTP_MAX_TOKEN 2048

struct cl_bhttp_field {
    const char *name; /* lower-case; points into the decoded message */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Views into the buffer that was decoded (or inputs to encoding). */
struct cl_bhttp_msg {
    int is_response;
    /* request control data */
    const char *method, *scheme, *authority, *path;
    size_t method_len, scheme_len, authority_len, path_len;
    /* response control data */
    uint16_t status;
    size_t n_fields;
    struct cl_bhttp_field fields[CL_BHTTP_MAX_FIELDS];
    const uint8_t *content;
    size_t content_len;
};

CL_MUST_CHECK cl_err cl_bhttp_encode(const struct cl_bhttp_msg *m, struct cl_buf *out);
/* Decodes p[0..n) into m (which then points into p). max_content caps the body. */
CL_MUST_CHECK cl_err cl_bhttp_decode(const uint8_t *p, size_t n, size_t max_content, struct cl_bhttp_msg *m);
/* Case-insensitive header lookup; NULL if absent. */
const struct cl_bhttp_field *cl_bhttp_find(const struct cl_bhttp_msg *m, const char *name);

/* ---- streaming responses (indefinite-length, framing indicator 3) ---- */
/* Status line and header section; then any number of data calls; then end. */
CL_MUST_CHECK cl_err cl_bhttp_stream_head(uint16_t status, const struct cl_bhttp_field *fields, size_t n,
                                          struct cl_buf *out);
CL_MUST_CHECK cl_err cl_bhttp_stream_data(const void *p, size_t n, struct cl_buf *out);
CL_MUST_CHECK cl_err cl_bhttp_stream_end(struct cl_buf *out);

/* Incremental reader for a response in either framing (1 or 3). Feed bytes
 * as they arrive; content is appended to `content` as soon as it is
 * complete (known-length content byte by byte, indefinite content per
 * chunk). */
enum cl_bhttp_rstate {
    CL_BHTTP_R_NONE = 0,
    CL_BHTTP_R_FRAMING,
    CL_BHTTP_R_STATUS,
    CL_BHTTP_R_FIELDS,
    CL_BHTTP_R_CONTENT,
    CL_BHTTP_R_TRAILERS,
    CL_BHTTP_R_DONE,
    CL_BHTTP_R_COUNT
};

struct cl_bhttp_reader {
    enum cl_bhttp_rstate state;
    int indefinite;
    uint16_t status;
    uint64_t content_left; /* known-length content still to come */
    size_t max_content;
    size_t content_total;
    struct cl_buf pending; /* bytes not yet consumed */
    struct cl_buf fields;  /* header section as name\0value\0 pairs */
};

void cl_bhttp_reader_init(struct cl_bhttp_reader *r, size_t max_content);
void cl_bhttp_reader_free(struct cl_bhttp_reader *r);
CL_MUST_CHECK cl_err cl_bhttp_reader_feed(struct cl_bhttp_reader *r, const uint8_t *p, size_t n,
                                          struct cl_buf *content);
/* True once the whole message (including trailers) has been read. */
static inline int cl_bhttp_reader_done(const struct cl_bhttp_reader *r) { return r->state == CL_BHTTP_R_DONE; }
/* Header lookup once the header section is complete; NULL if absent. */
const char *cl_bhttp_reader_field(const struct cl_bhttp_reader *r, const char *name);

#endif
