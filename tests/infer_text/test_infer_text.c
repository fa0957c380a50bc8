/* Tests for cl_infer_text: GGUF reader and writer, tokenizer, chat templates,
 * sampling. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/file.h"
#include "cloister/secmem.h"
#include "cloister/chat.h"
#include "cloister/gguf.h"
#include "cloister/sample.h"
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



/* Rewriting each reference model (written by llama.cpp's gguf-py) with the
 * writer reproduces the file byte for byte: the writer is exact to the spec. */
static void test_gguf_writer_reproduces_reference(void **state)
{
    (void)state;
    char dir[1024];
    CL_REFERENCE("models", dir);
    const char *names[] = {"tiny-llama-f32.gguf", "tiny-llama-q4_0.gguf", "tiny-gemma3-q8_0.gguf",
                           "mmproj-tiny-gemma3-f32.gguf"};
    for (size_t k = 0; k < 4; k++) {
        char path[1200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
        cl_gguf *g = NULL;
        assert_ok(cl_gguf_open_file(path, &g));
        cl_gguf_writer *w = NULL;
        assert_ok(cl_gguf_writer_new(cl_gguf_alignment(g), &w));
        for (size_t i = 0; i < cl_gguf_n_kv(g); i++)
            assert_ok(cl_gguf_writer_add_kv(w, cl_gguf_kv_at(g, i)));
        for (size_t i = 0; i < cl_gguf_n_tensors(g); i++) {
            const struct cl_gguf_tensor *t = cl_gguf_tensor_at(g, i);
            assert_ok(cl_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes));
        }
        uint8_t *img;
        size_t len, flen;
        assert_ok(cl_gguf_writer_write_memory(w, &img, &len));
        const uint8_t *orig = cl_gguf_buffer(g, &flen);
        if (len != flen || memcmp(img, orig, len)) {
            size_t d = 0;
            while (d < len && d < flen && img[d] == orig[d])
                d++;
            fail_msg("%s: rewrite differs at byte %zu (sizes %zu vs %zu)", names[k], d, len, flen);
        }
        free(img);
        cl_gguf_writer_free(w);
        cl_gguf_free(g);
    }
}


/* A model in secure memory (as the enclave holds a decrypted one) is used in place. */
static void test_gguf_secure_memory(void **state)
{
    (void)state;
    char path[1024];
    CL_REFERENCE("models/tiny-gemma3-q4_0.gguf", path);
    struct cl_buf f;
    cl_buf_init(&f, 64u << 20, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 64u << 20, &f));
    void *sec = NULL;
    assert_ok(cl_secmem_alloc(f.len, &sec));
    memcpy(sec, f.data, f.len);
    cl_gguf *g = NULL;
    assert_ok(cl_gguf_open_memory(sec, f.len, &g));
    const struct cl_gguf_tensor *t = cl_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, CL_GGML_Q4_0);
    assert_true((const uint8_t *)t->data > (const uint8_t *)sec &&
                (const uint8_t *)t->data + t->nbytes <= (const uint8_t *)sec + f.len);
    assert_int_equal(((uintptr_t)t->data) % 32, 0);
    cl_tokenizer *tk = NULL;
    assert_ok(cl_tokenizer_new(g, &tk));
    struct cl_gguf_str s;
    assert_true(cl_tokenizer_text(tk, 450, &s));
    assert_true(s.p > (const char *)sec && s.p < (const char *)sec + f.len); /* views, not copies */
    cl_tokenizer_free(tk);
    cl_gguf_free(g);
    cl_secmem_free(sec);
    cl_buf_free(&f);
}

