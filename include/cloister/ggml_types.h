/* GGUF/GGML tensor type ids and their block geometry. The numeric values are
 * the on-disk ids of the GGUF format, so unlike other Cloister enums this one
 * does not start at a NONE value: 0 is F32 on disk. */
#ifndef CLOISTER_GGML_TYPES_H
#define CLOISTER_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum cl_ggml_type {
    CL_GGML_F32 = 0,
    CL_GGML_F16 = 1,
    CL_GGML_Q4_0 = 2,
    CL_GGML_Q4_1 = 3,
    CL_GGML_Q5_0 = 6,
    CL_GGML_Q5_1 = 7,
    CL_GGML_Q8_0 = 8,
    CL_GGML_Q8_1 = 9,
    CL_GGML_Q2_K = 10,
    CL_GGML_Q3_K = 11,
    CL_GGML_Q4_K = 12,
    CL_GGML_Q5_K = 13,
    CL_GGML_Q6_K = 14,
    CL_GGML_Q8_K = 15,
    CL_GGML_I8 = 24,
    CL_GGML_I16 = 25,
    CL_GGML_I32 = 26,
    CL_GGML_I64 = 27,
    CL_GGML_F64 = 28,
    CL_GGML_BF16 = 30,
    CL_GGML_TYPE_COUNT = 31
};

struct cl_ggml_type_info {
    const char *name;     /* "q4_0"; NULL for ids Cloister does not know */
    uint32_t block_elems; /* elements per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
};

/* Geometry for a type id, or NULL when the id is unknown or unsupported. */
static inline const struct cl_ggml_type_info *cl_ggml_type_info(uint32_t t)
{
    static const struct cl_ggml_type_info tab[CL_GGML_TYPE_COUNT] = {
        [CL_GGML_F32] = {"f32", 1, 4},        [CL_GGML_F16] = {"f16", 1, 2},
        [CL_GGML_Q4_0] = {"q4_0", 32, 18},    [CL_GGML_Q4_1] = {"q4_1", 32, 20},
        [CL_GGML_Q5_0] = {"q5_0", 32, 22},    [CL_GGML_Q5_1] = {"q5_1", 32, 24},
        [CL_GGML_Q8_0] = {"q8_0", 32, 34},    [CL_GGML_Q8_1] = {"q8_1", 32, 36},
        [CL_GGML_Q2_K] = {"q2_k", 256, 84},   [CL_GGML_Q3_K] = {"q3_k", 256, 110},
        [CL_GGML_Q4_K] = {"q4_k", 256, 144},  [CL_GGML_Q5_K] = {"q5_k", 256, 176},
        [CL_GGML_Q6_K] = {"q6_k", 256, 210},  [CL_GGML_Q8_K] = {"q8_k", 256, 292},
        [CL_GGML_I8] = {"i8", 1, 1},          [CL_GGML_I16] = {"i16", 1, 2},
        [CL_GGML_I32] = {"i32", 1, 4},        [CL_GGML_I64] = {"i64", 1, 8},
        [CL_GGML_F64] = {"f64", 1, 8},        [CL_GGML_BF16] = {"bf16", 1, 2},
    };
    return t < CL_GGML_TYPE_COUNT && tab[t].name ? &tab[t] : NULL;
}

#endif
