/* wgmma_rows.cuh — attend on Hopper (sm_90a, head_dim 128) one mask row a
 * CTA: the "rows" kernel (entry sale_attend_rows_kernel), chosen by attend.cu
 * when SALE_WARPS == 5 (sale_layout_wgmma_rows); sale_attention's default up
 * to the 128K length bucket (sale_layout_rows_default). The other attend
 * kernel (wgmma_attn.cuh, warps 12, the default above) runs two mask rows a
 * CTA over the union of their kept blocks; below d ~ 0.4 its time is a CTA's
 * fixed costs (start, first load, store: ~14% of stall samples at d = 0.05)
 * and the idle warpgroup of the shorter row (~12-16%), with one CTA an SM
 * (bench/wgmma/NOTES.md, eleventh session). This kernel changes the unit of
 * work instead of its order (measured against it: bench/RESULTS.md, twelfth
 * session):
 *   - one 64-row mask row (b, h, query block) at a time a CTA, so no union
 *     and no idle warpgroup: a CTA's row lasts as long as its own tiles;
 *   - 256 threads (128 registers each at launch) and <= 113 KB of shared
 *     memory, so two CTAs share an SM and one's start and end run under
 *     the other's tiles;
 *   - its price: the four heads of a GQA group no longer share a K/V tile
 *     in shared memory (they share it in L2: the work order keeps a KV
 *     head's rows together), so K/V bytes per FLOP double against the union.
 * CTA: warps 0-3 the consumer warpgroup, warp 5 the scheduler (takes the
 *   rows, reads and walks their mask words into a queue in shared memory),
 *   lane 0 of warp 4 the issuer (the queue into TMA copies), warps 6-7 only
 *   there to make the producer warpgroup whole for setmaxnreg (they give
 *   their registers to the consumers and exit). The key says warps 5 (what
 *   names this kernel); it runs eight.
 *   issuer: the row's Q (two 64-column boxes of 64 rows), then its kept
 *     blocks in ascending order, two a tile; an odd last tile repeats its block in the empty
 *     slot, masked; each block as 32-row TMA boxes of K and of V
 *     (the 128-byte swizzle) into a SALE_STAGES-deep ring (KFULL, VFULL:
 *     landed; EMPTY: the four consumer warps are done), the tile's two block
 *     indices in a header beside the stage;
 *   consumers: Q's fragments into registers at a row's start (ldmatrix),
 *     which frees the Q tile for the next row; S = Q K^T as 8 x wgmma
 *     m64n64k16 (Q from registers, K from shared memory), the mask of the diagonal block and the empty slot, online
 *     softmax in registers, O += P V as 4 x wgmma m64n128k16 (P from
 *     registers, V transposed); S(j) and P V(j - 1) in flight together.
 * Persistent (two CTAs an SM, rows from a counter: see the kernel), so a
 * row's start (its mask words, then its first K/V tiles and its Q) runs
 * under the previous row's last tiles and store instead of after them
 * (measured against one CTA a row: -5% at d ~ 0.05, -2% at 0.2, +3% at
 * 0.01, where the consumers waited for the producer warp; its warp-wide
 * walk of the mask words then took d ~ 0.01 down by 19%: NOTES.md).
 * The tile count comes from the mask row itself (the scheduler warp counts
 * its bits), not from p.kept, so any mask the caller passes is read as it
 * is. Shared memory has no alignment slack (two CTAs must fit in 228 KB):
 * the tiles need a 1 KB-aligned base, and a base that is not traps. */
#ifndef SALE_WGMMA_ROWS_CUH
#define SALE_WGMMA_ROWS_CUH

#include "wgmma_softmax.cuh" /* DwRowState: S, O, P, their wgmma (m64n64k16, m64n128k16), online softmax, store */

#define WR_BN 64       /* keys a K/V tile: two kept 32-key blocks */
#define WR_NT (WR_BN / 8) /* n8 column groups of S */
#define WR_QT 16384    /* the Q tile, 64 x 128 of the dtype: two 8 KB halves (d 0..63, 64..127) */
#define WR_KT 16384    /* a K or V tile: 64 x 128, two halves of 64 rows x 128 bytes */
#define WR_HALF 8192
#define WR_QCHUNK 128  /* query blocks a chunk of the work order */

static_assert(SALE_WARPS == 5, "the rows attend kernel is one consumer warpgroup and one producer warp");
static_assert(SALE_STAGES == 2 || SALE_STAGES == 3, "the rows attend ring has 2 or 3 stages");
static constexpr sale_layout_cfg WR_LCFG = {SALE_FAMILY, 128, SALE_BLOCK_Q, SALE_BLOCK_K, SALE_BLOCK_SEG,
                                            SALE_LOCAL_WINDOW, SALE_DTYPE, SALE_EST_BITS, SALE_WARPS, SALE_STAGES,
                                            SALE_ARCH};
