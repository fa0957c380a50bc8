#ifndef CLOISTER_ENCLAVE_INTERNAL_H
#define CLOISTER_ENCLAVE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "cloister/encode.h"
#include "cloister/json_secure.h"
#include "cloister/enclave.h"


/* Parses an OpenAI chat-completions request. On failure, *why is a fixed
 * message for the client (never an echo of the input). msgs point into
 * `root`, which the caller keeps alive and releases with json_decref. */
CL_MUST_CHECK cl_err cl_chat_request_parse(const uint8_t *body, size_t n, const struct cl_enclave_limits *l,
                                           json_t **root, struct cl_chat_msg *msgs, struct cl_chat_params *p,
                                           const char **why);


/* ---- the engine-backed generator (engine.c) ---- */
#define CL_ENGINE_MAX_NAME 128
struct cl_engine;
/* model: the decrypted GGUF in secure memory; it must outlive the engine. */
CL_MUST_CHECK cl_err cl_engine_new(const void *model, size_t len, unsigned threads, const char *tmpl_override,
                                   uint32_t max_prompt_tokens, struct cl_engine **out);
void cl_engine_free(struct cl_engine *e);
const char *cl_engine_name(const struct cl_engine *e);
/* Matches struct cl_generator's generate (self = the engine). */
CL_MUST_CHECK cl_err cl_engine_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece,
                                        void *piece_ctx, struct cl_chat_result *res);

#endif
