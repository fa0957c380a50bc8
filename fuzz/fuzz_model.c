/* libFuzzer target: the model loader (metadata, tensor shapes and types) on
 * arbitrary GGUF bytes, then two tokens through the forward pass when it
 * loads; then the same bytes loaded writable, as cloister run and the
 * enclave load them (weights repacked in place into 16 interleaved rows),
 * and evaluated again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/infer/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    struct cl_gguf *g = NULL;
    struct cl_model *m = NULL;
    if (cl_model_open_memory(copy, size, &g, &m) == CL_OK) {
        const struct cl_model_hparams *hp = cl_model_hparams(m);
        const size_t n_vocab = hp->n_vocab;
        struct cl_model_seq *s = NULL;
        float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
        int32_t toks[2] = {0, (int32_t)(hp->n_vocab - 1)};
        if (logits && cl_model_seq_new(m, 4, NULL, &s) == CL_OK) {
            if (cl_model_seq_eval(s, toks, 2, logits, false) != CL_OK)
                abort(); /* a loaded model must evaluate */
            cl_model_seq_free(s);
        }
        free(logits);
        cl_model_free(m);
        cl_gguf_free(g);
        g = NULL;
        m = NULL;
        if (size)
            memcpy(copy, data, size);
        if (cl_gguf_open_memory(copy, size, &g) != CL_OK || cl_gguf_set_writable(g, copy) != CL_OK ||
            cl_model_load(g, &m) != CL_OK)
            abort(); /* loaded read-only, so it loads writable */
        logits = malloc(n_vocab * sizeof(float));
        s = NULL;
        if (logits && cl_model_seq_new(m, 4, NULL, &s) == CL_OK) {
            if (cl_model_seq_eval(s, toks, 2, logits, false) != CL_OK)
                abort();
            cl_model_seq_free(s);
        }
        free(logits);
        cl_model_free(m);
        cl_gguf_free(g);
    }
    free(copy);
    return 0;
}
