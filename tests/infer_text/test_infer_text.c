/* Tests for cl_infer_text: GGUF reader and writer, tokenizer, chat templates,
 * sampling. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/tokenizer.h"

#include <jansson.h>

/* ---- a tiny little-endian byte builder for hand-made GGUF files ---- */

struct tb {
    uint8_t *p;
    size_t len, cap;
};

static void tb_bytes(struct tb *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}
static void tb_u8(struct tb *b, uint8_t v) { tb_bytes(b, &v, 1); }
static void tb_u32(struct tb *b, uint32_t v) { tb_bytes(b, &v, 4); }
static void tb_u64(struct tb *b, uint64_t v) { tb_bytes(b, &v, 8); }
static void tb_str(struct tb *b, const char *s) { tb_u64(b, strlen(s)); tb_bytes(b, s, strlen(s)); }
static void tb_pad(struct tb *b, size_t align) { while (b->len % align) tb_u8(b, 0); }

/* Knobs that break one thing at a time; mk_default() gives a valid file. */
struct mk {
    uint32_t magic, version;
    uint64_t n_t_hdr, n_kv_hdr; /* UINT64_MAX: the real count */
    bool dup_key, nested, bad_kv_type, dup_name;
    uint8_t bool_val;
    uint32_t align;             /* 0: no general.alignment key */
    uint32_t align_type;
    const char *t1_name;
    uint32_t t1_ndims, t1_type;
    uint64_t t1_dim0, t1_dim1, t1_off; /* t1_off UINT64_MAX: the natural offset */
    uint64_t str_len_override;  /* for general.architecture; 0: real */
    size_t data_pad_extra;
};

static struct mk mk_default(void)
{
    struct mk m = {.magic = CL_GGUF_MAGIC, .version = 3, .n_t_hdr = UINT64_MAX, .n_kv_hdr = UINT64_MAX,
                   .bool_val = 1, .align_type = CL_GGUF_UINT32, .t1_name = "b.weight", .t1_ndims = 1,
                   .t1_type = CL_GGML_Q8_0, .t1_dim0 = 32, .t1_dim1 = 1, .t1_off = UINT64_MAX};
    return m;
}

static void mk_build(const struct mk *m, struct tb *b)
{
    memset(b, 0, sizeof(*b));
    uint32_t align = m->align ? m->align : 32;
    uint64_t n_kv = 6 + (m->align ? 1 : 0) + (m->dup_key ? 1 : 0) + (m->nested ? 1 : 0) + (m->bad_kv_type ? 1 : 0);
    tb_u32(b, m->magic);
    tb_u32(b, m->version);
    tb_u64(b, m->n_t_hdr != UINT64_MAX ? m->n_t_hdr : 2);
    tb_u64(b, m->n_kv_hdr != UINT64_MAX ? m->n_kv_hdr : n_kv);
    tb_str(b, "general.architecture");
    tb_u32(b, CL_GGUF_STRING);
    if (m->str_len_override) {
        tb_u64(b, m->str_len_override);
        tb_bytes(b, "llama", 5);
    } else {
        tb_str(b, "llama");
    }
    tb_str(b, "test.u32");
    tb_u32(b, CL_GGUF_UINT32);
    tb_u32(b, 7);
    tb_str(b, "test.f32");
    tb_u32(b, CL_GGUF_FLOAT32);
    float f = 1.5f;
    tb_bytes(b, &f, 4);
    tb_str(b, "test.bool");
    tb_u32(b, CL_GGUF_BOOL);
    tb_u8(b, m->bool_val);
    tb_str(b, "test.tokens");
    tb_u32(b, CL_GGUF_ARRAY);
    tb_u32(b, CL_GGUF_STRING);
    tb_u64(b, 3);
    tb_str(b, "a");
    tb_str(b, "bc");
    tb_str(b, "");
    tb_str(b, "test.ints");
    tb_u32(b, CL_GGUF_ARRAY);
    tb_u32(b, CL_GGUF_INT32);
    tb_u64(b, 3);
    tb_u32(b, 1);
    tb_u32(b, (uint32_t)-2);
    tb_u32(b, 3);
    if (m->align) {
        tb_str(b, "general.alignment");
        tb_u32(b, m->align_type);
        if (m->align_type == CL_GGUF_UINT64)
            tb_u64(b, m->align);
        else
            tb_u32(b, m->align);
    }
    if (m->dup_key) {
        tb_str(b, "test.u32");
        tb_u32(b, CL_GGUF_UINT32);
        tb_u32(b, 8);
    }
    if (m->nested) {
        tb_str(b, "test.nested");
        tb_u32(b, CL_GGUF_ARRAY);
        tb_u32(b, CL_GGUF_ARRAY);
        tb_u64(b, 0);
    }
    if (m->bad_kv_type) {
        tb_str(b, "test.bad");
        tb_u32(b, 13);
        tb_u32(b, 0);
    }
    /* tensor 0: f32 [4, 2] at 0 */
    tb_str(b, "a.weight");
    tb_u32(b, 2);
    tb_u64(b, 4);
    tb_u64(b, 2);
    tb_u32(b, CL_GGML_F32);
    tb_u64(b, 0);
    /* tensor 1 */
    tb_str(b, m->dup_name ? "a.weight" : m->t1_name);
    tb_u32(b, m->t1_ndims);
    for (uint32_t d = 0; d < m->t1_ndims && d < 8; d++)
        tb_u64(b, d == 0 ? m->t1_dim0 : d == 1 ? m->t1_dim1 : 1);
    tb_u32(b, m->t1_type);
    uint64_t off1 = (32 + align - 1) / align * align;
    tb_u64(b, m->t1_off != UINT64_MAX ? m->t1_off : off1);
    tb_pad(b, align);
    size_t data0 = b->len;
    for (int i = 0; i < 8; i++) {
        float v = (float)i * 0.5f;
        tb_bytes(b, &v, 4);
    }
    while (b->len < data0 + off1)
        tb_u8(b, 0);
    for (int i = 0; i < 34; i++)
        tb_u8(b, (uint8_t)(0x40 + i));
    for (size_t i = 0; i < m->data_pad_extra; i++)
        tb_u8(b, 0);
}

static cl_err mk_open(const struct mk *m, cl_gguf **g, struct tb *b)
{
    mk_build(m, b);
    return cl_gguf_open_memory(b->p, b->len, g);
}

