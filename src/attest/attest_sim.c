/* Document encoding and the simulated Nitro PKI used by cloister-sim. */
#include "cloister/attest.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cloister/encode.h"
#include "cloister/file.h"

cl_err cl_attest_encode_payload(const struct cl_attest_fields *f, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    unsigned npcr = 0;
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        npcr += (f->pcr_present >> i) & 1;
    CL_ENSURE_D(f->module_id && *f->module_id && strlen(f->module_id) <= CL_ATTEST_MAX_MODULE_ID, CL_E_ATTEST_FIELD,
                "module_id");
    CL_ENSURE_D(npcr > 0 && f->pcr, CL_E_ATTEST_PCRS, "no PCRs");
    CL_ENSURE_D(f->ncabundle >= 1 && f->ncabundle <= CL_ATTEST_MAX_CABUNDLE, CL_E_ATTEST_CABUNDLE, "cabundle size");
    CL_ENSURE_D(f->certificate.len > 0, CL_E_ATTEST_FIELD, "certificate");
    CL_ENSURE_D(f->public_key.len <= CL_ATTEST_MAX_DOC_FIELD, CL_E_ATTEST_FIELD_LIMIT, "public_key");
    CL_ENSURE_D(f->user_data.len <= CL_ATTEST_MAX_DOC_FIELD, CL_E_ATTEST_FIELD_LIMIT, "user_data");
    CL_ENSURE_D(f->nonce.len <= CL_ATTEST_MAX_DOC_FIELD, CL_E_ATTEST_FIELD_LIMIT, "nonce");
    /* Keys in deterministic order: by encoded length, then bytewise. */
    CL_GUARD(cl_cbor_put_map(out, 9));
    CL_GUARD(cl_cbor_put_text(out, "pcrs"));
    CL_GUARD(cl_cbor_put_map(out, npcr));
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        if (!((f->pcr_present >> i) & 1))
            continue;
        CL_GUARD(cl_cbor_put_uint(out, i));
        CL_GUARD(cl_cbor_put_bytes(out, f->pcr[i], CL_ATTEST_PCR_LEN));
    }
    CL_GUARD(cl_cbor_put_text(out, "nonce"));
    CL_GUARD(f->nonce.len ? cl_cbor_put_bytes(out, f->nonce.p, f->nonce.len) : cl_cbor_put_null(out));
    CL_GUARD(cl_cbor_put_text(out, "digest"));
    CL_GUARD(cl_cbor_put_text(out, "SHA384"));
    CL_GUARD(cl_cbor_put_text(out, "cabundle"));
    CL_GUARD(cl_cbor_put_array(out, f->ncabundle));
    for (size_t i = 0; i < f->ncabundle; i++)
        CL_GUARD(cl_cbor_put_bytes(out, f->cabundle[i].p, f->cabundle[i].len));
    CL_GUARD(cl_cbor_put_text(out, "module_id"));
    CL_GUARD(cl_cbor_put_text(out, f->module_id));
    CL_GUARD(cl_cbor_put_text(out, "timestamp"));
    CL_GUARD(cl_cbor_put_uint(out, f->timestamp_ms));
    CL_GUARD(cl_cbor_put_text(out, "user_data"));
    CL_GUARD(f->user_data.len ? cl_cbor_put_bytes(out, f->user_data.p, f->user_data.len) : cl_cbor_put_null(out));
    CL_GUARD(cl_cbor_put_text(out, "public_key"));
    CL_GUARD(f->public_key.len ? cl_cbor_put_bytes(out, f->public_key.p, f->public_key.len) : cl_cbor_put_null(out));
    CL_GUARD(cl_cbor_put_text(out, "certificate"));
    CL_GUARD(cl_cbor_put_bytes(out, f->certificate.p, f->certificate.len));
out:
    return rc;
}

/* ---- simulated PKI ---- */

struct cl_attest_signer {
    X509 *root, *inter, *leaf;
    cl_pkey *inter_key, *leaf_key;
    time_t leaf_not_after;
    uint8_t *root_der, *inter_der, *leaf_der;
    size_t root_len, inter_len, leaf_len;
    uint32_t pcr_present;
    uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN];
    char module_id[64];
};

