/* thresholds.c — per-head thresholds per (model, layer): stored by sale
 * calibrate in the cache file, read back from the cache, then the fleet
 * file, then the config's `thresholds` section; and the one place where an
 * attention call's per-head taus are decided (thresholds_resolve). */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "internal.h"

#define TH_DEFAULT_TAU 0.004f

static int model_ok(sale_ctx *ctx, const char *model, const char *what)
{
    if (!model || !*model) {
        sale_set_error(ctx, "%s: model: must be a non-empty name", what);
        return 0;
    }
    if (strlen(model) >= sizeof((db_threshold_row *)0)->model) {
        sale_set_error(ctx, "%s: model: name longer than %zu bytes", what,
                       sizeof((db_threshold_row *)0)->model - 1);
        return 0;
    }
    return 1;
}

sale_status sale_thresholds_put(sale_ctx *ctx, const char *model, int layer, const float *tau, int heads,
                                const sale_threshold_meta *meta)
{
    if (!ctx)
        return SALE_ERR_INVALID;
    if (ctx_ready(ctx, "sale_thresholds_put"))
        return SALE_ERR_CACHE;
    if (!model_ok(ctx, model, "sale_thresholds_put"))
        return SALE_ERR_INVALID;
    if (!tau || heads <= 0 || layer < 0) {
        sale_set_error(ctx, "sale_thresholds_put: need tau[heads] with heads > 0 and layer >= 0 (heads %d, layer %d)",
                       heads, layer);
        return SALE_ERR_INVALID;
    }
    if (meta && !thr_known(meta->thr)) {
        sale_set_error(ctx, "sale_thresholds_put: meta.thr: unknown threshold variant %d (SALE_THR_RUN, "
                            "SALE_THR_FIXED; 0: not recorded)", meta->thr);
        return SALE_ERR_INVALID;
    }
    /* what `sale ls --thresholds` and the variant check read back: no NaN
     * budget, no negative sample count stored as if measured */
    if (meta && (!(meta->budget >= 0 && isfinite(meta->budget)) || (meta->budget_abs != 0 && meta->budget_abs != 1) ||
                 meta->samples < 0 || meta->created < 0 ||
                 !(meta->density == -1 || (meta->density >= 0 && meta->density <= 1)) ||
                 !(meta->error == -1 || (meta->error >= 0 && isfinite(meta->error))))) {
        sale_set_error(ctx, "sale_thresholds_put: meta: budget %g (finite, >= 0), budget_abs %d (0 or 1), samples %d "
                            "(>= 0), created %lld (>= 0), density %g ([0, 1] or -1), error %g (>= 0 or -1)",
                       meta->budget, meta->budget_abs, meta->samples, (long long)meta->created, meta->density,
                       meta->error);
        return SALE_ERR_INVALID;
    }
    db_threshold_row *rows = calloc((size_t)heads, sizeof *rows);
    if (!rows) {
        sale_set_error(ctx, "sale_thresholds_put: out of memory");
        return SALE_ERR_NOMEM;
    }
    for (int h = 0; h < heads; h++) {
        if (!(tau[h] >= 0.0f && tau[h] < 1.0f)) {
            free(rows);
            sale_set_error(ctx, "sale_thresholds_put: tau[%d]: must be in [0, 1), got %g", h, (double)tau[h]);
            return SALE_ERR_INVALID;
        }
        db_threshold_row *r = &rows[h];
        strcpy(r->model, model);
        r->layer = layer;
        r->head = h;
        r->tau = tau[h];
        r->density = r->error = -1;
        if (meta) {
            r->budget = meta->budget;
            r->budget_abs = meta->budget_abs;
            r->samples = meta->samples;
            r->created = meta->created;
            r->density = meta->density;
            r->error = meta->error;
            r->thr = meta->thr;
        }
    }
    char err[1024] = "";
    int rc = db_thresholds_put(ctx->db, rows, heads, err, sizeof err);
    free(rows);
    thresholds_changed(ctx);
    if (rc != 0) {
        sale_set_error(ctx, "sale_thresholds_put: %s", err);
        return SALE_ERR_CACHE;
    }
    return SALE_OK;
}

static const cfg_threshold *config_find(const sale_ctx *ctx, const char *model, int layer, int head)
{
    for (int i = 0; i < ctx->n_cfg_thresholds; i++) {
        const cfg_threshold *t = &ctx->cfg_thresholds[i];
        if (t->layer == layer && t->head == head && !strcmp(t->model, model))
            return t;
    }
    return NULL;
}

