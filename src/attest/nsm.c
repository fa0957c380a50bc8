/* NSM client: request encoding, response decoding, and the two transports. */
#include "cloister/nsm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cloister/file.h"

struct cl_nsm {
    enum cl_nsm_kind kind;
    int fd;
};

/* The driver's message: two iovecs; it shrinks response.iov_len to fit. */
struct cl_nsm_msg {
    struct iovec request;
    struct iovec response;
};
#define CL_NSM_IOCTL _IOWR(0x0A, 0, struct cl_nsm_msg)

cl_err cl_nsm_open_device(const char *path, cl_nsm **out)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return cl_err_fail(CL_E_NSM_UNAVAILABLE, "cannot open the NSM device (errno %d)", errno);
    cl_nsm *n = calloc(1, sizeof(*n));
    if (!n) {
        close(fd);
        return CL_E_CORE_NOMEM;
    }
    n->kind = CL_NSM_KIND_DEVICE;
    n->fd = fd;
    *out = n;
    return CL_OK;
}

cl_err cl_nsm_open_fd(int fd, cl_nsm **out)
{
    int type = 0;
    socklen_t tl = sizeof(type);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_SEQPACKET)
        return cl_err_fail(CL_E_NSM_UNAVAILABLE, "descriptor %d is not a SOCK_SEQPACKET socket", fd);
    cl_nsm *n = calloc(1, sizeof(*n));
    if (!n)
        return CL_E_CORE_NOMEM;
    n->kind = CL_NSM_KIND_SIM;
    n->fd = fd;
    *out = n;
    return CL_OK;
}

cl_err cl_nsm_open(cl_nsm **out)
{
    const char *env = getenv(CL_NSM_FD_ENV);
    if (env && *env) {
        char *end;
        errno = 0;
        long fd = strtol(env, &end, 10);
        if (errno || *end || fd < 0 || fd > INT_MAX)
            return cl_err_fail(CL_E_NSM_UNAVAILABLE, "%s is not a descriptor number", CL_NSM_FD_ENV);
        return cl_nsm_open_fd((int)fd, out);
    }
    return cl_nsm_open_device(CL_NSM_DEVICE_PATH, out);
}

void cl_nsm_close(cl_nsm *n)
{
    if (!n)
        return;
    close(n->fd);
    free(n);
}

enum cl_nsm_kind cl_nsm_kind(const cl_nsm *n) { return n->kind; }

