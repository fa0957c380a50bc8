/* Memory for keys and plaintext: memfd_secret where the kernel offers it,
 * otherwise anonymous pages that are mlock'ed and excluded from core dumps.
 * Always wiped before release. */
#ifndef CLOISTER_SECMEM_H
#define CLOISTER_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

#include "cloister/err.h"

enum cl_secmem_backend {
    CL_SECMEM_BACKEND_NONE = 0,
    CL_SECMEM_BACKEND_MEMFD_SECRET, /* removed from the kernel direct map */
    CL_SECMEM_BACKEND_MLOCK,        /* mlock + MADV_DONTDUMP */
    CL_SECMEM_BACKEND_UNLOCKED,     /* MADV_DONTDUMP only: mlock was refused */
    CL_SECMEM_BACKEND_COUNT
};

/* Zero-filled, page-aligned storage of at least n bytes. Buffers up to 16 MiB
 * (keys, prompts) use memfd_secret when the kernel has it; larger ones (model
 * weights) use mlock + MADV_DONTDUMP, because memfd_secret's per-page cost
 * makes gigabytes take seconds to fault in. The fallback from memfd_secret
 * (and from mlock, when refused) is logged once per process. */
CL_MUST_CHECK cl_err cl_secmem_alloc(size_t n, void **out);
/* Wipes and releases; NULL is a no-op. */
void cl_secmem_free(void *p);
/* Size originally requested for p. */
size_t cl_secmem_size(const void *p);
enum cl_secmem_backend cl_secmem_backend_of(const void *p);
const char *cl_secmem_backend_name(enum cl_secmem_backend b);
/* Test hook: forbid memfd_secret so the fallback path is exercised. */
void cl_secmem_disable_memfd_secret(bool disable);

/* Process hardening for anything that holds secrets: not dumpable, no core
 * files, no ptrace attach by same-uid processes. */
CL_MUST_CHECK cl_err cl_secure_process_init(void);

/* Wipe that the compiler may not elide. */
void cl_wipe(void *p, size_t n);
/* Constant-time equality: returns true when equal. Time depends only on n. */
bool cl_ct_equal(const void *a, const void *b, size_t n);

#endif
