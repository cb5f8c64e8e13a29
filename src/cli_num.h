/* cli_num.h — the number arguments of the CLI (src/main.c, src/cli_tune.c):
 * one parser each for integers and reals, so that every option refuses the
 * same things (empty text, trailing text, out of range). */
#ifndef SALE_CLI_NUM_H
#define SALE_CLI_NUM_H

#include <errno.h>
#include <stdlib.h>

/* 1 if t is a decimal integer in [lo, hi] (strtol's syntax, nothing before
 * or after it), stored in *v; else 0 */
static inline int cli_long(const char *t, long lo, long hi, long *v)
{
    char *e;
    errno = 0;
    const long x = strtol(t, &e, 10);
    if (e == t || *e || errno || x < lo || x > hi)
        return 0;
    *v = x;
    return 1;
}

/* 1 if t is a number in C syntax (strtod's, nothing before or after it),
 * stored in *v; else 0. NaN and infinities parse: callers bound the value
 * with a comparison that NaN fails (!(v >= 0)) and test isinf where it
 * matters. */
static inline int cli_double(const char *t, double *v)
{
    char *e;
    *v = strtod(t, &e);
    return e != t && !*e;
}

#endif
