/* cloister-kms storage: SQLite (WAL, synchronous=FULL) + root key file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms.h"
#include "cloister/secmem.h"
#include "kms_internal.h"

#define CL_KMS_ROOT_KEY_LEN 32
#define CL_KMS_WRAP_OVERHEAD (CL_GCM_NONCE_LEN + CL_AEAD_TAG_LEN)

struct cl_kms_store {
    sqlite3 *db;
    cl_aead *root; /* AES-256-GCM under the root key */
    char region[64];
    char account[16];
};

static const char *const cl_kms_schema =
    "CREATE TABLE IF NOT EXISTS config(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS keys(seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT UNIQUE NOT NULL,"
    " description TEXT NOT NULL, created INTEGER NOT NULL, state INTEGER NOT NULL,"
    " deletion_date INTEGER NOT NULL DEFAULT 0, current_version INTEGER NOT NULL, policy TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS key_versions(key_id TEXT NOT NULL, version INTEGER NOT NULL,"
    " wrapped BLOB NOT NULL, created INTEGER NOT NULL, PRIMARY KEY(key_id, version));"
    "CREATE TABLE IF NOT EXISTS aliases(name TEXT PRIMARY KEY, key_id TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users(access_key TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, arn TEXT NOT NULL,"
    " secret_wrapped BLOB NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,"
    " request_id TEXT NOT NULL, principal TEXT NOT NULL, operation TEXT NOT NULL, key_id TEXT NOT NULL,"
    " decision TEXT NOT NULL, statement TEXT NOT NULL, error TEXT NOT NULL, module_id TEXT NOT NULL,"
    " pcrs TEXT NOT NULL);"
    /* licences (docs/licensing.md): the per-key licence-signing key, signed
     * records (the credential only as its SHA-256), usage reports */
    "CREATE TABLE IF NOT EXISTS licence_keys(key_id TEXT PRIMARY KEY, priv_wrapped BLOB NOT NULL,"
    " pub_der BLOB NOT NULL, lease_s INTEGER NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS licences(key_id TEXT NOT NULL, id TEXT NOT NULL, serial INTEGER NOT NULL,"
    " consumer TEXT NOT NULL, record BLOB NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL,"
    " PRIMARY KEY(key_id, id));"
    "CREATE TABLE IF NOT EXISTS usage_chains(key_id TEXT NOT NULL, chain TEXT NOT NULL, last_seq INTEGER NOT NULL,"
    " last_sha256 TEXT NOT NULL, PRIMARY KEY(key_id, chain));"
    "CREATE TABLE IF NOT EXISTS usage_reports(key_id TEXT NOT NULL, chain TEXT NOT NULL, seq INTEGER NOT NULL,"
    " sha256 TEXT NOT NULL, time INTEGER NOT NULL, report BLOB NOT NULL, PRIMARY KEY(key_id, chain, seq));"
    "CREATE TABLE IF NOT EXISTS usage(key_id TEXT NOT NULL, chain TEXT NOT NULL, licence_id TEXT NOT NULL,"
    " period_start INTEGER NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,"
    " completion_tokens INTEGER NOT NULL, PRIMARY KEY(key_id, chain, licence_id, period_start));"
    "CREATE TABLE IF NOT EXISTS usage_events(seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL,"
    " chain TEXT NOT NULL, report_seq INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,"
    " time INTEGER NOT NULL);";

const char *cl_kms_state_name(enum cl_kms_key_state s)
{
    switch (s) {
    case CL_KMS_STATE_ENABLED: return "Enabled";
    case CL_KMS_STATE_DISABLED: return "Disabled";
    case CL_KMS_STATE_PENDING_DELETION: return "PendingDeletion";
    default: return "Unavailable";
    }
}

static cl_err cl_kms_db_fail(sqlite3 *db, const char *what)
{
    return cl_err_fail(CL_E_KMS_STORE, "%s: sqlite %d", what, db ? sqlite3_extended_errcode(db) : -1);
}

static cl_err cl_kms_db_prep(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK)
        return cl_kms_db_fail(db, what);
    return CL_OK;
}

static cl_err cl_kms_exec(sqlite3 *db, const char *sql, const char *what)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return cl_kms_db_fail(db, what);
    return CL_OK;
}

static cl_err cl_kms_db_open(const char *dir, bool create, sqlite3 **out)
{
    cl_err rc = CL_OK;
    char path[4096];
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/kms.db", dir);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK)
        CL_FAIL(CL_E_KMS_STORE, "open kms.db: sqlite %d", db ? sqlite3_extended_errcode(db) : -1);
    sqlite3_busy_timeout(db, 10000);
    CL_GUARD(cl_kms_exec(db, "PRAGMA journal_mode=WAL;", "journal_mode"));
    CL_GUARD(cl_kms_exec(db, "PRAGMA synchronous=FULL;", "synchronous"));
    CL_GUARD(cl_kms_exec(db, "PRAGMA foreign_keys=ON;", "foreign_keys"));
    *out = db;
    db = NULL;
out:
    if (db)
        sqlite3_close(db);
    return rc;
}

static int64_t cl_kms_now(void) { return (int64_t)time(NULL); }

