#include <stdio.h>

#include "cli.h"

int cl_cmd_keygen(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not yet\n"); return CL_EXIT_FAIL; }
int cl_cmd_seal(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not yet\n"); return CL_EXIT_FAIL; }
int cl_cmd_unseal(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not yet\n"); return CL_EXIT_FAIL; }
int cl_cmd_inspect(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not yet\n"); return CL_EXIT_FAIL; }
