/* sale_common.cuh — device code shared by every sale kernel family:
 * dtype helpers, mma.sync / ldmatrix / cp.async wrappers, and the one
 * attention engine (SaleAttn<MODE>) that dense, attend, select and fused
 * all run, so that the four share one code path.
 * No system headers: this is compiled by NVRTC with only sale_abi.h,
 * sale_layout.h and this file available. */
#ifndef SALE_COMMON_CUH
#define SALE_COMMON_CUH

#include "sale_abi.h"
#include "sale_layout.h"

/* ---- prelude defaults (the host #defines all of these) ---- */
#ifndef SALE_FAMILY
#define SALE_FAMILY 1
#endif
#ifndef SALE_HEAD_DIM
#define SALE_HEAD_DIM 128
#endif
#ifndef SALE_BLOCK_Q
#define SALE_BLOCK_Q 64
#endif
#ifndef SALE_BLOCK_K
#define SALE_BLOCK_K 32
#endif
#ifndef SALE_BLOCK_SEG
#define SALE_BLOCK_SEG 128
#endif
#ifndef SALE_LOCAL_WINDOW
#define SALE_LOCAL_WINDOW 128
#endif
#ifndef SALE_DTYPE
#define SALE_DTYPE 1
#endif
#ifndef SALE_EST_BITS
#define SALE_EST_BITS 8
#endif
#ifndef SALE_CAUSAL
#define SALE_CAUSAL 1
#endif
#ifndef SALE_WARPS
#if SALE_FAMILY == 0
#define SALE_WARPS 8
#else
#define SALE_WARPS 4
#endif
#endif
#ifndef SALE_STAGES
#if SALE_FAMILY == 0
#define SALE_STAGES 1
#else
#define SALE_STAGES 2
#endif
#endif
#ifndef SALE_ARCH
#define SALE_ARCH 900
#endif

typedef unsigned int sale_u32;
typedef unsigned short sale_u16;

#define SALE_DEV __device__ __forceinline__
#define SALE_NEG_INF __int_as_float(0xff800000)
#define SALE_POS_INF __int_as_float(0x7f800000)

/* ---------------------------------------------------------------- dtypes */
SALE_DEV float sale_f16_to_f32(sale_u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
SALE_DEV float sale_bf16_to_f32(sale_u16 h) {
    return __uint_as_float(((sale_u32)h) << 16);
}
SALE_DEV float sale_to_f32(sale_u16 h) {
#if SALE_DTYPE == 1
    return sale_bf16_to_f32(h);
#else
    return sale_f16_to_f32(h);
#endif
}
/* two floats -> packed pair (lo in the low half) of the input dtype */
SALE_DEV sale_u32 sale_pack2(float lo, float hi) {
    sale_u32 r;
#if SALE_DTYPE == 1
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}
SALE_DEV float sale_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* ------------------------------------------------------------ mma.sync */
/* D = A(16x16, row) * B(16x8, col) + D, f16/bf16 inputs of the prelude dtype, f32 accumulate */
SALE_DEV void sale_mma_f16(float (&c)[4], const sale_u32 (&a)[4], sale_u32 b0, sale_u32 b1) {
#if SALE_DTYPE == 1
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
/* s8: m16n8k32, s32 accumulate */
SALE_DEV void sale_mma_s8(int (&c)[4], const sale_u32 (&a)[4], sale_u32 b0, sale_u32 b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* s4: m16n8k64, s32 accumulate (native on sm_80/86/89, emulated on sm_90) */
SALE_DEV void sale_mma_s4(int (&c)[4], const sale_u32 (&a)[4], sale_u32 b0, sale_u32 b1) {
    asm("mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* 32 bytes of k per call: the prelude's estimation precision */
SALE_DEV void sale_mma_est(int (&c)[4], const sale_u32 (&a)[4], sale_u32 b0, sale_u32 b1) {
#if SALE_EST_BITS == 4
    sale_mma_s4(c, a, b0, b1);
#else
    sale_mma_s8(c, a, b0, b1);
#endif
}

/* ------------------------------------------------------------ ldmatrix */
SALE_DEV void sale_ldsm4(sale_u32 &r0, sale_u32 &r1, sale_u32 &r2, sale_u32 &r3, sale_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
SALE_DEV void sale_ldsm4t(sale_u32 &r0, sale_u32 &r1, sale_u32 &r2, sale_u32 &r3, sale_u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* ------------------------------------------------------------ cp.async */
SALE_DEV sale_u32 sale_smem_addr(const void *p) {
    return (sale_u32)__cvta_generic_to_shared(p);
}
/* 16 bytes; valid == false zero-fills the destination (src-size 0, nothing read) */
SALE_DEV void sale_cp16(sale_u32 saddr, const void *g, bool valid) {
    int sz = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr), "l"(g), "r"(sz) : "memory");
}
SALE_DEV void sale_cp4(sale_u32 saddr, const void *g) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(saddr), "l"(g) : "memory");
}
SALE_DEV void sale_cp_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> SALE_DEV void sale_cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* byte offset of 16-byte chunk ch of row r in a tile of rows of cpr chunks,
 * XOR-swizzled so that 8 rows read by one ldmatrix phase hit distinct banks.
 * (A padded pitch was tried: dense attention ran 10% slower.) */
SALE_DEV int sale_swz(int r, int ch, int cpr) {
    int x = cpr >= 8 ? (r & 7) : (cpr == 4 ? ((r >> 1) & 3) : (cpr == 2 ? ((r >> 2) & 1) : 0));
    return r * cpr * 16 + ((ch ^ x) << 4);
}

/* ------------------------------------------------------------ mbarrier */
SALE_DEV void sale_mbar_init(sale_u32 addr, sale_u32 count) {
    asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(addr), "r"(count) : "memory");
}
/* arrive (without incrementing the pending count) once all prior cp.async of this thread landed */
SALE_DEV void sale_cp_mbar_arrive(sale_u32 addr) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(addr) : "memory");
}
SALE_DEV void sale_mbar_wait(sale_u32 addr, sale_u32 parity) {
    sale_u32 done;
    do {
        asm volatile(
            "{\n\t.reg .pred p;\n\tmbarrier.test_wait.parity.shared.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
            : "=r"(done)
            : "r"(addr), "r"(parity)
            : "memory");
    } while (!done);
}

/* --------------------------------------------------- online softmax */
/* all state arithmetic uses explicit _rn intrinsics so that the select and
 * fused kernels (different code around it) compute bit-identical m and l. */
SALE_DEV float sale_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}
SALE_DEV float sale_quad_sum(float x) {
    x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}

