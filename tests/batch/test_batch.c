/* Batch job/result objects, receipts and the embedded storage backends. */
#include <sys/resource.h>
#include <sys/stat.h>
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "cloister/batch.h"
#include "cloister/batch_store.h"
#include "cloister/crypto.h"
#include "cloister/secmem.h"
#include "cloister/wire_job.h"

static void cl_t_header(struct cl_batch_job_header *h, const char *id)
{
    memset(h, 0, sizeof(*h));
    snprintf(h->job_id, sizeof(h->job_id), "%s", id);
    snprintf(h->consumer, sizeof(h->consumer), "hospital-a");
    snprintf(h->key_id, sizeof(h->key_id), "alias/consumer");
    h->wrapped_len = 40;
    memset(h->wrapped, 0xab, 40);
}

static void test_job_roundtrip(void **state)
{
    (void)state;
    uint8_t k[32], k2[32];
    struct cl_batch_job_header h, g;
    struct cl_buf obj, pt;
    const char req[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_ok(cl_random_bytes(k, 32));
    assert_ok(cl_random_bytes(k2, 32));
    cl_t_header(&h, "job-1");
    cl_buf_init(&obj, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&pt, 1 << 20, CL_BUF_SECURE);
    assert_ok(cl_batch_job_seal(&h, k, (const uint8_t *)req, strlen(req), &obj));
    assert_null(memmem(obj.data, obj.len, "content", 7)); /* the request is not in the clear */
    assert_ok(cl_batch_job_header_parse(obj.data, obj.len, &g));
    assert_string_equal(g.job_id, "job-1");
    assert_string_equal(g.consumer, "hospital-a");
    assert_int_equal(g.wrapped_len, 40);
    assert_ok(cl_batch_job_open(obj.data, obj.len, k, &pt));
    assert_int_equal(pt.len, strlen(req));
    assert_memory_equal(pt.data, req, pt.len);
    /* another key, an altered header (consumer re-labelled), an altered ciphertext */
    assert_err(cl_batch_job_open(obj.data, obj.len, k2, &pt), CL_E_CRYPTO_AUTH);
    uint8_t *c = (uint8_t *)memmem(obj.data, obj.len, "hospital-a", 10);
    assert_non_null(c);
    c[9] = 'b';
    assert_err(cl_batch_job_open(obj.data, obj.len, k, &pt), CL_E_CRYPTO_AUTH);
    c[9] = 'a';
    obj.data[obj.len - 20] ^= 1;
    assert_err(cl_batch_job_open(obj.data, obj.len, k, &pt), CL_E_CRYPTO_AUTH);
    /* malformed: truncated, bad magic, bad id */
    assert_err(cl_batch_job_header_parse(obj.data, 10, &g), CL_E_PROTO_JOB_MALFORMED);
    obj.data[0] = 'X';
    assert_err(cl_batch_job_header_parse(obj.data, obj.len, &g), CL_E_PROTO_JOB_MALFORMED);
    cl_t_header(&h, "bad/id");
    obj.len = 0;
    assert_err(cl_batch_job_seal(&h, k, (const uint8_t *)req, strlen(req), &obj), CL_E_PROTO_JOB_MALFORMED);
    cl_buf_free(&obj);
    cl_buf_free(&pt);
}

static void test_result_roundtrip(void **state)
{
    (void)state;
    uint8_t k[32];
    struct cl_buf obj, pt;
    bool ok = false;
    assert_ok(cl_random_bytes(k, 32));
    cl_buf_init(&obj, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&pt, 1 << 20, CL_BUF_SECURE);
    assert_ok(cl_batch_result_seal("job-1", true, k, (const uint8_t *)"answer", 6, &obj));
    assert_ok(cl_batch_result_open(obj.data, obj.len, "job-1", k, &ok, &pt));
    assert_true(ok);
    assert_memory_equal(pt.data, "answer", 6);
    /* a result swapped in from another job is named */
    assert_err(cl_batch_result_open(obj.data, obj.len, "job-2", k, &ok, &pt), CL_E_PROTO_JOB_MISMATCH);
    /* the request key does not open the result (distinct HKDF labels) */
    uint8_t a[32], b[32];
    assert_ok(cl_batch_derive(k, "job-1", CL_BATCH_KIND_JOB, a));
    assert_ok(cl_batch_derive(k, "job-1", CL_BATCH_KIND_RESULT, b));
    assert_memory_not_equal(a, b, 32);
    cl_buf_free(&obj);
    cl_buf_free(&pt);
}

static void test_receipt(void **state)
{
    (void)state;
    cl_pkey *key = NULL, *other = NULL;
    struct cl_batch_receipt r, g;
    struct cl_buf out;
    memset(&r, 0, sizeof(r));
    r.seq = 7;
    snprintf(r.kind, sizeof(r.kind), "batch");
    snprintf(r.job_id, sizeof(r.job_id), "job-1");
    snprintf(r.consumer, sizeof(r.consumer), "hospital-a");
    r.ok = true;
    r.prompt_tokens = 12;
    r.completion_tokens = 5;
    memset(r.job_sha256, 0x11, 32);
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &key));
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &other));
    cl_buf_init(&out, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    assert_ok(cl_batch_receipt_sign(&r, key, &out));
    assert_ok(cl_batch_receipt_verify(out.data, out.len, key));
    assert_err(cl_batch_receipt_verify(out.data, out.len, other), CL_E_PROTO_RECEIPT_SIGNATURE);
    assert_ok(cl_batch_receipt_parse(out.data, out.len, &g));
    assert_int_equal(g.seq, 7);
    assert_string_equal(g.job_id, "job-1");
    assert_int_equal(g.completion_tokens, 5);
    assert_memory_equal(g.job_sha256, r.job_sha256, 32);
    /* one altered payload byte: the signature no longer verifies */
    uint8_t *p = (uint8_t *)memmem(out.data, out.len, "\"seq\":7", 7);
    assert_non_null(p);
    p[6] = '8';
    assert_err(cl_batch_receipt_verify(out.data, out.len, key), CL_E_PROTO_RECEIPT_SIGNATURE);
    assert_err(cl_batch_receipt_parse(out.data, 5, &g), CL_E_PROTO_RECEIPT_MALFORMED);
    cl_buf_free(&out);
    cl_pkey_free(key);
    cl_pkey_free(other);
}

