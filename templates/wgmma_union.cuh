/* wgmma_union.cuh — attend's walk over the union of a CTA's two mask rows
 * (DwUnion), included by wgmma_attn.cuh. Plain integer code apart from
 * counts() (warp shuffles), so that tests/test_union.cpp can compile it on
 * the host (SALE_HOST_TEST: SALE_DEV, sale_u32, __ffs and __popc supplied
 * by the test) and check every block of both rows is handed out once, with
 * the right owner bits, in tiles() tiles. */
#ifndef SALE_WGMMA_UNION_CUH
#define SALE_WGMMA_UNION_CUH

/* attend: query blocks a chunk of the work items' order (dw_attend_item).
 * 128, not 32: the ~132 items in flight then read the K/V of one KV head
 * (sixth session: DRAM reads 203 -> 130 GB, attend -7% at 128K, d = 0.2) */
#define DW_QCHUNK 128

/* attend: the union of the CTA's two mask rows (one a consumer warpgroup;
 * row r holds its blocks <= hi[r]) handed out four blocks a tile: a key tile
 * is blocks blk[0..3] in its rows 0..31, 32..63, 64..95, 96..127 (four
 * 32-row TMA boxes; an empty slot, -1, loads blk[0] again: finite data under
 * masked scores), with own[r]: bit t set iff row r holds blk[t]. The order
 * (next()) puts the blocks both rows hold first, then tiles of one row's own
 * blocks, which the other warpgroup skips (DenseWg::consume_runs), then the
 * remainder; each warpgroup sets the scores of slots that are not its own
 * to -inf. The producer walks this list and writes each tile's blocks and
 * own bits into the stage's header; warp 0 counts the blocks of each kind
 * first (counts(): the producer needs them, tiles(): the consumers' count). */
