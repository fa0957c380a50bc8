/* libFuzzer target: the SPM tokenizer on arbitrary bytes. The first input
 * byte selects flags; the rest is the text. The vocabulary is a small one
 * built in memory with the GGUF writer (full byte fallback, a few merges,
 * control and user-defined tokens). Checks: no crash, ids in range, and
 * detokenize(tokenize(x)) == x for valid UTF-8 (a bad lead byte can swallow
 * part of an escaped space) without a literal U+2581, and plain tokenization (no BOS, no special
 * tokens; with a BOS the prefix space survives detokenization, as in
 * llama.cpp). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/gguf.h"
#include "cloister/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *fz_img[2];
static cl_gguf *fz_g[2];
static cl_tokenizer *fz_t[2];

static void fz_init(void)
{
    static char names[256][8];
    static const struct { const char *t; float s; int32_t ty; } extra[] = {
        {"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3},
        {"\xe2\x96\x81", -1, 1}, {"a", -2, 1}, {"b", -2, 1}, {"ab", -0.5f, 1}, {"\xe2\x96\x81" "a", -0.6f, 1},
        {"ba", -0.5f, 1}, {"<ctl>", 0, 3}, {"<user>", 0, 4}, {"\xc3\xa9", -1, 1}, {"\xe2\x96\x81\xe2\x96\x81", -0.1f, 1},
        {"abab", -0.2f, 1}, {"<end_of_turn>", 0, 3}, {"unused", 0, 5},
    };
    enum { NX = sizeof(extra) / sizeof(extra[0]), NV = NX + 256 };
    const char *toks[NV];
    float scores[NV];
    int32_t types[NV];
    for (int i = 0; i < 3; i++) {
        toks[i] = extra[i].t; scores[i] = extra[i].s; types[i] = extra[i].ty;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof(names[b]), "<0x%02X>", b);
        toks[3 + b] = names[b]; scores[3 + b] = 0; types[3 + b] = 6;
    }
    for (int i = 3; i < NX; i++) {
        toks[256 + i] = extra[i].t; scores[256 + i] = extra[i].s; types[256 + i] = extra[i].ty;
    }
    for (int v = 0; v < 2; v++) {
        cl_gguf_writer *w = NULL;
        size_t len;
        if (cl_gguf_writer_new(0, &w) != CL_OK ||
            cl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama") != CL_OK ||
            cl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NV) != CL_OK ||
            cl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", CL_GGUF_FLOAT32, scores, NV) != CL_OK ||
            cl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", CL_GGUF_INT32, types, NV) != CL_OK ||
            cl_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", v == 0) != CL_OK ||
            cl_gguf_writer_write_memory(w, &fz_img[v], &len) != CL_OK ||
            cl_gguf_open_memory(fz_img[v], len, &fz_g[v]) != CL_OK || cl_tokenizer_new(fz_g[v], &fz_t[v]) != CL_OK)
            abort();
        cl_gguf_writer_free(w);
        /* the tokenizer keeps views into fz_g: both live for the process */
    }
}

static int fz_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n)
            return 0;
        for (size_t j = 1; j < l; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += l;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_t[0])
        fz_init();
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    const cl_tokenizer *t = fz_t[sel & 1];
    unsigned flags = ((sel & 2) ? CL_TOK_ADD_SPECIAL : 0) | ((sel & 4) ? CL_TOK_PARSE_SPECIAL : 0);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    size_t cap = 4 * len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    if (!ids)
        return 0;
    if (cl_tokenize(t, text, len, flags, ids, cap, &n) != CL_OK)
        abort();
    int plain = !flags;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= cl_tokenizer_n_vocab(t))
            abort();
        /* a user-defined token adds a prefix space to the text after it */
        enum cl_tok_type ty = cl_tokenizer_type(t, ids[i]);
        if (ty != CL_TOK_TYPE_NORMAL && ty != CL_TOK_TYPE_BYTE)
            plain = 0;
    }
    struct cl_buf d;
    cl_buf_init(&d, 16 * len + 64, CL_BUF_NONE);
    unsigned dflags = (flags & CL_TOK_ADD_SPECIAL) ? CL_TOK_REMOVE_SPECIAL : 0;
    if (cl_detokenize(t, ids, n, dflags, &d) != CL_OK)
        abort();
    if (plain && fz_utf8_valid(data + 1, len) && !memmem(text, len, "\xe2\x96\x81", 3) && (d.len != len || (len && memcmp(d.data, text, len))))
        abort();
    cl_buf_free(&d);
    free(ids);
    return 0;
}
