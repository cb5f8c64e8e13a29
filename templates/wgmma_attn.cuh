/* wgmma_attn.cuh — dense and attend on Hopper (sm_90a, head_dim 128): causal
 * flash attention on wgmma + TMA, FA3-style. The mma.sync kernels of these
 * families are SaleAttn<MODE> in sale_common.cuh; this one is chosen by
 * dense.cu / attend.cu when SALE_ARCH == 901, SALE_HEAD_DIM == 128 and
 * SALE_WARPS == 12 (the host's sale_layout_wgmma() says the same). Dense is
 * the version measured as "wg_intra_st3" in bench/wgmma/NOTES.md (the
 * attention floor, ~600 TF/s at 64K on an H200, cuDNN's rate). Attend
 * (two-pass, second pass) runs the same loop over the kept blocks of two
 * 64-row mask rows, one a consumer warpgroup: one query block of two heads
 * of a GQA group, paired by kept count (dw_pair_by_kept), else two query
 * blocks of one head. The producer walks
 * the union of the two rows, four blocks a tile (DwUnion: four 32-row TMA
 * boxes of K and of V, the dense tile's shape), and writes each tile's
 * blocks and each row's own bits into a header beside the stage; both
 * warpgroups consume every tile, each setting the scores of the other
 * row's blocks (and of an empty last slot) to -inf (DwTileHeaders,
 * mask_quad). The union costs x1.2-1.4 work on the structured inputs and
 * halves the K/V bytes a row moves (bench/RESULTS.md, fourth session).
 * The attend is persistent (sixteenth session): one CTA an SM takes the
 * work items from a counter; warp 1 (the scheduler) pairs, counts and walks
 * each item's union into a queue in shared memory, lane 0 of warp 0 (the
 * issuer) turns it into the copies; the ring and the Q tile carry over
 * from item to item (bench/wgmma/attn_persist_model.py checks the barrier
 * protocol). sale_attention runs this attend above the 128K length bucket;
 * up to it, the rows kernel (wgmma_rows.cuh: one mask row a CTA, two CTAs
 * an SM).
 *
 * CTA: 128 query rows of one (batch, q head) (attend: two 64-row mask rows),
 * heaviest query blocks first;
 * SALE_WARPS = 12 warps = three warpgroups:
 *   warpgroup 0, the producer: one thread issues TMA loads (Q once, then the K
 *     and V tiles of DW_BN keys x 128 d, as two 64-column boxes with the
 *     128-byte swizzle) into a SALE_STAGES-deep ring guarded by mbarriers
 *     (KFULL/VFULL: landed; EMPTY: every consumer warp is done with the stage);
 *     attend: Q as two 64-row boxes (one per row), K/V as 32-row boxes;
 *   warpgroups 1, 2, the consumers, 64 query rows each:
 *     S = Q K^T : 8 x wgmma m64nDW_BNk16 (A = Q tile, B = K tile, both from
 *                 shared memory through 128B-swizzle descriptors, K-major);
 *     online softmax in registers (exp2 of score*scale*log2e - max*scale*log2e);
 *     O += P V  : DW_BN/16 x wgmma m64n128k16 with P from registers (the accumulator
 *                 layout repacked to the dtype) and V from shared memory as an
 *                 MN-major operand (transpose bit; LBO between the two
 *                 64-column halves, SBO 1 KB per 8 keys);
 *     S(j) and P V(j-1) are issued together, so the softmax of tile j runs
 *     while P V(j-1) is on the tensor cores (intra-warpgroup overlap).
 * The causal mask is applied on the diagonal tile only; rows >= N are computed
 * on TMA's zero fill and never stored. Outputs: o (any strides with a
 * contiguous last dimension), lse when asked, and the dense mask (every causal
 * block) when asked, in the caller's block_q rows (p.nqb). */
#ifndef SALE_WGMMA_ATTN_CUH
#define SALE_WGMMA_ATTN_CUH

#define DW_ATTEND (SALE_FAMILY == 3) /* else dense */

#define DW_BM 128   /* query rows per CTA */
/* keys per K/V tile: 128 (the attention floor's shape); attend's tile is
 * four kept 32-key blocks wherever they lie (four 32-row TMA boxes) */
#define DW_BN 128
#define DW_NT (DW_BN / 8)  /* n8 column groups of S: S holds DW_BN / 2 floats a thread */
#define DW_BPT (DW_BN / 32) /* mask blocks per key tile */
#define DW_TILE 32768 /* the Q tile, 128 x 128 of the dtype: two 16 KB halves (d 0..63, d 64..127) */
#define DW_HALF 16384
#define DW_KTILE (DW_BN * 256) /* a K or V tile: DW_BN x 128, two halves of DW_BN rows x 128 bytes */
#define DW_KHALF (DW_BN * 128)
#define DW_HDR 32 /* attend: a stage's tile header (4 block indices, 2 own masks) */
/* registers after setmaxnreg: the launch gives every thread 168 (65536 /
 * 384, rounded down to 8: 64512 in all); the consumers' increase must be
 * covered by what the producer warpgroup frees, or setmaxnreg.inc waits
 * forever: 128 (168 - P) >= 256 (C - 168). Dense: P 24, C 240. Attend's
 * producer warpgroup holds the scheduler (the union's counts and walk, the
 * queue) and the issuer: at P 40 they spilled 148 bytes; P 56, C 224 (no
 * spills in either role). */
