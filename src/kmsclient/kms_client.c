/* Minimal AWS KMS JSON 1.1 client (libcurl + SigV4) for Cloister's own tools. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cloister/encode.h"
#include "cloister/file.h"
#include "cloister/kms_client.h"
#include "cloister/secmem.h"
#include "cloister/sigv4.h"

#define CL_KMSC_MAX_RESPONSE (256 * 1024)

static size_t cl_kmsc_curl_write(char *p, size_t sz, size_t nm, void *arg)
{
    struct cl_buf *b = arg;
    size_t n = sz * nm;
    if (cl_buf_append(b, p, n) != CL_OK)
        return 0; /* aborts the transfer: response too large */
    return n;
}

/* Splits "scheme://host[:port][/...]" and returns the Host header value. */
static cl_err cl_kmsc_url_host(const char *url, char *host, size_t n)
{
    const char *p = strstr(url, "://");
    if (!p || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
        return cl_err_fail(CL_E_NET_URL, "endpoint must start with http:// or https://");
    p += 3;
    size_t l = strcspn(p, "/?#");
    if (l == 0 || l >= n)
        return cl_err_fail(CL_E_NET_URL, "endpoint host length");
    memcpy(host, p, l);
    host[l] = 0;
    if (strchr(host, '@'))
        return cl_err_fail(CL_E_NET_URL, "endpoint must not carry user info");
    return CL_OK;
}

static cl_err cl_kmsc_http_call(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred, const char *op,
                          const char *body, json_t **out)
{
    cl_err rc = CL_OK;
    char url[1024], host[300], region[64], date[CL_SIGV4_DATE_LEN + 1], target[96];
    struct cl_buf authz, resp;
    struct curl_slist *hl = NULL;
    CURL *c = NULL;
    char *hdr = NULL;
    cl_buf_init(&authz, 4096, CL_BUF_NONE);
    cl_buf_init(&resp, CL_KMSC_MAX_RESPONSE, CL_BUF_SECURE);
    *out = NULL;
    CL_ENSURE_D(ep && cred && cred->access_key[0] && cred->secret[0], CL_E_NET_CREDENTIALS, "credentials missing");
    snprintf(region, sizeof(region), "%s", ep->region ? ep->region : "");
    if (!region[0])
        CL_GUARD(cl_kmsc_region_load(region, sizeof(region)));
    CL_ENSURE_D(region[0], CL_E_NET_CREDENTIALS, "no region (set AWS_REGION)");
    if (ep->url)
        snprintf(url, sizeof(url), "%s", ep->url);
    else
        snprintf(url, sizeof(url), "https://kms.%s.amazonaws.com/", region);
    CL_GUARD(cl_kmsc_url_host(url, host, sizeof(host)));
    cl_sigv4_format_date((int64_t)time(NULL), date);
    snprintf(target, sizeof(target), "TrentService.%s", op);
    struct cl_sigv4_header h[5] = {
        {"Content-Type", 12, "application/x-amz-json-1.1", 26},
        {"Host", 4, host, strlen(host)},
        {"X-Amz-Date", 10, date, CL_SIGV4_DATE_LEN},
        {"X-Amz-Target", 12, target, strlen(target)},
        {"X-Amz-Security-Token", 20, cred->session_token, strlen(cred->session_token)},
    };
    struct cl_sigv4_request r = {.method = "POST", .path = "/", .headers = h,
                                 .n_headers = cred->session_token[0] ? 5 : 4,
                                 .body = (const uint8_t *)body, .body_len = strlen(body)};
    struct cl_sigv4_credentials sc = {cred->access_key, cred->secret, NULL};
    CL_GUARD(cl_sigv4_sign(&r, &sc, date, region, "kms", &authz));
    c = curl_easy_init();
    CL_ENSURE_D(c, CL_E_NET_HTTP, "curl init");
    size_t hdr_cap = 8192;
    hdr = malloc(hdr_cap);
    CL_ENSURE(hdr, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < r.n_headers; i++) {
        snprintf(hdr, hdr_cap, "%s: %.*s", h[i].name, (int)h[i].value_len, h[i].value);
        struct curl_slist *n2 = curl_slist_append(hl, hdr);
        CL_ENSURE(n2, CL_E_CORE_NOMEM);
        hl = n2;
    }
    snprintf(hdr, hdr_cap, "Authorization: %.*s", (int)authz.len, (const char *)authz.data);
    struct curl_slist *n3 = curl_slist_append(hl, hdr);
    CL_ENSURE(n3, CL_E_CORE_NOMEM);
    hl = n3;
    n3 = curl_slist_append(hl, "Expect:");
    CL_ENSURE(n3, CL_E_CORE_NOMEM);
    hl = n3;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, cl_kmsc_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    long tmo = ep->timeout_ms ? (long)ep->timeout_ms : 30000L;
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, tmo);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, tmo < 10000L ? tmo : 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    const char *ca_file = ep->ca_file ? ep->ca_file : getenv("AWS_CA_BUNDLE");
    if (ep->ca_pem) {
        struct curl_blob blob = {(void *)ep->ca_pem, strlen(ep->ca_pem), CURL_BLOB_COPY};
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
    } else if (ca_file && *ca_file) {
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    }
    if (ep->unix_socket && ep->unix_socket[0] == '@')
        curl_easy_setopt(c, CURLOPT_ABSTRACT_UNIX_SOCKET, ep->unix_socket + 1);
    else if (ep->unix_socket)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, ep->unix_socket);
    CURLcode cc = curl_easy_perform(c);
    CL_ENSURE_D(cc == CURLE_OK, CL_E_NET_HTTP, "%s: %s", op, curl_easy_strerror(cc));
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    json_error_t je;
    json_t *j = json_loadb((const char *)resp.data, resp.len, JSON_REJECT_DUPLICATES, &je);
    if (status != 200) {
        const char *type = j ? json_string_value(json_object_get(j, "__type")) : NULL;
        const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
        if (!msg && j)
            msg = json_string_value(json_object_get(j, "Message"));
        rc = cl_err_fail(CL_E_NET_HTTP_STATUS, "%s: HTTP %ld %.64s: %.300s", op, status, type ? type : "?",
                         msg ? msg : "");
        json_decref(j);
        goto out;
    }
    CL_ENSURE_D(j && json_is_object(j), CL_E_NET_RESPONSE, "%s: response is not a JSON object", op);
    *out = j;
