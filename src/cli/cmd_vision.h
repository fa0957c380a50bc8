/* Images for the inference commands (run, bench, mkmodel --mmproj): the
 * projector, the image files and their encoded embeddings. */
#ifndef CLOISTER_CLI_CMD_VISION_H
#define CLOISTER_CLI_CMD_VISION_H

#include <stdbool.h>
#include <stddef.h>

#include "cloister/gguf.h"
#include "cloister/infer/answer.h"
#include "cloister/infer/model.h"
#include "cloister/infer/vision.h"

#define CL_CLI_MAX_IMAGES 16u

struct cl_cli_images {
    const char *mmproj;
    const char *files[CL_CLI_MAX_IMAGES];
    bool raw[CL_CLI_MAX_IMAGES]; /* a preprocessed planar float32 tensor, not an encoded image */
    size_t n;
    cl_gguf *g;
    struct cl_vision *v;
    float *embd[CL_CLI_MAX_IMAGES]; /* secure memory */
    struct cl_model_media media[CL_CLI_MAX_IMAGES];
    size_t n_media;                 /* encoded: n, or 1 for the generated pattern */
    double encode_ms;               /* all images, wall clock */
};

/* Records one --image / --image-f32 option; prints a usage error and returns false past the cap. */
bool cl_cli_images_add(const char *cmd, struct cl_cli_images *im, const char *path, bool raw);
/* Loads the projector (checked against m), reads, preprocesses and encodes
 * every image. Returns CL_EXIT_OK or prints the failure. With synthetic set
 * and no files, encodes one generated test pattern (for bench). */
int cl_cli_images_encode(const char *cmd, struct cl_cli_images *im, const struct cl_model *m, struct cl_pool *pool,
                         bool synthetic);
void cl_cli_images_free(struct cl_cli_images *im);

/* `cloister mkmodel --mmproj ...` */
int cl_cmd_mkmodel_mmproj(int argc, char **argv);
void cl_cmd_mkmodel_mmproj_help(FILE *f);

#endif
