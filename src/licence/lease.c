/* Lease grants and usage reports (docs/formats/licence.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/cose.h"
#include "cloister/encode.h"
#include "cloister/licence_lease.h"

cl_err cl_licence_set_digest(const uint8_t *const *recs, const size_t *lens, size_t n, uint8_t out[CL_SHA256_LEN])
{
    cl_err rc = CL_OK;
    cl_hash *h = NULL;
    uint8_t d[CL_SHA256_LEN];
    CL_GUARD(cl_hash_new(CL_HASH_SHA256, &h));
    for (size_t i = 0; i < n; i++) {
        CL_GUARD(cl_sha256(recs[i], lens[i], d));
        CL_GUARD(cl_hash_update(h, d, sizeof(d)));
    }
    CL_GUARD(cl_hash_final(h, out));
out:
    cl_hash_free(h);
    return rc;
}

static void cl_lease_limits(struct cl_cbor_limits *lim, size_t max)
{
    memset(lim, 0, sizeof(*lim));
    lim->max_depth = 4;
    lim->max_items = 16;
    lim->max_input = max;
    lim->max_map_pairs = 8;
}

/* Verifies a tagged COSE_Sign1 ES384 and parses its JSON payload. */
static cl_err cl_lease_open(const uint8_t *p, size_t n, size_t max, const cl_pkey *key, cl_err code, json_t **out)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    struct cl_cbor_limits lim;
    json_error_t e;
    cl_lease_limits(&lim, max);
    CL_ENSURE_D(n <= max, code, "%zu bytes (at most %zu)", n, max);
    CL_ENSURE_D(cl_cose_sign1_parse(p, n, CL_COSE_PROFILE_NITRO, &lim, &s) == CL_OK && s.tagged, code,
                "not a tagged COSE_Sign1 ES384 structure");
    CL_ENSURE_D(cl_cose_sign1_verify(&s, key, NULL, 0) == CL_OK, code, "signature does not verify");
    *out = json_loadb((const char *)s.payload, s.payload_len, JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(*out && json_is_object(*out), code, "payload is not a JSON object");
out:
    cl_cose_sign1_free(&s);
    return rc;
}

static bool cl_lease_u64(json_t *j, const char *k, uint64_t *v)
{
    json_t *x = json_object_get(j, k);
    if (!json_is_integer(x) || json_integer_value(x) < 0 || (uint64_t)json_integer_value(x) > (UINT64_MAX >> 12))
        return false;
    *v = (uint64_t)json_integer_value(x);
    return true;
}

static bool cl_lease_hex(json_t *j, const char *k, uint8_t *out, size_t n)
{
    json_t *x = json_object_get(j, k);
    return json_is_string(x) && cl_hex_decode_fixed(json_string_value(x), json_string_length(x), out, n) == CL_OK;
}

static bool cl_lease_type(json_t *j, const char *want)
{
    json_t *t = json_object_get(j, "type");
    uint64_t v = 0;
    return cl_lease_u64(j, "v", &v) && v == 1 && json_is_string(t) && !strcmp(json_string_value(t), want);
}

cl_err cl_licence_grant_sign(const struct cl_licence_grant *g, const cl_pkey *key, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char nonce[2 * CL_LICENCE_NONCE_LEN + 1], set[65], rep[65] = "";
    struct cl_buf p;
    cl_buf_init(&p, 1024, CL_BUF_NONE);
    CL_ENSURE_D(g->lease_s >= 1 && g->lease_s <= CL_LICENCE_LEASE_MAX_S, CL_E_CORE_INVALID_ARG, "lease_s");
    cl_hex_encode(g->nonce, sizeof(g->nonce), nonce);
    cl_hex_encode(g->set_sha256, sizeof(g->set_sha256), set);
    if (g->has_report)
        cl_hex_encode(g->report_sha256, sizeof(g->report_sha256), rep);
    CL_GUARD(cl_buf_appendf(&p,
                            "{\"v\":1,\"type\":\"lease\",\"nonce\":\"%s\",\"lease_s\":%llu,\"time\":%llu,"
                            "\"set_sha256\":\"%s\",\"report_sha256\":\"%s\"}",
                            nonce, (unsigned long long)g->lease_s, (unsigned long long)g->time, set, rep));
    CL_GUARD(cl_cose_sign1_sign_es384(key, p.data, p.len, true, out));
out:
    cl_buf_free(&p);
    return rc;
}

cl_err cl_licence_grant_verify(const uint8_t *p, size_t n, const cl_pkey *key, struct cl_licence_grant *out)
{
    cl_err rc = CL_OK;
    json_t *j = NULL, *rep;
    struct cl_licence_grant g;
    memset(&g, 0, sizeof(g));
    CL_GUARD(cl_lease_open(p, n, CL_LICENCE_GRANT_MAX, key, CL_E_PROTO_LICENCE_GRANT, &j));
    CL_ENSURE_D(json_object_size(j) == 7 && cl_lease_type(j, "lease"), CL_E_PROTO_LICENCE_GRANT, "not a lease grant");
    CL_ENSURE_D(cl_lease_hex(j, "nonce", g.nonce, sizeof(g.nonce)), CL_E_PROTO_LICENCE_GRANT, "member nonce");
    CL_ENSURE_D(cl_lease_u64(j, "lease_s", &g.lease_s) && g.lease_s >= 1 && g.lease_s <= CL_LICENCE_LEASE_MAX_S,
                CL_E_PROTO_LICENCE_GRANT, "member lease_s");
    CL_ENSURE_D(cl_lease_u64(j, "time", &g.time), CL_E_PROTO_LICENCE_GRANT, "member time");
    CL_ENSURE_D(cl_lease_hex(j, "set_sha256", g.set_sha256, 32), CL_E_PROTO_LICENCE_GRANT, "member set_sha256");
    rep = json_object_get(j, "report_sha256");
    CL_ENSURE_D(json_is_string(rep), CL_E_PROTO_LICENCE_GRANT, "member report_sha256");
    if (json_string_length(rep)) {
        CL_ENSURE_D(cl_lease_hex(j, "report_sha256", g.report_sha256, 32), CL_E_PROTO_LICENCE_GRANT,
                    "member report_sha256");
        g.has_report = true;
    }
    *out = g;
out:
    json_decref(j);
    return rc;
}

