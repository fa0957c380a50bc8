/* OpenAI chat-completions requests in, OpenAI objects out. Error messages are
 * fixed texts with field names and numbers: nothing of a request's content is
 * echoed, so a prompt cannot end up in an error or a log. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cloister/encode.h"
#include "cloister/json_secure.h"
#include "cloister/proxy.h"

static cl_err cl_proxy_bad(struct cl_proxy_error *e, uint16_t status, const char *param, const char *code,
                           const char *fmt, ...) CL_PRINTF(5, 6);

static cl_err cl_proxy_bad(struct cl_proxy_error *e, uint16_t status, const char *param, const char *code,
                           const char *fmt, ...)
{
    va_list ap;
    memset(e, 0, sizeof(*e));
    e->status = status;
    e->type = "invalid_request_error";
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return cl_err_fail(CL_E_NET_PROXY_REQUEST, "%s", param ? param : "body");
}

static bool cl_proxy_num(json_t *v, double lo, double hi)
{
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    return isfinite(d) && d >= lo && d <= hi;
}

static bool cl_proxy_data_url(const char *s, size_t n)
{
    /* data:image/<subtype>[;params];base64,<payload> */
    if (n < 11 || strncmp(s, "data:image/", 11))
        return false;
    const char *comma = memchr(s, ',', n);
    if (!comma)
        return false;
    size_t hl = (size_t)(comma - s);
    if (hl < 18 || strncmp(comma - 7, ";base64", 7))
        return false;
    for (const char *q = s + 11; q < comma; q++)
        if (!(isalnum((unsigned char)*q) || strchr("+-.;=/", *q)))
            return false;
    for (const char *q = comma + 1; q < s + n; q++)
        if (!(isalnum((unsigned char)*q) || *q == '+' || *q == '/' || *q == '='))
            return false;
    return (size_t)(s + n - comma - 1) > 0;
}

/* content: a string, or an array of text / image_url parts. */
static cl_err cl_proxy_content(json_t *c, size_t i, struct cl_proxy_error *e)
{
    char param[64];
    snprintf(param, sizeof(param), "messages[%zu].content", i);
    if (json_is_string(c))
        return memchr(json_string_value(c), 0, json_string_length(c))
                   ? cl_proxy_bad(e, 400, param, "invalid_value", "%s must not contain NUL", param)
                   : CL_OK;
    if (!json_is_array(c) || json_array_size(c) == 0 || json_array_size(c) > CL_PROXY_MAX_PARTS)
        return cl_proxy_bad(e, 400, param, "invalid_type",
                            "%s must be a string or an array of 1 to %d content parts", param, CL_PROXY_MAX_PARTS);
    for (size_t j = 0; j < json_array_size(c); j++) {
        json_t *part = json_array_get(c, j), *t = json_object_get(part, "type");
        snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);
        if (!json_is_object(part) || !json_is_string(t))
            return cl_proxy_bad(e, 400, param, "invalid_type", "%s must be an object with a type", param);
        if (!strcmp(json_string_value(t), "text")) {
            json_t *x = json_object_get(part, "text");
            if (!json_is_string(x) || memchr(json_string_value(x), 0, json_string_length(x)))
                return cl_proxy_bad(e, 400, param, "invalid_value", "%s.text must be a string without NUL", param);
        } else if (!strcmp(json_string_value(t), "image_url")) {
            json_t *iu = json_object_get(part, "image_url"), *u = json_object_get(iu, "url");
            if (!json_is_object(iu) || !json_is_string(u))
                return cl_proxy_bad(e, 400, param, "invalid_type", "%s.image_url.url must be a string", param);
            if (!cl_proxy_data_url(json_string_value(u), json_string_length(u)))
                return cl_proxy_bad(e, 400, param, "invalid_image_url",
                                    "%s.image_url.url must be a data:image/...;base64, URL (the proxy fetches "
                                    "nothing from the network)",
                                    param);
            json_t *d = json_object_get(iu, "detail");
            if (d && !json_is_null(d) && !json_is_string(d))
                return cl_proxy_bad(e, 400, param, "invalid_type", "%s.image_url.detail must be a string", param);
        } else {
            return cl_proxy_bad(e, 400, param, "invalid_value", "%s.type must be text or image_url", param);
        }
    }
    return CL_OK;
}