static void test_gguf_valid(void **state)
{
    (void)state;
    struct mk m = mk_default();
    struct tb b;
    cl_gguf *g = NULL;
    assert_ok(mk_open(&m, &g, &b));
    assert_int_equal(cl_gguf_version(g), 3);
    assert_int_equal(cl_gguf_alignment(g), 32);
    assert_int_equal(cl_gguf_n_kv(g), 6);
    assert_int_equal(cl_gguf_n_tensors(g), 2);
    assert_int_equal(cl_gguf_data_offset(g) % 32, 0);
    struct cl_gguf_str s;
    assert_ok(cl_gguf_get_str(g, "general.architecture", &s));
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.p, "llama", 5);
    assert_true(s.p > (const char *)b.p && s.p < (const char *)b.p + b.len); /* in place */
    uint32_t u;
    assert_ok(cl_gguf_get_u32(g, "test.u32", &u));
    assert_int_equal(u, 7);
    int64_t iv;
    assert_ok(cl_gguf_get_int(g, "test.u32", &iv));
    assert_int_equal(iv, 7);
    float f;
    assert_ok(cl_gguf_get_f32(g, "test.f32", &f));
    assert_true(f == 1.5f);
    assert_ok(cl_gguf_get_float(g, "test.f32", &f));
    bool bv = false;
    assert_ok(cl_gguf_get_bool(g, "test.bool", &bv));
    assert_true(bv);
    /* type mismatches and missing keys */
    assert_err(cl_gguf_get_u32(g, "test.f32", &u), CL_E_INFER_GGUF_KEY_TYPE);
    assert_non_null(strstr(cl_err_detail(), "test.f32"));
    assert_err(cl_gguf_get_i32(g, "test.u32", (int32_t *)&u), CL_E_INFER_GGUF_KEY_TYPE);
    assert_err(cl_gguf_get_str(g, "test.u32", &s), CL_E_INFER_GGUF_KEY_TYPE);
    assert_err(cl_gguf_get_u32(g, "nope", &u), CL_E_INFER_GGUF_KEY_MISSING);
    assert_non_null(strstr(cl_err_detail(), "nope"));
    assert_err(cl_gguf_get_int(g, "test.f32", &iv), CL_E_INFER_GGUF_KEY_TYPE);
    assert_err(cl_gguf_get_bool(g, "test.tokens", &bv), CL_E_INFER_GGUF_KEY_TYPE);
    uint64_t u64;
    assert_err(cl_gguf_get_u64(g, "test.u32", &u64), CL_E_INFER_GGUF_KEY_TYPE);
    /* arrays */
    struct cl_gguf_str *tok = NULL;
    size_t n = 0;
    assert_ok(cl_gguf_get_arr_str(g, "test.tokens", &tok, &n));
    assert_int_equal(n, 3);
    assert_int_equal(tok[1].len, 2);
    assert_memory_equal(tok[1].p, "bc", 2);
    assert_int_equal(tok[2].len, 0);
    free(tok);
    int32_t *ints = NULL;
    assert_ok(cl_gguf_get_arr_i32(g, "test.ints", &ints, &n));
    assert_int_equal(n, 3);
    assert_int_equal(ints[1], -2);
    free(ints);
    float *fl = NULL;
    assert_err(cl_gguf_get_arr_f32(g, "test.ints", &fl, &n), CL_E_INFER_GGUF_KEY_TYPE);
    assert_err(cl_gguf_get_arr_str(g, "test.ints", &tok, &n), CL_E_INFER_GGUF_KEY_TYPE);
    assert_err(cl_gguf_get_arr_i32(g, "test.u32", &ints, &n), CL_E_INFER_GGUF_KEY_TYPE);
    const struct cl_gguf_kv *kv = cl_gguf_kv_at(g, 0);
    assert_string_equal(kv->key, "general.architecture");
    assert_null(cl_gguf_kv_at(g, 6));
    /* tensors, used in place */
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, "a.weight");
    assert_non_null(t);
    assert_int_equal(t->type, CL_GGML_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 4);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 32);
    assert_ptr_equal(t->data, b.p + cl_gguf_data_offset(g));
    float f3;
    memcpy(&f3, (const uint8_t *)t->data + 12, 4);
    assert_true(f3 == 1.5f);
    t = cl_gguf_tensor_at(g, 1);
    assert_string_equal(t->name, "b.weight");
    assert_int_equal(t->type, CL_GGML_Q8_0);
    assert_int_equal(t->nbytes, 34);
    assert_int_equal(((const uint8_t *)t->data)[0], 0x40);
    assert_null(cl_gguf_find_tensor(g, "c.weight"));
    assert_err(cl_gguf_get_tensor(g, "c.weight", &t), CL_E_INFER_GGUF_TENSOR_MISSING);
    assert_non_null(strstr(cl_err_detail(), "c.weight"));
    cl_gguf_free(g);

    /* v2 has the same layout */
    m.version = 2;
    free(b.p);
    assert_ok(mk_open(&m, &g, &b));
    assert_int_equal(cl_gguf_version(g), 2);
    cl_gguf_free(g);
    free(b.p);

    /* custom alignment */
    m = mk_default();
    m.align = 64;
    assert_ok(mk_open(&m, &g, &b));
    assert_int_equal(cl_gguf_alignment(g), 64);
    assert_int_equal(cl_gguf_data_offset(g) % 64, 0);
    assert_int_equal(cl_gguf_find_tensor(g, "b.weight")->offset, 64);
    cl_gguf_free(g);
    free(b.p);
}

struct broken_case {
    const char *what;
    cl_err want;
};

static void expect_broken(const struct mk *m, cl_err want, const char *what)
{
    struct tb b;
    cl_gguf *g = NULL;
    cl_err e = mk_open(m, &g, &b);
    if (e != want)
        fail_msg("%s: got %s (%s), want %s", what, cl_err_name(e) ? cl_err_name(e) : "OK", cl_err_detail(),
                 cl_err_name(want));
    assert_null(g);
    assert_true(strlen(cl_err_detail()) > 0);
    free(b.p);
}

