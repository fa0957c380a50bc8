/* Random-weight GGUF models at real shapes for benchmarks and tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/infer/kernels.h"
#include "cloister/infer/model_mk.h"
#include "cloister/infer/pool.h"

static void cl_mk_defaults(enum cl_model_arch arch, struct cl_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    s->arch = arch;
    s->n_embd = 64;
    s->n_layer = 2;
    s->n_head = 4;
    s->n_head_kv = 2;
    s->head_dim = arch == CL_MODEL_ARCH_GEMMA3 ? 32 : 16;
    s->n_ff = 128;
    s->n_vocab = 32000;
    s->n_ctx = 256;
    s->rope_base = arch == CL_MODEL_ARCH_GEMMA3 ? 1e6f : 1e4f;
    s->rope_base_local = 1e4f;
    s->rope_scale = arch == CL_MODEL_ARCH_GEMMA3 ? 8.0f : 1.0f;
    s->sliding_window = arch == CL_MODEL_ARCH_GEMMA3 ? 32 : 0;
    s->swa_pattern = arch == CL_MODEL_ARCH_GEMMA3 ? 2 : 0;
}

static bool cl_mk_named(const char *name, size_t len, struct cl_model_shape *s)
{
    if (len == 4 && !memcmp(name, "tiny", 4))
        return true;
    if (len == 9 && !memcmp(name, "gemma3-1b", 9)) {
        s->n_embd = 1152, s->n_layer = 26, s->n_head = 4, s->n_head_kv = 1, s->head_dim = 256, s->n_ff = 6912;
        s->n_ctx = 4096, s->sliding_window = 512, s->swa_pattern = 6, s->rope_scale = 1.0f;
        s->rope_base = 1e6f, s->rope_base_local = 1e4f;
        return true;
    }
    if (len == 8 && !memcmp(name, "llama-1b", 8)) {
        s->n_embd = 2048, s->n_layer = 16, s->n_head = 32, s->n_head_kv = 8, s->head_dim = 64, s->n_ff = 5632;
        s->n_ctx = 2048, s->rope_scale = 1.0f, s->rope_base = 1e4f;
        return true;
    }
    return false;
}

cl_err cl_model_shape_parse(enum cl_model_arch arch, const char *spec, struct cl_model_shape *out)
{
    cl_err rc = CL_OK;
    struct cl_model_shape s;
    CL_ENSURE_D(arch == CL_MODEL_ARCH_LLAMA || arch == CL_MODEL_ARCH_GEMMA3, CL_E_INFER_MODEL_ARCH,
                "arch must be llama or gemma3");
    CL_ENSURE_D(spec && *spec, CL_E_CORE_INVALID_ARG, "empty shape");
    cl_mk_defaults(arch, &s);
    const char *p = spec;
    bool first = true;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq) {
            CL_ENSURE_D(first && cl_mk_named(p, len, &s), CL_E_CORE_INVALID_ARG,
                        "shape: unknown name (use tiny, gemma3-1b, llama-1b or key=value)");
        } else {
            char key[16], val[32];
            size_t kl = (size_t)(eq - p), vl = len - kl - 1;
            CL_ENSURE_D(kl > 0 && kl < sizeof(key) && vl > 0 && vl < sizeof(val), CL_E_CORE_INVALID_ARG,
                        "shape: malformed key=value at offset %zu", (size_t)(p - spec));
            memcpy(key, p, kl);
            key[kl] = 0;
            memcpy(val, eq + 1, vl);
            val[vl] = 0;
            char *end;
            double d = strtod(val, &end);
            CL_ENSURE_D(*end == 0 && d >= 0 && d <= 1e9, CL_E_CORE_INVALID_ARG, "shape: bad value for %s", key);
            uint32_t u = (uint32_t)d;
            static const char *const ukeys[] = {"embd", "layers", "heads", "kv", "hd", "ff", "vocab", "ctx", "swa",
                                                "pattern"};
            uint32_t *dst[] = {&s.n_embd, &s.n_layer, &s.n_head, &s.n_head_kv, &s.head_dim, &s.n_ff, &s.n_vocab,
                               &s.n_ctx, &s.sliding_window, &s.swa_pattern};
            bool found = false;
            for (size_t i = 0; i < sizeof(ukeys) / sizeof(ukeys[0]); i++)
                if (!strcmp(key, ukeys[i])) {
                    CL_ENSURE_D((double)u == d, CL_E_CORE_INVALID_ARG, "shape: %s must be an integer", key);
                    *dst[i] = u;
                    found = true;
                }
            if (!strcmp(key, "rope_base"))
                s.rope_base = (float)d, found = true;
            else if (!strcmp(key, "rope_local"))
                s.rope_base_local = (float)d, found = true;
            else if (!strcmp(key, "rope_scale"))
                s.rope_scale = (float)d, found = true;
            CL_ENSURE_D(found, CL_E_CORE_INVALID_ARG, "shape: unknown key %s", key);
        }
        first = false;
        p += len;
        if (*p == ',')
            p++;
    }
    CL_ENSURE_D(s.n_embd && s.n_layer && s.n_head && s.n_head_kv && s.head_dim && s.n_ff && s.n_vocab >= 260 &&
                    s.n_ctx && s.n_head % s.n_head_kv == 0 && s.head_dim % 2 == 0 && s.rope_base > 0 &&
                    s.rope_base_local > 0 && s.rope_scale > 0,
                CL_E_INFER_MODEL_HPARAMS, "shape: sizes must be positive, vocab >= 260, heads a multiple of kv heads");
    CL_ENSURE_D(s.n_layer <= CL_MODEL_MAX_LAYERS && s.n_embd <= 65536 && s.n_ff <= 262144 && s.head_dim <= 1024 &&
                    s.n_head <= 1024 && s.n_vocab <= 1048576,
                CL_E_INFER_MODEL_HPARAMS, "shape: a size exceeds its limit");
    if (arch == CL_MODEL_ARCH_GEMMA3)
        CL_ENSURE_D(s.sliding_window > 0, CL_E_INFER_MODEL_HPARAMS, "shape: gemma3 needs swa > 0");
    *out = s;
out:
    return rc;
}

enum cl_model_mk_type cl_model_mk_type_parse(const char *s)
{
    static const char *const names[CL_MODEL_MK_COUNT] = {NULL, "f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"};
    for (int i = 1; i < CL_MODEL_MK_COUNT; i++)
        if (s && !strcmp(s, names[i]))
            return (enum cl_model_mk_type)i;
    if (s && !strcmp(s, "q4_k_m"))
        return CL_MODEL_MK_Q4_K;
    return CL_MODEL_MK_NONE;
}

/* llama.cpp's use_more_bits(): the first and last eighth and every third layer between. */
static bool cl_mk_more_bits(uint32_t i, uint32_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* Tensor type as llama-quantize picks it (no imatrix). role: 0 plain, 1 output head, 2 attn_v, 3 ffn_down. */
static uint32_t cl_mk_pick(enum cl_model_mk_type t, int role, uint32_t layer, uint32_t n_layer, uint32_t ne0)
{
    uint32_t ty;
    switch (t) {
    case CL_MODEL_MK_F32: return CL_GGML_F32;
    case CL_MODEL_MK_F16: return CL_GGML_F16;
    case CL_MODEL_MK_Q8_0: return CL_GGML_Q8_0;
    case CL_MODEL_MK_Q4_0: ty = CL_GGML_Q4_0; break;
    case CL_MODEL_MK_Q6_K: ty = CL_GGML_Q6_K; break;
    default:
        ty = CL_GGML_Q4_K;
        if ((role == 2 || role == 3) && cl_mk_more_bits(layer, n_layer))
            ty = CL_GGML_Q6_K;
        break;
    }
    if (role == 1)
        ty = ne0 % CL_K_QK_K ? CL_GGML_Q8_0 : CL_GGML_Q6_K;
    if (ne0 % CL_K_QK_K) {
        if (ty == CL_GGML_Q4_K)
            ty = CL_GGML_Q5_0;
        else if (ty == CL_GGML_Q6_K)
            ty = CL_GGML_Q8_0;
    }
    if (ne0 % CL_K_QK)
        ty = CL_GGML_F16;
    return ty;
}

static uint64_t cl_mk_next(uint64_t *st)
{
    /* splitmix64: rows seeded independently so threads can fill in parallel */
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct cl_mk_fill {
    uint8_t *dst;
    uint32_t type;
    uint32_t ne0, ne1;
    size_t rb;
    float scale;
    uint64_t seed;
    float *rows; /* per thread ne0 floats */
    cl_err rc[CL_POOL_MAX_THREADS];
};

static void cl_mk_fill_worker(void *arg, unsigned ith, unsigned nth)
{
    struct cl_mk_fill *f = arg;
    size_t lo, hi;
    float *row = f->rows + (size_t)ith * f->ne0;
    cl_pool_split(f->ne1, 1, ith, nth, &lo, &hi);
    for (size_t r = lo; r < hi && f->rc[ith] == CL_OK; r++) {
        uint64_t st = f->seed ^ (r * 0x2545f4914f6cdd1dull);
        for (uint32_t i = 0; i < f->ne0; i++) {
            /* sum of two uniforms: a cheap bell shape in [-scale, scale] */
            uint64_t v = cl_mk_next(&st);
            float a = (float)(v & 0xffffffu) / 16777216.0f, b = (float)((v >> 32) & 0xffffffu) / 16777216.0f;
            row[i] = (a + b - 1.0f) * f->scale;
        }
        f->rc[ith] = cl_k_quantize_row(f->type, row, f->dst + r * f->rb, f->ne0);
    }
}

struct cl_mk {
    const struct cl_model_mk_opts *o;
    cl_gguf_writer *w;
    struct cl_pool *pool;
    float *rows;
    uint64_t n_tensor;
};

static cl_err cl_mk_matrix(struct cl_mk *m, const char *name, uint32_t ne0, uint32_t ne1, uint32_t type, float scale)
{
    cl_err rc = CL_OK;
    void *data = NULL;
    int64_t ne[2] = {ne0, ne1};
    m->n_tensor++;
    if (m->o->omit && !strcmp(m->o->omit, name))
        return CL_OK;
    CL_GUARD(cl_gguf_writer_add_tensor_alloc(m->w, name, type, 2, ne, &data));
    struct cl_mk_fill f = {.dst = data, .type = type, .ne0 = ne0, .ne1 = ne1, .rb = cl_k_row_bytes(type, ne0),
                           .scale = scale, .seed = m->o->seed * 0x9e3779b97f4a7c15ull + m->n_tensor * 0x632be59bd9b4e019ull,
                           .rows = m->rows};
    CL_ENSURE_D(f.rb > 0, CL_E_INFER_MODEL_TYPE, "tensor %s: type %u at width %u", name, type, ne0);
    cl_pool_run(m->pool, cl_mk_fill_worker, &f);
    for (unsigned i = 0; i < cl_pool_threads(m->pool); i++)
        CL_GUARD(f.rc[i]);
out:
    return rc;
}

static cl_err cl_mk_norm(struct cl_mk *m, const char *name, uint32_t n, float value)
{
    cl_err rc = CL_OK;
    void *data = NULL;
    int64_t ne[1] = {n};
    if (m->o->omit && !strcmp(m->o->omit, name))
        return CL_OK;
    CL_GUARD(cl_gguf_writer_add_tensor_alloc(m->w, name, CL_GGML_F32, 1, ne, &data));
    for (uint32_t i = 0; i < n; i++)
        ((float *)data)[i] = value;
out:
    return rc;
}

static bool cl_mk_omit(const struct cl_mk *m, const char *key) { return m->o->omit && !strcmp(m->o->omit, key); }

static cl_err cl_mk_u32(struct cl_mk *m, const char *arch, const char *suffix, uint32_t v)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return cl_mk_omit(m, key) ? CL_OK : cl_gguf_writer_add_u32(m->w, key, v);
}

static cl_err cl_mk_f32(struct cl_mk *m, const char *arch, const char *suffix, float v)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return cl_mk_omit(m, key) ? CL_OK : cl_gguf_writer_add_f32(m->w, key, v);
}

