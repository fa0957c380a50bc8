/* Fuzzes the SigV4 Authorization header parser and the date parser. */
#include <stddef.h>
#include <stdint.h>

#include "cloister/sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_sigv4_authz a;
    int64_t t;
    (void)cl_sigv4_parse_authz((const char *)data, size, &a);
    (void)cl_sigv4_parse_date((const char *)data, size, &t);
    return 0;
}
