/* bench_invariance.c — the units check of sale-algorithm.md on the GPU, at
 * long lengths, through the public API only (so the same source also builds
 * against an older libsale for a before/after table). Inputs: the structured
 * generator (B=1, 32/8 heads, D=128, bf16) with one constant vector (norm 4x
 * a typical key) added to every key, as a model's shared key direction would.
 * For "keys as given" and "the same keys minus their mean", the density and
 * the relative L1 error of fused SALE against our dense output on the same
 * keys. Shifting every key by one vector cannot change attention, so a
 * correct selection gives the same two columns.
 *   usage: bench_invariance [--lens 32768,65536] [--tau 0.004] [--mode fused|two_pass] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "sale.h"

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "bench_invariance: %s failed: %s: %s\n", #x, sale_status_name(s_), sale_last_error(ctx)); \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static sale_ctx *ctx;

/* out = attention over (q, k, v) in the given mode; returns the density */
static double run(sale_attention_args a, void *dk, const uint16_t *k, size_t nk, void *dout, uint16_t *out, size_t nq)
{
    sale_stats st = {0};
    CHECK(sale_dev_upload(ctx, dk, k, nk * 2));
    CHECK(sale_dev_fill8(ctx, dout, 0xFF, nq * 2));
    a.k = dk;
    a.out = dout;
    a.stats = &st;
    CHECK(sale_attention(ctx, &a, NULL));
    CHECK(sale_dev_sync(ctx));
    CHECK(sale_dev_download(ctx, out, dout, nq * 2));
    return st.density;
}

int main(int argc, char **argv)
{
    const char *lens = "32768,65536,131072";
    float tau = 0.004f;
    sale_mode mode = SALE_MODE_FUSED;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lens") && i + 1 < argc)
            lens = argv[++i];
        else if (!strcmp(argv[i], "--tau") && i + 1 < argc)
            tau = (float)bench_real_arg("bench_invariance", "--tau", argv[++i], 0, 1, 1);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "two_pass") && strcmp(argv[i], "fused")) {
                fprintf(stderr, "bench_invariance: --mode takes fused or two_pass, not '%s'\n", argv[i]);
                return 2;
            }
            mode = !strcmp(argv[i], "two_pass") ? SALE_MODE_TWO_PASS : SALE_MODE_FUSED;
        } else {
            fprintf(stderr, "usage: bench_invariance [--lens 32768,65536] [--tau 0.004] [--mode fused|two_pass]\n");
            return 2;
        }
    }
    double lv[16];
    const int nl = bench_list("bench_invariance", "--lens", lens, 1, 64, 1 << 22, 0, lv, 16);
    sale_options o = {0};
    if (sale_create(&ctx, &o) != SALE_OK) {
        fprintf(stderr, "bench_invariance: %s\n", sale_last_error(ctx));
        return 1;
    }
    printf("| N | keys + c: density / rel-L1 | same keys minus their mean: density / rel-L1 |\n|---|---|---|\n");
    for (int li = 0; li < nl; li++) {
        int N = (int)lv[li], B = 1, Hq = 32, Hkv = 8, D = 128;
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = B, a.heads_q = Hq, a.heads_kv = Hkv, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
        size_t nq = (size_t)B * Hq * N * D, nk = (size_t)B * Hkv * N * D;
        uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *kc = malloc(nk * 2);
        uint16_t *od = malloc(nq * 2), *os = malloc(nq * 2);
        if (!q || !k || !v || !kc || !od || !os) {
            fprintf(stderr, "bench_invariance: out of host memory at N=%d\n", N);
            return 1;
        }
        sale_gen_options g = {.seed = 1234, .structured = 1, .needles = 4};
        int nn = 0;
        CHECK(sale_generate_qkv(&a, &g, q, k, v, NULL, 0, &nn));
        /* one constant vector, norm 4x a typical key, added to every key */
        double kn = 0;
        for (size_t i = 0; i < nk; i++)
            kn += pow(sale_bf16_to_f32(k[i]), 2);
        kn = sqrt(kn / ((double)B * Hkv * N));
        float c[128];
        double cn = 0;
        for (int d = 0; d < D; d++) {
            c[d] = (float)(((d * 37) % 11) - 5);
            cn += (double)c[d] * c[d];
        }
        for (int d = 0; d < D; d++)
            c[d] *= (float)(4.0 * kn / sqrt(cn));
        for (size_t i = 0; i < nk; i++)
            k[i] = sale_f32_to_bf16(sale_bf16_to_f32(k[i]) + c[i % D]);
        /* the same keys minus their mean, per kv head */
        for (int h = 0; h < B * Hkv; h++) {
            uint16_t *K = k + (size_t)h * N * D, *KC = kc + (size_t)h * N * D;
            for (int d = 0; d < D; d++) {
                double s = 0;
                for (int j = 0; j < N; j++)
                    s += sale_bf16_to_f32(K[(size_t)j * D + d]);
                float m = (float)(s / N);
                for (int j = 0; j < N; j++)
                    KC[(size_t)j * D + d] = sale_f32_to_bf16(sale_bf16_to_f32(K[(size_t)j * D + d]) - m);
            }
        }
        void *dq, *dk, *dv, *dout;
        CHECK(sale_dev_alloc(ctx, nq * 2, &dq));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dk));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dv));
        CHECK(sale_dev_alloc(ctx, nq * 2, &dout));
        CHECK(sale_dev_upload(ctx, dq, q, nq * 2));
        CHECK(sale_dev_upload(ctx, dv, v, nk * 2));
        a.q = dq, a.v = dv, a.tau_default = tau;
        double dens[2], err[2];
        const uint16_t *keys[2] = {k, kc};
        for (int t = 0; t < 2; t++) {
            sale_attention_args d = a;
            d.mode = SALE_MODE_DENSE;
            run(d, dk, keys[t], nk, dout, od, nq);
            a.mode = mode;
            dens[t] = run(a, dk, keys[t], nk, dout, os, nq);
            err[t] = bench_rel_l1_bf16(os, od, nq);
        }
        printf("| %dK | %.3f / %.3f | %.3f / %.3f |\n", N / 1024, dens[0], err[0], dens[1], err[1]);
        fflush(stdout);
        sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout);
        free(q), free(k), free(v), free(kc), free(od), free(os);
    }
    sale_destroy(ctx);
    return 0;
}
