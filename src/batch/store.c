/* Embedded default backends of the batch pipeline: a directory of objects
 * and SQLite (WAL) for the queue and the results (docs/batch.md). Only
 * ciphertext, ids, sizes and timings pass through here. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloister/batch_store.h"
#include "cloister/log.h"
#include "store_aws.h"

#define CL_BSTORE_PATH_MAX 4096

static cl_err cl_bstore_url(const char *url, const char *scheme, char *path, size_t cap)
{
    size_t sl = strlen(scheme);
    if (!url || strncmp(url, scheme, sl) != 0 || !url[sl])
        return cl_err_fail(CL_E_STORE_URL, "expected %sPATH", scheme);
    if (strlen(url + sl) >= cap)
        return cl_err_fail(CL_E_STORE_URL, "path too long");
    memcpy(path, url + sl, strlen(url + sl) + 1);
    return CL_OK;
}

static cl_err cl_bstore_errno(int e, const char *what, const char *path)
{
    if (e == ENOSPC || e == EFBIG || e == EDQUOT)
        return cl_err_fail(CL_E_STORE_FULL, "%s %s: %s", what, path, strerror(e));
    return cl_err_fail(CL_E_STORE_IO, "%s %s: %s", what, path, strerror(e));
}

static int64_t cl_bstore_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool cl_bstore_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > CL_BSTORE_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* ---------------- objects: dir:PATH ---------------- */

bool cl_bstore_err_transient(cl_err e)
{
    if (cl_err_category(e) != CL_ERRCAT_STORE)
        return false;
    return e != CL_E_STORE_NOT_FOUND && e != CL_E_STORE_REFUSED && e != CL_E_STORE_RESPONSE &&
           e != CL_E_STORE_MESSAGE && e != CL_E_STORE_TOO_LARGE;
}

static bool cl_bstore_scheme(const char *url, const char *scheme)
{
    return url && !strncmp(url, scheme, strlen(scheme));
}

struct cl_bstore_objects {
    char dir[CL_BSTORE_PATH_MAX];
    struct cl_bstore_s3 *s3;
};

cl_err cl_bstore_objects_open(const char *url, cl_bstore_objects **out)
{
    cl_err rc = CL_OK;
    struct stat st;
    cl_bstore_objects *o = calloc(1, sizeof(*o));
    CL_ENSURE(o, CL_E_CORE_NOMEM);
    if (cl_bstore_scheme(url, "s3://")) {
        CL_GUARD(cl_bstore_s3_open(url, &o->s3));
        *out = o;
        o = NULL;
        goto out;
    }
    CL_ENSURE_D(cl_bstore_scheme(url, "dir:"), CL_E_STORE_URL, "objects: expected dir:PATH or s3://BUCKET[/PREFIX][?endpoint=URL]");
    CL_GUARD(cl_bstore_url(url, "dir:", o->dir, sizeof(o->dir) - CL_BSTORE_NAME_MAX - 32));
    if (stat(o->dir, &st) != 0 && errno == ENOENT && mkdir(o->dir, 0700) != 0)
        CL_FAIL(CL_E_STORE_IO, "create object directory %s: %s", o->dir, strerror(errno));
    CL_ENSURE_D(stat(o->dir, &st) == 0 && S_ISDIR(st.st_mode), CL_E_STORE_URL, "%s is not a directory", o->dir);
    /* A file-size limit must fail the write (EFBIG), not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    *out = o;
    o = NULL;
out:
    free(o);
    return rc;
}

void cl_bstore_objects_close(cl_bstore_objects *o)
{
    if (o)
        cl_bstore_s3_close(o->s3);
    free(o);
}

cl_err cl_bstore_objects_put(cl_bstore_objects *o, const char *name, const uint8_t *p, size_t n)
{
    cl_err rc = CL_OK;
    char path[CL_BSTORE_PATH_MAX + 256], tmp[CL_BSTORE_PATH_MAX + 256];
    int fd = -1;
    tmp[0] = 0;
    if (o->s3)
        return cl_bstore_s3_put(o->s3, name, p, n);
    CL_ENSURE_D(cl_bstore_name_valid(name), CL_E_STORE_URL, "object name: 1..128 of A-Z a-z 0-9 . _ -");
    snprintf(path, sizeof(path), "%s/%s", o->dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-XXXXXX", o->dir, name);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        tmp[0] = 0;
        rc = cl_bstore_errno(e, "create temp object in", o->dir);
        goto out;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            rc = cl_bstore_errno(e, "write object", path);
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = cl_bstore_errno(errno, "fsync object", path);
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = cl_bstore_errno(errno, "rename object", path);
        goto out;
    }
    tmp[0] = 0;
    int dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp); /* nothing half-written stays */
    return rc;
}

