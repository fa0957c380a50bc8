/* AVX-512 F/BW/VL + VNNI kernels (used only when the CPU reports VNNI; plain
 * AVX-512 machines use the AVX2 kernels). Two 32-element blocks or two
 * K-quant sub-blocks fill one 512-bit register. Integer block sums are exact,
 * as in the scalar and AVX2 paths.
 *
 * Weights are made unsigned (q + offset) so vpdpbusd (unsigned x signed) can
 * do the multiply-add in one instruction; the offset times the activation sum
 * (one more vpdpbusd) is subtracted per block. */
#include <immintrin.h>

#include "k_internal.h"

#define CL_K_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define CL_K_TI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"), always_inline, unused)) static inline
#define CL_K_TILE 4

CL_K_TI float cl_k5_h2f(const void *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

CL_K_TI __m512i cl_k5_join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

/* 16 nibble bytes -> 32 bytes (low nibbles, then high nibbles), unsigned. */
CL_K_TI __m256i cl_k5_nibbles(const uint8_t *p)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m), _mm_and_si128(t, m));
}

CL_K_TI __m256i cl_k5_bits_to_bytes(uint32_t bits)
{
    const __mmask32 k = (__mmask32)bits;
    return _mm256_maskz_set1_epi8(k, 0x10);
}

/* ---------------------------------------------------- Q8_0-activation family */

/* Unsigned weights u = q + offset for two consecutive blocks (64 values). */
CL_K_TI __m512i cl_k5_u2_q8_0(const uint8_t *b, size_t bb)
{
    const __m512i v = cl_k5_join(_mm256_loadu_si256((const __m256i *)(b + 2)),
                                 _mm256_loadu_si256((const __m256i *)(b + bb + 2)));
    return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
}

/* two blocks' 16 nibble bytes -> [lo0 hi0 lo1 hi1] (128-bit lanes) */
CL_K_TI __m512i cl_k5_nib2(const uint8_t *p0, const uint8_t *p1)
{
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
                                              _mm_loadu_si128((const __m128i *)p1), 1);
    const __m512i x = _mm512_and_si512(cl_k5_join(t, _mm256_srli_epi16(t, 4)), _mm512_set1_epi8(0x0F));
    return _mm512_shuffle_i64x2(x, x, 0xD8);
}

CL_K_TI __m512i cl_k5_u2_q4_0(const uint8_t *b, size_t bb) { return cl_k5_nib2(b + 2, b + bb + 2); }

CL_K_TI __m512i cl_k5_u2_q5_0(const uint8_t *b, size_t bb)
{
    uint32_t h0, h1;
    memcpy(&h0, b + 2, 4);
    memcpy(&h1, b + bb + 2, 4);
    const __mmask64 k = (__mmask64)h0 | ((__mmask64)h1 << 32);
    return _mm512_or_si512(cl_k5_nib2(b + 6, b + bb + 6), _mm512_maskz_set1_epi8(k, 0x10));
}

CL_K_TI __m256i cl_k5_u_q8_0(const uint8_t *b)
{
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b + 2)), _mm256_set1_epi8((char)0x80));
}
CL_K_TI __m256i cl_k5_u_q4_0(const uint8_t *b) { return cl_k5_nibbles(b + 2); }
CL_K_TI __m256i cl_k5_u_q5_0(const uint8_t *b)
{
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    return _mm256_or_si256(cl_k5_nibbles(b + 6), cl_k5_bits_to_bytes(qh));
}

typedef __m256i (*cl_k5_u_fn)(const uint8_t *b);
typedef __m512i (*cl_k5_u2_fn)(const uint8_t *b, size_t bb);

#define CL_K5_QB sizeof(struct cl_k_block_q8_0)
/* Software prefetch distance in bytes of weights: the hardware streamer alone
 * leaves a single core well below its DRAM bandwidth during matvec. */
#define CL_K5_PF 4096

CL_K_TI uint32_t cl_k5_ld16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* Activations prepared once per call for a pair of Q8_0 blocks: the 64 quants
 * contiguous, -offset*sum(q) of each block in lanes 0 and 8 (the starting
 * accumulator of vpdpbusd, which removes the weight offset), and each block's
 * scale replicated over its 8 lanes. */
struct cl_k5_pair {
    int8_t y[64];
    int32_t corr[16];
    float dy[16];
};

#define CL_K5_PREP_BYTES (192u * 1024u)

static void cl_k5_prep(const uint8_t *a, size_t nb, int off, struct cl_k5_pair *pp)
{
    for (size_t b = 0; b < nb; b++) {
        struct cl_k5_pair *p = &pp[b / 2];
        const int h = (int)(b & 1);
        const uint8_t *blk = a + b * CL_K5_QB;
        memcpy(p->y + 32 * h, blk + 2, 32);
        int sum = 0;
        for (int j = 0; j < 32; j++)
            sum += (int8_t)blk[2 + j];
        uint16_t d16;
        memcpy(&d16, blk, 2);
        const float d = cl_k_fp16_to_fp32(d16);
        for (int j = 0; j < 8; j++) {
            p->corr[8 * h + j] = j == 0 ? -off * sum : 0;
            p->dy[8 * h + j] = d;
        }
    }
    if (nb & 1) { /* odd count: neutral second half */
        struct cl_k5_pair *p = &pp[nb / 2];
        memset(p->y + 32, 0, 32);
        memset(p->corr + 8, 0, 32);
        memset(p->dy + 8, 0, 32);
    }
}

CL_K_TI void cl_k5_q8act_tile(const uint8_t *x, size_t bb, cl_k5_u_fn unpack, cl_k5_u2_fn unpack2,
                              const struct cl_k5_pair *const *pc, int M, size_t nb, float *res)
{
    const __m512i sel = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc[CL_K_TILE];
    for (int j = 0; j < M; j++)
        acc[j] = _mm512_setzero_ps();
    size_t b = 0;
    for (; b + 2 <= nb; b += 2, x += 2 * bb) {
        _mm_prefetch((const char *)x + CL_K5_PF, _MM_HINT_T0);
        const __m512i u = unpack2(x, bb);
        const __m128 dw2 = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(cl_k5_ld16(x) | (cl_k5_ld16(x + bb) << 16))));
        const __m512 dw = _mm512_permutexvar_ps(sel, _mm512_castps128_ps512(dw2));
        _Pragma("GCC unroll 4") for (int j = 0; j < M; j++) {
            const struct cl_k5_pair *p = pc[j] + b / 2;
            const __m512i q = _mm512_dpbusd_epi32(_mm512_loadu_si512((const void *)p->corr), u,
                                                  _mm512_loadu_si512((const void *)p->y));
            const __m512 d = _mm512_mul_ps(dw, _mm512_loadu_ps(p->dy));
            acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q), acc[j]);
        }
    }
    if (b < nb) { /* odd last block: low halves only */
        const __m256i u = unpack(x);
        const __m256 dw = _mm256_set1_ps(cl_k5_h2f(x));
        for (int j = 0; j < M; j++) {
            const struct cl_k5_pair *p = pc[j] + b / 2;
            const __m256i q = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)p->corr), u,
                                                  _mm256_loadu_si256((const __m256i *)p->y));
            const __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(p->dy));
            const __m256 t = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
            acc[j] = _mm512_add_ps(acc[j], _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_setzero_si512(),
                                                                                   _mm256_castps_si256(t), 0)));
        }
    }
    for (int j = 0; j < M; j++)
        res[j] = _mm512_reduce_add_ps(acc[j]);
}

