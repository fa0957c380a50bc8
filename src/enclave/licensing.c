/* Licensing inside the enclave (docs/licensing.md): when the sealed model's
 * encryption context pins a licence key, the enclave fetches that key, the
 * signed licence set and a lease grant from the key service through its own
 * bridge, renews well before each lease ends with a fresh attested request (the
 * key policy is evaluated again each time) carrying a signed usage report,
 * and, if no renewal succeeds before the lease ends, stops serving and wipes
 * the model and the key-service credentials from memory. Fail closed. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/encode.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/enclave_runtime.h"
#include "kms_bridge.h"

struct cl_lease {
    struct cl_enclave_boot *bt;
    cl_nsm *nsm;
    const cl_pkey *audit;
    const uint8_t *ud;
    size_t ud_len;
    cl_pkey *rsa;            /* the Recipient key in renewal documents (nothing is wrapped to it) */
    struct cl_buf rsa_spki;
    cl_pkey *lkey;           /* licence key, bound to the model's context entry */
    uint8_t lkey_sha256[32];
    cl_licence_table *table;
    char bridge[64];
    struct cl_generator inner;
    pthread_rwlock_t gen_lock; /* generations read-locked; the wipe write-locks */
    pthread_mutex_t mu;
    bool ended;                /* serving stopped */
    bool wiped;                /* model and credentials wiped */
    cl_err end_reason;
    uint64_t renewals, failures, fail_seen, last_renew_us;
    cl_err last_code;
    uint64_t seq;              /* usage reports sent */
    uint8_t prev_sha256[32];
    char last_event[64];
    char last_error[300];      /* why the latest renewal failed (the reason reported at the lease's end) */
    uint64_t lease_s;          /* of the latest grant (sets the renewal call's timeout) */
    struct {
        void (*fn)(void *);
        void *arg;
    } hooks[CL_LEASE_HOOKS];   /* more key material to wipe at the end */
    size_t nhooks;
};

static uint64_t cl_lease_now_s(void) { return (uint64_t)time(NULL); }

static cl_err cl_lease_b64(const uint8_t *p, size_t n, json_t *o, const char *name)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    cl_buf_init(&b, cl_b64_encoded_len(n, CL_B64_STD) + 1, CL_BUF_NONE);
    CL_GUARD(cl_b64_encode(p, n, CL_B64_STD, &b));
    CL_ENSURE(json_object_set_new(o, name, json_stringn((const char *)b.data, b.len)) == 0, CL_E_CORE_NOMEM);
out:
    cl_buf_free(&b);
    return rc;
}

static cl_err cl_lease_unb64(json_t *v, size_t max, struct cl_buf *out, const char *what)
{
    if (!json_is_string(v) || json_string_length(v) > (max / 3 + 2) * 4 ||
        cl_b64_decode(json_string_value(v), json_string_length(v), CL_B64_STD, out) != CL_OK)
        return cl_err_fail(CL_E_PROTO_LICENCE_GRANT, "renewal answer: %s is not base64 of at most %zu bytes", what,
                           max);
    return CL_OK;
}

/* One renewal: attested request with nonce and usage report; the answer's
 * grant must be signed by the bound licence key and name our nonce, the set
 * that came with it and our report. Then the table takes the set. */
