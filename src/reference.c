/* reference.c — the plain C reference of SALE (docs/sale-algorithm.md) on host
 * pointers: smoothing, low-bit estimation, Relative-Attention-Score selection
 * and exact online-softmax attention. Every GPU kernel is checked against it,
 * so the arithmetic orders that kernels must match are spelled out below
 * (templates/plain.cu, version 0, follows them operation by operation).
 * fp32 math, fp64 for means and softmax denominators; threads over (b, head),
 * each task writes only its own rows, so results do not depend on threads. */
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sale.h"

#define REF_MAX_THREADS 16

/* ------------------------------------------------------------- defaults */

void sale_attention_args_init(sale_attention_args *a)
{
    if (!a)
        return;
    memset(a, 0, sizeof *a);
    a->mode = SALE_MODE_AUTO;
    a->tau_default = 0.004f;
}


static int def_int(int v, int d)
{
    return v ? v : d;
}

int sale_num_qblocks(const sale_attention_args *a)
{
    if (!a || a->seq_len < 1)
        return 0;
    int bq = def_int(a->block_q, 64);
    if (bq <= 0)
        return 0;
    return (int)(((int64_t)a->seq_len + bq - 1) / bq); /* no int overflow at seq_len near INT_MAX */
}

int sale_num_kblocks(const sale_attention_args *a)
{
    if (!a || a->seq_len < 1)
        return 0;
    int bk = def_int(a->block_k, 32);
    if (bk <= 0)
        return 0;
    return (int)(((int64_t)a->seq_len + bk - 1) / bk);
}

int strides_resolve(const int64_t st[3], int B, int H, int N, int D, int elem, int64_t s[3])
{
    int64_t e, t;
    s[2] = st[2] ? st[2] : D;
    if (st[1])
        s[1] = st[1];
    else if (__builtin_mul_overflow((int64_t)N, s[2], &s[1]))
        return -1;
    if (st[0])
        s[0] = st[0];
    else if (__builtin_mul_overflow((int64_t)H, s[1], &s[0]))
        return -1;
    if (__builtin_mul_overflow(s[0], (int64_t)B - 1, &e) || __builtin_mul_overflow(s[1], (int64_t)H - 1, &t) ||
        __builtin_add_overflow(e, t, &e) || __builtin_mul_overflow(s[2], (int64_t)N - 1, &t) ||
        __builtin_add_overflow(e, t, &e) || __builtin_add_overflow(e, (int64_t)D, &e) ||
        __builtin_mul_overflow(e, (int64_t)elem, &e))
        return -1;
    return 0;
}

/* ----------------------------------------------------------------- plan */

/* The arguments after defaults and validation, shared read-only by workers. */
typedef struct ref_plan {
    const sale_attention_args *a;
    int B, Hq, Hkv, N, D, group;
    int bq, bk, bs, sb, W, qmax;
    int thr_fixed;  /* SALE_THR_FIXED: t_i once, before the first segment */
    int nqb, nkb, nkw;
    int all_dense;  /* mode DENSE or the short-input fallback */
    float scale;
    float *tau;     /* [Hq] resolved */
    int64_t qs[3], ks[3], vs[3], os[3];
    int64_t *kept;  /* [B*Hq] per task */
    int64_t *causal;
    atomic_int next;
    atomic_int failed; /* a worker could not allocate */
    uint32_t *near;    /* optional: estimated blocks whose decision is within band of the threshold */
    float band;
} ref_plan;

/* Returns the level (0 batch, 1 head, 2 row) of a stride below head_dim, 3
 * when the tensor's offsets (B, H, N, D) would not fit int64, or -1. */
static int resolve_strides(const int64_t in[3], int B, int H, int N, int D, int64_t out[3])
{
    if (strides_resolve(in, B, H, N, D, 4, out)) /* in bytes of an f32, the widest dtype */
        return 3;
    for (int i = 0; i < 3; i++)
        if (out[i] < D)
            return i;
    return -1;
}

