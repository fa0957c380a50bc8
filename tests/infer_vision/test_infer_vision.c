/* Vision encoder against llama.cpp's reference dumps ($CLOISTER_REFERENCE):
 * image embeddings from the exact preprocessed input tensors, projector
 * loading errors on hand-broken files, and the random projector writer. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>

#include "cloister/buf.h"
#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/infer/kernels.h"
#include "cloister/infer/vision.h"
#include "cloister/infer/vision_mk.h"

static const char *const cl_t_images[2] = {"00000001_000", "00027426_000"};
static const char *const cl_t_models[3] = {"tiny-gemma3-f32", "tiny-gemma3-q8_0", "tiny-gemma3-q4_0"};

/* The preprocessed input tensor of one reference image (caller frees). */
static float *cl_t_input(const char *image, size_t *n)
{
    char rel[256], path[1024];
    struct cl_buf b;
    snprintf(rel, sizeof(rel), "tiny/images/%s.mmproj-tiny-gemma3-f32.input.f32", image);
    CL_REFERENCE(rel, path);
    cl_buf_init(&b, 1u << 24, 0);
    assert_ok(cl_file_read(path, 1u << 24, &b));
    assert_int_equal(b.len % 4, 0);
    float *f = malloc(b.len);
    assert_non_null(f);
    memcpy(f, b.data, b.len);
    *n = b.len / 4;
    cl_buf_free(&b);
    return f;
}

static void test_encode_reference(void **state)
{
    (void)state;
    char path[1024];
    CL_REFERENCE("models/mmproj-tiny-gemma3-f32.gguf", path);
    cl_gguf *g = NULL;
    struct cl_vision *v = NULL;
    struct cl_pool *pool = NULL;
    assert_ok(cl_gguf_open_file(path, &g));
    assert_ok(cl_vision_load(g, &v));
    assert_ok(cl_pool_new(2, &pool));
    const struct cl_vision_hparams *hp = cl_vision_hparams(v);
    assert_int_equal(hp->image_size, 224);
    assert_int_equal(hp->n_patches, 256);
    assert_int_equal(hp->n_tokens, 16);
    assert_int_equal(hp->proj_dim, 64);
    double max_err = 0.0;
    size_t n_ref = 0;
    for (size_t ii = 0; ii < 2; ii++) {
        size_t n = 0;
        float *px = cl_t_input(cl_t_images[ii], &n);
        float out[16 * 64], out1[16 * 64];
        assert_ok(cl_vision_encode(v, pool, px, n, out, 16 * 64));
        /* one thread gives the same numbers */
        assert_ok(cl_vision_encode(v, NULL, px, n, out1, 16 * 64));
        assert_memory_equal(out, out1, sizeof(out));
        for (size_t mi = 0; mi < 3; mi++) {
            char rel[256], rpath[1024];
            json_error_t je;
            snprintf(rel, sizeof(rel), "tiny/%s/IMG-%s.f32kv.json", cl_t_models[mi], cl_t_images[ii]);
            CL_REFERENCE(rel, rpath);
            json_t *root = json_load_file(rpath, 0, &je);
            assert_non_null(root);
            json_t *e = json_object_get(root, "image_embd");
            assert_int_equal(json_integer_value(json_object_get(root, "image_n_tokens")), 16);
            assert_int_equal(json_integer_value(json_object_get(root, "image_n_embd")), 64);
            assert_int_equal(json_array_size(e), 16);
            for (size_t r = 0; r < 16; r++) {
                json_t *row = json_array_get(e, r);
                assert_int_equal(json_array_size(row), 64);
                for (size_t c = 0; c < 64; c++) {
                    double want = json_number_value(json_array_get(row, c));
                    double d = fabs((double)out[r * 64 + c] - want);
                    if (d > max_err)
                        max_err = d;
                    if (d > 5e-3)
                        fail_msg("%s %s row %zu col %zu: %.6f, reference %.6f", cl_t_models[mi], cl_t_images[ii], r,
                                 c, (double)out[r * 64 + c], want);
                }
            }
            n_ref++;
            json_decref(root);
        }
        /* wrong sizes and non-finite pixels are refused */
        assert_err(cl_vision_encode(v, pool, px, n - 1, out, 16 * 64), CL_E_INFER_VISION_MISMATCH);
        assert_err(cl_vision_encode(v, pool, px, n, out, 16 * 63), CL_E_INFER_VISION_MISMATCH);
        px[1234] = NAN;
        assert_err(cl_vision_encode(v, pool, px, n, out, 16 * 64), CL_E_INFER_VISION_MISMATCH);
        free(px);
    }
    print_message("image_embd: %zu references, max |d| %.3g (tolerance 5e-3)\n", n_ref, max_err);
    cl_pool_free(pool);
    cl_vision_free(v);
    cl_gguf_free(g);
}

/* Writes a random projector in memory and loads it. */
static cl_err cl_t_mk_load(const char *shape, uint32_t type, const char *omit, uint8_t **buf, cl_gguf **g,
                           struct cl_vision **v)
{
    struct cl_vision_mk_opts o = {.type = type, .seed = 3, .threads = 2, .omit = omit};
    cl_gguf_writer *w = NULL;
    size_t len = 0;
    assert_ok(cl_vision_shape_parse(shape, &o.shape));
    assert_ok(cl_vision_mk(&o, &w));
    assert_ok(cl_gguf_writer_write_memory(w, buf, &len));
    cl_gguf_writer_free(w);
    return cl_vision_open_memory(*buf, len, g, v);
}

