/* est_floor.cu — host driver: builds inputs on the GPU, verifies every kernel of
 * est_wgmma.cu bit for bit against a CPU reference on small shapes, checks the
 * raw s32 accumulators of one wgmma tile, cross-checks the kernels against each
 * other at the timed sizes, and times them (CUDA events, warm-up, L2 flush,
 * median of 7, twice). Usage: est_floor [Ns...]  (default 65536 131072) */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <vector>
#include <algorithm>
#include "est_wgmma.cu"

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)

static const float Z0 = 4.1f;         /* thresholds: ~10% of blocks kept (normal approx.) */
static const float SIGMA = 61305.f;   /* std of a dot of two random 128-code rows in [-127,127] */

__host__ __device__ inline unsigned hsh(unsigned x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
__device__ inline unsigned rnd(unsigned seed, unsigned long long i) {
    return hsh(hsh(seed ^ (unsigned)(i >> 32) * 0x9E3779B9u) ^ (unsigned)i);
}
__device__ inline float unif(unsigned seed, unsigned long long i) { return (float)(rnd(seed, i) >> 8) * (1.0f / 16777216.0f); }

__global__ void gen_codes(signed char *p, long long n, unsigned seed) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n / 4; i += (long long)gridDim.x * blockDim.x) {
        unsigned w = 0;
        for (int k = 0; k < 4; k++) w |= (unsigned)(((int)(rnd(seed, 4 * i + k) % 255u) - 127) & 255) << (8 * k);
        ((unsigned *)p)[i] = w;
    }
}
/* kind 0: q scale, 1: k scale, 2: c, 3: threshold (needs sq) */
__global__ void gen_f(float *p, long long n, unsigned seed, int kind, float cs, const float *sq) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float u = unif(seed, i), v;
        if (kind == 0) v = 0.005f + 0.01f * u;
        else if (kind == 1) v = 0.008f + 0.004f * u;
        else if (kind == 2) v = cs * (2.f * u - 1.f);
        else v = sq[i] * ((Z0 + 0.4f * (u - 0.5f)) * 0.01f * SIGMA);
        p[i] = v;
    }
}

typedef CUresult (*EncodeTiled_t)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *, const cuuint64_t *,
                                  const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                  CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiled_t encode_fn() {
    static EncodeTiled_t fn = 0;
    if (!fn) {
        cudaDriverEntryPointQueryResult q;
        void *f = 0;
        CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
        if (!f || q != cudaDriverEntryPointSuccess) { fprintf(stderr, "no cuTensorMapEncodeTiled\n"); exit(2); }
        fn = (EncodeTiled_t)f;
    }
    return fn;
}
/* codes [planes][N][128] bytes, box 128 bytes x rows, 128B swizzle */
static est_tmap make_map(const void *codes, int N, int planes, int rows) {
    CUtensorMap m;
    cuuint64_t dims[3] = {128, (cuuint64_t)N, (cuuint64_t)planes};
    cuuint64_t strides[2] = {128, (cuuint64_t)N * 128};
    cuuint32_t box[3] = {128, (cuuint32_t)rows, 1};
    cuuint32_t es[3] = {1, 1, 1};
    CUresult r = encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, (void *)codes, dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled failed %d\n", (int)r); exit(2); }
    est_tmap t;
    memcpy(&t, &m, sizeof t);
    return t;
}

struct Case {
    int B, Hq, Hkv, N;
    float cs;
    est_params p;
    signed char *q, *k;
    float *sq, *sk, *c, *t;
    float2 *cb;
    est_u32 *mask;
    int *dbg;
    est_tmap tmK, tmQ;
    unsigned grid;
};