static void test_gguf_broken(void **state)
{
    (void)state;
    struct mk m;
#define BROKEN(set, code) do { m = mk_default(); set; expect_broken(&m, code, #set); } while (0)
    BROKEN(m.magic = 0x46554748, CL_E_INFER_GGUF_MAGIC);
    BROKEN(m.version = 1, CL_E_INFER_GGUF_VERSION);
    BROKEN(m.version = 4, CL_E_INFER_GGUF_VERSION);
    BROKEN(m.version = 0x03000000, CL_E_INFER_GGUF_VERSION);
    BROKEN(m.n_t_hdr = 1ull << 40, CL_E_INFER_GGUF_LIMIT);
    BROKEN(m.n_kv_hdr = UINT64_MAX - 1, CL_E_INFER_GGUF_LIMIT);
    BROKEN(m.n_kv_hdr = 60000, CL_E_INFER_GGUF_TRUNCATED);
    BROKEN(m.n_t_hdr = 60000, CL_E_INFER_GGUF_TRUNCATED);
    BROKEN(m.n_t_hdr = 3, CL_E_INFER_GGUF_BAD_NAME); /* reads padding as an empty name */
    BROKEN(m.dup_key = true, CL_E_INFER_GGUF_BAD_KEY);
    BROKEN(m.nested = true, CL_E_INFER_GGUF_BAD_TYPE);
    BROKEN(m.bad_kv_type = true, CL_E_INFER_GGUF_BAD_TYPE);
    BROKEN(m.bool_val = 2, CL_E_INFER_GGUF_BAD_VALUE);
    BROKEN(m.str_len_override = UINT64_MAX, CL_E_INFER_GGUF_TRUNCATED);
    BROKEN(m.str_len_override = 1u << 30, CL_E_INFER_GGUF_TRUNCATED);
    BROKEN(m.dup_name = true, CL_E_INFER_GGUF_BAD_NAME);
    BROKEN(m.t1_name = "", CL_E_INFER_GGUF_BAD_NAME);
    BROKEN(m.t1_name = "0123456789012345678901234567890123456789012345678901234567890123", CL_E_INFER_GGUF_BAD_NAME);
    BROKEN(m.t1_ndims = 0, CL_E_INFER_GGUF_BAD_DIMS);
    BROKEN(m.t1_ndims = 5, CL_E_INFER_GGUF_BAD_DIMS);
    BROKEN(m.t1_dim0 = 0, CL_E_INFER_GGUF_BAD_DIMS);
    BROKEN(m.t1_dim0 = 33, CL_E_INFER_GGUF_BAD_DIMS); /* not a multiple of the Q8_0 block */
    BROKEN(m.t1_dim0 = 1ull << 63, CL_E_INFER_GGUF_BAD_DIMS);
    BROKEN((m.t1_ndims = 2, m.t1_dim0 = 1ull << 40, m.t1_dim1 = 1ull << 40), CL_E_INFER_GGUF_OVERFLOW);
    BROKEN((m.t1_ndims = 2, m.t1_dim0 = 1ull << 32, m.t1_dim1 = 1ull << 20), CL_E_INFER_GGUF_BOUNDS);
    BROKEN(m.t1_type = 4, CL_E_INFER_GGUF_TENSOR_TYPE); /* removed Q4_2 */
    BROKEN(m.t1_type = 1000, CL_E_INFER_GGUF_TENSOR_TYPE);
    BROKEN(m.t1_off = 16, CL_E_INFER_GGUF_ALIGN);
    BROKEN(m.t1_off = 0, CL_E_INFER_GGUF_OVERLAP);
    BROKEN(m.t1_off = 64, CL_E_INFER_GGUF_BOUNDS);
    BROKEN(m.t1_off = UINT64_MAX - 31, CL_E_INFER_GGUF_BOUNDS);
    BROKEN(m.align = 48, CL_E_INFER_GGUF_ALIGN);
    BROKEN((m.align = 32, m.align_type = CL_GGUF_UINT64), CL_E_INFER_GGUF_ALIGN);
    BROKEN(m.align = 1u << 20, CL_E_INFER_GGUF_ALIGN);
#undef BROKEN

    /* Every truncation of a valid file fails cleanly. */
    m = mk_default();
    struct tb b;
    mk_build(&m, &b);
    for (size_t cut = 0; cut < b.len; cut++) {
        cl_gguf *g = NULL;
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, b.p, cut);
        cl_err e = cl_gguf_open_memory(copy, cut, &g);
        if (e == CL_OK)
            fail_msg("truncated at %zu of %zu parsed", cut, b.len);
        assert_null(g);
        free(copy);
    }
    free(b.p);
}

/* Loads every GGUF in a directory and checks that every tensor lies inside. */
static unsigned load_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".gguf"))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        cl_gguf *g = NULL;
        assert_ok(cl_gguf_open_file(path, &g));
        size_t len;
        const uint8_t *base = cl_gguf_buffer(g, &len);
        struct cl_gguf_str arch;
        assert_ok(cl_gguf_get_str(g, "general.architecture", &arch));
        for (size_t i = 0; i < cl_gguf_n_tensors(g); i++) {
            const struct cl_gguf_tensor *t = cl_gguf_tensor_at(g, i);
            assert_true((const uint8_t *)t->data >= base && (const uint8_t *)t->data + t->nbytes <= base + len);
            assert_ptr_equal(cl_gguf_find_tensor(g, t->name), t);
        }
        if (!strncmp(de->d_name, "tiny-", 5)) {
            assert_true(cl_gguf_n_tensors(g) > 5);
            assert_non_null(cl_gguf_find_tensor(g, "token_embd.weight"));
            struct cl_gguf_str *toks;
            size_t nt;
            assert_ok(cl_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &nt));
            assert_int_equal(nt, 32000);
            free(toks);
        }
        cl_gguf_free(g);
        n++;
    }
    closedir(d);
    return n;
}

static void test_gguf_reference_models(void **state)
{
    (void)state;
    char p[1024];
    CL_REFERENCE("models", p);
    assert_int_equal(load_dir(p), 7);
}

static void test_gguf_vocab_files(void **state)
{
    (void)state;
    char p[1024];
    CL_TESTDATA("gguf/vocab", p);
    assert_int_equal(load_dir(p), 4);
    CL_TESTDATA("gguf/models", p);
    assert_true(load_dir(p) >= 1);
}