/* The `cloister tokenize` command end to end. */
static void test_cli_tokenize(void **state)
{
    (void)state;
    const char *bd = getenv("CLOISTER_BUILD_DIR");
    char model[1024], cmd[4096], out[4096];
    if (!bd) {
        print_message("skipped: CLOISTER_BUILD_DIR is not set\n");
        skip();
    }
    CL_REFERENCE("models/tiny-llama-f32.gguf", model);
    snprintf(cmd, sizeof(cmd), "'%s/src/cli/cloister' tokenize '%s' -p 'The patient presents with' --json", bd, model);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, "{\"n_tokens\":5,\"tokens\":[1,450,16500,22981,411]}\n");
    snprintf(cmd, sizeof(cmd), "printf '<s>a' | '%s/src/cli/cloister' tokenize '%s' -f - --special --no-add-special",
             bd, model);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, "     1 '<s>'\n   263 ' a'\n");
    snprintf(cmd, sizeof(cmd), "'%s/src/cli/cloister' tokenize '%s' 2>/dev/null", bd, model);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof(cmd), "'%s/src/cli/cloister' tokenize /nonexistent.gguf -p x 2>/dev/null", bd);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
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


/* ---- chat templates ---- */

static const char *chat_str(enum cl_chat_template t, const struct cl_chat_msg *m, size_t n, bool gen, struct cl_buf *b)
{
    cl_buf_reset(b);
    assert_ok(cl_chat_render(t, m, n, gen, b));
    assert_ok(cl_buf_append_u8(b, 0));
    b->len--;
    return (const char *)b->data;
}

#define MSG(r, c) {(r), (c), sizeof(c) - 1}

static void test_chat_render(void **state)
{
    (void)state;
    const struct cl_chat_msg conv[] = {
        MSG("system", "You are a helpful assistant"), MSG("user", "Hello"), MSG("assistant", "Hi there"),
        MSG("user", "Who are you"), MSG("assistant", "   I am an assistant   "), MSG("user", "Another question"),
    };
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, CL_BUF_SECURE);
    assert_string_equal(chat_str(CL_CHAT_GEMMA, conv, 6, true, &b),
        "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n"
        "<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n"
        "<start_of_turn>model\n");
    assert_string_equal(chat_str(CL_CHAT_CHATML, conv, 6, true, &b),
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
        "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
        "<|im_start|>assistant\n");
    assert_string_equal(chat_str(CL_CHAT_CHATML, conv + 1, 1, false, &b), "<|im_start|>user\nHello<|im_end|>\n");
    assert_string_equal(chat_str(CL_CHAT_LLAMA2_SYS, conv, 6, true, &b),
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]"
        "   I am an assistant   </s>[INST] Another question [/INST]");
    assert_string_equal(chat_str(CL_CHAT_LLAMA2_SYS_STRIP, conv, 6, true, &b),
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]"
        "I am an assistant</s>[INST] Another question [/INST]");
    assert_string_equal(chat_str(CL_CHAT_LLAMA2_SYS_BOS, conv, 6, true, &b),
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]"
        "   I am an assistant   </s><s>[INST] Another question [/INST]");
    assert_string_equal(chat_str(CL_CHAT_LLAMA2, conv, 6, true, &b),
        "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]"
        "   I am an assistant   </s>[INST] Another question [/INST]");
    /* Gemma: several system messages join; a system message after a model turn goes to the next user turn */
    const struct cl_chat_msg g2[] = {MSG("system", " A "), MSG("system", "B\n"), MSG("user", " hi "),
                                     MSG("assistant", "yo"), MSG("system", "C"), MSG("user", "q")};
    assert_string_equal(chat_str(CL_CHAT_GEMMA, g2, 6, false, &b),
        "<start_of_turn>user\nAB\n\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n"
        "<start_of_turn>user\nC\n\nq<end_of_turn>\n");
    assert_string_equal(chat_str(CL_CHAT_GEMMA, NULL, 0, true, &b), "<start_of_turn>model\n");
    /* errors leave the buffer as it was */
    cl_buf_reset(&b);
    assert_ok(cl_buf_append_str(&b, "keep"));
    assert_err(cl_chat_render(CL_CHAT_NONE, conv, 6, true, &b), CL_E_INFER_CHAT_UNKNOWN);
    const struct cl_chat_msg bad[] = {{NULL, "x", 1}};
    assert_err(cl_chat_render(CL_CHAT_CHATML, bad, 1, true, &b), CL_E_CORE_INVALID_ARG);
    struct cl_buf small;
    cl_buf_init(&small, 20, CL_BUF_NONE);
    assert_err(cl_chat_render(CL_CHAT_CHATML, conv, 6, true, &small), CL_E_CORE_LIMIT);
    assert_int_equal(small.len, 0);
    cl_buf_free(&small);
    assert_int_equal(b.len, 4);
    cl_buf_free(&b);
}

