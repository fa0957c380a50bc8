/* cloister-kms: the key service's storage, ciphertext format and HTTP
 * server (lib cl_kms). What it shares with clients (SigV4, the Recipient
 * envelope) is in cloister/sigv4.h and cloister/aws.h (lib cl_aws); the
 * client is cloister/kms_client.h (lib cl_kmsc).
 *
 * Storage: one directory holding kms.db (SQLite, WAL, synchronous=FULL) and
 * root.key (32 random bytes, mode 0600). Key material and user secrets are
 * stored AES-256-GCM-wrapped under the root key. */
#ifndef CLOISTER_KMS_H
#define CLOISTER_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/policy.h"

#define CL_KMS_KEY_ID_LEN 36 /* UUID text */
#define CL_KMS_ARN_MAX 192
#define CL_KMS_MAX_PLAINTEXT 4096      /* Encrypt Plaintext limit */
#define CL_KMS_MAX_CIPHERTEXT 6144     /* CiphertextBlob limit */
#define CL_KMS_MAX_DESCRIPTION 8192
#define CL_KMS_MAX_ENC_CTX_BYTES 8192  /* sum of key and value lengths we accept */
#define CL_KMS_MAX_ENC_CTX_PAIRS 64
#define CL_KMS_BLOB_VERSION 1
#define CL_KMS_BLOB_MAGIC "CLK"
#define CL_KMS_BLOB_OVERHEAD (3 + 1 + CL_KMS_KEY_ID_LEN + 4 + 12 + 16)
#define CL_KMS_DATA_KEY_MAX 1024       /* GenerateDataKey NumberOfBytes */

enum cl_kms_key_state {
    CL_KMS_STATE_NONE = 0,
    CL_KMS_STATE_ENABLED,
    CL_KMS_STATE_DISABLED,
    CL_KMS_STATE_PENDING_DELETION,
    CL_KMS_STATE_COUNT
};
const char *cl_kms_state_name(enum cl_kms_key_state s); /* "Enabled", ... */

struct cl_kms_key_meta {
    char key_id[CL_KMS_KEY_ID_LEN + 1];
    char arn[CL_KMS_ARN_MAX];
    char description[CL_KMS_MAX_DESCRIPTION + 1];
    int64_t created;       /* unix seconds */
    int64_t deletion_date; /* 0 unless pending deletion */
    enum cl_kms_key_state state;
    uint32_t current_version;
};

struct cl_kms_store;

/* Creates DIR (if needed), root.key and kms.db; fails if kms.db exists. */
CL_MUST_CHECK cl_err cl_kms_store_init(const char *dir, const char *region, const char *account);
/* Opens an initialised directory. Refuses a root.key readable by others. */
CL_MUST_CHECK cl_err cl_kms_store_open(const char *dir, struct cl_kms_store **out);
void cl_kms_store_close(struct cl_kms_store *s);
const char *cl_kms_store_region(const struct cl_kms_store *s);
const char *cl_kms_store_account(const struct cl_kms_store *s);

/* ---- keys ---- */
/* policy NULL: the AWS default key policy (kms:* for the account root,
 * which in cloister-kms names only that account's root identity; the HTTP
 * CreateKey gives the creating principal kms:* instead). */
CL_MUST_CHECK cl_err cl_kms_key_create(struct cl_kms_store *s, const char *description, const char *policy,
                                       struct cl_kms_key_meta *out);
/* id: key id, key ARN, "alias/name" or alias ARN. */
CL_MUST_CHECK cl_err cl_kms_key_get(struct cl_kms_store *s, const char *id, struct cl_kms_key_meta *out);
CL_MUST_CHECK cl_err cl_kms_key_set_state(struct cl_kms_store *s, const char *key_id, enum cl_kms_key_state st,
                                          int64_t deletion_date);
/* Deletes keys (material, versions, aliases) whose deletion date has
 * passed; *purged receives how many. */
