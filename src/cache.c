/* cache.c — the cache file as a whole, for users of the library and the CLI:
 * list kernels, winners and thresholds, verify, export, import, clear. The
 * public face of db/ for these; every db_ call here runs under ctx->lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Rows are copied out under the locks and handed to the caller's callback
 * after: a callback may then call into the context without deadlocking. */
typedef struct cache_rows {
    unsigned char *data;
    size_t size, n, cap; /* element size, count, capacity */
    int nomem;
} cache_rows;

static void *cache_rows_add(cache_rows *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        unsigned char *d = realloc(v->data, cap * v->size);
        if (!d) {
            v->nomem = 1;
            return NULL;
        }
        v->data = d;
        v->cap = cap;
    }
    return v->data + v->size * v->n++;
}

/* A required pointer argument (given as p != NULL). */
static sale_status cache_need(sale_ctx *ctx, int given, const char *what, const char *arg)
{
    if (given)
        return SALE_OK;
    sale_set_error(ctx, "%s: %s must not be NULL", what, arg);
    return SALE_ERR_INVALID;
}

/* After the db_ listing under the lock: report its failure, or running out
 * of memory (v freed), else SALE_OK with the rows in v for the caller. */
static sale_status cache_rows_done(sale_ctx *ctx, cache_rows *v, int rc, const char *err, const char *what)
{
    if (rc >= 0 && !v->nomem)
        return SALE_OK;
    free(v->data);
    if (rc < 0) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_CACHE;
    }
    sale_set_error(ctx, "%s: out of memory", what);
    return SALE_ERR_NOMEM;
}

/* ---------------------------------------------------------------- kernels */

static int kernel_collect(void *user, const db_kernel_row *r)
{
    sale_cache_kernel *k = cache_rows_add(user);
    if (!k)
        return 1;
    memset(k, 0, sizeof *k);
    memcpy(k->key, r->key, sizeof k->key);
    memcpy(k->arch, r->arch, sizeof k->arch);
    memcpy(k->entry, r->entry, sizeof k->entry);
    k->src_hash = r->src_hash;
    k->registers = r->registers;
    k->smem_static = r->smem_static;
    k->smem_dynamic = r->smem_dynamic;
    k->spill_stores = r->spill_stores;
    k->spill_loads = r->spill_loads;
    k->stack = r->stack;
    k->threads = r->threads;
    k->compile_ms = r->compile_ms;
    k->cubin_bytes = r->cubin_bytes;
    k->created = r->created;
    k->last_used = r->last_used;
    k->hits = r->hits;
    k->from_fleet = r->from_fleet;
    return 0;
}

sale_status sale_cache_list_kernels(sale_ctx *ctx, int include_fleet, sale_cache_kernel_fn fn, void *user)
{
    const char *what = "sale_cache_list_kernels";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, fn != NULL, what, "fn")))
        return s;
    cache_rows v = {.size = sizeof(sale_cache_kernel)};
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int rc = db_kernel_list(ctx->db, include_fleet, kernel_collect, &v, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    if ((s = cache_rows_done(ctx, &v, rc, err, what)))
        return s;
    for (size_t i = 0; i < v.n && !fn(user, (const sale_cache_kernel *)v.data + i); i++)
        ;
    free(v.data);
    return SALE_OK;
}

/* ----------------------------------------------------------------- tuned */

static int tuned_collect(void *user, const db_tuned_row *r)
{
    sale_tuned_entry *e = cache_rows_add(user);
    if (!e)
        return 1;
    memset(e, 0, sizeof *e);
    memcpy(e->device, r->device, sizeof e->device);
    memcpy(e->arch, r->arch, sizeof e->arch);
    e->sm_count = r->sm_count;
    e->driver_version = r->driver_version;
    memcpy(e->key, r->key, sizeof e->key);
    memcpy(e->bucket, r->bucket, sizeof e->bucket);
    memcpy(e->winner, r->winner, sizeof e->winner);
    e->time_ms = r->time_ms;
    e->spread_pct = r->spread_pct;
    e->tried = r->tried;
    e->created = r->created;
    return 0;
}

sale_status sale_cache_list_tuned(sale_ctx *ctx, sale_tuned_fn fn, void *user)
{
    const char *what = "sale_cache_list_tuned";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, fn != NULL, what, "fn")))
        return s;
    cache_rows v = {.size = sizeof(sale_tuned_entry)};
    char err[1024] = "", msg[2200];
    pthread_mutex_lock(&ctx->lock);
    int rc = db_tuned_list(ctx->db, tuned_collect, &v, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    snprintf(msg, sizeof msg, "kernel cache %s: %s", ctx->cache_path, err);
    if ((s = cache_rows_done(ctx, &v, rc, msg, what)))
        return s;
    for (size_t i = 0; i < v.n && !fn(user, (const sale_tuned_entry *)v.data + i); i++)
        ;
    free(v.data);
    return SALE_OK;
}

