/* bench_attention.c — SALE against dense attention on the Llama-3.1-8B
 * attention shape (B=1, 32 q heads, 8 kv heads, D=128, bf16, causal) on the
 * structured inputs of bench/README.md. One table, same run, same GPU: torch
 * SDPA (FLASH and cuDNN backends, measured by bench/sdpa.py in the same
 * device call and passed with --anchors), our dense, fused and two-pass SALE:
 * time, speedup, density, relative L1 error against our dense output, needle
 * recall, selection overhead; and, at short lengths only (--plain-max), the
 * version 0 kernel (SALE_MODE_PLAIN, templates/plain.cu): its time and how
 * many mask bits differ from fused's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_power.h"
#include "bench_util.h"
#include "sale.h"
#include "sale_layout.h" /* which sm_90a attend kernel is the default where (SALE_WR_DEFAULT_MAX_N) */

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "bench: %s failed: %s: %s\n", #x, sale_status_name(s_), sale_last_error(ctx));            \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static sale_ctx *ctx;
/* the SM clock over the last time_attention's timed calls */
static bench_power g_pw;

typedef struct anchor {
    int n;
    double flash, cudnn;
} anchor;

/* calls whose per-phase times make one reading: a single call's attend phase
 * was seen to read 56 or 62 ms at 128K, d = 0.2, on the same build in
 * consecutive rounds while the totals agreed within 1% (ninth session) */
#define PHASE_CALLS 5 /* odd: the median is one reading */

/* Median GPU time of one sale_attention call over reps (after warm-up),
 * then the stats from one more call, and each phase's time as the median
 * over PHASE_CALLS calls (phases: quantize, select or fused, attend). */
static float time_attention(sale_attention_args *a, int warmup, int reps, float phases[3])
{
    sale_stats *keep_stats = a->stats;
    float *keep_phase = a->phase_ms;
    float *out = phases ? phases : keep_phase;
    a->stats = NULL;
    a->phase_ms = NULL;
    float ms = 0;
    bench_power_start(&g_pw);
    sale_status st = bench_median_ms(ctx, a, warmup, reps, &ms);
    bench_power_stop(&g_pw);
    CHECK(st);
    float runs[3][PHASE_CALLS];
    const int ncalls = out ? PHASE_CALLS : 1;
    for (int c = 0; c < ncalls; c++) {
        float ph[3] = {0, 0, 0};
        a->stats = c == 0 ? keep_stats : NULL;
        a->phase_ms = out ? ph : NULL;
        CHECK(sale_attention(ctx, a, NULL));
        CHECK(sale_dev_sync(ctx));
        for (int i = 0; i < 3; i++)
            runs[i][c] = ph[i];
    }
    if (out)
        for (int i = 0; i < 3; i++) { /* the middle one, as bench_median_ms takes it */
            qsort(runs[i], PHASE_CALLS, sizeof runs[i][0], bench_cmp_float);
            out[i] = runs[i][PHASE_CALLS / 2];
        }
    a->stats = keep_stats;
    a->phase_ms = keep_phase;
    return ms;
}

/* the anchor's cells of a table row: cuDNN's ms and cuDNN / t ("-" when
 * the anchors file has no cuDNN time for this length) */
static void cudnn_cells(double cudnn, double t, char ms[32], char ratio[32])
{
    snprintf(ms, 32, "-");
    snprintf(ratio, 32, "-");
    if (cudnn > 0) {
        snprintf(ms, 32, "%.1f", cudnn);
        snprintf(ratio, 32, "%.2fx", cudnn / t);
    }
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* attend's two rows a CTA (wgmma_union.cuh): for the mask of one run, how
 * much longer the longer row of a pair is than the pair's mean (in tiles of
 * four blocks: the warpgroup of the shorter row idles for the difference),
 * and how many blocks the pair's union loads against its rows' own, for the
 * fixed pairing (heads 2k, 2k + 1 of a GQA group) and for the kernel's
 * (dw_pair_by_kept: ranked by kept count). The rank below is
 * dw_count_rank's rule (wgmma_union.cuh, a CUDA C++ template this C file
 * cannot include), larger count first, ties by head: change both together.
 * And, for a design not built (a cluster of two CTAs taking four rows of a
 * group, K/V multicast to both), the L2 reads and each SM's bytes against
 * the two pairs' own unions. */
