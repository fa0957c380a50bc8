/* Inside the cl_kms library: what store.c shares with the licence store. */
#ifndef CLOISTER_KMS_INTERNAL_H
#define CLOISTER_KMS_INTERNAL_H

#include "cloister/kms.h"
#include "cloister/licence.h"
#include "cloister/licence_lease.h"

struct sqlite3;
struct sqlite3 *cl_kms_store_sqlite(struct cl_kms_store *s);
CL_MUST_CHECK cl_err cl_kms_store_wrap(struct cl_kms_store *s, const char *label, const uint8_t *pt, size_t n,
                                       struct cl_buf *out);
CL_MUST_CHECK cl_err cl_kms_store_unwrap(struct cl_kms_store *s, const char *label, const uint8_t *w, size_t n,
                                         struct cl_buf *pt);
CL_MUST_CHECK cl_err cl_kms_store_begin(struct cl_kms_store *s);
CL_MUST_CHECK cl_err cl_kms_store_commit(struct cl_kms_store *s);
void cl_kms_store_rollback(struct cl_kms_store *s);

/* ---- licences (licence_store.c) ---- */
/* The key's licence-signing key (P-384), created on first use with lease
 * CL_LICENCE_LEASE_DEFAULT_S. priv may be NULL. */
CL_MUST_CHECK cl_err cl_kms_lickey_get(struct cl_kms_store *s, const char *key_id, cl_pkey **priv,
                                       struct cl_buf *pub_der, uint64_t *lease_s);
CL_MUST_CHECK cl_err cl_kms_lickey_set_lease(struct cl_kms_store *s, const char *key_id, uint64_t lease_s);
/* Signs l with the key's licence key and stores it: create refuses an
 * existing id (CL_E_KMS_EXISTS), update requires one (CL_E_KMS_NOT_FOUND). */
CL_MUST_CHECK cl_err cl_kms_licence_store(struct cl_kms_store *s, const char *key_id, const struct cl_licence *l,
                                          bool create, int64_t now);
CL_MUST_CHECK cl_err cl_kms_licence_get(struct cl_kms_store *s, const char *key_id, const char *id,
                                        struct cl_licence *l);
typedef void (*cl_kms_licence_cb)(void *arg, const struct cl_licence *l, const uint8_t *rec, size_t n);
CL_MUST_CHECK cl_err cl_kms_licence_list(struct cl_kms_store *s, const char *key_id, cl_kms_licence_cb cb,
                                         void *arg);
/* Checks a usage report against the chain of its audit key (chain = hex
 * SHA-256 of the audit key's DER) and stores it. *event names what was
 * noticed ("" in order, "gap"); a replayed, late (reordered) or conflicting
 * report is recorded as an event and refused (CL_E_KMS_USAGE_REPORT). */
CL_MUST_CHECK cl_err cl_kms_usage_accept(struct cl_kms_store *s, const char *key_id, const char *chain,
                                         const struct cl_licence_usage *u, const uint8_t *rep, size_t n,
                                         int64_t now, char event[64]);
/* Records a refused report (altered: its signature does not verify). */
CL_MUST_CHECK cl_err cl_kms_usage_event(struct cl_kms_store *s, const char *key_id, const char *chain,
                                        uint64_t report_seq, const char *kind, const char *detail, int64_t now);
typedef void (*cl_kms_usage_cb)(void *arg, const char *licence_id, uint64_t period_start, uint64_t requests,
                                uint64_t prompt_tokens, uint64_t completion_tokens, uint64_t enclaves);
typedef void (*cl_kms_usage_event_cb)(void *arg, int64_t time, const char *chain, uint64_t report_seq,
                                      const char *kind, const char *detail);
/* Use per licence and period, summed over enclaves (chains), then events. */
CL_MUST_CHECK cl_err cl_kms_usage_list(struct cl_kms_store *s, const char *key_id, cl_kms_usage_cb cb,
                                       cl_kms_usage_event_cb ecb, void *arg);

#endif
