/* `cloister proxy`: an attesting OpenAI-compatible endpoint on the user's
 * machine (docs/proxy.md). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/client.h"
#include "cloister/crypto.h"
#include "cloister/file.h"
#include "cloister/log.h"
#include "cloister/proxy.h"
#include "cloister/secmem.h"

#define CL_PROXY_TOKEN_MIN 16
#define CL_PROXY_TOKEN_MAX 4096

static void cl_proxy_help(FILE *f)
{
    fprintf(f,
            "usage: cloister proxy --host URL --trust TRUST.json [--listen 127.0.0.1:8080]\n"
            "                      [--allow-remote --token-file FILE] [--credential-file FILE]\n"
            "                      [--model-name NAME]\n"
            "                      [--max-request BYTES] [--timeout SECS] [--log-level LEVEL]\n\n"
            "Serves the OpenAI API on this machine and forwards every chat request, encrypted with\n"
            "Oblivious HTTP, to an enclave whose attestation verified against TRUST.json (root, PCRs,\n"
            "nonce, freshness, model digest, key-service and configuration pins). Nothing is sent to\n"
            "the host's OHTTP endpoint before that; when the enclave's key changes it is verified again.\n\n"
            "  POST /v1/chat/completions  whole or stream:true (SSE chat.completion.chunk ... [DONE]);\n"
            "                             content: a string or text and image_url (data: URL) parts;\n"
            "                             temperature, top_p, max_tokens, max_completion_tokens, stop,\n"
            "                             seed; n must be 1\n"
            "  GET  /v1/models            the attested model: id and model_sha256\n"
            "  GET  /v1/attestation       the last verification: pins, attested values, failing check\n"
            "  GET  /                     a chat page with image upload and a verification panel\n\n"
            "  --host URL           the cloister-host endpoint, e.g. https://enclave.example:8443\n"
            "  --trust FILE         TRUST.json (see `cloister measure`)\n"
            "  --listen HOST:PORT   where to listen (default 127.0.0.1:8080; port 0 picks one)\n"
            "  --allow-remote       allow a non-loopback --listen; it then needs a bearer token\n"
            "  --token-file FILE    the bearer token clients must send (Authorization: Bearer ...),\n"
            "                       16-4096 bytes; or the environment variable CLOISTER_PROXY_TOKEN.\n"
            "                       Never on the command line. With a loopback address it is optional.\n"
            "  --credential-file FILE  the consumer credential for a licensed model (docs/licensing.md),\n"
            "                       16-512 printable ASCII; or CLOISTER_CREDENTIAL. Sent inside the OHTTP\n"
            "                       encryption with every request; a refusal (no credential, unknown,\n"
            "                       expired, revoked, quota, lease ended) comes back as an OpenAI error\n"
            "                       with the enclave's status and reason. Never on the command line.\n"
            "  --model-name NAME    the model id clients ask for (default cloister)\n"
            "  --max-request BYTES  largest request body accepted (default 8388608, at most 33538048;\n"
            "                       413 above): images travel base64-encoded inside it\n"
            "  --timeout SECS       limit for each exchange with the host (default 300)\n"
            "  --log-level LEVEL    debug, info (default), warn or error: JSON lines on stderr with ids,\n"
            "                       sizes and timings only, never prompts, images or answers\n\n"
            "It prints 'listening on http://HOST:PORT' on stdout and serves until SIGINT or SIGTERM.\n\n"
            "Python (pip install openai):\n"
            "  from openai import OpenAI\n"
            "  client = OpenAI(base_url=\"http://127.0.0.1:8080/v1\", api_key=\"unused\")\n"
            "  r = client.chat.completions.create(model=\"cloister\",\n"
            "        messages=[{\"role\": \"user\", \"content\": \"Hello\"}])\n"
            "  print(r.choices[0].message.content)\n\n"
            "JavaScript (npm install openai):\n"
            "  import OpenAI from \"openai\";\n"
            "  const client = new OpenAI({ baseURL: \"http://127.0.0.1:8080/v1\", apiKey: \"unused\" });\n"
            "  const stream = await client.chat.completions.create({ model: \"cloister\", stream: true,\n"
            "        messages: [{ role: \"user\", content: \"Hello\" }] });\n"
            "  for await (const c of stream) process.stdout.write(c.choices[0]?.delta?.content ?? \"\");\n\n"
            "(api_key is the bearer token when the proxy has one.)\n\n"
            "exit status: 0 stopped by a signal, 1 failure (TRUST.json, listen address), 2 usage error.\n");
}

/* The token's SHA-256 only is kept: the proxy compares digests in constant time. */
static cl_err cl_proxy_token(const char *file, bool *has, uint8_t digest[32])
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    cl_buf_init(&b, CL_PROXY_TOKEN_MAX + 2, CL_BUF_SECURE);
    const char *env = getenv("CLOISTER_PROXY_TOKEN");
    *has = false;
    if (file) {
        CL_GUARD(cl_file_read(file, CL_PROXY_TOKEN_MAX + 2, &b));
    } else if (env) {
        CL_GUARD(cl_buf_append_str(&b, env));
    } else {
        goto out;
    }
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.len--;
    CL_ENSURE_D(b.len >= CL_PROXY_TOKEN_MIN && b.len <= CL_PROXY_TOKEN_MAX, CL_E_NET_PROXY_TOKEN,
                "the token must be %d-%d bytes", CL_PROXY_TOKEN_MIN, CL_PROXY_TOKEN_MAX);
    for (size_t i = 0; i < b.len; i++)
        CL_ENSURE_D(b.data[i] > 0x20 && b.data[i] < 0x7f, CL_E_NET_PROXY_TOKEN,
                    "the token must be printable ASCII without spaces (byte %zu)", i);
    CL_GUARD(cl_sha256(b.data, b.len, digest));
    *has = true;
