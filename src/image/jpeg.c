/* JPEG through libjpeg-turbo. Strict: any libjpeg warning (premature end of data, corrupt entropy data,
 * extraneous bytes) fails the decode instead of yielding a silently grey-filled image. Dimensions are checked
 * after jpeg_read_header, before jpeg_start_decompress allocates anything for the image. llama.cpp decodes JPEG
 * with stb_image, whose IDCT and chroma upsampling differ from libjpeg's: JPEG pixels may differ from llama.cpp's
 * by a few levels (PNG is bit-exact). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "cloister/secmem.h"
#include "image_internal.h"

/* A progressive JPEG may carry thousands of tiny scans, each a full pass over the coefficients (a CPU bomb);
 * real encoders write about ten. */
#define CL_JPEG_MAX_SCANS 100

struct cl_jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    bool created;
    const struct cl_image_limits *lim;
    bool gray_out;
    uint8_t *samples;
    size_t samples_len;
    uint32_t w, h;
    int ncomp;
    cl_err rc;
    char what[JMSG_LENGTH_MAX];
};

static void cl_jpeg_keep_message(struct cl_jpeg_ctx *c, j_common_ptr cinfo)
{
    char msg[JMSG_LENGTH_MAX] = {0};
    cinfo->err->format_message(cinfo, msg);
    /* libjpeg's messages are fixed texts with numbers (marker codes, sizes): no pixel data. Printable ASCII only. */
    size_t i = 0;
    for (; msg[i] && i + 1 < sizeof(c->what); i++)
        c->what[i] = (msg[i] >= 0x20 && msg[i] < 0x7f) ? msg[i] : '?';
    c->what[i] = 0;
}

static void cl_jpeg_error_exit(j_common_ptr cinfo)
{
    struct cl_jpeg_ctx *c = cinfo->client_data;
    if (c->rc == CL_OK) {
        c->rc = CL_E_IMAGE_CORRUPT;
        cl_jpeg_keep_message(c, cinfo);
    }
    longjmp(c->jmp, 1);
}

static void cl_jpeg_emit_message(j_common_ptr cinfo, int level)
{
    struct cl_jpeg_ctx *c = cinfo->client_data;
    if (level >= 0)
        return; /* trace messages */
    c->rc = cinfo->err->msg_code == JWRN_JPEG_EOF ? CL_E_IMAGE_TRUNCATED : CL_E_IMAGE_CORRUPT;
    cl_jpeg_keep_message(c, cinfo);
    longjmp(c->jmp, 1);
}

static void cl_jpeg_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print anything about the file */
}

static void cl_jpeg_progress(j_common_ptr cinfo)
{
    struct cl_jpeg_ctx *c = cinfo->client_data;
    j_decompress_ptr d = (j_decompress_ptr)(void *)cinfo;
    if (d->progressive_mode && d->input_scan_number > CL_JPEG_MAX_SCANS) {
        c->rc = cl_err_fail(CL_E_IMAGE_UNSUPPORTED, "jpeg: more than %d progressive scans", CL_JPEG_MAX_SCANS);
        longjmp(c->jmp, 1);
    }
}