/* ====================================================== attention engine
 * MODE: 1 fused, 2 select, 3 attend, 4 dense (= sale_family).
 * One CTA: one query block (BQ rows) of one q head of one batch entry;
 * warp w owns rows [w*16*MT, (w+1)*16*MT).
 * sale_attention_body (at the end) runs the stages of SaleAttn in order:
 *   setup          indices, softmax state, Q tile, segment plan, first code
 *                  chunks in flight, Q fragments, mask row (local region + sink)
 *   attend_mask    attend: the mask row's kept blocks, exactly
 *   attend_dense   dense: every causal tile, exactly
 *   fused and select:
 *   load_query_codes  query codes and scales into registers
 *   local_region   the exact local region and the sink, computed by
 *                  attend_tiles while segment 0 is estimated (estimate)
 *   per segment:   select (threshold from the state, bounds, exact re-check,
 *                  kept bits, mask words), then attend_tiles on the kept
 *                  blocks while the next segment is estimated
 *   store          output, log-sum-exp, kept count */
/* the bits of mask word w (blocks 32w .. 32w + 31) for the blocks a .. z */
SALE_DEV sale_u32 sale_mask_word(int w, int a, int z) {
    const int lo = w * 32, hi = lo + 31;
    if (a < lo) a = lo;
    if (z > hi) z = hi;
    if (a > z) return 0u;
    const int n = z - a + 1;
    return (n == 32 ? 0xffffffffu : ((1u << n) - 1u)) << (a - lo);
}

#if SALE_FAMILY != 0 && !defined(SALE_WGMMA_ATTN) && !defined(SALE_WGMMA_ROWS) /* dense/attend on sm_90a: wgmma_attn.cuh, wgmma_rows.cuh */
#define SALE_MODE_FUSED 1
#define SALE_MODE_SELECT 2
#define SALE_MODE_ATTEND 3
#define SALE_MODE_DENSE 4

#if SALE_ARCH == 901 && SALE_FAMILY == 1
#include "wgmma_fused.cuh" /* fused's attention half on wgmma, where sale_layout_fused_wg holds */
#endif

/* dynamic shared memory of every attention kernel; its layout: SaleAttn::OFF_* */
extern __shared__ __align__(128) unsigned char sale_smem[];

/* generators of tile indices for SaleAttn::list_begin / list_body */
struct SaleGenDown { /* hi, hi-1, ..., lo, then optionally extra (>=0) */
    int cur, lo, extra;
    SALE_DEV bool next(int &kb) {
        if (cur >= lo) {
            kb = cur--;
            return true;
        }
        if (extra >= 0) {
            kb = extra;
            extra = -1;
            return true;
        }
        return false;
    }
};
struct SaleGenBits { /* set bits of a 32-bit word, ascending, offset by base */
    sale_u32 bits;
    int base;
    SALE_DEV bool next(int &kb) {
        if (!bits)
            return false;
        int k = __ffs(bits) - 1;
        bits &= bits - 1;
        kb = base + k;
        return true;
    }
};
struct SaleGenMask { /* set bits of a mask row, descending, only blocks <= hi */
    const sale_u32 *words;
    int w;
    sale_u32 bits;
    SALE_DEV bool next(int &kb) {
        while (!bits) {
            if (w <= 0)
                return false;
            w--;
            bits = words[w];
        }
        int k = 31 - __clz(bits);
        bits &= ~(1u << k);
        kb = w * 32 + k;
        return true;
    }
};

/* the threshold tau of q head h: 0 (dense) when every head runs dense;
 * thresholds travel in the parameter block (no copy, no sync), more heads
 * than it holds in a device array */
SALE_DEV float sale_head_tau(const sale_params &p, int h) {
    if (p.dense_heads_only) return 0.f;
    return p.tau ? ((const float *)p.tau)[h] : (h < SALE_TAU_INLINE ? p.tau_inline[h] : 0.f);
}
/* the segment plan of a query block starting at row i0 (sale-algorithm.md,
 * step 3.1): blocks [1, local_lo) are nseg segments of sb blocks of bk keys,
 * [local_lo, diagonal] and block 0 are the exact local region; a dense head
 * is all local region */
