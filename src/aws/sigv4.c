/* AWS Signature Version 4. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/clock.h"
#include "cloister/crypto.h"
#include "cloister/encode.h"
#include "cloister/secmem.h"
#include "cloister/sigv4.h"

#define CL_SIGV4_MAX_CREQ (1u << 20)

static bool cl_sigv4_unreserved(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

static cl_err cl_sigv4_enc(struct cl_buf *out, const uint8_t *p, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (cl_sigv4_unreserved(c) || (keep_slash && c == '/')) {
            cl_err rc = cl_buf_append_u8(out, c);
            if (rc)
                return rc;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            cl_err rc = cl_buf_append(out, e, 3);
            if (rc)
                return rc;
        }
    }
    return CL_OK;
}

/* Query parts may arrive percent-encoded or raw; decode valid escapes so the
 * single encoding pass below gives the canonical form either way. */
static cl_err cl_sigv4_enc_query_part(struct cl_buf *out, const char *p, size_t n)
{
    cl_err rc = CL_OK;
    struct cl_buf dec;
    cl_buf_init(&dec, n + 1, CL_BUF_NONE);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n && cl_hex_digit(p[i + 1]) >= 0 &&
            cl_hex_digit(p[i + 2]) >= 0) {
            CL_GUARD(cl_buf_append_u8(&dec, (uint8_t)(cl_hex_digit(p[i + 1]) * 16 + cl_hex_digit(p[i + 2]))));
            i += 2;
        } else {
            CL_GUARD(cl_buf_append_u8(&dec, (uint8_t)p[i]));
        }
    }
    CL_GUARD(cl_sigv4_enc(out, dec.data, dec.len, false));
out:
    cl_buf_free(&dec);
    return rc;
}

static cl_err cl_sigv4_canon_path(struct cl_buf *out, const char *path, bool no_norm)
{
    cl_err rc = CL_OK;
    size_t n = path ? strlen(path) : 0;
    if (n == 0)
        return cl_buf_append_u8(out, '/');
    if (no_norm)
        return cl_sigv4_enc(out, (const uint8_t *)path, n, true);
    /* Segment stack: offsets of kept segments within path. */
    size_t seg_off[256], seg_len[256], nseg = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && path[i] == '/')
            i++;
        size_t s = i;
        while (i < n && path[i] != '/')
            i++;
        size_t l = i - s;
        if (l == 0 || (l == 1 && path[s] == '.'))
            continue;
        if (l == 2 && path[s] == '.' && path[s + 1] == '.') {
            if (nseg)
                nseg--;
            continue;
        }
        CL_ENSURE_D(nseg < 256, CL_E_NET_SIGV4_LIMIT, "path segments > 256");
        seg_off[nseg] = s;
        seg_len[nseg] = l;
        nseg++;
    }
    CL_GUARD(cl_buf_append_u8(out, '/'));
    for (size_t k = 0; k < nseg; k++) {
        CL_GUARD(cl_sigv4_enc(out, (const uint8_t *)path + seg_off[k], seg_len[k], false));
        if (k + 1 < nseg)
            CL_GUARD(cl_buf_append_u8(out, '/'));
    }
    if (nseg > 0 && path[n - 1] == '/')
        CL_GUARD(cl_buf_append_u8(out, '/'));
out:
    return rc;
}

struct cl_sigv4_qp {
    char *k;
    char *v;
};

