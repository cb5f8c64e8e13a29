/* select_balance_drv.c — the CPU model of the wgmma select's bound decisions
 * (NOTES.md, sixth session) and of its balance across the four m64 tiles of a
 * CTA (ninth session). Scratch tool, not built by CMake:
 *   git apply bench/wgmma/select_balance_model.patch   (instruments src/reference.c)
 *   cmake --build build --target sale
 *   gcc -O2 -Iinclude bench/wgmma/select_balance_drv.c -Lbuild -lsale -Wl,-rpath,$PWD/build -o /tmp/sbd2
 *   /tmp/sbd2 8192 0.0015 0.0007 0.0003
 *   git checkout src/reference.c
 * For each tau: of the (16-row warp, 32-key block) pairs of every estimated
 * segment, the fraction kept, left undecided by the kernel's block bound,
 * resolved by the argmax column's c_j, by 8-column bounds, by per-thread
 * bounds, and by another warp of the tile keeping the block for sure. And,
 * with a tile's work taken as 176 instructions a segment (the common path)
 * plus 92 for every block left open in the segment by the warp with the most
 * (the warpgroup waits for it), and a CTA lasting as long as its slowest
 * tile: the open blocks' share of the work, and the CTA time over the mean
 * tile time for the kernel's grouping (the 4 heads of a GQA group at one
 * query block), for 1 head x 4 query blocks, and with the tiles rotated
 * among the warpgroups every segment (est_rotate.patch).
 * B=1, Hq=8, Hkv=2, D=128, bf16, structured inputs, thr=fixed. */
#include "sale.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern long long ST[16];
extern double WT[64][4096];
extern int NS[64][4096];
extern unsigned char SEGW[8][256][128];
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
        double a_tau = a.tau_default;
        if (sale_reference_attention(ctx, &a) != SALE_OK) {
            fprintf(stderr, "reference: %s\n", sale_last_error(ctx));
            return 1;
        }
        {
            int nqb = (N + 63) / 64;
            double a = 176.0, bb = 92.0; /* instructions: common path a warp-segment, an open block's test */
            double sumT = 0, A = 0, B = 0, Au = 0, Bu = 0, sumU = 0;
            for (int h = 0; h < 8; h++) for (int q = 0; q < nqb; q++) { sumT += a * NS[h][q] + bb * WT[h][q]; sumU += bb * WT[h][q]; }
            for (int g = 0; g < 2; g++) for (int q = 0; q < nqb; q++) {
                double mx = 0, mu = 0;
                for (int h = 4 * g; h < 4 * g + 4; h++) { double t = a * NS[h][q] + bb * WT[h][q]; if (t > mx) mx = t; if (bb * WT[h][q] > mu) mu = bb * WT[h][q]; }
                A += 4 * mx; Au += 4 * mu;
            }
            for (int h = 0; h < 8; h++) for (int c = 0; c < nqb; c += 4) {
                double mx = 0, mu = 0;
                for (int q = c; q < c + 4 && q < nqb; q++) { double t = a * NS[h][q] + bb * WT[h][q]; if (t > mx) mx = t; if (bb * WT[h][q] > mu) mu = bb * WT[h][q]; }
                B += 4 * mx; Bu += 4 * mu;
            }
            double R = 0; /* rotated: warpgroup w takes tile (w + s) mod 4 at segment s; a CTA lasts as long as its slowest warpgroup */
            for (int g = 0; g < 2; g++) for (int q = 0; q < nqb; q++) {
                double mx = 0;
                for (int w = 0; w < 4; w++) {
                    double tw = 0;
                    for (int sg = 0; sg < NS[4 * g][q] && sg < 128; sg++) tw += a + bb * SEGW[4 * g + (w + sg) % 4][q][sg];
                    if (tw > mx) mx = tw;
                }
                R += 4 * mx;
            }
            printf("tau %g: rotated tiles: CTA time / mean %.3f\n", a_tau, R / sumT);
            printf("tau %g: open share of work %.3f | CTA time / mean: 4 heads x 1 qb %.3f, 1 head x 4 qb %.3f | open part alone: %.3f, %.3f\n",
                   a_tau, sumU / sumT, A / sumT, B / sumT, Au / sumU, Bu / sumU);
            for (int h = 0; h < 64; h++) for (int q = 0; q < 4096; q++) { WT[h][q] = 0; NS[h][q] = 0; }
            memset(SEGW, 0, sizeof SEGW);
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
