/* `cloister attest show|verify`: inspect and verify Nitro attestation documents. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cloister/attest.h"
#include "cloister/encode.h"
#include "cloister/file.h"

#define CL_ATTEST_CLI_MAX_FILE (256 * 1024)

static void cl_attest_cli_help(FILE *f)
{
    fprintf(f,
            "usage: cloister attest show DOC [--json]\n"
            "       cloister attest verify DOC --root ROOT.pem [--at RFC3339] [--pcr N=HEX]...\n"
            "                              [--nonce HEX] [--max-age SECONDS] [--public-key HEX]\n"
            "                              [--user-data HEX] [--allow-debug] [--allow-any-pcr] [--json]\n\n"
            "DOC is an AWS Nitro attestation document (COSE_Sign1), raw CBOR or base64.\n\n"
            "show     prints the document's fields without verifying anything.\n"
            "verify   checks, in order: cabundle[0] equals the pinned ROOT (PEM or DER) byte for byte;\n"
            "         each certificate through the cabundle to the leaf (issuer, signature, CA flags,\n"
            "         key usage, path length, validity at --at or now); the leaf's ES384 signature;\n"
            "         debug mode (PCR0-2 all zero) unless --allow-debug; every --pcr (at least one is\n"
            "         required unless --allow-any-pcr); --nonce; --max-age against the timestamp;\n"
            "         --public-key and --user-data. The first failed check is named.\n\n"
            "  --at TIME         verification time, e.g. 2024-09-07T15:00:00Z (archived documents)\n"
            "  --pcr N=HEX       expected PCR N (0-31), 96 hex digits; repeatable\n"
            "  --nonce HEX       expected nonce\n"
            "  --max-age SECS    reject documents whose timestamp is older than this\n"
            "  --json            machine-readable output\n\n"
            "exit status: 0 every check passed, 1 a check failed or the input is bad, 2 usage error.\n");
}

static cl_err cl_attest_cli_read_doc(const char *path, struct cl_buf *raw)
{
    struct cl_buf file;
    cl_buf_init(&file, CL_ATTEST_CLI_MAX_FILE, CL_BUF_NONE);
    cl_err rc = cl_file_read(path, CL_ATTEST_CLI_MAX_FILE, &file);
    if (rc == CL_OK)
        rc = cl_attest_decode_input(file.data, file.len, raw);
    cl_buf_free(&file);
    return rc;
}

static void cl_attest_cli_hex(FILE *f, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

static void cl_attest_cli_time(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(buf, len, "?");
        return;
    }
    size_t l = strlen(buf);
    snprintf(buf + l, len - l, ".%03uZ", (unsigned)(ms % 1000));
}

static void cl_attest_cli_show_json(const struct cl_attest_doc *d)
{
    char ts[64];
    cl_attest_cli_time(d->timestamp_ms, ts, sizeof(ts));
    printf("{\"module_id\":");
    cl_cli_json_str(stdout, d->module_id.p, d->module_id.len);
    printf(",\"digest\":\"SHA384\",\"timestamp\":%llu,\"time\":\"%s\",\"debug\":%s,\"pcrs\":{",
           (unsigned long long)d->timestamp_ms, ts, cl_attest_is_debug(d) ? "true" : "false");
    bool first = true;
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        if (!(d->pcr_present & (1u << i)))
            continue;
        printf("%s\"%u\":\"", first ? "" : ",", i);
        cl_attest_cli_hex(stdout, d->pcr[i].p, d->pcr[i].len);
        printf("\"");
        first = false;
    }
    printf("},\"certificate\":\"");
    cl_attest_cli_hex(stdout, d->certificate.p, d->certificate.len);
    printf("\",\"cabundle\":[");
    for (size_t i = 0; i < d->ncabundle; i++) {
        printf("%s\"", i ? "," : "");
        cl_attest_cli_hex(stdout, d->cabundle[i].p, d->cabundle[i].len);
        printf("\"");
    }
    printf("]");
    const struct { const char *name; const struct cl_attest_span *s; } opt[] = {
        {"public_key", &d->public_key}, {"user_data", &d->user_data}, {"nonce", &d->nonce}};
    for (size_t i = 0; i < 3; i++) {
        printf(",\"%s\":", opt[i].name);
        if (!opt[i].s->len) {
            printf("null");
            continue;
        }
        printf("\"");
        cl_attest_cli_hex(stdout, opt[i].s->p, opt[i].s->len);
        printf("\"");
    }
    printf("}\n");
}

static void cl_attest_cli_show_text(const struct cl_attest_doc *d)
{
    char ts[64];
    cl_attest_cli_time(d->timestamp_ms, ts, sizeof(ts));
    printf("module_id:   %.*s\n", (int)d->module_id.len, (const char *)d->module_id.p);
    printf("digest:      SHA384\n");
    printf("timestamp:   %llu (%s)\n", (unsigned long long)d->timestamp_ms, ts);
    printf("debug mode:  %s\n", cl_attest_is_debug(d) ? "yes (PCR0-2 all zero)" : "no");
    for (unsigned i = 0; i < CL_ATTEST_MAX_PCRS; i++) {
        if (!(d->pcr_present & (1u << i)))
            continue;
        printf("PCR%-2u        ", i);
        cl_attest_cli_hex(stdout, d->pcr[i].p, d->pcr[i].len);
        printf("\n");
    }
    int64_t nb, na;
    printf("certificate: %zu bytes", d->certificate.len);
    if (cl_attest_cert_validity(d->certificate.p, d->certificate.len, &nb, &na) == CL_OK) {
        char a[64], b[64];
        cl_attest_cli_time((uint64_t)nb * 1000, a, sizeof(a));
        cl_attest_cli_time((uint64_t)na * 1000, b, sizeof(b));
        printf(", valid %s .. %s", a, b);
    }
    printf("\ncabundle:    %zu certificates\n", d->ncabundle);
    const struct { const char *name; const struct cl_attest_span *s; } opt[] = {
        {"public_key", &d->public_key}, {"user_data", &d->user_data}, {"nonce", &d->nonce}};
    for (size_t i = 0; i < 3; i++) {
        printf("%-12s ", opt[i].name);
        if (!opt[i].s->len) {
            printf("(none)\n");
            continue;
        }
        printf("%zu bytes ", opt[i].s->len);
        cl_attest_cli_hex(stdout, opt[i].s->p, opt[i].s->len < 64 ? opt[i].s->len : 64);
        printf("%s\n", opt[i].s->len > 64 ? "..." : "");
    }
}

static int cl_attest_cli_show(int argc, char **argv)
{
    const char *doc = NULL;
    bool json = false;
    static const struct option opts[] = {CL_CLI_OPT_HELP, CL_CLI_OPT_JSON, CL_CLI_OPT_END};
    struct cl_cli_args a = {.cmd = "attest show", .help = cl_attest_cli_help, .longopts = opts, .json = &json};
    if (cl_cli_next(&a, argc, argv) != -1)
        return a.exit;
    if (optind + 1 < argc)
        return cl_cli_usage_error("attest show", "more than one DOC given");
    doc = optind < argc ? argv[optind] : NULL;
    if (!doc)
        return cl_cli_usage_error("attest show", "DOC is required");
    struct cl_buf raw;
    struct cl_attest_doc d;
    cl_buf_init(&raw, CL_ATTEST_CLI_MAX_FILE, CL_BUF_NONE);
    cl_err rc = cl_attest_cli_read_doc(doc, &raw);
    if (rc != CL_OK) {
        cl_buf_free(&raw);
        return cl_cli_fail("attest show", doc, rc);
    }
    rc = cl_attest_parse(raw.data, raw.len, &d);
    cl_buf_free(&raw);
    if (rc != CL_OK)
        return cl_cli_fail("attest show", doc, rc);
    if (json)
        cl_attest_cli_show_json(&d);
    else
        cl_attest_cli_show_text(&d);
    cl_attest_doc_free(&d);
    return CL_EXIT_OK;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
static bool cl_attest_cli_parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) {
        memset(&tm, 0, sizeof(tm));
        p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    }
    if (!p)
        return false;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        if (!digits)
            return false;
        for (; digits < 3; digits++)
            frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 || mm > 59 || strlen(p) != 6)
            return false;
        off = sign * (hh * 3600 + mm * 60);
        p += 6;
    } else {
        return false;
    }
    if (*p)
        return false;
    time_t t = timegm(&tm);
    if (t <= 0)
        return false;
    *ms = ((int64_t)t - off) * 1000 + frac;
    return *ms > 0;
}

static int cl_attest_cli_verify(int argc, char **argv)
{
    const char *cmd = "attest verify";
    const char *doc = NULL, *root = NULL;
    bool json = false;
    struct cl_attest_pcr_expect pcrs[CL_ATTEST_MAX_PCRS];
    struct cl_attest_policy pol;
    struct cl_buf nonce, pk, ud, raw, rootbuf, rootder;
    int ret = CL_EXIT_FAIL;
    memset(&pol, 0, sizeof(pol));
    cl_buf_init(&nonce, CL_ATTEST_MAX_DOC_FIELD, CL_BUF_NONE);
    cl_buf_init(&pk, CL_ATTEST_MAX_DOC_FIELD, CL_BUF_NONE);
    cl_buf_init(&ud, CL_ATTEST_MAX_DOC_FIELD, CL_BUF_NONE);
    cl_buf_init(&raw, CL_ATTEST_CLI_MAX_FILE, CL_BUF_NONE);
    cl_buf_init(&rootbuf, CL_ATTEST_CLI_MAX_FILE, CL_BUF_NONE);
    cl_buf_init(&rootder, CL_ATTEST_CLI_MAX_FILE, CL_BUF_NONE);
    enum { O_ALLOW_DEBUG = 256, O_ALLOW_ANY_PCR, O_ROOT, O_AT, O_MAX_AGE, O_NONCE, O_PUBLIC_KEY, O_USER_DATA, O_PCR };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP,
        CL_CLI_OPT_JSON,
        {"allow-debug", no_argument, NULL, O_ALLOW_DEBUG},
        {"allow-any-pcr", no_argument, NULL, O_ALLOW_ANY_PCR},
        {"root", required_argument, NULL, O_ROOT},
        {"at", required_argument, NULL, O_AT},
        {"max-age", required_argument, NULL, O_MAX_AGE},
        {"nonce", required_argument, NULL, O_NONCE},
        {"public-key", required_argument, NULL, O_PUBLIC_KEY},
        {"user-data", required_argument, NULL, O_USER_DATA},
        {"pcr", required_argument, NULL, O_PCR},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args args = {.cmd = cmd, .help = cl_attest_cli_help, .longopts = opts, .json = &json};
    for (int o; (o = cl_cli_next(&args, argc, argv)) != -1;) {
        switch (o) {
        case O_ALLOW_DEBUG: pol.allow_debug = true; break;
        case O_ALLOW_ANY_PCR: pol.allow_any_pcr = true; break;
        case O_ROOT: root = optarg; break;
        case O_AT:
            if (!cl_attest_cli_parse_time(optarg, &pol.at_ms)) {
                ret = cl_cli_usage_error(cmd, "--at: '%s' is not an RFC 3339 time like 2024-09-07T15:00:00Z", optarg);
                goto out;
            }
            break;
        case O_MAX_AGE: {
            uint64_t secs;
            if (!cl_cli_parse_u64(optarg, 1, UINT64_MAX / 1000, &secs)) {
                ret = cl_cli_usage_error(cmd, "--max-age: '%s' is not a positive number of seconds", optarg);
                goto out;
            }
            pol.max_age_ms = secs * 1000;
            break;
        }
        case O_NONCE:
        case O_PUBLIC_KEY:
        case O_USER_DATA: {
            struct cl_buf *b = o == O_NONCE ? &nonce : o == O_PUBLIC_KEY ? &pk : &ud;
            cl_buf_reset(b);
            if (!*optarg || cl_hex_decode(optarg, strlen(optarg), b) != CL_OK) {
                ret = cl_cli_usage_error(cmd, "--%s: not hex of at most %d bytes",
                                         o == O_NONCE ? "nonce" : o == O_PUBLIC_KEY ? "public-key" : "user-data",
                                         CL_ATTEST_MAX_DOC_FIELD);
                goto out;
            }
            if (b == &nonce)
                pol.check_nonce = true;
            else if (b == &pk)
                pol.check_public_key = true;
            else
                pol.check_user_data = true;
            break;
        }
        case O_PCR: {
            const char *v = optarg, *eq = strchr(v, '=');
            uint64_t idx;
            char num[8];
            if (!eq || (size_t)(eq - v) >= sizeof(num)) {
                ret = cl_cli_usage_error(cmd, "--pcr: expected N=HEX, got '%s'", v);
                goto out;
            }
            memcpy(num, v, (size_t)(eq - v));
            num[eq - v] = 0;
            if (!cl_cli_parse_u64(num, 0, CL_ATTEST_MAX_PCRS - 1, &idx)) {
                ret = cl_cli_usage_error(cmd, "--pcr: index '%s' is not in 0..31", num);
                goto out;
            }
            for (size_t k = 0; k < pol.npcrs; k++)
                if (pcrs[k].index == idx) {
                    ret = cl_cli_usage_error(cmd, "--pcr: PCR%u given twice", (unsigned)idx);
                    goto out;
                }
            pcrs[pol.npcrs].index = (unsigned)idx;
            if (cl_hex_decode_fixed(eq + 1, strlen(eq + 1), pcrs[pol.npcrs].value, CL_ATTEST_PCR_LEN) != CL_OK) {
                ret = cl_cli_usage_error(cmd, "--pcr: PCR%u value must be %d hex digits", (unsigned)idx,
                                         2 * CL_ATTEST_PCR_LEN);
                goto out;
            }
            pol.npcrs++;
            break;
        }
        default: ret = args.exit; goto out;
        }
    }
    if (optind + 1 < argc) {
        ret = cl_cli_usage_error(cmd, "more than one DOC given");
        goto out;
    }
    doc = optind < argc ? argv[optind] : NULL;
    if (!doc || !root) {
        ret = cl_cli_usage_error(cmd, "%s is required", !doc ? "DOC" : "--root ROOT.pem");
        goto out;
    }
    pol.pcrs = pcrs;
    pol.nonce = (struct cl_attest_span){nonce.data, nonce.len};
    pol.public_key = (struct cl_attest_span){pk.data, pk.len};
    pol.user_data = (struct cl_attest_span){ud.data, ud.len};
    cl_err rc = cl_file_read(root, CL_ATTEST_CLI_MAX_FILE, &rootbuf);
    if (rc == CL_OK)
        rc = cl_attest_cert_to_der(rootbuf.data, rootbuf.len, &rootder);
    if (rc != CL_OK) {
        ret = cl_cli_fail(cmd, root, rc);
        goto out;
    }
    pol.root_der = rootder.data;
    pol.root_len = rootder.len;
    rc = cl_attest_cli_read_doc(doc, &raw);
    if (rc == CL_OK)
        rc = cl_attest_verify_bytes(raw.data, raw.len, &pol);
    char msg[512];
    cl_err_format(rc, msg, sizeof(msg));
    if (json) {
        printf("{\"ok\":%s", rc == CL_OK ? "true" : "false");
        if (rc != CL_OK) {
            printf(",\"check\":\"%s\",\"message\":", cl_err_name(rc) ? cl_err_name(rc) : "UNKNOWN");
            cl_cli_json_str(stdout, (const uint8_t *)msg, strlen(msg));
        }
        printf("}\n");
    } else if (rc == CL_OK) {
        printf("OK: attestation document verified (%zu PCR%s checked%s)\n", pol.npcrs, pol.npcrs == 1 ? "" : "s",
               pol.check_nonce ? ", nonce matched" : "");
    } else {
        fprintf(stderr, "cloister %s: %s: FAILED %s: %s\n", cmd, doc, cl_err_name(rc) ? cl_err_name(rc) : "?", msg);
    }
    ret = rc == CL_OK ? CL_EXIT_OK : CL_EXIT_FAIL;
out:
    cl_buf_free(&nonce);
    cl_buf_free(&pk);
    cl_buf_free(&ud);
    cl_buf_free(&raw);
    cl_buf_free(&rootbuf);
    cl_buf_free(&rootder);
    return ret;
}

int cl_cmd_attest(int argc, char **argv)
{
    if (argc < 2) {
        cl_attest_cli_help(stderr);
        return CL_EXIT_USAGE;
    }
    if (cl_cli_is_help(argv[1])) {
        cl_attest_cli_help(stdout);
        return CL_EXIT_OK;
    }
    if (!strcmp(argv[1], "show"))
        return cl_attest_cli_show(argc - 1, argv + 1);
    if (!strcmp(argv[1], "verify"))
        return cl_attest_cli_verify(argc - 1, argv + 1);
    return cl_cli_usage_error("attest", "unknown subcommand '%s' (show or verify)", argv[1]);
}
