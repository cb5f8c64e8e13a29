/* attend.cu — sale family "attend": see sale_common.cuh (SaleAttn) for the shared
 * attention engine, and wgmma_attn.cuh for the sm_90a kernel at head_dim 128
 * (warps 12). Compiles standalone with nvcc (defaults below) and under NVRTC
 * with the host's prelude of #defines. */
#ifndef SALE_FAMILY
#define SALE_FAMILY 3
#endif
#if defined(SALE_ARCH) && SALE_ARCH == 901 && SALE_HEAD_DIM == 128 && SALE_WARPS == 12
#define SALE_WGMMA_ATTN 1 /* sale_layout_wgmma() */
#endif
#if defined(SALE_ARCH) && SALE_ARCH == 901 && SALE_HEAD_DIM == 128 && SALE_WARPS == 5
#define SALE_WGMMA_ROWS 1 /* sale_layout_wgmma_rows() */
#endif
#include "sale_common.cuh"

#ifdef SALE_WGMMA_ATTN
#include "wgmma_attn.cuh" /* Hopper: wgmma + TMA, two mask rows a CTA */
#elif defined(SALE_WGMMA_ROWS)
#include "wgmma_rows.cuh" /* Hopper: wgmma + TMA, one mask row a CTA */
#else
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32) sale_attend_kernel(const sale_params p) {
    sale_attention_body<SALE_MODE_ATTEND>(p);
}
#endif
