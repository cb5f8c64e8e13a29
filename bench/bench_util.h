/* bench_util.h — small pieces the benchmark programs share (public API only,
 * so a benchmark still builds against an older libsale). Header-only. */
#ifndef SALE_BENCH_UTIL_H
#define SALE_BENCH_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_num.h"
#include "sale.h"

/* An option's number, or exit 2 naming the option and the text (atoi took
 * "64k" as 64 and "x" as 0, silently). */
static inline long bench_int_arg(const char *prog, const char *opt, const char *t, long lo, long hi)
{
    long v;
    if (!cli_long(t, lo, hi, &v)) {
        fprintf(stderr, "%s: %s takes an integer in [%ld, %ld], not '%s'\n", prog, opt, lo, hi, t);
        exit(2);
    }
    return v;
}

/* a finite number in [lo, hi] (hi_open: [lo, hi)), or exit 2 */
static inline double bench_real_arg(const char *prog, const char *opt, const char *t, double lo, double hi,
                                    int hi_open)
{
    double v;
    if (!cli_double(t, &v) || !(v >= lo) || (hi_open ? !(v < hi) : !(v <= hi))) {
        fprintf(stderr, "%s: %s takes a number in [%g, %g%s, not '%s'\n", prog, opt, lo, hi, hi_open ? ")" : "]", t);
        exit(2);
    }
    return v;
}

/* A comma list of integers or reals into out[max]: each one checked as
 * above, an empty entry or more than max entries refused (exit 2).
 * Returns the count. s is not modified. */
static inline int bench_list(const char *prog, const char *opt, const char *s, int is_int, double lo, double hi,
                             int hi_open, double *out, int max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, ",");
        char t[64];
        if (len == 0 || len >= sizeof t) {
            fprintf(stderr, "%s: %s takes a comma list, not '%s'\n", prog, opt, s);
            exit(2);
        }
        memcpy(t, p, len);
        t[len] = 0;
        if (n == max) {
            fprintf(stderr, "%s: %s takes at most %d entries, not '%s'\n", prog, opt, max, s);
            exit(2);
        }
        out[n++] = is_int ? (double)bench_int_arg(prog, opt, t, (long)lo, (long)hi)
                          : bench_real_arg(prog, opt, t, lo, hi, hi_open);
        if (!p[len])
            return n;
        p += len + 1;
    }
}

/* The anchors file (lines "flash|cudnn N ms"): the flash and cuDNN times for
 * length n (0 where the file has none). A file that cannot be read or a line
 * that is not of that form is an error (exit 2), not a table without them. */
static inline void bench_anchors(const char *prog, const char *path, int n, double *flash, double *cudnn)
{
    *flash = *cudnn = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: --anchors %s: cannot read it\n", prog, path);
        exit(2);
    }
    char line[256];
    int ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char kind[32], extra[2];
        int m;
        double ms;
        const char *s = line + strspn(line, " \t");
        if (*s == '\n' || *s == 0 || *s == '#')
            continue;
        if (sscanf(s, "%31s %d %lf %1s", kind, &m, &ms, extra) != 3 || (strcmp(kind, "flash") && strcmp(kind, "cudnn")) ||
            !(ms > 0) || !isfinite(ms) || m < 1) {
            fprintf(stderr, "%s: --anchors %s:%d: expected 'flash|cudnn N ms', got: %s", prog, path, ln, line);
            fclose(f);
            exit(2);
        }
        if (m == n)
            *(strcmp(kind, "flash") ? cudnn : flash) = ms;
    }
    fclose(f);
}

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
