/* Random mmproj files for the Gemma 3 projector. The value scales keep the
 * activations in the ranges a trained SigLIP shows (unit-ish LayerNorm
 * outputs, modest residual growth), so encoder timings are representative. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/infer/kernels.h"
#include "cloister/infer/pool.h"
#include "cloister/infer/vision.h"
#include "cloister/infer/vision_mk.h"

static bool cl_vmk_named(const char *name, size_t len, struct cl_vision_shape *s)
{
    if (len == 4 && !memcmp(name, "tiny", 4)) {
        *s = (struct cl_vision_shape){224, 14, 32, 2, 2, 64, 64, 4};
        return true;
    }
    if (len == 11 && !memcmp(name, "medgemma-4b", 11)) {
        *s = (struct cl_vision_shape){896, 14, 1152, 27, 16, 4304, 2560, 4};
        return true;
    }
    return false;
}

cl_err cl_vision_shape_parse(const char *spec, struct cl_vision_shape *out)
{
    cl_err rc = CL_OK;
    struct cl_vision_shape s;
    CL_ENSURE_D(spec && out, CL_E_CORE_INVALID_ARG, "shape or out NULL");
    const char *p = spec, *comma = strchr(p, ',');
    size_t first = comma ? (size_t)(comma - p) : strlen(p);
    cl_vmk_named("tiny", 4, &s);
    if (first > 0 && !memchr(p, '=', first)) {
        CL_ENSURE_D(cl_vmk_named(p, first, &s), CL_E_CORE_INVALID_ARG,
                    "unknown projector shape (use tiny or medgemma-4b)");
        p = comma ? comma + 1 : p + first;
    }
    while (*p) {
        static const char *const keys[] = {"image", "patch", "embd", "layers", "heads", "ff", "proj", "scale"};
        uint32_t *dst[] = {&s.image_size, &s.patch_size, &s.n_embd, &s.n_layer,
                           &s.n_head,     &s.n_ff,       &s.proj_dim, &s.scale_factor};
        const char *end = strchr(p, ','), *eq = strchr(p, '=');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        CL_ENSURE_D(eq && eq < p + len, CL_E_CORE_INVALID_ARG, "shape override without '=' (key=value)");
        size_t kl = (size_t)(eq - p);
        bool found = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (strlen(keys[i]) != kl || memcmp(keys[i], p, kl))
                continue;
            char num[16];
            size_t nl = len - kl - 1;
            CL_ENSURE_D(nl > 0 && nl < sizeof(num), CL_E_CORE_INVALID_ARG, "shape key %s: bad value", keys[i]);
            memcpy(num, eq + 1, nl);
            num[nl] = 0;
            char *e = NULL;
            unsigned long v = strtoul(num, &e, 10);
            CL_ENSURE_D(*e == 0 && num[0] >= '0' && num[0] <= '9' && v > 0 && v <= 65536, CL_E_CORE_INVALID_ARG,
                        "shape key %s: value not an integer in 1..65536", keys[i]);
            *dst[i] = (uint32_t)v;
            found = true;
        }
        CL_ENSURE_D(found, CL_E_CORE_INVALID_ARG, "unknown shape key (image patch embd layers heads ff proj scale)");
        p = end ? end + 1 : p + len;
    }
    CL_ENSURE_D(s.image_size <= CL_VISION_MAX_IMAGE && s.patch_size <= 64 && s.image_size % s.patch_size == 0,
                CL_E_INFER_MODEL_HPARAMS, "patch %u must divide image %u (<= %u)", s.patch_size, s.image_size,
                CL_VISION_MAX_IMAGE);
    CL_ENSURE_D((s.image_size / s.patch_size) % s.scale_factor == 0, CL_E_INFER_MODEL_HPARAMS,
                "scale %u must divide the %u patches per side", s.scale_factor, s.image_size / s.patch_size);
    CL_ENSURE_D(s.n_embd % s.n_head == 0, CL_E_INFER_MODEL_HPARAMS, "heads %u must divide embd %u", s.n_head,
                s.n_embd);
    CL_ENSURE_D(s.n_embd <= CL_VISION_MAX_WIDTH && s.n_ff <= CL_VISION_MAX_WIDTH && s.proj_dim <= CL_VISION_MAX_WIDTH &&
                    s.n_layer <= CL_VISION_MAX_LAYERS,
                CL_E_INFER_MODEL_HPARAMS, "widths above %u or more than %u layers", CL_VISION_MAX_WIDTH,
                CL_VISION_MAX_LAYERS);
    *out = s;
out:
    return rc;
}

static uint64_t cl_vmk_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct cl_vmk {
    const struct cl_vision_mk_opts *o;
    cl_gguf_writer *w;
    struct cl_pool *pool;
    uint64_t n_tensor;
};

struct cl_vmk_fill {
    uint8_t *dst;
    uint32_t type;
    size_t ne0, ne1, rb;
    float scale, offset;
    uint64_t seed;
    float *rows;
    cl_err rc[CL_POOL_MAX_THREADS];
};

static void cl_vmk_fill_worker(void *arg, unsigned ith, unsigned nth)
{
    struct cl_vmk_fill *f = arg;
    size_t lo, hi;
    float *row = f->rows + (size_t)ith * f->ne0;
    cl_pool_split(f->ne1, 1, ith, nth, &lo, &hi);
    for (size_t r = lo; r < hi && f->rc[ith] == CL_OK; r++) {
        uint64_t st = f->seed ^ (r * 0x2545f4914f6cdd1dull);
        for (size_t i = 0; i < f->ne0; i++) {
            uint64_t v = cl_vmk_next(&st);
            float a = (float)(v & 0xffffffu) / 16777216.0f, b = (float)((v >> 32) & 0xffffffu) / 16777216.0f;
            row[i] = f->offset + (a + b - 1.0f) * f->scale;
        }
        f->rc[ith] = cl_k_quantize_row(f->type, row, f->dst + r * f->rb, f->ne0);
    }
}

/* A tensor of n_dims dims (ne0 elements per row, rows = product of the rest). */
static cl_err cl_vmk_tensor(struct cl_vmk *m, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne,
                            float scale, float offset)
{
    cl_err rc = CL_OK;
    void *data = NULL;
    float *rows = NULL;
    m->n_tensor++;
    if (m->o->omit && !strcmp(m->o->omit, name))
        return CL_OK;
    size_t ne1 = 1;
    for (uint32_t i = 1; i < n_dims; i++)
        ne1 *= (size_t)ne[i];
    CL_GUARD(cl_gguf_writer_add_tensor_alloc(m->w, name, type, n_dims, ne, &data));
    rows = malloc((size_t)ne[0] * cl_pool_threads(m->pool) * sizeof(float));
    CL_ENSURE(rows, CL_E_CORE_NOMEM);
    struct cl_vmk_fill f = {.dst = data, .type = type, .ne0 = (size_t)ne[0], .ne1 = ne1,
                            .rb = cl_k_row_bytes(type, (size_t)ne[0]), .scale = scale, .offset = offset,
                            .seed = m->o->seed * 0x9e3779b97f4a7c15ull + m->n_tensor * 0x632be59bd9b4e019ull,
                            .rows = rows};
    CL_ENSURE_D(f.rb > 0, CL_E_INFER_MODEL_TYPE, "tensor %s: type %u at width %lld", name, type, (long long)ne[0]);
    cl_pool_run(m->pool, cl_vmk_fill_worker, &f);
    for (unsigned i = 0; i < cl_pool_threads(m->pool); i++)
        CL_GUARD(f.rc[i]);
out:
    free(rows);
    return rc;
}

