/* bench_util.h — small pieces the benchmark programs share (public API only,
 * so a benchmark still builds against an older libsale). Header-only. */
#ifndef SALE_BENCH_UTIL_H
#define SALE_BENCH_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sale.h"

/* qsort order of floats (for medians) */
static inline int bench_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The median GPU time (ms) of `reps` sale_attention calls (at most 32) after
 * `warmup` untimed ones, each timed by two events on the legacy stream.
 * a->stats and a->phase_ms should be NULL (they make a call wait). */
static inline sale_status bench_median_ms(sale_ctx *ctx, const sale_attention_args *a, int warmup, int reps,
                                          float *ms)
{
    sale_event *e0 = NULL, *e1 = NULL;
    float t[32];
    sale_status s = sale_event_create(ctx, &e0);
    if (!s)
        s = sale_event_create(ctx, &e1);
    for (int i = 0; !s && i < warmup; i++)
        s = sale_attention(ctx, a, NULL);
    if (reps > 32)
        reps = 32;
    if (reps < 1)
        reps = 1;
    for (int i = 0; !s && i < reps; i++) {
        s = sale_event_record(ctx, e0, NULL);
        if (!s)
            s = sale_attention(ctx, a, NULL);
        if (!s)
            s = sale_event_record(ctx, e1, NULL);
        if (!s)
            s = sale_event_elapsed(ctx, e0, e1, &t[i]);
    }
    if (!s) {
        qsort(t, (size_t)reps, sizeof t[0], bench_cmp_float);
        *ms = t[reps / 2];
    }
    if (e0)
        sale_event_destroy(ctx, e0);
    if (e1)
        sale_event_destroy(ctx, e1);
    return s;
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
