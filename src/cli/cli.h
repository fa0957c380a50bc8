/* Shared pieces of the `cloister` command-line tool. Exit codes: 0 success,
 * 1 failure, 2 usage error. */
#ifndef CLOISTER_CLI_H
#define CLOISTER_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cloister/err.h"

enum cl_exit { CL_EXIT_OK = 0, CL_EXIT_FAIL = 1, CL_EXIT_USAGE = 2 };

struct cl_cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
};

/* Prints "cloister: <msg>" to stderr and returns CL_EXIT_USAGE. */
int cl_cli_usage_error(const char *cmd, const char *fmt, ...) CL_PRINTF(2, 3);
/* Prints "cloister <cmd>: <what>: <error message and detail>" and returns CL_EXIT_FAIL. */
int cl_cli_fail(const char *cmd, const char *what, cl_err e);
/* For every command that holds a secret (keys, credentials, prompts, answers,
 * plaintext weights): no core files, not dumpable (so no ptrace or
 * /proc/PID/mem by same-uid processes). Call it after the arguments are
 * checked and before the first secret is read. Returns CL_EXIT_OK, or
 * prints the failure and returns CL_EXIT_FAIL. */
int cl_cli_harden(const char *cmd);
/* True when argv[i] is -h or --help. */
bool cl_cli_is_help(const char *arg);
/* Parses a non-negative decimal number with range check. */
bool cl_cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* One way to parse a command's arguments: getopt_long (operands may come
 * anywhere, "--" ends the options) with the parts every command shares.
 *   struct cl_cli_args a = {.cmd = "run", .help = run_help, .shortopts = "p:t:", .longopts = opts};
 *   while ((c = cl_cli_next(&a, argc, argv)) != -1)
 *       switch (c) { ...; default: return a.exit; }
 *   operands: argv[optind..argc)
 * -h/--help prints help to stdout; an unknown option or a missing value prints
 * "cloister CMD: message (see 'cloister CMD --help')". Both end the loop with
 * CL_CLI_STOP and the exit code (0 or 2) in a.exit. The option tables list
 * CL_CLI_OPT_HELP; the short options need no leading ':' nor 'h'.
 * With .json set, --json (CL_CLI_OPT_JSON) sets *json; with .threads set,
 * -t/--threads (CL_CLI_OPT_THREADS, "t:") is checked against 1..max_threads
 * and stored: neither is returned to the command. */
#define CL_CLI_STOP (-2)
#define CL_CLI_OPT_HELP {"help", no_argument, NULL, 'h'}
#define CL_CLI_OPT_JSON {"json", no_argument, NULL, 'J'}
#define CL_CLI_OPT_THREADS {"threads", required_argument, NULL, 't'}
#define CL_CLI_OPT_END {NULL, 0, NULL, 0}
struct cl_cli_args {
    const char *cmd;               /* as in messages: "run", "kms policy" */
    void (*help)(FILE *f);         /* the command's usage text */
    const char *shortopts;         /* getopt's, e.g. "p:n:t:" (at most 61 characters) */
    const struct option *longopts; /* ends with CL_CLI_OPT_END */
    bool *json;                    /* optional: --json */
    uint64_t *threads;             /* optional: -t/--threads */
    unsigned max_threads;
    int exit;                      /* valid after CL_CLI_STOP */
    bool started;
    char spec[64];
};
int cl_cli_next(struct cl_cli_args *a, int argc, char **argv);
/* -t/--threads: a count in 1..max; prints the usage error and returns false otherwise. */
bool cl_cli_threads(const char *cmd, const char *v, unsigned max, uint64_t *out);
/* The value of a numeric option in min..max; prints "OPT needs WHAT" otherwise. */
bool cl_cli_u64_opt(const char *cmd, const char *v, uint64_t min, uint64_t max, uint64_t *out, const char *fmt, ...)
    CL_PRINTF(6, 7);
/* JSON string body: escapes, and invalid UTF-8 bytes as U+FFFD. */
void cl_cli_json_str(FILE *f, const uint8_t *p, size_t n);

/* Progress bar on stderr when it is a terminal; silent otherwise. */
struct cl_progress {
    bool enabled;
    const char *label;
    uint64_t total;
    uint64_t start_us;
    uint64_t last_us;
};
void cl_progress_start(struct cl_progress *p, const char *label, uint64_t total);
void cl_progress_update(struct cl_progress *p, uint64_t done);
void cl_progress_finish(struct cl_progress *p);

/* Command entry points (one file per group under src/cli/). */
int cl_cmd_keygen(int argc, char **argv);
int cl_cmd_seal(int argc, char **argv);
int cl_cmd_unseal(int argc, char **argv);
int cl_cmd_inspect(int argc, char **argv);
int cl_cmd_attest(int argc, char **argv);
int cl_cmd_tokenize(int argc, char **argv);
int cl_cmd_run(int argc, char **argv);
int cl_cmd_logits(int argc, char **argv);
int cl_cmd_bench(int argc, char **argv);
int cl_cmd_mkmodel(int argc, char **argv);
int cl_cmd_kms(int argc, char **argv);
int cl_cmd_kms_create_key(int argc, char **argv);
int cl_cmd_kms_licence(int argc, char **argv); /* kms licence ..., kms usage */
int cl_cmd_measure(int argc, char **argv);
int cl_cmd_ask(int argc, char **argv);
int cl_cmd_chat(int argc, char **argv);
int cl_cmd_image(int argc, char **argv);
int cl_cmd_proxy(int argc, char **argv);
int cl_cmd_batch(int argc, char **argv);
int cl_cmd_audit(int argc, char **argv);

#endif
