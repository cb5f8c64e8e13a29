// alu_beside_wgmma.cu — what a wgmma in flight costs the ALU work of its own
// warpgroup (sm_90a, standalone; twentieth session's open question, NOTES.md).
//
// The rows attend kernel's timeline showed S(0)'s softmax at ~645 cycles with
// no wgmma of its warpgroup in flight and ~1,043 with S(1) (register A
// operand) running beside it (rows_reorder.patch), so moving work under a
// wgmma bought nothing. This measures it directly. A CTA is one warpgroup
// (128 threads) doing, ITERS times: issue a wgmma group (or none), then the
// softmax of a 64 x 64 tile held in registers (the rows kernel's arithmetic:
// row maxima over the quad, ex2 of x * scale - max, row sums), then wait for
// the group. Modes:
//   0  the softmax alone
//   1  beside S = Q K^T, 8 x m64n64k16, both operands from shared memory (SS)
//   2  beside the same S with Q from registers (RS: the landed kernel's S)
//   3  beside P V, 4 x m64n128k16, P from registers (RS, V transposed: every
//      variant's P V)
//   4  the S group of mode 2 alone (its latency)
//   5  the P V group of mode 3 alone
//   6  the S group of mode 1 alone
//   7  the softmax with its 32 exponentials as 16 ex2.approx.f16x2 (x rounded to
//      f16, the result back to fp32), alone
//   8  mode 7 beside the P V of mode 3
//   9  the softmax with an eighth of its exponentials (every eighth 8-key
//      column group) by polynomial on the FMA pipe (the kernel's SALE_EX2_POLY), alone
//  10  mode 9 beside the P V of mode 3
//  11  the softmax with its exponentials as ex2.approx.ftz.bf16x2 (x rounded to
//      bf16; the result is P as the P V operand wants it), alone
//  12  mode 11 beside the P V of mode 3
// (the f16x2 and polynomial exponentials are the kernels' own:
// ex2_variants.cuh, as rows_ex2h.patch gives the kernels)
// Prints, for 1 and 2 CTAs an SM (the rows kernel runs 2), the cycles of the
// softmax part and of the whole iteration (clock64 around each, lane 0 of
// warp 0, the median CTA). Data are random bf16; the values do not matter for
// timing, only that the work is the kernel's.
//
// build (no GPU needed): bench/wgmma/alu_beside_wgmma.sh   run: ./alu_beside_wgmma
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#define SALE_DEV __device__ __forceinline__
#define SALE_DTYPE 1 /* bf16 */
typedef unsigned int sale_u32;
#include "sale_abi.h"
#include "wgmma_mma.cuh" /* dw_mma_ss, dw_mma_rs, and wgmma_common.cuh */
#include "ex2_variants.cuh" /* sale_ex2_f16x2, sale_ex2_poly (bench/wgmma; the measured kernels: rows_ex2h.patch) */

