#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/secmem.h"
#include "image_internal.h"

void cl_image_limits_default(struct cl_image_limits *l)
{
    l->max_bytes = 32u << 20;
    l->max_width = 8192;
    l->max_height = 8192;
    l->max_pixels = 40000000;
}

enum cl_image_format cl_image_sniff(const uint8_t *data, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (!data)
        return CL_IMAGE_FMT_NONE;
    if (len >= sizeof(png_sig) && !memcmp(data, png_sig, sizeof(png_sig)))
        return CL_IMAGE_FMT_PNG;
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return CL_IMAGE_FMT_JPEG;
    /* Part 10: a 128-byte preamble whose content is free, then "DICM". */
    if (len >= 132 && !memcmp(data + 128, "DICM", 4))
        return CL_IMAGE_FMT_DICOM;
    return CL_IMAGE_FMT_NONE;
}

const char *cl_image_format_name(enum cl_image_format f)
{
    switch (f) {
    case CL_IMAGE_FMT_PNG: return "png";
    case CL_IMAGE_FMT_JPEG: return "jpeg";
    case CL_IMAGE_FMT_DICOM: return "dicom";
    default: return "none";
    }
}

cl_err cl_image_check_dims(uint64_t w, uint64_t h, const struct cl_image_limits *lim, const char *fmt,
                           size_t *rgb_bytes)
{
    cl_err rc = CL_OK;
    size_t n = 0;
    CL_ENSURE_D(w > 0 && h > 0, CL_E_IMAGE_DIMENSIONS, "%s: width or height is zero", fmt);
    CL_ENSURE_D(w <= lim->max_width, CL_E_IMAGE_DIMENSIONS, "%s: width %llu > limit %u", fmt,
                (unsigned long long)w, (unsigned)lim->max_width);
    CL_ENSURE_D(h <= lim->max_height, CL_E_IMAGE_DIMENSIONS, "%s: height %llu > limit %u", fmt,
                (unsigned long long)h, (unsigned)lim->max_height);
    /* w and h are each below 2^32, so the product fits in 64 bits. */
    CL_ENSURE_D(w * h <= lim->max_pixels, CL_E_IMAGE_DIMENSIONS, "%s: %llu pixels > limit %llu", fmt,
                (unsigned long long)(w * h), (unsigned long long)lim->max_pixels);
    CL_GUARD(cl_size_mul((size_t)w, (size_t)h, &n));
    CL_GUARD(cl_size_mul(n, 3, &n));
    *rgb_bytes = n;
out:
    return rc;
}

cl_err cl_image_alloc(uint32_t w, uint32_t h, struct cl_image *img)
{
    cl_err rc = CL_OK;
    size_t n = 0;
    CL_GUARD(cl_size_mul((size_t)w, (size_t)h, &n));
    CL_GUARD(cl_size_mul(n, 3, &n));
    img->rgb = calloc(1, n);
    CL_ENSURE_D(img->rgb, CL_E_CORE_NOMEM, "image pixels: %zu bytes", n);
    img->w = w;
    img->h = h;
out:
    return rc;
}

void cl_image_free(struct cl_image *img)
{
    if (!img)
        return;
    if (img->rgb) {
        cl_wipe(img->rgb, (size_t)img->w * img->h * 3);
        free(img->rgb);
    }
    img->rgb = NULL;
    img->w = img->h = 0;
}

cl_err cl_image_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                       struct cl_image *out)
{
    cl_err rc = CL_OK;
    struct cl_image_limits def;
    struct cl_image img = {0};
    CL_ENSURE_D(out && (data || len == 0), CL_E_IMAGE_ARG, "image decode: NULL argument");
    if (!lim) {
        cl_image_limits_default(&def);
        lim = &def;
    }
    CL_ENSURE_D(len <= lim->max_bytes, CL_E_IMAGE_TOO_LARGE, "%zu bytes > limit %zu", len, lim->max_bytes);
    switch (cl_image_sniff(data, len)) {
    case CL_IMAGE_FMT_PNG: CL_GUARD(cl_image_png_decode(data, len, lim, &img)); break;
    case CL_IMAGE_FMT_JPEG: CL_GUARD(cl_image_jpeg_decode(data, len, lim, &img)); break;
    case CL_IMAGE_FMT_DICOM: CL_GUARD(cl_image_dicom_decode(data, len, lim, &img)); break;
    default:
        CL_FAIL(CL_E_IMAGE_FORMAT, "%zu bytes: no PNG, JPEG or DICOM (Part 10) signature", len);
    }
    *out = img;
    img.rgb = NULL;
out:
    cl_image_free(&img);
    return rc;
}

/* llama.cpp's lerp, evaluated in float without contraction (the build is ISO C11, so no FMA is formed). */
static inline float cl_image_lerp(float s, float e, float t)
{
    return s + (e - s) * t;
}

