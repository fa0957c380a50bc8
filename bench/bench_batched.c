/* Aggregate throughput with several sequences at once, as llama.cpp's
 * llama-batched-bench measures it: npl sequences each read a prompt of npp
 * tokens, then generate ntg tokens together (one forward pass per step for
 * all of them, cl_model_batch: the enclave engine's continuous batching).
 * Prints one JSON line per npl: prompt tokens/s (S_PP) and aggregate
 * generation tokens/s (S_TG = npl * ntg / generation time).
 * Usage: bench_batched MODEL.gguf [-t THREADS] [-npp N] [-ntg N] [-npl 1,8] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/infer/model.h"
#include "cloister/infer/pool.h"
#include "cloister/log.h"

#define CL_BB_MAX_NPL 64

static int cl_bb_usage(void)
{
    fprintf(stderr, "usage: bench_batched MODEL.gguf [-t THREADS] [-npp N] [-ntg N] [-npl 1,8]\n");
    return 2;
}

int main(int argc, char **argv)
{
    unsigned threads = 2, npp = 128, ntg = 32, npl[16], n_npl = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return cl_bb_usage();
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            return cl_bb_usage();
        if (!strcmp(argv[i], "-t"))
            threads = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-npp"))
            npp = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-ntg"))
            ntg = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-npl")) {
            for (char *p = argv[i + 1]; *p && n_npl < 16;) {
                npl[n_npl++] = (unsigned)strtoul(p, &p, 10);
                if (*p == ',')
                    p++;
            }
        } else
            return cl_bb_usage();
    }
    if (n_npl == 0) {
        npl[0] = 1;
        npl[1] = 8;
        n_npl = 2;
    }
    if (threads < 1 || threads > 64 || npp < 1 || ntg < 1 || npp + ntg > 65536)
        return cl_bb_usage();
    for (unsigned k = 0; k < n_npl; k++)
        if (npl[k] < 1 || npl[k] > CL_BB_MAX_NPL)
            return cl_bb_usage();
    cl_log_set_level(CL_LOG_ERROR);
    cl_gguf *g = NULL;
    struct cl_model *m = NULL;
    struct cl_pool *pool = NULL;
    if (cl_gguf_open_file(argv[1], &g) != CL_OK || (cl_model_would_repack(g) && cl_gguf_set_writable(g, NULL) != CL_OK) || cl_model_load(g, &m) != CL_OK || cl_pool_new(threads, &pool) != CL_OK) {
        fprintf(stderr, "bench_batched: cannot load %s: %s\n", argv[1], cl_err_detail());
        return 1;
    }
    const uint32_t V = cl_model_hparams(m)->n_vocab;
    for (unsigned k = 0; k < n_npl; k++) {
        unsigned n = npl[k];
        struct cl_model_seq *seq[CL_BB_MAX_NPL] = {0};
        struct cl_model_batch_item it[CL_BB_MAX_NPL];
        struct cl_model_batch *b = NULL;
        int32_t *prompt = malloc((size_t)n * npp * sizeof(int32_t)), next[CL_BB_MAX_NPL];
        float *logits = malloc((size_t)n * V * sizeof(float));
        uint32_t rows = n > 256 ? n : 256;
        if (!prompt || !logits || cl_model_batch_new(m, rows, npp + ntg, pool, &b) != CL_OK)
            return 1;
        struct cl_model_seq_params sp = {.n_ctx = npp + ntg, .n_ubatch = 256, .kv_only = true};
        for (unsigned s = 0; s < n; s++)
            if (cl_model_seq_new_ex(m, &sp, pool, &seq[s]) != CL_OK)
                return 1;
        /* prompts: a different run of ids per sequence, as many rows per pass as fit */
        uint64_t t0 = cl_now_us();
        unsigned fed[CL_BB_MAX_NPL] = {0};
        for (bool more = true; more;) {
            size_t n_it = 0;
            uint32_t used = 0;
            more = false;
            for (unsigned s = 0; s < n && used < rows; s++) {
                if (fed[s] == npp)
                    continue;
                uint32_t c = npp - fed[s];
                c = c < 256 ? c : 256;
                c = c < rows - used ? c : rows - used;
                for (uint32_t j = 0; j < c; j++)
                    prompt[(size_t)s * npp + fed[s] + j] = (int32_t)((1000u + 7919u * s + 31u * (fed[s] + j)) % V);
                bool last = fed[s] + c == npp;
                it[n_it++] = (struct cl_model_batch_item){seq[s], prompt + (size_t)s * npp + fed[s], NULL, c, false,
                                                          last ? logits + (size_t)s * V : NULL};
                used += c;
                fed[s] += c;
            }
            if (n_it && cl_model_batch_eval(b, it, n_it) != CL_OK) {
                fprintf(stderr, "bench_batched: %s\n", cl_err_detail());
                return 1;
            }
            for (unsigned s = 0; s < n; s++)
                more = more || fed[s] < npp;
        }
        uint64_t t1 = cl_now_us();
        for (unsigned step = 0; step < ntg; step++) {
            for (unsigned s = 0; s < n; s++) {
                next[s] = cl_model_argmax(logits + (size_t)s * V, V);
                it[s] = (struct cl_model_batch_item){seq[s], &next[s], NULL, 1, false, logits + (size_t)s * V};
            }
            if (cl_model_batch_eval(b, it, n) != CL_OK) {
                fprintf(stderr, "bench_batched: %s\n", cl_err_detail());
                return 1;
            }
        }
        uint64_t t2 = cl_now_us();
        printf("{\"npl\":%u,\"npp\":%u,\"ntg\":%u,\"threads\":%u,\"pp_tps\":%.2f,\"tg_tps\":%.2f}\n", n, npp, ntg,
               threads, (double)n * npp / ((double)(t1 - t0) / 1e6), (double)n * ntg / ((double)(t2 - t1) / 1e6));
        fflush(stdout);
        for (unsigned s = 0; s < n; s++)
            cl_model_seq_free(seq[s]);
        cl_model_batch_free(b);
        free(prompt);
        free(logits);
    }
    cl_pool_free(pool);
    cl_model_free(m);
    cl_gguf_free(g);
    return 0;
}
