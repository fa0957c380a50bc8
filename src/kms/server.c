/* libmicrohttpd front end for the KMS request handler. One internal polling
 * thread serves every connection, so requests (and SQLite) are serialised. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "cloister/file.h"
#include "cloister/kms.h"
#include "cloister/listen.h"
#include "cloister/log.h"
#include "cloister/sigv4.h"

struct cl_kms_server {
    struct MHD_Daemon *d;
    struct cl_kms_server_config cfg;
    uint16_t port;
    struct cl_buf cert, key;
};

struct cl_kms_conn {
    struct cl_buf body;
    bool too_large;
};

struct cl_kms_hdrs {
    struct cl_sigv4_header h[CL_SIGV4_MAX_HEADERS];
    size_t n;
    bool overflow;
};

static enum MHD_Result cl_kms_hdr_it(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct cl_kms_hdrs *hs = cls;
    if (hs->n == CL_SIGV4_MAX_HEADERS) {
        hs->overflow = true;
        return MHD_NO;
    }
    hs->h[hs->n].name = key;
    hs->h[hs->n].name_len = strlen(key);
    hs->h[hs->n].value = value ? value : "";
    hs->h[hs->n].value_len = value ? strlen(value) : 0;
    hs->n++;
    return MHD_YES;
}

static void cl_kms_free_body(void *p)
{
    struct cl_buf *b = p;
    cl_buf_free(b); /* secure buffer: wiped on release */
    free(b);
}

/* Hands the (possibly key-bearing) body to libmicrohttpd without a copy;
 * it is wiped and freed when the response is destroyed. */
static enum MHD_Result cl_kms_send(struct MHD_Connection *conn, struct cl_kms_response *r)
{
    struct cl_buf *b = malloc(sizeof(*b));
    if (!b)
        return MHD_NO;
    *b = r->body;
    cl_buf_init(&r->body, 1, CL_BUF_NONE);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
        b->len, b->data ? (void *)b->data : (void *)"", cl_kms_free_body, b);
    if (!resp) {
        cl_kms_free_body(b);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/x-amz-json-1.1");
    MHD_add_response_header(resp, "x-amzn-RequestId", r->request_id);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result cl_kms_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                     const char *version, const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    (void)version;
    struct cl_kms_server *s = cls;
    struct cl_kms_conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        cl_buf_init(&c->body, CL_KMS_MAX_REQUEST_BODY, CL_BUF_SECURE);
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->too_large && cl_buf_append(&c->body, upload_data, *upload_data_size) != CL_OK)
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct cl_kms_response r;
    cl_kms_response_init(&r);
    if (c->too_large) {
        r.status = 413;
        snprintf(r.request_id, sizeof(r.request_id), "-");
        if (cl_buf_append_str(&r.body, "{\"__type\":\"ValidationException\",\"message\":\"request body is larger "
                                       "than the service accepts\"}"))
            r.body.len = 0;
    } else {
        struct cl_kms_hdrs hs;
        memset(&hs, 0, sizeof(hs));
        MHD_get_connection_values(conn, MHD_HEADER_KIND, cl_kms_hdr_it, &hs);
        struct cl_sigv4_request req = {
            .method = method,
            .path = url,
            .query = NULL,
            .headers = hs.h,
            .n_headers = hs.n,
            .body = c->body.data,
            .body_len = c->body.len,
        };
        cl_kms_handle_http(&s->cfg, &req, &r);
    }
    enum MHD_Result ret = cl_kms_send(conn, &r);
    cl_kms_response_free(&r);
    return ret;
}

static void cl_kms_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                             enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct cl_kms_conn *c = *con_cls;
    if (c) {
        cl_buf_free(&c->body);
        free(c);
        *con_cls = NULL;
    }
}

static cl_err cl_kms_parse_listen(const char *addr, struct sockaddr_storage *ss, bool *v6)
{
    cl_err rc = cl_listen_parse(addr, CL_E_NET_URL, ss, NULL, NULL);
    if (rc == CL_OK)
        *v6 = ss->ss_family == AF_INET6;
    return rc;
}

cl_err cl_kms_server_start(const struct cl_kms_server_config *cfg, const struct cl_kms_listen *l,
                           struct cl_kms_server **out)
{
    cl_err rc = CL_OK;
    struct sockaddr_storage ss;
    bool v6 = false;
    struct cl_kms_server *s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    s->cfg = *cfg;
    cl_buf_init(&s->cert, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&s->key, 1 << 20, CL_BUF_SECURE);
    CL_GUARD(cl_kms_parse_listen(l->addr, &ss, &v6));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    CL_ENSURE_D(!l->tls_cert == !l->tls_key, CL_E_CORE_INVALID_ARG, "--tls-cert and --tls-key go together");
    if (l->tls_cert) {
        CL_GUARD(cl_file_read(l->tls_cert, 1 << 20, &s->cert));
        CL_GUARD(cl_buf_append_u8(&s->cert, 0));
        CL_GUARD(cl_file_read(l->tls_key, 1 << 20, &s->key));
        CL_GUARD(cl_buf_append_u8(&s->key, 0));
        flags |= MHD_USE_TLS;
        s->d = MHD_start_daemon(flags, 0, NULL, NULL, cl_kms_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                MHD_OPTION_NOTIFY_COMPLETED, cl_kms_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned)30, MHD_OPTION_HTTPS_MEM_CERT, (const char *)s->cert.data,
                                MHD_OPTION_HTTPS_MEM_KEY, (const char *)s->key.data, MHD_OPTION_END);
    } else {
        s->d = MHD_start_daemon(flags, 0, NULL, NULL, cl_kms_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                MHD_OPTION_NOTIFY_COMPLETED, cl_kms_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned)30, MHD_OPTION_END);
    }
    CL_ENSURE_D(s->d, CL_E_NET_HTTP, "could not listen on %s", "the given address");
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : 0;
    *out = s;
    s = NULL;
out:
    cl_kms_server_stop(s);
    return rc;
}

uint16_t cl_kms_server_port(const struct cl_kms_server *s) { return s->port; }

void cl_kms_server_stop(struct cl_kms_server *s)
{
    if (!s)
        return;
    if (s->d)
        MHD_stop_daemon(s->d);
    cl_buf_free(&s->cert);
    cl_buf_free(&s->key);
    free(s);
}
