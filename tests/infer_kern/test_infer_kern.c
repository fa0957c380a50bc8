#include "testutil.h"

#include <immintrin.h>
#include <math.h>

#include "cloister/cpu.h"
#include "cloister/file.h"
#include "cloister/infer/kernels.h"

/* ------------------------------------------------------------ helpers */

static uint64_t t_rng = 0x9e3779b97f4a7c15ull;

static uint32_t t_rand32(void)
{
    t_rng ^= t_rng << 13;
    t_rng ^= t_rng >> 7;
    t_rng ^= t_rng << 17;
    return (uint32_t)(t_rng >> 11);
}

static float t_uniform(void) { return ((float)(t_rand32() & 0xffffff) + 0.5f) / 16777216.0f; }

static float t_gauss(void)
{
    float u = t_uniform(), v = t_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void t_fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = t_gauss() * scale;
}

static const uint32_t t_wtypes[] = {CL_GGML_F32,  CL_GGML_F16,  CL_GGML_BF16, CL_GGML_Q4_0,
                                    CL_GGML_Q4_1, CL_GGML_Q5_0, CL_GGML_Q5_1, CL_GGML_Q8_0,
                                    CL_GGML_Q4_K, CL_GGML_Q5_K, CL_GGML_Q6_K};
#define T_NW (sizeof(t_wtypes) / sizeof(t_wtypes[0]))

static void *t_quant(uint32_t type, const float *x, size_t n)
{
    size_t bytes = cl_k_row_bytes(type, n);
    assert_true(bytes > 0);
    void *q = malloc(bytes);
    assert_non_null(q);
    assert_ok(cl_k_quantize_row(type, x, q, n));
    return q;
}

static void *t_act(uint32_t wtype, const float *x, size_t n)
{
    uint32_t at = cl_k_vec_dot_type(wtype);
    size_t bytes = cl_k_row_bytes(at, n);
    assert_true(bytes > 0);
    void *q = malloc(bytes);
    assert_non_null(q);
    assert_ok(cl_k_act_quantize(at, x, q, n));
    return q;
}

/* ------------------------------------------------------------ conversions */

__attribute__((target("f16c"))) static uint16_t t_hw_f2h(float f) { return (uint16_t)_cvtss_sh(f, 0); }
__attribute__((target("f16c"))) static float t_hw_h2f(uint16_t h) { return _cvtsh_ss(h); }

static uint32_t t_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float t_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_fp16_known(void **state)
{
    (void)state;
    assert_int_equal(cl_k_fp32_to_fp16(1.0f), 0x3c00);
    assert_int_equal(cl_k_fp32_to_fp16(-2.0f), 0xc000);
    assert_int_equal(cl_k_fp32_to_fp16(0.0f), 0x0000);
    assert_int_equal(cl_k_fp32_to_fp16(-0.0f), 0x8000);
    assert_int_equal(cl_k_fp32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(cl_k_fp32_to_fp16(65519.996f), 0x7bff);
    assert_int_equal(cl_k_fp32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(cl_k_fp32_to_fp16(1e10f), 0x7c00);
    assert_int_equal(cl_k_fp32_to_fp16(-INFINITY), 0xfc00);
    assert_int_equal(cl_k_fp32_to_fp16(0.1f), 0x2e66);
    assert_int_equal(cl_k_fp32_to_fp16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(cl_k_fp32_to_fp16(ldexpf(1.0f, -25)), 0x0000);             /* tie to even */
    assert_int_equal(cl_k_fp32_to_fp16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(cl_k_fp32_to_fp16(ldexpf(3.0f, -25)), 0x0002);             /* 1.5 ulp ties up */
    assert_int_equal(cl_k_fp32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3c00);      /* tie to even */
    assert_int_equal(cl_k_fp32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);  /* tie to even, up */
    assert_int_equal(cl_k_fp32_to_fp16(ldexpf(1023.5f, -24)), 0x0400);         /* rounds into normal */
    assert_true(isnan(cl_k_fp16_to_fp32(cl_k_fp32_to_fp16(NAN))));
    assert_true(cl_k_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));
    assert_true(cl_k_fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(cl_k_fp16_to_fp32(0xfc00) == -INFINITY);
    /* every non-NaN half survives a round trip */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        assert_int_equal(cl_k_fp32_to_fp16(cl_k_fp16_to_fp32((uint16_t)h)), h);
    }
}

static void test_fp16_vs_f16c(void **state)
{
    (void)state;
    if (cl_cpu_level() < CL_CPU_AVX2)
        skip();
    for (uint32_t h = 0; h < 0x10000; h++) {
        float a = cl_k_fp16_to_fp32((uint16_t)h), b = t_hw_h2f((uint16_t)h);
        assert_int_equal(t_bits(a), t_bits(b));
    }
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = t_rand32() << 1 ^ t_rand32();
        if (i & 1) /* concentrate on the half range, including subnormals */
            u = (u & 0x807fffff) | ((uint32_t)(96 + t_rand32() % 48) << 23);
        float f = t_float(u);
        assert_int_equal(cl_k_fp32_to_fp16(f), t_hw_f2h(f));
    }
}

/* row conversions: the F16C path equals the scalar one on every bit pattern */
static void test_fp16_rows(void **state)
{
    (void)state;
    enum { N = 65536 + 5 };
    uint16_t *h = malloc(N * 2), *h1 = malloc(N * 2), *h2 = malloc(N * 2);
    float *f = malloc(N * 4), *f1 = malloc(N * 4), *f2 = malloc(N * 4);
    for (uint32_t i = 0; i < N; i++) {
        h[i] = (uint16_t)i;
        uint32_t u = t_rand32() << 1 ^ t_rand32();
        if (i & 1)
            u = (u & 0x807fffff) | ((uint32_t)(96 + t_rand32() % 48) << 23);
        f[i] = t_float(u);
    }
    cl_cpu_set_level(CL_CPU_SCALAR);
    cl_k_fp16_to_fp32_row(h, f1, N);
    cl_k_fp32_to_fp16_row(f, h1, N);
    cl_cpu_set_level(CL_CPU_NONE);
    cl_k_fp16_to_fp32_row(h, f2, N);
    cl_k_fp32_to_fp16_row(f, h2, N);
    assert_memory_equal(f1, f2, N * 4);
    assert_memory_equal(h1, h2, N * 2);
    free(h);
    free(h1);
    free(h2);
    free(f);
    free(f1);
    free(f2);
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(cl_k_fp32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(cl_k_fp32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(cl_k_fp32_to_bf16(t_float(0x3f808000)), 0x3f80); /* tie to even */
    assert_int_equal(cl_k_fp32_to_bf16(t_float(0x3f818000)), 0x3f82); /* tie to even, up */
    assert_int_equal(cl_k_fp32_to_bf16(t_float(0x3f808001)), 0x3f81);
    assert_int_equal(cl_k_fp32_to_bf16(t_float(0x7f800001)), 0x7fc0); /* NaN quieted */
    assert_int_equal(cl_k_fp32_to_bf16(INFINITY), 0x7f80);
    assert_true(cl_k_bf16_to_fp32(0x4049) == t_float(0x40490000));
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            continue;
        assert_int_equal(cl_k_fp32_to_bf16(cl_k_bf16_to_fp32((uint16_t)h)), h);
    }
    float src[5] = {1.0f, -0.5f, 3.25f, 0.0f, 100.0f}, back[5];
    uint16_t mid[5];
    cl_k_fp32_to_bf16_row(src, mid, 5);
    cl_k_bf16_to_fp32_row(mid, back, 5);
    assert_memory_equal(src, back, sizeof(src));
    cl_k_fp32_to_fp16_row(src, mid, 5);
    cl_k_fp16_to_fp32_row(mid, back, 5);
    assert_memory_equal(src, back, sizeof(src));
}

/* ------------------------------------------------------------ type queries */

static void test_types(void **state)
{
    (void)state;
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q4_0), CL_GGML_Q8_0);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q5_0), CL_GGML_Q8_0);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q8_0), CL_GGML_Q8_0);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q4_1), CL_GGML_Q8_1);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q5_1), CL_GGML_Q8_1);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q4_K), CL_GGML_Q8_K);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q5_K), CL_GGML_Q8_K);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q6_K), CL_GGML_Q8_K);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_F16), CL_GGML_F16);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_BF16), CL_GGML_BF16);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_F32), CL_GGML_F32);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q2_K), CL_GGML_TYPE_COUNT);
    assert_int_equal(cl_k_vec_dot_type(CL_GGML_Q8_K), CL_GGML_TYPE_COUNT);
    assert_int_equal(cl_k_vec_dot_type(999), CL_GGML_TYPE_COUNT);
    for (size_t i = 0; i < T_NW; i++)
        assert_true(cl_k_weight_type_ok(t_wtypes[i]));
    assert_false(cl_k_weight_type_ok(CL_GGML_Q3_K));
    assert_false(cl_k_weight_type_ok(CL_GGML_Q8_1));
    assert_false(cl_k_weight_type_ok(4)); /* removed Q4_2 id */

    assert_int_equal(cl_k_row_bytes(CL_GGML_Q4_0, 64), 36);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q8_0, 4096), 4352);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q4_K, 512), 288);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q6_K, 256), 210);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q8_K, 256), 292);
    assert_int_equal(cl_k_row_bytes(CL_GGML_F16, 7), 14);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q4_0, 33), 0);
    assert_int_equal(cl_k_row_bytes(CL_GGML_Q4_K, 1152), 0); /* not a multiple of 256 */
    assert_int_equal(cl_k_row_bytes(200, 32), 0);
    assert_int_equal(cl_k_row_bytes(CL_GGML_F32, SIZE_MAX / 2), 0); /* overflow */

    assert_ok(cl_k_check(CL_GGML_Q4_0, 64));
    assert_ok(cl_k_check(CL_GGML_F32, 3));
    assert_err(cl_k_check(CL_GGML_Q4_0, 48), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_check(CL_GGML_Q4_0, 0), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_check(CL_GGML_Q6_K, 1152), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_check(CL_GGML_Q2_K, 256), CL_E_INFER_K_TYPE);
    assert_err(cl_k_check(77, 256), CL_E_INFER_K_TYPE);
    assert_non_null(strstr(cl_err_detail(), "77"));

    float x[64] = {0};
    uint8_t buf[512];
    assert_err(cl_k_quantize_row(CL_GGML_Q8_0, x, buf, 40), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_quantize_row(CL_GGML_Q2_K, x, buf, 256), CL_E_INFER_K_TYPE);
    assert_err(cl_k_quantize_row(CL_GGML_Q8_0, NULL, buf, 32), CL_E_INFER_K_ARG);
    assert_err(cl_k_dequantize_row(CL_GGML_Q4_K, buf, x, 64), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_dequantize_row(CL_GGML_I32, buf, x, 4), CL_E_INFER_K_TYPE);
    assert_err(cl_k_dequantize_row(CL_GGML_Q8_0, buf, NULL, 32), CL_E_INFER_K_ARG);
    assert_err(cl_k_act_quantize(CL_GGML_Q4_0, x, buf, 32), CL_E_INFER_K_TYPE);
    assert_err(cl_k_act_quantize(CL_GGML_Q8_K, x, buf, 64), CL_E_INFER_K_LENGTH);
    assert_true(isnan(cl_k_vec_dot(CL_GGML_Q8_0, buf, buf, 33)));
    assert_true(isnan(cl_k_vec_dot(CL_GGML_Q3_K, buf, buf, 256)));
    assert_true(isnan(cl_k_vec_dot(CL_GGML_Q8_0, NULL, buf, 32)));
}

