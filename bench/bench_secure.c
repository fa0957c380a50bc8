/* Secure path: time to first token and tokens/s through cloister-host, OHTTP
 * and the enclave, measured by the client library (attestation verified once
 * before the timed runs). Usage: bench_secure HOST_URL TRUST.json RUNS N_TOKENS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/client.h"
#include "cloister/log.h"

#include "bench_prompt.h"

struct timing {
    uint64_t t0, first;
    size_t pieces;
};

static cl_err on_token(void *arg, const char *text, size_t n)
{
    struct timing *t = arg;
    (void)text;
    if (n && !t->first)
        t->first = cl_now_us();
    t->pieces++;
    return CL_OK;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    int runs = atoi(argv[3]);
    uint64_t ntok = strtoull(argv[4], NULL, 10);
    struct cl_trust trust;
    cl_client *c = NULL;
    cl_log_set_level(CL_LOG_ERROR);
    if (cl_trust_load(argv[2], &trust) != CL_OK || cl_client_new(argv[1], &trust, &c) != CL_OK ||
        cl_client_attest(c) != CL_OK) {
        fprintf(stderr, "bench_secure: could not attest the enclave\n");
        return 1;
    }
    const char *q = cl_bench_prompt();
    struct cl_client_msg m = {.role = "user", .content = q, .content_len = strlen(q)};
    struct cl_client_params p = {.has_max_tokens = true, .max_tokens = ntok, .has_temperature = true, .temperature = 0};
    double ttft = 0, tps = 0;
    for (int i = 0; i <= runs; i++) { /* run 0 warms up */
        struct timing t = {cl_now_us(), 0, 0};
        struct cl_client_result r;
        cl_client_result_init(&r);
        cl_err rc = cl_client_chat(c, &m, 1, &p, on_token, &t, &r);
        uint64_t end = cl_now_us();
        if (rc != CL_OK || !t.first) {
            fprintf(stderr, "bench_secure: request failed\n");
            return 1;
        }
        if (i) {
            ttft += (double)(t.first - t.t0) / 1e3;
            uint64_t n = r.has_usage ? r.completion_tokens : t.pieces;
            tps += n > 1 ? (double)(n - 1) / ((double)(end - t.first) / 1e6) : 0;
        }
        cl_client_result_free(&r);
    }
    printf("{\"ttft_ms\":%.2f,\"tg_tps\":%.2f}\n", ttft / runs, tps / runs);
    cl_client_free(c);
    cl_trust_free(&trust);
    return 0;
}
