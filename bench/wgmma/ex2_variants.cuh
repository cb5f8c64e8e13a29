/* ex2_variants.cuh — 2^x for the attention softmax, other than one MUFU op an
 * element (sale_ex2 in templates/sale_common.cuh: ex2.approx.ftz.f32). The
 * twenty-third session's candidates, kept for the micro-benchmark
 * (alu_beside_wgmma.cu modes 7-12); rows_ex2h.patch puts this file in
 * templates/ as sale_ex2.cuh and the kernels' softmax<EX> on it.
 *
 * Why they were tried: with two CTAs an SM, the rows attend kernel's softmax
 * phase is ~80% bound by the MUFU pipe (4,096 exponentials a 64 x 64 tile; a
 * sub-partition's MUFU takes 4 lanes a cycle: NOTES.md, twenty-second
 * session).
 *
 *   SALE_EX2_F16X2  two exponentials "a MUFU op": x rounded to f16,
 *                   ex2.approx.f16x2, back to fp32. REFUTED on sm_90: ptxas
 *                   splits the f16x2 op into two MUFU.EX2.F16 (SASS of
 *                   alu_beside_wgmma: 32 a tile, as many as MUFU.EX2), so
 *                   MUFU time does not halve and the conversions add issue
 *                   slots: the softmax 638 -> 694 cycles, attend +2 to +4%.
 *                   bf16x2 the same (MUFU.EX2.BF16).
 *   SALE_EX2_POLY   an eighth of the elements (those of every eighth 8-key
 *                   column group) on the FMA pipe: x = j + f with
 *                   j = round(x), f in [-1/2, 1/2]; 2^f by a degree-3
 *                   polynomial (relative error 1.0e-4 in fp32, below the
 *                   dtype's rounding of P); j added to the exponent bits.
 *                   In the rows kernel (128 registers) even a sixteenth
 *                   makes ptxas serialise the wgmma (too few registers);
 *                   alone the softmax gains 5% (638 -> 608), beside P V it
 *                   loses 10% (724 -> 795).
 *
 * Both give exactly 0 for -inf (a masked score). Self-contained (needs only
 * SALE_DEV). */
#ifndef SALE_EX2_CUH
#define SALE_EX2_CUH

#define SALE_EX2_F32 0
#define SALE_EX2_F16X2 1
#define SALE_EX2_POLY 2

/* y0 = 2^x0, y1 = 2^x1 by one ex2.approx.f16x2 */
SALE_DEV void sale_ex2_f16x2(float x0, float x1, float &y0, float &y1) {
    asm("{\n.reg .b16 lo, hi;\n.reg .b32 p;\n"
        "cvt.rn.f16x2.f32 p, %3, %2;\n"
        "ex2.approx.f16x2 p, p;\n"
        "mov.b32 {lo, hi}, p;\n"
        "cvt.f32.f16 %0, lo;\n"
        "cvt.f32.f16 %1, hi;\n}"
        : "=f"(y0), "=f"(y1)
        : "f"(x0), "f"(x1));
}

/* 2^x on the FMA pipe, for x <= 0 (the softmax's x - max). x is clamped to
 * -127, where j = -127 and f = 0 give 2^f = 1 exactly, whose bits plus
 * (-127 << 23) are +0: -inf (masked) gives exactly 0, and nothing wraps
 * the exponent. Adding 1.5 x 2^23 rounds to an integer (j in the low
 * mantissa bits of t); __fadd_rn keeps the compiler from folding t - 1.5 x
 * 2^23 back into x. */
SALE_DEV float sale_ex2_poly(float x) {
    const float round = 12582912.f; /* 1.5 x 2^23 */
    x = fmaxf(x, -127.f);
    const float t = __fadd_rn(x, round);
    const float f = __fsub_rn(x, __fsub_rn(t, round));
    /* minimax for 2^f on [-1/2, 1/2] with p(0) = 1 (relative error 1.0e-4) */
    float p = fmaf(0.05500869f, f, 0.24221063f);
    p = fmaf(p, f, 0.6932829f);
    p = fmaf(p, f, 1.f);
    return __uint_as_float(__float_as_uint(p) + (__float_as_uint(t) << 23));
}

#endif
