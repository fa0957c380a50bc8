#include "cloister/cpu.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int cl_cpu_forced;

static enum cl_cpu_level cl_cpu_detect(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return CL_CPU_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return CL_CPU_AVX2;
    return CL_CPU_SCALAR;
}

static enum cl_cpu_level cl_cpu_env_cap(void)
{
    const char *e = getenv("CLOISTER_CPU");
    if (!e)
        return CL_CPU_COUNT;
    if (!strcmp(e, "scalar"))
        return CL_CPU_SCALAR;
    if (!strcmp(e, "avx2"))
        return CL_CPU_AVX2;
    return CL_CPU_COUNT;
}

enum cl_cpu_level cl_cpu_level(void)
{
    static atomic_int cached;
    int l = atomic_load(&cached);
    if (!l) {
        l = (int)cl_cpu_detect();
        int cap = (int)cl_cpu_env_cap();
        if (cap < l)
            l = cap;
        atomic_store(&cached, l);
    }
    int f = atomic_load(&cl_cpu_forced);
    return (enum cl_cpu_level)(f && f < l ? f : l);
}

bool cl_cpu_has_avx512vnni(void)
{
    __builtin_cpu_init();
    return cl_cpu_level() >= CL_CPU_AVX512 && __builtin_cpu_supports("avx512vnni");
}

void cl_cpu_set_level(enum cl_cpu_level l) { atomic_store(&cl_cpu_forced, (int)l); }

const char *cl_cpu_level_name(enum cl_cpu_level l)
{
    switch (l) {
    case CL_CPU_SCALAR: return "scalar";
    case CL_CPU_AVX2: return "avx2";
    case CL_CPU_AVX512: return "avx512";
    default: return "none";
    }
}
