#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef CLOISTER_VERSION
#define CLOISTER_VERSION "0.1.0"
#endif
#include "cloister/log.h"

static const struct cl_cli_cmd cl_commands[] = {
    {"keygen", "create a local 256-bit key file (mode 0600)", cl_cmd_keygen},
    {"seal", "encrypt a GGUF model into a sealed model file", cl_cmd_seal},
    {"unseal", "verify and decrypt a sealed model file", cl_cmd_unseal},
    {"inspect", "show a sealed model's header (never secrets)", cl_cmd_inspect},
    {"attest", "show or verify a Nitro attestation document", cl_cmd_attest},
    {"tokenize", "show how a GGUF model's tokenizer splits a text", cl_cmd_tokenize},
    {"run", "generate text with a GGUF model", cl_cmd_run},
    {"logits", "print teacher-forced top logits of a GGUF model", cl_cmd_logits},
    {"bench", "measure prompt and generation speed of a GGUF model", cl_cmd_bench},
    {"mkmodel", "write a random-weight llama/gemma3 GGUF at any shape", cl_cmd_mkmodel},
    {"kms", "sealed-model key policies and KMS keys", cl_cmd_kms},
    {"measure", "write TRUST.json (root, PCRs, model digest) for ask/chat", cl_cmd_measure},
    {"ask", "ask an attested enclave one question (OHTTP, verified first)", cl_cmd_ask},
    {"chat", "interactive chat with an attested enclave, streamed", cl_cmd_chat},
    {"image", "decode an image (PNG, JPEG, DICOM) and show its preprocessed checksums", cl_cmd_image},
    {"proxy", "attesting OpenAI-compatible endpoint and chat page on this machine", cl_cmd_proxy},
    {"batch", "submit encrypted batch jobs, check their state, read verified results", cl_cmd_batch},
    {"audit", "verify or show the enclave's signed receipts", cl_cmd_audit},
};

static void cl_main_help(FILE *f)
{
    fprintf(f, "usage: cloister COMMAND [ARGS...]\n\n"
               "Zero-trust LLM inference: models and prompts are seen in the clear only\n"
               "inside a measured, attested enclave.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cl_commands) / sizeof(cl_commands[0]); i++)
        fprintf(f, "  %-10s %s\n", cl_commands[i].name, cl_commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "show this help, or `help COMMAND` for a command's");
    fprintf(f, "  %-10s %s\n", "version", "print the version");
    fprintf(f, "\n'cloister COMMAND --help' describes each command.\n"
               "exit status: 0 success, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv)
{
    cl_log_set_component("cli");
    cl_log_set_level(CL_LOG_WARN);
    if (argc < 2) {
        cl_main_help(stderr);
        return CL_EXIT_USAGE;
    }
    const char *name = argv[1];
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    static char help_flag[] = "--help";
    char *help_argv[3] = {NULL, help_flag, NULL};
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("cloister %s\n", CLOISTER_VERSION);
        return CL_EXIT_OK;
    }
    if (!strcmp(name, "help") || cl_cli_is_help(name)) {
        if (argc < 3 || cl_cli_is_help(argv[2]) || !strcmp(argv[2], "help")) {
            cl_main_help(stdout);
            return CL_EXIT_OK;
        }
        /* `help CMD` runs `CMD --help`. */
        help_argv[0] = argv[2];
        name = argv[2];
        sub_argc = 2;
        sub_argv = help_argv;
    }
    for (size_t i = 0; i < sizeof(cl_commands) / sizeof(cl_commands[0]); i++)
        if (!strcmp(cl_commands[i].name, name))
            return cl_commands[i].run(sub_argc, sub_argv);
    fprintf(stderr, "cloister: unknown command '%s' (try 'cloister help')\n", name);
    return CL_EXIT_USAGE;
}
