/* calibrate.c — per-head threshold calibration (sale_calibrate): reads
 * captured Q/K/V (or generates them), searches each head's tau in log space
 * against dense attention on the GPU or the CPU reference, and stores the
 * thresholds of every layer in one transaction at the end. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "safetensors.h"

#define CAL_TAU_START 0.008f
#define CAL_TAU_FLOOR 1e-4f /* a tau that would fall to this or below becomes 0 (dense) */
/* a head kept at this density or more runs dense (sale_calibrate_options.dense_above) */
#define CAL_DENSE_ABOVE_DEFAULT 0.5
#define CAL_BUDGET_DEFAULT 0.02

typedef struct layer_src {
    int layer;
    char path[1024];
} layer_src;

typedef struct shape {
    int S, Hq, Hkv, N, D;
    sale_dtype dt; /* of the file (or the generator) */
} shape;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static size_t dt_bytes(sale_dtype d) { return d == SALE_DTYPE_F32 ? 4 : 2; }

void sale_calibrate_options_init(sale_calibrate_options *o)
{
    memset(o, 0, sizeof *o);
    o->budget = CAL_BUDGET_DEFAULT;
    o->mode = SALE_MODE_FUSED;
    o->dense_above = CAL_DENSE_ABOVE_DEFAULT;
}

void sale_calibrate_result_free(sale_calibrate_result *r)
{
    if (!r)
        return;
    free(r->layer_ids);
    free(r->tau);
    free(r->density);
    free(r->error);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ inputs */

static int cmp_layer(const void *a, const void *b)
{
    const layer_src *x = a, *y = b;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

/* layer_<digits>.safetensors, sorted by layer; two names for one layer is an error. */
static sale_status list_layers(sale_ctx *ctx, const char *dir, layer_src **out, int *n_out)
{
    DIR *d = opendir(dir);
    if (!d) {
        sale_set_error(ctx, "calibrate: %s: cannot open the input directory: %s", dir, strerror(errno));
        return SALE_ERR_IO;
    }
    layer_src *v = NULL;
    int n = 0, cap = 0;
    sale_status st = SALE_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name, *p = nm + 6;
        if (strncmp(nm, "layer_", 6) || *p < '0' || *p > '9')
            continue;
        char *end;
        long L = strtol(p, &end, 10);
        if (strcmp(end, ".safetensors") || L < 0 || L > 1000000)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            layer_src *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                st = SALE_ERR_NOMEM;
                sale_set_error(ctx, "calibrate: out of memory");
                goto out;
            }
            v = nv;
        }
        v[n].layer = (int)L;
        if (snprintf(v[n].path, sizeof v[n].path, "%s/%s", dir, nm) >= (int)sizeof v[n].path) {
            st = SALE_ERR_INVALID;
            sale_set_error(ctx, "calibrate: %s/%s: path too long", dir, nm);
            goto out;
        }
        n++;
    }
    if (!n) {
        st = SALE_ERR_NOT_FOUND;
        sale_set_error(ctx, "calibrate: %s: no layer_<L>.safetensors files (expected layer_000.safetensors, ...)", dir);
        goto out;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_layer);
    for (int i = 1; i < n; i++)
        if (v[i].layer == v[i - 1].layer) {
            st = SALE_ERR_INVALID;
            sale_set_error(ctx, "calibrate: %s and %s are both layer %d", v[i - 1].path, v[i].path, v[i].layer);
            goto out;
        }
out:
    closedir(d);
    if (st != SALE_OK) {
        free(v);
        return st;
    }
    *out = v;
    *n_out = n;
    return SALE_OK;
}

