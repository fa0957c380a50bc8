/* The real generator: the conversation rendered with the model's chat
 * template, tokenized, evaluated, and sampled token by token; stop strings
 * and end-of-generation handled by cl_gen.
 *
 * Continuous batching: every request is a sequence with its own KV cache
 * (KV-only, sized for its prompt + max_tokens, its bytes counted against the
 * engine's budget). One scheduler thread runs the steps: each step is one
 * forward pass (cl_model_batch_eval) holding one row per decoding sequence
 * and chunks of the prompts still being read, so the weights are read once
 * for all of them; new sequences join between steps; while others decode, a
 * prompt goes in chunks of CL_ENGINE_CHUNK rows so it does not stall them.
 * Sampling, stop strings and cl_gen run on the scheduler exactly as
 * cl_model_session_generate runs them; the text goes to the request's thread,
 * which hands it to the caller's piece() (a slow client never blocks the
 * step). When max_seqs sequences run, or the KV budget is spent, a request
 * fails with CL_E_PROTO_BUSY (HTTP 429), unless it asked to wait. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/chat.h"
#include "cloister/gguf.h"
#include "cloister/image.h"
#include "cloister/infer/answer.h"
#include "cloister/infer/vision.h"
#include "cloister/infer/model.h"
#include "cloister/infer/pool.h"
#include "cloister/log.h"
#include "cloister/sample.h"
#include "cloister/secmem.h"
#include "cloister/tokenizer.h"
#include "cloister/enclave_runtime.h"

#define CL_ENGINE_DEFAULT_SEQS 4u
#define CL_ENGINE_MAX_SEQS 64u
/* prompt rows per sequence and step while other sequences decode */
#define CL_ENGINE_CHUNK 32u
/* rows per forward pass (an image block must fit in one) */
#define CL_ENGINE_ROWS 256u

struct cl_engine_slot {
    struct cl_model_seq *seq;
    cl_sampler *smp;
    cl_gen *gen;
    int32_t *toks;      /* prompt ids, -1 at image positions */
    size_t n_prompt;
    size_t fed;         /* prompt rows in the cache */
    size_t media_k;     /* next image */
    const struct cl_model_media *media;
    size_t n_media;
    int32_t last;       /* sampled, to be fed at the next step */
    size_t n_out;
    enum cl_gen_stop why;
    cl_err rc;
    size_t kv_bytes;    /* charged to the engine's budget */
    bool decoding;
    /* under the engine's mutex */
    bool done, cancel;
    struct cl_buf text; /* answer text not yet handed to the caller */
    struct cl_buf lens; /* its pieces' lengths (uint32_t), so the caller gets the pieces cl_gen made */
};

struct cl_engine {
    struct cl_gguf *g;
    struct cl_model *m;
    cl_tokenizer *tok;
    struct cl_pool *pool;
    unsigned threads;
    enum cl_chat_template tmpl;
    uint32_t max_prompt_tokens;
    struct cl_gguf *vg; /* vision projector, when set */
    struct cl_vision *vis;
    size_t mmproj_len;
    size_t model_len;
    /* batching */
    uint32_t max_seqs;
    uint32_t max_ctx;
    uint32_t n_rows;
    size_t kv_budget;   /* SIZE_MAX: not bounded */
    struct cl_model_batch *batch;
    float *logits;      /* [max_seqs][n_vocab], secure */
    pthread_t sched;
    bool sched_started;
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* the scheduler waits for sequences */
    pthread_cond_t cv_done; /* requests wait for text, completion or room */
    bool stop;
    struct cl_engine_slot *active[CL_ENGINE_MAX_SEQS];
    uint32_t n_active;
    uint32_t n_reserved;
    size_t kv_used;
    bool hold;          /* tests: no steps until released */
    uint64_t steps;
    uint32_t peak_seqs, peak_rows;
    bool kv_f16; /* sequences' caches in F16 */
    char name[CL_ENGINE_MAX_NAME + 1];
};

