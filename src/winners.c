/* winners.c — the tuned winners stored in the cache, served to the context:
 * lookup (exact length bucket, else the nearest tuned one on the same device
 * and driver) and save, with a memo per (device, open key, bucket) that also
 * remembers "no winner"; plus dense_below, the default per arch and the value
 * measured on the user's device. Below the context, above db; the search
 * that finds winners lives in tuner/ on top of the public API. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Where SALE stops paying, per code arch: below this length sale_attention
 * runs dense attention unless args.dense_below says otherwise. Measure with
 * `bench_host --dense-below` (or store it per device with `sale tune
 * --dense-below`) before changing a value here. */
static const struct {
    int arch, dense_below;
} g_dense_below[] = {
    {80, 1024}, {86, 1024}, {89, 1024}, /* not measured (no such GPU here) */
    /* sm_90, on an H200 (bench/RESULTS.md, thirteenth session), B=1, 32/8
     * heads, D=128, bf16, `bench_host --dense-below`, with the rows attend
     * kernel as the default, two runs: two-pass 3.36 / 3.33 ms against dense
     * 3.58 / 3.37 at 16K, 11.7 against 14.1 / 14.4 at 32K, 1.04 against 0.85
     * at 8K. So 16K itself is about even and from there two-pass pays.
     * (32768 with the two-row attend kernel, whose 16K row was 3.6 against
     * 3.2; 4096 with the mma.sync dense.) */
    {90, 16384},
};

int win_dense_below_default(int code_arch)
{
    for (size_t i = 0; i < sizeof g_dense_below / sizeof g_dense_below[0]; i++)
        if (g_dense_below[i].arch == (code_arch == SALE_ARCH_SM90A ? 90 : code_arch))
            return g_dense_below[i].dense_below;
    return 1024;
}

struct win_memo {
    char device[128];
    int sm_count, driver_version;
    sale_key open; /* resolved algorithm fields, tiles open, concrete arch */
    int bucket;    /* power of two, or 0: "any bucket" */
    int found, warps, stages;
    struct win_memo *next;
};

int win_bucket_n(int seq_len)
{
    long p = 1;
    while (p < seq_len && p < (1L << 30))
        p <<= 1;
    return (int)p;
}

int win_bucket(int seq_len, char *buf, size_t len)
{
    if (seq_len < 1 || !buf)
        return -1;
    int n = snprintf(buf, len, "n=%d", win_bucket_n(seq_len));
    return n > 0 && (size_t)n < len ? 0 : -1;
}