/* ------------------------------------------------------------ known vectors */

static void test_known_q4_0_q8_0(void **state)
{
    (void)state;
    /* integers -8..7: max |x| is at -8, so d = 1 and every value is exact */
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)((i * 7) % 16 - 8);
    struct cl_k_block_q4_0 q4[2];
    assert_ok(cl_k_quantize_row(CL_GGML_Q4_0, x, q4, 64));
    assert_int_equal(q4[0].d, 0x3c00);
    assert_int_equal(q4[0].qs[0] & 0xF, 0);     /* -8 + 8 */
    assert_int_equal(q4[0].qs[1] & 0xF, 7);     /* -1 + 8 */
    assert_ok(cl_k_dequantize_row(CL_GGML_Q4_0, q4, y, 64));
    assert_memory_equal(x, y, sizeof(x));

    /* q8_0 reference: amax 127 gives d = 1 */
    for (int i = 0; i < 32; i++)
        x[i] = (float)(127 - 8 * i);
    struct cl_k_block_q8_0 q8;
    assert_ok(cl_k_quantize_row(CL_GGML_Q8_0, x, &q8, 32));
    assert_int_equal(q8.d, 0x3c00);
    for (int i = 0; i < 32; i++)
        assert_int_equal(q8.qs[i], 127 - 8 * i < -127 ? -127 : 127 - 8 * i);

    /* rounding: the _ref quantizer rounds half away from zero, the
     * activation quantizer (ggml's AVX path) rounds half to even */
    memset(x, 0, sizeof(x));
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 3.5f;
    x[4] = 0.5f;
    x[5] = -126.5f;
    struct cl_k_block_q8_0 r, a;
    assert_ok(cl_k_quantize_row(CL_GGML_Q8_0, x, &r, 32));
    assert_ok(cl_k_act_quantize(CL_GGML_Q8_0, x, &a, 32));
    const int8_t want_r[6] = {127, 3, -3, 4, 1, -127}, want_a[6] = {127, 2, -2, 4, 0, -126};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(r.qs[i], want_r[i]);
        assert_int_equal(a.qs[i], want_a[i]);
    }
    struct cl_k_block_q8_1 a1;
    assert_ok(cl_k_act_quantize(CL_GGML_Q8_1, x, &a1, 32));
    assert_int_equal(a1.d, 0x3c00);
    assert_memory_equal(a1.qs, a.qs, 32);
    assert_true(cl_k_fp16_to_fp32(a1.s) == (float)(127 + 2 - 2 + 4 + 0 - 126));

    /* subnormal-only and NaN blocks: 127/amax overflows; every path gives the same bytes */
    {
        float z[256] = {0};
        z[3] = 8.3e-39f;
        z[40] = -1e-40f;
        z[100] = NAN; /* with normal values in its block */
        z[101] = 3.0f;
        z[200] = 1.0f;
        z[230] = INFINITY; /* and an infinite one */
        z[231] = 2.0f;
        static const uint32_t ats[] = {CL_GGML_Q8_0, CL_GGML_Q8_1, CL_GGML_Q8_K};
        for (size_t k = 0; k < 3; k++) {
            uint8_t b1[292], b2[292];
            size_t bytes = cl_k_row_bytes(ats[k], 256);
            cl_cpu_set_level(CL_CPU_SCALAR);
            assert_ok(cl_k_act_quantize(ats[k], z, b1, 256));
            cl_cpu_set_level(CL_CPU_NONE);
            assert_ok(cl_k_act_quantize(ats[k], z, b2, 256));
            assert_memory_equal(b1, b2, bytes);
        }
    }

    /* hand-computed dot: q4_0 weights (d=1) with q8_0 activations (d=1) */
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i % 16 - 8);
    assert_ok(cl_k_quantize_row(CL_GGML_Q4_0, x, q4, 32));
    for (int i = 0; i < 32; i++)
        y[i] = (float)(i == 0 ? 127 : (i % 5) - 2);
    assert_ok(cl_k_act_quantize(CL_GGML_Q8_0, y, &a, 32));
    double want = 0;
    for (int i = 0; i < 32; i++)
        want += x[i] * y[i];
    assert_true(cl_k_vec_dot(CL_GGML_Q4_0, q4, &a, 32) == (float)want);
}