static void test_wire_job_res(void **state)
{
    (void)state;
    struct cl_buf b;
    struct cl_wire_job_res r = {(const uint8_t *)"RES", 3, (const uint8_t *)"RCPT", 4, (const uint8_t *)"ATT", 3,
                                "job-1", true, "", 5}, g;
    memset(r.chain, 'a', 64);
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    assert_ok(cl_wire_job_res_encode(&r, &b));
    assert_ok(cl_wire_job_res_parse(b.data, b.len, &g));
    assert_string_equal(g.job_id, "job-1");
    assert_int_equal(g.seq, 5);
    assert_true(g.ok);
    assert_int_equal(g.receipt_len, 4);
    assert_memory_equal(g.attestation, "ATT", 3);
    /* truncated blobs, and meta with an extra member, are refused */
    assert_err(cl_wire_job_res_parse(b.data, 9, &g), CL_E_PROTO_REQUEST_INVALID);
    b.len--;
    assert_ok(cl_buf_append_str(&b, ",\"x\":1}"));
    assert_err(cl_wire_job_res_parse(b.data, b.len, &g), CL_E_PROTO_REQUEST_INVALID);
    snprintf(r.job_id, sizeof(r.job_id), "../etc");
    b.len = 0;
    assert_err(cl_wire_job_res_encode(&r, &b), CL_E_PROTO_REQUEST_INVALID);
    cl_buf_free(&b);
}

/* Interactive receipts: their own member names, the projector digest only
 * when images were used, and a kind the parser does not know is refused. */