/* kept blocks of a mask row */
static int row_kept(const uint32_t *r, int nkw)
{
    int c = 0;
    for (int w = 0; w < nkw; w++) c += __builtin_popcount(r[w]);
    return c;
}

/* a pair of mask rows (ca, cb kept blocks) into a pairing's sums: the longer
 * row's tiles and the mean of the two (four blocks a tile, the two-row
 * kernel's), and twice the blocks of their union */
static void pair_add(const uint32_t *ra, const uint32_t *rb, int ca, int cb, int nkw, double *lng, double *mean,
                     double *uni)
{
    const int ta = (ca + 3) / 4, tb = (cb + 3) / 4;
    *lng += ta > tb ? ta : tb;
    *mean += 0.5 * (ta + tb);
    for (int w = 0; w < nkw; w++) *uni += 2 * __builtin_popcount(ra[w] | rb[w]);
}

static void pair_stats(const uint32_t *mask, int N, double tau, int Hq, int Hkv, int nqb, int nkw)
{
    const int g = Hq / Hkv;
    if (g < 4 || g % 2 || g > 32)
        return;
    double lng[2] = {0, 0}, mean[2] = {0, 0}, uni[2] = {0, 0}, own = 0;
    double quad = 0, pairs = 0; /* blocks the four rows' union loads; the two pairs' unions */
    double ubest = 0;           /* twice the blocks of the smallest-union pairing's unions (g = 4) */
    double q4max = 0, q4mean = 0; /* the longest of a group's four rows, and their mean (g = 4), in blocks */
    for (int kv = 0; kv < Hkv; kv++)
        for (int q = 0; q < nqb; q++) {
            int c[32], rank[32], by_rank[32];
            for (int i = 0; i < g; i++) {
                c[i] = row_kept(mask + ((size_t)(kv * g + i) * nqb + q) * nkw, nkw);
                own += c[i];
            }
            for (int i = 0; i < g; i++) {
                rank[i] = 0;
                for (int j = 0; j < g; j++) rank[i] += c[j] > c[i] || (c[j] == c[i] && j < i);
                by_rank[rank[i]] = i;
            }
            for (int s = 0; s < 2; s++)
                for (int k = 0; k < g / 2; k++) {
                    const int a = s ? by_rank[2 * k] : 2 * k, b = s ? by_rank[2 * k + 1] : 2 * k + 1;
                    pair_add(mask + ((size_t)(kv * g + a) * nqb + q) * nkw, mask + ((size_t)(kv * g + b) * nqb + q) * nkw,
                             c[a], c[b], nkw, &lng[s], &mean[s], &uni[s]);
                }
            /* the pairing with the smallest union (groups of 4: the best of the three; a bound on what
             * any pairing rule could save over the kernel's by-count pairing) */
            if (g == 4) {
                const uint32_t *r[4];
                for (int t = 0; t < 4; t++) r[t] = mask + ((size_t)(kv * g + t) * nqb + q) * nkw;
                static const int pr[3][4] = {{0, 1, 2, 3}, {0, 2, 1, 3}, {0, 3, 1, 2}};
                double best = -1;
                for (int m = 0; m < 3; m++) {
                    double u = 0;
                    for (int w = 0; w < nkw; w++)
                        u += 2 * (__builtin_popcount(r[pr[m][0]][w] | r[pr[m][1]][w]) +
                                  __builtin_popcount(r[pr[m][2]][w] | r[pr[m][3]][w]));
                    if (best < 0 || u < best) best = u;
                }
                ubest += best;
                int cmax = 0;
                for (int t = 0; t < 4; t++) cmax = c[t] > cmax ? c[t] : cmax;
                q4max += cmax;
                q4mean += 0.25 * (c[0] + c[1] + c[2] + c[3]);
            }
            /* four rows a cluster of two CTAs (ranks 4c..4c + 3, pairs as the kernel's), K/V multicast */
            for (int c4 = 0; g % 4 == 0 && c4 < g / 4; c4++) {
                const uint32_t *r4[4];
                for (int t = 0; t < 4; t++) r4[t] = mask + ((size_t)(kv * g + by_rank[4 * c4 + t]) * nqb + q) * nkw;
                for (int w = 0; w < nkw; w++) {
                    quad += __builtin_popcount(r4[0][w] | r4[1][w] | r4[2][w] | r4[3][w]);
                    pairs += __builtin_popcount(r4[0][w] | r4[1][w]) + __builtin_popcount(r4[2][w] | r4[3][w]);
                }
            }
        }
    /* the other pairing: query blocks 2m and 2m + 1 of one head */
    double qlng = 0, qmean = 0, quni = 0, qown = 0;
    for (int h = 0; h < Hq; h++)
        for (int q = 0; q + 1 < nqb; q += 2) {
            const uint32_t *ra = mask + ((size_t)h * nqb + q) * nkw, *rb = ra + nkw;
            const int ca = row_kept(ra, nkw), cb = row_kept(rb, nkw);
            qown += ca + cb;
            pair_add(ra, rb, ca, cb, nkw, &qlng, &qmean, &quni);
        }
    fprintf(stderr, "bench: N=%d tau=%g attend pairs (query blocks 2m, 2m+1 of a head): longer row / mean x%.3f, "
                    "union / own x%.3f\n",
            N, tau, qmean > 0 ? qlng / qmean : 0, qown > 0 ? quni / qown : 0);
    fprintf(stderr, "bench: N=%d tau=%g attend pairs (heads 2k, 2k+1 | by kept count): longer row / mean x%.3f | x%.3f, "
                    "union / own x%.3f | x%.3f\n",
            N, tau, mean[0] > 0 ? lng[0] / mean[0] : 0, mean[1] > 0 ? lng[1] / mean[1] : 0, own > 0 ? uni[0] / own : 0,
            own > 0 ? uni[1] / own : 0);
    if (ubest > 0)
        fprintf(stderr, "bench: N=%d tau=%g attend pairs (heads, the smallest union of the 3 pairings of each group): "
                        "union / own x%.3f; the longest of the four rows / their mean x%.3f (blocks)\n",
                N, tau, own > 0 ? ubest / own : 0, q4mean > 0 ? q4max / q4mean : 0);
    if (pairs > 0)
        fprintf(stderr, "bench: N=%d tau=%g attend quads (two pairs a cluster, K/V multicast): L2 reads x%.3f of the "
                        "pairs', each SM receives x%.3f\n",
                N, tau, quad / pairs, 2 * quad / pairs);
}

