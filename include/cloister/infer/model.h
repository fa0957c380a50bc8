/* Model runtime: llama and gemma3 (text) decoder-only transformers loaded from
 * a parsed GGUF whose tensors are used in place (never copied), a per-sequence
 * F32 KV cache, batched prompt evaluation and teacher-forced logits.
 *
 * Threading: a loaded cl_model is immutable and may be shared by any number of
 * sequences on any threads. A cl_model_seq belongs to one thread at a time. The
 * cl_pool given to a sequence may be shared (jobs are serialized). */
#ifndef CLOISTER_INFER_MODEL_H
#define CLOISTER_INFER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"
#include "cloister/infer/pool.h"
#include "cloister/sample.h"

struct cl_gguf;

enum cl_model_arch {
    CL_MODEL_ARCH_NONE = 0,
    CL_MODEL_ARCH_LLAMA,
    CL_MODEL_ARCH_GEMMA3,
    CL_MODEL_ARCH_COUNT
};

enum cl_model_rope {
    CL_MODEL_ROPE_NONE = 0,
    CL_MODEL_ROPE_NORM, /* rotate interleaved pairs (2i, 2i+1) */
    CL_MODEL_ROPE_NEOX, /* rotate halves (i, i + n_rot/2) */
    CL_MODEL_ROPE_COUNT
};

#define CL_MODEL_MAX_LAYERS 512u
#define CL_MODEL_MAX_CTX (1u << 20)

struct cl_model_hparams {
    enum cl_model_arch arch;
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim_k; /* key_length, default n_embd / n_head */
    uint32_t head_dim_v; /* value_length, default head_dim_k */
    uint32_t n_ff;
    uint32_t n_rot;      /* rope.dimension_count, default head_dim_k */
    enum cl_model_rope rope_mode;
    float rms_eps;
    float rope_base;        /* global layers */
    float rope_freq_scale;  /* global layers: 1 / linear scaling factor */
    float rope_base_local;  /* sliding-window layers (gemma3) */
    float attn_scale;       /* multiplies q·k */
    uint32_t sliding_window; /* 0: none */
    uint32_t swa_pattern;    /* layer i is global iff (i + 1) % pattern == 0 */
    float embd_scale;        /* token embeddings are multiplied by this */
    bool qk_norm;            /* gemma3: per-head RMSNorm of q and k */
    bool post_norms;         /* gemma3: post-attention and post-FFN norms */
    bool gelu;               /* gated FFN activation: GELU-tanh (else SiLU) */
    bool tied_output;        /* output head is token_embd */
};

struct cl_model;
struct cl_model_seq;

/* Builds a model over g's tensors. g (and the memory it reads) must outlive
 * the model. When g is writable (cl_gguf_set_writable) and the CPU has the
 * interleaved kernels, Q4_0/Q8_0/Q4_K/Q6_K weights are repacked in place, once per
 * gguf (kernels.h CL_K_ROWS16); the numbers are the same within float
 * summation order. */
CL_MUST_CHECK cl_err cl_model_load(struct cl_gguf *g, struct cl_model **out);
/* true when g has weights cl_model_load would repack if g were writable (so a
 * caller with a read-only file map knows whether a writable copy pays). */
bool cl_model_would_repack(const struct cl_gguf *g);
void cl_model_free(struct cl_model *m);
const struct cl_model_hparams *cl_model_hparams(const struct cl_model *m);
const char *cl_model_arch_name(enum cl_model_arch a);
/* Layer il uses the sliding window (gemma3 local layer). */
bool cl_model_layer_is_swa(const struct cl_model *m, uint32_t il);
/* Bytes of weights the model reads per token (for reporting). */
size_t cl_model_weight_bytes(const struct cl_model *m);

/* A sequence: KV cache for up to n_ctx positions (0 = the model's training
 * context, capped by CL_MODEL_MAX_CTX) plus scratch. pool may be NULL (single thread). */
CL_MUST_CHECK cl_err cl_model_seq_new(const struct cl_model *m, uint32_t n_ctx, struct cl_pool *pool,
                                      struct cl_model_seq **out);
struct cl_model_seq_params {
    uint32_t n_ctx;    /* positions; 0: the training context capped at 4096 */
    uint32_t n_ubatch; /* tokens per forward pass (longer evals are split); 0: 256 */
    bool kv_f16;       /* K and V cached as fp16 (half the memory; llama.cpp's default) */
    bool kv_only;      /* no scratch of its own: evaluated only through a cl_model_batch */
};
/* As cl_model_seq_new with more settings. Sliding-window layers keep only
 * window + n_ubatch positions (a ring), so a long context costs little more
 * than its global layers. */
