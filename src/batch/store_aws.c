/* Scale-out backends of the batch pipeline (docs/batch.md): S3 REST for
 * objects, SQS (JSON protocol) for the queue, DynamoDB (JSON 1.0) for results
 * and receipts. All through libcurl and the SigV4 signer; credentials from the
 * usual AWS variables and files, the region from AWS_REGION. Every response is
 * read into a capped buffer and parsed strictly; errors name the service, the
 * operation, the HTTP status and the AWS error code, never a payload. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/kms_client.h"
#include "cloister/log.h"
#include "cloister/secmem.h"
#include "cloister/sigv4.h"
#include "store_aws.h"

#define CL_AWS_URL_MAX 512
#define CL_AWS_JSON_RESPONSE_MAX (8u * 1024 * 1024)
#define CL_AWS_SMALL_RESPONSE_MAX (64u * 1024)
#define CL_AWS_CODE_MAX 64
#define CL_DDB_ITEM_MAX (400u * 1024) /* DynamoDB's item size limit */
#define CL_DDB_SCAN_ITEMS_MAX 1000000u
#define CL_SQS_DEAD_FIND_ROUNDS 10

/* ---------------- one signed HTTP exchange ---------------- */

struct cl_aws_svc {
    const char *label;   /* "S3", "SQS", "DynamoDB": named in errors */
    const char *signing; /* SigV4 service name */
    char base[CL_AWS_URL_MAX];  /* scheme://host[:port], no trailing '/' */
    char host[300];
    char region[64];
    struct cl_kmsc_credentials *cred; /* cl_secmem memory */
    CURL *curl;                       /* reused: keeps the connection */
};

struct cl_aws_resp {
    long status;
    struct cl_buf body;
    uint64_t content_length; /* HEAD */
    bool over;               /* the body hit its cap */
};

static size_t cl_aws_write(char *p, size_t sz, size_t nm, void *arg)
{
    struct cl_aws_resp *r = arg;
    size_t n = sz * nm;
    if (cl_buf_append(&r->body, p, n) != CL_OK) {
        r->over = true;
        return 0;
    }
    return n;
}

static bool cl_aws_endpoint_valid(const char *u)
{
    if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
        return false;
    const char *h = strstr(u, "://") + 3;
    size_t hl = strcspn(h, "/?#");
    if (hl == 0 || hl >= 300 || memchr(h, '@', hl))
        return false;
    /* A path other than "/" would change what is signed. */
    return h[hl] == 0 || (h[hl] == '/' && h[hl + 1] == 0);
}

/* Splits "scheme://NAME[/REST][?endpoint=URL]" after the scheme: name_rest
 * receives NAME[/REST], endpoint the URL or "". */
static cl_err cl_aws_split_url(const char *url, const char *scheme, char *name_rest, size_t cap, char *endpoint)
{
    size_t sl = strlen(scheme);
    if (strncmp(url, scheme, sl) != 0)
        return cl_err_fail(CL_E_STORE_URL, "expected %s...", scheme);
    const char *p = url + sl;
    const char *q = strchr(p, '?');
    size_t nl = q ? (size_t)(q - p) : strlen(p);
    if (nl == 0 || nl >= cap)
        return cl_err_fail(CL_E_STORE_URL, "%s URL: name of 1..%zu bytes", scheme, cap - 1);
    memcpy(name_rest, p, nl);
    name_rest[nl] = 0;
    endpoint[0] = 0;
    if (q) {
        if (strncmp(q + 1, "endpoint=", 9) != 0)
            return cl_err_fail(CL_E_STORE_URL, "%s URL: the only parameter is endpoint=URL", scheme);
        const char *e = q + 10;
        if (strlen(e) >= CL_AWS_URL_MAX || strchr(e, '&') || !cl_aws_endpoint_valid(e))
            return cl_err_fail(CL_E_STORE_URL,
                               "%s URL: endpoint must be http(s)://HOST[:PORT] with no user info, path or other parameter",
                               scheme);
        memcpy(endpoint, e, strlen(e) + 1);
    }
    return CL_OK;
}

static void cl_aws_svc_free(struct cl_aws_svc *s)
{
    if (s->cred) {
        cl_kmsc_credentials_wipe(s->cred);
        cl_secmem_free(s->cred);
        s->cred = NULL;
    }
    if (s->curl)
        curl_easy_cleanup(s->curl);
    s->curl = NULL;
}

static cl_err cl_aws_svc_init(struct cl_aws_svc *s, const char *label, const char *signing, const char *endpoint)
{
    cl_err rc = CL_OK;
    void *mem = NULL;
    s->label = label;
    s->signing = signing;
    CL_GUARD(cl_secmem_alloc(sizeof(*s->cred), &mem));
    s->cred = mem;
    CL_GUARD(cl_kmsc_credentials_load(s->cred));
    s->region[0] = 0;
    CL_GUARD(cl_kmsc_region_load(s->region, sizeof(s->region)));
    CL_ENSURE_D(s->region[0], CL_E_NET_CREDENTIALS, "%s: no region (set AWS_REGION)", label);
    if (endpoint[0])
        snprintf(s->base, sizeof(s->base), "%s", endpoint);
    else
        snprintf(s->base, sizeof(s->base), "https://%s.%s.amazonaws.com", signing, s->region);
    size_t bl = strlen(s->base);
    if (bl && s->base[bl - 1] == '/')
        s->base[bl - 1] = 0;
    const char *h = strstr(s->base, "://") + 3;
    snprintf(s->host, sizeof(s->host), "%s", h);
    s->curl = curl_easy_init();
    CL_ENSURE_D(s->curl, CL_E_STORE_INTERNAL, "curl init");
out:
    if (rc)
        cl_aws_svc_free(s);
    return rc;
}

