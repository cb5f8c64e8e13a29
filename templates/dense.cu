/* dense.cu — sale family "dense": see sale_common.cuh (SaleAttn) for the shared
 * attention engine, and dense_wgmma.cuh for the sm_90a kernel at head_dim 128.
 * Compiles standalone with nvcc (defaults below) and under NVRTC with the
 * host's prelude of #defines. */
#ifndef SALE_FAMILY
#define SALE_FAMILY 4
#endif
#if defined(SALE_ARCH) && SALE_ARCH == 901 && SALE_HEAD_DIM == 128
#define SALE_WGMMA_DENSE 1 /* sale_layout_wgmma_dense() */
#endif
#include "sale_common.cuh"

#ifdef SALE_WGMMA_DENSE
/* Hopper: wgmma + TMA (sale_layout_wgmma_dense) */
#include "dense_wgmma.cuh"
#else
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32) sale_dense_kernel(const sale_params p) {
    sale_attention_body<SALE_MODE_DENSE>(p);
}
#endif
