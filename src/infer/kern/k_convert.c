/* fp16/bf16 <-> fp32 with the rounding ggml uses (F16C vcvtps2ph with
 * round-to-nearest-even; ggml_compute_fp32_to_bf16). */
#include "k_internal.h"

static inline uint32_t cl_k_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float cl_k_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float cl_k_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf; NaN comes out quiet with its payload (as vcvtph2ps) */
        return cl_k_u2f(sign | 0x7f800000 | (man ? 0x400000 : 0) | (man << 13));
    if (exp != 0)
        return cl_k_u2f(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0)
        return cl_k_u2f(sign);
    /* subnormal half: man * 2^-24 is exact in float */
    float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
}

uint16_t cl_k_fp32_to_fp16(float f)
{
    uint32_t x = cl_k_f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) /* NaN: quieted, top payload bits kept (as vcvtps2ph) */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00);
    if (ax >= 0x38800000) { /* normal half: rebias, round to nearest even */
        uint32_t r = ax - 0x38000000;
        r += 0xfff + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = ax >> 23;
    if (e < 102) /* below 2^-25: rounds to zero (2^-25 itself ties to even 0) */
        return sign;
    uint32_t m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* value / 2^-24 = m * 2^-shift, shift in 14..24 */
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return (uint16_t)(sign | q);
}

float cl_k_bf16_to_fp32(uint16_t h) { return cl_k_u2f((uint32_t)h << 16); }

uint16_t cl_k_fp32_to_bf16(float f)
{
    uint32_t u = cl_k_f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* Scalar rows for the type table; the SIMD paths list their own. */
void cl_k_f32_to_float(const void *src, float *dst, size_t n) { memmove(dst, src, n * sizeof(float)); }

void cl_k_f32_from_float(const float *src, void *dst, size_t n) { memmove(dst, src, n * sizeof(float)); }

void cl_k_f16_to_float(const void *src, float *dst, size_t n)
{
    const uint16_t *h = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = cl_k_fp16_to_fp32(h[i]);
}

void cl_k_f16_from_float(const float *src, void *dst, size_t n)
{
    uint16_t *h = dst;
    for (size_t i = 0; i < n; i++)
        h[i] = cl_k_fp32_to_fp16(src[i]);
}

void cl_k_bf16_to_float(const void *src, float *dst, size_t n)
{
    const uint16_t *h = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = cl_k_bf16_to_fp32(h[i]);
}

void cl_k_bf16_from_float(const float *src, void *dst, size_t n)
{
    uint16_t *h = dst;
    for (size_t i = 0; i < n; i++)
        h[i] = cl_k_fp32_to_bf16(src[i]);
}
