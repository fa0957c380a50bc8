/* Vision encoder of multimodal models: a llama.cpp "mmproj" GGUF (clip.*
 * metadata, v.* and mm.* tensors) with the Gemma 3 projector, as MedGemma
 * uses it: SigLIP ViT (patch embedding, learned positions, pre-LayerNorm
 * blocks with biases, GELU, post-LayerNorm), then average pooling by the
 * projector's scale factor, the soft-embedding RMSNorm and the input
 * projection into the text model's embedding width.
 *
 * The numbers follow llama.cpp's clip.cpp on the CPU backend: the patch
 * embedding rounds pixels and kernel to fp16 (ggml's im2col), LayerNorm and
 * RMSNorm sums are in double, GELU uses ggml's fp16 table.
 *
 * Threading: a loaded cl_vision is immutable and may be shared; every
 * cl_vision_encode call allocates its own (secure) scratch. Weights are views
 * into the GGUF buffer, which must outlive the handle. */
#ifndef CLOISTER_INFER_VISION_H
#define CLOISTER_INFER_VISION_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"
#include "cloister/infer/pool.h"

struct cl_gguf;
struct cl_model;

#define CL_VISION_MAX_LAYERS 256u
#define CL_VISION_MAX_IMAGE 4096u  /* image_size cap, pixels per side */
#define CL_VISION_MAX_WIDTH 16384u /* embedding and feed-forward widths */

struct cl_vision_hparams {
    uint32_t image_size;   /* square input, pixels per side */
    uint32_t patch_size;
    uint32_t n_embd;       /* vision width */
    uint32_t n_head;
    uint32_t head_dim;     /* n_embd / n_head */
    uint32_t n_layer;
    uint32_t n_ff;
    uint32_t proj_dim;     /* output width: the text model's n_embd */
    uint32_t scale_factor; /* average-pool kernel and stride, in patches */
    uint32_t n_side;       /* patches per side: image_size / patch_size */
    uint32_t n_patches;    /* n_side^2 */
    uint32_t n_tokens;     /* embeddings per image: (n_side / scale_factor)^2 */
    float eps;             /* LayerNorm and soft-embedding RMSNorm epsilon */
    float mean[3], std[3]; /* preprocessing, per RGB channel */
};

struct cl_vision;

/* Builds the encoder over g's tensors; every key, shape and type is checked
 * (CL_E_INFER_MODEL_KEY/TENSOR/SHAPE/TYPE/HPARAMS naming the field,
 * CL_E_INFER_VISION_PROJECTOR for anything but a gemma3 clip projector).
 * Weights: F32, F16 or Q8_0 matrices; norms, biases and position embeddings F32. */
CL_MUST_CHECK cl_err cl_vision_load(const struct cl_gguf *g, struct cl_vision **out);
/* Parses an mmproj GGUF held in caller-owned memory (e.g. decrypted into
 * secure memory) and loads it; buf must outlive *g and *v. */
CL_MUST_CHECK cl_err cl_vision_open_memory(const void *buf, size_t len, struct cl_gguf **g, struct cl_vision **v);
void cl_vision_free(struct cl_vision *v);
const struct cl_vision_hparams *cl_vision_hparams(const struct cl_vision *v);
/* Bytes of weights the encoder reads. */
size_t cl_vision_weight_bytes(const struct cl_vision *v);
/* CL_E_INFER_VISION_MISMATCH unless the projector's output width equals the
 * text model's embedding width. */
CL_MUST_CHECK cl_err cl_vision_check_model(const struct cl_vision *v, const struct cl_model *m);

/* Encodes one preprocessed image: pixels is planar float RGB,
 * index c*S*S + y*S + x with S = image_size (already normalised with mean and
 * std), n_pixels == 3*S*S. out receives n_tokens rows of proj_dim floats
 * (row r is pooled block (r / (n_side/scale), r % (n_side/scale))), written
 * only on success. pool may be NULL (one thread). */
CL_MUST_CHECK cl_err cl_vision_encode(const struct cl_vision *v, struct cl_pool *pool, const float *pixels,
                                      size_t n_pixels, float *out, size_t out_len);

#endif