SALE_DEV void sale_segment_plan(int i0, int window, int bk, int sb, bool dense_head, int *local_lo, int *nseg) {
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

#ifndef SALE_THR_FIXED
#define SALE_THR_FIXED 0 /* 1: thr=fixed, the threshold of the first segment for every segment */
#endif

/* LOCAL: select's first launch on sm_90a (sale_select_local_body): the
 * local region only; the segments are estimated by the wgmma kernel */
template <int MODE, bool LOCAL = false> struct SaleAttn {
    /* Legend. Sizes in elements unless marked [B] (bytes); a "group" is 16 keys
     * (the n of two m16n8 mma tiles), a "block" BK keys (kept or skipped as one).
     * Tiles and warps:
     *  D      head dimension
     *  BQ     query rows per CTA (block_q)
     *  BK     keys per block (block_k): the granularity of selection
     *  NW     warps per CTA; NT threads per CTA (NW*32)
     *  MT     16-row mma tiles per warp (1 or 2): warp w owns rows w*16*MT..
     *  ST     K/V tile buffers of the cp.async pipeline (loads run ST-1 tiles ahead)
     *  KT     keys per exact tile: BK, except dense (nothing to select), which
     *         uses the wider SALE_DENSE_KT
     *  RB     [B] of one Q/K/V row (D fp16/bf16); CPR its 16-byte chunks
     *  PQ     [B] shared pitch of a Q/K/V row (= RB, no padding: XOR swizzle)
     *  DT     8-column mma tiles of O per row (D/8); 1 without V (no O kept)
     *  HASV   the mode reads V and keeps O (all but select, which needs m, l only)
     *  EST    the mode estimates segments (fused, select)
     *  QREG   Q A-fragments live in registers (qf); only with MT == 1, and not
     *         in fused, whose registers go to the estimation (Q from shared)
     *  QALIAS select with QREG: the Q tile is dead once qf is loaded, so it
     *         shares its shared memory with the K stages (4 CTAs/SM)
     * Estimation (EST modes):
     *  EB     bits of a code (4 or 8: SALE_EST_BITS)
     *  RBC    [B] of one row of codes (D*EB/8); CPRC its 16-byte chunks
     *  KSC    k-steps of the estimation mma per row (32 bytes of k each)
     *  SEG    keys per segment (block_seg); SB blocks per segment (<= 32: one
     *         bit each in a 32-bit word)
     *  EK     keys per code chunk (shared tile): min(SEG, SALE_EST_CHUNK)
     *  NCH    code chunks per segment
     *  PC     [B] shared pitch of a code row: RBC + 16 padding, conflict-free
     *         ldmatrix without a swizzle, so addresses are base + immediate
     *  NBUF   code chunk buffers (chunks are prefetched NBUF-1 ahead)
     *  BOUND  one chunk per segment: estimation stores upper bounds and the
     *         selection re-checks candidate blocks exactly from the chunk,
     *         which is still resident then
     *  EGMAX  16-key groups whose int accumulators are in flight at once
     *         (register budget: fused also holds O)
     *  EG     the same, dividing the chunk's EK/16 groups: EGMAX, 2 or 1
     * Shared memory, byte offsets from sale_smem (one place: the layout is
     * checked against the host's sale_layout_smem() below):
     *  Q tile at 0 [BQ rows x PQ]; QKR the aliased Q/K region (QALIAS)
     *  OFF_K  K tiles [ST x KT rows x PQ];   OFF_V  V tiles (HASV) [ST x KT x PQ]
     *  OFF_C  code chunks [NBUF x EK x PC]; OFF_CT c_j of the chunk keys [NBUF x EK floats]
     *  OFF_SK key-block scales of a chunk [NBUF x 8 floats]
     *  OFF_MB one mbarrier per chunk buffer [NBUF x 8 B]
     *  OFF_FL per-warp kept bits, two segments [2 x 16 words]
     *  OFF_RM per (row, block) estimated maxima or bounds, two segments
     *         [2 x BQ x SB floats]; SMEM_END the total */
    static constexpr int D = SALE_HEAD_DIM, BQ = SALE_BLOCK_Q, BK = SALE_BLOCK_K, NW = SALE_WARPS, NT = NW * 32;
    static constexpr int MT = BQ / (16 * NW);
    static constexpr int ST = SALE_STAGES;
    static constexpr int KT = MODE == SALE_MODE_DENSE ? SALE_DENSE_KT : BK;
    static constexpr int RB = D * 2, CPR = RB / 16;
    static constexpr bool HASV = MODE != SALE_MODE_SELECT;
    static constexpr bool EST = MODE == SALE_MODE_FUSED || MODE == SALE_MODE_SELECT;
    static constexpr bool QREG = MT == 1 && MODE != SALE_MODE_FUSED;
    static constexpr int EB = SALE_EST_BITS, RBC = D * EB / 8, CPRC = RBC / 16, KSC = RBC / 32;
    static constexpr int SEG = SALE_BLOCK_SEG, SB = SEG / BK;
    static constexpr int EK = SEG < SALE_EST_CHUNK ? SEG : SALE_EST_CHUNK, NCH = (SEG + EK - 1) / EK;
    static constexpr int PQ = RB;
    static constexpr int PC = RBC + 16;
    static constexpr bool QALIAS = MODE == SALE_MODE_SELECT && QREG;
    static constexpr int QKR = (BQ > ST * KT ? BQ : ST * KT) * PQ;
    static constexpr int OFF_K = QALIAS ? 0 : BQ * PQ;
    static constexpr int OFF_V = OFF_K + ST * KT * PQ;
    static constexpr int NBUF = SALE_LAYOUT_EST_NBUF(MODE, BQ);
    static constexpr bool BOUND = NCH == 1;
    static_assert(NT % CPRC == 0, "code tile rows per pass");
    static constexpr int EGMAX = MODE == SALE_MODE_FUSED ? 2 : 4;
    static constexpr int EG = (EK / 16) % EGMAX == 0 ? EGMAX : ((EK / 16) % 2 == 0 ? 2 : 1);
    static constexpr int OFF_C = QALIAS ? QKR : OFF_V + (HASV ? ST * KT * PQ : 0);
    static constexpr int OFF_CT = OFF_C + NBUF * EK * PC;
    static constexpr int OFF_SK = OFF_CT + NBUF * EK * 4;
    static constexpr int OFF_MB = OFF_SK + NBUF * 8 * 4;
    static constexpr int OFF_FL = OFF_MB + NBUF * 8;
    static constexpr int OFF_RM = OFF_FL + 2 * 16 * 4;
    static constexpr int SMEM_END = EST ? OFF_RM + 2 * BQ * SB * 4 : OFF_C;
    /* WG: fused's attention half on wgmma (sm_90a; sale_layout_fused_wg,
     * wgmma_fused.cuh): the Q and K/V tiles as two 64-column halves with the
     * 128-byte swizzle, every offset above from a 1 KB-aligned base (1 KB of
     * slack in the allocation) */
    /* the layout above and the host's sale_layout_smem() (the dynamic shared
     * memory every launch asks for) are written twice: they must agree */
    static constexpr sale_layout_cfg LCFG = {MODE, D, BQ, BK, SEG, SALE_LOCAL_WINDOW, SALE_DTYPE, EB, NW, ST, SALE_ARCH};
    static constexpr bool WG = MODE == SALE_MODE_FUSED && sale_layout_fused_wg(&LCFG);
    static constexpr int SLACK = WG ? 1024 : 0;
    static_assert(sale_layout_smem(&LCFG) == (unsigned)(SMEM_END + SLACK),
                  "shared-memory layout of the kernel and sale_layout_smem() disagree");
    static_assert(!WG || (OFF_K % 1024 == 0 && OFF_V % 1024 == 0 && (KT * PQ) % 1024 == 0 && NW == 4 && MT == 1),
                  "fused on wgmma: 1 KB-aligned tiles, one warpgroup of 16-row warps");
    static constexpr int DT = HASV ? D / 8 : 1;

    static_assert(MODE == 0 || (BQ % (16 * NW) == 0 && MT >= 1 && MT <= 2), "block_q / warps");
    static_assert(MODE == 0 || (SEG % BK == 0 && SB >= 1 && SB <= 32), "block_seg");

    /* flash-attention state of this thread's rows */
    float o[MT][DT][4];
    float m[MT][2], l[MT][2];
    sale_u32 qf[QREG ? D / 16 : 1][4];

    int tid, lane, warp, g4, c4;
    int N, i0, wrow0; /* wrow0: global row of the warp's first row */
    float sl2;
    sale_u32 sbase;
    const sale_u16 *kg, *vg;
    long long k_sn, v_sn;

    /* the CTA's place (setup) */
    int qb, h, b, bhq;
    int iend;  /* last row of the query block (< N) */
    int kb_hi; /* last key block the query block sees */
    /* segment plan: blocks [1, local_lo) are nseg segments of SB blocks;
     * [local_lo, kb_hi] and block 0 are computed exactly */
    int local_lo, nseg, total_chunks;
    float tau;
    sale_u32 *mask_row; /* this query block's mask row (0: none written) */
    int kept;           /* blocks computed so far */

    /* estimation: global sources, this thread's fixed copy slot, query codes
     * (A fragments) and scales per row, thresholds of the current segment */
    const float *kscale_g;
    const unsigned char *kcode_g; /* at this thread's copy slot (ld_r0, ld_c0) */
    const float *cterm_g;
    int ld_r0, ld_c0;
    sale_u32 qa[MT][KSC][4];
    float sq[MT][2];
    float tcache[MT][2];
    sale_u32 prev_bits; /* kept bits of the previous segment (0: thresholds unchanged) */

    /* byte offset of chunk ch of row r in a Q (rows BQ) or K/V (rows KT) tile */
    static SALE_DEV int tswz(int r, int ch, int rows) {
#if SALE_ARCH == 901 && SALE_FAMILY == 1
        if constexpr (WG) return sale_layout_swz128(r, ch, rows);
#endif
        (void)rows;
        return sale_swz(r, ch, CPR);
    }

    /* ----------------------------------------------------------- loads */
    SALE_DEV void load_kv(int kb, int slot) {
        const int k0 = kb * KT;
        const sale_u32 sk = sbase + OFF_K + slot * KT * PQ;
        const sale_u32 sv = sbase + OFF_V + slot * KT * PQ;
#pragma unroll
        for (int it = 0; it < (KT * CPR + NT - 1) / NT; it++) {
            int idx = tid + it * NT;
            if ((KT * CPR) % NT == 0 || idx < KT * CPR) {
                int r = idx / CPR, ch = idx % CPR;
                int key = k0 + r;
                bool v = key < N;
                long long kk = v ? key : 0;
                int off = tswz(r, ch, KT);
                sale_cp16(sk + off, kg + kk * k_sn + ch * 8, v);
                if constexpr (HASV)
                    sale_cp16(sv + off, vg + kk * v_sn + ch * 8, v);
            }
        }
    }

    /* ------------------------------------------------------- one tile */
    /* S = Q K^T over KT keys starting at key k0, mask, online softmax, P V */
    SALE_DEV void tile(int k0, int slot) {
        /* the warp sees nothing of this tile (all keys after its last row);
         * WG: the warpgroup's wgmma needs every warp, so only the CTA skips */
        if (k0 > (WG ? i0 + BQ - 1 : wrow0 + 16 * MT - 1))
            return;
        const sale_u32 sq = sbase;
        const sale_u32 sk = sbase + OFF_K + slot * KT * PQ;
        float s[MT][KT / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[mt][nt][e] = 0.f;
#if SALE_ARCH == 901 && SALE_FAMILY == 1
        if constexpr (WG) { /* S = Q K^T: 8 k16 steps, 4 in each 64-column half */
            float(&sf)[KT / 2] = *reinterpret_cast<float(*)[KT / 2]>(&s[0][0][0]);
            const sale_u64 qd = dw_desc(sq, 16, 1024), kd = dw_desc(sk, 16, 1024);
            dw_fence();
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                const sale_u32 qo = ((ks >> 2) * (BQ * 128) + (ks & 3) * 32) >> 4;
                const sale_u32 ko = ((ks >> 2) * (KT * 128) + (ks & 3) * 32) >> 4;
                dw_mma_ss(sf, qd + qo, kd + ko, ks);
            }
            dw_commit();
            dw_wait<0>();
            dw_fence_acc(sf);
        } else
#endif
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            sale_u32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if constexpr (QREG) {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        a[mt][e] = qf[ks][e];
                } else {
                    int r = warp * 16 * MT + mt * 16 + (lane & 15);
                    sale_ldsm4(a[mt][0], a[mt][1], a[mt][2], a[mt][3], sq + sale_swz(r, ks * 2 + (lane >> 4), CPR));
                }
            }
#pragma unroll
            for (int np = 0; np < KT / 16; np++) {
                sale_u32 b0, b1, b2, b3;
                int r = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                sale_ldsm4(b0, b1, b2, b3, sk + sale_swz(r, ks * 2 + ((lane >> 3) & 1), CPR));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    sale_mma_f16(s[mt][2 * np], a[mt], b0, b1);
                    sale_mma_f16(s[mt][2 * np + 1], a[mt], b2, b3);
                }
            }
        }
        /* causal mask (also masks keys >= N for rows < N) */
        if (k0 + KT - 1 > wrow0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = k0 + nt * 8 + 2 * c4 + (e & 1);
                        int row = wrow0 + mt * 16 + g4 + ((e >> 1) << 3);
                        if (key > row)
                            s[mt][nt][e] = SALE_NEG_INF;
                    }
        }
        /* online softmax (raw-score max, exp2 on scale*log2e) */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                float mx = SALE_NEG_INF;