/* llama.cpp's img_tool::resize_bilinear: "align corners" sampling, two float lerps, truncated to uint8. */
static void cl_image_resize_bilinear(const uint8_t *src, int sw, int sh, uint8_t *dst, int tw, int th)
{
    float x_ratio = tw > 1 ? (float)(sw - 1) / (float)(tw - 1) : 0.0f;
    float y_ratio = th > 1 ? (float)(sh - 1) / (float)(th - 1) : 0.0f;
    for (int y = 0; y < th; y++) {
        float py = (float)y * y_ratio;
        int y0 = (int)py < sh - 1 ? (int)py : sh - 1;
        int y1 = y0 + 1 < sh - 1 ? y0 + 1 : sh - 1;
        float yf = py - (float)y0;
        for (int x = 0; x < tw; x++) {
            float px = (float)x * x_ratio;
            int x0 = (int)px < sw - 1 ? (int)px : sw - 1;
            int x1 = x0 + 1 < sw - 1 ? x0 + 1 : sw - 1;
            float xf = px - (float)x0;
            const uint8_t *p00 = src + ((size_t)y0 * (size_t)sw + (size_t)x0) * 3;
            const uint8_t *p10 = src + ((size_t)y0 * (size_t)sw + (size_t)x1) * 3;
            const uint8_t *p01 = src + ((size_t)y1 * (size_t)sw + (size_t)x0) * 3;
            const uint8_t *p11 = src + ((size_t)y1 * (size_t)sw + (size_t)x1) * 3;
            uint8_t *d = dst + ((size_t)y * (size_t)tw + (size_t)x) * 3;
            for (int c = 0; c < 3; c++) {
                float top = cl_image_lerp((float)p00[c], (float)p10[c], xf);
                float bottom = cl_image_lerp((float)p01[c], (float)p11[c], xf);
                d[c] = (uint8_t)cl_image_lerp(top, bottom, yf);
            }
        }
    }
}

cl_err cl_image_preprocess(const struct cl_image *img, uint32_t size, const float mean[3], const float std[3],
                           float *out)
{
    cl_err rc = CL_OK;
    uint8_t *sq = NULL, *fit = NULL;
    size_t sq_bytes = 0, fit_bytes = 0;
    CL_ENSURE_D(img && img->rgb && mean && std && out, CL_E_IMAGE_ARG, "preprocess: NULL argument");
    CL_ENSURE_D(img->w > 0 && img->h > 0 && img->w <= INT32_MAX / 4 && img->h <= INT32_MAX / 4,
                CL_E_IMAGE_ARG, "preprocess: image %ux%u", (unsigned)img->w, (unsigned)img->h);
    CL_ENSURE_D(size > 0 && size <= 16384, CL_E_IMAGE_ARG, "preprocess: size %u not in 1..16384", (unsigned)size);
    for (int c = 0; c < 3; c++)
        CL_ENSURE_D(std[c] != 0.0f && isfinite(std[c]) && isfinite(mean[c]), CL_E_IMAGE_ARG,
                    "preprocess: mean/std[%d] not finite or std zero", c);
    int sz = (int)size;
    sq_bytes = (size_t)size * size * 3;
    sq = calloc(1, sq_bytes); /* calloc: the padding is black, as llama.cpp's default pad colour */
    CL_ENSURE_D(sq, CL_E_CORE_NOMEM, "preprocess: %zu bytes", sq_bytes);
    if (img->w == size && img->h == size) {
        memcpy(sq, img->rgb, sq_bytes);
    } else {
        /* llama.cpp's img_tool::resize with PAD_CEIL (Gemma 3 leaves image_resize_pad at its default): scale
         * to fit, rounding the scaled sides up, then centre on the pad colour. A square image fills it all. */
        int sw = (int)img->w, sh = (int)img->h;
        float scale_w = (float)sz / (float)sw;
        float scale_h = (float)sz / (float)sh;
        float scale = scale_w < scale_h ? scale_w : scale_h;
        int nw = (int)ceilf((float)sw * scale), nh = (int)ceilf((float)sh * scale);
        if (nw > sz)
            nw = sz;
        if (nh > sz)
            nh = sz;
        if (nw < 1)
            nw = 1;
        if (nh < 1)
            nh = 1;
        fit_bytes = (size_t)nw * (size_t)nh * 3;
        fit = malloc(fit_bytes);
        CL_ENSURE_D(fit, CL_E_CORE_NOMEM, "preprocess: %zu bytes", fit_bytes);
        cl_image_resize_bilinear(img->rgb, sw, sh, fit, nw, nh);
        int ox = (sz - nw) / 2, oy = (sz - nh) / 2;
        for (int y = 0; y < nh; y++)
            memcpy(sq + ((size_t)(y + oy) * (size_t)sz + (size_t)ox) * 3, fit + (size_t)y * (size_t)nw * 3,
                   (size_t)nw * 3);
    }
    size_t plane = (size_t)size * size;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            float v = (float)sq[i * 3 + (size_t)c] / 255.0f;
            out[(size_t)c * plane + i] = (v - mean[c]) / std[c];
        }
out:
    if (fit) {
        cl_wipe(fit, fit_bytes);
        free(fit);
    }
    if (sq) {
        cl_wipe(sq, sq_bytes);
        free(sq);
    }
    return rc;
}
