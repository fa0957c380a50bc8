/* Attested OHTTP chat client over libcurl (docs/protocol.md sections 1-3). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "client_internal.h"
#include "cloister/json_secure.h"
#include "cloister/bhttp.h"
#include "cloister/encode.h"
#include "cloister/hpke.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

#define CL_CLIENT_MAX_URL 2048
#define CL_CLIENT_MAX_ERROR_BODY (64 * 1024)
/* A request with images (base64) fits the host's largest body (32 MiB, less framing). */
#define CL_CLIENT_MAX_REQUEST (((size_t)32 << 20) - 16384)
#define CL_CLIENT_DEFAULT_TIMEOUT_MS ((uint64_t)300 * 1000)

struct cl_client {
    char *base; /* scheme://authority[/prefix], no trailing slash */
    struct cl_trust trust;
    CURL *curl;
    uint64_t timeout_ms;
    bool attested;
    uint16_t aead; /* suite picked from the attested key configuration */
    struct cl_client_attestation att;
    char *credential; /* cl_secmem, NUL-terminated; NULL: none sent */
};

static pthread_once_t cl_client_curl_once = PTHREAD_ONCE_INIT;
static CURLcode cl_client_curl_rc = CURLE_OK;

static void cl_client_curl_init(void) { cl_client_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static cl_err cl_client_check_url(const char *u, size_t *len)
{
    size_t n = strnlen(u, CL_CLIENT_MAX_URL + 1);
    if (n > CL_CLIENT_MAX_URL)
        return cl_err_fail(CL_E_NET_CLIENT_URL, "longer than %d characters", CL_CLIENT_MAX_URL);
    size_t skip;
    if (!strncasecmp(u, "http://", 7))
        skip = 7;
    else if (!strncasecmp(u, "https://", 8))
        skip = 8;
    else
        return cl_err_fail(CL_E_NET_CLIENT_URL, "scheme must be http:// or https://");
    if (n == skip || u[skip] == '/')
        return cl_err_fail(CL_E_NET_CLIENT_URL, "no host after the scheme");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)u[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            return cl_err_fail(CL_E_NET_CLIENT_URL, "character at offset %zu is not allowed", i);
    }
    while (n > skip && u[n - 1] == '/')
        n--;
    *len = n;
    return CL_OK;
}

cl_err cl_client_new(const char *host_url, const struct cl_trust *trust, cl_client **out)
{
    cl_err rc = CL_OK;
    cl_client *c = NULL;
    size_t ulen = 0;
    CL_ENSURE_D(host_url && trust && trust->root_der && trust->root_len, CL_E_CORE_INVALID_ARG, "host_url/trust");
    CL_GUARD(cl_client_check_url(host_url, &ulen));
    pthread_once(&cl_client_curl_once, cl_client_curl_init);
    CL_ENSURE_D(cl_client_curl_rc == CURLE_OK, CL_E_NET_CLIENT_HTTP, "curl_global_init failed");
    cl_json_secure();
    c = calloc(1, sizeof(*c));
    CL_ENSURE(c, CL_E_CORE_NOMEM);
    c->base = malloc(ulen + 1);
    CL_ENSURE(c->base, CL_E_CORE_NOMEM);
    memcpy(c->base, host_url, ulen);
    c->base[ulen] = 0;
    c->trust = *trust;
    c->trust.root_der = malloc(trust->root_len);
    CL_ENSURE(c->trust.root_der, CL_E_CORE_NOMEM);
    memcpy(c->trust.root_der, trust->root_der, trust->root_len);
    c->curl = curl_easy_init();
    CL_ENSURE_D(c->curl, CL_E_NET_CLIENT_HTTP, "curl_easy_init failed");
    c->timeout_ms = CL_CLIENT_DEFAULT_TIMEOUT_MS;
    *out = c;
    c = NULL;
out:
    cl_client_free(c);
    return rc;
}

void cl_client_free(cl_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->base);
    if (c->credential) {
        cl_wipe(c->credential, strlen(c->credential));
        cl_secmem_free(c->credential);
    }
    cl_trust_free(&c->trust);
    cl_wipe(c, sizeof(*c));
    free(c);
}

void cl_client_set_timeout_ms(cl_client *c, uint64_t ms) { c->timeout_ms = ms; }