#pragma unroll
                for (int nt = 0; nt < KT / 8; nt++)
                    mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hh], s[mt][nt][2 * hh + 1]));
                mx = sale_quad_max(mx);
                float mnew = fmaxf(m[mt][hh], mx);
                float muse = mnew == SALE_NEG_INF ? 0.f : mnew;
                float ms = __fmul_rn(muse, sl2);
                float alpha = sale_ex2(__fsub_rn(__fmul_rn(m[mt][hh], sl2), ms));
                m[mt][hh] = mnew;
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float pv = sale_ex2(__fmaf_rn(s[mt][nt][2 * hh + e], sl2, -ms));
                        s[mt][nt][2 * hh + e] = pv;
                        rs = __fadd_rn(rs, pv);
                    }
                l[mt][hh] = __fmaf_rn(l[mt][hh], alpha, rs);
                if constexpr (HASV) {
#pragma unroll
                    for (int dt = 0; dt < DT; dt++) {
                        o[mt][dt][2 * hh] *= alpha;
                        o[mt][dt][2 * hh + 1] *= alpha;
                    }
                }
            }
#if SALE_ARCH == 901 && SALE_FAMILY == 1
        if constexpr (WG) { /* O += P V: P from registers, V transposed from shared */
            const sale_u32 sv = sbase + OFF_V + slot * KT * PQ;
            float(&of)[64] = *reinterpret_cast<float(*)[64]>(&o[0][0][0]);
            sale_u32 pa[KT / 16][4];
#pragma unroll
            for (int kk = 0; kk < KT / 16; kk++) {
                pa[kk][0] = sale_pack2(s[0][2 * kk][0], s[0][2 * kk][1]);
                pa[kk][1] = sale_pack2(s[0][2 * kk][2], s[0][2 * kk][3]);
                pa[kk][2] = sale_pack2(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
                pa[kk][3] = sale_pack2(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
            }
            const sale_u64 vd = dw_desc(sv, KT * 128, 1024);
            dw_fence();
#pragma unroll
            for (int kk = 0; kk < KT / 16; kk++)
                dw_mma_rs(of, pa[kk], vd + ((kk * 2048) >> 4));
            dw_commit();
            dw_wait<0>();
            dw_fence_acc(of);
            return;
        }
#endif
        if constexpr (HASV) {
            const sale_u32 sv = sbase + OFF_V + slot * KT * PQ;
#pragma unroll
            for (int kk = 0; kk < KT / 16; kk++) {
                sale_u32 a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    a[mt][0] = sale_pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    a[mt][1] = sale_pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    a[mt][2] = sale_pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    a[mt][3] = sale_pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    sale_u32 b0, b1, b2, b3;
                    int r = kk * 16 + (lane & 15);
                    sale_ldsm4t(b0, b1, b2, b3, sv + sale_swz(r, dp * 2 + (lane >> 4), CPR));
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        sale_mma_f16(o[mt][2 * dp], a[mt], b0, b1);
                        sale_mma_f16(o[mt][2 * dp + 1], a[mt], b2, b3);
                    }
                }
            }
        }
    }

    /* ------------------------------------------- pipelined list of tiles */
    /* Gen::next(int &kb) yields tile indices (tiles of KT keys) in visiting
     * order. Loads run ST-1 tiles ahead with cp.async. list_begin issues the
     * first ST-1 loads (ST-1 commit groups), list_body computes the list. */
    int pend[ST - 1];
    int pslot;
    template <class Gen> SALE_DEV void list_begin(Gen &gen) {
#pragma unroll
        for (int s = 0; s < ST - 1; s++) {
            int kb;
            bool v = gen.next(kb);
            if (v)
                load_kv(kb, s);
            sale_cp_commit();
            pend[s] = v ? kb : -1;
        }
        pslot = 0;
    }
    template <class Gen> SALE_DEV void list_body(Gen &gen) {
        int slot = pslot;
        while (pend[0] >= 0) {
            int cur = pend[0];
            int kb;
            bool v = gen.next(kb);
            int ls = slot + ST - 1;
            if (ls >= ST)
                ls -= ST;
            if (v)
                load_kv(kb, ls);
            sale_cp_commit();
#pragma unroll
            for (int s = 0; s < ST - 2; s++)
                pend[s] = pend[s + 1];
            pend[ST - 2] = v ? kb : -1;
            sale_cp_wait<ST - 1>();
#if SALE_ARCH == 901 && SALE_FAMILY == 1
            if constexpr (WG) sale_fw_fence_proxy(); /* the landed tiles, to wgmma's async proxy */
#endif
            __syncthreads();
            tile(cur * KT, slot);
            __syncthreads();
            slot = slot + 1 == ST ? 0 : slot + 1;
        }
    }
    template <class Gen> SALE_DEV void run_list(Gen &gen) {
        list_begin(gen);
        list_body(gen);
    }

    /* ============================================================ setup */
    SALE_DEV void setup(const sale_params &p) {
        N = p.N;
        qb = p.nqb - 1 - (int)blockIdx.x; /* heaviest query blocks first */
        h = blockIdx.y;
        b = blockIdx.z;
        const int kvh = h / p.group;
        tid = threadIdx.x;
        lane = tid & 31;
        warp = tid >> 5;
        g4 = lane >> 2;
        c4 = lane & 3;
        i0 = qb * BQ;
        wrow0 = i0 + warp * 16 * MT;
        sl2 = p.scale_log2;
        sbase = WG ? (sale_smem_addr(sale_smem) + 1023u) & ~1023u : sale_smem_addr(sale_smem);
        kg = (const sale_u16 *)p.k + (long long)b * p.k_sb + (long long)kvh * p.k_sh;
        vg = (const sale_u16 *)p.v + (long long)b * p.v_sb + (long long)kvh * p.v_sh;
        k_sn = p.k_sn;
        v_sn = p.v_sn;
        iend = (i0 + BQ < N ? i0 + BQ : N) - 1;
        bhq = b * p.Hq + h;

        init_state();
        load_q_tile(p);
        plan_segments(p);
        start_estimation(p, kvh);
        sale_cp_wait<0>();
        __syncthreads();
        load_q_fragments();
        init_mask_row(p);
        kept = EST ? (kb_hi - local_lo + 1) + (local_lo > 0 ? 1 : 0) : 0;
    }

    SALE_DEV void init_state() {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                m[mt][hh] = SALE_NEG_INF;
                l[mt][hh] = 0.f;
#pragma unroll
                for (int dt = 0; dt < DT; dt++) {
                    o[mt][dt][2 * hh] = 0.f;
                    o[mt][dt][2 * hh + 1] = 0.f;
                }
            }
    }

    /* Q tile -> shared (rows >= N zero-filled), one commit group */
    SALE_DEV void load_q_tile(const sale_params &p) {
        const sale_u16 *qg = (const sale_u16 *)p.q + (long long)b * p.q_sb + (long long)h * p.q_sh;
        for (int idx = tid; idx < BQ * CPR; idx += NT) {
            int r = idx / CPR, ch = idx % CPR;
            int row = i0 + r;
            bool v = row < N;
            long long rr = v ? row : 0;
            sale_cp16(sbase + tswz(r, ch, BQ), qg + rr * p.q_sn + ch * 8, v);
        }
        sale_cp_commit();
    }

    /* selection geometry: tau, the local region's first block, the segments */
    SALE_DEV void plan_segments(const sale_params &p) {
        kb_hi = iend / BK;
        nseg = 0;
        tau = 0.f;
        prev_bits = 1u; /* the first segment computes its thresholds */
        if constexpr (EST) {
            tau = sale_head_tau(p, h);
            sale_segment_plan(i0, SALE_LOCAL_WINDOW, BK, SB, !(tau > 1e-5f), &local_lo, &nseg);
        } else {
            local_lo = 0;
        }
        total_chunks = LOCAL ? 0 : nseg * NCH; /* LOCAL: the segments are estimated elsewhere */
    }

    /* estimation sources, and the first NBUF-1 code chunks in flight */
    SALE_DEV void start_estimation(const sale_params &p, int kvh) {
        if constexpr (EST) {
            kscale_g = (const float *)p.kscale + (long long)(b * p.Hkv + kvh) * p.nkb;
            ld_r0 = tid / CPRC;
            ld_c0 = tid % CPRC;
            kcode_g = (const unsigned char *)p.kcode + (long long)(b * p.Hkv + kvh) * N * RBC + ld_r0 * RBC + ld_c0 * 16;
            cterm_g = (const float *)p.cterm + (long long)bhq * N;
            if (total_chunks > 0) {
                if (tid < NBUF)
                    sale_mbar_init(sbase + OFF_MB + tid * 8, NT);
                __syncthreads();
                for (int qi = 0; qi < NBUF - 1 && qi < total_chunks; qi++)
                    load_chunk(qi);
            }
        }
    }

    /* Q A-fragments into registers (QREG), once the Q tile has landed */
    SALE_DEV void load_q_fragments() {
        if constexpr (QREG) {
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                int r = warp * 16 + (lane & 15);
                sale_ldsm4(qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3], sbase + sale_swz(r, ks * 2 + (lane >> 4), CPR));
            }
            if constexpr (QALIAS)
                __syncthreads(); /* every warp has its Q fragments before K tiles overwrite the Q tile */
        }
    }

    /* mask row init: local region + sink (dense: every causal block, in the
     * mask's blocks of p.mask_bk keys: the dense key's BK is fixed) */
    SALE_DEV void init_mask_row(const sale_params &p) {
        mask_row = 0;
        if constexpr (EST || MODE == SALE_MODE_DENSE) {
            if (p.mask) {
                mask_row = (sale_u32 *)p.mask + ((long long)bhq * p.nqb + qb) * p.nkw;
                const int hi = MODE == SALE_MODE_DENSE ? iend / (p.mask_bk ? p.mask_bk : BK) : kb_hi;
                for (int w = tid; w < p.nkw; w += NT)
                    mask_row[w] = sale_mask_word(w, local_lo, hi) | (w == 0 ? 1u : 0u);
            }
        }
    }

    /* ============================================ attend, dense: exact */
    /* attend: the kept blocks of the mask row, from the diagonal down */
    SALE_DEV void attend_mask(const sale_params &p) {
        const sale_u32 *words = (const sale_u32 *)p.mask + ((long long)bhq * p.nqb + qb) * p.nkw;
        SaleGenMask gm;
        gm.words = words;
        int wh = kb_hi / 32;
        gm.w = wh;
        sale_u32 first = words[wh];
        int sh = kb_hi % 32;
        gm.bits = sh == 31 ? first : (first & ((2u << sh) - 1u));
        run_list(gm);
    }
    /* dense: every tile up to the diagonal, from the diagonal down */
    SALE_DEV void attend_dense() {
        SaleGenDown gd;
        gd.cur = iend / KT;
        gd.lo = 0;
        gd.extra = -1;
        run_list(gd);
    }

    /* ============================================ fused, select: estimation */
    /* query codes (A fragments) and scales of this thread's rows */
    SALE_DEV void load_query_codes(const sale_params &p) {
        if (nseg > 0) {
            const unsigned char *qcode_g = (const unsigned char *)p.qcode + (long long)bhq * N * RBC;
            const float *qscale_g = (const float *)p.qscale + (long long)bhq * N;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    int row = wrow0 + mt * 16 + g4 + hh * 8;
                    bool v = row < N;
                    sq[mt][hh] = v ? qscale_g[row] : 0.f;
#pragma unroll
                    for (int ks = 0; ks < KSC; ks++) {
                        const unsigned char *rp = qcode_g + (long long)(v ? row : 0) * RBC + ks * 32 + 4 * c4;
                        qa[mt][ks][hh] = v ? *(const sale_u32 *)rp : 0u;
                        qa[mt][ks][2 + hh] = v ? *(const sale_u32 *)(rp + 16) : 0u;
                    }
                }
            }
        }
    }

    /* chunk qi of the estimation (chunk qi % NCH of segment qi / NCH) -> buffer
     * qi % NBUF; completion on that buffer's mbarrier */
    SALE_DEV void load_chunk(int qi) {
        const int buf = qi % NBUF;
        int s = qi / NCH, c = qi % NCH;
        int key0 = (1 + s * SB) * BK + c * EK;
        int nk = SEG - c * EK < EK ? SEG - c * EK : EK;
        /* each thread copies fixed (row, chunk) slots: row ld_r0 + it*RSTEP,
         * chunk ld_c0, so the addresses are one base plus immediates */
        constexpr int RSTEP = NT / CPRC;
        const sale_u32 sdst = sbase + OFF_C + buf * EK * PC + ld_r0 * PC + ld_c0 * 16;
        const unsigned char *gsrc = kcode_g + (long long)key0 * RBC;
#pragma unroll
        for (int it = 0; it < (EK + RSTEP - 1) / RSTEP; it++)
            if (ld_r0 + it * RSTEP < nk)
                sale_cp16(sdst + it * RSTEP * PC, gsrc + it * RSTEP * RBC, true);
        const sale_u32 sct = sbase + OFF_CT + buf * EK * 4 + tid * 4;
#pragma unroll
        for (int it = 0; it < (EK + NT - 1) / NT; it++)
            if (tid + it * NT < nk)
                sale_cp4(sct + it * NT * 4, cterm_g + key0 + tid + it * NT);
        if (tid < nk / BK)
            sale_cp4(sbase + OFF_SK + (buf * 8 + tid) * 4, kscale_g + key0 / BK + tid);
        sale_cp_mbar_arrive(sbase + OFF_MB + buf * 8);
        sale_cp_commit();
    }

    /* exact estimated score s^_ij = (sq_i*sk_J)*dot + c_j, in this order, no FMA.
     * int -> float via the exponent trick (exact for |dot| < 2^22, no slow I2F) */
    static SALE_DEV float est_score(float pr, int dot, float cj) {
        float dotf = __fsub_rn(__int_as_float(dot + 0x4B400000), 12582912.f);
        return __fadd_rn(__fmul_rn(pr, dotf), cj);
    }

    /* The estimation MMAs: int dot products of this warp's query codes with
     * the G 16-key groups grp0 .. grp0+G-1 of the resident code chunk at
     * shared address sc. acc[g][mt][nt] is the m16n8 accumulator of group
     * grp0+g, keys nt*8.. of it. k-steps outer, groups inner: G*2*MT
     * independent IMMA accumulators in flight (the IMMA latency is not hidden
     * by the few warps per SM otherwise). GUARD: groups at or past nk keys
     * are skipped (their accumulators stay 0). */
    template <int G, bool GUARD>
    SALE_DEV void est_groups(int (&acc)[G][MT][2][4], sale_u32 sc, int grp0, int nk) {
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[g][mt][0][e] = acc[g][mt][1][e] = 0;
#pragma unroll
        for (int ks = 0; ks < KSC; ks++) {
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (!GUARD || (grp0 + g) * 16 < nk) {
                    sale_u32 b0, b1, b2, b3;
                    int r = (grp0 + g) * 16 + (lane & 7) + ((lane >> 4) << 3);
                    sale_ldsm4(b0, b1, b2, b3, sc + r * PC + (ks * 2 + ((lane >> 3) & 1)) * 16);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        sale_mma_est(acc[g][mt][0], qa[mt][ks], b0, b1);
                        sale_mma_est(acc[g][mt][1], qa[mt][ks], b2, b3);
                    }
                }
            }
        }
    }

    /* estimation of segment s into shared memory (OFF_RM, per (row, block)):
     *  BOUND (one chunk per segment): an upper bound of max_j s^_ij,
     *    fl(fl(pr*max d) + max c) over each thread's keys (exact: fl is
     *    monotone); blocks whose bound passes are re-checked exactly
     *    from the still-resident chunk at selection time;
     *  else: the exact max_j s^_ij.
     * It needs no softmax state, so it runs while the K/V tiles of the
     * previous segment's kept blocks are in flight. */
    SALE_DEV void estimate(int s) {
        float *rm = (float *)(sale_smem + OFF_RM) + (s & 1) * BQ * SB;
        for (int c = 0; c < NCH; c++) {
            const int qi = s * NCH + c;
            const int buf = qi % NBUF;
            sale_mbar_wait(sbase + OFF_MB + buf * 8, (sale_u32)(qi / NBUF) & 1u);
            __syncthreads(); /* also: every thread is done with chunk qi-1, whose buffer is refilled next */
            if (qi + NBUF - 1 < total_chunks)
                load_chunk(qi + NBUF - 1);
            estimate_chunk(rm, c, buf);
        }
    }

    /* chunk c of a segment (in buffer buf): EG groups at a time, each folded
     * into its block's maximum; a block's value goes to rm once complete */
    SALE_DEV void estimate_chunk(float *rm, int c, int buf) {
        const int nk = SEG - c * EK < EK ? SEG - c * EK : EK;
        const sale_u32 sc = sbase + OFF_C + buf * EK * PC;
        const float *sct = (const float *)(sale_smem + OFF_CT) + buf * EK;
        const float *skc = (const float *)(sale_smem + OFF_SK) + buf * 8;
        float bm[MT][2]; /* exact: running max of s^ over the block's keys */
        int dm[MT][2];   /* BOUND: running max of the dot products ... */
        float cm = SALE_NEG_INF; /* ... and of c_j */
#pragma unroll
        for (int pg = 0; pg < EK / 16; pg += EG) {
            if (pg * 16 < nk) {
                int acc[EG][MT][2][4];
                est_groups<EG, true>(acc, sc, pg, nk);
#pragma unroll
                for (int g = 0; g < EG; g++) {
                    const int pp = pg + g;
                    if (pp * 16 < nk)
                        fold_group(rm, (c * EK) / BK, pp, nk, acc[g], sct, skc, bm, dm, cm);
                }
            }
        }
    }

    /* fold group pp (chunk-relative) of a chunk whose first block is block cb
     * of the segment into the running maxima of its block (reset at the
     * block's first group); at its last group, the block's value per row */
    SALE_DEV void fold_group(float *rm, int cb, int pp, int nk, const int (&acc)[MT][2][4], const float *sct,
                             const float *skc, float (&bm)[MT][2], int (&dm)[MT][2], float &cm) {
        const int jb = (pp * 16) / BK;
        if ((pp * 16) % BK == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                bm[mt][0] = bm[mt][1] = SALE_NEG_INF;
                dm[mt][0] = dm[mt][1] = -2147483647;
            }
            cm = SALE_NEG_INF;
        }
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float cj = sct[pp * 16 + nt * 8 + 2 * c4 + e];
                if constexpr (BOUND)
                    cm = fmaxf(cm, cj);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int hh = 0; hh < 2; hh++) {
                        if constexpr (BOUND)
                            dm[mt][hh] = max(dm[mt][hh], acc[mt][nt][2 * hh + e]);
                        else
                            bm[mt][hh] = fmaxf(bm[mt][hh], est_score(__fmul_rn(sq[mt][hh], skc[jb]), acc[mt][nt][2 * hh + e], cj));
                    }
            }
        if (((pp + 1) * 16) % BK == 0 || (pp + 1) * 16 >= nk) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    float x;
                    if constexpr (BOUND)
                        x = est_score(__fmul_rn(sq[mt][hh], skc[jb]), dm[mt][hh], cm);
                    else
                        x = bm[mt][hh];
                    x = sale_quad_max(x);
                    int rl = warp * 16 * MT + mt * 16 + g4 + hh * 8;
                    if (c4 == 0)
                        rm[rl * SB + cb + jb] = x;
                }
        }
    }

    /* ============================================ fused, select: selection */
    /* the threshold of row (mt, hh) in raw-score units, from the state at the
     * segment start (unchanged when the previous segment kept nothing) */
    SALE_DEV float row_threshold(const sale_params &p, int mt, int hh) {
        if (prev_bits) {
            float lt = sale_quad_sum(l[mt][hh]);
            int row = wrow0 + mt * 16 + g4 + hh * 8;
            float tv = __fadd_rn(m[mt][hh], __fdiv_rn(logf(__fmul_rn(tau, lt)), p.scale));
            tcache[mt][hh] = row < N ? tv : SALE_POS_INF;
        }
        return tcache[mt][hh];
    }

    /* exact re-check of block jl of segment s (BOUND mode; its chunk is still resident):
     * does any of this warp's rows have s^_ij > t_i ? */
    SALE_DEV bool recheck(int s, int jl) {
        const int buf = s % NBUF;
        const sale_u32 sc = sbase + OFF_C + buf * EK * PC;
        const float *sct = (const float *)(sale_smem + OFF_CT) + buf * EK;
        const float sk = ((const float *)(sale_smem + OFF_SK))[buf * 8 + jl];
        bool hit = false;
        constexpr int RG = BK / 16 < 2 ? BK / 16 : 2; /* 16-key groups in flight (registers) */
#pragma unroll
        for (int q0 = 0; q0 < BK / 16; q0 += RG) {
            int acc[RG][MT][2][4];
            est_groups<RG, false>(acc, sc, jl * (BK / 16) + q0, 0);
#pragma unroll
            for (int q = 0; q < RG; q++) {
                const int pp = jl * (BK / 16) + q0 + q;
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float cj = sct[pp * 16 + nt * 8 + 2 * c4 + e];
#pragma unroll
                        for (int mt = 0; mt < MT; mt++)
#pragma unroll
                            for (int hh = 0; hh < 2; hh++)
                                hit |= est_score(__fmul_rn(sq[mt][hh], sk), acc[q][mt][nt][2 * hh + e], cj) >
                                       tcache[mt][hh];
                    }
            }
        }
        return __any_sync(0xffffffffu, hit);
    }

    /* this warp's candidate blocks of segment s: some row's estimate (or
     * bound) above its threshold; refreshes tcache */
    SALE_DEV sale_u32 warp_candidates(const sale_params &p, int s) {
        const float *rm = (const float *)(sale_smem + OFF_RM) + (s & 1) * BQ * SB;
        __syncwarp();
        sale_u32 flags = 0;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const float tv = row_threshold(p, mt, hh);
                int rl = warp * 16 * MT + mt * 16 + g4 + hh * 8;
#pragma unroll
                for (int j = 0; j < SB; j++)
                    if (rm[rl * SB + j] > tv)
                        flags |= 1u << j;
            }
        return __reduce_or_sync(0xffffffffu, flags);
    }

    /* the kept blocks of segment s: the union of every warp's, then counted,
     * remembered for the next threshold and written to the mask row */
    SALE_DEV SaleGenBits select(const sale_params &p, int s) {
        const int sf = 1 + s * SB; /* first block of the segment */
        sale_u32 flags = warp_candidates(p, s);
        if constexpr (BOUND) { /* candidates from the bounds: confirm exactly */
            sale_u32 cand = flags;
            flags = 0;
            while (cand) {
                int j = __ffs(cand) - 1;
                cand &= cand - 1;
                if (recheck(s, j))
                    flags |= 1u << j;
            }
        }
        sale_u32 *sflag = (sale_u32 *)(sale_smem + OFF_FL) + (s & 1) * 16;
        if (lane == 0)
            sflag[warp] = flags;
        __syncthreads();
        sale_u32 bits = 0;
#pragma unroll
        for (int w = 0; w < NW; w++)
            bits |= sflag[w];
        kept += __popc(bits);
        prev_bits = SALE_THR_FIXED ? 0u : bits; /* fixed: the first segment's thresholds stay */
        if (mask_row && tid == 0 && bits) {
            int w0 = sf >> 5, sh = sf & 31;
            atomicOr(mask_row + w0, bits << sh);
            if (sh && (bits >> (32 - sh)))
                atomicOr(mask_row + w0 + 1, bits >> (32 - sh));
        }
        SaleGenBits gb;
        gb.bits = bits;
        gb.base = sf;
        return gb;
    }

    /* ============================================ fused, select: computation */
    /* the exact local region (diagonal down to local_lo), then the sink */
    SALE_DEV SaleGenDown local_region() {
        SaleGenDown gd;
        gd.cur = kb_hi;
        gd.lo = local_lo;
        gd.extra = local_lo > 0 ? 0 : -1;
        return gd;
    }

    /* the tiles of gen, exactly, with segment s_next (if any) estimated while
     * the first tiles load */
    template <class Gen> SALE_DEV void attend_tiles(Gen &gen, int s_next) {
        list_begin(gen);
        if (s_next < nseg)
            estimate(s_next);
        list_body(gen);
    }

    /* ============================================================ store */
    SALE_DEV void store(const sale_params &p) {
        if constexpr (EST) {
            if (p.kept && tid == 0)
                ((int *)p.kept)[(long long)bhq * p.nqb + qb] = kept;
        }
        if constexpr (HASV) {
            sale_u16 *og = (sale_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh;
            float *lse = p.lse ? (float *)p.lse + (long long)bhq * N : 0;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    float lt = sale_quad_sum(l[mt][hh]);
                    int row = wrow0 + mt * 16 + g4 + hh * 8;
                    if (row < N) {
                        float inv = lt > 0.f ? 1.f / lt : 0.f;
                        sale_u16 *orow = og + (long long)row * p.o_sn + 2 * c4;
#pragma unroll
                        for (int dt = 0; dt < DT; dt++)
                            *(sale_u32 *)(orow + dt * 8) = sale_pack2(o[mt][dt][2 * hh] * inv, o[mt][dt][2 * hh + 1] * inv);
                        if (lse && c4 == 0) {
                            float mu = m[mt][hh] == SALE_NEG_INF ? 0.f : m[mt][hh];
                            lse[row] = mu * p.scale + logf(lt);
                        }
                    }
                }
        }
    }
};