static bool cl_aws_code_char(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-'; }

/* The AWS error code of a failed response: JSON "__type" (after '#') or
 * "code", or S3's XML <Code>; only [A-Za-z0-9._:-], else "?". */
static void cl_aws_error_code(const struct cl_buf *b, char out[CL_AWS_CODE_MAX + 1])
{
    snprintf(out, CL_AWS_CODE_MAX + 1, "?");
    const char *v = NULL;
    size_t vl = 0;
    json_t *j = b->len ? json_loadb((const char *)b->data, b->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (j && json_is_object(j)) {
        json_t *t = json_object_get(j, "__type");
        if (!json_is_string(t))
            t = json_object_get(j, "code");
        if (json_is_string(t)) {
            v = json_string_value(t);
            const char *hash = strrchr(v, '#');
            if (hash)
                v = hash + 1;
            vl = strlen(v);
        }
    } else if (b->len) {
        const char *s = (const char *)b->data;
        for (size_t i = 0; i + 6 <= b->len; i++)
            if (!memcmp(s + i, "<Code>", 6)) {
                v = s + i + 6;
                while (i + 6 + vl < b->len && v[vl] != '<')
                    vl++;
                break;
            }
    }
    if (v && vl > 0 && vl <= CL_AWS_CODE_MAX) {
        bool ok = true;
        for (size_t i = 0; i < vl; i++)
            ok = ok && cl_aws_code_char(v[i]);
        if (ok) {
            memcpy(out, v, vl);
            out[vl] = 0;
        }
    }
    json_decref(j);
}

static bool cl_aws_code_transient(const char *code)
{
    static const char *const t[] = {"ThrottlingException", "Throttling", "ProvisionedThroughputExceededException",
                                    "RequestLimitExceeded", "SlowDown", "RequestThrottled", "ServiceUnavailable",
                                    "InternalError", "InternalFailure", "RequestTimeout", "TooManyRequestsException",
                                    "ThrottledException", "LimitExceededException"};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (!strcmp(code, t[i]) || (strlen(code) > strlen(t[i]) && !strcmp(code + strlen(code) - strlen(t[i]), t[i]) &&
                                    code[strlen(code) - strlen(t[i]) - 1] == '.'))
            return true;
    return false;
}

/* A non-2xx answer as an error: transient (5xx, 429, throttling) or a refusal. */
static cl_err cl_aws_status_err(const struct cl_aws_svc *s, const char *op, const struct cl_aws_resp *r)
{
    char code[CL_AWS_CODE_MAX + 1];
    cl_aws_error_code(&r->body, code);
    bool transient = r->status >= 500 || r->status == 429 || cl_aws_code_transient(code);
    return cl_err_fail(transient ? CL_E_STORE_UNAVAILABLE : CL_E_STORE_REFUSED, "%s %s: HTTP %ld %s", s->label, op,
                       r->status, code);
}

/* One request. path is sent and signed as is (callers pass only unreserved
 * characters and '/'). Transport failures are CL_E_STORE_UNAVAILABLE; the
 * status is left to the caller. */
static cl_err cl_aws_request(struct cl_aws_svc *s, const char *op, const char *method, const char *path,
                             const char *target, const char *ctype, const uint8_t *body, size_t n,
                             struct cl_aws_resp *r)
{
    cl_err rc = CL_OK;
    char url[CL_AWS_URL_MAX + 512], date[CL_SIGV4_DATE_LEN + 1], sha_hex[65];
    uint8_t sha[CL_SHA256_LEN];
    struct cl_buf authz, line;
    struct curl_slist *hl = NULL;
    cl_buf_init(&authz, 4096, CL_BUF_NONE);
    cl_buf_init(&line, 8192, CL_BUF_NONE);
    r->status = 0;
    r->over = false;
    r->content_length = 0;
    r->body.len = 0;
    CL_ENSURE_D(strlen(path) < 512, CL_E_STORE_URL, "%s %s: path too long", s->label, op);
    snprintf(url, sizeof(url), "%s%s", s->base, path);
    cl_sigv4_format_date((int64_t)time(NULL), date);
    CL_GUARD(cl_sha256(body ? body : (const uint8_t *)"", n, sha));
    cl_hex_encode(sha, sizeof(sha), sha_hex);
    struct cl_sigv4_header h[6];
    size_t nh = 0;
    h[nh++] = (struct cl_sigv4_header){"Host", 4, s->host, strlen(s->host)};
    h[nh++] = (struct cl_sigv4_header){"X-Amz-Date", 10, date, CL_SIGV4_DATE_LEN};
    h[nh++] = (struct cl_sigv4_header){"X-Amz-Content-Sha256", 20, sha_hex, 64};
    if (ctype)
        h[nh++] = (struct cl_sigv4_header){"Content-Type", 12, ctype, strlen(ctype)};
    if (target)
        h[nh++] = (struct cl_sigv4_header){"X-Amz-Target", 12, target, strlen(target)};
    if (s->cred->session_token[0])
        h[nh++] = (struct cl_sigv4_header){"X-Amz-Security-Token", 20, s->cred->session_token,
                                           strlen(s->cred->session_token)};
    struct cl_sigv4_request sr = {.method = method, .path = path, .query = "", .headers = h, .n_headers = nh,
                                  .body = body, .body_len = n, .no_path_normalize = true};
    struct cl_sigv4_credentials sc = {s->cred->access_key, s->cred->secret, NULL};
    CL_GUARD(cl_sigv4_sign(&sr, &sc, date, s->region, s->signing, &authz));
    for (size_t i = 0; i <= nh; i++) {
        line.len = 0;
        if (i < nh)
            CL_GUARD(cl_buf_appendf(&line, "%s: %.*s", h[i].name, (int)h[i].value_len, h[i].value));
        else
            CL_GUARD(cl_buf_appendf(&line, "Authorization: %.*s", (int)authz.len, (const char *)authz.data));
        CL_GUARD(cl_buf_append_u8(&line, 0));
        struct curl_slist *nl = curl_slist_append(hl, (const char *)line.data);
        CL_ENSURE(nl, CL_E_CORE_NOMEM);
        hl = nl;
    }
    struct curl_slist *nl = curl_slist_append(hl, "Expect:");
    CL_ENSURE(nl, CL_E_CORE_NOMEM);
    hl = nl;
    CURL *c = s->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, cl_aws_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    const char *ca = getenv("AWS_CA_BUNDLE");
    if (ca && *ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body || !strcmp(method, "PUT") || !strcmp(method, "POST")) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        }
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_WRITE_ERROR && r->over)
        CL_FAIL(CL_E_STORE_TOO_LARGE, "%s %s: response over %zu bytes", s->label, op, r->body.max);
    CL_ENSURE_D(cc == CURLE_OK, CL_E_STORE_UNAVAILABLE, "%s %s: %s", s->label, op, curl_easy_strerror(cc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_off_t cl = -1;
    curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    r->content_length = cl > 0 ? (uint64_t)cl : 0;
out:
    curl_slist_free_all(hl);
    cl_buf_free(&authz);
    cl_buf_free(&line);
    return rc;
}

/* JSON protocols (SQS, DynamoDB): POST / with X-Amz-Target; *out is the
 * parsed object of a 200 answer (an empty body counts as {}). */
static cl_err cl_aws_json_call(struct cl_aws_svc *s, const char *prefix, const char *op, json_t *req, size_t max,
                               json_t **out)
{
    cl_err rc = CL_OK;
    char target[128];
    char *body = NULL;
    struct cl_aws_resp r;
    json_t *j = NULL;
    cl_buf_init(&r.body, max, CL_BUF_NONE);
    *out = NULL;
    body = json_dumps(req, JSON_COMPACT);
    CL_ENSURE(body, CL_E_CORE_NOMEM);
    snprintf(target, sizeof(target), "%s.%s", prefix, op);
    CL_GUARD(cl_aws_request(s, op, "POST", "/", target, "application/x-amz-json-1.0", (const uint8_t *)body,
                            strlen(body), &r));
    if (r.status != 200)
        CL_GUARD(cl_aws_status_err(s, op, &r));
    if (r.body.len == 0) {
        j = json_object();
        CL_ENSURE(j, CL_E_CORE_NOMEM);
    } else {
        json_error_t je;
        j = json_loadb((const char *)r.body.data, r.body.len, JSON_REJECT_DUPLICATES, &je);
        CL_ENSURE_D(j && json_is_object(j), CL_E_STORE_RESPONSE, "%s %s: answer is not a JSON object", s->label, op);
    }
    *out = j;
    j = NULL;
out:
    json_decref(j);
    free(body);
    cl_buf_free(&r.body);
    return rc;
}

/* The code of the error that cl_aws_json_call raised, for the callers that
 * treat one code as an answer (ConditionalCheckFailed). */
static bool cl_aws_last_code_is(const char *code)
{
    const char *d = cl_err_detail();
    if (!d)
        return false;
    size_t dl = strlen(d), cl = strlen(code);
    return dl > cl && !strcmp(d + dl - cl, code) && d[dl - cl - 1] == ' ';
}

/* ---------------- S3: s3://BUCKET[/PREFIX][?endpoint=URL] ---------------- */

struct cl_bstore_s3 {
    struct cl_aws_svc svc;
    char bucket[64];
    char prefix[257]; /* "" or "a/b/" */
};

static bool cl_s3_bucket_valid(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || b[0] == '.' || b[0] == '-' || b[n - 1] == '.' || b[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '.' || b[i] == '-'))
            return false;
    return true;
}

static bool cl_s3_prefix_valid(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 255 || p[0] == '/' || p[0] == '.' || strstr(p, "//") || strstr(p, "/."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)p[i]) || p[i] == '.' || p[i] == '_' || p[i] == '-' || p[i] == '/'))
            return false;
    return true;
}

