#ifndef CLOISTER_ENCLAVE_BOOT_H
#define CLOISTER_ENCLAVE_BOOT_H

#include "cloister/attest_user_data.h"
#include "cloister/bootcfg.h"
#include "cloister/crypto.h"
#include "cloister/enclave.h"
#include "cloister/kms_client.h"
#include "cloister/nsm.h"
#include "cloister/seal.h"

/* Lives in secure memory: it holds the key-service credentials. */
struct cl_enclave_boot {
    struct cl_bootcfg cfg; /* as the host sent it (checked by cl_bootcfg_parse) */
    struct cl_kmsc_credentials cred;
    struct cl_enclave_limits limits;
    uint8_t config_sha256[32]; /* of cl_boot_config_text */
    /* Computed here, over the plaintext loaded: never the header's claim. */
    uint8_t model_sha256[32];
    char kms_key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1]; /* the KeyId the key service answered with */
    uint8_t *model; /* decrypted GGUF, secure memory */
    size_t model_len;
};

/* Starts the abstract-UNIX-socket bridge to the key-service proxy; writes
 * its name ("@...") into name. */
CL_MUST_CHECK cl_err cl_kms_bridge_start(char *name, size_t cap);
CL_MUST_CHECK cl_err cl_boot_get_config(struct cl_enclave_boot *bt);
/* The canonical public text of the configuration (credentials excluded)
 * whose SHA-256 is config_sha256 (docs/protocol.md section 4). */
CL_MUST_CHECK cl_err cl_boot_config_text(const struct cl_bootcfg *c, struct cl_buf *out);
/* The sealed header's model-digest claim must be the value of the
 * cloister:model-sha256 encryption context the key is released under. */
CL_MUST_CHECK cl_err cl_boot_check_context(const struct cl_seal_header *h);
CL_MUST_CHECK cl_err cl_boot_load_model(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads);
/* The attestation user_data (cloister/attest_user_data.h). */
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
