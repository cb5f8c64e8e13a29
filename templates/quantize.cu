/* quantize.cu — sale family "quantize": smoothing means, low-bit codes and
 * scales of Q (per row) and K (per key block), c_j = qmean(h) . K'_j, and the
 * centred keys K' in the input dtype that the exact pass scores against.
 * One launch (see sale_quantize_kernel): mean partials over a few chunks of
 * rows, each head's means from its partials as soon as they are in
 * (fixed-order fp64 sums: deterministic), then the codes (Q rows; K blocks +
 * c_j + K'). */
#ifndef SALE_FAMILY
#define SALE_FAMILY 0
#endif
#include "sale_common.cuh"

#define QZ_D SALE_HEAD_DIM
#define QZ_EPL (QZ_D / 32) /* elements per lane in the row kernels */
#if SALE_EST_BITS == 4
#define QZ_QMAX 7.0f
#else
#define QZ_QMAX 127.0f
#endif
#define QZ_RBC (QZ_D * SALE_EST_BITS / 8)

/* (a) partial sums over a chunk of rows: scratch[b][y][chunk][D] (double),
 * y < Hq: q head y, else kv head y - Hq. 16-byte loads (8 elements), D/8
 * threads a row; each thread keeps 8 fp64 sums, then the row groups are
 * added in order through shared memory. A thread issues QZ_MB row loads
 * before it adds the first (Little's law: 320 blocks at 64K have to keep
 * several MB in flight), then adds them in ascending row order, as one row
 * at a time would: the fp64 sums, and so the means, are the same bits. */
#define QZ_TPR (QZ_D / 8)                    /* threads per row */
#define QZ_RPI (SALE_QZ_THREADS / QZ_TPR)    /* rows per iteration */
#define QZ_MB 8                              /* row loads in flight per thread */
__device__ __forceinline__ void qz_mean_add(double (&acc)[8], const uint4 &u) {
    const sale_u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        acc[2 * e] += (double)sale_to_f32((sale_u16)(w[e] & 0xffff));
        acc[2 * e + 1] += (double)sale_to_f32((sale_u16)(w[e] >> 16));
    }
}
__device__ __forceinline__ void qz_mean_chunk(const sale_params &p, int c, int y, int b) {
    __shared__ double part[QZ_RPI][QZ_D];
    const int N = p.N;
    const int nch = sale_layout_mean_chunks(N), cr = sale_layout_mean_chunk_rows(N);
    const sale_u16 *base;
    long long sn;
    if (y < p.Hq) {
        base = (const sale_u16 *)p.q + (long long)b * p.q_sb + (long long)y * p.q_sh;
        sn = p.q_sn;
    } else {
        base = (const sale_u16 *)p.k + (long long)b * p.k_sb + (long long)(y - p.Hq) * p.k_sh;
        sn = p.k_sn;
    }
    const int cg = threadIdx.x % QZ_TPR, rg = threadIdx.x / QZ_TPR;
    const int r0 = c * cr, r1 = r0 + cr < N ? r0 + cr : N;
    double acc[8];
#pragma unroll
    for (int e = 0; e < 8; e++) acc[e] = 0.0;
    int r = r0 + rg;
    const sale_u16 *src = base + (long long)r * sn + cg * 8;
    const long long step = (long long)QZ_RPI * sn;
    for (; r + (QZ_MB - 1) * QZ_RPI < r1; r += QZ_MB * QZ_RPI, src += QZ_MB * step) {
        uint4 u[QZ_MB];
#pragma unroll
        for (int j = 0; j < QZ_MB; j++) u[j] = *(const uint4 *)(src + j * step);
#pragma unroll
        for (int j = 0; j < QZ_MB; j++) qz_mean_add(acc, u[j]);
    }
    for (; r < r1; r += QZ_RPI, src += step) qz_mean_add(acc, *(const uint4 *)src);
#pragma unroll
    for (int e = 0; e < 8; e++) part[rg][cg * 8 + e] = acc[e];
    __syncthreads();
    if (threadIdx.x < QZ_D) {
        double s = 0.0;
        for (int g = 0; g < QZ_RPI; g++) s += part[g][threadIdx.x];
        double *scr = (double *)p.scratch;
        scr[(((long long)b * (p.Hq + p.Hkv) + y) * nch + c) * QZ_D + threadIdx.x] = s;
        __threadfence(); /* the partial is visible device-wide before the block counts itself done */
    }
}