/* Two weight rows against 4 columns: each prepared activation vector is
 * loaded once for both rows. */
CL_K_TI void cl_k5_q8act_tile2(const uint8_t *x0, const uint8_t *x1, size_t bb, cl_k5_u_fn unpack,
                               cl_k5_u2_fn unpack2, const struct cl_k5_pair *const *pc, int M, size_t nb,
                               float *res0, float *res1)
{
    const __m512i sel = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 a0[CL_K_TILE], a1[CL_K_TILE];
    for (int j = 0; j < M; j++)
        a0[j] = a1[j] = _mm512_setzero_ps();
    size_t b = 0;
    for (; b + 2 <= nb; b += 2, x0 += 2 * bb, x1 += 2 * bb) {
        _mm_prefetch((const char *)x0 + CL_K5_PF, _MM_HINT_T0);
        _mm_prefetch((const char *)x1 + CL_K5_PF, _MM_HINT_T0);
        const __m512i u0 = unpack2(x0, bb), u1 = unpack2(x1, bb);
        const __m512 dw0 = _mm512_permutexvar_ps(
            sel, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)(cl_k5_ld16(x0) | (cl_k5_ld16(x0 + bb) << 16))))));
        const __m512 dw1 = _mm512_permutexvar_ps(
            sel, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)(cl_k5_ld16(x1) | (cl_k5_ld16(x1 + bb) << 16))))));
        _Pragma("GCC unroll 4") for (int j = 0; j < M; j++) {
            const struct cl_k5_pair *p = pc[j] + b / 2;
            const __m512i yv = _mm512_loadu_si512((const void *)p->y);
            const __m512i cv = _mm512_loadu_si512((const void *)p->corr);
            const __m512 dy = _mm512_loadu_ps(p->dy);
            const __m512i q0 = _mm512_dpbusd_epi32(cv, u0, yv);
            const __m512i q1 = _mm512_dpbusd_epi32(cv, u1, yv);
            a0[j] = _mm512_fmadd_ps(_mm512_mul_ps(dw0, dy), _mm512_cvtepi32_ps(q0), a0[j]);
            a1[j] = _mm512_fmadd_ps(_mm512_mul_ps(dw1, dy), _mm512_cvtepi32_ps(q1), a1[j]);
        }
    }
    if (b < nb) {
        const __m256i u0 = unpack(x0), u1 = unpack(x1);
        const __m256 dw0 = _mm256_set1_ps(cl_k5_h2f(x0)), dw1 = _mm256_set1_ps(cl_k5_h2f(x1));
        for (int j = 0; j < M; j++) {
            const struct cl_k5_pair *p = pc[j] + b / 2;
            const __m256i yv = _mm256_loadu_si256((const __m256i *)p->y);
            const __m256i cv = _mm256_loadu_si256((const __m256i *)p->corr);
            const __m256 dy = _mm256_loadu_ps(p->dy);
            const __m256 t0 = _mm256_mul_ps(_mm256_mul_ps(dw0, dy), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(cv, u0, yv)));
            const __m256 t1 = _mm256_mul_ps(_mm256_mul_ps(dw1, dy), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(cv, u1, yv)));
            a0[j] = _mm512_add_ps(a0[j], _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_setzero_si512(), _mm256_castps_si256(t0), 0)));
            a1[j] = _mm512_add_ps(a1[j], _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_setzero_si512(), _mm256_castps_si256(t1), 0)));
        }
    }
    for (int j = 0; j < M; j++) {
        res0[j] = _mm512_reduce_add_ps(a0[j]);
        res1[j] = _mm512_reduce_add_ps(a1[j]);
    }
}

CL_K_TI void cl_k5_put(float *dst, float v, bool add) { *dst = add ? *dst + v : v; }

/* Rows longer than this are done in chunks of the K dimension (results added),
 * so one prepared column always fits the stack buffer. */
#define CL_K5_KCHUNK 32768

/* Columns are prepared in groups that fit a stack buffer; within a group
 * every weight row is read once per 4 columns. */
CL_K_TI void cl_k5_q8act_mm(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as, size_t nc,
                            size_t n, float *out, size_t os, size_t bb, cl_k5_u_fn unpack, cl_k5_u2_fn unpack2, int off,
                            bool add)
{
    const size_t nb = n / CL_K_QK, np = (nb + 1) / 2;
    const size_t col_bytes = np * sizeof(struct cl_k5_pair);
    _Alignas(64) uint8_t stackbuf[CL_K5_PREP_BYTES];
    struct cl_k5_pair *buf = (struct cl_k5_pair *)stackbuf;
    const size_t group = CL_K5_PREP_BYTES / col_bytes; /* >= 1: n <= CL_K5_KCHUNK */
    for (size_t c0 = 0; c0 < nc; c0 += group) {
        const size_t gc = nc - c0 < group ? nc - c0 : group;
        for (size_t j = 0; j < gc; j++)
            cl_k5_prep((const uint8_t *)a + (c0 + j) * as, nb, off, buf + j * np);
        size_t r = r0;
        {
            for (; r + 2 <= r1; r += 2) {
                const uint8_t *x0 = (const uint8_t *)w + r * ws, *x1 = x0 + ws;
                size_t c = 0;
                for (; c + CL_K_TILE <= gc; c += CL_K_TILE) {
                    const struct cl_k5_pair *pc[CL_K_TILE];
                    float res0[CL_K_TILE], res1[CL_K_TILE];
                    for (int j = 0; j < CL_K_TILE; j++)
                        pc[j] = buf + (c + (size_t)j) * np;
                    cl_k5_q8act_tile2(x0, x1, bb, unpack, unpack2, pc, CL_K_TILE, nb, res0, res1);
                    for (int j = 0; j < CL_K_TILE; j++) {
                        cl_k5_put(&out[(c0 + c + (size_t)j) * os + r], res0[j], add);
                        cl_k5_put(&out[(c0 + c + (size_t)j) * os + r + 1], res1[j], add);
                    }
                }
                for (; c < gc; c++) {
                    const struct cl_k5_pair *pc[1] = {buf + c * np};
                    float res0, res1;
                    cl_k5_q8act_tile2(x0, x1, bb, unpack, unpack2, pc, 1, nb, &res0, &res1);
                    cl_k5_put(&out[(c0 + c) * os + r], res0, add);
                    cl_k5_put(&out[(c0 + c) * os + r + 1], res1, add);
                }
            }
        }
        for (; r < r1; r++) {
            const uint8_t *x = (const uint8_t *)w + r * ws;
            size_t c = 0;
            for (; c + CL_K_TILE <= gc; c += CL_K_TILE) {
                const struct cl_k5_pair *pc[CL_K_TILE];
                float res[CL_K_TILE];
                for (int j = 0; j < CL_K_TILE; j++)
                    pc[j] = buf + (c + (size_t)j) * np;
                cl_k5_q8act_tile(x, bb, unpack, unpack2, pc, CL_K_TILE, nb, res);
                for (int j = 0; j < CL_K_TILE; j++)
                    cl_k5_put(&out[(c0 + c + (size_t)j) * os + r], res[j], add);
            }
            for (; c < gc; c++) {
                const struct cl_k5_pair *pc[1] = {buf + c * np};
                float res;
                cl_k5_q8act_tile(x, bb, unpack, unpack2, pc, 1, nb, &res);
                cl_k5_put(&out[(c0 + c) * os + r], res, add);
            }
        }
    }
}

