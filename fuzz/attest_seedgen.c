/* Writes the seed corpora of the cbor, cose and attest fuzz targets:
 * attest_seedgen OUTDIR (OUTDIR/{cbor,cose,attest} must exist). Documents
 * are signed by a throwaway simulated PKI. */
#include <stdio.h>
#include <string.h>

#include "cloister/attest.h"
#include "cloister/encode.h"
#include "cloister/file.h"

static int put(const char *dir, const char *sub, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    if (cl_file_write_atomic(path, p, n, 0644, 0) != CL_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: attest_seedgen OUTDIR\n");
        return 2;
    }
    const char *out = argv[1];
    int bad = 0;
    static const char *const cbor_hex[][2] = {
        {"uint", "1b000000e8d4a51000"}, {"nint", "3903e7"}, {"bytes", "4401020304"},
        {"text", "62c3bc"}, {"array", "83018202039f0405ff"}, {"map", "a26161016162820203"},
        {"indef_map", "bf6346756ef563416d7421ff"}, {"indef_bytes", "5f42010243030405ff"},
        {"tags", "c11a514b67b0"}, {"floats", "83f93c00fa47c35000fb3ff199999999999a"},
        {"simple", "84f4f5f6f7"}, {"nested", "818181818181818100"},
    };
    for (size_t i = 0; i < sizeof(cbor_hex) / sizeof(cbor_hex[0]); i++) {
        struct cl_buf b;
        cl_buf_init(&b, 256, CL_BUF_NONE);
        if (cl_hex_decode(cbor_hex[i][1], strlen(cbor_hex[i][1]), &b) != CL_OK)
            return 1;
        bad |= put(out, "cbor", cbor_hex[i][0], b.data, b.len);
        cl_buf_free(&b);
    }
    cl_attest_signer *s = NULL;
    if (cl_attest_signer_ephemeral(&s) != CL_OK)
        return 1;
    struct cl_buf doc;
    cl_buf_init(&doc, CL_ATTEST_MAX_DOC, CL_BUF_NONE);
    /* debug document, no optional fields */
    if (cl_attest_signer_sign(s, NULL, 0, NULL, 0, NULL, 0, &doc) != CL_OK)
        return 1;
    bad |= put(out, "attest", "debug_minimal", doc.data, doc.len);
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        memset(pcr[i], (int)i + 1, CL_ATTEST_PCR_LEN);
    cl_attest_signer_set_pcrs(s, 0x1ffff, (const uint8_t(*)[CL_ATTEST_PCR_LEN])pcr);
    uint8_t f[64];
    memset(f, 0x5a, sizeof(f));
    cl_buf_reset(&doc);
    doc.len = 0;
    if (cl_attest_signer_sign(s, f, 64, f, 32, f, 16, &doc) != CL_OK)
        return 1;
    bad |= put(out, "attest", "prod_fields", doc.data, doc.len);
    /* The COSE_Sign1 envelope alone, tagged and untagged. */
    cl_pkey *k = NULL;
    struct cl_buf cose;
    cl_buf_init(&cose, 4096, CL_BUF_NONE);
    if (cl_pkey_generate(CL_PKEY_P384, &k) != CL_OK ||
        cl_cose_sign1_sign_es384(k, (const uint8_t *)"payload", 7, true, &cose) != CL_OK)
        return 1;
    bad |= put(out, "cose", "tagged", cose.data, cose.len);
    cl_buf_reset(&cose);
    cose.len = 0;
    if (cl_cose_sign1_sign_es384(k, (const uint8_t *)"{}", 2, false, &cose) != CL_OK)
        return 1;
    bad |= put(out, "cose", "untagged", cose.data, cose.len);
    bad |= put(out, "cose", "nitro_doc", doc.data, doc.len);
    cl_pkey_free(k);
    cl_buf_free(&cose);
    cl_buf_free(&doc);
    cl_attest_signer_free(s);
    return bad;
}
