/* tune.c — the autotuner: tile space and legality, pruning from the ptxas
 * resources stored with each cubin, strategies over an abstract cost
 * function, the GPU cost function, winners in the cache, and `sale tune`.
 * Only tile fields (warps, stages) are ever chosen here. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "internal.h"
#include "sale_layout.h"
#include "tune.h"

static void set_err(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------- the space */

/* Algorithm fields filled the way sale_key_resolve fills them, without
 * refusing layout-illegal values: the space reports those as illegal. */
static void fill_algorithm(sale_key *k)
{
    key_fill_algorithm(k);
}

static sale_layout_cfg layout_of(const sale_key *k)
{
    sale_layout_cfg c = {(int)k->family, k->head_dim, k->block_q, k->block_k, k->block_seg, k->local_window,
                         (int)k->dtype,  k->est_bits, k->warps,   k->stages,  k->arch};
    return c;
}

int tune_space_key(const sale_key *base, const int *warps, int nwarps, const int *stages, int nstages,
                   tune_candidate *out, int max, int *illegal, char *err, size_t errlen)
{
    if (illegal)
        *illegal = 0;
    if (!base || (!out && max > 0)) {
        set_err(err, errlen, "tune_space: NULL argument");
        return -1;
    }
    if (base->arch == SALE_ARCH_CURRENT || !sale_arch_name(base->arch)) {
        set_err(err, errlen, "arch: the tile space needs a concrete architecture (sm_80 .. sm_90a)");
        return -1;
    }
    if ((unsigned)base->family >= SALE_FAMILY_COUNT) {
        set_err(err, errlen, "family: unknown family %d", (int)base->family);
        return -1;
    }
    int sw[16], ss[16], nsw = 0, nss = 0;
    if (sale_layout_space((int)base->family, sw, &nsw, ss, &nss)) {
        set_err(err, errlen, "family: no tile space for %s", sale_family_name(base->family));
        return -1;
    }
    if (nwarps > 0 && warps) {
        nsw = nwarps > 16 ? 16 : nwarps;
        memcpy(sw, warps, sizeof(int) * (size_t)nsw);
    }
    if (nstages > 0 && stages) {
        nss = nstages > 16 ? 16 : nstages;
        memcpy(ss, stages, sizeof(int) * (size_t)nss);
    }
    sale_key k = *base;
    k.warps = k.stages = 0;
    fill_algorithm(&k);
    /* the tiles sale_key_resolve picks when nothing is tuned */
    sale_key dk = k;
    int dw = 0, ds = 0;
    if (sale_key_resolve(&dk, NULL, 0) == SALE_OK) {
        dw = dk.warps;
        ds = dk.stages;
    }
    int n = 0, bad = 0;
    for (int i = 0; i < nsw; i++)
        for (int j = 0; j < nss; j++) {
            sale_key c = k;
            c.warps = sw[i];
            c.stages = ss[j];
            sale_layout_cfg lc = layout_of(&c);
            if (!sale_layout_legal(&lc, NULL, 0) || sale_key_validate(&c, NULL, 0) != SALE_OK) {
                bad++;
                continue;
            }
            if (n < max) {
                tune_candidate *t = &out[n];
                memset(t, 0, sizeof *t);
                t->key = c;
                t->warps = c.warps;
                t->stages = c.stages;
                t->threads = (int)sale_layout_threads(&lc);
                t->smem = (int)sale_layout_smem(&lc);
                t->is_default = c.warps == dw && c.stages == ds;
            }
            n++;
        }
    if (illegal)
        *illegal = bad;
    return n < max ? n : max;
}

int tune_space(sale_family family, int head_dim, int block_q, int block_k, int block_seg, int arch,
               tune_candidate *out, int max, int *illegal)
{
    sale_key k = sale_key_default(family);
    k.head_dim = head_dim;
    k.block_q = block_q;
    k.block_k = block_k;
    k.block_seg = block_seg;
    k.arch = arch;
    return tune_space_key(&k, NULL, 0, NULL, 0, out, max, illegal, NULL, 0);
}

/* --------------------------------------------------------------- pruning */

int tune_code_arch(int dev_arch)
{
    return key_code_arch(dev_arch);
}

int tune_prune(sale_ctx *ctx, tune_candidate *cands, int n, const sale_device_info *dev, int *pruned)
{
    if (pruned)
        *pruned = 0;
    if (!dev || (n > 0 && !cands)) {
        sale_set_error(ctx, "tune_prune: NULL argument");
        return -1;
    }
    tune_candidate *kept = malloc(sizeof *kept * (size_t)(n ? n : 1)), *drop = malloc(sizeof *drop * (size_t)(n ? n : 1));
    if (!kept || !drop) {
        free(kept);
        free(drop);
        sale_set_error(ctx, "tune_prune: out of memory");
        return -1;
    }
    int nk = 0, nd = 0, arch = tune_code_arch(dev->arch);
    for (int i = 0; i < n; i++) {
        tune_candidate c = cands[i];
        if (arch && c.key.arch != SALE_ARCH_SM90A)
            c.key.arch = arch;
        sale_kernel_info info;
        sale_status st = c.failed ? SALE_ERR_INVALID : sale_compile(ctx, &c.key, &info);
        if (c.failed) {
            /* already out (e.g. an earlier prune): stays out */
        } else if (st) {
            c.failed = 1;
            snprintf(c.why, sizeof c.why, "does not compile: %.200s", sale_last_error(ctx));
        } else {
            c.registers = info.registers;
            c.threads = info.threads;
            c.smem = info.smem_static + info.smem_dynamic;
            c.spills = info.spill_stores + info.spill_loads;
            if ((long)c.registers * c.threads > TUNE_REGS_PER_SM) {
                c.failed = 1;
                snprintf(c.why, sizeof c.why, "registers: %d per thread x %d threads > %d", c.registers, c.threads,
                         TUNE_REGS_PER_SM);
            } else if (c.smem > dev->smem_optin) {
                c.failed = 1;
                snprintf(c.why, sizeof c.why, "shared memory: %d bytes > %d per block on %s", c.smem,
                         dev->smem_optin, dev->name[0] ? dev->name : "this device");
            }
        }
        if (c.failed)
            drop[nd++] = c;
        else
            kept[nk++] = c;
    }
    memcpy(cands, kept, sizeof *kept * (size_t)nk);
    memcpy(cands + nk, drop, sizeof *drop * (size_t)nd);
    free(kept);
    free(drop);
    if (pruned)
        *pruned = nd;
    return nk;
}

