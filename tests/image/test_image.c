/* Image decoding and preprocessing: bit-exact against llama.cpp's tensors, every PNG kind made here with
 * libpng's write API, and the attacks (bombs, truncation, wrong magic, oversize input, corrupt data). */
#include "testutil.h"

#include <png.h>
#include <zlib.h>
#include <jpeglib.h>
#include <math.h>
#include <stdbool.h>
#include <sys/wait.h>

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
    assert_non_null(strstr(cl_err_detail(), "png: ")); /* libpng's reason, e.g. "bad adaptive filter value" */
    /* an unknown critical chunk: its file-chosen name is not echoed */
    memcpy(bad, m.p, m.n);
    static const uint8_t zz[] = {0, 0, 0, 0, 'Z', 'Z', 'S', 'E', 0, 0, 0, 0};
    uint8_t *ins = malloc(m.n + sizeof(zz));
    memcpy(ins, m.p, 33);
    memcpy(ins + 33, zz, sizeof(zz));
    put32(ins + 33 + 8, crc32_png(zz + 4, 4));
    memcpy(ins + 33 + sizeof(zz), m.p + 33, m.n - 33);
    assert_err(cl_image_decode(ins, m.n + sizeof(zz), NULL, &img), CL_E_IMAGE_CORRUPT);
    assert_null(strstr(cl_err_detail(), "ZZSE"));
    assert_non_null(strstr(cl_err_detail(), "png: chunk"));
    free(ins);
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


/* ---- DICOM ---- */

#define SECRET_NAME "ZZSECRET^PATIENTNAME"

/* A tiny explicit-VR-LE writer for hand-made files. */
struct dw {
    uint8_t b[8192];
    size_t n;
};
static void dw_raw(struct dw *w, const void *p, size_t n) { assert_true(w->n + n <= sizeof(w->b)); memcpy(w->b + w->n, p, n); w->n += n; }
static void dw_u16(struct dw *w, uint16_t v) { uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; dw_raw(w, t, 2); }
static void dw_u32(struct dw *w, uint32_t v) { dw_u16(w, (uint16_t)v); dw_u16(w, (uint16_t)(v >> 16)); }
static void dw_tag(struct dw *w, uint16_t g, uint16_t e) { dw_u16(w, g); dw_u16(w, e); }
static void dw_short(struct dw *w, uint16_t g, uint16_t e, const char *vr, const void *v, uint16_t n)
{
    dw_tag(w, g, e); dw_raw(w, vr, 2); dw_u16(w, n); dw_raw(w, v, n);
}
static void dw_us(struct dw *w, uint16_t g, uint16_t e, uint16_t v) { uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; dw_short(w, g, e, "US", t, 2); }
static void dw_long(struct dw *w, uint16_t g, uint16_t e, const char *vr, uint32_t n)
{
    dw_tag(w, g, e); dw_raw(w, vr, 2); dw_u16(w, 0); dw_u32(w, n);
}
static void dw_start(struct dw *w, const char *ts)
{
    memset(w, 0, sizeof(*w));
    w->n = 128;
    dw_raw(w, "DICM", 4);
    size_t l = strlen(ts);
    char uid[64] = {0};
    memcpy(uid, ts, l);
    dw_short(w, 0x0002, 0x0010, "UI", uid, (uint16_t)((l + 1) & ~(size_t)1));
}
/* 2x2 MONOCHROME2 8-bit, explicit VR, with a PatientName. */
static void dw_small_image(struct dw *w, uint16_t rows, uint16_t cols)
{
    dw_start(w, "1.2.840.10008.1.2.1");
    dw_short(w, 0x0010, 0x0010, "PN", SECRET_NAME, 20);
    dw_us(w, 0x0028, 0x0002, 1);
    dw_short(w, 0x0028, 0x0004, "CS", "MONOCHROME2 ", 12);
    dw_us(w, 0x0028, 0x0010, rows);
    dw_us(w, 0x0028, 0x0011, cols);
    dw_us(w, 0x0028, 0x0100, 8);
    dw_long(w, 0x7fe0, 0x0010, "OB", 4);
    uint8_t px[4] = {0, 10, 20, 255};
    dw_raw(w, px, 4);
}

static void expect_no_secret(void)
{
    if (strstr(cl_err_detail(), "ZZSECRET"))
        fail_msg("patient name in an error detail");
}

