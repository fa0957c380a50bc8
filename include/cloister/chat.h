/* Chat prompt formatting for the templates llama.cpp knows as "gemma",
 * "llama2" (and its <<SYS>> variants) and "chatml", producing byte-identical
 * text. The template is recognised from tokenizer.chat_template by
 * distinctive substrings (as llama.cpp does) or chosen by name. Message
 * contents are secrets: the rendered text goes into a caller-chosen buffer
 * (use CL_BUF_SECURE) and nothing is logged. */
#ifndef CLOISTER_CHAT_H
#define CLOISTER_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "cloister/buf.h"
#include "cloister/gguf.h"

enum cl_chat_template {
    CL_CHAT_NONE = 0,
    CL_CHAT_GEMMA,            /* <start_of_turn>user\n...<end_of_turn>\n; system folded into the first user turn */
    CL_CHAT_LLAMA2,           /* [INST] ... [/INST]; system text without <<SYS>> */
    CL_CHAT_LLAMA2_SYS,       /* [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] */
    CL_CHAT_LLAMA2_SYS_BOS,   /* as LLAMA2_SYS, later turns start with <s>[INST] */
    CL_CHAT_LLAMA2_SYS_STRIP, /* as LLAMA2_SYS, contents trimmed */
    CL_CHAT_CHATML,           /* <|im_start|>role\n...<|im_end|>\n */
    CL_CHAT_COUNT
};

struct cl_chat_msg {
    const char *role;    /* "system", "user", "assistant" (others passed through) */
    const char *content;
    size_t content_len;
};

/* Recognises a Jinja template (or a template name) from its text; NONE when
 * no supported template matches. */
enum cl_chat_template cl_chat_detect(const char *tmpl, size_t len);
/* "gemma", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "chatml". */
CL_MUST_CHECK cl_err cl_chat_from_name(const char *name, enum cl_chat_template *out);
const char *cl_chat_name(enum cl_chat_template t);
/* The model's template: override (a name) when given, else detected from
 * tokenizer.chat_template. CL_E_INFER_CHAT_UNKNOWN when neither works. */
CL_MUST_CHECK cl_err cl_chat_for_model(const cl_gguf *g, const char *override, enum cl_chat_template *out);
/* Appends the formatted conversation to out; add_generation_prompt opens
 * the assistant turn (llama2 templates have none, as in llama.cpp). */
CL_MUST_CHECK cl_err cl_chat_render(enum cl_chat_template t, const struct cl_chat_msg *msgs, size_t n,
                                    bool add_generation_prompt, struct cl_buf *out);

#endif