cl_err cl_engine_mem_need(const struct cl_engine *e, size_t model_len, uint32_t n_ctx, unsigned threads, size_t *out)
{
    if (!e || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "engine or out is NULL");
    return cl_model_enclave_mem_need(e->m, model_len, e->vis ? e->mmproj_len : 0, n_ctx, threads, out);
}

static void *cl_engine_main(void *arg);

/* The pass scratch and the logits rows for max_seqs sequences of up to
 * max_ctx positions, n_rows rows a pass; the scheduler must be idle. */
static cl_err cl_engine_alloc(struct cl_engine *e)
{
    cl_err rc = CL_OK;
    struct cl_model_batch *b = NULL;
    float *lg = NULL;
    size_t bytes;
    CL_GUARD(cl_model_batch_new(e->m, e->n_rows, e->max_ctx, e->pool, &b));
    CL_GUARD(cl_size_mul((size_t)e->max_seqs * cl_model_hparams(e->m)->n_vocab, sizeof(float), &bytes));
    CL_GUARD(cl_secmem_alloc(bytes, (void **)&lg));
    cl_model_batch_free(e->batch);
    cl_secmem_free(e->logits);
    e->batch = b;
    e->logits = lg;
    b = NULL;
    lg = NULL;
out:
    cl_model_batch_free(b);
    cl_secmem_free(lg);
    return rc;
}

cl_err cl_engine_new(void *model, size_t len, unsigned threads, const char *tmpl_override,
                     uint32_t max_prompt_tokens, struct cl_engine **out)
{
    cl_err rc = CL_OK;
    struct cl_engine *e = calloc(1, sizeof(*e));
    struct cl_gguf_str name;
    CL_ENSURE(e, CL_E_CORE_NOMEM);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv_work, NULL);
    pthread_cond_init(&e->cv_done, NULL);
    e->max_prompt_tokens = max_prompt_tokens;
    e->model_len = len;
    e->threads = threads ? threads : 1;
    CL_GUARD(cl_gguf_open_memory(model, len, &e->g));
    CL_GUARD(cl_gguf_set_writable(e->g, model));
    CL_GUARD(cl_model_load(e->g, &e->m));
    CL_GUARD(cl_tokenizer_new(e->g, &e->tok));
    CL_GUARD(cl_pool_new(e->threads, &e->pool));
    CL_GUARD(cl_chat_for_model(e->g, tmpl_override, &e->tmpl));
    if (cl_gguf_get_str(e->g, "general.name", &name) == CL_OK && name.len)
        snprintf(e->name, sizeof(e->name), "%.*s", (int)name.len, name.p);
    else
        snprintf(e->name, sizeof(e->name), "%s", cl_model_arch_name(cl_model_hparams(e->m)->arch));
    for (char *p = e->name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
            *p = '_';
    e->max_seqs = CL_ENGINE_DEFAULT_SEQS;
    {
        uint64_t ctx = (uint64_t)(max_prompt_tokens ? max_prompt_tokens : 4096) + 4096;
        e->max_ctx = ctx > CL_MODEL_MAX_CTX ? CL_MODEL_MAX_CTX : (uint32_t)ctx;
    }
    e->n_rows = CL_ENGINE_ROWS;
    e->kv_budget = SIZE_MAX;
    CL_GUARD(cl_engine_alloc(e));
    CL_ENSURE_D(pthread_create(&e->sched, NULL, cl_engine_main, e) == 0, CL_E_CORE_NOMEM, "scheduler thread");
    e->sched_started = true;
    *out = e;
    e = NULL;
out:
    cl_engine_free(e);
    return rc;
}

