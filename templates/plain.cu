/* plain.cu — sale family "plain", version 0: SALE step 3 written the way
 * docs/sale-algorithm.md states it, in one plain kernel, for a reader and
 * for checking the fast kernels (fused.cu, select.cu + attend.cu). It runs
 * after the quantize pass (templates/quantize.cu: codes, scales, c_j and the
 * centred keys K', which sale_attention passes as p.k) and is slow: no
 * tensor cores, no asynchronous copies, no shared-memory tiles, no swizzles.
 *
 * One CTA: one query block (block_q rows) of one q head of one batch entry;
 * one thread: one query row. Arithmetic follows src/reference.c operation by
 * operation (comments marked "as the reference" say where an order or a
 * rounding is there only to match it), so that its block masks equal the
 * reference's bit for bit: the exact scores and the estimates are the same
 * fp32 operations in the same order (multiplies and adds written out with _rn
 * intrinsics so that nothing is fused into an FMA, as an x86-64 build of the
 * reference computes them), l is summed in fp64 as there; only expf/logf may
 * differ in the last bits, which moves a decision only for an estimate
 * within rounding of its threshold.
 * Includes nothing but the ABI and the layout. */
#include "sale_abi.h"
#include "sale_layout.h"

/* ---- prelude defaults (the host #defines all of these) ---- */
#ifndef SALE_FAMILY
#define SALE_FAMILY 5
#endif
#ifndef SALE_HEAD_DIM
#define SALE_HEAD_DIM 128
#endif
#ifndef SALE_BLOCK_Q
#define SALE_BLOCK_Q 64
#endif
#ifndef SALE_BLOCK_K
#define SALE_BLOCK_K 32
#endif
#ifndef SALE_BLOCK_SEG
#define SALE_BLOCK_SEG 128
#endif
#ifndef SALE_LOCAL_WINDOW
#define SALE_LOCAL_WINDOW 128
#endif
#ifndef SALE_DTYPE
#define SALE_DTYPE 1
#endif
#ifndef SALE_EST_BITS
#define SALE_EST_BITS 8
#endif
#ifndef SALE_THR_FIXED /* 1: thr=fixed, t_i once before the first segment; 0: thr=run */
#define SALE_THR_FIXED 0
#endif

#define D SALE_HEAD_DIM
#define BQ SALE_BLOCK_Q
#define BK SALE_BLOCK_K
#define SEG_BLOCKS (SALE_BLOCK_SEG / SALE_BLOCK_K) /* key blocks per segment (S/Bk) */
#define CODE_BYTES (D * SALE_EST_BITS / 8)         /* bytes of one row of codes */

static_assert(SALE_FAMILY == SALE_LF_PLAIN, "plain.cu is family 5");
static_assert(SEG_BLOCKS >= 1 && SEG_BLOCKS <= 32 && SALE_BLOCK_SEG % BK == 0, "block_seg");

typedef unsigned short plain_u16;
typedef unsigned int plain_u32;
#define PLAIN_NEG_INF __int_as_float(0xff800000)

/* ------------------------------------------------------------- helpers */

