/* The real generator: the conversation rendered with the model's chat
 * template, tokenized, evaluated, and sampled token by token; stop strings
 * and end-of-generation handled by cl_gen. One generation at a time per
 * engine (they share the thread pool); callers queue on the mutex. */
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

struct cl_engine {
    struct cl_gguf *g;
    struct cl_model *m;
    cl_tokenizer *tok;
    struct cl_pool *pool;
    enum cl_chat_template tmpl;
    uint32_t max_prompt_tokens;
    struct cl_gguf *vg; /* vision projector, when set */
    struct cl_vision *vis;
    pthread_mutex_t mu;
    char name[CL_ENGINE_MAX_NAME + 1];
};

cl_err cl_engine_new(const void *model, size_t len, unsigned threads, const char *tmpl_override,
                     uint32_t max_prompt_tokens, struct cl_engine **out)
{
    cl_err rc = CL_OK;
    struct cl_engine *e = calloc(1, sizeof(*e));
    struct cl_gguf_str name;
    CL_ENSURE(e, CL_E_CORE_NOMEM);
    pthread_mutex_init(&e->mu, NULL);
    e->max_prompt_tokens = max_prompt_tokens;
    CL_GUARD(cl_model_open_memory(model, len, &e->g, &e->m));
    CL_GUARD(cl_tokenizer_new(e->g, &e->tok));
    CL_GUARD(cl_pool_new(threads ? threads : 1, &e->pool));
    CL_GUARD(cl_chat_for_model(e->g, tmpl_override, &e->tmpl));
    if (cl_gguf_get_str(e->g, "general.name", &name) == CL_OK && name.len)
        snprintf(e->name, sizeof(e->name), "%.*s", (int)name.len, name.p);
    else
        snprintf(e->name, sizeof(e->name), "%s", cl_model_arch_name(cl_model_hparams(e->m)->arch));
    for (char *p = e->name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
            *p = '_';
    *out = e;
    e = NULL;
out:
    cl_engine_free(e);
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
    e->vg = g;
    e->vis = v;
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
    cl_vision_free(e->vis);
    cl_gguf_free(e->vg);
    cl_pool_free(e->pool);
    cl_tokenizer_free(e->tok);
    cl_model_free(e->m);
    cl_gguf_free(e->g);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const char *cl_engine_name(const struct cl_engine *e) { return e->name; }

struct cl_engine_run {
    cl_chat_piece_fn piece;
    void *piece_ctx;
};

static int cl_engine_stream(void *user, int32_t token, const char *text, size_t len)
{
    struct cl_engine_run *r = user;
    (void)token;
    return r->piece(r->piece_ctx, text, len) ? 0 : 1;
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

cl_err cl_engine_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *piece_ctx,
                          struct cl_chat_result *res)
{
    struct cl_engine *e = self;
    cl_err rc = CL_OK;
    struct cl_engine_run r = {.piece = piece, .piece_ctx = piece_ctx};
    const char *stops[CL_CHAT_MAX_STOP];
    struct cl_model_answer a = {0};
    struct cl_model_media media[CL_CHAT_MAX_IMAGES];
    float *embd = NULL;
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
                                   .n_stop = p->n_stop, .on_token = cl_engine_stream, .user = &r};
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
    pthread_mutex_lock(&e->mu);
    if (p->n_images) {
        rc = e->vis ? cl_engine_images(e, p, media, &embd, &res->bad_image)
                    : cl_err_fail(CL_E_INFER_VISION_MISMATCH, "no vision projector loaded");
        rq.media = media;
        rq.n_media = p->n_images;
    }
    if (rc == CL_OK)
        rc = cl_model_answer(e->m, e->tok, e->pool, &rq, false, &a);
    pthread_mutex_unlock(&e->mu);
    CL_GUARD(rc);
    res->prompt_tokens = (uint32_t)a.n_prompt;
    res->completion_tokens = (uint32_t)a.n_out;
    res->finish = a.why == CL_GEN_STOP_MAX_TOKENS ? CL_CHAT_FINISH_LENGTH : CL_CHAT_FINISH_STOP;
out:
    cl_secmem_free(embd); /* wipes the image embeddings */
    cl_wipe(&seed, sizeof(seed));
    return rc;
}
