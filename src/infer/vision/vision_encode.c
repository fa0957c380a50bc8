/* The vision encoder's forward pass: ViT over all patches at once, then the
 * Gemma 3 projector. Matrix products go through the model runtime's pooled
 * matmul (same kernels and activation conversion as the text model);
 * attention uses the F32 matmul kernel per head and block of queries. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/infer/kernels.h"
#include "cloister/secmem.h"
#include "vision_internal.h"

/* Queries per attention task: scores for them take CL_VISION_QCHUNK * n_patches floats. */
#define CL_VISION_QCHUNK 32u

struct cl_vision_scratch {
    float *x, *h, *q, *k, *v, *att, *vt, *ff, *scores;
    struct cl_model_act act;
    uint8_t *mem;
    size_t mem_len;
};

/* ---- row operations over the pool ---- */

enum cl_vision_rowop {
    CL_VISION_ROWOP_NONE = 0,
    CL_VISION_ROWOP_LAYERNORM, /* dst = (src - mean)/sqrt(var + eps) * w + b */
    CL_VISION_ROWOP_BIAS,      /* dst += b */
    CL_VISION_ROWOP_BIAS_GELU, /* dst = gelu(dst + b) */
    CL_VISION_ROWOP_BIAS_ADD,  /* dst = (src + b) + dst: residual after a biased product */
    CL_VISION_ROWOP_COUNT
};

struct cl_vision_rows_job {
    enum cl_vision_rowop op;
    float *dst;
    const float *src;
    const float *w, *b;
    size_t n_rows, n;
    float eps;
};

static void cl_vision_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, float eps)
{
    /* as ggml_norm: mean and variance sums in double, then scale, then gain and bias */
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)x[i];
    const float mean = (float)(sum / (double)n);
    double sum2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        y[i] = d;
        sum2 += (double)(d * d);
    }
    const float var = (float)(sum2 / (double)n);
    const float scale = 1.0f / sqrtf(var + eps);
    for (size_t i = 0; i < n; i++)
        y[i] = y[i] * scale * w[i] + b[i];
}

static void cl_vision_rows_worker(void *arg, unsigned ith, unsigned nth)
{
    const struct cl_vision_rows_job *j = arg;
    size_t lo, hi;
    cl_pool_split(j->n_rows, 1, ith, nth, &lo, &hi);
    for (size_t r = lo; r < hi; r++) {
        float *d = j->dst + r * j->n;
        const float *s = j->src ? j->src + r * j->n : NULL;
        switch (j->op) {
        case CL_VISION_ROWOP_LAYERNORM:
            cl_vision_layernorm(d, s, j->w, j->b, j->n, j->eps);
            break;
        case CL_VISION_ROWOP_BIAS:
            cl_k_add_f32(d, j->b, j->n);
            break;
        case CL_VISION_ROWOP_BIAS_GELU:
            cl_k_add_f32(d, j->b, j->n);
            cl_k_gelu_ggml_f32(d, d, j->n);
            break;
        case CL_VISION_ROWOP_BIAS_ADD:
            for (size_t i = 0; i < j->n; i++)
                d[i] = (s[i] + j->b[i]) + d[i];
            break;
        default:
            break;
        }
    }
}

static void cl_vision_rows(struct cl_pool *pool, enum cl_vision_rowop op, float *dst, const float *src,
                           const float *w, const float *b, size_t n_rows, size_t n, float eps)
{
    struct cl_vision_rows_job j = {op, dst, src, w, b, n_rows, n, eps};
    cl_pool_run(pool, cl_vision_rows_worker, &j);
}

/* ---- attention: softmax(q k^T * scale) v per head, no mask ---- */

struct cl_vision_attn_job {
    const struct cl_vision_hparams *hp;
    struct cl_vision_scratch *s;
    size_t T;
    atomic_int rc;
};

