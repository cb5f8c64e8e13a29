/* test_reference.c — the CPU reference of SALE (src/reference.c), the input
 * generator (src/generate.c) and the host half conversions (src/halfconv.c):
 * dense exactness against a naive fp64 attention, the block-visiting and
 * selection rules, statistics, argument checks and the generator's structure. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sale.h"

/* ------------------------------------------------------------ helpers */

typedef struct tcase {
    sale_attention_args a;
    void *q, *k, *v, *o;
    float *lse;
    uint32_t *mask;
    sale_stats st;
    double *dph;
    size_t esz;
} tcase;

static size_t dt_size(sale_dtype dt)
{
    return dt == SALE_DTYPE_F32 ? 4 : 2;
}

static void tc_init(tcase *t, int B, int Hq, int Hkv, int N, int D, sale_dtype dt)
{
    memset(t, 0, sizeof *t);
    sale_attention_args_init(&t->a);
    t->a.batch = B;
    t->a.heads_q = Hq;
    t->a.heads_kv = Hkv;
    t->a.seq_len = N;
    t->a.head_dim = D;
    t->a.dtype = dt;
    t->esz = dt_size(dt);
    t->q = calloc((size_t)B * Hq * N * D, t->esz);
    t->k = calloc((size_t)B * Hkv * N * D, t->esz);
    t->v = calloc((size_t)B * Hkv * N * D, t->esz);
    cr_assert(t->q && t->k && t->v);
    t->a.q = t->q;
    t->a.k = t->k;
    t->a.v = t->v;
}

/* Allocate outputs for the current block sizes (call after setting them). */
static void tc_outputs(tcase *t)
{
    sale_attention_args *a = &t->a;
    size_t BH = (size_t)a->batch * a->heads_q;
    int nkw = (sale_num_kblocks(a) + 31) / 32;
    free(t->o);
    free(t->lse);
    free(t->mask);
    free(t->dph);
    t->o = calloc(BH * a->seq_len * a->head_dim, t->esz);
    t->lse = calloc(BH * a->seq_len, sizeof(float));
    t->mask = calloc(BH * sale_num_qblocks(a) * nkw, sizeof(uint32_t));
    t->dph = calloc(BH, sizeof(double));
    cr_assert(t->o && t->lse && t->mask && t->dph);
    memset(&t->st, 0, sizeof t->st);
    t->st.density_per_head = t->dph;
    a->out = t->o;
    a->lse = t->lse;
    a->mask = t->mask;
    a->stats = &t->st;
}

static void tc_free(tcase *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
    free(t->o);
    free(t->lse);
    free(t->mask);
    free(t->dph);
}

static size_t mask_words(const sale_attention_args *a)
{
    return (size_t)a->batch * a->heads_q * sale_num_qblocks(a) * ((sale_num_kblocks(a) + 31) / 32);
}

static int bit(const uint32_t *row, int J)
{
    return (row[J / 32] >> (J % 32)) & 1u;
}

