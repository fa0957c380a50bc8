/* Vision encoder against llama.cpp's reference dumps ($CLOISTER_REFERENCE):
 * image embeddings from the exact preprocessed input tensors, projector
 * loading errors on hand-broken files, and the random projector writer. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/buf.h"
#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/chat.h"
#include "cloister/tokenizer.h"
#include "cloister/infer/answer.h"
#include "cloister/infer/kernels.h"
#include "cloister/infer/model.h"
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

/* The reference projector and its embeddings of both images. */
struct cl_t_vis {
    cl_gguf *g;
    struct cl_vision *v;
    struct cl_pool *pool;
    float embd[2][16 * 64];
};

static void cl_t_vis_open(struct cl_t_vis *tv)
{
    char path[1024];
    CL_REFERENCE("models/mmproj-tiny-gemma3-f32.gguf", path);
    assert_ok(cl_gguf_open_file(path, &tv->g));
    assert_ok(cl_vision_load(tv->g, &tv->v));
    assert_ok(cl_pool_new(2, &tv->pool));
    for (size_t ii = 0; ii < 2; ii++) {
        size_t n = 0;
        float *px = cl_t_input(cl_t_images[ii], &n);
        assert_ok(cl_vision_encode(tv->v, tv->pool, px, n, tv->embd[ii], 16 * 64));
        free(px);
    }
}

static void cl_t_vis_close(struct cl_t_vis *tv)
{
    cl_pool_free(tv->pool);
    cl_vision_free(tv->v);
    cl_gguf_free(tv->g);
}

static json_t *cl_t_ref(const char *model, const char *image)
{
    char rel[256], path[1024];
    json_error_t je;
    snprintf(rel, sizeof(rel), "tiny/%s/IMG-%s.f32kv.json", model, image);
    CL_REFERENCE(rel, path);
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        fail_msg("%s: %s", path, je.text);
    return root;
}

