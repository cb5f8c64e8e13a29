/* test_union.cpp — attend's walk over the union of two mask rows
 * (templates/wgmma_union.cuh, DwUnion), compiled on the host: the kernel's
 * own code, not a model of it. On random rows of every density, overlap and
 * length, and on the edge cases (a row past N, empty rows, identical rows,
 * disjoint rows, the last block in the last bit of a word):
 *   - every block of either row is handed out exactly once, no other block;
 *   - a tile's own bits are exactly "row r holds the block in slot t";
 *   - empty slots (-1) only at a tile's end, and no tile is empty;
 *   - the kernel's closed-form count (DwUnion::tiles, which the consumers
 *     loop on) equals the number of tiles next() hands out (a mismatch
 *     hangs or truncates the kernel);
 *   - the point of the order: a row computes at most 2 tiles more than the
 *     fewest that hold its blocks, ceil(own / 4), and the CTA loads at most 2
 *     tiles more than the union needs.
 * And the order of attend's work items (dw_attend_item) over every item
 * sale_layout_plan() counts: every (batch, head, query block) mask row is
 * one consumer warpgroup's exactly once, an item's two rows share a KV head,
 * and (the point of DW_QCHUNK) any 132 consecutive items read the K/V of at
 * most two KV heads. */
#include <criterion/criterion.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#define SALE_DEV
#define SALE_HOST_TEST 1
typedef unsigned int sale_u32;
#include "sale_abi.h" /* sale_params */
#include "sale_layout.h"
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
#include "wgmma_union.cuh"

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static double unif(void) { return rnd() / 2147483648.0; }

/* does row r (words w, last block hi; null: none) hold block x? */
static bool holds(const std::vector<sale_u32> *w, int hi, int x)
{
    return w && x >= 0 && x <= hi && ((*w)[x >> 5] >> (x & 31) & 1u);
}

/* one case: walk, check, return the number of tiles */
static int check_case(const std::vector<sale_u32> *ra, int ha, const std::vector<sale_u32> *rb, int hb,
                      const char *what)
{
    int nblk = (ha > hb ? ha : hb) + 1, n0 = 0, n1 = 0, n2 = 0;
    for (int x = 0; x < nblk; x++) {
        bool a = holds(ra, ha, x), b = holds(rb, hb, x);
        n0 += a && b, n1 += a && !b, n2 += b && !a;
    }
    DwUnion u;
    u.begin(ra ? ra->data() : nullptr, ha, rb ? rb->data() : nullptr, hb);
    u.rem0 = n0, u.rem1 = n1, u.rem2 = n2;
    std::vector<int> seen(nblk > 0 ? nblk : 1, 0);
    int blk[4], tiles = 0, mine[2] = {0, 0};
    sale_u32 own[2];
    while (u.next(blk, own)) {
        cr_assert_lt(tiles, 4 * nblk + 4, "%s: next() does not end", what);
        tiles++;
        cr_assert_geq(blk[0], 0, "%s: tile %d is empty", what, tiles);
        bool ended = false;
        for (int t = 0; t < 4; t++) {
            if (blk[t] < 0) {
                ended = true;
                cr_assert_eq((own[0] | own[1]) >> t & 1u, 0u, "%s: an empty slot owned", what);
                continue;
            }
            cr_assert(!ended, "%s: a block after an empty slot", what);
            cr_assert_lt(blk[t], nblk, "%s: block %d past the rows", what, blk[t]);
            seen[blk[t]]++;
            cr_assert_eq(own[0] >> t & 1u, (sale_u32)holds(ra, ha, blk[t]), "%s: row 0's bit of block %d", what,
                         blk[t]);
            cr_assert_eq(own[1] >> t & 1u, (sale_u32)holds(rb, hb, blk[t]), "%s: row 1's bit of block %d", what,
                         blk[t]);
        }
        mine[0] += own[0] != 0u;
        mine[1] += own[1] != 0u;
    }
    for (int x = 0; x < nblk; x++)
        cr_assert_eq(seen[x], (int)(holds(ra, ha, x) || holds(rb, hb, x)), "%s: block %d handed out %d times", what,
                     x, seen[x]);
    cr_assert_eq(tiles, DwUnion::tiles(n0, n1, n2), "%s: %d tiles, the closed form says %d (n %d %d %d)", what,
                 tiles, DwUnion::tiles(n0, n1, n2), n0, n1, n2);
    int own0 = n0 + n1, own1 = n0 + n2, uni = n0 + n1 + n2;
    cr_assert_leq(mine[0], (own0 + 3) / 4 + 2, "%s: row 0 computes %d tiles for %d blocks", what, mine[0], own0);
    cr_assert_leq(mine[1], (own1 + 3) / 4 + 2, "%s: row 1 computes %d tiles for %d blocks", what, mine[1], own1);
    cr_assert_leq(tiles, (uni + 3) / 4 + 2, "%s: %d tiles for a union of %d blocks", what, tiles, uni);
    return tiles;
}