cl_err cl_bstore_s3_open(const char *url, struct cl_bstore_s3 **out)
{
    cl_err rc = CL_OK;
    char rest[400], ep[CL_AWS_URL_MAX];
    struct cl_bstore_s3 *s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    CL_GUARD(cl_aws_split_url(url, "s3://", rest, sizeof(rest), ep));
    char *slash = strchr(rest, '/');
    if (slash) {
        *slash = 0;
        char *pre = slash + 1;
        size_t pl = strlen(pre);
        if (pl && pre[pl - 1] == '/')
            pre[--pl] = 0;
        if (pl) {
            CL_ENSURE_D(cl_s3_prefix_valid(pre), CL_E_STORE_URL,
                        "s3:// prefix: 1..255 of A-Z a-z 0-9 . _ - /, no leading '/' or '.', no '//'");
            memcpy(s->prefix, pre, pl); /* pl <= 255: checked above */
            s->prefix[pl] = '/';
            s->prefix[pl + 1] = 0;
        }
    }
    CL_ENSURE_D(cl_s3_bucket_valid(rest), CL_E_STORE_URL, "s3:// bucket: 3..63 of a-z 0-9 . -");
    memcpy(s->bucket, rest, strlen(rest) + 1); /* at most 63 bytes: checked above */
    CL_GUARD(cl_aws_svc_init(&s->svc, "S3", "s3", ep));
    *out = s;
    s = NULL;
out:
    free(s);
    return rc;
}

void cl_bstore_s3_close(struct cl_bstore_s3 *s)
{
    if (!s)
        return;
    cl_aws_svc_free(&s->svc);
    free(s);
}

static cl_err cl_s3_path(const struct cl_bstore_s3 *s, const char *name, char *path, size_t cap)
{
    if (!cl_bstore_name_valid(name))
        return cl_err_fail(CL_E_STORE_URL, "object name: 1..128 of A-Z a-z 0-9 . _ -");
    snprintf(path, cap, "/%s/%s%s", s->bucket, s->prefix, name);
    return CL_OK;
}

cl_err cl_bstore_s3_put(struct cl_bstore_s3 *s, const char *name, const uint8_t *p, size_t n)
{
    cl_err rc = CL_OK;
    char path[512];
    struct cl_aws_resp r;
    cl_buf_init(&r.body, CL_AWS_SMALL_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_s3_path(s, name, path, sizeof(path)));
    /* S3 stores an object whole or not at all: no half-written object. */
    CL_GUARD(cl_aws_request(&s->svc, "PutObject", "PUT", path, NULL, "application/octet-stream", p, n, &r));
    if (r.status != 200)
        CL_GUARD(cl_aws_status_err(&s->svc, "PutObject", &r));
out:
    cl_buf_free(&r.body);
    return rc;
}

cl_err cl_bstore_s3_get(struct cl_bstore_s3 *s, const char *name, size_t max, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    char path[512];
    struct cl_aws_resp r;
    uint8_t *dst = NULL;
    cl_buf_init(&r.body, max, CL_BUF_NONE);
    CL_GUARD(cl_s3_path(s, name, path, sizeof(path)));
    rc = cl_aws_request(&s->svc, "GetObject", "GET", path, NULL, NULL, NULL, 0, &r);
    if (rc == CL_E_STORE_TOO_LARGE)
        CL_FAIL(CL_E_STORE_TOO_LARGE, "S3 GetObject: object %s is over %zu bytes", name, max);
    CL_GUARD(rc);
    if (r.status == 404)
        CL_FAIL(CL_E_STORE_NOT_FOUND, "S3 object %s", name);
    if (r.status != 200)
        CL_GUARD(cl_aws_status_err(&s->svc, "GetObject", &r));
    CL_ENSURE_D(r.content_length == 0 || r.content_length == r.body.len, CL_E_STORE_RESPONSE,
                "S3 GetObject: body of %zu bytes, Content-Length %llu", r.body.len,
                (unsigned long long)r.content_length);
    out->len = 0;
    CL_GUARD(cl_buf_extend(out, r.body.len, &dst));
    if (r.body.len)
        memcpy(dst, r.body.data, r.body.len);
out:
    cl_buf_free(&r.body);
    return rc;
}

cl_err cl_bstore_s3_head(struct cl_bstore_s3 *s, const char *name, uint64_t *size)
{
    cl_err rc = CL_OK;
    char path[512];
    struct cl_aws_resp r;
    cl_buf_init(&r.body, CL_AWS_SMALL_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_s3_path(s, name, path, sizeof(path)));
    CL_GUARD(cl_aws_request(&s->svc, "HeadObject", "HEAD", path, NULL, NULL, NULL, 0, &r));
    if (r.status == 404)
        CL_FAIL(CL_E_STORE_NOT_FOUND, "S3 object %s", name);
    if (r.status != 200)
        CL_GUARD(cl_aws_status_err(&s->svc, "HeadObject", &r));
    *size = r.content_length;
out:
    cl_buf_free(&r.body);
    return rc;
}

cl_err cl_bstore_s3_delete(struct cl_bstore_s3 *s, const char *name)
{
    cl_err rc = CL_OK;
    char path[512];
    struct cl_aws_resp r;
    cl_buf_init(&r.body, CL_AWS_SMALL_RESPONSE_MAX, CL_BUF_NONE);
    CL_GUARD(cl_s3_path(s, name, path, sizeof(path)));
    CL_GUARD(cl_aws_request(&s->svc, "DeleteObject", "DELETE", path, NULL, NULL, NULL, 0, &r));
    if (r.status != 204 && r.status != 200 && r.status != 404)
        CL_GUARD(cl_aws_status_err(&s->svc, "DeleteObject", &r));
out:
    cl_buf_free(&r.body);
    return rc;
}

/* ---------------- queue messages: Cloister's own and S3 events ---------------- */

static int cl_msg_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* S3 event keys are form-encoded: '+' is a space, %XX a byte. */
static cl_err cl_msg_url_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n)
                return cl_err_fail(CL_E_STORE_MESSAGE, "S3 event: key has a truncated %%-escape");
            int hi = cl_msg_hex(in[i + 1]), lo = cl_msg_hex(in[i + 2]);
            if (hi < 0 || lo < 0)
                return cl_err_fail(CL_E_STORE_MESSAGE, "S3 event: key has an invalid %%-escape");
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0 || o + 1 >= cap)
            return cl_err_fail(CL_E_STORE_MESSAGE, "S3 event: key has a NUL byte or is over %zu bytes", cap - 1);
        out[o++] = c;
    }
    out[o] = 0;
    return CL_OK;
}

static bool cl_msg_only_members(json_t *o, const char *const *names, size_t n)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < n; i++)
            known = known || !strcmp(k, names[i]);
        if (!known)
            return false;
    }
    return true;
}

