/* Recipient attestation: Nitro document verification against pinned roots. */
#include <stdlib.h>
#include <string.h>

#include "cloister/attest.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms_attest.h"

struct cl_kms_attest_roots {
    struct cl_buf der[CL_KMS_ATTEST_MAX_ROOTS];
    size_t n;
    uint64_t max_age_ms;
};

void cl_kms_attest_roots_free(struct cl_kms_attest_roots *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        cl_buf_free(&r->der[i]);
    free(r);
}

cl_err cl_kms_attest_roots_from_der(const uint8_t *const *der, const size_t *len, size_t n, uint64_t max_age_ms,
                                    struct cl_kms_attest_roots **out)
{
    cl_err rc = CL_OK;
    struct cl_kms_attest_roots *r = calloc(1, sizeof(*r));
    CL_ENSURE(r, CL_E_CORE_NOMEM);
    CL_ENSURE_D(n >= 1 && n <= CL_KMS_ATTEST_MAX_ROOTS, CL_E_CORE_INVALID_ARG, "trusted roots: 1..%d",
                CL_KMS_ATTEST_MAX_ROOTS);
    r->max_age_ms = max_age_ms;
    for (size_t i = 0; i < n; i++) {
        cl_buf_init(&r->der[i], CL_ATTEST_MAX_CERT, CL_BUF_NONE);
        r->n++;
        CL_GUARD(cl_attest_cert_to_der(der[i], len[i], &r->der[i]));
    }
    *out = r;
    r = NULL;
out:
    cl_kms_attest_roots_free(r);
    return rc;
}

cl_err cl_kms_attest_roots_load(const char *const *paths, size_t n, uint64_t max_age_ms,
                                struct cl_kms_attest_roots **out)
{
    cl_err rc = CL_OK;
    struct cl_buf files[CL_KMS_ATTEST_MAX_ROOTS];
    const uint8_t *p[CL_KMS_ATTEST_MAX_ROOTS];
    size_t l[CL_KMS_ATTEST_MAX_ROOTS];
    size_t loaded = 0;
    CL_ENSURE_D(n >= 1 && n <= CL_KMS_ATTEST_MAX_ROOTS, CL_E_CORE_INVALID_ARG, "trusted roots: 1..%d",
                CL_KMS_ATTEST_MAX_ROOTS);
    for (size_t i = 0; i < n; i++) {
        cl_buf_init(&files[i], 64 * 1024, CL_BUF_NONE);
        loaded++;
        CL_GUARD(cl_file_read(paths[i], 64 * 1024, &files[i]));
        p[i] = files[i].data;
        l[i] = files[i].len;
    }
    CL_GUARD(cl_kms_attest_roots_from_der(p, l, n, max_age_ms, out));
out:
    for (size_t i = 0; i < loaded; i++)
        cl_buf_free(&files[i]);
    return rc;
}

cl_err cl_kms_attest_root_fingerprint(const struct cl_kms_attest_roots *r, size_t i, char hex[2 * 32 + 1])
{
    uint8_t h[CL_SHA256_LEN];
    if (!r || i >= r->n)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "root index %zu", i);
    cl_err rc = cl_sha256(r->der[i].data, r->der[i].len, h);
    if (rc)
        return rc;
    cl_hex_encode(h, sizeof(h), hex);
    return CL_OK;
}

cl_err cl_kms_attest_verify(void *arg, const uint8_t *doc, size_t n, int64_t now_ms, struct cl_kms_attestation *out)
{
    cl_err rc = CL_OK;
    const struct cl_kms_attest_roots *r = arg;
    struct cl_attest_doc d;
    memset(&d, 0, sizeof(d));
    CL_ENSURE_D(r && r->n, CL_E_ATTEST_NO_ROOT, "no trusted attestation roots configured");
    CL_GUARD(cl_attest_parse(doc, n, &d));
    cl_err last = CL_E_ATTEST_NO_ROOT;
    bool ok = false;
    size_t used = 0;
    for (size_t i = 0; i < r->n && !ok; i++) {
        struct cl_attest_policy pol = {
            .root_der = r->der[i].data,
            .root_len = r->der[i].len,
            .at_ms = now_ms,
            .allow_any_pcr = true,
            .allow_debug = true, /* the key policy decides (CL_POLICY_DEBUG_KEY) */
            .max_age_ms = r->max_age_ms,
        };
        last = cl_attest_verify(&d, &pol);
        ok = last == CL_OK;
        used = i;
        /* A root mismatch means "try the next root"; anything else is final
         * for this document but keep the most specific error. */
    }
    CL_ENSURE(ok, last);
    memset(out, 0, sizeof(*out));
    /* Which root vouched for the document reaches the policy
     * (cloister:attestation-root-sha256): a sim root's holder can sign any
     * PCRs, so a policy must be able to say whose root it believes. */
    CL_GUARD(cl_sha256(r->der[used].data, r->der[used].len, out->r.root_sha256));
    out->r.has_root = true;
    out->roots_trusted = (unsigned)r->n;
    size_t ml = d.module_id.len < sizeof(out->module_id) - 1 ? d.module_id.len : sizeof(out->module_id) - 1;
    for (size_t i = 0; i < ml; i++) {
        char c = (char)d.module_id.p[i];
        out->module_id[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS && i < CL_POLICY_PCR_COUNT; i++) {
        if ((d.pcr_present >> i & 1) && d.pcr[i].len == CL_POLICY_PCR_LEN) {
            memcpy(out->r.pcrs[i], d.pcr[i].p, CL_POLICY_PCR_LEN);
            out->r.pcr_mask |= 1u << i;
        }
    }
    CL_ENSURE_D(out->r.pcr_mask & 1, CL_E_ATTEST_PCR_MISSING, "PCR0 absent: no ImageSha384");
    memcpy(out->r.image_sha384, out->r.pcrs[0], CL_POLICY_PCR_LEN);
    out->r.debug = cl_attest_is_debug(&d);
    CL_ENSURE_D(d.public_key.len > 0, CL_E_ATTEST_PUBLIC_KEY, "document has no public_key for the Recipient");
    CL_ENSURE_D(d.public_key.len <= sizeof(out->public_key), CL_E_ATTEST_FIELD_LIMIT, "public_key larger than %zu",
                sizeof(out->public_key));
    memcpy(out->public_key, d.public_key.p, d.public_key.len);
    out->public_key_len = d.public_key.len;
    /* Too large to keep is not an error for key release: only licence
     * renewals read them, and they refuse a document without. */
    if (d.user_data.len && d.user_data.len <= sizeof(out->user_data)) {
        memcpy(out->user_data, d.user_data.p, d.user_data.len);
        out->user_data_len = d.user_data.len;
    }
    if (d.nonce.len && d.nonce.len <= sizeof(out->nonce)) {
        memcpy(out->nonce, d.nonce.p, d.nonce.len);
        out->nonce_len = d.nonce.len;
    }
out:
    cl_attest_doc_free(&d);
    return rc;
}
