/* sale_layout.h — launch plan and tile legality of every sale kernel family.
 * The contract between the host runtime (src/attention.c, the tuner) and the
 * templates. Plain C11; also compiles under NVRTC / nvcc (functions are then
 * __host__ __device__ so the kernels can share the same arithmetic). */
#ifndef SALE_LAYOUT_H
#define SALE_LAYOUT_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SALE_HD __host__ __device__
#else
#define SALE_HD
#endif
/* constexpr where the language has it, so the kernels can check their own
 * shared-memory layout against sale_layout_smem() at compile time */
#ifdef __cplusplus
#define SALE_CX constexpr
#else
#define SALE_CX
#endif

/* family codes (= sale_family) */
#define SALE_LF_QUANTIZE 0
#define SALE_LF_FUSED 1
#define SALE_LF_SELECT 2
#define SALE_LF_ATTEND 3
#define SALE_LF_DENSE 4
#define SALE_LF_PLAIN 5 /* version 0: the algorithm in one plain kernel (templates/plain.cu) */

/* fixed geometry of the quantize family */
#define SALE_QZ_THREADS 256      /* every quantize entry */
#define SALE_QZ_QROWS 64         /* query rows per CTA of the code kernel */
#define SALE_QZ_CHUNK_ROWS 256   /* rows per partial-sum chunk of the means (before capping) */
#define SALE_QZ_MAX_CHUNKS 8      /* partials a head's mean adds per column (fixed order) */
#define SALE_QZ_WORK_BLOCKS 792   /* code blocks of the quantize launch (each walks items): two
                                    waves of 3 blocks a SM on 132 SMs (H100/H200 SXM), none half full */
/* attention families */
#define SALE_DENSE_KT 64         /* keys per tile of the dense kernel */
#define SALE_EST_CHUNK 128       /* keys per estimation chunk (code tile) */
/* estimation chunk buffers (prefetch distance NBUF-1): 3 for the fused kernel
 * with block_q 64; 2 otherwise (shared memory: select then fits 3 CTAs per SM) */
#define SALE_LAYOUT_EST_NBUF(family, block_q) ((family) == SALE_LF_FUSED && (block_q) == 64 ? 3 : 2)

typedef struct sale_layout_cfg {
    int family, head_dim, block_q, block_k, block_seg, local_window, dtype, est_bits, warps, stages, arch;
    int thr; /* threshold variant: 0 open, SALE_LT_RUN, SALE_LT_FIXED (= sale_key.thr) */
} sale_layout_cfg; /* family: 0 quantize,1 fused,2 select,3 attend,4 dense,5 plain; dtype 0 f16 1 bf16; arch 80/86/89/90/901 */
#define SALE_LT_RUN 1   /* t_i from the state at the start of every segment */
#define SALE_LT_FIXED 2 /* t_i once, after the local region and the sink */

typedef struct sale_launch {
    const char *entry;
    unsigned grid[3];
    unsigned block;
    unsigned smem;
} sale_launch;

/* number of partial-sum chunks of the mean kernel, and rows per chunk */
static SALE_HD inline int sale_layout_mean_chunks(int N) {
    int n = (N + SALE_QZ_CHUNK_ROWS - 1) / SALE_QZ_CHUNK_ROWS;
    if (n < 1) n = 1;
    if (n > SALE_QZ_MAX_CHUNKS) n = SALE_QZ_MAX_CHUNKS;
    return n;
}
static SALE_HD inline int sale_layout_mean_chunk_rows(int N) {
    int n = sale_layout_mean_chunks(N);
    return (N + n - 1) / n;
}

/* On sm_90a at head_dim 128, dense and attend have a wgmma + TMA kernel
 * (wgmma_attn.cuh): 3 warpgroups (warps = 12 picks it), 128 query rows and
 * 128 keys per tile, 2 or 3 ring stages, a 1-D grid, and TMA maps beside the
 * parameter block. Dense is only that kernel there; attend keeps the mma.sync
 * kernel as a tile choice (warps 2/4/8), and its wgmma kernel reads masks of
 * block_q 64 and block_k 32: two mask rows a CTA (one a consumer warpgroup:
 * two heads of a GQA group, or two query blocks), tiles of four blocks of
 * their union, shared by both warpgroups. */
#define SALE_WG_WARPS 12
#define SALE_WG_TILE 128 /* query rows a CTA and keys a K/V tile (attend: 4 mask blocks of 32) */
/* the families, head dim and arch that have a wgmma kernel */
static SALE_HD SALE_CX inline int sale_layout_wgmma_family(int family, int head_dim, int arch) {
    return arch == 901 && head_dim == 128 && (family == SALE_LF_DENSE || family == SALE_LF_ATTEND);
}
static SALE_HD SALE_CX inline int sale_layout_wgmma_arch(const sale_layout_cfg *c) {
    return sale_layout_wgmma_family(c->family, c->head_dim, c->arch);
}
/* attend's second wgmma kernel, "rows" (wgmma_rows.cuh, warps 5): one mask
 * row at a time a CTA (one consumer warpgroup; an issuer warp, a scheduler
 * warp and two that only give registers back: 256 threads), tiles of two kept blocks (64 keys), no
 * alignment slack, so that two CTAs share an SM: the unit of work for rows
 * of few kept blocks. Persistent: two CTAs an SM take rows from a counter. */
