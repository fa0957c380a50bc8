/* AWS Nitro Enclaves attestation documents: parse, verify, encode, and a
 * simulated signer (the stand-in for the Nitro hypervisor's PKI).
 *
 * A document is an untagged (or tagged) COSE_Sign1, ES384, protected header
 * exactly {1: -35}, whose payload is a CBOR map: module_id, digest
 * ("SHA384"), timestamp (ms since the epoch), pcrs {index: digest},
 * certificate (leaf, DER), cabundle [root, ..., issuer of the leaf] (DER),
 * and the optional public_key, user_data and nonce.
 *
 * Verification never trusts the document for its trust anchor: the root is
 * pinned by the caller and cabundle[0] must equal it byte for byte. Every
 * failed check returns its own error code (include/cloister/err/attest.def)
 * with a detail naming the field or certificate. */
#ifndef CLOISTER_ATTEST_H
#define CLOISTER_ATTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/cbor.h"
#include "cloister/cose.h"
#include "cloister/crypto.h"

#define CL_ATTEST_MAX_PCRS 32
#define CL_ATTEST_PCR_LEN 48 /* SHA-384 */
#define CL_ATTEST_MAX_PAYLOAD 16384
#define CL_ATTEST_MAX_DOC (CL_ATTEST_MAX_PAYLOAD + 1024)
/* Documented NSM limits: what Cloister itself requests and encodes. */
#define CL_ATTEST_MAX_USER_DATA 512
#define CL_ATTEST_MAX_NONCE 512
#define CL_ATTEST_MAX_PUBLIC_KEY 1024
/* What the verifier accepts in a document: genuine Nitro hardware has issued
 * documents with 1024-byte user_data and nonce (see the 2024 test documents),
 * above the documented 512, so verification caps all three at 1024. */
#define CL_ATTEST_MAX_DOC_FIELD 1024
#define CL_ATTEST_MAX_CABUNDLE 8
#define CL_ATTEST_MAX_CERT 4096
#define CL_ATTEST_MAX_MODULE_ID 256
/* Tolerated clock difference for timestamps ahead of the verifier. */
#define CL_ATTEST_CLOCK_SKEW_MS (60 * 1000)

struct cl_attest_span {
    const uint8_t *p;
    size_t len;
};

/* A parsed (not yet verified) document. Owns a copy of the input. */
struct cl_attest_doc {
    uint8_t *raw;
    size_t raw_len;
    struct cl_cose_sign1 cose;
    cl_cbor_doc *payload_doc;
    struct cl_attest_span module_id;
    uint64_t timestamp_ms;
    uint32_t pcr_present; /* bit i set when PCR i is in the document */
    struct cl_attest_span pcr[CL_ATTEST_MAX_PCRS];
    size_t npcrs;
    struct cl_attest_span certificate;
    struct cl_attest_span cabundle[CL_ATTEST_MAX_CABUNDLE];
    size_t ncabundle;
    /* Absent, null and empty all read as len 0. */
    struct cl_attest_span public_key, user_data, nonce;
};

/* Parses a raw CBOR document and checks its structure and field limits. */
CL_MUST_CHECK cl_err cl_attest_parse(const uint8_t *p, size_t n, struct cl_attest_doc *out);
void cl_attest_doc_free(struct cl_attest_doc *d);
/* True when PCR0, PCR1 and PCR2 are all zero (debug-mode enclave). */
bool cl_attest_is_debug(const struct cl_attest_doc *d);

struct cl_attest_pcr_expect {
    unsigned index;
    uint8_t value[CL_ATTEST_PCR_LEN];
};

struct cl_attest_policy {
    const uint8_t *root_der; /* pinned root certificate, DER */
    size_t root_len;
    int64_t at_ms;           /* verification time in ms since the epoch; 0 = now */
    const struct cl_attest_pcr_expect *pcrs;
    size_t npcrs;
    bool allow_any_pcr;      /* required to accept an empty PCR expectation */
    bool allow_debug;
    bool check_nonce;
    struct cl_attest_span nonce;
    uint64_t max_age_ms;     /* 0 = no freshness check */
    bool check_public_key;
    struct cl_attest_span public_key;
    bool check_user_data;
    struct cl_attest_span user_data;
};

/* Chain, signature and policy checks on a parsed document, in this order:
 * root pin, each certificate (parse, issuer signature, CA flags, key usage,
 * path length, validity at at_ms), the leaf's ES384 signature, debug mode,
 * PCRs, nonce, freshness, public_key, user_data. */
CL_MUST_CHECK cl_err cl_attest_verify(const struct cl_attest_doc *d, const struct cl_attest_policy *pol);
/* Parse + verify in one call. */
CL_MUST_CHECK cl_err cl_attest_verify_bytes(const uint8_t *p, size_t n, const struct cl_attest_policy *pol);

/* Reads a document given as raw CBOR or as standard base64 (surrounding
 * whitespace ignored), detected from the first byte. */
CL_MUST_CHECK cl_err cl_attest_decode_input(const uint8_t *p, size_t n, struct cl_buf *raw);
/* PEM or DER certificate to DER. */
CL_MUST_CHECK cl_err cl_attest_cert_to_der(const uint8_t *p, size_t n, struct cl_buf *der);
/* notBefore / notAfter of a DER certificate, seconds since the epoch. */
CL_MUST_CHECK cl_err cl_attest_cert_validity(const uint8_t *der, size_t n, int64_t *not_before, int64_t *not_after);

