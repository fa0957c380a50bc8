/* cloister-sim: the stand-in for the Nitro hypervisor on machines without
 * Nitro. It holds a local P-384 PKI, measures enclave images, and runs them
 * in a sandbox with a simulated NSM and vsock emulation. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/infer/model.h"
#include "cloister/nsm.h"
#include "cloister/vsock.h"
#include "sandbox.h"

enum { CL_SIM_OK = 0, CL_SIM_FAIL = 1, CL_SIM_USAGE = 2 };
#define CL_SIM_DEFAULT_CID 16

static void cl_sim_help(FILE *f)
{
    fprintf(f,
            "usage: cloister-sim COMMAND [ARGS...]\n\n"
            "A stand-in for the AWS Nitro hypervisor: local PKI, enclave images, a sandbox\n"
            "with a simulated NSM and vsock emulation.\n\n"
            "commands:\n"
            "  init DIR                 create a P-384 root and intermediate CA in DIR (keys 0600)\n"
            "  root DIR [--der]         print the root certificate verifiers pin (PEM, or DER)\n"
            "  pack --app SO --name NAME [--memory MiB] [--cpus N] -o IMAGE [-- ARGS...]\n"
            "       [--memory-for MODEL.gguf [--projector P.gguf] [--ctx N]]\n"
            "                           build an enclave image (docs/formats/enclave-image.md);\n"
            "                           ARGS are the application's arguments, measured in PCR0.\n"
            "                           --memory-for sizes the enclave for a model: its size, the\n"
            "                           projector's, one sequence of N positions (default 6144: 4096\n"
            "                           prompt + 2048 answer tokens, the host's defaults), the runtime\n"
            "                           and 16 MiB of slack; prints the figure, refuses a --memory\n"
            "                           below it\n"
            "  measure IMAGE [--json]   print PCR0/1/2 of an image\n"
            "  run IMAGE --dir DIR [--cpus N] [--memory MiB] [--debug] [--vsock-dir VDIR] [--cid N]\n"
            "                           run the image in the sandbox with the arguments packed into\n"
            "                           it; the NSM signs with a fresh leaf certificate under DIR's\n"
            "                           CAs; --debug zeroes PCR0-2\n\n"
            "exit status: 0 success, 1 failure, 2 usage error; `run` exits with the enclave's status.\n");
}

static int cl_sim_usage(const char *fmt, ...) CL_PRINTF(1, 2);
static int cl_sim_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cloister-sim: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'cloister-sim --help')\n");
    return CL_SIM_USAGE;
}

static int cl_sim_fail(const char *what, cl_err e)
{
    char buf[512];
    fprintf(stderr, "cloister-sim: %s: %s\n", what, cl_err_format(e, buf, sizeof(buf)));
    return CL_SIM_FAIL;
}

static bool cl_sim_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > max)
        return false;
    *out = v;
    return true;
}

static volatile sig_atomic_t cl_sim_child = 0;

/* Ctrl-C or SIGTERM: end the enclave (its pid-1 process ignores signals
 * from outside its namespace); cleanup then runs as on a normal exit. */
static void cl_sim_on_signal(int sig)
{
    (void)sig;
    if (cl_sim_child > 0)
        kill((pid_t)cl_sim_child, SIGKILL);
}