static float getf(const void *base, sale_dtype dt, size_t i)
{
    if (dt == SALE_DTYPE_F16)
        return sale_f16_to_f32(((const uint16_t *)base)[i]);
    if (dt == SALE_DTYPE_BF16)
        return sale_bf16_to_f32(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

static float urand(uint64_t *s) /* [-1, 1) */
{
    return (float)((double)lcg(s) / 4503599627370496.0 - 1.0);
}

static void fill_f32(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f * urand(&seed);
}

static void gen(tcase *t, uint64_t seed, int structured, int needles, sale_needle *nd, int maxn, int *nn)
{
    sale_gen_options g = {0};
    g.seed = seed;
    g.structured = structured;
    g.needles = needles;
    cr_assert_eq(sale_generate_qkv(&t->a, &g, t->q, t->k, t->v, nd, maxn, nn), SALE_OK);
}

/* Naive causal attention in fp64 on contiguous-by-stride inputs; if mask is
 * given, only the kept blocks (bk keys each) take part. */
static void naive(const sale_attention_args *a, const int64_t qs[3], const int64_t ks[3], int b, int h, int i,
                  const uint32_t *mrow, int bk, double *out, double *lse)
{
    int D = a->head_dim, kvh = h / (a->heads_q / a->heads_kv);
    double scale = a->scale > 0 ? a->scale : 1.0 / sqrt((double)D);
    double *s = malloc(sizeof(double) * (i + 1));
    double mx = -INFINITY;
    for (int j = 0; j <= i; j++) {
        s[j] = -INFINITY;
        if (mrow && !bit(mrow, j / bk))
            continue;
        double acc = 0;
        for (int d = 0; d < D; d++)
            acc += (double)getf(a->q, a->dtype, b * qs[0] + h * qs[1] + i * qs[2] + d) *
                   (double)getf(a->k, a->dtype, b * ks[0] + kvh * ks[1] + j * ks[2] + d);
        s[j] = acc * scale;
        if (s[j] > mx)
            mx = s[j];
    }
    double l = 0;
    for (int d = 0; d < D; d++)
        out[d] = 0;
    for (int j = 0; j <= i; j++) {
        if (s[j] == -INFINITY)
            continue;
        double p = exp(s[j] - mx);
        l += p;
        for (int d = 0; d < D; d++) /* v uses the k strides */
            out[d] += p * getf(a->v, a->dtype, b * ks[0] + kvh * ks[1] + j * ks[2] + d);
    }
    for (int d = 0; d < D; d++)
        out[d] /= l;
    *lse = mx + log(l);
    free(s);
}

static double rel_l1(const void *x, const void *ref, sale_dtype dt, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r = getf(ref, dt, i);
        num += fabs(getf(x, dt, i) - r);
        den += fabs(r);
    }
    return num / den;
}

/* ------------------------------------------------------ half conversions */

Test(halfconv, f16_rounds_known_values)
{
    cr_expect_eq(sale_f32_to_f16(1.0f), 0x3c00);
    cr_expect_eq(sale_f32_to_f16(-2.0f), 0xc000);
    cr_expect_eq(sale_f32_to_f16(65504.0f), 0x7bff);
    cr_expect_eq(sale_f32_to_f16(65519.0f), 0x7bff);
    cr_expect_eq(sale_f32_to_f16(65520.0f), 0x7c00); /* tie rounds to even: Inf */
    cr_expect_eq(sale_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00); /* tie to even (down) */
    cr_expect_eq(sale_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie to even (up) */
    cr_expect_eq(sale_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    cr_expect_eq(sale_f32_to_f16(ldexpf(1, -14)), 0x0400);
    cr_expect_eq(sale_f32_to_f16(ldexpf(1, -24)), 0x0001);
    cr_expect_eq(sale_f32_to_f16(ldexpf(1, -25)), 0x0000); /* tie to even zero */
    cr_expect_eq(sale_f32_to_f16(1.5f * ldexpf(1, -25)), 0x0001);
    cr_expect_eq(sale_f32_to_f16(3 * ldexpf(1, -25)), 0x0002); /* 1.5 ulp: tie to even 2 */
    cr_expect_eq(sale_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -25)), 0x0400); /* rounds up into normals */
    cr_expect_eq(sale_f32_to_f16(-0.0f), 0x8000);
    cr_expect_eq(sale_f32_to_f16(-INFINITY), 0xfc00);
    cr_expect_eq(sale_f32_to_f16(1e10f), 0x7c00);
    uint16_t n = sale_f32_to_f16(NAN);
    cr_expect((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0, "NaN -> %04x", n);
    cr_expect_float_eq(sale_f16_to_f32(0x0001), ldexpf(1, -24), 0);
    cr_expect_float_eq(sale_f16_to_f32(0x03ff), 1023 * ldexpf(1, -24), 0);
    cr_expect_float_eq(sale_f16_to_f32(0xfbff), -65504.0f, 0);
    cr_expect(isinf(sale_f16_to_f32(0x7c00)));
    cr_expect(isnan(sale_f16_to_f32(0x7e01)));
}

Test(halfconv, f16_and_bf16_round_trip_every_value)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sale_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            cr_assert(isnan(sale_f16_to_f32(sale_f32_to_f16(f))));
            continue;
        }
        cr_assert_eq(sale_f32_to_f16(f), h, "f16 %04x", h);
        float g = sale_bf16_to_f32((uint16_t)h);
        if (isnan(g))
            cr_assert(isnan(sale_bf16_to_f32(sale_f32_to_bf16(g))));
        else
            cr_assert_eq(sale_f32_to_bf16(g), h, "bf16 %04x", h);
    }
}