CL_MUST_CHECK cl_err cl_kms_key_purge_expired(struct cl_kms_store *s, int64_t now, size_t *purged);
/* New key material version; earlier versions stay available for Decrypt. */
CL_MUST_CHECK cl_err cl_kms_key_rotate(struct cl_kms_store *s, const char *key_id, uint32_t *new_version);
/* Lists key ids in creation order after `marker` (NULL from the start). */
typedef void (*cl_kms_key_cb)(void *arg, const struct cl_kms_key_meta *m);
CL_MUST_CHECK cl_err cl_kms_key_list(struct cl_kms_store *s, const char *marker, size_t limit, cl_kms_key_cb cb,
                                     void *arg, bool *truncated);
CL_MUST_CHECK cl_err cl_kms_policy_get(struct cl_kms_store *s, const char *key_id, struct cl_buf *out);
/* Validates with cl_policy_parse before storing. */
CL_MUST_CHECK cl_err cl_kms_policy_put(struct cl_kms_store *s, const char *key_id, const char *policy);

/* ---- aliases ("alias/name") ---- */
CL_MUST_CHECK cl_err cl_kms_alias_create(struct cl_kms_store *s, const char *alias, const char *key_id);
CL_MUST_CHECK cl_err cl_kms_alias_delete(struct cl_kms_store *s, const char *alias);
typedef void (*cl_kms_alias_cb)(void *arg, const char *alias, const char *key_id, int64_t created);
CL_MUST_CHECK cl_err cl_kms_alias_list(struct cl_kms_store *s, const char *key_id, cl_kms_alias_cb cb, void *arg);

/* ---- ciphertext ---- */
/* blob = "CLK" | version | key id | key version u32be | IV | tag | ciphertext;
 * AAD = the header before the IV || canonical encryption context. */
CL_MUST_CHECK cl_err cl_kms_encrypt(struct cl_kms_store *s, const char *key_id, const uint8_t *pt, size_t n,
                                    const struct cl_aws_kv *ctx, size_t n_ctx, struct cl_buf *blob);
/* Reads the key id from the blob (out_key_id), decrypts into pt (secure). */
CL_MUST_CHECK cl_err cl_kms_blob_key_id(const uint8_t *blob, size_t n, char out_key_id[CL_KMS_KEY_ID_LEN + 1]);
CL_MUST_CHECK cl_err cl_kms_decrypt(struct cl_kms_store *s, const uint8_t *blob, size_t n,
                                    const struct cl_aws_kv *ctx, size_t n_ctx, struct cl_buf *pt);
/* Canonical encryption-context encoding (sorted by key, length-prefixed). */
CL_MUST_CHECK cl_err cl_kms_enc_ctx_encode(const struct cl_aws_kv *ctx, size_t n_ctx, struct cl_buf *out);

/* ---- users (SigV4 credentials) ---- */
#define CL_KMS_ACCESS_KEY_LEN 20
#define CL_KMS_SECRET_LEN 40
CL_MUST_CHECK cl_err cl_kms_user_add(struct cl_kms_store *s, const char *name,
                                     char access_key[CL_KMS_ACCESS_KEY_LEN + 1],
                                     char secret[CL_KMS_SECRET_LEN + 1]);
/* The same for a principal of another account (account NULL: the store's):
 * arn:aws:iam::ACCOUNT:user/NAME. Names are unique within a key service. */
CL_MUST_CHECK cl_err cl_kms_user_add_in(struct cl_kms_store *s, const char *account, const char *name,
                                        char access_key[CL_KMS_ACCESS_KEY_LEN + 1],
                                        char secret[CL_KMS_SECRET_LEN + 1]);
/* secret receives the decrypted secret (wipe after use). */
CL_MUST_CHECK cl_err cl_kms_user_lookup(struct cl_kms_store *s, const char *access_key,
                                        char secret[CL_KMS_SECRET_LEN + 1], char arn[CL_KMS_ARN_MAX]);

/* ---- audit ---- */
struct cl_kms_audit_row {
    int64_t time_ms;
    char request_id[40];
    char principal[CL_KMS_ARN_MAX];
    char operation[48];
    char key_id[CL_KMS_KEY_ID_LEN + 1];
    char decision[16];  /* "allow", "deny", "error" */
    char statement[72]; /* deciding policy statement */
    char error[64];     /* exception name when not allowed */
    char module_id[96]; /* attestation module id, "" without Recipient */
    char pcrs[3 * 97];  /* PCR0,PCR1,PCR2 hex, comma-separated */
};
CL_MUST_CHECK cl_err cl_kms_audit_append(struct cl_kms_store *s, const struct cl_kms_audit_row *r);
typedef void (*cl_kms_audit_cb)(void *arg, int64_t seq, const struct cl_kms_audit_row *r);
CL_MUST_CHECK cl_err cl_kms_audit_list(struct cl_kms_store *s, cl_kms_audit_cb cb, void *arg);

