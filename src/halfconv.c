/* halfconv.c — fp16 / bf16 <-> fp32 on the host, round to nearest even, with
 * NaN, infinities and subnormals handled exactly. Used by the reference, the
 * generator and the tests, so it must agree bit for bit with the GPU's
 * __float2half_rn / __float2bfloat16_rn. */
#include <string.h>

#include "internal.h"

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t sale_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u) /* NaN: keep it quiet and keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds to infinity (65504 + half an ulp is a tie to odd) */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a half subnormal (or zero) */
        if (a <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie to even 0) */
            return sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value / 2^-24 = m * 2^(e-126) */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (r & 1u)))
            r++; /* may carry into the smallest normal: the encoding is still right */
        return (uint16_t)(sign | r);
    }
    uint32_t h = (a - 0x38000000u) >> 13; /* rebias exponent 127 -> 15 */
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right rounding */
    return (uint16_t)(sign | h);
}

float sale_f16_to_f32(uint16_t hv)
{
    uint32_t sign = (uint32_t)(hv & 0x8000u) << 16;
    uint32_t e = (hv >> 10) & 0x1fu;
    uint32_t m = hv & 0x3ffu;

    if (e == 0x1fu) /* Inf / NaN */
        return bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0) {
        if (m == 0)
            return bits_f32(sign);
        /* subnormal: normalise */
        int sh = 0;
        while (!(m & 0x400u)) {
            m <<= 1;
            sh++;
        }
        m &= 0x3ffu;
        return bits_f32(sign | ((uint32_t)(113 - sh) << 23) | (m << 13));
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t sale_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncation could make it Inf */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; overflow gives Inf */
    return (uint16_t)(u >> 16);
}

float sale_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

float half_load(const void *base, sale_dtype dt, size_t idx)
{
    switch (dt) {
    case SALE_DTYPE_F16:
        return sale_f16_to_f32(((const uint16_t *)base)[idx]);
    case SALE_DTYPE_BF16:
        return sale_bf16_to_f32(((const uint16_t *)base)[idx]);
    default:
        return ((const float *)base)[idx];
    }
}

void half_store(void *base, sale_dtype dt, size_t idx, float x)
{
    switch (dt) {
    case SALE_DTYPE_F16:
        ((uint16_t *)base)[idx] = sale_f32_to_f16(x);
        break;
    case SALE_DTYPE_BF16:
        ((uint16_t *)base)[idx] = sale_f32_to_bf16(x);
        break;
    default:
        ((float *)base)[idx] = x;
    }
}