static_assert(sale_layout_wgmma_rows(&WR_LCFG), "the host would not launch this kernel for this key");
/* registers after setmaxnreg: the launch gives every thread 128 (65536 / (2
 * CTAs x 256 threads)); the producer warpgroup (issuer, scheduler and two
 * warps that only give their registers back) drops to P, the consumers rise
 * to C, covered by what the producers free or setmaxnreg.inc waits forever:
 * 128 (128 - P) >= 128 (C - 128). The consumers hold O 64, S 32, P 16 and Q's
 * fragments 32 (Q from registers: 166 registers, which spilled under the 168
 * that 192 threads and no setmaxnreg gave). */
#define WR_PRODUCER_REGS 56
#define WR_CONSUMER_REGS 200
static_assert(128 * (128 - WR_PRODUCER_REGS) >= 128 * (WR_CONSUMER_REGS - 128),
              "setmaxnreg: the consumers' registers must be freed by the producers");
/* The consumers' timeline (a measuring build only: SALE_WR_TIMELINE 1 in
 * sale_layout.h; every production cubin is built with 0 and has none of it). Lane 0
 * of consumer warp 0 writes clock64 stamps of each row it computes into the
 * 256 bytes of the row's log-sum-exp (the call's lse, [B, Hq, N] floats: the
 * 64 rows of query block qb hold 32 u64), instead of the log-sum-exp:
 *   [0] magic << 48 | %smid << 32 | tile count; [1] blockIdx.x << 32 | the
 *   CTA's row number; [2] before QFULL's wait; [3] QFULL passed (INFO read);
 *   [4] Q's fragments loaded, QEMPTY arrived; [5] tile 0's K landed; [6] S(0)
 *   complete; [7] its softmax done; tiles j = 1..7: [8 + 3 (j - 1)] K(j) and
 *   V(j - 1) landed (S(j), P V(j - 1) about to issue), [+1] S(j) complete,
 *   [+2] P V(j - 1) complete; [29] the cycles the row's tiles j >= 1 spent in
 *   the KFULL / VFULL waits; [30] the last P V complete; [31] the row stored
 *   and its stage released. bench/rows_timeline.c reads it (the quantize
 *   family's lse correction, which would add to these bytes, does nothing
 *   in such a build). */
#define WR_TL_MAGIC 0x5A1Eull
/* the scheduler's queue: WR_QS slots of a 16-byte header and WR_QT_TILES tiles */
#define WR_QS 2
#define WR_QT_TILES 32
#define WR_QSLOT (16 + 8 * WR_QT_TILES)
static_assert(16 + 24 * SALE_STAGES <= 96 && 96 + 8 * SALE_STAGES <= 128 && 144 + 16 * WR_QS <= 256,
              "barriers, then headers at +96, the row slot at +128, the queue's barriers at +144, in 256 B");
static_assert(WR_QSLOT % 16 == 0 && WR_QS * WR_QSLOT == SALE_WR_QUEUE_BYTES, "16-byte slot headers; the queue as sale_layout_smem() counts it");
static_assert(sale_layout_smem(&WR_LCFG) == WR_QT + 2u * SALE_STAGES * WR_KT + 256u + WR_QS * WR_QSLOT,
              "shared-memory layout of the rows attend kernel and sale_layout_smem() disagree");

/* work item x of the nqb x Hq x B grid: its batch, head and query block.
 * Chunks of WR_QCHUNK query blocks, heaviest first; inside a chunk one
 * (batch, KV head) after another, and per query block the group's heads
 * together, so that the ~264 CTAs in flight read the K/V of one or two KV
 * heads (they share it in L2). A bijection of 0 .. nqb Hq B - 1. */
SALE_DEV bool wr_item(const sale_params &p, int x, int &b, int &h, int &qb) {
    const int g = p.group, nbk = p.B * p.Hkv, per = WR_QCHUNK * nbk * g;
    const int full = p.nqb / WR_QCHUNK;
    const int ci = x / per < full ? x / per : full;
    const int csz = ci < full ? WR_QCHUNK : p.nqb - full * WR_QCHUNK;
    if (csz <= 0) return false;
    const int rem = x - ci * per, gi = rem / (csz * g), r2 = rem % (csz * g);
    qb = p.nqb - 1 - (ci * WR_QCHUNK + r2 / g);
    if (gi >= nbk || qb < 0) return false;
    b = gi / p.Hkv;
    h = (gi % p.Hkv) * g + r2 % g;
    return true;
}

struct RowWg : DwRowState<WR_BN, WR_HALF> {
    static constexpr int ST = SALE_STAGES;
    static constexpr sale_u32 OFF_Q = 0, OFF_K = WR_QT, OFF_V = WR_QT + ST * WR_KT, OFF_BAR = WR_QT + 2 * ST * WR_KT;
    sale_u32 sQ, sK, sV, QFULL, QEMPTY, KFULL, VFULL, EMPTY, HDR, INFO;
    int b, h, kvh, qb, hi, nkt;
    const sale_u32 *row;

