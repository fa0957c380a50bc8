#include "testutil.h"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/crypto.h"
#include "cloister/nsm.h"

struct fixture {
    cl_attest_signer *signer;
    cl_nsm_sim *sim;
    cl_nsm *nsm;
    pthread_t thr;
    int srv_fd;
    uint8_t pcr[3][CL_NSM_PCR_LEN];
};

static void *serve(void *arg)
{
    struct fixture *f = arg;
    cl_err rc = cl_nsm_sim_serve(f->sim, f->srv_fd);
    (void)rc;
    close(f->srv_fd);
    return NULL;
}

static struct fixture *start(bool debug)
{
    struct fixture *f = calloc(1, sizeof(*f));
    for (int i = 0; i < 3; i++)
        memset(f->pcr[i], 0xa0 + i, CL_NSM_PCR_LEN);
    assert_ok(cl_attest_signer_ephemeral(&f->signer));
    assert_ok(cl_nsm_sim_new(f->signer, &f->pcr[0][0], debug, &f->sim));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    f->srv_fd = sv[1];
    assert_ok(cl_nsm_open_fd(sv[0], &f->nsm));
    assert_int_equal(cl_nsm_kind(f->nsm), CL_NSM_KIND_SIM);
    assert_int_equal(pthread_create(&f->thr, NULL, serve, f), 0);
    return f;
}

static void stop(struct fixture *f)
{
    cl_nsm_close(f->nsm);
    pthread_join(f->thr, NULL);
    cl_nsm_sim_free(f->sim);
    cl_attest_signer_free(f->signer);
    free(f);
}

static void test_describe_and_pcrs(void **state)
{
    (void)state;
    struct fixture *f = start(false);
    struct cl_nsm_info info;
    assert_ok(cl_nsm_describe(f->nsm, &info));
    assert_int_equal(info.version_major, 1);
    assert_int_equal(info.max_pcrs, 32);
    assert_string_equal(info.digest, "SHA384");
    assert_int_equal(info.locked_pcrs, 0xffff);
    bool locked;
    uint8_t v[CL_NSM_PCR_LEN], want[CL_NSM_PCR_LEN];
    assert_ok(cl_nsm_describe_pcr(f->nsm, 1, &locked, v));
    assert_true(locked);
    assert_memory_equal(v, f->pcr[1], CL_NSM_PCR_LEN);
    /* Locked boot PCRs cannot be extended; 16..31 can. */
    assert_err(cl_nsm_extend_pcr(f->nsm, 0, "x", 1, v), CL_E_NSM_READ_ONLY_INDEX);
    assert_err(cl_nsm_extend_pcr(f->nsm, 32, "x", 1, v), CL_E_NSM_INVALID_INDEX);
    assert_err(cl_nsm_describe_pcr(f->nsm, 40, &locked, v), CL_E_NSM_INVALID_INDEX);
    assert_ok(cl_nsm_extend_pcr(f->nsm, 16, "abc", 3, v));
    uint8_t buf[CL_NSM_PCR_LEN + 3] = {0};
    memcpy(buf + CL_NSM_PCR_LEN, "abc", 3);
    assert_ok(cl_sha384(buf, sizeof(buf), want));
    assert_memory_equal(v, want, CL_NSM_PCR_LEN);
    assert_ok(cl_nsm_describe_pcr(f->nsm, 16, &locked, v));
    assert_false(locked);
    assert_memory_equal(v, want, CL_NSM_PCR_LEN);
    assert_ok(cl_nsm_lock_pcr(f->nsm, 16));
    assert_err(cl_nsm_extend_pcr(f->nsm, 16, "abc", 3, v), CL_E_NSM_READ_ONLY_INDEX);
    assert_ok(cl_nsm_lock_pcrs(f->nsm, 20));
    assert_err(cl_nsm_lock_pcrs(f->nsm, 33), CL_E_NSM_INVALID_INDEX);
    assert_ok(cl_nsm_describe(f->nsm, &info));
    assert_int_equal(info.locked_pcrs, 0xfffff);
    uint8_t big[CL_NSM_REQUEST_MAX];
    memset(big, 0, sizeof(big));
    assert_err(cl_nsm_extend_pcr(f->nsm, 25, big, sizeof(big), v), CL_E_NSM_INPUT_TOO_LARGE);
    stop(f);
}

