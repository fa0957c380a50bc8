/* cloister-kms: a key service speaking the AWS KMS JSON API. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cloister/kms.h"
#include "cloister/kms_attest.h"
#include "cloister/log.h"
#include "cloister/secmem.h"

enum { CL_KMS_EXIT_OK = 0, CL_KMS_EXIT_FAIL = 1, CL_KMS_EXIT_USAGE = 2 };

static int cl_kms_fail(const char *what, cl_err e)
{
    char buf[512];
    fprintf(stderr, "cloister-kms: %s: %s\n", what, cl_err_format(e, buf, sizeof(buf)));
    return CL_KMS_EXIT_FAIL;
}

static int cl_kms_usage(const char *msg)
{
    fprintf(stderr, "cloister-kms: %s (see 'cloister-kms --help')\n", msg);
    return CL_KMS_EXIT_USAGE;
}

static void cl_kms_help(FILE *f)
{
    fprintf(f,
            "usage: cloister-kms COMMAND ...\n\n"
            "A key service that speaks the AWS KMS JSON 1.1 API (SigV4, key policies,\n"
            "attestation-gated Recipient key release).\n\n"
            "commands:\n"
            "  init DIR [--region R] [--account 12DIGITS]\n"
            "        create a key store (kms.db + root.key, mode 0600) in DIR\n"
            "  serve DIR --listen HOST:PORT [--tls-cert PEM --tls-key PEM]\n"
            "        [--trust-root CERT]... [--attest-max-age-s N]\n"
            "        serve the API; PORT 0 picks a free port; prints 'listening on HOST:PORT'.\n"
            "        --trust-root pins an attestation root (AWS Nitro root and/or a cloister-sim\n"
            "        root); without one, requests carrying a Recipient are refused. Prints each\n"
            "        root's SHA-256 (cloister:attestation-root-sha256) on stderr. With more\n"
            "        than one root, only policy statements that pin that key release keys.\n"
            "        Refuses a store whose kms.db (or -wal/-shm) others may read\n"
            "  user add NAME --dir DIR [--account 12DIGITS]\n"
            "        create a principal arn:aws:iam::ACCOUNT:user/NAME and print its access key\n"
            "        pair once (the secret is stored only wrapped under root.key). ACCOUNT is the\n"
            "        store's own by default; another account's principal (the operator's, say)\n"
            "        is named in key policies by its full ARN, as across accounts on AWS.\n"
            "        An account principal (ACCOUNT or arn:aws:iam::ACCOUNT:root) in a key policy\n"
            "        names only that account's root identity, never its users: there is no IAM\n"
            "        layer to delegate to (see docs/kms.md)\n"
            "  audit DIR [--json]\n"
            "        list the audit rows (time, principal, operation, key, decision and deciding\n"
            "        statement, attestation module and PCRs, request id), one per line or, with\n"
            "        --json, one JSON object per line\n\n"
            "DIR may also come from $CLOISTER_KMS_DIR. exit status: 0 ok, 1 failure, 2 usage.\n");
}

static int cl_kms_cmd_init(int argc, char **argv)
{
    const char *dir = NULL, *region = "us-east-1", *account = "111122223333";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cl_kms_help(stdout);
            return CL_KMS_EXIT_OK;
        } else if (!strcmp(argv[i], "--region") && i + 1 < argc) {
            region = argv[++i];
        } else if (!strcmp(argv[i], "--account") && i + 1 < argc) {
            account = argv[++i];
        } else if (argv[i][0] == '-') {
            return cl_kms_usage("init: unknown option or missing value");
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cl_kms_usage("init: more than one DIR");
        }
    }
    if (!dir)
        return cl_kms_usage("init: DIR is required");
    cl_err rc = cl_kms_store_init(dir, region, account);
    if (rc)
        return cl_kms_fail("init", rc);
    printf("initialised key store in %s (region %s, account %s)\n", dir, region, account);
    return CL_KMS_EXIT_OK;
}

static volatile sig_atomic_t cl_kms_stop;
static void cl_kms_on_signal(int sig)
{
    (void)sig;
    cl_kms_stop = 1;
}

static int cl_kms_cmd_serve(int argc, char **argv)
{
    const char *dir = getenv("CLOISTER_KMS_DIR"), *listen = NULL, *cert = NULL, *key = NULL;
    const char *roots[8];
    size_t nroots = 0;
    long max_age = 300;
    bool dir_given = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cl_kms_help(stdout);
            return CL_KMS_EXIT_OK;
        } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen = argv[++i];
        } else if (!strcmp(argv[i], "--tls-cert") && i + 1 < argc) {
            cert = argv[++i];
        } else if (!strcmp(argv[i], "--tls-key") && i + 1 < argc) {
            key = argv[++i];
        } else if (!strcmp(argv[i], "--trust-root") && i + 1 < argc) {
            if (nroots == 8)
                return cl_kms_usage("serve: at most 8 --trust-root");
            roots[nroots++] = argv[++i];
        } else if (!strcmp(argv[i], "--attest-max-age-s") && i + 1 < argc) {
            max_age = strtol(argv[++i], NULL, 10);
            if (max_age < 1 || max_age > 86400)
                return cl_kms_usage("serve: --attest-max-age-s must be 1..86400");
        } else if (argv[i][0] == '-') {
            return cl_kms_usage("serve: unknown option or missing value");
        } else if (!dir_given) {
            dir = argv[i];
            dir_given = true;
        } else {
            return cl_kms_usage("serve: more than one DIR");
        }
    }
    if (!dir)
        return cl_kms_usage("serve: DIR is required");
    if (!listen)
        return cl_kms_usage("serve: --listen HOST:PORT is required");
    if (!cert != !key)
        return cl_kms_usage("serve: --tls-cert and --tls-key go together");
    cl_err rc = cl_secure_process_init();
    if (rc)
        return cl_kms_fail("process hardening", rc);
    struct cl_kms_store *st = NULL;
    rc = cl_kms_store_open(dir, &st);
    if (rc)
        return cl_kms_fail("open key store", rc);
    struct cl_kms_server_config cfg = {.store = st, .skew_s = 300};
    struct cl_kms_attest_roots *ar = NULL;
    if (nroots) {
        rc = cl_kms_attest_roots_load(roots, nroots, (uint64_t)max_age * 1000, &ar);
        if (rc) {
            cl_kms_store_close(st);
            return cl_kms_fail("load --trust-root", rc);
        }
        cfg.attest = cl_kms_attest_verify;
        cfg.attest_arg = ar;
        for (size_t i = 0; i < nroots; i++) {
            char fp[2 * 32 + 1];
            rc = cl_kms_attest_root_fingerprint(ar, i, fp);
            if (rc) {
                cl_kms_attest_roots_free(ar);
                cl_kms_store_close(st);
                return cl_kms_fail("fingerprint --trust-root", rc);
            }
            fprintf(stderr, "cloister-kms: trust root %s sha256 %s\n", roots[i], fp);
        }
        if (nroots > 1)
            fprintf(stderr, "cloister-kms: %zu trusted roots: only policy statements that pin "
                            "cloister:attestation-root-sha256 release keys to a Recipient\n",
                    nroots);
    }
    struct cl_kms_listen l = {listen, cert, key};
    struct cl_kms_server *srv = NULL;
    rc = cl_kms_server_start(&cfg, &l, &srv);
    if (rc) {
        cl_kms_store_close(st);
        return cl_kms_fail("listen", rc);
    }
    char host[128];
    snprintf(host, sizeof(host), "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0;
    printf("listening on %s:%u\n", host, cl_kms_server_port(srv));
    fflush(stdout);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = cl_kms_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!cl_kms_stop)
        pause();
    cl_kms_server_stop(srv);
    cl_kms_attest_roots_free(ar);
    cl_kms_store_close(st);
    return CL_KMS_EXIT_OK;
}

static int cl_kms_cmd_user(int argc, char **argv)
{
    const char *dir = getenv("CLOISTER_KMS_DIR"), *name = NULL, *account = NULL;
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        if (argc >= 3) {
            cl_kms_help(stdout);
            return CL_KMS_EXIT_OK;
        }
        return cl_kms_usage("user: expected 'user add NAME --dir DIR'");
    }
    if (strcmp(argv[2], "add"))
        return cl_kms_usage("user: only 'add' is supported");
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cl_kms_help(stdout);
            return CL_KMS_EXIT_OK;
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--account") && i + 1 < argc)
            account = argv[++i];
        else if (argv[i][0] == '-')
            return cl_kms_usage("user add: unknown option or missing value");
        else if (!name)
            name = argv[i];
        else
            return cl_kms_usage("user add: more than one NAME");
    }
    if (!name)
        return cl_kms_usage("user add: NAME is required");
    if (!dir)
        return cl_kms_usage("user add: --dir DIR (or $CLOISTER_KMS_DIR) is required");
    struct cl_kms_store *st = NULL;
    cl_err rc = cl_kms_store_open(dir, &st);
    if (rc)
        return cl_kms_fail("open key store", rc);
    char ak[CL_KMS_ACCESS_KEY_LEN + 1], sk[CL_KMS_SECRET_LEN + 1];
    rc = cl_kms_user_add_in(st, account, name, ak, sk);
    if (rc) {
        cl_kms_store_close(st);
        return cl_kms_fail("user add", rc);
    }
    /* Shown once: only the wrapped secret is stored. */
    printf("principal %s\naccess_key_id %s\nsecret_access_key %s\n", "created", ak, sk);
    printf("arn arn:aws:iam::%s:user/%s\n", account ? account : cl_kms_store_account(st), name);
    fflush(stdout);
    cl_wipe(sk, sizeof(sk));
    cl_kms_store_close(st);
    return CL_KMS_EXIT_OK;
}

