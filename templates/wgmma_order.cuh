/* wgmma_order.cuh — the select's CTA order on sm_90a (SeCta), included by
 * wgmma_est.cuh: which four m64 tiles (query block, head) CTA lin estimates.
 * Integer code apart from segments(), so that tests/test_order.cpp can
 * compile decode() on the host (SALE_HOST_TEST) and check, for the grid
 * sale_layout_plan() launches, that every (batch, head, query block) is one
 * CTA's tile exactly once. */
#ifndef SALE_WGMMA_ORDER_CUH
#define SALE_WGMMA_ORDER_CUH

#define SE_QCHUNK 32 /* query chunks a chunk of the CTA order */
/* The CTA's four m64 tiles: tile t is q head hbase + t % g4 at query block
 * qb0 + t / g4 (absent past the last query block). */
struct SeCta {
    int b, kvh, hbase, qb0, g4;
    /* CTAs in chunks of SE_QCHUNK query chunks (heaviest chunk first), one
     * (batch, KV head) after another inside a chunk: the CTAs resident at
     * once stream the codes of a few KV heads, in phase (L2) */
    SALE_DEV void decode(const sale_params &p, int lin) {
        g4 = p.group % 4 == 0 ? 4 : (p.group % 2 == 0 ? 2 : 1);
        const int qpc = 4 / g4, hgn = p.group / g4;
        const int per = p.B * p.Hkv * hgn, nqc = (p.nqb + qpc - 1) / qpc;
        const int full = nqc / SE_QCHUNK, cper = SE_QCHUNK * per;
        const int ci = lin / cper < full ? lin / cper : full;
        const int csz = ci < full ? SE_QCHUNK : nqc - full * SE_QCHUNK, rem = lin - ci * cper;
        const int qc = nqc - 1 - (ci * SE_QCHUNK + rem % csz); /* heaviest first */
        int r = rem / csz;
        const int hg = r % hgn;
        r /= hgn;
        kvh = r % p.Hkv;
        b = r / p.Hkv;
        hbase = kvh * p.group + hg * g4;
        qb0 = qc * qpc;
    }
#ifndef SALE_HOST_TEST
    /* segments (= code tiles) of tile t: 0 if absent or a dense head */
    SALE_DEV int segments(const sale_params &p, int t, int *qb, int *h) const {
        *qb = qb0 + t / g4;
        *h = hbase + t % g4;
        if (*qb >= p.nqb) return 0;
        int lo, ns;
        sale_segment_plan(*qb * SALE_BLOCK_Q, SALE_LOCAL_WINDOW, SALE_BLOCK_K, SE_BPT,
                          !(sale_head_tau(p, *h) > 1e-5f), &lo, &ns);
        return ns;
    }
#endif
};

#endif
