/* generate.c — seeded Q/K/V inputs for tests and benchmarks: i.i.d. normals,
 * or a long-context structure (RoPE, attention sink, recency, topics, planted
 * needles) documented in bench/README.md "Inputs". Every random stream is
 * keyed by (seed, purpose, batch, head), so the bytes do not depend on the
 * number of threads. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sale.h"

#define GEN_MAX_THREADS 16
#define GEN_ANCHOR 32   /* positions between anchors of the recency component */
#define GEN_CHUNK_MIN 256
#define GEN_CHUNK_MAX 1024
#define GEN_SINK_PAIRS 4 /* lowest-frequency RoPE pairs that carry the sink direction */

/* ------------------------------------------------------------------ rng */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

enum { S_Q = 1, S_K, S_V, S_HEAD, S_LOCAL, S_TOPIC, S_SINK, S_CHUNK, S_NEEDLE };

/* One independent stream per (seed, purpose, a, b, c). */
static void rng_init(rng *r, uint64_t seed, int purpose, int64_t a, int64_t b, int64_t c)
{
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);
    x = h ^ ((uint64_t)purpose * 0x100000001b3ull);
    h = splitmix64(&x);
    x = h ^ (uint64_t)a;
    h = splitmix64(&x);
    x = h ^ (uint64_t)b;
    h = splitmix64(&x);
    x = h ^ (uint64_t)c;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r) /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

static double rng_uniform(rng *r) /* (0, 1) */
{
    return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Normal deviates by Marsaglia & Tsang's ziggurat (128 layers): a table
 * look-up and one multiply for ~98% of draws. The tables are built per call
 * of sale_generate_qkv, so there is no global state. */
typedef struct zig {
    uint32_t kn[128];
    double wn[128], fn[128];
} zig;

#define ZIG_R 3.442619855899

static void zig_init(zig *z)
{
    const double m1 = 2147483648.0, vn = 9.91256303526217e-3;
    double dn = ZIG_R, tn = dn;
    double q = vn / exp(-0.5 * dn * dn);
    z->kn[0] = (uint32_t)((dn / q) * m1);
    z->kn[1] = 0;
    z->wn[0] = q / m1;
    z->wn[127] = dn / m1;
    z->fn[0] = 1.0;
    z->fn[127] = exp(-0.5 * dn * dn);
    for (int i = 126; i >= 1; i--) {
        dn = sqrt(-2.0 * log(vn / dn + exp(-0.5 * dn * dn)));
        z->kn[i + 1] = (uint32_t)((dn / tn) * m1);
        tn = dn;
        z->fn[i] = exp(-0.5 * dn * dn);
        z->wn[i] = dn / m1;
    }
}

static double rng_normal(rng *r, const zig *z)
{
    for (;;) {
        uint64_t u = rng_next(r);
        int32_t hz = (int32_t)(uint32_t)u; /* value from the low half, layer from the high bits */
        int iz = (int)(u >> 57);
        uint32_t ahz = hz < 0 ? (uint32_t)0 - (uint32_t)hz : (uint32_t)hz;
        double x = hz * z->wn[iz];
        if (ahz < z->kn[iz])
            return x;
        if (iz == 0) { /* the tail beyond R */
            double xt, y;
            do {
                xt = -log(rng_uniform(r)) / ZIG_R;
                y = -log(rng_uniform(r));
            } while (y + y < xt * xt);
            return hz > 0 ? ZIG_R + xt : -ZIG_R - xt;
        }
        if (z->fn[iz] + rng_uniform(r) * (z->fn[iz - 1] - z->fn[iz]) < exp(-0.5 * x * x))
            return x;
    }
}

static int rng_int(rng *r, int lo, int hi) /* [lo, hi) */
{
    return lo + (int)(rng_uniform(r) * (double)(hi - lo));
}

/* ----------------------------------------------------------------- plan */

typedef struct gen_plan {
    int B, Hq, Hkv, N, D, group;
    sale_dtype dt;
    uint64_t seed;
    int structured, needles;
    float base, sink, local_bias, gain, scale;
    int far, min_key; /* needle key j: min_key <= j < i - far */
    void *q, *k, *v;
    zig zt;
    float *cosT, *sinT; /* [N][D/2] RoPE tables */
    int *chunk;         /* [B][N] topic chunk of each position */
    int *nchunk;        /* [B] */
    sale_needle *planted; /* [B*Hq*needles] */
    unsigned char *ok;    /* [B*Hq*needles] 1 if planted */
    /* parallel-for state */
    void (*fn)(struct gen_plan *, int);
    int ntask;
    atomic_int next;
    atomic_int failed;
} gen_plan;

static void *gen_worker(void *arg)
{
    gen_plan *p = arg;
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= p->ntask)
            break;
        p->fn(p, t);
    }
    return NULL;
}