#define DW_PRODUCER_REGS (DW_ATTEND ? 56 : 24)
#define DW_CONSUMER_REGS (DW_ATTEND ? 224 : 240)
static_assert(128 * (168 - DW_PRODUCER_REGS) >= 256 * (DW_CONSUMER_REGS - 168), "setmaxnreg: the consumers' registers must be freed by the producer"); /* attend: query blocks a chunk of the CTA order */
static_assert(8 + 24 * SALE_STAGES <= (DW_ATTEND ? 80 : 120) && 128 + DW_HDR * SALE_STAGES <= 224,
              "barriers (attend: QEMPTY at +80, the queue's at +88), (attend) tile headers from +128, INFO at +224, in 256 B");

static_assert(SALE_WARPS == 12, "the wgmma dense kernel is three warpgroups");
static_assert(SALE_STAGES == 2 || SALE_STAGES == 3, "the wgmma dense ring has 2 or 3 stages");
/* the same sum as sale_layout_smem() for this configuration: 1 KB of slack to
 * align the tiles to the 1 KB swizzle atom, Q + ST x (K, V), 256 B of barriers */
static constexpr sale_layout_cfg DW_LCFG = {SALE_FAMILY, 128, SALE_BLOCK_Q, SALE_BLOCK_K, SALE_BLOCK_SEG,
                                            SALE_LOCAL_WINDOW, SALE_DTYPE, SALE_EST_BITS, SALE_WARPS, SALE_STAGES,
                                            SALE_ARCH};
static_assert(sale_layout_wgmma(&DW_LCFG), "the host would not launch this kernel for this key");
static_assert(sale_layout_smem(&DW_LCFG) == 1024u + DW_TILE + 2u * SALE_STAGES * DW_KTILE + 256u +
                                                (DW_ATTEND ? SALE_WG_QUEUE_BYTES : 0u),
              "shared-memory layout of the wgmma dense kernel and sale_layout_smem() disagree");

#include "wgmma_mma.cuh"     /* dw_mma_ss, dw_mma_rs (and wgmma_common.cuh) */
#include "wgmma_softmax.cuh" /* DwRowState: a consumer warpgroup's S, O, P, online softmax, store */

/* ------------------------------------------------------------------ tiles */
#if !DW_ATTEND
/* dense: the key tiles 0..last a CTA visits, ascending. Producer and
 * consumers walk the same list. */
struct DwTiles {
    int cur, last, kt; /* kt: the tile taken last (DenseWg::consume) */
    SALE_DEV void begin(int last_tile) {
        cur = 0;
        last = last_tile;
    }
    /* the next tile, or -1 */
    SALE_DEV int next() { return cur <= last ? cur++ : -1; }
    /* the consumer's step: take the next tile; mask its scores (the causal mask on the diagonal tile) */
    SALE_DEV void step() { kt = next(); }
    template <class W> SALE_DEV void mask(W &w, int) const {
        if (w.diagonal(kt)) w.mask_diagonal(kt);
    }
};
#endif

#if DW_ATTEND
#include "wgmma_union.cuh" /* DwUnion: the union of the two rows, tile by tile */

/* attend is persistent: the scheduler (warp 1) takes the work items and
 * walks each one's union into a queue of DW_PQS slots in shared memory (a
 * 32-byte header {x, tiles, tiles of this slot, b; h0, h1, q0, q1}, then
 * DW_PQT tiles of 32 bytes {blk[4]; own[0], own[1]}); LFULL / LEMPTY hand a
 * slot over and back. The issuer (lane 0 of warp 0) turns it into the
 * ring's copies and the Q tiles. */
#define DW_PQS 2
#define DW_PQT 16
#define DW_PQSLOT (32 + 32 * DW_PQT)
static_assert(DW_PQS * DW_PQSLOT == SALE_WG_QUEUE_BYTES, "the queue as sale_layout_smem() counts it");
static_assert(DW_PQT >= SALE_STAGES, "the issuer copies a work item's first SALE_STAGES tiles from its first slot");

/* the consumer's view of attend's tiles: the producer wrote each tile's
 * blocks and both warpgroups' own bits into the stage's header (shared
 * memory, before the arrive on the stage's KFULL barrier that the consumer
 * has waited on when it masks), so the consumers never read the mask rows */