int main(int argc, char **argv)
{
    int lens[8] = {16384, 32768, 65536, 131072}, nlens = 4, reps = 5, Hq = 32, Hkv = 8, D = 128;
    float taus[8] = {0.004f}, dens[8];
    int ntaus = 1, ndens = 0;
    const char *anchors_path = NULL, *dump = NULL;
    int plain_max = 8192; /* v0 (plain) is slow: timed only at N <= this (0: never) */
    int fixed_only = 0;   /* --fixed-only: our dense and the thr=fixed two-pass, nothing else */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) {
            double v[8];
            nlens = bench_list("bench_attention", "--lens", argv[++i], 1, 64, 1 << 22, 0, v, 8);
            for (int j = 0; j < nlens; j++)
                lens[j] = (int)v[j];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (int)bench_int_arg("bench_attention", "--reps", argv[++i], 1, 100000);
        } else if (!strcmp(argv[i], "--tau") && i + 1 < argc) {
            double v[8];
            ntaus = bench_list("bench_attention", "--tau", argv[++i], 0, 0, 1, 1, v, 8);
            for (int j = 0; j < ntaus; j++)
                taus[j] = (float)v[j];
        } else if (!strcmp(argv[i], "--density") && i + 1 < argc) {
            double v[8];
            ndens = bench_list("bench_attention", "--density", argv[++i], 0, 0, 1, 1, v, 8);
            for (int j = 0; j < ndens; j++) {
                dens[j] = (float)v[j];
                if (!(dens[j] > 0.f)) {
                    fprintf(stderr, "bench_attention: --density takes fractions in (0, 1), got %g\n", v[j]);
                    return 2;
                }
            }
        } else if (!strcmp(argv[i], "--anchors") && i + 1 < argc) {
            anchors_path = argv[++i];
        } else if (!strcmp(argv[i], "--dump") && i + 1 < argc) {
            dump = argv[++i];
        } else if (!strcmp(argv[i], "--fixed-only")) {
            fixed_only = 1;
        } else if (!strcmp(argv[i], "--plain-max") && i + 1 < argc) {
            plain_max = (int)bench_int_arg("bench_attention", "--plain-max", argv[++i], 0, 1 << 22);
        } else if (!strcmp(argv[i], "--heads") && i + 2 < argc) {
            Hq = (int)bench_int_arg("bench_attention", "--heads", argv[++i], 1, 1024);
            Hkv = (int)bench_int_arg("bench_attention", "--heads", argv[++i], 1, 1024);
            if (Hq % Hkv) {
                fprintf(stderr, "bench_attention: --heads %d %d: the query heads must be a multiple of the kv heads\n",
                        Hq, Hkv);
                return 2;
            }
        } else {
            printf("usage: bench_attention [--lens 16384,32768,...] [--reps N] [--tau T1,T2,..] [--heads HQ HKV]\n"
                   "                       [--density D1,D2,.. (instead of --tau: per length, the tau whose thr=fixed\n"
                   "                        two-pass mask has density D, found by bisection; e.g. 0.05,0.2)]\n"
                   "                       [--anchors FILE (lines: flash|cudnn N ms)] [--dump DIR]\n"
                   "                       [--plain-max N (time v0 plain only at lengths <= N; default 8192, 0 never)]\n"
                   "                       [--fixed-only (time our dense and the thr=fixed two-pass only: the\n"
                   "                        kernels of the density targets, one table)]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    anchor an[8] = {0};
    if (anchors_path)
        for (int i = 0; i < nlens; i++) {
            bench_anchors("bench_attention", anchors_path, lens[i], &an[i].flash, &an[i].cudnn);
            if (an[i].flash > 0 || an[i].cudnn > 0)
                an[i].n = lens[i];
        }
    sale_options o = {0};
    CHECK(sale_create(&ctx, &o));
    sale_device_info di;
    CHECK(sale_device_info_get(ctx, 0, &di));
    fprintf(stderr, "bench: %s (sm_%d, %d SMs), B=1 Hq=%d Hkv=%d D=%d bf16 causal, reps=%d\n", di.name, di.arch,
            di.sm_count, Hq, Hkv, D, reps);

    static char table[64][448];
    static char curve[64][256]; /* the cost against density, beside cuDNN and our dense */
    static char fixed[64][256]; /* thr = fixed rows */
    static char fonly[64][256]; /* --fixed-only rows */
    int nfonly = 0;
    int nfixed = 0;
    int ncurve = 0;
    int nrows = 0;
    for (int li = 0; li < nlens; li++) {
        int N = lens[li];
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = 1, a.heads_q = Hq, a.heads_kv = Hkv, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
        size_t nq = (size_t)Hq * N * D, nk = (size_t)Hkv * N * D;
        uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o_dense = malloc(nq * 2),
                 *o_sale = malloc(nq * 2);
        if (!q || !k || !v || !o_dense || !o_sale) {
            fprintf(stderr, "bench: out of host memory\n");
            return 1;
        }
        sale_gen_options g = {.seed = 1234 + (uint64_t)N, .structured = 1, .needles = 1};
        sale_needle nd[64];
        int nn = 0;
        CHECK(sale_generate_qkv(&a, &g, q, k, v, nd, 64, &nn));
        void *dq, *dk, *dv, *dout, *dmask;
        int nqb = sale_num_qblocks(&a), nkb = sale_num_kblocks(&a), nkw = (nkb + 31) / 32;
        size_t mask_words = (size_t)Hq * nqb * nkw;
        CHECK(sale_dev_alloc(ctx, nq * 2, &dq));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dk));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dv));
        CHECK(sale_dev_alloc(ctx, nq * 2, &dout));
        CHECK(sale_dev_alloc(ctx, mask_words * 4, &dmask));
        CHECK(sale_dev_upload(ctx, dq, q, nq * 2));
        CHECK(sale_dev_upload(ctx, dk, k, nk * 2));
        CHECK(sale_dev_upload(ctx, dv, v, nk * 2));
        a.q = dq, a.k = dk, a.v = dv, a.out = dout;

        /* our dense */
        a.mode = SALE_MODE_DENSE;
        CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
        float t_dense = time_attention(&a, 1, reps, NULL);
        char pw_dense[192];
        bench_power_str(&g_pw, pw_dense, sizeof pw_dense);
        fprintf(stderr, "bench: N=%d dense: %.1f ms (%s)\n", N, t_dense, pw_dense);
        CHECK(sale_dev_download(ctx, o_dense, dout, nq * 2));

        /* --density: this length's taus, each bisected (in log tau: density
         * falls as tau grows) until the thr=fixed two-pass mask is within 5%
         * of the target, or 14 probes */
        float taus_n[8];
        int ntn = ndens ? ndens : ntaus;
        for (int ti = 0; ti < ntn; ti++) taus_n[ti] = ndens ? 0.f : taus[ti];
        for (int di = 0; di < ndens; di++) {
            double lo = log(1e-7), hi = log(0.5), x = 0, got = 0;
            sale_stats sp = {0};
            int probes = 0;
            a.mode = SALE_MODE_TWO_PASS;
            a.thr = SALE_THR_FIXED;
            a.mask = dmask;
            a.stats = &sp;
            for (probes = 1; probes <= 14; probes++) {
                x = 0.5 * (lo + hi);
                a.tau_default = (float)exp(x);
                CHECK(sale_attention(ctx, &a, NULL));
                CHECK(sale_dev_sync(ctx));
                got = sp.density;
                if (fabs(got - dens[di]) <= 0.05 * dens[di]) break;
                if (got > dens[di]) lo = x; /* too dense: a larger tau */
                else hi = x;
            }
            taus_n[di] = (float)exp(x);
            a.thr = SALE_THR_RUN;
            a.stats = NULL;
            fprintf(stderr, "bench: N=%d density %.3f: tau %.3g gives thr=fixed density %.4f (%d probes)\n", N,
                    (double)dens[di], (double)taus_n[di], got, probes > 14 ? 14 : probes);
        }

        uint32_t *mask = malloc(mask_words * 4);
        for (int ti = 0; ti < ntn; ti++) {
        float tau = taus_n[ti];
        a.tau_default = tau;
        if (fixed_only) {
            sale_stats sx = {0};
            float ph[3] = {0};
            a.mode = SALE_MODE_TWO_PASS;
            a.thr = SALE_THR_FIXED;
            a.mask = dmask;
            a.stats = &sx;
            CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
            float t = time_attention(&a, 1, reps, ph);
            char pw_fix[192];
            bench_power_str(&g_pw, pw_fix, sizeof pw_fix);
            CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
            double err = bench_rel_l1_bf16(o_sale, o_dense, nq), dd = sx.density * t_dense;
            /* the same call through the other sm_90a attend kernel: the two-row one (warps 12) where the
             * default is the rows kernel (up to SALE_WR_DEFAULT_MAX_N), the rows one (warps 5) above */
            float ph_r[3] = {0};
            double err_r = -1;
            if (di.arch == 90 && sx.density < 0.999) { /* not where the call fell back to dense (dense_below) */
                a.tile_warps = N <= SALE_WR_DEFAULT_MAX_N ? SALE_WG_WARPS : SALE_WR_WARPS;
                CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
                (void)time_attention(&a, 1, reps, ph_r);
                CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
                err_r = bench_rel_l1_bf16(o_sale, o_dense, nq);
                a.tile_warps = 0;
            }
            char vc[32], cx[32];
            cudnn_cells(an[li].cudnn, t, cx, vc);
            snprintf(fonly[nfonly++], sizeof fonly[0],
                     "| %6dK | %8.3g | %6.4f | %8s | %7.1f | %7.1f | %5.2f + %6.2f + %6.2f | %6.1f | %5.2fx | %.4f | %6s | "
                     "%6.2f | %5.2fx | %.4f |",
                     N / 1024, (double)tau, sx.density, cx, t_dense, t, ph[0], ph[1], ph[2], dd,
                     dd > 0 ? ph[2] / dd : 0.0, err, vc, ph_r[2], dd > 0 ? ph_r[2] / dd : 0.0, err_r);
            fprintf(stderr, "bench: N=%d tau=%g fixed: %.1f ms (quantize %.2f, select %.2f, attend %.2f), density %.4f; "
                    "%s over the timed calls\n",
                    N, (double)tau, t, ph[0], ph[1], ph[2], sx.density, pw_fix);
            if (mask) {
                CHECK(sale_dev_download(ctx, mask, dmask, mask_words * 4));
                pair_stats(mask, N, (double)tau, Hq, Hkv, nqb, nkw);
            }
            a.thr = SALE_THR_RUN;
            a.stats = NULL;
            continue;
        }
        /* fused SALE */
        sale_stats st = {0};
        float ph_f[3] = {0}, ph_t[3] = {0};
        a.mode = SALE_MODE_FUSED;
        a.stats = &st;
        a.mask = dmask;
        CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
        float t_fused = time_attention(&a, 1, reps, ph_f);
        CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
        double err_fused = bench_rel_l1_bf16(o_sale, o_dense, nq);
        CHECK(sale_dev_download(ctx, mask, dmask, mask_words * 4));
        int kept_needles = 0;
        for (int i = 0; i < nn; i++) {
            size_t row = ((size_t)nd[i].head_q * nqb + nd[i].query / 64) * nkw;
            int J = nd[i].key / 32;
            kept_needles += (mask[row + J / 32] >> (J % 32)) & 1;
        }
        double density = st.density;

        /* two-pass SALE */
        a.mode = SALE_MODE_TWO_PASS;
        CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
        float t_two = time_attention(&a, 1, reps, ph_t);
        CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
        double err_two = bench_rel_l1_bf16(o_sale, o_dense, nq);
        /* the same two-pass with the mma.sync attend kernel (tile warps 4: on
         * sm_90a attend's default is the wgmma kernel, warps 12) */
        float ph_m[3] = {0}, ph_2[3] = {0};
        a.tile_warps = 4;
        (void)time_attention(&a, 1, reps, ph_m);
        a.tile_warps = 0;
        /* and with 2 ring stages (on sm_90a the wgmma attend then fits 2 CTAs an SM) */
        a.tile_stages = 2;
        (void)time_attention(&a, 1, reps, ph_2);
        a.tile_stages = 0;

        /* two-pass with thr = fixed (t_i once, after the local region): on
         * sm_90a its select is the wgmma estimation (warps 12; warps 20: four
         * consumer warpgroups). Its mask must hold run's (a superset). */
        float ph_x[3] = {0}, ph_x20[3] = {0};
        sale_stats stx = {0};
        a.thr = SALE_THR_FIXED;
        a.stats = &stx;
        CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
        float t_fix = time_attention(&a, 1, reps, ph_x);
        CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
        double err_fix = bench_rel_l1_bf16(o_sale, o_dense, nq);
        long long not_super = 0;
        {
            uint32_t *mask_fix = malloc(mask_words * 4);
            if (!mask_fix) {
                fprintf(stderr, "bench: out of host memory\n");
                return 1;
            }
            CHECK(sale_dev_download(ctx, mask_fix, dmask, mask_words * 4));
            for (size_t w = 0; w < mask_words; w++)
                not_super += __builtin_popcount(mask[w] & ~mask_fix[w]);
            /* what sharing K/V tiles between two mask rows would cost: the
             * union of adjacent query blocks (2c, 2c+1) of one head, and of
             * one query block of two heads of a GQA group (h, h+1), against
             * each row's own blocks (the packed attend's work) */
            long long own = 0, uq = 0, uh = 0;
            for (int h = 0; h < Hq; h++)
                for (int q = 0; q < nqb; q++) {
                    const uint32_t *r = mask_fix + ((size_t)h * nqb + q) * nkw;
                    const uint32_t *rq = (q ^ 1) < nqb ? mask_fix + ((size_t)h * nqb + (q ^ 1)) * nkw : NULL;
                    const uint32_t *rh = (Hq / Hkv > 1) ? mask_fix + ((size_t)(h ^ 1) * nqb + q) * nkw : NULL;
                    for (int w = 0; w < nkw; w++) {
                        own += __builtin_popcount(r[w]);
                        uq += __builtin_popcount(r[w] | (rq ? rq[w] : 0));
                        uh += __builtin_popcount(r[w] | (rh ? rh[w] : 0));
                    }
                }
            fprintf(stderr, "bench: N=%d tau=%g fixed mask: own blocks %lld, shared with the next query block x%.3f, "
                            "with the GQA neighbour head x%.3f\n",
                    N, (double)tau, own, own ? (double)uq / own : 0.0, own ? (double)uh / own : 0.0);
            free(mask_fix);
        }
        a.tile_warps = 12; /* the wgmma estimation with 2 consumer warpgroups (default 4: warps 20) */
        float t_fix20 = time_attention(&a, 1, reps, ph_x20);
        a.tile_warps = 0;
        a.thr = SALE_THR_RUN;
        a.stats = &st;
        {
            char vc[32], cx[32];
            cudnn_cells(an[li].cudnn, t_fix, cx, vc);
            snprintf(fixed[nfixed++], sizeof fixed[0],
                     "| %6dK | %6g | %6.3f | %6.3f | %8s | %7.1f | %5.1f + %6.1f + %6.1f | %.4f | %lld | %7.1f (select %6.1f) | %6s |",
                     N / 1024, (double)tau, density, stx.density, cx, t_fix, ph_x[0], ph_x[1], ph_x[2], err_fix,
                     not_super, t_fix20, ph_x20[1], vc);
        }

        /* v0 (plain): the algorithm in one plain kernel; slow, so only at short
         * lengths and with at most 3 repetitions. Same mask as fused expected. */
        char v0[48] = "-";
        if (N <= plain_max) {
            uint32_t *mask_plain = malloc(mask_words * 4);
            if (!mask_plain) {
                fprintf(stderr, "bench: out of host memory\n");
                return 1;
            }
            a.mode = SALE_MODE_PLAIN;
            a.stats = NULL;
            CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
            float t_plain = time_attention(&a, 1, reps < 3 ? reps : 3, NULL);
            CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
            CHECK(sale_dev_download(ctx, mask_plain, dmask, mask_words * 4));
            long long mdiff = 0;
            for (size_t w = 0; w < mask_words; w++)
                mdiff += __builtin_popcount(mask[w] ^ mask_plain[w]);
            double err_plain = bench_rel_l1_bf16(o_sale, o_dense, nq);
            snprintf(v0, sizeof v0, "%.1f (%lld)", t_plain, mdiff);
            fprintf(stderr, "bench: N=%d tau=%g v0 plain %.1f ms, rel L1 %.4f, %lld mask bits differ from fused\n", N,
                    (double)tau, t_plain, err_plain, mdiff);
            free(mask_plain);
            a.stats = &st;
        }
        double flops = 4.0 * (double)N * N / 2 * D * Hq;
        double sel = ph_t[0] + ph_t[1]; /* quantize + select (estimate + exact m, l of kept blocks) */
        char fl[32] = "-", cu[32], spf[32] = "-", spc[32], ovh[32] = "-";
        if (an[li].flash > 0) {
            snprintf(fl, sizeof fl, "%.1f", an[li].flash);
            snprintf(spf, sizeof spf, "%.2fx", an[li].flash / t_fused);
            snprintf(ovh, sizeof ovh, "%.0f%%", 100.0 * sel / an[li].flash);
        }
        cudnn_cells(an[li].cudnn, t_fused, cu, spc);
        snprintf(table[nrows++], sizeof table[0],
                 "| %6dK | %6g | %8s | %8s | %7.1f (%3.0f TF/s) | %7.1f | %7.1f | %14s | %6s | %6s | %5.2fx | %6.3f | "
                 "%.4f / %.4f | %d/%d | %5.1f + %5.1f | %5s |",
                 N / 1024, (double)tau, fl, cu, t_dense, flops / t_dense / 1e9, t_fused, t_two, v0, spf, spc,
                 t_dense / t_fused, density, err_fused, err_two, kept_needles, nn, ph_t[0], ph_t[1], ovh);
        {
            double best = t_fused < t_two ? t_fused : t_two, dd = density * t_dense;
            char vc[32], cxb[32];
            cudnn_cells(an[li].cudnn, best, cxb, vc);
            snprintf(curve[ncurve++], sizeof curve[0],
                     "| %6dK | %6g | %6.3f | %8s | %7.1f | %7.1f | %7.1f | %5.1f + %6.1f + %6.1f | %6.1f | %6.1f | %6.2f | %5.2fx | %6s |",
                     N / 1024, (double)tau, density, cu, t_dense, t_fused, t_two, ph_t[0], ph_t[1], ph_t[2], ph_m[2], ph_2[2], dd,
                     dd > 0 ? ph_t[2] / dd : 0.0, vc);
        }
        fprintf(stderr, "bench: N=%d tau=%g done: dense %.1f ms, fused %.1f ms, two-pass %.1f ms (quantize %.2f, select "
                        "%.2f, attend %.2f), density %.3f, rel L1 %.4f\n",
                N, (double)tau, t_dense, t_fused, t_two, ph_t[0], ph_t[1], ph_t[2], density, err_fused);
        }
        if (dump && li == 0) {
            write_file(dump, "q.bin", q, nq * 2);
            write_file(dump, "k.bin", k, nk * 2);
            write_file(dump, "v.bin", v, nk * 2);
            write_file(dump, "o_dense.bin", o_dense, nq * 2);
            /* tau -> 0 through fused must equal dense */
            a.mode = SALE_MODE_FUSED;
            a.mask = NULL;
            a.tau_default = 1e-7f;
            a.stats = NULL;
            CHECK(sale_attention(ctx, &a, NULL));
            CHECK(sale_dev_sync(ctx));
            CHECK(sale_dev_download(ctx, o_sale, dout, nq * 2));
            write_file(dump, "o_fused_tau0.bin", o_sale, nq * 2);
            fprintf(stderr, "bench: tau=0 fused vs our dense rel L1 = %.2e\n", bench_rel_l1_bf16(o_sale, o_dense, nq));
            char shape[64];
            int sl = snprintf(shape, sizeof shape, "%d %d %d %d\n", Hq, Hkv, N, D);
            write_file(dump, "shape.txt", shape, (size_t)sl);
        }
        free(mask);
        sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout),
            sale_dev_free(ctx, dmask);
        free(q), free(k), free(v), free(o_dense), free(o_sale);
    }
    printf("\n%s, B=1 Hq=%d Hkv=%d D=%d bf16 causal, structured inputs (times in ms, median of %d)\n\n", di.name,
           Hq, Hkv, D, reps);
    if (fixed_only) {
        printf("two-pass, thr = fixed (on sm_90a: the wgmma select, warps 20, and the wgmma attend; above %dK the "
               "device picks the attend kernel: two-row iff the kept blocks reach %.3f of the causal "
               "ones, else rows); phases from "
               "CUDA events, each the median of %d calls; attend is owed d x our dense (issue 10: within 1.2x)\n\n"
               "| N | tau | density | SDPA cuDNN | our dense | two-pass fixed | quantize + select + attend | d x dense | "
               "attend / (d x dense) | rel L1 | cuDNN / fixed | attend, other kernel (warps 12 to %dK, 5 above) | "
               "other / (d x dense) | rel L1 other |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
               SALE_WR_PICK_MIN_N / 1024, SALE_WR_PICK_DENSITY, PHASE_CALLS, SALE_WR_DEFAULT_MAX_N / 1024);
        for (int r = 0; r < nfonly; r++)
            printf("%s\n", fonly[r]);
        sale_destroy(ctx);
        return 0;
    }
    printf("| N | tau | SDPA flash | SDPA cuDNN | our dense | fused | two-pass | v0 plain (mask bits != fused) | fused "
           "vs flash | fused vs cuDNN | fused vs our dense | density | rel L1 fused / two-pass | needles kept | quantize "
           "+ select | select overhead vs flash |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int r = 0; r < nrows; r++)
        printf("%s\n", table[r]);
    printf("\ncost against density (two-pass phases from CUDA events, each the median of %d calls; attend is owed d x "
           "our dense, issue 10: within 1.2x)\n\n",
           PHASE_CALLS);
    printf("| N | tau | density d | SDPA cuDNN | our dense | fused | two-pass | quantize + select + attend | attend, "
           "mma.sync kernel (warps 4) | attend, 2 stages | d x dense | attend / (d x dense) | cuDNN / best SALE |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int r = 0; r < ncurve; r++)
        printf("%s\n", curve[r]);
    printf("\nthr = fixed (t_i once after the local region; two-pass; on sm_90a the select is the wgmma "
           "estimation, warps 20; its mask must contain run's: bits of run missing from fixed)\n\n");
    printf("| N | tau | density run | density fixed | SDPA cuDNN | two-pass fixed | quantize + select + attend | rel L1 | "
           "run bits missing | select warps 12: total (select) | cuDNN / fixed |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int r = 0; r < nfixed; r++)
        printf("%s\n", fixed[r]);
    sale_destroy(ctx);
    return 0;
}
