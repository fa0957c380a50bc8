/* Numeric kernels of the inference engine: ggml block formats, reference
 * (de)quantizers, quantized dot products and matrix-vector/matrix products,
 * and the float helpers the forward pass needs.
 *
 * The numbers follow llama.cpp's CPU backend (ggml) so that logits match:
 *  - block layouts are byte-identical to ggml's;
 *  - cl_k_quantize_row() reproduces ggml's quantize_row_*_ref bit for bit
 *    (what `llama-quantize` writes without an imatrix);
 *  - cl_k_act_quantize() reproduces how ggml's x86 CPU backend quantizes
 *    activations before a quantized dot product (Q8_0/Q8_1: d = amax/127,
 *    q = round-half-even(x * (127/amax)); Q8_K: the reference quantizer;
 *    F16/BF16: round-to-nearest-even conversion);
 *  - each weight type is paired with the activation type ggml pairs it with
 *    (cl_k_vec_dot_type), and every block contributes an exact integer dot
 *    product times its scales.
 *
 * Types are the on-disk ids of enum cl_ggml_type (cloister/ggml_types.h).
 * Weight types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
 * Activation-only types: Q8_1, Q8_K (Q8_0 is both).
 *
 * Length contract: n (elements per row) must be a multiple of the type's block
 * size (32 for Q*_0/Q*_1, 256 for K-quants, 1 for float types). The cl_err
 * functions check it; the hot-path functions (cl_k_vec_dot, the f32 helpers)
 * do not return errors: validate once with cl_k_check() when a model loads.
 *
 * SIMD: AVX2(+FMA+F16C) kernels for Q8_0/Q4_0/Q5_0/Q4_K/Q5_K/Q6_K/F16/BF16/F32
 * and AVX-512 F/BW/VL+VNNI kernels for the same types (a CPU with AVX-512 but
 * no VNNI uses the AVX2 ones); Q4_1/Q5_1 are scalar. The path is chosen per
 * call from cl_cpu_level(); CLOISTER_CPU=scalar|avx2 or cl_cpu_set_level()
 * caps it. Every path gives the same integer block sums; float accumulation
 * order differs, so results agree to ~1e-6 relative. Activation quantization
 * is bit-identical on every path.
 *
 * Typical use (one linear layer, n_tok tokens, rows split across threads):
 *   at = cl_k_vec_dot_type(wtype); rb = cl_k_row_bytes(at, n);
 *   for t: cl_k_act_quantize(at, x + t*n, acts + t*rb, n);     once per layer input
 *   per thread: cl_k_matmul_rows(wtype, W, w_row_bytes, r0, r1, acts, rb, n_tok, n, y, n_rows);
 *   -> y[t*n_rows + r] for r in [r0, r1). */
#ifndef CLOISTER_INFER_KERNELS_H
#define CLOISTER_INFER_KERNELS_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"
#include "cloister/ggml_types.h"

#define CL_K_QK 32    /* elements per Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q8_1 block */
#define CL_K_QK_K 256 /* elements per K-quant super-block */

/* ---- block formats (byte-identical to ggml; fp16 fields are raw bits) ---- */

struct cl_k_block_q4_0 {
    uint16_t d;               /* scale */
    uint8_t qs[CL_K_QK / 2];  /* element j in low nibble of qs[j], j+16 in high nibble; value = (q-8)*d */
} __attribute__((packed));

struct cl_k_block_q4_1 {
    uint16_t d, m;            /* value = q*d + m */
    uint8_t qs[CL_K_QK / 2];
} __attribute__((packed));

struct cl_k_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];            /* bit j = 5th bit of element j (little-endian uint32) */
    uint8_t qs[CL_K_QK / 2];  /* value = ((q | h<<4) - 16)*d */
} __attribute__((packed));

struct cl_k_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[CL_K_QK / 2];  /* value = (q | h<<4)*d + m */
} __attribute__((packed));

struct cl_k_block_q8_0 {
    uint16_t d;
    int8_t qs[CL_K_QK];       /* value = q*d */
} __attribute__((packed));

struct cl_k_block_q8_1 {
    uint16_t d;
    uint16_t s;               /* d * sum(qs), as fp16 */
    int8_t qs[CL_K_QK];
} __attribute__((packed));

