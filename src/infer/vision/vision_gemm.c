/* Compute-bound matrix products of the encoder (every patch at once): F32 or
 * F16 weights times F32 activations with register tiles of 4 weight rows x 6
 * activation columns (24 accumulators), column blocks kept in L2. Each output
 * element is the same sequence of 16-lane FMAs over k (masked at the end) and
 * one horizontal sum, whatever tile or thread computes it, so results do not
 * depend on the thread count. AVX-512 only; other CPUs use the model
 * runtime's matmul. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cloister/cpu.h"
#include "cloister/infer/kernels.h"
#include "vision_gemm.h"

#define CL_VG_T __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define CL_VG_MR 4
#define CL_VG_NR 6

bool cl_vision_gemm_ok(uint32_t wtype)
{
    return cl_cpu_level() >= CL_CPU_AVX512 && (wtype == CL_GGML_F32 || wtype == CL_GGML_F16);
}

CL_VG_T static inline __m512 cl_vg_ldw(const void *w, bool f16, size_t k, __mmask16 m)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k));
    return _mm512_maskz_loadu_ps(m, (const float *)w + k);
}

/* One output element: the reference order every tile reproduces. */
CL_VG_T static float cl_vg_one(const void *w, bool f16, const float *x, size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 16 <= n; k += 16)
        acc = _mm512_fmadd_ps(cl_vg_ldw(w, f16, k, 0xffff), _mm512_loadu_ps(x + k), acc);
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        acc = _mm512_fmadd_ps(cl_vg_ldw(w, f16, k, m), _mm512_maskz_loadu_ps(m, x + k), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

CL_VG_T static void cl_vg_tile(const uint8_t *w, size_t ws, bool f16, const float *x, size_t ldx, size_t n, float *y,
                              size_t ldy)
{
    /* fully unrolled so the 24 accumulators live in registers */
    __m512 acc[CL_VG_MR][CL_VG_NR];
#pragma GCC unroll 4
    for (int i = 0; i < CL_VG_MR; i++)
#pragma GCC unroll 6
        for (int j = 0; j < CL_VG_NR; j++)
            acc[i][j] = _mm512_setzero_ps();
    size_t k = 0;
    for (;;) {
        __mmask16 m = 0xffff;
        if (k + 16 > n) {
            if (k >= n)
                break;
            m = (__mmask16)((1u << (n - k)) - 1u);
        }
        __m512 xv[CL_VG_NR];
#pragma GCC unroll 6
        for (int j = 0; j < CL_VG_NR; j++)
            xv[j] = _mm512_maskz_loadu_ps(m, x + (size_t)j * ldx + k);
#pragma GCC unroll 4
        for (int i = 0; i < CL_VG_MR; i++) {
            const __m512 wv = cl_vg_ldw(w + (size_t)i * ws, f16, k, m);
#pragma GCC unroll 6
            for (int j = 0; j < CL_VG_NR; j++)
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
        k += 16;
    }
#pragma GCC unroll 4
    for (int i = 0; i < CL_VG_MR; i++)
#pragma GCC unroll 6
        for (int j = 0; j < CL_VG_NR; j++)
            y[(size_t)j * ldy + (size_t)i] = _mm512_reduce_add_ps(acc[i][j]);
}

CL_VG_T static void cl_vg_rows_avx512(const struct cl_vision_gemm *g, size_t r0, size_t r1)
{
    const bool f16 = g->wtype == CL_GGML_F16;
    /* columns per block: their activations stay in L2 while the rows stream */
    size_t cb = (384u * 1024u) / (g->n * sizeof(float) + 1);
    cb = cb < CL_VG_NR ? CL_VG_NR : cb - cb % CL_VG_NR;
    for (size_t c0 = 0; c0 < g->nc; c0 += cb) {
        const size_t c1 = c0 + cb < g->nc ? c0 + cb : g->nc;
        size_t r = r0;
        for (; r + CL_VG_MR <= r1; r += CL_VG_MR) {
            const uint8_t *w = (const uint8_t *)g->w + r * g->ws;
            size_t c = c0;
            for (; c + CL_VG_NR <= c1; c += CL_VG_NR)
                cl_vg_tile(w, g->ws, f16, g->x + c * g->ldx, g->ldx, g->n, g->y + c * g->ldy + r, g->ldy);
            for (; c < c1; c++)
                for (size_t i = 0; i < CL_VG_MR; i++)
                    g->y[c * g->ldy + r + i] = cl_vg_one(w + i * g->ws, f16, g->x + c * g->ldx, g->n);
        }
        for (; r < r1; r++)
            for (size_t c = c0; c < c1; c++)
                g->y[c * g->ldy + r] = cl_vg_one((const uint8_t *)g->w + r * g->ws, f16, g->x + c * g->ldx, g->n);
    }
}

void cl_vision_gemm_rows(const struct cl_vision_gemm *g, size_t r0, size_t r1)
{
    cl_vg_rows_avx512(g, r0, r1);
}

/* exp(x) for x <= 0 (softmax arguments): x = n ln2 + r, |r| <= ln2/2, a degree-6
 * polynomial for e^r (relative error ~2e-7, as libm's expf to a few ulp),
 * times 2^n; below -87 the result is 0. */
CL_VG_T static inline __m512 cl_vg_exp(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.3981999507e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

CL_VG_T static void cl_vg_softmax_avx512(float *x, size_t n, float scale)
{
    const __m512 sv = _mm512_set1_ps(scale);
    __m512 mv = _mm512_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        mv = _mm512_max_ps(mv, _mm512_mul_ps(_mm512_loadu_ps(x + i), sv));
    float mx = _mm512_reduce_max_ps(mv);
    for (size_t k = i; k < n; k++)
        mx = x[k] * scale > mx ? x[k] * scale : mx;
    const __m512 mxv = _mm512_set1_ps(mx);
    /* sum in double, as ggml's soft_max */
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = cl_vg_exp(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv), mxv));
        _mm512_storeu_ps(x + i, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++) {
        float e = expf(x[i] * scale - mx);
        x[i] = e;
        sum += (double)e;
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= (float)(1.0 / sum);
}

void cl_vision_softmax(float *x, size_t n, float scale)
{
    if (cl_cpu_level() >= CL_CPU_AVX512) {
        cl_vg_softmax_avx512(x, n, scale);
        return;
    }
    cl_k_scale_f32(x, scale, n);
    (void)cl_k_softmax_f32(x, n);
}
