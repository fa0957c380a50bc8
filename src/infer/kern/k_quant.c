/* Reference quantizers (ggml's quantize_row_*_ref semantics, bit for bit),
 * activation quantizers (ggml's x86 CPU from_float) and dequantizers, each
 * taking n elements (a multiple of the block size) and listed in the type
 * table (k_type.c), which checks the arguments. The
 * operation order matters for bit-exactness; this file is built with
 * -ffp-contract=off so no multiply-add is fused. */
#include <float.h>
#include <math.h>

#include "k_internal.h"

#define CL_K_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CL_K_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CL_K_GROUP_MAX_EPS 1e-15f

/* Round half to even through the float mantissa, as ggml's nearest_int
 * (valid for |v| <= 2^22, which every caller guarantees). */
static inline int cl_k_nearest_int(float v)
{
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

/* Truncating float -> small int with the value clamped first, so that NaN or
 * huge inputs never reach an undefined conversion; identical to ggml's
 * (int8_t)v followed by MIN(hi, .) for the in-range values it produces. */
/* float -> int8 for values already rounded into [-127, 127]; NaN and
 * out-of-range (only from inf/NaN inputs) saturate instead of being UB. */
static inline int8_t cl_k_sat_i8(float r)
{
    if (!(r >= -127.0f))
        return r != r ? 0 : -127;
    if (r > 127.0f)
        return 127;
    return (int8_t)r;
}

static inline int cl_k_trunc_clamp(float v, int hi)
{
    if (!(v >= 0.0f))
        return 0;
    if (v >= (float)hi)
        return hi;
    return (int)v;
}

/* ------------------------------------------------------------ 32-blocks */

/* Nibbles (and 5th bits, when qh is not NULL) of a 4- or 5-bit 32-block:
 * q = clamp(trunc((x - min) * id + bias), 0, nmax). For the _0 types min is
 * 0, and x - 0 is x exactly. */
static inline void cl_k_pack_q45(const float *x, float min, float id, float bias, int nmax, uint8_t *qs, uint8_t *qh)
{
    uint32_t h = 0;
    for (int j = 0; j < CL_K_QK / 2; j++) {
        int a = cl_k_trunc_clamp((x[j] - min) * id + bias, nmax);
        int b = cl_k_trunc_clamp((x[j + 16] - min) * id + bias, nmax);
        qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
        h |= (uint32_t)((a >> 4) & 1) << j;
        h |= (uint32_t)((b >> 4) & 1) << (j + 16);
    }
    if (qh)
        for (int k = 0; k < 4; k++)
            qh[k] = (uint8_t)(h >> (8 * k));
}

/* One Q4_0 (half 8) or Q5_0 (half 16) block: d = (value of largest
 * magnitude, first on ties) / -half, q = x/d + half rounded. Returns d. */
static inline float cl_k_ref_q45_0(const float *x, int half, uint8_t *qs, uint8_t *qh)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < CL_K_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / (float)-half;
    const float id = d ? 1.0f / d : 0.0f;
    cl_k_pack_q45(x, 0.0f, id, (float)half + 0.5f, 2 * half - 1, qs, qh);
    return d;
}

/* One Q4_1 (nmax 15) or Q5_1 (nmax 31) block: m = min, d = (max - min) /
 * nmax. Returns d; *m_out gets m. */
static inline float cl_k_ref_q45_1(const float *x, int nmax, float *m_out, uint8_t *qs, uint8_t *qh)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < CL_K_QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / (float)nmax;
    const float id = d ? 1.0f / d : 0.0f;
    cl_k_pack_q45(x, min, id, 0.5f, nmax, qs, qh);
    *m_out = min;
    return d;
}

void cl_k_q4_0_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q4_0 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        y[i].d = cl_k_fp32_to_fp16(cl_k_ref_q45_0(x, 8, y[i].qs, NULL));
}

void cl_k_q5_0_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q5_0 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        y[i].d = cl_k_fp32_to_fp16(cl_k_ref_q45_0(x, 16, y[i].qs, y[i].qh));
}

void cl_k_q4_1_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q4_1 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK) {
        float m;
        y[i].d = cl_k_fp32_to_fp16(cl_k_ref_q45_1(x, 15, &m, y[i].qs, NULL));
        y[i].m = cl_k_fp32_to_fp16(m);
    }
}

