/* Fuzzes the ciphertext blob header parser and the CMS Recipient unwrap. */
#include <stdlib.h>

#include "cloister/kms.h"
#include "cloister/aws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cl_pkey *rsa;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char kid[CL_KMS_KEY_ID_LEN + 1];
    (void)cl_kms_blob_key_id(data, size, kid);
    if (!rsa && cl_pkey_generate(CL_PKEY_RSA, &rsa) != CL_OK)
        abort();
    struct cl_buf pt;
    cl_buf_init(&pt, CL_AWS_CMS_MAX, CL_BUF_SECURE);
    (void)cl_aws_recipient_unwrap(rsa, data, size, &pt);
    cl_buf_free(&pt);
    return 0;
}