/* (a') the means of one (batch, head): the block that brings in the head's
 * last partial adds its chunk partials per column in order (c = 0..nch-1),
 * divides by N and writes qmean / kmean as fp32. The same sums in the same
 * order whichever block does it: the means do not vary from run to run. */
__device__ __forceinline__ void qz_finish_head(const sale_params &p, int y, int b) {
    if (threadIdx.x >= QZ_D) return;
    const int nch = sale_layout_mean_chunks(p.N), d = threadIdx.x;
    const long long by = (long long)b * (p.Hq + p.Hkv) + y;
    const double *scr = (const double *)p.scratch + by * nch * QZ_D + d;
    double s = 0.0;
    for (int c = 0; c < nch; c++) s += __ldcg(scr + (long long)c * QZ_D); /* other blocks wrote them */
    const float m = (float)(s / (double)p.N);
    if (y < p.Hq) ((float *)p.qmean)[((long long)b * p.Hq + y) * QZ_D + d] = m;
    else ((float *)p.kmean)[((long long)b * p.Hkv + (y - p.Hq)) * QZ_D + d] = m;
}

/* the mean of column d of head y (y < Hq: q head, else kv head y - Hq), as
 * qz_finish_head wrote it in this launch (read from L2) */
__device__ __forceinline__ float qz_mean(const sale_params &p, int b, int y, int d) {
    if (y < p.Hq) return __ldcg((const float *)p.qmean + ((long long)b * p.Hq + y) * QZ_D + d);
    return __ldcg((const float *)p.kmean + ((long long)b * p.Hkv + (y - p.Hq)) * QZ_D + d);
}

#include "qz_code.cuh" /* qz_code, qz_rcp, qz_code_fast */

/* store the codes of QZ_EPL consecutive elements starting at d = lane*QZ_EPL */
__device__ __forceinline__ void qz_store(unsigned char *row, int lane, const int (&cd)[QZ_EPL]) {
#if SALE_EST_BITS == 8
#if QZ_EPL == 4
    sale_u32 w = (sale_u32)(cd[0] & 255) | ((sale_u32)(cd[1] & 255) << 8) | ((sale_u32)(cd[2] & 255) << 16) |
                 ((sale_u32)(cd[3] & 255) << 24);
    *(sale_u32 *)(row + lane * 4) = w;
#else
    sale_u16 w = (sale_u16)((cd[0] & 255) | ((cd[1] & 255) << 8));
    *(sale_u16 *)(row + lane * 2) = w;
#endif
#else /* 4-bit, two per byte, low nibble = even element */
#if QZ_EPL == 4
    sale_u16 w = (sale_u16)((cd[0] & 15) | ((cd[1] & 15) << 4) | ((cd[2] & 15) << 8) | ((cd[3] & 15) << 12));
    *(sale_u16 *)(row + lane * 2) = w;
#else
    row[lane] = (unsigned char)((cd[0] & 15) | ((cd[1] & 15) << 4));
#endif
#endif
}

__device__ __forceinline__ void qz_load(const sale_u16 *src, float (&x)[QZ_EPL]) {
#if QZ_EPL == 4
    uint2 u = *(const uint2 *)src;
    x[0] = sale_to_f32((sale_u16)(u.x & 0xffff));
    x[1] = sale_to_f32((sale_u16)(u.x >> 16));
    x[2] = sale_to_f32((sale_u16)(u.y & 0xffff));
    x[3] = sale_to_f32((sale_u16)(u.y >> 16));
#else
    sale_u32 u = *(const sale_u32 *)src;
    x[0] = sale_to_f32((sale_u16)(u & 0xffff));
    x[1] = sale_to_f32((sale_u16)(u >> 16));
#endif
}