#define SALE_WR_WARPS 5
/* 1 only in a measuring build: the rows kernel writes its consumers'
 * timeline into the call's lse instead of the log-sum-exp, and the lse
 * correction (quantize.cu) leaves it alone (wgmma_rows.cuh; bench/rows_timeline.c) */
#define SALE_WR_TIMELINE 0
/* attend's default kernel on sm_90a by length, where neither the caller nor
 * a tuned winner chose one: the rows kernel up to this length bucket (powers
 * of two), the two-row kernel above. Measured (bench/RESULTS.md, twelfth
 * session, H200, thr=fixed, attend phase, rows against two rows, densities
 * 0.01 / 0.05 / 0.2 / 0.4): 32K -25 / -18 / -8 / -7%, 64K -25 / -12 / -4 / -3%,
 * 128K -24 / -3 / +3 / +4% (at 128K one KV head's K/V no longer fits in L2
 * and the rows kernel reads each block once a head, not once a pair).
 * Since then the rows kernel became persistent, its mask walk moved to a
 * scheduler warp and its store went through shared memory (fourteenth and
 * fifteenth sessions); at 128K it now takes 3.7 / 17.8-17.9 / 62.3-62.6 ms
 * at d ~ 0.01 / 0.05 / 0.2 against the two-row kernel's 6.9-7.0 /
 * 18.4-18.6 / 58.3-63.2 (fifteenth session, call 2): the default up to 128K. */
#define SALE_WR_DEFAULT_MAX_N 131072
/* Above SALE_WR_PICK_MIN_N, where neither attend kernel wins at every
 * density, sale_attention (default tiles, thr = fixed, two-pass) launches
 * both and the device picks one from the select's count of kept blocks
 * (sale_params.pick: the local region, the sink, dense heads' whole rows and
 * the estimated blocks): the two-row kernel iff the call's density is at
 * least SALE_WR_PICK_DENSITY, else the rows kernel. The other
 * returns at once (a few microseconds). Measured (seventeenth session, H200,
 * thr=fixed, attend ms, rows against the persistent two-row kernel): 128K
 * 3.64 / 5.54 at d ~ 0.01, 17.94 / 17.2 at 0.05, 63.6-64.1 / 60.0-62.1 at
 * 0.2: equal near d ~ 0.035-0.04; 256K 15.0 / 23.1, 79.4 / 75.0, 329 / 275;
 * 64K: the rows kernel at every density (13.8-13.9 / 14.3 at 0.2). */
#define SALE_WR_PICK_MIN_N 65536
#define SALE_WR_PICK_DENSITY 0.035
/* the rows kernel's queue of row chunks, scheduler to issuer (wgmma_rows.cuh:
 * 2 slots of a 16-byte header and 32 tiles of 8 bytes) */
#define SALE_WR_QUEUE_BYTES 544u
/* the persistent two-row attend kernel's queue (wgmma_attn.cuh): 2 slots of
 * a 32-byte header and 16 tiles of 32 bytes (four blocks, two own masks) */
#define SALE_WG_QUEUE_BYTES 1088u
/* the rows kernel's staged store (wgmma_rows.cuh, store_staged): a consumer
 * warp's 16 rows of O in 4 KB of the last tile's K stage, row r (0..15) 256
 * bytes, its 16-byte chunk ch (columns 8 ch .. 8 ch + 7) at position
 * ch ^ (r % 8), so that the 8 rows of a stmatrix matrix and the 8 chunks of
 * a quarter-warp's 16-byte loads fall on 8 different bank groups
 * (tests/test_key.c checks both, and that each chunk is read back once) */
static SALE_HD SALE_CX inline int sale_layout_wr_ochunk(int r, int ch) { return r * 256 + ((ch ^ (r & 7)) << 4); }
/* the row address lane gives stmatrix.x4 for n8 blocks nt and nt + 1 (nt
 * even): matrix lane / 8 is {block nt, rows 0-7}, {nt, 8-15}, {nt + 1, 0-7},
 * {nt + 1, 8-15}, the order of the kernel's four registers */
static SALE_HD SALE_CX inline int sale_layout_wr_stsm(int lane, int nt) {
    return sale_layout_wr_ochunk((lane & 7) + ((lane >> 3) & 1) * 8, nt + (lane >> 4));
}
/* The same 16 rows through a TMA store (when the call has O's tensor map):
 * two boxes of 64 columns x 16 rows, 2 KB each (columns 0-63, then 64-127),
 * in the 128-byte swizzle the map declares: row r's 16-byte chunk g (columns
 * 8 g .. 8 g + 7) at (g / 8) 2 KB + 128 r + 16 ((g % 8) ^ (r % 8)). So the
 * 8 rows of a stmatrix matrix land on 8 bank groups here too
 * (tests/test_key.c checks the layout against TMA's address rule). */
