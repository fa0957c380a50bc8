/* Token pieces may split a UTF-8 character (byte-fallback tokens), and a
 * random model may emit invalid bytes. Answers are JSON, which must be valid
 * UTF-8: emit only whole characters, replacing invalid bytes with U+FFFD. */
#include "enclave_internal.h"

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
