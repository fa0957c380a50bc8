/* Chat-completions JSON in and out, and the server-sent-events stream. The
 * request is written by hand into secure memory; parsing goes through
 * jansson with allocators that wipe on free. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client_internal.h"
#include "cloister/encode.h"
#include "cloister/json_secure.h"
#include "cloister/secmem.h"

#define CL_CLIENT_SSE_MAX_LINE ((size_t)1 << 20)


/* ---- request ---- */

static cl_err cl_client_json_str(struct cl_buf *b, const char *s, size_t n)
{
    cl_err rc = CL_OK;
    CL_GUARD(cl_buf_append_u8(b, '"'));
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f)
            continue;
        CL_GUARD(cl_buf_append(b, s + run, i - run));
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            CL_GUARD(cl_buf_append_u8(b, '\\'));
            CL_GUARD(cl_buf_append_u8(b, ch));
        } else if (ch == '\n') {
            CL_GUARD(cl_buf_append_str(b, "\\n"));
        } else if (ch == '\t') {
            CL_GUARD(cl_buf_append_str(b, "\\t"));
        } else if (ch == '\r') {
            CL_GUARD(cl_buf_append_str(b, "\\r"));
        } else {
            CL_GUARD(cl_buf_appendf(b, "\\u%04x", ch));
        }
    }
    CL_GUARD(cl_buf_append(b, s + run, n - run));
    CL_GUARD(cl_buf_append_u8(b, '"'));
out:
    return rc;
}

static bool cl_client_role_ok(const char *r)
{
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant"));
}

cl_err cl_client_request_json(const struct cl_client_msg *msgs, size_t n, const struct cl_client_params *p,
                              bool stream, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    static const struct cl_client_params none;
    if (!p)
        p = &none;
    CL_ENSURE_D(n > 0 && n <= CL_CLIENT_MAX_MESSAGES, CL_E_CORE_INVALID_ARG, "%zu messages", n);
    CL_ENSURE_D(!p->has_temperature || (isfinite(p->temperature) && p->temperature >= 0), CL_E_CORE_INVALID_ARG,
                "temperature");
    CL_ENSURE_D(!p->has_top_p || (isfinite(p->top_p) && p->top_p >= 0 && p->top_p <= 1), CL_E_CORE_INVALID_ARG,
                "top_p");
    const char *model = p->model ? p->model : "cloister";
    CL_GUARD(cl_buf_append_str(out, "{\"model\":"));
    CL_GUARD(cl_client_json_str(out, model, strlen(model)));
    CL_GUARD(cl_buf_append_str(out, ",\"messages\":["));
    for (size_t i = 0; i < n; i++) {
        CL_ENSURE_D(cl_client_role_ok(msgs[i].role), CL_E_CORE_INVALID_ARG, "messages[%zu].role", i);
        CL_ENSURE_D(msgs[i].content || !msgs[i].content_len, CL_E_CORE_INVALID_ARG, "messages[%zu].content", i);
        CL_GUARD(cl_buf_appendf(out, "%s{\"role\":\"%s\",\"content\":", i ? "," : "", msgs[i].role));
        if (msgs[i].n_images) {
            CL_GUARD(cl_buf_append_u8(out, '['));
            for (size_t k = 0; k < msgs[i].n_images; k++) {
                const struct cl_client_image *im = &msgs[i].images[k];
                CL_ENSURE_D(im->data && im->len && im->mime && strspn(im->mime, "abcdefghijklmnopqrstuvwxyz/-.") ==
                                                                    strlen(im->mime),
                            CL_E_CORE_INVALID_ARG, "messages[%zu].images[%zu]", i, k);
                CL_GUARD(cl_buf_appendf(out, "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:%s;base64,",
                                        im->mime));
                CL_GUARD(cl_b64_encode(im->data, im->len, CL_B64_STD, out));
                CL_GUARD(cl_buf_append_str(out, "\"}},"));
            }
            CL_GUARD(cl_buf_append_str(out, "{\"type\":\"text\",\"text\":"));
            CL_GUARD(cl_client_json_str(out, msgs[i].content ? msgs[i].content : "", msgs[i].content_len));
            CL_GUARD(cl_buf_append_str(out, "}]}"));
        } else {
            CL_GUARD(cl_client_json_str(out, msgs[i].content ? msgs[i].content : "", msgs[i].content_len));
            CL_GUARD(cl_buf_append_u8(out, '}'));
        }
    }
    CL_GUARD(cl_buf_append_u8(out, ']'));
    if (p->has_max_tokens)
        CL_GUARD(cl_buf_appendf(out, ",\"max_tokens\":%llu", (unsigned long long)p->max_tokens));
    if (p->has_temperature)
        CL_GUARD(cl_buf_appendf(out, ",\"temperature\":%.9g", p->temperature));
    if (p->has_top_p)
        CL_GUARD(cl_buf_appendf(out, ",\"top_p\":%.9g", p->top_p));
    if (p->has_seed)
        CL_GUARD(cl_buf_appendf(out, ",\"seed\":%llu", (unsigned long long)p->seed));
    CL_GUARD(cl_buf_appendf(out, ",\"stream\":%s}", stream ? "true" : "false"));
out:
    return rc;
}