static SALE_HD SALE_CX inline int sale_layout_wr_tma_chunk(int r, int g) {
    return (g >> 3) * 2048 + r * 128 + (((g & 7) ^ (r & 7)) << 4);
}
static SALE_HD SALE_CX inline int sale_layout_wr_tma_stsm(int lane, int nt) {
    return sale_layout_wr_tma_chunk((lane & 7) + ((lane >> 3) & 1) * 8, nt + (lane >> 4));
}
/* The rows kernel's Q as wgmma's register A operand: warp w's 16 rows, k16
 * step ks (columns 16 ks .. 16 ks + 15), read by one ldmatrix.x4 from the Q
 * tile (two halves of 64 rows x 128 bytes, columns 0-63 and 64-127, 8 KB
 * apart, in TMA's 128-byte swizzle on a 1 KB-aligned base). Lane L gives
 * the address of row L % 16 of the warp's rows, 16-byte chunk L / 16 of the
 * step: matrices {rows 0-7, k 0-7}, {8-15, 0-7}, {0-7, 8-15}, {8-15, 8-15},
 * the order of an m16n8k16 A fragment's four registers (tests/test_key.c
 * checks the address against the swizzle rule) */
static SALE_HD SALE_CX inline int sale_layout_wr_qa(int lane, int w, int ks) {
    const int r = 16 * w + (lane & 15), g = (ks & 3) * 2 + (lane >> 4);
    return (ks >> 2) * 8192 + r * 128 + ((g ^ (r & 7)) << 4);
}
/* the row whose chunk lane % 16 lane reads back in round k (0..7): two whole rows a round */
static SALE_HD SALE_CX inline int sale_layout_wr_ldrow(int lane, int k) { return 2 * k + (lane >> 4); }
static SALE_HD SALE_CX inline int sale_layout_wgmma_rows(const sale_layout_cfg *c) {
    return sale_layout_wgmma_arch(c) && c->family == SALE_LF_ATTEND && c->warps == SALE_WR_WARPS;
}
static SALE_HD SALE_CX inline int sale_layout_wgmma(const sale_layout_cfg *c) {
    return sale_layout_wgmma_arch(c) &&
           (c->family == SALE_LF_DENSE || c->warps == SALE_WG_WARPS || sale_layout_wgmma_rows(c));
}
/* On sm_90a, select with thr = fixed at head_dim 128, block_q 64, block_k 32,
 * block_seg 128 and 8-bit codes has a wgmma estimation (wgmma_est.cuh): two
 * launches, (1) the exact local region and the sink of every query block on
 * the mma.sync engine (4 warps, 2 stages: SALE_SE_LOCAL_*), which gives each
 * row its fixed threshold t_i and each key block the range of its c_j, (2)
 * every segment's estimate on int8 wgmma over TMA-loaded code tiles (one
 * segment = one 128-key tile), kept bits ORed into the mask rows. warps 12:
 * a producer and 2 consumer warpgroups (2 m64 tiles each); warps 20: 4
 * consumer warpgroups (1 m64 tile each); stages: the code-tile ring, 2..7
 * (128 B of barriers); 4 by default (6 measured the same: bench/RESULTS.md,
 * fourth session; the tuner tries 2, 3, 4 and 6). */
/* On sm_90a, fused at head_dim 128, block_q 64 and 4 warps (one warpgroup,
 * one 16-row slice a warp) runs its attention half on wgmma: S = Q K^T as
 * m64n(block_k)k16 from the shared Q and K tiles, P V as m64n128k16 with P
 * from registers and V from the shared tile (wgmma_fused.cuh). The
 * estimation half, the selection and the pipeline stay as on sm_90. The Q
 * and K/V tiles are then stored as two 64-column halves with the 128-byte
 * swizzle (the wgmma descriptors' layout), on a 1 KB-aligned base: 1 KB of
 * slack. block_k 32 or 64 (the n of the S wgmma). */
static SALE_HD SALE_CX inline int sale_layout_fused_wg(const sale_layout_cfg *c) {
    return c->family == SALE_LF_FUSED && c->arch == 901 && c->head_dim == 128 && c->block_q == 64 && c->warps == 4 &&
           (c->block_k == 32 || c->block_k == 64);
}
/* byte offset of 16-byte chunk ch (0..15) of row r in such a tile of `rows`
 * rows (head_dim 128): half ch / 8, then rows of 128 bytes, chunk ch % 8 at
 * position (ch % 8) ^ (r % 8): on a 1 KB-aligned base, the layout the
 * 128-byte swizzle of TMA and of the wgmma descriptors defines by address
 * bits (bits 4-6 XOR bits 7-9; tests/test_key.c checks it against that) */