/* ---- encoding ---- */

struct cl_attest_fields {
    const char *module_id;
    uint64_t timestamp_ms;
    uint32_t pcr_present;
    const uint8_t (*pcr)[CL_ATTEST_PCR_LEN]; /* CL_ATTEST_MAX_PCRS entries, used where present */
    struct cl_attest_span certificate;
    const struct cl_attest_span *cabundle;
    size_t ncabundle;
    struct cl_attest_span public_key, user_data, nonce; /* len 0 = encoded as null */
};

/* The payload map, deterministic CBOR. */
CL_MUST_CHECK cl_err cl_attest_encode_payload(const struct cl_attest_fields *f, struct cl_buf *out);

/* ---- simulated signer (cloister-sim) ---- */

/* Root and intermediate P-384 CAs plus a leaf made fresh per signer
 * instance (one per enclave boot). */
typedef struct cl_attest_signer cl_attest_signer;

/* Writes root.pem, root.key, intermediate.pem, intermediate.key into dir
 * (created 0700 if missing; keys 0600). Fails if the files exist. */
CL_MUST_CHECK cl_err cl_attest_sim_init(const char *dir);
/* Loads dir's CAs and issues a fresh leaf valid for 3 hours. The signer
 * keeps the intermediate key (to renew the leaf): only the process playing
 * the hypervisor holds it. */
CL_MUST_CHECK cl_err cl_attest_signer_load(const char *dir, cl_attest_signer **out);
/* Same with CAs that exist only in memory (tests). */
CL_MUST_CHECK cl_err cl_attest_signer_ephemeral(cl_attest_signer **out);
void cl_attest_signer_free(cl_attest_signer *s);
/* Issues a new leaf (same module_id) when the current one has less than an
 * hour left, so a long-running enclave keeps producing valid documents. */
CL_MUST_CHECK cl_err cl_attest_signer_refresh(cl_attest_signer *s);
/* Pinned root certificate, DER. */
CL_MUST_CHECK cl_err cl_attest_signer_root_der(const cl_attest_signer *s, struct cl_buf *out);
/* Sets the PCRs the signer reports (debug zeroes PCR0-2 on its own terms:
 * the caller passes zeros). pcr_present selects entries of pcr. */
void cl_attest_signer_set_pcrs(cl_attest_signer *s, uint32_t pcr_present,
                               const uint8_t pcr[CL_ATTEST_MAX_PCRS][CL_ATTEST_PCR_LEN]);
/* A signed document (untagged COSE_Sign1) over the signer's PCRs and the
 * given optional fields (NULL/0 = absent), timestamped now. */
CL_MUST_CHECK cl_err cl_attest_signer_sign(const cl_attest_signer *s, const uint8_t *public_key, size_t pklen,
                                           const uint8_t *user_data, size_t udlen, const uint8_t *nonce,
                                           size_t noncelen, struct cl_buf *out);
/* Same with an explicit timestamp (tests of freshness). */
CL_MUST_CHECK cl_err cl_attest_signer_sign_at(const cl_attest_signer *s, uint64_t timestamp_ms,
                                              const uint8_t *public_key, size_t pklen, const uint8_t *user_data,
                                              size_t udlen, const uint8_t *nonce, size_t noncelen,
                                              struct cl_buf *out);

/* ---- cloister-sim enclave images (docs/formats/enclave-image.md) ---- */

#define CL_SIM_IMAGE_MAGIC "CLSIMG\0\1"
#define CL_SIM_IMAGE_MAGIC_LEN 8
#define CL_SIM_IMAGE_MAX_SECTION (64 * 1024)
#define CL_SIM_IMAGE_MAX_APP ((uint64_t)256 << 20)
#define CL_SIM_IMAGE_MAX (CL_SIM_IMAGE_MAX_APP + 2 * CL_SIM_IMAGE_MAX_SECTION + 64)

#define CL_SIM_IMAGE_MAX_ARGS 16

struct cl_sim_image {
    struct cl_attest_span config; /* "key=value\n" lines */
    struct cl_attest_span kernel; /* the sandbox profile the image was built for */
    struct cl_attest_span app;    /* ELF shared object exporting cloister_enclave_main */
    char name[64];
    uint64_t memory_mib;          /* 0 = not set */
    uint64_t cpus;                /* 0 = not set */
    /* The application's arguments, fixed at pack time and so measured in
     * PCR0 ("arg" lines, in order): the host cannot choose them at run time. */
    char args[CL_SIM_IMAGE_MAX_ARGS][64];
    unsigned n_args;
};

/* Parses an image held in memory (the spans point into it). */
CL_MUST_CHECK cl_err cl_sim_image_parse(const uint8_t *p, size_t n, struct cl_sim_image *out);
/* Builds an image: config from name/memory/cpus/args, the given kernel profile and app. */
CL_MUST_CHECK cl_err cl_sim_image_build(const char *name, uint64_t memory_mib, uint64_t cpus,
                                        const char *const *args, unsigned n_args, const char *kernel,
                                        const uint8_t *app, size_t applen, struct cl_buf *out);
/* Nitro-style measurements: PCRn = SHA-384(48 zero bytes || SHA-384(data)),
 * data = the whole image for PCR0, the kernel section for PCR1, the app for PCR2. */
CL_MUST_CHECK cl_err cl_sim_image_measure(const uint8_t *p, size_t n, uint8_t pcr[3][CL_ATTEST_PCR_LEN]);

#endif
