/* The enclave engine's continuous batching, on the tiny reference models
 * ($CLOISTER_REFERENCE): concurrent requests share forward passes and get
 * exactly the answers they get alone; a full engine refuses with
 * CL_E_PROTO_BUSY (the gateway's 429); limits and the KV budget hold. */
#include "testutil.h"

#include <pthread.h>
#include <unistd.h>

#include "cloister/buf.h"
#include "cloister/chat.h"
#include "cloister/bootcfg.h"
#include "cloister/enclave_runtime.h"
#include "cloister/file.h"

#define CL_T_N 6
static const char *const cl_t_q[CL_T_N] = {
    "Hi",
    "What is the capital of France?",
    "Write one sentence about the sea and the wind and the long grey harbour walls at dusk.",
    "2+2=",
    "List three colours, then three animals, then three numbers, each on its own line please.",
    "Tell me a story.",
};

struct cl_t_req {
    struct cl_engine *e;
    const char *q;
    uint32_t max_tokens;
    bool wait;
    bool slow;        /* the first piece takes 200 ms: the scheduler runs ahead */
    size_t n_pieces, max_piece;
    struct cl_buf text;
    struct cl_chat_result res;
    cl_err rc;
};

static bool cl_t_piece(void *ctx, const char *text, size_t len)
{
    struct cl_t_req *r = ctx;
    if (r->slow && r->n_pieces == 0)
        usleep(200 * 1000);
    r->n_pieces++;
    if (len > r->max_piece)
        r->max_piece = len;
    return cl_buf_append(&r->text, text, len) == CL_OK;
}

static void cl_t_req_init(struct cl_t_req *r, struct cl_engine *e, const char *q, uint32_t max_tokens)
{
    memset(r, 0, sizeof(*r));
    r->e = e;
    r->q = q;
    r->max_tokens = max_tokens;
    cl_buf_init(&r->text, 1 << 20, 0);
}

static void *cl_t_req_run(void *arg)
{
    struct cl_t_req *r = arg;
    struct cl_chat_msg m = {"user", r->q, strlen(r->q)};
    struct cl_chat_params p = {.msgs = &m, .n_msgs = 1, .max_tokens = r->max_tokens, .temperature = 0,
                               .has_seed = true, .seed = 7, .wait_for_slot = r->wait};
    r->rc = cl_engine_generate(r->e, &p, cl_t_piece, r, &r->res);
    return NULL;
}

static struct cl_engine *cl_t_engine(const char *model, struct cl_buf *mb)
{
    char rel[256], path[1024];
    struct cl_engine *e = NULL;
    snprintf(rel, sizeof(rel), "models/%s.gguf", model);
    CL_REFERENCE(rel, path);
    cl_buf_init(mb, (size_t)64 << 20, 0);
    assert_ok(cl_file_read(path, (size_t)64 << 20, mb));
    assert_ok(cl_engine_new(mb->data, mb->len, 2, NULL, 512, &e));
    return e;
}

/* Six requests alone, then all six at once (four held to start in the same
 * pass, two joining while they decode): the same text, token for token. */
