/* wgmma_mma.cuh — the bf16/f16 wgmma instructions the sm_90a attention
 * kernels issue (f32 accumulators; the dtype from SALE_DTYPE), shared by
 * wgmma_attn.cuh (dense, the two-row attend), wgmma_rows.cuh (the rows
 * attend) and wgmma_fused.cuh (fused's attention half):
 *   dw_mma_ss(d, adesc, bdesc, scale_d): D (64 x N) (+)= A B, both operands
 *     from shared memory through 128-byte-swizzle descriptors, K-major;
 *     N = 32, 64 or 128 by the size of d (16, 32, 64 floats a thread);
 *     scale_d 0 starts from zero (the first k16 step of S = Q K^T);
 *   dw_mma_rs(d, a, bdesc): D (64 x 128) += A B, A from registers (four
 *     packed pairs of the dtype: P), B from shared memory MN-major (the
 *     transpose bit: V);
 *   dw_mma_rs(d, a, bdesc, scale_d): D (64 x 64) (+)= A B, A from
 *     registers (Q, in the rows kernel), B K-major from shared memory (K).
 * An accumulator of m64nN gives warp w of the warpgroup rows 16 w .. 16 w +
 * 15 and each thread the (row, column) pairs of an mma.sync m16n8 C
 * fragment, n8 group after n8 group. */
#ifndef SALE_WGMMA_MMA_CUH
#define SALE_WGMMA_MMA_CUH

#include "wgmma_common.cuh" /* DW_ACC64 */

#if SALE_DTYPE == 1
#define DW_WGMMA_TYPE "bf16"
#else
#define DW_WGMMA_TYPE "f16"
#endif
#define DW_ACC16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define DW_ACC32                                                                                                      \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31}"
#define DW_ACC_OPS16(d)                                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),       \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define DW_ACC_OPS32(d)                                                                                               \
    DW_ACC_OPS16(d), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),      \
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),      \
        "+f"(d[31])
#define DW_ACC_OPS(d)                                                                                                 \
    DW_ACC_OPS32(d), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]),      \
        "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]),      \
        "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),      \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),      \
        "+f"(d[63])

SALE_DEV void dw_mma_ss(float (&d)[16], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC16
                 ", %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : DW_ACC_OPS16(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
SALE_DEV void dw_mma_ss(float (&d)[32], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC32
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : DW_ACC_OPS32(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
SALE_DEV void dw_mma_ss(float (&d)[64], sale_u64 adesc, sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC64
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : DW_ACC_OPS(d)
                 : "l"(adesc), "l"(bdesc), "r"(scale_d));
}
/* D (64 x 64) (+)= A B, A from registers (the Q fragments of the rows
 * kernel), B from shared memory K-major (K); scale_d 0 starts from zero */
SALE_DEV void dw_mma_rs(float (&d)[32], const sale_u32 (&a)[4], sale_u64 bdesc, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : DW_ACC_OPS32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "r"(scale_d));
}
SALE_DEV void dw_mma_rs(float (&d)[64], const sale_u32 (&a)[4], sale_u64 bdesc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." DW_WGMMA_TYPE "." DW_WGMMA_TYPE " " DW_ACC64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : DW_ACC_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(bdesc), "n"(1));
}

#endif
