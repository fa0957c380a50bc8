/* Internals shared by the host's HTTP side, boot services and capture hook. */
#ifndef CLOISTER_HOST_INTERNAL_H
#define CLOISTER_HOST_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cloister/host.h"
#include "cloister/wire.h"

enum cl_host_route {
    CL_HOST_ROUTE_NONE = 0,
    CL_HOST_ROUTE_ATTESTATION,
    CL_HOST_ROUTE_OHTTP,
    CL_HOST_ROUTE_HEALTHZ,
    CL_HOST_ROUTE_READYZ,
    CL_HOST_ROUTE_METRICS,
    CL_HOST_ROUTE_OTHER,
    CL_HOST_ROUTE_COUNT
};

/* Status codes counted individually; anything else lands in "other". */
#define CL_HOST_STATUS_SLOTS 14
#define CL_HOST_LAT_BUCKETS 12

enum cl_host_enclave_state {
    CL_HOST_ENCLAVE_UNKNOWN = 0,
    CL_HOST_ENCLAVE_UNREACHABLE,
    CL_HOST_ENCLAVE_NOT_READY,
    CL_HOST_ENCLAVE_READY,
    CL_HOST_ENCLAVE_STATE_COUNT
};

enum cl_host_svc {
    CL_HOST_SVC_NONE = 0,
    CL_HOST_SVC_MODEL,
    CL_HOST_SVC_BOOT,
    CL_HOST_SVC_KMS_PROXY,
    CL_HOST_SVC_COUNT
};

struct cl_host_metrics {
    atomic_uint_fast64_t requests[CL_HOST_ROUTE_COUNT][CL_HOST_STATUS_SLOTS + 1];
    atomic_uint_fast64_t bytes_in[CL_HOST_ROUTE_COUNT];
    atomic_uint_fast64_t bytes_out[CL_HOST_ROUTE_COUNT];
    atomic_uint_fast64_t lat_bucket[CL_HOST_ROUTE_COUNT][CL_HOST_LAT_BUCKETS + 1];
    atomic_uint_fast64_t lat_sum_us[CL_HOST_ROUTE_COUNT];
    atomic_uint enclave_state;
    atomic_uint_fast64_t enclave_connect_failures;
    atomic_uint_fast64_t enclave_timeouts;
    atomic_uint_fast64_t stream_aborts;
    atomic_uint_fast64_t busy_rejects;
    atomic_uint_fast64_t svc_connections[CL_HOST_SVC_COUNT];
    atomic_uint_fast64_t svc_failures[CL_HOST_SVC_COUNT];
    atomic_uint_fast64_t model_bytes;
    atomic_uint_fast64_t kms_bytes_to;
    atomic_uint_fast64_t kms_bytes_from;
};

struct cl_host_listen_arg {
    struct cl_host *h;
    enum cl_host_svc svc;
};

struct cl_host {
    struct cl_host_config cfg;
    char capture_dir[PATH_MAX];
    atomic_uint_fast64_t capture_seq;
    struct cl_buf boot_cfg; /* secure: carries the credentials */
    int stop_pipe[2];
    int http_fd;
    uint16_t port;
    pthread_t http_thr;
    int http_thr_started;
    int svc_fd[CL_HOST_SVC_COUNT];
    pthread_t svc_thr[CL_HOST_SVC_COUNT];
    int svc_started[CL_HOST_SVC_COUNT];
    struct cl_host_listen_arg listen_arg[CL_HOST_SVC_COUNT];
    void *mhd; /* struct MHD_Daemon */
    atomic_uint workers;
    atomic_uint_fast64_t body_inflight; /* request body bytes held by all connections */
    uint64_t body_budget;
    struct cl_host_metrics m;
};

/* Capture files of one connection: bytes the host received (in) and sent (out). */
struct cl_host_cap {
    int in_fd;
    int out_fd;
};

/* Runs fn(arg) on a detached thread, counted in h->workers. */
CL_MUST_CHECK cl_err cl_host_spawn(struct cl_host *h, void *(*fn)(void *), void *arg);
void cl_host_worker_done(struct cl_host *h);

/* With capture on, replaces *fd by the local end of a relay that appends all
 * traffic of the original socket to two new capture files; with capture off
 * it does nothing. On failure *fd has been closed. */
CL_MUST_CHECK cl_err cl_host_capture_wrap(struct cl_host *h, const char *kind, int *fd);

/* Copies bytes both ways between sockets a and b, passing half-closes on,
 * until both directions end, either side fails, or idle_ms pass without
 * traffic (0 = no limit). cap (may be NULL) records a's side. Counts bytes
 * a->b and b->a. Closes neither socket. */
void cl_host_pump(int a, int b, const struct cl_host_cap *cap, unsigned idle_ms, uint64_t *a_to_b, uint64_t *b_to_a);

/* Sets send/receive timeouts on a socket. */
void cl_host_sock_timeouts(int fd, unsigned ms);

/* One connection to the enclave service port (wrapped for capture). */
CL_MUST_CHECK cl_err cl_host_enclave_connect(struct cl_host *h, int *fd);
/* Waits up to the configured timeout for the next frame. Distinguishes
 * CL_E_NET_HOST_ENCLAVE_TIMEOUT, _CLOSED and _PROTOCOL. */
CL_MUST_CHECK cl_err cl_host_enclave_recv(struct cl_host *h, int fd, size_t max, enum cl_wire_type *t, unsigned *flags,
                                          struct cl_buf *payload);

CL_MUST_CHECK cl_err cl_host_services_start(struct cl_host *h);
void cl_host_services_stop(struct cl_host *h);
CL_MUST_CHECK cl_err cl_host_http_start(struct cl_host *h);
void cl_host_http_stop(struct cl_host *h);

#endif
