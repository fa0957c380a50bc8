/* AWS Signature Version 4: canonicaliser, signer, Authorization header parser
 * and verifier. Shared by cloister-kms (verifies) and Cloister's own clients
 * (signs). Lives in cl_aws, which links no server and no client code. */
#ifndef CLOISTER_SIGV4_H
#define CLOISTER_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

#define CL_SIGV4_ALG "AWS4-HMAC-SHA256"
#define CL_SIGV4_DATE_LEN 16       /* 20150830T123600Z */
#define CL_SIGV4_SIG_HEX_LEN 64
#define CL_SIGV4_MAX_HEADERS 64
#define CL_SIGV4_MAX_AUTHZ 2048    /* bytes of Authorization header we accept */
#define CL_SIGV4_MAX_FIELD 128     /* access key, region, service */
#define CL_SIGV4_MAX_SIGNED_HEADERS 1024
#define CL_SIGV4_DEFAULT_SKEW_S 300

/* One header line as received. Duplicate names are allowed; their values are
 * joined with ',' in order of appearance, as SigV4 specifies. */
struct cl_sigv4_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct cl_sigv4_request {
    const char *method;
    const char *path;  /* raw, not yet URI-encoded; "" means "/" */
    const char *query; /* after '?', may be NULL or "" */
    const struct cl_sigv4_header *headers;
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    bool no_path_normalize; /* S3-style: keep '.', '..' and '//' */
};

/* Canonical request. signed_headers is a ';'-separated lower-case list
 * ("host;x-amz-date"); NULL signs every header in the request. The list
 * actually used is appended to signed_out when given. */
CL_MUST_CHECK cl_err cl_sigv4_canonical_request(const struct cl_sigv4_request *r, const char *signed_headers,
                                                struct cl_buf *creq, struct cl_buf *signed_out);
/* "AWS4-HMAC-SHA256\n<date>\n<scope>\n<hex sha256(creq)>". */
CL_MUST_CHECK cl_err cl_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                                             const uint8_t *creq, size_t creq_len, struct cl_buf *sts);
/* Hex signature of sts under the derived key for date/region/service. */
CL_MUST_CHECK cl_err cl_sigv4_signature(const char *secret, size_t secret_len, const char *amz_date,
                                        const char *region, const char *service, const uint8_t *sts,
                                        size_t sts_len, char out_hex[CL_SIGV4_SIG_HEX_LEN + 1]);

struct cl_sigv4_credentials {
    const char *access_key;
    const char *secret; /* never logged */
    const char *session_token; /* optional, sent as X-Amz-Security-Token */
};

/* Signs r and writes the Authorization header value into authz. r must
 * already carry the X-Amz-Date (and Host) headers it is signed over. */
CL_MUST_CHECK cl_err cl_sigv4_sign(const struct cl_sigv4_request *r, const struct cl_sigv4_credentials *cred,
                                   const char *amz_date, const char *region, const char *service,
                                   struct cl_buf *authz);

/* Parsed Authorization header. */
struct cl_sigv4_authz {
    char access_key[CL_SIGV4_MAX_FIELD + 1];
    char date[9];
    char region[CL_SIGV4_MAX_FIELD + 1];
    char service[CL_SIGV4_MAX_FIELD + 1];
    char signed_headers[CL_SIGV4_MAX_SIGNED_HEADERS + 1];
    char signature[CL_SIGV4_SIG_HEX_LEN + 1];
};
/* Strict, bounded parser: CL_E_NET_SIGV4_MALFORMED with the failing part. */
CL_MUST_CHECK cl_err cl_sigv4_parse_authz(const char *s, size_t n, struct cl_sigv4_authz *out);

/* "YYYYMMDDTHHMMSSZ" -> seconds since the epoch (UTC). */
CL_MUST_CHECK cl_err cl_sigv4_parse_date(const char *s, size_t n, int64_t *out);
void cl_sigv4_format_date(int64_t t, char out[CL_SIGV4_DATE_LEN + 1]);

/* Checks a request signed with a parsed header: credential scope matches
 * region/service and the X-Amz-Date day, the date is within skew_s of now,
 * 'host' is signed, any X-Amz-Content-Sha256 equals the body hash, and the
 * signature matches (constant-time). Errors: NET_SIGV4_MALFORMED,
 * NET_SIGV4_SCOPE, NET_SIGV4_EXPIRED, NET_SIGV4_MISMATCH. */
CL_MUST_CHECK cl_err cl_sigv4_verify(const struct cl_sigv4_request *r, const struct cl_sigv4_authz *a,
                                     const char *secret, size_t secret_len, const char *region,
                                     const char *service, int64_t now, int64_t skew_s);

/* Finds a header (case-insensitive); NULL when absent. */
const struct cl_sigv4_header *cl_sigv4_find_header(const struct cl_sigv4_request *r, const char *name);

#endif
