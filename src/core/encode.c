#include "cloister/encode.h"

#include <string.h>

static const char cl_hexdig[] = "0123456789abcdef";

void cl_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = cl_hexdig[in[i] >> 4];
        out[2 * i + 1] = cl_hexdig[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int cl_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static cl_err cl_hex_decode_into(const char *in, size_t inlen, uint8_t *out)
{
    for (size_t i = 0; i < inlen / 2; i++) {
        int hi = cl_hex_digit(in[2 * i]), lo = cl_hex_digit(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cl_err_fail(CL_E_CORE_BAD_HEX, "non-hex character at offset %zu", 2 * i + (hi < 0 ? 0 : 1));
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return CL_OK;
}

cl_err cl_hex_decode(const char *in, size_t inlen, struct cl_buf *out)
{
    uint8_t *dst;
    if (inlen % 2)
        return cl_err_fail(CL_E_CORE_BAD_HEX, "odd number of hex digits (%zu)", inlen);
    size_t start = out->len;
    cl_err rc = cl_buf_extend(out, inlen / 2, &dst);
    if (rc != CL_OK)
        return rc;
    rc = cl_hex_decode_into(in, inlen, dst);
    if (rc != CL_OK)
        out->len = start;
    return rc;
}

cl_err cl_hex_decode_fixed(const char *in, size_t inlen, uint8_t *out, size_t n)
{
    if (inlen != 2 * n)
        return cl_err_fail(CL_E_CORE_BAD_HEX, "expected %zu hex digits, got %zu", 2 * n, inlen);
    return cl_hex_decode_into(in, inlen, out);
}

static const char cl_b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char cl_b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t cl_b64_encoded_len(size_t n, enum cl_b64_alphabet a)
{
    if (a == CL_B64_URL) /* unpadded, as JOSE and OHTTP configs use it */
        return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
    return (n + 2) / 3 * 4;
}

cl_err cl_b64_encode(const uint8_t *in, size_t n, enum cl_b64_alphabet a, struct cl_buf *out)
{
    const char *t = a == CL_B64_URL ? cl_b64_url : cl_b64_std;
    uint8_t *d;
    if (n > SIZE_MAX / 2)
        return CL_E_CORE_OVERFLOW;
    size_t olen = cl_b64_encoded_len(n, a);
    cl_err rc = cl_buf_extend(out, olen, &d);
    if (rc != CL_OK)
        return rc;
    size_t i = 0, j = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        d[j++] = (uint8_t)t[v >> 18];
        d[j++] = (uint8_t)t[(v >> 12) & 63];
        d[j++] = (uint8_t)t[(v >> 6) & 63];
        d[j++] = (uint8_t)t[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        d[j++] = (uint8_t)t[v >> 18];
        d[j++] = (uint8_t)t[(v >> 12) & 63];
        if (n - i == 2)
            d[j++] = (uint8_t)t[(v >> 6) & 63];
        else if (a != CL_B64_URL)
            d[j++] = '=';
        if (a != CL_B64_URL)
            d[j++] = '=';
    }
    return CL_OK;
}

static int cl_b64val(char c, enum cl_b64_alphabet a)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (a == CL_B64_URL ? '-' : '+'))
        return 62;
    if (c == (a == CL_B64_URL ? '_' : '/'))
        return 63;
    return -1;
}

/* Standard alphabet requires padding; URL alphabet accepts it absent or present. */
cl_err cl_b64_decode(const char *in, size_t inlen, enum cl_b64_alphabet a, struct cl_buf *out)
{
    size_t pad = 0;
    while (pad < 2 && inlen > pad && in[inlen - 1 - pad] == '=')
        pad++;
    size_t body = inlen - pad;
    if (a != CL_B64_URL && inlen % 4)
        return cl_err_fail(CL_E_CORE_BAD_BASE64, "length %zu is not a multiple of 4", inlen);
    if (a == CL_B64_URL && pad && inlen % 4)
        return cl_err_fail(CL_E_CORE_BAD_BASE64, "bad padding");
    if (body % 4 == 1)
        return cl_err_fail(CL_E_CORE_BAD_BASE64, "impossible length %zu", inlen);
    size_t start = out->len;
    uint8_t *d;
    cl_err rc = cl_buf_extend(out, body / 4 * 3 + (body % 4 ? body % 4 - 1 : 0), &d);
    if (rc != CL_OK)
        return rc;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t j = 0;
    for (size_t i = 0; i < body; i++) {
        int v = cl_b64val(in[i], a);
        if (v < 0) {
            out->len = start;
            return cl_err_fail(CL_E_CORE_BAD_BASE64, "invalid character at offset %zu", i);
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[j++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* leftover bits must be zero: one encoding per byte string */
        out->len = start;
        return cl_err_fail(CL_E_CORE_BAD_BASE64, "non-canonical trailing bits");
    }
    return CL_OK;
}

/* Length of the UTF-8 sequence starting with b, or 0 if b cannot start one. */
static size_t cl_utf8_seq_len(uint8_t b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

static bool cl_utf8_valid_seq(const uint8_t *p, size_t len)
{
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return false;
    if (len == 3 && ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0)))
        return false; /* overlong or surrogate */
    if (len == 4 && ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90)))
        return false; /* overlong or above U+10FFFF */
    return true;
}

cl_err cl_utf8_take(const uint8_t *p, size_t n, bool final, struct cl_buf *out, size_t *used)
{
    static const uint8_t repl[3] = {0xEF, 0xBF, 0xBD};
    size_t i = 0;
    cl_err rc = CL_OK;
    while (i < n && rc == CL_OK) {
        size_t len = cl_utf8_seq_len(p[i]);
        if (len == 0) {
            rc = cl_buf_append(out, repl, 3);
            i++;
            continue;
        }
        if (i + len > n) {
            /* incomplete at the end: wait for more, unless nothing more comes */
            bool prefix_ok = true;
            for (size_t k = i + 1; k < n; k++)
                prefix_ok &= (p[k] & 0xC0) == 0x80;
            if (!final && prefix_ok)
                break;
            rc = cl_buf_append(out, repl, 3);
            i++;
            continue;
        }
        if (!cl_utf8_valid_seq(p + i, len)) {
            rc = cl_buf_append(out, repl, 3);
            i++;
            continue;
        }
        rc = cl_buf_append(out, p + i, len);
        i += len;
    }
    *used = i;
    return rc;
}

cl_err cl_json_escape(const uint8_t *p, size_t n, struct cl_buf *out)
{
    static const char hexd[] = "0123456789abcdef";
    cl_err rc = CL_OK;
    for (size_t i = 0; i < n && rc == CL_OK; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = cl_buf_append(out, e, 2);
        } else if (c == '\n') {
            rc = cl_buf_append(out, "\\n", 2);
        } else if (c == '\t') {
            rc = cl_buf_append(out, "\\t", 2);
        } else if (c == '\r') {
            rc = cl_buf_append(out, "\\r", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
            rc = cl_buf_append(out, e, 6);
        } else {
            rc = cl_buf_append_u8(out, c);
        }
    }
    return rc;
}
