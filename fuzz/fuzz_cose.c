/* libFuzzer: COSE_Sign1 parsing (both profiles) and ES384 verification. */
#include <stdint.h>
#include <stdlib.h>

#include "cloister/cose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cl_pkey *cl_fuzz_key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cl_fuzz_key && cl_pkey_generate(CL_PKEY_P384, &cl_fuzz_key) != CL_OK)
        abort();
    for (int prof = CL_COSE_PROFILE_NITRO; prof <= CL_COSE_PROFILE_GENERIC; prof++) {
        struct cl_cose_sign1 s;
        if (cl_cose_sign1_parse(data, size, (enum cl_cose_profile)prof, NULL, &s) != CL_OK)
            continue;
        /* A random key never verifies a fuzzed message. */
        if (cl_cose_sign1_verify(&s, cl_fuzz_key, data, size > 16 ? 16 : size) == CL_OK)
            abort();
        cl_cose_sign1_free(&s);
    }
    return 0;
}
