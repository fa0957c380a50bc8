/* The enclave application's runtime (lib cl_enclave): boot (configuration,
 * key release, model digest), the engine-backed generator, the service loop
 * and request parsing. An internal API: for tools/cloister-enclave and the
 * enclave's own tests, benchmarks and fuzz targets, not for other modules
 * (the gateway's public face is cloister/enclave.h). */
#ifndef CLOISTER_ENCLAVE_RUNTIME_H
#define CLOISTER_ENCLAVE_RUNTIME_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "cloister/attest_user_data.h"
#include "cloister/bootcfg.h"
#include "cloister/crypto.h"
#include "cloister/enclave.h"
#include "cloister/encode.h"
#include "cloister/json_secure.h"
#include "cloister/kms_client.h"
#include "cloister/nsm.h"
#include "cloister/seal.h"

/* Parses an OpenAI chat-completions request. On failure, *why is a fixed
 * message for the client (never an echo of the input). msgs point into
 * `root`, which the caller keeps alive and releases with json_decref, and
 * into p->owned (contents assembled from parts, image bytes), released with
 * cl_chat_params_release on success. */
CL_MUST_CHECK cl_err cl_chat_request_parse(const uint8_t *body, size_t n, const struct cl_enclave_limits *l,
                                           json_t **root, struct cl_chat_msg *msgs, struct cl_chat_params *p,
                                           const char **why);
void cl_chat_params_release(struct cl_chat_params *p);


/* ---- the engine-backed generator (engine.c) ---- */
#define CL_ENGINE_MAX_NAME 128
struct cl_engine;
/* model: the decrypted GGUF in secure memory; it must outlive the engine, which
 * owns its bytes from now on: weights may be repacked in place for the
 * kernels (cl_model_load), so hash or copy it before, never after. */
CL_MUST_CHECK cl_err cl_engine_new(void *model, size_t len, unsigned threads, const char *tmpl_override,
                                   uint32_t max_prompt_tokens, struct cl_engine **out);
/* Adds the vision encoder: mmproj is the decrypted projector GGUF in secure
 * memory (it must outlive the engine) whose output width must match the
 * model's. Without it the engine refuses images. */
CL_MUST_CHECK cl_err cl_engine_set_vision(struct cl_engine *e, const void *mmproj, size_t len);
void cl_engine_free(struct cl_engine *e);
/* Continuous batching limits, before serving: up to max_seqs sequences
 * (1..64) at once, each of up to max_ctx positions (prompt + max_tokens; more
 * is CL_E_PROTO_LIMIT). With mem_total (bytes the enclave may use, 0: no
 * bound) the sequences' KV caches share what the model, projector, runtime
 * and pass scratch leave (at least one sequence of max_ctx); a request that
 * would exceed max_seqs or that budget fails with CL_E_PROTO_BUSY. The
 * defaults: 4 sequences, max_prompt_tokens + 4096 positions, no bound. */
CL_MUST_CHECK cl_err cl_engine_configure(struct cl_engine *e, uint32_t max_seqs, uint32_t max_ctx, size_t mem_total);
uint32_t cl_engine_max_seqs(const struct cl_engine *e);
/* Sequences' key/value caches in F16 (half the memory, llama.cpp's default)
 * instead of F32, before serving and before cl_engine_configure sizes the
 * budget. */
CL_MUST_CHECK cl_err cl_engine_set_kv_f16(struct cl_engine *e, bool on);
/* What the scheduler has done: sequences admitted now, forward passes run,
 * the most sequences and rows one pass held, KV bytes charged and the budget. */
struct cl_engine_stats {
    uint32_t active;
    uint64_t steps;
    uint32_t peak_seqs;
    uint32_t peak_rows;
    size_t kv_used;
    size_t kv_budget;
};
void cl_engine_stats(struct cl_engine *e, struct cl_engine_stats *st);
/* Tests and benchmarks: with hold set, admitted sequences wait and no pass
 * runs until it is cleared (so several can be made to start together). */