/* PRAGMA integrity_check; CL_OK only for "ok". */
CL_MUST_CHECK cl_err cl_kms_store_check(struct cl_kms_store *s);

/* ---- Recipient attestation (narrow interface to the attestation verifier) ---- */
#define CL_KMS_MAX_RECIPIENT_PK 1024
#define CL_KMS_MAX_RECIPIENT_UD 1024
#define CL_KMS_MAX_RECIPIENT_NONCE 64
struct cl_kms_attestation {
    char module_id[257];
    struct cl_policy_recipient r;                /* PCRs, ImageSha384, debug flag */
    uint8_t public_key[CL_KMS_MAX_RECIPIENT_PK]; /* RSA SubjectPublicKeyInfo, DER or PEM */
    size_t public_key_len;
    unsigned roots_trusted; /* how many roots the verifier trusts (r.root_sha256 names the one used) */
    uint8_t user_data[CL_KMS_MAX_RECIPIENT_UD]; /* the document's user_data (licence renewals read the audit key) */
    size_t user_data_len;
    uint8_t nonce[CL_KMS_MAX_RECIPIENT_NONCE];
    size_t nonce_len;
};
/* Verifies an attestation document against the configured trusted roots
 * and fills out. Must fail (any error) for an untrusted root, a bad
 * signature or a stale document. Debug documents are returned with
 * r.debug set: the key policy decides (see CL_POLICY_DEBUG_KEY). Must set
 * r.root_sha256 / r.has_root (the verifying root) and roots_trusted. */
typedef cl_err (*cl_kms_attest_fn)(void *arg, const uint8_t *doc, size_t n, int64_t now_ms,
                                   struct cl_kms_attestation *out);

/* ---- request handling (transport-independent) ---- */
struct cl_kms_server_config {
    struct cl_kms_store *store;
    int64_t skew_s;             /* SigV4 clock skew, default 300 */
    cl_kms_attest_fn attest;    /* NULL: requests with a Recipient are refused */
    void *attest_arg;
    int64_t (*now_ms)(void);    /* clock override for tests; NULL = real time */
};

struct cl_kms_response {
    int status;
    struct cl_buf body;   /* JSON; may hold key bytes (base64): wiped by cl_kms_response_free */
    char request_id[40];
    char error_type[64];  /* "" on success */
};
void cl_kms_response_init(struct cl_kms_response *r);
void cl_kms_response_free(struct cl_kms_response *r);

struct cl_sigv4_request;
/* Full request: content type and target headers, SigV4, operation. Always
 * produces a response (errors in the AWS JSON shape) and an audit row. */
void cl_kms_handle_http(const struct cl_kms_server_config *cfg, const struct cl_sigv4_request *req,
                        struct cl_kms_response *resp);
/* An operation on behalf of an already-authenticated principal (tests, fuzzing). */
void cl_kms_handle_op(const struct cl_kms_server_config *cfg, const char *principal_arn, const char *op,
                      const uint8_t *body, size_t n, struct cl_kms_response *resp);

/* ---- HTTP server (libmicrohttpd) ---- */
struct cl_kms_server;
struct cl_kms_listen {
    const char *addr;     /* "127.0.0.1:8080" or "[::1]:8080"; port 0 = pick one */
    const char *tls_cert; /* PEM paths, both or neither */
    const char *tls_key;
};
CL_MUST_CHECK cl_err cl_kms_server_start(const struct cl_kms_server_config *cfg, const struct cl_kms_listen *l,
                                         struct cl_kms_server **out);
uint16_t cl_kms_server_port(const struct cl_kms_server *s);
void cl_kms_server_stop(struct cl_kms_server *s);

#define CL_KMS_MAX_REQUEST_BODY (256 * 1024)

#endif
