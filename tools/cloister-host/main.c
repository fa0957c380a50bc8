/* cloister-host: the untrusted bridge between HTTP clients and the enclave. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/bootcfg.h"
#include "cloister/host.h"
#include "cloister/log.h"
#include "cloister/vsock.h"
#include "cloister/wire.h"

enum { CL_HOST_EXIT_OK = 0, CL_HOST_EXIT_FAIL = 1, CL_HOST_EXIT_USAGE = 2 };

static void cl_host_help(FILE *f)
{
    fprintf(f,
            "usage: cloister-host --listen ADDR:PORT --enclave-cid N [--vsock-dir DIR]\n"
            "                     --model MODEL.sealed --kms URL --kms-credentials FILE\n"
            "                     [--max-body BYTES] [--max-inflight BYTES] [--timeout-ms N] [--max-tokens N]\n"
            "                     [--max-prompt-tokens N] [--max-sessions N] [--kv-cache f16|f32]\n"
            "                     [--max-connections N]\n"
            "                     [--mmproj PROJECTOR.sealed] [--max-images N] [--max-image-bytes N]\n"
            "                     [--max-client-connections N] [--header-timeout-ms N] [--body-timeout-ms N]\n"
            "                     [--idle-timeout-s N] [--http-threads N] [--enclave-workers N] [--enclave-queue N]\n"
            "                     [--receipts sqlite:PATH] [--capture-dir DIR] [--log-level LEVEL]\n\n"
            "The untrusted host of a Cloister enclave. It never sees a prompt, an answer or a\n"
            "key: it relays attestation documents and OHTTP ciphertext, streams the sealed\n"
            "model into the enclave, and pipes the enclave's key-service traffic.\n\n"
            "HTTP API (on --listen; PORT 0 picks a free port, printed as 'listening on ADDR:PORT'):\n"
            "  GET  /v1/attestation?nonce=HEX   attestation document for a 16..64-byte nonce\n"
            "  POST /v1/ohttp                   message/ohttp-req or message/ohttp-chunked-req\n"
            "  GET  /healthz  /readyz  /metrics\n\n"
            "vsock services for the enclave (this side is CID 3): 5001 sealed model stream,\n"
            "5002 boot configuration, 5003 sealed projector stream (with --mmproj), 8000 byte\n"
            "pipe to the key service. The enclave's\n"
            "service port is 5000 on --enclave-cid.\n\n"
            "options:\n"
            "  --listen ADDR:PORT       HTTP address (IPv4, [IPv6] or localhost)\n"
            "  --enclave-cid N          enclave CID (Nitro: as given to nitro-cli; sim: any)\n"
            "  --vsock-dir DIR          simulator: UNIX sockets in DIR (mode 0700) instead of AF_VSOCK\n"
            "                           (same as $CLOISTER_VSOCK_DIR)\n"
            "  --model FILE             sealed model streamed to the enclave at boot\n"
            "  --mmproj FILE            sealed vision projector (sealed under the model's key) streamed\n"
            "                           to the enclave at boot; without it the enclave refuses images\n"
            "  --max-images N           images per request, 0..16 (default 4)\n"
            "  --max-image-bytes N      encoded bytes per image, 1024..33554432 (default 8388608)\n"
            "  --kms URL                key service endpoint (http:// or https://HOST[:PORT])\n"
            "  --kms-ca FILE            extra CA certificate (PEM) the enclave trusts for an https key service;\n"
            "                           TLS ends inside the enclave, the host pipes ciphertext\n"
            "  --kms-credentials FILE   JSON {\"access_key_id\", \"secret_access_key\", \"region\",\n"
            "                           \"session_token\"?}; must be mode 0600 or stricter. Sent\n"
            "                           only to the enclave in its boot configuration\n"
            "  --max-body BYTES         largest request body, 1024..33554432 (default 33554432)\n"
            "  --max-inflight BYTES     request body bytes held by all connections at once, at\n"
            "                           least --max-body (default max(256 MiB, 2 x --max-body));\n"
            "                           requests over it get 503\n"
            "  --timeout-ms N           longest wait for each enclave frame, 100..3600000 (default 120000);\n"
            "                           also the enclave's per-request time limit\n"
            "  --max-tokens N           per-request token limit for the enclave, up to 65536 (default 2048)\n"
            "  --max-prompt-tokens N    per-request prompt token limit for the enclave, up to 1048576\n"
            "                           (default 4096)\n"
            "  --max-sessions N         concurrent sessions for the enclave, up to 256 (default 4)\n"
            "  --kv-cache f16|f32       the enclave's per-sequence key/value cache type (default f32); f16\n"
            "                           halves its memory per patient, as llama.cpp's default; attested\n"
            "\nHTTP front door (libmicrohttpd on a few epoll threads that never wait on the enclave):\n"
            "  --max-connections N      open client connections, 16..65536 (default 4096); more are\n"
            "                           answered 503 at accept. The soft RLIMIT_NOFILE is raised to fit\n"
            "                           (2 descriptors per connection); the default shrinks to fit the\n"
            "                           hard limit, an explicit value that does not fit is an error\n"
            "  --max-client-connections N  open connections per client IP address, 1..65536 (default 256);\n"
            "                           more get 503. Behind a proxy every client shares its address\n"
            "  --header-timeout-ms N    a request's headers must be complete within N ms of the connection\n"
            "                           opening or of its previous answer ending, however slowly bytes\n"
            "                           trickle in; else the connection is closed. 100..600000 (default 10000)\n"
            "  --body-timeout-ms N      a request body must be complete within N ms of its headers, else the\n"
            "                           connection is closed. 100..3600000 (default 60000)\n"
            "  --idle-timeout-s N       longest client silence while sending a body or reading an answer,\n"
            "                           1..3600 (default 60)\n"
            "  --http-threads N         HTTP (epoll) threads, 1..64 (default: online CPUs, 2..16)\n"
            "  --enclave-workers N      threads that carry enclave exchanges, 1..1024 (default 64); a\n"
            "                           chunked answer holds one until it ends\n"
            "  --enclave-queue N        exchanges waiting for a worker, 1..65536 (default 256); when full,\n"
            "                           attestation, OHTTP and /readyz get 503 {\"error\":\"enclave queue full\"}\n\n"
            "  --receipts sqlite:PATH   store the receipt the enclave signs for every chat completion\n"
            "                           (signed by its attested audit key, chained with batch receipts)\n"
            "                           and the attestation that certifies the key, in the results +\n"
            "                           receipts store of the batch worker ('cloister audit verify');\n"
            "                           written off the request path, failures logged and counted in\n"
            "                           /metrics. Without it the receipts are discarded (logged at start)\n"
            "  --capture-dir DIR        TEST HOOK: append every byte crossing the host's sockets\n"
            "                           to files in DIR (includes the boot configuration)\n"
            "  --log-level LEVEL        debug, info, warn or error (default info)\n\n"
            "Batch worker mode: cloister-host --worker ... (see 'cloister-host --worker --help').\n\n"
            "Logs are JSON lines on stderr. exit status: 0 ok, 1 failure, 2 usage.\n");
}

static int cl_host_usage(const char *msg, const char *opt)
{
    fprintf(stderr, "cloister-host: %s%s%s (see 'cloister-host --help')\n", msg, opt ? ": " : "", opt ? opt : "");
    return CL_HOST_EXIT_USAGE;
}

static int cl_host_fail(const char *what, cl_err e)
{
    char buf[512];
    fprintf(stderr, "cloister-host: %s: %s\n", what, cl_err_format(e, buf, sizeof(buf)));
    return CL_HOST_EXIT_FAIL;
}

static int cl_host_num(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* A limit handed to the enclave: its range comes from the one boot
 * configuration table the enclave checks too. */
