/* libcurl cannot dial vsock, so the enclave offers it an abstract UNIX
 * socket and pipes each connection to the parent's key-service proxy (vsock
 * port 8000). Bytes are TLS when the key service URL is https: the parent
 * sees ciphertext either way. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "cloister/log.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"
#include "cloister/enclave_runtime.h"
#include "kms_bridge.h"

static void cl_bridge_pipe(int a, int b)
{
    char buf[16384];
    struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    for (;;) {
        if (poll(p, 2, 60000) <= 0)
            return;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof(buf));
            if (n <= 0)
                return;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(p[1 - i].fd, buf + off, (size_t)(n - off));
                if (w <= 0)
                    return;
                off += w;
            }
        }
    }
}

static void *cl_bridge_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        int v = -1;
        if (cl_vsock_connect(CL_WIRE_CID_PARENT, CL_WIRE_PORT_KMS_PROXY, &v) == CL_OK) {
            cl_bridge_pipe(c, v);
            close(v);
        } else {
            CL_LOG(CL_LOG_WARN, "kms_bridge_dial_failed");
        }
        close(c);
    }
}

cl_err cl_kms_bridge_start(char *name, size_t cap)
{
    uint8_t r[8];
    cl_err rc = cl_random_bytes(r, sizeof(r));
    if (rc != CL_OK)
        return rc;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "cloister-kms-%02x%02x%02x%02x%02x%02x%02x%02x", r[0],
                     r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
    if (n < 0 || (size_t)n + 2 > cap)
        return CL_E_CORE_LIMIT;
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) != 0 ||
        listen(lfd, 4) != 0) {
        if (lfd >= 0)
            close(lfd);
        return cl_err_fail(CL_E_NET_INTERNAL, "key-service bridge socket: %s", strerror(errno));
    }
    pthread_t th;
    if (pthread_create(&th, NULL, cl_bridge_main, (void *)(intptr_t)lfd) != 0) {
        close(lfd);
        return cl_err_fail(CL_E_CORE_THREAD, "key-service bridge");
    }
    pthread_detach(th);
    name[0] = '@';
    memcpy(name + 1, a.sun_path + 1, (size_t)n + 1);
    return CL_OK;
}
