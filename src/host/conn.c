/* The host's own bookkeeping of HTTP client connections, in front of
 * libmicrohttpd: the host-wide and per-client connection limits (checked at
 * accept, before libmicrohttpd sees the socket, with a 503 answer), and the
 * header- and body-completion deadlines (libmicrohttpd's idle timer restarts
 * with every byte, so a client trickling one byte at a time would otherwise
 * hold its connection for ever). A sweeper thread enforces the deadlines and
 * finishes refused connections. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/log.h"
#include "host_internal.h"

#define CL_HOST_CLIENT_BUCKETS 1024u
#define CL_HOST_SWEEP_MS 100
#define CL_HOST_LINGER_US 1000000u
#define CL_HOST_UNATTACHED_US 10000000u /* handed over but never started: dropped by the library */
#define CL_HOST_ATTACH_GRACE_US 100000u
#define CL_HOST_PEEK_US 500000u /* how often an idle connection is checked for a departed client */
#define CL_HOST_KILLED_US 1000000u /* a shut-down connection the library has not closed by then stops counting */

struct cl_host_client {
    struct cl_host_client *next;
    uint8_t addr[16];
    unsigned n;
};

static void cl_host_addr_key(const struct sockaddr *sa, socklen_t sl, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET && sl >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        key[10] = key[11] = 0xff; /* as an IPv4-mapped IPv6 address */
        memcpy(key + 12, &s4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && sl >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

static unsigned cl_host_addr_hash(const uint8_t key[16])
{
    uint32_t x = 2166136261u;
    for (int i = 0; i < 16; i++)
        x = (x ^ key[i]) * 16777619u;
    return x % CL_HOST_CLIENT_BUCKETS;
}

cl_err cl_host_conn_init(struct cl_host *h)
{
    cl_err rc = CL_OK;
    struct rlimit rl;
    CL_ENSURE_D(pthread_mutex_init(&h->conn_mu, NULL) == 0, CL_E_CORE_THREAD, "connection mutex");
    h->conn_mu_init = 1;
    CL_ENSURE_D(getrlimit(RLIMIT_NOFILE, &rl) == 0, CL_E_CORE_IO, "getrlimit errno %d", errno);
    h->by_fd_n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 22) ? (1u << 22) : (size_t)rl.rlim_cur;
    h->by_fd = calloc(h->by_fd_n, sizeof(*h->by_fd));
    h->clients = calloc(CL_HOST_CLIENT_BUCKETS, sizeof(*h->clients));
    CL_ENSURE(h->by_fd && h->clients, CL_E_CORE_NOMEM);
out:
    return rc;
}

/* Takes a connection off the per-client and host-wide counts, once. Under conn_mu. */
static void cl_host_conn_uncount(struct cl_host *h, struct cl_host_conn *c)
{
    if (c->uncounted)
        return;
    c->uncounted = 1;
    struct cl_host_client *cl = c->client;
    c->client = NULL;
    if (cl && --cl->n == 0) {
        struct cl_host_client **pp = &h->clients[cl_host_addr_hash(cl->addr)];
        while (*pp != cl)
            pp = &(*pp)->next;
        *pp = cl->next;
        free(cl);
    }
    h->conn_count--;
}

/* Under conn_mu. */
static void cl_host_conn_unlink(struct cl_host *h, struct cl_host_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->mhd_fd >= 0 && (size_t)c->mhd_fd < h->by_fd_n && h->by_fd[c->mhd_fd] == c)
        h->by_fd[c->mhd_fd] = NULL;
    cl_host_conn_uncount(h, c);
    if (c->ctl_fd >= 0)
        close(c->ctl_fd);
    free(c);
}

void cl_host_conn_fini(struct cl_host *h)
{
    if (!h->conn_mu_init)
        return;
    while (h->conns)
        cl_host_conn_unlink(h, h->conns);
    for (unsigned i = 0; i < h->linger_n; i++)
        close(h->linger[i].fd);
    h->linger_n = 0;
    free(h->by_fd);
    h->by_fd = NULL;
    if (h->clients)
        for (unsigned i = 0; i < CL_HOST_CLIENT_BUCKETS; i++)
            while (h->clients[i]) {
                struct cl_host_client *n = h->clients[i]->next;
                free(h->clients[i]);
                h->clients[i] = n;
            }
    free(h->clients);
    h->clients = NULL;
    pthread_mutex_destroy(&h->conn_mu);
    h->conn_mu_init = 0;
}

