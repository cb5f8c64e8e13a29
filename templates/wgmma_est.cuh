/* wgmma_est.cuh — select's estimation on Hopper (sm_90a) for thr = fixed:
 * every segment of every query block estimated on int8 wgmma, the
 * Relative Attention Score test fused on the accumulators. select.cu
 * compiles it when SALE_ARCH == 901 and warps is 12 or 20
 * (sale_layout_wgmma_select); the first launch of the family,
 * sale_select_local_kernel (sale_common.cuh), has already computed the exact
 * local region of every query block, so that each row's threshold t_i is
 * known (thr = fixed never raises it), written the mask rows (local region
 * and sink) and the range {min, max} of c_j of every key block.
 *
 * The measured design of bench/wgmma (est_wgmma.cu, "wgmma_b"; NOTES.md):
 * CTA = four m64 tiles (64 query rows each) of one GQA group that read the
 * same K codes: the group's heads at one query block (group 4 and up), or 2
 * heads x 2 query blocks (group 2), or 4 query blocks (group 1); heaviest
 * query blocks first. SALE_SE_WARPS / 4 warpgroups:
 *   warpgroup 0, the producer: one thread TMA-loads the code tiles (128 keys
 *     x 128 int8 codes = one segment = 16 KB, 128-byte swizzle) of segments
 *     0 .. the CTA's last into a SALE_SE_STAGES-deep ring (FULL: landed,
 *     EMPTY: every consumer thread is done with it); warp 1 (the staging
 *     warp) copies each segment's c_j and block parameters of the 4 tiles
 *     into a slot of a 2 x SALE_SE_STAGES ring by cp.async, counted on the
 *     same FULL barrier, so the consumers' loop has no loads or named
 *     barriers of its own;
 *   the consumer warpgroups (SE_NCW: 2 with warps 12, 4 with warps 20), SE_MPW
 *     m64 tiles each: the tiles' query codes in shared memory (A by
 *     descriptor, loaded once by TMA); per segment, 4 x wgmma m64n128k32
 *     s8.s8 -> s32 (B = the code tile by descriptor; both descriptors
 *     computed once, the stage and k step added), then the test:
 * The test of block J (32 keys) for rows i: kept iff some i, j in J have
 *   fl(fl(fl(sq_i * sk_J) * dot_ij) + c_j) > t_i        (sale-algorithm.md, the reference's order)
 * Per row and block, d = max of its 32 dots (8 in each thread of a quad, reduced
 * in the thread, then scattered over the quad so thread c4 holds block c4's); x = fl(pr * d) with
 * pr = fl(sq_i * sk_J) >= 0; fl is monotone, so fl(x + cmin_J) > t ⇒ kept for
 * sure and fl(x + cmax_J) <= t ⇒ not kept for sure; the blocks of a tile that
 * neither decides (rare: c_j's range is narrow next to the dots') are tested
 * element by element on the still-live accumulators, c_j from the staged
 * slot. The
 * decisions equal the element-wise test exactly: masks equal the reference
 * bit for bit. Kept bits are ORed into the mask rows (global atomics, one
 * per warp and segment with a kept block); at the end each m64 tile adds its
 * new blocks to the kept count. */
#ifndef SALE_WGMMA_EST_CUH
#define SALE_WGMMA_EST_CUH
#include "wgmma_common.cuh"

#define SE_NCW (SALE_SE_WARPS / 4 - 1) /* consumer warpgroups */
#define SE_MPW (4 / SE_NCW)            /* m64 tiles per consumer warpgroup */
#define SE_KT SALE_SE_KT               /* keys per code tile = one segment */
#define SE_ST SALE_SE_STAGES           /* code-tile ring */
#define SE_TILE (SE_KT * 128)          /* bytes of a code tile */
#define SE_BPT (SE_KT / 32)            /* mask blocks per tile */
#define SE_QTILE (SALE_BLOCK_Q * 128)  /* bytes of an m64 tile's query codes */
/* floats per staged row of an m64 tile and segment: its 128 c_j, then the 4
 * blocks' scales sk_J and {cmin_J, cmax_J} (the producer's staging warp copies
 * them in with the code tile: nothing the test reads comes from L2) */
#define SE_ROW (SE_KT + 16)
/* registers per consumer thread after setmaxnreg (the producer gives its own back) */
#define SE_CREGS (SE_NCW == 2 ? 240 : 112)
#define SE_PREGS 24
/* setmaxnreg moves registers inside what the launch allocated: every thread
 * holds the launch bound's share, 65536 / (SALE_SE_WARPS x 32) rounded down to
 * 8 (warps 20: 96, not 102; warps 12: 168). Consumers that ask for more than
 * the producer gave back wait in setmaxnreg.inc forever: a hang, not an error
 * (ninth session, est_tester.patch: 4 x 112 + 64 > 5 x 96). */
