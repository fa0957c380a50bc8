#include "testutil.h"

#include "cloister/bhttp.h"
#include "cloister/ohttp.h"

static cl_pkey *sk;
static struct cl_ohttp_keyconfig kc;

static int setup(void **state)
{
    (void)state;
    if (cl_pkey_generate(CL_PKEY_X25519, &sk) != CL_OK || cl_x25519_public_raw(sk, kc.pk) != CL_OK)
        return -1;
    kc.key_id = 7;
    kc.kem = CL_HPKE_KEM_X25519_SHA256;
    kc.n_suites = 3;
    kc.suites[0].kdf = CL_HPKE_KDF_SHA256;
    kc.suites[0].aead = CL_HPKE_AEAD_AES256GCM;
    kc.suites[1].kdf = CL_HPKE_KDF_SHA256;
    kc.suites[1].aead = CL_HPKE_AEAD_CHACHA20POLY1305;
    kc.suites[2].kdf = CL_HPKE_KDF_SHA256;
    kc.suites[2].aead = CL_HPKE_AEAD_AES128GCM;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cl_pkey_free(sk);
    return 0;
}

static void test_varint(void **state)
{
    (void)state;
    const uint64_t vals[] = {0, 63, 64, 16383, 16384, (1u << 30) - 1, 1u << 30, ((uint64_t)1 << 62) - 1};
    const size_t lens[] = {1, 1, 2, 2, 4, 4, 8, 8};
    for (size_t i = 0; i < 8; i++) {
        struct cl_buf b;
        struct cl_cursor c;
        uint64_t v;
        cl_buf_init(&b, 16, CL_BUF_NONE);
        assert_ok(cl_varint_put(&b, vals[i]));
        assert_int_equal(b.len, lens[i]);
        cl_cursor_init(&c, b.data, b.len);
        assert_ok(cl_varint_get(&c, &v));
        assert_true(v == vals[i]);
        cl_cursor_init(&c, b.data, b.len - 1);
        if (b.len > 1)
            assert_err(cl_varint_get(&c, &v), CL_E_CORE_TRUNCATED);
        cl_buf_free(&b);
    }
    /* RFC 9000 A.1 example: 0x9d7f3e7d = 494878333 */
    const uint8_t ex[4] = {0x9d, 0x7f, 0x3e, 0x7d};
    struct cl_cursor c;
    uint64_t v;
    cl_cursor_init(&c, ex, 4);
    assert_ok(cl_varint_get(&c, &v));
    assert_int_equal(v, 494878333);
}

static void test_keyconfig(void **state)
{
    (void)state;
    struct cl_buf b;
    struct cl_ohttp_keyconfig back;
    cl_buf_init(&b, 1024, CL_BUF_NONE);
    assert_ok(cl_ohttp_keys_encode(&kc, &b));
    assert_int_equal(b.len, 2 + 1 + 2 + 32 + 2 + 12);
    assert_ok(cl_ohttp_keys_parse(b.data, b.len, &back));
    assert_int_equal(back.key_id, 7);
    assert_int_equal(back.n_suites, 3);
    assert_memory_equal(back.pk, kc.pk, 32);
    assert_ok(cl_ohttp_keyconfig_parse(b.data + 2, b.len - 2, &back));
    assert_err(cl_ohttp_keyconfig_parse(b.data + 2, b.len - 3, &back), CL_E_PROTO_OHTTP_KEY_CONFIG);
    b.data[3] = 0x00; /* KEM 0x0010 (P-256): not supported */
    b.data[4] = 0x10;
    assert_err(cl_ohttp_keys_parse(b.data, b.len, &back), CL_E_PROTO_OHTTP_KEY_CONFIG);
    cl_buf_free(&b);
}