/* Open a layer file and check q, k, v against each other; sh gets the shape. */
static sale_status open_layer(sale_ctx *ctx, const char *path, st_file *sf, const st_tensor *t[3], shape *sh)
{
    char err[1024];
    if (st_open(sf, path, err, sizeof err)) {
        sale_set_error(ctx, "calibrate: %s", err);
        return SALE_ERR_INVALID;
    }
    static const char *const names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        t[i] = st_find(sf, names[i]);
        const char *why = NULL;
        if (!t[i])
            why = "missing (the file needs tensors q [S,Hq,N,D], k and v [S,Hkv,N,D])";
        else if (t[i]->ndim != 4)
            why = "expected 4 dims [S,H,N,D]";
        else if (t[i]->dtype < 0)
            why = "dtype must be F32, F16 or BF16";
        else if (t[i]->shape[0] <= 0 || t[i]->shape[1] <= 0 || t[i]->shape[2] <= 0 || t[i]->shape[3] <= 0 ||
                 t[i]->shape[1] > 4096 || t[i]->shape[2] > (1 << 24) || t[i]->shape[3] > 1024 ||
                 t[i]->shape[0] > 4096)
            why = "every dim must be positive (and H <= 4096, N <= 16M, D <= 1024, S <= 4096)";
        if (why) {
            if (t[i] && t[i]->ndim != 4)
                sale_set_error(ctx, "calibrate: %s: tensor '%s': %s, got %d", path, names[i], why, t[i]->ndim);
            else
                sale_set_error(ctx, "calibrate: %s: tensor '%s': %s", path, names[i], why);
            st_close(sf);
            return SALE_ERR_INVALID;
        }
    }
    for (int i = 1; i < 3; i++) {
        const char *what = NULL;
        int d = -1;
        if (t[i]->dtype != t[0]->dtype)
            what = "dtype";
        else if (t[i]->shape[0] != t[0]->shape[0])
            what = "S (samples)", d = 0;
        else if (t[i]->shape[2] != t[0]->shape[2])
            what = "N (tokens)", d = 2;
        else if (t[i]->shape[3] != t[0]->shape[3])
            what = "D (head dim)", d = 3;
        else if (i == 2 && t[2]->shape[1] != t[1]->shape[1])
            what = "H (kv heads, against k)", d = 1;
        if (what) {
            if (d < 0)
                sale_set_error(ctx, "calibrate: %s: tensor '%s': dtype %s differs from q's %s", path, names[i],
                               t[i]->dtype_name, t[0]->dtype_name);
            else
                sale_set_error(ctx, "calibrate: %s: tensor '%s': %s is %lld but q has %lld", path, names[i], what,
                               (long long)t[i]->shape[d], (long long)t[i == 2 && d == 1 ? 1 : 0]->shape[d]);
            st_close(sf);
            return SALE_ERR_INVALID;
        }
    }
    if (t[0]->shape[1] % t[1]->shape[1]) {
        sale_set_error(ctx, "calibrate: %s: tensor 'k': %lld kv heads do not divide q's %lld heads (GQA)", path,
                       (long long)t[1]->shape[1], (long long)t[0]->shape[1]);
        st_close(sf);
        return SALE_ERR_INVALID;
    }
    *sh = (shape){(int)t[0]->shape[0], (int)t[0]->shape[1], (int)t[1]->shape[1], (int)t[0]->shape[2],
                  (int)t[0]->shape[3], (sale_dtype)t[0]->dtype};
    return SALE_OK;
}

/* Read q, k, v of an open layer file into buffers of dtype `as` (out may be NULL: check only). */
static sale_status read_layer(sale_ctx *ctx, st_file *sf, const st_tensor *t[3], sale_dtype as, void *out[3])
{
    char err[1024];
    for (int i = 0; i < 3; i++)
        if (st_read(sf, t[i], as, out ? out[i] : NULL, err, sizeof err)) {
            sale_set_error(ctx, "calibrate: %s", err);
            return SALE_ERR_INVALID;
        }
    return SALE_OK;
}

/* ------------------------------------------------------------ evaluation */

typedef struct engine {
    sale_ctx *ctx;
    int gpu;
    int thr; /* the variant evaluated and stored (o->thr, or the device's default for 0) */
    const sale_calibrate_options *o;
    void *dq, *dk, *dv, *dout;
    size_t cap_q, cap_k, cap_v, cap_out; /* one capacity per buffer */
} engine;