static cl_err cl_lease_renew(struct cl_lease *L)
{
    cl_err rc = CL_OK;
    struct cl_enclave_boot *bt = L->bt;
    const struct cl_seal_header *h = bt->model_hdr;
    uint8_t nonce[CL_LICENCE_NONCE_LEN], rep_sha[32], set_sha[32];
    struct cl_buf doc, rep, der, gb;
    struct cl_licence_usage *u = calloc(1, sizeof(*u));
    json_t *req = json_object(), *ctx = json_object(), *recip = json_object(), *resp = NULL;
    char *body = NULL, hex[2 * CL_LICENCE_NONCE_LEN + 1];
    uint8_t **recs = NULL;
    size_t *lens = NULL, nrec = 0;
    struct cl_licence_grant g;
    cl_buf_init(&doc, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    cl_buf_init(&rep, CL_LICENCE_USAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&der, 1024, CL_BUF_NONE);
    cl_buf_init(&gb, CL_LICENCE_GRANT_MAX, CL_BUF_NONE);
    uint64_t t0 = cl_now_us();
    CL_ENSURE(u && req && ctx && recip, CL_E_CORE_NOMEM);
    CL_GUARD(cl_random_bytes(nonce, sizeof(nonce)));
    pthread_mutex_lock(&cl_enclave_nsm_mu);
    rc = cl_nsm_attestation(L->nsm, L->ud, L->ud_len, nonce, sizeof(nonce), L->rsa_spki.data, L->rsa_spki.len, &doc);
    pthread_mutex_unlock(&cl_enclave_nsm_mu);
    CL_GUARD(rc);
    /* usage since boot, chained to the previous report */
    if (L->table)
        cl_licence_table_meter(L->table, u);
    u->seq = L->seq + 1;
    memcpy(u->prev_sha256, L->prev_sha256, 32);
    u->time = cl_lease_now_s();
    memcpy(u->model_sha256, bt->model_sha256, 32);
    CL_GUARD(cl_licence_usage_sign(u, L->audit, &rep));
    CL_GUARD(cl_sha256(rep.data, rep.len, rep_sha));
    L->seq = u->seq; /* used even if this renewal fails: a lost report is a gap the key service names */
    memcpy(L->prev_sha256, rep_sha, 32);

    for (size_t i = 0; i < h->n_ctx; i++)
        json_object_set_new(ctx, h->ctx[i].key, json_string(h->ctx[i].value));
    json_object_set_new(req, "KeyId", json_string(h->key_id));
    CL_GUARD(cl_lease_b64(h->wrapped, h->wrapped_len, req, "CiphertextBlob"));
    json_object_set_new(req, "EncryptionContext", ctx);
    ctx = NULL;
    json_object_set_new(recip, "KeyEncryptionAlgorithm", json_string("RSAES_OAEP_SHA_256"));
    CL_GUARD(cl_lease_b64(doc.data, doc.len, recip, "AttestationDocument"));
    json_object_set_new(req, "Recipient", recip);
    recip = NULL;
    cl_hex_encode(nonce, sizeof(nonce), hex);
    json_object_set_new(req, "Nonce", json_string(hex));
    CL_GUARD(cl_lease_b64(rep.data, rep.len, req, "UsageReport"));
    body = json_dumps(req, JSON_COMPACT);
    CL_ENSURE(body, CL_E_CORE_NOMEM);
    /* Half of what is left of the lease (half a lease at most; 10 s for the
     * first, before anything is served): a call the host holds ends with
     * time for a retry before the lease does. */
    uint64_t tmo_ms = L->lease_s ? L->lease_s * 1000 / 2 : 10000;
    if (L->table) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t end_ms = cl_licence_table_lease_end(L->table) * 1000,
                 now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        uint64_t half = end_ms > now_ms ? (end_ms - now_ms) / 2 : 0;
        if (half < tmo_ms)
            tmo_ms = half;
    }
    struct cl_kmsc_endpoint ep = {.url = bt->cfg.kms_endpoint, .region = bt->cfg.kms_region, .unix_socket = L->bridge,
                                  .ca_pem = bt->cfg.kms_ca_pem[0] ? bt->cfg.kms_ca_pem : NULL,
                                  .timeout_ms = (uint32_t)(tmo_ms < 200 ? 200 : tmo_ms)};
    CL_GUARD(cl_kmsc_call(&ep, &bt->cred, "CloisterRenewLicence", body, &resp));

    /* the licence key: bound on first use, the same one ever after */
    CL_GUARD(cl_lease_unb64(json_object_get(resp, "LicenceKey"), 1024, &der, "LicenceKey"));
    if (!L->lkey) {
        CL_GUARD(cl_licence_key_bind(der.data, der.len, bt->licence_key_sha256, &L->lkey));
        CL_GUARD(cl_sha256(der.data, der.len, L->lkey_sha256));
        CL_GUARD(cl_licence_table_new(L->lkey, bt->model_sha256, &L->table));
    } else {
        uint8_t d[32];
        CL_GUARD(cl_sha256(der.data, der.len, d));
        CL_ENSURE_D(cl_ct_equal(d, L->lkey_sha256, 32), CL_E_PROTO_LICENCE_KEY_MISMATCH,
                    "the renewal answer carries another licence key than %s pins", CL_LICENCE_CTX_KEY);
    }
    json_t *arr = json_object_get(resp, "Licences");
    CL_ENSURE_D(json_is_array(arr) && json_array_size(arr) <= CL_LICENCE_TABLE_MAX, CL_E_PROTO_LICENCE_MALFORMED,
                "renewal answer: Licences");
    nrec = json_array_size(arr);
    recs = calloc(nrec ? nrec : 1, sizeof(*recs));
    lens = calloc(nrec ? nrec : 1, sizeof(*lens));
    CL_ENSURE(recs && lens, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < nrec; i++) {
        struct cl_buf r;
        cl_buf_init(&r, CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
        rc = cl_lease_unb64(json_array_get(arr, i), CL_LICENCE_RECORD_MAX, &r, "a licence record");
        recs[i] = r.data; /* owned now */
        lens[i] = r.len;
        CL_GUARD(rc);
    }
    CL_GUARD(cl_lease_unb64(json_object_get(resp, "Grant"), CL_LICENCE_GRANT_MAX, &gb, "Grant"));
    CL_GUARD(cl_licence_grant_verify(gb.data, gb.len, L->lkey, &g));
    CL_ENSURE_D(cl_ct_equal(g.nonce, nonce, sizeof(nonce)), CL_E_PROTO_LICENCE_GRANT,
                "the grant names another nonce: a replayed answer");
    CL_GUARD(cl_licence_set_digest((const uint8_t *const *)recs, lens, nrec, set_sha));
    CL_ENSURE_D(cl_ct_equal(g.set_sha256, set_sha, 32), CL_E_PROTO_LICENCE_GRANT,
                "the licence set differs from the one the grant names");
    CL_ENSURE_D(g.has_report && cl_ct_equal(g.report_sha256, rep_sha, 32), CL_E_PROTO_LICENCE_GRANT,
                "the grant does not name the usage report sent: it did not reach the key service");
    const char *ev = json_string_value(json_object_get(resp, "UsageReportEvent"));
    pthread_mutex_lock(&L->mu);
    /* once ended, nothing opens a lease again (the model is gone) */
    rc = L->ended ? cl_err_fail(CL_E_PROTO_LICENCE_LEASE_ENDED, "the lease already ended")
                  : cl_licence_table_update(L->table, (const uint8_t *const *)recs, lens, nrec, cl_lease_now_s(),
                                            g.lease_s);
    if (rc != CL_OK) {
        pthread_mutex_unlock(&L->mu);
        goto out;
    }
    L->renewals++;
    L->lease_s = g.lease_s;
    L->last_renew_us = cl_now_us() - t0;
    snprintf(L->last_event, sizeof(L->last_event), "%s", ev ? ev : "");
    pthread_mutex_unlock(&L->mu);
    CL_LOG(CL_LOG_INFO, "licence_renewed", CL_LOG_COUNT("licences", nrec), CL_LOG_COUNT("lease_s", g.lease_s),
           CL_LOG_COUNT("report_seq", u->seq), CL_LOG_US("duration_us", cl_now_us() - t0));
out:
    if (recs)
        for (size_t i = 0; i < nrec; i++)
            free(recs[i]);
    free(recs);
    free(lens);
    free(u);
    free(body);
    json_decref(req);
    json_decref(ctx);
    json_decref(recip);
    json_decref(resp);
    cl_buf_free(&doc);
    cl_buf_free(&rep);
    cl_buf_free(&der);
    cl_buf_free(&gb);
    return rc;
}

/* The lease ended without renewal: no generation runs after this, the
 * decrypted model and projector and the key-service credentials are wiped. */
static void cl_lease_end(struct cl_lease *L, cl_err why)
{
    struct cl_enclave_boot *bt = L->bt;
    char reason[300];
    pthread_mutex_lock(&L->mu);
    L->ended = true; /* first: no renewal reopens the lease from here on */
    snprintf(reason, sizeof(reason), "%s", L->last_error[0] ? L->last_error : "no renewal answer before the lease's end");
    pthread_mutex_unlock(&L->mu);
    pthread_rwlock_wrlock(&L->gen_lock);
    if (bt->model)
        cl_wipe(bt->model, bt->model_len);
    if (bt->mmproj)
        cl_wipe(bt->mmproj, bt->mmproj_len);
    cl_kmsc_credentials_wipe(&bt->cred);
    /* the OHTTP private keys, the job Recipient key, this lease's own key */
    for (size_t i = 0; i < L->nhooks; i++)
        L->hooks[i].fn(L->hooks[i].arg);
    pthread_mutex_lock(&L->mu);
    cl_pkey_free(L->rsa); /* only its public half was ever sent; renewals are over */
    L->rsa = NULL;
    L->end_reason = why;
    L->wiped = true;
    pthread_mutex_unlock(&L->mu);
    pthread_rwlock_unlock(&L->gen_lock);
    CL_LOG(CL_LOG_ERROR, "licence_lease_ended",
           CL_LOG_LIT("action", "stopped serving; model, OHTTP keys, job and key-service keys wiped"),
           CL_LOG_SIZE("model_bytes_wiped", bt->model_len), CL_LOG_SIZE("mmproj_bytes_wiped", bt->mmproj_len),
           CL_LOG_COUNT("renewals", L->renewals), CL_LOG_COUNT("failed_attempts", L->failures), CL_LOG_ERR(why));
    /* stderr reaches the operator: the reason is the key service's answer or a transport failure */
    fprintf(stderr, "cloister-enclave: licence lease ended without renewal: serving stopped, model and keys wiped: %s\n",
            reason);
}

static void cl_lease_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Renews after a third of each lease, retrying every 250 ms; a call
 * the host holds up only delays this thread, never the watchdog. */
static void *cl_lease_renewer(void *arg)
{
    struct cl_lease *L = arg;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t end_ms = cl_licence_table_lease_end(L->table) * 1000,
                 now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        pthread_mutex_lock(&L->mu);
        bool ended = L->ended, failing = L->failures > L->fail_seen;
        L->fail_seen = L->failures;
        pthread_mutex_unlock(&L->mu);
        if (ended)
            return NULL;
        /* a third of what is left of the lease (its end is in whole
         * seconds): two thirds stay for the call and its retries */
        uint64_t wait = end_ms > now_ms ? (end_ms - now_ms) / 3 : 0;
        cl_lease_sleep_ms(failing ? 250 : wait > 100 ? wait : 100);
        cl_err rc = cl_lease_renew(L);
        if (rc != CL_OK) {
            char b[300];
            cl_err_format(rc, b, sizeof(b));
            pthread_mutex_lock(&L->mu);
            L->failures++;
            L->last_code = rc;
            snprintf(L->last_error, sizeof(L->last_error), "%s", b);
            pthread_mutex_unlock(&L->mu);
            CL_LOG(CL_LOG_WARN, "licence_renewal_failed", CL_LOG_ERR(rc));
        }
    }
}