/* one element of the input dtype (f16 or bf16) as float: exact */
__device__ float plain_load(const plain_u16 *base, long long i) {
    plain_u16 h = base[i];
#if SALE_DTYPE == 1
    return __uint_as_float((plain_u32)h << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

/* float -> input dtype, round to nearest even (as sale_f32_to_bf16/f16) */
__device__ plain_u16 plain_to_dtype(float x) {
    plain_u16 h;
#if SALE_DTYPE == 1
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
#endif
    return h;
}

/* x rounded to the input dtype and back: P is rounded like this before P·V,
 * as the tensor cores of the fast kernels take P in f16/bf16 (as the
 * reference, round_dt) */
__device__ float plain_round_dtype(float x) {
    plain_u16 h = plain_to_dtype(x);
    return plain_load(&h, 0);
}

/* code d of a row of low-bit codes: int8, or int4 two per byte, low nibble
 * first (templates/sale_abi.h) */
__device__ int plain_code(const unsigned char *row, int d) {
#if SALE_EST_BITS == 8
    return (int)(signed char)row[d];
#else
    int v = (row[d >> 1] >> ((d & 1) * 4)) & 15;
    return v >= 8 ? v - 16 : v;
#endif
}

/* Loops over D are kept rolled (#pragma unroll 1): q and o then live in
 * local memory, the kernel reads as written and compiles in a moment. */

/* ------------------------------------------------------------- the state */

/* What one thread (one query row i) keeps: its query in fp32, the running
 * row max m_i (raw scores, K' units), row sum l_i and output o_i. */
struct PlainRow {
    int i;        /* global row; i >= N: a padding thread that only votes "no" */
    float q[D];   /* Q row, exact */
    float o[D];   /* unnormalised output */
    float m;      /* running max of the raw scores q_i . k'_j */
    double l;     /* running sum of exp(scale (s - m)): fp64, as the reference */
};

/* Exact scores of row r against the keys j0 .. j1-1 (causal: j <= i) and the
 * flash-attention update of m, l, o (algorithm page, step 3, "computed
 * exactly ... update m, l, o"). Order as the reference's attend_block. */
__device__ void plain_attend_block(PlainRow &r, const sale_params &p, const plain_u16 *kg, const plain_u16 *vg, int J) {
    const int j0 = J * BK;
    int j1 = j0 + BK;
    if (j1 > p.N) j1 = p.N;
    if (j1 > r.i + 1) j1 = r.i + 1; /* causal mask */
    if (j1 <= j0) return;           /* nothing of this block is visible to row i */

    /* s_ij = q_i . k'_j in fp32. As the reference's dot_f32: 8 partial sums,
     * each a multiply then an add (no FMA), added pairwise at the end. */
    float s[BK];
    float mb = PLAIN_NEG_INF;
    for (int j = j0; j < j1; j++) {
        const plain_u16 *kr = kg + (long long)j * p.k_sn;
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 1
        for (int d = 0; d < D; d += 8)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[e] = __fadd_rn(acc[e], __fmul_rn(r.q[d + e], plain_load(kr, d + e)));
        float sj = __fadd_rn(__fadd_rn(__fadd_rn(acc[0], acc[4]), __fadd_rn(acc[1], acc[5])),
                             __fadd_rn(__fadd_rn(acc[2], acc[6]), __fadd_rn(acc[3], acc[7])));
        s[j - j0] = sj;
        mb = fmaxf(mb, sj);
    }

    /* online softmax: new max, rescale what was there, add this block */
    const float m_new = fmaxf(r.m, mb);
    const float alpha = r.m == PLAIN_NEG_INF ? 0.f : expf(__fmul_rn(p.scale, __fsub_rn(r.m, m_new)));
#pragma unroll 1
    for (int d = 0; d < D; d++) r.o[d] = __fmul_rn(r.o[d], alpha);
    double psum = 0.0;
    for (int j = j0; j < j1; j++) {
        const float pj = expf(__fmul_rn(p.scale, __fsub_rn(s[j - j0], m_new)));
        psum += pj;                           /* l keeps the unrounded p */
        const float pr = plain_round_dtype(pj); /* P·V takes p in the input dtype */
        const plain_u16 *vr = vg + (long long)j * p.v_sn;
#pragma unroll 1
        for (int d = 0; d < D; d++) r.o[d] = __fadd_rn(r.o[d], __fmul_rn(pr, plain_load(vr, d)));
    }
    r.l = r.l * (double)alpha + psum;
    r.m = m_new;
}

/* Does row r pass the Relative Attention Score test in key block J, i.e. is
 * there a key j of J with ŝ_ij > t_i (algorithm page, step 3, "kept iff")?
 * ŝ_ij = (sq_i * sk_J) * dot(q̂_i, k̂_j) + c_j (step 2), in fp32 in exactly this
 * order, no FMA (as the reference's estimate_keeps and the fast kernels). */
__device__ bool plain_estimate_passes(const PlainRow &r, const sale_params &p, long long bhq, long long bkv, int J,
                                      float t) {
    if (r.i >= p.N) return false;
    const unsigned char *qc = (const unsigned char *)p.qcode + (bhq * p.N + r.i) * CODE_BYTES;
    const float sq = ((const float *)p.qscale)[bhq * p.N + r.i];
    const float sk = ((const float *)p.kscale)[bkv * p.nkb + J];
    const float *cterm = (const float *)p.cterm + bhq * p.N;
    const float ss = __fmul_rn(sq, sk);
    int j1 = J * BK + BK;
    if (j1 > p.N) j1 = p.N;
    for (int j = J * BK; j < j1 && j <= r.i; j++) {
        const unsigned char *kc = (const unsigned char *)p.kcode + (bkv * p.N + j) * CODE_BYTES;
        int dot = 0; /* the integer dot product the tensor cores compute: exact */
#pragma unroll 1
        for (int d = 0; d < D; d++) dot += plain_code(qc, d) * plain_code(kc, d);
        const float est = __fadd_rn(__fmul_rn(ss, (float)dot), cterm[j]);
        if (est > t) return true;
    }
    return false;
}

/* ------------------------------------------------------------- the kernel */

extern "C" __global__ void __launch_bounds__(BQ) sale_plain_kernel(const sale_params p) {
    const int qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int N = p.N;
    const int kvh = h / p.group; /* GQA: q head h reads kv head h / (Hq/Hkv) */
    const long long bhq = (long long)b * p.Hq + h, bkv = (long long)b * p.Hkv + kvh;
    const plain_u16 *qg = (const plain_u16 *)p.q + (long long)b * p.q_sb + (long long)h * p.q_sh;
    const plain_u16 *kg = (const plain_u16 *)p.k + (long long)b * p.k_sb + (long long)kvh * p.k_sh; /* K' */
    const plain_u16 *vg = (const plain_u16 *)p.v + (long long)b * p.v_sb + (long long)kvh * p.v_sh;

    PlainRow r;
    r.i = qb * BQ + (int)threadIdx.x;
    r.m = PLAIN_NEG_INF;
    r.l = 0.0;
#pragma unroll 1
    for (int d = 0; d < D; d++) {
        r.q[d] = r.i < N ? plain_load(qg, (long long)r.i * p.q_sn + d) : 0.f;
        r.o[d] = 0.f;
    }

    /* threshold of this head; tau <= 1e-5 (or a dense run) keeps every block */
    const float tau = p.tau ? ((const float *)p.tau)[h] : (h < SALE_TAU_INLINE ? p.tau_inline[h] : 0.f);
    const bool dense_head = p.dense_heads_only || !(tau > 1e-5f);

    /* Step 3.1, the geometry of this query block (rows i0 .. i1-1):
     *   kb_hi       the diagonal key block;
     *   local_first the first block of the local region (the W keys before i0);
     *   the blocks 1 .. local_first-1 are cut into nseg whole segments of
     *   SEG_BLOCKS counted from block 1; a remainder joins the local region. */
    const int i0 = qb * BQ, i1 = i0 + BQ < N ? i0 + BQ : N;
    const int kb_hi = (i1 - 1) / BK;
    int local_first = (i0 - SALE_LOCAL_WINDOW > 0 ? i0 - SALE_LOCAL_WINDOW : 0) / BK, nseg = 0;
    if (local_first > 1) {
        nseg = (local_first - 1) / SEG_BLOCKS;
        local_first = 1 + nseg * SEG_BLOCKS;
    }

    /* the mask row of this query block: cleared, then one bit per kept block
     * (only thread 0 writes it) */
    plain_u32 *mrow = p.mask ? (plain_u32 *)p.mask + (bhq * p.nqb + qb) * p.nkw : 0;
    if (mrow)
        for (int w = threadIdx.x; w < p.nkw; w += BQ) mrow[w] = 0u;
    __syncthreads();
    int kept = 0;

    /* Step 3.1: the local region, exact, walked from the diagonal backward;
     * then the sink (key block 0) unless the local region reached it */
    for (int J = kb_hi; J >= local_first; J--) {
        if (r.i < N) plain_attend_block(r, p, kg, vg, J);
        if (mrow && threadIdx.x == 0) mrow[J >> 5] |= 1u << (J & 31);
        kept++;
    }
    if (local_first > 0) {
        if (r.i < N) plain_attend_block(r, p, kg, vg, 0);
        if (mrow && threadIdx.x == 0) mrow[0] |= 1u;
        kept++;
    }

    /* Step 3.2: segments in ascending order, each estimated against the state
     * at its start (thr=fixed: the state at the start of the first segment,
     * for every segment), then its kept blocks computed exactly */
    float t = 0.f;
    for (int s = 0; s < nseg; s++) {
        const int first = 1 + s * SEG_BLOCKS;
        /* t_i = m_i + ln(tau * l_i) / scale, in fp32 from the fp64 l
         * (as the reference: logf(tau * (float)l) / scale, then + m) */
        if (r.i < N && (s == 0 || !SALE_THR_FIXED))
            t = __fadd_rn(r.m, __fdiv_rn(logf(__fmul_rn(tau, (float)r.l)), p.scale));
        /* block J is kept iff some row of the query block passes in J */
        plain_u32 keep = 0;
        for (int k = 0; k < SEG_BLOCKS; k++) {
            bool pass = dense_head || plain_estimate_passes(r, p, bhq, bkv, first + k, t);
            if (__syncthreads_or(pass)) keep |= 1u << k;
        }
        /* the kept blocks, ascending */
        for (int k = 0; k < SEG_BLOCKS; k++) {
            if (!(keep >> k & 1u)) continue;
            const int J = first + k;
            if (r.i < N) plain_attend_block(r, p, kg, vg, J);
            if (mrow && threadIdx.x == 0) mrow[J >> 5] |= 1u << (J & 31);
            kept++;
        }
    }
    if (p.kept && threadIdx.x == 0) ((int *)p.kept)[bhq * p.nqb + qb] = kept;

    /* Step 3.3: o_i / l_i in the input dtype (the division in fp64, as the
     * reference); the log-sum-exp in K' units (sale_attention's lse pass adds
     * scale * q_i . kmean back, as for the other families) */
    if (r.i >= N) return;
    plain_u16 *og = (plain_u16 *)p.o + (long long)b * p.o_sb + (long long)h * p.o_sh + (long long)r.i * p.o_sn;
#pragma unroll 1
    for (int d = 0; d < D; d++) og[d] = plain_to_dtype((float)((double)r.o[d] / r.l));
    if (p.lse) ((float *)p.lse)[bhq * N + r.i] = (float)((double)r.m * (double)p.scale + log(r.l));
}