static SALE_HD SALE_CX inline int sale_layout_swz128(int r, int ch, int rows) {
    return (ch >> 3) * rows * 128 + r * 128 + (((ch & 7) ^ (r & 7)) << 4);
}
#define SALE_SE_DEFAULT_WARPS 20 /* the estimation's default tiles (the key's warps, stages) */
#define SALE_SE_DEFAULT_STAGES 4
#define SALE_SE_LOCAL_WARPS 4
#define SALE_SE_LOCAL_STAGES 2 /* the key's stages of the local launch's configuration (no longer its ring) */
#define SALE_SE_LOCAL_RING 4   /* K tiles of the local launch's ring (select_local.cuh): loads 3 tiles ahead */
#define SALE_SE_KT 128
static SALE_HD SALE_CX inline int sale_layout_wgmma_select(const sale_layout_cfg *c) {
    return c->family == SALE_LF_SELECT && c->arch == 901 && (c->warps == 12 || c->warps == 20);
}
/* the local launch's configuration: the mma.sync select engine */
static SALE_HD SALE_CX inline sale_layout_cfg sale_layout_se_local(const sale_layout_cfg *c) {
    sale_layout_cfg l = *c;
    l.warps = SALE_SE_LOCAL_WARPS;
    l.stages = SALE_SE_LOCAL_STAGES;
    return l;
}
/* the local launch's dynamic shared memory (select_local.cuh): the Q tile,
 * then a ring of SALE_SE_LOCAL_RING K tiles; 48 KB at d 128: 4 CTAs an SM */
static SALE_HD SALE_CX inline unsigned sale_layout_se_local_smem(const sale_layout_cfg *c) {
    return ((unsigned)c->block_q + (unsigned)SALE_SE_LOCAL_RING * (unsigned)c->block_k) * (unsigned)c->head_dim * 2u;
}
/* scratch of the wgmma select: t_i [B, Hq, N] f32, then {min, max} of c_j per
 * key block [B, Hq, nkb] f32x2 at this byte offset */
static SALE_HD inline unsigned long long sale_layout_se_cbound_off(int B, int Hq, int N) {
    return ((unsigned long long)B * (unsigned long long)Hq * (unsigned long long)N * 4ull + 255ull) & ~255ull;
}

/* keys per tile of the attention loop */
static SALE_HD SALE_CX inline int sale_layout_kt(const sale_layout_cfg *c) {
    return c->family == SALE_LF_DENSE ? SALE_DENSE_KT : c->block_k;
}
/* keys per estimation chunk */
static SALE_HD SALE_CX inline int sale_layout_est_chunk(const sale_layout_cfg *c) {
    return c->block_seg < SALE_EST_CHUNK ? c->block_seg : SALE_EST_CHUNK;
}

static SALE_HD inline const char *sale_layout_main_entry(int family) {
    switch (family) {
    case SALE_LF_QUANTIZE: return "sale_quantize_kernel";
    case SALE_LF_FUSED: return "sale_fused_kernel";
    case SALE_LF_SELECT: return "sale_select_kernel";
    case SALE_LF_ATTEND: return "sale_attend_kernel";
    case SALE_LF_DENSE: return "sale_dense_kernel";
    case SALE_LF_PLAIN: return "sale_plain_kernel";
    default: return 0;
    }
}

/* the entry a configuration's cubin is known by (its kernel info, registers,
 * threads, shared memory): the main entry, or the wgmma select's estimation */
static SALE_HD inline const char *sale_layout_entry(const sale_layout_cfg *c) {
    return sale_layout_wgmma_select(c) ? "sale_select_wgmma_kernel"
           : sale_layout_wgmma_rows(c) ? "sale_attend_rows_kernel" /* its own name: profilers tell it from warps 12 */
                                       : sale_layout_main_entry(c->family);
}

static SALE_HD inline unsigned sale_layout_threads(const sale_layout_cfg *c) {
    if (c->family == SALE_LF_QUANTIZE) return SALE_QZ_THREADS;
    if (sale_layout_wgmma_rows(c)) return (unsigned)(c->warps + 3) * 32u; /* warps 5 names it; the scheduler, two for setmaxnreg */
    return (unsigned)(c->warps * 32);
}