Test(halfconv, bf16_rounds_known_values)
{
    cr_expect_eq(sale_f32_to_bf16(1.0f), 0x3f80);
    cr_expect_eq(sale_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);     /* tie to even (down) */
    cr_expect_eq(sale_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82); /* tie to even (up) */
    cr_expect_eq(sale_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    cr_expect_eq(sale_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds to Inf */
    cr_expect_eq(sale_f32_to_bf16(-INFINITY), 0xff80);
    cr_expect_eq(sale_f32_to_bf16(ldexpf(1, -133)), 0x0001); /* subnormal kept */
    uint16_t n = sale_f32_to_bf16(NAN);
    cr_expect((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0, "NaN -> %04x", n);
    /* a NaN whose payload sits only in the low bits must stay NaN */
    uint32_t u = 0x7f800001u;
    float f;
    memcpy(&f, &u, 4);
    cr_expect(isnan(sale_bf16_to_f32(sale_f32_to_bf16(f))));
}

#ifdef __FLT16_MAX__
Test(halfconv, f16_matches_the_compiler_on_many_floats)
{
    for (uint64_t u = 0; u < 0x100000000ull; u += 7919) {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        _Float16 h = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        if (isnan(f))
            continue;
        cr_assert_eq(sale_f32_to_f16(f), hb, "bits %08x", b);
    }
}
#endif

/* ------------------------------------------------------- dense exactness */

Test(reference, dense_matches_naive_fp64)
{
    static const int lens[] = {1, 63, 64, 65, 200};
    for (int c = 0; c < 5; c++) {
        int N = lens[c], D = 64, Hq = 4, Hkv = 1, B = 2;
        tcase t;
        tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F32);
        fill_f32(t.q, (size_t)B * Hq * N * D, 1 + c);
        fill_f32(t.k, (size_t)B * Hkv * N * D, 100 + c);
        fill_f32(t.v, (size_t)B * Hkv * N * D, 200 + c);
        t.a.mode = SALE_MODE_DENSE;
        tc_outputs(&t);
        cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
        int64_t qs[3] = {(int64_t)Hq * N * D, (int64_t)N * D, D}, ks[3] = {(int64_t)Hkv * N * D, (int64_t)N * D, D};
        double ref[64], lse, worst = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < Hq; h++)
                for (int i = 0; i < N; i++) {
                    naive(&t.a, qs, ks, b, h, i, NULL, 32, ref, &lse);
                    size_t row = ((size_t)(b * Hq + h) * N + i);
                    for (int d = 0; d < D; d++) {
                        double e = fabs(((float *)t.o)[row * D + d] - ref[d]);
                        worst = e > worst ? e : worst;
                    }
                    cr_assert(fabs(t.lse[row] - lse) < 1e-5, "N=%d lse %g vs %g", N, t.lse[row], lse);
                }
        cr_assert(worst < 1e-5, "N=%d worst abs error %g", N, worst);
        cr_assert_eq(t.st.density, 1.0);
        tc_free(&t);
    }
}

Test(reference, strided_inputs_and_outputs)
{
    int B = 2, Hq = 4, Hkv = 2, N = 130, D = 64, pad = 16;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F32);
    /* padded copies: rows of D+pad floats */
    int64_t rs = D + pad;
    float *qp = calloc((size_t)B * Hq * N * rs, 4), *kp = calloc((size_t)B * Hkv * N * rs, 4),
          *vp = calloc((size_t)B * Hkv * N * rs, 4), *op = calloc((size_t)B * Hq * N * rs, 4);
    fill_f32(qp, (size_t)B * Hq * N * rs, 7);
    fill_f32(kp, (size_t)B * Hkv * N * rs, 8);
    fill_f32(vp, (size_t)B * Hkv * N * rs, 9);
    for (size_t r = 0; r < (size_t)B * Hq * N; r++)
        memcpy((float *)t.q + r * D, qp + r * rs, D * 4);
    for (size_t r = 0; r < (size_t)B * Hkv * N; r++) {
        memcpy((float *)t.k + r * D, kp + r * rs, D * 4);
        memcpy((float *)t.v + r * D, vp + r * rs, D * 4);
    }
    t.a.dense_below = -1;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);

    sale_attention_args s = t.a;
    s.q = qp;
    s.k = kp;
    s.v = vp;
    s.out = op;
    s.q_stride[2] = s.k_stride[2] = s.v_stride[2] = s.o_stride[2] = rs;
    s.stats = NULL;
    s.lse = NULL;
    s.mask = NULL;
    cr_assert_eq(sale_reference_attention(NULL, &s), SALE_OK);
    for (size_t r = 0; r < (size_t)B * Hq * N; r++)
        cr_assert(memcmp((float *)t.o + r * D, op + r * rs, D * 4) == 0, "row %zu", r);
    free(qp);
    free(kp);
    free(vp);
    free(op);
    tc_free(&t);
}

