/* Sealed-model throughput: raw AES-256-GCM (measured here, same run) beside
 * seal and unseal at 1 and 2 threads. Size: CLOISTER_BENCH_MB (default 1024). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/file.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"

#define CHECK(x) do { cl_err e_ = (x); if (e_ != CL_OK) { fprintf(stderr, "%s failed: %s\n", #x, cl_err_str(e_)); exit(1); } } while (0)

static double gbps(uint64_t bytes, uint64_t us) { return us ? (double)bytes / ((double)us * 1e3) : 0; }

static double raw_gcm(const uint8_t *buf, uint8_t *out, size_t n, int decrypt)
{
    uint8_t key[32] = {7}, nonce[12] = {0}, tag[16];
    cl_aead *a;
    CHECK(cl_aead_new(CL_AEAD_AES256GCM, key, 32, &a));
    const size_t chunk = CL_SEAL_DEFAULT_CHUNK;
    /* tags for the decrypt pass come from a first encrypt pass */
    uint8_t *tags = malloc((n / chunk + 1) * 16);
    for (size_t off = 0, i = 0; off < n; off += chunk, i++) {
        nonce[0] = (uint8_t)i;
        CHECK(cl_aead_seal(a, nonce, NULL, 0, buf + off, n - off < chunk ? n - off : chunk, out + off, tags + i * 16));
    }
    uint64_t t0 = cl_now_us();
    for (size_t off = 0, i = 0; off < n; off += chunk, i++) {
        size_t len = n - off < chunk ? n - off : chunk;
        nonce[0] = (uint8_t)i;
        if (decrypt)
            CHECK(cl_aead_open(a, nonce, NULL, 0, out + off, len, tags + i * 16, out + off));
        else
            CHECK(cl_aead_seal(a, nonce, NULL, 0, buf + off, len, out + off, tag));
    }
    uint64_t dt = cl_now_us() - t0;
    free(tags);
    cl_aead_free(a);
    return gbps(n, dt);
}

struct feeder { int fd; const uint8_t *p; size_t n; };
static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    if (cl_write_full(f->fd, f->p, f->n) != CL_OK)
        fprintf(stderr, "feeder: write failed\n");
    close(f->fd);
    return NULL;
}

/* The enclave's case: the sealed bytes arrive on a stream socket. */
static double unseal_socket(const struct cl_seal_header *h, const uint8_t *dk, const uint8_t *chunks, size_t len,
                            void *dst, unsigned threads, bool digest)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        exit(1);
    int big = 8 << 20;
    (void)setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct feeder f = {sv[1], chunks, len};
    pthread_t t;
    uint64_t t0 = cl_now_us();
    pthread_create(&t, NULL, feeder_main, &f);
    if (digest) /* as the enclave boots: its own SHA-256 of the plaintext, hashed beside decryption */
        CHECK(cl_seal_decrypt_stream(sv[0], h, dk, dst, threads, CL_SEAL_OPEN_VERIFY_DIGEST, NULL, NULL));
    else
        CHECK(cl_seal_decrypt_stream(sv[0], h, dk, dst, threads, 0, NULL, NULL));
    uint64_t dt = cl_now_us() - t0;
    pthread_join(t, NULL);
    close(sv[0]);
    return gbps(h->plaintext_size, dt);
}

