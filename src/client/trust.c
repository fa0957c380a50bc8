/* TRUST.json: what a consumer pins (docs/formats/trust.md). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client_internal.h"
#include "cloister/json_secure.h"
#include "cloister/encode.h"
#include "cloister/file.h"

#define CL_TRUST_PEM_BEGIN "-----BEGIN CERTIFICATE-----"

void cl_trust_free(struct cl_trust *t)
{
    if (!t)
        return;
    free(t->root_der);
    memset(t, 0, sizeof(*t));
}

static cl_err cl_trust_hex(json_t *v, const char *field, uint8_t *out, size_t n)
{
    if (!json_is_string(v))
        return cl_err_fail(CL_E_NET_CLIENT_TRUST, "%s: expected a hex string", field);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len != 2 * n)
        return cl_err_fail(CL_E_NET_CLIENT_TRUST, "%s: expected %zu hex digits, got %zu", field, 2 * n, len);
    if (cl_hex_decode_fixed(s, len, out, n) != CL_OK)
        return cl_err_fail(CL_E_NET_CLIENT_TRUST, "%s: not hexadecimal", field);
    return CL_OK;
}

static cl_err cl_trust_root(json_t *v, struct cl_trust *t)
{
    cl_err rc = CL_OK;
    struct cl_buf der;
    cl_buf_init(&der, CL_ATTEST_MAX_CERT, CL_BUF_NONE);
    CL_ENSURE_D(json_is_string(v), CL_E_NET_CLIENT_TRUST, "root_pem: expected a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    /* Leading whitespace is tolerated; the content must be one PEM certificate. */
    while (len && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) {
        s++;
        len--;
    }
    CL_ENSURE_D(len >= strlen(CL_TRUST_PEM_BEGIN) && !memcmp(s, CL_TRUST_PEM_BEGIN, strlen(CL_TRUST_PEM_BEGIN)),
                CL_E_NET_CLIENT_TRUST, "root_pem: expected a PEM certificate (-----BEGIN CERTIFICATE-----)");
    if (cl_attest_cert_to_der((const uint8_t *)s, len, &der) != CL_OK)
        CL_FAIL(CL_E_NET_CLIENT_TRUST, "root_pem: not a valid PEM certificate");
    int64_t nb, na;
    if (cl_attest_cert_validity(der.data, der.len, &nb, &na) != CL_OK)
        CL_FAIL(CL_E_NET_CLIENT_TRUST, "root_pem: certificate does not parse");
    t->root_der = der.data;
    t->root_len = der.len;
    der.data = NULL;
out:
    cl_buf_free(&der);
    return rc;
}

static cl_err cl_trust_pcrs(json_t *v, struct cl_trust *t)
{
    if (!json_is_object(v))
        return cl_err_fail(CL_E_NET_CLIENT_TRUST, "pcrs: expected an object");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        size_t kl = strlen(key);
        unsigned idx = 0;
        /* Canonical decimal: no sign, no leading zeros. */
        bool ok = kl >= 1 && kl <= 2 && !(kl == 2 && key[0] == '0');
        for (size_t i = 0; ok && i < kl; i++) {
            if (key[i] < '0' || key[i] > '9')
                ok = false;
            else
                idx = idx * 10 + (unsigned)(key[i] - '0');
        }
        if (!ok || idx >= CL_ATTEST_MAX_PCRS)
            return cl_err_fail(CL_E_NET_CLIENT_TRUST, "pcrs: key is not a PCR index 0-%d", CL_ATTEST_MAX_PCRS - 1);
        char field[32];
        snprintf(field, sizeof(field), "pcrs.%u", idx);
        cl_err rc = cl_trust_hex(val, field, t->pcr[idx], CL_ATTEST_PCR_LEN);
        if (rc != CL_OK)
            return rc;
        t->pcr_present |= 1u << idx;
    }
    for (unsigned i = 0; i < 3; i++)
        if (!(t->pcr_present & (1u << i)))
            return cl_err_fail(CL_E_NET_CLIENT_TRUST, "pcrs.%u: missing (PCR0, PCR1 and PCR2 are required)", i);
    return CL_OK;
}

