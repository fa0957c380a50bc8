/* Builds a cl_model from a parsed GGUF: hyperparameters from the metadata of
 * the file's architecture, weights as views into the GGUF buffer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/infer/kernels.h"
#include "model_internal.h"

const char *cl_model_arch_name(enum cl_model_arch a)
{
    switch (a) {
    case CL_MODEL_ARCH_LLAMA: return "llama";
    case CL_MODEL_ARCH_GEMMA3: return "gemma3";
    default: return "unknown";
    }
}

const struct cl_model_hparams *cl_model_hparams(const struct cl_model *m) { return &m->hp; }
size_t cl_model_weight_bytes(const struct cl_model *m) { return m->weight_bytes; }
bool cl_model_layer_is_swa(const struct cl_model *m, uint32_t il) { return il < m->hp.n_layer && m->layers[il].swa; }

struct cl_model_keys {
    const cl_gguf *g;
    const char *arch;
};

static const char *cl_model_key(const struct cl_model_keys *k, const char *suffix, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%s", k->arch, suffix);
    return buf;
}

/* Required unsigned key; the detail names it. */
static cl_err cl_model_u32(const struct cl_model_keys *k, const char *suffix, uint32_t *out)
{
    char key[128];
    cl_model_key(k, suffix, key, sizeof(key));
    if (!cl_gguf_find_kv(k->g, key))
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "missing key %s", key);
    cl_err rc = cl_gguf_get_uint32_any(k->g, key, out);
    if (rc != CL_OK)
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not a scalar unsigned 32-bit integer", key);
    return CL_OK;
}

/* Optional unsigned key: *out keeps def when absent. */
static cl_err cl_model_u32_opt(const struct cl_model_keys *k, const char *suffix, uint32_t def, uint32_t *out)
{
    char key[128];
    *out = def;
    if (!cl_gguf_find_kv(k->g, cl_model_key(k, suffix, key, sizeof(key))))
        return CL_OK;
    return cl_model_u32(k, suffix, out);
}

static cl_err cl_model_f32_opt(const struct cl_model_keys *k, const char *suffix, bool required, float def, float *out)
{
    char key[128];
    cl_model_key(k, suffix, key, sizeof(key));
    *out = def;
    if (!cl_gguf_find_kv(k->g, key)) {
        if (required)
            return cl_err_fail(CL_E_INFER_MODEL_KEY, "missing key %s", key);
        return CL_OK;
    }
    if (cl_gguf_get_float(k->g, key, out) != CL_OK)
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not a float", key);
    if (!isfinite(*out))
        return cl_err_fail(CL_E_INFER_MODEL_KEY, "key %s is not finite", key);
    return CL_OK;
}

