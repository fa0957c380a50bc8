/* libFuzzer: strict CBOR decoding; every accepted input re-encodes
 * canonically to a value-equal item, and canonical encoding is idempotent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/cbor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_cursor c;
    cl_cbor_doc *d = NULL, *d2 = NULL;
    cl_cursor_init(&c, data, size);
    if (cl_cbor_decode(&c, NULL, &d) != CL_OK)
        return 0;
    struct cl_buf enc, enc2, diag;
    /* An indefinite container's 2 marker bytes can become a 9-byte head. */
    cl_buf_init(&enc, 8 * size + 64, CL_BUF_NONE);
    cl_buf_init(&enc2, 8 * size + 64, CL_BUF_NONE);
    cl_buf_init(&diag, 64 * size + 1024, CL_BUF_NONE);
    if (cl_cbor_encode_item(&enc, cl_cbor_root(d)) != CL_OK)
        abort();
    cl_cursor_init(&c, enc.data, enc.len);
    if (cl_cbor_decode(&c, NULL, &d2) != CL_OK || !cl_cbor_equal(cl_cbor_root(d), cl_cbor_root(d2)))
        abort();
    if (cl_cbor_encode_item(&enc2, cl_cbor_root(d2)) != CL_OK || enc2.len != enc.len ||
        memcmp(enc.data, enc2.data, enc.len) != 0)
        abort();
    (void)cl_cbor_diag(cl_cbor_root(d), &diag);
    cl_buf_free(&enc);
    cl_buf_free(&enc2);
    cl_buf_free(&diag);
    cl_cbor_free(d);
    cl_cbor_free(d2);
    return 0;
}