static int cl_sigv4_qp_cmp(const void *a, const void *b)
{
    const struct cl_sigv4_qp *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

static cl_err cl_sigv4_canon_query(struct cl_buf *out, const char *q)
{
    cl_err rc = CL_OK;
    struct cl_sigv4_qp *qp = NULL;
    size_t nq = 0;
    if (!q || !*q)
        return CL_OK;
    size_t n = strlen(q);
    CL_ENSURE_D(n <= 8192, CL_E_NET_SIGV4_LIMIT, "query length %zu > 8192", n);
    size_t parts = 1;
    for (size_t i = 0; i < n; i++)
        parts += q[i] == '&';
    CL_ENSURE_D(parts <= 256, CL_E_NET_SIGV4_LIMIT, "query parameters > 256");
    qp = calloc(parts, sizeof(*qp));
    CL_ENSURE(qp, CL_E_CORE_NOMEM);
    size_t i = 0;
    while (i <= n) {
        size_t s = i;
        while (i < n && q[i] != '&')
            i++;
        size_t e = i;
        i++;
        if (e == s)
            continue;
        size_t eq = s;
        while (eq < e && q[eq] != '=')
            eq++;
        struct cl_buf kb, vb;
        cl_buf_init(&kb, 3 * n + 1, CL_BUF_NONE);
        cl_buf_init(&vb, 3 * n + 1, CL_BUF_NONE);
        cl_err r1 = cl_sigv4_enc_query_part(&kb, q + s, eq - s);
        if (!r1)
            r1 = cl_buf_append_u8(&kb, 0);
        if (!r1)
            r1 = cl_sigv4_enc_query_part(&vb, q + eq + (eq < e), e - eq - (eq < e));
        if (!r1)
            r1 = cl_buf_append_u8(&vb, 0);
        if (r1) {
            cl_buf_free(&kb);
            cl_buf_free(&vb);
            CL_FAIL(r1, "query parameter %zu", nq);
        }
        qp[nq].k = (char *)kb.data;
        qp[nq].v = (char *)vb.data;
        nq++;
    }
    qsort(qp, nq, sizeof(*qp), cl_sigv4_qp_cmp);
    for (size_t k = 0; k < nq; k++) {
        if (k)
            CL_GUARD(cl_buf_append_u8(out, '&'));
        CL_GUARD(cl_buf_appendf(out, "%s=%s", qp[k].k, qp[k].v));
    }
out:
    for (size_t k = 0; k < nq; k++) {
        free(qp[k].k);
        free(qp[k].v);
    }
    free(qp);
    return rc;
}

static int cl_sigv4_name_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    for (size_t i = 0; i < m; i++) {
        int x = tolower((unsigned char)a[i]), y = tolower((unsigned char)b[i]);
        if (x != y)
            return x - y;
    }
    return (an > bn) - (an < bn);
}

/* Insertion sort (at most CL_SIGV4_MAX_HEADERS entries); stable, so
 * duplicate names keep their order of appearance. */