    /* word w of the row, blocks past the diagonal block hi cleared */
    SALE_DEV sale_u32 word(int w) const {
        sale_u32 x = row[w];
        const int r = hi & 31;
        if (w == (hi >> 5) && r != 31) x &= (2u << r) - 1u;
        return x;
    }

    /* ---------------------------------------------------------- producer */
    /* blocks b0 and b1 (b1 < 0: empty, b0 again) into rows 0..31 and 32..63
     * of both halves of a K or V stage, on barrier bar: map has 32-row
     * boxes, map2 64-row ones, for a pair of adjacent blocks (the local
     * window's, most pairs at low density) in two copies instead of four
     * (rows 32..63 of a 64-row box land where the second block's box would:
     * the 128-byte swizzle repeats every 8 rows) */
    SALE_DEV void load_pair(sale_u32 dst, const sale_tmap *map, const sale_tmap *map2, int b0, int b1,
                            sale_u32 bar) const {
        dw_mbar_expect_tx(bar, WR_KT);
        const int r0 = b0 * 32, r1 = (b1 < 0 ? b0 : b1) * 32;
        if (b1 == b0 + 1) {
            dw_tma_4d(dst, map2, 0, r0, kvh, b, bar);
            dw_tma_4d(dst + WR_HALF, map2, 64, r0, kvh, b, bar);
            return;
        }
        dw_tma_4d(dst, map, 0, r0, kvh, b, bar);
        dw_tma_4d(dst + WR_HALF, map, 64, r0, kvh, b, bar);
        dw_tma_4d(dst + 4096, map, 0, r1, kvh, b, bar);
        dw_tma_4d(dst + WR_HALF + 4096, map, 64, r1, kvh, b, bar);
    }
    SALE_DEV void emit(const sale_tma_params &tp, int i, int b0, int b1) {
        const int s = i % ST;
        dw_mbar_wait(EMPTY + 8 * s, ((i / ST) & 1) ^ 1);
        asm volatile("st.shared.v2.s32 [%0], {%1, %2};\n" ::"r"(HDR + 8 * s), "r"(b0), "r"(b1) : "memory");
        load_pair(sK + s * WR_KT, &tp.tk, &tp.tk2, b0, b1, KFULL + 8 * s);
        load_pair(sV + s * WR_KT, &tp.tv, &tp.tv2, b0, b1, VFULL + 8 * s);
    }
    /* Q of this row into the Q tile, once the consumers are done with the
     * previous row's (QEMPTY, item r - 1), the row {b, h, qb} and its tile
     * count in INFO first (the arrive on QFULL releases them; decoded here
     * so that the consumers skip wr_item's divisions, ~6% of their stall
     * samples at d ~ 0.01: NOTES, fifteenth session) */
    SALE_DEV void load_q(const sale_tma_params &tp, int r) {
        if (r > 0) dw_mbar_wait(QEMPTY, (r - 1) & 1);
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(INFO), "r"(b), "r"(h), "r"(qb), "r"(nkt)
                     : "memory");
        dw_mbar_expect_tx(QFULL, WR_QT);
        dw_tma_4d(sQ, &tp.tq, 0, qb * 64, h, b, QFULL);
        dw_tma_4d(sQ + WR_HALF, &tp.tq, 64, qb * 64, h, b, QFULL);
    }
    /* ---------------------------------------------- scheduler and issuer
     * Warp 5 (the scheduler) takes the rows, counts their kept blocks and
     * walks them into a queue of WR_QS slots in shared memory, a slot a
     * chunk of at most WR_QT_TILES tiles of one row (a 16-byte header: the
     * row's item x, its tile count, the chunk's tile count; then {b0, b1} a
     * tile); LFULL(s) / LEMPTY(s) hand a slot over and back. Lane 0 of warp 4
     * (the issuer) turns the queue into TMA copies, the ring and Q. So the
     * chain of a row's start (ticket, mask words, count, walk) runs ahead of
     * the copies, under the previous rows' loads, instead of between them:
     * at d ~ 0.01 the consumers waited for that chain (27% of stall samples
     * in QFULL's wait while the producer's QEMPTY wait never retried). */
    sale_u32 LQ, LFULL, LEMPTY;
    SALE_DEV sale_u32 slot(int k) const { return LQ + (sale_u32)(k % WR_QS) * WR_QSLOT; }
    /* the scheduler, all 32 lanes; k: the CTA's chunk count so far */
    SALE_DEV void schedule(const sale_params &p, unsigned int *ctr, unsigned int total, int lane) {
        int k = 0;
        for (;;) {
            /* a free slot first, then the row: a row is taken when the queue
             * has room for it, so the rows in flight stay within a slot of
             * the work order (what keeps their K/V in L2) */
            if (lane == 0) dw_mbar_wait(LEMPTY + 8 * (k % WR_QS), ((k / WR_QS) & 1) ^ 1);
            unsigned int x = 0;
            if (lane == 0) x = atomicAdd(ctr, 1u);
            x = __shfl_sync(0xffffffffu, x, 0);
            if (x >= total) break;
            if (!wr_item(p, (int)x, b, h, qb)) continue; /* not reached: wr_item is a bijection */
            row = (const sale_u32 *)p.mask + (((long long)b * p.Hq + h) * p.nqb + qb) * p.nkw;
            hi = ((qb * 64 + 64 < p.N ? qb * 64 + 64 : p.N) - 1) / 32;
            const int nw = (hi >> 5) + 1;
            int n = 0;
            for (int w = lane; w < nw; w += 32) n += __popc(word(w));
            const int rt = (__reduce_add_sync(0xffffffffu, n) + 1) >> 1; /* the row's tiles */
            /* the walk: one coalesced load of 32 words, a ballot of the
             * nonzero ones, their bits in step by every lane; lane 0 writes */
            int t = 0, pend = -1; /* t: tiles of this chunk written */
            for (int c = 0; c < nw; c += 32) {
                const sale_u32 mine = c + lane < nw ? word(c + lane) : 0u;
                for (sale_u32 m = __ballot_sync(0xffffffffu, mine != 0u); m; m &= m - 1u) {
                    const int l = __ffs(m) - 1;
                    sale_u32 x_ = __shfl_sync(0xffffffffu, mine, l);
                    while (x_) {
                        const int blk = (c + l) * 32 + __ffs(x_) - 1;
                        x_ &= x_ - 1u;
                        if (pend < 0) {
                            pend = blk;
                            continue;
                        }
                        if (lane == 0) put(k, t, (int)x, rt, pend, blk);
                        pend = -1;
                    }
                }
            }
            if (lane == 0) {
                if (pend >= 0) put(k, t, (int)x, rt, pend, -1);
                publish(k++, (int)x, rt, t); /* the row's last chunk (with 0 tiles for an empty row) */
            }
            k = __shfl_sync(0xffffffffu, k, 0);
        }
        if (lane == 0) { /* the end: a slot (already free) with item -1 */
            publish(k, -1, 0, 0);
            /* the last CTA done taking rows sets both counters back to zero */
            if (atomicAdd(ctr + 1, 1u) == gridDim.x - 1) {
                atomicExch(ctr, 0u);
                atomicExch(ctr + 1, 0u);
            }
        }
    }
    /* (the scheduler's lane 0) tile {b0, b1} as tile t of chunk k of row x
     * (rt tiles), the chunk handed over first when it is full */
    SALE_DEV void put(int &k, int &t, int x, int rt, int b0, int b1) const {
        if (t == WR_QT_TILES) {
            publish(k++, x, rt, t);
            t = 0;
            dw_mbar_wait(LEMPTY + 8 * (k % WR_QS), ((k / WR_QS) & 1) ^ 1);
        }
        asm volatile("st.shared.v2.s32 [%0], {%1, %2};\n" ::"r"(slot(k) + 16u + 8u * (sale_u32)t), "r"(b0), "r"(b1)
                     : "memory");
        t++;
    }
    /* slot k's header, then the arrive on LFULL that releases it */
    SALE_DEV void publish(int k, int x, int rt, int t) const {
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(slot(k)), "r"(x), "r"(rt), "r"(t), "r"(0)
                     : "memory");
        dw_mbar_arrive(LFULL + 8 * (k % WR_QS));
    }
    /* the issuer (lane 0 of warp 4): rows from the queue, in its order.
     * A row's Q first, then its tiles: the consumers free the Q tile
     * (QEMPTY) as soon as they have the previous row's fragments in
     * registers, i.e. at that row's start, so Q loads while they work
     * through the previous row and never waits for its end. */
    /* slot k's header once the scheduler has published it (its LFULL):
     * the row's item x (-1: the end), its tile count rt, the chunk's t */
    SALE_DEV void take(int k, int &x, int &rt, int &t) const {
        int pad;
        dw_mbar_wait(LFULL + 8 * (k % WR_QS), (k / WR_QS) & 1);
        asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(x), "=r"(rt), "=r"(t), "=r"(pad)
                     : "r"(slot(k)));
    }
    SALE_DEV void issue(const sale_tma_params &tp) {
        const sale_params &p = tp.p;
        int i = 0, r = 0, k = 0;
        for (;; r++) {
            int x, rt, t;
            take(k, x, rt, t);
            if (x < 0) break;
            wr_item(p, x, b, h, qb);
            kvh = h / p.group;
            nkt = rt;
            load_q(tp, r); /* the consumers free Q once a row has started (its fragments in registers) */
            for (int done = 0;;) {
                for (int j = 0; j < t; j++) {
                    int b0, b1;
                    asm volatile("ld.shared.v2.s32 {%0, %1}, [%2];\n"
                                 : "=r"(b0), "=r"(b1)
                                 : "r"(slot(k) + 16u + 8u * (sale_u32)j));
                    emit(tp, i++, b0, b1);
                }
                dw_mbar_arrive(LEMPTY + 8 * (k % WR_QS));
                k++;
                done += t;
                if (done >= nkt) break;
                take(k, x, rt, t);
            }
        }
        /* the end: a batch of -1 (QFULL completes by the arrive alone) */
        if (r > 0) dw_mbar_wait(QEMPTY, (r - 1) & 1);
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(INFO), "r"(-1), "r"(0), "r"(0), "r"(0)
                     : "memory");
        dw_mbar_arrive(QFULL);
    }

    /* --------------------------------------------------------- consumers */
    /* S, O, P, their wgmma and the softmax state: DwRowState (wgmma_softmax.cuh) */
    int blk0, blk1;
    /* Q as S's register A operand: this warp's 16 rows, the 8 k16 steps. So
     * S = Q K^T reads only K from shared memory (an m64n64k16 with both
     * operands there reads 4 KB a 32 cycles, shared memory's whole rate, and
     * a tile's TMA writes and P V's reads of V compete with it), and the Q
     * tile is free as soon as a row has started: the next row's Q loads
     * under this row's tiles. */
    sale_u32 QA[8][4];