static void test_receipt_interactive(void **state)
{
    (void)state;
    cl_pkey *key = NULL;
    struct cl_batch_receipt r, g;
    struct cl_buf out;
    memset(&r, 0, sizeof(r));
    r.seq = 3;
    snprintf(r.kind, sizeof(r.kind), CL_BATCH_KIND_INTERACTIVE);
    snprintf(r.job_id, sizeof(r.job_id), "chatcmpl-0123456789abcdef01234567");
    snprintf(r.consumer, sizeof(r.consumer), "-");
    memset(r.job_sha256, 0x22, 32);
    memset(r.result_sha256, 0x33, 32);
    r.ok = false;
    snprintf(r.error, sizeof(r.error), "HTTP_429");
    assert_ok(cl_pkey_generate(CL_PKEY_P384, &key));
    cl_buf_init(&out, CL_BATCH_RECEIPT_MAX, CL_BUF_NONE);
    assert_ok(cl_batch_receipt_sign(&r, key, &out));
    assert_non_null(memmem(out.data, out.len, "\"request_id\":\"chatcmpl-", 23));
    assert_non_null(memmem(out.data, out.len, "\"request_sha256\":\"2222", 22));
    assert_non_null(memmem(out.data, out.len, "\"response_sha256\":\"3333", 23));
    assert_null(memmem(out.data, out.len, "job_id", 6));
    assert_null(memmem(out.data, out.len, "projector_sha256", 16));
    assert_ok(cl_batch_receipt_parse(out.data, out.len, &g));
    assert_string_equal(g.kind, "interactive");
    assert_string_equal(g.job_id, r.job_id);
    assert_string_equal(g.error, "HTTP_429");
    assert_false(g.ok);
    assert_false(g.has_projector);
    assert_memory_equal(g.result_sha256, r.result_sha256, 32);
    /* with images: the projector digest is signed too */
    r.has_projector = true;
    memset(r.projector_sha256, 0x44, 32);
    out.len = 0;
    assert_ok(cl_batch_receipt_sign(&r, key, &out));
    assert_ok(cl_batch_receipt_verify(out.data, out.len, key));
    assert_ok(cl_batch_receipt_parse(out.data, out.len, &g));
    assert_true(g.has_projector);
    assert_memory_equal(g.projector_sha256, r.projector_sha256, 32);
    /* unknown kinds are not signed */
    snprintf(r.kind, sizeof(r.kind), "other");
    out.len = 0;
    assert_err(cl_batch_receipt_sign(&r, key, &out), CL_E_PROTO_RECEIPT_MALFORMED);
    cl_buf_free(&out);
    cl_pkey_free(key);
}

static void test_wire_receipt(void **state)
{
    (void)state;
    struct cl_buf b;
    struct cl_wire_receipt r = {(const uint8_t *)"RCPT", 4, (const uint8_t *)"ATT", 3, "chatcmpl-1", "", 9}, g;
    memset(r.chain, 'b', 64);
    cl_buf_init(&b, 4096, CL_BUF_NONE);
    assert_ok(cl_wire_receipt_encode(&r, &b));
    assert_ok(cl_wire_receipt_parse(b.data, b.len, &g));
    assert_string_equal(g.request_id, "chatcmpl-1");
    assert_int_equal(g.seq, 9);
    assert_memory_equal(g.receipt, "RCPT", 4);
    assert_memory_equal(g.attestation, "ATT", 3);
    assert_err(cl_wire_receipt_parse(b.data, 6, &g), CL_E_PROTO_REQUEST_INVALID);
    b.len--;
    assert_ok(cl_buf_append_str(&b, ",\"x\":1}"));
    assert_err(cl_wire_receipt_parse(b.data, b.len, &g), CL_E_PROTO_REQUEST_INVALID);
    snprintf(r.request_id, sizeof(r.request_id), "a/b");
    b.len = 0;
    assert_err(cl_wire_receipt_encode(&r, &b), CL_E_PROTO_REQUEST_INVALID);
    cl_buf_free(&b);
}

static char cl_t_dir[256];

