/* The kernels by type: one table, indexed by ggml type id, that says for each
 * type its block geometry, the activation type its dot product consumes, and
 * its kernels (to/from float, dot, matmul) on every CPU level. The scalar
 * reference is written here; the SIMD paths (k_avx2.c, k_avx512.c) list what
 * they speed up, and cl_k_type_init() lays each level over the one below it.
 * The entry points that take a type id (cl_k_dequantize_row, ...) are here
 * too: they check arguments, then call through the table. */
#include <pthread.h>

#include "k_internal.h"

/* A weight type: its scalar kernels and the activation type of its dot. */
#define CL_K_WEIGHT(T, ACT, DEQ, REF, DOT) \
    [T] = {.vec_dot_type = (ACT), .at[CL_CPU_SCALAR] = {.to_float = (DEQ), .from_float_ref = (REF), .dot = (DOT)}}

static struct cl_k_type cl_k_types[CL_GGML_TYPE_COUNT] = {
    /* Plain types: the "quantizer" is a conversion, the same for weights and
     * activations (ggml's from_float for F16/BF16 rounds to nearest even). */
    [CL_GGML_F32] = {.vec_dot_type = CL_GGML_F32,
                     .at[CL_CPU_SCALAR] = {.to_float = cl_k_f32_to_float, .from_float_ref = cl_k_f32_from_float, .from_float = cl_k_f32_from_float, .dot = cl_k_sdot_f32}},
    [CL_GGML_F16] = {.vec_dot_type = CL_GGML_F16,
                     .at[CL_CPU_SCALAR] = {.to_float = cl_k_f16_to_float, .from_float_ref = cl_k_f16_from_float, .from_float = cl_k_f16_from_float, .dot = cl_k_sdot_f16}},
    [CL_GGML_BF16] = {.vec_dot_type = CL_GGML_BF16,
                      .at[CL_CPU_SCALAR] = {.to_float = cl_k_bf16_to_float, .from_float_ref = cl_k_bf16_from_float, .from_float = cl_k_bf16_from_float, .dot = cl_k_sdot_bf16}},
    CL_K_WEIGHT(CL_GGML_Q4_0, CL_GGML_Q8_0, cl_k_deq_q4_0, cl_k_q4_0_ref, cl_k_dot_q4_0),
    CL_K_WEIGHT(CL_GGML_Q4_1, CL_GGML_Q8_1, cl_k_deq_q4_1, cl_k_q4_1_ref, cl_k_dot_q4_1),
    CL_K_WEIGHT(CL_GGML_Q5_0, CL_GGML_Q8_0, cl_k_deq_q5_0, cl_k_q5_0_ref, cl_k_dot_q5_0),
    CL_K_WEIGHT(CL_GGML_Q5_1, CL_GGML_Q8_1, cl_k_deq_q5_1, cl_k_q5_1_ref, cl_k_dot_q5_1),
    CL_K_WEIGHT(CL_GGML_Q4_K, CL_GGML_Q8_K, cl_k_deq_q4_k, cl_k_q4_k_ref, cl_k_dot_q4_k),
    CL_K_WEIGHT(CL_GGML_Q5_K, CL_GGML_Q8_K, cl_k_deq_q5_k, cl_k_q5_k_ref, cl_k_dot_q5_k),
    CL_K_WEIGHT(CL_GGML_Q6_K, CL_GGML_Q8_K, cl_k_deq_q6_k, cl_k_q6_k_ref, cl_k_dot_q6_k),
    /* Q8_0 is both a weight and an activation type; Q8_1 and Q8_K are only
     * activations. Their from_float (ggml's x86 one) differs from _ref in the
     * last bit for Q8_0/Q8_1; for Q8_K it is the reference quantizer. */
    [CL_GGML_Q8_0] = {.vec_dot_type = CL_GGML_Q8_0,
                      .at[CL_CPU_SCALAR] = {.to_float = cl_k_deq_q8_0, .from_float_ref = cl_k_q8_0_ref, .from_float = cl_k_act_q8_0_scalar, .dot = cl_k_dot_q8_0}},
    [CL_GGML_Q8_1] = {.vec_dot_type = CL_GGML_TYPE_COUNT,
                      .at[CL_CPU_SCALAR] = {.to_float = cl_k_deq_q8_1, .from_float_ref = cl_k_q8_1_ref, .from_float = cl_k_act_q8_1_scalar, .dot = NULL}},
    [CL_GGML_Q8_K] = {.vec_dot_type = CL_GGML_TYPE_COUNT,
                      .at[CL_CPU_SCALAR] = {.to_float = cl_k_deq_q8_k, .from_float_ref = cl_k_act_q8_k_scalar, .from_float = cl_k_act_q8_k_scalar, .dot = NULL}},
};