static void cl_sigv4_sort_idx(const struct cl_sigv4_header *h, size_t *idx, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = idx[i], j = i;
        while (j > 0 && cl_sigv4_name_cmp(h[idx[j - 1]].name, h[idx[j - 1]].name_len, h[v].name, h[v].name_len) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

/* Trimmed value with runs of spaces collapsed to one. */
static cl_err cl_sigv4_canon_value(struct cl_buf *out, const char *v, size_t n)
{
    size_t s = 0, e = n;
    while (s < e && (v[s] == ' ' || v[s] == '\t'))
        s++;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    bool sp = false;
    for (size_t i = s; i < e; i++) {
        char c = v[i];
        if (c == ' ' || c == '\t') {
            sp = true;
            continue;
        }
        if (sp) {
            cl_err rc = cl_buf_append_u8(out, ' ');
            if (rc)
                return rc;
            sp = false;
        }
        cl_err rc = cl_buf_append_u8(out, (uint8_t)c);
        if (rc)
            return rc;
    }
    return CL_OK;
}

static bool cl_sigv4_in_list(const char *list, const char *name, size_t nlen)
{
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ';');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == nlen && cl_sigv4_name_cmp(p, l, name, nlen) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

cl_err cl_sigv4_canonical_request(const struct cl_sigv4_request *r, const char *signed_headers,
                                  struct cl_buf *creq, struct cl_buf *signed_out)
{
    cl_err rc = CL_OK;
    size_t idx[CL_SIGV4_MAX_HEADERS];
    size_t ni = 0;
    struct cl_buf sh;
    cl_buf_init(&sh, CL_SIGV4_MAX_SIGNED_HEADERS + 1, CL_BUF_NONE);
    CL_ENSURE_D(r->method && *r->method, CL_E_NET_SIGV4_MALFORMED, "method missing");
    CL_ENSURE_D(r->n_headers <= CL_SIGV4_MAX_HEADERS, CL_E_NET_SIGV4_LIMIT, "headers %zu > %d", r->n_headers,
                CL_SIGV4_MAX_HEADERS);
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct cl_sigv4_header *h = &r->headers[i];
        CL_ENSURE_D(h->name_len > 0 && h->name_len <= 256, CL_E_NET_SIGV4_MALFORMED, "header %zu name length", i);
        if (signed_headers && !cl_sigv4_in_list(signed_headers, h->name, h->name_len))
            continue;
        idx[ni++] = i;
    }
    cl_sigv4_sort_idx(r->headers, idx, ni);

    CL_GUARD(cl_buf_appendf(creq, "%s\n", r->method));
    CL_GUARD(cl_sigv4_canon_path(creq, r->path, r->no_path_normalize));
    CL_GUARD(cl_buf_append_u8(creq, '\n'));
    CL_GUARD(cl_sigv4_canon_query(creq, r->query));
    CL_GUARD(cl_buf_append_u8(creq, '\n'));
    for (size_t k = 0; k < ni;) {
        const struct cl_sigv4_header *h = &r->headers[idx[k]];
        for (size_t j = 0; j < h->name_len; j++) {
            uint8_t c = (uint8_t)tolower((unsigned char)h->name[j]);
            CL_GUARD(cl_buf_append_u8(creq, c));
            CL_GUARD(cl_buf_append_u8(&sh, c));
        }
        CL_GUARD(cl_buf_append_u8(creq, ':'));
        size_t k2 = k;
        while (k2 < ni && cl_sigv4_name_cmp(r->headers[idx[k2]].name, r->headers[idx[k2]].name_len, h->name,
                                            h->name_len) == 0) {
            if (k2 > k)
                CL_GUARD(cl_buf_append_u8(creq, ','));
            CL_GUARD(cl_sigv4_canon_value(creq, r->headers[idx[k2]].value, r->headers[idx[k2]].value_len));
            k2++;
        }
        CL_GUARD(cl_buf_append_u8(creq, '\n'));
        k = k2;
        if (k < ni)
            CL_GUARD(cl_buf_append_u8(&sh, ';'));
    }
    if (signed_headers) {
        /* Every header the client claims to have signed must be present. */
        size_t listed = 1;
        for (const char *p = signed_headers; *p; p++)
            listed += *p == ';';
        size_t distinct = 0;
        for (size_t k = 0; k < ni; k++)
            if (k == 0 || cl_sigv4_name_cmp(r->headers[idx[k]].name, r->headers[idx[k]].name_len,
                                            r->headers[idx[k - 1]].name, r->headers[idx[k - 1]].name_len))
                distinct++;
        CL_ENSURE_D(distinct == listed, CL_E_NET_SIGV4_MALFORMED, "SignedHeaders names a header not in the request");
    }
    CL_GUARD(cl_buf_append_u8(creq, '\n'));
    CL_GUARD(cl_buf_append(creq, sh.data ? sh.data : (const uint8_t *)"", sh.len));
    CL_GUARD(cl_buf_append_u8(creq, '\n'));
    {
        uint8_t hash[CL_SHA256_LEN];
        char hex[2 * CL_SHA256_LEN + 1];
        CL_GUARD(cl_sha256(r->body ? (const void *)r->body : "", r->body_len, hash));
        cl_hex_encode(hash, sizeof(hash), hex);
        CL_GUARD(cl_buf_append_str(creq, hex));
    }
    if (signed_out)
        CL_GUARD(cl_buf_append(signed_out, sh.data ? sh.data : (const uint8_t *)"", sh.len));
out:
    cl_buf_free(&sh);
    return rc;
}

cl_err cl_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service, const uint8_t *creq,
                               size_t creq_len, struct cl_buf *sts)
{
    cl_err rc = CL_OK;
    uint8_t hash[CL_SHA256_LEN];
    char hex[2 * CL_SHA256_LEN + 1];
    CL_ENSURE_D(amz_date && strlen(amz_date) == CL_SIGV4_DATE_LEN, CL_E_NET_SIGV4_MALFORMED, "x-amz-date length");
    CL_GUARD(cl_sha256(creq ? (const void *)creq : "", creq_len, hash));
    cl_hex_encode(hash, sizeof(hash), hex);
    CL_GUARD(cl_buf_appendf(sts, CL_SIGV4_ALG "\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date, amz_date, region,
                            service, hex));
out:
    return rc;
}

