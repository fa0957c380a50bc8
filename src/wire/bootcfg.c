/* Boot configuration: the one writer, the one reader and the public text
 * (see cloister/bootcfg.h). The host is hostile: the reader accepts exactly
 * the documented members, each bounded and checked. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/bootcfg.h"
#include "cloister/secmem.h"
#include "cloister/encode.h"

static const struct cl_bootcfg_lim_def cl_bootcfg_lims[CL_BOOTCFG_LIM_COUNT] = {
    [CL_BOOTCFG_LIM_MAX_REQUEST_BYTES] = {"max_request_bytes", 1024, 32u << 20, 1u << 20},
    [CL_BOOTCFG_LIM_MAX_TOKENS] = {"max_tokens", 1, 1u << 16, 1024},
    [CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS] = {"max_prompt_tokens", 1, 1u << 20, 4096},
    [CL_BOOTCFG_LIM_MAX_SESSIONS] = {"max_sessions", 1, 256, 4},
    [CL_BOOTCFG_LIM_REQUEST_TIMEOUT_MS] = {"request_timeout_ms", 100, 3600000, 300000},
    [CL_BOOTCFG_LIM_MAX_IMAGES] = {"max_images", 0, 16, 4},
    [CL_BOOTCFG_LIM_MAX_IMAGE_BYTES] = {"max_image_bytes", 1024, 32u << 20, 8u << 20},
    [CL_BOOTCFG_LIM_KV_CACHE_BITS] = {"kv_cache_bits", 16, 32, 32},
};

const struct cl_bootcfg_lim_def *cl_bootcfg_lim(enum cl_bootcfg_lim l)
{
    if (l <= CL_BOOTCFG_LIM_NONE || l >= CL_BOOTCFG_LIM_COUNT)
        return NULL;
    return &cl_bootcfg_lims[l];
}

cl_err cl_bootcfg_lim_check(enum cl_bootcfg_lim l, uint64_t v)
{
    const struct cl_bootcfg_lim_def *d = cl_bootcfg_lim(l);
    if (!d)
        return cl_err_fail(CL_E_CORE_INVALID_ARG, "unknown limit %d", (int)l);
    if (v < d->min || v > d->max)
        return cl_err_fail(CL_E_PROTO_BOOT_CONFIG, "limits.%s must be %llu..%llu", d->name,
                           (unsigned long long)d->min, (unsigned long long)d->max);
    if (l == CL_BOOTCFG_LIM_KV_CACHE_BITS && v != 16 && v != 32)
        return cl_err_fail(CL_E_PROTO_BOOT_CONFIG, "limits.%s must be 16 or 32", d->name);
    return CL_OK;
}

void cl_bootcfg_init(struct cl_bootcfg *c)
{
    memset(c, 0, sizeof(*c));
    for (int l = CL_BOOTCFG_LIM_NONE + 1; l < CL_BOOTCFG_LIM_COUNT; l++)
        c->limits[l] = cl_bootcfg_lims[l].def;
}

void cl_bootcfg_wipe(struct cl_bootcfg *c)
{
    cl_wipe(c, sizeof(*c));
}

/* Printable ASCII without spaces: these become URL, HTTP header and signing
 * input; the endpoint and region also lines of the public text. */
static bool cl_bootcfg_token(const char *s, bool allow_empty)
{
    if (!*s)
        return allow_empty;
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return false;
    return true;
}

/* PEM text: printable ASCII and line breaks only. */
static bool cl_bootcfg_pem(const char *s)
{
    if (!*s)
        return true;
    if (!strstr(s, "-----BEGIN CERTIFICATE-----"))
        return false;
    for (; *s; s++)
        if ((*s < 0x20 || *s >= 0x7f) && *s != '\n' && *s != '\r')
            return false;
    return true;
}

static bool cl_bootcfg_url(const char *s)
{
    return cl_bootcfg_token(s, false) && (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8));
}

