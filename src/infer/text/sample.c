/* Sampling chain (llama.cpp order) with an own seeded PRNG, and the
 * generation controller for stop conditions and streaming. */
#include "cloister/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/buf.h"
#include "cloister/secmem.h"

void cl_sample_params_default(struct cl_sample_params *p, uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = seed;
}

int32_t cl_sample_greedy(const float *logits, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i])))
            best = i;
    return (int32_t)best;
}

struct cl_cand {
    int32_t id;
    float logit;
};

#define CL_SAMPLE_NUCLEUS_TRY 1024

struct cl_sampler {
    struct cl_sample_params p;
    uint32_t n_vocab;
    struct cl_cand *cand;
    struct cl_cand *nucleus; /* scratch for the top-p preselection */
    int32_t *hist;   /* ring of the last repeat_last_n accepted tokens */
    size_t hist_n, hist_pos;
    int32_t *scratch;
    uint64_t rng[4];
};

/* ---- PRNG: splitmix64 seeding, xoshiro256** stream ---- */

static uint64_t cl_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t cl_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cl_sampler_rand_u64(cl_sampler *s)
{
    uint64_t *r = s->rng;
    uint64_t out = cl_rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = cl_rotl(r[3], 45);
    return out;
}

double cl_sampler_rand_unit(cl_sampler *s) { return (double)(cl_sampler_rand_u64(s) >> 11) * 0x1.0p-53; }

void cl_sampler_reset(cl_sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = cl_splitmix64(&x);
    s->p.seed = seed;
    s->hist_n = s->hist_pos = 0;
}

cl_err cl_sampler_new(const struct cl_sample_params *p, uint32_t n_vocab, cl_sampler **out)
{
    cl_err rc = CL_OK;
    cl_sampler *s = NULL;
    CL_ENSURE_D(p && out && n_vocab > 0 && n_vocab <= CL_TOK_MAX_VOCAB, CL_E_CORE_INVALID_ARG, "sampler vocabulary %u",
                n_vocab);
    CL_ENSURE_D(p->repeat_last_n >= 0 && p->repeat_last_n <= (1 << 20), CL_E_CORE_INVALID_ARG,
                "repeat_last_n %d (0..1048576)", p->repeat_last_n);
    CL_ENSURE_D(isfinite(p->temperature) && isfinite(p->top_p) && isfinite(p->min_p) && p->min_p <= 1.0f &&
                    isfinite(p->repeat_penalty) && p->repeat_penalty > 0 && isfinite(p->freq_penalty) &&
                    isfinite(p->presence_penalty),
                CL_E_CORE_INVALID_ARG, "sampling parameter out of range");
    s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc(n_vocab * sizeof(*s->cand));
    s->nucleus = malloc(n_vocab * sizeof(*s->nucleus));
    s->hist = malloc(((size_t)p->repeat_last_n + 1) * sizeof(*s->hist));
    s->scratch = malloc(((size_t)p->repeat_last_n + 1) * sizeof(*s->scratch));
    CL_ENSURE(s->cand && s->nucleus && s->hist && s->scratch, CL_E_CORE_NOMEM);
    cl_sampler_reset(s, p->seed);
    *out = s;
    s = NULL;
out:
    cl_sampler_free(s);
    return rc;
}

void cl_sampler_free(cl_sampler *s)
{
    if (!s)
        return;
    if (s->cand) {
        cl_wipe(s->cand, s->n_vocab * sizeof(*s->cand));
        free(s->cand);
    }
    if (s->nucleus) {
        cl_wipe(s->nucleus, s->n_vocab * sizeof(*s->nucleus));
        free(s->nucleus);
    }
    if (s->hist) {
        cl_wipe(s->hist, ((size_t)s->p.repeat_last_n + 1) * sizeof(*s->hist));
        free(s->hist);
    }
    if (s->scratch) {
        cl_wipe(s->scratch, ((size_t)s->p.repeat_last_n + 1) * sizeof(*s->scratch));
        free(s->scratch);
    }
    cl_wipe(s->rng, sizeof(s->rng));
    free(s);
}

void cl_sampler_accept(cl_sampler *s, int32_t id)
{
    size_t cap = (size_t)s->p.repeat_last_n;
    if (!cap)
        return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->hist_n < cap)
        s->hist_n++;
}

static int cl_int_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Higher logit first, then lower id: a total order, so results never depend
 * on the sort algorithm. */