static void test_random_and_raw(void **state)
{
    (void)state;
    struct fixture *f = start(false);
    uint8_t r1[1000], r2[1000];
    assert_ok(cl_nsm_get_random(f->nsm, r1, sizeof(r1)));
    assert_ok(cl_nsm_get_random(f->nsm, r2, sizeof(r2)));
    assert_memory_not_equal(r1, r2, sizeof(r1));
    /* Raw protocol errors. */
    const char *cases[][2] = {
        {"ff", "a1654572726f726f496e76616c6964417267756d656e74"},               /* not CBOR */
        {"6548656c6c6f", "a1654572726f7270496e76616c69644f7065726174696f6e"}, /* unknown unit */
        {"a1634e6f70a0", "a1654572726f7270496e76616c69644f7065726174696f6e"}, /* unknown variant */
        {"a16b4465736372696265504352a0", "a1654572726f726f496e76616c6964417267756d656e74"}, /* no index */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n, wn;
        uint8_t *req = cl_test_unhex(cases[i][0], &n), *want = cl_test_unhex(cases[i][1], &wn);
        struct cl_buf resp;
        cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
        assert_ok(cl_nsm_transact(f->nsm, req, n, &resp));
        assert_int_equal(resp.len, wn);
        assert_memory_equal(resp.data, want, wn);
        cl_buf_free(&resp);
        free(req);
        free(want);
    }
    struct cl_buf resp;
    cl_buf_init(&resp, CL_NSM_RESPONSE_MAX, CL_BUF_NONE);
    assert_err(cl_nsm_transact(f->nsm, (const uint8_t *)"", 0, &resp), CL_E_NSM_INPUT_TOO_LARGE);
    cl_buf_free(&resp);
    stop(f);
}

static void test_attestation(void **state)
{
    (void)state;
    for (int debug = 0; debug < 2; debug++) {
        struct fixture *f = start(debug);
        uint8_t v[CL_NSM_PCR_LEN];
        assert_ok(cl_nsm_extend_pcr(f->nsm, 16, "app", 3, v));
        assert_ok(cl_nsm_lock_pcr(f->nsm, 16));
        uint8_t nonce[32], pk[100];
        memset(nonce, 7, sizeof(nonce));
        memset(pk, 9, sizeof(pk));
        struct cl_buf doc, root;
        cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
        cl_buf_init(&root, 1 << 16, CL_BUF_NONE);
        assert_ok(cl_nsm_attestation(f->nsm, (const uint8_t *)"ud", 2, nonce, sizeof(nonce), pk, sizeof(pk), &doc));
        assert_ok(cl_attest_signer_root_der(f->signer, &root));
        struct cl_attest_pcr_expect want[2] = {{.index = 0}, {.index = 16}};
        memcpy(want[0].value, f->pcr[0], CL_NSM_PCR_LEN);
        memcpy(want[1].value, v, CL_NSM_PCR_LEN);
        struct cl_attest_policy p = {.root_der = root.data, .root_len = root.len, .pcrs = want + 1, .npcrs = 1,
                                     .check_nonce = true, .nonce = {nonce, sizeof(nonce)}, .max_age_ms = 10000,
                                     .check_public_key = true, .public_key = {pk, sizeof(pk)},
                                     .check_user_data = true, .user_data = {(const uint8_t *)"ud", 2}};
        struct cl_attest_doc d;
        assert_ok(cl_attest_parse(doc.data, doc.len, &d));
        assert_int_equal(d.npcrs, 17); /* 0-15 locked at boot + 16 */
        assert_int_equal(cl_attest_is_debug(&d), debug);
        assert_err(cl_attest_verify(&d, &p), debug ? CL_E_ATTEST_DEBUG : CL_OK);
        p.pcrs = want;
        p.npcrs = 2;
        p.allow_debug = true;
        assert_err(cl_attest_verify(&d, &p), debug ? CL_E_ATTEST_PCR_MISMATCH : CL_OK);
        cl_attest_doc_free(&d);
        /* Absent optional fields; limits enforced before sending. */
        cl_buf_reset(&doc);
        doc.len = 0;
        assert_ok(cl_nsm_attestation(f->nsm, NULL, 0, NULL, 0, NULL, 0, &doc));
        uint8_t big[600] = {0};
        assert_err(cl_nsm_attestation(f->nsm, big, sizeof(big), NULL, 0, NULL, 0, &doc), CL_E_NSM_INPUT_TOO_LARGE);
        cl_buf_free(&doc);
        cl_buf_free(&root);
        stop(f);
    }
}

static void test_open(void **state)
{
    (void)state;
    cl_nsm *n = NULL;
    assert_err(cl_nsm_open_device("/nonexistent/nsm", &n), CL_E_NSM_UNAVAILABLE);
    setenv(CL_NSM_FD_ENV, "abc", 1);
    assert_err(cl_nsm_open(&n), CL_E_NSM_UNAVAILABLE);
    setenv(CL_NSM_FD_ENV, "0", 1); /* stdin is not a seqpacket socket */
    assert_err(cl_nsm_open(&n), CL_E_NSM_UNAVAILABLE);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    char num[16];
    snprintf(num, sizeof(num), "%d", sv[0]);
    setenv(CL_NSM_FD_ENV, num, 1);
    assert_ok(cl_nsm_open(&n));
    assert_int_equal(cl_nsm_kind(n), CL_NSM_KIND_SIM);
    /* Peer gone: transport error, not a hang. */
    close(sv[1]);
    uint8_t r[8];
    assert_err(cl_nsm_get_random(n, r, sizeof(r)), CL_E_NSM_IO);
    cl_nsm_close(n);
    unsetenv(CL_NSM_FD_ENV);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_describe_and_pcrs),
        cmocka_unit_test(test_random_and_raw),
        cmocka_unit_test(test_attestation),
        cmocka_unit_test(test_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