Test(reference, tau_near_zero_equals_dense)
{
    int B = 1, Hq = 4, Hkv = 2, N = 1500, D = 64;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F16);
    gen(&t, 42, 1, 0, NULL, 0, NULL);
    float tau[4] = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
    t.a.tau = tau;
    t.a.dense_below = -1;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);

    tcase d = t;
    d.o = d.lse = NULL;
    d.mask = NULL;
    d.dph = NULL;
    tc_outputs(&d);
    d.a.tau = NULL;
    d.a.mode = SALE_MODE_DENSE;
    cr_assert_eq(sale_reference_attention(NULL, &d.a), SALE_OK);

    /* SALE scores against the centred keys K' = f16(K - kmean) (units fix),
     * dense against K: equal up to the rounding of K' */
    size_t n = (size_t)B * Hq * N * D;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        float x = sale_f16_to_f32(((uint16_t *)t.o)[i]), y = sale_f16_to_f32(((uint16_t *)d.o)[i]);
        num += fabs((double)x - y);
        den += fabs((double)y);
    }
    cr_assert(num / den < 2e-3, "outputs differ: rel L1 %g", num / den);
    for (size_t i = 0; i < (size_t)B * Hq * N; i++)
        cr_assert(fabsf(t.lse[i] - d.lse[i]) < 1e-3f * fmaxf(1.0f, fabsf(d.lse[i])), "lse %zu: %g vs %g", i,
                  (double)t.lse[i], (double)d.lse[i]);
    cr_assert(memcmp(t.mask, d.mask, mask_words(&t.a) * 4) == 0, "masks differ");
    cr_assert_eq(t.st.density, 1.0);
    cr_assert_eq(t.st.kept_blocks, d.st.kept_blocks);

    /* and the default tau does skip blocks on the same inputs */
    t.a.tau = NULL;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert(t.st.density < 1.0, "density %g", t.st.density);
    free(d.o);
    free(d.lse);
    free(d.mask);
    free(d.dph);
    tc_free(&t);
}

Test(reference, two_pass_and_fused_agree)
{
    tcase t;
    tc_init(&t, 1, 2, 1, 1200, 64, SALE_DTYPE_BF16);
    gen(&t, 5, 1, 0, NULL, 0, NULL);
    t.a.dense_below = -1;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    void *o1 = malloc((size_t)2 * 1200 * 64 * 2);
    memcpy(o1, t.o, (size_t)2 * 1200 * 64 * 2);
    t.a.mode = SALE_MODE_TWO_PASS;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert(memcmp(o1, t.o, (size_t)2 * 1200 * 64 * 2) == 0);
    /* version 0 (plain) is the same algorithm: the same reference result */
    t.a.mode = SALE_MODE_PLAIN;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert(memcmp(o1, t.o, (size_t)2 * 1200 * 64 * 2) == 0);
    free(o1);
    tc_free(&t);
}

/* ----------------------------------------------------- selection rules */

/* Every query block keeps the blocks of its diagonal and of the W keys before
 * it, the remainder of the middle that does not fill a segment, and block 0;
 * nothing beyond the diagonal. */
static void check_local_and_sink(int bq, int bk, int S, int W)
{
    int B = 1, Hq = 2, Hkv = 1, N = 2048, D = 64;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F16);
    gen(&t, 11, 1, 0, NULL, 0, NULL);
    t.a.block_q = bq;
    t.a.block_k = bk;
    t.a.block_seg = S;
    t.a.local_window = W;
    t.a.tau_default = 0.5f;
    t.a.dense_below = -1;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    int nqb = sale_num_qblocks(&t.a), nkb = sale_num_kblocks(&t.a), nkw = (nkb + 31) / 32;
    int skipped = 0;
    for (int h = 0; h < Hq; h++)
        for (int qb = 0; qb < nqb; qb++) {
            const uint32_t *row = t.mask + ((size_t)h * nqb + qb) * nkw;
            int i0 = qb * bq, i1 = i0 + bq < N ? i0 + bq : N;
            int hi = (i1 - 1) / bk;
            int lo = (i0 - W < 0 ? 0 : i0 - W) / bk;
            if (lo > 1) /* the partial segment next to the local region is local too */
                lo -= (lo - 1) % (S / bk);
            cr_assert(bit(row, 0), "sink, h=%d qb=%d", h, qb);
            for (int J = lo; J <= hi; J++)
                cr_assert(bit(row, J), "local block %d, h=%d qb=%d", J, h, qb);
            for (int J = hi + 1; J < nkb; J++)
                cr_assert(!bit(row, J), "non-causal block %d, h=%d qb=%d", J, h, qb);
            for (int J = 1; J < lo; J++)
                skipped += !bit(row, J);
        }
    cr_assert(skipped > 0, "tau=0.5 skipped nothing");
    tc_free(&t);
}

