/* Receipts: COSE_Sign1 (ES384, tagged) by the enclave's attested audit key
 * over one compact JSON object, members in a fixed order (docs/batch.md). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cloister/batch.h"
#include "cloister/cose.h"
#include "cloister/encode.h"

static void cl_rcpt_hex(const uint8_t d[32], char out[65]) { cl_hex_encode(d, 32, out); }

/* Member names of the id and the two ciphertext digests, by kind. */
struct cl_rcpt_names {
    const char *id, *in, *out;
};

static bool cl_rcpt_names_of(const char *kind, struct cl_rcpt_names *n)
{
    if (!strcmp(kind, CL_BATCH_KIND_BATCH)) {
        *n = (struct cl_rcpt_names){"job_id", "job_sha256", "result_sha256"};
        return true;
    }
    if (!strcmp(kind, CL_BATCH_KIND_INTERACTIVE)) {
        *n = (struct cl_rcpt_names){"request_id", "request_sha256", "response_sha256"};
        return true;
    }
    return false;
}

cl_err cl_batch_receipt_sign(const struct cl_batch_receipt *r, const cl_pkey *audit_key, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char prev[65], model[65], proj[65], att[65], job[65], res[65];
    struct cl_rcpt_names nm;
    struct cl_buf p;
    cl_buf_init(&p, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    CL_ENSURE_D(cl_batch_id_valid(r->job_id) && cl_batch_text_valid(r->consumer, CL_BATCH_CONSUMER_MAX) &&
                    cl_rcpt_names_of(r->kind, &nm) && (r->error[0] == 0 || cl_batch_id_valid(r->error)),
                CL_E_PROTO_RECEIPT_MALFORMED, "receipt fields");
    cl_rcpt_hex(r->prev, prev);
    cl_rcpt_hex(r->model_sha256, model);
    cl_rcpt_hex(r->projector_sha256, proj);
    cl_rcpt_hex(r->attestation_sha256, att);
    cl_rcpt_hex(r->job_sha256, job);
    cl_rcpt_hex(r->result_sha256, res);
    CL_GUARD(cl_buf_appendf(&p, "{\"v\":1,\"kind\":\"%s\",\"seq\":%llu,\"prev\":\"%s\",\"%s\":\"%s\",\"consumer\":\"%s\","
                                "\"model_sha256\":\"%s\",",
                            r->kind, (unsigned long long)r->seq, prev, nm.id, r->job_id, r->consumer, model));
    if (r->has_projector)
        CL_GUARD(cl_buf_appendf(&p, "\"projector_sha256\":\"%s\",", proj));
    CL_GUARD(cl_buf_appendf(&p,
                            "\"attestation_sha256\":\"%s\",\"%s\":\"%s\",\"%s\":\"%s\",\"status\":\"%s\",\"error\":\"%s\","
                            "\"prompt_tokens\":%u,\"completion_tokens\":%u,\"started_ms\":%llu,\"duration_us\":%llu}",
                            att, nm.in, job, nm.out, res, r->ok ? "ok" : "error", r->error, r->prompt_tokens,
                            r->completion_tokens, (unsigned long long)r->started_ms,
                            (unsigned long long)r->duration_us));
    CL_GUARD(cl_cose_sign1_sign_es384(audit_key, p.data, p.len, true, out));
out:
    cl_buf_free(&p);
    return rc;
}

static cl_err cl_rcpt_str(json_t *j, const char *k, char *dst, size_t cap)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return cl_err_fail(CL_E_PROTO_RECEIPT_MALFORMED, "member %s", k);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CL_OK;
}

static cl_err cl_rcpt_digest(json_t *j, const char *k, uint8_t out[32])
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v) || cl_hex_decode_fixed(json_string_value(v), json_string_length(v), out, 32) != CL_OK)
        return cl_err_fail(CL_E_PROTO_RECEIPT_MALFORMED, "member %s", k);
    return CL_OK;
}

static cl_err cl_rcpt_uint(json_t *j, const char *k, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return cl_err_fail(CL_E_PROTO_RECEIPT_MALFORMED, "member %s", k);
    *out = (uint64_t)json_integer_value(v);
    return CL_OK;
}