#define CL_SIM_DAY (24 * 3600L)

static cl_err cl_sim_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!e)
        return cl_ossl_fail(CL_E_ATTEST_SIM, "extension");
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok == 1 ? CL_OK : cl_ossl_fail(CL_E_ATTEST_SIM, "X509_add_ext");
}

/* A certificate for subject_key signed by issuer (NULL = self-signed). */
static cl_err cl_sim_make_cert(const char *cn, const cl_pkey *subject_key, X509 *issuer, const cl_pkey *issuer_key,
                               int pathlen, long not_before, long not_after, X509 **out)
{
    cl_err rc = CL_OK;
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    X509_NAME *name = X509_NAME_new();
    CL_ENSURE(x && serial && name, CL_E_CORE_NOMEM);
    CL_ENSURE(X509_set_version(x, 2) == 1, CL_E_ATTEST_SIM);
    CL_ENSURE(BN_rand(serial, 120, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
                  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)),
              CL_E_ATTEST_SIM);
    CL_ENSURE(X509_NAME_add_entry_by_txt(name, "C", MBSTRING_ASC, (const unsigned char *)"US", -1, -1, 0) == 1 &&
                  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Cloister", -1, -1, 0) == 1 &&
                  X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC, (const unsigned char *)"cloister-sim", -1, -1, 0) == 1 &&
                  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1,
              CL_E_ATTEST_SIM);
    CL_ENSURE(X509_set_subject_name(x, name) == 1, CL_E_ATTEST_SIM);
    CL_ENSURE(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1, CL_E_ATTEST_SIM);
    time_t now = time(NULL);
    CL_ENSURE(X509_time_adj_ex(X509_getm_notBefore(x), 0, not_before, &now) &&
                  X509_time_adj_ex(X509_getm_notAfter(x), 0, not_after, &now),
              CL_E_ATTEST_SIM);
    CL_ENSURE(X509_set_pubkey(x, cl_pkey_evp(subject_key)) == 1, CL_E_ATTEST_SIM);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    if (pathlen >= 0) {
        char bc[64];
        snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d", pathlen);
        CL_GUARD(cl_sim_ext(x, &ctx, NID_basic_constraints, bc));
        CL_GUARD(cl_sim_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
    } else {
        CL_GUARD(cl_sim_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE"));
        CL_GUARD(cl_sim_ext(x, &ctx, NID_key_usage, "critical,digitalSignature"));
    }
    CL_GUARD(cl_sim_ext(x, &ctx, NID_subject_key_identifier, "hash"));
    CL_GUARD(cl_sim_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"));
    if (X509_sign(x, cl_pkey_evp(issuer_key), EVP_sha384()) <= 0)
        CL_FAIL(cl_ossl_fail(CL_E_ATTEST_SIM, "X509_sign"), "signing %s", cn);
    *out = x;
    x = NULL;
out:
    X509_NAME_free(name);
    BN_free(serial);
    X509_free(x);
    return rc;
}

static cl_err cl_sim_der(X509 *x, uint8_t **der, size_t *len)
{
    unsigned char *p = NULL;
    int n = i2d_X509(x, &p);
    if (n <= 0)
        return cl_ossl_fail(CL_E_ATTEST_SIM, "i2d_X509");
    *der = malloc((size_t)n);
    if (!*der) {
        OPENSSL_free(p);
        return CL_E_CORE_NOMEM;
    }
    memcpy(*der, p, (size_t)n);
    *len = (size_t)n;
    OPENSSL_free(p);
    return CL_OK;
}

static cl_err cl_sim_cert_pem(X509 *x, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    CL_ENSURE(b, CL_E_CORE_NOMEM);
    CL_ENSURE(PEM_write_bio_X509(b, x) == 1, CL_E_ATTEST_SIM);
    long n = BIO_get_mem_data(b, &p);
    CL_ENSURE(n > 0, CL_E_ATTEST_SIM);
    CL_GUARD(cl_buf_append(out, p, (size_t)n));
out:
    BIO_free(b);
    return rc;
}

static cl_err cl_sim_path(const char *dir, const char *file, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", dir, file);
    return n > 0 && (size_t)n < len ? CL_OK : cl_err_fail(CL_E_CORE_LIMIT, "path too long");
}

/* PEM of a certificate (public, 0644) or of a private key (0600, from a
 * secure buffer), written atomically as dir/file. */
static cl_err cl_sim_write_pem(const char *dir, const char *file, X509 *x, const cl_pkey *k)
{
    cl_err rc = CL_OK;
    char path[4096];
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, k ? CL_BUF_SECURE : CL_BUF_NONE);
    CL_GUARD(cl_sim_path(dir, file, path, sizeof(path)));
    CL_GUARD(k ? cl_pkey_private_pem(k, &b) : cl_sim_cert_pem(x, &b));
    CL_GUARD(cl_file_write_atomic(path, b.data, b.len, k ? 0600 : 0644, 1));
out:
    cl_buf_free(&b);
    return rc;
}

static cl_err cl_sim_write_cert(const char *dir, const char *file, X509 *x)
{
    return cl_sim_write_pem(dir, file, x, NULL);
}

static cl_err cl_sim_write_key(const char *dir, const char *file, const cl_pkey *k)
{
    return cl_sim_write_pem(dir, file, NULL, k);
}

static cl_err cl_sim_new_cas(cl_pkey **root_key, X509 **root, cl_pkey **inter_key, X509 **inter)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_pkey_generate(CL_PKEY_P384, root_key));
    CL_GUARD(cl_pkey_generate(CL_PKEY_P384, inter_key));
    CL_GUARD(cl_sim_make_cert("cloister-sim root", *root_key, NULL, *root_key, 2, -CL_SIM_DAY, 30 * 365 * CL_SIM_DAY,
                              root));
    CL_GUARD(cl_sim_make_cert("cloister-sim intermediate", *inter_key, *root, *root_key, 1, -CL_SIM_DAY,
                              10 * 365 * CL_SIM_DAY, inter));
