/* Random-weight vision projectors (`cloister mkmodel --mmproj`): an mmproj
 * GGUF with the clip.* metadata and v.* / mm.* tensors llama.cpp's clip.cpp
 * reads for the Gemma 3 projector, for benchmarks and tests. */
#ifndef CLOISTER_INFER_VISION_MK_H
#define CLOISTER_INFER_VISION_MK_H

#include <stdint.h>

#include "cloister/err.h"
#include "cloister/gguf.h"

struct cl_vision_shape {
    uint32_t image_size, patch_size, n_embd, n_layer, n_head, n_ff, proj_dim, scale_factor;
};

/* Named shapes: "tiny" (the reference mmproj: 224 px, patch 14, width 32, 2
 * layers, 2 heads, ff 64, projected to 64, scale 4) and "medgemma-4b" (SigLIP
 * so400m: 896 px, patch 14, width 1152, 27 layers, 16 heads, ff 4304,
 * projected to 2560, scale 4 -> 256 tokens), optionally followed by
 * ",key=value" overrides: image patch embd layers heads ff proj scale. */
CL_MUST_CHECK cl_err cl_vision_shape_parse(const char *spec, struct cl_vision_shape *out);

struct cl_vision_mk_opts {
    struct cl_vision_shape shape;
    uint32_t type;     /* matrices: CL_GGML_F32, F16 or Q8_0; 1-D tensors stay F32 */
    uint64_t seed;
    unsigned threads;  /* 0 = 1 */
    const char *omit;  /* tests: leave out this tensor or key */
};

/* Builds the file in a writer (caller frees it). */
CL_MUST_CHECK cl_err cl_vision_mk(const struct cl_vision_mk_opts *o, cl_gguf_writer **out);

#endif
