/* bench_calibrated.c — accuracy at equal speed: per-head thresholds
 * calibrated by sale_calibrate() to an error budget on one seed, then
 * measured on other seeds, beside single-τ rows and the dense anchors.
 * Inputs: bench/headmix.h (heads that differ as a real model's do), the
 * Llama-3.1-8B attention shape (B=1, 32 q heads, 8 kv heads, D=128, bf16).
 * Per row: density (mean over heads), relative L1 against our dense output
 * (mean over heads and worst head, worst over the measurement seeds),
 * planted needles kept, and the GPU time of fused and two-pass against our
 * dense and torch SDPA (FLASH, cuDNN; measured by bench/sdpa.py in the same
 * device call and passed with --anchors).
 *   usage: bench_calibrated [--lens 32768,65536,131072] [--budgets 0.01,0.02,0.05]
 *                           [--taus 0.004,0.001] [--seeds 2] [--reps 3] [--anchors FILE]
 *                           [--dir DIR (calibration files)] [--thr run|fixed (default: the device's)]
 * --calib-samples S: prompts of seed 1 the calibration must hold on (default
 * 2: with one, a diffuse head under thr fixed missed a 2% budget by 15x on a
 * fresh seed; bench/RESULTS.md, tenth session).
 * --per-head also runs two-pass on every measurement seed and prints each
 * head's τ, density and relative L1 of both modes (lines "per-head ...").
 * --dense-above D: sale_calibrate_options.dense_above (default: the library's).
 * --thr fixed calibrates and measures with the fixed threshold (on sm_90a
 * the wgmma select: calibration then runs two-pass, the faster mode there).
 * Without --thr: the device's default variant (sale_attention_default_thr:
 * fixed on sm_90, run elsewhere), as a call with thr 0 runs it; the
 * calibrated rows then name only (model, layer) and run the variant the
 * thresholds recorded. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "headmix.h"
#include "safetensors.h"
#include "bench_util.h"
#include "sale.h"

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "bench_calibrated: %s failed: %s: %s\n", #x, sale_status_name(s_), sale_last_error(ctx)); \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

enum { HQ = 32, HKV = 8, D = 128, MAXL = 8, MAXROWS = 12, MAXNEEDLES = 1024 };

static sale_ctx *ctx;

static float time_ms(sale_attention_args *a, int reps)
{
    float ms = 0;
    CHECK(bench_median_ms(ctx, a, 1, reps > 16 ? 16 : reps, &ms));
    return ms;
}

typedef struct row {
    char label[48];
    double budget; /* 0 for single-tau rows */
    float tau;
    double density, err_mean, err_worst, fused_ms, two_pass_ms;
    long needles, kept;
    float tau_min, tau_max;
    int dense_heads;
} row;


/* relative L1 of each head's output z against the dense output y (an
 * unwritten element, NaN from the poison fill, counts as an error of 1e30) */
static void head_errors(const uint16_t *y16, const uint16_t *z16, int N, double e[HQ])
{
    for (int h = 0; h < HQ; h++) {
        double num = 0, den = 0;
        for (size_t i = (size_t)h * N * D; i < (size_t)(h + 1) * N * D; i++) {
            double y = sale_bf16_to_f32(y16[i]), z = sale_bf16_to_f32(z16[i]);
            num += isfinite(z) ? fabs(z - y) : 1e30;
            den += fabs(y);
        }
        e[h] = den > 0 ? num / den : 0;
    }
}

