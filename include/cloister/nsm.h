/* The Nitro Secure Module interface, one API over two transports chosen at
 * run time so enclave code is identical on Nitro and under cloister-sim:
 *
 *  - DEVICE: /dev/nsm, one ioctl per request. The message is two iovecs
 *    {request, response}; the ioctl number is _IOWR(0x0A, 0, 32 bytes).
 *    Requests are at most 4 KiB of CBOR, responses at most 12 KiB.
 *  - SIM: the same CBOR messages over a SOCK_SEQPACKET UNIX socket that
 *    cloister-sim passes to the enclave (its number in $CLOISTER_NSM_FD).
 *
 * Messages follow the NSM API's externally tagged encoding: a unit request
 * is a text string ("DescribeNSM", "GetRandom"), any other is a one-entry
 * map {"Name": {field: value, ...}}; errors come back as {"Error": "Code"}. */
#ifndef CLOISTER_NSM_H
#define CLOISTER_NSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cloister/attest.h"
#include "cloister/buf.h"

#define CL_NSM_REQUEST_MAX 0x1000
#define CL_NSM_RESPONSE_MAX 0x3000
#define CL_NSM_DEVICE_PATH "/dev/nsm"
#define CL_NSM_FD_ENV "CLOISTER_NSM_FD"
#define CL_NSM_MAX_PCRS 32
#define CL_NSM_PCR_LEN 48

enum cl_nsm_kind { CL_NSM_KIND_NONE = 0, CL_NSM_KIND_DEVICE, CL_NSM_KIND_SIM, CL_NSM_KIND_COUNT };

typedef struct cl_nsm cl_nsm;

/* $CLOISTER_NSM_FD set: the simulated NSM on that socket; otherwise /dev/nsm. */
CL_MUST_CHECK cl_err cl_nsm_open(cl_nsm **out);
CL_MUST_CHECK cl_err cl_nsm_open_device(const char *path, cl_nsm **out);
/* Takes ownership of fd (a SOCK_SEQPACKET socket to a simulated NSM). */
CL_MUST_CHECK cl_err cl_nsm_open_fd(int fd, cl_nsm **out);
void cl_nsm_close(cl_nsm *n);
enum cl_nsm_kind cl_nsm_kind(const cl_nsm *n);

/* Raw exchange of one CBOR request for one CBOR response. */
CL_MUST_CHECK cl_err cl_nsm_transact(cl_nsm *n, const uint8_t *req, size_t len, struct cl_buf *resp);

/* A signed attestation document over the optional fields (NULL/0 = absent). */
CL_MUST_CHECK cl_err cl_nsm_attestation(cl_nsm *n, const uint8_t *user_data, size_t udlen, const uint8_t *nonce,
                                        size_t noncelen, const uint8_t *public_key, size_t pklen, struct cl_buf *doc);
CL_MUST_CHECK cl_err cl_nsm_describe_pcr(cl_nsm *n, uint16_t index, bool *locked, uint8_t value[CL_NSM_PCR_LEN]);
/* PCR[index] = SHA-384(PCR[index] || data); returns the new value. */
CL_MUST_CHECK cl_err cl_nsm_extend_pcr(cl_nsm *n, uint16_t index, const void *data, size_t len,
                                       uint8_t value[CL_NSM_PCR_LEN]);
CL_MUST_CHECK cl_err cl_nsm_lock_pcr(cl_nsm *n, uint16_t index);
CL_MUST_CHECK cl_err cl_nsm_lock_pcrs(cl_nsm *n, uint16_t range);
/* Fills out with NSM entropy (several requests when needed). */
CL_MUST_CHECK cl_err cl_nsm_get_random(cl_nsm *n, uint8_t *out, size_t len);

struct cl_nsm_info {
    uint16_t version_major, version_minor, version_patch;
    char module_id[128];
    uint16_t max_pcrs;
    uint32_t locked_pcrs; /* bit i: PCR i is locked (indexes >= 32 are not reported) */
    char digest[16];
};
CL_MUST_CHECK cl_err cl_nsm_describe(cl_nsm *n, struct cl_nsm_info *info);

/* ---- the simulated NSM (server side, used by cloister-sim and tests) ---- */

typedef struct cl_nsm_sim cl_nsm_sim;

/* PCR0-2 take the image measurements (zeros when debug), PCR3-15 start at
 * zero (pcr012: 3 x 48 bytes); PCR0-15 are locked at boot like Nitro's, 16-31 are extendable.
 * The signer is borrowed and must outlive the sim. */
CL_MUST_CHECK cl_err cl_nsm_sim_new(cl_attest_signer *signer, const uint8_t *pcr012, bool debug,
                                    cl_nsm_sim **out);
void cl_nsm_sim_free(cl_nsm_sim *s);
/* Answers one request; protocol errors become {"Error": ...} responses. */
CL_MUST_CHECK cl_err cl_nsm_sim_handle(cl_nsm_sim *s, const uint8_t *req, size_t len, struct cl_buf *resp);
/* Serves requests on fd until the peer closes it. */
CL_MUST_CHECK cl_err cl_nsm_sim_serve(cl_nsm_sim *s, int fd);

#endif