/* Removes the sockets left in a vsock directory this run created. */
static void cl_sim_clean_vsock_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d))) {
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static bool cl_sim_is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int cl_sim_cmd_init(int argc, char **argv)
{
    if (argc == 2 && cl_sim_is_help(argv[1])) {
        cl_sim_help(stdout);
        return CL_SIM_OK;
    }
    if (argc != 2)
        return cl_sim_usage("init takes exactly one DIR");
    cl_err rc = cl_attest_sim_init(argv[1]);
    if (rc != CL_OK)
        return cl_sim_fail(argv[1], rc);
    fprintf(stderr, "cloister-sim: created root and intermediate CAs in %s\n", argv[1]);
    return CL_SIM_OK;
}

static int cl_sim_cmd_root(int argc, char **argv)
{
    const char *dir = NULL;
    bool der = false;
    for (int i = 1; i < argc; i++) {
        if (cl_sim_is_help(argv[i])) {
            cl_sim_help(stdout);
            return CL_SIM_OK;
        } else if (!strcmp(argv[i], "--der")) {
            der = true;
        } else if (argv[i][0] == '-') {
            return cl_sim_usage("root: unknown option '%s'", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cl_sim_usage("root takes one DIR");
        }
    }
    if (!dir)
        return cl_sim_usage("root: DIR is required");
    char path[4096];
    snprintf(path, sizeof(path), "%s/root.pem", dir);
    struct cl_buf pem, out;
    cl_buf_init(&pem, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&out, 1 << 16, CL_BUF_NONE);
    cl_err rc = cl_file_read(path, 1 << 16, &pem);
    if (rc == CL_OK)
        rc = cl_attest_cert_to_der(pem.data, pem.len, &out);
    int ret = CL_SIM_OK;
    if (rc != CL_OK)
        ret = cl_sim_fail(path, rc);
    else if (der)
        ret = fwrite(out.data, 1, out.len, stdout) == out.len ? CL_SIM_OK : CL_SIM_FAIL;
    else
        ret = fwrite(pem.data, 1, pem.len, stdout) == pem.len ? CL_SIM_OK : CL_SIM_FAIL;
    cl_buf_free(&pem);
    cl_buf_free(&out);
    return ret;
}

/* The enclave memory a model needs (cl_model_enclave_mem_need), in MiB
 * rounded up, printed with its parts. */
static int cl_sim_memory_for(const char *model, const char *projector, uint32_t ctx, unsigned threads,
                             uint64_t *need_mib)
{
    cl_gguf *g = NULL;
    struct cl_model *m = NULL;
    struct stat st_m, st_p;
    size_t need = 0, seq = 0;
    cl_err rc;
    if (stat(model, &st_m) != 0) {
        fprintf(stderr, "cloister-sim: pack: %s: %s\n", model, strerror(errno));
        return CL_SIM_FAIL;
    }
    if (projector && stat(projector, &st_p) != 0) {
        fprintf(stderr, "cloister-sim: pack: %s: %s\n", projector, strerror(errno));
        return CL_SIM_FAIL;
    }
    size_t proj = projector ? (size_t)st_p.st_size : 0;
    struct cl_model_seq_params sp = {.n_ctx = ctx};
    if ((rc = cl_gguf_open_file(model, &g)) != CL_OK || (rc = cl_model_load(g, &m)) != CL_OK ||
        (rc = cl_model_seq_mem_need(m, &sp, threads, &seq)) != CL_OK ||
        (rc = cl_model_enclave_mem_need(m, (size_t)st_m.st_size, proj, ctx, threads, &need)) != CL_OK) {
        cl_model_free(m);
        cl_gguf_free(g);
        char eb[256];
        fprintf(stderr, "cloister-sim: pack: sizing the enclave for %s (a plain GGUF model is needed): %s\n", model,
                cl_err_format(rc, eb, sizeof(eb)));
        return CL_SIM_FAIL;
    }
    cl_model_free(m);
    cl_gguf_free(g);
    /* 16 MiB of slack: the enclave's thread count and limits may differ a little */
    *need_mib = ((need + (1u << 20) - 1) >> 20) + 16;
    fprintf(stderr,
            "cloister-sim: pack: enclave memory %llu MiB = model %.1f MiB + projector %.1f MiB + one sequence of %u "
            "positions %.1f MiB + runtime %zu MiB + 16\n",
            (unsigned long long)*need_mib, (double)st_m.st_size / 1048576.0, (double)proj / 1048576.0, ctx,
            (double)seq / 1048576.0, CL_MODEL_RUNTIME_BYTES >> 20);
    return CL_SIM_OK;
}

static int cl_sim_cmd_pack(int argc, char **argv)
{
    const char *app = NULL, *name = NULL, *outp = NULL;
    const char *const *app_args = NULL;
    const char *model = NULL, *projector = NULL;
    unsigned n_app_args = 0;
    uint64_t mem = 0, cpus = 0, ctx = 6144;
    for (int i = 1; i < argc; i++) {
        bool v = i + 1 < argc;
        if (cl_sim_is_help(argv[i])) {
            cl_sim_help(stdout);
            return CL_SIM_OK;
        } else if (!strcmp(argv[i], "--")) {
            if (argc - i - 1 > CL_SIM_IMAGE_MAX_ARGS)
                return cl_sim_usage("pack: at most %d application arguments", CL_SIM_IMAGE_MAX_ARGS);
            app_args = (const char *const *)argv + i + 1;
            n_app_args = (unsigned)(argc - i - 1);
            break;
        } else if (!strcmp(argv[i], "--app") && v) {
            app = argv[++i];
        } else if (!strcmp(argv[i], "--name") && v) {
            name = argv[++i];
        } else if (!strcmp(argv[i], "-o") && v) {
            outp = argv[++i];
        } else if (!strcmp(argv[i], "--memory") && v) {
            if (!cl_sim_u64(argv[++i], 1 << 20, &mem))
                return cl_sim_usage("pack: --memory '%s' is not a number of MiB", argv[i]);
        } else if (!strcmp(argv[i], "--cpus") && v) {
            if (!cl_sim_u64(argv[++i], 1024, &cpus))
                return cl_sim_usage("pack: --cpus '%s' is not a CPU count", argv[i]);
        } else if (!strcmp(argv[i], "--memory-for") && v) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--projector") && v) {
            projector = argv[++i];
        } else if (!strcmp(argv[i], "--ctx") && v) {
            if (!cl_sim_u64(argv[++i], 1 << 20, &ctx) || ctx == 0)
                return cl_sim_usage("pack: --ctx '%s' is not a number of positions in 1..1048576", argv[i]);
        } else {
            return cl_sim_usage("pack: unknown option or missing value '%s'", argv[i]);
        }
    }
    if (!app || !name || !outp)
        return cl_sim_usage("pack: --app, --name and -o are required");
    if (projector && !model)
        return cl_sim_usage("pack: --projector needs --memory-for MODEL.gguf");
    if (model) {
        uint64_t need_mib;
        int st = cl_sim_memory_for(model, projector, (uint32_t)ctx, cpus ? (unsigned)cpus : 2, &need_mib);
        if (st != CL_SIM_OK)
            return st;
        if (mem && mem < need_mib)
            return cl_sim_usage("pack: --memory %llu MiB is too small for %s: the enclave needs at least %llu MiB",
                                (unsigned long long)mem, model, (unsigned long long)need_mib);
        if (!mem)
            mem = need_mib;
    }
    struct cl_buf a, img;
    cl_buf_init(&a, CL_SIM_IMAGE_MAX_APP, CL_BUF_NONE);
    cl_buf_init(&img, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    cl_err rc = cl_file_read(app, CL_SIM_IMAGE_MAX_APP, &a);
    int ret = CL_SIM_OK;
    if (rc != CL_OK)
        ret = cl_sim_fail(app, rc);
    else if ((rc = cl_sim_image_build(name, mem, cpus, app_args, n_app_args, cl_sim_kernel_profile, a.data, a.len,
                                     &img)) != CL_OK)
        ret = cl_sim_fail("pack", rc);
    else if ((rc = cl_file_write_atomic(outp, img.data, img.len, 0644, 0)) != CL_OK)
        ret = cl_sim_fail(outp, rc);
    cl_buf_free(&a);
    cl_buf_free(&img);
    return ret;
}

static cl_err cl_sim_load_image(const char *path, struct cl_buf *img, struct cl_sim_image *im,
                                uint8_t pcr[3][CL_ATTEST_PCR_LEN])
{
    cl_err rc = cl_file_read(path, CL_SIM_IMAGE_MAX, img);
    if (rc == CL_OK)
        rc = cl_sim_image_parse(img->data, img->len, im);
    if (rc == CL_OK)
        rc = cl_sim_image_measure(img->data, img->len, pcr);
    return rc;
}

static int cl_sim_cmd_measure(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (cl_sim_is_help(argv[i])) {
            cl_sim_help(stdout);
            return CL_SIM_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-') {
            return cl_sim_usage("measure: unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return cl_sim_usage("measure takes one IMAGE");
        }
    }
    if (!path)
        return cl_sim_usage("measure: IMAGE is required");
    struct cl_buf img;
    struct cl_sim_image im;
    uint8_t pcr[3][CL_ATTEST_PCR_LEN];
    cl_buf_init(&img, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    cl_err rc = cl_sim_load_image(path, &img, &im, pcr);
    if (rc != CL_OK) {
        cl_buf_free(&img);
        return cl_sim_fail(path, rc);
    }
    char hex[3][2 * CL_ATTEST_PCR_LEN + 1];
    for (int i = 0; i < 3; i++)
        cl_hex_encode(pcr[i], CL_ATTEST_PCR_LEN, hex[i]);
    if (json)
        printf("{\"name\":\"%s\",\"HashAlgorithm\":\"SHA384\",\"PCR0\":\"%s\",\"PCR1\":\"%s\",\"PCR2\":\"%s\"}\n",
               im.name, hex[0], hex[1], hex[2]);
    else
        printf("PCR0 %s\nPCR1 %s\nPCR2 %s\n", hex[0], hex[1], hex[2]);
    cl_buf_free(&img);
    return CL_SIM_OK;
}

static int cl_sim_cmd_run(int argc, char **argv)
{
    const char *path = NULL, *dir = NULL, *vdir = NULL;
    uint64_t cpus = 0, mem = 0, cid = CL_SIM_DEFAULT_CID;
    bool debug = false;
    for (int i = 1; i < argc; i++) {
        bool v = i + 1 < argc;
        if (cl_sim_is_help(argv[i])) {
            cl_sim_help(stdout);
            return CL_SIM_OK;
        } else if (!strcmp(argv[i], "--")) {
            /* Nitro runs an image with no arguments from the host: whatever
             * changes the enclave's behaviour is in the measured image. */
            return cl_sim_usage("run: the host cannot pass arguments to the enclave; they are part of the measured "
                                "image (give them to `pack` after --)");
        } else if (!strcmp(argv[i], "--debug")) {
            debug = true;
        } else if (!strcmp(argv[i], "--dir") && v) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--vsock-dir") && v) {
            vdir = argv[++i];
        } else if (!strcmp(argv[i], "--cpus") && v) {
            if (!cl_sim_u64(argv[++i], 1024, &cpus))
                return cl_sim_usage("run: --cpus '%s' is not a CPU count", argv[i]);
        } else if (!strcmp(argv[i], "--memory") && v) {
            if (!cl_sim_u64(argv[++i], 1 << 20, &mem))
                return cl_sim_usage("run: --memory '%s' is not a number of MiB", argv[i]);
        } else if (!strcmp(argv[i], "--cid") && v) {
            if (!cl_sim_u64(argv[++i], 0xfffffffeu, &cid) || cid < 3)
                return cl_sim_usage("run: --cid '%s' must be 3 or more", argv[i]);
        } else if (argv[i][0] == '-') {
            return cl_sim_usage("run: unknown option or missing value '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return cl_sim_usage("run takes one IMAGE");
        }
    }
    if (!path || !dir)
        return cl_sim_usage("run: IMAGE and --dir DIR are required");

    int ret = CL_SIM_FAIL, sv[2] = {-1, -1}, memfd = -1;
    cl_err rc;
    struct cl_buf img;
    struct cl_sim_image im;
    uint8_t pcr[3][CL_ATTEST_PCR_LEN];
    cl_attest_signer *signer = NULL;
    cl_nsm_sim *nsm = NULL;
    char tmpdir[] = "/tmp/cloister-vsock-XXXXXX";
    cl_buf_init(&img, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    if ((rc = cl_sim_load_image(path, &img, &im, pcr)) != CL_OK) {
        ret = cl_sim_fail(path, rc);
        goto out;
    }
    if (im.kernel.len != strlen(cl_sim_kernel_profile) ||
        memcmp(im.kernel.p, cl_sim_kernel_profile, im.kernel.len) != 0) {
        fprintf(stderr, "cloister-sim: %s was built for another sandbox profile (rebuild it with `pack`)\n", path);
        goto out;
    }
    if (!cpus)
        cpus = im.cpus;
    if (!mem)
        mem = im.memory_mib;
    /* The CAs are loaded only by the parent: the enclave never holds them. */
    if ((rc = cl_attest_signer_load(dir, &signer)) != CL_OK) {
        ret = cl_sim_fail(dir, rc);
        goto out;
    }
    if (!vdir) {
        if (!mkdtemp(tmpdir)) {
            fprintf(stderr, "cloister-sim: cannot create a vsock directory: %s\n", strerror(errno));
            goto out;
        }
        vdir = tmpdir;
    } else if (mkdir(vdir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "cloister-sim: cannot create %s: %s\n", vdir, strerror(errno));
        goto out;
    }
    struct stat vst;
    if (lstat(vdir, &vst) != 0 || !S_ISDIR(vst.st_mode) || vst.st_uid != geteuid() || (vst.st_mode & 077)) {
        fprintf(stderr, "cloister-sim: vsock directory %s must be a directory of this user with mode 0700\n", vdir);
        goto out;
    }
    if ((rc = cl_nsm_sim_new(signer, &pcr[0][0], debug, &nsm)) != CL_OK) {
        ret = cl_sim_fail("nsm", rc);
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0 ||
        (memfd = memfd_create("enclave-app", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0) {
        fprintf(stderr, "cloister-sim: socketpair/memfd: %s\n", strerror(errno));
        goto out;
    }
    if ((rc = cl_write_full(memfd, im.app.p, im.app.len)) != CL_OK ||
        fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
        ret = cl_sim_fail("memfd", rc != CL_OK ? rc : cl_err_from_errno(errno, "seal"));
        goto out;
    }
    fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    fprintf(stderr, "cloister-sim: enclave '%s' cid %llu%s, vsock dir %s\n", im.name, (unsigned long long)cid,
            debug ? " (debug: PCR0-2 zero)" : "", vdir);
    struct cl_sim_sandbox sb = {.app_fd = memfd, .nsm_fd = sv[1], .vsock_dir = vdir, .cid = (uint32_t)cid,
                                .cpus = cpus, .memory_mib = mem, .argc = (int)im.n_args + 1, .argv = NULL};
    char **eargv = calloc((size_t)im.n_args + 2, sizeof(char *));
    if (!eargv)
        goto out;
    eargv[0] = im.name;
    for (unsigned i = 0; i < im.n_args; i++)
        eargv[i + 1] = im.args[i];
    sb.argv = eargv;
    pid_t pid;
    rc = cl_sim_sandbox_start(&sb, &pid);
    free(eargv);
    if (rc != CL_OK) {
        ret = cl_sim_fail("sandbox", rc);
        goto out;
    }
    cl_sim_child = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = cl_sim_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    close(sv[1]);
    sv[1] = -1;
    close(memfd);
    memfd = -1;
    /* Serve until the enclave side of the socket is closed. */
    rc = cl_nsm_sim_serve(nsm, sv[0]);
    if (rc != CL_OK)
        cl_sim_fail("nsm", rc);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    ret = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
out:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (memfd >= 0)
        close(memfd);
    if (vdir == tmpdir)
        cl_sim_clean_vsock_dir(tmpdir);
    cl_nsm_sim_free(nsm);
    cl_attest_signer_free(signer);
    cl_buf_free(&img);
    return ret;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        cl_sim_help(stderr);
        return CL_SIM_USAGE;
    }
    const char *cmd = argv[1];
    if (cl_sim_is_help(cmd) || !strcmp(cmd, "help")) {
        cl_sim_help(stdout);
        return CL_SIM_OK;
    }
    if (!strcmp(cmd, "init"))
        return cl_sim_cmd_init(argc - 1, argv + 1);
    if (!strcmp(cmd, "root"))
        return cl_sim_cmd_root(argc - 1, argv + 1);
    if (!strcmp(cmd, "pack"))
        return cl_sim_cmd_pack(argc - 1, argv + 1);
    if (!strcmp(cmd, "measure"))
        return cl_sim_cmd_measure(argc - 1, argv + 1);
    if (!strcmp(cmd, "run"))
        return cl_sim_cmd_run(argc - 1, argv + 1);
    return cl_sim_usage("unknown command '%s'", cmd);
}
