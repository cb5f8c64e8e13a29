/* tune.c — the autotuner: tile space and legality, pruning from the ptxas
 * resources stored with each cubin, strategies over an abstract cost
 * function, the GPU cost function, and the dense_below measurement. It sits
 * on the public API; storing and serving winners is src/winners.c, the
 * `sale tune` command is src/cli_tune.c. 
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


/* candidate (warps, stages) of key k as out[n] when n < max: -1 illegal,
 * 1 when it is the default tiles (dw, ds), else 0 */
static int add_candidate(const sale_key *k, int warps, int stages, int dw, int ds, tune_candidate *out, int max,
                         int n)
{
    sale_key c = *k;
    c.warps = warps;
    c.stages = stages;
    sale_layout_cfg lc = key_layout(&c);
    if (!sale_layout_legal(&lc, NULL, 0) || sale_key_validate(&c, NULL, 0) != SALE_OK)
        return -1;
    const int is_default = warps == dw && stages == ds;
    if (n < max) {
        tune_candidate *t = &out[n];
        memset(t, 0, sizeof *t);
        t->key = c;
        t->warps = warps;
        t->stages = stages;
        t->threads = (int)sale_layout_threads(&lc);
        t->smem = (int)sale_layout_smem(&lc);
        t->is_default = is_default;
    }
    return is_default;
}

int tune_space_key(const sale_key *base, int seq_len, const int *warps, int nwarps, const int *stages, int nstages,
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
    if (base->family == SALE_FAMILY_PLAIN) {
        set_err(err, errlen, "family: plain (version 0) is not tuned: its tiles are fixed (one thread per query row)");
        return -1;
    }
    sale_key k = *base;
    k.warps = k.stages = 0;
    fill_algorithm(&k); /* head_dim and block sizes as they will run */
    int sw[16], ss[16], nsw = 0, nss = 0;
    if (sale_layout_space((int)k.family, k.head_dim, k.arch, sw, &nsw, ss, &nss)) {
        set_err(err, errlen, "family: no tile space for %s", sale_family_name(base->family));
        return -1;
    }
    if (nwarps > 0 && warps) {
        /* a list of warps (the config's tuning table, or --warps) narrows the
         * mma.sync tiles; the family's wgmma kernels (warps 12, 5 for attend's
         * rows kernel and 20 for the select, on sm_90a) stay choices, as they
         * are the defaults there (the rows kernel up to the 128K bucket: a
         * winner tuned without it would override it) */
        int wgw[3], nwg = 0;
        for (int i = 0; i < nsw && nwg < 3; i++)
            if (sw[i] == SALE_WG_WARPS || sw[i] == 20 || sw[i] == SALE_WR_WARPS)
                wgw[nwg++] = sw[i];
        nsw = nwarps > 14 ? 14 : nwarps;
        memcpy(sw, warps, sizeof(int) * (size_t)nsw);
        for (int g = 0; g < nwg; g++) {
            int have = 0;
            for (int i = 0; i < nsw; i++)
                have |= sw[i] == wgw[g];
            if (!have)
                sw[nsw++] = wgw[g];
        }
    }
    if (nstages > 0 && stages) {
        nss = nstages > 16 ? 16 : nstages;
        memcpy(ss, stages, sizeof(int) * (size_t)nss);
    }
    /* the tiles sale_attention runs when nothing is tuned: at a length, on
     * sm_90a attend, the rows kernel up to the 128K bucket (as ctx_kernel
     * decides), else what sale_key_resolve picks */
    sale_key dk = k;
    int dw = 0, ds = 0;
    key_length_default_warps(&dk, seq_len);
    if (sale_key_resolve(&dk, NULL, 0) == SALE_OK) {
        dw = dk.warps;
        ds = dk.stages;
    }
    int n = 0, bad = 0, have_default = 0;
    for (int i = 0; i < nsw; i++)
        for (int j = 0; j < nss; j++) {
            const int r = add_candidate(&k, sw[i], ss[j], dw, ds, out, max, n);
            if (r < 0) {
                bad++;
                continue;
            }
            have_default |= r;
            n++;
        }
    /* narrowed lists (the config's tuning table, --warps) still time the
     * default tiles, which every candidate is checked against: on sm_90a the
     * select's default ring is 4 stages, outside a stages list {2, 3} */
    if (!have_default && dw > 0 && ds > 0 && add_candidate(&k, dw, ds, dw, ds, out, max, n) > 0)
        n++;
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
    return tune_space_key(&k, 0, NULL, 0, NULL, 0, out, max, illegal, NULL, 0);
}