/* ------------------------------------------------------------ strategies */

static double mono_now(void *user)
{
    (void)user;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

typedef struct run_state {
    tune_candidate *c;
    tune_cost_fn cost;
    void *user;
    tune_opts o;
    tune_result *res;
    double t0;
    int valid; /* some candidate has passed */
} run_state;

static void run_init(run_state *r, tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts,
                     tune_result *res)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    r->cost = cost;
    r->user = user;
    if (opts)
        r->o = *opts;
    if (r->o.reps <= 0)
        r->o.reps = 20;
    if (!r->o.now)
        r->o.now = mono_now;
    r->res = res;
    memset(res, 0, sizeof *res);
    res->winner = -1;
    for (int i = 0; i < n; i++)
        if (!c[i].failed) {
            c[i].ms = c[i].spread = 0;
            c[i].reps = 0;
        }
    r->t0 = r->o.now(r->o.now_user);
}

/* The budget is only enforced once a candidate has passed: a tuning run
 * always ends with a valid winner when one exists. */
static int over_budget(run_state *r)
{
    if (r->o.budget_s <= 0 || !r->valid)
        return 0;
    if (r->o.now(r->o.now_user) - r->t0 >= r->o.budget_s) {
        r->res->out_of_budget = 1;
        return 1;
    }
    return 0;
}

static int measure(run_state *r, int i, int reps, int round)
{
    tune_candidate *c = &r->c[i];
    char err[TUNE_ERR_LEN] = "";
    double ms = 0, spread = 0;
    int first = c->reps == 0;
    int rc = r->cost(r->user, c, reps, &ms, &spread, err);
    r->res->measured++;
    if (first)
        r->res->tried++;
    if (rc || !(ms > 0) || !isfinite(ms)) {
        c->failed = 1;
        snprintf(c->why, sizeof c->why, "%s", rc ? (err[0] ? err : "cost function failed") : "no valid time");
        r->res->disqualified++;
    } else {
        c->ms = ms;
        c->spread = spread;
        c->reps = reps;
        r->valid = 1;
    }
    if (r->o.progress)
        r->o.progress(r->o.progress_user, c, i, round);
    return c->failed ? -1 : 0;
}

static int best_of(const tune_candidate *c, const int *idx, int n)
{
    int b = -1;
    for (int i = 0; i < n; i++) {
        const tune_candidate *t = &c[idx ? idx[i] : i];
        if (!t->failed && t->reps > 0 && (b < 0 || t->ms < c[b].ms))
            b = idx ? idx[i] : i;
    }
    return b;
}

static int linear(tune_candidate *c, int n, const int *order, tune_cost_fn cost, void *user, const tune_opts *opts,
                  tune_result *res)
{
    tune_result dummy;
    if (!res)
        res = &dummy;
    run_state r;
    run_init(&r, c, n, cost, user, opts, res);
    res->rounds = 1;
    for (int k = 0; k < n; k++) {
        int i = order ? order[k] : k;
        if (c[i].failed)
            continue;
        if (over_budget(&r))
            break;
        measure(&r, i, r.o.reps, 0);
    }
    res->winner = best_of(c, NULL, n);
    return res->winner;
}

int tune_exhaustive(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts,
                    tune_result *res)
{
    return linear(c, n, NULL, cost, user, opts, res);
}

int tune_random(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts, tune_result *res)
{
    int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!order)
        return -1;
    unsigned s = opts && opts->seed ? opts->seed : 0x5a1eu;
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        s = s * 1103515245u + 12345u;
        int j = (int)((s >> 8) % (unsigned)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int w = linear(c, n, order, cost, user, opts, res);
    free(order);
    return w;
}

/* by (failed, ms); insertion sort: the arrays are tiny */
static void sort_indices(const tune_candidate *c, int *idx, int n)
{
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i - 1;
        while (j >= 0 && (c[idx[j]].failed > c[v].failed ||
                          (c[idx[j]].failed == c[v].failed && c[idx[j]].ms > c[v].ms))) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = v;
    }
}

static int ceil_log2(int n)
{
    int r = 0;
    while ((1 << r) < n)
        r++;
    return r;
}

