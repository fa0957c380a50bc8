/* Internals of the vision encoder (not a public API). */
#ifndef CLOISTER_INFER_VISION_INTERNAL_H
#define CLOISTER_INFER_VISION_INTERNAL_H

#include "cloister/infer/vision.h"
#include "../model/model_internal.h"

struct cl_vision_layer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    struct cl_model_w wq, wk, wv, wo, up, down;
    const float *bq, *bk, *bv, *bo, *b_up, *b_down;
};

struct cl_vision {
    struct cl_vision_hparams hp;
    struct cl_model_w patch;      /* F16 copy: n_embd rows of 3*P*P (im2col order c, ky, kx) */
    const float *patch_b;
    float *pos;                   /* n_patches rows of n_embd (F32 copy) */
    struct cl_vision_layer *layers;
    const float *post_w, *post_b;
    const float *soft_norm;
    struct cl_model_w proj;       /* transposed copy: proj_dim rows of n_embd */
    void *owned;                  /* secure memory behind patch, pos and proj */
    size_t weight_bytes;
};

#endif