static cl_err cl_bootcfg_check(const struct cl_bootcfg *c)
{
    cl_err rc = CL_OK;
    CL_ENSURE_D(cl_bootcfg_url(c->kms_endpoint), CL_E_PROTO_BOOT_CONFIG,
                "kms.endpoint must be an http:// or https:// URL of printable characters");
    CL_ENSURE_D(cl_bootcfg_token(c->kms_region, false), CL_E_PROTO_BOOT_CONFIG, "kms.region");
    CL_ENSURE_D(cl_bootcfg_token(c->access_key_id, false), CL_E_PROTO_BOOT_CONFIG, "kms.access_key_id");
    CL_ENSURE_D(cl_bootcfg_token(c->secret_access_key, false), CL_E_PROTO_BOOT_CONFIG, "kms.secret_access_key");
    CL_ENSURE_D(cl_bootcfg_token(c->session_token, true), CL_E_PROTO_BOOT_CONFIG, "kms.session_token");
    CL_ENSURE_D(cl_bootcfg_pem(c->kms_ca_pem), CL_E_PROTO_BOOT_CONFIG, "kms.ca_pem is not PEM certificate text");
    for (int l = CL_BOOTCFG_LIM_NONE + 1; l < CL_BOOTCFG_LIM_COUNT; l++)
        CL_GUARD(cl_bootcfg_lim_check((enum cl_bootcfg_lim)l, c->limits[l]));
out:
    return rc;
}

static cl_err cl_bootcfg_put(struct cl_buf *out, const char *key, const char *val, bool comma)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_appendf(out, "%s\"%s\":\"", comma ? "," : "", key));
    CL_GUARD(cl_json_escape((const uint8_t *)val, strlen(val), out));
    CL_GUARD(cl_buf_append_str(out, "\""));
out:
    return rc;
}

cl_err cl_bootcfg_write(const struct cl_bootcfg *c, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    size_t start = out->len;
    CL_GUARD(cl_bootcfg_check(c));
    CL_GUARD(cl_buf_append_str(out, "{\"kms\":{"));
    CL_GUARD(cl_bootcfg_put(out, "endpoint", c->kms_endpoint, false));
    CL_GUARD(cl_bootcfg_put(out, "region", c->kms_region, true));
    CL_GUARD(cl_bootcfg_put(out, "access_key_id", c->access_key_id, true));
    CL_GUARD(cl_bootcfg_put(out, "secret_access_key", c->secret_access_key, true));
    if (c->session_token[0])
        CL_GUARD(cl_bootcfg_put(out, "session_token", c->session_token, true));
    if (c->kms_ca_pem[0])
        CL_GUARD(cl_bootcfg_put(out, "ca_pem", c->kms_ca_pem, true));
    CL_GUARD(cl_buf_append_str(out, "},\"limits\":{"));
    for (int l = CL_BOOTCFG_LIM_NONE + 1; l < CL_BOOTCFG_LIM_COUNT; l++)
        CL_GUARD(cl_buf_appendf(out, "%s\"%s\":%llu", l > 1 ? "," : "", cl_bootcfg_lims[l].name,
                                (unsigned long long)c->limits[l]));
    CL_GUARD(cl_buf_append_str(out, c->mmproj ? "},\"mmproj\":true}" : "}}"));
out:
    if (rc != CL_OK) {
        cl_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

static bool cl_bootcfg_only(json_t *o, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(k, *a);
        if (!ok)
            return false;
    }
    return true;
}

static cl_err cl_bootcfg_str(json_t *o, const char *k, char *dst, size_t cap, bool required)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return required ? cl_err_fail(CL_E_PROTO_BOOT_CONFIG, "kms.%s is missing", k) : CL_OK;
    if (!json_is_string(v))
        return cl_err_fail(CL_E_PROTO_BOOT_CONFIG, "kms.%s must be a string", k);
    if (json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v))
        return cl_err_fail(CL_E_PROTO_BOOT_CONFIG, "kms.%s is over %zu bytes or holds a NUL", k, cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CL_OK;
}

