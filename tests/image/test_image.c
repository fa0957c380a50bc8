/* Image decoding and preprocessing: bit-exact against llama.cpp's tensors, every PNG kind made here with
 * libpng's write API, and the attacks (bombs, truncation, wrong magic, oversize input, corrupt data). */
#include "testutil.h"

#include <png.h>
#include <zlib.h>
#include <jpeglib.h>

#include "cloister/file.h"
#include "cloister/image.h"

/* ---- helpers ---- */

struct mem {
    uint8_t *p;
    size_t n, cap;
};

static void mem_write(png_structp png, png_bytep d, size_t n)
{
    struct mem *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
        assert_non_null(m->p);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}
static void mem_flush(png_structp png) { (void)png; }

/* Writes a PNG of w x h from `rows` (already in the file's sample layout). */
static struct mem make_png(uint32_t w, uint32_t h, int depth, int ctype, int interlace, const uint8_t *samples,
                           size_t rowbytes, const png_color *pal, int npal, const png_byte *trns, int ntrns)
{
    struct mem m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng write failed");
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, w, h, depth, ctype, interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (trns)
        png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    if (depth == 16)
        png_set_swap(png); /* samples below are little-endian uint16 */
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (uint32_t y = 0; y < h; y++)
            png_write_row(png, samples + (size_t)y * rowbytes);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return m;
}

static uint8_t *read_file(const char *path, size_t *n)
{
    struct cl_buf b;
    cl_buf_init(&b, 64u << 20, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 64u << 20, &b));
    *n = b.len;
    return b.data;
}

static void expect_rgb(const struct cl_image *img, uint32_t w, uint32_t h, const uint8_t *rgb)
{
    assert_int_equal(img->w, w);
    assert_int_equal(img->h, h);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        if (img->rgb[i] != rgb[i])
            fail_msg("pixel byte %zu: got %u, want %u", i, img->rgb[i], rgb[i]);
}

/* ---- bit-exact preprocessing against llama.cpp ---- */

static void check_reference(const char *name)
{
    char png_path[1024], ref_path[1024], rel[256];
    snprintf(rel, sizeof(rel), "images/chest-xray/%s.png", name);
    CL_TESTDATA(rel, png_path);
    snprintf(rel, sizeof(rel), "tiny/images/%s.mmproj-tiny-gemma3-f32.input.f32", name);
    CL_REFERENCE(rel, ref_path);
    size_t n = 0, rn = 0;
    uint8_t *data = read_file(png_path, &n);
    uint8_t *ref = read_file(ref_path, &rn);
    assert_int_equal(cl_image_sniff(data, n), CL_IMAGE_FMT_PNG);
    struct cl_image img = {0};
    assert_ok(cl_image_decode(data, n, NULL, &img));
    assert_int_equal(img.w, 512);
    assert_int_equal(img.h, 512);
    const float half[3] = {0.5f, 0.5f, 0.5f};
    assert_int_equal(rn, (size_t)224 * 224 * 3 * sizeof(float));
    float *t = malloc(rn);
    assert_non_null(t);
    assert_ok(cl_image_preprocess(&img, 224, half, half, t));
    if (memcmp(t, ref, rn) != 0) {
        const float *r = (const float *)(const void *)ref;
        for (size_t i = 0; i < rn / 4; i++)
            if (memcmp(&t[i], &r[i], 4))
                fail_msg("%s: first difference at %zu: %.9g vs %.9g", name, i, (double)t[i], (double)r[i]);
    }
    cl_image_free(&img);
    assert_null(img.rgb);
    free(t);
    free(ref);
    free(data);
}

static void test_reference_xray_1(void **state) { (void)state; check_reference("00000001_000"); }
static void test_reference_xray_2(void **state) { (void)state; check_reference("00027426_000"); }

/* ---- PNG kinds ---- */

