/* PNG through libpng, converted as stb_image does for a 3-channel request (llama.cpp decodes with stb_image):
 * 16-bit samples keep their high byte, 1/2/4-bit gray is scaled to 8 bits, palettes are expanded, gray is
 * copied into R, G and B, alpha (and tRNS) is dropped without compositing, gamma chunks are ignored. */
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/secmem.h"
#include "image_internal.h"

/* Ancillary chunks (text, ICC, ...) are never needed: caps on their number and size stop memory bombs. */
#define CL_PNG_CHUNK_CACHE_MAX 64
#define CL_PNG_CHUNK_MALLOC_MAX (1u << 20)

/* Everything the setjmp path needs to clean up lives on the heap, never in locals changed after setjmp. */
struct cl_png_ctx {
    const uint8_t *data;
    size_t len, off;
    const struct cl_image_limits *lim;
    png_structp png;
    png_infop info;
    png_bytep *rows;
    struct cl_image img;
    cl_err rc; /* the reason a longjmp was taken, when known */
    char what[64];
};

static void cl_png_read(png_structp png, png_bytep dst, size_t n)
{
    struct cl_png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->off) {
        c->rc = CL_E_IMAGE_TRUNCATED;
        png_error(png, "truncated");
    }
    memcpy(dst, c->data + c->off, n);
    c->off += n;
}

/* libpng prefixes chunk errors with the chunk's name, 4 bytes of the file: kept only when it is a standard chunk,
 * so no file-chosen bytes reach an error detail. */
static bool cl_png_known_chunk(const char *n)
{
    static const char known[] = "IHDR PLTE IDAT IEND tRNS gAMA cHRM sRGB iCCP sBIT bKGD hIST pHYs sPLT tIME tEXt "
                                "zTXt iTXt oFFs pCAL sCAL eXIf acTL fcTL fdAT";
    for (size_t k = 0; k + 4 <= sizeof(known) - 1; k += 5)
        if (!memcmp(known + k, n, 4))
            return true;
    return false;
}

static void cl_png_error(png_structp png, png_const_charp msg)
{
    struct cl_png_ctx *c = png_get_error_ptr(png);
    if (c->rc == CL_OK) {
        c->rc = CL_E_IMAGE_CORRUPT;
        const char *m = msg ? msg : "decoder error";
        size_t i = 0;
        if (strlen(m) > 6 && m[4] == ':' && m[5] == ' ' && !cl_png_known_chunk(m)) {
            memcpy(c->what, "chunk", 5);
            i = 5;
            m += 4;
        }
        /* the rest is libpng's fixed text and numbers; printable ASCII only */
        for (; *m && i + 1 < sizeof(c->what); m++, i++)
            c->what[i] = (*m >= 0x20 && *m < 0x7f) ? *m : '?';
        c->what[i] = 0;
    }
    png_longjmp(png, 1);
}

static void cl_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign ancillary-chunk problems: nothing of the file is logged */
}

static uint32_t cl_png_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static cl_err cl_png_run(struct cl_png_ctx *c)
{
    if (setjmp(png_jmpbuf(c->png)))
        return c->rc != CL_OK ? c->rc : CL_E_IMAGE_CORRUPT;

    png_set_user_limits(c->png, c->lim->max_width, c->lim->max_height);
    png_set_chunk_cache_max(c->png, CL_PNG_CHUNK_CACHE_MAX);
    png_set_chunk_malloc_max(c->png, CL_PNG_CHUNK_MALLOC_MAX);
    png_set_read_fn(c->png, c, cl_png_read);
    png_read_info(c->png, c->info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0, interlace = 0;
    png_get_IHDR(c->png, c->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    size_t rgb_bytes = 0;
    cl_err rc = cl_image_check_dims(w, h, c->lim, "png", &rgb_bytes);
    if (rc != CL_OK)
        return rc;

    if (depth == 16)
        png_set_strip_16(c->png);
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(c->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(c->png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(c->png);
    /* Also after a palette's or gray's tRNS became an alpha channel through the expansions above. */
    png_set_strip_alpha(c->png);
    (void)png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    if (png_get_channels(c->png, c->info) != 3 || png_get_bit_depth(c->png, c->info) != 8 ||
        png_get_rowbytes(c->png, c->info) != (size_t)w * 3) {
        c->rc = cl_err_fail(CL_E_IMAGE_UNSUPPORTED, "png: colour type %d depth %d", ctype, depth);
        return c->rc;
    }

    rc = cl_image_alloc(w, h, &c->img);
    if (rc != CL_OK)
        return rc;
    c->rows = calloc(h, sizeof(*c->rows));
    if (!c->rows)
        return cl_err_fail(CL_E_CORE_NOMEM, "png: row table");
    for (png_uint_32 y = 0; y < h; y++)
        c->rows[y] = c->img.rgb + (size_t)y * w * 3;
    png_read_image(c->png, c->rows);
    png_read_end(c->png, NULL);
    return CL_OK;
}

cl_err cl_image_png_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                           struct cl_image *out)
{
    cl_err rc = CL_OK;
    struct cl_png_ctx *c = NULL;
    size_t rgb_bytes = 0;
    /* IHDR must come first: check its dimensions before libpng allocates anything for the image, so a bomb
     * gets the dimension error (libpng's own user limits stay as a second line). */
    CL_ENSURE_D(len >= 33, CL_E_IMAGE_TRUNCATED, "png: %zu bytes, no complete IHDR", len);
    CL_ENSURE_D(!memcmp(data + 12, "IHDR", 4), CL_E_IMAGE_CORRUPT, "png: first chunk is not IHDR");
    CL_GUARD(cl_image_check_dims(cl_png_be32(data + 16), cl_png_be32(data + 20), lim, "png", &rgb_bytes));
    c = calloc(1, sizeof(*c));
    CL_ENSURE_D(c, CL_E_CORE_NOMEM, "png: context");
    c->data = data;
    c->len = len;
    c->lim = lim;
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, cl_png_error, cl_png_warning);
    CL_ENSURE_D(c->png, CL_E_CORE_NOMEM, "png: read struct");
    c->info = png_create_info_struct(c->png);
    CL_ENSURE_D(c->info, CL_E_CORE_NOMEM, "png: info struct");
    rc = cl_png_run(c);
    if (rc != CL_OK) {
        if (rc == CL_E_IMAGE_TRUNCATED)
            cl_err_set_detail("png: data ends at byte %zu", c->len);
        else if (rc == CL_E_IMAGE_CORRUPT)
            cl_err_set_detail("png: %s", c->what[0] ? c->what : "decoder error");
        goto out;
    }
    *out = c->img;
    c->img.rgb = NULL;
out:
    if (c) {
        if (c->png)
            png_destroy_read_struct(&c->png, c->info ? &c->info : NULL, NULL);
        free(c->rows);
        cl_image_free(&c->img);
        free(c);
    }
    return rc;
}