static void test_dicom_handmade(void **state)
{
    (void)state;
    struct dw w;
    struct cl_image img = {0};
    dw_small_image(&w, 2, 2);
    assert_int_equal(cl_image_sniff(w.b, w.n), CL_IMAGE_FMT_DICOM);
    assert_ok(cl_image_decode(w.b, w.n, NULL, &img));
    uint8_t want[12] = {0, 0, 0, 10, 10, 10, 20, 20, 20, 255, 255, 255};
    expect_rgb(&img, 2, 2, want);
    cl_image_free(&img);
    /* every truncation is an error, never a read past the end */
    for (size_t cut = 0; cut < w.n; cut++) {
        cl_err rc = cl_image_decode(w.b, cut, NULL, &img);
        assert_true(rc != CL_OK);
        assert_null(img.rgb);
        expect_no_secret();
    }
    /* the header claims 65535 x 65535: refused before any pixel allocation */
    dw_small_image(&w, 65535, 65535);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DIMENSIONS);
    assert_non_null(strstr(cl_err_detail(), "dicom"));
    /* rows/columns right but pixel data short */
    dw_small_image(&w, 2, 3);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_MALFORMED);
    /* big-endian transfer syntax */
    dw_start(&w, "1.2.840.10008.1.2.2");
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_UNSUPPORTED);
    /* no transfer syntax */
    dw_start(&w, "1.2.840.10008.1.2.1");
    memset(w.b + 132, 0, 4);
    w.b[132] = 2; w.b[134] = 0x12; /* (0002,0012) instead of (0002,0010) */
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_MISSING);
    /* Rows missing */
    dw_start(&w, "1.2.840.10008.1.2.1");
    dw_short(&w, 0x0010, 0x0010, "PN", SECRET_NAME, 20);
    dw_short(&w, 0x0028, 0x0004, "CS", "MONOCHROME2 ", 12);
    dw_us(&w, 0x0028, 0x0011, 2);
    dw_us(&w, 0x0028, 0x0100, 8);
    dw_long(&w, 0x7fe0, 0x0010, "OB", 4);
    dw_u32(&w, 0);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_MISSING);
    assert_non_null(strstr(cl_err_detail(), "Rows"));
    expect_no_secret();
    /* elements out of order */
    dw_start(&w, "1.2.840.10008.1.2.1");
    dw_us(&w, 0x0028, 0x0011, 2);
    dw_us(&w, 0x0028, 0x0010, 2);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_MALFORMED);
    /* an unsupported photometric interpretation: the error does not echo the value */
    dw_start(&w, "1.2.840.10008.1.2.1");
    dw_short(&w, 0x0028, 0x0004, "CS", "ZZSECRET", 8);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_UNSUPPORTED);
    expect_no_secret();
    /* sequences nested 40 deep (undefined lengths): the depth limit, not the stack */
    dw_start(&w, "1.2.840.10008.1.2.1");
    for (int i = 0; i < 40; i++) {
        dw_long(&w, 0x0008, 0x1140, "SQ", 0xffffffffu);
        dw_tag(&w, 0xfffe, 0xe000);
        dw_u32(&w, 0xffffffffu);
    }
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_DEPTH);
    /* an item delimiter at the top level */
    dw_start(&w, "1.2.840.10008.1.2.1");
    dw_tag(&w, 0xfffe, 0xe00d);
    dw_u32(&w, 0);
    assert_err(cl_image_decode(w.b, w.n, NULL, &img), CL_E_IMAGE_DICOM_MALFORMED);
    /* a JPEG Baseline file whose fragment is not a JPEG */
    dw_start(&w, "1.2.840.10008.1.2.4.50");
    dw_short(&w, 0x0028, 0x0004, "CS", "MONOCHROME2 ", 12);
    dw_us(&w, 0x0028, 0x0010, 2);
    dw_us(&w, 0x0028, 0x0011, 2);
    dw_us(&w, 0x0028, 0x0100, 8);
    dw_long(&w, 0x7fe0, 0x0010, "OB", 0xffffffffu);
    dw_tag(&w, 0xfffe, 0xe000); dw_u32(&w, 0);
    dw_tag(&w, 0xfffe, 0xe000); dw_u32(&w, 4); dw_u32(&w, 0x12345678);
    dw_tag(&w, 0xfffe, 0xe0dd); dw_u32(&w, 0);
    cl_err rc = cl_image_decode(w.b, w.n, NULL, &img);
    assert_true(rc == CL_E_IMAGE_CORRUPT || rc == CL_E_IMAGE_TRUNCATED);
}

