/* SPM tokenizer with llama.cpp's exact merge order and special-token rules. */
#include "cloister/tokenizer.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/secmem.h"

#define CL_TOK_ATTR_LSTRIP 1u
#define CL_TOK_ATTR_RSTRIP 2u
#define CL_TOK_MAX_EOG 16

struct cl_tokenizer {
    uint32_t n;
    struct cl_gguf_str *text; /* views into the model */
    float *score;
    uint8_t *type;
    uint8_t *strip;           /* CL_TOK_ATTR_* */
    int32_t *hash;            /* open addressing, CL_TOK_NULL = empty */
    size_t hmask;
    int32_t byte_tok[256];
    int32_t bos, eos, unk, pad, eot, eom;
    int32_t eog[CL_TOK_MAX_EOG];
    unsigned n_eog;
    bool add_bos, add_eos, add_space_prefix;
    int32_t *special; /* control/user-defined/unknown ids, longest text first */
    size_t n_special;
};

/* ---- vocabulary lookup ---- */

static uint64_t cl_tok_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

int32_t cl_tokenizer_find(const cl_tokenizer *t, const char *s, size_t len)
{
    if (!t || (!s && len))
        return CL_TOK_NULL;
    for (size_t i = cl_tok_hash(s, len) & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t id = t->hash[i];
        if (id == CL_TOK_NULL)
            return CL_TOK_NULL;
        if (t->text[id].len == len && (len == 0 || !memcmp(t->text[id].p, s, len)))
            return id;
    }
}

/* Later duplicates win, as in llama.cpp's token_to_id map. */
static void cl_tok_hash_insert(cl_tokenizer *t, int32_t id)
{
    const struct cl_gguf_str *s = &t->text[id];
    for (size_t i = cl_tok_hash(s->p, s->len) & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t cur = t->hash[i];
        if (cur == CL_TOK_NULL ||
            (t->text[cur].len == s->len && (s->len == 0 || !memcmp(t->text[cur].p, s->p, s->len)))) {
            t->hash[i] = id;
            return;
        }
    }
}

static bool cl_tok_valid(const cl_tokenizer *t, int32_t id) { return id >= 0 && (uint32_t)id < t->n; }

uint32_t cl_tokenizer_n_vocab(const cl_tokenizer *t) { return t->n; }
int32_t cl_tokenizer_bos(const cl_tokenizer *t) { return t->bos; }
int32_t cl_tokenizer_eos(const cl_tokenizer *t) { return t->eos; }
int32_t cl_tokenizer_unk(const cl_tokenizer *t) { return t->unk; }
int32_t cl_tokenizer_pad(const cl_tokenizer *t) { return t->pad; }
bool cl_tokenizer_add_bos(const cl_tokenizer *t) { return t->add_bos; }
bool cl_tokenizer_add_eos(const cl_tokenizer *t) { return t->add_eos; }
bool cl_tokenizer_add_space_prefix(const cl_tokenizer *t) { return t->add_space_prefix; }

