#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "cloister/bhttp.h"
#include "cloister/enclave.h"
#include "cloister/enclave_runtime.h"

/* A generator that answers with fixed pieces, one of them splitting "é". */
static atomic_int gen_calls;
static cl_err fake_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *ctx,
                            struct cl_chat_result *res)
{
    (void)self;
    gen_calls++;
    static const char *const pieces[] = {"Caf", "\xc3", "\xa9", " ok", "."};
    uint32_t n = 0;
    for (int i = 0; i < 5 && n < p->max_tokens; i++, n++)
        if (!piece(ctx, pieces[i], strlen(pieces[i])))
            return CL_E_CORE_IO;
    res->prompt_tokens = (uint32_t)(10 * p->n_msgs);
    res->completion_tokens = n;
    res->finish = n < 5 ? CL_CHAT_FINISH_LENGTH : CL_CHAT_FINISH_STOP;
    return CL_OK;
}

static const struct cl_generator fake = {fake_generate, NULL, "tiny-test"};

struct sink {
    struct cl_buf bytes;
    int responses, chunks;
};

static cl_err sink_emit(void *ctx, enum cl_gw_out kind, const uint8_t *p, size_t n)
{
    struct sink *s = ctx;
    if (kind == CL_GW_OUT_RESPONSE)
        s->responses++;
    else
        s->chunks++;
    return cl_buf_append(&s->bytes, p, n);
}

/* What the last exchange reported for its receipt. */
static struct cl_gw_outcome last_oc;

struct answer {
    uint16_t status;
    char ctype[64];
    struct cl_buf body;
};

/* Client side of one exchange through the gateway. Returns the gateway's rc. */
static cl_err exchange(cl_gateway *g, const char *method, const char *path, const char *json, bool chunked,
                       struct answer *a, struct sink *s, struct cl_buf *enc_out)
{
    struct cl_buf req, enc;
    cl_buf_init(&req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 20, CL_BUF_NONE);
    struct cl_bhttp_msg m = {.method = method, .method_len = strlen(method), .scheme = "https", .scheme_len = 5,
                             .path = path, .path_len = strlen(path), .n_fields = 1,
                             .content = (const uint8_t *)json, .content_len = json ? strlen(json) : 0};
    m.fields[0] = (struct cl_bhttp_field){"content-type", 12, "application/json", 16};
    assert_ok(cl_bhttp_encode(&m, &req));
    cl_ohttp_client *c;
    struct cl_ohttp_keyconfig kc;
    cl_gateway_keyconfig(g, &kc);
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, chunked,
                                    req.data, req.len, &enc, &c));
    cl_buf_init(&s->bytes, 1 << 22, CL_BUF_NONE);
    s->responses = s->chunks = 0;
    cl_err rc = cl_gateway_handle_ex(g, enc.data, enc.len, chunked, sink_emit, s, &last_oc);
    cl_buf_init(&a->body, 1 << 20, CL_BUF_NONE);
    a->status = 0;
    if (rc == CL_OK) {
        struct cl_buf plain;
        cl_buf_init(&plain, 1 << 22, CL_BUF_NONE);
        if (chunked)
            assert_ok(cl_ohttp_client_feed(c, s->bytes.data, s->bytes.len, true, &plain));
        else
            assert_ok(cl_ohttp_client_decap(c, s->bytes.data, s->bytes.len, &plain));
        struct cl_bhttp_reader r;
        cl_bhttp_reader_init(&r, 1 << 20);
        assert_ok(cl_bhttp_reader_feed(&r, plain.data, plain.len, &a->body));
        assert_true(cl_bhttp_reader_done(&r));
        a->status = r.status;
        snprintf(a->ctype, sizeof(a->ctype), "%s", cl_bhttp_reader_field(&r, "content-type"));
        cl_bhttp_reader_free(&r);
        cl_buf_free(&plain);
    }
    if (enc_out)
        assert_ok(cl_buf_append(enc_out, enc.data, enc.len));
    cl_ohttp_client_free(c);
    cl_buf_free(&req);
    cl_buf_free(&enc);
    return rc;
}

static void done(struct answer *a, struct sink *s)
{
    cl_buf_free(&a->body);
    cl_buf_free(&s->bytes);
}

