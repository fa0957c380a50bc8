/* JOB_RES payload (cloister/wire_job.h). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cloister/wire_job.h"

static bool cl_wjob_id_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

cl_err cl_wire_job_res_encode(const struct cl_wire_job_res *r, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(cl_wjob_id_ok(r->job_id, CL_WIRE_JOB_ID_MAX) && strlen(r->chain) == 64, CL_E_PROTO_REQUEST_INVALID,
                "job result meta");
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)r->result_len));
    CL_GUARD(cl_buf_append(out, r->result, r->result_len));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)r->receipt_len));
    CL_GUARD(cl_buf_append(out, r->receipt, r->receipt_len));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)r->attestation_len));
    CL_GUARD(cl_buf_append(out, r->attestation, r->attestation_len));
    CL_GUARD(cl_buf_appendf(out, "{\"job_id\":\"%s\",\"status\":\"%s\",\"chain\":\"%s\",\"seq\":%llu}", r->job_id,
                            r->ok ? "ok" : "error", r->chain, (unsigned long long)r->seq));
out:
    return rc;
}

static cl_err cl_wjob_blob(struct cl_cursor *c, const uint8_t **p, size_t *n)
{
    uint32_t len = 0;
    if (cl_cursor_u32be(c, &len) != CL_OK || cl_cursor_bytes(c, len, p) != CL_OK)
        return cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "job result: truncated blob");
    *n = len;
    return CL_OK;
}

cl_err cl_wire_job_res_parse(const uint8_t *p, size_t n, struct cl_wire_job_res *r)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    json_t *j = NULL;
    json_error_t e;
    memset(r, 0, sizeof(*r));
    cl_cursor_init(&c, p, n);
    CL_GUARD(cl_wjob_blob(&c, &r->result, &r->result_len));
    CL_GUARD(cl_wjob_blob(&c, &r->receipt, &r->receipt_len));
    CL_GUARD(cl_wjob_blob(&c, &r->attestation, &r->attestation_len));
    j = json_loadb((const char *)p + c.off, cl_cursor_left(&c), JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(j && json_is_object(j) && json_object_size(j) == 4, CL_E_PROTO_REQUEST_INVALID, "job result meta");
    json_t *id = json_object_get(j, "job_id"), *st = json_object_get(j, "status"), *ch = json_object_get(j, "chain"),
           *seq = json_object_get(j, "seq");
    CL_ENSURE_D(json_is_string(id) && json_string_length(id) <= CL_WIRE_JOB_ID_MAX &&
                    cl_wjob_id_ok(json_string_value(id), CL_WIRE_JOB_ID_MAX),
                CL_E_PROTO_REQUEST_INVALID, "job result meta: job_id");
    CL_ENSURE_D(json_is_string(st) && (!strcmp(json_string_value(st), "ok") || !strcmp(json_string_value(st), "error")),
                CL_E_PROTO_REQUEST_INVALID, "job result meta: status");
    CL_ENSURE_D(json_is_string(ch) && json_string_length(ch) == 64 && cl_wjob_id_ok(json_string_value(ch), 64),
                CL_E_PROTO_REQUEST_INVALID, "job result meta: chain");
    CL_ENSURE_D(json_is_integer(seq) && json_integer_value(seq) >= 1, CL_E_PROTO_REQUEST_INVALID, "job result meta: seq");
    CL_ENSURE_D(r->result_len && r->receipt_len && r->attestation_len, CL_E_PROTO_REQUEST_INVALID,
                "job result: empty blob");
    snprintf(r->job_id, sizeof(r->job_id), "%s", json_string_value(id));
    snprintf(r->chain, sizeof(r->chain), "%s", json_string_value(ch));
    r->ok = !strcmp(json_string_value(st), "ok");
    r->seq = (uint64_t)json_integer_value(seq);
out:
    json_decref(j);
    return rc;
}

cl_err cl_wire_receipt_encode(const struct cl_wire_receipt *r, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(cl_wjob_id_ok(r->request_id, CL_WIRE_JOB_ID_MAX) && strlen(r->chain) == 64 && r->seq >= 1,
                CL_E_PROTO_REQUEST_INVALID, "receipt meta");
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)r->receipt_len));
    CL_GUARD(cl_buf_append(out, r->receipt, r->receipt_len));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)r->attestation_len));
    CL_GUARD(cl_buf_append(out, r->attestation, r->attestation_len));
    CL_GUARD(cl_buf_appendf(out, "{\"request_id\":\"%s\",\"chain\":\"%s\",\"seq\":%llu}", r->request_id, r->chain,
                            (unsigned long long)r->seq));
out:
    return rc;
}

cl_err cl_wire_receipt_parse(const uint8_t *p, size_t n, struct cl_wire_receipt *r)
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    json_t *j = NULL;
    json_error_t e;
    memset(r, 0, sizeof(*r));
    cl_cursor_init(&c, p, n);
    CL_GUARD(cl_wjob_blob(&c, &r->receipt, &r->receipt_len));
    CL_GUARD(cl_wjob_blob(&c, &r->attestation, &r->attestation_len));
    j = json_loadb((const char *)p + c.off, cl_cursor_left(&c), JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(j && json_is_object(j) && json_object_size(j) == 3, CL_E_PROTO_REQUEST_INVALID, "receipt meta");
    json_t *id = json_object_get(j, "request_id"), *ch = json_object_get(j, "chain"), *seq = json_object_get(j, "seq");
    CL_ENSURE_D(json_is_string(id) && json_string_length(id) <= CL_WIRE_JOB_ID_MAX &&
                    cl_wjob_id_ok(json_string_value(id), CL_WIRE_JOB_ID_MAX),
                CL_E_PROTO_REQUEST_INVALID, "receipt meta: request_id");
    CL_ENSURE_D(json_is_string(ch) && json_string_length(ch) == 64 && cl_wjob_id_ok(json_string_value(ch), 64),
                CL_E_PROTO_REQUEST_INVALID, "receipt meta: chain");
    CL_ENSURE_D(json_is_integer(seq) && json_integer_value(seq) >= 1, CL_E_PROTO_REQUEST_INVALID, "receipt meta: seq");
    CL_ENSURE_D(r->receipt_len && r->attestation_len, CL_E_PROTO_REQUEST_INVALID, "receipt: empty blob");
    snprintf(r->request_id, sizeof(r->request_id), "%s", json_string_value(id));
    snprintf(r->chain, sizeof(r->chain), "%s", json_string_value(ch));
    r->seq = (uint64_t)json_integer_value(seq);
out:
    json_decref(j);
    return rc;
}
