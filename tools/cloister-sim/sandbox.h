/* The enclave sandbox of cloister-sim. */
#ifndef CLOISTER_SIM_SANDBOX_H
#define CLOISTER_SIM_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cloister/err.h"

/* The sandbox profile: an image's kernel section must equal it (it is what
 * PCR1 measures), so a change to the sandbox changes the measurement. */
extern const char cl_sim_kernel_profile[];

struct cl_sim_sandbox {
    int app_fd;            /* memfd holding the enclave shared object */
    int nsm_fd;            /* the enclave's end of the NSM socket */
    const char *vsock_dir;
    uint32_t cid;
    uint64_t cpus;         /* 0 = all */
    uint64_t memory_mib;   /* 0 = no limit */
    int argc;
    char **argv;           /* passed to cloister_enclave_main */
};

/* Forks the enclave: new user, pid, net, mount, ipc and uts namespaces,
 * not dumpable, no core files, memory and CPU limits, no_new_privs, the
 * seccomp allowlist; then loads the app and runs cloister_enclave_main.
 * Returns the pid of the process that reports the enclave's exit status. */
CL_MUST_CHECK cl_err cl_sim_sandbox_start(const struct cl_sim_sandbox *sb, pid_t *pid);

#endif