out:
    if (env)
        unsetenv("CLOISTER_PROXY_TOKEN");
    cl_buf_free(&b);
    return rc;
}

/* The licence credential, from a file or CLOISTER_CREDENTIAL (then unset), into secure memory. */
static cl_err cl_proxy_credential(const char *file, char **out, size_t *len)
{
    cl_err rc = CL_OK;
    struct cl_buf b;
    char *p = NULL;
    cl_buf_init(&b, 1024, CL_BUF_SECURE);
    const char *env = getenv("CLOISTER_CREDENTIAL");
    *out = NULL;
    *len = 0;
    if (file) {
        CL_GUARD(cl_file_read(file, 1024, &b));
    } else if (env && *env) {
        CL_GUARD(cl_buf_append_str(&b, env));
    } else {
        goto out;
    }
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.len--;
    CL_ENSURE_D(b.len >= 16 && b.len <= 512, CL_E_CLI_USAGE, "credential of %zu characters (16..512)", b.len);
    for (size_t i = 0; i < b.len; i++)
        CL_ENSURE_D(b.data[i] > 0x20 && b.data[i] < 0x7f, CL_E_CLI_USAGE,
                    "credential character %zu is not printable ASCII", i);
    CL_GUARD(cl_secmem_alloc(b.len + 1, (void **)&p));
    memcpy(p, b.data, b.len);
    p[b.len] = 0;
    *out = p;
    *len = b.len;
    p = NULL;
out:
    if (env)
        unsetenv("CLOISTER_CREDENTIAL");
    cl_secmem_free(p);
    cl_buf_free(&b);
    return rc;
}