#if SALE_WR_TIMELINE
    unsigned long long *tl = nullptr, tlw = 0; /* this row's record (lane 0 of warp 0 only), the wait cycles */
    SALE_DEV void tl_put(int k, unsigned long long v) const {
        if (tl) tl[k] = v;
    }
    SALE_DEV static unsigned long long tl_now() { return clock64(); }
#define WR_TL(k, v) tl_put((k), (v))
#define WR_TL_AT(st, k) (st).tl_put((k), RowWg::tl_now())
#else
#define WR_TL(k, v) ((void)0)
#define WR_TL_AT(st, k) ((void)0)
#endif
    SALE_DEV void load_qa(int w) {
#pragma unroll
        for (int ks = 0; ks < 8; ks++)
            sale_ldsm4(QA[ks][0], QA[ks][1], QA[ks][2], QA[ks][3], sQ + (sale_u32)sale_layout_wr_qa(lane, w, ks));
    }
    /* S = Q K^T of K stage s from Q's fragments: 8 k16 steps, 4 per 128-byte swizzle row of K */
    SALE_DEV void issue_s_qa(int s) {
#pragma unroll
        for (int ks = 0; ks < 8; ks++) {
            const sale_u32 koff = ((ks >> 2) * (WR_BN * 128) + (ks & 3) * 32) >> 4;
            dw_mma_rs(S, QA[ks], kdesc + ((s * (WR_BN * 256)) >> 4) + koff, ks);
        }
    }
    /* the header of stage s (its KFULL waited on): lane 0 reads, hands round */
    SALE_DEV void header(int s) {
        int x0 = 0, x1 = 0;
        if (lane == 0) asm volatile("ld.shared.v2.s32 {%0, %1}, [%2];\n" : "=r"(x0), "=r"(x1) : "r"(HDR + 8 * s));
        blk0 = __shfl_sync(0xffffffffu, x0, 0);
        blk1 = __shfl_sync(0xffffffffu, x1, 0);
    }
    /* slot 1 empty -> -inf; where a block reaches the rows' diagonal, key > row -> -inf */
    SALE_DEV void mask_pair() {
        const bool diag = max(blk0, blk1) * 32 + 31 > qb * 64;
        if (blk1 >= 0 && !diag) return; /* warp-uniform: two blocks below the diagonal */
        const int lim0 = diag ? row0 : 0x7fffffff, lim1 = diag ? row0 + 8 : 0x7fffffff;
#pragma unroll
        for (int nt = 0; nt < WR_NT; nt++) {
            const int t = nt >> 2;
            const bool keep = t == 0 || blk1 >= 0;
            const int key = (t ? blk1 : blk0) * 32 + (nt & 3) * 8 + 2 * c4;
            S[nt * 4 + 0] = keep && key <= lim0 ? S[nt * 4 + 0] : SALE_NEG_INF;
            S[nt * 4 + 1] = keep && key + 1 <= lim0 ? S[nt * 4 + 1] : SALE_NEG_INF;
            S[nt * 4 + 2] = keep && key <= lim1 ? S[nt * 4 + 2] : SALE_NEG_INF;
            S[nt * 4 + 3] = keep && key + 1 <= lim1 ? S[nt * 4 + 3] : SALE_NEG_INF;
        }
    }
    SALE_DEV void release(int s) {
        __syncwarp();
        if (lane == 0) dw_mbar_arrive(EMPTY + 8 * s);
    }
    /* this warp's 16 rows of O, normalised (i0, i1: 1 / l of its two rows)
     * and packed to the dtype, into its 4 KB at wb by stmatrix.x4 (n8
     * blocks nt, nt + 1 a step); at(nt): the byte offset of the row this
     * lane gives (the staged layout or TMA's) */
    template <class At> SALE_DEV void stage_o(sale_u32 wb, float i0, float i1, At at) {
#pragma unroll
        for (int nt = 0; nt < 16; nt += 2) {
            const sale_u32 a = wb + (sale_u32)at(nt);
            asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(a),
                         "r"(sale_pack2(O[nt * 4 + 0] * i0, O[nt * 4 + 1] * i0)),
                         "r"(sale_pack2(O[nt * 4 + 2] * i1, O[nt * 4 + 3] * i1)),
                         "r"(sale_pack2(O[nt * 4 + 4] * i0, O[nt * 4 + 5] * i0)),
                         "r"(sale_pack2(O[nt * 4 + 6] * i1, O[nt * 4 + 7] * i1))
                         : "memory");
        }
    }
    /* O / l of the row through buf, the 16 KB K half of its last tile's
     * stage (every wgmma of the row done; the caller releases the stage
     * after): warp w writes its 16 rows into buf + 4 KB w in the
     * accumulator layout (stmatrix; the 16-byte chunks of a 256-byte row
     * XOR-swizzled by the row, so neither side has bank conflicts), reads
     * them back as 16-byte chunks and stores two whole rows a
     * warp-instruction: 8 STG.128 a thread where the direct store issues
     * 32 four-byte STG, each of 16 bytes in 8 rows (the store was 16% of
     * the consumers' time at d ~ 0.01: NOTES, fifteenth session). Needs O
     * 16-byte aligned (base and strides); lse as store() writes it.
     * With O's tensor map (p.o_tma: sale_attention makes it), the warp's
     * 16 rows go out as two TMA boxes instead: stmatrix in the map's
     * 128-byte swizzle, then lane 0 issues the two copies and waits until
     * they have read the stage (the caller's release hands it back to the
     * issuer after that). The read-back and the 8 16-byte stores a thread,
     * ~16% of the consumers' samples at d ~ 0.01 (nineteenth session's
     * ncu), become two instructions of one lane. */
    SALE_DEV void store_staged(const sale_tma_params &tp, sale_u32 buf, int w) {
        const sale_params &p = tp.p;
        float lt0, lt1, i0, i1;
        row_sums(lt0, lt1, i0, i1);
        const sale_u32 wb = buf + (sale_u32)w * 4096u;
        /* the stage's last writers were wgmma reads (async proxy); these are generic writes */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        if (p.o_tma) {
            stage_o(wb, i0, i1, [&](int nt) { return sale_layout_wr_tma_stsm(lane, nt); });
            /* each lane's generic writes, then the async proxy's reads (lane 0's copies) */
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
            __syncwarp();
            if (lane == 0) {
                const int r0w = qb * 64 + w * 16;
                dw_tma_store_4d(&tp.to, wb, 0, r0w, h, b);
                dw_tma_store_4d(&tp.to, wb + 2048u, 64, r0w, h, b);
                dw_bulk_commit();
                dw_bulk_wait_read();
            }
            if (!SALE_WR_TIMELINE) store_lse(p, b, h, lt0, lt1); /* (a timeline build: lse holds the stamps) */
            return;
        }
        /* lane L: row L % 8 of matrix L / 8 (sale_layout_wr_stsm) */
        stage_o(wb, i0, i1, [&](int nt) { return sale_layout_wr_stsm(lane, nt); });
        __syncwarp();
        const int r0w = qb * 64 + w * 16; /* this warp's first row */
        sale_u16 *og = (sale_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int r = sale_layout_wr_ldrow(lane, k), ch = lane & 15;
            sale_u32 v0, v1, v2, v3;
            asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3)
                         : "r"(wb + (sale_u32)sale_layout_wr_ochunk(r, ch))
                         : "memory");
            /* one 16-byte store (a plain uint4 store compiled into four STG.E: call 2's SASS) */
            if (r0w + r < p.N)
                asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(og + (long long)(r0w + r) * p.o_sn + ch * 8),
                             "r"(v0), "r"(v1), "r"(v2), "r"(v3)
                             : "memory");
        }
        /* generic writes before the ring's next TMA write of this stage */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        if (!SALE_WR_TIMELINE) store_lse(p, b, h, lt0, lt1);
    }
    /* Q is free for the next row: this row's fragments are in registers.
     * The fragments were read by ldmatrix (the generic proxy) and the next
     * Q lands by TMA (the async proxy): without a proxy fence nothing orders
     * the two, and an ldmatrix still reading when the issuer, already waiting
     * on QEMPTY, started the next row's copy read a few of its rows from the
     * next Q. Rare, and only where rows are short (the issuer already
     * waits): 9 of 32,000 two-pass calls of 4 threads x 4 streams at N 2048
     * had a few rows of one warp wrong, up to the whole value, lse too (the
     * last query blocks, 1-3 tiles a row); with the fence 0 of 96,000
     * (twenty-second session, threads_on_their_own_streams_equal_one_thread
     * with SALE_TEST_THREAD_MODES=two-pass). Each lane fences its own reads,
     * then the warp's arrive releases them. */
    SALE_DEV void release_q() {
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncwarp();
        if (lane == 0) dw_mbar_arrive(QEMPTY);
    }
    /* the row's nkt >= 1 tiles, the CTA's tiles i0 .. i0 + nkt - 1: S(j) and
     * P V(j - 1) in flight together */
    SALE_DEV void consume(int i0) {
        float a0, a1;
        dw_mbar_wait(KFULL + 8 * (i0 % ST), (i0 / ST) & 1);
        WR_TL(5, tl_now());
        header(i0 % ST);
        dw_fence();
        issue_s_qa(i0 % ST);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(S);
        WR_TL(6, tl_now());
        mask_pair();
        softmax(a0, a1);
        WR_TL(7, tl_now());
        for (int j = 1; j < nkt; j++) {
            const int t = i0 + j, sj = t % ST, sp = (t - 1) % ST;
            convert_p();
#if SALE_WR_TIMELINE
            const unsigned long long tw = tl_now();
#endif
            dw_mbar_wait(KFULL + 8 * sj, (t / ST) & 1);
            header(sj);
            dw_mbar_wait(VFULL + 8 * sp, ((t - 1) / ST) & 1);
#if SALE_WR_TIMELINE
            const unsigned long long ti = tl_now();
            tlw += ti - tw;
            if (j < 8) WR_TL(8 + 3 * (j - 1), ti);
#endif
            dw_fence();
            issue_s_qa(sj);
            dw_commit();
            issue_pv(sp);
            dw_commit();
            dw_wait<1>(); /* S(j) is in; P V(j - 1) may still run */
            dw_fence_acc(S);
            if (j < 8) WR_TL(9 + 3 * (j - 1), tl_now());
            mask_pair();
            softmax(a0, a1);
            dw_wait<0>();
            dw_fence_acc(O);
            if (j < 8) WR_TL(10 + 3 * (j - 1), tl_now());
            /* warp-uniform: a warp whose rows kept their maxima skips the 64 multiplies */
            if (__any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) rescale(a0, a1);
            release(sp);
        }
        const int tl = i0 + nkt - 1, sl = tl % ST;
        convert_p();
        dw_mbar_wait(VFULL + 8 * sl, (tl / ST) & 1);
        dw_fence();
        issue_pv(sl);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(O);
        WR_TL(30, tl_now());
        WR_TL(29, tlw);
        /* stage sl is released by the caller, after the store (store_staged) */
    }
};

