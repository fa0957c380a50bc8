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

#endif