static void engine_free(engine *e)
{
    if (!e->gpu)
        return;
    void *p[4] = {e->dq, e->dk, e->dv, e->dout};
    for (int i = 0; i < 4; i++)
        if (p[i])
            sale_dev_free(e->ctx, p[i]);
    e->dq = e->dk = e->dv = e->dout = NULL;
    e->cap_q = e->cap_k = e->cap_v = e->cap_out = 0;
}

static sale_status grow(engine *e, void **p, size_t *cap, size_t bytes)
{
    if (*cap >= bytes)
        return SALE_OK;
    if (*p)
        sale_dev_free(e->ctx, *p);
    *p = NULL;
    *cap = 0;
    sale_status st = sale_dev_alloc(e->ctx, bytes, p);
    if (st == SALE_OK)
        *cap = bytes;
    return st;
}

/* One attention call on host q/k/v of shape (B, Hq, Hkv, N, D, dt): out (host,
 * dt) and density per (b, h) when dens is not NULL. tau NULL: dense mode. */
static sale_status attend(engine *e, const shape *sh, int heads_q, int heads_kv, const void *q, const void *k,
                          const void *v, void *out, const float *tau, double *dens)
{
    const sale_calibrate_options *o = e->o;
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = sh->S;
    a.heads_q = heads_q;
    a.heads_kv = heads_kv;
    a.seq_len = sh->N;
    a.head_dim = sh->D;
    a.dtype = sh->dt;
    a.block_q = o->block_q;
    a.block_k = o->block_k;
    a.block_seg = o->block_seg;
    a.local_window = o->local_window;
    a.thr = e->thr;
    a.est_bits = o->est_bits;
    a.mode = tau ? o->mode : SALE_MODE_DENSE;
    a.tau = tau;
    a.dense_below = -1; /* calibrate what runs, whatever the length */
    sale_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.density_per_head = dens;
    if (tau)
        a.stats = &stats;
    size_t bq = (size_t)sh->S * (size_t)heads_q * (size_t)sh->N * (size_t)sh->D * dt_bytes(sh->dt);
    size_t bkv = (size_t)sh->S * (size_t)heads_kv * (size_t)sh->N * (size_t)sh->D * dt_bytes(sh->dt);
    if (!e->gpu) {
        a.q = q, a.k = k, a.v = v, a.out = out;
        return sale_reference_attention(e->ctx, &a);
    }
    sale_status st;
    if ((st = grow(e, &e->dq, &e->cap_q, bq)) || (st = grow(e, &e->dout, &e->cap_out, bq)) ||
        (st = grow(e, &e->dk, &e->cap_k, bkv)) || (st = grow(e, &e->dv, &e->cap_v, bkv)))
        return st;
    if ((st = sale_dev_upload(e->ctx, e->dq, q, bq)) || (st = sale_dev_upload(e->ctx, e->dk, k, bkv)) ||
        (st = sale_dev_upload(e->ctx, e->dv, v, bkv)))
        return st;
    a.q = e->dq, a.k = e->dk, a.v = e->dv, a.out = e->dout;
    if ((st = sale_attention(e->ctx, &a, NULL)) || (st = sale_dev_sync(e->ctx)))
        return st;
    return sale_dev_download(e->ctx, out, e->dout, bq);
}

/* Error of head p of `o` [S, P, N, D] against head h of `ref` [S, Hq, N, D],
 * worst over samples. */