static void setup(Case &C, int B, int Hq, int Hkv, int N, float cs, unsigned seed) {
    C.B = B; C.Hq = Hq; C.Hkv = Hkv; C.N = N; C.cs = cs;
    int group = Hq / Hkv;
    if (N % 128 || Hq % Hkv || !(group == 1 || group == 2 || group % 4 == 0) || N / 32 > 32 * EST_NKW_MAX) {
        fprintf(stderr, "unsupported shape\n"); exit(2);
    }
    est_params &p = C.p;
    memset(&p, 0, sizeof p);
    p.B = B; p.Hq = Hq; p.Hkv = Hkv; p.N = N; p.group = group;
    p.nqb = N / EST_BQ; p.nkb = N / EST_BK; p.nkw = (p.nkb + 31) / 32;
    long long nq = (long long)B * Hq * N, nk = (long long)B * Hkv * N;
    CK(cudaMalloc(&C.q, nq * 128)); CK(cudaMalloc(&C.k, nk * 128));
    CK(cudaMalloc(&C.sq, nq * 4)); CK(cudaMalloc(&C.c, nq * 4)); CK(cudaMalloc(&C.t, nq * 4));
    CK(cudaMalloc(&C.sk, (long long)B * Hkv * p.nkb * 4));
    CK(cudaMalloc(&C.cb, (long long)B * Hq * p.nkb * 8));
    CK(cudaMalloc(&C.mask, (long long)B * Hq * p.nqb * p.nkw * 4));
    CK(cudaMalloc(&C.dbg, 4 * 128 * 64 * 4));
    gen_codes<<<2048, 256>>>(C.q, nq * 128, seed + 1);
    gen_codes<<<2048, 256>>>(C.k, nk * 128, seed + 2);
    gen_f<<<1024, 256>>>(C.sq, nq, seed + 3, 0, cs, 0);
    gen_f<<<1024, 256>>>(C.sk, (long long)B * Hkv * p.nkb, seed + 4, 1, cs, 0);
    gen_f<<<1024, 256>>>(C.c, nq, seed + 5, 2, cs, 0);
    gen_f<<<1024, 256>>>(C.t, nq, seed + 6, 3, cs, C.sq);
    CK(cudaGetLastError());
    p.qcode = C.q; p.kcode = C.k; p.qscale = C.sq; p.kscale = C.sk; p.cterm = C.c; p.cbound = C.cb; p.thr = C.t;
    p.mask = C.mask; p.dbg = C.dbg;
    C.tmK = make_map(C.k, N, B * Hkv, EST_KT);
    C.tmQ = make_map(C.q, N, B * Hq, EST_BQ);
    int g4 = group < 4 ? group : 4;
    C.grid = (unsigned)(B * Hkv * (group / g4) * (p.nqb / (4 / g4)));
    long long nb = (long long)B * Hq * p.nkb;
    est_bound_kernel<<<(unsigned)((nb + 255) / 256), 256>>>(p);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
}
static void release(Case &C) {
    cudaFree(C.q); cudaFree(C.k); cudaFree(C.sq); cudaFree(C.c); cudaFree(C.t); cudaFree(C.sk); cudaFree(C.cb);
    cudaFree(C.mask); cudaFree(C.dbg);
}

enum { K_WG = 0, K_WGPIPE, K_WGSA, K_WGDBG, K_MMA, K_BOUND, K_WGB, K_WGBSA, K_WGONLY, NK };
static const char *kname[NK] = {"wgmma", "wgmma_pipe", "wgmma_sA", "wgmma_dbg", "mma.sync", "bound(c)", "wgmma_b", "wgmma_b_sA", "wgmma_noepi"};

static void launch(Case &C, int k) {
    switch (k) {
    case K_WG: est_wgmma_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGPIPE: est_wgmma_pipe_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGSA: est_wgmma_sa_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGDBG: est_wgmma_dbg_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGB: est_wgmma_b_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGBSA: est_wgmma_b_sa_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_WGONLY: est_wgmma_only_kernel<<<C.grid, EST_WG_THREADS, EST_WG_SMEM>>>(C.p, C.tmK, C.tmQ); break;
    case K_MMA: est_mma_kernel<<<C.grid, EST_MMA_THREADS, EST_MMA_SMEM>>>(C.p); break;
    case K_BOUND: {
        long long nb = (long long)C.B * C.Hq * C.p.nkb;
        est_bound_kernel<<<(unsigned)((nb + 255) / 256), 256>>>(C.p);
        break;
    }
    }
}

