/* Parallel chunk encryption and decryption. Decryption overlaps reading
 * (one reader: the calling thread) with authentication and decryption by a
 * pool of workers, each with its own AEAD context. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/file.h"
#include "cloister/secmem.h"
#include "seal_internal.h"

#define CL_SEAL_MAX_THREADS 64

struct cl_seal_run {
    const struct cl_seal_header *h;
    struct cl_seal_keys *k;
    const uint8_t *src; /* encrypt: plaintext */
    uint8_t *dst;       /* encrypt: chunk area; decrypt: plaintext (ciphertext read in place) */
    uint8_t *tags;      /* decrypt: one tag per chunk */
    const uint8_t *map; /* decrypt from a mapped file: chunk area (ciphertext || tag each) */
    bool encrypt;
    atomic_uint_fast64_t next;
    atomic_uint_fast64_t done_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t n_read;   /* decrypt: chunks fully read (under mu) */
    bool read_closed;  /* decrypt: reader stopped (under mu) */
    atomic_bool failed;
    atomic_uint workers_done;
    uint64_t fail_index; /* lowest failing chunk (under mu) */
    cl_err fail_rc;
    char fail_detail[256];
    /* A read failure (truncation, trailing data, I/O) lets workers finish the
     * chunks already read: a bad chunk before the cut is the better report. */
    cl_err read_rc;
    char read_detail[256];
    /* decrypt: the key may arrive late (cl_seal_decrypt_stream_keyed) */
    cl_seal_key_wait_fn key_wait;
    void *key_arg;
    bool key_taken, key_ready; /* under mu */
    /* decrypt with hashing: chunks authenticated so far (one flag each), and
     * the hasher, which digests them in order as they complete */
    atomic_uchar *chunk_done;
    bool hash_waiting; /* under mu: the hasher sleeps on cv */
    bool workers_finished; /* under mu: no chunk will complete any more */
};

static uint64_t cl_seal_chunk_len(const struct cl_seal_header *h, uint64_t i)
{
    uint64_t off = i * h->chunk_size;
    uint64_t left = h->plaintext_size - off;
    return left < h->chunk_size ? left : h->chunk_size;
}

