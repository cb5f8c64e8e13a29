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

#include "wgmma_common.cuh"

#if SALE_DTYPE == 1
#define SALE_FW_TYPE "bf16"
#else
#define SALE_FW_TYPE "f16"
#endif

#define SALE_FW_ACC16                                                                                                 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define SALE_FW_OPS16(d)                                                                                              \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),       \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define SALE_FW_ACC32                                                                                                 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31}"
#define SALE_FW_OPS32(d)                                                                                              \
    SALE_FW_OPS16(d), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),     \
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),      \
        "+f"(d[31])
#define SALE_FW_OPS64(d)                                                                                              \
    SALE_FW_OPS32(d), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]),     \
        "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]),      \
        "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),      \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),      \
        "+f"(d[63])

/* S (64 x 32 f32) (+)= A (shared, K-major) B (shared, K-major); scale_d 0 starts from zero */
SALE_DEV void sale_fw_mma_s(float (&d)[16], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32." SALE_FW_TYPE "." SALE_FW_TYPE " " SALE_FW_ACC16
                 ", %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : SALE_FW_OPS16(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* S (64 x 64 f32), block_k 64 */
SALE_DEV void sale_fw_mma_s(float (&d)[32], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." SALE_FW_TYPE "." SALE_FW_TYPE " " SALE_FW_ACC32
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : SALE_FW_OPS32(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* O (64 x 128 f32) += A (registers: 4 packed pairs) B (shared, MN-major: transposed) */
SALE_DEV void sale_fw_mma_pv(float (&d)[64], const sale_u32 (&a)[4], sale_u64 bdesc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." SALE_FW_TYPE "." SALE_FW_TYPE " " DW_ACC64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : SALE_FW_OPS64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "n"(1));
}
/* this thread's landed cp.async writes to shared memory become visible to
 * the async proxy (wgmma's reads of its operands) */
SALE_DEV void sale_fw_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#endif
