/* Inference commands: logits (teacher forcing), run, bench, mkmodel. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cli.h"
#include "cmd_vision.h"
#include "cloister/encode.h"
#include "cloister/gguf.h"
#include "cloister/infer/answer.h"
#include "cloister/infer/model.h"
#include "cloister/infer/model_mk.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/chat.h"
#include "cloister/sample.h"
#include "cloister/tokenizer.h"

#define CL_INFER_MAX_TOKENS 65536u

struct cl_infer_ctx {
    cl_gguf *g;
    struct cl_model *m;
    struct cl_pool *pool;
};

static void cl_infer_close(struct cl_infer_ctx *c)
{
    cl_pool_free(c->pool);
    cl_model_free(c->m);
    cl_gguf_free(c->g);
    memset(c, 0, sizeof(*c));
}

/* Opens path, loads the model and a pool; prints the failure itself. */
static int cl_infer_open(const char *cmd, const char *path, unsigned threads, struct cl_infer_ctx *c)
{
    cl_err rc;
    memset(c, 0, sizeof(*c));
    if ((rc = cl_gguf_open_file(path, &c->g)) != CL_OK)
        return cl_cli_fail(cmd, "reading model file", rc);
    /* weights the kernels repack: a private copy of the file, which stays as it is */
    if ((cl_model_would_repack(c->g) && (rc = cl_gguf_set_writable(c->g, NULL)) != CL_OK) ||
        (rc = cl_model_load(c->g, &c->m)) != CL_OK) {
        cl_infer_close(c);
        return cl_cli_fail(cmd, "loading model", rc);
    }
    if ((rc = cl_pool_new(threads, &c->pool)) != CL_OK) {
        cl_infer_close(c);
        return cl_cli_fail(cmd, "starting threads", rc);
    }
    return CL_EXIT_OK;
}

/* "1,2,3" -> malloc'd ids; false on syntax error or an empty list. */
static bool cl_infer_parse_tokens(const char *s, int32_t **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    if (cap > CL_INFER_MAX_TOKENS)
        return false;
    int32_t *t = calloc(cap, sizeof(*t));
    if (!t)
        return false;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        char num[16];
        size_t len = strcspn(p, ",");
        uint64_t v;
        if (len == 0 || len >= sizeof(num)) {
            free(t);
            return false;
        }
        memcpy(num, p, len);
        num[len] = 0;
        if (!cl_cli_parse_u64(num, 0, INT32_MAX, &v)) {
            free(t);
            return false;
        }
        t[k++] = (int32_t)v;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) {
                free(t);
                return false;
            }
        }
    }
    if (k == 0) {
        free(t);
        return false;
    }
    *out = t;
    *n = k;
    return true;
}

/* Long options without a short form. */
enum {
    CL_INFER_O_TOKENS = 256,
    CL_INFER_O_TOP,
    CL_INFER_O_FROM,
    CL_INFER_O_KV_F16,
    CL_INFER_O_ARCH,
    CL_INFER_O_SHAPE,
    CL_INFER_O_TYPE,
    CL_INFER_O_VOCAB,
    CL_INFER_O_SEED,
    CL_INFER_O_TEMP,
    CL_INFER_O_CHAT,
    CL_INFER_O_CHAT_TEMPLATE,
    CL_INFER_O_IGNORE_EOS,
    CL_INFER_O_MMPROJ,
    CL_INFER_O_IMAGE,
    CL_INFER_O_IMAGE_F32,
};