static sale_status fail(sale_ctx *ctx, const char *msg, int v)
{
    sale_set_error(ctx, msg, v);
    return SALE_ERR_INVALID;
}

static sale_status plan_make(sale_ctx *ctx, const sale_attention_args *a, ref_plan *p)
{
    memset(p, 0, sizeof *p);
    if (!a) {
        sale_set_error(ctx, "args: NULL");
        return SALE_ERR_INVALID;
    }
    p->a = a;
    if (a->batch < 1)
        return fail(ctx, "batch: must be >= 1, got %d", a->batch);
    if (a->heads_q < 1)
        return fail(ctx, "heads_q: must be >= 1, got %d", a->heads_q);
    if (a->heads_kv < 1)
        return fail(ctx, "heads_kv: must be >= 1, got %d", a->heads_kv);
    if (a->heads_q % a->heads_kv)
        return fail(ctx, "heads_kv: must divide heads_q (%d)", a->heads_q);
    if (a->seq_len < 1)
        return fail(ctx, "seq_len: must be >= 1, got %d", a->seq_len);
    /* sale_attention_args: "seq_len at most 2^30", as sale_attention refuses
     * it (SALE_MAX_SEQ_LEN, internal.h), before any work buffer */
    if (a->seq_len > SALE_MAX_SEQ_LEN) {
        sale_set_error(ctx, "seq_len: %d is too large (at most %d)", a->seq_len, SALE_MAX_SEQ_LEN);
        return SALE_ERR_INVALID;
    }
    if (a->head_dim != 64 && a->head_dim != 128 && a->head_dim != 256)
        return fail(ctx, "head_dim: must be 64, 128 or 256, got %d", a->head_dim);
    if (a->dtype != SALE_DTYPE_F16 && a->dtype != SALE_DTYPE_BF16 && a->dtype != SALE_DTYPE_F32)
        return fail(ctx, "dtype: unknown value %d", (int)a->dtype);
    /* FUSED, TWO_PASS, PLAIN and AUTO are one algorithm: the same result here */
    if (a->mode != SALE_MODE_FUSED && a->mode != SALE_MODE_TWO_PASS && a->mode != SALE_MODE_PLAIN &&
        a->mode != SALE_MODE_DENSE && a->mode != SALE_MODE_AUTO)
        return fail(ctx, "mode: unknown value %d", (int)a->mode);
    /* batch * heads_q counts the tasks in an int; the tensors' element counts must fit int64 */
    if ((int64_t)a->batch * a->heads_q > INT_MAX) {
        sale_set_error(ctx, "batch * heads_q: %d * %d overflows (at most %d)", a->batch, a->heads_q, INT_MAX);
        return SALE_ERR_INVALID;
    }
    if ((double)a->batch * a->heads_q * a->seq_len * a->head_dim > 9e18) {
        sale_set_error(ctx, "shape: batch * heads_q * seq_len * head_dim is too large");
        return SALE_ERR_INVALID;
    }
    if (!a->q || !a->k || !a->v || !a->out) {
        sale_set_error(ctx, "%s: NULL pointer", !a->q ? "q" : !a->k ? "k" : !a->v ? "v" : "out");
        return SALE_ERR_INVALID;
    }
    p->B = a->batch;
    p->Hq = a->heads_q;
    p->Hkv = a->heads_kv;
    p->N = a->seq_len;
    p->D = a->head_dim;
    p->group = p->Hq / p->Hkv;

    p->bq = def_int(a->block_q, 64);
    p->bk = def_int(a->block_k, 32);
    p->bs = def_int(a->block_seg, 128);
    p->W = def_int(a->local_window, 128);
    int bits = def_int(a->est_bits, 8); /* the reference cannot know the arch: 8 */
    if (p->bq < 16 || p->bq > 128 || p->bq % 16)
        return fail(ctx, "block_q: must be a multiple of 16 in 16..128, got %d", p->bq);
    if (p->bk < 16 || p->bk % 16)
        return fail(ctx, "block_k: must be a positive multiple of 16, got %d", p->bk);
    if (p->bs < p->bk || p->bs % p->bk || p->bs / p->bk > 32)
        return fail(ctx, "block_seg: must be a multiple of block_k of at most 32 blocks, got %d", p->bs);
    if (p->W < p->bk || p->W % p->bk)
        return fail(ctx, "local_window: must be a positive multiple of block_k, got %d", p->W);
    if (bits != 4 && bits != 8)
        return fail(ctx, "est_bits: must be 4 or 8, got %d", bits);
    /* rows and keys are counted in int: seq_len plus a block must not wrap */
    if ((int64_t)p->N + p->bq > INT_MAX || (int64_t)p->N + p->bk > INT_MAX) {
        sale_set_error(ctx, "seq_len: %d plus a block (block_q %d, block_k %d) overflows int", p->N, p->bq, p->bk);
        return SALE_ERR_INVALID;
    }
    p->qmax = bits == 4 ? 7 : 127;
    if (!thr_known(a->thr))
        return fail(ctx, "thr: unknown threshold variant %d (SALE_THR_RUN, SALE_THR_FIXED; 0: run)", a->thr);
    int thr = a->thr; /* stored thresholds' variant for thr 0; another is refused */
    if (ctx) {
        sale_status vs = thresholds_variant(ctx, a, &thr, NULL);
        if (vs != SALE_OK)
            return vs;
    }
    p->thr_fixed = thr == SALE_THR_FIXED;
    p->sb = p->bs / p->bk;

    if (!(a->scale >= 0.0f) || isinf(a->scale)) {
        sale_set_error(ctx, "scale: must be finite and >= 0 (0: 1/sqrt(head_dim))");
        return SALE_ERR_INVALID;
    }
    p->scale = a->scale > 0.0f ? a->scale : 1.0f / sqrtf((float)p->D);
    /* the same range sale_attention takes */
    if (!(a->tau_default >= 0.0f && a->tau_default < 1.0f)) {
        sale_set_error(ctx, "tau_default: must be in [0, 1), got %g", (double)a->tau_default);
        return SALE_ERR_INVALID;
    }
    if (a->tau)
        for (int h = 0; h < p->Hq; h++)
            if (!(a->tau[h] >= 0.0f && a->tau[h] < 1.0f))
                return fail(ctx, "tau: entry %d must be in [0, 1)", h);

    static const char *const level[3] = {"batch", "head", "row"};
    const int64_t *in[4] = {a->q_stride, a->k_stride, a->v_stride, a->o_stride};
    int64_t *out[4] = {p->qs, p->ks, p->vs, p->os};
    static const char *const name[4] = {"q", "k", "v", "o"};
    for (int t = 0; t < 4; t++) {
        int H = t == 0 || t == 3 ? p->Hq : p->Hkv;
        int bad = resolve_strides(in[t], p->B, H, p->N, p->D, out[t]);
        if (bad == 3) {
            sale_set_error(ctx, "%s_stride: {%lld, %lld, %lld} reach past 64-bit offsets for batch %d, %d heads, "
                           "seq_len %d", name[t], (long long)in[t][0], (long long)in[t][1], (long long)in[t][2],
                           p->B, H, p->N);
            return SALE_ERR_INVALID;
        }
        if (bad >= 0) {
            sale_set_error(ctx, "%s_stride[%d] (%s): must be 0 or >= head_dim (%d)", name[t], bad, level[bad], p->D);
            return SALE_ERR_INVALID;
        }
    }

    p->nqb = (p->N + p->bq - 1) / p->bq;
    p->nkb = (p->N + p->bk - 1) / p->bk;
    p->nkw = (p->nkb + 31) / 32;
    int dense_below = a->dense_below ? a->dense_below : 1024;
    p->all_dense = a->mode == SALE_MODE_DENSE || (dense_below > 0 && p->N < dense_below);
    return SALE_OK;
}

