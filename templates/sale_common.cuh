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
 * warp w owns rows [w*16*MT, (w+1)*16*MT). */
#if SALE_FAMILY != 0
#define SALE_MODE_FUSED 1
#define SALE_MODE_SELECT 2
#define SALE_MODE_ATTEND 3
#define SALE_MODE_DENSE 4

template <int MODE> struct SaleAttn {
    static constexpr int D = SALE_HEAD_DIM, BQ = SALE_BLOCK_Q, BK = SALE_BLOCK_K, NW = SALE_WARPS, NT = NW * 32;
    static constexpr int MT = BQ / (16 * NW);
    static constexpr int ST = SALE_STAGES;
    static constexpr int KT = MODE == SALE_MODE_DENSE ? SALE_DENSE_KT : BK;
    static constexpr int RB = D * 2, CPR = RB / 16;
    static constexpr bool HASV = MODE != SALE_MODE_SELECT;
    static constexpr bool EST = MODE == SALE_MODE_FUSED || MODE == SALE_MODE_SELECT;
    static constexpr bool QREG =
        MT == 1 && MODE != SALE_MODE_FUSED; /* fused: Q fragments from shared (registers go to the estimation) */
    static constexpr int EB = SALE_EST_BITS, RBC = D * EB / 8, CPRC = RBC / 16, KSC = RBC / 32;
    static constexpr int SEG = SALE_BLOCK_SEG, SB = SEG / BK;
    static constexpr int EK = SEG < SALE_EST_CHUNK ? SEG : SALE_EST_CHUNK, NCH = (SEG + EK - 1) / EK;
    static constexpr int PQ = RB;       /* Q/K/V smem row pitch (XOR swizzled) */
    static constexpr int PC = RBC + 16; /* code tiles: padded pitch, so fragment addresses are base + immediate */
    /* select with Q fragments in registers: the Q tile is dead once qf is
     * loaded, so it shares its shared memory with the K stages (c1: 4 CTAs/SM) */
    static constexpr bool QALIAS = MODE == SALE_MODE_SELECT && QREG;
    static constexpr int QKR = (BQ > ST * KT ? BQ : ST * KT) * PQ; /* aliased Q/K region */
    static constexpr int OFF_K = QALIAS ? 0 : BQ * PQ;
    static constexpr int OFF_V = OFF_K + ST * KT * PQ;
    static constexpr int NBUF = SALE_LAYOUT_EST_NBUF(MODE, BQ); /* code chunk buffers (prefetch distance NBUF-1) */
    static constexpr bool BOUND = NCH == 1;
    static_assert(NT % CPRC == 0, "code tile rows per pass");
    static constexpr int EGMAX = MODE == SALE_MODE_FUSED ? 2 : 4; /* estimation groups in flight (registers) */
    static constexpr int EG =
        (EK / 16) % EGMAX == 0
            ? EGMAX
            : ((EK / 16) % 2 == 0
                   ? 2
                   : 1); /* bound + exact re-check (the segment's chunk is still resident at selection) */
    static constexpr int OFF_C = QALIAS ? QKR : OFF_V + (HASV ? ST * KT * PQ : 0);
    static constexpr int OFF_CT = OFF_C + NBUF * EK * PC;
    static constexpr int OFF_SK = OFF_CT + NBUF * EK * 4;
    static constexpr int OFF_MB = OFF_SK + NBUF * 8 * 4;
    static constexpr int OFF_FL = OFF_MB + NBUF * 8;
    static constexpr int OFF_RM = OFF_FL + 2 * 16 * 4; /* per (row, block) estimated maxima, 2 segments */
    static constexpr int SMEM_END = EST ? OFF_RM + 2 * BQ * SB * 4 : OFF_C;
    /* the layout above and the host's sale_layout_smem() (the dynamic shared
     * memory every launch asks for) are written twice: they must agree */
    static constexpr sale_layout_cfg LCFG = {MODE, D, BQ, BK, SEG, SALE_LOCAL_WINDOW, SALE_DTYPE, EB, NW, ST, SALE_ARCH};
    static_assert(sale_layout_smem(&LCFG) == (unsigned)SMEM_END,
                  "shared-memory layout of the kernel and sale_layout_smem() disagree");
    static constexpr int DT = HASV ? D / 8 : 1;

    static_assert(MODE == 0 || (BQ % (16 * NW) == 0 && MT >= 1 && MT <= 2), "block_q / warps");
    static_assert(MODE == 0 || (SEG % BK == 0 && SB >= 1 && SB <= 32), "block_seg");

    /* state */
    float o[MT][DT][4];
    float m[MT][2], l[MT][2];
    sale_u32 qf[QREG ? D / 16 : 1][4];

    int tid, lane, warp, g4, c4;
    int N, i0, wrow0; /* wrow0: global row of the warp's first row */
    float sl2;
    sale_u32 sbase;
    const sale_u16 *kg, *vg;
    long long k_sn, v_sn;

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
                int off = sale_swz(r, ch, CPR);
                sale_cp16(sk + off, kg + kk * k_sn + ch * 8, v);
                if (HASV)
                    sale_cp16(sv + off, vg + kk * v_sn + ch * 8, v);
            }
        }
    }

    /* ------------------------------------------------------- one tile */
    /* S = Q K^T over KT keys starting at key k0, mask, online softmax, P V */
    SALE_DEV void tile(int k0, int slot) {
        /* the warp sees nothing of this tile (all keys after its last row) */
        if (k0 > wrow0 + 16 * MT - 1)
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
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            sale_u32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (QREG) {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        a[mt][e] = qf[QREG ? ks : 0][e];
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
            for (int h = 0; h < 2; h++) {
                float mx = SALE_NEG_INF;
#pragma unroll
                for (int nt = 0; nt < KT / 8; nt++)
                    mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
                mx = sale_quad_max(mx);
                float mnew = fmaxf(m[mt][h], mx);
                float muse = mnew == SALE_NEG_INF ? 0.f : mnew;
                float ms = __fmul_rn(muse, sl2);
                float alpha = sale_ex2(__fsub_rn(__fmul_rn(m[mt][h], sl2), ms));
                m[mt][h] = mnew;
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < KT / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float pv = sale_ex2(__fmaf_rn(s[mt][nt][2 * h + e], sl2, -ms));
                        s[mt][nt][2 * h + e] = pv;
                        rs = __fadd_rn(rs, pv);
                    }
                l[mt][h] = __fmaf_rn(l[mt][h], alpha, rs);
                if (HASV) {
#pragma unroll
                    for (int dt = 0; dt < DT; dt++) {
                        o[mt][dt][2 * h] *= alpha;
                        o[mt][dt][2 * h + 1] *= alpha;
                    }
                }
            }
        if (HASV) {
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
                        if (HASV) {
                            sale_mma_f16(o[mt][HASV ? 2 * dp : 0], a[mt], b0, b1);
                            sale_mma_f16(o[mt][HASV ? 2 * dp + 1 : 0], a[mt], b2, b3);
                        }
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
};

/* generators of tile indices */
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

/* the kernel body of the attention families */
template <int MODE> SALE_DEV void sale_attention_body(const sale_params &p) {
    typedef SaleAttn<MODE> A;
    extern __shared__ __align__(128) unsigned char sale_smem[];
    A st;
    const int N = p.N;
    const int qb = p.nqb - 1 - (int)blockIdx.x; /* heaviest query blocks first */
    const int h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / p.group;
    st.tid = threadIdx.x;
    st.lane = st.tid & 31;
    st.warp = st.tid >> 5;
    st.g4 = st.lane >> 2;
    st.c4 = st.lane & 3;
    st.N = N;
    st.i0 = qb * A::BQ;
    st.wrow0 = st.i0 + st.warp * 16 * A::MT;
    st.sl2 = p.scale_log2;
    st.sbase = sale_smem_addr(sale_smem);
    st.kg = (const sale_u16 *)p.k + (long long)b * p.k_sb + (long long)kvh * p.k_sh;
    st.vg = (const sale_u16 *)p.v + (long long)b * p.v_sb + (long long)kvh * p.v_sh;
    st.k_sn = p.k_sn;
    st.v_sn = p.v_sn;
    const int i0 = st.i0;
    const int iend = (i0 + A::BQ < N ? i0 + A::BQ : N) - 1;
    const int bhq = b * p.Hq + h;

#pragma unroll
    for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            st.m[mt][hh] = SALE_NEG_INF;
            st.l[mt][hh] = 0.f;
#pragma unroll
            for (int dt = 0; dt < A::DT; dt++) {
                st.o[mt][dt][2 * hh] = 0.f;
                st.o[mt][dt][2 * hh + 1] = 0.f;
            }
        }

    /* Q tile -> shared (rows >= N zero-filled) */
    {
        const sale_u16 *qg = (const sale_u16 *)p.q + (long long)b * p.q_sb + (long long)h * p.q_sh;
        for (int idx = st.tid; idx < A::BQ * A::CPR; idx += A::NT) {
            int r = idx / A::CPR, ch = idx % A::CPR;
            int row = i0 + r;
            bool v = row < N;
            long long rr = v ? row : 0;
            sale_cp16(st.sbase + sale_swz(r, ch, A::CPR), qg + rr * p.q_sn + ch * 8, v);
        }
        sale_cp_commit();
    }

    /* selection geometry */
    const int kb_hi = iend / A::BK;
    int local_lo, nseg = 0;
    bool dense_head = true;
    float tau = 0.f;
    if (A::EST) {
        if (!p.dense_heads_only) {
            /* thresholds travel in the parameter block (no copy, no sync);
             * more heads than it holds: a device array */
            tau = p.tau ? ((const float *)p.tau)[h] : (h < SALE_TAU_INLINE ? p.tau_inline[h] : 0.f);
            dense_head = !(tau > 1e-5f);
        }
        int lf = (i0 - SALE_LOCAL_WINDOW > 0 ? i0 - SALE_LOCAL_WINDOW : 0) / A::BK;
        if (dense_head) {
            local_lo = 0;
        } else if (lf <= 1) {
            local_lo = lf;
        } else {
            nseg = (lf - 1) / A::SB;
            local_lo = 1 + nseg * A::SB;
        }
    } else {
        local_lo = 0;
    }
    const int total_chunks = nseg * A::NCH;

    const float *kscale_g = (const float *)p.kscale + (long long)(b * p.Hkv + kvh) * p.nkb;
    const unsigned char *kcode_g = 0;
    const float *cterm_g = 0;
    if (A::EST) {
        kcode_g = (const unsigned char *)p.kcode + (long long)(b * p.Hkv + kvh) * N * A::RBC;
        cterm_g = (const float *)p.cterm + (long long)bhq * N;
    }
    /* chunk qi of the estimation -> buffer qi % NBUF; completion on that buffer's mbarrier */
    const int ld_r0 = st.tid / A::CPRC, ld_c0 = st.tid % A::CPRC;
    auto load_chunk = [&](int qi) {
        const int buf = qi % A::NBUF;
        int s = qi / A::NCH, c = qi % A::NCH;
        int key0 = (1 + s * A::SB) * A::BK + c * A::EK;
        int nk = A::SEG - c * A::EK < A::EK ? A::SEG - c * A::EK : A::EK;
        /* each thread copies fixed (row, chunk) slots: row ld_r0 + it*RSTEP,
         * chunk ld_c0, so the addresses are one base plus immediates */
        constexpr int RSTEP = A::NT / A::CPRC;
        const sale_u32 sdst = st.sbase + A::OFF_C + buf * A::EK * A::PC + ld_r0 * A::PC + ld_c0 * 16;
        const unsigned char *gsrc = kcode_g + (long long)(key0 + ld_r0) * A::RBC + ld_c0 * 16;
#pragma unroll
        for (int it = 0; it < (A::EK + RSTEP - 1) / RSTEP; it++)
            if (ld_r0 + it * RSTEP < nk)
                sale_cp16(sdst + it * RSTEP * A::PC, gsrc + it * RSTEP * A::RBC, true);
        const sale_u32 sct = st.sbase + A::OFF_CT + buf * A::EK * 4 + st.tid * 4;
#pragma unroll
        for (int it = 0; it < (A::EK + A::NT - 1) / A::NT; it++)
            if (st.tid + it * A::NT < nk)
                sale_cp4(sct + it * A::NT * 4, cterm_g + key0 + st.tid + it * A::NT);
        if (st.tid < nk / A::BK)
            sale_cp4(st.sbase + A::OFF_SK + (buf * 8 + st.tid) * 4, kscale_g + key0 / A::BK + st.tid);
        sale_cp_mbar_arrive(st.sbase + A::OFF_MB + buf * 8);
        sale_cp_commit();
    };
    if (A::EST && total_chunks > 0) {
        if (st.tid < A::NBUF)
            sale_mbar_init(st.sbase + A::OFF_MB + st.tid * 8, A::NT);
        __syncthreads();
        for (int qi = 0; qi < A::NBUF - 1 && qi < total_chunks; qi++)
            load_chunk(qi);
    }
    sale_cp_wait<0>();
    __syncthreads();

    if (A::QREG) {
#pragma unroll
        for (int ks = 0; ks < (A::QREG ? A::D / 16 : 1); ks++) {
            int r = st.warp * 16 + (st.lane & 15);
            sale_ldsm4(st.qf[ks][0], st.qf[ks][1], st.qf[ks][2], st.qf[ks][3],
                       st.sbase + sale_swz(r, ks * 2 + (st.lane >> 4), A::CPR));
        }
        if (A::QALIAS)
            __syncthreads(); /* every warp has its Q fragments before K tiles overwrite the Q tile */
    }

    /* mask row init: local region + sink */
    sale_u32 *mask_row = 0;
    if ((A::EST || MODE == SALE_MODE_DENSE) && p.mask) { /* dense: every causal block */
        mask_row = (sale_u32 *)p.mask + ((long long)bhq * p.nqb + qb) * p.nkw;
        for (int w = st.tid; w < p.nkw; w += A::NT) {
            int lo = w * 32, hi = w * 32 + 31;
            int a = local_lo > lo ? local_lo : lo, z = kb_hi < hi ? kb_hi : hi;
            sale_u32 bits = 0;
            if (a <= z) {
                int n = z - a + 1;
                bits = (n == 32 ? 0xffffffffu : ((1u << n) - 1u)) << (a - lo);
            }
            if (w == 0)
                bits |= 1u;
            mask_row[w] = bits;
        }
    }
    int kept = A::EST ? (kb_hi - local_lo + 1) + (local_lo > 0 ? 1 : 0) : 0;

    /* ---------------- exact part: local region (+ sink), or everything ---- */
    if (MODE == SALE_MODE_ATTEND) {
        const sale_u32 *words = (const sale_u32 *)p.mask + ((long long)bhq * p.nqb + qb) * p.nkw;
        SaleGenMask gm;
        gm.words = words;
        int wh = kb_hi / 32;
        gm.w = wh;
        sale_u32 first = words[wh];
        int sh = kb_hi % 32;
        gm.bits = sh == 31 ? first : (first & ((2u << sh) - 1u));
        st.run_list(gm);
    } else if (MODE == SALE_MODE_DENSE) {
        SaleGenDown gd;
        gd.cur = iend / A::KT;
        gd.lo = 0;
        gd.extra = -1;
        st.run_list(gd);
    } else {
        /* query codes (A fragments) in registers, scales per row */
        sale_u32 qa[A::MT][A::KSC][4];
        float sq[A::MT][2];
        if (nseg > 0) {
            const unsigned char *qcode_g = (const unsigned char *)p.qcode + (long long)bhq * N * A::RBC;
            const float *qscale_g = (const float *)p.qscale + (long long)bhq * N;
#pragma unroll
            for (int mt = 0; mt < A::MT; mt++) {
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    int row = st.wrow0 + mt * 16 + st.g4 + hh * 8;
                    bool v = row < N;
                    sq[mt][hh] = v ? qscale_g[row] : 0.f;
#pragma unroll
                    for (int ks = 0; ks < A::KSC; ks++) {
                        const unsigned char *rp = qcode_g + (long long)(v ? row : 0) * A::RBC + ks * 32 + 4 * st.c4;
                        qa[mt][ks][hh] = v ? *(const sale_u32 *)rp : 0u;
                        qa[mt][ks][2 + hh] = v ? *(const sale_u32 *)(rp + 16) : 0u;
                    }
                }
            }
        }
        /* estimation of segment s: per (row, block) maximum of the estimated
         * score s^_ij = (sq_i*sk_J)*dot + c_j into shared memory. It needs no
         * softmax state, so it runs while the K/V tiles of the previous
         * segment's kept blocks are in flight. Kept iff max_j s^_ij > t_i. */
        /* exact estimated score s^_ij = (sq_i*sk_J)*dot + c_j, in this order, no FMA.
         * int -> float via the exponent trick (exact for |dot| < 2^22, no slow I2F) */
        auto shat = [&](float pr, int dot, float cj) -> float {
            float dotf = __fsub_rn(__int_as_float(dot + 0x4B400000), 12582912.f);
            return __fadd_rn(__fmul_rn(pr, dotf), cj);
        };
        /* estimation of segment s into shared memory, per (row, block):
         *  BOUND (one chunk per segment): an upper bound of max_j s^_ij,
         *    fl(fl(pr*max d) + max c) over each thread's keys (exact: fl is
         *    monotone); blocks whose bound passes are re-checked exactly
         *    from the still-resident chunk at selection time;
         *  else: the exact max_j s^_ij.
         * It needs no softmax state, so it runs while the K/V tiles of the
         * previous segment's kept blocks are in flight. */
        auto est = [&](int s) {
            const int sf = 1 + s * A::SB;
            float *rm = (float *)(sale_smem + A::OFF_RM) + (s & 1) * A::BQ * A::SB;
            for (int c = 0; c < A::NCH; c++) {
                const int qi = s * A::NCH + c;
                const int buf = qi % A::NBUF;
                sale_mbar_wait(st.sbase + A::OFF_MB + buf * 8, (sale_u32)(qi / A::NBUF) & 1u);
                __syncthreads(); /* also: every thread is done with chunk qi-1, whose buffer is refilled next */
                if (qi + A::NBUF - 1 < total_chunks)
                    load_chunk(qi + A::NBUF - 1);
                const int ck0 = sf * A::BK + c * A::EK;
                const int nk = A::SEG - c * A::EK < A::EK ? A::SEG - c * A::EK : A::EK;
                const sale_u32 sc = st.sbase + A::OFF_C + buf * A::EK * A::PC;
                const float *sct = (const float *)(sale_smem + A::OFF_CT) + buf * A::EK;
                const float *skc = (const float *)(sale_smem + A::OFF_SK) + buf * 8;
                float bm[A::MT][2];
                int dm[A::MT][2];
                float cm = SALE_NEG_INF;
#pragma unroll
                /* G groups of 16 keys at a time, k-steps outer: G*2 independent
                 * IMMA accumulators in flight (the IMMA latency is not hidden
                 * by the few warps per SM otherwise) */
#pragma unroll
                for (int pg = 0; pg < A::EK / 16; pg += A::EG) {
                    if (pg * 16 < nk) {
                        int accg[A::EG][A::MT][2][4];
#pragma unroll
                        for (int g = 0; g < A::EG; g++)
#pragma unroll
                            for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                                for (int e = 0; e < 4; e++)
                                    accg[g][mt][0][e] = accg[g][mt][1][e] = 0;
#pragma unroll
                        for (int ks = 0; ks < A::KSC; ks++) {
#pragma unroll
                            for (int g = 0; g < A::EG; g++) {
                                if ((pg + g) * 16 < nk) {
                                    sale_u32 b0, b1, b2, b3;
                                    int r = (pg + g) * 16 + (st.lane & 7) + ((st.lane >> 4) << 3);
                                    sale_ldsm4(b0, b1, b2, b3, sc + r * A::PC + (ks * 2 + ((st.lane >> 3) & 1)) * 16);
#pragma unroll
                                    for (int mt = 0; mt < A::MT; mt++) {
                                        sale_mma_est(accg[g][mt][0], qa[mt][ks], b0, b1);
                                        sale_mma_est(accg[g][mt][1], qa[mt][ks], b2, b3);
                                    }
                                }
                            }
                        }
#pragma unroll
                        for (int g = 0; g < A::EG; g++) {
                            const int pp = pg + g;
                            if (pp * 16 < nk) {
                                const int jb = (pp * 16) / A::BK;
                                if ((pp * 16) % A::BK == 0) {
#pragma unroll
                                    for (int mt = 0; mt < A::MT; mt++) {
                                        bm[mt][0] = bm[mt][1] = SALE_NEG_INF;
                                        dm[mt][0] = dm[mt][1] = -2147483647;
                                    }
                                    cm = SALE_NEG_INF;
                                }
                                if (A::BOUND) {
#pragma unroll
                                    for (int nt = 0; nt < 2; nt++)
#pragma unroll
                                        for (int e = 0; e < 2; e++) {
                                            cm = fmaxf(cm, sct[pp * 16 + nt * 8 + 2 * st.c4 + e]);
#pragma unroll
                                            for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                                                for (int hh = 0; hh < 2; hh++)
                                                    dm[mt][hh] = max(dm[mt][hh], accg[g][mt][nt][2 * hh + e]);
                                        }
                                } else {
#pragma unroll
                                    for (int nt = 0; nt < 2; nt++)
#pragma unroll
                                        for (int e = 0; e < 2; e++) {
                                            const float cj = sct[pp * 16 + nt * 8 + 2 * st.c4 + e];
#pragma unroll
                                            for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                                                for (int hh = 0; hh < 2; hh++)
                                                    bm[mt][hh] =
                                                        fmaxf(bm[mt][hh], shat(__fmul_rn(sq[mt][hh], skc[jb]),
                                                                               accg[g][mt][nt][2 * hh + e], cj));
                                        }
                                }
                                if (((pp + 1) * 16) % A::BK == 0 || (pp + 1) * 16 >= nk) {
#pragma unroll
                                    for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                                        for (int hh = 0; hh < 2; hh++) {
                                            float x = A::BOUND ? shat(__fmul_rn(sq[mt][hh], skc[jb]), dm[mt][hh], cm)
                                                               : bm[mt][hh];
                                            x = sale_quad_max(x);
                                            int rl = st.warp * 16 * A::MT + mt * 16 + st.g4 + hh * 8;
                                            if (st.c4 == 0)
                                                rm[rl * A::SB + (ck0 - sf * A::BK) / A::BK + jb] = x;
                                        }
                                }
                            }
                        }
                    }
                }
            }
        };
        /* exact re-check of block jl of segment s (BOUND mode; its chunk is still resident):
         * does any of this warp's rows have s^_ij > t_i ? */
        auto recheck = [&](int s, int jl, const float(&t)[A::MT][2]) -> bool {
            const int buf = s % A::NBUF;
            const sale_u32 sc = st.sbase + A::OFF_C + buf * A::EK * A::PC;
            const float *sct = (const float *)(sale_smem + A::OFF_CT) + buf * A::EK;
            const float sk = ((const float *)(sale_smem + A::OFF_SK))[buf * 8 + jl];
            bool hit = false;
            constexpr int RG = A::BK / 16 < 2 ? A::BK / 16 : 2; /* 16-key groups in flight (registers) */
#pragma unroll
            for (int q0 = 0; q0 < A::BK / 16; q0 += RG) {
                int accq[RG][A::MT][2][4];
#pragma unroll
                for (int q = 0; q < RG; q++)
#pragma unroll
                    for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            accq[q][mt][0][e] = accq[q][mt][1][e] = 0;
#pragma unroll
                for (int ks = 0; ks < A::KSC; ks++) {
#pragma unroll
                    for (int q = 0; q < RG; q++) {
                        sale_u32 b0, b1, b2, b3;
                        int r = (jl * (A::BK / 16) + q0 + q) * 16 + (st.lane & 7) + ((st.lane >> 4) << 3);
                        sale_ldsm4(b0, b1, b2, b3, sc + r * A::PC + (ks * 2 + ((st.lane >> 3) & 1)) * 16);
#pragma unroll
                        for (int mt = 0; mt < A::MT; mt++) {
                            sale_mma_est(accq[q][mt][0], qa[mt][ks], b0, b1);
                            sale_mma_est(accq[q][mt][1], qa[mt][ks], b2, b3);
                        }
                    }
                }
#pragma unroll
                for (int q = 0; q < RG; q++) {
                    const int pp = jl * (A::BK / 16) + q0 + q;
#pragma unroll
                    for (int nt = 0; nt < 2; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const float cj = sct[pp * 16 + nt * 8 + 2 * st.c4 + e];
#pragma unroll
                            for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                                for (int hh = 0; hh < 2; hh++)
                                    hit |= shat(__fmul_rn(sq[mt][hh], sk), accq[q][mt][nt][2 * hh + e], cj) > t[mt][hh];
                        }
                }
            }
            return __any_sync(0xffffffffu, hit);
        };

        SaleGenDown gd;
        gd.cur = kb_hi;
        gd.lo = local_lo;
        gd.extra = local_lo > 0 ? 0 : -1;
        st.list_begin(gd);
        if (nseg > 0)
            est(0);
        st.list_body(gd);

        /* ---------------- segments: select, then compute ------------------ */
        const float scale = p.scale;
        float tcache[A::MT][2];
        sale_u32 prev_bits = 1u;
        for (int s = 0; s < nseg; s++) {
            const int sf = 1 + s * A::SB;
            const float *rm = (const float *)(sale_smem + A::OFF_RM) + (s & 1) * A::BQ * A::SB;
            sale_u32 *sflag = (sale_u32 *)(sale_smem + A::OFF_FL) + (s & 1) * 16;
            __syncwarp();
            sale_u32 flags = 0;
#pragma unroll
            for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    /* threshold from the state at the segment start (unchanged
                     * when the previous segment kept nothing) */
                    if (prev_bits) {
                        float lt = sale_quad_sum(st.l[mt][hh]);
                        int row = st.wrow0 + mt * 16 + st.g4 + hh * 8;
                        float tv = __fadd_rn(st.m[mt][hh], __fdiv_rn(logf(__fmul_rn(tau, lt)), scale));
                        tcache[mt][hh] = row < N ? tv : SALE_POS_INF;
                    }
                    const float tv = tcache[mt][hh];
                    int rl = st.warp * 16 * A::MT + mt * 16 + st.g4 + hh * 8;
#pragma unroll
                    for (int j = 0; j < A::SB; j++)
                        if (rm[rl * A::SB + j] > tv)
                            flags |= 1u << j;
                }
            flags = __reduce_or_sync(0xffffffffu, flags);
            if (A::BOUND) { /* candidates from the bounds: confirm exactly */
                sale_u32 cand = flags;
                flags = 0;
                while (cand) {
                    int j = __ffs(cand) - 1;
                    cand &= cand - 1;
                    if (recheck(s, j, tcache))
                        flags |= 1u << j;
                }
            }
            if (st.lane == 0)
                sflag[st.warp] = flags;
            __syncthreads();
            sale_u32 bits = 0;
#pragma unroll
            for (int w = 0; w < A::NW; w++)
                bits |= sflag[w];
            kept += __popc(bits);
            prev_bits = bits;
            if (mask_row && st.tid == 0 && bits) {
                int w0 = sf >> 5, sh = sf & 31;
                atomicOr(mask_row + w0, bits << sh);
                if (sh && (bits >> (32 - sh)))
                    atomicOr(mask_row + w0 + 1, bits >> (32 - sh));
            }
            SaleGenBits gb;
            gb.bits = bits;
            gb.base = sf;
            st.list_begin(gb);
            if (s + 1 < nseg)
                est(s + 1);
            st.list_body(gb);
        }
    }

    if (A::EST && p.kept && st.tid == 0)
        ((int *)p.kept)[(long long)bhq * p.nqb + qb] = kept;

    /* ---------------- output ------------------------------------------- */
    if (A::HASV) {
        sale_u16 *og = (sale_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh;
        float *lse = p.lse ? (float *)p.lse + (long long)bhq * N : 0;
#pragma unroll
        for (int mt = 0; mt < A::MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                float lt = sale_quad_sum(st.l[mt][hh]);
                int row = st.wrow0 + mt * 16 + st.g4 + hh * 8;
                if (row < N) {
                    float inv = lt > 0.f ? 1.f / lt : 0.f;
                    sale_u16 *orow = og + (long long)row * p.o_sn + 2 * st.c4;
#pragma unroll
                    for (int dt = 0; dt < A::DT; dt++)
                        *(sale_u32 *)(orow + dt * 8) =
                            sale_pack2(st.o[mt][dt][2 * hh] * inv, st.o[mt][dt][2 * hh + 1] * inv);
                    if (lse && st.c4 == 0) {
                        float mu = st.m[mt][hh] == SALE_NEG_INF ? 0.f : st.m[mt][hh];
                        lse[row] = mu * p.scale + logf(lt);
                    }
                }
            }
    }
}
#endif /* SALE_FAMILY != 0 */

#endif
