/* Batch jobs inside the enclave (docs/batch.md): the job key from the
 * consumer's key service with Decrypt + Recipient, the request through the
 * same generator as interactive requests, the answer sealed under the result
 * key, and a receipt signed by the attested audit key, chained per boot. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "cloister/batch.h"
#include "cloister/encode.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/wire.h"
#include "cloister/wire_job.h"
#include "cloister/enclave_runtime.h"
#include "kms_bridge.h"

/* A Recipient attestation is reused this long: the key service checks its age. */
#define CL_JOBS_RECIPIENT_TTL_US (60ull * 1000 * 1000)

struct cl_jobs {
    struct cl_enclave_boot *bt;
    cl_nsm *nsm;
    const cl_pkey *audit;
    struct cl_generator gen;
    const struct cl_enclave_limits *lim;
    cl_licence_table *licences; /* NULL: unlicensed model */
    char bridge[64];
    struct cl_buf att; /* certifies the audit key: user_data carries it */
    uint8_t att_sha[32];
    char att_hex[65];
    pthread_mutex_t rsa_mu; /* the Recipient key and its attestation */
    cl_pkey *rsa;
    struct cl_buf rsa_doc;
    uint64_t rsa_at_us;
    bool wiped; /* a licence lease ended: no Recipient key any more (rsa_mu) */
    pthread_mutex_t chain_mu; /* seq and head advance only when a receipt was sent */
    uint64_t seq;
    uint8_t head[32];
};