/* ------------------------------------------------------------ CPU reference */
struct Host {
    std::vector<signed char> q, k;
    std::vector<float> sq, sk, c, t;
};
static void fetch(Case &C, Host &H) {
    long long nq = (long long)C.B * C.Hq * C.N, nk = (long long)C.B * C.Hkv * C.N;
    H.q.resize(nq * 128); H.k.resize(nk * 128); H.sq.resize(nq); H.c.resize(nq); H.t.resize(nq);
    H.sk.resize((long long)C.B * C.Hkv * C.p.nkb);
    CK(cudaMemcpy(H.q.data(), C.q, nq * 128, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(H.k.data(), C.k, nk * 128, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(H.sq.data(), C.sq, nq * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(H.c.data(), C.c, nq * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(H.t.data(), C.t, nq * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(H.sk.data(), C.sk, H.sk.size() * 4, cudaMemcpyDeviceToHost));
}
static int dot128(const signed char *a, const signed char *b) {
    int s = 0;
    for (int d = 0; d < 128; d++) s += (int)a[d] * (int)b[d];
    return s;
}
/* the test of the algorithm page: (sq_i*sk_J)*dot + c_j > t_i, float, in this order, no FMA */
static void cpu_mask(const Case &C, const Host &H, std::vector<est_u32> &m) {
    const est_params &p = C.p;
    m.assign((size_t)C.B * C.Hq * p.nqb * p.nkw, 0u);
    for (int b = 0; b < C.B; b++)
        for (int h = 0; h < C.Hq; h++) {
            const int kvh = h / p.group;
            const long long bh = (long long)b * C.Hq + h, bk = (long long)b * C.Hkv + kvh;
            for (int qb = 0; qb < p.nqb; qb++)
                for (int J = 0; J * EST_BK <= qb * EST_BQ + EST_BQ - 1; J++) {
                    bool kept = false;
                    const float sk = H.sk[bk * p.nkb + J];
                    for (int i = qb * EST_BQ; i < qb * EST_BQ + EST_BQ && !kept; i++) {
                        const volatile float pr = H.sq[bh * C.N + i] * sk;
                        for (int j = J * EST_BK; j < J * EST_BK + EST_BK && j <= i; j++) {
                            const int d = dot128(&H.q[(bh * C.N + i) * 128], &H.k[(bk * C.N + j) * 128]);
                            const volatile float x = pr * (float)d;
                            const volatile float s = x + H.c[bh * C.N + j];
                            if (s > H.t[bh * C.N + i]) { kept = true; break; }
                        }
                    }
                    if (kept) m[(bh * p.nqb + qb) * p.nkw + J / 32] |= 1u << (J % 32);
                }
        }
}
/* bits of blocks outside the causal range must be 0 (also catches unwritten, poisoned words) */
static long long noncausal_bits(const Case &C, const std::vector<est_u32> &m, long long *kept, long long *causal) {
    const est_params &p = C.p;
    long long bad = 0;
    *kept = 0; *causal = 0;
    for (long long r = 0; r < (long long)C.B * C.Hq * p.nqb; r++) {
        const int qb = (int)(r % p.nqb);
        const int ncb = (qb * EST_BQ + EST_BQ - 1) / EST_BK + 1;
        *causal += ncb;
        for (int w = 0; w < p.nkw; w++) {
            est_u32 v = m[r * p.nkw + w];
            for (int bit = 0; bit < 32; bit++)
                if (v >> bit & 1u) {
                    if (w * 32 + bit >= ncb) bad++;
                    else (*kept)++;
                }
        }
    }
    return bad;
}
static std::vector<est_u32> run_mask(Case &C, int k) {
    const est_params &p = C.p;
    size_t n = (size_t)C.B * C.Hq * p.nqb * p.nkw;
    CK(cudaMemset(C.mask, 0xFF, n * 4)); /* poison */
    launch(C, k);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<est_u32> m(n);
    CK(cudaMemcpy(m.data(), C.mask, n * 4, cudaMemcpyDeviceToHost));
    return m;
}
static long long compare(const Case &C, const std::vector<est_u32> &got, const std::vector<est_u32> &want, int show) {
    const est_params &p = C.p;
    long long bad = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (got[i] != want[i]) {
            if (bad < show) {
                long long r = i / p.nkw;
                printf("      differs: b=%lld h=%lld qb=%lld word=%lld got %08x want %08x\n", r / p.nqb / C.Hq, (r / p.nqb) % C.Hq,
                       r % p.nqb, (long long)(i % p.nkw), got[i], want[i]);
            }
            bad++;
        }
    return bad;
}
/* raw accumulators of CTA 0, key tile 0 (dbg kernel) against CPU dots */
static long long check_dbg(Case &C, const Host &H) {
    const est_params &p = C.p;
    CK(cudaMemset(C.dbg, 0x7F, 4 * 128 * 64 * 4));
    launch(C, K_WGDBG);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<int> d(4 * 128 * 64);
    CK(cudaMemcpy(d.data(), C.dbg, d.size() * 4, cudaMemcpyDeviceToHost));
    /* decode CTA 0 as est_decode does */
    int g4 = p.group < 4 ? p.group : 4, qpc = 4 / g4, hgn = p.group / g4;
    int qc = p.nqb / qpc - 1;
    int r = 0, hg = r % hgn; r /= hgn;
    int kvh = r % p.Hkv, b = r / p.Hkv, hbase = kvh * p.group + hg * g4, qb0 = qc * qpc;

    long long bad = 0;
    for (int mt = 0; mt < 4; mt++)
        for (int t = 0; t < 128; t++)
            for (int i = 0; i < 64; i++) {
                int warp = t / 32, lane = t % 32, g = lane / 4, c4 = lane % 4;
                int nt = i / 4, hh = (i / 2) % 2, e = i % 2;
                int row = (qb0 + mt / g4) * 64 + warp * 16 + g + 8 * hh, key = nt * 8 + 2 * c4 + e;
                long long bh = (long long)b * p.Hq + hbase + mt % g4, bk = (long long)b * p.Hkv + kvh;
                int want = dot128(&H.q[(bh * C.N + row) * 128], &H.k[(bk * C.N + key) * 128]);
                int got = d[(mt * 128 + t) * 64 + i];
                if (got != want) {
                    if (bad < 5) printf("      acc differs: tile %d thread %d reg %d (row %d key %d): got %d want %d\n", mt, t, i, row, key, got, want);
                    bad++;
                }
            }
    return bad;
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
static float time_kernel(Case &C, int k, void *flush, size_t flush_bytes, int reps) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    for (int w = 0; w < 2; w++) launch(C, k);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int r = 0; r < reps; r++) {
        CK(cudaMemsetAsync(flush, r & 0xFF, flush_bytes)); /* L2 flush */
        CK(cudaEventRecord(e0));
        launch(C, k);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaGetLastError());
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms);
    }
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    return median(ts);
}

int main(int argc, char **argv) {
    /* est_floor v | t N... | all (default: v, then t 65536 131072); env EST_KMASK: bit k runs kernel k
     * (0 wgmma, 1 wgmma_pipe, 2 wgmma_sA, 4 mma.sync, 6 wgmma_b, 7 wgmma_b_sA, 8 wgmma_noepi) */
    std::vector<int> Ns;
    int do_verify = 1, do_time = 1;
    if (argc > 1 && !strcmp(argv[1], "v")) do_time = 0;
    if (argc > 1 && !strcmp(argv[1], "t")) do_verify = 0;
    for (int i = 2; i < argc; i++) Ns.push_back(atoi(argv[i]));
    if (Ns.empty()) { Ns.push_back(65536); Ns.push_back(131072); }
    const char *km = getenv("EST_KMASK");
    const unsigned kmask = km ? (unsigned)strtoul(km, 0, 0) : 0xFFFFFFFFu;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB, smem/block optin %zu\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
           prop.sharedMemPerBlockOptin);
    CK(cudaFuncSetAttribute(est_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_pipe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_sa_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_dbg_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_b_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_b_sa_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_wgmma_only_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_WG_SMEM));
    CK(cudaFuncSetAttribute(est_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, EST_MMA_SMEM));
    const int vk[] = {K_WG, K_WGPIPE, K_WGSA, K_WGB, K_WGBSA, K_MMA};
    const char *verdict[NK];
    for (int k = 0; k < NK; k++) verdict[k] = "-";
    int all_ok = 1;

    /* ---------------- verification against the CPU reference */
    struct VC { int B, Hq, Hkv, N; float cs; } vcs[] = {
        {1, 4, 1, 2048, 1.f},   /* GQA group 4: 4 heads x 1 query block per CTA */
        {1, 4, 1, 2048, 30.f},  /* c spread >> score spread: the exact fallback decides most blocks */
        {2, 4, 2, 1024, 1.f},   /* group 2, batch 2: 2 heads x 2 query blocks per CTA */
        {1, 2, 2, 1536, 3.f},   /* group 1: 4 query blocks per CTA */
    };
    for (int v = 0; v < 4 && do_verify; v++) {
        Case C;
        setup(C, vcs[v].B, vcs[v].Hq, vcs[v].Hkv, vcs[v].N, vcs[v].cs, 1000u + 17u * v);
        Host H;
        fetch(C, H);
        std::vector<est_u32> ref;
        cpu_mask(C, H, ref);
        long long kept, causal;
        noncausal_bits(C, ref, &kept, &causal);
        printf("verify B=%d Hq=%d Hkv=%d N=%d c-spread=%g: reference density %.2f%% (%lld of %lld causal blocks)\n", C.B, C.Hq, C.Hkv, C.N,
               C.cs, 100.0 * kept / causal, kept, causal);
        for (int k : vk) {
            if (!(kmask >> k & 1u)) continue;
            std::vector<est_u32> m = run_mask(C, k);
            long long bad = compare(C, m, ref, 4);
            long long kk, cc, nc = noncausal_bits(C, m, &kk, &cc);
            printf("    %-11s mask words differing: %lld of %zu%s\n", kname[k], bad, m.size(), nc ? " (non-causal bits set!)" : "");
            if (bad || nc) { verdict[k] = "FAIL"; all_ok = 0; }
            else if (strcmp(verdict[k], "FAIL")) verdict[k] = "ok";
        }
        if (v == 0 && (kmask & 1u)) {
            long long bad = check_dbg(C, H);
            printf("    raw s32 accumulators of CTA 0 / key tile 0 (4 x 64x128): %lld differ\n", bad);
            if (bad) all_ok = 0;
        }
        release(C);
    }

    /* ---------------- timing */
    size_t flush_bytes = 256u << 20;
    void *flush;
    CK(cudaMalloc(&flush, flush_bytes));
    struct Row { int N; int k; float ms[2]; double tops; double dens; long long diff; };
    std::vector<Row> rows;
    for (int N : Ns) {
        if (!do_time) break;
        Case C;
        setup(C, 1, 32, 8, N, 1.f, 77u);
        std::vector<est_u32> ref = run_mask(C, K_MMA);
        long long kept, causal;
        long long nc = noncausal_bits(C, ref, &kept, &causal);
        double dens = (double)kept / causal;
        double scores = 32.0 * ((double)N * (N + 1) / 2.0);
        double ops = 2.0 * 128.0 * scores;
        for (int k : {K_WG, K_WGB, K_WGBSA, K_WGONLY, K_WGPIPE, K_WGSA, K_MMA, K_BOUND}) {
            if (k != K_BOUND && !(kmask >> k & 1u)) continue;
            long long diff = 0;
            if (k != K_BOUND && k != K_WGONLY) {
                std::vector<est_u32> m = run_mask(C, k);
                diff = compare(C, m, ref, 2);
                long long kk, cc;
                if (noncausal_bits(C, m, &kk, &cc)) diff = -1;
                if (diff) all_ok = 0;
            }
            Row r;
            r.N = N; r.k = k; r.dens = dens; r.diff = diff;
            r.ms[0] = time_kernel(C, k, flush, flush_bytes, 7);
            r.ms[1] = time_kernel(C, k, flush, flush_bytes, 7);
            r.tops = ops / (std::min(r.ms[0], r.ms[1]) * 1e-3) / 1e12;
            rows.push_back(r);
            printf("timed N=%d %-11s %8.3f / %8.3f ms\n", N, kname[k], r.ms[0], r.ms[1]);
            fflush(stdout);
        }
        if (nc) { printf("N=%d: mma.sync mask has non-causal bits\n", N); all_ok = 0; }
        release(C);
    }
    printf("\nverification (CPU reference, 4 shapes, bit for bit):");
    for (int k : vk) printf(" %s %s;", kname[k], verdict[k]);
    printf("\n");
    printf("\n| N | kernel | ms (median of 7, two runs) | eff. int8 TOP/s | mask density | mask words != mma.sync |\n|---|---|---|---|---|---|\n");
    for (auto &r : rows)
        printf("| %d | %s | %.3f / %.3f | %s%.0f | %.2f%% | %lld |\n", r.N, kname[r.k], r.ms[0], r.ms[1], r.k == K_BOUND ? "(n/a) " : "",
               r.k == K_BOUND ? 0.0 : r.tops, 100 * r.dens, r.diff);
    printf("\nALL %s\n", all_ok ? "OK" : "FAILED");
    return all_ok ? 0 : 1;
}
