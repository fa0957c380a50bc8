/* Matrix products over the thread pool, and RoPE. Activations are converted
 * once per product to the weight's dot-product type (Q8_0 for Q4_0/Q8_0, as
 * ggml does), then the threads split the weight rows. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/infer/kernels.h"
#include "model_internal.h"

/* Rows per thread chunk stay a multiple of this so kernels can tile rows. */
#define CL_MODEL_ROW_ALIGN 16

cl_err cl_model_act_size(const struct cl_model_w *w, uint32_t n_tok, size_t *out)
{
    uint32_t vt = cl_k_vec_dot_type(w->type);
    size_t rb = cl_k_row_bytes(vt, w->ne0);
    if (vt == CL_GGML_TYPE_COUNT || rb == 0)
        return cl_err_fail(CL_E_INFER_MODEL_TYPE, "no activation type for weight type %u width %u", w->type, w->ne0);
    if (vt == CL_GGML_F32) {
        *out = 0; /* used directly */
        return CL_OK;
    }
    return cl_size_mul(rb, n_tok, out);
}

#define CL_MODEL_MM_MAX 4

struct cl_model_mm_job {
    const struct cl_model_w *w[CL_MODEL_MM_MAX];
    float *y[CL_MODEL_MM_MAX];
    size_t ldy[CL_MODEL_MM_MAX];
    size_t n_w;
    const void *acts;
    size_t act_stride;
    uint32_t n_tok;
    atomic_int rc;
    /* activations quantized by the threads themselves first (act_type != F32) */
    uint32_t act_type;
    const float *x;
    size_t ldx;
    uint8_t *act_out;
    atomic_uint arrived;
};

static void cl_model_mm_worker(void *arg, unsigned ith, unsigned nth)
{
    struct cl_model_mm_job *j = arg;
    if (j->act_out) { /* each thread its share of the rows, then all wait for all */
        size_t lo, hi;
        cl_pool_split(j->n_tok, 1, ith, nth, &lo, &hi);
        for (size_t t = lo; t < hi; t++) {
            cl_err rc = cl_k_act_quantize(j->act_type, j->x + t * j->ldx, j->act_out + t * j->act_stride,
                                          j->w[0]->ne0);
            if (rc != CL_OK)
                atomic_store(&j->rc, rc);
        }
        cl_pool_arrive_wait(&j->arrived, nth);
        if (atomic_load(&j->rc) != CL_OK)
            return;
    }
    for (size_t i = 0; i < j->n_w; i++) {
        const struct cl_model_w *w = j->w[i];
        size_t lo, hi;
        cl_pool_split(w->ne1, CL_MODEL_ROW_ALIGN, ith, nth, &lo, &hi);
        if (lo >= hi)
            continue;
        cl_err rc = w->rows16 ? cl_k_rows16_matmul(w->type, w->data, w->ne1, lo, hi, j->acts, j->act_stride, j->n_tok,
                                                   w->ne0, j->y[i], j->ldy[i])
                              : cl_k_matmul_rows(w->type, w->data, w->row_bytes, lo, hi, j->acts, j->act_stride,
                                                 j->n_tok, w->ne0, j->y[i], j->ldy[i]);
        if (rc != CL_OK)
            atomic_store(&j->rc, rc);
    }
}

/* Products of several weights with the same input and activation type in one
 * pool job: the input is converted once and the threads synchronize once. */