static cl_err cl_kms_config_get(sqlite3 *db, const char *k, char *v, size_t n)
{
    sqlite3_stmt *st = NULL;
    cl_err rc = CL_OK;
    CL_GUARD(cl_kms_db_prep(db, "SELECT v FROM config WHERE k=?", &st, "config prepare"));
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_STORE, "config %s missing", k);
    snprintf(v, n, "%s", (const char *)sqlite3_column_text(st, 0));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_store_init(const char *dir, const char *region, const char *account)
{
    cl_err rc = CL_OK;
    char path[4096];
    uint8_t key[CL_KMS_ROOT_KEY_LEN];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CL_ENSURE_D(dir && region && account, CL_E_CORE_INVALID_ARG, "init arguments");
    CL_ENSURE_D(strlen(region) > 0 && strlen(region) < 64, CL_E_KMS_VALIDATION, "region length");
    CL_ENSURE_D(strlen(account) == 12 && strspn(account, "0123456789") == 12, CL_E_KMS_VALIDATION,
                "account must be 12 digits");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cl_err_from_errno(errno, "mkdir key store directory");
    snprintf(path, sizeof(path), "%s/kms.db", dir);
    CL_ENSURE_D(access(path, F_OK) != 0, CL_E_CORE_EXISTS, "kms.db already exists in the directory");
    snprintf(path, sizeof(path), "%s/root.key", dir);
    CL_GUARD(cl_random_bytes(key, sizeof(key)));
    CL_GUARD(cl_file_write_atomic(path, key, sizeof(key), 0600, 1));
    /* Created here with 0600 whatever the umask: SQLite gives the WAL and
     * SHM files the database file's mode. */
    snprintf(path, sizeof(path), "%s/kms.db", dir);
    {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return cl_err_from_errno(errno, "create kms.db");
        if (fchmod(fd, 0600) != 0) {
            int e = errno;
            close(fd);
            return cl_err_from_errno(e, "chmod kms.db");
        }
        close(fd);
    }
    CL_GUARD(cl_kms_db_open(dir, true, &db));
    CL_GUARD(cl_kms_exec(db, cl_kms_schema, "schema"));
    CL_GUARD(cl_kms_db_prep(db,
                            "INSERT INTO config(k,v) VALUES('region',?1),('account',?2),('format','1')",
                            &st, "config insert prepare"));
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, account, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "config insert");
out:
    cl_wipe(key, sizeof(key));
    sqlite3_finalize(st);
    if (db)
        sqlite3_close(db);
    return rc;
}

cl_err cl_kms_store_open(const char *dir, struct cl_kms_store **out)
{
    cl_err rc = CL_OK;
    char path[4096];
    struct stat sb;
    struct cl_buf key;
    struct cl_kms_store *s = calloc(1, sizeof(*s));
    cl_buf_init(&key, CL_KMS_ROOT_KEY_LEN, CL_BUF_SECURE);
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    snprintf(path, sizeof(path), "%s/root.key", dir);
    CL_ENSURE_D(stat(path, &sb) == 0, CL_E_KMS_ROOT_KEY, "root.key missing (run cloister-kms init)");
    CL_ENSURE_D((sb.st_mode & 077) == 0, CL_E_CORE_INSECURE_FILE, "root.key mode %03o (want 0600)",
                (unsigned)(sb.st_mode & 0777));
    CL_GUARD(cl_file_read(path, CL_KMS_ROOT_KEY_LEN, &key));
    CL_ENSURE_D(key.len == CL_KMS_ROOT_KEY_LEN, CL_E_KMS_ROOT_KEY, "root.key is %zu bytes (want 32)", key.len);
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, key.data, key.len, &s->root));
    snprintf(path, sizeof(path), "%s/kms.db", dir);
    CL_ENSURE_D(access(path, F_OK) == 0, CL_E_KMS_STORE, "kms.db missing (run cloister-kms init)");
    /* The database holds wrapped keys, policies and the audit trail:
     * refuse one that others can read (or write) rather than serve it. */
    for (int i = 0; i < 3; i++) {
        static const char *const sfx[] = {"", "-wal", "-shm"};
        snprintf(path, sizeof(path), "%s/kms.db%s", dir, sfx[i]);
        if (stat(path, &sb) != 0)
            continue;
        CL_ENSURE_D((sb.st_mode & 077) == 0, CL_E_CORE_INSECURE_FILE,
                    "kms.db%s mode %03o: group/others may access it (want 0600: chmod 600 %s/kms.db*)", sfx[i],
                    (unsigned)(sb.st_mode & 0777), dir);
    }
    CL_GUARD(cl_kms_db_open(dir, false, &s->db));
    CL_GUARD(cl_kms_exec(s->db, cl_kms_schema, "schema"));
    CL_GUARD(cl_kms_config_get(s->db, "region", s->region, sizeof(s->region)));
    CL_GUARD(cl_kms_config_get(s->db, "account", s->account, sizeof(s->account)));
    *out = s;
    s = NULL;
out:
    cl_buf_free(&key);
    cl_kms_store_close(s);
    return rc;
}

void cl_kms_store_close(struct cl_kms_store *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close(s->db);
    cl_aead_free(s->root);
    free(s);
}

const char *cl_kms_store_region(const struct cl_kms_store *s) { return s->region; }
const char *cl_kms_store_account(const struct cl_kms_store *s) { return s->account; }

/* ---- wrapping under the root key ---- */