void cl_engine_hold(struct cl_engine *e, bool hold);
/* Memory the engine needs to serve requests of up to n_ctx positions
 * (cl_model_enclave_mem_need over its model of model_len bytes). */
CL_MUST_CHECK cl_err cl_engine_mem_need(const struct cl_engine *e, size_t model_len, uint32_t n_ctx, unsigned threads,
                                        size_t *out);
const char *cl_engine_name(const struct cl_engine *e);
/* Matches struct cl_generator's generate (self = the engine). */
CL_MUST_CHECK cl_err cl_engine_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece,
                                        void *piece_ctx, struct cl_chat_result *res);

/* ---- boot and service (boot.c, service.c) ---- */
/* Lives in secure memory: it holds the key-service credentials. */
struct cl_enclave_boot {
    struct cl_bootcfg cfg; /* as the host sent it (checked by cl_bootcfg_parse) */
    struct cl_kmsc_credentials cred;
    struct cl_enclave_limits limits;
    uint8_t config_sha256[32]; /* of cl_boot_config_text */
    /* Computed here, over the plaintext loaded: never the header's claim. */
    uint8_t model_sha256[32];
    char kms_key_arn[CL_ATTEST_UD_MAX_KMS_TEXT + 1]; /* the KeyId the key service answered with */
    uint8_t *model; /* decrypted GGUF, secure memory */
    size_t model_len;
    bool has_mmproj; /* a vision projector was loaded (cfg.mmproj) */
    uint8_t mmproj_sha256[32];
    uint8_t *mmproj; /* decrypted projector GGUF, secure memory */
    size_t mmproj_len;
    /* Licensing (docs/licensing.md): the model's context pins a licence key. */
    bool licensed;
    char licence_key_sha256[65];          /* the context entry's value */
    struct cl_seal_header *model_hdr;     /* kept for renewals (wrapped key, context); heap */
};

/* The memory this enclave may use: its address-space limit (cloister-sim
 * sets it from the image), else the machine's physical memory. */
CL_MUST_CHECK cl_err cl_enclave_mem_available(size_t *out);
/* CL_E_CORE_MEMORY_SMALL, naming the size needed, when need bytes (for
 * `what`) exceed cl_enclave_mem_available. */
CL_MUST_CHECK cl_err cl_enclave_mem_check(size_t need, size_t model_bytes, const char *what);
CL_MUST_CHECK cl_err cl_boot_get_config(struct cl_enclave_boot *bt);
/* The canonical public text of the configuration (credentials excluded)
 * whose SHA-256 is config_sha256 (docs/protocol.md section 4). */
CL_MUST_CHECK cl_err cl_boot_config_text(const struct cl_bootcfg *c, struct cl_buf *out);
/* The sealed header's model-digest claim must be the value of the
 * cloister:model-sha256 encryption context the key is released under. */
CL_MUST_CHECK cl_err cl_boot_check_context(const struct cl_seal_header *h);
/* The sealed model (port 5001) and, when the configuration says so, the
 * sealed projector (5003) under the same key: each digested here. */
CL_MUST_CHECK cl_err cl_boot_load_model(struct cl_enclave_boot *bt, cl_nsm *nsm, unsigned threads);
/* The attestation user_data (cloister/attest_user_data.h). */
CL_MUST_CHECK cl_err cl_boot_user_data(const struct cl_enclave_boot *bt, const cl_pkey *audit, struct cl_buf *out);
void cl_boot_free(struct cl_enclave_boot *bt);

