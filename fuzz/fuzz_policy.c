/* Fuzzes the key policy parser, then evaluates whatever parsed. */
#include <stddef.h>
#include <stdint.h>

#include "cloister/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_policy_cb(void *arg, const char *principal)
{
    (void)arg;
    (void)principal;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_policy *p = NULL;
    if (cl_policy_parse((const char *)data, size, &p) != CL_OK)
        return 0;
    struct cl_aws_kv kv = {"model", "m"};
    struct cl_policy_recipient r = {.pcr_mask = 7};
    struct cl_policy_ctx ctx = {.principal_arn = "arn:aws:iam::1:user/a", .caller_account = "1",
                                .action = "kms:Decrypt", .resource = "arn:aws:kms:r:1:key/k", .now = 1,
                                .enc_ctx = &kv, .n_enc_ctx = 1, .recipient = &r};
    struct cl_policy_decision d;
    (void)cl_policy_evaluate(p, &ctx, &d);
    r.require_root_pin = true;
    r.has_root = true;
    (void)cl_policy_evaluate(p, &ctx, &d);
    ctx.recipient = NULL;
    (void)cl_policy_evaluate(p, &ctx, &d);
    bool unsafe;
    char stmt[72];
    (void)cl_policy_unattested_allow(p, "arn:aws:iam::1:user/a", "kms:Decrypt", "arn:aws:kms:r:1:key/k", &unsafe, stmt);
    (void)cl_policy_release_principals(p, fuzz_policy_cb, NULL);
    cl_policy_free(p);
    return 0;
}