__device__ __forceinline__ float qz_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* (b) query codes and scales, QZ_QROWS rows per CTA (a tile). A row is
 * QZ_LPR lanes of 16-byte loads (8 elements a lane), so one warp load covers
 * QZ_RPL rows and a warp's QZ_QRW rows are QZ_QL loads a lane. The work loop
 * issues a tile's loads (qz_q_fetch) before it computes the tile before it
 * (qz_q_rows): a block keeps one tile of Q in flight while it computes the
 * other, instead of one 256-byte row a warp. Per element the arithmetic is
 * the row kernel's as before (the max is exact, in whatever order). */
#define QZ_LPR (QZ_D / 8)                                /* lanes per row */
#define QZ_RPL (32 / QZ_LPR)                             /* rows per warp load */
#define QZ_QRW (SALE_QZ_QROWS / (SALE_QZ_THREADS / 32))  /* rows per warp */
#define QZ_QL (QZ_QRW / QZ_RPL)                          /* loads per lane */
typedef struct qz_qtile {
    uint4 u[QZ_QL]; /* the lane's 8 elements of its QZ_QL rows (zero past N) */
    float m;        /* threads < D: the mean of column threadIdx.x */
} qz_qtile;

/* the row of this lane's load i of a tile (its columns: (lane % QZ_LPR) * 8 on) */
__device__ __forceinline__ int qz_q_row(int tile, int i) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    return tile * SALE_QZ_QROWS + warp * QZ_QRW + i * QZ_RPL + lane / QZ_LPR;
}

__device__ __forceinline__ void qz_q_fetch(const sale_params &p, int tile, int h, int b, qz_qtile &f) {
    const sale_u16 *qg = (const sale_u16 *)p.q + (long long)b * p.q_sb + (long long)h * p.q_sh +
                         ((threadIdx.x & 31) % QZ_LPR) * 8;
#pragma unroll
    for (int i = 0; i < QZ_QL; i++) {
        const int row = qz_q_row(tile, i);
        f.u[i] = row < p.N ? *(const uint4 *)(qg + (long long)row * p.q_sn) : make_uint4(0u, 0u, 0u, 0u);
    }
    f.m = threadIdx.x < QZ_D ? qz_mean(p, b, h, threadIdx.x) : 0.f;
}

/* store the codes of 8 consecutive elements starting at column c0 */
__device__ __forceinline__ void qz_store8(unsigned char *row, int c0, const int (&cd)[8]) {
#if SALE_EST_BITS == 8
    uint2 w;
    w.x = (sale_u32)(cd[0] & 255) | ((sale_u32)(cd[1] & 255) << 8) | ((sale_u32)(cd[2] & 255) << 16) |
          ((sale_u32)(cd[3] & 255) << 24);
    w.y = (sale_u32)(cd[4] & 255) | ((sale_u32)(cd[5] & 255) << 8) | ((sale_u32)(cd[6] & 255) << 16) |
          ((sale_u32)(cd[7] & 255) << 24);
    *(uint2 *)(row + c0) = w;
#else /* 4-bit, two per byte, low nibble = even element */
    sale_u32 w = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) w |= (sale_u32)(cd[e] & 15) << (4 * e);
    *(sale_u32 *)(row + c0 / 2) = w;
#endif
}

