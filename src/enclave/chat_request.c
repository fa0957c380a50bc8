/* OpenAI chat-completions request validation. Error messages are fixed
 * strings: nothing of the (secret) input is ever echoed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cloister/encode.h"

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
    l->max_images = 0; /* no projector unless the boot configuration says so */
    l->max_image_bytes = (size_t)8 << 20;
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

/* A message's content as a position in the request: either the JSON string
 * itself (own = false) or bytes assembled in p->owned (own = true). */
struct cl_chat_span {
    bool own;
    size_t off, len;
};

static bool cl_has_marker(const char *s, size_t n)
{
    static const char mk[] = CL_CHAT_MEDIA_MARKER;
    for (size_t i = 0; i + sizeof(mk) - 1 <= n; i++)
        if (s[i] == '<' && !memcmp(s + i, mk, sizeof(mk) - 1))
            return true;
    return false;
}

/* One image_url part: a data: URL with base64 bytes (nothing is fetched),
 * decoded into p->owned; its position goes to spans (resolved at the end). */
static cl_err cl_chat_image(json_t *part, const struct cl_enclave_limits *l, struct cl_chat_params *p,
                            struct cl_chat_span *img, const char **why)
{
    json_t *iu = json_object_get(part, "image_url");
    json_t *u = json_is_object(iu) ? json_object_get(iu, "url") : iu; /* {"url": ..} or the bare string */
    if (!json_is_string(u)) {
        *why = "image_url must hold a url";
        return CL_E_PROTO_REQUEST_INVALID;
    }
    const char *s = json_string_value(u), *comma = NULL;
    size_t n = json_string_length(u);
    if (n < 5 || memcmp(s, "data:", 5) != 0) {
        *why = "images must be data: URLs (the enclave fetches nothing)";
        return CL_E_PROTO_REQUEST_INVALID;
    }
    comma = memchr(s, ',', n < 128 ? n : 128);
    static const char *const types[] = {"data:image/png;base64,", "data:image/jpeg;base64,", "data:image/jpg;base64,",
                                        "data:application/dicom;base64,", NULL};
    bool known = false;
    for (const char *const *t = types; *t && !known; t++)
        known = comma && (size_t)(comma + 1 - s) == strlen(*t) && !strncasecmp(s, *t, strlen(*t));
    if (!known) {
        *why = "image data: URLs must be base64 image/png, image/jpeg or application/dicom";
        return CL_E_PROTO_REQUEST_INVALID;
    }
    size_t b64 = n - (size_t)(comma + 1 - s);
    if (b64 / 4 * 3 > l->max_image_bytes + 2) {
        *why = "an image is over the enclave's max_image_bytes";
        return CL_E_PROTO_LIMIT;
    }
    size_t at = p->owned.len;
    if (cl_b64_decode(comma + 1, b64, CL_B64_STD, &p->owned) != CL_OK || p->owned.len == at) {
        p->owned.len = at;
        *why = "an image's base64 is invalid";
        return CL_E_PROTO_REQUEST_INVALID;
    }
    if (p->owned.len - at > l->max_image_bytes) {
        *why = "an image is over the enclave's max_image_bytes";
        return CL_E_PROTO_LIMIT;
    }
    *img = (struct cl_chat_span){true, at, p->owned.len - at};
    return CL_OK;
}

/* content is a string, or an array of parts: {"type":"text","text":S} and
 * {"type":"image_url","image_url":{"url":"data:image/png;base64,..."}}
 * (user messages only, up to the enclave's max_images). Text parts are
 * joined; each image leaves CL_CHAT_MEDIA_MARKER at its place. */
