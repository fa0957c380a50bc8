/* One request answered from start to end: the prompt (chat messages rendered
 * with a template, or plain text) tokenized, checked against the limits,
 * evaluated in a fresh session, then generation with the request's sampling
 * settings and stop conditions. `cloister run` and the enclave both answer
 * through this one function, so the enclave answers exactly as `cloister run`
 * does on the same model, prompt and settings.
 *
 * Prompts, tokens and answers are secrets: the rendered text lives in a
 * CL_BUF_SECURE buffer and token arrays are wiped; nothing is logged. */
#ifndef CLOISTER_INFER_ANSWER_H
#define CLOISTER_INFER_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/chat.h"
#include "cloister/infer/model.h"

/* Where an image goes in the prompt text (as llama.cpp's mtmd). */
#define CL_MODEL_MEDIA_MARKER "<__media__>"

/* One image already encoded (cl_vision_encode): n_tokens rows of n_embd
 * floats, which must equal the text model's embedding width. */
struct cl_model_media {
    const float *embd;
    uint32_t n_tokens;
    uint32_t n_embd;
};

struct cl_model_request {
    /* The prompt: with tmpl set, the messages rendered with it (generation
     * prompt opened, special-token texts parsed); with CL_CHAT_NONE, text
     * tokenized as plain text (BOS as the model's metadata says). */
    enum cl_chat_template tmpl;
    const struct cl_chat_msg *msgs;
    size_t n_msgs;
    const char *text;
    size_t text_len;
    uint32_t max_prompt_tokens; /* 0: no limit; more is CL_E_PROTO_LIMIT */
    uint32_t n_ctx;             /* 0: prompt + max_tokens, at most CL_MODEL_MAX_CTX */
    bool kv_f16;
    struct cl_model_gen gen; /* sampling, max_tokens (required > 0), stops, stream */
    int32_t *tokens;         /* generated ids (may be NULL) */
    size_t tokens_cap;
    /* Images (gemma3 only): the prompt text (rendered) must hold exactly
     * n_media CL_MODEL_MEDIA_MARKERs; marker i becomes <start_of_image>,
     * media[i]'s embeddings (one position each, attending to each other
     * non-causally, not scaled) and <end_of_image>. Text around the markers
     * is tokenized in separate pieces, BOS in front of the first, as
     * llama.cpp's mtmd_tokenize. Image positions count as prompt tokens. */
    const struct cl_model_media *media;
    size_t n_media;
};

struct cl_model_answer {
    size_t n_prompt;
    size_t n_out;
    enum cl_gen_stop why;
    int32_t *prompt_tokens; /* when asked for (keep_prompt): the fed ids (-1 at image positions), cl_model_answer_free */
};

/* Answers rq on m. With keep_prompt the prompt's token ids are returned in
 * out->prompt_tokens. Fails with CL_E_CORE_INVALID_ARG when the prompt gives
 * no tokens or its media markers do not match n_media, CL_E_PROTO_LIMIT over
 * max_prompt_tokens, CL_E_INFER_VISION_MISMATCH for images on a model that
 * cannot take them or of the wrong width; *out is set only on success. */
CL_MUST_CHECK cl_err cl_model_answer(const struct cl_model *m, const cl_tokenizer *tok, struct cl_pool *pool,
                                     const struct cl_model_request *rq, bool keep_prompt,
                                     struct cl_model_answer *out);
/* The prompt of rq as cl_model_answer feeds it: token ids, -1 at image
 * positions (the checks and errors of cl_model_answer), and the micro-batch
 * its image blocks need (*ubatch, at least 256). *toks is malloc'd: release
 * with cl_model_answer_prompt_free. For engines that schedule the feeding
 * themselves (continuous batching). */
CL_MUST_CHECK cl_err cl_model_answer_prompt(const struct cl_model *m, const cl_tokenizer *tok,
                                            const struct cl_model_request *rq, int32_t **toks, size_t *n,
                                            uint32_t *ubatch);
/* Wipes and frees prompt ids. */
void cl_model_answer_prompt_free(int32_t *toks, size_t n);
/* Wipes and frees what an answer holds. */
void cl_model_answer_free(struct cl_model_answer *a);

#endif
