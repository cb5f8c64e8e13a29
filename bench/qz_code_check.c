/* qz_code_check.c — CPU check of the quantize kernel's fast code
 * path (templates/qz_code.cuh, qz_code_fast): x * fl(1/s), rounded, accepted
 * only when it is provably clamp(rint(x / s)), else the exact division. It
 * compiles the kernel's own functions (the header, with the intrinsics below
 * as float operations), not a copy of them.
 *   build: cc -O2 -ffp-contract=off -fno-fast-math bench/qz_code_check.c -lm   (the CMake build works too)
 * On x86-64 with SSE, float *, +, - and / are IEEE binary32 with round to
 * nearest even and subnormals kept, like __fmul_rn, __fadd_rn, __fsub_rn,
 * __fdiv_rn and __frcp_rn (1.0f / s) without -ftz, so the program computes the
 * same bits as the kernel. It compares the fast path plus its fallback with
 * the CPU reference's clamp(rintf(x / s)) (src/reference.c, quantize), with
 * the kernel's exact qz_code and with what the algorithm page's step 2 says of
 * any code (symmetric, within 1/2 of x / s, clamped), for QMAX 127 (8-bit)
 * and 7 (4-bit), and prints
 * how often the fast path declines (the warp then redoes a lane's codes).
 *   usage: qz_code_check [millions of random pairs per QMAX, default 200] [sweeps, default 4]
 * Exit status 1 on any mismatch. ctest runs it small (2 million pairs, no
 * sweep: a few seconds); the defaults take ~3 minutes. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) /* splitmix64: fast, and good enough to pick test points */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* src/reference.c: code = clamp(rintf(x / s)), 0 when s is not > 0 */
static int code_ref(float x, float s, float qmax)
{
    float c = s > 0.0f ? rintf(x / s) : 0.0f;
    c = fminf(fmaxf(c, -qmax), qmax);
    return (int)c;
}

/* the CUDA intrinsics qz_code.cuh uses, as the IEEE operations they are */
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline int __float_as_int(float f) { return (int)f_bits(f); }
#define SALE_HOST_TEST 1
#include "../templates/qz_code.cuh"

/* the kernel's qz_code_fast: *bad is set when the product may round otherwise
 * than x / s. It returns t's bits, of which the kernel stores the low byte;
 * minus those of 1.5 * 2^23 they are the code itself (|code| < 2^22), whose
 * low byte that is. */
static int code_fast(float x, float rs, float qmax, int *bad)
{
    return (int)((uint32_t)qz_code_fast(x, rs, qmax, bad) - 0x4B400000u);
}

static unsigned long long mismatches; /* all of them, for the exit status */

typedef struct tally {
    unsigned long long pairs, slow, bad_ref, bad_exact;
} tally;

/* the kernel's code of x: the fast path, else the exact one, as the kernel picks */
static int code_kernel(float x, float s, float qmax, int *slow)
{
    int bad = 0;
    const int c = code_fast(x, qz_rcp(s), qmax, &bad);
    *slow = bad;
    return bad ? qz_code(x, s, qmax) : c;
}

/* what the algorithm page (step 2: symmetric, round to nearest, clamp to
 * [-qmax, qmax]) says of any code, whatever the reference computes: |code| <=
 * qmax; code(-x) = -code(x); and where x / s lies in [-qmax, qmax], code is
 * within 1/2 of it, give or take the float division that precedes the
 * rounding (kernel and reference alike): fl(x / s) is within 2^-24 |x / s|
 * <= 2^-17 of x / s, so a quotient that close to a half-integer may round
 * either way (x / s = -126.5000007 gives -126.5, then -126). The quotient in
 * double is off by far less than the 1e-9 also allowed. Truncation, an
 * asymmetric rounding or a missing clamp all fail this. 0 when x or s is not
 * finite or s is not > 0 (no claim there). */
static int breaks_step2(int c, float x, float s, float qmax)
{
    if (!isfinite(x) || !isfinite(s) || !(s > 0.f)) return 0;
    int slow;
    if (abs(c) > (int)qmax || code_kernel(-x, s, qmax, &slow) != -c) return 1;
    const double q = (double)x / (double)s;
    return fabs(q) <= qmax && fabs(q - c) > 0.5 + 0x1p-17 + 1e-9;
}

static void check(tally *t, float x, float s, float qmax)
{
    int bad = 0;
    const int c = code_kernel(x, s, qmax, &bad);
    if (bad) t->slow++;
    t->pairs++;
    if (breaks_step2(c, x, s, qmax)) {
        mismatches++;
        if (mismatches < 20) printf("  STEP 2 BROKEN x=%a s=%a qmax=%g: code %d\n", x, s, qmax, c);
    }
    const int r = code_ref(x, s, qmax), e = qz_code(x, s, qmax);
    if (c != r || c != e) {
        mismatches++;
        if (c != r) t->bad_ref++;
        if (c != e) t->bad_exact++;
        if (t->bad_ref + t->bad_exact < 20)
            printf("  MISMATCH x=%a s=%a qmax=%g: new %d ref %d exact %d (fast path %s)\n", x, s, qmax, c, r, e,
                   bad ? "declined" : "accepted");
    }
}