static void test_known_q8_k(void **state)
{
    (void)state;
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 17) - 8.0f;
    x[100] = -127.0f; /* largest magnitude, negative: iscale = 1 */
    struct cl_k_block_q8_k q;
    assert_ok(cl_k_act_quantize(CL_GGML_Q8_K, x, &q, 256));
    assert_true(q.d == 1.0f);
    for (int i = 0; i < 256; i++)
        assert_int_equal(q.qs[i], (int)x[i]);
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int k = 0; k < 16; k++)
            s += (int)x[16 * g + k];
        assert_int_equal(q.bsums[g], s);
    }
    /* a tie in magnitude: the first one sets the sign, on every path */
    x[200] = 127.0f;
    struct cl_k_block_q8_k q2;
    const enum cl_cpu_level top = cl_cpu_level();
    int levels = 0;
    for (enum cl_cpu_level l = CL_CPU_SCALAR; l <= top; l++, levels++) {
        cl_cpu_set_level(l);
        assert_ok(cl_k_act_quantize(CL_GGML_Q8_K, x, &q2, 256));
        assert_true(q2.d == 1.0f);
        assert_int_equal(q2.qs[200], 127);
        assert_memory_equal(q2.qs, q.qs, 200);
    }
    assert_int_equal(levels, top);
    cl_cpu_set_level(CL_CPU_NONE);
    x[200] = (float)(200 % 17) - 8.0f;
    /* the max value positive: -127/max makes qs negative then capped at 127 */
    x[100] = 127.0f;
    assert_ok(cl_k_quantize_row(CL_GGML_Q8_K, x, &q, 256));
    assert_true(q.d == -1.0f);
    assert_int_equal(q.qs[100], -127);
    assert_int_equal(q.qs[0], 8);
}

/* ------------------------------------------------------------ round trips */

struct t_bound {
    uint32_t type;
    double max_rel_rmse;
};

static void test_round_trip(void **state)
{
    (void)state;
    static const struct t_bound b[] = {
        {CL_GGML_F16, 0.0005},  {CL_GGML_BF16, 0.004}, {CL_GGML_Q8_0, 0.006}, {CL_GGML_Q8_1, 0.006},
        {CL_GGML_Q4_0, 0.12},   {CL_GGML_Q4_1, 0.10},  {CL_GGML_Q5_0, 0.06},  {CL_GGML_Q5_1, 0.05},
        {CL_GGML_Q4_K, 0.10},   {CL_GGML_Q5_K, 0.05},  {CL_GGML_Q6_K, 0.025}, {CL_GGML_Q8_K, 0.01},
        {CL_GGML_F32, 0.0},
    };
    enum { N = 4096 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    t_fill(x, N, 0.02f);
    for (size_t t = 0; t < sizeof(b) / sizeof(b[0]); t++) {
        void *q = t_quant(b[t].type, x, N);
        assert_ok(cl_k_dequantize_row(b[t].type, q, y, N));
        double se = 0, sx = 0;
        for (int i = 0; i < N; i++) {
            se += (double)(x[i] - y[i]) * (x[i] - y[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        if (rel > b[t].max_rel_rmse)
            fail_msg("%s relative rmse %.5f > %.5f", cl_ggml_type_info(b[t].type)->name, rel, b[t].max_rel_rmse);
        /* quantizing is deterministic */
        void *q2 = t_quant(b[t].type, x, N);
        assert_memory_equal(q, q2, cl_k_row_bytes(b[t].type, N));
        free(q);
        free(q2);
    }
    free(x);
    free(y);
}

/* Zero blocks, tiny and large values: no NaN, zeros stay zero. */
static void test_edges(void **state)
{
    (void)state;
    enum { N = 512 };
    float x[N], y[N];
    static const uint32_t types[] = {CL_GGML_Q4_0, CL_GGML_Q4_1, CL_GGML_Q5_0, CL_GGML_Q5_1, CL_GGML_Q8_0,
                                     CL_GGML_Q8_1, CL_GGML_Q4_K, CL_GGML_Q5_K, CL_GGML_Q6_K, CL_GGML_Q8_K};
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        memset(x, 0, sizeof(x));
        void *q = t_quant(types[t], x, N);
        assert_ok(cl_k_dequantize_row(types[t], q, y, N));
        for (int i = 0; i < N; i++)
            assert_true(y[i] == 0.0f);
        free(q);
        /* one zero super-block next to a block with huge and tiny values */
        for (int i = 0; i < N; i++)
            x[i] = i < 256 ? 0.0f : (i % 3 ? 1e-30f : -5e3f * (float)(i % 7));
        x[300] = 6e4f;
        q = t_quant(types[t], x, N);
        assert_ok(cl_k_dequantize_row(types[t], q, y, N));
        for (int i = 0; i < N; i++) {
            assert_false(isnan(y[i]));
            if (i < 256)
                assert_true(y[i] == 0.0f);
        }
        /* the outlier survives within a few steps of its block's scale */
        assert_true(fabsf(y[300] - 6e4f) < 6e4f * 0.15f);
        free(q);
    }
    for (size_t i = 0; i < T_NW; i++) {
        memset(x, 0, sizeof(x));
        t_fill(y, N, 1.0f);
        void *w = t_quant(t_wtypes[i], x, N);
        void *a = t_act(t_wtypes[i], y, N);
        assert_true(cl_k_vec_dot(t_wtypes[i], w, a, N) == 0.0f);
        free(w);
        free(a);
    }
}

/* vec_dot equals dequantize-then-dot up to float rounding. */
static void test_vec_dot_vs_dequant(void **state)
{
    (void)state;
    static const size_t ns[] = {256, 512, 2048};
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        size_t n = ns[k];
        float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
        float *dx = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
        for (size_t i = 0; i < T_NW; i++) {
            uint32_t wt = t_wtypes[i];
            t_fill(x, n, 0.05f);
            t_fill(y, n, 1.5f);
            void *w = t_quant(wt, x, n);
            void *a = t_act(wt, y, n);
            assert_ok(cl_k_dequantize_row(wt, w, dx, n));
            assert_ok(cl_k_dequantize_row(cl_k_vec_dot_type(wt), a, dy, n));
            double want = 0, mag = 0;
            for (size_t j = 0; j < n; j++) {
                want += (double)dx[j] * dy[j];
                mag += fabs((double)dx[j] * dy[j]);
            }
            double slack = 0; /* Q8_1 carries d*sum(q) rounded to fp16 */
            if (cl_k_vec_dot_type(wt) == CL_GGML_Q8_1) {
                const struct cl_k_block_q8_1 *ab = a;
                for (size_t b = 0; b < n / 32; b++) {
                    uint16_t m16 = wt == CL_GGML_Q4_1 ? ((const struct cl_k_block_q4_1 *)w)[b].m
                                                      : ((const struct cl_k_block_q5_1 *)w)[b].m;
                    slack += fabs(cl_k_fp16_to_fp32(m16) * cl_k_fp16_to_fp32(ab[b].s)) / 1024.0;
                }
            }
            cl_cpu_set_level(CL_CPU_SCALAR);
            float got = cl_k_vec_dot(wt, w, a, n);
            cl_cpu_set_level(CL_CPU_NONE);
            if (fabs(got - want) > 2e-5 * mag + slack + 1e-6)
                fail_msg("%s n=%zu: vec_dot %.7g vs dequantized %.7g (mag %.3g)", cl_ggml_type_info(wt)->name, n,
                         got, want, mag);
            free(w);
            free(a);
        }
        free(x);
        free(y);
        free(dx);
        free(dy);
    }
}

/* Quantized dot is close to the float dot (end-to-end sanity). */
static void test_vec_dot_vs_float(void **state)
{
    (void)state;
    enum { N = 4096 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    t_fill(x, N, 0.05f);
    t_fill(y, N, 1.0f);
    double want = 0, mag = 0;
    for (int j = 0; j < N; j++) {
        want += (double)x[j] * y[j];
        mag += fabs((double)x[j] * y[j]);
    }
    for (size_t i = 0; i < T_NW; i++) {
        void *w = t_quant(t_wtypes[i], x, N);
        void *a = t_act(t_wtypes[i], y, N);
        float got = cl_k_vec_dot(t_wtypes[i], w, a, N);
        if (fabs(got - want) > 0.05 * mag)
            fail_msg("%s: %.6g vs %.6g", cl_ggml_type_info(t_wtypes[i])->name, got, want);
        free(w);
        free(a);
    }
    free(x);
    free(y);
}

/* ------------------------------------------------------------ matmul */

static void t_matmul_check(uint32_t wt, size_t n, size_t rows, size_t cols, enum cl_cpu_level lvl)
{
    size_t rb = cl_k_row_bytes(wt, n), ws = rb + 16;
    uint32_t at = cl_k_vec_dot_type(wt);
    size_t ab = cl_k_row_bytes(at, n), as = ab + 8;
    char *W = calloc(rows, ws), *A = calloc(cols, as);
    float *x = malloc(n * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        t_fill(x, n, 0.1f);
        assert_ok(cl_k_quantize_row(wt, x, W + r * ws, n));
    }
    for (size_t c = 0; c < cols; c++) {
        t_fill(x, n, 1.0f);
        assert_ok(cl_k_act_quantize(at, x, A + c * as, n));
    }
    size_t os = rows + 3;
    float *out = malloc(cols * os * sizeof(float));
    for (size_t i = 0; i < cols * os; i++)
        out[i] = -12345.0f;
    cl_cpu_set_level(lvl);
    size_t mid = rows / 3;
    assert_ok(cl_k_matmul_rows(wt, W, ws, 0, mid, A, as, cols, n, out, os));
    assert_ok(cl_k_matmul_rows(wt, W, ws, mid, rows, A, as, cols, n, out, os));
    cl_cpu_set_level(CL_CPU_SCALAR);
    for (size_t c = 0; c < cols; c++) {
        for (size_t r = 0; r < rows; r++) {
            float want = cl_k_vec_dot(wt, W + r * ws, A + c * as, n);
            float got = out[c * os + r];
            if (!(fabsf(got - want) <= 1e-4f * (1.0f + fabsf(want))))
                fail_msg("%s %s n=%zu r=%zu c=%zu: %.7g vs %.7g", cl_ggml_type_info(wt)->name,
                         cl_cpu_level_name(lvl), n, r, c, got, want);
        }
        for (size_t r = rows; r < os; r++)
            assert_true(out[c * os + r] == -12345.0f); /* padding untouched */
    }
    cl_cpu_set_level(CL_CPU_NONE);
    free(W);
    free(A);
    free(x);
    free(out);
}

static void test_matmul(void **state)
{
    (void)state;
    for (size_t i = 0; i < T_NW; i++) {
        t_matmul_check(t_wtypes[i], 512, 13, 1, CL_CPU_SCALAR);
        t_matmul_check(t_wtypes[i], 256, 9, 7, CL_CPU_SCALAR);
    }
    float out[4];
    uint8_t w[64] = {0}, a[64] = {0};
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 0, 1, a, 34, 1, 33, out, 1), CL_E_INFER_K_LENGTH);
    assert_err(cl_k_matmul_rows(CL_GGML_Q2_K, w, 84, 0, 1, a, 292, 1, 256, out, 1), CL_E_INFER_K_TYPE);
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, w, 33, 0, 1, a, 34, 1, 32, out, 1), CL_E_INFER_K_ARG);
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 1, 0, a, 34, 1, 32, out, 1), CL_E_INFER_K_ARG);
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 0, 1, a, 30, 2, 32, out, 2), CL_E_INFER_K_ARG);
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 0, 2, a, 34, 2, 32, out, 1), CL_E_INFER_K_ARG);
    assert_err(cl_k_matmul_rows(CL_GGML_Q8_0, NULL, 34, 0, 1, a, 34, 1, 32, out, 1), CL_E_INFER_K_ARG);
    assert_ok(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 1, 1, a, 34, 1, 32, out, 1)); /* empty range */
    assert_ok(cl_k_matmul_rows(CL_GGML_Q8_0, w, 34, 0, 1, a, 34, 1, 32, out, 1));
    assert_true(out[0] == 0.0f);
}