cl_err cl_client_set_credential(cl_client *c, const char *cred, size_t n)
{
    cl_err rc = CL_OK;
    char *p = NULL;
    while (n && (cred[n - 1] == '\n' || cred[n - 1] == '\r')) /* a file's trailing newline is not part of it */
        n--;
    CL_ENSURE_D(n >= 16 && n <= 512, CL_E_CORE_INVALID_ARG, "credential of %zu characters (16..512)", n);
    for (size_t i = 0; i < n; i++)
        CL_ENSURE_D((unsigned char)cred[i] > 0x20 && (unsigned char)cred[i] < 0x7f, CL_E_CORE_INVALID_ARG,
                    "credential character %zu is not printable ASCII", i);
    CL_GUARD(cl_secmem_alloc(n + 1, (void **)&p));
    memcpy(p, cred, n);
    p[n] = 0;
    if (c->credential) {
        cl_wipe(c->credential, strlen(c->credential));
        cl_secmem_free(c->credential);
    }
    c->credential = p;
    p = NULL;
out:
    cl_secmem_free(p);
    return rc;
}

const struct cl_client_attestation *cl_client_attestation(const cl_client *c)
{
    return c && c->attested ? &c->att : NULL;
}

/* ---- one HTTP exchange ---- */

enum cl_client_mode { CL_CLIENT_MODE_NONE = 0, CL_CLIENT_MODE_BODY, CL_CLIENT_MODE_STREAM, CL_CLIENT_MODE_COUNT };

struct cl_client_xfer {
    enum cl_client_mode mode;
    const char *want_type; /* media type required on a 200 */
    CURL *curl;
    long status;
    bool started;   /* first body byte seen (status and type checked) */
    bool ok_body;   /* a 200 of the wanted type: body is the payload */
    char ctype[128];
    struct cl_buf body;    /* MODE_BODY payload or error body */
    cl_err cb_rc;          /* failure raised inside a callback */
    /* MODE_STREAM */
    cl_ohttp_client *oc;
    struct cl_buf pt;      /* decapsulated chunk bytes (binary HTTP) */
    struct cl_bhttp_reader rd;
    struct cl_buf content; /* binary HTTP content just read */
    struct cl_buf errbody; /* content of a non-200 inner response */
    struct cl_client_sse sse;
    bool inner_checked;
    bool inner_ok;
};

static size_t cl_client_on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct cl_client_xfer *x = arg;
    size_t n = size * nmemb;
    if (n > 13 && !strncasecmp(p, "content-type:", 13)) {
        size_t i = 13;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t e = n;
        while (e > i && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' '))
            e--;
        size_t l = e - i < sizeof(x->ctype) - 1 ? e - i : sizeof(x->ctype) - 1;
        memcpy(x->ctype, p + i, l);
        x->ctype[l] = 0;
    } else if (n >= 5 && !strncasecmp(p, "HTTP/", 5)) {
        x->ctype[0] = 0; /* a new response (after 100-continue or similar) */
    }
    return n;
}

static bool cl_client_type_is(const char *have, const char *want)
{
    size_t l = strlen(want);
    return !strncasecmp(have, want, l) && (have[l] == 0 || have[l] == ';' || have[l] == ' ');
}

/* Plaintext binary HTTP bytes of a streamed answer. */
static cl_err cl_client_stream_plain(struct cl_client_xfer *x)
{
    cl_err rc = CL_OK;
    /* Only with bytes: the reader memmoves its (possibly NULL) pending buffer. */
    if (x->pt.len)
        CL_GUARD(cl_bhttp_reader_feed(&x->rd, x->pt.data, x->pt.len, &x->content));
    cl_buf_reset(&x->pt);
    if (!x->inner_checked && x->rd.state >= CL_BHTTP_R_CONTENT) {
        x->inner_checked = true;
        x->inner_ok = x->rd.status == 200;
        if (x->inner_ok) {
            const char *ct = cl_bhttp_reader_field(&x->rd, "content-type");
            CL_ENSURE_D(ct && cl_client_type_is(ct, "text/event-stream"), CL_E_NET_CLIENT_RESPONSE,
                        "streamed answer content-type is not text/event-stream");
        }
    }
    if (x->content.len) {
        if (x->inner_ok)
            CL_GUARD(cl_client_sse_feed(&x->sse, x->content.data, x->content.len));
        else
            CL_GUARD(cl_buf_append(&x->errbody, x->content.data, x->content.len));
        cl_buf_reset(&x->content);
    }
out:
    return rc;
}