static cl_err cl_msg_content(json_t *c, bool user, const struct cl_enclave_limits *l, struct cl_chat_params *p,
                             struct cl_chat_span *out, struct cl_chat_span *imgs, const char **why)
{
    if (json_is_string(c)) {
        *out = (struct cl_chat_span){false, 0, json_string_length(c)};
        return CL_OK;
    }
    if (!json_is_array(c) || json_array_size(c) == 0 || json_array_size(c) > 64) {
        *why = "message content must be a string or an array of 1..64 parts";
        return CL_E_PROTO_REQUEST_INVALID;
    }
    /* Pieces of text go to a scratch area first: image bytes are appended to
     * the same buffer while the parts are read. */
    struct cl_chat_span pieces[64];
    size_t n_pieces = 0;
    for (size_t i = 0; i < json_array_size(c); i++) {
        json_t *part = json_array_get(c, i), *t = json_object_get(part, "type");
        const char *ts = json_is_string(t) ? json_string_value(t) : "";
        if (!strcmp(ts, "text")) {
            json_t *tx = json_object_get(part, "text");
            if (!json_is_string(tx)) {
                *why = "a text part needs a text string";
                return CL_E_PROTO_REQUEST_INVALID;
            }
            pieces[n_pieces++] = (struct cl_chat_span){false, i, json_string_length(tx)};
        } else if (!strcmp(ts, "image_url")) {
            if (!user) {
                *why = "images are accepted in user messages only";
                return CL_E_PROTO_REQUEST_INVALID;
            }
            if (l->max_images == 0) {
                *why = "this enclave accepts no images (no vision projector is loaded)";
                return CL_E_PROTO_REQUEST_INVALID;
            }
            if (p->n_images >= l->max_images) {
                *why = "too many images for the enclave's max_images";
                return CL_E_PROTO_LIMIT;
            }
            cl_err rc = cl_chat_image(part, l, p, &imgs[p->n_images], why);
            if (rc != CL_OK)
                return rc;
            p->n_images++;
            pieces[n_pieces++] = (struct cl_chat_span){true, 0, 0}; /* a marker */
        } else {
            *why = "content parts must be of type text or image_url";
            return CL_E_PROTO_REQUEST_INVALID;
        }
    }
    size_t at = p->owned.len;
    for (size_t k = 0; k < n_pieces; k++) {
        cl_err rc;
        if (pieces[k].own) {
            rc = cl_buf_append_str(&p->owned, CL_CHAT_MEDIA_MARKER);
        } else {
            json_t *tx = json_object_get(json_array_get(c, pieces[k].off), "text");
            if (cl_has_marker(json_string_value(tx), json_string_length(tx))) {
                *why = "message text must not contain the reserved marker " CL_CHAT_MEDIA_MARKER;
                return CL_E_PROTO_REQUEST_INVALID;
            }
            rc = cl_buf_append(&p->owned, json_string_value(tx), json_string_length(tx));
        }
        if (rc != CL_OK) {
            *why = "request too large";
            return CL_E_PROTO_LIMIT;
        }
    }
    *out = (struct cl_chat_span){true, at, p->owned.len - at};
    return CL_OK;
}

void cl_chat_params_release(struct cl_chat_params *p)
{
    cl_buf_free(&p->owned); /* secure: wiped */
    p->n_images = 0;
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
    struct cl_chat_span *spans = NULL, imgs[CL_CHAT_MAX_IMAGES];
    memset(p, 0, sizeof(*p));
    /* assembled contents and image bytes: at most the request's size */
    cl_buf_init(&p->owned, n + 64 * 16 + 1, CL_BUF_SECURE);
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
    spans = calloc(json_array_size(m), sizeof(*spans));
    CL_ENSURE(spans, CL_E_CORE_NOMEM);
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *msg = json_array_get(m, i), *role = json_object_get(msg, "role"), *c = json_object_get(msg, "content");
        const char *rs = json_is_string(role) ? json_string_value(role) : "";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant")) {
            *why = "message role must be system, user or assistant";
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "role");
        }
        msgs[i].role = rs;
        rc = cl_msg_content(c, !strcmp(rs, "user"), l, p, &spans[i], imgs, why);
        if (rc != CL_OK)
            CL_FAIL(rc, "content");
        if (!spans[i].own && cl_has_marker(json_string_value(c), json_string_length(c))) {
            *why = "message text must not contain the reserved marker " CL_CHAT_MEDIA_MARKER;
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "content");
        }
    }
    /* p->owned no longer moves: turn positions into pointers. */
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *c = json_object_get(json_array_get(m, i), "content");
        msgs[i].content = spans[i].own ? (const char *)p->owned.data + spans[i].off : json_string_value(c);
        msgs[i].content_len = spans[i].len;
        if (msgs[i].content_len && memchr(msgs[i].content, 0, msgs[i].content_len)) {
            *why = "message content must not contain NUL";
            CL_FAIL(CL_E_PROTO_REQUEST_INVALID, "content");
        }
        if (!msgs[i].content)
            msgs[i].content = "";
    }
    for (size_t k = 0; k < p->n_images; k++)
        p->images[k] = (struct cl_chat_image){p->owned.data + imgs[k].off, imgs[k].len};
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
    free(spans);
    json_decref(r);
    if (rc != CL_OK)
        cl_chat_params_release(p);
    return rc;
}