cl_err cl_sigv4_signature(const char *secret, size_t secret_len, const char *amz_date, const char *region,
                          const char *service, const uint8_t *sts, size_t sts_len,
                          char out_hex[CL_SIGV4_SIG_HEX_LEN + 1])
{
    cl_err rc = CL_OK;
    uint8_t *kbuf = NULL;
    uint8_t k[CL_SHA256_LEN];
    size_t klen = 0;
    CL_ENSURE_D(secret_len <= 512, CL_E_NET_SIGV4_LIMIT, "secret length");
    CL_GUARD(cl_secmem_alloc(secret_len + 4, (void **)&kbuf));
    memcpy(kbuf, "AWS4", 4);
    memcpy(kbuf + 4, secret, secret_len);
    CL_GUARD(cl_hmac(CL_HASH_SHA256, kbuf, secret_len + 4, amz_date, 8, k));
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k, sizeof(k), region, strlen(region), k));
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k, sizeof(k), service, strlen(service), k));
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k, sizeof(k), "aws4_request", 12, k));
    CL_GUARD(cl_hmac(CL_HASH_SHA256, k, sizeof(k), sts, sts_len, k));
    cl_hex_encode(k, sizeof(k), out_hex);
    klen = sizeof(k);
out:
    cl_wipe(k, sizeof(k));
    (void)klen;
    cl_secmem_free(kbuf);
    return rc;
}

cl_err cl_sigv4_sign(const struct cl_sigv4_request *r, const struct cl_sigv4_credentials *cred,
                     const char *amz_date, const char *region, const char *service, struct cl_buf *authz)
{
    cl_err rc = CL_OK;
    struct cl_buf creq, sts, sh;
    char sig[CL_SIGV4_SIG_HEX_LEN + 1];
    cl_buf_init(&creq, CL_SIGV4_MAX_CREQ, CL_BUF_NONE);
    cl_buf_init(&sts, 4096, CL_BUF_NONE);
    cl_buf_init(&sh, CL_SIGV4_MAX_SIGNED_HEADERS + 1, CL_BUF_NONE);
    CL_ENSURE_D(cred && cred->access_key && cred->secret, CL_E_NET_CREDENTIALS, "access key or secret missing");
    CL_GUARD(cl_sigv4_canonical_request(r, NULL, &creq, &sh));
    CL_GUARD(cl_sigv4_string_to_sign(amz_date, region, service, creq.data, creq.len, &sts));
    CL_GUARD(cl_sigv4_signature(cred->secret, strlen(cred->secret), amz_date, region, service, sts.data, sts.len,
                                sig));
    CL_GUARD(cl_buf_appendf(authz, CL_SIGV4_ALG " Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%.*s, Signature=%s",
                            cred->access_key, amz_date, region, service, (int)sh.len,
                            sh.data ? (const char *)sh.data : "", sig));
out:
    cl_buf_free(&creq);
    cl_buf_free(&sts);
    cl_buf_free(&sh);
    return rc;
}

static bool cl_sigv4_field_ok(const char *p, size_t n, bool dash_ok)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(isalnum(c) || (dash_ok && (c == '-' || c == '_'))))
            return false;
    }
    return true;
}

