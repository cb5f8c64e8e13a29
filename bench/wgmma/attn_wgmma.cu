/* attn_wgmma.cu — the attention floor on Hopper (sm_90a): dense causal attention,
 * FA3-style, bf16 in/out, fp32 accumulation, GQA, layout [B][H][N][128] contiguous.
 *
 * CTA = 128 query rows of one q head (heaviest query blocks first), 384 threads:
 *   warpgroup 0 = producer (one thread issues TMA: Q once, then K and V tiles of
 *     128 keys x 128 d bf16 = 32 KB each, as 2 boxes of 64 d x 128 rows with the
 *     128-byte swizzle, into an ST-stage ring; KFULL/VFULL/EMPTY mbarriers);
 *     setmaxnreg.dec 24.
 *   warpgroups 1, 2 = consumers, 64 query rows each (setmaxnreg.inc 240):
 *     S = Q K^T : 8 x wgmma m64n128k16 f32.bf16.bf16, A = Q (smem, K-major),
 *                 B = K tile (smem, K-major), both 128B-swizzled descriptors;
 *     online softmax in registers (ex2.approx, scale*log2e folded into one FFMA),
 *     causal mask on the diagonal tile only;
 *     O += P V  : 8 x wgmma m64n128k16, A = P (bf16 registers, the accumulator
 *                 layout re-packed), B = V tile (smem, MN-major: transpose bit,
 *                 LBO = 16 KB between the two 64-d halves, SBO = 1 KB per 8 keys).
 * Versions (template VER):
 *   0 "wg_basic":  per key tile S -> wait -> softmax -> PV -> wait (no overlap inside
 *                  a warpgroup; the two consumer warpgroups overlap only by chance).
 *   1 "wg_intra":  FA3 intra-warpgroup overlap: S(j) and PV(j-1) issued together,
 *                  softmax(j) runs while PV(j-1) is on the tensor cores.
 *   2 "wg_pingpong": 1 + the two consumer warpgroups take turns issuing their GEMMs
 *                  (named barriers 1, 2), so one's softmax runs under the other's GEMMs.
 * Template knobs (at_body<VER, ST, CL, DIAG, OPT>): ST = ring stages (2: 160 KB, 3: 224 KB);
 *   CL = 2: cluster of two q heads of one GQA group, K/V halves multicast to both CTAs;
 *   DIAG = 1: diagnostic only (softmax replaced by a scale; NOT attention);
 *   OPT bit 0: K and V stages released separately; bit 1: O rescaled only when a max moved.
 * Best measured (bench/wgmma/NOTES.md): attn_wg_intra_st3, ~600 TF/s at 64K on H200 (= cuDNN).
 * Requirements (host-checked): D = 128, Hq % Hkv == 0, N >= 1 (any N: TMA zero-fills
 * out-of-range rows; causal masking covers keys >= N for every stored row). */
#ifndef ATTN_WGMMA_CU
#define ATTN_WGMMA_CU

#define AT_D 128
#define AT_BM 128
#define AT_BN 128
#define AT_THREADS 384
#define AT_TILE 32768 /* 128 rows x 128 bf16: two 16 KB halves (d 0..63, d 64..127) */
#define AT_HALF 16384
#define AT_SMEM(ST) (1024 + (1 + 2 * (ST)) * AT_TILE + 256)

typedef unsigned int at_u32;
typedef unsigned long long at_u64;

typedef struct at_params {
    unsigned short *o; /* [B][Hq][N][128] bf16 */
    int B, Hq, Hkv, N, nqb, group;
    float sl2;         /* softmax scale * log2(e) */
    at_u32 vlbo, vsbo; /* V (MN-major) descriptor byte offsets: 16384, 1024 */
} at_params;

typedef struct __align__(64) at_tmap { at_u64 v[16]; } at_tmap;

