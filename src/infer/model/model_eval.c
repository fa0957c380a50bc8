/* Forward pass over a sequence's KV cache. The order of float operations
 * follows ggml's CPU backend where it matters for matching llama.cpp (RMS
 * norm sums in double, RoPE angles by repeated multiplication, softmax sum in
 * double, GELU through an fp16 table). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/infer/kernels.h"
#include "cloister/secmem.h"
#include "model_internal.h"

struct cl_model_seq {
    const struct cl_model *m;
    struct cl_pool *pool;
    uint32_t n_ctx;
    uint32_t pos;
    size_t kv_k_row; /* floats per position per layer: n_head_kv * head_dim_k */
    size_t kv_v_row;
    void *k_cache;   /* per layer: [slot][kv_k_row] from k_off[layer] elements */
    void *v_cache;
    bool kv_f16;     /* elements are fp16 (as llama.cpp's default cache) */
    /* Slots per layer: n_ctx for global layers; sliding-window layers keep a
     * ring of window + ubatch positions (position p in slot p % slots). */
    uint32_t *slots;
    size_t *k_off, *v_off;
    size_t kv_floats_k, kv_floats_v;
    uint32_t ubatch;
    /* scratch for one micro-batch of up to ubatch tokens */
    float *x, *h, *q, *k, *v, *att, *o, *g, *u;
    float *scores; /* [thread][n_ctx] */
    uint8_t *mem;  /* one secure allocation holding all of the above */
    struct cl_model_act act;
    uint8_t *act_mem;
};

uint32_t cl_model_seq_pos(const struct cl_model_seq *s) { return s->pos; }
uint32_t cl_model_seq_ctx(const struct cl_model_seq *s) { return s->n_ctx; }

static cl_err cl_model_seq_layout(const struct cl_model_seq *sq, unsigned nth, size_t *offs, size_t n_offs,
                                  size_t *total)
{
    cl_err rc = CL_OK;
    const struct cl_model_hparams *hp = &sq->m->hp;
    size_t T = sq->ubatch;
    size_t qw = (size_t)hp->n_head * hp->head_dim_k, kw = (size_t)hp->n_head_kv * hp->head_dim_k;
    size_t vw = (size_t)hp->n_head_kv * hp->head_dim_v, aw = (size_t)hp->n_head * hp->head_dim_v;
    size_t sizes[12];
    sizes[0] = sq->kv_f16 ? (sq->kv_floats_k + 1) / 2 : sq->kv_floats_k;
    sizes[1] = sq->kv_f16 ? (sq->kv_floats_v + 1) / 2 : sq->kv_floats_v;
    sizes[2] = T * hp->n_embd; /* x */
    sizes[3] = T * (hp->n_embd > aw ? hp->n_embd : aw); /* h */
    sizes[4] = T * qw;
    sizes[5] = T * kw;
    sizes[6] = T * vw;
    sizes[7] = T * aw;  /* att */
    sizes[8] = T * hp->n_embd; /* o */
    sizes[9] = T * hp->n_ff;
    sizes[10] = T * hp->n_ff;
    sizes[11] = (size_t)nth * ((size_t)sq->n_ctx + hp->head_dim_k); /* scores, then q as fp16 */
    size_t off = 0;
    for (size_t i = 0; i < 12 && i < n_offs; i++) {
        size_t bytes;
        offs[i] = off;
        CL_GUARD(cl_size_mul(sizes[i], sizeof(float), &bytes));
        bytes = (bytes + 63) & ~(size_t)63;
        CL_GUARD(cl_size_add(off, bytes, &off));
    }
    *total = off;
out:
    return rc;
}

cl_err cl_model_seq_new(const struct cl_model *m, uint32_t n_ctx, struct cl_pool *pool, struct cl_model_seq **out)
{
    struct cl_model_seq_params p = {.n_ctx = n_ctx};
    return cl_model_seq_new_ex(m, &p, pool, out);
}