Test(reference, local_region_and_sink_always_kept)
{
    check_local_and_sink(64, 32, 128, 128);
    check_local_and_sink(16, 16, 64, 32);
    check_local_and_sink(128, 64, 256, 64);
    check_local_and_sink(48, 16, 512, 16);
}

Test(reference, planted_needle_is_kept)
{
    int B = 1, Hq = 4, Hkv = 2, N = 4096, D = 64;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F16);
    sale_needle nd[8];
    int nn = 0;
    gen(&t, 2024, 1, 2, nd, 8, &nn);
    cr_assert_eq(nn, 8);
    t.a.tau_default = 0.05f;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    int nqb = sale_num_qblocks(&t.a), nkw = (sale_num_kblocks(&t.a) + 31) / 32;
    for (int n = 0; n < nn; n++) {
        int qb = nd[n].query / 64, J = nd[n].key / 32;
        /* far from the local region: only the estimate can keep it */
        cr_assert(nd[n].key < qb * 64 - 128 - 128, "needle %d not far enough", n);
        const uint32_t *row = t.mask + ((size_t)(nd[n].batch * Hq + nd[n].head_q) * nqb + qb) * nkw;
        cr_assert(bit(row, J), "needle %d (h=%d i=%d j=%d) dropped", n, nd[n].head_q, nd[n].query, nd[n].key);
    }
    cr_assert(t.st.density < 0.5, "density %g", t.st.density);
    tc_free(&t);
}

static int popcount32(uint32_t x)
{
    int c = 0;
    for (; x; x &= x - 1)
        c++;
    return c;
}

Test(reference, statistics_add_up)
{
    int B = 2, Hq = 4, Hkv = 2, N = 3000, D = 64, bq = 48, bk = 32;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_BF16);
    gen(&t, 9, 1, 0, NULL, 0, NULL);
    t.a.block_q = bq;
    t.a.block_k = bk;
    t.a.dense_below = -1;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    int nqb = sale_num_qblocks(&t.a), nkb = sale_num_kblocks(&t.a), nkw = (nkb + 31) / 32;
    cr_assert_eq(nqb, (N + bq - 1) / bq);
    cr_assert_eq(nkb, (N + bk - 1) / bk);
    int64_t kept = 0, causal_head = 0;
    for (int qb = 0; qb < nqb; qb++) {
        int i1 = (qb + 1) * bq < N ? (qb + 1) * bq : N;
        causal_head += (i1 - 1) / bk + 1;
    }
    for (int bh = 0; bh < B * Hq; bh++) {
        int64_t kh = 0;
        for (size_t w = 0; w < (size_t)nqb * nkw; w++)
            kh += popcount32(t.mask[(size_t)bh * nqb * nkw + w]);
        kept += kh;
        cr_assert_float_eq(t.dph[bh], (double)kh / causal_head, 1e-12);
    }
    cr_assert_eq(t.st.kept_blocks, kept);
    cr_assert_eq(t.st.causal_blocks, causal_head * B * Hq);
    cr_assert_float_eq(t.st.density, (double)kept / (causal_head * B * Hq), 1e-12);
    cr_assert(t.st.density > 0 && t.st.density <= 1.0);
    cr_assert(t.st.density < 1.0);
    cr_assert_eq(t.st.dense_fallback, 0);
    tc_free(&t);
}

/* N=256, Bq=Bk=16, S=32 (2 blocks a segment), W=16, tau=0.5, D=64, scale 1/8.
 * Every query is e0; every key is 0 except key 100 = 64*e0 (block 6).
 * Smoothing: qmean = e0 so Q' = 0, codes and sq are 0; kmean = 0.25*e0 so
 * c_j = -0.25 for every key but c_100 = 63.75, and ŝ_ij = c_j exactly.
 * Before block 6 is seen, m = 0 and l = (number of keys seen) in 17..256, so
 * t = 8*ln(0.5*l) lies in [16.6, 38.9]: -0.25 fails, 63.75 passes. Once block 6
 * is kept, m = 64, l ~ 1 and t ~ 59: -0.25 fails again.
 * Query block qb: local = diagonal qb and qb-1 (the W keys before), plus
 * qb-2 when the middle 1..qb-2 has odd length (remainder of a segment);
 * sink 0; block 6 through its segment [5,6] once that segment is whole,
 * i.e. qb >= 8. */