out:
    return rc;
}

cl_err cl_attest_sim_init(const char *dir)
{
    cl_err rc = CL_OK;
    cl_pkey *rk = NULL, *ik = NULL;
    X509 *root = NULL, *inter = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cl_err_from_errno(errno, "mkdir");
    CL_GUARD(cl_sim_new_cas(&rk, &root, &ik, &inter));
    CL_GUARD(cl_sim_write_key(dir, "root.key", rk));
    CL_GUARD(cl_sim_write_key(dir, "intermediate.key", ik));
    CL_GUARD(cl_sim_write_cert(dir, "root.pem", root));
    CL_GUARD(cl_sim_write_cert(dir, "intermediate.pem", inter));
out:
    cl_pkey_free(rk);
    cl_pkey_free(ik);
    X509_free(root);
    X509_free(inter);
    return rc;
}

void cl_attest_signer_free(cl_attest_signer *s)
{
    if (!s)
        return;
    X509_free(s->root);
    X509_free(s->inter);
    X509_free(s->leaf);
    cl_pkey_free(s->leaf_key);
    cl_pkey_free(s->inter_key);
    free(s->root_der);
    free(s->inter_der);
    free(s->leaf_der);
    free(s);
}

#define CL_SIM_LEAF_LIFETIME (3 * 3600L)
#define CL_SIM_LEAF_RENEW_BEFORE 3600L