/* Q4_K: 8 sub-blocks of 32, 6-bit scale and min each (packed in scales[12]);
 * value = d*sc*q - dmin*m. qs[32*k + l] holds element 64k+l (low nibble) and
 * 64k+32+l (high nibble). */
struct cl_k_block_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[CL_K_QK_K / 2];
} __attribute__((packed));

/* Q5_K: as Q4_K plus a 5th bit: qh[l] bit 2k is element 64k+l's, bit 2k+1 is
 * element 64k+32+l's. */
struct cl_k_block_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[CL_K_QK_K / 8];
    uint8_t qs[CL_K_QK_K / 2];
} __attribute__((packed));

/* Q6_K: 16 sub-blocks of 16 with int8 scales; value = d*sc*(q-32), q 6 bits. */
struct cl_k_block_q6_k {
    uint8_t ql[CL_K_QK_K / 2];
    uint8_t qh[CL_K_QK_K / 4];
    int8_t scales[CL_K_QK_K / 16];
    uint16_t d;
} __attribute__((packed));

/* Q8_K (activations only): float scale, bsums[i] = sum of qs[16i..16i+15]. */
struct cl_k_block_q8_k {
    float d;
    int8_t qs[CL_K_QK_K];
    int16_t bsums[CL_K_QK_K / 16];
} __attribute__((packed));

static_assert(sizeof(struct cl_k_block_q4_0) == 18, "q4_0 block size");
static_assert(sizeof(struct cl_k_block_q4_1) == 20, "q4_1 block size");
static_assert(sizeof(struct cl_k_block_q5_0) == 22, "q5_0 block size");
static_assert(sizeof(struct cl_k_block_q5_1) == 24, "q5_1 block size");
static_assert(sizeof(struct cl_k_block_q8_0) == 34, "q8_0 block size");
static_assert(sizeof(struct cl_k_block_q8_1) == 36, "q8_1 block size");
static_assert(sizeof(struct cl_k_block_q4_k) == 144, "q4_k block size");
static_assert(sizeof(struct cl_k_block_q5_k) == 176, "q5_k block size");
static_assert(sizeof(struct cl_k_block_q6_k) == 210, "q6_k block size");
static_assert(sizeof(struct cl_k_block_q8_k) == 292, "q8_k block size");

/* ---- scalar conversions (exact ggml rounding) ---- */

/* IEEE half <-> float, round to nearest even (same as F16C vcvtps2ph imm 0),
 * subnormals kept, overflow to inf, NaN stays NaN. */
float cl_k_fp16_to_fp32(uint16_t h);
uint16_t cl_k_fp32_to_fp16(float f);
/* bfloat16: round to nearest even, NaN forced quiet (ggml_compute_fp32_to_bf16). */
float cl_k_bf16_to_fp32(uint16_t h);
uint16_t cl_k_fp32_to_bf16(float f);
void cl_k_fp16_to_fp32_row(const uint16_t *src, float *dst, size_t n);
void cl_k_fp32_to_fp16_row(const float *src, uint16_t *dst, size_t n);
void cl_k_bf16_to_fp32_row(const uint16_t *src, float *dst, size_t n);
void cl_k_fp32_to_bf16_row(const float *src, uint16_t *dst, size_t n);

/* ---- type queries ---- */

/* true for types cl_k_vec_dot/cl_k_matmul_rows accept as weights. */
bool cl_k_weight_type_ok(uint32_t type);
/* OK when `type` is a supported weight type and n a positive multiple of its
 * block size; INFER_K_TYPE / INFER_K_LENGTH otherwise (detail names which). */
CL_MUST_CHECK cl_err cl_k_check(uint32_t type, size_t n);
/* Bytes of one row of n elements of `type` (any type in ggml_types.h), or 0
 * when the type is unknown or n is not a multiple of its block size, or on
 * overflow. */
size_t cl_k_row_bytes(uint32_t type, size_t n);
/* The activation type a weight type's dot product consumes (ggml's
 * vec_dot_type): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the
 * K-quants, F16 for F16, BF16 for BF16, F32 for F32. CL_GGML_TYPE_COUNT when
 * the weight type is unsupported. */
uint32_t cl_k_vec_dot_type(uint32_t wtype);

/* ---- (de)quantization ---- */