struct DwTileHeaders {
    sale_u32 hdr;  /* shared address of stage 0's header (DW_HDR bytes a stage) */
    int cw, first_row;
    int blk[4];    /* the loaded tile's blocks and this warpgroup's own bits */
    sale_u32 own;
    /* the header of stage s (its KFULL barrier waited on): does the tile hold a
     * block of this warpgroup's row? Lane 0 reads (the lane that later arrives
     * on the stage's EMPTY barrier: compute-sanitizer's racecheck sees the
     * read ordered before the producer's next write) and hands it round. */
    template <class W> SALE_DEV bool load(W &w, int s) {
        const sale_u32 a = hdr + s * DW_HDR;
        int b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        sale_u32 o = 0u;
        if (w.lane == 0) {
            asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n" : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(a));
            asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(o) : "r"(a + 16 + 4 * cw));
        }
        blk[0] = __shfl_sync(0xffffffffu, b0, 0);
        blk[1] = __shfl_sync(0xffffffffu, b1, 0);
        blk[2] = __shfl_sync(0xffffffffu, b2, 0);
        blk[3] = __shfl_sync(0xffffffffu, b3, 0);
        own = __shfl_sync(0xffffffffu, o, 0);
        return own != 0u;
    }
    template <class W> SALE_DEV void mask(W &w) const { w.mask_quad(blk, own, first_row); }
};
#endif

/* ------------------------------------------------------------------ stages */
struct DenseWg : DwRowState<DW_BN, DW_HALF> {
    static constexpr int ST = SALE_STAGES;
    /* shared memory (offsets from the 1 KB-aligned base) */
    static constexpr sale_u32 OFF_Q = 0, OFF_K = DW_TILE, OFF_V = DW_TILE + ST * DW_KTILE,
                              OFF_BAR = DW_TILE + 2 * ST * DW_KTILE;

