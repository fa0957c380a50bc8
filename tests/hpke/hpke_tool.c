/* Command-line face of Cloister's HPKE for the hpke-js interop test.
 *   hpke_tool keygen                                  -> SK PK
 *   hpke_tool seal MODE AEAD PKR INFO AAD PT [SKS]    -> ENC CT EXPORT
 *   hpke_tool open MODE AEAD SKR ENC INFO AAD CT [PKS] -> PT EXPORT
 * All values hex ("-" for empty); EXPORT is Export("cloister-interop", 32). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/encode.h"
#include "cloister/hpke.h"

static struct cl_buf unhex(const char *s)
{
    struct cl_buf b;
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    if (strcmp(s, "-") != 0 && cl_hex_decode(s, strlen(s), &b) != CL_OK) {
        fprintf(stderr, "bad hex\n");
        exit(2);
    }
    if (!b.data)
        b.data = calloc(1, 1);
    return b;
}

static void put(const uint8_t *p, size_t n, const char *end)
{
    char *h = malloc(2 * n + 1);
    cl_hex_encode(p, n, h);
    printf("%s%s", n ? h : "-", end);
    free(h);
}

int main(int argc, char **argv)
{
    static const char exp_ctx[] = "cloister-interop";
    uint8_t out32[32], exp[32];
    if (argc == 2 && !strcmp(argv[1], "keygen")) {
        cl_pkey *k;
        if (cl_pkey_generate(CL_PKEY_X25519, &k) != CL_OK || cl_x25519_private_raw(k, out32) != CL_OK)
            return 1;
        put(out32, 32, " ");
        if (cl_x25519_public_raw(k, out32) != CL_OK)
            return 1;
        put(out32, 32, "\n");
        cl_pkey_free(k);
        return 0;
    }
    if (argc < 8)
        return 2;
    int mode = atoi(argv[2]);
    struct cl_hpke_suite s = {CL_HPKE_KEM_X25519_SHA256, CL_HPKE_KDF_SHA256, (uint16_t)atoi(argv[3])};
    struct cl_hpke_opts o = {0};
    struct cl_buf ct, pt;
    cl_buf_init(&ct, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&pt, 1 << 20, CL_BUF_NONE);
    cl_hpke_ctx *c = NULL;
    cl_pkey *sender = NULL, *sk = NULL;
    if (!strcmp(argv[1], "seal")) {
        struct cl_buf pk = unhex(argv[4]), info = unhex(argv[5]), aad = unhex(argv[6]), msg = unhex(argv[7]);
        if (argc > 8) {
            struct cl_buf sks = unhex(argv[8]);
            cl_err src = cl_x25519_from_raw(sks.data, 1, &sender);
            cl_buf_free(&sks);
            if (src != CL_OK)
                return 1;
            o.sk_sender = sender;
        }
        uint8_t enc[32];
        if (cl_hpke_setup_sender(&s, mode, pk.data, info.data, info.len, &o, enc, &c) != CL_OK ||
            cl_hpke_seal(c, aad.data, aad.len, msg.data, msg.len, &ct) != CL_OK ||
            cl_hpke_export(c, exp_ctx, sizeof(exp_ctx) - 1, exp, 32) != CL_OK)
            return 1;
        put(enc, 32, " ");
        put(ct.data, ct.len, " ");
        put(exp, 32, "\n");
        cl_buf_free(&pk);
        cl_buf_free(&info);
        cl_buf_free(&aad);
        cl_buf_free(&msg);
    } else if (!strcmp(argv[1], "open") && argc >= 9) {
        struct cl_buf skr = unhex(argv[4]), enc = unhex(argv[5]), info = unhex(argv[6]), aad = unhex(argv[7]),
                      msg = unhex(argv[8]), pks = {0};
        if (argc > 9) {
            pks = unhex(argv[9]);
            o.pk_sender = pks.data;
        }
        if (enc.len != 32 || cl_x25519_from_raw(skr.data, 1, &sk) != CL_OK ||
            cl_hpke_setup_recipient(&s, mode, enc.data, sk, info.data, info.len, &o, &c) != CL_OK)
            return 1;
        if (cl_hpke_open(c, aad.data, aad.len, msg.data, msg.len, &pt) != CL_OK) {
            fprintf(stderr, "open failed\n");
            return 1;
        }
        if (cl_hpke_export(c, exp_ctx, sizeof(exp_ctx) - 1, exp, 32) != CL_OK)
            return 1;
        put(pt.data, pt.len, " ");
        put(exp, 32, "\n");
        cl_buf_free(&skr);
        cl_buf_free(&enc);
        cl_buf_free(&info);
        cl_buf_free(&aad);
        cl_buf_free(&msg);
        cl_buf_free(&pks);
    } else {
        return 2;
    }
    cl_hpke_free(c);
    cl_pkey_free(sender);
    cl_pkey_free(sk);
    cl_buf_free(&ct);
    cl_buf_free(&pt);
    return 0;
}