/* A prompt batch (many rows x many columns through the tiled matmul kernels,
 * row and column counts that leave remainders of every tile) gives exactly
 * the single-row dot product of the same path for every (row, column): the
 * tiles reuse weights and activations across rows and columns but run the
 * same operations per pair, so batching never changes a logit. */
static void t_matmul_exact(uint32_t wt, size_t n, size_t rows, size_t cols, enum cl_cpu_level lvl)
{
    size_t rb = cl_k_row_bytes(wt, n);
    uint32_t at = cl_k_vec_dot_type(wt);
    size_t ab = cl_k_row_bytes(at, n);
    char *W = calloc(rows, rb), *A = calloc(cols, ab);
    float *x = malloc(n * sizeof(float)), *out = malloc(rows * cols * sizeof(float));
    assert_non_null(W);
    assert_non_null(A);
    assert_non_null(x);
    assert_non_null(out);
    for (size_t r = 0; r < rows; r++) {
        t_fill(x, n, 0.1f);
        assert_ok(cl_k_quantize_row(wt, x, W + r * rb, n));
    }
    for (size_t c = 0; c < cols; c++) {
        t_fill(x, n, 1.0f);
        assert_ok(cl_k_act_quantize(at, x, A + c * ab, n));
    }
    cl_cpu_set_level(lvl);
    /* two thread-like row ranges, the first ending on an odd row */
    assert_ok(cl_k_matmul_rows(wt, W, rb, 0, 5, A, ab, cols, n, out, rows));
    assert_ok(cl_k_matmul_rows(wt, W, rb, 5, rows, A, ab, cols, n, out, rows));
    for (size_t c = 0; c < cols; c++)
        for (size_t r = 0; r < rows; r++) {
            float want = cl_k_vec_dot(wt, W + r * rb, A + c * ab, n), got = out[c * rows + r];
            if (memcmp(&got, &want, sizeof(float)) != 0)
                fail_msg("%s %s (%s) n=%zu row %zu col %zu: batched %.9g, single-row %.9g",
                         cl_ggml_type_info(wt)->name, cl_cpu_level_name(lvl), cl_k_path_name(wt), n, r, c, got, want);
        }
    cl_cpu_set_level(CL_CPU_NONE);
    free(W);
    free(A);
    free(x);
    free(out);
}