cl_err cl_jobs_new(struct cl_enclave_boot *bt, cl_nsm *nsm, const cl_pkey *audit, const uint8_t *ud, size_t ud_len,
                   const struct cl_generator *gen, const struct cl_enclave_limits *lim, struct cl_jobs **out)
{
    cl_err rc = CL_OK;
    struct cl_jobs *j = calloc(1, sizeof(*j));
    CL_ENSURE(j, CL_E_CORE_NOMEM);
    j->bt = bt;
    j->nsm = nsm;
    j->audit = audit;
    j->gen = *gen;
    j->lim = lim;
    pthread_mutex_init(&j->rsa_mu, NULL);
    pthread_mutex_init(&j->chain_mu, NULL);
    cl_buf_init(&j->att, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    cl_buf_init(&j->rsa_doc, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    pthread_mutex_lock(&cl_enclave_nsm_mu);
    rc = cl_nsm_attestation(nsm, ud, ud_len, NULL, 0, NULL, 0, &j->att);
    pthread_mutex_unlock(&cl_enclave_nsm_mu);
    CL_GUARD(rc);
    CL_GUARD(cl_sha256(j->att.data, j->att.len, j->att_sha));
    cl_hex_encode(j->att_sha, 32, j->att_hex);
    CL_GUARD(cl_kms_bridge_start(j->bridge, sizeof(j->bridge)));
    *out = j;
    j = NULL;
out:
    cl_jobs_free(j);
    return rc;
}

void cl_jobs_free(struct cl_jobs *j)
{
    if (!j)
        return;
    cl_pkey_free(j->rsa);
    cl_buf_free(&j->rsa_doc);
    cl_buf_free(&j->att);
    pthread_mutex_destroy(&j->rsa_mu);
    pthread_mutex_destroy(&j->chain_mu);
    free(j);
}

/* Decrypt + Recipient with the context rebuilt from the header: a header
 * whose id or consumer was changed gets no key. */
static cl_err cl_jobs_key(struct cl_jobs *j, const struct cl_batch_job_header *h, uint8_t key[CL_BATCH_KEY_LEN])
{
    cl_err rc = CL_OK;
    struct cl_buf pt;
    char arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1];
    cl_buf_init(&pt, 256, CL_BUF_SECURE);
    struct cl_aws_kv ctx[2] = {{CL_BATCH_CTX_CONSUMER, h->consumer}, {CL_BATCH_CTX_JOB_ID, h->job_id}};
    struct cl_enclave_boot *bt = j->bt;
    struct cl_kmsc_endpoint ep = {.url = bt->cfg.kms_endpoint, .region = bt->cfg.kms_region, .unix_socket = j->bridge,
                                 .ca_pem = bt->cfg.kms_ca_pem[0] ? bt->cfg.kms_ca_pem : NULL};
    pthread_mutex_lock(&j->rsa_mu);
    if (j->wiped) {
        pthread_mutex_unlock(&j->rsa_mu);
        return cl_err_fail(CL_E_PROTO_LICENCE_LEASE_ENDED, "the licence lease ended: the job keys were wiped");
    }
    if (!j->rsa || cl_now_us() - j->rsa_at_us > CL_JOBS_RECIPIENT_TTL_US) {
        struct cl_buf spki;
        cl_buf_init(&spki, 4096, CL_BUF_NONE);
        cl_pkey_free(j->rsa);
        j->rsa = NULL;
        j->rsa_doc.len = 0;
        rc = cl_pkey_generate(CL_PKEY_RSA, &j->rsa);
        if (rc == CL_OK)
            rc = cl_pkey_public_der(j->rsa, &spki);
        if (rc == CL_OK) {
            pthread_mutex_lock(&cl_enclave_nsm_mu);
            rc = cl_nsm_attestation(j->nsm, NULL, 0, NULL, 0, spki.data, spki.len, &j->rsa_doc);
            pthread_mutex_unlock(&cl_enclave_nsm_mu);
        }
        j->rsa_at_us = cl_now_us();
        cl_buf_free(&spki);
        if (rc != CL_OK) {
            cl_pkey_free(j->rsa);
            j->rsa = NULL;
        }
    }
    if (rc == CL_OK)
        rc = cl_kmsc_decrypt_for_recipient(&ep, &bt->cred, h->key_id, h->wrapped, h->wrapped_len, ctx, 2,
                                           j->rsa_doc.data, j->rsa_doc.len, j->rsa, &pt, arn, sizeof(arn));
    pthread_mutex_unlock(&j->rsa_mu);
    CL_GUARD(rc);
    CL_ENSURE_D(pt.len == CL_BATCH_KEY_LEN, CL_E_SEAL_UNWRAP, "job key of %zu bytes", pt.len);
    memcpy(key, pt.data, CL_BATCH_KEY_LEN);
out:
    cl_buf_free(&pt);
    return rc;
}

void cl_jobs_wipe_keys(struct cl_jobs *j)
{
    pthread_mutex_lock(&j->rsa_mu);
    j->wiped = true;
    cl_pkey_free(j->rsa); /* OpenSSL clears the private key when it frees it */
    j->rsa = NULL;
    j->rsa_doc.len = 0;
    pthread_mutex_unlock(&j->rsa_mu);
}

void cl_jobs_set_licences(struct cl_jobs *j, cl_licence_table *t) { j->licences = t; }

/* The consumer's credential rides inside the job encryption as the request's
 * member CL_JOB_CREDENTIAL_MEMBER (docs/formats/job.md). Admits the job
 * against the licence table, or names the refusal in *refusal (then *out is
 * the error object sealed for the consumer). The credential's copy in the
 * parsed request is wiped either way. */
static cl_err cl_jobs_licence(struct cl_jobs *j, json_t *root, size_t *slot, cl_err *refusal, json_t **out)
{
    json_t *v = json_object_get(root, CL_JOB_CREDENTIAL_MEMBER);
    const uint8_t *cred = NULL;
    size_t n = 0;
    *refusal = CL_OK;
    if (json_is_string(v)) {
        cred = (const uint8_t *)json_string_value(v);
        n = json_string_length(v);
        if (!n)
            cred = NULL;
    } else if (v) {
        cred = (const uint8_t *)"?"; /* not a string: an unknown credential, not a missing one */
        n = 1;
    }
    cl_err lrc = cl_licence_table_admit(j->licences, cred, n, (uint64_t)time(NULL), slot);
    if (json_is_string(v) && n)
        cl_wipe((void *)json_string_value(v), n);
    if (lrc == CL_OK)
        return CL_OK;
    *refusal = lrc;
    CL_LOG(CL_LOG_INFO, "licence_refused", CL_LOG_LIT("kind", "batch"), CL_LOG_ERR(lrc));
    int st = cl_licence_http_status(lrc);
    char msg[200];
    snprintf(msg, sizeof(msg), "licence: %s", cl_err_str(lrc));
    *out = json_pack("{s:{s:s,s:s,s:s,s:i}}", "error", "message", msg, "type",
                     st == 401 ? "authentication_error" : st == 429 ? "rate_limit_error" : "permission_error", "code",
                     cl_err_name(lrc), "status", st ? st : 403);
    return *out ? CL_OK : CL_E_CORE_NOMEM;
}

struct cl_jobs_text {
    struct cl_buf raw;
};

static bool cl_jobs_piece(void *ctx, const char *text, size_t len)
{
    struct cl_jobs_text *t = ctx;
    return cl_buf_append(&t->raw, text, len) == CL_OK;
}

/* The answer as the interactive path gives it (a chat.completion object), or
 * an error object; *ok says which. */
static cl_err cl_jobs_run(struct cl_jobs *j, const char *job_id, const struct cl_buf *req, struct cl_buf *answer,
                          bool *ok, bool *images, struct cl_chat_result *res, cl_err *refusal)
{
    cl_err rc = CL_OK;
    json_t *root = NULL, *out = NULL;
    struct cl_chat_params p;
    const char *why = NULL;
    bool parsed = false;
    char *txt = NULL;
    struct cl_jobs_text t;
    struct cl_buf clean;
    size_t used = 0;
    cl_buf_init(&t.raw, (size_t)j->lim->max_tokens * 64 + 4096, CL_BUF_SECURE);
    cl_buf_init(&clean, (size_t)j->lim->max_tokens * 64 + 8192, CL_BUF_SECURE);
    struct cl_chat_msg *msgs = calloc(j->lim->max_messages + 1, sizeof(*msgs));
    CL_ENSURE(msgs, CL_E_CORE_NOMEM);
    *ok = false;
    *refusal = CL_OK;
    size_t lslot = 0;
    rc = cl_chat_request_parse(req->data, req->len, j->lim, &root, msgs, &p, &why);
    if (rc != CL_OK) {
        out = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", why ? why : "invalid request", "type",
                        "invalid_request_error", "code", cl_err_name(rc));
        rc = CL_OK;
    } else {
        parsed = true;
        *images = p.n_images > 0;
        p.stream = false;
        p.wait_for_slot = true; /* a job waits for room in the engine, it is not refused */
        if (j->licences) {
            CL_GUARD(cl_jobs_licence(j, root, &lslot, refusal, &out));
            if (*refusal != CL_OK)
                goto answer;
        }
        rc = j->gen.generate(j->gen.self, &p, cl_jobs_piece, &t, res);
        if (j->licences) /* charged like an interactive request */
            cl_licence_table_charge_split(j->licences, lslot, res->prompt_tokens, res->completion_tokens);
        if (rc == CL_OK)
            rc = cl_utf8_take(t.raw.data, t.raw.len, true, &clean, &used);
        if (rc != CL_OK && res->bad_image) {
            /* which image and what kind of fault, never its content */
            char m[160];
            snprintf(m, sizeof(m), "image %u could not be used: %s", (unsigned)res->bad_image, cl_err_str(rc));
            out = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", m, "type", "invalid_request_error", "code",
                            cl_err_name(rc));
            rc = CL_OK;
        } else if (rc == CL_E_PROTO_LICENCE_LEASE_ENDED) { /* the lease ended mid-job: named, in the receipt too */
            char m[160];
            snprintf(m, sizeof(m), "licence: %s", cl_err_str(rc));
            out = json_pack("{s:{s:s,s:s,s:s,s:i}}", "error", "message", m, "type", "server_error", "code",
                            cl_err_name(rc), "status", 503);
            *refusal = rc;
            rc = CL_OK;
        } else if (rc != CL_OK) {
            out = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", "generation failed", "type", "server_error",
                            "code", cl_err_name(rc));
            rc = CL_OK;
        } else {
            char id[16 + CL_BATCH_ID_MAX];
            snprintf(id, sizeof(id), "chatcmpl-%s", job_id);
            json_t *msg = json_pack("{s:s,s:s%}", "role", "assistant", "content",
                                    clean.data ? (const char *)clean.data : "", clean.len);
            json_t *usage = json_pack("{s:i,s:i,s:i}", "prompt_tokens", res->prompt_tokens, "completion_tokens",
                                      res->completion_tokens, "total_tokens",
                                      res->prompt_tokens + res->completion_tokens);
            out = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}],s:o}", "id", id, "object", "chat.completion",
                            "created", (json_int_t)time(NULL), "model", j->gen.model_name, "choices", "index", 0,
                            "message", msg, "finish_reason",
                            res->finish == CL_CHAT_FINISH_LENGTH ? "length" : "stop", "usage", usage);
            *ok = true;
        }
    }
