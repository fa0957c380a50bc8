/* jansson keeps prompts and answers in its own heap blocks; route them
 * through an allocator that records the size and wipes on free. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "enclave_internal.h"
#include "cloister/secmem.h"

#define CL_JSON_HDR 16 /* keeps the user pointer 16-byte aligned */

static void *cl_json_malloc(size_t n)
{
    if (n > SIZE_MAX - CL_JSON_HDR)
        return NULL;
    uint8_t *p = malloc(n + CL_JSON_HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof(n));
    return p + CL_JSON_HDR;
}

static void cl_json_free(void *q)
{
    if (!q)
        return;
    uint8_t *p = (uint8_t *)q - CL_JSON_HDR;
    size_t n;
    memcpy(&n, p, sizeof(n));
    cl_wipe(p, n + CL_JSON_HDR);
    free(p);
}

void cl_enclave_json_secure(void) { json_set_alloc_funcs(cl_json_malloc, cl_json_free); }

void cl_enclave_json_free_str(char *s)
{
    json_malloc_t m;
    json_free_t f;
    if (!s)
        return;
    cl_wipe(s, strlen(s));
    json_get_alloc_funcs(&m, &f);
    f(s);
}