struct DwUnion {
    const sale_u32 *r0, *r1; /* the two rows (null: past N) */
    int h0, h1;              /* their last blocks */
    int nw;                  /* the words to scan */
    /* per kind (0: both rows' blocks, 1: row 0's only, 2: row 1's only): the
     * next word, and the taken word's blocks not yet handed out (scalars, not
     * arrays: a runtime index would put them in local memory) */
    int w0, w1, w2;
    sale_u32 u0, u1, u2;
    SALE_DEV static sale_u32 word(const sale_u32 *r, int hi, int x) {
        if (!r || x * 32 > hi) return 0u;
        sale_u32 t = r[x];
        if (x == hi >> 5 && (hi & 31) != 31) t &= (2u << (hi & 31)) - 1u;
        return t;
    }
    SALE_DEV sale_u32 bits(int k, int x) const {
        const sale_u32 a = word(r0, h0, x), b = word(r1, h1, x);
        return k == 0 ? a & b : k == 1 ? a & ~b : b & ~a;
    }
    SALE_DEV void begin(const sale_u32 *a, int ha, const sale_u32 *b, int hb) {
        r0 = a;
        r1 = b;
        h0 = a ? ha : -1;
        h1 = b ? hb : -1;
        nw = ((h0 > h1 ? h0 : h1) >> 5) + 1;
        w0 = w1 = w2 = 0;
        u0 = u1 = u2 = 0u;
        rem0 = rem1 = rem2 = 0;
        turn = 1;
    }
    SALE_DEV int take(int k, int &w, sale_u32 &u) const {
        while (!u) {
            if (w >= nw) return -1;
            u = bits(k, w);
            w++;
        }
        const int x = __ffs(u) - 1;
        u &= u - 1u;
        return (w - 1) * 32 + x;
    }
    /* the next block of kind k, or -1 */
    SALE_DEV int next_block(int k) { return k == 0 ? take(0, w0, u0) : k == 1 ? take(1, w1, u1) : take(2, w2, u2); }
    /* blocks of each kind not yet handed out (set by the producer from
     * counts(): next() needs them), and whose turn it is among 1 and 2 */
    int rem0, rem1, rem2, turn;
    SALE_DEV int take_kind(int k, sale_u32 &m) {
        m |= k == 0 ? 3u : (sale_u32)k;
        if (k == 0) rem0--;
        else if (k == 1) rem1--;
        else rem2--;
        return next_block(k);
    }
    /* the next tile, false at the end; own[r]: bit t, row r holds block b[t].
     * First the blocks both rows hold (the last such tile topped up with
     * each row's own blocks by turns); then tiles of four of row 0's own or
     * of row 1's own blocks by turns, which the other consumer skips while
     * this one works on them (DenseWg::consume_runs); then one or two tiles
     * of what is left of both (fewer than four of each). A tile's empty
     * slots are -1. tiles() counts the same sequence. */
    SALE_DEV bool next(int (&b)[4], sale_u32 (&own)[2]) {
        if (rem0 + rem1 + rem2 == 0) return false;
        sale_u32 m[4] = {0u, 0u, 0u, 0u};
        if (rem0 > 0) {
#pragma unroll
            for (int t = 0; t < 4; t++) {
                int k = -1;
                if (rem0 > 0) k = 0;
                else if (rem1 > 0 && (turn == 1 || rem2 == 0)) k = 1;
                else if (rem2 > 0) k = 2;
                if (k > 0) turn = 3 - k;
                b[t] = k < 0 ? -1 : take_kind(k, m[t]);
            }
        } else if (rem1 >= 4 || rem2 >= 4) {
            const int k = (turn == 1 && rem1 >= 4) || rem2 < 4 ? 1 : 2;
            turn = 3 - k;
#pragma unroll
            for (int t = 0; t < 4; t++) b[t] = take_kind(k, m[t]);
        } else {
#pragma unroll
            for (int t = 0; t < 4; t++) {
                const int k = rem1 > 0 ? 1 : rem2 > 0 ? 2 : -1;
                b[t] = k < 0 ? -1 : take_kind(k, m[t]);
            }
        }
        own[0] = (m[0] & 1u) | (m[1] & 1u) << 1 | (m[2] & 1u) << 2 | (m[3] & 1u) << 3;
        own[1] = (m[0] >> 1) | (m[1] >> 1) << 1 | (m[2] >> 1) << 2 | (m[3] >> 1) << 3;
        return true;
    }
#ifndef SALE_HOST_TEST
    /* the blocks of each kind: warp-cooperative (every lane gets them) */
    SALE_DEV void counts(int lane, int &n0, int &n1, int &n2) const {
        n0 = n1 = n2 = 0;
        for (int x = lane; x < nw; x += 32) {
            const sale_u32 a = word(r0, h0, x), b = word(r1, h1, x);
            n0 += __popc(a & b);
            n1 += __popc(a & ~b);
            n2 += __popc(b & ~a);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            n0 += __shfl_xor_sync(0xffffffffu, n0, o);
            n1 += __shfl_xor_sync(0xffffffffu, n1, o);
            n2 += __shfl_xor_sync(0xffffffffu, n2, o);
        }
    }
#endif
    /* how many tiles next() hands out for these counts */
    SALE_DEV static int tiles(int n0, int n1, int n2) {
        int t = 0;
        if (n0 > 0) {
            t = (n0 + 3) / 4;
            int turn = 1;
            for (int f = 4 * t - n0; f > 0; f--) { /* the top-up, by turns */
                if (n1 > 0 && (turn == 1 || n2 == 0)) n1--, turn = 2;
                else if (n2 > 0) n2--, turn = 1;
            }
        }
        return t + n1 / 4 + n2 / 4 + (n1 % 4 + n2 % 4 + 3) / 4;
    }
};

/* attend's work item x of the ceil(N / 128) x Hq x B that sale_layout_plan()
 * counts: its batch and the (head, 64-row query block) of each consumer
 * warpgroup's mask row; false for an item wholly past N. Where a GQA group
 * has an even number of heads: one query block of two heads of the group
 * (their rows keep more blocks in common than neighbouring query blocks of
 * one head do: bench_attention prints both; hw is pair k = 2k, 2k + 1 here,
 * which the kernel then maps to the heads ranked 2k, 2k + 1 by kept count,
 * dw_pair_by_kept), head pairs in chunks of
 * DW_QCHUNK query blocks, one (batch, KV head) after another inside a chunk,
 * so that the items in flight at once read the K/V of one KV head (L2);
 * otherwise query blocks 2 qt and 2 qt + 1 of one head. Heaviest query
 * blocks first. */
