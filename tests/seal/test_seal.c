#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/file.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"

#define CS 4096u

struct sealed {
    uint8_t *data;
    size_t len;
    uint8_t *pt;
    size_t ptlen;
    uint32_t header_len;
};

static uint8_t test_kek[32];

static void seal_make(size_t ptlen, struct sealed *s, const char *name)
{
    static const struct cl_seal_ctx_pair ctx[2] = {{"model", "tiny"}, {"digest", "abc"}};
    uint8_t dk[32], salt[32], wrapped[128];
    size_t wl = 0;
    char keyid[32];
    char dir[] = "/tmp/cl_seal_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/m.sealed", dir);
    s->pt = malloc(ptlen ? ptlen : 1);
    for (size_t i = 0; i < ptlen; i++)
        s->pt[i] = (uint8_t)(i * 131 + (i >> 8));
    s->ptlen = ptlen;
    assert_ok(cl_random_bytes(dk, 32));
    assert_ok(cl_random_bytes(salt, 32));
    assert_ok(cl_seal_keyfile_wrap(test_kek, dk, ctx, 2, salt, wrapped, &wl));
    assert_ok(cl_seal_keyfile_id(test_kek, keyid));
    struct cl_seal_params p = {.chunk_size = CS, .name = name, .arch = "llama", .tensor_count = 3, .file_type = 1,
                               .n_ctx = 2, .ctx = ctx, .provider = CL_SEAL_PROVIDER_KEYFILE, .key_id = keyid,
                               .wrapped = wrapped, .wrapped_len = wl};
    assert_ok(cl_seal_write_file(path, s->pt, ptlen, NULL, &p, dk, salt, 2, NULL, NULL));
    struct cl_buf b;
    cl_buf_init(&b, 1 << 26, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 1 << 26, &b));
    s->data = b.data;
    s->len = b.len;
    assert_ok(cl_seal_header_len(s->data, s->len, &s->header_len));
    uint64_t want = 0;
    assert_ok(cl_seal_sealed_size(s->header_len, ptlen, CS, &want));
    assert_int_equal(want, s->len);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* no temp file left */
}

static void seal_free(struct sealed *s)
{
    free(s->data);
    free(s->pt);
}

static int mem_fd(const uint8_t *p, size_t n)
{
    int fd = memfd_create("sealed", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_ok(cl_write_full(fd, p, n));
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* Opens bytes as a sealed stream; on success checks the plaintext. */
static cl_err open_bytes(const uint8_t *p, size_t n, unsigned threads, const struct sealed *want, unsigned flags)
{
    struct cl_seal_header h;
    uint8_t *pt = NULL;
    int fd = mem_fd(p, n);
    cl_err rc = cl_seal_open_fd(fd, cl_seal_keyfile_resolver, test_kek, threads, flags, NULL, NULL, &h, &pt);
    close(fd);
    if (rc == CL_OK) {
        assert_int_equal(h.plaintext_size, want->ptlen);
        if (want->ptlen)
            assert_memory_equal(pt, want->pt, want->ptlen);
        assert_string_equal(h.arch, "llama");
        cl_secmem_free(pt);
    } else {
        assert_null(pt);
    }
    return rc;
}

static void test_round_trip_sizes(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, CS - 1, CS, CS + 1, 5 * CS + 7, 16 * CS};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct sealed s;
        seal_make(sizes[i], &s, "round-trip");
        for (unsigned t = 1; t <= 4; t++)
            assert_ok(open_bytes(s.data, s.len, t, &s, CL_SEAL_OPEN_VERIFY_DIGEST));
        seal_free(&s);
    }
}

static void test_header_fields(void **state)
{
    (void)state;
    struct sealed s;
    struct cl_seal_header h;
    seal_make(3 * CS, &s, "my-model");
    assert_ok(cl_seal_header_parse(s.data, s.len, &h));
    assert_string_equal(h.name, "my-model");
    assert_int_equal(h.n_chunks, 3);
    assert_int_equal(h.n_ctx, 2);
    assert_string_equal(h.ctx[0].key, "digest"); /* sorted */
    assert_string_equal(h.ctx[1].key, "model");
    assert_int_equal(h.provider, CL_SEAL_PROVIDER_KEYFILE);
    uint8_t d[32];
    assert_ok(cl_sha256(s.pt, s.ptlen, d));
    assert_memory_equal(d, h.digest, 32);
    seal_free(&s);
}

/* Every single-byte flip in the header is refused, each with an error that
 * names a field. */