static json_t *body_json(const struct answer *a)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)a->body.data, a->body.len, 0, &e);
    assert_non_null(j);
    return j;
}

static cl_gateway *mk(uint32_t max_sessions)
{
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    l.max_tokens = 64;
    l.max_sessions = max_sessions;
    cl_gateway *g;
    assert_ok(cl_gateway_new(&l, &fake, 1, &g));
    return g;
}

#define MARKER "MARKER-PHI-7f3a9c"
static const char *const chat_req = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                                    "{\"role\":\"user\",\"content\":\"" MARKER "\"}],\"max_tokens\":32}";

static void test_plain(void **state)
{
    (void)state;
    cl_gateway *g = mk(4);
    struct answer a;
    struct sink s;
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, NULL));
    assert_int_equal(a.status, 200);
    assert_int_equal(s.responses, 1);
    assert_string_equal(a.ctype, "application/json");
    assert_null(memmem(s.bytes.data, s.bytes.len, MARKER, strlen(MARKER)));
    json_t *j = body_json(&a);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "message"), "content")),
                        "Caf\xc3\xa9 ok.");
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 25);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_decref(j);
    done(&a, &s);
    cl_gateway_free(g);
}

static void test_stream(void **state)
{
    (void)state;
    cl_gateway *g = mk(4);
    struct answer a;
    struct sink s;
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,\"max_tokens\":3}";
    assert_ok(exchange(g, "POST", "/v1/chat/completions", req, true, &a, &s, NULL));
    assert_int_equal(a.status, 200);
    assert_string_equal(a.ctype, "text/event-stream");
    assert_true(s.chunks >= 4); /* head, role, pieces, final */
    /* reassemble the deltas */
    char text[256] = "";
    const char *p = (const char *)a.body.data, *end = p + a.body.len;
    int events = 0, done_seen = 0;
    while (p < end) {
        const char *nl = memmem(p, (size_t)(end - p), "\n\n", 2);
        assert_non_null(nl);
        assert_memory_equal(p, "data: ", 6);
        if (!strncmp(p + 6, "[DONE]", 6)) {
            done_seen++;
        } else {
            json_error_t e;
            json_t *j = json_loadb(p + 6, (size_t)(nl - p - 6), 0, &e);
            assert_non_null(j);
            json_t *d = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
            json_t *c = json_object_get(d, "content");
            if (json_is_string(c))
                strcat(text, json_string_value(c));
            events++;
            json_decref(j);
        }
        p = nl + 2;
    }
    assert_int_equal(done_seen, 1);
    assert_true(events >= 3);
    assert_string_equal(text, "Caf\xc3\xa9"); /* the split character arrives whole */
    done(&a, &s);
    /* stream requested over plain OHTTP: one answer with all the events */
    assert_ok(exchange(g, "POST", "/v1/chat/completions", req, false, &a, &s, NULL));
    assert_string_equal(a.ctype, "text/event-stream");
    assert_non_null(memmem(a.body.data, a.body.len, "data: [DONE]", 12));
    done(&a, &s);
    cl_gateway_free(g);
}

static void expect_status(cl_gateway *g, const char *method, const char *path, const char *json, uint16_t want)
{
    struct answer a;
    struct sink s;
    int before = gen_calls;
    assert_ok(exchange(g, method, path, json, false, &a, &s, NULL));
    if (a.status != want)
        fail_msg("%s %s: status %u, wanted %u", method, path, a.status, want);
    if (want >= 400) {
        json_t *j = body_json(&a);
        assert_true(json_is_string(json_object_get(json_object_get(j, "error"), "message")));
        json_decref(j);
        assert_int_equal(gen_calls, before); /* refused before generating */
        /* the error never echoes the request */
        if (json)
            assert_null(memmem(a.body.data, a.body.len, MARKER, strlen(MARKER)));
    }
    done(&a, &s);
}