static cl_err cl_msg_s3_event(json_t *j, struct cl_bstore_msg *m, bool *use)
{
    cl_err rc = CL_OK;
    char key[1025];
    json_t *recs = json_object_get(j, "Records");
    CL_ENSURE_D(json_is_array(recs), CL_E_STORE_MESSAGE, "S3 event: Records is not an array");
    CL_ENSURE_D(json_array_size(recs) == 1, CL_E_STORE_MESSAGE, "S3 event: %zu records, expected 1",
                json_array_size(recs));
    json_t *rec = json_array_get(recs, 0);
    CL_ENSURE_D(json_is_object(rec), CL_E_STORE_MESSAGE, "S3 event: record is not an object");
    const char *src = json_string_value(json_object_get(rec, "eventSource"));
    const char *name = json_string_value(json_object_get(rec, "eventName"));
    CL_ENSURE_D(src && !strcmp(src, "aws:s3"), CL_E_STORE_MESSAGE, "S3 event: eventSource is not aws:s3");
    CL_ENSURE_D(name, CL_E_STORE_MESSAGE, "S3 event: no eventName");
    json_t *s3 = json_object_get(rec, "s3");
    json_t *obj = json_is_object(s3) ? json_object_get(s3, "object") : NULL;
    json_t *k = json_is_object(obj) ? json_object_get(obj, "key") : NULL;
    CL_ENSURE_D(json_is_string(k), CL_E_STORE_MESSAGE, "S3 event: no s3.object.key");
    if (strncmp(name, "ObjectCreated:", 14) != 0) {
        *use = false; /* a removal or another event: nothing to run */
        goto out;
    }
    CL_GUARD(cl_msg_url_decode(json_string_value(k), json_string_length(k), key, sizeof(key)));
    const char *base = strrchr(key, '/');
    base = base ? base + 1 : key;
    size_t bl = strlen(base);
    if (bl <= 4 || strcmp(base + bl - 4, ".job") != 0 || !cl_bstore_name_valid(base)) {
        *use = false; /* not a job object (a result, a stray upload) */
        goto out;
    }
    memcpy(m->object, base, bl + 1);
    memcpy(m->job_id, base, bl - 4);
    m->job_id[bl - 4] = 0;
    CL_ENSURE_D(cl_bstore_name_valid(m->job_id), CL_E_STORE_MESSAGE, "S3 event: job id in the key");
    *use = true;
out:
    return rc;
}

cl_err cl_bstore_msg_parse(const char *body, size_t n, struct cl_bstore_msg *m, bool *use)
{
    cl_err rc = CL_OK;
    json_error_t je;
    json_t *j = NULL;
    struct cl_bstore_msg t;
    bool u = false;
    memset(&t, 0, sizeof(t));
    CL_ENSURE_D(n <= CL_BSTORE_MESSAGE_MAX, CL_E_STORE_MESSAGE, "message of %zu bytes is over %u", n,
                (unsigned)CL_BSTORE_MESSAGE_MAX);
    j = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
    CL_ENSURE_D(j && json_is_object(j), CL_E_STORE_MESSAGE, "message is not a JSON object");
    if (json_object_get(j, "Records")) {
        CL_GUARD(cl_msg_s3_event(j, &t, &u));
    } else if (json_is_string(json_object_get(j, "Event"))) {
        const char *ev = json_string_value(json_object_get(j, "Event"));
        CL_ENSURE_D(!strcmp(ev, "s3:TestEvent"), CL_E_STORE_MESSAGE, "S3 message with Event other than s3:TestEvent");
        u = false;
    } else {
        static const char *const names[] = {"job_id", "object"};
        const char *id = json_string_value(json_object_get(j, "job_id"));
        const char *ob = json_string_value(json_object_get(j, "object"));
        CL_ENSURE_D(cl_msg_only_members(j, names, 2), CL_E_STORE_MESSAGE, "job message: unknown member");
        CL_ENSURE_D(id && cl_bstore_name_valid(id), CL_E_STORE_MESSAGE, "job message: job_id");
        CL_ENSURE_D(ob && cl_bstore_name_valid(ob), CL_E_STORE_MESSAGE, "job message: object");
        snprintf(t.job_id, sizeof(t.job_id), "%s", id);
        snprintf(t.object, sizeof(t.object), "%s", ob);
        u = true;
    }
    if (u) {
        memcpy(m->job_id, t.job_id, sizeof(m->job_id));
        memcpy(m->object, t.object, sizeof(m->object));
    }
    *use = u;
out:
    json_decref(j);
    return rc;
}

/* ---------------- SQS: sqs://QUEUE[?endpoint=URL] ---------------- */

struct cl_bstore_sqs {
    struct cl_aws_svc svc;
    char name[81];
    char dlq_name[96];
    char url[1025];
    char dlq_url[1025];
    int64_t next_id;
};

static cl_err cl_sqs_call(struct cl_bstore_sqs *s, const char *op, json_t *req, json_t **out)
{
    cl_err rc = CL_OK;
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    rc = cl_aws_json_call(&s->svc, "AmazonSQS", op, req, 1024 * 1024, out);
out:
    json_decref(req);
    return rc;
}

