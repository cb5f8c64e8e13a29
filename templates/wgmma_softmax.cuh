/* wgmma_softmax.cuh — a consumer warpgroup's share of flash attention on
 * sm_90a, for tiles of BN keys: the S accumulator (BN / 2 floats a thread:
 * m64nBN), O (64 x 128: 64 floats), P (S in the dtype as the register A
 * operand of P V, BN / 16 k16 slices), the running max m and sum l of the
 * thread's two rows (row0 and row0 + 8), the online softmax, the rescale of
 * O, and the store of O / l (and the log-sum-exp). Shared by the dense and
 * two-row attend kernels (wgmma_attn.cuh: DenseWg, BN 128) and the rows
 * attend kernel (wgmma_rows.cuh: RowWg, BN 64), which derive from it. */
#ifndef SALE_WGMMA_SOFTMAX_CUH
#define SALE_WGMMA_SOFTMAX_CUH

#include "wgmma_mma.cuh" /* S: dw_mma_ss; P V: dw_mma_rs */

/* QH: the byte offset of the Q tile's second 64-column half (its rows x 128) */
template <int BN, sale_u32 QH> struct DwRowState {
    float S[BN / 2], O[64];
    sale_u32 P[BN / 16][4];
    float m0, m1, l0, l1;
    int lane, row0, c4; /* row0: this thread's first row (and row0 + 8) */
    float sl2;          /* the softmax scale x log2(e) */
    /* 128-byte-swizzle descriptors of the Q tile and of stage 0 of the K
     * and V rings; a stage is BN x 128 of the dtype, two halves of BN rows
     * x 128 bytes (BN x 256 bytes a stage) */
    sale_u64 qdesc, kdesc, vdesc;

    /* S = Q K^T of K stage s: 8 k16 steps of d, 4 per 128-byte swizzle row,
     * then the second half */
    SALE_DEV void issue_s(int s) {
#pragma unroll
        for (int ks = 0; ks < 8; ks++) {
            const sale_u32 qoff = ((ks >> 2) * QH + (ks & 3) * 32) >> 4;
            const sale_u32 koff = ((ks >> 2) * (BN * 128) + (ks & 3) * 32) >> 4;
            dw_mma_ss(S, qdesc + qoff, kdesc + ((s * (BN * 256)) >> 4) + koff, ks);
        }
    }
    /* O += P V of V stage s (V transposed: 16 keys a k16 step, 2 KB) */
    SALE_DEV void issue_pv(int s) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) dw_mma_rs(O, P[kk], vdesc + ((s * (BN * 256) + kk * 2048) >> 4));
    }

    /* online softmax of S in place; a0, a1: the factors O must be rescaled by.
     * A row that has seen only masked scores keeps m = -inf and l = 0 (its
     * exponents use 0 for the max: no inf - inf). */
    SALE_DEV void softmax(float &a0, float &a1) {
        float x0 = m0, x1 = m1;
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
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
        for (int nt = 0; nt < BN / 8; nt++) {
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
        for (int kk = 0; kk < BN / 16; kk++) {
            P[kk][0] = sale_pack2(S[8 * kk + 0], S[8 * kk + 1]);
            P[kk][1] = sale_pack2(S[8 * kk + 2], S[8 * kk + 3]);
            P[kk][2] = sale_pack2(S[8 * kk + 4], S[8 * kk + 5]);
            P[kk][3] = sale_pack2(S[8 * kk + 6], S[8 * kk + 7]);
        }
    }
    /* the row sums of the thread's two rows (lt, summed over the quad) and
     * their inverses (0 for a row with nothing kept); store() and the rows
     * kernel's staged store (wgmma_rows.cuh) both normalise through it */
    SALE_DEV void row_sums(float &lt0, float &lt1, float &i0, float &i1) const {
        lt0 = sale_quad_sum(l0);
        lt1 = sale_quad_sum(l1);
        i0 = lt0 > 0.f ? 1.f / lt0 : 0.f;
        i1 = lt1 > 0.f ? 1.f / lt1 : 0.f;
    }
    /* the log-sum-exp of the thread's two rows (rows < N) when asked: one
     * thread of each quad writes */
    SALE_DEV void store_lse(const sale_params &p, int b, int h, float lt0, float lt1) const {
        if (p.lse && c4 == 0) {
            float *lse = (float *)p.lse + ((long long)b * p.Hq + h) * p.N;
            if (row0 < p.N) lse[row0] = m0 * p.scale + logf(lt0);
            if (row0 + 8 < p.N) lse[row0 + 8] = m1 * p.scale + logf(lt1);
        }
    }
    /* O / l in the dtype (rows < N), lse when asked */
    SALE_DEV void store(const sale_params &p, int b, int h) {
        float lt0, lt1, i0, i1;
        row_sums(lt0, lt1, i0, i1);
        sale_u16 *og = (sale_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh + 2 * c4;
        const bool w0 = row0 < p.N, w1 = row0 + 8 < p.N;
        sale_u16 *o0 = og + (long long)row0 * p.o_sn, *o1 = og + (long long)(row0 + 8) * p.o_sn;
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            if (w0) *(sale_u32 *)(o0 + nt * 8) = sale_pack2(O[nt * 4 + 0] * i0, O[nt * 4 + 1] * i0);
            if (w1) *(sale_u32 *)(o1 + nt * 8) = sale_pack2(O[nt * 4 + 2] * i1, O[nt * 4 + 3] * i1);
        }
        store_lse(p, b, h, lt0, lt1);
    }
};

#endif
