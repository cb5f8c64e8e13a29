/* wgmma_common.cuh — the Hopper (sm_90a) primitives the wgmma kernels share:
 * mbarriers, TMA loads, shared-memory matrix descriptors, wgmma fences and
 * waits. Included by wgmma_attn.cuh (dense, attend) and wgmma_est.cuh
 * (select). */
#ifndef SALE_WGMMA_COMMON_CUH
#define SALE_WGMMA_COMMON_CUH

/* ------------------------------------------------------------ mbarrier, TMA */
/* the attend kernel this call picked (sale_params.pick, set by the host only
 * where both attend kernels are launched): the two-row kernel iff the
 * select's kept blocks reach pick_min. The select's atomics are
 * complete (an earlier launch on the stream); every thread of a CTA reads the
 * same value, so a CTA returns whole, before any barrier. */
SALE_DEV bool dw_pick_two_row(const sale_params &p) {
    return __ldcg((const unsigned long long *)p.pick) >= p.pick_min;
}
SALE_DEV void dw_mbar_init(sale_u32 a, sale_u32 n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(n) : "memory");
}
SALE_DEV void dw_mbar_expect_tx(sale_u32 a, sale_u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(a), "r"(bytes) : "memory");
}
SALE_DEV void dw_mbar_arrive(sale_u32 a) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
}
SALE_DEV void dw_mbar_wait(sale_u32 a, sale_u32 parity) {
    sale_u32 ok;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(ok)
                     : "r"(a), "r"(parity)
                     : "memory");
    } while (!ok);
}
/* one box (64 columns x 128 rows) of a rank-4 tensor map (d, row, head, batch) */
SALE_DEV void dw_tma_4d(sale_u32 dst, const sale_tmap *map, int d, int row, int h, int b, sale_u32 mbar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
                 "%5}], [%6];\n" ::"r"(dst),
                 "l"((sale_u64)map), "r"(d), "r"(row), "r"(h), "r"(b), "r"(mbar)
                 : "memory");
}

/* a box of shared memory at src into a rank-4 tensor map at (d, row, h, b),
 * in the current bulk group (rows past the tensor's end are not written) */
SALE_DEV void dw_tma_store_4d(const sale_tmap *map, sale_u32 src, int d, int row, int h, int b) {
    asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
                     (sale_u64)map),
                 "r"(src), "r"(d), "r"(row), "r"(h), "r"(b)
                 : "memory");
}
SALE_DEV void dw_bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
/* this thread's bulk groups have read their shared memory (it may be reused) */
SALE_DEV void dw_bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
/* this thread's bulk groups are complete (their global writes done) */
SALE_DEV void dw_bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

/* one box of a rank-3 tensor map (column, row, slice) */
SALE_DEV void dw_tma_3d(sale_u32 dst, const sale_tmap *map, int c0, int c1, int c2, sale_u32 mbar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
                 "[%5];\n" ::"r"(dst),
                 "l"((sale_u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(mbar)
                 : "memory");
}
/* a 4-byte asynchronous copy global -> shared (L2 only), and the arrival on an
 * mbarrier once every cp.async this thread issued has landed (.noinc: the
 * barrier's count includes it) */
SALE_DEV void dw_cp4(sale_u32 dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
SALE_DEV void dw_cp_arrive(sale_u32 mbar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(mbar) : "memory");
}
/* a named barrier over n threads (a warpgroup: 128) */
SALE_DEV void dw_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

/* ------------------------------------------------------------------ wgmma */
/* shared-memory matrix descriptor, 128-byte swizzle */
SALE_DEV sale_u64 dw_desc(sale_u32 saddr, sale_u32 lbo, sale_u32 sbo) {
    sale_u64 d = (sale_u64)((saddr & 0x3FFFFu) >> 4);
    d |= (sale_u64)((lbo >> 4) & 0x3FFFu) << 16;
    d |= (sale_u64)((sbo >> 4) & 0x3FFFu) << 32;
    d |= (sale_u64)1 << 62;
    return d;
}
/* a descriptor from its two words */
SALE_DEV sale_u64 dw_desc_pack(sale_u32 lo, sale_u32 hi) {
    sale_u64 d;
    asm("mov.b64 %0, {%1, %2};\n" : "=l"(d) : "r"(lo), "r"(hi));
    return d;
}
SALE_DEV void dw_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
SALE_DEV void dw_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> SALE_DEV void dw_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* keeps the compiler from moving reads of wgmma results above the wait */
template <int N> SALE_DEV void dw_fence_acc(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N> SALE_DEV void dw_fence_acc(int (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+r"(d[i])::"memory");
}

/* the 64 accumulator registers of an m64n128 wgmma, as an operand list */
#define DW_ACC64                                                                                                      \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, "   \
    "%46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

#endif
