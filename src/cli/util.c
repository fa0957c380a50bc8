#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

int cl_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cloister %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'cloister %s --help')\n", cmd);
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
