/* Framing between cloister-host and cloister-enclave over vsock (or the
 * simulator's UNIX sockets). Carries only what the host may see: nonces,
 * attestation documents, OHTTP ciphertext, sealed model bytes, status. See
 * docs/protocol.md. */
#ifndef CLOISTER_WIRE_H
#define CLOISTER_WIRE_H

#include <stdint.h>

#include "cloister/buf.h"

/* vsock ports */
#define CL_WIRE_PORT_SERVICE 5000   /* enclave listens: one exchange per connection */
#define CL_WIRE_PORT_MODEL 5001     /* host listens: streams the sealed model to the enclave */
#define CL_WIRE_PORT_KMS_PROXY 8000 /* host listens: byte pipe to the key service */
#define CL_WIRE_PORT_BOOT 5002      /* host listens: boot configuration for the enclave */
#define CL_WIRE_PORT_MMPROJ 5003    /* host listens: streams the sealed vision projector (when configured) */
#define CL_WIRE_CID_PARENT 3        /* the parent instance, as on Nitro */
#define CL_WIRE_CID_ENCLAVE 16      /* default enclave CID */

#define CL_WIRE_HDR_LEN 8
#define CL_WIRE_MAX_FRAME ((uint32_t)34 << 20)

enum cl_wire_type {
    CL_WIRE_NONE = 0,
    CL_WIRE_ATTEST_REQ,  /* host -> enclave: client nonce (0..64 bytes) */
    CL_WIRE_ATTEST_DOC,  /* enclave -> host: attestation document (CBOR) */
    CL_WIRE_OHTTP_REQ,   /* host -> enclave: encapsulated request; flag CHUNKED */
    CL_WIRE_OHTTP_RES,   /* enclave -> host: whole encapsulated response */
    CL_WIRE_OHTTP_CHUNK, /* enclave -> host: next bytes of a chunked encapsulated response */
    CL_WIRE_END,         /* enclave -> host: chunked response complete */
    CL_WIRE_ERROR,       /* either way: u16 HTTP status + u32 cl_err code (no text, no payload) */
    CL_WIRE_STATUS_REQ,  /* host -> enclave */
    CL_WIRE_STATUS_RES,  /* enclave -> host: JSON object of public state */
    CL_WIRE_BOOT_REQ,    /* enclave -> host: ask for boot configuration */
    CL_WIRE_BOOT_CONFIG, /* host -> enclave: JSON boot configuration */
    CL_WIRE_JOB_REQ,     /* host -> enclave: a batch job object (ciphertext, docs/formats/job.md) */
    CL_WIRE_JOB_RES,     /* enclave -> host: result object, receipt, attestation, public meta (cloister/wire_job.h) */
    CL_WIRE_RECEIPT,     /* enclave -> host: after an interactive answer (OHTTP_RES or END): its signed receipt,
                          * the attestation certifying the audit key, public meta (cloister/wire_job.h) */
    CL_WIRE_TYPE_COUNT
};

enum cl_wire_flags {
    CL_WIRE_FLAG_NONE = 0,
    CL_WIRE_FLAG_CHUNKED = 1 << 0,
};

/* Writes one frame: u8 type, u8 flags, u16 zero, u32 length (BE), payload. */
CL_MUST_CHECK cl_err cl_wire_send(int fd, enum cl_wire_type t, unsigned flags, const void *p, size_t n);
/* Reads one frame into payload (replacing its contents); enforces max and
 * the reserved bits. A clean EOF before any byte is CL_E_CORE_EOF. */
CL_MUST_CHECK cl_err cl_wire_recv(int fd, size_t max, enum cl_wire_type *t, unsigned *flags, struct cl_buf *payload);
/* ERROR frames. */
CL_MUST_CHECK cl_err cl_wire_send_error(int fd, unsigned http_status, cl_err code);
CL_MUST_CHECK cl_err cl_wire_parse_error(const struct cl_buf *payload, unsigned *http_status, cl_err *code);
const char *cl_wire_type_name(enum cl_wire_type t);

#endif
