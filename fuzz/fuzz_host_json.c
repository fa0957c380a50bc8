/* Fuzzes the host's strict JSON reader (credentials file, enclave STATUS_RES)
 * and checks that a decoded string survives re-encoding. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"access_key_id", "secret_access_key", "session_token", "region", NULL};
    struct cl_buf v, enc, back;
    cl_buf_init(&v, 1 << 16, CL_BUF_NONE);
    cl_buf_init(&enc, 1 << 20, CL_BUF_NONE);
    cl_buf_init(&back, 1 << 16, CL_BUF_NONE);
    (void)cl_host_json_check_keys(data, size, keys);
    if (cl_host_json_get_string(data, size, "state", &v) == CL_OK) {
        if (cl_buf_append_str(&enc, "{\"state\":") == CL_OK &&
            cl_host_json_put_string(&enc, (const char *)v.data, v.len) == CL_OK && cl_buf_append_u8(&enc, '}') == CL_OK) {
            if (cl_host_json_get_string(enc.data, enc.len, "state", &back) != CL_OK || back.len != v.len ||
                (v.len && memcmp(back.data, v.data, v.len)))
                abort();
        }
    }
    cl_buf_free(&v);
    cl_buf_free(&enc);
    cl_buf_free(&back);
    return 0;
}
