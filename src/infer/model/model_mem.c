/* Memory a deployment needs, computed before anything is allocated: the KV
 * cache and scratch of one sequence (the same sizes cl_model_seq_new_ex
 * allocates, rounded up), and the whole enclave (model, projector, one
 * sequence at the largest context it accepts, and the runtime). Used when an
 * enclave image is packed and again at boot, so a model too large for the
 * enclave is refused with the figure it needs instead of failing half-way. */
#include "cloister/buf.h"
#include "cloister/infer/kernels.h"
#include "model_internal.h"

/* Bytes of one scratch piece as the sequence lays it out (64-byte aligned). */
static cl_err cl_model_mem_piece(size_t floats, size_t *total)
{
    size_t b;
    cl_err rc = cl_size_mul(floats, sizeof(float), &b);
    if (rc == CL_OK)
        rc = cl_size_add(*total, (b + 63) & ~(size_t)63, total);
    return rc;
}

cl_err cl_model_batch_mem_need(const struct cl_model *m, uint32_t T, uint32_t n_ctx, unsigned n_threads,
                                size_t *out)
{
    cl_err rc = CL_OK;
    size_t total = 0;
    CL_ENSURE_D(m && out, CL_E_CORE_INVALID_ARG, "model or out is NULL");
    const struct cl_model_hparams *hp = &m->hp;
    size_t kvk = (size_t)hp->n_head_kv * hp->head_dim_k, kvv = (size_t)hp->n_head_kv * hp->head_dim_v;
    size_t qw = (size_t)hp->n_head * hp->head_dim_k, aw = (size_t)hp->n_head * hp->head_dim_v;
    size_t E = hp->n_embd, widest = E > aw ? E : aw;
    /* activations, then the row table (at most 48 bytes a row) and the row selection */
    const size_t rows[] = {E, widest, qw, kvk, kvv, aw, E, hp->n_ff, hp->n_ff, 12, 1};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t f;
        CL_GUARD(cl_size_mul(T, rows[i], &f));
        CL_GUARD(cl_model_mem_piece(f, &total));
    }
    size_t sc;
    CL_GUARD(cl_size_mul(n_threads ? n_threads : 1, (size_t)n_ctx + hp->head_dim_k, &sc));
    CL_GUARD(cl_model_mem_piece(sc, &total));
    /* quantized activations: at most 2 bytes per input element (F16), 4 for F32 inputs used in place */
    size_t in = E > hp->n_ff ? E : hp->n_ff, act;
    if (aw > in)
        in = aw;
    CL_GUARD(cl_size_mul(in, (size_t)T * 2, &act));
    CL_GUARD(cl_size_add(total, act, &total));
    CL_GUARD(cl_size_add(total, 2 * 4096, &total));
    *out = total;
out:
    return rc;
}

cl_err cl_model_seq_mem_need(const struct cl_model *m, const struct cl_model_seq_params *p, unsigned n_threads,
                             size_t *out)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(m && p && out, CL_E_CORE_INVALID_ARG, "model, params or out is NULL");
    const struct cl_model_hparams *hp = &m->hp;
    uint32_t n_ctx = p->n_ctx, T = p->n_ubatch ? p->n_ubatch : CL_MODEL_UBATCH;
    if (n_ctx == 0)
        n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    CL_ENSURE_D(n_ctx >= 1 && n_ctx <= CL_MODEL_MAX_CTX, CL_E_INFER_MODEL_CTX, "n_ctx %u not in 1..%u", n_ctx,
                CL_MODEL_MAX_CTX);
    size_t kvk = (size_t)hp->n_head_kv * hp->head_dim_k, kvv = (size_t)hp->n_head_kv * hp->head_dim_v;
    size_t kv = 0, total = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        uint64_t ring = (uint64_t)hp->sliding_window + T;
        size_t slots = m->layers[il].swa && ring < n_ctx ? (size_t)ring : n_ctx, a;
        CL_GUARD(cl_size_mul(slots, kvk + kvv, &a));
        CL_GUARD(cl_size_add(kv, a, &kv));
    }
    /* K and V: fp16 halves them */
    CL_GUARD(cl_model_mem_piece(p->kv_f16 ? (kv + 1) / 2 : kv, &total));
    if (!p->kv_only) {
        size_t sc;
        CL_GUARD(cl_model_batch_mem_need(m, T, n_ctx, n_threads, &sc));
        CL_GUARD(cl_size_add(total, sc, &total));
    }
    /* logits of one position, and page rounding of each secure allocation */
    CL_GUARD(cl_model_mem_piece(hp->n_vocab, &total));
    CL_GUARD(cl_size_add(total, 4 * 4096, &total));
    *out = total;
out:
    return rc;
}

cl_err cl_model_enclave_mem_need(const struct cl_model *m, size_t model_bytes, size_t projector_bytes, uint32_t n_ctx,
                                 unsigned n_threads, size_t *out)
{
    cl_err rc = CL_OK;
    size_t seq, total;
    struct cl_model_seq_params p = {.n_ctx = n_ctx};
    CL_ENSURE_D(n_ctx >= 1, CL_E_INFER_MODEL_CTX, "no positions to size a sequence for");
    CL_GUARD(cl_model_seq_mem_need(m, &p, n_threads, &seq));
    CL_GUARD(cl_size_add(model_bytes, projector_bytes, &total));
    CL_GUARD(cl_size_add(total, seq, &total));
    CL_GUARD(cl_size_add(total, CL_MODEL_RUNTIME_BYTES, &total));
    *out = total;
out:
    return rc;
}