static size_t cl_client_on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct cl_client_xfer *x = arg;
    size_t n = size * nmemb;
    cl_err rc = CL_OK;
    if (!x->started) {
        x->started = true;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->status);
        x->ok_body = x->status == 200;
        if (x->ok_body && !cl_client_type_is(x->ctype, x->want_type))
            CL_FAIL(CL_E_NET_CLIENT_MEDIA_TYPE, "expected %s", x->want_type);
    }
    if (x->ok_body && x->mode == CL_CLIENT_MODE_STREAM) {
        CL_GUARD(cl_ohttp_client_feed(x->oc, (const uint8_t *)p, n, false, &x->pt));
        CL_GUARD(cl_client_stream_plain(x));
    } else {
        if (x->body.len + n > x->body.max)
            CL_FAIL(x->ok_body ? CL_E_NET_CLIENT_LIMIT : CL_E_NET_CLIENT_HTTP_STATUS, "response body over %zu bytes",
                    x->body.max);
        CL_GUARD(cl_buf_append(&x->body, p, n));
    }
out:
    if (rc != CL_OK) {
        x->cb_rc = rc;
        return 0; /* aborts the transfer */
    }
    return n;
}

static void cl_client_xfer_init(struct cl_client_xfer *x, enum cl_client_mode mode, size_t body_max,
                                const char *want_type)
{
    memset(x, 0, sizeof(*x));
    x->mode = mode;
    x->want_type = want_type;
    cl_buf_init(&x->body, body_max, CL_BUF_NONE);
    cl_buf_init(&x->pt, CL_CLIENT_MAX_ANSWER + 65536, CL_BUF_SECURE);
    cl_buf_init(&x->content, CL_CLIENT_MAX_ANSWER, CL_BUF_SECURE);
    cl_buf_init(&x->errbody, CL_CLIENT_MAX_ERROR_BODY, CL_BUF_SECURE);
    cl_bhttp_reader_init(&x->rd, CL_CLIENT_MAX_ANSWER);
}

static void cl_client_xfer_free(struct cl_client_xfer *x)
{
    cl_buf_free(&x->body);
    cl_buf_free(&x->pt);
    cl_buf_free(&x->content);
    cl_buf_free(&x->errbody);
    cl_bhttp_reader_free(&x->rd);
}

/* Runs one request. body == NULL: GET. Returns after the transfer; HTTP
 * status in x->status (0 if none arrived). */
static cl_err cl_client_perform(cl_client *c, const char *url, const char *ctype, const uint8_t *body, size_t n,
                                struct cl_client_xfer *x)
{
    cl_err rc = CL_OK;
    struct curl_slist *hdrs = NULL;
    char h[160];
    CURL *k = c->curl;
    curl_easy_reset(k);
    x->curl = k;
    curl_easy_setopt(k, CURLOPT_URL, url);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(k, CURLOPT_USERAGENT, "cloister-client/1");
    curl_easy_setopt(k, CURLOPT_HEADERFUNCTION, cl_client_on_header);
    curl_easy_setopt(k, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, cl_client_on_body);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, x);
    snprintf(h, sizeof(h), "Accept: %s", x->want_type);
    hdrs = curl_slist_append(hdrs, h);
    CL_ENSURE(hdrs, CL_E_CORE_NOMEM);
    if (body) {
        snprintf(h, sizeof(h), "Content-Type: %s", ctype);
        struct curl_slist *t = curl_slist_append(hdrs, h);
        CL_ENSURE(t, CL_E_CORE_NOMEM);
        t = curl_slist_append(hdrs, "Expect:");
        CL_ENSURE(t, CL_E_CORE_NOMEM);
        curl_easy_setopt(k, CURLOPT_POST, 1L);
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, (const char *)body);
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    }
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cr = curl_easy_perform(k);
    if (!x->started)
        curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->cb_rc != CL_OK) {
        rc = x->cb_rc;
        goto out;
    }
    if (cr != CURLE_OK) {
        if (x->ok_body && x->mode == CL_CLIENT_MODE_STREAM)
            CL_FAIL(CL_E_NET_CLIENT_STREAM_INCOMPLETE, "the answer broke off: %s", curl_easy_strerror(cr));
        CL_FAIL(CL_E_NET_CLIENT_HTTP, "%s", curl_easy_strerror(cr));
    }
    if (!x->started && x->status == 200 && !cl_client_type_is(x->ctype, x->want_type))
        CL_FAIL(CL_E_NET_CLIENT_MEDIA_TYPE, "expected %s", x->want_type);
    if (x->status == 200)
        x->ok_body = true;
