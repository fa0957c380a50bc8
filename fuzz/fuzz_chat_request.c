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
    l.max_images = 4; /* image parts decoded too */
    l.max_image_bytes = 1 << 16;
    if (cl_chat_request_parse(data, size, &l, &root, msgs, &p, &why) == CL_OK) {
        for (size_t i = 0; i < p.n_msgs; i++) /* every content readable */
            if (msgs[i].content_len && msgs[i].content[msgs[i].content_len - 1] == 1)
                why = "x";
        cl_chat_params_release(&p);
        json_decref(root);
    }
    return 0;
}
