/* AVX-512 F/BW/VL (+VNNI) kernels. */
#include "k_internal.h"

bool cl_k_avx512_impl(uint32_t wtype, bool vnni, struct cl_k_impl *impl)
{
    (void)wtype;
    (void)vnni;
    (void)impl;
    return false;
}