static void test_chat_detect(void **state)
{
    (void)state;
    static const char gemma3[] =
        "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- endif -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {{ message['content'] | trim }}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n";
    static const char llama2_chat[] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
        "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
        "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
        "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
        "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
        "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    static const char llama2_sys[] =
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + "
        "'\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";
    static const char chatml[] =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
        "You are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n'"
        " }}{% endif %}";
    static const char phi4[] = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '<|im_sep|>' + m['content']}}{% endfor %}";
    static const char mistral[] = "{%- for m in messages %}[INST][SYSTEM_PROMPT]{%- endfor %}";
    static const char zephyr[] = "{% for m in messages %}<|user|>\n{{ m['content'] }}</s>\n<|assistant|>{% endfor %}";
    assert_int_equal(cl_chat_detect(gemma3, strlen(gemma3)), CL_CHAT_GEMMA);
    assert_int_equal(cl_chat_detect(llama2_chat, strlen(llama2_chat)), CL_CHAT_LLAMA2_SYS_STRIP);
    assert_int_equal(cl_chat_detect(llama2_sys, strlen(llama2_sys)), CL_CHAT_LLAMA2_SYS);
    assert_int_equal(cl_chat_detect("[INST] {{ x }} [/INST]", 22), CL_CHAT_LLAMA2);
    assert_int_equal(cl_chat_detect("{{ bos_token + '[INST] ' }}<<SYS>>", 34), CL_CHAT_LLAMA2_SYS_BOS);
    assert_int_equal(cl_chat_detect(chatml, strlen(chatml)), CL_CHAT_CHATML);
    assert_int_equal(cl_chat_detect(phi4, strlen(phi4)), CL_CHAT_NONE);
    assert_int_equal(cl_chat_detect(mistral, strlen(mistral)), CL_CHAT_NONE);
    assert_int_equal(cl_chat_detect(zephyr, strlen(zephyr)), CL_CHAT_NONE);
    assert_int_equal(cl_chat_detect("", 0), CL_CHAT_NONE);
    assert_int_equal(cl_chat_detect("gemma", 5), CL_CHAT_GEMMA);
    assert_int_equal(cl_chat_detect("chatml", 6), CL_CHAT_CHATML);
    enum cl_chat_template t = CL_CHAT_NONE;
    assert_ok(cl_chat_from_name("llama2-sys", &t));
    assert_int_equal(t, CL_CHAT_LLAMA2_SYS);
    assert_string_equal(cl_chat_name(t), "llama2-sys");
    assert_err(cl_chat_from_name("vicuna", &t), CL_E_INFER_CHAT_UNKNOWN);
    /* from a model: detected, overridden, or missing */
    cl_gguf_writer *w = NULL;
    assert_ok(cl_gguf_writer_new(0, &w));
    assert_ok(cl_gguf_writer_add_str(w, "tokenizer.chat_template", gemma3));
    uint8_t *img;
    size_t len;
    assert_ok(cl_gguf_writer_write_memory(w, &img, &len));
    cl_gguf_writer_free(w);
    cl_gguf *g = NULL;
    assert_ok(cl_gguf_open_memory(img, len, &g));
    assert_ok(cl_chat_for_model(g, NULL, &t));
    assert_int_equal(t, CL_CHAT_GEMMA);
    assert_ok(cl_chat_for_model(g, "chatml", &t));
    assert_int_equal(t, CL_CHAT_CHATML);
    assert_err(cl_chat_for_model(g, "nope", &t), CL_E_INFER_CHAT_UNKNOWN);
    cl_gguf_free(g);
    free(img);
    char p[1024];
    CL_TESTDATA("gguf/vocab/ggml-vocab-llama-spm.gguf", p);
    assert_ok(cl_gguf_open_file(p, &g));
    /* no template in this file: the architecture's format (llama -> llama2) */
    assert_ok(cl_chat_for_model(g, NULL, &t));
    assert_int_equal(t, CL_CHAT_LLAMA2);
    cl_gguf_free(g);
    CL_TESTDATA("gguf/vocab/ggml-vocab-phi-3.gguf", p);
    assert_ok(cl_gguf_open_file(p, &g));
    assert_err(cl_chat_for_model(g, NULL, &t), CL_E_INFER_CHAT_UNKNOWN); /* phi-3: not supported */
    cl_gguf_free(g);
}