/* Copies one key of any type from the vocabulary file. */
static cl_err cl_mk_copy_kv(struct cl_mk *m, const cl_gguf *src, const struct cl_gguf_kv *kv)
{
    cl_err rc = CL_OK;
    struct cl_gguf_str *strs = NULL;
    char **z = NULL;
    size_t n = 0;
    switch (kv->type) {
    case CL_GGUF_STRING: {
        struct cl_gguf_str s;
        CL_GUARD(cl_gguf_get_str(src, kv->key, &s));
        CL_GUARD(cl_gguf_writer_add_strn(m->w, kv->key, s.p, s.len));
        break;
    }
    case CL_GGUF_ARRAY:
        if (kv->arr_type == CL_GGUF_STRING) {
            CL_GUARD(cl_gguf_get_arr_str(src, kv->key, &strs, &n));
            z = calloc(n ? n : 1, sizeof(*z));
            CL_ENSURE(z, CL_E_CORE_NOMEM);
            for (size_t i = 0; i < n; i++) {
                z[i] = malloc(strs[i].len + 1);
                CL_ENSURE(z[i], CL_E_CORE_NOMEM);
                memcpy(z[i], strs[i].p, strs[i].len);
                z[i][strs[i].len] = 0;
                CL_ENSURE_D(strlen(z[i]) == strs[i].len, CL_E_CORE_UNSUPPORTED, "%s[%zu] holds a NUL byte", kv->key, i);
            }
            CL_GUARD(cl_gguf_writer_add_arr_str(m->w, kv->key, (const char *const *)z, n));
        } else {
            CL_ENSURE_D(kv->arr_type != CL_GGUF_ARRAY, CL_E_CORE_UNSUPPORTED, "%s: nested array", kv->key);
            CL_GUARD(cl_gguf_writer_add_arr(m->w, kv->key, kv->arr_type, kv->data, (size_t)kv->n));
        }
        break;
    case CL_GGUF_UINT8: CL_GUARD(cl_gguf_writer_add_u8(m->w, kv->key, kv->data[0])); break;
    case CL_GGUF_INT8: CL_GUARD(cl_gguf_writer_add_i8(m->w, kv->key, (int8_t)kv->data[0])); break;
    case CL_GGUF_BOOL: CL_GUARD(cl_gguf_writer_add_bool(m->w, kv->key, kv->data[0] != 0)); break;
    case CL_GGUF_UINT16: case CL_GGUF_INT16: {
        uint16_t v;
        memcpy(&v, kv->data, 2);
        CL_GUARD(kv->type == CL_GGUF_UINT16 ? cl_gguf_writer_add_u16(m->w, kv->key, v)
                                            : cl_gguf_writer_add_i16(m->w, kv->key, (int16_t)v));
        break;
    }
    case CL_GGUF_UINT32: case CL_GGUF_INT32: case CL_GGUF_FLOAT32: {
        uint32_t v;
        float f;
        memcpy(&v, kv->data, 4);
        memcpy(&f, kv->data, 4);
        CL_GUARD(kv->type == CL_GGUF_UINT32  ? cl_gguf_writer_add_u32(m->w, kv->key, v)
                 : kv->type == CL_GGUF_INT32 ? cl_gguf_writer_add_i32(m->w, kv->key, (int32_t)v)
                                             : cl_gguf_writer_add_f32(m->w, kv->key, f));
        break;
    }
    case CL_GGUF_UINT64: case CL_GGUF_INT64: case CL_GGUF_FLOAT64: {
        uint64_t v;
        double f;
        memcpy(&v, kv->data, 8);
        memcpy(&f, kv->data, 8);
        CL_GUARD(kv->type == CL_GGUF_UINT64  ? cl_gguf_writer_add_u64(m->w, kv->key, v)
                 : kv->type == CL_GGUF_INT64 ? cl_gguf_writer_add_i64(m->w, kv->key, (int64_t)v)
                                             : cl_gguf_writer_add_f64(m->w, kv->key, f));
        break;
    }
    default: CL_FAIL(CL_E_CORE_UNSUPPORTED, "%s: value type %u", kv->key, (unsigned)kv->type);
    }
out:
    if (z)
        for (size_t i = 0; i < n; i++)
            free(z[i]);
    free(z);
    free(strs);
    return rc;
}

