/* `cloister image`: decode an image (PNG, JPEG, DICOM) and preprocess it as the vision encoder will, printing
 * only its shape and the tensor's checksums -- never pixel values or header text (DICOM files carry patient
 * identifiers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/file.h"
#include "cloister/image.h"
#include "cloister/secmem.h"

#define CL_IMAGE_CLI_MAX_SIZE 4096

static void cl_image_cli_help(FILE *f)
{
    fprintf(f,
            "usage: cloister image FILE [--size N] [--json]\n\n"
            "Decodes FILE (PNG, JPEG, or DICOM: implicit/explicit VR little endian or JPEG Baseline) to RGB and\n"
            "preprocesses it as llama.cpp does for Gemma 3: bilinear resize to N x N (a non-square image is fitted\n"
            "and centred on black), then (v/255 - 0.5) / 0.5 per channel. Prints the format, the decoded width and\n"
            "height, and the sum and sum of squares of the N x N x 3 tensor (no pixel values, no DICOM header text).\n"
            "Limits: 32 MiB encoded, 8192 x 8192, 40 Mpixel (see docs/images.md).\n\n"
            "  --size N    the square input size (1..%d, default 896, MedGemma's; the tiny test projector uses 224)\n"
            "  --json      print {\"format\":...,\"width\":...,\"height\":...,\"size\":...,\"sum\":...,\"sumsq\":...}\n"
            "\nexit status: 0 success, 1 failure, 2 usage error.\n",
            CL_IMAGE_CLI_MAX_SIZE);
}

int cl_cmd_image(int argc, char **argv)
{
    bool json = false;
    uint64_t size = 896;
    int rc = CL_EXIT_FAIL;
    cl_err e;
    struct cl_image img = {0};
    struct cl_image_limits lim;
    float *t = NULL;
    size_t t_bytes = 0;
    struct cl_buf in;
    cl_image_limits_default(&lim);
    cl_buf_init(&in, lim.max_bytes + 1, CL_BUF_NONE);

    enum { O_SIZE = 256 };
    static const struct option opts[] = {
        CL_CLI_OPT_HELP,
        CL_CLI_OPT_JSON,
        {"size", required_argument, NULL, O_SIZE},
        CL_CLI_OPT_END,
    };
    struct cl_cli_args args = {.cmd = "image", .help = cl_image_cli_help, .shortopts = "", .longopts = opts,
                               .json = &json};
    for (int o; (o = cl_cli_next(&args, argc, argv)) != -1;) {
        switch (o) {
        case O_SIZE:
            if (!cl_cli_u64_opt("image", optarg, 1, CL_IMAGE_CLI_MAX_SIZE, &size, "--size needs 1..%d",
                                CL_IMAGE_CLI_MAX_SIZE)) {
                rc = CL_EXIT_USAGE;
                goto out;
            }
            break;
        default: rc = args.exit; goto out;
        }
    }
    if (optind >= argc) {
        rc = cl_cli_usage_error("image", "no FILE given");
        goto out;
    }
    if (optind + 1 < argc) {
        rc = cl_cli_usage_error("image", "more than one FILE given");
        goto out;
    }
    /* one byte over the limit is read so that an oversized file gets the image limit's error */
    if ((e = cl_file_read(argv[optind], lim.max_bytes + 1, &in)) != CL_OK) {
        if (e == CL_E_CORE_LIMIT)
            e = cl_err_fail(CL_E_IMAGE_TOO_LARGE, "more than %zu bytes", lim.max_bytes);
        rc = cl_cli_fail("image", "read", e);
        goto out;
    }
    enum cl_image_format fmt = cl_image_sniff(in.data, in.len);
    if ((e = cl_image_decode(in.data, in.len, &lim, &img)) != CL_OK) {
        rc = cl_cli_fail("image", "decode", e);
        goto out;
    }
    t_bytes = (size_t)size * size * 3 * sizeof(float);
    t = malloc(t_bytes);
    if (!t) {
        rc = cl_cli_fail("image", "allocate", CL_E_CORE_NOMEM);
        goto out;
    }
    static const float half[3] = {0.5f, 0.5f, 0.5f};
    if ((e = cl_image_preprocess(&img, (uint32_t)size, half, half, t)) != CL_OK) {
        rc = cl_cli_fail("image", "preprocess", e);
        goto out;
    }
    double sum = 0, sumsq = 0;
    for (size_t i = 0; i < (size_t)size * size * 3; i++) {
        sum += t[i];
        sumsq += (double)t[i] * t[i];
    }
    if (json)
        printf("{\"format\":\"%s\",\"width\":%u,\"height\":%u,\"size\":%u,\"sum\":%.6f,\"sumsq\":%.6f}\n",
               cl_image_format_name(fmt), (unsigned)img.w, (unsigned)img.h, (unsigned)size, sum, sumsq);
    else
        printf("format  %s\nwidth   %u\nheight  %u\nsize    %u x %u x 3\nsum     %.6f\nsumsq   %.6f\n",
               cl_image_format_name(fmt), (unsigned)img.w, (unsigned)img.h, (unsigned)size, (unsigned)size, sum,
               sumsq);
    rc = fflush(stdout) == 0 ? CL_EXIT_OK : CL_EXIT_FAIL;
out:
    if (t) {
        cl_wipe(t, t_bytes);
        free(t);
    }
    cl_image_free(&img);
    cl_buf_free(&in);
    return rc;
}