static void cl_vision_attn_worker(void *arg, unsigned ith, unsigned nth)
{
    struct cl_vision_attn_job *j = arg;
    const struct cl_vision_hparams *hp = j->hp;
    struct cl_vision_scratch *s = j->s;
    const size_t T = j->T, E = hp->n_embd, dh = hp->head_dim;
    const size_t n_chunks = (T + CL_VISION_QCHUNK - 1) / CL_VISION_QCHUNK;
    const float scale = 1.0f / sqrtf((float)dh);
    float *sc = s->scores + (size_t)ith * CL_VISION_QCHUNK * T;
    size_t lo, hi;
    cl_pool_split(n_chunks * hp->n_head, 1, ith, nth, &lo, &hi);
    for (size_t task = lo; task < hi; task++) {
        size_t hd = task / n_chunks, q0 = (task % n_chunks) * CL_VISION_QCHUNK;
        size_t nq = T - q0 < CL_VISION_QCHUNK ? T - q0 : CL_VISION_QCHUNK;
        /* sc[i*T + key] = k_key . q_(q0+i) */
        cl_err rc = cl_k_matmul_rows(CL_GGML_F32, s->k + hd * dh, E * sizeof(float), 0, T, s->q + q0 * E + hd * dh,
                                     E * sizeof(float), nq, dh, sc, T);
        if (rc != CL_OK) {
            atomic_store(&j->rc, rc);
            return;
        }
        for (size_t i = 0; i < nq; i++) {
            float *row = sc + i * T;
            cl_k_scale_f32(row, scale, T);
            (void)cl_k_softmax_f32(row, T);
        }
        /* att[(q0+i)*E + hd*dh + d] = sum_key p[i][key] * v[key][d], via vt rows (d) of T */
        rc = cl_k_matmul_rows(CL_GGML_F32, s->vt + hd * dh * T, T * sizeof(float), 0, dh, sc, T * sizeof(float), nq,
                              T, s->att + q0 * E + hd * dh, E);
        if (rc != CL_OK) {
            atomic_store(&j->rc, rc);
            return;
        }
    }
}

struct cl_vision_tr_job {
    const float *src; /* T rows of E */
    float *dst;       /* E rows of T */
    size_t T, E;
};

static void cl_vision_tr_worker(void *arg, unsigned ith, unsigned nth)
{
    const struct cl_vision_tr_job *j = arg;
    size_t lo, hi;
    cl_pool_split(j->E, 1, ith, nth, &lo, &hi);
    for (size_t e = lo; e < hi; e++)
        for (size_t t = 0; t < j->T; t++)
            j->dst[e * j->T + t] = j->src[t * j->E + e];
}


/* ---- scratch ---- */

static cl_err cl_vision_scratch_new(const struct cl_vision *v, unsigned nth, struct cl_vision_scratch *s)
{
    cl_err rc = CL_OK;
    const struct cl_vision_hparams *hp = &v->hp;
    const size_t T = hp->n_patches, E = hp->n_embd, K = 3u * hp->patch_size * hp->patch_size;
    const size_t F = hp->n_ff > K ? hp->n_ff : K;
    size_t sizes[9], offs[9], off = 0, act = 0, a;
    float **ptrs[9] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->vt, &s->ff, &s->scores};
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < 7; i++)
        sizes[i] = T * E;
    CL_GUARD(cl_size_mul(T, F, &sizes[7]));
    CL_GUARD(cl_size_mul((size_t)nth * CL_VISION_QCHUNK, T, &sizes[8]));
    for (size_t i = 0; i < 9; i++) {
        size_t bytes;
        offs[i] = off;
        CL_GUARD(cl_size_mul(sizes[i], sizeof(float), &bytes));
        bytes = (bytes + 63) & ~(size_t)63;
        CL_GUARD(cl_size_add(off, bytes, &off));
    }
    /* activations converted for the largest product */
    CL_GUARD(cl_model_act_size(&v->patch, (uint32_t)T, &act));
    CL_GUARD(cl_model_act_size(&v->proj, hp->n_tokens, &a));
    act = a > act ? a : act;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct cl_vision_layer *L = &v->layers[il];
        const struct cl_model_w *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->up, &L->down};
        for (size_t i = 0; i < 6; i++) {
            CL_GUARD(cl_model_act_size(lw[i], (uint32_t)T, &a));
            act = a > act ? a : act;
        }
    }
    size_t act_off = off;
    CL_GUARD(cl_size_add(off, act ? act : 64, &off));
    CL_GUARD(cl_secmem_alloc(off, (void **)&s->mem));
    s->mem_len = off;
    for (size_t i = 0; i < 9; i++)
        *ptrs[i] = (float *)(s->mem + offs[i]);
    s->act.data = s->mem + act_off;
    s->act.cap = act ? act : 64;
out:
    return rc;
}

