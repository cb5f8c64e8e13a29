/* select_local.cuh — the lean local launch of the sm_90a select with
 * thr = fixed (sale_select_local_kernel, templates/select.cu): the exact
 * local region and the sink of one 64-row query block of one q head give
 * every row its threshold t_i; the CTA also writes the mask row's local
 * bits, the kept count so far and the {min, max} of c_j of the key blocks
 * under its rows. Same outputs, same arithmetic in the same order as
 * sale_select_local_body (sale_common.cuh) on SaleAttn<SELECT, true>, which
 * it replaces on this path; what it drops is that engine's per-tile
 * overhead (~300 warp instructions a 32-key tile for a region of ~7 tiles):
 *  - the tile list is an index (t -> key block), no generator state;
 *  - each thread copies fixed (row, chunk) slots of every tile, so a tile's
 *    4 cp.async are one source pointer plus a stride and one shared
 *    address plus immediates; only the diagonal tile checks keys < N;
 *  - a ring of SALE_SE_LOCAL_RING K tiles, loads RING-1 tiles ahead, one
 *    __syncthreads a tile (the slot refilled is the one every warp left
 *    before that barrier);
 *  - the Q A-fragments in registers, the Q tile in its own shared memory
 *    (no aliasing, so the first K tiles load with it);
 *  - the ldmatrix addresses of the K fragments: 4 registers a lane, the
 *    rest immediates.
 * SeLocalGeo is integer code that tests/test_local.cpp compiles on the host
 * (SALE_HOST_TEST): the tile list against the region and the sink for
 * lengths around block and segment boundaries, and the copy and ldmatrix
 * offsets against sale_swz. */
#ifndef SALE_SELECT_LOCAL_CUH
#define SALE_SELECT_LOCAL_CUH

struct SeLocalGeo {
    static constexpr int BQ = 64, BK = 32, RB = 256; /* rows a CTA, keys a tile, bytes a row (D 128, 16-bit) */
    static constexpr int TILE = BK * RB;             /* bytes of one K tile */
    /* tiles of the list: the local region [local_lo, kb_hi], then the sink
     * (block 0) when the region does not start at it */
    static SALE_DEV int tiles(int kb_hi, int local_lo) {
        return kb_hi - local_lo + 1 + (local_lo > 0 ? 1 : 0);
    }
    /* key block of tile t: from the diagonal down, then the sink (the
     * order of SaleAttn::local_region, so m and l round as there) */
    static SALE_DEV int block(int t, int kb_hi, int local_lo) {
        return t <= kb_hi - local_lo ? kb_hi - t : 0;
    }
    /* this thread's copy slots of a 32-row tile (128 threads, 16 chunks of
     * 16 B a row): row tid >> 2, chunks (tid & 3) + 4 i (i = 0..3), so the
     * source of chunk i is the row's pointer + 64 i bytes, and a warp's copy
     * i reads 64 contiguous bytes of 8 rows; the destination is sale_swz's
     * XOR-swizzled offset, copy_off(tid, i + 2) = copy_off(tid, i) + 128 */
    static SALE_DEV int copy_row(int tid) {
        return tid >> 2;
    }
    static SALE_DEV int copy_chunk(int tid, int i) {
        return (tid & 3) + 4 * i;
    }
    static SALE_DEV int copy_off(int tid, int i) {
        return copy_row(tid) * RB + ((copy_chunk(tid, i) ^ (copy_row(tid) & 7)) << 4);
    }
    /* ldmatrix.x4 of the K B-fragments of k-step ks, keys 16 np .. 16 np + 15:
     * lane reads row (lane & 7) + 8 (lane >> 4) at chunk 2 ks + ((lane >> 3) & 1).
     * kfrag(lane, ks & 3) + (ks >> 2) * 128 + np * 16 * RB is sale_swz's offset:
     * the swizzle XORs the chunk's low 3 bits only */
    static SALE_DEV int kfrag(int lane, int j) {
        const int r = (lane & 7) + ((lane >> 4) << 3);
        return r * RB + (((2 * j + ((lane >> 3) & 1)) ^ (lane & 7)) << 4);
    }
    static SALE_DEV int kfrag_full(int lane, int ks, int np) {
        return kfrag(lane, ks & 3) + (ks >> 2) * 128 + np * 16 * RB;
    }
};