static double head_error(const shape *sh, const void *o, int P, int p, const float *ref, int h, int abs_budget)
{
    size_t ND = (size_t)sh->N * (size_t)sh->D;
    double worst = 0;
    for (int s = 0; s < sh->S; s++) {
        size_t oo = ((size_t)s * (size_t)P + (size_t)p) * ND, ro = ((size_t)s * (size_t)sh->Hq + (size_t)h) * ND;
        double num = 0, den = 0, rows = 0;
        for (int n = 0; n < sh->N; n++) {
            double rn = 0;
            for (int d = 0; d < sh->D; d++) {
                size_t i = (size_t)n * (size_t)sh->D + (size_t)d;
                double r = ref[ro + i], x = half_load(o, sh->dt, oo + i);
                rn += fabs(x - r);
                den += fabs(r);
            }
            num += rn;
            rows += rn;
        }
        double err = abs_budget ? rows / sh->N : (den > 0 ? num / den : (num > 0 ? INFINITY : 0));
        if (isnan(num))
            err = NAN; /* a non-finite output element: no budget is met */
        if (isnan(err) || err > worst)
            worst = err; /* NaN counts as the worst, and stays */
        if (isnan(worst))
            break;
    }
    return worst;
}

/* Copy head src_h of x [S, H, N, D] into head dst_h of y [S, P, N, D]. */
static void copy_head(const shape *sh, const void *x, int H, int src_h, void *y, int P, int dst_h)
{
    size_t hb = (size_t)sh->N * (size_t)sh->D * dt_bytes(sh->dt);
    for (int s = 0; s < sh->S; s++)
        memcpy((char *)y + ((size_t)s * (size_t)P + (size_t)dst_h) * hb,
               (const char *)x + ((size_t)s * (size_t)H + (size_t)src_h) * hb, hb);
}

/* Calibrate every head of one layer: tau/density/error [Hq]. */
static sale_status calibrate_layer(engine *e, const shape *sh, void *q, void *k, void *v, float *tau,
                                   double *density, double *error, int *rounds)
{
    const sale_calibrate_options *o = e->o;
    double budget = o->budget > 0 ? o->budget : CAL_BUDGET_DEFAULT;
    int Hq = sh->Hq, group = sh->Hq / sh->Hkv;
    size_t ND = (size_t)sh->N * (size_t)sh->D, es = dt_bytes(sh->dt);
    size_t nq = (size_t)sh->S * (size_t)Hq * ND;
    sale_status st = SALE_OK;
    float *ref = malloc(nq * sizeof(float));
    void *raw = malloc(nq * es), *sq = malloc(nq * es), *sk = malloc(nq * es), *sv = malloc(nq * es);
    float *cand = malloc((size_t)Hq * sizeof(float)), *ptau = malloc((size_t)Hq * sizeof(float));
    int *pend = malloc((size_t)Hq * sizeof(int)), *map = malloc((size_t)Hq * sizeof(int));
    double *dens = malloc((size_t)sh->S * (size_t)Hq * sizeof(double));
    if (!ref || !raw || !sq || !sk || !sv || !cand || !ptau || !pend || !map || !dens) {
        sale_set_error(e->ctx, "calibrate: out of memory for a layer of %d x %d x %d x %d", sh->S, Hq, sh->N, sh->D);
        st = SALE_ERR_NOMEM;
        goto out;
    }
    /* one dense reference for every sample and head of the layer */
    if ((st = attend(e, sh, Hq, sh->Hkv, q, k, v, raw, NULL, NULL)))
        goto out;
    for (size_t i = 0; i < nq; i++)
        ref[i] = half_load(raw, sh->dt, i);
    /* every error is judged against this output: a non-finite one (scores
     * that overflow float, from inputs of huge magnitude) would make every
     * tau look exact (NaN / NaN) or none; refuse the layer instead */
    for (size_t i = 0; i < nq; i++)
        if (!isfinite(ref[i])) {
            size_t hs = i / ND;
            sale_set_error(e->ctx,
                           "the dense attention output of head %d (sample %d) is not finite at row %d: its "
                           "scores overflow float32 (inputs of too large a magnitude?); no tau can be judged "
                           "against it",
                           (int)(hs % (size_t)Hq), (int)(hs / (size_t)Hq), (int)((i % ND) / (size_t)sh->D));
            st = SALE_ERR_INVALID;
            goto out;
        }
    for (int h = 0; h < Hq; h++)
        cand[h] = CAL_TAU_START, pend[h] = 1;
    *rounds = 0;
    for (;;) {
        /* the heads still searching, gathered with their own kv heads (GQA expanded) */
        int P = 0;
        for (int h = 0; h < Hq; h++)
            P += pend[h];
        if (!P)
            break;
        for (int h = 0, p = 0; h < Hq; h++)
            if (pend[h]) {
                copy_head(sh, q, Hq, h, sq, P, p);
                copy_head(sh, k, sh->Hkv, h / group, sk, P, p);
                copy_head(sh, v, sh->Hkv, h / group, sv, P, p);
                ptau[p] = cand[h];
                map[p++] = h;
            }
        if ((st = attend(e, sh, P, P, sq, sk, sv, raw, ptau, dens)))
            goto out;
        ++*rounds;
        for (int p = 0; p < P; p++) {
            int h = map[p];
            double err = head_error(sh, raw, P, p, ref, h, o->budget_abs);
            double dmax = 0;
            for (int s = 0; s < sh->S; s++)
                if (dens[(size_t)s * (size_t)P + (size_t)p] > dmax)
                    dmax = dens[(size_t)s * (size_t)P + (size_t)p];
            if (err <= budget && o->dense_above > 0 && dmax >= o->dense_above) {
                tau[h] = 0, density[h] = 1, error[h] = 0, pend[h] = 0; /* dense: exact, and no slower */
            } else if (err <= budget) {
                tau[h] = cand[h], density[h] = dmax, error[h] = err, pend[h] = 0;
            } else if (cand[h] * 0.5f <= CAL_TAU_FLOOR) {
                tau[h] = 0, density[h] = 1, error[h] = 0, pend[h] = 0; /* runs dense: exact */
            } else {
                cand[h] *= 0.5f;
            }
        }
    }
out:
    free(ref), free(raw), free(sq), free(sk), free(sv), free(cand), free(ptau), free(pend), free(map), free(dens);
    return st;
}

