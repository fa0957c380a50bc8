/* Structured JSON-lines logging. The API takes only event names and keys that
 * are string literals, ids, sizes, counts, durations and error codes: there
 * is no way to hand it a prompt, an image, an answer or a key. */
#ifndef CLOISTER_LOG_H
#define CLOISTER_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "cloister/err.h"

enum cl_log_level { CL_LOG_NONE = 0, CL_LOG_DEBUG, CL_LOG_INFO, CL_LOG_WARN, CL_LOG_ERROR, CL_LOG_LEVEL_COUNT };

enum cl_log_kind {
    CL_LOGF_NONE = 0,
    CL_LOGF_ID,       /* 128-bit request/session id, printed as hex */
    CL_LOGF_SIZE,     /* bytes */
    CL_LOGF_COUNT_,   /* tokens, chunks, items */
    CL_LOGF_DURATION, /* microseconds */
    CL_LOGF_ERR,      /* cl_err: printed as its symbolic name */
    CL_LOGF_LITERAL,  /* a string literal known at compile time */
    CL_LOGF_KIND_COUNT
};

struct cl_reqid { uint8_t b[16]; };

struct cl_log_field {
    enum cl_log_kind kind;
    const char *key;
    union { uint64_t u; const struct cl_reqid *id; const char *lit; cl_err err; } v;
};

/* Concatenating with "" makes the compiler reject anything but a literal. */
#define CL_LOG_ID(k, idp)      ((struct cl_log_field){CL_LOGF_ID, "" k "", {.id = (idp)}})
#define CL_LOG_SIZE(k, n)      ((struct cl_log_field){CL_LOGF_SIZE, "" k "", {.u = (uint64_t)(n)}})
#define CL_LOG_COUNT(k, n)     ((struct cl_log_field){CL_LOGF_COUNT_, "" k "", {.u = (uint64_t)(n)}})
#define CL_LOG_US(k, n)        ((struct cl_log_field){CL_LOGF_DURATION, "" k "", {.u = (uint64_t)(n)}})
#define CL_LOG_ERR(e)          ((struct cl_log_field){CL_LOGF_ERR, "error", {.err = (e)}})
#define CL_LOG_LIT(k, s)       ((struct cl_log_field){CL_LOGF_LITERAL, "" k "", {.lit = "" s ""}})

/* Logs an event with up to 16 fields. Prefer the CL_LOG macro. */
void cl_log_emit(enum cl_log_level lvl, const char *event, const struct cl_log_field *f, unsigned n);
#define CL_LOG(lvl, event, ...)                                                              \
    do {                                                                                     \
        const struct cl_log_field cl_log_f_[] = {CL_LOG_LIT("_", ""), ##__VA_ARGS__};        \
        cl_log_emit((lvl), "" event "", cl_log_f_ + 1,                                       \
                    (unsigned)(sizeof(cl_log_f_) / sizeof(cl_log_f_[0]) - 1));               \
    } while (0)

void cl_log_set_level(enum cl_log_level lvl);
/* "debug", "info", "warn" or "error"; CL_LOG_NONE for anything else. */
enum cl_log_level cl_log_level_parse(const char *s);
enum cl_log_level cl_log_level(void);
/* Where log lines go (stderr by default). Not thread-safe against concurrent emits. */
void cl_log_set_stream(FILE *f);
/* Component name added to every line ("kms", "enclave", ...). Must be a literal. */
void cl_log_set_component(const char *component);
/* Fresh random request id. */
void cl_reqid_new(struct cl_reqid *id);
/* Monotonic clock in microseconds. */
uint64_t cl_now_us(void);

#endif