/* dst = n floats. Accepts every weight type plus Q8_1 and Q8_K. */
CL_MUST_CHECK cl_err cl_k_dequantize_row(uint32_t type, const void *src, float *dst, size_t n);
/* ggml's quantize_row_<type>_ref, bit for bit (for model files): Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K; F32/F16/BF16 convert.
 * dst holds cl_k_row_bytes(type, n) bytes. */
CL_MUST_CHECK cl_err cl_k_quantize_row(uint32_t type, const float *src, void *dst, size_t n);
/* Activation quantization exactly as ggml's x86 CPU backend does it before a
 * dot product (from_float of the vec_dot_type): `act_type` is normally
 * cl_k_vec_dot_type(wtype). Q8_0/Q8_1 differ from the _ref quantizers in the
 * last bit (multiply by 127/amax, round half to even); Q8_K, F16, BF16, F32
 * are the reference conversions. */
CL_MUST_CHECK cl_err cl_k_act_quantize(uint32_t act_type, const float *src, void *dst, size_t n);

/* ---- dot products ---- */

/* Dot product of one weight row (n elements of wtype) with one activation row
 * already in cl_k_vec_dot_type(wtype). Precondition: cl_k_check(wtype, n) ==
 * CL_OK; otherwise returns NaN. */
float cl_k_vec_dot(uint32_t wtype, const void *w_row, const void *act_row, size_t n);

/* Rows [r0, r1) of W·X for n_cols activation columns at once:
 *   out[c*out_stride + r] = vec_dot(W row r, acts column c)   r0 <= r < r1
 * W row r starts at (const char *)w + r*w_row_stride; column c at
 * (const char *)acts + c*act_stride, in cl_k_vec_dot_type(wtype), n elements
 * each. Weight blocks are loaded once and used for several columns, so prompt
 * processing (many columns) costs little more weight bandwidth than one.
 * Threads split [r0, r1) of the same call; each writes only its own rows.
 * Strides may exceed the packed row size (padding). Uses up to ~200 KB of
 * stack (prepared activations): keep worker thread stacks >= 512 KB (the
 * pthread default is 8 MB). Errors: INFER_K_TYPE,
 * INFER_K_LENGTH, INFER_K_ARG (NULL pointer, r0 > r1, stride smaller than a
 * row, out_stride < r1). */
CL_MUST_CHECK cl_err cl_k_matmul_rows(uint32_t wtype, const void *w, size_t w_row_stride, size_t r0, size_t r1,
                                      const void *acts, size_t act_stride, size_t n_cols, size_t n, float *out,
                                      size_t out_stride);

/* ---- 16 interleaved rows (set up once, when a model loads) ----
 * Q4_0, Q8_0, Q4_K and Q6_K matrices can be rewritten in place, 16 rows at a
 * time, into a layout whose AVX-512 VNNI kernels do 16 rows per instruction:
 * each lane of a vector accumulates one row, so there are no horizontal sums,
 * scales are decoded once per 16 rows for all columns, and every (row,
 * column) runs the same steps whatever the number of columns. A group keeps
 * the size of its 16 rows; rows past the last full group stay plain. The
 * numbers are the same block scales and quants, so the same integer block
 * sums; only the float order of the sum over blocks differs from the plain
 * kernels (~1e-6 relative). Block b of group g is at w + 16*g*row_bytes +
 * 16*b*block_bytes; in it, "vectors" are 64 bytes whose bytes 4l..4l+3 are
 * row l's:
 *  - Q8_0: the 16 fp16 scales, then 8 vectors, elements 4v..4v+3, stored
 *    q ^ 0x80 (unsigned);
 *  - Q4_0: the 16 scales, then 4 vectors of row l's qs[4v..4v+3] (low
 *    nibbles elements 4v.., high nibbles 16+4v..);
 *  - Q4_K (2304 bytes): 16 d, 16 dmin (fp16), then per sub-block j 16 bytes
 *    of (scale & 15) | (min & 15) << 4 by row, then 64 bytes whose byte
 *    16(j & 3) + l holds row l's high bits (scale >> 4) | (min >> 4) << 2 in
 *    its low (j < 4) or high nibble, then for each 32-byte quarter k of qs 8
 *    vectors of qs[32k + 4v ..];
 *  - Q6_K (3360 bytes): 16 d, the int8 scales in pairs (32 bytes per pair p:
 *    row l's scales 2p, 2p+1 at bytes 2l, 2l+1), 4 x 8 vectors of ql
 *    (quarters of 32 bytes), 2 x 8 vectors of qh (halves of 32 bytes).
 * Rows are row_bytes = cl_k_row_bytes(wtype, n) apart, with no padding. */