int cl_cmd_proxy(int argc, char **argv)
{
    const char *cmd = "proxy";
    const char *host = NULL, *trust_path = NULL, *listen = "127.0.0.1:8080", *token_file = NULL;
    const char *model = "cloister", *level = "info", *cred_file = NULL;
    bool remote = false;
    uint64_t max_request = CL_PROXY_MAX_REQUEST_DEFAULT, timeout_s = 300;
    enum { O_HOST = 256, O_TRUST, O_LISTEN, O_REMOTE, O_TOKEN_FILE, O_MODEL, O_MAX_REQ, O_TIMEOUT, O_LEVEL, O_CRED };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP,
        {"host", required_argument, NULL, O_HOST},
        {"trust", required_argument, NULL, O_TRUST},
        {"listen", required_argument, NULL, O_LISTEN},
        {"allow-remote", no_argument, NULL, O_REMOTE},
        {"token-file", required_argument, NULL, O_TOKEN_FILE},
        {"model-name", required_argument, NULL, O_MODEL},
        {"max-request", required_argument, NULL, O_MAX_REQ},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"log-level", required_argument, NULL, O_LEVEL},
        {"credential-file", required_argument, NULL, O_CRED},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args a = {.cmd = cmd, .help = cl_proxy_help, .shortopts = "", .longopts = opts};
    for (int o; (o = cl_cli_next(&a, argc, argv)) != -1;) {
        switch (o) {
        case O_HOST: host = optarg; break;
        case O_TRUST: trust_path = optarg; break;
        case O_LISTEN: listen = optarg; break;
        case O_REMOTE: remote = true; break;
        case O_TOKEN_FILE: token_file = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_LEVEL: level = optarg; break;
        case O_CRED: cred_file = optarg; break;
        case O_MAX_REQ:
            if (!cl_cli_u64_opt(cmd, optarg, 1024, CL_PROXY_MAX_REQUEST_LIMIT, &max_request,
                                "--max-request expects 1024-%zu bytes", CL_PROXY_MAX_REQUEST_LIMIT))
                return CL_EXIT_USAGE;
            break;
        case O_TIMEOUT:
            if (!cl_cli_u64_opt(cmd, optarg, 1, 86400, &timeout_s, "--timeout expects 1-86400 seconds"))
                return CL_EXIT_USAGE;
            break;
        default: return a.exit;
        }
    }
    if (optind < argc)
        return cl_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!host)
        return cl_cli_usage_error(cmd, "--host URL is required");
    if (!trust_path)
        return cl_cli_usage_error(cmd, "--trust TRUST.json is required");
    size_t ml = strlen(model);
    bool model_ok = ml >= 1 && ml <= CL_PROXY_MAX_MODEL_ID;
    for (size_t i = 0; model_ok && i < ml; i++)
        model_ok = (model[i] >= 'a' && model[i] <= 'z') || (model[i] >= 'A' && model[i] <= 'Z') ||
                   (model[i] >= '0' && model[i] <= '9') || strchr("-_.:/", model[i]);
    if (!model_ok)
        return cl_cli_usage_error(cmd, "--model-name: 1-%d characters of A-Z a-z 0-9 - _ . : /", CL_PROXY_MAX_MODEL_ID);
    enum cl_log_level lvl = cl_log_level_parse(level);
    if (lvl == CL_LOG_NONE)
        return cl_cli_usage_error(cmd, "--log-level expects debug, info, warn or error");

    struct cl_proxy_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cl_err rc = cl_proxy_parse_listen(listen, &cfg.listen, &cfg.loopback);
    if (rc != CL_OK)
        return cl_cli_usage_error(cmd, "--listen %s: %s", listen, cl_err_detail());
    if (!cfg.loopback && !remote)
        return cl_cli_usage_error(cmd, "--listen %s is not a loopback address: that needs --allow-remote and a "
                                       "bearer token (--token-file or CLOISTER_PROXY_TOKEN)", listen);
    int ret = cl_cli_harden(cmd);
    if (ret != CL_EXIT_OK)
        return ret;
    rc = cl_proxy_token(token_file, &cfg.has_token, cfg.token_sha256);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, token_file ? token_file : "CLOISTER_PROXY_TOKEN", rc);
    if (!cfg.loopback && !cfg.has_token)
        return cl_cli_usage_error(cmd, "--allow-remote needs a bearer token: --token-file FILE or "
                                       "CLOISTER_PROXY_TOKEN (never on the command line)");
    char *cred = NULL;
    size_t cred_len = 0;
    rc = cl_proxy_credential(cred_file, &cred, &cred_len);
    if (rc != CL_OK)
        return cl_cli_fail(cmd, cred_file ? cred_file : "CLOISTER_CREDENTIAL", rc);
    struct cl_trust trust;
    memset(&trust, 0, sizeof(trust));
    if ((rc = cl_trust_load(trust_path, &trust)) != CL_OK) {
        cl_secmem_free(cred);
        return cl_cli_fail(cmd, trust_path, rc);
    }
    cfg.credential = cred;
    cfg.credential_len = cred_len;
    cfg.host_url = host;
    cfg.trust = &trust;
    snprintf(cfg.model_id, sizeof(cfg.model_id), "%s", model);
    cfg.max_request = (size_t)max_request;
    cfg.timeout_ms = timeout_s * 1000;
    cl_log_set_component("proxy");
    cl_log_set_level(lvl);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    cl_proxy *p = NULL;
    rc = cl_proxy_start(&cfg, &p);
    cl_trust_free(&trust);
    cl_wipe(cfg.token_sha256, sizeof(cfg.token_sha256));
    if (cred) { /* the proxy has its own copy */
        cl_wipe(cred, cred_len);
        cl_secmem_free(cred);
        cfg.credential = NULL;
    }
    if (rc != CL_OK)
        return cl_cli_fail(cmd, listen, rc);
    char shown[160];
    snprintf(shown, sizeof(shown), "%.*s", (int)(strrchr(listen, ':') - listen), listen);
    printf("listening on http://%s:%u\n", !strcmp(shown, "localhost") ? "127.0.0.1" : shown,
           (unsigned)cl_proxy_port(p));
    fflush(stdout);
    CL_LOG(CL_LOG_INFO, "proxy_listening", CL_LOG_COUNT("port", cl_proxy_port(p)),
           CL_LOG_COUNT("token", cfg.has_token ? 1 : 0));
    int sig = 0;
    sigwait(&set, &sig);
    CL_LOG(CL_LOG_INFO, "proxy_stopping", CL_LOG_COUNT("signal", (uint64_t)sig));
    cl_proxy_stop(p);
    return CL_EXIT_OK;
}
