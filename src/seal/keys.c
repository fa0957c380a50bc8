#include <string.h>

#include "cloister/crypto.h"
#include "cloister/secmem.h"
#include "seal_internal.h"

/* One extract, then one expand per purpose with distinct labels, so the
 * commitment, header MAC key, chunk key and nonce prefix are independent. */
cl_err cl_seal_keys_derive(const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t salt[32], struct cl_seal_keys **out)
{
    static const char l_commit[] = "cloister/seal/v1 key commitment";
    static const char l_header[] = "cloister/seal/v1 header mac";
    static const char l_chunk[] = "cloister/seal/v1 chunk key";
    static const char l_nonce[] = "cloister/seal/v1 nonce prefix";
    cl_err rc = CL_OK;
    void *mem = NULL;
    uint8_t prk[32];
    CL_GUARD(cl_secmem_alloc(sizeof(struct cl_seal_keys), &mem));
    struct cl_seal_keys *k = mem;
    CL_GUARD(cl_hkdf_extract(CL_HASH_SHA256, salt, 32, dk, CL_SEAL_KEY_LEN, prk));
    CL_GUARD(cl_hkdf_expand(CL_HASH_SHA256, prk, 32, l_commit, sizeof(l_commit) - 1, k->commitment, 32));
    CL_GUARD(cl_hkdf_expand(CL_HASH_SHA256, prk, 32, l_header, sizeof(l_header) - 1, k->header, 32));
    CL_GUARD(cl_hkdf_expand(CL_HASH_SHA256, prk, 32, l_chunk, sizeof(l_chunk) - 1, k->chunk, 32));
    CL_GUARD(cl_hkdf_expand(CL_HASH_SHA256, prk, 32, l_nonce, sizeof(l_nonce) - 1, k->nonce_prefix,
                            CL_SEAL_NONCE_PREFIX_LEN));
    *out = k;
    mem = NULL;
out:
    cl_wipe(prk, sizeof(prk));
    cl_secmem_free(mem);
    return rc;
}

void cl_seal_keys_free(struct cl_seal_keys *k) { cl_secmem_free(k); }

void cl_seal_chunk_nonce(const struct cl_seal_keys *k, uint64_t index, int last, uint8_t nonce[12])
{
    memcpy(nonce, k->nonce_prefix, CL_SEAL_NONCE_PREFIX_LEN);
    nonce[7] = (uint8_t)(index >> 24);
    nonce[8] = (uint8_t)(index >> 16);
    nonce[9] = (uint8_t)(index >> 8);
    nonce[10] = (uint8_t)index;
    nonce[11] = last ? 1 : 0;
}