    sale_u32 sQ, sK, sV, QFULL, KFULL, VFULL, EMPTY, HDR;
    /* the Q tile, the ring and its barriers from the 1 KB-aligned base of
     * dynamic shared memory; returns the barriers' area (OFF_BAR) */
    SALE_DEV sale_u32 place(sale_u32 base) {
        sQ = base + OFF_Q;
        sK = base + OFF_K;
        sV = base + OFF_V;
        const sale_u32 bar = base + OFF_BAR;
        QFULL = bar;
        KFULL = bar + 8;
        VFULL = bar + 8 + 8 * ST;
        EMPTY = bar + 8 + 16 * ST;
        return bar;
    }
    int qb, b, h, kvh, nkt;
    /* the last key tile the CTA's rows see; a tile past the CTA's first row needs the causal mask */
    SALE_DEV int last_tile() const { return ((qb + 1) * DW_BM) / DW_BN - 1; }
    SALE_DEV bool diagonal(int kt) const { return (kt + 1) * DW_BN - 1 > qb * DW_BM; }

#if !DW_ATTEND
    /* the producer: Q once, then K and V of key tiles 0..qb into the ring */
    SALE_DEV void produce(const sale_tma_params &tp) {
        dw_mbar_expect_tx(QFULL, DW_TILE);
        dw_tma_4d(sQ, &tp.tq, 0, qb * DW_BM, h, b, QFULL);
        dw_tma_4d(sQ + DW_HALF, &tp.tq, 64, qb * DW_BM, h, b, QFULL);
        DwTiles tl;
        tl.begin(last_tile());
        for (int i = 0, kt; (kt = tl.next()) >= 0; i++) {
            const int s = i % ST;
            dw_mbar_wait(EMPTY + 8 * s, ((i / ST) & 1) ^ 1);
            dw_mbar_expect_tx(KFULL + 8 * s, DW_KTILE);
            dw_tma_4d(sK + s * DW_KTILE, &tp.tk, 0, kt * DW_BN, kvh, b, KFULL + 8 * s);
            dw_tma_4d(sK + s * DW_KTILE + DW_KHALF, &tp.tk, 64, kt * DW_BN, kvh, b, KFULL + 8 * s);
            dw_mbar_expect_tx(VFULL + 8 * s, DW_KTILE);
            dw_tma_4d(sV + s * DW_KTILE, &tp.tv, 0, kt * DW_BN, kvh, b, VFULL + 8 * s);
            dw_tma_4d(sV + s * DW_KTILE + DW_KHALF, &tp.tv, 64, kt * DW_BN, kvh, b, VFULL + 8 * s);
        }
    }
#endif

#if DW_ATTEND
    /* attend's producer: the two query tiles (64 rows each, warpgroup w's at
     * sQ + w x 8 KB in each half), then the union's tiles of four blocks,
     * each block as two 32-row boxes of K and of V */
    sale_u32 QEMPTY, INFO, LFULL, LEMPTY, LQ;
    SALE_DEV sale_u32 pslot(int k) const { return LQ + (sale_u32)(k % DW_PQS) * DW_PQSLOT; }
    /* the scheduler, warp 1, all 32 lanes: an item when a slot is free (so
     * the items in flight stay within a slot of the work order, which keeps
     * one KV head's K/V in L2), its rows paired by kept count, their union
     * counted (every lane) and walked (lane 0) into the queue */
    SALE_DEV void schedule(const sale_params &p, unsigned int *ctr, unsigned int total, int lane) {
        int k = 0;
        for (;;) {
            if (lane == 0) dw_mbar_wait(LEMPTY + 8 * (k % DW_PQS), ((k / DW_PQS) & 1) ^ 1);
            unsigned int x = 0;
            if (lane == 0) x = atomicAdd(ctr, 1u);
            x = __shfl_sync(0xffffffffu, x, 0);
            if (x >= total) break;
            int ib, ih[2], iq[2];
            if (!dw_attend_item(p, (int)x, ib, ih, iq)) continue; /* rows past N: nothing to do */
            dw_pair_by_kept(p, ib, ih, iq[0]);
            const sale_u32 *r[2];
            int hi[2];
#pragma unroll
            for (int w = 0; w < 2; w++) {
                r[w] = iq[w] < p.nqb ? (const sale_u32 *)p.mask + (((long long)ib * p.Hq + ih[w]) * p.nqb + iq[w]) * p.nkw
                                     : 0;
                hi[w] = ((iq[w] * 64 + 64 < p.N ? iq[w] * 64 + 64 : p.N) - 1) / 32;
            }
            DwUnion pr;
            pr.begin(r[0], hi[0], r[1], hi[1]);
            int n0, n1, n2;
            pr.counts(lane, n0, n1, n2);
            if (lane == 0) {
                const int hd[8] = {(int)x, DwUnion::tiles(n0, n1, n2), 0, ib, ih[0], ih[1], iq[0], iq[1]};
                pr.rem0 = n0;
                pr.rem1 = n1;
                pr.rem2 = n2;
                int t = 0, blk[4];
                sale_u32 own[2];
                while (pr.next(blk, own)) {
                    if (t == DW_PQT) { /* the slot is full: hand it over, wait for the next */
                        publish(k++, hd, t);
                        t = 0;
                        dw_mbar_wait(LEMPTY + 8 * (k % DW_PQS), ((k / DW_PQS) & 1) ^ 1);
                    }
                    const sale_u32 a = pslot(k) + 32u + 32u * (sale_u32)t;
                    asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(blk[0]), "r"(blk[1]),
                                 "r"(blk[2]), "r"(blk[3]) : "memory");
                    asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(a + 16), "r"(own[0]), "r"(own[1]) : "memory");
                    t++;
                }
                publish(k++, hd, t); /* the item's last slot (0 tiles for an empty item) */
            }
            k = __shfl_sync(0xffffffffu, k, 0);
        }
        if (lane == 0) {
            const int end[8] = {-1, 0, 0, 0, 0, 0, 0, 0};
            publish(k, end, 0); /* a free slot: its LEMPTY was waited on above */
            /* the last CTA done taking items sets both counters back to zero */
            if (atomicAdd(ctr + 1, 1u) == gridDim.x - 1) {
                atomicExch(ctr, 0u);
                atomicExch(ctr + 1, 0u);
            }
        }
    }
    /* slot k's header (hd, with t tiles in this slot), then the arrive on LFULL */
    SALE_DEV void publish(int k, const int (&hd)[8], int t) const {
        const sale_u32 a = pslot(k);
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(hd[0]), "r"(hd[1]), "r"(t), "r"(hd[3])
                     : "memory");
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(a + 16), "r"(hd[4]), "r"(hd[5]), "r"(hd[6]),
                     "r"(hd[7]) : "memory");
        dw_mbar_arrive(LFULL + 8 * (k % DW_PQS));
    }
    /* slot k's header, once published */
    SALE_DEV void take(int k, int (&hd)[8]) const {
        dw_mbar_wait(LFULL + 8 * (k % DW_PQS), (k / DW_PQS) & 1);
        asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n" : "=r"(hd[0]), "=r"(hd[1]), "=r"(hd[2]), "=r"(hd[3])
                     : "r"(pslot(k)));
        asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n" : "=r"(hd[4]), "=r"(hd[5]), "=r"(hd[6]), "=r"(hd[7])
                     : "r"(pslot(k) + 16u));
    }
    /* item r's two query tiles, once the consumers are done with item r - 1
     * (QEMPTY), with {b, h0, h1, q0, q1, tiles} in INFO first (the arrive on
     * QFULL releases both; an item without tiles loads no Q) */
    SALE_DEV void load_q(const sale_tma_params &tp, int r, const int (&hd)[8]) {
        if (r > 0) dw_mbar_wait(QEMPTY, (r - 1) & 1);
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(INFO), "r"(hd[3]), "r"(hd[4]), "r"(hd[5]),
                     "r"(hd[6]) : "memory");
        asm volatile("st.shared.v2.s32 [%0], {%1, %2};\n" ::"r"(INFO + 16), "r"(hd[7]), "r"(hd[1]) : "memory");
        if (hd[1] == 0) {
            dw_mbar_arrive(QFULL);
            return;
        }
        dw_mbar_expect_tx(QFULL, DW_TILE);