static cl_err cl_trust_kms_text(json_t *v, const char *field, char *dst, size_t cap)
{
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return cl_err_fail(CL_E_NET_CLIENT_TRUST, "kms.%s: expected a string of 1-%zu characters", field, cap - 1);
    const char *s = json_string_value(v);
    for (size_t i = 0; i < json_string_length(v); i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return cl_err_fail(CL_E_NET_CLIENT_TRUST, "kms.%s: only printable characters without spaces", field);
    memcpy(dst, s, json_string_length(v) + 1);
    return CL_OK;
}

/* "kms": {"key_arn": ARN, "endpoint": URL?, "ca_sha256": HEX | "none"?} */
static cl_err cl_trust_kms(json_t *v, struct cl_trust *t)
{
    cl_err rc = CL_OK;
    const char *key;
    json_t *val;
    CL_ENSURE_D(json_is_object(v), CL_E_NET_CLIENT_TRUST, "kms: expected an object");
    json_object_foreach(v, key, val) {
        if (!strcmp(key, "key_arn")) {
            CL_GUARD(cl_trust_kms_text(val, "key_arn", t->kms_key_arn, sizeof(t->kms_key_arn)));
        } else if (!strcmp(key, "endpoint")) {
            CL_GUARD(cl_trust_kms_text(val, "endpoint", t->kms_endpoint, sizeof(t->kms_endpoint)));
            t->pin_kms_endpoint = true;
        } else if (!strcmp(key, "ca_sha256")) {
            if (json_is_string(val) && !strcmp(json_string_value(val), "none"))
                t->kms_ca_none = true;
            else
                CL_GUARD(cl_trust_hex(val, "kms.ca_sha256", t->kms_ca_sha256, CL_CLIENT_DIGEST_LEN));
            t->pin_kms_ca = true;
        } else {
            CL_FAIL(CL_E_NET_CLIENT_TRUST, "kms: unknown key \"%.40s\"", key);
        }
    }
    CL_ENSURE_D(t->kms_key_arn[0], CL_E_NET_CLIENT_TRUST, "kms.key_arn: missing");
    t->pin_kms = true;
out:
    return rc;
}

cl_err cl_trust_parse(const uint8_t *p, size_t n, struct cl_trust *out)
{
    cl_err rc = CL_OK;
    struct cl_trust t;
    memset(&t, 0, sizeof(t));
    t.max_age_seconds = CL_TRUST_MAX_AGE_DEFAULT;
    json_error_t jerr;
    json_t *root = NULL;
    cl_json_secure();
    CL_ENSURE_D(n <= CL_TRUST_MAX_FILE, CL_E_NET_CLIENT_TRUST, "file over %d bytes", CL_TRUST_MAX_FILE);
    root = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    CL_ENSURE_D(root, CL_E_NET_CLIENT_TRUST, "not valid JSON (line %d, column %d)", jerr.line, jerr.column);
    CL_ENSURE_D(json_is_object(root), CL_E_NET_CLIENT_TRUST, "top level: expected an object");
    const char *key;
    json_t *val;
    bool seen_root = false, seen_pcrs = false, seen_model = false;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "root_pem")) {
            CL_GUARD(cl_trust_root(val, &t));
            seen_root = true;
        } else if (!strcmp(key, "pcrs")) {
            CL_GUARD(cl_trust_pcrs(val, &t));
            seen_pcrs = true;
        } else if (!strcmp(key, "model_sha256")) {
            CL_GUARD(cl_trust_hex(val, "model_sha256", t.model_sha256, CL_CLIENT_DIGEST_LEN));
            seen_model = true;
        } else if (!strcmp(key, "max_age_seconds")) {
            CL_ENSURE_D(json_is_integer(val) && json_integer_value(val) >= 1 &&
                            json_integer_value(val) <= CL_TRUST_MAX_AGE_LIMIT,
                        CL_E_NET_CLIENT_TRUST, "max_age_seconds: expected an integer 1-%d", CL_TRUST_MAX_AGE_LIMIT);
            t.max_age_seconds = (uint64_t)json_integer_value(val);
        } else if (!strcmp(key, "allow_debug")) {
            CL_ENSURE_D(json_is_boolean(val), CL_E_NET_CLIENT_TRUST, "allow_debug: expected true or false");
            t.allow_debug = json_is_true(val);
        } else if (!strcmp(key, "kms")) {
            CL_GUARD(cl_trust_kms(val, &t));
        } else if (!strcmp(key, "config_sha256")) {
            CL_GUARD(cl_trust_hex(val, "config_sha256", t.config_sha256, CL_CLIENT_DIGEST_LEN));
            t.pin_config = true;
        } else if (!strcmp(key, "mmproj_sha256")) {
            CL_GUARD(cl_trust_hex(val, "mmproj_sha256", t.mmproj_sha256, CL_CLIENT_DIGEST_LEN));
            t.pin_mmproj = true;
        } else {
            /* Key names are ASCII chosen by whoever wrote the file; not a secret. */
            CL_FAIL(CL_E_NET_CLIENT_TRUST, "unknown key \"%.40s\"", key);
        }
    }
    CL_ENSURE_D(seen_root, CL_E_NET_CLIENT_TRUST, "root_pem: missing");
    CL_ENSURE_D(seen_pcrs, CL_E_NET_CLIENT_TRUST, "pcrs: missing");
    CL_ENSURE_D(seen_model, CL_E_NET_CLIENT_TRUST, "model_sha256: missing");
    *out = t;
    memset(&t, 0, sizeof(t));
out:
    json_decref(root);
    cl_trust_free(&t);
    return rc;
}

cl_err cl_trust_load(const char *path, struct cl_trust *out)
{
    struct cl_buf b;
    cl_buf_init(&b, CL_TRUST_MAX_FILE + 1, CL_BUF_NONE);
    cl_err rc = cl_file_read(path, CL_TRUST_MAX_FILE + 1, &b);
    if (rc == CL_OK)
        rc = cl_trust_parse(b.data ? b.data : (const uint8_t *)"", b.len, out);
    cl_buf_free(&b);
    return rc;
}

