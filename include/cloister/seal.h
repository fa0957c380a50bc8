/* Sealed model format v1: a chunked streaming AEAD file. Layout and
 * construction are specified in docs/formats/sealed-model.md. */
#ifndef CLOISTER_SEAL_H
#define CLOISTER_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_SEAL_MAGIC "\x89" "CLSEAL\n"
#define CL_SEAL_MAGIC_LEN 8
#define CL_SEAL_VERSION 1
#define CL_SEAL_SUITE_AES256GCM_HKDF_SHA256 1
#define CL_SEAL_KEY_LEN 32
#define CL_SEAL_TAG_LEN 16
#define CL_SEAL_FIXED_LEN 16 /* magic, version, suite, header length */
#define CL_SEAL_DEFAULT_CHUNK ((uint32_t)4 << 20)
#define CL_SEAL_MIN_CHUNK ((uint32_t)4096)
#define CL_SEAL_MAX_CHUNK ((uint32_t)256 << 20)
#define CL_SEAL_MAX_HEADER ((uint32_t)64 << 10)
#define CL_SEAL_MAX_NAME 256
#define CL_SEAL_MAX_ARCH 64
#define CL_SEAL_MAX_KEY_ID 2048
#define CL_SEAL_MAX_WRAPPED 4096
#define CL_SEAL_MAX_CTX 16
#define CL_SEAL_MAX_CTX_KEY 256
#define CL_SEAL_MAX_CTX_VALUE 1024

enum cl_seal_provider {
    CL_SEAL_PROVIDER_NONE = 0,
    CL_SEAL_PROVIDER_KEYFILE, /* data key wrapped with AES-256-GCM under a local key file */
    CL_SEAL_PROVIDER_KMS,     /* data key is a KMS ciphertext blob (cloister-kms or AWS KMS) */
    CL_SEAL_PROVIDER_COUNT
};

struct cl_seal_ctx_pair {
    char key[CL_SEAL_MAX_CTX_KEY + 1];
    char value[CL_SEAL_MAX_CTX_VALUE + 1];
};

/* Everything in the header, all of it public. */
struct cl_seal_header {
    uint16_t version;
    uint16_t suite;
    uint32_t header_len;
    uint32_t chunk_size;
    uint64_t plaintext_size;
    uint64_t n_chunks;
    uint8_t digest[32]; /* SHA-256 of the plaintext model */
    uint8_t salt[32];
    char name[CL_SEAL_MAX_NAME + 1];
    char arch[CL_SEAL_MAX_ARCH + 1];
    uint64_t tensor_count;
    uint32_t file_type;
    size_t n_ctx; /* encryption context, sorted by key, keys unique */
    struct cl_seal_ctx_pair ctx[CL_SEAL_MAX_CTX];
    enum cl_seal_provider provider;
    char key_id[CL_SEAL_MAX_KEY_ID + 1];
    uint8_t wrapped[CL_SEAL_MAX_WRAPPED];
    size_t wrapped_len;
    uint8_t commitment[32];
    uint8_t mac[32];
    uint8_t header_hash[32]; /* SHA-256 of the whole header; bound into every chunk */
};

/* What the sealer chooses. Encryption context pairs need not be sorted. */
struct cl_seal_params {
    uint32_t chunk_size; /* 0 = default */
    const char *name;
    const char *arch;
    uint64_t tensor_count;
    uint32_t file_type;
    size_t n_ctx;
    const struct cl_seal_ctx_pair *ctx;
    enum cl_seal_provider provider;
    const char *key_id;
    const uint8_t *wrapped;
    size_t wrapped_len;
};

typedef void (*cl_seal_progress_fn)(void *arg, uint64_t bytes_done);

/* ---- header ---- */
/* Reads the fixed prefix and returns the full header length (needs 16 bytes). */
CL_MUST_CHECK cl_err cl_seal_header_len(const uint8_t *p, size_t n, uint32_t *len);
/* Parses a complete header (n >= its length) without authenticating it. */
CL_MUST_CHECK cl_err cl_seal_header_parse(const uint8_t *p, size_t n, struct cl_seal_header *h);
/* Checks the key commitment (CL_E_SEAL_WRONG_KEY) then the header MAC (CL_E_SEAL_HEADER_AUTH). */
CL_MUST_CHECK cl_err cl_seal_header_verify(const struct cl_seal_header *h, const uint8_t *raw,
                                           const uint8_t dk[CL_SEAL_KEY_LEN]);
/* Size of the sealed file for a plaintext of n bytes. */
CL_MUST_CHECK cl_err cl_seal_sealed_size(uint32_t header_len, uint64_t n, uint32_t chunk_size, uint64_t *out);
/* Canonical encryption-context bytes (what key wrapping binds). */
CL_MUST_CHECK cl_err cl_seal_ctx_encode(const struct cl_seal_ctx_pair *ctx, size_t n, struct cl_buf *out);

/* ---- sealing ---- */
/* Builds the authenticated header for plaintext pt (digest computed here). */
CL_MUST_CHECK cl_err cl_seal_header_build(const struct cl_seal_params *p, const uint8_t dk[CL_SEAL_KEY_LEN],
                                          const uint8_t salt[32], const uint8_t digest[32], uint64_t pt_size,
                                          struct cl_buf *out);
/* Encrypts pt into out (the chunk area that follows the header; exactly
 * sealed_size - header_len bytes) with `threads` workers. */
CL_MUST_CHECK cl_err cl_seal_encrypt_chunks(const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN],
                                            const uint8_t *pt, uint8_t *out, unsigned threads,
                                            cl_seal_progress_fn progress, void *arg);