static cl_err cl_sqs_queue_url(struct cl_bstore_sqs *s, const char *name, char out[1025])
{
    cl_err rc = CL_OK;
    json_t *resp = NULL;
    rc = cl_sqs_call(s, "GetQueueUrl", json_pack("{s:s}", "QueueName", name), &resp);
    if (rc == CL_E_STORE_REFUSED && (cl_aws_last_code_is("QueueDoesNotExist") ||
                                     cl_aws_last_code_is("AWS.SimpleQueueService.NonExistentQueue")))
        CL_FAIL(CL_E_STORE_REFUSED, "SQS: queue %s does not exist", name);
    CL_GUARD(rc);
    const char *u = json_string_value(json_object_get(resp, "QueueUrl"));
    CL_ENSURE_D(u && strlen(u) < 1025 && (!strncmp(u, "http://", 7) || !strncmp(u, "https://", 8)),
                CL_E_STORE_RESPONSE, "SQS GetQueueUrl: QueueUrl missing or not an http(s) URL of at most 1024 bytes");
    snprintf(out, 1025, "%s", u);
out:
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_sqs_open(const char *url, struct cl_bstore_sqs **out)
{
    cl_err rc = CL_OK;
    char ep[CL_AWS_URL_MAX];
    struct cl_bstore_sqs *s = calloc(1, sizeof(*s));
    CL_ENSURE(s, CL_E_CORE_NOMEM);
    CL_GUARD(cl_aws_split_url(url, "sqs://", s->name, sizeof(s->name), ep));
    for (const char *p = s->name; *p; p++)
        CL_ENSURE_D(isalnum((unsigned char)*p) || *p == '_' || *p == '-', CL_E_STORE_URL,
                    "sqs:// queue name: 1..76 of A-Z a-z 0-9 _ - (the dead-letter queue is NAME-dlq)");
    CL_ENSURE_D(strlen(s->name) <= 76, CL_E_STORE_URL, "sqs:// queue name: at most 76 bytes (NAME-dlq is at most 80)");
    snprintf(s->dlq_name, sizeof(s->dlq_name), "%s-dlq", s->name);
    CL_GUARD(cl_aws_svc_init(&s->svc, "SQS", "sqs", ep));
    CL_GUARD(cl_sqs_queue_url(s, s->name, s->url));
    *out = s;
    s = NULL;
out:
    cl_bstore_sqs_close(s);
    return rc;
}

void cl_bstore_sqs_close(struct cl_bstore_sqs *s)
{
    if (!s)
        return;
    cl_aws_svc_free(&s->svc);
    free(s);
}

static cl_err cl_sqs_dlq(struct cl_bstore_sqs *s)
{
    if (s->dlq_url[0])
        return CL_OK;
    return cl_sqs_queue_url(s, s->dlq_name, s->dlq_url);
}

static cl_err cl_sqs_send_body(struct cl_bstore_sqs *s, const char *qurl, const char *body)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL;
    CL_GUARD(cl_sqs_call(s, "SendMessage", json_pack("{s:s,s:s}", "QueueUrl", qurl, "MessageBody", body), &resp));
    const char *id = json_string_value(json_object_get(resp, "MessageId"));
    CL_ENSURE_D(id && *id, CL_E_STORE_RESPONSE, "SQS SendMessage: no MessageId");
out:
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_sqs_send(struct cl_bstore_sqs *s, const char *job_id, const char *object)
{
    cl_err rc = CL_OK;
    char body[2 * CL_BSTORE_NAME_MAX + 40];
    CL_ENSURE_D(cl_bstore_name_valid(job_id) && cl_bstore_name_valid(object), CL_E_STORE_URL, "job id or object name");
    snprintf(body, sizeof(body), "{\"job_id\":\"%s\",\"object\":\"%s\"}", job_id, object);
    CL_GUARD(cl_sqs_send_body(s, s->url, body));
out:
    return rc;
}

static cl_err cl_sqs_delete_handle(struct cl_bstore_sqs *s, const char *qurl, const char *handle)
{
    json_t *resp = NULL;
    cl_err rc = cl_sqs_call(s, "DeleteMessage", json_pack("{s:s,s:s}", "QueueUrl", qurl, "ReceiptHandle", handle),
                            &resp);
    json_decref(resp);
    return rc;
}

static bool cl_sqs_md5_ok(const char *body, size_t n, const char *md5_hex)
{
    uint8_t md[16];
    unsigned int ml = 0;
    char hex[33];
    if (!md5_hex) /* optional in the protocol */
        return true;
    if (!EVP_Digest(body, n, md, &ml, EVP_md5(), NULL) || ml != 16)
        return false;
    cl_hex_encode(md, 16, hex);
    return strlen(md5_hex) == 32 && !strcasecmp(hex, md5_hex);
}

/* One received message: handle, body, receive count, strictly. */
static cl_err cl_sqs_message(json_t *msg, const char **handle, const char **body, size_t *body_len, uint32_t *receives)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(json_is_object(msg), CL_E_STORE_RESPONSE, "SQS ReceiveMessage: message is not an object");
    json_t *h = json_object_get(msg, "ReceiptHandle"), *b = json_object_get(msg, "Body");
    CL_ENSURE_D(json_is_string(h) && json_string_length(h) >= 1 && json_string_length(h) <= CL_BSTORE_HANDLE_MAX,
                CL_E_STORE_RESPONSE, "SQS ReceiveMessage: ReceiptHandle of 1..%u bytes", CL_BSTORE_HANDLE_MAX);
    CL_ENSURE_D(json_is_string(b), CL_E_STORE_RESPONSE, "SQS ReceiveMessage: no Body");
    CL_ENSURE_D(cl_sqs_md5_ok(json_string_value(b), json_string_length(b),
                              json_string_value(json_object_get(msg, "MD5OfBody"))),
                CL_E_STORE_RESPONSE, "SQS ReceiveMessage: MD5OfBody does not match the body");
    json_t *attrs = json_object_get(msg, "Attributes");
    const char *cnt = json_is_object(attrs) ? json_string_value(json_object_get(attrs, "ApproximateReceiveCount")) : NULL;
    CL_ENSURE_D(cnt && strlen(cnt) >= 1 && strlen(cnt) <= 9 && strspn(cnt, "0123456789") == strlen(cnt),
                CL_E_STORE_RESPONSE, "SQS ReceiveMessage: ApproximateReceiveCount missing or not a number");
    *receives = (uint32_t)strtoul(cnt, NULL, 10);
    CL_ENSURE_D(*receives >= 1, CL_E_STORE_RESPONSE, "SQS ReceiveMessage: ApproximateReceiveCount 0");
    *handle = json_string_value(h);
    *body = json_string_value(b);
    *body_len = json_string_length(b);
out:
    return rc;
}

static json_t *cl_sqs_receive_req(const char *qurl, unsigned max, unsigned vis_s)
{
    return json_pack("{s:s,s:I,s:I,s:I,s:[s],s:[s]}", "QueueUrl", qurl, "MaxNumberOfMessages", (json_int_t)max,
                     "VisibilityTimeout", (json_int_t)vis_s, "WaitTimeSeconds", (json_int_t)0, "AttributeNames",
                     "ApproximateReceiveCount", "MessageSystemAttributeNames", "ApproximateReceiveCount");
}

static unsigned cl_sqs_seconds(uint32_t ms)
{
    unsigned s = (ms + 999) / 1000;
    return s > 43200 ? 43200 : s;
}

cl_err cl_bstore_sqs_receive(struct cl_bstore_sqs *s, uint32_t visibility_ms, struct cl_bstore_msg *m, bool *got)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL;
    const char *handle = NULL, *body = NULL;
    size_t blen = 0;
    uint32_t receives = 0;
    bool use = false;
    CL_GUARD(cl_sqs_call(s, "ReceiveMessage", cl_sqs_receive_req(s->url, 1, cl_sqs_seconds(visibility_ms)), &resp));
    json_t *msgs = json_object_get(resp, "Messages");
    if (!msgs || json_array_size(msgs) == 0) {
        CL_ENSURE_D(!msgs || json_is_array(msgs), CL_E_STORE_RESPONSE, "SQS ReceiveMessage: Messages is not an array");
        *got = false;
        goto out;
    }
    CL_ENSURE_D(json_is_array(msgs) && json_array_size(msgs) == 1, CL_E_STORE_RESPONSE,
                "SQS ReceiveMessage: %zu messages for MaxNumberOfMessages 1", json_array_size(msgs));
    CL_GUARD(cl_sqs_message(json_array_get(msgs, 0), &handle, &body, &blen, &receives));
    struct cl_bstore_msg t;
    memset(&t, 0, sizeof(t));
    t.id = ++s->next_id;
    t.receives = receives;
    memcpy(t.handle, handle, strlen(handle) + 1);
    cl_err pe = cl_bstore_msg_parse(body, blen, &t, &use);
    if (pe != CL_OK) {
        /* A message no worker can use must not block the queue. */
        snprintf(t.job_id, sizeof(t.job_id), "-");
        snprintf(t.object, sizeof(t.object), "-");
        CL_LOG(CL_LOG_WARN, "queue_message_malformed", CL_LOG_COUNT("message", t.id), CL_LOG_SIZE("bytes", blen),
               CL_LOG_ERR(pe));
        CL_GUARD(cl_bstore_sqs_dead_letter(s, &t, cl_err_name(pe)));
        *got = false;
        goto out;
    }
    if (!use) {
        CL_LOG(CL_LOG_INFO, "queue_message_ignored", CL_LOG_COUNT("message", t.id), CL_LOG_SIZE("bytes", blen));
        CL_GUARD(cl_sqs_delete_handle(s, s->url, t.handle));
        *got = false;
        goto out;
    }
    *m = t;
    *got = true;
out:
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_sqs_delete(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m)
{
    return cl_sqs_delete_handle(s, s->url, m->handle);
}