#define CL_K5_Q8ACT(NAME, BT, OFF)                                                                                     \
    CL_K_T static void cl_k5_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
                                       size_t nc, size_t n, float *out, size_t os)                                     \
    {                                                                                                                  \
        for (size_t k0 = 0; k0 < n; k0 += CL_K5_KCHUNK) {                                                              \
            const size_t kn = n - k0 < CL_K5_KCHUNK ? n - k0 : CL_K5_KCHUNK, kb = k0 / CL_K_QK;                        \
            cl_k5_q8act_mm((const uint8_t *)w + kb * sizeof(BT), ws, r0, r1, (const uint8_t *)a + kb * CL_K5_QB, as,  \
                           nc, kn, out, os, sizeof(BT), cl_k5_u_##NAME, cl_k5_u2_##NAME, OFF, k0 > 0);                 \
        }                                                                                                              \
    }                                                                                                                  \
    CL_K_T static float cl_k5_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        float r;                                                                                                       \
        cl_k5_mm_##NAME(w, 0, 0, 1, a, 0, 1, n, &r, 1);                                                                \
        return r;                                                                                                      \
    }

CL_K5_Q8ACT(q8_0, struct cl_k_block_q8_0, 0x80)
CL_K5_Q8ACT(q4_0, struct cl_k_block_q4_0, 8)
CL_K5_Q8ACT(q5_0, struct cl_k_block_q5_0, 16)

/* ---------------------------------------------------- 16 interleaved rows (k_rows16.c) */

/* A group of 16 Q4_0/Q8_0 rows, block b at g + b*16*bb: the 16 fp16 scales,
 * then vectors whose bytes 4l..4l+3 belong to row l (k_internal.h). One
 * vpdpbusd there is 4 elements of 16 rows against 4 activation bytes
 * broadcast, so each lane accumulates one row: no horizontal sums, and every
 * (row, column) runs the same steps whatever the number of columns. */

/* Per column and block, prepared once per call: the correction
 * -offset*sum(q) that starts each block's integer sum, and the scale. */
struct cl_k5_r16col {
    int32_t corr;
    float d;
};

/* Blocks per K chunk (prepared columns fit CL_K5_R16_PREP on the stack). */
#define CL_K5_R16_KB 512u
#define CL_K5_R16_PREP (128u * 1024u)
#define CL_K5_R16_TILE 8
#ifndef CL_K5_R16_PF
#define CL_K5_R16_PF 8192
#endif

/* The 8 vectors of one block, made unsigned: Q8_0 is stored as q ^ 0x80; Q4_0
 * vector v holds groups v (low nibbles) and v+4 (high nibbles). */
CL_K_TI void cl_k5_r16_w(const uint8_t *blk, bool q4, __m512i W[8])
{
    if (q4) {
        const __m512i m = _mm512_set1_epi8(0x0F);
        for (int v = 0; v < 4; v++) {
            const __m512i x = _mm512_loadu_si512((const void *)(blk + 32 + 64 * v));
            W[v] = _mm512_and_si512(x, m);
            W[v + 4] = _mm512_and_si512(_mm512_srli_epi16(x, 4), m);
        }
    } else {
        for (int v = 0; v < 8; v++)
            W[v] = _mm512_loadu_si512((const void *)(blk + 32 + 64 * v));
    }
}

/* Group elements: vector v covers activation bytes 4v..4v+3 (Q8_0) or, for
 * Q4_0, v<4: 4v.., v>=4: 16+4(v-4).. which is again 4v. */
CL_K_TI __m512i cl_k5_bcast32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Every line of the group's block CL_K5_R16_PF bytes ahead. */
CL_K_TI void cl_k5_r16_prefetch(const uint8_t *g, size_t gb)
{
    for (size_t o = 0; o < gb; o += 64)
        _mm_prefetch((const char *)g + CL_K5_R16_PF + o, _MM_HINT_T0);
}

/* Four groups of 16 rows (W[0..3]) against activation bytes aq[0..15], added to s. */
CL_K_TI __m512i cl_k5_r16_dp4(__m512i s, const __m512i *W, const uint8_t *aq)
{
    s = _mm512_dpbusd_epi32(s, W[0], cl_k5_bcast32(aq));
    s = _mm512_dpbusd_epi32(s, W[1], cl_k5_bcast32(aq + 4));
    s = _mm512_dpbusd_epi32(s, W[2], cl_k5_bcast32(aq + 8));
    return _mm512_dpbusd_epi32(s, W[3], cl_k5_bcast32(aq + 12));
}

/* 32 elements: two independent chains (integer: exact in any order). */
CL_K_TI __m512i cl_k5_r16_block(__m512i s, const __m512i W[8], const uint8_t *aq)
{
    return _mm512_add_epi32(cl_k5_r16_dp4(s, W, aq), cl_k5_r16_dp4(_mm512_setzero_si512(), W + 4, aq + 16));
}

/* One group against M columns over kb blocks. */
CL_K_TI void cl_k5_r16_tile(const uint8_t *g, size_t gb, bool q4, const uint8_t *const *ac,
                            const struct cl_k5_r16col *const *pc, int M, size_t kb, float *const *dst, bool add)
{
    __m512 acc[CL_K5_R16_TILE];
    for (int j = 0; j < M; j++)
        acc[j] = _mm512_setzero_ps();
    for (size_t b = 0; b < kb; b++, g += gb) {
        cl_k5_r16_prefetch(g, gb);
        __m512i W[8];
        cl_k5_r16_w(g, q4, W);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        _Pragma("GCC unroll 8") for (int j = 0; j < M; j++) {
            const struct cl_k5_r16col *p = pc[j] + b;
            const __m512i s = cl_k5_r16_block(_mm512_set1_epi32(p->corr), W, ac[j] + b * CL_K5_QB + 2);
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(p->d)), _mm512_cvtepi32_ps(s), acc[j]);
        }
    }
    for (int j = 0; j < M; j++) {
        if (add)
            acc[j] = _mm512_add_ps(acc[j], _mm512_loadu_ps(dst[j]));
        _mm512_storeu_ps(dst[j], acc[j]);
    }
}