CL_MUST_CHECK cl_err cl_model_seq_new_ex(const struct cl_model *m, const struct cl_model_seq_params *p,
                                         struct cl_pool *pool, struct cl_model_seq **out);
/* Bytes of K and V cache the sequence holds. */
size_t cl_model_seq_kv_bytes(const struct cl_model_seq *s);
/* Bytes a sequence with these settings allocates (KV cache, scratch for
 * n_threads, one position's logits), computed without allocating: an upper
 * bound of what cl_model_seq_new_ex takes. */
CL_MUST_CHECK cl_err cl_model_seq_mem_need(const struct cl_model *m, const struct cl_model_seq_params *p,
                                           unsigned n_threads, size_t *out);

/* What an enclave's runtime takes besides the model and its sequences
 * (code, thread stacks, allocator arenas, the gateway's buffers). Under
 * cloister-sim the limit is RLIMIT_AS, which counts address space reserved,
 * not memory used: the enclave with a 3 MiB model peaks at 406 MiB of it
 * (VmPeak, 6 concurrent requests), hence the margin. */
#define CL_MODEL_RUNTIME_BYTES ((size_t)768 << 20)
/* Memory an enclave serving m needs: the model as loaded (model_bytes, the
 * GGUF held in memory), a projector (projector_bytes, 0 if none), one
 * sequence of n_ctx positions (F32 KV, as the enclave uses) at n_threads,
 * and CL_MODEL_RUNTIME_BYTES. */
CL_MUST_CHECK cl_err cl_model_enclave_mem_need(const struct cl_model *m, size_t model_bytes, size_t projector_bytes,
                                               uint32_t n_ctx, unsigned n_threads, size_t *out);
void cl_model_seq_free(struct cl_model_seq *s);
/* Forgets every position (the cache is wiped). */
void cl_model_seq_reset(struct cl_model_seq *s);
/* Number of positions already in the cache. */
uint32_t cl_model_seq_pos(const struct cl_model_seq *s);
uint32_t cl_model_seq_ctx(const struct cl_model_seq *s);
/* Drops the cache from position pos on (pos <= current position). With
 * sliding-window rings, going back more than n_ubatch positions fails with
 * CL_E_CORE_STATE (the window before pos was overwritten). */
CL_MUST_CHECK cl_err cl_model_seq_truncate(struct cl_model_seq *s, uint32_t pos);

/* Evaluates n tokens at the next n positions as one batch. logits may be
 * NULL; otherwise it receives n_vocab floats for the last position, or
 * n * n_vocab floats (one row per position) when all_logits is set. */
CL_MUST_CHECK cl_err cl_model_seq_eval(struct cl_model_seq *s, const int32_t *tokens, size_t n, float *logits,
                                       bool all_logits);

/* Evaluates n input rows given as embeddings (n_embd floats each, used as
 * given: no token-embedding scale), for example a projected image, at the next
 * n positions. With non_causal, every row attends to all rows of the block
 * (gemma3 image blocks; sliding windows still apply) and n must fit one batch
 * (CL_E_INFER_MODEL_CTX otherwise). logits/all_logits as cl_model_seq_eval.
 * Non-finite values: CL_E_CORE_INVALID_ARG. */
CL_MUST_CHECK cl_err cl_model_seq_eval_embd(struct cl_model_seq *s, const float *embd, size_t n, bool non_causal,
                                            float *logits, bool all_logits);

/* ---- several sequences per forward pass (continuous batching) ---------- */

/* Scratch for forward passes of up to n_rows rows taken from any number of
 * KV-only sequences (cl_model_seq_params.kv_only) of up to n_ctx positions:
 * every weight is read once per pass for all of them, attention runs per row
 * over its own sequence's cache. A sequence gives exactly the same values
 * batched as alone (cl_model_seq_eval): each row's arithmetic depends only on
 * its own input and cache. pool as the sequences'. */
struct cl_model_batch;
CL_MUST_CHECK cl_err cl_model_batch_new(const struct cl_model *m, uint32_t n_rows, uint32_t n_ctx,
                                        struct cl_pool *pool, struct cl_model_batch **out);
void cl_model_batch_free(struct cl_model_batch *b);
uint32_t cl_model_batch_rows(const struct cl_model_batch *b);
/* Bytes cl_model_batch_new allocates (upper bound). */
CL_MUST_CHECK cl_err cl_model_batch_mem_need(const struct cl_model *m, uint32_t n_rows, uint32_t n_ctx,
                                             unsigned n_threads, size_t *out);
