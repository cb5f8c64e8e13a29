/* select.cu — sale family "select": see sale_common.cuh (SaleAttn) for the shared
 * attention engine. Compiles standalone with nvcc (defaults below) and under
 * NVRTC with the host's prelude of #defines. */
#ifndef SALE_FAMILY
#define SALE_FAMILY 2
#endif
#include "sale_common.cuh"

/* 4 warps, 16 rows per warp, int8 codes: <= 128 registers so that 4 CTAs fit per SM
 * (shared memory: the Q tile is aliased with the K stages, see SaleAttn::QALIAS) */
#if SALE_WARPS == 4 && SALE_BLOCK_Q == 64 && SALE_EST_BITS == 8
#define SALE_SELECT_BOUNDS __launch_bounds__(SALE_WARPS * 32, 4)
#else
#define SALE_SELECT_BOUNDS __launch_bounds__(SALE_WARPS * 32)
#endif
extern "C" __global__ void SALE_SELECT_BOUNDS sale_select_kernel(const sale_params p) {
    sale_attention_body<SALE_MODE_SELECT>(p);
}
