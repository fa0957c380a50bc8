/* Shared helpers for cmocka tests. */
#ifndef CLOISTER_TESTUTIL_H
#define CLOISTER_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cloister/buf.h"
#include "cloister/encode.h"
#include "cloister/err.h"

/* Path under $CLOISTER_TESTDATA (or $CLOISTER_REFERENCE), or skips the test
 * with a message when the variable is unset. */
static inline const char *cl_test_path(const char *var, const char *rel, char *buf, size_t len)
{
    const char *root = getenv(var);
    if (!root || !*root) {
        print_message("skipped: %s is not set (needs %s)\n", var, rel);
        return NULL;
    }
    snprintf(buf, len, "%s/%s", root, rel);
    return buf;
}
#define CL_TESTDATA(rel, buf) do { if (!cl_test_path("CLOISTER_TESTDATA", (rel), (buf), sizeof(buf))) { skip(); } } while (0)
#define CL_REFERENCE(rel, buf) do { if (!cl_test_path("CLOISTER_REFERENCE", (rel), (buf), sizeof(buf))) { skip(); } } while (0)

#define assert_ok(expr) do { cl_err cl_t_rc_ = (expr); if (cl_t_rc_ != CL_OK) { char cl_t_b_[400]; \
    fail_msg("%s -> %s [%s]", #expr, cl_err_name(cl_t_rc_) ? cl_err_name(cl_t_rc_) : "?", cl_err_format(cl_t_rc_, cl_t_b_, sizeof(cl_t_b_))); } } while (0)
#define assert_err(expr, code) do { cl_err cl_t_rc_ = (expr); if (cl_t_rc_ != (code)) { \
    fail_msg("%s -> %s, expected %s", #expr, cl_err_name(cl_t_rc_) ? cl_err_name(cl_t_rc_) : "?", cl_err_name(code)); } } while (0)

/* Decodes a hex literal into a fresh heap buffer (caller frees). */
static inline uint8_t *cl_test_unhex(const char *hex, size_t *n)
{
    struct cl_buf b;
    cl_buf_init(&b, strlen(hex) / 2 + 1, CL_BUF_NONE);
    if (cl_hex_decode(hex, strlen(hex), &b) != CL_OK)
        fail_msg("bad hex in test: %s", hex);
    *n = b.len;
    if (!b.data)
        b.data = calloc(1, 1);
    return b.data;
}

#endif
