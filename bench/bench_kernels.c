/* Single-thread matvec throughput of the inference kernels: GB/s of weight
 * bytes per type and SIMD path (best of several runs), plus a prompt-style
 * matmul of 64 columns. Usage: bench_kernels [seconds per measurement] [MiB streamed for DRAM] [type] [columns]
 * [width] [rows] (defaults 0.3 384 all 64 2048 5632; 8 columns is a decoding step of 8 sequences). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/cpu.h"
#include "cloister/infer/kernels.h"

static double bk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t bk_rng = 88172645463325252ull;

static float bk_rand(void)
{
    bk_rng ^= bk_rng << 13;
    bk_rng ^= bk_rng >> 7;
    bk_rng ^= bk_rng << 17;
    return (float)((bk_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* CL_BENCH_ROWS16=1: Q4_0/Q8_0 weights repacked into 16 interleaved rows. */
static bool bk_r16;

static cl_err bk_mm(uint32_t wt, const void *w, size_t rb, size_t rows, size_t r1, const void *a, size_t ab,
                    size_t nc, size_t n, float *out, size_t os)
{
    if (bk_r16)
        return cl_k_rows16_matmul(wt, w, rows, 0, r1, a, ab, nc, n, out, os);
    return cl_k_matmul_rows(wt, w, rb, 0, r1, a, ab, nc, n, out, os);
}

