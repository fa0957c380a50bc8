/* CiphertextForRecipient: CMS EnvelopedData, KTRI RSAES-OAEP-SHA256, AES-256-CBC. */
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cloister/aws.h"
#include "cloister/secmem.h"

/* OpenSSL's CMS API addresses a key-transport recipient by certificate. The
 * enclave only has a bare public key, so it is placed in a throwaway
 * certificate (signed by a one-off key) that only supplies the key and the
 * issuer/serial identifier; nothing ever validates it. */
static cl_err cl_aws_holder_cert(EVP_PKEY *pub, X509 **out)
{
    cl_err rc = CL_OK;
    X509 *x = X509_new();
    EVP_PKEY *signer = NULL;
    CL_ENSURE(x, CL_E_CORE_NOMEM);
    signer = EVP_EC_gen("P-256");
    CL_ENSURE_D(signer, CL_E_KMS_CMS, "ephemeral signer");
    X509_NAME *name = X509_get_subject_name(x);
    CL_ENSURE_D(X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
                    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                               (const unsigned char *)"cloister-kms recipient", -1, -1, 0) == 1 &&
                    X509_set_issuer_name(x, name) == 1 && X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
                    X509_gmtime_adj(X509_getm_notAfter(x), 3600) && X509_set_pubkey(x, pub) == 1 &&
                    X509_sign(x, signer, EVP_sha256()) > 0,
                CL_E_KMS_CMS, "recipient holder certificate");
    *out = x;
    x = NULL;
out:
    X509_free(x);
    EVP_PKEY_free(signer);
    return rc;
}

cl_err cl_aws_recipient_wrap(const uint8_t *rsa_pub, size_t pub_len, const uint8_t *pt, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    cl_pkey *k = NULL;
    X509 *cert = NULL;
    BIO *in = NULL;
    CMS_ContentInfo *cms = NULL;
    unsigned char *der = NULL;
    CL_GUARD(cl_pkey_parse(rsa_pub, pub_len, &k));
    CL_ENSURE_D(cl_pkey_type(k) == CL_PKEY_RSA, CL_E_KMS_RECIPIENT, "attested public key is not RSA");
    CL_ENSURE_D(EVP_PKEY_get_bits(cl_pkey_evp(k)) >= 2048 && EVP_PKEY_get_bits(cl_pkey_evp(k)) <= 4096,
                CL_E_KMS_RECIPIENT, "attested RSA key size %d not in 2048..4096", EVP_PKEY_get_bits(cl_pkey_evp(k)));
    CL_GUARD(cl_aws_holder_cert(cl_pkey_evp(k), &cert));
    in = BIO_new_mem_buf(pt, (int)n);
    CL_ENSURE(in, CL_E_CORE_NOMEM);
    unsigned flags = CMS_BINARY | CMS_PARTIAL | CMS_KEY_PARAM;
    cms = CMS_encrypt(NULL, NULL, EVP_aes_256_cbc(), flags);
    CL_ENSURE_D(cms, CL_E_KMS_CMS, "CMS_encrypt");
    CMS_RecipientInfo *ri = CMS_add1_recipient_cert(cms, cert, flags);
    CL_ENSURE_D(ri, CL_E_KMS_CMS, "CMS_add1_recipient_cert");
    EVP_PKEY_CTX *pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
    CL_ENSURE_D(pctx && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
                    EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) > 0 &&
                    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0,
                CL_E_KMS_CMS, "RSAES-OAEP SHA-256 parameters");
    CL_ENSURE_D(CMS_final(cms, in, NULL, flags) == 1, CL_E_KMS_CMS, "CMS_final");
    int len = i2d_CMS_ContentInfo(cms, &der);
    CL_ENSURE_D(len > 0, CL_E_KMS_CMS, "CMS encoding");
    CL_GUARD(cl_buf_append(out, der, (size_t)len));
out:
    if (rc && ERR_peek_error())
        ERR_clear_error();
    OPENSSL_free(der);
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    X509_free(cert);
    cl_pkey_free(k);
    return rc;
}