#define SE_LAUNCH_REGS ((65536 / (SALE_SE_WARPS * 32)) & ~7)
static_assert(SE_NCW * SE_CREGS + SE_PREGS <= (SE_NCW + 1) * SE_LAUNCH_REGS,
              "setmaxnreg: the consumers' registers must fit in what the launch allocated");

static_assert(SE_NCW == 2 || SE_NCW == 4, "warps 12 or 20");
static_assert(SE_BPT == 4, "a quad's thread c4 tests block c4 of the tile");
static_assert(SALE_HEAD_DIM == 128 && SALE_BLOCK_Q == 64 && SALE_BLOCK_K == 32 && SALE_BLOCK_SEG == SE_KT &&
                  SALE_EST_BITS == 8,
              "the wgmma estimation: head_dim 128, block_q 64, block_k 32, block_seg 128, 8-bit codes");
static_assert(SALE_THR_FIXED, "the wgmma estimation keeps t_i fixed (thr=fixed)");
static constexpr sale_layout_cfg SE_LCFG = {SALE_FAMILY, 128, 64, 32, 128, SALE_LOCAL_WINDOW, SALE_DTYPE, 8,
                                            SALE_SE_WARPS, SALE_SE_STAGES, SALE_ARCH, SALE_LT_FIXED};
static_assert(sale_layout_wgmma_select(&SE_LCFG), "the host would not launch this kernel for this key");
/* the same sum as sale_layout_smem(): 1 KB of alignment slack, the ring, the
 * staged rows [2 SE_ST slots][4 tiles][SE_ROW floats], 128 B of barriers */
static_assert(16 * SE_ST + 8 <= 128, "FULL and EMPTY of every stage and QFULL in 128 B");
static_assert(sale_layout_smem(&SE_LCFG) == 1024u + SE_ST * SE_TILE + 4u * SE_QTILE + 2u * SE_ST * 4u * SE_ROW * 4u + 128u,
              "shared-memory layout of the wgmma estimation and sale_layout_smem() disagree");

/* D(64x128 s32) (+)= A(64x32 int8, shared, K-major) * B(32x128 int8, shared, K-major) */
SALE_DEV void se_mma(int (&d)[64], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " DW_ACC64 ", %64, %65, p;\n}\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
                   "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]),
                   "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]),
                   "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]),
                   "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]),
                   "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]),
                   "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]),
                   "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]),
                   "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}

/* int -> float, exact for |d| < 2^22 (|dot| <= 128 * 127 * 127 < 2^21), and
 * the estimate in the reference's order (SaleAttn::est_score) */
SALE_DEV float se_i2f(int d) { return __fsub_rn(__int_as_float(d + 0x4B400000), 12582912.f); }
SALE_DEV float se_shat(float pr, int d, float c) { return __fadd_rn(__fmul_rn(pr, se_i2f(d)), c); }

#include "wgmma_order.cuh" /* SeCta: which four m64 tiles a CTA estimates, in what order */

extern __shared__ __align__(128) unsigned char sale_se_smem[];