cl_err cl_engine_set_kv_f16(struct cl_engine *e, bool on)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(e, CL_E_CORE_INVALID_ARG, "engine NULL");
    pthread_mutex_lock(&e->mu);
    bool idle = e->n_active == 0 && e->n_reserved == 0;
    if (idle)
        e->kv_f16 = on;
    pthread_mutex_unlock(&e->mu);
    CL_ENSURE_D(idle, CL_E_CORE_STATE, "KV cache type changed while serving");
out:
    return rc;
}

cl_err cl_engine_configure(struct cl_engine *e, uint32_t max_seqs, uint32_t max_ctx, size_t mem_total)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(e, CL_E_CORE_INVALID_ARG, "engine NULL");
    CL_ENSURE_D(max_seqs >= 1 && max_seqs <= CL_ENGINE_MAX_SEQS, CL_E_CORE_INVALID_ARG,
                "max_seqs %u not in 1..%u", max_seqs, CL_ENGINE_MAX_SEQS);
    CL_ENSURE_D(max_ctx >= 1 && max_ctx <= CL_MODEL_MAX_CTX, CL_E_INFER_MODEL_CTX, "max_ctx %u not in 1..%u", max_ctx,
                CL_MODEL_MAX_CTX);
    pthread_mutex_lock(&e->mu);
    bool idle = e->n_active == 0 && e->n_reserved == 0;
    pthread_mutex_unlock(&e->mu);
    CL_ENSURE_D(idle, CL_E_CORE_STATE, "engine configured while serving");
    uint32_t old_seqs = e->max_seqs, old_ctx = e->max_ctx;
    e->max_seqs = max_seqs;
    e->max_ctx = max_ctx;
    rc = cl_engine_alloc(e);
    if (rc != CL_OK) {
        e->max_seqs = old_seqs;
        e->max_ctx = old_ctx;
        goto out;
    }
    e->kv_budget = SIZE_MAX;
    if (mem_total) {
        /* what stays once the model, projector, runtime, pass scratch and
         * logits are held goes to the sequences' caches; at least one
         * sequence of max_ctx (the boot check sized the enclave for it) */
        size_t fixed = 0, scratch = 0, one = 0;
        struct cl_model_seq_params sp = {.n_ctx = max_ctx, .n_ubatch = e->n_rows, .kv_only = true, .kv_f16 = e->kv_f16};
        CL_GUARD(cl_model_batch_mem_need(e->m, e->n_rows, max_ctx, e->threads, &scratch));
        CL_GUARD(cl_model_seq_mem_need(e->m, &sp, e->threads, &one));
        CL_GUARD(cl_size_add(e->model_len, e->vis ? e->mmproj_len : 0, &fixed));
        CL_GUARD(cl_size_add(fixed, CL_MODEL_RUNTIME_BYTES, &fixed));
        CL_GUARD(cl_size_add(fixed, scratch, &fixed));
        CL_GUARD(cl_size_add(fixed, (size_t)max_seqs * cl_model_hparams(e->m)->n_vocab * sizeof(float), &fixed));
        e->kv_budget = mem_total > fixed ? mem_total - fixed : 0;
        if (e->kv_budget < one)
            e->kv_budget = one;
    }
    CL_LOG(CL_LOG_INFO, "engine_sized", CL_LOG_COUNT("max_seqs", max_seqs), CL_LOG_COUNT("max_ctx", max_ctx),
           CL_LOG_COUNT("kv_cache_bits", e->kv_f16 ? 16 : 32),
           CL_LOG_COUNT("rows_per_pass", e->n_rows), CL_LOG_SIZE("kv_budget_bytes", e->kv_budget));
out:
    return rc;
}