/* Keeps the failure with the lowest chunk index: that is the one to report. */
static void cl_seal_record_failure(struct cl_seal_run *r, uint64_t idx, cl_err rc)
{
    pthread_mutex_lock(&r->mu);
    if (!atomic_load(&r->failed) || idx < r->fail_index) {
        r->fail_index = idx;
        r->fail_rc = rc;
        snprintf(r->fail_detail, sizeof(r->fail_detail), "%s", cl_err_detail());
    }
    atomic_store(&r->failed, true);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static bool cl_seal_wait_readable(struct cl_seal_run *r, uint64_t idx)
{
    pthread_mutex_lock(&r->mu);
    while (r->n_read <= idx && !r->read_closed && !atomic_load(&r->failed))
        pthread_cond_wait(&r->cv, &r->mu);
    bool ok = r->n_read > idx;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static cl_err cl_seal_do_chunk(struct cl_seal_run *r, cl_aead *a, uint64_t i)
{
    const struct cl_seal_header *h = r->h;
    uint64_t len = cl_seal_chunk_len(h, i), off = i * h->chunk_size;
    int last = i + 1 == h->n_chunks;
    uint8_t nonce[12];
    cl_seal_chunk_nonce(r->k, i, last, nonce);
    if (r->encrypt) {
        uint8_t *out = r->dst + i * ((uint64_t)h->chunk_size + CL_SEAL_TAG_LEN);
        return cl_aead_seal(a, nonce, h->header_hash, 32, r->src + off, len, out, out + len);
    }
    const uint8_t *ct = r->map ? r->map + i * ((uint64_t)h->chunk_size + CL_SEAL_TAG_LEN) : r->dst + off;
    const uint8_t *tag = r->map ? ct + len : r->tags + i * CL_SEAL_TAG_LEN;
    cl_err rc = cl_aead_open(a, nonce, h->header_hash, 32, ct, len, tag, r->dst + off);
    if (rc == CL_E_CRYPTO_AUTH)
        rc = cl_err_fail(CL_E_SEAL_CHUNK_AUTH,
                         "chunk %llu of %llu (corrupted, reordered, duplicated, or from another file)",
                         (unsigned long long)i, (unsigned long long)h->n_chunks);
    return rc;
}

/* Tells the hasher (if any) that chunk i holds authenticated plaintext. */
static void cl_seal_chunk_complete(struct cl_seal_run *r, uint64_t i)
{
    if (!r->chunk_done)
        return;
    atomic_store(&r->chunk_done[i], 1);
    pthread_mutex_lock(&r->mu);
    if (r->hash_waiting)
        pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* The first worker to get here fetches the key; the others wait for it. */
static cl_err cl_seal_run_keys(struct cl_seal_run *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->key_ready || !r->key_wait) {
        pthread_mutex_unlock(&r->mu);
        return CL_OK;
    }
    if (r->key_taken) {
        while (!r->key_ready && !atomic_load(&r->failed))
            pthread_cond_wait(&r->cv, &r->mu);
        bool ok = r->key_ready;
        pthread_mutex_unlock(&r->mu);
        return ok ? CL_OK : CL_E_CORE_STATE;
    }
    r->key_taken = true;
    pthread_mutex_unlock(&r->mu);
    void *mem = NULL;
    cl_err rc = cl_secmem_alloc(CL_SEAL_KEY_LEN, &mem);
    if (rc == CL_OK)
        rc = r->key_wait(r->key_arg, mem);
    if (rc == CL_OK)
        rc = cl_seal_keys_derive(mem, r->h->salt, &r->k);
    cl_secmem_free(mem);
    if (rc != CL_OK) {
        cl_seal_record_failure(r, 0, rc);
        return rc;
    }
    pthread_mutex_lock(&r->mu);
    r->key_ready = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return CL_OK;
}

static void *cl_seal_worker(void *arg)
{
    struct cl_seal_run *r = arg;
    cl_aead *a = NULL;
    cl_err rc = cl_seal_run_keys(r);
    if (rc != CL_OK) {
        atomic_fetch_add(&r->workers_done, 1);
        return NULL;
    }
    rc = cl_aead_new(CL_AEAD_AES256GCM, r->k->chunk, 32, &a);
    if (rc != CL_OK) {
        cl_seal_record_failure(r, 0, rc);
        atomic_fetch_add(&r->workers_done, 1);
        return NULL;
    }
    for (;;) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->h->n_chunks || atomic_load(&r->failed))
            break;
        if (!r->encrypt && !cl_seal_wait_readable(r, i))
            break;
        rc = cl_seal_do_chunk(r, a, i);
        if (rc != CL_OK) {
            cl_seal_record_failure(r, i, rc);
            break;
        }
        cl_seal_chunk_complete(r, i);
        atomic_fetch_add(&r->done_bytes, cl_seal_chunk_len(r->h, i));
    }
    cl_aead_free(a);
    atomic_fetch_add(&r->workers_done, 1);
    return NULL;
}