#ifndef SALE_HOST_TEST
/* the launch's configuration as the host sees it (sale_layout_se_local) */
template <int MODE> struct SeLocalCfg {
    static constexpr sale_layout_cfg LCFG = {MODE, SALE_HEAD_DIM, SALE_BLOCK_Q, SALE_BLOCK_K, SALE_BLOCK_SEG, SALE_LOCAL_WINDOW,
                                             SALE_DTYPE, SALE_EST_BITS, SALE_WARPS, SALE_STAGES, SALE_ARCH};
};
/* the K ring and the online softmax of the local region (sale_select_local_lean) */
struct SeLocalRun {
    static constexpr int R = SALE_SE_LOCAL_RING, BK = SeLocalGeo::BK, RB = SeLocalGeo::RB, TILE = SeLocalGeo::TILE;
    sale_u32 qf[8][4];  /* Q A-fragments */
    sale_u32 kfr[4];    /* ldmatrix addresses of the K fragments in ring slot 0 */
    sale_u32 kdst[2];   /* this thread's copy destinations in ring slot 0 (chunks 0, 1; + 128: 2, 3) */
    const char *ksrc;   /* source row of the next tile to load */
    const char *ksink;  /* ... of the sink */
    long long ktile;    /* bytes between key blocks */
    int ntl, nloc, wrow0, g4, c4, kb_hi;
    float sl2, m[2], l[2];

    /* load tile tn (> 0: every key < N) into ring slot U, and step the source down */
    template <int U> SALE_DEV void load(int tn) {
        const char *src = tn == nloc ? ksink : ksrc;
#pragma unroll
        for (int i = 0; i < 4; i++)
            sale_cp16(kdst[i & 1] + U * TILE + (i >> 1) * 128, src + i * 64, true);
        ksrc -= ktile;
    }

    /* tile t in ring slot U (= t % R): wait, one barrier, refill the slot
     * every warp has left, then S = Q K^T, mask, online softmax */
    template <int U> SALE_DEV void step(int t) {
        /* tile t landed (the groups after it: R-2), visible to every warp, and
         * every warp is done with tile t-1, whose slot (U + R - 1) % R is refilled */
        sale_cp_wait<R - 2>();
        __syncthreads();
        if (t + R - 1 < ntl)
            load<(U + R - 1) % R>(t + R - 1);
        sale_cp_commit();
        const int k0 = (t < nloc ? kb_hi - t : 0) * BK;
        if (k0 > wrow0 + 15) /* the warp sees nothing of this tile */
            return;
        float s[BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[nt][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 8; ks++) {
#pragma unroll
            for (int np = 0; np < BK / 16; np++) {
                sale_u32 b0, b1, b2, b3;
                sale_ldsm4(b0, b1, b2, b3, kfr[ks & 3] + U * TILE + (ks >> 2) * 128 + np * 16 * RB);
                sale_mma_f16(s[2 * np], qf[ks], b0, b1);
                sale_mma_f16(s[2 * np + 1], qf[ks], b2, b3);
            }
        }
        /* causal mask (also masks keys >= N for rows < N) */
        if (k0 + BK - 1 > wrow0) {
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = k0 + nt * 8 + 2 * c4 + (e & 1);
                    const int row = wrow0 + g4 + ((e >> 1) << 3);
                    if (key > row)
                        s[nt][e] = SALE_NEG_INF;
                }
        }
        /* online softmax: SaleAttn::tile's arithmetic, in its order */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float mx = SALE_NEG_INF;
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt][2 * hh], s[nt][2 * hh + 1]));
            mx = sale_quad_max(mx);
            const float mnew = fmaxf(m[hh], mx);
            const float muse = mnew == SALE_NEG_INF ? 0.f : mnew;
            const float ms = __fmul_rn(muse, sl2);
            const float alpha = sale_ex2(__fsub_rn(__fmul_rn(m[hh], sl2), ms));
            m[hh] = mnew;
            float rs = 0.f;
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    rs = __fadd_rn(rs, sale_ex2(__fmaf_rn(s[nt][2 * hh + e], sl2, -ms)));
            l[hh] = __fmaf_rn(l[hh], alpha, rs);
        }
    }
};