/* The reference image prompts were formatted with llama.cpp's "gemma" template. */
static void test_chat_reference_image_prompt(void **state)
{
    (void)state;
    char path[1024];
    CL_REFERENCE("tiny/tiny-gemma3-f32/IMG-00000001_000.json", path);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    assert_non_null(j);
    const char *marker = json_string_value(json_object_get(j, "media_marker"));
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    char content[256];
    snprintf(content, sizeof(content), "%s%s", marker, prompt);
    struct cl_chat_msg m = {"user", content, strlen(content)};
    struct cl_buf b;
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    assert_string_equal(chat_str(CL_CHAT_GEMMA, &m, 1, true, &b),
                        json_string_value(json_object_get(j, "formatted_prompt")));
    cl_buf_free(&b);
    json_decref(j);
}


/* ---- sampling ---- */

static cl_sampler *mk_sampler(float temp, int32_t k, float top_p, float min_p, uint64_t seed, uint32_t nv)
{
    struct cl_sample_params p;
    cl_sample_params_default(&p, seed);
    p.temperature = temp;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    cl_sampler *s = NULL;
    assert_ok(cl_sampler_new(&p, nv, &s));
    return s;
}

/* Frequencies of each id over n draws. */
static void histogram(cl_sampler *s, const float *logits, uint32_t nv, unsigned n, unsigned *h)
{
    memset(h, 0, nv * sizeof(*h));
    for (unsigned i = 0; i < n; i++) {
        int32_t id;
        assert_ok(cl_sampler_sample(s, logits, &id));
        assert_true(id >= 0 && (uint32_t)id < nv);
        h[id]++;
    }
}

static void test_sample_greedy_and_ties(void **state)
{
    (void)state;
    const float l[5] = {1.0f, 3.0f, 3.0f, 2.0f, -1.0f};
    assert_int_equal(cl_sample_greedy(l, 5), 1);
    const float nanl[3] = {NAN, -5.0f, NAN};
    assert_int_equal(cl_sample_greedy(nanl, 3), 1);
    cl_sampler *s = mk_sampler(0.0f, 40, 0.95f, 0.05f, 1, 5);
    int32_t id;
    for (int i = 0; i < 10; i++) {
        assert_ok(cl_sampler_sample(s, l, &id));
        assert_int_equal(id, 1);
    }
    cl_sampler_free(s);
}

static void test_sample_determinism(void **state)
{
    (void)state;
    enum { NV = 1000 };
    float *l = malloc(NV * sizeof(float));
    for (int i = 0; i < NV; i++)
        l[i] = sinf((float)i * 0.37f) * 3.0f;
    int32_t a[200], b[200], c[200];
    for (int run = 0; run < 3; run++) {
        cl_sampler *s = mk_sampler(1.0f, 0, 1.0f, 0.0f, run == 2 ? 43 : 42, NV);
        int32_t *dst = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < 200; i++)
            assert_ok(cl_sampler_sample(s, l, &dst[i]));
        if (run == 0) {
            /* reset gives the same stream again */
            cl_sampler_reset(s, 42);
            int32_t x;
            assert_ok(cl_sampler_sample(s, l, &x));
            assert_int_equal(x, a[0]);
        }
        cl_sampler_free(s);
    }
    assert_memory_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, c, sizeof(a));
    /* the raw stream is a fixed function of the seed */
    cl_sampler *s = mk_sampler(1.0f, 0, 1.0f, 0.0f, 0, 4);
    uint64_t r1 = cl_sampler_rand_u64(s);
    cl_sampler_reset(s, 0);
    assert_true(cl_sampler_rand_u64(s) == r1);
    for (int i = 0; i < 1000; i++) {
        double u = cl_sampler_rand_unit(s);
        assert_true(u >= 0.0 && u < 1.0);
    }
    cl_sampler_free(s);
    free(l);
}