void cl_k_q5_1_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q5_1 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK) {
        float m;
        y[i].d = cl_k_fp32_to_fp16(cl_k_ref_q45_1(x, 31, &m, y[i].qs, y[i].qh));
        y[i].m = cl_k_fp32_to_fp16(m);
    }
}

/* Scale of a Q8_0/Q8_1 block, d = amax/127; *id is 1/d for the reference
 * quantizer and 127/amax for ggml's x86 from_float, which differ in the last
 * bit. */
static inline float cl_k_q8_scale(const float *x, bool x86, float *id)
{
    float amax = 0.0f;
    for (int j = 0; j < CL_K_QK; j++)
        amax = CL_K_MAX(amax, fabsf(x[j]));
    const float d = amax / 127.f;
    if (x86)
        *id = amax != 0.0f ? 127.f / amax : 0.0f;
    else
        *id = d ? 1.0f / d : 0.0f;
    return d;
}

/* The int8s of a Q8_0/Q8_1 block, rounded half away from zero (reference)
 * or half to even (x86 from_float); returns their sum. */
static inline int cl_k_q8_fill(const float *x, float id, bool x86, int8_t *qs)
{
    int sum = 0;
    for (int j = 0; j < CL_K_QK; j++) {
        qs[j] = cl_k_sat_i8(x86 ? nearbyintf(x[j] * id) : roundf(x[j] * id));
        sum += qs[j];
    }
    return sum;
}

static inline void cl_k_q8_0_block(const float *x, bool x86, struct cl_k_block_q8_0 *y)
{
    float id;
    const float d = cl_k_q8_scale(x, x86, &id);
    y->d = cl_k_fp32_to_fp16(d);
    (void)cl_k_q8_fill(x, id, x86, y->qs);
}

static inline void cl_k_q8_1_block(const float *x, bool x86, struct cl_k_block_q8_1 *y)
{
    float id;
    const float d = cl_k_q8_scale(x, x86, &id);
    y->d = cl_k_fp32_to_fp16(d);
    y->s = cl_k_fp32_to_fp16(d * (float)cl_k_q8_fill(x, id, x86, y->qs));
}

void cl_k_q8_0_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_0 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        cl_k_q8_0_block(x, false, &y[i]);
}

void cl_k_q8_1_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_1 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        cl_k_q8_1_block(x, false, &y[i]);
}

/* ggml x86 quantize_row_q8_0/q8_1: multiplier 127/amax, round half even. */
void cl_k_act_q8_0_scalar(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_0 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        cl_k_q8_0_block(x, true, &y[i]);
}

void cl_k_act_q8_1_scalar(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_1 *y = dst;
    for (size_t i = 0; i < n / CL_K_QK; i++, x += CL_K_QK)
        cl_k_q8_1_block(x, true, &y[i]);
}

/* ------------------------------------------------------------ K-quants */

void cl_k_act_q8_k_scalar(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q8_k *y = dst;
    for (size_t i = 0; i < n / CL_K_QK_K; i++, x += CL_K_QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < CL_K_QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < CL_K_QK_K; j++)
            y[i].qs[j] = (int8_t)CL_K_MIN(127, cl_k_nearest_int(iscale * x[j]));
        for (int j = 0; j < CL_K_QK_K / 16; j++) {
            int sum = 0;
            for (int k = 0; k < 16; k++)
                sum += y[i].qs[16 * j + k];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* Weighted least-squares fit of scale and (non-positive) min for 4/5-bit
 * sub-blocks: ggml's make_qkx2_quants. */
static float cl_k_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, uint8_t *Laux,
                       float rmin, float rdelta, int nstep)
{
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = cl_k_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)CL_K_MAX(0, CL_K_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = cl_k_nearest_int(iscale * (x[i] - min));
            l = CL_K_MAX(0, CL_K_MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Scales/mins of 8 sub-blocks to 6 bits each, then requantize every element
 * against the rounded scales (shared by Q4_K and Q5_K). */
static void cl_k_pack_scales_k4(const float *scales, const float *mins, uint8_t *out, uint16_t *d_out,
                                uint16_t *dmin_out)
{
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        /* ggml stores nearest_int into a uint8_t before MIN(63, .) */
        uint8_t ls = (uint8_t)cl_k_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)cl_k_nearest_int(inv_min * mins[j]);
        ls = CL_K_MIN(63, ls);
        lm = CL_K_MIN(63, lm);
        if (j < 4) {
            out[j] = ls;
            out[j + 4] = lm;
        } else {
            out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = cl_k_fp32_to_fp16(max_scale / 63.f);
    *dmin_out = cl_k_fp32_to_fp16(max_min / 63.f);
}

static void cl_k_requant_k4(const float *x, const uint8_t *scales, uint16_t d16, uint16_t dmin16, int nmax, uint8_t *L)
{
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        cl_k_scale_min_k4(j, scales, &sc, &m);
        const float d = cl_k_fp16_to_fp32(d16) * sc;
        if (!d)
            continue;
        const float dm = cl_k_fp16_to_fp32(dmin16) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = cl_k_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)CL_K_MAX(0, CL_K_MIN(nmax, l));
        }
    }
}

