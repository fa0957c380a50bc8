/* libFuzzer target: the GGUF reader on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-size copy so ASan catches any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    cl_gguf *g = NULL;
    if (cl_gguf_open_memory(copy, size, &g) == CL_OK) {
        volatile uint64_t sink = 0;
        for (size_t i = 0; i < cl_gguf_n_kv(g); i++) {
            const struct cl_gguf_kv *kv = cl_gguf_kv_at(g, i);
            int64_t iv;
            float f;
            struct cl_gguf_str s;
            if (cl_gguf_get_int(g, kv->key, &iv) == CL_OK)
                sink += (uint64_t)iv;
            if (cl_gguf_get_float(g, kv->key, &f) == CL_OK)
                sink += (uint64_t)(f == f);
            if (cl_gguf_get_str(g, kv->key, &s) == CL_OK && s.len)
                sink += (uint8_t)s.p[s.len - 1];
            struct cl_gguf_str *tab = NULL;
            size_t n = 0;
            if (cl_gguf_get_arr_str(g, kv->key, &tab, &n) == CL_OK) {
                for (size_t j = 0; j < n; j++)
                    sink += tab[j].len ? (uint8_t)tab[j].p[tab[j].len - 1] : 0;
                free(tab);
            }
            float *ft = NULL;
            if (cl_gguf_get_arr_f32(g, kv->key, &ft, &n) == CL_OK)
                free(ft);
            int32_t *it = NULL;
            if (cl_gguf_get_arr_i32(g, kv->key, &it, &n) == CL_OK)
                free(it);
        }
        for (size_t i = 0; i < cl_gguf_n_tensors(g); i++) {
            const struct cl_gguf_tensor *t = cl_gguf_tensor_at(g, i);
            if (cl_gguf_find_tensor(g, t->name) != t)
                abort();
            const uint8_t *p = t->data;
            sink += p[0] + p[t->nbytes - 1];
        }
        (void)sink;
        cl_gguf_free(g);
    }
    free(copy);
    return 0;
}