/* ------------------------------------------------------------- helpers */

static float load_elem(const void *base, sale_dtype dt, int64_t idx)
{
    return half_load(base, dt, (size_t)idx);
}

static void store_elem(void *base, sale_dtype dt, int64_t idx, float x)
{
    half_store(base, dt, (size_t)idx, x);
}

/* P is rounded to the input dtype before P·V, as the GPU's tensor-core matmul
 * takes P in fp16/bf16; l keeps the unrounded p. */
static float round_dt(float x, sale_dtype dt)
{
    switch (dt) {
    case SALE_DTYPE_F16:
        return sale_f16_to_f32(sale_f32_to_f16(x));
    case SALE_DTYPE_BF16:
        return sale_bf16_to_f32(sale_f32_to_bf16(x));
    default:
        return x;
    }
}

/* fp32 dot product with 8 partial sums (a fixed order, so it vectorises and
 * stays deterministic); D is a multiple of 64. */
static float dot_f32(const float *a, const float *b, int D)
{
    float acc[8] = {0};
    for (int d = 0; d < D; d += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[d + k] * b[d + k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, int D)
{
    int32_t s = 0;
    for (int d = 0; d < D; d++)
        s += (int32_t)a[d] * (int32_t)b[d];
    return s;
}

/* Symmetric quantization of n values with one scale: scale = max|x| / qmax,
 * code = clamp(rintf(x / scale), -qmax, qmax). rintf rounds half to even (the
 * default rounding mode), as cvt.rni does on the GPU. A zero scale gives all
 * codes 0, never NaN. */
static float quantize(const float *x, int n, int qmax, int8_t *code)
{
    float amax = 0.0f;
    for (int t = 0; t < n; t++)
        amax = fmaxf(amax, fabsf(x[t]));
    float sc = amax / (float)qmax;
    for (int t = 0; t < n; t++) {
        float c = sc > 0.0f ? rintf(x[t] / sc) : 0.0f;
        c = fminf(fmaxf(c, (float)-qmax), (float)qmax);
        code[t] = (int8_t)c;
    }
    return sc;
}

/* ------------------------------------------------------------- worker */

typedef struct ref_buf {
    float *Q, *K, *V;   /* [N][D] fp32 copies of this task's head */
    float *tmp;         /* [bk][D] centered rows before quantizing */
    int8_t *qc, *kc;    /* [N][D] low-bit codes (one per int8) */
    float *sq, *sk, *c; /* [N], [nkb], [N] */
    float *m, *o, *s, *t; /* [bq], [bq][D], [bk], [bq] */
    double *l;          /* [bq] */
    unsigned char *keep; /* [sb] */
} ref_buf;

static void buf_free(ref_buf *b)
{
    free(b->Q);
    free(b->K);
    free(b->V);
    free(b->tmp);
    free(b->qc);
    free(b->kc);
    free(b->sq);
    free(b->sk);
    free(b->c);
    free(b->m);
    free(b->o);
    free(b->s);
    free(b->t);
    free(b->l);
    free(b->keep);
}

static int buf_alloc(ref_buf *b, const ref_plan *p)
{
    size_t nd = (size_t)p->N * p->D;
    memset(b, 0, sizeof *b);
    b->Q = malloc(nd * sizeof(float));
    b->K = malloc(nd * sizeof(float));
    b->V = malloc(nd * sizeof(float));
    b->tmp = malloc((size_t)p->bk * p->D * sizeof(float));
    b->qc = malloc(nd);
    b->kc = malloc(nd);
    b->sq = malloc((size_t)p->N * sizeof(float));
    b->sk = malloc((size_t)p->nkb * sizeof(float));
    b->c = malloc((size_t)p->N * sizeof(float));
    b->m = malloc((size_t)p->bq * sizeof(float));
    b->o = malloc((size_t)p->bq * p->D * sizeof(float));
    b->s = malloc((size_t)p->bk * sizeof(float));
    b->t = malloc((size_t)p->bq * sizeof(float));
    b->l = malloc((size_t)p->bq * sizeof(double));
    b->keep = malloc((size_t)p->sb);
    return b->Q && b->K && b->V && b->tmp && b->qc && b->kc && b->sq && b->sk && b->c && b->m && b->o && b->s &&
           b->t && b->l && b->keep;
}

static void load_head(const void *base, sale_dtype dt, const int64_t st[3], int bi, int h, int N, int D,
                      float *dst)
{
    for (int i = 0; i < N; i++) {
        int64_t off = bi * st[0] + h * st[1] + i * st[2];
        for (int d = 0; d < D; d++)
            dst[(size_t)i * D + d] = load_elem(base, dt, off + d);
    }
}

/* Smoothing and quantization of one (b, q head): means in fp64 stored as
 * float; Q' = Q - qmean and K' = K - kmean in fp32; c_j = fp32 of the fp64
 * dot qmean . K'_j; per-row query scales, per-key-block key scales. */
static void prepare_estimate(const ref_plan *p, ref_buf *b, const float *km)
{
    int N = p->N, D = p->D;
    float qm[256];
    for (int d = 0; d < D; d++) {
        double sq = 0.0;
        for (int i = 0; i < N; i++)
            sq += b->Q[(size_t)i * D + d];
        qm[d] = (float)(sq / N);
    }
    for (int i = 0; i < N; i++) {
        float *x = b->tmp;
        for (int d = 0; d < D; d++)
            x[d] = b->Q[(size_t)i * D + d] - qm[d];
        b->sq[i] = quantize(x, D, p->qmax, b->qc + (size_t)i * D);
    }
    for (int J = 0; J < p->nkb; J++) {
        int j0 = J * p->bk, j1 = j0 + p->bk < N ? j0 + p->bk : N;
        float *x = b->tmp;
        for (int j = j0; j < j1; j++) {
            double acc = 0.0;
            for (int d = 0; d < D; d++) {
                float kp = b->K[(size_t)j * D + d] - km[d];
                x[(size_t)(j - j0) * D + d] = kp;
                acc += (double)qm[d] * (double)kp;
            }
            b->c[j] = (float)acc;
        }
        b->sk[J] = quantize(x, (j1 - j0) * D, p->qmax, b->kc + (size_t)j0 * D);
    }
}

/* Units (sale-algorithm.md, "Units"): the estimate approximates q_i . k'_j
 * with k'_j = k_j - kmean, so the exact scores that build m_i, l_i and the
 * threshold t_i must be against K' too, as the authors' kernels do. We centre
 * the keys once, K' = dtype(K - kmean) (fp32 subtraction, then rounded to the
 * input dtype as the quantize kernel stores it), and every exact score of a
 * SALE run (local region, sink, kept blocks, dense heads) uses K'. Softmax is
 * unchanged by the per-row constant q_i . kmean; the decisions no longer
 * depend on how far the keys' mean lies from the origin. */
static void center_keys(const ref_plan *p, ref_buf *b, const float *km)
{
    sale_dtype dt = p->a->dtype;
    for (int j = 0; j < p->N; j++)
        for (int d = 0; d < p->D; d++)
            b->K[(size_t)j * p->D + d] = round_dt(b->K[(size_t)j * p->D + d] - km[d], dt);
}

/* Exact online-softmax update of the query block rows i0..i1-1 with key block
 * J (causal mask applied). Scores s = Q_i . K'_j in fp32 (K' after
 * center_keys in a SALE run, K in a dense run). */
static void attend_block(const ref_plan *p, ref_buf *b, int i0, int i1, int J)
{
    int D = p->D, N = p->N;
    sale_dtype dt = p->a->dtype;
    int j0 = J * p->bk;
    for (int i = i0; i < i1; i++) {
        int j1 = j0 + p->bk;
        if (j1 > N)
            j1 = N;
        if (j1 > i + 1)
            j1 = i + 1;
        if (j1 <= j0)
            continue;
        int r = i - i0;
        const float *q = b->Q + (size_t)i * D;
        float mb = -INFINITY;
        for (int j = j0; j < j1; j++) {
            b->s[j - j0] = dot_f32(q, b->K + (size_t)j * D, D);
            mb = fmaxf(mb, b->s[j - j0]);
        }
        float m_old = b->m[r];
        float m_new = fmaxf(m_old, mb);
        float alpha = m_old == -INFINITY ? 0.0f : expf(p->scale * (m_old - m_new));
        float *o = b->o + (size_t)r * D;
        for (int d = 0; d < D; d++)
            o[d] *= alpha;
        double psum = 0.0;
        for (int j = j0; j < j1; j++) {
            float pj = expf(p->scale * (b->s[j - j0] - m_new));
            psum += pj;
            float pr = round_dt(pj, dt);
            const float *v = b->V + (size_t)j * D;
            for (int d = 0; d < D; d++)
                o[d] += pr * v[d];
        }
        b->l[r] = b->l[r] * alpha + psum;
        b->m[r] = m_new;
    }
}

/* Is key block J (entirely causal for rows i0..i1-1) kept? Estimated score
 *   ŝ_ij = (sq_i * sk_J) * (float)dot_ij + c_j
 * evaluated in fp32 in exactly this order (one multiply of the two scales,
 * one multiply by the exact int32 dot converted to float, one add); the GPU
 * kernels compute it the same way. Kept iff some row has ŝ_ij > t_i.
 * margin (may be NULL): the decision's margin, max over the block's causal
 * entries of (ŝ_ij - t_i) / (1 + |t_i|), which scans the whole block. A GPU
 * computes t_i from exp2 and summation orders of its own (ulp-level
 * differences), so a block whose margin is within a few ulps of 0 may be
 * decided either way. */
static int estimate_keeps(const ref_plan *p, const ref_buf *b, int i0, int i1, int J, float *margin)
{
    int D = p->D, kept = 0;
    int j0 = J * p->bk, j1 = j0 + p->bk < p->N ? j0 + p->bk : p->N;
    float best = -INFINITY;
    for (int i = i0; i < i1; i++) {
        float ss = b->sq[i] * b->sk[J];
        float t = b->t[i - i0];
        const int8_t *qc = b->qc + (size_t)i * D;
        for (int j = j0; j < j1 && j <= i; j++) {
            float est = ss * (float)dot_i8(qc, b->kc + (size_t)j * D, D) + b->c[j];
            if (est > t) {
                kept = 1;
                if (!margin)
                    return 1;
            }
            if (margin) {
                float m = (est - t) / (1.0f + fabsf(t));
                best = m > best ? m : best;
            }
        }
    }
    if (margin)
        *margin = best;
    return kept;
}

static void set_bit(uint32_t *row, int J)
{
    row[J / 32] |= 1u << (J % 32);
}

/* Block-visiting order of query block qb (rows i0 .. i1-1, i1 = min(i0+Bq, N)):
 *   kb_hi       = (i1 - 1) / Bk                  last (diagonal) key block
 *   local_first = max(0, i0 - W) / Bk            blocks covering the W keys before i0
 *   if local_first > 1: the middle blocks 1 .. local_first-1 are cut into
 *     nseg = (local_first - 1) / (S/Bk) whole segments counted from block 1;
 *     the remainder joins the local region: local_first = 1 + nseg * (S/Bk).
 * Visit: local blocks kb_hi down to local_first (exact); then block 0 (sink)
 * if local_first > 0; then segments 0 .. nseg-1 ascending, each estimated
 * against the state at its start (thr run; thr fixed: against the state at
 * the start of segment 0, for every segment), then its kept blocks computed
 * ascending.
 * Example, Bq=Bk=16, S=32 (2 blocks a segment), W=16, qb=9 (i0=144):
 * kb_hi=9, local_first=8, middle 1..7 -> segments [1,2] [3,4] [5,6], block 7
 * joins the local region: visit 9,8,7, then 0, then [1,2], [3,4], [5,6]. */
static void run_task(ref_plan *p, ref_buf *b, int task)
{
    const sale_attention_args *a = p->a;
    int bi = task / p->Hq, h = task % p->Hq, kvh = h / p->group;
    int N = p->N, D = p->D;
    float tau = p->tau[h];
    int dense = p->all_dense || tau <= 1e-5f;

    load_head(a->q, a->dtype, p->qs, bi, h, N, D, b->Q);
    load_head(a->k, a->dtype, p->ks, bi, kvh, N, D, b->K);
    load_head(a->v, a->dtype, p->vs, bi, kvh, N, D, b->V);
    float km[256];
    if (!p->all_dense) {
        for (int d = 0; d < D; d++) {
            double sk = 0.0;
            for (int i = 0; i < N; i++)
                sk += b->K[(size_t)i * D + d];
            km[d] = (float)(sk / N);
        }
        if (!dense)
            prepare_estimate(p, b, km);
        center_keys(p, b, km);
    }

    int64_t kept = 0, causal = 0;
    for (int qb = 0; qb < p->nqb; qb++) {
        int i0 = qb * p->bq, i1 = i0 + p->bq < N ? i0 + p->bq : N;
        int kb_hi = (i1 - 1) / p->bk;
        int lo = i0 - p->W > 0 ? i0 - p->W : 0;
        int local_first = lo / p->bk, nseg = 0;
        if (local_first > 1) {
            nseg = (local_first - 1) / p->sb;
            local_first = 1 + nseg * p->sb;
        }
        uint32_t *mrow = a->mask ? a->mask + ((size_t)task * p->nqb + qb) * p->nkw : NULL;
        if (mrow)
            memset(mrow, 0, (size_t)p->nkw * sizeof(uint32_t));
        uint32_t *nrow = p->near ? p->near + ((size_t)task * p->nqb + qb) * p->nkw : NULL;
        if (nrow)
            memset(nrow, 0, (size_t)p->nkw * sizeof(uint32_t));

        for (int r = 0; r < i1 - i0; r++) {
            b->m[r] = -INFINITY;
            b->l[r] = 0.0;
        }
        memset(b->o, 0, (size_t)(i1 - i0) * D * sizeof(float));

        for (int J = kb_hi; J >= local_first; J--) {
            attend_block(p, b, i0, i1, J);
            if (mrow)
                set_bit(mrow, J);
            kept++;
        }
        if (local_first > 0) {
            attend_block(p, b, i0, i1, 0);
            if (mrow)
                set_bit(mrow, 0);
            kept++;
        }
        for (int s = 0; s < nseg; s++) {
            int first = 1 + s * p->sb;
            if (!dense) {
                /* threshold in raw-score units from the state at the segment
                 * start, fp32: t_i = m_i + logf(tau * (float)l_i) / scale.
                 * Every row has state: its own key lies in the local region.
                 * Fixed: the first segment's, kept for the others. */
                if (s == 0 || !p->thr_fixed)
                    for (int r = 0; r < i1 - i0; r++)
                        b->t[r] = b->m[r] + logf(tau * (float)b->l[r]) / p->scale;
                for (int k = 0; k < p->sb; k++) {
                    float margin = 0.f;
                    b->keep[k] = (unsigned char)estimate_keeps(p, b, i0, i1, first + k, nrow ? &margin : NULL);
                    if (nrow && fabsf(margin) <= p->band)
                        set_bit(nrow, first + k);
                }
            } else {
                memset(b->keep, 1, (size_t)p->sb);
            }
            for (int k = 0; k < p->sb; k++) {
                if (!b->keep[k])
                    continue;
                attend_block(p, b, i0, i1, first + k);
                if (mrow)
                    set_bit(mrow, first + k);
                kept++;
            }
        }
        causal += kb_hi + 1;

        for (int i = i0; i < i1; i++) {
            int r = i - i0;
            int64_t off = bi * p->os[0] + h * p->os[1] + i * p->os[2];
            for (int d = 0; d < D; d++)
                store_elem(a->out, a->dtype, off + d, (float)((double)b->o[(size_t)r * D + d] / b->l[r]));
            if (a->lse) {
                /* m_i is in K' units; the log-sum-exp is of the scores the
                 * caller gave (against K): add back scale * q_i . kmean */
                double shift = 0.0;
                if (!p->all_dense) {
                    const float *q = b->Q + (size_t)i * D;
                    for (int d = 0; d < D; d++)
                        shift += (double)q[d] * (double)km[d];
                }
                a->lse[(size_t)task * N + i] =
                    (float)((double)b->m[r] * p->scale + log(b->l[r]) + (double)p->scale * shift);
            }
        }
    }
    p->kept[task] = kept;
    p->causal[task] = causal;
}

static void *worker(void *arg)
{
    ref_plan *p = arg;
    ref_buf b;
    if (!buf_alloc(&b, p)) {
        atomic_store(&p->failed, 1);
        buf_free(&b);
        return NULL;
    }
    int ntask = p->B * p->Hq;
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= ntask || atomic_load(&p->failed))
            break;
        run_task(p, &b, t);
    }
    buf_free(&b);
    return NULL;
}