cl_err cl_bstore_objects_get(cl_bstore_objects *o, const char *name, size_t max, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char path[CL_BSTORE_PATH_MAX + 256];
    struct stat st;
    int fd = -1;
    uint8_t *dst = NULL;
    if (o->s3)
        return cl_bstore_s3_get(o->s3, name, max, out);
    CL_ENSURE_D(cl_bstore_name_valid(name), CL_E_STORE_URL, "object name: 1..128 of A-Z a-z 0-9 . _ -");
    snprintf(path, sizeof(path), "%s/%s", o->dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = errno == ENOENT ? cl_err_fail(CL_E_STORE_NOT_FOUND, "object %s", name)
                             : cl_bstore_errno(errno, "open object", path);
        goto out;
    }
    CL_ENSURE_D(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), CL_E_STORE_IO, "object %s is not a regular file", name);
    CL_ENSURE_D((uint64_t)st.st_size <= max, CL_E_STORE_IO, "object %s of %lld bytes is over %zu", name,
                (long long)st.st_size, max);
    out->len = 0;
    CL_GUARD(cl_buf_extend(out, (size_t)st.st_size, &dst));
    for (size_t off = 0; off < (size_t)st.st_size;) {
        ssize_t r = read(fd, dst + off, (size_t)st.st_size - off);
        if (r < 0 && errno == EINTR)
            continue;
        CL_ENSURE_D(r > 0, CL_E_STORE_IO, "read object %s", name);
        off += (size_t)r;
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

cl_err cl_bstore_objects_head(cl_bstore_objects *o, const char *name, uint64_t *size)
{
    cl_err rc = CL_OK;
    char path[CL_BSTORE_PATH_MAX + 256];
    struct stat st;
    if (o->s3)
        return cl_bstore_s3_head(o->s3, name, size);
    CL_ENSURE_D(cl_bstore_name_valid(name), CL_E_STORE_URL, "object name: 1..128 of A-Z a-z 0-9 . _ -");
    snprintf(path, sizeof(path), "%s/%s", o->dir, name);
    if (lstat(path, &st) != 0) {
        rc = errno == ENOENT ? cl_err_fail(CL_E_STORE_NOT_FOUND, "object %s", name)
                             : cl_bstore_errno(errno, "stat object", path);
        goto out;
    }
    CL_ENSURE_D(S_ISREG(st.st_mode), CL_E_STORE_IO, "object %s is not a regular file", name);
    *size = (uint64_t)st.st_size;
out:
    return rc;
}

cl_err cl_bstore_objects_delete(cl_bstore_objects *o, const char *name)
{
    cl_err rc = CL_OK;
    char path[CL_BSTORE_PATH_MAX + 256];
    if (o->s3)
        return cl_bstore_s3_delete(o->s3, name);
    CL_ENSURE_D(cl_bstore_name_valid(name), CL_E_STORE_URL, "object name: 1..128 of A-Z a-z 0-9 . _ -");
    snprintf(path, sizeof(path), "%s/%s", o->dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        rc = cl_bstore_errno(errno, "delete object", path);
out:
    return rc;
}

/* ---------------- SQLite helpers ---------------- */

static cl_err cl_bstore_db_err(sqlite3 *db, int src, const char *what)
{
    int ext = db ? sqlite3_extended_errcode(db) : src;
    if (src == SQLITE_FULL || (src & 0xff) == SQLITE_FULL || ext == SQLITE_IOERR_WRITE || ext == SQLITE_IOERR_FSYNC ||
        ext == SQLITE_IOERR_TRUNCATE)
        return cl_err_fail(CL_E_STORE_FULL, "%s: %s (disk full or file-size limit)", what,
                           db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
    return cl_err_fail(CL_E_STORE_DB, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
}

static cl_err cl_bstore_db_open(const char *url, const char *schema, sqlite3 **out)
{
    cl_err rc = CL_OK;
    char path[CL_BSTORE_PATH_MAX];
    sqlite3 *db = NULL;
    CL_GUARD(cl_bstore_url(url, "sqlite:", path, sizeof(path)));
    signal(SIGXFSZ, SIG_IGN);
    int s = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (s != SQLITE_OK)
        CL_FAIL(CL_E_STORE_DB, "open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(s));
    sqlite3_busy_timeout(db, 10000);
    (void)chmod(path, 0600);
    s = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
    if (s == SQLITE_OK)
        s = sqlite3_exec(db, schema, NULL, NULL, NULL);
    if (s != SQLITE_OK) {
        rc = cl_bstore_db_err(db, s, "schema");
        goto out;
    }
    *out = db;
    db = NULL;
out:
    sqlite3_close(db);
    return rc;
}

/* Runs sql with up to 4 bound values: 'i' int64, 't' text, 'b' blob (ptr, len). */
struct cl_bstore_arg {
    char kind;
    int64_t i;
    const void *p;
    size_t n;
};
#define CL_BI(v) ((struct cl_bstore_arg){'i', (v), NULL, 0})
#define CL_BT(s) ((struct cl_bstore_arg){'t', 0, (s), 0})
#define CL_BB(ptr, len) ((struct cl_bstore_arg){'b', 0, (ptr), (len)})

static cl_err cl_bstore_prep(sqlite3 *db, const char *sql, const struct cl_bstore_arg *a, size_t na, sqlite3_stmt **st)
{
    int s = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    for (size_t i = 0; s == SQLITE_OK && i < na; i++) {
        if (a[i].kind == 'i')
            s = sqlite3_bind_int64(*st, (int)i + 1, a[i].i);
        else if (a[i].kind == 't')
            s = sqlite3_bind_text(*st, (int)i + 1, a[i].p, -1, SQLITE_STATIC);
        else
            s = sqlite3_bind_blob(*st, (int)i + 1, a[i].p, (int)a[i].n, SQLITE_STATIC);
    }
    if (s != SQLITE_OK) {
        cl_err rc = cl_bstore_db_err(db, s, "prepare");
        sqlite3_finalize(*st);
        *st = NULL;
        return rc;
    }
    return CL_OK;
}

static cl_err cl_bstore_exec(sqlite3 *db, const char *sql, const struct cl_bstore_arg *a, size_t na, int *changes)
{
    sqlite3_stmt *st = NULL;
    cl_err rc = cl_bstore_prep(db, sql, a, na, &st);
    if (rc != CL_OK)
        return rc;
    int s = sqlite3_step(st);
    if (s != SQLITE_DONE && s != SQLITE_ROW)
        rc = cl_bstore_db_err(db, s, "write");
    else if (changes)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(st);
    return rc;
}

static cl_err cl_bstore_begin(sqlite3 *db)
{
    int s = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return s == SQLITE_OK ? CL_OK : cl_bstore_db_err(db, s, "begin");
}

static cl_err cl_bstore_commit(sqlite3 *db, cl_err rc)
{
    if (rc == CL_OK) {
        int s = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (s == SQLITE_OK)
            return CL_OK;
        rc = cl_bstore_db_err(db, s, "commit");
    }
    (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---------------- queue: sqlite:PATH ---------------- */

struct cl_bstore_queue {
    sqlite3 *db;
    struct cl_bstore_sqs *sqs;
};

static const char cl_bstore_queue_schema[] =
    "CREATE TABLE IF NOT EXISTS queue(id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, object TEXT NOT NULL,"
    " receives INTEGER NOT NULL DEFAULT 0, visible_at INTEGER NOT NULL, sent_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS queue_visible ON queue(visible_at);"
    "CREATE TABLE IF NOT EXISTS dead_letters(id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, object TEXT NOT NULL,"
    " receives INTEGER NOT NULL, error TEXT NOT NULL, at INTEGER NOT NULL);";

cl_err cl_bstore_queue_open(const char *url, cl_bstore_queue **out)
{
    cl_err rc = CL_OK;
    cl_bstore_queue *q = calloc(1, sizeof(*q));
    CL_ENSURE(q, CL_E_CORE_NOMEM);
    if (cl_bstore_scheme(url, "sqs://"))
        CL_GUARD(cl_bstore_sqs_open(url, &q->sqs));
    else if (cl_bstore_scheme(url, "sqlite:"))
        CL_GUARD(cl_bstore_db_open(url, cl_bstore_queue_schema, &q->db));
    else
        CL_FAIL(CL_E_STORE_URL, "queue: expected sqlite:PATH or sqs://QUEUE[?endpoint=URL]");
    *out = q;
    q = NULL;
out:
    free(q);
    return rc;
}

void cl_bstore_queue_close(cl_bstore_queue *q)
{
    if (!q)
        return;
    cl_bstore_sqs_close(q->sqs);
    sqlite3_close(q->db);
    free(q);
}

cl_err cl_bstore_queue_send(cl_bstore_queue *q, const char *job_id, const char *object)
{
    if (q->sqs)
        return cl_bstore_sqs_send(q->sqs, job_id, object);
    if (!cl_bstore_name_valid(job_id) || !cl_bstore_name_valid(object))
        return cl_err_fail(CL_E_STORE_URL, "job id or object name");
    int64_t now = cl_bstore_now_ms();
    struct cl_bstore_arg a[] = {CL_BT(job_id), CL_BT(object), CL_BI(now), CL_BI(now)};
    return cl_bstore_exec(q->db, "INSERT INTO queue(job_id, object, visible_at, sent_at) VALUES(?,?,?,?)", a, 4, NULL);
}

cl_err cl_bstore_queue_receive(cl_bstore_queue *q, uint32_t visibility_ms, struct cl_bstore_msg *m, bool *got)
{
    cl_err rc = CL_OK;
    sqlite3_stmt *st = NULL;
    int64_t now = cl_bstore_now_ms();
    bool have = false;
    if (q->sqs)
        return cl_bstore_sqs_receive(q->sqs, visibility_ms, m, got);
    CL_GUARD(cl_bstore_begin(q->db));
    struct cl_bstore_arg a[] = {CL_BI(now)};
    rc = cl_bstore_prep(q->db, "SELECT id, job_id, object, receives FROM queue WHERE visible_at <= ? ORDER BY visible_at, id LIMIT 1",
                        a, 1, &st);
    if (rc == CL_OK) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            m->id = sqlite3_column_int64(st, 0);
            snprintf(m->job_id, sizeof(m->job_id), "%s", (const char *)sqlite3_column_text(st, 1));
            snprintf(m->object, sizeof(m->object), "%s", (const char *)sqlite3_column_text(st, 2));
            m->receives = (uint32_t)sqlite3_column_int64(st, 3) + 1;
            have = true;
        } else if (s != SQLITE_DONE) {
            rc = cl_bstore_db_err(q->db, s, "receive");
        }
        sqlite3_finalize(st);
    }
    if (rc == CL_OK && have) {
        struct cl_bstore_arg u[] = {CL_BI(now + visibility_ms), CL_BI(m->receives), CL_BI(m->id)};
        rc = cl_bstore_exec(q->db, "UPDATE queue SET visible_at = ?, receives = ? WHERE id = ?", u, 3, NULL);
    }
    rc = cl_bstore_commit(q->db, rc);
    if (rc == CL_OK)
        *got = have;
out:
    return rc;
}

cl_err cl_bstore_queue_delete(cl_bstore_queue *q, const struct cl_bstore_msg *m)
{
    if (q->sqs)
        return cl_bstore_sqs_delete(q->sqs, m);
    struct cl_bstore_arg a[] = {CL_BI(m->id)};
    return cl_bstore_exec(q->db, "DELETE FROM queue WHERE id = ?", a, 1, NULL);
}

cl_err cl_bstore_queue_release(cl_bstore_queue *q, const struct cl_bstore_msg *m, uint32_t delay_ms)
{
    if (q->sqs)
        return cl_bstore_sqs_release(q->sqs, m, delay_ms);
    struct cl_bstore_arg a[] = {CL_BI(cl_bstore_now_ms() + delay_ms), CL_BI(m->id)};
    return cl_bstore_exec(q->db, "UPDATE queue SET visible_at = ? WHERE id = ?", a, 2, NULL);
}

cl_err cl_bstore_queue_dead_letter(cl_bstore_queue *q, const struct cl_bstore_msg *m, const char *error)
{
    cl_err rc = CL_OK;
    if (q->sqs)
        return cl_bstore_sqs_dead_letter(q->sqs, m, error);
    CL_GUARD(cl_bstore_begin(q->db));
    struct cl_bstore_arg a[] = {CL_BI(m->id), CL_BT(error), CL_BI(cl_bstore_now_ms())};
    rc = cl_bstore_exec(q->db,
                        "INSERT OR REPLACE INTO dead_letters(id, job_id, object, receives, error, at) "
                        "SELECT id, job_id, object, receives, ?2, ?3 FROM queue WHERE id = ?1",
                        a, 3, NULL);
    if (rc == CL_OK) {
        struct cl_bstore_arg d[] = {CL_BI(m->id)};
        rc = cl_bstore_exec(q->db, "DELETE FROM queue WHERE id = ?", d, 1, NULL);
    }
    rc = cl_bstore_commit(q->db, rc);
out:
    return rc;
}

static cl_err cl_bstore_count(sqlite3 *db, const char *sql, const struct cl_bstore_arg *a, size_t na, uint64_t *out)
{
    sqlite3_stmt *st = NULL;
    cl_err rc = cl_bstore_prep(db, sql, a, na, &st);
    if (rc != CL_OK)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(st, 0);
    else
        rc = cl_bstore_db_err(db, SQLITE_ERROR, "count");
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_bstore_queue_counts(cl_bstore_queue *q, struct cl_bstore_queue_counts *c)
{
    cl_err rc = CL_OK;
    if (q->sqs)
        return cl_bstore_sqs_counts(q->sqs, c);
    struct cl_bstore_arg a[] = {CL_BI(cl_bstore_now_ms())};
    CL_GUARD(cl_bstore_count(q->db, "SELECT count(*) FROM queue WHERE visible_at <= ?", a, 1, &c->visible));
    CL_GUARD(cl_bstore_count(q->db, "SELECT count(*) FROM queue WHERE visible_at > ?", a, 1, &c->in_flight));
    CL_GUARD(cl_bstore_count(q->db, "SELECT count(*) FROM dead_letters", NULL, 0, &c->dead));
out:
    return rc;
}

cl_err cl_bstore_queue_dead_find(cl_bstore_queue *q, const char *job_id, char error[CL_BSTORE_ERROR_MAX + 1],
                                 uint32_t *receives, bool *found)
{
    if (q->sqs)
        return cl_bstore_sqs_dead_find(q->sqs, job_id, error, receives, found);
    sqlite3_stmt *st = NULL;
    struct cl_bstore_arg a[] = {CL_BT(job_id)};
    cl_err rc = cl_bstore_prep(q->db, "SELECT error, receives FROM dead_letters WHERE job_id = ? ORDER BY at DESC LIMIT 1",
                               a, 1, &st);
    if (rc != CL_OK)
        return rc;
    *found = false;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(error, CL_BSTORE_ERROR_MAX + 1, "%s", (const char *)sqlite3_column_text(st, 0));
        *receives = (uint32_t)sqlite3_column_int64(st, 1);
        *found = true;
    }
    sqlite3_finalize(st);
    return CL_OK;
}

/* ---------------- results: sqlite:PATH ---------------- */

struct cl_bstore_results {
    sqlite3 *db;
    struct cl_bstore_ddb *ddb;
};

static const char cl_bstore_results_schema[] =
    "CREATE TABLE IF NOT EXISTS attestations(chain TEXT PRIMARY KEY, doc BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS receipts(id INTEGER PRIMARY KEY AUTOINCREMENT, chain TEXT NOT NULL, seq INTEGER NOT NULL,"
    " job_id TEXT NOT NULL, receipt BLOB NOT NULL, at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS results(job_id TEXT PRIMARY KEY, status TEXT NOT NULL, result BLOB NOT NULL,"
    " receipt_id INTEGER NOT NULL, at INTEGER NOT NULL);";

cl_err cl_bstore_results_open(const char *url, cl_bstore_results **out)
{
    cl_err rc = CL_OK;
    cl_bstore_results *r = calloc(1, sizeof(*r));
    CL_ENSURE(r, CL_E_CORE_NOMEM);
    if (cl_bstore_scheme(url, "dynamodb://"))
        CL_GUARD(cl_bstore_ddb_open(url, &r->ddb));
    else if (cl_bstore_scheme(url, "sqlite:"))
        CL_GUARD(cl_bstore_db_open(url, cl_bstore_results_schema, &r->db));
    else
        CL_FAIL(CL_E_STORE_URL, "results: expected sqlite:PATH or dynamodb://TABLE[?endpoint=URL]");
    *out = r;
    r = NULL;
out:
    free(r);
    return rc;
}

void cl_bstore_results_close(cl_bstore_results *r)
{
    if (!r)
        return;
    cl_bstore_ddb_close(r->ddb);
    sqlite3_close(r->db);
    free(r);
}

cl_err cl_bstore_results_put(cl_bstore_results *r, const struct cl_bstore_put *p, bool *stored)
{
    cl_err rc = CL_OK;
    int changes = 0;
    int64_t now = cl_bstore_now_ms();
    if (r->ddb)
        return cl_bstore_ddb_put(r->ddb, p, stored);
    CL_ENSURE_D(cl_bstore_name_valid(p->job_id) && cl_bstore_name_valid(p->chain), CL_E_STORE_URL, "job id or chain");
    CL_GUARD(cl_bstore_begin(r->db));
    struct cl_bstore_arg a1[] = {CL_BT(p->chain), CL_BB(p->attestation, p->attestation_len)};
    rc = cl_bstore_exec(r->db, "INSERT OR IGNORE INTO attestations(chain, doc) VALUES(?,?)", a1, 2, NULL);
    if (rc == CL_OK) {
        struct cl_bstore_arg a2[] = {CL_BT(p->chain), CL_BI((int64_t)p->seq), CL_BT(p->job_id),
                                     CL_BB(p->receipt, p->receipt_len)};
        rc = cl_bstore_exec(r->db, "INSERT INTO receipts(chain, seq, job_id, receipt, at) VALUES(?,?,?,?,strftime('%s','now'))",
                            a2, 4, NULL);
    }
    if (rc == CL_OK) {
        struct cl_bstore_arg a3[] = {CL_BT(p->job_id), CL_BT(p->ok ? "ok" : "error"), CL_BB(p->result, p->result_len),
                                     CL_BI(now)};
        /* The conditional write: a redelivered job's second answer is not stored. */
        rc = cl_bstore_exec(r->db,
                            "INSERT INTO results(job_id, status, result, receipt_id, at) "
                            "VALUES(?1, ?2, ?3, last_insert_rowid(), ?4) ON CONFLICT(job_id) DO NOTHING",
                            a3, 4, &changes);
    }
    rc = cl_bstore_commit(r->db, rc);
    if (rc == CL_OK)
        *stored = changes == 1;
out:
    return rc;
}

cl_err cl_bstore_results_put_receipt(cl_bstore_results *r, const char *chain, uint64_t seq, const char *id,
                                     const uint8_t *receipt, size_t rn, const uint8_t *att, size_t an)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(!r->ddb, CL_E_STORE_URL, "interactive receipts go to a sqlite: store (dynamodb:// is not supported yet)");
    CL_ENSURE_D(cl_bstore_name_valid(id) && cl_bstore_name_valid(chain) && rn && an, CL_E_STORE_URL,
                "request id, chain or empty receipt");
    CL_GUARD(cl_bstore_begin(r->db));
    struct cl_bstore_arg a1[] = {CL_BT(chain), CL_BB(att, an)};
    rc = cl_bstore_exec(r->db, "INSERT OR IGNORE INTO attestations(chain, doc) VALUES(?,?)", a1, 2, NULL);
    if (rc == CL_OK) {
        struct cl_bstore_arg a2[] = {CL_BT(chain), CL_BI((int64_t)seq), CL_BT(id), CL_BB(receipt, rn)};
        rc = cl_bstore_exec(r->db, "INSERT INTO receipts(chain, seq, job_id, receipt, at) VALUES(?,?,?,?,strftime('%s','now'))",
                            a2, 4, NULL);
    }
    rc = cl_bstore_commit(r->db, rc);
out:
    return rc;
}

cl_err cl_bstore_results_chain_max(cl_bstore_results *r, const char *chain, uint64_t *max)
{
    struct cl_bstore_arg a[] = {CL_BT(chain)};
    if (r->ddb)
        return cl_err_fail(CL_E_STORE_URL, "interactive receipts go to a sqlite: store (dynamodb:// is not supported yet)");
    return cl_bstore_count(r->db, "SELECT coalesce(max(seq), 0) FROM receipts WHERE chain = ?", a, 1, max);
}

static cl_err cl_bstore_blob(sqlite3_stmt *st, int col, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    uint8_t *dst = NULL;
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    out->len = 0;
    CL_GUARD(cl_buf_extend(out, n, &dst));
    if (n)
        memcpy(dst, sqlite3_column_blob(st, col), n);
out:
    return rc;
}

cl_err cl_bstore_results_get(cl_bstore_results *r, const char *job_id, bool *ok, struct cl_buf *result,
                             struct cl_buf *receipt)
{
    if (r->ddb)
        return cl_bstore_ddb_get(r->ddb, job_id, ok, result, receipt);
    sqlite3_stmt *st = NULL;
    struct cl_bstore_arg a[] = {CL_BT(job_id)};
    cl_err rc = cl_bstore_prep(r->db,
                               "SELECT r.status, r.result, c.receipt FROM results r LEFT JOIN receipts c ON c.id = r.receipt_id "
                               "WHERE r.job_id = ?",
                               a, 1, &st);
    if (rc != CL_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = cl_err_fail(CL_E_STORE_NOT_FOUND, "no result for job %s yet", cl_bstore_name_valid(job_id) ? job_id : "?");
    } else {
        *ok = !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
        rc = cl_bstore_blob(st, 1, result);
        if (rc == CL_OK)
            rc = cl_bstore_blob(st, 2, receipt);
    }
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_bstore_results_attestation(cl_bstore_results *r, const char *chain, struct cl_buf *doc)
{
    if (r->ddb)
        return cl_bstore_ddb_attestation(r->ddb, chain, doc);
    sqlite3_stmt *st = NULL;
    struct cl_bstore_arg a[] = {CL_BT(chain)};
    cl_err rc = cl_bstore_prep(r->db, "SELECT doc FROM attestations WHERE chain = ?", a, 1, &st);
    if (rc != CL_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW)
        rc = cl_err_fail(CL_E_STORE_NOT_FOUND, "no attestation document %.16s...", chain);
    else
        rc = cl_bstore_blob(st, 0, doc);
    sqlite3_finalize(st);
    return rc;
}

cl_err cl_bstore_results_each_receipt(cl_bstore_results *r, cl_bstore_receipt_fn fn, void *ctx)
{
    if (r->ddb)
        return cl_bstore_ddb_each_receipt(r->ddb, fn, ctx);
    sqlite3_stmt *st = NULL;
    cl_err rc = cl_bstore_prep(r->db, "SELECT id, receipt FROM receipts ORDER BY id", NULL, 0, &st);
    if (rc != CL_OK)
        return rc;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (!fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1)))
            break;
    sqlite3_finalize(st);
    return CL_OK;
}

cl_err cl_bstore_results_each_result(cl_bstore_results *r, cl_bstore_result_fn fn, void *ctx)
{
    if (r->ddb)
        return cl_bstore_ddb_each_result(r->ddb, fn, ctx);
    sqlite3_stmt *st = NULL;
    cl_err rc = cl_bstore_prep(r->db,
                               "SELECT r.job_id, r.result, c.receipt FROM results r LEFT JOIN receipts c ON c.id = r.receipt_id "
                               "ORDER BY r.job_id",
                               NULL, 0, &st);
    if (rc != CL_OK)
        return rc;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (!fn(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_blob(st, 1),
                (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2)))
            break;
    sqlite3_finalize(st);
    return CL_OK;
}

cl_err cl_bstore_results_count(cl_bstore_results *r, uint64_t *results, uint64_t *receipts)
{
    cl_err rc = CL_OK;
    if (r->ddb)
        return cl_bstore_ddb_count(r->ddb, results, receipts);
    CL_GUARD(cl_bstore_count(r->db, "SELECT count(*) FROM results", NULL, 0, results));
    CL_GUARD(cl_bstore_count(r->db, "SELECT count(*) FROM receipts", NULL, 0, receipts));
out:
    return rc;
}