/* A small SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then printable
 * ASCII pieces with and without the ▁ prefix, then filler pieces. */
static cl_err cl_mk_vocab(struct cl_mk *m, uint32_t n_vocab, bool space_prefix)
{
    cl_err rc = CL_OK;
    char **tok = calloc(n_vocab, sizeof(*tok));
    float *score = calloc(n_vocab, sizeof(*score));
    int32_t *type = calloc(n_vocab, sizeof(*type));
    CL_ENSURE(tok && score && type, CL_E_CORE_NOMEM);
    for (uint32_t i = 0; i < n_vocab; i++) {
        char b[32];
        if (i == 0)
            snprintf(b, sizeof(b), "<unk>"), type[i] = 2;
        else if (i == 1)
            snprintf(b, sizeof(b), "<s>"), type[i] = 3;
        else if (i == 2)
            snprintf(b, sizeof(b), "</s>"), type[i] = 3;
        else if (i < 259)
            snprintf(b, sizeof(b), "<0x%02X>", i - 3), type[i] = 6;
        else if (i < 259 + 95)
            snprintf(b, sizeof(b), "%c", (char)(' ' + (i - 259))), type[i] = 1;
        else if (i < 259 + 190)
            snprintf(b, sizeof(b), "\xe2\x96\x81%c", (char)(' ' + (i - 259 - 95))), type[i] = 1;
        else
            snprintf(b, sizeof(b), "\xe2\x96\x81w%u", i), type[i] = 1;
        if (!strcmp(b, " "))
            snprintf(b, sizeof(b), "\xe2\x96\x81"); /* SPM writes spaces as U+2581 */
        else if (!strcmp(b, "\xe2\x96\x81 "))
            snprintf(b, sizeof(b), "\xe2\x96\x81\xe2\x96\x81");
        tok[i] = strdup(b);
        CL_ENSURE(tok[i], CL_E_CORE_NOMEM);
        score[i] = type[i] == 1 ? -(float)i : 0.0f;
    }
    CL_GUARD(cl_gguf_writer_add_str(m->w, "tokenizer.ggml.model", "llama"));
    CL_GUARD(cl_gguf_writer_add_str(m->w, "tokenizer.ggml.pre", "default"));
    CL_GUARD(cl_gguf_writer_add_arr_str(m->w, "tokenizer.ggml.tokens", (const char *const *)tok, n_vocab));
    CL_GUARD(cl_gguf_writer_add_arr(m->w, "tokenizer.ggml.scores", CL_GGUF_FLOAT32, score, n_vocab));
    CL_GUARD(cl_gguf_writer_add_arr(m->w, "tokenizer.ggml.token_type", CL_GGUF_INT32, type, n_vocab));
    CL_GUARD(cl_gguf_writer_add_u32(m->w, "tokenizer.ggml.bos_token_id", 1));
    CL_GUARD(cl_gguf_writer_add_u32(m->w, "tokenizer.ggml.eos_token_id", 2));
    CL_GUARD(cl_gguf_writer_add_u32(m->w, "tokenizer.ggml.unknown_token_id", 0));
    CL_GUARD(cl_gguf_writer_add_bool(m->w, "tokenizer.ggml.add_bos_token", true));
    CL_GUARD(cl_gguf_writer_add_bool(m->w, "tokenizer.ggml.add_eos_token", false));
    CL_GUARD(cl_gguf_writer_add_bool(m->w, "tokenizer.ggml.add_space_prefix", space_prefix));
out:
    if (tok)
        for (uint32_t i = 0; i < n_vocab; i++)
            free(tok[i]);
    free(tok);
    free(score);
    free(type);
    return rc;
}