static void round_trip(uint16_t aead, bool chunked, size_t reqlen, size_t feed_step)
{
    struct cl_buf req, enc_req, got_req, enc_res, got_res;
    cl_buf_init(&req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&enc_req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&got_req, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&enc_res, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&got_res, 1 << 20, CL_BUF_NONE);
    for (size_t i = 0; i < reqlen; i++)
        assert_ok(cl_buf_append_u8(&req, (uint8_t)i));
    cl_ohttp_client *c;
    cl_ohttp_server *s;
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, aead, chunked, req.data, req.len, &enc_req, &c));
    assert_ok(cl_ohttp_server_decap(&kc, sk, chunked, enc_req.data, enc_req.len, &got_req, &s));
    assert_int_equal(got_req.len, reqlen);
    if (reqlen)
        assert_memory_equal(got_req.data, req.data, reqlen);
    if (!chunked) {
        assert_ok(cl_ohttp_server_encap(s, (const uint8_t *)"answer", 6, &enc_res));
        assert_err(cl_ohttp_server_encap(s, (const uint8_t *)"again", 5, &enc_res), CL_E_PROTO_OHTTP_STATE);
        assert_ok(cl_ohttp_client_decap(c, enc_res.data, enc_res.len, &got_res));
        assert_int_equal(got_res.len, 6);
        assert_memory_equal(got_res.data, "answer", 6);
    } else {
        const char *parts[] = {"The", " patient", " is", " stable", "."};
        for (int i = 0; i < 5; i++)
            assert_ok(cl_ohttp_server_chunk(s, (const uint8_t *)parts[i], strlen(parts[i]), i == 4, &enc_res));
        assert_err(cl_ohttp_server_chunk(s, (const uint8_t *)"x", 1, false, &enc_res), CL_E_PROTO_OHTTP_STATE);
        for (size_t off = 0; off < enc_res.len; off += feed_step) {
            size_t k = enc_res.len - off < feed_step ? enc_res.len - off : feed_step;
            assert_ok(cl_ohttp_client_feed(c, enc_res.data + off, k, off + k == enc_res.len, &got_res));
        }
        assert_true(cl_ohttp_client_done(c));
        assert_int_equal(got_res.len, strlen("The patient is stable."));
        assert_memory_equal(got_res.data, "The patient is stable.", got_res.len);
    }
    cl_ohttp_client_free(c);
    cl_ohttp_server_free(s);
    cl_buf_free(&req);
    cl_buf_free(&enc_req);
    cl_buf_free(&got_req);
    cl_buf_free(&enc_res);
    cl_buf_free(&got_res);
}

static void test_round_trips(void **state)
{
    (void)state;
    const uint16_t aeads[] = {CL_HPKE_AEAD_AES256GCM, CL_HPKE_AEAD_CHACHA20POLY1305, CL_HPKE_AEAD_AES128GCM};
    for (int a = 0; a < 3; a++)
        for (int ch = 0; ch < 2; ch++) {
            round_trip(aeads[a], ch, 0, 1);
            round_trip(aeads[a], ch, 1000, 7);
            round_trip(aeads[a], ch, 70000, 1000);
        }
}

static void test_tamper(void **state)
{
    (void)state;
    struct cl_buf enc_req, got, enc_res, out;
    cl_buf_init(&enc_req, 4096, CL_BUF_NONE);
    cl_buf_init(&got, 4096, CL_BUF_NONE);
    cl_buf_init(&enc_res, 4096, CL_BUF_NONE);
    cl_buf_init(&out, 4096, CL_BUF_NONE);
    cl_ohttp_client *c;
    cl_ohttp_server *s;
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, true, (const uint8_t *)"hello", 5,
                                    &enc_req, &c));
    /* every byte flip of the request is refused */
    for (size_t i = 0; i < enc_req.len; i++) {
        enc_req.data[i] ^= 0x04;
        cl_err rc = cl_ohttp_server_decap(&kc, sk, true, enc_req.data, enc_req.len, &got, &s);
        enc_req.data[i] ^= 0x04;
        if (rc == CL_OK)
            fail_msg("request byte %zu flip accepted", i);
        assert_int_equal(got.len, 0);
    }
    /* chunked request presented as non-chunked (and vice versa) fails */
    assert_err(cl_ohttp_server_decap(&kc, sk, false, enc_req.data, enc_req.len, &got, &s), CL_E_PROTO_OHTTP_AUTH);
    assert_err(cl_ohttp_server_decap(&kc, sk, true, enc_req.data, 20, &got, &s), CL_E_PROTO_OHTTP_MALFORMED);
    assert_ok(cl_ohttp_server_decap(&kc, sk, true, enc_req.data, enc_req.len, &got, &s));
    assert_ok(cl_ohttp_server_chunk(s, (const uint8_t *)"one", 3, false, &enc_res));
    assert_ok(cl_ohttp_server_chunk(s, (const uint8_t *)"two", 3, true, &enc_res));
    /* truncation: drop the final chunk */
    size_t final_at = enc_res.len - (1 + 3 + 16);
    assert_ok(cl_ohttp_client_feed(c, enc_res.data, final_at, false, &out));
    assert_err(cl_ohttp_client_feed(c, NULL, 0, true, &out), CL_E_PROTO_OHTTP_TRUNCATED);
    assert_int_equal(out.len, 3);
    cl_ohttp_client_free(c);
    cl_ohttp_server_free(s);
    /* a flipped response byte is refused (fresh exchange) */
    cl_buf_reset(&enc_req);
    cl_buf_reset(&got);
    cl_buf_reset(&enc_res);
    cl_buf_reset(&out);
    assert_ok(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, false, (const uint8_t *)"q", 1,
                                    &enc_req, &c));
    assert_ok(cl_ohttp_server_decap(&kc, sk, false, enc_req.data, enc_req.len, &got, &s));
    assert_ok(cl_ohttp_server_encap(s, (const uint8_t *)"a", 1, &enc_res));
    enc_res.data[enc_res.len - 1] ^= 1;
    assert_err(cl_ohttp_client_decap(c, enc_res.data, enc_res.len, &out), CL_E_PROTO_OHTTP_AUTH);
    cl_ohttp_client_free(c);
    cl_ohttp_server_free(s);
    /* wrong key id, unknown suite */
    struct cl_ohttp_keyconfig other = kc;
    other.key_id = 9;
    cl_buf_reset(&enc_req);
    assert_ok(cl_ohttp_client_encap(&other, CL_HPKE_KDF_SHA256, CL_HPKE_AEAD_AES256GCM, false, (const uint8_t *)"q", 1,
                                    &enc_req, &c));
    assert_err(cl_ohttp_server_decap(&kc, sk, false, enc_req.data, enc_req.len, &got, &s), CL_E_PROTO_OHTTP_KEY_ID);
    cl_ohttp_client_free(c);
    assert_err(cl_ohttp_client_encap(&kc, CL_HPKE_KDF_SHA512, CL_HPKE_AEAD_AES256GCM, false, (const uint8_t *)"q", 1,
                                     &enc_req, &c),
               CL_E_PROTO_OHTTP_SUITE);
    cl_buf_free(&enc_req);
    cl_buf_free(&got);
    cl_buf_free(&enc_res);
    cl_buf_free(&out);
}

