/* Scalar reference dot products (the ground truth the SIMD paths are tested
 * against), run-time dispatch, and the matmul entry point. Each block's
 * integer dot product is exact; blocks are combined in float as ggml does. */
#include <math.h>
#include <pthread.h>

#include "k_internal.h"

static float cl_k_dot_q4_0(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q4_1(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q5_0(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q5_1(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q8_0(const void *w, const void *a, size_t n)
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
static float cl_k_dot_q4_k(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q5_k(const void *w, const void *a, size_t n)
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

static float cl_k_dot_q6_k(const void *w, const void *a, size_t n)
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

static float cl_k_sdot_f32(const void *w, const void *a, size_t n)
{
    const float *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(x[i] * y[i]);
    return (float)sum;
}

static float cl_k_sdot_f16(const void *w, const void *a, size_t n)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(cl_k_fp16_to_fp32(x[i]) * cl_k_fp16_to_fp32(y[i]));
    return (float)sum;
}

static float cl_k_sdot_bf16(const void *w, const void *a, size_t n)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(cl_k_bf16_to_fp32(x[i]) * cl_k_bf16_to_fp32(y[i]));
    return (float)sum;
}

bool cl_k_scalar_impl(uint32_t wtype, struct cl_k_impl *impl)
{
    cl_k_dot_fn f = NULL;
    switch (wtype) {
    case CL_GGML_F32: f = cl_k_sdot_f32; break;
    case CL_GGML_F16: f = cl_k_sdot_f16; break;
    case CL_GGML_BF16: f = cl_k_sdot_bf16; break;
    case CL_GGML_Q4_0: f = cl_k_dot_q4_0; break;
    case CL_GGML_Q4_1: f = cl_k_dot_q4_1; break;
    case CL_GGML_Q5_0: f = cl_k_dot_q5_0; break;
    case CL_GGML_Q5_1: f = cl_k_dot_q5_1; break;
    case CL_GGML_Q8_0: f = cl_k_dot_q8_0; break;
    case CL_GGML_Q4_K: f = cl_k_dot_q4_k; break;
    case CL_GGML_Q5_K: f = cl_k_dot_q5_k; break;
    case CL_GGML_Q6_K: f = cl_k_dot_q6_k; break;
    default: return false;
    }
    impl->dot = f;
    impl->mm = NULL;
    impl->name = "scalar";
    return true;
}

/* ------------------------------------------------------------ dispatch */

static void cl_k_select_slow(uint32_t wtype, enum cl_cpu_level lvl, bool vnni, struct cl_k_impl *impl)
{
    if (lvl >= CL_CPU_AVX512 && cl_k_avx512_impl(wtype, vnni, impl))
        return;
    if (lvl >= CL_CPU_AVX2 && cl_k_avx2_impl(wtype, impl))
        return;
    if (!cl_k_scalar_impl(wtype, impl))
        memset(impl, 0, sizeof(*impl));
}

/* Kernel table per CPU level, built once; the level itself is read on every
 * call because tests and CLOISTER_CPU may cap it. */
static struct cl_k_impl cl_k_tab[CL_CPU_COUNT][CL_GGML_TYPE_COUNT];
static pthread_once_t cl_k_tab_once = PTHREAD_ONCE_INIT;

static void cl_k_tab_init(void)
{
    /* the VNNI flag is fixed by the hardware; only the level is capped */
    bool vnni = false;
    __builtin_cpu_init();
    vnni = __builtin_cpu_supports("avx512vnni");
    for (int l = CL_CPU_SCALAR; l < CL_CPU_COUNT; l++)
        for (uint32_t t = 0; t < CL_GGML_TYPE_COUNT; t++)
            cl_k_select_slow(t, (enum cl_cpu_level)l, vnni, &cl_k_tab[l][t]);
}

static inline void cl_k_select(uint32_t wtype, struct cl_k_impl *impl)
{
    pthread_once(&cl_k_tab_once, cl_k_tab_init);
    enum cl_cpu_level lvl = cl_cpu_level();
    if (wtype >= CL_GGML_TYPE_COUNT || lvl <= CL_CPU_NONE || lvl >= CL_CPU_COUNT) {
        memset(impl, 0, sizeof(*impl));
        return;
    }
    *impl = cl_k_tab[lvl][wtype];
}

bool cl_k_weight_type_ok(uint32_t type)
{
    struct cl_k_impl impl;
    return cl_k_scalar_impl(type, &impl);
}

uint32_t cl_k_vec_dot_type(uint32_t wtype)
{
    switch (wtype) {
    case CL_GGML_F32: return CL_GGML_F32;
    case CL_GGML_F16: return CL_GGML_F16;
    case CL_GGML_BF16: return CL_GGML_BF16;
    case CL_GGML_Q4_0:
    case CL_GGML_Q5_0:
    case CL_GGML_Q8_0: return CL_GGML_Q8_0;
    case CL_GGML_Q4_1:
    case CL_GGML_Q5_1: return CL_GGML_Q8_1;
    case CL_GGML_Q4_K:
    case CL_GGML_Q5_K:
    case CL_GGML_Q6_K: return CL_GGML_Q8_K;
    default: return CL_GGML_TYPE_COUNT;
    }
}

size_t cl_k_row_bytes(uint32_t type, size_t n)
{
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(type);
    if (!ti || n % ti->block_elems)
        return 0;
    size_t nb = n / ti->block_elems;
    if (nb > SIZE_MAX / ti->block_bytes)
        return 0;
    return nb * ti->block_bytes;
}

cl_err cl_k_check(uint32_t type, size_t n)
{
    if (!cl_k_weight_type_ok(type))
        return cl_err_fail(CL_E_INFER_K_TYPE, "weight type id %u", (unsigned)type);
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(type);
    if (n == 0 || n % ti->block_elems || cl_k_row_bytes(type, n) == 0)
        return cl_err_fail(CL_E_INFER_K_LENGTH, "n %zu for %s (block %u)", n, ti->name, (unsigned)ti->block_elems);
    return CL_OK;
}

float cl_k_vec_dot(uint32_t wtype, const void *w_row, const void *act_row, size_t n)
{
    const struct cl_ggml_type_info *ti = cl_ggml_type_info(wtype);
    if (!ti || n == 0 || n % ti->block_elems || !w_row || !act_row)
        return NAN;
    struct cl_k_impl impl;
    cl_k_select(wtype, &impl);
    if (!impl.dot)
        return NAN;
    return impl.dot(w_row, act_row, n);
}

const char *cl_k_path_name(uint32_t wtype)
{
    struct cl_k_impl impl;
    cl_k_select(wtype, &impl);
    return impl.name ? impl.name : "none";
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
    struct cl_k_impl impl;
    cl_k_select(wtype, &impl);
    if (impl.mm) {
        impl.mm(w, w_row_stride, r0, r1, acts, act_stride, n_cols, n, out, out_stride);
        return CL_OK;
    }
    const char *wb = w;
    const char *ab = acts;
    for (size_t r = r0; r < r1; r++) {
        const void *row = wb + r * w_row_stride;
        for (size_t c = 0; c < n_cols; c++)
            out[c * out_stride + r] = impl.dot(row, ab + c * act_stride, n);
    }
    return CL_OK;
}
