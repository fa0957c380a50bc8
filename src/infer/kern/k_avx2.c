/* AVX2 + FMA + F16C kernels. Every function carries the target attribute;
 * nothing here runs unless cl_cpu_level() >= CL_CPU_AVX2.
 *
 * Matmul tiles: each weight block is unpacked once into registers and used
 * for up to 4 activation columns, so prompt processing reads the weights
 * once per 4 tokens from cache rather than once per token. */
#include <immintrin.h>

#include "k_internal.h"

#define CL_K_T __attribute__((target("avx2,fma,f16c")))
#define CL_K_TI __attribute__((target("avx2,fma,f16c"), always_inline, unused)) static inline
#define CL_K_TILE 4
/* Software prefetch distance in bytes of weights (helps DRAM-bound matvec). */
#define CL_K2_PF 4096

CL_K_TI float cl_k2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CL_K_TI float cl_k2_h2f(const void *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set. */
CL_K_TI __m256i cl_k2_bits_to_bytes(uint32_t bits)
{
    const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                         3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), idx);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, sel), sel);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles. */
CL_K_TI __m256i cl_k2_nibbles(const uint8_t *p)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m), _mm_and_si128(t, m));
}

/* ---------------------------------------------------- Q8_0-activation family */

CL_K_TI __m256i cl_k2_unpack_q8_0(const uint8_t *b)
{
    return _mm256_loadu_si256((const __m256i *)(b + 2));
}

CL_K_TI __m256i cl_k2_unpack_q4_0(const uint8_t *b)
{
    return _mm256_sub_epi8(cl_k2_nibbles(b + 2), _mm256_set1_epi8(8));
}

CL_K_TI __m256i cl_k2_unpack_q5_0(const uint8_t *b)
{
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    /* (q | h<<4) - 16 == q | (h ? 0 : 0xF0) as int8 */
    const __m256i hi = _mm256_andnot_si256(cl_k2_bits_to_bytes(qh), _mm256_set1_epi8((char)0xF0));
    return _mm256_or_si256(cl_k2_nibbles(b + 6), hi);
}

typedef __m256i (*cl_k2_unpack_fn)(const uint8_t *b);

/* M columns (1..4) of one weight row; blocks of bb bytes start with fp16 d. */
/* dyf[j]: column j's block scales as floats, converted once per call. */
CL_K_TI void cl_k2_q8act_tile(const uint8_t *x, size_t bb, cl_k2_unpack_fn unpack, const uint8_t *const *yc,
                              const float *const *dyf, int M, size_t nb, float *res)
{
    __m256 acc[CL_K_TILE];
    for (int j = 0; j < M; j++)
        acc[j] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++, x += bb) {
        _mm_prefetch((const char *)x + CL_K2_PF, _MM_HINT_T0);
        const __m256i q = unpack(x);
        const __m256 dw = _mm256_set1_ps(cl_k2_h2f(x));
        const __m256i ax = _mm256_sign_epi8(q, q);
        for (int j = 0; j < M; j++) {
            const uint8_t *yb = yc[j] + b * sizeof(struct cl_k_block_q8_0);
            const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(yb + 2)), q);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
            const __m256 d = _mm256_mul_ps(dw, _mm256_broadcast_ss(dyf[j] + b));
            acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < M; j++)
        res[j] = cl_k2_hsum(acc[j]);
}

#define CL_K2_DY_MAX 16384 /* floats of prepared activation scales on the stack */

CL_K_TI void cl_k2_put(float *dst, float v, bool add) { *dst = add ? *dst + v : v; }

/* Rows longer than this are done in chunks of the K dimension (results
 * added), so one column's scales always fit the stack buffer. */
#define CL_K2_KCHUNK (CL_K2_DY_MAX * CL_K_QK)

