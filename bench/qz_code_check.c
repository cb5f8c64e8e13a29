/* qz_code_check.c — CPU check of the quantize kernel's fast code
 * path (templates/quantize.cu, qz_code_fast): x * fl(1/s), rounded, accepted
 * only when it is provably clamp(rint(x / s)), else the exact division.
 *   build: cc -O2 -ffp-contract=off -fno-fast-math bench/qz_code_check.c -lm   (the CMake build works too)
 * On x86-64 with SSE, float *, +, - and / are IEEE binary32 with round to
 * nearest even and subnormals kept, like __fmul_rn, __fadd_rn, __fsub_rn,
 * __fdiv_rn and __frcp_rn (1.0f / s) without -ftz, so the program computes the
 * same bits as the kernel. It compares the fast path plus its fallback with
 * the CPU reference's clamp(rintf(x / s)) (src/reference.c, quantize) and with
 * the kernel's exact qz_code, for QMAX 127 (8-bit) and 7 (4-bit), and prints
 * how often the fast path declines (the warp then redoes a lane's codes).
 *   usage: qz_code_check [millions of random pairs per QMAX, default 200] [sweeps, default 4] */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the band the fast path refuses around every half-integer: the kernel's QZ_HALF */
#define HALF (0.5f - 0x1p-13f)
#define MAGIC 12582912.f /* 1.5 * 2^23 */

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

/* the kernel's exact qz_code: clamp the quotient, then round with 1.5 * 2^23 */
static int code_exact(float x, float s, float qmax)
{
    if (s == 0.f) return 0;
    const float r = fminf(fmaxf(x / s, -qmax), qmax);
    return (int)(f_bits(r + MAGIC) - 0x4B400000u);
}

static float rcp(float s) { return s == 0.f ? 0.f : 1.0f / s; }

/* the kernel's qz_code_fast: *bad is set when the product may round otherwise
 * than x / s. The kernel returns t's bits and stores their low byte, which is
 * the low byte of the code returned here. */
static int code_fast(float x, float rs, float qmax, int *bad)
{
    const float q = x * rs;
    const float t = q + MAGIC, rq = t - MAGIC;
    if (!(fabsf(rq) <= qmax && fabsf(q - rq) <= HALF)) *bad = 1;
    return (int)(f_bits(t) - 0x4B400000u);
}

typedef struct tally {
    unsigned long long pairs, slow, bad_ref, bad_exact;
} tally;

static void check(tally *t, float x, float s, float qmax)
{
    int bad = 0;
    int c = code_fast(x, rcp(s), qmax, &bad);
    if (bad) c = code_exact(x, s, qmax), t->slow++;
    t->pairs++;
    const int r = code_ref(x, s, qmax), e = code_exact(x, s, qmax);
    if (c != r || c != e) {
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
            const float s = am / qmax, rs = rcp(s);
            for (int l = 0; l < 16; l++) {
                int lb = 0;
                for (int e = 0; e < 8; e++) {
                    int b = 0;
                    const int c = code_fast(x[h * 128 + l * 8 + e], rs, qmax, &b);
                    el++, slow += (unsigned)b, lb |= b;
                    if (!b && c != code_ref(x[h * 128 + l * 8 + e], s, qmax)) bad++;
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
    const unsigned long long n = (argc > 1 ? strtoull(argv[1], NULL, 10) : 200ull) * 1000000ull;
    const int nsweep = argc > 2 ? atoi(argv[2]) : 4;
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
    return 0;
}
