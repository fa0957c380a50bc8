/* cloister-host: the untrusted bridge on the parent instance. It relays
 * nonces, attestation documents and OHTTP ciphertext between HTTP clients and
 * the enclave, streams the sealed model into the enclave at boot, hands the
 * enclave its boot configuration and pipes the enclave's key-service traffic
 * to the configured endpoint. It links no key-handling code: it cannot read
 * anything it forwards. See docs/protocol.md. */
#ifndef CLOISTER_HOST_H
#define CLOISTER_HOST_H

#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_HOST_DEFAULT_MAX_BODY ((size_t)32 << 20)
#define CL_HOST_DEFAULT_TIMEOUT_MS 120000u
#define CL_HOST_DEFAULT_MAX_TOKENS 2048u
#define CL_HOST_DEFAULT_MAX_SESSIONS 4u
#define CL_HOST_DEFAULT_MAX_CONNECTIONS 4096u
#define CL_HOST_DEFAULT_MAX_CLIENT_CONNECTIONS 256u
#define CL_HOST_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define CL_HOST_DEFAULT_BODY_TIMEOUT_MS 60000u
#define CL_HOST_DEFAULT_IDLE_TIMEOUT_S 60u
#define CL_HOST_DEFAULT_ENCLAVE_WORKERS 64u
#define CL_HOST_DEFAULT_ENCLAVE_QUEUE 256u
#define CL_HOST_MAX_CONNECTIONS_LIMIT 65536u
#define CL_HOST_MAX_HTTP_THREADS 64u
#define CL_HOST_MAX_ENCLAVE_WORKERS 1024u
#define CL_HOST_NONCE_MIN 16
#define CL_HOST_NONCE_MAX 64

/* The operator's key-service principal, from a file only its owner may read.
 * Every field lives in locked memory and is NUL-terminated; session_token may
 * be empty. */
struct cl_host_creds {
    struct cl_buf access_key_id;
    struct cl_buf secret_access_key;
    struct cl_buf session_token;
    struct cl_buf region;
};

/* Key-service endpoint split for the byte pipe: host (without brackets for
 * IPv6) and port; endpoint is the URL as given, passed to the enclave. */
struct cl_host_kms_url {
    char endpoint[1024];
    char host[256];
    uint16_t port;
    int https;
};

struct cl_host_config {
    const char *listen;     /* HTTP API: HOST:PORT or [V6]:PORT; port 0 picks one */
    uint32_t enclave_cid;   /* enclave's vsock CID (service port 5000) */
    const char *model_path; /* sealed model streamed on port 5001 */
    const struct cl_host_kms_url *kms;
    const struct cl_host_creds *creds;
    size_t max_body;         /* largest accepted request body */
    uint64_t max_inflight;   /* request body bytes held by all connections at once
                              * (0 = max(256 MiB, 2 * max_body)); over it: 503 */
    unsigned timeout_ms;     /* longest wait for each enclave frame */
    unsigned max_tokens;     /* limits handed to the enclave at boot */
    unsigned max_sessions;
    unsigned max_prompt_tokens; /* 0 = the enclave's default */
    const char *mmproj_path;    /* sealed vision projector streamed on port 5003; NULL = none */
    bool has_max_images;        /* else the enclave's default */
    unsigned max_images;        /* images per request (0: none) */
    unsigned max_image_bytes;   /* 0 = the enclave's default */
    bool kv_f16;                /* the enclave keeps sequences' key/value caches in F16 */
    const char *capture_dir; /* test hook: every socket byte appended here; NULL = off */
    const char *receipts_url; /* sqlite:PATH: interactive receipts are stored there; NULL = discarded */
    const char *kms_ca_pem;  /* extra CA (PEM) the enclave trusts for an https key service; NULL = system store */
    /* The HTTP front door. 0 picks the default (CL_HOST_DEFAULT_*). */
    unsigned max_connections;        /* open client connections; more get 503 at accept. The default is
                                      * lowered to fit RLIMIT_NOFILE; an explicit value that does not fit fails */
    unsigned max_client_connections; /* open connections per client address; more get 503 at accept */
    unsigned header_timeout_ms;      /* a request's headers must be complete this long after the connection
                                      * opened or its previous answer ended, however slowly bytes trickle in */
    unsigned body_timeout_ms;        /* a request's body must be complete this long after its headers */
    unsigned idle_timeout_s;         /* longest client silence while sending a body or reading an answer */
    unsigned http_threads;           /* libmicrohttpd epoll threads (0 = online CPUs, 2..16) */
    unsigned enclave_workers;        /* threads that wait on the enclave; HTTP threads never do */
    unsigned enclave_queue;          /* enclave exchanges waiting for a worker; more get 503 */
};

