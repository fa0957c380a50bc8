/* cloister-sim: image measurement, and a real run of the test enclave in
 * the sandbox. When started as root the whole test drops to an unprivileged
 * user first: the sandbox defends the enclave against the (unprivileged)
 * host user, which root with CAP_SYS_PTRACE is not. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/attest.h"
#include "cloister/file.h"
#include "cloister/vsock.h"

#define UNPRIV_UID 65534

static char tmp[64];

static void run_cmd(char *const argv[], int want)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(p, &st, 0), p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want)
        fail_msg("%s %s: status %d, expected %d", argv[0], argv[1], st, want);
}

/* Runs argv and returns its stdout (exit status must be 0). */
static void capture(char *const argv[], char *out, size_t len)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(pfd[0], out + got, len - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = 0;
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(p, &st, 0), p);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static struct cl_buf read_file(const char *path)
{
    struct cl_buf b;
    cl_buf_init(&b, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    assert_ok(cl_file_read(path, CL_SIM_IMAGE_MAX, &b));
    return b;
}

static void test_measure(void **state)
{
    (void)state;
    struct cl_buf app = read_file(CL_TEST_ENCLAVE_SO), img, img2;
    cl_buf_init(&img, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    cl_buf_init(&img2, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    assert_ok(cl_sim_image_build("test", 256, 1, NULL, 0, "kernel profile\n", app.data, app.len, &img));
    uint8_t a[3][CL_ATTEST_PCR_LEN], b[3][CL_ATTEST_PCR_LEN];
    assert_ok(cl_sim_image_measure(img.data, img.len, a));
    /* One byte of the application changes PCR0 and PCR2, not PCR1. */
    img.data[img.len - 100] ^= 1;
    assert_ok(cl_sim_image_measure(img.data, img.len, b));
    assert_memory_not_equal(a[0], b[0], CL_ATTEST_PCR_LEN);
    assert_memory_equal(a[1], b[1], CL_ATTEST_PCR_LEN);
    assert_memory_not_equal(a[2], b[2], CL_ATTEST_PCR_LEN);
    img.data[img.len - 100] ^= 1;
    /* One byte of the configuration changes PCR0 only. */
    assert_ok(cl_sim_image_build("tesu", 256, 1, NULL, 0, "kernel profile\n", app.data, app.len, &img2));
    assert_ok(cl_sim_image_measure(img2.data, img2.len, b));
    assert_memory_not_equal(a[0], b[0], CL_ATTEST_PCR_LEN);
    assert_memory_equal(a[1], b[1], CL_ATTEST_PCR_LEN);
    assert_memory_equal(a[2], b[2], CL_ATTEST_PCR_LEN);
    /* The kernel profile changes PCR1. */
    cl_buf_reset(&img2);
    img2.len = 0;
    assert_ok(cl_sim_image_build("test", 256, 1, NULL, 0, "kernel profilf\n", app.data, app.len, &img2));
    assert_ok(cl_sim_image_measure(img2.data, img2.len, b));
    assert_memory_not_equal(a[1], b[1], CL_ATTEST_PCR_LEN);
    /* The application's arguments are part of the image: they change PCR0. */
    cl_buf_reset(&img2);
    img2.len = 0;
    static const char *const args[] = {"--chat-template", "gemma"};
    assert_ok(cl_sim_image_build("test", 256, 1, args, 2, "kernel profile\n", app.data, app.len, &img2));
    assert_ok(cl_sim_image_measure(img2.data, img2.len, b));
    assert_memory_not_equal(a[0], b[0], CL_ATTEST_PCR_LEN);
    assert_memory_equal(a[2], b[2], CL_ATTEST_PCR_LEN);
    struct cl_sim_image im;
    assert_ok(cl_sim_image_parse(img2.data, img2.len, &im));
    assert_int_equal(im.n_args, 2);
    assert_string_equal(im.args[1], "gemma");
    static const char *const nl[] = {"a\nname=x"};
    struct cl_buf bad0;
    cl_buf_init(&bad0, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    assert_err(cl_sim_image_build("test", 0, 0, nl, 1, "k", app.data, app.len, &bad0), CL_E_SIM_IMAGE);
    cl_buf_free(&bad0);
    /* Malformed images. */
    assert_err(cl_sim_image_parse(img.data, img.len - 1, &im), CL_E_SIM_IMAGE);
    assert_ok(cl_buf_append_u8(&img, 0));
    assert_err(cl_sim_image_parse(img.data, img.len, &im), CL_E_SIM_IMAGE);
    img.len--;
    img.data[0] ^= 1;
    assert_err(cl_sim_image_parse(img.data, img.len, &im), CL_E_SIM_IMAGE);
    img.data[0] ^= 1;
    assert_ok(cl_sim_image_parse(img.data, img.len, &im));
    assert_string_equal(im.name, "test");
    assert_int_equal(im.memory_mib, 256);
    assert_int_equal(im.cpus, 1);
    assert_int_equal(im.app.len, app.len);
    struct cl_buf bad;
    cl_buf_init(&bad, CL_SIM_IMAGE_MAX, CL_BUF_NONE);
    assert_err(cl_sim_image_build("a b", 0, 0, NULL, 0, "k", app.data, app.len, &bad), CL_E_SIM_IMAGE);
    assert_err(cl_sim_image_build("x\nmemory_mib", 0, 0, NULL, 0, "k", app.data, app.len, &bad), CL_E_SIM_IMAGE);
    cl_buf_free(&bad);
    cl_buf_free(&app);
    cl_buf_free(&img);
    cl_buf_free(&img2);
}

/* Enclave pid as seen from here: the grandchild of cloister-sim. */
static pid_t child_of(pid_t p)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)p, (int)p);
    FILE *f = fopen(path, "r");
    int c = -1;
    if (f) {
        if (fscanf(f, "%d", &c) != 1)
            c = -1;
        fclose(f);
    }
    return c;
}

struct run_result {
    char lines[64][128];
    int n;
    char nsm_response[2 * 0x3000 + 1];
    char describe_pcr0[512];
    int status;
    bool ptrace_blocked, ptrace_control_ok, mem_blocked, vsock_ok;
};

static const char *get(const struct run_result *r, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < r->n; i++)
        if (!strncmp(r->lines[i], key, kl) && r->lines[i][kl] == '=')
            return r->lines[i] + kl + 1;
    return "";
}

