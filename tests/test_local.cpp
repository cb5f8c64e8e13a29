/* test_local.cpp — the index arithmetic of the sm_90a select's lean local
 * launch (templates/select_local.cuh, SeLocalGeo), the kernel's own code
 * compiled on the host (SALE_HOST_TEST):
 *  - the tile list (tiles, block) is the local region [local_lo, kb_hi] from
 *    the diagonal down, then the sink when local_lo > 0 — the blocks and the
 *    order of SaleAttn::local_region, so m and l round as there — and it is
 *    the set the mask row's init marks; for every query block at lengths
 *    around block, segment and window boundaries, windows 0 .. 256, tau both
 *    dense and not (segment plan: a copy of sale_segment_plan);
 *  - only the first tile (the diagonal) can hold keys >= N, so the kernel
 *    checks bounds there only; the sink block is never in the region;
 *  - the copy slots: every (row, 16-byte chunk) of a tile once, at sale_swz's
 *    offset, and copy_off(tid, i + 2) = copy_off(tid, i) + 128 (immediates);
 *  - the ldmatrix offsets kfrag_full against sale_swz for every lane,
 *    k-step and 16-key group. */
#include <criterion/criterion.h>

#include <vector>

#define SALE_HOST_TEST 1
#define SALE_DEV
#include "sale_abi.h"
#include "sale_layout.h"
#include "select_local.cuh"

/* sale_swz (sale_common.cuh) for 16 chunks a row */
static int swz16(int r, int ch) { return r * 256 + ((ch ^ (r & 7)) << 4); }

/* sale_segment_plan (sale_common.cuh), copied */
static void plan(int i0, int window, int bk, int sb, bool dense_head, int *local_lo, int *nseg) {
    const int lf = (i0 - window > 0 ? i0 - window : 0) / bk;
    *nseg = 0;
    if (dense_head) {
        *local_lo = 0;
    } else if (lf <= 1) {
        *local_lo = lf;
    } else {
        *nseg = (lf - 1) / sb;
        *local_lo = 1 + *nseg * sb;
    }
}
/* the mask row's local bits (sale_mask_word over the row | the sink bit) */
static bool mask_bit(int kb, int local_lo, int kb_hi) { return (kb >= local_lo && kb <= kb_hi) || kb == 0; }

Test(local, tile_list_is_the_region_then_the_sink)
{
    const int BQ = 64, BK = 32, SB = 4;
    long lists = 0;
    for (int window = 0; window <= 256; window += 32)
        for (int dense = 0; dense < 2; dense++)
            for (int N = 1; N <= 3000; N++) {
                const int nqb = (N + BQ - 1) / BQ;
                for (int qb = 0; qb < nqb; qb++) {
                    const int i0 = qb * BQ, iend = (i0 + BQ < N ? i0 + BQ : N) - 1, kb_hi = iend / BK;
                    int local_lo, nseg;
                    plan(i0, window, BK, SB, dense, &local_lo, &nseg);
                    cr_assert(local_lo >= 0 && local_lo <= kb_hi, "N %d qb %d: local_lo %d kb_hi %d", N, qb, local_lo, kb_hi);
                    /* the kernel reads the list only where segments follow, but it is right everywhere */
                    const int n = SeLocalGeo::tiles(kb_hi, local_lo);
                    std::vector<int> want;
                    for (int kb = kb_hi; kb >= local_lo; kb--) want.push_back(kb);
                    if (local_lo > 0) want.push_back(0);
                    cr_assert_eq(n, (int)want.size(), "N %d qb %d W %d: %d tiles, want %d", N, qb, window, n, (int)want.size());
                    std::vector<int> seen(kb_hi + 1, 0);
                    for (int t = 0; t < n; t++) {
                        const int kb = SeLocalGeo::block(t, kb_hi, local_lo);
                        cr_assert_eq(kb, want[t], "N %d qb %d W %d tile %d: block %d, want %d", N, qb, window, t, kb, want[t]);
                        cr_assert(kb >= 0 && kb <= kb_hi && !seen[kb]++, "N %d qb %d: block %d twice or out of range", N, qb, kb);
                        cr_assert(mask_bit(kb, local_lo, kb_hi), "block %d computed but not in the mask row", kb);
                        if (t > 0) /* no bounds check past the first tile: every key < N */
                            cr_assert(kb * BK + BK - 1 < N, "N %d qb %d tile %d (block %d) has keys >= N", N, qb, t, kb);
                        if (t == 0) cr_assert_eq(kb, kb_hi, "the first tile is the diagonal");
                    }
                    for (int kb = 0; kb <= kb_hi; kb++) /* the mask row's local bits are the list */
                        cr_assert_eq(mask_bit(kb, local_lo, kb_hi), (bool)seen[kb], "N %d qb %d block %d", N, qb, kb);
                    if (nseg > 0) { /* where the kernel runs the list: its counter, the kept count */
                        cr_assert(n >= 2 && n <= window / BK + 6, "N %d qb %d W %d: %d tiles", N, qb, window, n);
                        lists++;
                    }
                }
            }
    cr_assert(lists > 100000, "lists run: %ld", lists);
}

Test(local, copy_slots_cover_a_tile_once_at_the_swizzle)
{
    std::vector<int> hit(32 * 16, 0);
    for (int tid = 0; tid < 128; tid++)
        for (int i = 0; i < 4; i++) {
            const int r = SeLocalGeo::copy_row(tid), ch = SeLocalGeo::copy_chunk(tid, i);
            cr_assert(r >= 0 && r < 32 && ch >= 0 && ch < 16);
            hit[r * 16 + ch]++;
            cr_assert_eq(SeLocalGeo::copy_off(tid, i), swz16(r, ch), "tid %d i %d", tid, i);
            /* the Q tile's second half: rows + 32, same swizzle, + 32 rows of bytes */
            cr_assert_eq(SeLocalGeo::copy_off(tid, i) + 32 * 256, swz16(r + 32, ch), "tid %d i %d (Q)", tid, i);
            if (i < 2) cr_assert_eq(SeLocalGeo::copy_off(tid, i + 2), SeLocalGeo::copy_off(tid, i) + 128, "tid %d i %d", tid, i);
            /* source: the row's pointer + 64 i bytes, 16 (tid & 3) in */
            cr_assert_eq(ch * 16, (tid & 3) * 16 + 64 * i);
        }
    for (int k = 0; k < 32 * 16; k++) cr_assert_eq(hit[k], 1, "row %d chunk %d copied %d times", k / 16, k % 16, hit[k]);
}

Test(local, ldmatrix_offsets_are_the_swizzle)
{
    for (int lane = 0; lane < 32; lane++)
        for (int ks = 0; ks < 8; ks++)
            for (int np = 0; np < 2; np++) {
                /* SaleAttn::tile's B fragment address */
                const int r = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                const int want = swz16(r, ks * 2 + ((lane >> 3) & 1));
                cr_assert_eq(SeLocalGeo::kfrag_full(lane, ks, np), want, "lane %d ks %d np %d", lane, ks, np);
            }
}