cl_err cl_nsm_transact(cl_nsm *n, const uint8_t *req, size_t len, struct cl_buf *resp)
{
    cl_err rc = CL_OK;
    uint8_t *buf = NULL;
    CL_ENSURE_D(len > 0 && len <= CL_NSM_REQUEST_MAX, CL_E_NSM_INPUT_TOO_LARGE, "request of %zu bytes", len);
    buf = malloc(CL_NSM_RESPONSE_MAX);
    CL_ENSURE(buf, CL_E_CORE_NOMEM);
    size_t got = 0;
    if (n->kind == CL_NSM_KIND_DEVICE) {
        struct cl_nsm_msg m = {{(void *)req, len}, {buf, CL_NSM_RESPONSE_MAX}};
        int r;
        do
            r = ioctl(n->fd, CL_NSM_IOCTL, &m);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            CL_FAIL(errno == EMSGSIZE ? CL_E_NSM_INPUT_TOO_LARGE : CL_E_NSM_IO, "ioctl errno %d", errno);
        CL_ENSURE_D(m.response.iov_len <= CL_NSM_RESPONSE_MAX, CL_E_NSM_BAD_RESPONSE, "response length");
        got = m.response.iov_len;
    } else {
        ssize_t w;
        do
            w = send(n->fd, req, len, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        CL_ENSURE_D(w == (ssize_t)len, CL_E_NSM_IO, "send errno %d", w < 0 ? errno : 0);
        ssize_t r;
        do
            r = recv(n->fd, buf, CL_NSM_RESPONSE_MAX, MSG_TRUNC);
        while (r < 0 && errno == EINTR);
        CL_ENSURE_D(r > 0, CL_E_NSM_IO, "recv errno %d", r < 0 ? errno : 0);
        CL_ENSURE_D((size_t)r <= CL_NSM_RESPONSE_MAX, CL_E_NSM_BAD_RESPONSE, "response of %zd bytes", r);
        got = (size_t)r;
    }
    CL_GUARD(cl_buf_append(resp, buf, got));
out:
    free(buf);
    return rc;
}

static const struct {
    const char *name;
    cl_err code;
} cl_nsm_errors[] = {
    {"InvalidArgument", CL_E_NSM_INVALID_ARGUMENT}, {"InvalidIndex", CL_E_NSM_INVALID_INDEX},
    {"InvalidResponse", CL_E_NSM_BAD_RESPONSE},     {"ReadOnlyIndex", CL_E_NSM_READ_ONLY_INDEX},
    {"InvalidOperation", CL_E_NSM_INVALID_OPERATION}, {"BufferTooSmall", CL_E_NSM_INTERNAL},
    {"InputTooLarge", CL_E_NSM_INPUT_TOO_LARGE},    {"InternalError", CL_E_NSM_INTERNAL},
};

/* Sends req and returns the body of the expected response variant (NULL for
 * unit variants) inside *doc. */
static cl_err cl_nsm_call(cl_nsm *n, const struct cl_buf *req, const char *variant, struct cl_buf *resp,
                          cl_cbor_doc **doc, const struct cl_cbor_item **body)
{
    cl_err rc = CL_OK;
    *doc = NULL;
    *body = NULL;
    CL_GUARD(cl_nsm_transact(n, req->data, req->len, resp));
    struct cl_cursor c;
    cl_cursor_init(&c, resp->data, resp->len);
    if (cl_cbor_decode(&c, NULL, doc) != CL_OK)
        CL_FAIL(CL_E_NSM_BAD_RESPONSE, "response is not one CBOR item");
    const struct cl_cbor_item *r = cl_cbor_root(*doc);
    if (r->type == CL_CBOR_TEXT) {
        CL_ENSURE_D(cl_cbor_is_text(r, variant), CL_E_NSM_BAD_RESPONSE, "unexpected unit response to %s", variant);
        goto out;
    }
    CL_ENSURE_D(r->type == CL_CBOR_MAP && r->count == 1 && r->child->type == CL_CBOR_TEXT, CL_E_NSM_BAD_RESPONSE,
                "response is not a one-entry map");
    const struct cl_cbor_item *err = cl_cbor_map_get_text(r, "Error");
    if (err) {
        for (size_t i = 0; i < sizeof(cl_nsm_errors) / sizeof(cl_nsm_errors[0]); i++)
            if (cl_cbor_is_text(err, cl_nsm_errors[i].name))
                CL_FAIL(cl_nsm_errors[i].code, "NSM answered %s to %s", cl_nsm_errors[i].name, variant);
        CL_FAIL(CL_E_NSM_INTERNAL, "NSM answered an unknown error to %s", variant);
    }
    *body = cl_cbor_map_get_text(r, variant);
    CL_ENSURE_D(*body && (*body)->type == CL_CBOR_MAP, CL_E_NSM_BAD_RESPONSE, "no %s body", variant);
out:
    if (rc != CL_OK) {
        cl_cbor_free(*doc);
        *doc = NULL;
    }
    return rc;
}

static cl_err cl_nsm_put_opt(struct cl_buf *b, const char *name, const uint8_t *p, size_t n)
{
    cl_err rc = cl_cbor_put_text(b, name);
    if (rc == CL_OK)
        rc = p ? cl_cbor_put_bytes(b, p, n) : cl_cbor_put_null(b);
    return rc;
}

static cl_err cl_nsm_bytes_field(const struct cl_cbor_item *body, const char *name, size_t min, size_t max,
                                 const struct cl_cbor_item **out)
{
    const struct cl_cbor_item *v = cl_cbor_map_get_text(body, name);
    if (!v || v->type != CL_CBOR_BYTES || v->len < min || v->len > max)
        return cl_err_fail(CL_E_NSM_BAD_RESPONSE, "field %s", name);
    *out = v;
    return CL_OK;
}

cl_err cl_nsm_attestation(cl_nsm *n, const uint8_t *user_data, size_t udlen, const uint8_t *nonce, size_t noncelen,
                          const uint8_t *public_key, size_t pklen, struct cl_buf *doc)
{
    cl_err rc = CL_OK;
    struct cl_buf req, resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body = NULL, *v = NULL;
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_ENSURE_D(!user_data || udlen <= CL_ATTEST_MAX_USER_DATA, CL_E_NSM_INPUT_TOO_LARGE, "user_data of %zu bytes", udlen);
    CL_ENSURE_D(!nonce || noncelen <= CL_ATTEST_MAX_NONCE, CL_E_NSM_INPUT_TOO_LARGE, "nonce of %zu bytes", noncelen);
    CL_ENSURE_D(!public_key || pklen <= CL_ATTEST_MAX_PUBLIC_KEY, CL_E_NSM_INPUT_TOO_LARGE, "public_key of %zu bytes",
                pklen);
    CL_GUARD(cl_cbor_put_map(&req, 1));
    CL_GUARD(cl_cbor_put_text(&req, "Attestation"));
    CL_GUARD(cl_cbor_put_map(&req, 3));
    CL_GUARD(cl_nsm_put_opt(&req, "user_data", user_data, udlen));
    CL_GUARD(cl_nsm_put_opt(&req, "nonce", nonce, noncelen));
    CL_GUARD(cl_nsm_put_opt(&req, "public_key", public_key, pklen));
    CL_GUARD(cl_nsm_call(n, &req, "Attestation", &resp, &d, &body));
    CL_GUARD(cl_nsm_bytes_field(body, "document", 1, CL_ATTEST_MAX_DOC, &v));
    CL_GUARD(cl_buf_append(doc, v->p, v->len));
out:
    cl_cbor_free(d);
    cl_buf_free(&req);
    cl_buf_free(&resp);
    return rc;
}

static cl_err cl_nsm_index_request(struct cl_buf *req, const char *variant, const char *field, uint16_t v)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_cbor_put_map(req, 1));
    CL_GUARD(cl_cbor_put_text(req, variant));
    CL_GUARD(cl_cbor_put_map(req, 1));
    CL_GUARD(cl_cbor_put_text(req, field));
    CL_GUARD(cl_cbor_put_uint(req, v));
