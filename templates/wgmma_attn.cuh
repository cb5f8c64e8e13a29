/* wgmma_attn.cuh — dense and attend on Hopper (sm_90a, head_dim 128): causal
 * flash attention on wgmma + TMA, FA3-style. The mma.sync kernels of these
 * families are SaleAttn<MODE> in sale_common.cuh; this one is chosen by
 * dense.cu / attend.cu when SALE_ARCH == 901, SALE_HEAD_DIM == 128 and
 * SALE_WARPS == 12 (the host's sale_layout_wgmma() says the same). Dense is
 * the version measured as "wg_intra_st3" in bench/wgmma/NOTES.md (the
 * attention floor, ~600 TF/s at 64K on an H200, cuDNN's rate). Attend
 * (two-pass, second pass) runs the same loop per consumer warpgroup over its
 * own 64-row mask row: each warpgroup has its own ring (and producer thread),
 * and a key tile is a pair of kept 32-key blocks wherever they lie (DwPairs:
 * two 32-row TMA boxes; an odd last block is paired with itself and its
 * second half masked), so neither the other query block's blocks nor the
 * dropped half of an aligned tile cost work (bench/RESULTS.md, third session).
 *
 * CTA: 128 query rows of one (batch, q head), heaviest query blocks first;
 * SALE_WARPS = 12 warps = three warpgroups:
 *   warpgroup 0, the producer: one thread issues TMA loads (Q once, then the K
 *     and V tiles of DW_BN keys x 128 d, as two 64-column boxes with the
 *     128-byte swizzle) into a SALE_STAGES-deep ring guarded by mbarriers
 *     (KFULL/VFULL: landed; EMPTY: every consumer warp is done with the stage);
 *     attend: two threads, one ring each (32-row boxes);
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
/* keys per K/V tile: 128 for dense (the attention floor's shape); 64 for
 * attend, so that a tile holds 2 mask blocks of 32 and sparse masks waste
 * less work on blocks that were not kept */
#define DW_BN (DW_ATTEND ? 64 : 128)
#define DW_NT (DW_BN / 8)  /* n8 column groups of S: S holds DW_BN / 2 floats a thread */
#define DW_BPT (DW_BN / 32) /* mask blocks per key tile */
#define DW_TILE 32768 /* the Q tile, 128 x 128 of the dtype: two 16 KB halves (d 0..63, d 64..127) */
#define DW_HALF 16384
#define DW_KTILE (DW_BN * 256) /* a K or V tile: DW_BN x 128, two halves of DW_BN rows x 128 bytes */
#define DW_KHALF (DW_BN * 128)

static_assert(SALE_WARPS == 12, "the wgmma dense kernel is three warpgroups");
static_assert(SALE_STAGES == 2 || SALE_STAGES == 3, "the wgmma dense ring has 2 or 3 stages");
/* the same sum as sale_layout_smem() for this configuration: 1 KB of slack to
 * align the tiles to the 1 KB swizzle atom, Q + ST x (K, V), 256 B of barriers */
static constexpr sale_layout_cfg DW_LCFG = {SALE_FAMILY, 128, SALE_BLOCK_Q, SALE_BLOCK_K, SALE_BLOCK_SEG,
                                            SALE_LOCAL_WINDOW, SALE_DTYPE, SALE_EST_BITS, SALE_WARPS, SALE_STAGES,
                                            SALE_ARCH};
static_assert(sale_layout_wgmma(&DW_LCFG), "the host would not launch this kernel for this key");
static_assert(sale_layout_smem(&DW_LCFG) == 1024u + DW_TILE + 2u * (DW_ATTEND ? 2u : 1u) * SALE_STAGES * DW_KTILE + 256u,
              "shared-memory layout of the wgmma dense kernel and sale_layout_smem() disagree");

#include "wgmma_common.cuh"

#if SALE_DTYPE == 1
#define DW_WGMMA_TYPE "bf16"
#else
#define DW_WGMMA_TYPE "f16"
#endif
#define DW_ACC_OPS(d)                                                                                                 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),       \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),      \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),      \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),      \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),      \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

#define DW_ACC32                                                                                                      \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31}"
#define DW_ACC_OPS32(d)                                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),       \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

