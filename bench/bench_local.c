/* Baseline: the enclave's own generator run in-process on the plain GGUF
 * (no attestation, no OHTTP, no host, no vsock) with the same prompt and
 * settings as bench_secure; also cold start of the plain model.
 * Usage: bench_local MODEL.gguf RUNS N_TOKENS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/log.h"

#include "bench_prompt.h"
#include "cloister/secmem.h"
#include "cloister/enclave_runtime.h"

struct timing {
    uint64_t first;
};

static bool on_piece(void *arg, const char *text, size_t n)
{
    struct timing *t = arg;
    (void)text;
    if (n && !t->first)
        t->first = cl_now_us();
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int runs = atoi(argv[2]);
    uint32_t ntok = (uint32_t)strtoul(argv[3], NULL, 10);
    cl_log_set_level(CL_LOG_ERROR);
    /* cold start: read every byte into locked memory, as the enclave must, then build the model */
    uint64_t t0 = cl_now_us();
    struct stat st;
    int fd = open(argv[1], O_RDONLY);
    void *buf = NULL;
    size_t got = 0;
    if (fd < 0 || fstat(fd, &st) != 0 || cl_secmem_alloc((size_t)st.st_size, &buf) != CL_OK ||
        cl_read_full(fd, buf, (size_t)st.st_size, &got) != CL_OK)
        return 1;
    close(fd);
    struct cl_engine *e;
    if (cl_engine_new(buf, (size_t)st.st_size, 2, NULL, 4096, &e) != CL_OK)
        return 1;
    double load_ms = (double)(cl_now_us() - t0) / 1e3;
    const char *q = cl_bench_prompt();
    struct cl_chat_msg m = {"user", q, strlen(q)};
    struct cl_chat_params p = {.msgs = &m, .n_msgs = 1, .max_tokens = ntok, .temperature = 0, .has_seed = true};
    double ttft = 0, tps = 0;
    for (int i = 0; i <= runs; i++) {
        struct timing t = {0};
        struct cl_chat_result r = {0};
        uint64_t s = cl_now_us();
        if (cl_engine_generate(e, &p, on_piece, &t, &r) != CL_OK || !t.first)
            return 1;
        uint64_t end = cl_now_us();
        if (i) {
            ttft += (double)(t.first - s) / 1e3;
            tps += r.completion_tokens > 1 ? (double)(r.completion_tokens - 1) / ((double)(end - t.first) / 1e6) : 0;
        }
    }
    printf("{\"ttft_ms\":%.2f,\"tg_tps\":%.2f,\"load_ms\":%.2f}\n", ttft / runs, tps / runs, load_ms);
    cl_engine_free(e);
    cl_secmem_free(buf);
    return 0;
}