static void cl_t_ids(json_t *arr, int32_t *out, size_t *n, size_t cap)
{
    *n = json_array_size(arr);
    assert_true(*n <= cap);
    for (size_t i = 0; i < *n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
}

/* Feeds the reference prompt (text runs causally, the image block
 * non-causally) plus the reference tokens and compares every step's listed
 * logits; with greedy, decodes 24 tokens freely too. */
static void cl_t_check_text(struct cl_t_vis *tv, const char *model, double tol, bool greedy)
{
    char path[1024], rel[256];
    snprintf(rel, sizeof(rel), "models/%s.gguf", model);
    CL_REFERENCE(rel, path);
    cl_gguf *g = NULL;
    struct cl_model *m = NULL;
    assert_ok(cl_gguf_open_file(path, &g));
    assert_ok(cl_model_load(g, &m));
    assert_ok(cl_vision_check_model(tv->v, m));
    const size_t V = cl_model_hparams(m)->n_vocab;
    double max_err = 0.0;
    for (size_t ii = 0; ii < 2; ii++) {
        json_t *root = cl_t_ref(model, cl_t_images[ii]);
        int32_t all[256], gen[32];
        size_t n_prompt, n_gen;
        cl_t_ids(json_object_get(root, "prompt_tokens"), all, &n_prompt, 200);
        cl_t_ids(json_object_get(root, "generated_tokens"), gen, &n_gen, 32);
        memcpy(all + n_prompt, gen, n_gen * sizeof(int32_t));
        size_t n_all = n_prompt + n_gen;
        size_t p0 = (size_t)json_integer_value(json_object_get(root, "image_pos0"));
        assert_int_equal(p0, 17);
        for (size_t i = 0; i < n_all; i++)
            assert_true((all[i] < 0) == (i >= p0 && i < p0 + 16));
        float *logits = malloc(n_all * V * sizeof(float));
        assert_non_null(logits);
        struct cl_model_seq *s = NULL;
        struct cl_model_seq_params sp = {.n_ctx = 256};
        assert_ok(cl_model_seq_new_ex(m, &sp, tv->pool, &s));
        assert_ok(cl_model_seq_eval(s, all, p0, logits, true));
        assert_ok(cl_model_seq_eval_embd(s, tv->embd[ii], 16, true, NULL, false));
        assert_ok(cl_model_seq_eval(s, all + p0 + 16, n_all - p0 - 16, logits + (p0 + 16) * V, true));
        json_t *steps = json_object_get(root, "steps");
        assert_int_equal(json_array_size(steps), n_gen + 1);
        for (size_t i = 0; i < json_array_size(steps); i++) {
            json_t *st = json_array_get(steps, i);
            size_t pos = (size_t)json_integer_value(json_object_get(st, "pos"));
            assert_int_equal(pos, n_prompt - 1 + i);
            const float *l = logits + pos * V;
            json_t *top = json_object_get(st, "top");
            for (size_t k = 0; k < json_array_size(top); k++) {
                json_t *pair = json_array_get(top, k);
                int64_t id = json_integer_value(json_array_get(pair, 0));
                double want = json_number_value(json_array_get(pair, 1));
                double d = fabs((double)l[id] - want);
                max_err = fmax(max_err, d);
                if (d > tol)
                    fail_msg("%s IMG-%s step %zu token %lld: logit %.6f, reference %.6f", model, cl_t_images[ii], i,
                             (long long)id, (double)l[id], want);
            }
            int64_t am = json_integer_value(json_object_get(st, "argmax"));
            if (cl_model_argmax(l, V) != am)
                fail_msg("%s IMG-%s step %zu: argmax %d, reference %lld", model, cl_t_images[ii], i,
                         cl_model_argmax(l, V), (long long)am);
        }
        if (greedy) {
            cl_model_seq_reset(s);
            assert_ok(cl_model_seq_eval(s, all, p0, NULL, false));
            assert_ok(cl_model_seq_eval_embd(s, tv->embd[ii], 16, true, NULL, false));
            assert_ok(cl_model_seq_eval(s, all + p0 + 16, n_prompt - p0 - 16, logits, false));
            for (size_t i = 0; i < n_gen; i++) {
                int32_t t = cl_model_argmax(logits, V);
                if (t != gen[i])
                    fail_msg("%s IMG-%s greedy token %zu: %d, reference %d", model, cl_t_images[ii], i, t, gen[i]);
                assert_ok(cl_model_seq_eval(s, &t, 1, logits, false));
            }
        }
        cl_model_seq_free(s);
        free(logits);
        json_decref(root);
    }
    print_message("%s + image: 2x25 steps, max |dlogit| %.3g (tolerance %.3g)%s\n", model, max_err, tol,
                  greedy ? ", 2x24 greedy tokens identical" : "");
    cl_model_free(m);
    cl_gguf_free(g);
}

static void test_text_side(void **state)
{
    (void)state;
    struct cl_t_vis tv = {0};
    cl_t_vis_open(&tv);
    cl_t_check_text(&tv, "tiny-gemma3-f32", 3e-3, true);
    cl_t_check_text(&tv, "tiny-gemma3-q8_0", 0.1, false);
    cl_t_check_text(&tv, "tiny-gemma3-q4_0", 0.1, false);
    cl_t_vis_close(&tv);
}

/* The whole request through cl_model_answer: chat template, marker, pieces,
 * image block, greedy generation; then several images and bad requests. */
static void test_answer(void **state)
{
    (void)state;
    struct cl_t_vis tv = {0};
    cl_t_vis_open(&tv);
    char path[1024];
    CL_REFERENCE("models/tiny-gemma3-f32.gguf", path);
    cl_gguf *g = NULL;
    struct cl_model *m = NULL;
    cl_tokenizer *tok = NULL;
    assert_ok(cl_gguf_open_file(path, &g));
    assert_ok(cl_model_load(g, &m));
    assert_ok(cl_tokenizer_new(g, &tok));
    static const char content[] = CL_MODEL_MEDIA_MARKER "Describe this image.";
    struct cl_chat_msg msg = {"user", content, sizeof(content) - 1};
    for (size_t ii = 0; ii < 2; ii++) {
        json_t *root = cl_t_ref("tiny-gemma3-f32", cl_t_images[ii]);
        int32_t want_p[256], want_g[32], got[32];
        size_t n_p, n_g;
        cl_t_ids(json_object_get(root, "prompt_tokens"), want_p, &n_p, 256);
        cl_t_ids(json_object_get(root, "generated_tokens"), want_g, &n_g, 32);
        struct cl_model_media md = {tv.embd[ii], 16, 64};
        struct cl_model_request rq = {.tmpl = CL_CHAT_GEMMA, .msgs = &msg, .n_msgs = 1, .n_ctx = 256,
                                      .tokens = got, .tokens_cap = 32, .media = &md, .n_media = 1};
        rq.gen.sample.repeat_penalty = 1.0f;
        rq.gen.sample.top_p = 1.0f;
        rq.gen.max_tokens = (uint32_t)n_g;
        struct cl_model_answer ans = {0};
        assert_ok(cl_model_answer(m, tok, tv.pool, &rq, true, &ans));
        assert_int_equal(ans.n_prompt, n_p);
        assert_memory_equal(ans.prompt_tokens, want_p, n_p * sizeof(int32_t));
        assert_int_equal(ans.n_out, n_g);
        assert_memory_equal(got, want_g, n_g * sizeof(int32_t));
        cl_model_answer_free(&ans);
        json_decref(root);
    }
    /* two images in one request: 17 + (2 + 16 markers... ) positions, both blocks fed */
    {
        static const char two[] = "first " CL_MODEL_MEDIA_MARKER " then " CL_MODEL_MEDIA_MARKER " compare.";
        struct cl_chat_msg m2 = {"user", two, sizeof(two) - 1};
        struct cl_model_media md[2] = {{tv.embd[0], 16, 64}, {tv.embd[1], 16, 64}};
        int32_t got[8];
        struct cl_model_request rq = {.tmpl = CL_CHAT_GEMMA, .msgs = &m2, .n_msgs = 1, .tokens = got,
                                      .tokens_cap = 8, .media = md, .n_media = 2};
        rq.gen.sample.repeat_penalty = 1.0f;
        rq.gen.max_tokens = 4;
        struct cl_model_answer ans = {0};
        assert_ok(cl_model_answer(m, tok, tv.pool, &rq, true, &ans));
        size_t minus = 0;
        for (size_t i = 0; i < ans.n_prompt; i++)
            minus += ans.prompt_tokens[i] < 0;
        assert_int_equal(minus, 32);
        assert_int_equal(ans.n_out, 4);
        cl_model_answer_free(&ans);
        /* markers and images must agree */
        rq.n_media = 1;
        assert_err(cl_model_answer(m, tok, tv.pool, &rq, false, &ans), CL_E_CORE_INVALID_ARG);
        msg.content = content + strlen(CL_MODEL_MEDIA_MARKER);
        msg.content_len = sizeof(content) - 1 - strlen(CL_MODEL_MEDIA_MARKER);
        rq.msgs = &msg;
        assert_err(cl_model_answer(m, tok, tv.pool, &rq, false, &ans), CL_E_CORE_INVALID_ARG);
        msg.content = content;
        msg.content_len = sizeof(content) - 1;
        /* wrong width */
        md[0].n_embd = 32;
        assert_err(cl_model_answer(m, tok, tv.pool, &rq, false, &ans), CL_E_INFER_VISION_MISMATCH);
        md[0].n_embd = 64;
    }
    /* an image block larger than one batch cannot be non-causal; non-finite rows are refused */
    {
        struct cl_model_seq *s = NULL;
        struct cl_model_seq_params sp = {.n_ctx = 64, .n_ubatch = 8};
        assert_ok(cl_model_seq_new_ex(m, &sp, tv.pool, &s));
        assert_err(cl_model_seq_eval_embd(s, tv.embd[0], 16, true, NULL, false), CL_E_INFER_MODEL_CTX);
        assert_ok(cl_model_seq_eval_embd(s, tv.embd[0], 16, false, NULL, false));
        float bad[64] = {0};
        bad[3] = INFINITY;
        assert_err(cl_model_seq_eval_embd(s, bad, 1, true, NULL, false), CL_E_CORE_INVALID_ARG);
        cl_model_seq_free(s);
    }
    cl_tokenizer_free(tok);
    cl_model_free(m);
    cl_gguf_free(g);
    /* images on a llama model */
    CL_REFERENCE("models/tiny-llama-f32.gguf", path);
    assert_ok(cl_gguf_open_file(path, &g));
    assert_ok(cl_model_load(g, &m));
    assert_ok(cl_tokenizer_new(g, &tok));
    {
        struct cl_model_media md = {tv.embd[0], 16, 64};
        struct cl_model_request rq = {.tmpl = CL_CHAT_GEMMA, .msgs = &msg, .n_msgs = 1, .media = &md, .n_media = 1};
        rq.gen.max_tokens = 1;
        struct cl_model_answer ans = {0};
        assert_err(cl_model_answer(m, tok, tv.pool, &rq, false, &ans), CL_E_INFER_VISION_MISMATCH);
    }
    cl_tokenizer_free(tok);
    cl_model_free(m);
    cl_gguf_free(g);
    cl_t_vis_close(&tv);
}

static char *cl_t_exec(char *const *argv, int *status)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = read(fd[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

/* `cloister run --mmproj --image-f32 --json` gives llama-mtmd-cli's prompt and
 * tokens; `mkmodel --mmproj` writes a loadable projector; bad uses exit 2. */
static void test_cli(void **state)
{
    (void)state;
    const char *b = getenv("CLOISTER_BUILD_DIR");
    if (!b) {
        print_message("skipped: CLOISTER_BUILD_DIR is not set\n");
        skip();
    }
    char cli[1024], model[1024], mmproj[1024], img[1024], rel[256];
    snprintf(cli, sizeof(cli), "%s/src/cli/cloister", b);
    CL_REFERENCE("models/tiny-gemma3-f32.gguf", model);
    CL_REFERENCE("models/mmproj-tiny-gemma3-f32.gguf", mmproj);
    snprintf(rel, sizeof(rel), "tiny/images/%s.mmproj-tiny-gemma3-f32.input.f32", cl_t_images[1]);
    CL_REFERENCE(rel, img);
    int st = -1;
    {
        char *argv[] = {cli, "run", model, "--mmproj", mmproj, "--image-f32", img, "-p", "Describe this image.",
                        "-n", "24", "--ignore-eos", "--chat-template", "gemma", "--json", NULL};
        char *out = cl_t_exec(argv, &st);
        assert_int_equal(st, 0);
        json_error_t je;
        json_t *got = json_loads(out, 0, &je);
        assert_non_null(got);
        json_t *want = cl_t_ref("tiny-gemma3-f32", cl_t_images[1]);
        assert_true(json_equal(json_object_get(got, "prompt_tokens"), json_object_get(want, "prompt_tokens")));
        assert_true(json_equal(json_object_get(got, "tokens"), json_object_get(want, "generated_tokens")));
        assert_int_equal(json_integer_value(json_object_get(got, "image_tokens")), 16);
        json_decref(got);
        json_decref(want);
        free(out);
    }
    /* from the PNG itself (decoded and preprocessed by the image module): both references exactly */
    for (size_t ii = 0; ii < 2; ii++) {
        char png[1024];
        snprintf(rel, sizeof(rel), "images/chest-xray/%s.png", cl_t_images[ii]);
        CL_TESTDATA(rel, png);
        char *argv[] = {cli, "run", model, "--mmproj", mmproj, "--image", png, "-p", "Describe this image.",
                        "-n", "24", "--ignore-eos", "--json", NULL};
        char *out = cl_t_exec(argv, &st);
        assert_int_equal(st, 0);
        json_t *got = json_loads(out, 0, NULL);
        assert_non_null(got);
        json_t *want = cl_t_ref("tiny-gemma3-f32", cl_t_images[ii]);
        assert_true(json_equal(json_object_get(got, "prompt_tokens"), json_object_get(want, "prompt_tokens")));
        assert_true(json_equal(json_object_get(got, "tokens"), json_object_get(want, "generated_tokens")));
        json_decref(got);
        json_decref(want);
        free(out);
    }
    {
        /* not an image / a truncated PNG: a clear failure, exit 1 */
        char *bad[] = {cli, "run", model, "--mmproj", mmproj, "--image", model, "-p", "x", NULL};
        free(cl_t_exec(bad, &st));
        assert_int_equal(st, 1);
    }
    /* a written projector loads and runs with the tiny model */
    char tmp[] = "/tmp/cl-vision-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char proj[1100];
    snprintf(proj, sizeof(proj), "%s/p.gguf", tmp);
    {
        char *argv[] = {cli, "mkmodel", "--mmproj", "--shape", "tiny,layers=1", "--type", "q8_0", "-o", proj, NULL};
        free(cl_t_exec(argv, &st));
        assert_int_equal(st, 0);
        char *argv2[] = {cli, "run", model, "--mmproj", proj, "--image-f32", img, "--image-f32", img, "-p",
                         "A " CL_MODEL_MEDIA_MARKER " B " CL_MODEL_MEDIA_MARKER, "-n", "3", "--json", NULL};
        char *out = cl_t_exec(argv2, &st);
        assert_int_equal(st, 0);
        json_t *got = json_loads(out, 0, NULL);
        assert_non_null(got);
        assert_int_equal(json_integer_value(json_object_get(got, "image_tokens")), 32);
        json_decref(got);
        free(out);
    }
    /* usage and input errors */
    {
        char *bad1[] = {cli, "run", model, "--image-f32", img, "-p", "x", NULL};
        free(cl_t_exec(bad1, &st));
        assert_int_equal(st, 2);
        char *bad2[] = {cli, "run", model, "--mmproj", mmproj, "-p", "x", NULL};
        free(cl_t_exec(bad2, &st));
        assert_int_equal(st, 2);
        char *bad3[] = {cli, "run", model, "--mmproj", mmproj, "--image-f32", model, "-p", "x", NULL};
        free(cl_t_exec(bad3, &st));
        assert_int_equal(st, 1);
        /* a projector wider than the text model */
        char *mk[] = {cli, "mkmodel", "--mmproj", "--shape", "tiny,layers=1,proj=128", "--type", "f32", "-o", proj,
                      NULL};
        free(cl_t_exec(mk, &st));
        assert_int_equal(st, 0);
        char *bad4[] = {cli, "run", model, "--mmproj", proj, "--image-f32", img, "-p", "x", NULL};
        free(cl_t_exec(bad4, &st));
        assert_int_equal(st, 1);
        char *bad5[] = {cli, "mkmodel", "--mmproj", "--shape", "tiny", "--type", "q4_0", "-o", proj, NULL};
        free(cl_t_exec(bad5, &st));
        assert_int_equal(st, 2);
        char *help[] = {cli, "mkmodel", "--mmproj", "--help", NULL};
        char *out = cl_t_exec(help, &st);
        assert_int_equal(st, 0);
        assert_non_null(strstr(out, "medgemma-4b"));
        free(out);
    }
    unlink(proj);
    rmdir(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_reference),
        cmocka_unit_test(test_mk_types),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_text_side),
        cmocka_unit_test(test_answer),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