static cl_err cl_model_read_hparams(const cl_gguf *g, struct cl_model_hparams *hp)
{
    cl_err rc = CL_OK;
    struct cl_gguf_str arch;
    char archz[32];
    char key[128];
    struct cl_model_keys k = {g, archz};
    memset(hp, 0, sizeof(*hp));
    CL_ENSURE_D(cl_gguf_find_kv(g, "general.architecture"), CL_E_INFER_MODEL_KEY, "missing key general.architecture");
    CL_ENSURE_D(cl_gguf_get_str(g, "general.architecture", &arch) == CL_OK, CL_E_INFER_MODEL_KEY,
                "key general.architecture is not a string");
    if (arch.len == 5 && !memcmp(arch.p, "llama", 5))
        hp->arch = CL_MODEL_ARCH_LLAMA;
    else if (arch.len == 6 && !memcmp(arch.p, "gemma3", 6))
        hp->arch = CL_MODEL_ARCH_GEMMA3;
    else
        CL_FAIL(CL_E_INFER_MODEL_ARCH, "general.architecture (%zu bytes) is not llama or gemma3", arch.len);
    snprintf(archz, sizeof(archz), "%s", cl_model_arch_name(hp->arch));

    CL_GUARD(cl_model_u32(&k, "context_length", &hp->n_ctx_train));
    CL_GUARD(cl_model_u32(&k, "embedding_length", &hp->n_embd));
    CL_GUARD(cl_model_u32(&k, "block_count", &hp->n_layer));
    CL_GUARD(cl_model_u32(&k, "feed_forward_length", &hp->n_ff));
    CL_GUARD(cl_model_u32(&k, "attention.head_count", &hp->n_head));
    CL_GUARD(cl_model_u32_opt(&k, "attention.head_count_kv", hp->n_head, &hp->n_head_kv));
    CL_ENSURE_D(hp->n_embd > 0 && hp->n_layer > 0 && hp->n_ff > 0 && hp->n_head > 0 && hp->n_head_kv > 0,
                CL_E_INFER_MODEL_HPARAMS, "zero embedding_length, block_count, feed_forward_length or head count");
    CL_ENSURE_D(hp->n_layer <= CL_MODEL_MAX_LAYERS, CL_E_INFER_MODEL_HPARAMS, "block_count %u > %u", hp->n_layer,
                CL_MODEL_MAX_LAYERS);
    CL_ENSURE_D(hp->n_head % hp->n_head_kv == 0, CL_E_INFER_MODEL_HPARAMS,
                "head_count %u not a multiple of head_count_kv %u", hp->n_head, hp->n_head_kv);
    CL_GUARD(cl_model_u32_opt(&k, "attention.key_length", hp->n_embd / hp->n_head, &hp->head_dim_k));
    CL_GUARD(cl_model_u32_opt(&k, "attention.value_length", hp->head_dim_k, &hp->head_dim_v));
    CL_GUARD(cl_model_u32_opt(&k, "rope.dimension_count", hp->head_dim_k, &hp->n_rot));
    CL_ENSURE_D(hp->head_dim_k > 0 && hp->head_dim_v > 0 && hp->head_dim_k <= 65536 && hp->head_dim_v <= 65536,
                CL_E_INFER_MODEL_HPARAMS, "head dimensions %u/%u", hp->head_dim_k, hp->head_dim_v);
    CL_ENSURE_D(hp->n_rot > 0 && hp->n_rot % 2 == 0 && hp->n_rot <= hp->head_dim_k, CL_E_INFER_MODEL_HPARAMS,
                "rope.dimension_count %u not even and <= key_length %u", hp->n_rot, hp->head_dim_k);
    CL_ENSURE_D((uint64_t)hp->n_head * hp->head_dim_k <= (1u << 20) && hp->n_embd <= (1u << 20) &&
                    hp->n_ff <= (1u << 22),
                CL_E_INFER_MODEL_HPARAMS, "dimensions too large");
    CL_GUARD(cl_model_f32_opt(&k, "attention.layer_norm_rms_epsilon", true, 0.0f, &hp->rms_eps));
    CL_ENSURE_D(hp->rms_eps >= 0.0f, CL_E_INFER_MODEL_HPARAMS, "negative rms epsilon");
    CL_GUARD(cl_model_f32_opt(&k, "rope.freq_base", false, 10000.0f, &hp->rope_base));
    CL_ENSURE_D(hp->rope_base > 0.0f, CL_E_INFER_MODEL_HPARAMS, "rope.freq_base must be positive");

    /* Linear RoPE scaling: newer files write rope.scaling.{type,factor}, older ones rope.scale_linear. */
    hp->rope_freq_scale = 1.0f;
    {
        float factor = 0.0f;
        bool linear = true;
        struct cl_gguf_str st;
        if (cl_gguf_find_kv(g, cl_model_key(&k, "rope.scaling.type", key, sizeof(key)))) {
            CL_ENSURE_D(cl_gguf_get_str(g, key, &st) == CL_OK, CL_E_INFER_MODEL_KEY, "key %s is not a string", key);
            if (st.len == 6 && !memcmp(st.p, "linear", 6))
                linear = true;
            else if (st.len == 4 && !memcmp(st.p, "none", 4))
                linear = false;
            else
                CL_FAIL(CL_E_INFER_MODEL_KEY, "key %s: only linear or none rope scaling is supported", key);
        }
        CL_GUARD(cl_model_f32_opt(&k, "rope.scaling.factor", false, 0.0f, &factor));
        if (factor == 0.0f)
            CL_GUARD(cl_model_f32_opt(&k, "rope.scale_linear", false, 0.0f, &factor));
        if (linear && factor != 0.0f) {
            CL_ENSURE_D(factor > 0.0f, CL_E_INFER_MODEL_HPARAMS, "rope scaling factor must be positive");
            hp->rope_freq_scale = 1.0f / factor;
        }
    }

    hp->embd_scale = 1.0f;
    hp->rope_base_local = hp->rope_base;
    if (hp->arch == CL_MODEL_ARCH_LLAMA) {
        hp->rope_mode = CL_MODEL_ROPE_NORM;
        CL_GUARD(cl_model_f32_opt(&k, "attention.scale", false, 1.0f / sqrtf((float)hp->head_dim_k), &hp->attn_scale));
    } else {
        /* llama.cpp's gemma3: NEOX rope, local layers at base 10000 unscaled. */
        hp->rope_mode = CL_MODEL_ROPE_NEOX;
        hp->qk_norm = true;
        hp->post_norms = true;
        hp->gelu = true;
        hp->embd_scale = sqrtf((float)hp->n_embd);
        CL_GUARD(cl_model_u32(&k, "attention.sliding_window", &hp->sliding_window));
        CL_GUARD(cl_model_u32_opt(&k, "attention.sliding_window_pattern", 6, &hp->swa_pattern));
        CL_ENSURE_D(hp->sliding_window > 0, CL_E_INFER_MODEL_HPARAMS, "sliding_window is 0");
        CL_GUARD(cl_model_f32_opt(&k, "rope.freq_base_swa", false, 10000.0f, &hp->rope_base_local));
        CL_ENSURE_D(hp->rope_base_local > 0.0f, CL_E_INFER_MODEL_HPARAMS, "rope.freq_base_swa must be positive");
        CL_GUARD(cl_model_f32_opt(&k, "attention.scale", false, 1.0f / sqrtf((float)hp->head_dim_k), &hp->attn_scale));
    }

    /* Vocabulary: explicit key, else the tokenizer's list; checked against token_embd below. */
    hp->n_vocab = 0;
    if (cl_gguf_find_kv(g, cl_model_key(&k, "vocab_size", key, sizeof(key)))) {
        CL_GUARD(cl_model_u32(&k, "vocab_size", &hp->n_vocab));
    } else {
        const struct cl_gguf_kv *tk = cl_gguf_find_kv(g, "tokenizer.ggml.tokens");
        if (tk && tk->type == CL_GGUF_ARRAY && tk->n <= UINT32_MAX)
            hp->n_vocab = (uint32_t)tk->n;
    }
out:
    return rc;
}