int main(int argc, char **argv)
{
    double lens_d[MAXL] = {32768, 65536, 131072}, budgets[4] = {0.01, 0.02, 0.05}, taus[4] = {0.004, 0.001};
    int nl = 3, nb = 3, nt = 2, nseeds = 2, reps = 3, csamples = 2, thr = 0, per_head = 0;
    double dense_above = -1; /* < 0: the library's default */
    const char *anchors = NULL, *dir = "calib_bench";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc)
            nl = bench_list("bench_calibrated", "--lens", argv[++i], 1, 64, 1 << 22, 0, lens_d, MAXL);
        else if (!strcmp(argv[i], "--budgets") && i + 1 < argc)
            nb = bench_list("bench_calibrated", "--budgets", argv[++i], 0, 0, 1, 1, budgets, 4);
        else if (!strcmp(argv[i], "--taus") && i + 1 < argc)
            nt = bench_list("bench_calibrated", "--taus", argv[++i], 0, 0, 1, 1, taus, 4);
        else if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            nseeds = (int)bench_int_arg("bench_calibrated", "--seeds", argv[++i], 1, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = (int)bench_int_arg("bench_calibrated", "--reps", argv[++i], 1, 100000);
        else if (!strcmp(argv[i], "--anchors") && i + 1 < argc)
            anchors = argv[++i];
        else if (!strcmp(argv[i], "--calib-samples") && i + 1 < argc)
            csamples = (int)bench_int_arg("bench_calibrated", "--calib-samples", argv[++i], 1, 8);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--dense-above") && i + 1 < argc) {
            char *e;
            dense_above = strtod(argv[++i], &e);
            if (e == argv[i] || *e || !(dense_above >= 0 && dense_above <= 1)) {
                fprintf(stderr, "bench_calibrated: --dense-above takes a fraction in [0, 1], not '%s'\n", argv[i]);
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--per-head"))
            per_head = 1;
        else if (!strcmp(argv[i], "--thr") && i + 1 < argc) {
            thr = sale_thr_parse(argv[++i]);
            if (thr != SALE_THR_RUN && thr != SALE_THR_FIXED) {
                fprintf(stderr, "bench_calibrated: --thr takes run or fixed, not '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: bench_calibrated [--lens 32768,65536,131072] [--budgets 0.01,0.02,0.05] "
                            "[--taus 0.004,0.001] [--seeds 2] [--reps 3] [--anchors FILE] [--dir DIR] "
                            "[--calib-samples S (default 2)] [--thr run|fixed (default: the device's)] [--per-head] [--dense-above D]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (anchors) {
        double f0, c0;
        bench_anchors("bench_calibrated", anchors, -1, &f0, &c0); /* read now: a bad file stops before any GPU work */
    }
    sale_options o = {0};
    if (sale_create(&ctx, &o) != SALE_OK) {
        fprintf(stderr, "bench_calibrated: %s\n", sale_last_error(ctx));
        return 1;
    }
    /* the GPU first: without one, nothing is made (not even --dir) */
    sale_device_info di;
    if (sale_device_info_get(ctx, 0, &di) != SALE_OK) {
        fprintf(stderr, "bench_calibrated: %s\n", sale_last_error(ctx));
        return 1;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_calibrated: --dir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    /* thr 0: the device's default variant; named, so the header says it and
     * calibration takes two-pass where that is fixed (the rows still pass 0) */
    int thr_run = thr ? thr : sale_attention_default_thr(di.arch);
    {
        sale_calibrate_options d0;
        sale_calibrate_options_init(&d0);
        const double da = dense_above >= 0 ? dense_above : d0.dense_above;
        if (da > 0)
            printf("thresholds: thr = %s%s (calibration and both modes); a head kept at density %g or more runs "
                   "dense\n\n", sale_thr_name(thr_run), thr ? "" : " (the device's default: thr 0)", da);
        else
            printf("thresholds: thr = %s%s (calibration and both modes); --dense-above 0: no head made dense for "
                   "its density\n\n", sale_thr_name(thr_run), thr ? "" : " (the device's default: thr 0)");
    }
    printf("| N | thresholds | τ per head (min..max, dense heads) | density | rel-L1 mean / worst head | needles kept | "
           "fused ms | two-pass ms | our dense ms | SDPA flash | SDPA cuDNN | fused vs cuDNN | two-pass vs cuDNN |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int li = 0; li < nl; li++) {
        int N = (int)lens_d[li];
        double flash = 0, cudnn = 0;
        if (anchors)
            bench_anchors("bench_calibrated", anchors, N, &flash, &cudnn);
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = 1, a.heads_q = HQ, a.heads_kv = HKV, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
        a.thr = thr;
        size_t nq = (size_t)HQ * N * D, nk = (size_t)HKV * N * D;
        uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *od = malloc(nq * 2),
                 *os = malloc(nq * 2), *os2 = per_head ? malloc(nq * 2) : NULL; /* 1 GB at 128K */
        sale_needle *nd = malloc(sizeof *nd * MAXNEEDLES);
        if (!q || !k || !v || !od || !os || (per_head && !os2) || !nd) {
            fprintf(stderr, "bench_calibrated: out of host memory at N=%d\n", N);
            return 1;
        }
        /* 1. calibrate on seed 1 (csamples prompts of it: the batch entries),
         * one model name per budget */
        int nn = 0;
        {
            sale_attention_args ca = a;
            ca.batch = csamples;
            uint16_t *cq = malloc(nq * 2 * csamples), *ck = malloc(nk * 2 * csamples), *cv = malloc(nk * 2 * csamples);
            if (!cq || !ck || !cv) {
                fprintf(stderr, "bench_calibrated: out of host memory for %d calibration samples\n", csamples);
                return 1;
            }
            CHECK(headmix_generate(&ca, 1, cq, ck, cv, nd, MAXNEEDLES, &nn));
            char path[1024], err[512];
            snprintf(path, sizeof path, "%s/layer_000.safetensors", dir);
            st_out t[3] = {{"q", SALE_DTYPE_BF16, 4, {csamples, HQ, N, D}, cq},
                           {"k", SALE_DTYPE_BF16, 4, {csamples, HKV, N, D}, ck},
                           {"v", SALE_DTYPE_BF16, 4, {csamples, HKV, N, D}, cv}};
            if (st_write(path, t, 3, err, sizeof err)) {
                fprintf(stderr, "bench_calibrated: %s\n", err);
                return 1;
            }
            free(cq), free(ck), free(cv);
        }
        char models[4][64];
        for (int bi = 0; bi < nb; bi++) {
            snprintf(models[bi], sizeof models[bi], "headmix-%dK-b%g", N / 1024, budgets[bi]);
            sale_calibrate_options co;
            sale_calibrate_options_init(&co);
            co.model = models[bi];
            co.input_dir = dir;
            co.budget = budgets[bi];
            co.device = SALE_CALIBRATE_GPU;
            co.thr = thr;
            if (dense_above >= 0)
                co.dense_above = dense_above;
            if (thr_run == SALE_THR_FIXED)
                co.mode = SALE_MODE_TWO_PASS;
            sale_calibrate_result cr;
            memset(&cr, 0, sizeof cr);
            time_t c0 = time(NULL);
            CHECK(sale_calibrate(ctx, &co, &cr));
            fprintf(stderr, "calibrated %s in %ld s\n", models[bi], (long)(time(NULL) - c0));
            if (per_head) /* what the calibration saw on its own prompt(s), layer 0 */
                for (int h = 0; h < cr.heads && h < HQ; h++)
                    printf("calib-head N=%dK budget=%g head=%d tau=%g density %.4f rel-L1 %.4f\n", N / 1024,
                           budgets[bi], h, (double)cr.tau[h], cr.density[h], cr.error[h]);
            sale_calibrate_result_free(&cr);
        }
        /* 2. measure on other seeds */
        int nrows = nb + nt;
        row rows[MAXROWS];
        memset(rows, 0, sizeof rows);
        for (int r = 0; r < nrows; r++) {
            if (r < nb) {
                snprintf(rows[r].label, sizeof rows[r].label, "calibrated, budget %g%%", 100 * budgets[r]);
                rows[r].budget = budgets[r];
                float tau[HQ];
                sale_threshold_meta meta[HQ];
                CHECK(sale_thresholds_get(ctx, models[r], 0, tau, HQ, meta));
                for (int h = 0; h < HQ; h++)
                    if (meta[h].thr != thr_run) { /* what calibrate records is what the rows run */
                        fprintf(stderr, "bench_calibrated: %s head %d was stored with thr=%s, not %s\n", models[r], h,
                                sale_thr_name(meta[h].thr), sale_thr_name(thr_run));
                        return 1;
                    }
                rows[r].tau_min = 1, rows[r].tau_max = 0;
                for (int h = 0; h < HQ; h++) {
                    if (tau[h] <= 1e-5f)
                        rows[r].dense_heads++;
                    else
                        rows[r].tau_min = fminf(rows[r].tau_min, tau[h]);
                    rows[r].tau_max = fmaxf(rows[r].tau_max, tau[h]);
                }
            } else {
                rows[r].tau = (float)taus[r - nb];
                snprintf(rows[r].label, sizeof rows[r].label, "one τ = %g", taus[r - nb]);
            }
        }
        void *dq, *dk, *dv, *dout, *dmask;
        int nqb = sale_num_qblocks(&a), nkw = (sale_num_kblocks(&a) + 31) / 32;
        size_t nmask = (size_t)HQ * nqb * nkw;
        uint32_t *mask = malloc(nmask * 4);
        CHECK(sale_dev_alloc(ctx, nq * 2, &dq));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dk));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dv));
        CHECK(sale_dev_alloc(ctx, nq * 2, &dout));
        CHECK(sale_dev_alloc(ctx, nmask * 4, &dmask));
        double dense_ms = 0;
        for (int si = 0; si < nseeds; si++) {
            CHECK(headmix_generate(&a, (uint64_t)(100 + si), q, k, v, nd, MAXNEEDLES, &nn));
            CHECK(sale_dev_upload(ctx, dq, q, nq * 2));
            CHECK(sale_dev_upload(ctx, dk, k, nk * 2));
            CHECK(sale_dev_upload(ctx, dv, v, nk * 2));
            sale_attention_args g = a;
            g.q = dq, g.k = dk, g.v = dv, g.out = dout;
            g.mode = SALE_MODE_DENSE;
            g.thr = 0;
            CHECK(sale_attention(ctx, &g, NULL));
            CHECK(sale_dev_sync(ctx));
            CHECK(sale_dev_download(ctx, od, dout, nq * 2));
            if (si == 0)
                dense_ms = time_ms(&g, reps);
            for (int r = 0; r < nrows; r++) {
                sale_attention_args x = a;
                x.q = dq, x.k = dk, x.v = dv, x.out = dout, x.mask = dmask;
                if (r < nb) {
                    x.model = models[r];
                    x.layer = 0;
                } else {
                    x.tau_default = rows[r].tau;
                }
                double dph[HQ];
                sale_stats st;
                memset(&st, 0, sizeof st);
                st.density_per_head = dph;
                x.stats = &st;
                x.mode = SALE_MODE_FUSED;
                CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
                CHECK(sale_attention(ctx, &x, NULL));
                CHECK(sale_dev_download(ctx, os, dout, nq * 2));
                CHECK(sale_dev_download(ctx, mask, dmask, nmask * 4));
                double sum = 0, worst = 0, ef[HQ];
                head_errors(od, os, N, ef);
                if (per_head) { /* two-pass on the same inputs, each head beside fused's */
                    double dp2[HQ], et[HQ];
                    float tau[HQ];
                    sale_stats s2;
                    memset(&s2, 0, sizeof s2);
                    s2.density_per_head = dp2;
                    sale_attention_args x2 = x;
                    x2.stats = &s2, x2.mode = SALE_MODE_TWO_PASS;
                    CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
                    CHECK(sale_attention(ctx, &x2, NULL));
                    CHECK(sale_dev_download(ctx, os2, dout, nq * 2));
                    head_errors(od, os2, N, et);
                    if (r < nb)
                        CHECK(sale_thresholds_get(ctx, models[r], 0, tau, HQ, NULL));
                    for (int h = 0; h < HQ; h++)
                        printf("per-head N=%dK seed=%d row='%s' head=%d tau=%g density fused %.4f two-pass %.4f "
                               "rel-L1 fused %.4f two-pass %.4f\n",
                               N / 1024, 100 + si, rows[r].label, h, r < nb ? (double)tau[h] : (double)rows[r].tau,
                               dph[h], dp2[h], ef[h], et[h]);
                    fflush(stdout);
                }
                for (int h = 0; h < HQ; h++) {
                    double e = ef[h];
                    sum += e;
                    worst = fmax(worst, e);
                }
                rows[r].err_mean = fmax(rows[r].err_mean, sum / HQ);
                rows[r].err_worst = fmax(rows[r].err_worst, worst);
                rows[r].density += st.density / nseeds;
                for (int i = 0; i < nn; i++) {
                    size_t w = ((size_t)nd[i].head_q * nqb + (size_t)(nd[i].query / 64)) * nkw;
                    int J = nd[i].key / 32;
                    rows[r].kept += (mask[w + J / 32] >> (J % 32)) & 1;
                    rows[r].needles++;
                }
                if (si == 0) {
                    x.stats = NULL, x.mask = NULL;
                    rows[r].fused_ms = time_ms(&x, reps);
                    x.mode = SALE_MODE_TWO_PASS;
                    rows[r].two_pass_ms = time_ms(&x, reps);
                }
            }
        }
        for (int r = 0; r < nrows; r++) {
            char taus_s[64];
            if (r < nb)
                snprintf(taus_s, sizeof taus_s, "%.2g..%.2g, %d dense", (double)rows[r].tau_min,
                         (double)rows[r].tau_max, rows[r].dense_heads);
            else
                snprintf(taus_s, sizeof taus_s, "%g", (double)rows[r].tau);
            char fl[32] = "-", cu[32] = "-", fc[32] = "-", tc[32] = "-";
            if (flash > 0)
                snprintf(fl, sizeof fl, "%.1f", flash);
            if (cudnn > 0) {
                snprintf(cu, sizeof cu, "%.1f", cudnn);
                snprintf(fc, sizeof fc, "%.2fx", cudnn / rows[r].fused_ms);
                snprintf(tc, sizeof tc, "%.2fx", cudnn / rows[r].two_pass_ms);
            }
            printf("| %dK | %s | %s | %.3f | %.4f / %.4f | %ld/%ld | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", N / 1024,
                   rows[r].label, taus_s, rows[r].density, rows[r].err_mean, rows[r].err_worst, rows[r].kept,
                   rows[r].needles, rows[r].fused_ms, rows[r].two_pass_ms, dense_ms, fl, cu, fc, tc);
        }
        fflush(stdout);
        sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout);
        sale_dev_free(ctx, dmask);
        free(q), free(k), free(v), free(od), free(os), free(os2), free(nd), free(mask);
    }
    sale_destroy(ctx);
    return 0;
}