/* Copies the next '/'-terminated (or end-terminated) field of the credential. */
static cl_err cl_sigv4_cred_part(struct cl_cursor *c, char *dst, size_t cap, bool last, const char *what)
{
    size_t s = c->off;
    while (c->off < c->len && c->p[c->off] != '/')
        c->off++;
    size_t n = c->off - s;
    if (n == 0 || n >= cap)
        return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "Credential %s length", what);
    if (!last) {
        if (c->off >= c->len)
            return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "Credential ends after %s", what);
        c->off++;
    } else if (c->off != c->len) {
        return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "Credential has more than 5 parts");
    }
    memcpy(dst, c->p + s, n);
    dst[n] = 0;
    return CL_OK;
}

cl_err cl_sigv4_parse_authz(const char *s, size_t n, struct cl_sigv4_authz *out)
{
    cl_err rc = CL_OK;
    struct cl_sigv4_authz a;
    memset(&a, 0, sizeof(a));
    bool got_cred = false, got_sh = false, got_sig = false;
    const size_t alg_len = sizeof(CL_SIGV4_ALG) - 1;
    CL_ENSURE_D(s && n > 0, CL_E_NET_SIGV4_MALFORMED, "Authorization header empty");
    CL_ENSURE_D(n <= CL_SIGV4_MAX_AUTHZ, CL_E_NET_SIGV4_LIMIT, "Authorization header %zu bytes > %d", n,
                CL_SIGV4_MAX_AUTHZ);
    CL_ENSURE_D(n > alg_len && !memcmp(s, CL_SIGV4_ALG, alg_len) && s[alg_len] == ' ', CL_E_NET_SIGV4_MALFORMED,
                "algorithm is not " CL_SIGV4_ALG);
    struct cl_cursor c;
    cl_cursor_init(&c, s, n);
    CL_GUARD(cl_cursor_skip(&c, alg_len));
    while (!cl_cursor_done(&c)) {
        /* separators: spaces and at most one comma between components */
        while (!cl_cursor_done(&c) && c.p[c.off] == ' ')
            c.off++;
        if (cl_cursor_done(&c))
            break;
        size_t ks = c.off;
        while (!cl_cursor_done(&c) && c.p[c.off] != '=' && c.p[c.off] != ',' && c.p[c.off] != ' ')
            c.off++;
        CL_ENSURE_D(!cl_cursor_done(&c) && c.p[c.off] == '=', CL_E_NET_SIGV4_MALFORMED, "component without '='");
        size_t kl = c.off - ks;
        c.off++;
        size_t vs = c.off;
        while (!cl_cursor_done(&c) && c.p[c.off] != ',' && c.p[c.off] != ' ')
            c.off++;
        size_t vl = c.off - vs;
        const char *k = s + ks, *v = s + vs;
        if (kl == 10 && !memcmp(k, "Credential", 10)) {
            CL_ENSURE_D(!got_cred, CL_E_NET_SIGV4_MALFORMED, "Credential repeated");
            struct cl_cursor cc;
            char term[16];
            cl_cursor_init(&cc, v, vl);
            CL_GUARD(cl_sigv4_cred_part(&cc, a.access_key, sizeof(a.access_key), false, "access key"));
            CL_GUARD(cl_sigv4_cred_part(&cc, a.date, sizeof(a.date), false, "date"));
            CL_GUARD(cl_sigv4_cred_part(&cc, a.region, sizeof(a.region), false, "region"));
            CL_GUARD(cl_sigv4_cred_part(&cc, a.service, sizeof(a.service), false, "service"));
            CL_GUARD(cl_sigv4_cred_part(&cc, term, sizeof(term), true, "terminator"));
            CL_ENSURE_D(!strcmp(term, "aws4_request"), CL_E_NET_SIGV4_MALFORMED, "Credential terminator");
            CL_ENSURE_D(cl_sigv4_field_ok(a.access_key, strlen(a.access_key), false), CL_E_NET_SIGV4_MALFORMED,
                        "Credential access key characters");
            CL_ENSURE_D(strlen(a.date) == 8 && cl_sigv4_field_ok(a.date, 8, false), CL_E_NET_SIGV4_MALFORMED,
                        "Credential date");
            for (int i = 0; i < 8; i++)
                CL_ENSURE_D(isdigit((unsigned char)a.date[i]), CL_E_NET_SIGV4_MALFORMED, "Credential date digits");
            CL_ENSURE_D(cl_sigv4_field_ok(a.region, strlen(a.region), true), CL_E_NET_SIGV4_MALFORMED,
                        "Credential region characters");
            CL_ENSURE_D(cl_sigv4_field_ok(a.service, strlen(a.service), true), CL_E_NET_SIGV4_MALFORMED,
                        "Credential service characters");
            got_cred = true;
        } else if (kl == 13 && !memcmp(k, "SignedHeaders", 13)) {
            CL_ENSURE_D(!got_sh, CL_E_NET_SIGV4_MALFORMED, "SignedHeaders repeated");
            CL_ENSURE_D(vl > 0 && vl <= CL_SIGV4_MAX_SIGNED_HEADERS, CL_E_NET_SIGV4_MALFORMED,
                        "SignedHeaders length");
            for (size_t i = 0; i < vl; i++) {
                unsigned char ch = (unsigned char)v[i];
                CL_ENSURE_D((ch >= 'a' && ch <= 'z') || isdigit(ch) || ch == '-' || ch == '_' || ch == '.' ||
                                (ch == ';' && i > 0 && i + 1 < vl && v[i - 1] != ';'),
                            CL_E_NET_SIGV4_MALFORMED, "SignedHeaders character at %zu", i);
            }
            memcpy(a.signed_headers, v, vl);
            a.signed_headers[vl] = 0;
            got_sh = true;
        } else if (kl == 9 && !memcmp(k, "Signature", 9)) {
            CL_ENSURE_D(!got_sig, CL_E_NET_SIGV4_MALFORMED, "Signature repeated");
            CL_ENSURE_D(vl == CL_SIGV4_SIG_HEX_LEN, CL_E_NET_SIGV4_MALFORMED, "Signature length %zu", vl);
            for (size_t i = 0; i < vl; i++)
                CL_ENSURE_D(isdigit((unsigned char)v[i]) || (v[i] >= 'a' && v[i] <= 'f'), CL_E_NET_SIGV4_MALFORMED,
                            "Signature is not lower-case hex");
            memcpy(a.signature, v, vl);
            a.signature[vl] = 0;
            got_sig = true;
        } else {
            CL_FAIL(CL_E_NET_SIGV4_MALFORMED, "unknown component");
        }
        if (!cl_cursor_done(&c) && c.p[c.off] == ',')
            c.off++;
    }
    CL_ENSURE_D(got_cred, CL_E_NET_SIGV4_MALFORMED, "Credential missing");
    CL_ENSURE_D(got_sh, CL_E_NET_SIGV4_MALFORMED, "SignedHeaders missing");
    CL_ENSURE_D(got_sig, CL_E_NET_SIGV4_MALFORMED, "Signature missing");
    *out = a;
out:
    return rc;
}

