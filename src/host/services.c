/* Boot services on the parent side of vsock: the sealed model stream (5001),
 * the boot configuration (5002) and the byte pipe to the key service (8000).
 * Each accepted connection gets its own thread, so a restarted enclave is
 * simply served again. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/log.h"
#include "cloister/vsock.h"
#include "host_internal.h"

#define CL_HOST_BOOT_TIMEOUT_MS 10000u
#define CL_HOST_MODEL_STALL_MS 60000u
#define CL_HOST_KMS_CONNECT_MS 5000u
#define CL_HOST_KMS_IDLE_MS 120000u

static const uint32_t cl_host_svc_port[CL_HOST_SVC_COUNT] = {
    [CL_HOST_SVC_MODEL] = CL_WIRE_PORT_MODEL,
    [CL_HOST_SVC_BOOT] = CL_WIRE_PORT_BOOT,
    [CL_HOST_SVC_KMS_PROXY] = CL_WIRE_PORT_KMS_PROXY,
    [CL_HOST_SVC_MMPROJ] = CL_WIRE_PORT_MMPROJ,
};

struct cl_host_svc_conn {
    struct cl_host *h;
    enum cl_host_svc svc;
    int fd;
};

/* Streams a sealed file (the model, or the projector) to the enclave. */
static cl_err cl_host_serve_sealed(struct cl_host *h, int fd, const char *path)
{
    cl_err rc = CL_OK;
    struct stat st;
    uint64_t t0 = cl_now_us();
    off_t off = 0;
    /* Large socket buffers roughly double throughput of a multi-GB stream
     * (fewer wake-ups per byte); best effort. */
    int big = 8 << 20;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    int mf = -1;
    CL_ENSURE_D(path, CL_E_CORE_NOT_FOUND, "no projector configured (--mmproj)");
    mf = open(path, O_RDONLY | O_CLOEXEC);
    CL_ENSURE_D(mf >= 0, CL_E_CORE_NOT_FOUND, "sealed file cannot be opened (errno %d)", errno);
    CL_ENSURE_D(fstat(mf, &st) == 0 && S_ISREG(st.st_mode), CL_E_CORE_IO, "sealed file is not a regular file");
    cl_host_sock_timeouts(fd, CL_HOST_MODEL_STALL_MS);
    while (off < st.st_size) {
        ssize_t w = sendfile(fd, mf, &off, (size_t)(st.st_size - off) > (1u << 30) ? (1u << 30)
                                                                                   : (size_t)(st.st_size - off));
        if (w < 0 && errno == EINTR)
            continue;
        CL_ENSURE_D(w > 0, CL_E_CORE_IO, "sealed stream stopped at byte %lld (errno %d)", (long long)off,
                    w < 0 ? errno : 0);
    }
out:
    if (off > 0)
        atomic_fetch_add(&h->m.model_bytes, (uint64_t)off);
    CL_LOG(rc == CL_OK ? CL_LOG_INFO : CL_LOG_WARN, "model_stream", CL_LOG_SIZE("bytes", off),
           CL_LOG_US("duration_us", cl_now_us() - t0), CL_LOG_ERR(rc));
    if (mf >= 0)
        close(mf);
    return rc;
}

static cl_err cl_host_serve_boot(struct cl_host *h, int fd)
{
    cl_err rc = CL_OK;
    struct cl_buf req;
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned flags = 0;
    cl_buf_init(&req, 4096, CL_BUF_NONE);
    cl_host_sock_timeouts(fd, CL_HOST_BOOT_TIMEOUT_MS);
    CL_GUARD(cl_wire_recv(fd, 4096, &t, &flags, &req));
    if (t != CL_WIRE_BOOT_REQ) {
        if (cl_wire_send_error(fd, 400, CL_E_PROTO_REQUEST_INVALID) != CL_OK)
            CL_LOG(CL_LOG_DEBUG, "boot_error_not_sent");
        CL_FAIL(CL_E_NET_HOST_ENCLAVE_PROTOCOL, "expected boot_req, got %s", cl_wire_type_name(t));
    }
    CL_GUARD(cl_wire_send(fd, CL_WIRE_BOOT_CONFIG, 0, h->boot_cfg.data, h->boot_cfg.len));
out:
    CL_LOG(rc == CL_OK ? CL_LOG_INFO : CL_LOG_WARN, "boot_config", CL_LOG_SIZE("bytes", rc == CL_OK ? h->boot_cfg.len : 0),
           CL_LOG_ERR(rc));
    cl_buf_free(&req);
    return rc;
}

