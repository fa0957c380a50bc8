/* Fuzzes the DICOM reader alone: the input is what follows the 128-byte preamble and "DICM" (the file meta group
 * and the dataset), so no mutation is wasted on the signature. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cl_image_limits lim = {.max_bytes = 1 << 20, .max_width = 1024, .max_height = 1024, .max_pixels = 1 << 18};
    struct cl_image img = {0};
    if (size > lim.max_bytes - 132)
        return 0;
    uint8_t *file = calloc(1, size + 132);
    if (!file)
        return 0;
    memcpy(file + 128, "DICM", 4);
    if (size)
        memcpy(file + 132, data, size);
    if (cl_image_decode(file, size + 132, &lim, &img) == CL_OK) {
        if (!img.rgb || (uint64_t)img.w * img.h > lim.max_pixels)
            abort();
        volatile unsigned acc = 0;
        for (size_t i = 0; i < (size_t)img.w * img.h * 3; i++)
            acc = acc + img.rgb[i];
        if (acc == 0xffffffffu)
            abort();
        cl_image_free(&img);
    }
    free(file);
    return 0;
}