cl_err cl_vision_encode(const struct cl_vision *v, struct cl_pool *pool, const float *pixels, size_t n_pixels,
                        float *out, size_t out_len)
{
    cl_err rc = CL_OK;
    struct cl_vision_scratch s = {0};
    CL_ENSURE_D(v && pixels && out, CL_E_CORE_INVALID_ARG, "projector, pixels or output NULL");
    const struct cl_vision_hparams *hp = &v->hp;
    const size_t S = hp->image_size, P = hp->patch_size, T = hp->n_patches, E = hp->n_embd, F = hp->n_ff;
    const size_t K = 3 * P * P, ns = hp->n_side;
    CL_ENSURE_D(n_pixels == 3 * S * S, CL_E_INFER_VISION_MISMATCH, "image tensor has %zu values, projector needs %zu",
                n_pixels, 3 * S * S);
    CL_ENSURE_D(out_len == (size_t)hp->n_tokens * hp->proj_dim, CL_E_INFER_VISION_MISMATCH,
                "output holds %zu floats, projector writes %zu", out_len, (size_t)hp->n_tokens * hp->proj_dim);
    CL_GUARD(cl_vision_scratch_new(v, pool ? cl_pool_threads(pool) : 1, &s));

    /* Patch embedding as im2col + product (fp16 on both sides, as ggml_conv_2d). */
    for (size_t py = 0; py < ns; py++)
        for (size_t px = 0; px < ns; px++) {
            float *col = s.ff + (py * ns + px) * K;
            for (size_t c = 0; c < 3; c++)
                for (size_t ky = 0; ky < P; ky++) {
                    const float *src = pixels + c * S * S + (py * P + ky) * S + px * P;
                    for (size_t kx = 0; kx < P; kx++) {
                        CL_ENSURE_D(isfinite(src[kx]), CL_E_INFER_VISION_MISMATCH, "image tensor value not finite");
                        col[(c * P + ky) * P + kx] = src[kx];
                    }
                }
        }
    CL_GUARD(cl_model_matmul(pool, &v->patch, s.ff, K, (uint32_t)T, s.x, E, &s.act));
    for (size_t t = 0; t < T; t++) {
        cl_k_add_f32(s.x + t * E, v->patch_b, E);
        cl_k_add_f32(s.x + t * E, v->pos + t * E, E);
    }

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct cl_vision_layer *L = &v->layers[il];
        cl_vision_rows(pool, CL_VISION_ROWOP_LAYERNORM, s.h, s.x, L->ln1_w, L->ln1_b, T, E, hp->eps);
        {
            const struct cl_model_w *ws[3] = {&L->wq, &L->wk, &L->wv};
            float *ys[3] = {s.q, s.k, s.v};
            size_t ld[3] = {E, E, E};
            CL_GUARD(cl_model_matmul_multi(pool, ws, ys, ld, 3, s.h, E, (uint32_t)T, &s.act));
        }
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS, s.q, NULL, NULL, L->bq, T, E, 0.0f);
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS, s.k, NULL, NULL, L->bk, T, E, 0.0f);
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS, s.v, NULL, NULL, L->bv, T, E, 0.0f);
        {
            struct cl_vision_tr_job tj = {s.v, s.vt, T, E};
            cl_pool_run(pool, cl_vision_tr_worker, &tj);
            struct cl_vision_attn_job aj = {.hp = hp, .s = &s, .T = T};
            atomic_init(&aj.rc, CL_OK);
            cl_pool_run(pool, cl_vision_attn_worker, &aj);
            CL_GUARD((cl_err)atomic_load(&aj.rc));
        }
        CL_GUARD(cl_model_matmul(pool, &L->wo, s.att, E, (uint32_t)T, s.h, E, &s.act));
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS_ADD, s.x, s.h, NULL, L->bo, T, E, 0.0f);
        cl_vision_rows(pool, CL_VISION_ROWOP_LAYERNORM, s.h, s.x, L->ln2_w, L->ln2_b, T, E, hp->eps);
        CL_GUARD(cl_model_matmul(pool, &L->up, s.h, E, (uint32_t)T, s.ff, F, &s.act));
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS_GELU, s.ff, NULL, NULL, L->b_up, T, F, 0.0f);
        CL_GUARD(cl_model_matmul(pool, &L->down, s.ff, F, (uint32_t)T, s.h, E, &s.act));
        cl_vision_rows(pool, CL_VISION_ROWOP_BIAS_ADD, s.x, s.h, NULL, L->b_down, T, E, 0.0f);
    }
    cl_vision_rows(pool, CL_VISION_ROWOP_LAYERNORM, s.h, s.x, v->post_w, v->post_b, T, E, hp->eps);

    /* Gemma 3 projector: average pool k x k patch blocks, RMSNorm, projection. */
    {
        const size_t k = hp->scale_factor, nb = ns / k;
        float *pooled = s.q;
        for (size_t by = 0; by < nb; by++)
            for (size_t bx = 0; bx < nb; bx++) {
                float *o = pooled + (by * nb + bx) * E;
                for (size_t e = 0; e < E; e++) {
                    float acc = 0.0f;
                    for (size_t ky = 0; ky < k; ky++)
                        for (size_t kx = 0; kx < k; kx++)
                            acc += s.h[((by * k + ky) * ns + bx * k + kx) * E + e];
                    o[e] = acc / (float)(k * k);
                }
                cl_k_rmsnorm_f32(o, o, v->soft_norm, E, hp->eps);
            }
        CL_GUARD(cl_model_matmul(pool, &v->proj, pooled, E, hp->n_tokens, s.k, hp->proj_dim, &s.act));
        memcpy(out, s.k, (size_t)hp->n_tokens * hp->proj_dim * sizeof(float));
    }
out:
    cl_secmem_free(s.mem);
    return rc;
}