static int cl_cand_cmp(const void *a, const void *b)
{
    const struct cl_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool cl_cand_before(const struct cl_cand *x, const struct cl_cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static void cl_sampler_penalties(cl_sampler *s, struct cl_cand *c)
{
    const struct cl_sample_params *p = &s->p;
    if (!s->hist_n || (p->repeat_penalty == 1.0f && p->freq_penalty == 0.0f && p->presence_penalty == 0.0f))
        return;
    memcpy(s->scratch, s->hist, s->hist_n * sizeof(*s->scratch));
    qsort(s->scratch, s->hist_n, sizeof(*s->scratch), cl_int_cmp);
    for (size_t i = 0; i < s->hist_n;) {
        size_t j = i;
        while (j < s->hist_n && s->scratch[j] == s->scratch[i])
            j++;
        int32_t id = s->scratch[i];
        if (id >= 0 && (uint32_t)id < s->n_vocab) {
            float *l = &c[id].logit;
            *l = *l <= 0 ? *l * p->repeat_penalty : *l / p->repeat_penalty;
            *l -= (float)(j - i) * p->freq_penalty + p->presence_penalty;
        }
        i = j;
    }
}

/* Keeps the k best candidates, sorted, via a bounded min-heap (O(n log k)). */
static size_t cl_sampler_top_k(struct cl_cand *c, size_t n, size_t k)
{
    /* heap[0] is the worst kept candidate */
    for (size_t i = 0; i < n; i++) {
        struct cl_cand x = c[i];
        size_t h;
        if (i < k) {
            h = i;
            while (h > 0 && cl_cand_before(&c[(h - 1) / 2], &x)) {
                c[h] = c[(h - 1) / 2];
                h = (h - 1) / 2;
            }
            c[h] = x;
            continue;
        }
        if (!cl_cand_before(&x, &c[0]))
            continue;
        h = 0;
        for (;;) {
            size_t ch = 2 * h + 1;
            if (ch >= k)
                break;
            if (ch + 1 < k && cl_cand_before(&c[ch], &c[ch + 1]))
                ch++;
            if (!cl_cand_before(&x, &c[ch]))
                break;
            c[h] = c[ch];
            h = ch;
        }
        c[h] = x;
    }
    qsort(c, k, sizeof(*c), cl_cand_cmp);
    return k;
}

cl_err cl_sampler_sample(cl_sampler *s, const float *logits, int32_t *out)
{
    if (!s || !logits || !out)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "sample arguments");
    struct cl_cand *c = s->cand;
    size_t n = s->n_vocab;
    for (size_t i = 0; i < n; i++) {
        c[i].id = (int32_t)i;
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
    }
    cl_sampler_penalties(s, c);
    const struct cl_sample_params *p = &s->p;
    if (p->temperature <= 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit)
                best = i;
        *out = c[best].id;
        return CL_OK;
    }
    bool sorted = false;
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        n = cl_sampler_top_k(c, n, (size_t)p->top_k);
        sorted = true;
    }
    if (p->top_p < 1.0f) {
        float top = -INFINITY;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit > top)
                top = c[i].logit;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += exp((double)c[i].logit - (double)top);
        if (!sorted) {
            /* The nucleus is usually small: select the best few first and
             * sort the whole vocabulary only if they do not reach top_p.
             * Both paths see the same order, so the result is the same. */
            size_t k = n < CL_SAMPLE_NUCLEUS_TRY ? n : CL_SAMPLE_NUCLEUS_TRY;
            memcpy(s->nucleus, c, n * sizeof(*c));
            cl_sampler_top_k(s->nucleus, n, k);
            double cum = 0;
            for (size_t i = 0; i < k; i++)
                cum += exp((double)s->nucleus[i].logit - (double)top) / sum;
            if (cum >= p->top_p || k == n) {
                memcpy(c, s->nucleus, k * sizeof(*c));
                n = k;
            } else {
                qsort(c, n, sizeof(*c), cl_cand_cmp);
            }
            sorted = true;
        }
        double cum = 0;
        for (size_t i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - (double)top) / sum;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float max = -INFINITY;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit > max)
                max = c[i].logit;
        float floor_l = max + logf(p->min_p);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= floor_l)
                c[k++] = c[i];
        n = k ? k : 1;
    }
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        c[i].logit /= p->temperature;
        if (c[i].logit > max)
            max = c[i].logit;
    }
    if (max == -INFINITY) {
        *out = c[0].id; /* every candidate impossible: nothing to draw from */
        return CL_OK;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += exp((double)c[i].logit - (double)max);
    double r = cl_sampler_rand_unit(s) * sum, cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - (double)max);
        if (r < cum) {
            *out = c[i].id;
            return CL_OK;
        }
    }
    /* rounding left r at the very top: the last candidate with any mass */
    size_t last = n - 1;
    while (last > 0 && c[last].logit == -INFINITY)
        last--;
    *out = c[last].id;
    return CL_OK;
}

