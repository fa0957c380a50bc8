/* The encoder's large products (internal). */
#ifndef CLOISTER_INFER_VISION_GEMM_H
#define CLOISTER_INFER_VISION_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* y[c*ldy + r] = sum_k W[r][k] * x[c*ldx + k] for c < nc; W rows are ws
 * bytes apart, F32 or F16 (activations already rounded to fp16 by the
 * caller for F16 weights, as ggml converts them). */
struct cl_vision_gemm {
    const void *w;
    uint32_t wtype;
    size_t ws;
    const float *x;
    size_t ldx;
    size_t nc, n;
    float *y;
    size_t ldy;
};

/* True when this CPU runs cl_vision_gemm_rows for the type (AVX-512, F32/F16). */
bool cl_vision_gemm_ok(uint32_t wtype);
/* Rows [r0, r1) of the product. */
void cl_vision_gemm_rows(const struct cl_vision_gemm *g, size_t r0, size_t r1);

/* x = softmax(x * scale) in place (sum in double as ggml); n > 0. */
void cl_vision_softmax(float *x, size_t n, float scale);

#endif