CL_K_TI void cl_k5_r16_mm(const void *w, size_t rb, size_t g0, size_t g1, const void *a, size_t as, size_t nc,
                          size_t n, float *out, size_t os, size_t bb, bool q4, int off)
{
    const size_t nb = n / CL_K_QK, gb = 16 * bb;
    _Alignas(64) struct cl_k5_r16col prep[CL_K5_R16_PREP / sizeof(struct cl_k5_r16col)];
    for (size_t k0 = 0; k0 < nb; k0 += CL_K5_R16_KB) {
        const size_t kb = nb - k0 < CL_K5_R16_KB ? nb - k0 : CL_K5_R16_KB;
        const size_t group = sizeof(prep) / sizeof(prep[0]) / kb; /* >= 1 */
        for (size_t c0 = 0; c0 < nc; c0 += group) {
            const size_t gc = nc - c0 < group ? nc - c0 : group;
            for (size_t j = 0; j < gc; j++) {
                const uint8_t *col = (const uint8_t *)a + (c0 + j) * as + k0 * CL_K5_QB;
                for (size_t b = 0; b < kb; b++) {
                    const uint8_t *blk = col + b * CL_K5_QB;
                    int sum = 0;
                    for (int i = 0; i < 32; i++)
                        sum += (int8_t)blk[2 + i];
                    prep[j * kb + b].corr = -off * sum;
                    prep[j * kb + b].d = cl_k5_h2f(blk);
                }
            }
            for (size_t gi = g0; gi < g1; gi++) {
                const uint8_t *g = (const uint8_t *)w + gi * 16 * rb + k0 * gb;
                size_t c = 0;
                const uint8_t *ac[CL_K5_R16_TILE];
                const struct cl_k5_r16col *pc[CL_K5_R16_TILE];
                float *dst[CL_K5_R16_TILE];
                for (; c + CL_K5_R16_TILE <= gc; c += CL_K5_R16_TILE) {
                    for (int j = 0; j < CL_K5_R16_TILE; j++) {
                        ac[j] = (const uint8_t *)a + (c0 + c + (size_t)j) * as + k0 * CL_K5_QB;
                        pc[j] = prep + (c + (size_t)j) * kb;
                        dst[j] = out + (c0 + c + (size_t)j) * os + (gi - g0) * 16;
                    }
                    cl_k5_r16_tile(g, gb, q4, ac, pc, CL_K5_R16_TILE, kb, dst, k0 > 0);
                }
                if (c + 4 <= gc) {
                    for (int j = 0; j < 4; j++) {
                        ac[j] = (const uint8_t *)a + (c0 + c + (size_t)j) * as + k0 * CL_K5_QB;
                        pc[j] = prep + (c + (size_t)j) * kb;
                        dst[j] = out + (c0 + c + (size_t)j) * os + (gi - g0) * 16;
                    }
                    cl_k5_r16_tile(g, gb, q4, ac, pc, 4, kb, dst, k0 > 0);
                    c += 4;
                }
                for (; c < gc; c++) {
                    ac[0] = (const uint8_t *)a + (c0 + c) * as + k0 * CL_K5_QB;
                    pc[0] = prep + c * kb;
                    dst[0] = out + (c0 + c) * os + (gi - g0) * 16;
                    cl_k5_r16_tile(g, gb, q4, ac, pc, 1, kb, dst, k0 > 0);
                }
            }
        }
    }
}

CL_K_T static void cl_k5_mm16_q8_0(const void *w, size_t rb, size_t g0, size_t g1, const void *a, size_t as,
                                   size_t nc, size_t n, float *out, size_t os)
{
    cl_k5_r16_mm(w, rb, g0, g1, a, as, nc, n, out, os, sizeof(struct cl_k_block_q8_0), false, 0x80);
}

CL_K_T static void cl_k5_mm16_q4_0(const void *w, size_t rb, size_t g0, size_t g1, const void *a, size_t as,
                                   size_t nc, size_t n, float *out, size_t os)
{
    cl_k5_r16_mm(w, rb, g0, g1, a, as, nc, n, out, os, sizeof(struct cl_k_block_q4_0), true, 8);
}

/* ---------------------------------------------------- K-quants */

/* Q4_K/Q5_K: 4 vectors of 64 unsigned values (sub-blocks 2k, 2k+1) with the
 * matching int16 scale vectors. */
struct cl_k5_k4 {
    __m512i q[4];
    __m512i sc2[2]; /* int16 scales matching cl_k5_pack_pair of vectors 2p, 2p+1 */
    __m512i m16; /* min of sub-block s at int16 lanes 2s, 2s+1 (lanes 16.. zero) */
    float d, dmin;
};

/* Sums of 4 products (vpdpbusd) of two vectors packed to int16 (|sum| <=
 * 4 * 63 * 128 < 32768 for 6-bit weights and 8-bit activations, so the
 * saturating pack is exact): 128-bit lane L holds a's int32 lanes 4L..4L+3,
 * then b's. One vpdpwssd with per-lane scales then replaces two
 * vpmaddubsw + vpdpwssd pairs. */
CL_K_TI __m512i cl_k5_pack_pair(__m512i qa, __m512i ya, __m512i qb, __m512i yb)
{
    const __m512i z = _mm512_setzero_si512();
    return _mm512_packs_epi32(_mm512_dpbusd_epi32(z, qa, ya), _mm512_dpbusd_epi32(z, qb, yb));
}

/* Q4_K/Q5_K: int16 lane i of the packed pair p comes from sub-block
 * 4p + (L >> 1) (positions 0..3 of 128-bit lane L = i / 8) or 4p + 2 + (L >> 1)
 * (positions 4..7): vector 2k holds sub-blocks 2k (lanes 0..7), 2k+1 (8..15). */
static const short cl_k5_k4_idx[2][32] = {
    {0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3},
    {4, 4, 4, 4, 6, 6, 6, 6, 4, 4, 4, 4, 6, 6, 6, 6, 5, 5, 5, 5, 7, 7, 7, 7, 5, 5, 5, 5, 7, 7, 7, 7},
};
CL_K_TI __m512i cl_k5_k4_sel(int p) { return _mm512_loadu_si512((const void *)cl_k5_k4_idx[p]); }

/* Q6_K: the same packing over 16-element groups: vector k holds groups
 * 4k..4k+3 (4 int32 lanes each), so lane i of pair p is group 8p + L or
 * 8p + 4 + L. */
static const short cl_k5_q6_idx[2][32] = {
    {0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5, 2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7},
    {8, 8, 8, 8, 12, 12, 12, 12, 9, 9, 9, 9, 13, 13, 13, 13, 10, 10, 10, 10, 14, 14, 14, 14, 11, 11, 11, 11, 15, 15, 15, 15},
};
CL_K_TI __m512i cl_k5_q6_sel(int p) { return _mm512_loadu_si512((const void *)cl_k5_q6_idx[p]); }

CL_K_TI void cl_k5_k4_scales(const uint8_t *scales, struct cl_k5_k4 *u)
{
    uint8_t sm[16];
    cl_k_scales_mins_k4(scales, sm);
    const __m128i v = _mm_loadu_si128((const __m128i *)sm);
    /* scales as int16 in lanes 0..7, laid out as cl_k5_pack_pair leaves the sums */
    const __m512i s16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(v));
    u->sc2[0] = _mm512_permutexvar_epi16(cl_k5_k4_sel(0), s16);
    u->sc2[1] = _mm512_permutexvar_epi16(cl_k5_k4_sel(1), s16);
    /* mins duplicated per pair of 16-element bsums */
    const __m128i mdup = _mm_unpackhi_epi8(v, v);
    u->m16 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_cvtepu8_epi16(mdup), 0);
}

