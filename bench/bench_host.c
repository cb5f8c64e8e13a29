/* bench_host.c — host overhead of the serving path (issue 9): per-call host
 * time of a warm sale_get_kernel, and host and GPU time of sale_attention
 * (fused, two-pass, dense) at 2K and 16K tokens, B=1, 32/8 heads, D=128,
 * bf16, eager and replayed from a captured CUDA graph; one markdown table.
 * `--dense-below` instead times the three modes at 1K..16K and prints where
 * SALE stops paying (the number behind the per-arch dense_below default).
 *   usage: bench_host [--lens 2048,16384] [--iters 200] [--dense-below] [--anchors sdpa_host.txt] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int BURST = 16; /* calls timed between two synchronizations (--burst) */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#include "cli_num.h"
#include "internal.h"
#include "sale_abi.h"
#include "tune.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#define CK(x)                                                                                                         \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "bench_host: %s: %s\n", #x, sale_last_error(ctx));                                        \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)
#define CU(x)                                                                                                         \
    do {                                                                                                              \
        CUresult r_ = (x);                                                                                            \
        if (r_ != CUDA_SUCCESS) {                                                                                     \
            fprintf(stderr, "bench_host: %s: %s\n", #x, drv_errstr(r_));                                              \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static sale_ctx *ctx;

/* SDPA anchors from bench/sdpa_host.py: lines "N host_us gpu_us". */
static int anchor(const char *path, int n, double *host, double *gpu)
{
    if (!path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench_host: --anchors %s: cannot read it\n", path);
        exit(2);
    }
    int nn, found = 0;
    double h, g;
    while (fscanf(f, "%d %lf %lf", &nn, &h, &g) == 3)
        if (nn == n) {
            *host = h;
            *gpu = g;
            found = 1;
        }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    int lens[16] = {2048, 16384}, nl = 2, iters = 200, dense_below = 0;
    const char *anchors = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc) {
            nl = 0;
            char *list = argv[++i];
            for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
                long v;
                if (nl == 16 || !cli_long(t, 64, 1 << 22, &v)) {
                    fprintf(stderr, "bench_host: --lens takes up to 16 lengths in [64, %d], not '%s'\n", 1 << 22, t);
                    return 2;
                }
                lens[nl++] = (int)v;
            }
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            long v;
            if (!cli_long(argv[++i], 1, 10000000, &v)) {
                fprintf(stderr, "bench_host: --iters takes an integer in [1, 10000000], not '%s'\n", argv[i]);
                return 2;
            }
            iters = (int)v;
        } else if (!strcmp(argv[i], "--dense-below")) {
            dense_below = 1;
        } else if (!strcmp(argv[i], "--anchors") && i + 1 < argc) {
            anchors = argv[++i];
        } else if (!strcmp(argv[i], "--burst") && i + 1 < argc) {
            long v;
            if (!cli_long(argv[++i], 1, 100000, &v)) {
                fprintf(stderr, "bench_host: --burst takes an integer in [1, 100000], not '%s'\n", argv[i]);
                return 2;
            }
            BURST = (int)v;
        } else {
            fprintf(stderr, "usage: bench_host [--lens 2048,16384] [--iters N] [--burst N] [--dense-below] [--anchors FILE]\n");
            return 2;
        }
    }
    CK(sale_create(&ctx, NULL));
    int ndev = 0;
    if (sale_device_count(ctx, &ndev) || ndev < 1) {
        fprintf(stderr, "bench_host: no GPU: %s\n", sale_last_error(ctx));
        return 1;
    }
    sale_device_info di;
    CK(sale_device_info_get(ctx, 0, &di));
    const drv_api *d = drv_get(NULL);

    if (dense_below) {
        static const int dl[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
        enum { NDL = sizeof dl / sizeof dl[0] };
        double ms[NDL][3];
        tune_shape sh = {1, 32, 8, 128, SALE_DTYPE_BF16};
        if (tune_mode_times(ctx, &sh, dl, NDL, 20, ms)) {
            fprintf(stderr, "bench_host: %s\n", sale_last_error(ctx));
            return 1;
        }
        printf("## where SALE stops paying on %s (sm_%d), B=1 Hq=32 Hkv=8 D=128 bf16, whole sale_attention, "
               "median of 20, L2 flushed\n\n| N | fused ms | two-pass ms | dense ms | SALE pays |\n|---|---|---|---|---|\n",
               di.name, di.arch);
        for (int i = 0; i < NDL; i++) {
            double best = ms[i][0] < ms[i][1] ? ms[i][0] : ms[i][1];
            printf("| %d | %.4f | %.4f | %.4f | %s |\n", dl[i], ms[i][0], ms[i][1], ms[i][2],
                   best < ms[i][2] ? "yes" : "no");
        }
        printf("\ndense_below from this run: %d (built-in default for sm_%d: %d; store it for this device with "
               "`sale tune --dense-below`)\n",
               tune_pick_dense_below(dl, NDL, ms), di.arch, win_dense_below_default(key_code_arch(di.arch)));
        sale_destroy(ctx);
        return 0;
    }

    printf("## host overhead on %s (sm_%d, driver %d), B=1 Hq=32 Hkv=8 D=128 bf16, %d calls each\n\n", di.name,
           di.arch, di.driver_version, iters);
    printf("| what | N | host us/call (mean; median, p90 of single calls) | GPU us/call | SQLite calls |\n|---|---|---|---|---|\n");

    /* warm sale_get_kernel */
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    sale_kernel *kern;
    CK(sale_get_kernel(ctx, &k, &kern));
    unsigned long q0 = db_op_count(ctx->db);
    int reps = 1000000;
    double t0 = now_us();
    for (int i = 0; i < reps; i++)
        CK(sale_get_kernel(ctx, &k, &kern));
    printf("| sale_get_kernel (warm) | - | %.3f | - | %lu |\n", (now_us() - t0) / reps, db_op_count(ctx->db) - q0);
    fflush(stdout);

    CUstream s;
    CU(d->StreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUevent e0, e1;
    CU(d->EventCreate(&e0, CU_EVENT_DEFAULT));
    CU(d->EventCreate(&e1, CU_EVENT_DEFAULT));
    for (int li = 0; li < nl; li++) {
        int N = lens[li];
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = 1, a.heads_q = 32, a.heads_kv = 8, a.seq_len = N, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
        a.dense_below = -1;
        size_t nq = (size_t)32 * N * 128, nk = (size_t)8 * N * 128;
        uint16_t *hq = malloc(nq * 2), *hk = malloc(nk * 2), *hv = malloc(nk * 2);
        sale_gen_options g = {.seed = 7, .structured = 1};
        CK(sale_generate_qkv(&a, &g, hq, hk, hv, NULL, 0, NULL));
        void *dq, *dk, *dv, *dout;
        CK(sale_dev_alloc(ctx, nq * 2, &dq));
        CK(sale_dev_alloc(ctx, nk * 2, &dk));
        CK(sale_dev_alloc(ctx, nk * 2, &dv));
        CK(sale_dev_alloc(ctx, nq * 2, &dout));
        CK(sale_dev_upload(ctx, dq, hq, nq * 2));
        CK(sale_dev_upload(ctx, dk, hk, nk * 2));
        CK(sale_dev_upload(ctx, dv, hv, nk * 2));
        free(hq), free(hk), free(hv);
        a.q = dq, a.k = dk, a.v = dv, a.out = dout;
        if (li == 0) {
            /* the floor under every sale_attention: one launch of a one-block
             * kernel (quantize's lse entry on one row) with the full parameter
             * block, timed like the calls below */
            sale_key kq = sale_key_default(SALE_FAMILY_QUANTIZE);
            sale_kernel *kqn;
            CK(sale_get_kernel(ctx, &kq, &kqn));
            void *dm, *dl;
            CK(sale_dev_alloc(ctx, 128 * 4, &dm));
            CK(sale_dev_alloc(ctx, 64 * 4, &dl));
            CK(sale_dev_fill8(ctx, dm, 0, 128 * 4));
            sale_params lp;
            memset(&lp, 0, sizeof lp);
            lp.q = (uintptr_t)dq, lp.kmean = (uintptr_t)dm, lp.lse = (uintptr_t)dl;
            lp.q_sn = 128, lp.q_sh = (int64_t)N * 128, lp.q_sb = (int64_t)32 * N * 128;
            lp.B = 1, lp.Hq = 1, lp.Hkv = 1, lp.N = 1, lp.group = 1, lp.scale = 0.088f;
            double lh = 0, *one = malloc(sizeof(double) * (size_t)iters);
            for (int i = 0; i < iters; i++) {
                if (i % BURST == 0)
                    CU(d->StreamSynchronize(s));
                double h0 = now_us();
                CK(sale_kernel_launch(ctx, kqn, "sale_quantize_lse_kernel", 1, 1, 1, 256, 0, &lp, sizeof lp, s));
                one[i] = now_us() - h0;
                lh += one[i];
            }
            CU(d->StreamSynchronize(s));
            qsort(one, (size_t)iters, sizeof one[0], cmp_d);
            printf("| one kernel launch (1 block, %zu-byte parameter block) | - | %.2f; %.2f, %.2f | - | - |\n",
                   sizeof lp, lh / iters, one[iters / 2], one[iters * 9 / 10]);
            fflush(stdout);
            free(one);
            sale_dev_free(ctx, dm);
            sale_dev_free(ctx, dl);
        }
        static const sale_mode modes[3] = {SALE_MODE_FUSED, SALE_MODE_TWO_PASS, SALE_MODE_DENSE};
        static const char *names[3] = {"fused", "two-pass", "dense"};
        for (int m = 0; m < 3; m++) {
            a.mode = modes[m];
            for (int w = 0; w < 3; w++) /* warm: kernels loaded, workspace grown */
                CK(sale_attention(ctx, &a, s));
            CU(d->StreamSynchronize(s));
            /* eager: host time of the calls alone (the stream keeps queueing),
             * GPU time between events around all of them */
            q0 = db_op_count(ctx->db);
            double host = 0;
            CU(d->EventRecord(e0, s));
            for (int i = 0; i < iters; i++)
                CK(sale_attention(ctx, &a, s));
            CU(d->EventRecord(e1, s));
            CU(d->EventSynchronize(e1));
            float gms = 0;
            CU(d->EventElapsedTime(&gms, e0, e1));
            /* host time per call in bursts of BURST calls on an idle stream:
             * back to back, a few hundred calls fill the driver's launch
             * queue and every further launch waits for the GPU, which is
             * GPU time, not the cost of the call */
            int ncall = ((iters + BURST - 1) / BURST) * BURST, nc = 0;
            double *one = malloc(sizeof(double) * (size_t)ncall);
            for (int i = 0; i < iters; i += BURST) {
                CU(d->StreamSynchronize(s));
                for (int j = 0; j < BURST; j++) {
                    double h0 = now_us();
                    CK(sale_attention(ctx, &a, s));
                    one[nc] = now_us() - h0;
                    host += one[nc++];
                }
            }
            host = host * iters / (double)ncall;
            qsort(one, (size_t)nc, sizeof one[0], cmp_d);
            double med = one[nc / 2], p90 = one[nc * 9 / 10];
            free(one);
            CU(d->StreamSynchronize(s));
            printf("| sale_attention %s eager | %d | %.2f; %.2f, %.2f | %.1f | %lu |\n", names[m], N, host / iters, med, p90,
                   1000.0 * gms / iters, db_op_count(ctx->db) - q0);
            /* graph: capture one call, replay it */
            CUgraph gr;
            CUgraphExec ge;
            CU(d->StreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
            sale_status st = sale_attention(ctx, &a, s);
            CU(d->StreamEndCapture(s, &gr));
            CK(st);
            CU(d->GraphInstantiate(&ge, gr, 0));
            CU(d->GraphLaunch(ge, s));
            CU(d->StreamSynchronize(s));
            host = 0;
            CU(d->EventRecord(e0, s));
            for (int i = 0; i < iters; i++)
                CU(d->GraphLaunch(ge, s));
            CU(d->EventRecord(e1, s));
            CU(d->EventSynchronize(e1));
            CU(d->EventElapsedTime(&gms, e0, e1));
            for (int i = 0; i < iters; i += BURST) {
                CU(d->StreamSynchronize(s));
                for (int j = 0; j < BURST; j++) {
                    double h0 = now_us();
                    CU(d->GraphLaunch(ge, s));
                    host += now_us() - h0;
                }
            }
            host = host * iters / (double)(((iters + BURST - 1) / BURST) * BURST);
            CU(d->StreamSynchronize(s));
            printf("| sale_attention %s graph replay | %d | %.2f | %.1f | 0 |\n", names[m], N, host / iters,
                   1000.0 * gms / iters);
            fflush(stdout);
            CU(d->GraphExecDestroy(ge));
            CU(d->GraphDestroy(gr));
        }
        double sh, sg;
        if (anchor(anchors, N, &sh, &sg))
            printf("| torch SDPA (Python, bench/sdpa_host.py) | %d | %.2f | %.1f | - |\n", N, sh, sg);
        sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout);
    }
    printf("\ngoals (issue 9): warm sale_get_kernel <= 1 us; sale_attention host <= 20 us per call at 2K and 16K\n");
    d->EventDestroy(e0), d->EventDestroy(e1), d->StreamDestroy(s);
    sale_destroy(ctx);
    return 0;
}
