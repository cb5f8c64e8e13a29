/* est_wgmma.cu — SALE estimation floor on Hopper (sm_90a): for each (batch, q head,
 * query block of 64 rows) and every causal key block J of 32 keys, is there a
 * (i, j in J, j <= i) with  (sq_i*sk_J)*(float)dot(q^_i, k^_j) + c_j > t_i ?
 * (the kept-block test of docs/sale-algorithm.md, the same float expression,
 * in this order, no FMA, as sale_common.cuh's shat()).
 *
 * Kernels (extern "C", no host code, no includes: NVRTC-ready; the host driver
 * is est_floor.cu, which #includes this file):
 *   est_wgmma_*   int8 wgmma.mma_async m64n128k32 (s8*s8->s32, both K-major),
 *                 K codes streamed by TMA (cp.async.bulk.tensor, 128B swizzle)
 *                 into a 4-stage ring on mbarriers; warp-specialised: warpgroup 0
 *                 is the producer (one thread), warpgroups 1 and 2 consume.
 *                 CTA = one kv head x 256 query rows = 4 "m64 tiles": for GQA
 *                 group 4, the 4 q heads of the group at one query block of 64
 *                 (they share every K tile; all four have the same causal extent).
 *                 Each consumer warpgroup owns 2 m64 tiles (2 x 64 s32 accumulators).
 *   est_mma_kernel  reference: int8 mma.sync m16n8k32, cp.async 3-stage ring of
 *                 64-key tiles, 8 warps x 32 rows, same CTA tile, same test.
 *   est_bound_kernel  {min c_j, max c_j} per (b, q head, key block): the test
 *                 first bounds each thread's 8 keys of a block by
 *                 fl(fl(pr*max dot) + min/max c) (exact bounds: fl() is monotone
 *                 and pr >= 0) and falls back to the exact per-element test only
 *                 where the threshold lies between the two bounds.
 * Requirements (checked by the host): D = 128, N % 128 == 0, group in {1,2,4} or a
 * multiple of 4, N <= 32 * 32 * EST_NKW_MAX. */
#ifndef EST_WGMMA_CU
#define EST_WGMMA_CU

#define EST_D 128        /* head dim = bytes per code row = one 128B swizzle row */
#define EST_BQ 64        /* query rows per mask row (block_q) */
#define EST_BK 32        /* keys per mask bit (block_k) */
#define EST_KT 128       /* keys per TMA stage / wgmma N */
#define EST_STAGES 4
#define EST_NKW_MAX 256  /* mask words per row kept in shared memory: N <= 262144 */
#define EST_MKT 64       /* keys per stage of the mma.sync reference */
#define EST_MSTAGES 3
#define EST_MPITCH 144   /* padded row pitch (bytes) of the mma.sync reference's K tile */

typedef unsigned int est_u32;
typedef unsigned long long est_u64;

typedef struct est_params {
    const signed char *qcode; /* [B][Hq][N][128] */
    const signed char *kcode; /* [B][Hkv][N][128] */
    const float *qscale;      /* [B][Hq][N] */
    const float *kscale;      /* [B][Hkv][nkb] */
    const float *cterm;       /* [B][Hq][N] */
    const float2 *cbound;     /* [B][Hq][nkb] {min, max} of c over the block */
    const float *thr;         /* [B][Hq][N] t_i */
    est_u32 *mask;            /* [B][Hq][nqb][nkw] */
    int *dbg;                 /* debug: raw accumulators of CTA 0's first key tile */
    int B, Hq, Hkv, N, nqb, nkb, nkw, group;
} est_params;

/* a CUtensorMap, opaque (128 bytes, 64-byte aligned), filled by the host */
typedef struct __align__(64) est_tmap { est_u64 v[16]; } est_tmap;

