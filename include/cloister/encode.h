/* Hex and base64 (RFC 4648, standard and URL alphabets). Decoders are strict:
 * no whitespace, correct padding, canonical trailing bits. */
#ifndef CLOISTER_ENCODE_H
#define CLOISTER_ENCODE_H

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

#endif