CL_K_TI void cl_k5_unpack_q4_k(const struct cl_k_block_q4_k *x, struct cl_k5_k4 *u)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; k++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        u->q[k] = _mm512_and_si512(cl_k5_join(raw, _mm256_srli_epi16(raw, 4)), m4);
    }
    cl_k5_k4_scales(x->scales, u);
    u->d = cl_k5_h2f(&x->d);
    u->dmin = cl_k5_h2f(&x->dmin);
}

CL_K_TI void cl_k5_unpack_q5_k(const struct cl_k_block_q5_k *x, struct cl_k5_k4 *u)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), b0 = _mm512_set1_epi8(0x01);
    const __m256i hb = _mm256_loadu_si256((const __m256i *)x->qh);
    /* low half: bit 2k of qh, high half: bit 2k+1; shifted to bit 0, masked
     * (bits crossing into a neighbour byte are dropped), then to bit 4 */
    const __m512i h = cl_k5_join(hb, _mm256_srli_epi16(hb, 1));
    for (int k = 0; k < 4; k++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        const __m512i hk =
            _mm512_slli_epi16(_mm512_and_si512(_mm512_srl_epi16(h, _mm_cvtsi32_si128(2 * k)), b0), 4);
        u->q[k] = _mm512_or_si512(_mm512_and_si512(cl_k5_join(raw, _mm256_srli_epi16(raw, 4)), m4), hk);
    }
    cl_k5_k4_scales(x->scales, u);
    u->d = cl_k5_h2f(&x->d);
    u->dmin = cl_k5_h2f(&x->dmin);
}

/* One (row, column, super-block) step of Q4_K/Q5_K, the same in every tile:
 * (d * sum_s sc_s q.y - dmin * sum_s m_s bsum_s) * d_y added to the column's
 * accumulator. */
CL_K_TI __m512 cl_k5_k4_block(const struct cl_k5_k4 *u, const struct cl_k_block_q8_k *y, __m512 acc)
{
    __m512i isum = _mm512_setzero_si512();
    for (int p = 0; p < 2; p++) {
        const __m512i pk = cl_k5_pack_pair(u->q[2 * p], _mm512_loadu_si512((const void *)(y->qs + 128 * p)),
                                           u->q[2 * p + 1], _mm512_loadu_si512((const void *)(y->qs + 128 * p + 64)));
        isum = _mm512_dpwssd_epi32(isum, pk, u->sc2[p]);
    }
    /* mins: sum_s m_s * (bsums[2s] + bsums[2s+1]) in lanes 0..7 */
    const __m512i ms = _mm512_madd_epi16(_mm512_maskz_loadu_epi16(0xFFFF, y->bsums), u->m16);
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(u->d));
    t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_set1_ps(u->dmin), t);
    return _mm512_fmadd_ps(t, _mm512_set1_ps(y->d), acc);
}

/* Q6_K: 4 vectors of 64 values in 0..63 (elements 64k..64k+63) and their
 * int16 scales (4 groups of 16 per vector). */
struct cl_k5_q6 {
    __m512i q[4];
    __m512i sc2[2]; /* int16 scales matching cl_k5_pack_pair of vectors 2p, 2p+1 */
    __m512i nsc32; /* -32 * scale of group g at int16 lane g (lanes 16.. zero) */
    float d;
};

CL_K_TI void cl_k5_unpack_q6_k(const struct cl_k_block_q6_k *x, struct cl_k5_q6 *u)
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
        const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), h0);
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), h1);
        const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2);
        const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3);
        u->q[2 * h] = cl_k5_join(q0, q1);
        u->q[2 * h + 1] = cl_k5_join(q2, q3);
    }
    /* scale of 16-element group g, replicated over its 8 int16 products */
    const __m512i s16 =
        _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)), 0);
    u->sc2[0] = _mm512_permutexvar_epi16(cl_k5_q6_sel(0), s16);
    u->sc2[1] = _mm512_permutexvar_epi16(cl_k5_q6_sel(1), s16);
    u->nsc32 = _mm512_mullo_epi16(s16, _mm512_set1_epi16(-32));
    u->d = cl_k5_h2f(&x->d);
}

CL_K_TI __m512 cl_k5_q6_block(const struct cl_k5_q6 *u, const struct cl_k_block_q8_k *y, __m512 acc)
{
    /* values are q-32: start from -32 * sum_g sc_g * bsum_g */
    __m512i isum = _mm512_madd_epi16(_mm512_maskz_loadu_epi16(0xFFFF, y->bsums), u->nsc32);
    for (int p = 0; p < 2; p++) {
        const __m512i pk = cl_k5_pack_pair(u->q[2 * p], _mm512_loadu_si512((const void *)(y->qs + 128 * p)),
                                           u->q[2 * p + 1], _mm512_loadu_si512((const void *)(y->qs + 128 * p + 64)));
        isum = _mm512_dpwssd_epi32(isum, pk, u->sc2[p]);
    }
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(y->d)), _mm512_set1_ps(u->d), acc);
}

/* Columns a single-row K-quant tile runs against one unpacked row. */
#define CL_K5_KT 8

/* K-quant products. Every (row, column) pair runs the same block steps in the
 * same order whatever the tile, so a batch gives the single-row dot's bits:
 * - up to CL_K5_KT columns (decoding steps): each row is unpacked block by
 *   block into registers and runs all columns; the next row is prefetched;
 * - more (prompts): each pair of rows is unpacked once into an L1 buffer and
 *   runs every column, CL_K_TILE at a time, each activation block loaded once
 *   for both rows. */