/* ------------------------------------------------------------------ helpers */
__device__ __forceinline__ est_u32 est_smem_u32(const void *p) { return (est_u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void est_mbar_init(est_u32 a, est_u32 n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(n) : "memory");
}
__device__ __forceinline__ void est_mbar_expect_tx(est_u32 a, est_u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(a), "r"(bytes) : "memory");
}
__device__ __forceinline__ void est_mbar_arrive(est_u32 a) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
}
__device__ __forceinline__ void est_mbar_wait(est_u32 a, est_u32 parity) {
    est_u32 ok;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(ok)
                     : "r"(a), "r"(parity)
                     : "memory");
    } while (!ok);
}
__device__ __forceinline__ void est_tma_3d(est_u32 dst, const est_tmap *map, int c0, int c1, int c2, est_u32 mbar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
                 "l"((est_u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(mbar)
                 : "memory");
}
/* K-major operand, 128-byte swizzle (what TMA's SWIZZLE_128B writes): rows of 128
 * bytes, 8-row atoms 1024 bytes apart (SBO); LBO unused; base 1024-aligned */
__device__ __forceinline__ est_u64 est_desc_sw128(est_u32 saddr) {
    est_u64 d = (est_u64)((saddr & 0x3FFFFu) >> 4);
    d |= (est_u64)1 << 16;
    d |= (est_u64)(1024 >> 4) << 32;
    d |= (est_u64)1 << 62;
    return d;
}
__device__ __forceinline__ void est_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void est_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void est_wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void est_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

/* generated (python, see NOTES.md): m64n128k32 s8*s8->s32, 64 accumulators per thread */
__device__ __forceinline__ void wg_mma_rA(int (&d)[64], const unsigned (&a)[4], unsigned long long bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "r"(scale_d));
}
__device__ __forceinline__ void wg_mma_sA(int (&d)[64], unsigned long long adesc, unsigned long long bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
        : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* keeps the compiler from moving accesses of in-flight accumulators across wgmma fences/waits */
__device__ __forceinline__ void wg_fence_acc(int (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}

__device__ __forceinline__ void est_mma16832(int *d, const est_u32 (&a)[4], est_u32 b0, est_u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void est_ldsm4(est_u32 &r0, est_u32 &r1, est_u32 &r2, est_u32 &r3, est_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void est_cp16(est_u32 dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void est_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void est_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* ------------------------------------------------------------- the test */
/* int -> float, exact for |d| < 2^22 (|dot| <= 128*127*127 < 2^21), no slow I2F */
__device__ __forceinline__ float est_i2f(int d) { return __fsub_rn(__int_as_float(d + 0x4B400000), 12582912.f); }
/* the estimate, exactly as the algorithm page and the CPU reference: (sq*sk)*dot + c, no FMA */
__device__ __forceinline__ float est_shat(float pr, int d, float c) { return __fadd_rn(__fmul_rn(pr, est_i2f(d)), c); }

/* One warp, 16 rows x 32 keys in the m16n8 accumulator layout (wgmma's per-warp
 * layout is the same): a[base + nt*4 + hh*2 + e] = dot(row g + 8*hh, key 8*nt + 2*c4 + e),
 * g = lane/4, c4 = lane%4. Returns, the same in every lane, whether some
 * row i, key j (j <= i when MASKED) has shat > t_i. */
template <bool MASKED, int NA>
__device__ __forceinline__ bool est_block(const int (&a)[NA], const int base, float sq0, float sq1, float t0, float t1, float sk,
                                          float2 cb, const float *crow, int c4, int row0, int key0) {
    const float pr0 = __fmul_rn(sq0, sk), pr1 = __fmul_rn(sq1, sk);
    if (!MASKED) {
        int d0 = max(a[base + 0], a[base + 1]), d1 = max(a[base + 2], a[base + 3]);
#pragma unroll
        for (int nt = 1; nt < 4; nt++) {
            d0 = max(d0, max(a[base + nt * 4 + 0], a[base + nt * 4 + 1]));
            d1 = max(d1, max(a[base + nt * 4 + 2], a[base + nt * 4 + 3]));
        }
        const float x0 = __fmul_rn(pr0, est_i2f(d0)), x1 = __fmul_rn(pr1, est_i2f(d1));
        /* lower bound of the row's best score in these 8 keys passes: kept */
        const bool sure = (__fadd_rn(x0, cb.x) > t0) | (__fadd_rn(x1, cb.x) > t1);
        if (__any_sync(0xffffffffu, sure)) return true;
        /* upper bound passes: undecided, test exactly */
        const bool m0 = __fadd_rn(x0, cb.y) > t0, m1 = __fadd_rn(x1, cb.y) > t1;
        if (!__any_sync(0xffffffffu, m0 | m1)) return false;
        bool hit = false;
        if (m0 | m1) {
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const float2 c = *(const float2 *)(crow + nt * 8 + 2 * c4);
                hit |= m0 & ((est_shat(pr0, a[base + nt * 4 + 0], c.x) > t0) | (est_shat(pr0, a[base + nt * 4 + 1], c.y) > t0));
                hit |= m1 & ((est_shat(pr1, a[base + nt * 4 + 2], c.x) > t1) | (est_shat(pr1, a[base + nt * 4 + 3], c.y) > t1));
            }
        }
        return __any_sync(0xffffffffu, hit);
    } else {
        bool hit = false;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int j = key0 + nt * 8 + 2 * c4;
            const float2 c = *(const float2 *)(crow + nt * 8 + 2 * c4);
            hit |= (j <= row0) & (est_shat(pr0, a[base + nt * 4 + 0], c.x) > t0);
            hit |= (j + 1 <= row0) & (est_shat(pr0, a[base + nt * 4 + 1], c.y) > t0);
            hit |= (j <= row0 + 8) & (est_shat(pr1, a[base + nt * 4 + 2], c.x) > t1);
            hit |= (j + 1 <= row0 + 8) & (est_shat(pr1, a[base + nt * 4 + 3], c.y) > t1);
        }
        return __any_sync(0xffffffffu, hit);
    }
}

/* CTA -> (b, kv head, first head, first query block); m64 tile mt (0..3) ->
 * head hbase + mt % g4, query block qb0 + mt / g4. Heaviest (last) query blocks first. */
struct est_cta {
    int b, kvh, hbase, qb0, g4, qpc;
};
__device__ __forceinline__ est_cta est_decode(const est_params &p, int lin) {
    est_cta c;
    c.g4 = p.group < 4 ? p.group : 4;
    c.qpc = 4 / c.g4;
    const int hgn = p.group / c.g4;
    const int per = p.B * p.Hkv * hgn;
    const int qc = p.nqb / c.qpc - 1 - lin / per;
    int r = lin % per;
    const int hg = r % hgn;
    r /= hgn;
    c.kvh = r % p.Hkv;
    c.b = r / p.Hkv;
    c.hbase = c.kvh * p.group + hg * c.g4;
    c.qb0 = qc * c.qpc;
    return c;
}

/* {min, max} of c_j over each key block */
extern "C" __global__ void est_bound_kernel(const est_params p) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; /* (b*Hq + h)*nkb + J */
    if (i >= (long long)p.B * p.Hq * p.nkb) return;
    const long long bh = i / p.nkb;
    const int J = (int)(i % p.nkb);
    const float4 *c = (const float4 *)(p.cterm + bh * p.N + (long long)J * EST_BK);
    float lo = 3.4e38f, hi = -3.4e38f;
#pragma unroll
    for (int k = 0; k < EST_BK / 4; k++) {
        float4 v = c[k];
        lo = fminf(lo, fminf(fminf(v.x, v.y), fminf(v.z, v.w)));
        hi = fmaxf(hi, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
    }
    ((float2 *)p.cbound)[i] = make_float2(lo, hi);
}

/* ------------------------------------------------------- wgmma kernel */
#define EST_WG_THREADS 384
#define EST_WG_SMEM (1024 + EST_STAGES * 16384 + 4 * 8192 + 128 + 4 * EST_NKW_MAX * 4)

/* AMODE 0: Q (A operand) from registers, loaded once per CTA from global;
 * AMODE 1: Q tiles by TMA into shared memory (descriptor A).
 * PIPE: per consumer warpgroup, the epilogue of one m64 tile overlaps the
 * wgmma of the other (and the next key tile's first wgmma group).
 * EPI 0: the test block by block (a vote and a branch per 32-key block);
 * EPI 1: batched: the bounds of all 4 blocks of an m64 tile first (independent
 *        chains), one __reduce_or_sync for the tile, the exact test only for
 *        undecided blocks; EPI 2: no test (timing: the TMA + wgmma stream alone). */
template <int AMODE, bool PIPE, bool DBG, int EPI>
__device__ __forceinline__ void est_wgmma_body(const est_params &p, const est_tmap &tmK, const est_tmap &tmQ) {
    extern __shared__ unsigned char est_dsmem[];
    const est_u32 raw = est_smem_u32(est_dsmem);
    const est_u32 sb = (raw + 1023u) & ~1023u;
    const est_u32 sK = sb;
    const est_u32 sQ = sb + EST_STAGES * 16384;
    const est_u32 sBar = sQ + 4 * 8192; /* full[ST], empty[ST], qfull */
    est_u32 *msk = (est_u32 *)(est_dsmem + (sBar - raw) + 128);
    const est_u32 FULL = sBar, EMPTY = sBar + 8 * EST_STAGES, QFULL = sBar + 16 * EST_STAGES;

    const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
    const est_cta cta = est_decode(p, blockIdx.x);
    const int qb_last = cta.qb0 + cta.qpc - 1;
    const int kt_end = (qb_last * EST_BQ + EST_BQ - 1) / EST_KT + 1;

    if (tid == 0) {
        for (int s = 0; s < EST_STAGES; s++) {
            est_mbar_init(FULL + 8 * s, 1);
            est_mbar_init(EMPTY + 8 * s, 8); /* one arrive per consumer warp */
        }
        est_mbar_init(QFULL, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    for (int i = tid; i < 4 * EST_NKW_MAX; i += EST_WG_THREADS) msk[i] = 0u;
    __syncthreads();

    if (wg == 0) { /* ------------------------------ producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
        if (tid == 0) {
            if (AMODE == 1) {
                est_mbar_expect_tx(QFULL, 4 * 8192);
                for (int mt = 0; mt < 4; mt++)
                    est_tma_3d(sQ + mt * 8192, &tmQ, 0, (cta.qb0 + mt / cta.g4) * EST_BQ, cta.b * p.Hq + cta.hbase + mt % cta.g4, QFULL);
            }
            for (int kt = 0; kt < kt_end; kt++) {
                const int s = kt % EST_STAGES;
                est_mbar_wait(EMPTY + 8 * s, ((kt / EST_STAGES) & 1) ^ 1);
                est_mbar_expect_tx(FULL + 8 * s, EST_KT * EST_D);
                est_tma_3d(sK + s * 16384, &tmK, 0, kt * EST_KT, cta.b * p.Hkv + cta.kvh, FULL + 8 * s);
            }
        }
        return;
    }
    /* ------------------------------------------------ consumers */
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    const int cw = wg - 1;
    const int g = lane >> 2, c4 = lane & 3;
    int qb[2], row0[2];
    long long bh[2];
    float sq[2][2], tt[2][2];
    est_u32 qa[2][4][4];
#pragma unroll
    for (int m = 0; m < 2; m++) {
        const int mt = 2 * cw + m;
        qb[m] = cta.qb0 + mt / cta.g4;
        bh[m] = (long long)cta.b * p.Hq + cta.hbase + mt % cta.g4;
        row0[m] = qb[m] * EST_BQ + warp * 16 + g;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            sq[m][hh] = p.qscale[bh[m] * p.N + row0[m] + 8 * hh];
            tt[m][hh] = p.thr[bh[m] * p.N + row0[m] + 8 * hh];
        }
        if (AMODE == 0) {
            const unsigned char *qr = (const unsigned char *)p.qcode + (bh[m] * p.N + row0[m]) * EST_D;
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                qa[m][ks][0] = *(const est_u32 *)(qr + ks * 32 + 4 * c4);
                qa[m][ks][1] = *(const est_u32 *)(qr + 8 * EST_D + ks * 32 + 4 * c4);
                qa[m][ks][2] = *(const est_u32 *)(qr + ks * 32 + 16 + 4 * c4);
                qa[m][ks][3] = *(const est_u32 *)(qr + 8 * EST_D + ks * 32 + 16 + 4 * c4);
            }
        }
    }
    if (AMODE == 1) est_mbar_wait(QFULL, 0);
    const float *ksc = p.kscale + ((long long)cta.b * p.Hkv + cta.kvh) * p.nkb;
    const float4 *cb0 = (const float4 *)(p.cbound + bh[0] * p.nkb), *cb1 = (const float4 *)(p.cbound + bh[1] * p.nkb);
    const float *cr0 = p.cterm + bh[0] * p.N, *cr1 = p.cterm + bh[1] * p.N;

    int acc[2][64];


#define EST_ISSUE(m, s)                                                                                   \
    do {                                                                                                  \
        const est_u32 kb_ = sK + (s) * 16384;                                                             \
        _Pragma("unroll") for (int ks = 0; ks < 4; ks++) {                                                \
            if (AMODE == 0)                                                                               \
                wg_mma_rA(acc[m], qa[m][ks], est_desc_sw128(kb_ + 32 * ks), ks);                          \
            else                                                                                          \
                wg_mma_sA(acc[m], est_desc_sw128(sQ + (2 * cw + (m)) * 8192 + 32 * ks), est_desc_sw128(kb_ + 32 * ks), ks); \
        }                                                                                                 \
    } while (0)

#define EST_EPI(m, kt, skq, cbq, crow)                                                                    \
    do {                                                                                                  \
        const int rmin_ = qb[m] * EST_BQ;                                                                 \
        const float skj_[4] = {skq.x, skq.y, skq.z, skq.w};                                               \
        const float2 cbj_[4] = {make_float2(cbq[m][0].x, cbq[m][0].y), make_float2(cbq[m][0].z, cbq[m][0].w), \
                                make_float2(cbq[m][1].x, cbq[m][1].y), make_float2(cbq[m][1].z, cbq[m][1].w)}; \
        _Pragma("unroll") for (int J = 0; J < 4; J++) {                                                   \
            const int key0 = (kt) * EST_KT + J * EST_BK;                                                  \
            if (key0 <= rmin_ + EST_BQ - 1) {                                                             \
                bool kept;                                                                                \
                if (key0 + EST_BK - 1 <= rmin_)                                                           \
                    kept = est_block<false>(acc[m], 16 * J, sq[m][0], sq[m][1], tt[m][0], tt[m][1], skj_[J], cbj_[J], \
                                            crow + key0, c4, row0[m], key0);                              \
                else                                                                                      \
                    kept = est_block<true>(acc[m], 16 * J, sq[m][0], sq[m][1], tt[m][0], tt[m][1], skj_[J], cbj_[J], \
                                           crow + key0, c4, row0[m], key0);                               \
                const int blk = (kt) * (EST_KT / EST_BK) + J;                                             \
                if (kept && lane == 0) atomicOr(&msk[(2 * cw + (m)) * EST_NKW_MAX + (blk >> 5)], 1u << (blk & 31)); \
            }                                                                                             \
        }                                                                                                 \
    } while (0)

#define EST_EPI_B(m, kt, skq, cbq, crow)                                                                  \
    do {                                                                                                  \
        if (EPI == 2) {                                                                                   \
            int x_ = 0;                                                                                   \
            _Pragma("unroll") for (int i_ = 0; i_ < 64; i_++) x_ ^= acc[m][i_];                           \
            if (x_ == 0x7fffffff) msk[0] = 1u;                                                            \
        } else if (EPI == 0 || (kt) * EST_KT + EST_KT - 1 > qb[m] * EST_BQ) {                             \
            EST_EPI(m, kt, skq, cbq, crow);                                                               \
        } else {                                                                                          \
            const float skj_[4] = {skq.x, skq.y, skq.z, skq.w};                                           \
            const float cmin_[4] = {cbq[m][0].x, cbq[m][0].z, cbq[m][1].x, cbq[m][1].z};                  \
            const float cmax_[4] = {cbq[m][0].y, cbq[m][0].w, cbq[m][1].y, cbq[m][1].w};                  \
            est_u32 bits_ = 0;                                                                            \
            _Pragma("unroll") for (int J = 0; J < 4; J++) {                                               \
                const float pr0_ = __fmul_rn(sq[m][0], skj_[J]), pr1_ = __fmul_rn(sq[m][1], skj_[J]);     \
                int d0_ = max(acc[m][16 * J + 0], acc[m][16 * J + 1]), d1_ = max(acc[m][16 * J + 2], acc[m][16 * J + 3]); \
                _Pragma("unroll") for (int nt = 1; nt < 4; nt++) {                                        \
                    d0_ = max(d0_, max(acc[m][16 * J + 4 * nt + 0], acc[m][16 * J + 4 * nt + 1]));        \
                    d1_ = max(d1_, max(acc[m][16 * J + 4 * nt + 2], acc[m][16 * J + 4 * nt + 3]));        \
                }                                                                                         \
                const float x0_ = __fmul_rn(pr0_, est_i2f(d0_)), x1_ = __fmul_rn(pr1_, est_i2f(d1_));     \
                bits_ |= (est_u32)((__fadd_rn(x0_, cmin_[J]) > tt[m][0]) | (__fadd_rn(x1_, cmin_[J]) > tt[m][1])) << J; \
                bits_ |= (est_u32)((__fadd_rn(x0_, cmax_[J]) > tt[m][0]) | (__fadd_rn(x1_, cmax_[J]) > tt[m][1])) << (4 + J); \
            }                                                                                             \
            bits_ = __reduce_or_sync(0xffffffffu, bits_);                                                 \
            est_u32 kept_ = bits_ & 15u;                                                                  \
            const est_u32 und_ = (bits_ >> 4) & ~bits_ & 15u;                                             \
            if (und_) {                                                                                   \
                _Pragma("unroll") for (int J = 0; J < 4; J++) if (und_ >> J & 1u) {                       \
                    const float pr0_ = __fmul_rn(sq[m][0], skj_[J]), pr1_ = __fmul_rn(sq[m][1], skj_[J]); \
                    const float *cr_ = crow + (kt) * EST_KT + J * EST_BK;                                 \
                    bool hit_ = false;                                                                    \
                    _Pragma("unroll") for (int nt = 0; nt < 4; nt++) {                                    \
                        const float2 c_ = *(const float2 *)(cr_ + nt * 8 + 2 * c4);                       \
                        hit_ |= (est_shat(pr0_, acc[m][16 * J + 4 * nt + 0], c_.x) > tt[m][0]) |          \
                                (est_shat(pr0_, acc[m][16 * J + 4 * nt + 1], c_.y) > tt[m][0]) |          \
                                (est_shat(pr1_, acc[m][16 * J + 4 * nt + 2], c_.x) > tt[m][1]) |          \
                                (est_shat(pr1_, acc[m][16 * J + 4 * nt + 3], c_.y) > tt[m][1]);           \
                    }                                                                                     \
                    if (__any_sync(0xffffffffu, hit_)) kept_ |= 1u << J;                                  \
                }                                                                                         \
            }                                                                                             \
            const int blk0_ = (kt) * (EST_KT / EST_BK);                                                   \
            if (kept_ && lane == 0) atomicOr(&msk[(2 * cw + (m)) * EST_NKW_MAX + (blk0_ >> 5)], kept_ << (blk0_ & 31)); \
        }                                                                                                 \
    } while (0)

    if (!PIPE) {
        for (int kt = 0; kt < kt_end; kt++) {
            const int s = kt % EST_STAGES;
            /* this tile's block parameters; their latency hides behind the wgmma */
            const float4 skc = *(const float4 *)(ksc + 4 * kt);
            const float4 cbc[2][2] = {{cb0[2 * kt], cb0[2 * kt + 1]}, {cb1[2 * kt], cb1[2 * kt + 1]}};
            est_mbar_wait(FULL + 8 * s, (kt / EST_STAGES) & 1);
            est_wg_fence();
            EST_ISSUE(0, s);
            EST_ISSUE(1, s);
            est_wg_commit();
            est_wg_wait<0>();
            wg_fence_acc(acc[0]);
            wg_fence_acc(acc[1]);
            __syncwarp();
            if (lane == 0) est_mbar_arrive(EMPTY + 8 * s);
            if (DBG && kt == 0 && blockIdx.x == 0) {
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int i = 0; i < 64; i++) p.dbg[((2 * cw + m) * 128 + wtid) * 64 + i] = acc[m][i];
            }
            EST_EPI_B(0, kt, skc, cbc, cr0);
            EST_EPI_B(1, kt, skc, cbc, cr1);
        }
    } else {
        est_mbar_wait(FULL, 0);
        est_wg_fence();
        EST_ISSUE(0, 0);
        est_wg_commit();
        EST_ISSUE(1, 0);
        est_wg_commit();
        /* the issue of the next tile's groups is unconditional inside the loop
         * (peeled last tile below): with conditional issues ptxas cannot prove
         * which group wait<1> retires and serialises every wgmma (C7514) */
        int kt = 0;
        for (; kt < kt_end - 1; kt++) {
            const int s = kt % EST_STAGES, s1 = (kt + 1) % EST_STAGES;
            /* this tile's block parameters */
            const float4 skc = *(const float4 *)(ksc + 4 * kt);
            const float4 cbc[2][2] = {{cb0[2 * kt], cb0[2 * kt + 1]}, {cb1[2 * kt], cb1[2 * kt + 1]}};
            est_wg_wait<1>();
            wg_fence_acc(acc[0]);
            EST_EPI_B(0, kt, skc, cbc, cr0);
            est_wg_wait<0>();
            wg_fence_acc(acc[1]);
            __syncwarp();
            if (lane == 0) est_mbar_arrive(EMPTY + 8 * s);
            est_mbar_wait(FULL + 8 * s1, ((kt + 1) / EST_STAGES) & 1);
            est_wg_fence();
            EST_ISSUE(0, s1);
            est_wg_commit();
            EST_EPI_B(1, kt, skc, cbc, cr1);
            est_wg_fence();
            EST_ISSUE(1, s1);
            est_wg_commit();
        }
        {
            const int s = kt % EST_STAGES;
            const float4 skc = *(const float4 *)(ksc + 4 * kt);
            const float4 cbc[2][2] = {{cb0[2 * kt], cb0[2 * kt + 1]}, {cb1[2 * kt], cb1[2 * kt + 1]}};
            est_wg_wait<1>();
            wg_fence_acc(acc[0]);
            EST_EPI_B(0, kt, skc, cbc, cr0);
            est_wg_wait<0>();
            wg_fence_acc(acc[1]);
            __syncwarp();
            if (lane == 0) est_mbar_arrive(EMPTY + 8 * s);
            EST_EPI_B(1, kt, skc, cbc, cr1);
        }
    }
#undef EST_ISSUE
#undef EST_EPI
#undef EST_EPI_B
    /* this warpgroup's two mask rows: every word, zeros included */
    est_bar_sync(1 + cw, 128);
#pragma unroll
    for (int m = 0; m < 2; m++) {
        est_u32 *dst = p.mask + (bh[m] * p.nqb + qb[m]) * p.nkw;
        for (int w = wtid; w < p.nkw; w += 128) dst[w] = msk[(2 * cw + m) * EST_NKW_MAX + w];
    }
}

extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<0, false, false, 0>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_pipe_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<0, true, false, 0>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_sa_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<1, false, false, 0>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_dbg_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<0, false, true, 0>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_b_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<0, false, false, 1>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_b_sa_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<1, false, false, 1>(p, tmK, tmQ);
}
extern "C" __global__ void __launch_bounds__(EST_WG_THREADS, 1)
    est_wgmma_only_kernel(const __grid_constant__ est_params p, const __grid_constant__ est_tmap tmK, const __grid_constant__ est_tmap tmQ) {
    est_wgmma_body<0, false, false, 2>(p, tmK, tmQ);
}

/* ---------------------------------------------- mma.sync reference kernel */
#define EST_MMA_THREADS 256
#define EST_MMA_SMEM (EST_MSTAGES * EST_MKT * EST_MPITCH + 4 * EST_NKW_MAX * 4)

extern "C" __global__ void __launch_bounds__(EST_MMA_THREADS, 2) est_mma_kernel(const est_params p) {
    extern __shared__ unsigned char est_dsmem_m[];
    const est_u32 sK = est_smem_u32(est_dsmem_m);
    est_u32 *msk = (est_u32 *)(est_dsmem_m + EST_MSTAGES * EST_MKT * EST_MPITCH);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
    const est_cta cta = est_decode(p, blockIdx.x);
    const int mt = warp >> 1, sub = warp & 1;
    const int qb = cta.qb0 + mt / cta.g4;
    const long long bh = (long long)cta.b * p.Hq + cta.hbase + mt % cta.g4;
    const int qb_last = cta.qb0 + cta.qpc - 1;
    const int kt_end = (qb_last * EST_BQ + EST_BQ - 1) / EST_MKT + 1;
    float sq[2][2], tt[2][2];
    est_u32 qa[2][4][4];
    int row0[2];
#pragma unroll
    for (int m = 0; m < 2; m++) {
        row0[m] = qb * EST_BQ + sub * 32 + m * 16 + g;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            sq[m][hh] = p.qscale[bh * p.N + row0[m] + 8 * hh];
            tt[m][hh] = p.thr[bh * p.N + row0[m] + 8 * hh];
        }
        const unsigned char *qr = (const unsigned char *)p.qcode + (bh * p.N + row0[m]) * EST_D;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            qa[m][ks][0] = *(const est_u32 *)(qr + ks * 32 + 4 * c4);
            qa[m][ks][1] = *(const est_u32 *)(qr + 8 * EST_D + ks * 32 + 4 * c4);
            qa[m][ks][2] = *(const est_u32 *)(qr + ks * 32 + 16 + 4 * c4);
            qa[m][ks][3] = *(const est_u32 *)(qr + 8 * EST_D + ks * 32 + 16 + 4 * c4);
        }
    }
    const unsigned char *kg = (const unsigned char *)p.kcode + ((long long)cta.b * p.Hkv + cta.kvh) * p.N * EST_D;
    const float *ksc = p.kscale + ((long long)cta.b * p.Hkv + cta.kvh) * p.nkb;
    const float2 *cbp = p.cbound + bh * p.nkb;
    const float *crow = p.cterm + bh * p.N;
    for (int i = tid; i < 4 * EST_NKW_MAX; i += EST_MMA_THREADS) msk[i] = 0u;

    auto load = [&](int kt, int st) {
#pragma unroll
        for (int i = 0; i < (EST_MKT * EST_D / 16) / EST_MMA_THREADS; i++) {
            const int idx = tid + i * EST_MMA_THREADS, r = idx >> 3, ch = idx & 7;
            est_cp16(sK + (st * EST_MKT + r) * EST_MPITCH + ch * 16, kg + ((long long)kt * EST_MKT + r) * EST_D + ch * 16);
        }
    };
    load(0, 0);
    est_cp_commit();
    if (kt_end > 1) load(1, 1);
    est_cp_commit();
    for (int kt = 0; kt < kt_end; kt++) {
        est_cp_wait<1>();
        __syncthreads();
        if (kt + 2 < kt_end) load(kt + 2, (kt + 2) % EST_MSTAGES);
        est_cp_commit();
        const est_u32 base = sK + (kt % EST_MSTAGES) * EST_MKT * EST_MPITCH;
#pragma unroll
        for (int J = 0; J < EST_MKT / EST_BK; J++) {
            const int key0 = kt * EST_MKT + J * EST_BK, blk = key0 / EST_BK;
            const float sk = ksc[blk];
            const float2 cb = cbp[blk];
            int acc[2][16];
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int i = 0; i < 16; i++) acc[m][i] = 0;
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int gp = 0; gp < 2; gp++) {
                    est_u32 b0, b1, b2, b3;
                    const int r = J * 32 + gp * 16 + (lane & 7) + ((lane >> 4) << 3);
                    est_ldsm4(b0, b1, b2, b3, base + r * EST_MPITCH + (ks * 2 + ((lane >> 3) & 1)) * 16);
#pragma unroll
                    for (int m = 0; m < 2; m++) {
                        est_mma16832(&acc[m][gp * 8], qa[m][ks], b0, b1);
                        est_mma16832(&acc[m][gp * 8 + 4], qa[m][ks], b2, b3);
                    }
                }
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const int rmin = qb * EST_BQ + sub * 32 + m * 16;
                if (key0 > rmin + 15) continue;
                bool kept;
                if (key0 + EST_BK - 1 <= rmin)
                    kept = est_block<false>(acc[m], 0, sq[m][0], sq[m][1], tt[m][0], tt[m][1], sk, cb, crow + key0, c4, row0[m], key0);
                else
                    kept = est_block<true>(acc[m], 0, sq[m][0], sq[m][1], tt[m][0], tt[m][1], sk, cb, crow + key0, c4, row0[m], key0);
                if (kept && lane == 0) atomicOr(&msk[mt * EST_NKW_MAX + (blk >> 5)], 1u << (blk & 31));
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < 4 * p.nkw; i += EST_MMA_THREADS) {
        const int m = i / p.nkw, w = i % p.nkw;
        const long long bhm = (long long)cta.b * p.Hq + cta.hbase + m % cta.g4;
        p.mask[(bhm * p.nqb + cta.qb0 + m / cta.g4) * p.nkw + w] = msk[m * EST_NKW_MAX + w];
    }
}

#endif /* EST_WGMMA_CU */
