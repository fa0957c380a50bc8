/* SigV4: every case of the AWS test suite (creq, sts, authz), the verifier
 * and the Authorization parser. */
#include "testutil.h"

#include "cloister/file.h"
#include "cloister/sigv4.h"

static const char *const cl_t_cases[] = {
    "get-header-key-duplicate", "get-header-value-multiline", "get-header-value-order", "get-header-value-trim",
    "get-unreserved", "get-utf8", "get-vanilla", "get-vanilla-empty-query-key", "get-vanilla-query",
    "get-vanilla-query-order-key", "get-vanilla-query-order-key-case", "get-vanilla-query-order-value",
    "get-vanilla-query-unreserved", "get-vanilla-utf8-query", "normalize-path/get-relative",
    "normalize-path/get-relative-relative", "normalize-path/get-slash", "normalize-path/get-slash-dot-slash",
    "normalize-path/get-slash-pointless-dot", "normalize-path/get-slashes", "normalize-path/get-space",
    "post-header-key-case", "post-header-key-sort", "post-header-value-case", "post-sts-token/post-sts-header-after",
    "post-sts-token/post-sts-header-before", "post-vanilla", "post-vanilla-empty-query-value", "post-vanilla-query",
    "post-x-www-form-urlencoded", "post-x-www-form-urlencoded-parameters",
};

#define T_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define T_DATE "20150830T123600Z"

struct t_req {
    char method[16];
    char path[512];
    char query[512];
    struct cl_sigv4_header h[32];
    size_t nh;
    char *text; /* owns the header storage */
    struct cl_sigv4_request r;
};

/* The suite's .req format: request line, "Name:value" lines, continuation
 * lines that start with whitespace (each one a further value), blank line,
 * body. */