/* ---- answers ---- */

void cl_client_result_init(struct cl_client_result *r)
{
    memset(r, 0, sizeof(*r));
    cl_buf_init(&r->content, CL_CLIENT_MAX_ANSWER, CL_BUF_SECURE);
}

void cl_client_result_free(struct cl_client_result *r)
{
    cl_buf_free(&r->content);
    cl_wipe(r, sizeof(*r));
}

/* Printable ASCII only: these strings reach a terminal. */
static void cl_client_copy_text(char *dst, size_t cap, json_t *v)
{
    dst[0] = 0;
    if (!json_is_string(v))
        return;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    dst[o] = 0;
}

static void cl_client_usage(json_t *u, struct cl_client_result *res)
{
    if (!json_is_object(u))
        return;
    json_t *pt = json_object_get(u, "prompt_tokens"), *ct = json_object_get(u, "completion_tokens"),
           *tt = json_object_get(u, "total_tokens");
    if (!json_is_integer(pt) || !json_is_integer(ct) || json_integer_value(pt) < 0 || json_integer_value(ct) < 0)
        return;
    res->prompt_tokens = (uint64_t)json_integer_value(pt);
    res->completion_tokens = (uint64_t)json_integer_value(ct);
    res->total_tokens = json_is_integer(tt) && json_integer_value(tt) >= 0 ? (uint64_t)json_integer_value(tt)
                                                                            : res->prompt_tokens +
                                                                                  res->completion_tokens;
    res->has_usage = true;
}

static cl_err cl_client_error_obj(json_t *root, uint16_t status, struct cl_client_result *res)
{
    json_t *e = json_object_get(root, "error");
    res->status = status;
    cl_client_copy_text(res->id, sizeof(res->id), json_object_get(root, "id"));
    if (json_is_object(e)) {
        cl_client_copy_text(res->error_type, sizeof(res->error_type), json_object_get(e, "type"));
        cl_client_copy_text(res->error_message, sizeof(res->error_message), json_object_get(e, "message"));
    } else if (json_is_string(e)) {
        cl_client_copy_text(res->error_message, sizeof(res->error_message), e);
    }
    return cl_err_fail(CL_E_NET_CLIENT_ANSWER_STATUS, "status %u", (unsigned)status);
}

static json_t *cl_client_choice0(json_t *root)
{
    json_t *ch = json_object_get(root, "choices");
    if (!json_is_array(ch) || json_array_size(ch) < 1)
        return NULL;
    json_t *c0 = json_array_get(ch, 0);
    return json_is_object(c0) ? c0 : NULL;
}

cl_err cl_client_parse_completion(const uint8_t *p, size_t n, uint16_t status, struct cl_client_result *res)
{
    cl_err rc = CL_OK;
    cl_json_secure();
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    CL_ENSURE_D(root && json_is_object(root), CL_E_NET_CLIENT_RESPONSE, "answer body is not a JSON object");
    if (status != 200) {
        rc = cl_client_error_obj(root, status, res);
        goto out;
    }
    json_t *c0 = cl_client_choice0(root);
    CL_ENSURE_D(c0, CL_E_NET_CLIENT_RESPONSE, "choices[0]: missing");
    json_t *msg = json_object_get(c0, "message");
    CL_ENSURE_D(json_is_object(msg), CL_E_NET_CLIENT_RESPONSE, "choices[0].message: missing");
    json_t *content = json_object_get(msg, "content");
    CL_ENSURE_D(json_is_string(content), CL_E_NET_CLIENT_RESPONSE, "choices[0].message.content: expected a string");
    cl_buf_reset(&res->content);
    CL_GUARD(cl_buf_append(&res->content, json_string_value(content), json_string_length(content)));
    cl_client_copy_text(res->finish_reason, sizeof(res->finish_reason), json_object_get(c0, "finish_reason"));
    cl_client_copy_text(res->id, sizeof(res->id), json_object_get(root, "id"));
    cl_client_usage(json_object_get(root, "usage"), res);
    res->status = status;
out:
    json_decref(root);
    return rc;
}

