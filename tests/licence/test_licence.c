/* Licence records and the enclave's licence table, attacked: forged and
 * altered records, a substituted licence key, rolled-back serials, and each
 * consumer the table must refuse, with the reason it names. */
#include <string.h>

#include "testutil.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"
#include "cloister/encode.h"
#include "cloister/secmem.h"

#define T0 1800000000ull /* 2027-01-15 */

static const char cl_t_cred_a[] = "consumer-a-credential-0123456789";
static const char cl_t_cred_b[] = "consumer-b-credential-0123456789";
static const uint8_t cl_t_model[32] = {1, 2, 3};

static void cl_t_lic(struct cl_licence *l, const char *id, const char *cred)
{
    memset(l, 0, sizeof(*l));
    snprintf(l->id, sizeof(l->id), "%s", id);
    snprintf(l->consumer, sizeof(l->consumer), "Hospital %s", id);
    assert_ok(cl_licence_credential_hash((const uint8_t *)cred, strlen(cred), l->credential_sha256));
    memcpy(l->model_sha256, cl_t_model, 32);
    l->serial = 1;
    l->not_before = T0 - 100;
    l->not_after = T0 + 86400;
    l->period_s = 3600;
}

static void cl_t_sign(const struct cl_licence *l, const cl_pkey *k, struct cl_buf *out)
{
    cl_buf_init(out, CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
    assert_ok(cl_licence_sign(l, k, out));
}

/* Replaces the table's set with the given licences (signed by k). */
static cl_err cl_t_update(cl_licence_table *t, const cl_pkey *k, const struct cl_licence *ls, size_t n, uint64_t now)
{
    struct cl_buf b[8];
    const uint8_t *p[8];
    size_t len[8];
    cl_err rc;
    for (size_t i = 0; i < n; i++) {
        cl_t_sign(&ls[i], k, &b[i]);
        p[i] = b[i].data;
        len[i] = b[i].len;
    }
    rc = cl_licence_table_update(t, p, len, n, now, 2);
    for (size_t i = 0; i < n; i++)
        cl_buf_free(&b[i]);
    return rc;
}

static cl_err cl_t_admit(cl_licence_table *t, const char *cred, uint64_t now)
{
    size_t slot;
    return cl_licence_table_admit(t, (const uint8_t *)cred, cred ? strlen(cred) : 0, now, &slot);
}

static void test_record_roundtrip_and_forgery(void **state)
{
    (void)state;
    cl_pkey *k, *other;
    struct cl_licence l, g;
    struct cl_buf b;
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &other));
    cl_t_lic(&l, "lic-1", cl_t_cred_a);
    l.max_requests = 10;
    l.rate_per_min = 5;
    cl_t_sign(&l, k, &b);
    /* The record holds the credential's hash, never the credential. */
    assert_null(memmem(b.data, b.len, cl_t_cred_a, strlen(cl_t_cred_a)));
    assert_ok(cl_licence_verify(b.data, b.len, k, &g));
    assert_string_equal(g.id, "lic-1");
    assert_memory_equal(g.credential_sha256, l.credential_sha256, 32);
    assert_int_equal(g.max_requests, 10);
    assert_int_equal(g.rate_per_min, 5);
    assert_false(g.revoked);
    /* Signed by another key (the host's own licences): refused. */
    assert_err(cl_licence_verify(b.data, b.len, other, &g), CL_E_PROTO_LICENCE_SIGNATURE);
    /* One payload byte altered (the consumer raising its own quota). */
    {
        uint8_t *q = memmem(b.data, b.len, "\"max_requests\":10", 17);
        assert_non_null(q);
        q[16] = '9';
        assert_err(cl_licence_verify(b.data, b.len, k, &g), CL_E_PROTO_LICENCE_SIGNATURE);
        assert_ok(cl_licence_parse(b.data, b.len, &g)); /* parses; only verification catches it */
        assert_int_equal(g.max_requests, 19);
    }
    /* Truncated and oversized records. */
    assert_err(cl_licence_verify(b.data, b.len - 1, k, &g), CL_E_PROTO_LICENCE_MALFORMED);
    assert_err(cl_licence_verify(b.data, CL_LICENCE_RECORD_MAX + 1, k, &g), CL_E_PROTO_LICENCE_MALFORMED);
    cl_buf_free(&b);
    /* Bad fields are refused at signing. */
    cl_t_lic(&l, "bad id", cl_t_cred_a);
    cl_buf_init(&b, CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
    assert_err(cl_licence_sign(&l, k, &b), CL_E_PROTO_LICENCE_MALFORMED);
    cl_t_lic(&l, "lic-1", cl_t_cred_a);
    snprintf(l.consumer, sizeof(l.consumer), "a\"b");
    assert_err(cl_licence_sign(&l, k, &b), CL_E_PROTO_LICENCE_MALFORMED);
    cl_t_lic(&l, "lic-1", cl_t_cred_a);
    l.not_after = l.not_before;
    assert_err(cl_licence_sign(&l, k, &b), CL_E_PROTO_LICENCE_MALFORMED);
    cl_t_lic(&l, "lic-1", cl_t_cred_a);
    l.period_s = 0;
    assert_err(cl_licence_sign(&l, k, &b), CL_E_PROTO_LICENCE_MALFORMED);
    cl_buf_free(&b);
    /* Credentials too short to be secrets are refused. */
    {
        uint8_t h[32];
        assert_err(cl_licence_credential_hash((const uint8_t *)"short", 5, h), CL_E_PROTO_LICENCE_MALFORMED);
    }
    cl_pkey_free(k);
    cl_pkey_free(other);
}

