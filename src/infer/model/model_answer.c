/* cl_model_answer: render -> tokenize -> session -> generate, the one path
 * by which `cloister run` and the enclave answer a request. */
#include <stdlib.h>
#include <string.h>

#include "cloister/infer/answer.h"
#include "cloister/secmem.h"
#include "cloister/tokenizer.h"
#include "model_internal.h"

#define CL_ANSWER_MAX_PROMPT_TEXT ((size_t)64 << 20)

/* Appends the ids of text[0..len) (special texts parsed, nothing added) at t + *n. */
static cl_err cl_model_answer_piece(const cl_tokenizer *tok, const char *text, size_t len, int32_t *t, size_t cap,
                                    size_t *n)
{
    cl_err rc = CL_OK;
    size_t got = 0;
    if (len == 0)
        return CL_OK;
    CL_GUARD(cl_tokenize(tok, text, len, CL_TOK_PARSE_SPECIAL, t + *n, cap - *n, &got));
    *n += got;
out:
    return rc;
}

static const char *cl_model_answer_find(const char *h, size_t hl, const char *needle)
{
    size_t nl = strlen(needle);
    for (size_t i = 0; nl <= hl && i <= hl - nl; i++)
        if (!memcmp(h + i, needle, nl))
            return h + i;
    return NULL;
}

/* Prompt ids with images: text pieces split at the markers, each marker
 * replaced by <start_of_image>, one -1 per image embedding, <end_of_image>. */
static cl_err cl_model_answer_tokens_media(const cl_tokenizer *tok, const struct cl_model_request *rq,
                                           const char *text, size_t len, int32_t *t, size_t cap, size_t *n)
{
    cl_err rc = CL_OK;
    static const char begin[] = "<start_of_image>", end[] = "<end_of_image>";
    const char *p = text, *stop = text + len;
    size_t k = 0;
    *n = 0;
    if (cl_tokenizer_add_bos(tok) && cl_tokenizer_bos(tok) != CL_TOK_NULL)
        t[(*n)++] = cl_tokenizer_bos(tok);
    for (;;) {
        const char *m = cl_model_answer_find(p, (size_t)(stop - p), CL_MODEL_MEDIA_MARKER);
        CL_GUARD(cl_model_answer_piece(tok, p, m ? (size_t)(m - p) : (size_t)(stop - p), t, cap, n));
        if (!m)
            break;
        CL_ENSURE_D(k < rq->n_media, CL_E_CORE_INVALID_ARG, "the prompt has more media markers than %zu images",
                    rq->n_media);
        CL_GUARD(cl_model_answer_piece(tok, begin, sizeof(begin) - 1, t, cap, n));
        CL_ENSURE_D(rq->media[k].n_tokens <= cap - *n, CL_E_INFER_INTERNAL, "prompt token capacity");
        for (uint32_t i = 0; i < rq->media[k].n_tokens; i++)
            t[(*n)++] = -1;
        CL_GUARD(cl_model_answer_piece(tok, end, sizeof(end) - 1, t, cap, n));
        k++;
        p = m + strlen(CL_MODEL_MEDIA_MARKER);
    }
    CL_ENSURE_D(k == rq->n_media, CL_E_CORE_INVALID_ARG, "the prompt has %zu media markers for %zu images", k,
                rq->n_media);
out:
    return rc;
}

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
    /* a token covers at least one byte; BOS and EOS may be added; each image
     * adds its markers (at most 32 tokens) and one position per embedding */
    size_t cap = len + 2;
    for (size_t i = 0; i < rq->n_media; i++) {
        CL_ENSURE_D(rq->media && rq->media[i].embd && rq->media[i].n_tokens > 0, CL_E_CORE_INVALID_ARG,
                    "image %zu has no embeddings", i);
        CL_GUARD(cl_size_add(cap, (size_t)rq->media[i].n_tokens + 32, &cap));
    }
    t = calloc(cap, sizeof(*t));
    CL_ENSURE(t, CL_E_CORE_NOMEM);
    if (rq->n_media)
        CL_GUARD(cl_model_answer_tokens_media(tok, rq, text ? text : "", len, t, cap, &got));
    else
        CL_GUARD(cl_tokenize(tok, text ? text : "", len, flags, t, cap, &got));
    CL_ENSURE_D(got > 0, CL_E_CORE_INVALID_ARG, "the prompt produced no tokens");
    CL_ENSURE_D(!rq->max_prompt_tokens || got <= rq->max_prompt_tokens, CL_E_PROTO_LIMIT,
                "prompt of %zu tokens (limit %u)", got, rq->max_prompt_tokens);
    *toks = t;
    *n = got;
    t = NULL;