/* The float helpers per level, laid out like the type table's levels. */
static struct cl_k_vec_fns cl_k_vec_at[CL_CPU_COUNT];

static const struct cl_k_path *const cl_k_paths[] = {&cl_k_avx2_path, &cl_k_avx512_path};

/* A path's kernel, where it has one, replaces the lower level's. */
#define CL_K_OVER(dst, src, field)       \
    do {                                 \
        if ((src)->field)                \
            (dst)->field = (src)->field; \
    } while (0)

static void cl_k_type_init(void)
{
    /* the VNNI flag is fixed by the hardware; only the level is capped */
    __builtin_cpu_init();
    const bool vnni = __builtin_cpu_supports("avx512vnni");
    for (uint32_t t = 0; t < CL_GGML_TYPE_COUNT; t++) {
        struct cl_k_type *ty = &cl_k_types[t];
        const struct cl_ggml_type_info *ti = cl_ggml_type_info(t);
        if (ti) {
            ty->name = ti->name;
            ty->block_elems = ti->block_elems;
            ty->block_bytes = ti->block_bytes;
        }
        if (!ty->at[CL_CPU_SCALAR].to_float) /* no kernels (Q2_K, I8, ...): not a weight type */
            ty->vec_dot_type = CL_GGML_TYPE_COUNT;
        if (ty->at[CL_CPU_SCALAR].dot)
            ty->at[CL_CPU_SCALAR].dot_path = "scalar";
    }
    cl_k_vec_at[CL_CPU_SCALAR] = cl_k_vec_scalar;
    for (int l = CL_CPU_SCALAR + 1; l < CL_CPU_COUNT; l++) {
        for (uint32_t t = 0; t < CL_GGML_TYPE_COUNT; t++)
            cl_k_types[t].at[l] = cl_k_types[t].at[l - 1];
        cl_k_vec_at[l] = cl_k_vec_at[l - 1];
        for (size_t p = 0; p < sizeof(cl_k_paths) / sizeof(cl_k_paths[0]); p++) {
            const struct cl_k_path *path = cl_k_paths[p];
            if ((int)path->level != l || (path->needs_vnni && !vnni))
                continue;
            for (uint32_t t = 0; t < CL_GGML_TYPE_COUNT; t++) {
                struct cl_k_kern *k = &cl_k_types[t].at[l];
                const struct cl_k_kern *o = &path->kern[t];
                /* a path only adds kernels to types the scalar table has */
                if (!cl_k_types[t].at[CL_CPU_SCALAR].to_float)
                    continue;
                CL_K_OVER(k, o, to_float);
                CL_K_OVER(k, o, from_float_ref);
                CL_K_OVER(k, o, from_float);
                if (o->dot) { /* dot and mm come from one path, so a tile and its dot agree */
                    k->dot = o->dot;
                    k->mm = o->mm;
                    k->mm16 = o->mm16;
                    k->dot_path = path->name;
                }
            }
            struct cl_k_vec_fns *v = &cl_k_vec_at[l];
            CL_K_OVER(v, &path->vec, axpy_f32);
            CL_K_OVER(v, &path->vec, axpy_f16);
            CL_K_OVER(v, &path->vec, scale_f32);
            CL_K_OVER(v, &path->vec, add_f32);
            CL_K_OVER(v, &path->vec, mul_f32);
        }
    }
}

static pthread_once_t cl_k_type_once = PTHREAD_ONCE_INIT;

static inline enum cl_cpu_level cl_k_level(void)
{
    pthread_once(&cl_k_type_once, cl_k_type_init);
    enum cl_cpu_level lvl = cl_cpu_level();
    return lvl > CL_CPU_NONE && lvl < CL_CPU_COUNT ? lvl : CL_CPU_SCALAR;
}

const struct cl_k_type *cl_k_type(uint32_t type)
{
    pthread_once(&cl_k_type_once, cl_k_type_init);
    return type < CL_GGML_TYPE_COUNT ? &cl_k_types[type] : NULL;
}

const struct cl_k_kern *cl_k_kern_now(uint32_t type)
{
    enum cl_cpu_level lvl = cl_k_level();
    return &cl_k_types[type].at[lvl];
}

const struct cl_k_vec_fns *cl_k_vec_now(void) { return &cl_k_vec_at[cl_k_level()]; }