out:
    return rc;
}

cl_err cl_nsm_describe_pcr(cl_nsm *n, uint16_t index, bool *locked, uint8_t value[CL_NSM_PCR_LEN])
{
    cl_err rc = CL_OK;
    struct cl_buf req, resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body = NULL, *v = NULL;
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_nsm_index_request(&req, "DescribePCR", "index", index));
    CL_GUARD(cl_nsm_call(n, &req, "DescribePCR", &resp, &d, &body));
    const struct cl_cbor_item *lk = cl_cbor_map_get_text(body, "lock");
    CL_ENSURE_D(lk && lk->type == CL_CBOR_SIMPLE && (lk->u == CL_CBOR_TRUE || lk->u == CL_CBOR_FALSE),
                CL_E_NSM_BAD_RESPONSE, "field lock");
    CL_GUARD(cl_nsm_bytes_field(body, "data", CL_NSM_PCR_LEN, CL_NSM_PCR_LEN, &v));
    *locked = lk->u == CL_CBOR_TRUE;
    memcpy(value, v->p, CL_NSM_PCR_LEN);
out:
    cl_cbor_free(d);
    cl_buf_free(&req);
    cl_buf_free(&resp);
    return rc;
}

cl_err cl_nsm_extend_pcr(cl_nsm *n, uint16_t index, const void *data, size_t len, uint8_t value[CL_NSM_PCR_LEN])
{
    cl_err rc = CL_OK;
    struct cl_buf req, resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body = NULL, *v = NULL;
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_cbor_put_map(&req, 1));
    CL_GUARD(cl_cbor_put_text(&req, "ExtendPCR"));
    CL_GUARD(cl_cbor_put_map(&req, 2));
    CL_GUARD(cl_cbor_put_text(&req, "index"));
    CL_GUARD(cl_cbor_put_uint(&req, index));
    CL_GUARD(cl_cbor_put_text(&req, "data"));
    if (cl_cbor_put_bytes(&req, data, len) != CL_OK)
        CL_FAIL(CL_E_NSM_INPUT_TOO_LARGE, "extend data of %zu bytes", len);
    CL_GUARD(cl_nsm_call(n, &req, "ExtendPCR", &resp, &d, &body));
    CL_GUARD(cl_nsm_bytes_field(body, "data", CL_NSM_PCR_LEN, CL_NSM_PCR_LEN, &v));
    memcpy(value, v->p, CL_NSM_PCR_LEN);
out:
    cl_cbor_free(d);
    cl_buf_free(&req);
    cl_buf_free(&resp);
    return rc;
}

static cl_err cl_nsm_unit_answer(cl_nsm *n, struct cl_buf *req, const char *variant)
{
    cl_err rc = CL_OK;
    struct cl_buf resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body;
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_nsm_transact(n, req->data, req->len, &resp));
    struct cl_cursor c;
    cl_cursor_init(&c, resp.data, resp.len);
    if (cl_cbor_decode(&c, NULL, &d) != CL_OK)
        CL_FAIL(CL_E_NSM_BAD_RESPONSE, "response is not one CBOR item");
    if (cl_cbor_is_text(cl_cbor_root(d), variant))
        goto out;
    cl_cbor_free(d);
    d = NULL;
    /* Not the unit answer: let the generic path report the error. */
    cl_buf_reset(&resp);
    resp.len = 0;
    CL_GUARD(cl_nsm_call(n, req, variant, &resp, &d, &body));
    CL_FAIL(CL_E_NSM_BAD_RESPONSE, "%s answered with a body", variant);