static std::vector<sale_u32> row_of(int nw, double p, const std::vector<sale_u32> *like, double follow)
{
    std::vector<sale_u32> w(nw, 0u);
    for (int x = 0; x < 32 * nw; x++) {
        bool bit = like && unif() < follow ? ((*like)[x >> 5] >> (x & 31) & 1u) : unif() < p;
        if (bit) w[x >> 5] |= 1u << (x & 31);
    }
    return w;
}

Test(union, random_rows_of_every_density_and_overlap)
{
    rng_state = 20261130;
    const double dens[] = {0.0, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0};
    long long cases = 0, tiles = 0;
    for (int it = 0; it < 20000; it++) {
        int nw = 1 + (int)(rnd() % 70);
        double pa = dens[rnd() % 7], pb = dens[rnd() % 7], follow = unif();
        std::vector<sale_u32> a = row_of(nw, pa, nullptr, 0), b = row_of(nw, pb, &a, follow);
        /* garbage past each row's last block: the walk must ignore it */
        int ha = (int)(rnd() % (32 * nw)), hb = (int)(rnd() % (32 * nw));
        if (rnd() % 4 == 0) hb = ha; /* two heads of one query block: the same last block */
        tiles += check_case(&a, ha, &b, hb, "random");
        cases++;
    }
    cr_log_info("union: %lld random cases, %lld tiles", cases, tiles);
}

Test(union, edge_rows)
{
    rng_state = 7;
    std::vector<sale_u32> full(4, 0xffffffffu), none(4, 0u), evens(4, 0x55555555u), odds(4, 0xaaaaaaaau);
    check_case(&full, 127, nullptr, -1, "row 1 past N");
    check_case(nullptr, -1, &evens, 100, "row 0 past N");
    check_case(&none, 127, &none, 127, "both empty");
    check_case(&full, 127, &full, 127, "identical full");
    check_case(&evens, 127, &odds, 127, "disjoint");
    check_case(&full, 31, &full, 32, "last block in the last bit of a word, and the next word's first");
    check_case(&evens, 0, &odds, 1, "one block each");
    for (int h = 0; h < 128; h++) check_case(&full, h, &evens, 127 - h, "every last block");
    /* a tile count of 0 for no blocks: the kernel skips the CTA's consumers */
    cr_assert_eq(DwUnion::tiles(0, 0, 0), 0);
}

/* every item of the attend's plan for this shape: each mask row once */
static void check_attend_items(int B, int Hkv, int group, int N)
{
    const int Hq = Hkv * group, nqb = (N + 63) / 64;
    sale_layout_cfg c = {SALE_LF_ATTEND, 128, 64, 32, 128, 128, 1, 8, 12, 3, 901, 0};
    cr_assert(sale_layout_wgmma(&c), "the cfg is the wgmma attend's");
    sale_launch L[4] = {};
    cr_assert_eq(sale_layout_plan(&c, B, Hq, Hkv, N, L), 1);
    sale_params p = {};
    p.B = B, p.Hq = Hq, p.Hkv = Hkv, p.N = N, p.nqb = nqb, p.group = group;
    std::vector<int> hits((size_t)B * Hq * nqb, 0);
    for (int x = 0; x < (int)L[0].grid[0]; x++) {
        int b = -1, hw[2] = {-1, -1}, qw[2] = {-1, -1};
        if (!dw_attend_item(p, x, b, hw, qw))
            continue; /* wholly past N */
        cr_assert(b >= 0 && b < B, "B=%d Hkv=%d group=%d N=%d item %d: batch %d", B, Hkv, group, N, x, b);
        cr_assert_eq(hw[0] / group, hw[1] / group, "item %d: heads %d and %d of two KV heads", x, hw[0], hw[1]);
        int rows = 0;
        for (int w = 0; w < 2; w++) {
            cr_assert(hw[w] >= 0 && hw[w] < Hq && qw[w] >= 0, "item %d: row (head %d, query block %d)", x, hw[w], qw[w]);
            if (qw[w] >= nqb)
                continue; /* a row past N: that warpgroup masks everything */
            hits[((size_t)b * Hq + hw[w]) * nqb + qw[w]]++;
            rows++;
        }
        cr_assert_gt(rows, 0, "item %d: no row", x);
    }
    for (size_t i = 0; i < hits.size(); i++)
        cr_assert_eq(hits[i], 1, "B=%d Hkv=%d group=%d N=%d: mask row (b %zu, head %zu, query block %zu) taken %d times",
                     B, Hkv, group, N, i / nqb / Hq, i / nqb % Hq, i % nqb, hits[i]);
}