static void parallel_for(gen_plan *p, int ntask, void (*fn)(gen_plan *, int))
{
    p->fn = fn;
    p->ntask = ntask;
    atomic_store(&p->next, 0);
    par_run(ntask, GEN_MAX_THREADS, gen_worker, p);
}

static void store(const gen_plan *p, void *base, size_t idx, float x)
{
    half_store(base, p->dt, idx, x);
}

static float load(const gen_plan *p, const void *base, size_t idx)
{
    return half_load(base, p->dt, idx);
}

/* ---------------------------------------------------------------- tasks */

/* RoPE tables, one task per 1024 positions: angle = pos * base^(-2p/D), fp64. */
static void task_rope(gen_plan *p, int t)
{
    int half = p->D / 2;
    int i0 = t * 1024, i1 = i0 + 1024 < p->N ? i0 + 1024 : p->N;
    for (int i = i0; i < i1; i++)
        for (int k = 0; k < half; k++) {
            double ang = (double)i * pow((double)p->base, -2.0 * k / p->D);
            p->cosT[(size_t)i * half + k] = (float)cos(ang);
            p->sinT[(size_t)i * half + k] = (float)sin(ang);
        }
}

static void fill_normal(gen_plan *p, void *base, size_t off, uint64_t seed, int purpose, int b, int h)
{
    rng r;
    rng_init(&r, seed, purpose, b, h, 0);
    size_t n = (size_t)p->N * p->D;
    for (size_t e = 0; e < n; e++)
        store(p, base, off + e, (float)rng_normal(&r, &p->zt));
}

