/* What both sides of the AWS protocols share (lib cl_aws; links no server
 * and no client code): the encryption-context pair, and the Recipient
 * envelope (CMS EnvelopedData, as AWS KMS returns in CiphertextForRecipient).
 * SigV4 signing and verification, also in cl_aws, is in cloister/sigv4.h. */
#ifndef CLOISTER_AWS_H
#define CLOISTER_AWS_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/crypto.h"

#define CL_AWS_CMS_MAX (16 * 1024)

/* One encryption-context (or condition) key/value pair; both strings are
 * borrowed. */
struct cl_aws_kv {
    const char *key;
    const char *value;
};

/* Server side: CMS EnvelopedData with one KeyTransRecipientInfo
 * (RSAES-OAEP, SHA-256, MGF1-SHA-256) to the RSA public key rsa_pub
 * (SubjectPublicKeyInfo DER or PEM), content AES-256-CBC. DER into out. */
CL_MUST_CHECK cl_err cl_aws_recipient_wrap(const uint8_t *rsa_pub, size_t pub_len, const uint8_t *pt, size_t n,
                                           struct cl_buf *out);
/* Enclave side: checks the structure (EnvelopedData, exactly one KTRI,
 * RSAES-OAEP with SHA-256, AES-256-CBC content) and decrypts with the
 * enclave's RSA private key into pt (give a CL_BUF_SECURE buffer). */
CL_MUST_CHECK cl_err cl_aws_recipient_unwrap(const cl_pkey *rsa_priv, const uint8_t *cms, size_t n,
                                             struct cl_buf *pt);

#endif
