/* jansson keeps prompts and answers in its own heap blocks; route their
 * release through a wipe. Blocks stay plain malloc blocks (the size comes
 * from malloc_usable_size), so code that frees jansson strings with free()
 * remains correct — it only skips the wipe. */
#include <jansson.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/secmem.h"
#include "enclave_internal.h"

static void cl_json_free(void *p)
{
    if (!p)
        return;
    cl_wipe(p, malloc_usable_size(p));
    free(p);
}

void cl_enclave_json_secure(void) { json_set_alloc_funcs(malloc, cl_json_free); }

void cl_enclave_json_free_str(char *s) { cl_json_free(s); }