static void test_errors(void **state)
{
    (void)state;
    cl_gateway *g = mk(4);
    expect_status(g, "POST", "/v1/chat/completions", "{not json " MARKER, 400);
    expect_status(g, "POST", "/v1/chat/completions", "[]", 400);
    expect_status(g, "POST", "/v1/chat/completions", "{\"messages\":[]}", 400);
    expect_status(g, "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"tool\",\"content\":\"" MARKER "\"}]}", 400);
    expect_status(g, "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}", 400);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":100000}", 413);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":7}", 400);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", 400);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"messages\":[]}", 400); /* duplicate key */
    expect_status(g, "GET", "/v1/chat/completions", NULL, 405);
    expect_status(g, "POST", "/v1/other", "{}", 404);
    expect_status(g, "GET", "/v1/models", NULL, 200);
    expect_status(g, "POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2,\"seed\":42,\"top_k\":5,"
                  "\"top_p\":0.9,\"min_p\":0.05,\"stop\":\"\\n\",\"user\":\"ignored\"}", 200);
    cl_gateway_free(g);
    g = mk(0);
    expect_status(g, "POST", "/v1/chat/completions", chat_req, 429);
    cl_gateway_free(g);
}

/* An engine whose sequences (or KV budget) are all taken. */
static cl_err busy_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *ctx,
                            struct cl_chat_result *res)
{
    (void)self, (void)p, (void)piece, (void)ctx, (void)res;
    return cl_err_fail(CL_E_PROTO_BUSY, "engine full: 4 of 4 sequences");
}

/* A full engine is a 429 in OpenAI's rate-limit shape, not a server error,
 * streamed or not; the gateway's own session count still has room. */
static void test_engine_busy(void **state)
{
    (void)state;
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    l.max_tokens = 64;
    l.max_sessions = 8;
    const struct cl_generator busy = {busy_generate, NULL, "busy"};
    cl_gateway *g;
    struct answer a;
    struct sink s;
    assert_ok(cl_gateway_new(&l, &busy, 1, &g));
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, NULL));
    assert_int_equal(a.status, 429);
    json_t *j = body_json(&a);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "rate_limit_error");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "full"));
    assert_null(memmem(a.body.data, a.body.len, MARKER, strlen(MARKER)));
    json_decref(j);
    done(&a, &s);
    cl_gateway_free(g);
}

static void test_replay_and_tamper(void **state)
{
    (void)state;
    cl_gateway *g = mk(4);
    struct answer a;
    struct sink s;
    struct cl_buf enc;
    cl_buf_init(&enc, 1 << 20, CL_BUF_NONE);
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, &enc));
    done(&a, &s);
    cl_buf_init(&s.bytes, 1 << 20, CL_BUF_NONE);
    int before = gen_calls;
    assert_err(cl_gateway_handle(g, enc.data, enc.len, false, sink_emit, &s), CL_E_PROTO_REPLAY);
    enc.data[enc.len - 3] ^= 1;
    assert_err(cl_gateway_handle(g, enc.data, enc.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_AUTH);
    assert_int_equal(s.bytes.len, 0); /* nothing emitted */
    assert_int_equal(gen_calls, before);
    /* another gateway (a restarted enclave) has another key */
    cl_gateway *g2 = mk(4);
    enc.data[enc.len - 3] ^= 1;
    assert_int_not_equal(cl_gateway_handle(g2, enc.data, enc.len, false, sink_emit, &s), CL_OK);
    cl_gateway_free(g2);
    cl_buf_free(&s.bytes);
    cl_buf_free(&enc);
    cl_gateway_free(g);
}

static cl_gateway *mk_window(uint32_t window, uint8_t key_id)
{
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    l.max_tokens = 64;
    l.max_sessions = 8;
    l.replay_window = window;
    cl_gateway *g;
    assert_ok(cl_gateway_new(&l, &fake, key_id, &g));
    return g;
}

/* One valid chat request through g, as any client could make one. */
static void valid_request(cl_gateway *g)
{
    struct answer a;
    struct sink s;
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, NULL));
    assert_int_equal(a.status, 200);
    done(&a, &s);
}

/* The attack of issue 9: record a request, push the seen-set past its
 * capacity with other valid requests (anyone can make them: the key is
 * public), replay the recorded one. */
