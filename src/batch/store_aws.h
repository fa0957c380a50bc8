/* Scale-out backends of cl_batch_store (store_aws.c): S3, SQS, DynamoDB.
 * Private to src/batch; store.c dispatches to them by URL scheme. */
#ifndef CL_BATCH_STORE_AWS_H
#define CL_BATCH_STORE_AWS_H

#include "cloister/batch_store.h"

struct cl_bstore_s3;
struct cl_bstore_sqs;
struct cl_bstore_ddb;

CL_MUST_CHECK cl_err cl_bstore_s3_open(const char *url, struct cl_bstore_s3 **out);
void cl_bstore_s3_close(struct cl_bstore_s3 *s);
CL_MUST_CHECK cl_err cl_bstore_s3_put(struct cl_bstore_s3 *s, const char *name, const uint8_t *p, size_t n);
CL_MUST_CHECK cl_err cl_bstore_s3_get(struct cl_bstore_s3 *s, const char *name, size_t max, struct cl_buf *out);
CL_MUST_CHECK cl_err cl_bstore_s3_head(struct cl_bstore_s3 *s, const char *name, uint64_t *size);
CL_MUST_CHECK cl_err cl_bstore_s3_delete(struct cl_bstore_s3 *s, const char *name);

CL_MUST_CHECK cl_err cl_bstore_sqs_open(const char *url, struct cl_bstore_sqs **out);
void cl_bstore_sqs_close(struct cl_bstore_sqs *s);
CL_MUST_CHECK cl_err cl_bstore_sqs_send(struct cl_bstore_sqs *s, const char *job_id, const char *object);
CL_MUST_CHECK cl_err cl_bstore_sqs_receive(struct cl_bstore_sqs *s, uint32_t visibility_ms, struct cl_bstore_msg *m,
                                           bool *got);
CL_MUST_CHECK cl_err cl_bstore_sqs_delete(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m);
CL_MUST_CHECK cl_err cl_bstore_sqs_release(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m, uint32_t delay_ms);
CL_MUST_CHECK cl_err cl_bstore_sqs_dead_letter(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m,
                                               const char *error);
CL_MUST_CHECK cl_err cl_bstore_sqs_counts(struct cl_bstore_sqs *s, struct cl_bstore_queue_counts *c);
CL_MUST_CHECK cl_err cl_bstore_sqs_dead_find(struct cl_bstore_sqs *s, const char *job_id,
                                             char error[CL_BSTORE_ERROR_MAX + 1], uint32_t *receives, bool *found);

CL_MUST_CHECK cl_err cl_bstore_ddb_open(const char *url, struct cl_bstore_ddb **out);
void cl_bstore_ddb_close(struct cl_bstore_ddb *d);
CL_MUST_CHECK cl_err cl_bstore_ddb_put(struct cl_bstore_ddb *d, const struct cl_bstore_put *p, bool *stored);
CL_MUST_CHECK cl_err cl_bstore_ddb_get(struct cl_bstore_ddb *d, const char *job_id, bool *ok, struct cl_buf *result,
                                       struct cl_buf *receipt);
CL_MUST_CHECK cl_err cl_bstore_ddb_attestation(struct cl_bstore_ddb *d, const char *chain, struct cl_buf *doc);
CL_MUST_CHECK cl_err cl_bstore_ddb_each_receipt(struct cl_bstore_ddb *d, cl_bstore_receipt_fn fn, void *ctx);
CL_MUST_CHECK cl_err cl_bstore_ddb_each_result(struct cl_bstore_ddb *d, cl_bstore_result_fn fn, void *ctx);
CL_MUST_CHECK cl_err cl_bstore_ddb_count(struct cl_bstore_ddb *d, uint64_t *results, uint64_t *receipts);

#endif