static void run_enclave(const char *image, const char *simdir, bool debug, const char *nonce_hex,
                        struct run_result *res)
{
    memset(res, 0, sizeof(*res));
    char vdir[128];
    snprintf(vdir, sizeof(vdir), "%s/vsock", tmp);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t sim = fork();
    assert_true(sim >= 0);
    if (sim == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        char *argv[24];
        int a = 0;
        const char *fixed[] = {CL_SIM_BIN, "run", image, "--dir", simdir, "--vsock-dir", vdir, "--memory",
                               "512", "--cpus", "1", "--cid", "16"};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
            argv[a++] = (char *)fixed[i];
        if (debug)
            argv[a++] = "--debug";
        (void)nonce_hex; /* packed into the image: run takes no enclave arguments */
        argv[a] = NULL;
        execv(CL_SIM_BIN, argv);
        _exit(127);
    }
    close(pfd[1]);
    FILE *out = fdopen(pfd[0], "r");
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, out) > 0) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "nsm_response=", 13)) {
            snprintf(res->nsm_response, sizeof(res->nsm_response), "%s", line + 13);
            continue;
        }
        if (!strncmp(line, "describe_pcr0=", 14)) {
            snprintf(res->describe_pcr0, sizeof(res->describe_pcr0), "%s", line + 14);
            continue;
        }
        if (res->n < 64)
            snprintf(res->lines[res->n++], sizeof(res->lines[0]), "%s", line);
        if (strcmp(line, "ready=1") != 0)
            continue;
        /* The enclave is alive and waiting: attack it as the host user. */
        pid_t mid = child_of(sim), enc = mid > 0 ? child_of(mid) : -1;
        assert_true(enc > 0);
        errno = 0;
        long pr = ptrace(PTRACE_ATTACH, enc, NULL, NULL);
        res->ptrace_blocked = pr != 0 && (errno == EPERM || errno == EACCES);
        if (pr == 0)
            ptrace(PTRACE_DETACH, enc, NULL, NULL);
        /* Control: the same user may trace its ordinary processes, such as
         * cloister-sim itself, so the refusal above is the sandbox's doing. */
        if (ptrace(PTRACE_ATTACH, sim, NULL, NULL) == 0) {
            int wst;
            res->ptrace_control_ok = waitpid(sim, &wst, 0) == sim && WIFSTOPPED(wst);
            ptrace(PTRACE_DETACH, sim, NULL, NULL);
        }
        char mp[64];
        snprintf(mp, sizeof(mp), "/proc/%d/mem", (int)enc);
        int mfd = open(mp, O_RDONLY);
        res->mem_blocked = mfd < 0;
        if (mfd >= 0)
            close(mfd);
        /* vsock from the host side (CID 2) to the enclave's CID 16. */
        setenv(CL_VSOCK_DIR_ENV, vdir, 1);
        setenv(CL_VSOCK_CID_ENV, "2", 1);
        int fd = -1;
        assert_ok(cl_vsock_connect(16, 5005, &fd));
        char buf[8] = {0};
        res->vsock_ok = write(fd, "ping", 4) == 4 && read(fd, buf, 4) == 4 && !memcmp(buf, "pong", 4);
        close(fd);
        unsetenv(CL_VSOCK_DIR_ENV);
        unsetenv(CL_VSOCK_CID_ENV);
    }
    free(line);
    fclose(out);
    int st;
    assert_int_equal(waitpid(sim, &st, 0), sim);
    res->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The document inside {"Attestation": {"document": bytes}}. */
