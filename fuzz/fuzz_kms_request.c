/* Fuzzes the KMS request JSON handling: the first byte picks the operation,
 * the rest is the request body, run as an authenticated principal against a
 * scratch key store (one key and alias made at start-up). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloister/kms.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cl_kms_server_config cfg;
static const char *const ops[] = {"CreateKey",     "DescribeKey",     "ListKeys",         "CreateAlias",
                                  "ListAliases",   "DeleteAlias",     "EnableKey",        "DisableKey",
                                  "ScheduleKeyDeletion", "CancelKeyDeletion", "GetKeyPolicy", "PutKeyPolicy",
                                  "Encrypt",       "Decrypt",         "ReEncrypt",        "GenerateDataKey",
                                  "GenerateDataKeyWithoutPlaintext",  "GenerateRandom",   "RotateKeyOnDemand",
                                  "CreateGrant"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/cl_fuzz_kms_XXXXXX";
    char store[64];
    struct cl_kms_store *st = NULL;
    struct cl_kms_key_meta m;
    if (!mkdtemp(dir))
        abort();
    snprintf(store, sizeof(store), "%s/s", dir);
    if (cl_kms_store_init(store, "us-east-1", "111122223333") || cl_kms_store_open(store, &st) ||
        cl_kms_key_create(st, "fuzz",
                          "{\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":"
                          "\"arn:aws:iam::111122223333:user/fuzz\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}",
                          &m) || cl_kms_alias_create(st, "alias/fuzz", m.key_id))
        abort();
    /* Fast, not durable: the fuzzer creates many rows. */
    cfg.store = st;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *op = ops[data[0] % (sizeof(ops) / sizeof(ops[0]))];
    struct cl_kms_response r;
    cl_kms_response_init(&r);
    cl_kms_handle_op(&cfg, "arn:aws:iam::111122223333:user/fuzz", op, data + 1, size - 1, &r);
    cl_kms_response_free(&r);
    return 0;
}