cl_err cl_sigv4_parse_date(const char *s, size_t n, int64_t *out)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s || n != CL_SIGV4_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
        return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "X-Amz-Date format");
    unsigned v[14];
    for (size_t i = 0, j = 0; i < 15; i++) {
        if (i == 8)
            continue;
        if (!isdigit((unsigned char)s[i]))
            return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "X-Amz-Date digit %zu", i);
        v[j++] = (unsigned)(s[i] - '0');
    }
    int64_t y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    unsigned mo = v[4] * 10 + v[5], d = v[6] * 10 + v[7];
    unsigned h = v[8] * 10 + v[9], mi = v[10] * 10 + v[11], se = v[12] * 10 + v[13];
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60 || y < 1970)
        return cl_err_fail(CL_E_NET_SIGV4_MALFORMED, "X-Amz-Date range");
    *out = cl_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    return CL_OK;
}

void cl_sigv4_format_date(int64_t t, char out[CL_SIGV4_DATE_LEN + 1])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, CL_SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

const struct cl_sigv4_header *cl_sigv4_find_header(const struct cl_sigv4_request *r, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++)
        if (cl_sigv4_name_cmp(r->headers[i].name, r->headers[i].name_len, name, nl) == 0)
            return &r->headers[i];
    return NULL;
}

