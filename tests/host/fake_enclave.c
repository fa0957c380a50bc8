/* A stand-in enclave for the host's integration tests. It speaks the wire
 * protocol on the service port with canned answers, and can play the
 * enclave's side of the boot services (boot config, model stream, key-service
 * pipe). A TCP echo server stands in for the key service.
 *
 *   fake_enclave serve CID [ready|loading]   service port 5000 on CID
 *   fake_enclave boot                        BOOT_REQ on 3.5002, payload to stdout
 *   fake_enclave fetch-model OUT             read 3.5001 to EOF into OUT
 *   fake_enclave kms-roundtrip N             send N bytes through 3.8000, expect them echoed
 *   fake_enclave tcp-echo                    echo server on 127.0.0.1, prints its port
 *
 * OHTTP request bodies steer the answer: "SLOW" sleeps 3 s, "ERR" answers an
 * ERROR frame (429), "JUNK" answers a malformed frame, and for chunked
 * requests "DIE" makes the process exit after two chunks. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"

static const char *fe_state = "ready";

static void fe_sleep_ms(unsigned ms) { nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL); }

static int fe_starts(const struct cl_buf *b, const char *p)
{
    size_t n = strlen(p);
    return b->len >= n && !memcmp(b->data, p, n);
}

static cl_err fe_send_prefixed(int fd, enum cl_wire_type t, const char *prefix, const struct cl_buf *body)
{
    struct cl_buf o;
    cl_buf_init(&o, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    cl_err rc = cl_buf_append_str(&o, prefix);
    if (rc == CL_OK)
        rc = cl_buf_append(&o, body->data, body->len);
    if (rc == CL_OK)
        rc = cl_wire_send(fd, t, 0, o.data, o.len);
    cl_buf_free(&o);
    return rc;
}

static void *fe_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct cl_buf in;
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned flags = 0;
    cl_err rc = CL_OK;
    cl_buf_init(&in, CL_WIRE_MAX_FRAME, CL_BUF_NONE);
    if (cl_wire_recv(fd, CL_WIRE_MAX_FRAME, &t, &flags, &in) != CL_OK)
        goto out;
    switch (t) {
    case CL_WIRE_ATTEST_REQ: rc = fe_send_prefixed(fd, CL_WIRE_ATTEST_DOC, "FAKE-ATTESTATION-DOC:", &in); break;
    case CL_WIRE_STATUS_REQ: {
        char js[256];
        int n = snprintf(js, sizeof(js),
                         "{\"state\":\"%s\",\"model_sha256\":\"00\",\"sessions\":0,\"tokens_served\":[1,2.5e3,{}]}",
                         fe_state);
        rc = cl_wire_send(fd, CL_WIRE_STATUS_RES, 0, js, (size_t)n);
        break;
    }
    case CL_WIRE_OHTTP_REQ:
        if (fe_starts(&in, "SLOW"))
            fe_sleep_ms(3000);
        if (fe_starts(&in, "ERR")) {
            rc = cl_wire_send_error(fd, 429, CL_E_PROTO_LIMIT);
        } else if (fe_starts(&in, "JUNK")) {
            rc = cl_write_full(fd, "\xee\x00\x00\x00\x00\x00\x00\x01x", 9);
        } else if (!(flags & CL_WIRE_FLAG_CHUNKED)) {
            rc = fe_send_prefixed(fd, CL_WIRE_OHTTP_RES, "ENCRYPTED-RESPONSE:", &in);
        } else {
            for (int i = 0; rc == CL_OK && i < 5; i++) {
                char c[32];
                int n = snprintf(c, sizeof(c), "chunk-%d;", i);
                rc = cl_wire_send(fd, CL_WIRE_OHTTP_CHUNK, 0, c, (size_t)n);
                fe_sleep_ms(20);
                if (i == 1 && fe_starts(&in, "DIE")) {
                    fprintf(stderr, "fake_enclave: dying mid-stream\n");
                    _exit(3);
                }
            }
            if (rc == CL_OK)
                rc = cl_wire_send(fd, CL_WIRE_END, 0, NULL, 0);
        }
        break;
    default: rc = cl_wire_send_error(fd, 400, CL_E_PROTO_REQUEST_INVALID); break;
    }
    if (rc != CL_OK)
        fprintf(stderr, "fake_enclave: answer not sent\n");
out:
    cl_buf_free(&in);
    close(fd);
    return NULL;
}

static int fe_serve(uint32_t cid)
{
    int l = -1;
    if (cl_vsock_listen(cid, CL_WIRE_PORT_SERVICE, 16, &l) != CL_OK) {
        fprintf(stderr, "fake_enclave: cannot listen\n");
        return 1;
    }
    printf("serving\n");
    fflush(stdout);
    for (;;) {
        int fd = -1;
        pthread_t th;
        if (cl_vsock_accept(l, &fd) != CL_OK)
            continue;
        if (pthread_create(&th, NULL, fe_conn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(th);
    }
}

static int fe_boot(void)
{
    int fd = -1;
    struct cl_buf in;
    enum cl_wire_type t = CL_WIRE_NONE;
    unsigned flags = 0;
    cl_buf_init(&in, 1 << 16, CL_BUF_NONE);
    if (cl_vsock_connect(CL_WIRE_CID_PARENT, CL_WIRE_PORT_BOOT, &fd) != CL_OK ||
        cl_wire_send(fd, CL_WIRE_BOOT_REQ, 0, NULL, 0) != CL_OK ||
        cl_wire_recv(fd, 1 << 16, &t, &flags, &in) != CL_OK || t != CL_WIRE_BOOT_CONFIG) {
        fprintf(stderr, "fake_enclave: no boot config\n");
        return 1;
    }
    fwrite(in.data, 1, in.len, stdout);
    cl_buf_free(&in);
    close(fd);
    return 0;
}

static int fe_fetch_model(const char *out)
{
    int fd = -1;
    FILE *f = fopen(out, "wb");
    char b[65536];
    ssize_t n;
    if (!f || cl_vsock_connect(CL_WIRE_CID_PARENT, CL_WIRE_PORT_MODEL, &fd) != CL_OK) {
        fprintf(stderr, "fake_enclave: cannot fetch the model\n");
        return 1;
    }
    while ((n = read(fd, b, sizeof(b))) > 0)
        fwrite(b, 1, (size_t)n, f);
    fclose(f);
    close(fd);
    return n < 0;
}

static int fe_kms_roundtrip(size_t n)
{
    int fd = -1;
    uint8_t *out = malloc(n), *back = malloc(n);
    size_t got = 0;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(i * 7 + 3);
    if (cl_vsock_connect(CL_WIRE_CID_PARENT, CL_WIRE_PORT_KMS_PROXY, &fd) != CL_OK ||
        cl_write_full(fd, out, n) != CL_OK || cl_read_full(fd, back, n, &got) != CL_OK || memcmp(out, back, n)) {
        fprintf(stderr, "fake_enclave: key-service pipe failed after %zu bytes\n", got);
        return 1;
    }
    close(fd);
    free(out);
    free(back);
    printf("roundtrip ok %zu\n", n);
    return 0;
}

static void *fe_echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char b[65536];
    ssize_t n;
    while ((n = read(fd, b, sizeof(b))) > 0)
        if (cl_write_full(fd, b, (size_t)n) != CL_OK)
            break;
    close(fd);
    return NULL;
}

static int fe_tcp_echo(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        return 1;
    printf("%u\n", ntohs(sa.sin_port));
    fflush(stdout);
    for (;;) {
        pthread_t th;
        int fd = accept(l, NULL, NULL);
        if (fd < 0)
            continue;
        if (pthread_create(&th, NULL, fe_echo_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(th);
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && !strcmp(argv[1], "serve")) {
        if (argc >= 4)
            fe_state = argv[3];
        return fe_serve((uint32_t)strtoul(argv[2], NULL, 10));
    }
    if (argc == 2 && !strcmp(argv[1], "boot"))
        return fe_boot();
    if (argc == 3 && !strcmp(argv[1], "fetch-model"))
        return fe_fetch_model(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "kms-roundtrip"))
        return fe_kms_roundtrip((size_t)strtoul(argv[2], NULL, 10));
    if (argc == 2 && !strcmp(argv[1], "tcp-echo"))
        return fe_tcp_echo();
    fprintf(stderr, "usage: fake_enclave serve CID [STATE] | boot | fetch-model OUT | kms-roundtrip N | tcp-echo\n");
    return 2;
}
