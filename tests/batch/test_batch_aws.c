/* The S3, SQS and DynamoDB backends against a hostile endpoint: a loopback
 * HTTP server (a thread) that answers each request with the next canned
 * response, as an operator-controlled "AWS" could. Every bad answer must give
 * a named error, the right transient/permanent class, and nothing stored. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "testutil.h"
#include "cloister/batch_store.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"

#define CL_T_MAX_RESP 16
#define CL_T_REQ_MAX (1024 * 1024)

struct cl_t_resp {
    int status;
    const char *extra; /* extra header lines, each ending \r\n */
    char *body;        /* owned */
    size_t len;
};

static struct {
    int lfd;
    int port;
    pthread_t th;
    pthread_mutex_t mu;
    struct cl_t_resp resp[CL_T_MAX_RESP];
    size_t n_resp, next;
    size_t n_req;
    char last_req[CL_T_REQ_MAX + 1]; /* headers + body of the last request */
    char req_log[8][4096];            /* first 4 KB of each request since the reset */
} cl_t_srv;

static void cl_t_queue(int status, const char *extra, const char *body, size_t len)
{
    pthread_mutex_lock(&cl_t_srv.mu);
    struct cl_t_resp *r = &cl_t_srv.resp[cl_t_srv.n_resp++];
    r->status = status;
    r->extra = extra ? extra : "";
    r->body = malloc(len + 1);
    memcpy(r->body, body, len);
    r->len = len;
    pthread_mutex_unlock(&cl_t_srv.mu);
}
#define CL_T_Q(status, body) cl_t_queue((status), NULL, (body), strlen(body))

static void cl_t_reset(void)
{
    pthread_mutex_lock(&cl_t_srv.mu);
    for (size_t i = 0; i < cl_t_srv.n_resp; i++)
        free(cl_t_srv.resp[i].body);
    cl_t_srv.n_resp = cl_t_srv.next = cl_t_srv.n_req = 0;
    memset(cl_t_srv.req_log, 0, sizeof(cl_t_srv.req_log));
    pthread_mutex_unlock(&cl_t_srv.mu);
}