static cl_err cl_kms_wrap(struct cl_kms_store *s, const char *label, const uint8_t *pt, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    uint8_t *p;
    CL_GUARD(cl_buf_extend(out, n + CL_KMS_WRAP_OVERHEAD, &p));
    CL_GUARD(cl_random_bytes(p, CL_GCM_NONCE_LEN));
    CL_GUARD(cl_aead_seal(s->root, p, label, strlen(label), pt, n, p + CL_GCM_NONCE_LEN,
                          p + CL_GCM_NONCE_LEN + n));
out:
    return rc;
}

static cl_err cl_kms_unwrap(struct cl_kms_store *s, const char *label, const uint8_t *w, size_t n, uint8_t *pt,
                            size_t ptlen)
{
    if (n != ptlen + CL_KMS_WRAP_OVERHEAD)
        return cl_err_fail(CL_E_KMS_STORE, "wrapped %s has wrong length", "secret");
    cl_err rc = cl_aead_open(s->root, w, label, strlen(label), w + CL_GCM_NONCE_LEN, ptlen,
                             w + CL_GCM_NONCE_LEN + ptlen, pt);
    if (rc)
        return cl_err_fail(CL_E_KMS_ROOT_KEY, "wrapped secret does not open under root.key");
    return CL_OK;
}

static void cl_kms_version_label(char *buf, size_t n, const char *key_id, uint32_t v)
{
    snprintf(buf, n, "cloister-kms key-material %s v%u", key_id, v);
}

static cl_err cl_kms_add_version(struct cl_kms_store *s, const char *key_id, uint32_t v)
{
    cl_err rc = CL_OK;
    uint8_t *mat = NULL;
    char label[128];
    struct cl_buf w;
    sqlite3_stmt *st = NULL;
    cl_buf_init(&w, 32 + CL_KMS_WRAP_OVERHEAD, CL_BUF_NONE);
    CL_GUARD(cl_secmem_alloc(32, (void **)&mat));
    CL_GUARD(cl_random_bytes(mat, 32));
    cl_kms_version_label(label, sizeof(label), key_id, v);
    CL_GUARD(cl_kms_wrap(s, label, mat, 32, &w));
    CL_GUARD(cl_kms_db_prep(s->db,
                            "INSERT INTO key_versions(key_id,version,wrapped,created) VALUES(?,?,?,?)",
                            &st, "version insert prepare"));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    sqlite3_bind_blob(st, 3, w.data, (int)w.len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, cl_kms_now());
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "version insert: sqlite %d",
                sqlite3_extended_errcode(s->db));
out:
    sqlite3_finalize(st);
    cl_buf_free(&w);
    cl_secmem_free(mat);
    return rc;
}

/* Key material for (key_id, version) into mat[32] (caller's secure memory). */
static cl_err cl_kms_material(struct cl_kms_store *s, const char *key_id, uint32_t v, uint8_t *mat)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    char label[128];
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT wrapped FROM key_versions WHERE key_id=? AND version=?",
                            &st, "material prepare"));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_BAD_CIPHERTEXT, "key version %u not found", v);
    cl_kms_version_label(label, sizeof(label), key_id, v);
    CL_GUARD(cl_kms_unwrap(s, label, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), mat, 32));
out:
    sqlite3_finalize(st);
    return rc;
}

static cl_err cl_kms_begin(struct cl_kms_store *s) { return cl_kms_exec(s->db, "BEGIN IMMEDIATE", "begin"); }
static cl_err cl_kms_commit(struct cl_kms_store *s) { return cl_kms_exec(s->db, "COMMIT", "commit"); }
static void cl_kms_rollback(struct cl_kms_store *s) { (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); }

#define CL_KMS_DEFAULT_POLICY_FMT \
    "{\"Version\":\"2012-10-17\",\"Id\":\"key-default-1\",\"Statement\":[{\"Sid\":\"Enable IAM User " \
    "Permissions\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::%s:root\"},\"Action\":\"kms:*\"," \
    "\"Resource\":\"*\"}]}"