static void test_store_objects(void **state)
{
    (void)state;
    char url[300];
    cl_bstore_objects *o = NULL;
    struct cl_buf b;
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    snprintf(url, sizeof(url), "dir:%s/objects", cl_t_dir);
    assert_ok(cl_bstore_objects_open(url, &o));
    assert_ok(cl_bstore_objects_put(o, "a.job", (const uint8_t *)"xyz", 3));
    assert_ok(cl_bstore_objects_get(o, "a.job", 100, &b));
    assert_int_equal(b.len, 3);
    assert_err(cl_bstore_objects_get(o, "missing", 100, &b), CL_E_STORE_NOT_FOUND);
    assert_err(cl_bstore_objects_put(o, "../escape", (const uint8_t *)"x", 1), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_put(o, ".hidden", (const uint8_t *)"x", 1), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s4:foo", &o), CL_E_STORE_URL);
    /* a full disk (file-size limit): clear error, nothing half-written */
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        static uint8_t big[1 << 16];
        cl_err rc = cl_bstore_objects_put(o, "big.job", big, sizeof(big));
        _exit(rc == CL_E_STORE_FULL ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_err(cl_bstore_objects_get(o, "big.job", 1 << 20, &b), CL_E_STORE_NOT_FOUND);
    char d[300];
    snprintf(d, sizeof(d), "%s/objects", cl_t_dir);
    DIR *dir = opendir(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dir)))
        if (e->d_name[0] != '.' || strncmp(e->d_name, ".tmp", 4) == 0)
            n++;
    closedir(dir);
    assert_int_equal(n, 1); /* a.job only: no temp file left */
    cl_bstore_objects_close(o);
    cl_buf_free(&b);
}

static void test_store_queue(void **state)
{
    (void)state;
    char url[300];
    cl_bstore_queue *q = NULL;
    struct cl_bstore_msg m, m2;
    struct cl_bstore_queue_counts c;
    bool got = false, found = false;
    char err[CL_BSTORE_ERROR_MAX + 1];
    uint32_t rcv = 0;
    snprintf(url, sizeof(url), "sqlite:%s/queue.db", cl_t_dir);
    assert_ok(cl_bstore_queue_open(url, &q));
    assert_ok(cl_bstore_queue_send(q, "j1", "j1.job"));
    assert_ok(cl_bstore_queue_send(q, "j2", "j2.job"));
    assert_ok(cl_bstore_queue_receive(q, 60000, &m, &got));
    assert_true(got);
    assert_string_equal(m.job_id, "j1");
    assert_int_equal(m.receives, 1);
    assert_ok(cl_bstore_queue_receive(q, 100, &m2, &got));
    assert_true(got);
    assert_string_equal(m2.job_id, "j2");
    assert_ok(cl_bstore_queue_receive(q, 100, &m2, &got));
    assert_false(got); /* both invisible now */
    usleep(150 * 1000);
    assert_ok(cl_bstore_queue_receive(q, 100, &m2, &got)); /* j2's visibility ran out: redelivered */
    assert_true(got);
    assert_string_equal(m2.job_id, "j2");
    assert_int_equal(m2.receives, 2);
    assert_ok(cl_bstore_queue_dead_letter(q, &m2, "CRYPTO_AUTH"));
    assert_ok(cl_bstore_queue_dead_find(q, "j2", err, &rcv, &found));
    assert_true(found);
    assert_string_equal(err, "CRYPTO_AUTH");
    assert_int_equal(rcv, 2);
    assert_ok(cl_bstore_queue_delete(q, &m));
    assert_ok(cl_bstore_queue_counts(q, &c));
    assert_int_equal(c.visible + c.in_flight, 0);
    assert_int_equal(c.dead, 1);
    cl_bstore_queue_close(q);
}