/* Persistent: gridDim.x <= the items (the host launches two CTAs an SM);
 * each CTA takes mask rows in wr_item's order from a counter in the
 * workspace, so that the rows in flight stay together in that order (what
 * keeps a KV head's K/V in L2). The ring, its phases and the Q tile carry
 * over from row to row: while the consumers finish a row (its last P V,
 * the normalisation, the store), the producer has taken the next one, read
 * its mask words and issued its first tiles and, once the consumers' last S
 * is complete (QEMPTY), its Q (the scheduler and the issuer: see schedule
 * and issue). Any grid is correct. */
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32 + 96, 2) sale_attend_rows_kernel(const __grid_constant__ sale_tma_params tp) {
    const sale_params &p = tp.p;
    if (p.pick && dw_pick_two_row(p)) return; /* this call runs the two-row kernel */
    extern __shared__ __align__(1024) unsigned char wr_smem[];
    const sale_u32 base = sale_smem_addr(wr_smem);
    if (base & 1023u) __trap(); /* the 128-byte swizzle needs a 1 KB-aligned base (no slack: see above) */
    RowWg st;
    st.sQ = base + RowWg::OFF_Q;
    st.sK = base + RowWg::OFF_K;
    st.sV = base + RowWg::OFF_V;
    const sale_u32 bar = base + RowWg::OFF_BAR;
    st.QFULL = bar;
    st.KFULL = bar + 8;
    st.VFULL = bar + 8 + 8 * RowWg::ST;
    st.EMPTY = bar + 8 + 16 * RowWg::ST;
    st.QEMPTY = bar + 8 + 24 * RowWg::ST;
    st.HDR = bar + 96;    /* after 2 + 3 ST <= 11 barriers: ST x 8 bytes */
    st.INFO = bar + 128;  /* the row being loaded: {b, h, qb, tile count} */
    st.LFULL = bar + 144; /* the queue's barriers, WR_QS each */
    st.LEMPTY = bar + 144 + 8 * WR_QS;
    st.LQ = bar + 256;    /* the queue: WR_QS slots of WR_QSLOT bytes */
    const int tid = threadIdx.x, warp = __shfl_sync(0xffffffffu, tid >> 5, 0);
    if (tid == 128) {
        dw_mbar_init(st.QFULL, 1);
        dw_mbar_init(st.QEMPTY, 4); /* one arrive per consumer warp */
        for (int s = 0; s < RowWg::ST; s++) {
            dw_mbar_init(st.KFULL + 8 * s, 1);
            dw_mbar_init(st.VFULL + 8 * s, 1);
            dw_mbar_init(st.EMPTY + 8 * s, 4); /* one arrive per consumer warp */
        }
        for (int s = 0; s < WR_QS; s++) {
            dw_mbar_init(st.LFULL + 8 * s, 1);  /* the scheduler's lane 0 */
            dw_mbar_init(st.LEMPTY + 8 * s, 1); /* the issuer */
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (warp >= 4) { /* the producer warpgroup: registers given back first */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(WR_PRODUCER_REGS));
        if (warp == 5) /* the scheduler: rows taken, counted and walked into the queue */
            /* a row is taken when the queue has room for it, not earlier (a
             * ticket held a whole row ahead doubled the DRAM bytes at d ~ 0.2:
             * NOTES, fourteenth session) */
            st.schedule(p, (unsigned int *)p.sync + sale_layout_rows_sync(p.B, p.Hq, p.Hkv),
                        (unsigned int)p.nqb * (unsigned int)p.Hq * (unsigned int)p.B, tid & 31);
        else if (tid == 128) /* the issuer: lane 0 of warp 4 alone; warps 6-7 have nothing to do */
            st.issue(tp);
        return;
    }
    /* the consumers, on the registers the producers gave back (ptxas budgets
     * only the code that the raise dominates) */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(WR_CONSUMER_REGS));
    st.lane = tid & 31;
    st.c4 = st.lane & 3;
    st.sl2 = p.scale_log2;
    st.kdesc = dw_desc(st.sK, 16, 1024);
    st.vdesc = dw_desc(st.sV, WR_HALF, 1024);
    /* the staged store's 16-byte accesses need O 16-byte aligned */
    const bool o16 = (((unsigned long long)p.o | (unsigned long long)((p.o_sb | p.o_sh | p.o_sn) * 2)) & 15u) == 0;
    int i = 0;
    for (int r = 0;; r++) {
#if SALE_WR_TIMELINE
        const unsigned long long t_wait = RowWg::tl_now();
#endif
        dw_mbar_wait(st.QFULL, r & 1);
        /* lane 0 reads the row and hands it round: the issuer rewrites INFO
         * once QEMPTY completes, which lane 0 of each warp arrives on, so a
         * read by the other lanes would be ordered before that write only
         * through __syncwarp (racecheck reports it: fifteenth session) */
        int v0 = 0, v1 = 0, v2 = 0, v3 = 0;
        if (st.lane == 0)
            asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3)
                         : "r"(st.INFO));
        st.b = __shfl_sync(0xffffffffu, v0, 0);
        if (st.b < 0) break;
        st.h = __shfl_sync(0xffffffffu, v1, 0);
        st.qb = __shfl_sync(0xffffffffu, v2, 0);
        st.nkt = __shfl_sync(0xffffffffu, v3, 0);
