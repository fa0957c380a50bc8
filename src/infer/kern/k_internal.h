/* Private to the kernel files: per-path function tables and shared helpers. */
#ifndef CL_INFER_K_INTERNAL_H
#define CL_INFER_K_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cloister/cpu.h"
#include "cloister/infer/kernels.h"

/* One row of weights against one activation row (n valid for the type). */
typedef float (*cl_k_dot_fn)(const void *w, const void *a, size_t n);
/* Rows [r0, r1) against n_cols activation columns (arguments pre-checked). */
typedef void (*cl_k_mm_fn)(const void *w, size_t w_stride, size_t r0, size_t r1, const void *a, size_t a_stride,
                           size_t n_cols, size_t n, float *out, size_t out_stride);

struct cl_k_impl {
    cl_k_dot_fn dot;
    cl_k_mm_fn mm; /* NULL: generic loop over dot */
    const char *name;
};

/* Fill *impl for a weight type on a path; false when the path has no kernel
 * for that type (the caller falls back to the next lower path). */
bool cl_k_scalar_impl(uint32_t wtype, struct cl_k_impl *impl);
bool cl_k_avx2_impl(uint32_t wtype, struct cl_k_impl *impl);
bool cl_k_avx512_impl(uint32_t wtype, bool vnni, struct cl_k_impl *impl);

/* Activation quantizers with SIMD versions (same results as scalar). */
void cl_k_act_q8_0_scalar(const float *x, void *dst, size_t n);
void cl_k_act_q8_1_scalar(const float *x, void *dst, size_t n);
void cl_k_act_q8_0_avx2(const float *x, void *dst, size_t n);
void cl_k_act_q8_1_avx2(const float *x, void *dst, size_t n);
void cl_k_act_q8_k_scalar(const float *x, void *dst, size_t n);
void cl_k_act_q8_k_avx2(const float *x, void *dst, size_t n);

/* F16C row conversions (round to nearest even, identical to the scalar ones). */
void cl_k_fp32_to_fp16_row_avx2(const float *src, uint16_t *dst, size_t n);
void cl_k_fp16_to_fp32_row_avx2(const uint16_t *src, float *dst, size_t n);

/* AVX2 float helpers (same results as scalar except FMA rounding in axpy). */
void cl_k_axpy_f32_avx2(float *y, float a, const float *x, size_t n);
void cl_k_axpy_f16_avx2(float *y, float a, const uint16_t *x, size_t n);
void cl_k_scale_f32_avx2(float *y, float s, size_t n);
void cl_k_add_f32_avx2(float *y, const float *x, size_t n);
void cl_k_mul_f32_avx2(float *y, const float *x, size_t n);

/* Q4_K/Q5_K 6-bit scale and min of sub-block j (0..7). */
static inline void cl_k_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* All 8 scales (out[0..7]) and mins (out[8..15]) of a Q4_K/Q5_K block at once:
 * the same values as cl_k_scale_min_k4 for j = 0..7. */
static inline void cl_k_scales_mins_k4(const uint8_t *q, uint8_t out[16])
{
    uint32_t u[4];
    memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
    const uint32_t mins_lo = u[1] & m6;
    u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);
    u[2] = mins_lo;
    u[0] &= m6;
    memcpy(out, u, 16);
}

/* Table-free fp16 decode used in inner loops. */
static inline float cl_k_h2f(uint16_t h) { return cl_k_fp16_to_fp32(h); }

#endif