Test(reference, hand_checked_mask)
{
    int N = 256, D = 64;
    for (int bits = 4; bits <= 8; bits += 4) {
        tcase t;
        tc_init(&t, 1, 1, 1, N, D, SALE_DTYPE_F32);
        float *q = t.q, *k = t.k;
        for (int i = 0; i < N; i++)
            q[(size_t)i * D] = 1.0f;
        k[(size_t)100 * D] = 64.0f;
        fill_f32(t.v, (size_t)N * D, 77);
        t.a.block_q = 16;
        t.a.block_k = 16;
        t.a.block_seg = 32;
        t.a.local_window = 16;
        t.a.tau_default = 0.5f;
        t.a.est_bits = bits;
        t.a.dense_below = -1;
        tc_outputs(&t);
        cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
        static const uint32_t expect[16] = {
            0x0001, 0x0003, 0x0007, 0x000f, 0x0019, 0x0039, 0x0061, 0x00e1,
            0x01c1, 0x03c1, 0x0641, 0x0e41, 0x1841, 0x3841, 0x6041, 0xe041,
        };
        int64_t kept = 0;
        for (int qb = 0; qb < 16; qb++) {
            cr_assert_eq(t.mask[qb], expect[qb], "est_bits %d qb %d: mask %04x, expected %04x", bits, qb,
                         t.mask[qb], expect[qb]);
            kept += popcount32(expect[qb]);
        }
        cr_assert_eq(t.st.kept_blocks, kept);
        cr_assert_eq(t.st.causal_blocks, 136);
        /* the output is exact attention over the kept blocks */
        int64_t st[3] = {(int64_t)N * D, (int64_t)N * D, D};
        double ref[64], lse;
        for (int i = 0; i < N; i++) {
            naive(&t.a, st, st, 0, 0, i, t.mask + i / 16, 16, ref, &lse);
            for (int d = 0; d < D; d++)
                cr_assert(fabs(((float *)t.o)[(size_t)i * D + d] - ref[d]) < 1e-5, "row %d", i);
            cr_assert(fabs(t.lse[i] - lse) < 1e-5, "lse row %d", i);
        }
        tc_free(&t);
    }
}

/* ------------------------------------------------------ args and modes */