/* The one MODEL.gguf operand after the options. */
static int cl_infer_model_arg(const char *cmd, int argc, char **argv, const char **model)
{
    if (optind >= argc)
        return cl_cli_usage_error(cmd, "missing MODEL.gguf");
    if (optind + 1 < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
    *model = argv[optind];
    return CL_EXIT_OK;
}

/* ---- logits ---------------------------------------------------------- */

static void cl_infer_logits_help(FILE *f)
{
    fprintf(f, "usage: cloister logits MODEL.gguf --tokens ID,ID,... [--top K] [--from POS] [-t THREADS] [--kv-f16] [--json]\n\n"
               "Feeds the tokens (teacher forcing) and prints, for every position from POS on\n"
               "(default 0), the K largest logits (default 20; descending, ties to the lower\n"
               "id) and the log-sum-exp over the whole vocabulary. With --json each line is\n"
               "{\"pos\":P,\"top\":[[id,logit],...],\"logsumexp\":X}.\n");
}

struct cl_infer_top {
    int32_t id;
    float v;
};

static bool cl_infer_top_before(const struct cl_infer_top *a, const struct cl_infer_top *b)
{
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

/* Top k (k small) by insertion; returns how many were kept. */
static size_t cl_infer_topk(const float *l, size_t n, size_t k, struct cl_infer_top *top)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct cl_infer_top c = {(int32_t)i, l[i]};
        if (m == k && !cl_infer_top_before(&c, &top[m - 1]))
            continue;
        size_t j = m < k ? m++ : m - 1;
        while (j > 0 && cl_infer_top_before(&c, &top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = c;
    }
    return m;
}

static double cl_infer_logsumexp(const float *l, size_t n)
{
    double mx = -INFINITY, s = 0.0;
    for (size_t i = 0; i < n; i++)
        if (l[i] > mx)
            mx = l[i];
    for (size_t i = 0; i < n; i++)
        s += exp((double)l[i] - mx);
    return mx + log(s);
}

int cl_cmd_logits(int argc, char **argv)
{
    const char *cmd = "logits", *model = NULL, *tokstr = NULL;
    uint64_t top_k = 20, from = 0, threads = 2;
    bool json = false, kv_f16 = false;
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, CL_CLI_OPT_THREADS,
        {"tokens", required_argument, NULL, CL_INFER_O_TOKENS},
        {"top", required_argument, NULL, CL_INFER_O_TOP},
        {"from", required_argument, NULL, CL_INFER_O_FROM},
        {"kv-f16", no_argument, NULL, CL_INFER_O_KV_F16},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args a = {.cmd = cmd, .help = cl_infer_logits_help, .shortopts = "t:", .longopts = opts,
                            .json = &json, .threads = &threads, .max_threads = CL_POOL_MAX_THREADS};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case CL_INFER_O_TOKENS: tokstr = optarg; break;
        case CL_INFER_O_TOP:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 1000, &top_k, "--top needs a number in 1..1000"))
                return CL_EXIT_USAGE;
            break;
        case CL_INFER_O_FROM:
            if (!cl_cli_u64_opt(cmd, optarg, 0, CL_INFER_MAX_TOKENS, &from, "--from needs a position"))
                return CL_EXIT_USAGE;
            break;
        case CL_INFER_O_KV_F16: kv_f16 = true; break;
        default: return a.exit;
        }
    }
    int ex = cl_infer_model_arg(cmd, argc, argv, &model);
    if (ex != CL_EXIT_OK)
        return ex;
    if (!tokstr)
        return cl_cli_usage_error(cmd, "missing --tokens");
    int32_t *toks = NULL;
    size_t n = 0;
    if (!cl_infer_parse_tokens(tokstr, &toks, &n))
        return cl_cli_usage_error(cmd, "--tokens must be comma-separated ids (at most %u)", CL_INFER_MAX_TOKENS);
    if (from >= n) {
        free(toks);
        return cl_cli_usage_error(cmd, "--from %llu is not below the %zu tokens", (unsigned long long)from, n);
    }
    struct cl_infer_ctx c;
    ex = cl_infer_open(cmd, model, (unsigned)threads, &c);
    if (ex != CL_EXIT_OK) {
        free(toks);
        return ex;
    }
    size_t V = cl_model_hparams(c.m)->n_vocab;
    struct cl_model_seq *s = NULL;
    float *logits = NULL;
    struct cl_infer_top *top = calloc(top_k, sizeof(*top));
    const size_t chunk = 32;
    struct cl_model_seq_params sp = {.n_ctx = (uint32_t)n, .kv_f16 = kv_f16};
    cl_err rc = cl_model_seq_new_ex(c.m, &sp, c.pool, &s);
    if (rc == CL_OK && !(logits = malloc(chunk * V * sizeof(float))))
        rc = CL_E_CORE_NOMEM;
    if (rc == CL_OK && !top)
        rc = CL_E_CORE_NOMEM;
    if (rc == CL_OK && from > 0)
        rc = cl_model_seq_eval(s, toks, from, NULL, false);
    for (size_t p = from; rc == CL_OK && p < n; p += chunk) {
        size_t k = n - p < chunk ? n - p : chunk;
        rc = cl_model_seq_eval(s, toks + p, k, logits, true);
        for (size_t j = 0; rc == CL_OK && j < k; j++) {
            const float *l = logits + j * V;
            size_t m = cl_infer_topk(l, V, top_k, top);
            double lse = cl_infer_logsumexp(l, V);
            if (json) {
                printf("{\"pos\":%zu,\"top\":[", p + j);
                for (size_t q = 0; q < m; q++)
                    printf("%s[%d,%.9g]", q ? "," : "", top[q].id, (double)top[q].v);
                printf("],\"logsumexp\":%.9g}\n", lse);
            } else {
                printf("pos %zu  logsumexp %.6f  top:", p + j, lse);
                for (size_t q = 0; q < m; q++)
                    printf(" %d:%.5f", top[q].id, (double)top[q].v);
                printf("\n");
            }
        }
    }
    free(top);
    free(logits);
    cl_model_seq_free(s);
    cl_infer_close(&c);
    free(toks);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, "evaluating tokens", rc);
    return fflush(stdout) == 0 ? CL_EXIT_OK : CL_EXIT_FAIL;
}