static void cl_host_drain(int fd)
{
    char b[4096];
    for (int i = 0; i < 16; i++)
        if (recv(fd, b, sizeof(b), MSG_DONTWAIT) <= 0)
            break;
}

/* Answers 503 on a connection over a limit. Under conn_mu. */
static void cl_host_refuse(struct cl_host *h, int fd, int per_client)
{
    static const char host_body[] = "{\"error\":\"too many connections\"}";
    static const char client_body[] = "{\"error\":\"too many connections from this client\"}";
    static uint64_t last_log_us[2];
    const char *body = per_client ? client_body : host_body;
    char msg[400];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Retry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n%s",
                     strlen(body), body);
    atomic_fetch_add(&h->m.conn_rejects[per_client], 1);
    uint64_t now = cl_now_us();
    if (now - last_log_us[per_client] > 1000000u) {
        last_log_us[per_client] = now;
        const struct cl_log_field reason = {CL_LOGF_LITERAL, "reason", {.lit = per_client ? "client_limit" : "host_limit"}};
        CL_LOG(CL_LOG_WARN, "http_connection_refused", reason,
               CL_LOG_COUNT("refused_total", atomic_load(&h->m.conn_rejects[per_client])),
               CL_LOG_COUNT("open", h->conn_count),
               CL_LOG_ERR(per_client ? CL_E_NET_HOST_CLIENT_LIMIT : CL_E_NET_HOST_CONN_LIMIT));
    }
    cl_host_drain(fd);
    (void)!send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)shutdown(fd, SHUT_WR);
    if (h->linger_n < CL_HOST_LINGER_MAX)
        h->linger[h->linger_n++] = (struct cl_host_linger){fd, now};
    else
        close(fd);
}

int cl_host_conn_admit(struct cl_host *h, int fd, const struct sockaddr *peer, socklen_t pl, struct cl_host_conn **out)
{
    uint8_t key[16];
    struct cl_host_client *cl;
    cl_host_addr_key(peer, pl, key);
    unsigned b = cl_host_addr_hash(key);
    struct cl_host_conn *c = calloc(1, sizeof(*c));
    pthread_mutex_lock(&h->conn_mu);
    for (cl = h->clients[b]; cl && memcmp(cl->addr, key, 16); cl = cl->next)
        ;
    int per_client = cl && cl->n >= h->cfg.max_client_connections;
    if (!c || h->conn_count >= h->max_conns || per_client) {
        cl_host_refuse(h, fd, per_client);
        pthread_mutex_unlock(&h->conn_mu);
        free(c);
        return 0;
    }
    if (!cl) {
        cl = calloc(1, sizeof(*cl));
        if (!cl) {
            cl_host_refuse(h, fd, 0);
            pthread_mutex_unlock(&h->conn_mu);
            free(c);
            return 0;
        }
        memcpy(cl->addr, key, 16);
        cl->next = h->clients[b];
        h->clients[b] = cl;
    }
    cl->n++;
    h->conn_count++;
    c->client = cl;
    c->ctl_fd = c->mhd_fd = -1;
    c->t_accept_us = cl_now_us();
    atomic_init(&c->phase, CL_HOST_PHASE_HEADERS);
    atomic_init(&c->phase_start_us, c->t_accept_us);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    pthread_mutex_unlock(&h->conn_mu);
    atomic_fetch_add(&h->m.conn_accepted, 1);
    *out = c;
    return 1;
}

void cl_host_conn_release(struct cl_host *h, struct cl_host_conn *c)
{
    pthread_mutex_lock(&h->conn_mu);
    cl_host_conn_unlink(h, c);
    pthread_mutex_unlock(&h->conn_mu);
}

