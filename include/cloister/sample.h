/* Token sampling and generation control.
 *
 * cl_sampler applies, in llama.cpp's default order: repetition/frequency/
 * presence penalties over the last N accepted tokens, top-k, top-p, min-p,
 * temperature, then draws from the softmax with a seeded xoshiro256** stream
 * (reproducible for a given seed, params and logits). Temperature <= 0 is
 * greedy: the highest (penalised) logit, ties to the lowest id.
 *
 * cl_gen turns sampled tokens into answer text: end-of-generation tokens,
 * max tokens, stop strings detected across token boundaries (the text
 * before the stop is kept), and a per-token streaming callback that never
 * sees a partial stop string or a split UTF-8 character. The answer lives in
 * secure memory and is wiped on free. */
#ifndef CLOISTER_SAMPLE_H
#define CLOISTER_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"
#include "cloister/tokenizer.h"

struct cl_sample_params {
    float temperature;      /* <= 0: greedy */
    int32_t top_k;          /* <= 0: off */
    float top_p;            /* >= 1: off */
    float min_p;            /* <= 0: off */
    float repeat_penalty;   /* 1: off; positive logits divided, others multiplied */
    float freq_penalty;     /* 0: off; minus count * this */
    float presence_penalty; /* 0: off; minus this if seen */
    int32_t repeat_last_n;  /* window of accepted tokens the penalties look at; 0: off */
    uint64_t seed;
};

/* llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no
 * penalties (window 64), the given seed. */
void cl_sample_params_default(struct cl_sample_params *p, uint64_t seed);

/* Index of the largest value; ties go to the lowest index. n must be > 0. */
int32_t cl_sample_greedy(const float *logits, uint32_t n);

typedef struct cl_sampler cl_sampler;

CL_MUST_CHECK cl_err cl_sampler_new(const struct cl_sample_params *p, uint32_t n_vocab, cl_sampler **out);
void cl_sampler_free(cl_sampler *s);
/* Picks the next token from n_vocab logits (not modified). Does not record
 * it: call cl_sampler_accept for every token that enters the sequence
 * (prompt tokens too, if they should count for the penalties). */
CL_MUST_CHECK cl_err cl_sampler_sample(cl_sampler *s, const float *logits, int32_t *out);
void cl_sampler_accept(cl_sampler *s, int32_t id);
/* Clears the history and reseeds the random stream. */
void cl_sampler_reset(cl_sampler *s, uint64_t seed);
/* Next raw 64-bit value / uniform double in [0,1) of the sampler's stream. */
uint64_t cl_sampler_rand_u64(cl_sampler *s);
double cl_sampler_rand_unit(cl_sampler *s);

/* Per-token streaming callback: token is the id just generated and text the
 * answer bytes released for it (possibly none); token is CL_TOK_NULL for the
 * held-back text cl_gen_finish releases. Return non-zero to stop. text is
 * only valid during the call. */
typedef int (*cl_stream_cb)(void *user, int32_t token, const char *text, size_t len);

enum cl_gen_stop {
    CL_GEN_STOP_NONE = 0, /* still running */
    CL_GEN_STOP_EOG,      /* end-of-generation token */
    CL_GEN_STOP_MAX_TOKENS,
    CL_GEN_STOP_STRING,
    CL_GEN_STOP_CALLBACK,
    CL_GEN_STOP_COUNT
};

struct cl_gen_opts {
    uint32_t max_tokens;       /* 0: no limit */
    const char *const *stop;   /* stop strings (non-empty), may be NULL */
    size_t n_stop;
    bool stop_on_eog;          /* stop at EOS/EOT and similar */
    cl_stream_cb cb;           /* may be NULL */
    void *user;
};

#define CL_GEN_MAX_TEXT ((size_t)16 << 20)
#define CL_GEN_MAX_STOP 16
#define CL_GEN_MAX_STOP_LEN 256

typedef struct cl_gen cl_gen;

/* t may be NULL when only cl_gen_push_text is used. */
CL_MUST_CHECK cl_err cl_gen_new(const cl_tokenizer *t, const struct cl_gen_opts *o, cl_gen **out);
void cl_gen_free(cl_gen *g);
/* Feeds one generated token: its text is the tokenizer's piece (the first
 * token loses a leading space as llama.cpp's detokenize does). *done becomes
 * true once generation must stop; pushing after that is CL_E_CORE_STATE. */
CL_MUST_CHECK cl_err cl_gen_push(cl_gen *g, int32_t token, bool *done);
/* Same with the token's text given (for tests and callers with their own
 * detokenizer); eog marks an end-of-generation token. */
CL_MUST_CHECK cl_err cl_gen_push_text(cl_gen *g, int32_t token, bool eog, const char *text, size_t len, bool *done);
/* Releases any held-back text to the callback (call when stopping for a
 * reason of your own, e.g. a full context). Idempotent. */
CL_MUST_CHECK cl_err cl_gen_finish(cl_gen *g);
/* The answer so far (not NUL-terminated; stop string excluded). */
const char *cl_gen_text(const cl_gen *g, size_t *len);
uint32_t cl_gen_n_tokens(const cl_gen *g);
enum cl_gen_stop cl_gen_reason(const cl_gen *g);
const char *cl_gen_stop_name(enum cl_gen_stop r);

#endif