static void test_bhttp(void **state)
{
    (void)state;
    /* RFC 9292 section 5.1 example request: GET https://www.example.com/hello.txt
     * with user-agent, host and accept-language fields, known-length. */
    static const char rfc_hex[] =
        "0003474554056874747073000a2f68656c6c6f2e747874406c0a757365722d6167656e74346375726c2f372e31362e33"
        "206c69626375726c2f372e31362e33204f70656e53534c2f302e392e376c207a6c69622f312e322e3304686f73740f77"
        "77772e6578616d706c652e636f6d0f6163636570742d6c616e6775616765066c612c20656f000000000000000000000000";
    size_t n;
    uint8_t *raw = cl_test_unhex(rfc_hex, &n);
    struct cl_bhttp_msg m;
    assert_ok(cl_bhttp_decode(raw, n, 1024, &m));
    assert_false(m.is_response);
    assert_int_equal(m.method_len, 3);
    assert_memory_equal(m.method, "GET", 3);
    assert_int_equal(m.authority_len, 0);
    assert_memory_equal(m.path, "/hello.txt", 10);
    assert_int_equal(m.n_fields, 3);
    const struct cl_bhttp_field *f = cl_bhttp_find(&m, "Host");
    assert_non_null(f);
    assert_memory_equal(f->value, "www.example.com", 15);
    assert_int_equal(m.content_len, 0);
    /* re-encoding gives the same bytes up to the padding */
    struct cl_buf b;
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    assert_ok(cl_bhttp_encode(&m, &b));
    assert_true(b.len <= n);
    assert_memory_equal(b.data, raw, b.len);
    /* a response with a body */
    struct cl_bhttp_msg r = {.is_response = 1, .status = 200, .n_fields = 1,
                             .fields = {{"content-type", 12, "application/json", 16}},
                             .content = (const uint8_t *)"{}", .content_len = 2};
    cl_buf_reset(&b);
    assert_ok(cl_bhttp_encode(&r, &b));
    struct cl_bhttp_msg back;
    assert_ok(cl_bhttp_decode(b.data, b.len, 1024, &back));
    assert_int_equal(back.status, 200);
    assert_int_equal(back.content_len, 2);
    assert_err(cl_bhttp_decode(b.data, b.len, 1, &back), CL_E_PROTO_BHTTP_MALFORMED); /* content cap */
    for (size_t cut = 1; cut < b.len - 1; cut++) {
        cl_err rc = cl_bhttp_decode(b.data, cut, 1024, &back);
        /* cutting exactly after the header section is a valid (bodiless) message */
        if (rc == CL_OK)
            assert_int_equal(back.content_len, 0);
    }
    b.data[0] = 2; /* indefinite-length framing is refused */
    assert_err(cl_bhttp_decode(b.data, b.len, 1024, &back), CL_E_PROTO_BHTTP_MALFORMED);
    raw[n - 1] = 1; /* non-zero padding */
    assert_err(cl_bhttp_decode(raw, n, 1024, &m), CL_E_PROTO_BHTTP_MALFORMED);
    free(raw);
    cl_buf_free(&b);
}

