/* libFuzzer: attestation document parse + verify. To reach the chain and
 * signature code the pinned root is the document's own cabundle[0] and the
 * time is its timestamp; no document may verify against an unrelated root. */
#include <stdint.h>
#include <stdlib.h>

#include "cloister/attest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_attest_doc d;
    if (cl_attest_parse(data, size, &d) != CL_OK)
        return 0;
    struct cl_attest_pcr_expect want = {.index = 0};
    struct cl_attest_policy p = {.root_der = d.cabundle[0].p, .root_len = d.cabundle[0].len,
                                 .at_ms = d.timestamp_ms > INT64_MAX ? 1 : (int64_t)d.timestamp_ms,
                                 .allow_any_pcr = true, .allow_debug = true, .max_age_ms = 1000};
    (void)cl_attest_verify(&d, &p);
    p.pcrs = &want;
    p.npcrs = 1;
    p.allow_any_pcr = false;
    p.allow_debug = false;
    p.check_nonce = true;
    p.nonce = (struct cl_attest_span){(const uint8_t *)"nonce", 5};
    (void)cl_attest_verify(&d, &p);
    static const uint8_t other_root[] = {0x30, 0x00};
    p.root_der = other_root;
    p.root_len = sizeof(other_root);
    if (cl_attest_verify(&d, &p) == CL_OK)
        abort();
    cl_attest_doc_free(&d);
    return 0;
}