static void test_key_binding(void **state)
{
    (void)state;
    cl_pkey *k, *host, *got = NULL;
    struct cl_buf der, hdr, pem;
    uint8_t h[32];
    char pin[65];
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &host));
    cl_buf_init(&der, 4096, CL_BUF_NONE);
    cl_buf_init(&hdr, 4096, CL_BUF_NONE);
    cl_buf_init(&pem, 4096, CL_BUF_SECURE);
    assert_ok(cl_pkey_public_der(k, &der));
    assert_ok(cl_sha256(der.data, der.len, h));
    cl_hex_encode(h, 32, pin);
    assert_ok(cl_licence_key_bind(der.data, der.len, pin, &got));
    assert_non_null(got);
    cl_pkey_free(got);
    got = NULL;
    /* The host substitutes its own licence key: the pin names the mismatch. */
    assert_ok(cl_pkey_public_der(host, &hdr));
    assert_err(cl_licence_key_bind(hdr.data, hdr.len, pin, &got), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_non_null(strstr(cl_err_detail(), CL_LICENCE_CTX_KEY));
    assert_null(got);
    /* No pin, a malformed pin, garbage or a private key in place of the key. */
    assert_err(cl_licence_key_bind(der.data, der.len, NULL, &got), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_err(cl_licence_key_bind(der.data, der.len, "abcd", &got), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_err(cl_licence_key_bind((const uint8_t *)"junk", 4, pin, &got), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_ok(cl_pkey_private_pem(host, &pem));
    assert_err(cl_licence_key_bind(pem.data, pem.len, pin, &got), CL_E_PROTO_LICENCE_KEY_MISMATCH);
    assert_null(got);
    cl_buf_free(&der);
    cl_buf_free(&hdr);
    cl_buf_free(&pem);
    cl_pkey_free(k);
    cl_pkey_free(host);
}

static void test_table_refusals(void **state)
{
    (void)state;
    cl_pkey *k;
    cl_licence_table *t;
    struct cl_licence ls[5];
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    /* Fails closed before the first licence set arrives. */
    assert_err(cl_t_admit(t, cl_t_cred_a, T0), CL_E_PROTO_LICENCE_LEASE_ENDED);
    cl_t_lic(&ls[0], "ok", cl_t_cred_a);
    cl_t_lic(&ls[1], "expired", "expired-credential-0123456789");
    ls[1].not_after = T0;
    cl_t_lic(&ls[2], "future", "future-credential-0123456789");
    ls[2].not_before = T0 + 1;
    cl_t_lic(&ls[3], "revoked", "revoked-credential-0123456789");
    ls[3].revoked = true;
    cl_t_lic(&ls[4], "other-model", "other-model-credential-0123456789");
    ls[4].model_sha256[0] ^= 0xff;
    assert_ok(cl_t_update(t, k, ls, 5, T0));
    assert_ok(cl_t_admit(t, cl_t_cred_a, T0));
    assert_err(cl_t_admit(t, NULL, T0), CL_E_PROTO_LICENCE_MISSING);
    assert_err(cl_t_admit(t, cl_t_cred_b, T0), CL_E_PROTO_LICENCE_UNKNOWN);
    assert_err(cl_t_admit(t, "x", T0), CL_E_PROTO_LICENCE_UNKNOWN);
    assert_err(cl_t_admit(t, "expired-credential-0123456789", T0), CL_E_PROTO_LICENCE_EXPIRED);
    assert_err(cl_t_admit(t, "future-credential-0123456789", T0), CL_E_PROTO_LICENCE_NOT_YET_VALID);
    assert_err(cl_t_admit(t, "revoked-credential-0123456789", T0), CL_E_PROTO_LICENCE_REVOKED);
    assert_err(cl_t_admit(t, "other-model-credential-0123456789", T0), CL_E_PROTO_LICENCE_WRONG_MODEL);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_UNKNOWN), 401);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_MISSING), 401);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_REVOKED), 403);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_QUOTA), 403);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_LEASE_ENDED), 503);
    assert_int_equal(cl_licence_http_status(CL_E_CORE_IO), 0);
    /* The lease (2 s) ends without renewal: everyone is refused. */
    assert_ok(cl_t_admit(t, cl_t_cred_a, T0 + 1));
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 2), CL_E_PROTO_LICENCE_LEASE_ENDED);
    assert_int_equal(cl_licence_table_lease_end(t), T0 + 2);
    cl_licence_table_free(t);
    cl_pkey_free(k);
}