static cl_err cl_seal_run_init(struct cl_seal_run *r, const struct cl_seal_header *h, const uint8_t *dk)
{
    memset(r, 0, sizeof(*r));
    r->h = h;
    atomic_init(&r->next, 0);
    atomic_init(&r->done_bytes, 0);
    atomic_init(&r->failed, false);
    atomic_init(&r->workers_done, 0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return dk ? cl_seal_keys_derive(dk, h->salt, &r->k) : CL_OK;
}

static void cl_seal_run_destroy(struct cl_seal_run *r)
{
    cl_seal_keys_free(r->k);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static cl_err cl_seal_start(struct cl_seal_run *r, unsigned threads, pthread_t *tids, unsigned *started)
{
    if (threads == 0)
        threads = 1;
    if (threads > CL_SEAL_MAX_THREADS)
        threads = CL_SEAL_MAX_THREADS;
    for (*started = 0; *started < threads; (*started)++)
        if (pthread_create(&tids[*started], NULL, cl_seal_worker, r) != 0)
            return *started ? CL_OK : cl_err_fail(CL_E_CORE_THREAD, "seal worker");
    return CL_OK;
}

static cl_err cl_seal_finish(struct cl_seal_run *r, pthread_t *tids, unsigned started)
{
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (atomic_load(&r->failed)) {
        cl_err_set_detail("%s", r->fail_detail);
        return r->fail_rc;
    }
    return CL_OK;
}

cl_err cl_seal_encrypt_chunks(const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t *pt,
                              uint8_t *out, unsigned threads, cl_seal_progress_fn progress, void *arg)
{
    struct cl_seal_run r;
    pthread_t tids[CL_SEAL_MAX_THREADS];
    unsigned started = 0;
    cl_err rc = cl_seal_run_init(&r, h, dk);
    if (rc == CL_OK) {
        r.encrypt = true;
        r.src = pt;
        r.dst = out;
        rc = cl_seal_start(&r, threads, tids, &started);
        /* The caller's thread only reports progress while workers run. */
        while (rc == CL_OK && progress && atomic_load(&r.workers_done) < started) {
            progress(arg, atomic_load(&r.done_bytes));
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        cl_err frc = cl_seal_finish(&r, tids, started);
        if (rc == CL_OK)
            rc = frc;
        if (rc == CL_OK && progress)
            progress(arg, h->plaintext_size);
    }
    cl_seal_run_destroy(&r);
    return rc;
}

/* The plaintext digest is computed while the chunks are decrypted: one
 * thread hashes chunk after chunk, in order, as soon as each is
 * authenticated, so SHA-256 (sequential by nature) runs on a core of its own
 * beside the decryption instead of after it. */
struct cl_seal_hasher {
    struct cl_seal_run *r;
    pthread_t tid;
    bool started;
    cl_err rc;
    uint8_t digest[32];
};

static void *cl_seal_hash_main(void *arg)
{
    struct cl_seal_hasher *hs = arg;
    struct cl_seal_run *r = hs->r;
    const struct cl_seal_header *h = r->h;
    cl_hash *ctx = NULL;
    cl_err rc = cl_hash_new(CL_HASH_SHA256, &ctx);
    for (uint64_t i = 0; rc == CL_OK && i < h->n_chunks; i++) {
        if (!atomic_load(&r->chunk_done[i])) {
            pthread_mutex_lock(&r->mu);
            r->hash_waiting = true;
            while (!atomic_load(&r->chunk_done[i]) && !atomic_load(&r->failed) && !r->workers_finished)
                pthread_cond_wait(&r->cv, &r->mu);
            r->hash_waiting = false;
            pthread_mutex_unlock(&r->mu);
            if (!atomic_load(&r->chunk_done[i])) {
                rc = CL_E_CORE_STATE; /* decryption failed; its error is the one reported */
                break;
            }
        }
        rc = cl_hash_update(ctx, r->dst + i * h->chunk_size, cl_seal_chunk_len(h, i));
    }
    if (rc == CL_OK)
        rc = cl_hash_final(ctx, hs->digest);
    cl_hash_free(ctx);
    hs->rc = rc;
    return NULL;
}

static cl_err cl_seal_hasher_start(struct cl_seal_run *r, struct cl_seal_hasher *hs)
{
    memset(hs, 0, sizeof(*hs));
    hs->r = r;
    if (r->h->n_chunks == 0) /* nothing to wait for: hash the empty plaintext */
        return cl_sha256("", 0, hs->digest);
    r->chunk_done = calloc((size_t)r->h->n_chunks, sizeof(*r->chunk_done));
    if (!r->chunk_done)
        return CL_E_CORE_NOMEM;
    if (pthread_create(&hs->tid, NULL, cl_seal_hash_main, hs) != 0)
        return cl_err_fail(CL_E_CORE_THREAD, "plaintext hasher");
    hs->started = true;
    return CL_OK;
}

/* Called once no worker runs any more: lets a waiting hasher go. */
static cl_err cl_seal_hasher_join(struct cl_seal_run *r, struct cl_seal_hasher *hs)
{
    if (!hs->started)
        return hs->rc;
    pthread_mutex_lock(&r->mu);
    r->workers_finished = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(hs->tid, NULL);
    hs->started = false;
    return hs->rc;
}

/* Reads chunk i's ciphertext into place and its tag aside. */
static cl_err cl_seal_read_chunk(int fd, struct cl_seal_run *r, uint64_t i)
{
    const struct cl_seal_header *h = r->h;
    uint64_t len = cl_seal_chunk_len(h, i);
    size_t got = 0, got_tag = 0;
    cl_err rc = cl_read_full(fd, r->dst + i * h->chunk_size, len, &got);
    if (rc == CL_OK)
        rc = cl_read_full(fd, r->tags + i * CL_SEAL_TAG_LEN, CL_SEAL_TAG_LEN, &got_tag);
    if (rc == CL_E_CORE_EOF)
        return cl_err_fail(CL_E_SEAL_TRUNCATED, "stream ended %s chunk %llu of %llu",
                           got + got_tag == 0 ? "before" : "inside", (unsigned long long)i,
                           (unsigned long long)h->n_chunks);
    return rc;
}

/* With one thread the reader decrypts each chunk right after reading it,
 * while it is still in cache. Failures are recorded like a worker's. */
static void cl_seal_inline(struct cl_seal_run *r, cl_aead **a, uint64_t i)
{
    cl_err rc = CL_OK;
    if (!*a) {
        rc = cl_seal_run_keys(r);
        if (rc == CL_OK)
            rc = cl_aead_new(CL_AEAD_AES256GCM, r->k->chunk, 32, a);
        if (rc != CL_OK) {
            if (!atomic_load(&r->failed))
                cl_seal_record_failure(r, 0, rc);
            return;
        }
    }
    rc = cl_seal_do_chunk(r, *a, i);
    if (rc != CL_OK)
        cl_seal_record_failure(r, i, rc);
    else
        cl_seal_chunk_complete(r, i);
}

static cl_err cl_seal_reader(int fd, struct cl_seal_run *r, bool inline_decrypt, cl_seal_progress_fn progress,
                             void *arg)
{
    const struct cl_seal_header *h = r->h;
    uint64_t bytes = 0;
    cl_aead *a = NULL;
    cl_err rc = CL_OK;
    for (uint64_t i = 0; i < h->n_chunks; i++) {
        if (atomic_load(&r->failed))
            goto done; /* a chunk already failed; its error is reported */
        rc = cl_seal_read_chunk(fd, r, i);
        if (rc != CL_OK)
            goto done;
        if (inline_decrypt)
            cl_seal_inline(r, &a, i);
        pthread_mutex_lock(&r->mu);
        r->n_read = i + 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        bytes += cl_seal_chunk_len(h, i) + CL_SEAL_TAG_LEN;
        if (progress)
            progress(arg, bytes);
    }
    uint8_t extra;
    size_t got = 0;
    rc = cl_read_full(fd, &extra, 1, &got);
    if (rc == CL_OK)
        rc = cl_err_fail(CL_E_SEAL_TRAILING, "after chunk %llu", (unsigned long long)(h->n_chunks - 1));
    else if (rc == CL_E_CORE_EOF)
        rc = CL_OK;
done:
    cl_aead_free(a);
    return rc;
}

/* Maps the chunk area when fd is a regular file whose remaining size is
 * exactly what the header announces; anything else (sockets, truncated or
 * over-long files) takes the streaming path, which names the exact fault. */
static bool cl_seal_map_source(int fd, const struct cl_seal_header *h, struct cl_seal_run *r, void **map, size_t *len)
{
    struct stat st;
    uint64_t total;
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        cl_seal_sealed_size(0, h->plaintext_size, h->chunk_size, &total) != CL_OK ||
        (uint64_t)st.st_size != (uint64_t)pos + total || (uint64_t)st.st_size > SIZE_MAX)
        return false;
    /* populated up front: one pass over the page tables instead of a fault per page */
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED)
        return false;
    (void)madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
    if (lseek(fd, 0, SEEK_END) < 0) {
        munmap(m, (size_t)st.st_size);
        return false;
    }
    *map = m;
    *len = (size_t)st.st_size;
    r->map = (const uint8_t *)m + pos;
    return true;
}

cl_err cl_seal_decrypt_stream_keyed(int fd, const struct cl_seal_header *h, cl_seal_key_wait_fn key_wait, void *key_arg,
                                    uint8_t *dst, unsigned threads, unsigned flags, cl_seal_progress_fn progress,
                                    void *arg, uint8_t digest_out[32])
{
    struct cl_seal_run r;
    struct cl_seal_hasher hs;
    pthread_t tids[CL_SEAL_MAX_THREADS];
    unsigned started = 0;
    size_t ntags, map_len = 0;
    void *map = NULL;
    bool hashing = digest_out || (flags & CL_SEAL_OPEN_VERIFY_DIGEST);
    memset(&hs, 0, sizeof(hs));
    cl_err rc = cl_seal_run_init(&r, h, NULL);
    if (rc != CL_OK)
        goto out;
    if (hashing && (rc = cl_seal_hasher_start(&r, &hs)) != CL_OK)
        goto out;
    r.key_wait = key_wait;
    r.key_arg = key_arg;
    rc = cl_size_mul((size_t)h->n_chunks, CL_SEAL_TAG_LEN, &ntags);
    if (rc != CL_OK || !(r.tags = malloc(ntags))) {
        rc = rc != CL_OK ? rc : CL_E_CORE_NOMEM;
        goto out;
    }
    r.dst = dst;
    if (cl_seal_map_source(fd, h, &r, &map, &map_len)) {
        /* A regular file of exactly the right size: every thread decrypts
         * straight from the page cache into dst, no copy in between. */
        r.n_read = h->n_chunks;
        r.read_closed = true;
        rc = threads > 1 ? cl_seal_start(&r, threads - 1, tids, &started) : CL_OK;
        if (rc == CL_OK)
            (void)cl_seal_worker(&r);
        goto finish;
    }
    /* threads counts the reader: 1 reads and decrypts in turn, N adds N-1
     * decryption workers (more would only compete with it for cores). */
    bool inline_decrypt = threads <= 1;
    if (!inline_decrypt)
        rc = cl_seal_start(&r, threads - 1, tids, &started);
    if (rc == CL_OK) {
        r.read_rc = cl_seal_reader(fd, &r, inline_decrypt, progress, arg);
        if (r.read_rc != CL_OK)
            snprintf(r.read_detail, sizeof(r.read_detail), "%s", cl_err_detail());
        else if (!inline_decrypt) {
            /* Everything is read: the reader's core now helps decrypt what
             * the workers have not reached (the same claim counter). */
            pthread_mutex_lock(&r.mu);
            r.read_closed = true;
            pthread_mutex_unlock(&r.mu);
            (void)cl_seal_worker(&r);
        }
    }
    pthread_mutex_lock(&r.mu);
    r.read_closed = true;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
finish:;
    cl_err frc = cl_seal_finish(&r, tids, started);
    cl_err hrc = cl_seal_hasher_join(&r, &hs);
    if (rc == CL_OK)
        rc = frc;
    if (rc == CL_OK && r.read_rc != CL_OK) {
        rc = r.read_rc;
        cl_err_set_detail("%s", r.read_detail);
    }
    if (rc == CL_OK && hashing)
        rc = hrc;
    if (rc == CL_OK && (flags & CL_SEAL_OPEN_VERIFY_DIGEST) && !cl_ct_equal(hs.digest, h->digest, 32))
        rc = cl_err_fail(CL_E_SEAL_DIGEST, "the decrypted plaintext's SHA-256 differs from the header's digest");
    if (rc == CL_OK && digest_out)
        memcpy(digest_out, hs.digest, 32);
out:
    if (hs.started)
        (void)cl_seal_hasher_join(&r, &hs);
    if (map)
        munmap(map, map_len);
    if (rc != CL_OK && dst)
        cl_wipe(dst, h->plaintext_size);
    free(r.tags);
    free(r.chunk_done);
    cl_seal_run_destroy(&r);
    return rc;
}

static cl_err cl_seal_key_given(void *arg, uint8_t dk[CL_SEAL_KEY_LEN])
{
    memcpy(dk, arg, CL_SEAL_KEY_LEN);
    return CL_OK;
}

cl_err cl_seal_decrypt_stream(int fd, const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN], uint8_t *dst,
                              unsigned threads, unsigned flags, cl_seal_progress_fn progress, void *arg)
{
    return cl_seal_decrypt_stream_keyed(fd, h, cl_seal_key_given, (void *)dk, dst, threads, flags, progress, arg, NULL);
}