static bool have_dcmtk(void)
{
    if (system("command -v img2dcm >/dev/null 2>&1 && command -v dump2dcm >/dev/null 2>&1 && "
               "command -v dcmconv >/dev/null 2>&1 && command -v dcmdjpeg >/dev/null 2>&1") != 0) {
        print_message("skipped: DCMTK (img2dcm, dump2dcm, dcmconv, dcmdjpeg) not installed; scripts/install-deps adds it\n");
        return false;
    }
    return true;
}

static const char *work_dir(void)
{
    static char dir[900];
    const char *b = getenv("CLOISTER_BUILD_DIR");
    snprintf(dir, sizeof(dir), "%s/tests/image/dicom-work", b && *b ? b : ".");
    char cmd[2000];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    return dir;
}

static void run(const char *fmt, ...) CL_PRINTF(1, 2);
static void run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static uint8_t *read_rel(const char *dir, const char *name, size_t *n)
{
    char p[1200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return read_file(p, n);
}


/* Runs `cloister ARGS` with stdout and stderr captured together; returns the exit status. */
static int cli(char *out, size_t cap, const char *fmt, ...) CL_PRINTF(3, 4);
static int cli(char *out, size_t cap, const char *fmt, ...)
{
    char args[2000], cmd[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    const char *b = getenv("CLOISTER_BUILD_DIR");
    snprintf(cmd, sizeof(cmd), "'%s/src/cli/cloister' %s 2>&1", b && *b ? b : ".", args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_cli_clean(const char *out)
{
    if (strstr(out, "ZZSECRET") || strstr(out, "ID-77"))
        fail_msg("patient identifier in cloister's output: %s", out);
}

static void decode_file(const char *dir, const char *name, struct cl_image *img)
{
    size_t n = 0;
    uint8_t *d = read_rel(dir, name, &n);
    assert_non_null(memmem(d, n, SECRET_NAME, strlen(SECRET_NAME))); /* the file does carry it */
    assert_int_equal(cl_image_sniff(d, n), CL_IMAGE_FMT_DICOM);
    cl_err rc = cl_image_decode(d, n, NULL, img);
    if (rc != CL_OK) {
        char b[400];
        fail_msg("%s: %s", name, cl_err_format(rc, b, sizeof(b)));
    }
    /* a truncated copy fails without naming the patient */
    struct cl_image bad = {0};
    assert_true(cl_image_decode(d, n - n / 3, NULL, &bad) != CL_OK);
    assert_null(bad.rgb);
    expect_no_secret();
    free(d);
}

#define M16_DUMP \
    "(0008,0016) UI =SecondaryCaptureImageStorage\n" \
    "(0008,0018) UI 1.2.826.0.1.3680043.2.1125.1\n" \
    "(0008,1140) SQ (Sequence with undefined length #=1)\n" \
    "  (fffe,e000) na (Item with undefined length #=1)\n" \
    "    (0008,1150) UI =CTImageStorage\n" \
    "    (0088,0200) SQ (Sequence with undefined length #=1)\n" \
    "      (fffe,e000) na (Item with undefined length #=1)\n" \
    "        (0028,0010) US 1\n" \
    "        (0028,0011) US 1\n" \
    "        (7fe0,0010) OB 01\n" \
    "      (fffe,e00d) na (ItemDelimitationItem)\n" \
    "    (fffe,e0dd) na (SequenceDelimitationItem)\n" \
    "  (fffe,e00d) na (ItemDelimitationItem)\n" \
    "(fffe,e0dd) na (SequenceDelimitationItem)\n" \
    "(0010,0010) PN [" SECRET_NAME "]\n" \
    "(0010,0020) LO [ID-77-SECRET]\n" \
    "(0028,0002) US 1\n" \
    "(0028,0004) CS [%s]\n" \
    "(0028,0010) US 2\n" \
    "(0028,0011) US 3\n" \
    "(0028,0100) US 16\n" \
    "(0028,0101) US 12\n" \
    "(0028,0102) US 11\n" \
    "(0028,0103) US 1\n" \
    "%s" \
    "(0028,1052) DS [-50]\n" \
    "(0028,1053) DS [2]\n" \
    "(7fe0,0010) OW 0000\\0001\\0fff\\0800\\07ff\\0064\n"

static void gray_rgb(const uint8_t *g, size_t n, uint8_t *rgb)
{
    for (size_t i = 0; i < n; i++)
        memset(rgb + i * 3, g[i], 3);
}

/* 16-bit signed, 12 bits stored, slope 2, intercept -50: stored 0, 1, -1, -2048, 2047, 100 become -50, -48, -52,
 * -4146, 4044, 150; window 100/401 maps them (linear VOI, rounded) to 32, 33, 31, 0, 255, 160; without a window
 * min..max gives 128, 128, 127, 0, 255, 134; MONOCHROME1 inverts. */
static void test_dicom_dcmtk_16bit(void **state)
{
    (void)state;
    if (!have_dcmtk())
        skip();
    const char *dir = work_dir();
    static const uint8_t win[6] = {32, 33, 31, 0, 255, 160}, minmax[6] = {128, 128, 127, 0, 255, 134};
    const char *window = "(0028,1050) DS [100\\200]\n(0028,1051) DS [401\\100]\n";
    struct {
        const char *photo, *voi, *opts, *name;
        const uint8_t *want;
        bool invert;
    } cases[] = {
        {"MONOCHROME2", window, "+te -e", "m2-win-explicit-undef.dcm", win, false},
        {"MONOCHROME2", window, "+ti", "m2-win-implicit.dcm", win, false},
        {"MONOCHROME2", window, "+te", "m2-win-explicit.dcm", win, false},
        {"MONOCHROME1", window, "+ti -e", "m1-win-implicit-undef.dcm", win, true},
        {"MONOCHROME2", "", "+te", "m2-minmax.dcm", minmax, false},
        {"MONOCHROME1", "", "+ti", "m1-minmax.dcm", minmax, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[1200], text[4096];
        snprintf(path, sizeof(path), "%s/in.dump", dir);
        snprintf(text, sizeof(text), M16_DUMP, cases[i].photo, cases[i].voi);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        run("dump2dcm -q %s '%s' '%s/%s'", cases[i].opts, path, dir, cases[i].name);
        struct cl_image img = {0};
        decode_file(dir, cases[i].name, &img);
        uint8_t g[6], rgb[18];
        for (int k = 0; k < 6; k++)
            g[k] = cases[i].invert ? (uint8_t)(255 - cases[i].want[k]) : cases[i].want[k];
        gray_rgb(g, 6, rgb);
        expect_rgb(&img, 3, 2, rgb);
        cl_image_free(&img);
        char out[4096];
        assert_int_equal(cli(out, sizeof(out), "image '%s/%s' --size 4 --json", dir, cases[i].name), 0);
        assert_non_null(strstr(out, "\"format\":\"dicom\",\"width\":3,\"height\":2"));
        expect_cli_clean(out);
        run("head -c 300 '%s/%s' > '%s/cut.dcm'", dir, cases[i].name, dir);
        assert_int_equal(cli(out, sizeof(out), "image '%s/cut.dcm'", dir), 1);
        assert_non_null(strstr(out, "cloister image: decode:"));
        expect_cli_clean(out);
    }
}

/* A test X-ray as JPEG -> img2dcm (JPEG Baseline), dcmdjpeg (native), dcmconv +te / +ti. */
static void test_dicom_dcmtk_xray(void **state)
{
    (void)state;
    char png_path[1024];
    CL_TESTDATA("images/chest-xray/00000001_000.png", png_path);
    if (!have_dcmtk())
        skip();
    const char *dir = work_dir();
    size_t n = 0;
    uint8_t *png = read_file(png_path, &n);
    struct cl_image x = {0};
    assert_ok(cl_image_decode(png, n, NULL, &x));
    free(png);
    size_t np = (size_t)x.w * x.h;
    uint8_t *g = malloc(np);
    for (size_t i = 0; i < np; i++)
        g[i] = x.rgb[i * 3];
    struct mem j = make_jpeg(x.w, x.h, 1, JCS_GRAYSCALE, 0, g);
    char p[1200];
    snprintf(p, sizeof(p), "%s/xray.jpg", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(j.p, 1, j.n, f), j.n);
    fclose(f);

    /* expected: libjpeg's samples stretched min..max (img2dcm writes no window) */
    struct cl_image jd = {0};
    assert_ok(cl_image_decode(j.p, j.n, NULL, &jd));
    int lo = 255, hi = 0;
    for (size_t i = 0; i < np; i++) {
        lo = jd.rgb[i * 3] < lo ? jd.rgb[i * 3] : lo;
        hi = jd.rgb[i * 3] > hi ? jd.rgb[i * 3] : hi;
    }
    assert_true(hi > lo);
    uint8_t *want = malloc(np * 3);
    for (size_t i = 0; i < np; i++)
        memset(want + i * 3, (int)lround((jd.rgb[i * 3] - lo) * 255.0 / (hi - lo)), 3);

    run("img2dcm -q -k 'PatientName=" SECRET_NAME "' -k 'PatientID=ID-77-SECRET' '%s' '%s/x-jpeg.dcm'", p, dir);
    run("dcmdjpeg -q '%s/x-jpeg.dcm' '%s/x-native.dcm'", dir, dir);
    run("dcmconv -q +te -e '%s/x-native.dcm' '%s/x-explicit.dcm'", dir, dir);
    run("dcmconv -q +ti '%s/x-native.dcm' '%s/x-implicit.dcm'", dir, dir);
    struct cl_image a = {0}, b = {0}, c = {0};
    decode_file(dir, "x-jpeg.dcm", &a);
    expect_rgb(&a, x.w, x.h, want);
    decode_file(dir, "x-explicit.dcm", &b);
    decode_file(dir, "x-implicit.dcm", &c);
    expect_rgb(&c, b.w, b.h, b.rgb);
    /* DCMTK's own JPEG decoder made the native pixels: within a level of libjpeg-turbo's */
    expect_close(&b, x.w, x.h, want, 1);
    /* DCMTK's JPEG Baseline encoder, the frame split into 8 KiB fragments that the reader must join */
    run("dcmcjpeg -q +eb +fs 8 '%s/x-native.dcm' '%s/x-frag.dcm'", dir, dir);
    run("dcmdump '%s/x-frag.dcm' | grep -c '(fffe,e000) pi' | awk '$1 < 4 {exit 1}'", dir);
    struct cl_image fr = {0};
    decode_file(dir, "x-frag.dcm", &fr);
    assert_int_equal(fr.w, x.w);
    assert_int_equal(fr.h, x.h);
    double dsum = 0;
    for (size_t i = 0; i < np * 3; i++)
        dsum += fabs((double)fr.rgb[i] - (double)b.rgb[i]);
    if (dsum / (double)(np * 3) > 2.0) /* lossy at quality 90: close, not equal */
        fail_msg("fragmented JPEG DICOM: mean difference %.3f", dsum / (double)(np * 3));
    cl_image_free(&fr);
    cl_image_free(&a);
    cl_image_free(&b);
    cl_image_free(&c);
    cl_image_free(&jd);
    cl_image_free(&x);
    free(want);
    free(g);
    free(j.p);
}


/* ---- the CLI ---- */

static void test_cli(void **state)
{
    (void)state;
    char out[4096], png[1024], ref[1024];
    assert_int_equal(cli(out, sizeof(out), "image --help"), 0);
    assert_non_null(strstr(out, "usage: cloister image FILE"));
    assert_int_equal(cli(out, sizeof(out), "image"), 2);
    assert_int_equal(cli(out, sizeof(out), "image x.png --size 0"), 2);
    assert_int_equal(cli(out, sizeof(out), "image /nonexistent.png"), 1);
    CL_TESTDATA("images/chest-xray/00027426_000.png", png);
    CL_REFERENCE("tiny/tiny-gemma3-f32/IMG-00027426_000.f32kv.json", ref);
    assert_int_equal(cli(out, sizeof(out), "image '%s' --size 224 --json", png), 0);
    assert_non_null(strstr(out, "{\"format\":\"png\",\"width\":512,\"height\":512,\"size\":224,"));
    size_t n = 0;
    char *j = (char *)read_file(ref, &n);
    char *k = strstr(j, "\"image_input_sum\"");
    assert_non_null(k);
    double want = strtod(strchr(k, ':') + 1, NULL);
    double got = strtod(strstr(out, "\"sum\":") + 6, NULL);
    if (fabs(got - want) > 1e-3)
        fail_msg("sum %.6f, reference %.6f", got, want);
    free(j);
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
        cmocka_unit_test(test_dicom_handmade),
        cmocka_unit_test(test_dicom_dcmtk_16bit),
        cmocka_unit_test(test_dicom_dcmtk_xray),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
