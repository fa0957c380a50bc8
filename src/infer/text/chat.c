/* Chat templates, rendered as llama.cpp's llm_chat_apply_template does. */
#include "cloister/chat.h"

#include "cloister/secmem.h"

#include <ctype.h>
#include <string.h>

static const char *const cl_chat_names[CL_CHAT_COUNT] = {
    [CL_CHAT_NONE] = "none",
    [CL_CHAT_GEMMA] = "gemma",
    [CL_CHAT_LLAMA2] = "llama2",
    [CL_CHAT_LLAMA2_SYS] = "llama2-sys",
    [CL_CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [CL_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [CL_CHAT_CHATML] = "chatml",
};

const char *cl_chat_name(enum cl_chat_template t)
{
    return (unsigned)t < CL_CHAT_COUNT ? cl_chat_names[t] : "invalid";
}

cl_err cl_chat_from_name(const char *name, enum cl_chat_template *out)
{
    if (!name || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "chat template name");
    for (int t = CL_CHAT_NONE + 1; t < CL_CHAT_COUNT; t++)
        if (!strcmp(name, cl_chat_names[t])) {
            *out = (enum cl_chat_template)t;
            return CL_OK;
        }
    return cl_err_fail(CL_E_INFER_CHAT_UNKNOWN,
                       "no template named '%.32s' (gemma, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, chatml)",
                       name);
}

static bool cl_chat_has(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

enum cl_chat_template cl_chat_detect(const char *tmpl, size_t len)
{
    if (!tmpl)
        return CL_CHAT_NONE;
    /* A bare name, as llama.cpp accepts in place of a template. */
    for (int t = CL_CHAT_NONE + 1; t < CL_CHAT_COUNT; t++)
        if (strlen(cl_chat_names[t]) == len && !memcmp(tmpl, cl_chat_names[t], len))
            return (enum cl_chat_template)t;
    /* Same order as llama.cpp's llm_chat_detect_template. */
    if (cl_chat_has(tmpl, len, "<|im_start|>")) {
        /* phi-4 and SmolVLM use <|im_start|> but are not ChatML */
        if (cl_chat_has(tmpl, len, "<|im_sep|>") || cl_chat_has(tmpl, len, "<end_of_utterance>"))
            return CL_CHAT_NONE;
        return CL_CHAT_CHATML;
    }
    if ((len >= 7 && !memcmp(tmpl, "mistral", 7)) || cl_chat_has(tmpl, len, "[INST]")) {
        /* Mistral's own formats are not Llama 2 */
        if (cl_chat_has(tmpl, len, "[SYSTEM_PROMPT]") || cl_chat_has(tmpl, len, "' [INST] ' + system_message") ||
            cl_chat_has(tmpl, len, "[AVAILABLE_TOOLS]") || (len >= 7 && !memcmp(tmpl, "mistral", 7)))
            return CL_CHAT_NONE;
        if (cl_chat_has(tmpl, len, "content.strip()"))
            return CL_CHAT_LLAMA2_SYS_STRIP;
        if (cl_chat_has(tmpl, len, "bos_token + '[INST]"))
            return CL_CHAT_LLAMA2_SYS_BOS;
        if (cl_chat_has(tmpl, len, "<<SYS>>"))
            return CL_CHAT_LLAMA2_SYS;
        return CL_CHAT_LLAMA2;
    }
    if (cl_chat_has(tmpl, len, "<|assistant|>") || cl_chat_has(tmpl, len, "<|user|>"))
        return CL_CHAT_NONE; /* phi-3, zephyr and relatives: not supported */
    if (cl_chat_has(tmpl, len, "<start_of_turn>"))
        return CL_CHAT_GEMMA;
    return CL_CHAT_NONE;
}

cl_err cl_chat_for_model(const cl_gguf *g, const char *override, enum cl_chat_template *out)
{
    if (!out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "chat template output");
    if (override)
        return cl_chat_from_name(override, out);
    struct cl_gguf_str s;
    if (g && !cl_gguf_find_kv(g, "tokenizer.chat_template")) {
        /* No template in the file (converted or generated models): the
         * architecture's own turn format, so every caller agrees. */
        if (cl_gguf_get_str(g, "general.architecture", &s) == CL_OK) {
            if (s.len >= 5 && !memcmp(s.p, "gemma", 5)) {
                *out = CL_CHAT_GEMMA;
                return CL_OK;
            }
            if (s.len == 5 && !memcmp(s.p, "llama", 5)) {
                *out = CL_CHAT_LLAMA2;
                return CL_OK;
            }
        }
    }
    if (!g || !cl_gguf_find_kv(g, "tokenizer.chat_template"))
        return cl_err_fail(CL_E_INFER_CHAT_UNKNOWN, "model has no tokenizer.chat_template; name one");
    cl_err e = cl_gguf_get_str(g, "tokenizer.chat_template", &s);
    if (e != CL_OK)
        return e;
    enum cl_chat_template t = cl_chat_detect(s.p, s.len);
    if (t == CL_CHAT_NONE)
        return cl_err_fail(CL_E_INFER_CHAT_UNKNOWN, "tokenizer.chat_template matches no supported template; name one");
    *out = t;
    return CL_OK;
}

/* Leading/trailing whitespace removed, as llama.cpp's trim(). */
static void cl_chat_trim(const char **p, size_t *n)
{
    while (*n && isspace((unsigned char)**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

static cl_err cl_chat_gemma(const struct cl_chat_msg *m, size_t n, bool gen, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    /* Gemma has no system turn: system texts are concatenated (trimmed) and
     * put at the start of the next non-model turn. */
    const struct cl_chat_msg *sys[64];
    size_t n_sys = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = m[i].content;
        size_t cl = m[i].content_len;
        cl_chat_trim(&c, &cl);
        if (!strcmp(m[i].role, "system")) {
            CL_ENSURE_D(n_sys < 64, CL_E_CORE_LIMIT, "more than 64 system messages");
            sys[n_sys++] = &m[i];
            continue;
        }
        const char *role = !strcmp(m[i].role, "assistant") ? "model" : m[i].role;
        CL_GUARD(cl_buf_append_str(out, "<start_of_turn>"));
        CL_GUARD(cl_buf_append_str(out, role));
        CL_GUARD(cl_buf_append_u8(out, '\n'));
        if (n_sys && strcmp(role, "model") != 0) {
            size_t written = 0;
            for (size_t k = 0; k < n_sys; k++) {
                const char *sc = sys[k]->content;
                size_t sl = sys[k]->content_len;
                cl_chat_trim(&sc, &sl);
                CL_GUARD(cl_buf_append(out, sc, sl));
                written += sl;
            }
            /* llama.cpp emits the separator only when the joined text is non-empty */
            if (written)
                CL_GUARD(cl_buf_append_str(out, "\n\n"));
            n_sys = 0;
        }
        CL_GUARD(cl_buf_append(out, c, cl));
        CL_GUARD(cl_buf_append_str(out, "<end_of_turn>\n"));
    }
    if (gen)
        CL_GUARD(cl_buf_append_str(out, "<start_of_turn>model\n"));
out:
    return rc;
}

static cl_err cl_chat_llama2(enum cl_chat_template t, const struct cl_chat_msg *m, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    bool sys_ok = t != CL_CHAT_LLAMA2;
    bool bos_inside = t == CL_CHAT_LLAMA2_SYS_BOS;
    bool strip = t == CL_CHAT_LLAMA2_SYS_STRIP;
    bool inside = true;
    CL_GUARD(cl_buf_append_str(out, "[INST] "));
    for (size_t i = 0; i < n; i++) {
        const char *c = m[i].content;
        size_t cl = m[i].content_len;
        if (strip)
            cl_chat_trim(&c, &cl);
        if (!inside) {
            inside = true;
            CL_GUARD(cl_buf_append_str(out, bos_inside ? "<s>[INST] " : "[INST] "));
        }
        if (!strcmp(m[i].role, "system")) {
            if (sys_ok)
                CL_GUARD(cl_buf_append_str(out, "<<SYS>>\n"));
            CL_GUARD(cl_buf_append(out, c, cl));
            CL_GUARD(cl_buf_append_str(out, sys_ok ? "\n<</SYS>>\n\n" : "\n"));
        } else if (!strcmp(m[i].role, "user")) {
            CL_GUARD(cl_buf_append(out, c, cl));
            CL_GUARD(cl_buf_append_str(out, " [/INST]"));
        } else {
            CL_GUARD(cl_buf_append(out, c, cl));
            CL_GUARD(cl_buf_append_str(out, "</s>"));
            inside = false;
        }
    }
out:
    return rc;
}

static cl_err cl_chat_chatml(const struct cl_chat_msg *m, size_t n, bool gen, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    for (size_t i = 0; i < n; i++) {
        CL_GUARD(cl_buf_append_str(out, "<|im_start|>"));
        CL_GUARD(cl_buf_append_str(out, m[i].role));
        CL_GUARD(cl_buf_append_u8(out, '\n'));
        CL_GUARD(cl_buf_append(out, m[i].content, m[i].content_len));
        CL_GUARD(cl_buf_append_str(out, "<|im_end|>\n"));
    }
    if (gen)
        CL_GUARD(cl_buf_append_str(out, "<|im_start|>assistant\n"));
out:
    return rc;
}

cl_err cl_chat_render(enum cl_chat_template t, const struct cl_chat_msg *msgs, size_t n, bool add_generation_prompt,
                      struct cl_buf *out)
{
    if (!out || (!msgs && n))
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "chat render arguments");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || (!msgs[i].content && msgs[i].content_len))
            return cl_err_fail(CL_E_CORE_INVALID_ARG, "chat message %zu", i);
    size_t mark = out->len;
    cl_err e;
    switch (t) {
    case CL_CHAT_GEMMA: e = cl_chat_gemma(msgs, n, add_generation_prompt, out); break;
    case CL_CHAT_LLAMA2:
    case CL_CHAT_LLAMA2_SYS:
    case CL_CHAT_LLAMA2_SYS_BOS:
    case CL_CHAT_LLAMA2_SYS_STRIP: e = cl_chat_llama2(t, msgs, n, out); break;
    case CL_CHAT_CHATML: e = cl_chat_chatml(msgs, n, add_generation_prompt, out); break;
    default: return cl_err_fail(CL_E_INFER_CHAT_UNKNOWN, "template id %d", (int)t);
    }
    if (e != CL_OK) {
        /* leave no partial conversation behind */
        if (out->data && out->len > mark)
            cl_wipe(out->data + mark, out->len - mark);
        out->len = mark;
    }
    return e;
}