cl_err cl_batch_receipt_parse(const uint8_t *p, size_t n, struct cl_batch_receipt *r)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    json_t *j = NULL;
    json_error_t e;
    char st[8];
    struct cl_rcpt_names nm;
    uint64_t v = 0, pt = 0, ct = 0;
    struct cl_cbor_limits lim = {0};
    memset(r, 0, sizeof(*r));
    lim.max_depth = 4;
    lim.max_items = 16;
    lim.max_input = CL_BATCH_RECEIPT_MAX;
    lim.max_map_pairs = 8;
    CL_ENSURE_D(n <= CL_BATCH_RECEIPT_MAX, CL_E_PROTO_RECEIPT_MALFORMED, "receipt of %zu bytes", n);
    rc = cl_cose_sign1_parse(p, n, CL_COSE_PROFILE_NITRO, &lim, &s);
    CL_ENSURE_D(rc == CL_OK, CL_E_PROTO_RECEIPT_MALFORMED, "not a COSE_Sign1 ES384 structure");
    j = json_loadb((const char *)s.payload, s.payload_len, JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(j && json_is_object(j), CL_E_PROTO_RECEIPT_MALFORMED, "payload is not the receipt object");
    r->has_projector = json_object_get(j, "projector_sha256") != NULL;
    CL_ENSURE_D(json_object_size(j) == (r->has_projector ? 17u : 16u), CL_E_PROTO_RECEIPT_MALFORMED,
                "payload is not the receipt object");
    CL_GUARD(cl_rcpt_uint(j, "v", 1, &v));
    CL_ENSURE_D(v == 1, CL_E_PROTO_RECEIPT_MALFORMED, "version");
    CL_GUARD(cl_rcpt_str(j, "kind", r->kind, sizeof(r->kind)));
    CL_ENSURE_D(cl_rcpt_names_of(r->kind, &nm), CL_E_PROTO_RECEIPT_MALFORMED, "kind");
    CL_GUARD(cl_rcpt_uint(j, "seq", UINT64_MAX >> 12, &r->seq));
    CL_GUARD(cl_rcpt_digest(j, "prev", r->prev));
    CL_GUARD(cl_rcpt_str(j, nm.id, r->job_id, sizeof(r->job_id)));
    CL_GUARD(cl_rcpt_str(j, "consumer", r->consumer, sizeof(r->consumer)));
    CL_GUARD(cl_rcpt_digest(j, "model_sha256", r->model_sha256));
    if (r->has_projector)
        CL_GUARD(cl_rcpt_digest(j, "projector_sha256", r->projector_sha256));
    CL_GUARD(cl_rcpt_digest(j, "attestation_sha256", r->attestation_sha256));
    CL_GUARD(cl_rcpt_digest(j, nm.in, r->job_sha256));
    CL_GUARD(cl_rcpt_digest(j, nm.out, r->result_sha256));
    CL_GUARD(cl_rcpt_str(j, "status", st, sizeof(st)));
    CL_GUARD(cl_rcpt_str(j, "error", r->error, sizeof(r->error)));
    CL_GUARD(cl_rcpt_uint(j, "prompt_tokens", UINT32_MAX, &pt));
    CL_GUARD(cl_rcpt_uint(j, "completion_tokens", UINT32_MAX, &ct));
    CL_GUARD(cl_rcpt_uint(j, "started_ms", UINT64_MAX >> 12, &r->started_ms));
    CL_GUARD(cl_rcpt_uint(j, "duration_us", UINT64_MAX >> 12, &r->duration_us));
    CL_ENSURE_D(!strcmp(st, "ok") || !strcmp(st, "error"), CL_E_PROTO_RECEIPT_MALFORMED, "member status");
    CL_ENSURE_D(cl_batch_id_valid(r->kind) && cl_batch_id_valid(r->job_id) &&
                    cl_batch_text_valid(r->consumer, CL_BATCH_CONSUMER_MAX) &&
                    (!r->error[0] || cl_batch_id_valid(r->error)),
                CL_E_PROTO_RECEIPT_MALFORMED, "kind, job_id, consumer or error");
    r->ok = !strcmp(st, "ok");
    r->prompt_tokens = (uint32_t)pt;
    r->completion_tokens = (uint32_t)ct;
out:
    json_decref(j);
    cl_cose_sign1_free(&s);
    return rc;
}

cl_err cl_batch_receipt_verify(const uint8_t *p, size_t n, const cl_pkey *key)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    struct cl_cbor_limits lim = {0};
    lim.max_depth = 4;
    lim.max_items = 16;
    lim.max_input = CL_BATCH_RECEIPT_MAX;
    lim.max_map_pairs = 8;
    CL_ENSURE_D(n <= CL_BATCH_RECEIPT_MAX && cl_cose_sign1_parse(p, n, CL_COSE_PROFILE_NITRO, &lim, &s) == CL_OK,
                CL_E_PROTO_RECEIPT_MALFORMED, "not a COSE_Sign1 ES384 structure");
    CL_ENSURE_D(cl_cose_sign1_verify(&s, key, NULL, 0) == CL_OK, CL_E_PROTO_RECEIPT_SIGNATURE,
                "the receipt's signature does not verify with the audit key");
out:
    cl_cose_sign1_free(&s);
    return rc;
}