__device__ __forceinline__ at_u32 at_smem_u32(const void *p) { return (at_u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void at_mbar_init(at_u32 a, at_u32 n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(n) : "memory");
}
__device__ __forceinline__ void at_mbar_expect_tx(at_u32 a, at_u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(a), "r"(bytes) : "memory");
}
__device__ __forceinline__ void at_mbar_arrive(at_u32 a) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
}
/* WATCHDOG (the producer's waits only): a wait that never completes (a bug) traps instead of
 * hanging the device. In the consumers the extra counter pushed ptxas over its register budget
 * for the pipelined wgmma loop (136 B of spills and C7512 serialisation), so they wait plainly:
 * a consumer stuck on a bad parity also stalls the producer's EMPTY wait, which traps. */
template <bool WATCHDOG = false>
__device__ __forceinline__ void at_mbar_wait(at_u32 a, at_u32 parity) {
    at_u32 ok, n = 0;
    do {
        if (WATCHDOG && ++n == (1u << 27)) __trap();
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(ok)
                     : "r"(a), "r"(parity)
                     : "memory");
    } while (!ok);
}
__device__ __forceinline__ void at_tma_3d(at_u32 dst, const at_tmap *map, int c0, int c1, int c2, at_u32 mbar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
                 "l"((at_u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(mbar)
                 : "memory");
}
/* the same box into the same smem offset of every CTA in ctamask, completing on the
 * mbarrier at the same offset in each (TMA multicast) */
__device__ __forceinline__ void at_tma_3d_mc(at_u32 dst, const at_tmap *map, int c0, int c1, int c2, at_u32 mbar, unsigned short ctamask) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(dst),
                 "l"((at_u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(mbar), "h"(ctamask)
                 : "memory");
}
/* arrive on the mbarrier at the same offset in CTA `rank` of the cluster */
__device__ __forceinline__ void at_mbar_arrive_remote(at_u32 a, at_u32 rank) {
    asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\nmbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(a), "r"(rank)
                 : "memory");
}
__device__ __forceinline__ void at_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}
__device__ __forceinline__ at_u32 at_cluster_rank() {
    at_u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
/* 128B-swizzle descriptor; K-major: LBO unused (1), SBO = 1024 (8 rows of 128 B) */
__device__ __forceinline__ at_u64 at_desc(at_u32 saddr, at_u32 lbo, at_u32 sbo) {
    at_u64 d = (at_u64)((saddr & 0x3FFFFu) >> 4);
    d |= (at_u64)((lbo >> 4) & 0x3FFFu) << 16;
    d |= (at_u64)((sbo >> 4) & 0x3FFFu) << 32;
    d |= (at_u64)1 << 62;
    return d;
}
__device__ __forceinline__ void at_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void at_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void at_wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void at_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void at_bar_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ float at_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
/* lo -> bits 0..15 (the lower k index), hi -> bits 16..31 */
__device__ __forceinline__ at_u32 at_pack_bf16(float lo, float hi) {
    at_u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
/* keeps the compiler from moving reads of wgmma results above the wait */
__device__ __forceinline__ void at_fence_acc(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* generated: D(64x128 f32) (+)= A(smem desc, K-major) * B(smem desc, K-major), bf16 */
__device__ __forceinline__ void at_mma_ss(float (&d)[64], at_u64 adesc, at_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* generated: D(64x128 f32) += A(registers, bf16x2 x4) * B(smem desc, MN-major: transposed) */
__device__ __forceinline__ void at_mma_rs(float (&d)[64], const at_u32 (&a)[4], at_u64 bdesc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "n"(1));
}

/* ----------------------------------------------------------------- kernel */
/* CL = 2: a cluster of the CTAs of two q heads of one GQA group at the same query block;
 *   each producer loads one 64-d half of every K and V tile and multicasts it to both CTAs
 *   (half the L2->SM traffic); a stage is free when the 16 consumer warps of both CTAs
 *   have released it (EMPTY counts local and remote arrivals).
 * DIAG = 1: diagnostic, NOT attention: the softmax is replaced by S *= c (no max, exp2,
 *   sums or rescale): the TMA + wgmma + convert stream alone, to bound what the softmax costs. */
/* OPT bit 0 (KVS): K and V stages are released separately (K right after S = Q K^T
 *   completes, V after P V): the producer can refill K a tile earlier, so the same ring
 *   holds a deeper prefetch. OPT bit 1 (RS): O is rescaled only when some row's max moved
 *   (warp vote), as the max settles after the first tiles. */
template <int VER, int ST, int CL = 1, int DIAG = 0, int OPT = 0>
__device__ __forceinline__ void at_body(const at_params &p, const at_tmap &tmQ, const at_tmap &tmK, const at_tmap &tmV) {
    extern __shared__ unsigned char at_dsmem[];
    const at_u32 raw = at_smem_u32(at_dsmem);
    const at_u32 sb = (raw + 1023u) & ~1023u;
    const at_u32 sQ = sb, sK = sb + AT_TILE, sV = sb + (1 + ST) * AT_TILE;
    const at_u32 sBar = sb + (1 + 2 * ST) * AT_TILE;
    const at_u32 QFULL = sBar, KFULL = sBar + 8, VFULL = sBar + 8 + 8 * ST, EMPTY = sBar + 8 + 16 * ST;
    const at_u32 EMPTYV = sBar + 8 + 24 * ST; /* KVS: V stages; EMPTY then counts K releases */
    constexpr bool KVS = (OPT & 1) != 0, RS = (OPT & 2) != 0;

    const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
    const int nbh = p.B * p.Hq;
    const int qb = p.nqb - 1 - (int)(blockIdx.x / nbh); /* heaviest query blocks first */
    const int bh = (int)(blockIdx.x % nbh);
    const int b = bh / p.Hq, h = bh % p.Hq;
    const int bkv = b * p.Hkv + h / p.group;
    const int nkt = qb + 1; /* key tiles 0..qb (BM == BN) */

    if (tid == 0) {
        at_mbar_init(QFULL, 1);
        for (int s = 0; s < ST; s++) {
            at_mbar_init(KFULL + 8 * s, 1);
            at_mbar_init(VFULL + 8 * s, 1);
            at_mbar_init(EMPTY + 8 * s, 8 * CL); /* one arrive per consumer warp (of each CTA) */
            if (KVS) at_mbar_init(EMPTYV + 8 * s, 8 * CL);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const at_u32 crank = CL == 2 ? at_cluster_rank() : 0u;
    if (CL == 2) at_cluster_sync(); /* the peer's barriers exist before any multicast or remote arrive */

    if (wg == 0) { /* ------------------------------------------ producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
        if (tid == 0) {
            at_mbar_expect_tx(QFULL, AT_TILE);
            at_tma_3d(sQ, &tmQ, 0, qb * AT_BM, bh, QFULL);
            at_tma_3d(sQ + AT_HALF, &tmQ, 64, qb * AT_BM, bh, QFULL);
            for (int kt = 0; kt < nkt; kt++) {
                const int s = kt % ST;
                at_mbar_wait<true>(EMPTY + 8 * s, ((kt / ST) & 1) ^ 1);
                if (CL == 2) { /* my half to both CTAs; the peer sends the other half */
                    at_mbar_expect_tx(KFULL + 8 * s, AT_TILE);
                    at_tma_3d_mc(sK + s * AT_TILE + crank * AT_HALF, &tmK, 64 * crank, kt * AT_BN, bkv, KFULL + 8 * s, 3);
                    if (KVS) at_mbar_wait<true>(EMPTYV + 8 * s, ((kt / ST) & 1) ^ 1);
                    at_mbar_expect_tx(VFULL + 8 * s, AT_TILE);
                    at_tma_3d_mc(sV + s * AT_TILE + crank * AT_HALF, &tmV, 64 * crank, kt * AT_BN, bkv, VFULL + 8 * s, 3);
                } else {
                    at_mbar_expect_tx(KFULL + 8 * s, AT_TILE);
                    at_tma_3d(sK + s * AT_TILE, &tmK, 0, kt * AT_BN, bkv, KFULL + 8 * s);
                    at_tma_3d(sK + s * AT_TILE + AT_HALF, &tmK, 64, kt * AT_BN, bkv, KFULL + 8 * s);
                    if (KVS) at_mbar_wait<true>(EMPTYV + 8 * s, ((kt / ST) & 1) ^ 1);
                    at_mbar_expect_tx(VFULL + 8 * s, AT_TILE);
                    at_tma_3d(sV + s * AT_TILE, &tmV, 0, kt * AT_BN, bkv, VFULL + 8 * s);
                    at_tma_3d(sV + s * AT_TILE + AT_HALF, &tmV, 64, kt * AT_BN, bkv, VFULL + 8 * s);
                }
            }
        }
    } else { /* ------------------------------------------ consumers */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    const int cw = wg - 1, g = lane >> 2, c4 = lane & 3;
    const int row0 = qb * AT_BM + cw * 64 + warp * 16 + g; /* and row0 + 8 */
    const float sl2 = p.sl2;
    const at_u64 qdesc = at_desc(sQ + cw * 8192, 16, 1024);
    const at_u64 kdesc = at_desc(sK, 16, 1024);
    const at_u64 vdesc = at_desc(sV, p.vlbo, p.vsbo);

    float S[64], O[64];
    at_u32 P[8][4];
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
#pragma unroll
    for (int i = 0; i < 64; i++) O[i] = 0.f;

#define AT_ISSUE_S(s)                                                                                         \
    do {                                                                                                      \
        _Pragma("unroll") for (int ks = 0; ks < 8; ks++) {                                                    \
            const at_u32 off_ = ((ks >> 2) * AT_HALF + (ks & 3) * 32) >> 4;                                   \
            at_mma_ss(S, qdesc + off_, kdesc + (((s) * AT_TILE) >> 4) + off_, ks);                            \
        }                                                                                                     \
    } while (0)
#define AT_ISSUE_PV(s)                                                                                        \
    do {                                                                                                      \
        _Pragma("unroll") for (int kk = 0; kk < 8; kk++) at_mma_rs(O, P[kk], vdesc + (((s) * AT_TILE + kk * 2048) >> 4)); \
    } while (0)
    /* causal mask of the diagonal tile kt: key > row -> -inf */
#define AT_MASK(kt)                                                                                           \
    do {                                                                                                      \
        _Pragma("unroll") for (int nt = 0; nt < 16; nt++) {                                                   \
            const int key_ = (kt) * AT_BN + nt * 8 + 2 * c4;                                                  \
            if (key_ > row0) S[nt * 4 + 0] = -INFINITY;                                                       \
            if (key_ + 1 > row0) S[nt * 4 + 1] = -INFINITY;                                                   \
            if (key_ > row0 + 8) S[nt * 4 + 2] = -INFINITY;                                                   \
            if (key_ + 1 > row0 + 8) S[nt * 4 + 3] = -INFINITY;                                               \
        }                                                                                                     \
    } while (0)
    /* online softmax of S in place (S <- exp2(S*sl2 - m*sl2)); a0, a1: the rescale of O */
#define AT_SOFTMAX(a0, a1)                                                                                    \
    do {                                                                                                      \
        float x0_ = m0, x1_ = m1;                                                                             \
        _Pragma("unroll") for (int nt = 0; nt < 16; nt++) {                                                   \
            x0_ = fmaxf(x0_, fmaxf(S[nt * 4 + 0], S[nt * 4 + 1]));                                            \
            x1_ = fmaxf(x1_, fmaxf(S[nt * 4 + 2], S[nt * 4 + 3]));                                            \
        }                                                                                                     \
        x0_ = fmaxf(x0_, __shfl_xor_sync(0xffffffffu, x0_, 1));                                               \
        x1_ = fmaxf(x1_, __shfl_xor_sync(0xffffffffu, x1_, 1));                                               \
        x0_ = fmaxf(x0_, __shfl_xor_sync(0xffffffffu, x0_, 2));                                               \
        x1_ = fmaxf(x1_, __shfl_xor_sync(0xffffffffu, x1_, 2));                                               \
        a0 = at_ex2((m0 - x0_) * sl2);                                                                        \
        a1 = at_ex2((m1 - x1_) * sl2);                                                                        \
        m0 = x0_;                                                                                             \
        m1 = x1_;                                                                                             \
        const float n0_ = -x0_ * sl2, n1_ = -x1_ * sl2;                                                       \
        float s0_ = 0.f, s1_ = 0.f;                                                                           \
        _Pragma("unroll") for (int nt = 0; nt < 16; nt++) {                                                   \
            S[nt * 4 + 0] = at_ex2(fmaf(S[nt * 4 + 0], sl2, n0_));                                            \
            S[nt * 4 + 1] = at_ex2(fmaf(S[nt * 4 + 1], sl2, n0_));                                            \
            S[nt * 4 + 2] = at_ex2(fmaf(S[nt * 4 + 2], sl2, n1_));                                            \
            S[nt * 4 + 3] = at_ex2(fmaf(S[nt * 4 + 3], sl2, n1_));                                            \
            s0_ += S[nt * 4 + 0] + S[nt * 4 + 1];                                                             \
            s1_ += S[nt * 4 + 2] + S[nt * 4 + 3];                                                             \
        }                                                                                                     \
        l0 = l0 * a0 + s0_;                                                                                   \
        l1 = l1 * a1 + s1_;                                                                                   \
    } while (0)
#define AT_RESCALE(a0, a1)                                                                                    \
    do {                                                                                                      \
        if (!RS || __any_sync(0xffffffffu, (a0 != 1.f) | (a1 != 1.f))) {                                      \
            _Pragma("unroll") for (int nt = 0; nt < 16; nt++) {                                               \
                O[nt * 4 + 0] *= a0;                                                                          \
                O[nt * 4 + 1] *= a0;                                                                          \
                O[nt * 4 + 2] *= a1;                                                                          \
                O[nt * 4 + 3] *= a1;                                                                          \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)
#define AT_CONVERT_P()                                                                                        \
    do {                                                                                                      \
        _Pragma("unroll") for (int kk = 0; kk < 8; kk++) {                                                    \
            P[kk][0] = at_pack_bf16(S[8 * kk + 0], S[8 * kk + 1]);                                            \
            P[kk][1] = at_pack_bf16(S[8 * kk + 2], S[8 * kk + 3]);                                            \
            P[kk][2] = at_pack_bf16(S[8 * kk + 4], S[8 * kk + 5]);                                            \
            P[kk][3] = at_pack_bf16(S[8 * kk + 6], S[8 * kk + 7]);                                            \
        }                                                                                                     \
    } while (0)
#define AT_RELEASE_B(bar, s)                                                                                  \
    do {                                                                                                      \
        __syncwarp();                                                                                         \
        if (lane == 0) {                                                                                      \
            at_mbar_arrive((bar) + 8 * (s));                                                                  \
            if (CL == 2) at_mbar_arrive_remote((bar) + 8 * (s), crank ^ 1u);                                  \
        }                                                                                                     \
    } while (0)
#define AT_RELEASE(s) AT_RELEASE_B(KVS ? EMPTYV : EMPTY, s) /* the V stage (both, without KVS) */
#define AT_RELEASE_K(s)                                                                                       \
    do {                                                                                                      \
        if (KVS) AT_RELEASE_B(EMPTY, s);                                                                      \
    } while (0)
    /* ping-pong turns between the two consumer warpgroups (VER 2) */
    const int bar_me = 1 + cw, bar_other = 2 - cw;
#define AT_TURN_BEGIN()                                                                                       \
    do {                                                                                                      \
        if (VER == 2) at_bar_sync(bar_me, 256);                                                               \
    } while (0)
#define AT_TURN_END(last)                                                                                     \
    do {                                                                                                      \
        if (VER == 2 && !((last) && cw == 1)) at_bar_arrive(bar_other, 256);                                  \
    } while (0)

    at_mbar_wait(QFULL, 0);

    if (VER == 0) {
        for (int kt = 0; kt < nkt; kt++) {
            const int s = kt % ST;
            const at_u32 ph = (kt / ST) & 1;
            at_mbar_wait(KFULL + 8 * s, ph);
            at_wg_fence();
            AT_ISSUE_S(s);
            at_wg_commit();
            at_wg_wait<0>();
            at_fence_acc(S);
            AT_RELEASE_K(s);
            if (kt == nkt - 1) AT_MASK(kt);
            float a0, a1;
            if (DIAG) {
                _Pragma("unroll") for (int i = 0; i < 64; i++) S[i] *= sl2;
                a0 = a1 = 1.f;
                l0 = l1 = 1.f;
            } else
                AT_SOFTMAX(a0, a1);
            AT_RESCALE(a0, a1);
            AT_CONVERT_P();
            at_mbar_wait(VFULL + 8 * s, ph);
            at_wg_fence();
            AT_ISSUE_PV(s);
            at_wg_commit();
            at_wg_wait<0>();
            at_fence_acc(O);
            AT_RELEASE(s);
        }
    } else {
        if (VER == 2 && cw == 1) at_bar_arrive(bar_other, 256); /* warpgroup 1 goes first */
        /* prologue: S(0) */
        AT_TURN_BEGIN();
        at_mbar_wait(KFULL, 0);
        at_wg_fence();
        AT_ISSUE_S(0);
        at_wg_commit();
        AT_TURN_END(false);
        at_wg_wait<0>();
        at_fence_acc(S);
        AT_RELEASE_K(0);
        if (nkt == 1) AT_MASK(0);
        {
            float a0, a1;
            if (DIAG) {
                _Pragma("unroll") for (int i = 0; i < 64; i++) S[i] *= sl2;
                a0 = a1 = 1.f;
                l0 = l1 = 1.f;
            } else
                AT_SOFTMAX(a0, a1);
        }
        for (int j = 1; j < nkt; j++) {
            const int sj = j % ST, sp = (j - 1) % ST;
            AT_CONVERT_P();
            AT_TURN_BEGIN();
            at_mbar_wait(KFULL + 8 * sj, (j / ST) & 1);
            at_mbar_wait(VFULL + 8 * sp, ((j - 1) / ST) & 1); /* loaded with K(j-1): ready */
            at_wg_fence();
            AT_ISSUE_S(sj);
            at_wg_commit();
            AT_ISSUE_PV(sp);
            at_wg_commit();
            AT_TURN_END(false);
            at_wg_wait<1>();
            at_fence_acc(S);
            AT_RELEASE_K(sj);
            if (j == nkt - 1) AT_MASK(j);
            float a0, a1;
            if (DIAG) {
                _Pragma("unroll") for (int i = 0; i < 64; i++) S[i] *= sl2;
                a0 = a1 = 1.f;
                l0 = l1 = 1.f;
            } else
                AT_SOFTMAX(a0, a1);
            at_wg_wait<0>();
            at_fence_acc(O);
            AT_RESCALE(a0, a1);
            AT_RELEASE(sp);
        }
        {
            const int sl = (nkt - 1) % ST;
            AT_CONVERT_P();
            AT_TURN_BEGIN();
            at_mbar_wait(VFULL + 8 * sl, ((nkt - 1) / ST) & 1);
            at_wg_fence();
            AT_ISSUE_PV(sl);
            at_wg_commit();
            AT_TURN_END(true);
            at_wg_wait<0>();
            at_fence_acc(O);
        }
    }
#undef AT_ISSUE_S
#undef AT_ISSUE_PV
#undef AT_MASK
#undef AT_SOFTMAX
#undef AT_RESCALE
#undef AT_CONVERT_P
#undef AT_RELEASE
#undef AT_RELEASE_B
#undef AT_RELEASE_K
#undef AT_TURN_BEGIN
#undef AT_TURN_END
    /* epilogue: O / l, bf16, straight to global (rows < N only) */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.f / l0, i1 = 1.f / l1;
    unsigned short *o0 = p.o + ((long long)bh * p.N + row0) * AT_D + 2 * c4;
    unsigned short *o1 = o0 + 8 * AT_D;
    const bool w0 = row0 < p.N, w1 = row0 + 8 < p.N;
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
        if (w0) *(at_u32 *)(o0 + nt * 8) = at_pack_bf16(O[nt * 4 + 0] * i0, O[nt * 4 + 1] * i0);
        if (w1) *(at_u32 *)(o1 + nt * 8) = at_pack_bf16(O[nt * 4 + 2] * i1, O[nt * 4 + 3] * i1);
    }
    } /* consumers */
    if (CL == 2) at_cluster_sync(); /* no CTA leaves while its peer may still arrive on its barriers */
}

#define AT_KERNEL(name, VER, ST)                                                                              \
    extern "C" __global__ void __launch_bounds__(AT_THREADS, 1)                                               \
        name(const __grid_constant__ at_params p, const __grid_constant__ at_tmap tmQ, const __grid_constant__ at_tmap tmK, \
             const __grid_constant__ at_tmap tmV) {                                                           \
        at_body<VER, ST>(p, tmQ, tmK, tmV);                                                                   \
    }
#define AT_KERNEL_X(name, VER, ST, CL, DIAG, OPT)                                                                  \
    extern "C" __global__ void __launch_bounds__(AT_THREADS, 1) __cluster_dims__(CL, 1, 1)                    \
        name(const __grid_constant__ at_params p, const __grid_constant__ at_tmap tmQ, const __grid_constant__ at_tmap tmK, \
             const __grid_constant__ at_tmap tmV) {                                                           \
        at_body<VER, ST, CL, DIAG, OPT>(p, tmQ, tmK, tmV);                                                         \
    }
AT_KERNEL(attn_wg_basic, 0, 2)
AT_KERNEL(attn_wg_intra, 1, 2)
AT_KERNEL(attn_wg_pingpong, 2, 2)
AT_KERNEL(attn_wg_intra_st3, 1, 3)
AT_KERNEL(attn_wg_basic_st3, 0, 3)
AT_KERNEL(attn_wg_pingpong_st3, 2, 3)
AT_KERNEL_X(attn_wg_intra_st3_cl2, 1, 3, 2, 0, 0)
AT_KERNEL_X(attn_wg_pingpong_st3_cl2, 2, 3, 2, 0, 0)
AT_KERNEL_X(attn_wg_diag_nosoftmax_st3, 1, 3, 1, 1, 0)
AT_KERNEL_X(attn_wg_intra_st3_kvs, 1, 3, 1, 0, 1)
AT_KERNEL_X(attn_wg_intra_st3_kvs_rs, 1, 3, 1, 0, 3)
AT_KERNEL_X(attn_wg_pingpong_st3_kvs, 2, 3, 1, 0, 1)
AT_KERNEL_X(attn_wg_intra_kvs, 1, 2, 1, 0, 1)
AT_KERNEL_X(attn_wg_diag_nosoftmax_st3_kvs, 1, 3, 1, 1, 1)

#endif /* ATTN_WGMMA_CU */