/* D(64x64 f32) (+)= A(smem, K-major) * B(smem, K-major): S of a 64-key tile */
SALE_DEV void dw_mma_ss(float (&d)[32], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC32
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : DW_ACC_OPS32(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* D(64x128 f32) (+)= A(smem, K-major) * B(smem, K-major); scale_d 0 starts from zero */
SALE_DEV void dw_mma_ss(float (&d)[64], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC64
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : DW_ACC_OPS(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* D(64x128 f32) += A(registers: 4 x packed pairs) * B(smem, MN-major: transposed) */
SALE_DEV void dw_mma_rs(float (&d)[64], const sale_u32 (&a)[4], sale_u64 bdesc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : DW_ACC_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "n"(1));
}

/* ------------------------------------------------------------------ tiles */
#if !DW_ATTEND
/* dense: the key tiles 0..last a CTA visits, ascending. Producer and
 * consumers walk the same list. */
struct DwTiles {
    int cur, last;
    SALE_DEV void begin(int last_tile) {
        cur = 0;
        last = last_tile;
    }
    /* the next tile, or -1 */
    SALE_DEV int next() { return cur <= last ? cur++ : -1; }
};
#endif

#if DW_ATTEND
/* attend: the kept 32-key blocks of one mask row (blocks <= kb_hi),
 * ascending, taken two at a time: a key tile is the pair (A, B), block A in
 * its rows 0..31 and block B in rows 32..63 (loaded as two 32-row boxes), so
 * a tile holds two kept blocks wherever they lie and no dropped block costs a
 * tile. An odd last block is paired with itself (B = -1: its second half is
 * masked). Producer and consumer walk the same list. */
struct DwPairs {
    const sale_u32 *row;
    int w, kb_hi;
    sale_u32 bits;
    SALE_DEV void begin(const sale_u32 *r, int hi) {
        row = r;
        kb_hi = hi;
        w = 0;
        bits = 0;
    }
    SALE_DEV int next_block() {
        while (!bits) {
            if (!row || w * 32 > kb_hi) return -1;
            bits = row[w];
            if (w == kb_hi >> 5 && (kb_hi & 31) != 31) bits &= (2u << (kb_hi & 31)) - 1u;
            w++;
        }
        const int k = __ffs(bits) - 1;
        bits &= bits - 1;
        return (w - 1) * 32 + k;
    }
    /* the next pair, false at the end */
    SALE_DEV bool next(int &a, int &b) {
        a = next_block();
        if (a < 0) return false;
        b = next_block();
        return true;
    }
    /* how many pairs */
    SALE_DEV int count() const {
        if (!row) return 0;
        int n = 0;
        for (int x = 0; x * 32 <= kb_hi; x++) {
            sale_u32 t = row[x];
            if (x == kb_hi >> 5 && (kb_hi & 31) != 31) t &= (2u << (kb_hi & 31)) - 1u;
            n += __popc(t);
        }
        return (n + 1) / 2;
    }
};
#endif

/* ------------------------------------------------------------------ stages */
struct DenseWg {
    static constexpr int ST = SALE_STAGES;
    /* shared memory (offsets from the 1 KB-aligned base) */
    /* attend: a ring per consumer warpgroup (each walks its own mask row) */
    static constexpr int RINGS = DW_ATTEND ? 2 : 1;
    static constexpr sale_u32 OFF_Q = 0, OFF_K = DW_TILE, OFF_V = DW_TILE + RINGS * ST * DW_KTILE,
                              OFF_BAR = DW_TILE + 2 * RINGS * ST * DW_KTILE;

    sale_u32 sQ, sK, sV, QFULL, KFULL, VFULL, EMPTY;
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
    /* attend's producer of one consumer warpgroup's ring: the block pairs of
     * its mask row (mine, kb_hi), each block as two 32-row boxes of K and V */
    int kb_hi;
    SALE_DEV void produce_pairs(const sale_tma_params &tp) {
        DwPairs pr;
        pr.begin(mine, kb_hi);
        int A, B;
        for (int i = 0; pr.next(A, B); i++) {
            const int s = i % ST;
            const int B2 = B < 0 ? A : B; /* finite data under the masked half */
            dw_mbar_wait(EMPTY + 8 * s, ((i / ST) & 1) ^ 1);
            const sale_u32 k0 = sK + s * DW_KTILE, v0 = sV + s * DW_KTILE;
            dw_mbar_expect_tx(KFULL + 8 * s, DW_KTILE);
            dw_tma_4d(k0, &tp.tk, 0, A * 32, kvh, b, KFULL + 8 * s);
            dw_tma_4d(k0 + DW_KHALF, &tp.tk, 64, A * 32, kvh, b, KFULL + 8 * s);
            dw_tma_4d(k0 + 4096, &tp.tk, 0, B2 * 32, kvh, b, KFULL + 8 * s);
            dw_tma_4d(k0 + DW_KHALF + 4096, &tp.tk, 64, B2 * 32, kvh, b, KFULL + 8 * s);
            dw_mbar_expect_tx(VFULL + 8 * s, DW_KTILE);
            dw_tma_4d(v0, &tp.tv, 0, A * 32, kvh, b, VFULL + 8 * s);
            dw_tma_4d(v0 + DW_KHALF, &tp.tv, 64, A * 32, kvh, b, VFULL + 8 * s);
            dw_tma_4d(v0 + 4096, &tp.tv, 0, B2 * 32, kvh, b, VFULL + 8 * s);
            dw_tma_4d(v0 + DW_KHALF + 4096, &tp.tv, 64, B2 * 32, kvh, b, VFULL + 8 * s);
        }
    }
#endif

    /* a consumer warpgroup: 64 query rows (cw = 0, 1) */
    float S[DW_BN / 2], O[64];
    sale_u32 P[DW_BN / 16][4];
    float m0, m1, l0, l1;
    int lane, row0, c4; /* row0: this thread's first row (and row0 + 8) */
    const sale_u32 *mine;   /* attend: this warpgroup's mask row (null: rows past N) */
    float sl2;
    sale_u64 qdesc, kdesc, vdesc;

    SALE_DEV void issue_s(int s) {
#pragma unroll
        for (int ks = 0; ks < 8; ks++) { /* 16 columns of d a step: 4 per 128-byte swizzle row, then the next half */
            const sale_u32 qoff = ((ks >> 2) * DW_HALF + (ks & 3) * 32) >> 4;
            const sale_u32 koff = ((ks >> 2) * DW_KHALF + (ks & 3) * 32) >> 4;
            dw_mma_ss(S, qdesc + qoff, kdesc + ((s * DW_KTILE) >> 4) + koff, ks);
        }
    }
    SALE_DEV void issue_pv(int s) {
#pragma unroll
        for (int kk = 0; kk < DW_BN / 16; kk++) dw_mma_rs(O, P[kk], vdesc + ((s * DW_KTILE + kk * 2048) >> 4));
    }
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
    /* attend: the pair (A, B): a pad half (B < 0) and, where a block reaches
     * the rows' diagonal, key > row -> -inf */
    SALE_DEV void mask_pair(int A, int B, int first_row) {
        const bool diag = (B > A ? B : A) * 32 + 31 > first_row;
#pragma unroll
        for (int nt = 0; nt < DW_NT; nt++) {
            const int blk = nt < 4 ? A : B;
            if (blk < 0) {
                S[nt * 4 + 0] = S[nt * 4 + 1] = S[nt * 4 + 2] = S[nt * 4 + 3] = SALE_NEG_INF;
            } else if (diag) {
                const int key = blk * 32 + (nt & 3) * 8 + 2 * c4;
                if (key > row0) S[nt * 4 + 0] = SALE_NEG_INF;
                if (key + 1 > row0) S[nt * 4 + 1] = SALE_NEG_INF;
                if (key > row0 + 8) S[nt * 4 + 2] = SALE_NEG_INF;
                if (key + 1 > row0 + 8) S[nt * 4 + 3] = SALE_NEG_INF;
            }
        }
    }
#endif
    /* online softmax of S in place; a0, a1: the factors O must be rescaled by.
     * A row that has seen only masked scores keeps m = -inf and l = 0 (its
     * exponents use 0 for the max: no inf - inf). */
    SALE_DEV void softmax(float &a0, float &a1) {
        float x0 = m0, x1 = m1;
#pragma unroll
        for (int nt = 0; nt < DW_NT; nt++) {
            x0 = fmaxf(x0, fmaxf(S[nt * 4 + 0], S[nt * 4 + 1]));
            x1 = fmaxf(x1, fmaxf(S[nt * 4 + 2], S[nt * 4 + 3]));
        }
        x0 = sale_quad_max(x0);
        x1 = sale_quad_max(x1);
        const float u0 = x0 == SALE_NEG_INF ? 0.f : x0, u1 = x1 == SALE_NEG_INF ? 0.f : x1;
        a0 = sale_ex2((m0 - u0) * sl2);
        a1 = sale_ex2((m1 - u1) * sl2);
        m0 = x0;
        m1 = x1;
        const float n0 = -u0 * sl2, n1 = -u1 * sl2;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int nt = 0; nt < DW_NT; nt++) {
            S[nt * 4 + 0] = sale_ex2(fmaf(S[nt * 4 + 0], sl2, n0));
            S[nt * 4 + 1] = sale_ex2(fmaf(S[nt * 4 + 1], sl2, n0));
            S[nt * 4 + 2] = sale_ex2(fmaf(S[nt * 4 + 2], sl2, n1));
            S[nt * 4 + 3] = sale_ex2(fmaf(S[nt * 4 + 3], sl2, n1));
            s0 += S[nt * 4 + 0] + S[nt * 4 + 1];
            s1 += S[nt * 4 + 2] + S[nt * 4 + 3];
        }
        l0 = l0 * a0 + s0;
        l1 = l1 * a1 + s1;
    }
    SALE_DEV void rescale(float a0, float a1) {
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            O[nt * 4 + 0] *= a0;
            O[nt * 4 + 1] *= a0;
            O[nt * 4 + 2] *= a1;
            O[nt * 4 + 3] *= a1;
        }
    }
    /* P = S in the dtype, as wgmma's register A operand (the k16 slices of the accumulator) */
    SALE_DEV void convert_p() {
#pragma unroll
        for (int kk = 0; kk < DW_BN / 16; kk++) {
            P[kk][0] = sale_pack2(S[8 * kk + 0], S[8 * kk + 1]);
            P[kk][1] = sale_pack2(S[8 * kk + 2], S[8 * kk + 3]);
            P[kk][2] = sale_pack2(S[8 * kk + 4], S[8 * kk + 5]);
            P[kk][3] = sale_pack2(S[8 * kk + 6], S[8 * kk + 7]);
        }
    }
    /* one arrive per consumer warp: the stage may be refilled */
    SALE_DEV void release(int s) {
        __syncwarp();
        if (lane == 0) dw_mbar_arrive(EMPTY + 8 * s);
    }

    /* the key tiles, S(j) and P V(j-1) in flight together (j: position in
     * the list, kt: the tile) */
#if DW_ATTEND
    /* attend: this warpgroup's block pairs (nkt >= 1), S(j) and P V(j-1) in flight together */
    SALE_DEV void consume_pairs(int first_row) {
        DwPairs pr;
        pr.begin(mine, kb_hi);
        int A, B;
        pr.next(A, B);
        dw_mbar_wait(QFULL, 0);
        float a0, a1;
        dw_mbar_wait(KFULL, 0);
        dw_fence();
        issue_s(0);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(S);
        mask_pair(A, B, first_row);
        softmax(a0, a1);
        for (int j = 1; j < nkt; j++) {
            pr.next(A, B);
            const int sj = j % ST, sp = (j - 1) % ST;
            convert_p();
            dw_mbar_wait(KFULL + 8 * sj, (j / ST) & 1);
            dw_mbar_wait(VFULL + 8 * sp, ((j - 1) / ST) & 1);
            dw_fence();
            issue_s(sj);
            dw_commit();
            issue_pv(sp);
            dw_commit();
            dw_wait<1>();
            dw_fence_acc(S);
            mask_pair(A, B, first_row);
            softmax(a0, a1);
            dw_wait<0>();
            dw_fence_acc(O);
            rescale(a0, a1);
            release(sp);
        }
        const int sl = (nkt - 1) % ST;
        convert_p();
        dw_mbar_wait(VFULL + 8 * sl, ((nkt - 1) / ST) & 1);
        dw_fence();
        issue_pv(sl);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(O);
        release(sl);
    }
#endif
#if !DW_ATTEND
    SALE_DEV void consume() {
        DwTiles tl;
        tl.begin(last_tile());
        int kt = tl.next();
        dw_mbar_wait(QFULL, 0);
        float a0, a1;
        dw_mbar_wait(KFULL, 0);
        dw_fence();
        issue_s(0);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(S);
        if (diagonal(kt)) mask_diagonal(kt);
        softmax(a0, a1);
        for (int j = 1; j < nkt; j++) {
            kt = tl.next();
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
            if (diagonal(kt)) mask_diagonal(kt);
            softmax(a0, a1);
            dw_wait<0>();
            dw_fence_acc(O);
            rescale(a0, a1);
            release(sp);
        }
        const int sl = (nkt - 1) % ST;
        convert_p();
        dw_mbar_wait(VFULL + 8 * sl, ((nkt - 1) / ST) & 1);
        dw_fence();
        issue_pv(sl);
        dw_commit();
        dw_wait<0>();
        dw_fence_acc(O);
        release(sl);
    }
#endif

    /* O / l in the dtype (rows < N), lse when asked */
    SALE_DEV void store(const sale_params &p) {
        float lt0 = sale_quad_sum(l0), lt1 = sale_quad_sum(l1);
        const float i0 = lt0 > 0.f ? 1.f / lt0 : 0.f, i1 = lt1 > 0.f ? 1.f / lt1 : 0.f;
        sale_u16 *og = (sale_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh + 2 * c4;
        const bool w0 = row0 < p.N, w1 = row0 + 8 < p.N;
        sale_u16 *o0 = og + (long long)row0 * p.o_sn, *o1 = og + (long long)(row0 + 8) * p.o_sn;
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            if (w0) *(sale_u32 *)(o0 + nt * 8) = sale_pack2(O[nt * 4 + 0] * i0, O[nt * 4 + 1] * i0);
            if (w1) *(sale_u32 *)(o1 + nt * 8) = sale_pack2(O[nt * 4 + 2] * i1, O[nt * 4 + 3] * i1);
        }
        if (p.lse && c4 == 0) {
            float *lse = (float *)p.lse + ((long long)b * p.Hq + h) * p.N;
            if (w0) lse[row0] = m0 * p.scale + logf(lt0);
            if (w1) lse[row0 + 8] = m1 * p.scale + logf(lt1);
        }
    }
};

#if !DW_ATTEND
/* the dense mask, when asked: every causal block of the query blocks whose
 * first row lies in this CTA's rows (block_q = ceil(N / nqb) rounded as the
 * host does: the caller's block_q), written by the 256 consumer threads */
SALE_DEV void dw_dense_mask(const sale_params &p, int b, int h, int r0, int ctid) {
    const int bq = SALE_BLOCK_Q; /* the dense key fixes block_q to the mask's 64 */
    for (int qb = (r0 + bq - 1) / bq; qb * bq < r0 + DW_BM && qb < p.nqb; qb++) {
        sale_u32 *row = (sale_u32 *)p.mask + (((long long)b * p.Hq + h) * p.nqb + qb) * p.nkw;
        const int iend = (qb * bq + bq < p.N ? qb * bq + bq : p.N) - 1;
        const int kb_hi = iend / SALE_BLOCK_K;
        for (int w = ctid; w < p.nkw; w += 256) {
            const int lo = w * 32;
            sale_u32 bits = 0;
            if (lo <= kb_hi) {
                const int n = kb_hi - lo + 1;
                bits = n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
            }
            row[w] = bits;
        }
    }
}

#endif

#if DW_ATTEND
#define DW_ENTRY sale_attend_kernel
#else
#define DW_ENTRY sale_dense_kernel
#endif
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32, 1) DW_ENTRY(const __grid_constant__ sale_tma_params tp) {
    const sale_params &p = tp.p;
    extern __shared__ __align__(1024) unsigned char dw_smem[];
    const sale_u32 base = (sale_smem_addr(dw_smem) + 1023u) & ~1023u;
    DenseWg st;
    st.sQ = base + DenseWg::OFF_Q;
    st.sK = base + DenseWg::OFF_K;
    st.sV = base + DenseWg::OFF_V;
    const sale_u32 bar = base + DenseWg::OFF_BAR;
    st.QFULL = bar;
    st.KFULL = bar + 8;
    st.VFULL = bar + 8 + 8 * DenseWg::ST;
    st.EMPTY = bar + 8 + 16 * DenseWg::ST;

    const int tid = threadIdx.x, wg = tid >> 7;
    const int nbh = p.B * p.Hq;
    const int nqt = (p.N + DW_BM - 1) / DW_BM;
    st.qb = nqt - 1 - (int)(blockIdx.x / nbh); /* heaviest query tiles first */
    const int bh = (int)(blockIdx.x % nbh);
    st.b = bh / p.Hq;
    st.h = bh % p.Hq;
    st.kvh = st.h / p.group;
    /* dense: key tiles 0..qb (DW_BM == DW_BN) */
#if DW_ATTEND
    /* each consumer warpgroup cw walks mask row 2 qb + cw (64 query rows,
     * sale_layout_wgmma) through its own ring: its barriers and stages */
    {
        const sale_u32 *mb = (const sale_u32 *)p.mask + ((long long)st.b * p.Hq + st.h) * p.nqb * p.nkw;
        const int cw = wg == 0 ? (tid >> 5) : wg - 1; /* producer warps 0, 1 serve rings 0, 1 */
        const int q = 2 * st.qb + cw;
        st.mine = cw < 2 && q < p.nqb ? mb + (long long)q * p.nkw : 0;
        st.kb_hi = ((q * 64 + 64 < p.N ? q * 64 + 64 : p.N) - 1) / 32;
        st.sK = base + DenseWg::OFF_K + (sale_u32)(cw & 1) * DenseWg::ST * DW_KTILE;
        st.sV = base + DenseWg::OFF_V + (sale_u32)(cw & 1) * DenseWg::ST * DW_KTILE;
        const sale_u32 ring = bar + 8 + (sale_u32)(cw & 1) * 24 * DenseWg::ST;
        st.KFULL = ring;
        st.VFULL = ring + 8 * DenseWg::ST;
        st.EMPTY = ring + 16 * DenseWg::ST;
        DwPairs pr;
        pr.begin(st.mine, st.kb_hi);
        st.nkt = pr.count();
    }
#else
    st.nkt = st.qb + 1;
#endif

    if (tid == 0) {
        dw_mbar_init(st.QFULL, 1);
        for (int r = 0; r < DenseWg::RINGS; r++)
            for (int s = 0; s < DenseWg::ST; s++) {
                const sale_u32 ring = bar + 8 + (sale_u32)r * 24 * DenseWg::ST;
                dw_mbar_init(ring + 8 * s, 1);                      /* KFULL */
                dw_mbar_init(ring + 8 * DenseWg::ST + 8 * s, 1);    /* VFULL */
                dw_mbar_init(ring + 16 * DenseWg::ST + 8 * s, 8 / DenseWg::RINGS); /* EMPTY: one arrive per consumer warp */
            }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
#if DW_ATTEND
        if (tid == 0) { /* Q once, for both consumer warpgroups */
            dw_mbar_expect_tx(st.QFULL, DW_TILE);
            dw_tma_4d(st.sQ, &tp.tq, 0, st.qb * DW_BM, st.h, st.b, st.QFULL);
            dw_tma_4d(st.sQ + DW_HALF, &tp.tq, 64, st.qb * DW_BM, st.h, st.b, st.QFULL);
        }
        if ((tid & 31) == 0 && tid < 64) st.produce_pairs(tp);
#else
        if (tid == 0) st.produce(tp);
#endif
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
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
#if DW_ATTEND
        if (st.nkt > 0) st.consume_pairs(st.qb * DW_BM + cw * 64);
#else
        st.consume();
#endif
        st.store(p);
#if !DW_ATTEND
        if (p.mask) dw_dense_mask(p, st.b, st.h, st.qb * DW_BM, tid - 128);
#endif
    }
}

#endif