cl_err cl_client_pem_cert(const uint8_t *der, size_t n, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf b64;
    cl_buf_init(&b64, 2 * CL_ATTEST_MAX_CERT, CL_BUF_NONE);
    CL_GUARD(cl_b64_encode(der, n, CL_B64_STD, &b64));
    CL_GUARD(cl_buf_append_str(out, CL_TRUST_PEM_BEGIN "\n"));
    for (size_t off = 0; off < b64.len; off += 64) {
        size_t l = b64.len - off < 64 ? b64.len - off : 64;
        CL_GUARD(cl_buf_append(out, b64.data + off, l));
        CL_GUARD(cl_buf_append_u8(out, '\n'));
    }
    CL_GUARD(cl_buf_append_str(out, "-----END CERTIFICATE-----\n"));
out:
    cl_buf_free(&b64);
    return rc;
}

cl_err cl_trust_encode(const struct cl_trust *t, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf pem;
    cl_buf_init(&pem, 4 * CL_ATTEST_MAX_CERT, CL_BUF_NONE);
    json_t *root = NULL, *pcrs = NULL;
    uint8_t *text = NULL;
    char hex[2 * CL_ATTEST_PCR_LEN + 1];
    cl_json_secure();
    CL_ENSURE_D(t->root_der && t->root_len, CL_E_NET_CLIENT_TRUST, "root_pem: missing");
    CL_GUARD(cl_client_pem_cert(t->root_der, t->root_len, &pem));
    root = json_object();
    pcrs = json_object();
    CL_ENSURE(root && pcrs, CL_E_CORE_NOMEM);
    CL_ENSURE(!json_object_set_new(root, "root_pem", json_stringn((const char *)pem.data, pem.len)),
              CL_E_CORE_NOMEM);
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        if (!(t->pcr_present & (1u << i)))
            continue;
        char k[8];
        snprintf(k, sizeof(k), "%u", i);
        cl_hex_encode(t->pcr[i], CL_ATTEST_PCR_LEN, hex);
        CL_ENSURE(!json_object_set_new(pcrs, k, json_string(hex)), CL_E_CORE_NOMEM);
    }
    CL_ENSURE(!json_object_set(root, "pcrs", pcrs), CL_E_CORE_NOMEM);
    cl_hex_encode(t->model_sha256, CL_CLIENT_DIGEST_LEN, hex);
    CL_ENSURE(!json_object_set_new(root, "model_sha256", json_string(hex)), CL_E_CORE_NOMEM);
    CL_ENSURE(!json_object_set_new(root, "max_age_seconds", json_integer((json_int_t)t->max_age_seconds)),
              CL_E_CORE_NOMEM);
    CL_ENSURE(!json_object_set_new(root, "allow_debug", json_boolean(t->allow_debug)), CL_E_CORE_NOMEM);
    if (t->pin_kms) {
        json_t *k = json_object();
        CL_ENSURE(k && !json_object_set_new(root, "kms", k), CL_E_CORE_NOMEM);
        CL_ENSURE(!json_object_set_new(k, "key_arn", json_string(t->kms_key_arn)), CL_E_CORE_NOMEM);
        if (t->pin_kms_endpoint)
            CL_ENSURE(!json_object_set_new(k, "endpoint", json_string(t->kms_endpoint)), CL_E_CORE_NOMEM);
        if (t->pin_kms_ca) {
            if (!t->kms_ca_none)
                cl_hex_encode(t->kms_ca_sha256, CL_CLIENT_DIGEST_LEN, hex);
            CL_ENSURE(!json_object_set_new(k, "ca_sha256", json_string(t->kms_ca_none ? "none" : hex)),
                      CL_E_CORE_NOMEM);
        }
    }
    if (t->pin_config) {
        cl_hex_encode(t->config_sha256, CL_CLIENT_DIGEST_LEN, hex);
        CL_ENSURE(!json_object_set_new(root, "config_sha256", json_string(hex)), CL_E_CORE_NOMEM);
    }
    if (t->pin_mmproj) {
        cl_hex_encode(t->mmproj_sha256, CL_CLIENT_DIGEST_LEN, hex);
        CL_ENSURE(!json_object_set_new(root, "mmproj_sha256", json_string(hex)), CL_E_CORE_NOMEM);
    }
    /* json_dumpb, not json_dumps: the latter's string comes from jansson's
     * allocator (ours, with a header) and cannot be free()d. */
    size_t need = json_dumpb(root, NULL, 0, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    CL_ENSURE(need, CL_E_CORE_NOMEM);
    CL_GUARD(cl_buf_extend(out, need, &text));
    CL_ENSURE(json_dumpb(root, (char *)text, need, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == need, CL_E_CORE_NOMEM);
    CL_GUARD(cl_buf_append_u8(out, '\n'));
out:
    json_decref(pcrs);
    json_decref(root);
    cl_buf_free(&pem);
    return rc;
}
