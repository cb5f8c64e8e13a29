/* qz_code.cuh — the quantize kernel's codes: x / s rounded to an integer and
 * clamped to +-qmax, exactly (qz_code) and by the reciprocal where that is
 * provably the same (qz_rcp, qz_code_fast). Plain code, included by
 * quantize.cu, so that bench/qz_code_check.c compiles these same functions on
 * the host (SALE_HOST_TEST, with the _rn intrinsics and __float_as_int as
 * IEEE float operations) and checks them against the CPU reference's
 * clamp(rintf(x / s)), instead of a copy of them. */
#ifndef SALE_QZ_CODE_CUH
#define SALE_QZ_CODE_CUH

#ifdef SALE_HOST_TEST
#define QZ_FN static inline
#else
#define QZ_FN __device__ __forceinline__
#endif

QZ_FN int qz_code(float x, float s, float qmax) {
    if (s == 0.f) return 0;
    /* = (int)clamp(rintf(x / s)): clamping first changes nothing (rintf is
     * monotone, +-qmax are integers, a NaN clamps to -qmax either way), and
     * adding 1.5 * 2^23 rounds r to an integer in the low mantissa bits, ties
     * to even as rintf does. Checked for all 2^32 floats, qmax 127 and 7. It
     * saves FRND and F2I, which issue at a quarter of the FP32 rate. */
    const float r = fminf(fmaxf(__fdiv_rn(x, s), -qmax), qmax);
    return __float_as_int(__fadd_rn(r, 12582912.f)) - 0x4B400000;
}

/* The fast path of qz_code, which the division dominated (a correctly
 * rounded one, with its check and slow path: a third of the kernel's
 * instructions): q = x * rs, rs = fl(1/s) once per scale (qz_rcp), rounded
 * as above, and trusted only when that is provably clamp(rint(x / s)): |rq| <=
 * qmax and q at least 2^-13 away from a half-integer. Why that is enough: rs
 * and q are each correctly rounded, so |q - x/s| <= |x/s| (2u + u^2), u =
 * 2^-24, when 1/s is normal (it is here: s = max/qmax <= FLT_MAX/7 < 2^126),
 * and below 2^-14.6 even when it is subnormal (relative error 2^-22 there);
 * with |q| < 127.5 that is under 2^-16, an eighth of the margin (a third
 * when 1/s is subnormal). Then x/s lies strictly inside the same (rq - 1/2, rq + 1/2) as q, so rint and the
 * exact quotient's rounding agree with rq, and |rq| <= qmax makes the clamp
 * a no-op. q - rq is exact (both are near, rq an integer below 2^8). NaN or
 * infinite q (x NaN or inf; rs = inf when 1/s overflows) fails the test, and
 * s == 0 gives rs = 0, so q = 0 and the code 0 that qz_code returns. *bad
 * is set (to 1) when the caller has to use qz_code instead: about 2.4e-4 of
 * the codes of Gaussian rows, 0.2% of lanes' 8 (bench/qz_code_check.c, which
 * checks these functions bit for bit against clamp(rintf(x / s)) on the CPU). It returns
 * the bits of t, not t's bits - 0x4B400000 as qz_code does: the low byte is
 * the same (0x4B400000 has none), and qz_store and qz_store8 (quantize.cu) keep no more
 * than the low byte; the subtraction was one instruction a code. */
#define QZ_HALF (0.5f - 0x1p-13f)
QZ_FN float qz_rcp(float s) { return s == 0.f ? 0.f : __frcp_rn(s); }

QZ_FN int qz_code_fast(float x, float rs, float qmax, int *bad) {
    const float q = __fmul_rn(x, rs);
    const float t = __fadd_rn(q, 12582912.f), rq = __fsub_rn(t, 12582912.f);
    if (!(fabsf(rq) <= qmax && fabsf(__fsub_rn(q, rq)) <= QZ_HALF)) *bad = 1;
    return __float_as_int(t);
}

#endif