/* ------------------------------------------------------------ type queries */

bool cl_k_weight_type_ok(uint32_t type)
{
    const struct cl_k_type *t = cl_k_type(type);
    return t && t->at[CL_CPU_SCALAR].dot;
}

uint32_t cl_k_vec_dot_type(uint32_t wtype)
{
    const struct cl_k_type *t = cl_k_type(wtype);
    return t ? t->vec_dot_type : CL_GGML_TYPE_COUNT;
}

size_t cl_k_row_bytes(uint32_t type, size_t n)
{
    const struct cl_k_type *t = cl_k_type(type);
    if (!t || !t->name || n % t->block_elems)
        return 0;
    size_t nb = n / t->block_elems;
    if (nb > SIZE_MAX / t->block_bytes)
        return 0;
    return nb * t->block_bytes;
}

cl_err cl_k_check(uint32_t type, size_t n)
{
    if (!cl_k_weight_type_ok(type))
        return cl_err_fail(CL_E_INFER_K_TYPE, "weight type id %u", (unsigned)type);
    const struct cl_k_type *t = cl_k_type(type);
    if (n == 0 || n % t->block_elems || cl_k_row_bytes(type, n) == 0)
        return cl_err_fail(CL_E_INFER_K_LENGTH, "n %zu for %s (block %u)", n, t->name, (unsigned)t->block_elems);
    return CL_OK;
}

/* ------------------------------------------------------------ conversions */

enum cl_k_row_op { CL_K_ROW_NONE = 0, CL_K_ROW_DEQUANTIZE, CL_K_ROW_QUANTIZE, CL_K_ROW_ACT, CL_K_ROW_COUNT };

/* One row conversion through the table, after the checks they all make. */
static cl_err cl_k_row(enum cl_k_row_op op, uint32_t type, const void *src, void *dst, size_t n)
{
    cl_err rc = CL_OK;
    const struct cl_k_type *t = cl_k_type(type);
    CL_ENSURE_D(t && t->name, CL_E_INFER_K_TYPE, "type id %u", (unsigned)type);
    CL_ENSURE_D(n && n % t->block_elems == 0, CL_E_INFER_K_LENGTH, "n %zu for %s (block %u)", n, t->name,
                (unsigned)t->block_elems);
    CL_ENSURE_D(src && dst, CL_E_INFER_K_ARG, "NULL %s", !src ? "src" : "dst");
    const struct cl_k_kern *k = cl_k_kern_now(type);
    if (op == CL_K_ROW_DEQUANTIZE) {
        CL_ENSURE_D(k->to_float, CL_E_INFER_K_TYPE, "dequantize %s", t->name);
        k->to_float(src, dst, n);
    } else {
        cl_k_from_float_fn from = op == CL_K_ROW_QUANTIZE ? k->from_float_ref : k->from_float;
        CL_ENSURE_D(from, CL_E_INFER_K_TYPE, "%s %s", op == CL_K_ROW_QUANTIZE ? "quantize" : "activation type",
                    t->name);
        from(src, dst, n);
    }
out:
    return rc;
}

cl_err cl_k_dequantize_row(uint32_t type, const void *src, float *dst, size_t n)
{
    return cl_k_row(CL_K_ROW_DEQUANTIZE, type, src, dst, n);
}

cl_err cl_k_quantize_row(uint32_t type, const float *src, void *dst, size_t n)
{
    return cl_k_row(CL_K_ROW_QUANTIZE, type, src, dst, n);
}

cl_err cl_k_act_quantize(uint32_t act_type, const float *src, void *dst, size_t n)
{
    return cl_k_row(CL_K_ROW_ACT, act_type, src, dst, n);
}

/* The public row conversions of kernels.h, through the table. */
void cl_k_fp16_to_fp32_row(const uint16_t *src, float *dst, size_t n) { cl_k_kern_now(CL_GGML_F16)->to_float(src, dst, n); }
void cl_k_fp32_to_fp16_row(const float *src, uint16_t *dst, size_t n) { cl_k_kern_now(CL_GGML_F16)->from_float(src, dst, n); }
void cl_k_bf16_to_fp32_row(const uint16_t *src, float *dst, size_t n) { cl_k_kern_now(CL_GGML_BF16)->to_float(src, dst, n); }
void cl_k_fp32_to_bf16_row(const float *src, uint16_t *dst, size_t n) { cl_k_kern_now(CL_GGML_BF16)->from_float(src, dst, n); }
