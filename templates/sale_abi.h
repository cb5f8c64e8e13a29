/* sale_abi.h — the one parameter block every sale kernel takes by value.
 * Included by the host (C11) and by the templates (NVRTC / nvcc), so both
 * sides agree on layout: only fixed-width fields, 8-byte ones first. */
#ifndef SALE_ABI_H
#define SALE_ABI_H

#ifdef __CUDACC_RTC__
typedef unsigned long long sale_u64;
typedef long long sale_i64;
#else
#include <stdint.h>
typedef uint64_t sale_u64;
typedef int64_t sale_i64;
#endif

/* Layout (element strides; D is contiguous):
 *   q   [B, Hq , N, D]  dtype      k, v [B, Hkv, N, D] dtype     o [B, Hq, N, D] dtype
 *   qcode [B, Hq , N, D] int8 (est_bits 8) or packed int4, 2 per byte, low nibble first (est_bits 4)
 *   kcode [B, Hkv, N, D] same encoding, contiguous
 *   qscale [B, Hq, N] f32      per query row
 *   kscale [B, Hkv, nkb] f32   per key block of block_k keys
 *   qmean  [B, Hq, D] f32      kmean [B, Hkv, D] f32
 *   cterm  [B, Hq, N] f32      c_j = qmean(h) . (k_j - kmean)
 *   kcent  [B, Hkv, N, D] dtype  k_j - kmean rounded to the input dtype (quantize writes it)
 *   tau    [Hq] f32 on the device, only when Hq > SALE_TAU_INLINE; else 0 and
 *          the thresholds are in tau_inline (the parameter block: no copy)
 *   mask   [B, Hq, nqb, nkw] u32 bitmask of kept key blocks (nkw = ceil(nkb/32))
 *   kept   [B, Hq, nqb] i32 kept key blocks per query block
 *   lse    [B, Hq, N] f32 natural-log sum-exp of scale*scores (optional: 0)
 * Pointers that are optional are 0 when absent (mask, kept, lse). */
#define SALE_TAU_INLINE 128 /* heads whose tau fits the parameter block (sizeof sale_params < 1 KB) */

typedef struct sale_params {
    sale_u64 q, k, v, o;
    sale_i64 q_sb, q_sh, q_sn;
    sale_i64 k_sb, k_sh, k_sn;
    sale_i64 v_sb, v_sh, v_sn;
    sale_i64 o_sb, o_sh, o_sn;
    sale_u64 qcode, kcode, qscale, kscale, qmean, kmean, cterm;
    sale_u64 tau, mask, kept, lse;
    sale_u64 scratch;         /* device scratch of sale_layout_scratch_bytes() */
    sale_u64 kcent;           /* K' = K - kmean in the input dtype [B, Hkv, N, D] contiguous,
                                 written by quantize; the exact scores of fused/select/attend
                                 read it through k (see "Units" in sale-algorithm.md) */
    sale_u64 sync;            /* sale_layout_sync_words(B, Hq, Hkv) u32 counters (quantize: 3,
                                 then one per batch and head; the persistent sm_90a attend
                                 kernels, rows and two-row: the same 2), zero
                                 before a launch; each launch leaves them zero */
    sale_u64 pick;            /* 0, or the attend kernel choice of this call (sm_90a, two-pass,
                                 thr = fixed, default tiles, N > SALE_WR_PICK_MIN_N): a u64
                                 that the host zeroes, the select's two launches add their
                                 kept blocks to (local region, sink, a dense head's whole row,
                                 estimated blocks), and both attend kernels, launched one after
                                 the other, read: the two-row kernel runs iff it is
                                 >= pick_min, the rows kernel iff it is below (the other
                                 returns at once) */
    sale_u64 pick_min;        /* sale_layout_pick_min() of the call */
    int B, Hq, Hkv, N;
    int nqb, nkb, nkw, group; /* group = Hq / Hkv */
    float scale;              /* softmax scale (1/sqrt(D) by default) */
    float scale_log2;         /* scale * log2(e) */
    int dense_heads_only;     /* 1: ignore tau, keep every causal block */
    int o_tma;                /* 1: the call's sale_tma_params.to maps o (the sm_90a rows attend
                                 kernel then stores O by TMA); 0: no map (raw launches) */
    int mask_bq, mask_bk;     /* the mask's block_q and block_k (the call's; nqb, nkb and nkw
                                 count its blocks). The dense kernels write every causal block
                                 at these: the dense key fixes block_k (it computes every key),
                                 so a call at block_k 16 or 64 that fell back to dense wrote
                                 its mask in 32-key blocks; 0: the kernel key's own) */
    float tau_inline[SALE_TAU_INLINE]; /* per-head tau when tau == 0 */
} sale_params;

/* A TMA tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned), encoded
 * on the host with cuTensorMapEncodeTiled. Kernels that load by TMA (the
 * sm_90a wgmma kernels of dense and attend: sale_layout_wgmma) take the parameter
 * block and their maps together, as one __grid_constant__ argument, so the
 * maps sit in parameter space where cp.async.bulk.tensor may read them:
 * q, k, v as rank-4 maps (d, row, head, batch), boxes of 64 columns x 128 rows,
 * 128-byte swizzle. */
#ifdef __cplusplus
#define SALE_ALIGN64 alignas(64)
#else
#define SALE_ALIGN64 _Alignas(64)
#endif
typedef struct sale_tmap {
    SALE_ALIGN64 sale_u64 v[16];
} sale_tmap;
typedef struct sale_tma_params {
    sale_params p;
    sale_tmap tq, tk, tv;
    sale_tmap tk2, tv2; /* the rows attend kernel only: K and V in 64-row boxes, two
                           adjacent 32-key blocks in one copy (wgmma_rows.cuh) */
    sale_tmap to;       /* the rows attend kernel only, when p.o_tma: o in boxes of 64
                           columns x 16 rows (a consumer warp's rows), 128-byte swizzle */
} sale_tma_params;

#endif