static void test_table_revocation_and_rollback(void **state)
{
    (void)state;
    cl_pkey *k, *host;
    cl_licence_table *t;
    struct cl_licence l[2];
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &host));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    cl_t_lic(&l[0], "a", cl_t_cred_a);
    cl_t_lic(&l[1], "b", cl_t_cred_b);
    assert_ok(cl_t_update(t, k, l, 2, T0));
    assert_ok(cl_t_admit(t, cl_t_cred_a, T0));
    /* Revoked at the key service: the renewal carries serial 2, revoked. */
    l[0].serial = 2;
    l[0].revoked = true;
    assert_ok(cl_t_update(t, k, l, 2, T0 + 1));
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 1), CL_E_PROTO_LICENCE_REVOKED);
    /* The host replays the older, unrevoked record: refused as a rollback, and
     * the table keeps the revocation. */
    l[0].serial = 1;
    l[0].revoked = false;
    assert_err(cl_t_update(t, k, l, 2, T0 + 2), CL_E_PROTO_LICENCE_ROLLBACK);
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 2), CL_E_PROTO_LICENCE_REVOKED);
    /* Dropping the record from the set does not bring it back later with an old serial. */
    assert_ok(cl_t_update(t, k, &l[1], 1, T0 + 2));
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 2), CL_E_PROTO_LICENCE_UNKNOWN);
    assert_err(cl_t_update(t, k, l, 2, T0 + 3), CL_E_PROTO_LICENCE_ROLLBACK);
    /* A set with one record signed by the host's key is refused whole. */
    {
        struct cl_buf good, bad;
        const uint8_t *p[2];
        size_t n[2];
        cl_t_sign(&l[1], k, &good);
        l[1].serial = 9;
        cl_t_sign(&l[1], host, &bad);
        p[0] = good.data, n[0] = good.len, p[1] = bad.data, n[1] = bad.len;
        assert_err(cl_licence_table_update(t, p, n, 2, T0 + 3, 2), CL_E_PROTO_LICENCE_SIGNATURE);
        /* Repeated id in one set. */
        p[1] = good.data, n[1] = good.len;
        assert_err(cl_licence_table_update(t, p, n, 2, T0 + 3, 2), CL_E_PROTO_LICENCE_MALFORMED);
        cl_buf_free(&good);
        cl_buf_free(&bad);
    }
    /* The failed updates did not renew the lease. */
    assert_int_equal(cl_licence_table_lease_end(t), T0 + 4);
    assert_ok(cl_t_admit(t, cl_t_cred_b, T0 + 3));
    assert_err(cl_t_admit(t, cl_t_cred_b, T0 + 4), CL_E_PROTO_LICENCE_LEASE_ENDED);
    cl_licence_table_free(t);
    cl_pkey_free(k);
    cl_pkey_free(host);
}

