/* Client side of the AWS KMS protocol (lib cl_kmsc; links no server code):
 * AWS credentials and region loading, and a small KMS JSON client for
 * GenerateDataKey and Decrypt that works against cloister-kms and AWS KMS
 * alike. What it shares with the server (SigV4, the Recipient envelope, the
 * encryption-context pair) is in cloister/aws.h and cloister/sigv4.h. */
#ifndef CLOISTER_KMS_CLIENT_H
#define CLOISTER_KMS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/aws.h"
#include "cloister/buf.h"
#include "cloister/crypto.h"

struct cl_kmsc_credentials {
    char access_key[129];
    char secret[257];        /* wiped by cl_kmsc_credentials_wipe */
    char session_token[4096];
};
/* AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else the
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials) for AWS_PROFILE (default "default"). */
CL_MUST_CHECK cl_err cl_kmsc_credentials_load(struct cl_kmsc_credentials *out);
void cl_kmsc_credentials_wipe(struct cl_kmsc_credentials *c);
/* AWS_REGION, AWS_DEFAULT_REGION, else the profile's region in
 * ~/.aws/config; out is left unchanged when none is found. */
CL_MUST_CHECK cl_err cl_kmsc_region_load(char *out, size_t n);

struct cl_kmsc_endpoint {
    const char *url;     /* "https://kms.us-east-1.amazonaws.com" or "http://127.0.0.1:8080"; NULL = AWS */
    const char *region;  /* signing region */
    const char *ca_file; /* optional extra CA bundle for https (default: $AWS_CA_BUNDLE, as AWS SDKs) */
    const char *ca_pem;  /* optional CA certificate(s) in memory (PEM), used instead of ca_file */
    /* Optional: reach the service through this UNIX socket instead of
     * dialling the URL's host ("@name" for the abstract namespace). An
     * enclave bridges it to the parent's vsock proxy. TLS and the Host
     * header still follow url. */
    const char *unix_socket;
    /* Optional: limit for the whole call in milliseconds (0: 30 s; the
     * connection phase at most 10 s). An enclave renewing a lease sets it
     * below the lease, so a host holding a call cannot stall its renewals. */
    uint32_t timeout_ms;
};

/* GenerateDataKey (AES_256). plaintext_key: CL_BUF_SECURE buffer of at
 * least 32 bytes; ciphertext_blob: the wrapped key to store; key_arn (cap
 * bytes, optional): the KeyId (ARN) the service answered with. */
CL_MUST_CHECK cl_err cl_kmsc_generate_data_key(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                              const char *key_id, const struct cl_aws_kv *enc_ctx, size_t n_ctx,
                                              struct cl_buf *plaintext_key, struct cl_buf *ciphertext_blob,
                                              char *key_arn, size_t cap);
/* Decrypt without Recipient (key_id may be NULL). */
CL_MUST_CHECK cl_err cl_kmsc_decrypt(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                         const char *key_id, const uint8_t *blob, size_t blob_len,
                                         const struct cl_aws_kv *enc_ctx, size_t n_ctx, struct cl_buf *plaintext);
/* Decrypt with Recipient: sends the attestation document and unwraps
 * CiphertextForRecipient with rsa_priv. key_arn (cap bytes) receives the
 * KeyId the service answered with (required: 1..cap-1 printable characters). */
CL_MUST_CHECK cl_err cl_kmsc_decrypt_for_recipient(const struct cl_kmsc_endpoint *ep,
                                                  const struct cl_kmsc_credentials *cred, const char *key_id,
                                                  const uint8_t *blob, size_t blob_len,
                                                  const struct cl_aws_kv *enc_ctx, size_t n_ctx,
                                                  const uint8_t *attestation_doc, size_t doc_len,
                                                  const cl_pkey *rsa_priv, struct cl_buf *plaintext,
                                                  char *key_arn, size_t cap);

/* Any operation: op ("DescribeKey") with a JSON body; *out is the parsed
 * JSON response (a jansson json_t, caller json_decref). Non-200 responses
 * fail with CL_E_NET_HTTP_STATUS naming the KMS exception. */
struct json_t;
CL_MUST_CHECK cl_err cl_kmsc_call(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                        const char *op, const char *body, struct json_t **out);

#endif