static void cl_kms_uuid(const uint8_t r[16], char out[CL_KMS_KEY_ID_LEN + 1])
{
    uint8_t b[16];
    memcpy(b, r, 16);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, CL_KMS_KEY_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
             b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static bool cl_kms_is_uuid(const char *s)
{
    if (strlen(s) != CL_KMS_KEY_ID_LEN)
        return false;
    for (int i = 0; i < CL_KMS_KEY_ID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

static void cl_kms_fill_meta(struct cl_kms_store *s, sqlite3_stmt *st, struct cl_kms_key_meta *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->key_id, sizeof(m->key_id), "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(m->description, sizeof(m->description), "%s", (const char *)sqlite3_column_text(st, 1));
    m->created = sqlite3_column_int64(st, 2);
    m->state = (enum cl_kms_key_state)sqlite3_column_int(st, 3);
    m->deletion_date = sqlite3_column_int64(st, 4);
    m->current_version = (uint32_t)sqlite3_column_int64(st, 5);
    snprintf(m->arn, sizeof(m->arn), "arn:aws:kms:%s:%s:key/%s", s->region, s->account, m->key_id);
}

cl_err cl_kms_key_create(struct cl_kms_store *s, const char *description, const char *policy,
                         struct cl_kms_key_meta *out)
{
    cl_err rc = CL_OK;
    bool in_tx = false;
    uint8_t r[16];
    char key_id[CL_KMS_KEY_ID_LEN + 1];
    char defpol[512];
    sqlite3_stmt *st = NULL;
    struct cl_policy *pp = NULL;
    if (!description)
        description = "";
    CL_ENSURE_D(strlen(description) <= CL_KMS_MAX_DESCRIPTION, CL_E_KMS_VALIDATION, "Description length");
    if (!policy) {
        snprintf(defpol, sizeof(defpol), CL_KMS_DEFAULT_POLICY_FMT, s->account);
        policy = defpol;
    }
    CL_GUARD(cl_policy_parse(policy, strlen(policy), &pp));
    CL_GUARD(cl_random_bytes(r, sizeof(r)));
    cl_kms_uuid(r, key_id);
    CL_GUARD(cl_kms_begin(s));
    in_tx = true;
    CL_GUARD(cl_kms_db_prep(s->db,
                            "INSERT INTO keys(key_id,description,created,state,current_version,policy) "
                            "VALUES(?,?,?,?,1,?)",
                            &st, "key insert prepare"));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, description, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, cl_kms_now());
    sqlite3_bind_int(st, 4, CL_KMS_STATE_ENABLED);
    sqlite3_bind_text(st, 5, policy, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "key insert: sqlite %d",
                sqlite3_extended_errcode(s->db));
    CL_GUARD(cl_kms_add_version(s, key_id, 1));
    CL_GUARD(cl_kms_commit(s));
    in_tx = false;
    CL_GUARD(cl_kms_key_get(s, key_id, out));
out:
    if (in_tx)
        cl_kms_rollback(s);
    sqlite3_finalize(st);
    cl_policy_free(pp);
    return rc;
}

static cl_err cl_kms_alias_target(struct cl_kms_store *s, const char *alias, char key_id[CL_KMS_KEY_ID_LEN + 1])
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db, "SELECT key_id FROM aliases WHERE name=?", &st, "alias prepare"));
    sqlite3_bind_text(st, 1, alias, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_NOT_FOUND, "alias not found");
    snprintf(key_id, CL_KMS_KEY_ID_LEN + 1, "%s", (const char *)sqlite3_column_text(st, 0));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_key_get(struct cl_kms_store *s, const char *id, struct cl_kms_key_meta *out)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    char key_id[CL_KMS_KEY_ID_LEN + 1];
    char prefix[160];
    CL_ENSURE_D(id && *id && strlen(id) <= 2048, CL_E_KMS_VALIDATION, "KeyId length");
    const char *p = id;
    snprintf(prefix, sizeof(prefix), "arn:aws:kms:%s:%s:", s->region, s->account);
    if (!strncmp(p, "arn:", 4)) {
        CL_ENSURE_D(!strncmp(p, prefix, strlen(prefix)), CL_E_KMS_NOT_FOUND, "ARN names another region or account");
        p += strlen(prefix);
        if (!strncmp(p, "key/", 4))
            p += 4;
        else
            CL_ENSURE_D(!strncmp(p, "alias/", 6), CL_E_KMS_NOT_FOUND, "ARN is neither key nor alias");
    }
    if (!strncmp(p, "alias/", 6)) {
        CL_GUARD(cl_kms_alias_target(s, p, key_id));
    } else {
        CL_ENSURE_D(cl_kms_is_uuid(p), CL_E_KMS_NOT_FOUND, "KeyId is not a key id, ARN or alias");
        memcpy(key_id, p, sizeof(key_id));
    }
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT key_id,description,created,state,deletion_date,current_version FROM keys "
                            "WHERE key_id=?",
                            &st, "key get prepare"));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_NOT_FOUND, "key not found");
    cl_kms_fill_meta(s, st, out);
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_key_set_state(struct cl_kms_store *s, const char *key_id, enum cl_kms_key_state stt,
                            int64_t deletion_date)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db, "UPDATE keys SET state=?, deletion_date=? WHERE key_id=?", &st, "state prepare"));
    sqlite3_bind_int(st, 1, stt);
    sqlite3_bind_int64(st, 2, deletion_date);
    sqlite3_bind_text(st, 3, key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "state update");
    CL_ENSURE_D(sqlite3_changes(s->db) == 1, CL_E_KMS_NOT_FOUND, "key not found");
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_key_purge_expired(struct cl_kms_store *s, int64_t now, size_t *purged)
{
    cl_err rc = CL_OK;
    bool in_tx = false;
    sqlite3_stmt *st = NULL;
    *purged = 0;
    /* Cheap read first: most calls find nothing and write nothing. */
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT count(*) FROM keys WHERE state=? AND deletion_date<=?",
                            &st, "purge count prepare"));
    sqlite3_bind_int(st, 1, CL_KMS_STATE_PENDING_DELETION);
    sqlite3_bind_int64(st, 2, now);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_STORE, "purge count");
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (n == 0)
        return CL_OK;
    static const char *const sql[] = {
        "DELETE FROM aliases WHERE key_id IN (SELECT key_id FROM keys WHERE state=?1 AND deletion_date<=?2)",
        "DELETE FROM key_versions WHERE key_id IN (SELECT key_id FROM keys WHERE state=?1 AND deletion_date<=?2)",
        "DELETE FROM keys WHERE state=?1 AND deletion_date<=?2",
    };
    CL_GUARD(cl_kms_begin(s));
    in_tx = true;
    for (size_t i = 0; i < 3; i++) {
        if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
            CL_FAIL(CL_E_KMS_STORE, "purge prepare %zu", i);
        sqlite3_bind_int(st, 1, CL_KMS_STATE_PENDING_DELETION);
        sqlite3_bind_int64(st, 2, now);
        CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "purge step %zu", i);
        sqlite3_finalize(st);
        st = NULL;
    }
    CL_GUARD(cl_kms_commit(s));
    in_tx = false;
    *purged = (size_t)n;
