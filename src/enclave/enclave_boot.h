#ifndef CLOISTER_ENCLAVE_BOOT_H
#define CLOISTER_ENCLAVE_BOOT_H

#include "cloister/crypto.h"
#include "cloister/enclave.h"
#include "cloister/kms_client.h"
#include "cloister/nsm.h"

/* Lives in secure memory: it holds the key-service credentials. */
struct cl_enclave_boot {
    char kms_url[512];
    char kms_region[64];
    char kms_ca[32768]; /* optional extra CA (PEM) for an https key service */
    struct cl_aws_credentials cred;
    struct cl_enclave_limits limits;
    uint8_t config_sha256[32];
    uint8_t model_sha256[32];
    uint8_t *model; /* decrypted GGUF, secure memory */
    size_t model_len;
};

/* Starts the abstract-UNIX-socket bridge to the key-service proxy; writes
 * its name ("@...") into name. */
CL_MUST_CHECK cl_err cl_kms_bridge_start(char *name, size_t cap);
CL_MUST_CHECK cl_err cl_boot_get_config(struct cl_enclave_boot *bt);
CL_MUST_CHECK cl_err cl_boot_load_model(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads);
/* The attestation user_data: canonical CBOR {"v","audit_key","model_sha256","config_sha256"}. */
CL_MUST_CHECK cl_err cl_boot_user_data(const struct cl_enclave_boot *bt, const cl_pkey *audit, struct cl_buf *out);
void cl_boot_free(struct cl_enclave_boot *bt);

/* Serves the service port until a fatal error; see service.c. */
struct cl_service {
    cl_gateway *gw;
    cl_nsm *nsm;
    const uint8_t *user_data;
    size_t user_data_len;
    const struct cl_enclave_limits *limits;
    const char *model_name;
    const uint8_t *model_sha256;
};
CL_MUST_CHECK cl_err cl_service_run(struct cl_service *s);

#endif
