/* Scalar reference dot products (the ground truth the SIMD paths are tested
 * against; listed in the type table, k_type.c) and the dot and matmul entry
 * points. Each block's
 * integer dot product is exact; blocks are combined in float as ggml does. */
#include <math.h>

#include "k_internal.h"

float cl_k_dot_q4_0(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_0 *x = w;
    const struct cl_k_block_q8_0 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        sum += (float)isum * (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d));
    }
    return sum;
}

float cl_k_dot_q4_1(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_1 *x = w;
    const struct cl_k_block_q8_1 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (x[i].qs[j] & 0xF) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        sum += (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d)) * (float)isum + cl_k_h2f(x[i].m) * cl_k_h2f(y[i].s);
    }
    return sum;
}

static inline uint32_t cl_k_ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

float cl_k_dot_q5_0(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q5_0 *x = w;
    const struct cl_k_block_q8_0 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const uint32_t qh = cl_k_ld32(x[i].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = (int)((x[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16;
            int q1 = (int)((x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
            isum += q0 * y[i].qs[j] + q1 * y[i].qs[j + 16];
        }
        sum += (float)isum * (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d));
    }
    return sum;
}

float cl_k_dot_q5_1(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q5_1 *x = w;
    const struct cl_k_block_q8_1 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const uint32_t qh = cl_k_ld32(x[i].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = (int)((x[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4));
            int q1 = (int)((x[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
            isum += q0 * y[i].qs[j] + q1 * y[i].qs[j + 16];
        }
        sum += (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d)) * (float)isum + cl_k_h2f(x[i].m) * cl_k_h2f(y[i].s);
    }
    return sum;
}

float cl_k_dot_q8_0(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q8_0 *x = w;
    const struct cl_k_block_q8_0 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        int isum = 0;
        for (int j = 0; j < CL_K_QK; j++)
            isum += x[i].qs[j] * y[i].qs[j];
        sum += (float)isum * (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d));
    }
    return sum;
}

/* Q4_K/Q5_K super-block: sum_j sc_j * dot_j scaled by d*dy, minus the mins
 * term dmin*dy * sum_j m_j * (bsum of the 32 activations of sub-block j). */
float cl_k_dot_q4_k(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_k *x = w;
    const struct cl_k_block_q8_k *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK_K; i++) {
        int isum = 0, msum = 0;
        const uint8_t *q = x[i].qs;
        const int8_t *p = y[i].qs;
        for (int j = 0; j < 8; j += 2, q += 32, p += 64) {
            uint8_t sc0, m0, sc1, m1;
            cl_k_scale_min_k4(j, x[i].scales, &sc0, &m0);
            cl_k_scale_min_k4(j + 1, x[i].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (q[l] & 0xF) * p[l];
                s1 += (q[l] >> 4) * p[l + 32];
            }
            isum += sc0 * s0 + sc1 * s1;
            msum += m0 * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]) + m1 * (y[i].bsums[2 * j + 2] + y[i].bsums[2 * j + 3]);
        }
        const float d = cl_k_h2f(x[i].d) * y[i].d;
        const float dmin = cl_k_h2f(x[i].dmin) * y[i].d;
        sum += d * (float)isum - dmin * (float)msum;
    }
    return sum;
}

float cl_k_dot_q5_k(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q5_k *x = w;
    const struct cl_k_block_q8_k *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK_K; i++) {
        int isum = 0, msum = 0;
        const uint8_t *q = x[i].qs, *qh = x[i].qh;
        const int8_t *p = y[i].qs;
        for (int j = 0; j < 8; j += 2, q += 32, p += 64) {
            uint8_t sc0, m0, sc1, m1;
            cl_k_scale_min_k4(j, x[i].scales, &sc0, &m0);
            cl_k_scale_min_k4(j + 1, x[i].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += ((q[l] & 0xF) | (((qh[l] >> j) & 1) << 4)) * p[l];
                s1 += ((q[l] >> 4) | (((qh[l] >> (j + 1)) & 1) << 4)) * p[l + 32];
            }
            isum += sc0 * s0 + sc1 * s1;
            msum += m0 * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]) + m1 * (y[i].bsums[2 * j + 2] + y[i].bsums[2 * j + 3]);
        }
        const float d = cl_k_h2f(x[i].d) * y[i].d;
        const float dmin = cl_k_h2f(x[i].dmin) * y[i].d;
        sum += d * (float)isum - dmin * (float)msum;
    }
    return sum;
}

