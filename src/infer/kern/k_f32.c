/* Float helpers for the forward pass. Reductions that ggml does in double
 * (softmax sum, rms_norm sum of squares) are done in double here too. */
#include <math.h>
#include <pthread.h>

#include "k_internal.h"

#define CL_K_GELU_A 0.044715f
#define CL_K_SQRT_2_OVER_PI 0.79788456080286535587989211986876f

float cl_k_dot_f32(const float *a, const float *b, size_t n)
{
    if (n == 0)
        return 0.0f;
    return cl_k_vec_dot(CL_GGML_F32, a, b, n);
}

/* Scalar float helpers; SIMD paths list theirs in struct cl_k_path. */
static void cl_k_axpy_f32_scalar(float *y, float a, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void cl_k_axpy_f16_scalar(float *y, float a, const uint16_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * cl_k_fp16_to_fp32(x[i]);
}

static void cl_k_scale_f32_scalar(float *y, float s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= s;
}

static void cl_k_add_f32_scalar(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cl_k_mul_f32_scalar(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= x[i];
}

const struct cl_k_vec_fns cl_k_vec_scalar = {
    .axpy_f32 = cl_k_axpy_f32_scalar,
    .axpy_f16 = cl_k_axpy_f16_scalar,
    .scale_f32 = cl_k_scale_f32_scalar,
    .add_f32 = cl_k_add_f32_scalar,
    .mul_f32 = cl_k_mul_f32_scalar,
};

void cl_k_axpy_f32(float *y, float a, const float *x, size_t n) { cl_k_vec_now()->axpy_f32(y, a, x, n); }
void cl_k_axpy_f16(float *y, float a, const uint16_t *x, size_t n) { cl_k_vec_now()->axpy_f16(y, a, x, n); }
void cl_k_scale_f32(float *y, float s, size_t n) { cl_k_vec_now()->scale_f32(y, s, n); }
void cl_k_add_f32(float *y, const float *x, size_t n) { cl_k_vec_now()->add_f32(y, x, n); }
void cl_k_mul_f32(float *y, const float *x, size_t n) { cl_k_vec_now()->mul_f32(y, x, n); }

float cl_k_softmax_f32(float *x, size_t n)
{
    if (n == 0)
        return -INFINITY;
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        float e = expf(x[i] - max);
        sum += (double)e;
        x[i] = e;
    }
    cl_k_scale_f32(x, (float)(1.0 / sum), n);
    return max;
}

void cl_k_rmsnorm_f32(float *y, const float *x, const float *w, size_t n, float eps)
{
    if (n == 0)
        return;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * scale;
    if (w)
        for (size_t i = 0; i < n; i++)
            y[i] *= w[i];
}

static inline float cl_k_gelu1(float x)
{
    return 0.5f * x * (1.0f + tanhf(CL_K_SQRT_2_OVER_PI * x * (1.0f + CL_K_GELU_A * x * x)));
}

static uint16_t cl_k_gelu_tab[1 << 16];
static pthread_once_t cl_k_gelu_once = PTHREAD_ONCE_INIT;

static void cl_k_gelu_init(void)
{
    for (uint32_t i = 0; i < (1u << 16); i++)
        cl_k_gelu_tab[i] = cl_k_fp32_to_fp16(cl_k_gelu1(cl_k_fp16_to_fp32((uint16_t)i)));
}

static inline float cl_k_gelu_ggml1(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    return cl_k_fp16_to_fp32(cl_k_gelu_tab[cl_k_fp32_to_fp16(x)]);
}

void cl_k_gelu_f32(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = cl_k_gelu1(x[i]);
}

void cl_k_gelu_ggml_f32(float *y, const float *x, size_t n)
{
    pthread_once(&cl_k_gelu_once, cl_k_gelu_init);
    for (size_t i = 0; i < n; i++)
        y[i] = cl_k_gelu_ggml1(x[i]);
}

void cl_k_silu_f32(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] / (1.0f + expf(-x[i]));
}

void cl_k_swiglu_f32(float *y, const float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void cl_k_geglu_ggml_f32(float *y, const float *g, const float *u, size_t n)
{
    pthread_once(&cl_k_gelu_once, cl_k_gelu_init);
    for (size_t i = 0; i < n; i++)
        y[i] = cl_k_gelu_ggml1(g[i]) * u[i];
}

void cl_k_geglu_f32(float *y, const float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = cl_k_gelu1(g[i]) * u[i];
}
