/* Loads an mmproj GGUF (llama.cpp's clip format) with the Gemma 3 projector:
 * hyperparameters from clip.vision.*, weights as views into the GGUF buffer,
 * except the few that are converted once (patch kernel to fp16 as ggml's
 * im2col uses it, position embeddings to F32, the input projection
 * transposed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/gguf.h"
#include "cloister/infer/kernels.h"
#include "cloister/secmem.h"
#include "vision_internal.h"

const struct cl_vision_hparams *cl_vision_hparams(const struct cl_vision *v) { return &v->hp; }
size_t cl_vision_weight_bytes(const struct cl_vision *v) { return v->weight_bytes; }

static bool cl_vision_str_is(const struct cl_gguf_str *s, const char *want)
{
    return s->len == strlen(want) && !memcmp(s->p, want, s->len);
}

static cl_err cl_vision_u32(const cl_gguf *g, const char *key, bool required, uint32_t def, uint32_t *out)
{
    *out = def;
    if (!cl_gguf_find_kv(g, key)) {
        if (required)
            return cl_err_fail(CL_E_INFER_MODEL_KEY, "missing key %s", key);
        return CL_OK;
    }
    if (cl_gguf_get_uint32_any(g, key, out) != CL_OK)
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not a scalar unsigned 32-bit integer", key);
    return CL_OK;
}

static cl_err cl_vision_f32_key(const cl_gguf *g, const char *key, bool required, float def, float *out)
{
    *out = def;
    if (!cl_gguf_find_kv(g, key)) {
        if (required)
            return cl_err_fail(CL_E_INFER_MODEL_KEY, "missing key %s", key);
        return CL_OK;
    }
    if (cl_gguf_get_float(g, key, out) != CL_OK)
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not a float", key);
    if (!isfinite(*out))
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not finite", key);
    return CL_OK;
}

/* Three per-channel floats (image_mean, image_std). */
static cl_err cl_vision_rgb(const cl_gguf *g, const char *key, float def, float out[3])
{
    cl_err rc = CL_OK;
    float *a = NULL;
    size_t n = 0;
    out[0] = out[1] = out[2] = def;
    if (!cl_gguf_find_kv(g, key))
        return CL_OK;
    if (cl_gguf_get_arr_f32(g, key, &a, &n) != CL_OK)
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not an array of floats", key);
    CL_ENSURE_D(n == 3, CL_E_INFER_MODEL_KEY, "key %s has %zu values, expected 3", key, n);
    for (size_t i = 0; i < 3; i++) {
        CL_ENSURE_D(isfinite(a[i]), CL_E_INFER_MODEL_KEY, "key %s value %zu is not finite", key, i);
        out[i] = a[i];
    }
out:
    free(a);
    return rc;
}

