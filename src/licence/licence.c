/* Licence records and the enclave's licence table (docs/formats/licence.md). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/cose.h"
#include "cloister/encode.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"
#include "cloister/secmem.h"

#define CL_LIC_MEMBERS 13
#define CL_LIC_METER_PERIODS 4

bool cl_licence_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= CL_LICENCE_ID_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return n > 0;
}

bool cl_licence_consumer_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= CL_LICENCE_CONSUMER_MAX || (unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || s[n] == '"' ||
            s[n] == '\\')
            return false;
    return n > 0;
}

static cl_err cl_lic_check_fields(const struct cl_licence *l)
{
    if (!cl_licence_id_valid(l->id))
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member id");
    if (!cl_licence_consumer_valid(l->consumer))
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member consumer");
    if (l->not_after <= l->not_before || l->not_after > CL_LICENCE_TIME_MAX)
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "members not_before/not_after");
    if (l->period_s == 0 || l->period_s > CL_LICENCE_PERIOD_MAX)
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member period_s");
    if (l->serial > (UINT64_MAX >> 12) || l->max_requests > (UINT64_MAX >> 12) || l->max_tokens > (UINT64_MAX >> 12) ||
        l->rate_per_min > (UINT64_MAX >> 12))
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "serial, quota or rate out of range");
    return CL_OK;
}

cl_err cl_licence_sign(const struct cl_licence *l, const cl_pkey *key, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char cred[65], model[65];
    struct cl_buf p;
    cl_buf_init(&p, CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
    CL_GUARD(cl_lic_check_fields(l));
    cl_hex_encode(l->credential_sha256, CL_SHA256_LEN, cred);
    cl_hex_encode(l->model_sha256, CL_SHA256_LEN, model);
    CL_GUARD(cl_buf_appendf(&p,
                            "{\"v\":1,\"id\":\"%s\",\"serial\":%llu,\"consumer\":\"%s\",\"credential_sha256\":\"%s\","
                            "\"model_sha256\":\"%s\",\"not_before\":%llu,\"not_after\":%llu,\"period_s\":%llu,"
                            "\"max_requests\":%llu,\"max_tokens\":%llu,\"rate_per_min\":%llu,\"revoked\":%s}",
                            l->id, (unsigned long long)l->serial, l->consumer, cred, model,
                            (unsigned long long)l->not_before, (unsigned long long)l->not_after,
                            (unsigned long long)l->period_s, (unsigned long long)l->max_requests,
                            (unsigned long long)l->max_tokens, (unsigned long long)l->rate_per_min,
                            l->revoked ? "true" : "false"));
    CL_GUARD(cl_cose_sign1_sign_es384(key, p.data, p.len, true, out));
out:
    cl_buf_free(&p);
    return rc;
}

static cl_err cl_lic_str(json_t *j, const char *k, char *dst, size_t cap)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v) || json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v))
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member %s", k);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CL_OK;
}

static cl_err cl_lic_digest(json_t *j, const char *k, uint8_t out[CL_SHA256_LEN])
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v) ||
        cl_hex_decode_fixed(json_string_value(v), json_string_length(v), out, CL_SHA256_LEN) != CL_OK)
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member %s", k);
    return CL_OK;
}

static cl_err cl_lic_uint(json_t *j, const char *k, uint64_t *out)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > (UINT64_MAX >> 12))
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "member %s", k);
    *out = (uint64_t)json_integer_value(v);
    return CL_OK;
}

static void cl_lic_limits(struct cl_cbor_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    lim->max_depth = 4;
    lim->max_items = 16;
    lim->max_input = CL_LICENCE_RECORD_MAX;
    lim->max_map_pairs = 8;
}

static cl_err cl_lic_payload(const uint8_t *p, size_t n, struct cl_licence *out)
{
    cl_err rc = CL_OK;
    json_t *j = NULL, *rv;
    json_error_t e;
    uint64_t v = 0;
    struct cl_licence l;
    memset(&l, 0, sizeof(l));
    j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &e);
    CL_ENSURE_D(j && json_is_object(j) && json_object_size(j) == CL_LIC_MEMBERS, CL_E_PROTO_LICENCE_MALFORMED,
                "payload is not the licence object");
    CL_GUARD(cl_lic_uint(j, "v", &v));
    CL_ENSURE_D(v == 1, CL_E_PROTO_LICENCE_MALFORMED, "version %llu", (unsigned long long)v);
    CL_GUARD(cl_lic_str(j, "id", l.id, sizeof(l.id)));
    CL_GUARD(cl_lic_uint(j, "serial", &l.serial));
    CL_GUARD(cl_lic_str(j, "consumer", l.consumer, sizeof(l.consumer)));
    CL_GUARD(cl_lic_digest(j, "credential_sha256", l.credential_sha256));
    CL_GUARD(cl_lic_digest(j, "model_sha256", l.model_sha256));
    CL_GUARD(cl_lic_uint(j, "not_before", &l.not_before));
    CL_GUARD(cl_lic_uint(j, "not_after", &l.not_after));
    CL_GUARD(cl_lic_uint(j, "period_s", &l.period_s));
    CL_GUARD(cl_lic_uint(j, "max_requests", &l.max_requests));
    CL_GUARD(cl_lic_uint(j, "max_tokens", &l.max_tokens));
    CL_GUARD(cl_lic_uint(j, "rate_per_min", &l.rate_per_min));
    rv = json_object_get(j, "revoked");
    CL_ENSURE_D(json_is_boolean(rv), CL_E_PROTO_LICENCE_MALFORMED, "member revoked");
    l.revoked = json_is_true(rv);
    CL_GUARD(cl_lic_check_fields(&l));
    *out = l;
out:
    json_decref(j);
    return rc;
}

cl_err cl_licence_parse(const uint8_t *p, size_t n, struct cl_licence *out)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    struct cl_cbor_limits lim;
    cl_lic_limits(&lim);
    CL_ENSURE_D(n <= CL_LICENCE_RECORD_MAX, CL_E_PROTO_LICENCE_MALFORMED, "record of %zu bytes", n);
    CL_ENSURE_D(cl_cose_sign1_parse(p, n, CL_COSE_PROFILE_NITRO, &lim, &s) == CL_OK && s.tagged,
                CL_E_PROTO_LICENCE_MALFORMED, "not a tagged COSE_Sign1 ES384 structure");
    CL_GUARD(cl_lic_payload(s.payload, s.payload_len, out));
out:
    cl_cose_sign1_free(&s);
    return rc;
}

cl_err cl_licence_verify(const uint8_t *p, size_t n, const cl_pkey *key, struct cl_licence *out)
{
    cl_err rc = CL_OK;
    struct cl_cose_sign1 s = {0};
    struct cl_cbor_limits lim;
    cl_lic_limits(&lim);
    CL_ENSURE_D(n <= CL_LICENCE_RECORD_MAX, CL_E_PROTO_LICENCE_MALFORMED, "record of %zu bytes", n);
    CL_ENSURE_D(cl_cose_sign1_parse(p, n, CL_COSE_PROFILE_NITRO, &lim, &s) == CL_OK && s.tagged,
                CL_E_PROTO_LICENCE_MALFORMED, "not a tagged COSE_Sign1 ES384 structure");
    CL_ENSURE_D(cl_cose_sign1_verify(&s, key, NULL, 0) == CL_OK, CL_E_PROTO_LICENCE_SIGNATURE,
                "the record's signature does not verify with the licence key");
    CL_GUARD(cl_lic_payload(s.payload, s.payload_len, out));
out:
    cl_cose_sign1_free(&s);
    return rc;
}

cl_err cl_licence_credential_hash(const uint8_t *cred, size_t n, uint8_t out[CL_SHA256_LEN])
{
    if (n < CL_LICENCE_CREDENTIAL_MIN || n > CL_LICENCE_CREDENTIAL_MAX)
        return cl_err_fail(CL_E_PROTO_LICENCE_MALFORMED, "credential of %zu bytes (%d..%d)", n,
                           CL_LICENCE_CREDENTIAL_MIN, CL_LICENCE_CREDENTIAL_MAX);
    return cl_sha256(cred, n, out);
}

cl_err cl_licence_key_bind(const uint8_t *der, size_t n, const char *pinned_hex, cl_pkey **out)
{
    cl_err rc = CL_OK;
    uint8_t pin[CL_SHA256_LEN], got[CL_SHA256_LEN];
    cl_pkey *k = NULL;
    struct cl_buf spki;
    cl_buf_init(&spki, 1024, CL_BUF_NONE);
    CL_ENSURE_D(pinned_hex && cl_hex_decode_fixed(pinned_hex, strlen(pinned_hex), pin, sizeof(pin)) == CL_OK,
                CL_E_PROTO_LICENCE_KEY_MISMATCH, "context entry %s is not 64 hex digits", CL_LICENCE_CTX_KEY);
    CL_ENSURE_D(cl_pkey_parse(der, n, &k) == CL_OK && cl_pkey_type(k) == CL_PKEY_P384, CL_E_PROTO_LICENCE_KEY_MISMATCH,
                "the licence key is not a P-384 public key");
    /* Hash the canonical SubjectPublicKeyInfo, whatever encoding was given. */
    CL_GUARD(cl_pkey_public_der(k, &spki));
    CL_GUARD(cl_sha256(spki.data, spki.len, got));
    CL_ENSURE_D(cl_ct_equal(got, pin, sizeof(pin)), CL_E_PROTO_LICENCE_KEY_MISMATCH,
                "sha256 of the given key differs from %s", CL_LICENCE_CTX_KEY);
    *out = k;
    k = NULL;