static void test_gguf_open_file_errors(void **state)
{
    (void)state;
    cl_gguf *g = NULL;
    assert_err(cl_gguf_open_file("/nonexistent/x.gguf", &g), CL_E_CORE_NOT_FOUND);
    assert_err(cl_gguf_open_file("/", &g), CL_E_CORE_INVALID_ARG);
    char tmpl[] = "/tmp/cl_gguf_test_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    close(fd);
    assert_err(cl_gguf_open_file(tmpl, &g), CL_E_INFER_GGUF_TRUNCATED);
    unlink(tmpl);
    assert_err(cl_gguf_open_memory(NULL, 0, &g), CL_E_INFER_GGUF_TRUNCATED);
    assert_null(g);
}


static void test_gguf_writer_roundtrip(void **state)
{
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t align = pass ? 64 : 0;
        cl_gguf_writer *w = NULL;
        assert_ok(cl_gguf_writer_new(align, &w));
        assert_ok(cl_gguf_writer_add_str(w, "general.architecture", "llama"));
        assert_ok(cl_gguf_writer_add_u8(w, "t.u8", 200));
        assert_ok(cl_gguf_writer_add_i8(w, "t.i8", -5));
        assert_ok(cl_gguf_writer_add_u16(w, "t.u16", 60000));
        assert_ok(cl_gguf_writer_add_i16(w, "t.i16", -30000));
        assert_ok(cl_gguf_writer_add_u32(w, "t.u32", 4000000000u));
        assert_ok(cl_gguf_writer_add_i32(w, "t.i32", -7));
        assert_ok(cl_gguf_writer_add_u64(w, "t.u64", 1ull << 40));
        assert_ok(cl_gguf_writer_add_i64(w, "t.i64", -(1ll << 40)));
        assert_ok(cl_gguf_writer_add_f32(w, "t.f32", 0.25f));
        assert_ok(cl_gguf_writer_add_f64(w, "t.f64", 0.125));
        assert_ok(cl_gguf_writer_add_bool(w, "t.bool", true));
        assert_ok(cl_gguf_writer_add_strn(w, "t.bin", "a\0b", 3));
        const char *toks[] = {"<unk>", "\xe2\x96\x81the", ""};
        assert_ok(cl_gguf_writer_add_arr_str(w, "t.toks", toks, 3));
        float sc[3] = {0.0f, -1.5f, 2.0f};
        assert_ok(cl_gguf_writer_add_arr(w, "t.scores", CL_GGUF_FLOAT32, sc, 3));
        int32_t ty[3] = {2, 1, 6};
        assert_ok(cl_gguf_writer_add_arr(w, "t.types", CL_GGUF_INT32, ty, 3));
        assert_ok(cl_gguf_writer_add_arr(w, "t.empty", CL_GGUF_UINT8, NULL, 0));
        /* misuse */
        assert_err(cl_gguf_writer_add_u32(w, "t.u32", 1), CL_E_INFER_GGUF_BAD_KEY);
        assert_err(cl_gguf_writer_add_u32(w, "", 1), CL_E_INFER_GGUF_BAD_KEY);
        assert_err(cl_gguf_writer_add_u32(w, "bad\nkey", 1), CL_E_INFER_GGUF_BAD_KEY);
        assert_err(cl_gguf_writer_add_arr(w, "t.nested", CL_GGUF_ARRAY, ty, 1), CL_E_INFER_GGUF_BAD_TYPE);
        uint8_t badbool = 3;
        assert_err(cl_gguf_writer_add_arr(w, "t.bb", CL_GGUF_BOOL, &badbool, 1), CL_E_INFER_GGUF_BAD_VALUE);

        float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        int64_t ne_a[2] = {4, 2};
        assert_ok(cl_gguf_writer_add_tensor(w, "a.weight", CL_GGML_F32, 2, ne_a, a, sizeof(a)));
        uint8_t q[34 * 2];
        for (size_t i = 0; i < sizeof(q); i++)
            q[i] = (uint8_t)i;
        int64_t ne_q[2] = {32, 2};
        assert_ok(cl_gguf_writer_add_tensor(w, "q.weight", CL_GGML_Q8_0, 2, ne_q, q, sizeof(q)));
        void *k = NULL;
        int64_t ne_k[1] = {256};
        assert_ok(cl_gguf_writer_add_tensor_alloc(w, "k.weight", CL_GGML_Q4_K, 1, ne_k, &k));
        memset(k, 0x5a, 144);
        assert_err(cl_gguf_writer_add_tensor(w, "a.weight", CL_GGML_F32, 2, ne_a, a, sizeof(a)), CL_E_INFER_GGUF_BAD_NAME);
        assert_err(cl_gguf_writer_add_tensor(w, "b", CL_GGML_F32, 2, ne_a, a, 4), CL_E_INFER_GGUF_WRITER);
        assert_err(cl_gguf_writer_add_tensor(w, "c", CL_GGML_Q8_0, 1, ne_a, a, 34), CL_E_INFER_GGUF_BAD_DIMS);
        assert_err(cl_gguf_writer_add_tensor(w, "d", 5, 1, ne_a, a, 16), CL_E_INFER_GGUF_TENSOR_TYPE);
        assert_err(cl_gguf_writer_add_tensor(w, "0123456789012345678901234567890123456789012345678901234567890123",
                                             CL_GGML_F32, 2, ne_a, a, sizeof(a)), CL_E_INFER_GGUF_BAD_NAME);

        uint8_t *img = NULL;
        size_t len = 0;
        assert_ok(cl_gguf_writer_write_memory(w, &img, &len));
        char path[] = "/tmp/cl_gguf_w_XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_ok(cl_gguf_writer_write_file(w, path));
        cl_gguf_writer_free(w);

        /* the file equals the memory image */
        struct cl_buf fb;
        cl_buf_init(&fb, 1 << 20, CL_BUF_NONE);
        assert_ok(cl_file_read(path, 1 << 20, &fb));
        assert_int_equal(fb.len, len);
        assert_memory_equal(fb.data, img, len);
        cl_buf_free(&fb);

        cl_gguf *g = NULL;
        assert_ok(cl_gguf_open_file(path, &g));
        unlink(path);
        assert_int_equal(cl_gguf_version(g), 3);
        assert_int_equal(cl_gguf_alignment(g), pass ? 64 : 32);
        assert_int_equal(cl_gguf_n_kv(g), pass ? 18 : 17);
        assert_int_equal(len % (pass ? 64 : 32), 0);
        int64_t iv;
        uint32_t u;
        float f;
        bool bv;
        struct cl_gguf_str s;
        assert_ok(cl_gguf_get_int(g, "t.u8", &iv)); assert_int_equal(iv, 200);
        assert_ok(cl_gguf_get_int(g, "t.i8", &iv)); assert_int_equal(iv, -5);
        assert_ok(cl_gguf_get_int(g, "t.u16", &iv)); assert_int_equal(iv, 60000);
        assert_ok(cl_gguf_get_int(g, "t.i16", &iv)); assert_int_equal(iv, -30000);
        assert_ok(cl_gguf_get_u32(g, "t.u32", &u)); assert_int_equal(u, 4000000000u);
        assert_ok(cl_gguf_get_int(g, "t.i32", &iv)); assert_int_equal(iv, -7);
        assert_ok(cl_gguf_get_int(g, "t.u64", &iv)); assert_int_equal(iv, 1ll << 40);
        assert_ok(cl_gguf_get_int(g, "t.i64", &iv)); assert_int_equal(iv, -(1ll << 40));
        assert_err(cl_gguf_get_uint32_any(g, "t.i64", &u), CL_E_INFER_GGUF_BAD_VALUE);
        assert_ok(cl_gguf_get_f32(g, "t.f32", &f)); assert_true(f == 0.25f);
        assert_ok(cl_gguf_get_float(g, "t.f64", &f)); assert_true(f == 0.125f);
        assert_ok(cl_gguf_get_bool(g, "t.bool", &bv)); assert_true(bv);
        assert_ok(cl_gguf_get_str(g, "t.bin", &s));
        assert_int_equal(s.len, 3);
        assert_memory_equal(s.p, "a\0b", 3);
        struct cl_gguf_str *ts = NULL;
        size_t n;
        assert_ok(cl_gguf_get_arr_str(g, "t.toks", &ts, &n));
        assert_int_equal(n, 3);
        assert_int_equal(ts[1].len, 6);
        assert_memory_equal(ts[1].p, "\xe2\x96\x81the", 6);
        free(ts);
        float *fs = NULL;
        assert_ok(cl_gguf_get_arr_f32(g, "t.scores", &fs, &n));
        assert_true(fs[1] == -1.5f);
        free(fs);
        int32_t *is = NULL;
        assert_ok(cl_gguf_get_arr_i32(g, "t.types", &is, &n));
        assert_int_equal(is[2], 6);
        free(is);
        const struct cl_gguf_kv *kv = NULL;
        assert_ok(cl_gguf_get_arr(g, "t.empty", CL_GGUF_UINT8, &kv));
        assert_int_equal(kv->n, 0);
        assert_int_equal(cl_gguf_n_tensors(g), 3);
        const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, "a.weight");
        assert_non_null(t);
        assert_memory_equal(t->data, a, sizeof(a));
        t = cl_gguf_find_tensor(g, "q.weight");
        assert_int_equal(t->ne[1], 2);
        assert_memory_equal(t->data, q, sizeof(q));
        assert_int_equal(t->offset, pass ? 64 : 32);
        t = cl_gguf_find_tensor(g, "k.weight");
        assert_int_equal(t->type, CL_GGML_Q4_K);
        assert_int_equal(t->nbytes, 144);
        assert_int_equal(((const uint8_t *)t->data)[143], 0x5a);
        assert_int_equal(((uintptr_t)t->data - (uintptr_t)cl_gguf_buffer(g, NULL)) % (pass ? 64 : 32), 0);
        cl_gguf_free(g);
        free(img);
    }
    cl_gguf_writer *w = NULL;
    assert_err(cl_gguf_writer_new(48, &w), CL_E_INFER_GGUF_ALIGN);
    /* An empty writer still produces a valid file. */
    assert_ok(cl_gguf_writer_new(0, &w));
    uint8_t *img;
    size_t len;
    assert_ok(cl_gguf_writer_write_memory(w, &img, &len));
    assert_int_equal(len, 32); /* 24-byte header padded */
    cl_gguf *g = NULL;
    assert_ok(cl_gguf_open_memory(img, len, &g));
    cl_gguf_free(g);
    free(img);
    assert_err(cl_gguf_writer_write_file(w, "/nonexistent-dir/x.gguf"), CL_E_CORE_NOT_FOUND);
    cl_gguf_writer_free(w);
}


