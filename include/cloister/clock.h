/* Calendar arithmetic without the C library's time zones. */
#ifndef CLOISTER_CLOCK_H
#define CLOISTER_CLOCK_H

#include <stdint.h>

/* Days from 1970-01-01 to the given proleptic Gregorian date (m 1..12, d 1..31). */
int64_t cl_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