static void test_sample_distribution_and_filters(void **state)
{
    (void)state;
    const float l[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    unsigned h[4];
    enum { N = 20000 };
    /* plain softmax at temperature 1 */
    cl_sampler *s = mk_sampler(1.0f, 0, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_true(fabs(h[0] / (double)N - 0.5) < 0.02);
    assert_true(fabs(h[1] / (double)N - 0.3) < 0.02);
    assert_true(fabs(h[2] / (double)N - 0.15) < 0.02);
    assert_true(fabs(h[3] / (double)N - 0.05) < 0.01);
    cl_sampler_free(s);
    /* top-k 2: only the two best, renormalised 5:3 */
    s = mk_sampler(1.0f, 2, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_int_equal(h[2] + h[3], 0);
    assert_true(fabs(h[0] / (double)N - 0.625) < 0.02);
    cl_sampler_free(s);
    /* top-k 1 is greedy */
    s = mk_sampler(1.0f, 1, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, 1000, h);
    assert_int_equal(h[0], 1000);
    cl_sampler_free(s);
    /* top-p 0.5: the first token alone reaches 0.5; 0.7 keeps two; 0.9 keeps three */
    s = mk_sampler(1.0f, 0, 0.5f, 0.0f, 7, 4);
    histogram(s, l, 4, 1000, h);
    assert_int_equal(h[0], 1000);
    cl_sampler_free(s);
    s = mk_sampler(1.0f, 0, 0.7f, 0.0f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_int_equal(h[2] + h[3], 0);
    assert_true(h[1] > 0);
    cl_sampler_free(s);
    s = mk_sampler(1.0f, 0, 0.9f, 0.0f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_int_equal(h[3], 0);
    assert_true(h[2] > 0);
    cl_sampler_free(s);
    /* min-p 0.5: keep p >= 0.25 (tokens 0 and 1); 0.2 keeps p >= 0.1 */
    s = mk_sampler(1.0f, 0, 1.0f, 0.5f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_int_equal(h[2] + h[3], 0);
    assert_true(h[1] > 0);
    cl_sampler_free(s);
    s = mk_sampler(1.0f, 0, 1.0f, 0.2f, 7, 4);
    histogram(s, l, 4, N, h);
    assert_int_equal(h[3], 0);
    assert_true(h[2] > 0);
    cl_sampler_free(s);
    /* temperature: low sharpens towards the best, high flattens */
    s = mk_sampler(0.05f, 0, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, 1000, h);
    assert_true(h[0] > 995);
    cl_sampler_free(s);
    s = mk_sampler(100.0f, 0, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, N, h);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(h[i] / (double)N - 0.25) < 0.03);
    cl_sampler_free(s);
    /* -inf logits are never drawn */
    const float li[3] = {-INFINITY, 0.0f, -INFINITY};
    s = mk_sampler(1.0f, 0, 1.0f, 0.0f, 7, 3);
    histogram(s, li, 3, 500, h);
    assert_int_equal(h[1], 500);
    cl_sampler_free(s);
    /* bad parameters */
    struct cl_sample_params p;
    cl_sample_params_default(&p, 1);
    p.repeat_last_n = -1;
    assert_err(cl_sampler_new(&p, 4, &s), CL_E_CORE_INVALID_ARG);
    cl_sample_params_default(&p, 1);
    p.temperature = NAN;
    assert_err(cl_sampler_new(&p, 4, &s), CL_E_CORE_INVALID_ARG);
    cl_sample_params_default(&p, 1);
    assert_err(cl_sampler_new(&p, 0, &s), CL_E_CORE_INVALID_ARG);
}


static int desc_float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* top-p over a large vocabulary, both when the nucleus is small (preselection)
 * and when it is large (full sort): every draw lies in the exact nucleus. */
static void test_sample_top_p_large_vocab(void **state)
{
    (void)state;
    enum { NV = 6000 };
    float *l = malloc(NV * sizeof(float)), *sorted = malloc(NV * sizeof(float));
    for (int shape = 0; shape < 2; shape++) {
        for (int i = 0; i < NV; i++)
            l[i] = shape ? sinf((float)i * 1.3f) * 0.5f : sinf((float)i * 1.3f) * 12.0f;
        memcpy(sorted, l, NV * sizeof(float));
        qsort(sorted, NV, sizeof(float), desc_float_cmp);
        double sum = 0, cum = 0;
        for (int i = 0; i < NV; i++)
            sum += exp((double)sorted[i] - sorted[0]);
        float cutoff = sorted[0];
        int nucleus = 0;
        for (int i = 0; i < NV; i++) {
            cum += exp((double)sorted[i] - sorted[0]) / sum;
            cutoff = sorted[i];
            nucleus = i + 1;
            if (cum >= 0.9)
                break;
        }
        if (shape)
            assert_true(nucleus > 1024);
        else
            assert_true(nucleus < 1024);
        cl_sampler *s = mk_sampler(1.0f, 0, 0.9f, 0.0f, 3, NV);
        for (int k = 0; k < 300; k++) {
            int32_t id;
            assert_ok(cl_sampler_sample(s, l, &id));
            assert_true(l[id] >= cutoff);
        }
        cl_sampler_free(s);
    }
    free(l);
    free(sorted);
}

static void test_sample_repetition_penalty(void **state)
{
    (void)state;
    struct cl_sample_params p;
    cl_sample_params_default(&p, 1);
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    cl_sampler *s = NULL;
    assert_ok(cl_sampler_new(&p, 4, &s));
    const float l[4] = {2.0f, 1.9f, -1.0f, -0.6f};
    int32_t id;
    assert_ok(cl_sampler_sample(s, l, &id));
    assert_int_equal(id, 0);
    cl_sampler_accept(s, 0); /* 2.0 -> 1.0: token 1 wins */
    assert_ok(cl_sampler_sample(s, l, &id));
    assert_int_equal(id, 1);
    cl_sampler_accept(s, 1); /* both penalised: 1.0 vs 0.95 */
    assert_ok(cl_sampler_sample(s, l, &id));
    assert_int_equal(id, 0);
    cl_sampler_accept(s, 3);
    cl_sampler_accept(s, 3); /* window of 2: only token 3 now, multiplied: -1.2 */
    assert_ok(cl_sampler_sample(s, l, &id));
    assert_int_equal(id, 0);
    const float neg[4] = {-1.0f, -0.6f, -5.0f, -5.0f};
    cl_sampler_accept(s, 1);
    cl_sampler_accept(s, 1); /* -0.6 * 2 = -1.2 < -1.0 */
    assert_ok(cl_sampler_sample(s, neg, &id));
    assert_int_equal(id, 0);
    /* the logits passed in are never modified */
    assert_true(neg[1] == -0.6f && l[0] == 2.0f);
    cl_sampler_free(s);
    /* frequency and presence penalties */
    cl_sample_params_default(&p, 1);
    p.temperature = 0.0f;
    p.freq_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    assert_ok(cl_sampler_new(&p, 4, &s));
    cl_sampler_accept(s, 0);
    cl_sampler_accept(s, 0); /* 2.0 - 2*0.5 - 0.25 = 0.75 */
    const float l2[4] = {2.0f, 0.8f, 0.7f, 0.0f};
    assert_ok(cl_sampler_sample(s, l2, &id));
    assert_int_equal(id, 1);
    cl_sampler_free(s);
}

/* ---- generation control ---- */

struct stream_log {
    char text[256];
    size_t len;
    unsigned calls;
    unsigned stop_after;
    int32_t last_token;
};

static int stream_cb(void *user, int32_t token, const char *text, size_t len)
{
    struct stream_log *l = user;
    assert_true(l->len + len < sizeof(l->text));
    memcpy(l->text + l->len, text, len);
    l->len += len;
    l->text[l->len] = 0;
    l->calls++;
    l->last_token = token;
    return l->stop_after && l->calls >= l->stop_after;
}

static void push_all(cl_gen *g, const char *const *pieces, size_t n, size_t *pushed)
{
    bool done = false;
    size_t i = 0;
    for (; i < n && !done; i++)
        assert_ok(cl_gen_push_text(g, (int32_t)i, false, pieces[i], strlen(pieces[i]), &done));
    *pushed = i;
}

static void test_gen_stop_strings(void **state)
{
    (void)state;
    const char *stops[] = {"STOP", "\n\n"};
    struct stream_log log = {0};
    struct cl_gen_opts o = {.stop = stops, .n_stop = 2, .cb = stream_cb, .user = &log};
    cl_gen *g = NULL;
    assert_ok(cl_gen_new(NULL, &o, &g));
    /* the stop string spans three tokens; text before it is kept */
    const char *p1[] = {"Hel", "lo S", "T", "OP and more", "never"};
    size_t pushed;
    push_all(g, p1, 5, &pushed);
    assert_int_equal(pushed, 4);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_STRING);
    size_t len;
    const char *txt = cl_gen_text(g, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(txt, "Hello ", 6);
    assert_string_equal(log.text, "Hello "); /* the callback never saw "S" or "ST" */
    assert_int_equal(log.calls, 4);
    bool done;
    assert_err(cl_gen_push_text(g, 9, false, "x", 1, &done), CL_E_CORE_STATE);
    cl_gen_free(g);

    /* a false start ("ST" then "x") is released once it cannot be a stop */
    memset(&log, 0, sizeof(log));
    assert_ok(cl_gen_new(NULL, &o, &g));
    const char *p2[] = {"a\n", "ST", "x\n", "\nrest"};
    push_all(g, p2, 4, &pushed);
    assert_int_equal(pushed, 4);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_STRING);
    txt = cl_gen_text(g, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(txt, "a\nSTx", 5);
    assert_string_equal(log.text, "a\nSTx");
    cl_gen_free(g);

    /* a stop string inside one token */
    memset(&log, 0, sizeof(log));
    assert_ok(cl_gen_new(NULL, &o, &g));
    const char *p3[] = {"abSTOPcd"};
    push_all(g, p3, 1, &pushed);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_STRING);
    assert_string_equal(log.text, "ab");
    cl_gen_free(g);
}

static void test_gen_limits_and_utf8(void **state)
{
    (void)state;
    struct stream_log log = {0};
    struct cl_gen_opts o = {.max_tokens = 3, .cb = stream_cb, .user = &log};
    cl_gen *g = NULL;
    assert_ok(cl_gen_new(NULL, &o, &g));
    /* a UTF-8 character split over tokens is released whole */
    const char *p[] = {"caf", "\xc3", "\xa9", "never"};
    size_t pushed;
    push_all(g, p, 4, &pushed);
    assert_int_equal(pushed, 3);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_MAX_TOKENS);
    assert_int_equal(cl_gen_n_tokens(g), 3);
    assert_string_equal(log.text, "caf\xc3\xa9");
    assert_int_equal(log.calls, 3);
    cl_gen_free(g);

    /* EOG stops without adding text; held text is flushed */
    memset(&log, 0, sizeof(log));
    const char *stops[] = {"ab"};
    struct cl_gen_opts o2 = {.stop = stops, .n_stop = 1, .stop_on_eog = true, .cb = stream_cb, .user = &log};
    assert_ok(cl_gen_new(NULL, &o2, &g));
    bool done = false;
    assert_ok(cl_gen_push_text(g, 5, false, "xa", 2, &done));
    assert_false(done);
    assert_string_equal(log.text, "x");
    assert_ok(cl_gen_push_text(g, 2, true, "", 0, &done));
    assert_true(done);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_EOG);
    assert_string_equal(log.text, "xa");
    cl_gen_free(g);

    /* the callback can stop generation; finish flushes */
    memset(&log, 0, sizeof(log));
    log.stop_after = 2;
    struct cl_gen_opts o3 = {.stop = stops, .n_stop = 1, .cb = stream_cb, .user = &log};
    assert_ok(cl_gen_new(NULL, &o3, &g));
    const char *p4[] = {"1", "2a", "3"};
    push_all(g, p4, 3, &pushed);
    assert_int_equal(pushed, 2);
    assert_int_equal(cl_gen_reason(g), CL_GEN_STOP_CALLBACK);
    assert_string_equal(log.text, "12a");
    assert_ok(cl_gen_finish(g));
    assert_int_equal(log.calls, 3);
    cl_gen_free(g);

    /* bad options */
    const char *empty[] = {""};
    struct cl_gen_opts bad = {.stop = empty, .n_stop = 1};
    assert_err(cl_gen_new(NULL, &bad, &g), CL_E_CORE_INVALID_ARG);
    struct cl_gen_opts bad2 = {.stop = NULL, .n_stop = 1};
    assert_err(cl_gen_new(NULL, &bad2, &g), CL_E_CORE_INVALID_ARG);
    struct cl_gen_opts ok = {0};
    assert_ok(cl_gen_new(NULL, &ok, &g));
    assert_err(cl_gen_push(g, 1, &done), CL_E_CORE_INVALID_ARG); /* no tokenizer */
    cl_gen_free(g);
}

/* With a real vocabulary: pieces, first-token space removal and EOG, and
 * the reference generated text. */
static void test_gen_with_tokenizer(void **state)
{
    (void)state;
    char path[1024];
    CL_REFERENCE("tiny/tiny-llama-f32/P1.f32kv.json", path);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    assert_non_null(j);
    CL_REFERENCE("models/tiny-llama-f32.gguf", path);
    cl_gguf *g = NULL;
    cl_tokenizer *t = open_tok(path, &g);
    int32_t ids[64];
    size_t n = json_ids(json_object_get(j, "generated_tokens"), ids, 64);
    struct stream_log log = {0};
    struct cl_gen_opts o = {.cb = stream_cb, .user = &log};
    cl_gen *gen = NULL;
    assert_ok(cl_gen_new(t, &o, &gen));
    bool done = false;
    for (size_t i = 0; i < n && !done; i++)
        assert_ok(cl_gen_push(gen, ids[i], &done));
    assert_ok(cl_gen_finish(gen));
    size_t hl, len;
    uint8_t *want = cl_test_unhex(json_string_value(json_object_get(j, "generated_text_hex")), &hl);
    const char *txt = cl_gen_text(gen, &len);
    assert_int_equal(len, hl);
    assert_memory_equal(txt, want, hl);
    assert_int_equal(log.len, hl);
    assert_memory_equal(log.text, want, hl);
    free(want);
    cl_gen_free(gen);
    /* EOS stops when asked */
    struct cl_gen_opts o2 = {.stop_on_eog = true};
    assert_ok(cl_gen_new(t, &o2, &gen));
    int32_t hello[] = {15043, 2, 3186};
    done = false;
    size_t i = 0;
    for (; i < 3 && !done; i++)
        assert_ok(cl_gen_push(gen, hello[i], &done));
    assert_int_equal(i, 2);
    txt = cl_gen_text(gen, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(txt, "Hello", 5);
    cl_gen_free(gen);
    cl_tokenizer_free(t);
    cl_gguf_free(g);
    json_decref(j);
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
        cmocka_unit_test(test_gguf_writer_reproduces_reference),
        cmocka_unit_test(test_gguf_secure_memory),
        cmocka_unit_test(test_cli_tokenize),
        cmocka_unit_test(test_tok_vocab_files),
        cmocka_unit_test(test_tok_reference_prompts),
        cmocka_unit_test(test_tok_mini),
        cmocka_unit_test(test_tok_mini_variants),
        cmocka_unit_test(test_chat_render),
        cmocka_unit_test(test_chat_detect),
        cmocka_unit_test(test_chat_reference_image_prompt),
        cmocka_unit_test(test_sample_greedy_and_ties),
        cmocka_unit_test(test_sample_determinism),
        cmocka_unit_test(test_sample_distribution_and_filters),
        cmocka_unit_test(test_sample_top_p_large_vocab),
        cmocka_unit_test(test_sample_repetition_penalty),
        cmocka_unit_test(test_gen_stop_strings),
        cmocka_unit_test(test_gen_limits_and_utf8),
        cmocka_unit_test(test_gen_with_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