out:
    free(hdr);
    curl_slist_free_all(hl);
    if (c)
        curl_easy_cleanup(c);
    cl_buf_free(&authz);
    cl_buf_free(&resp);
    return rc;
}

static cl_err cl_kmsc_ctx_json(json_t *req, const char *field, const struct cl_aws_kv *ctx, size_t n)
{
    if (!n)
        return CL_OK;
    json_t *o = json_object();
    if (!o)
        return CL_E_CORE_NOMEM;
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, ctx[i].key, json_string(ctx[i].value));
    json_object_set_new(req, field, o);
    return CL_OK;
}

static cl_err cl_kmsc_b64_field(const json_t *o, const char *field, struct cl_buf *out, const char *op)
{
    const char *s = json_string_value(json_object_get(o, field));
    if (!s)
        return cl_err_fail(CL_E_NET_RESPONSE, "%s: response lacks %s", op, field);
    if (cl_b64_decode(s, strlen(s), CL_B64_STD, out) != CL_OK)
        return cl_err_fail(CL_E_NET_RESPONSE, "%s: %s is not base64", op, field);
    return CL_OK;
}

#define CL_KMSC_MAX_KEY_ID 2048

/* The KeyId (ARN) a response names: 1..cap-1 printable characters, copied to
 * out; what the enclave attests and the sealed header records. */
