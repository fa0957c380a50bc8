/* Benchmarks only, never linked into Cloister: an LD_PRELOAD library that
 * lets the prebuilt llama.cpp anchors (../shared/anchors/llama.cpp) run on a
 * CPU without AVX512-FP16.
 *
 * The anchors were compiled with GGML_NATIVE on a CPU that has AVX512-FP16,
 * and exactly two functions of libggml-cpu use it (found by disassembly,
 * docs/benchmarks.md): ggml_vec_dot_f16 (the F16 dot product behind an F16
 * KV cache and F16 matmuls, such as the vision encoder's patch embedding) and
 * the flash-attention kernel. On an AMD EPYC they die with SIGILL.
 * ggml_vec_dot_f16 is an exported symbol that libggml-cpu calls through its
 * PLT and GOT, so this definition takes its place; it computes what ggml's
 * own AVX-512F build computes on such a CPU (widen to F32 with vcvtph2ps,
 * fused multiply-add, sum). Flash attention stays off (-fa 0) in the scripts.
 *
 * Signature (ggml-cpu/vec.h): n elements, one result in *s; the strides bs,
 * bx, by and nrc (rows per call, always 1 here) are unused for F16. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

void ggml_vec_dot_f16(int n, float *s, size_t bs, uint16_t *x, size_t bx, uint16_t *y, size_t by, int nrc);

__attribute__((target("avx512f,f16c,fma"))) void ggml_vec_dot_f16(int n, float *s, size_t bs, uint16_t *x,
                                                                   size_t bx, uint16_t *y, size_t by, int nrc)
{
    (void)bs;
    (void)bx;
    (void)by;
    (void)nrc;
    /* ggml's AVX-512F F16 layout: 4 accumulators of 16 lanes, 64 per step */
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++) {
            __m512 xv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i + 16 * j)));
            __m512 yv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i + 16 * j)));
            a[j] = _mm512_fmadd_ps(xv, yv, a[j]);
        }
    for (; i + 16 <= n; i += 16) {
        __m512 xv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i)));
        __m512 yv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i)));
        a[0] = _mm512_fmadd_ps(xv, yv, a[0]);
    }
    double sum = (double)_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    for (; i < n; i++)
        sum += (double)_cvtsh_ss(x[i]) * (double)_cvtsh_ss(y[i]);
    *s = (float)sum;
}