out:
    if (in_tx)
        cl_kms_rollback(s);
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_key_rotate(struct cl_kms_store *s, const char *key_id, uint32_t *new_version)
{
    cl_err rc = CL_OK;
    bool in_tx = false;
    struct cl_kms_key_meta m;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_begin(s));
    in_tx = true;
    CL_GUARD(cl_kms_key_get(s, key_id, &m));
    uint32_t v = m.current_version + 1;
    CL_GUARD(cl_kms_add_version(s, m.key_id, v));
    CL_GUARD(cl_kms_db_prep(s->db, "UPDATE keys SET current_version=? WHERE key_id=?", &st, "rotate prepare"));
    sqlite3_bind_int64(st, 1, v);
    sqlite3_bind_text(st, 2, m.key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "rotate update");
    CL_GUARD(cl_kms_commit(s));
    in_tx = false;
    *new_version = v;
out:
    if (in_tx)
        cl_kms_rollback(s);
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_key_list(struct cl_kms_store *s, const char *marker, size_t limit, cl_kms_key_cb cb, void *arg,
                       bool *truncated)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    int64_t after = 0;
    if (marker && *marker) {
        CL_GUARD(cl_kms_db_prep(s->db, "SELECT seq FROM keys WHERE key_id=?", &st, "list marker prepare"));
        sqlite3_bind_text(st, 1, marker, -1, SQLITE_STATIC);
        CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_VALIDATION, "Marker is not valid");
        after = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        st = NULL;
    }
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT key_id,description,created,state,deletion_date,current_version FROM keys "
                            "WHERE seq>? ORDER BY seq LIMIT ?",
                            &st, "list prepare"));
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, (int64_t)limit + 1);
    size_t n = 0;
    *truncated = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == limit) {
            *truncated = true;
            break;
        }
        struct cl_kms_key_meta m;
        cl_kms_fill_meta(s, st, &m);
        cb(arg, &m);
        n++;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_policy_get(struct cl_kms_store *s, const char *key_id, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db, "SELECT policy FROM keys WHERE key_id=?", &st, "policy prepare"));
    sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_NOT_FOUND, "key not found");
    CL_GUARD(cl_buf_append(out, sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0)));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_policy_put(struct cl_kms_store *s, const char *key_id, const char *policy)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    struct cl_policy *pp = NULL;
    CL_GUARD(cl_policy_parse(policy, strlen(policy), &pp));
    CL_GUARD(cl_kms_db_prep(s->db, "UPDATE keys SET policy=? WHERE key_id=?", &st, "policy put prepare"));
    sqlite3_bind_text(st, 1, policy, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "policy update");
    CL_ENSURE_D(sqlite3_changes(s->db) == 1, CL_E_KMS_NOT_FOUND, "key not found");
out:
    sqlite3_finalize(st);
    cl_policy_free(pp);
    return rc;
}

/* ---- aliases ---- */

static cl_err cl_kms_alias_check(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    if (n <= 6 || n > 256 || strncmp(a, "alias/", 6))
        return cl_err_fail(CL_E_KMS_BAD_ALIAS, "AliasName must be alias/<name>, at most 256 chars");
    if (!strncmp(a, "alias/aws/", 10))
        return cl_err_fail(CL_E_KMS_BAD_ALIAS, "alias/aws/ is reserved");
    for (size_t i = 6; i < n; i++) {
        char c = a[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '_' ||
              c == '-'))
            return cl_err_fail(CL_E_KMS_BAD_ALIAS, "AliasName character at %zu", i);
    }
    return CL_OK;
}

cl_err cl_kms_alias_create(struct cl_kms_store *s, const char *alias, const char *key_id)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_alias_check(alias));
    CL_GUARD(cl_kms_db_prep(s->db,
                            "INSERT INTO aliases(name,key_id,created) VALUES(?,?,?)",
                            &st, "alias insert prepare"));
    sqlite3_bind_text(st, 1, alias, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, cl_kms_now());
    int r = sqlite3_step(st);
    CL_ENSURE_D(r != SQLITE_CONSTRAINT, CL_E_KMS_EXISTS, "alias already exists");
    CL_ENSURE_D(r == SQLITE_DONE, CL_E_KMS_STORE, "alias insert: sqlite %d", sqlite3_extended_errcode(s->db));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_alias_delete(struct cl_kms_store *s, const char *alias)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_alias_check(alias));
    CL_GUARD(cl_kms_db_prep(s->db, "DELETE FROM aliases WHERE name=?", &st, "alias delete prepare"));
    sqlite3_bind_text(st, 1, alias, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "alias delete");
    CL_ENSURE_D(sqlite3_changes(s->db) == 1, CL_E_KMS_NOT_FOUND, "alias not found");
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_alias_list(struct cl_kms_store *s, const char *key_id, cl_kms_alias_cb cb, void *arg)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    const char *sql = key_id ? "SELECT name,key_id,created FROM aliases WHERE key_id=? ORDER BY name"
                             : "SELECT name,key_id,created FROM aliases ORDER BY name";
    CL_GUARD(cl_kms_db_prep(s->db, sql, &st, "alias list prepare"));
    if (key_id)
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        cb(arg, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_int64(st, 2));
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- ciphertext blobs ---- */

