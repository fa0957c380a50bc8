/* Internals shared by the host's HTTP side, boot services and capture hook. */
#ifndef CLOISTER_HOST_INTERNAL_H
#define CLOISTER_HOST_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <sys/socket.h>
#include <microhttpd.h>
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
    CL_HOST_SVC_MMPROJ,
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
    atomic_uint_fast64_t conn_accepted;
    atomic_uint_fast64_t conn_released_late; /* taken off the counts by the sweeper (conn.c) */
    atomic_uint_fast64_t conn_rejects[2]; /* 0: host limit, 1: per-client limit */
    atomic_uint_fast64_t header_timeouts;
    atomic_uint_fast64_t body_timeouts;
    atomic_uint_fast64_t queue_rejects;
    atomic_uint queue_depth;
    atomic_uint workers_busy;
    atomic_uint_fast64_t receipts_stored;  /* interactive receipts written to --receipts */
    atomic_uint_fast64_t receipts_failed;  /* malformed, or the store refused the write */
    atomic_uint_fast64_t receipts_dropped; /* writer queue full, or no memory */
    atomic_uint_fast64_t receipts_missing; /* a chat answer not followed by its receipt */
    atomic_uint_fast64_t receipts_discarded; /* no --receipts */
};

/* One accepted HTTP client connection (conn.c). ctl_fd is our own duplicate
 * of the socket: shutting it down ends the connection without any risk of
 * touching a descriptor number libmicrohttpd has closed and reused. */
struct cl_host_client;
struct cl_host_conn {
    struct cl_host_conn *prev, *next;
    struct cl_host_client *client;
    int ctl_fd;
    int mhd_fd;
    int attached; /* libmicrohttpd reported it started */
    int killed;   /* header deadline passed or client gone: shut down */
    int uncounted; /* shut down a while ago and still not closed by the library: off the limits */
    uint64_t t_accept_us;
    uint64_t t_killed_us;
    uint64_t t_peek_us; /* last check for a client that left (sweeper) */
    atomic_int phase;                    /* enum cl_host_conn_phase */
    atomic_uint_fast64_t phase_start_us; /* since when */
};

/* What a connection is waiting for from its client, each with a deadline. */
enum cl_host_conn_phase { CL_HOST_PHASE_NONE = 0, CL_HOST_PHASE_HEADERS, CL_HOST_PHASE_BODY, CL_HOST_PHASE_COUNT };

#define CL_HOST_LINGER_MAX 128u

/* A refused connection: 503 sent, its request drained until the peer closes
 * or a second passes, so the client reads the answer instead of a reset. */
struct cl_host_linger {
    int fd;
    uint64_t t0_us;
};

/* A unit of work for the enclave worker pool (pool.c). */
struct cl_host_job {
    struct cl_host_job *next;
    void (*run)(struct cl_host_job *j);
};

struct cl_host_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int init;
    struct cl_host_job *head, *tail;
    unsigned queued;   /* jobs in the list */
    unsigned reserved; /* slots promised to requests that are about to push */
    unsigned busy;     /* workers running a job */
    unsigned nthreads;
    pthread_t *threads;
    int stopping;
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
    atomic_int stopping;
    struct cl_host_metrics m;
    /* connections (conn.c), all under conn_mu */
    pthread_mutex_t conn_mu;
    int conn_mu_init;
    struct cl_host_conn *conns;
    struct cl_host_conn **by_fd; /* indexed by the descriptor handed to libmicrohttpd */
    size_t by_fd_n;
    struct cl_host_client **clients; /* hash of per-address counts */
    unsigned conn_count;
    struct cl_host_linger linger[CL_HOST_LINGER_MAX];
    unsigned linger_n;
    pthread_t sweep_thr;
    int sweep_started;
    unsigned max_conns;
    struct cl_host_pool pool;
    struct cl_host_receipts *receipts; /* --receipts; NULL: receipts are discarded */
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

/* Connection accounting (conn.c). */
CL_MUST_CHECK cl_err cl_host_conn_init(struct cl_host *h);
void cl_host_conn_fini(struct cl_host *h);
/* Called by the accept thread for a fresh socket: counts it against the
 * host and per-client limits. On refusal answers 503 itself, takes fd and
 * returns 0. Otherwise returns 1 with *out to attach after capture. */
int cl_host_conn_admit(struct cl_host *h, int fd, const struct sockaddr *peer, socklen_t pl, struct cl_host_conn **out);
/* Registers the descriptor libmicrohttpd will own; 0 on failure (c released). */
int cl_host_conn_bind(struct cl_host *h, struct cl_host_conn *c, int mhd_fd);
/* Releases a connection libmicrohttpd never took. */
void cl_host_conn_release(struct cl_host *h, struct cl_host_conn *c);
/* libmicrohttpd connection notifications (MHD_OPTION_NOTIFY_CONNECTION). */
void cl_host_conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode code);
/* Headers complete: a body follows (its deadline starts) or not. */
void cl_host_conn_headers_done(struct cl_host_conn *c, int body);
void cl_host_conn_body_done(struct cl_host_conn *c);
void cl_host_conn_request_done(struct cl_host_conn *c);
/* Shuts every client socket down (stopping: the library then sees them end). */
void cl_host_conn_shutdown_all(struct cl_host *h);
CL_MUST_CHECK cl_err cl_host_sweep_start(struct cl_host *h);
void cl_host_sweep_stop(struct cl_host *h);

/* Interactive receipts (receipts.c): a writer thread storing RECEIPT frames
 * in the results + receipts store, in chain order, never blocking a caller. */
struct cl_host_receipts;
CL_MUST_CHECK cl_err cl_host_receipts_start(struct cl_host *h, const char *url, struct cl_host_receipts **out);
/* Stores what is queued, then stops. */
void cl_host_receipts_stop(struct cl_host_receipts *R);
/* Queues one RECEIPT frame's payload (copied); counts and logs a failure. */
void cl_host_receipts_take(struct cl_host *h, const struct cl_buf *frame);

/* Enclave worker pool (pool.c). */
CL_MUST_CHECK cl_err cl_host_pool_start(struct cl_host *h);
/* Claims a queue slot: 1 when granted, 0 when the queue is full or the
 * host is stopping. A granted slot must be used by cl_host_pool_push. */
int cl_host_pool_reserve(struct cl_host *h);
void cl_host_pool_push(struct cl_host *h, struct cl_host_job *j);
/* Runs every queued job (they fail fast once stopping is set) and joins. */
void cl_host_pool_stop(struct cl_host *h);

#endif