/* Ends the lease on time whatever the renewals do. */
static void *cl_lease_watchdog(void *arg)
{
    struct cl_lease *L = arg;
    for (;;) {
        if (cl_lease_now_s() >= cl_licence_table_lease_end(L->table)) {
            pthread_mutex_lock(&L->mu);
            cl_err why = L->last_code ? L->last_code : CL_E_PROTO_LICENCE_LEASE_ENDED;
            pthread_mutex_unlock(&L->mu);
            cl_lease_end(L, why);
            return NULL;
        }
        cl_lease_sleep_ms(100);
    }
}

cl_err cl_lease_start(struct cl_enclave_boot *bt, cl_nsm *nsm, const cl_pkey *audit, const uint8_t *ud,
                      size_t ud_len, struct cl_lease **out)
{
    cl_err rc = CL_OK;
    struct cl_lease *L = calloc(1, sizeof(*L));
    CL_ENSURE(L, CL_E_CORE_NOMEM);
    CL_ENSURE_D(bt->licensed && bt->model_hdr, CL_E_CORE_INVALID_ARG, "the model is not licensed");
    L->bt = bt;
    L->nsm = nsm;
    L->audit = audit;
    L->ud = ud;
    L->ud_len = ud_len;
    cl_buf_init(&L->rsa_spki, 4096, CL_BUF_NONE);
    CL_ENSURE(pthread_rwlock_init(&L->gen_lock, NULL) == 0 && pthread_mutex_init(&L->mu, NULL) == 0, CL_E_CORE_NOMEM);
    CL_GUARD(cl_pkey_generate(CL_PKEY_RSA, &L->rsa));
    CL_GUARD(cl_pkey_public_der(L->rsa, &L->rsa_spki));
    CL_GUARD(cl_kms_bridge_start(L->bridge, sizeof(L->bridge)));
    /* the first set, before anything is served: a refusal stops the boot */
    CL_GUARD(cl_lease_renew(L));
    pthread_t th;
    CL_ENSURE_D(pthread_create(&th, NULL, cl_lease_watchdog, L) == 0, CL_E_CORE_THREAD, "licence watchdog thread");
    pthread_detach(th);
    CL_ENSURE_D(pthread_create(&th, NULL, cl_lease_renewer, L) == 0, CL_E_CORE_THREAD, "licence renewal thread");
    pthread_detach(th);
    *out = L;
    L = NULL;
out:
    if (L) {
        cl_pkey_free(L->rsa);
        cl_pkey_free(L->lkey);
        cl_licence_table_free(L->table);
        cl_buf_free(&L->rsa_spki);
        free(L);
    }
    return rc;
}

