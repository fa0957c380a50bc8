/* Batch pipeline storage (docs/batch.md), one interface per concern, chosen
 * by URL: objects (`dir:PATH` or `s3://BUCKET[/PREFIX][?endpoint=URL]`),
 * queue (`sqlite:PATH` or `sqs://QUEUE[?endpoint=URL]`), results + receipts
 * (`sqlite:PATH` or `dynamodb://TABLE[?endpoint=URL]`). The AWS backends go
 * through libcurl and the SigV4 signer, with credentials from the usual AWS
 * variables and files and the region from AWS_REGION. Lib cl_batch_store: no
 * key-handling code, so the untrusted worker links it. Everything stored is ciphertext,
 * ids, sizes and timings. Writes are atomic: temp + rename for objects, one
 * transaction for rows; a full disk or file-size limit is CL_E_STORE_FULL. */
#ifndef CLOISTER_BATCH_STORE_H
#define CLOISTER_BATCH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_BSTORE_NAME_MAX 128 /* object names: [A-Za-z0-9._-], no leading '.' */
#define CL_BSTORE_ERROR_MAX 64
#define CL_BSTORE_DEFAULT_MAX_RECEIVES 3u
#define CL_BSTORE_DEFAULT_VISIBILITY_MS 60000u
#define CL_BSTORE_HANDLE_MAX 2048 /* SQS receipt handles are at most 1024 bytes */
#define CL_BSTORE_MESSAGE_MAX (64 * 1024) /* one queue message body */

/* Transient storage failures (a service unreachable, 5xx, throttled): the
 * job waits and is retried; anything else counts toward the dead letter. */
bool cl_bstore_err_transient(cl_err e);

/* ---- objects ---- */
typedef struct cl_bstore_objects cl_bstore_objects;
CL_MUST_CHECK cl_err cl_bstore_objects_open(const char *url, cl_bstore_objects **out);
void cl_bstore_objects_close(cl_bstore_objects *o);
bool cl_bstore_name_valid(const char *name);
CL_MUST_CHECK cl_err cl_bstore_objects_put(cl_bstore_objects *o, const char *name, const uint8_t *p, size_t n);
CL_MUST_CHECK cl_err cl_bstore_objects_get(cl_bstore_objects *o, const char *name, size_t max, struct cl_buf *out);
/* Size of name; CL_E_STORE_NOT_FOUND when absent. */
CL_MUST_CHECK cl_err cl_bstore_objects_head(cl_bstore_objects *o, const char *name, uint64_t *size);
/* Removes name; absent is not an error. */
CL_MUST_CHECK cl_err cl_bstore_objects_delete(cl_bstore_objects *o, const char *name);

/* ---- queue: at-least-once, visibility timeout, receive count, dead letters ---- */
typedef struct cl_bstore_queue cl_bstore_queue;
struct cl_bstore_msg {
    int64_t id;
    char job_id[CL_BSTORE_NAME_MAX + 1];
    char object[CL_BSTORE_NAME_MAX + 1];
    uint32_t receives; /* including this one */
    char handle[CL_BSTORE_HANDLE_MAX + 1]; /* SQS: the receipt handle */
};
/* One queue message body: Cloister's own {"job_id":ID,"object":NAME}, or an
 * S3 event notification (Records[].s3.object.key, URL-decoded; the object is
 * the key's last path segment, NAME.job for job NAME). *use = false for a
 * message to drop unprocessed (the s3:TestEvent, events other than
 * ObjectCreated, keys that are not job objects). Malformed bodies fail with
 * CL_E_STORE_MESSAGE naming the part. */
CL_MUST_CHECK cl_err cl_bstore_msg_parse(const char *body, size_t n, struct cl_bstore_msg *m, bool *use);
struct cl_bstore_queue_counts {
    uint64_t visible, in_flight, dead;
};
CL_MUST_CHECK cl_err cl_bstore_queue_open(const char *url, cl_bstore_queue **out);
void cl_bstore_queue_close(cl_bstore_queue *q);
CL_MUST_CHECK cl_err cl_bstore_queue_send(cl_bstore_queue *q, const char *job_id, const char *object);
/* *got = false when no message is visible now. */
CL_MUST_CHECK cl_err cl_bstore_queue_receive(cl_bstore_queue *q, uint32_t visibility_ms, struct cl_bstore_msg *m,
                                             bool *got);
