/* The real generator: the conversation rendered with the model's chat
 * template, tokenized, evaluated, and sampled token by token; stop strings
 * and end-of-generation handled by cl_gen. One generation at a time per
 * engine (they share the thread pool); callers queue on the mutex. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/chat.h"
#include "cloister/gguf.h"
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
    pthread_mutex_t mu;
    char name[CL_ENGINE_MAX_NAME + 1];
};

cl_err cl_engine_mem_need(const struct cl_engine *e, size_t model_len, uint32_t n_ctx, unsigned threads, size_t *out)
{
    if (!e || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "engine or out is NULL");
    return cl_model_enclave_mem_need(e->m, model_len, 0, n_ctx, threads, out);
}

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

void cl_engine_free(struct cl_engine *e)
{
    if (!e)
        return;
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

static cl_err cl_engine_prompt(struct cl_engine *e, const struct cl_chat_params *p, int32_t **toks, size_t *n)
{
    cl_err rc = CL_OK;
    struct cl_buf text;
    cl_buf_init(&text, (size_t)64 << 20, CL_BUF_SECURE);
    CL_GUARD(cl_chat_render(e->tmpl, p->msgs, p->n_msgs, true, &text));
    size_t cap = text.len + 2;
    int32_t *t = calloc(cap, sizeof(*t));
    CL_ENSURE(t, CL_E_CORE_NOMEM);
    rc = cl_tokenize(e->tok, (const char *)text.data, text.len, CL_TOK_ADD_SPECIAL | CL_TOK_PARSE_SPECIAL, t, cap, n);
    if (rc == CL_OK && *n > e->max_prompt_tokens)
        rc = cl_err_fail(CL_E_PROTO_LIMIT, "prompt of %zu tokens (limit %u)", *n, e->max_prompt_tokens);
    if (rc == CL_OK)
        *toks = t;
    else
        free(t);
out:
    cl_buf_free(&text);
    return rc;
}

cl_err cl_engine_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *piece_ctx,
                          struct cl_chat_result *res)
{
    struct cl_engine *e = self;
    cl_err rc = CL_OK;
    int32_t *toks = NULL;
    size_t n = 0, n_out = 0;
    struct cl_model_session *s = NULL;
    struct cl_engine_run r = {.piece = piece, .piece_ctx = piece_ctx};
    const char *stops[CL_CHAT_MAX_STOP];
    pthread_mutex_lock(&e->mu);
    CL_GUARD(cl_engine_prompt(e, p, &toks, &n));
    /* F32 KV cache, as `cloister run` by default, so answers match it */
    struct cl_model_seq_params sp = {.n_ctx = (uint32_t)(n + p->max_tokens)};
    CL_GUARD(cl_model_session_new(e->m, e->tok, &sp, e->pool, &s));
    CL_GUARD(cl_model_session_feed(s, toks, n));
    /* Same defaults as `cloister run`, overridden only by what the request
     * gave, so the same seed and settings give the same answer. */
    uint64_t seed = p->seed;
    if (!p->has_seed)
        CL_GUARD(cl_random_bytes(&seed, sizeof(seed)));
    struct cl_model_gen mg = {.max_tokens = p->max_tokens, .stop_at_eog = true, .stop = stops, .n_stop = p->n_stop,
                              .on_token = cl_engine_stream, .user = &r};
    cl_sample_params_default(&mg.sample, seed);
    mg.sample.temperature = p->temperature;
    if (p->set & CL_CHAT_SET_TOP_P)
        mg.sample.top_p = p->top_p;
    if (p->set & CL_CHAT_SET_TOP_K)
        mg.sample.top_k = p->top_k;
    if (p->set & CL_CHAT_SET_MIN_P)
        mg.sample.min_p = p->min_p;
    if (p->set & CL_CHAT_SET_REPEAT)
        mg.sample.repeat_penalty = p->repeat_penalty;
    for (size_t i = 0; i < p->n_stop; i++)
        stops[i] = p->stop[i];
    enum cl_gen_stop why = CL_GEN_STOP_NONE;
    CL_GUARD(cl_model_session_generate(s, &mg, NULL, 0, &n_out, &why));
    res->prompt_tokens = (uint32_t)n;
    res->completion_tokens = (uint32_t)n_out;
    res->finish = why == CL_GEN_STOP_MAX_TOKENS ? CL_CHAT_FINISH_LENGTH : CL_CHAT_FINISH_STOP;
out:
    pthread_mutex_unlock(&e->mu);
    cl_model_session_free(s);
    if (toks)
        cl_wipe(toks, n * sizeof(*toks));
    free(toks);
    return rc;
}