out:
    cl_pkey_free(k);
    cl_buf_free(&spki);
    return rc;
}

/* ---- the enclave's table ---- */

struct cl_lic_entry {
    struct cl_licence l;
    bool present;     /* in the latest accepted set */
    uint64_t period;  /* index of the period the counters belong to */
    uint64_t requests, tokens;
    uint64_t minute, minute_requests;
    /* metering for usage reports: cumulative per period, the last few periods */
    struct cl_lic_meter {
        uint64_t period_start, requests, prompt, completion;
        bool used;
    } m[CL_LIC_METER_PERIODS];
};

struct cl_licence_table {
    pthread_mutex_t mu;
    const cl_pkey *key;
    uint8_t model[CL_SHA256_LEN];
    struct cl_lic_entry *e; /* CL_LICENCE_TABLE_MAX entries; ids ever seen stay, so serials never go back */
    size_t n;
    uint64_t lease_end; /* 0: never updated */
};

cl_err cl_licence_table_new(const cl_pkey *key, const uint8_t model_sha256[CL_SHA256_LEN], cl_licence_table **out)
{
    cl_err rc = CL_OK;
    cl_licence_table *t = calloc(1, sizeof(*t));
    CL_ENSURE(t, CL_E_CORE_NOMEM);
    t->e = calloc(CL_LICENCE_TABLE_MAX, sizeof(*t->e));
    CL_ENSURE(t->e, CL_E_CORE_NOMEM);
    CL_ENSURE(pthread_mutex_init(&t->mu, NULL) == 0, CL_E_CORE_NOMEM);
    t->key = key;
    memcpy(t->model, model_sha256, CL_SHA256_LEN);
    *out = t;
    t = NULL;
out:
    if (t)
        free(t->e);
    free(t);
    return rc;
}