/* ---- server-sent events ---- */

void cl_client_sse_init(struct cl_client_sse *s, cl_client_token_fn on_token, void *arg, struct cl_client_result *res)
{
    memset(s, 0, sizeof(*s));
    cl_buf_init(&s->line, CL_CLIENT_SSE_MAX_LINE, CL_BUF_SECURE);
    s->on_token = on_token;
    s->arg = arg;
    s->res = res;
}

void cl_client_sse_free(struct cl_client_sse *s) { cl_buf_free(&s->line); }

static cl_err cl_client_sse_data(struct cl_client_sse *s, const uint8_t *d, size_t n)
{
    cl_err rc = CL_OK;
    json_t *root = NULL;
    if (n == 6 && !memcmp(d, "[DONE]", 6)) {
        s->done = true;
        return CL_OK;
    }
    json_error_t jerr;
    root = json_loadb((const char *)d, n, JSON_REJECT_DUPLICATES, &jerr);
    CL_ENSURE_D(root && json_is_object(root), CL_E_NET_CLIENT_RESPONSE, "stream event is not a JSON object");
    if (json_object_get(root, "error")) {
        rc = cl_client_error_obj(root, 500, s->res);
        goto out;
    }
    json_t *c0 = cl_client_choice0(root);
    if (json_is_string(json_object_get(root, "id")))
        cl_client_copy_text(s->res->id, sizeof(s->res->id), json_object_get(root, "id"));
    if (c0) {
        json_t *delta = json_object_get(c0, "delta");
        json_t *content = json_is_object(delta) ? json_object_get(delta, "content") : NULL;
        if (content && !json_is_null(content)) {
            CL_ENSURE_D(json_is_string(content), CL_E_NET_CLIENT_RESPONSE,
                        "choices[0].delta.content: expected a string");
            size_t len = json_string_length(content);
            if (len) {
                CL_GUARD(cl_buf_append(&s->res->content, json_string_value(content), len));
                if (s->on_token)
                    CL_GUARD(s->on_token(s->arg, json_string_value(content), len));
            }
        }
        json_t *fr = json_object_get(c0, "finish_reason");
        if (json_is_string(fr))
            cl_client_copy_text(s->res->finish_reason, sizeof(s->res->finish_reason), fr);
    }
    cl_client_usage(json_object_get(root, "usage"), s->res);
out:
    json_decref(root);
    return rc;
}

static cl_err cl_client_sse_line(struct cl_client_sse *s, const uint8_t *l, size_t n)
{
    if (n && l[n - 1] == '\r')
        n--;
    if (!n)
        return CL_OK; /* event boundary */
    if (s->done)
        return cl_err_fail(CL_E_NET_CLIENT_RESPONSE, "stream event after data: [DONE]");
    if (l[0] == ':')
        return CL_OK; /* comment */
    if (n >= 5 && !memcmp(l, "data:", 5)) {
        size_t off = (n > 5 && l[5] == ' ') ? 6 : 5;
        return cl_client_sse_data(s, l + off, n - off);
    }
    return CL_OK; /* event:, id:, retry: carry nothing for us */
}

cl_err cl_client_sse_feed(struct cl_client_sse *s, const uint8_t *p, size_t n)
{
    cl_err rc = CL_OK;
    cl_json_secure();
    while (n) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (s->line.len + take > CL_CLIENT_SSE_MAX_LINE)
            CL_FAIL(CL_E_NET_CLIENT_LIMIT, "stream event line over %zu bytes", CL_CLIENT_SSE_MAX_LINE);
        CL_GUARD(cl_buf_append(&s->line, p, take));
        if (!nl)
            break;
        CL_GUARD(cl_client_sse_line(s, s->line.data ? s->line.data : (const uint8_t *)"", s->line.len));
        cl_buf_reset(&s->line);
        p += take + 1;
        n -= take + 1;
    }
out:
    return rc;
}

cl_err cl_client_sse_finish(struct cl_client_sse *s)
{
    if (s->line.len)
        return cl_err_fail(CL_E_NET_CLIENT_STREAM_INCOMPLETE, "stream ended inside an event line");
    if (!s->done)
        return cl_err_fail(CL_E_NET_CLIENT_STREAM_INCOMPLETE, "stream ended without data: [DONE]");
    return CL_OK;
}