SALE_DEV bool dw_attend_item(const sale_params &p, int x, int &b, int (&hw)[2], int (&qw)[2]) {
    const int nbh = p.B * p.Hq, nqt = (p.N + 127) / 128;
    if (p.group % 2 == 0) {
        const int Q2 = 2 * nqt, ppg = p.group / 2, per = DW_QCHUNK * nbh / 2; /* items a full chunk */
        const int full = Q2 / DW_QCHUNK;
        const int ci = x / per < full ? x / per : full;
        const int csz = ci < full ? DW_QCHUNK : Q2 - full * DW_QCHUNK, rem = x - ci * per;
        const int gi = rem / (csz * ppg), r2 = rem % (csz * ppg); /* (batch, KV head), then query block, pair */
        const int qx = Q2 - 1 - (ci * DW_QCHUNK + r2 / ppg);
        if (qx >= p.nqb) return false;
        b = gi / p.Hkv;
        hw[0] = (gi % p.Hkv) * p.group + 2 * (r2 % ppg);
        hw[1] = hw[0] + 1;
        qw[0] = qw[1] = qx;
    } else {
        const int bh = x % nbh, qx = nqt - 1 - x / nbh;
        b = bh / p.Hq;
        hw[0] = hw[1] = bh % p.Hq;
        qw[0] = 2 * qx;
        qw[1] = 2 * qx + 1;
    }
    return true;
}


/* attend's pairing of a GQA group's heads at one query block, by work. The
 * two rows of a CTA run on its two consumer warpgroups, and the CTA lasts as
 * long as the longer one: a pair of rows of unequal kept counts leaves one
 * warpgroup idle for the difference. So the heads are ranked by their kept
 * count (p.kept, written by select; larger first, ties by head), and pair k
 * is ranks 2k and 2k + 1. Of every pairing of the group this one makes the
 * sum over pairs of the larger count smallest (pairing the largest with
 * anything else leaves a larger second maximum). rank(h) reads the count of
 * head i through cnt(i); every CTA of the group and query block reads the
 * same counts, so the pairs are a partition of the group whatever the counts
 * hold (tests/test_union.cpp checks both on the host). */
template <class F> SALE_DEV int dw_count_rank(const F &cnt, int g, int h, int ch) {
    int r = 0;
    for (int i = 0; i < g; i++) {
        const int ci = cnt(i);
        r += (ci > ch) | (ci == ch && i < h);
    }
    return r;
}
#ifndef SALE_HOST_TEST
/* every thread of the CTA (full warps, CTA-uniform arguments): rewrite the
 * item's heads hw (group base + 2k, + 1) as pair k of the ranking. Groups of
 * 4..32 heads (one warp's lanes hold the counts); other groups keep theirs. */
SALE_DEV void dw_pair_by_kept(const sale_params &p, int b, int (&hw)[2], int qx) {
    const int g = p.group;
    if (g < 4 || g > 32 || g % 2 || !p.kept) return;
    const int lane = threadIdx.x & 31, base = hw[0] - hw[0] % g, k = (hw[0] - base) / 2;
    const int *kept = (const int *)p.kept + ((long long)b * p.Hq + base) * p.nqb + qx;
    const int c = lane < g ? kept[(long long)lane * p.nqb] : 0;
    const int r = dw_count_rank([&](int i) { return __shfl_sync(0xffffffffu, c, i); }, g, lane, c);
    const sale_u32 m0 = __ballot_sync(0xffffffffu, lane < g && r == 2 * k);
    const sale_u32 m1 = __ballot_sync(0xffffffffu, lane < g && r == 2 * k + 1);
    hw[0] = base + __ffs(m0) - 1;
    hw[1] = base + __ffs(m1) - 1;
}
#endif

#endif