void cl_licence_table_free(cl_licence_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    cl_wipe(t->e, CL_LICENCE_TABLE_MAX * sizeof(*t->e));
    free(t->e);
    free(t);
}

static struct cl_lic_entry *cl_lic_find(struct cl_lic_entry *e, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(e[i].l.id, id))
            return &e[i];
    return NULL;
}

cl_err cl_licence_table_update(cl_licence_table *t, const uint8_t *const *recs, const size_t *lens, size_t n,
                               uint64_t now, uint64_t lease_s)
{
    cl_err rc = CL_OK;
    struct cl_lic_entry *next = NULL;
    size_t nn;
    bool locked = false;
    CL_ENSURE_D(lease_s > 0 && lease_s <= 86400 && now <= CL_LICENCE_TIME_MAX, CL_E_CORE_INVALID_ARG, "lease_s or now");
    CL_ENSURE_D(n <= CL_LICENCE_TABLE_MAX, CL_E_PROTO_LICENCE_MALFORMED, "%zu licences (at most %d)", n,
                CL_LICENCE_TABLE_MAX);
    next = calloc(CL_LICENCE_TABLE_MAX, sizeof(*next));
    CL_ENSURE(next, CL_E_CORE_NOMEM);
    CL_ENSURE(pthread_mutex_lock(&t->mu) == 0, CL_E_CORE_THREAD);
    locked = true;
    /* Work on a copy so that a bad set leaves the table as it was. */
    memcpy(next, t->e, t->n * sizeof(*next));
    nn = t->n;
    for (size_t i = 0; i < nn; i++)
        next[i].present = false;
    for (size_t i = 0; i < n; i++) {
        struct cl_licence l;
        struct cl_lic_entry *x;
        rc = cl_licence_verify(recs[i], lens[i], t->key, &l);
        if (rc != CL_OK)
            goto out; /* keeps the detail of the record's failure */
        x = cl_lic_find(next, nn, l.id);
        if (x) {
            CL_ENSURE_D(!x->present, CL_E_PROTO_LICENCE_MALFORMED, "licence id repeated in the set (record %zu)", i);
            CL_ENSURE_D(l.serial >= x->l.serial, CL_E_PROTO_LICENCE_ROLLBACK,
                        "record %zu: serial %llu below the accepted %llu", i, (unsigned long long)l.serial,
                        (unsigned long long)x->l.serial);
            /* A changed credential or period starts the counters afresh. */
            if (!cl_ct_equal(x->l.credential_sha256, l.credential_sha256, CL_SHA256_LEN) ||
                x->l.period_s != l.period_s || x->l.not_before != l.not_before)
                x->period = UINT64_MAX;
        } else {
            CL_ENSURE_D(nn < CL_LICENCE_TABLE_MAX, CL_E_PROTO_LICENCE_MALFORMED, "more than %d licence ids",
                        CL_LICENCE_TABLE_MAX);
            x = &next[nn++];
            memset(x, 0, sizeof(*x));
            x->period = UINT64_MAX;
        }
        x->l = l;
        x->present = true;
    }
    memcpy(t->e, next, nn * sizeof(*next));
    t->n = nn;
    t->lease_end = now + lease_s;
out:
    if (locked)
        pthread_mutex_unlock(&t->mu);
    if (next)
        cl_wipe(next, CL_LICENCE_TABLE_MAX * sizeof(*next));
    free(next);
    return rc;
}