size_t cl_model_seq_kv_bytes(const struct cl_model_seq *s)
{
    return (s->kv_floats_k + s->kv_floats_v) * (s->kv_f16 ? sizeof(uint16_t) : sizeof(float));
}

cl_err cl_model_seq_new_ex(const struct cl_model *m, const struct cl_model_seq_params *prm, struct cl_pool *pool,
                           struct cl_model_seq **out)
{
    cl_err rc = CL_OK;
    struct cl_model_seq *s = NULL;
    size_t offs[12], total, act = 0;
    CL_ENSURE_D(m && prm && out, CL_E_CORE_INVALID_ARG, "model, params or out is NULL");
    uint32_t n_ctx = prm->n_ctx, ubatch = prm->n_ubatch ? prm->n_ubatch : CL_MODEL_UBATCH;
    CL_ENSURE_D(ubatch <= 4096, CL_E_CORE_INVALID_ARG, "ubatch %u > 4096", ubatch);
    if (n_ctx == 0)
        n_ctx = m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096;
    CL_ENSURE_D(n_ctx >= 1 && n_ctx <= CL_MODEL_MAX_CTX, CL_E_INFER_MODEL_CTX, "n_ctx %u not in 1..%u", n_ctx,
                CL_MODEL_MAX_CTX);
    s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    s->m = m;
    s->pool = pool;
    s->n_ctx = n_ctx;
    s->kv_k_row = (size_t)m->hp.n_head_kv * m->hp.head_dim_k;
    s->kv_v_row = (size_t)m->hp.n_head_kv * m->hp.head_dim_v;
    s->ubatch = ubatch;
    s->kv_f16 = prm->kv_f16;
    s->slots = calloc(m->hp.n_layer, sizeof(*s->slots));
    s->k_off = calloc(m->hp.n_layer, sizeof(*s->k_off));
    s->v_off = calloc(m->hp.n_layer, sizeof(*s->v_off));
    CL_ENSURE(s->slots && s->k_off && s->v_off, CL_E_CORE_NOMEM);
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        uint64_t ring = (uint64_t)m->hp.sliding_window + ubatch;
        s->slots[il] = m->layers[il].swa && ring < n_ctx ? (uint32_t)ring : n_ctx;
        size_t kf, vf;
        s->k_off[il] = s->kv_floats_k;
        s->v_off[il] = s->kv_floats_v;
        CL_GUARD(cl_size_mul(s->slots[il], s->kv_k_row, &kf));
        CL_GUARD(cl_size_mul(s->slots[il], s->kv_v_row, &vf));
        CL_GUARD(cl_size_add(s->kv_floats_k, kf, &s->kv_floats_k));
        CL_GUARD(cl_size_add(s->kv_floats_v, vf, &s->kv_floats_v));
    }
    CL_GUARD(cl_model_seq_layout(s, cl_pool_threads(pool), offs, 12, &total));
    CL_GUARD(cl_secmem_alloc(total, (void **)&s->mem));
    float *kvp[2];
    float **ptrs[12] = {&kvp[0], &kvp[1], &s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->o, &s->g, &s->u,
                        &s->scores};
    for (size_t i = 0; i < 12; i++)
        *ptrs[i] = (float *)(s->mem + offs[i]);
    s->k_cache = kvp[0];
    s->v_cache = kvp[1];
    /* The largest quantized activation any matmul needs. */
    const struct cl_model_w *ws[] = {&m->output};
    for (size_t i = 0; i < 1; i++) {
        size_t a;
        CL_GUARD(cl_model_act_size(ws[i], ubatch, &a));
        act = a > act ? a : act;
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const struct cl_model_layer *L = &m->layers[il];
        const struct cl_model_w *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < 7; i++) {
            size_t a;
            CL_GUARD(cl_model_act_size(lw[i], ubatch, &a));
            act = a > act ? a : act;
        }
    }
    CL_GUARD(cl_secmem_alloc(act ? act : 64, (void **)&s->act_mem));
    s->act.data = s->act_mem;
    s->act.cap = act ? act : 64;
    *out = s;
    s = NULL;