Test(reference, bad_arguments_are_invalid)
{
    tcase t;
    tc_init(&t, 1, 4, 2, 64, 64, SALE_DTYPE_F16);
    tc_outputs(&t);
    sale_attention_args ok = t.a, a;
    cr_assert_eq(sale_reference_attention(NULL, &ok), SALE_OK);
    cr_assert_eq(sale_reference_attention(NULL, NULL), SALE_ERR_INVALID);
#define BAD(stmt)                                                                                                    \
    do {                                                                                                             \
        a = ok;                                                                                                      \
        stmt;                                                                                                        \
        cr_expect_eq(sale_reference_attention(NULL, &a), SALE_ERR_INVALID, "%s accepted", #stmt);                   \
    } while (0)
    BAD(a.q = NULL);
    BAD(a.k = NULL);
    BAD(a.v = NULL);
    BAD(a.out = NULL);
    BAD(a.heads_kv = 3);
    BAD(a.heads_kv = 0);
    BAD(a.batch = 0);
    BAD(a.seq_len = 0);
    BAD(a.head_dim = 96);
    BAD(a.block_q = 24);
    BAD(a.block_q = 144);
    BAD(a.block_k = 8);
    BAD(a.block_k = 40);
    BAD((a.block_k = 32, a.block_seg = 48));
    BAD((a.block_k = 16, a.block_seg = 16 * 33, a.local_window = 32));
    BAD(a.local_window = 40);
    BAD(a.est_bits = 6);
    BAD(a.q_stride[2] = 32);
    BAD(a.o_stride[1] = 8);
    BAD(a.k_stride[0] = -64);
    BAD(a.dtype = (sale_dtype)7);
    BAD(a.mode = (sale_mode)9);
    BAD(a.scale = -1.0f);
    BAD(a.tau_default = NAN);
#undef BAD
    tc_free(&t);
}

Test(reference, error_message_names_the_field)
{
    sale_ctx *ctx = NULL;
    sale_options opts = {0};
    opts.cache_path = ":memory:";
    if (sale_create(&ctx, &opts) != SALE_OK) {
        sale_destroy(ctx);
        cr_skip_test("no context: %s", ctx ? sale_last_error(ctx) : "out of memory");
    }
    tcase t;
    tc_init(&t, 1, 4, 2, 64, 64, SALE_DTYPE_F16);
    tc_outputs(&t);
    static const char *const field[] = {"head_dim", "block_seg", "heads_kv", "k_stride", "est_bits"};
    for (int c = 0; c < 5; c++) {
        sale_attention_args a = t.a;
        if (c == 0)
            a.head_dim = 80;
        else if (c == 1)
            a.block_seg = 100;
        else if (c == 2)
            a.heads_kv = 3;
        else if (c == 3)
            a.k_stride[2] = 10;
        else
            a.est_bits = 2;
        cr_expect_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
        cr_expect(strstr(sale_last_error(ctx), field[c]) != NULL, "'%s' does not name %s", sale_last_error(ctx),
                  field[c]);
    }
    tc_free(&t);
    sale_destroy(ctx);
}

Test(reference, short_input_falls_back_to_dense)
{
    tcase t;
    tc_init(&t, 1, 2, 1, 600, 64, SALE_DTYPE_F16);
    gen(&t, 3, 1, 0, NULL, 0, NULL);
    t.a.tau_default = 0.5f;
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert_eq(t.st.dense_fallback, 1);
    cr_assert_eq(t.st.density, 1.0);

    size_t n = (size_t)2 * 600 * 64 * 2;
    void *fb = malloc(n);
    memcpy(fb, t.o, n);
    t.a.mode = SALE_MODE_DENSE;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert_eq(t.st.dense_fallback, 0);
    cr_assert(memcmp(fb, t.o, n) == 0);

    t.a.mode = SALE_MODE_FUSED;
    t.a.dense_below = -1;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert_eq(t.st.dense_fallback, 0);
    cr_assert(t.st.density < 1.0);

    t.a.dense_below = 600; /* only strictly shorter inputs fall back */
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert_eq(t.st.dense_fallback, 0);
    t.a.dense_below = 601;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    cr_assert_eq(t.st.dense_fallback, 1);
    free(fb);
    tc_free(&t);
}

Test(reference, block_counts)
{
    sale_attention_args a;
    sale_attention_args_init(&a);
    cr_assert_eq(a.mode, SALE_MODE_AUTO);
    cr_assert_float_eq(a.tau_default, 0.004f, 0);
    a.seq_len = 1000;
    cr_assert_eq(sale_num_qblocks(&a), 16);
    cr_assert_eq(sale_num_kblocks(&a), 32);
    a.block_q = 128;
    a.block_k = 64;
    cr_assert_eq(sale_num_qblocks(&a), 8);
    cr_assert_eq(sale_num_kblocks(&a), 16);
    a.seq_len = 1;
    cr_assert_eq(sale_num_kblocks(&a), 1);
}

/* ------------------------------------------------------------ generator */

Test(generator, same_seed_same_bytes)
{
    for (int s = 0; s < 2; s++) {
        tcase t1, t2;
        tc_init(&t1, 2, 4, 2, 700, 64, SALE_DTYPE_BF16);
        tc_init(&t2, 2, 4, 2, 700, 64, SALE_DTYPE_BF16);
        sale_needle n1[16], n2[16];
        int c1, c2;
        gen(&t1, 77, s, 1, n1, 16, &c1);
        gen(&t2, 77, s, 1, n2, 16, &c2);
        size_t nq = (size_t)2 * 4 * 700 * 64 * 2, nk = (size_t)2 * 2 * 700 * 64 * 2;
        cr_assert(memcmp(t1.q, t2.q, nq) == 0 && memcmp(t1.k, t2.k, nk) == 0 && memcmp(t1.v, t2.v, nk) == 0);
        cr_assert_eq(c1, c2);
        cr_assert(memcmp(n1, n2, sizeof(sale_needle) * c1) == 0);
        gen(&t2, 78, s, 1, n2, 16, &c2);
        cr_assert(memcmp(t1.q, t2.q, nq) != 0 && memcmp(t1.k, t2.k, nk) != 0);
        tc_free(&t1);
        tc_free(&t2);
    }
}

Test(generator, needles_are_far_and_recorded)
{
    tcase t;
    tc_init(&t, 1, 4, 1, 2048, 64, SALE_DTYPE_F16);
    sale_needle nd[16];
    int nn;
    gen(&t, 1, 1, 3, nd, 16, &nn);
    cr_assert_eq(nn, 12);
    for (int n = 0; n < nn; n++) {
        cr_assert_eq(nd[n].head_q, n / 3);
        cr_assert(nd[n].query >= 1024 && nd[n].query < 2048);
        cr_assert(nd[n].key >= 32 && nd[n].key < nd[n].query - 4 * 64);
    }
    gen(&t, 1, 1, 3, nd, 5, &nn); /* capped by max_needles */
    cr_assert_eq(nn, 5);
    tc_free(&t);
}

/* The sink gets the largest average attention, and a planted needle takes
 * most of its row, in exact dense attention. */
Test(generator, structure_sink_and_needle)
{
    int N = 768, D = 64, Hq = 2;
    tcase t;
    tc_init(&t, 1, Hq, 1, N, D, SALE_DTYPE_F32);
    sale_needle nd[2];
    int nn;
    gen(&t, 31, 1, 1, nd, 2, &nn);
    cr_assert_eq(nn, 2);
    int64_t st[3] = {(int64_t)N * D, (int64_t)N * D, D};
    double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < Hq; h++) {
        double *avg = calloc(N, sizeof(double));
        double *s = malloc(sizeof(double) * N);
        for (int i = 0; i < N; i++) {
            double mx = -INFINITY, l = 0;
            for (int j = 0; j <= i; j++) {
                double acc = 0;
                for (int d = 0; d < D; d++)
                    acc += (double)((float *)t.q)[((size_t)h * N + i) * D + d] * ((float *)t.k)[(size_t)j * D + d];
                s[j] = acc * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j <= i; j++)
                l += exp(s[j] - mx);
            for (int j = 0; j <= i; j++)
                avg[j] += exp(s[j] - mx) / l / N;
            if (i == nd[h].query)
                cr_assert(exp(s[nd[h].key] - mx) / l > 0.5, "needle weight %g", exp(s[nd[h].key] - mx) / l);
        }
        for (int j = 1; j < N; j++)
            cr_assert(avg[0] > avg[j], "head %d: key %d avg %g >= sink %g", h, j, avg[j], avg[0]);
        free(avg);
        free(s);
    }
    (void)st;
    tc_free(&t);
}

