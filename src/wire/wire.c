#include "cloister/wire.h"

#include "cloister/file.h"

static const char *const cl_wire_names[CL_WIRE_TYPE_COUNT] = {
    [CL_WIRE_NONE] = "none",           [CL_WIRE_ATTEST_REQ] = "attest_req",   [CL_WIRE_ATTEST_DOC] = "attest_doc",
    [CL_WIRE_OHTTP_REQ] = "ohttp_req", [CL_WIRE_OHTTP_RES] = "ohttp_res",     [CL_WIRE_OHTTP_CHUNK] = "ohttp_chunk",
    [CL_WIRE_END] = "end",             [CL_WIRE_ERROR] = "error",             [CL_WIRE_STATUS_REQ] = "status_req",
    [CL_WIRE_STATUS_RES] = "status_res", [CL_WIRE_BOOT_REQ] = "boot_req",     [CL_WIRE_BOOT_CONFIG] = "boot_config",
    [CL_WIRE_JOB_REQ] = "job_req", [CL_WIRE_JOB_RES] = "job_res",
    [CL_WIRE_RECEIPT] = "receipt",
};

const char *cl_wire_type_name(enum cl_wire_type t)
{
    return (unsigned)t < CL_WIRE_TYPE_COUNT ? cl_wire_names[t] : "unknown";
}

cl_err cl_wire_send(int fd, enum cl_wire_type t, unsigned flags, const void *p, size_t n)
{
    if (n > CL_WIRE_MAX_FRAME)
        return cl_err_fail(CL_E_PROTO_LIMIT, "frame of %zu bytes", n);
    uint8_t h[CL_WIRE_HDR_LEN] = {(uint8_t)t, (uint8_t)flags, 0, 0, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                                  (uint8_t)(n >> 8), (uint8_t)n};
    cl_err rc = cl_write_full(fd, h, sizeof(h));
    if (rc == CL_OK && n)
        rc = cl_write_full(fd, p, n);
    return rc;
}

cl_err cl_wire_recv(int fd, size_t max, enum cl_wire_type *t, unsigned *flags, struct cl_buf *payload)
{
    uint8_t h[CL_WIRE_HDR_LEN], *dst;
    size_t got = 0;
    cl_err rc = cl_read_full(fd, h, sizeof(h), &got);
    if (rc == CL_E_CORE_EOF && got > 0)
        return cl_err_fail(CL_E_PROTO_OHTTP_MALFORMED, "peer closed inside a frame header");
    if (rc != CL_OK)
        return rc;
    uint32_t len = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
    if (h[0] == CL_WIRE_NONE || h[0] >= CL_WIRE_TYPE_COUNT || h[2] || h[3] || (h[1] & ~CL_WIRE_FLAG_CHUNKED))
        return cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "frame header (type %u, flags %u)", h[0], h[1]);
    if (len > max || len > CL_WIRE_MAX_FRAME)
        return cl_err_fail(CL_E_PROTO_LIMIT, "frame of %u bytes (limit %zu)", len, max);
    cl_buf_reset(payload);
    rc = cl_buf_extend(payload, len, &dst);
    if (rc == CL_OK && len) {
        rc = cl_read_full(fd, dst, len, &got);
        if (rc == CL_E_CORE_EOF)
            rc = cl_err_fail(CL_E_PROTO_OHTTP_MALFORMED, "peer closed after %zu of %u payload bytes", got, len);
    }
    if (rc != CL_OK) {
        payload->len = 0;
        return rc;
    }
    *t = (enum cl_wire_type)h[0];
    *flags = h[1];
    return CL_OK;
}

cl_err cl_wire_send_error(int fd, unsigned http_status, cl_err code)
{
    uint8_t p[6] = {(uint8_t)(http_status >> 8), (uint8_t)http_status, (uint8_t)((unsigned)code >> 24),
                    (uint8_t)((unsigned)code >> 16), (uint8_t)((unsigned)code >> 8), (uint8_t)code};
    return cl_wire_send(fd, CL_WIRE_ERROR, 0, p, sizeof(p));
}

cl_err cl_wire_parse_error(const struct cl_buf *payload, unsigned *http_status, cl_err *code)
{
    if (payload->len != 6)
        return cl_err_fail(CL_E_PROTO_REQUEST_INVALID, "error frame of %zu bytes", payload->len);
    const uint8_t *p = payload->data;
    *http_status = (unsigned)p[0] << 8 | p[1];
    *code = (cl_err)((uint32_t)p[2] << 24 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 8 | p[5]);
    return CL_OK;
}
