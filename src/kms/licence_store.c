/* cloister-kms licence storage (docs/licensing.md): per model key one
 * licence-signing key (P-384, wrapped under the root key), signed licence
 * records (a consumer credential only as its SHA-256), and usage reports
 * with the chain state that tells a gap, a replay or a reordering. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "cloister/encode.h"
#include "cloister/secmem.h"
#include "kms_internal.h"

static cl_err cl_kl_fail(struct cl_kms_store *s, const char *what)
{
    return cl_err_fail(CL_E_KMS_STORE, "%s: sqlite %d", what, sqlite3_extended_errcode(cl_kms_store_sqlite(s)));
}

static cl_err cl_kl_prep(struct cl_kms_store *s, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(cl_kms_store_sqlite(s), sql, -1, st, NULL) != SQLITE_OK)
        return cl_kl_fail(s, "prepare");
    return CL_OK;
}

static void cl_kl_label(char *b, size_t n, const char *key_id)
{
    snprintf(b, n, "cloister-kms licence-key %s", key_id);
}

cl_err cl_kms_lickey_get(struct cl_kms_store *s, const char *key_id, cl_pkey **priv, struct cl_buf *pub_der,
                         uint64_t *lease_s)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    cl_pkey *k = NULL;
    char label[128];
    struct cl_buf pem, w, pub;
    cl_buf_init(&pem, 4096, CL_BUF_SECURE);
    cl_buf_init(&w, 4096, CL_BUF_NONE);
    cl_buf_init(&pub, 1024, CL_BUF_NONE);
    cl_kl_label(label, sizeof(label), key_id);
    CL_GUARD(cl_kl_prep(s, "SELECT priv_wrapped, pub_der, lease_s FROM licence_keys WHERE key_id=?", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        CL_GUARD(cl_kms_store_unwrap(s, label, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &pem));
        CL_GUARD(cl_pkey_parse(pem.data, pem.len, &k));
        CL_GUARD(cl_buf_append(&pub, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1)));
        *lease_s = (uint64_t)sqlite3_column_int64(st, 2);
    } else {
        CL_ENSURE_D(r == SQLITE_DONE, CL_E_KMS_STORE, "licence key lookup: sqlite %d", r);
        sqlite3_finalize(st);
        st = NULL;
        /* first use: make the key, in one transaction with its row */
        CL_GUARD(cl_pkey_generate(CL_PKEY_P384, &k));
        CL_GUARD(cl_pkey_private_pem(k, &pem));
        CL_GUARD(cl_kms_store_wrap(s, label, pem.data, pem.len, &w));
        CL_GUARD(cl_pkey_public_der(k, &pub));
        CL_GUARD(cl_kl_prep(s, "INSERT INTO licence_keys(key_id,priv_wrapped,pub_der,lease_s,created) "
                               "VALUES(?,?,?,?,strftime('%s','now'))",
                            &st));
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, w.data, (int)w.len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, pub.data, (int)pub.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, CL_LICENCE_LEASE_DEFAULT_S);
        CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "licence key insert");
        *lease_s = CL_LICENCE_LEASE_DEFAULT_S;
    }
    if (pub_der)
        CL_GUARD(cl_buf_append(pub_der, pub.data, pub.len));
    if (priv) {
        *priv = k;
        k = NULL;
    }
out:
    sqlite3_finalize(st);
    cl_pkey_free(k);
    cl_buf_free(&pem);
    cl_buf_free(&w);
    cl_buf_free(&pub);
    return rc;
}

cl_err cl_kms_lickey_set_lease(struct cl_kms_store *s, const char *key_id, uint64_t lease_s)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    uint64_t cur;
    CL_ENSURE_D(lease_s >= 1 && lease_s <= CL_LICENCE_LEASE_MAX_S, CL_E_KMS_VALIDATION, "LeaseSeconds must be 1..%d",
                CL_LICENCE_LEASE_MAX_S);
    CL_GUARD(cl_kms_lickey_get(s, key_id, NULL, NULL, &cur));
    CL_GUARD(cl_kl_prep(s, "UPDATE licence_keys SET lease_s=? WHERE key_id=?", &st));
    sqlite3_bind_int64(st, 1, (sqlite3_int64)lease_s);
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "lease update");
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_licence_store(struct cl_kms_store *s, const char *key_id, const struct cl_licence *l, bool create,
                            int64_t now)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    cl_pkey *k = NULL;
    uint64_t lease;
    struct cl_licence cur;
    struct cl_buf rec;
    cl_buf_init(&rec, CL_LICENCE_RECORD_MAX, CL_BUF_NONE);
    rc = cl_kms_licence_get(s, key_id, l->id, &cur);
    if (rc != CL_OK && rc != CL_E_KMS_NOT_FOUND)
        goto out;
    if (create) {
        CL_ENSURE_D(rc == CL_E_KMS_NOT_FOUND, rc == CL_OK ? CL_E_KMS_EXISTS : rc, "licence %s already exists", l->id);
    } else {
        CL_GUARD(rc);
        CL_ENSURE_D(l->serial > cur.serial, CL_E_KMS_VALIDATION, "licence %s: serial must rise", l->id);
    }
    rc = CL_OK;
    CL_GUARD(cl_kms_lickey_get(s, key_id, &k, NULL, &lease));
    CL_GUARD(cl_licence_sign(l, k, &rec));
    CL_GUARD(cl_kl_prep(s, create ? "INSERT INTO licences(key_id,id,serial,consumer,record,created,updated) "
                                    "VALUES(?1,?2,?3,?4,?5,?6,?6)"
                                  : "UPDATE licences SET serial=?3, consumer=?4, record=?5, updated=?6 "
                                    "WHERE key_id=?1 AND id=?2",
                        &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, l->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)l->serial);
    sqlite3_bind_text(st, 4, l->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, rec.data, (int)rec.len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "licence write");