cl_err cl_engine_set_vision(struct cl_engine *e, const void *mmproj, size_t len)
{
    cl_err rc = CL_OK;
    struct cl_gguf *g = NULL;
    struct cl_vision *v = NULL;
    CL_ENSURE_D(!e->vis, CL_E_CORE_STATE, "vision encoder already set");
    CL_GUARD(cl_vision_open_memory(mmproj, len, &g, &v));
    CL_GUARD(cl_vision_check_model(v, e->m));
    uint32_t nt = cl_vision_hparams(v)->n_tokens;
    if (nt > e->n_rows) { /* an image block is one pass */
        uint32_t old = e->n_rows;
        e->n_rows = nt;
        rc = cl_engine_alloc(e);
        if (rc != CL_OK) {
            e->n_rows = old;
            goto out;
        }
    }
    e->vg = g;
    e->vis = v;
    e->mmproj_len = len;
    g = NULL;
    v = NULL;
out:
    cl_vision_free(v);
    cl_gguf_free(g);
    return rc;
}

void cl_engine_free(struct cl_engine *e)
{
    if (!e)
        return;
    if (e->sched_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_broadcast(&e->cv_work);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->sched, NULL);
    }
    cl_model_batch_free(e->batch);
    cl_secmem_free(e->logits);
    cl_vision_free(e->vis);
    cl_gguf_free(e->vg);
    cl_pool_free(e->pool);
    cl_tokenizer_free(e->tok);
    cl_model_free(e->m);
    cl_gguf_free(e->g);
    pthread_cond_destroy(&e->cv_work);
    pthread_cond_destroy(&e->cv_done);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const char *cl_engine_name(const struct cl_engine *e) { return e->name; }

/* ---- the scheduler ------------------------------------------------------ */

/* cl_gen's text: kept for the request's thread, which passes it on. */
static int cl_engine_stream(void *user, int32_t token, const char *text, size_t len)
{
    struct cl_engine_slot *sl = user;
    uint32_t n = (uint32_t)len;
    (void)token;
    if (len == 0)
        return 0;
    return len > UINT32_MAX || cl_buf_append(&sl->text, text, len) != CL_OK ||
           cl_buf_append(&sl->lens, &n, sizeof(n)) != CL_OK;
}

/* After the logits of the slot's last fed row: sample, stream, and either
 * stop or keep the token for the next step; as cl_model_session_generate. */
static cl_err cl_engine_sample(struct cl_engine_slot *sl, const float *logits, bool *finished)
{
    cl_err rc = CL_OK;
    int32_t t;
    bool done = false;
    *finished = true;
    CL_GUARD(cl_sampler_sample(sl->smp, logits, &t));
    cl_sampler_accept(sl->smp, t);
    CL_GUARD(cl_gen_push(sl->gen, t, &done));
    if (done && cl_gen_reason(sl->gen) == CL_GEN_STOP_EOG)
        goto out;
    sl->n_out++;
    if (done)
        goto out;
    if (cl_model_seq_pos(sl->seq) >= cl_model_seq_ctx(sl->seq)) {
        CL_GUARD(cl_gen_finish(sl->gen));
        goto out;
    }
    sl->last = t;
    sl->decoding = true;
    *finished = false;
out:
    cl_wipe(&t, sizeof(t));
    return rc;
}

/* Removes slot i from the active set and wakes its request (under mu). */
static void cl_engine_retire(struct cl_engine *e, uint32_t i, cl_err rc)
{
    struct cl_engine_slot *sl = e->active[i];
    sl->rc = rc;
    if (sl->gen && rc == CL_OK && sl->why == CL_GEN_STOP_NONE)
        sl->why = cl_gen_reason(sl->gen) == CL_GEN_STOP_NONE ? CL_GEN_STOP_MAX_TOKENS : cl_gen_reason(sl->gen);
    sl->done = true;
    e->kv_used -= sl->kv_bytes;
    e->active[i] = e->active[--e->n_active];
    e->active[e->n_active] = NULL;
    pthread_cond_broadcast(&e->cv_done);
}