int tune_halving(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts, tune_result *res)
{
    tune_result dummy;
    if (!res)
        res = &dummy;
    run_state r;
    run_init(&r, c, n, cost, user, opts, res);
    int *surv = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!surv)
        return -1;
    int ns = 0;
    for (int i = 0; i < n; i++)
        if (!c[i].failed)
            surv[ns++] = i;
    int stop = 0;
    /* a lone candidate is still measured once, so it has a time to store */
    while ((ns > 1 || (ns == 1 && res->rounds == 0)) && !stop) {
        int left = ceil_log2(ns);
        if (left < 1)
            left = 1;
        int reps = r.o.reps >> (left - 1);
        if (reps < 2)
            reps = r.o.reps < 2 ? r.o.reps : 2;
        res->rounds++;
        for (int k = 0; k < ns; k++) {
            if (over_budget(&r)) {
                stop = 1;
                break;
            }
            measure(&r, surv[k], reps, res->rounds - 1);
        }
        /* survivors that failed leave; the rest are ranked */
        int m = 0;
        for (int k = 0; k < ns; k++)
            if (!c[surv[k]].failed && c[surv[k]].reps > 0)
                surv[m++] = surv[k];
        if (stop) {
            ns = m;
            break;
        }
        sort_indices(c, surv, m);
        if (m <= 1) {
            ns = m;
            break;
        }
        ns = (m + 1) / 2;
    }
    res->winner = best_of(c, surv, ns);
    free(surv);
    return res->winner;
}

/* ---------------------------------------------------- the GPU cost function */

struct tune_gpu {
    sale_ctx *ctx;
    sale_attention_args a; /* shape, device pointers, algorithm fields */
    size_t q_bytes, kv_bytes, o_bytes, mask_bytes;
    void *dq, *dk, *dv, *dout, *dmask, *flush;
    size_t flush_bytes;
    uint16_t *ref_out, *cand_out;
    uint32_t *ref_mask, *cand_mask;
    sale_family family;
    int phase; /* index into phase_ms */
    int ready;
};

void tune_gpu_destroy(tune_gpu *g)
{
    if (!g)
        return;
    void *d[] = {g->dq, g->dk, g->dv, g->dout, g->dmask, g->flush};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i])
            sale_dev_free(g->ctx, d[i]);
    free(g->ref_out);
    free(g->cand_out);
    free(g->ref_mask);
    free(g->cand_mask);
    free(g);
}

size_t tune_gpu_flush_bytes(const tune_gpu *g)
{
    return g ? g->flush_bytes : 0;
}

sale_status tune_gpu_create(sale_ctx *ctx, const sale_key *base, int batch, int heads_q, int heads_kv, int seq_len,
                            uint64_t seed, tune_gpu **out)
{
    *out = NULL;
    tune_gpu *g = calloc(1, sizeof *g);
    if (!g)
        return SALE_ERR_NOMEM;
    g->ctx = ctx;
    sale_key k = *base;
    fill_algorithm(&k);
    sale_attention_args *a = &g->a;
    sale_attention_args_init(a);
    a->batch = batch;
    a->heads_q = heads_q;
    a->heads_kv = heads_kv;
    a->seq_len = seq_len;
    a->head_dim = k.head_dim;
    a->dtype = k.dtype;
    a->block_q = k.block_q;
    a->block_k = k.block_k;
    a->block_seg = k.block_seg;
    a->local_window = k.local_window;
    a->est_bits = base->est_bits; /* 0: the arch's choice, as at run time */
    a->dense_below = -1;          /* time the family asked for, never the fallback */
    size_t es = 2;
    g->q_bytes = (size_t)batch * heads_q * seq_len * k.head_dim * es;
    g->kv_bytes = (size_t)batch * heads_kv * seq_len * k.head_dim * es;
    g->o_bytes = g->q_bytes;
    g->mask_bytes = (size_t)batch * heads_q * sale_num_qblocks(a) * ((sale_num_kblocks(a) + 31) / 32) * 4;
    g->flush_bytes = TUNE_FLUSH_BYTES;
    sale_status st = SALE_ERR_NOMEM;
    void *hq = malloc(g->q_bytes), *hk = malloc(g->kv_bytes), *hv = malloc(g->kv_bytes);
    g->ref_out = malloc(g->o_bytes);
    g->cand_out = malloc(g->o_bytes);
    g->ref_mask = malloc(g->mask_bytes);
    g->cand_mask = malloc(g->mask_bytes);
    if (!hq || !hk || !hv || !g->ref_out || !g->cand_out || !g->ref_mask || !g->cand_mask)
        goto fail;
    sale_gen_options go;
    memset(&go, 0, sizeof go);
    go.seed = seed;
    go.structured = 1;
    if ((st = sale_generate_qkv(a, &go, hq, hk, hv, NULL, 0, NULL))) {
        sale_set_error(ctx, "tune: generating inputs: %s", sale_status_name(st));
        goto fail;
    }
    if ((st = sale_dev_alloc(ctx, g->q_bytes, &g->dq)) || (st = sale_dev_alloc(ctx, g->kv_bytes, &g->dk)) ||
        (st = sale_dev_alloc(ctx, g->kv_bytes, &g->dv)) || (st = sale_dev_alloc(ctx, g->o_bytes, &g->dout)) ||
        (st = sale_dev_alloc(ctx, g->mask_bytes, &g->dmask)) ||
        (st = sale_dev_alloc(ctx, g->flush_bytes, &g->flush)) ||
        (st = sale_dev_upload(ctx, g->dq, hq, g->q_bytes)) || (st = sale_dev_upload(ctx, g->dk, hk, g->kv_bytes)) ||
        (st = sale_dev_upload(ctx, g->dv, hv, g->kv_bytes)))
        goto fail;
    a->q = g->dq;
    a->k = g->dk;
    a->v = g->dv;
    a->out = g->dout;
    a->mask = g->dmask;
    free(hq);
    free(hk);
    free(hv);
    *out = g;
    return SALE_OK;
fail:
    free(hq);
    free(hk);
    free(hv);
    tune_gpu_destroy(g);
    return st;
}

