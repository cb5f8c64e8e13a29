/* select_bounds_drv.c — the CPU model of the wgmma select's bound decisions
 * (NOTES.md, sixth session). Scratch tool, not built by CMake:
 *   git apply bench/wgmma/select_bounds_model.patch   (instruments src/reference.c)
 *   cmake --build build --target sale
 *   gcc -O2 -Iinclude bench/wgmma/select_bounds_drv.c -Lbuild -lsale -Wl,-rpath,$PWD/build -o /tmp/sbd
 *   /tmp/sbd 16384 0.002 0.0005 0.0002 0.0001
 *   git checkout src/reference.c
 * For each tau: of the (16-row warp, 32-key block) pairs of every estimated
 * segment, the fraction kept, left undecided by the kernel's block bound,
 * resolved by the argmax column's c_j, by 8-column bounds, by per-thread
 * bounds, and by another warp of the tile keeping the block for sure.
 * B=1, Hq=8, Hkv=2, D=128, bf16, structured inputs, thr=fixed. */
#include "sale.h"
#include <stdio.h>
#include <stdlib.h>
extern long long ST[16];
int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s N tau [tau ...]\n", argv[0]);
        return 2;
    }
    int N = atoi(argv[1]);
    sale_ctx *ctx = NULL;
    if (sale_create(&ctx, NULL) != SALE_OK) {
        fprintf(stderr, "sale_create failed\n");
        return 1;
    }
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 8, a.heads_kv = 2, a.seq_len = N, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
    a.block_q = 64, a.block_k = 32, a.block_seg = 128, a.est_bits = 8, a.thr = SALE_THR_FIXED;
    size_t nq = (size_t)8 * N * 128, nk = (size_t)2 * N * 128;
    void *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o = malloc(nq * 2);
    if (!q || !k || !v || !o) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    sale_gen_options g = {.seed = 1234 + (uint64_t)N, .structured = 1, .needles = 1};
    sale_needle nd[64];
    int nn = 0;
    if (sale_generate_qkv(&a, &g, q, k, v, nd, 64, &nn) != SALE_OK) {
        fprintf(stderr, "generate: %s\n", sale_last_error(ctx));
        return 1;
    }
    a.q = q, a.k = k, a.v = v, a.out = o;
    for (int t = 2; t < argc; t++) {
        for (int i = 0; i < 16; i++)
            ST[i] = 0;
        a.tau_default = (float)atof(argv[t]);
        if (sale_reference_attention(ctx, &a) != SALE_OK) {
            fprintf(stderr, "reference: %s\n", sale_last_error(ctx));
            return 1;
        }
        double W = (double)ST[0];
        printf("tau %g: warp-blocks %lld kept %.3f | undecided %.3f (kept %.3f; argmax c_j resolves %.3f) | "
               "8-column bounds leave %.3f | per-thread %.3f | argmax + 8-column %.3f | another warp keeps %.3f\n",
               a.tau_default, ST[0], ST[1] / W, ST[2] / W, ST[3] / W, ST[4] / W, ST[5] / W, ST[7] / W, ST[8] / W,
               ST[9] / W);
    }
    sale_destroy(ctx);
    return 0;
}