static void test_png_kinds(void **state)
{
    (void)state;
    enum { W = 5, H = 3 };
    uint8_t want[W * H * 3];
    uint8_t s8[W * H * 4];
    uint16_t s16[W * H * 4];
    struct cl_image img = {0};
    for (int i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++)
            want[i * 3 + c] = (uint8_t)(i * 17 + c * 50);

    /* RGB8 and RGB8 interlaced */
    for (int il = 0; il < 2; il++) {
        struct mem m = make_png(W, H, 8, PNG_COLOR_TYPE_RGB, il ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, want,
                                W * 3, NULL, 0, NULL, 0);
        assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
        expect_rgb(&img, W, H, want);
        cl_image_free(&img);
        free(m.p);
    }
    /* RGBA8: alpha dropped, colour kept as is (no compositing) */
    for (int i = 0; i < W * H; i++) {
        memcpy(s8 + i * 4, want + i * 3, 3);
        s8[i * 4 + 3] = (uint8_t)(i * 9);
    }
    struct mem m = make_png(W, H, 8, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_NONE, s8, W * 4, NULL, 0, NULL, 0);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, want);
    cl_image_free(&img);
    free(m.p);

    /* RGB16 and RGBA16: high byte kept (stb_image's >> 8) */
    for (int a = 0; a < 2; a++) {
        int ch = a ? 4 : 3;
        for (int i = 0; i < W * H; i++) {
            for (int c = 0; c < 3; c++)
                s16[i * ch + c] = (uint16_t)(want[i * 3 + c] << 8 | (0xff - c));
            if (a)
                s16[i * ch + 3] = 0x1234;
        }
        m = make_png(W, H, 16, a ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     (const uint8_t *)s16, (size_t)W * ch * 2, NULL, 0, NULL, 0);
        assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
        expect_rgb(&img, W, H, want);
        cl_image_free(&img);
        free(m.p);
    }

    /* gray8, gray+alpha8, gray16 (0x80ff -> 0x80), interlaced gray8 */
    uint8_t gw[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        s8[i] = (uint8_t)(i * 16 + 3);
        gw[i * 3] = gw[i * 3 + 1] = gw[i * 3 + 2] = s8[i];
    }
    for (int il = 0; il < 2; il++) {
        m = make_png(W, H, 8, PNG_COLOR_TYPE_GRAY, il ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, s8, W, NULL, 0,
                     NULL, 0);
        assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
        expect_rgb(&img, W, H, gw);
        cl_image_free(&img);
        free(m.p);
    }
    uint8_t ga[W * H * 2];
    for (int i = 0; i < W * H; i++) {
        ga[i * 2] = s8[i];
        ga[i * 2 + 1] = (uint8_t)(255 - i);
        s16[i] = (uint16_t)(s8[i] << 8 | 0xff);
    }
    m = make_png(W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, ga, W * 2, NULL, 0, NULL, 0);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, gw);
    cl_image_free(&img);
    free(m.p);
    m = make_png(W, H, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, (const uint8_t *)s16, W * 2, NULL, 0, NULL, 0);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, gw);
    cl_image_free(&img);
    free(m.p);

    /* 1-bit gray: 0 -> 0, 1 -> 255 */
    uint8_t bits[H] = {0xa8, 0x50, 0xf8}; /* rows of 5 pixels: 10101, 01010, 11111 */
    uint8_t bw[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(bw + (y * W + x) * 3, (bits[y] >> (7 - x)) & 1 ? 255 : 0, 3);
    m = make_png(W, H, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, bits, 1, NULL, 0, NULL, 0);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, bw);
    cl_image_free(&img);
    free(m.p);

    /* palette (8-bit and 4-bit) with tRNS: colours from the palette, transparency dropped */
    png_color pal[4] = {{10, 20, 30}, {40, 50, 60}, {200, 100, 0}, {1, 2, 3}};
    png_byte trns[4] = {0, 128, 255, 7};
    uint8_t idx[W * H], pw[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        idx[i] = (uint8_t)(i % 4);
        pw[i * 3] = pal[i % 4].red;
        pw[i * 3 + 1] = pal[i % 4].green;
        pw[i * 3 + 2] = pal[i % 4].blue;
    }
    m = make_png(W, H, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, idx, W, pal, 4, trns, 4);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, pw);
    cl_image_free(&img);
    free(m.p);
    uint8_t idx4[H * 3];
    memset(idx4, 0, sizeof(idx4));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            idx4[y * 3 + x / 2] |= (uint8_t)(idx[y * W + x] << ((x & 1) ? 0 : 4));
    m = make_png(W, H, 4, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_ADAM7, idx4, 3, pal, 4, NULL, 0);
    assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
    expect_rgb(&img, W, H, pw);
    cl_image_free(&img);
    free(m.p);
}