/* A new leaf key and certificate, replacing the current one. */
static cl_err cl_sim_issue_leaf(cl_attest_signer *s)
{
    cl_err rc = CL_OK;
    cl_pkey *key = NULL;
    X509 *leaf = NULL;
    uint8_t *der = NULL;
    size_t len = 0;
    time_t now = time(NULL);
    CL_GUARD(cl_pkey_generate(CL_PKEY_P384, &key));
    /* Like Nitro: the leaf lives a few hours. */
    CL_GUARD(cl_sim_make_cert(s->module_id, key, s->inter, s->inter_key, -1, -60, CL_SIM_LEAF_LIFETIME, &leaf));
    CL_GUARD(cl_sim_der(leaf, &der, &len));
    X509_free(s->leaf);
    cl_pkey_free(s->leaf_key);
    free(s->leaf_der);
    s->leaf = leaf;
    s->leaf_key = key;
    s->leaf_der = der;
    s->leaf_len = len;
    s->leaf_not_after = now + CL_SIM_LEAF_LIFETIME;
    leaf = NULL;
    key = NULL;
out:
    X509_free(leaf);
    cl_pkey_free(key);
    return rc;
}

cl_err cl_attest_signer_refresh(cl_attest_signer *s)
{
    if (time(NULL) + CL_SIM_LEAF_RENEW_BEFORE < s->leaf_not_after)
        return CL_OK;
    return cl_sim_issue_leaf(s);
}

/* Takes ownership of root, inter and inter_key; issues the per-boot leaf. */
static cl_err cl_sim_signer_finish(X509 *root, X509 *inter, cl_pkey *inter_key, cl_attest_signer **out)
{
    cl_err rc = CL_OK;
    cl_attest_signer *s = calloc(1, sizeof(*s));
    if (!s) {
        X509_free(root);
        X509_free(inter);
        cl_pkey_free(inter_key);
        return CL_E_CORE_NOMEM;
    }
    s->root = root;
    s->inter = inter;
    s->inter_key = inter_key;
    uint8_t rnd[8];
    char hex[17];
    CL_GUARD(cl_random_bytes(rnd, sizeof(rnd)));
    cl_hex_encode(rnd, sizeof(rnd), hex);
    snprintf(s->module_id, sizeof(s->module_id), "i-cloistersim-enc%s", hex);
    CL_GUARD(cl_sim_issue_leaf(s));
    CL_GUARD(cl_sim_der(root, &s->root_der, &s->root_len));
    CL_GUARD(cl_sim_der(inter, &s->inter_der, &s->inter_len));
    /* Default: PCR0-15 present and zero (what a debug enclave reports). */
    s->pcr_present = 0xffff;
    *out = s;
    s = NULL;
out:
    cl_attest_signer_free(s);
    return rc;
}

cl_err cl_attest_signer_ephemeral(cl_attest_signer **out)
{
    cl_err rc = CL_OK;
    cl_pkey *rk = NULL, *ik = NULL;
    X509 *root = NULL, *inter = NULL;
    CL_GUARD(cl_sim_new_cas(&rk, &root, &ik, &inter));
    rc = cl_sim_signer_finish(root, inter, ik, out);
    root = inter = NULL;
    ik = NULL;
out:
    X509_free(root);
    X509_free(inter);
    cl_pkey_free(rk);
    cl_pkey_free(ik);
    return rc;
}

static cl_err cl_sim_read_cert(const char *dir, const char *file, X509 **out)
{
    cl_err rc = CL_OK;
    char path[4096];
    struct cl_buf b;
    BIO *bio = NULL;
    cl_buf_init(&b, 1 << 16, CL_BUF_NONE);
    CL_GUARD(cl_sim_path(dir, file, path, sizeof(path)));
    CL_GUARD(cl_file_read(path, 1 << 16, &b));
    bio = BIO_new_mem_buf(b.data, (int)b.len);
    CL_ENSURE(bio, CL_E_CORE_NOMEM);
    *out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (!*out)
        CL_FAIL(cl_ossl_fail(CL_E_ATTEST_SIM, "PEM"), "%s is not a PEM certificate", file);
out:
    BIO_free(bio);
    cl_buf_free(&b);
    return rc;
}

