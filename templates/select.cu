/* select.cu — sale family "select": see sale_common.cuh (SaleAttn) for the shared
 * attention engine. Compiles standalone with nvcc (defaults below) and under
 * NVRTC with the host's prelude of #defines. */
#ifndef SALE_FAMILY
#define SALE_FAMILY 2
#endif
#include "sale_common.cuh"

extern "C" __global__ void __launch_bounds__(SALE_WARPS * 32) sale_select_kernel(const sale_params p) {
    sale_attention_body<SALE_MODE_SELECT>(p);
}