/* select's first launch on sm_90a with thr = fixed (the second is the wgmma
 * estimation, wgmma_est.cuh): the exact local region and the sink of this
 * query block give every row its threshold t_i, which thr = fixed keeps for
 * all segments; the CTA also writes the range of c_j of the key blocks
 * under its rows (every key block belongs to one query block), the mask row
 * (local region and sink; the estimation ORs in the rest) and the kept count
 * so far. Scratch: t_i at 0, {min, max} c_j at sale_layout_se_cbound_off. */
template <int MODE> SALE_DEV void sale_select_local_body(const sale_params &p) {
    static_assert(MODE == SALE_MODE_SELECT, "select only");
    SaleAttn<MODE, true> st;
    st.setup(p);
    if (st.nseg > 0) { /* thresholds are needed only where segments follow */
        SaleGenDown local = st.local_region();
        st.run_list(local);
        float *thr = (float *)p.scratch + (long long)st.bhq * st.N;
#pragma unroll
        for (int mt = 0; mt < st.MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const float tv = st.row_threshold(p, mt, hh); /* every lane: quad sums */
                const int row = st.wrow0 + mt * 16 + st.g4 + hh * 8;
                if (st.c4 == 0 && row < st.N) thr[row] = tv;
            }
    }
    /* {min, max} of c_j over each key block of this query block's rows: warp w, block w */
    static_assert(SALE_BLOCK_K == 32 && SALE_BLOCK_Q / SALE_BLOCK_K <= SALE_WARPS, "one warp per key block");
    const int J = st.qb * (SALE_BLOCK_Q / SALE_BLOCK_K) + st.warp;
    if (st.warp < SALE_BLOCK_Q / SALE_BLOCK_K && J < p.nkb) {
        const int j = J * SALE_BLOCK_K + st.lane;
        const float c = j < st.N ? ((const float *)p.cterm)[(long long)st.bhq * st.N + j] : 0.f;
        float lo = j < st.N ? c : SALE_POS_INF, hi = j < st.N ? c : SALE_NEG_INF;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
            hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
        }
        if (st.lane == 0) {
            float2 *cb = (float2 *)((unsigned char *)p.scratch + sale_layout_se_cbound_off(p.B, p.Hq, p.N));
            cb[(long long)st.bhq * p.nkb + J] = make_float2(lo, hi);
        }
    }
    st.store(p);
}

/* the kernel body of the attention families: the stages of SaleAttn */
template <int MODE> SALE_DEV void sale_attention_body(const sale_params &p) {
    SaleAttn<MODE> st;
    st.setup(p);
    if constexpr (MODE == SALE_MODE_ATTEND) {
        st.attend_mask(p);
    } else if constexpr (MODE == SALE_MODE_DENSE) {
        st.attend_dense();
    } else {
        st.load_query_codes(p);
        SaleGenDown local = st.local_region();
        st.attend_tiles(local, 0); /* estimates segment 0 meanwhile */
        for (int s = 0; s < st.nseg; s++) {
            SaleGenBits kept_blocks = st.select(p, s);
            st.attend_tiles(kept_blocks, s + 1); /* estimates segment s+1 meanwhile */
        }
    }
    st.store(p);
}
#endif /* SALE_FAMILY != 0 && !SALE_WGMMA_ATTN && !SALE_WGMMA_ROWS */

#endif