cl_licence_table *cl_lease_table(struct cl_lease *L) { return L->table; }

cl_err cl_lease_on_end(struct cl_lease *L, void (*fn)(void *), void *arg)
{
    cl_err rc = CL_OK;
    pthread_mutex_lock(&L->mu);
    if (L->nhooks < CL_LEASE_HOOKS) {
        L->hooks[L->nhooks].fn = fn;
        L->hooks[L->nhooks].arg = arg;
        L->nhooks++;
    } else {
        rc = cl_err_fail(CL_E_CORE_INVALID_ARG, "more than %d lease-end hooks", CL_LEASE_HOOKS);
    }
    pthread_mutex_unlock(&L->mu);
    return rc;
}

struct cl_lease_piece {
    struct cl_lease *L;
    cl_chat_piece_fn piece;
    void *ctx;
    bool cut; /* stopped at the lease's end */
};

/* A stream stops at the lease's end: a revoked licence or a disabled key
 * ends sessions in flight too. */
static bool cl_lease_piece_fn(void *ctx, const char *text, size_t len)
{
    struct cl_lease_piece *p = ctx;
    if (cl_lease_now_s() >= cl_licence_table_lease_end(p->L->table)) {
        p->cut = true;
        return false;
    }
    return p->piece(p->ctx, text, len);
}