/* ------------------------------------------------------------ driver */

static sale_status gen_layer(sale_ctx *ctx, const sale_calibrate_options *o, const shape *sh, int layer, void *q,
                             void *k, void *v)
{
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = sh->S, a.heads_q = sh->Hq, a.heads_kv = sh->Hkv, a.seq_len = sh->N, a.head_dim = sh->D;
    a.dtype = sh->dt;
    sale_gen_options g;
    memset(&g, 0, sizeof g);
    g.seed = o->gen.seed + (uint64_t)layer;
    g.structured = 1;
    int nn = 0;
    sale_status st = sale_generate_qkv(&a, &g, q, k, v, NULL, 0, &nn);
    if (st) {
        /* the generator's own rules (sale_generate_qkv), said in the spec's words */
        const char *why = sh->Hq % sh->Hkv ? ": heads must be a multiple of kv_heads"
                          : sh->D % 2 || sh->D < 16 ? ": dim must be even and at least 16 (the structured "
                                                      "generator's sink uses the 4 lowest-frequency RoPE pairs)"
                                                    : "";
        sale_set_error(ctx, "calibrate: generator: layer %d: %s (shape %d x %d/%d x %d x %d)%s", layer,
                       sale_status_name(st), sh->S, sh->Hq, sh->Hkv, sh->N, sh->D, why);
    }
    return st;
}