static cl_err cl_kmsc_key_id_field(const json_t *resp, const char *op, char *out, size_t cap)
{
    json_t *kid = json_object_get(resp, "KeyId");
    const char *ks = json_string_value(kid);
    size_t kl = ks ? json_string_length(kid) : 0;
    if (!ks || kl == 0 || kl >= cap)
        return cl_err_fail(CL_E_NET_RESPONSE, "%s: response lacks a KeyId of 1-%zu bytes", op, cap - 1);
    for (size_t i = 0; i < kl; i++)
        if (ks[i] <= 0x20 || ks[i] >= 0x7f)
            return cl_err_fail(CL_E_NET_RESPONSE, "%s: KeyId is not printable", op);
    memcpy(out, ks, kl + 1);
    return CL_OK;
}

static cl_err cl_kmsc_dump_secure(json_t *req, char **out)
{
    /* The body may hold a base64 ciphertext but never plaintext: requests
     * from this client carry no Plaintext. */
    *out = json_dumps(req, JSON_COMPACT);
    return *out ? CL_OK : CL_E_CORE_NOMEM;
}

/* Frees one exchange: the request, the body sent and the response, whose
 * base64 Plaintext (a key) is wiped first. */
static void cl_kmsc_exchange_free(json_t *req, json_t *resp, char *body)
{
    json_t *pt = resp ? json_object_get(resp, "Plaintext") : NULL;
    if (json_is_string(pt))
        cl_wipe((void *)json_string_value(pt), json_string_length(pt));
    json_decref(resp);
    json_decref(req);
    free(body);
}

cl_err cl_kmsc_generate_data_key(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                const char *key_id, const struct cl_aws_kv *enc_ctx, size_t n_ctx,
                                struct cl_buf *plaintext_key, struct cl_buf *ciphertext_blob, char *key_arn,
                                size_t cap)
{
    cl_err rc = CL_OK;
    json_t *req = json_pack("{s:s,s:s}", "KeyId", key_id ? key_id : "", "KeySpec", "AES_256"), *resp = NULL;
    char *body = NULL;
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    CL_ENSURE_D(plaintext_key->flags & CL_BUF_SECURE, CL_E_CORE_INVALID_ARG, "plaintext_key must be CL_BUF_SECURE");
    CL_GUARD(cl_kmsc_ctx_json(req, "EncryptionContext", enc_ctx, n_ctx));
    CL_GUARD(cl_kmsc_dump_secure(req, &body));
    CL_GUARD(cl_kmsc_http_call(ep, cred, "GenerateDataKey", body, &resp));
    size_t p0 = plaintext_key->len, c0 = ciphertext_blob->len;
    rc = cl_kmsc_b64_field(resp, "Plaintext", plaintext_key, "GenerateDataKey");
    if (!rc)
        rc = cl_kmsc_b64_field(resp, "CiphertextBlob", ciphertext_blob, "GenerateDataKey");
    if (!rc && plaintext_key->len - p0 != 32)
        rc = cl_err_fail(CL_E_NET_RESPONSE, "GenerateDataKey: Plaintext is %zu bytes, not 32", plaintext_key->len - p0);
    if (!rc && key_arn)
        rc = cl_kmsc_key_id_field(resp, "GenerateDataKey", key_arn, cap);
    if (rc) {
        cl_wipe(plaintext_key->data + p0, plaintext_key->len - p0);
        plaintext_key->len = p0;
        ciphertext_blob->len = c0;
    }
out:
    cl_kmsc_exchange_free(req, resp, body);
    return rc;
}