out:
    sqlite3_finalize(st);
    cl_pkey_free(k);
    cl_buf_free(&rec);
    return rc;
}

cl_err cl_kms_licence_get(struct cl_kms_store *s, const char *key_id, const char *id, struct cl_licence *l)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kl_prep(s, "SELECT record FROM licences WHERE key_id=? AND id=?", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        CL_FAIL(CL_E_KMS_NOT_FOUND, "licence %s is not found", cl_licence_id_valid(id) ? id : "(invalid id)");
    CL_ENSURE_D(r == SQLITE_ROW, CL_E_KMS_STORE, "licence lookup: sqlite %d", r);
    CL_GUARD(cl_licence_parse(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), l));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_licence_list(struct cl_kms_store *s, const char *key_id, cl_kms_licence_cb cb, void *arg)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    int r;
    CL_GUARD(cl_kl_prep(s, "SELECT record FROM licences WHERE key_id=? ORDER BY created, id", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        struct cl_licence l;
        const uint8_t *p = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        CL_GUARD(cl_licence_parse(p, n, &l));
        cb(arg, &l, p, n);
    }
    CL_ENSURE_D(r == SQLITE_DONE, CL_E_KMS_STORE, "licence list: sqlite %d", r);
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_usage_event(struct cl_kms_store *s, const char *key_id, const char *chain, uint64_t report_seq,
                          const char *kind, const char *detail, int64_t now)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kl_prep(s, "INSERT INTO usage_events(key_id,chain,report_seq,kind,detail,time) VALUES(?,?,?,?,?,?)",
                        &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)report_seq);
    sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "usage event insert");
out:
    sqlite3_finalize(st);
    return rc;
}