out:
    cl_model_seq_free(s);
    return rc;
}

void cl_model_seq_free(struct cl_model_seq *s)
{
    if (!s)
        return;
    cl_secmem_free(s->mem);
    cl_secmem_free(s->act_mem);
    free(s->slots);
    free(s->k_off);
    free(s->v_off);
    free(s);
}

void cl_model_seq_reset(struct cl_model_seq *s)
{
    if (!s)
        return;
    size_t el = s->kv_f16 ? sizeof(uint16_t) : sizeof(float);
    cl_wipe(s->k_cache, s->kv_floats_k * el);
    cl_wipe(s->v_cache, s->kv_floats_v * el);
    s->pos = 0;
}

cl_err cl_model_seq_truncate(struct cl_model_seq *s, uint32_t pos)
{
    if (!s || pos > s->pos)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "truncate position %u beyond %u", pos, s ? s->pos : 0);
    /* a ring keeps the window before pos only if nothing after it wrapped over it */
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++)
        if (s->slots[il] < s->n_ctx && (uint64_t)s->pos - pos + s->m->hp.sliding_window > s->slots[il] + 1ull)
            return cl_err_fail(CL_E_CORE_STATE, "truncate by %u positions exceeds the sliding-window ring of layer %u",
                               s->pos - pos, il);
    s->pos = pos;
    return CL_OK;
}

int32_t cl_model_argmax(const float *logits, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return (int32_t)best;
}

/* ---- attention ------------------------------------------------------- */

struct cl_model_attn_job {
    struct cl_model_seq *s;
    uint32_t il;
    uint32_t n_tok;
    uint32_t pos0;
    uint32_t t0; /* queries of rows [t0, n_tok) only */
    bool non_causal; /* every row sees the whole batch (an image block) */
};

static void cl_model_attn_worker(void *arg, unsigned ith, unsigned nth)
{
    const struct cl_model_attn_job *j = arg;
    struct cl_model_seq *s = j->s;
    const struct cl_model *m = s->m;
    const struct cl_model_hparams *hp = &m->hp;
    const struct cl_model_layer *L = &m->layers[j->il];
    uint32_t dk = hp->head_dim_k, dv = hp->head_dim_v, nh = hp->n_head;
    uint32_t group = hp->n_head / hp->n_head_kv;
    size_t lo, hi;
    const float *kc = (const float *)s->k_cache + s->k_off[j->il];
    const float *vc = (const float *)s->v_cache + s->v_off[j->il];
    const uint16_t *kc16 = (const uint16_t *)s->k_cache + s->k_off[j->il];
    const uint16_t *vc16 = (const uint16_t *)s->v_cache + s->v_off[j->il];
    const uint32_t slots = s->slots[j->il];
    float *sc = s->scores + (size_t)ith * ((size_t)s->n_ctx + dk);
    uint16_t *q16 = (uint16_t *)(sc + s->n_ctx);
    /* Gemma scales q before the product (as llama.cpp does); llama scales the scores. */
    float kq_scale = hp->arch == CL_MODEL_ARCH_GEMMA3 ? 1.0f : hp->attn_scale;
    cl_pool_split((size_t)(j->n_tok - j->t0) * nh, 1, ith, nth, &lo, &hi);
    for (size_t task = lo; task < hi; task++) {
        uint32_t t = j->t0 + (uint32_t)(task / nh), hd = (uint32_t)(task % nh);
        uint32_t p = j->pos0 + t;
        uint32_t kvh = hd / group;
        uint32_t first = 0;
        /* causal: keys up to the query; non-causal batch: up to its last row (the window still applies) */
        const uint32_t last = j->non_causal ? j->pos0 + j->n_tok - 1 : p;
        if (L->swa && hp->sliding_window > 0 && p + 1 > hp->sliding_window)
            first = p + 1 - hp->sliding_window;
        const float *q = s->q + (size_t)t * nh * dk + (size_t)hd * dk;
        float mx = -INFINITY;
        /* with an fp16 cache, q is rounded to fp16 too, as ggml's F16 matmul does */
        if (s->kv_f16)
            cl_k_fp32_to_fp16_row(q, q16, dk);
        for (uint32_t kp = first; kp <= last; kp++) {
            size_t ko = (size_t)(kp % slots) * s->kv_k_row + (size_t)kvh * dk;
            float d = (s->kv_f16 ? cl_k_vec_dot(CL_GGML_F16, kc16 + ko, q16, dk) : cl_k_dot_f32(q, kc + ko, dk)) *
                      kq_scale;
            sc[kp] = d;
            if (d > mx)
                mx = d;
        }
        double sum = 0.0;
        for (uint32_t kp = first; kp <= last; kp++) {
            float e = expf(sc[kp] - mx);
            sc[kp] = e;
            sum += (double)e;
        }
        float inv = (float)(1.0 / sum);
        float *o = s->att + (size_t)t * nh * dv + (size_t)hd * dv;
        for (uint32_t i = 0; i < dv; i++)
            o[i] = 0.0f;
        for (uint32_t kp = first; kp <= last; kp++) {
            size_t vo = (size_t)(kp % slots) * s->kv_v_row + (size_t)kvh * dv;
            if (s->kv_f16)
                cl_k_axpy_f16(o, sc[kp] * inv, vc16 + vo, dv);
            else
                cl_k_axpy_f32(o, sc[kp] * inv, vc + vo, dv);
        }
    }
}

