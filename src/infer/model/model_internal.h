/* Internals shared by the model runtime's files (not a public API). */
#ifndef CLOISTER_INFER_MODEL_INTERNAL_H
#define CLOISTER_INFER_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/infer/model.h"
#include "cloister/infer/pool.h"

/* Rows from which per-row work (norms, activation quantization, RoPE, gated
 * activations) is split over the pool's threads; fewer run on the caller. */
#define CL_MODEL_PAR_ROWS 4u

/* Tokens evaluated per forward pass; longer batches are split. */
#define CL_MODEL_UBATCH 256u

/* A 2-D weight used in place: ne1 rows of ne0 elements. */
struct cl_model_w {
    const uint8_t *data;
    uint32_t type;    /* enum cl_ggml_type */
    uint32_t ne0;     /* elements per row (input width) */
    uint32_t ne1;     /* rows (output width) */
    size_t row_bytes;
    bool rows16;      /* repacked in place into 16 interleaved rows (kernels.h CL_K_ROWS16) */
};

struct cl_model_layer {
    const float *attn_norm;
    const float *q_norm, *k_norm;   /* gemma3 */
    const float *post_attn_norm;    /* gemma3 */
    const float *ffn_norm;
    const float *post_ffn_norm;     /* gemma3 */
    struct cl_model_w wq, wk, wv, wo;
    struct cl_model_w gate, up, down;
    bool swa;
    float rope_base;
    float rope_freq_scale;
};

struct cl_model {
    struct cl_model_hparams hp;
    struct cl_model_w tok_embd;
    struct cl_model_w output;
    const float *output_norm;
    const float *rope_freqs; /* optional per-pair frequency divisors (Llama 3 rope scaling) */
    struct cl_model_layer *layers;
    size_t weight_bytes;
};

/* Activation buffer for one matmul input: rows quantized to the weight's dot
 * product type. */
struct cl_model_act {
    uint8_t *data;
    size_t cap;
};

/* Matrix product y[t][r] = sum_k w[r][k] * x[t][k] for t < n_tok, r < w->ne1.
 * x rows are ldx floats apart (ldx >= ne0), y rows are ldy apart. The
 * activations are first converted to the weight's vec_dot type in act. */
CL_MUST_CHECK cl_err cl_model_matmul(struct cl_pool *pool, const struct cl_model_w *w, const float *x, size_t ldx,
                                     uint32_t n_tok, float *y, size_t ldy, struct cl_model_act *act);
/* The same for several weights sharing the input x (q/k/v, gate/up). */
CL_MUST_CHECK cl_err cl_model_matmul_multi(struct cl_pool *pool, const struct cl_model_w *const *w, float *const *y,
                                           const size_t *ldy, size_t n_w, const float *x, size_t ldx,
                                           uint32_t n_tok, struct cl_model_act *act);
/* Bytes an activation buffer needs for n_tok rows of w's input width. */
CL_MUST_CHECK cl_err cl_model_act_size(const struct cl_model_w *w, uint32_t n_tok, size_t *out);
/* Row r of w as floats. */
CL_MUST_CHECK cl_err cl_model_get_row(const struct cl_model_w *w, uint32_t r, float *out);

/* RoPE of one head in place, angles as ggml computes them. */
void cl_model_rope(float *x, uint32_t n_rot, enum cl_model_rope mode, uint32_t pos, float base, float freq_scale,
                   const float *freq_factors);

#endif
