/* Host configuration: the key-service credentials file, the key-service URL
 * and the boot configuration handed to the enclave. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloister/bootcfg.h"
#include "cloister/file.h"
#include "cloister/secmem.h"
#include "cloister/host.h"

#define CL_HOST_CREDS_MAX (64u << 10)
#define CL_HOST_CRED_FIELD_MAX 4096u

void cl_host_creds_free(struct cl_host_creds *c)
{
    if (!c)
        return;
    cl_buf_free(&c->access_key_id);
    cl_buf_free(&c->secret_access_key);
    cl_buf_free(&c->session_token);
    cl_buf_free(&c->region);
}

/* Credentials become HTTP header and signing input inside the enclave:
 * printable ASCII only. */
static cl_err cl_host_cred_field(const struct cl_buf *file, const char *name, int required, struct cl_buf *out)
{
    cl_err rc = cl_host_json_get_string(file->data, file->len, name, out);
    if (rc == CL_E_CORE_NOT_FOUND && !required)
        rc = CL_OK;
    else if (rc == CL_E_CORE_NOT_FOUND)
        return cl_err_fail(CL_E_NET_HOST_CREDENTIALS, "member %s is missing", name);
    if (rc != CL_OK)
        return rc == CL_E_CORE_LIMIT ? cl_err_fail(CL_E_NET_HOST_CREDENTIALS, "member %s is too long", name) : rc;
    if (required && out->len == 0)
        return cl_err_fail(CL_E_NET_HOST_CREDENTIALS, "member %s is empty", name);
    for (size_t i = 0; i < out->len; i++)
        if (out->data[i] < 0x20 || out->data[i] > 0x7e)
            return cl_err_fail(CL_E_NET_HOST_CREDENTIALS, "member %s has a non-printable character", name);
    return cl_buf_append_u8(out, 0) == CL_OK ? (out->len--, CL_OK) : CL_E_CORE_LIMIT;
}

cl_err cl_host_creds_load(const char *path, struct cl_host_creds *out)
{
    static const char *const allowed[] = {"access_key_id", "secret_access_key", "session_token", "region", NULL};
    cl_err rc = CL_OK;
    struct cl_host_creds c;
    struct cl_buf file;
    struct stat st;
    size_t got = 0;
    uint8_t *dst;
    cl_buf_init(&c.access_key_id, CL_HOST_CRED_FIELD_MAX, CL_BUF_SECURE);
    cl_buf_init(&c.secret_access_key, CL_HOST_CRED_FIELD_MAX, CL_BUF_SECURE);
    cl_buf_init(&c.session_token, CL_HOST_CRED_FIELD_MAX, CL_BUF_SECURE);
    cl_buf_init(&c.region, 256, CL_BUF_SECURE);
    cl_buf_init(&file, CL_HOST_CREDS_MAX, CL_BUF_SECURE);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = cl_err_from_errno(errno, "credentials file");
        goto out;
    }
    CL_ENSURE_D(fstat(fd, &st) == 0, CL_E_CORE_IO, "stat credentials file");
    CL_ENSURE_D(S_ISREG(st.st_mode), CL_E_NET_HOST_CREDENTIALS, "credentials file is not a regular file");
    CL_ENSURE_D(st.st_uid == geteuid(), CL_E_CORE_INSECURE_FILE, "credentials file is not owned by this user");
    CL_ENSURE_D(!(st.st_mode & 077), CL_E_CORE_INSECURE_FILE,
                "credentials file mode %03o: group and others must have no access (chmod 600)",
                (unsigned)(st.st_mode & 0777));
    CL_ENSURE_D((uint64_t)st.st_size <= CL_HOST_CREDS_MAX, CL_E_NET_HOST_CREDENTIALS, "credentials file over %u bytes",
                CL_HOST_CREDS_MAX);
    CL_GUARD(cl_buf_extend(&file, (size_t)st.st_size, &dst));
    rc = cl_read_full(fd, dst, (size_t)st.st_size, &got);
    CL_ENSURE_D(rc == CL_OK, CL_E_CORE_IO, "credentials file changed while being read");
    CL_GUARD(cl_host_json_check_keys(file.data, file.len, allowed));
    CL_GUARD(cl_host_cred_field(&file, "access_key_id", 1, &c.access_key_id));
    CL_GUARD(cl_host_cred_field(&file, "secret_access_key", 1, &c.secret_access_key));
    CL_GUARD(cl_host_cred_field(&file, "session_token", 0, &c.session_token));
    CL_GUARD(cl_host_cred_field(&file, "region", 1, &c.region));
    *out = c;
    memset(&c, 0, sizeof(c));
out:
    if (rc != CL_OK)
        cl_host_creds_free(&c);
    cl_buf_free(&file);
    if (fd >= 0)
        close(fd);
    return rc;
}