static cl_err cl_jpeg_run(struct cl_jpeg_ctx *c, const uint8_t *data, size_t len)
{
    if (setjmp(c->jmp))
        return c->rc != CL_OK ? c->rc : CL_E_IMAGE_CORRUPT;
    struct jpeg_decompress_struct *d = &c->cinfo;
    d->err = jpeg_std_error(&c->jerr);
    c->jerr.error_exit = cl_jpeg_error_exit;
    c->jerr.emit_message = cl_jpeg_emit_message;
    c->jerr.output_message = cl_jpeg_output_message;
    jpeg_create_decompress(d);
    c->created = true;
    d->client_data = c;
    c->progress.progress_monitor = cl_jpeg_progress;
    d->progress = &c->progress;
    jpeg_mem_src(d, data, (unsigned long)len);
    (void)jpeg_read_header(d, TRUE);

    size_t rgb_bytes = 0;
    cl_err rc = cl_image_check_dims(d->image_width, d->image_height, c->lim, "jpeg", &rgb_bytes);
    if (rc != CL_OK)
        return rc;
    if (d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK)
        return cl_err_fail(CL_E_IMAGE_UNSUPPORTED, "jpeg: %s colour (4 components) is not supported",
                           d->jpeg_color_space == JCS_CMYK ? "CMYK" : "YCCK");
    if (d->num_components != 1 && d->num_components != 3)
        return cl_err_fail(CL_E_IMAGE_UNSUPPORTED, "jpeg: %d components", d->num_components);
    d->out_color_space = (c->gray_out && d->num_components == 1) ? JCS_GRAYSCALE : JCS_RGB;
    /* Whole-image buffers (progressive coefficients) are bounded by the pixel limit checked above. */
    d->mem->max_memory_to_use = (long)(rgb_bytes * 4 + (64L << 20));
    (void)jpeg_start_decompress(d);
    if (d->output_width != d->image_width || d->output_height != d->image_height ||
        (d->output_components != 3 && d->output_components != 1))
        return cl_err_fail(CL_E_IMAGE_UNSUPPORTED, "jpeg: output %d components", d->output_components);
    c->w = d->output_width;
    c->h = d->output_height;
    c->ncomp = d->output_components;
    c->samples_len = (size_t)c->w * c->h * (size_t)c->ncomp;
    c->samples = calloc(1, c->samples_len);
    if (!c->samples)
        return cl_err_fail(CL_E_CORE_NOMEM, "jpeg: %zu bytes", c->samples_len);
    while (d->output_scanline < d->output_height) {
        JSAMPROW row = c->samples + (size_t)d->output_scanline * c->w * (size_t)c->ncomp;
        if (jpeg_read_scanlines(d, &row, 1) != 1)
            return cl_err_fail(CL_E_IMAGE_TRUNCATED, "jpeg: no data for row %u", d->output_scanline);
    }
    (void)jpeg_finish_decompress(d);
    return CL_OK;
}

/* Decodes to 8-bit samples: RGB, or one gray channel when gray_out and the file is grayscale. */
static cl_err cl_jpeg_decode_samples(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                     bool gray_out, uint32_t *w, uint32_t *h, int *ncomp, uint8_t **samples)
{
    cl_err rc = CL_OK;
    struct cl_jpeg_ctx *c = calloc(1, sizeof(*c));
    CL_ENSURE_D(c, CL_E_CORE_NOMEM, "jpeg: context");
    c->lim = lim;
    c->gray_out = gray_out;
    rc = cl_jpeg_run(c, data, len);
    if (rc != CL_OK) {
        if ((rc == CL_E_IMAGE_CORRUPT || rc == CL_E_IMAGE_TRUNCATED) && c->what[0])
            cl_err_set_detail("jpeg: %s", c->what);
        goto out;
    }
    *w = c->w;
    *h = c->h;
    *ncomp = c->ncomp;
    *samples = c->samples;
    c->samples = NULL;
out:
    if (c) {
        if (c->created)
            jpeg_destroy_decompress(&c->cinfo);
        if (c->samples) {
            cl_wipe(c->samples, c->samples_len);
            free(c->samples);
        }
        free(c);
    }
    return rc;
}

cl_err cl_image_jpeg_decode_gray(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                 uint32_t *w, uint32_t *h, int *ncomp, uint8_t **samples)
{
    return cl_jpeg_decode_samples(data, len, lim, true, w, h, ncomp, samples);
}

cl_err cl_image_jpeg_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                            struct cl_image *out)
{
    cl_err rc = CL_OK;
    uint32_t w = 0, h = 0;
    int ncomp = 0;
    uint8_t *rgb = NULL;
    CL_GUARD(cl_jpeg_decode_samples(data, len, lim, false, &w, &h, &ncomp, &rgb));
    out->w = w;
    out->h = h;
    out->rgb = rgb;
out:
    return rc;
}
