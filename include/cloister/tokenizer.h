/* SentencePiece-style tokenizer built from GGUF metadata
 * (tokenizer.ggml.model = "llama": Llama 2, Gemma, Phi-3 and similar).
 *
 * Tokenization reproduces llama.cpp's SPM tokenizer token for token: spaces
 * escaped as U+2581, an optional leading space, highest-score-first bigram
 * merging (ties to the leftmost pair), byte fallback to <0xXX> tokens, and
 * optional matching of control/user-defined token texts in the input.
 *
 * The tokenizer keeps views into the cl_gguf buffer (token texts are never
 * copied), so the cl_gguf must outlive it. Inputs and outputs are prompts and
 * answers: working memory is wiped, nothing is logged, and error details hold
 * only counts and ids. */
#ifndef CLOISTER_TOKENIZER_H
#define CLOISTER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/gguf.h"

/* tokenizer.ggml.token_type values as stored in GGUF. */
enum cl_tok_type {
    CL_TOK_TYPE_UNDEFINED = 0,
    CL_TOK_TYPE_NORMAL = 1,
    CL_TOK_TYPE_UNKNOWN = 2,
    CL_TOK_TYPE_CONTROL = 3,
    CL_TOK_TYPE_USER_DEFINED = 4,
    CL_TOK_TYPE_UNUSED = 5,
    CL_TOK_TYPE_BYTE = 6,
    CL_TOK_TYPE_COUNT
};

enum cl_tok_flags {
    CL_TOK_NONE = 0,
    CL_TOK_ADD_SPECIAL = 1 << 0,      /* tokenize: BOS/EOS as the metadata says */
    CL_TOK_PARSE_SPECIAL = 1 << 1,    /* tokenize: match control token texts in the input */
    CL_TOK_REMOVE_SPECIAL = 1 << 2,   /* detokenize: drop a leading BOS / trailing EOS the tokenizer would add */
    CL_TOK_UNPARSE_SPECIAL = 1 << 3,  /* detokenize/piece: render control and unknown tokens as their text */
};

#define CL_TOK_NULL (-1)
#define CL_TOK_MAX_VOCAB (1u << 24)
#define CL_TOK_MAX_INPUT ((size_t)64 << 20)

typedef struct cl_tokenizer cl_tokenizer;

CL_MUST_CHECK cl_err cl_tokenizer_new(const cl_gguf *g, cl_tokenizer **out);
void cl_tokenizer_free(cl_tokenizer *t);

uint32_t cl_tokenizer_n_vocab(const cl_tokenizer *t);
int32_t cl_tokenizer_bos(const cl_tokenizer *t); /* CL_TOK_NULL when absent */
int32_t cl_tokenizer_eos(const cl_tokenizer *t);
int32_t cl_tokenizer_unk(const cl_tokenizer *t);
int32_t cl_tokenizer_pad(const cl_tokenizer *t);
bool cl_tokenizer_add_bos(const cl_tokenizer *t);
bool cl_tokenizer_add_eos(const cl_tokenizer *t);
bool cl_tokenizer_add_space_prefix(const cl_tokenizer *t);
/* End of generation: EOS, EOT, or a control token such as <end_of_turn>,
 * <|im_end|>, <|end|>, <|eot_id|>. */
bool cl_tokenizer_is_eog(const cl_tokenizer *t, int32_t id);
enum cl_tok_type cl_tokenizer_type(const cl_tokenizer *t, int32_t id); /* UNDEFINED for bad ids */
float cl_tokenizer_score(const cl_tokenizer *t, int32_t id);
/* Raw vocabulary text (a view into the model); false for bad ids. */
bool cl_tokenizer_text(const cl_tokenizer *t, int32_t id, struct cl_gguf_str *out);
/* Id of the token whose text is exactly s[0..len), or CL_TOK_NULL. */
int32_t cl_tokenizer_find(const cl_tokenizer *t, const char *s, size_t len);

/* Tokenizes text[0..len) with CL_TOK_ADD_SPECIAL / CL_TOK_PARSE_SPECIAL.
 * Writes at most cap ids to out and the full count to *n; when the count
 * exceeds cap it fails with CL_E_INFER_TOK_SPACE (out then holds the first
 * cap ids, *n the count needed). */
CL_MUST_CHECK cl_err cl_tokenize(const cl_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t *out,
                                 size_t cap, size_t *n);

/* Appends one token's text to out (as llama.cpp's token_to_piece): normal
 * tokens with U+2581 turned back into spaces, byte tokens as their byte,
 * user-defined tokens verbatim, control/unknown tokens only with
 * CL_TOK_UNPARSE_SPECIAL, unused/undefined tokens as nothing. lstrip removes
 * up to that many leading spaces. */
CL_MUST_CHECK cl_err cl_tokenizer_piece(const cl_tokenizer *t, int32_t id, unsigned flags, unsigned lstrip,
                                        struct cl_buf *out);
/* Appends the text of ids[0..n) (as llama.cpp's detokenize): the leading
 * space a space-prefixing tokenizer added is removed from the first token;
 * CL_TOK_REMOVE_SPECIAL / CL_TOK_UNPARSE_SPECIAL as above. */
CL_MUST_CHECK cl_err cl_detokenize(const cl_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                                   struct cl_buf *out);

#endif