CL_K_TI void cl_k2_q8act_mm(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as, size_t nc,
                            size_t n, float *out, size_t os, size_t bb, cl_k2_unpack_fn unpack, bool add)
{
    const size_t nb = n / CL_K_QK;
    float stackbuf[CL_K2_DY_MAX];
    float *dyb = stackbuf;
    const size_t group = CL_K2_DY_MAX / nb; /* >= 1: n <= CL_K2_KCHUNK */
    for (size_t c0 = 0; c0 < nc; c0 += group) {
        const size_t gc = nc - c0 < group ? nc - c0 : group;
        for (size_t j = 0; j < gc; j++) {
            const uint8_t *y = (const uint8_t *)a + (c0 + j) * as;
            for (size_t b = 0; b < nb; b++)
                dyb[j * nb + b] = cl_k2_h2f(y + b * sizeof(struct cl_k_block_q8_0));
        }
        for (size_t r = r0; r < r1; r++) {
            const uint8_t *x = (const uint8_t *)w + r * ws;
            size_t c = 0;
            for (; c + CL_K_TILE <= gc; c += CL_K_TILE) {
                const uint8_t *yc[CL_K_TILE];
                const float *dyf[CL_K_TILE];
                float res[CL_K_TILE];
                for (int j = 0; j < CL_K_TILE; j++) {
                    yc[j] = (const uint8_t *)a + (c0 + c + (size_t)j) * as;
                    dyf[j] = dyb + (c + (size_t)j) * nb;
                }
                cl_k2_q8act_tile(x, bb, unpack, yc, dyf, CL_K_TILE, nb, res);
                for (int j = 0; j < CL_K_TILE; j++)
                    cl_k2_put(&out[(c0 + c + (size_t)j) * os + r], res[j], add);
            }
            for (; c < gc; c++) {
                const uint8_t *yc[1] = {(const uint8_t *)a + (c0 + c) * as};
                const float *dyf[1] = {dyb + c * nb};
                float res;
                cl_k2_q8act_tile(x, bb, unpack, yc, dyf, 1, nb, &res);
                cl_k2_put(&out[(c0 + c) * os + r], res, add);
            }
        }
    }
}

#define CL_K2_Q8ACT(NAME, BT)                                                                                         \
    CL_K_T static void cl_k2_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
                                       size_t nc, size_t n, float *out, size_t os)                                     \
    {                                                                                                                  \
        for (size_t k0 = 0; k0 < n; k0 += CL_K2_KCHUNK) {                                                              \
            const size_t kn = n - k0 < CL_K2_KCHUNK ? n - k0 : CL_K2_KCHUNK, kb = k0 / CL_K_QK;                        \
            cl_k2_q8act_mm((const uint8_t *)w + kb * sizeof(BT), ws, r0, r1,                                           \
                           (const uint8_t *)a + kb * sizeof(struct cl_k_block_q8_0), as, nc, kn, out, os, sizeof(BT),  \
                           cl_k2_unpack_##NAME, k0 > 0);                                                               \
        }                                                                                                              \
    }                                                                                                                  \
    CL_K_T static float cl_k2_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        float r;                                                                                                       \
        cl_k2_mm_##NAME(w, 0, 0, 1, a, 0, 1, n, &r, 1);                                                                \
        return r;                                                                                                      \
    }

CL_K2_Q8ACT(q8_0, struct cl_k_block_q8_0)
CL_K2_Q8ACT(q4_0, struct cl_k_block_q4_0)
CL_K2_Q8ACT(q5_0, struct cl_k_block_q5_0)

/* ---------------------------------------------------- K-quants */

/* Q4_K/Q5_K super-block unpacked: 8 vectors of 32 unsigned values, 8 scales
 * and 8 mins. */
struct cl_k2_k4 {
    __m256i q[8];
    uint8_t sc[8], m[8];
    float d, dmin;
};