int cl_host_conn_bind(struct cl_host *h, struct cl_host_conn *c, int mhd_fd)
{
    int ctl = fcntl(mhd_fd, F_DUPFD_CLOEXEC, 0);
    pthread_mutex_lock(&h->conn_mu);
    if (ctl < 0 || mhd_fd < 0 || (size_t)mhd_fd >= h->by_fd_n) {
        cl_host_conn_unlink(h, c);
        pthread_mutex_unlock(&h->conn_mu);
        if (ctl >= 0)
            close(ctl);
        return 0;
    }
    /* The number is free again, so whatever we knew under it is gone: the
     * library dropped it without reporting a start. */
    if (h->by_fd[mhd_fd])
        cl_host_conn_unlink(h, h->by_fd[mhd_fd]);
    c->ctl_fd = ctl;
    c->mhd_fd = mhd_fd;
    h->by_fd[mhd_fd] = c;
    pthread_mutex_unlock(&h->conn_mu);
    return 1;
}

void cl_host_conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode code)
{
    struct cl_host *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        pthread_mutex_lock(&h->conn_mu);
        if (ci && ci->connect_fd >= 0 && (size_t)ci->connect_fd < h->by_fd_n && h->by_fd[ci->connect_fd]) {
            struct cl_host_conn *c = h->by_fd[ci->connect_fd];
            c->attached = 1;
            *socket_context = c;
        }
        pthread_mutex_unlock(&h->conn_mu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        cl_host_conn_release(h, *socket_context);
        *socket_context = NULL;
    }
}

void cl_host_conn_headers_done(struct cl_host_conn *c, int body)
{
    if (!c)
        return;
    atomic_store(&c->phase_start_us, cl_now_us());
    atomic_store(&c->phase, body ? CL_HOST_PHASE_BODY : CL_HOST_PHASE_NONE);
}

void cl_host_conn_body_done(struct cl_host_conn *c)
{
    if (c)
        atomic_store(&c->phase, CL_HOST_PHASE_NONE);
}

void cl_host_conn_request_done(struct cl_host_conn *c)
{
    if (!c)
        return;
    atomic_store(&c->phase_start_us, cl_now_us());
    atomic_store(&c->phase, CL_HOST_PHASE_HEADERS);
}

void cl_host_conn_shutdown_all(struct cl_host *h)
{
    if (!h->conn_mu_init)
        return;
    pthread_mutex_lock(&h->conn_mu);
    for (struct cl_host_conn *c = h->conns; c; c = c->next)
        if (c->ctl_fd >= 0)
            (void)shutdown(c->ctl_fd, SHUT_RDWR);
    pthread_mutex_unlock(&h->conn_mu);
}

/* Whether libmicrohttpd has let go of a connection it never reported as
 * started: its descriptor number is closed or now names another socket. (It
 * can close a connection whose client left before it was set up without
 * telling us; our duplicate would then hold the socket in CLOSE-WAIT and the
 * client's slot for ever.) Under conn_mu: a number is re-bound only under it. */
