/* The simulated NSM: answers NSM API requests with the simulated PKI. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cloister/crypto.h"
#include "cloister/nsm.h"

struct cl_nsm_sim {
    cl_attest_signer *signer;
    uint8_t pcr[CL_NSM_MAX_PCRS][CL_NSM_PCR_LEN];
    uint32_t locked;
};

cl_err cl_nsm_sim_new(cl_attest_signer *signer, const uint8_t *pcr012, bool debug, cl_nsm_sim **out)
{
    cl_nsm_sim *s = calloc(1, sizeof(*s));
    if (!s)
        return CL_E_CORE_NOMEM;
    s->signer = signer;
    /* Nitro reports zeros for the image PCRs of a debug-mode enclave. */
    if (!debug && pcr012)
        memcpy(s->pcr, pcr012, 3 * CL_NSM_PCR_LEN);
    s->locked = 0xffffu;
    *out = s;
    return CL_OK;
}

void cl_nsm_sim_free(cl_nsm_sim *s) { free(s); }

static cl_err cl_nsm_sim_error(struct cl_buf *resp, const char *code)
{
    cl_err rc = CL_OK;
    cl_buf_reset(resp);
    resp->len = 0;
    CL_GUARD(cl_cbor_put_map(resp, 1));
    CL_GUARD(cl_cbor_put_text(resp, "Error"));
    CL_GUARD(cl_cbor_put_text(resp, code));
out:
    return rc;
}

static bool cl_nsm_sim_index(const struct cl_cbor_item *body, const char *field, uint64_t *v)
{
    const struct cl_cbor_item *i = cl_cbor_map_get_text(body, field);
    if (!i || i->type != CL_CBOR_UINT || i->u > UINT16_MAX || body->count != 1)
        return false;
    *v = i->u;
    return true;
}

/* Optional byte field: absent or null = none. */
static bool cl_nsm_sim_opt(const struct cl_cbor_item *body, const char *name, size_t max, const uint8_t **p,
                           size_t *n)
{
    const struct cl_cbor_item *v = cl_cbor_map_get_text(body, name);
    *p = NULL;
    *n = 0;
    if (!v || cl_cbor_is_null(v))
        return true;
    if (v->type != CL_CBOR_BYTES || v->len > max)
        return false;
    *p = v->p ? v->p : (const uint8_t *)"";
    *n = v->len;
    return true;
}

static cl_err cl_nsm_sim_pcr_body(struct cl_buf *resp, const char *variant, const uint8_t *pcr, int lock)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_cbor_put_map(resp, 1));
    CL_GUARD(cl_cbor_put_text(resp, variant));
    CL_GUARD(cl_cbor_put_map(resp, lock >= 0 ? 2 : 1));
    if (lock >= 0) {
        CL_GUARD(cl_cbor_put_text(resp, "lock"));
        CL_GUARD(cl_cbor_put_bool(resp, lock));
    }
    CL_GUARD(cl_cbor_put_text(resp, "data"));
    CL_GUARD(cl_cbor_put_bytes(resp, pcr, CL_NSM_PCR_LEN));
out:
    return rc;
}

