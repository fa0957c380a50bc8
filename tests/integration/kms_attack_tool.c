/* Test utility for the attack tests (tests/integration/attack_*.sh): what an
 * operator can do with its own credentials and its own cloister-sim CA.
 *
 *   kms_attack_tool call URL CREDS.json OPERATION BODY|@FILE
 *       one signed KMS call; prints the response JSON (exit 0) or the
 *       service's error (stderr, exit 1). CREDS.json is the host's
 *       {"access_key_id","secret_access_key","region"} file.
 *   kms_attack_tool forge SIMDIR OUTDIR [--pcr N=HEX]...
 *       signs an attestation document with SIMDIR's CA (cloister-sim init)
 *       carrying the given PCRs and a fresh RSA key: OUTDIR/doc.b64 and
 *       OUTDIR/rsa.pem. This is the "30-line program using the project's
 *       own signer" an operator holding a sim root can write.
 *
 * Not installed; never used outside tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cloister/attest.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms_client.h"

static int t_fail(const char *what, cl_err rc)
{
    char buf[600];
    fprintf(stderr, "kms_attack_tool: %s: %s\n", what, cl_err_format(rc, buf, sizeof(buf)));
    return 1;
}

static int t_call(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: kms_attack_tool call URL CREDS.json OPERATION BODY|@FILE\n");
        return 2;
    }
    struct cl_kmsc_credentials cred;
    memset(&cred, 0, sizeof(cred));
    json_error_t jerr;
    json_t *c = json_load_file(argv[3], 0, &jerr);
    const char *ak = json_string_value(json_object_get(c, "access_key_id"));
    const char *sk = json_string_value(json_object_get(c, "secret_access_key"));
    const char *region = json_string_value(json_object_get(c, "region"));
    if (!ak || !sk) {
        fprintf(stderr, "kms_attack_tool: %s: want access_key_id and secret_access_key\n", argv[3]);
        json_decref(c);
        return 2;
    }
    snprintf(cred.access_key, sizeof(cred.access_key), "%s", ak);
    snprintf(cred.secret, sizeof(cred.secret), "%s", sk);
    char reg[64];
    snprintf(reg, sizeof(reg), "%s", region ? region : "us-east-1");
    json_decref(c);
    struct cl_buf body;
    cl_buf_init(&body, 1 << 20, CL_BUF_NONE);
    cl_err rc = CL_OK;
    if (argv[5][0] == '@') {
        rc = cl_file_read(argv[5] + 1, 1 << 20, &body);
    } else {
        rc = cl_buf_append(&body, argv[5], strlen(argv[5]));
    }
    if (!rc)
        rc = cl_buf_append_u8(&body, 0);
    struct cl_kmsc_endpoint ep = {.url = argv[2], .region = reg};
    json_t *out = NULL;
    if (!rc)
        rc = cl_kmsc_call(&ep, &cred, argv[4], (const char *)body.data, (struct json_t **)&out);
    cl_kmsc_credentials_wipe(&cred);
    cl_buf_free(&body);
    if (rc)
        return t_fail(argv[4], rc);
    char *s = json_dumps(out, JSON_COMPACT);
    printf("%s\n", s ? s : "{}");
    free(s);
    json_decref(out);
    return 0;
}

static int t_forge(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: kms_attack_tool forge SIMDIR OUTDIR [--pcr N=HEX]...\n");
        return 2;
    }
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    uint32_t mask = 0;
    memset(pcr, 0, sizeof(pcr));
    for (int i = 4; i < argc; i += 2) {
        unsigned n;
        int off = 0;
        if (strcmp(argv[i], "--pcr") || i + 1 == argc || sscanf(argv[i + 1], "%u=%n", &n, &off) != 1 || !off ||
            n >= CL_ATTEST_MAX_PCRS || strlen(argv[i + 1] + off) != 2 * CL_ATTEST_PCR_LEN ||
            cl_hex_decode_fixed(argv[i + 1] + off, 2 * CL_ATTEST_PCR_LEN, pcr[n], CL_ATTEST_PCR_LEN)) {
            fprintf(stderr, "kms_attack_tool: forge: bad argument '%s' (want --pcr N=96HEX)\n", argv[i]);
            return 2;
        }
        mask |= 1u << n;
    }
    cl_err rc;
    cl_attest_signer *s = NULL;
    cl_pkey *k = NULL;
    struct cl_buf pub, priv, doc, b64;
    char path[4096];
    cl_buf_init(&pub, 4096, CL_BUF_NONE);
    cl_buf_init(&priv, 8192, CL_BUF_SECURE);
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    cl_buf_init(&b64, 4 * CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    if ((rc = cl_attest_signer_load(argv[2], &s)))
        goto out;
    cl_attest_signer_set_pcrs(s, mask | 0xffff, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    if ((rc = cl_pkey_generate(CL_PKEY_RSA, &k)) || (rc = cl_pkey_public_der(k, &pub)) ||
        (rc = cl_pkey_private_pem(k, &priv)) ||
        (rc = cl_attest_signer_sign(s, pub.data, pub.len, NULL, 0, NULL, 0, &doc)) ||
        (rc = cl_b64_encode(doc.data, doc.len, CL_B64_STD, &b64)))
        goto out;
    snprintf(path, sizeof(path), "%s/rsa.pem", argv[3]);
    if ((rc = cl_file_write_atomic(path, priv.data, priv.len, 0600, 0)))
        goto out;
    snprintf(path, sizeof(path), "%s/doc.b64", argv[3]);
    rc = cl_file_write_atomic(path, b64.data, b64.len, 0644, 0);
out:
    cl_attest_signer_free(s);
    cl_pkey_free(k);
    cl_buf_free(&pub);
    cl_buf_free(&priv);
    cl_buf_free(&doc);
    cl_buf_free(&b64);
    return rc ? t_fail("forge", rc) : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "call"))
        return t_call(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "forge"))
        return t_forge(argc, argv);
    fprintf(stderr, "usage: kms_attack_tool call URL CREDS.json OP BODY|@FILE\n"
                    "       kms_attack_tool forge SIMDIR OUTDIR [--pcr N=HEX]...\n");
    return 2;
}
