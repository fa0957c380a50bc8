/* The enclave sandbox.
 *
 * Why the application is loaded with dlopen rather than exec'd: a process's
 * memory belongs to the user namespace it was exec'd in. Exec inside the
 * new user namespace would make that namespace, which the host user owns,
 * the owner of the enclave's memory, and the host user holds CAP_SYS_PTRACE
 * there, so "not dumpable" would not keep it out. Forking from cloister-sim
 * (exec'd in the initial namespace) keeps the memory owned by the initial
 * namespace, where the host user has no such capability. */
#include "sandbox.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

const char cl_sim_kernel_profile[] =
    "cloister-sim sandbox v1\n"
    "namespaces: user pid net mount ipc uts\n"
    "no_new_privs: yes\n"
    "dumpable: no\n"
    "core: 0\n"
    "seccomp: allowlist v1 (default EPERM; socket AF_UNIX only; no exec, ptrace, mount, namespaces)\n"
    "app: ELF shared object, entry cloister_enclave_main(argc, argv)\n";

#if defined(__SANITIZE_ADDRESS__)
#define CL_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CL_SIM_ASAN 1
#endif
#endif

static void cl_sim_die(const char *step)
{
    int e = errno;
    fprintf(stderr, "cloister-sim: sandbox: %s failed: %s\n", step, strerror(e));
    _exit(125);
}

static void cl_sim_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        cl_sim_die(path);
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n)
        cl_sim_die(path);
    close(fd);
}

static const char *const cl_sim_allowed[] = {
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "close", "close_range",
    "fstat", "newfstatat", "statx", "lstat", "stat", "lseek", "mmap", "munmap", "mprotect", "mremap", "madvise",
    "brk", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigtimedwait", "rt_sigsuspend", "sigaltstack", "exit", "exit_group", "futex",
    "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "arch_prctl", "clock_gettime",
    "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time", "getpid", "getppid", "gettid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getrandom", "openat",
    "open", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "fcntl", "dup",
    "dup2", "dup3", "pipe", "pipe2", "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername",
    "wait4", "waitid", "kill", "tgkill", "tkill", "prlimit64", "getrlimit", "sched_getaffinity", "sched_yield",
    "uname", "unlink", "unlinkat", "chmod", "fchmod", "fchmodat", "umask", "getcwd", "sysinfo", "getrusage",
    "times", "ftruncate", "fsync", "fdatasync", "mkdir", "mkdirat", "rename", "renameat", "membarrier",
    "fork", "vfork",
};

