/* libFuzzer: what the enclave and the consumer read from hostile storage —
 * a job object's header (the enclave, before any key release), a receipt
 * (the auditor) and a JOB_RES payload (the worker, from a hostile enclave
 * peer or host). The first byte picks the reader. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/batch.h"
#include "cloister/wire_job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cl_batch_job_header h;
    struct cl_batch_receipt r;
    struct cl_wire_job_res w;
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        if (cl_batch_job_header_parse(data + 1, size - 1, &h) == CL_OK &&
            (!cl_batch_id_valid(h.job_id) || h.wrapped_len < 1 || h.wrapped_len > CL_BATCH_WRAPPED_MAX))
            abort();
        break;
    case 1:
        if (cl_batch_receipt_parse(data + 1, size - 1, &r) == CL_OK && !cl_batch_id_valid(r.kind))
            abort();
        break;
    default:
        if (cl_wire_job_res_parse(data + 1, size - 1, &w) == CL_OK &&
            (w.result + w.result_len > data + size || strlen(w.chain) != 64))
            abort();
    }
    return 0;
}