static void cl_lic_roll(struct cl_lic_entry *x, uint64_t now)
{
    uint64_t p = (now - x->l.not_before) / x->l.period_s;
    if (p != x->period) {
        x->period = p;
        x->requests = 0;
        x->tokens = 0;
    }
    if (now / 60 != x->minute) {
        x->minute = now / 60;
        x->minute_requests = 0;
    }
}

/* The meter slot of the entry's current period (the oldest one is reused). */
static struct cl_lic_meter *cl_lic_meter_at(struct cl_lic_entry *x)
{
    uint64_t start = x->l.not_before + x->period * x->l.period_s;
    struct cl_lic_meter *old = &x->m[0];
    for (size_t i = 0; i < CL_LIC_METER_PERIODS; i++) {
        if (x->m[i].used && x->m[i].period_start == start)
            return &x->m[i];
        if (!x->m[i].used || (old->used && x->m[i].period_start < old->period_start))
            old = &x->m[i];
    }
    memset(old, 0, sizeof(*old));
    old->used = true;
    old->period_start = start;
    return old;
}

static uint64_t cl_lic_sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

void cl_licence_table_charge_split(cl_licence_table *t, size_t slot, uint64_t prompt_tokens,
                                   uint64_t completion_tokens)
{
    if (pthread_mutex_lock(&t->mu) != 0)
        return;
    if (slot < t->n) {
        struct cl_lic_entry *x = &t->e[slot];
        x->tokens = cl_lic_sat_add(x->tokens, cl_lic_sat_add(prompt_tokens, completion_tokens));
        if (x->period != UINT64_MAX) {
            struct cl_lic_meter *m = cl_lic_meter_at(x);
            m->prompt = cl_lic_sat_add(m->prompt, prompt_tokens);
            m->completion = cl_lic_sat_add(m->completion, completion_tokens);
        }
    }
    pthread_mutex_unlock(&t->mu);
}

