/* wgmma_fused.cuh — the attention half of fused on sm_90a (head_dim 128,
 * block_q 64, 4 warps = one warpgroup: sale_layout_fused_wg). Included by
 * sale_common.cuh for those keys only; SaleAttn::tile() then computes
 *   S = Q K^T : 8 x wgmma m64n(KT)k16, A = the Q tile, B = the K tile, both
 *               from shared memory through 128-byte-swizzle descriptors
 *               (K-major: each tile is two halves of 64 columns, rows of
 *               128 bytes, 16-byte chunk c of row r at chunk c ^ (r & 7));
 *   O += P V  : KT/16 x wgmma m64n128k16, A = P from registers (the S
 *               accumulators repacked to the dtype: the layout of an mma.sync
 *               A fragment), B = the V tile as an MN-major operand
 *               (transpose bit; LBO the distance between its two halves,
 *               SBO 1 KB for 8 keys).
 * A wgmma accumulator of m64nN gives warp w of the warpgroup rows 16 w ..
 * 16 w + 15 and each thread the same (row, column) pairs as an mma.sync
 * m16n8 C fragment, n8 tile after n8 tile, so the masks, the online softmax
 * and the store of the mma.sync engine read S and O unchanged. The tiles
 * are filled by cp.async (generic proxy) and read by wgmma (async proxy):
 * each thread fences its landed copies into the async proxy before the
 * barrier that precedes the wgmma (sale_fw_fence_proxy). */
#ifndef SALE_WGMMA_FUSED_CUH
#define SALE_WGMMA_FUSED_CUH

#include "wgmma_mma.cuh" /* S: dw_mma_ss (m64n32k16, m64n64k16); P V: dw_mma_rs (m64n128k16) */

/* this thread's landed cp.async writes to shared memory become visible to
 * the async proxy (wgmma's reads of its operands) */
SALE_DEV void sale_fw_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#endif