/* ---- generation control ---- */

struct cl_gen {
    const cl_tokenizer *t;
    struct cl_gen_opts o;
    char **stop;            /* copies (stop strings may be part of a request: wiped) */
    size_t *stop_len;
    size_t max_stop;
    struct cl_buf text;     /* secure */
    struct cl_buf piece;    /* secure scratch for one token's text */
    size_t emitted;         /* bytes already released to the callback */
    uint32_t n_tokens;
    enum cl_gen_stop reason;
    bool finished;
};

static const char *const cl_gen_stop_names[CL_GEN_STOP_COUNT] = {
    [CL_GEN_STOP_NONE] = "none",     [CL_GEN_STOP_EOG] = "eog",         [CL_GEN_STOP_MAX_TOKENS] = "max_tokens",
    [CL_GEN_STOP_STRING] = "stop",   [CL_GEN_STOP_CALLBACK] = "callback",
};

const char *cl_gen_stop_name(enum cl_gen_stop r)
{
    return (unsigned)r < CL_GEN_STOP_COUNT ? cl_gen_stop_names[r] : "invalid";
}

void cl_gen_free(cl_gen *g)
{
    if (!g)
        return;
    for (size_t i = 0; g->stop && i < g->o.n_stop; i++) {
        if (g->stop[i]) {
            cl_wipe(g->stop[i], g->stop_len[i]);
            free(g->stop[i]);
        }
    }
    free(g->stop);
    free(g->stop_len);
    cl_buf_free(&g->text);
    cl_buf_free(&g->piece);
    free(g);
}

cl_err cl_gen_new(const cl_tokenizer *t, const struct cl_gen_opts *o, cl_gen **out)
{
    cl_err rc = CL_OK;
    cl_gen *g = NULL;
    CL_ENSURE_D(o && out && (o->stop || !o->n_stop), CL_E_CORE_INVALID_ARG, "generation options");
    CL_ENSURE_D(o->n_stop <= CL_GEN_MAX_STOP, CL_E_CORE_LIMIT, "%zu stop strings (max %d)", o->n_stop, CL_GEN_MAX_STOP);
    g = calloc(1, sizeof(*g));
    CL_ENSURE(g, CL_E_CORE_NOMEM);
    g->t = t;
    g->o = *o;
    g->o.stop = NULL;
    cl_buf_init(&g->text, CL_GEN_MAX_TEXT, CL_BUF_SECURE);
    cl_buf_init(&g->piece, 1 << 16, CL_BUF_SECURE);
    g->stop = calloc(o->n_stop + 1, sizeof(*g->stop));
    g->stop_len = calloc(o->n_stop + 1, sizeof(*g->stop_len));
    CL_ENSURE(g->stop && g->stop_len, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < o->n_stop; i++) {
        CL_ENSURE_D(o->stop[i], CL_E_CORE_INVALID_ARG, "stop string %zu", i);
        size_t l = strlen(o->stop[i]);
        CL_ENSURE_D(l > 0 && l <= CL_GEN_MAX_STOP_LEN, CL_E_CORE_INVALID_ARG, "stop string %zu length %zu (1..%d)", i, l,
                    CL_GEN_MAX_STOP_LEN);
        g->stop[i] = malloc(l);
        CL_ENSURE(g->stop[i], CL_E_CORE_NOMEM);
        memcpy(g->stop[i], o->stop[i], l);
        g->stop_len[i] = l;
        if (l > g->max_stop)
            g->max_stop = l;
    }
    *out = g;
    g = NULL;
out:
    cl_gen_free(g);
    return rc;
}

const char *cl_gen_text(const cl_gen *g, size_t *len)
{
    if (len)
        *len = g->text.len;
    return g->text.data ? (const char *)g->text.data : "";
}

uint32_t cl_gen_n_tokens(const cl_gen *g) { return g->n_tokens; }
enum cl_gen_stop cl_gen_reason(const cl_gen *g) { return g->reason; }

/* Bytes at the end of text[0..len) that could still become the start of a
 * stop string or complete a UTF-8 character: held back from the callback. */
