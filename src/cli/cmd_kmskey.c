/* `cloister kms create-key`: CreateKey (+ optional alias) against
 * cloister-kms or AWS KMS, with credentials from the usual AWS variables or
 * files. Prints the key id. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/file.h"
#include "cloister/kms_client.h"
#include "cloister/secmem.h"

static void cl_kmskey_help(FILE *f)
{
    fprintf(f, "usage: cloister kms create-key --kms URL [--policy FILE] [--alias alias/NAME]\n"
           "                             [--description TEXT] [--region R]\n\n"
           "Creates a symmetric key (SYMMETRIC_DEFAULT) and prints its KeyId. --policy sets\n"
           "its key policy at creation (see `cloister kms policy`). URL is a cloister-kms\n"
           "URL or `aws`. Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the\n"
           "shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE).\n");
}

int cl_cmd_kms_create_key(int argc, char **argv)
{
    enum { O_KMS = 256, O_POLICY, O_ALIAS, O_DESC, O_REGION };
    static const struct option opts[] = {{"kms", required_argument, 0, O_KMS},
                                         {"policy", required_argument, 0, O_POLICY},
                                         {"alias", required_argument, 0, O_ALIAS},
                                         {"description", required_argument, 0, O_DESC},
                                         {"region", required_argument, 0, O_REGION},
                                         CL_CLI_OPT_HELP, CL_CLI_OPT_END};
    const char *url = NULL, *policy = NULL, *alias = NULL, *desc = "cloister sealed model key", *region_opt = NULL;
    struct cl_cli_args args = {.cmd = "kms create-key", .help = cl_kmskey_help, .longopts = opts};
    for (int c; (c = cl_cli_next(&args, argc - 1, argv + 1)) != -1;) {
        switch (c) {
        case O_KMS: url = optarg; break;
        case O_POLICY: policy = optarg; break;
        case O_ALIAS: alias = optarg; break;
        case O_DESC: desc = optarg; break;
        case O_REGION: region_opt = optarg; break;
        default: return args.exit;
        }
    }
    if (!url || optind != argc - 1)
        return cl_cli_usage_error("kms create-key", "expected --kms URL and no other arguments");
    if (cl_cli_harden("kms create-key") != CL_EXIT_OK)
        return CL_EXIT_FAIL;
    int status = CL_EXIT_FAIL;
    cl_err rc;
    void *mem = NULL;
    struct cl_buf pol;
    json_t *req = json_pack("{s:s,s:s,s:s}", "KeySpec", "SYMMETRIC_DEFAULT", "KeyUsage", "ENCRYPT_DECRYPT",
                            "Description", desc),
           *resp = NULL;
    char region[64] = "us-east-1", *body = NULL;
    cl_buf_init(&pol, 32 << 10, CL_BUF_NONE);
    if (policy) {
        if ((rc = cl_file_read(policy, 32 << 10, &pol)) != CL_OK || (rc = cl_buf_append_u8(&pol, 0)) != CL_OK) {
            status = cl_cli_fail("kms create-key", policy, rc);
            goto out;
        }
        json_object_set_new(req, "Policy", json_string((const char *)pol.data));
    }
    if ((rc = cl_secmem_alloc(sizeof(struct cl_kmsc_credentials), &mem)) != CL_OK ||
        (rc = cl_kmsc_credentials_load(mem)) != CL_OK) {
        status = cl_cli_fail("kms create-key", "credentials", rc);
        goto out;
    }
    if (region_opt)
        snprintf(region, sizeof(region), "%s", region_opt);
    else if ((rc = cl_kmsc_region_load(region, sizeof(region))) != CL_OK) {
        status = cl_cli_fail("kms create-key", "region", rc);
        goto out;
    }
    struct cl_kmsc_endpoint ep = {.url = strcmp(url, "aws") ? url : NULL, .region = region};
    body = json_dumps(req, JSON_COMPACT);
    if ((rc = cl_kmsc_call(&ep, mem, "CreateKey", body, &resp)) != CL_OK) {
        status = cl_cli_fail("kms create-key", "CreateKey", rc);
        goto out;
    }
    const char *key_id = json_string_value(json_object_get(json_object_get(resp, "KeyMetadata"), "KeyId"));
    if (!key_id) {
        fprintf(stderr, "cloister kms create-key: response has no KeyMetadata.KeyId\n");
        goto out;
    }
    if (alias) {
        json_t *a = json_pack("{s:s,s:s}", "AliasName", alias, "TargetKeyId", key_id), *ar = NULL;
        char *ab = json_dumps(a, JSON_COMPACT);
        rc = cl_kmsc_call(&ep, mem, "CreateAlias", ab, &ar);
        free(ab);
        json_decref(a);
        json_decref(ar);
        if (rc != CL_OK) {
            status = cl_cli_fail("kms create-key", "CreateAlias", rc);
            goto out;
        }
    }
    printf("%s\n", key_id);
    status = CL_EXIT_OK;
out:
    if (mem)
        cl_kmsc_credentials_wipe(mem);
    cl_secmem_free(mem);
    free(body);
    json_decref(req);
    json_decref(resp);
    cl_buf_free(&pol);
    return status;
}
