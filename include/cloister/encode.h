/* Hex and base64 (RFC 4648, standard and URL alphabets). Decoders are strict:
 * no whitespace, correct padding, canonical trailing bits. */
#ifndef CLOISTER_ENCODE_H
#define CLOISTER_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/buf.h"

/* Value of a hex digit (either case), or -1. */
int cl_hex_digit(char c);
/* Writes 2n chars + NUL into out (size >= 2n+1). */
void cl_hex_encode(const uint8_t *in, size_t n, char *out);
CL_MUST_CHECK cl_err cl_hex_decode(const char *in, size_t inlen, struct cl_buf *out);
/* Decodes exactly n bytes into a fixed array. */
CL_MUST_CHECK cl_err cl_hex_decode_fixed(const char *in, size_t inlen, uint8_t *out, size_t n);

enum cl_b64_alphabet { CL_B64_NONE = 0, CL_B64_STD, CL_B64_URL, CL_B64_COUNT };
size_t cl_b64_encoded_len(size_t n, enum cl_b64_alphabet a);
CL_MUST_CHECK cl_err cl_b64_encode(const uint8_t *in, size_t n, enum cl_b64_alphabet a, struct cl_buf *out);
CL_MUST_CHECK cl_err cl_b64_decode(const char *in, size_t inlen, enum cl_b64_alphabet a, struct cl_buf *out);

/* Appends the longest whole-character prefix of UTF-8 text p (all of it when
 * final), invalid bytes replaced by U+FFFD; *used says how much of p was
 * consumed (the rest is a character split across pieces). */
CL_MUST_CHECK cl_err cl_utf8_take(const uint8_t *p, size_t n, bool final, struct cl_buf *out, size_t *used);
/* Appends p (valid UTF-8, e.g. from cl_utf8_take) as the body of a JSON string. */
CL_MUST_CHECK cl_err cl_json_escape(const uint8_t *p, size_t n, struct cl_buf *out);

#endif