struct cl_host;

/* Starts the HTTP API and the three boot services (vsock ports 5001, 5002,
 * 8000). Everything runs on background threads until cl_host_stop. */
CL_MUST_CHECK cl_err cl_host_start(const struct cl_host_config *cfg, struct cl_host **out);
uint16_t cl_host_port(const struct cl_host *h);
/* The connection limit in force (the default may have been lowered to fit RLIMIT_NOFILE). */
unsigned cl_host_max_connections(const struct cl_host *h);
void cl_host_stop(struct cl_host *h);

/* Reads a credentials file: a JSON object with string members access_key_id,
 * secret_access_key, region and optionally session_token (nothing else).
 * Refuses files that are not regular, not owned by the caller, or readable
 * or writable by group or others. */
CL_MUST_CHECK cl_err cl_host_creds_load(const char *path, struct cl_host_creds *out);
void cl_host_creds_free(struct cl_host_creds *c);

/* http://HOST[:PORT][/...] or https://...; rejects user info and spaces. */
CL_MUST_CHECK cl_err cl_host_kms_url_parse(const char *url, struct cl_host_kms_url *out);

/* The BOOT_CONFIG payload (docs/protocol.md section 4) into out, which
 * should be a CL_BUF_SECURE buffer: it carries the credentials. */
CL_MUST_CHECK cl_err cl_host_boot_config(const struct cl_host_config *cfg, struct cl_buf *out);

/* Strict JSON (RFC 8259, nesting depth at most 16): checks that [p, p+n) is
 * exactly one object, then appends the decoded value of its top-level string
 * member `key` to out. CL_E_CORE_NOT_FOUND when there is no such member,
 * CL_E_NET_HOST_JSON when the text is malformed, the key repeats or the
 * value is not a string. */
CL_MUST_CHECK cl_err cl_host_json_get_string(const void *p, size_t n, const char *key, struct cl_buf *out);
/* Checks that every top-level member name is one of allowed (NULL-terminated). */
CL_MUST_CHECK cl_err cl_host_json_check_keys(const void *p, size_t n, const char *const *allowed);
/* Appends s as a JSON string literal (quotes and escapes included). */
CL_MUST_CHECK cl_err cl_host_json_put_string(struct cl_buf *out, const char *s, size_t n);

/* Batch worker (src/host/worker.c, docs/batch.md): pulls messages, fetches
 * job objects, hands them to the enclave (JOB_REQ), stores what it returns,
 * until *stop. Links SQLite and the object store, never key-handling code. */
struct cl_host_worker_config {
    uint32_t enclave_cid;
    const char *queue_url;   /* sqlite:PATH or sqs://QUEUE[?endpoint=URL] */
    const char *objects_url; /* dir:PATH or s3://BUCKET[/PREFIX][?endpoint=URL] */
    const char *results_url; /* sqlite:PATH or dynamodb://TABLE[?endpoint=URL] */
    unsigned visibility_ms;  /* a received message stays invisible this long */
    unsigned max_receives;   /* job failures before the dead-letter queue */
    unsigned poll_ms;        /* wait when the queue is empty */
    unsigned retry_ms;       /* a failed job is visible again after retry_ms x receives (at most 10x) */
    unsigned timeout_ms;     /* longest wait for the enclave's answer */
};
CL_MUST_CHECK cl_err cl_host_worker_run(const struct cl_host_worker_config *c, const volatile sig_atomic_t *stop);

/* Nonce from the query string: 32..128 hex digits (either case). */
CL_MUST_CHECK cl_err cl_host_nonce_parse(const char *hex, struct cl_buf *out);

#endif
