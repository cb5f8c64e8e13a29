/* test_order.cpp — the sm_90a select's CTA order (templates/wgmma_order.cuh,
 * SeCta::decode), the kernel's own code compiled on the host, against the
 * grid the host launches (sale_layout_plan, templates/sale_layout.h): for
 * batches, KV heads and GQA groups of every kind (group 1, 2, 3, 4, 6, 8:
 * the three CTA shapes g4 = 1, 2, 4) and lengths around every chunk and
 * block boundary, every (batch, head, query block) must be one CTA's tile
 * exactly once — a tile estimated twice doubles its kept count, a tile
 * never estimated keeps only its local blocks, and neither shows in a
 * density. Also: a CTA's four tiles share one KV head (they read one code
 * stream), and the chunks of the order go heaviest (last query blocks) first. */
#include <criterion/criterion.h>

#include <cstdint>
#include <vector>

#define SALE_HOST_TEST 1
#define SALE_DEV
#include "sale_abi.h"
#include "sale_layout.h"
#include "wgmma_order.cuh"

static void check_shape(int B, int Hkv, int group, int N)
{
    const int Hq = Hkv * group, nqb = (N + 63) / 64;
    sale_layout_cfg c = {SALE_LF_SELECT, 128, 64, 32, 128, 128, 1, 8, 20, 4, 901, SALE_LT_FIXED};
    cr_assert(sale_layout_wgmma_select(&c), "the cfg is the wgmma select's");
    sale_launch L[4] = {};
    cr_assert_eq(sale_layout_plan(&c, B, Hq, Hkv, N, L), 2);
    const unsigned n = L[1].grid[0];
    sale_params p = {};
    p.B = B, p.Hq = Hq, p.Hkv = Hkv, p.N = N, p.nqb = nqb, p.group = group;
    std::vector<int> hits((size_t)B * Hq * nqb, 0);
    for (unsigned lin = 0; lin < n; lin++) {
        SeCta cta;
        cta.decode(p, (int)lin);
        cr_assert(cta.b >= 0 && cta.b < B && cta.kvh >= 0 && cta.kvh < Hkv, "B=%d Hkv=%d group=%d N=%d lin=%u: b %d kvh %d",
                  B, Hkv, group, N, lin, cta.b, cta.kvh);
        cr_assert(cta.qb0 >= 0 && cta.qb0 < nqb, "lin %u: first query block %d of %d", lin, cta.qb0, nqb);
        int tiles = 0;
        for (int t = 0; t < 4; t++) {
            const int qb = cta.qb0 + t / cta.g4, h = cta.hbase + t % cta.g4;
            cr_assert(h >= 0 && h < Hq, "lin %u tile %d: head %d of %d", lin, t, h, Hq);
            cr_assert_eq(h / group, cta.kvh, "lin %u tile %d: head %d is not of KV head %d", lin, t, h, cta.kvh);
            if (qb >= nqb) continue; /* absent past the last query block */
            hits[((size_t)cta.b * Hq + h) * nqb + qb]++;
            tiles++;
        }
        cr_assert_gt(tiles, 0, "lin %u: a CTA with no tile", lin);
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
            for (int q = 0; q < nqb; q++)
                cr_assert_eq(hits[((size_t)b * Hq + h) * nqb + q], 1,
                             "B=%d Hkv=%d group=%d N=%d: (b %d, head %d, query block %d) is a tile of %d CTAs", B, Hkv,
                             group, N, b, h, q, hits[((size_t)b * Hq + h) * nqb + q]);
}

Test(order, every_tile_of_every_shape_exactly_once)
{
    const int groups[] = {1, 2, 3, 4, 6, 8};
    const int lens[] = {1, 63, 64, 65, 255, 256, 257, 2047, 2048, 4097, 8192, 8191 + 64 * 32, 64 * 128 * 4 + 1,
                        65536, 131072 + 64};
    for (int B = 1; B <= 3; B++)
        for (int Hkv : {1, 2, 8})
            for (int g : groups)
                for (int N : lens) {
                    if ((long long)B * Hkv * g * N > (long long)3 * 8 * 8 * 131072) continue;
                    check_shape(B, Hkv, g, N);
                }
}

/* the order is chunked by query chunk: inside each chunk of SE_QCHUNK query
 * chunks every (batch, KV head, head group) comes once per query chunk, and
 * the chunks go heaviest (last query blocks) first */
Test(order, chunks_go_heaviest_first)
{
    const int B = 2, Hkv = 4, group = 4, N = 64 * 100; /* 100 query chunks: 3 full chunks and one of 4 */
    sale_params p = {};
    p.B = B, p.Hq = Hkv * group, p.Hkv = Hkv, p.N = N, p.nqb = (N + 63) / 64, p.group = group;
    const int per = B * Hkv; /* g4 = 4: one head group a KV head */
    int prev_chunk_max = 1 << 30;
    for (int ci = 0; ci * SE_QCHUNK * per < 100 * per; ci++) {
        int lo = 1 << 30, hi = -1;
        for (int r = 0; r < SE_QCHUNK * per && ci * SE_QCHUNK * per + r < 100 * per; r++) {
            SeCta cta;
            cta.decode(p, ci * SE_QCHUNK * per + r);
            lo = cta.qb0 < lo ? cta.qb0 : lo;
            hi = cta.qb0 > hi ? cta.qb0 : hi;
        }
        cr_assert_lt(hi, prev_chunk_max, "chunk %d reaches query block %d, not below the previous chunk's", ci, hi);
        prev_chunk_max = lo;
    }
}