static void cl_t_batched_equals_alone(const char *model, bool kv_f16)
{
    struct cl_buf mb;
    struct cl_engine *e = cl_t_engine(model, &mb);
    struct cl_t_req alone[CL_T_N], conc[CL_T_N];
    pthread_t th[CL_T_N];
    struct cl_engine_stats st;
    assert_ok(cl_engine_set_kv_f16(e, kv_f16));
    assert_ok(cl_engine_configure(e, 8, 1024, 0));
    for (size_t i = 0; i < CL_T_N; i++) {
        cl_t_req_init(&alone[i], e, cl_t_q[i], 24 + 6 * (uint32_t)i);
        cl_t_req_run(&alone[i]);
        assert_ok(alone[i].rc);
        assert_true(alone[i].res.completion_tokens > 0);
    }
    cl_engine_stats(e, &st);
    assert_int_equal(st.peak_seqs, 1);
    cl_engine_hold(e, true);
    for (size_t i = 0; i < 4; i++) {
        cl_t_req_init(&conc[i], e, cl_t_q[i], 24 + 6 * (uint32_t)i);
        conc[i].slow = i == 0;
        assert_int_equal(pthread_create(&th[i], NULL, cl_t_req_run, &conc[i]), 0);
    }
    for (int spin = 0; spin < 10000; spin++) { /* all four admitted (bounded: 10 s) */
        cl_engine_stats(e, &st);
        if (st.active == 4)
            break;
        usleep(1000);
    }
    assert_int_equal(st.active, 4);
    cl_engine_hold(e, false);
    for (size_t i = 4; i < CL_T_N; i++) {
        cl_t_req_init(&conc[i], e, cl_t_q[i], 24 + 6 * (uint32_t)i);
        assert_int_equal(pthread_create(&th[i], NULL, cl_t_req_run, &conc[i]), 0);
    }
    for (size_t i = 0; i < CL_T_N; i++)
        pthread_join(th[i], NULL);
    for (size_t i = 0; i < CL_T_N; i++) {
        assert_ok(conc[i].rc);
        assert_int_equal(conc[i].res.prompt_tokens, alone[i].res.prompt_tokens);
        assert_int_equal(conc[i].res.completion_tokens, alone[i].res.completion_tokens);
        assert_int_equal(conc[i].res.finish, alone[i].res.finish);
        assert_int_equal(conc[i].text.len, alone[i].text.len);
        /* the caller gets the pieces cl_gen made, however far the scheduler ran ahead
         * (the gateway holds at most 64 bytes of a split character) */
        assert_int_equal(conc[i].n_pieces, alone[i].n_pieces);
        assert_true(conc[i].max_piece <= alone[i].max_piece);
        if (conc[i].text.len && memcmp(conc[i].text.data, alone[i].text.data, conc[i].text.len) != 0)
            fail_msg("%s request %zu: batched answer differs from the answer alone", model, i);
        cl_buf_free(&conc[i].text);
        cl_buf_free(&alone[i].text);
    }
    cl_engine_stats(e, &st);
    assert_true(st.peak_seqs >= 4); /* the four held ones shared passes */
    assert_int_equal(st.active, 0);
    assert_int_equal(st.kv_used, 0); /* every sequence's bytes returned */
    cl_engine_free(e);
    cl_buf_free(&mb);
}

static void test_batched_llama(void **state) { (void)state; cl_t_batched_equals_alone("tiny-llama-q8_0", false); }
static void test_batched_gemma3(void **state) { (void)state; cl_t_batched_equals_alone("tiny-gemma3-f32", false); }
/* The boot configuration's kv_cache_bits=16: F16 caches, batched still equal to alone. */
static void test_batched_kv_f16(void **state)
{
    (void)state;
    cl_t_batched_equals_alone("tiny-gemma3-f32", true);
    cl_t_batched_equals_alone("tiny-llama-q8_0", true);
}

/* A full engine refuses at once, naming why; a batch job waits for room. */
static void test_full_is_busy(void **state)
{
    (void)state;
    struct cl_buf mb;
    struct cl_engine *e = cl_t_engine("tiny-llama-f32", &mb);
    struct cl_t_req r[3], extra, waiter;
    pthread_t th[3], tw;
    struct cl_engine_stats st;
    assert_err(cl_engine_configure(e, 0, 1024, 0), CL_E_CORE_INVALID_ARG);
    assert_err(cl_engine_configure(e, 65, 1024, 0), CL_E_CORE_INVALID_ARG);
    assert_ok(cl_engine_configure(e, 2, 1024, 0));
    assert_int_equal(cl_engine_max_seqs(e), 2);
    cl_engine_hold(e, true);
    for (size_t i = 0; i < 2; i++) {
        cl_t_req_init(&r[i], e, cl_t_q[i], 8);
        assert_int_equal(pthread_create(&th[i], NULL, cl_t_req_run, &r[i]), 0);
    }
    for (int spin = 0; spin < 10000; spin++) {
        cl_engine_stats(e, &st);
        if (st.active == 2)
            break;
        usleep(1000);
    }
    assert_int_equal(st.active, 2);
    /* configuring while serving is refused */
    assert_err(cl_engine_configure(e, 4, 1024, 0), CL_E_CORE_STATE);
    assert_err(cl_engine_set_kv_f16(e, true), CL_E_CORE_STATE);
    /* the third interactive request: busy, with the reason */
    cl_t_req_init(&extra, e, cl_t_q[2], 8);
    cl_t_req_run(&extra);
    assert_int_equal(extra.rc, CL_E_PROTO_BUSY);
    assert_non_null(strstr(cl_err_detail(), "engine full: 2 of 2 sequences"));
    /* a job waits instead, and is answered once there is room */
    cl_t_req_init(&waiter, e, cl_t_q[3], 8);
    waiter.wait = true;
    assert_int_equal(pthread_create(&tw, NULL, cl_t_req_run, &waiter), 0);
    cl_engine_hold(e, false);
    for (size_t i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_ok(r[i].rc);
        cl_buf_free(&r[i].text);
    }
    pthread_join(tw, NULL);
    assert_ok(waiter.rc);
    assert_true(waiter.res.completion_tokens > 0);
    cl_buf_free(&waiter.text);
    cl_buf_free(&extra.text);
    /* longer than the context: a limit, not a busy engine */
    cl_t_req_init(&extra, e, cl_t_q[0], 2000);
    cl_t_req_run(&extra);
    assert_int_equal(extra.rc, CL_E_PROTO_LIMIT);
    cl_buf_free(&extra.text);
    cl_engine_free(e);
    cl_buf_free(&mb);
}