bool cl_tokenizer_is_eog(const cl_tokenizer *t, int32_t id)
{
    if (id == CL_TOK_NULL)
        return false;
    for (unsigned i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

enum cl_tok_type cl_tokenizer_type(const cl_tokenizer *t, int32_t id)
{
    return cl_tok_valid(t, id) ? (enum cl_tok_type)t->type[id] : CL_TOK_TYPE_UNDEFINED;
}

float cl_tokenizer_score(const cl_tokenizer *t, int32_t id) { return cl_tok_valid(t, id) ? t->score[id] : 0.0f; }

bool cl_tokenizer_text(const cl_tokenizer *t, int32_t id, struct cl_gguf_str *out)
{
    if (!cl_tok_valid(t, id))
        return false;
    *out = t->text[id];
    return true;
}

/* ---- loading ---- */

void cl_tokenizer_free(cl_tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->score);
    free(t->type);
    free(t->strip);
    free(t->hash);
    free(t->special);
    free(t);
}

/* Optional special-token id: absent keeps the default; out of range keeps the
 * default too (llama.cpp warns and does the same). */
static cl_err cl_tok_special_id(const cl_gguf *g, const cl_tokenizer *t, const char *key, int32_t *id)
{
    if (!cl_gguf_find_kv(g, key))
        return CL_OK;
    uint32_t v;
    cl_err e = cl_gguf_get_uint32_any(g, key, &v);
    if (e != CL_OK)
        return e;
    if (v < t->n)
        *id = (int32_t)v;
    return CL_OK;
}

static cl_err cl_tok_opt_bool(const cl_gguf *g, const char *key, bool *v)
{
    return cl_gguf_find_kv(g, key) ? cl_gguf_get_bool(g, key, v) : CL_OK;
}

static int cl_tok_special_cmp(const void *a, const void *b, void *ctx)
{
    const cl_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = t->text[x].len, ly = t->text[y].len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static bool cl_tok_contains_ci(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && tolower((unsigned char)s[i + j]) == needle[j])
            j++;
        if (j == m)
            return true;
    }
    return false;
}

/* Texts llama.cpp treats as end of generation (and forces to CONTROL). */
static const char *const cl_tok_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
};

static void cl_tok_add_eog(cl_tokenizer *t, int32_t id)
{
    if (id == CL_TOK_NULL || cl_tokenizer_is_eog(t, id) || t->n_eog >= CL_TOK_MAX_EOG)
        return;
    t->eog[t->n_eog++] = id;
}

