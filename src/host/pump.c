/* Byte pumps, the capture relay (test hook) and the enclave service
 * connection. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/log.h"
#include "cloister/vsock.h"
#include "host_internal.h"

#define CL_HOST_PUMP_BUF (64u << 10)
#define CL_HOST_RELAY_IDLE_MS (10u * 60u * 1000u)
#define CL_HOST_MAX_WORKERS 512u

struct cl_host_spawn_arg {
    void *(*fn)(void *);
    void *arg;
};

cl_err cl_host_spawn(struct cl_host *h, void *(*fn)(void *), void *arg)
{
    pthread_attr_t a;
    pthread_t t;
    if (atomic_fetch_add(&h->workers, 1) >= CL_HOST_MAX_WORKERS) {
        atomic_fetch_sub(&h->workers, 1);
        return cl_err_fail(CL_E_CORE_LIMIT, "more than %u connections at once", CL_HOST_MAX_WORKERS);
    }
    if (pthread_attr_init(&a) != 0) {
        atomic_fetch_sub(&h->workers, 1);
        return cl_err_fail(CL_E_CORE_THREAD, "thread attributes");
    }
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 512u << 10);
    int r = pthread_create(&t, &a, fn, arg);
    pthread_attr_destroy(&a);
    if (r != 0) {
        atomic_fetch_sub(&h->workers, 1);
        return cl_err_fail(CL_E_CORE_THREAD, "pthread_create %d", r);
    }
    return CL_OK;
}

void cl_host_worker_done(struct cl_host *h) { atomic_fetch_sub(&h->workers, 1); }

void cl_host_sock_timeouts(int fd, unsigned ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void cl_host_cap_write(int fd, const void *p, size_t n)
{
    if (fd >= 0 && cl_write_full(fd, p, n) != CL_OK)
        CL_LOG(CL_LOG_WARN, "capture_write_failed");
}

static int cl_host_send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void cl_host_pump(int a, int b, const struct cl_host_cap *cap, unsigned idle_ms, uint64_t *a_to_b, uint64_t *b_to_a)
{
    uint8_t *buf = malloc(CL_HOST_PUMP_BUF);
    int live[2] = {1, 1};
    const int fds[2] = {a, b};
    uint64_t moved[2] = {0, 0};
    if (!buf)
        goto out;
    while (live[0] || live[1]) {
        struct pollfd p[2];
        int idx[2], n = 0;
        for (int i = 0; i < 2; i++)
            if (live[i]) {
                p[n] = (struct pollfd){fds[i], POLLIN, 0};
                idx[n++] = i;
            }
        int r = poll(p, (nfds_t)n, idle_ms ? (int)idle_ms : -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto out;
        for (int k = 0; k < n; k++) {
            if (!p[k].revents)
                continue;
            int i = idx[k], src = fds[i], dst = fds[1 - i];
            ssize_t got = recv(src, buf, CL_HOST_PUMP_BUF, 0);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got < 0)
                goto out;
            if (got == 0) {
                live[i] = 0;
                (void)shutdown(dst, SHUT_WR);
                continue;
            }
            if (cap)
                cl_host_cap_write(i == 0 ? cap->in_fd : cap->out_fd, buf, (size_t)got);
            if (cl_host_send_all(dst, buf, (size_t)got) != 0)
                goto out;
            moved[i] += (uint64_t)got;
        }
    }
out:
    free(buf);
    if (a_to_b)
        *a_to_b = moved[0];
    if (b_to_a)
        *b_to_a = moved[1];
}

struct cl_host_relay {
    struct cl_host *h;
    int outer;
    int inner;
    struct cl_host_cap cap;
};

static void *cl_host_relay_main(void *arg)
{
    struct cl_host_relay *r = arg;
    cl_host_pump(r->outer, r->inner, &r->cap, CL_HOST_RELAY_IDLE_MS, NULL, NULL);
    close(r->outer);
    close(r->inner);
    if (r->cap.in_fd >= 0)
        close(r->cap.in_fd);
    if (r->cap.out_fd >= 0)
        close(r->cap.out_fd);
    struct cl_host *h = r->h;
    free(r);
    cl_host_worker_done(h);
    return NULL;
}

static int cl_host_cap_open(struct cl_host *h, uint64_t seq, const char *kind, const char *dir)
{
    char path[PATH_MAX + 64];
    int n = snprintf(path, sizeof(path), "%s/%06llu-%s-%s.bin", h->capture_dir, (unsigned long long)seq, kind, dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -1;
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
}

cl_err cl_host_capture_wrap(struct cl_host *h, const char *kind, int *fd)
{
    cl_err rc = CL_OK;
    int sv[2] = {-1, -1};
    struct cl_host_relay *r = NULL;
    if (!h->capture_dir[0])
        return CL_OK;
    r = calloc(1, sizeof(*r));
    CL_ENSURE(r, CL_E_CORE_NOMEM);
    r->cap.in_fd = r->cap.out_fd = -1;
    CL_ENSURE_D(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, CL_E_CORE_IO, "socketpair errno %d", errno);
    uint64_t seq = atomic_fetch_add(&h->capture_seq, 1);
    r->cap.in_fd = cl_host_cap_open(h, seq, kind, "in");
    r->cap.out_fd = cl_host_cap_open(h, seq, kind, "out");
    CL_ENSURE_D(r->cap.in_fd >= 0 && r->cap.out_fd >= 0, CL_E_CORE_IO, "cannot create capture files");
    r->h = h;
    r->outer = *fd;
    r->inner = sv[1];
    CL_GUARD(cl_host_spawn(h, cl_host_relay_main, r));
    *fd = sv[0];
    return CL_OK;
out:
    close(*fd);
    *fd = -1;
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (r && r->cap.in_fd >= 0)
        close(r->cap.in_fd);
    if (r && r->cap.out_fd >= 0)
        close(r->cap.out_fd);
    free(r);
    return rc;
}

cl_err cl_host_enclave_connect(struct cl_host *h, int *out)
{
    int fd = -1;
    cl_err rc = cl_vsock_connect(h->cfg.enclave_cid, CL_WIRE_PORT_SERVICE, &fd);
    if (rc != CL_OK) {
        atomic_fetch_add(&h->m.enclave_connect_failures, 1);
        return cl_err_fail(CL_E_NET_HOST_ENCLAVE_CONNECT, "enclave CID %u port %u", h->cfg.enclave_cid,
                           CL_WIRE_PORT_SERVICE);
    }
    rc = cl_host_capture_wrap(h, "enclave", &fd);
    if (rc != CL_OK)
        return rc;
    cl_host_sock_timeouts(fd, h->cfg.timeout_ms);
    *out = fd;
    return CL_OK;
}

cl_err cl_host_enclave_recv(struct cl_host *h, int fd, size_t max, enum cl_wire_type *t, unsigned *flags,
                            struct cl_buf *payload)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    uint64_t deadline = cl_now_us() + (uint64_t)h->cfg.timeout_ms * 1000u;
    for (;;) {
        uint64_t now = cl_now_us();
        int wait = now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
        r = poll(&p, 1, wait);
        if (r >= 0 || errno != EINTR)
            break;
    }
    if (r == 0) {
        atomic_fetch_add(&h->m.enclave_timeouts, 1);
        return cl_err_fail(CL_E_NET_HOST_ENCLAVE_TIMEOUT, "no frame within %u ms", h->cfg.timeout_ms);
    }
    errno = 0;
    cl_err rc = cl_wire_recv(fd, max, t, flags, payload);
    int e = errno;
    if (rc == CL_OK)
        return CL_OK;
    if (rc == CL_E_CORE_EOF || rc == CL_E_PROTO_OHTTP_MALFORMED)
        return cl_err_fail(CL_E_NET_HOST_ENCLAVE_CLOSED, "enclave closed the service connection");
    if (rc == CL_E_CORE_IO && (e == EAGAIN || e == EWOULDBLOCK)) {
        atomic_fetch_add(&h->m.enclave_timeouts, 1);
        return cl_err_fail(CL_E_NET_HOST_ENCLAVE_TIMEOUT, "frame stalled for %u ms", h->cfg.timeout_ms);
    }
    if (rc == CL_E_CORE_IO)
        return cl_err_fail(CL_E_NET_HOST_ENCLAVE_CLOSED, "service connection failed");
    return cl_err_fail(CL_E_NET_HOST_ENCLAVE_PROTOCOL, "bad frame from the enclave");
}