out:
    cl_cbor_free(d);
    cl_buf_free(&resp);
    return rc;
}

/* LockPCR / LockPCRs: one index-valued field, an empty answer. */
static cl_err cl_nsm_lock(cl_nsm *n, const char *variant, const char *field, uint16_t v)
{
    struct cl_buf req;
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_err rc = cl_nsm_index_request(&req, variant, field, v);
    if (rc == CL_OK)
        rc = cl_nsm_unit_answer(n, &req, variant);
    cl_buf_free(&req);
    return rc;
}

cl_err cl_nsm_lock_pcr(cl_nsm *n, uint16_t index) { return cl_nsm_lock(n, "LockPCR", "index", index); }

cl_err cl_nsm_lock_pcrs(cl_nsm *n, uint16_t range) { return cl_nsm_lock(n, "LockPCRs", "range", range); }

cl_err cl_nsm_get_random(cl_nsm *n, uint8_t *out, size_t len)
{
    cl_err rc = CL_OK;
    struct cl_buf req, resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body = NULL, *v = NULL;
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_cbor_put_text(&req, "GetRandom"));
    size_t done = 0;
    while (done < len) {
        cl_buf_reset(&resp);
        resp.len = 0;
        cl_cbor_free(d);
        d = NULL;
        CL_GUARD(cl_nsm_call(n, &req, "GetRandom", &resp, &d, &body));
        CL_GUARD(cl_nsm_bytes_field(body, "random", 1, CL_NSM_RESPONSE_MAX, &v));
        size_t take = v->len < len - done ? v->len : len - done;
        memcpy(out + done, v->p, take);
        done += take;
    }
out:
    cl_cbor_free(d);
    cl_buf_free(&req);
    cl_buf_free(&resp);
    return rc;
}

cl_err cl_nsm_describe(cl_nsm *n, struct cl_nsm_info *info)
{
    cl_err rc = CL_OK;
    struct cl_buf req, resp;
    cl_cbor_doc *d = NULL;
    const struct cl_cbor_item *body;
    memset(info, 0, sizeof(*info));
    cl_buf_init(&req, CL_NSM_REQUEST_MAX, CL_BUF_NONE);
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_cbor_put_text(&req, "DescribeNSM"));
    CL_GUARD(cl_nsm_call(n, &req, "DescribeNSM", &resp, &d, &body));
    const char *nums[] = {"version_major", "version_minor", "version_patch", "max_pcrs"};
    uint16_t *dst[] = {&info->version_major, &info->version_minor, &info->version_patch, &info->max_pcrs};
    for (int i = 0; i < 4; i++) {
        const struct cl_cbor_item *v = cl_cbor_map_get_text(body, nums[i]);
        CL_ENSURE_D(v && v->type == CL_CBOR_UINT && v->u <= UINT16_MAX, CL_E_NSM_BAD_RESPONSE, "field %s", nums[i]);
        *dst[i] = (uint16_t)v->u;
    }
    const struct cl_cbor_item *m = cl_cbor_map_get_text(body, "module_id");
    CL_ENSURE_D(m && m->type == CL_CBOR_TEXT && m->len < sizeof(info->module_id), CL_E_NSM_BAD_RESPONSE, "module_id");
    memcpy(info->module_id, m->p, m->len);
    const struct cl_cbor_item *dg = cl_cbor_map_get_text(body, "digest");
    CL_ENSURE_D(dg && dg->type == CL_CBOR_TEXT && dg->len < sizeof(info->digest), CL_E_NSM_BAD_RESPONSE, "digest");
    memcpy(info->digest, dg->p, dg->len);
    const struct cl_cbor_item *lp = cl_cbor_map_get_text(body, "locked_pcrs");
    CL_ENSURE_D(lp && lp->type == CL_CBOR_ARRAY, CL_E_NSM_BAD_RESPONSE, "locked_pcrs");
    for (const struct cl_cbor_item *e = lp->child; e; e = e->next) {
        CL_ENSURE_D(e->type == CL_CBOR_UINT && e->u <= UINT16_MAX, CL_E_NSM_BAD_RESPONSE, "locked_pcrs entry");
        if (e->u < 32)
            info->locked_pcrs |= 1u << e->u;
    }
out:
    cl_cbor_free(d);
    cl_buf_free(&req);
    cl_buf_free(&resp);
    return rc;
}