answer:
    CL_ENSURE(out, CL_E_CORE_NOMEM);
    txt = json_dumps(out, JSON_COMPACT);
    CL_ENSURE(txt, CL_E_CORE_NOMEM);
    CL_GUARD(cl_buf_append(answer, txt, strlen(txt)));
out:
    cl_json_free_str(txt);
    json_decref(out);
    if (parsed)
        cl_chat_params_release(&p);
    json_decref(root);
    free(msgs);
    cl_buf_free(&t.raw);
    cl_buf_free(&clean);
    return rc;
}

/* What every receipt of this enclave states alike: kind, id, consumer, the
 * digests the enclave computed of its model (and projector, when it read
 * images) and of its attestation document. */
static void cl_jobs_receipt_base(const struct cl_jobs *j, const char *kind, const char *id, const char *consumer,
                                 bool images, struct cl_batch_receipt *r)
{
    snprintf(r->kind, sizeof(r->kind), "%s", kind);
    snprintf(r->job_id, sizeof(r->job_id), "%s", id);
    snprintf(r->consumer, sizeof(r->consumer), "%s", consumer);
    memcpy(r->model_sha256, j->bt->model_sha256, 32);
    if (images && j->bt->has_mmproj) { /* the projector read these images */
        r->has_projector = true;
        memcpy(r->projector_sha256, j->bt->mmproj_sha256, 32);
    }
    memcpy(r->attestation_sha256, j->att_sha, 32);
}