cl_err cl_licence_usage_sign(const struct cl_licence_usage *u, const cl_pkey *audit, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char prev[65], model[65];
    struct cl_buf p;
    cl_buf_init(&p, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    CL_ENSURE_D(u->seq >= 1 && u->n <= CL_LICENCE_USAGE_ROWS, CL_E_CORE_INVALID_ARG, "seq or rows");
    cl_hex_encode(u->prev_sha256, 32, prev);
    cl_hex_encode(u->model_sha256, 32, model);
    CL_GUARD(cl_buf_appendf(&p,
                            "{\"v\":1,\"type\":\"usage\",\"seq\":%llu,\"prev_sha256\":\"%s\",\"time\":%llu,"
                            "\"model_sha256\":\"%s\",\"usage\":[",
                            (unsigned long long)u->seq, prev, (unsigned long long)u->time, model));
    for (size_t i = 0; i < u->n; i++) {
        const struct cl_licence_usage_row *r = &u->rows[i];
        CL_ENSURE_D(cl_licence_id_valid(r->id), CL_E_CORE_INVALID_ARG, "row %zu id", i);
        CL_GUARD(cl_buf_appendf(&p,
                                "%s{\"id\":\"%s\",\"period_start\":%llu,\"requests\":%llu,\"prompt_tokens\":%llu,"
                                "\"completion_tokens\":%llu}",
                                i ? "," : "", r->id, (unsigned long long)r->period_start,
                                (unsigned long long)r->requests, (unsigned long long)r->prompt_tokens,
                                (unsigned long long)r->completion_tokens));
    }
    CL_GUARD(cl_buf_append_str(&p, "]}"));
    CL_GUARD(cl_cose_sign1_sign_es384(audit, p.data, p.len, true, out));
out:
    cl_buf_free(&p);
    return rc;
}

cl_err cl_licence_usage_verify(const uint8_t *p, size_t n, const cl_pkey *audit, struct cl_licence_usage *out)
{
    cl_err rc = CL_OK;
    json_t *j = NULL, *arr, *row;
    size_t i;
    struct cl_licence_usage *u = calloc(1, sizeof(*u));
    CL_ENSURE(u, CL_E_CORE_NOMEM);
    CL_GUARD(cl_lease_open(p, n, CL_LICENCE_USAGE_MAX, audit, CL_E_PROTO_LICENCE_MALFORMED, &j));
    CL_ENSURE_D(json_object_size(j) == 7 && cl_lease_type(j, "usage"), CL_E_PROTO_LICENCE_MALFORMED,
                "not a usage report");
    CL_ENSURE_D(cl_lease_u64(j, "seq", &u->seq) && u->seq >= 1, CL_E_PROTO_LICENCE_MALFORMED, "member seq");
    CL_ENSURE_D(cl_lease_hex(j, "prev_sha256", u->prev_sha256, 32), CL_E_PROTO_LICENCE_MALFORMED, "member prev_sha256");
    CL_ENSURE_D(cl_lease_u64(j, "time", &u->time), CL_E_PROTO_LICENCE_MALFORMED, "member time");
    CL_ENSURE_D(cl_lease_hex(j, "model_sha256", u->model_sha256, 32), CL_E_PROTO_LICENCE_MALFORMED,
                "member model_sha256");
    arr = json_object_get(j, "usage");
    CL_ENSURE_D(json_is_array(arr) && json_array_size(arr) <= CL_LICENCE_USAGE_ROWS, CL_E_PROTO_LICENCE_MALFORMED,
                "member usage");
    json_array_foreach(arr, i, row) {
        struct cl_licence_usage_row *r = &u->rows[i];
        json_t *id = json_object_get(row, "id");
        CL_ENSURE_D(json_is_object(row) && json_object_size(row) == 5 && json_is_string(id) &&
                        json_string_length(id) <= CL_LICENCE_ID_MAX,
                    CL_E_PROTO_LICENCE_MALFORMED, "usage row %zu", i);
        memcpy(r->id, json_string_value(id), json_string_length(id) + 1);
        CL_ENSURE_D(cl_licence_id_valid(r->id) && cl_lease_u64(row, "period_start", &r->period_start) &&
                        cl_lease_u64(row, "requests", &r->requests) &&
                        cl_lease_u64(row, "prompt_tokens", &r->prompt_tokens) &&
                        cl_lease_u64(row, "completion_tokens", &r->completion_tokens),
                    CL_E_PROTO_LICENCE_MALFORMED, "usage row %zu", i);
        u->n = i + 1;
    }
    memcpy(out, u, sizeof(*u));
out:
    json_decref(j);
    free(u);
    return rc;
}
