/* Error codes: a category in the high byte, a reason in the low byte.
 *
 * Every code has a fixed message (cl_err_str). A thread-local detail string
 * (cl_err_detail) adds the field, chunk or check that failed; it is formatted
 * only from numbers and fixed strings, never from payload bytes. */
#ifndef CLOISTER_ERR_H
#define CLOISTER_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define CL_MUST_CHECK __attribute__((warn_unused_result))
#define CL_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum cl_err_category {
    CL_ERRCAT_NONE = 0,
    CL_ERRCAT_CORE,
    CL_ERRCAT_CRYPTO,
    CL_ERRCAT_SEAL,
    CL_ERRCAT_CBOR,
    CL_ERRCAT_ATTEST,
    CL_ERRCAT_KMS,
    CL_ERRCAT_INFER,
    CL_ERRCAT_NET,
    CL_ERRCAT_STORE,
    CL_ERRCAT_CLI,
    CL_ERRCAT_PROTO,
    CL_ERRCAT_IMAGE,
    CL_ERRCAT_COUNT
};

/* Each category's reasons live in include/cloister/err/<category>.def as
 * CL_E(NAME, "message") lines, so modules add codes without touching others. */
enum cl_err_code {
    CL_OK = 0,
#define CL_E(name, msg) CL_E_##name,
    CL_ERR_CORE_BASE = CL_ERRCAT_CORE << 8,
#include "cloister/err/core.def"
    CL_ERR_CRYPTO_BASE = CL_ERRCAT_CRYPTO << 8,
#include "cloister/err/crypto.def"
    CL_ERR_SEAL_BASE = CL_ERRCAT_SEAL << 8,
#include "cloister/err/seal.def"
    CL_ERR_CBOR_BASE = CL_ERRCAT_CBOR << 8,
#include "cloister/err/cbor.def"
    CL_ERR_ATTEST_BASE = CL_ERRCAT_ATTEST << 8,
#include "cloister/err/attest.def"
    CL_ERR_KMS_BASE = CL_ERRCAT_KMS << 8,
#include "cloister/err/kms.def"
    CL_ERR_INFER_BASE = CL_ERRCAT_INFER << 8,
#include "cloister/err/infer.def"
    CL_ERR_NET_BASE = CL_ERRCAT_NET << 8,
#include "cloister/err/net.def"
    CL_ERR_STORE_BASE = CL_ERRCAT_STORE << 8,
#include "cloister/err/store.def"
    CL_ERR_CLI_BASE = CL_ERRCAT_CLI << 8,
#include "cloister/err/cli.def"
    CL_ERR_PROTO_BASE = CL_ERRCAT_PROTO << 8,
#include "cloister/err/proto.def"
    CL_ERR_IMAGE_BASE = CL_ERRCAT_IMAGE << 8,
#include "cloister/err/image.def"
#undef CL_E
};

typedef int cl_err;

/* Fixed message for a code; "unknown error" for anything not in the tables. */
const char *cl_err_str(cl_err e);
/* Category name ("core", "seal", ...), or "unknown". */
const char *cl_err_category_name(cl_err e);
/* Symbolic name ("SEAL_CHUNK_AUTH"), or NULL for an unknown code. */
const char *cl_err_name(cl_err e);
/* The fixed message of the code named name ("PROTO_LIMIT"), NULL when none is. */
const char *cl_err_str_by_name(const char *name);
static inline enum cl_err_category cl_err_category(cl_err e) { return (enum cl_err_category)((unsigned)e >> 8); }

/* Thread-local detail for the most recent failure. Callers format only
 * numbers, field names and other non-secret constants into it. */
void cl_err_set_detail(const char *fmt, ...) CL_PRINTF(1, 2);
void cl_err_clear_detail(void);
const char *cl_err_detail(void);
/* Sets the detail and returns the code, for `return cl_err_fail(CODE, "...")`. */
cl_err cl_err_fail(cl_err code, const char *fmt, ...) CL_PRINTF(2, 3);
/* "message (detail)" into buf; returns buf. */
const char *cl_err_format(cl_err e, char *buf, size_t len);

/* Guard macros. Functions declare `cl_err rc = CL_OK;` and end with one `out:` label. */
#define CL_GUARD(expr) do { cl_err cl_guard_rc_ = (expr); if (cl_guard_rc_ != CL_OK) { rc = cl_guard_rc_; goto out; } } while (0)
#define CL_ENSURE(cond, code) do { if (!(cond)) { rc = (code); goto out; } } while (0)
#define CL_ENSURE_D(cond, code, ...) do { if (!(cond)) { rc = cl_err_fail((code), __VA_ARGS__); goto out; } } while (0)
#define CL_FAIL(code, ...) do { rc = cl_err_fail((code), __VA_ARGS__); goto out; } while (0)

#endif
