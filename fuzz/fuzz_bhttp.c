/* Fuzzes the binary HTTP decoder, OHTTP key configuration parsing and the
 * chunked response reader (fed with attacker bytes). */
#include <stddef.h>
#include <stdint.h>

#include "cloister/bhttp.h"
#include "cloister/ohttp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_bhttp_msg m;
    struct cl_ohttp_keyconfig kc;
    struct cl_buf b;
    if (cl_bhttp_decode(data, size, 1 << 20, &m) == CL_OK) {
        cl_buf_init(&b, 1 << 22, CL_BUF_NONE);
        (void)cl_bhttp_encode(&m, &b);
        cl_buf_free(&b);
    }
    /* the incremental reader, fed in two pieces */
    struct cl_bhttp_reader r;
    cl_buf_init(&b, 1 << 22, CL_BUF_NONE);
    cl_bhttp_reader_init(&r, 1 << 20);
    if (cl_bhttp_reader_feed(&r, data, size / 2, &b) == CL_OK)
        (void)cl_bhttp_reader_feed(&r, data + size / 2, size - size / 2, &b);
    cl_bhttp_reader_free(&r);
    cl_buf_free(&b);
    (void)cl_ohttp_keys_parse(data, size, &kc);
    (void)cl_ohttp_keyconfig_parse(data, size, &kc);
    return 0;
}