cl_err cl_bstore_sqs_release(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m, uint32_t delay_ms)
{
    json_t *resp = NULL;
    cl_err rc = cl_sqs_call(s, "ChangeMessageVisibility",
                            json_pack("{s:s,s:s,s:I}", "QueueUrl", s->url, "ReceiptHandle", m->handle,
                                      "VisibilityTimeout", (json_int_t)cl_sqs_seconds(delay_ms)),
                            &resp);
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_sqs_dead_letter(struct cl_bstore_sqs *s, const struct cl_bstore_msg *m, const char *error)
{
    cl_err rc = CL_OK;
    char *body = NULL;
    json_t *rec = NULL;
    CL_GUARD(cl_sqs_dlq(s));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* The error record: ids, the fixed error name, counts, a time. */
    rec = json_pack("{s:s,s:s,s:I,s:s,s:I}", "job_id", m->job_id, "object", m->object, "receives",
                    (json_int_t)m->receives, "error", error, "at",
                    (json_int_t)((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    CL_ENSURE(rec, CL_E_CORE_NOMEM);
    body = json_dumps(rec, JSON_COMPACT);
    CL_ENSURE(body, CL_E_CORE_NOMEM);
    /* Sent before the original is deleted: a crash between the two leaves a
     * second error record, never a lost message. */
    CL_GUARD(cl_sqs_send_body(s, s->dlq_url, body));
    CL_GUARD(cl_sqs_delete_handle(s, s->url, m->handle));
out:
    free(body);
    json_decref(rec);
    return rc;
}

static cl_err cl_sqs_attr_count(json_t *attrs, const char *name, uint64_t *out)
{
    const char *v = json_is_object(attrs) ? json_string_value(json_object_get(attrs, name)) : NULL;
    if (!v || !*v || strlen(v) > 18 || strspn(v, "0123456789") != strlen(v))
        return cl_err_fail(CL_E_STORE_RESPONSE, "SQS GetQueueAttributes: %s missing or not a number", name);
    *out = strtoull(v, NULL, 10);
    return CL_OK;
}

cl_err cl_bstore_sqs_counts(struct cl_bstore_sqs *s, struct cl_bstore_queue_counts *c)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL, *dresp = NULL;
    struct cl_bstore_queue_counts t = {0, 0, 0};
    CL_GUARD(cl_sqs_call(s, "GetQueueAttributes",
                         json_pack("{s:s,s:[s,s]}", "QueueUrl", s->url, "AttributeNames", "ApproximateNumberOfMessages",
                                   "ApproximateNumberOfMessagesNotVisible"),
                         &resp));
    json_t *a = json_object_get(resp, "Attributes");
    CL_GUARD(cl_sqs_attr_count(a, "ApproximateNumberOfMessages", &t.visible));
    CL_GUARD(cl_sqs_attr_count(a, "ApproximateNumberOfMessagesNotVisible", &t.in_flight));
    if (cl_sqs_dlq(s) == CL_OK) {
        CL_GUARD(cl_sqs_call(s, "GetQueueAttributes",
                             json_pack("{s:s,s:[s]}", "QueueUrl", s->dlq_url, "AttributeNames",
                                       "ApproximateNumberOfMessages"),
                             &dresp));
        CL_GUARD(cl_sqs_attr_count(json_object_get(dresp, "Attributes"), "ApproximateNumberOfMessages", &t.dead));
    }
    *c = t;
out:
    json_decref(resp);
    json_decref(dresp);
    return rc;
}

/* Looks through the dead-letter queue without consuming it (visibility 0).
 * SQS has no lookup by content: a bounded number of samples. */
cl_err cl_bstore_sqs_dead_find(struct cl_bstore_sqs *s, const char *job_id, char error[CL_BSTORE_ERROR_MAX + 1],
                               uint32_t *receives, bool *found)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL;
    *found = false;
    if (cl_sqs_dlq(s) != CL_OK)
        goto out; /* no dead-letter queue: nothing is dead */
    for (int round = 0; round < CL_SQS_DEAD_FIND_ROUNDS && !*found; round++) {
        json_decref(resp);
        resp = NULL;
        CL_GUARD(cl_sqs_call(s, "ReceiveMessage", cl_sqs_receive_req(s->dlq_url, 10, 0), &resp));
        json_t *msgs = json_object_get(resp, "Messages");
        if (!json_is_array(msgs) || json_array_size(msgs) == 0)
            break;
        size_t i;
        json_t *msg;
        json_array_foreach(msgs, i, msg)
        {
            const char *b = json_string_value(json_object_get(msg, "Body"));
            json_t *rec = b ? json_loads(b, JSON_REJECT_DUPLICATES, NULL) : NULL;
            const char *id = json_string_value(json_object_get(rec, "job_id"));
            const char *err = json_string_value(json_object_get(rec, "error"));
            json_t *rcv = json_object_get(rec, "receives");
            if (id && err && json_is_integer(rcv) && !strcmp(id, job_id) && strlen(err) <= CL_BSTORE_ERROR_MAX) {
                snprintf(error, CL_BSTORE_ERROR_MAX + 1, "%s", err);
                json_int_t v = json_integer_value(rcv);
                *receives = v > 0 && v < UINT32_MAX ? (uint32_t)v : 0;
                *found = true;
            }
            json_decref(rec);
            if (*found)
                break;
        }
    }
out:
    json_decref(resp);
    return rc;
}

/* ---------------- DynamoDB: dynamodb://TABLE[?endpoint=URL] ---------------- */

/* One table, hash key job_id (S). Items by kind: "result" (key: the job id),
 * "receipt" (key r:TIME_US_HEX:RANDOM), "attestation" (key a:CHAIN). Job ids
 * never hold ':', so the kinds cannot collide. */
struct cl_bstore_ddb {
    struct cl_aws_svc svc;
    char table[256];
};

static cl_err cl_ddb_call(struct cl_bstore_ddb *d, const char *op, json_t *req, json_t **out)
{
    cl_err rc = CL_OK;
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    rc = cl_aws_json_call(&d->svc, "DynamoDB_20120810", op, req, CL_AWS_JSON_RESPONSE_MAX, out);
out:
    json_decref(req);
    return rc;
}

cl_err cl_bstore_ddb_open(const char *url, struct cl_bstore_ddb **out)
{
    cl_err rc = CL_OK;
    char ep[CL_AWS_URL_MAX];
    json_t *resp = NULL;
    struct cl_bstore_ddb *d = calloc(1, sizeof(*d));
    CL_ENSURE(d, CL_E_CORE_NOMEM);
    CL_GUARD(cl_aws_split_url(url, "dynamodb://", d->table, sizeof(d->table), ep));
    CL_ENSURE_D(strlen(d->table) >= 3, CL_E_STORE_URL, "dynamodb:// table name: 3..255 of A-Z a-z 0-9 _ - .");
    for (const char *p = d->table; *p; p++)
        CL_ENSURE_D(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.', CL_E_STORE_URL,
                    "dynamodb:// table name: 3..255 of A-Z a-z 0-9 _ - .");
    CL_GUARD(cl_aws_svc_init(&d->svc, "DynamoDB", "dynamodb", ep));
    rc = cl_ddb_call(d, "DescribeTable", json_pack("{s:s}", "TableName", d->table), &resp);
    if (rc == CL_E_STORE_REFUSED && cl_aws_last_code_is("ResourceNotFoundException"))
        CL_FAIL(CL_E_STORE_REFUSED, "DynamoDB: table %s does not exist", d->table);
    CL_GUARD(rc);
    json_t *ks = json_object_get(json_object_get(resp, "Table"), "KeySchema");
    json_t *k0 = json_array_get(ks, 0);
    const char *an = json_string_value(json_object_get(k0, "AttributeName"));
    const char *kt = json_string_value(json_object_get(k0, "KeyType"));
    CL_ENSURE_D(json_array_size(ks) == 1 && an && kt && !strcmp(an, "job_id") && !strcmp(kt, "HASH"),
                CL_E_STORE_REFUSED, "DynamoDB: table %s must have the single hash key job_id (S)", d->table);
    *out = d;
    d = NULL;
out:
    json_decref(resp);
    cl_bstore_ddb_close(d);
    return rc;
}

void cl_bstore_ddb_close(struct cl_bstore_ddb *d)
{
    if (!d)
        return;
    cl_aws_svc_free(&d->svc);
    free(d);
}

static json_t *cl_ddb_b(const uint8_t *p, size_t n)
{
    struct cl_buf b;
    cl_buf_init(&b, 4 * (n / 3) + 8, CL_BUF_NONE);
    json_t *v = NULL;
    if (cl_b64_encode(p, n, CL_B64_STD, &b) == CL_OK)
        v = json_pack("{s:s%}", "B", (const char *)b.data, b.len);
    cl_buf_free(&b);
    return v;
}

static json_t *cl_ddb_s(const char *s) { return json_pack("{s:s}", "S", s); }

static json_t *cl_ddb_n(uint64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
    return json_pack("{s:s}", "N", t);
}

/* PutItem; *exists when the condition attribute_not_exists(job_id) failed. */
static cl_err cl_ddb_put_item(struct cl_bstore_ddb *d, json_t *item, bool conditional, const char *what, bool *exists)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL, *req = NULL;
    char *dump = NULL;
    CL_ENSURE(item, CL_E_CORE_NOMEM);
    dump = json_dumps(item, JSON_COMPACT);
    CL_ENSURE(dump, CL_E_CORE_NOMEM);
    /* The item's JSON (base64 included) bounds its stored size from above. */
    CL_ENSURE_D(strlen(dump) < CL_DDB_ITEM_MAX, CL_E_STORE_TOO_LARGE,
                "DynamoDB PutItem: %s item of %zu bytes is over the 400 KB item limit", what, strlen(dump));
    req = json_pack("{s:s,s:O}", "TableName", d->table, "Item", item);
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    if (conditional)
        json_object_set_new(req, "ConditionExpression", json_string("attribute_not_exists(job_id)"));
    *exists = false;
    rc = cl_ddb_call(d, "PutItem", req, &resp);
    req = NULL;
    if (rc == CL_E_STORE_REFUSED && conditional && cl_aws_last_code_is("ConditionalCheckFailedException")) {
        *exists = true;
        rc = CL_OK;
    }
out:
    free(dump);
    json_decref(item);
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_ddb_put(struct cl_bstore_ddb *d, const struct cl_bstore_put *p, bool *stored)
{
    cl_err rc = CL_OK;
    char key[CL_BSTORE_NAME_MAX + 8], rkey[64];
    uint8_t rnd[4];
    bool exists = false;
    struct timespec ts;
    CL_ENSURE_D(cl_bstore_name_valid(p->job_id) && cl_bstore_name_valid(p->chain), CL_E_STORE_URL, "job id or chain");
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    /* DynamoDB has no multi-item transaction here (dynalite lacks
     * TransactWriteItems): attestation, then receipt, then the result. A
     * crash in between leaves a receipt without its result, never a result
     * without its receipt; the redelivered job completes it. */
    snprintf(key, sizeof(key), "a:%s", p->chain);
    CL_GUARD(cl_ddb_put_item(d,
                             json_pack("{s:o,s:o,s:o}", "job_id", cl_ddb_s(key), "kind", cl_ddb_s("attestation"), "doc",
                                       cl_ddb_b(p->attestation, p->attestation_len)),
                             true, "attestation", &exists));
    CL_GUARD(cl_random_bytes(rnd, sizeof(rnd)));
    snprintf(rkey, sizeof(rkey), "r:%016llx:%02x%02x%02x%02x", (unsigned long long)now_us, rnd[0], rnd[1], rnd[2],
             rnd[3]);
    CL_GUARD(cl_ddb_put_item(d,
                             json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "job_id", cl_ddb_s(rkey), "kind",
                                       cl_ddb_s("receipt"), "chain", cl_ddb_s(p->chain), "seq", cl_ddb_n(p->seq), "job",
                                       cl_ddb_s(p->job_id), "receipt", cl_ddb_b(p->receipt, p->receipt_len), "at",
                                       cl_ddb_n(now_us / 1000)),
                             true, "receipt", &exists));
    CL_ENSURE_D(!exists, CL_E_STORE_INTERNAL, "DynamoDB: receipt key collision");
    /* The conditional write: a redelivered job's second answer is not stored. */
    CL_GUARD(cl_ddb_put_item(d,
                             json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "job_id", cl_ddb_s(p->job_id), "kind",
                                       cl_ddb_s("result"), "status", cl_ddb_s(p->ok ? "ok" : "error"), "result",
                                       cl_ddb_b(p->result, p->result_len), "receipt",
                                       cl_ddb_b(p->receipt, p->receipt_len), "receipt_key", cl_ddb_s(rkey), "at",
                                       cl_ddb_n(now_us / 1000)),
                             true, "result", &exists));
    *stored = !exists;
out:
    return rc;
}