cl_err cl_aws_recipient_unwrap(const cl_pkey *rsa_priv, const uint8_t *cms_der, size_t n, struct cl_buf *pt)
{
    cl_err rc = CL_OK;
    CMS_ContentInfo *cms = NULL;
    BIO *outb = NULL;
    const unsigned char *p = cms_der;
    CL_ENSURE_D(rsa_priv && cl_pkey_type(rsa_priv) == CL_PKEY_RSA,
                CL_E_CORE_INVALID_ARG, "unwrap needs an RSA private key");
    CL_ENSURE_D(n > 0 && n <= CL_AWS_CMS_MAX, CL_E_KMS_CMS, "CiphertextForRecipient length %zu", n);
    cms = d2i_CMS_ContentInfo(NULL, &p, (long)n);
    CL_ENSURE_D(cms, CL_E_KMS_CMS, "CiphertextForRecipient is not CMS DER");
    CL_ENSURE_D(p == cms_der + n, CL_E_KMS_CMS, "trailing bytes after CMS");
    CL_ENSURE_D(OBJ_obj2nid(CMS_get0_type(cms)) == NID_pkcs7_enveloped, CL_E_KMS_CMS, "content type is not "
                "EnvelopedData");
    STACK_OF(CMS_RecipientInfo) *ris = CMS_get0_RecipientInfos(cms);
    CL_ENSURE_D(ris && sk_CMS_RecipientInfo_num(ris) == 1, CL_E_KMS_CMS, "want exactly one RecipientInfo");
    CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(ris, 0);
    CL_ENSURE_D(CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_TRANS, CL_E_KMS_CMS, "RecipientInfo is not KTRI");
    X509_ALGOR *alg = NULL;
    CL_ENSURE_D(CMS_RecipientInfo_ktri_get0_algs(ri, NULL, NULL, &alg) == 1 && alg, CL_E_KMS_CMS, "KTRI algorithm");
    const ASN1_OBJECT *aobj;
    int ptype;
    const void *pval;
    X509_ALGOR_get0(&aobj, &ptype, &pval, alg);
    CL_ENSURE_D(OBJ_obj2nid(aobj) == NID_rsaesOaep, CL_E_KMS_CMS, "key encryption is not RSAES-OAEP");
    /* OAEP parameters: hashAlgorithm must be SHA-256 (the default SHA-1 is refused) */
    CL_ENSURE_D(ptype == V_ASN1_SEQUENCE && pval, CL_E_KMS_CMS, "RSAES-OAEP parameters absent (SHA-1 default)");
    {
        const ASN1_STRING *seq = pval;
        const unsigned char *q = ASN1_STRING_get0_data(seq);
        RSA_OAEP_PARAMS *op = d2i_RSA_OAEP_PARAMS(NULL, &q, ASN1_STRING_length(seq));
        CL_ENSURE_D(op, CL_E_KMS_CMS, "RSAES-OAEP parameters");
        int hnid = op->hashFunc ? OBJ_obj2nid(op->hashFunc->algorithm) : NID_sha1;
        RSA_OAEP_PARAMS_free(op);
        CL_ENSURE_D(hnid == NID_sha256, CL_E_KMS_CMS, "RSAES-OAEP hash is not SHA-256");
    }
    {
        /* OpenSSL has no public getter for EncryptedContentInfo's algorithm;
         * the AES-256-CBC AlgorithmIdentifier (OID 2.16.840.1.101.3.4.1.42
         * followed by its 16-byte IV) must appear in the encoding. */
        static const uint8_t aes256cbc[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a, 0x04, 0x10};
        CL_ENSURE_D(memmem(cms_der, n, aes256cbc, sizeof(aes256cbc)) != NULL, CL_E_KMS_CMS,
                    "content encryption is not AES-256-CBC");
    }
    CL_ENSURE_D(CMS_decrypt_set1_pkey(cms, cl_pkey_evp(rsa_priv), NULL) == 1, CL_E_KMS_CMS,
                "RSA key does not open the KTRI");
    outb = BIO_new(BIO_s_mem());
    CL_ENSURE(outb, CL_E_CORE_NOMEM);
    CL_ENSURE_D(CMS_decrypt(cms, NULL, NULL, NULL, outb, CMS_BINARY) == 1, CL_E_KMS_CMS, "CMS content decryption");
    char *data = NULL;
    long dl = BIO_get_mem_data(outb, &data);
    CL_ENSURE_D(dl >= 0 && (size_t)dl <= CL_AWS_CMS_MAX, CL_E_KMS_CMS, "content length");
    rc = cl_buf_append(pt, data, (size_t)dl);
    if (dl > 0)
        cl_wipe(data, (size_t)dl);
out:
    if (rc && ERR_peek_error())
        ERR_clear_error();
    BIO_free(outb);
    CMS_ContentInfo_free(cms);
    return rc;
}