/* ---- tokenizer ---- */

static uint8_t *read_all(const char *path, size_t *len)
{
    struct cl_buf b;
    cl_buf_init(&b, 64u << 20, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 64u << 20, &b));
    assert_ok(cl_buf_append_u8(&b, 0));
    *len = b.len - 1;
    return b.data;
}

static cl_tokenizer *open_tok(const char *path, cl_gguf **g)
{
    cl_tokenizer *t = NULL;
    assert_ok(cl_gguf_open_file(path, g));
    assert_ok(cl_tokenizer_new(*g, &t));
    return t;
}

static size_t tok_vec(const cl_tokenizer *t, const char *s, size_t len, unsigned flags, int32_t *out, size_t cap)
{
    size_t n = 0;
    assert_ok(cl_tokenize(t, s, len, flags, out, cap, &n));
    return n;
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n)
            return false;
        for (size_t j = 1; j < l; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
        i += l;
    }
    return true;
}

/* llama.cpp test-tokenizer-0 format: strings separated by
 * "\n__ggml_vocab_test__\n"; one line of ids per string. Returns cases passed. */
static unsigned run_vocab_test(const char *gguf_path, const char *inp_path, const char *out_path)
{
    cl_gguf *g = NULL;
    cl_tokenizer *t = open_tok(gguf_path, &g);
    size_t il, ol;
    char *inp = (char *)read_all(inp_path, &il);
    char *exp = (char *)read_all(out_path, &ol);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *ip = inp, *op = exp;
    unsigned cases = 0;
    int32_t ids[4096];
    while (ip < inp + il) {
        char *e = strstr(ip, sep);
        assert_non_null(e);
        size_t len = (size_t)(e - ip);
        char *eol = strchr(op, '\n');
        assert_non_null(eol);
        *eol = 0;
        int32_t want[4096];
        size_t nw = 0;
        for (char *q = op; *q;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            want[nw++] = (int32_t)v;
            q = end;
        }
        size_t n = tok_vec(t, ip, len, CL_TOK_NONE, ids, 4096);
        if (n != nw || memcmp(ids, want, n * sizeof(int32_t)))
            fail_msg("%s: case %u (%zu bytes) differs: got %zu tokens, want %zu", inp_path, cases, len, n, nw);
        /* detokenize(tokenize(x)) == x for valid UTF-8 */
        if (utf8_valid((const uint8_t *)ip, len)) {
            struct cl_buf d;
            cl_buf_init(&d, 1 << 20, CL_BUF_NONE);
            assert_ok(cl_detokenize(t, ids, n, CL_TOK_NONE, &d));
            if (d.len != len || (len && memcmp(d.data, ip, len)))
                fail_msg("%s: case %u does not round-trip", inp_path, cases);
            cl_buf_free(&d);
        }
        cases++;
        ip = e + strlen(sep);
        op = eol + 1;
    }
    assert_true(op >= exp + ol);
    free(inp);
    free(exp);
    cl_tokenizer_free(t);
    cl_gguf_free(g);
    return cases;
}

