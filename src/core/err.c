#include "cloister/err.h"

#include <stdio.h>
#include <string.h>

struct cl_err_entry {
    cl_err code;
    const char *name;
    const char *msg;
};

#define CL_E(name, msg) {CL_E_##name, #name, msg},
static const struct cl_err_entry cl_err_table[] = {
    {CL_OK, "OK", "success"},
#include "cloister/err/core.def"
#include "cloister/err/crypto.def"
#include "cloister/err/seal.def"
#include "cloister/err/cbor.def"
#include "cloister/err/attest.def"
#include "cloister/err/kms.def"
#include "cloister/err/infer.def"
#include "cloister/err/net.def"
#include "cloister/err/store.def"
#include "cloister/err/cli.def"
#include "cloister/err/proto.def"
#include "cloister/err/image.def"
};
#undef CL_E

static const char *const cl_errcat_names[CL_ERRCAT_COUNT] = {
    [CL_ERRCAT_NONE] = "none",     [CL_ERRCAT_CORE] = "core",   [CL_ERRCAT_CRYPTO] = "crypto",
    [CL_ERRCAT_SEAL] = "seal",     [CL_ERRCAT_CBOR] = "cbor",   [CL_ERRCAT_ATTEST] = "attest",
    [CL_ERRCAT_KMS] = "kms",       [CL_ERRCAT_INFER] = "infer", [CL_ERRCAT_NET] = "net",
    [CL_ERRCAT_STORE] = "store",   [CL_ERRCAT_CLI] = "cli",    [CL_ERRCAT_PROTO] = "proto",
    [CL_ERRCAT_IMAGE] = "image",
};

static _Thread_local char cl_err_detail_buf[256];

static const struct cl_err_entry *cl_err_lookup(cl_err e)
{
    for (size_t i = 0; i < sizeof(cl_err_table) / sizeof(cl_err_table[0]); i++)
        if (cl_err_table[i].code == e)
            return &cl_err_table[i];
    return NULL;
}

const char *cl_err_str(cl_err e)
{
    const struct cl_err_entry *x = cl_err_lookup(e);
    return x ? x->msg : "unknown error";
}

const char *cl_err_name(cl_err e)
{
    const struct cl_err_entry *x = cl_err_lookup(e);
    return x ? x->name : NULL;
}

const char *cl_err_str_by_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof(cl_err_table) / sizeof(cl_err_table[0]); i++)
        if (!strcmp(cl_err_table[i].name, name))
            return cl_err_table[i].msg;
    return NULL;
}

const char *cl_err_category_name(cl_err e)
{
    unsigned c = (unsigned)e >> 8;
    return c < CL_ERRCAT_COUNT ? cl_errcat_names[c] : "unknown";
}

void cl_err_set_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl_err_detail_buf, sizeof(cl_err_detail_buf), fmt, ap);
    va_end(ap);
}

void cl_err_clear_detail(void) { cl_err_detail_buf[0] = '\0'; }

const char *cl_err_detail(void) { return cl_err_detail_buf; }

cl_err cl_err_fail(cl_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl_err_detail_buf, sizeof(cl_err_detail_buf), fmt, ap);
    va_end(ap);
    return code;
}

const char *cl_err_format(cl_err e, char *buf, size_t len)
{
    if (cl_err_detail_buf[0])
        snprintf(buf, len, "%s: %s", cl_err_str(e), cl_err_detail_buf);
    else
        snprintf(buf, len, "%s", cl_err_str(e));
    return buf;
}