__device__ __forceinline__ void qz_q_rows(const sale_params &p, int tile, int h, int b, const qz_qtile &f) {
    __shared__ float smean[QZ_D];
    const int lane = threadIdx.x & 31, c0 = (lane % QZ_LPR) * 8;
    const long long bh = (long long)b * p.Hq + h;
    if (threadIdx.x < QZ_D) smean[threadIdx.x] = f.m;
    __syncthreads();
    float mu[8];
#pragma unroll
    for (int e = 0; e < 8; e++) mu[e] = smean[c0 + e];
    unsigned char *codes = (unsigned char *)p.qcode + bh * p.N * QZ_RBC;
    float *qs = (float *)p.qscale + bh * p.N;
#pragma unroll
    for (int i = 0; i < QZ_QL; i++) {
        const int row = qz_q_row(tile, i);
        const sale_u32 w[4] = {f.u[i].x, f.u[i].y, f.u[i].z, f.u[i].w};
        float x[8];
        float am = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            x[e] = __fsub_rn(sale_to_f32((sale_u16)(e & 1 ? w[e / 2] >> 16 : w[e / 2] & 0xffff)), mu[e]);
            am = fmaxf(am, fabsf(x[e]));
        }
#pragma unroll
        for (int o = QZ_LPR / 2; o > 0; o >>= 1) am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
        const float s = __fdiv_rn(am, QZ_QMAX), rs = qz_rcp(s);
        int cd[8];
        int bad = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) cd[e] = qz_code_fast(x[e], rs, QZ_QMAX, &bad);
        if (bad) { /* rare (see qz_code_fast): this lane's codes exactly */
#pragma unroll
            for (int e = 0; e < 8; e++) cd[e] = qz_code(x[e], s, QZ_QMAX);
        }
        if (row < p.N) {
            qz_store8(codes + (long long)row * QZ_RBC, c0, cd);
            if (c0 == 0) qs[row] = s;
        }
    }
}

/* (c) key codes and scales per key block, K', and c_j for every q head of the
 * group. The keys' loads go out first; the means (the kv head's and up to
 * QZ_GMAX q heads') come from L2 meanwhile, all at once. */
#define QZ_KR (SALE_BLOCK_K / 8) /* rows per warp */
#define QZ_GMAX 8                /* q heads' means a block holds at once */
#define QZ_MLD (((1 + QZ_GMAX) * QZ_D + SALE_QZ_THREADS - 1) / SALE_QZ_THREADS)

/* smk = the means of kv head kvh (when g0 == 0), smq[g] = those of q head
 * kvh * group + g0 + g for g < ng = min(group - g0, QZ_GMAX), and zeros for
 * g >= ng (qz_cterm's partials of the heads past ng come out 0 without a
 * select). smq is fp64 already: c_j multiplies in fp64, and converting here
 * is once per block, not once per key row. */
__device__ __forceinline__ void qz_k_means(const sale_params &p, int b, int kvh, int g0, float *smk,
                                           double (*smq)[QZ_D]) {
    const int ng = p.group - g0 < QZ_GMAX ? p.group - g0 : QZ_GMAX;
    const int t0 = g0 == 0 ? 0 : QZ_D, n = (1 + ng) * QZ_D; /* t = g * D + d, g = 0 the kv head */
    const float *km = (const float *)p.kmean + ((long long)b * p.Hkv + kvh) * QZ_D;
    const float *qm = (const float *)p.qmean + ((long long)b * p.Hq + kvh * p.group + g0 - 1) * QZ_D;
    float v[QZ_MLD];
#pragma unroll
    for (int j = 0; j < QZ_MLD; j++) {
        const int t = threadIdx.x + j * SALE_QZ_THREADS;
        v[j] = t >= t0 && t < n ? __ldcg((t < QZ_D ? km : qm) + t) : 0.f; /* written in this launch: from L2 */
    }
#pragma unroll
    for (int j = 0; j < QZ_MLD; j++) {
        const int t = threadIdx.x + j * SALE_QZ_THREADS;
        if (t >= t0 && t < (1 + QZ_GMAX) * QZ_D) {
            if (t < QZ_D) smk[t] = v[j];
            else smq[t / QZ_D - 1][t % QZ_D] = (double)v[j];
        }
    }
}

/* c_j = fp32 of the fp64 dot qmean(h) . K'_j (as the CPU reference) for
 * the NH q heads g .. g + NH - 1 of the group (those < ng) and key row row,
 * whose fp64 values this lane holds at its QZ_EPL columns (xd). Each sum is a
 * warp reduction;
 * reducing them one by one was a 5-step fp64 butterfly each, a sixth of the
 * kernel's instructions. Here a row's NH sums are reduced together,
 * transposed: each step sends half of the lane's remaining partials to its
 * partner and adds the other half, so NH partials take NH/2 + NH/4 + .. + 1
 * exchanges, then the plain butterfly for the steps left (6 instead of 20 for
 * NH = 4). No select is needed: lane bits 4, 3 (as many as NH needs) permute
 * which head a slot holds (head = slot ^ hp), so that both partners keep
 * their low slots and send their high ones; at the end lane l holds the sum
 * of head g + hp. The fp64 sum is added in another order than before, still exactly per
 * product (two fp32 multiply exactly in fp64) and in fp64 up to the one
 * rounding to fp32 that the reference's sum is compared at. Every lane runs
 * every shuffle (the caller's branches are block-uniform). */