static cl_err cl_lease_generate(void *self, const struct cl_chat_params *prm, cl_chat_piece_fn piece, void *piece_ctx,
                                struct cl_chat_result *res)
{
    struct cl_lease *L = self;
    cl_err rc;
    pthread_rwlock_rdlock(&L->gen_lock);
    pthread_mutex_lock(&L->mu);
    bool ended = L->ended;
    pthread_mutex_unlock(&L->mu);
    if (ended || cl_lease_now_s() >= cl_licence_table_lease_end(L->table)) {
        pthread_rwlock_unlock(&L->gen_lock);
        return cl_err_fail(CL_E_PROTO_LICENCE_LEASE_ENDED, "the licence lease ended: the model is no longer served");
    }
    struct cl_lease_piece p = {L, piece, piece_ctx, false};
    rc = L->inner.generate(L->inner.self, prm, piece ? cl_lease_piece_fn : NULL, piece ? &p : NULL, res);
    if (p.cut) /* whatever the engine made of the stop: the lease's end is the reason */
        rc = cl_err_fail(CL_E_PROTO_LICENCE_LEASE_ENDED, "the licence lease ended mid-answer: the rest is not served");
    pthread_rwlock_unlock(&L->gen_lock);
    return rc;
}

void cl_lease_generator(struct cl_lease *L, const struct cl_generator *inner, struct cl_generator *out)
{
    L->inner = *inner;
    *out = (struct cl_generator){cl_lease_generate, L, inner->model_name};
}

bool cl_lease_status(struct cl_lease *L, json_t *st)
{
    char b[300] = "";
    pthread_mutex_lock(&L->mu);
    bool ended = L->ended || cl_lease_now_s() >= cl_licence_table_lease_end(L->table), wiped = L->wiped;
    if (ended)
        snprintf(b, sizeof(b), "%s", L->last_error[0] ? L->last_error : "no renewal answer before the lease's end");
    json_t *o = json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:s}", "licensed", 1, "lease_end",
                          (json_int_t)cl_licence_table_lease_end(L->table), "renewals", (json_int_t)L->renewals,
                          "failed_attempts", (json_int_t)L->failures, "last_renewal_us",
                          (json_int_t)L->last_renew_us, "usage_reports", (json_int_t)L->seq, "last_report_event",
                          L->last_event);
    pthread_mutex_unlock(&L->mu);
    if (o && ended) {
        json_object_set_new(o, "ended", json_true());
        json_object_set_new(o, "wiped", json_boolean(wiped));
        json_object_set_new(o, "reason", json_string(b));
    }
    if (o)
        json_object_set_new(st, "licence", o);
    return ended;
}