cl_err cl_host_kms_url_parse(const char *url, struct cl_host_kms_url *out)
{
    cl_err rc = CL_OK;
    struct cl_host_kms_url u;
    memset(&u, 0, sizeof(u));
    size_t n = url ? strlen(url) : 0;
    const char *p;
    CL_ENSURE_D(n > 0 && n < sizeof(u.endpoint), CL_E_NET_URL, "key-service URL length %zu", n);
    for (size_t i = 0; i < n; i++)
        CL_ENSURE_D(url[i] > 0x20 && url[i] < 0x7f, CL_E_NET_URL, "key-service URL has a space or control character");
    if (!strncmp(url, "http://", 7)) {
        p = url + 7;
        u.port = 80;
    } else if (!strncmp(url, "https://", 8)) {
        p = url + 8;
        u.port = 443;
        u.https = 1;
    } else {
        CL_FAIL(CL_E_NET_URL, "key-service URL must start with http:// or https://");
    }
    size_t auth = strcspn(p, "/?#");
    CL_ENSURE_D(auth > 0, CL_E_NET_URL, "key-service URL has no host");
    CL_ENSURE_D(!memchr(p, '@', auth), CL_E_NET_URL, "key-service URL must not carry user info");
    const char *hend, *port = NULL;
    if (p[0] == '[') {
        hend = memchr(p, ']', auth);
        CL_ENSURE_D(hend && hend > p + 1, CL_E_NET_URL, "unterminated IPv6 host");
        CL_ENSURE_D(hend + 1 == p + auth || hend[1] == ':', CL_E_NET_URL, "junk after IPv6 host");
        if (hend + 1 < p + auth)
            port = hend + 2;
        CL_ENSURE_D((size_t)(hend - p - 1) < sizeof(u.host), CL_E_NET_URL, "host too long");
        memcpy(u.host, p + 1, (size_t)(hend - p - 1));
    } else {
        hend = memchr(p, ':', auth);
        if (hend)
            port = hend + 1;
        else
            hend = p + auth;
        CL_ENSURE_D(hend > p && (size_t)(hend - p) < sizeof(u.host), CL_E_NET_URL, "host length");
        memcpy(u.host, p, (size_t)(hend - p));
    }
    if (port) {
        unsigned long v = 0;
        const char *q = port;
        CL_ENSURE_D(q < p + auth, CL_E_NET_URL, "empty port");
        for (; q < p + auth; q++) {
            CL_ENSURE_D(*q >= '0' && *q <= '9' && v <= 65535, CL_E_NET_URL, "port must be 1..65535");
            v = v * 10 + (unsigned long)(*q - '0');
        }
        CL_ENSURE_D(v >= 1 && v <= 65535, CL_E_NET_URL, "port must be 1..65535");
        u.port = (uint16_t)v;
    }
    memcpy(u.endpoint, url, n);
    *out = u;
out:
    return rc;
}

/* Copies a credential or setting into the boot configuration's field. */
static cl_err cl_host_bootcfg_field(char *dst, size_t cap, const void *src, size_t n, const char *what)
{
    if (n >= cap)
        return cl_err_fail(CL_E_NET_HOST_CONFIG, "%s is over %zu bytes", what, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
    return CL_OK;
}

cl_err cl_host_boot_config(const struct cl_host_config *cfg, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    const struct cl_host_creds *c = cfg->creds;
    void *mem = NULL;
    CL_ENSURE_D(c && cfg->kms, CL_E_NET_HOST_CONFIG, "boot configuration needs the key service and credentials");
    CL_GUARD(cl_secmem_alloc(sizeof(struct cl_bootcfg), &mem));
    struct cl_bootcfg *b = mem;
    cl_bootcfg_init(b);
    CL_GUARD(cl_host_bootcfg_field(b->kms_endpoint, sizeof(b->kms_endpoint), cfg->kms->endpoint,
                                   strlen(cfg->kms->endpoint), "--kms"));
    CL_GUARD(cl_host_bootcfg_field(b->kms_region, sizeof(b->kms_region), c->region.data, c->region.len, "region"));
    CL_GUARD(cl_host_bootcfg_field(b->access_key_id, sizeof(b->access_key_id), c->access_key_id.data,
                                   c->access_key_id.len, "access_key_id"));
    CL_GUARD(cl_host_bootcfg_field(b->secret_access_key, sizeof(b->secret_access_key), c->secret_access_key.data,
                                   c->secret_access_key.len, "secret_access_key"));
    CL_GUARD(cl_host_bootcfg_field(b->session_token, sizeof(b->session_token), c->session_token.data,
                                   c->session_token.len, "session_token"));
    if (cfg->kms_ca_pem)
        CL_GUARD(cl_host_bootcfg_field(b->kms_ca_pem, sizeof(b->kms_ca_pem), cfg->kms_ca_pem, strlen(cfg->kms_ca_pem),
                                       "--kms-ca"));
    b->limits[CL_BOOTCFG_LIM_MAX_REQUEST_BYTES] = cfg->max_body;
    b->limits[CL_BOOTCFG_LIM_REQUEST_TIMEOUT_MS] = cfg->timeout_ms;
    if (cfg->max_tokens)
        b->limits[CL_BOOTCFG_LIM_MAX_TOKENS] = cfg->max_tokens;
    if (cfg->max_prompt_tokens)
        b->limits[CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS] = cfg->max_prompt_tokens;
    if (cfg->max_sessions)
        b->limits[CL_BOOTCFG_LIM_MAX_SESSIONS] = cfg->max_sessions;
    if (cfg->has_max_images)
        b->limits[CL_BOOTCFG_LIM_MAX_IMAGES] = cfg->max_images;
    if (cfg->max_image_bytes)
        b->limits[CL_BOOTCFG_LIM_MAX_IMAGE_BYTES] = cfg->max_image_bytes;
    b->limits[CL_BOOTCFG_LIM_KV_CACHE_BITS] = cfg->kv_f16 ? 16 : 32;
    b->mmproj = cfg->mmproj_path != NULL;
    rc = cl_bootcfg_write(b, out);
    if (rc != CL_OK)
        rc = cl_err_fail(CL_E_NET_HOST_CONFIG, "%s", cl_err_detail());
out:
    cl_secmem_free(mem); /* wipes */
    return rc;
}
