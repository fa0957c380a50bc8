/* The boot configuration the host hands the enclave (docs/protocol.md
 * section 4): one definition of its fields and limits, one writer (the host)
 * and one reader (the enclave), tested against each other. The enclave
 * attests everything but the credentials (config_sha256). Holds the
 * operator's key-service credentials: keep it in secure memory and wipe it
 * (cl_bootcfg_wipe). */
#ifndef CLOISTER_BOOTCFG_H
#define CLOISTER_BOOTCFG_H

#include <stdbool.h>
#include <stdint.h>

#include "cloister/buf.h"
#include "cloister/err.h"

#define CL_BOOTCFG_MAX_BYTES (64u << 10)
#define CL_BOOTCFG_MAX_ENDPOINT 256 /* also the attested user_data's cap */
#define CL_BOOTCFG_MAX_REGION 63
#define CL_BOOTCFG_MAX_CA_PEM 32767
#define CL_BOOTCFG_MAX_ACCESS_KEY 128
#define CL_BOOTCFG_MAX_SECRET 256
#define CL_BOOTCFG_MAX_SESSION_TOKEN 4095

/* Limits the host may set; every one is in the attested configuration. */
enum cl_bootcfg_lim {
    CL_BOOTCFG_LIM_NONE = 0,
    CL_BOOTCFG_LIM_MAX_REQUEST_BYTES, /* decapsulated request */
    CL_BOOTCFG_LIM_MAX_TOKENS,        /* per answer */
    CL_BOOTCFG_LIM_MAX_PROMPT_TOKENS,
    CL_BOOTCFG_LIM_MAX_SESSIONS,      /* concurrent exchanges */
    CL_BOOTCFG_LIM_REQUEST_TIMEOUT_MS,
    CL_BOOTCFG_LIM_MAX_IMAGES,        /* images per request (0: none accepted) */
    CL_BOOTCFG_LIM_MAX_IMAGE_BYTES,   /* encoded bytes per image */
    CL_BOOTCFG_LIM_KV_CACHE_BITS,     /* 32: F32 key/value cache, 16: F16 (half the memory per sequence) */
    CL_BOOTCFG_LIM_COUNT
};

struct cl_bootcfg_lim_def {
    const char *name; /* JSON member under "limits" and line in the public text */
    uint64_t min, max, def;
};
/* NULL for NONE/COUNT. */
const struct cl_bootcfg_lim_def *cl_bootcfg_lim(enum cl_bootcfg_lim l);
/* CL_E_PROTO_REQUEST_INVALID naming the limit and its range when v is outside it. */
CL_MUST_CHECK cl_err cl_bootcfg_lim_check(enum cl_bootcfg_lim l, uint64_t v);

struct cl_bootcfg {
    char kms_endpoint[CL_BOOTCFG_MAX_ENDPOINT + 1]; /* http:// or https:// URL */
    char kms_region[CL_BOOTCFG_MAX_REGION + 1];
    char kms_ca_pem[CL_BOOTCFG_MAX_CA_PEM + 1]; /* "" = the system store only */
    char access_key_id[CL_BOOTCFG_MAX_ACCESS_KEY + 1];
    char secret_access_key[CL_BOOTCFG_MAX_SECRET + 1];
    char session_token[CL_BOOTCFG_MAX_SESSION_TOKEN + 1]; /* "" = none */
    uint64_t limits[CL_BOOTCFG_LIM_COUNT];
    bool mmproj; /* a sealed vision projector is streamed on CL_WIRE_PORT_MMPROJ */
};

/* Empty strings, every limit at its default. */
void cl_bootcfg_init(struct cl_bootcfg *c);
/* JSON {"kms": {...}, "limits": {...}[, "mmproj": true]}; refuses a configuration the reader
 * would refuse (so a host never boots an enclave into an error). */
CL_MUST_CHECK cl_err cl_bootcfg_write(const struct cl_bootcfg *c, struct cl_buf *out);
/* Strict: exactly the documented members (no unknown or duplicate keys),
 * strings within their caps and printable, limits within their ranges
 * (absent limits keep their defaults). CL_E_PROTO_REQUEST_INVALID naming the
 * member. out is written only on success. */
CL_MUST_CHECK cl_err cl_bootcfg_parse(const uint8_t *p, size_t n, struct cl_bootcfg *out);
void cl_bootcfg_wipe(struct cl_bootcfg *c);

#endif