static sale_mode mode_of(sale_family f)
{
    return f == SALE_FAMILY_DENSE ? SALE_MODE_DENSE
           : (f == SALE_FAMILY_SELECT || f == SALE_FAMILY_ATTEND) ? SALE_MODE_TWO_PASS
                                                                   : SALE_MODE_FUSED;
}

/* One checked run: poisoned output and mask, the pipeline, both downloaded. */
static sale_status run_once(tune_gpu *g, const sale_attention_args *a, uint16_t *o, uint32_t *m)
{
    sale_status st;
    if ((st = sale_dev_fill8(g->ctx, g->dout, 0xff, g->o_bytes)) ||
        (st = sale_dev_fill8(g->ctx, g->dmask, 0xa5, g->mask_bytes)) || (st = sale_attention(g->ctx, a, NULL)) ||
        (st = sale_dev_sync(g->ctx)) || (st = sale_dev_download(g->ctx, o, g->dout, g->o_bytes)) ||
        (st = sale_dev_download(g->ctx, m, g->dmask, g->mask_bytes)))
        return st;
    return SALE_OK;
}

sale_status tune_gpu_prepare(tune_gpu *g, sale_family family, int default_warps, int default_stages)
{
    if (family != SALE_FAMILY_FUSED && family != SALE_FAMILY_SELECT && family != SALE_FAMILY_ATTEND &&
        family != SALE_FAMILY_DENSE) {
        sale_set_error(g->ctx, "family: %s has no tiles to tune", sale_family_name(family));
        return SALE_ERR_INVALID;
    }
    g->family = family;
    g->phase = family == SALE_FAMILY_ATTEND ? 2 : 1;
    g->a.mode = mode_of(family);
    sale_attention_args a = g->a;
    a.tile_warps = default_warps;
    a.tile_stages = default_stages;
    g->ready = 0;
    sale_status st = run_once(g, &a, g->ref_out, g->ref_mask);
    if (!st)
        g->ready = 1;
    return st;
}

static float to_f32(sale_dtype dt, uint16_t h)
{
    return dt == SALE_DTYPE_F16 ? sale_f16_to_f32(h) : sale_bf16_to_f32(h);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int tune_gpu_cost(void *user, const tune_candidate *c, int reps, double *ms, double *spread, char *err)
{
    tune_gpu *g = user;
    *ms = *spread = 0;
    if (!g || !g->ready) {
        set_err(err, TUNE_ERR_LEN, "tune_gpu_cost: tune_gpu_prepare was not called");
        return -1;
    }
    sale_attention_args a = g->a;
    a.tile_warps = c->warps;
    a.tile_stages = c->stages;
    /* correctness first: a fast wrong kernel must never win */
    sale_status st = run_once(g, &a, g->cand_out, g->cand_mask);
    if (st) {
        set_err(err, TUNE_ERR_LEN, "run failed: %.200s", sale_last_error(g->ctx));
        return -1;
    }
    size_t n = g->o_bytes / 2;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r = to_f32(g->a.dtype, g->ref_out[i]), x = to_f32(g->a.dtype, g->cand_out[i]);
        num += fabs(x - r);
        den += fabs(r);
    }
    double rel = den > 0 ? num / den : num;
    if (!(rel < 1e-3)) {
        set_err(err, TUNE_ERR_LEN, "wrong output: relative L1 %.3g against the default tiles (limit 1e-3)", rel);
        return -1;
    }
    if (memcmp(g->cand_mask, g->ref_mask, g->mask_bytes)) {
        set_err(err, TUNE_ERR_LEN, "wrong output: kept-block mask differs from the default tiles'");
        return -1;
    }
    for (int i = 0; i < 2; i++) /* warm-up */
        if ((st = sale_attention(g->ctx, &a, NULL))) {
            set_err(err, TUNE_ERR_LEN, "warm-up failed: %.200s", sale_last_error(g->ctx));
            return -1;
        }
    if (reps < 1)
        reps = 1;
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!t) {
        set_err(err, TUNE_ERR_LEN, "out of memory");
        return -1;
    }
    for (int r = 0; r < reps; r++) {
        float ph[3] = {0, 0, 0};
        a.phase_ms = ph;
        /* flush L2 (256 MB, several times any L2 of sm_80..sm_90), then time
         * the family's kernel with CUDA events */
        if ((st = sale_dev_fill8(g->ctx, g->flush, (unsigned char)r, g->flush_bytes)) ||
            (st = sale_attention(g->ctx, &a, NULL))) {
            set_err(err, TUNE_ERR_LEN, "repetition %d failed: %.200s", r, sale_last_error(g->ctx));
            free(t);
            return -1;
        }
        t[r] = ph[g->phase];
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    double p10 = t[(int)floor(0.1 * (reps - 1))], p90 = t[(int)ceil(0.9 * (reps - 1))];
    free(t);
    *ms = med;
    *spread = med > 0 ? (p90 - p10) / med : 0;
    return 0;
}

/* ------------------------------------------------------------ persistence */

static int bucket_n(int seq_len)
{
    long p = 1;
    while (p < seq_len && p < (1L << 30))
        p <<= 1;
    return (int)p;
}

int tune_bucket(int seq_len, char *buf, size_t len)
{
    if (seq_len < 1 || !buf)
        return -1;
    int n = snprintf(buf, len, "n=%d", bucket_n(seq_len));
    return n > 0 && (size_t)n < len ? 0 : -1;
}