/* dynamic shared memory of the main entry (quantize: 0) */
static SALE_HD SALE_CX inline unsigned sale_layout_smem(const sale_layout_cfg *c) {
    unsigned rb = 0, kt = 0, s = 0;
    if (c->family == SALE_LF_QUANTIZE || c->family == SALE_LF_PLAIN) return 0; /* plain: registers and local memory only */
    if (sale_layout_wgmma_select(c)) /* 1 KB slack, stages x code tiles, 4 query-code tiles, staged rows (2 x stages slots x 4 m64 tiles x (128 + 16) floats), barriers */
        return 1024u + (unsigned)c->stages * (unsigned)SALE_SE_KT * 128u + 4u * 64u * 128u +
               2u * (unsigned)c->stages * 4u * (SALE_SE_KT + 16u) * 4u + 128u;
    if (sale_layout_wgmma_rows(c)) /* the 64-row Q tile, stages x (K, V) tiles of 64 keys, barriers, the scheduler's queue; no slack */
        return 16384u + 2u * (unsigned)c->stages * 16384u + 256u + SALE_WR_QUEUE_BYTES;
    if (sale_layout_wgmma(c)) /* 1 KB alignment slack, the Q tile, stages x (K, V) tiles of SALE_WG_TILE keys, barriers; attend: the queue */
        return 1024u + 32768u + 2u * (unsigned)c->stages * (unsigned)SALE_WG_TILE * 256u + 256u +
               (c->family == SALE_LF_ATTEND ? SALE_WG_QUEUE_BYTES : 0u);
    rb = (unsigned)c->head_dim * 2u;
    kt = (unsigned)sale_layout_kt(c);
    if (c->family == SALE_LF_SELECT && c->block_q == 16 * c->warps) {
        /* select, Q fragments in registers: Q tile aliased with the K stages */
        unsigned qk = (unsigned)c->block_q > (unsigned)c->stages * kt ? (unsigned)c->block_q : (unsigned)c->stages * kt;
        s = qk * rb;
    } else {
        s = (unsigned)c->block_q * rb;                                                  /* Q tile */
        s += (unsigned)c->stages * kt * rb * (c->family == SALE_LF_SELECT ? 1u : 2u); /* K (and V) stages */
    }
    if (c->family == SALE_LF_FUSED || c->family == SALE_LF_SELECT) {
        unsigned ek = (unsigned)sale_layout_est_chunk(c);
        unsigned rbc = (unsigned)(c->head_dim * c->est_bits / 8) + 16u; /* padded pitch */
        unsigned nbuf = (unsigned)SALE_LAYOUT_EST_NBUF(c->family, c->block_q);
        s += nbuf * ek * rbc; /* code chunks */
        s += nbuf * ek * 4u;  /* c_j of the chunk */
        s += nbuf * 8u * 4u;  /* k scales of the chunk */
        s += nbuf * 8u;       /* mbarriers */
        s += 2u * 16u * 4u;   /* per-warp kept flags, 2 segments */
        s += 2u * (unsigned)c->block_q * (unsigned)(c->block_seg / c->block_k) * 4u; /* estimated maxima per (row, block) */
    }
    return s + (sale_layout_fused_wg(c) ? 1024u : 0u); /* fused on wgmma: a 1 KB-aligned base */
}

static SALE_HD inline unsigned sale_layout_smem_limit(int arch) {
    switch (arch) {
    case 80: return 166912u;  /* 163 KB */
    case 86: case 89: return 101376u; /* 99 KB */
    case 90: case 901: return 232448u; /* 227 KB */
    default: return 101376u;
    }
}

static SALE_HD inline int sale_layout_default_tiles(int family, int head_dim, int arch, int *warps, int *stages) {
    if (family < 0 || family > 5) return -1;
    if (family == SALE_LF_QUANTIZE) { *warps = SALE_QZ_THREADS / 32; *stages = 1; return 0; }
    if (sale_layout_wgmma_family(family, head_dim, arch)) {
        *warps = SALE_WG_WARPS; *stages = 3; return 0;
    }
    /* plain: one thread per query row (warps = block_q/32: 2 for block_q 64), no pipeline */
    if (family == SALE_LF_PLAIN) { *warps = 2; *stages = 1; return 0; }
    *warps = 4;
    *stages = 2;
    return 0;
}

/* the same, knowing block_q: 16 query rows per warp (warps = block_q/16) */
static SALE_HD inline int sale_layout_default_tiles_q(int family, int head_dim, int block_q, int arch, int *warps, int *stages) {
    int r = sale_layout_default_tiles(family, head_dim, arch, warps, stages);
    if (r == 0 && family == SALE_LF_PLAIN && (block_q == 64 || block_q == 128)) *warps = block_q / 32;
    else if (r == 0 && family != SALE_LF_QUANTIZE && *warps != SALE_WG_WARPS && (block_q == 64 || block_q == 128))
        *warps = block_q / 16;
    return r;
}

/* the tile choices of a family on an architecture (what the tuner times).
 * plain's space holds only its fixed tiles (one per block_q): it is not
 * tuned (the tuner refuses it), the space only lets sale_key_resolve pick
 * warps = block_q/32 */
