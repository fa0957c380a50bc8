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

/* Scratch for one forward pass of up to `rows` input rows, from one sequence
 * or several (cl_model_batch): activations, attention scores per thread for
 * up to n_ctx positions, the row table and the quantized activations. */
struct cl_model_scratch {
    uint32_t rows;
    uint32_t n_ctx;
    float *x, *h, *q, *k, *v, *att, *o, *g, *u;
    float *scores; /* [thread][n_ctx + head_dim_k] */
    struct cl_model_row *row;
    uint32_t *sel;
    uint8_t *mem;  /* one secure allocation holding all of the above */
    struct cl_model_act act;
    uint8_t *act_mem;
};

/* One input row of a forward pass: the sequence it belongs to, its position
 * there, the last key position it may see (itself, or the end of a
 * non-causal block), its input (a token id, or an embedding when token < 0)
 * and where its logits go (NULL: not wanted). */
struct cl_model_row {
    struct cl_model_seq *s;
    uint32_t pos;
    uint32_t last;
    int32_t token;
    const float *embd;
    float *logits;
};

_Static_assert(sizeof(struct cl_model_row) <= 12 * sizeof(float), "row table as cl_model_batch_mem_need counts it");

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
    uint8_t *kv_mem;                 /* K then V, one secure allocation */
    struct cl_model_scratch *own;    /* NULL for a KV-only sequence (cl_model_batch) */
};

uint32_t cl_model_seq_pos(const struct cl_model_seq *s) { return s->pos; }
uint32_t cl_model_seq_ctx(const struct cl_model_seq *s) { return s->n_ctx; }
uint32_t cl_model_seq_ubatch(const struct cl_model_seq *s) { return s->ubatch; }

static void cl_model_scratch_free(struct cl_model_scratch *sc)
{
    if (!sc)
        return;
    cl_secmem_free(sc->mem);
    cl_secmem_free(sc->act_mem);
    free(sc);
}

/* Scratch for T rows over sequences of up to n_ctx positions on nth threads. */
static cl_err cl_model_scratch_new(const struct cl_model *m, uint32_t T, uint32_t n_ctx, unsigned nth,
                                   struct cl_model_scratch **out)
{
    cl_err rc = CL_OK;
    const struct cl_model_hparams *hp = &m->hp;
    struct cl_model_scratch *sc = calloc(1, sizeof(*sc));
    size_t qw = (size_t)hp->n_head * hp->head_dim_k, kw = (size_t)hp->n_head_kv * hp->head_dim_k;
    size_t vw = (size_t)hp->n_head_kv * hp->head_dim_v, aw = (size_t)hp->n_head * hp->head_dim_v;
    size_t sizes[12], offs[12], off = 0, act = 0;
    CL_ENSURE(sc, CL_E_CORE_NOMEM);
    sc->rows = T;
    sc->n_ctx = n_ctx;
    sizes[0] = (size_t)T * hp->n_embd; /* x */
    sizes[1] = (size_t)T * (hp->n_embd > aw ? hp->n_embd : aw); /* h */
    sizes[2] = T * qw;
    sizes[3] = T * kw;
    sizes[4] = T * vw;
    sizes[5] = T * aw;  /* att */
    sizes[6] = (size_t)T * hp->n_embd; /* o */
    sizes[7] = (size_t)T * hp->n_ff;
    sizes[8] = (size_t)T * hp->n_ff;
    sizes[9] = (size_t)(nth ? nth : 1) * ((size_t)n_ctx + hp->head_dim_k); /* scores, then q as fp16 */
    /* the row table and the row selection, in float units */
    sizes[10] = ((size_t)T * sizeof(struct cl_model_row) + sizeof(float) - 1) / sizeof(float);
    sizes[11] = T;
    for (size_t i = 0; i < 12; i++) {
        size_t bytes;
        offs[i] = off;
        CL_GUARD(cl_size_mul(sizes[i], sizeof(float), &bytes));
        bytes = (bytes + 63) & ~(size_t)63;
        CL_GUARD(cl_size_add(off, bytes, &off));
    }
    CL_GUARD(cl_secmem_alloc(off, (void **)&sc->mem));
    float **ptrs[10] = {&sc->x, &sc->h, &sc->q, &sc->k, &sc->v, &sc->att, &sc->o, &sc->g, &sc->u, &sc->scores};
    for (size_t i = 0; i < 10; i++)
        *ptrs[i] = (float *)(sc->mem + offs[i]);
    sc->row = (struct cl_model_row *)(void *)(sc->mem + offs[10]);
    sc->sel = (uint32_t *)(void *)(sc->mem + offs[11]);
    /* The largest quantized activation any matmul needs. */
    CL_GUARD(cl_model_act_size(&m->output, T, &act));
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct cl_model_layer *L = &m->layers[il];
        const struct cl_model_w *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < 7; i++) {
            size_t a;
            CL_GUARD(cl_model_act_size(lw[i], T, &a));
            act = a > act ? a : act;
        }
    }
    CL_GUARD(cl_secmem_alloc(act ? act : 64, (void **)&sc->act_mem));
    sc->act.data = sc->act_mem;
    sc->act.cap = act ? act : 64;
    *out = sc;
    sc = NULL;
