/* Test fixture: a cloister-sim root (DIR/sim), an enclave RSA key (DIR/rsa.pem)
 * and a signed attestation document carrying its public key (DIR/doc.b64),
 * with PCRn = 48 bytes of (0x10 + n). Also DIR/root.pem (the sim root). */
#include <stdio.h>
#include <string.h>

#include "cloister/attest.h"
#include "cloister/encode.h"
#include "cloister/file.h"

int main(int argc, char **argv)
{
    char path[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: kms_recipient_fixture DIR\n");
        return 2;
    }
    cl_err rc;
    cl_attest_signer *s = NULL;
    cl_pkey *k = NULL;
    struct cl_buf pub, priv, doc, b64, root;
    cl_buf_init(&pub, 4096, CL_BUF_NONE);
    cl_buf_init(&priv, 8192, CL_BUF_SECURE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    cl_buf_init(&b64, 4 * CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    cl_buf_init(&root, 8192, CL_BUF_NONE);
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    for (int i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        memset(pcr[i], 0x10 + i, CL_ATTEST_PCR_LEN);
    snprintf(path, sizeof(path), "%s/sim", argv[1]);
    if ((rc = cl_attest_sim_init(path)) || (rc = cl_attest_signer_load(path, &s)))
        goto fail;
    cl_attest_signer_set_pcrs(s, 0xffff, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    if ((rc = cl_pkey_generate(CL_PKEY_RSA, &k)) || (rc = cl_pkey_public_der(k, &pub)) ||
        (rc = cl_pkey_private_pem(k, &priv)) ||
        (rc = cl_attest_signer_sign(s, pub.data, pub.len, NULL, 0, NULL, 0, &doc)) ||
        (rc = cl_b64_encode(doc.data, doc.len, CL_B64_STD, &b64)) || (rc = cl_attest_signer_root_der(s, &root)))
        goto fail;
    snprintf(path, sizeof(path), "%s/rsa.pem", argv[1]);
    if ((rc = cl_file_write_atomic(path, priv.data, priv.len, 0600, 1)))
        goto fail;
    snprintf(path, sizeof(path), "%s/doc.b64", argv[1]);
    if ((rc = cl_file_write_atomic(path, b64.data, b64.len, 0644, 1)))
        goto fail;
    snprintf(path, sizeof(path), "%s/root.der", argv[1]);
    if ((rc = cl_file_write_atomic(path, root.data, root.len, 0644, 1)))
        goto fail;
    printf("ok\n");
fail:
    if (rc) {
        char buf[400];
        fprintf(stderr, "fixture: %s\n", cl_err_format(rc, buf, sizeof(buf)));
    }
    cl_attest_signer_free(s);
    cl_pkey_free(k);
    cl_buf_free(&pub);
    cl_buf_free(&priv);
    cl_buf_free(&doc);
    cl_buf_free(&b64);
    cl_buf_free(&root);
    return rc ? 1 : 0;
}