CL_MUST_CHECK cl_err cl_bstore_queue_delete(cl_bstore_queue *q, const struct cl_bstore_msg *m);
/* Visible again after delay_ms (a failed attempt). */
CL_MUST_CHECK cl_err cl_bstore_queue_release(cl_bstore_queue *q, const struct cl_bstore_msg *m, uint32_t delay_ms);
/* Moves the message to the dead-letter table with an error record (a fixed
 * error code name), in one transaction. */
CL_MUST_CHECK cl_err cl_bstore_queue_dead_letter(cl_bstore_queue *q, const struct cl_bstore_msg *m, const char *error);
CL_MUST_CHECK cl_err cl_bstore_queue_counts(cl_bstore_queue *q, struct cl_bstore_queue_counts *c);
/* Dead letter of job_id, if any: error name and receive count. */
CL_MUST_CHECK cl_err cl_bstore_queue_dead_find(cl_bstore_queue *q, const char *job_id, char error[CL_BSTORE_ERROR_MAX + 1],
                                               uint32_t *receives, bool *found);

/* ---- results + receipts + the attestations that certify audit keys ---- */
typedef struct cl_bstore_results cl_bstore_results;
struct cl_bstore_put {
    const char *job_id;
    bool ok;
    const uint8_t *result;  /* result object */
    size_t result_len;
    const uint8_t *receipt; /* COSE_Sign1 */
    size_t receipt_len;
    const uint8_t *attestation; /* attestation document certifying the audit key */
    size_t attestation_len;
    const char *chain;          /* hex SHA-256 of the attestation document */
    uint64_t seq;
};
CL_MUST_CHECK cl_err cl_bstore_results_open(const char *url, cl_bstore_results **out);
void cl_bstore_results_close(cl_bstore_results *r);
/* One transaction: the attestation (once), the receipt (always: it is a link
 * of the enclave's chain), the result only when job_id has none yet
 * (*stored says whether it was). */
CL_MUST_CHECK cl_err cl_bstore_results_put(cl_bstore_results *r, const struct cl_bstore_put *p, bool *stored);
/* An interactive request's receipt (no result: the answer went to the
 * client) and, once per chain, the attestation; one transaction. */
CL_MUST_CHECK cl_err cl_bstore_results_put_receipt(cl_bstore_results *r, const char *chain, uint64_t seq,
                                                   const char *request_id, const uint8_t *receipt, size_t rn,
                                                   const uint8_t *att, size_t an);
/* The highest stored seq of chain (0 when none). */
CL_MUST_CHECK cl_err cl_bstore_results_chain_max(cl_bstore_results *r, const char *chain, uint64_t *max);
/* The result of job_id and the receipt written with it; CL_E_STORE_NOT_FOUND when none. */
CL_MUST_CHECK cl_err cl_bstore_results_get(cl_bstore_results *r, const char *job_id, bool *ok, struct cl_buf *result,
                                           struct cl_buf *receipt);
CL_MUST_CHECK cl_err cl_bstore_results_attestation(cl_bstore_results *r, const char *chain, struct cl_buf *doc);
/* Every receipt in stored order (rowid); fn returns false to stop. */
typedef bool (*cl_bstore_receipt_fn)(void *ctx, int64_t rowid, const uint8_t *receipt, size_t n);
CL_MUST_CHECK cl_err cl_bstore_results_each_receipt(cl_bstore_results *r, cl_bstore_receipt_fn fn, void *ctx);
/* Every stored result: job id and the SHA-256 input (the result bytes). */
typedef bool (*cl_bstore_result_fn)(void *ctx, const char *job_id, const uint8_t *result, size_t n,
                                    const uint8_t *receipt, size_t rn);
CL_MUST_CHECK cl_err cl_bstore_results_each_result(cl_bstore_results *r, cl_bstore_result_fn fn, void *ctx);
CL_MUST_CHECK cl_err cl_bstore_results_count(cl_bstore_results *r, uint64_t *results, uint64_t *receipts);

#endif
