/* libFuzzer target: the vision projector loader (clip.* metadata, v.* and
 * mm.* shapes and types) on arbitrary GGUF bytes; a projector that loads and
 * is small enough is run on a gray image and must encode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/infer/vision.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    struct cl_gguf *g = NULL;
    struct cl_vision *v = NULL;
    if (cl_vision_open_memory(copy, size, &g, &v) == CL_OK) {
        const struct cl_vision_hparams *hp = cl_vision_hparams(v);
        /* bounded work per input: patches x width x (layers + ff) */
        uint64_t work = (uint64_t)hp->n_patches * hp->n_embd * (hp->n_layer + 1) * (hp->n_embd + hp->n_ff) +
                        (uint64_t)hp->image_size * hp->image_size * 3;
        if (work <= 50000000ull) {
            size_t n_px = 3u * hp->image_size * hp->image_size, n_out = (size_t)hp->n_tokens * hp->proj_dim;
            float *px = calloc(n_px, sizeof(float)), *out = malloc(n_out * sizeof(float));
            if (px && out && cl_vision_encode(v, NULL, px, n_px, out, n_out) != CL_OK)
                abort(); /* a loaded projector must encode */
            free(px);
            free(out);
        }
        cl_vision_free(v);
        cl_gguf_free(g);
    }
    free(copy);
    return 0;
}
