#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/buf.h"
#include "cloister/encode.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

static void cl_cli_vusage(const char *cmd, const char *fmt, va_list ap) CL_PRINTF(2, 0);
static void cl_cli_vusage(const char *cmd, const char *fmt, va_list ap)
{
    fprintf(stderr, "cloister %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'cloister %s --help')\n", cmd);
}

int cl_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cl_cli_vusage(cmd, fmt, ap);
    va_end(ap);
    return CL_EXIT_USAGE;
}

int cl_cli_fail(const char *cmd, const char *what, cl_err e)
{
    char buf[512];
    fprintf(stderr, "cloister %s: %s: %s\n", cmd, what, cl_err_format(e, buf, sizeof(buf)));
    return CL_EXIT_FAIL;
}

int cl_cli_harden(const char *cmd)
{
    cl_err rc = cl_secure_process_init();
    return rc == CL_OK ? CL_EXIT_OK : cl_cli_fail(cmd, "process hardening (no core dumps, not dumpable)", rc);
}

bool cl_cli_is_help(const char *arg) { return !strcmp(arg, "-h") || !strcmp(arg, "--help"); }

bool cl_cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static void cl_progress_human(double v, char *buf, size_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, "%.1f %s", v, units[u]);
}

void cl_progress_start(struct cl_progress *p, const char *label, uint64_t total)
{
    p->enabled = isatty(STDERR_FILENO) && !getenv("CLOISTER_NO_PROGRESS");
    p->label = label;
    p->total = total;
    p->start_us = p->last_us = cl_now_us();
}

void cl_progress_update(struct cl_progress *p, uint64_t done)
{
    if (!p->enabled)
        return;
    uint64_t now = cl_now_us();
    if (now - p->last_us < 100000 && done < p->total)
        return;
    p->last_us = now;
    double secs = (double)(now - p->start_us) / 1e6;
    double rate = secs > 0 ? (double)done / secs : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    int width = 30, fill = p->total ? (int)((double)done / (double)p->total * width) : width;
    char d[32], t[32], r[32];
    cl_progress_human((double)done, d, sizeof(d));
    cl_progress_human((double)p->total, t, sizeof(t));
    cl_progress_human(rate, r, sizeof(r));
    fprintf(stderr, "\r%s [%.*s%*s] %s / %s  %s/s  ETA %ds ", p->label, fill, "##############################",
            width - fill, "", d, t, r, (int)eta);
}

void cl_progress_finish(struct cl_progress *p)
{
    if (!p->enabled)
        return;
    cl_progress_update(p, p->total);
    fputc('\n', stderr);
}

int cl_cli_next(struct cl_cli_args *a, int argc, char **argv)
{
    if (!a->started) {
        /* leading ':' reports a missing value as ':'; opterr 0: the messages are ours */
        snprintf(a->spec, sizeof(a->spec), ":h%s", a->shortopts ? a->shortopts : "");
        a->started = true;
        a->exit = CL_EXIT_USAGE;
        optind = 0; /* glibc: a full reset, also when a command parses twice */
    }
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, a->spec, a->longopts, NULL);
        const char *opt = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case 'J':
            if (!a->json)
                return c;
            *a->json = true;
            break;
        case 't':
            if (!a->threads)
                return c;
            if (!cl_cli_threads(a->cmd, optarg, a->max_threads, a->threads))
                return CL_CLI_STOP;
            break;
        case 'h':
            a->help(stdout);
            a->exit = CL_EXIT_OK;
            return CL_CLI_STOP;
        case ':':
            a->exit = cl_cli_usage_error(a->cmd, "option '%s' needs a value", opt);
            return CL_CLI_STOP;
        case '?':
            if (optopt > 0 && strncmp(opt, "--", 2) != 0)
                a->exit = cl_cli_usage_error(a->cmd, "unknown option '-%c'", optopt);
            else
                a->exit = cl_cli_usage_error(a->cmd, "unknown option '%s'", opt);
            return CL_CLI_STOP;
        default: return c;
        }
    }
}

bool cl_cli_u64_opt(const char *cmd, const char *v, uint64_t min, uint64_t max, uint64_t *out, const char *fmt, ...)
{
    if (cl_cli_parse_u64(v, min, max, out))
        return true;
    va_list ap;
    va_start(ap, fmt);
    cl_cli_vusage(cmd, fmt, ap);
    va_end(ap);
    return false;
}

bool cl_cli_threads(const char *cmd, const char *v, unsigned max, uint64_t *out)
{
    return cl_cli_u64_opt(cmd, v, 1, max, out, "-t needs a thread count in 1..%u", max);
}

/* Bytes an attacker may choose (document fields, model output): made valid
 * UTF-8 (bad bytes as U+FFFD), escaped, in quotes. */
void cl_cli_json_str(FILE *f, const uint8_t *p, size_t n)
{
    struct cl_buf utf8, esc;
    size_t used = 0;
    cl_buf_init(&utf8, 3 * n + 16, CL_BUF_SECURE);
    cl_buf_init(&esc, 18 * n + 16, CL_BUF_SECURE);
    fputc('"', f);
    if (cl_utf8_take(p, n, true, &utf8, &used) == CL_OK && cl_json_escape(utf8.data, utf8.len, &esc) == CL_OK)
        fwrite(esc.data, 1, esc.len, f);
    fputc('"', f);
    cl_buf_free(&utf8);
    cl_buf_free(&esc);
}