void cl_licence_table_meter(cl_licence_table *t, struct cl_licence_usage *u)
{
    u->n = 0;
    if (pthread_mutex_lock(&t->mu) != 0)
        return;
    for (size_t i = 0; i < t->n; i++)
        for (size_t k = 0; k < CL_LIC_METER_PERIODS; k++) {
            const struct cl_lic_meter *m = &t->e[i].m[k];
            if (!m->used || u->n == CL_LICENCE_USAGE_ROWS)
                continue;
            struct cl_licence_usage_row *r = &u->rows[u->n++];
            snprintf(r->id, sizeof(r->id), "%s", t->e[i].l.id);
            r->period_start = m->period_start;
            r->requests = m->requests;
            r->prompt_tokens = m->prompt;
            r->completion_tokens = m->completion;
        }
    pthread_mutex_unlock(&t->mu);
}

cl_err cl_licence_table_admit(cl_licence_table *t, const uint8_t *cred, size_t n, uint64_t now, size_t *slot)
{
    cl_err rc = CL_OK;
    uint8_t h[CL_SHA256_LEN];
    struct cl_lic_entry *x = NULL;
    bool locked = false;
    CL_ENSURE_D(cred && n > 0, CL_E_PROTO_LICENCE_MISSING, "the request carries no credential");
    rc = cl_licence_credential_hash(cred, n, h);
    CL_ENSURE_D(rc == CL_OK, CL_E_PROTO_LICENCE_UNKNOWN, "credential of %zu bytes", n);
    CL_ENSURE(pthread_mutex_lock(&t->mu) == 0, CL_E_CORE_THREAD);
    locked = true;
    CL_ENSURE_D(t->lease_end != 0 && now < t->lease_end, CL_E_PROTO_LICENCE_LEASE_ENDED,
                t->lease_end ? "the licence lease was not renewed in time" : "no licence set received yet");
    /* Look at every entry: the time taken does not tell which one matched. */
    for (size_t i = 0; i < t->n; i++)
        if (cl_ct_equal(t->e[i].l.credential_sha256, h, CL_SHA256_LEN) && t->e[i].present && !x)
            x = &t->e[i];
    CL_ENSURE_D(x, CL_E_PROTO_LICENCE_UNKNOWN, "no licence for this credential");
    CL_ENSURE_D(!x->l.revoked, CL_E_PROTO_LICENCE_REVOKED, "licence %s", x->l.id);
    CL_ENSURE_D(now >= x->l.not_before, CL_E_PROTO_LICENCE_NOT_YET_VALID, "licence %s", x->l.id);
    CL_ENSURE_D(now < x->l.not_after, CL_E_PROTO_LICENCE_EXPIRED, "licence %s", x->l.id);
    CL_ENSURE_D(cl_ct_equal(x->l.model_sha256, t->model, CL_SHA256_LEN), CL_E_PROTO_LICENCE_WRONG_MODEL,
                "licence %s", x->l.id);
    cl_lic_roll(x, now);
    CL_ENSURE_D(!x->l.max_requests || x->requests < x->l.max_requests, CL_E_PROTO_LICENCE_QUOTA,
                "licence %s: %llu requests per period", x->l.id, (unsigned long long)x->l.max_requests);
    CL_ENSURE_D(!x->l.max_tokens || x->tokens < x->l.max_tokens, CL_E_PROTO_LICENCE_QUOTA,
                "licence %s: %llu tokens per period", x->l.id, (unsigned long long)x->l.max_tokens);
    CL_ENSURE_D(!x->l.rate_per_min || x->minute_requests < x->l.rate_per_min, CL_E_PROTO_LICENCE_RATE,
                "licence %s: %llu requests per minute", x->l.id, (unsigned long long)x->l.rate_per_min);
    x->requests++;
    x->minute_requests++;
    cl_lic_meter_at(x)->requests++;
    *slot = (size_t)(x - t->e);
out:
    if (locked)
        pthread_mutex_unlock(&t->mu);
    cl_wipe(h, sizeof(h));
    return rc;
}