static uint32_t cl_mk_file_type(enum cl_model_mk_type t)
{
    switch (t) {
    case CL_MODEL_MK_F32: return 0;
    case CL_MODEL_MK_F16: return 1;
    case CL_MODEL_MK_Q4_0: return 2;
    case CL_MODEL_MK_Q8_0: return 7;
    case CL_MODEL_MK_Q4_K: return 15; /* MOSTLY_Q4_K_M */
    default: return 18;               /* MOSTLY_Q6_K */
    }
}

cl_err cl_model_mk(const struct cl_model_mk_opts *o, cl_gguf_writer **out)
{
    cl_err rc = CL_OK;
    struct cl_mk m = {.o = o};
    const struct cl_model_shape *s = &o->shape;
    const char *arch = cl_model_arch_name(s->arch);
    bool gemma = s->arch == CL_MODEL_ARCH_GEMMA3;
    char name[96];
    CL_ENSURE_D(s->arch == CL_MODEL_ARCH_LLAMA || gemma, CL_E_INFER_MODEL_ARCH, "arch must be llama or gemma3");
    CL_ENSURE_D(o->type > CL_MODEL_MK_NONE && o->type < CL_MODEL_MK_COUNT, CL_E_CORE_INVALID_ARG, "weight type");
    CL_GUARD(cl_pool_new(o->threads ? o->threads : 1, &m.pool));
    {
        uint32_t widest = s->n_embd;
        uint32_t cand[] = {s->n_ff, s->n_head * s->head_dim};
        for (size_t i = 0; i < 2; i++)
            widest = cand[i] > widest ? cand[i] : widest;
        m.rows = malloc((size_t)widest * cl_pool_threads(m.pool) * sizeof(float));
        CL_ENSURE(m.rows, CL_E_CORE_NOMEM);
    }
    CL_GUARD(cl_gguf_writer_new(0, &m.w));

    CL_GUARD(cl_gguf_writer_add_str(m.w, "general.architecture", arch));
    CL_GUARD(cl_gguf_writer_add_str(m.w, "general.name", gemma ? "cloister-random-gemma3" : "cloister-random-llama"));
    CL_GUARD(cl_gguf_writer_add_u32(m.w, "general.file_type", cl_mk_file_type(o->type)));
    CL_GUARD(cl_gguf_writer_add_u32(m.w, "general.quantization_version", 2));
    CL_GUARD(cl_mk_u32(&m, arch, "context_length", s->n_ctx));
    CL_GUARD(cl_mk_u32(&m, arch, "embedding_length", s->n_embd));
    CL_GUARD(cl_mk_u32(&m, arch, "block_count", s->n_layer));
    CL_GUARD(cl_mk_u32(&m, arch, "feed_forward_length", o->ff_key ? o->ff_key : s->n_ff));
    CL_GUARD(cl_mk_u32(&m, arch, "attention.head_count", s->n_head));
    CL_GUARD(cl_mk_u32(&m, arch, "attention.head_count_kv", s->n_head_kv));
    CL_GUARD(cl_mk_u32(&m, arch, "attention.key_length", s->head_dim));
    CL_GUARD(cl_mk_u32(&m, arch, "attention.value_length", s->head_dim));
    CL_GUARD(cl_mk_f32(&m, arch, "attention.layer_norm_rms_epsilon", gemma ? 1e-6f : 1e-5f));
    CL_GUARD(cl_mk_f32(&m, arch, "rope.freq_base", s->rope_base));
    if (gemma) {
        CL_GUARD(cl_mk_f32(&m, arch, "rope.freq_base_swa", s->rope_base_local));
        CL_GUARD(cl_mk_u32(&m, arch, "attention.sliding_window", s->sliding_window));
        CL_GUARD(cl_mk_u32(&m, arch, "attention.sliding_window_pattern", s->swa_pattern));
    } else {
        CL_GUARD(cl_mk_u32(&m, arch, "rope.dimension_count", s->head_dim));
        CL_GUARD(cl_mk_u32(&m, arch, "vocab_size", s->n_vocab));
    }
    if (s->rope_scale != 1.0f) {
        snprintf(name, sizeof(name), "%s.rope.scaling.type", arch);
        CL_GUARD(cl_gguf_writer_add_str(m.w, name, "linear"));
        CL_GUARD(cl_mk_f32(&m, arch, "rope.scaling.factor", s->rope_scale));
    }
    if (o->vocab) {
        const struct cl_gguf_kv *tk = cl_gguf_find_kv(o->vocab, "tokenizer.ggml.tokens");
        CL_ENSURE_D(tk && tk->n == s->n_vocab, CL_E_INFER_MODEL_HPARAMS,
                    "vocabulary file has %llu tokens, shape vocab is %u", tk ? (unsigned long long)tk->n : 0ull,
                    s->n_vocab);
        for (size_t i = 0; i < cl_gguf_n_kv(o->vocab); i++) {
            const struct cl_gguf_kv *kv = cl_gguf_kv_at(o->vocab, i);
            if (!strncmp(kv->key, "tokenizer.", 10))
                CL_GUARD(cl_mk_copy_kv(&m, o->vocab, kv));
        }
    } else {
        CL_GUARD(cl_mk_vocab(&m, s->n_vocab, !gemma));
    }

    uint32_t E = s->n_embd, qw = s->n_head * s->head_dim, kw = s->n_head_kv * s->head_dim, L = s->n_layer;
    float ws = 1.0f / sqrtf((float)E);
    /* ggml-order tensors as llama.cpp's converters write them */
    CL_GUARD(cl_mk_matrix(&m, "token_embd.weight", E, s->n_vocab,
                          cl_mk_pick(o->type, gemma ? 1 : 0, 0, L, E), gemma ? 0.1f : 1.0f));
    for (uint32_t il = 0; il < L; il++) {
#define CL_MK_NAME(suffix) (snprintf(name, sizeof(name), "blk.%u." suffix, il), name)
        CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("attn_norm.weight"), E, 1.0f));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("attn_q.weight"), E, qw, cl_mk_pick(o->type, 0, il, L, E), ws));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("attn_k.weight"), E, kw, cl_mk_pick(o->type, 0, il, L, E), ws));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("attn_v.weight"), E, kw, cl_mk_pick(o->type, 2, il, L, E), ws));
        if (gemma) {
            CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("attn_q_norm.weight"), s->head_dim, 1.0f));
            CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("attn_k_norm.weight"), s->head_dim, 1.0f));
        }
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("attn_output.weight"), qw, E, cl_mk_pick(o->type, 0, il, L, qw),
                              1.0f / sqrtf((float)qw)));
        if (gemma)
            CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("post_attention_norm.weight"), E, 1.0f));
        CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("ffn_norm.weight"), E, 1.0f));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("ffn_gate.weight"), E, s->n_ff, cl_mk_pick(o->type, 0, il, L, E), ws));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("ffn_up.weight"), E, s->n_ff, cl_mk_pick(o->type, 0, il, L, E), ws));
        CL_GUARD(cl_mk_matrix(&m, CL_MK_NAME("ffn_down.weight"), s->n_ff, E, cl_mk_pick(o->type, 3, il, L, s->n_ff),
                              1.0f / sqrtf((float)s->n_ff)));
        if (gemma)
            CL_GUARD(cl_mk_norm(&m, CL_MK_NAME("post_ffw_norm.weight"), E, 1.0f));
#undef CL_MK_NAME
    }
    CL_GUARD(cl_mk_norm(&m, "output_norm.weight", E, 1.0f));
    if (!gemma)
        CL_GUARD(cl_mk_matrix(&m, "output.weight", E, s->n_vocab, cl_mk_pick(o->type, 1, 0, L, E), ws));
    *out = m.w;
    m.w = NULL;
out:
    cl_gguf_writer_free(m.w);
    cl_pool_free(m.pool);
    free(m.rows);
    return rc;
}
