/* cloister-enclave: runs inside the TEE. The same code on Nitro (/dev/nsm,
 * AF_VSOCK) and under cloister-sim (simulated NSM, vsock over UNIX sockets):
 * the transports are chosen at run time by cl_nsm_open and cl_vsock. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cloister/log.h"
#include "cloister/nsm.h"
#include "cloister/secmem.h"
#include "cloister/wire.h"
#include "cloister/enclave_runtime.h"

int cloister_enclave_main(int argc, char **argv);

static void cl_enclave_help(void)
{
    printf("usage: cloister-enclave [--threads N] [--chat-template NAME] [--replay-window N]\n\n"
           "Runs inside the enclave (Nitro, or `cloister-sim run IMAGE`). At boot it takes its\n"
           "configuration from the parent (vsock port %d), reads the sealed model's header\n"
           "(port %d), obtains the data key from the key service with Decrypt + Recipient\n"
           "through the parent's proxy (port %d), decrypts the model into locked memory and\n"
           "serves attested OHTTP requests and batch jobs (JOB_REQ: the job key is released\n"
           "to this enclave with Decrypt + Recipient; the answer is sealed for the consumer and\n"
           "a receipt signed by the attested audit key) on port %d.\n"
           "A model sealed with cloister:licence-key-sha256 in its encryption context is\n"
           "served to licensed consumers only, under a lease renewed with the key service;\n"
           "an unrenewed lease stops serving and wipes the model (docs/licensing.md).\n\n"
           "  --replay-window N   requests one OHTTP key opens before it is replaced by a new,\n"
           "                      freshly attested key (1..%u, default %u; it can only be\n"
           "                      lowered, for tests; clients re-attest at each change)\n\n"
           "Arguments are part of the image (cloister-sim pack ... -- ARGS; the EIF's command\n"
           "line on Nitro), so they are measured.\n",
           CL_WIRE_PORT_BOOT, CL_WIRE_PORT_MODEL, CL_WIRE_PORT_KMS_PROXY, CL_WIRE_PORT_SERVICE,
           (unsigned)CL_GW_REPLAY_WINDOW, (unsigned)CL_GW_REPLAY_WINDOW);
}

static int cl_enclave_fail(const char *what, cl_err rc)
{
    CL_LOG(CL_LOG_ERROR, "boot_failed", CL_LOG_ERR(rc));
    char b[400];
    /* stderr reaches the operator. Engine details can quote the decrypted
     * model's own metadata (key and tensor names), so they stay inside. */
    if (cl_err_category(rc) == CL_ERRCAT_INFER)
        fprintf(stderr, "cloister-enclave: %s: %s\n", what, cl_err_str(rc));
    else
        fprintf(stderr, "cloister-enclave: %s: %s\n", what, cl_err_format(rc, b, sizeof(b)));
    return 1;
}

static void cl_enclave_wipe_gw(void *g) { cl_gateway_wipe_keys(g); }
static void cl_enclave_wipe_jobs(void *j) { cl_jobs_wipe_keys(j); }

