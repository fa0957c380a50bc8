/* Private to src/enclave: the key-service bridge boot.c dials. */
#ifndef CLOISTER_ENCLAVE_KMS_BRIDGE_H
#define CLOISTER_ENCLAVE_KMS_BRIDGE_H

#include <stddef.h>

#include "cloister/err.h"

/* Starts the abstract-UNIX-socket bridge to the key-service proxy; writes
 * its name ("@...") into name. */
CL_MUST_CHECK cl_err cl_kms_bridge_start(char *name, size_t cap);

#endif
