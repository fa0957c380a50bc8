/* Images for run and bench, and `mkmodel --mmproj`. Pixels and embeddings
 * are patient data: they live in secure memory and are never printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_vision.h"
#include "cloister/buf.h"
#include "cloister/log.h"
#include "cloister/file.h"
#include "cloister/image.h"
#include "cloister/infer/kernels.h"
#include "cloister/infer/vision_mk.h"
#include "cloister/secmem.h"

bool cl_cli_images_add(const char *cmd, struct cl_cli_images *im, const char *path, bool raw)
{
    if (im->n >= CL_CLI_MAX_IMAGES) {
        cl_cli_usage_error(cmd, "at most %u images", CL_CLI_MAX_IMAGES);
        return false;
    }
    im->files[im->n] = path;
    im->raw[im->n] = raw;
    im->n++;
    return true;
}

void cl_cli_images_free(struct cl_cli_images *im)
{
    for (size_t i = 0; i < CL_CLI_MAX_IMAGES; i++)
        cl_secmem_free(im->embd[i]);
    cl_vision_free(im->v);
    cl_gguf_free(im->g);
    memset(im, 0, sizeof(*im));
}

/* The planar float tensor of one image file (3*S*S floats in secure memory). */
static cl_err cl_cli_image_pixels(const struct cl_vision_hparams *hp, const char *path, bool raw, float *px)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    const size_t n = 3u * hp->image_size * hp->image_size;
    struct cl_image img = {0};
    struct cl_image_limits lim;
    cl_image_limits_default(&lim);
    cl_buf_init(&b, raw ? (size_t)64 << 20 : lim.max_bytes, CL_BUF_SECURE);
    CL_GUARD(cl_file_read(path, raw ? (size_t)64 << 20 : lim.max_bytes, &b));
    if (raw) {
        CL_ENSURE_D(b.len == n * sizeof(float), CL_E_INFER_VISION_MISMATCH,
                    "preprocessed tensor has %zu bytes, the projector needs %zu (3x%ux%u float32)", b.len,
                    n * sizeof(float), hp->image_size, hp->image_size);
        memcpy(px, b.data, b.len);
    } else {
        /* PNG, JPEG or DICOM, with the default size limits checked before any pixel allocation */
        CL_GUARD(cl_image_decode(b.data, b.len, &lim, &img));
        CL_GUARD(cl_image_preprocess(&img, hp->image_size, hp->mean, hp->std, px));
    }
out:
    cl_image_free(&img);
    cl_buf_free(&b);
    return rc;
}

int cl_cli_images_encode(const char *cmd, struct cl_cli_images *im, const struct cl_model *m, struct cl_pool *pool,
                         bool synthetic)
{
    cl_err rc = CL_OK;
    float *px = NULL;
    const char *what = "reading projector file";
    if ((rc = cl_gguf_open_file(im->mmproj, &im->g)) != CL_OK)
        return cl_cli_fail(cmd, what, rc);
    what = "loading projector";
    CL_GUARD(cl_vision_load(im->g, &im->v));
    CL_GUARD(cl_vision_check_model(im->v, m));
    const struct cl_vision_hparams *hp = cl_vision_hparams(im->v);
    const size_t n_px = 3u * hp->image_size * hp->image_size, n_out = (size_t)hp->n_tokens * hp->proj_dim;
    CL_GUARD(cl_secmem_alloc(n_px * sizeof(float), (void **)&px));
    size_t count = im->n;
    if (count == 0 && synthetic)
        count = 1;
    uint64_t t0 = cl_now_us();
    for (size_t i = 0; i < count; i++) {
        what = "reading image";
        if (im->n == 0) {
            /* a smooth gray pattern in [-1, 1], the same in every channel (as an X-ray) */
            for (size_t y = 0; y < hp->image_size; y++)
                for (size_t x = 0; x < hp->image_size; x++) {
                    float v = (float)((x * 3 + y * 5) % 256) / 127.5f - 1.0f;
                    for (size_t c = 0; c < 3; c++)
                        px[(c * hp->image_size + y) * hp->image_size + x] = v;
                }
        } else {
            CL_GUARD(cl_cli_image_pixels(hp, im->files[i], im->raw[i], px));
        }
        what = "encoding image";
        CL_GUARD(cl_secmem_alloc(n_out * sizeof(float), (void **)&im->embd[i]));
        CL_GUARD(cl_vision_encode(im->v, pool, px, n_px, im->embd[i], n_out));
        im->media[i] = (struct cl_model_media){im->embd[i], hp->n_tokens, hp->proj_dim};
    }
    im->encode_ms = (double)(cl_now_us() - t0) / 1000.0;
    im->n_media = count;
out:
    cl_secmem_free(px);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, what, rc);
    return CL_EXIT_OK;
}