Test(union, attend_items_cover_every_mask_row_once)
{
    const int lens[] = {1, 63, 64, 65, 127, 128, 129, 2047, 2048, 4095, 4097, 128 * 64 + 64, 128 * 128 * 3 + 1, 65536, 131072 + 64};
    for (int B = 1; B <= 3; B++)
        for (int Hkv : {1, 2, 8})
            for (int g : {1, 2, 3, 4, 6, 8})
                for (int N : lens) {
                    if ((long long)B * Hkv * g * N > (long long)3 * 8 * 8 * 131072)
                        continue;
                    check_attend_items(B, Hkv, g, N);
                }
}

/* the L2 order: the items in flight at once (about one a CTA, 132 CTAs on
 * an H100 / H200) read the K/V of one KV head, two where a window straddles
 * a head's end, on the shapes of the benchmark (Llama-3.1-8B: 32 / 8 heads) */
Test(union, items_in_flight_read_at_most_two_kv_heads)
{
    for (int N : {16384, 65536, 131072}) {
        sale_params p = {};
        p.B = 1, p.Hq = 32, p.Hkv = 8, p.N = N, p.nqb = N / 64, p.group = 4;
        const int n = (N / 128) * 32, win = 132;
        std::vector<int> kv(n, -1);
        for (int x = 0; x < n; x++) {
            int b = -1, hw[2] = {-1, -1}, qw[2] = {-1, -1};
            cr_assert(dw_attend_item(p, x, b, hw, qw));
            kv[x] = b * p.Hkv + hw[0] / p.group;
        }
        for (int x0 = 0; x0 + win <= n; x0++) {
            int heads = 1;
            for (int x = x0 + 1; x < x0 + win; x++)
                heads += kv[x] != kv[x - 1];
            cr_assert_leq(heads, 2, "N=%d: items %d..%d read %d KV heads", N, x0, x0 + win - 1, heads);
        }
    }
}

/* the smallest sum over pairs of the larger count, over every pairing of the
 * heads in `left` (brute force: the first head with each other one) */
static int best_pairing(const std::vector<int> &cnt, std::vector<int> left)
{
    if (left.empty())
        return 0;
    const int a = left[0];
    int best = 1 << 30;
    for (size_t j = 1; j < left.size(); j++) {
        std::vector<int> rest;
        for (size_t i = 1; i < left.size(); i++)
            if (i != j)
                rest.push_back(left[i]);
        const int m = std::max(cnt[a], cnt[left[j]]) + best_pairing(cnt, rest);
        best = std::min(best, m);
    }
    return best;
}

/* attend's pairing of a GQA group's heads by kept count (dw_count_rank, the
 * kernel's rank): the ranks are a permutation whatever the counts (ties,
 * equal counts everywhere, negative garbage), so pairs (2k, 2k + 1) take
 * every head once; and the pairing is the best one for the CTA's length,
 * the sum over pairs of the larger count (brute force over every pairing) */
Test(union, heads_paired_by_kept_count)
{
    rng_state = 99;
    for (int g : {4, 6, 8, 16, 32})
        for (int trial = 0; trial < 400; trial++) {
            std::vector<int> cnt(g);
            const int range = trial % 4 == 0 ? 1 : trial % 4 == 1 ? 3 : trial % 4 == 2 ? 50 : 100000;
            for (int h = 0; h < g; h++)
                cnt[h] = (int)(rnd() % range) - (trial % 8 == 7 ? range / 2 : 0);
            std::vector<int> head_of(g, -1);
            for (int h = 0; h < g; h++) {
                const int r = dw_count_rank([&](int i) { return cnt[i]; }, g, h, cnt[h]);
                cr_assert(r >= 0 && r < g, "g=%d: rank %d", g, r);
                cr_assert_eq(head_of[r], -1, "g=%d trial %d: rank %d given to heads %d and %d", g, trial, r, head_of[r], h);
                head_of[r] = h;
            }
            int sum = 0;
            for (int k = 0; k < g / 2; k++) {
                cr_assert_geq(cnt[head_of[2 * k]], cnt[head_of[2 * k + 1]], "ranked by count, larger first");
                sum += std::max(cnt[head_of[2 * k]], cnt[head_of[2 * k + 1]]);
            }
            if (g <= 8) {
                std::vector<int> all(g);
                for (int h = 0; h < g; h++)
                    all[h] = h;
                cr_assert_eq(sum, best_pairing(cnt, all), "g=%d trial %d: the ranked pairing is not the best", g, trial);
            }
        }
}