static SALE_HD inline int sale_layout_space(int family, int head_dim, int arch, int *warps, int *nwarps, int *stages,
                                            int *nstages) {
    if (family < 0 || family > 5) return -1;
    if (sale_layout_wgmma_family(family, head_dim, arch) && family == SALE_LF_DENSE) {
        warps[0] = SALE_WG_WARPS; *nwarps = 1;
        stages[0] = 2; stages[1] = 3; *nstages = 2;
        return 0;
    }
    if (sale_layout_wgmma_family(family, head_dim, arch)) { /* attend: wgmma, then the mma.sync tiles */
        warps[0] = 2; warps[1] = 4; warps[2] = 8; warps[3] = SALE_WG_WARPS; warps[4] = SALE_WR_WARPS; *nwarps = 5;
        stages[0] = 2; stages[1] = 3; *nstages = 2;
        return 0;
    }
    if (family == SALE_LF_SELECT && arch == 901 && head_dim == 128) {
        /* the mma.sync tiles, then the wgmma estimation's (legal with thr=fixed only) */
        warps[0] = 2; warps[1] = 4; warps[2] = 8; warps[3] = SALE_WG_WARPS; warps[4] = 20; *nwarps = 5;
        stages[0] = 2; stages[1] = 3; stages[2] = 4; stages[3] = 6; *nstages = 4; /* 6: the wgmma estimation only */
        return 0;
    }
    if (family == SALE_LF_PLAIN) {
        warps[0] = 2; warps[1] = 4; *nwarps = 2;
        stages[0] = 1; *nstages = 1;
        return 0;
    }
    if (family == SALE_LF_QUANTIZE) {
        warps[0] = SALE_QZ_THREADS / 32; *nwarps = 1;
        stages[0] = 1; *nstages = 1;
        return 0;
    }
    warps[0] = 2; warps[1] = 4; warps[2] = 8; *nwarps = 3;
    stages[0] = 2; stages[1] = 3; *nstages = 2;
    return 0;
}

static SALE_HD inline int sale_layout_why_(char *why, int whylen, const char *msg) {
    if (why && whylen > 0) {
        int i = 0;
        for (; msg[i] && i < whylen - 1; i++) why[i] = msg[i];
        why[i] = 0;
    }
    return 0;
}

static SALE_HD inline int sale_layout_legal(const sale_layout_cfg *c, char *why, int whylen) {
    int mt;
    if (c->family < 0 || c->family > 5) return sale_layout_why_(why, whylen, "family: unknown");
    if (c->head_dim == 256)
        return sale_layout_why_(why, whylen, "head_dim: 256 does not fit in shared memory with these kernels (64 or 128)");
    if (c->head_dim != 64 && c->head_dim != 128) return sale_layout_why_(why, whylen, "head_dim: must be 64 or 128");
    if (c->dtype != 0 && c->dtype != 1) return sale_layout_why_(why, whylen, "dtype: must be f16 or bf16");
    if (c->block_k != 16 && c->block_k != 32 && c->block_k != 64)
        return sale_layout_why_(why, whylen, "block_k: must be 16, 32 or 64");
    if (c->est_bits != 4 && c->est_bits != 8) return sale_layout_why_(why, whylen, "est_bits: must be 4 or 8");
    if (c->arch != 80 && c->arch != 86 && c->arch != 89 && c->arch != 90 && c->arch != 901)
        return sale_layout_why_(why, whylen, "arch: must be 80, 86, 89, 90 or 901");
    if (c->family == SALE_LF_QUANTIZE) {
        if (c->warps != SALE_QZ_THREADS / 32) return sale_layout_why_(why, whylen, "warps: quantize uses 8 warps");
        if (c->stages != 1) return sale_layout_why_(why, whylen, "stages: quantize uses 1 stage");
        return 1;
    }
    if (c->family == SALE_LF_DENSE && sale_layout_wgmma_arch(c) && c->warps != SALE_WG_WARPS)
        return sale_layout_why_(why, whylen, "warps: the sm_90a dense kernel (wgmma) is 12 warps, 3 warpgroups");
    if (sale_layout_wgmma_select(c)) {
        if (c->thr != SALE_LT_FIXED)
            return sale_layout_why_(why, whylen, "warps: the sm_90a select kernel (wgmma, warps 12 or 20) takes thr=fixed");
        if (c->head_dim != 128 || c->block_q != 64 || c->block_k != 32 || c->block_seg != 128 || c->est_bits != 8)
            return sale_layout_why_(why, whylen, "warps: the sm_90a select kernel (wgmma, warps 12 or 20) takes head_dim 128, "
                                                  "block_q 64, block_k 32, block_seg 128 and est_bits 8");
        if (c->local_window < 0 || c->local_window % c->block_k != 0)
            return sale_layout_why_(why, whylen, "local_window: must be a non-negative multiple of block_k");
        if (c->stages < 2 || c->stages > 7) return sale_layout_why_(why, whylen, "stages: the sm_90a select kernel takes 2..7");
        return 1;
    }
    if (sale_layout_wgmma(c)) {
        if (c->stages != 2 && c->stages != 3) return sale_layout_why_(why, whylen, "stages: the sm_90a wgmma kernels take 2 or 3");
        if (c->family == SALE_LF_ATTEND && (c->block_q != 64 || c->block_k != 32))
            return sale_layout_why_(why, whylen, "warps: the sm_90a attend kernels (wgmma, warps 12 or 5) read masks of block_q 64 and block_k 32");
        return 1;
    }
    if (c->block_q != 64 && c->block_q != 128) return sale_layout_why_(why, whylen, "block_q: must be 64 or 128");
    if (c->block_seg < c->block_k || c->block_seg % c->block_k != 0 || c->block_seg / c->block_k > 32)
        return sale_layout_why_(why, whylen, "block_seg: must be a multiple of block_k, at most 32 blocks");
    if (c->local_window < 0 || c->local_window % c->block_k != 0)
        return sale_layout_why_(why, whylen, "local_window: must be a non-negative multiple of block_k");
    if (c->family == SALE_LF_PLAIN) {
        if (c->warps * 32 != c->block_q)
            return sale_layout_why_(why, whylen, "warps: plain runs one thread per query row (warps = block_q/32)");
        if (c->stages != 1) return sale_layout_why_(why, whylen, "stages: plain has no pipeline (stages = 1)");
        return 1;
    }
    if (c->warps != 2 && c->warps != 4 && c->warps != 8) return sale_layout_why_(why, whylen, "warps: must be 2, 4 or 8");
    if (c->block_q % (16 * c->warps) != 0) return sale_layout_why_(why, whylen, "warps: block_q must be a multiple of 16*warps");
    mt = c->block_q / (16 * c->warps);
    if (mt > 2) return sale_layout_why_(why, whylen, "warps: at most 32 query rows per warp (block_q/(16*warps) <= 2)");
    if (mt == 2 && c->family == SALE_LF_FUSED)
        return sale_layout_why_(why, whylen, "warps: the fused kernel needs 16 query rows per warp (warps = block_q/16), registers");
    if (mt == 2 && c->head_dim == 128 && c->family != SALE_LF_SELECT && sale_layout_kt(c) > 32)
        return sale_layout_why_(why, whylen, "warps: 32 rows per warp with head_dim 128 and 64-key tiles spills registers");
    if (c->stages < 2 || c->stages > 4) return sale_layout_why_(why, whylen, "stages: must be 2..4");
    if (sale_layout_smem(c) > sale_layout_smem_limit(c->arch))
        return sale_layout_why_(why, whylen, "shared memory: tile needs more than the architecture allows per block");
    return 1;
}