/* The stored report of (chain, seq): 1 with its hash, 0 when none. */
static cl_err cl_kl_report_at(struct cl_kms_store *s, const char *key_id, const char *chain, uint64_t seq,
                              char sha[65], int *found)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kl_prep(s, "SELECT sha256 FROM usage_reports WHERE key_id=? AND chain=? AND seq=?", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)seq);
    *found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(sha, 65, "%s", (const char *)sqlite3_column_text(st, 0));
        *found = 1;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_usage_accept(struct cl_kms_store *s, const char *key_id, const char *chain,
                           const struct cl_licence_usage *u, const uint8_t *rep, size_t n, int64_t now,
                           char event[64])
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    bool tx = false;
    uint64_t last = 0;
    char last_sha[65] = "", sha[65], prev[65], detail[160];
    uint8_t h[CL_SHA256_LEN];
    event[0] = 0;
    CL_GUARD(cl_sha256(rep, n, h));
    cl_hex_encode(h, sizeof(h), sha);
    cl_hex_encode(u->prev_sha256, 32, prev);
    CL_GUARD(cl_kms_store_begin(s));
    tx = true;
    CL_GUARD(cl_kl_prep(s, "SELECT last_seq, last_sha256 FROM usage_chains WHERE key_id=? AND chain=?", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        last = (uint64_t)sqlite3_column_int64(st, 0);
        snprintf(last_sha, sizeof(last_sha), "%s", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    st = NULL;
    if (u->seq <= last) {
        char have[65];
        int found;
        CL_GUARD(cl_kl_report_at(s, key_id, chain, u->seq, have, &found));
        const char *kind = !found ? "reorder" : !strcmp(have, sha) ? "replay" : "altered";
        snprintf(detail, sizeof(detail), "report %llu arrived after report %llu%s", (unsigned long long)u->seq,
                 (unsigned long long)last,
                 !found ? " (late)" : !strcmp(have, sha) ? " (already received)" : " (differs from the one received)");
        CL_GUARD(cl_kms_usage_event(s, key_id, chain, u->seq, kind, detail, now));
        CL_GUARD(cl_kms_store_commit(s));
        tx = false;
        CL_FAIL(CL_E_KMS_USAGE_REPORT, "usage report %s: %s", kind, detail);
    }
    if (u->seq == last + 1 && last > 0 && strcmp(prev, last_sha)) {
        snprintf(detail, sizeof(detail), "report %llu does not chain to report %llu", (unsigned long long)u->seq,
                 (unsigned long long)last);
        CL_GUARD(cl_kms_usage_event(s, key_id, chain, u->seq, "altered", detail, now));
        CL_GUARD(cl_kms_store_commit(s));
        tx = false;
        CL_FAIL(CL_E_KMS_USAGE_REPORT, "usage report altered: %s", detail);
    }
    if (u->seq > last + 1) {
        snprintf(detail, sizeof(detail), "reports %llu..%llu missing", (unsigned long long)last + 1,
                 (unsigned long long)u->seq - 1);
        CL_GUARD(cl_kms_usage_event(s, key_id, chain, u->seq, "gap", detail, now));
        snprintf(event, 64, "gap");
    }
    CL_GUARD(cl_kl_prep(s, "INSERT INTO usage_reports(key_id,chain,seq,sha256,time,report) VALUES(?,?,?,?,?,?)", &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)u->seq);
    sqlite3_bind_text(st, 4, sha, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_blob(st, 6, rep, (int)n, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "usage report insert");
    sqlite3_finalize(st);
    st = NULL;
    CL_GUARD(cl_kl_prep(s, "INSERT INTO usage_chains(key_id,chain,last_seq,last_sha256) VALUES(?1,?2,?3,?4) "
                           "ON CONFLICT(key_id,chain) DO UPDATE SET last_seq=?3, last_sha256=?4",
                        &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)u->seq);
    sqlite3_bind_text(st, 4, sha, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "usage chain update");
    sqlite3_finalize(st);
    st = NULL;
    /* Counts are cumulative per enclave: the latest report holds them all. */
    CL_GUARD(cl_kl_prep(s, "INSERT INTO usage(key_id,chain,licence_id,period_start,requests,prompt_tokens,"
                           "completion_tokens) VALUES(?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(key_id,chain,licence_id,"
                           "period_start) DO UPDATE SET requests=max(requests,?5), prompt_tokens=max(prompt_tokens,?6),"
                           " completion_tokens=max(completion_tokens,?7)",
                        &st));
    for (size_t i = 0; i < u->n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, chain, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, u->rows[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)u->rows[i].period_start);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)u->rows[i].requests);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)u->rows[i].prompt_tokens);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)u->rows[i].completion_tokens);
        CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "usage row");
    }
    sqlite3_finalize(st);
    st = NULL;
    CL_GUARD(cl_kms_store_commit(s));
    tx = false;
out:
    sqlite3_finalize(st);
    if (tx)
        cl_kms_store_rollback(s);
    return rc;
}

cl_err cl_kms_usage_list(struct cl_kms_store *s, const char *key_id, cl_kms_usage_cb cb, cl_kms_usage_event_cb ecb,
                         void *arg)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    int r;
    CL_GUARD(cl_kl_prep(s, "SELECT licence_id, period_start, sum(requests), sum(prompt_tokens), "
                           "sum(completion_tokens), count(*) FROM usage WHERE key_id=? "
                           "GROUP BY licence_id, period_start ORDER BY licence_id, period_start",
                        &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        cb(arg, (const char *)sqlite3_column_text(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
           (uint64_t)sqlite3_column_int64(st, 2), (uint64_t)sqlite3_column_int64(st, 3),
           (uint64_t)sqlite3_column_int64(st, 4), (uint64_t)sqlite3_column_int64(st, 5));
    CL_ENSURE_D(r == SQLITE_DONE, CL_E_KMS_STORE, "usage list: sqlite %d", r);
    sqlite3_finalize(st);
    st = NULL;
    CL_GUARD(cl_kl_prep(s, "SELECT time, chain, report_seq, kind, detail FROM usage_events WHERE key_id=? ORDER BY seq",
                        &st));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        ecb(arg, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
            (uint64_t)sqlite3_column_int64(st, 2), (const char *)sqlite3_column_text(st, 3),
            (const char *)sqlite3_column_text(st, 4));
    CL_ENSURE_D(r == SQLITE_DONE, CL_E_KMS_STORE, "usage events: sqlite %d", r);
out:
    sqlite3_finalize(st);
    return rc;
}