/* A B attribute of item into out (replacing its contents). */
static cl_err cl_ddb_get_b(json_t *item, const char *attr, struct cl_buf *out)
{
    json_t *v = json_object_get(json_object_get(item, attr), "B");
    const char *s = json_string_value(v);
    if (!s)
        return cl_err_fail(CL_E_STORE_RESPONSE, "DynamoDB item: %s is not a binary attribute", attr);
    out->len = 0;
    if (cl_b64_decode(s, json_string_length(v), CL_B64_STD, out) != CL_OK)
        return cl_err_fail(CL_E_STORE_RESPONSE, "DynamoDB item: %s is not base64 or over %zu bytes", attr, out->max);
    return CL_OK;
}

static const char *cl_ddb_get_s(json_t *item, const char *attr)
{
    return json_string_value(json_object_get(json_object_get(item, attr), "S"));
}

static cl_err cl_ddb_get_item(struct cl_bstore_ddb *d, const char *key, json_t **resp, json_t **item)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_ddb_call(d, "GetItem",
                         json_pack("{s:s,s:{s:o},s:b}", "TableName", d->table, "Key", "job_id", cl_ddb_s(key),
                                   "ConsistentRead", 1),
                         resp));
    *item = json_object_get(*resp, "Item");
    CL_ENSURE_D(!*item || json_is_object(*item), CL_E_STORE_RESPONSE, "DynamoDB GetItem: Item is not an object");
out:
    return rc;
}

cl_err cl_bstore_ddb_get(struct cl_bstore_ddb *d, const char *job_id, bool *ok, struct cl_buf *result,
                         struct cl_buf *receipt)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL, *item = NULL;
    CL_ENSURE_D(cl_bstore_name_valid(job_id), CL_E_STORE_NOT_FOUND, "no result for job ? yet");
    CL_GUARD(cl_ddb_get_item(d, job_id, &resp, &item));
    CL_ENSURE_D(item, CL_E_STORE_NOT_FOUND, "no result for job %s yet", job_id);
    const char *kind = cl_ddb_get_s(item, "kind"), *st = cl_ddb_get_s(item, "status");
    CL_ENSURE_D(kind && !strcmp(kind, "result") && st && (!strcmp(st, "ok") || !strcmp(st, "error")),
                CL_E_STORE_RESPONSE, "DynamoDB result item of job %s: kind or status", job_id);
    CL_GUARD(cl_ddb_get_b(item, "result", result));
    CL_GUARD(cl_ddb_get_b(item, "receipt", receipt));
    *ok = !strcmp(st, "ok");
out:
    json_decref(resp);
    return rc;
}

cl_err cl_bstore_ddb_attestation(struct cl_bstore_ddb *d, const char *chain, struct cl_buf *doc)
{
    cl_err rc = CL_OK;
    char key[CL_BSTORE_NAME_MAX + 8];
    json_t *resp = NULL, *item = NULL;
    CL_ENSURE_D(cl_bstore_name_valid(chain), CL_E_STORE_NOT_FOUND, "no attestation document for that chain");
    snprintf(key, sizeof(key), "a:%s", chain);
    CL_GUARD(cl_ddb_get_item(d, key, &resp, &item));
    CL_ENSURE_D(item, CL_E_STORE_NOT_FOUND, "no attestation document %.16s...", chain);
    CL_GUARD(cl_ddb_get_b(item, "doc", doc));
out:
    json_decref(resp);
    return rc;
}