/* One structured Q head (is_q) or K head: see bench/README.md "Inputs". */
static void gen_structured(gen_plan *p, int is_q, int b, int h)
{
    int N = p->N, D = p->D, half = D / 2;
    int kvh = is_q ? h / p->group : h;
    float sqrtD = sqrtf((float)D);
    /* amplitudes, chosen in scaled-logit units so they do not depend on D */
    float sig_noise = 0.5f;
    float sig_loc = p->local_bias * sqrtf(6.0f / sqrtD);
    float sig_top = sqrtf(1.5f / sqrtD);
    float sink_logit = 3.5f * p->sink;
    float a_sink = 0.5f * sqrtf(sink_logit * sqrtD);
    float b_sink = sink_logit * sqrtD / a_sink;
    float f_loc = 1.0f, f_top = 1.0f;
    if (is_q) { /* a little diversity between the q heads of a group */
        rng hr;
        rng_init(&hr, p->seed, S_HEAD, b, h, 0);
        f_loc = (float)(0.7 + 0.6 * rng_uniform(&hr));
        f_top = (float)(0.5 + 1.0 * rng_uniform(&hr));
    }

    int nanch = N / GEN_ANCHOR + 2;
    int nch = p->nchunk[b];
    float *anch = malloc((size_t)nanch * D * sizeof(float));
    float *top = malloc((size_t)nch * D * sizeof(float));
    float *row = malloc((size_t)D * sizeof(float));
    if (!anch || !top || !row) {
        atomic_store(&p->failed, 1);
        goto out;
    }
    rng r;
    rng_init(&r, p->seed, S_LOCAL, b, kvh, 0);
    for (size_t e = 0; e < (size_t)nanch * D; e++)
        anch[e] = (float)rng_normal(&r, &p->zt);
    rng_init(&r, p->seed, S_TOPIC, b, kvh, 0);
    for (size_t e = 0; e < (size_t)nch * D; e++)
        top[e] = (float)rng_normal(&r, &p->zt);
    float u[2 * GEN_SINK_PAIRS];
    double un = 0.0;
    rng_init(&r, p->seed, S_SINK, b, kvh, 0);
    for (int e = 0; e < 2 * GEN_SINK_PAIRS; e++) {
        u[e] = (float)rng_normal(&r, &p->zt);
        un += (double)u[e] * u[e];
    }
    for (int e = 0; e < 2 * GEN_SINK_PAIRS; e++)
        u[e] = (float)(u[e] / sqrt(un));

    rng noise;
    rng_init(&noise, p->seed, is_q ? S_Q : S_K, b, h, 0);
    void *dst = is_q ? p->q : p->k;
    size_t off = ((size_t)b * (is_q ? p->Hq : p->Hkv) + h) * N * D;
    const int *chunk = p->chunk + (size_t)b * N;
    for (int i = 0; i < N; i++) {
        int ak = i / GEN_ANCHOR;
        float f = (float)(i % GEN_ANCHOR) / GEN_ANCHOR;
        float w1 = 0.5f * (1.0f - cosf(3.14159265f * f)), w0 = 1.0f - w1;
        float wn = 1.0f / sqrtf(w0 * w0 + w1 * w1);
        const float *A0 = anch + (size_t)ak * D, *A1 = A0 + D;
        const float *T = top + (size_t)chunk[i] * D;
        for (int d = 0; d < D; d++)
            row[d] = sig_noise * (float)rng_normal(&noise, &p->zt) + f_loc * sig_loc * wn * (w0 * A0[d] + w1 * A1[d]) +
                     f_top * sig_top * T[d];
        /* the sink direction lives in the lowest-frequency pairs, which
         * RoPE barely rotates: every query carries it, key 0 carries a lot */
        float amp = is_q ? a_sink : (i == 0 ? b_sink : 0.0f);
        if (amp != 0.0f)
            for (int e = 0; e < GEN_SINK_PAIRS; e++) {
                int d = half - GEN_SINK_PAIRS + e;
                row[d] += amp * u[2 * e];
                row[d + half] += amp * u[2 * e + 1];
            }
        const float *c = p->cosT + (size_t)i * half, *s = p->sinT + (size_t)i * half;
        for (int d = 0; d < half; d++) {
            float x0 = row[d], x1 = row[d + half];
            store(p, dst, off + (size_t)i * D + d, x0 * c[d] - x1 * s[d]);
            store(p, dst, off + (size_t)i * D + d + half, x0 * s[d] + x1 * c[d]);
        }
    }
out:
    free(anch);
    free(top);
    free(row);
}

/* Tasks 0..B*Hq-1: Q heads; then B*Hkv K heads; then B*Hkv V heads. */
static void task_tensor(gen_plan *p, int t)
{
    int nq = p->B * p->Hq, nk = p->B * p->Hkv;
    size_t hs = (size_t)p->N * p->D;
    if (t < nq) {
        int b = t / p->Hq, h = t % p->Hq;
        if (p->structured)
            gen_structured(p, 1, b, h);
        else
            fill_normal(p, p->q, (size_t)t * hs, p->seed, S_Q, b, h);
    } else if (t < nq + nk) {
        t -= nq;
        int b = t / p->Hkv, h = t % p->Hkv;
        if (p->structured)
            gen_structured(p, 0, b, h);
        else
            fill_normal(p, p->k, (size_t)t * hs, p->seed, S_K, b, h);
    } else {
        t -= nq + nk;
        fill_normal(p, p->v, (size_t)t * hs, p->seed, S_V, t / p->Hkv, t % p->Hkv);
    }
}

