#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cloister/vsock.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/cl-vsock-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    setenv(CL_VSOCK_DIR_ENV, dir, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[128];
    for (unsigned port = 5000; port < 5003; port++) {
        snprintf(p, sizeof(p), "%s/3.%u", dir, port);
        unlink(p);
        snprintf(p, sizeof(p), "%s/7.%u", dir, port);
        unlink(p);
    }
    snprintf(p, sizeof(p), "%s/3.9", dir);
    unlink(p);
    rmdir(dir);
    unsetenv(CL_VSOCK_DIR_ENV);
    return 0;
}

static void test_unix_roundtrip(void **state)
{
    (void)state;
    assert_int_equal(cl_vsock_mode(), CL_VSOCK_MODE_UNIX);
    unsetenv(CL_VSOCK_CID_ENV);
    assert_int_equal(cl_vsock_self_cid(), CL_VSOCK_CID_DEFAULT_SELF);
    int l = -1, c = -1, a = -1;
    assert_ok(cl_vsock_listen(CL_VSOCK_CID_ANY, 5000, 4, &l));
    char p[128];
    snprintf(p, sizeof(p), "%s/3.5000", dir);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_ok(cl_vsock_connect(3, 5000, &c));
    assert_ok(cl_vsock_accept(l, &a));
    assert_int_equal(write(c, "ping", 4), 4);
    char buf[8] = {0};
    assert_int_equal(read(a, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "ping");
    close(a);
    close(c);
    close(l);
    /* Nobody listens on another port or CID. */
    assert_err(cl_vsock_connect(3, 5001, &c), CL_E_VSOCK_CONNECT);
    assert_err(cl_vsock_connect(7, 5000, &c), CL_E_VSOCK_CONNECT);
    assert_err(cl_vsock_connect(CL_VSOCK_CID_ANY, 5000, &c), CL_E_VSOCK_ADDRESS);
    /* Explicit CID from the environment; stale sockets are replaced. */
    setenv(CL_VSOCK_CID_ENV, "7", 1);
    assert_int_equal(cl_vsock_self_cid(), 7);
    assert_ok(cl_vsock_listen(CL_VSOCK_CID_ANY, 5002, 4, &l));
    close(l);
    assert_ok(cl_vsock_listen(7, 5002, 4, &l));
    assert_ok(cl_vsock_connect(7, 5002, &c));
    close(c);
    close(l);
    unsetenv(CL_VSOCK_CID_ENV);
    /* A regular file in the way is never removed. */
    snprintf(p, sizeof(p), "%s/3.9", dir);
    FILE *f = fopen(p, "w");
    fclose(f);
    assert_err(cl_vsock_listen(3, 9, 4, &l), CL_E_VSOCK_LISTEN);
}

static void test_private_dir(void **state)
{
    (void)state;
    int fd;
    assert_int_equal(chmod(dir, 0755), 0);
    assert_err(cl_vsock_listen(3, 5001, 4, &fd), CL_E_VSOCK_BAD_DIR);
    assert_err(cl_vsock_connect(3, 5001, &fd), CL_E_VSOCK_BAD_DIR);
    assert_int_equal(chmod(dir, 0700), 0);
    setenv(CL_VSOCK_DIR_ENV, "/nonexistent-cl-vsock", 1);
    assert_err(cl_vsock_listen(3, 5001, 4, &fd), CL_E_VSOCK_BAD_DIR);
    char longdir[200];
    memset(longdir, 'a', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = 0;
    char buf[512];
    assert_err(cl_vsock_unix_path(longdir, 3, 1, buf, sizeof(buf)), CL_E_VSOCK_ADDRESS);
    setenv(CL_VSOCK_DIR_ENV, dir, 1);
}

static void test_real_vsock(void **state)
{
    (void)state;
    unsetenv(CL_VSOCK_DIR_ENV);
    assert_int_equal(cl_vsock_mode(), CL_VSOCK_MODE_VSOCK);
    assert_int_equal(cl_vsock_self_cid(), CL_VSOCK_CID_ANY);
    /* Without a hypervisor nobody answers at the host CID: a clean error. */
    int fd = -1;
    cl_err rc = cl_vsock_connect(CL_VSOCK_CID_HOST, 5999, &fd);
    assert_true(rc == CL_E_VSOCK_UNAVAILABLE || rc == CL_E_VSOCK_CONNECT);
    setenv(CL_VSOCK_DIR_ENV, dir, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unix_roundtrip),
        cmocka_unit_test(test_private_dir),
        cmocka_unit_test(test_real_vsock),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