extern "C" __global__ void __launch_bounds__(SALE_SE_WARPS * 32, 1)
    sale_select_wgmma_kernel(const __grid_constant__ sale_tma_params tp) {
    const sale_params &p = tp.p;
    SeCta cta;
    cta.decode(p, (int)blockIdx.x);
    int kt_end = 0;
#pragma unroll
    for (int t = 0; t < 4; t++) {
        int qb, h;
        const int ns = cta.segments(p, t, &qb, &h);
        kt_end = ns > kt_end ? ns : kt_end;
    }
    if (kt_end == 0) return; /* nothing to estimate (the whole CTA: uniform) */

    const sale_u32 raw = sale_smem_addr(sale_se_smem);
    const sale_u32 sK = (raw + 1023u) & ~1023u; /* the ring, 1 KB aligned (the swizzle atom) */
    const sale_u32 sQ = sK + SE_ST * SE_TILE;   /* the 4 tiles' query codes, 64 rows x 128 B each */
    const sale_u32 sC = sQ + 4 * SE_QTILE;      /* staged rows: [2 SE_ST slots][4 tiles][SE_ROW floats] */
    const sale_u32 FULL = sC + 2u * SE_ST * 4u * SE_ROW * 4u, EMPTY = FULL + 8u * SE_ST, QFULL = EMPTY + 8u * SE_ST;

    /* the warpgroup and warp as warp-uniform values (a shuffle from lane 0): ptxas
     * then keeps the role branches, the loop counter and the wgmma descriptors in
     * uniform registers (no R2UR before a segment's IGMMA; the select -7% at
     * 64K, d = 0.01, -5% at 128K, d = 0.2: tenth session, uniform_roles.patch) */
    const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid >> 7, 0), wtid = tid & 127,
              warp = __shfl_sync(0xffffffffu, wtid >> 5, 0), lane = tid & 31;
    if (tid == 0) {
        for (int s = 0; s < SE_ST; s++) {
            /* FULL: the TMA thread's expect_tx and the staging warp's 32 cp.async arrivals */
            dw_mbar_init(FULL + 8 * s, 1 + 32);
            dw_mbar_init(EMPTY + 8 * s, SE_NCW * 128); /* every consumer thread arrives */
        }
        dw_mbar_init(QFULL, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) { /* ------------------------------------------ producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(SE_PREGS));
        if (tid == 0) {
            /* the query codes of the tiles that estimate (rows past N: TMA's zero fill) */
            int nq = 0;
            for (int t = 0; t < 4; t++) {
                int qb, h;
                nq += cta.segments(p, t, &qb, &h) > 0;
            }
            dw_mbar_expect_tx(QFULL, nq * SE_QTILE);
            for (int t = 0; t < 4; t++) {
                int qb, h;
                if (cta.segments(p, t, &qb, &h) > 0)
                    dw_tma_3d(sQ + t * SE_QTILE, &tp.tq, 0, qb * SALE_BLOCK_Q, cta.b * p.Hq + h, QFULL);
            }
            const int slice = cta.b * p.Hkv + cta.kvh;
            for (int kt = 0; kt < kt_end; kt++) {
                const int s = kt % SE_ST;
                dw_mbar_wait(EMPTY + 8 * s, ((kt / SE_ST) & 1) ^ 1);
                dw_mbar_expect_tx(FULL + 8 * s, SE_TILE);
                /* segment kt: keys 32 + 128 kt .. (segments count from block 1) */
                dw_tma_3d(sK + s * SE_TILE, &tp.tk, 0, SALE_BLOCK_K + kt * SE_KT, slice, FULL + 8 * s);
            }
        } else if (warp == 1) {
            /* the staging warp: each segment's c_j and block parameters of the
             * 4 tiles into slot kt % (2 SE_ST) by cp.async (4 B), one arrival a
             * lane on FULL once its copies land. Lane = tile t (lane / 8) and
             * j (lane % 8): c_j j + 8i of the segment (i < 16), {cmin, cmax}
             * value j of the 4 blocks, and (j < 4) block j's scale sk_J. The
             * slot was last read in segment kt - 2 SE_ST, before every consumer
             * thread's arrival on EMPTY for kt - SE_ST, which this wait sees. */
            const int t = lane >> 3, j = lane & 7;
            int qb, h;
            const int ns = cta.segments(p, t, &qb, &h);
            const long long bh = (long long)cta.b * p.Hq + h;
            const float *gc = (const float *)p.cterm + bh * p.N + SALE_BLOCK_K + j;
            const float *gb = (const float *)((const unsigned char *)p.scratch +
                                              sale_layout_se_cbound_off(p.B, p.Hq, p.N)) + (bh * p.nkb + 1) * 2 + j;
            const float *gk = (const float *)p.kscale + ((long long)cta.b * p.Hkv + cta.kvh) * p.nkb + 1 + j;
            const sale_u32 dst0 = sC + (t * SE_ROW + j) * 4u;
            for (int kt = 0; kt < kt_end; kt++) {
                const int s = kt % SE_ST;
                dw_mbar_wait(EMPTY + 8 * s, ((kt / SE_ST) & 1) ^ 1);
                if (kt < ns) {
                    const sale_u32 dst = dst0 + (kt % (2 * SE_ST)) * (4u * SE_ROW * 4u);
#pragma unroll
                    for (int i = 0; i < SE_KT / 8; i++) dw_cp4(dst + 32u * i, gc + 8 * i);
                    dw_cp4(dst + (SE_KT + SE_BPT) * 4u, gb);
                    if (j < SE_BPT) dw_cp4(dst + SE_KT * 4u, gk);
                }
                dw_cp_arrive(FULL + 8 * s);
                gc += SE_KT, gb += 2 * SE_BPT, gk += SE_BPT;
            }
        }
        return;
    }
    /* ------------------------------------------------------------ consumers */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(SE_CREGS));
    const int cw = wg - 1, g = lane >> 2, c4 = lane & 3;
    const int N = p.N;
    int ns[SE_MPW], qb[SE_MPW];
    long long bh[SE_MPW] = {};
    float sq[SE_MPW][2], tt[SE_MPW][2];
    sale_u32 da[SE_MPW]; /* low words of the tiles' A descriptors (k step ks: + 2 ks, 32 bytes) */
    sale_u32 *const mask = (sale_u32 *)p.mask;
    sale_u32 *mrow[SE_MPW]; /* the tiles' mask rows */
