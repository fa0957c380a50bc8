/* cloister-host --worker: argument parsing for the batch worker. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/batch_store.h"
#include "cloister/host.h"
#include "cloister/log.h"
#include "cloister/vsock.h"

int cl_host_worker_main(int argc, char **argv);

static void cl_worker_help(FILE *f)
{
    fprintf(f,
            "usage: cloister-host --worker --enclave-cid N [--vsock-dir DIR] --queue URL\n"
            "                     --objects URL --results URL [--visibility-ms N]\n"
            "                     [--max-receives N] [--poll-ms N] [--retry-ms N] [--timeout-ms N]\n"
            "                     [--log-level LEVEL]\n\n"
            "The untrusted batch worker (docs/batch.md). It receives job messages from the queue\n"
            "(at-least-once, each invisible for the visibility timeout), fetches the encrypted job\n"
            "object, hands it to the enclave's service port (JOB_REQ frame) and writes back what\n"
            "the enclave returns: the result object (sealed for the consumer), its receipt and the\n"
            "attestation certifying the enclave's audit key, in one transaction, the result only\n"
            "once per job id. It never sees a key, a prompt or an answer. Workers are stateless:\n"
            "run one or several per enclave, on as many machines as share the stores.\n\n"
            "options (--worker must come first):\n"
            "  --enclave-cid N       the enclave's CID (its service port is 5000)\n"
            "  --vsock-dir DIR       simulator: UNIX sockets in DIR instead of AF_VSOCK\n"
            "  --queue URL           job queue: sqlite:PATH (WAL) or sqs://QUEUE[?endpoint=URL]\n"
            "                        (SQS: dead letters in QUEUE-dlq; S3 event notifications accepted\n"
            "                        besides job messages: an upload of NAME.job starts job NAME)\n"
            "  --objects URL         job objects: dir:PATH or s3://BUCKET[/PREFIX][?endpoint=URL]\n"
            "  --results URL         results, receipts, attestations: sqlite:PATH (may be the queue's file)\n"
            "                        or dynamodb://TABLE[?endpoint=URL] (hash key job_id, S)\n"
            "  --visibility-ms N     a received message is invisible this long, 100..43200000 (default 60000)\n"
            "  --max-receives N      a job that fails this often (malformed, undecryptable, refused by the\n"
            "                        key policy) goes to the dead-letter queue with an error record,\n"
            "                        1..1000 (default 3); the enclave or key service unreachable does not count\n"
            "  --poll-ms N           wait when the queue is empty, 10..60000 (default 200)\n"
            "  --retry-ms N          a failed job is visible again after N x its receive count ms,\n"
            "                        0..600000 (default 1000)\n"
            "  --timeout-ms N        longest wait for the enclave's answer, 100..3600000 (default 120000)\n"
            "  --log-level LEVEL     debug, info, warn or error (default info)\n\n"
            "AWS backends sign with SigV4: credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/\n"
            "AWS_SESSION_TOKEN or the shared credentials file (AWS_PROFILE), region from AWS_REGION;\n"
            "never on the command line. Service errors that are transient (unreachable, 5xx, throttled)\n"
            "do not count toward --max-receives.\n\n"
            "Logs are JSON lines on stderr (message ids, sizes, timings). exit status: 0 stopped by\n"
            "SIGINT/SIGTERM, 1 failure, 2 usage.\n");
}

static volatile sig_atomic_t cl_worker_stop;
static void cl_worker_on_signal(int sig)
{
    (void)sig;
    cl_worker_stop = 1;
}

static int cl_worker_usage(const char *msg, const char *v)
{
    fprintf(stderr, "cloister-host --worker: %s%s%s (see 'cloister-host --worker --help')\n", msg, v ? ": " : "",
            v ? v : "");
    return 2;
}

static int cl_worker_num(const char *opt, const char *s, unsigned long lo, unsigned long hi, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = s && *s && *s != '-' ? strtoul(s, &end, 10) : 0;
    if (!s || !*s || *s == '-' || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "cloister-host --worker: %s must be %lu..%lu: %s (see 'cloister-host --worker --help')\n", opt,
                lo, hi, s ? s : "");
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

int cl_host_worker_main(int argc, char **argv)
{
    struct cl_host_worker_config c = {0, NULL, NULL, NULL, CL_BSTORE_DEFAULT_VISIBILITY_MS,
                                      CL_BSTORE_DEFAULT_MAX_RECEIVES, 200, 1000, 120000};
    const char *vsock_dir = NULL;
    int have_cid = 0;
    unsigned v = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cl_worker_help(stdout);
            return 0;
        }
        if (a[0] != '-' || a[1] != '-')
            return cl_worker_usage("unexpected argument", a);
        if (!val)
            return cl_worker_usage("missing value for", a);
        i++;
        if (!strcmp(a, "--enclave-cid")) {
            if (cl_worker_num(a, val, 3, 0xfffffffeu, &v))
                return 2;
            c.enclave_cid = v;
            have_cid = 1;
        } else if (!strcmp(a, "--vsock-dir")) {
            vsock_dir = val;
        } else if (!strcmp(a, "--queue")) {
            c.queue_url = val;
        } else if (!strcmp(a, "--objects")) {
            c.objects_url = val;
        } else if (!strcmp(a, "--results")) {
            c.results_url = val;
        } else if (!strcmp(a, "--visibility-ms")) {
            if (cl_worker_num(a, val, 100, 43200000, &c.visibility_ms))
                return 2;
        } else if (!strcmp(a, "--max-receives")) {
            if (cl_worker_num(a, val, 1, 1000, &c.max_receives))
                return 2;
        } else if (!strcmp(a, "--poll-ms")) {
            if (cl_worker_num(a, val, 10, 60000, &c.poll_ms))
                return 2;
        } else if (!strcmp(a, "--retry-ms")) {
            if (cl_worker_num(a, val, 0, 600000, &c.retry_ms))
                return 2;
        } else if (!strcmp(a, "--timeout-ms")) {
            if (cl_worker_num(a, val, 100, 3600000, &c.timeout_ms))
                return 2;
        } else if (!strcmp(a, "--log-level")) {
            enum cl_log_level l = cl_log_level_parse(val);
            if (l == CL_LOG_NONE)
                return cl_worker_usage("--log-level must be debug, info, warn or error", val);
            cl_log_set_level(l);
        } else {
            return cl_worker_usage("unknown option", a);
        }
    }
    if (!have_cid)
        return cl_worker_usage("--enclave-cid is required", NULL);
    if (!c.queue_url || !c.objects_url || !c.results_url)
        return cl_worker_usage("--queue, --objects and --results are required", NULL);
    if (vsock_dir && setenv(CL_VSOCK_DIR_ENV, vsock_dir, 1) != 0)
        return 1;
    cl_log_set_component("worker");
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = cl_worker_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    cl_err rc = cl_host_worker_run(&c, &cl_worker_stop);
    if (rc != CL_OK) {
        char b[512];
        fprintf(stderr, "cloister-host --worker: %s\n", cl_err_format(rc, b, sizeof(b)));
        return 1;
    }
    return 0;
}