/* ---- bench ----------------------------------------------------------- */

static void cl_infer_bench_help(FILE *f)
{
    fprintf(f, "usage: cloister bench MODEL.gguf [-p N_PROMPT] [-n N_GEN] [-d DEPTH] [-t THREADS] [-r REPS] [--kv-f16]\n"
               "                      [--mmproj P.gguf [--image FILE|--image-f32 FILE]] [--json]\n\n"
               "Measures prompt processing (N_PROMPT tokens in one batch, default 128) and\n"
               "generation (N_GEN tokens one at a time, default 32) in tokens/s, like\n"
               "llama-bench, averaged over REPS runs (default 3) after a warm-up. Tokens are\n"
               "random ids. -d DEPTH (default 0) first fills the context with DEPTH tokens\n"
               "(not timed) and measures after them, as llama-bench -d. --json prints\n"
               "{\"pp_tps\":..,\"tg_tps\":..} (means) plus the best run (pp_best, tg_best) and the\n"
               "process's peak resident memory (peak_rss_mib) beside the model file's size\n"
               "(model_mib).\n"
               "With --mmproj it also encodes one image (the file given, else a generated\n"
               "gray pattern) REPS times and adds \"image_tokens\", \"image_encode_ms\" (best\n"
               "run; \"image_encode_cpu_ms\": its CPU time over all threads, steadier on a\n"
               "shared machine), \"image_prompt_ms\" (evaluating the image block) and \"ttft_ms\" (encode +\n"
               "the N_PROMPT tokens and the image block + first token's logits).\n");
}

static uint32_t cl_infer_xorshift(uint64_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return (uint32_t)(*st >> 16);
}

/* The context up to depth is filled once (toks[0..depth)); each measurement
 * goes back to it, like llama-bench -d. */
static cl_err cl_infer_bench_once(struct cl_model_seq *s, const int32_t *toks, size_t depth, size_t np, size_t ng,
                                  float *logits, double *pp_s, double *tg_s)
{
    cl_err rc = CL_OK;
    const int32_t *run = toks + depth;
    if (np > 0) {
        if (depth == 0)
            cl_model_seq_reset(s);
        else
            CL_GUARD(cl_model_seq_truncate(s, (uint32_t)depth));
        uint64_t t0 = cl_now_us();
        CL_GUARD(cl_model_seq_eval(s, run, np, logits, false));
        *pp_s = (double)(cl_now_us() - t0) / 1e6;
    }
    if (ng > 0) {
        if (depth == 0)
            cl_model_seq_reset(s);
        else
            CL_GUARD(cl_model_seq_truncate(s, (uint32_t)depth));
        uint64_t t0 = cl_now_us();
        for (size_t i = 0; i < ng; i++)
            CL_GUARD(cl_model_seq_eval(s, run + i, 1, logits, false));
        *tg_s = (double)(cl_now_us() - t0) / 1e6;
    }
out:
    return rc;
}