#define CL_K5_KQ(NAME, BT, UT, UNPACK, BLOCK)                                                                          \
    CL_K_TI void cl_k5_tile_##NAME(const BT *x, const uint8_t *const *yc, const int M, size_t nb, float *res)       \
    {                                                                                                                  \
        __m512 acc[CL_K5_KT];                                                                                          \
        for (int j = 0; j < M; j++)                                                                                    \
            acc[j] = _mm512_setzero_ps();                                                                              \
        for (size_t b = 0; b < nb; b++) {                                                                              \
            UT u;                                                                                                      \
            for (size_t o = 0; o < sizeof(BT); o += 64)                                                                \
                _mm_prefetch((const char *)&x[b] + CL_K5_PF + o, _MM_HINT_T0);                                         \
            UNPACK(&x[b], &u);                                                                                         \
            _Pragma("GCC unroll 8") for (int j = 0; j < M; j++)                                                        \
                acc[j] = BLOCK(&u, (const struct cl_k_block_q8_k *)yc[j] + b, acc[j]);                                 \
        }                                                                                                              \
        for (int j = 0; j < M; j++)                                                                                    \
            res[j] = _mm512_reduce_add_ps(acc[j]);                                                                     \
    }                                                                                                                  \
    /* The tile with the column count known to the compiler (accumulators in   \
     * registers). */                                                           \
    CL_K_T static void cl_k5_row_##NAME(const BT *x, const uint8_t *const *yc, int M, size_t nb, float *res)        \
    {                                                                                                                  \
        switch (M) {                                                                                                   \
        case 1: cl_k5_tile_##NAME(x, yc, 1, nb, res); break;                                                           \
        case 2: cl_k5_tile_##NAME(x, yc, 2, nb, res); break;                                                           \
        case 3: cl_k5_tile_##NAME(x, yc, 3, nb, res); break;                                                           \
        case 4: cl_k5_tile_##NAME(x, yc, 4, nb, res); break;                                                           \
        case 5: cl_k5_tile_##NAME(x, yc, 5, nb, res); break;                                                           \
        case 6: cl_k5_tile_##NAME(x, yc, 6, nb, res); break;                                                           \
        case 7: cl_k5_tile_##NAME(x, yc, 7, nb, res); break;                                                           \
        default: cl_k5_tile_##NAME(x, yc, 8, nb, res); break;                                                          \
        }                                                                                                              \
    }                                                                                                                  \
    CL_K_T static float cl_k5_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        const uint8_t *yc[1] = {a};                                                                                    \
        float r;                                                                                                       \
        cl_k5_tile_##NAME(w, yc, 1, n / CL_K_QK_K, &r);                                                               \
        return r;                                                                                                      \
    }                                                                                                                  \
    CL_K_TI void cl_k5_tile2_##NAME(const UT *u0, const UT *u1, const uint8_t *const *yc, const int M, size_t nb,  \
                                    float *res0, float *res1)                                                      \
    {                                                                                                              \
        __m512 acc[CL_K_TILE], acc1[CL_K_TILE];                                                                    \
        for (int j = 0; j < M; j++)                                                                                \
            acc[j] = acc1[j] = _mm512_setzero_ps();                                                                \
        for (size_t b = 0; b < nb; b++) {                                                                          \
            _Pragma("GCC unroll 4") for (int j = 0; j < M; j++) {                                                  \
                const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)yc[j] + b;                      \
                acc[j] = BLOCK(&u0[b], y, acc[j]);                                                                 \
                acc1[j] = BLOCK(&u1[b], y, acc1[j]);                                                               \
            }                                                                                                      \
        }                                                                                                          \
        for (int j = 0; j < M; j++) {                                                                              \
            res0[j] = _mm512_reduce_add_ps(acc[j]);                                                                \
            res1[j] = _mm512_reduce_add_ps(acc1[j]);                                                               \
        }                                                                                                          \
    }                                                                                                              \
    CL_K_T static void cl_k5_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
                                       size_t nc, size_t n, float *out, size_t os)                                     \
    {                                                                                                                  \
        const size_t nb = n / CL_K_QK_K;                                                                               \
        size_t r = r0;                                                                                                 \
        if (nc > CL_K5_KT && nb <= CL_K5_KQ_MAXB) {                                                                    \
            UT u0[CL_K5_KQ_MAXB], u1[CL_K5_KQ_MAXB];                                                                   \
            for (; r + 2 <= r1; r += 2) {                                                                              \
                const BT *x0 = (const BT *)((const uint8_t *)w + r * ws);                                              \
                const BT *x1 = (const BT *)((const uint8_t *)w + (r + 1) * ws);                                        \
                for (size_t b = 0; b < nb; b++) {                                                                      \
                    UNPACK(&x0[b], &u0[b]);                                                                            \
                    UNPACK(&x1[b], &u1[b]);                                                                            \
                }                                                                                                      \
                /* the next pair comes from memory while this one runs */                                             \
                if (r + 4 <= r1)                                                                                       \
                    for (size_t o = 0; o < 2 * ws; o += 64)                                                            \
                        _mm_prefetch((const char *)w + (r + 2) * ws + o, _MM_HINT_T1);                                 \
                size_t c = 0;                                                                                          \
                for (; c + CL_K_TILE <= nc; c += CL_K_TILE) {                                                          \
                    const uint8_t *yc[CL_K_TILE];                                                                      \
                    float res0[CL_K_TILE], res1[CL_K_TILE];                                                            \
                    for (int j = 0; j < CL_K_TILE; j++)                                                                \
                        yc[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                             \
                    cl_k5_tile2_##NAME(u0, u1, yc, CL_K_TILE, nb, res0, res1);                                         \
                    for (int j = 0; j < CL_K_TILE; j++) {                                                              \
                        out[(c + (size_t)j) * os + r] = res0[j];                                                       \
                        out[(c + (size_t)j) * os + r + 1] = res1[j];                                                   \
                    }                                                                                                  \
                }                                                                                                      \
                for (; c < nc; c++) {                                                                                  \
                    const uint8_t *yc[1] = {(const uint8_t *)a + c * as};                                              \
                    cl_k5_tile2_##NAME(u0, u1, yc, 1, nb, &out[c * os + r], &out[c * os + r + 1]);                     \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (; r < r1; r++) {                                                                                          \
            const BT *x = (const BT *)((const uint8_t *)w + r * ws);                                                   \
            for (size_t c = 0; c < nc; c += CL_K5_KT) {                                                                \
                const size_t m = nc - c < CL_K5_KT ? nc - c : CL_K5_KT;                                                \
                const uint8_t *yc[CL_K5_KT];                                                                           \
                float res[CL_K5_KT];                                                                                   \
                for (size_t j = 0; j < m; j++)                                                                         \
                    yc[j] = (const uint8_t *)a + (c + j) * as;                                                         \
                cl_k5_row_##NAME(x, yc, (int)m, nb, res);                                                              \
                for (size_t j = 0; j < m; j++)                                                                         \
                    out[(c + j) * os + r] = res[j];                                                                    \
            }                                                                                                          \
        }                                                                                                              \
    }

/* Rows of up to this many super-blocks (16384 elements) are unpacked once per
 * pair of rows for all columns; longer rows use the single-row tiles. */
#define CL_K5_KQ_MAXB 64

CL_K5_KQ(q4_k, struct cl_k_block_q4_k, struct cl_k5_k4, cl_k5_unpack_q4_k, cl_k5_k4_block)
CL_K5_KQ(q5_k, struct cl_k_block_q5_k, struct cl_k5_k4, cl_k5_unpack_q5_k, cl_k5_k4_block)
CL_K5_KQ(q6_k, struct cl_k_block_q6_k, struct cl_k5_q6, cl_k5_unpack_q6_k, cl_k5_q6_block)

/* ---------------------------------------------------- 16 interleaved Q4_K rows (k_rows16.c) */

/* One super-block of 16 rows decoded for the column loop: each row's 8
 * sub-block scales (int32 lanes), its mins in int16 pairs (sub-blocks 2p and
 * 2p+1) for vpdpwssd against the activation's sub-block sums, d and dmin. */
struct cl_k5_r16k4 {
    __m512i sc[8];
    __m512i mp[4];
    __m512 d, dmin;
};

CL_K_TI void cl_k5_r16k4_scales(const uint8_t *g, struct cl_k5_r16k4 *u)
{
    const __m512i m4 = _mm512_set1_epi32(0xF), m3 = _mm512_set1_epi32(3);
    __m512i mn[8];
    u->d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    u->dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
    for (int j = 0; j < 8; j++) {
        const __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(g + 64 + 16 * j)));
        __m512i h = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(g + 192 + 16 * (j & 3))));
        if (j >= 4)
            h = _mm512_srli_epi32(h, 4);
        u->sc[j] = _mm512_or_si512(_mm512_and_si512(lo, m4), _mm512_slli_epi32(_mm512_and_si512(h, m3), 4));
        mn[j] = _mm512_or_si512(_mm512_srli_epi32(lo, 4),
                                _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 2), m3), 4));
    }
    for (int p = 0; p < 4; p++)
        u->mp[p] = _mm512_or_si512(mn[2 * p], _mm512_slli_epi32(mn[2 * p + 1], 16));
}