static int cl_kms_kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cl_aws_kv *)a)->key, ((const struct cl_aws_kv *)b)->key);
}

cl_err cl_kms_enc_ctx_encode(const struct cl_aws_kv *ctx, size_t n_ctx, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_aws_kv sorted[CL_KMS_MAX_ENC_CTX_PAIRS];
    CL_ENSURE_D(n_ctx <= CL_KMS_MAX_ENC_CTX_PAIRS, CL_E_KMS_VALIDATION, "EncryptionContext has more than %d pairs",
                CL_KMS_MAX_ENC_CTX_PAIRS);
    if (n_ctx)
        memcpy(sorted, ctx, n_ctx * sizeof(*ctx));
    qsort(sorted, n_ctx, sizeof(sorted[0]), cl_kms_kv_cmp);
    CL_GUARD(cl_buf_append_u16be(out, (uint16_t)n_ctx));
    for (size_t i = 0; i < n_ctx; i++) {
        size_t kl = strlen(sorted[i].key), vl = strlen(sorted[i].value);
        CL_ENSURE_D(kl <= CL_KMS_MAX_ENC_CTX_BYTES && vl <= CL_KMS_MAX_ENC_CTX_BYTES, CL_E_KMS_VALIDATION,
                    "EncryptionContext entry %zu too long", i);
        CL_ENSURE_D(i == 0 || strcmp(sorted[i].key, sorted[i - 1].key), CL_E_KMS_VALIDATION,
                    "EncryptionContext key repeated");
        CL_GUARD(cl_buf_append_u16be(out, (uint16_t)kl));
        CL_GUARD(cl_buf_append(out, sorted[i].key, kl));
        CL_GUARD(cl_buf_append_u16be(out, (uint16_t)vl));
        CL_GUARD(cl_buf_append(out, sorted[i].value, vl));
    }
out:
    return rc;
}

#define CL_KMS_BLOB_HDR (3 + 1 + CL_KMS_KEY_ID_LEN + 4)

cl_err cl_kms_encrypt(struct cl_kms_store *s, const char *key_id, const uint8_t *pt, size_t n,
                      const struct cl_aws_kv *ctx, size_t n_ctx, struct cl_buf *blob)
{
    cl_err rc = CL_OK;
    uint8_t *mat = NULL, *p;
    cl_aead *a = NULL;
    struct cl_buf aad;
    struct cl_kms_key_meta m;
    cl_buf_init(&aad, 2 * CL_KMS_MAX_ENC_CTX_BYTES + 1024, CL_BUF_NONE);
    CL_ENSURE_D(n >= 1 && n <= CL_KMS_MAX_PLAINTEXT, CL_E_KMS_VALIDATION, "Plaintext length %zu not in 1..%d", n,
                CL_KMS_MAX_PLAINTEXT);
    CL_GUARD(cl_kms_key_get(s, key_id, &m));
    CL_GUARD(cl_secmem_alloc(32, (void **)&mat));
    CL_GUARD(cl_kms_material(s, m.key_id, m.current_version, mat));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, mat, 32, &a));
    size_t start = blob->len;
    CL_GUARD(cl_buf_append(blob, CL_KMS_BLOB_MAGIC, 3));
    CL_GUARD(cl_buf_append_u8(blob, CL_KMS_BLOB_VERSION));
    CL_GUARD(cl_buf_append(blob, m.key_id, CL_KMS_KEY_ID_LEN));
    CL_GUARD(cl_buf_append_u32be(blob, m.current_version));
    CL_GUARD(cl_buf_append(&aad, blob->data + start, CL_KMS_BLOB_HDR));
    CL_GUARD(cl_kms_enc_ctx_encode(ctx, n_ctx, &aad));
    CL_GUARD(cl_buf_extend(blob, CL_GCM_NONCE_LEN + CL_AEAD_TAG_LEN + n, &p));
    CL_GUARD(cl_random_bytes(p, CL_GCM_NONCE_LEN));
    CL_GUARD(cl_aead_seal(a, p, aad.data, aad.len, pt, n, p + CL_GCM_NONCE_LEN + CL_AEAD_TAG_LEN,
                          p + CL_GCM_NONCE_LEN));
out:
    cl_aead_free(a);
    cl_secmem_free(mat);
    cl_buf_free(&aad);
    return rc;
}

cl_err cl_kms_blob_key_id(const uint8_t *blob, size_t n, char out_key_id[CL_KMS_KEY_ID_LEN + 1])
{
    cl_err rc = CL_OK;
    struct cl_cursor c;
    const uint8_t *magic, *kid;
    uint8_t ver;
    cl_cursor_init(&c, blob, n);
    CL_ENSURE_D(n >= CL_KMS_BLOB_OVERHEAD && n <= CL_KMS_MAX_CIPHERTEXT, CL_E_KMS_BAD_CIPHERTEXT,
                "blob length %zu", n);
    CL_GUARD(cl_cursor_bytes(&c, 3, &magic));
    CL_ENSURE_D(!memcmp(magic, CL_KMS_BLOB_MAGIC, 3), CL_E_KMS_BAD_CIPHERTEXT, "blob magic");
    CL_GUARD(cl_cursor_u8(&c, &ver));
    CL_ENSURE_D(ver == CL_KMS_BLOB_VERSION, CL_E_KMS_BAD_CIPHERTEXT, "blob format version %u", ver);
    CL_GUARD(cl_cursor_bytes(&c, CL_KMS_KEY_ID_LEN, &kid));
    memcpy(out_key_id, kid, CL_KMS_KEY_ID_LEN);
    out_key_id[CL_KMS_KEY_ID_LEN] = 0;
    CL_ENSURE_D(cl_kms_is_uuid(out_key_id), CL_E_KMS_BAD_CIPHERTEXT, "blob key id");
out:
    return rc;
}

