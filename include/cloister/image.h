/* Image decoding (PNG, JPEG, DICOM) and llama.cpp's vision preprocessing.
 *
 * Images come from consumers and may be patient data: decoders never log pixels or header text, errors name
 * only the format, field and limit, and cl_image_free wipes the pixels. Every size is checked against the
 * limits from the file's header before any pixel memory is allocated. See docs/images.md. */
#ifndef CLOISTER_IMAGE_H
#define CLOISTER_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "cloister/err.h"

struct cl_image_limits {
    size_t max_bytes;      /* encoded size */
    uint32_t max_width, max_height;
    uint64_t max_pixels;   /* width*height, checked from the header BEFORE any pixel allocation */
};
/* 32 MiB, 8192 x 8192, 40 Mpixel. */
void cl_image_limits_default(struct cl_image_limits *l);

struct cl_image {
    uint32_t w, h;
    uint8_t *rgb; /* w*h*3 interleaved RGB8, owned */
};

enum cl_image_format { CL_IMAGE_FMT_NONE = 0, CL_IMAGE_FMT_PNG, CL_IMAGE_FMT_JPEG, CL_IMAGE_FMT_DICOM, CL_IMAGE_FMT_COUNT };

/* From the leading bytes only; CL_IMAGE_FMT_NONE when none matches. */
enum cl_image_format cl_image_sniff(const uint8_t *data, size_t len);
/* "png", "jpeg", "dicom" or "none". */
const char *cl_image_format_name(enum cl_image_format f);

/* Decodes PNG, JPEG or DICOM (sniffed) into RGB8. Errors name what is wrong (format, limit, truncation).
 * lim may be NULL for the defaults. */
CL_MUST_CHECK cl_err cl_image_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                     struct cl_image *out);
/* Wipes the pixels (patient data), frees them and zeroes *img; NULL and zeroed images are fine. */
void cl_image_free(struct cl_image *img);

/* llama.cpp's preprocessing for a square vision input (Gemma 3's fixed-size path): bilinear resize ("align
 * corners", float lerps, result truncated to uint8) to size x size -- a non-square image is first scaled to fit
 * (aspect kept, dimensions rounded up) and centred on black padding, as llama.cpp's PAD_CEIL -- then
 * (v/255 - mean[c]) / std[c]; out is planar float, index c*size*size+y*size+x. */
CL_MUST_CHECK cl_err cl_image_preprocess(const struct cl_image *img, uint32_t size, const float mean[3],
                                         const float std[3], float *out);

#endif