static void feed_all(const struct cl_buf *msg, size_t step, struct cl_buf *content, struct cl_bhttp_reader *r)
{
    for (size_t off = 0; off < msg->len; off += step) {
        size_t k = msg->len - off < step ? msg->len - off : step;
        assert_ok(cl_bhttp_reader_feed(r, msg->data + off, k, content));
    }
}

static void test_bhttp_stream(void **state)
{
    (void)state;
    struct cl_buf msg, content;
    cl_buf_init(&msg, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&content, 1 << 16, CL_BUF_NONE);
    const struct cl_bhttp_field f[1] = {{"content-type", 12, "text/event-stream", 17}};
    assert_ok(cl_bhttp_stream_head(200, f, 1, &msg));
    const char *events[] = {"data: {\"a\":1}\n\n", "", "data: [DONE]\n\n"};
    for (int i = 0; i < 3; i++)
        assert_ok(cl_bhttp_stream_data(events[i], strlen(events[i]), &msg));
    assert_ok(cl_bhttp_stream_end(&msg));
    for (size_t step = 1; step <= msg.len; step += 3) {
        struct cl_bhttp_reader r;
        cl_bhttp_reader_init(&r, 1 << 16);
        cl_buf_reset(&content);
        feed_all(&msg, step, &content, &r);
        assert_true(cl_bhttp_reader_done(&r));
        assert_int_equal(r.status, 200);
        assert_string_equal(cl_bhttp_reader_field(&r, "Content-Type"), "text/event-stream");
        assert_null(cl_bhttp_reader_field(&r, "x-missing"));
        assert_int_equal(content.len, strlen(events[0]) + strlen(events[2]));
        cl_bhttp_reader_free(&r);
    }
    /* the reader also takes known-length responses, streaming their content */
    struct cl_bhttp_msg known = {.is_response = 1, .status = 404, .n_fields = 1,
                                 .fields = {{"content-type", 12, "application/json", 16}},
                                 .content = (const uint8_t *)"{\"error\":{}}", .content_len = 12};
    cl_buf_reset(&msg);
    assert_ok(cl_bhttp_encode(&known, &msg));
    for (size_t step = 1; step <= msg.len; step += 2) {
        struct cl_bhttp_reader r;
        cl_bhttp_reader_init(&r, 1 << 16);
        cl_buf_reset(&content);
        feed_all(&msg, step, &content, &r);
        assert_true(cl_bhttp_reader_done(&r));
        assert_int_equal(r.status, 404);
        assert_string_equal(cl_bhttp_reader_field(&r, "content-type"), "application/json");
        assert_int_equal(content.len, 12);
        cl_bhttp_reader_free(&r);
    }
    /* a request, a 1xx status and a content over the cap are refused */
    struct cl_bhttp_reader r;
    const uint8_t req[1] = {0}, info[3] = {3, 0x40, 100};
    cl_bhttp_reader_init(&r, 4);
    assert_err(cl_bhttp_reader_feed(&r, req, 1, &content), CL_E_PROTO_BHTTP_MALFORMED);
    cl_bhttp_reader_free(&r);
    cl_bhttp_reader_init(&r, 4);
    assert_err(cl_bhttp_reader_feed(&r, info, 3, &content), CL_E_PROTO_BHTTP_MALFORMED);
    cl_bhttp_reader_free(&r);
    cl_bhttp_reader_init(&r, 4);
    assert_err(cl_bhttp_reader_feed(&r, msg.data, msg.len, &content), CL_E_PROTO_LIMIT);
    cl_bhttp_reader_free(&r);
    cl_buf_free(&msg);
    cl_buf_free(&content);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_varint), cmocka_unit_test(test_keyconfig),
                                       cmocka_unit_test(test_round_trips), cmocka_unit_test(test_tamper),
                                       cmocka_unit_test(test_bhttp), cmocka_unit_test(test_bhttp_stream)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