static void test_store_results(void **state)
{
    (void)state;
    char url[300];
    cl_bstore_results *r = NULL;
    bool stored = false, ok = false;
    struct cl_buf a, b;
    uint64_t nres = 0, nrec = 0;
    cl_buf_init(&a, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    snprintf(url, sizeof(url), "sqlite:%s/results.db", cl_t_dir);
    assert_ok(cl_bstore_results_open(url, &r));
    struct cl_bstore_put p = {"j1", true, (const uint8_t *)"R1", 2, (const uint8_t *)"C1", 2,
                              (const uint8_t *)"ATT", 3, "chainA", 1};
    assert_ok(cl_bstore_results_put(r, &p, &stored));
    assert_true(stored);
    p.result = (const uint8_t *)"R2";
    p.receipt = (const uint8_t *)"C2";
    p.seq = 2;
    assert_ok(cl_bstore_results_put(r, &p, &stored)); /* redelivered: receipt kept, result not replaced */
    assert_false(stored);
    assert_ok(cl_bstore_results_get(r, "j1", &ok, &a, &b));
    assert_true(ok);
    assert_memory_equal(a.data, "R1", 2);
    assert_memory_equal(b.data, "C1", 2);
    assert_ok(cl_bstore_results_count(r, &nres, &nrec));
    assert_int_equal(nres, 1);
    assert_int_equal(nrec, 2);
    assert_ok(cl_bstore_results_attestation(r, "chainA", &a));
    assert_memory_equal(a.data, "ATT", 3);
    assert_err(cl_bstore_results_get(r, "nope", &ok, &a, &b), CL_E_STORE_NOT_FOUND);
    /* an interactive receipt: no result row, the chain's head moves */
    uint64_t max = 0;
    assert_ok(cl_bstore_results_chain_max(r, "chainA", &max));
    assert_int_equal(max, 2);
    assert_ok(cl_bstore_results_put_receipt(r, "chainA", 3, "chatcmpl-1", (const uint8_t *)"C3", 2,
                                            (const uint8_t *)"ATT", 3));
    assert_ok(cl_bstore_results_chain_max(r, "chainA", &max));
    assert_int_equal(max, 3);
    assert_ok(cl_bstore_results_chain_max(r, "chainB", &max));
    assert_int_equal(max, 0);
    assert_ok(cl_bstore_results_count(r, &nres, &nrec));
    assert_int_equal(nres, 1);
    assert_int_equal(nrec, 3);
    assert_err(cl_bstore_results_put_receipt(r, "chainA", 4, "../x", (const uint8_t *)"C4", 2,
                                             (const uint8_t *)"ATT", 3), CL_E_STORE_URL);
    cl_bstore_results_close(r);
    cl_buf_free(&a);
    cl_buf_free(&b);
}

static void cl_t_msg(const char *body, cl_err want, bool want_use, const char *job, const char *obj)
{
    struct cl_bstore_msg m;
    bool use = true;
    memset(&m, 0, sizeof(m));
    cl_err rc = cl_bstore_msg_parse(body, strlen(body), &m, &use);
    if (rc != want)
        fail_msg("message %s: got %s (%s), wanted %s", body, cl_err_name(rc) ? cl_err_name(rc) : "OK",
                 cl_err_detail() ? cl_err_detail() : "", cl_err_name(want) ? cl_err_name(want) : "OK");
    if (rc == CL_OK) {
        assert_int_equal(use, want_use);
        if (want_use) {
            assert_string_equal(m.job_id, job);
            assert_string_equal(m.object, obj);
        }
    }
}

#define CL_T_S3EV(name, src, key)                                                                                    \
    "{\"Records\":[{\"eventVersion\":\"2.1\",\"eventSource\":\"" src "\",\"eventName\":\"" name                     \
    "\",\"s3\":{\"bucket\":{\"name\":\"jobs\"},\"object\":{\"key\":\"" key "\",\"size\":10}}}]}"

/* Queue messages come from the untrusted host's queue: Cloister's own job
 * messages and S3 event notifications, parsed strictly. */
static void test_store_msg_parse(void **state)
{
    (void)state;
    cl_t_msg("{\"job_id\":\"abc\",\"object\":\"abc.job\"}", CL_OK, true, "abc", "abc.job");
    cl_t_msg("{\"job_id\":\"abc\",\"object\":\"abc.job\",\"x\":1}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"job_id\":\"abc\",\"job_id\":\"abd\",\"object\":\"abc.job\"}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"job_id\":\"../x\",\"object\":\"abc.job\"}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"job_id\":\"abc\",\"object\":\".hidden\"}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("[1,2]", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("not json", CL_E_STORE_MESSAGE, false, NULL, NULL);
    /* S3 events: the key is form-encoded; the object is its last segment */
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/0123abcd.job"), CL_OK, true, "0123abcd", "0123abcd.job");
    cl_t_msg(CL_T_S3EV("ObjectCreated:CompleteMultipartUpload", "aws:s3", "in%2Fbox/job%2D1.job"), CL_OK, true, "job-1",
             "job-1.job");
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "x.job"), CL_OK, true, "x", "x.job");
    /* not job objects, removals, the test event: dropped, not run */
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/notes.txt"), CL_OK, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/a+b.job"), CL_OK, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/..%2F..%2Fetc%2Fpasswd"), CL_OK, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/%2E.job"), CL_OK, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/.job"), CL_OK, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectRemoved:Delete", "aws:s3", "inbox/abc.job"), CL_OK, false, NULL, NULL);
    cl_t_msg("{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\",\"Bucket\":\"jobs\"}", CL_OK, false, NULL, NULL);
    /* hostile events: named errors */
    cl_t_msg("{\"Event\":\"s3:Other\"}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/abc%4"), CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/abc%zz.job"), CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:s3", "inbox/abc%00.job"), CL_E_STORE_MESSAGE, false, NULL, NULL);
    assert_non_null(strstr(cl_err_detail(), "NUL"));
    cl_t_msg(CL_T_S3EV("ObjectCreated:Put", "aws:sqs", "inbox/abc.job"), CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"Records\":[]}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"Records\":{}}", CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"Records\":[{\"eventSource\":\"aws:s3\",\"eventName\":\"ObjectCreated:Put\",\"s3\":{\"object\":{\"key\":7}}}]}",
             CL_E_STORE_MESSAGE, false, NULL, NULL);
    cl_t_msg("{\"Records\":[{\"eventSource\":\"aws:s3\",\"eventName\":\"ObjectCreated:Put\",\"s3\":{\"object\":"
             "{\"key\":\"a.job\"}}},{\"eventSource\":\"aws:s3\",\"eventName\":\"ObjectCreated:Put\",\"s3\":"
             "{\"object\":{\"key\":\"b.job\"}}}]}",
             CL_E_STORE_MESSAGE, false, NULL, NULL);
    /* an oversized body is refused before it is parsed */
    size_t big = CL_BSTORE_MESSAGE_MAX + 2;
    char *b = malloc(big + 1);
    assert_non_null(b);
    memset(b, ' ', big);
    b[0] = '{';
    b[big - 1] = '}';
    b[big] = 0;
    cl_t_msg(b, CL_E_STORE_MESSAGE, false, NULL, NULL);
    free(b);
}