int cl_cmd_bench(int argc, char **argv)
{
    const char *cmd = "bench", *model = NULL;
    uint64_t np = 128, ng = 32, threads = 2, reps = 3, depth = 0;
    bool json = false, kv_f16 = false;
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, CL_CLI_OPT_THREADS,
        {"kv-f16", no_argument, NULL, CL_INFER_O_KV_F16},
        {"mmproj", required_argument, NULL, CL_INFER_O_MMPROJ},
        {"image", required_argument, NULL, CL_INFER_O_IMAGE},
        {"image-f32", required_argument, NULL, CL_INFER_O_IMAGE_F32},
        CL_CLI_OPT_END,
    };
    struct cl_cli_images im = {0};
    struct cl_cli_args a = {.cmd = cmd, .help = cl_infer_bench_help, .shortopts = "p:n:d:r:t:",
                            .longopts = opts, .json = &json, .threads = &threads, .max_threads = CL_POOL_MAX_THREADS};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case 'p':
            if (!cl_cli_u64_opt(cmd, optarg, 0, 8192, &np, "-p needs a token count in 0..8192"))
                return CL_EXIT_USAGE;
            break;
        case 'n':
            if (!cl_cli_u64_opt(cmd, optarg, 0, 8192, &ng, "-n needs a token count in 0..8192"))
                return CL_EXIT_USAGE;
            break;
        case 'd':
            if (!cl_cli_u64_opt(cmd, optarg, 0, 65536, &depth, "-d needs a context depth in 0..65536"))
                return CL_EXIT_USAGE;
            break;
        case 'r':
            if (!cl_cli_u64_opt(cmd, optarg, 1, 100, &reps, "-r needs a repetition count in 1..100"))
                return CL_EXIT_USAGE;
            break;
        case CL_INFER_O_KV_F16: kv_f16 = true; break;
        case CL_INFER_O_MMPROJ: im.mmproj = optarg; break;
        case CL_INFER_O_IMAGE:
        case CL_INFER_O_IMAGE_F32:
            if (im.n > 0)
                return cl_cli_usage_error(cmd, "bench takes one image");
            if (!cl_cli_images_add(cmd, &im, optarg, o == CL_INFER_O_IMAGE_F32))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    int ex = cl_infer_model_arg(cmd, argc, argv, &model);
    if (ex != CL_EXIT_OK)
        return ex;
    if (np + ng == 0 && !im.mmproj)
        return cl_cli_usage_error(cmd, "nothing to measure (-p 0 -n 0)");
    if (im.n > 0 && !im.mmproj)
        return cl_cli_usage_error(cmd, "--image needs --mmproj (the vision projector)");
    struct cl_infer_ctx c;
    ex = cl_infer_open(cmd, model, (unsigned)threads, &c);
    if (ex != CL_EXIT_OK)
        return ex;
    const struct cl_model_hparams *hp = cl_model_hparams(c.m);
    size_t nt = depth + (np > ng ? np : ng);
    if (nt == 0)
        nt = 1;
    int32_t *toks = calloc(nt, sizeof(*toks));
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    struct cl_model_seq *s = NULL;
    cl_err rc = toks && logits ? CL_OK : CL_E_CORE_NOMEM;
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; toks && i < nt; i++)
        toks[i] = (int32_t)(cl_infer_xorshift(&st) % hp->n_vocab);
    if (rc == CL_OK)
    {
        struct cl_model_seq_params sp = {.n_ctx = (uint32_t)(nt + 1), .kv_f16 = kv_f16};
        /* going back to the depth keeps a sliding-window ring valid only if
         * the ring also holds the measured batch */
        if (depth > 0 && np > 256)
            sp.n_ubatch = (uint32_t)np;
        rc = cl_model_seq_new_ex(c.m, &sp, c.pool, &s);
    }
    if (rc == CL_OK && depth > 0) /* the filled context every run starts from */
        rc = cl_model_seq_eval(s, toks, depth, NULL, false);
    double pp = 0, tg = 0, pp_sum = 0, tg_sum = 0, pp_min = 0, tg_min = 0;
    /* warm-up: touches every weight page and wakes the threads */
    if (rc == CL_OK)
        rc = cl_infer_bench_once(s, toks, depth, np ? (np < 8 ? np : 8) : 0, ng ? 1 : 0, logits, &pp, &tg);
    for (uint64_t r = 0; rc == CL_OK && r < reps; r++) {
        rc = cl_infer_bench_once(s, toks, depth, np, ng, logits, &pp, &tg);
        pp_sum += pp;
        tg_sum += tg;
        pp_min = r == 0 || pp < pp_min ? pp : pp_min;
        tg_min = r == 0 || tg < tg_min ? tg : tg_min;
    }
    /* image: encode REPS times (best), then the block alone and the whole first-token path */
    double enc_best = 0, enc_cpu = 0, img_pp_best = 0, ttft_best = 0;
    uint32_t img_tokens = 0;
    if (rc == CL_OK && im.mmproj) {
        cl_model_seq_free(s);
        s = NULL;
        for (uint64_t r = 0; r < reps; r++) {
            const char *mm = im.mmproj;
            const char *f0 = im.files[0];
            bool raw0 = im.raw[0];
            size_t n0 = im.n;
            cl_cli_images_free(&im);
            im.mmproj = mm;
            im.files[0] = f0;
            im.raw[0] = raw0;
            im.n = n0;
            uint64_t t0 = cl_now_us();
            ex = cl_cli_images_encode(cmd, &im, c.m, c.pool, true);
            if (ex != CL_EXIT_OK)
                break;
            double enc = im.encode_ms;
            img_tokens = im.media[0].n_tokens;
            struct cl_model_seq_params sp = {.n_ctx = (uint32_t)(np + img_tokens + 1),
                                             .n_ubatch = img_tokens > 256 ? img_tokens : 256, .kv_f16 = kv_f16};
            rc = cl_model_seq_new_ex(c.m, &sp, c.pool, &s);
            uint64_t t1 = cl_now_us();
            if (rc == CL_OK && np)
                rc = cl_model_seq_eval(s, toks, np, NULL, false);
            if (rc == CL_OK)
                rc = cl_model_seq_eval_embd(s, im.media[0].embd, img_tokens, true, logits, false);
            double pp_img = (double)(cl_now_us() - t1) / 1000.0;
            double ttft = (double)(cl_now_us() - t0) / 1000.0;
            cl_model_seq_free(s);
            s = NULL;
            if (rc != CL_OK)
                break;
            if (r == 0 || enc < enc_best)
                enc_cpu = im.encode_cpu_ms;
            enc_best = r == 0 || enc < enc_best ? enc : enc_best;
            img_pp_best = r == 0 || pp_img < img_pp_best ? pp_img : img_pp_best;
            ttft_best = r == 0 || ttft < ttft_best ? ttft : ttft_best;
            (void)pp_img;
        }
        if (ex != CL_EXIT_OK) {
            free(logits);
            free(toks);
            cl_cli_images_free(&im);
            cl_infer_close(&c);
            return ex;
        }
    }
    cl_cli_images_free(&im);
    double pp_tps = np && pp_sum > 0 ? (double)(np * reps) / pp_sum : 0.0;
    double tg_tps = ng && tg_sum > 0 ? (double)(ng * reps) / tg_sum : 0.0;
    /* best run: on a shared machine the mean mostly measures the neighbours */
    double pp_best = np && pp_min > 0 ? (double)np / pp_min : 0.0;
    double tg_best = ng && tg_min > 0 ? (double)ng / tg_min : 0.0;
    cl_model_seq_free(s);
    free(logits);
    free(toks);
    cl_infer_close(&c);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, "benchmark", rc);
    struct rusage ru;
    struct stat st_m;
    double rss_mib = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0.0;
    double model_mib = stat(model, &st_m) == 0 ? (double)st_m.st_size / 1048576.0 : 0.0;
    if (json) {
        printf("{\"pp_tps\":%.2f,\"tg_tps\":%.2f,\"pp_best\":%.2f,\"tg_best\":%.2f,\"n_prompt\":%llu,\"n_gen\":%llu,"
               "\"depth\":%llu,\"threads\":%llu,\"reps\":%llu,\"peak_rss_mib\":%.1f,\"model_mib\":%.1f",
               pp_tps, tg_tps, pp_best, tg_best, (unsigned long long)np, (unsigned long long)ng,
               (unsigned long long)depth, (unsigned long long)threads, (unsigned long long)reps, rss_mib, model_mib);
        if (img_tokens)
            printf(",\"image_tokens\":%u,\"image_encode_ms\":%.1f,\"image_encode_cpu_ms\":%.1f,\"image_prompt_ms\":%.1f,"
                   "\"ttft_ms\":%.1f",
                   img_tokens, enc_best, enc_cpu, img_pp_best, ttft_best);
        printf("}\n");
    } else {
        if (img_tokens)
            printf("image: %u tokens, encode %.1f ms, image block %.1f ms, first token %.1f ms (best of %llu)\n",
                   img_tokens, enc_best, img_pp_best, ttft_best, (unsigned long long)reps);
        printf("pp%llu: %.2f tokens/s (best %.2f)   tg%llu: %.2f tokens/s (best %.2f)   (%llu threads, %llu runs)\n",
               (unsigned long long)np, pp_tps, pp_best, (unsigned long long)ng, tg_tps, tg_best,
               (unsigned long long)threads, (unsigned long long)reps);
    }
    return CL_EXIT_OK;
}