template <int NH>
__device__ __forceinline__ void qz_cterm(const sale_params &p, const double (&xd)[QZ_EPL], const double (*smq)[QZ_D],
                                         int g, int ng, int row, float *ct) {
    constexpr int HB = NH == 4 ? 2 : NH == 2 ? 1 : 0;
    const int lane = threadIdx.x & 31, hp = (lane >> (5 - HB)) & (NH - 1);
    double a[NH];
#pragma unroll
    for (int h = 0; h < NH; h++) {
        const double *q = smq[g + (h ^ hp)] + lane * QZ_EPL; /* a row of zeros past ng */
        double t = 0.0;
#pragma unroll
        for (int e = 0; e < QZ_EPL; e += 2) {
            const double2 v = *(const double2 *)(q + e);
            t += v.x * xd[e];
            t += v.y * xd[e + 1];
        }
        a[h] = t;
    }
#pragma unroll
    for (int k = 0; k < HB; k++) { /* heads: keep slots [0, half), add the partner's [half, 2 half) */
        const int half = NH >> (k + 1);
#pragma unroll
        for (int h = 0; h < half; h++) a[h] += __shfl_xor_sync(0xffffffffu, a[h + half], 16 >> k);
    }
    double c = a[0];
#pragma unroll
    for (int o = 16 >> HB; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    if (row < p.N && g + hp < ng && (lane & ((32 >> HB) - 1)) == 0) ct[(long long)(g + hp) * p.N + row] = (float)c;
}

__device__ __forceinline__ void qz_k_block(const sale_params &p, int kb, int kvh, int b) {
    __shared__ float wmax[SALE_QZ_THREADS / 32];
    __shared__ float smk[QZ_D];
    __shared__ double smq[QZ_GMAX][QZ_D];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int N = p.N;
    const long long bk = (long long)b * p.Hkv + kvh;
    const sale_u16 *kg = (const sale_u16 *)p.k + (long long)b * p.k_sb + (long long)kvh * p.k_sh;
    float x[QZ_KR][QZ_EPL];
#pragma unroll
    for (int i = 0; i < QZ_KR; i++) {
        int row = kb * SALE_BLOCK_K + warp + 8 * i;
        if (row < N) {
            qz_load(kg + (long long)row * p.k_sn + lane * QZ_EPL, x[i]);
        } else {
#pragma unroll
            for (int e = 0; e < QZ_EPL; e++) x[i][e] = 0.f;
        }
    }
    qz_k_means(p, b, kvh, 0, smk, smq);
    __syncthreads();
    float mu[QZ_EPL];
#pragma unroll
    for (int e = 0; e < QZ_EPL; e++) mu[e] = smk[lane * QZ_EPL + e];
    float am = 0.f;
#pragma unroll
    for (int i = 0; i < QZ_KR; i++) {
        int row = kb * SALE_BLOCK_K + warp + 8 * i;
        if (row < N) {
#pragma unroll
            for (int e = 0; e < QZ_EPL; e++) {
                x[i][e] = __fsub_rn(x[i][e], mu[e]);
                am = fmaxf(am, fabsf(x[i][e]));
            }
        }
    }
    am = qz_warp_max(am);
    if (lane == 0) wmax[warp] = am;
    __syncthreads();
    am = 0.f;
#pragma unroll
    for (int w = 0; w < SALE_QZ_THREADS / 32; w++) am = fmaxf(am, wmax[w]);
    const float s = __fdiv_rn(am, QZ_QMAX);
    if (threadIdx.x == 0) ((float *)p.kscale)[bk * p.nkb + kb] = s;
    /* K' in the input dtype: the keys the exact scores of fused/select/attend
     * use, so that the running max and sum are in the estimate's units */
    sale_u16 *kc = (sale_u16 *)p.kcent + bk * N * QZ_D;
#pragma unroll
    for (int i = 0; i < QZ_KR; i++) {
        int row = kb * SALE_BLOCK_K + warp + 8 * i;
        if (row < N) {
#if QZ_EPL == 4
            uint2 w;
            w.x = sale_pack2(x[i][0], x[i][1]);
            w.y = sale_pack2(x[i][2], x[i][3]);
            *(uint2 *)(kc + (long long)row * QZ_D + lane * 4) = w;
#else
            *(sale_u32 *)(kc + (long long)row * QZ_D + lane * 2) = sale_pack2(x[i][0], x[i][1]);
#endif
        }
    }
    unsigned char *codes = (unsigned char *)p.kcode + bk * N * QZ_RBC;
    const float rs = qz_rcp(s);
#pragma unroll
    for (int i = 0; i < QZ_KR; i++) {
        int row = kb * SALE_BLOCK_K + warp + 8 * i;
        if (row < N) {
            int cd[QZ_EPL];
            int bad = 0;
#pragma unroll
            for (int e = 0; e < QZ_EPL; e++) cd[e] = qz_code_fast(x[i][e], rs, QZ_QMAX, &bad);
            if (bad) { /* rare (see qz_code_fast): this row's codes exactly */
#pragma unroll
                for (int e = 0; e < QZ_EPL; e++) cd[e] = qz_code(x[i][e], s, QZ_QMAX);
            }
            qz_store(codes + (long long)row * QZ_RBC, lane, cd);
        }
    }
    /* c_j, QZ_GMAX q heads at a time (their means in shared memory), a row
     * at a time (K'_j in fp64 is 8 registers; holding more rows or the
     * heads' means across rows spills), the heads 4 at a time (qz_cterm; a
     * group of 3, 5, 6 or 7 pads with zero means), or one at a time for
     * groups of 1 and 2, where 4 would be mostly padding */
    for (int g0 = 0; g0 < p.group; g0 += QZ_GMAX) {
        if (g0 > 0) { /* the next QZ_GMAX q heads' means */
            __syncthreads();
            qz_k_means(p, b, kvh, g0, smk, smq);
            __syncthreads();
        }
        const int ng = p.group - g0 < QZ_GMAX ? p.group - g0 : QZ_GMAX;
        float *ct = (float *)p.cterm + ((long long)b * p.Hq + kvh * p.group + g0) * N;
#pragma unroll
        for (int i = 0; i < QZ_KR; i++) {
            const int row = kb * SALE_BLOCK_K + warp + 8 * i;
            double xd[QZ_EPL];
#pragma unroll
            for (int e = 0; e < QZ_EPL; e++) xd[e] = (double)x[i][e];
            if (ng >= 3) {
#pragma unroll 1
                for (int g = 0; g < ng; g += 4) qz_cterm<4>(p, xd, smq, g, ng, row, ct);
            } else {
#pragma unroll 1
                for (int g = 0; g < ng; g++) qz_cterm<1>(p, xd, smq, g, ng, row, ct);
            }
        }
    }
}

/* x / d for 0 <= x < 2^31 without a division: the work loop decodes every
 * item into (batch, head, tile or key block), and the runtime divisions of
 * that (a reciprocal and a correction each) were an eighth of the kernel's
 * instructions. m = ceil(2^s / d) = (2^s + e) / d with 0 <= e < d, s = 31
 * + l, l = ceil(log2 d), so m < 2^32 and x m / 2^s = x / d + x e / (d 2^s),
 * where x e / (d 2^s) < 2^31 d / (d 2^(31 + l)) = 2^-l <= 1 / d: less than
 * the 1/d the fraction of x / d keeps from the next integer, so the floor is
 * x / d's (the round-up method of Granlund and Montgomery). d = 1 gives m =
 * 2^31, s = 31. Made once per block (a 64-bit division), kept in shared
 * memory: the work loop has no registers to spare. */
__device__ __forceinline__ uint2 qz_div_make(unsigned d) {
    const unsigned s = 31u + (32u - (unsigned)__clz((int)(d - 1u)));
    return make_uint2((unsigned)(((1ull << s) + d - 1u) / d), s);
}

__device__ __forceinline__ int qz_div(int x, uint2 m) {
    return (int)(((unsigned long long)(unsigned)x * m.x) >> m.y);
}

/* (a+b+c) the one launch: grid M + W blocks, M = chunks * (Hq + Hkv) * B.
 * Every block first takes a ticket (an atomic counter). The first M tickets
 * each sum the partial of one chunk of one (batch, head) and count it on the
 * head's counter; the one that brings in the head's last chunk writes that
 * head's means, then counts the head ready. So the means of different heads
 * are finished in parallel, by as many blocks as there are heads. The other
 * W blocks wait until every head is ready, then walk the code items (Q row
 * tiles, then K blocks, per batch entry) with a stride of W (a K block needs
 * the means of its kv head and of every q head of its group).
 * No deadlock, whatever the scheduler does: tickets are handed out in the
 * order blocks start, mean blocks (tickets < M) never wait, and only code
 * blocks (tickets >= M) wait, on mean blocks, which therefore all already
 * run. Every counter is back to zero when the launch ends, ready for the
 * next (the host zeroes them once: sale_params.sync, sale_layout_sync_words):
 * a head's by the block that finishes it (all nch chunks of the head have
 * counted, nothing reads it again), the three global ones by the last block
 * to finish. (Resetting the heads' counters there instead, in a loop, costs
 * the code path registers: 76 on sm_80 against 64.)
 * One launch instead of two keeps sale_attention's host time down; W is
 * capped (SALE_QZ_WORK_BLOCKS) so that the counters see few atomics. */
/* blocks per SM the registers must allow (<= 80 a thread): 3 keep the 320
 * mean blocks of N 64K, 32 + 8 heads, in one wave on 132 SMs, and three
 * tiles of Q in flight per SM while three compute. Key blocks of 64 keys
 * at head_dim 128 hold twice the keys: 2 (as before). */
#define QZ_MINB (SALE_BLOCK_K * QZ_D <= 32 * 128 ? 3 : 2)
extern "C" __global__ void __launch_bounds__(SALE_QZ_THREADS, QZ_MINB) sale_quantize_kernel(const sale_params p) {
    __shared__ unsigned int ticket_s;
    /* [0] tickets, [1] heads whose means are written, [2] blocks finished,
     * [3 + b * Y + y] chunks of (batch b, head y) summed */
    unsigned int *ctr = (unsigned int *)p.sync;
    const int Y = p.Hq + p.Hkv, nch = sale_layout_mean_chunks(p.N);
    const unsigned int M = (unsigned int)(nch * Y * p.B), heads = (unsigned int)(Y * p.B);
    if (threadIdx.x == 0) ticket_s = atomicAdd(ctr, 1u);
    __syncthreads();
    const unsigned int t = ticket_s;
    if (t < M) {
        const unsigned int by = t / nch; /* b * Y + y */
        qz_mean_chunk(p, (int)(t % nch), (int)(by % Y), (int)(by / Y));
        __syncthreads();
        if (threadIdx.x == 0) ticket_s = atomicAdd(ctr + 3 + by, 1u);
        __syncthreads();
        if (ticket_s == (unsigned int)nch - 1) { /* the head's last chunk: its other partials are in */
            __threadfence();
            qz_finish_head(p, (int)(by % Y), (int)(by / Y));
            __threadfence();
            __syncthreads();
            if (threadIdx.x == 0) {
                atomicExch(ctr + 3 + by, 0u); /* its nch chunks are counted: free for the next launch */
                atomicAdd(ctr + 1, 1u);       /* this head's means are ready */
            }
        }
    } else {
        /* The work loop's constants, in shared memory rather than registers:
         * read again after each item's barrier, they leave the registers to
         * the tile and key code (held in registers across the loop, some of
         * them were spilled). items < 2^31 (sale_layout_plan). */
        __shared__ struct {
            uint2 dv[3]; /* qz_div by per_b, qt, nkb */
            int qt, nq, per_b, items, stride;
        } wl;
        if (threadIdx.x == 0) {
            const int qt = (p.N + SALE_QZ_QROWS - 1) / SALE_QZ_QROWS, nq = p.Hq * qt, per_b = nq + p.Hkv * p.nkb;
            wl.qt = qt, wl.nq = nq, wl.per_b = per_b, wl.items = per_b * p.B, wl.stride = (int)(gridDim.x - M);
            wl.dv[0] = qz_div_make((unsigned)per_b);
            wl.dv[1] = qz_div_make((unsigned)qt);
            wl.dv[2] = qz_div_make((unsigned)p.nkb);
            while (*(volatile unsigned int *)(ctr + 1) < heads) __nanosleep(64);
            __threadfence();
        }
        __syncthreads();
        /* a run of Q tiles: each tile's loads go out one item ahead (f), so
         * while this block computes one tile the next is on its way. An
         * item is decoded twice (fetch, then rows): with qz_div that is
         * cheaper than the registers to carry its (tile, head, batch). */
        for (int w = (int)(t - M); w < wl.items;) {
            int b = qz_div(w, wl.dv[0]), r = w - b * wl.per_b;
            if (r < wl.nq) {
                qz_qtile f;
                int h = qz_div(r, wl.dv[1]);
                qz_q_fetch(p, r - h * wl.qt, h, b, f);
                for (bool more = true; more;) {
                    const int wn = w + wl.stride, bn = qz_div(wn, wl.dv[0]), rn = wn - bn * wl.per_b;
                    more = wn < wl.items && rn < wl.nq;
                    const qz_qtile cur = f;
                    if (more) {
                        const int hn = qz_div(rn, wl.dv[1]);
                        qz_q_fetch(p, rn - hn * wl.qt, hn, bn, f);
                    }
                    h = qz_div(r, wl.dv[1]);
                    qz_q_rows(p, r - h * wl.qt, h, b, cur);
                    __syncthreads(); /* the next item rewrites the shared means */
                    w = wn, b = bn, r = rn;
                }
            } else {
                const int kvh = qz_div(r - wl.nq, wl.dv[2]);
                qz_k_block(p, r - wl.nq - kvh * p.nkb, kvh, b);
                __syncthreads(); /* the next item rewrites the shared means */
                w += wl.stride;
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(ctr + 2, 1u) == gridDim.x - 1) { /* last one out: every ticket is taken, nobody waits */
            atomicExch(ctr, 0u);
            atomicExch(ctr + 1, 0u);
            atomicExch(ctr + 2, 0u);
        }
    }
}

/* (d) the log-sum-exp in the caller's units: the exact pass scored against K',
 * so lse_i += scale * q_i . kmean (fp32, one warp per row). Launched after
 * the attention kernels when the caller asked for lse. */
extern "C" __global__ void __launch_bounds__(SALE_QZ_THREADS) sale_quantize_lse_kernel(const sale_params p) {
    if (SALE_WR_TIMELINE) return; /* a measuring build: lse holds the rows kernel's stamps */
    const int h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int N = p.N;
    const long long bh = (long long)b * p.Hq + h;
    const sale_u16 *qg = (const sale_u16 *)p.q + (long long)b * p.q_sb + (long long)h * p.q_sh;
    const float *mean = (const float *)p.kmean + ((long long)b * p.Hkv + h / p.group) * QZ_D;
    float mu[QZ_EPL];
#pragma unroll
    for (int e = 0; e < QZ_EPL; e++) mu[e] = mean[lane * QZ_EPL + e];
    float *lse = (float *)p.lse + bh * N;
    for (int rr = warp; rr < SALE_QZ_QROWS; rr += SALE_QZ_THREADS / 32) {
        int row = blockIdx.x * SALE_QZ_QROWS + rr;
        if (row >= N) break;
        float x[QZ_EPL];
        qz_load(qg + (long long)row * p.q_sn + lane * QZ_EPL, x);
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < QZ_EPL; e++) acc = fmaf(x[e], mu[e], acc);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) lse[row] += p.scale * acc;
    }
}
