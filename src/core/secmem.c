#include "cloister/secmem.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cloister/buf.h"
#include "cloister/log.h"

#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

/* Each allocation starts with one page holding this header; the caller's
 * memory begins on the next page so it stays page-aligned. */
struct cl_secmem_hdr {
    uint64_t magic;
    size_t map_len;
    size_t user_len;
    enum cl_secmem_backend backend;
};
#define CL_SECMEM_MAGIC 0x436c5365634d656dULL

static atomic_bool cl_secmem_no_memfd;
static atomic_flag cl_secmem_warned_memfd = ATOMIC_FLAG_INIT;
static atomic_flag cl_secmem_warned_mlock = ATOMIC_FLAG_INIT;

void cl_secmem_disable_memfd_secret(bool disable) { atomic_store(&cl_secmem_no_memfd, disable); }

void cl_wipe(void *p, size_t n)
{
    if (p && n)
        explicit_bzero(p, n);
}

bool cl_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

/* memfd_secret removes every page from the kernel's direct map as it is
 * first touched, which costs a TLB shootdown per page: fine for keys,
 * seconds per GiB for model weights. Large buffers use mlock instead. */
#define CL_SECMEM_SECRET_MAX ((size_t)16 << 20)

static void *cl_secmem_map_secret(size_t len)
{
    if (atomic_load(&cl_secmem_no_memfd) || len > CL_SECMEM_SECRET_MAX)
        return MAP_FAILED;
    int fd = (int)syscall(SYS_memfd_secret, 0);
    if (fd < 0)
        return MAP_FAILED;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) == 0)
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p;
}

static void *cl_secmem_map_anon(size_t len, enum cl_secmem_backend *backend)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return p;
    (void)madvise(p, len, MADV_DONTDUMP);
    (void)madvise(p, len, MADV_DONTFORK);
    if (mlock(p, len) == 0) {
        *backend = CL_SECMEM_BACKEND_MLOCK;
    } else {
        *backend = CL_SECMEM_BACKEND_UNLOCKED;
        if (!atomic_flag_test_and_set(&cl_secmem_warned_mlock))
            CL_LOG(CL_LOG_WARN, "secmem_mlock_refused", CL_LOG_SIZE("bytes", len), CL_LOG_COUNT("errno", errno),
                   CL_LOG_LIT("fallback", "unlocked, excluded from core dumps"));
    }
    return p;
}

cl_err cl_secmem_alloc(size_t n, void **out)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096, len;
    if (n == 0)
        n = 1;
    if (cl_size_add(n, 2 * page - 1, &len) != CL_OK)
        return CL_E_CORE_OVERFLOW;
    len -= len % page;

    enum cl_secmem_backend backend = CL_SECMEM_BACKEND_MEMFD_SECRET;
    void *p = cl_secmem_map_secret(len);
    if (p == MAP_FAILED) {
        if (!atomic_load(&cl_secmem_no_memfd) && len <= CL_SECMEM_SECRET_MAX &&
            !atomic_flag_test_and_set(&cl_secmem_warned_memfd))
            CL_LOG(CL_LOG_INFO, "secmem_memfd_secret_unavailable",
                   CL_LOG_LIT("fallback", "mlock + MADV_DONTDUMP"));
        p = cl_secmem_map_anon(len, &backend);
    } else {
        (void)madvise(p, len, MADV_DONTDUMP);
    }
    if (p == MAP_FAILED)
        return cl_err_fail(CL_E_CORE_NOMEM, "secure allocation of %zu bytes", n);

    struct cl_secmem_hdr *h = p;
    h->magic = CL_SECMEM_MAGIC;
    h->map_len = len;
    h->user_len = n;
    h->backend = backend;
    *out = (uint8_t *)p + page;
    return CL_OK;
}

static struct cl_secmem_hdr *cl_secmem_hdr(const void *p)
{
    long pg = sysconf(_SC_PAGESIZE);
    return (struct cl_secmem_hdr *)((uintptr_t)p - (size_t)(pg > 0 ? pg : 4096));
}

void cl_secmem_free(void *p)
{
    if (!p)
        return;
    struct cl_secmem_hdr *h = cl_secmem_hdr(p);
    if (h->magic != CL_SECMEM_MAGIC)
        __builtin_trap();
    size_t len = h->map_len;
    explicit_bzero(h, len);
    if (h->backend == CL_SECMEM_BACKEND_MLOCK)
        (void)munlock(h, len);
    (void)munmap(h, len);
}

size_t cl_secmem_size(const void *p) { return p ? cl_secmem_hdr(p)->user_len : 0; }

enum cl_secmem_backend cl_secmem_backend_of(const void *p)
{
    return p ? cl_secmem_hdr(p)->backend : CL_SECMEM_BACKEND_NONE;
}

const char *cl_secmem_backend_name(enum cl_secmem_backend b)
{
    switch (b) {
    case CL_SECMEM_BACKEND_MEMFD_SECRET: return "memfd_secret";
    case CL_SECMEM_BACKEND_MLOCK: return "mlock";
    case CL_SECMEM_BACKEND_UNLOCKED: return "unlocked";
    default: return "none";
    }
}

cl_err cl_secure_process_init(void)
{
    /* A sandbox (cloister-sim's seccomp filter) may forbid these calls after
     * having applied them itself: what matters is the resulting state. */
    struct rlimit rl = {0, 0}, cur;
    if (setrlimit(RLIMIT_CORE, &rl) != 0 && (getrlimit(RLIMIT_CORE, &cur) != 0 || cur.rlim_cur != 0))
        return cl_err_fail(CL_E_CORE_PERM, "setrlimit(RLIMIT_CORE)");
    /* Not dumpable also means same-uid processes cannot ptrace or read /proc/PID/mem. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
        return cl_err_fail(CL_E_CORE_PERM, "prctl(PR_SET_DUMPABLE)");
    return CL_OK;
}