static void test_tok_vocab_files(void **state)
{
    (void)state;
    char g[1024], i[1100], o[1100];
    unsigned total = 0;
    const char *vocabs[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"};
    for (size_t k = 0; k < 2; k++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "gguf/vocab/%s", vocabs[k]);
        CL_TESTDATA(rel, g);
        snprintf(i, sizeof(i), "%s.inp", g);
        snprintf(o, sizeof(o), "%s.out", g);
        unsigned n = run_vocab_test(g, i, o);
        print_message("%s: %u/%u cases passed\n", vocabs[k], n, n);
        assert_int_equal(n, 46);
        total += n;
    }
    /* The tiny llama-2 model carries the same vocabulary. */
    CL_TESTDATA("gguf/models/llama-2-tiny-random.gguf", g);
    CL_TESTDATA("gguf/vocab/ggml-vocab-llama-spm.gguf.inp", i);
    CL_TESTDATA("gguf/vocab/ggml-vocab-llama-spm.gguf.out", o);
    total += run_vocab_test(g, i, o);
    print_message("vocab test cases passed: %u\n", total);
    /* Byte-level BPE and WordPiece vocabularies are refused clearly. */
    const char *other[] = {"gguf/vocab/ggml-vocab-gpt-2.gguf", "gguf/vocab/ggml-vocab-bert-bge.gguf"};
    for (size_t k = 0; k < 2; k++) {
        CL_TESTDATA(other[k], g);
        cl_gguf *gg = NULL;
        cl_tokenizer *t = NULL;
        assert_ok(cl_gguf_open_file(g, &gg));
        assert_err(cl_tokenizer_new(gg, &t), CL_E_INFER_TOK_MODEL);
        cl_gguf_free(gg);
    }
}