#define CHECK(x)                                                                                                     \
    do {                                                                                                             \
        cudaError_t e_ = (x);                                                                                        \
        if (e_ != cudaSuccess) {                                                                                     \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                                                 \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

static constexpr int ITERS = 256;

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// two exponentials a MUFU op in bf16: the packed result is P's register pair
// (lo = 2^x0); unpacked again here for the row sums
__device__ __forceinline__ void ex2b2(float x0, float x1, float &y0, float &y1) {
    sale_u32 p;
    asm volatile("{\n.reg .b32 t;\n"
                 "cvt.rn.bf16x2.f32 t, %2, %1;\n"
                 "ex2.approx.ftz.bf16x2 %0, t;\n}"
                 : "=r"(p)
                 : "f"(x0), "f"(x1));
    y0 = __uint_as_float(p << 16);
    y1 = __uint_as_float(p & 0xffff0000u);
}

// the softmax of the rows kernel's DwRowState on a 32-float tile, in place;
// m, l carried (so the compiler cannot fold iterations together). EX: 0 one
// ex2.approx.f32 an element; 1 f16x2; 2 an eighth by polynomial; 3 bf16x2
// (the row factors stay fp32)
template <int EX>
__device__ __forceinline__ void softmax32(float (&x)[32], float &m0, float &m1, float &l0, float &l1, float sl2) {
    float x0 = m0, x1 = m1;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        x0 = fmaxf(x0, fmaxf(x[nt * 4 + 0], x[nt * 4 + 1]));
        x1 = fmaxf(x1, fmaxf(x[nt * 4 + 2], x[nt * 4 + 3]));
    }
    x0 = quad_max(x0);
    x1 = quad_max(x1);
    const float a0 = ex2((m0 - x0) * sl2), a1 = ex2((m1 - x1) * sl2);
    m0 = x0, m1 = x1;
    const float n0 = -x0 * sl2, n1 = -x1 * sl2;
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        float *e = x + nt * 4;
        if (EX == 1) {
            sale_ex2_f16x2(fmaf(e[0], sl2, n0), fmaf(e[1], sl2, n0), e[0], e[1]);
            sale_ex2_f16x2(fmaf(e[2], sl2, n1), fmaf(e[3], sl2, n1), e[2], e[3]);
        } else if (EX == 3) {
            ex2b2(fmaf(e[0], sl2, n0), fmaf(e[1], sl2, n0), e[0], e[1]);
            ex2b2(fmaf(e[2], sl2, n1), fmaf(e[3], sl2, n1), e[2], e[3]);
        } else if (EX == 2 && (nt & 7) == 7) {
            e[0] = sale_ex2_poly(fmaf(e[0], sl2, n0));
            e[1] = sale_ex2_poly(fmaf(e[1], sl2, n0));
            e[2] = sale_ex2_poly(fmaf(e[2], sl2, n1));
            e[3] = sale_ex2_poly(fmaf(e[3], sl2, n1));
        } else {
            e[0] = ex2(fmaf(e[0], sl2, n0));
            e[1] = ex2(fmaf(e[1], sl2, n0));
            e[2] = ex2(fmaf(e[2], sl2, n1));
            e[3] = ex2(fmaf(e[3], sl2, n1));
        }
        s0 += e[0] + e[1];
        s1 += e[2] + e[3];
    }
    l0 = l0 * a0 + s0;
    l1 = l1 * a1 + s1;
}

template <int MODE>
__global__ void __launch_bounds__(128) bench(const unsigned short *src, unsigned long long *out, float *sink) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const sale_u32 base = (sale_u32)__cvta_generic_to_shared(smem);
    const int tid = threadIdx.x, lane = tid & 31;
    // Q, K, V tiles: 16 KB each (64 x 128 bf16), filled from global
    for (int i = tid; i < 3 * 8192; i += 128) ((unsigned short *)smem)[i] = src[(blockIdx.x * 997 + i) % (1 << 20)];
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const sale_u32 sQ = base, sK = base + 16384, sV = base + 32768;
    const sale_u64 qdesc = dw_desc(sQ, 16, 1024), kdesc = dw_desc(sK, 16, 1024), vdesc = dw_desc(sV, 8192, 1024);
    float S[32], X[32], O[64];
    sale_u32 QA[8][4], P[4][4];
    for (int i = 0; i < 32; i++) X[i] = (float)((tid * 31 + i * 7) % 97) * 0.01f;
    for (int i = 0; i < 32; i++) S[i] = 0.f;
    for (int i = 0; i < 64; i++) O[i] = 0.f;
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 4; j++) QA[k][j] = 0x3f803f80u ^ (sale_u32)(tid * 4 + k + j);
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) P[k][j] = 0x3c003c00u ^ (sale_u32)(tid + k * 4 + j);
    float m0 = -1e30f, m1 = -1e30f, l0 = 0.f, l1 = 0.f;
    const float sl2 = 0.1275f;
    unsigned long long alu = 0, tot = 0;
    for (int it = 0; it < ITERS; it++) {
        dw_fence();
        if (MODE == 1 || MODE == 6) {
#pragma unroll
            for (int ks = 0; ks < 8; ks++)
                dw_mma_ss(S, qdesc + ((((ks >> 2) * 8192 + (ks & 3) * 32)) >> 4),
                          kdesc + ((((ks >> 2) * 8192 + (ks & 3) * 32)) >> 4), ks);
        }
        if (MODE == 2 || MODE == 4) {
#pragma unroll
            for (int ks = 0; ks < 8; ks++) dw_mma_rs(S, QA[ks], kdesc + ((((ks >> 2) * 8192 + (ks & 3) * 32)) >> 4), ks);
        }
        if (MODE == 3 || MODE == 5 || MODE == 8 || MODE == 10 || MODE == 12) {
#pragma unroll
            for (int kk = 0; kk < 4; kk++) dw_mma_rs(O, P[kk], vdesc + ((kk * 2048) >> 4));
        }
        dw_commit();
        const unsigned long long t0 = clock64();
        if (MODE <= 3) softmax32<0>(X, m0, m1, l0, l1, sl2);
        if (MODE == 7 || MODE == 8) softmax32<1>(X, m0, m1, l0, l1, sl2);
        if (MODE == 9 || MODE == 10) softmax32<2>(X, m0, m1, l0, l1, sl2);
        if (MODE == 11 || MODE == 12) softmax32<3>(X, m0, m1, l0, l1, sl2);
        const unsigned long long t1 = clock64();
        dw_wait<0>();
        dw_fence_acc(S);
        dw_fence_acc(O);
        const unsigned long long t2 = clock64();
        alu += t1 - t0;
        tot += t2 - t0;
        // feed the results back so nothing is dead
        X[0] += S[0] * 1e-9f + O[0] * 1e-9f;
        X[17] += S[31] * 1e-9f + O[63] * 1e-9f;
    }
    float acc = l0 + l1 + m0 + m1;
    for (int i = 0; i < 32; i++) acc += X[i] + S[i];
    for (int i = 0; i < 64; i++) acc += O[i];
    sink[blockIdx.x * 128 + tid] = acc;
    if (tid == 0) {
        out[blockIdx.x * 2 + 0] = alu / ITERS;
        out[blockIdx.x * 2 + 1] = tot / ITERS;
    }
    (void)lane;
}