static void test_tamper_header_every_byte(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(2 * CS + 5, &s, "tamper");
    unsigned counts[8] = {0};
    for (uint32_t i = 0; i < s.header_len; i++) {
        s.data[i] ^= 0x01;
        cl_err_clear_detail();
        cl_err rc = open_bytes(s.data, s.len, 2, &s, 0);
        s.data[i] ^= 0x01;
        if (rc == CL_OK)
            fail_msg("flip of header byte %u was accepted", i);
        const char *det = cl_err_detail();
        if (!det[0])
            fail_msg("flip of header byte %u: %s without detail", i, cl_err_name(rc));
        switch (rc) {
        case CL_E_SEAL_BAD_MAGIC: counts[0]++; break;
        case CL_E_SEAL_BAD_VERSION: counts[1]++; break;
        case CL_E_SEAL_BAD_SUITE: counts[2]++; break;
        case CL_E_SEAL_BAD_HEADER: counts[3]++; break;
        case CL_E_SEAL_WRONG_KEY: counts[4]++; break;
        case CL_E_SEAL_UNWRAP: counts[5]++; break;
        case CL_E_SEAL_COMMITMENT: counts[6]++; break;
        case CL_E_SEAL_HEADER_AUTH: counts[7]++; break;
        default: fail_msg("flip of header byte %u: unexpected %s", i, cl_err_name(rc));
        }
    }
    print_message("header flips: magic %u version %u suite %u structure %u key-id %u unwrap %u commitment %u mac %u\n",
                  counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7]);
    assert_int_equal(counts[0], 8);
    assert_true(counts[6] == 32 && counts[7] >= 32);
    assert_ok(open_bytes(s.data, s.len, 2, &s, 0));
    seal_free(&s);
}

static size_t chunk_off(const struct sealed *s, size_t i) { return s->header_len + i * (CS + 16); }

static void expect_chunk_error(const uint8_t *p, size_t n, const struct sealed *s, cl_err code, const char *needle)
{
    for (unsigned t = 1; t <= 3; t += 2) {
        cl_err_clear_detail();
        cl_err rc = open_bytes(p, n, t, s, 0);
        if (rc != code)
            fail_msg("expected %s, got %s (%s)", cl_err_name(code), cl_err_name(rc), cl_err_detail());
        if (needle && !strstr(cl_err_detail(), needle))
            fail_msg("detail '%s' does not mention '%s'", cl_err_detail(), needle);
    }
}

static void test_tamper_chunks(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(4 * CS + 100, &s, "chunks"); /* 5 chunks, last one short */
    char needle[64];
    for (size_t c = 0; c < 5; c++) {
        size_t len = c == 4 ? 100 : CS;
        const size_t where[] = {0, len / 2, len - 1, len, len + 15}; /* ciphertext and tag */
        for (size_t w = 0; w < 5; w++) {
            size_t off = chunk_off(&s, c) + where[w];
            s.data[off] ^= 0x80;
            snprintf(needle, sizeof(needle), "chunk %zu of 5", c);
            expect_chunk_error(s.data, s.len, &s, CL_E_SEAL_CHUNK_AUTH, needle);
            s.data[off] ^= 0x80;
        }
    }
    seal_free(&s);
}

static void test_truncation(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(3 * CS + 10, &s, "trunc"); /* 4 chunks */
    char needle[64];
    for (size_t c = 0; c < 4; c++) {
        snprintf(needle, sizeof(needle), "before chunk %zu of 4", c);
        expect_chunk_error(s.data, chunk_off(&s, c), &s, CL_E_SEAL_TRUNCATED, needle);
        snprintf(needle, sizeof(needle), "inside chunk %zu of 4", c);
        expect_chunk_error(s.data, chunk_off(&s, c) + 5, &s, CL_E_SEAL_TRUNCATED, needle);
        expect_chunk_error(s.data, chunk_off(&s, c) + (c == 3 ? 10 : CS) + 8, &s, CL_E_SEAL_TRUNCATED, needle);
    }
    expect_chunk_error(s.data, s.len - 1, &s, CL_E_SEAL_TRUNCATED, "inside chunk 3 of 4");
    for (size_t cut = 0; cut < s.header_len; cut += 7)
        assert_int_not_equal(open_bytes(s.data, cut, 2, &s, 0), CL_OK);
    /* trailing data */
    uint8_t *longer = malloc(s.len + 1);
    memcpy(longer, s.data, s.len);
    longer[s.len] = 0;
    expect_chunk_error(longer, s.len + 1, &s, CL_E_SEAL_TRAILING, "after chunk 3");
    free(longer);
    seal_free(&s);
}