out:
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    return rc;
}

/* ---- attestation ---- */

static cl_err cl_client_pick_suite(const struct cl_ohttp_keyconfig *kc, uint16_t *aead)
{
    static const uint16_t pref[] = {CL_HPKE_AEAD_AES256GCM, CL_HPKE_AEAD_CHACHA20POLY1305, CL_HPKE_AEAD_AES128GCM};
    if (kc->kem != CL_HPKE_KEM_X25519_SHA256)
        return cl_err_fail(CL_E_NET_CLIENT_PUBLIC_KEY, "KEM 0x%04x, expected X25519 (0x0020)", kc->kem);
    for (size_t i = 0; i < sizeof(pref) / sizeof(pref[0]); i++)
        for (size_t j = 0; j < kc->n_suites; j++)
            if (kc->suites[j].kdf == CL_HPKE_KDF_SHA256 && kc->suites[j].aead == pref[i]) {
                *aead = pref[i];
                return CL_OK;
            }
    return cl_err_fail(CL_E_NET_CLIENT_PUBLIC_KEY, "no HKDF-SHA256 suite with a supported AEAD");
}

/* What user_data says the enclave loaded and used, against what TRUST.json
 * pins. The model digest is computed by the enclave over the plaintext it
 * loaded; the key-service identity is what it connected to and was answered. */
cl_err cl_client_check_pins(const struct cl_trust *t, const struct cl_attest_user_data *u)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(cl_ct_equal(u->model_sha256, t->model_sha256, CL_CLIENT_DIGEST_LEN), CL_E_NET_CLIENT_MODEL,
                "user_data.model_sha256 differs from TRUST.json model_sha256");
    if (t->pin_kms) {
        CL_ENSURE_D(!strcmp(u->kms_key_arn, t->kms_key_arn), CL_E_NET_CLIENT_KMS,
                    "user_data.kms.key differs from TRUST.json kms.key_arn");
        CL_ENSURE_D(!t->pin_kms_endpoint || !strcmp(u->kms_endpoint, t->kms_endpoint), CL_E_NET_CLIENT_KMS,
                    "user_data.kms.endpoint differs from TRUST.json kms.endpoint");
        if (t->pin_kms_ca && t->kms_ca_none)
            CL_ENSURE_D(!u->has_kms_ca, CL_E_NET_CLIENT_KMS,
                        "the host gave the enclave an extra CA for the key service; TRUST.json kms.ca_sha256 is none");
        else if (t->pin_kms_ca)
            CL_ENSURE_D(u->has_kms_ca && cl_ct_equal(u->kms_ca_sha256, t->kms_ca_sha256, CL_CLIENT_DIGEST_LEN),
                        CL_E_NET_CLIENT_KMS, "user_data.kms.ca differs from TRUST.json kms.ca_sha256");
    }
    if (t->pin_config)
        CL_ENSURE_D(cl_ct_equal(u->config_sha256, t->config_sha256, CL_CLIENT_DIGEST_LEN), CL_E_NET_CLIENT_CONFIG,
                    "user_data.config_sha256 differs from TRUST.json config_sha256");
    if (t->pin_mmproj) {
        CL_ENSURE_D(u->has_mmproj, CL_E_NET_CLIENT_MODEL,
                    "the enclave loaded no vision projector; TRUST.json pins mmproj_sha256");
        CL_ENSURE_D(cl_ct_equal(u->mmproj_sha256, t->mmproj_sha256, CL_CLIENT_DIGEST_LEN), CL_E_NET_CLIENT_MODEL,
                    "user_data.mmproj_sha256 differs from TRUST.json mmproj_sha256");
    }
out:
    return rc;
}