/* Serves the service port until a fatal error; see service.c. */
struct cl_service {
    cl_gateway *gw;
    cl_nsm *nsm;
    const uint8_t *user_data;
    size_t user_data_len;
    const struct cl_enclave_limits *limits;
    const char *model_name;
    const uint8_t *model_sha256;
    struct cl_jobs *jobs; /* batch jobs (JOB_REQ); NULL: refused */
    struct cl_lease *lease; /* licensed model: its lease state is in the status; NULL otherwise */
};
CL_MUST_CHECK cl_err cl_service_run(struct cl_service *s);
/* One NSM exchange at a time, whoever asks (service, jobs). */
extern pthread_mutex_t cl_enclave_nsm_mu;

/* ---- licensing (licensing.c, docs/licensing.md) ---- */
struct cl_lease;
struct cl_licence_table;
/* For a licensed model (bt->licensed): fetches the licence key (bound to the
 * model's encryption-context entry), the signed licence set and a lease
 * grant through the key-service bridge with an attested request, then
 * renews after each third of a lease, each time with a fresh
 * attestation document and a usage report signed by audit. When a lease ends
 * unrenewed, serving stops and the model and credentials are wiped. */
CL_MUST_CHECK cl_err cl_lease_start(struct cl_enclave_boot *bt, cl_nsm *nsm, const cl_pkey *audit, const uint8_t *ud,
                                    size_t ud_len, struct cl_lease **out);
struct cl_licence_table *cl_lease_table(struct cl_lease *l);
/* out generates with inner while the lease holds; refuses
 * (PROTO_LICENCE_LEASE_ENDED) after, and ends a stream at the lease's end. */
void cl_lease_generator(struct cl_lease *l, const struct cl_generator *inner, struct cl_generator *out);
/* fn(arg) runs when the lease ends, after the model's wipe and before the
 * report (at most CL_LEASE_HOOKS): the other key material goes too. */
#define CL_LEASE_HOOKS 4
CL_MUST_CHECK cl_err cl_lease_on_end(struct cl_lease *l, void (*fn)(void *), void *arg);
/* Adds {"licence": {...}} to a status object; true once serving stopped. */
bool cl_lease_status(struct cl_lease *l, json_t *status);

/* ---- batch jobs (job.c, docs/batch.md) ---- */
struct cl_jobs;
/* bt must keep the key-service credentials for the job keys' release. Makes
 * the attestation document that certifies the audit key (its digest names
 * the receipt chain). */
CL_MUST_CHECK cl_err cl_jobs_new(struct cl_enclave_boot *bt, cl_nsm *nsm, const cl_pkey *audit, const uint8_t *ud,
                                 size_t ud_len, const struct cl_generator *gen, const struct cl_enclave_limits *lim,
                                 struct cl_jobs **out);
void cl_jobs_free(struct cl_jobs *j);
/* Licensed model: every job is admitted against t (its credential is the
 * request's member CL_JOB_CREDENTIAL_MEMBER) and its tokens charged; a
 * refusal is answered with an error object sealed for the consumer. */
#define CL_JOB_CREDENTIAL_MEMBER "cloister_credential"
void cl_jobs_set_licences(struct cl_jobs *j, struct cl_licence_table *t);
/* Frees (and so clears) the Recipient key; no job key is released after. */
void cl_jobs_wipe_keys(struct cl_jobs *j);
/* Handles one JOB_REQ on fd: a JOB_RES, or an ERROR frame (returned code)
 * when the job cannot be opened: malformed, or its key refused. */
CL_MUST_CHECK cl_err cl_jobs_handle(struct cl_jobs *j, int fd, const uint8_t *job, size_t n);
/* After an interactive answer on fd: signs its receipt (kind "interactive",
 * the same chain as jobs) and sends it in a RECEIPT frame; the chain
 * advances only when the frame was sent. req_sha/res_sha: SHA-256 of the
 * encapsulated request and of the encapsulated response (all chunks). */
CL_MUST_CHECK cl_err cl_jobs_receipt_interactive(struct cl_jobs *j, int fd, const struct cl_gw_outcome *oc,
                                                 const uint8_t req_sha[32], const uint8_t res_sha[32],
                                                 uint64_t started_ms, uint64_t duration_us);

#endif