/* ---- opening ---- */
enum cl_seal_open_flags {
    CL_SEAL_OPEN_NONE = 0,
    CL_SEAL_OPEN_VERIFY_DIGEST = 1 << 0, /* hash the plaintext (overlapped) and require the header's digest */
};

/* Supplies the data key for a stream whose key is not known yet (blocking;
 * called once, by a decryption worker, while the reader keeps reading). */
typedef cl_err (*cl_seal_key_wait_fn)(void *arg, uint8_t dk[CL_SEAL_KEY_LEN]);
/* As cl_seal_decrypt_stream, with the key obtained by key_wait: the key
 * fetch (e.g. attestation + key service) overlaps with reading the model.
 * With digest_out (or CL_SEAL_OPEN_VERIFY_DIGEST) the SHA-256 of the
 * decrypted plaintext is computed by a thread of its own as chunks are
 * authenticated, and written to digest_out on success: the digest of the
 * bytes actually in dst, never the header's claim. */
CL_MUST_CHECK cl_err cl_seal_decrypt_stream_keyed(int fd, const struct cl_seal_header *h, cl_seal_key_wait_fn key_wait,
                                                  void *key_arg, uint8_t *dst, unsigned threads, unsigned flags,
                                                  cl_seal_progress_fn progress, void *arg, uint8_t digest_out[32]);

/* Reads the header from a stream (file or socket). raw receives its bytes. */
CL_MUST_CHECK cl_err cl_seal_read_header(int fd, struct cl_buf *raw, struct cl_seal_header *h);
/* Reads the chunks that follow the header from fd and decrypts them with
 * `threads` threads (counting the reader: 1 reads and decrypts in turn,
 * N adds N-1 decryption workers) straight into dst (h->plaintext_size bytes, typically
 * secure memory). Each chunk is authenticated before the call returns
 * success; on any failure dst is wiped. Rejects data after the last chunk. */
CL_MUST_CHECK cl_err cl_seal_decrypt_stream(int fd, const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN],
                                            uint8_t *dst, unsigned threads, unsigned flags,
                                            cl_seal_progress_fn progress, void *arg);

/* ---- local key files ---- */
/* Reads a key file: 32 raw bytes or 64 hex digits (+ optional newline).
 * Refuses files readable by group or others. */
CL_MUST_CHECK cl_err cl_seal_keyfile_load(const char *path, uint8_t kek[CL_SEAL_KEY_LEN]);
/* Creates a new random key file (0600, fails if it exists). */
CL_MUST_CHECK cl_err cl_seal_keyfile_create(const char *path);
/* "file:" + 16 hex digits derived from the key (a fingerprint, not the key). */
CL_MUST_CHECK cl_err cl_seal_keyfile_id(const uint8_t kek[CL_SEAL_KEY_LEN], char out[32]);
/* AES-256-GCM wrap of the data key, bound to the encryption context and salt. */
CL_MUST_CHECK cl_err cl_seal_keyfile_wrap(const uint8_t kek[CL_SEAL_KEY_LEN], const uint8_t dk[CL_SEAL_KEY_LEN],
                                          const struct cl_seal_ctx_pair *ctx, size_t n_ctx, const uint8_t salt[32],
                                          uint8_t *out, size_t *outlen);
CL_MUST_CHECK cl_err cl_seal_keyfile_unwrap(const uint8_t kek[CL_SEAL_KEY_LEN], const struct cl_seal_header *h,
                                            uint8_t dk[CL_SEAL_KEY_LEN]);

#endif

#ifndef CLOISTER_SEAL_FILE_API
#define CLOISTER_SEAL_FILE_API
/* ---- whole files ---- */
/* Seals pt into a new file at out_path (mode 0644): temp file in the same
 * directory, fsync, rename; nothing is left behind on failure. digest is the
 * plaintext's SHA-256 when the caller already has it, or NULL to compute it.
 * p must carry the wrapped data key and key id. */
CL_MUST_CHECK cl_err cl_seal_write_file(const char *out_path, const uint8_t *pt, uint64_t n,
                                        const uint8_t *digest, const struct cl_seal_params *p,
                                        const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t salt[32], unsigned threads,
                                        cl_seal_progress_fn progress, void *arg);

/* Obtains the data key for a parsed (not yet authenticated) header. */
typedef cl_err (*cl_seal_key_resolver)(void *arg, const struct cl_seal_header *h, uint8_t dk[CL_SEAL_KEY_LEN]);
/* Resolver for local key files: arg points at the 32-byte key-encryption key. */
CL_MUST_CHECK cl_err cl_seal_keyfile_resolver(void *arg, const struct cl_seal_header *h, uint8_t dk[CL_SEAL_KEY_LEN]);

/* Reads and parses the header from fd, resolves the data key and
 * authenticates the header. *dk is secure memory (cl_secmem_free it). The
 * stream is left positioned at the first chunk. */
CL_MUST_CHECK cl_err cl_seal_open_header(int fd, cl_seal_key_resolver resolve, void *arg, struct cl_seal_header *h,
                                         uint8_t **dk);
/* Decrypts the chunks of an opened stream into a new file at out_path
 * (temp file, renamed only after every chunk verified; removed on failure). */
CL_MUST_CHECK cl_err cl_seal_decrypt_to_file(int fd, const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN],
                                             const char *out_path, unsigned threads, unsigned flags,
                                             cl_seal_progress_fn progress, void *arg);
/* Header + decryption into fresh secure memory (*pt, h->plaintext_size bytes). */
CL_MUST_CHECK cl_err cl_seal_open_fd(int fd, cl_seal_key_resolver resolve, void *arg, unsigned threads,
                                     unsigned flags, cl_seal_progress_fn progress, void *parg,
                                     struct cl_seal_header *h, uint8_t **pt);
#endif