/* ---- one micro-batch --------------------------------------------------- */

static void cl_model_norm_rows(float *dst, const float *src, const float *w, uint32_t n_tok, uint32_t n, float eps)
{
    for (uint32_t t = 0; t < n_tok; t++)
        cl_k_rmsnorm_f32(dst + (size_t)t * n, src + (size_t)t * n, w, n, eps);
}

/* Input rows come from tokens (looked up and scaled) or, when tokens is
 * NULL, from embd (n_embd floats per row, used as given). */
static cl_err cl_model_forward(struct cl_model_seq *s, const int32_t *tokens, const float *embd, bool non_causal,
                               uint32_t n_tok, float *logits, bool all_logits)
{
    const struct cl_model *m = s->m;
    const struct cl_model_hparams *hp = &m->hp;
    struct cl_pool *pool = s->pool;
    uint32_t E = hp->n_embd, dk = hp->head_dim_k, dv = hp->head_dim_v;
    uint32_t qw = hp->n_head * dk, kw = hp->n_head_kv * dk, vw = hp->n_head_kv * dv, aw = hp->n_head * dv;
    uint32_t pos0 = s->pos;
    cl_err rc = CL_OK;

    for (uint32_t t = 0; t < n_tok; t++) {
        float *xr = s->x + (size_t)t * E;
        if (!tokens) {
            memcpy(xr, embd + (size_t)t * E, (size_t)E * sizeof(float));
            continue;
        }
        CL_GUARD(cl_model_get_row(&m->tok_embd, (uint32_t)tokens[t], xr));
        if (hp->embd_scale != 1.0f)
            for (uint32_t i = 0; i < E; i++)
                xr[i] *= hp->embd_scale;
    }

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct cl_model_layer *L = &m->layers[il];
        cl_model_norm_rows(s->h, s->x, L->attn_norm, n_tok, E, hp->rms_eps);
        {
            const struct cl_model_w *ws[3] = {&L->wq, &L->wk, &L->wv};
            float *ys[3] = {s->q, s->k, s->v};
            size_t ld[3] = {qw, kw, vw};
            CL_GUARD(cl_model_matmul_multi(pool, ws, ys, ld, 3, s->h, E, n_tok, &s->act));
        }
        for (uint32_t t = 0; t < n_tok; t++) {
            uint32_t p = pos0 + t;
            float *q = s->q + (size_t)t * qw, *k = s->k + (size_t)t * kw;
            for (uint32_t hd = 0; hd < hp->n_head; hd++) {
                float *qh = q + (size_t)hd * dk;
                if (hp->qk_norm)
                    cl_k_rmsnorm_f32(qh, qh, L->q_norm, dk, hp->rms_eps);
                cl_model_rope(qh, hp->n_rot, hp->rope_mode, p, L->rope_base, L->rope_freq_scale,
                              m->rope_freqs);
                if (hp->arch == CL_MODEL_ARCH_GEMMA3)
                    for (uint32_t i = 0; i < dk; i++)
                        qh[i] *= hp->attn_scale;
            }
            for (uint32_t hd = 0; hd < hp->n_head_kv; hd++) {
                float *kh = k + (size_t)hd * dk;
                if (hp->qk_norm)
                    cl_k_rmsnorm_f32(kh, kh, L->k_norm, dk, hp->rms_eps);
                cl_model_rope(kh, hp->n_rot, hp->rope_mode, p, L->rope_base, L->rope_freq_scale,
                              m->rope_freqs);
            }
            uint32_t slot = p % s->slots[il];
            if (s->kv_f16) {
                cl_k_fp32_to_fp16_row(k, (uint16_t *)s->k_cache + s->k_off[il] + (size_t)slot * s->kv_k_row, kw);
                cl_k_fp32_to_fp16_row(s->v + (size_t)t * vw,
                                      (uint16_t *)s->v_cache + s->v_off[il] + (size_t)slot * s->kv_v_row, vw);
            } else {
                memcpy((float *)s->k_cache + s->k_off[il] + (size_t)slot * s->kv_k_row, k, (size_t)kw * sizeof(float));
                memcpy((float *)s->v_cache + s->v_off[il] + (size_t)slot * s->kv_v_row, s->v + (size_t)t * vw,
                       (size_t)vw * sizeof(float));
            }
        }
        /* The last layer only needs rows whose logits are wanted (its K/V are
         * already stored), as llama.cpp's inp_out_ids. */
        uint32_t t0 = 0;
        if (il + 1 == hp->n_layer && !all_logits)
            t0 = logits ? n_tok - 1 : n_tok;
        if (t0 == n_tok)
            continue;
        uint32_t nt = n_tok - t0;
        float *x = s->x + (size_t)t0 * E, *o = s->o + (size_t)t0 * E, *h = s->h + (size_t)t0 * E;
        float *gg = s->g + (size_t)t0 * hp->n_ff, *uu = s->u + (size_t)t0 * hp->n_ff;
        struct cl_model_attn_job job = {s, il, n_tok, pos0, t0, non_causal};
        cl_pool_run(pool, cl_model_attn_worker, &job);
        CL_GUARD(cl_model_matmul(pool, &L->wo, s->att + (size_t)t0 * aw, aw, nt, o, E, &s->act));
        if (hp->post_norms)
            cl_model_norm_rows(o, o, L->post_attn_norm, nt, E, hp->rms_eps);
        cl_k_add_f32(x, o, (size_t)nt * E);

        cl_model_norm_rows(h, x, L->ffn_norm, nt, E, hp->rms_eps);
        {
            const struct cl_model_w *ws[2] = {&L->gate, &L->up};
            float *ys[2] = {gg, uu};
            size_t ld[2] = {hp->n_ff, hp->n_ff};
            CL_GUARD(cl_model_matmul_multi(pool, ws, ys, ld, 2, h, E, nt, &s->act));
        }
        size_t nf = (size_t)nt * hp->n_ff;
        if (hp->gelu)
            cl_k_geglu_ggml_f32(gg, gg, uu, nf);
        else
            cl_k_swiglu_f32(gg, gg, uu, nf);
        CL_GUARD(cl_model_matmul(pool, &L->down, gg, hp->n_ff, nt, o, E, &s->act));
        if (hp->post_norms)
            cl_model_norm_rows(o, o, L->post_ffn_norm, nt, E, hp->rms_eps);
        cl_k_add_f32(x, o, (size_t)nt * E);
    }

    if (logits) {
        uint32_t first = all_logits ? 0 : n_tok - 1;
        uint32_t rows = n_tok - first;
        cl_model_norm_rows(s->h, s->x + (size_t)first * E, m->output_norm, rows, E, hp->rms_eps);
        CL_GUARD(cl_model_matmul(pool, &m->output, s->h, E, rows, logits, hp->n_vocab, &s->act));
    }
    s->pos += n_tok;