out:
    cl_model_scratch_free(sc);
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
    {
        size_t el = s->kv_f16 ? sizeof(uint16_t) : sizeof(float), kb, vb, total;
        CL_GUARD(cl_size_mul(s->kv_floats_k, el, &kb));
        CL_GUARD(cl_size_mul(s->kv_floats_v, el, &vb));
        kb = (kb + 63) & ~(size_t)63;
        CL_GUARD(cl_size_add(kb, vb, &total));
        CL_GUARD(cl_secmem_alloc(total ? total : 64, (void **)&s->kv_mem));
        s->k_cache = s->kv_mem;
        s->v_cache = s->kv_mem + kb;
    }
    if (!prm->kv_only)
        CL_GUARD(cl_model_scratch_new(m, ubatch, n_ctx, cl_pool_threads(pool), &s->own));
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
    cl_secmem_free(s->kv_mem);
    cl_model_scratch_free(s->own);
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

/* Attention of the selected rows of one layer, each over its own sequence's
 * cache; query row sel[i] (or i without a selection) writes att row i. */
struct cl_model_attn_job {
    struct cl_model_scratch *sc;
    const struct cl_model *m;
    uint32_t il;
    uint32_t n; /* rows to compute */
    const uint32_t *sel; /* NULL: rows 0..n-1 */
};

