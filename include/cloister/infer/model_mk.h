/* Random-weight models at any shape (`cloister mkmodel`): a GGUF v3 with the
 * metadata and tensors llama.cpp expects for `llama` and `gemma3`, weights
 * quantized with the reference quantizers, for benchmarks and tests. */
#ifndef CLOISTER_INFER_MODEL_MK_H
#define CLOISTER_INFER_MODEL_MK_H

#include <stdint.h>

#include "cloister/err.h"
#include "cloister/gguf.h"
#include "cloister/infer/model.h"

struct cl_model_shape {
    enum cl_model_arch arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    uint32_t sliding_window, swa_pattern; /* gemma3 */
    float rope_base, rope_base_local, rope_scale; /* rope_scale: linear factor of global layers, 1 = none */
};

/* Weight type choice, following llama-quantize's ftypes without an imatrix. */
enum cl_model_mk_type {
    CL_MODEL_MK_NONE = 0,
    CL_MODEL_MK_F32,
    CL_MODEL_MK_F16,
    CL_MODEL_MK_Q8_0,
    CL_MODEL_MK_Q4_0,  /* output head Q6_K (Q8_0 when its width is not a multiple of 256) */
    CL_MODEL_MK_Q4_K,  /* Q4_K_M mix: Q6_K for output, some attn_v/ffn_down; Q5_0/Q8_0 fallbacks */
    CL_MODEL_MK_Q6_K,
    CL_MODEL_MK_COUNT
};

/* Named shapes: "tiny", "gemma3-1b", "llama-1b" (perf.md), optionally followed
 * by ",key=value" overrides; or only overrides starting from "tiny". Keys:
 * embd layers heads kv hd ff vocab ctx swa pattern rope_base rope_local
 * rope_scale. The arch decides gemma3 vs llama defaults. */
CL_MUST_CHECK cl_err cl_model_shape_parse(enum cl_model_arch arch, const char *spec, struct cl_model_shape *out);
/* "f32", "f16", "q8_0", "q4_0", "q4_k" (= q4_k_m), "q6_k"; NONE when unknown. */
enum cl_model_mk_type cl_model_mk_type_parse(const char *s);

struct cl_model_mk_opts {
    struct cl_model_shape shape;
    enum cl_model_mk_type type;
    uint64_t seed;
    const cl_gguf *vocab;   /* optional: tokenizer.* keys are copied from it */
    unsigned threads;       /* for quantizing; 0 = 1 */
    const char *omit;       /* tests: leave out this tensor or key */
    uint32_t ff_key;        /* tests: nonzero writes this feed_forward_length instead */
};

/* Builds the file in a writer (caller frees it). */
CL_MUST_CHECK cl_err cl_model_mk(const struct cl_model_mk_opts *o, cl_gguf_writer **out);

#endif