/* Needles of every q head of one (b, kv head), q heads in order. Key j is set
 * to beta * q_i / |q_i| with exp(scale * q_i.k_j) = gain * (sum over the row's
 * other causal keys of exp(scale * q_i.k)), i.e. j takes gain/(gain+1) of the
 * row's attention. */
static void task_needles(gen_plan *p, int t)
{
    int b = t / p->Hkv, kvh = t % p->Hkv, N = p->N, D = p->D;
    size_t koff = ((size_t)b * p->Hkv + kvh) * N * D;
    float *qi = malloc((size_t)D * sizeof(float));
    if (!qi) {
        atomic_store(&p->failed, 1);
        return;
    }
    int lo_i = N / 2 > p->far + p->min_key + 1 ? N / 2 : p->far + p->min_key + 1;
    for (int h = kvh * p->group; h < (kvh + 1) * p->group; h++) {
        size_t qoff = ((size_t)b * p->Hq + h) * N * D;
        for (int n = 0; n < p->needles; n++) {
            size_t slot = ((size_t)b * p->Hq + h) * p->needles + n;
            p->ok[slot] = 0;
            if (lo_i >= N)
                continue; /* too short to plant a needle far from its query */
            rng r;
            rng_init(&r, p->seed, S_NEEDLE, b, h, n);
            int i = 0, j = -1;
            for (int tries = 0; tries < 16 && j < 0; tries++) {
                i = rng_int(&r, lo_i, N);
                int cand = rng_int(&r, p->min_key, i - p->far);
                int clash = 0; /* a key already used by a needle of this group */
                for (int h2 = kvh * p->group; h2 <= h && !clash; h2++)
                    for (int n2 = 0; n2 < (h2 == h ? n : p->needles); n2++) {
                        size_t s2 = ((size_t)b * p->Hq + h2) * p->needles + n2;
                        if (p->ok[s2] && p->planted[s2].key == cand)
                            clash = 1;
                    }
                if (!clash)
                    j = cand;
            }
            if (j < 0)
                continue;
            double qn = 0.0;
            for (int d = 0; d < D; d++) {
                qi[d] = load(p, p->q, qoff + (size_t)i * D + d);
                qn += (double)qi[d] * qi[d];
            }
            qn = sqrt(qn);
            if (qn == 0.0)
                continue;
            /* log-sum-exp of the row without key j, fp64 */
            double mx = -INFINITY, sum = 0.0;
            for (int jj = 0; jj <= i; jj++) {
                if (jj == j)
                    continue;
                double s = 0.0;
                for (int d = 0; d < D; d++)
                    s += (double)qi[d] * load(p, p->k, koff + (size_t)jj * D + d);
                s *= p->scale;
                if (s > mx) {
                    sum = sum * exp(mx - s) + 1.0;
                    mx = s;
                } else {
                    sum += exp(s - mx);
                }
            }
            double target = mx + log(sum) + log((double)p->gain); /* scaled logit of the needle */
            double beta = target / (p->scale * qn);
            for (int d = 0; d < D; d++)
                store(p, p->k, koff + (size_t)j * D + d, (float)(beta * qi[d] / qn));
            p->planted[slot] = (sale_needle){b, h, i, j};
            p->ok[slot] = 1;
        }
    }
    free(qi);
}

