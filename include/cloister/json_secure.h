/* jansson holds prompts and answers in its own heap blocks. After
 * cl_json_secure() every block jansson frees is wiped first. Blocks stay
 * plain malloc blocks (their size comes from malloc_usable_size), so code
 * that frees a jansson string with free() remains correct: the allocator is
 * process-wide. Call before the program holds any jansson object. */
#ifndef CLOISTER_JSON_SECURE_H
#define CLOISTER_JSON_SECURE_H

void cl_json_secure(void);
/* Wipes and frees a string from json_dumps. */
void cl_json_free_str(char *s);

#endif