cl_err cl_tokenizer_new(const cl_gguf *g, cl_tokenizer **out)
{
    cl_err rc = CL_OK;
    cl_tokenizer *t = NULL;
    struct cl_gguf_str model;
    float *scores = NULL;
    int32_t *types = NULL;
    size_t n = 0, ns = 0;
    CL_ENSURE_D(g && out, CL_E_CORE_INVALID_ARG, "tokenizer arguments");
    CL_GUARD(cl_gguf_get_str(g, "tokenizer.ggml.model", &model));
    CL_ENSURE_D(model.len == 5 && !memcmp(model.p, "llama", 5), CL_E_INFER_TOK_MODEL,
                "tokenizer.ggml.model is not \"llama\" (only SentencePiece vocabularies are supported)");
    t = calloc(1, sizeof(*t));
    CL_ENSURE(t, CL_E_CORE_NOMEM);
    CL_GUARD(cl_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &t->text, &n));
    CL_ENSURE_D(n > 0 && n <= CL_TOK_MAX_VOCAB, CL_E_INFER_TOK_VOCAB, "tokenizer.ggml.tokens has %zu entries (1..%u)", n,
                CL_TOK_MAX_VOCAB);
    t->n = (uint32_t)n;
    t->score = calloc(n, sizeof(*t->score));
    t->type = malloc(n);
    t->strip = calloc(n, 1);
    CL_ENSURE(t->score && t->type && t->strip, CL_E_CORE_NOMEM);
    if (cl_gguf_find_kv(g, "tokenizer.ggml.scores")) {
        CL_GUARD(cl_gguf_get_arr_f32(g, "tokenizer.ggml.scores", &scores, &ns));
        CL_ENSURE_D(ns == n, CL_E_INFER_TOK_VOCAB, "tokenizer.ggml.scores has %zu entries, tokens %zu", ns, n);
        memcpy(t->score, scores, n * sizeof(float));
    }
    memset(t->type, CL_TOK_TYPE_NORMAL, n);
    if (cl_gguf_find_kv(g, "tokenizer.ggml.token_type")) {
        CL_GUARD(cl_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &ns));
        CL_ENSURE_D(ns == n, CL_E_INFER_TOK_VOCAB, "tokenizer.ggml.token_type has %zu entries, tokens %zu", ns, n);
        for (size_t i = 0; i < n; i++)
            t->type[i] = types[i] >= 0 && types[i] < CL_TOK_TYPE_COUNT ? (uint8_t)types[i] : CL_TOK_TYPE_UNDEFINED;
    }

    size_t hsize = 1;
    while (hsize < 2 * n)
        hsize <<= 1;
    t->hash = malloc(hsize * sizeof(*t->hash));
    CL_ENSURE(t->hash, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < hsize; i++)
        t->hash[i] = CL_TOK_NULL;
    t->hmask = hsize - 1;
    for (uint32_t i = 0; i < t->n; i++)
        cl_tok_hash_insert(t, (int32_t)i);

    /* SPM defaults, then the metadata. */
    t->bos = 1 < t->n ? 1 : CL_TOK_NULL;
    t->eos = 2 < t->n ? 2 : CL_TOK_NULL;
    t->unk = 0;
    t->pad = t->eot = t->eom = CL_TOK_NULL;
    t->add_bos = true;
    t->add_eos = false;
    t->add_space_prefix = true;
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.bos_token_id", &t->bos));
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.eos_token_id", &t->eos));
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.unknown_token_id", &t->unk));
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.padding_token_id", &t->pad));
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.eot_token_id", &t->eot));
    CL_GUARD(cl_tok_special_id(g, t, "tokenizer.ggml.eom_token_id", &t->eom));
    CL_GUARD(cl_tok_opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos));
    CL_GUARD(cl_tok_opt_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos));
    CL_GUARD(cl_tok_opt_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix));

    for (size_t i = 0; i < sizeof(cl_tok_eog_texts) / sizeof(cl_tok_eog_texts[0]); i++) {
        int32_t id = cl_tokenizer_find(t, cl_tok_eog_texts[i], strlen(cl_tok_eog_texts[i]));
        if (id == CL_TOK_NULL)
            continue;
        t->type[id] = CL_TOK_TYPE_CONTROL;
        cl_tok_add_eog(t, id);
        if (t->eot == CL_TOK_NULL && strcmp(cl_tok_eog_texts[i], "<|return|>") &&
            strcmp(cl_tok_eog_texts[i], "<|call|>") && strcmp(cl_tok_eog_texts[i], "<|eom_id|>") &&
            strcmp(cl_tok_eog_texts[i], "<|end_of_text|>"))
            t->eot = id;
    }
    cl_tok_add_eog(t, t->eos);
    cl_tok_add_eog(t, t->eot);
    cl_tok_add_eog(t, t->eom);

    for (size_t b = 0; b < 256; b++) {
        static const char hex[] = "0123456789ABCDEF";
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        char one = (char)b;
        int32_t id = cl_tokenizer_find(t, name, 6);
        if (id == CL_TOK_NULL)
            id = cl_tokenizer_find(t, &one, 1);
        t->byte_tok[b] = id != CL_TOK_NULL ? id : t->unk;
    }

    t->special = malloc(n * sizeof(*t->special));
    CL_ENSURE(t->special, CL_E_CORE_NOMEM);
    for (uint32_t i = 0; i < t->n; i++)
        if ((t->type[i] == CL_TOK_TYPE_CONTROL || t->type[i] == CL_TOK_TYPE_USER_DEFINED ||
             t->type[i] == CL_TOK_TYPE_UNKNOWN) && t->text[i].len > 0)
            t->special[t->n_special++] = (int32_t)i;
    /* llama.cpp sorts by length only (unstable); ties go by id here. */
    qsort_r(t->special, t->n_special, sizeof(*t->special), cl_tok_special_cmp, t);

    /* Phi-3 strips whitespace after its special tokens (llama.cpp keys this
     * off the model name). */
    struct cl_gguf_str name;
    if (cl_gguf_find_kv(g, "general.name") && cl_gguf_get_str(g, "general.name", &name) == CL_OK &&
        (cl_tok_contains_ci(name.p, name.len, "phi-3") || cl_tok_contains_ci(name.p, name.len, "phi3"))) {
        for (size_t i = 0; i < t->n_special; i++)
            t->strip[t->special[i]] |= CL_TOK_ATTR_RSTRIP;
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        int32_t id = cl_tokenizer_find(t, "</s>", 4);
        if (id != CL_TOK_NULL)
            t->strip[id] |= CL_TOK_ATTR_RSTRIP;
        for (size_t i = 0; i < 3; i++) {
            id = cl_tokenizer_find(t, keep[i], strlen(keep[i]));
            if (id != CL_TOK_NULL)
                t->strip[id] &= (uint8_t)~CL_TOK_ATTR_RSTRIP;
        }
    }
    *out = t;
    t = NULL;