#pragma unroll
        for (int w = 0; w < 2; w++) {
            dw_tma_4d(sQ + w * 8192, &tp.tq, 0, hd[6 + w] * 64, hd[4 + w], hd[3], QFULL);
            dw_tma_4d(sQ + DW_HALF + w * 8192, &tp.tq, 64, hd[6 + w] * 64, hd[4 + w], hd[3], QFULL);
        }
    }
    /* the issuer, lane 0 of warp 0: items from the queue, in its order. Q
     * after the item's first min(ST, tiles) tiles: their stages are free once
     * the consumers finish item r - 1 (they release every tile of it before
     * QEMPTY), so those copies run under the previous item's last P V and
     * store; a later tile needs a stage that only this item's consumption
     * frees, which needs Q. */
    SALE_DEV void issue(const sale_tma_params &tp) {
        const sale_params &p = tp.p;
        int i = 0, k = 0, r = 0;
        for (;; r++) {
            int hd[8];
            take(k, hd);
            if (hd[0] < 0) break;
            b = hd[3];
            kvh = hd[4] / p.group;
            const int nt = hd[1], qat = i + (nt < ST ? nt : ST);
            for (int done = 0;;) {
                const int t = hd[2];
                for (int j = 0; j < t; j++) {
                    if (i == qat) load_q(tp, r, hd);
                    int blk[4];
                    sale_u32 own[2];
                    const sale_u32 a = pslot(k) + 32u + 32u * (sale_u32)j;
                    asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n"
                                 : "=r"(blk[0]), "=r"(blk[1]), "=r"(blk[2]), "=r"(blk[3])
                                 : "r"(a));
                    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(own[0]), "=r"(own[1]) : "r"(a + 16));
                    const int s = i % ST;
                    dw_mbar_wait(EMPTY + 8 * s, ((i / ST) & 1) ^ 1);
                    asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(HDR + s * DW_HDR), "r"(blk[0]),
                                 "r"(blk[1]), "r"(blk[2]), "r"(blk[3]) : "memory");
                    asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(HDR + s * DW_HDR + 16), "r"(own[0]),
                                 "r"(own[1]) : "memory");
                    load_quad(sK + s * DW_KTILE, &tp.tk, blk, KFULL + 8 * s);
                    load_quad(sV + s * DW_KTILE, &tp.tv, blk, VFULL + 8 * s);
                    i++;
                }
                dw_mbar_arrive(LEMPTY + 8 * (k % DW_PQS));
                k++;
                done += t;
                if (done >= nt) break;
                take(k, hd);
            }
            if (i == qat) load_q(tp, r, hd);
        }
        /* the end: INFO's b = -1 (QFULL completes by the arrive alone) */
        if (r > 0) dw_mbar_wait(QEMPTY, (r - 1) & 1);
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(INFO), "r"(-1), "r"(0), "r"(0), "r"(0)
                     : "memory");
        dw_mbar_arrive(QFULL);
    }
    /* one K or V stage of a tile: block blk[t] (an empty slot repeats blk[0])
     * into rows 32t..32t+31 of both 64-column halves, on barrier bar */
    SALE_DEV void load_quad(sale_u32 dst, const sale_tmap *map, const int (&blk)[4], sale_u32 bar) const {
        dw_mbar_expect_tx(bar, DW_KTILE);
#pragma unroll
        for (int t = 0; t < 4; t++) {
            const int r = (blk[t] < 0 ? blk[0] : blk[t]) * 32;
            dw_tma_4d(dst + t * 4096, map, 0, r, kvh, b, bar);
            dw_tma_4d(dst + DW_KHALF + t * 4096, map, 64, r, kvh, b, bar);
        }
    }
#endif

    /* a consumer warpgroup: 64 query rows (cw = 0, 1); its S, O, P, their
     * wgmma and the softmax state: DwRowState (wgmma_softmax.cuh) */
    /* the diagonal tile: key > row -> -inf (also every key >= N of a row < N) */
    SALE_DEV void mask_diagonal(int kt) {
#pragma unroll
        for (int nt = 0; nt < DW_NT; nt++) {
            const int key = kt * DW_BN + nt * 8 + 2 * c4;
            if (key > row0) S[nt * 4 + 0] = SALE_NEG_INF;
            if (key + 1 > row0) S[nt * 4 + 1] = SALE_NEG_INF;
            if (key > row0 + 8) S[nt * 4 + 2] = SALE_NEG_INF;
            if (key + 1 > row0 + 8) S[nt * 4 + 3] = SALE_NEG_INF;
        }
    }
