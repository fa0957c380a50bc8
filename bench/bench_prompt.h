/* The benchmarks' chat prompt: a radiology report's findings, repeated
 * CL_BENCH_PROMPT_REPEAT times (default 1; 9 is about 500 tokens with the
 * generated models' vocabularies), so bench_local and bench_secure send the
 * same text. */
#ifndef CL_BENCH_PROMPT_H
#define CL_BENCH_PROMPT_H
#include <stdio.h>
#include <stdlib.h>

static inline const char *cl_bench_prompt(void)
{
    static char q[16384];
    const char *rep = getenv("CL_BENCH_PROMPT_REPEAT");
    int R = rep ? atoi(rep) : 1;
    size_t o = (size_t)snprintf(q, sizeof(q), "Summarize the radiology report:");
    for (int k = 0; k < (R < 1 ? 1 : R) && o + 80 < sizeof(q); k++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, " Findings: No focal consolidation. Impression: Normal chest.");
    return q;
}
#endif
