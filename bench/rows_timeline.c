/* rows_timeline.c — the rows attend kernel's consumer timeline (a measuring
 * build only). With SALE_WR_TIMELINE 1 in templates/wgmma_rows.cuh, lane 0
 * of the kernel's consumer warp 0 writes clock64 stamps of every row it
 * computes into the row's 256 bytes of the call's lse (the layout is in that
 * header). This program runs two-pass thr=fixed SALE on the Llama-3.1-8B
 * shape and the structured inputs of bench_attention, at the given lengths
 * and taus, with lse requested, and writes the stamps of the last of a few
 * calls to DIR/timeline_N_TAU.bin (the lse buffer as it came back: B = 1, Hq
 * heads, N floats each) with one line of what ran on stdout;
 * bench/wgmma/rows_timeline.py turns a file into per-phase cycle counts.
 *
 * usage: rows_timeline --out DIR [--len N]... [--tau T]... [--calls C]
 *   defaults: --len 65536, --tau 0.00653 (d ~ 0.01 at 64K), --calls 3.
 * A build without the timeline leaves lse holding log-sum-exps: the program
 * says so and exits 2 (no file written). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_num.h"
#include "sale.h"

#define CHECK(x)                                                                                                      \
    do {                                                                                                              \
        sale_status s_ = (x);                                                                                         \
        if (s_) {                                                                                                     \
            fprintf(stderr, "rows_timeline: %s failed: %s: %s\n", #x, sale_status_name(s_), sale_last_error(ctx));    \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static sale_ctx *ctx;

static void usage(FILE *f)
{
    fprintf(f, "usage: rows_timeline --out DIR [--len N]... [--tau T]... [--calls C]\n"
               "  the rows attend kernel's consumer stamps (a build with SALE_WR_TIMELINE 1 in\n"
               "  templates/wgmma_rows.cuh) into DIR/timeline_N_TAU.bin; defaults: --len 65536,\n"
               "  --tau 0.00653, --calls 3 (the last call's stamps are kept)\n");
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    int lens[8], nlens = 0, calls = 3;
    float taus[8];
    int ntaus = 0;
    for (int i = 1; i < argc; i++) {
        const int more = i + 1 < argc;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out") && more) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--len") && more && nlens < 8) {
            long v;
            if (!cli_long(argv[++i], 1, 1 << 22, &v)) {
                fprintf(stderr, "rows_timeline: --len takes an integer, not '%s'\n", argv[i]);
                return 2;
            }
            lens[nlens++] = (int)v;
        } else if (!strcmp(argv[i], "--tau") && more && ntaus < 8) {
            double v;
            if (!cli_double(argv[++i], &v) || !(v >= 0 && v < 1)) {
                fprintf(stderr, "rows_timeline: --tau takes a number in [0, 1), not '%s'\n", argv[i]);
                return 2;
            }
            taus[ntaus++] = (float)v;
        } else if (!strcmp(argv[i], "--calls") && more) {
            long v;
            if (!cli_long(argv[++i], 1, 1000, &v)) {
                fprintf(stderr, "rows_timeline: --calls takes an integer in [1, 1000], not '%s'\n", argv[i]);
                return 2;
            }
            calls = (int)v;
        } else {
            fprintf(stderr, "rows_timeline: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!out) {
        usage(stderr);
        return 2;
    }
    if (!nlens) lens[nlens++] = 65536;
    if (!ntaus) taus[ntaus++] = 0.00653f;
    for (int i = 0; i < nlens; i++)
        if (lens[i] < 1024 || lens[i] % 64) {
            fprintf(stderr, "rows_timeline: --len %d: a multiple of 64, at least 1024\n", lens[i]);
            return 2;
        }
    if (calls < 1) calls = 1;
    sale_options o = {0};
    CHECK(sale_create(&ctx, &o));
    const int Hq = 32, Hkv = 8, D = 128;
    for (int li = 0; li < nlens; li++) {
        const int N = lens[li];
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = 1, a.heads_q = Hq, a.heads_kv = Hkv, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
        size_t nq = (size_t)Hq * N * D, nk = (size_t)Hkv * N * D, nl = (size_t)Hq * N;
        uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2);
        float *lse = malloc(nl * 4);
        if (!q || !k || !v || !lse) {
            fprintf(stderr, "rows_timeline: out of host memory\n");
            return 1;
        }
        sale_gen_options g = {.seed = 1234 + (uint64_t)N, .structured = 1, .needles = 1};
        sale_needle nd[64];
        int nn = 0;
        CHECK(sale_generate_qkv(&a, &g, q, k, v, nd, 64, &nn));
        void *dq, *dk, *dv, *dout, *dlse;
        CHECK(sale_dev_alloc(ctx, nq * 2, &dq));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dk));
        CHECK(sale_dev_alloc(ctx, nk * 2, &dv));
        CHECK(sale_dev_alloc(ctx, nq * 2, &dout));
        CHECK(sale_dev_alloc(ctx, nl * 4, &dlse));
        CHECK(sale_dev_upload(ctx, dq, q, nq * 2));
        CHECK(sale_dev_upload(ctx, dk, k, nk * 2));
        CHECK(sale_dev_upload(ctx, dv, v, nk * 2));
        a.q = dq, a.k = dk, a.v = dv, a.out = dout, a.lse = dlse;
        a.mode = SALE_MODE_TWO_PASS;
        a.thr = SALE_THR_FIXED;
        for (int ti = 0; ti < ntaus; ti++) {
            sale_stats st = {0};
            float ph[3] = {0, 0, 0};
            a.tau_default = taus[ti];
            CHECK(sale_dev_fill8(ctx, dlse, 0, nl * 4));
            for (int c = 0; c < calls; c++) {
                a.stats = c == calls - 1 ? &st : NULL;
                a.phase_ms = c == calls - 1 ? ph : NULL;
                CHECK(sale_attention(ctx, &a, NULL));
                CHECK(sale_dev_sync(ctx));
            }
            CHECK(sale_dev_download(ctx, lse, dlse, nl * 4));
            /* rows with a record: word 0's magic (see wgmma_rows.cuh) */
            const uint64_t *rec = (const uint64_t *)lse;
            long long rows = 0;
            for (size_t r = 0; r < nl / 64; r++)
                rows += (rec[r * 32] >> 48) == 0x5A1E;
            if (!rows) {
                fprintf(stderr, "rows_timeline: N=%d tau=%g: no stamps in lse (a build without SALE_WR_TIMELINE, or "
                                "the call did not run the rows kernel)\n",
                        N, (double)taus[ti]);
                return 2;
            }
            char path[1024];
            snprintf(path, sizeof path, "%s/timeline_%d_%g.bin", out, N, (double)taus[ti]);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(lse, 4, nl, f) != nl || fclose(f)) {
                fprintf(stderr, "rows_timeline: writing %s: %s\n", path, strerror(errno));
                return 1;
            }
            printf("N=%d tau=%g density %.4f attend %.3f ms (quantize %.3f, select %.3f): %lld rows stamped -> %s\n",
                   N, (double)taus[ti], st.density, ph[2], ph[0], ph[1], rows, path);
        }
        sale_dev_free(ctx, dq), sale_dev_free(ctx, dk), sale_dev_free(ctx, dv), sale_dev_free(ctx, dout),
            sale_dev_free(ctx, dlse);
        free(q), free(k), free(v), free(lse);
    }
    sale_destroy(ctx);
    return 0;
}