template <int MODE>
static void run(int sms, int per_sm, const unsigned short *dsrc, const char *what) {
    const int grid = sms * per_sm, smem = 3 * 16384;
    CHECK(cudaFuncSetAttribute(bench<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    unsigned long long *dout;
    float *dsink;
    CHECK(cudaMalloc(&dout, sizeof(unsigned long long) * 2 * grid));
    CHECK(cudaMalloc(&dsink, sizeof(float) * 128 * grid));
    for (int rep = 0; rep < 2; rep++) bench<MODE><<<grid, 128, smem>>>(dsrc, dout, dsink); // the second is read
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<unsigned long long> h(2 * grid);
    CHECK(cudaMemcpy(h.data(), dout, sizeof(unsigned long long) * 2 * grid, cudaMemcpyDeviceToHost));
    std::vector<unsigned long long> a(grid), t(grid);
    for (int i = 0; i < grid; i++) a[i] = h[2 * i], t[i] = h[2 * i + 1];
    std::sort(a.begin(), a.end());
    std::sort(t.begin(), t.end());
    printf("| %d | %d | %-58s | %6llu | %6llu |\n", MODE, per_sm, what, a[grid / 2], t[grid / 2]);
    CHECK(cudaFree(dout));
    CHECK(cudaFree(dsink));
}

int main() {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    std::vector<unsigned short> h(1 << 20);
    for (size_t i = 0; i < h.size(); i++) h[i] = (unsigned short)(0x3c00 + (i * 2654435761u >> 22) % 512); // bf16 ~[0.0078, 2)
    unsigned short *dsrc;
    CHECK(cudaMalloc(&dsrc, h.size() * 2));
    CHECK(cudaMemcpy(dsrc, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    printf("cycles an iteration (median CTA; %d SMs, %d iterations a CTA)\n\n", sms, ITERS);
    printf("| mode | CTAs an SM | what | softmax part | whole iteration |\n|---|---|---|---|---|\n");
    for (int per_sm = 1; per_sm <= 2; per_sm++) {
        run<0>(sms, per_sm, dsrc, "softmax alone");
        run<1>(sms, per_sm, dsrc, "softmax beside S, SS (Q and K in shared memory)");
        run<2>(sms, per_sm, dsrc, "softmax beside S, RS (Q in registers)");
        run<3>(sms, per_sm, dsrc, "softmax beside P V, RS (P in registers)");
        run<4>(sms, per_sm, dsrc, "S, RS, alone");
        run<5>(sms, per_sm, dsrc, "P V, RS, alone");
        run<6>(sms, per_sm, dsrc, "S, SS, alone");
        run<7>(sms, per_sm, dsrc, "softmax, ex2 two a MUFU op (f16x2), alone");
        run<8>(sms, per_sm, dsrc, "softmax, ex2 f16x2, beside P V, RS");
        run<9>(sms, per_sm, dsrc, "softmax, an eighth of ex2 by polynomial (FMA), alone");
        run<10>(sms, per_sm, dsrc, "softmax, an eighth by polynomial, beside P V, RS");
        run<11>(sms, per_sm, dsrc, "softmax, ex2 two a MUFU op (bf16x2), alone");
        run<12>(sms, per_sm, dsrc, "softmax, ex2 bf16x2, beside P V, RS");
    }
    CHECK(cudaFree(dsrc));
    return 0;
}
