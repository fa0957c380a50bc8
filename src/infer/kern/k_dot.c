/* Scalar reference dot products (the ground truth the SIMD paths are tested
 * against; listed in the type table, k_type.c) and the dot and matmul entry
 * points. Each block's integer dot product is exact; blocks are combined in
 * float as ggml does. */
#include <math.h>

#include "k_internal.h"

/* Integer dot of a 4- or 5-bit 32-block (values minus off) with 32 int8s. */
static inline int cl_k_isum_q45(const uint8_t *qs, uint32_t qh, int off, const int8_t *y)
{
    int isum = 0;
    for (int j = 0; j < 16; j++)
        isum += (cl_k_q45_lo(qs, qh, j) - off) * y[j] + (cl_k_q45_hi(qs, qh, j) - off) * y[j + 16];
    return isum;
}

float cl_k_dot_q4_0(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_0 *x = w;
    const struct cl_k_block_q8_0 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const int isum = cl_k_isum_q45(x[i].qs, 0, 8, y[i].qs);
        sum += (float)isum * (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d));
    }
    return sum;
}

float cl_k_dot_q5_0(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q5_0 *x = w;
    const struct cl_k_block_q8_0 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const int isum = cl_k_isum_q45(x[i].qs, cl_k_qh32(x[i].qh), 16, y[i].qs);
        sum += (float)isum * (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d));
    }
    return sum;
}

/* Q4_1/Q5_1 blocks add their min times the activations' sum (Q8_1's s). */
float cl_k_dot_q4_1(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_1 *x = w;
    const struct cl_k_block_q8_1 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const int isum = cl_k_isum_q45(x[i].qs, 0, 0, y[i].qs);
        sum += (cl_k_h2f(x[i].d) * cl_k_h2f(y[i].d)) * (float)isum + cl_k_h2f(x[i].m) * cl_k_h2f(y[i].s);
    }
    return sum;
}

float cl_k_dot_q5_1(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q5_1 *x = w;
    const struct cl_k_block_q8_1 *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK; i++) {
        const int isum = cl_k_isum_q45(x[i].qs, cl_k_qh32(x[i].qh), 0, y[i].qs);
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

/* Integer sums of a Q4_K/Q5_K super-block (qh NULL for Q4_K) against Q8_K:
 * *isum = sum_j sc_j * dot_j, *msum = sum_j m_j * (bsum of the 32
 * activations of sub-block j). The block is d*dy*isum - dmin*dy*msum. */
__attribute__((always_inline)) static inline void cl_k_isum_k45(const uint8_t *scales, const uint8_t *q, const uint8_t *qh,
                                 const struct cl_k_block_q8_k *y, int *isum_out, int *msum_out)
{
    int isum = 0, msum = 0;
    const int8_t *p = y->qs;
    for (int j = 0; j < 8; j += 2, q += 32, p += 64) {
        uint8_t sc0, m0, sc1, m1;
        cl_k_scale_min_k4(j, scales, &sc0, &m0);
        cl_k_scale_min_k4(j + 1, scales, &sc1, &m1);
        int s0 = 0, s1 = 0;
        for (int l = 0; l < 32; l++) {
            s0 += cl_k_k45_q(q, qh, j, l) * p[l];
            s1 += cl_k_k45_q(q, qh, j + 1, l) * p[l + 32];
        }
        isum += sc0 * s0 + sc1 * s1;
        msum += m0 * (y->bsums[2 * j] + y->bsums[2 * j + 1]) + m1 * (y->bsums[2 * j + 2] + y->bsums[2 * j + 3]);
    }
    *isum_out = isum;
    *msum_out = msum;
}

float cl_k_dot_q4_k(const void *w, const void *a, size_t n)
{
    const struct cl_k_block_q4_k *x = w;
    const struct cl_k_block_q8_k *y = a;
    float sum = 0;
    for (size_t i = 0; i < n / CL_K_QK_K; i++) {
        int isum, msum;
        cl_k_isum_k45(x[i].scales, x[i].qs, NULL, &y[i], &isum, &msum);
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
        int isum, msum;
        cl_k_isum_k45(x[i].scales, x[i].qs, x[i].qh, &y[i], &isum, &msum);
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
                int q[4];
                cl_k_q6_k_quad(ql, qh, l, q);
                for (int k = 0; k < 4; k++)
                    s[l / 16 + 2 * k] += q[k] * p[l + 32 * k];
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