sale_status tune_open_key(const sale_key *key, int arch, sale_key *out, char *err, size_t errlen)
{
    sale_key k = *key;
    if (k.arch == SALE_ARCH_CURRENT)
        k.arch = arch;
    if (k.arch == SALE_ARCH_CURRENT || !sale_arch_name(k.arch)) {
        set_err(err, errlen, "arch: no concrete architecture for the tuned key");
        return SALE_ERR_INVALID;
    }
    k.warps = k.stages = 0;
    sale_status st = sale_key_resolve(&k, err, errlen);
    if (st)
        return st;
    k.warps = k.stages = 0;
    *out = k;
    return SALE_OK;
}

static void row_ids(db_tuned_row *r, const sale_device_info *dev, const sale_key *open, const char *bucket)
{
    memset(r, 0, sizeof *r);
    snprintf(r->device, sizeof r->device, "%s", dev->name);
    snprintf(r->arch, sizeof r->arch, "%s", sale_arch_name(open->arch));
    r->sm_count = dev->sm_count;
    r->driver_version = dev->driver_version;
    sale_key_format(open, r->key, sizeof r->key);
    if (bucket)
        snprintf(r->bucket, sizeof r->bucket, "%s", bucket);
}

sale_status tune_store(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open_key, int seq_len,
                       const sale_key *winner, double ms, double spread_pct, int tried)
{
    char err[512] = "";
    if (!ctx || !dev || !open_key || !winner) {
        sale_set_error(ctx, "tune_store: NULL argument");
        return SALE_ERR_INVALID;
    }
    sale_key open, w = *winner;
    if (tune_open_key(open_key, tune_code_arch(dev->arch), &open, err, sizeof err)) {
        sale_set_error(ctx, "tune_store: %s", err);
        return SALE_ERR_INVALID;
    }
    if (w.arch == SALE_ARCH_CURRENT)
        w.arch = open.arch;
    if (!w.warps || !w.stages || sale_key_resolve(&w, err, sizeof err)) {
        sale_set_error(ctx, "tune_store: the winner must have its tiles set and be legal: %s", err);
        return SALE_ERR_INVALID;
    }
    char bucket[32];
    if (tune_bucket(seq_len, bucket, sizeof bucket)) {
        sale_set_error(ctx, "tune_store: seq_len must be >= 1, got %d", seq_len);
        return SALE_ERR_INVALID;
    }
    db_tuned_row r;
    row_ids(&r, dev, &open, bucket);
    sale_key_format(&w, r.winner, sizeof r.winner);
    r.time_ms = ms;
    r.spread_pct = spread_pct;
    r.tried = tried;
    pthread_mutex_lock(&ctx->lock);
    int rc = db_tuned_put(ctx->db, &r, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    if (rc) {
        sale_set_error(ctx, "kernel cache %s: storing the tuned winner: %s", ctx->cache_path, err);
        return SALE_ERR_CACHE;
    }
    return SALE_OK;
}

typedef struct nearest {
    const db_tuned_row *want;
    double target; /* log2 of the wanted bucket */
    double best_d;
    int best_n;
    db_tuned_row best;
} nearest;

static int nearest_cb(void *user, const db_tuned_row *r)
{
    nearest *s = user;
    const db_tuned_row *w = s->want;
    int n = 0;
    if (strcmp(r->device, w->device) || strcmp(r->arch, w->arch) || r->sm_count != w->sm_count ||
        r->driver_version != w->driver_version || strcmp(r->key, w->key) || sscanf(r->bucket, "n=%d", &n) != 1 ||
        n < 1)
        return 0;
    double d = fabs(log2((double)n) - s->target);
    if (s->best_n == 0 || d < s->best_d - 1e-9 || (fabs(d - s->best_d) <= 1e-9 && n > s->best_n)) {
        s->best_d = d;
        s->best_n = n;
        s->best = *r;
    }
    return 0;
}

int tune_lookup(sale_ctx *ctx, const sale_device_info *dev, const sale_key *key, int seq_len, sale_key *out)
{
    if (!ctx || !dev || !key || !out) {
        sale_set_error(ctx, "tune_lookup: NULL argument");
        return -1;
    }
    *out = *key;
    if (key->warps && key->stages)
        return 0; /* nothing open: the caller's tiles stand */
    char err[512] = "";
    sale_key open;
    if (tune_open_key(key, tune_code_arch(dev->arch), &open, err, sizeof err)) {
        sale_set_error(ctx, "tune_lookup: %s", err);
        return -1;
    }
    db_tuned_row want, got;
    row_ids(&want, dev, &open, NULL);
    int found = 0;
    if (seq_len > 0) {
        got = want;
        tune_bucket(seq_len, got.bucket, sizeof got.bucket);
        pthread_mutex_lock(&ctx->lock);
        found = db_tuned_get(ctx->db, &got, err, sizeof err);
        pthread_mutex_unlock(&ctx->lock);
        if (found < 0) {
            sale_set_error(ctx, "kernel cache %s: %s", ctx->cache_path, err);
            return -1;
        }
    }
    if (!found) {
        nearest s;
        memset(&s, 0, sizeof s);
        s.want = &want;
        s.target = log2((double)bucket_n(seq_len > 0 ? seq_len : 65536));
        pthread_mutex_lock(&ctx->lock);
        int rc = db_tuned_list(ctx->db, nearest_cb, &s, err, sizeof err);
        pthread_mutex_unlock(&ctx->lock);
        if (rc < 0) {
            sale_set_error(ctx, "kernel cache %s: %s", ctx->cache_path, err);
            return -1;
        }
        if (!s.best_n)
            return 0;
        got = s.best;
    }
    sale_key w;
    if (sale_key_parse(got.winner, &w, NULL, 0) || !w.warps || !w.stages)
        return 0; /* a row we cannot read serves nothing: the default stands */
    sale_key k = *key;
    if (!k.warps) k.warps = w.warps;
    if (!k.stages) k.stages = w.stages;
    sale_key check = k;
    if (check.arch == SALE_ARCH_CURRENT)
        check.arch = open.arch;
    if (sale_key_resolve(&check, NULL, 0))
        return 0;
    *out = k;
    return 1;
}

/* ------------------------------------------------------------- command */

static const char tune_help[] =
    "usage: sale tune [--family LIST] [--seq-len LIST] [--batch B] [--heads HQ HKV]\n"
    "                 [--head-dim D] [--dtype bf16|f16] [--strategy exhaustive|halving|random]\n"
    "                 [--budget SECONDS] [--reps N] [--seed S]\n"
    "Times the legal tile choices (warps per CTA, pipeline stages) of each family on\n"
    "GPU 0 and stores the fastest correct one for this device, driver and problem\n"
    "size; sale_get_kernel() and sale_attention() then serve it for open tiles.\n"
    "Algorithm parameters (block sizes, window, tau) are never changed.\n\n"
    "  --family LIST     fused,select,attend,dense (default: fused,dense)\n"
    "  --seq-len LIST    problem sizes, each stored in its power-of-two bucket (default 16384)\n"
    "  --batch B         default 1\n"
    "  --heads HQ HKV    query and key/value heads (default 32 8; also HQ,HKV)\n"
    "  --head-dim D      64 or 128 (default 128)\n"
    "  --dtype T         bf16 or f16 (default bf16)\n"
    "  --strategy S      exhaustive (default), halving (successive halving) or random\n"
    "  --budget SECONDS  wall-clock budget per (family, size); 0: none (default: config)\n"
    "  --reps N          timed repetitions of a full measurement (default 20)\n\n"
    "Candidates over the device's shared memory or register file (from the ptxas\n"
    "resources stored with each cubin) are pruned without a launch. Each candidate's\n"
    "output must match the default tiles' (relative L1 < 1e-3, same kept blocks)\n"
    "before its time counts; 2 warm-ups, then N repetitions, each after a 256 MB\n"
    "write that flushes L2, timed with CUDA events; median and (p90-p10)/median.\n"
    "Defaults for warps, stages, budget and strategy come from the config's tuning table.\n"
    "See the winners with 'sale ls --tuned'.\n";

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *end;
        long v = strtol(t, &end, 10);
        if (*end || v < 1 || v > (1L << 30) || n >= max)
            return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int parse_families(const char *s, sale_family *out, int max)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int f = -1;
        for (int i = SALE_FAMILY_FUSED; i < SALE_FAMILY_COUNT; i++)
            if (!strcmp(t, sale_family_name((sale_family)i)))
                f = i;
        if (f < 0 || n >= max)
            return -1;
        out[n++] = (sale_family)f;
    }
    return n;
}