/* ------------------------------------------------------------ accuracy */

Test(reference, sparse_close_to_dense_on_structured_inputs, .timeout = 600)
{
    int B = 1, Hq = 4, Hkv = 2, N = 4096, D = 128;
    tcase t;
    tc_init(&t, B, Hq, Hkv, N, D, SALE_DTYPE_F16);
    gen(&t, 123, 1, 1, NULL, 0, NULL);
    tc_outputs(&t);
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    double density = t.st.density;
    size_t n = (size_t)B * Hq * N * D;
    void *sparse = malloc(n * 2);
    memcpy(sparse, t.o, n * 2);
    t.a.mode = SALE_MODE_DENSE;
    cr_assert_eq(sale_reference_attention(NULL, &t.a), SALE_OK);
    double err = rel_l1(sparse, t.o, SALE_DTYPE_F16, n);
    cr_log_info("N=%d density %.4f rel L1 %.5f", N, density, err);
    cr_assert(density < 1.0, "density %g", density);
    cr_assert(err < 0.02, "relative L1 %g (density %g)", err, density);
    free(sparse);
    tc_free(&t);
}

/* seq_len above 2^30 (sale_attention_args: "at most 2^30") reached the
 * work buffers (about 256 GiB at head_dim 64: SALE_ERR_NOMEM, or an abort
 * under ASan); it is refused first, with sale_attention's status and
 * message. The tensors are never read, so small buffers stand in. */
Test(reference, seq_len_above_2_30_is_refused_as_sale_attention_refuses_it)
{
    sale_options so = {0};
    so.cache_path = ":memory:";
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &so), SALE_OK);
    float buf[64];
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 2, a.heads_kv = 2, a.head_dim = 64, a.dtype = SALE_DTYPE_F32;
    a.q = a.k = a.v = buf, a.out = buf;
    a.seq_len = (1 << 30) + 1;
    size_t ws = 0;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &ws), SALE_ERR_INVALID);
    char want[512];
    strncpy(want, sale_last_error(ctx), sizeof want - 1);
    want[sizeof want - 1] = 0;
    cr_assert(strstr(want, "seq_len"), "%s", want);
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert_str_eq(sale_last_error(ctx), want);
    a.dtype = SALE_DTYPE_F16; /* whatever the dtype, and with a->mode dense */
    a.mode = SALE_MODE_DENSE;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_reference_attention(NULL, &a), SALE_ERR_INVALID);
    sale_destroy(ctx);
}