out:
    return rc;
}

cl_err cl_model_seq_eval(struct cl_model_seq *s, const int32_t *tokens, size_t n, float *logits, bool all_logits)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(s && (tokens || n == 0), CL_E_CORE_INVALID_ARG, "sequence or tokens is NULL");
    CL_ENSURE_D(n > 0, CL_E_CORE_INVALID_ARG, "no tokens to evaluate");
    CL_ENSURE_D(n <= (size_t)(s->n_ctx - s->pos), CL_E_INFER_MODEL_CTX_FULL,
                "%zu tokens at position %u exceed context %u", n, s->pos, s->n_ctx);
    for (size_t i = 0; i < n; i++)
        CL_ENSURE_D(tokens[i] >= 0 && (uint32_t)tokens[i] < s->m->hp.n_vocab, CL_E_INFER_MODEL_TOKEN,
                    "token %d at index %zu not in vocabulary of %u", tokens[i], i, s->m->hp.n_vocab);
    for (size_t done = 0; done < n;) {
        uint32_t chunk = (uint32_t)(n - done < s->ubatch ? n - done : s->ubatch);
        bool last = done + chunk == n;
        float *lg = NULL;
        if (logits && all_logits)
            lg = logits + done * s->m->hp.n_vocab;
        else if (logits && last)
            lg = logits;
        CL_GUARD(cl_model_forward(s, tokens + done, NULL, false, chunk, lg, all_logits));
        done += chunk;
    }