static void test_replay_across_rotation(void **state)
{
    (void)state;
    enum { W = 8 };
    cl_gateway *g = mk_window(W, 40);
    struct cl_ohttp_keyconfig k0, k1;
    cl_gateway_keyconfig(g, &k0);
    struct answer a;
    struct sink s;
    struct cl_buf rec, stale;
    cl_buf_init(&rec, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&stale, 1 << 20, CL_BUF_NONE);
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, &rec));
    assert_int_equal(a.status, 200);
    done(&a, &s);
    cl_buf_init(&s.bytes, 1 << 20, CL_BUF_NONE);
    /* within the key's life: the seen-set refuses it */
    assert_err(cl_gateway_handle(g, rec.data, rec.len, false, sink_emit, &s), CL_E_PROTO_REPLAY);
    assert_int_equal(cl_gateway_http_status(CL_E_PROTO_REPLAY), 400);
    /* a request sealed to the first key but held back by the host */
    struct cl_buf req;
    cl_buf_init(&req, 1 << 20, CL_BUF_NONE);
    struct cl_bhttp_msg m = {.method = "POST", .method_len = 4, .scheme = "https", .scheme_len = 5,
                             .path = "/v1/chat/completions", .path_len = 20,
                             .content = (const uint8_t *)chat_req, .content_len = strlen(chat_req)};
    assert_ok(cl_bhttp_encode(&m, &req));
    cl_ohttp_client *held;
    assert_ok(cl_ohttp_client_encap(&k0, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, false, req.data, req.len, &stale,
                                    &held));
    cl_ohttp_client_free(held);
    /* W - 1 more requests fill the first key's seen-set: it rotates on the last */
    for (int i = 0; i < W - 1; i++) {
        assert_int_equal(cl_gateway_rotations(g), 0);
        valid_request(g);
    }
    assert_int_equal(cl_gateway_rotations(g), 1);
    cl_gateway_keyconfig(g, &k1);
    assert_int_equal(k1.key_id, 41); /* the next id: a stale client sees the change */
    assert_memory_not_equal(k1.pk, k0.pk, sizeof(k0.pk));
    /* and more, past the wrap of any W-entry ring */
    for (int i = 0; i < W + 3; i++)
        valid_request(g);
    assert_int_equal(cl_gateway_rotations(g), 2);
    int before = gen_calls;
    assert_err(cl_gateway_handle(g, rec.data, rec.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_KEY_RETIRED);
    char why[256];
    assert_non_null(strstr(cl_err_format(CL_E_PROTO_OHTTP_KEY_RETIRED, why, sizeof(why)), "key id 40 was retired"));
    assert_int_equal(cl_gateway_http_status(CL_E_PROTO_OHTTP_KEY_RETIRED), 401); /* honest clients re-attest */
    assert_err(cl_gateway_handle(g, stale.data, stale.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_KEY_RETIRED);
    /* relabelled with the current key id it still cannot be opened: the key that could is gone */
    rec.data[0] = k1.key_id + 1;
    assert_err(cl_gateway_handle(g, rec.data, rec.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_AUTH);
    assert_int_equal(cl_gateway_http_status(CL_E_PROTO_OHTTP_AUTH), 401);
    assert_int_equal(s.bytes.len, 0); /* nothing emitted */
    assert_int_equal(gen_calls, before); /* nothing executed */
    /* clients of the current key are served */
    valid_request(g);
    cl_buf_free(&s.bytes);
    cl_buf_free(&rec);
    cl_buf_free(&stale);
    cl_buf_free(&req);
    cl_gateway_free(g);
}

/* Key ids are one byte: after 256 rotations an id comes back, with another key. */
static void test_key_id_wrap(void **state)
{
    (void)state;
    cl_gateway *g = mk_window(1, 255);
    struct answer a;
    struct sink s;
    struct cl_buf rec;
    cl_buf_init(&rec, 1 << 20, CL_BUF_NONE);
    assert_ok(exchange(g, "POST", "/v1/chat/completions", chat_req, false, &a, &s, &rec));
    done(&a, &s);
    struct cl_ohttp_keyconfig kc;
    cl_gateway_keyconfig(g, &kc);
    assert_int_equal(kc.key_id, 0);
    cl_buf_init(&s.bytes, 1 << 20, CL_BUF_NONE);
    assert_err(cl_gateway_handle(g, rec.data, rec.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_KEY_RETIRED);
    for (int i = 0; i < 255; i++)
        valid_request(g);
    cl_gateway_keyconfig(g, &kc);
    assert_int_equal(kc.key_id, 255);
    assert_int_equal(cl_gateway_rotations(g), 256);
    assert_err(cl_gateway_handle(g, rec.data, rec.len, false, sink_emit, &s), CL_E_PROTO_OHTTP_AUTH);
    assert_int_equal(s.bytes.len, 0);
    cl_buf_free(&s.bytes);
    cl_buf_free(&rec);
    cl_gateway_free(g);
}

static void test_window_bounds(void **state)
{
    (void)state;
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    assert_int_equal(l.replay_window, CL_GW_REPLAY_WINDOW);
    cl_gateway *g = NULL;
    l.replay_window = 0;
    assert_err(cl_gateway_new(&l, &fake, 1, &g), CL_E_CORE_INVALID_ARG);
    l.replay_window = CL_GW_REPLAY_WINDOW + 1; /* the knob only lowers it */
    assert_err(cl_gateway_new(&l, &fake, 1, &g), CL_E_CORE_INVALID_ARG);
    assert_null(g);
    l.replay_window = CL_GW_REPLAY_WINDOW;
    assert_ok(cl_gateway_new(&l, &fake, 1, &g));
    cl_gateway_free(g);
}

/* Rotations while other threads are opening requests: every request is
 * answered or refused as stale, and no retired key is used after it is
 * freed (ASan in `make test SAN=1`). */
static cl_gateway *race_g;
static atomic_int race_ok, race_stale;

static void *race_main(void *arg)
{
    (void)arg;
    struct cl_buf req, enc;
    cl_buf_init(&req, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 16, CL_BUF_NONE);
    struct cl_bhttp_msg m = {.method = "GET", .method_len = 3, .scheme = "https", .scheme_len = 5,
                             .path = "/v1/models", .path_len = 10};
    if (cl_bhttp_encode(&m, &req) != CL_OK)
        return NULL;
    for (int i = 0; i < 60; i++) {
        struct cl_ohttp_keyconfig kc;
        cl_gateway_keyconfig(race_g, &kc);
        cl_ohttp_client *c = NULL;
        cl_buf_reset(&enc);
        if (cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES128GCM, false, req.data, req.len, &enc,
                                  &c) != CL_OK)
            break;
        struct sink s;
        cl_buf_init(&s.bytes, 1 << 16, CL_BUF_NONE);
        cl_err rc = cl_gateway_handle(race_g, enc.data, enc.len, false, sink_emit, &s);
        if (rc == CL_OK)
            atomic_fetch_add(&race_ok, 1);
        else if (rc == CL_E_PROTO_OHTTP_KEY_RETIRED)
            atomic_fetch_add(&race_stale, 1);
        cl_buf_free(&s.bytes);
        cl_ohttp_client_free(c);
    }
    cl_buf_free(&req);
    cl_buf_free(&enc);
    return NULL;
}

static void test_rotation_race(void **state)
{
    (void)state;
    race_g = mk_window(5, 1);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_main, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&race_ok) + atomic_load(&race_stale), 240);
    assert_true(atomic_load(&race_ok) >= 5);
    assert_true(cl_gateway_rotations(race_g) >= (uint64_t)atomic_load(&race_ok) / 5);
    cl_gateway_free(race_g);
}