static void cl_sim_seccomp(void)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx)
        cl_sim_die("seccomp_init");
    int rc = 0;
    for (size_t i = 0; i < sizeof(cl_sim_allowed) / sizeof(cl_sim_allowed[0]) && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(cl_sim_allowed[i]);
        if (nr != __NR_SCMP_ERROR)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    /* Local sockets only: no TCP/IP, no netlink, no AF_VSOCK (the sim
     * emulates vsock with UNIX sockets). */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    /* Threads and plain forks, never new namespaces. glibc falls back from
     * clone3 (whose flags seccomp cannot inspect) to clone on ENOSYS. */
    const uint64_t ns_flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                              CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWTIME;
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags, 0));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* No typing into the host's terminal. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_NE, TIOCSTI));
    /* prctl, but not turning dumpable back on. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_NE, PR_SET_DUMPABLE));
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) {
        errno = -rc;
        cl_sim_die("seccomp");
    }
}

static void cl_sim_limit_cpus(uint64_t cpus)
{
    cpu_set_t cur, set;
    if (!cpus || sched_getaffinity(0, sizeof(cur), &cur) != 0)
        return;
    CPU_ZERO(&set);
    uint64_t n = 0;
    for (int i = 0; i < CPU_SETSIZE && n < cpus; i++)
        if (CPU_ISSET(i, &cur)) {
            CPU_SET(i, &set);
            n++;
        }
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        cl_sim_die("sched_setaffinity");
}

/* PID 1 of the enclave's namespaces. */
static void cl_sim_enclave(const struct cl_sim_sandbox *sb)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        cl_sim_die("PR_SET_PDEATHSIG");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        cl_sim_die("private mounts");
    /* Hide the host's processes; some container runtimes forbid a fresh
     * proc mount in a user namespace, in which case the pid namespace still
     * isolates signals and ptrace. */
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        fprintf(stderr, "cloister-sim: sandbox: note: could not mount a private /proc (%s)\n", strerror(errno));
    if (sethostname("enclave", 7) != 0)
        cl_sim_die("sethostname");
    cl_sim_limit_cpus(sb->cpus);
    struct rlimit core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &core) != 0)
        cl_sim_die("RLIMIT_CORE");
    if (sb->memory_mib) {
#ifdef CL_SIM_ASAN
        fprintf(stderr, "cloister-sim: sandbox: note: memory limit not applied under AddressSanitizer\n");
#else
        struct rlimit as = {sb->memory_mib << 20, sb->memory_mib << 20};
        if (setrlimit(RLIMIT_AS, &as) != 0)
            cl_sim_die("RLIMIT_AS");
#endif
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        cl_sim_die("no_new_privs");
    char num[32], cid[32], path[64];
    snprintf(num, sizeof(num), "%d", sb->nsm_fd);
    snprintf(cid, sizeof(cid), "%u", sb->cid);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", sb->app_fd);
    if (clearenv() != 0 || setenv("CLOISTER_NSM_FD", num, 1) != 0 || setenv("CLOISTER_VSOCK_CID", cid, 1) != 0 ||
        setenv("CLOISTER_VSOCK_DIR", sb->vsock_dir, 1) != 0)
        cl_sim_die("environment");
    cl_sim_seccomp();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "cloister-sim: sandbox: cannot load the enclave application: %s\n", dlerror());
        _exit(126);
    }
    close(sb->app_fd);
    int (*entry)(int, char **) = (int (*)(int, char **))dlsym(h, "cloister_enclave_main");
    if (!entry) {
        fprintf(stderr, "cloister-sim: sandbox: the application does not export cloister_enclave_main\n");
        _exit(126);
    }
    int ret = entry(sb->argc, sb->argv);
    fflush(NULL);
    /* _exit: no atexit handlers of the host program inside the enclave. */
    _exit(ret & 0xff);
}

cl_err cl_sim_sandbox_start(const struct cl_sim_sandbox *sb, pid_t *out)
{
    uid_t uid = geteuid();
    gid_t gid = getegid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return cl_err_fail(CL_E_SIM_SANDBOX, "fork errno %d", errno);
    if (pid > 0) {
        *out = pid;
        return CL_OK;
    }
    /* Intermediate process: owns the namespaces, reports the exit status. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        cl_sim_die("PR_SET_PDEATHSIG");
    /* Let the enclave lock its model in memory, as Nitro memory never swaps.
     * Raising the limit needs privilege in the initial namespace, so it is
     * done here, before unshare; without it the enclave reports the
     * unlocked fallback. */
    if (sb->memory_mib) {
        struct rlimit ml = {sb->memory_mib << 20, sb->memory_mib << 20};
        if (setrlimit(RLIMIT_MEMLOCK, &ml) != 0)
            fprintf(stderr, "cloister-sim: sandbox: note: could not raise RLIMIT_MEMLOCK (%s); the enclave runs unlocked\n", strerror(errno));
    }
    if (unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0)
        cl_sim_die("unshare");
    char map[64];
    cl_sim_write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
    cl_sim_write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
    cl_sim_write_file("/proc/self/gid_map", map);
    /* Only now: a non-dumpable process's /proc/self files belong to root,
     * so the maps above could not be written after this. */
    if (prctl(PR_SET_DUMPABLE, 0) != 0)
        cl_sim_die("PR_SET_DUMPABLE");
    pid_t child = fork();
    if (child < 0)
        cl_sim_die("fork");
    if (child == 0)
        cl_sim_enclave(sb);
    close(sb->nsm_fd);
    close(sb->app_fd);
    int st;
    while (waitpid(child, &st, 0) < 0)
        if (errno != EINTR)
            cl_sim_die("waitpid");
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "cloister-sim: enclave killed by signal %d\n", WTERMSIG(st));
        _exit(128 + WTERMSIG(st));
    }
    _exit(WEXITSTATUS(st));
}