/* n consecutive rows of one sequence, fed at its next positions: token ids,
 * or (tokens NULL) embedding rows as cl_model_seq_eval_embd takes them. */
struct cl_model_batch_item {
    struct cl_model_seq *seq;
    const int32_t *tokens;
    const float *embd;
    uint32_t n;       /* at most the sequence's n_ubatch */
    bool non_causal;  /* the rows attend to each other (an image block) */
    float *logits;    /* NULL, or n_vocab floats: the last row's logits */
};
/* One forward pass over every item's rows (each sequence at most once). All
 * items are checked before anything is evaluated: a bad item fails the call
 * with nothing written (CL_E_INFER_MODEL_TOKEN, CL_E_INFER_MODEL_CTX_FULL,
 * CL_E_INFER_MODEL_CTX, CL_E_CORE_INVALID_ARG). On success every sequence's
 * position advances by its rows. Logits of items whose buffers follow each
 * other in memory come from one product. */
CL_MUST_CHECK cl_err cl_model_batch_eval(struct cl_model_batch *b, const struct cl_model_batch_item *items,
                                         size_t n_items);
/* The sequence's n_ubatch: the most rows it may take in one batch item. */
uint32_t cl_model_seq_ubatch(const struct cl_model_seq *s);

/* Greedy choice: index of the largest logit, ties to the lowest index. */
int32_t cl_model_argmax(const float *logits, size_t n);

/* ---- sessions: the API the enclave uses -------------------------------- */

/* Parses a GGUF held in memory the caller owns (for example secure memory
 * with a decrypted model) and builds the model over it without copying
 * weights. buf must outlive *g and *m. */
CL_MUST_CHECK cl_err cl_model_open_memory(const void *buf, size_t len, struct cl_gguf **g, struct cl_model **m);

struct cl_model_session;

/* Generation settings: sampling (temperature <= 0 is greedy, ties to the
 * lowest id), limits, stop strings and the per-token streaming callback of
 * cloister/sample.h. The callback receives answer text: never log it. */
struct cl_model_gen {
    struct cl_sample_params sample;
    uint32_t max_tokens;      /* 0: until the context is full */
    bool stop_at_eog;         /* stop at EOS/EOT tokens (not emitted) */
    const char *const *stop;  /* stop strings, may be NULL */
    size_t n_stop;
    cl_stream_cb on_token;    /* may be NULL */
    void *user;
};

/* A conversation on one model: its own KV cache, the tokenizer (may be NULL
 * when only token ids are fed) and the logits of the last fed position. */
CL_MUST_CHECK cl_err cl_model_session_new(const struct cl_model *m, const cl_tokenizer *tok,
                                          const struct cl_model_seq_params *sp, struct cl_pool *pool,
                                          struct cl_model_session **out);
void cl_model_session_free(struct cl_model_session *s);
/* Evaluates tokens (one batch per CL ubatch); their last logits become current. */
CL_MUST_CHECK cl_err cl_model_session_feed(struct cl_model_session *s, const int32_t *tokens, size_t n);
/* Evaluates n embedding rows (cl_model_seq_eval_embd); their last logits become current. */
CL_MUST_CHECK cl_err cl_model_session_feed_embd(struct cl_model_session *s, const float *embd, size_t n,
                                                bool non_causal);
/* Tokenizes text with cl_tokenize flags (CL_TOK_ADD_SPECIAL, ...) and feeds it. */
CL_MUST_CHECK cl_err cl_model_session_feed_text(struct cl_model_session *s, const char *text, size_t len,
                                                unsigned tok_flags);
/* Generates from the current logits: sample, stream, feed, repeat. Token ids
 * go to out (up to cap; NULL allowed), their count to *n_out and why it
 * stopped to *why (may be NULL; a full context reports MAX_TOKENS). Needs a
 * tokenizer. Every returned token except the last is in the KV cache; feed
 * the last one first when continuing the conversation. */
CL_MUST_CHECK cl_err cl_model_session_generate(struct cl_model_session *s, const struct cl_model_gen *g, int32_t *out,
                                               size_t cap, size_t *n_out, enum cl_gen_stop *why);
/* Logits of the last fed position (n_vocab floats), or NULL before any feed. */
const float *cl_model_session_logits(const struct cl_model_session *s);
struct cl_model_seq *cl_model_session_seq(struct cl_model_session *s);

#endif
