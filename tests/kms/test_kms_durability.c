/* Durability: kill -9 cloister-kms during a storm of CreateKey / Encrypt /
 * GenerateDataKey; after a restart every request that got a success response
 * still decrypts (or describes) and the database passes integrity_check. */
#include "testutil.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/kms.h"
#include "cloister/kms_client.h"

#define T_MAX_RECORDS 20000
#define T_STORM_MS 1500

enum t_kind { T_NONE = 0, T_KEY, T_ENC, T_GDK, T_COUNT };
struct t_rec {
    enum t_kind kind;
    char key_id[40];
    char blob[200];   /* base64 CiphertextBlob */
    char pt[64];      /* base64 expected plaintext */
    char ctx[32];
};

static struct t_rec *t_recs;
static size_t t_nrec;
static pthread_mutex_t t_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int t_stop;
static char t_dir[256], t_url[64], t_first_key[40];
static struct cl_kmsc_credentials t_cred;
static size_t t_failures_after_kill;

static pid_t t_start_server(void)
{
    const char *b = getenv("CLOISTER_BUILD_DIR");
    char bin[512], store[300];
    snprintf(bin, sizeof(bin), "%s/tools/cloister-kms/cloister-kms", b ? b : ".");
    snprintf(store, sizeof(store), "%s/store", t_dir);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(bin, bin, "serve", store, "--listen", "127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[128] = {0};
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        ssize_t r = read(fds[0], line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    close(fds[0]);
    unsigned port = 0;
    char *colon = strrchr(line, ':');
    if (strncmp(line, "listening on", 12) || !colon || sscanf(colon + 1, "%u", &port) != 1)
        fail_msg("server did not start: '%s'", line);
    snprintf(t_url, sizeof(t_url), "http://127.0.0.1:%u", port);
    return pid;
}

static json_t *t_call(const char *op, const char *body)
{
    struct cl_kmsc_endpoint ep = {.url = t_url, .region = "us-east-1"};
    json_t *o = NULL;
    if (cl_kmsc_call(&ep, &t_cred, op, body, (struct json_t **)&o) != CL_OK)
        return NULL;
    return o;
}

static void t_add(const struct t_rec *r)
{
    pthread_mutex_lock(&t_mu);
    if (t_nrec < T_MAX_RECORDS)
        t_recs[t_nrec++] = *r;
    pthread_mutex_unlock(&t_mu);
}

static void *t_storm(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    char body[512];
    for (unsigned i = 0; !t_stop; i++) {
        struct t_rec r;
        memset(&r, 0, sizeof(r));
        json_t *o = NULL;
        switch (i % 3) {
        case 0:
            o = t_call("CreateKey", "{\"Description\":\"storm\"}");
            if (o) {
                r.kind = T_KEY;
                snprintf(r.key_id, sizeof(r.key_id), "%s",
                         json_string_value(json_object_get(json_object_get(o, "KeyMetadata"), "KeyId")));
            }
            break;
        case 1:
            snprintf(r.ctx, sizeof(r.ctx), "t%u-%u", id, i);
            /* plaintext "storm-<ctx>" in base64 is computed by the server's echo on Decrypt; keep it simple */
            snprintf(body, sizeof(body),
                     "{\"KeyId\":\"%s\",\"Plaintext\":\"c3Rvcm0tcGxhaW50ZXh0\",\"EncryptionContext\":{\"c\":\"%s\"}}",
                     t_first_key, r.ctx);
            o = t_call("Encrypt", body);
            if (o) {
                r.kind = T_ENC;
                snprintf(r.blob, sizeof(r.blob), "%s", json_string_value(json_object_get(o, "CiphertextBlob")));
                snprintf(r.pt, sizeof(r.pt), "c3Rvcm0tcGxhaW50ZXh0");
            }
            break;
        default:
            snprintf(r.ctx, sizeof(r.ctx), "g%u-%u", id, i);
            snprintf(body, sizeof(body),
                     "{\"KeyId\":\"%s\",\"NumberOfBytes\":32,\"EncryptionContext\":{\"c\":\"%s\"}}", t_first_key,
                     r.ctx);
            o = t_call("GenerateDataKey", body);
            if (o) {
                r.kind = T_GDK;
                snprintf(r.blob, sizeof(r.blob), "%s", json_string_value(json_object_get(o, "CiphertextBlob")));
                snprintf(r.pt, sizeof(r.pt), "%s", json_string_value(json_object_get(o, "Plaintext")));
            }
            break;
        }
        if (o) {
            t_add(&r);
            json_decref(o);
        } else if (t_stop) {
            break;
        } else {
            pthread_mutex_lock(&t_mu);
            t_failures_after_kill++;
            pthread_mutex_unlock(&t_mu);
            break; /* the server is gone */
        }
    }
    return NULL;
}

static void test_kill9_storm(void **state)
{
    (void)state;
    snprintf(t_dir, sizeof(t_dir), "/tmp/cl_kms_dur_XXXXXX");
    assert_non_null(mkdtemp(t_dir));
    char store[300];
    snprintf(store, sizeof(store), "%s/store", t_dir);
    assert_ok(cl_kms_store_init(store, "us-east-1", "111122223333"));
    struct cl_kms_store *st = NULL;
    assert_ok(cl_kms_store_open(store, &st));
    char ak[CL_KMS_ACCESS_KEY_LEN + 1], sk[CL_KMS_SECRET_LEN + 1];
    assert_ok(cl_kms_user_add(st, "storm", ak, sk));
    cl_kms_store_close(st);
    memset(&t_cred, 0, sizeof(t_cred));
    snprintf(t_cred.access_key, sizeof(t_cred.access_key), "%s", ak);
    snprintf(t_cred.secret, sizeof(t_cred.secret), "%s", sk);
    t_recs = calloc(T_MAX_RECORDS, sizeof(*t_recs));

    pid_t pid = t_start_server();
    json_t *k = t_call("CreateKey", "{}");
    assert_non_null(k);
    snprintf(t_first_key, sizeof(t_first_key), "%s",
             json_string_value(json_object_get(json_object_get(k, "KeyMetadata"), "KeyId")));
    json_decref(k);

    pthread_t th[3];
    for (uintptr_t i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, t_storm, (void *)i), 0);
    usleep(T_STORM_MS * 1000);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFSIGNALED(ws));
    usleep(200 * 1000);
    t_stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    print_message("durability: %zu successful requests before kill -9\n", t_nrec);
    assert_true(t_nrec > 5); /* a sanity floor; the count depends on machine load */

    pid = t_start_server();
    size_t keys = 0, blobs = 0;
    char body[1024];
    for (size_t i = 0; i < t_nrec; i++) {
        const struct t_rec *r = &t_recs[i];
        if (r->kind == T_KEY) {
            snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", r->key_id);
            json_t *o = t_call("DescribeKey", body);
            if (!o)
                fail_msg("key %s created before the crash is gone", r->key_id);
            json_decref(o);
            keys++;
        } else {
            snprintf(body, sizeof(body), "{\"CiphertextBlob\":\"%s\",\"EncryptionContext\":{\"c\":\"%s\"}}", r->blob,
                     r->ctx);
            json_t *o = t_call("Decrypt", body);
            if (!o)
                fail_msg("blob %zu (%s) from before the crash does not decrypt", i, r->ctx);
            assert_string_equal(json_string_value(json_object_get(o, "Plaintext")), r->pt);
            json_decref(o);
            blobs++;
        }
    }
    print_message("durability: %zu keys and %zu ciphertexts verified after restart\n", keys, blobs);
    kill(pid, SIGTERM);
    waitpid(pid, &ws, 0);
    assert_ok(cl_kms_store_open(store, &st));
    assert_ok(cl_kms_store_check(st));
    cl_kms_store_close(st);
    free(t_recs);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill9_storm)};
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