#pragma unroll
    for (int mm = 0; mm < SE_MPW; mm++) {
        int h;
        ns[mm] = cta.segments(p, cw * SE_MPW + mm, &qb[mm], &h);
        bh[mm] = (long long)cta.b * p.Hq + h;
        const int r0 = qb[mm] * SALE_BLOCK_Q + warp * 16 + g;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int row = r0 + 8 * hh;
            const bool v = ns[mm] > 0 && row < N;
            sq[mm][hh] = v ? ((const float *)p.qscale)[bh[mm] * N + row] : 0.f;
            tt[mm][hh] = v ? ((const float *)p.scratch)[bh[mm] * N + row] : SALE_POS_INF;
        }
        da[mm] = (sale_u32)dw_desc(sQ + (cw * SE_MPW + mm) * SE_QTILE, 16, 1024);
        mrow[mm] = mask + (bh[mm] * p.nqb + qb[mm]) * p.nkw;
    }
    /* the descriptors' high words are one constant (stride 1024, 128-byte
     * swizzle); the low word's address field (address / 16 < 2^14) takes the
     * stage and k-step offsets without a carry into the leading-offset field */
    const sale_u32 dhi = (sale_u32)(dw_desc(sK, 16, 1024) >> 32), db0 = (sale_u32)dw_desc(sK, 16, 1024);
    const float *crow_s = (const float *)(sale_se_smem + (sC - raw));
    int acc[SE_MPW][64];
    dw_mbar_wait(QFULL, 0);

    for (int kt = 0; kt < kt_end; kt++) {
        const int s = kt % SE_ST, blk0 = 1 + kt * SE_BPT;
        dw_mbar_wait(FULL + 8 * s, (kt / SE_ST) & 1);
        dw_fence();
        /* issued for every tile, also one past its segments (results unused):
         * a wgmma under a branch is serialised by ptxas (C7520) */
#pragma unroll
        for (int mm = 0; mm < SE_MPW; mm++)
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
                se_mma(acc[mm], dw_desc_pack(da[mm] + 2 * ks, dhi),
                       dw_desc_pack(db0 + (sale_u32)(s * (SE_TILE >> 4) + 2 * ks), dhi), ks);
        dw_commit();
        dw_wait<0>();
#pragma unroll
        for (int mm = 0; mm < SE_MPW; mm++) dw_fence_acc(acc[mm]);
        dw_mbar_arrive(EMPTY + 8 * s); /* the code tile (the staged slot lives on, see the staging warp) */

#pragma unroll
        for (int mm = 0; mm < SE_MPW; mm++) {
            if (kt >= ns[mm]) continue; /* warpgroup-uniform */
            const int (&a)[64] = acc[mm];
            /* c_j, then sk, {cmin, cmax} */
            const float *cs = crow_s + ((kt % (2 * SE_ST)) * 4 + cw * SE_MPW + mm) * SE_ROW;
            const float *sk = cs + SE_KT;
            /* the bounds: per row and block the max of the row's 32 dots. A
             * thread holds 8 of them per (row, block), its quad (c4 = 0..3)
             * the other 24: reduce in the thread, then reduce-scatter over
             * the quad (two xor-shuffle rounds), so that thread c4 ends with
             * the maxima of block c4 for its two rows and tests that one
             * block (the quad's 4 threads no longer test all 4 blocks each).
             * fl is monotone and pr >= 0: the test of the max decides as the
             * OR of the tests of its parts did. */
            int m[2][SE_BPT];
#pragma unroll
            for (int J = 0; J < SE_BPT; J++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    int d = max(a[16 * J + 2 * hh], a[16 * J + 2 * hh + 1]);
#pragma unroll
                    for (int nt = 1; nt < 4; nt++)
                        d = max(d, max(a[16 * J + 4 * nt + 2 * hh], a[16 * J + 4 * nt + 2 * hh + 1]));
                    m[hh][J] = d;
                }
            const bool o1 = c4 & 1, o2 = c4 >> 1;
            int r[2][2]; /* round 1 (lane ^ 1): block 2P + (c4 & 1) of each pair P */
#pragma unroll
            for (int hh = 0; hh < 2; hh++)
#pragma unroll
                for (int P = 0; P < 2; P++) {
                    const int keep = o1 ? m[hh][2 * P + 1] : m[hh][2 * P];
                    const int send = o1 ? m[hh][2 * P] : m[hh][2 * P + 1];
                    r[hh][P] = max(keep, __shfl_xor_sync(0xffffffffu, send, 1));
                }
            int dm[2]; /* round 2 (lane ^ 2): pair c4 >> 1, so block c4 */
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int keep = o2 ? r[hh][1] : r[hh][0], send = o2 ? r[hh][0] : r[hh][1];
                dm[hh] = max(keep, __shfl_xor_sync(0xffffffffu, send, 2));
            }
            sale_u32 bits;
            {
                const float skc = sk[c4], cmin = sk[SE_BPT + 2 * c4], cmax = sk[SE_BPT + 2 * c4 + 1];
                const float x0 = __fmul_rn(__fmul_rn(sq[mm][0], skc), se_i2f(dm[0]));
                const float x1 = __fmul_rn(__fmul_rn(sq[mm][1], skc), se_i2f(dm[1]));
                bits = (sale_u32)((__fadd_rn(x0, cmin) > tt[mm][0]) | (__fadd_rn(x1, cmin) > tt[mm][1])) << c4;
                bits |= (sale_u32)((__fadd_rn(x0, cmax) > tt[mm][0]) | (__fadd_rn(x1, cmax) > tt[mm][1]))
                        << (SE_BPT + c4);
            }
            bits = __reduce_or_sync(0xffffffffu, bits);
            sale_u32 kept = bits & 15u;
            const sale_u32 und = (bits >> SE_BPT) & ~bits & 15u;
            if (und) { /* the element-wise test for the blocks the bounds left open */
#pragma unroll
                for (int J = 0; J < SE_BPT; J++)
                    if (und >> J & 1u) {
                        const float pr0 = __fmul_rn(sq[mm][0], sk[J]), pr1 = __fmul_rn(sq[mm][1], sk[J]);
                        bool hit = false;
#pragma unroll
                        for (int nt = 0; nt < 4; nt++) {
                            const float2 c = *(const float2 *)(cs + J * 32 + nt * 8 + 2 * c4);
                            hit |= (se_shat(pr0, a[16 * J + 4 * nt + 0], c.x) > tt[mm][0]) |
                                   (se_shat(pr0, a[16 * J + 4 * nt + 1], c.y) > tt[mm][0]) |
                                   (se_shat(pr1, a[16 * J + 4 * nt + 2], c.x) > tt[mm][1]) |
                                   (se_shat(pr1, a[16 * J + 4 * nt + 3], c.y) > tt[mm][1]);
                        }
                        if (__any_sync(0xffffffffu, hit)) kept |= 1u << J;
                    }
            }
            if (kept && lane == 0) {
                sale_u32 *row = mrow[mm];
                const int w = blk0 >> 5, sh = blk0 & 31;
                atomicOr(row + w, kept << sh);
                if (sh > 32 - SE_BPT && (kept >> (32 - sh))) atomicOr(row + w + 1, kept >> (32 - sh));
            }
        }
    }

    /* kept counts: the estimated blocks [1, 1 + 4 ns) of each tile's mask row, once
     * every warp's bits are in (the local kernel counted the local region);
     * also summed into p.pick when this call picks its attend kernel (the
     * local launch added the local region's) */
    dw_bar_sync(1 + cw, 128);
    if (p.kept || p.pick) {
#pragma unroll
        for (int mm = 0; mm < SE_MPW; mm++) {
            if (ns[mm] == 0 || warp != 0) continue;
            const sale_u32 *row = mrow[mm];
            const int hi = 1 + ns[mm] * SE_BPT; /* first block past the segments */
            int cnt = 0;
            for (int w = lane; w * 32 < hi; w += 32) {
                sale_u32 bits = __ldcg(row + w);
                if (w == 0) bits &= ~1u; /* the sink is the local kernel's */
                if (hi < w * 32 + 32) bits &= (1u << (hi - w * 32)) - 1u;
                cnt += __popc(bits);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
            if (lane == 0 && p.kept) atomicAdd((int *)p.kept + bh[mm] * p.nqb + qb[mm], cnt);
            if (lane == 0 && p.pick && cnt) atomicAdd((unsigned long long *)p.pick, (unsigned long long)cnt);
        }
    }
}

#endif