static void test_table_quotas(void **state)
{
    (void)state;
    cl_pkey *k;
    cl_licence_table *t;
    struct cl_licence l[2];
    size_t slot = 99;
    uint64_t rq = 0, tk = 0;
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    cl_t_lic(&l[0], "requests", cl_t_cred_a);
    l[0].max_requests = 3;
    l[0].not_before = T0;
    cl_t_lic(&l[1], "tokens", cl_t_cred_b);
    l[1].max_tokens = 100;
    l[1].rate_per_min = 1000;
    l[1].not_before = T0;
    assert_ok(cl_t_update(t, k, l, 2, T0));
    for (int i = 0; i < 3; i++)
        assert_ok(cl_t_admit(t, cl_t_cred_a, T0 + 1));
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 1), CL_E_PROTO_LICENCE_QUOTA);
    assert_non_null(strstr(cl_err_detail(), "requests per period"));
    assert_true(cl_licence_table_usage(t, "requests", T0 + 1, &rq, &tk));
    assert_int_equal(rq, 3);
    /* Token quota: the request crossing it completes, the next is refused. */
    assert_ok(cl_licence_table_admit(t, (const uint8_t *)cl_t_cred_b, strlen(cl_t_cred_b), T0 + 1, &slot));
    cl_licence_table_charge(t, slot, 60);
    assert_ok(cl_licence_table_admit(t, (const uint8_t *)cl_t_cred_b, strlen(cl_t_cred_b), T0 + 1, &slot));
    cl_licence_table_charge(t, slot, 60);
    assert_err(cl_t_admit(t, cl_t_cred_b, T0 + 1), CL_E_PROTO_LICENCE_QUOTA);
    assert_non_null(strstr(cl_err_detail(), "tokens per period"));
    assert_true(cl_licence_table_usage(t, "tokens", T0 + 1, &rq, &tk));
    assert_int_equal(rq, 2);
    assert_int_equal(tk, 120);
    /* Counters survive a renewal of the same licence (a renewal is no reset)... */
    l[0].serial = 2;
    assert_ok(cl_t_update(t, k, l, 2, T0 + 2));
    assert_err(cl_t_admit(t, cl_t_cred_a, T0 + 2), CL_E_PROTO_LICENCE_QUOTA);
    /* ...and start afresh in the next period. */
    assert_ok(cl_t_update(t, k, l, 2, T0 + 3600));
    assert_ok(cl_t_admit(t, cl_t_cred_a, T0 + 3600));
    assert_ok(cl_t_admit(t, cl_t_cred_b, T0 + 3600));
    assert_false(cl_licence_table_usage(t, "nobody", T0, &rq, &tk));
    cl_licence_table_free(t);
    cl_pkey_free(k);
}

static void test_table_rate(void **state)
{
    (void)state;
    cl_pkey *k;
    cl_licence_table *t;
    struct cl_licence l;
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    cl_t_lic(&l, "rate", cl_t_cred_a);
    l.rate_per_min = 2;
    uint64_t m = (T0 / 60) * 60 + 60; /* the start of a clock minute */
    assert_ok(cl_t_update(t, k, &l, 1, m));
    assert_ok(cl_t_admit(t, cl_t_cred_a, m));
    assert_ok(cl_t_admit(t, cl_t_cred_a, m + 1));
    assert_err(cl_t_admit(t, cl_t_cred_a, m + 1), CL_E_PROTO_LICENCE_RATE);
    assert_int_equal(cl_licence_http_status(CL_E_PROTO_LICENCE_RATE), 429);
    cl_licence_table_free(t);
    cl_pkey_free(k);
}

/* Metering: what the usage report carries equals what was admitted and
 * charged, split into prompt and completion tokens, per period; a report
 * verifies only with the audit key that signed it and unaltered. */