/* ------------------------------------------------------------ thresholds */

static int threshold_collect(void *user, const db_threshold_row *r)
{
    sale_threshold_entry *e = cache_rows_add(user);
    if (!e)
        return 1;
    memset(e, 0, sizeof *e);
    memcpy(e->model, r->model, sizeof e->model);
    e->layer = r->layer;
    e->head = r->head;
    e->tau = r->tau;
    e->meta = (sale_threshold_meta){r->budget, r->budget_abs, r->samples, r->created, r->density, r->error, r->thr};
    e->from_fleet = r->from_fleet;
    return 0;
}

sale_status sale_thresholds_list(sale_ctx *ctx, int include_fleet, sale_threshold_fn fn, void *user)
{
    const char *what = "sale_thresholds_list";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, fn != NULL, what, "fn")))
        return s;
    cache_rows v = {.size = sizeof(sale_threshold_entry)};
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int rc = db_threshold_list(ctx->db, include_fleet, threshold_collect, &v, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    if ((s = cache_rows_done(ctx, &v, rc, err, what)))
        return s;
    for (size_t i = 0; i < v.n && !fn(user, (const sale_threshold_entry *)v.data + i); i++)
        ;
    free(v.data);
    return SALE_OK;
}

/* ------------------------------------------- verify, export, import, clear */

sale_status sale_cache_verify(sale_ctx *ctx, int *checked, int *bad)
{
    const char *what = "sale_cache_verify";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, checked != NULL, what, "checked")) || (s = cache_need(ctx, bad != NULL, what, "bad")))
        return s;
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int rc = db_verify(ctx->db, checked, bad, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    if (rc < 0) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_CACHE;
    }
    return SALE_OK;
}

sale_status sale_cache_export(sale_ctx *ctx, const char *dest, const int *archs, int narch, int force, int *rows)
{
    const char *what = "sale_cache_export";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, rows != NULL, what, "rows")))
        return s;
    *rows = 0;
    if (!dest || !*dest) {
        sale_set_error(ctx, "%s: dest: must be a file name", what);
        return SALE_ERR_INVALID;
    }
    if (narch < 0 || (narch > 0 && !archs)) {
        sale_set_error(ctx, "%s: need archs[narch] with narch >= 0 (narch %d)", what, narch);
        return SALE_ERR_INVALID;
    }
    const char **names = narch ? calloc((size_t)narch, sizeof *names) : NULL;
    if (narch && !names) {
        sale_set_error(ctx, "%s: out of memory", what);
        return SALE_ERR_NOMEM;
    }
    for (int i = 0; i < narch; i++) {
        names[i] = archs[i] == SALE_ARCH_CURRENT ? NULL : sale_arch_name(archs[i]);
        if (!names[i]) {
            sale_set_error(ctx, "%s: archs[%d]: unknown architecture %d (80, 86, 89, 90 or 901)", what, i, archs[i]);
            free(names);
            return SALE_ERR_INVALID;
        }
    }
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int n = db_export_ex(ctx->db, dest, names, narch, force ? DB_EXPORT_FORCE : 0, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    free(names);
    if (n < 0) {
        sale_set_error(ctx, "%s", err);
        return n == -2 ? SALE_ERR_NOT_FOUND : SALE_ERR_CACHE;
    }
    *rows = n;
    return SALE_OK;
}

sale_status sale_cache_import(sale_ctx *ctx, const char *src, int *rows)
{
    const char *what = "sale_cache_import";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, rows != NULL, what, "rows")))
        return s;
    *rows = 0;
    if (!src || !*src) {
        sale_set_error(ctx, "%s: src: must be a file name", what);
        return SALE_ERR_INVALID;
    }
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int n = db_import(ctx->db, src, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    thresholds_changed(ctx); /* an import may bring thresholds */
    if (n < 0) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_CACHE;
    }
    *rows = n;
    return SALE_OK;
}

sale_status sale_cache_clear(sale_ctx *ctx, int *rows)
{
    const char *what = "sale_cache_clear";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, rows != NULL, what, "rows")))
        return s;
    *rows = 0;
    char err[1024] = "";
    pthread_mutex_lock(&ctx->lock);
    int n = db_clear(ctx->db, err, sizeof err);
    pthread_mutex_unlock(&ctx->lock);
    if (n < 0) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_CACHE;
    }
    *rows = n;
    return SALE_OK;
}

sale_status sale_cache_file_bytes(sale_ctx *ctx, int64_t *bytes)
{
    const char *what = "sale_cache_file_bytes";
    sale_status s = ctx_ready(ctx, what);
    if (s || (s = cache_need(ctx, bytes != NULL, what, "bytes")))
        return s;
    *bytes = db_file_bytes(ctx->db); /* a stat of the file and its -wal: no SQLite, no lock */
    return SALE_OK;
}