static void cl_kms_audit_print_row(void *arg, int64_t seq, const struct cl_kms_audit_row *r)
{
    const bool *json = arg;
    if (*json) {
        json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "seq", (json_int_t)seq, "time_ms",
                              (json_int_t)r->time_ms, "request_id", r->request_id, "principal", r->principal,
                              "operation", r->operation, "key_id", r->key_id, "decision", r->decision, "statement",
                              r->statement, "error", r->error, "module_id", r->module_id, "pcrs", r->pcrs);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    printf("%-6lld %-13lld %-28s %-40s %-36s %-5s %-20s %s%s%s\n", (long long)seq, (long long)r->time_ms,
           r->operation, r->principal, r->key_id[0] ? r->key_id : "-", r->decision,
           r->statement[0] ? r->statement : "-", r->error, r->module_id[0] ? " module=" : "", r->module_id);
}

static int cl_kms_cmd_audit(int argc, char **argv)
{
    const char *dir = getenv("CLOISTER_KMS_DIR");
    bool json = false, dir_given = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cl_kms_help(stdout);
            return CL_KMS_EXIT_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-') {
            return cl_kms_usage("audit: unknown option");
        } else if (!dir_given) {
            dir = argv[i];
            dir_given = true;
        } else {
            return cl_kms_usage("audit: more than one DIR");
        }
    }
    if (!dir)
        return cl_kms_usage("audit: DIR is required");
    struct cl_kms_store *st = NULL;
    cl_err rc = cl_kms_store_open(dir, &st);
    if (rc)
        return cl_kms_fail("open key store", rc);
    if (!json)
        printf("%-6s %-13s %-28s %-40s %-36s %-5s %-20s %s\n", "seq", "time_ms", "operation", "principal", "key",
               "dec", "statement", "error");
    rc = cl_kms_audit_list(st, cl_kms_audit_print_row, &json);
    cl_kms_store_close(st);
    if (rc)
        return cl_kms_fail("read audit", rc);
    return CL_KMS_EXIT_OK;
}

int main(int argc, char **argv)
{
    cl_log_set_component("kms");
    cl_log_set_level(CL_LOG_WARN);
    if (argc < 2)
        return cl_kms_usage("a COMMAND is required");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        cl_kms_help(stdout);
        return CL_KMS_EXIT_OK;
    }
    if (!strcmp(argv[1], "init"))
        return cl_kms_cmd_init(argc, argv);
    if (!strcmp(argv[1], "serve"))
        return cl_kms_cmd_serve(argc, argv);
    if (!strcmp(argv[1], "user"))
        return cl_kms_cmd_user(argc, argv);
    if (!strcmp(argv[1], "audit"))
        return cl_kms_cmd_audit(argc, argv);
    fprintf(stderr, "cloister-kms: unknown command '%s' (try 'cloister-kms --help')\n", argv[1]);
    return CL_KMS_EXIT_USAGE;
}