out:
    if (t) {
        cl_wipe(t, cap * sizeof(*t));
        free(t);
    }
    cl_buf_free(&rendered);
    return rc;
}

cl_err cl_model_answer_prompt(const struct cl_model *m, const cl_tokenizer *tok, const struct cl_model_request *rq,
                              int32_t **toks, size_t *n, uint32_t *ubatch)
{
    cl_err rc = CL_OK;
    uint32_t ub = CL_MODEL_UBATCH;
    CL_ENSURE_D(m && tok && rq && toks && n && ubatch, CL_E_CORE_INVALID_ARG, "model, tokenizer, request or out NULL");
    CL_ENSURE_D(rq->gen.max_tokens > 0, CL_E_CORE_INVALID_ARG, "max_tokens is 0");
    CL_ENSURE_D(rq->n_media == 0 || rq->media, CL_E_CORE_INVALID_ARG, "images counted but not given");
    for (size_t i = 0; i < rq->n_media; i++) {
        const struct cl_model_hparams *hp = cl_model_hparams(m);
        CL_ENSURE_D(hp->arch == CL_MODEL_ARCH_GEMMA3, CL_E_INFER_VISION_MISMATCH,
                    "images need a gemma3 model, this one is %s", cl_model_arch_name(hp->arch));
        CL_ENSURE_D(rq->media[i].n_embd == hp->n_embd, CL_E_INFER_VISION_MISMATCH,
                    "image %zu has embeddings of width %u, the model %u", i, rq->media[i].n_embd, hp->n_embd);
        CL_ENSURE_D(rq->media[i].n_tokens <= 4096, CL_E_INFER_VISION_MISMATCH, "image %zu has %u embeddings (max 4096)",
                    i, rq->media[i].n_tokens);
        if (rq->media[i].n_tokens > ub)
            ub = rq->media[i].n_tokens; /* an image block is one forward pass */
    }
    CL_GUARD(cl_model_answer_tokens(tok, rq, toks, n));
    *ubatch = ub;
out:
    return rc;
}

void cl_model_answer_prompt_free(int32_t *toks, size_t n)
{
    if (!toks)
        return;
    cl_wipe(toks, n * sizeof(*toks));
    free(toks);
}

cl_err cl_model_answer(const struct cl_model *m, const cl_tokenizer *tok, struct cl_pool *pool,
                       const struct cl_model_request *rq, bool keep_prompt, struct cl_model_answer *out)
{
    cl_err rc = CL_OK;
    int32_t *toks = NULL;
    size_t n = 0, n_out = 0;
    struct cl_model_session *s = NULL;
    enum cl_gen_stop why = CL_GEN_STOP_NONE;
    uint32_t ubatch = CL_MODEL_UBATCH;
    CL_GUARD(cl_model_answer_prompt(m, tok, rq, &toks, &n, &ubatch));
    uint64_t n_ctx = rq->n_ctx;
    if (n_ctx == 0) {
        n_ctx = (uint64_t)n + rq->gen.max_tokens;
        if (n_ctx > CL_MODEL_MAX_CTX)
            n_ctx = CL_MODEL_MAX_CTX;
    }
    struct cl_model_seq_params sp = {.n_ctx = (uint32_t)n_ctx, .n_ubatch = ubatch, .kv_f16 = rq->kv_f16};
    CL_GUARD(cl_model_session_new(m, tok, &sp, pool, &s));
    /* runs of token ids fed causally, each image's block as one non-causal batch */
    for (size_t i = 0, k = 0; i < n;) {
        size_t j = i;
        if (toks[i] >= 0) {
            while (j < n && toks[j] >= 0)
                j++;
            CL_GUARD(cl_model_session_feed(s, toks + i, j - i));
        } else {
            CL_ENSURE_D(k < rq->n_media, CL_E_INFER_INTERNAL, "image positions without an image");
            j = i + rq->media[k].n_tokens;
            CL_ENSURE_D(j <= n, CL_E_INFER_INTERNAL, "image block past the prompt");
            CL_GUARD(cl_model_session_feed_embd(s, rq->media[k].embd, rq->media[k].n_tokens, true));
            k++;
        }
        i = j;
    }
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