static cl_err cl_model_matmul_n(struct cl_pool *pool, const struct cl_model_w *const *w, float *const *y,
                                const size_t *ldy, size_t n_w, const float *x, size_t ldx, uint32_t n_tok,
                                struct cl_model_act *act)
{
    cl_err rc = CL_OK;
    uint32_t vt = cl_k_vec_dot_type(w[0]->type);
    struct cl_model_mm_job job = {.n_w = n_w, .n_tok = n_tok};
    atomic_init(&job.rc, CL_OK);
    atomic_init(&job.arrived, 0);
    CL_ENSURE_D(n_w >= 1 && n_w <= CL_MODEL_MM_MAX, CL_E_INFER_INTERNAL, "%zu products in one job", n_w);
    for (size_t i = 0; i < n_w; i++) {
        job.w[i] = w[i];
        job.y[i] = y[i];
        job.ldy[i] = ldy[i];
    }
    if (vt == CL_GGML_F32) {
        job.acts = x;
        job.act_stride = ldx * sizeof(float);
    } else {
        size_t rb = cl_k_row_bytes(vt, w[0]->ne0), need;
        CL_GUARD(cl_size_mul(rb, n_tok, &need));
        CL_ENSURE_D(rb && need <= act->cap, CL_E_INFER_INTERNAL, "activation buffer %zu < %zu", act->cap, need);
        job.acts = act->data;
        job.act_stride = rb;
        if (n_tok >= CL_MODEL_PAR_ROWS) { /* quantized in the job, split over the threads */
            job.act_type = vt;
            job.x = x;
            job.ldx = ldx;
            job.act_out = act->data;
        } else {
            for (uint32_t t = 0; t < n_tok; t++)
                CL_GUARD(cl_k_act_quantize(vt, x + (size_t)t * ldx, act->data + (size_t)t * rb, w[0]->ne0));
        }
    }
    cl_pool_run(pool, cl_model_mm_worker, &job);
    rc = atomic_load(&job.rc);
out:
    return rc;
}

cl_err cl_model_matmul(struct cl_pool *pool, const struct cl_model_w *w, const float *x, size_t ldx, uint32_t n_tok,
                       float *y, size_t ldy, struct cl_model_act *act)
{
    return cl_model_matmul_n(pool, &w, &y, &ldy, 1, x, ldx, n_tok, act);
}

cl_err cl_model_matmul_multi(struct cl_pool *pool, const struct cl_model_w *const *w, float *const *y,
                             const size_t *ldy, size_t n_w, const float *x, size_t ldx, uint32_t n_tok,
                             struct cl_model_act *act)
{
    cl_err rc = CL_OK;
    bool same = n_w <= CL_MODEL_MM_MAX;
    for (size_t i = 1; same && i < n_w; i++)
        same = cl_k_vec_dot_type(w[i]->type) == cl_k_vec_dot_type(w[0]->type) && w[i]->ne0 == w[0]->ne0;
    if (same)
        return cl_model_matmul_n(pool, w, y, ldy, n_w, x, ldx, n_tok, act);
    for (size_t i = 0; i < n_w; i++)
        CL_GUARD(cl_model_matmul_n(pool, &w[i], &y[i], &ldy[i], 1, x, ldx, n_tok, act));
out:
    return rc;
}

cl_err cl_model_get_row(const struct cl_model_w *w, uint32_t r, float *out)
{
    if (r >= w->ne1)
        return cl_err_fail(CL_E_INFER_MODEL_TOKEN, "row %u of %u", r, w->ne1);
    if (w->rows16)
        return cl_k_rows16_dequantize_row(w->type, w->data, w->ne1, r, out, w->ne0);
    return cl_k_dequantize_row(w->type, w->data + (size_t)r * w->row_bytes, out, w->ne0);
}

void cl_model_rope(float *x, uint32_t n_rot, enum cl_model_rope mode, uint32_t pos, float base, float freq_scale,
                   const float *freq_factors)
{
    /* ggml: theta_i = pos * base^(-2i/n_rot) by repeated multiplication in float. */
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    float theta = (float)pos;
    for (uint32_t i0 = 0; i0 < n_rot; i0 += 2) {
        float th = freq_scale * (freq_factors ? theta / freq_factors[i0 / 2] : theta);
        float c = cosf(th), s = sinf(th);
        uint32_t a, b;
        if (mode == CL_MODEL_ROPE_NEOX) {
            a = i0 / 2;
            b = i0 / 2 + n_rot / 2;
        } else {
            a = i0;
            b = i0 + 1;
        }
        float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
        theta *= theta_scale;
    }
}