static void test_matmul_batch_exact(void **state)
{
    (void)state;
    enum cl_cpu_level top = cl_cpu_level();
    for (enum cl_cpu_level lvl = CL_CPU_SCALAR; lvl <= top; lvl++)
        for (size_t i = 0; i < T_NW; i++) {
            t_matmul_exact(t_wtypes[i], 512, 13, 11, lvl);
            t_matmul_exact(t_wtypes[i], 2560, 9, 6, lvl);
            /* whole groups of 16 rows (the lane kernels) beside leftover rows, and more columns than a tile */
            t_matmul_exact(t_wtypes[i], 512, 41, 19, lvl);
            t_matmul_exact(t_wtypes[i], 1024, 37, 3, lvl);
            t_matmul_exact(t_wtypes[i], 2560, 40, 1, lvl); /* one column: the matvec lanes */
            if (cl_ggml_type_info(t_wtypes[i])->block_elems == 32) /* 17 blocks: a partial group, odd */
                t_matmul_exact(t_wtypes[i], 544, 39, 1, lvl);
        }
}

/* ------------------------------------------------------------ 16 interleaved rows */

/* Repacks a rows x n matrix, then checks: every row reads back as it was;
 * the product over the repacked matrix agrees with the plain one within
 * float-order tolerance on every CPU level; each column alone, each split of
 * the rows at group boundaries and each split inside a group give the same
 * bits as the whole call (the batched-equals-alone guarantee). */
static void t_rows16(uint32_t wt, size_t n, size_t rows, size_t cols)
{
    const uint32_t at = cl_k_vec_dot_type(wt);
    size_t rb = cl_k_row_bytes(wt, n), ab = cl_k_row_bytes(at, n);
    char *W = malloc(rows * rb), *P = malloc(rows * rb), *A = malloc(cols * ab), *row = malloc(rb);
    float *x = malloc(n * sizeof(float)), *fw = malloc(rows * n * sizeof(float)), *fa = malloc(cols * n * sizeof(float));
    float *want = malloc(rows * cols * sizeof(float)), *got = malloc(rows * cols * sizeof(float));
    float *alone = malloc(rows * sizeof(float));
    assert_true(W && P && A && row && x && fw && fa && want && got && alone);
    for (size_t r = 0; r < rows; r++) {
        t_fill(x, n, 0.1f);
        assert_ok(cl_k_quantize_row(wt, x, W + r * rb, n));
        assert_ok(cl_k_dequantize_row(wt, W + r * rb, fw + r * n, n));
    }
    for (size_t c = 0; c < cols; c++) {
        t_fill(x, n, 1.0f);
        assert_ok(cl_k_act_quantize(at, x, A + c * ab, n));
        assert_ok(cl_k_dequantize_row(at, A + c * ab, fa + c * n, n));
    }
    memcpy(P, W, rows * rb);
    assert_ok(cl_k_rows16_pack(wt, P, rows, n));
    if (rows >= CL_K_ROWS16)
        assert_memory_not_equal(P, W, CL_K_ROWS16 * rb);
    if (rows % CL_K_ROWS16) /* the rows past the last group stay plain */
        assert_memory_equal(P + rows / 16 * 16 * rb, W + rows / 16 * 16 * rb, (rows % 16) * rb);
    for (size_t r = 0; r < rows; r++) {
        assert_ok(cl_k_rows16_row(wt, P, rows, r, row, n));
        assert_memory_equal(row, W + r * rb, rb);
        assert_ok(cl_k_rows16_dequantize_row(wt, P, rows, r, x, n));
        assert_memory_equal(x, fw + r * n, n * sizeof(float));
    }
    enum cl_cpu_level top = cl_cpu_level();
    for (enum cl_cpu_level lvl = CL_CPU_SCALAR; lvl <= top; lvl++) {
        cl_cpu_set_level(lvl);
        assert_ok(cl_k_matmul_rows(wt, W, rb, 0, rows, A, ab, cols, n, want, rows));
        assert_ok(cl_k_rows16_matmul(wt, P, rows, 0, rows, A, ab, cols, n, got, rows));
        for (size_t c = 0; c < cols; c++)
            for (size_t r = 0; r < rows; r++) {
                double mag = 0;
                for (size_t k = 0; k < n; k++)
                    mag += fabs((double)fw[r * n + k] * fa[c * n + k]);
                float g = got[c * rows + r], w = want[c * rows + r];
                if (!(fabs((double)g - w) <= 1e-5 * mag + 1e-6))
                    fail_msg("%s n=%zu %s row %zu col %zu: interleaved %.9g plain %.9g (terms %.3g)",
                             cl_ggml_type_info(wt)->name, n, cl_cpu_level_name(lvl), r, c, g, w, mag);
            }
        /* each column alone, in two row ranges (a group boundary, then inside a group) */
        const size_t cut[] = {rows >= 16 ? 16 : 0, rows > 21 ? 21 : rows / 2};
        for (size_t c = 0; c < cols; c++)
            for (size_t k = 0; k < 2; k++) {
                memset(alone, 0xff, rows * sizeof(float));
                assert_ok(cl_k_rows16_matmul(wt, P, rows, 0, cut[k], A + c * ab, ab, 1, n, alone, rows));
                assert_ok(cl_k_rows16_matmul(wt, P, rows, cut[k], rows, A + c * ab, ab, 1, n, alone, rows));
                if (memcmp(alone, got + c * rows, rows * sizeof(float)) != 0)
                    fail_msg("%s n=%zu %s col %zu: alone (rows cut at %zu) differs from %zu columns at once",
                             cl_ggml_type_info(wt)->name, n, cl_cpu_level_name(lvl), c, cut[k], cols);
            }
    }
    cl_cpu_set_level(CL_CPU_NONE);
    free(W);
    free(P);
    free(A);
    free(row);
    free(x);
    free(fw);
    free(fa);
    free(want);
    free(got);
    free(alone);
}

static void test_rows16(void **state)
{
    (void)state;
    const uint32_t types[] = {CL_GGML_Q4_0, CL_GGML_Q8_0, CL_GGML_Q4_K, CL_GGML_Q6_K};
    for (size_t i = 0; i < 4; i++) {
        t_rows16(types[i], 512, 40, 13); /* 2 groups + 8 plain rows; 8 + 4 + 1 columns */
        t_rows16(types[i], 2560, 7, 3);  /* no whole group */
        if (types[i] == CL_GGML_Q4_K || types[i] == CL_GGML_Q6_K) {
            t_rows16(types[i], 2560, 48, 9);
            continue;
        }
        t_rows16(types[i], 544, 16, 1);  /* odd block count, one group, one column */
        t_rows16(types[i], 17408, 32, 40); /* 544 blocks: two K chunks; two prepared column groups */
    }
    char buf[64] = {0};
    float out[2];
    assert_err(cl_k_rows16_pack(CL_GGML_Q5_K, buf, 1, 256), CL_E_INFER_K_TYPE);
    assert_err(cl_k_rows16_pack(CL_GGML_Q4_0, NULL, 16, 32), CL_E_INFER_K_ARG);
    assert_err(cl_k_rows16_row(CL_GGML_Q4_0, buf, 2, 2, buf, 32), CL_E_INFER_K_ARG);
    assert_err(cl_k_rows16_matmul(CL_GGML_Q8_0, buf, 1, 0, 2, buf, 34, 1, 32, out, 2), CL_E_INFER_K_ARG);
    assert_err(cl_k_rows16_matmul(CL_GGML_Q8_0, buf, 1, 0, 1, buf, 34, 1, 33, out, 2), CL_E_INFER_K_LENGTH);
    assert_false(cl_k_rows16_fast(CL_GGML_Q5_K));
}

/* ------------------------------------------------------------ SIMD vs scalar */