/* With the enclave's memory given, the KV caches share a bounded budget:
 * here room for one sequence of the largest context, so a second one is
 * refused while the first runs, whatever max_seqs says. */
static void test_kv_budget(void **state)
{
    (void)state;
    struct cl_buf mb;
    struct cl_engine *e = cl_t_engine("tiny-gemma3-f32", &mb);
    struct cl_t_req a, b;
    pthread_t ta;
    struct cl_engine_stats st;
    /* memory that leaves nothing for caches: the budget falls back to one sequence of max_ctx */
    assert_ok(cl_engine_configure(e, 4, 1024, 1));
    cl_engine_stats(e, &st);
    assert_true(st.kv_budget > 0 && st.kv_budget < ((size_t)1 << 30));
    cl_engine_hold(e, true);
    cl_t_req_init(&a, e, cl_t_q[1], 900); /* near max_ctx: most of the budget */
    assert_int_equal(pthread_create(&ta, NULL, cl_t_req_run, &a), 0);
    for (int spin = 0; spin < 10000; spin++) {
        cl_engine_stats(e, &st);
        if (st.active == 1)
            break;
        usleep(1000);
    }
    assert_int_equal(st.active, 1);
    assert_true(st.kv_used > st.kv_budget / 2);
    cl_t_req_init(&b, e, cl_t_q[2], 900);
    cl_t_req_run(&b);
    assert_int_equal(b.rc, CL_E_PROTO_BUSY);
    assert_non_null(strstr(cl_err_detail(), "KV bytes"));
    cl_engine_hold(e, false);
    pthread_join(ta, NULL);
    assert_ok(a.rc);
    cl_buf_free(&a.text);
    cl_buf_free(&b.text);
    /* F16 caches: the one-sequence budget (and each sequence's charge) about halves */
    size_t b32 = st.kv_budget;
    cl_engine_free(e);
    cl_buf_free(&mb);
    e = cl_t_engine("tiny-gemma3-f32", &mb);
    assert_ok(cl_engine_set_kv_f16(e, true));
    assert_ok(cl_engine_configure(e, 4, 1024, 1));
    cl_engine_stats(e, &st);
    assert_true(st.kv_budget > 0 && st.kv_budget < b32 * 3 / 4);
    cl_engine_free(e);
    cl_buf_free(&mb);
}

/* The host picks the cache type, so the enclave attests it: the configuration
 * text behind config_sha256 names it, and an operator who switches it changes
 * the hash a client pins. */
static void test_kv_cache_attested(void **state)
{
    (void)state;
    static struct cl_bootcfg c;
    struct cl_buf t32, t16;
    cl_buf_init(&t32, 4096, CL_BUF_NONE);
    cl_buf_init(&t16, 4096, CL_BUF_NONE);
    cl_bootcfg_init(&c);
    strcpy(c.kms_endpoint, "http://127.0.0.1:4000");
    strcpy(c.kms_region, "eu-west-1");
    assert_ok(cl_boot_config_text(&c, &t32));
    c.limits[CL_BOOTCFG_LIM_KV_CACHE_BITS] = 16;
    assert_ok(cl_boot_config_text(&c, &t16));
    assert_non_null(memmem(t32.data, t32.len, "\nkv_cache_bits=32\n", 18));
    assert_non_null(memmem(t16.data, t16.len, "\nkv_cache_bits=16\n", 18));
    assert_false(t32.len == t16.len && memcmp(t32.data, t16.data, t32.len) == 0);
    cl_buf_free(&t32);
    cl_buf_free(&t16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_llama),
        cmocka_unit_test(test_batched_gemma3),
        cmocka_unit_test(test_batched_kv_f16),
        cmocka_unit_test(test_full_is_busy),
        cmocka_unit_test(test_kv_budget),
        cmocka_unit_test(test_kv_cache_attested),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
