#ifndef CLOISTER_ENCLAVE_INTERNAL_H
#define CLOISTER_ENCLAVE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "cloister/enclave.h"

/* Appends the longest whole-character prefix of p (all of it when final),
 * invalid bytes replaced by U+FFFD; *used says how much of p was consumed. */
CL_MUST_CHECK cl_err cl_utf8_take(const uint8_t *p, size_t n, bool final, struct cl_buf *out, size_t *used);

/* Parses an OpenAI chat-completions request. On failure, *why is a fixed
 * message for the client (never an echo of the input). msgs point into
 * `root`, which the caller keeps alive and releases with json_decref. */
CL_MUST_CHECK cl_err cl_chat_request_parse(const uint8_t *body, size_t n, const struct cl_enclave_limits *l,
                                           json_t **root, struct cl_gen_msg *msgs, struct cl_gen_params *p,
                                           const char **why);

/* Wipes and frees a string from json_dumps (jansson's allocator). */
void cl_enclave_json_free_str(char *s);

#endif