static void cl_model_attn_worker(void *arg, unsigned ith, unsigned nth)
{
    const struct cl_model_attn_job *j = arg;
    struct cl_model_scratch *scr = j->sc;
    const struct cl_model *m = j->m;
    const struct cl_model_hparams *hp = &m->hp;
    const struct cl_model_layer *L = &m->layers[j->il];
    uint32_t dk = hp->head_dim_k, dv = hp->head_dim_v, nh = hp->n_head;
    uint32_t group = hp->n_head / hp->n_head_kv;
    size_t lo, hi;
    float *sc = scr->scores + (size_t)ith * ((size_t)scr->n_ctx + dk);
    uint16_t *q16 = (uint16_t *)(sc + scr->n_ctx);
    /* Gemma scales q before the product (as llama.cpp does); llama scales the scores. */
    float kq_scale = hp->arch == CL_MODEL_ARCH_GEMMA3 ? 1.0f : hp->attn_scale;
    cl_pool_split((size_t)j->n * nh, 1, ith, nth, &lo, &hi);
    for (size_t task = lo; task < hi; task++) {
        uint32_t i = (uint32_t)(task / nh), hd = (uint32_t)(task % nh);
        uint32_t t = j->sel ? j->sel[i] : i;
        const struct cl_model_row *row = &scr->row[t];
        const struct cl_model_seq *s = row->s;
        const float *kc = (const float *)s->k_cache + s->k_off[j->il];
        const float *vc = (const float *)s->v_cache + s->v_off[j->il];
        const uint16_t *kc16 = (const uint16_t *)s->k_cache + s->k_off[j->il];
        const uint16_t *vc16 = (const uint16_t *)s->v_cache + s->v_off[j->il];
        const uint32_t slots = s->slots[j->il];
        uint32_t p = row->pos;
        uint32_t kvh = hd / group;
        uint32_t first = 0;
        /* causal: keys up to the query; non-causal block: up to its last row (the window still applies) */
        const uint32_t last = row->last;
        if (L->swa && hp->sliding_window > 0 && p + 1 > hp->sliding_window)
            first = p + 1 - hp->sliding_window;
        const float *q = scr->q + (size_t)t * nh * dk + (size_t)hd * dk;
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
        float *o = scr->att + (size_t)i * nh * dv + (size_t)hd * dv;
        for (uint32_t d = 0; d < dv; d++)
            o[d] = 0.0f;
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

/* Per-row work split over the pool (rows [t0, t1) per thread); each row's
 * result depends on that row alone, so the split never changes a value. */
struct cl_model_rowjob {
    struct cl_model_scratch *sc;
    const struct cl_model *m;
    const struct cl_model_layer *L;
    uint32_t il;
    uint32_t n;
    void (*fn)(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1);
};

static void cl_model_rowjob_worker(void *arg, unsigned ith, unsigned nth)
{
    const struct cl_model_rowjob *j = arg;
    size_t lo, hi;
    cl_pool_split(j->n, 1, ith, nth, &lo, &hi);
    if (lo < hi)
        j->fn(j, (uint32_t)lo, (uint32_t)hi);
}

static void cl_model_rows_par(struct cl_pool *pool, struct cl_model_rowjob *j)
{
    if (j->n >= CL_MODEL_PAR_ROWS)
        cl_pool_run(pool, cl_model_rowjob_worker, j);
    else if (j->n)
        j->fn(j, 0, j->n);
}

/* h = attn_norm(x) */
static void cl_model_rows_attn_norm(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1)
{
    const uint32_t E = j->m->hp.n_embd;
    cl_model_norm_rows(j->sc->h + (size_t)t0 * E, j->sc->x + (size_t)t0 * E, j->L->attn_norm, t1 - t0, E,
                       j->m->hp.rms_eps);
}

/* q and k: norms (gemma3), RoPE, the attention scale; then K and V into each row's sequence cache */
static void cl_model_rows_qk(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1)
{
    const struct cl_model_hparams *hp = &j->m->hp;
    const struct cl_model_layer *L = j->L;
    const struct cl_model_scratch *sc = j->sc;
    const uint32_t il = j->il, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const uint32_t qw = hp->n_head * dk, kw = hp->n_head_kv * dk, vw = hp->n_head_kv * dv;
    for (uint32_t t = t0; t < t1; t++) {
        struct cl_model_seq *s = sc->row[t].s;
        uint32_t p = sc->row[t].pos;
        float *q = sc->q + (size_t)t * qw, *k = sc->k + (size_t)t * kw;
        for (uint32_t hd = 0; hd < hp->n_head; hd++) {
            float *qh = q + (size_t)hd * dk;
            if (hp->qk_norm)
                cl_k_rmsnorm_f32(qh, qh, L->q_norm, dk, hp->rms_eps);
            cl_model_rope(qh, hp->n_rot, hp->rope_mode, p, L->rope_base, L->rope_freq_scale, j->m->rope_freqs);
            if (hp->arch == CL_MODEL_ARCH_GEMMA3)
                for (uint32_t i = 0; i < dk; i++)
                    qh[i] *= hp->attn_scale;
        }
        for (uint32_t hd = 0; hd < hp->n_head_kv; hd++) {
            float *kh = k + (size_t)hd * dk;
            if (hp->qk_norm)
                cl_k_rmsnorm_f32(kh, kh, L->k_norm, dk, hp->rms_eps);
            cl_model_rope(kh, hp->n_rot, hp->rope_mode, p, L->rope_base, L->rope_freq_scale, j->m->rope_freqs);
        }
        uint32_t slot = p % s->slots[il];
        if (s->kv_f16) {
            cl_k_fp32_to_fp16_row(k, (uint16_t *)s->k_cache + s->k_off[il] + (size_t)slot * s->kv_k_row, kw);
            cl_k_fp32_to_fp16_row(sc->v + (size_t)t * vw,
                                  (uint16_t *)s->v_cache + s->v_off[il] + (size_t)slot * s->kv_v_row, vw);
        } else {
            memcpy((float *)s->k_cache + s->k_off[il] + (size_t)slot * s->kv_k_row, k, (size_t)kw * sizeof(float));
            memcpy((float *)s->v_cache + s->v_off[il] + (size_t)slot * s->kv_v_row, sc->v + (size_t)t * vw,
                   (size_t)vw * sizeof(float));
        }
    }
}

/* after the attention output: o = post_attn_norm(o) (gemma3), x += o, h = ffn_norm(x) */
static void cl_model_rows_attn_out(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1)
{
    const struct cl_model_hparams *hp = &j->m->hp;
    const size_t E = hp->n_embd;
    for (uint32_t t = t0; t < t1; t++) {
        float *x = j->sc->x + t * E, *o = j->sc->o + t * E;
        if (hp->post_norms)
            cl_k_rmsnorm_f32(o, o, j->L->post_attn_norm, E, hp->rms_eps);
        cl_k_add_f32(x, o, E);
        cl_k_rmsnorm_f32(j->sc->h + t * E, x, j->L->ffn_norm, E, hp->rms_eps);
    }
}

/* the gated activation, g = act(g) * u */
static void cl_model_rows_glu(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1)
{
    const size_t F = j->m->hp.n_ff;
    float *g = j->sc->g + t0 * F, *u = j->sc->u + t0 * F;
    if (j->m->hp.gelu)
        cl_k_geglu_ggml_f32(g, g, u, (t1 - t0) * F);
    else
        cl_k_swiglu_f32(g, g, u, (t1 - t0) * F);
}

/* after the FFN: o = post_ffn_norm(o) (gemma3), x += o */
static void cl_model_rows_ffn_out(const struct cl_model_rowjob *j, uint32_t t0, uint32_t t1)
{
    const struct cl_model_hparams *hp = &j->m->hp;
    const size_t E = hp->n_embd;
    for (uint32_t t = t0; t < t1; t++) {
        float *x = j->sc->x + t * E, *o = j->sc->o + t * E;
        if (hp->post_norms)
            cl_k_rmsnorm_f32(o, o, j->L->post_ffn_norm, E, hp->rms_eps);
        cl_k_add_f32(x, o, E);
    }
}

/* One forward pass over the n_tok rows of sc->row, which may belong to
 * different sequences: every product is one pass over the weights for all
 * rows, attention runs per row over its own sequence's cache. Each row's
 * result depends only on its own inputs and cache (the kernels compute every
 * column alike whatever the number of columns), so a sequence gives the same
 * values alone or batched with others. The caller checked positions,
 * contexts and rings; positions are not advanced here. */
static cl_err cl_model_forward(struct cl_model_scratch *sc, struct cl_pool *pool, const struct cl_model *m,
                               uint32_t n_tok)
{
    const struct cl_model_hparams *hp = &m->hp;
    const struct cl_model_row *rows = sc->row;
    uint32_t E = hp->n_embd, dk = hp->head_dim_k, dv = hp->head_dim_v;
    uint32_t qw = hp->n_head * dk, kw = hp->n_head_kv * dk, vw = hp->n_head_kv * dv, aw = hp->n_head * dv;
    cl_err rc = CL_OK;

    for (uint32_t t = 0; t < n_tok; t++) {
        float *xr = sc->x + (size_t)t * E;
        if (rows[t].token < 0) {
            memcpy(xr, rows[t].embd, (size_t)E * sizeof(float));
            continue;
        }
        CL_GUARD(cl_model_get_row(&m->tok_embd, (uint32_t)rows[t].token, xr));
        if (hp->embd_scale != 1.0f)
            for (uint32_t i = 0; i < E; i++)
                xr[i] *= hp->embd_scale;
    }
    /* rows whose logits are wanted: the only ones the last layer needs past
     * storing K/V, as llama.cpp's inp_out_ids */
    uint32_t n_sel = 0;
    for (uint32_t t = 0; t < n_tok; t++)
        if (rows[t].logits)
            sc->sel[n_sel++] = t;

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const struct cl_model_layer *L = &m->layers[il];
        struct cl_model_rowjob rj = {sc, m, L, il, n_tok, cl_model_rows_attn_norm};
        cl_model_rows_par(pool, &rj);
        {
            const struct cl_model_w *ws[3] = {&L->wq, &L->wk, &L->wv};
            float *ys[3] = {sc->q, sc->k, sc->v};
            size_t ld[3] = {qw, kw, vw};
            CL_GUARD(cl_model_matmul_multi(pool, ws, ys, ld, 3, sc->h, E, n_tok, &sc->act));
        }
        rj.fn = cl_model_rows_qk;
        cl_model_rows_par(pool, &rj);
        bool last_layer = il + 1 == hp->n_layer;
        uint32_t nt = last_layer ? n_sel : n_tok;
        if (nt == 0)
            continue;
        struct cl_model_attn_job job = {sc, m, il, nt, last_layer ? sc->sel : NULL};
        cl_pool_run(pool, cl_model_attn_worker, &job);
        if (last_layer) /* the wanted rows' residuals, packed in front like their att rows */
            for (uint32_t i = 0; i < nt; i++)
                if (sc->sel[i] != i)
                    memcpy(sc->x + (size_t)i * E, sc->x + (size_t)sc->sel[i] * E, (size_t)E * sizeof(float));
        float *o = sc->o, *h = sc->h, *gg = sc->g, *uu = sc->u;
        CL_GUARD(cl_model_matmul(pool, &L->wo, sc->att, aw, nt, o, E, &sc->act));
        rj.n = nt;
        rj.fn = cl_model_rows_attn_out;
        cl_model_rows_par(pool, &rj);
        {
            const struct cl_model_w *ws[2] = {&L->gate, &L->up};
            float *ys[2] = {gg, uu};
            size_t ld[2] = {hp->n_ff, hp->n_ff};
            CL_GUARD(cl_model_matmul_multi(pool, ws, ys, ld, 2, h, E, nt, &sc->act));
        }
        rj.fn = cl_model_rows_glu;
        cl_model_rows_par(pool, &rj);
        CL_GUARD(cl_model_matmul(pool, &L->down, gg, hp->n_ff, nt, o, E, &sc->act));
        rj.fn = cl_model_rows_ffn_out;
        cl_model_rows_par(pool, &rj);
    }

    if (n_sel) {
        cl_model_norm_rows(sc->h, sc->x, m->output_norm, n_sel, E, hp->rms_eps);
        /* one product per run of rows whose logits are contiguous in memory */
        for (uint32_t i = 0; i < n_sel;) {
            uint32_t j = i + 1;
            while (j < n_sel && rows[sc->sel[j]].logits == rows[sc->sel[j - 1]].logits + hp->n_vocab)
                j++;
            CL_GUARD(cl_model_matmul(pool, &m->output, sc->h + (size_t)i * E, E, j - i, rows[sc->sel[i]].logits,
                                     hp->n_vocab, &sc->act));
            i = j;
        }
    }
out:
    return rc;
}

/* Evaluates n rows of one sequence on its own scratch, ubatch rows per pass:
 * tokens, or embeddings when tokens is NULL. */
static cl_err cl_model_seq_run(struct cl_model_seq *s, const int32_t *tokens, const float *embd, size_t n,
                               bool non_causal, float *logits, bool all_logits)
{
    cl_err rc = CL_OK;
    struct cl_model_scratch *sc = s->own;
    const size_t E = s->m->hp.n_embd;
    CL_ENSURE_D(sc, CL_E_CORE_STATE, "a KV-only sequence is evaluated through a cl_model_batch");
    for (size_t done = 0; done < n;) {
        uint32_t chunk = (uint32_t)(n - done < s->ubatch ? n - done : s->ubatch);
        bool last = done + chunk == n;
        for (uint32_t t = 0; t < chunk; t++) {
            struct cl_model_row *r = &sc->row[t];
            r->s = s;
            r->pos = s->pos + t;
            r->last = non_causal ? s->pos + chunk - 1 : r->pos;
            r->token = tokens ? tokens[done + t] : -1;
            r->embd = tokens ? NULL : embd + (done + t) * E;
            r->logits = NULL;
            if (logits && all_logits)
                r->logits = logits + (done + t) * s->m->hp.n_vocab;
            else if (logits && last && t + 1 == chunk)
                r->logits = logits;
        }
        rc = cl_model_forward(sc, s->pool, s->m, chunk);
        cl_wipe(sc->row, (size_t)chunk * sizeof(*sc->row));
        CL_GUARD(rc);
        s->pos += chunk;
        done += chunk;
    }
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
    CL_GUARD(cl_model_seq_run(s, tokens, NULL, n, false, logits, all_logits));
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
    CL_GUARD(cl_model_seq_run(s, NULL, embd, n, non_causal, logits, all_logits));
out:
    return rc;
}

/* ---- several sequences per forward pass ------------------------------- */

struct cl_model_batch {
    const struct cl_model *m;
    struct cl_pool *pool;
    struct cl_model_scratch *sc;
};

cl_err cl_model_batch_new(const struct cl_model *m, uint32_t n_rows, uint32_t n_ctx, struct cl_pool *pool,
                          struct cl_model_batch **out)
{
    cl_err rc = CL_OK;
    struct cl_model_batch *b = NULL;
    CL_ENSURE_D(m && out, CL_E_CORE_INVALID_ARG, "model or out is NULL");
    CL_ENSURE_D(n_rows >= 1 && n_rows <= 4096, CL_E_CORE_INVALID_ARG, "batch of %u rows not in 1..4096", n_rows);
    CL_ENSURE_D(n_ctx >= 1 && n_ctx <= CL_MODEL_MAX_CTX, CL_E_INFER_MODEL_CTX, "n_ctx %u not in 1..%u", n_ctx,
                CL_MODEL_MAX_CTX);
    b = calloc(1, sizeof(*b));
    CL_ENSURE(b, CL_E_CORE_NOMEM);
    b->m = m;
    b->pool = pool;
    CL_GUARD(cl_model_scratch_new(m, n_rows, n_ctx, cl_pool_threads(pool), &b->sc));
    *out = b;
    b = NULL;
out:
    cl_model_batch_free(b);
    return rc;
}

void cl_model_batch_free(struct cl_model_batch *b)
{
    if (!b)
        return;
    cl_model_scratch_free(b->sc);
    free(b);
}

uint32_t cl_model_batch_rows(const struct cl_model_batch *b) { return b->sc->rows; }

cl_err cl_model_batch_eval(struct cl_model_batch *b, const struct cl_model_batch_item *it, size_t n_items)
{
    cl_err rc = CL_OK;
    uint32_t n_tok = 0;
    CL_ENSURE_D(b && (it || n_items == 0), CL_E_CORE_INVALID_ARG, "batch or items NULL");
    CL_ENSURE_D(n_items > 0, CL_E_CORE_INVALID_ARG, "no sequences to evaluate");
    const struct cl_model *m = b->m;
    const size_t E = m->hp.n_embd;
    for (size_t i = 0; i < n_items; i++) {
        const struct cl_model_seq *s = it[i].seq;
        CL_ENSURE_D(s && s->m == m, CL_E_CORE_INVALID_ARG, "item %zu: no sequence, or one of another model", i);
        CL_ENSURE_D(it[i].n >= 1 && (it[i].tokens || it[i].embd), CL_E_CORE_INVALID_ARG, "item %zu: no input rows", i);
        CL_ENSURE_D(it[i].n <= b->sc->rows - n_tok, CL_E_CORE_INVALID_ARG, "%u rows exceed the batch of %u",
                    n_tok + it[i].n, b->sc->rows);
        /* a sliding-window ring holds window + ubatch positions: no more per pass */
        CL_ENSURE_D(it[i].n <= s->ubatch, CL_E_INFER_MODEL_CTX, "item %zu: %u rows exceed the sequence's batch size %u",
                    i, it[i].n, s->ubatch);
        CL_ENSURE_D(s->n_ctx <= b->sc->n_ctx, CL_E_INFER_MODEL_CTX, "item %zu: context %u exceeds the batch's %u", i,
                    s->n_ctx, b->sc->n_ctx);
        CL_ENSURE_D(it[i].n <= s->n_ctx - s->pos, CL_E_INFER_MODEL_CTX_FULL,
                    "item %zu: %u rows at position %u exceed context %u", i, it[i].n, s->pos, s->n_ctx);
        for (size_t k = 0; k < i; k++)
            CL_ENSURE_D(it[k].seq != s, CL_E_CORE_INVALID_ARG, "items %zu and %zu are the same sequence", k, i);
        for (uint32_t t = 0; t < it[i].n; t++) {
            if (it[i].tokens) {
                int32_t tk = it[i].tokens[t];
                CL_ENSURE_D(tk >= 0 && (uint32_t)tk < m->hp.n_vocab, CL_E_INFER_MODEL_TOKEN,
                            "item %zu: token %d at index %u not in vocabulary of %u", i, tk, t, m->hp.n_vocab);
            } else {
                for (size_t e = 0; e < E; e++)
                    CL_ENSURE_D(isfinite(it[i].embd[t * E + e]), CL_E_CORE_INVALID_ARG,
                                "item %zu: embedding row %u is not finite", i, t);
            }
        }
        n_tok += it[i].n;
    }
    n_tok = 0;
    for (size_t i = 0; i < n_items; i++) {
        struct cl_model_seq *s = it[i].seq;
        for (uint32_t t = 0; t < it[i].n; t++) {
            struct cl_model_row *r = &b->sc->row[n_tok++];
            r->s = s;
            r->pos = s->pos + t;
            r->last = it[i].non_causal ? s->pos + it[i].n - 1 : r->pos;
            r->token = it[i].tokens ? it[i].tokens[t] : -1;
            r->embd = it[i].tokens ? NULL : it[i].embd + t * E;
            r->logits = t + 1 == it[i].n ? it[i].logits : NULL;
        }
    }
    rc = cl_model_forward(b->sc, b->pool, m, n_tok);
    cl_wipe(b->sc->row, (size_t)n_tok * sizeof(*b->sc->row));
    CL_GUARD(rc);
    for (size_t i = 0; i < n_items; i++)
        it[i].seq->pos += it[i].n;
out:
    return rc;
}