static void cl_t_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *cl_t_serve(void *arg)
{
    (void)arg;
    static char buf[CL_T_REQ_MAX + 1];
    for (;;) {
        int fd = accept(cl_t_srv.lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        size_t have = 0, need = 0;
        char *eoh = NULL;
        while (have < CL_T_REQ_MAX) {
            ssize_t r = read(fd, buf + have, CL_T_REQ_MAX - have);
            if (r <= 0)
                break;
            have += (size_t)r;
            buf[have] = 0;
            if (!eoh && (eoh = strstr(buf, "\r\n\r\n"))) {
                const char *cl = strcasestr(buf, "\r\ncontent-length:");
                need = (size_t)(eoh + 4 - buf) + (cl && cl < eoh ? strtoul(cl + 17, NULL, 10) : 0);
            }
            if (eoh && have >= need)
                break;
        }
        buf[have] = 0;
        pthread_mutex_lock(&cl_t_srv.mu);
        memcpy(cl_t_srv.last_req, buf, have + 1);
        if (cl_t_srv.n_req < 8)
        {
            size_t k = have < sizeof(cl_t_srv.req_log[0]) - 1 ? have : sizeof(cl_t_srv.req_log[0]) - 1;
            memcpy(cl_t_srv.req_log[cl_t_srv.n_req], buf, k);
            cl_t_srv.req_log[cl_t_srv.n_req][k] = 0;
        }
        cl_t_srv.n_req++;
        struct cl_t_resp r = {500, "", (char *)"{\"__type\":\"NoCannedResponse\"}", 29};
        if (cl_t_srv.next < cl_t_srv.n_resp)
            r = cl_t_srv.resp[cl_t_srv.next++];
        char head[512];
        int hn = snprintf(head, sizeof(head),
                          "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", r.status, r.len,
                          r.extra);
        bool head_only = !strncmp(buf, "HEAD ", 5);
        /* The body is written under the lock: a reset (which frees it) waits
         * until the write has returned, not only until the client read it. */
        cl_t_write_all(fd, head, (size_t)hn);
        if (!head_only)
            cl_t_write_all(fd, r.body, r.len);
        pthread_mutex_unlock(&cl_t_srv.mu);
        close(fd);
    }
}

static int cl_t_setup(void **state)
{
    (void)state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    pthread_mutex_init(&cl_t_srv.mu, NULL);
    cl_t_srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (cl_t_srv.lfd < 0 || bind(cl_t_srv.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(cl_t_srv.lfd, 16) != 0 ||
        getsockname(cl_t_srv.lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    cl_t_srv.port = ntohs(a.sin_port);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_REGION", "us-east-1", 1);
    return pthread_create(&cl_t_srv.th, NULL, cl_t_serve, NULL) == 0 ? 0 : -1;
}

static int cl_t_teardown(void **state)
{
    (void)state;
    shutdown(cl_t_srv.lfd, SHUT_RDWR);
    close(cl_t_srv.lfd);
    pthread_join(cl_t_srv.th, NULL);
    cl_t_reset();
    return 0;
}

static void cl_t_url(char *out, size_t n, const char *scheme_name)
{
    snprintf(out, n, "%s?endpoint=http://127.0.0.1:%d", scheme_name, cl_t_srv.port);
}

static void cl_t_detail_has(const char *s)
{
    const char *d = cl_err_detail();
    if (!d || !strstr(d, s))
        fail_msg("detail '%s' lacks '%s'", d ? d : "(none)", s);
}

/* A well-formed SQS message with the body's true MD5 unless md5 is given. */
static void cl_t_sqs_message(const char *body, const char *md5, const char *count)
{
    uint8_t md[16];
    char hex[33];
    char out[4096];
    if (!md5) {
        unsigned int ml = 0;
        assert_true(EVP_Digest(body, strlen(body), md, &ml, EVP_md5(), NULL) && ml == 16);
        cl_hex_encode(md, 16, hex);
        md5 = hex;
    }
    char esc[2048];
    size_t o = 0;
    for (const char *p = body; *p && o < sizeof(esc) - 3; p++) {
        if (*p == '"' || *p == '\\')
            esc[o++] = '\\';
        esc[o++] = *p;
    }
    esc[o] = 0;
    snprintf(out, sizeof(out),
             "{\"Messages\":[{\"MessageId\":\"m1\",\"ReceiptHandle\":\"rh-1\",\"MD5OfBody\":\"%s\",\"Body\":\"%s\","
             "\"Attributes\":{\"ApproximateReceiveCount\":\"%s\"}}]}",
             md5, esc, count);
    CL_T_Q(200, out);
}

static void test_sqs_hostile(void **state)
{
    (void)state;
    char url[200];
    cl_bstore_queue *q = NULL;
    struct cl_bstore_msg m;
    bool got = true;
    cl_t_reset();
    cl_t_url(url, sizeof(url), "sqs://jobs");
    /* a QueueUrl that is not an http(s) URL */
    CL_T_Q(200, "{\"QueueUrl\":\"file:///etc/passwd\"}");
    assert_err(cl_bstore_queue_open(url, &q), CL_E_STORE_RESPONSE);
    CL_T_Q(200, "{\"QueueUrl\":\"http://127.0.0.1/000000000000/jobs\"}");
    assert_ok(cl_bstore_queue_open(url, &q));
    assert_non_null(strstr(cl_t_srv.last_req, "AmazonSQS.GetQueueUrl"));
    assert_non_null(strstr(cl_t_srv.last_req, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
    assert_non_null(strstr(cl_t_srv.last_req, "/us-east-1/sqs/aws4_request"));
    assert_null(strstr(cl_t_srv.last_req, "wJalrXUtnFEMI")); /* the secret is never sent */

    /* an empty queue */
    CL_T_Q(200, "{}");
    assert_ok(cl_bstore_queue_receive(q, 1500, &m, &got));
    assert_false(got);
    assert_non_null(strstr(cl_t_srv.last_req, "\"VisibilityTimeout\":2"));
    assert_non_null(strstr(cl_t_srv.last_req, "ApproximateReceiveCount"));
    /* a good message */
    cl_t_sqs_message("{\"job_id\":\"abc\",\"object\":\"abc.job\"}", NULL, "3");
    assert_ok(cl_bstore_queue_receive(q, 1000, &m, &got));
    assert_true(got);
    assert_string_equal(m.job_id, "abc");
    assert_int_equal(m.receives, 3);
    assert_string_equal(m.handle, "rh-1");
    /* a body altered in transit: MD5OfBody differs */
    cl_t_sqs_message("{\"job_id\":\"abc\",\"object\":\"abc.job\"}", "00000000000000000000000000000000", "1");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_RESPONSE);
    cl_t_detail_has("MD5OfBody");
    /* no receive count: the retry logic would be blind */
    cl_t_sqs_message("{\"job_id\":\"abc\",\"object\":\"abc.job\"}", NULL, "x1");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_RESPONSE);
    cl_t_detail_has("ApproximateReceiveCount");
    /* more messages than asked for */
    CL_T_Q(200, "{\"Messages\":[{},{}]}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_RESPONSE);
    /* duplicate keys, not JSON */
    CL_T_Q(200, "{\"Messages\":[],\"Messages\":[]}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_RESPONSE);
    CL_T_Q(200, "<xml/>");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_RESPONSE);
    /* a response over the cap */
    size_t big = 2u * 1024 * 1024;
    char *b = malloc(big);
    memset(b, 'a', big);
    cl_t_queue(200, NULL, b, big);
    free(b);
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_TOO_LARGE);
    assert_false(cl_bstore_err_transient(CL_E_STORE_TOO_LARGE));
    /* 5xx and throttling: transient, named; other 4xx: refused; a hostile
     * error code is not echoed */
    CL_T_Q(500, "{\"__type\":\"com.amazon.coral.service#InternalFailure\",\"message\":\"PATIENT-SECRET\"}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_UNAVAILABLE);
    cl_t_detail_has("SQS ReceiveMessage: HTTP 500 InternalFailure");
    assert_null(strstr(cl_err_detail(), "PATIENT-SECRET"));
    CL_T_Q(400, "{\"__type\":\"com.amazonaws.sqs#ThrottlingException\"}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_UNAVAILABLE);
    CL_T_Q(400, "{\"__type\":\"com.amazonaws.sqs#AccessDenied\"}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_REFUSED);
    cl_t_detail_has("HTTP 400 AccessDenied");
    CL_T_Q(400, "{\"__type\":\"<script>PHI</script>\"}");
    assert_err(cl_bstore_queue_receive(q, 1000, &m, &got), CL_E_STORE_REFUSED);
    cl_t_detail_has("HTTP 400 ?");
    /* a message no worker can use goes to QUEUE-dlq with an error record and
     * is deleted: it never blocks the queue */
    cl_t_reset();
    cl_t_sqs_message("this is not a job", NULL, "1");
    CL_T_Q(200, "{\"QueueUrl\":\"http://127.0.0.1/000000000000/jobs-dlq\"}");
    CL_T_Q(200, "{\"MessageId\":\"d1\"}");
    CL_T_Q(200, "{}");
    assert_ok(cl_bstore_queue_receive(q, 1000, &m, &got));
    assert_false(got);
    assert_int_equal(cl_t_srv.n_req, 4);
    assert_non_null(strstr(cl_t_srv.req_log[1], "\"QueueName\":\"jobs-dlq\""));
    assert_non_null(strstr(cl_t_srv.req_log[2], "AmazonSQS.SendMessage"));
    assert_non_null(strstr(cl_t_srv.req_log[2], "STORE_MESSAGE"));
    assert_null(strstr(cl_t_srv.req_log[2], "this is not a job")); /* the record holds no payload */
    assert_non_null(strstr(cl_t_srv.req_log[3], "AmazonSQS.DeleteMessage"));
    assert_non_null(strstr(cl_t_srv.req_log[3], "rh-1"));
    /* an S3 test event is deleted, nothing else */
    cl_t_reset();
    cl_t_sqs_message("{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}", NULL, "1");
    CL_T_Q(200, "{}");
    assert_ok(cl_bstore_queue_receive(q, 1000, &m, &got));
    assert_false(got);
    assert_int_equal(cl_t_srv.n_req, 2);
    cl_bstore_queue_close(q);
    cl_t_reset();
}

static bool cl_t_no_result(void *ctx, const char *job_id, const uint8_t *res, size_t n, const uint8_t *rc, size_t rn)
{
    (void)ctx, (void)job_id, (void)res, (void)n, (void)rc, (void)rn;
    return true;
}

static void test_ddb_hostile(void **state)
{
    (void)state;
    char url[200];
    cl_bstore_results *r = NULL;
    struct cl_buf a, b;
    bool ok = false, stored = true;
    cl_buf_init(&a, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    cl_t_reset();
    cl_t_url(url, sizeof(url), "dynamodb://results");
    CL_T_Q(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException\"}");
    assert_err(cl_bstore_results_open(url, &r), CL_E_STORE_REFUSED);
    cl_t_detail_has("DynamoDB: table results does not exist");
    CL_T_Q(200, "{\"Table\":{\"KeySchema\":[{\"AttributeName\":\"id\",\"KeyType\":\"HASH\"}]}}");
    assert_err(cl_bstore_results_open(url, &r), CL_E_STORE_REFUSED);
    cl_t_detail_has("single hash key job_id");
    CL_T_Q(200, "{\"Table\":{\"KeySchema\":[{\"AttributeName\":\"job_id\",\"KeyType\":\"HASH\"}]}}");
    assert_ok(cl_bstore_results_open(url, &r));
    assert_non_null(strstr(cl_t_srv.last_req, "DynamoDB_20120810.DescribeTable"));

    /* idempotent write: the result's conditional PutItem fails -> not stored */
    cl_t_reset();
    CL_T_Q(200, "{}");
    CL_T_Q(200, "{}");
    CL_T_Q(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException\"}");
    struct cl_bstore_put p = {"job1", true, (const uint8_t *)"RES", 3, (const uint8_t *)"RCPT", 4,
                              (const uint8_t *)"DOC", 3, "abcd", 1};
    assert_ok(cl_bstore_results_put(r, &p, &stored));
    assert_false(stored);
    assert_int_equal(cl_t_srv.n_req, 3);
    assert_non_null(strstr(cl_t_srv.req_log[2], "attribute_not_exists(job_id)"));
    assert_non_null(strstr(cl_t_srv.req_log[2], "\"job_id\":{\"S\":\"job1\"}"));
    assert_non_null(strstr(cl_t_srv.req_log[1], "\"kind\":{\"S\":\"receipt\"}"));
    /* any other refusal of the result is an error, not "already stored" */
    cl_t_reset();
    CL_T_Q(200, "{}");
    CL_T_Q(200, "{}");
    CL_T_Q(400, "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ValidationException\"}");
    assert_err(cl_bstore_results_put(r, &p, &stored), CL_E_STORE_REFUSED);
    cl_t_detail_has("DynamoDB PutItem: HTTP 400 ValidationException");
    /* a result over DynamoDB's item limit is refused before anything is sent */
    cl_t_reset();
    CL_T_Q(200, "{}");
    CL_T_Q(200, "{}");
    uint8_t *big = calloc(1, 320 * 1024);
    struct cl_bstore_put pb = p;
    pb.result = big;
    pb.result_len = 320 * 1024;
    assert_err(cl_bstore_results_put(r, &pb, &stored), CL_E_STORE_TOO_LARGE);
    cl_t_detail_has("400 KB");
    assert_int_equal(cl_t_srv.n_req, 2);
    free(big);

    /* reads: missing, malformed */
    cl_t_reset();
    CL_T_Q(200, "{}");
    assert_err(cl_bstore_results_get(r, "job1", &ok, &a, &b), CL_E_STORE_NOT_FOUND);
    CL_T_Q(200, "{\"Item\":{\"job_id\":{\"S\":\"job1\"},\"kind\":{\"S\":\"result\"},\"status\":{\"S\":\"maybe\"},"
                "\"result\":{\"B\":\"UkVT\"},\"receipt\":{\"B\":\"UkNQVA==\"}}}");
    assert_err(cl_bstore_results_get(r, "job1", &ok, &a, &b), CL_E_STORE_RESPONSE);
    CL_T_Q(200, "{\"Item\":{\"job_id\":{\"S\":\"job1\"},\"kind\":{\"S\":\"result\"},\"status\":{\"S\":\"ok\"},"
                "\"result\":{\"B\":\"!!!\"},\"receipt\":{\"B\":\"UkNQVA==\"}}}");
    assert_err(cl_bstore_results_get(r, "job1", &ok, &a, &b), CL_E_STORE_RESPONSE);
    CL_T_Q(200, "{\"Item\":{\"job_id\":{\"S\":\"job1\"},\"kind\":{\"S\":\"result\"},\"status\":{\"S\":\"ok\"},"
                "\"result\":{\"B\":\"UkVT\"},\"receipt\":{\"B\":\"UkNQVA==\"}}}");
    assert_ok(cl_bstore_results_get(r, "job1", &ok, &a, &b));
    assert_true(ok);
    assert_int_equal(a.len, 3);
    assert_memory_equal(a.data, "RES", 3);
    assert_non_null(strstr(cl_t_srv.last_req, "\"ConsistentRead\":true"));
    /* a Scan whose Count disagrees with its Items */
    CL_T_Q(200, "{\"Count\":2,\"Items\":[]}");
    uint64_t n1 = 0, n2 = 0;
    CL_T_Q(200, "{\"Count\":1}");
    assert_ok(cl_bstore_results_count(r, &n1, &n2)); /* COUNT scans read only Count */
    assert_int_equal(n1, 2);
    assert_int_equal(n2, 1);
    CL_T_Q(200, "{\"Count\":2,\"Items\":[]}");
    assert_err(cl_bstore_results_each_result(r, cl_t_no_result, NULL), CL_E_STORE_RESPONSE);
    cl_t_detail_has("Count");
    CL_T_Q(200, "{\"Item\":\"not an object\"}");
    assert_err(cl_bstore_results_attestation(r, "abcd", &a), CL_E_STORE_RESPONSE);
    cl_bstore_results_close(r);
    cl_buf_free(&a);
    cl_buf_free(&b);
    cl_t_reset();
}

static void test_s3_hostile(void **state)
{
    (void)state;
    char url[200];
    cl_bstore_objects *o = NULL;
    struct cl_buf b;
    uint64_t size = 0;
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    cl_t_reset();
    cl_t_url(url, sizeof(url), "s3://jobs/in/box");
    assert_ok(cl_bstore_objects_open(url, &o));
    /* PUT: path-style, the payload hash signed */
    CL_T_Q(200, "");
    assert_ok(cl_bstore_objects_put(o, "x.job", (const uint8_t *)"CIPHERTEXT", 10));
    assert_non_null(strstr(cl_t_srv.last_req, "PUT /jobs/in/box/x.job HTTP/1.1"));
    uint8_t d[32];
    char hex[65];
    assert_ok(cl_sha256("CIPHERTEXT", 10, d));
    cl_hex_encode(d, 32, hex);
    assert_non_null(strstr(cl_t_srv.last_req, hex));
    assert_non_null(strstr(cl_t_srv.last_req, "/us-east-1/s3/aws4_request"));
    assert_non_null(strstr(cl_t_srv.last_req, "x-amz-content-sha256"));
    /* GET: missing, throttled, refused, oversized */
    CL_T_Q(404, "<Error><Code>NoSuchKey</Code></Error>");
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_NOT_FOUND);
    CL_T_Q(503, "<Error><Code>SlowDown</Code><Message>PATIENT-SECRET</Message></Error>");
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_UNAVAILABLE);
    cl_t_detail_has("S3 GetObject: HTTP 503 SlowDown");
    assert_null(strstr(cl_err_detail(), "PATIENT-SECRET"));
    CL_T_Q(400, "<Error><Code>SlowDown</Code></Error>");
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_UNAVAILABLE);
    CL_T_Q(403, "<Error><Code>AccessDenied</Code></Error>");
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_REFUSED);
    cl_t_detail_has("HTTP 403 AccessDenied");
    char body[4096];
    memset(body, 'z', sizeof(body));
    cl_t_queue(200, NULL, body, sizeof(body));
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_TOO_LARGE);
    cl_t_queue(200, NULL, body, 100);
    assert_ok(cl_bstore_objects_get(o, "x.job", 1024, &b));
    assert_int_equal(b.len, 100);
    /* HEAD and DELETE */
    cl_t_queue(200, NULL, body, 77);
    assert_ok(cl_bstore_objects_head(o, "x.job", &size));
    assert_int_equal(size, 77);
    CL_T_Q(404, "");
    assert_err(cl_bstore_objects_head(o, "x.job", &size), CL_E_STORE_NOT_FOUND);
    CL_T_Q(204, "");
    assert_ok(cl_bstore_objects_delete(o, "x.job"));
    assert_non_null(strstr(cl_t_srv.last_req, "DELETE /jobs/in/box/x.job"));
    /* names that would leave the prefix never reach the wire */
    size_t before = cl_t_srv.n_req;
    assert_err(cl_bstore_objects_get(o, "../x.job", 1024, &b), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_put(o, "a/b", (const uint8_t *)"x", 1), CL_E_STORE_URL);
    assert_int_equal(cl_t_srv.n_req, before);
    cl_bstore_objects_close(o);
    cl_buf_free(&b);
    cl_t_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqs_hostile),
        cmocka_unit_test(test_ddb_hostile),
        cmocka_unit_test(test_s3_hostile),
    };
    return cmocka_run_group_tests(tests, cl_t_setup, cl_t_teardown);
}