sale_status sale_generate_qkv(const sale_attention_args *a, const sale_gen_options *g, void *q, void *k, void *v,
                              sale_needle *needles, int max_needles, int *n_needles)
{
    static const sale_gen_options none = {0};
    sale_status st = SALE_OK;
    if (n_needles)
        *n_needles = 0;
    if (!a || !q || !k || !v)
        return SALE_ERR_INVALID;
    if (!g)
        g = &none;
    if (a->batch < 1 || a->heads_q < 1 || a->heads_kv < 1 || a->heads_q % a->heads_kv || a->seq_len < 1 ||
        a->head_dim < 2 || a->head_dim % 2 || g->needles < 0 || max_needles < 0 ||
        (a->dtype != SALE_DTYPE_F16 && a->dtype != SALE_DTYPE_BF16 && a->dtype != SALE_DTYPE_F32))
        return SALE_ERR_INVALID;
    if (g->structured && a->head_dim < 4 * GEN_SINK_PAIRS)
        return SALE_ERR_INVALID;

    gen_plan p;
    memset(&p, 0, sizeof p);
    p.B = a->batch;
    p.Hq = a->heads_q;
    p.Hkv = a->heads_kv;
    p.N = a->seq_len;
    p.D = a->head_dim;
    p.group = p.Hq / p.Hkv;
    p.dt = a->dtype;
    p.seed = g->seed;
    p.structured = g->structured;
    p.needles = g->needles;
    p.base = g->rope_base > 0.0f ? g->rope_base : 500000.0f;
    p.sink = g->sink > 0.0f ? g->sink : 4.0f;
    p.local_bias = g->local_bias > 0.0f ? g->local_bias : 1.0f;
    p.gain = g->needle_gain > 0.0f ? g->needle_gain : 6.0f;
    p.scale = a->scale > 0.0f ? a->scale : 1.0f / sqrtf((float)p.D);
    p.q = q;
    p.k = k;
    p.v = v;
    {
        int bq = a->block_q > 0 ? a->block_q : 64, bk = a->block_k > 0 ? a->block_k : 32;
        int bs = a->block_seg > 0 ? a->block_seg : 128, w = a->local_window > 0 ? a->local_window : 128;
        int blk = bq > bk ? bq : bk;
        p.far = bq + w + bs > 4 * blk ? bq + w + bs : 4 * blk; /* beyond any local region */
        p.min_key = bk;                                        /* not in the sink block */
    }
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);
    zig_init(&p.zt);

    if (p.structured) {
        size_t tab = (size_t)p.N * (p.D / 2);
        p.cosT = malloc(tab * sizeof(float));
        p.sinT = malloc(tab * sizeof(float));
        p.chunk = malloc((size_t)p.B * p.N * sizeof(int));
        p.nchunk = malloc((size_t)p.B * sizeof(int));
        if (!p.cosT || !p.sinT || !p.chunk || !p.nchunk) {
            st = SALE_ERR_NOMEM;
            goto out;
        }
        parallel_for(&p, (p.N + 1023) / 1024, task_rope);
        for (int b = 0; b < p.B; b++) { /* topic chunks shared by all heads of a sequence */
            rng r;
            rng_init(&r, p.seed, S_CHUNK, b, 0, 0);
            int c = 0, i = 0;
            while (i < p.N) {
                int len = rng_int(&r, GEN_CHUNK_MIN, GEN_CHUNK_MAX + 1);
                for (int e = 0; e < len && i < p.N; e++, i++)
                    p.chunk[(size_t)b * p.N + i] = c;
                c++;
            }
            p.nchunk[b] = c;
        }
    }
    parallel_for(&p, p.B * (p.Hq + 2 * p.Hkv), task_tensor);
    if (atomic_load(&p.failed)) {
        st = SALE_ERR_NOMEM;
        goto out;
    }

    if (p.needles > 0) {
        size_t ns = (size_t)p.B * p.Hq * p.needles;
        p.planted = calloc(ns, sizeof(sale_needle));
        p.ok = calloc(ns, 1);
        if (!p.planted || !p.ok) {
            st = SALE_ERR_NOMEM;
            goto out;
        }
        parallel_for(&p, p.B * p.Hkv, task_needles);
        if (atomic_load(&p.failed)) {
            st = SALE_ERR_NOMEM;
            goto out;
        }
        int w = 0;
        for (size_t s = 0; s < ns && w < max_needles; s++)
            if (p.ok[s]) {
                if (needles)
                    needles[w] = p.planted[s];
                w++;
            }
        if (n_needles)
            *n_needles = needles ? w : 0;
    }
out:
    free(p.cosT);
    free(p.sinT);
    free(p.chunk);
    free(p.nchunk);
    free(p.planted);
    free(p.ok);
    return st;
}