/* One group against M columns over kb super-blocks (the same steps per
 * column whatever M). */
CL_K_TI void cl_k5_r16k4_tile(const uint8_t *g, size_t gb, const uint8_t *const *ac, int M, size_t kb,
                              float *const *dst)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[CL_K5_R16_TILE];
    for (int j = 0; j < M; j++)
        acc[j] = _mm512_setzero_ps();
    for (size_t b = 0; b < kb; b++, g += gb) {
        cl_k5_r16_prefetch(g, gb);
        struct cl_k5_r16k4 u;
        cl_k5_r16k4_scales(g, &u);
        __m512i sumi[CL_K5_R16_TILE];
        for (int j = 0; j < M; j++)
            sumi[j] = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++)
            for (int h = 0; h < 2; h++) {
                __m512i W[8];
                for (int v = 0; v < 8; v++) {
                    const __m512i x = _mm512_loadu_si512((const void *)(g + 256 + 512 * k + 64 * v));
                    W[v] = _mm512_and_si512(h ? _mm512_srli_epi16(x, 4) : x, m4);
                }
                _Pragma("GCC unroll 8") for (int j = 0; j < M; j++) {
                    const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)ac[j] + b;
                    const __m512i is = cl_k5_r16_block(_mm512_setzero_si512(), W, (const uint8_t *)y->qs + 64 * k + 32 * h);
                    sumi[j] = _mm512_add_epi32(sumi[j], _mm512_mullo_epi32(is, u.sc[2 * k + h]));
                }
            }
        _Pragma("GCC unroll 8") for (int j = 0; j < M; j++) {
            const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)ac[j] + b;
            __m512i summ = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++) {
                const int b0 = y->bsums[4 * p] + y->bsums[4 * p + 1], b1 = y->bsums[4 * p + 2] + y->bsums[4 * p + 3];
                summ = _mm512_dpwssd_epi32(summ, u.mp[p],
                                           _mm512_set1_epi32((int)((uint32_t)(uint16_t)b0 | ((uint32_t)(uint16_t)b1 << 16))));
            }
            const __m512 t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), u.dmin, _mm512_mul_ps(_mm512_cvtepi32_ps(sumi[j]), u.d));
            acc[j] = _mm512_fmadd_ps(t, _mm512_set1_ps(y->d), acc[j]);
        }
    }
    for (int j = 0; j < M; j++)
        _mm512_storeu_ps(dst[j], acc[j]);
}

/* ---------------------------------------------------- 16 interleaved Q6_K rows (k_rows16.c) */

/* One group against M columns over kb super-blocks. Values are q - 32 with q
 * unsigned 6-bit: the integer sum is sum_s sc_s q.y_s - 32 sum_s sc_s bsum_s,
 * the second through vpdpwssd on the scale pairs as stored. */
CL_K_TI void cl_k5_r16q6_tile(const uint8_t *g, size_t gb, const uint8_t *const *ac, int M, size_t kb,
                              float *const *dst)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    __m512 acc[CL_K5_R16_TILE];
    for (int j = 0; j < M; j++)
        acc[j] = _mm512_setzero_ps();
    for (size_t b = 0; b < kb; b++, g += gb) {
        cl_k5_r16_prefetch(g, gb);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        __m512i sp[8];
        for (int p = 0; p < 8; p++)
            sp[p] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(g + 32 + 32 * p)));
        __m512i sumi[CL_K5_R16_TILE];
        for (int j = 0; j < M; j++)
            sumi[j] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++)
            for (int n = 0; n < 2; n++)
                for (int c = 0; c < 2; c++) {
                    const int p = 4 * h + 2 * n + c, base = 128 * h + 64 * n + 32 * c;
                    const __m512i sc0 = _mm512_srai_epi32(_mm512_slli_epi32(sp[p], 16), 16);
                    const __m512i sc1 = _mm512_srai_epi32(sp[p], 16);
                    __m512i W[8];
                    for (int v = 0; v < 8; v++) {
                        __m512i ql = _mm512_loadu_si512((const void *)(g + 288 + 512 * (2 * h + c) + 64 * v));
                        __m512i qh = _mm512_loadu_si512((const void *)(g + 2336 + 512 * h + 64 * v));
                        if (n)
                            ql = _mm512_srli_epi16(ql, 4);
                        /* bits 2c+4n..+1 of qh to bits 4..5 (bits shifted across bytes are masked off) */
                        const int sh = 2 * c + 4 * n;
                        qh = sh <= 4 ? _mm512_slli_epi16(qh, 4 - sh) : _mm512_srli_epi16(qh, sh - 4);
                        W[v] = _mm512_ternarylogic_epi32(_mm512_and_si512(ql, m4), qh, m30, 0xF8); /* a | (b & c) */
                    }
                    _Pragma("GCC unroll 8") for (int j = 0; j < M; j++) {
                        const uint8_t *aq = (const uint8_t *)((const struct cl_k_block_q8_k *)ac[j] + b)->qs + base;
                        /* elements 0..15 and 16..31: one scale each */
                        const __m512i s0 = cl_k5_r16_dp4(_mm512_setzero_si512(), W, aq);
                        const __m512i s1 = cl_k5_r16_dp4(_mm512_setzero_si512(), W + 4, aq + 16);
                        sumi[j] = _mm512_add_epi32(sumi[j], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0),
                                                                             _mm512_mullo_epi32(s1, sc1)));
                    }
                }
        _Pragma("GCC unroll 8") for (int j = 0; j < M; j++) {
            const struct cl_k_block_q8_k *y = (const struct cl_k_block_q8_k *)ac[j] + b;
            __m512i summ = _mm512_setzero_si512();
            for (int p = 0; p < 8; p++) {
                uint32_t bp;
                memcpy(&bp, &y->bsums[2 * p], 4); /* bsums 2p (low) and 2p+1 (high), as the scale pairs */
                summ = _mm512_dpwssd_epi32(summ, sp[p], _mm512_set1_epi32((int)bp));
            }
            const __m512i tot = _mm512_sub_epi32(sumi[j], _mm512_slli_epi32(summ, 5));
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(tot), d), _mm512_set1_ps(y->d), acc[j]);
        }
    }
    for (int j = 0; j < M; j++)
        _mm512_storeu_ps(dst[j], acc[j]);
}