sale_status sale_reference_attention(sale_ctx *ctx, const sale_attention_args *a)
{
    return sale_reference_attention_near(ctx, a, NULL, 0.f);
}

sale_status sale_reference_attention_near(sale_ctx *ctx, const sale_attention_args *a, uint32_t *near, float band)
{
    ref_plan p;
    sale_status st = plan_make(ctx, a, &p);
    if (st != SALE_OK)
        return st;
    p.near = near;
    p.band = band;

    int ntask = p.B * p.Hq;
    p.tau = malloc((size_t)p.Hq * sizeof(float));
    p.kept = calloc((size_t)ntask, sizeof(int64_t));
    p.causal = calloc((size_t)ntask, sizeof(int64_t));
    if (!p.tau || !p.kept || !p.causal) {
        st = SALE_ERR_NOMEM;
        sale_set_error(ctx, "reference: out of memory");
        goto out;
    }
    st = thresholds_resolve(ctx, a, p.tau, NULL); /* a->tau, else (model, layer), else tau_default */
    if (st != SALE_OK)
        goto out;
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);

    par_run(ntask, REF_MAX_THREADS, worker, &p);
    if (atomic_load(&p.failed)) {
        st = SALE_ERR_NOMEM;
        sale_set_error(ctx, "reference: out of memory for %d x %d work buffers", p.N, p.D);
        goto out;
    }

    if (a->stats) {
        sale_stats *s = a->stats;
        int64_t kept = 0, causal = 0;
        for (int t = 0; t < ntask; t++) {
            kept += p.kept[t];
            causal += p.causal[t];
            if (s->density_per_head)
                s->density_per_head[t] = p.causal[t] ? (double)p.kept[t] / (double)p.causal[t] : 0.0;
        }
        s->kept_blocks = kept;
        s->causal_blocks = causal;
        s->density = causal ? (double)kept / (double)causal : 0.0;
        s->dense_fallback = a->mode != SALE_MODE_DENSE && p.all_dense;
    }
out:
    free(p.tau);
    free(p.kept);
    free(p.causal);
    return st;
}