CL_K_TI void cl_k2_unpack_q4_k(const struct cl_k_block_q4_k *x, struct cl_k2_k4 *u)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < 4; k++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        u->q[2 * k] = _mm256_and_si256(raw, m4);
        u->q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    }
    uint8_t sm[16];
    cl_k_scales_mins_k4(x->scales, sm);
    memcpy(u->sc, sm, 8);
    memcpy(u->m, sm + 8, 8);
    u->d = cl_k2_h2f(&x->d);
    u->dmin = cl_k2_h2f(&x->dmin);
}

CL_K_TI void cl_k2_unpack_q5_k(const struct cl_k_block_q5_k *x, struct cl_k2_k4 *u)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    const __m256i hb = _mm256_loadu_si256((const __m256i *)x->qh);
    for (int k = 0; k < 4; k++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        const __m256i s0 = _mm256_set1_epi8((char)(1 << (2 * k))), s1 = _mm256_set1_epi8((char)(1 << (2 * k + 1)));
        const __m256i h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, s0), s0), b4);
        const __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, s1), s1), b4);
        u->q[2 * k] = _mm256_or_si256(_mm256_and_si256(raw, m4), h0);
        u->q[2 * k + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h1);
    }
    uint8_t sm[16];
    cl_k_scales_mins_k4(x->scales, sm);
    memcpy(u->sc, sm, 8);
    memcpy(u->m, sm + 8, 8);
    u->d = cl_k2_h2f(&x->d);
    u->dmin = cl_k2_h2f(&x->dmin);
}

/* One unpacked Q4_K/Q5_K super-block against one Q8_K block. */
CL_K_TI void cl_k2_k4_block(const struct cl_k2_k4 *u, const struct cl_k_block_q8_k *y, __m256 *acc, float *macc)
{
    __m256i isum = _mm256_setzero_si256();
    for (int s = 0; s < 8; s++) {
        const __m256i yv = _mm256_loadu_si256((const __m256i *)(y->qs + 32 * s));
        const __m256i p = _mm256_maddubs_epi16(u->q[s], yv);
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_set1_epi16(u->sc[s])));
    }
    int msum = 0;
    for (int s = 0; s < 8; s++)
        msum += u->m[s] * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(u->d * y->d), _mm256_cvtepi32_ps(isum), *acc);
    *macc += u->dmin * y->d * (float)msum;
}

/* Q6_K super-block unpacked: 8 vectors of 32 values in 0..63 and, per vector,
 * the two 16-element scales as an int16 vector (low lane, high lane). */
struct cl_k2_q6 {
    __m256i q[8];
    __m256i sc16[8];
    __m256i scales16; /* all 16 scales sign-extended, for the -32 correction */
    float d;
};

CL_K_TI void cl_k2_unpack_q6_k(const struct cl_k_block_q6_k *x, struct cl_k2_q6 *u)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
        const __m256i hh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(hh, m2), 4);
        const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 2), m2), 4);
        const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 4), m2), 4);
        const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 6), m2), 4);
        u->q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), h0);
        u->q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), h1);
        u->q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2);
        u->q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3);
        for (int t = 0; t < 4; t++) {
            const int g = 8 * h + 2 * t;
            u->sc16[4 * h + t] = _mm256_set_m128i(_mm_set1_epi16(x->scales[g + 1]), _mm_set1_epi16(x->scales[g]));
        }
    }
    u->scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
    u->d = cl_k2_h2f(&x->d);
}

CL_K_TI void cl_k2_q6_block(const struct cl_k2_q6 *u, const struct cl_k_block_q8_k *y, __m256 *acc)
{
    __m256i isum = _mm256_setzero_si256();
    for (int v = 0; v < 8; v++) {
        const __m256i yv = _mm256_loadu_si256((const __m256i *)(y->qs + 32 * v));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(u->q[v], yv), u->sc16[v]));
    }
    /* values are q-32: subtract 32 * sum_g sc_g * bsum_g */
    const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), u->scales16);
    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(corr, 5));
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(u->d * y->d), _mm256_cvtepi32_ps(isum), *acc);
}

