/* Batch jobs (docs/formats/job.md, docs/batch.md): the job and result
 * objects, their keys, and the enclave's signed receipts. Trusted side and
 * consumer side only (lib cl_batch): the untrusted worker moves these bytes
 * without parsing them. */
#ifndef CLOISTER_BATCH_H
#define CLOISTER_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/crypto.h"

#define CL_BATCH_KEY_LEN 32
#define CL_BATCH_ID_MAX 64
#define CL_BATCH_CONSUMER_MAX 128
#define CL_BATCH_KEY_ID_MAX 256
#define CL_BATCH_WRAPPED_MAX 4096
#define CL_BATCH_HEADER_MAX 8192
#define CL_BATCH_JOB_MAX_PLAINTEXT ((size_t)32 << 20)
#define CL_BATCH_RESULT_MAX_PLAINTEXT ((size_t)4 << 20)
#define CL_BATCH_OVERHEAD (8 + 4 + CL_BATCH_HEADER_MAX + CL_GCM_NONCE_LEN + CL_AEAD_TAG_LEN)
#define CL_BATCH_RECEIPT_MAX 4096
/* Encryption-context keys the job key is generated and released under. */
#define CL_BATCH_CTX_JOB_ID "cloister:job-id"
#define CL_BATCH_CTX_CONSUMER "cloister:consumer"

enum cl_batch_kind { CL_BATCH_KIND_NONE = 0, CL_BATCH_KIND_JOB, CL_BATCH_KIND_RESULT, CL_BATCH_KIND_COUNT };

struct cl_batch_job_header {
    char job_id[CL_BATCH_ID_MAX + 1];
    char consumer[CL_BATCH_CONSUMER_MAX + 1];
    char key_id[CL_BATCH_KEY_ID_MAX + 1];
    uint8_t wrapped[CL_BATCH_WRAPPED_MAX];
    size_t wrapped_len;
};

/* 1..64 of [A-Za-z0-9._-]. */
bool cl_batch_id_valid(const char *id);
/* 1..max printable ASCII without '"' and '\'. */
bool cl_batch_text_valid(const char *s, size_t max);
/* The request (KIND_JOB) or result (KIND_RESULT) key from the job key. */
CL_MUST_CHECK cl_err cl_batch_derive(const uint8_t job_key[CL_BATCH_KEY_LEN], const char *job_id, enum cl_batch_kind k,
                                     uint8_t out[CL_BATCH_KEY_LEN]);

/* Job object: header + request sealed under the request key. */
CL_MUST_CHECK cl_err cl_batch_job_seal(const struct cl_batch_job_header *h, const uint8_t job_key[CL_BATCH_KEY_LEN],
                                       const uint8_t *pt, size_t n, struct cl_buf *out);
/* Reads and checks the public header only (no key needed). */
CL_MUST_CHECK cl_err cl_batch_job_header_parse(const uint8_t *p, size_t n, struct cl_batch_job_header *h);
/* Opens the request (pt: a CL_BUF_SECURE buffer). */
CL_MUST_CHECK cl_err cl_batch_job_open(const uint8_t *p, size_t n, const uint8_t job_key[CL_BATCH_KEY_LEN],
                                       struct cl_buf *pt);

/* Result object for job_id; ok = false for an error answer. */
CL_MUST_CHECK cl_err cl_batch_result_seal(const char *job_id, bool ok, const uint8_t job_key[CL_BATCH_KEY_LEN],
                                          const uint8_t *pt, size_t n, struct cl_buf *out);
/* Opens a result; CL_E_PROTO_JOB_MISMATCH when it is another job's. */
CL_MUST_CHECK cl_err cl_batch_result_open(const uint8_t *p, size_t n, const char *job_id,
                                          const uint8_t job_key[CL_BATCH_KEY_LEN], bool *ok, struct cl_buf *pt);

/* ---- receipts: COSE_Sign1 (ES384, tagged) over a compact JSON payload ---- */
#define CL_BATCH_KIND_BATCH "batch"
#define CL_BATCH_KIND_INTERACTIVE "interactive"
struct cl_batch_receipt {
    uint64_t seq;                 /* 1.. per audit key */
    uint8_t prev[32];             /* SHA-256 of the previous receipt's bytes; zeros for seq 1 */
    char kind[16];                /* "batch" or "interactive" */
    char job_id[CL_BATCH_ID_MAX + 1]; /* interactive: the request id (the answer's "id") */
    char consumer[CL_BATCH_CONSUMER_MAX + 1];
    uint8_t model_sha256[32];
    bool has_projector;           /* images were used: projector_sha256 is in the payload */
    uint8_t projector_sha256[32];
    uint8_t attestation_sha256[32];
    uint8_t job_sha256[32];       /* interactive: the encapsulated request as relayed */
    uint8_t result_sha256[32];    /* interactive: the encapsulated response (all chunks, in order) */
    bool ok;
    char error[64];               /* error code name, "" when ok */
    uint32_t prompt_tokens, completion_tokens;
    uint64_t started_ms, duration_us;
};
CL_MUST_CHECK cl_err cl_batch_receipt_sign(const struct cl_batch_receipt *r, const cl_pkey *audit_key,
                                           struct cl_buf *out);
/* Parses the payload without verifying the signature. */
CL_MUST_CHECK cl_err cl_batch_receipt_parse(const uint8_t *p, size_t n, struct cl_batch_receipt *r);
/* CL_OK when the signature verifies with key (P-384 public key). */
CL_MUST_CHECK cl_err cl_batch_receipt_verify(const uint8_t *p, size_t n, const cl_pkey *key);

#endif
