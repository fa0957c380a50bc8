/* Kernels on arbitrary bytes: byte 0 picks a weight type, byte 1 the number
 * of blocks; the rest is weight data (and floats for the quantizers).
 * Dequantizing, dot products on every SIMD path and quantizing must never
 * read out of bounds or hit undefined behaviour, whatever the bytes (NaN and
 * inf scales included), and the SIMD paths must agree with scalar on the
 * activation bytes they produce. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/cpu.h"
#include "cloister/infer/kernels.h"

static const uint32_t fz_types[] = {CL_GGML_F32,  CL_GGML_F16,  CL_GGML_BF16, CL_GGML_Q4_0,
                                    CL_GGML_Q4_1, CL_GGML_Q5_0, CL_GGML_Q5_1, CL_GGML_Q8_0,
                                    CL_GGML_Q4_K, CL_GGML_Q5_K, CL_GGML_Q6_K};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const uint32_t wt = fz_types[data[0] % (sizeof(fz_types) / sizeof(fz_types[0]))];
    const uint32_t at = cl_k_vec_dot_type(wt);
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(wt);
    const size_t n = (size_t)(data[1] % 8 + 1) * ti->block_elems * (ti->block_elems == 1 ? 32 : 1);
    data += 2;
    size -= 2;
    const size_t wb = cl_k_row_bytes(wt, n), ab = cl_k_row_bytes(at, n);
    uint8_t *w = calloc(1, wb), *a = malloc(ab), *a2 = malloc(ab), *q = malloc(wb);
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), out[3];
    if (!w || !a || !a2 || !q || !x || !y)
        abort();
    memcpy(w, data, size < wb ? size : wb);
    /* floats from the bytes too (any bit pattern) */
    memset(x, 0, n * sizeof(float));
    memcpy(x, data, size < n * sizeof(float) ? size : n * sizeof(float));

    if (cl_k_dequantize_row(wt, w, y, n) != CL_OK)
        abort();
    const enum cl_cpu_level top = cl_cpu_level();
    for (enum cl_cpu_level l = CL_CPU_SCALAR; l <= top; l++) {
        cl_cpu_set_level(l);
        if (cl_k_act_quantize(at, x, l == CL_CPU_SCALAR ? a : a2, n) != CL_OK)
            abort();
        /* activation bytes agree across paths, NaN/inf/subnormal blocks too */
        if (l != CL_CPU_SCALAR && memcmp(a, a2, ab))
            abort();
        (void)cl_k_vec_dot(wt, w, a, n);
        if (cl_k_matmul_rows(wt, w, wb, 0, 1, a, ab, 1, n, out, 1) != CL_OK)
            abort();
    }
    cl_cpu_set_level(CL_CPU_NONE);
    /* 17 rows (one group of 16, one plain) of these bytes, each row rotated:
     * repacked and back must give every row's bytes, and products over the
     * repacked rows must be defined on every level (NaN scales included) */
    if (cl_k_rows16_pack(wt, NULL, 0, n) != CL_E_INFER_K_TYPE) { /* a type with the layout */
        uint8_t *rows = malloc(17 * wb), *p = malloc(17 * wb), *back = malloc(wb);
        float *o17 = malloc(17 * sizeof(float));
        if (!rows || !p || !back || !o17)
            abort();
        for (size_t r = 0; r < 17; r++)
            for (size_t i = 0; i < wb; i++)
                rows[r * wb + i] = w[(i + r * 7) % wb];
        memcpy(p, rows, 17 * wb);
        if (cl_k_rows16_pack(wt, p, 17, n) != CL_OK)
            abort();
        for (size_t r = 0; r < 17; r++)
            if (cl_k_rows16_row(wt, p, 17, r, back, n) != CL_OK || memcmp(back, rows + r * wb, wb) ||
                cl_k_rows16_dequantize_row(wt, p, 17, r, y, n) != CL_OK)
                abort();
        for (enum cl_cpu_level l = CL_CPU_SCALAR; l <= top; l++) {
            cl_cpu_set_level(l);
            if (cl_k_rows16_matmul(wt, p, 17, 0, 17, a, ab, 1, n, o17, 17) != CL_OK ||
                cl_k_rows16_matmul(wt, p, 17, 3, 9, a, ab, 1, n, o17, 17) != CL_OK)
                abort();
        }
        cl_cpu_set_level(CL_CPU_NONE);
        free(rows);
        free(p);
        free(back);
        free(o17);
    }
    if (cl_k_quantize_row(wt, x, q, n) != CL_OK)
        abort();
    free(w);
    free(a);
    free(a2);
    free(q);
    free(x);
    free(y);
    return 0;
}
