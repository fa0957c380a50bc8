#include "cloister/file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cl_err cl_err_from_errno(int e, const char *what)
{
    cl_err code;
    switch (e) {
    case ENOENT: code = CL_E_CORE_NOT_FOUND; break;
    case EEXIST: code = CL_E_CORE_EXISTS; break;
    case EACCES:
    case EPERM: code = CL_E_CORE_PERM; break;
    case ENOSPC:
    case EDQUOT: code = CL_E_CORE_NOSPACE; break;
    case ENOMEM: code = CL_E_CORE_NOMEM; break;
    default: code = CL_E_CORE_IO; break;
    }
    return cl_err_fail(code, "%s: %s", what, strerror(e));
}

cl_err cl_write_full(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return cl_err_from_errno(errno, "write");
        }
        q += w;
        n -= (size_t)w;
    }
    return CL_OK;
}

cl_err cl_read_full(int fd, void *p, size_t n, size_t *got)
{
    uint8_t *q = p;
    size_t have = 0;
    cl_err rc = CL_OK;
    while (have < n) {
        ssize_t r = read(fd, q + have, n - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = cl_err_from_errno(errno, "read");
            break;
        }
        if (r == 0) {
            rc = CL_E_CORE_EOF;
            break;
        }
        have += (size_t)r;
    }
    if (got)
        *got = have;
    return rc;
}

cl_err cl_file_read(const char *path, size_t max, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_from_errno(errno, path);
    if (fstat(fd, &st) != 0)
        CL_FAIL(CL_E_CORE_IO, "stat %s", path);
    CL_ENSURE_D(S_ISREG(st.st_mode), CL_E_CORE_INVALID_ARG, "%s is not a regular file", path);
    CL_ENSURE_D((uint64_t)st.st_size <= max, CL_E_CORE_LIMIT, "%s is larger than %zu bytes", path, max);
    uint8_t *dst;
    size_t start = out->len, got = 0;
    CL_GUARD(cl_buf_extend(out, (size_t)st.st_size, &dst));
    rc = cl_read_full(fd, dst, (size_t)st.st_size, &got);
    if (rc != CL_OK) {
        out->len = start;
        if (rc == CL_E_CORE_EOF)
            rc = cl_err_fail(CL_E_CORE_IO, "%s changed while being read", path);
    }
out:
    close(fd);
    return rc;
}

cl_err cl_file_write_atomic(const char *path, const void *data, size_t n, unsigned mode, int exclusive)
{
    cl_err rc = CL_OK;
    char *dcopy = strdup(path);
    char tmp[4096];
    int fd = -1, dfd = -1;
    if (!dcopy)
        return CL_E_CORE_NOMEM;
    const char *dir = dirname(dcopy);
    if (exclusive && access(path, F_OK) == 0)
        CL_FAIL(CL_E_CORE_EXISTS, "%s", path);
    CL_ENSURE_D(snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) < (int)sizeof(tmp), CL_E_CORE_LIMIT, "path too long");
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        tmp[0] = '\0';
        rc = cl_err_from_errno(errno, "create temp file");
        goto out;
    }
    if (fchmod(fd, mode) != 0) {
        rc = cl_err_from_errno(errno, "chmod");
        goto out;
    }
    CL_GUARD(cl_write_full(fd, data, n));
    if (fsync(fd) != 0) {
        rc = cl_err_from_errno(errno, "fsync");
        goto out;
    }
    if (exclusive ? link(tmp, path) != 0 : rename(tmp, path) != 0) {
        rc = cl_err_from_errno(errno, path);
        goto out;
    }
    if (exclusive)
        unlink(tmp);
    tmp[0] = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        (void)fsync(dfd);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (rc != CL_OK && tmp[0])
        unlink(tmp);
    free(dcopy);
    return rc;
}