#if SALE_WR_TIMELINE
        st.tl = nullptr;
        st.tlw = 0;
        if (p.lse && warp == 0 && st.lane == 0 && st.qb * 64 + 64 <= p.N && st.nkt > 0) {
            st.tl = (unsigned long long *)p.lse + (((long long)st.b * p.Hq + st.h) * p.N + st.qb * 64) / 2;
            unsigned int smid;
            asm volatile("mov.u32 %0, %%smid;\n" : "=r"(smid));
            st.tl_put(0, WR_TL_MAGIC << 48 | (unsigned long long)smid << 32 | (unsigned int)st.nkt);
            st.tl_put(1, (unsigned long long)blockIdx.x << 32 | (unsigned int)r);
            st.tl_put(2, t_wait);
            st.tl_put(3, RowWg::tl_now());
        }
#endif
        st.load_qa(warp);
        st.release_q();
        WR_TL_AT(st, 4);
        st.row0 = st.qb * 64 + warp * 16 + (st.lane >> 2);
        st.m0 = st.m1 = SALE_NEG_INF;
        st.l0 = st.l1 = 0.f;
#pragma unroll
        for (int k = 0; k < 64; k++) st.O[k] = 0.f;
        if (st.nkt > 0) {
            st.consume(i);
            const int sl = (i + st.nkt - 1) % RowWg::ST;
            if (o16) st.store_staged(tp, st.sK + sl * WR_KT, warp);
            else st.store(p, st.b, st.h);
            st.release(sl);
            WR_TL_AT(st, 31);
        } else {
            st.store(p, st.b, st.h);
        }
        i += st.nkt;
    }
    /* the TMA stores complete (they have long read their stages) before the CTA ends */
    if (st.lane == 0 && p.o_tma) dw_bulk_wait_all();
}

#endif