cl_err cl_client_attest(cl_client *c)
{
    cl_err rc = CL_OK;
    struct cl_client_xfer x;
    struct cl_attest_doc doc;
    memset(&doc, 0, sizeof(doc));
    struct cl_client_attestation att;
    memset(&att, 0, sizeof(att));
    uint16_t aead = 0;
    char url[CL_CLIENT_MAX_URL + 128];
    char hex[2 * CL_CLIENT_NONCE_LEN + 1];
    struct cl_attest_pcr_expect exp[CL_ATTEST_MAX_PCRS];
    cl_client_xfer_init(&x, CL_CLIENT_MODE_BODY, CL_ATTEST_MAX_DOC, "application/cbor");
    CL_GUARD(cl_random_bytes(att.nonce, sizeof(att.nonce)));
    cl_hex_encode(att.nonce, sizeof(att.nonce), hex);
    snprintf(url, sizeof(url), "%s/v1/attestation?nonce=%s", c->base, hex);
    uint64_t t0 = cl_now_us();
    CL_GUARD(cl_client_perform(c, url, NULL, NULL, 0, &x));
    CL_ENSURE_D(x.status == 200, CL_E_NET_CLIENT_HTTP_STATUS, "GET /v1/attestation: status %ld", x.status);
    CL_GUARD(cl_attest_parse(x.body.data ? x.body.data : (const uint8_t *)"", x.body.len, &doc));
    struct cl_attest_policy pol;
    memset(&pol, 0, sizeof(pol));
    size_t np = 0;
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        if (!(c->trust.pcr_present & (1u << i)))
            continue;
        exp[np].index = i;
        memcpy(exp[np].value, c->trust.pcr[i], CL_ATTEST_PCR_LEN);
        np++;
    }
    pol.root_der = c->trust.root_der;
    pol.root_len = c->trust.root_len;
    pol.pcrs = exp;
    pol.npcrs = np;
    pol.allow_debug = c->trust.allow_debug;
    pol.check_nonce = true;
    pol.nonce.p = att.nonce;
    pol.nonce.len = sizeof(att.nonce);
    pol.max_age_ms = c->trust.max_age_seconds * 1000;
    CL_GUARD(cl_attest_verify(&doc, &pol));
    CL_GUARD(cl_attest_user_data_parse(doc.user_data.p, doc.user_data.len, &att.user_data));
    CL_GUARD(cl_client_check_pins(&c->trust, &att.user_data));
    CL_ENSURE_D(doc.public_key.len, CL_E_NET_CLIENT_PUBLIC_KEY, "public_key: absent");
    if (cl_ohttp_keyconfig_parse(doc.public_key.p, doc.public_key.len, &att.key) != CL_OK)
        CL_FAIL(CL_E_NET_CLIENT_PUBLIC_KEY, "public_key: not one OHTTP key configuration");
    CL_GUARD(cl_client_pick_suite(&att.key, &aead));
    size_t ml = doc.module_id.len < CL_ATTEST_MAX_MODULE_ID ? doc.module_id.len : CL_ATTEST_MAX_MODULE_ID;
    for (size_t i = 0; i < ml; i++) {
        uint8_t ch = doc.module_id.p[i];
        att.module_id[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    att.timestamp_ms = doc.timestamp_ms;
    att.pcr_present = doc.pcr_present;
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++)
        if ((doc.pcr_present & (1u << i)) && doc.pcr[i].len == CL_ATTEST_PCR_LEN)
            memcpy(att.pcr[i], doc.pcr[i].p, CL_ATTEST_PCR_LEN);
    att.debug = cl_attest_is_debug(&doc);
    att.count = c->att.count + 1;
    c->att = att;
    c->aead = aead;
    c->attested = true;
    CL_LOG(CL_LOG_INFO, "client_attested", CL_LOG_SIZE("document", x.body.len), CL_LOG_US("elapsed", cl_now_us() - t0),
           CL_LOG_COUNT("attestations", att.count));
out:
    if (rc != CL_OK)
        CL_LOG(CL_LOG_INFO, "client_attestation_refused", CL_LOG_ERR(rc));
    cl_attest_doc_free(&doc);
    cl_client_xfer_free(&x);
    return rc;
}

/* ---- chat ---- */

