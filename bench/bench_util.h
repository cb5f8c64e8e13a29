/* bench_util.h — small pieces the benchmark programs share (public API only,
 * so a benchmark still builds against an older libsale). Header-only. */
#ifndef SALE_BENCH_UTIL_H
#define SALE_BENCH_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "sale.h"

/* qsort order of floats (for medians) */
static inline int bench_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* relative L1 error sum|x - ref| / sum|ref| of two bf16 arrays */
static inline double bench_rel_l1_bf16(const uint16_t *x, const uint16_t *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double a = sale_bf16_to_f32(x[i]), b = sale_bf16_to_f32(ref[i]);
        num += fabs(a - b);
        den += fabs(b);
    }
    return den > 0 ? num / den : 0;
}

#endif