static void test_reorder_duplicate_drop(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(4 * CS, &s, "reorder"); /* 4 full chunks */
    size_t cl = CS + 16;
    uint8_t *tmp = malloc(s.len + cl);
    /* swap chunks 1 and 2 */
    memcpy(tmp, s.data, s.len);
    memcpy(tmp + chunk_off(&s, 1), s.data + chunk_off(&s, 2), cl);
    memcpy(tmp + chunk_off(&s, 2), s.data + chunk_off(&s, 1), cl);
    expect_chunk_error(tmp, s.len, &s, CL_E_SEAL_CHUNK_AUTH, "chunk 1 of 4");
    /* duplicate chunk 1 in place of chunk 2 (same length) */
    memcpy(tmp, s.data, s.len);
    memcpy(tmp + chunk_off(&s, 2), s.data + chunk_off(&s, 1), cl);
    expect_chunk_error(tmp, s.len, &s, CL_E_SEAL_CHUNK_AUTH, "chunk 2 of 4");
    /* duplicate chunk 1 inserted (file grows) */
    memcpy(tmp, s.data, chunk_off(&s, 2));
    memcpy(tmp + chunk_off(&s, 2), s.data + chunk_off(&s, 1), cl);
    memcpy(tmp + chunk_off(&s, 3), s.data + chunk_off(&s, 2), 2 * cl);
    expect_chunk_error(tmp, s.len + cl, &s, CL_E_SEAL_CHUNK_AUTH, "chunk 2 of 4");
    /* drop chunk 1 */
    memcpy(tmp, s.data, chunk_off(&s, 1));
    memcpy(tmp + chunk_off(&s, 1), s.data + chunk_off(&s, 2), 2 * cl);
    expect_chunk_error(tmp, s.len - cl, &s, CL_E_SEAL_CHUNK_AUTH, "chunk 1 of 4");
    /* drop the last chunk */
    expect_chunk_error(s.data, chunk_off(&s, 3), &s, CL_E_SEAL_TRUNCATED, "before chunk 3 of 4");
    free(tmp);
    seal_free(&s);
}

static void test_header_of_other_file(void **state)
{
    (void)state;
    struct sealed a, b;
    seal_make(2 * CS, &a, "a");
    seal_make(2 * CS, &b, "a");
    assert_int_equal(a.header_len, b.header_len);
    uint8_t *mix = malloc(a.len);
    memcpy(mix, b.data, b.header_len);
    memcpy(mix + a.header_len, a.data + a.header_len, a.len - a.header_len);
    expect_chunk_error(mix, a.len, &a, CL_E_SEAL_CHUNK_AUTH, "chunk 0 of 2");
    /* a single chunk from the other file, at the same index */
    memcpy(mix, a.data, a.len);
    memcpy(mix + chunk_off(&a, 1), b.data + chunk_off(&b, 1), CS + 16);
    expect_chunk_error(mix, a.len, &a, CL_E_SEAL_CHUNK_AUTH, "chunk 1 of 2");
    free(mix);
    seal_free(&a);
    seal_free(&b);
}

static void test_wrong_key(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(CS, &s, "key");
    uint8_t saved[32];
    memcpy(saved, test_kek, 32);
    test_kek[0] ^= 1;
    expect_chunk_error(s.data, s.len, &s, CL_E_SEAL_WRONG_KEY, "sealed for file:");
    memcpy(test_kek, saved, 32);
    seal_free(&s);
}

struct writer { int fd; const uint8_t *p; size_t n; };
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    /* small writes so the reader sees short reads across chunk boundaries */
    for (size_t off = 0; off < w->n; off += 1000) {
        size_t k = w->n - off < 1000 ? w->n - off : 1000;
        if (cl_write_full(w->fd, w->p + off, k) != CL_OK)
            break;
    }
    close(w->fd);
    return NULL;
}

static void test_socket_stream(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(7 * CS + 3, &s, "stream");
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct writer w = {sv[1], s.data, s.len};
    pthread_t t;
    pthread_create(&t, NULL, writer_main, &w);
    struct cl_seal_header h;
    uint8_t *pt = NULL;
    assert_ok(cl_seal_open_fd(sv[0], cl_seal_keyfile_resolver, test_kek, 2, CL_SEAL_OPEN_VERIFY_DIGEST, NULL, NULL,
                              &h, &pt));
    pthread_join(t, NULL);
    close(sv[0]);
    assert_memory_equal(pt, s.pt, s.ptlen);
    cl_secmem_free(pt);
    seal_free(&s);
}

struct late_key { uint8_t dk[32]; cl_err rc; int calls; };
static cl_err late_key_fn(void *arg, uint8_t dk[32])
{
    struct late_key *k = arg;
    k->calls++;
    struct timespec ts = {0, 30 * 1000 * 1000}; /* arrives while chunks are being read */
    nanosleep(&ts, NULL);
    memcpy(dk, k->dk, 32);
    return k->rc;
}