/* Blocking TCP connect with a bound on the wait. */
static cl_err cl_host_tcp_connect(const char *host, uint16_t port, int *out)
{
    cl_err rc = CL_E_NET_HOST_UPSTREAM;
    struct addrinfo hints, *res = NULL;
    char ps[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%u", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return cl_err_fail(CL_E_NET_HOST_UPSTREAM, "key-service host does not resolve");
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int err = 0;
            socklen_t el = sizeof(err);
            if (poll(&p, 1, CL_HOST_KMS_CONNECT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
                err == 0)
                r = 0;
        }
        if (r == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0) {
            *out = fd;
            rc = CL_OK;
            break;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc == CL_OK ? rc : cl_err_fail(CL_E_NET_HOST_UPSTREAM, "key service at port %u refused or timed out", port);
}

static cl_err cl_host_serve_kms_proxy(struct cl_host *h, int fd)
{
    cl_err rc = CL_OK;
    int up = -1;
    uint64_t to = 0, from = 0, t0 = cl_now_us();
    CL_GUARD(cl_host_tcp_connect(h->cfg.kms->host, h->cfg.kms->port, &up));
    CL_GUARD(cl_host_capture_wrap(h, "kms", &up));
    cl_host_pump(fd, up, NULL, CL_HOST_KMS_IDLE_MS, &to, &from);
    atomic_fetch_add(&h->m.kms_bytes_to, to);
    atomic_fetch_add(&h->m.kms_bytes_from, from);
out:
    CL_LOG(rc == CL_OK ? CL_LOG_INFO : CL_LOG_WARN, "kms_proxy", CL_LOG_SIZE("bytes_to_kms", to),
           CL_LOG_SIZE("bytes_from_kms", from), CL_LOG_US("duration_us", cl_now_us() - t0), CL_LOG_ERR(rc));
    if (up >= 0)
        close(up);
    return rc;
}

static void *cl_host_conn_main(void *arg)
{
    struct cl_host_svc_conn *c = arg;
    struct cl_host *h = c->h;
    static const char *const kinds[CL_HOST_SVC_COUNT] = {
        [CL_HOST_SVC_MODEL] = "model", [CL_HOST_SVC_BOOT] = "boot", [CL_HOST_SVC_KMS_PROXY] = "kmsproxy",
        [CL_HOST_SVC_MMPROJ] = "mmproj"};
    cl_err rc = cl_host_capture_wrap(h, kinds[c->svc], &c->fd);
    if (rc == CL_OK) {
        switch (c->svc) {
        case CL_HOST_SVC_MODEL: rc = cl_host_serve_sealed(h, c->fd, h->cfg.model_path); break;
        case CL_HOST_SVC_MMPROJ: rc = cl_host_serve_sealed(h, c->fd, h->cfg.mmproj_path); break;
        case CL_HOST_SVC_BOOT: rc = cl_host_serve_boot(h, c->fd); break;
        case CL_HOST_SVC_KMS_PROXY: rc = cl_host_serve_kms_proxy(h, c->fd); break;
        default: break;
        }
    }
    if (rc != CL_OK)
        atomic_fetch_add(&h->m.svc_failures[c->svc], 1);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    cl_host_worker_done(h);
    return NULL;
}

static void *cl_host_listen_main(void *arg)
{
    struct cl_host_listen_arg *la = arg;
    struct cl_host *h = la->h;
    enum cl_host_svc svc = la->svc;
    for (;;) {
        struct pollfd p[2] = {{h->svc_fd[svc], POLLIN, 0}, {h->stop_pipe[0], POLLIN, 0}};
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || p[1].revents)
            break;
        int fd = -1;
        if (cl_vsock_accept(h->svc_fd[svc], &fd) != CL_OK) {
            poll(NULL, 0, 50); /* out of descriptors or memory: back off instead of spinning */
            continue;
        }
        atomic_fetch_add(&h->m.svc_connections[svc], 1);
        struct cl_host_svc_conn *c = malloc(sizeof(*c));
        if (c)
            *c = (struct cl_host_svc_conn){h, svc, fd};
        if (!c || cl_host_spawn(h, cl_host_conn_main, c) != CL_OK) {
            free(c);
            atomic_fetch_add(&h->m.svc_failures[svc], 1);
            CL_LOG(CL_LOG_WARN, "vsock_connection_refused", CL_LOG_COUNT("port", cl_host_svc_port[svc]));
            close(fd);
        }
    }
    return NULL;
}

cl_err cl_host_services_start(struct cl_host *h)
{
    cl_err rc = CL_OK;
    for (int s = CL_HOST_SVC_MODEL; s < CL_HOST_SVC_COUNT; s++) {
        CL_GUARD(cl_vsock_listen(CL_VSOCK_CID_ANY, cl_host_svc_port[s], 16, &h->svc_fd[s]));
        h->listen_arg[s] = (struct cl_host_listen_arg){h, (enum cl_host_svc)s};
        CL_ENSURE_D(pthread_create(&h->svc_thr[s], NULL, cl_host_listen_main, &h->listen_arg[s]) == 0,
                    CL_E_CORE_THREAD, "vsock listener thread");
        h->svc_started[s] = 1;
    }
out:
    return rc;
}

void cl_host_services_stop(struct cl_host *h)
{
    for (int s = CL_HOST_SVC_MODEL; s < CL_HOST_SVC_COUNT; s++) {
        if (h->svc_started[s])
            pthread_join(h->svc_thr[s], NULL);
        h->svc_started[s] = 0;
        if (h->svc_fd[s] >= 0)
            close(h->svc_fd[s]);
        h->svc_fd[s] = -1;
    }
}
