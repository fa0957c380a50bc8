#include "cloister/vsock.h"

#include <errno.h>
#include <limits.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum cl_vsock_mode cl_vsock_mode(void)
{
    const char *d = getenv(CL_VSOCK_DIR_ENV);
    return d && *d ? CL_VSOCK_MODE_UNIX : CL_VSOCK_MODE_VSOCK;
}

uint32_t cl_vsock_self_cid(void)
{
    if (cl_vsock_mode() != CL_VSOCK_MODE_UNIX)
        return CL_VSOCK_CID_ANY;
    const char *s = getenv(CL_VSOCK_CID_ENV);
    if (!s || !*s)
        return CL_VSOCK_CID_DEFAULT_SELF;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v >= CL_VSOCK_CID_ANY || *s == '-')
        return CL_VSOCK_CID_DEFAULT_SELF;
    return (uint32_t)v;
}

cl_err cl_vsock_unix_path(const char *dir, uint32_t cid, uint32_t port, char *buf, size_t len)
{
    if (cid == CL_VSOCK_CID_ANY)
        return cl_err_fail(CL_E_VSOCK_ADDRESS, "CID any has no path");
    int n = snprintf(buf, len, "%s/%u.%u", dir, cid, port);
    if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return cl_err_fail(CL_E_VSOCK_ADDRESS, "emulation path too long");
    return CL_OK;
}

/* The emulation directory must be private: a directory we own, mode 0700. */
static cl_err cl_vsock_dir(const char **dir)
{
    const char *d = getenv(CL_VSOCK_DIR_ENV);
    struct stat st;
    if (!d || !*d)
        return cl_err_fail(CL_E_VSOCK_BAD_DIR, "%s is not set", CL_VSOCK_DIR_ENV);
    if (lstat(d, &st) != 0 || !S_ISDIR(st.st_mode))
        return cl_err_fail(CL_E_VSOCK_BAD_DIR, "%s is not a directory", CL_VSOCK_DIR_ENV);
    if (st.st_uid != geteuid() || (st.st_mode & 077))
        return cl_err_fail(CL_E_VSOCK_BAD_DIR, "%s must be owned by this user with mode 0700", CL_VSOCK_DIR_ENV);
    *dir = d;
    return CL_OK;
}

static cl_err cl_vsock_unix_addr(uint32_t cid, uint32_t port, struct sockaddr_un *sa)
{
    const char *dir = NULL;
    cl_err rc = cl_vsock_dir(&dir);
    if (rc != CL_OK)
        return rc;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    return cl_vsock_unix_path(dir, cid, port, sa->sun_path, sizeof(sa->sun_path));
}

cl_err cl_vsock_listen(uint32_t cid, uint32_t port, int backlog, int *out)
{
    cl_err rc = CL_OK;
    int fd = -1;
    if (cl_vsock_mode() == CL_VSOCK_MODE_UNIX) {
        struct sockaddr_un sa;
        struct stat st;
        if (cid == CL_VSOCK_CID_ANY)
            cid = cl_vsock_self_cid();
        CL_GUARD(cl_vsock_unix_addr(cid, port, &sa));
        /* A stale socket from an earlier run; never remove anything else. */
        if (lstat(sa.sun_path, &st) == 0) {
            CL_ENSURE_D(S_ISSOCK(st.st_mode), CL_E_VSOCK_LISTEN, "address %u.%u is taken by a non-socket", cid, port);
            unlink(sa.sun_path);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CL_ENSURE_D(fd >= 0, CL_E_VSOCK_LISTEN, "socket errno %d", errno);
        CL_ENSURE_D(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, CL_E_VSOCK_LISTEN, "bind %u.%u errno %d", cid,
                    port, errno);
        chmod(sa.sun_path, 0600);
    } else {
        struct sockaddr_vm sa;
        memset(&sa, 0, sizeof(sa));
        sa.svm_family = AF_VSOCK;
        sa.svm_cid = cid == CL_VSOCK_CID_ANY ? VMADDR_CID_ANY : cid;
        sa.svm_port = port;
        fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CL_ENSURE_D(fd >= 0, CL_E_VSOCK_UNAVAILABLE, "AF_VSOCK socket errno %d", errno);
        CL_ENSURE_D(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, CL_E_VSOCK_LISTEN, "bind port %u errno %d", port,
                    errno);
    }
    CL_ENSURE_D(listen(fd, backlog > 0 ? backlog : 16) == 0, CL_E_VSOCK_LISTEN, "listen errno %d", errno);
    *out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

cl_err cl_vsock_connect(uint32_t cid, uint32_t port, int *out)
{
    cl_err rc = CL_OK;
    int fd = -1, r;
    CL_ENSURE_D(cid != CL_VSOCK_CID_ANY, CL_E_VSOCK_ADDRESS, "cannot connect to CID any");
    if (cl_vsock_mode() == CL_VSOCK_MODE_UNIX) {
        struct sockaddr_un sa;
        CL_GUARD(cl_vsock_unix_addr(cid, port, &sa));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CL_ENSURE_D(fd >= 0, CL_E_VSOCK_CONNECT, "socket errno %d", errno);
        do
            r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        while (r != 0 && errno == EINTR);
    } else {
        struct sockaddr_vm sa;
        memset(&sa, 0, sizeof(sa));
        sa.svm_family = AF_VSOCK;
        sa.svm_cid = cid;
        sa.svm_port = port;
        fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CL_ENSURE_D(fd >= 0, CL_E_VSOCK_UNAVAILABLE, "AF_VSOCK socket errno %d", errno);
        do
            r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        while (r != 0 && errno == EINTR);
    }
    CL_ENSURE_D(r == 0, CL_E_VSOCK_CONNECT, "connect %u.%u errno %d", cid, port, errno);
    *out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

cl_err cl_vsock_accept(int listen_fd, int *out)
{
    int fd;
    do
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd < 0)
        return cl_err_fail(CL_E_VSOCK_ACCEPT, "accept errno %d", errno);
    *out = fd;
    return CL_OK;
}
