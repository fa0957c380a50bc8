#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/file.h"
#include "cloister/secmem.h"
#include "cloister/seal.h"

cl_err cl_seal_keyfile_resolver(void *arg, const struct cl_seal_header *h, uint8_t dk[CL_SEAL_KEY_LEN])
{
    return cl_seal_keyfile_unwrap(arg, h, dk);
}

/* Maps a new temp file of `size` bytes next to path for writing. */
static cl_err cl_seal_map_temp(const char *path, uint64_t size, unsigned mode, char *tmp, size_t tmplen, int *fd,
                               uint8_t **map)
{
    if (snprintf(tmp, tmplen, "%s.tmp.XXXXXX", path) >= (int)tmplen)
        return cl_err_fail(CL_E_CORE_LIMIT, "output path too long");
    *fd = mkostemp(tmp, O_CLOEXEC);
    if (*fd < 0) {
        cl_err rc = cl_err_from_errno(errno, "create output");
        tmp[0] = '\0';
        return rc;
    }
    /* posix_fallocate reserves the blocks now, so a full disk fails here
     * rather than as SIGBUS while writing through the mapping. */
    if (fchmod(*fd, mode) != 0)
        return cl_err_from_errno(errno, "chmod output");
    int e = size ? posix_fallocate(*fd, 0, (off_t)size) : 0;
    if (e)
        return cl_err_from_errno(e, "reserve output space");
    *map = NULL;
    if (size) {
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
        if (m == MAP_FAILED)
            return cl_err_from_errno(errno, "map output");
        *map = m;
    }
    return CL_OK;
}

static cl_err cl_seal_commit_temp(const char *tmp, const char *path, int fd, uint8_t *map, uint64_t size)
{
    if (map && msync(map, size, MS_SYNC) != 0)
        return cl_err_from_errno(errno, "write output");
    if (fsync(fd) != 0)
        return cl_err_from_errno(errno, "fsync output");
    if (rename(tmp, path) != 0)
        return cl_err_from_errno(errno, "rename output");
    char *d = strdup(path);
    if (d) {
        int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(d);
    }
    return CL_OK;
}

cl_err cl_seal_write_file(const char *out_path, const uint8_t *pt, uint64_t n, const uint8_t *digest_in,
                          const struct cl_seal_params *p, const uint8_t dk[CL_SEAL_KEY_LEN], const uint8_t salt[32],
                          unsigned threads, cl_seal_progress_fn progress, void *arg)
{
    cl_err rc = CL_OK;
    struct cl_buf hdr;
    struct cl_seal_header *h = NULL;
    uint8_t digest[32], *map = NULL;
    uint64_t total = 0;
    char tmp[4096] = "";
    int fd = -1;
    cl_buf_init(&hdr, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    if (digest_in)
        memcpy(digest, digest_in, 32);
    else
        CL_GUARD(cl_sha256(pt, n, digest));
    CL_GUARD(cl_seal_header_build(p, dk, salt, digest, n, &hdr));
    h = malloc(sizeof(*h));
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    CL_GUARD(cl_seal_header_parse(hdr.data, hdr.len, h));
    CL_GUARD(cl_seal_sealed_size(h->header_len, n, h->chunk_size, &total));
    CL_GUARD(cl_seal_map_temp(out_path, total, 0644, tmp, sizeof(tmp), &fd, &map));
    memcpy(map, hdr.data, hdr.len);
    CL_GUARD(cl_seal_encrypt_chunks(h, dk, pt, map + hdr.len, threads, progress, arg));
    CL_GUARD(cl_seal_commit_temp(tmp, out_path, fd, map, total));
    tmp[0] = '\0';
out:
    if (map)
        munmap(map, total);
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    free(h);
    cl_buf_free(&hdr);
    return rc;
}

cl_err cl_seal_open_header(int fd, cl_seal_key_resolver resolve, void *arg, struct cl_seal_header *h, uint8_t **dk)
{
    cl_err rc = CL_OK;
    struct cl_buf raw;
    void *key = NULL;
    cl_buf_init(&raw, CL_SEAL_MAX_HEADER, CL_BUF_NONE);
    CL_GUARD(cl_seal_read_header(fd, &raw, h));
    CL_GUARD(cl_secmem_alloc(CL_SEAL_KEY_LEN, &key));
    CL_GUARD(resolve(arg, h, key));
    CL_GUARD(cl_seal_header_verify(h, raw.data, key));
    *dk = key;
    key = NULL;
out:
    cl_secmem_free(key);
    cl_buf_free(&raw);
    return rc;
}

cl_err cl_seal_open_fd(int fd, cl_seal_key_resolver resolve, void *arg, unsigned threads, unsigned flags,
                       cl_seal_progress_fn progress, void *parg, struct cl_seal_header *h, uint8_t **pt)
{
    cl_err rc = CL_OK;
    uint8_t *dk = NULL;
    void *dst = NULL;
    CL_GUARD(cl_seal_open_header(fd, resolve, arg, h, &dk));
    CL_GUARD(cl_secmem_alloc(h->plaintext_size, &dst));
    CL_GUARD(cl_seal_decrypt_stream(fd, h, dk, dst, threads, flags, progress, parg));
    *pt = dst;
    dst = NULL;
out:
    cl_secmem_free(dst);
    cl_secmem_free(dk);
    return rc;
}

cl_err cl_seal_decrypt_to_file(int fd, const struct cl_seal_header *h, const uint8_t dk[CL_SEAL_KEY_LEN],
                               const char *out_path, unsigned threads, unsigned flags, cl_seal_progress_fn progress,
                               void *arg)
{
    cl_err rc = CL_OK;
    uint8_t *map = NULL;
    char tmp[4096] = "";
    int ofd = -1;
    CL_GUARD(cl_seal_map_temp(out_path, h->plaintext_size, 0600, tmp, sizeof(tmp), &ofd, &map));
    CL_GUARD(cl_seal_decrypt_stream(fd, h, dk, map, threads, flags, progress, arg));
    CL_GUARD(cl_seal_commit_temp(tmp, out_path, ofd, map, h->plaintext_size));
    tmp[0] = '\0';
out:
    if (map)
        munmap(map, h->plaintext_size);
    if (ofd >= 0)
        close(ofd);
    if (tmp[0])
        unlink(tmp);
    return rc;
}
