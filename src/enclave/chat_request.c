/* OpenAI chat-completions request validation. Error messages are fixed
 * strings: nothing of the (secret) input is ever echoed. */
#include <math.h>
#include <string.h>

#include "cloister/enclave_runtime.h"

void cl_enclave_limits_default(struct cl_enclave_limits *l)
{
    l->max_request_bytes = (size_t)1 << 20;
    l->max_tokens = 1024;
    l->max_prompt_tokens = 4096;
    l->max_messages = 256;
    l->max_sessions = 4;
    l->request_timeout_ms = 300000;
    l->replay_window = CL_GW_REPLAY_WINDOW;
}

static bool cl_num_in(json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return false;
    *out = d;
    return true;
}

/* content is a string, or an array of {"type":"text","text":...} parts of
 * which exactly one is text (images are not supported by this gateway). */
static bool cl_msg_content(json_t *c, const char **s, size_t *n, const char **why)
{
    if (json_is_string(c)) {
        *s = json_string_value(c);
        *n = json_string_length(c);
        return true;
    }
    if (json_is_array(c) && json_array_size(c) == 1) {
        json_t *part = json_array_get(c, 0), *t = json_object_get(part, "type");
        if (json_is_string(t) && !strcmp(json_string_value(t), "text") &&
            json_is_string(json_object_get(part, "text"))) {
            *s = json_string_value(json_object_get(part, "text"));
            *n = json_string_length(json_object_get(part, "text"));
            return true;
        }
        if (json_is_string(t) && !strcmp(json_string_value(t), "image_url")) {
            *why = "image input is not supported by this model";
            return false;
        }
    }
    *why = "message content must be a string or one text part";
    return false;
}

static cl_err cl_chat_stop(json_t *stop, struct cl_chat_params *p, const char **why)
{
    json_t *one[1] = {stop};
    size_t n = 0;
    if (!stop || json_is_null(stop))
        return CL_OK;
    if (json_is_string(stop))
        n = 1;
    else if (json_is_array(stop))
        n = json_array_size(stop);
    else
        goto bad;
    if (n > CL_CHAT_MAX_STOP)
        goto bad;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_string(stop) ? one[0] : json_array_get(stop, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > CL_CHAT_MAX_STOP_LEN)
            goto bad;
        memcpy(p->stop[i], json_string_value(s), json_string_length(s) + 1);
    }
    p->n_stop = n;
    return CL_OK;
bad:
    *why = "stop must be a string or up to 4 strings of 1..64 bytes";
    return CL_E_PROTO_REQUEST_INVALID;
}

cl_err cl_chat_request_parse(const uint8_t *body, size_t n, const struct cl_enclave_limits *l, json_t **root,
                             struct cl_chat_msg *msgs, struct cl_chat_params *p, const char **why)
{
    cl_err rc = CL_OK;
    json_error_t jerr;
    double d;
    json_t *r = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES, &jerr), *v;
    memset(p, 0, sizeof(*p));
    p->max_tokens = l->max_tokens < 256 ? l->max_tokens : 256;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    *why = "invalid request";
    if (!json_is_object(r)) {
        *why = "body must be a JSON object";
        CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "body");
    }
    json_t *m = json_object_get(r, "messages");
    if (!json_is_array(m) || json_array_size(m) == 0 || json_array_size(m) > l->max_messages) {
        *why = "messages must be a non-empty array within the message limit";
        CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "messages");
    }
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *msg = json_array_get(m, i), *role = json_object_get(msg, "role");
        const char *rs = json_is_string(role) ? json_string_value(role) : "";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant")) {
            *why = "message role must be system, user or assistant";
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "role");
        }
        msgs[i].role = rs;
        if (!cl_msg_content(json_object_get(msg, "content"), &msgs[i].content, &msgs[i].content_len, why))
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "content");
        if (memchr(msgs[i].content, 0, msgs[i].content_len)) {
            *why = "message content must not contain NUL";
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "content");
        }
    }
    p->msgs = msgs;
    p->n_msgs = json_array_size(m);
    if ((v = json_object_get(r, "max_completion_tokens")) || (v = json_object_get(r, "max_tokens"))) {
        if (!json_is_null(v)) {
            if (!cl_num_in(v, 1, l->max_tokens, &d) || d != floor(d)) {
                *why = "max_tokens must be an integer from 1 to the enclave's limit";
                CL_FAIL(CL_E_PROTO_LIMIT, "max_tokens");
            }
            p->max_tokens = (uint32_t)d;
        }
    }
#define CL_OPT_NUM(key, lo, hi, field, msg)                                                    \
    if ((v = json_object_get(r, key)) && !json_is_null(v)) {                                   \
        if (!cl_num_in(v, lo, hi, &d)) {                                                       \
            *why = msg;                                                                        \
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, key);                                          \
        }                                                                                      \
        field;                                                                                 \
    }
    CL_OPT_NUM("temperature", 0, 2, p->temperature = (float)d, "temperature must be from 0 to 2");
    CL_OPT_NUM("top_p", 0, 1, (p->top_p = (float)d, p->set |= CL_CHAT_SET_TOP_P), "top_p must be from 0 to 1");
    CL_OPT_NUM("top_k", 0, 1 << 20, (p->top_k = (int32_t)d, p->set |= CL_CHAT_SET_TOP_K), "top_k must be a non-negative integer");
    CL_OPT_NUM("min_p", 0, 1, (p->min_p = (float)d, p->set |= CL_CHAT_SET_MIN_P), "min_p must be from 0 to 1");
    CL_OPT_NUM("repeat_penalty", 0.01, 10, (p->repeat_penalty = (float)d, p->set |= CL_CHAT_SET_REPEAT), "repeat_penalty must be from 0.01 to 10");
    CL_OPT_NUM("seed", -9.2e18, 9.2e18, (p->seed = (uint64_t)(int64_t)d, p->has_seed = true),
               "seed must be an integer");
#undef CL_OPT_NUM
    if ((v = json_object_get(r, "n")) && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        *why = "only n = 1 is supported";
        CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "n");
    }
    if ((v = json_object_get(r, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            *why = "stream must be a boolean";
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "stream");
        }
        p->stream = json_is_true(v);
    }
    CL_GUARD(cl_chat_stop(json_object_get(r, "stop"), p, why));
    *root = r;
    r = NULL;
out:
    json_decref(r);
    return rc;
}