/* ---- mkmodel --------------------------------------------------------- */

static void cl_infer_mkmodel_help(FILE *f)
{
    fprintf(f, "usage: cloister mkmodel --arch llama|gemma3 --shape SPEC --type TYPE -o FILE.gguf\n"
               "                        [--vocab VOCAB.gguf] [--seed N] [-t THREADS]\n\n"
               "Writes a GGUF v3 model with random weights at any shape, for benchmarks.\n"
               "SPEC: tiny, gemma3-1b or llama-1b (the shapes of perf.md), optionally followed\n"
               "by ,key=value overrides (embd layers heads kv hd ff vocab ctx swa pattern\n"
               "rope_base rope_local rope_scale), e.g. gemma3-1b,layers=4.\n"
               "TYPE: f32, f16, q8_0, q4_0, q4_k (the Q4_K_M mix) or q6_k, with the tensor\n"
               "choices and fallbacks llama-quantize makes.\n"
               "--vocab copies the tokenizer from a GGUF file (its size must match the vocab);\n"
               "otherwise a small byte-level SPM vocabulary is generated.\n"
               "\n");
    cl_cmd_mkmodel_mmproj_help(f);
}

int cl_cmd_mkmodel(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--mmproj"))
            return cl_cmd_mkmodel_mmproj(argc, argv);
    const char *cmd = "mkmodel", *arch_s = NULL, *shape_s = NULL, *type_s = NULL, *out = NULL, *vocab = NULL;
    uint64_t seed = 1, threads = 2;
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_THREADS,
        {"arch", required_argument, NULL, CL_INFER_O_ARCH},
        {"shape", required_argument, NULL, CL_INFER_O_SHAPE},
        {"type", required_argument, NULL, CL_INFER_O_TYPE},
        {"vocab", required_argument, NULL, CL_INFER_O_VOCAB},
        {"seed", required_argument, NULL, CL_INFER_O_SEED},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args a = {.cmd = cmd, .help = cl_infer_mkmodel_help, .shortopts = "o:t:", .longopts = opts,
                            .threads = &threads, .max_threads = CL_POOL_MAX_THREADS};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case CL_INFER_O_ARCH: arch_s = optarg; break;
        case CL_INFER_O_SHAPE: shape_s = optarg; break;
        case CL_INFER_O_TYPE: type_s = optarg; break;
        case 'o': out = optarg; break;
        case CL_INFER_O_VOCAB: vocab = optarg; break;
        case CL_INFER_O_SEED:
            if (!cl_cli_u64_opt(cmd, optarg, 0, UINT64_MAX, &seed, "--seed needs a number"))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!arch_s || !shape_s || !type_s || !out)
        return cl_cli_usage_error(cmd, "--arch, --shape, --type and -o are required");
    enum cl_model_arch arch = !strcmp(arch_s, "llama") ? CL_MODEL_ARCH_LLAMA
                              : !strcmp(arch_s, "gemma3") ? CL_MODEL_ARCH_GEMMA3
                                                          : CL_MODEL_ARCH_NONE;
    if (arch == CL_MODEL_ARCH_NONE)
        return cl_cli_usage_error(cmd, "--arch must be llama or gemma3");
    struct cl_model_mk_opts o = {.seed = seed, .threads = (unsigned)threads};
    o.type = cl_model_mk_type_parse(type_s);
    if (o.type == CL_MODEL_MK_NONE)
        return cl_cli_usage_error(cmd, "--type must be f32, f16, q8_0, q4_0, q4_k or q6_k");
    cl_err rc = cl_model_shape_parse(arch, shape_s, &o.shape);
    if (rc != CL_OK) {
        char b[256];
        return cl_cli_usage_error(cmd, "--shape: %s", cl_err_format(rc, b, sizeof(b)));
    }
    cl_gguf *vg = NULL;
    cl_gguf_writer *w = NULL;
    if (vocab && (rc = cl_gguf_open_file(vocab, &vg)) != CL_OK)
        return cl_cli_fail(cmd, "reading vocabulary file", rc);
    o.vocab = vg;
    rc = cl_model_mk(&o, &w);
    if (rc == CL_OK)
        rc = cl_gguf_writer_write_file(w, out);
    cl_gguf_writer_free(w);
    cl_gguf_free(vg);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, "writing model", rc);
    return CL_EXIT_OK;
}