sale_status sale_thresholds_get(sale_ctx *ctx, const char *model, int layer, float *tau, int heads,
                                sale_threshold_meta *meta)
{
    if (!ctx)
        return SALE_ERR_INVALID;
    if (ctx_ready(ctx, "sale_thresholds_get"))
        return SALE_ERR_CACHE;
    if (!model_ok(ctx, model, "sale_thresholds_get"))
        return SALE_ERR_INVALID;
    if (!tau || heads <= 0 || layer < 0) { /* as sale_thresholds_put: a layer < 0 is no layer, not a miss */
        sale_set_error(ctx, "sale_thresholds_get: need tau[heads] with heads > 0 and layer >= 0 (heads %d, layer %d)",
                       heads, layer);
        return SALE_ERR_INVALID;
    }
    for (int h = 0; h < heads; h++) {
        db_threshold_row r;
        int found = 0;
        if (ctx->db) {
            char err[1024] = "";
            found = db_threshold_get_row(ctx->db, model, layer, h, &r, err, sizeof err);
            if (found < 0) {
                sale_set_error(ctx, "sale_thresholds_get: %s", err);
                return SALE_ERR_CACHE;
            }
        }
        if (found && !thr_known(r.thr)) {
            sale_set_error(ctx,
                           "thresholds: model '%s' layer %d head %d: %s row names threshold variant %d, which this "
                           "library does not know (a damaged row, or one written by a newer sale): store the "
                           "layer again (sale calibrate)",
                           model, layer, h, r.from_fleet ? "the fleet file's" : "the cache file's", r.thr);
            return SALE_ERR_CACHE;
        }
        if (found) {
            tau[h] = (float)r.tau;
            if (meta)
                meta[h] = (sale_threshold_meta){r.budget, r.budget_abs, r.samples, r.created, r.density, r.error, r.thr};
            continue;
        }
        const cfg_threshold *t = config_find(ctx, model, layer, h);
        if (!t) {
            sale_set_error(ctx,
                           "thresholds: none for model '%s' layer %d head %d (looked in %s%s%s%s); "
                           "run `sale calibrate --model %s` or pass tau",
                           model, layer, h, ctx->cache_path, ctx->fleet_path[0] ? ", the fleet file " : "",
                           ctx->fleet_path, ctx->n_cfg_thresholds ? " and the config's thresholds" : "", model);
            return SALE_ERR_NOT_FOUND;
        }
        tau[h] = t->tau;
        if (meta)
            meta[h] = (sale_threshold_meta){0, 0, 0, 0, -1, -1, 0};
    }
    return SALE_OK;
}

/* An attention call that names (model, layer) reads its thresholds once per
 * context: later calls copy them from this memo, with no SQLite query (the
 * host path of a serving engine). Storing or importing thresholds through
 * the context forgets it; another process's changes are seen by a new
 * context (as new kernels are). */
#define TH_MEMO_MAX 512
typedef struct th_memo {
    char model[sizeof((db_threshold_row *)0)->model];
    int layer, heads, thr;
    unsigned gen;
    float *tau;
} th_memo;

void thresholds_memo_free(sale_ctx *ctx)
{
    if (!ctx || !ctx->thm)
        return;
    for (int i = 0; i < ctx->thm_n; i++)
        free(ctx->thm[i].tau);
    free(ctx->thm);
    ctx->thm = NULL;
    ctx->thm_n = ctx->thm_next = 0;
}

void thresholds_changed(sale_ctx *ctx)
{
    if (!ctx)
        return;
    pthread_mutex_lock(&ctx->lock);
    ctx->th_gen++;
    pthread_mutex_unlock(&ctx->lock);
}

sale_status sale_thresholds_reload(sale_ctx *ctx)
{
    if (!ctx)
        return SALE_ERR_INVALID;
    if (ctx_ready(ctx, "sale_thresholds_reload"))
        return SALE_ERR_CACHE;
    thresholds_changed(ctx);
    return SALE_OK;
}

static int memo_get(sale_ctx *ctx, const char *model, int layer, int heads, float *tau, int *thr)
{
    int hit = 0;
    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->thm_n && !hit; i++) {
        th_memo *m = &ctx->thm[i];
        if (m->gen == ctx->th_gen && m->layer == layer && m->heads == heads && !strcmp(m->model, model)) {
            memcpy(tau, m->tau, sizeof(float) * (size_t)heads);
            *thr = m->thr;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return hit;
}

static void memo_put(sale_ctx *ctx, const char *model, int layer, int heads, const float *tau, int thr,
                     unsigned gen)
{
    float *copy = malloc(sizeof(float) * (size_t)heads);
    if (!copy)
        return; /* only a memo: the next call reads the cache again */
    memcpy(copy, tau, sizeof(float) * (size_t)heads);
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->thm && !(ctx->thm = calloc(TH_MEMO_MAX, sizeof *ctx->thm))) {
        pthread_mutex_unlock(&ctx->lock);
        free(copy);
        return;
    }
    th_memo *m;
    if (ctx->thm_n < TH_MEMO_MAX) {
        m = &ctx->thm[ctx->thm_n++];
    } else { /* full: replace entries in turn */
        m = &ctx->thm[ctx->thm_next];
        ctx->thm_next = (ctx->thm_next + 1) % TH_MEMO_MAX;
        free(m->tau);
    }
    snprintf(m->model, sizeof m->model, "%s", model);
    m->layer = layer;
    m->heads = heads;
    m->thr = thr;
    m->gen = gen;
    m->tau = copy;
    pthread_mutex_unlock(&ctx->lock);
}