#if DW_ATTEND
    /* attend: slot t holds block blk[t]; a slot that is not this warpgroup's
     * (own bit clear: the other row's block, or a pad) -> -inf; where a block
     * reaches the rows' diagonal, key > row -> -inf */
    SALE_DEV void mask_quad(const int (&blk)[4], sale_u32 own, int first_row) {
        /* the highest block (a mixed tile is not ascending; empty slots are -1) */
        const int top = max(max(blk[0], blk[1]), max(blk[2], blk[3]));
        const bool diag = top * 32 + 31 > first_row;
        if (own == 15u && !diag) return; /* warpgroup-uniform: four own blocks below the diagonal */
        const int lim0 = diag ? row0 : 0x7fffffff, lim1 = diag ? row0 + 8 : 0x7fffffff;
#pragma unroll
        for (int nt = 0; nt < DW_NT; nt++) { /* selects, no branches */
            const int t = nt >> 2;
            const bool keep = (own >> t) & 1u;
            const int key = blk[t] * 32 + (nt & 3) * 8 + 2 * c4;
            S[nt * 4 + 0] = keep && key <= lim0 ? S[nt * 4 + 0] : SALE_NEG_INF;
            S[nt * 4 + 1] = keep && key + 1 <= lim0 ? S[nt * 4 + 1] : SALE_NEG_INF;
            S[nt * 4 + 2] = keep && key <= lim1 ? S[nt * 4 + 2] : SALE_NEG_INF;
            S[nt * 4 + 3] = keep && key + 1 <= lim1 ? S[nt * 4 + 3] : SALE_NEG_INF;
        }
    }
#endif
    /* one arrive per consumer warp: the stage may be refilled */
    SALE_DEV void release(int s) {
        __syncwarp();
        if (lane == 0) dw_mbar_arrive(EMPTY + 8 * s);
    }

    /* P V of tile j (its P in S) with nothing after it in flight, then the
     * stage is released: the last tile of dense, the last of each attend run */
    SALE_DEV void last_pv(int j) {
        const int sl = j % ST;
        convert_p();
        dw_mbar_wait(VFULL + 8 * sl, (j / ST) & 1);
        dw_fence();
        issue_pv(sl);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(O);
        release(sl);
    }
    /* dense: the key tiles of tl (nkt >= 1: tiles 0..last), S(j) and
     * P V(j-1) in flight together (j: position in the list, kt: the tile);
     * attend walks its tiles in runs instead (consume_runs) */
    template <class Tiles> SALE_DEV void consume(Tiles &tl) {
        tl.step();
        dw_mbar_wait(QFULL, 0);
        float a0, a1;
        dw_mbar_wait(KFULL, 0);
        dw_fence();
        issue_s(0);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(S);
        tl.mask(*this, 0);
        softmax(a0, a1);
        for (int j = 1; j < nkt; j++) {
            tl.step();
            const int sj = j % ST, sp = (j - 1) % ST;
            convert_p();
            dw_mbar_wait(KFULL + 8 * sj, (j / ST) & 1);
            dw_mbar_wait(VFULL + 8 * sp, ((j - 1) / ST) & 1);
            dw_fence();
            issue_s(sj);
            dw_commit();
            issue_pv(sp);
            dw_commit();
            dw_wait<1>(); /* S(j) is in; P V(j-1) may still run */
            dw_fence_acc(S);
            tl.mask(*this, sj);
            softmax(a0, a1);
            dw_wait<0>();
            dw_fence_acc(O);
            rescale(a0, a1);
            release(sp);
        }
        last_pv(nkt - 1);
    }

#if DW_ATTEND
    /* attend: the tiles that hold blocks of this warpgroup's row, in runs of
     * consecutive ones; within a run S(j) and P V(j-1) are in flight
     * together, a run ends with its last P V, and the tiles between runs
     * (the other row's own) are released unread: that consumer works on
     * them meanwhile. Nothing stays held across a skip, so the producer is
     * never waiting on this warpgroup for a stage it has skipped past. */
    SALE_DEV void consume_runs(DwTileHeaders &tl, int i0) {
        /* j: the item's tile; g = i0 + j: the CTA's, which sets the stage and its phase */
        float a0, a1;
        int j = 0;
        for (;;) {
            for (; j < nkt; j++) { /* skip to the run's first tile */
                const int g = i0 + j, s = g % ST;
                dw_mbar_wait(KFULL + 8 * s, (g / ST) & 1);
                if (tl.load(*this, s)) break;
                release(s);
            }
            if (j >= nkt) break;
            int sj = (i0 + j) % ST; /* the run's first tile: S alone */
            dw_fence();
            issue_s(sj);
            dw_commit();
            dw_wait<0>();
            dw_fence_acc(S);
            tl.mask(*this);
            softmax(a0, a1);
            rescale(a0, a1);
            int jp = i0 + j++;
            for (; j < nkt; j++) { /* the run: S(j) under P V(jp) */
                const int g = i0 + j;
                sj = g % ST;
                const int sp = jp % ST;
                dw_mbar_wait(KFULL + 8 * sj, (g / ST) & 1);
                if (!tl.load(*this, sj)) break;
                convert_p();
                dw_mbar_wait(VFULL + 8 * sp, (jp / ST) & 1);
                dw_fence();
                issue_s(sj);
                dw_commit();
                issue_pv(sp);
                dw_commit();
                dw_wait<1>();
                dw_fence_acc(S);
                tl.mask(*this);
                softmax(a0, a1);
                dw_wait<0>();
                dw_fence_acc(O);
                rescale(a0, a1);
                release(sp);
                jp = g;
            }
            last_pv(jp); /* the run's last P V */
        }
    }