static void test_simd_vs_scalar(void **state)
{
    (void)state;
    enum cl_cpu_level top = cl_cpu_level();
    if (top < CL_CPU_AVX2)
        skip();
    static const size_t ns[] = {7, 37, 1001, 32, 96, 256, 800, 512, 768, 1024, 4096};
    cl_cpu_set_level(CL_CPU_SCALAR);
    assert_string_equal(cl_k_path_name(CL_GGML_Q4_0), "scalar");
    cl_cpu_set_level(CL_CPU_AVX2);
    assert_string_equal(cl_k_path_name(CL_GGML_Q4_0), "avx2");
    assert_string_equal(cl_k_path_name(CL_GGML_Q6_K), "avx2");
    assert_string_equal(cl_k_path_name(CL_GGML_Q4_1), "scalar"); /* no SIMD kernel: falls back */
    cl_cpu_set_level(CL_CPU_NONE);
    for (enum cl_cpu_level lvl = CL_CPU_AVX2; lvl <= top; lvl++) {
        for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
            size_t n = ns[k];
            float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
            for (size_t i = 0; i < T_NW; i++) {
                uint32_t wt = t_wtypes[i];
                if (n % cl_ggml_type_info(wt)->block_elems)
                    continue;
                for (int rep = 0; rep < 3; rep++) {
                    t_fill(x, n, rep == 2 ? 30.0f : 0.05f);
                    t_fill(y, n, rep == 1 ? 1e-3f : 2.0f);
                    void *w = t_quant(wt, x, n);
                    uint32_t at = cl_k_vec_dot_type(wt);
                    size_t ab = cl_k_row_bytes(at, n);
                    void *a1 = malloc(ab), *a2 = malloc(ab);
                    cl_cpu_set_level(CL_CPU_SCALAR);
                    assert_ok(cl_k_act_quantize(at, y, a1, n));
                    float want = cl_k_vec_dot(wt, w, a1, n);
                    cl_cpu_set_level(lvl);
                    assert_ok(cl_k_act_quantize(at, y, a2, n));
                    assert_memory_equal(a1, a2, ab); /* activation quantization is bit-exact */
                    float got = cl_k_vec_dot(wt, w, a2, n);
                    cl_cpu_set_level(CL_CPU_NONE);
                    /* tolerance from the magnitude of the terms */
                    float *dx = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
                    assert_ok(cl_k_dequantize_row(wt, w, dx, n));
                    assert_ok(cl_k_dequantize_row(at, a1, dy, n));
                    double mag = 0;
                    for (size_t j = 0; j < n; j++)
                        mag += fabs((double)dx[j] * dy[j]);
                    if (!(fabs(got - want) <= 3e-6 * mag + 1e-30))
                        fail_msg("%s %s n=%zu rep %d: %.9g vs scalar %.9g (mag %.3g)", cl_ggml_type_info(wt)->name,
                                 cl_cpu_level_name(lvl), n, rep, got, want, mag);
                    free(dx);
                    free(dy);
                    free(w);
                    free(a1);
                    free(a2);
                }
            }
            free(x);
            free(y);
        }
        for (size_t i = 0; i < T_NW; i++) {
            t_matmul_check(t_wtypes[i], 512, 21, 1, lvl);
            t_matmul_check(t_wtypes[i], 256, 11, 9, lvl);
            t_matmul_check(t_wtypes[i], 1024, 5, 4, lvl);
            if (cl_ggml_type_info(t_wtypes[i])->block_elems == 32) { /* odd block counts */
                t_matmul_check(t_wtypes[i], 96, 7, 6, lvl);
                t_matmul_check(t_wtypes[i], 800, 3, 5, lvl);
                t_matmul_check(t_wtypes[i], 32, 4, 1, lvl);
            }
        }
        /* rows longer than the prepared-activation buffers are done in K chunks */
        t_matmul_check(CL_GGML_Q4_0, 70016, 2, 2, lvl);
        t_matmul_check(CL_GGML_Q5_0, 524288 + 96, 2, 5, lvl);
    }
}


/* With every scale 1.0 and small integers, each path's result is a sum of
 * exact integers in float, so all paths must agree exactly: checks that the
 * SIMD integer arithmetic (unpacking, offsets, scales, mins) is exact. */
static int t_rint(int lo, int hi) { return lo + (int)(t_rand32() % (uint32_t)(hi - lo + 1)); }

static void test_simd_integer_exact(void **state)
{
    (void)state;
    enum cl_cpu_level top = cl_cpu_level();
    if (top < CL_CPU_AVX2)
        skip();
    static const uint32_t types[] = {CL_GGML_Q8_0, CL_GGML_Q4_0, CL_GGML_Q5_0, CL_GGML_Q4_K, CL_GGML_Q5_K,
                                     CL_GGML_Q6_K, CL_GGML_Q4_1, CL_GGML_Q5_1};
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        const uint32_t wt = types[t], at = cl_k_vec_dot_type(wt);
        const size_t n = cl_ggml_type_info(wt)->block_elems == 32 ? 544 : 256; /* 17 blocks: odd count */
        const size_t wb = cl_k_row_bytes(wt, n), ab = cl_k_row_bytes(at, n);
        for (int rep = 0; rep < 20; rep++) {
            uint8_t *w = malloc(wb), *a = malloc(ab);
            for (size_t i = 0; i < wb; i++)
                w[i] = (uint8_t)t_rand32();
            const uint16_t one = 0x3c00;
            switch (wt) {
            case CL_GGML_Q8_0:
                for (size_t b = 0; b < n / 32; b++) {
                    struct cl_k_block_q8_0 *x = (struct cl_k_block_q8_0 *)w + b;
                    x->d = one;
                    for (int j = 0; j < 32; j++)
                        x->qs[j] = (int8_t)t_rint(-127, 127);
                }
                break;
            case CL_GGML_Q4_0:
                for (size_t b = 0; b < n / 32; b++)
                    ((struct cl_k_block_q4_0 *)w)[b].d = one;
                break;
            case CL_GGML_Q5_0:
                for (size_t b = 0; b < n / 32; b++)
                    ((struct cl_k_block_q5_0 *)w)[b].d = one;
                break;
            case CL_GGML_Q4_1:
                for (size_t b = 0; b < n / 32; b++)
                    ((struct cl_k_block_q4_1 *)w)[b].d = ((struct cl_k_block_q4_1 *)w)[b].m = one;
                break;
            case CL_GGML_Q5_1:
                for (size_t b = 0; b < n / 32; b++)
                    ((struct cl_k_block_q5_1 *)w)[b].d = ((struct cl_k_block_q5_1 *)w)[b].m = one;
                break;
            case CL_GGML_Q4_K:
                for (size_t b = 0; b < n / 256; b++)
                    ((struct cl_k_block_q4_k *)w)[b].d = ((struct cl_k_block_q4_k *)w)[b].dmin = one;
                break;
            case CL_GGML_Q5_K:
                for (size_t b = 0; b < n / 256; b++)
                    ((struct cl_k_block_q5_k *)w)[b].d = ((struct cl_k_block_q5_k *)w)[b].dmin = one;
                break;
            case CL_GGML_Q6_K:
                for (size_t b = 0; b < n / 256; b++) {
                    struct cl_k_block_q6_k *x = (struct cl_k_block_q6_k *)w + b;
                    x->d = one;
                    for (int j = 0; j < 16; j++)
                        x->scales[j] = (int8_t)t_rint(-60, 60);
                }
                break;
            default: fail();
            }
            if (at == CL_GGML_Q8_K) {
                for (size_t b = 0; b < n / 256; b++) {
                    struct cl_k_block_q8_k *y = (struct cl_k_block_q8_k *)a + b;
                    y->d = 1.0f;
                    for (int j = 0; j < 256; j++)
                        y->qs[j] = (int8_t)t_rint(-16, 16);
                    for (int g = 0; g < 16; g++) {
                        int sum = 0;
                        for (int j = 0; j < 16; j++)
                            sum += y->qs[16 * g + j];
                        y->bsums[g] = (int16_t)sum;
                    }
                }
            } else if (at == CL_GGML_Q8_1) {
                for (size_t b = 0; b < n / 32; b++) {
                    struct cl_k_block_q8_1 *y = (struct cl_k_block_q8_1 *)a + b;
                    int sum = 0;
                    y->d = one;
                    for (int j = 0; j < 32; j++) {
                        y->qs[j] = (int8_t)t_rint(-16, 16);
                        sum += y->qs[j];
                    }
                    y->s = cl_k_fp32_to_fp16((float)sum);
                }
            } else {
                for (size_t b = 0; b < n / 32; b++) {
                    struct cl_k_block_q8_0 *y = (struct cl_k_block_q8_0 *)a + b;
                    y->d = one;
                    for (int j = 0; j < 32; j++)
                        y->qs[j] = (int8_t)t_rint(-16, 16);
                }
            }
            /* the dequantized dot in double is the exact answer */
            float *dx = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
            assert_ok(cl_k_dequantize_row(wt, w, dx, n));
            assert_ok(cl_k_dequantize_row(at, a, dy, n));
            double exact = 0;
            for (size_t i = 0; i < n; i++)
                exact += (double)dx[i] * dy[i];
            for (enum cl_cpu_level lvl = CL_CPU_SCALAR; lvl <= top; lvl++) {
                cl_cpu_set_level(lvl);
                float got = cl_k_vec_dot(wt, w, a, n), mm = 0.0f;
                assert_ok(cl_k_matmul_rows(wt, w, wb, 0, 1, a, ab, 1, n, &mm, 1));
                if (!(got == (float)exact && mm == got))
                    fail_msg("%s %s: %.1f / %.1f vs exact %.1f", cl_ggml_type_info(wt)->name, cl_cpu_level_name(lvl),
                             got, mm, exact);
            }
            cl_cpu_set_level(CL_CPU_NONE);
            free(dx);
            free(dy);
            free(w);
            free(a);
        }
    }
}