sale_status sale_calibrate(sale_ctx *ctx, const sale_calibrate_options *o, sale_calibrate_result *result)
{
    if (!ctx)
        return SALE_ERR_INVALID;
    if (result)
        memset(result, 0, sizeof *result);
    if (!o || !o->model || !*o->model) {
        sale_set_error(ctx, "calibrate: model: a name is required");
        return SALE_ERR_INVALID;
    }
    if (strlen(o->model) >= sizeof((db_threshold_row *)0)->model) {
        sale_set_error(ctx, "calibrate: model: '%.40s...' is %zu bytes, longer than the %zu a name may have",
                       o->model, strlen(o->model), sizeof((db_threshold_row *)0)->model - 1);
        return SALE_ERR_INVALID;
    }
    if (!(o->budget >= 0) || !isfinite(o->budget)) {
        sale_set_error(ctx, "calibrate: budget: must be a positive number, got %g", o->budget);
        return SALE_ERR_INVALID;
    }
    if (!(o->dense_above >= 0 && o->dense_above <= 1)) {
        sale_set_error(ctx, "calibrate: dense_above: a fraction of blocks in [0, 1] (0: never), got %g",
                       o->dense_above);
        return SALE_ERR_INVALID;
    }
    if (o->mode != SALE_MODE_FUSED && o->mode != SALE_MODE_TWO_PASS) {
        sale_set_error(ctx, "calibrate: mode: fused or two_pass");
        return SALE_ERR_INVALID;
    }
    if (o->device != SALE_CALIBRATE_AUTO && o->device != SALE_CALIBRATE_CPU && o->device != SALE_CALIBRATE_GPU) {
        sale_set_error(ctx, "calibrate: device: SALE_CALIBRATE_AUTO (0), SALE_CALIBRATE_CPU (1) or "
                            "SALE_CALIBRATE_GPU (2), got %d", (int)o->device);
        return SALE_ERR_INVALID;
    }
    if (o->budget_abs != 0 && o->budget_abs != 1) { /* 5 was taken as 1 */
        sale_set_error(ctx, "calibrate: budget_abs: 0 (relative L1 per head) or 1 (mean per-row L1), got %d",
                       o->budget_abs);
        return SALE_ERR_INVALID;
    }
    if (o->thr != 0 && o->thr != SALE_THR_RUN && o->thr != SALE_THR_FIXED) {
        sale_set_error(ctx, "calibrate: thr: 0 (the device's default), SALE_THR_RUN (%d) or SALE_THR_FIXED (%d), got %d",
                       SALE_THR_RUN, SALE_THR_FIXED, o->thr);
        return SALE_ERR_INVALID;
    }
    {
        /* the block geometry by the key rules, before any layer runs (they
         * were found by the reference at layer 0) */
        sale_key k = sale_key_default(SALE_FAMILY_FUSED);
        const int *v[] = {&o->block_q, &o->block_k, &o->block_seg, &o->local_window, &o->est_bits};
        int *f[] = {&k.block_q, &k.block_k, &k.block_seg, &k.local_window, &k.est_bits};
        for (int i = 0; i < 5; i++)
            if (*v[i])
                *f[i] = *v[i];
        char kerr[256];
        if (sale_key_validate(&k, kerr, sizeof kerr) != SALE_OK) {
            sale_set_error(ctx, "calibrate: %s", kerr);
            return SALE_ERR_INVALID;
        }
    }
    if (ctx_ready(ctx, "calibrate"))
        return SALE_ERR_CACHE;
    double t0 = now_s();
    engine e = {.ctx = ctx, .o = o};
    if (o->device != SALE_CALIBRATE_CPU) {
        int n = 0;
        int have = sale_device_count(ctx, &n) == SALE_OK && n > 0;
        if (!have && o->device == SALE_CALIBRATE_GPU) {
            sale_set_error(ctx, "calibrate: device gpu asked for, but there is no CUDA device (%s)",
                           sale_last_error(ctx));
            return SALE_ERR_NO_DEVICE;
        }
        e.gpu = have;
    }
    /* the variant calibrated with, and stored: thr 0 is what sale_attention
     * runs for 0 on the device that evaluates (the reference: run) */
    int thr = o->thr;
    if (!thr && e.gpu) {
        sale_device_info di;
        if (sale_device_info_get(ctx, 0, &di) != SALE_OK)
            return SALE_ERR_CUDA;
        thr = sale_attention_default_thr(di.arch);
    }
    if (!thr)
        thr = SALE_THR_RUN;
    e.thr = thr;

    layer_src *src = NULL;
    int nl = 0;
    shape sh = {0};
    sale_status st = SALE_OK;
    sale_calibrate_result r;
    memset(&r, 0, sizeof r);
    db_threshold_row *rows = NULL;
    void *buf[3] = {NULL, NULL, NULL};

    if (o->input_dir) {
        /* every file is validated (header, shapes, values) before any work */
        if ((st = list_layers(ctx, o->input_dir, &src, &nl)))
            return st;
        for (int i = 0; i < nl; i++) {
            st_file sf;
            const st_tensor *t[3];
            shape s;
            if ((st = open_layer(ctx, src[i].path, &sf, t, &s)))
                goto out;
            st = read_layer(ctx, &sf, t, s.dt, NULL);
            st_close(&sf);
            if (st)
                goto out;
            if (i && memcmp(&s, &sh, sizeof s)) {
                sale_set_error(ctx,
                               "calibrate: %s: tensor 'q': [S,Hq,N,D] = [%d,%d,%d,%d] with %d kv heads, %s; but %s has "
                               "[%d,%d,%d,%d] with %d kv heads, %s (every layer must have the same shapes and dtype)",
                               src[i].path, s.S, s.Hq, s.N, s.D, s.Hkv, sale_dtype_name(s.dt), src[0].path, sh.S,
                               sh.Hq, sh.N, sh.D, sh.Hkv, sale_dtype_name(sh.dt));
                st = SALE_ERR_INVALID;
                goto out;
            }
            sh = s;
        }
    } else {
        sh.S = o->gen.samples ? o->gen.samples : 2;
        sh.Hq = o->gen.heads_q ? o->gen.heads_q : 4;
        sh.Hkv = o->gen.heads_kv ? o->gen.heads_kv : sh.Hq;
        sh.N = o->gen.seq_len ? o->gen.seq_len : 2048;
        sh.D = o->gen.head_dim ? o->gen.head_dim : 128;
        sh.dt = o->gen.dtype;
        nl = o->gen.layers ? o->gen.layers : 2;
        if (sh.S < 1 || sh.Hq < 1 || sh.Hq > 4096 || sh.Hkv < 1 || sh.Hq % sh.Hkv || sh.N < 1 || sh.D < 1 ||
            nl < 1 || nl > 100000 || (sh.dt != SALE_DTYPE_F16 && sh.dt != SALE_DTYPE_BF16)) {
            sale_set_error(ctx, "calibrate: generator: need layers, samples, heads_q, seq_len, head_dim >= 1, "
                                "heads_kv dividing heads_q, dtype f16 or bf16");
            return SALE_ERR_INVALID;
        }
        src = calloc((size_t)nl, sizeof *src);
        if (!src) {
            sale_set_error(ctx, "calibrate: out of memory");
            return SALE_ERR_NOMEM;
        }
        for (int i = 0; i < nl; i++)
            src[i].layer = i;
    }

    /* the buffers hold S x Hq x N x D floats: a size past size_t would wrap
     * into a small allocation that the layers then overrun */
    if ((double)sh.S * sh.Hq * sh.N * sh.D * sizeof(float) > (double)(SIZE_MAX / 4)) {
        sale_set_error(ctx, "calibrate: [S,Hq,N,D] = [%d,%d,%d,%d] is too large", sh.S, sh.Hq, sh.N, sh.D);
        st = SALE_ERR_INVALID;
        goto out;
    }
    r.layers = nl, r.heads = sh.Hq, r.samples = sh.S, r.seq_len = sh.N, r.on_gpu = e.gpu;
    r.thr = e.thr;
    r.layer_ids = malloc((size_t)nl * sizeof(int));
    r.tau = malloc((size_t)nl * (size_t)sh.Hq * sizeof(float));
    r.density = malloc((size_t)nl * (size_t)sh.Hq * sizeof(double));
    r.error = malloc((size_t)nl * (size_t)sh.Hq * sizeof(double));
    size_t maxq = (size_t)sh.S * (size_t)sh.Hq * (size_t)sh.N * (size_t)sh.D * 4;
    for (int i = 0; i < 3; i++)
        buf[i] = malloc(maxq);
    if (!r.layer_ids || !r.tau || !r.density || !r.error || !buf[0] || !buf[1] || !buf[2]) {
        sale_set_error(ctx, "calibrate: out of memory");
        st = SALE_ERR_NOMEM;
        goto out;
    }

    for (int i = 0; i < nl; i++) {
        double tl = now_s();
        shape s = sh;
        r.layer_ids[i] = src[i].layer;
        if (o->input_dir) {
            st_file sf;
            const st_tensor *t[3];
            if ((st = open_layer(ctx, src[i].path, &sf, t, &s)))
                goto out;
            if (e.gpu && s.dt == SALE_DTYPE_F32)
                s.dt = SALE_DTYPE_BF16; /* the kernels take f16/bf16 */
            st = read_layer(ctx, &sf, t, s.dt, buf);
            st_close(&sf);
            if (st)
                goto out;
        } else if ((st = gen_layer(ctx, o, &s, src[i].layer, buf[0], buf[1], buf[2]))) {
            goto out;
        }
        float *tau = r.tau + (size_t)i * (size_t)sh.Hq;
        double *dens = r.density + (size_t)i * (size_t)sh.Hq, *err = r.error + (size_t)i * (size_t)sh.Hq;
        int rounds = 0;
        if ((st = calibrate_layer(&e, &s, buf[0], buf[1], buf[2], tau, dens, err, &rounds))) {
            char what[1200];
            snprintf(what, sizeof what, "%s", sale_last_error(ctx));
            sale_set_error(ctx, "calibrate: layer %d%s%s: %s", src[i].layer, o->input_dir ? " " : "",
                           o->input_dir ? src[i].path : "", what);
            goto out;
        }
        if (o->progress) {
            sale_calibrate_progress p = {src[i].layer, i, nl, sh.Hq, tau, dens, err, rounds, now_s() - tl};
            o->progress(o->progress_user, &p);
        }
    }

    r.created = (int64_t)time(NULL);
    if (!o->dry_run) {
        size_t nrows = (size_t)nl * (size_t)sh.Hq;
        rows = calloc(nrows, sizeof *rows);
        if (!rows) {
            sale_set_error(ctx, "calibrate: out of memory");
            st = SALE_ERR_NOMEM;
            goto out;
        }
        for (int i = 0; i < nl; i++)
            for (int h = 0; h < sh.Hq; h++) {
                size_t x = (size_t)i * (size_t)sh.Hq + (size_t)h;
                db_threshold_row *w = &rows[x];
                strcpy(w->model, o->model);
                w->layer = src[i].layer;
                w->head = h;
                w->tau = r.tau[x];
                w->budget = o->budget > 0 ? o->budget : CAL_BUDGET_DEFAULT;
                w->budget_abs = o->budget_abs ? 1 : 0;
                w->samples = r.samples;
                w->created = r.created;
                w->density = r.density[x];
                w->error = r.error[x];
                w->thr = r.thr; /* the variant the budget was met with */
            }
        /* the model's thresholds as a whole: rows of an earlier calibration
         * (another budget, layers this one lacks) never mix with these */
        char err[1024] = "";
        int replaced = 0, dropped = 0;
        int put = db_thresholds_replace_model(ctx->db, o->model, rows, (int)nrows, &replaced, &dropped, err,
                                              sizeof err);
        thresholds_changed(ctx);
        if (put) {
            sale_set_error(ctx, "calibrate: storing thresholds: %s", err);
            st = SALE_ERR_CACHE;
            goto out;
        }
        if (replaced)
            sale_logf(ctx, dropped ? SALE_LOG_WARN : SALE_LOG_INFO,
                      "calibrate: replaced the earlier calibration of '%s': %d thresholds, %d of them dropped%s",
                      o->model, replaced, dropped,
                      dropped ? " (layers or heads this calibration does not cover: they now have none)" : "");
    }
    r.seconds = now_s() - t0;
out:
    engine_free(&e);
    for (int i = 0; i < 3; i++)
        free(buf[i]);
    free(rows);
    free(src);
    if (st == SALE_OK && result)
        *result = r;
    else
        sale_calibrate_result_free(&r);
    return st;
}
