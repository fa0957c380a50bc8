/* Fuzzes the image decoders as the enclave uses them: sniff, decode (PNG, JPEG or DICOM) under small limits so
 * bombs are cheap, then the preprocessing of whatever decoded. Every decoded image must have the promised shape. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cloister/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float out[3 * 16 * 16];
    static const float half[3] = {0.5f, 0.5f, 0.5f};
    struct cl_image_limits lim = {.max_bytes = 1 << 20, .max_width = 1024, .max_height = 1024, .max_pixels = 1 << 18};
    struct cl_image img = {0};
    (void)cl_image_sniff(data, size);
    if (cl_image_decode(data, size, &lim, &img) == CL_OK) {
        if (!img.rgb || img.w == 0 || img.h == 0 || img.w > lim.max_width || img.h > lim.max_height ||
            (uint64_t)img.w * img.h > lim.max_pixels)
            abort();
        /* touch every pixel, so a short allocation shows under ASan */
        volatile unsigned acc = 0;
        for (size_t i = 0; i < (size_t)img.w * img.h * 3; i++)
            acc = acc + img.rgb[i];
        if (acc == 0xffffffffu)
            abort();
        if (cl_image_preprocess(&img, 16, half, half, out) != CL_OK)
            abort();
        cl_image_free(&img);
    } else if (img.rgb) {
        abort(); /* outputs only on success */
    }
    return 0;
}