/* A prepared chat-completions body into one binary HTTP request. */
static cl_err cl_client_wrap_request(const char *credential, const uint8_t *json, size_t json_len,
                                     struct cl_buf *bhttp)
{
    cl_err rc = CL_OK;
    struct cl_buf auth;
    cl_buf_init(&auth, 600, CL_BUF_SECURE);
    CL_ENSURE_D(json && json_len, CL_E_CORE_INVALID_ARG, "empty request body");
    CL_ENSURE_D(json_len <= CL_CLIENT_MAX_REQUEST, CL_E_NET_CLIENT_LIMIT, "request body over %zu bytes",
                CL_CLIENT_MAX_REQUEST);
    struct cl_bhttp_msg m;
    memset(&m, 0, sizeof(m));
    m.method = "POST";
    m.method_len = 4;
    m.scheme = "https";
    m.scheme_len = 5;
    m.authority = "";
    m.path = "/v1/chat/completions";
    m.path_len = strlen(m.path);
    m.n_fields = 1;
    m.fields[0].name = "content-type";
    m.fields[0].name_len = 12;
    m.fields[0].value = "application/json";
    m.fields[0].value_len = 16;
    if (credential) {
        /* Inside the OHTTP encryption: the host never sees it (docs/formats/licence.md). */
        CL_GUARD(cl_buf_appendf(&auth, "Bearer %s", credential));
        m.fields[1] = (struct cl_bhttp_field){"authorization", 13, (const char *)auth.data, auth.len};
        m.n_fields = 2;
    }
    m.content = json;
    m.content_len = json_len;
    CL_GUARD(cl_bhttp_encode(&m, bhttp));
out:
    cl_buf_free(&auth);
    return rc;
}

/* The whole non-streamed answer. */
static cl_err cl_client_finish_body(cl_ohttp_client *oc, const struct cl_client_xfer *x, struct cl_client_result *res)
{
    cl_err rc = CL_OK;
    struct cl_buf pt;
    cl_buf_init(&pt, CL_OHTTP_MAX_MESSAGE, CL_BUF_SECURE);
    CL_GUARD(cl_ohttp_client_decap(oc, x->body.data ? x->body.data : (const uint8_t *)"", x->body.len, &pt));
    struct cl_bhttp_msg m;
    CL_GUARD(cl_bhttp_decode(pt.data, pt.len, CL_CLIENT_MAX_ANSWER, &m));
    CL_ENSURE_D(m.is_response, CL_E_NET_CLIENT_RESPONSE, "binary HTTP message is not a response");
    if (m.status == 200) {
        const struct cl_bhttp_field *f = cl_bhttp_find(&m, "content-type");
        char ct[64] = "";
        if (f && f->value_len < sizeof(ct)) {
            memcpy(ct, f->value, f->value_len);
            ct[f->value_len] = 0;
        }
        CL_ENSURE_D(cl_client_type_is(ct, "application/json"), CL_E_NET_CLIENT_RESPONSE,
                    "answer content-type is not application/json");
    }
    CL_GUARD(cl_client_parse_completion(m.content ? m.content : (const uint8_t *)"", m.content_len, m.status, res));
out:
    cl_buf_free(&pt);
    return rc;
}

static cl_err cl_client_finish_stream(struct cl_client_xfer *x, struct cl_client_result *res)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_ohttp_client_feed(x->oc, NULL, 0, true, &x->pt));
    CL_GUARD(cl_client_stream_plain(x));
    CL_ENSURE_D(cl_bhttp_reader_done(&x->rd), CL_E_NET_CLIENT_STREAM_INCOMPLETE,
                "binary HTTP response ended early");
    if (!x->inner_ok) {
        CL_GUARD(cl_client_parse_completion(x->errbody.data ? x->errbody.data : (const uint8_t *)"",
                                            x->errbody.len, x->rd.status, res));
        CL_FAIL(CL_E_NET_CLIENT_RESPONSE, "error answer without an error status");
    }
    CL_GUARD(cl_client_sse_finish(&x->sse));
    res->status = 200;
out:
    return rc;
}

cl_err cl_client_chat(cl_client *c, const struct cl_client_msg *msgs, size_t n, const struct cl_client_params *p,
                      cl_client_token_fn on_token, void *arg, struct cl_client_result *res)
{
    cl_err rc = CL_OK;
    struct cl_buf json;
    cl_buf_init(&json, CL_CLIENT_MAX_REQUEST, CL_BUF_SECURE);
    CL_GUARD(cl_client_request_json(msgs, n, p, on_token != NULL, &json));
    CL_GUARD(cl_client_chat_json(c, json.data, json.len, on_token, arg, res));
out:
    cl_buf_free(&json);
    return rc;
}