/* One step: one forward pass over every active sequence's next rows. */
static void cl_engine_step(struct cl_engine *e)
{
    struct cl_model_batch_item it[CL_ENGINE_MAX_SEQS];
    struct cl_engine_slot *own[CL_ENGINE_MAX_SEQS];
    size_t n_it = 0, V = cl_model_hparams(e->m)->n_vocab;
    uint32_t rows = 0, n_dec = 0;
    /* under mu: drop cancelled sequences, take the others' next rows */
    for (uint32_t i = 0; i < e->n_active;) {
        if (e->active[i]->cancel) {
            e->active[i]->why = CL_GEN_STOP_CALLBACK;
            cl_engine_retire(e, i, CL_OK);
            continue;
        }
        i++;
    }
    for (uint32_t i = 0; i < e->n_active; i++) {
        struct cl_engine_slot *sl = e->active[i];
        if (!sl->decoding)
            continue;
        it[n_it] = (struct cl_model_batch_item){sl->seq, &sl->last, NULL, 1, false, e->logits + n_it * V};
        own[n_it++] = sl;
        rows++;
        n_dec++;
    }
    for (uint32_t i = 0; i < e->n_active && rows < e->n_rows; i++) {
        struct cl_engine_slot *sl = e->active[i];
        if (sl->decoding)
            continue;
        uint32_t cap = n_dec ? CL_ENGINE_CHUNK : cl_model_seq_ubatch(sl->seq), left = e->n_rows - rows;
        struct cl_model_batch_item x = {.seq = sl->seq};
        if (sl->toks[sl->fed] >= 0) {
            size_t j = sl->fed;
            while (j < sl->n_prompt && sl->toks[j] >= 0 && j - sl->fed < cap && j - sl->fed < left)
                j++;
            x.tokens = sl->toks + sl->fed;
            x.n = (uint32_t)(j - sl->fed);
        } else {
            const struct cl_model_media *md = &sl->media[sl->media_k];
            if (md->n_tokens > left)
                continue; /* the whole block in a later pass */
            x.embd = md->embd;
            x.n = md->n_tokens;
            x.non_causal = true;
        }
        if (sl->fed + x.n == sl->n_prompt)
            x.logits = e->logits + n_it * V;
        it[n_it] = x;
        own[n_it++] = sl;
        rows += x.n;
    }
    pthread_mutex_unlock(&e->mu);
    cl_err rc = n_it ? cl_model_batch_eval(e->batch, it, n_it) : CL_OK;
    bool finished[CL_ENGINE_MAX_SEQS] = {0};
    cl_err src[CL_ENGINE_MAX_SEQS];
    for (size_t k = 0; k < n_it; k++) {
        struct cl_engine_slot *sl = own[k];
        src[k] = rc;
        if (rc != CL_OK) {
            finished[k] = true;
            continue;
        }
        if (!sl->decoding) {
            sl->fed += it[k].n;
            if (it[k].embd)
                sl->media_k++;
        }
        if (it[k].logits) {
            /* cl_engine_stream appends to the slot's text: hold mu around it */
            pthread_mutex_lock(&e->mu);
            src[k] = cl_engine_sample(sl, it[k].logits, &finished[k]);
            if (sl->text.len)
                pthread_cond_broadcast(&e->cv_done);
            pthread_mutex_unlock(&e->mu);
            if (src[k] != CL_OK)
                finished[k] = true;
        }
    }
    pthread_mutex_lock(&e->mu);
    e->steps += n_it ? 1 : 0;
    if (n_it > e->peak_seqs)
        e->peak_seqs = (uint32_t)n_it;
    if (rows > e->peak_rows)
        e->peak_rows = rows;
    for (size_t k = 0; k < n_it; k++) {
        if (!finished[k])
            continue;
        for (uint32_t i = 0; i < e->n_active; i++)
            if (e->active[i] == own[k]) {
                cl_engine_retire(e, i, src[k]);
                break;
            }
    }
    if (rc != CL_OK)
        CL_LOG(CL_LOG_ERROR, "engine_step", CL_LOG_COUNT("sequences", n_it), CL_LOG_COUNT("rows", rows),
               CL_LOG_ERR(rc));
}