cl_err cl_kms_decrypt(struct cl_kms_store *s, const uint8_t *blob, size_t n, const struct cl_aws_kv *ctx,
                      size_t n_ctx, struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    uint8_t *mat = NULL, *dst;
    cl_aead *a = NULL;
    struct cl_buf aad;
    char key_id[CL_KMS_KEY_ID_LEN + 1];
    uint32_t kv;
    const uint8_t *iv, *tag;
    struct cl_cursor c;
    cl_buf_init(&aad, 2 * CL_KMS_MAX_ENC_CTX_BYTES + 1024, CL_BUF_NONE);
    CL_GUARD(cl_kms_blob_key_id(blob, n, key_id));
    cl_cursor_init(&c, blob, n);
    CL_GUARD(cl_cursor_skip(&c, 4 + CL_KMS_KEY_ID_LEN));
    CL_GUARD(cl_cursor_u32be(&c, &kv));
    CL_GUARD(cl_cursor_bytes(&c, CL_GCM_NONCE_LEN, &iv));
    CL_GUARD(cl_cursor_bytes(&c, CL_AEAD_TAG_LEN, &tag));
    size_t ctlen = cl_cursor_left(&c);
    CL_ENSURE_D(ctlen >= 1, CL_E_KMS_BAD_CIPHERTEXT, "blob has no ciphertext");
    CL_GUARD(cl_buf_append(&aad, blob, CL_KMS_BLOB_HDR));
    CL_GUARD(cl_kms_enc_ctx_encode(ctx, n_ctx, &aad));
    CL_GUARD(cl_secmem_alloc(32, (void **)&mat));
    CL_GUARD(cl_kms_material(s, key_id, kv, mat));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, mat, 32, &a));
    size_t start = pt->len;
    CL_GUARD(cl_buf_extend(pt, ctlen, &dst));
    if (cl_aead_open(a, iv, aad.data, aad.len, blob + c.off, ctlen, tag, dst) != CL_OK) {
        pt->len = start;
        CL_FAIL(CL_E_KMS_BAD_CIPHERTEXT, "blob does not authenticate (wrong key, tampered or wrong context)");
    }
out:
    cl_aead_free(a);
    cl_secmem_free(mat);
    cl_buf_free(&aad);
    return rc;
}

/* ---- users ---- */

static void cl_kms_user_label(char *b, size_t n, const char *ak) { snprintf(b, n, "cloister-kms user-secret %s", ak); }

cl_err cl_kms_user_add(struct cl_kms_store *s, const char *name, char access_key[CL_KMS_ACCESS_KEY_LEN + 1],
                       char secret[CL_KMS_SECRET_LEN + 1])
{
    return cl_kms_user_add_in(s, NULL, name, access_key, secret);
}

cl_err cl_kms_user_add_in(struct cl_kms_store *s, const char *account, const char *name,
                          char access_key[CL_KMS_ACCESS_KEY_LEN + 1], char secret[CL_KMS_SECRET_LEN + 1])
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    cl_err rc = CL_OK;
    uint8_t r[CL_KMS_SECRET_LEN + 16];
    char arn[CL_KMS_ARN_MAX], label[96];
    struct cl_buf w;
    sqlite3_stmt *st = NULL;
    cl_buf_init(&w, CL_KMS_SECRET_LEN + CL_KMS_WRAP_OVERHEAD, CL_BUF_NONE);
    size_t nl = name ? strlen(name) : 0;
    CL_ENSURE_D(nl >= 1 && nl <= 64, CL_E_KMS_VALIDATION, "user name length 1..64");
    if (!account)
        account = s->account;
    CL_ENSURE_D(strlen(account) == 12 && strspn(account, "0123456789") == 12, CL_E_KMS_VALIDATION,
                "account must be 12 digits");
    for (size_t i = 0; i < nl; i++)
        CL_ENSURE_D(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-", name[i]),
                    CL_E_KMS_VALIDATION, "user name character at %zu", i);
    CL_GUARD(cl_random_bytes(r, sizeof(r)));
    memcpy(access_key, "CLKA", 4);
    for (int i = 0; i < 16; i++)
        access_key[4 + i] = b32[r[i] & 31];
    access_key[CL_KMS_ACCESS_KEY_LEN] = 0;
    for (int i = 0; i < CL_KMS_SECRET_LEN; i++)
        secret[i] = b64[r[16 + i] & 63];
    secret[CL_KMS_SECRET_LEN] = 0;
    snprintf(arn, sizeof(arn), "arn:aws:iam::%s:user/%s", account, name);
    cl_kms_user_label(label, sizeof(label), access_key);
    CL_GUARD(cl_kms_wrap(s, label, (const uint8_t *)secret, CL_KMS_SECRET_LEN, &w));
    CL_GUARD(cl_kms_db_prep(s->db,
                            "INSERT INTO users(access_key,name,arn,secret_wrapped,created) VALUES(?,?,?,?,?)",
                            &st, "user insert prepare"));
    sqlite3_bind_text(st, 1, access_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, arn, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, w.data, (int)w.len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, cl_kms_now());
    int sr = sqlite3_step(st);
    CL_ENSURE_D(sr != SQLITE_CONSTRAINT, CL_E_CORE_EXISTS, "user name already exists");
    CL_ENSURE_D(sr == SQLITE_DONE, CL_E_KMS_STORE, "user insert");
