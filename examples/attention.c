/* attention.c — the README's tour in one program: get a ready-to-launch
 * kernel for the current GPU, then run the whole SALE pipeline on device
 * pointers and check it against the CPU reference.
 * usage: example_attention [N [fused|two-pass|dense|plain [run|fixed [WARPS]]]]
 *   N defaults to 4096; naming a mode runs it at any N (no dense fallback
 *   for short inputs), e.g. under compute-sanitizer on a small shape; WARPS
 *   asks for a tile (args.tile_warps, e.g. 5: the rows attend kernel). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sale.h"

#define TRY(x)                                                                                                        \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "%s: %s\n", #x, sale_last_error(ctx));                                                   \
            return 1;                                                                                                 \
        }                                                                                                             \
    } while (0)

int main(int argc, char **argv)
{
    int N = argc > 1 ? atoi(argv[1]) : 4096, Hq = 8, Hkv = 2, D = 128;
    sale_ctx *ctx;
    TRY(sale_create(&ctx, NULL)); /* cache at $SALE_CACHE_DIR or ~/.cache/sale */

    /* 1. one kernel, compiled (or served from the cache) for this GPU */
    sale_key key;
    char err[256];
    if (sale_key_parse("fused:d=128,dt=bf16,arch=current", &key, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    sale_kernel *k;
    struct timespec t0, t1;
    void *probe; /* bring the driver and context up first: they are not the cache's cost */
    TRY(sale_dev_alloc(ctx, 16, &probe));
    TRY(sale_dev_free(ctx, probe));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    TRY(sale_get_kernel(ctx, &key, &k));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    sale_kernel_info info;
    sale_kernel_get_info(k, &info);
    printf("kernel %s\n  %d registers, %d B smem, %zu B cubin, %s, sale_get_kernel took %.2f ms\n", info.key,
           info.registers, info.smem_static + info.smem_dynamic, info.cubin_bytes,
           info.from_cache ? "from the cache" : "compiled now",
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);

    /* 2. the whole pipeline on device pointers */
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = Hq, a.heads_kv = Hkv, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
    if (argc > 2) {
        static const char *const modes[] = {"fused", "two-pass", "dense", "plain"}; /* = sale_mode */
        int m = 0;
        while (m < 4 && strcmp(argv[2], modes[m]))
            m++;
        if (m == 4) {
            fprintf(stderr, "mode: '%s' is not fused, two-pass, dense or plain\n", argv[2]);
            return 2;
        }
        a.mode = (sale_mode)m;
        a.dense_below = -1;
    }
    if (argc > 3) { /* the threshold variant (sale.h: SALE_THR_RUN, SALE_THR_FIXED) */
        if (strcmp(argv[3], "run") && strcmp(argv[3], "fixed")) {
            fprintf(stderr, "thr: '%s' is not run or fixed\n", argv[3]);
            return 2;
        }
        a.thr = strcmp(argv[3], "fixed") ? SALE_THR_RUN : SALE_THR_FIXED;
    }
    if (argc > 4) { /* a tile (sale_attention_args.tile_warps) */
        char *e;
        long w = strtol(argv[4], &e, 10);
        if (e == argv[4] || *e || w < 1 || w > 32) {
            fprintf(stderr, "warps: '%s' is not a whole number of warps from 1 to 32\n", argv[4]);
            return 2;
        }
        a.tile_warps = (int)w;
    }
    size_t nq = (size_t)Hq * N * D, nk = (size_t)Hkv * N * D;
    uint16_t *q = malloc(nq * 2), *kk = malloc(nk * 2), *v = malloc(nk * 2), *o = malloc(nq * 2), *r = malloc(nq * 2);
    sale_gen_options g = {.seed = 42, .structured = 1, .needles = 1};
    int nn;
    TRY(sale_generate_qkv(&a, &g, q, kk, v, NULL, 0, &nn));
    void *dq, *dk, *dv, *dout;
    TRY(sale_dev_alloc(ctx, nq * 2, &dq));
    TRY(sale_dev_alloc(ctx, nk * 2, &dk));
    TRY(sale_dev_alloc(ctx, nk * 2, &dv));
    TRY(sale_dev_alloc(ctx, nq * 2, &dout));
    TRY(sale_dev_upload(ctx, dq, q, nq * 2));
    TRY(sale_dev_upload(ctx, dk, kk, nk * 2));
    TRY(sale_dev_upload(ctx, dv, v, nk * 2));
    sale_stats st = {0};
    sale_attention_args ga = a;
    ga.q = dq, ga.k = dk, ga.v = dv, ga.out = dout, ga.stats = &st;
    TRY(sale_attention(ctx, &ga, NULL));
    TRY(sale_dev_download(ctx, o, dout, nq * 2));

    /* 3. the CPU reference of the same algorithm (minutes past 32K on one core: skipped there) */
    double rel = -1;
    if (N <= 32768) {
        sale_attention_args ra = a;
        ra.q = q, ra.k = kk, ra.v = v, ra.out = r;
        TRY(sale_reference_attention(ctx, &ra));
        double num = 0, den = 0;
        for (size_t i = 0; i < nq; i++) {
            num += fabs(sale_bf16_to_f32(o[i]) - sale_bf16_to_f32(r[i]));
            den += fabs(sale_bf16_to_f32(r[i]));
        }
        rel = num / den;
        printf("SALE %s N=%d Hq=%d Hkv=%d: density %.3f, relative L1 vs CPU reference %.2e\n",
               argc > 2 ? argv[2] : "(default mode)", N, Hq, Hkv, st.density, rel);
    } else
        printf("SALE %s N=%d Hq=%d Hkv=%d: density %.3f (the CPU reference is skipped above 32K)\n",
               argc > 2 ? argv[2] : "(default mode)", N, Hq, Hkv, st.density);
    sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout);
    free(q), free(kk), free(v), free(o), free(r);
    sale_destroy(ctx);
    return rel < 2e-2 ? 0 : 1;
}