static void t_parse_req(const uint8_t *data, size_t n, struct t_req *q)
{
    memset(q, 0, sizeof(*q));
    q->text = malloc(n + 1);
    memcpy(q->text, data, n);
    q->text[n] = 0;
    char *p = q->text;
    char *nl = strchr(p, '\n');
    if (nl)
        *nl = 0;
    char *sp1 = strchr(p, ' ');
    char *sp2 = strrchr(p, ' ');
    assert_non_null(sp1);
    assert_true(sp2 > sp1);
    *sp1 = 0;
    *sp2 = 0;
    snprintf(q->method, sizeof(q->method), "%s", p);
    char *uri = sp1 + 1;
    char *qm = strchr(uri, '?');
    if (qm) {
        *qm = 0;
        snprintf(q->query, sizeof(q->query), "%s", qm + 1);
    }
    snprintf(q->path, sizeof(q->path), "%s", uri);
    p = nl ? nl + 1 : p + strlen(p);
    const char *body = NULL;
    while (*p) {
        nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (*p == 0) { /* blank line: body follows */
            body = nl ? nl + 1 : NULL;
            break;
        }
        if ((*p == ' ' || *p == '\t') && q->nh > 0) {
            while (*p == ' ' || *p == '\t')
                p++;
            q->h[q->nh] = q->h[q->nh - 1];
            q->h[q->nh].value = p;
            q->h[q->nh].value_len = strlen(p);
            q->nh++;
        } else {
            char *c = strchr(p, ':');
            assert_non_null(c);
            *c = 0;
            q->h[q->nh].name = p;
            q->h[q->nh].name_len = strlen(p);
            q->h[q->nh].value = c + 1;
            q->h[q->nh].value_len = strlen(c + 1);
            q->nh++;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    q->r.method = q->method;
    q->r.path = q->path;
    q->r.query = q->query;
    q->r.headers = q->h;
    q->r.n_headers = q->nh;
    q->r.body = (const uint8_t *)body;
    q->r.body_len = body ? strlen(body) : 0;
}

static void t_read(const char *dir, const char *name, const char *ext, struct cl_buf *b)
{
    char path[1024];
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    snprintf(path, sizeof(path), "%s/%s/%s.%s", dir, name, base, ext);
    cl_buf_init(b, 1 << 20, CL_BUF_NONE);
    assert_ok(cl_file_read(path, 1 << 20, b));
}

static void t_expect_eq(const char *what, const char *name, const struct cl_buf *got, const struct cl_buf *want)
{
    if (got->len != want->len || memcmp(got->data, want->data, got->len))
        fail_msg("%s %s differs:\n--- got\n%.*s\n--- want\n%.*s", name, what, (int)got->len, (const char *)got->data,
                 (int)want->len, (const char *)want->data);
}

static void test_suite_all(void **state)
{
    (void)state;
    char dir[1024];
    CL_TESTDATA("sigv4/aws-sig-v4-test-suite", dir);
    size_t passed = 0;
    for (size_t i = 0; i < sizeof(cl_t_cases) / sizeof(cl_t_cases[0]); i++) {
        const char *name = cl_t_cases[i];
        struct cl_buf req, creq_w, sts_w, authz_w, creq, sts, authz;
        t_read(dir, name, "req", &req);
        t_read(dir, name, "creq", &creq_w);
        t_read(dir, name, "sts", &sts_w);
        t_read(dir, name, "authz", &authz_w);
        struct t_req q;
        t_parse_req(req.data, req.len, &q);
        cl_buf_init(&creq, 1 << 20, CL_BUF_NONE);
        cl_buf_init(&sts, 1 << 16, CL_BUF_NONE);
        cl_buf_init(&authz, 1 << 16, CL_BUF_NONE);
        assert_ok(cl_sigv4_canonical_request(&q.r, NULL, &creq, NULL));
        t_expect_eq("creq", name, &creq, &creq_w);
        assert_ok(cl_sigv4_string_to_sign(T_DATE, "us-east-1", "service", creq.data, creq.len, &sts));
        t_expect_eq("sts", name, &sts, &sts_w);
        struct cl_sigv4_credentials cred = {"AKIDEXAMPLE", T_SECRET, NULL};
        assert_ok(cl_sigv4_sign(&q.r, &cred, T_DATE, "us-east-1", "service", &authz));
        t_expect_eq("authz", name, &authz, &authz_w);

        /* the verifier accepts the suite's own Authorization header */
        struct cl_sigv4_authz a;
        int64_t now;
        assert_ok(cl_sigv4_parse_date(T_DATE, 16, &now));
        assert_ok(cl_sigv4_parse_authz((const char *)authz_w.data, authz_w.len, &a));
        assert_string_equal(a.access_key, "AKIDEXAMPLE");
        assert_ok(cl_sigv4_verify(&q.r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "service", now + 10, 300));
        assert_err(cl_sigv4_verify(&q.r, &a, "wrong", 5, "us-east-1", "service", now, 300), CL_E_NET_SIGV4_MISMATCH);
        assert_err(cl_sigv4_verify(&q.r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "service", now + 301, 300),
                   CL_E_NET_SIGV4_EXPIRED);
        assert_err(cl_sigv4_verify(&q.r, &a, T_SECRET, strlen(T_SECRET), "us-west-2", "service", now, 300),
                   CL_E_NET_SIGV4_SCOPE);
        assert_err(cl_sigv4_verify(&q.r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "kms", now, 300),
                   CL_E_NET_SIGV4_SCOPE);
        passed++;
        free(q.text);
        cl_buf_free(&req);
        cl_buf_free(&creq_w);
        cl_buf_free(&sts_w);
        cl_buf_free(&authz_w);
        cl_buf_free(&creq);
        cl_buf_free(&sts);
        cl_buf_free(&authz);
    }
    assert_int_equal(passed, 31);
}

static void test_get_vanilla_signature(void **state)
{
    (void)state;
    struct cl_sigv4_header h[] = {{"Host", 4, "example.amazonaws.com", 21}, {"X-Amz-Date", 10, T_DATE, 16}};
    struct cl_sigv4_request r = {.method = "GET", .path = "/", .headers = h, .n_headers = 2};
    struct cl_buf authz;
    cl_buf_init(&authz, 4096, CL_BUF_NONE);
    struct cl_sigv4_credentials cred = {"AKIDEXAMPLE", T_SECRET, NULL};
    assert_ok(cl_sigv4_sign(&r, &cred, T_DATE, "us-east-1", "service", &authz));
    assert_non_null(strstr((const char *)authz.data,
                           "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
    cl_buf_free(&authz);
}

static void test_tampered_body(void **state)
{
    (void)state;
    struct cl_sigv4_header h[] = {{"Host", 4, "kms.local", 9}, {"X-Amz-Date", 10, T_DATE, 16}};
    const char *body = "{\"KeyId\":\"a\"}";
    struct cl_sigv4_request r = {.method = "POST", .path = "/", .headers = h, .n_headers = 2,
                                 .body = (const uint8_t *)body, .body_len = strlen(body)};
    struct cl_buf authz;
    cl_buf_init(&authz, 4096, CL_BUF_NONE);
    struct cl_sigv4_credentials cred = {"AKIDEXAMPLE", T_SECRET, NULL};
    assert_ok(cl_sigv4_sign(&r, &cred, T_DATE, "us-east-1", "kms", &authz));
    struct cl_sigv4_authz a;
    int64_t now;
    assert_ok(cl_sigv4_parse_date(T_DATE, 16, &now));
    assert_ok(cl_sigv4_parse_authz((const char *)authz.data, authz.len, &a));
    assert_ok(cl_sigv4_verify(&r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "kms", now, 300));
    r.body = (const uint8_t *)"{\"KeyId\":\"b\"}";
    assert_err(cl_sigv4_verify(&r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "kms", now, 300),
               CL_E_NET_SIGV4_MISMATCH);
    r.body = (const uint8_t *)body;
    /* a payload hash header that disagrees with the body */
    struct cl_sigv4_header h2[] = {{"Host", 4, "kms.local", 9}, {"X-Amz-Date", 10, T_DATE, 16},
                                   {"X-Amz-Content-Sha256", 20,
                                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64}};
    r.headers = h2;
    r.n_headers = 3;
    assert_err(cl_sigv4_verify(&r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "kms", now, 300),
               CL_E_NET_SIGV4_MISMATCH);
    /* a signed header missing from the request */
    struct cl_sigv4_header h3[] = {{"Host", 4, "kms.local", 9}};
    r.headers = h3;
    r.n_headers = 1;
    assert_err(cl_sigv4_verify(&r, &a, T_SECRET, strlen(T_SECRET), "us-east-1", "kms", now, 300),
               CL_E_NET_SIGV4_MALFORMED);
    cl_buf_free(&authz);
}

static void test_parse_authz_negative(void **state)
{
    (void)state;
    struct cl_sigv4_authz a;
    const char *sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    char ok[512];
    snprintf(ok, sizeof(ok),
             "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, "
             "Signature=%s", sig);
    assert_ok(cl_sigv4_parse_authz(ok, strlen(ok), &a));
    assert_string_equal(a.region, "us-east-1");
    assert_string_equal(a.service, "kms");
    assert_string_equal(a.signed_headers, "host;x-amz-date");
    /* no spaces after commas is accepted too */
    snprintf(ok, sizeof(ok),
             "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request,SignedHeaders=host,Signature=%s",
             sig);
    assert_ok(cl_sigv4_parse_authz(ok, strlen(ok), &a));
    const char *bad[] = {
        "",
        "AWS4-HMAC-SHA1 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms, SignedHeaders=host, Signature=",
        "AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/kms/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request/x, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request",
        "AWS4-HMAC-SHA256 SignedHeaders=host;;x, Signature=",
        "AWS4-HMAC-SHA256 Credential=AK%D/20150830/us-east-1/kms/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Foo=bar",
        "AWS4-HMAC-SHA256 Credential",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_err(cl_sigv4_parse_authz(bad[i], strlen(bad[i]), &a), CL_E_NET_SIGV4_MALFORMED);
    char sigbad[512];
    snprintf(sigbad, sizeof(sigbad),
             "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=%s,"
             " Signature=%s", sig, sig);
    assert_err(cl_sigv4_parse_authz(sigbad, strlen(sigbad), &a), CL_E_NET_SIGV4_MALFORMED);
    char big[4096];
    memset(big, 'A', sizeof(big));
    assert_err(cl_sigv4_parse_authz(big, sizeof(big), &a), CL_E_NET_SIGV4_LIMIT);
}

static void test_dates(void **state)
{
    (void)state;
    int64_t t;
    assert_ok(cl_sigv4_parse_date("19700101T000000Z", 16, &t));
    assert_int_equal(t, 0);
    assert_ok(cl_sigv4_parse_date("20150830T123600Z", 16, &t));
    assert_int_equal(t, 1440938160);
    char out[17];
    cl_sigv4_format_date(t, out);
    assert_string_equal(out, "20150830T123600Z");
    assert_err(cl_sigv4_parse_date("20151330T123600Z", 16, &t), CL_E_NET_SIGV4_MALFORMED);
    assert_err(cl_sigv4_parse_date("20150830 123600Z", 16, &t), CL_E_NET_SIGV4_MALFORMED);
    assert_err(cl_sigv4_parse_date("20150830T1236000", 16, &t), CL_E_NET_SIGV4_MALFORMED);
    assert_err(cl_sigv4_parse_date("2015083xT123600Z", 16, &t), CL_E_NET_SIGV4_MALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_all),        cmocka_unit_test(test_get_vanilla_signature),
        cmocka_unit_test(test_tampered_body),    cmocka_unit_test(test_parse_authz_negative),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