/* ---- attacks ---- */

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(0, p, (uInt)n);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* A PNG whose IHDR claims w x h, with a tiny IDAT: decoding it fully would need w*h*3 bytes. */
static size_t make_bomb_png(uint8_t *b, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    size_t n = 0;
    memcpy(b, sig, 8); n = 8;
    put32(b + n, 13); memcpy(b + n + 4, "IHDR", 4);
    put32(b + n + 8, w); put32(b + n + 12, h);
    b[n + 16] = 8; b[n + 17] = 2; b[n + 18] = 0; b[n + 19] = 0; b[n + 20] = 0;
    put32(b + n + 21, crc32_png(b + n + 4, 17)); n += 25;
    static const uint8_t z[] = {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
    put32(b + n, sizeof(z)); memcpy(b + n + 4, "IDAT", 4); memcpy(b + n + 8, z, sizeof(z));
    put32(b + n + 8 + sizeof(z), crc32_png(b + n + 4, 4 + sizeof(z))); n += 12 + sizeof(z);
    put32(b + n, 0); memcpy(b + n + 4, "IEND", 4); put32(b + n + 8, crc32_png(b + n + 4, 4)); n += 12;
    return n;
}

static void test_png_bomb(void **state)
{
    (void)state;
    uint8_t b[128];
    struct cl_image img = {0};
    size_t n = make_bomb_png(b, 100000, 100000);
    assert_err(cl_image_decode(b, n, NULL, &img), CL_E_IMAGE_DIMENSIONS);
    assert_non_null(strstr(cl_err_detail(), "width 100000"));
    assert_null(img.rgb);
    /* within width and height but over the pixel count */
    n = make_bomb_png(b, 8000, 8000);
    assert_err(cl_image_decode(b, n, NULL, &img), CL_E_IMAGE_DIMENSIONS);
    assert_non_null(strstr(cl_err_detail(), "pixels"));
    /* zero width */
    n = make_bomb_png(b, 0, 10);
    assert_err(cl_image_decode(b, n, NULL, &img), CL_E_IMAGE_DIMENSIONS);
    /* a small one passes the limits and fails on its too-short data, not on memory */
    n = make_bomb_png(b, 64, 64);
    cl_err rc = cl_image_decode(b, n, NULL, &img);
    assert_true(rc == CL_E_IMAGE_CORRUPT || rc == CL_E_IMAGE_TRUNCATED);
    assert_null(img.rgb);
}

static void test_png_truncated_and_corrupt(void **state)
{
    (void)state;
    enum { W = 40, H = 30 };
    uint8_t px[W * H * 3];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 7919 >> 3);
    struct mem m = make_png(W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, px, W * 3, NULL, 0, NULL, 0);
    struct cl_image img = {0};
    size_t cuts[] = {8, 20, 33, 40, m.n / 2, m.n - 13};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        cl_err rc = cl_image_decode(m.p, cuts[i], NULL, &img);
        if (rc != CL_E_IMAGE_TRUNCATED)
            fail_msg("cut at %zu: %s", cuts[i], cl_err_name(rc) ? cl_err_name(rc) : "?");
        assert_null(img.rgb);
    }
    /* a flipped bit in the image data: CRC error */
    uint8_t *bad = malloc(m.n);
    memcpy(bad, m.p, m.n);
    bad[m.n / 2] ^= 0x10;
    assert_err(cl_image_decode(bad, m.n, NULL, &img), CL_E_IMAGE_CORRUPT);
    assert_non_null(strstr(cl_err_detail(), "png:"));
    /* a flipped bit in IHDR's CRC */
    memcpy(bad, m.p, m.n);
    bad[30] ^= 0x01;
    assert_err(cl_image_decode(bad, m.n, NULL, &img), CL_E_IMAGE_CORRUPT);
    free(bad);
    free(m.p);
}

static void test_format_and_size(void **state)
{
    (void)state;
    struct cl_image img = {0};
    static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    assert_err(cl_image_decode(gif, sizeof(gif), NULL, &img), CL_E_IMAGE_FORMAT);
    assert_err(cl_image_decode(gif, 0, NULL, &img), CL_E_IMAGE_FORMAT);
    assert_int_equal(cl_image_sniff(gif, sizeof(gif)), CL_IMAGE_FMT_NONE);
    assert_int_equal(cl_image_sniff((const uint8_t *)"\xff\xd8\xff\xe0", 4), CL_IMAGE_FMT_JPEG);
    uint8_t b[128];
    size_t n = make_bomb_png(b, 4, 4);
    struct cl_image_limits lim;
    cl_image_limits_default(&lim);
    assert_int_equal(lim.max_bytes, 32u << 20);
    assert_int_equal(lim.max_width, 8192);
    assert_int_equal(lim.max_pixels, 40000000);
    lim.max_bytes = n - 1;
    assert_err(cl_image_decode(b, n, &lim, &img), CL_E_IMAGE_TOO_LARGE);
    assert_non_null(strstr(cl_err_detail(), "limit"));
    assert_err(cl_image_decode(NULL, 5, NULL, &img), CL_E_IMAGE_ARG);
}


/* ---- JPEG ---- */