/* ------------------------------------------------------------ float helpers */

static void test_f32_helpers(void **state)
{
    (void)state;
    float a[37], b[37], c[37];
    for (int i = 0; i < 37; i++) {
        a[i] = (float)i * 0.25f - 3.0f;
        b[i] = (float)(i % 5) - 2.0f;
    }
    double want = 0;
    for (int i = 0; i < 37; i++)
        want += (double)a[i] * b[i];
    assert_true(fabs(cl_k_dot_f32(a, b, 37) - want) < 1e-4);
    assert_true(cl_k_dot_f32(a, b, 0) == 0.0f);

    memcpy(c, a, sizeof(c));
    cl_k_axpy_f32(c, 2.0f, b, 37);
    for (int i = 0; i < 37; i++)
        assert_true(c[i] == a[i] + 2.0f * b[i]);
    cl_k_scale_f32(c, 0.5f, 37);
    cl_k_add_f32(c, a, 37);
    cl_k_mul_f32(c, b, 37);
    for (int i = 0; i < 37; i++)
        assert_true(fabsf(c[i] - ((a[i] + 2.0f * b[i]) * 0.5f + a[i]) * b[i]) < 1e-5f);

    float s[5] = {1.0f, 2.0f, 3.0f, 4.0f, -1e30f};
    float mx = cl_k_softmax_f32(s, 5);
    assert_true(mx == 4.0f);
    double tot = 0;
    for (int i = 0; i < 5; i++)
        tot += s[i];
    assert_true(fabs(tot - 1.0) < 1e-6);
    assert_true(fabsf(s[3] - 0.6439142598879722f) < 1e-6f);
    assert_true(s[4] == 0.0f);
    assert_true(cl_k_softmax_f32(s, 0) == -INFINITY);

    float r[4] = {1.0f, -2.0f, 3.0f, -4.0f}, w[4] = {1.0f, 2.0f, 0.5f, 1.0f}, o[4];
    cl_k_rmsnorm_f32(o, r, NULL, 4, 0.0f);
    float inv = 1.0f / sqrtf(7.5f);
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(o[i] - r[i] * inv) < 1e-6f);
    cl_k_rmsnorm_f32(r, r, w, 4, 1e-5f); /* in place with weights */
    inv = 1.0f / sqrtf(7.5f + 1e-5f);
    assert_true(fabsf(r[1] - (-2.0f * inv * 2.0f)) < 1e-6f);

    float g[6] = {-20.0f, -1.0f, 0.0f, 1.0f, 3.0f, 12.0f}, ge[6], gg[6], si[6];
    cl_k_gelu_f32(ge, g, 6);
    cl_k_gelu_ggml_f32(gg, g, 6);
    cl_k_silu_f32(si, g, 6);
    assert_true(fabsf(ge[3] - 0.8411920f) < 1e-6f);
    assert_true(fabsf(ge[1] + 0.1588080f) < 1e-6f);
    assert_true(ge[2] == 0.0f && gg[2] == 0.0f);
    assert_true(gg[0] == 0.0f && gg[5] == 12.0f);
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(gg[i] - ge[i]) <= 2e-3f * (1.0f + fabsf(ge[i])));
    /* ggml table semantics: the result is an fp16 value */
    assert_true(cl_k_fp16_to_fp32(cl_k_fp32_to_fp16(gg[3])) == gg[3]);
    assert_true(fabsf(si[3] - 0.7310586f) < 1e-6f);
    assert_true(si[2] == 0.0f);
    assert_true(fabsf(si[0]) < 1e-7f);

    float u[6] = {1, 2, 3, 4, 5, 6}, y[6];
    cl_k_swiglu_f32(y, g, u, 6);
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(y[i] - si[i] * u[i]) < 1e-5f);
    cl_k_geglu_ggml_f32(y, g, u, 6);
    for (int i = 0; i < 6; i++)
        assert_true(y[i] == gg[i] * u[i]);
    cl_k_geglu_f32(y, g, u, 6);
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(y[i] - ge[i] * u[i]) < 1e-5f);

    /* SIMD and scalar helpers agree (axpy may differ by FMA rounding) */
    enum { N = 1001 };
    float *xa = malloc(N * sizeof(float)), *xb = malloc(N * sizeof(float));
    float *ya = malloc(N * sizeof(float)), *yb = malloc(N * sizeof(float));
    uint16_t *h = malloc(N * sizeof(uint16_t));
    t_fill(xa, N, 1.0f);
    t_fill(xb, N, 1.0f);
    cl_k_fp32_to_fp16_row(xb, h, N);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t len = 0; len <= N; len += len < 40 ? 1 : 321) {
            float *out[2];
            for (int l = 0; l < 2; l++) {
                cl_cpu_set_level(l == 0 ? CL_CPU_SCALAR : CL_CPU_NONE);
                float *dst = l == 0 ? ya : yb;
                memcpy(dst, xa, len * sizeof(float));
                if (pass == 0) {
                    cl_k_axpy_f32(dst, 0.75f, xb, len);
                    cl_k_axpy_f16(dst, -0.5f, h, len);
                    cl_k_scale_f32(dst, 1.5f, len);
                } else {
                    cl_k_add_f32(dst, xb, len);
                    cl_k_mul_f32(dst, xb, len);
                }
                out[l] = dst;
            }
            cl_cpu_set_level(CL_CPU_NONE);
            for (size_t i = 0; i < len; i++)
                assert_true(fabsf(out[0][i] - out[1][i]) <= 1e-6f * (1.0f + fabsf(out[0][i])));
            if (pass == 1)
                assert_memory_equal(out[0], out[1], len * sizeof(float));
        }
    }
    /* axpy_f16 matches the conversion it promises */
    memset(ya, 0, N * sizeof(float));
    cl_k_axpy_f16(ya, 2.0f, h, N);
    for (int i = 0; i < N; i++)
        assert_true(ya[i] == 2.0f * cl_k_fp16_to_fp32(h[i]));
    free(xa);
    free(xb);
    free(ya);
    free(yb);
    free(h);
}