static cl_err cl_proxy_stop_ok(json_t *s, struct cl_proxy_error *e)
{
    size_t n = json_is_array(s) ? json_array_size(s) : 1;
    if (json_is_string(s) || json_is_array(s)) {
        bool ok = n <= 4;
        for (size_t i = 0; ok && i < n; i++) {
            json_t *x = json_is_array(s) ? json_array_get(s, i) : s;
            ok = json_is_string(x) && json_string_length(x) >= 1 && json_string_length(x) <= 64;
        }
        if (ok)
            return CL_OK;
    }
    return cl_proxy_bad(e, 400, "stop", "invalid_value", "stop must be a string or up to 4 strings of 1-64 bytes");
}

cl_err cl_proxy_request_check(const uint8_t *body, size_t n, const char *model_id, struct cl_buf *out, bool *stream,
                              struct cl_proxy_error *e)
{
    cl_err rc = CL_OK;
    json_error_t jerr;
    json_t *r = NULL, *fw = NULL, *msgs = NULL, *v;
    bool st = false;
    cl_json_secure();
    r = json_loadb(body ? (const char *)body : "", n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(r)) {
        rc = cl_proxy_bad(e, 400, NULL, "invalid_json",
                          r ? "the body must be a JSON object" : "the body is not valid JSON (line %d, column %d)",
                          jerr.line, jerr.column);
        goto out;
    }
    v = json_object_get(r, "model");
    if (!json_is_string(v)) {
        rc = cl_proxy_bad(e, 400, "model", "invalid_type", "model must be a string");
        goto out;
    }
    if (strcmp(json_string_value(v), model_id) || json_string_length(v) != strlen(model_id)) {
        rc = cl_proxy_bad(e, 404, "model", "model_not_found",
                          "model not found: this proxy serves only the attested model '%s'", model_id);
        goto out;
    }
    json_t *m = json_object_get(r, "messages");
    if (!json_is_array(m) || json_array_size(m) == 0 || json_array_size(m) > CL_CLIENT_MAX_MESSAGES) {
        rc = cl_proxy_bad(e, 400, "messages", "invalid_value", "messages must be an array of 1 to %d messages",
                          CL_CLIENT_MAX_MESSAGES);
        goto out;
    }
    fw = json_object();
    msgs = json_array();
    CL_ENSURE(fw && msgs, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *msg = json_array_get(m, i), *role = json_object_get(msg, "role");
        const char *rs = json_is_string(role) ? json_string_value(role) : "";
        if (!json_is_object(msg) || (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))) {
            char param[48];
            snprintf(param, sizeof(param), "messages[%zu].role", i);
            rc = cl_proxy_bad(e, 400, param, "invalid_value", "%s must be system, user or assistant", param);
            goto out;
        }
        json_t *c = json_object_get(msg, "content");
        CL_GUARD(cl_proxy_content(c, i, e));
        json_t *fm = json_pack("{s:s,s:O}", "role", rs, "content", c);
        CL_ENSURE(fm, CL_E_CORE_NOMEM);
        CL_ENSURE(json_array_append_new(msgs, fm) == 0, CL_E_CORE_NOMEM);
    }
    if ((v = json_object_get(r, "n")) && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        rc = cl_proxy_bad(e, 400, "n", "unsupported_value", "only n = 1 is supported");
        goto out;
    }
    if ((v = json_object_get(r, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            rc = cl_proxy_bad(e, 400, "stream", "invalid_type", "stream must be a boolean");
            goto out;
        }
        st = json_is_true(v);
    }
    CL_ENSURE(json_object_set(fw, "model", json_object_get(r, "model")) == 0, CL_E_CORE_NOMEM);
    CL_ENSURE(json_object_set(fw, "messages", msgs) == 0, CL_E_CORE_NOMEM);
    static const struct {
        const char *key;
        double lo, hi;
        bool integer;
    } nums[] = {
        {"temperature", 0, 2, false},
        {"top_p", 0, 1, false},
        {"max_tokens", 1, 1e9, true},
        {"max_completion_tokens", 1, 1e9, true},
        {"seed", -9.2e18, 9.2e18, true},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        v = json_object_get(r, nums[i].key);
        if (!v || json_is_null(v))
            continue;
        if (!cl_proxy_num(v, nums[i].lo, nums[i].hi) || (nums[i].integer && !json_is_integer(v))) {
            rc = cl_proxy_bad(e, 400, nums[i].key, "invalid_value", "%s must be %s from %g to %g", nums[i].key,
                              nums[i].integer ? "an integer" : "a number", nums[i].lo, nums[i].hi);
            goto out;
        }
        CL_ENSURE(json_object_set(fw, nums[i].key, v) == 0, CL_E_CORE_NOMEM);
    }
    if ((v = json_object_get(r, "stop")) && !json_is_null(v)) {
        CL_GUARD(cl_proxy_stop_ok(v, e));
        CL_ENSURE(json_object_set(fw, "stop", v) == 0, CL_E_CORE_NOMEM);
    }
    CL_ENSURE(json_object_set_new(fw, "stream", json_boolean(st)) == 0, CL_E_CORE_NOMEM);
    size_t need = json_dumpb(fw, NULL, 0, JSON_COMPACT);
    CL_ENSURE_D(need > 0, CL_E_CORE_NOMEM, "json_dumpb");
    uint8_t *dst;
    CL_GUARD(cl_buf_extend(out, need, &dst));
    CL_ENSURE_D(json_dumpb(fw, (char *)dst, need, JSON_COMPACT) == need, CL_E_NET_INTERNAL, "json_dumpb");
    *stream = st;
out:
    json_decref(msgs);
    json_decref(fw);
    json_decref(r);
    return rc;
}