static size_t json_ids(json_t *arr, int32_t *out, size_t cap)
{
    assert_true(json_is_array(arr));
    size_t n = json_array_size(arr);
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

static void test_tok_reference_prompts(void **state)
{
    (void)state;
    char root[1024];
    CL_REFERENCE("tiny", root);
    const char *models[] = {"tiny-llama-f32", "tiny-llama-q8_0", "tiny-llama-q4_0",
                            "tiny-gemma3-f32", "tiny-gemma3-q8_0", "tiny-gemma3-q4_0"};
    unsigned checked = 0;
    for (size_t m = 0; m < 6; m++) {
        char path[1200];
        snprintf(path, sizeof(path), "%s/../models/%s.gguf", root, models[m]);
        cl_gguf *g = NULL;
        cl_tokenizer *t = open_tok(path, &g);
        assert_int_equal(cl_tokenizer_add_space_prefix(t), strstr(models[m], "llama") != NULL);
        for (int variant = 0; variant < 2; variant++) {
            for (int p = 1; p <= 4; p++) {
                snprintf(path, sizeof(path), "%s/%s/P%d%s.json", root, models[m], p, variant ? ".f32kv" : "");
                json_error_t jerr;
                json_t *j = json_load_file(path, 0, &jerr);
                if (!j)
                    fail_msg("%s: %s", path, jerr.text);
                const char *prompt = json_string_value(json_object_get(j, "prompt"));
                assert_non_null(prompt);
                int32_t want[512], got[512];
                size_t nw = json_ids(json_object_get(j, "prompt_tokens"), want, 512);
                size_t n = tok_vec(t, prompt, strlen(prompt), CL_TOK_ADD_SPECIAL, got, 512);
                if (n != nw || memcmp(got, want, n * sizeof(int32_t)))
                    fail_msg("%s: prompt tokens differ (%zu vs %zu)", path, n, nw);
                /* generated text = detokenize(generated, remove_special=false, unparse_special=false) */
                size_t ng = json_ids(json_object_get(j, "generated_tokens"), got, 512);
                struct cl_buf d;
                cl_buf_init(&d, 1 << 20, CL_BUF_NONE);
                assert_ok(cl_detokenize(t, got, ng, CL_TOK_NONE, &d));
                const char *hex = json_string_value(json_object_get(j, "generated_text_hex"));
                size_t hl;
                uint8_t *want_text = cl_test_unhex(hex, &hl);
                if (hl != d.len || (hl && memcmp(want_text, d.data, hl)))
                    fail_msg("%s: generated text differs", path);
                free(want_text);
                cl_buf_free(&d);
                json_decref(j);
                checked++;
            }
        }
        if (strstr(models[m], "gemma3")) {
            /* Image prompts: text chunks tokenized with parse_special, BOS in front. */
            const char *imgs[] = {"IMG-00000001_000", "IMG-00027426_000"};
            for (size_t k = 0; k < 2; k++) {
                snprintf(path, sizeof(path), "%s/%s/%s.json", root, models[m], imgs[k]);
                json_error_t jerr;
                json_t *j = json_load_file(path, 0, &jerr);
                if (!j)
                    fail_msg("%s: %s", path, jerr.text);
                const char *fp = json_string_value(json_object_get(j, "formatted_prompt"));
                const char *marker = json_string_value(json_object_get(j, "media_marker"));
                const char *at = strstr(fp, marker);
                assert_non_null(at);
                int32_t want[512], got[512];
                size_t nw = json_ids(json_object_get(j, "prompt_tokens"), want, 512);
                size_t n = 0;
                unsigned ps = CL_TOK_PARSE_SPECIAL;
                got[n++] = cl_tokenizer_bos(t);
                n += tok_vec(t, fp, (size_t)(at - fp), ps, got + n, 512 - n);
                n += tok_vec(t, "<start_of_image>", 16, ps, got + n, 512 - n);
                for (int e = 0; e < 16; e++)
                    got[n++] = -1;
                n += tok_vec(t, "<end_of_image>", 14, ps, got + n, 512 - n);
                const char *rest = at + strlen(marker);
                n += tok_vec(t, rest, strlen(rest), ps, got + n, 512 - n);
                if (n != nw || memcmp(got, want, n * sizeof(int32_t)))
                    fail_msg("%s: image prompt tokens differ (%zu vs %zu)", path, n, nw);
                json_decref(j);
                checked++;
            }
        }
        cl_tokenizer_free(t);
        cl_gguf_free(g);
    }
    print_message("reference prompt files checked: %u\n", checked);
    assert_int_equal(checked, 6 * 8 + 3 * 2);
}


/* A hand-made SPM vocabulary: <unk> <s> </s>, 256 byte tokens, then a few pieces. */
enum { V_SP = 259, V_A, V_B, V_AB, V_SPA, V_BA, V_CTL, V_USER, V_C, V_UNUSED, V_EOT, V_N };

static uint8_t *mini_vocab(const char *model, bool space_prefix, bool add_eos, size_t n_scores, size_t *len)
{
    static char names[256][8];
    const char *toks[V_N];
    float scores[V_N];
    int32_t types[V_N];
    toks[0] = "<unk>"; types[0] = CL_TOK_TYPE_UNKNOWN;
    toks[1] = "<s>"; types[1] = CL_TOK_TYPE_CONTROL;
    toks[2] = "</s>"; types[2] = CL_TOK_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof(names[b]), "<0x%02X>", b);
        toks[3 + b] = names[b];
        types[3 + b] = CL_TOK_TYPE_BYTE;
    }
    const struct { const char *t; float s; int32_t ty; } rest[] = {
        {"\xe2\x96\x81", -1.0f, 1}, {"a", -2.0f, 1}, {"b", -2.0f, 1}, {"ab", -0.5f, 1}, {"\xe2\x96\x81" "a", -0.6f, 1},
        {"ba", -0.5f, 1}, {"<ctl>", 0, 3}, {"<user>", 0, 4}, {"c", -3.0f, 1}, {"unused", 0, 5}, {"<end_of_turn>", 0, 1},
    };
    for (int i = 0; i < V_N; i++)
        scores[i] = 0.0f;
    for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++) {
        toks[V_SP + i] = rest[i].t;
        scores[V_SP + i] = rest[i].s;
        types[V_SP + i] = rest[i].ty;
    }
    cl_gguf_writer *w = NULL;
    assert_ok(cl_gguf_writer_new(0, &w));
    assert_ok(cl_gguf_writer_add_str(w, "general.architecture", "llama"));
    assert_ok(cl_gguf_writer_add_str(w, "tokenizer.ggml.model", model));
    assert_ok(cl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, V_N));
    assert_ok(cl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", CL_GGUF_FLOAT32, scores, n_scores));
    assert_ok(cl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", CL_GGUF_INT32, types, V_N));
    assert_ok(cl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1));
    assert_ok(cl_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2));
    assert_ok(cl_gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", 999999)); /* out of range: ignored */
    assert_ok(cl_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", space_prefix));
    assert_ok(cl_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", add_eos));
    uint8_t *img;
    assert_ok(cl_gguf_writer_write_memory(w, &img, len));
    cl_gguf_writer_free(w);
    return img;
}

static void expect_ids(const cl_tokenizer *t, const char *s, unsigned flags, const int32_t *want, size_t nw)
{
    int32_t got[64];
    size_t n = tok_vec(t, s, strlen(s), flags, got, 64);
    if (n != nw || memcmp(got, want, n * sizeof(int32_t))) {
        char b[512] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(b + strlen(b), sizeof(b) - strlen(b), " %d", got[i]);
        fail_msg("tokenize(\"%s\", %u) gave%s", s, flags, b);
    }
}
#define EXPECT_IDS(t, s, f, ...) do { const int32_t w_[] = {__VA_ARGS__}; expect_ids((t), (s), (f), w_, sizeof(w_) / sizeof(w_[0])); } while (0)

static const char *piece(const cl_tokenizer *t, int32_t id, unsigned flags, unsigned lstrip, char *buf)
{
    struct cl_buf b;
    cl_buf_init(&b, 256, CL_BUF_NONE);
    assert_ok(cl_tokenizer_piece(t, id, flags, lstrip, &b));
    memcpy(buf, b.data ? (const char *)b.data : "", b.len);
    buf[b.len] = 0;
    cl_buf_free(&b);
    return buf;
}

static void test_tok_mini(void **state)
{
    (void)state;
    size_t len;
    uint8_t *img = mini_vocab("llama", true, false, V_N, &len);
    cl_gguf *g = NULL;
    cl_tokenizer *t = NULL;
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_ok(cl_tokenizer_new(g, &t));
    assert_int_equal(cl_tokenizer_n_vocab(t), V_N);
    assert_int_equal(cl_tokenizer_pad(t), CL_TOK_NULL);
    assert_true(cl_tokenizer_is_eog(t, 2));
    assert_true(cl_tokenizer_is_eog(t, V_EOT));
    assert_false(cl_tokenizer_is_eog(t, V_A));
    assert_int_equal(cl_tokenizer_type(t, V_EOT), CL_TOK_TYPE_CONTROL); /* forced, as llama.cpp */
    assert_int_equal(cl_tokenizer_find(t, "ab", 2), V_AB);
    assert_int_equal(cl_tokenizer_find(t, "zz", 2), CL_TOK_NULL);
    /* equal scores: the leftmost pair merges first ("ab" before "ba") */
    EXPECT_IDS(t, "aba", CL_TOK_NONE, V_SP, V_AB, V_A);
    EXPECT_IDS(t, " aba", CL_TOK_NONE, V_SP, V_SP, V_AB, V_A);
    EXPECT_IDS(t, "ac", CL_TOK_NONE, V_SPA, V_C);
    EXPECT_IDS(t, "ba", CL_TOK_NONE, V_SP, V_BA);
    EXPECT_IDS(t, "aba", CL_TOK_ADD_SPECIAL, 1, V_SP, V_AB, V_A);
    /* byte fallback for a character missing from the vocabulary */
    EXPECT_IDS(t, "\xc3\xa9", CL_TOK_NONE, V_SP, 3 + 0xc3, 3 + 0xa9);
    /* a bad lead byte swallows the next byte as one "character" (llama.cpp does the same): all bytes */
    EXPECT_IDS(t, "\xff" "a", CL_TOK_NONE, V_SP, 3 + 0xff, 3 + (int)'a');
    /* control tokens only with PARSE_SPECIAL; a space prefix follows a special token */
    EXPECT_IDS(t, "a<ctl>a", CL_TOK_PARSE_SPECIAL, V_SPA, V_CTL, V_SPA);
    EXPECT_IDS(t, "<s><s>", CL_TOK_PARSE_SPECIAL, 1, 1);
    int32_t got[64];
    size_t n = tok_vec(t, "a<ctl>a", 7, CL_TOK_NONE, got, 64);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(got[i], V_CTL);
    /* user-defined tokens are matched either way */
    EXPECT_IDS(t, "<user>", CL_TOK_NONE, V_USER);
    assert_int_equal(tok_vec(t, "", 0, CL_TOK_NONE, got, 64), 0);
    EXPECT_IDS(t, "", CL_TOK_ADD_SPECIAL, 1);
    /* output too small: the needed count comes back */
    assert_err(cl_tokenize(t, "abab", 4, CL_TOK_NONE, got, 1, &n), CL_E_INFER_TOK_SPACE);
    assert_int_equal(n, 3);
    assert_int_equal(got[0], V_SP);
    /* pieces */
    char pb[64];
    assert_string_equal(piece(t, 1, CL_TOK_NONE, 0, pb), "");
    assert_string_equal(piece(t, 1, CL_TOK_UNPARSE_SPECIAL, 0, pb), "<s>");
    assert_string_equal(piece(t, V_SPA, CL_TOK_NONE, 0, pb), " a");
    assert_string_equal(piece(t, V_SPA, CL_TOK_NONE, 1, pb), "a");
    assert_string_equal(piece(t, 3 + 'A', CL_TOK_NONE, 0, pb), "A");
    assert_string_equal(piece(t, V_USER, CL_TOK_NONE, 0, pb), "<user>");
    assert_string_equal(piece(t, V_UNUSED, CL_TOK_NONE, 0, pb), "");
    assert_string_equal(piece(t, 0, CL_TOK_UNPARSE_SPECIAL, 0, pb), "<unk>");
    struct cl_buf d;
    cl_buf_init(&d, 256, CL_BUF_NONE);
    assert_err(cl_tokenizer_piece(t, V_N, CL_TOK_NONE, 0, &d), CL_E_INFER_TOK_ID);
    assert_err(cl_tokenizer_piece(t, -1, CL_TOK_NONE, 0, &d), CL_E_INFER_TOK_ID);
    /* detokenize: the prefix space of the first token goes; after a removed BOS it stays */
    const int32_t seq[] = {V_SPA, V_SPA, V_B};
    assert_ok(cl_detokenize(t, seq, 3, CL_TOK_NONE, &d));
    assert_int_equal(d.len, 4);
    assert_memory_equal(d.data, "a ab", 4);
    cl_buf_reset(&d);
    const int32_t seq2[] = {1, V_SPA, 2};
    assert_ok(cl_detokenize(t, seq2, 3, CL_TOK_REMOVE_SPECIAL, &d));
    assert_int_equal(d.len, 2);
    assert_memory_equal(d.data, " a", 2);
    cl_buf_reset(&d);
    assert_ok(cl_detokenize(t, seq2, 3, CL_TOK_UNPARSE_SPECIAL, &d));
    assert_int_equal(d.len, 9);
    assert_memory_equal(d.data, "<s> a</s>", 9);
    const int32_t bad[] = {V_A, 70000};
    assert_err(cl_detokenize(t, bad, 2, CL_TOK_NONE, &d), CL_E_INFER_TOK_ID);
    cl_buf_free(&d);
    cl_tokenizer_free(t);
    cl_gguf_free(g);
    free(img);
}

static void test_tok_mini_variants(void **state)
{
    (void)state;
    size_t len;
    cl_gguf *g = NULL;
    cl_tokenizer *t = NULL;
    /* no space prefix, EOS added */
    uint8_t *img = mini_vocab("llama", false, true, V_N, &len);
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_ok(cl_tokenizer_new(g, &t));
    assert_false(cl_tokenizer_add_space_prefix(t));
    EXPECT_IDS(t, "aba", CL_TOK_NONE, V_AB, V_A);
    EXPECT_IDS(t, "aba", CL_TOK_ADD_SPECIAL, 1, V_AB, V_A, 2);
    EXPECT_IDS(t, "a<ctl>a", CL_TOK_PARSE_SPECIAL, V_A, V_CTL, V_A);
    struct cl_buf d;
    cl_buf_init(&d, 256, CL_BUF_NONE);
    const int32_t seq[] = {V_SPA, V_B};
    assert_ok(cl_detokenize(t, seq, 2, CL_TOK_NONE, &d));
    assert_int_equal(d.len, 3); /* leading space kept without a space prefix */
    cl_buf_free(&d);
    cl_tokenizer_free(t);
    cl_gguf_free(g);
    free(img);
    /* broken vocabularies */
    img = mini_vocab("gpt2", true, false, V_N, &len);
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_err(cl_tokenizer_new(g, &t), CL_E_INFER_TOK_MODEL);
    cl_gguf_free(g);
    free(img);
    img = mini_vocab("llama", true, false, V_N - 1, &len);
    t = NULL;
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_err(cl_tokenizer_new(g, &t), CL_E_INFER_TOK_VOCAB);
    assert_null(t);
    cl_gguf_free(g);
    free(img);
    cl_gguf_writer *w = NULL;
    assert_ok(cl_gguf_writer_new(0, &w));
    assert_ok(cl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
    assert_ok(cl_gguf_writer_write_memory(w, &img, &len));
    cl_gguf_writer_free(w);
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_err(cl_tokenizer_new(g, &t), CL_E_INFER_GGUF_KEY_MISSING);
    cl_gguf_free(g);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_valid),
        cmocka_unit_test(test_gguf_broken),
        cmocka_unit_test(test_gguf_reference_models),
        cmocka_unit_test(test_gguf_vocab_files),
        cmocka_unit_test(test_gguf_open_file_errors),
        cmocka_unit_test(test_gguf_writer_roundtrip),
        cmocka_unit_test(test_tok_vocab_files),
        cmocka_unit_test(test_tok_reference_prompts),
        cmocka_unit_test(test_tok_mini),
        cmocka_unit_test(test_tok_mini_variants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