/* ------------------------------------------------------------ reference GGUF cross-check */

/* Just enough GGUF walking (test only) to find tensors by name. */
struct t_tensor {
    char name[96];
    uint32_t type;
    uint64_t ne0, ne1;
    const uint8_t *data;
};

struct t_gguf {
    struct cl_buf file;
    struct t_tensor *t;
    size_t n;
};

static cl_err t_str(struct cl_cursor *c, const uint8_t **p, uint64_t *len)
{
    cl_err rc = cl_cursor_u64le(c, len);
    if (rc != CL_OK)
        return rc;
    if (*len > cl_cursor_left(c))
        return CL_E_CORE_TRUNCATED;
    return cl_cursor_bytes(c, (size_t)*len, p);
}

static cl_err t_skip_val(struct cl_cursor *c, uint32_t type, uint32_t *u32out)
{
    static const uint8_t sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type > 12)
        return CL_E_CORE_INVALID_ARG;
    if (type == 8) {
        const uint8_t *p;
        uint64_t len;
        return t_str(c, &p, &len);
    }
    if (type == 9) {
        uint32_t et;
        uint64_t cnt;
        cl_err rc = cl_cursor_u32le(c, &et);
        if (rc == CL_OK)
            rc = cl_cursor_u64le(c, &cnt);
        for (uint64_t i = 0; rc == CL_OK && i < cnt; i++)
            rc = t_skip_val(c, et, NULL);
        return rc;
    }
    if (type == 4 && u32out)
        return cl_cursor_u32le(c, u32out);
    return cl_cursor_skip(c, sz[type]);
}

static void t_gguf_load(const char *path, struct t_gguf *g)
{
    memset(g, 0, sizeof(*g));
    cl_buf_init(&g->file, 64u << 20, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 64u << 20, &g->file));
    struct cl_cursor c;
    cl_cursor_init(&c, g->file.data, g->file.len);
    uint32_t magic, version, align = 32;
    uint64_t nt, nkv;
    assert_ok(cl_cursor_u32le(&c, &magic));
    assert_int_equal(magic, 0x46554747);
    assert_ok(cl_cursor_u32le(&c, &version));
    assert_ok(cl_cursor_u64le(&c, &nt));
    assert_ok(cl_cursor_u64le(&c, &nkv));
    assert_true(nt < 10000 && nkv < 10000);
    for (uint64_t i = 0; i < nkv; i++) {
        const uint8_t *k;
        uint64_t klen;
        uint32_t type, v = 0;
        assert_ok(t_str(&c, &k, &klen));
        assert_ok(cl_cursor_u32le(&c, &type));
        assert_ok(t_skip_val(&c, type, &v));
        if (klen == 17 && !memcmp(k, "general.alignment", 17))
            align = v;
    }
    g->t = calloc((size_t)nt, sizeof(*g->t));
    g->n = (size_t)nt;
    uint64_t *off = calloc((size_t)nt, sizeof(uint64_t));
    for (size_t i = 0; i < g->n; i++) {
        const uint8_t *nm;
        uint64_t nlen, dim;
        uint32_t nd;
        assert_ok(t_str(&c, &nm, &nlen));
        assert_true(nlen < sizeof(g->t[i].name));
        memcpy(g->t[i].name, nm, (size_t)nlen);
        assert_ok(cl_cursor_u32le(&c, &nd));
        assert_true(nd >= 1 && nd <= 4);
        g->t[i].ne1 = 1;
        for (uint32_t d = 0; d < nd; d++) {
            assert_ok(cl_cursor_u64le(&c, &dim));
            if (d == 0)
                g->t[i].ne0 = dim;
            else
                g->t[i].ne1 *= dim;
        }
        assert_ok(cl_cursor_u32le(&c, &g->t[i].type));
        assert_ok(cl_cursor_u64le(&c, &off[i]));
    }
    size_t base = (c.off + align - 1) / align * align;
    for (size_t i = 0; i < g->n; i++) {
        size_t bytes = cl_k_row_bytes(g->t[i].type, (size_t)g->t[i].ne0) * (size_t)g->t[i].ne1;
        assert_true(bytes > 0 && base + off[i] + bytes <= g->file.len);
        g->t[i].data = g->file.data + base + off[i];
    }
    free(off);
}

static void t_gguf_free(struct t_gguf *g)
{
    cl_buf_free(&g->file);
    free(g->t);
}

static const struct t_tensor *t_find(const struct t_gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n; i++)
        if (!strcmp(g->t[i].name, name))
            return &g->t[i];
    return NULL;
}

/* The Q8_0/Q4_0 reference models were quantized from the F32 ones by
 * gguf-py (same algorithm as ggml's _ref quantizers): our quantizer must
 * reproduce every byte. Also checks that vec_dot on those real rows agrees
 * across SIMD paths. */
static void test_reference_quantization(void **state)
{
    (void)state;
    static const char *models[] = {"tiny-llama", "tiny-gemma3"};
    static const char *qnames[] = {"q8_0", "q4_0"};
    static const uint32_t qtypes[] = {CL_GGML_Q8_0, CL_GGML_Q4_0};
    char path[512], rel[128];
    size_t checked = 0;
    for (size_t m = 0; m < 2; m++) {
        snprintf(rel, sizeof(rel), "models/%s-f32.gguf", models[m]);
        CL_REFERENCE(rel, path);
        struct t_gguf f32;
        t_gguf_load(path, &f32);
        for (size_t q = 0; q < 2; q++) {
            snprintf(rel, sizeof(rel), "models/%s-%s.gguf", models[m], qnames[q]);
            CL_REFERENCE(rel, path);
            struct t_gguf qg;
            t_gguf_load(path, &qg);
            for (size_t i = 0; i < f32.n; i++) {
                const struct t_tensor *src = &f32.t[i];
                if (src->type != CL_GGML_F32 || src->ne1 == 1)
                    continue;
                const struct t_tensor *dst = t_find(&qg, src->name);
                assert_non_null(dst);
                assert_int_equal(dst->type, qtypes[q]);
                size_t n = (size_t)src->ne0, rb = cl_k_row_bytes(qtypes[q], n);
                uint8_t *row = malloc(rb);
                for (uint64_t r = 0; r < src->ne1; r++) {
                    assert_ok(cl_k_quantize_row(qtypes[q], (const float *)src->data + r * n, row, n));
                    if (memcmp(row, dst->data + r * rb, rb))
                        fail_msg("%s %s row %llu differs from the reference file", qnames[q], src->name,
                                 (unsigned long long)r);
                }
                free(row);
                checked++;
            }
            t_gguf_free(&qg);
        }
        t_gguf_free(&f32);
    }
    assert_true(checked >= 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known),
        cmocka_unit_test(test_fp16_vs_f16c),
        cmocka_unit_test(test_fp16_rows),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_known_q4_0_q8_0),
        cmocka_unit_test(test_known_q8_k),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_vec_dot_vs_dequant),
        cmocka_unit_test(test_vec_dot_vs_float),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_simd_vs_scalar),
        cmocka_unit_test(test_simd_integer_exact),
        cmocka_unit_test(test_matmul_batch_exact),
        cmocka_unit_test(test_rows16),
        cmocka_unit_test(test_f32_helpers),
        cmocka_unit_test(test_reference_quantization),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
