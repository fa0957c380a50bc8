/* Fuzzes the enclave's OpenAI chat-completions request parser (what a
 * client's decrypted request body reaches first). */
#include <stdint.h>
#include <stdlib.h>

#include "cloister/enclave_runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_enclave_limits l;
    struct cl_chat_params p;
    static struct cl_chat_msg msgs[257];
    json_t *root = NULL;
    const char *why = NULL;
    cl_enclave_limits_default(&l);
    if (cl_chat_request_parse(data, size, &l, &root, msgs, &p, &why) == CL_OK)
        json_decref(root);
    return 0;
}
