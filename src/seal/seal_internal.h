#ifndef CLOISTER_SEAL_INTERNAL_H
#define CLOISTER_SEAL_INTERNAL_H

#include <stdint.h>

#include "cloister/seal.h"

#define CL_SEAL_NONCE_PREFIX_LEN 7

/* Keys derived from the data key and the per-file salt; lives in secure memory. */
struct cl_seal_keys {
    uint8_t commitment[32];
    uint8_t header[32];
    uint8_t chunk[32];
    uint8_t nonce_prefix[CL_SEAL_NONCE_PREFIX_LEN];
};

CL_MUST_CHECK cl_err cl_seal_keys_derive(const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t salt[32],
                                         struct cl_seal_keys **out);
void cl_seal_keys_free(struct cl_seal_keys *k);
CL_MUST_CHECK cl_err cl_seal_chunk_count(uint64_t pt_size, uint32_t chunk_size, uint64_t *n);
/* STREAM nonce: prefix || chunk index (u32 BE) || last-chunk flag. */
void cl_seal_chunk_nonce(const struct cl_seal_keys *k, uint64_t index, int last, uint8_t nonce[12]);

#endif