cl_err cl_client_chat_json(cl_client *c, const uint8_t *body, size_t body_len, cl_client_token_fn on_token,
                           void *arg, struct cl_client_result *res)
{
    cl_err rc = CL_OK;
    bool stream = on_token != NULL;
    struct cl_buf req, enc;
    cl_ohttp_client *oc = NULL;
    struct cl_client_xfer x;
    bool have_x = false;
    char url[CL_CLIENT_MAX_URL + 32];
    cl_buf_init(&req, CL_CLIENT_MAX_REQUEST + 4096, CL_BUF_SECURE);
    cl_buf_init(&enc, CL_CLIENT_MAX_REQUEST + 8192, CL_BUF_NONE);
    /* A reused result starts clean (the content buffer keeps its storage). */
    cl_buf_reset(&res->content);
    res->status = 0;
    res->has_usage = false;
    res->prompt_tokens = res->completion_tokens = res->total_tokens = 0;
    res->finish_reason[0] = res->error_type[0] = res->error_message[0] = res->id[0] = 0;
    CL_GUARD(cl_client_wrap_request(c->credential, body, body_len, &req));
    if (!c->attested)
        CL_GUARD(cl_client_attest(c));
    snprintf(url, sizeof(url), "%s/v1/ohttp", c->base);
    for (int attempt = 0;; attempt++) {
        cl_buf_reset(&enc);
        cl_ohttp_client_free(oc);
        oc = NULL;
        CL_GUARD(cl_ohttp_client_encap(&c->att.key, CL_HPKE_KDF_SHA256, c->aead, stream, req.data, req.len, &enc,
                                       &oc));
        if (have_x) {
            cl_client_sse_free(&x.sse);
            cl_client_xfer_free(&x);
        }
        cl_client_xfer_init(&x, stream ? CL_CLIENT_MODE_STREAM : CL_CLIENT_MODE_BODY,
                            stream ? CL_CLIENT_MAX_ERROR_BODY : CL_OHTTP_MAX_MESSAGE,
                            stream ? "message/ohttp-chunked-res" : "message/ohttp-res");
        cl_client_sse_init(&x.sse, on_token, arg, res);
        have_x = true;
        x.oc = oc;
        CL_GUARD(cl_client_perform(c, url, stream ? "message/ohttp-chunked-req" : "message/ohttp-req", enc.data,
                                   enc.len, &x));
        if (x.status == 400 || x.status == 401) {
            /* The gateway could not open the request: most likely the
             * enclave restarted with a new key. Re-attest, once. */
            CL_ENSURE_D(attempt == 0, CL_E_NET_CLIENT_HTTP_STATUS,
                        "POST /v1/ohttp: status %ld again after re-attestation", x.status);
            struct cl_ohttp_keyconfig old = c->att.key;
            CL_LOG(CL_LOG_INFO, "client_key_refused", CL_LOG_COUNT("status", (uint64_t)x.status));
            CL_GUARD(cl_client_attest(c));
            CL_ENSURE_D(old.key_id != c->att.key.key_id || memcmp(old.pk, c->att.key.pk, sizeof(old.pk)),
                        CL_E_NET_CLIENT_KEY_UNCHANGED, "POST /v1/ohttp: status %ld, key id %u", x.status,
                        (unsigned)old.key_id);
            continue;
        }
        if (x.status != 200) {
            /* Unauthenticated (the host writes it), but it tells a lease's
             * end from a host fault: shown only as an uppercase code name. */
            char code[64] = "";
            const char *b = (const char *)x.body.data, *k = NULL;
            size_t bl = x.body.len;
            for (size_t i = 0; b && i + 8 < bl && !k; i++)
                if (!memcmp(b + i, "\"code\":\"", 8))
                    k = b + i + 8;
            for (size_t i = 0; k && i < sizeof(code) - 1 && k + i < b + bl &&
                               ((k[i] >= 'A' && k[i] <= 'Z') || k[i] == '_' || (k[i] >= '0' && k[i] <= '9'));
                 i++)
                code[i] = k[i], code[i + 1] = 0;
            const char *why = code[0] ? cl_err_str_by_name(code) : NULL;
            CL_FAIL(CL_E_NET_CLIENT_HTTP_STATUS, "POST /v1/ohttp: status %ld%s%s%s%s%s", x.status,
                    code[0] ? " (the host reports the enclave's code " : "", code, why ? ": " : "", why ? why : "",
                    code[0] ? ")" : "");
        }
        break;
    }
    if (stream)
        CL_GUARD(cl_client_finish_stream(&x, res));
    else
        CL_GUARD(cl_client_finish_body(oc, &x, res));
out:
    if (have_x) {
        cl_client_sse_free(&x.sse);
        cl_client_xfer_free(&x);
    }
    cl_ohttp_client_free(oc);
    cl_buf_free(&req);
    cl_buf_free(&enc);
    return rc;
}