static cl_err cl_proxy_str_or_null(struct cl_buf *b, const char *s)
{
    cl_err rc = CL_OK;
    if (!s || !*s)
        return cl_buf_append_str(b, "null");
    CL_GUARD(cl_buf_append_u8(b, '"'));
    CL_GUARD(cl_json_escape((const uint8_t *)s, strlen(s), b));
    CL_GUARD(cl_buf_append_u8(b, '"'));
out:
    return rc;
}

cl_err cl_proxy_error_json(const struct cl_proxy_error *e, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_append_str(out, "{\"error\":{\"message\":"));
    CL_GUARD(cl_proxy_str_or_null(out, e->message));
    CL_GUARD(cl_buf_append_str(out, ",\"type\":"));
    CL_GUARD(cl_proxy_str_or_null(out, e->type));
    CL_GUARD(cl_buf_append_str(out, ",\"param\":"));
    CL_GUARD(cl_proxy_str_or_null(out, e->param));
    CL_GUARD(cl_buf_append_str(out, ",\"code\":"));
    CL_GUARD(cl_proxy_str_or_null(out, e->code));
    CL_GUARD(cl_buf_append_str(out, "}}\n"));
out:
    return rc;
}

static const char *cl_proxy_finish(const struct cl_client_result *r)
{
    return r->finish_reason[0] ? r->finish_reason : "stop";
}

cl_err cl_proxy_completion_json(const char *id, uint64_t created, const char *model, const struct cl_client_result *r,
                                struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_appendf(out, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%llu,\"model\":", id,
                            (unsigned long long)created));
    CL_GUARD(cl_proxy_str_or_null(out, model));
    CL_GUARD(cl_buf_append_str(out, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""));
    CL_GUARD(cl_json_escape(r->content.data ? r->content.data : (const uint8_t *)"", r->content.len, out));
    CL_GUARD(cl_buf_append_str(out, "\"},\"logprobs\":null,\"finish_reason\":"));
    CL_GUARD(cl_proxy_str_or_null(out, cl_proxy_finish(r)));
    CL_GUARD(cl_buf_append_str(out, "}]"));
    if (r->has_usage)
        CL_GUARD(cl_buf_appendf(out, ",\"usage\":{\"prompt_tokens\":%llu,\"completion_tokens\":%llu,\"total_tokens\":%llu}",
                                (unsigned long long)r->prompt_tokens, (unsigned long long)r->completion_tokens,
                                (unsigned long long)r->total_tokens));
    CL_GUARD(cl_buf_append_str(out, "}\n"));