static void *cl_engine_main(void *arg)
{
    struct cl_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && (e->n_active == 0 || e->hold))
            pthread_cond_wait(&e->cv_work, &e->mu);
        if (e->stop)
            break;
        cl_engine_step(e); /* releases mu during the pass, holds it on return */
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* The request's images, decoded (PNG, JPEG, DICOM), preprocessed as
 * llama.cpp does and encoded: n_tokens x n_embd floats each, in one secure
 * allocation. On an image's failure *bad is its 1-based index. */
static cl_err cl_engine_images(struct cl_engine *e, const struct cl_chat_params *p, struct cl_model_media *media,
                               float **embd_out, uint32_t *bad)
{
    cl_err rc = CL_OK;
    const struct cl_vision_hparams *hp = cl_vision_hparams(e->vis);
    size_t per = (size_t)hp->n_tokens * hp->proj_dim, npix = (size_t)3 * hp->image_size * hp->image_size;
    void *embd = NULL, *pix = NULL;
    struct cl_image img = {0};
    struct cl_image_limits lim;
    cl_image_limits_default(&lim);
    CL_GUARD(cl_secmem_alloc(p->n_images * per * sizeof(float), &embd));
    CL_GUARD(cl_secmem_alloc(npix * sizeof(float), &pix));
    for (size_t i = 0; i < p->n_images; i++) {
        *bad = (uint32_t)i + 1;
        CL_GUARD(cl_image_decode(p->images[i].data, p->images[i].len, &lim, &img));
        CL_GUARD(cl_image_preprocess(&img, hp->image_size, hp->mean, hp->std, pix));
        cl_image_free(&img);
        *bad = 0;
        float *dst = (float *)embd + i * per;
        CL_GUARD(cl_vision_encode(e->vis, e->pool, pix, npix, dst, per));
        media[i] = (struct cl_model_media){dst, hp->n_tokens, hp->proj_dim};
    }
    *bad = 0;
    *embd_out = embd;
    embd = NULL;
out:
    cl_image_free(&img);
    cl_secmem_free(pix);
    cl_secmem_free(embd);
    return rc;
}

static void cl_engine_slot_free(struct cl_engine_slot *sl)
{
    if (!sl)
        return;
    cl_gen_free(sl->gen);
    cl_sampler_free(sl->smp);
    cl_model_seq_free(sl->seq);
    cl_model_answer_prompt_free(sl->toks, sl->n_prompt);
    cl_buf_free(&sl->text);
    cl_buf_free(&sl->lens);
    free(sl);
}

/* Admits rq as a new sequence: checks, reserves its KV bytes (or fails with
 * CL_E_PROTO_BUSY when full and not waiting), allocates it and hands it to
 * the scheduler. */
