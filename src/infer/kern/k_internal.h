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
/* A row of n elements (n a multiple of the block size) to floats and back. */
/* Packed groups [g0, g1) of 16 interleaved rows (CL_K_ROWS16 layout, group g
 * at w + g*16*row_bytes) against n_cols columns: out[c*out_stride + 16(g - g0) + l]. */
typedef void (*cl_k_mm16_fn)(const void *w, size_t row_bytes, size_t g0, size_t g1, const void *a, size_t a_stride,
                             size_t n_cols, size_t n, float *out, size_t out_stride);
typedef void (*cl_k_to_float_fn)(const void *src, float *dst, size_t n);
typedef void (*cl_k_from_float_fn)(const float *src, void *dst, size_t n);

/* The kernels of one ggml type on one code path. A SIMD path lists only what
 * it speeds up: a NULL field there means "the next lower path's". */
struct cl_k_kern {
    cl_k_to_float_fn to_float;         /* dequantize or widen a row */
    cl_k_from_float_fn from_float_ref; /* ggml's quantize_row_*_ref (model files) */
    cl_k_from_float_fn from_float;     /* ggml's x86 CPU from_float (activations) */
    cl_k_dot_fn dot;                   /* weight row . activation row in vec_dot_type */
    cl_k_mm_fn mm;                     /* rows x columns; NULL: a loop over dot */
    cl_k_mm16_fn mm16;                 /* interleaved groups x columns; NULL: none on this path */
    const char *dot_path;              /* the path dot and mm come from (set by k_type.c) */
};

/* Everything the kernels know about one ggml type (k_type.c). */
struct cl_k_type {
    const char *name;                  /* NULL: an id ggml_types.h does not know */
    uint32_t block_elems;              /* elements per block (from cl_ggml_type_info) */
    uint32_t block_bytes;              /* bytes per block */
    uint32_t vec_dot_type;             /* activations of its dot; CL_GGML_TYPE_COUNT: not a weight type */
    struct cl_k_kern at[CL_CPU_COUNT]; /* per CPU level, resolved once (at[CL_CPU_NONE] is empty) */
};

/* Float helpers with SIMD versions (k_f32.c); per path like struct cl_k_kern. */
struct cl_k_vec_fns {
    void (*axpy_f32)(float *y, float a, const float *x, size_t n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, size_t n);
    void (*scale_f32)(float *y, float s, size_t n);
    void (*add_f32)(float *y, const float *x, size_t n);
    void (*mul_f32)(float *y, const float *x, size_t n);
};

/* One SIMD path: its level, the kernels it adds per type, its float helpers. */
struct cl_k_path {
    const char *name;
    enum cl_cpu_level level;
    bool needs_vnni; /* only on CPUs with AVX512-VNNI (else the level keeps the lower path's) */
    struct cl_k_kern kern[CL_GGML_TYPE_COUNT];
    struct cl_k_vec_fns vec;
};

extern const struct cl_k_path cl_k_avx2_path;
extern const struct cl_k_path cl_k_avx512_path;

/* The table entry of a type id, or NULL when type >= CL_GGML_TYPE_COUNT. */
const struct cl_k_type *cl_k_type(uint32_t type);
/* The kernels of a type (< CL_GGML_TYPE_COUNT) at the current cl_cpu_level(),
 * which is read on every call because tests and CLOISTER_CPU may cap it. */
const struct cl_k_kern *cl_k_kern_now(uint32_t type);
/* The float helpers at the current cl_cpu_level(). */
const struct cl_k_vec_fns *cl_k_vec_now(void);

/* ---- scalar references, listed in the type table (k_type.c) ---- */

/* k_convert.c: rows of plain types. */
void cl_k_f32_to_float(const void *src, float *dst, size_t n);
void cl_k_f32_from_float(const float *src, void *dst, size_t n);
void cl_k_f16_to_float(const void *src, float *dst, size_t n);
void cl_k_f16_from_float(const float *src, void *dst, size_t n);
void cl_k_bf16_to_float(const void *src, float *dst, size_t n);
void cl_k_bf16_from_float(const float *src, void *dst, size_t n);

/* k_quant.c: ggml's quantize_row_*_ref, dequantize_row_*, and the x86 CPU
 * activation quantizers (from_float) that have SIMD versions. */