static cl_err cl_vision_read_hparams(const cl_gguf *g, struct cl_vision_hparams *hp)
{
    cl_err rc = CL_OK;
    struct cl_gguf_str s;
    memset(hp, 0, sizeof(*hp));
    CL_ENSURE_D(cl_gguf_find_kv(g, "general.architecture"), CL_E_INFER_MODEL_KEY, "missing key general.architecture");
    CL_ENSURE_D(cl_gguf_get_str(g, "general.architecture", &s) == CL_OK, CL_E_INFER_MODEL_KEY,
                "key general.architecture is not a string");
    CL_ENSURE_D(cl_vision_str_is(&s, "clip"), CL_E_INFER_VISION_PROJECTOR,
                "general.architecture (%zu bytes) is not clip", s.len);
    if (cl_gguf_find_kv(g, "clip.has_vision_encoder")) {
        bool hv = false;
        CL_ENSURE_D(cl_gguf_get_bool(g, "clip.has_vision_encoder", &hv) == CL_OK, CL_E_INFER_MODEL_KEY,
                    "key clip.has_vision_encoder is not a bool");
        CL_ENSURE_D(hv, CL_E_INFER_VISION_PROJECTOR, "clip.has_vision_encoder is false");
    }
    {
        const char *pk = cl_gguf_find_kv(g, "clip.vision.projector_type") ? "clip.vision.projector_type"
                                                                          : "clip.projector_type";
        CL_ENSURE_D(cl_gguf_find_kv(g, pk), CL_E_INFER_MODEL_KEY, "missing key clip.projector_type");
        CL_ENSURE_D(cl_gguf_get_str(g, pk, &s) == CL_OK, CL_E_INFER_MODEL_KEY, "key %s is not a string", pk);
        CL_ENSURE_D(cl_vision_str_is(&s, "gemma3"), CL_E_INFER_VISION_PROJECTOR,
                    "%s (%zu bytes) is not gemma3", pk, s.len);
    }
    if (cl_gguf_find_kv(g, "clip.use_silu")) {
        bool silu = false;
        CL_ENSURE_D(cl_gguf_get_bool(g, "clip.use_silu", &silu) == CL_OK, CL_E_INFER_MODEL_KEY,
                    "key clip.use_silu is not a bool");
        CL_ENSURE_D(!silu, CL_E_INFER_VISION_PROJECTOR, "clip.use_silu: only GELU encoders are supported");
    }
    CL_GUARD(cl_vision_u32(g, "clip.vision.image_size", true, 0, &hp->image_size));
    CL_GUARD(cl_vision_u32(g, "clip.vision.patch_size", true, 0, &hp->patch_size));
    CL_GUARD(cl_vision_u32(g, "clip.vision.embedding_length", true, 0, &hp->n_embd));
    CL_GUARD(cl_vision_u32(g, "clip.vision.feed_forward_length", true, 0, &hp->n_ff));
    CL_GUARD(cl_vision_u32(g, "clip.vision.block_count", true, 0, &hp->n_layer));
    CL_GUARD(cl_vision_u32(g, "clip.vision.attention.head_count", true, 0, &hp->n_head));
    CL_GUARD(cl_vision_u32(g, "clip.vision.projector.scale_factor", false, 4, &hp->scale_factor));
    CL_GUARD(cl_vision_u32(g, "clip.vision.projection_dim", false, 0, &hp->proj_dim));
    CL_GUARD(cl_vision_f32_key(g, "clip.vision.attention.layer_norm_epsilon", true, 0.0f, &hp->eps));
    CL_GUARD(cl_vision_rgb(g, "clip.vision.image_mean", 0.5f, hp->mean));
    CL_GUARD(cl_vision_rgb(g, "clip.vision.image_std", 0.5f, hp->std));

    CL_ENSURE_D(hp->image_size > 0 && hp->image_size <= CL_VISION_MAX_IMAGE, CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.image_size %u not in 1..%u", hp->image_size, CL_VISION_MAX_IMAGE);
    CL_ENSURE_D(hp->patch_size > 0 && hp->patch_size <= 64 && hp->image_size % hp->patch_size == 0,
                CL_E_INFER_MODEL_HPARAMS, "clip.vision.patch_size %u not in 1..64 or not dividing image_size %u",
                hp->patch_size, hp->image_size);
    CL_ENSURE_D(hp->n_embd > 0 && hp->n_embd <= CL_VISION_MAX_WIDTH && hp->n_ff > 0 &&
                    hp->n_ff <= CL_VISION_MAX_WIDTH,
                CL_E_INFER_MODEL_HPARAMS, "clip.vision embedding_length %u / feed_forward_length %u not in 1..%u",
                hp->n_embd, hp->n_ff, CL_VISION_MAX_WIDTH);
    CL_ENSURE_D(hp->n_layer > 0 && hp->n_layer <= CL_VISION_MAX_LAYERS, CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.block_count %u not in 1..%u", hp->n_layer, CL_VISION_MAX_LAYERS);
    CL_ENSURE_D(hp->n_head > 0 && hp->n_embd % hp->n_head == 0, CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.attention.head_count %u does not divide embedding_length %u", hp->n_head, hp->n_embd);
    hp->head_dim = hp->n_embd / hp->n_head;
    hp->n_side = hp->image_size / hp->patch_size;
    hp->n_patches = hp->n_side * hp->n_side;
    CL_ENSURE_D(hp->scale_factor > 0 && hp->n_side % hp->scale_factor == 0, CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.projector.scale_factor %u does not divide %u patches per side", hp->scale_factor,
                hp->n_side);
    hp->n_tokens = (hp->n_side / hp->scale_factor) * (hp->n_side / hp->scale_factor);
    CL_ENSURE_D(hp->eps >= 0.0f && hp->eps < 1.0f, CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.attention.layer_norm_epsilon out of range");
    for (int c = 0; c < 3; c++)
        CL_ENSURE_D(hp->std[c] > 0.0f, CL_E_INFER_MODEL_HPARAMS, "clip.vision.image_std[%d] is not positive", c);
out:
    return rc;
}

static cl_err cl_vision_bad_shape(const struct cl_gguf_tensor *t, const char *name, const char *want)
{
    return cl_err_fail(CL_E_INFER_MODEL_SHAPE, "tensor %s is [%lld,%lld,%lld,%lld], expected %s", name,
                       (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], want);
}

static cl_err cl_vision_tensor(const cl_gguf *g, const char *name, const struct cl_gguf_tensor **out)
{
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, name);
    if (!t)
        return cl_err_fail(CL_E_INFER_MODEL_TENSOR, "missing tensor %s", name);
    *out = t;
    return CL_OK;
}

/* A 1-D F32 vector of n values (norm gains, biases). */
static cl_err cl_vision_vec(const cl_gguf *g, const char *name, uint32_t n, const float **out)
{
    cl_err rc = CL_OK;
    const struct cl_gguf_tensor *t = NULL;
    char want[32];
    CL_GUARD(cl_vision_tensor(g, name, &t));
    snprintf(want, sizeof(want), "[%u]", n);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return cl_vision_bad_shape(t, name, want);
    CL_ENSURE_D(t->type == CL_GGML_F32, CL_E_INFER_MODEL_TYPE, "tensor %s must be f32 (type id %u)", name,
                (unsigned)t->type);
    CL_ENSURE_D(((uintptr_t)t->data & 3u) == 0 && t->nbytes >= (size_t)n * sizeof(float), CL_E_INFER_MODEL_SHAPE,
                "tensor %s is misaligned or short", name);
    *out = t->data;
out:
    return rc;
}

static bool cl_vision_wtype_ok(uint32_t type)
{
    return type == CL_GGML_F32 || type == CL_GGML_F16 || type == CL_GGML_Q8_0;
}

/* A matrix of ne1 rows of ne0 used in place. */
static cl_err cl_vision_weight(const cl_gguf *g, const char *name, uint32_t ne0, uint32_t ne1, struct cl_model_w *w,
                               size_t *bytes)
{
    cl_err rc = CL_OK;
    const struct cl_gguf_tensor *t = NULL;
    char want[48];
    CL_GUARD(cl_vision_tensor(g, name, &t));
    snprintf(want, sizeof(want), "[%u,%u]", ne0, ne1);
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return cl_vision_bad_shape(t, name, want);
    if (!cl_vision_wtype_ok(t->type) || cl_k_check(t->type, ne0) != CL_OK) {
        const struct cl_ggml_type_info *ti = cl_ggml_type_info(t->type);
        return cl_err_fail(CL_E_INFER_MODEL_TYPE, "tensor %s has type %s (id %u), not f32/f16/q8_0 at width %u",
                           name, ti ? ti->name : "unknown", (unsigned)t->type, ne0);
    }
    size_t rb = cl_k_row_bytes(t->type, ne0);
    CL_ENSURE_D(rb != 0 && t->nbytes / rb >= ne1, CL_E_INFER_MODEL_SHAPE, "tensor %s data size %zu too small", name,
                t->nbytes);
    w->data = t->data;
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = rb;
    *bytes += t->nbytes;
out:
    return rc;
}

/* Rows of any weight type as floats (for the converted copies). */
static cl_err cl_vision_rows_f32(const struct cl_gguf_tensor *t, const char *name, size_t ne0, size_t rows,
                                 float *dst)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(cl_vision_wtype_ok(t->type) && cl_k_check(t->type, ne0) == CL_OK, CL_E_INFER_MODEL_TYPE,
                "tensor %s has type id %u, not f32/f16/q8_0 at width %zu", name, (unsigned)t->type, ne0);
    size_t rb = cl_k_row_bytes(t->type, ne0);
    CL_ENSURE_D(rb != 0 && t->nbytes / rb >= rows, CL_E_INFER_MODEL_SHAPE, "tensor %s data size %zu too small", name,
                t->nbytes);
    for (size_t r = 0; r < rows; r++)
        CL_GUARD(cl_k_dequantize_row(t->type, (const uint8_t *)t->data + r * rb, dst + r * ne0, ne0));
out:
    return rc;
}

void cl_vision_free(struct cl_vision *v)
{
    if (!v)
        return;
    cl_secmem_free(v->owned);
    free(v->layers);
    free(v);
}

cl_err cl_vision_load(const struct cl_gguf *g, struct cl_vision **out)
{
    cl_err rc = CL_OK;
    struct cl_vision *v = NULL;
    float *tmp = NULL;
    size_t tmp_n = 0;
    char name[96];
    CL_ENSURE_D(g && out, CL_E_CORE_INVALID_ARG, "gguf or out is NULL");
    v = calloc(1, sizeof(*v));
    CL_ENSURE(v, CL_E_CORE_NOMEM);
    struct cl_vision_hparams *hp = &v->hp;
    CL_GUARD(cl_vision_read_hparams(g, hp));
    const uint32_t E = hp->n_embd, P = hp->patch_size, K = 3 * P * P;

    /* The input projection fixes the output width; projection_dim, when present, must agree. */
    const struct cl_gguf_tensor *tp = NULL;
    CL_GUARD(cl_vision_tensor(g, "mm.input_projection.weight", &tp));
    CL_ENSURE_D(tp->ne[0] > 0 && tp->ne[0] <= (int64_t)CL_VISION_MAX_WIDTH && tp->ne[1] == E && tp->ne[2] == 1 &&
                    tp->ne[3] == 1,
                CL_E_INFER_MODEL_SHAPE, "tensor mm.input_projection.weight is [%lld,%lld,%lld,%lld], expected [D,%u]",
                (long long)tp->ne[0], (long long)tp->ne[1], (long long)tp->ne[2], (long long)tp->ne[3], E);
    CL_ENSURE_D(hp->proj_dim == 0 || hp->proj_dim == (uint32_t)tp->ne[0], CL_E_INFER_MODEL_HPARAMS,
                "clip.vision.projection_dim %u but mm.input_projection.weight has width %lld", hp->proj_dim,
                (long long)tp->ne[0]);
    hp->proj_dim = (uint32_t)tp->ne[0];
    const uint32_t D = hp->proj_dim;

    const struct cl_gguf_tensor *tk = NULL, *tpos = NULL;
    CL_GUARD(cl_vision_tensor(g, "v.patch_embd.weight", &tk));
    {
        char want[64];
        snprintf(want, sizeof(want), "[%u,%u,3,%u]", P, P, E);
        if (tk->ne[0] != P || tk->ne[1] != P || tk->ne[2] != 3 || tk->ne[3] != E)
            CL_GUARD(cl_vision_bad_shape(tk, "v.patch_embd.weight", want));
    }
    CL_GUARD(cl_vision_vec(g, "v.patch_embd.bias", E, &v->patch_b));
    CL_GUARD(cl_vision_tensor(g, "v.position_embd.weight", &tpos));
    {
        char want[48];
        snprintf(want, sizeof(want), "[%u,%u]", E, hp->n_patches);
        if (tpos->ne[0] != E || tpos->ne[1] != hp->n_patches || tpos->ne[2] != 1 || tpos->ne[3] != 1)
            CL_GUARD(cl_vision_bad_shape(tpos, "v.position_embd.weight", want));
    }

    /* One secure block for the converted copies: patch kernel (fp16), positions, projection. */
    size_t b_patch, b_pos, b_proj, total;
    uint32_t proj_type = tp->type == CL_GGML_F16 ? CL_GGML_F16 : CL_GGML_F32;
    size_t proj_el = proj_type == CL_GGML_F16 ? 2 : 4;
    CL_GUARD(cl_size_mul((size_t)E * K, sizeof(uint16_t), &b_patch));
    CL_GUARD(cl_size_mul((size_t)E * hp->n_patches, sizeof(float), &b_pos));
    CL_GUARD(cl_size_mul((size_t)D * E, proj_el, &b_proj));
    b_patch = (b_patch + 63) & ~(size_t)63;
    b_pos = (b_pos + 63) & ~(size_t)63;
    total = b_patch + b_pos + b_proj;
    CL_GUARD(cl_secmem_alloc(total, &v->owned));
    tmp_n = (size_t)E * K > (size_t)D * E ? (size_t)E * K : (size_t)D * E;
    tmp = malloc(tmp_n * sizeof(float));
    CL_ENSURE(tmp, CL_E_CORE_NOMEM);

    uint8_t *base = v->owned;
    CL_GUARD(cl_vision_rows_f32(tk, "v.patch_embd.weight", K, E, tmp));
    cl_k_fp32_to_fp16_row(tmp, (uint16_t *)base, (size_t)E * K);
    v->patch = (struct cl_model_w){base, CL_GGML_F16, K, E, (size_t)K * 2, false};
    v->pos = (float *)(base + b_patch);
    CL_GUARD(cl_vision_rows_f32(tpos, "v.position_embd.weight", E, hp->n_patches, v->pos));
    /* mm.input_projection is stored {D, E} and used transposed: row d of the copy = column d. */
    CL_GUARD(cl_vision_rows_f32(tp, "mm.input_projection.weight", D, E, tmp));
    {
        uint8_t *pd = base + b_patch + b_pos;
        for (uint32_t d = 0; d < D; d++)
            for (uint32_t e = 0; e < E; e++) {
                float x = tmp[(size_t)e * D + d];
                if (proj_type == CL_GGML_F16)
                    ((uint16_t *)pd)[(size_t)d * E + e] = cl_k_fp32_to_fp16(x);
                else
                    ((float *)pd)[(size_t)d * E + e] = x;
            }
        v->proj = (struct cl_model_w){pd, proj_type, E, D, (size_t)E * proj_el, false};
    }
    v->weight_bytes = tk->nbytes + tpos->nbytes + tp->nbytes;

    v->layers = calloc(hp->n_layer, sizeof(*v->layers));
    CL_ENSURE(v->layers, CL_E_CORE_NOMEM);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        struct cl_vision_layer *L = &v->layers[il];
#define CL_VN(suffix) (snprintf(name, sizeof(name), "v.blk.%u." suffix, il), name)
        CL_GUARD(cl_vision_vec(g, CL_VN("ln1.weight"), E, &L->ln1_w));
        CL_GUARD(cl_vision_vec(g, CL_VN("ln1.bias"), E, &L->ln1_b));
        CL_GUARD(cl_vision_vec(g, CL_VN("ln2.weight"), E, &L->ln2_w));
        CL_GUARD(cl_vision_vec(g, CL_VN("ln2.bias"), E, &L->ln2_b));
        CL_GUARD(cl_vision_weight(g, CL_VN("attn_q.weight"), E, E, &L->wq, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("attn_q.bias"), E, &L->bq));
        CL_GUARD(cl_vision_weight(g, CL_VN("attn_k.weight"), E, E, &L->wk, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("attn_k.bias"), E, &L->bk));
        CL_GUARD(cl_vision_weight(g, CL_VN("attn_v.weight"), E, E, &L->wv, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("attn_v.bias"), E, &L->bv));
        CL_GUARD(cl_vision_weight(g, CL_VN("attn_out.weight"), E, E, &L->wo, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("attn_out.bias"), E, &L->bo));
        CL_GUARD(cl_vision_weight(g, CL_VN("ffn_up.weight"), E, hp->n_ff, &L->up, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("ffn_up.bias"), hp->n_ff, &L->b_up));
        CL_GUARD(cl_vision_weight(g, CL_VN("ffn_down.weight"), hp->n_ff, E, &L->down, &v->weight_bytes));
        CL_GUARD(cl_vision_vec(g, CL_VN("ffn_down.bias"), E, &L->b_down));
#undef CL_VN
    }
    CL_GUARD(cl_vision_vec(g, "v.post_ln.weight", E, &v->post_w));
    CL_GUARD(cl_vision_vec(g, "v.post_ln.bias", E, &v->post_b));
    CL_GUARD(cl_vision_vec(g, "mm.soft_emb_norm.weight", E, &v->soft_norm));
    *out = v;
    v = NULL;
out:
    if (tmp) {
        cl_wipe(tmp, tmp_n * sizeof(float));
        free(tmp);
    }
    cl_vision_free(v);
    return rc;
}

cl_err cl_vision_open_memory(const void *buf, size_t len, struct cl_gguf **g, struct cl_vision **v)
{
    cl_err rc = CL_OK;
    cl_gguf *gg = NULL;
    struct cl_vision *vv = NULL;
    CL_ENSURE_D(buf && g && v, CL_E_CORE_INVALID_ARG, "buffer or outputs NULL");
    CL_GUARD(cl_gguf_open_memory(buf, len, &gg));
    CL_GUARD(cl_vision_load(gg, &vv));
    *g = gg;
    *v = vv;
    gg = NULL;
    vv = NULL;
out:
    cl_vision_free(vv);
    cl_gguf_free(gg);
    return rc;
}

cl_err cl_vision_check_model(const struct cl_vision *v, const struct cl_model *m)
{
    if (!v || !m)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "projector or model NULL");
    const struct cl_model_hparams *mh = cl_model_hparams(m);
    if (mh->n_embd != v->hp.proj_dim)
        return cl_err_fail(CL_E_INFER_VISION_MISMATCH, "projector output width %u, text model embedding width %u",
                           v->hp.proj_dim, mh->n_embd);
    return CL_OK;
}