float cl_k_dot_q6_k(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q6_k *x = w;
    const struct cl_k_block_q8_k *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK_K; i++) {
        int isum = 0;
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales, *p = y[i].qs;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, p += 128) {
            int s[8] = {0};
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                const int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                s[is] += q1 * p[l];
                s[is + 2] += q2 * p[l + 32];
                s[is + 4] += q3 * p[l + 64];
                s[is + 6] += q4 * p[l + 96];
            }
            for (int k = 0; k < 8; k++)
                isum += sc[k] * s[k];
        }
        sum += cl_k_h2f(x[i].d) * y[i].d * (float)isum;
    }
    return sum;
}

float cl_k_sdot_f32(const void *w, const void *a, size_t n)
{
    const float *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(x[i] * y[i]);
    return (float)sum;
}

float cl_k_sdot_f16(const void *w, const void *a, size_t n)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(cl_k_fp16_to_fp32(x[i]) * cl_k_fp16_to_fp32(y[i]));
    return (float)sum;
}

float cl_k_sdot_bf16(const void *w, const void *a, size_t n)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(cl_k_bf16_to_fp32(x[i]) * cl_k_bf16_to_fp32(y[i]));
    return (float)sum;
}

/* ------------------------------------------------------------ dot entry points */

float cl_k_vec_dot(uint32_t wtype, const void *w_row, const void *act_row, size_t n)
{
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(wtype);
    if (!ti || n == 0 || n % ti->block_elems || !w_row || !act_row)
        return NAN;
    const struct cl_k_kern *k = cl_k_kern_now(wtype);
    if (!k->dot)
        return NAN;
    return k->dot(w_row, act_row, n);
}

const char *cl_k_path_name(uint32_t wtype)
{
    const char *path = wtype < CL_GGML_TYPE_COUNT ? cl_k_kern_now(wtype)->dot_path : NULL;
    return path ? path : "none";
}

cl_err cl_k_matmul_rows(uint32_t wtype, const void *w, size_t w_row_stride, size_t r0, size_t r1, const void *acts,
                        size_t act_stride, size_t n_cols, size_t n, float *out, size_t out_stride)
{
    cl_err rc = cl_k_check(wtype, n);
    if (rc != CL_OK)
        return rc;
    if (!w || !acts || !out)
        return cl_err_fail(CL_E_INFER_K_ARG, "NULL %s", !w ? "weights" : !acts ? "activations" : "out");
    if (r0 > r1)
        return cl_err_fail(CL_E_INFER_K_ARG, "row range %zu > %zu", r0, r1);
    if (w_row_stride < cl_k_row_bytes(wtype, n))
        return cl_err_fail(CL_E_INFER_K_ARG, "weight row stride %zu", w_row_stride);
    if (n_cols > 1 && act_stride < cl_k_row_bytes(cl_k_vec_dot_type(wtype), n))
        return cl_err_fail(CL_E_INFER_K_ARG, "activation stride %zu", act_stride);
    if (n_cols > 1 && out_stride < r1)
        return cl_err_fail(CL_E_INFER_K_ARG, "out stride %zu < rows %zu", out_stride, r1);
    if (r0 == r1 || n_cols == 0)
        return CL_OK;
    const struct cl_k_kern *k = cl_k_kern_now(wtype);
    if (k->mm) {
        k->mm(w, w_row_stride, r0, r1, acts, act_stride, n_cols, n, out, out_stride);
        return CL_OK;
    }
    const char *wb = w;
    const char *ab = acts;
    for (size_t r = r0; r < r1; r++) {
        const void *row = wb + r * w_row_stride;
        for (size_t c = 0; c < n_cols; c++)
            out[c * out_stride + r] = k->dot(row, ab + c * act_stride, n);
    }
    return CL_OK;
}
