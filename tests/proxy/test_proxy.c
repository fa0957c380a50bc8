/* cl_proxy request checks and OpenAI shapes, without a network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cloister/proxy.h"
#include "testutil.h"

static cl_err check(const char *body, struct cl_buf *out, bool *stream, struct cl_proxy_error *e)
{
    cl_buf_reset(out);
    return cl_proxy_request_check((const uint8_t *)body, strlen(body), "cloister", out, stream, e);
}

static void test_forwarded_body(void **state)
{
    (void)state;
    struct cl_buf out;
    struct cl_proxy_error e;
    bool stream = false;
    cl_buf_init(&out, 1 << 20, CL_BUF_SECURE);
    const char *req = "{\"model\":\"cloister\",\"user\":\"u1\",\"frequency_penalty\":0,\"stream\":true,\"seed\":3,"
                      "\"max_completion_tokens\":5,\"stop\":[\"a\",\"b\"],\"messages\":[{\"role\":\"user\",\"name\":\"n\","
                      "\"content\":[{\"type\":\"text\",\"text\":\"hi\"},{\"type\":\"image_url\",\"image_url\":"
                      "{\"url\":\"data:image/png;base64,iVBORw0KGgo=\",\"detail\":\"low\"}}]}]}";
    assert_ok(check(req, &out, &stream, &e));
    assert_true(stream);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)out.data, out.len, 0, &jerr);
    assert_non_null(j);
    /* Parts unchanged; unknown members dropped; known ones kept. */
    json_t *part = json_array_get(json_object_get(json_array_get(json_object_get(j, "messages"), 0), "content"), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(part, "image_url"), "url")),
                        "data:image/png;base64,iVBORw0KGgo=");
    assert_null(json_object_get(j, "user"));
    assert_null(json_object_get(j, "frequency_penalty"));
    assert_null(json_object_get(json_array_get(json_object_get(j, "messages"), 0), "name"));
    assert_int_equal(json_integer_value(json_object_get(j, "max_completion_tokens")), 5);
    assert_int_equal(json_integer_value(json_object_get(j, "seed")), 3);
    assert_true(json_is_true(json_object_get(j, "stream")));
    json_decref(j);
    cl_buf_free(&out);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        uint16_t status;
        const char *param, *code;
    } cases[] = {
        {"[]", 400, "", "invalid_json"},
        {"{\"model\":", 400, "", "invalid_json"},
        {"{\"model\":\"cloister\",\"model\":\"x\",\"messages\":[]}", 400, "", "invalid_json"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "model", "invalid_type"},
        {"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404, "model", "model_not_found"},
        {"{\"model\":\"cloister\",\"messages\":[]}", 400, "messages", "invalid_value"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].role", "invalid_value"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "", "invalid_json"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", 400, "messages[0].content[0]", "invalid_value"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]}", 400, "messages[0].content[0]", "invalid_image_url"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:text/html;base64,PGI+\"}}]}]}", 400, "messages[0].content[0]", "invalid_image_url"},
        {"{\"model\":\"cloister\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,<script>\"}}]}]}", 400, "messages[0].content[0]", "invalid_image_url"},
        {"{\"model\":\"cloister\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "n", "unsupported_value"},
        {"{\"model\":\"cloister\",\"stream\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "stream", "invalid_type"},
        {"{\"model\":\"cloister\",\"temperature\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "temperature", "invalid_value"},
        {"{\"model\":\"cloister\",\"top_p\":-1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "top_p", "invalid_value"},
        {"{\"model\":\"cloister\",\"max_tokens\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens", "invalid_value"},
        {"{\"model\":\"cloister\",\"seed\":\"7\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "seed", "invalid_value"},
        {"{\"model\":\"cloister\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "stop", "invalid_value"},
    };
    struct cl_buf out;
    struct cl_proxy_error e;
    bool stream = false;
    cl_buf_init(&out, 1 << 20, CL_BUF_SECURE);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_err(check(cases[i].body, &out, &stream, &e), CL_E_NET_PROXY_REQUEST);
        assert_int_equal(e.status, cases[i].status);
        assert_string_equal(e.param, cases[i].param);
        assert_string_equal(e.code, cases[i].code);
        assert_int_equal(out.len, 0);
        /* The message never echoes the request (here: the content "x" and model "gpt-4o"). */
        assert_null(strstr(e.message, "gpt-4o"));
    }
    cl_buf_free(&out);
}

static void test_shapes(void **state)
{
    (void)state;
    struct cl_buf b;
    cl_buf_init(&b, 1 << 16, CL_BUF_NONE);
    struct cl_proxy_error e;
    cl_proxy_error_from(CL_E_NET_CLIENT_MODEL, NULL, &e);
    assert_int_equal(e.status, 502);
    assert_string_equal(e.type, "attestation_error");
    assert_string_equal(e.code, "net_client_model");
    cl_proxy_error_from(CL_E_NET_CLIENT_HTTP, NULL, &e);
    assert_int_equal(e.status, 503);
    assert_ok(cl_proxy_error_json(&e, &b));
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &jerr);
    assert_non_null(j);
    json_t *o = json_object_get(j, "error");
    assert_true(json_is_string(json_object_get(o, "message")) && json_is_null(json_object_get(o, "param")));
    json_decref(j);
    cl_buf_reset(&b);
    assert_ok(cl_proxy_chunk_sse("chatcmpl-1", 1, "cloister", true, "a\"\n", 3, NULL, &b));
    assert_memory_equal(b.data, "data: {", 7);
    assert_memory_equal(b.data + b.len - 2, "\n\n", 2);
    j = json_loadb((const char *)b.data + 6, b.len - 6, JSON_DISABLE_EOF_CHECK, &jerr);
    assert_non_null(j);
    json_t *d = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(d, "content")), "a\"\n");
    assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
    json_decref(j);
    cl_buf_free(&b);
}

static void test_listen(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    bool lo = false;
    assert_ok(cl_proxy_parse_listen("127.0.0.1:8080", &ss, &lo));
    assert_true(lo);
    assert_ok(cl_proxy_parse_listen("127.1.2.3:0", &ss, &lo));
    assert_true(lo);
    assert_ok(cl_proxy_parse_listen("localhost:1", &ss, &lo));
    assert_true(lo);
    assert_ok(cl_proxy_parse_listen("[::1]:80", &ss, &lo));
    assert_true(lo);
    assert_ok(cl_proxy_parse_listen("0.0.0.0:80", &ss, &lo));
    assert_false(lo);
    assert_ok(cl_proxy_parse_listen("[::]:80", &ss, &lo));
    assert_false(lo);
    assert_ok(cl_proxy_parse_listen("192.168.1.2:80", &ss, &lo));
    assert_false(lo);
    assert_err(cl_proxy_parse_listen("example.com:80", &ss, &lo), CL_E_NET_PROXY_LISTEN);
    assert_err(cl_proxy_parse_listen("127.0.0.1", &ss, &lo), CL_E_NET_PROXY_LISTEN);
    assert_err(cl_proxy_parse_listen("127.0.0.1:99999", &ss, &lo), CL_E_NET_PROXY_LISTEN);
    assert_err(cl_proxy_parse_listen("127.0.0.1:-1", &ss, &lo), CL_E_NET_PROXY_LISTEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded_body),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