/* Scale-out URLs are checked before anything is sent; no credentials is a
 * clear error, never a request signed with nothing. */
static void test_store_aws_urls(void **state)
{
    (void)state;
    cl_bstore_objects *o = NULL;
    cl_bstore_queue *q = NULL;
    cl_bstore_results *r = NULL;
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_REGION", "us-east-1", 1);
    assert_err(cl_bstore_objects_open("s3://Bad_Bucket", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://ab", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs/../x", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs//x", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs?region=x", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs?endpoint=ftp://127.0.0.1:1", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs?endpoint=http://user@127.0.0.1:1", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs?endpoint=http://127.0.0.1:1/path", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("s3://jobs?endpoint=http://127.0.0.1:1&x=1", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_objects_open("file:/tmp/x", &o), CL_E_STORE_URL);
    assert_err(cl_bstore_queue_open("sqs://a.b", &q), CL_E_STORE_URL);
    assert_err(cl_bstore_queue_open("sqs://", &q), CL_E_STORE_URL);
    assert_err(cl_bstore_queue_open("redis://x", &q), CL_E_STORE_URL);
    assert_err(cl_bstore_results_open("dynamodb://ab", &r), CL_E_STORE_URL);
    assert_err(cl_bstore_results_open("dynamodb://a/b", &r), CL_E_STORE_URL);
    /* well-formed, but no credentials anywhere */
    assert_err(cl_bstore_objects_open("s3://jobs/in?endpoint=http://127.0.0.1:9", &o), CL_E_NET_CREDENTIALS);
    assert_err(cl_bstore_queue_open("sqs://jobs?endpoint=http://127.0.0.1:9", &q), CL_E_NET_CREDENTIALS);
    assert_err(cl_bstore_results_open("dynamodb://results?endpoint=http://127.0.0.1:9", &r), CL_E_NET_CREDENTIALS);
    /* credentials, but nothing listening: transient, named */
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    assert_err(cl_bstore_queue_open("sqs://jobs?endpoint=http://127.0.0.1:9", &q), CL_E_STORE_UNAVAILABLE);
    assert_non_null(strstr(cl_err_detail(), "SQS GetQueueUrl"));
    assert_true(cl_bstore_err_transient(CL_E_STORE_UNAVAILABLE));
    assert_err(cl_bstore_objects_open("s3://jobs?endpoint=http://127.0.0.1:9", &o), CL_OK);
    struct cl_buf b;
    cl_buf_init(&b, 1024, CL_BUF_NONE);
    assert_err(cl_bstore_objects_get(o, "x.job", 1024, &b), CL_E_STORE_UNAVAILABLE);
    assert_non_null(strstr(cl_err_detail(), "S3 GetObject"));
    assert_err(cl_bstore_objects_get(o, "../x", 1024, &b), CL_E_STORE_URL);
    cl_buf_free(&b);
    cl_bstore_objects_close(o);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    /* what the worker retries and what counts toward the dead letter */
    assert_true(cl_bstore_err_transient(CL_E_STORE_FULL));
    assert_true(cl_bstore_err_transient(CL_E_STORE_DB));
    assert_false(cl_bstore_err_transient(CL_E_STORE_NOT_FOUND));
    assert_false(cl_bstore_err_transient(CL_E_STORE_REFUSED));
    assert_false(cl_bstore_err_transient(CL_E_STORE_RESPONSE));
    assert_false(cl_bstore_err_transient(CL_E_STORE_TOO_LARGE));
    assert_false(cl_bstore_err_transient(CL_E_PROTO_JOB_MALFORMED));
}

static void test_store_objects_head_delete(void **state)
{
    (void)state;
    char url[300];
    cl_bstore_objects *o = NULL;
    uint64_t size = 0;
    snprintf(url, sizeof(url), "dir:%s/hd", cl_t_dir);
    assert_ok(cl_bstore_objects_open(url, &o));
    assert_err(cl_bstore_objects_head(o, "a.job", &size), CL_E_STORE_NOT_FOUND);
    assert_ok(cl_bstore_objects_put(o, "a.job", (const uint8_t *)"hello", 5));
    assert_ok(cl_bstore_objects_head(o, "a.job", &size));
    assert_int_equal(size, 5);
    assert_ok(cl_bstore_objects_delete(o, "a.job"));
    assert_ok(cl_bstore_objects_delete(o, "a.job")); /* absent: not an error */
    assert_err(cl_bstore_objects_head(o, "a.job", &size), CL_E_STORE_NOT_FOUND);
    assert_err(cl_bstore_objects_delete(o, "../a.job"), CL_E_STORE_URL);
    cl_bstore_objects_close(o);
}

static int cl_t_setup(void **state)
{
    (void)state;
    snprintf(cl_t_dir, sizeof(cl_t_dir), "/tmp/cl-test-batch-XXXXXX");
    return mkdtemp(cl_t_dir) ? 0 : -1;
}

static int cl_t_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cl_t_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_roundtrip),   cmocka_unit_test(test_result_roundtrip),
        cmocka_unit_test(test_receipt),         cmocka_unit_test(test_wire_job_res),
        cmocka_unit_test(test_receipt_interactive), cmocka_unit_test(test_wire_receipt),
        cmocka_unit_test(test_store_objects),
        cmocka_unit_test(test_store_queue),     cmocka_unit_test(test_store_results),
        cmocka_unit_test(test_store_msg_parse), cmocka_unit_test(test_store_aws_urls),
        cmocka_unit_test(test_store_objects_head_delete),
    };
    return cmocka_run_group_tests(tests, cl_t_setup, cl_t_teardown);
}
