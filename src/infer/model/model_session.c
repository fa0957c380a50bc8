/* Sessions: a sequence plus tokenizer and sampling loop with streaming. */
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/secmem.h"
#include "cloister/tokenizer.h"
#include "model_internal.h"

struct cl_model_session {
    const struct cl_model *m;
    const cl_tokenizer *tok;
    struct cl_model_seq *seq;
    float *logits; /* secure: derived from the prompt */
    bool have_logits;
};

cl_err cl_model_open_memory(const void *buf, size_t len, struct cl_gguf **g, struct cl_model **m)
{
    cl_err rc = CL_OK;
    cl_gguf *gg = NULL;
    struct cl_model *mm = NULL;
    CL_ENSURE_D(buf && g && m, CL_E_CORE_INVALID_ARG, "buffer or outputs NULL");
    CL_GUARD(cl_gguf_open_memory(buf, len, &gg));
    CL_GUARD(cl_model_load(gg, &mm));
    *g = gg;
    *m = mm;
    gg = NULL;
    mm = NULL;
out:
    cl_model_free(mm);
    cl_gguf_free(gg);
    return rc;
}

cl_err cl_model_session_new(const struct cl_model *m, const cl_tokenizer *tok, const struct cl_model_seq_params *sp,
                            struct cl_pool *pool, struct cl_model_session **out)
{
    cl_err rc = CL_OK;
    struct cl_model_session *s = NULL;
    CL_ENSURE_D(m && sp && out, CL_E_CORE_INVALID_ARG, "model, params or out NULL");
    if (tok)
        CL_ENSURE_D(cl_tokenizer_n_vocab(tok) <= m->hp.n_vocab, CL_E_INFER_MODEL_HPARAMS,
                    "tokenizer has %u tokens, model %u", cl_tokenizer_n_vocab(tok), m->hp.n_vocab);
    s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    s->m = m;
    s->tok = tok;
    CL_GUARD(cl_model_seq_new_ex(m, sp, pool, &s->seq));
    CL_GUARD(cl_secmem_alloc((size_t)m->hp.n_vocab * sizeof(float), (void **)&s->logits));
    *out = s;
    s = NULL;
out:
    cl_model_session_free(s);
    return rc;
}

void cl_model_session_free(struct cl_model_session *s)
{
    if (!s)
        return;
    cl_model_seq_free(s->seq);
    cl_secmem_free(s->logits);
    free(s);
}

const float *cl_model_session_logits(const struct cl_model_session *s) { return s->have_logits ? s->logits : NULL; }
struct cl_model_seq *cl_model_session_seq(struct cl_model_session *s) { return s->seq; }

cl_err cl_model_session_feed(struct cl_model_session *s, const int32_t *tokens, size_t n)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(s, CL_E_CORE_INVALID_ARG, "session NULL");
    CL_GUARD(cl_model_seq_eval(s->seq, tokens, n, s->logits, false));
    s->have_logits = true;
out:
    return rc;
}

cl_err cl_model_session_feed_embd(struct cl_model_session *s, const float *embd, size_t n, bool non_causal)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(s, CL_E_CORE_INVALID_ARG, "session NULL");
    CL_GUARD(cl_model_seq_eval_embd(s->seq, embd, n, non_causal, s->logits, false));
    s->have_logits = true;
out:
    return rc;
}

cl_err cl_model_session_feed_text(struct cl_model_session *s, const char *text, size_t len, unsigned tok_flags)
{
    cl_err rc = CL_OK;
    int32_t *ids = NULL;
    size_t n = 0, cap;
    CL_ENSURE_D(s && s->tok, CL_E_CORE_INVALID_ARG, "session has no tokenizer");
    /* an SPM token covers at least one byte; +2 for BOS/EOS */
    CL_GUARD(cl_size_add(len, 2, &cap));
    ids = malloc(cap * sizeof(*ids));
    CL_ENSURE(ids, CL_E_CORE_NOMEM);
    CL_GUARD(cl_tokenize(s->tok, text, len, tok_flags, ids, cap, &n));
    CL_ENSURE_D(n > 0, CL_E_CORE_INVALID_ARG, "text produced no tokens");
    CL_GUARD(cl_model_session_feed(s, ids, n));
out:
    if (ids)
        cl_wipe(ids, cap * sizeof(*ids));
    free(ids);
    return rc;
}

cl_err cl_model_session_generate(struct cl_model_session *s, const struct cl_model_gen *g, int32_t *out, size_t cap,
                                 size_t *n_out, enum cl_gen_stop *why)
{
    cl_err rc = CL_OK;
    cl_sampler *smp = NULL;
    cl_gen *gen = NULL;
    size_t n = 0;
    CL_ENSURE_D(s && g, CL_E_CORE_INVALID_ARG, "session or params NULL");
    CL_ENSURE_D(s->tok, CL_E_CORE_INVALID_ARG, "session has no tokenizer");
    CL_ENSURE_D(s->have_logits, CL_E_CORE_STATE, "generate before any feed");
    struct cl_gen_opts go = {.max_tokens = g->max_tokens, .stop = g->stop, .n_stop = g->n_stop,
                             .stop_on_eog = g->stop_at_eog, .cb = g->on_token, .user = g->user};
    CL_GUARD(cl_sampler_new(&g->sample, s->m->hp.n_vocab, &smp));
    CL_GUARD(cl_gen_new(s->tok, &go, &gen));
    bool done = false;
    while (!done) {
        int32_t t;
        CL_GUARD(cl_sampler_sample(smp, s->logits, &t));
        cl_sampler_accept(smp, t);
        CL_GUARD(cl_gen_push(gen, t, &done));
        if (done && cl_gen_reason(gen) == CL_GEN_STOP_EOG)
            break;
        if (out && n < cap)
            out[n] = t;
        n++;
        if (done)
            break;
        if (cl_model_seq_pos(s->seq) >= cl_model_seq_ctx(s->seq)) {
            CL_GUARD(cl_gen_finish(gen));
            break;
        }
        CL_GUARD(cl_model_seq_eval(s->seq, &t, 1, s->logits, false));
    }
    if (n_out)
        *n_out = n;
    if (why)
        *why = cl_gen_reason(gen) == CL_GEN_STOP_NONE ? CL_GEN_STOP_MAX_TOKENS : cl_gen_reason(gen);
out:
    cl_gen_free(gen);
    cl_sampler_free(smp);
    return rc;
}
