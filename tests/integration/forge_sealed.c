/* Test tool for attack_model_substitution.sh: what an operator who runs a
 * key service of its own can produce. It seals IN under a data key from
 * that key service, with a header whose model digest and encryption context
 * claim whatever the attacker likes (typically the genuine model's digest):
 *
 *   cl_forge_sealed IN OUT KMS_URL KEY_ID HEADER_SHA256 CONTEXT_SHA256
 *
 * Credentials come from the usual AWS variables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms_client.h"
#include "cloister/seal.h"
#include "cloister/secmem.h"

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: cl_forge_sealed IN OUT KMS_URL KEY_ID HEADER_SHA256 CONTEXT_SHA256\n");
        return 2;
    }
    static struct cl_kmsc_credentials cred;
    static struct cl_seal_ctx_pair ctx[2];
    uint8_t hdr[32], dk[32], salt[32], wrapped[4096];
    struct cl_buf pt, key, blob;
    cl_buf_init(&pt, (size_t)1 << 31, CL_BUF_NONE);
    cl_buf_init(&key, 64, CL_BUF_SECURE);
    cl_buf_init(&blob, sizeof(wrapped), CL_BUF_NONE);
    if (cl_hex_decode_fixed(argv[5], strlen(argv[5]), hdr, 32) != CL_OK || strlen(argv[6]) != 64) {
        fprintf(stderr, "digests must be 64 hex digits\n");
        return 2;
    }
    snprintf(ctx[0].key, sizeof(ctx[0].key), "cloister:model");
    snprintf(ctx[0].value, sizeof(ctx[0].value), "forged");
    snprintf(ctx[1].key, sizeof(ctx[1].key), "cloister:model-sha256");
    snprintf(ctx[1].value, sizeof(ctx[1].value), "%s", argv[6]);
    const struct cl_aws_kv kv[2] = {{ctx[0].key, ctx[0].value}, {ctx[1].key, ctx[1].value}};
    struct cl_kmsc_endpoint ep = {.url = argv[3], .region = "us-east-1"};
    char arn[512];
    cl_err rc = cl_file_read(argv[1], pt.max, &pt);
    if (rc == CL_OK)
        rc = cl_kmsc_credentials_load(&cred);
    if (rc == CL_OK)
        rc = cl_kmsc_generate_data_key(&ep, &cred, argv[4], kv, 2, &key, &blob, arn, sizeof(arn));
    if (rc == CL_OK)
        rc = cl_random_bytes(salt, sizeof(salt));
    if (rc == CL_OK) {
        memcpy(dk, key.data, 32);
        memcpy(wrapped, blob.data, blob.len);
        struct cl_seal_params p = {.name = "forged", .arch = "llama", .n_ctx = 2, .ctx = ctx,
                                   .provider = CL_SEAL_PROVIDER_KMS, .key_id = arn, .wrapped = wrapped,
                                   .wrapped_len = blob.len};
        rc = cl_seal_write_file(argv[2], pt.data, pt.len, hdr, &p, dk, salt, 2, NULL, NULL);
    }
    cl_buf_free(&pt);
    cl_buf_free(&key);
    cl_buf_free(&blob);
    cl_wipe(dk, sizeof(dk));
    if (rc != CL_OK) {
        char b[300];
        fprintf(stderr, "cl_forge_sealed: %s\n", cl_err_format(rc, b, sizeof(b)));
        return 1;
    }
    return 0;
}
