/* The JOB_RES frame's payload (docs/protocol.md section 4): what the enclave
 * hands back for a batch job. Three length-prefixed blobs (u32 BE each) —
 * result object, receipt, attestation document — then a compact JSON object
 * of public meta: {"job_id", "status": "ok"|"error", "chain": HEX64, "seq": N}.
 * One writer (enclave) and one strict reader (worker), both in cl_wire. */
#ifndef CLOISTER_WIRE_JOB_H
#define CLOISTER_WIRE_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_WIRE_JOB_ID_MAX 64

struct cl_wire_job_res {
    const uint8_t *result;
    size_t result_len;
    const uint8_t *receipt;
    size_t receipt_len;
    const uint8_t *attestation;
    size_t attestation_len;
    char job_id[CL_WIRE_JOB_ID_MAX + 1];
    bool ok;
    char chain[65]; /* hex SHA-256 of the attestation document */
    uint64_t seq;
};

CL_MUST_CHECK cl_err cl_wire_job_res_encode(const struct cl_wire_job_res *r, struct cl_buf *out);
/* The blobs point into p. */
CL_MUST_CHECK cl_err cl_wire_job_res_parse(const uint8_t *p, size_t n, struct cl_wire_job_res *r);

/* The RECEIPT frame's payload: what the enclave sends after an interactive
 * answer. Two length-prefixed blobs (u32 BE each) — receipt, attestation
 * document — then a compact JSON object of public meta:
 * {"request_id": ID, "chain": HEX64, "seq": N}. The meta only indexes the
 * store; `cloister audit verify` trusts nothing but the signed receipt. */
struct cl_wire_receipt {
    const uint8_t *receipt;
    size_t receipt_len;
    const uint8_t *attestation;
    size_t attestation_len;
    char request_id[CL_WIRE_JOB_ID_MAX + 1];
    char chain[65];
    uint64_t seq;
};
CL_MUST_CHECK cl_err cl_wire_receipt_encode(const struct cl_wire_receipt *r, struct cl_buf *out);
/* The blobs point into p. */
CL_MUST_CHECK cl_err cl_wire_receipt_parse(const uint8_t *p, size_t n, struct cl_wire_receipt *r);

#endif
