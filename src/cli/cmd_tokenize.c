/* `cloister tokenize`: show how a model's tokenizer splits a text, for
 * checking against llama.cpp's llama-tokenize. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/file.h"
#include "cloister/gguf.h"
#include "cloister/secmem.h"
#include "cloister/tokenizer.h"

#define CL_TOKENIZE_MAX_TEXT ((size_t)16 << 20)

static void cl_tokenize_help(FILE *f)
{
    fprintf(f,
            "usage: cloister tokenize MODEL.gguf (-p TEXT | -f FILE) [--special] [--no-add-special] [--json]\n\n"
            "Tokenizes TEXT with the model's tokenizer exactly as llama.cpp's llama_tokenize does.\n\n"
            "  -p TEXT            the text (note: visible to other local users in the process list)\n"
            "  -f FILE            read the text from FILE ('-' for standard input), used byte for byte\n"
            "  --special          parse control-token texts such as <start_of_turn> (parse_special)\n"
            "  --no-add-special   do not add BOS/EOS (by default they follow the model's metadata)\n"
            "  --json             print {\"n_tokens\":N,\"tokens\":[...]} instead of one 'ID 'PIECE'' line per token\n"
            "\nexit status: 0 success, 1 failure, 2 usage error.\n");
}

static cl_err cl_tokenize_read_stdin(struct cl_buf *out)
{
    for (;;) {
        uint8_t *p;
        cl_err e = cl_buf_reserve(out, 4096);
        if (e != CL_OK)
            return e;
        p = out->data + out->len;
        ssize_t r = read(STDIN_FILENO, p, out->cap - out->len < 4096 ? out->cap - out->len : 4096);
        if (r < 0)
            return cl_err_from_errno(errno, "read standard input");
        if (r == 0)
            return CL_OK;
        out->len += (size_t)r;
    }
}

/* Piece with bytes outside printable ASCII escaped, so output stays one line. */
static void cl_tokenize_print_piece(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' || p[i] == '\'')
            printf("\\%c", p[i]);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            putchar(p[i]);
        else if (p[i] == '\n')
            fputs("\\n", stdout);
        else
            printf("\\x%02x", p[i]);
    }
}

int cl_cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    bool special = false, add_special = true, json = false;
    int rc = CL_EXIT_FAIL;
    cl_err e;
    cl_gguf *g = NULL;
    cl_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    struct cl_buf in, piece;
    cl_buf_init(&in, CL_TOKENIZE_MAX_TEXT, CL_BUF_SECURE);
    cl_buf_init(&piece, 1 << 16, CL_BUF_SECURE);

    enum { O_SPECIAL = 256, O_NO_ADD_SPECIAL };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP,
        CL_CLI_OPT_JSON,
        {"special", no_argument, NULL, O_SPECIAL},
        {"no-add-special", no_argument, NULL, O_NO_ADD_SPECIAL},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args args = {.cmd = "tokenize", .help = cl_tokenize_help, .shortopts = "p:f:", .longopts = opts,
                               .json = &json};
    for (int o; (o = cl_cli_next(&args, argc, argv)) != -1;) {
        switch (o) {
        case 'p':
        case 'f':
            if (text || file) {
                rc = cl_cli_usage_error("tokenize", "give the text once, with -p or -f");
                goto out;
            }
            if (o == 'p')
                text = optarg;
            else
                file = optarg;
            break;
        case O_SPECIAL: special = true; break;
        case O_NO_ADD_SPECIAL: add_special = false; break;
        default: rc = args.exit; goto out;
        }
    }
    if (optind + 1 < argc) {
        rc = cl_cli_usage_error("tokenize", "more than one model given");
        goto out;
    }
    model = optind < argc ? argv[optind] : NULL;
    if (!model) {
        rc = cl_cli_usage_error("tokenize", "no MODEL.gguf given");
        goto out;
    }
    if (!text && !file) {
        rc = cl_cli_usage_error("tokenize", "no text given (-p TEXT or -f FILE)");
        goto out;
    }
    if (text) {
        e = cl_buf_append(&in, text, strlen(text));
        if (e != CL_OK) {
            rc = cl_cli_fail("tokenize", "text", e);
            goto out;
        }
    } else {
        e = !strcmp(file, "-") ? cl_tokenize_read_stdin(&in) : cl_file_read(file, CL_TOKENIZE_MAX_TEXT, &in);
        if (e != CL_OK) {
            rc = cl_cli_fail("tokenize", "read text", e);
            goto out;
        }
    }
    if ((e = cl_gguf_open_file(model, &g)) != CL_OK) {
        rc = cl_cli_fail("tokenize", "open model", e);
        goto out;
    }
    if ((e = cl_tokenizer_new(g, &t)) != CL_OK) {
        rc = cl_cli_fail("tokenize", "load tokenizer", e);
        goto out;
    }
    unsigned flags = (add_special ? CL_TOK_ADD_SPECIAL : 0) | (special ? CL_TOK_PARSE_SPECIAL : 0);
    /* a byte yields at most 3 tokens (a space escapes to 3 bytes that may
     * fall back to byte tokens), plus the prefix space, BOS and EOS */
    cap = 3 * in.len + 8;
    if ((e = cl_secmem_alloc(cap * sizeof(*ids), (void **)&ids)) != CL_OK) {
        rc = cl_cli_fail("tokenize", "allocate", e);
        goto out;
    }
    if ((e = cl_tokenize(t, (const char *)in.data, in.len, flags, ids, cap, &n)) != CL_OK) {
        rc = cl_cli_fail("tokenize", "tokenize", e);
        goto out;
    }
    if (json) {
        printf("{\"n_tokens\":%zu,\"tokens\":[", n);
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? "," : "", ids[i]);
        printf("]}\n");
    } else {
        for (size_t i = 0; i < n; i++) {
            cl_buf_reset(&piece);
            if ((e = cl_tokenizer_piece(t, ids[i], CL_TOK_UNPARSE_SPECIAL, 0, &piece)) != CL_OK) {
                rc = cl_cli_fail("tokenize", "token text", e);
                goto out;
            }
            printf("%6d '", ids[i]);
            cl_tokenize_print_piece(piece.data, piece.len);
            printf("'\n");
        }
    }
    rc = fflush(stdout) == 0 ? CL_EXIT_OK : CL_EXIT_FAIL;
out:
    cl_secmem_free(ids);
    cl_buf_free(&in);
    cl_buf_free(&piece);
    cl_tokenizer_free(t);
    cl_gguf_free(g);
    return rc;
}