/* Compresses w x h samples (components 1, 3 or 4 with the given colour space) with libjpeg. */
static struct mem make_jpeg(uint32_t w, uint32_t h, int comps, J_COLOR_SPACE cs, int progressive, const uint8_t *px)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    unsigned char *buf = NULL;
    unsigned long n = 0;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    jpeg_mem_dest(&ci, &buf, &n);
    ci.image_width = w;
    ci.image_height = h;
    ci.input_components = comps;
    ci.in_color_space = cs;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 100, TRUE);
    if (progressive)
        jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < h) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * (size_t)comps);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    struct mem m = {.p = buf, .n = n, .cap = n};
    return m;
}

static void expect_close(const struct cl_image *img, uint32_t w, uint32_t h, const uint8_t *rgb, int tol)
{
    assert_int_equal(img->w, w);
    assert_int_equal(img->h, h);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        if (abs((int)img->rgb[i] - (int)rgb[i]) > tol)
            fail_msg("pixel byte %zu: got %u, want %u +- %d", i, img->rgb[i], rgb[i], tol);
}

enum { JW = 48, JH = 32 };

static void smooth_rgb(uint8_t *px)
{
    for (int y = 0; y < JH; y++)
        for (int x = 0; x < JW; x++) {
            px[(y * JW + x) * 3 + 0] = (uint8_t)(40 + x * 3);
            px[(y * JW + x) * 3 + 1] = (uint8_t)(60 + y * 4);
            px[(y * JW + x) * 3 + 2] = (uint8_t)(200 - x - y);
        }
}

static void test_jpeg_rgb_gray_progressive(void **state)
{
    (void)state;
    uint8_t px[JW * JH * 3], g[JW * JH], gw[JW * JH * 3];
    smooth_rgb(px);
    struct cl_image img = {0};
    for (int prog = 0; prog < 2; prog++) {
        struct mem m = make_jpeg(JW, JH, 3, JCS_RGB, prog, px);
        assert_int_equal(cl_image_sniff(m.p, m.n), CL_IMAGE_FMT_JPEG);
        assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
        expect_close(&img, JW, JH, px, 4); /* lossy, at quality 100 */
        cl_image_free(&img);
        free(m.p);
    }
    for (int i = 0; i < JW * JH; i++) {
        g[i] = (uint8_t)(i % JW * 5);
        memset(gw + i * 3, g[i], 3);
    }
    for (int prog = 0; prog < 2; prog++) {
        struct mem m = make_jpeg(JW, JH, 1, JCS_GRAYSCALE, prog, g);
        assert_ok(cl_image_decode(m.p, m.n, NULL, &img));
        expect_close(&img, JW, JH, gw, 3);
        for (size_t i = 0; i < (size_t)JW * JH; i++) /* gray copied into R, G and B */
            assert_true(img.rgb[i * 3] == img.rgb[i * 3 + 1] && img.rgb[i * 3] == img.rgb[i * 3 + 2]);
        cl_image_free(&img);
        free(m.p);
    }
}

static void test_jpeg_cmyk_refused(void **state)
{
    (void)state;
    uint8_t px[JW * JH * 4];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 3);
    struct cl_image img = {0};
    struct mem m = make_jpeg(JW, JH, 4, JCS_CMYK, 0, px);
    assert_err(cl_image_decode(m.p, m.n, NULL, &img), CL_E_IMAGE_UNSUPPORTED);
    assert_non_null(strstr(cl_err_detail(), "CMYK"));
    assert_null(img.rgb);
    free(m.p);
}

/* Finds the SOFn segment and rewrites its height and width. */
static void jpeg_set_dims(uint8_t *p, size_t n, uint16_t w, uint16_t h)
{
    for (size_t i = 2; i + 9 < n;) {
        assert_int_equal(p[i], 0xff);
        uint8_t mk = p[i + 1];
        size_t seg = (size_t)p[i + 2] << 8 | p[i + 3];
        if (mk == 0xc0 || mk == 0xc2) {
            p[i + 5] = (uint8_t)(h >> 8); p[i + 6] = (uint8_t)h;
            p[i + 7] = (uint8_t)(w >> 8); p[i + 8] = (uint8_t)w;
            return;
        }
        i += 2 + seg;
    }
    fail_msg("no SOF marker");
}