typedef struct cli_progress {
    const char *label;
    int n;
} cli_progress;

static void cli_progress_cb(void *user, const tune_candidate *c, int index, int round)
{
    cli_progress *p = user;
    if (c->failed)
        fprintf(stderr, "sale tune: %s [%d/%d] round %d warps=%d stages=%d  DISQUALIFIED: %s\n", p->label, index + 1,
                p->n, round, c->warps, c->stages, c->why);
    else
        fprintf(stderr, "sale tune: %s [%d/%d] round %d warps=%d stages=%d  %.4f ms  spread %.1f%%  (%d reps)\n",
                p->label, index + 1, p->n, round, c->warps, c->stages, c->ms, 100 * c->spread, c->reps);
}

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "sale tune: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'sale tune --help')\n");
    return 2;
}

int tune_cli(sale_ctx *ctx, const void *cfgp, int argc, char **argv)
{
    const sale_config *cfg = cfgp;
    sale_family fams[8] = {SALE_FAMILY_FUSED, SALE_FAMILY_DENSE};
    int nf = 2, seqs[16] = {16384}, nseq = 1, batch = 1, hq = 32, hkv = 8, hd = 128, reps = 20;
    unsigned seed = 1;
    sale_dtype dt = SALE_DTYPE_BF16;
    char strategy[32] = "exhaustive";
    double budget = 0;
    const int *cw = NULL, *cs = NULL;
    int ncw = 0, ncs = 0;
    if (cfg) {
        if (cfg->tuning.strategy[0])
            snprintf(strategy, sizeof strategy, "%s", cfg->tuning.strategy);
        budget = cfg->tuning.budget_s;
        cw = cfg->tuning.warps;
        ncw = cfg->tuning.n_warps;
        cs = cfg->tuning.stages;
        ncs = cfg->tuning.n_stages;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(tune_help, stdout);
            return 0;
        }
        if (!v)
            return usage("option '%s' needs a value", o);
        i++;
        if (!strcmp(o, "--family")) {
            if ((nf = parse_families(v, fams, 8)) <= 0)
                return usage("--family: expected a list of fused, select, attend, dense, got '%s'", v);
        } else if (!strcmp(o, "--seq-len")) {
            if ((nseq = parse_list(v, seqs, 16)) <= 0)
                return usage("--seq-len: expected a list of positive integers, got '%s'", v);
        } else if (!strcmp(o, "--heads")) {
            int h[2], n = parse_list(v, h, 2);
            if (n == 1 && i + 1 < argc && argv[i + 1][0] != '-' && parse_list(argv[i + 1], h + 1, 1) == 1) {
                n = 2;
                i++;
            }
            if (n < 1)
                return usage("--heads: expected HQ [HKV], got '%s'", v);
            hq = h[0];
            hkv = n == 2 ? h[1] : h[0];
            if (hq % hkv)
                return usage("--heads: HQ must be a multiple of HKV (%s)", v);
        } else if (!strcmp(o, "--batch")) {
            if (parse_list(v, &batch, 1) != 1)
                return usage("--batch: expected a positive integer, got '%s'", v);
        } else if (!strcmp(o, "--head-dim")) {
            if (parse_list(v, &hd, 1) != 1 || (hd != 64 && hd != 128))
                return usage("--head-dim: 64 or 128, got '%s'", v);
        } else if (!strcmp(o, "--dtype")) {
            if (!strcmp(v, "bf16")) dt = SALE_DTYPE_BF16;
            else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) dt = SALE_DTYPE_F16;
            else return usage("--dtype: bf16 or f16, got '%s'", v);
        } else if (!strcmp(o, "--strategy")) {
            if (strcmp(v, "exhaustive") && strcmp(v, "halving") && strcmp(v, "random"))
                return usage("--strategy: exhaustive, halving or random, got '%s'", v);
            snprintf(strategy, sizeof strategy, "%s", v);
        } else if (!strcmp(o, "--budget")) {
            char *end;
            budget = strtod(v, &end);
            if (*end || budget < 0)
                return usage("--budget: seconds (>= 0), got '%s'", v);
        } else if (!strcmp(o, "--reps")) {
            if (parse_list(v, &reps, 1) != 1)
                return usage("--reps: expected a positive integer, got '%s'", v);
        } else if (!strcmp(o, "--seed")) {
            int s;
            if (parse_list(v, &s, 1) != 1)
                return usage("--seed: expected a positive integer, got '%s'", v);
            seed = (unsigned)s;
        } else {
            return usage("unknown option '%s'", o);
        }
    }
    if (!ctx) {
        fprintf(stderr, "sale tune: no context\n");
        return 1;
    }
    int ndev = 0;
    sale_device_info dev;
    if (sale_device_count(ctx, &ndev) != SALE_OK || ndev < 1) {
        fprintf(stderr, "sale tune: no GPU: %s\n", ndev < 1 && !sale_last_error(ctx)[0] ? "no CUDA device"
                                                                                         : sale_last_error(ctx));
        return 1;
    }
    if (sale_device_info_get(ctx, 0, &dev) != SALE_OK) {
        fprintf(stderr, "sale tune: no GPU: %s\n", sale_last_error(ctx));
        return 1;
    }
    int arch = tune_code_arch(dev.arch);
    if (!arch) {
        fprintf(stderr, "sale tune: %s is sm_%d; sale's kernels target sm_80, sm_86, sm_89 and sm_90\n", dev.name,
                dev.arch);
        return 1;
    }
    fprintf(stderr, "sale tune: %s (sm_%d, %d SMs, driver %d), strategy %s, %d reps, budget %s, L2 flushed with %u MB "
                    "between repetitions\n",
            dev.name, dev.arch, dev.sm_count, dev.driver_version, strategy, reps, budget > 0 ? "set" : "none",
            TUNE_FLUSH_BYTES >> 20);
    int rc = 0;
    for (int si = 0; si < nseq && !rc; si++) {
        sale_key base = sale_key_default(SALE_FAMILY_FUSED);
        base.head_dim = hd;
        base.dtype = dt;
        base.arch = arch;
        if (cfg) {
            base.block_q = cfg->defaults.block_q;
            base.block_k = cfg->defaults.block_k;
            base.block_seg = cfg->defaults.block_seg;
            base.local_window = cfg->defaults.local_window;
        }
        tune_gpu *g = NULL;
        fprintf(stderr, "sale tune: generating inputs B=%d Hq=%d Hkv=%d N=%d D=%d\n", batch, hq, hkv, seqs[si], hd);
        if (tune_gpu_create(ctx, &base, batch, hq, hkv, seqs[si], seed, &g)) {
            fprintf(stderr, "sale tune: %s\n", sale_last_error(ctx));
            rc = 1;
            break;
        }
        for (int fi = 0; fi < nf; fi++) {
            base.family = fams[fi];
            tune_candidate c[TUNE_MAX_CANDIDATES];
            int illegal = 0, pruned = 0;
            char err[512] = "", label[64], bucket[32];
            tune_bucket(seqs[si], bucket, sizeof bucket);
            snprintf(label, sizeof label, "%s %s", sale_family_name(fams[fi]), bucket);
            int n = tune_space_key(&base, cw, ncw, cs, ncs, c, TUNE_MAX_CANDIDATES, &illegal, err, sizeof err);
            if (n < 0) {
                fprintf(stderr, "sale tune: %s: %s\n", label, err);
                rc = 1;
                break;
            }
            int total = n;
            n = tune_prune(ctx, c, n, &dev, &pruned);
            fprintf(stderr, "sale tune: %s: %d legal tile choices (%d illegal), %d pruned without a launch, %d to time\n",
                    label, total, illegal, pruned, n);
            for (int i = n; i < total; i++)
                fprintf(stderr, "sale tune: %s: pruned warps=%d stages=%d: %s\n", label, c[i].warps, c[i].stages,
                        c[i].why);
            for (int i = 0; i < n; i++)
                fprintf(stderr, "sale tune: %s: warps=%d stages=%d: %d registers, %d B shared memory%s\n", label,
                        c[i].warps, c[i].stages, c[i].registers, c[i].smem, c[i].spills ? ", spills" : "");
            /* the default goes first: under a tight budget it is always measured */
            int dflt = -1;
            for (int i = 0; i < n; i++)
                if (c[i].is_default) {
                    tune_candidate t = c[i];
                    memmove(&c[1], &c[0], sizeof *c * (size_t)i);
                    c[0] = t;
                    dflt = 0;
                }
            if (n < 1) {
                fprintf(stderr, "sale tune: %s: nothing to time\n", label);
                continue;
            }
            if (dflt < 0) {
                fprintf(stderr, "sale tune: %s: the default tiles cannot run here; no reference to check against\n",
                        label);
                continue;
            }
            if (tune_gpu_prepare(g, fams[fi], c[dflt].warps, c[dflt].stages)) {
                fprintf(stderr, "sale tune: %s: reference run with the default tiles: %s\n", label,
                        sale_last_error(ctx));
                rc = 1;
                break;
            }
            cli_progress pr = {label, n};
            tune_opts o = {.reps = reps, .budget_s = budget, .progress = cli_progress_cb, .progress_user = &pr,
                           .seed = seed};
            tune_result res;
            int w = !strcmp(strategy, "halving") ? tune_halving(c, n, tune_gpu_cost, g, &o, &res)
                    : !strcmp(strategy, "random") ? tune_random(c, n, tune_gpu_cost, g, &o, &res)
                                                  : tune_exhaustive(c, n, tune_gpu_cost, g, &o, &res);
            if (w < 0) {
                fprintf(stderr, "sale tune: %s: no candidate passed\n", label);
                rc = 1;
                continue;
            }
            /* the default at full repetitions, for an honest gain */
            if (!c[dflt].failed && c[dflt].reps != o.reps && w != dflt) {
                double ms, sp;
                char e[TUNE_ERR_LEN] = "";
                if (!tune_gpu_cost(g, &c[dflt], o.reps, &ms, &sp, e)) {
                    c[dflt].ms = ms;
                    c[dflt].spread = sp;
                    c[dflt].reps = o.reps;
                }
            }
            /* a winner must beat the default at full repetitions, and by more
             * than the measurements' spread: a gain inside the noise keeps the
             * default (the winner would not be stable from run to run) */
            if (w != dflt && !c[dflt].failed && c[dflt].reps == o.reps) {
                double noise = c[dflt].spread > c[w].spread ? c[dflt].spread : c[w].spread;
                if (c[w].ms >= c[dflt].ms * (1.0 - noise))
                    w = dflt;
            }
            int idx[TUNE_MAX_CANDIDATES];
            for (int i = 0; i < total; i++)
                idx[i] = i;
            sort_indices(c, idx, n);
            printf("\n%s  (B=%d Hq=%d Hkv=%d N=%d D=%d %s, %s, %d tried, %d measurements%s)\n", label, batch, hq, hkv,
                   seqs[si], hd, sale_dtype_name(dt), strategy, res.tried, res.measured,
                   res.out_of_budget ? ", budget ran out" : "");
            printf("%4s %5s %6s %10s %7s %5s %5s %8s %s\n", "rank", "warps", "stages", "median ms", "spread", "reps",
                   "regs", "smem KB", "");
            for (int r = 0, shown = 0; r < n && shown < 10; r++) {
                const tune_candidate *t = &c[idx[r]];
                if (t->reps == 0 && !t->failed)
                    continue;
                shown++;
                if (t->failed)
                    printf("%4s %5d %6d %10s %7s %5s %5d %8.1f disqualified: %s\n", "-", t->warps, t->stages, "-",
                           "-", "-", t->registers, t->smem / 1024.0, t->why);
                else
                    printf("%4d %5d %6d %10.4f %6.1f%% %5d %5d %8.1f %s%s%s\n", shown, t->warps, t->stages, t->ms,
                           100 * t->spread, t->reps, t->registers, t->smem / 1024.0, idx[r] == w ? "winner " : "",
                           t->is_default ? "default " : "", t->spills ? "spills" : "");
            }
            if (!c[dflt].failed && c[dflt].reps > 0)
                printf("winner warps=%d stages=%d %.4f ms; default warps=%d stages=%d %.4f ms; gain %.2fx (%+.1f%%)\n",
                       c[w].warps, c[w].stages, c[w].ms, c[dflt].warps, c[dflt].stages, c[dflt].ms,
                       c[dflt].ms / c[w].ms, 100.0 * (c[dflt].ms / c[w].ms - 1.0));
            else
                printf("winner warps=%d stages=%d %.4f ms; the default tiles were not measured\n", c[w].warps,
                       c[w].stages, c[w].ms);
            if (tune_store(ctx, &dev, &base, seqs[si], &c[w].key, c[w].ms, 100 * c[w].spread, res.tried)) {
                fprintf(stderr, "sale tune: %s: %s\n", label, sale_last_error(ctx));
                rc = 1;
            } else {
                printf("stored for %s, %s, %d SMs, driver %d, %s\n", dev.name, sale_arch_name(arch), dev.sm_count,
                       dev.driver_version, bucket);
            }
        }
        tune_gpu_destroy(g);
    }
    return rc;
}
