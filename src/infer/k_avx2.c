/* AVX2 + FMA + F16C kernels. */
#include "k_internal.h"

void cl_k_act_q8_0_avx2(const float *x, void *dst, size_t n) { cl_k_act_q8_0_scalar(x, dst, n); }
void cl_k_act_q8_1_avx2(const float *x, void *dst, size_t n) { cl_k_act_q8_1_scalar(x, dst, n); }

bool cl_k_avx2_impl(uint32_t wtype, struct cl_k_impl *impl)
{
    (void)wtype;
    (void)impl;
    return false;
}
