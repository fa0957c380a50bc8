/* Benchmarks only, never linked into Cloister: an LD_PRELOAD library that
 * makes the prebuilt llama.cpp anchors keep their weights as the file has
 * them instead of repacking them at load, as `--no-repack` does for the tools
 * that take it (llama-batched-bench, llama-completion) but llama-bench lacks.
 *
 * Why: the anchors repack Q4_K weights to Q4_K_8x8 at load with a function
 * compiled for AVX512-FP16 (repack_q4_K_to_q4_K_8_bl uses vmovw), which dies
 * with SIGILL on a CPU without it (AMD EPYC). The scripts preload this library
 * only after such a SIGILL, and the tables then say "no weight repack".
 *
 * How: libggml-cpu asks its exported
 *   std::vector<ggml_backend_buffer_type_t> &ggml_backend_cpu_get_extra_buffer_types(void)
 * for the extra (repacking) buffer types it offers the model loader; this
 * definition takes its place through the PLT and answers with an empty vector
 * (in libstdc++'s layout, three null pointers: begin, end, capacity), so every
 * weight goes to the plain CPU buffer, the path --no-repack selects. */
#include <stddef.h>

void *_Z39ggml_backend_cpu_get_extra_buffer_typesv(void);

void *_Z39ggml_backend_cpu_get_extra_buffer_typesv(void)
{
    static void *empty_vector[3];
    return empty_vector;
}
