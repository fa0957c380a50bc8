#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"

#define CL_KEYFILE_WRAP_LEN (CL_GCM_NONCE_LEN + CL_SEAL_KEY_LEN + CL_AEAD_TAG_LEN)
static const char cl_keyfile_wrap_label[] = "cloister/seal/v1 keyfile wrap";

cl_err cl_seal_keyfile_load(const char *path, uint8_t kek[CL_SEAL_KEY_LEN])
{
    cl_err rc = CL_OK;
    struct stat st;
    uint8_t raw[80];
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return cl_err_from_errno(errno, "key file");
    CL_ENSURE_D(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), CL_E_SEAL_BAD_KEY_FILE, "not a regular file");
    CL_ENSURE_D((st.st_mode & 077) == 0, CL_E_CORE_INSECURE_FILE,
                "key file is readable by group or others (mode %03o); run chmod 600", (unsigned)(st.st_mode & 0777));
    CL_ENSURE_D(st.st_size == 32 || st.st_size == 64 || st.st_size == 65, CL_E_SEAL_BAD_KEY_FILE,
                "expected 32 raw bytes or 64 hex digits, file has %lld bytes", (long long)st.st_size);
    rc = cl_read_full(fd, raw, (size_t)st.st_size, &got);
    CL_ENSURE_D(rc == CL_OK, CL_E_SEAL_BAD_KEY_FILE, "short read");
    if (st.st_size == 32) {
        memcpy(kek, raw, 32);
    } else {
        CL_ENSURE_D(st.st_size == 64 || raw[64] == '\n', CL_E_SEAL_BAD_KEY_FILE, "trailing byte after 64 hex digits");
        CL_ENSURE_D(cl_hex_decode_fixed((const char *)raw, 64, kek, 32) == CL_OK, CL_E_SEAL_BAD_KEY_FILE,
                    "not hex");
    }
out:
    cl_wipe(raw, sizeof(raw));
    close(fd);
    return rc;
}

cl_err cl_seal_keyfile_create(const char *path)
{
    uint8_t key[CL_SEAL_KEY_LEN];
    cl_err rc = cl_random_bytes(key, sizeof(key));
    if (rc == CL_OK)
        rc = cl_file_write_atomic(path, key, sizeof(key), 0600, 1);
    cl_wipe(key, sizeof(key));
    return rc;
}

cl_err cl_seal_keyfile_id(const uint8_t kek[CL_SEAL_KEY_LEN], char out[32])
{
    static const char label[] = "cloister/seal/v1 keyfile id";
    uint8_t id[8];
    cl_err rc = cl_hkdf(CL_HASH_SHA256, NULL, 0, kek, CL_SEAL_KEY_LEN, label, sizeof(label) - 1, id, sizeof(id));
    if (rc != CL_OK)
        return rc;
    memcpy(out, "file:", 5);
    cl_hex_encode(id, sizeof(id), out + 5);
    return CL_OK;
}

/* AAD = label || salt || canonical encryption context: moving a wrapped key
 * to another header, or editing the context, fails the unwrap. */
static cl_err cl_keyfile_aad(const uint8_t salt[32], const struct cl_seal_ctx_pair *ctx, size_t n, struct cl_buf *aad)
{
    cl_err rc = cl_buf_append(aad, cl_keyfile_wrap_label, sizeof(cl_keyfile_wrap_label) - 1);
    if (rc == CL_OK)
        rc = cl_buf_append(aad, salt, 32);
    if (rc == CL_OK)
        rc = cl_seal_ctx_encode(ctx, n, aad);
    return rc;
}

cl_err cl_seal_keyfile_wrap(const uint8_t kek[CL_SEAL_KEY_LEN], const uint8_t dk[CL_SEAL_KEY_LEN],
                            const struct cl_seal_ctx_pair *ctx, size_t n_ctx, const uint8_t salt[32], uint8_t *out,
                            size_t *outlen)
{
    cl_err rc = CL_OK;
    cl_aead *a = NULL;
    struct cl_buf aad;
    cl_buf_init(&aad, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CL_GUARD(cl_keyfile_aad(salt, ctx, n_ctx, &aad));
    CL_GUARD(cl_random_bytes(out, CL_GCM_NONCE_LEN));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, kek, CL_SEAL_KEY_LEN, &a));
    CL_GUARD(cl_aead_seal(a, out, aad.data, aad.len, dk, CL_SEAL_KEY_LEN, out + CL_GCM_NONCE_LEN,
                          out + CL_GCM_NONCE_LEN + CL_SEAL_KEY_LEN));
    *outlen = CL_KEYFILE_WRAP_LEN;
out:
    cl_aead_free(a);
    cl_buf_free(&aad);
    return rc;
}

cl_err cl_seal_keyfile_unwrap(const uint8_t kek[CL_SEAL_KEY_LEN], const struct cl_seal_header *h,
                              uint8_t dk[CL_SEAL_KEY_LEN])
{
    cl_err rc = CL_OK;
    cl_aead *a = NULL;
    char id[32];
    struct cl_buf aad;
    cl_buf_init(&aad, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CL_ENSURE_D(h->provider == CL_SEAL_PROVIDER_KEYFILE, CL_E_SEAL_WRONG_KEY,
                "the model was sealed with a key service, not a key file (key id %s)", h->key_id);
    CL_GUARD(cl_seal_keyfile_id(kek, id));
    CL_ENSURE_D(strcmp(id, h->key_id) == 0, CL_E_SEAL_WRONG_KEY, "key file is %s, the model was sealed for %s", id,
                h->key_id);
    CL_ENSURE_D(h->wrapped_len == CL_KEYFILE_WRAP_LEN, CL_E_SEAL_UNWRAP, "field wrapped_key: %zu bytes, expected %d",
                h->wrapped_len, CL_KEYFILE_WRAP_LEN);
    CL_GUARD(cl_keyfile_aad(h->salt, h->ctx, h->n_ctx, &aad));
    CL_GUARD(cl_aead_new(CL_AEAD_AES256GCM, kek, CL_SEAL_KEY_LEN, &a));
    rc = cl_aead_open(a, h->wrapped, aad.data, aad.len, h->wrapped + CL_GCM_NONCE_LEN, CL_SEAL_KEY_LEN,
                      h->wrapped + CL_GCM_NONCE_LEN + CL_SEAL_KEY_LEN, dk);
    if (rc == CL_E_CRYPTO_AUTH)
        rc = cl_err_fail(CL_E_SEAL_UNWRAP, "fields wrapped_key, salt or encryption_context were altered");
out:
    cl_aead_free(a);
    cl_buf_free(&aad);
    return rc;
}
