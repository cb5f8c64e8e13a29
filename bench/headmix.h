/* headmix.h — inputs whose heads differ the way a real model's do, for the
 * calibration benchmarks: each kv head (with its group of q heads) is drawn
 * by sale_generate_qkv() with its own structure. kv head h % 8:
 *   0, 1, 2  "local"     — sink and recent tokens dominate: sink 6, recency 1.5, no needles
 *   3, 4, 5  "retrieval" — a few far keys matter: sink 4, recency 1, 4 needles per q head (gain 6)
 *   6        "diffuse"   — weak sink and recency (0.5 / 0.25): attention spread over the context
 *   7        "noise"     — i.i.d. N(0,1) Q/K/V: the hardest case for any sparse method
 * Header-only (static) so bench programs and tests share one definition. */
#ifndef SALE_BENCH_HEADMIX_H
#define SALE_BENCH_HEADMIX_H

#include <stdlib.h>
#include <string.h>

#include "sale.h"

static inline const char *headmix_kind(int kvh)
{
    static const char *const k[8] = {"local", "local", "local", "retrieval", "retrieval", "retrieval", "diffuse",
                                      "noise"};
    return k[kvh % 8];
}

/* Fill contiguous q [B,Hq,N,D], k, v [B,Hkv,N,D] of a->dtype (F16/BF16/F32).
 * Needles (query row, key) of the retrieval heads go to needles[0..max) with
 * their global q head index; *n_needles gets the count. Returns SALE_OK or
 * the generator's status. */
static sale_status headmix_generate(const sale_attention_args *a, uint64_t seed, void *q, void *k, void *v,
                                    sale_needle *needles, int max_needles, int *n_needles)
{
    size_t es = a->dtype == SALE_DTYPE_F32 ? 4 : 2;
    int group = a->heads_q / a->heads_kv, N = a->seq_len, D = a->head_dim;
    size_t hq_bytes = (size_t)N * D * es;
    sale_attention_args one = *a;
    one.batch = 1;
    one.heads_q = group;
    one.heads_kv = 1;
    void *tq = malloc(hq_bytes * (size_t)group), *tk = malloc(hq_bytes), *tv = malloc(hq_bytes);
    sale_needle *tn = malloc(sizeof(sale_needle) * (size_t)(group * 8 + 1));
    if (!tq || !tk || !tv || !tn) {
        free(tq), free(tk), free(tv), free(tn);
        return SALE_ERR_NOMEM;
    }
    int nn = 0;
    sale_status st = SALE_OK;
    for (int b = 0; b < a->batch && st == SALE_OK; b++)
        for (int h = 0; h < a->heads_kv && st == SALE_OK; h++) {
            sale_gen_options g;
            memset(&g, 0, sizeof g);
            g.seed = seed * 1000003u + (uint64_t)b * 131 + (uint64_t)h;
            g.structured = 1;
            switch (h % 8) {
            case 0: case 1: case 2:
                g.sink = 6.0f, g.local_bias = 1.5f;
                break;
            case 3: case 4: case 5:
                g.sink = 4.0f, g.local_bias = 1.0f, g.needles = 4, g.needle_gain = 6.0f;
                break;
            case 6:
                g.sink = 0.5f, g.local_bias = 0.25f;
                break;
            default:
                g.structured = 0;
                break;
            }
            int got = 0;
            st = sale_generate_qkv(&one, &g, tq, tk, tv, tn, group * 8, &got);
            if (st != SALE_OK)
                break;
            memcpy((char *)q + ((size_t)b * a->heads_q + (size_t)h * group) * hq_bytes, tq, hq_bytes * (size_t)group);
            memcpy((char *)k + ((size_t)b * a->heads_kv + h) * hq_bytes, tk, hq_bytes);
            memcpy((char *)v + ((size_t)b * a->heads_kv + h) * hq_bytes, tv, hq_bytes);
            for (int i = 0; i < got && nn < max_needles; i++) {
                sale_needle x = tn[i];
                x.batch = b;
                x.head_q = h * group + tn[i].head_q;
                needles[nn++] = x;
            }
        }
    if (n_needles)
        *n_needles = nn;
    free(tq), free(tk), free(tv), free(tn);
    return st;
}

#endif
