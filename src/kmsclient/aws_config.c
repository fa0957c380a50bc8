/* AWS credentials and region from the usual variables and files. Its own
 * object file so that code which only signs requests (the batch stores the
 * untrusted worker links) pulls in no KMS or Recipient code. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/file.h"
#include "cloister/kms_client.h"
#include "cloister/secmem.h"

#define CL_KMSC_MAX_CONFIG_FILE (256 * 1024)

void cl_kmsc_credentials_wipe(struct cl_kmsc_credentials *c) { cl_wipe(c, sizeof(*c)); }

/* Finds `key = value` in section [section] of an INI file held in f. */
static bool cl_kmsc_ini_get(const struct cl_buf *f, const char *section, const char *key, char *out, size_t n)
{
    struct cl_cursor c;
    cl_cursor_init(&c, f->data, f->len);
    bool in = false;
    while (!cl_cursor_done(&c)) {
        size_t s = c.off;
        while (c.off < c.len && c.p[c.off] != '\n')
            c.off++;
        size_t e = c.off;
        if (c.off < c.len)
            c.off++;
        while (s < e && isspace(c.p[s]))
            s++;
        while (e > s && isspace(c.p[e - 1]))
            e--;
        if (s == e || c.p[s] == '#' || c.p[s] == ';')
            continue;
        if (c.p[s] == '[') {
            if (e - s < 2 || c.p[e - 1] != ']')
                continue;
            size_t ss = s + 1, se = e - 1;
            while (ss < se && isspace(c.p[ss]))
                ss++;
            while (se > ss && isspace(c.p[se - 1]))
                se--;
            in = strlen(section) == se - ss && !memcmp(c.p + ss, section, se - ss);
            continue;
        }
        if (!in)
            continue;
        size_t eq = s;
        while (eq < e && c.p[eq] != '=')
            eq++;
        if (eq == e)
            continue;
        size_t ke = eq;
        while (ke > s && isspace(c.p[ke - 1]))
            ke--;
        size_t vs = eq + 1;
        while (vs < e && isspace(c.p[vs]))
            vs++;
        if (strlen(key) == ke - s && !memcmp(c.p + s, key, ke - s)) {
            if (e - vs >= n)
                return false;
            memcpy(out, c.p + vs, e - vs);
            out[e - vs] = 0;
            return true;
        }
    }
    return false;
}

static const char *cl_kmsc_profile(void)
{
    const char *p = getenv("AWS_PROFILE");
    return p && *p ? p : "default";
}

cl_err cl_kmsc_credentials_load(struct cl_kmsc_credentials *out)
{
    cl_err rc = CL_OK;
    struct cl_buf f;
    char path[4096];
    cl_buf_init(&f, CL_KMSC_MAX_CONFIG_FILE, CL_BUF_SECURE);
    memset(out, 0, sizeof(*out));
    const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (ak && *ak && sk && *sk) {
        CL_ENSURE_D(strlen(ak) < sizeof(out->access_key) && strlen(sk) < sizeof(out->secret), CL_E_NET_CREDENTIALS,
                    "AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY too long");
        snprintf(out->access_key, sizeof(out->access_key), "%s", ak);
        snprintf(out->secret, sizeof(out->secret), "%s", sk);
        const char *tok = getenv("AWS_SESSION_TOKEN");
        if (tok && *tok) {
            CL_ENSURE_D(strlen(tok) < sizeof(out->session_token), CL_E_NET_CREDENTIALS, "AWS_SESSION_TOKEN too long");
            snprintf(out->session_token, sizeof(out->session_token), "%s", tok);
        }
        goto out;
    }
    const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
    if (file && *file)
        snprintf(path, sizeof(path), "%s", file);
    else if (home && *home)
        snprintf(path, sizeof(path), "%s/.aws/credentials", home);
    else
        CL_FAIL(CL_E_NET_CREDENTIALS, "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and no HOME for ~/.aws/credentials");
    if (cl_file_read(path, CL_KMSC_MAX_CONFIG_FILE, &f) != CL_OK)
        CL_FAIL(CL_E_NET_CREDENTIALS, "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the credentials file is unreadable");
    const char *prof = cl_kmsc_profile();
    CL_ENSURE_D(cl_kmsc_ini_get(&f, prof, "aws_access_key_id", out->access_key, sizeof(out->access_key)) &&
                    cl_kmsc_ini_get(&f, prof, "aws_secret_access_key", out->secret, sizeof(out->secret)),
                CL_E_NET_CREDENTIALS, "credentials file has no aws_access_key_id/aws_secret_access_key for the profile");
    (void)cl_kmsc_ini_get(&f, prof, "aws_session_token", out->session_token, sizeof(out->session_token));
out:
    if (rc)
        cl_kmsc_credentials_wipe(out);
    cl_buf_free(&f);
    return rc;
}

cl_err cl_kmsc_region_load(char *out, size_t n)
{
    cl_err rc = CL_OK;
    struct cl_buf f;
    char path[4096], sect[300];
    cl_buf_init(&f, CL_KMSC_MAX_CONFIG_FILE, CL_BUF_NONE);
    const char *r = getenv("AWS_REGION");
    if (!r || !*r)
        r = getenv("AWS_DEFAULT_REGION");
    if (r && *r) {
        CL_ENSURE_D(strlen(r) < n, CL_E_NET_CREDENTIALS, "AWS_REGION too long");
        snprintf(out, n, "%s", r);
        goto out;
    }
    const char *file = getenv("AWS_CONFIG_FILE"), *home = getenv("HOME");
    if (file && *file)
        snprintf(path, sizeof(path), "%s", file);
    else if (home && *home)
        snprintf(path, sizeof(path), "%s/.aws/config", home);
    else
        goto out;
    if (cl_file_read(path, CL_KMSC_MAX_CONFIG_FILE, &f) != CL_OK)
        goto out;
    const char *prof = cl_kmsc_profile();
    if (!strcmp(prof, "default"))
        snprintf(sect, sizeof(sect), "default");
    else
        snprintf(sect, sizeof(sect), "profile %s", prof);
    char tmp[64];
    if (cl_kmsc_ini_get(&f, sect, "region", tmp, sizeof(tmp)) && strlen(tmp) < n)
        snprintf(out, n, "%s", tmp);
out:
    cl_buf_free(&f);
    return rc;
}