/* ---- run ------------------------------------------------------------- */

static void cl_infer_run_help(FILE *f)
{
    fprintf(f, "usage: cloister run MODEL.gguf -p TEXT [-n N] [--temp T] [--seed S] [--chat]\n"
               "                    [--chat-template NAME] [-t THREADS] [-c CTX] [--ignore-eos] [--kv-f16]\n"
               "                    [--mmproj P.gguf --image FILE|--image-f32 FILE ...] [--json]\n\n"
               "Generates up to N tokens (default 64) after the prompt. The prompt is tokenized\n"
               "as plain text: BOS as the model's metadata says, special-token texts not\n"
               "parsed. --chat wraps it in the model's chat template (a user turn, special\n"
               "tokens parsed); --chat-template gemma|llama2|chatml|... overrides the\n"
               "template. --temp 0 (the default) is greedy decoding; T > 0 samples with\n"
               "llama.cpp's defaults (top-k 40, top-p 0.95, min-p 0.05) and seed S (default\n"
               "0). Generation stops at an end-of-generation\n"
               "token unless --ignore-eos. --json prints\n"
               "{\"prompt_tokens\":[...],\"tokens\":[...],\"text\":\"...\"}; otherwise the text streams.\n"
               "--kv-f16 keeps the KV cache in fp16 (half the memory; llama.cpp's default).\n"
               "Images (gemma3 models, as llama-mtmd-cli): --mmproj is the vision projector;\n"
               "each --image (PNG, JPEG or DICOM, decoded and preprocessed as llama.cpp does)\n"
               "or --image-f32 (an already preprocessed planar float32 tensor, 3 x size x\n"
               "size) is encoded and placed where the prompt says " CL_MODEL_MEDIA_MARKER ", in order,\n"
               "or in front of the prompt when it has no marker. Images imply --chat.\n"
               "--json adds \"image_tokens\" and \"image_encode_ms\"; image positions show as -1\n"
               "in prompt_tokens.\n");
}