cl_err cl_attest_signer_load(const char *dir, cl_attest_signer **out)
{
    cl_err rc = CL_OK;
    X509 *root = NULL, *inter = NULL;
    cl_pkey *ik = NULL;
    char path[4096];
    struct stat st;
    struct cl_buf kb;
    cl_buf_init(&kb, 1 << 16, CL_BUF_SECURE);
    CL_GUARD(cl_sim_read_cert(dir, "root.pem", &root));
    CL_GUARD(cl_sim_read_cert(dir, "intermediate.pem", &inter));
    CL_GUARD(cl_sim_path(dir, "intermediate.key", path, sizeof(path)));
    if (stat(path, &st) != 0)
        CL_FAIL(cl_err_from_errno(errno, "stat"), "intermediate.key");
    CL_ENSURE_D((st.st_mode & 077) == 0, CL_E_CORE_INSECURE_FILE, "intermediate.key must be mode 0600");
    CL_GUARD(cl_file_read(path, 1 << 16, &kb));
    CL_GUARD(cl_pkey_parse(kb.data, kb.len, &ik));
    CL_ENSURE_D(cl_pkey_type(ik) == CL_PKEY_P384 && cl_pkey_is_private(ik), CL_E_ATTEST_SIM,
                "intermediate.key is not a P-384 private key");
    rc = cl_sim_signer_finish(root, inter, ik, out);
    root = inter = NULL;
    ik = NULL;
out:
    X509_free(root);
    X509_free(inter);
    cl_pkey_free(ik);
    cl_buf_free(&kb);
    return rc;
}

cl_err cl_attest_signer_root_der(const cl_attest_signer *s, struct cl_buf *out)
{
    return cl_buf_append(out, s->root_der, s->root_len);
}

void cl_attest_signer_set_pcrs(cl_attest_signer *s, uint32_t pcr_present,
                               const uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN])
{
    s->pcr_present = pcr_present;
    memcpy(s->pcr, pcr, sizeof(s->pcr));
}

cl_err cl_attest_signer_sign_at(const cl_attest_signer *s, uint64_t timestamp_ms, const uint8_t *public_key,
                                size_t pklen, const uint8_t *user_data, size_t udlen, const uint8_t *nonce,
                                size_t noncelen, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf payload;
    cl_buf_init(&payload, CL_ATTEST_MAX_PAYLOAD, CL_BUF_NONE);
    struct cl_attest_span bundle[2] = {{s->root_der, s->root_len}, {s->inter_der, s->inter_len}};
    struct cl_attest_fields f = {
        .module_id = s->module_id,
        .timestamp_ms = timestamp_ms,
        .pcr_present = s->pcr_present,
        .pcr = (const uint8_t(*)[CL_ATTEST_PCR_LEN])s->pcr,
        .certificate = {s->leaf_der, s->leaf_len},
        .cabundle = bundle,
        .ncabundle = 2,
        .public_key = {public_key, public_key ? pklen : 0},
        .user_data = {user_data, user_data ? udlen : 0},
        .nonce = {nonce, nonce ? noncelen : 0},
    };
    /* The NSM's documented request limits. */
    CL_ENSURE_D(f.public_key.len <= CL_ATTEST_MAX_PUBLIC_KEY, CL_E_ATTEST_FIELD_LIMIT, "public_key of %zu bytes",
                f.public_key.len);
    CL_ENSURE_D(f.user_data.len <= CL_ATTEST_MAX_USER_DATA, CL_E_ATTEST_FIELD_LIMIT, "user_data of %zu bytes",
                f.user_data.len);
    CL_ENSURE_D(f.nonce.len <= CL_ATTEST_MAX_NONCE, CL_E_ATTEST_FIELD_LIMIT, "nonce of %zu bytes", f.nonce.len);
    CL_GUARD(cl_attest_encode_payload(&f, &payload));
    CL_GUARD(cl_cose_sign1_sign_es384(s->leaf_key, payload.data, payload.len, false, out));
out:
    cl_buf_free(&payload);
    return rc;
}

cl_err cl_attest_signer_sign(const cl_attest_signer *s, const uint8_t *public_key, size_t pklen,
                             const uint8_t *user_data, size_t udlen, const uint8_t *nonce, size_t noncelen,
                             struct cl_buf *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return cl_attest_signer_sign_at(s, now, public_key, pklen, user_data, udlen, nonce, noncelen, out);
}