out:
    return rc;
}

cl_err cl_proxy_chunk_sse(const char *id, uint64_t created, const char *model, bool first, const char *text, size_t n,
                          const char *finish, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_appendf(out, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%llu,\"model\":",
                            id, (unsigned long long)created));
    CL_GUARD(cl_proxy_str_or_null(out, model));
    CL_GUARD(cl_buf_append_str(out, ",\"choices\":[{\"index\":0,\"delta\":{"));
    if (first)
        CL_GUARD(cl_buf_append_str(out, "\"role\":\"assistant\""));
    if (!finish) {
        CL_GUARD(cl_buf_append_str(out, first ? ",\"content\":\"" : "\"content\":\""));
        CL_GUARD(cl_json_escape((const uint8_t *)(text ? text : ""), text ? n : 0, out));
        CL_GUARD(cl_buf_append_u8(out, '"'));
    }
    CL_GUARD(cl_buf_append_str(out, "},\"logprobs\":null,\"finish_reason\":"));
    CL_GUARD(cl_proxy_str_or_null(out, finish));
    CL_GUARD(cl_buf_append_str(out, "}]}\n\n"));
out:
    return rc;
}

bool cl_proxy_is_attestation_error(cl_err rc)
{
    enum cl_err_category cat = cl_err_category(rc);
    return cat == CL_ERRCAT_ATTEST || cat == CL_ERRCAT_CBOR || rc == CL_E_NET_CLIENT_MODEL ||
           rc == CL_E_NET_CLIENT_KMS || rc == CL_E_NET_CLIENT_CONFIG || rc == CL_E_NET_CLIENT_PUBLIC_KEY ||
           rc == CL_E_NET_CLIENT_KEY_UNCHANGED;
}

void cl_proxy_error_from(cl_err rc, const struct cl_client_result *res, struct cl_proxy_error *e)
{
    char why[400];
    memset(e, 0, sizeof(*e));
    cl_err_format(rc, why, sizeof(why));
    const char *name = cl_err_name(rc);
    snprintf(e->code, sizeof(e->code), "%s", name ? name : "internal");
    for (char *q = e->code; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    e->type = "server_error";
    if (cl_proxy_is_attestation_error(rc)) {
        e->status = 502;
        e->type = "attestation_error";
        snprintf(e->message, sizeof(e->message), "attestation refused, nothing was sent to the enclave: %s", why);
    } else if (rc == CL_E_NET_CLIENT_ANSWER_STATUS && res) {
        e->status = res->status >= 400 && res->status <= 599 ? res->status : 502;
        e->type = res->error_type[0] ? res->error_type : (e->status < 500 ? "invalid_request_error" : "server_error");
        snprintf(e->code, sizeof(e->code), "enclave_error");
        snprintf(e->message, sizeof(e->message), "the enclave answered %u: %s", (unsigned)res->status,
                 res->error_message[0] ? res->error_message : "(no message)");
    } else if (rc == CL_E_NET_CLIENT_HTTP) {
        e->status = 503;
        snprintf(e->message, sizeof(e->message), "the host is unreachable: %s", why);
    } else if (rc == CL_E_NET_CLIENT_LIMIT) {
        e->status = 413;
        e->type = "invalid_request_error";
        snprintf(e->message, sizeof(e->message), "%s", why);
    } else if (cl_err_category(rc) == CL_ERRCAT_NET || cl_err_category(rc) == CL_ERRCAT_PROTO ||
               cl_err_category(rc) == CL_ERRCAT_CRYPTO) {
        e->status = rc == CL_E_NET_CLIENT_HTTP_STATUS ? 503 : 502;
        snprintf(e->message, sizeof(e->message), "host or enclave failure: %s", why);
    } else {
        e->status = 500;
        snprintf(e->message, sizeof(e->message), "proxy failure: %s", why);
    }
}
