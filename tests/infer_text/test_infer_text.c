/* Tests for cl_infer_text: GGUF reader and writer, tokenizer, chat templates,
 * sampling. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/gguf.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_valid),
        cmocka_unit_test(test_gguf_broken),
        cmocka_unit_test(test_gguf_reference_models),
        cmocka_unit_test(test_gguf_vocab_files),
        cmocka_unit_test(test_gguf_open_file_errors),
        cmocka_unit_test(test_gguf_writer_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
