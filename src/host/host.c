/* cloister-host lifecycle: configuration checks, then the HTTP API and the
 * boot services on their own threads. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_BOOT_CONFIG_MAX (64u << 10)
#define CL_HOST_BODY_BUDGET_MIN ((uint64_t)256 << 20)

/* Descriptors per client connection: the socket and our duplicate of it
 * (conn.c), plus with capture a socket pair and two files. */
static uint64_t cl_host_fds_needed(const struct cl_host *h, unsigned conns)
{
    uint64_t per_conn = h->capture_dir[0] ? 6u : 2u;
    return (uint64_t)conns * per_conn + (uint64_t)h->cfg.enclave_workers * (h->capture_dir[0] ? 5u : 1u) + 256u;
}

/* Raises the soft RLIMIT_NOFILE to what the connection limit needs. The
 * default limit shrinks to fit the hard limit; an explicit one must fit. */
static cl_err cl_host_fit_nofile(struct cl_host *h)
{
    cl_err rc = CL_OK;
    struct rlimit rl;
    unsigned want = h->cfg.max_connections ? h->cfg.max_connections : CL_HOST_DEFAULT_MAX_CONNECTIONS;
    CL_ENSURE_D(getrlimit(RLIMIT_NOFILE, &rl) == 0, CL_E_CORE_IO, "getrlimit errno %d", errno);
    uint64_t need = cl_host_fds_needed(h, want), hard = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
    if (need > hard) {
        CL_ENSURE_D(!h->cfg.max_connections, CL_E_NET_HOST_CONFIG,
                    "--max-connections %u needs %llu file descriptors; the hard RLIMIT_NOFILE is %llu "
                    "(raise it, e.g. ulimit -Hn, or lower --max-connections)",
                    want, (unsigned long long)need, (unsigned long long)hard);
        while (want > 16 && cl_host_fds_needed(h, want) > hard)
            want /= 2;
        CL_ENSURE_D(cl_host_fds_needed(h, want) <= hard, CL_E_NET_HOST_CONFIG,
                    "the hard RLIMIT_NOFILE (%llu) is too low for 16 connections", (unsigned long long)hard);
        need = cl_host_fds_needed(h, want);
        CL_LOG(CL_LOG_WARN, "max_connections_lowered", CL_LOG_COUNT("max_connections", want),
               CL_LOG_COUNT("nofile_hard", hard));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        uint64_t from = rl.rlim_cur;
        rl.rlim_cur = need;
        CL_ENSURE_D(setrlimit(RLIMIT_NOFILE, &rl) == 0, CL_E_NET_HOST_CONFIG, "setrlimit RLIMIT_NOFILE %llu errno %d",
                    (unsigned long long)need, errno);
        CL_LOG(CL_LOG_INFO, "nofile_raised", CL_LOG_COUNT("from", from), CL_LOG_COUNT("to", need));
    }
    h->max_conns = want;
out:
    return rc;
}