static cl_err cl_vmk_mat(struct cl_vmk *m, const char *name, uint32_t ne0, uint32_t ne1, uint32_t type)
{
    int64_t ne[2] = {ne0, ne1};
    return cl_vmk_tensor(m, name, type, 2, ne, 1.7f / sqrtf((float)ne0), 0.0f);
}

static cl_err cl_vmk_vec(struct cl_vmk *m, const char *name, uint32_t n, float scale, float offset)
{
    int64_t ne[1] = {n};
    return cl_vmk_tensor(m, name, CL_GGML_F32, 1, ne, scale, offset);
}

static bool cl_vmk_omit(const struct cl_vmk *m, const char *key) { return m->o->omit && !strcmp(m->o->omit, key); }

static cl_err cl_vmk_u32(struct cl_vmk *m, const char *key, uint32_t v)
{
    return cl_vmk_omit(m, key) ? CL_OK : cl_gguf_writer_add_u32(m->w, key, v);
}

cl_err cl_vision_mk(const struct cl_vision_mk_opts *o, cl_gguf_writer **out)
{
    cl_err rc = CL_OK;
    struct cl_vmk m = {.o = o};
    char name[96];
    CL_ENSURE_D(o && out, CL_E_CORE_INVALID_ARG, "options or out NULL");
    const struct cl_vision_shape *s = &o->shape;
    uint32_t wt = o->type;
    CL_ENSURE_D(wt == CL_GGML_F32 || wt == CL_GGML_F16 || wt == CL_GGML_Q8_0, CL_E_CORE_INVALID_ARG,
                "projector weight type must be f32, f16 or q8_0");
    /* Q8_0 needs rows of 32: fall back to F16 for narrower rows, as llama-quantize does */
    uint32_t wt_e = (wt == CL_GGML_Q8_0 && s->n_embd % 32) ? CL_GGML_F16 : wt;
    uint32_t wt_f = (wt == CL_GGML_Q8_0 && s->n_ff % 32) ? CL_GGML_F16 : wt;
    uint32_t P = s->patch_size, E = s->n_embd, ns = s->image_size / s->patch_size;
    /* as llama.cpp's converter writes a Gemma 3 projector: the embeddings (patch
     * kernel, positions) always F32, the input projection F16 unless the file is F32 */
    uint32_t wt_small = wt == CL_GGML_F32 ? CL_GGML_F32 : CL_GGML_F16;
    CL_GUARD(cl_pool_new(o->threads ? o->threads : 1, &m.pool));
    CL_GUARD(cl_gguf_writer_new(0, &m.w));
    CL_GUARD(cl_gguf_writer_add_str(m.w, "general.architecture", "clip"));
    CL_GUARD(cl_gguf_writer_add_str(m.w, "general.type", "mmproj"));
    CL_GUARD(cl_gguf_writer_add_str(m.w, "general.name", "cloister-random-mmproj-gemma3"));
    CL_GUARD(cl_gguf_writer_add_u32(m.w, "general.file_type", wt == CL_GGML_F32 ? 0 : wt == CL_GGML_F16 ? 1 : 7));
    CL_GUARD(cl_gguf_writer_add_bool(m.w, "clip.has_vision_encoder", true));
    if (!cl_vmk_omit(&m, "clip.projector_type"))
        CL_GUARD(cl_gguf_writer_add_str(m.w, "clip.projector_type", "gemma3"));
    CL_GUARD(cl_gguf_writer_add_bool(m.w, "clip.use_gelu", true));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.projection_dim", s->proj_dim));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.image_size", s->image_size));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.patch_size", s->patch_size));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.embedding_length", s->n_embd));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.feed_forward_length", s->n_ff));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.block_count", s->n_layer));
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.attention.head_count", s->n_head));
    if (!cl_vmk_omit(&m, "clip.vision.attention.layer_norm_epsilon"))
        CL_GUARD(cl_gguf_writer_add_f32(m.w, "clip.vision.attention.layer_norm_epsilon", 1e-6f));
    {
        const float half[3] = {0.5f, 0.5f, 0.5f};
        CL_GUARD(cl_gguf_writer_add_arr(m.w, "clip.vision.image_mean", CL_GGUF_FLOAT32, half, 3));
        CL_GUARD(cl_gguf_writer_add_arr(m.w, "clip.vision.image_std", CL_GGUF_FLOAT32, half, 3));
    }
    CL_GUARD(cl_vmk_u32(&m, "clip.vision.projector.scale_factor", s->scale_factor));

    {
        int64_t ne[4] = {P, P, 3, E};
        CL_GUARD(cl_vmk_tensor(&m, "v.patch_embd.weight", CL_GGML_F32, 4, ne, 1.7f / sqrtf(3.0f * P * P), 0.0f));
    }
    CL_GUARD(cl_vmk_vec(&m, "v.patch_embd.bias", E, 0.1f, 0.0f));
    {
        int64_t ne[2] = {E, (int64_t)ns * ns};
        CL_GUARD(cl_vmk_tensor(&m, "v.position_embd.weight", CL_GGML_F32, 2, ne, 0.5f, 0.0f));
    }
    for (uint32_t il = 0; il < s->n_layer; il++) {
#define CL_VMK(suffix) (snprintf(name, sizeof(name), "v.blk.%u." suffix, il), name)
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ln1.weight"), E, 0.2f, 1.0f));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ln1.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("attn_q.weight"), E, E, wt_e));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("attn_q.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("attn_k.weight"), E, E, wt_e));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("attn_k.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("attn_v.weight"), E, E, wt_e));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("attn_v.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("attn_out.weight"), E, E, wt_e));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("attn_out.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ln2.weight"), E, 0.2f, 1.0f));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ln2.bias"), E, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("ffn_up.weight"), E, s->n_ff, wt_e));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ffn_up.bias"), s->n_ff, 0.1f, 0.0f));
        CL_GUARD(cl_vmk_mat(&m, CL_VMK("ffn_down.weight"), s->n_ff, E, wt_f));
        CL_GUARD(cl_vmk_vec(&m, CL_VMK("ffn_down.bias"), E, 0.1f, 0.0f));
#undef CL_VMK
    }
    CL_GUARD(cl_vmk_vec(&m, "v.post_ln.weight", E, 0.2f, 1.0f));
    CL_GUARD(cl_vmk_vec(&m, "v.post_ln.bias", E, 0.1f, 0.0f));
    CL_GUARD(cl_vmk_vec(&m, "mm.soft_emb_norm.weight", E, 0.2f, 1.0f));
    {
        int64_t ne[2] = {s->proj_dim, E};
        CL_GUARD(cl_vmk_tensor(&m, "mm.input_projection.weight", wt_small, 2, ne, 1.7f / sqrtf((float)E), 0.0f));
    }
    *out = m.w;
    m.w = NULL;
out:
    cl_gguf_writer_free(m.w);
    cl_pool_free(m.pool);
    return rc;
}