void cl_licence_table_charge(cl_licence_table *t, size_t slot, uint64_t tokens)
{
    if (pthread_mutex_lock(&t->mu) != 0)
        return;
    if (slot < t->n)
        t->e[slot].tokens = (t->e[slot].tokens + tokens < t->e[slot].tokens) ? UINT64_MAX : t->e[slot].tokens + tokens;
    pthread_mutex_unlock(&t->mu);
}

cl_err cl_licence_table_still(cl_licence_table *t, size_t slot, uint64_t now)
{
    cl_err rc = CL_OK;
    bool locked = false;
    CL_ENSURE(pthread_mutex_lock(&t->mu) == 0, CL_E_CORE_THREAD);
    locked = true;
    CL_ENSURE_D(t->lease_end != 0 && now < t->lease_end, CL_E_PROTO_LICENCE_LEASE_ENDED,
                "the licence lease was not renewed in time");
    CL_ENSURE_D(slot < t->n && t->e[slot].present, CL_E_PROTO_LICENCE_UNKNOWN, "the licence left the licence set");
    CL_ENSURE_D(!t->e[slot].l.revoked, CL_E_PROTO_LICENCE_REVOKED, "licence %s, revoked during the answer",
                t->e[slot].l.id);
    CL_ENSURE_D(now < t->e[slot].l.not_after, CL_E_PROTO_LICENCE_EXPIRED, "licence %s, expired during the answer",
                t->e[slot].l.id);
out:
    if (locked)
        pthread_mutex_unlock(&t->mu);
    return rc;
}

bool cl_licence_table_slot_id(cl_licence_table *t, size_t slot, char out[CL_LICENCE_ID_MAX + 1])
{
    bool ok = false;
    if (pthread_mutex_lock(&t->mu) != 0)
        return false;
    if (slot < t->n) {
        memcpy(out, t->e[slot].l.id, CL_LICENCE_ID_MAX + 1);
        ok = true;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

bool cl_licence_table_usage(cl_licence_table *t, const char *id, uint64_t now, uint64_t *requests, uint64_t *tokens)
{
    struct cl_lic_entry *x;
    bool ok = false;
    if (pthread_mutex_lock(&t->mu) != 0)
        return false;
    x = cl_lic_find(t->e, t->n, id);
    if (x && now >= x->l.not_before) {
        cl_lic_roll(x, now);
        *requests = x->requests;
        *tokens = x->tokens;
        ok = true;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

uint64_t cl_licence_table_lease_end(cl_licence_table *t)
{
    uint64_t v = 0;
    if (pthread_mutex_lock(&t->mu) != 0)
        return 0;
    v = t->lease_end;
    pthread_mutex_unlock(&t->mu);
    return v;
}

int cl_licence_http_status(cl_err rc)
{
    switch (rc) {
    case CL_E_PROTO_LICENCE_MISSING:
    case CL_E_PROTO_LICENCE_UNKNOWN:
        return 401;
    case CL_E_PROTO_LICENCE_RATE:
        return 429;
    case CL_E_PROTO_LICENCE_LEASE_ENDED:
        return 503;
    case CL_E_PROTO_LICENCE_EXPIRED:
    case CL_E_PROTO_LICENCE_NOT_YET_VALID:
    case CL_E_PROTO_LICENCE_REVOKED:
    case CL_E_PROTO_LICENCE_WRONG_MODEL:
    case CL_E_PROTO_LICENCE_QUOTA:
        return 403;
    default:
        return 0;
    }
}
