/* select.cu — sale family "select": see sale_common.cuh (SaleAttn) for the shared
 * attention engine, and wgmma_est.cuh for the sm_90a estimation of thr=fixed
 * (warps 12 or 20; sale_layout_wgmma_select). Compiles standalone with nvcc
 * (defaults below) and under NVRTC with the host's prelude of #defines. */
#ifndef SALE_FAMILY
#define SALE_FAMILY 2
#endif
#if defined(SALE_ARCH) && SALE_ARCH == 901 && (SALE_WARPS == 12 || SALE_WARPS == 20)
/* two kernels: the local region (select_local.cuh: 4 warps, mma.sync, a ring
 * of SALE_SE_LOCAL_RING K tiles), then the wgmma estimation with the key's
 * warps and stages */
/* the key's values, captured before SALE_WARPS and SALE_STAGES change below */
#if SALE_WARPS == 12
#define SALE_SE_WARPS 12
#else
#define SALE_SE_WARPS 20
#endif
static constexpr int sale_se_stages = SALE_STAGES; /* legal keys: 2..7 (sale_layout_legal) */
#define SALE_SE_STAGES sale_se_stages
#undef SALE_WARPS
#undef SALE_STAGES
#define SALE_WARPS 4  /* SALE_SE_LOCAL_WARPS */
#define SALE_STAGES 2 /* SALE_SE_LOCAL_STAGES */
#include "sale_common.cuh"
#include "select_local.cuh"
static_assert(SALE_WARPS == SALE_SE_LOCAL_WARPS && SALE_STAGES == SALE_SE_LOCAL_STAGES, "the host's local launch");
extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32, 4) sale_select_local_kernel(const sale_params p) {
    sale_select_local_lean<SALE_MODE_SELECT>(p);
}
#include "wgmma_est.cuh"
#else
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
#endif