cl_err cl_host_start(const struct cl_host_config *cfg, struct cl_host **out)
{
    cl_err rc = CL_OK;
    struct stat st;
    struct cl_host *h = calloc(1, sizeof(*h));
    CL_ENSURE(h, CL_E_CORE_NOMEM);
    h->cfg = *cfg;
    h->http_fd = -1;
    h->stop_pipe[0] = h->stop_pipe[1] = -1;
    for (int s = 0; s < CL_HOST_SVC_COUNT; s++)
        h->svc_fd[s] = -1;
    cl_buf_init(&h->boot_cfg, CL_HOST_BOOT_CONFIG_MAX, CL_BUF_SECURE);
    if (!h->cfg.max_body)
        h->cfg.max_body = CL_HOST_DEFAULT_MAX_BODY;
    if (!h->cfg.timeout_ms)
        h->cfg.timeout_ms = CL_HOST_DEFAULT_TIMEOUT_MS;
    if (!h->cfg.max_tokens)
        h->cfg.max_tokens = CL_HOST_DEFAULT_MAX_TOKENS;
    if (!h->cfg.max_sessions)
        h->cfg.max_sessions = CL_HOST_DEFAULT_MAX_SESSIONS;
    if (!h->cfg.max_client_connections)
        h->cfg.max_client_connections = CL_HOST_DEFAULT_MAX_CLIENT_CONNECTIONS;
    if (!h->cfg.header_timeout_ms)
        h->cfg.header_timeout_ms = CL_HOST_DEFAULT_HEADER_TIMEOUT_MS;
    if (!h->cfg.body_timeout_ms)
        h->cfg.body_timeout_ms = CL_HOST_DEFAULT_BODY_TIMEOUT_MS;
    if (!h->cfg.idle_timeout_s)
        h->cfg.idle_timeout_s = CL_HOST_DEFAULT_IDLE_TIMEOUT_S;
    if (!h->cfg.enclave_workers)
        h->cfg.enclave_workers = CL_HOST_DEFAULT_ENCLAVE_WORKERS;
    if (!h->cfg.enclave_queue)
        h->cfg.enclave_queue = CL_HOST_DEFAULT_ENCLAVE_QUEUE;
    CL_ENSURE_D(h->cfg.max_connections <= CL_HOST_MAX_CONNECTIONS_LIMIT && h->cfg.http_threads <= CL_HOST_MAX_HTTP_THREADS &&
                    h->cfg.enclave_workers <= CL_HOST_MAX_ENCLAVE_WORKERS,
                CL_E_NET_HOST_CONFIG, "connection, thread or worker count over its limit");

    /* All connections together hold at most this much request body. */
    h->body_budget = (uint64_t)h->cfg.max_body * 2 > CL_HOST_BODY_BUDGET_MIN ? (uint64_t)h->cfg.max_body * 2
                                                                            : CL_HOST_BODY_BUDGET_MIN;
    if (h->cfg.max_inflight)
        h->body_budget = h->cfg.max_inflight;
    CL_ENSURE_D(h->body_budget >= h->cfg.max_body, CL_E_NET_HOST_CONFIG,
                "in-flight body budget is smaller than the largest body");
    CL_ENSURE_D(h->cfg.max_body <= CL_WIRE_MAX_FRAME, CL_E_NET_HOST_CONFIG, "max body over the frame limit %u",
                CL_WIRE_MAX_FRAME);
    CL_ENSURE_D(h->cfg.model_path, CL_E_NET_HOST_CONFIG, "model path missing");
    CL_ENSURE_D(stat(h->cfg.model_path, &st) == 0 && S_ISREG(st.st_mode), CL_E_NET_HOST_CONFIG,
                "model file is missing or not a regular file");
    CL_ENSURE_D(!h->cfg.mmproj_path || (stat(h->cfg.mmproj_path, &st) == 0 && S_ISREG(st.st_mode)),
                CL_E_NET_HOST_CONFIG, "projector file is missing or not a regular file");
    if (cfg->capture_dir) {
        CL_ENSURE_D(realpath(cfg->capture_dir, h->capture_dir), CL_E_NET_HOST_CONFIG, "capture directory errno %d",
                    errno);
        CL_ENSURE_D(stat(h->capture_dir, &st) == 0 && S_ISDIR(st.st_mode), CL_E_NET_HOST_CONFIG,
                    "capture path is not a directory");
        CL_LOG(CL_LOG_WARN, "capture_enabled");
    }
    CL_GUARD(cl_host_fit_nofile(h));
    CL_GUARD(cl_host_boot_config(&h->cfg, &h->boot_cfg));
    CL_ENSURE_D(pipe2(h->stop_pipe, O_CLOEXEC) == 0, CL_E_CORE_IO, "pipe errno %d", errno);
    if (h->cfg.receipts_url) {
        CL_GUARD(cl_host_receipts_start(h, h->cfg.receipts_url, &h->receipts));
        CL_LOG(CL_LOG_INFO, "receipts_stored");
    } else {
        CL_LOG(CL_LOG_WARN, "receipts_discarded"); /* the enclave signs them; nobody keeps them */
    }
    CL_GUARD(cl_host_services_start(h));
    CL_GUARD(cl_host_http_start(h));
    CL_LOG(CL_LOG_INFO, "host_started", CL_LOG_COUNT("port", h->port), CL_LOG_COUNT("enclave_cid", h->cfg.enclave_cid),
           CL_LOG_SIZE("max_body", h->cfg.max_body), CL_LOG_COUNT("timeout_ms", h->cfg.timeout_ms));
    *out = h;
    h = NULL;
out:
    cl_host_stop(h);
    return rc;
}

uint16_t cl_host_port(const struct cl_host *h) { return h->port; }

unsigned cl_host_max_connections(const struct cl_host *h) { return h->max_conns; }

void cl_host_stop(struct cl_host *h)
{
    if (!h)
        return;
    atomic_store(&h->stopping, 1);
    if (h->stop_pipe[1] >= 0) {
        char b = 1;
        (void)!write(h->stop_pipe[1], &b, 1);
    }
    cl_host_http_stop(h);
    cl_host_services_stop(h);
    cl_host_receipts_stop(h->receipts); /* after the workers that feed it */
    h->receipts = NULL;
    /* Detached workers hold h; give them a moment, else leave h allocated. */
    for (int i = 0; i < 200 && atomic_load(&h->workers); i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    unsigned left = atomic_load(&h->workers);
    if (left) {
        CL_LOG(CL_LOG_WARN, "host_stopped_with_workers", CL_LOG_COUNT("workers", left));
        return;
    }
    cl_buf_free(&h->boot_cfg);
    if (h->stop_pipe[0] >= 0)
        close(h->stop_pipe[0]);
    if (h->stop_pipe[1] >= 0)
        close(h->stop_pipe[1]);
    free(h);
}