#define CL_K_ROWS16 16
/* true when the current CPU level has the interleaved kernel for wtype (the
 * only case where repacking pays). */
bool cl_k_rows16_fast(uint32_t wtype);
/* Rewrites rows [0, n_rows) of w in place (16*row_bytes of heap while it
 * works). INFER_K_TYPE for a type without the layout, NOMEM. */
CL_MUST_CHECK cl_err cl_k_rows16_pack(uint32_t wtype, void *w, size_t n_rows, size_t n);
/* Row r of a repacked matrix of n_rows rows, back in the plain layout (dst
 * holds cl_k_row_bytes(wtype, n) bytes). */
CL_MUST_CHECK cl_err cl_k_rows16_row(uint32_t wtype, const void *w, size_t n_rows, size_t r, void *dst, size_t n);
/* Row r of a repacked matrix as n floats. */
CL_MUST_CHECK cl_err cl_k_rows16_dequantize_row(uint32_t wtype, const void *w, size_t n_rows, size_t r, float *dst,
                                                size_t n);
/* cl_k_matmul_rows over a repacked matrix of n_rows rows. Any [r0, r1) and any
 * CPU level work (partial groups and levels without the kernel unpack rows to
 * the heap and use the plain kernels); whole groups on a fast level go
 * through the interleaved kernel. */
CL_MUST_CHECK cl_err cl_k_rows16_matmul(uint32_t wtype, const void *w, size_t n_rows, size_t r0, size_t r1,
                                        const void *acts, size_t act_stride, size_t n_cols, size_t n, float *out,
                                        size_t out_stride);

/* ---- float helpers (n may be any length, including 0) ---- */

float cl_k_dot_f32(const float *a, const float *b, size_t n);
void cl_k_axpy_f32(float *y, float a, const float *x, size_t n);   /* y += a*x */
void cl_k_axpy_f16(float *y, float a, const uint16_t *x, size_t n); /* y += a*x, x fp16 (e.g. an F16 V cache) */
void cl_k_scale_f32(float *y, float s, size_t n);                  /* y *= s */
void cl_k_add_f32(float *y, const float *x, size_t n);             /* y += x */
void cl_k_mul_f32(float *y, const float *x, size_t n);             /* y *= x (elementwise) */
/* In place: x = exp(x - max) / sum, sum in double as ggml. Returns the max
 * (useful for log-sum-exp); n == 0 returns -INFINITY. */
float cl_k_softmax_f32(float *x, size_t n);
/* y = x / sqrt(mean(x^2) + eps) (sum of squares in double as ggml's
 * rms_norm), then y *= w when w != NULL. y may alias x. */
void cl_k_rmsnorm_f32(float *y, const float *x, const float *w, size_t n, float eps);
/* tanh-GELU with exact float math: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))). */
void cl_k_gelu_f32(float *y, const float *x, size_t n);
/* ggml's CPU GELU: x <= -10 -> 0, x >= 10 -> x, else x rounded to fp16 and
 * looked up in a 65536-entry fp16 table of tanh-GELU. Matches llama.cpp. */
void cl_k_gelu_ggml_f32(float *y, const float *x, size_t n);
/* x / (1 + exp(-x)). */
void cl_k_silu_f32(float *y, const float *x, size_t n);
/* Gated FFN activations, y = act(g) * u (y may alias g or u). */
void cl_k_swiglu_f32(float *y, const float *g, const float *u, size_t n);
void cl_k_geglu_ggml_f32(float *y, const float *g, const float *u, size_t n); /* ggml table GELU */
void cl_k_geglu_f32(float *y, const float *g, const float *u, size_t n);      /* exact tanh GELU */

/* Name of the SIMD path cl_k_matmul_rows uses for wtype at the current
 * cl_cpu_level() ("scalar", "avx2", "avx512vnni"). For benchmarks and tests. */
const char *cl_k_path_name(uint32_t wtype);

#endif