int main(void)
{
    const char *mb_env = getenv("CLOISTER_BENCH_MB");
    size_t mb = mb_env ? strtoul(mb_env, NULL, 10) : 1024;
    size_t n = mb << 20;
    cl_log_set_level(CL_LOG_ERROR);
    uint8_t *pt = malloc(n), *tmp = malloc(n + 16);
    for (size_t i = 0; i < n; i++)
        pt[i] = (uint8_t)(i * 2654435761u >> 13);
    double raw_enc = raw_gcm(pt, tmp, n, 0);
    double raw_dec = raw_gcm(pt, tmp, n, 1);
    free(tmp);

    uint8_t dk[32], salt[32], digest[32], wrapped[60] = {1};
    CHECK(cl_random_bytes(dk, 32));
    CHECK(cl_random_bytes(salt, 32));
    uint64_t t0 = cl_now_us();
    CHECK(cl_sha256(pt, n, digest));
    uint64_t sha_us = cl_now_us() - t0;
    struct cl_seal_params p = {.name = "bench", .arch = "llama", .provider = CL_SEAL_PROVIDER_KEYFILE,
                               .key_id = "file:0000000000000000", .wrapped = wrapped, .wrapped_len = sizeof(wrapped)};
    struct cl_buf hdr;
    cl_buf_init(&hdr, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CHECK(cl_seal_header_build(&p, dk, salt, digest, n, &hdr));
    struct cl_seal_header h;
    CHECK(cl_seal_header_parse(hdr.data, hdr.len, &h));
    uint64_t total;
    CHECK(cl_seal_sealed_size(h.header_len, n, h.chunk_size, &total));
    int fd = memfd_create("sealed", 0);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0)
        return 1;
    uint8_t *sealed = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memcpy(sealed, hdr.data, hdr.len);

    double seal_gbps[3] = {0}, unseal_gbps[3] = {0}, unseal_dig[3] = {0};
    void *dst;
    CHECK(cl_secmem_alloc(n, &dst));
    /* Fault every page in first so the first timed run does not pay for it. */
    memset(dst, 0, n);
    memset(sealed + hdr.len, 0, total - hdr.len);
    for (unsigned t = 1; t <= 2; t++) {
        t0 = cl_now_us();
        CHECK(cl_seal_encrypt_chunks(&h, dk, pt, sealed + hdr.len, t, NULL, NULL));
        seal_gbps[t] = gbps(n, cl_now_us() - t0 + sha_us);
    }
    for (unsigned t = 1; t <= 2; t++) {
        for (int dig = 0; dig < 2; dig++) {
            if (lseek(fd, (off_t)hdr.len, SEEK_SET) < 0)
                return 1;
            t0 = cl_now_us();
            CHECK(cl_seal_decrypt_stream(fd, &h, dk, dst, t, dig ? CL_SEAL_OPEN_VERIFY_DIGEST : 0, NULL, NULL));
            (dig ? unseal_dig : unseal_gbps)[t] = gbps(n, cl_now_us() - t0);
        }
    }
    if (memcmp(dst, pt, n) != 0) {
        fprintf(stderr, "unsealed bytes differ\n");
        return 1;
    }
    double unseal_sock[3] = {0}, unseal_sock_dig[3] = {0};
    for (unsigned t = 1; t <= 2; t++) {
        unseal_sock[t] = unseal_socket(&h, dk, sealed + hdr.len, total - hdr.len, dst, t, false);
        unseal_sock_dig[t] = unseal_socket(&h, dk, sealed + hdr.len, total - hdr.len, dst, t, true);
    }
    if (memcmp(dst, pt, n) != 0) {
        fprintf(stderr, "unsealed bytes differ (socket)\n");
        return 1;
    }
    printf("| %zu MiB, chunk %u KiB | 1 thread | 2 threads |\n|---|---:|---:|\n", mb, h.chunk_size >> 10);
    printf("| raw AES-256-GCM encrypt (one context) | %.2f GB/s | |\n", raw_enc);
    printf("| raw AES-256-GCM decrypt (one context) | %.2f GB/s | |\n", raw_dec);
    printf("| SHA-256 of plaintext | %.2f GB/s | |\n", gbps(n, sha_us));
    printf("| seal (digest + encrypt) | %.2f GB/s | %.2f GB/s |\n", seal_gbps[1], seal_gbps[2]);
    printf("| unseal from a file (mapped; verify + decrypt) | %.2f GB/s | %.2f GB/s |\n", unseal_gbps[1], unseal_gbps[2]);
    printf("| unseal from a socket (read + verify + decrypt, as the enclave) | %.2f GB/s | %.2f GB/s |\n",
           unseal_sock[1], unseal_sock[2]);
    printf("| unseal from a socket + the enclave's own plaintext SHA-256 (hashed beside decryption) | %.2f GB/s | "
           "%.2f GB/s |\n", unseal_sock_dig[1], unseal_sock_dig[2]);
    printf("| unseal from a file + plaintext digest check | %.2f GB/s | %.2f GB/s |\n", unseal_dig[1], unseal_dig[2]);
    printf("\nunseal from a file / raw decrypt, per thread: %.2f (1 thread), %.2f (2 threads)\n",
           unseal_gbps[1] / raw_dec, unseal_gbps[2] / 2 / raw_dec);
    printf("threads count the reading thread; a socket costs one more copy of every byte\n");
    cl_secmem_free(dst);
    munmap(sealed, total);
    close(fd);
    cl_buf_free(&hdr);
    free(pt);
    return 0;
}
