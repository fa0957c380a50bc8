/* A test enclave application for cloister-sim (libc only). It probes its
 * sandbox, asks the simulated NSM for an attestation document with the nonce
 * given as argv[1] (hex), prints "key=value" lines, then answers one "ping"
 * on vsock port 5005 with "pong" and exits 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int cloister_enclave_main(int argc, char **argv);

static void report(const char *k, const char *v) { printf("%s=%s\n", k, v); }

static void probe_tcp(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("tcp=blocked-socket:%d\n", errno);
        return;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
    sa.sin_addr.s_addr = htonl(0x01010101);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    printf("tcp=%s:%d\n", r == 0 ? "CONNECTED" : "blocked-connect", r == 0 ? 0 : errno);
    close(fd);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void attest(const char *nonce_hex)
{
    uint8_t req[256], resp[0x3000];
    size_t n = 0, nl = strlen(nonce_hex) / 2;
    if (nl == 0 || nl > 64) {
        report("attest", "bad-nonce");
        return;
    }
    const char *fd_s = getenv("CLOISTER_NSM_FD");
    if (!fd_s) {
        report("attest", "no-nsm");
        return;
    }
    int fd = atoi(fd_s);
    /* {"Attestation": {"user_data": h'656e636c617665', "nonce": h'..', "public_key": null}} */
    static const uint8_t head[] = {0xa1, 0x6b, 'A', 't', 't', 'e', 's', 't', 'a', 't', 'i', 'o', 'n', 0xa3,
                                   0x69, 'u', 's', 'e', 'r', '_', 'd', 'a', 't', 'a', 0x47, 'e', 'n', 'c',
                                   'l', 'a', 'v', 'e', 0x65, 'n', 'o', 'n', 'c', 'e', 0x58};
    memcpy(req, head, sizeof(head));
    n = sizeof(head);
    req[n++] = (uint8_t)nl;
    for (size_t i = 0; i < nl; i++)
        req[n++] = (uint8_t)(hexval(nonce_hex[2 * i]) << 4 | hexval(nonce_hex[2 * i + 1]));
    static const uint8_t tail[] = {0x6a, 'p', 'u', 'b', 'l', 'i', 'c', '_', 'k', 'e', 'y', 0xf6};
    memcpy(req + n, tail, sizeof(tail));
    n += sizeof(tail);
    if (send(fd, req, n, 0) != (ssize_t)n) {
        printf("attest=send-failed:%d\n", errno);
        return;
    }
    ssize_t r = recv(fd, resp, sizeof(resp), 0);
    if (r <= 0) {
        printf("attest=recv-failed:%d\n", errno);
        return;
    }
    printf("nsm_response=");
    for (ssize_t i = 0; i < r; i++)
        printf("%02x", resp[i]);
    printf("\n");
    /* DescribePCR 0 as well, to compare with `cloister-sim measure`. */
    static const uint8_t dpcr[] = {0xa1, 0x6b, 'D', 'e', 's', 'c', 'r', 'i', 'b', 'e', 'P', 'C', 'R',
                                   0xa1, 0x65, 'i', 'n', 'd', 'e', 'x', 0x00};
    if (send(fd, dpcr, sizeof(dpcr), 0) == (ssize_t)sizeof(dpcr) && (r = recv(fd, resp, sizeof(resp), 0)) > 0) {
        printf("describe_pcr0=");
        for (ssize_t i = 0; i < r; i++)
            printf("%02x", resp[i]);
        printf("\n");
    }
}

static void serve_vsock(void)
{
    const char *dir = getenv("CLOISTER_VSOCK_DIR"), *cid = getenv("CLOISTER_VSOCK_CID");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!dir || !cid) {
        report("vsock", "no-env");
        return;
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.5005", dir, cid);
    unlink(sa.sun_path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0) {
        printf("vsock=listen-failed:%d\n", errno);
        return;
    }
    report("ready", "1");
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    char buf[8] = {0};
    if (c >= 0 && read(c, buf, 4) == 4 && !memcmp(buf, "ping", 4) && write(c, "pong", 4) == 4)
        report("vsock", "ok");
    else
        report("vsock", "failed");
    if (c >= 0)
        close(c);
    close(l);
    unlink(sa.sun_path);
}

int cloister_enclave_main(int argc, char **argv)
{
    char host[64] = "";
    gethostname(host, sizeof(host));
    printf("pid=%d\nuid=%d\nhostname=%s\n", (int)getpid(), (int)getuid(), host);
    printf("dumpable=%d\nno_new_privs=%d\n", prctl(PR_GET_DUMPABLE), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    printf("set_dumpable=%s\n", prctl(PR_SET_DUMPABLE, 1) == 0 ? "ALLOWED" : "blocked");
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    printf("core_limit=%llu\n", (unsigned long long)rl.rlim_cur);
    probe_tcp();
    printf("unix_socket=%s\n", socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? "ok" : "blocked");
    printf("execve=%s\n", execl("/bin/true", "true", (char *)NULL) == 0 ? "ALLOWED" : "blocked");
    printf("ptrace_traceme=%s\n", ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0 ? "ALLOWED" : "blocked");
    void *big = malloc((size_t)1 << 30);
    printf("alloc_1g=%s\n", big ? "ok" : "failed");
    free(big);
    if (argc > 1)
        attest(argv[1]);
    fflush(stdout);
    serve_vsock();
    fflush(stdout);
    return 0;
}