static size_t cl_gen_holdback(const cl_gen *g, const uint8_t *text, size_t len)
{
    size_t hold = 0;
    for (size_t i = 0; i < g->o.n_stop; i++) {
        size_t sl = g->stop_len[i];
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > hold; k--)
            if (!memcmp(text + len - k, g->stop[i], k)) {
                hold = k;
                break;
            }
    }
    /* an incomplete UTF-8 sequence at the very end */
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        uint8_t c = text[len - k];
        if ((c & 0xc0) == 0x80)
            continue;
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (need > k && k > hold)
            hold = k;
        break;
    }
    return hold;
}

static int cl_gen_emit(cl_gen *g, int32_t token, size_t upto)
{
    int r = 0;
    if (g->o.cb)
        r = g->o.cb(g->o.user, token, (const char *)g->text.data + g->emitted, upto - g->emitted);
    g->emitted = upto;
    return r;
}

cl_err cl_gen_finish(cl_gen *g)
{
    if (!g)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "generation state");
    if (g->finished)
        return CL_OK;
    g->finished = true;
    if (g->emitted < g->text.len && g->o.cb)
        (void)g->o.cb(g->o.user, CL_TOK_NULL, (const char *)g->text.data + g->emitted, g->text.len - g->emitted);
    g->emitted = g->text.len;
    return CL_OK;
}

cl_err cl_gen_push_text(cl_gen *g, int32_t token, bool eog, const char *text, size_t len, bool *done)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(g && done && (text || !len), CL_E_CORE_INVALID_ARG, "generation push");
    CL_ENSURE_D(g->reason == CL_GEN_STOP_NONE, CL_E_CORE_STATE, "generation already stopped (%s)",
                cl_gen_stop_name(g->reason));
    g->n_tokens++;
    if (eog && g->o.stop_on_eog) {
        g->reason = CL_GEN_STOP_EOG;
        (void)cl_gen_emit(g, token, g->text.len);
        g->finished = true;
        *done = true;
        return CL_OK;
    }
    size_t old = g->text.len;
    CL_GUARD(cl_buf_append(&g->text, text, len));
    /* Earliest stop string in the new text (it may start in older text). */
    size_t from = g->max_stop && old > g->max_stop - 1 ? old - (g->max_stop - 1) : 0;
    size_t cut = SIZE_MAX;
    for (size_t i = 0; i < g->o.n_stop; i++) {
        const uint8_t *m = memmem(g->text.data + from, g->text.len - from, g->stop[i], g->stop_len[i]);
        if (m && (size_t)(m - g->text.data) < cut)
            cut = (size_t)(m - g->text.data);
    }
    if (cut != SIZE_MAX) {
        if (cut < g->emitted)
            cut = g->emitted; /* cannot happen: held-back text covers any stop prefix */
        cl_wipe(g->text.data + cut, g->text.len - cut);
        g->text.len = cut;
        g->reason = CL_GEN_STOP_STRING;
        (void)cl_gen_emit(g, token, cut);
        g->finished = true;
        *done = true;
        return CL_OK;
    }
    bool at_max = g->o.max_tokens && g->n_tokens >= g->o.max_tokens;
    size_t upto = at_max ? g->text.len : g->text.len - cl_gen_holdback(g, g->text.data, g->text.len);
    if (upto < g->emitted)
        upto = g->emitted;
    int stop = cl_gen_emit(g, token, upto);
    if (at_max) {
        g->reason = CL_GEN_STOP_MAX_TOKENS;
        g->finished = true;
    } else if (stop) {
        g->reason = CL_GEN_STOP_CALLBACK;
        CL_GUARD(cl_gen_finish(g));
    }
    *done = g->reason != CL_GEN_STOP_NONE;
out:
    return rc;
}

cl_err cl_gen_push(cl_gen *g, int32_t token, bool *done)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(g && g->t, CL_E_CORE_INVALID_ARG, "generation without a tokenizer");
    cl_buf_reset(&g->piece);
    bool eog = cl_tokenizer_is_eog(g->t, token);
    if (!(eog && g->o.stop_on_eog)) {
        /* llama.cpp's detokenize drops the space a space-prefixing vocabulary
         * put in front of the first token's text. */
        unsigned lstrip = g->n_tokens == 0 && cl_tokenizer_add_space_prefix(g->t) ? 1 : 0;
        CL_GUARD(cl_tokenizer_piece(g->t, token, CL_TOK_NONE, lstrip, &g->piece));
    }
    CL_GUARD(cl_gen_push_text(g, token, eog, (const char *)g->piece.data, g->piece.len, done));
out:
    return rc;
}