/* Groups [g0, g1) against nc columns, CL_K5_R16_TILE, then 4, then 1 at a time. */
#define CL_K5_R16K_MM(NAME, BT, TILE)                                                                                  \
    CL_K_T static void cl_k5_mm16_##NAME(const void *w, size_t rb, size_t g0, size_t g1, const void *a, size_t as,     \
                                         size_t nc, size_t n, float *out, size_t os)                                   \
    {                                                                                                                  \
        const size_t kb = n / CL_K_QK_K, gb = 16 * sizeof(BT);                                                         \
        for (size_t gi = g0; gi < g1; gi++) {                                                                          \
            const uint8_t *g = (const uint8_t *)w + gi * 16 * rb;                                                      \
            const uint8_t *ac[CL_K5_R16_TILE];                                                                         \
            float *dst[CL_K5_R16_TILE];                                                                                \
            size_t c = 0;                                                                                              \
            for (; c + CL_K5_R16_TILE <= nc; c += CL_K5_R16_TILE) {                                                    \
                for (int j = 0; j < CL_K5_R16_TILE; j++) {                                                             \
                    ac[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                                 \
                    dst[j] = out + (c + (size_t)j) * os + (gi - g0) * 16;                                              \
                }                                                                                                      \
                TILE(g, gb, ac, CL_K5_R16_TILE, kb, dst);                                                              \
            }                                                                                                          \
            if (c + 4 <= nc) {                                                                                         \
                for (int j = 0; j < 4; j++) {                                                                          \
                    ac[j] = (const uint8_t *)a + (c + (size_t)j) * as;                                                 \
                    dst[j] = out + (c + (size_t)j) * os + (gi - g0) * 16;                                              \
                }                                                                                                      \
                TILE(g, gb, ac, 4, kb, dst);                                                                           \
                c += 4;                                                                                                \
            }                                                                                                          \
            for (; c < nc; c++) {                                                                                      \
                ac[0] = (const uint8_t *)a + c * as;                                                                   \
                dst[0] = out + c * os + (gi - g0) * 16;                                                                \
                TILE(g, gb, ac, 1, kb, dst);                                                                           \
            }                                                                                                          \
        }                                                                                                              \
    }

CL_K5_R16K_MM(q4_k, struct cl_k_block_q4_k, cl_k5_r16k4_tile)
CL_K5_R16K_MM(q6_k, struct cl_k_block_q6_k, cl_k5_r16q6_tile)

/* ---------------------------------------------------- F32 / F16 */

CL_K_TI __m512 cl_k5_ld_f32(const void *p, size_t i) { return _mm512_loadu_ps((const float *)p + i); }
CL_K_TI __m512 cl_k5_ld_f16(const void *p, size_t i)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
CL_K_TI __m512 cl_k5_ld_bf16(const void *p, size_t i)
{
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
CL_K_TI float cl_k5_s_f32(const void *p, size_t i) { return ((const float *)p)[i]; }
CL_K_TI float cl_k5_s_bf16(const void *p, size_t i) { return cl_k_bf16_to_fp32(((const uint16_t *)p)[i]); }
CL_K_TI float cl_k5_s_f16(const void *p, size_t i) { return _cvtsh_ss(((const uint16_t *)p)[i]); }

typedef __m512 (*cl_k5_ld_fn)(const void *p, size_t i);
typedef float (*cl_k5_s_fn)(const void *p, size_t i);

CL_K_TI void cl_k5_float_tile(const void *x, cl_k5_ld_fn ld, cl_k5_s_fn sc, size_t es, const void *const *yc, int M,
                              size_t n, float *res)
{
    __m512 acc0[CL_K_TILE], acc1[CL_K_TILE];
    for (int j = 0; j < M; j++)
        acc0[j] = acc1[j] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (size_t o = 0; o < 32 * es; o += 64)
            _mm_prefetch((const char *)x + i * es + CL_K5_PF + o, _MM_HINT_T0);
        const __m512 w0 = ld(x, i), w1 = ld(x, i + 16);
        for (int j = 0; j < M; j++) {
            acc0[j] = _mm512_fmadd_ps(w0, ld(yc[j], i), acc0[j]);
            acc1[j] = _mm512_fmadd_ps(w1, ld(yc[j], i + 16), acc1[j]);
        }
    }
    for (; i + 16 <= n; i += 16) {
        const __m512 w0 = ld(x, i);
        for (int j = 0; j < M; j++)
            acc0[j] = _mm512_fmadd_ps(w0, ld(yc[j], i), acc0[j]);
    }
    for (int j = 0; j < M; j++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0[j], acc1[j]));
        for (size_t k = i; k < n; k++)
            s += sc(x, k) * sc(yc[j], k);
        res[j] = s;
    }
}

#define CL_K5_FLOAT(NAME, ES)                                                                                            \
    CL_K_T static float cl_k5_dot_##NAME(const void *w, const void *a, size_t n)                                       \
    {                                                                                                                  \
        const void *yc[1] = {a};                                                                                       \
        float r;                                                                                                       \
        cl_k5_float_tile(w, cl_k5_ld_##NAME, cl_k5_s_##NAME, ES, yc, 1, n, &r);                                           \
        return r;                                                                                                      \
    }                                                                                                                  \
    CL_K_T static void cl_k5_mm_##NAME(const void *w, size_t ws, size_t r0, size_t r1, const void *a, size_t as,      \
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
                cl_k5_float_tile(x, cl_k5_ld_##NAME, cl_k5_s_##NAME, ES, yc, CL_K_TILE, n, res);                          \
                for (int j = 0; j < CL_K_TILE; j++)                                                                    \
                    out[(c + (size_t)j) * os + r] = res[j];                                                            \
            }                                                                                                          \
            for (; c < nc; c++) {                                                                                      \
                const void *yc[1] = {(const uint8_t *)a + c * as};                                                     \
                cl_k5_float_tile(x, cl_k5_ld_##NAME, cl_k5_s_##NAME, ES, yc, 1, n, &out[c * os + r]);                     \
            }                                                                                                          \
        }                                                                                                              \
    }

CL_K5_FLOAT(f32, 4)
CL_K5_FLOAT(f16, 2)
CL_K5_FLOAT(bf16, 2)

/* What AVX-512 with VNNI adds to the type table (k_type.c); without VNNI the
 * AVX-512 level keeps the AVX2 kernels. */
const struct cl_k_path cl_k_avx512_path = {
    .name = "avx512vnni",
    .level = CL_CPU_AVX512,
    .needs_vnni = true,
    .kern =
        {
            [CL_GGML_F32] = {.dot = cl_k5_dot_f32, .mm = cl_k5_mm_f32},
            [CL_GGML_F16] = {.dot = cl_k5_dot_f16, .mm = cl_k5_mm_f16},
            [CL_GGML_BF16] = {.dot = cl_k5_dot_bf16, .mm = cl_k5_mm_bf16},
            [CL_GGML_Q4_0] = {.dot = cl_k5_dot_q4_0, .mm = cl_k5_mm_q4_0, .mm16 = cl_k5_mm16_q4_0},
            [CL_GGML_Q5_0] = {.dot = cl_k5_dot_q5_0, .mm = cl_k5_mm_q5_0},
            [CL_GGML_Q8_0] = {.dot = cl_k5_dot_q8_0, .mm = cl_k5_mm_q8_0, .mm16 = cl_k5_mm16_q8_0},
            [CL_GGML_Q4_K] = {.dot = cl_k5_dot_q4_k, .mm = cl_k5_mm_q4_k, .mm16 = cl_k5_mm16_q4_k},
            [CL_GGML_Q5_K] = {.dot = cl_k5_dot_q5_k, .mm = cl_k5_mm_q5_k},
            [CL_GGML_Q6_K] = {.dot = cl_k5_dot_q6_k, .mm = cl_k5_mm_q6_k, .mm16 = cl_k5_mm16_q6_k},
        },
};
