/* cloister-host lifecycle: configuration checks, then the HTTP API and the
 * boot services on their own threads. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_BOOT_CONFIG_MAX (64u << 10)
#define CL_HOST_BODY_BUDGET_MIN ((uint64_t)256 << 20)

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
    if (cfg->capture_dir) {
        CL_ENSURE_D(realpath(cfg->capture_dir, h->capture_dir), CL_E_NET_HOST_CONFIG, "capture directory errno %d",
                    errno);
        CL_ENSURE_D(stat(h->capture_dir, &st) == 0 && S_ISDIR(st.st_mode), CL_E_NET_HOST_CONFIG,
                    "capture path is not a directory");
        CL_LOG(CL_LOG_WARN, "capture_enabled");
    }
    CL_GUARD(cl_host_boot_config(&h->cfg, &h->boot_cfg));
    CL_ENSURE_D(pipe2(h->stop_pipe, O_CLOEXEC) == 0, CL_E_CORE_IO, "pipe errno %d", errno);
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

void cl_host_stop(struct cl_host *h)
{
    if (!h)
        return;
    if (h->stop_pipe[1] >= 0) {
        char b = 1;
        (void)!write(h->stop_pipe[1], &b, 1);
    }
    cl_host_http_stop(h);
    cl_host_services_stop(h);
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