static void test_mk_types(void **state)
{
    (void)state;
    static const uint32_t types[] = {CL_GGML_F32, CL_GGML_F16, CL_GGML_Q8_0};
    float ref[16 * 64];
    for (size_t i = 0; i < 3; i++) {
        uint8_t *buf = NULL;
        cl_gguf *g = NULL;
        struct cl_vision *v = NULL;
        assert_ok(cl_t_mk_load("tiny,layers=3", types[i], NULL, &buf, &g, &v));
        const struct cl_vision_hparams *hp = cl_vision_hparams(v);
        assert_int_equal(hp->n_layer, 3);
        assert_int_equal(hp->n_tokens, 16);
        size_t n = 3 * 224 * 224;
        float *px = malloc(n * sizeof(float));
        assert_non_null(px);
        for (size_t k = 0; k < n; k++)
            px[k] = (float)((k * 7919) % 255) / 127.5f - 1.0f;
        float out[16 * 64];
        assert_ok(cl_vision_encode(v, NULL, px, n, out, 16 * 64));
        double maxd = 0.0, maxv = 0.0;
        for (size_t k = 0; k < 16 * 64; k++) {
            assert_true(isfinite(out[k]));
            if (i == 0)
                ref[k] = out[k];
            maxd = fmax(maxd, fabs((double)out[k] - ref[k]));
            maxv = fmax(maxv, fabs((double)ref[k]));
        }
        /* the same random weights at lower precision stay close to F32 */
        assert_true(maxd <= 0.05 * maxv);
        free(px);
        cl_vision_free(v);
        cl_gguf_free(g);
        free(buf);
    }
}

static void test_load_errors(void **state)
{
    (void)state;
    struct {
        const char *shape;
        const char *omit;
        cl_err want;
    } cases[] = {
        {"tiny", "v.blk.1.attn_k.bias", CL_E_INFER_MODEL_TENSOR},
        {"tiny", "v.post_ln.weight", CL_E_INFER_MODEL_TENSOR},
        {"tiny", "mm.input_projection.weight", CL_E_INFER_MODEL_TENSOR},
        {"tiny", "v.position_embd.weight", CL_E_INFER_MODEL_TENSOR},
        {"tiny", "clip.vision.image_size", CL_E_INFER_MODEL_KEY},
        {"tiny", "clip.vision.attention.layer_norm_epsilon", CL_E_INFER_MODEL_KEY},
        {"tiny", "clip.vision.block_count", CL_E_INFER_MODEL_KEY},
        {"tiny", "clip.projector_type", CL_E_INFER_MODEL_KEY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *buf = NULL;
        cl_gguf *g = NULL;
        struct cl_vision *v = NULL;
        cl_err rc = cl_t_mk_load(cases[i].shape, CL_GGML_F32, cases[i].omit, &buf, &g, &v);
        if (rc != cases[i].want)
            fail_msg("case %zu: %s, expected %s", i, cl_err_name(rc) ? cl_err_name(rc) : "OK",
                     cl_err_name(cases[i].want));
        assert_null(v);
        assert_null(g);
        assert_true(strlen(cl_err_detail()) > 0);
        free(buf);
    }
    /* scale_factor defaults to 4 when absent (llama.cpp's gemma3 default) */
    uint8_t *buf = NULL;
    cl_gguf *g = NULL;
    struct cl_vision *v = NULL;
    assert_ok(cl_t_mk_load("tiny", CL_GGML_F32, "clip.vision.projector.scale_factor", &buf, &g, &v));
    assert_int_equal(cl_vision_hparams(v)->scale_factor, 4);
    cl_vision_free(v);
    cl_gguf_free(g);
    free(buf);
    v = NULL;
    g = NULL;

    /* a text model is not a projector; a projector is not a text model's match unless widths agree */
    char path[1024];
    CL_REFERENCE("models/tiny-gemma3-f32.gguf", path);
    assert_ok(cl_gguf_open_file(path, &g));
    assert_err(cl_vision_load(g, &v), CL_E_INFER_VISION_PROJECTOR);
    assert_null(v);
    cl_gguf_free(g);

    /* shapes */
    struct cl_vision_shape sh;
    assert_ok(cl_vision_shape_parse("medgemma-4b", &sh));
    assert_int_equal(sh.image_size, 896);
    assert_int_equal(sh.n_embd, 1152);
    assert_int_equal(sh.n_layer, 27);
    assert_int_equal(sh.n_ff, 4304);
    assert_int_equal(sh.proj_dim, 2560);
    assert_int_equal((sh.image_size / sh.patch_size / sh.scale_factor) * (sh.image_size / sh.patch_size / sh.scale_factor), 256);
    assert_ok(cl_vision_shape_parse("tiny,layers=1,proj=128", &sh));
    assert_int_equal(sh.n_layer, 1);
    assert_int_equal(sh.proj_dim, 128);
    assert_err(cl_vision_shape_parse("huge", &sh), CL_E_CORE_INVALID_ARG);
    assert_err(cl_vision_shape_parse("tiny,bogus=1", &sh), CL_E_CORE_INVALID_ARG);
    assert_err(cl_vision_shape_parse("tiny,patch=15", &sh), CL_E_INFER_MODEL_HPARAMS);
    assert_err(cl_vision_shape_parse("tiny,heads=3", &sh), CL_E_INFER_MODEL_HPARAMS);
    assert_err(cl_vision_shape_parse("tiny,scale=3", &sh), CL_E_INFER_MODEL_HPARAMS);
    assert_err(cl_vision_shape_parse("tiny,layers=-1", &sh), CL_E_CORE_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_reference),
        cmocka_unit_test(test_mk_types),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
