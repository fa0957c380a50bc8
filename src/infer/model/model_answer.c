/* cl_model_answer: render -> tokenize -> session -> generate, the one path
 * by which `cloister run` and the enclave answer a request. */
#include <stdlib.h>
#include <string.h>

#include "cloister/infer/answer.h"
#include "cloister/secmem.h"
#include "cloister/tokenizer.h"

#define CL_ANSWER_MAX_PROMPT_TEXT ((size_t)64 << 20)

/* The prompt's token ids (malloc'd; the caller wipes and frees them). */
static cl_err cl_model_answer_tokens(const cl_tokenizer *tok, const struct cl_model_request *rq, int32_t **toks,
                                     size_t *n)
{
    cl_err rc = CL_OK;
    struct cl_buf rendered;
    const char *text = rq->text;
    size_t len = rq->text_len, got = 0;
    unsigned flags = CL_TOK_ADD_SPECIAL;
    int32_t *t = NULL;
    cl_buf_init(&rendered, CL_ANSWER_MAX_PROMPT_TEXT, CL_BUF_SECURE);
    if (rq->tmpl != CL_CHAT_NONE) {
        CL_GUARD(cl_chat_render(rq->tmpl, rq->msgs, rq->n_msgs, true, &rendered));
        text = (const char *)rendered.data;
        len = rendered.len;
        flags |= CL_TOK_PARSE_SPECIAL;
    }
    CL_ENSURE_D(text || len == 0, CL_E_CORE_INVALID_ARG, "no prompt");
    CL_ENSURE_D(len <= CL_ANSWER_MAX_PROMPT_TEXT, CL_E_PROTO_LIMIT, "prompt of %zu bytes", len);
    /* a token covers at least one byte; BOS and EOS may be added */
    t = calloc(len + 2, sizeof(*t));
    CL_ENSURE(t, CL_E_CORE_NOMEM);
    CL_GUARD(cl_tokenize(tok, text ? text : "", len, flags, t, len + 2, &got));
    CL_ENSURE_D(got > 0, CL_E_CORE_INVALID_ARG, "the prompt produced no tokens");
    CL_ENSURE_D(!rq->max_prompt_tokens || got <= rq->max_prompt_tokens, CL_E_PROTO_LIMIT,
                "prompt of %zu tokens (limit %u)", got, rq->max_prompt_tokens);
    *toks = t;
    *n = got;
    t = NULL;
out:
    if (t) {
        cl_wipe(t, (len + 2) * sizeof(*t));
        free(t);
    }
    cl_buf_free(&rendered);
    return rc;
}

cl_err cl_model_answer(const struct cl_model *m, const cl_tokenizer *tok, struct cl_pool *pool,
                       const struct cl_model_request *rq, bool keep_prompt, struct cl_model_answer *out)
{
    cl_err rc = CL_OK;
    int32_t *toks = NULL;
    size_t n = 0, n_out = 0;
    struct cl_model_session *s = NULL;
    enum cl_gen_stop why = CL_GEN_STOP_NONE;
    CL_ENSURE_D(rq->gen.max_tokens > 0, CL_E_CORE_INVALID_ARG, "max_tokens is 0");
    CL_GUARD(cl_model_answer_tokens(tok, rq, &toks, &n));
    uint64_t n_ctx = rq->n_ctx;
    if (n_ctx == 0) {
        n_ctx = (uint64_t)n + rq->gen.max_tokens;
        if (n_ctx > CL_MODEL_MAX_CTX)
            n_ctx = CL_MODEL_MAX_CTX;
    }
    struct cl_model_seq_params sp = {.n_ctx = (uint32_t)n_ctx, .kv_f16 = rq->kv_f16};
    CL_GUARD(cl_model_session_new(m, tok, &sp, pool, &s));
    CL_GUARD(cl_model_session_feed(s, toks, n));
    CL_GUARD(cl_model_session_generate(s, &rq->gen, rq->tokens, rq->tokens_cap, &n_out, &why));
    memset(out, 0, sizeof(*out));
    out->n_prompt = n;
    out->n_out = n_out;
    out->why = why;
    if (keep_prompt) {
        out->prompt_tokens = toks;
        toks = NULL;
    }
out:
    cl_model_session_free(s);
    if (toks) {
        cl_wipe(toks, n * sizeof(*toks));
        free(toks);
    }
    return rc;
}

void cl_model_answer_free(struct cl_model_answer *a)
{
    if (!a)
        return;
    if (a->prompt_tokens) {
        cl_wipe(a->prompt_tokens, a->n_prompt * sizeof(*a->prompt_tokens));
        free(a->prompt_tokens);
    }
    memset(a, 0, sizeof(*a));
}