static int cl_host_conn_dropped(const struct cl_host_conn *c)
{
    struct stat a, b;
    if (fstat(c->ctl_fd, &a) != 0)
        return 1;
    if (fstat(c->mhd_fd, &b) != 0)
        return 1;
    return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

/* Whether the client of a connection waiting for its next request has gone
 * (end of stream, nothing pending). libmicrohttpd can miss that end of stream
 * on a keep-alive connection when the client leaves while the answer is being
 * sent; the socket would then sit in CLOSE-WAIT holding a slot of the client's
 * limit until the header deadline. Shutting it down wakes the library. */
static int cl_host_conn_left(struct cl_host_conn *c, uint64_t now)
{
    char b;
    if (now - c->t_peek_us < CL_HOST_PEEK_US)
        return 0;
    c->t_peek_us = now;
    return recv(c->ctl_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void cl_host_sweep_once(struct cl_host *h)
{
    uint64_t now = cl_now_us(), limit[CL_HOST_PHASE_COUNT] = {0};
    unsigned killed[CL_HOST_PHASE_COUNT] = {0}, late = 0;
    limit[CL_HOST_PHASE_HEADERS] = (uint64_t)h->cfg.header_timeout_ms * 1000u;
    limit[CL_HOST_PHASE_BODY] = (uint64_t)h->cfg.body_timeout_ms * 1000u;
    pthread_mutex_lock(&h->conn_mu);
    for (struct cl_host_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        /* Handed over but not started: the library dropped it, or its client
         * left before it was set up (the library then notices nothing). */
        if (!c->attached && c->mhd_fd >= 0 && now - c->t_accept_us > CL_HOST_ATTACH_GRACE_US &&
            (now - c->t_accept_us > CL_HOST_UNATTACHED_US || cl_host_conn_dropped(c) || cl_host_conn_left(c, now))) {
            cl_host_conn_unlink(h, c);
            late++;
            continue;
        }
        /* Shut down, yet the library has not closed it: whatever it missed,
         * a dead socket must not hold its client's slot. Its record stays
         * until the library reports it closed. */
        if (c->killed && !c->uncounted && now - c->t_killed_us > CL_HOST_KILLED_US) {
            cl_host_conn_uncount(h, c);
            late++;
            continue;
        }
        uint64_t t0 = atomic_load(&c->phase_start_us);
        int ph = atomic_load(&c->phase);
        if (!c->killed && c->attached && ph == CL_HOST_PHASE_HEADERS && c->ctl_fd >= 0 && now >= t0 &&
            now - t0 > CL_HOST_ATTACH_GRACE_US && cl_host_conn_left(c, now)) {
            (void)shutdown(c->ctl_fd, SHUT_RDWR);
            c->killed = 1;
            c->t_killed_us = now;
            continue;
        }
        if (c->killed || ph <= CL_HOST_PHASE_NONE || ph >= CL_HOST_PHASE_COUNT || c->ctl_fd < 0 || now < t0 ||
            now - t0 <= limit[ph])
            continue;
        /* libmicrohttpd sees end-of-stream and closes the connection itself. */
        (void)shutdown(c->ctl_fd, SHUT_RDWR);
        c->killed = 1;
        c->t_killed_us = now;
        killed[ph]++;
    }
    for (unsigned i = 0; i < h->linger_n;) {
        struct cl_host_linger *l = &h->linger[i];
        char b[4096];
        ssize_t r = -1;
        int k = 0;
        while (k++ < 16 && (r = recv(l->fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
            ;
        int done = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
        if (done || now - l->t0_us > CL_HOST_LINGER_US) {
            close(l->fd);
            h->linger[i] = h->linger[--h->linger_n];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&h->conn_mu);
    if (late) {
        atomic_fetch_add(&h->m.conn_released_late, late);
        CL_LOG(CL_LOG_DEBUG, "http_connection_released", CL_LOG_COUNT("connections", late));
    }
    if (killed[CL_HOST_PHASE_HEADERS]) {
        atomic_fetch_add(&h->m.header_timeouts, killed[CL_HOST_PHASE_HEADERS]);
        CL_LOG(CL_LOG_WARN, "http_header_timeout", CL_LOG_COUNT("connections", killed[CL_HOST_PHASE_HEADERS]),
               CL_LOG_COUNT("header_timeout_ms", h->cfg.header_timeout_ms),
               CL_LOG_ERR(CL_E_NET_HOST_HEADER_TIMEOUT));
    }
    if (killed[CL_HOST_PHASE_BODY]) {
        atomic_fetch_add(&h->m.body_timeouts, killed[CL_HOST_PHASE_BODY]);
        CL_LOG(CL_LOG_WARN, "http_body_timeout", CL_LOG_COUNT("connections", killed[CL_HOST_PHASE_BODY]),
               CL_LOG_COUNT("body_timeout_ms", h->cfg.body_timeout_ms), CL_LOG_ERR(CL_E_NET_HOST_BODY_TIMEOUT));
    }
}

static void *cl_host_sweep_main(void *arg)
{
    struct cl_host *h = arg;
    for (;;) {
        struct pollfd p = {h->stop_pipe[0], POLLIN, 0};
        int r = poll(&p, 1, CL_HOST_SWEEP_MS);
        if (r > 0 || (r < 0 && errno != EINTR))
            break;
        cl_host_sweep_once(h);
    }
    return NULL;
}

cl_err cl_host_sweep_start(struct cl_host *h)
{
    if (pthread_create(&h->sweep_thr, NULL, cl_host_sweep_main, h) != 0)
        return cl_err_fail(CL_E_CORE_THREAD, "connection sweeper thread");
    h->sweep_started = 1;
    return CL_OK;
}

void cl_host_sweep_stop(struct cl_host *h)
{
    if (h->sweep_started)
        pthread_join(h->sweep_thr, NULL);
    h->sweep_started = 0;
}