static cl_err cl_engine_admit(struct cl_engine *e, const struct cl_model_request *rq, bool wait,
                              struct cl_engine_slot **out)
{
    cl_err rc = CL_OK;
    struct cl_engine_slot *sl = calloc(1, sizeof(*sl));
    uint32_t ubatch = 0;
    bool reserved = false;
    CL_ENSURE(sl, CL_E_CORE_NOMEM);
    cl_buf_init(&sl->text, CL_GEN_MAX_TEXT, CL_BUF_SECURE);
    cl_buf_init(&sl->lens, CL_GEN_MAX_TEXT, CL_BUF_SECURE);
    CL_GUARD(cl_model_answer_prompt(e->m, e->tok, rq, &sl->toks, &sl->n_prompt, &ubatch));
    CL_ENSURE_D(ubatch <= e->n_rows, CL_E_INFER_VISION_MISMATCH, "an image of %u embeddings exceeds the pass of %u rows",
                ubatch, e->n_rows);
    uint64_t n_ctx = (uint64_t)sl->n_prompt + rq->gen.max_tokens;
    CL_ENSURE_D(n_ctx <= e->max_ctx, CL_E_PROTO_LIMIT, "prompt of %zu tokens + max_tokens %u exceed the context %u",
                sl->n_prompt, rq->gen.max_tokens, e->max_ctx);
    struct cl_model_seq_params sp = {.n_ctx = (uint32_t)n_ctx, .n_ubatch = ubatch, .kv_only = true, .kv_f16 = e->kv_f16};
    CL_GUARD(cl_model_seq_mem_need(e->m, &sp, e->threads, &sl->kv_bytes));
    CL_ENSURE_D(sl->kv_bytes <= e->kv_budget, CL_E_PROTO_LIMIT, "a sequence of %u positions needs %zu bytes, budget %zu",
                (unsigned)n_ctx, sl->kv_bytes, e->kv_budget);
    pthread_mutex_lock(&e->mu);
    while (e->n_active + e->n_reserved >= e->max_seqs || e->kv_used + sl->kv_bytes > e->kv_budget) {
        if (!wait || e->stop) {
            uint32_t busy = e->n_active + e->n_reserved;
            size_t used = e->kv_used;
            pthread_mutex_unlock(&e->mu);
            CL_FAIL(CL_E_PROTO_BUSY, "engine full: %u of %u sequences, %zu + %zu of %zu KV bytes", busy, e->max_seqs,
                    used, sl->kv_bytes, e->kv_budget);
        }
        pthread_cond_wait(&e->cv_done, &e->mu);
    }
    e->n_reserved++;
    e->kv_used += sl->kv_bytes;
    reserved = true;
    pthread_mutex_unlock(&e->mu);
    CL_GUARD(cl_model_seq_new_ex(e->m, &sp, e->pool, &sl->seq));
    struct cl_gen_opts go = {.max_tokens = rq->gen.max_tokens, .stop = rq->gen.stop, .n_stop = rq->gen.n_stop,
                             .stop_on_eog = rq->gen.stop_at_eog, .cb = cl_engine_stream, .user = sl};
    CL_GUARD(cl_sampler_new(&rq->gen.sample, cl_model_hparams(e->m)->n_vocab, &sl->smp));
    CL_GUARD(cl_gen_new(e->tok, &go, &sl->gen));
    sl->media = rq->media;
    sl->n_media = rq->n_media;
    pthread_mutex_lock(&e->mu);
    e->n_reserved--;
    e->active[e->n_active++] = sl;
    pthread_cond_signal(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
    *out = sl;
    sl = NULL;
    reserved = false;
out:
    if (reserved) {
        pthread_mutex_lock(&e->mu);
        e->n_reserved--;
        e->kv_used -= sl->kv_bytes;
        pthread_cond_broadcast(&e->cv_done);
        pthread_mutex_unlock(&e->mu);
    }
    cl_engine_slot_free(sl);
    return rc;
}

cl_err cl_engine_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *piece_ctx,
                          struct cl_chat_result *res)
{
    struct cl_engine *e = self;
    cl_err rc = CL_OK;
    const char *stops[CL_CHAT_MAX_STOP];
    struct cl_model_media media[CL_CHAT_MAX_IMAGES];
    struct cl_engine_slot *sl = NULL;
    struct cl_buf chunk, lens;
    float *embd = NULL;
    cl_buf_init(&chunk, CL_GEN_MAX_TEXT, CL_BUF_SECURE);
    cl_buf_init(&lens, CL_GEN_MAX_TEXT, CL_BUF_SECURE);
    /* F32 KV cache and the same sampling defaults as `cloister run`,
     * overridden only by what the request gave, so the same seed and
     * settings give the same answer. */
    struct cl_model_request rq = {.tmpl = e->tmpl, .msgs = p->msgs, .n_msgs = p->n_msgs,
                                  .max_prompt_tokens = e->max_prompt_tokens};
    uint64_t seed = p->seed;
    if (!p->has_seed)
        CL_GUARD(cl_random_bytes(&seed, sizeof(seed)));
    for (size_t i = 0; i < p->n_stop; i++)
        stops[i] = p->stop[i];
    rq.gen = (struct cl_model_gen){.max_tokens = p->max_tokens, .stop_at_eog = true, .stop = stops,
                                   .n_stop = p->n_stop};
    cl_sample_params_default(&rq.gen.sample, seed);
    rq.gen.sample.temperature = p->temperature;
    if (p->set & CL_CHAT_SET_TOP_P)
        rq.gen.sample.top_p = p->top_p;
    if (p->set & CL_CHAT_SET_TOP_K)
        rq.gen.sample.top_k = p->top_k;
    if (p->set & CL_CHAT_SET_MIN_P)
        rq.gen.sample.min_p = p->min_p;
    if (p->set & CL_CHAT_SET_REPEAT)
        rq.gen.sample.repeat_penalty = p->repeat_penalty;
    if (p->n_images) {
        CL_ENSURE_D(e->vis, CL_E_INFER_VISION_MISMATCH, "no vision projector loaded");
        CL_GUARD(cl_engine_images(e, p, media, &embd, &res->bad_image));
        rq.media = media;
        rq.n_media = p->n_images;
    }
    CL_GUARD(cl_engine_admit(e, &rq, p->wait_for_slot, &sl));
    /* hand the text over as the scheduler produces it; a refusal cancels the sequence */
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (sl->text.len) {
            cl_err arc = cl_buf_append(&chunk, sl->text.data, sl->text.len);
            if (arc == CL_OK)
                arc = cl_buf_append(&lens, sl->lens.data, sl->lens.len);
            cl_buf_reset(&sl->text);
            cl_buf_reset(&sl->lens);
            pthread_mutex_unlock(&e->mu);
            bool more = arc == CL_OK;
            /* piece by piece, as cl_gen cut them (one token's text each) */
            for (size_t k = 0, at = 0; more && k + sizeof(uint32_t) <= lens.len; k += sizeof(uint32_t)) {
                uint32_t n;
                memcpy(&n, lens.data + k, sizeof(n));
                more = n <= chunk.len - at && piece(piece_ctx, (const char *)chunk.data + at, n);
                at += n;
            }
            cl_buf_reset(&chunk);
            cl_buf_reset(&lens);
            pthread_mutex_lock(&e->mu);
            if (!more)
                sl->cancel = true;
            continue;
        }
        if (sl->done)
            break;
        pthread_cond_wait(&e->cv_done, &e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    CL_GUARD(sl->rc);
    res->prompt_tokens = (uint32_t)sl->n_prompt;
    res->completion_tokens = (uint32_t)sl->n_out;
    res->finish = sl->why == CL_GEN_STOP_MAX_TOKENS ? CL_CHAT_FINISH_LENGTH : CL_CHAT_FINISH_STOP;
out:
    cl_engine_slot_free(sl);
    cl_buf_free(&chunk);
    cl_buf_free(&lens);
    cl_secmem_free(embd); /* wipes the image embeddings */
    cl_wipe(&seed, sizeof(seed));
    return rc;
}

uint32_t cl_engine_max_seqs(const struct cl_engine *e) { return e->max_seqs; }

void cl_engine_hold(struct cl_engine *e, bool hold)
{
    pthread_mutex_lock(&e->mu);
    e->hold = hold;
    pthread_cond_broadcast(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
}

void cl_engine_stats(struct cl_engine *e, struct cl_engine_stats *st)
{
    pthread_mutex_lock(&e->mu);
    *st = (struct cl_engine_stats){.active = e->n_active, .steps = e->steps, .peak_seqs = e->peak_seqs,
                                   .peak_rows = e->peak_rows, .kv_used = e->kv_used, .kv_budget = e->kv_budget};
    pthread_mutex_unlock(&e->mu);
}