static void test_utf8(void **state)
{
    (void)state;
    struct cl_buf out;
    size_t used;
    cl_buf_init(&out, 256, CL_BUF_NONE);
    /* split character waits (not final), then completes */
    assert_ok(cl_utf8_take((const uint8_t *)"ab\xe2\x82", 4, false, &out, &used));
    assert_int_equal(used, 2);
    assert_int_equal(out.len, 2);
    cl_buf_reset(&out);
    assert_ok(cl_utf8_take((const uint8_t *)"\xe2\x82\xac", 3, false, &out, &used));
    assert_int_equal(used, 3);
    assert_memory_equal(out.data, "\xe2\x82\xac", 3);
    /* invalid bytes, overlong forms and surrogates become U+FFFD */
    const char *bad[] = {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"};
    for (int i = 0; i < 5; i++) {
        cl_buf_reset(&out);
        assert_ok(cl_utf8_take((const uint8_t *)bad[i], strlen(bad[i]), true, &out, &used));
        assert_int_equal(used, strlen(bad[i]));
        assert_memory_equal(out.data, "\xef\xbf\xbd", 3);
    }
    /* a truncated character at the very end is replaced when final */
    cl_buf_reset(&out);
    assert_ok(cl_utf8_take((const uint8_t *)"x\xe2\x82", 3, true, &out, &used));
    assert_int_equal(used, 3);
    assert_memory_equal(out.data, "x\xef\xbf\xbd", 4);
    cl_buf_free(&out);
}

/* A generator slower than the enclave's time limit: the answer is cut. */
static cl_err slow_generate(void *self, const struct cl_chat_params *p, cl_chat_piece_fn piece, void *ctx,
                            struct cl_chat_result *res)
{
    (void)self;
    uint32_t n = 0;
    for (; n < p->max_tokens; n++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (!piece(ctx, "x", 1))
            break;
    }
    res->completion_tokens = n;
    res->finish = CL_CHAT_FINISH_STOP;
    return CL_OK;
}

static void test_time_limit(void **state)
{
    (void)state;
    struct cl_enclave_limits l;
    cl_enclave_limits_default(&l);
    l.request_timeout_ms = 100;
    const struct cl_generator slow = {slow_generate, NULL, "slow"};
    cl_gateway *g;
    assert_ok(cl_gateway_new(&l, &slow, 1, &g));
    struct answer a;
    struct sink s;
    assert_ok(exchange(g, "POST", "/v1/chat/completions",
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":200}", false, &a, &s, NULL));
    json_t *j = body_json(&a);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "length");
    size_t got = strlen(json_string_value(json_object_get(json_object_get(ch, "message"), "content")));
    assert_true(got > 0 && got < 50);
    json_decref(j);
    done(&a, &s);
    cl_gateway_free(g);
}