cl_err cl_sigv4_verify(const struct cl_sigv4_request *r, const struct cl_sigv4_authz *a, const char *secret,
                       size_t secret_len, const char *region, const char *service, int64_t now, int64_t skew_s)
{
    cl_err rc = CL_OK;
    struct cl_buf creq, sts;
    char sig[CL_SIGV4_SIG_HEX_LEN + 1];
    char date[CL_SIGV4_DATE_LEN + 1];
    cl_buf_init(&creq, CL_SIGV4_MAX_CREQ, CL_BUF_NONE);
    cl_buf_init(&sts, 4096, CL_BUF_NONE);
    const struct cl_sigv4_header *dh = cl_sigv4_find_header(r, "x-amz-date");
    CL_ENSURE_D(dh, CL_E_NET_SIGV4_MALFORMED, "X-Amz-Date header missing");
    CL_ENSURE_D(dh->value_len == CL_SIGV4_DATE_LEN, CL_E_NET_SIGV4_MALFORMED, "X-Amz-Date format");
    memcpy(date, dh->value, CL_SIGV4_DATE_LEN);
    date[CL_SIGV4_DATE_LEN] = 0;
    int64_t t;
    CL_GUARD(cl_sigv4_parse_date(date, CL_SIGV4_DATE_LEN, &t));
    CL_ENSURE_D(cl_sigv4_in_list(a->signed_headers, "host", 4), CL_E_NET_SIGV4_MALFORMED,
                "SignedHeaders lacks host");
    CL_ENSURE_D(cl_sigv4_in_list(a->signed_headers, "x-amz-date", 10), CL_E_NET_SIGV4_MALFORMED,
                "SignedHeaders lacks x-amz-date");
    CL_ENSURE_D(!memcmp(a->date, date, 8), CL_E_NET_SIGV4_SCOPE, "credential date differs from X-Amz-Date");
    CL_ENSURE_D(!strcmp(a->region, region), CL_E_NET_SIGV4_SCOPE, "credential region");
    CL_ENSURE_D(!strcmp(a->service, service), CL_E_NET_SIGV4_SCOPE, "credential service");
    CL_ENSURE_D(t <= now + skew_s && t >= now - skew_s, CL_E_NET_SIGV4_EXPIRED, "X-Amz-Date is %lld s from now",
                (long long)(t - now));
    const struct cl_sigv4_header *ph = cl_sigv4_find_header(r, "x-amz-content-sha256");
    if (ph) {
        uint8_t hash[CL_SHA256_LEN];
        char hex[2 * CL_SHA256_LEN + 1];
        CL_GUARD(cl_sha256(r->body ? (const void *)r->body : "", r->body_len, hash));
        cl_hex_encode(hash, sizeof(hash), hex);
        CL_ENSURE_D(ph->value_len == 64 && !memcmp(ph->value, hex, 64), CL_E_NET_SIGV4_MISMATCH,
                    "X-Amz-Content-Sha256 differs from the body hash");
    }
    CL_GUARD(cl_sigv4_canonical_request(r, a->signed_headers, &creq, NULL));
    CL_GUARD(cl_sigv4_string_to_sign(date, region, service, creq.data, creq.len, &sts));
    CL_GUARD(cl_sigv4_signature(secret, secret_len, date, region, service, sts.data, sts.len, sig));
    CL_ENSURE_D(cl_ct_equal(sig, a->signature, CL_SIGV4_SIG_HEX_LEN), CL_E_NET_SIGV4_MISMATCH, "signature");
out:
    cl_buf_free(&creq);
    cl_buf_free(&sts);
    return rc;
}