out:
    return rc;
}

cl_err cl_model_seq_eval_embd(struct cl_model_seq *s, const float *embd, size_t n, bool non_causal, float *logits,
                              bool all_logits)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(s && embd, CL_E_CORE_INVALID_ARG, "sequence or embeddings NULL");
    CL_ENSURE_D(n > 0, CL_E_CORE_INVALID_ARG, "no embeddings to evaluate");
    CL_ENSURE_D(n <= (size_t)(s->n_ctx - s->pos), CL_E_INFER_MODEL_CTX_FULL,
                "%zu embeddings at position %u exceed context %u", n, s->pos, s->n_ctx);
    /* a non-causal block must be one forward pass, or its first rows would miss the later ones */
    CL_ENSURE_D(!non_causal || n <= s->ubatch, CL_E_INFER_MODEL_CTX,
                "non-causal block of %zu rows exceeds the batch size %u", n, s->ubatch);
    const size_t E = s->m->hp.n_embd;
    for (size_t i = 0; i < n * E; i++)
        CL_ENSURE_D(isfinite(embd[i]), CL_E_CORE_INVALID_ARG, "embedding row %zu is not finite", i / E);
    for (size_t done = 0; done < n;) {
        uint32_t chunk = (uint32_t)(n - done < s->ubatch ? n - done : s->ubatch);
        bool last = done + chunk == n;
        float *lg = NULL;
        if (logits && all_logits)
            lg = logits + done * s->m->hp.n_vocab;
        else if (logits && last)
            lg = logits;
        CL_GUARD(cl_model_forward(s, NULL, embd + done * E, non_causal, chunk, lg, all_logits));
        done += chunk;
    }
out:
    return rc;
}