/* bytes of device scratch the family needs (p.scratch) */
static SALE_HD inline unsigned long long sale_layout_scratch_bytes(const sale_layout_cfg *c, int B, int Hq, int Hkv, int N) {
    if (c->family == SALE_LF_QUANTIZE)
        return (unsigned long long)sale_layout_mean_chunks(N) * (unsigned long long)(Hq + Hkv) * (unsigned long long)B *
               (unsigned long long)c->head_dim * 8ull;
    if (sale_layout_wgmma_select(c))
        return sale_layout_se_cbound_off(B, Hq, N) +
               (unsigned long long)B * (unsigned long long)Hq * (unsigned long long)((N + c->block_k - 1) / c->block_k) * 8ull;
    return 0;
}

/* u32 counters at p.sync (offset 0 of the workspace): the quantize launch's
 * (3 for the whole launch, then one per (batch, head), q heads then kv heads:
 * sale_quantize_kernel), then the rows attend kernel's two (the mask rows
 * taken, the CTAs done taking: sale_layout_rows_sync). Zero before a launch;
 * each launch leaves them zero. */
static SALE_HD inline unsigned long long sale_layout_rows_sync(int B, int Hq, int Hkv) {
    return 3ull + (unsigned long long)B * (unsigned long long)(Hq + Hkv);
}
static SALE_HD inline unsigned long long sale_layout_sync_words(int B, int Hq, int Hkv) {
    return sale_layout_rows_sync(B, Hq, Hkv) + 2ull;
}

/* CTAs an SM of a persistent kernel (the host launches at most this many
 * times the SM count; any grid is correct): the rows attend kernel 2, the
 * two-row attend kernel 1 (its ~227 KB of shared memory); 0: not persistent */
static SALE_HD inline int sale_layout_persistent_per_sm(const sale_layout_cfg *c) {
    if (sale_layout_wgmma_rows(c)) return 2;
    if (sale_layout_wgmma(c) && c->family == SALE_LF_ATTEND) return 1;
    return 0;
}