/* ---- mkmodel --mmproj ---- */

void cl_cmd_mkmodel_mmproj_help(FILE *f)
{
    fprintf(f, "usage: cloister mkmodel --mmproj --shape SPEC --type f32|f16|q8_0 -o FILE.gguf [--seed N]\n"
               "                        [-t THREADS]\n\n"
               "Writes a random-weight vision projector (llama.cpp's mmproj GGUF, Gemma 3\n"
               "projector: SigLIP encoder, average pooling, soft-embedding norm, input\n"
               "projection), for benchmarks and tests.\n"
               "SPEC: tiny (the reference mmproj: 224 px, patch 14, width 32, 2 layers) or\n"
               "medgemma-4b (SigLIP so400m: 896 px, patch 14, width 1152, 27 layers, 16 heads,\n"
               "ff 4304, projected to 2560, scale 4 -> 256 image tokens), optionally followed\n"
               "by ,key=value overrides (image patch embd layers heads ff proj scale).\n"
               "TYPE: the matrices' type; norms and biases stay f32, the patch kernel,\n"
               "positions and projection are f16 unless TYPE is f32. Q8_0 falls back to f16\n"
               "for rows that are not a multiple of 32.\n");
}

int cl_cmd_mkmodel_mmproj(int argc, char **argv)
{
    const char *cmd = "mkmodel", *shape_s = NULL, *type_s = NULL, *out = NULL;
    uint64_t seed = 1, threads = 2;
    enum { O_MMPROJ = 256, O_SHAPE, O_TYPE, O_SEED };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_THREADS,
        {"mmproj", no_argument, NULL, O_MMPROJ},
        {"shape", required_argument, NULL, O_SHAPE},
        {"type", required_argument, NULL, O_TYPE},
        {"seed", required_argument, NULL, O_SEED},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args a = {.cmd = cmd, .help = cl_cmd_mkmodel_mmproj_help, .shortopts = "o:t:", .longopts = opts,
                            .threads = &threads, .max_threads = CL_POOL_MAX_THREADS};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case O_MMPROJ: break;
        case O_SHAPE: shape_s = optarg; break;
        case O_TYPE: type_s = optarg; break;
        case 'o': out = optarg; break;
        case O_SEED:
            if (!cl_cli_u64_opt(cmd, optarg, 0, UINT64_MAX, &seed, "--seed needs a number"))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!shape_s || !type_s || !out)
        return cl_cli_usage_error(cmd, "--mmproj needs --shape, --type and -o");
    struct cl_vision_mk_opts o = {.seed = seed, .threads = (unsigned)threads};
    if (!strcmp(type_s, "f32"))
        o.type = CL_GGML_F32;
    else if (!strcmp(type_s, "f16"))
        o.type = CL_GGML_F16;
    else if (!strcmp(type_s, "q8_0"))
        o.type = CL_GGML_Q8_0;
    else
        return cl_cli_usage_error(cmd, "--type for a projector must be f32, f16 or q8_0");
    cl_err rc = cl_vision_shape_parse(shape_s, &o.shape);
    if (rc != CL_OK) {
        char b[256];
        return cl_cli_usage_error(cmd, "--shape: %s", cl_err_format(rc, b, sizeof(b)));
    }
    cl_gguf_writer *w = NULL;
    rc = cl_vision_mk(&o, &w);
    if (rc == CL_OK)
        rc = cl_gguf_writer_write_file(w, out);
    cl_gguf_writer_free(w);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, "writing projector", rc);
    return CL_EXIT_OK;
}