/* The outcome the service signs a receipt from: chat completions only, with
 * the answer's id, its status and token counts. */
static void test_outcome(void **state)
{
    (void)state;
    cl_gateway *g = mk(4);
    struct answer a;
    struct sink s;
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_ok(exchange(g, "POST", "/v1/chat/completions", req, false, &a, &s, NULL));
    json_t *j = body_json(&a);
    assert_true(last_oc.chat);
    assert_int_equal(last_oc.status, 200);
    assert_false(last_oc.failed);
    assert_false(last_oc.images);
    assert_string_equal(last_oc.consumer, "-");
    assert_string_equal(last_oc.request_id, json_string_value(json_object_get(j, "id")));
    assert_int_equal(last_oc.completion_tokens, 5);
    assert_int_equal(last_oc.prompt_tokens, 10);
    json_decref(j);
    done(&a, &s);
    /* streamed: the same, over chunks */
    assert_ok(exchange(g, "POST", "/v1/chat/completions",
                       "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", true, &a, &s, NULL));
    assert_true(last_oc.chat);
    assert_int_equal(last_oc.status, 200);
    assert_false(last_oc.failed);
    assert_non_null(memmem(a.body.data, a.body.len, last_oc.request_id, strlen(last_oc.request_id)));
    done(&a, &s);
    /* a refused chat request still gets a receipt (status 400); other paths none */
    assert_ok(exchange(g, "POST", "/v1/chat/completions", "{\"messages\":1}", false, &a, &s, NULL));
    assert_true(last_oc.chat);
    assert_int_equal(last_oc.status, 400);
    j = body_json(&a); /* the error answer names the request too, so its receipt can be found */
    assert_string_equal(json_string_value(json_object_get(j, "id")), last_oc.request_id);
    json_decref(j);
    done(&a, &s);
    assert_ok(exchange(g, "GET", "/v1/models", NULL, false, &a, &s, NULL));
    assert_false(last_oc.chat);
    done(&a, &s);
    cl_gateway_free(g);
}

int main(void)
{
    cl_json_secure();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_plain), cmocka_unit_test(test_stream),
                                       cmocka_unit_test(test_errors),
        cmocka_unit_test(test_engine_busy), cmocka_unit_test(test_replay_and_tamper),
                                       cmocka_unit_test(test_replay_across_rotation),
                                       cmocka_unit_test(test_key_id_wrap), cmocka_unit_test(test_window_bounds),
                                       cmocka_unit_test(test_rotation_race), cmocka_unit_test(test_utf8),
                                       cmocka_unit_test(test_time_limit), cmocka_unit_test(test_outcome)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
