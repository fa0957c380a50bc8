/* Run-time CPU feature detection for SIMD dispatch. Nothing in Cloister is
 * compiled with -march=native; SIMD kernels carry target attributes and are
 * chosen through these checks. CLOISTER_CPU=scalar|avx2|avx512 caps the level
 * (for tests that compare paths). */
#ifndef CLOISTER_CPU_H
#define CLOISTER_CPU_H

#include <stdbool.h>

enum cl_cpu_level {
    CL_CPU_NONE = 0,
    CL_CPU_SCALAR,
    CL_CPU_AVX2,   /* AVX2 + FMA + F16C */
    CL_CPU_AVX512, /* AVX-512 F/BW/VL (+ VNNI reported separately) */
    CL_CPU_COUNT
};

enum cl_cpu_level cl_cpu_level(void);
bool cl_cpu_has_avx512vnni(void);
const char *cl_cpu_level_name(enum cl_cpu_level l);
/* Overrides detection (capped at what the CPU has); CL_CPU_NONE restores it. */
void cl_cpu_set_level(enum cl_cpu_level l);

#endif