static int cl_host_lim(const char *opt, const char *s, enum cl_bootcfg_lim l, unsigned long long *out)
{
    const struct cl_bootcfg_lim_def *d = cl_bootcfg_lim(l);
    if (cl_host_num(s, d->min, d->max, out) == 0)
        return 0;
    fprintf(stderr, "cloister-host: %s must be %llu..%llu: %s (see 'cloister-host --help')\n", opt,
            (unsigned long long)d->min, (unsigned long long)d->max, s);
    return -1;
}

static volatile sig_atomic_t cl_host_stop_flag;
static void cl_host_on_signal(int sig)
{
    (void)sig;
    cl_host_stop_flag = 1;
}

int cl_host_worker_main(int argc, char **argv);

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--worker"))
        return cl_host_worker_main(argc, argv);
    struct cl_host_config cfg;
    struct cl_host_kms_url kms;
    struct cl_host_creds creds;
    const char *kms_url = NULL, *creds_path = NULL, *vsock_dir = NULL, *kms_ca_path = NULL;
    struct cl_buf kms_ca;
    cl_buf_init(&kms_ca, 64 << 10, CL_BUF_NONE);
    unsigned long long v;
    int have_cid = 0;
    memset(&cfg, 0, sizeof(cfg));
    memset(&creds, 0, sizeof(creds));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cl_host_help(stdout);
            return CL_HOST_EXIT_OK;
        }
        if (a[0] != '-' || a[1] != '-')
            return cl_host_usage("unexpected argument", a);
        if (!val)
            return cl_host_usage("missing value for", a);
        i++;
        if (!strcmp(a, "--listen")) {
            cfg.listen = val;
        } else if (!strcmp(a, "--enclave-cid")) {
            if (cl_host_num(val, 3, 0xfffffffeu, &v))
                return cl_host_usage("--enclave-cid must be 3..4294967294", val);
            cfg.enclave_cid = (uint32_t)v;
            have_cid = 1;
        } else if (!strcmp(a, "--vsock-dir")) {
            vsock_dir = val;
        } else if (!strcmp(a, "--model")) {
            cfg.model_path = val;
        } else if (!strcmp(a, "--mmproj")) {
            cfg.mmproj_path = val;
        } else if (!strcmp(a, "--max-images")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_IMAGES, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_images = (unsigned)v;
            cfg.has_max_images = true;
        } else if (!strcmp(a, "--max-image-bytes")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_IMAGE_BYTES, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_image_bytes = (unsigned)v;
        } else if (!strcmp(a, "--kms")) {
            kms_url = val;
        } else if (!strcmp(a, "--kms-credentials")) {
            creds_path = val;
        } else if (!strcmp(a, "--kms-ca")) {
            kms_ca_path = val;
        } else if (!strcmp(a, "--max-body")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_REQUEST_BYTES, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_body = (size_t)v;
        } else if (!strcmp(a, "--max-inflight")) {
            if (cl_host_num(val, 1024, (unsigned long long)1 << 40, &v))
                return cl_host_usage("--max-inflight must be 1024..2^40", val);
            cfg.max_inflight = v;
        } else if (!strcmp(a, "--timeout-ms")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_REQUEST_TIMEOUT_MS, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.timeout_ms = (unsigned)v;
        } else if (!strcmp(a, "--max-tokens")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_TOKENS, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_tokens = (unsigned)v;
        } else if (!strcmp(a, "--max-prompt-tokens")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_prompt_tokens = (unsigned)v;
        } else if (!strcmp(a, "--max-sessions")) {
            if (cl_host_lim(a, val, CL_BOOTCFG_LIM_MAX_SESSIONS, &v))
                return CL_HOST_EXIT_USAGE;
            cfg.max_sessions = (unsigned)v;
        } else if (!strcmp(a, "--kv-cache")) {
            if (!strcmp(val, "f16"))
                cfg.kv_f16 = true;
            else if (!strcmp(val, "f32"))
                cfg.kv_f16 = false;
            else
                return cl_host_usage("--kv-cache must be f16 or f32", val);
        } else if (!strcmp(a, "--max-connections")) {
            if (cl_host_num(val, 16, CL_HOST_MAX_CONNECTIONS_LIMIT, &v))
                return cl_host_usage("--max-connections must be 16..65536", val);
            cfg.max_connections = (unsigned)v;
        } else if (!strcmp(a, "--max-client-connections")) {
            if (cl_host_num(val, 1, CL_HOST_MAX_CONNECTIONS_LIMIT, &v))
                return cl_host_usage("--max-client-connections must be 1..65536", val);
            cfg.max_client_connections = (unsigned)v;
        } else if (!strcmp(a, "--header-timeout-ms")) {
            if (cl_host_num(val, 100, 600000, &v))
                return cl_host_usage("--header-timeout-ms must be 100..600000", val);
            cfg.header_timeout_ms = (unsigned)v;
        } else if (!strcmp(a, "--body-timeout-ms")) {
            if (cl_host_num(val, 100, 3600000, &v))
                return cl_host_usage("--body-timeout-ms must be 100..3600000", val);
            cfg.body_timeout_ms = (unsigned)v;
        } else if (!strcmp(a, "--idle-timeout-s")) {
            if (cl_host_num(val, 1, 3600, &v))
                return cl_host_usage("--idle-timeout-s must be 1..3600", val);
            cfg.idle_timeout_s = (unsigned)v;
        } else if (!strcmp(a, "--http-threads")) {
            if (cl_host_num(val, 1, CL_HOST_MAX_HTTP_THREADS, &v))
                return cl_host_usage("--http-threads must be 1..64", val);
            cfg.http_threads = (unsigned)v;
        } else if (!strcmp(a, "--enclave-workers")) {
            if (cl_host_num(val, 1, CL_HOST_MAX_ENCLAVE_WORKERS, &v))
                return cl_host_usage("--enclave-workers must be 1..1024", val);
            cfg.enclave_workers = (unsigned)v;
        } else if (!strcmp(a, "--enclave-queue")) {
            if (cl_host_num(val, 1, 65536, &v))
                return cl_host_usage("--enclave-queue must be 1..65536", val);
            cfg.enclave_queue = (unsigned)v;
        } else if (!strcmp(a, "--receipts")) {
            if (strncmp(val, "sqlite:", 7) || !val[7])
                return cl_host_usage("--receipts must be sqlite:PATH", val);
            cfg.receipts_url = val;
        } else if (!strcmp(a, "--capture-dir")) {
            cfg.capture_dir = val;
        } else if (!strcmp(a, "--log-level")) {
            enum cl_log_level l = cl_log_level_parse(val);
            if (l == CL_LOG_NONE)
                return cl_host_usage("--log-level must be debug, info, warn or error", val);
            cl_log_set_level(l);
        } else {
            return cl_host_usage("unknown option", a);
        }
    }
    if (!cfg.listen)
        return cl_host_usage("--listen is required", NULL);
    if (!have_cid)
        return cl_host_usage("--enclave-cid is required", NULL);
    if (!cfg.model_path)
        return cl_host_usage("--model is required", NULL);
    if (!kms_url)
        return cl_host_usage("--kms is required", NULL);
    if (!creds_path)
        return cl_host_usage("--kms-credentials is required", NULL);

    cl_log_set_component("host");
    /* Each log line is flushed whole (one write) instead of one write per
     * character on unbuffered stderr, all under the logger's lock: under
     * load that lock was the HTTP threads' bottleneck. */
    static char log_buf[64u << 10];
    setvbuf(stderr, log_buf, _IOFBF, sizeof(log_buf));
    cl_err rc = cl_host_kms_url_parse(kms_url, &kms);
    if (rc)
        return cl_host_fail("--kms", rc);
    rc = cl_host_creds_load(creds_path, &creds);
    if (rc)
        return cl_host_fail("--kms-credentials", rc);
    if (vsock_dir && setenv(CL_VSOCK_DIR_ENV, vsock_dir, 1) != 0) {
        cl_host_creds_free(&creds);
        cl_buf_free(&kms_ca);
        return cl_host_fail("--vsock-dir", CL_E_CORE_NOMEM);
    }
    cfg.kms = &kms;
    cfg.creds = &creds;
    if (kms_ca_path) {
        rc = cl_file_read(kms_ca_path, kms_ca.max - 1, &kms_ca);
        if (rc == CL_OK)
            rc = cl_buf_append_u8(&kms_ca, 0);
        if (rc != CL_OK || !strstr((const char *)kms_ca.data, "-----BEGIN CERTIFICATE-----")) {
            fprintf(stderr, "cloister-host: --kms-ca %s: not a PEM certificate file\n", kms_ca_path);
            cl_host_creds_free(&creds);
            cl_buf_free(&kms_ca);
            return CL_HOST_EXIT_FAIL;
        }
        cfg.kms_ca_pem = (const char *)kms_ca.data;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = cl_host_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Worker threads inherit the blocked mask, so the signals reach sigsuspend here. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    struct cl_host *h = NULL;
    rc = cl_host_start(&cfg, &h);
    if (rc) {
        cl_host_creds_free(&creds);
        cl_buf_free(&kms_ca);
        return cl_host_fail("start", rc);
    }
    const char *colon = strrchr(cfg.listen, ':');
    printf("listening on %.*s:%u\n", (int)(colon - cfg.listen), cfg.listen, cl_host_port(h));
    fflush(stdout);
    while (!cl_host_stop_flag)
        sigsuspend(&old);
    cl_host_stop(h);
    cl_host_creds_free(&creds);
    cl_buf_free(&kms_ca);
    CL_LOG(CL_LOG_INFO, "host_stopped");
    return CL_HOST_EXIT_OK;
}