static cl_err cl_kmsc_decrypt_common(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                    const char *key_id, const uint8_t *blob, size_t blob_len,
                                    const struct cl_aws_kv *enc_ctx, size_t n_ctx, const uint8_t *doc,
                                    size_t doc_len, const cl_pkey *rsa_priv, struct cl_buf *plaintext,
                                    char *key_arn, size_t cap)
{
    cl_err rc = CL_OK;
    struct cl_buf b64, docb64, cms;
    json_t *req = json_object(), *resp = NULL;
    char *body = NULL;
    cl_buf_init(&b64, 4 * blob_len / 3 + 8, CL_BUF_NONE);
    cl_buf_init(&docb64, 4 * doc_len / 3 + 8, CL_BUF_NONE);
    cl_buf_init(&cms, CL_AWS_CMS_MAX, CL_BUF_NONE);
    CL_ENSURE(req, CL_E_CORE_NOMEM);
    CL_ENSURE_D(plaintext->flags & CL_BUF_SECURE, CL_E_CORE_INVALID_ARG, "plaintext must be CL_BUF_SECURE");
    CL_ENSURE_D(blob_len > 0 && blob_len <= 6144, CL_E_CORE_INVALID_ARG, "ciphertext blob length");
    CL_GUARD(cl_b64_encode(blob, blob_len, CL_B64_STD, &b64));
    json_object_set_new(req, "CiphertextBlob", json_stringn((const char *)b64.data, b64.len));
    if (key_id)
        json_object_set_new(req, "KeyId", json_string(key_id));
    CL_GUARD(cl_kmsc_ctx_json(req, "EncryptionContext", enc_ctx, n_ctx));
    if (doc) {
        CL_GUARD(cl_b64_encode(doc, doc_len, CL_B64_STD, &docb64));
        json_object_set_new(req, "Recipient",
                            json_pack("{s:s,s:s%}", "KeyEncryptionAlgorithm", "RSAES_OAEP_SHA_256",
                                      "AttestationDocument", (const char *)docb64.data, docb64.len));
    }
    CL_GUARD(cl_kmsc_dump_secure(req, &body));
    CL_GUARD(cl_kmsc_http_call(ep, cred, "Decrypt", body, &resp));
    if (doc) {
        CL_ENSURE_D(!json_object_get(resp, "Plaintext"), CL_E_NET_RESPONSE,
                    "Decrypt: service returned Plaintext to a Recipient request");
        /* The key's identity as the service names it: the enclave attests it. */
        char arn[CL_KMSC_MAX_KEY_ID + 1];
        CL_GUARD(cl_kmsc_key_id_field(resp, "Decrypt", arn, cap < sizeof(arn) ? cap : sizeof(arn)));
        CL_GUARD(cl_kmsc_b64_field(resp, "CiphertextForRecipient", &cms, "Decrypt"));
        CL_GUARD(cl_aws_recipient_unwrap(rsa_priv, cms.data, cms.len, plaintext));
        memcpy(key_arn, arn, strlen(arn) + 1);
    } else {
        CL_GUARD(cl_kmsc_b64_field(resp, "Plaintext", plaintext, "Decrypt"));
    }
out:
    cl_kmsc_exchange_free(req, resp, body);
    cl_buf_free(&b64);
    cl_buf_free(&docb64);
    cl_buf_free(&cms);
    return rc;
}

cl_err cl_kmsc_decrypt(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                           const char *key_id, const uint8_t *blob, size_t blob_len,
                           const struct cl_aws_kv *enc_ctx, size_t n_ctx, struct cl_buf *plaintext)
{
    return cl_kmsc_decrypt_common(ep, cred, key_id, blob, blob_len, enc_ctx, n_ctx, NULL, 0, NULL, plaintext, NULL, 0);
}

cl_err cl_kmsc_decrypt_for_recipient(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred,
                                    const char *key_id, const uint8_t *blob, size_t blob_len,
                                    const struct cl_aws_kv *enc_ctx, size_t n_ctx,
                                    const uint8_t *attestation_doc, size_t doc_len, const cl_pkey *rsa_priv,
                                    struct cl_buf *plaintext, char *key_arn, size_t cap)
{
    if (!attestation_doc || !doc_len || !rsa_priv || !key_arn || cap < 2)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "Recipient needs an attestation document and the RSA key");
    return cl_kmsc_decrypt_common(ep, cred, key_id, blob, blob_len, enc_ctx, n_ctx, attestation_doc, doc_len,
                                 rsa_priv, plaintext, key_arn, cap);
}

cl_err cl_kmsc_call(const struct cl_kmsc_endpoint *ep, const struct cl_kmsc_credentials *cred, const char *op,
                          const char *body, struct json_t **out)
{
    return cl_kmsc_http_call(ep, cred, op, body, out);
}