#endif

};

#if !DW_ATTEND
/* the dense mask, when asked: every causal block of the query blocks whose
 * first row lies in this CTA's rows, in the mask's geometry (the caller's
 * block_q and block_k: p.mask_bq, p.mask_bk; the dense key fixes block_k),
 * written by the 256 consumer threads */
SALE_DEV void dw_dense_mask(const sale_params &p, int b, int h, int r0, int ctid) {
    const int bq = p.mask_bq ? p.mask_bq : SALE_BLOCK_Q, bk = p.mask_bk ? p.mask_bk : SALE_BLOCK_K; /* 0: a raw launch's */
    for (int qb = (r0 + bq - 1) / bq; qb * bq < r0 + DW_BM && qb < p.nqb; qb++) {
        sale_u32 *row = (sale_u32 *)p.mask + (((long long)b * p.Hq + h) * p.nqb + qb) * p.nkw;
        const int iend = (qb * bq + bq < p.N ? qb * bq + bq : p.N) - 1;
        const int kb_hi = iend / bk;
        for (int w = ctid; w < p.nkw; w += 256) row[w] = sale_mask_word(w, 0, kb_hi);
    }
}

#endif

#if !DW_ATTEND
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32, 1) sale_dense_kernel(const __grid_constant__ sale_tma_params tp) {
    const sale_params &p = tp.p;
    extern __shared__ __align__(1024) unsigned char dw_smem[];
    const sale_u32 base = (sale_smem_addr(dw_smem) + 1023u) & ~1023u;
    DenseWg st;
    const sale_u32 bar = st.place(base);

    /* the warpgroup as a warp-uniform value (a shuffle from lane 0): ptxas keeps
     * the role branches and the wgmma descriptors in uniform registers (R2UR
     * 36 -> 5; dense -1% at 64K and 128K, tenth session) */
    const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
    const int nbh = p.B * p.Hq;
    const int nqt = (p.N + DW_BM - 1) / DW_BM;
    st.qb = nqt - 1 - (int)(blockIdx.x / nbh); /* heaviest query tiles first */
    {
        const int bh = (int)(blockIdx.x % nbh);
        st.b = bh / p.Hq;
        st.h = bh % p.Hq;
        st.kvh = st.h / p.group;
    }
    st.nkt = st.qb + 1; /* dense: key tiles 0..qb (DW_BM == DW_BN) */

    if (tid == 0) {
        dw_mbar_init(st.QFULL, 1);
        for (int s = 0; s < DenseWg::ST; s++) {
            dw_mbar_init(st.KFULL + 8 * s, 1);
            dw_mbar_init(st.VFULL + 8 * s, 1);
            dw_mbar_init(st.EMPTY + 8 * s, 8); /* one arrive per consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(DW_PRODUCER_REGS));
        if (tid == 0) st.produce(tp);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(DW_CONSUMER_REGS));
        const int cw = wg - 1, wtid = tid & 127, warp = wtid >> 5;
        st.lane = tid & 31;
        st.c4 = st.lane & 3;
        st.row0 = st.qb * DW_BM + cw * 64 + warp * 16 + (st.lane >> 2);
        st.sl2 = p.scale_log2;
        st.qdesc = dw_desc(st.sQ + cw * 8192, 16, 1024);
        st.kdesc = dw_desc(st.sK, 16, 1024);
        st.vdesc = dw_desc(st.sV, DW_KHALF, 1024);
        st.m0 = st.m1 = SALE_NEG_INF;
        st.l0 = st.l1 = 0.f;
#pragma unroll
        for (int i = 0; i < 64; i++) st.O[i] = 0.f;
        DwTiles tl;
        tl.begin(st.last_tile());
        st.consume(tl);
        st.store(p, st.b, st.h);
        if (p.mask) dw_dense_mask(p, st.b, st.h, st.qb * DW_BM, tid - 128);
    }
}


#else
/* attend, persistent: gridDim.x <= the work items (the host launches one CTA
 * an SM); each CTA takes items in dw_attend_item's order from a counter in
 * the workspace (the rows kernel's: the two never run at once on one
 * workspace, and each launch leaves it zero). The ring, its phases and the
 * Q tile carry over from item to item. Warp 1 schedules, lane 0 of warp 0
 * issues (DenseWg::schedule, issue); warpgroups 1 and 2 consume. */
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32, 1) sale_attend_kernel(const __grid_constant__ sale_tma_params tp) {
    const sale_params &p = tp.p;
    if (p.pick && !dw_pick_two_row(p)) return; /* this call runs the rows kernel */
    extern __shared__ __align__(1024) unsigned char dw_smem[];
    const sale_u32 base = (sale_smem_addr(dw_smem) + 1023u) & ~1023u;
    DenseWg st;
    const sale_u32 bar = st.place(base);
    st.QEMPTY = bar + 80;
    st.LFULL = bar + 88;             /* DW_PQS each */
    st.LEMPTY = bar + 88 + 8 * DW_PQS;
    st.HDR = bar + 128;              /* ST x DW_HDR <= 96 bytes */
    st.INFO = bar + 224;             /* {b, h0, h1, q0; q1, tiles} */
    st.LQ = bar + 256;               /* the queue: DW_PQS slots of DW_PQSLOT bytes */
    /* (the per-thread index, not a shuffle: tenth session, uniform_roles.patch) */
    const int tid = threadIdx.x, wg = tid >> 7;
    if (tid == 0) {
        dw_mbar_init(st.QFULL, 1);
        dw_mbar_init(st.QEMPTY, 8); /* one arrive per consumer warp */
        for (int s = 0; s < DenseWg::ST; s++) {
            dw_mbar_init(st.KFULL + 8 * s, 1);
            dw_mbar_init(st.VFULL + 8 * s, 1);
            dw_mbar_init(st.EMPTY + 8 * s, 8); /* one arrive per consumer warp */
        }
        for (int s = 0; s < DW_PQS; s++) {
            dw_mbar_init(st.LFULL + 8 * s, 1);  /* the scheduler's lane 0 */
            dw_mbar_init(st.LEMPTY + 8 * s, 1); /* the issuer */
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(DW_PRODUCER_REGS));
        const int warp = tid >> 5;
        if (warp == 1)
            st.schedule(p, (unsigned int *)p.sync + sale_layout_rows_sync(p.B, p.Hq, p.Hkv),
                        (unsigned int)((p.N + DW_BM - 1) / DW_BM) * (unsigned int)p.Hq * (unsigned int)p.B, tid & 31);
        else if (tid == 0)
            st.issue(tp);
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(DW_CONSUMER_REGS));
    const int cw = wg - 1, wtid = tid & 127, warp = wtid >> 5;
    st.lane = tid & 31;
    st.c4 = st.lane & 3;
    st.sl2 = p.scale_log2;
    st.qdesc = dw_desc(st.sQ + cw * 8192, 16, 1024);
    st.kdesc = dw_desc(st.sK, 16, 1024);
    st.vdesc = dw_desc(st.sV, DW_KHALF, 1024);
    DwTileHeaders tl;
    tl.hdr = st.HDR;
    tl.cw = cw;
    int i = 0;
    for (int r = 0;; r++) {
        dw_mbar_wait(st.QFULL, r & 1);
        /* lane 0 reads the item and hands it round (the issuer rewrites INFO
         * once QEMPTY completes, which lane 0 of each warp arrives on) */
        int v0 = 0, v1 = 0, v2 = 0, v3 = 0, v4 = 0, v5 = 0;
        if (st.lane == 0) {
            asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3)
                         : "r"(st.INFO));
            asm volatile("ld.shared.v2.s32 {%0, %1}, [%2];\n" : "=r"(v4), "=r"(v5) : "r"(st.INFO + 16));
        }
        st.b = __shfl_sync(0xffffffffu, v0, 0);
        if (st.b < 0) break;
        /* (selects, not arrays indexed by cw: a runtime index would put st, S and O in local memory) */
        st.h = __shfl_sync(0xffffffffu, cw ? v2 : v1, 0);
        const int myq = __shfl_sync(0xffffffffu, cw ? v4 : v3, 0);
        st.nkt = __shfl_sync(0xffffffffu, v5, 0);
        st.row0 = myq * 64 + warp * 16 + (st.lane >> 2);
        st.m0 = st.m1 = SALE_NEG_INF;
        st.l0 = st.l1 = 0.f;
#pragma unroll
        for (int k = 0; k < 64; k++) st.O[k] = 0.f;
        tl.first_row = myq * 64;
        if (st.nkt > 0) st.consume_runs(tl, i);
        /* every S and P V of this item done, every stage of it released:
         * Q may be reloaded while this warp stores */
        __syncwarp();
        if (st.lane == 0) dw_mbar_arrive(st.QEMPTY);
        st.store(p, st.b, st.h);
        i += st.nkt;
    }
}
#endif

#endif