/* Scan of one kind, every page; fn gets each item. select_count: only counts. */
typedef cl_err (*cl_ddb_item_fn)(void *ctx, json_t *item);
static cl_err cl_ddb_scan(struct cl_bstore_ddb *d, const char *kind, bool select_count, cl_ddb_item_fn fn, void *ctx,
                          uint64_t *count)
{
    cl_err rc = CL_OK;
    json_t *resp = NULL, *start = NULL;
    uint64_t n = 0;
    for (;;) {
        json_t *req = json_pack("{s:s,s:s,s:{s:s},s:{s:o},s:b}", "TableName", d->table, "FilterExpression", "#k = :k",
                                "ExpressionAttributeNames", "#k", "kind", "ExpressionAttributeValues", ":k",
                                cl_ddb_s(kind), "ConsistentRead", 1);
        CL_ENSURE(req, CL_E_CORE_NOMEM);
        if (select_count)
            json_object_set_new(req, "Select", json_string("COUNT"));
        if (start)
            json_object_set(req, "ExclusiveStartKey", start);
        json_decref(resp);
        resp = NULL;
        CL_GUARD(cl_ddb_call(d, "Scan", req, &resp));
        json_t *cnt = json_object_get(resp, "Count");
        CL_ENSURE_D(json_is_integer(cnt) && json_integer_value(cnt) >= 0, CL_E_STORE_RESPONSE,
                    "DynamoDB Scan: Count missing");
        if (select_count) {
            n += (uint64_t)json_integer_value(cnt);
        } else {
            json_t *items = json_object_get(resp, "Items");
            CL_ENSURE_D(json_is_array(items) && json_array_size(items) == (size_t)json_integer_value(cnt),
                        CL_E_STORE_RESPONSE, "DynamoDB Scan: Items is not an array of Count items");
            size_t i;
            json_t *it;
            json_array_foreach(items, i, it)
            {
                CL_ENSURE_D(json_is_object(it), CL_E_STORE_RESPONSE, "DynamoDB Scan: item is not an object");
                CL_ENSURE_D(++n <= CL_DDB_SCAN_ITEMS_MAX, CL_E_STORE_TOO_LARGE, "DynamoDB Scan: over %u %s items",
                            CL_DDB_SCAN_ITEMS_MAX, kind);
                CL_GUARD(fn(ctx, it));
            }
        }
        json_t *last = json_object_get(resp, "LastEvaluatedKey");
        json_decref(start);
        start = NULL;
        if (!last)
            break;
        CL_ENSURE_D(json_is_object(last), CL_E_STORE_RESPONSE, "DynamoDB Scan: LastEvaluatedKey is not an object");
        start = json_incref(last);
    }
    if (count)
        *count = n;
out:
    json_decref(start);
    json_decref(resp);
    return rc;
}

struct cl_ddb_row {
    char key[CL_BSTORE_NAME_MAX + 8];
    uint8_t *a, *b;
    size_t an, bn;
};
struct cl_ddb_rows {
    struct cl_ddb_row *v;
    size_t n, cap;
    const char *a_attr, *b_attr; /* binary attributes to keep */
};

static void cl_ddb_rows_free(struct cl_ddb_rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].a);
        free(r->v[i].b);
    }
    free(r->v);
}

static cl_err cl_ddb_collect(void *ctx, json_t *item)
{
    cl_err rc = CL_OK;
    struct cl_ddb_rows *r = ctx;
    struct cl_buf a, b;
    cl_buf_init(&a, CL_DDB_ITEM_MAX, CL_BUF_NONE);
    cl_buf_init(&b, CL_DDB_ITEM_MAX, CL_BUF_NONE);
    const char *k = cl_ddb_get_s(item, "job_id");
    CL_ENSURE_D(k && strlen(k) < sizeof(r->v[0].key), CL_E_STORE_RESPONSE, "DynamoDB Scan: item key");
    CL_GUARD(cl_ddb_get_b(item, r->a_attr, &a));
    if (r->b_attr)
        CL_GUARD(cl_ddb_get_b(item, r->b_attr, &b));
    if (r->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 64;
        struct cl_ddb_row *nv = realloc(r->v, nc * sizeof(*nv));
        CL_ENSURE(nv, CL_E_CORE_NOMEM);
        r->v = nv;
        r->cap = nc;
    }
    struct cl_ddb_row *row = &r->v[r->n];
    memset(row, 0, sizeof(*row));
    snprintf(row->key, sizeof(row->key), "%s", k);
    row->a = malloc(a.len ? a.len : 1);
    row->b = malloc(b.len ? b.len : 1);
    if (!row->a || !row->b) {
        free(row->a);
        free(row->b);
        CL_FAIL(CL_E_CORE_NOMEM, "scan rows");
    }
    memcpy(row->a, a.data ? a.data : (uint8_t *)"", a.len);
    memcpy(row->b, b.data ? b.data : (uint8_t *)"", b.len);
    row->an = a.len;
    row->bn = b.len;
    r->n++;
out:
    cl_buf_free(&a);
    cl_buf_free(&b);
    return rc;
}

static int cl_ddb_row_cmp(const void *x, const void *y)
{
    return strcmp(((const struct cl_ddb_row *)x)->key, ((const struct cl_ddb_row *)y)->key);
}

/* Receipts in stored order: their keys start with the write time. */
cl_err cl_bstore_ddb_each_receipt(struct cl_bstore_ddb *d, cl_bstore_receipt_fn fn, void *ctx)
{
    cl_err rc = CL_OK;
    struct cl_ddb_rows rows = {NULL, 0, 0, "receipt", NULL};
    CL_GUARD(cl_ddb_scan(d, "receipt", false, cl_ddb_collect, &rows, NULL));
    qsort(rows.v, rows.n, sizeof(*rows.v), cl_ddb_row_cmp);
    for (size_t i = 0; i < rows.n; i++)
        if (!fn(ctx, (int64_t)i + 1, rows.v[i].a, rows.v[i].an))
            break;
out:
    cl_ddb_rows_free(&rows);
    return rc;
}

cl_err cl_bstore_ddb_each_result(struct cl_bstore_ddb *d, cl_bstore_result_fn fn, void *ctx)
{
    cl_err rc = CL_OK;
    struct cl_ddb_rows rows = {NULL, 0, 0, "result", "receipt"};
    CL_GUARD(cl_ddb_scan(d, "result", false, cl_ddb_collect, &rows, NULL));
    qsort(rows.v, rows.n, sizeof(*rows.v), cl_ddb_row_cmp);
    for (size_t i = 0; i < rows.n; i++)
        if (!fn(ctx, rows.v[i].key, rows.v[i].a, rows.v[i].an, rows.v[i].b, rows.v[i].bn))
            break;
out:
    cl_ddb_rows_free(&rows);
    return rc;
}

cl_err cl_bstore_ddb_count(struct cl_bstore_ddb *d, uint64_t *results, uint64_t *receipts)
{
    cl_err rc = CL_OK;
    uint64_t a = 0, b = 0;
    CL_GUARD(cl_ddb_scan(d, "result", true, NULL, NULL, &a));
    CL_GUARD(cl_ddb_scan(d, "receipt", true, NULL, NULL, &b));
    *results = a;
    *receipts = b;
out:
    return rc;
}