static void test_jpeg_bomb_truncated_corrupt(void **state)
{
    (void)state;
    uint8_t px[JW * JH * 3];
    smooth_rgb(px);
    struct cl_image img = {0};
    struct mem m = make_jpeg(JW, JH, 3, JCS_RGB, 0, px);
    uint8_t *b = malloc(m.n);
    /* header claims 65500 x 65500 (4.3 Gpixel): refused from the header, before any pixel allocation */
    memcpy(b, m.p, m.n);
    jpeg_set_dims(b, m.n, 65500, 65500);
    assert_err(cl_image_decode(b, m.n, NULL, &img), CL_E_IMAGE_DIMENSIONS);
    assert_non_null(strstr(cl_err_detail(), "jpeg: width 65500"));
    assert_null(img.rgb);
    /* 6000 x 6000 is within width and height, over a tighter pixel limit */
    struct cl_image_limits lim;
    cl_image_limits_default(&lim);
    lim.max_pixels = 1000000;
    jpeg_set_dims(b, m.n, 6000, 6000);
    assert_err(cl_image_decode(b, m.n, &lim, &img), CL_E_IMAGE_DIMENSIONS);
    /* truncated anywhere after the header: an error, never a grey-filled image */
    size_t cuts[] = {4, 100, m.n / 2, m.n - 2};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        cl_err rc = cl_image_decode(m.p, cuts[i], NULL, &img);
        if (rc != CL_E_IMAGE_TRUNCATED)
            fail_msg("cut at %zu of %zu: %s", cuts[i], m.n, cl_err_name(rc) ? cl_err_name(rc) : "?");
        assert_null(img.rgb);
    }
    /* a bad marker inside the header */
    memcpy(b, m.p, m.n);
    b[3] = 0x01; b[2] = 0xff;
    cl_err rc = cl_image_decode(b, m.n, NULL, &img);
    assert_true(rc == CL_E_IMAGE_CORRUPT || rc == CL_E_IMAGE_TRUNCATED);
    assert_non_null(strstr(cl_err_detail(), "jpeg"));
    free(b);
    free(m.p);
}

/* ---- preprocessing arithmetic ---- */

static void test_preprocess_square_and_pad(void **state)
{
    (void)state;
    const float half[3] = {0.5f, 0.5f, 0.5f}, zero[3] = {0, 0, 0}, one[3] = {1, 1, 1};
    uint8_t px[4 * 2 * 3];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 10);
    struct cl_image img = {.w = 4, .h = 2, .rgb = px};
    float out[3 * 4 * 4];
    /* same size: a copy; 4x2 into 4x4: scale 1, rows 1..2 hold the image, rows 0 and 3 are black padding */
    assert_ok(cl_image_preprocess(&img, 4, zero, one, out));
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                float v = out[c * 16 + y * 4 + x];
                float want = (y == 0 || y == 3) ? 0.0f : (float)px[((y - 1) * 4 + x) * 3 + c] / 255.0f;
                if (v != want)
                    fail_msg("c%d y%d x%d: %g != %g", c, y, x, (double)v, (double)want);
            }
    /* 2x2 -> 3x3 "align corners": the middle is the average of neighbours, truncated */
    uint8_t q[2 * 2 * 3] = {0, 0, 0, 255, 255, 255, 100, 100, 100, 7, 7, 7};
    struct cl_image sq = {.w = 2, .h = 2, .rgb = q};
    float o3[27];
    assert_ok(cl_image_preprocess(&sq, 3, zero, one, o3));
    assert_true(o3[0] == 0.0f);
    assert_true(o3[2] == 1.0f);
    assert_true(o3[1] == 127.0f / 255.0f); /* 127.5 truncated */
    assert_true(o3[4] == 90.0f / 255.0f);  /* (0+255+100+7)/4 = 90.5 truncated */
    assert_ok(cl_image_preprocess(&sq, 3, half, half, o3));
    assert_true(o3[0] == -1.0f && o3[2] == 1.0f);
    /* bad arguments */
    assert_err(cl_image_preprocess(&sq, 0, half, half, o3), CL_E_IMAGE_ARG);
    assert_err(cl_image_preprocess(&sq, 3, half, zero, o3), CL_E_IMAGE_ARG);
    assert_err(cl_image_preprocess(NULL, 3, half, half, o3), CL_E_IMAGE_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_xray_1),
        cmocka_unit_test(test_reference_xray_2),
        cmocka_unit_test(test_png_kinds),
        cmocka_unit_test(test_png_bomb),
        cmocka_unit_test(test_png_truncated_and_corrupt),
        cmocka_unit_test(test_format_and_size),
        cmocka_unit_test(test_preprocess_square_and_pad),
        cmocka_unit_test(test_jpeg_rgb_gray_progressive),
        cmocka_unit_test(test_jpeg_cmyk_refused),
        cmocka_unit_test(test_jpeg_bomb_truncated_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
