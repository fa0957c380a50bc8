/* Pieces shared between the files of cl_client. */
#ifndef CLOISTER_CLIENT_INTERNAL_H
#define CLOISTER_CLIENT_INTERNAL_H

#include "cloister/client.h"

/* DER certificate to one PEM block. */
CL_MUST_CHECK cl_err cl_client_pem_cert(const uint8_t *der, size_t n, struct cl_buf *out);

/* Checks the attested user_data against every pin of TRUST.json. */
CL_MUST_CHECK cl_err cl_client_check_pins(const struct cl_trust *t, const struct cl_attest_user_data *u);

#endif
