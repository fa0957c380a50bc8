/* Fuzzes what the client parses from others: TRUST.json, the attestation's
 * user_data, chat.completion bodies (200 and error) and the server-sent
 * event stream (fed in two pieces). The first byte picks the parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cl_err cl_fuzz_token(void *arg, const char *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return CL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    uint8_t sel = data[0];
    data++;
    size--;
    switch (sel % 4) {
    case 0: {
        struct cl_trust t;
        if (cl_trust_parse(data, size, &t) == CL_OK)
            cl_trust_free(&t);
        break;
    }
    case 1: {
        /* Accepted user_data re-encodes to exactly the same bytes. */
        struct cl_attest_user_data u;
        if (cl_attest_user_data_parse(data, size, &u) == CL_OK) {
            struct cl_buf b;
            cl_buf_init(&b, 2048, CL_BUF_NONE);
            if (cl_attest_user_data_encode(&u, &b) != CL_OK || b.len != size || memcmp(b.data, data, size) != 0)
                abort();
            cl_buf_free(&b);
        }
        break;
    }
    case 2: {
        struct cl_client_result r;
        cl_client_result_init(&r);
        (void)cl_client_parse_completion(data, size, sel & 0x80 ? 400 : 200, &r);
        cl_client_result_free(&r);
        break;
    }
    default: {
        struct cl_client_result r;
        struct cl_client_sse s;
        cl_client_result_init(&r);
        cl_client_sse_init(&s, cl_fuzz_token, NULL, &r);
        if (cl_client_sse_feed(&s, data, size / 2) == CL_OK &&
            cl_client_sse_feed(&s, data + size / 2, size - size / 2) == CL_OK)
            (void)cl_client_sse_finish(&s);
        cl_client_sse_free(&s);
        cl_client_result_free(&r);
        break;
    }
    }
    return 0;
}