/* A weight matrix of shape ne = {ne0, ne1} used in place. When the owner of
 * the buffer let the loader write to it (cl_gguf_set_writable) and the CPU
 * has the interleaved kernel for its type, its rows are repacked in place
 * once; the tensor records it, so a second load of the same gguf (or a tied
 * output) uses the repacked bytes as they are. */
static cl_err cl_model_weight(cl_gguf *g, const char *name, uint32_t ne0, uint32_t ne1, struct cl_model_w *w,
                              size_t *bytes)
{
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, name);
    if (!t)
        return cl_err_fail(CL_E_INFER_MODEL_TENSOR, "missing tensor %s", name);
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return cl_err_fail(CL_E_INFER_MODEL_SHAPE, "tensor %s is [%lld,%lld,%lld,%lld], expected [%u,%u]", name,
                           (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], ne0,
                           ne1);
    if (!cl_k_weight_type_ok(t->type) || cl_k_check(t->type, ne0) != CL_OK) {
        const struct cl_ggml_type_info *ti = cl_ggml_type_info(t->type);
        return cl_err_fail(CL_E_INFER_MODEL_TYPE, "tensor %s has type %s (id %u), not usable at width %u", name,
                           ti ? ti->name : "unknown", (unsigned)t->type, ne0);
    }
    size_t rb = cl_k_row_bytes(t->type, ne0);
    if (rb == 0 || t->nbytes / rb < ne1)
        return cl_err_fail(CL_E_INFER_MODEL_SHAPE, "tensor %s data size %zu too small", name, t->nbytes);
    if (t->layout == CL_GGUF_LAYOUT_FILE && ne1 >= CL_K_ROWS16 && cl_k_rows16_fast(t->type)) {
        void *mut = cl_gguf_tensor_data_mut(g, t);
        if (mut) {
            cl_err rc = cl_k_rows16_pack(t->type, mut, ne1, ne0);
            if (rc != CL_OK)
                return rc;
            cl_gguf_tensor_set_layout(g, t, CL_GGUF_LAYOUT_ROWS16);
        }
    }
    w->data = t->data;
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = rb;
    w->rows16 = t->layout == CL_GGUF_LAYOUT_ROWS16;
    if (bytes)
        *bytes += t->nbytes;
    return CL_OK;
}

/* A norm gain vector of n F32 values. */
static cl_err cl_model_vec(const cl_gguf *g, const char *name, uint32_t n, const float **out)
{
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, name);
    if (!t)
        return cl_err_fail(CL_E_INFER_MODEL_TENSOR, "missing tensor %s", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return cl_err_fail(CL_E_INFER_MODEL_SHAPE, "tensor %s is [%lld,%lld], expected [%u]", name,
                           (long long)t->ne[0], (long long)t->ne[1], n);
    if (t->type != CL_GGML_F32)
        return cl_err_fail(CL_E_INFER_MODEL_TYPE, "norm tensor %s must be f32 (type id %u)", name, (unsigned)t->type);
    if (((uintptr_t)t->data & 3u) != 0)
        return cl_err_fail(CL_E_INFER_MODEL_SHAPE, "tensor %s is not 4-byte aligned", name);
    *out = t->data;
    return CL_OK;
}

bool cl_model_would_repack(const struct cl_gguf *g)
{
    for (size_t i = 0; g && i < cl_gguf_n_tensors(g); i++) {
        const struct cl_gguf_tensor *t = cl_gguf_tensor_at(g, i);
        if (t->n_dims == 2 && t->ne[1] >= CL_K_ROWS16 && t->layout == CL_GGUF_LAYOUT_FILE &&
            cl_k_rows16_fast(t->type))
            return true;
    }
    return false;
}

