#include "cloister/json_secure.h"

#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>

#include "cloister/secmem.h"

static void cl_json_wipe_free(void *p)
{
    if (!p)
        return;
    cl_wipe(p, malloc_usable_size(p));
    free(p);
}

static pthread_once_t cl_json_once = PTHREAD_ONCE_INIT;

static void cl_json_install(void) { json_set_alloc_funcs(malloc, cl_json_wipe_free); }

void cl_json_secure(void) { pthread_once(&cl_json_once, cl_json_install); }

void cl_json_free_str(char *s) { cl_json_wipe_free(s); }