cl_err cl_nsm_sim_handle(cl_nsm_sim *s, const uint8_t *req, size_t len, struct cl_buf *resp)
{
    cl_err rc = CL_OK;
    cl_cbor_doc *d = NULL;
    struct cl_cursor c;
    struct cl_cbor_limits lim = cl_cbor_default_limits;
    lim.max_depth = 4;
    lim.max_items = 64;
    lim.max_input = CL_NSM_REQUEST_MAX;
    if (len > CL_NSM_REQUEST_MAX)
        return cl_nsm_sim_error(resp, "InputTooLarge");
    cl_cursor_init(&c, req, len);
    if (cl_cbor_decode(&c, &lim, &d) != CL_OK)
        return cl_nsm_sim_error(resp, "InvalidArgument");
    const struct cl_cbor_item *r = cl_cbor_root(d);
    if (cl_cbor_is_text(r, "GetRandom")) {
        uint8_t rnd[256];
        CL_GUARD(cl_random_bytes(rnd, sizeof(rnd)));
        CL_GUARD(cl_cbor_put_map(resp, 1));
        CL_GUARD(cl_cbor_put_text(resp, "GetRandom"));
        CL_GUARD(cl_cbor_put_map(resp, 1));
        CL_GUARD(cl_cbor_put_text(resp, "random"));
        CL_GUARD(cl_cbor_put_bytes(resp, rnd, sizeof(rnd)));
        goto out;
    }
    if (cl_cbor_is_text(r, "DescribeNSM")) {
        CL_GUARD(cl_cbor_put_map(resp, 1));
        CL_GUARD(cl_cbor_put_text(resp, "DescribeNSM"));
        CL_GUARD(cl_cbor_put_map(resp, 7));
        CL_GUARD(cl_cbor_put_text(resp, "digest"));
        CL_GUARD(cl_cbor_put_text(resp, "SHA384"));
        CL_GUARD(cl_cbor_put_text(resp, "max_pcrs"));
        CL_GUARD(cl_cbor_put_uint(resp, CL_NSM_MAX_PCRS));
        CL_GUARD(cl_cbor_put_text(resp, "module_id"));
        CL_GUARD(cl_cbor_put_text(resp, "cloister-sim"));
        unsigned nlocked = 0;
        for (unsigned i = 0; i < CL_NSM_MAX_PCRS; i++)
            nlocked += (s->locked >> i) & 1;
        CL_GUARD(cl_cbor_put_text(resp, "locked_pcrs"));
        CL_GUARD(cl_cbor_put_array(resp, nlocked));
        for (unsigned i = 0; i < CL_NSM_MAX_PCRS; i++)
            if ((s->locked >> i) & 1)
                CL_GUARD(cl_cbor_put_uint(resp, i));
        CL_GUARD(cl_cbor_put_text(resp, "version_major"));
        CL_GUARD(cl_cbor_put_uint(resp, 1));
        CL_GUARD(cl_cbor_put_text(resp, "version_minor"));
        CL_GUARD(cl_cbor_put_uint(resp, 0));
        CL_GUARD(cl_cbor_put_text(resp, "version_patch"));
        CL_GUARD(cl_cbor_put_uint(resp, 0));
        goto out;
    }
    if (r->type != CL_CBOR_MAP || r->count != 1 || r->child->type != CL_CBOR_TEXT ||
        r->child->next->type != CL_CBOR_MAP) {
        rc = cl_nsm_sim_error(resp, r->type == CL_CBOR_TEXT ? "InvalidOperation" : "InvalidArgument");
        goto out;
    }
    const struct cl_cbor_item *name = r->child, *body = r->child->next;
    uint64_t idx;
    if (cl_cbor_is_text(name, "Attestation")) {
        const uint8_t *ud, *nonce, *pk;
        size_t udn, nn, pkn;
        if (!cl_nsm_sim_opt(body, "user_data", CL_ATTEST_MAX_USER_DATA, &ud, &udn) ||
            !cl_nsm_sim_opt(body, "nonce", CL_ATTEST_MAX_NONCE, &nonce, &nn) ||
            !cl_nsm_sim_opt(body, "public_key", CL_ATTEST_MAX_PUBLIC_KEY, &pk, &pkn)) {
            rc = cl_nsm_sim_error(resp, "InvalidArgument");
            goto out;
        }
        if (cl_attest_signer_refresh(s->signer) != CL_OK) {
            rc = cl_nsm_sim_error(resp, "InternalError");
            goto out;
        }
        /* The document carries every locked PCR. */
        cl_attest_signer_set_pcrs(s->signer, s->locked, (const uint8_t(*)[CL_ATTEST_PCR_LEN])s->pcr);
        struct cl_buf doc;
        cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
        rc = cl_attest_signer_sign(s->signer, pk, pkn, ud, udn, nonce, nn, &doc);
        if (rc == CL_OK) {
            rc = cl_cbor_put_map(resp, 1);
            if (rc == CL_OK)
                rc = cl_cbor_put_text(resp, "Attestation");
            if (rc == CL_OK)
                rc = cl_cbor_put_map(resp, 1);
            if (rc == CL_OK)
                rc = cl_cbor_put_text(resp, "document");
            if (rc == CL_OK)
                rc = cl_cbor_put_bytes(resp, doc.data, doc.len);
        } else {
            rc = cl_nsm_sim_error(resp, "InternalError");
        }
        cl_buf_free(&doc);
        goto out;
    }
    if (cl_cbor_is_text(name, "DescribePCR")) {
        if (!cl_nsm_sim_index(body, "index", &idx)) {
            rc = cl_nsm_sim_error(resp, "InvalidArgument");
        } else if (idx >= CL_NSM_MAX_PCRS) {
            rc = cl_nsm_sim_error(resp, "InvalidIndex");
        } else {
            rc = cl_nsm_sim_pcr_body(resp, "DescribePCR", s->pcr[idx], (s->locked >> idx) & 1);
        }
        goto out;
    }
    if (cl_cbor_is_text(name, "ExtendPCR")) {
        const struct cl_cbor_item *i = cl_cbor_map_get_text(body, "index"), *data = cl_cbor_map_get_text(body, "data");
        if (body->count != 2 || !i || i->type != CL_CBOR_UINT || !data || data->type != CL_CBOR_BYTES) {
            rc = cl_nsm_sim_error(resp, "InvalidArgument");
        } else if (i->u >= CL_NSM_MAX_PCRS) {
            rc = cl_nsm_sim_error(resp, "InvalidIndex");
        } else if ((s->locked >> i->u) & 1) {
            rc = cl_nsm_sim_error(resp, "ReadOnlyIndex");
        } else {
            uint8_t tmp[CL_NSM_PCR_LEN + CL_NSM_REQUEST_MAX];
            memcpy(tmp, s->pcr[i->u], CL_NSM_PCR_LEN);
            if (data->len)
                memcpy(tmp + CL_NSM_PCR_LEN, data->p, data->len);
            CL_GUARD(cl_sha384(tmp, CL_NSM_PCR_LEN + data->len, s->pcr[i->u]));
            rc = cl_nsm_sim_pcr_body(resp, "ExtendPCR", s->pcr[i->u], -1);
        }
        goto out;
    }
    if (cl_cbor_is_text(name, "LockPCR") || cl_cbor_is_text(name, "LockPCRs")) {
        bool one = cl_cbor_is_text(name, "LockPCR");
        if (!cl_nsm_sim_index(body, one ? "index" : "range", &idx)) {
            rc = cl_nsm_sim_error(resp, "InvalidArgument");
        } else if (one ? idx >= CL_NSM_MAX_PCRS : idx > CL_NSM_MAX_PCRS) {
            rc = cl_nsm_sim_error(resp, "InvalidIndex");
        } else {
            if (one)
                s->locked |= 1u << idx;
            else
                s->locked |= idx == 32 ? 0xffffffffu : (1u << idx) - 1;
            rc = cl_cbor_put_text(resp, one ? "LockPCR" : "LockPCRs");
        }
        goto out;
    }
    rc = cl_nsm_sim_error(resp, "InvalidOperation");
out:
    cl_cbor_free(d);
    return rc;
}

cl_err cl_nsm_sim_serve(cl_nsm_sim *s, int fd)
{
    cl_err rc = CL_OK;
    uint8_t *req = malloc(CL_NSM_REQUEST_MAX + 1);
    struct cl_buf resp;
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    for (;;) {
        ssize_t r = recv(fd, req, CL_NSM_REQUEST_MAX + 1, MSG_TRUNC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            break;
        CL_ENSURE_D(r > 0, CL_E_NSM_IO, "recv errno %d", errno);
        cl_buf_reset(&resp);
        resp.len = 0;
        if ((size_t)r > CL_NSM_REQUEST_MAX)
            CL_GUARD(cl_nsm_sim_error(&resp, "InputTooLarge"));
        else
            CL_GUARD(cl_nsm_sim_handle(s, req, (size_t)r, &resp));
        ssize_t w;
        do
            w = send(fd, resp.data, resp.len, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            break;
        CL_ENSURE_D(w == (ssize_t)resp.len, CL_E_NSM_IO, "send errno %d", errno);
    }
out:
    free(req);
    cl_buf_free(&resp);
    return rc;
}