cl_err cl_bootcfg_parse(const uint8_t *p, size_t n, struct cl_bootcfg *out)
{
    static const char *const top[] = {"kms", "limits", "mmproj", NULL};
    static const char *const kms[] = {"endpoint", "region", "access_key_id", "secret_access_key",
                                      "session_token", "ca_pem", NULL};
    cl_err rc = CL_OK;
    json_error_t je;
    json_t *j = NULL;
    struct cl_bootcfg *c = NULL;
    CL_ENSURE_D(n <= CL_BOOTCFG_MAX_BYTES, CL_E_PROTO_BOOT_CONFIG, "%zu bytes, over %u", n, CL_BOOTCFG_MAX_BYTES);
    c = malloc(sizeof(*c));
    CL_ENSURE(c, CL_E_CORE_NOMEM);
    cl_bootcfg_init(c);
    j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &je);
    CL_ENSURE_D(json_is_object(j), CL_E_PROTO_BOOT_CONFIG, "not a JSON object without duplicate keys");
    CL_ENSURE_D(cl_bootcfg_only(j, top), CL_E_PROTO_BOOT_CONFIG, "unknown top-level member");
    json_t *k = json_object_get(j, "kms"), *l = json_object_get(j, "limits"), *mp = json_object_get(j, "mmproj");
    CL_ENSURE_D(!mp || json_is_boolean(mp), CL_E_PROTO_BOOT_CONFIG, "mmproj must be true or false");
    c->mmproj = json_is_true(mp);
    CL_ENSURE_D(json_is_object(k), CL_E_PROTO_BOOT_CONFIG, "kms must be an object");
    CL_ENSURE_D(cl_bootcfg_only(k, kms), CL_E_PROTO_BOOT_CONFIG, "unknown member in kms");
    CL_GUARD(cl_bootcfg_str(k, "endpoint", c->kms_endpoint, sizeof(c->kms_endpoint), true));
    CL_GUARD(cl_bootcfg_str(k, "region", c->kms_region, sizeof(c->kms_region), true));
    CL_GUARD(cl_bootcfg_str(k, "access_key_id", c->access_key_id, sizeof(c->access_key_id), true));
    CL_GUARD(cl_bootcfg_str(k, "secret_access_key", c->secret_access_key, sizeof(c->secret_access_key), true));
    CL_GUARD(cl_bootcfg_str(k, "session_token", c->session_token, sizeof(c->session_token), false));
    CL_GUARD(cl_bootcfg_str(k, "ca_pem", c->kms_ca_pem, sizeof(c->kms_ca_pem), false));
    if (l) {
        CL_ENSURE_D(json_is_object(l), CL_E_PROTO_BOOT_CONFIG, "limits must be an object");
        const char *key;
        json_t *v;
        json_object_foreach(l, key, v) {
            int found = CL_BOOTCFG_LIM_NONE;
            for (int i = CL_BOOTCFG_LIM_NONE + 1; i < CL_BOOTCFG_LIM_COUNT && !found; i++)
                if (!strcmp(key, cl_bootcfg_lims[i].name))
                    found = i;
            CL_ENSURE_D(found, CL_E_PROTO_BOOT_CONFIG, "unknown member in limits");
            CL_ENSURE_D(json_is_integer(v) && json_integer_value(v) >= 0, CL_E_PROTO_BOOT_CONFIG,
                        "limits.%s must be a non-negative integer", cl_bootcfg_lims[found].name);
            c->limits[found] = (uint64_t)json_integer_value(v);
        }
    }
    CL_GUARD(cl_bootcfg_check(c));
    memcpy(out, c, sizeof(*c));
out:
    json_decref(j);
    if (c) {
        cl_wipe(c, sizeof(*c));
        free(c);
    }
    return rc;
}