static int cl_infer_stream(void *user, int32_t token, const char *text, size_t len)
{
    (void)user;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void cl_infer_json_ids(FILE *f, const int32_t *ids, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

int cl_cmd_run(int argc, char **argv)
{
    const char *cmd = "run", *model = NULL, *prompt = NULL, *tmpl = NULL;
    uint64_t n_gen = 64, seed = 0, threads = 2, n_ctx = 0;
    double temp = 0.0;
    bool json = false, chat = false, ignore_eos = false, kv_f16 = false;
    static const struct option opts[] = {
        CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, CL_CLI_OPT_THREADS,
        {"prompt", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, CL_INFER_O_SEED},
        {"temp", required_argument, NULL, CL_INFER_O_TEMP},
        {"chat", no_argument, NULL, CL_INFER_O_CHAT},
        {"chat-template", required_argument, NULL, CL_INFER_O_CHAT_TEMPLATE},
        {"ignore-eos", no_argument, NULL, CL_INFER_O_IGNORE_EOS},
        {"kv-f16", no_argument, NULL, CL_INFER_O_KV_F16},
        {"mmproj", required_argument, NULL, CL_INFER_O_MMPROJ},
        {"image", required_argument, NULL, CL_INFER_O_IMAGE},
        {"image-f32", required_argument, NULL, CL_INFER_O_IMAGE_F32},
        CL_CLI_OPT_END,
    };
    struct cl_cli_images im = {0};
    struct cl_cli_args a = {.cmd = cmd, .help = cl_infer_run_help, .shortopts = "p:n:c:t:", .longopts = opts,
                            .json = &json, .threads = &threads, .max_threads = CL_POOL_MAX_THREADS};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case 'p': prompt = optarg; break;
        case 'n':
            if (!cl_cli_u64_opt(cmd, optarg, 1, CL_MODEL_MAX_CTX, &n_gen, "-n needs a token count in 1..%u",
                                CL_MODEL_MAX_CTX))
                return CL_EXIT_USAGE;
            break;
        case 'c':
            if (!cl_cli_u64_opt(cmd, optarg, 1, CL_MODEL_MAX_CTX, &n_ctx, "-c needs a context size in 1..%u",
                                CL_MODEL_MAX_CTX))
                return CL_EXIT_USAGE;
            break;
        case CL_INFER_O_SEED:
            if (!cl_cli_u64_opt(cmd, optarg, 0, UINT64_MAX, &seed, "--seed needs a number"))
                return CL_EXIT_USAGE;
            break;
        case CL_INFER_O_TEMP: {
            char *end;
            temp = strtod(optarg, &end);
            if (*end || !(temp >= 0.0 && temp <= 100.0))
                return cl_cli_usage_error(cmd, "--temp needs a number in 0..100");
            break;
        }
        case CL_INFER_O_CHAT: chat = true; break;
        case CL_INFER_O_CHAT_TEMPLATE:
            chat = true;
            tmpl = optarg;
            break;
        case CL_INFER_O_IGNORE_EOS: ignore_eos = true; break;
        case CL_INFER_O_KV_F16: kv_f16 = true; break;
        case CL_INFER_O_MMPROJ: im.mmproj = optarg; break;
        case CL_INFER_O_IMAGE:
        case CL_INFER_O_IMAGE_F32:
            if (!cl_cli_images_add(cmd, &im, optarg, o == CL_INFER_O_IMAGE_F32))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    int ex = cl_infer_model_arg(cmd, argc, argv, &model);
    if (ex != CL_EXIT_OK)
        return ex;
    if (!prompt)
        return cl_cli_usage_error(cmd, "missing -p TEXT");
    if (im.n > 0 && !im.mmproj)
        return cl_cli_usage_error(cmd, "--image needs --mmproj (the vision projector)");
    if (im.mmproj && im.n == 0)
        return cl_cli_usage_error(cmd, "--mmproj given without --image");
    if (im.n > 0)
        chat = true;
    struct cl_infer_ctx c;
    ex = cl_infer_open(cmd, model, (unsigned)threads, &c);
    if (ex != CL_EXIT_OK)
        return ex;
    if (im.n > 0 && (ex = cl_cli_images_encode(cmd, &im, c.m, c.pool, false)) != CL_EXIT_OK) {
        cl_cli_images_free(&im);
        cl_infer_close(&c);
        return ex;
    }
    cl_tokenizer *tok = NULL;
    struct cl_buf text;
    struct cl_model_answer ans = {0};
    int32_t *gen = NULL;
    const char *what = "loading tokenizer";
    struct cl_buf content; /* the user turn: markers in front when the prompt has none */
    cl_buf_init(&text, (size_t)1 << 26, CL_BUF_SECURE);
    cl_buf_init(&content, (size_t)1 << 26, CL_BUF_SECURE);
    cl_err rc = cl_tokenizer_new(c.g, &tok);
    struct cl_chat_msg msg = {"user", prompt, strlen(prompt)};
    if (rc == CL_OK && im.n > 0 && !strstr(prompt, CL_MODEL_MEDIA_MARKER)) {
        for (size_t i = 0; rc == CL_OK && i < im.n; i++)
            rc = cl_buf_append(&content, CL_MODEL_MEDIA_MARKER, strlen(CL_MODEL_MEDIA_MARKER));
        if (rc == CL_OK)
            rc = cl_buf_append(&content, prompt, strlen(prompt));
        msg.content = (const char *)content.data;
        msg.content_len = content.len;
    }
    struct cl_model_request rq = {.text = prompt, .text_len = strlen(prompt), .n_ctx = (uint32_t)n_ctx,
                                  .kv_f16 = kv_f16, .media = im.media, .n_media = im.n_media};
    if (rc == CL_OK && chat) {
        what = "formatting chat prompt";
        rc = cl_chat_for_model(c.g, tmpl, &rq.tmpl);
        rq.msgs = &msg;
        rq.n_msgs = 1;
    }
    if (rc == CL_OK) {
        what = "answering";
        gen = calloc(n_gen, sizeof(*gen));
        rq.tokens = gen;
        rq.tokens_cap = n_gen;
        rq.gen = (struct cl_model_gen){.max_tokens = (uint32_t)n_gen, .stop_at_eog = !ignore_eos,
                                       .on_token = json ? NULL : cl_infer_stream};
        cl_sample_params_default(&rq.gen.sample, seed);
        rq.gen.sample.temperature = (float)temp;
        rc = gen ? cl_model_answer(c.m, tok, c.pool, &rq, json, &ans) : CL_E_CORE_NOMEM;
    }
    if (rc == CL_OK && json) {
        what = "detokenizing";
        rc = cl_detokenize(tok, gen, ans.n_out, CL_TOK_NONE, &text);
        if (rc == CL_OK) {
            printf("{\"prompt_tokens\":");
            cl_infer_json_ids(stdout, ans.prompt_tokens, ans.n_prompt);
            printf(",\"tokens\":");
            cl_infer_json_ids(stdout, gen, ans.n_out);
            printf(",\"text\":");
            cl_cli_json_str(stdout, text.data, text.len);
            if (im.n > 0)
                printf(",\"image_tokens\":%zu,\"image_encode_ms\":%.1f",
                       im.n * (size_t)cl_vision_hparams(im.v)->n_tokens, im.encode_ms);
            printf("}\n");
        }
    } else if (rc == CL_OK) {
        printf("\n");
    }
    if (gen)
        cl_wipe(gen, n_gen * sizeof(*gen));
    free(gen);
    cl_model_answer_free(&ans);
    cl_buf_free(&text);
    cl_buf_free(&content);
    cl_tokenizer_free(tok);
    cl_cli_images_free(&im);
    cl_infer_close(&c);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, what, rc);
    return fflush(stdout) == 0 ? CL_EXIT_OK : CL_EXIT_FAIL;
}