cl_err cl_seal_read_header(int fd, struct cl_buf *raw, struct cl_seal_header *h)
{
    cl_err rc = CL_OK;
    uint8_t *p;
    uint32_t hl;
    size_t got = 0, start = raw->len;
    CL_GUARD(cl_buf_extend(raw, CL_SEAL_FIXED_LEN, &p));
    rc = cl_read_full(fd, p, CL_SEAL_FIXED_LEN, &got);
    if (rc == CL_E_CORE_EOF) {
        /* A file too short to hold the prefix: say whether it is ours at all. */
        if (got < CL_SEAL_MAGIC_LEN || memcmp(p, CL_SEAL_MAGIC, got < 8 ? got : 8) != 0)
            rc = cl_err_fail(CL_E_SEAL_BAD_MAGIC, "file of %zu bytes", got);
        else
            rc = cl_err_fail(CL_E_SEAL_TRUNCATED, "inside the header prefix");
        goto out;
    }
    CL_GUARD(rc);
    CL_GUARD(cl_seal_header_len(raw->data + start, CL_SEAL_FIXED_LEN, &hl));
    CL_GUARD(cl_buf_extend(raw, hl - CL_SEAL_FIXED_LEN, &p));
    rc = cl_read_full(fd, p, hl - CL_SEAL_FIXED_LEN, &got);
    if (rc == CL_E_CORE_EOF)
        CL_FAIL(CL_E_SEAL_TRUNCATED, "inside the header (%zu of %u bytes)", got + CL_SEAL_FIXED_LEN, hl);
    CL_GUARD(rc);
    CL_GUARD(cl_seal_header_parse(raw->data + start, hl, h));
out:
    if (rc != CL_OK)
        raw->len = start;
    return rc;
}
