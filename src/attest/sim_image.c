/* cloister-sim enclave images: one file, three sections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/attest.h"

static cl_err cl_sim_image_config(struct cl_sim_image *im)
{
    struct cl_cursor c;
    cl_cursor_init(&c, im->config.p, im->config.len);
    bool have_name = false;
    while (!cl_cursor_done(&c)) {
        const uint8_t *line = c.p + c.off;
        size_t left = cl_cursor_left(&c), n = 0;
        while (n < left && line[n] != '\n')
            n++;
        if (n == left)
            return cl_err_fail(CL_E_SIM_IMAGE, "config line at offset %zu lacks a newline", c.off);
        const uint8_t *eq = memchr(line, '=', n);
        if (!eq)
            return cl_err_fail(CL_E_SIM_IMAGE, "config line at offset %zu is not key=value", c.off);
        size_t klen = (size_t)(eq - line), vlen = n - klen - 1;
        char val[64];
        if (vlen == 0 || vlen >= sizeof(val))
            return cl_err_fail(CL_E_SIM_IMAGE, "config value at offset %zu is empty or too long", c.off);
        memcpy(val, eq + 1, vlen);
        val[vlen] = 0;
        for (size_t i = 0; i < vlen; i++)
            if (val[i] < 0x21 || val[i] > 0x7e)
                return cl_err_fail(CL_E_SIM_IMAGE, "config value at offset %zu is not printable ASCII", c.off);
        uint64_t *num = NULL;
        if (klen == 4 && !memcmp(line, "name", 4)) {
            if (have_name)
                return cl_err_fail(CL_E_SIM_IMAGE, "config key name repeated");
            memcpy(im->name, val, vlen + 1);
            have_name = true;
        } else if (klen == 10 && !memcmp(line, "memory_mib", 10)) {
            num = &im->memory_mib;
        } else if (klen == 4 && !memcmp(line, "cpus", 4)) {
            num = &im->cpus;
        } else if (klen == 3 && !memcmp(line, "arg", 3)) {
            if (im->n_args >= CL_SIM_IMAGE_MAX_ARGS)
                return cl_err_fail(CL_E_SIM_IMAGE, "more than %d arg lines", CL_SIM_IMAGE_MAX_ARGS);
            memcpy(im->args[im->n_args++], val, vlen + 1);
        } else {
            return cl_err_fail(CL_E_SIM_IMAGE, "unknown config key at offset %zu", c.off);
        }
        if (num) {
            char *end;
            unsigned long long v = strtoull(val, &end, 10);
            if (*end || val[0] == '-' || v == 0 || v > 1u << 20 || *num)
                return cl_err_fail(CL_E_SIM_IMAGE, "config number at offset %zu is invalid or repeated", c.off);
            *num = v;
        }
        if (cl_cursor_skip(&c, n + 1) != CL_OK)
            return cl_err_fail(CL_E_SIM_IMAGE, "config");
    }
    if (!have_name)
        return cl_err_fail(CL_E_SIM_IMAGE, "config has no name");
    return CL_OK;
}

cl_err cl_sim_image_parse(const uint8_t *p, size_t n, struct cl_sim_image *out)
{
    cl_err rc = CL_OK;
    struct cl_sim_image im;
    struct cl_cursor c;
    const uint8_t *magic;
    uint32_t clen, klen;
    uint64_t alen;
    memset(&im, 0, sizeof(im));
    cl_cursor_init(&c, p, n);
    CL_ENSURE_D(n <= CL_SIM_IMAGE_MAX, CL_E_SIM_IMAGE, "image of %zu bytes is too large", n);
    CL_ENSURE_D(cl_cursor_bytes(&c, CL_SIM_IMAGE_MAGIC_LEN, &magic) == CL_OK &&
                    memcmp(magic, CL_SIM_IMAGE_MAGIC, CL_SIM_IMAGE_MAGIC_LEN) == 0,
                CL_E_SIM_IMAGE, "bad magic");
    CL_ENSURE_D(cl_cursor_u32be(&c, &clen) == CL_OK && clen <= CL_SIM_IMAGE_MAX_SECTION &&
                    cl_cursor_bytes(&c, clen, &im.config.p) == CL_OK,
                CL_E_SIM_IMAGE, "config section");
    im.config.len = clen;
    CL_ENSURE_D(cl_cursor_u32be(&c, &klen) == CL_OK && klen <= CL_SIM_IMAGE_MAX_SECTION &&
                    cl_cursor_bytes(&c, klen, &im.kernel.p) == CL_OK,
                CL_E_SIM_IMAGE, "kernel section");
    im.kernel.len = klen;
    CL_ENSURE_D(cl_cursor_u64be(&c, &alen) == CL_OK && alen > 0 && alen <= CL_SIM_IMAGE_MAX_APP &&
                    alen <= cl_cursor_left(&c) && cl_cursor_bytes(&c, (size_t)alen, &im.app.p) == CL_OK,
                CL_E_SIM_IMAGE, "app section");
    im.app.len = (size_t)alen;
    CL_ENSURE_D(cl_cursor_done(&c), CL_E_SIM_IMAGE, "%zu trailing bytes", cl_cursor_left(&c));
    CL_GUARD(cl_sim_image_config(&im));
    *out = im;
out:
    return rc;
}

cl_err cl_sim_image_build(const char *name, uint64_t memory_mib, uint64_t cpus, const char *const *args,
                          unsigned n_args, const char *kernel, const uint8_t *app, size_t applen, struct cl_buf *out)
{
    cl_err rc = CL_OK;
    struct cl_buf cfg;
    struct cl_sim_image check;
    size_t start = out->len;
    cl_buf_init(&cfg, CL_SIM_IMAGE_MAX_SECTION, CL_BUF_NONE);
    CL_GUARD(cl_buf_appendf(&cfg, "name=%s\n", name));
    if (memory_mib)
        CL_GUARD(cl_buf_appendf(&cfg, "memory_mib=%llu\n", (unsigned long long)memory_mib));
    if (cpus)
        CL_GUARD(cl_buf_appendf(&cfg, "cpus=%llu\n", (unsigned long long)cpus));
    CL_ENSURE_D(n_args <= CL_SIM_IMAGE_MAX_ARGS, CL_E_SIM_IMAGE, "more than %d arguments", CL_SIM_IMAGE_MAX_ARGS);
    for (unsigned i = 0; i < n_args; i++) {
        CL_ENSURE_D(!strchr(args[i], '\n'), CL_E_SIM_IMAGE, "argument %u has a newline", i + 1);
        CL_GUARD(cl_buf_appendf(&cfg, "arg=%s\n", args[i]));
    }
    size_t klen = strlen(kernel);
    CL_ENSURE_D(klen <= CL_SIM_IMAGE_MAX_SECTION, CL_E_SIM_IMAGE, "kernel profile too long");
    CL_ENSURE_D(applen > 0 && applen <= CL_SIM_IMAGE_MAX_APP, CL_E_SIM_IMAGE, "app of %zu bytes", applen);
    CL_GUARD(cl_buf_append(out, CL_SIM_IMAGE_MAGIC, CL_SIM_IMAGE_MAGIC_LEN));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)cfg.len));
    CL_GUARD(cl_buf_append(out, cfg.data, cfg.len));
    CL_GUARD(cl_buf_append_u32be(out, (uint32_t)klen));
    CL_GUARD(cl_buf_append(out, kernel, klen));
    CL_GUARD(cl_buf_append_u64be(out, applen));
    CL_GUARD(cl_buf_append(out, app, applen));
    /* What we write must parse (validates name and numbers). */
    CL_GUARD(cl_sim_image_parse(out->data + start, out->len - start, &check));
out:
    cl_buf_free(&cfg);
    return rc;
}

static cl_err cl_sim_measure_one(const uint8_t *p, size_t n, uint8_t out[CL_ATTEST_PCR_LEN])
{
    uint8_t buf[2 * CL_ATTEST_PCR_LEN];
    memset(buf, 0, CL_ATTEST_PCR_LEN);
    cl_err rc = cl_sha384(p, n, buf + CL_ATTEST_PCR_LEN);
    if (rc == CL_OK)
        rc = cl_sha384(buf, sizeof(buf), out);
    return rc;
}

cl_err cl_sim_image_measure(const uint8_t *p, size_t n, uint8_t pcr[3][CL_ATTEST_PCR_LEN])
{
    cl_err rc = CL_OK;
    struct cl_sim_image im;
    CL_GUARD(cl_sim_image_parse(p, n, &im));
    CL_GUARD(cl_sim_measure_one(p, n, pcr[0]));
    CL_GUARD(cl_sim_measure_one(im.kernel.p, im.kernel.len, pcr[1]));
    CL_GUARD(cl_sim_measure_one(im.app.p, im.app.len, pcr[2]));
out:
    return rc;
}