/* The variant a layer's thresholds were calibrated with, from their rows'
 * meta: 0 when no row records one; refused when two heads disagree (a layer
 * is calibrated, and stored, as a whole). */
static sale_status layer_variant(sale_ctx *ctx, const char *model, int layer, const sale_threshold_meta *meta,
                                 int heads, int *thr)
{
    *thr = 0;
    int first = -1;
    for (int h = 0; h < heads; h++) {
        if (!meta[h].thr)
            continue;
        if (first < 0) {
            first = h, *thr = meta[h].thr;
        } else if (meta[h].thr != *thr) {
            sale_set_error(ctx,
                           "thresholds: model '%s' layer %d: head %d was calibrated with thr=%s, head %d with thr=%s; "
                           "a layer's thresholds hold for one variant: recalibrate the layer (sale calibrate --thr)",
                           model, layer, first, sale_thr_name(*thr), h, sale_thr_name(meta[h].thr));
            return SALE_ERR_INVALID;
        }
    }
    return SALE_OK;
}

sale_status thresholds_resolve(sale_ctx *ctx, const sale_attention_args *a, float *tau_out, int *thr_out)
{
    int thr = 0;
    if (thr_out)
        *thr_out = 0;
    if (!a->tau && a->model) {
        if (!ctx)
            return SALE_ERR_NOT_FOUND; /* no context: no cache to read, nowhere to say so */
        if (memo_get(ctx, a->model, a->layer, a->heads_q, tau_out, &thr)) {
            if (thr_out)
                *thr_out = thr;
            return SALE_OK;
        }
        pthread_mutex_lock(&ctx->lock);
        unsigned gen = ctx->th_gen; /* a store racing with the read below makes this entry stale */
        pthread_mutex_unlock(&ctx->lock);
        sale_threshold_meta *meta = malloc(sizeof *meta * (size_t)a->heads_q);
        if (!meta) {
            sale_set_error(ctx, "thresholds: out of host memory");
            return SALE_ERR_NOMEM;
        }
        sale_status st = sale_thresholds_get(ctx, a->model, a->layer, tau_out, a->heads_q, meta);
        if (st == SALE_OK)
            st = layer_variant(ctx, a->model, a->layer, meta, a->heads_q, &thr);
        free(meta);
        if (st == SALE_OK) {
            memo_put(ctx, a->model, a->layer, a->heads_q, tau_out, thr, gen);
            if (thr_out)
                *thr_out = thr;
        }
        return st;
    }
    float td = a->tau_default > 0.0f ? a->tau_default : TH_DEFAULT_TAU;
    for (int h = 0; h < a->heads_q; h++)
        tau_out[h] = a->tau ? a->tau[h] : td;
    return SALE_OK;
}

sale_status thresholds_variant(sale_ctx *ctx, const sale_attention_args *a, int *thr, float *tau_out)
{
    *thr = a->thr;
    if (a->tau || !a->model || a->heads_q <= 0)
        return SALE_OK;
    float small[256], *tau = tau_out ? tau_out : a->heads_q <= 256 ? small : malloc(sizeof(float) * (size_t)a->heads_q);
    if (!tau) {
        sale_set_error(ctx, "thresholds: out of host memory");
        return SALE_ERR_NOMEM;
    }
    int stored = 0;
    sale_status st = thresholds_resolve(ctx, a, tau, &stored);
    if (tau != small && tau != tau_out)
        free(tau);
    if (st != SALE_OK || !stored)
        return st;
    if (a->thr && a->thr != stored) {
        sale_set_error(ctx,
                       "thresholds: model '%s' layer %d was calibrated with thr=%s and this call asks for thr=%s: at "
                       "one tau the two variants keep different blocks, so the calibrated error budget would not "
                       "hold; pass thr=%s (or leave thr 0 to run the calibrated variant), or recalibrate with "
                       "--thr %s",
                       a->model, a->layer, sale_thr_name(stored), sale_thr_name(a->thr), sale_thr_name(stored),
                       sale_thr_name(a->thr));
        return SALE_ERR_INVALID;
    }
    *thr = stored;
    return SALE_OK;
}

sale_status thresholds_attach_config(sale_ctx *ctx, const cfg_threshold *th, int n)
{
    if (!ctx || n < 0 || (n > 0 && !th))
        return SALE_ERR_INVALID;
    cfg_threshold *copy = NULL;
    if (n > 0) {
        copy = malloc((size_t)n * sizeof *copy);
        if (!copy) {
            sale_set_error(ctx, "thresholds: out of memory");
            return SALE_ERR_NOMEM;
        }
        memcpy(copy, th, (size_t)n * sizeof *copy);
    }
    free(ctx->cfg_thresholds);
    ctx->cfg_thresholds = copy;
    ctx->n_cfg_thresholds = n;
    thresholds_changed(ctx);
    return SALE_OK;
}