static void test_meter_and_usage_report(void **state)
{
    (void)state;
    cl_pkey *k, *audit, *other;
    cl_licence_table *t;
    struct cl_licence l;
    size_t slot;
    struct cl_licence_usage *u = calloc(1, sizeof(*u)), *v = calloc(1, sizeof(*v));
    struct cl_buf rep;
    assert_non_null(u);
    assert_non_null(v);
    cl_buf_init(&rep, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &k));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &audit));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &other));
    assert_ok(cl_licence_table_new(k, cl_t_model, &t));
    cl_t_lic(&l, "meter", cl_t_cred_a);
    l.not_before = T0;
    assert_ok(cl_t_update(t, k, &l, 1, T0));
    assert_ok(cl_licence_table_admit(t, (const uint8_t *)cl_t_cred_a, strlen(cl_t_cred_a), T0 + 1, &slot));
    cl_licence_table_charge_split(t, slot, 11, 5);
    assert_ok(cl_licence_table_admit(t, (const uint8_t *)cl_t_cred_a, strlen(cl_t_cred_a), T0 + 1, &slot));
    cl_licence_table_charge_split(t, slot, 7, 3);
    assert_ok(cl_t_update(t, k, &l, 1, T0 + 3600)); /* the next period */
    assert_ok(cl_licence_table_admit(t, (const uint8_t *)cl_t_cred_a, strlen(cl_t_cred_a), T0 + 3601, &slot));
    cl_licence_table_charge_split(t, slot, 2, 1);
    cl_licence_table_meter(t, u);
    assert_int_equal(u->n, 2);
    for (size_t i = 0; i < 2; i++) {
        struct cl_licence_usage_row *r = &u->rows[i];
        assert_string_equal(r->id, "meter");
        if (r->period_start == T0) {
            assert_int_equal(r->requests, 2);
            assert_int_equal(r->prompt_tokens, 18);
            assert_int_equal(r->completion_tokens, 8);
        } else {
            assert_int_equal(r->period_start, T0 + 3600);
            assert_int_equal(r->requests, 1);
            assert_int_equal(r->prompt_tokens, 2);
        }
    }
    u->seq = 1;
    u->time = T0 + 3601;
    assert_ok(cl_licence_usage_sign(u, audit, &rep));
    assert_ok(cl_licence_usage_verify(rep.data, rep.len, audit, v));
    assert_int_equal(v->n, 2);
    assert_int_equal(v->rows[0].requests + v->rows[1].requests, 3);
    assert_err(cl_licence_usage_verify(rep.data, rep.len, other, v), CL_E_PROTO_LICENCE_MALFORMED);
    assert_non_null(strstr(cl_err_detail(), "signature does not verify"));
    for (size_t i = 0; i + 12 < rep.len; i++)
        if (!memcmp(rep.data + i, "\"requests\":2", 12)) {
            rep.data[i + 11] = '1'; /* the host lowering a count */
            break;
        }
    assert_err(cl_licence_usage_verify(rep.data, rep.len, audit, v), CL_E_PROTO_LICENCE_MALFORMED);
    /* a lease grant is not a usage report, nor a licence record */
    struct cl_licence_grant g = {.lease_s = 2, .time = T0};
    struct cl_licence rec;
    cl_buf_reset(&rep);
    assert_ok(cl_licence_grant_sign(&g, audit, &rep));
    assert_err(cl_licence_usage_verify(rep.data, rep.len, audit, v), CL_E_PROTO_LICENCE_MALFORMED);
    assert_err(cl_licence_verify(rep.data, rep.len, audit, &rec), CL_E_PROTO_LICENCE_MALFORMED);
    assert_ok(cl_licence_grant_verify(rep.data, rep.len, audit, &g));
    assert_false(g.has_report);
    cl_buf_free(&rep);
    free(u);
    free(v);
    cl_licence_table_free(t);
    cl_pkey_free(k);
    cl_pkey_free(audit);
    cl_pkey_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip_and_forgery),
        cmocka_unit_test(test_key_binding),
        cmocka_unit_test(test_table_refusals),
        cmocka_unit_test(test_table_revocation_and_rollback),
        cmocka_unit_test(test_table_quotas),
        cmocka_unit_test(test_table_rate),
        cmocka_unit_test(test_meter_and_usage_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