out:
    free(scores);
    free(types);
    cl_tokenizer_free(t);
    return rc;
}

/* ---- tokenization ---- */

struct cl_tok_ids {
    int32_t *v;
    size_t n, cap;
};

static cl_err cl_tok_push(struct cl_tok_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int32_t *v = malloc(cap * sizeof(*v));
        if (!v)
            return CL_E_CORE_NOMEM;
        if (o->n)
            memcpy(v, o->v, o->n * sizeof(*v));
        if (o->v) {
            cl_wipe(o->v, o->cap * sizeof(*o->v));
            free(o->v);
        }
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = id;
    return CL_OK;
}

struct cl_tok_sym {
    const char *text;
    size_t n;
    int32_t prev, next;
};

struct cl_tok_bigram {
    float score;
    int32_t left, right;
    size_t size;
};

struct cl_tok_session {
    const cl_tokenizer *t;
    struct cl_tok_sym *sym;
    struct cl_tok_bigram *heap;
    size_t n_heap, cap_heap;
};

/* a comes out of the queue before b: higher score, then the leftmost pair. */
static bool cl_tok_before(const struct cl_tok_bigram *a, const struct cl_tok_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static cl_err cl_tok_heap_push(struct cl_tok_session *s, struct cl_tok_bigram bg)
{
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 64;
        struct cl_tok_bigram *h = realloc(s->heap, cap * sizeof(*h));
        if (!h)
            return CL_E_CORE_NOMEM;
        s->heap = h;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cl_tok_before(&bg, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = bg;
    return CL_OK;
}

static struct cl_tok_bigram cl_tok_heap_pop(struct cl_tok_session *s)
{
    struct cl_tok_bigram top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cl_tok_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!cl_tok_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

static cl_err cl_tok_try_bigram(struct cl_tok_session *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return CL_OK;
    size_t len = s->sym[left].n + s->sym[right].n;
    int32_t id = cl_tokenizer_find(s->t, s->sym[left].text, len);
    if (id == CL_TOK_NULL)
        return CL_OK;
    struct cl_tok_bigram bg = {s->t->score[id], left, right, len};
    return cl_tok_heap_push(s, bg);
}

/* UTF-8 sequence length from the lead byte, as llama.cpp's unicode_len_utf8. */
static size_t cl_tok_utf8_len(unsigned char c)
{
    static const size_t lookup[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Tokenizes already-escaped text (no special tokens inside). */
static cl_err cl_tok_spm(const cl_tokenizer *t, const char *text, size_t len, struct cl_tok_ids *o)
{
    cl_err rc = CL_OK;
    struct cl_tok_session s = {.t = t};
    size_t nsym = 0;
    if (!len)
        return CL_OK;
    s.sym = malloc(len * sizeof(*s.sym));
    CL_ENSURE(s.sym, CL_E_CORE_NOMEM);
    for (size_t off = 0; off < len;) {
        size_t l = cl_tok_utf8_len((unsigned char)text[off]);
        if (l > len - off)
            l = len - off;
        s.sym[nsym].text = text + off;
        s.sym[nsym].n = l;
        s.sym[nsym].prev = (int32_t)nsym - 1;
        off += l;
        s.sym[nsym].next = off == len ? -1 : (int32_t)nsym + 1;
        nsym++;
    }
    for (size_t i = 1; i < nsym; i++)
        CL_GUARD(cl_tok_try_bigram(&s, (int32_t)i - 1, (int32_t)i));
    while (s.n_heap) {
        struct cl_tok_bigram bg = cl_tok_heap_pop(&s);
        struct cl_tok_sym *l = &s.sym[bg.left], *r = &s.sym[bg.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s.sym[r->next].prev = bg.left;
        CL_GUARD(cl_tok_try_bigram(&s, l->prev, bg.left));
        CL_GUARD(cl_tok_try_bigram(&s, bg.left, l->next));
    }
    /* Every merged symbol is a vocabulary token; anything else is a single
     * character that falls back to byte tokens. */
    for (int32_t i = 0; i != -1; i = s.sym[i].next) {
        int32_t id = cl_tokenizer_find(t, s.sym[i].text, s.sym[i].n);
        if (id != CL_TOK_NULL) {
            CL_GUARD(cl_tok_push(o, id));
            continue;
        }
        for (size_t j = 0; j < s.sym[i].n; j++) {
            int32_t b = t->byte_tok[(unsigned char)s.sym[i].text[j]];
            CL_ENSURE_D(b != CL_TOK_NULL, CL_E_INFER_TOK_VOCAB, "no byte or unknown token for a byte");
            CL_GUARD(cl_tok_push(o, b));
        }
    }
out:
    if (s.sym) {
        cl_wipe(s.sym, len * sizeof(*s.sym));
        free(s.sym);
    }
    if (s.heap) {
        cl_wipe(s.heap, s.cap_heap * sizeof(*s.heap));
        free(s.heap);
    }
    return rc;
}

struct cl_tok_frag {
    int32_t tok; /* CL_TOK_NULL: raw text [off, off+len) */
    size_t off, len;
};

struct cl_tok_frags {
    struct cl_tok_frag *v;
    size_t n, cap;
};

static cl_err cl_tok_frag_push(struct cl_tok_frags *f, int32_t tok, size_t off, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        struct cl_tok_frag *v = realloc(f->v, cap * sizeof(*v));
        if (!v)
            return CL_E_CORE_NOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n].tok = tok;
    f->v[f->n].off = off;
    f->v[f->n].len = len;
    f->n++;
    return CL_OK;
}

/* Splits raw fragments at every occurrence of each special token, longest
 * token first, as llama.cpp's tokenizer_st_partition. */
static cl_err cl_tok_partition(const cl_tokenizer *t, const char *text, bool parse_special, struct cl_tok_frags *f)
{
    cl_err rc = CL_OK;
    struct cl_tok_frags nf = {0};
    for (size_t si = 0; si < t->n_special; si++) {
        int32_t id = t->special[si];
        uint8_t ty = t->type[id];
        if (!parse_special && (ty == CL_TOK_TYPE_CONTROL || ty == CL_TOK_TYPE_UNKNOWN))
            continue;
        const char *st = t->text[id].p;
        size_t sl = t->text[id].len;
        bool any = false;
        for (size_t i = 0; i < f->n && !any; i++)
            if (f->v[i].tok == CL_TOK_NULL && f->v[i].len >= sl && memmem(text + f->v[i].off, f->v[i].len, st, sl))
                any = true;
        if (!any)
            continue;
        nf.n = 0;
        for (size_t i = 0; i < f->n; i++) {
            struct cl_tok_frag fr = f->v[i];
            if (fr.tok != CL_TOK_NULL) {
                CL_GUARD(cl_tok_frag_push(&nf, fr.tok, 0, 0));
                continue;
            }
            size_t off = fr.off, len = fr.len;
            for (;;) {
                const char *m = len >= sl ? memmem(text + off, len, st, sl) : NULL;
                if (!m) {
                    if (len)
                        CL_GUARD(cl_tok_frag_push(&nf, CL_TOK_NULL, off, len));
                    break;
                }
                size_t mo = (size_t)(m - text);
                size_t llen = mo - off;
                if (t->strip[id] & CL_TOK_ATTR_LSTRIP)
                    while (llen > 0 && isspace((unsigned char)text[off + llen - 1]))
                        llen--;
                if (llen)
                    CL_GUARD(cl_tok_frag_push(&nf, CL_TOK_NULL, off, llen));
                CL_GUARD(cl_tok_frag_push(&nf, id, 0, 0));
                size_t roff = mo + sl, rlen = off + len - roff;
                if (t->strip[id] & CL_TOK_ATTR_RSTRIP)
                    while (rlen > 0 && isspace((unsigned char)text[roff])) {
                        roff++;
                        rlen--;
                    }
                off = roff;
                len = rlen;
            }
        }
        struct cl_tok_frags tmp = *f;
        *f = nf;
        nf = tmp;
    }
out:
    free(nf.v);
    return rc;
}

cl_err cl_tokenize(const cl_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t *out, size_t cap,
                   size_t *n)
{
    cl_err rc = CL_OK;
    struct cl_tok_frags f = {0};
    struct cl_tok_ids ids = {0};
    struct cl_buf esc;
    cl_buf_init(&esc, CL_TOK_MAX_INPUT * 3 + 4, CL_BUF_SECURE);
    CL_ENSURE_D(t && (text || !len) && (out || !cap) && n, CL_E_CORE_INVALID_ARG, "tokenize arguments");
    CL_ENSURE_D(len <= CL_TOK_MAX_INPUT, CL_E_INFER_TOK_LIMIT, "input of %zu bytes (max %zu)", len, CL_TOK_MAX_INPUT);
    bool add_special = flags & CL_TOK_ADD_SPECIAL;
    if (len) {
        CL_GUARD(cl_tok_frag_push(&f, CL_TOK_NULL, 0, len));
        CL_GUARD(cl_tok_partition(t, text, flags & CL_TOK_PARSE_SPECIAL, &f));
    }
    bool prev_special = true; /* a leading space goes before the first text */
    if (add_special && t->add_bos) {
        CL_ENSURE_D(t->bos != CL_TOK_NULL, CL_E_INFER_TOK_VOCAB, "add_bos_token set but no BOS token");
        CL_GUARD(cl_tok_push(&ids, t->bos));
    }
    for (size_t i = 0; i < f.n; i++) {
        if (f.v[i].tok != CL_TOK_NULL) {
            CL_GUARD(cl_tok_push(&ids, f.v[i].tok));
            prev_special = true;
            continue;
        }
        cl_buf_reset(&esc);
        if (t->add_space_prefix && prev_special)
            CL_GUARD(cl_buf_append(&esc, "\xe2\x96\x81", 3));
        const char *p = text + f.v[i].off;
        for (size_t j = 0; j < f.v[i].len; j++) {
            if (p[j] == ' ')
                CL_GUARD(cl_buf_append(&esc, "\xe2\x96\x81", 3));
            else
                CL_GUARD(cl_buf_append_u8(&esc, (uint8_t)p[j]));
        }
        CL_GUARD(cl_tok_spm(t, (const char *)esc.data, esc.len, &ids));
        prev_special = false;
    }
    if (add_special && t->add_eos) {
        CL_ENSURE_D(t->eos != CL_TOK_NULL, CL_E_INFER_TOK_VOCAB, "add_eos_token set but no EOS token");
        CL_GUARD(cl_tok_push(&ids, t->eos));
    }
    if (ids.n)
        memcpy(out, ids.v, (ids.n < cap ? ids.n : cap) * sizeof(*out));
    *n = ids.n;
    if (ids.n > cap)
        CL_FAIL(CL_E_INFER_TOK_SPACE, "%zu tokens, room for %zu", ids.n, cap);
out:
    if (f.v) {
        cl_wipe(f.v, f.cap * sizeof(*f.v));
        free(f.v);
    }
    if (ids.v) {
        cl_wipe(ids.v, ids.cap * sizeof(*ids.v));
        free(ids.v);
    }
    cl_buf_free(&esc);
    return rc;
}

/* ---- detokenization ---- */

static cl_err cl_tok_copy(struct cl_buf *out, const char *p, size_t n, unsigned lstrip)
{
    for (unsigned i = 0; i < lstrip && n && *p == ' '; i++) {
        p++;
        n--;
    }
    return cl_buf_append(out, p, n);
}

cl_err cl_tokenizer_piece(const cl_tokenizer *t, int32_t id, unsigned flags, unsigned lstrip, struct cl_buf *out)
{
    if (!t || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "piece arguments");
    if (!cl_tok_valid(t, id))
        return cl_err_fail(CL_E_INFER_TOK_ID, "token id %d (vocabulary of %u)", id, t->n);
    uint8_t ty = t->type[id];
    const struct cl_gguf_str *s = &t->text[id];
    bool special = ty == CL_TOK_TYPE_CONTROL || ty == CL_TOK_TYPE_UNKNOWN;
    if (special && !(flags & CL_TOK_UNPARSE_SPECIAL))
        return CL_OK;
    if (special || ty == CL_TOK_TYPE_USER_DEFINED)
        return cl_tok_copy(out, s->p, s->len, lstrip);
    if (ty == CL_TOK_TYPE_BYTE) {
        unsigned v = 0;
        for (size_t i = 3; i < s->len && isxdigit((unsigned char)s->p[i]); i++)
            v = (v << 4) | (unsigned)(isdigit((unsigned char)s->p[i]) ? s->p[i] - '0' : (tolower((unsigned char)s->p[i]) - 'a' + 10));
        char b = (char)(v & 0xff);
        return cl_tok_copy(out, &b, 1, lstrip);
    }
    if (ty != CL_TOK_TYPE_NORMAL)
        return CL_OK;
    /* Unescape U+2581 into spaces, then strip leading spaces. */
    size_t start = out->len;
    for (size_t i = 0; i < s->len;) {
        cl_err e;
        if (i + 3 <= s->len && !memcmp(s->p + i, "\xe2\x96\x81", 3)) {
            e = cl_buf_append_u8(out, ' ');
            i += 3;
        } else {
            e = cl_buf_append_u8(out, (uint8_t)s->p[i]);
            i++;
        }
        if (e != CL_OK)
            return e;
    }
    size_t k = 0;
    while (k < lstrip && start + k < out->len && out->data[start + k] == ' ')
        k++;
    if (k) {
        memmove(out->data + start, out->data + start + k, out->len - start - k);
        out->len -= k;
    }
    return CL_OK;
}

cl_err cl_detokenize(const cl_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, struct cl_buf *out)
{
    if (!t || (!ids && n) || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "detokenize arguments");
    bool remove_space = t->add_space_prefix;
    if ((flags & CL_TOK_REMOVE_SPECIAL) && t->add_bos && n > 0 && ids[0] == t->bos) {
        remove_space = false;
        ids++;
        n--;
    }
    if ((flags & CL_TOK_REMOVE_SPECIAL) && t->add_eos && n > 0 && ids[n - 1] == t->eos)
        n--;
    for (size_t i = 0; i < n; i++) {
        cl_err e = cl_tokenizer_piece(t, ids[i], flags & CL_TOK_UNPARSE_SPECIAL, remove_space ? 1 : 0, out);
        if (e != CL_OK)
            return e;
        remove_space = false;
    }
    return CL_OK;
}