static struct cl_buf doc_from_response(const char *hex)
{
    struct cl_buf raw, doc;
    cl_buf_init(&raw, 0x3000, CL_BUF_NONE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    assert_ok(cl_hex_decode(hex, strlen(hex), &raw));
    struct cl_cursor c;
    cl_cursor_init(&c, raw.data, raw.len);
    cl_cbor_doc *d = NULL;
    assert_ok(cl_cbor_decode(&c, NULL, &d));
    const struct cl_cbor_item *v = cl_cbor_map_get_text(cl_cbor_map_get_text(cl_cbor_root(d), "Attestation"),
                                                        "document");
    assert_non_null(v);
    assert_ok(cl_buf_append(&doc, v->p, v->len));
    cl_cbor_free(d);
    cl_buf_free(&raw);
    return doc;
}

static void test_run(void **state)
{
    (void)state;
    char simdir[128], image[128], rootpem[160];
    snprintf(simdir, sizeof(simdir), "%s/ca", tmp);
    snprintf(image, sizeof(image), "%s/test.img", tmp);
    snprintf(rootpem, sizeof(rootpem), "%s/root.pem", simdir);
    char *init[] = {CL_SIM_BIN, "init", simdir, NULL};
    run_cmd(init, 0);
    run_cmd(init, 1); /* refuses to overwrite */
    const char *nonce = "00112233445566778899aabbccddeeff";
    char *pack[] = {CL_SIM_BIN, "pack", "--app", CL_TEST_ENCLAVE_SO, "--name", "test-enclave", "-o", image,
                    "--", (char *)nonce, NULL};
    run_cmd(pack, 0);
    char *usage[] = {CL_SIM_BIN, "run", image, NULL};
    run_cmd(usage, 2);
    /* The host cannot add arguments at run time: they are measured in the image. */
    char *hostargs[] = {CL_SIM_BIN, "run", image, "--dir", simdir, "--", "x", NULL};
    run_cmd(hostargs, 2);

    struct cl_buf img = read_file(image), pem = read_file(rootpem), root;
    cl_buf_init(&root, 1 << 16, CL_BUF_NONE);
    assert_ok(cl_attest_cert_to_der(pem.data, pem.len, &root));
    uint8_t pcr[3][CL_ATTEST_PCR_LEN];
    assert_ok(cl_sim_image_measure(img.data, img.len, pcr));

    struct run_result *r = calloc(1, sizeof(*r));
    run_enclave(image, simdir, false, nonce, r);
    for (int i = 0; i < r->n; i++)
        print_message("enclave: %s\n", r->lines[i]);
    assert_int_equal(r->status, 0);
    assert_string_equal(get(r, "pid"), "1");
    assert_string_equal(get(r, "uid"), "0");
    assert_string_equal(get(r, "hostname"), "enclave");
    assert_string_equal(get(r, "dumpable"), "0");
    assert_string_equal(get(r, "no_new_privs"), "1");
    assert_string_equal(get(r, "set_dumpable"), "blocked");
    assert_string_equal(get(r, "core_limit"), "0");
    assert_true(!strncmp(get(r, "tcp"), "blocked", 7));
    assert_string_equal(get(r, "unix_socket"), "ok");
    assert_string_equal(get(r, "execve"), "blocked");
    assert_string_equal(get(r, "ptrace_traceme"), "blocked");
#if !defined(__SANITIZE_ADDRESS__)
    assert_string_equal(get(r, "alloc_1g"), "failed"); /* --memory 512 */
#endif
    assert_string_equal(get(r, "vsock"), "ok");
    assert_true(r->vsock_ok);
    assert_true(r->ptrace_blocked);
    assert_true(r->ptrace_control_ok);
    assert_true(r->mem_blocked);

    /* The document verifies with the sim root, with the image's PCRs. */
    struct cl_buf doc = doc_from_response(r->nsm_response);
    struct cl_attest_pcr_expect want[3];
    for (unsigned i = 0; i < 3; i++) {
        want[i].index = i;
        memcpy(want[i].value, pcr[i], CL_ATTEST_PCR_LEN);
    }
    uint8_t nb[16];
    assert_ok(cl_hex_decode_fixed(nonce, strlen(nonce), nb, sizeof(nb)));
    struct cl_attest_policy p = {.root_der = root.data, .root_len = root.len, .pcrs = want, .npcrs = 3,
                                 .check_nonce = true, .nonce = {nb, sizeof(nb)}, .max_age_ms = 60000,
                                 .check_user_data = true, .user_data = {(const uint8_t *)"enclave", 7}};
    assert_ok(cl_attest_verify_bytes(doc.data, doc.len, &p));
    /* ... and not with the AWS root. */
    char aws[512];
    if (cl_test_path("CLOISTER_TESTDATA", "nitro/root/AWS_NitroEnclaves_Root-G1.der", aws, sizeof(aws))) {
        struct cl_buf awsroot = read_file(aws);
        struct cl_attest_policy pa = p;
        pa.root_der = awsroot.data;
        pa.root_len = awsroot.len;
        assert_err(cl_attest_verify_bytes(doc.data, doc.len, &pa), CL_E_ATTEST_ROOT_MISMATCH);
        cl_buf_free(&awsroot);
    }
    /* DescribePCR 0 inside the enclave equals the measurement. */
    char pcr0hex[2 * CL_ATTEST_PCR_LEN + 1];
    cl_hex_encode(pcr[0], CL_ATTEST_PCR_LEN, pcr0hex);
    assert_non_null(strstr(r->describe_pcr0, pcr0hex));
    cl_buf_free(&doc);

    /* Debug mode: PCR0-2 zero, refused unless debug is allowed. */
    run_enclave(image, simdir, true, nonce, r);
    assert_int_equal(r->status, 0);
    doc = doc_from_response(r->nsm_response);
    p.pcrs = NULL;
    p.npcrs = 0;
    p.allow_any_pcr = true;
    assert_err(cl_attest_verify_bytes(doc.data, doc.len, &p), CL_E_ATTEST_DEBUG);
    p.allow_debug = true;
    assert_ok(cl_attest_verify_bytes(doc.data, doc.len, &p));
    p.pcrs = want;
    p.npcrs = 3;
    assert_err(cl_attest_verify_bytes(doc.data, doc.len, &p), CL_E_ATTEST_PCR_MISMATCH);
    cl_buf_free(&doc);
    free(r);

    /* measure on the command line: one flipped byte of the image file
     * changes PCR0 (and PCR2, the byte being in the application). */
    char m1[1024], m2[1024], image2[160];
    char *measure[] = {CL_SIM_BIN, "measure", image, "--json", NULL};
    capture(measure, m1, sizeof(m1));
    char pcr0hex2[2 * CL_ATTEST_PCR_LEN + 1];
    cl_hex_encode(pcr[0], CL_ATTEST_PCR_LEN, pcr0hex2);
    assert_non_null(strstr(m1, pcr0hex2));
    snprintf(image2, sizeof(image2), "%s/flipped.img", tmp);
    img.data[img.len / 2] ^= 0x40;
    assert_ok(cl_file_write_atomic(image2, img.data, img.len, 0644, 0));
    img.data[img.len / 2] ^= 0x40;
    char *measure2[] = {CL_SIM_BIN, "measure", image2, "--json", NULL};
    capture(measure2, m2, sizeof(m2));
    assert_null(strstr(m2, pcr0hex2));
    const char *p1 = strstr(m1, "\"PCR1\""), *p2 = strstr(m2, "\"PCR1\"");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_memory_equal(p1, p2, 8 + 2 * CL_ATTEST_PCR_LEN);
    char *bad[] = {CL_SIM_BIN, "measure", rootpem, NULL};
    run_cmd(bad, 1);
    cl_buf_free(&img);
    cl_buf_free(&pem);
    cl_buf_free(&root);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/cl-sim-test-XXXXXX");
    return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    if (geteuid() == 0) {
        /* Become an ordinary user; the parent just relays the result. */
        pid_t p = fork();
        if (p < 0)
            return 1;
        if (p > 0) {
            int st;
            waitpid(p, &st, 0);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        }
        if (setgroups(0, NULL) != 0 || setgid(UNPRIV_UID) != 0 || setuid(UNPRIV_UID) != 0) {
            perror("dropping privileges");
            return 1;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_measure),
        cmocka_unit_test(test_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