#define CL_K2_KQ(NAME, BT, UT, UNPACK, BLOCK, HASMIN, BLOCK2)                                                                 \
    CL_K_TI void cl_k2_tile_##NAME(const BT *x, const uint8_t *const *yc, int M, size_t nb, float *res)             \
    {                                                                                                                  \
        __m256 acc[CL_K_TILE];                                                                                         \
        float macc[CL_K_TILE];                                                                                         \
        for (int j = 0; j < M; j++) {                                                                                  \
            acc[j] = _mm256_setzero_ps();                                                                              \
            macc[j] = 0.0f;                                                                                            \
        }                                                                                                              \
        for (size_t b = 0; b < nb; b++) {                                                                              \
            UT u;                                                                                                      \
            for (size_t o = 0; o < sizeof(BT); o += 64)                                                                \
                _mm_prefetch((const char *)&x[b] + CL_K2_PF + o, _MM_HINT_T0);                                         \
            UNPACK(&x[b], &u);                                                                                         \
            for (int j = 0; j < M; j++) {                                                                              \
                const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)yc[j] + b;                          \
                BLOCK;                                                                                                 \
            }                                                                                                          \
        }                                                                                                              \
        for (int j = 0; j < M; j++)                                                                                    \
            res[j] = cl_k2_hsum(acc[j]) - macc[j];                                                                     \
        (void)macc;                                                                                                    \
    }                                                                                                                  \
    CL_K_T static float cl_k2_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        const uint8_t *yc[1] = {a};                                                                                    \
        float r;                                                                                                       \
        cl_k2_tile_##NAME(w, yc, 1, n / CL_K_QK_K, &r);                                                               \
        return r;                                                                                                      \
    }                                                                                                                  \
    /* Two weight rows against M columns from rows unpacked once into u0/u1:   \
     * each activation block is loaded once for both rows, and every (row,      \
     * column) pair runs exactly the operations of the single-row tile. */     \
    CL_K_TI void cl_k2_tile2_##NAME(const UT *u0, const UT *u1, const uint8_t *const *yc, int M, size_t nb,        \
                                    float *res0, float *res1)                                                      \
    {                                                                                                              \
        __m256 acc0[CL_K_TILE], acc1[CL_K_TILE];                                                                   \
        float macc0[CL_K_TILE], macc1[CL_K_TILE];                                                                  \
        for (int j = 0; j < M; j++) {                                                                              \
            acc0[j] = acc1[j] = _mm256_setzero_ps();                                                               \
            macc0[j] = macc1[j] = 0.0f;                                                                            \
        }                                                                                                          \
        for (size_t b = 0; b < nb; b++) {                                                                          \
            for (int j = 0; j < M; j++) {                                                                          \
                const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)yc[j] + b;                      \
                BLOCK2(&u0[b], acc0[j], macc0[j]);                                                                 \
                BLOCK2(&u1[b], acc1[j], macc1[j]);                                                                 \
            }                                                                                                      \
        }                                                                                                          \
        for (int j = 0; j < M; j++) {                                                                              \
            res0[j] = cl_k2_hsum(acc0[j]) - macc0[j];                                                              \
            res1[j] = cl_k2_hsum(acc1[j]) - macc1[j];                                                              \
        }                                                                                                          \
    }                                                                                                              \
    CL_K_T static void cl_k2_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
                                       size_t nc, size_t n, float *out, size_t os)                                     \
    {                                                                                                                  \
        const size_t nb = n / CL_K_QK_K;                                                                               \
        size_t r = r0;                                                                                                 \
        if (nc >= 2 && nb <= CL_K2_KQ_MAXB) {                                                                          \
            UT u0[CL_K2_KQ_MAXB], u1[CL_K2_KQ_MAXB];                                                                   \
            for (; r + 2 <= r1; r += 2) {                                                                              \
                const BT *x0 = (const BT *)((const uint8_t *)w + r * ws);                                              \
                const BT *x1 = (const BT *)((const uint8_t *)w + (r + 1) * ws);                                        \
                for (size_t b = 0; b < nb; b++) {                                                                      \
                    UNPACK(&x0[b], &u0[b]);                                                                            \
                    UNPACK(&x1[b], &u1[b]);                                                                            \
                }                                                                                                      \
                size_t c = 0;                                                                                          \
                for (; c + CL_K_TILE <= nc; c += CL_K_TILE) {                                                          \
                    const uint8_t *yc[CL_K_TILE];                                                                      \
                    float res0[CL_K_TILE], res1[CL_K_TILE];                                                            \
                    for (int j = 0; j < CL_K_TILE; j++)                                                                \
                        yc[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                             \
                    cl_k2_tile2_##NAME(u0, u1, yc, CL_K_TILE, nb, res0, res1);                                         \
                    for (int j = 0; j < CL_K_TILE; j++) {                                                              \
                        out[(c + (size_t)j) * os + r] = res0[j];                                                       \
                        out[(c + (size_t)j) * os + r + 1] = res1[j];                                                   \
                    }                                                                                                  \
                }                                                                                                      \
                for (; c < nc; c++) {                                                                                  \
                    const uint8_t *yc[1] = {(const uint8_t *)a + c * as};                                              \
                    cl_k2_tile2_##NAME(u0, u1, yc, 1, nb, &out[c * os + r], &out[c * os + r + 1]);                     \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (; r < r1; r++) {                                                                                          \
            const BT *x = (const BT *)((const uint8_t *)w + r * ws);                                                   \
            size_t c = 0;                                                                                              \
            for (; c + CL_K_TILE <= nc; c += CL_K_TILE) {                                                              \
                const uint8_t *yc[CL_K_TILE];                                                                          \
                float res[CL_K_TILE];                                                                                  \
                for (int j = 0; j < CL_K_TILE; j++)                                                                    \
                    yc[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                                 \
                cl_k2_tile_##NAME(x, yc, CL_K_TILE, nb, res);                                                          \
                for (int j = 0; j < CL_K_TILE; j++)                                                                    \
                    out[(c + (size_t)j) * os + r] = res[j];                                                            \
            }                                                                                                          \
            for (; c < nc; c++) {                                                                                      \
                const uint8_t *yc[1] = {(const uint8_t *)a + c * as};                                                  \
                cl_k2_tile_##NAME(x, yc, 1, nb, &out[c * os + r]);                                                     \
            }                                                                                                          \
        }                                                                                                              \
    }

/* Rows of up to this many super-blocks are unpacked once per pair of rows for
 * all columns; longer rows use the single-row tiles. */
#define CL_K2_KQ_MAXB 64
#define CL_K2_K4_BLOCK2(up, A, MA) cl_k2_k4_block(up, y, &(A), &(MA))
#define CL_K2_Q6_BLOCK2(up, A, MA) cl_k2_q6_block(up, y, &(A))

CL_K2_KQ(q4_k, struct cl_k_block_q4_k, struct cl_k2_k4, cl_k2_unpack_q4_k, cl_k2_k4_block(&u, y, &acc[j], &macc[j]), 1,
         CL_K2_K4_BLOCK2)
CL_K2_KQ(q5_k, struct cl_k_block_q5_k, struct cl_k2_k4, cl_k2_unpack_q5_k, cl_k2_k4_block(&u, y, &acc[j], &macc[j]), 1,
         CL_K2_K4_BLOCK2)
CL_K2_KQ(q6_k, struct cl_k_block_q6_k, struct cl_k2_q6, cl_k2_unpack_q6_k, cl_k2_q6_block(&u, y, &acc[j]), 0,
         CL_K2_Q6_BLOCK2)

/* ---------------------------------------------------- F32 / F16 */

CL_K_TI __m256 cl_k2_ld_f32(const void *p, size_t i) { return _mm256_loadu_ps((const float *)p + i); }
CL_K_TI __m256 cl_k2_ld_f16(const void *p, size_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
CL_K_TI __m256 cl_k2_ld_bf16(const void *p, size_t i)
{
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
CL_K_TI float cl_k2_s_f32(const void *p, size_t i) { return ((const float *)p)[i]; }
CL_K_TI float cl_k2_s_bf16(const void *p, size_t i) { return cl_k_bf16_to_fp32(((const uint16_t *)p)[i]); }
CL_K_TI float cl_k2_s_f16(const void *p, size_t i) { return _cvtsh_ss(((const uint16_t *)p)[i]); }

typedef __m256 (*cl_k2_ld_fn)(const void *p, size_t i);
typedef float (*cl_k2_s_fn)(const void *p, size_t i);

/* Two accumulators per column hide the FMA latency. */
CL_K_TI void cl_k2_float_tile(const void *x, cl_k2_ld_fn ld, cl_k2_s_fn sc, const void *const *yc, int M, size_t n,
                              float *res)
{
    __m256 acc0[CL_K_TILE], acc1[CL_K_TILE];
    for (int j = 0; j < M; j++)
        acc0[j] = acc1[j] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = ld(x, i), w1 = ld(x, i + 8);
        for (int j = 0; j < M; j++) {
            acc0[j] = _mm256_fmadd_ps(w0, ld(yc[j], i), acc0[j]);
            acc1[j] = _mm256_fmadd_ps(w1, ld(yc[j], i + 8), acc1[j]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 w0 = ld(x, i);
        for (int j = 0; j < M; j++)
            acc0[j] = _mm256_fmadd_ps(w0, ld(yc[j], i), acc0[j]);
    }
    for (int j = 0; j < M; j++) {
        float s = cl_k2_hsum(_mm256_add_ps(acc0[j], acc1[j]));
        for (size_t k = i; k < n; k++)
            s += sc(x, k) * sc(yc[j], k);
        res[j] = s;
    }
}

#define CL_K2_FLOAT(NAME)                                                                                              \
    CL_K_T static float cl_k2_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        const void *yc[1] = {a};                                                                                       \
        float r;                                                                                                       \
        cl_k2_float_tile(w, cl_k2_ld_##NAME, cl_k2_s_##NAME, yc, 1, n, &r);                                           \
        return r;                                                                                                      \
    }                                                                                                                  \
    CL_K_T static void cl_k2_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
                                       size_t nc, size_t n, float *out, size_t os)                                     \
    {                                                                                                                  \
        for (size_t r = r0; r < r1; r++) {                                                                             \
            const uint8_t *x = (const uint8_t *)w + r * ws;                                                            \
            size_t c = 0;                                                                                              \
            for (; c + CL_K_TILE <= nc; c += CL_K_TILE) {                                                              \
                const void *yc[CL_K_TILE];                                                                             \
                float res[CL_K_TILE];                                                                                  \
                for (int j = 0; j < CL_K_TILE; j++)                                                                    \
                    yc[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                                 \
                cl_k2_float_tile(x, cl_k2_ld_##NAME, cl_k2_s_##NAME, yc, CL_K_TILE, n, res);                          \
                for (int j = 0; j < CL_K_TILE; j++)                                                                    \
                    out[(c + (size_t)j) * os + r] = res[j];                                                            \
            }                                                                                                          \
            for (; c < nc; c++) {                                                                                      \
                const void *yc[1] = {(const uint8_t *)a + c * as};                                                     \
                cl_k2_float_tile(x, cl_k2_ld_##NAME, cl_k2_s_##NAME, yc, 1, n, &out[c * os + r]);                     \
            }                                                                                                          \
        }                                                                                                              \
    }

CL_K2_FLOAT(f32)
CL_K2_FLOAT(f16)
CL_K2_FLOAT(bf16)

/* ---------------------------------------------------- activation quantizers */

/* Same arithmetic as cl_k_act_q8_0_scalar: amax, d = amax/127, q =
 * round-half-even(x * (127/amax)); returns the 8 int32 values summed pairwise
 * for Q8_1's s. */
CL_K_TI bool cl_k2_q8_block(const float *x, int8_t *qs, float *d_out, __m256i *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) /* NaN: the scalar code decides */
        return false;
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float am = _mm_cvtss_f32(m4);
    const float id = am != 0.0f ? 127.f / am : 0.0f;
    if (!(id <= 3.4028234e38f) || !(am <= 3.4028234e38f)) /* subnormal or infinite amax: scalar decides */
        return false;
    *d_out = am / 127.f;
    const __m256 mul = _mm256_set1_ps(id);
    __m256i iv[4];
    for (int k = 0; k < 4; k++)
        iv[k] = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(v[k], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    *sum = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
    const __m256i p01 = _mm256_packs_epi32(iv[0], iv[1]);
    const __m256i p23 = _mm256_packs_epi32(iv[2], iv[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, p);
    return true;
}

CL_K_T static void cl_k_act_q8_0_avx2(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_0 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        float d;
        __m256i s;
        if (!cl_k2_q8_block(x + i * CL_K_QK, y[i].qs, &d, &s)) {
            cl_k_act_q8_0_scalar(x + i * CL_K_QK, &y[i], CL_K_QK);
            continue;
        }
        y[i].d = (uint16_t)_cvtss_sh(d, 0);
    }
}

CL_K_T static void cl_k_act_q8_1_avx2(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_1 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        float d;
        __m256i s;
        if (!cl_k2_q8_block(x + i * CL_K_QK, y[i].qs, &d, &s)) {
            cl_k_act_q8_1_scalar(x + i * CL_K_QK, &y[i], CL_K_QK);
            continue;
        }
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        y[i].d = (uint16_t)_cvtss_sh(d, 0);
        y[i].s = (uint16_t)_cvtss_sh(d * (float)_mm_cvtsi128_si32(t), 0);
    }
}

/* ---------------------------------------------------- table */

/* ---------------------------------------------------- float helpers */

CL_K_T static void cl_k_axpy_f32_avx2(float *y, float a, const float *x, size_t n)
{
    const __m256 av = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

CL_K_T static void cl_k_axpy_f16_avx2(float *y, float a, const uint16_t *x, size_t n)
{
    const __m256 av = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++)
        y[i] += a * _cvtsh_ss(x[i]);
}

CL_K_T static void cl_k_scale_f32_avx2(float *y, float s, size_t n)
{
    const __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(sv, _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] *= s;
}

CL_K_T static void cl_k_add_f32_avx2(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

CL_K_T static void cl_k_mul_f32_avx2(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] *= x[i];
}

/* Q8_K activations, bit-identical to cl_k_act_q8_k_scalar: the signed value
 * of largest magnitude (first one on ties), iscale = -127/max, q =
 * min(127, round-half-even(iscale*x)), d = 1/iscale, 16-element sums. */
CL_K_T static void cl_k_act_q8_k_avx2(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_k *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t i = 0; i < n / CL_K_QK_K; i++, x += CL_K_QK_K) {
        __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int k = 0; k < CL_K_QK_K; k += 8) {
            const __m256 v = _mm256_loadu_ps(x + k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float am = _mm_cvtss_f32(m4);
        if (!(am > 0.0f && am <= 3.4028234e38f) || _mm256_movemask_ps(nan)) { /* zero, inf or NaN: reference */
            cl_k_act_q8_k_scalar(x, &y[i], CL_K_QK_K);
            continue;
        }
        float max = 0.0f;
        const __m256 amv = _mm256_set1_ps(am);
        for (int k = 0; k < CL_K_QK_K; k += 8) {
            const __m256 v = _mm256_loadu_ps(x + k);
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), amv, _CMP_EQ_OQ));
            if (mask) {
                max = x[k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        if (!(iscale >= -3.4028234e38f && iscale <= 3.4028234e38f)) { /* subnormal max */
            cl_k_act_q8_k_scalar(x, &y[i], CL_K_QK_K);
            continue;
        }
        const __m256 is = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int k = 0; k < CL_K_QK_K; k += 32) {
            __m256i iv[4];
            for (int j = 0; j < 4; j++) {
                const __m256 p = _mm256_mul_ps(is, _mm256_loadu_ps(x + k + 8 * j));
                iv[j] = _mm256_min_epi32(
                    _mm256_cvtps_epi32(_mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), cap);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[i].qs + k), p);
        }
        for (int g = 0; g < CL_K_QK_K / 16; g++) {
            const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(y[i].qs + 16 * g)));
            __m256i s = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
            y[i].bsums[g] = (int16_t)_mm_cvtsi128_si32(t);
        }
        y[i].d = 1 / iscale;
    }
}

/* ---------------------------------------------------- row conversions */

CL_K_T static void cl_k_fp32_to_fp16_row_avx2(const float *src, void *dstv, size_t n)
{
    uint16_t *dst = dstv;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    for (; i < n; i++)
        dst[i] = (uint16_t)_cvtss_sh(src[i], 0);
}

CL_K_T static void cl_k_fp16_to_fp32_row_avx2(const void *srcv, float *dst, size_t n)
{
    const uint16_t *src = srcv;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(src[i]);
}

/* ---------------------------------------------------- table */

/* What AVX2 adds to the type table (k_type.c); Q4_1/Q5_1 stay scalar. */
const struct cl_k_path cl_k_avx2_path = {
    .name = "avx2",
    .level = CL_CPU_AVX2,
    .kern =
        {
            [CL_GGML_F32] = {.dot = cl_k2_dot_f32, .mm = cl_k2_mm_f32},
            [CL_GGML_F16] = {.to_float = cl_k_fp16_to_fp32_row_avx2,
                             .from_float_ref = cl_k_fp32_to_fp16_row_avx2,
                             .from_float = cl_k_fp32_to_fp16_row_avx2,
                             .dot = cl_k2_dot_f16,
                             .mm = cl_k2_mm_f16},
            [CL_GGML_BF16] = {.dot = cl_k2_dot_bf16, .mm = cl_k2_mm_bf16},
            [CL_GGML_Q4_0] = {.dot = cl_k2_dot_q4_0, .mm = cl_k2_mm_q4_0},
            [CL_GGML_Q5_0] = {.dot = cl_k2_dot_q5_0, .mm = cl_k2_mm_q5_0},
            [CL_GGML_Q8_0] = {.from_float = cl_k_act_q8_0_avx2, .dot = cl_k2_dot_q8_0, .mm = cl_k2_mm_q8_0},
            [CL_GGML_Q8_1] = {.from_float = cl_k_act_q8_1_avx2},
            [CL_GGML_Q4_K] = {.dot = cl_k2_dot_q4_k, .mm = cl_k2_mm_q4_k},
            [CL_GGML_Q5_K] = {.dot = cl_k2_dot_q5_k, .mm = cl_k2_mm_q5_k},
            [CL_GGML_Q6_K] = {.dot = cl_k2_dot_q6_k, .mm = cl_k2_mm_q6_k},
            [CL_GGML_Q8_K] = {.from_float = cl_k_act_q8_k_avx2},
        },
    .vec = {.axpy_f32 = cl_k_axpy_f32_avx2,
            .axpy_f16 = cl_k_axpy_f16_avx2,
            .scale_f32 = cl_k_scale_f32_avx2,
            .add_f32 = cl_k_add_f32_avx2,
            .mul_f32 = cl_k_mul_f32_avx2},
};