void cl_k_q4_0_ref(const float *x, void *dst, size_t n);
void cl_k_q4_1_ref(const float *x, void *dst, size_t n);
void cl_k_q5_0_ref(const float *x, void *dst, size_t n);
void cl_k_q5_1_ref(const float *x, void *dst, size_t n);
void cl_k_q8_0_ref(const float *x, void *dst, size_t n);
void cl_k_q8_1_ref(const float *x, void *dst, size_t n);
void cl_k_q4_k_ref(const float *x, void *dst, size_t n);
void cl_k_q5_k_ref(const float *x, void *dst, size_t n);
void cl_k_q6_k_ref(const float *x, void *dst, size_t n);
void cl_k_deq_q4_0(const void *src, float *y, size_t n);
void cl_k_deq_q4_1(const void *src, float *y, size_t n);
void cl_k_deq_q5_0(const void *src, float *y, size_t n);
void cl_k_deq_q5_1(const void *src, float *y, size_t n);
void cl_k_deq_q8_0(const void *src, float *y, size_t n);
void cl_k_deq_q8_1(const void *src, float *y, size_t n);
void cl_k_deq_q4_k(const void *src, float *y, size_t n);
void cl_k_deq_q5_k(const void *src, float *y, size_t n);
void cl_k_deq_q6_k(const void *src, float *y, size_t n);
void cl_k_deq_q8_k(const void *src, float *y, size_t n);
void cl_k_act_q8_0_scalar(const float *x, void *dst, size_t n);
void cl_k_act_q8_1_scalar(const float *x, void *dst, size_t n);
void cl_k_act_q8_k_scalar(const float *x, void *dst, size_t n); /* also Q8_K's _ref */

/* k_dot.c: dot products, the ground truth the SIMD paths are tested against. */
float cl_k_dot_q4_0(const void *w, const void *a, size_t n);
float cl_k_dot_q4_1(const void *w, const void *a, size_t n);
float cl_k_dot_q5_0(const void *w, const void *a, size_t n);
float cl_k_dot_q5_1(const void *w, const void *a, size_t n);
float cl_k_dot_q8_0(const void *w, const void *a, size_t n);
float cl_k_dot_q4_k(const void *w, const void *a, size_t n);
float cl_k_dot_q5_k(const void *w, const void *a, size_t n);
float cl_k_dot_q6_k(const void *w, const void *a, size_t n);
float cl_k_sdot_f32(const void *w, const void *a, size_t n);
float cl_k_sdot_f16(const void *w, const void *a, size_t n);
float cl_k_sdot_bf16(const void *w, const void *a, size_t n);

/* k_f32.c: the float helpers' scalar path. */
extern const struct cl_k_vec_fns cl_k_vec_scalar;

/* The 5th-bit word of a Q5_0/Q5_1 block (little-endian). */
static inline uint32_t cl_k_qh32(const uint8_t *qh)
{
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

/* Elements j and j+16 (j 0..15) of a 4- or 5-bit 32-block: the nibble, plus
 * the 5th bit from qh (0 for Q4_0/Q4_1). */
static inline int cl_k_q45_lo(const uint8_t *qs, uint32_t qh, int j)
{
    return (int)((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
}

static inline int cl_k_q45_hi(const uint8_t *qs, uint32_t qh, int j)
{
    return (int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
}

/* Q4_K/Q5_K element l (0..31) of sub-block j (0..7); q points at the 32 bytes
 * that hold sub-blocks j & ~1 and j | 1, qh is NULL for Q4_K. */
static inline int cl_k_k45_q(const uint8_t *q, const uint8_t *qh, int j, int l)
{
    return (int)(((q[l] >> (4 * (j & 1))) & 0xF) | (qh ? ((qh[l] >> j) & 1) << 4 : 0));
}

/* Q6_K elements l, l+32, l+64, l+96 (l 0..31) of a 128-element half whose
 * low bits are at ql and high bits at qh, each minus 32. */
static inline void cl_k_q6_k_quad(const uint8_t *ql, const uint8_t *qh, int l, int q[4])
{
    q[0] = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
    q[1] = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
    q[2] = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
    q[3] = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
}

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