/* a random positive float whose exponent is uniform over the normal range,
 * now and then a subnormal or one near the top */
static float rand_am(void)
{
    const uint64_t u = rng_next();
    const uint32_t m = (uint32_t)(u & 0x7fffff);
    const unsigned pick = (unsigned)(u >> 56);
    if (pick < 4) return bits_f(m | 1u); /* subnormal */
    if (pick < 8) return bits_f(0x7f000000u | m); /* 2^127 .. FLT_MAX */
    return bits_f((uint32_t)(1 + (u >> 23) % 253) << 23 | m);
}

/* x with |x| <= am, four ways (kind): a uniform fraction of am; random bits
 * below am (so every exponent down to subnormals); next to a half-integer
 * multiple of s, a few ulps either side (where rounding is decided); at the
 * edge of the refused band, where an accepted product is closest to a wrong
 * rounding */
#define KINDS 4
static const char *const kind_name[KINDS] = {"uniform", "random bits", "half-integer +-4 ulp", "band edge"};
static float rand_x(float am, float s, float qmax, int kind)
{
    const uint64_t u = rng_next();
    float x;
    switch (kind) {
    case 0:
        x = (float)((double)(int32_t)(uint32_t)(u >> 32) / 2147483648.0) * am;
        break;
    case 1: {
        const uint32_t b = f_bits(am);
        x = bits_f((uint32_t)((u >> 32) % ((uint64_t)b + 1)));
        if (u & 4) x = -x;
        break;
    }
    default: {
        const int k = (int)((u >> 8) % (uint64_t)(2 * (int)qmax + 1)) - (int)qmax; /* -qmax .. qmax */
        x = ((float)k + 0.5f) * s;
        for (int j = (int)((u >> 40) % 9) - 4; j != 0; j += j > 0 ? -1 : 1) x = nextafterf(x, j > 0 ? INFINITY : -INFINITY);
        if (fabsf(x) > am) x = copysignf(am, x);
        break;
    }
    case 3: {
        const int k = (int)((u >> 8) % (uint64_t)(2 * (int)qmax + 1)) - (int)qmax;
        const double side = u & 1 ? 1.0 : -1.0, jitter = (double)((u >> 40) & 0xffff) / 65536.0 - 0.5;
        x = (float)(((double)k + 0.5 + side * 0x1p-13 * (1.0 + 0.02 * jitter)) * (double)s);
        if (fabsf(x) > am) x = copysignf(am, x);
        break;
    }
    }
    return x;
}

static void random_pairs(float qmax, unsigned long long n)
{
    tally t[KINDS] = {{0}};
    for (unsigned long long i = 0; i < n; i++) {
        const float am = rand_am(), s = am / qmax;
        const int kind = (int)(i % KINDS);
        check(&t[kind], rand_x(am, s, qmax, kind), s, qmax);
    }
    for (int k = 0; k < KINDS; k++)
        printf("random %s, QMAX %g: %llu pairs, %llu mismatches vs reference, %llu vs exact qz_code, slow path %.3g\n",
               kind_name[k], qmax, t[k].pairs, t[k].bad_ref, t[k].bad_exact, (double)t[k].slow / (double)t[k].pairs);
}

/* every positive float x <= am for one am in [1, 2): scaling am by a power of
 * two scales s by the same and fl(1/s) by its inverse, so q is the same for
 * every am of this mantissa in the normal range (and -x gives -q) */
static void sweep(float am, float qmax)
{
    tally t = {0};
    const float s = am / qmax;
    for (uint32_t b = 0; b <= f_bits(am); b++) check(&t, bits_f(b), s, qmax);
    printf("sweep am=%a QMAX %g: %llu x, %llu mismatches vs reference, %llu vs exact, slow path %.3g\n", am, qmax,
           t.pairs, t.bad_ref, t.bad_exact, (double)t.slow / (double)t.pairs);
}