static void test_keyed_stream(void **state)
{
    (void)state;
    struct sealed s;
    seal_make(9 * CS + 1, &s, "keyed");
    for (int fail = 0; fail < 2; fail++)
        for (unsigned t = 1; t <= 3; t++) {
            struct cl_buf raw;
            struct cl_seal_header h;
            struct late_key k = {.rc = fail ? CL_E_KMS_INTERNAL : CL_OK};
            cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
            int fd = mem_fd(s.data, s.len);
            assert_ok(cl_seal_read_header(fd, &raw, &h));
            assert_ok(cl_seal_keyfile_unwrap(test_kek, &h, k.dk));
            uint8_t *dst = malloc(s.ptlen);
            cl_err rc = cl_seal_decrypt_stream_keyed(fd, &h, late_key_fn, &k, dst, t, CL_SEAL_OPEN_VERIFY_DIGEST, NULL,
                                                     NULL, NULL);
            if (fail) {
                assert_err(rc, CL_E_KMS_INTERNAL);
            } else {
                assert_ok(rc);
                assert_memory_equal(dst, s.pt, s.ptlen);
            }
            assert_int_equal(k.calls, 1); /* fetched once, whatever the thread count */
            free(dst);
            close(fd);
            cl_buf_free(&raw);
        }
    seal_free(&s);
}

static void test_keyfile(void **state)
{
    (void)state;
    char dir[] = "/tmp/cl_key_XXXXXX", path[256];
    uint8_t k[32];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/k", dir);
    assert_ok(cl_seal_keyfile_create(path));
    assert_err(cl_seal_keyfile_create(path), CL_E_CORE_EXISTS);
    assert_ok(cl_seal_keyfile_load(path, k));
    chmod(path, 0644);
    assert_err(cl_seal_keyfile_load(path, k), CL_E_CORE_INSECURE_FILE);
    unlink(path);
    assert_ok(cl_file_write_atomic(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 65, 0600, 1));
    assert_ok(cl_seal_keyfile_load(path, k));
    assert_int_equal(k[1], 0x11);
    unlink(path);
    assert_ok(cl_file_write_atomic(path, "short", 5, 0600, 1));
    assert_err(cl_seal_keyfile_load(path, k), CL_E_SEAL_BAD_KEY_FILE);
    unlink(path);
    assert_err(cl_seal_keyfile_load(path, k), CL_E_CORE_NOT_FOUND);
    rmdir(dir);
}

static void test_bad_params(void **state)
{
    (void)state;
    uint8_t dk[32] = {0}, salt[32] = {0}, digest[32] = {0}, w[4] = {1, 2, 3, 4};
    struct cl_buf b;
    cl_buf_init(&b, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    struct cl_seal_params p = {.chunk_size = 100, .name = "x", .arch = "y", .provider = CL_SEAL_PROVIDER_KEYFILE,
                               .key_id = "k", .wrapped = w, .wrapped_len = 4};
    assert_err(cl_seal_header_build(&p, dk, salt, digest, 10, &b), CL_E_CORE_INVALID_ARG);
    p.chunk_size = 0;
    p.name = "bad\nname";
    assert_err(cl_seal_header_build(&p, dk, salt, digest, 10, &b), CL_E_CORE_INVALID_ARG);
    p.name = "ok";
    struct cl_seal_ctx_pair dup[2] = {{"a", "1"}, {"a", "2"}};
    p.ctx = dup;
    p.n_ctx = 2;
    assert_err(cl_seal_header_build(&p, dk, salt, digest, 10, &b), CL_E_CORE_INVALID_ARG);
    p.n_ctx = 0;
    assert_ok(cl_seal_header_build(&p, dk, salt, digest, 10, &b));
    struct cl_seal_header h;
    assert_ok(cl_seal_header_parse(b.data, b.len, &h));
    assert_ok(cl_seal_header_verify(&h, b.data, dk));
    assert_err(cl_seal_header_parse(b.data, b.len - 1, &h), CL_E_SEAL_TRUNCATED);
    cl_buf_free(&b);
}

int main(void)
{
    if (cl_random_bytes(test_kek, sizeof(test_kek)) != CL_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sizes),  cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_tamper_header_every_byte), cmocka_unit_test(test_tamper_chunks),
        cmocka_unit_test(test_truncation),        cmocka_unit_test(test_reorder_duplicate_drop),
        cmocka_unit_test(test_header_of_other_file), cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_socket_stream),     cmocka_unit_test(test_keyed_stream),     cmocka_unit_test(test_keyfile),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