/* --------------------------------------------------------------- pruning */

int tune_code_arch(int dev_arch)
{
    return key_code_arch(dev_arch);
}

sale_status tune_save_winner(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open_key, int seq_len,
                             const sale_key *winner, double ms, double spread_pct, int tried)
{
    return win_save(ctx, dev, open_key, seq_len, winner, ms, spread_pct, tried);
}

sale_status tune_save_dense_below(sale_ctx *ctx, const sale_device_info *dev, int dense_below, double ms)
{
    return win_dense_below_save(ctx, dev, dense_below, ms);
}

int tune_dense_below_default(int code_arch)
{
    return win_dense_below_default(code_arch);
}

int tune_bucket(int seq_len, char *buf, size_t len)
{
    return win_bucket(seq_len, buf, len);
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
void tune_sort_indices(const tune_candidate *c, int *idx, int n)
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
        tune_sort_indices(c, surv, m);
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
    a->thr = k.thr;
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

/* ------------------------------------------------- where SALE stops paying */

int tune_mode_times(sale_ctx *ctx, const tune_shape *sh, const int *lens, int nlens, int reps, double (*ms)[3])
{
    int rc = 0;
    for (int li = 0; li < nlens && !rc; li++) {
        sale_key base = sale_key_default(SALE_FAMILY_FUSED);
        base.head_dim = sh->head_dim;
        base.dtype = sh->dtype;
        tune_gpu *g = NULL;
        if (tune_gpu_create(ctx, &base, sh->batch, sh->heads_q, sh->heads_kv, lens[li], 1, &g))
            return -1;
        static const sale_mode modes[3] = {SALE_MODE_FUSED, SALE_MODE_TWO_PASS, SALE_MODE_DENSE};
        for (int mi = 0; mi < 3 && !rc; mi++) {
            sale_attention_args a = g->a;
            a.mode = modes[mi];
            a.mask = NULL;
            sale_event *e0 = NULL, *e1 = NULL;
            double *t = calloc((size_t)reps, sizeof *t);
            if (!t || sale_event_create(ctx, &e0) || sale_event_create(ctx, &e1)) {
                rc = -1;
            } else {
                for (int r = -2; r < reps && !rc; r++) { /* 2 warm-ups */
                    float f = 0;
                    if (sale_dev_fill8(ctx, g->flush, (unsigned char)r, g->flush_bytes) ||
                        sale_event_record(ctx, e0, NULL) || sale_attention(ctx, &a, NULL) ||
                        sale_event_record(ctx, e1, NULL) || sale_event_elapsed(ctx, e0, e1, &f))
                        rc = -1;
                    else if (r >= 0)
                        t[r] = f;
                }
                if (!rc) {
                    qsort(t, (size_t)reps, sizeof *t, cmp_double);
                    ms[li][mi] = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
                }
            }
            free(t);
            sale_event_destroy(ctx, e0);
            sale_event_destroy(ctx, e1);
        }
        tune_gpu_destroy(g);
    }
    return rc;
}

int tune_pick_dense_below(const int *lens, int nlens, double (*ms)[3])
{
    /* the smallest measured length from which on SALE (the faster of fused
     * and two-pass) beats dense at every larger measured length */
    int pick = -1;
    for (int i = nlens - 1; i >= 0; i--) {
        double sale = ms[i][0] < ms[i][1] ? ms[i][0] : ms[i][1];
        if (!(sale < ms[i][2]))
            break;
        pick = lens[i];
    }
    if (pick < 0)
        return nlens > 0 ? 2 * lens[nlens - 1] : 1024; /* never paid in the measured range */
    return pick;
}
