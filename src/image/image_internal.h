/* Shared by the decoders of src/image; not a public API. */
#ifndef CL_IMAGE_INTERNAL_H
#define CL_IMAGE_INTERNAL_H

#include <stdbool.h>

#include "cloister/image.h"

/* Checks w and h against the limits (non-zero, width, height, pixel count) and returns w*h*3. */
CL_MUST_CHECK cl_err cl_image_check_dims(uint64_t w, uint64_t h, const struct cl_image_limits *lim,
                                         const char *fmt, size_t *rgb_bytes);
/* Allocates the zeroed RGB buffer of an image whose dimensions passed cl_image_check_dims. */
CL_MUST_CHECK cl_err cl_image_alloc(uint32_t w, uint32_t h, struct cl_image *img);

CL_MUST_CHECK cl_err cl_image_png_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                         struct cl_image *out);
CL_MUST_CHECK cl_err cl_image_jpeg_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                          struct cl_image *out);
/* For DICOM's encapsulated JPEG: a grayscale file stays one channel (*ncomp 1), colour becomes RGB (3);
 * *samples is w*h*ncomp bytes, malloc'd, for the caller to wipe and free. */
CL_MUST_CHECK cl_err cl_image_jpeg_decode_gray(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                               uint32_t *w, uint32_t *h, int *ncomp, uint8_t **samples);
CL_MUST_CHECK cl_err cl_image_dicom_decode(const uint8_t *data, size_t len, const struct cl_image_limits *lim,
                                           struct cl_image *out);

#endif