static void cl_k_fit_k4(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L, float *scales,
                        float *mins)
{
    float weights[32];
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = cl_k_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep);
    }
}

void cl_k_q4_k_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q4_k *y = dst;
    const size_t nb = n / CL_K_QK_K;
    uint8_t L[CL_K_QK_K];
    float scales[8], mins[8];
    for (size_t i = 0; i < nb; i++, x += CL_K_QK_K) {
        memset(y[i].scales, 0, sizeof(y[i].scales));
        cl_k_fit_k4(x, 15, -1.f, 0.1f, 20, L, scales, mins);
        uint16_t d16, dmin16;
        cl_k_pack_scales_k4(scales, mins, y[i].scales, &d16, &dmin16);
        y[i].d = d16;
        y[i].dmin = dmin16;
        cl_k_requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 15, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < CL_K_QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void cl_k_q5_k_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q5_k *y = dst;
    const size_t nb = n / CL_K_QK_K;
    uint8_t L[CL_K_QK_K];
    float scales[8], mins[8];
    for (size_t i = 0; i < nb; i++, x += CL_K_QK_K) {
        memset(y[i].scales, 0, sizeof(y[i].scales));
        cl_k_fit_k4(x, 31, -0.5f, 0.1f, 15, L, scales, mins);
        uint16_t d16, dmin16;
        cl_k_pack_scales_k4(scales, mins, y[i].scales, &d16, &dmin16);
        y[i].d = d16;
        y[i].dmin = dmin16;
        cl_k_requant_k4(x, y[i].scales, y[i].d, y[i].dmin, 31, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, CL_K_QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < CL_K_QK_K; k += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* ggml's make_qx_quants with rmse_type 1 (weights x^2), no imatrix. */
static float cl_k_qx(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < CL_K_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = cl_k_nearest_int(iscale * x[i]);
        l = CL_K_MAX(-nmax, CL_K_MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = cl_k_nearest_int(iscale * x[i]);
            l = CL_K_MAX(-nmax, CL_K_MIN(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = cl_k_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + CL_K_MAX(-nmax, CL_K_MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

void cl_k_q6_k_ref(const float *x, void *dst, size_t n)
{
    struct cl_k_block_q6_k *y = dst;
    const size_t nb = n / CL_K_QK_K;
    int8_t L[CL_K_QK_K];
    float scales[CL_K_QK_K / 16];
    for (size_t i = 0; i < nb; i++, x += CL_K_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < CL_K_QK_K / 16; ib++) {
            const float scale = cl_k_qx(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < CL_K_GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = cl_k_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < CL_K_QK_K / 16; ib++)
            y[i].scales[ib] = (int8_t)CL_K_MIN(127, cl_k_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < CL_K_QK_K / 16; j++) {
            float d = cl_k_fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (!d)
                continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = cl_k_nearest_int(x[16 * j + ii] / d);
                l = CL_K_MAX(-32, CL_K_MIN(31, l));
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < CL_K_QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* ------------------------------------------------------------ dequantize */

/* One 4- or 5-bit 32-block: (q - off) * d, then + m for the _1 types (not
 * + 0 for the _0 ones, which would turn -0 into +0). */
static inline void cl_k_deq_q45(const uint8_t *qs, uint32_t qh, int off, float d, bool has_min, float m, float *y)
{
    for (int j = 0; j < 16; j++) {
        const int a = cl_k_q45_lo(qs, qh, j) - off, b = cl_k_q45_hi(qs, qh, j) - off;
        y[j] = has_min ? a * d + m : a * d;
        y[j + 16] = has_min ? b * d + m : b * d;
    }
}

void cl_k_deq_q4_0(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q4_0 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q45(x[i].qs, 0, 8, cl_k_fp16_to_fp32(x[i].d), false, 0.0f, y);
}

void cl_k_deq_q5_0(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q5_0 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q45(x[i].qs, cl_k_qh32(x[i].qh), 16, cl_k_fp16_to_fp32(x[i].d), false, 0.0f, y);
}

void cl_k_deq_q4_1(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q4_1 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q45(x[i].qs, 0, 0, cl_k_fp16_to_fp32(x[i].d), true, cl_k_fp16_to_fp32(x[i].m), y);
}

void cl_k_deq_q5_1(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q5_1 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q45(x[i].qs, cl_k_qh32(x[i].qh), 0, cl_k_fp16_to_fp32(x[i].d), true, cl_k_fp16_to_fp32(x[i].m), y);
}

/* len int8 values times d (Q8_0, Q8_1, Q8_K). */
static inline void cl_k_deq_q8(const int8_t *qs, float d, size_t len, float *y)
{
    for (size_t j = 0; j < len; j++)
        y[j] = qs[j] * d;
}

void cl_k_deq_q8_0(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q8_0 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q8(x[i].qs, cl_k_fp16_to_fp32(x[i].d), CL_K_QK, y);
}

void cl_k_deq_q8_1(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q8_1 *x = src;
    for (size_t i = 0; i < n / CL_K_QK; i++, y += CL_K_QK)
        cl_k_deq_q8(x[i].qs, cl_k_fp16_to_fp32(x[i].d), CL_K_QK, y);
}

void cl_k_deq_q8_k(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q8_k *x = src;
    for (size_t i = 0; i < n / CL_K_QK_K; i++, y += CL_K_QK_K)
        cl_k_deq_q8(x[i].qs, x[i].d, CL_K_QK_K, y);
}

/* One Q4_K/Q5_K super-block (qh NULL for Q4_K): d*sc*q - dmin*m. */
static inline void cl_k_deq_k45(const uint8_t *scales, const uint8_t *q, const uint8_t *qh, uint16_t d16,
                                uint16_t dmin16, float *y)
{
    const float d = cl_k_fp16_to_fp32(d16), min = cl_k_fp16_to_fp32(dmin16);
    for (int j = 0; j < 8; j += 2, q += 32) {
        uint8_t sc, m;
        cl_k_scale_min_k4(j, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        cl_k_scale_min_k4(j + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * cl_k_k45_q(q, qh, j, l) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * cl_k_k45_q(q, qh, j + 1, l) - m2;
    }
}

void cl_k_deq_q4_k(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q4_k *x = src;
    for (size_t i = 0; i < n / CL_K_QK_K; i++, y += CL_K_QK_K)
        cl_k_deq_k45(x[i].scales, x[i].qs, NULL, x[i].d, x[i].dmin, y);
}

void cl_k_deq_q5_k(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q5_k *x = src;
    for (size_t i = 0; i < n / CL_K_QK_K; i++, y += CL_K_QK_K)
        cl_k_deq_k45(x[i].scales, x[i].qs, x[i].qh, x[i].d, x[i].dmin, y);
}

void cl_k_deq_q6_k(const void *src, float *y, size_t n)
{
    const struct cl_k_block_q6_k *x = src;
    for (size_t i = 0; i < n / CL_K_QK_K; i++) {
        const float d = cl_k_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int q[4];
                cl_k_q6_k_quad(ql, qh, l, q);
                for (int k = 0; k < 4; k++)
                    y[l + 32 * k] = d * sc[l / 16 + 2 * k] * q[k];
            }
        }
    }
}
