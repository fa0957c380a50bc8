/* libFuzzer: the enclave's reader of the boot configuration the (hostile)
 * host sends. Whatever it accepts, the host's writer writes back to text
 * the reader parses to the same configuration. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/bootcfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cl_bootcfg c, back;
    if (cl_bootcfg_parse(data, size, &c) != CL_OK)
        return 0;
    struct cl_buf b;
    cl_buf_init(&b, CL_BOOTCFG_MAX_BYTES * 2, CL_BUF_NONE);
    if (cl_bootcfg_write(&c, &b) != CL_OK || cl_bootcfg_parse(b.data, b.len, &back) != CL_OK ||
        memcmp(&c, &back, sizeof(c)) != 0)
        abort();
    cl_buf_free(&b);
    return 0;
}