cl_err cl_model_load(struct cl_gguf *g, struct cl_model **out)
{
    cl_err rc = CL_OK;
    struct cl_model *m = NULL;
    char name[96];
    CL_ENSURE_D(g && out, CL_E_CORE_INVALID_ARG, "gguf or out is NULL");
    m = calloc(1, sizeof(*m));
    CL_ENSURE(m, CL_E_CORE_NOMEM);
    struct cl_model_hparams *hp = &m->hp;
    CL_GUARD(cl_model_read_hparams(g, hp));

    const struct cl_gguf_tensor *te = cl_gguf_find_tensor(g, "token_embd.weight");
    CL_ENSURE_D(te, CL_E_INFER_MODEL_TENSOR, "missing tensor token_embd.weight");
    if (hp->n_vocab == 0 && te->ne[1] > 0 && te->ne[1] <= UINT32_MAX)
        hp->n_vocab = (uint32_t)te->ne[1];
    CL_ENSURE_D(hp->n_vocab > 0, CL_E_INFER_MODEL_HPARAMS, "vocabulary size unknown");
    CL_GUARD(cl_model_weight(g, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, NULL));
    CL_GUARD(cl_model_vec(g, "output_norm.weight", hp->n_embd, &m->output_norm));
    if (cl_gguf_find_tensor(g, "output.weight")) {
        CL_GUARD(cl_model_weight(g, "output.weight", hp->n_embd, hp->n_vocab, &m->output, &m->weight_bytes));
    } else {
        hp->tied_output = true;
        m->output = m->tok_embd;
        m->weight_bytes += m->tok_embd.row_bytes * hp->n_vocab;
    }

    if (cl_gguf_find_tensor(g, "rope_freqs.weight"))
        CL_GUARD(cl_model_vec(g, "rope_freqs.weight", hp->n_rot / 2, &m->rope_freqs));

    m->layers = calloc(hp->n_layer, sizeof(*m->layers));
    CL_ENSURE(m->layers, CL_E_CORE_NOMEM);
    uint32_t E = hp->n_embd, qw = hp->n_head * hp->head_dim_k, kw = hp->n_head_kv * hp->head_dim_k;
    uint32_t vw = hp->n_head_kv * hp->head_dim_v, aw = hp->n_head * hp->head_dim_v;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        struct cl_model_layer *L = &m->layers[il];
#define CL_MODEL_NAME(suffix) (snprintf(name, sizeof(name), "blk.%u." suffix, il), name)
        CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("attn_norm.weight"), E, &L->attn_norm));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("attn_q.weight"), E, qw, &L->wq, &m->weight_bytes));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("attn_k.weight"), E, kw, &L->wk, &m->weight_bytes));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("attn_v.weight"), E, vw, &L->wv, &m->weight_bytes));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("attn_output.weight"), aw, E, &L->wo, &m->weight_bytes));
        CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("ffn_norm.weight"), E, &L->ffn_norm));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("ffn_gate.weight"), E, hp->n_ff, &L->gate, &m->weight_bytes));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("ffn_up.weight"), E, hp->n_ff, &L->up, &m->weight_bytes));
        CL_GUARD(cl_model_weight(g, CL_MODEL_NAME("ffn_down.weight"), hp->n_ff, E, &L->down, &m->weight_bytes));
        if (hp->qk_norm) {
            CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("attn_q_norm.weight"), hp->head_dim_k, &L->q_norm));
            CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("attn_k_norm.weight"), hp->head_dim_k, &L->k_norm));
        }
        if (hp->post_norms) {
            CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("post_attention_norm.weight"), E, &L->post_attn_norm));
            CL_GUARD(cl_model_vec(g, CL_MODEL_NAME("post_ffw_norm.weight"), E, &L->post_ffn_norm));
        }
#undef CL_MODEL_NAME
        /* gemma3 (llama.cpp): layer il is global iff il % pattern == pattern - 1. */
        L->swa = hp->sliding_window > 0 && hp->swa_pattern > 0 && (il % hp->swa_pattern) < hp->swa_pattern - 1;
        if (hp->sliding_window > 0 && hp->swa_pattern == 0)
            L->swa = true;
        L->rope_base = L->swa ? hp->rope_base_local : hp->rope_base;
        L->rope_freq_scale = L->swa ? 1.0f : hp->rope_freq_scale;
    }
    *out = m;
    m = NULL;
out:
    cl_model_free(m);
    return rc;
}

void cl_model_free(struct cl_model *m)
{
    if (!m)
        return;
    free(m->layers);
    free(m);
}