static void edges(float qmax)
{
    tally t = {0};
    const float specials[] = {0.f, 0x1p-149f, 0x1p-140f, 0x1.8p-130f, FLT_MIN, 0x1p-126f * 127.f, 1.f, 1.5f,
                              127.f, 0x1p100f, 0x1p126f, 0x1.fffffep127f, FLT_MAX / 7.f, FLT_MAX / 127.f,
                              INFINITY};
    const int ns = (int)(sizeof specials / sizeof specials[0]);
    for (int a = 0; a < ns + 64; a++) {
        const float am = a < ns ? specials[a] : rand_am(), s = am / qmax;
        float xs[64];
        int n = 0;
        xs[n++] = am, xs[n++] = -am, xs[n++] = 0.f, xs[n++] = -0.f, xs[n++] = NAN, xs[n++] = -NAN;
        xs[n++] = INFINITY, xs[n++] = -INFINITY, xs[n++] = FLT_MAX, xs[n++] = 0x1p-149f, xs[n++] = -0x1p-149f;
        xs[n++] = nextafterf(am, 0.f), xs[n++] = am * 0.5f, xs[n++] = s, xs[n++] = s * 0.5f;
        for (int j = 0; j < 8; j++) xs[n++] = rand_x(am, s, qmax, j % KINDS);
        for (int j = 0; j < n; j++) check(&t, xs[j], s, qmax);
        /* every half-integer k + 1/2 (k = -qmax-1 .. qmax) times s, 6 ulps either side */
        for (int k = -(int)qmax - 1; k <= (int)qmax; k++) {
            float x = ((float)k + 0.5f) * s;
            for (int j = 0; j < 6; j++) x = nextafterf(x, -INFINITY);
            for (int j = 0; j < 13; j++, x = nextafterf(x, INFINITY)) check(&t, x, s, qmax);
        }
    }
    /* s = 0 with a NaN or an infinite x (am ignores NaN: a row of zeros and NaN has s = 0) */
    check(&t, NAN, 0.f, qmax), check(&t, INFINITY, 0.f, qmax), check(&t, 1.f, 0.f, qmax);
    printf("edges, QMAX %g: %llu pairs, %llu mismatches vs reference, %llu vs exact, slow path %.3g\n", qmax, t.pairs,
           t.bad_ref, t.bad_exact, (double)t.slow / (double)t.pairs);
}

/* the rate that matters for the kernel: rows of 128 normal deviates (as
 * centred Q or K are, roughly), s = max / qmax; a lane redoes its 8 codes
 * when one of them declines, a warp pays when any lane does */
static double gauss(void)
{
    const double u1 = ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
    const double u2 = (double)(rng_next() >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void gauss_rate(float qmax, int rows)
{
    unsigned long long el = 0, slow = 0, lanes = 0, lanes_slow = 0, warps = 0, warps_slow = 0, bad = 0;
    float x[256];
    for (int r = 0; r < rows; r += 2) { /* a warp of the Q path: two rows of 128, 8 elements a lane */
        int wslow = 0;
        for (int h = 0; h < 2; h++) {
            float am = 0.f;
            for (int e = 0; e < 128; e++) x[h * 128 + e] = (float)gauss(), am = fmaxf(am, fabsf(x[h * 128 + e]));
            const float s = am / qmax, rs = qz_rcp(s);
            for (int l = 0; l < 16; l++) {
                int lb = 0;
                for (int e = 0; e < 8; e++) {
                    int b = 0;
                    const int c = code_fast(x[h * 128 + l * 8 + e], rs, qmax, &b);
                    el++, slow += (unsigned)b, lb |= b;
                    if (!b && c != code_ref(x[h * 128 + l * 8 + e], s, qmax)) bad++, mismatches++;
                }
                lanes++, lanes_slow += (unsigned)lb, wslow |= lb;
            }
        }
        warps++, warps_slow += (unsigned)wslow;
    }
    printf("gaussian rows, QMAX %g: %llu elements, %llu accepted wrongly; declined: %.3g of elements, %.3g of lanes "
           "(8 codes), %.3g of warps (256 codes)\n",
           qmax, el, bad, (double)slow / (double)el, (double)lanes_slow / (double)lanes,
           (double)warps_slow / (double)warps);
}

int main(int argc, char **argv)
{
    char *e1 = NULL, *e2 = NULL;
    const unsigned long long millions = argc > 1 ? strtoull(argv[1], &e1, 10) : 200ull;
    const long nsweep = argc > 2 ? strtol(argv[2], &e2, 10) : 4;
    if ((e1 && (e1 == argv[1] || *e1 || argv[1][0] == '-' || millions > 100000)) ||
        (e2 && (e2 == argv[2] || *e2 || nsweep < 0 || nsweep > 64)) || argc > 3) {
        fprintf(stderr, "usage: qz_code_check [MILLIONS (default 200, at most 100000)] [SWEEPS (0..64, default 4)]\n");
        return 2;
    }
    const unsigned long long n = millions * 1000000ull;
    /* the check means nothing if the compiler fuses x * rs + c into an FMA */
    volatile float a = 1.f + 0x1p-12f, c = -(1.f + 0x1p-11f);
    if (a * a + c != 0.f) {
        printf("a * b + c was fused: build with -ffp-contract=off\n");
        return 1;
    }
    const float qm[2] = {127.f, 7.f};
    for (int i = 0; i < 2; i++) {
        edges(qm[i]);
        random_pairs(qm[i], n);
        gauss_rate(qm[i], 1 << 18);
        for (int j = 0; j < nsweep; j++) sweep(1.f + (float)(rng_next() >> 41) * 0x1p-23f, qm[i]);
    }
    if (mismatches) printf("FAILED: %llu mismatches\n", mismatches);
    return mismatches ? 1 : 0;
}