int main(int argc, char **argv)
{
    /* a 2048 x 5632 matrix (llama-1b FFN shape): 11.5M weights, far above cache */
    size_t n = argc > 5 ? (size_t)atol(argv[5]) : 2048, rows = argc > 6 ? (size_t)atol(argv[6]) : 5632;
    size_t cols_pp = argc > 4 ? (size_t)atol(argv[4]) : 64;
    if (n == 0 || n % 256 || rows == 0 || cols_pp == 0) {
        fprintf(stderr, "bench_kernels: width must be a positive multiple of 256, rows and columns positive\n");
        return 2;
    }
    double min_s = argc > 1 ? atof(argv[1]) : 0.3;
    /* MiB of weight copies for the DRAM column (0 disables); above the L3 size */
    size_t dram_mb = argc > 2 ? (size_t)atol(argv[2]) : 384;
    const char *only = argc > 3 ? argv[3] : NULL; /* one type, e.g. q4_0 */
    static const uint32_t types[] = {CL_GGML_Q4_0, CL_GGML_Q8_0, CL_GGML_Q5_0, CL_GGML_Q4_K, CL_GGML_Q5_K,
                                     CL_GGML_Q6_K, CL_GGML_F16,  CL_GGML_F32,  CL_GGML_Q4_1, CL_GGML_Q5_1,
                                     CL_GGML_BF16};
    float *x = malloc(n * sizeof(float));
    float *out = malloc(rows * cols_pp * sizeof(float));
    printf("matrix %zu x %zu, 1 thread; matvec = weights in cache (best run), DRAM = %zu MiB of copies streamed\n\n",
           rows, n, dram_mb);
    printf("| type | path | matvec GB/s | matvec ms | DRAM matvec GB/s | pp%zu GB/s-equiv | pp%zu Mcols·rows/s | DRAM pp%zu "
           "Mcols·rows/s |\n",
           cols_pp, cols_pp, cols_pp);
    printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        uint32_t wt = types[t], at = cl_k_vec_dot_type(wt);
        if (only && strcmp(only, cl_ggml_type_info(wt)->name))
            continue;
        size_t rb = cl_k_row_bytes(wt, n), ab = cl_k_row_bytes(at, n);
        unsigned char *W = malloc(rb * rows), *A = malloc(ab * cols_pp);
        for (size_t r = 0; r < rows; r++) {
            for (size_t i = 0; i < n; i++)
                x[i] = bk_rand() * 0.05f;
            if (cl_k_quantize_row(wt, x, W + r * rb, n) != CL_OK)
                return 1;
        }
        for (size_t c = 0; c < cols_pp; c++) {
            for (size_t i = 0; i < n; i++)
                x[i] = bk_rand();
            if (cl_k_act_quantize(at, x, A + c * ab, n) != CL_OK)
                return 1;
        }
        bk_r16 = getenv("CL_BENCH_ROWS16") && cl_k_rows16_fast(wt);
        if (bk_r16 && cl_k_rows16_pack(wt, W, rows, n) != CL_OK)
            return 1;
        size_t copies = (size_t)(dram_mb << 20) / (rb * rows) + 1;
        unsigned char *big = dram_mb ? malloc(copies * rb * rows) : NULL;
        for (size_t k = 0; big && k < copies; k++)
            memcpy(big + k * rb * rows, W, rb * rows);
        for (enum cl_cpu_level lvl = CL_CPU_SCALAR; lvl < CL_CPU_COUNT; lvl++) {
            cl_cpu_set_level(lvl);
            if (cl_cpu_level() != lvl)
                continue;
            const char *path = cl_k_path_name(wt);
            if (lvl > CL_CPU_SCALAR && !strcmp(path, "scalar"))
                continue;
            /* best of several single runs: the machine is shared, and the
             * fastest run is the closest to what the kernel can do */
            double mv = 1e30, pp = 1e30, t_start = bk_now();
            size_t pp_rows = lvl == CL_CPU_SCALAR ? rows / 16 : rows;
            for (int it = 0; it < 200 && (it < 5 || bk_now() - t_start < min_s); it++) {
                double t0 = bk_now();
                if (bk_mm(wt, W, rb, rows, rows, A, ab, 1, n, out, rows) != CL_OK)
                    return 1;
                double el = bk_now() - t0;
                mv = el < mv ? el : mv;
                if (lvl == CL_CPU_SCALAR && it >= 2)
                    break;
            }
            t_start = bk_now();
            for (int it = 0; it < 50 && (it < 3 || bk_now() - t_start < min_s); it++) {
                double t0 = bk_now();
                if (bk_mm(wt, W, rb, rows, pp_rows, A, ab, cols_pp, n, out, rows) != CL_OK)
                    return 1;
                double el = (bk_now() - t0) * (double)rows / (double)pp_rows;
                pp = el < pp ? el : pp;
                if (lvl == CL_CPU_SCALAR)
                    break;
            }
            /* weights streamed from DRAM: cycle through copies larger than L3 */
            double dram = 1e30, dram_pp = 1e30;
            if (big && lvl != CL_CPU_SCALAR) {
                for (int pass = 0; pass < 6; pass++) {
                    size_t nc = pass & 1 ? cols_pp : 1;
                    double t0 = bk_now();
                    for (size_t k = 0; k < copies; k++)
                        if (bk_mm(wt, big + k * rb * rows, rb, rows, rows, A, ab, nc, n, out, rows) != CL_OK)
                            return 1;
                    double el = (bk_now() - t0) / (double)copies;
                    if (nc == 1)
                        dram = el < dram ? el : dram;
                    else
                        dram_pp = el < dram_pp ? el : dram_pp;
                }
            }
            printf("| %s%s | %s | %.2f | %.3f | %.2f | %.2f | %.1f | %.1f |\n", cl_ggml_type_info(wt)->name, bk_r16 ? " rows16" : "", path,
                   (double)(rb * rows) / mv / 1e9, mv * 1e3, dram < 1e30 ? (double)(rb * rows) / dram / 1e9 : 0.0,
                   (double)(rb * rows) * (double)cols_pp / pp / 1e9, (double)rows * (double)cols_pp / pp / 1e6,
                   dram_pp < 1e30 ? (double)rows * (double)cols_pp / dram_pp / 1e6 : 0.0);
            fflush(stdout);
        }
        cl_cpu_set_level(CL_CPU_NONE);
        free(big);
        free(W);
        free(A);
    }
    free(x);
    free(out);
    return 0;
}