sale_status win_open_key(const sale_key *key, int arch, sale_key *out, char *err, size_t errlen)
{
    sale_key k = *key;
    if (k.arch == SALE_ARCH_CURRENT)
        k.arch = arch;
    if (k.arch == SALE_ARCH_CURRENT || !sale_arch_name(k.arch)) {
        if (err && errlen)
            snprintf(err, errlen, "arch: no concrete architecture for the tuned key");
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

static void row_ids(db_tuned_row *r, const sale_device_info *dev, const char *arch, const char *key,
                    const char *bucket)
{
    memset(r, 0, sizeof *r);
    snprintf(r->device, sizeof r->device, "%s", dev->name);
    snprintf(r->arch, sizeof r->arch, "%s", arch);
    r->sm_count = dev->sm_count;
    r->driver_version = dev->driver_version;
    snprintf(r->key, sizeof r->key, "%s", key);
    if (bucket)
        snprintf(r->bucket, sizeof r->bucket, "%s", bucket);
}

/* A new winner changes what open keys resolve to: forget every lookup and
 * make the loaded-kernel table's open-tile entries stale. ctx->lock held. */
static void forget(sale_ctx *ctx)
{
    win_memo_free(ctx);
    memset(ctx->dense_below, 0, sizeof ctx->dense_below);
    ctx->win_gen++;
}

void win_memo_free(sale_ctx *ctx)
{
    for (win_memo *m = ctx->memo, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    ctx->memo = NULL;
}

sale_status win_save(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open_key, int seq_len,
                     const sale_key *winner, double ms, double spread_pct, int tried)
{
    char err[512] = "";
    if (!ctx || !dev || !open_key || !winner) {
        sale_set_error(ctx, "win_save: NULL argument");
        return SALE_ERR_INVALID;
    }
    sale_key open, w = *winner;
    if (win_open_key(open_key, key_code_arch(dev->arch), &open, err, sizeof err)) {
        sale_set_error(ctx, "storing a tuned winner: %s", err);
        return SALE_ERR_INVALID;
    }
    if (w.arch == SALE_ARCH_CURRENT)
        w.arch = open.arch;
    if (!w.warps || !w.stages || sale_key_resolve(&w, err, sizeof err)) {
        sale_set_error(ctx, "storing a tuned winner: the winner must have its tiles set and be legal: %s", err);
        return SALE_ERR_INVALID;
    }
    char bucket[32], keytext[256];
    if (win_bucket(seq_len, bucket, sizeof bucket)) {
        sale_set_error(ctx, "storing a tuned winner: seq_len must be >= 1, got %d", seq_len);
        return SALE_ERR_INVALID;
    }
    sale_key_format(&open, keytext, sizeof keytext);
    db_tuned_row r;
    row_ids(&r, dev, sale_arch_name(open.arch), keytext, bucket);
    sale_key_format(&w, r.winner, sizeof r.winner);
    r.time_ms = ms;
    r.spread_pct = spread_pct;
    r.tried = tried;
    pthread_mutex_lock(&ctx->lock);
    int rc = db_tuned_put(ctx->db, &r, err, sizeof err);
    forget(ctx);
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

static win_memo *memo_find(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open, int bucket)
{
    for (win_memo *m = ctx->memo; m; m = m->next)
        if (m->bucket == bucket && m->sm_count == dev->sm_count && m->driver_version == dev->driver_version &&
            !memcmp(&m->open, open, sizeof *open) && !strcmp(m->device, dev->name))
            return m;
    return NULL;
}

/* The stored winner's tiles for (dev, open, seq_len): 1 found, 0 none, -1 error. */
static int lookup_db(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open, int seq_len, int *warps,
                     int *stages)
{
    char err[512] = "", keytext[256];
    sale_key_format(open, keytext, sizeof keytext);
    db_tuned_row want, got;
    row_ids(&want, dev, sale_arch_name(open->arch), keytext, NULL);
    int found = 0;
    if (seq_len > 0) {
        got = want;
        win_bucket(seq_len, got.bucket, sizeof got.bucket);
        found = db_tuned_get(ctx->db, &got, err, sizeof err);
        if (found < 0) {
            sale_set_error(ctx, "kernel cache %s: %s", ctx->cache_path, err);
            return -1;
        }
    }
    if (!found) {
        nearest s;
        memset(&s, 0, sizeof s);
        s.want = &want;
        s.target = log2((double)win_bucket_n(seq_len > 0 ? seq_len : 65536));
        if (db_tuned_list(ctx->db, nearest_cb, &s, err, sizeof err) < 0) {
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
    *warps = w.warps;
    *stages = w.stages;
    return 1;
}

int win_lookup(sale_ctx *ctx, const sale_device_info *dev, const sale_key *key, int seq_len, sale_key *out)
{
    if (!ctx || !dev || !key || !out) {
        sale_set_error(ctx, "win_lookup: NULL argument");
        return -1;
    }
    *out = *key;
    if (key->warps && key->stages)
        return 0; /* nothing open: the caller's tiles stand */
    char err[512] = "";
    sale_key open;
    if (win_open_key(key, key_code_arch(dev->arch), &open, err, sizeof err)) {
        sale_set_error(ctx, "win_lookup: %s", err);
        return -1;
    }
    int bucket = seq_len > 0 ? win_bucket_n(seq_len) : 0;
    int found = 0, warps = 0, stages = 0;
    pthread_mutex_lock(&ctx->lock);
    const win_memo *m = memo_find(ctx, dev, &open, bucket);
    const int hit = m != NULL;
    const unsigned gen = ctx->win_gen; /* a save racing with the read below makes its result stale */
    if (hit) {
        found = m->found;
        warps = m->warps;
        stages = m->stages;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (!hit) {
        /* SQLite outside ctx->lock (the cache layer locks each call): every
         * warm lookup on every other thread takes ctx->lock, and a read can
         * wait out the busy timeout behind another process's write */
        found = lookup_db(ctx, dev, &open, seq_len, &warps, &stages);
        win_memo *nm = found >= 0 ? calloc(1, sizeof *nm) : NULL;
        if (nm) { /* out of memory: no memo, the next lookup asks SQLite again */
            snprintf(nm->device, sizeof nm->device, "%s", dev->name);
            nm->sm_count = dev->sm_count;
            nm->driver_version = dev->driver_version;
            nm->open = open;
            nm->bucket = bucket;
            nm->found = found;
            nm->warps = warps;
            nm->stages = stages;
            pthread_mutex_lock(&ctx->lock);
            /* kept only if no save came between (forget() emptied the memo
             * then) and no other thread has kept the same lookup meanwhile */
            if (gen == ctx->win_gen && !memo_find(ctx, dev, &open, bucket)) {
                nm->next = ctx->memo;
                ctx->memo = nm;
                nm = NULL;
            }
            pthread_mutex_unlock(&ctx->lock);
            free(nm);
        }
    }
    if (found != 1)
        return found;
    sale_key k = *key;
    if (!k.warps)
        k.warps = warps;
    if (!k.stages)
        k.stages = stages;
    sale_key check = k;
    if (check.arch == SALE_ARCH_CURRENT)
        check.arch = open.arch;
    if (sale_key_resolve(&check, NULL, 0))
        return 0;
    *out = k;
    return 1;
}

sale_status win_dense_below_save(sale_ctx *ctx, const sale_device_info *dev, int dense_below, double ms)
{
    int arch = key_code_arch(dev->arch);
    if (!arch || dense_below < 0) {
        sale_set_error(ctx, "storing dense_below: %s", !arch ? "no sale kernels for this device" : "must be >= 0");
        return SALE_ERR_INVALID;
    }
    db_tuned_row r;
    row_ids(&r, dev, sale_arch_name(arch), WIN_DENSE_BELOW_KEY, "all");
    snprintf(r.winner, sizeof r.winner, "%d", dense_below);
    r.time_ms = ms;
    char err[512] = "";
    pthread_mutex_lock(&ctx->lock);
    int rc = db_tuned_put(ctx->db, &r, err, sizeof err);
    forget(ctx);
    pthread_mutex_unlock(&ctx->lock);
    if (rc) {
        sale_set_error(ctx, "kernel cache %s: storing dense_below: %s", ctx->cache_path, err);
        return SALE_ERR_CACHE;
    }
    return SALE_OK;
}

int win_dense_below(sale_ctx *ctx, int ordinal)
{
    int v = 0;
    pthread_mutex_lock(&ctx->lock);
    const unsigned gen = ctx->win_gen; /* a save racing with the read below makes its result stale */
    if (ordinal >= 0 && ordinal < CTX_MAX_DEVICES)
        v = ctx->dense_below[ordinal];
    pthread_mutex_unlock(&ctx->lock);
    if (v)
        return v;
    sale_device_info di;
    if (sale_device_info_get(ctx, ordinal, &di) != SALE_OK)
        return 1024;
    int arch = key_code_arch(di.arch);
    v = win_dense_below_default(arch);
    db_tuned_row r;
    row_ids(&r, &di, arch ? sale_arch_name(arch) : "", WIN_DENSE_BELOW_KEY, "all");
    char err[512] = "";
    /* SQLite outside ctx->lock, as win_lookup */
    int found = arch ? db_tuned_get(ctx->db, &r, err, sizeof err) : 0;
    int n = 0;
    if (found == 1 && sscanf(r.winner, "%d", &n) == 1 && n >= 0)
        v = n ? n : -1; /* a stored 0: SALE always pays on this device */
    pthread_mutex_lock(&ctx->lock);
    if (ordinal >= 0 && ordinal < CTX_MAX_DEVICES && gen == ctx->win_gen)
        ctx->dense_below[ordinal] = v;
    pthread_mutex_unlock(&ctx->lock);
    if (found < 0) /* after the unlock: the log callback may call back into sale */
        sale_logf(ctx, SALE_LOG_WARN, "reading the stored dense_below: %s; using %d", err, v);
    return v;
}