/* the launches of one family, in order. Returns the count (<= 4) or -1. */
static SALE_HD inline int sale_layout_plan(const sale_layout_cfg *c, int B, int Hq, int Hkv, int N, sale_launch *out) {
    if (B <= 0 || Hq <= 0 || Hkv <= 0 || N <= 0 || Hq % Hkv != 0) return -1;
    if (c->family == SALE_LF_QUANTIZE) {
        /* one launch: the mean partials, then the codes (sale_quantize_kernel) */
        unsigned long long nkb = (unsigned long long)((N + c->block_k - 1) / c->block_k);
        unsigned long long qt = (unsigned long long)((N + SALE_QZ_QROWS - 1) / SALE_QZ_QROWS);
        unsigned long long items = ((unsigned long long)Hq * qt + (unsigned long long)Hkv * nkb) * (unsigned long long)B;
        unsigned long long n = (unsigned long long)sale_layout_mean_chunks(N) * (unsigned long long)(Hq + Hkv) * (unsigned long long)B +
                               (items < SALE_QZ_WORK_BLOCKS ? items : SALE_QZ_WORK_BLOCKS);
        if (n > 0x7fffffffull || items + SALE_QZ_WORK_BLOCKS > 0x7fffffffull) return -1; /* the kernel counts items in int */
        out[0].entry = "sale_quantize_kernel";
        out[0].grid[0] = (unsigned)n; out[0].grid[1] = 1; out[0].grid[2] = 1;
        out[0].block = SALE_QZ_THREADS; out[0].smem = 0;
        return 1;
    }
    if (c->family < 1 || c->family > 5) return -1;
    if (sale_layout_wgmma_select(c)) {
        /* (1) the local region: one CTA per (query block, head, batch) */
        sale_layout_cfg l = sale_layout_se_local(c);
        out[0].entry = "sale_select_local_kernel";
        out[0].grid[0] = (unsigned)((N + c->block_q - 1) / c->block_q);
        out[0].grid[1] = (unsigned)Hq;
        out[0].grid[2] = (unsigned)B;
        out[0].block = SALE_SE_LOCAL_WARPS * 32;
        out[0].smem = sale_layout_se_local_smem(&l);
        /* (2) the estimation: one CTA per four m64 tiles of one GQA group (heads
         * of the group first, then neighbouring query blocks) */
        int group = Hq / Hkv, g4 = group % 4 == 0 ? 4 : (group % 2 == 0 ? 2 : 1), qpc = 4 / g4;
        unsigned long long nqb = (unsigned long long)((N + c->block_q - 1) / c->block_q);
        unsigned long long n = (nqb + (unsigned long long)qpc - 1) / (unsigned long long)qpc * (unsigned long long)B *
                               (unsigned long long)Hkv * (unsigned long long)(group / g4);
        if (n > 0x7fffffffull) return -1;
        out[1].entry = "sale_select_wgmma_kernel";
        out[1].grid[0] = (unsigned)n; out[1].grid[1] = 1; out[1].grid[2] = 1;
        out[1].block = (unsigned)c->warps * 32u;
        out[1].smem = sale_layout_smem(c);
        return 2;
    }
    if (sale_layout_wgmma(c)) { /* 1-D: (query tile, batch, head), heaviest tiles first; rows: one 64-row mask row a CTA */
        const int rows = sale_layout_wgmma_rows(c) ? 64 : SALE_WG_TILE;
        unsigned long long n = (unsigned long long)((N + rows - 1) / rows) * (unsigned long long)Hq * (unsigned long long)B;
        if (n > 0x7fffffffull) return -1;
        out[0].entry = sale_layout_entry(c);
        out[0].grid[0] = (unsigned)n; out[0].grid[1] = 1; out[0].grid[2] = 1;
        out[0].block = sale_layout_threads(c);
        out[0].smem = sale_layout_smem(c);
        return 1;
    }
    out[0].entry = sale_layout_main_entry(c->family);
    out[0].grid[0] = (unsigned)((N + c->block_q - 1) / c->block_q);
    out[0].grid[1] = (unsigned)Hq;
    out[0].grid[2] = (unsigned)B;
    out[0].block = sale_layout_threads(c);
    out[0].smem = sale_layout_smem(c);
    return 1;
}

/* sale_params.pick_min: SALE_WR_PICK_DENSITY of the causal blocks of a call
 * (causal: the blocks at or below each query block's last row, summed over
 * rows, heads and batch), rounded up; at least 1 */
static SALE_HD inline unsigned long long sale_layout_pick_min(unsigned long long causal_blocks) {
    const double x = (double)causal_blocks * SALE_WR_PICK_DENSITY;
    unsigned long long m = (unsigned long long)x;
    if ((double)m < x) m++;
    return m ? m : 1ull;
}

/* whether attend configuration c, its warps left open (stages may be open:
 * 0), takes the rows kernel by default at a call of length bucket bucket_n
 * (a power of two; 0: no length known): sm_90a, the rows kernel legal for
 * these block sizes, and bucket_n <= SALE_WR_DEFAULT_MAX_N (ctx_kernel
 * applies it after a tuned winner, which takes precedence) */
static SALE_HD inline int sale_layout_rows_default(const sale_layout_cfg *c, int bucket_n) {
    sale_layout_cfg r = *c;
    r.warps = SALE_WR_WARPS;
    if (!r.stages) r.stages = 3;
    return bucket_n > 0 && bucket_n <= SALE_WR_DEFAULT_MAX_N && sale_layout_wgmma_rows(&r) && sale_layout_legal(&r, NULL, 0);
}

#endif