out:
    cl_wipe(r, sizeof(r));
    if (rc)
        cl_wipe(secret, CL_KMS_SECRET_LEN + 1);
    sqlite3_finalize(st);
    cl_buf_free(&w);
    return rc;
}

cl_err cl_kms_user_lookup(struct cl_kms_store *s, const char *access_key, char secret[CL_KMS_SECRET_LEN + 1],
                          char arn[CL_KMS_ARN_MAX])
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    char label[96];
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT arn,secret_wrapped FROM users WHERE access_key=?",
                            &st, "user lookup prepare"));
    sqlite3_bind_text(st, 1, access_key, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_AUTH, "unknown access key");
    snprintf(arn, CL_KMS_ARN_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
    cl_kms_user_label(label, sizeof(label), access_key);
    CL_GUARD(cl_kms_unwrap(s, label, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                           (uint8_t *)secret, CL_KMS_SECRET_LEN));
    secret[CL_KMS_SECRET_LEN] = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- audit ---- */

cl_err cl_kms_audit_append(struct cl_kms_store *s, const struct cl_kms_audit_row *r)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db,
                            "INSERT INTO audit(time_ms,request_id,principal,operation,key_id,decision,statement,"
                            "error,module_id,pcrs) VALUES(?,?,?,?,?,?,?,?,?,?)",
                            &st, "audit prepare"));
    sqlite3_bind_int64(st, 1, r->time_ms);
    sqlite3_bind_text(st, 2, r->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->principal, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->operation, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->decision, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r->statement, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, r->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, r->module_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, r->pcrs, -1, SQLITE_STATIC);
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_DONE, CL_E_KMS_STORE, "audit insert: sqlite %d",
                sqlite3_extended_errcode(s->db));
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_audit_list(struct cl_kms_store *s, cl_kms_audit_cb cb, void *arg)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db,
                            "SELECT seq,time_ms,request_id,principal,operation,key_id,decision,statement,error,"
                            "module_id,pcrs FROM audit ORDER BY seq",
                            &st, "audit list prepare"));
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct cl_kms_audit_row r;
        memset(&r, 0, sizeof(r));
        r.time_ms = sqlite3_column_int64(st, 1);
#define CL_KMS_COL(field, i) snprintf(r.field, sizeof(r.field), "%s", (const char *)sqlite3_column_text(st, i))
        CL_KMS_COL(request_id, 2);
        CL_KMS_COL(principal, 3);
        CL_KMS_COL(operation, 4);
        CL_KMS_COL(key_id, 5);
        CL_KMS_COL(decision, 6);
        CL_KMS_COL(statement, 7);
        CL_KMS_COL(error, 8);
        CL_KMS_COL(module_id, 9);
        CL_KMS_COL(pcrs, 10);
#undef CL_KMS_COL
        cb(arg, sqlite3_column_int64(st, 0), &r);
    }
out:
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_kms_store_check(struct cl_kms_store *s)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    CL_GUARD(cl_kms_db_prep(s->db, "PRAGMA integrity_check", &st, "integrity prepare"));
    CL_ENSURE_D(sqlite3_step(st) == SQLITE_ROW, CL_E_KMS_STORE, "integrity_check returned nothing");
    CL_ENSURE_D(!strcmp((const char *)sqlite3_column_text(st, 0), "ok"), CL_E_KMS_STORE, "integrity_check failed");
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- for the store's other files (kms_internal.h) ---- */

sqlite3 *cl_kms_store_sqlite(struct cl_kms_store *s) { return s->db; }

cl_err cl_kms_store_wrap(struct cl_kms_store *s, const char *label, const uint8_t *pt, size_t n, struct cl_buf *out)
{
    return cl_kms_wrap(s, label, pt, n, out);
}

cl_err cl_kms_store_unwrap(struct cl_kms_store *s, const char *label, const uint8_t *w, size_t n, struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    uint8_t *p;
    CL_ENSURE_D(n > CL_KMS_WRAP_OVERHEAD, CL_E_KMS_STORE, "wrapped %s is too short", label);
    CL_GUARD(cl_buf_extend(pt, n - CL_KMS_WRAP_OVERHEAD, &p));
    CL_GUARD(cl_kms_unwrap(s, label, w, n, p, n - CL_KMS_WRAP_OVERHEAD));
out:
    return rc;
}

cl_err cl_kms_store_begin(struct cl_kms_store *s) { return cl_kms_begin(s); }
cl_err cl_kms_store_commit(struct cl_kms_store *s) { return cl_kms_commit(s); }
void cl_kms_store_rollback(struct cl_kms_store *s) { (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); }
