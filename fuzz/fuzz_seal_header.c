/* Fuzzes the sealed-model header parser and the keyfile unwrap path. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cloister/seal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cl_seal_header h;
    static const uint8_t kek[32] = {1};
    uint8_t dk[32];
    uint32_t len;
    if (cl_seal_header_len(data, size, &len) == CL_OK && cl_seal_header_parse(data, size, &h) == CL_OK) {
        if (cl_seal_keyfile_unwrap(kek, &h, dk) == CL_OK)
            (void)cl_seal_header_verify(&h, data, dk);
        uint64_t total;
        (void)cl_seal_sealed_size(h.header_len, h.plaintext_size, h.chunk_size, &total);
    }
    return 0;
}