template <int MODE> SALE_DEV void sale_select_local_lean(const sale_params &p) {
    static_assert(MODE == SALE_MODE_SELECT, "select only");
    using G = SeLocalGeo;
    constexpr int R = SALE_SE_LOCAL_RING, BQ = SALE_BLOCK_Q, BK = SALE_BLOCK_K, SB = SALE_BLOCK_SEG / SALE_BLOCK_K;
    static_assert(SALE_HEAD_DIM == 128 && BQ == G::BQ && BK == G::BK && SALE_WARPS == 4, "the wgmma select's tiles, 4 warps");
    static_assert(R == 4, "the tile loop is unrolled by the ring's 4 slots");
    /* shared memory: the Q tile at 0, then the ring of R K tiles */
    constexpr int OFF_K = BQ * G::RB, SMEM_END = OFF_K + R * G::TILE;
    static_assert(sale_layout_se_local_smem(&SeLocalCfg<MODE>::LCFG) == (unsigned)SMEM_END,
                  "shared-memory layout of the local kernel and sale_layout_se_local_smem() disagree");

    const int N = p.N, qb = p.nqb - 1 - (int)blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int i0 = qb * BQ;
    const int iend = (i0 + BQ < N ? i0 + BQ : N) - 1, kb_hi = iend / BK;
    const int bhq = b * p.Hq + h;
    const float tau = sale_head_tau(p, h);
    int local_lo, nseg;
    sale_segment_plan(i0, SALE_LOCAL_WINDOW, BK, SB, !(tau > 1e-5f), &local_lo, &nseg);
    const sale_u32 sbase = sale_smem_addr(sale_smem);

    if (nseg > 0) { /* thresholds are needed only where segments follow */
        SeLocalRun st;
        st.wrow0 = i0 + warp * 16;
        st.g4 = lane >> 2;
        st.c4 = lane & 3;
        st.kb_hi = kb_hi;
        st.sl2 = p.scale_log2;
        st.nloc = kb_hi - local_lo + 1;
        st.ntl = G::tiles(kb_hi, local_lo);
        const int cr = G::copy_row(tid);
        /* Q tile (rows >= N zero-filled), rows cr and cr + 32: one commit group */
        {
            const char *qg = (const char *)p.q + ((long long)b * p.q_sb + (long long)h * p.q_sh) * 2 + (tid & 3) * 16;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int row = i0 + cr + 32 * half;
                const bool v = row < N;
                const char *src = qg + (long long)(v ? row : 0) * p.q_sn * 2;
#pragma unroll
                for (int i = 0; i < 4; i++)
                    sale_cp16(sbase + G::copy_off(tid, i) + half * 32 * G::RB, src + i * 64, v);
            }
            sale_cp_commit();
        }
        /* K: this thread's row cr of key block kb is kbase + kb * ktile. Every
         * key of a tile but the first (the diagonal, kb_hi) is < N: the
         * region's other blocks are below kb_hi, and the sink's keys are
         * < 32 <= 32 * local_lo <= 32 * kb_hi <= iend < N */
        const char *kbase = (const char *)p.k + ((long long)b * p.k_sb + (long long)(h / p.group) * p.k_sh +
                                                 (long long)cr * p.k_sn) * 2 + (tid & 3) * 16;
        st.ktile = (long long)BK * p.k_sn * 2;
        st.ksink = kbase;
        st.ksrc = kbase + kb_hi * st.ktile;
        /* (an identity shuffle: ptxas would otherwise recompute these
         * per-thread constants from %tid in every tile) */
        st.kdst[0] = __shfl_sync(0xffffffffu, sbase + OFF_K + G::copy_off(tid, 0), lane);
        st.kdst[1] = __shfl_sync(0xffffffffu, sbase + OFF_K + G::copy_off(tid, 1), lane);
        { /* tile 0, the diagonal: keys >= N zero-filled */
            const bool v = kb_hi * BK + cr < N;
#pragma unroll
            for (int i = 0; i < 4; i++)
                sale_cp16(st.kdst[i & 1] + (i >> 1) * 128, v ? st.ksrc + i * 64 : kbase, v);
            st.ksrc -= st.ktile;
            sale_cp_commit();
        }
        /* tiles 1 .. R-2, one commit group each */
        if (1 < st.ntl) st.load<1>(1);
        sale_cp_commit();
        if (2 < st.ntl) st.load<2>(2);
        sale_cp_commit();
        static_assert(R - 2 == 2, "prologue: tiles 0, 1, 2");
        /* the Q fragments, once the Q group has landed (R-1 K groups may be pending) */
        sale_cp_wait<R - 1>();
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < 8; ks++) {
            const int r = warp * 16 + (lane & 15), ch = ks * 2 + (lane >> 4);
            sale_ldsm4(st.qf[ks][0], st.qf[ks][1], st.qf[ks][2], st.qf[ks][3], sbase + r * G::RB + ((ch ^ (r & 7)) << 4));
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
            st.kfr[j] = __shfl_sync(0xffffffffu, sbase + OFF_K + G::kfrag(lane, j), lane); /* (as kdst) */
        st.m[0] = st.m[1] = SALE_NEG_INF;
        st.l[0] = st.l[1] = 0.f;
        /* the tiles, unrolled by the ring so that slot offsets are immediates */
        for (int t = 0; t < st.ntl; t += R) {
            st.step<0>(t);
            if (t + 1 < st.ntl) st.step<1>(t + 1);
            if (t + 2 < st.ntl) st.step<2>(t + 2);
            if (t + 3 < st.ntl) st.step<3>(t + 3);
        }
        /* t_i = m + log(tau * l) / scale (SaleAttn::row_threshold) */
        float *thr = (float *)p.scratch + (long long)bhq * N;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float lt = sale_quad_sum(st.l[hh]); /* every lane: quad sums */
            const float tv = __fadd_rn(st.m[hh], __fdiv_rn(logf(__fmul_rn(tau, lt)), p.scale));
            const int row = st.wrow0 + st.g4 + hh * 8;
            if (st.c4 == 0 && row < N) thr[row] = tv;
        }
    }
    /* mask row: the local region and the sink (SaleAttn::init_mask_row) */
    if (p.mask) {
        sale_u32 *mask_row = (sale_u32 *)p.mask + ((long long)bhq * p.nqb + qb) * p.nkw;
        for (int w = tid; w < p.nkw; w += SALE_WARPS * 32)
            mask_row[w] = sale_mask_word(w, local_lo, kb_hi) | (w == 0 ? 1u : 0u);
    }
    /* {min, max} of c_j over each key block of this query block's rows: warp w, block w */
    static_assert(BQ / BK <= SALE_WARPS, "one warp per key block");
    const int J = qb * (BQ / BK) + warp;
    if (warp < BQ / BK && J < p.nkb) {
        const int j = J * BK + lane;
        const float c = j < N ? ((const float *)p.cterm)[(long long)bhq * N + j] : 0.f;
        float lo = j < N ? c : SALE_POS_INF, hi = j < N ? c : SALE_NEG_INF;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
            hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
        }
        if (lane == 0) {
            float2 *cb = (float2 *)((unsigned char *)p.scratch + sale_layout_se_cbound_off(p.B, p.Hq, p.N));
            cb[(long long)bhq * p.nkb + J] = make_float2(lo, hi);
        }
    }
    /* the kept count so far: the region and the sink (SaleAttn::setup, store);
     * also into the attend pick's total (a dense head's whole row is here) */
    const int nloc = (kb_hi - local_lo + 1) + (local_lo > 0 ? 1 : 0);
    if (p.kept && tid == 0) ((int *)p.kept)[(long long)bhq * p.nqb + qb] = nloc;
    if (p.pick && tid == 0) atomicAdd((unsigned long long *)p.pick, (unsigned long long)nloc);
}
#endif /* SALE_HOST_TEST */
#endif