int cloister_enclave_main(int argc, char **argv)
{
    static const struct option opts[] = {{"threads", required_argument, 0, 't'},
                                         {"chat-template", required_argument, 0, 'c'},
                                         {"replay-window", required_argument, 0, 'r'},
                                         {"help", no_argument, 0, 'h'}, {0}};
    unsigned threads = 2;
    const char *tmpl = NULL;
    unsigned long window = CL_GW_REPLAY_WINDOW;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        if (c == 't')
            threads = (unsigned)strtoul(optarg, NULL, 10);
        else if (c == 'c')
            tmpl = optarg;
        else if (c == 'r') {
            char *end = NULL;
            window = strtoul(optarg, &end, 10);
            if (!*optarg || *end || optarg[0] == '-' || window < 1 || window > CL_GW_REPLAY_WINDOW) {
                fprintf(stderr, "cloister-enclave: --replay-window must be 1..%u\n", (unsigned)CL_GW_REPLAY_WINDOW);
                return 2;
            }
        }
        else if (c == 'h') {
            cl_enclave_help();
            return 0;
        } else
            return 2;
    }
    if (threads < 1 || threads > 64)
        threads = 2;
    cl_log_set_component("enclave");
    signal(SIGPIPE, SIG_IGN); /* a host that closed early is a failed send, not a dead enclave */
    cl_err rc = cl_secure_process_init();
    if (rc != CL_OK)
        return cl_enclave_fail("hardening", rc);
    cl_json_secure();

    void *mem = NULL;
    cl_nsm *nsm = NULL;
    cl_pkey *audit = NULL;
    struct cl_engine *eng = NULL;
    cl_gateway *gw = NULL;
    struct cl_jobs *jobs = NULL;
    struct cl_buf ud;
    cl_buf_init(&ud, 1024, CL_BUF_NONE);
    if ((rc = cl_secmem_alloc(sizeof(struct cl_enclave_boot), &mem)) != CL_OK)
        return cl_enclave_fail("secure memory", rc);
    struct cl_enclave_boot *bt = mem;
    uint8_t key_id;
    const char *step = "NSM";
    if ((rc = cl_nsm_open(&nsm)) != CL_OK)
        goto fail;
    step = "boot configuration";
    if ((rc = cl_boot_get_config(bt)) != CL_OK)
        goto fail;
    step = "sealed model";
    if ((rc = cl_boot_load_model(bt, nsm, threads)) != CL_OK)
        goto fail;
    /* The credentials stay (locked memory) for batch jobs' key releases: they
     * authenticate the operator's principal, and release nothing without
     * this enclave's attestation. */
    bt->limits.replay_window = (uint32_t)window;
    step = "model";
    if ((rc = cl_engine_new(bt->model, bt->model_len, threads, tmpl, bt->limits.max_prompt_tokens, &eng)) != CL_OK)
        goto fail;
    step = "vision projector";
    if (bt->has_mmproj && (rc = cl_engine_set_vision(eng, bt->mmproj, bt->mmproj_len)) != CL_OK)
        goto fail;
    step = "memory";
    {
        /* the largest request it accepts must fit too, or it would fail later on a patient's request */
        size_t need;
        uint32_t n_ctx = bt->limits.max_prompt_tokens + bt->limits.max_tokens;
        if ((rc = cl_engine_mem_need(eng, bt->model_len, n_ctx, threads, &need)) != CL_OK ||
            (rc = cl_enclave_mem_check(need, bt->model_len, "serving the longest request")) != CL_OK)
            goto fail;
        CL_LOG(CL_LOG_INFO, "memory_sized", CL_LOG_SIZE("need_bytes", need), CL_LOG_COUNT("max_ctx", n_ctx));
        /* continuous batching: as many sequences as concurrent exchanges,
         * their caches within what the enclave's memory leaves */
        size_t avail = 0;
        uint32_t seqs = bt->limits.max_sessions < 64 ? bt->limits.max_sessions : 64;
        if ((rc = cl_enclave_mem_available(&avail)) != CL_OK ||
            (rc = cl_engine_set_kv_f16(eng, bt->limits.kv_f16)) != CL_OK ||
            (rc = cl_engine_configure(eng, seqs ? seqs : 1, n_ctx, avail)) != CL_OK)
            goto fail;
    }
    step = "keys";
    if ((rc = cl_random_bytes(&key_id, 1)) != CL_OK || (rc = cl_pkey_generate(CL_PKEY_P384, &audit)) != CL_OK ||
        (rc = cl_boot_user_data(bt, audit, &ud)) != CL_OK)
        goto fail;
    struct cl_generator gen = {cl_engine_generate, eng, cl_engine_name(eng)};
    struct cl_lease *lease = NULL;
    if (bt->licensed) {
        /* licences before anything is served; a refused first renewal stops the boot */
        step = "licence";
        if ((rc = cl_lease_start(bt, nsm, audit, ud.data, ud.len, &lease)) != CL_OK)
            goto fail;
        struct cl_generator inner = gen;
        cl_lease_generator(lease, &inner, &gen);
    }
    if ((rc = cl_gateway_new(&bt->limits, &gen, key_id, &gw)) != CL_OK)
        goto fail;
    if (lease)
        cl_gateway_set_licences(gw, cl_lease_table(lease));
    CL_LOG(CL_LOG_INFO, "ready", CL_LOG_SIZE("model_bytes", bt->model_len), CL_LOG_COUNT("threads", threads));
    step = "batch jobs";
    if ((rc = cl_jobs_new(bt, nsm, audit, ud.data, ud.len, &gen, &bt->limits, &jobs)) != CL_OK)
        goto fail;
    if (lease) {
        cl_jobs_set_licences(jobs, cl_lease_table(lease));
        /* at the lease's end the keys go with the model */
        if ((rc = cl_lease_on_end(lease, cl_enclave_wipe_gw, gw)) != CL_OK ||
            (rc = cl_lease_on_end(lease, cl_enclave_wipe_jobs, jobs)) != CL_OK)
            goto fail;
    }
    struct cl_service svc = {gw, nsm, ud.data, ud.len, &bt->limits, cl_engine_name(eng), bt->model_sha256, jobs, lease};
    step = "service";
    rc = cl_service_run(&svc);
fail:
    cl_enclave_fail(step, rc);
    cl_jobs_free(jobs);
    cl_gateway_free(gw);
    cl_engine_free(eng);
    cl_kmsc_credentials_wipe(&bt->cred);
    cl_pkey_free(audit);
    cl_nsm_close(nsm);
    cl_boot_free(bt);
    cl_secmem_free(mem);
    cl_buf_free(&ud);
    return 1;
}