/* The chain's lock is held while a receipt is sent: a peer that stops
 * reading must not hold every other receipt for longer than this. */
static void cl_jobs_send_timeout(const struct cl_jobs *j, int fd)
{
    struct timeval tv = {(time_t)(j->lim->request_timeout_ms / 1000),
                         (suseconds_t)(j->lim->request_timeout_ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

cl_err cl_jobs_handle(struct cl_jobs *j, int fd, const uint8_t *job, size_t n)
{
    cl_err rc = CL_OK;
    uint8_t key[CL_BATCH_KEY_LEN];
    struct cl_buf req, answer, result, receipt, frame;
    struct cl_chat_result res = {0};
    struct cl_batch_receipt r;
    bool ok = false, locked = false, images = false;
    uint64_t t0 = cl_now_us();
    struct cl_batch_job_header *h = malloc(sizeof(*h));
    cl_buf_init(&req, CL_BATCH_JOB_MAX_PLAINTEXT, CL_BUF_SECURE);
    cl_buf_init(&answer, CL_BATCH_RESULT_MAX_PLAINTEXT, CL_BUF_SECURE);
    cl_buf_init(&result, CL_BATCH_RESULT_MAX_PLAINTEXT + CL_BATCH_OVERHEAD, CL_BUF_NONE);
    cl_buf_init(&receipt, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    cl_buf_init(&frame, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    memset(&r, 0, sizeof(r));
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_batch_job_header_parse(job, n, h));
    /* After a lease's end the key-service credentials are gone: say why
     * instead of failing the key release (the worker counts it towards the
     * dead-letter queue: it is not transient). */
    CL_ENSURE_D(!j->licences || (uint64_t)time(NULL) < cl_licence_table_lease_end(j->licences),
                CL_E_PROTO_LICENCE_LEASE_ENDED, "the licence lease ended: the model is no longer served");
    CL_GUARD(cl_jobs_key(j, h, key));
    uint64_t t_key = cl_now_us();
    CL_GUARD(cl_batch_job_open(job, n, key, &req));
    cl_err refusal = CL_OK;
    CL_GUARD(cl_jobs_run(j, h->job_id, &req, &answer, &ok, &images, &res, &refusal));
    CL_GUARD(cl_batch_result_seal(h->job_id, ok, key, answer.data, answer.len, &result));

    cl_jobs_receipt_base(j, "batch", h->job_id, h->consumer, images, &r);
    CL_GUARD(cl_sha256(job, n, r.job_sha256));
    CL_GUARD(cl_sha256(result.data, result.len, r.result_sha256));
    r.ok = ok;
    if (!ok)
        snprintf(r.error, sizeof(r.error), "%s", refusal != CL_OK ? cl_err_name(refusal) : "REQUEST");
    r.prompt_tokens = res.prompt_tokens;
    r.completion_tokens = res.completion_tokens;
    r.started_ms = (uint64_t)time(NULL) * 1000 - (cl_now_us() - t0) / 1000;
    r.duration_us = cl_now_us() - t0;

    cl_jobs_send_timeout(j, fd);
    pthread_mutex_lock(&j->chain_mu);
    locked = true;
    r.seq = j->seq + 1;
    memcpy(r.prev, j->head, 32);
    CL_GUARD(cl_batch_receipt_sign(&r, j->audit, &receipt));
    struct cl_wire_job_res wr = {result.data, result.len, receipt.data, receipt.len, j->att.data, j->att.len,
                                 "", ok, "", r.seq};
    snprintf(wr.job_id, sizeof(wr.job_id), "%s", h->job_id);
    memcpy(wr.chain, j->att_hex, sizeof(wr.chain));
    CL_GUARD(cl_wire_job_res_encode(&wr, &frame));
    CL_GUARD(cl_wire_send(fd, CL_WIRE_JOB_RES, 0, frame.data, frame.len));
    /* Sent: only now is this receipt the chain's head (a worker that died
     * before reading it leaves no gap). */
    j->seq = r.seq;
    CL_GUARD(cl_sha256(receipt.data, receipt.len, j->head));
    CL_LOG(CL_LOG_INFO, "job_done", CL_LOG_COUNT("seq", r.seq), CL_LOG_SIZE("job_bytes", n),
           CL_LOG_SIZE("result_bytes", result.len), CL_LOG_COUNT("prompt_tokens", res.prompt_tokens),
           CL_LOG_COUNT("completion_tokens", res.completion_tokens), CL_LOG_US("key_us", t_key - t0),
           CL_LOG_US("duration_us", cl_now_us() - t0));
out:
    if (locked)
        pthread_mutex_unlock(&j->chain_mu);
    if (rc != CL_OK)
        CL_LOG(CL_LOG_WARN, "job_failed", CL_LOG_SIZE("job_bytes", n), CL_LOG_ERR(rc));
    cl_wipe(key, sizeof(key));
    free(h);
    cl_buf_free(&req);
    cl_buf_free(&answer);
    cl_buf_free(&result);
    cl_buf_free(&receipt);
    cl_buf_free(&frame);
    return rc;
}

cl_err cl_jobs_receipt_interactive(struct cl_jobs *j, int fd, const struct cl_gw_outcome *oc,
                                   const uint8_t req_sha[32], const uint8_t res_sha[32], uint64_t started_ms,
                                   uint64_t duration_us)
{
    cl_err rc = CL_OK;
    struct cl_batch_receipt r;
    struct cl_buf receipt, frame;
    bool locked = false;
    cl_buf_init(&receipt, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    cl_buf_init(&frame, CL_BATCH_RECEIPT_MAX + CL_NSM_RESPONSE_MAX + 512, CL_BUF_NONE);
    memset(&r, 0, sizeof(r));
    cl_jobs_receipt_base(j, CL_BATCH_KIND_INTERACTIVE, oc->request_id, oc->consumer, oc->images, &r);
    memcpy(r.job_sha256, req_sha, 32);
    memcpy(r.result_sha256, res_sha, 32);
    r.ok = oc->status == 200 && !oc->failed;
    if (!r.ok)
        snprintf(r.error, sizeof(r.error), oc->failed ? "STREAM_FAILED" : "HTTP_%u", (unsigned)oc->status);
    r.prompt_tokens = oc->prompt_tokens;
    r.completion_tokens = oc->completion_tokens;
    r.started_ms = started_ms;
    r.duration_us = duration_us;
    cl_jobs_send_timeout(j, fd);
    pthread_mutex_lock(&j->chain_mu);
    locked = true;
    r.seq = j->seq + 1;
    memcpy(r.prev, j->head, 32);
    CL_GUARD(cl_batch_receipt_sign(&r, j->audit, &receipt));
    struct cl_wire_receipt wr = {receipt.data, receipt.len, j->att.data, j->att.len, "", "", r.seq};
    snprintf(wr.request_id, sizeof(wr.request_id), "%s", oc->request_id);
    memcpy(wr.chain, j->att_hex, sizeof(wr.chain));
    CL_GUARD(cl_wire_receipt_encode(&wr, &frame));
    CL_GUARD(cl_wire_send(fd, CL_WIRE_RECEIPT, 0, frame.data, frame.len));
    j->seq = r.seq;
    CL_GUARD(cl_sha256(receipt.data, receipt.len, j->head));
    CL_LOG(CL_LOG_INFO, "receipt_sent", CL_LOG_COUNT("seq", r.seq), CL_LOG_COUNT("ok", r.ok),
           CL_LOG_COUNT("prompt_tokens", r.prompt_tokens), CL_LOG_COUNT("completion_tokens", r.completion_tokens));
out:
    if (locked)
        pthread_mutex_unlock(&j->chain_mu);
    if (rc != CL_OK)
        CL_LOG(CL_LOG_WARN, "receipt_not_sent", CL_LOG_ERR(rc));
    cl_buf_free(&receipt);
    cl_buf_free(&frame);
    return rc;
}
