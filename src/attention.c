/* attention.c — sale_attention(): argument checks, the workspaces (one in
 * use per stream at a time, reused once the event after their last use has
 * passed), and the pipeline of kernels (quantize, then fused | select+attend
 * | plain; or dense alone) queued on device pointers and a stream, following
 * each family's launch plan (templates/sale_layout.h). It never waits for the GPU unless
 * the caller asked for host-side results (stats, phase_ms), and can be
 * captured into a CUDA graph. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sale_abi.h"
#include "sale_layout.h"

#define ALIGN 256

static size_t up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

typedef struct plan_sizes {
    int nqb, nkb, nkw, bq, bk, seg, win, est;
    size_t sync, pick, qcode, kcode, qscale, kscale, qmean, kmean, cterm, tau, mask, kept, scratch, kcent, total;
} plan_sizes;

int sale_attention_default_thr(int arch)
{
    return arch == 90 || arch == SALE_ARCH_SM90A ? SALE_THR_FIXED : SALE_THR_RUN;
}

/* Defaults applied to a copy of the user's args. */
static void apply_defaults(sale_attention_args *a, int arch, int dense_below)
{
    /* AUTO: two-pass on sm_90 (bench/RESULTS.md, 2026-11-29: with the wgmma
     * kernels fused is slower than dense there, two-pass even at 16K and faster above: winners.c) */
    if (a->mode == SALE_MODE_AUTO)
        a->mode = arch == 90 || arch == SALE_ARCH_SM90A ? SALE_MODE_TWO_PASS : SALE_MODE_FUSED;
    if (!a->block_q) a->block_q = 64;
    if (!a->block_k) a->block_k = 32;
    if (!a->block_seg) a->block_seg = 128;
    if (!a->local_window) a->local_window = 128;
    if (!a->thr) a->thr = sale_attention_default_thr(arch);
    if (!a->est_bits) a->est_bits = key_default_est_bits(arch);
    if (!a->tau_default) a->tau_default = 0.004f;
    if (!a->dense_below) a->dense_below = dense_below;
    if (!a->scale) a->scale = 1.0f / sqrtf((float)a->head_dim);
}

static int is_dense_run(const sale_attention_args *a)
{
    return a->mode == SALE_MODE_DENSE || (a->dense_below > 0 && a->seq_len < a->dense_below);
}

/* The attention family of a run: dense (mode or short-input fallback), else
 * the mode's own (plain: version 0, templates/plain.cu). */
static sale_family main_family(const sale_attention_args *a)
{
    if (is_dense_run(a))
        return SALE_FAMILY_DENSE;
    return a->mode == SALE_MODE_TWO_PASS ? SALE_FAMILY_SELECT
           : a->mode == SALE_MODE_PLAIN  ? SALE_FAMILY_PLAIN
                                         : SALE_FAMILY_FUSED;
}

/* Whether the tiles the caller asked for (args.tile_warps, tile_stages) are
 * family f's. One value of tile_warps can name a kernel of another family of
 * the same call, and then f keeps its own (its tuned winner or default):
 * quantize and plain have fixed tiles; warps 20 is the sm_90a estimation's
 * (a select-only tile attend ignores); warps 5 is attend's rows kernel (the
 * select ignores it, and so does dense, which a short input falls back to);
 * warps 12 under thr=run names the two-row attend kernel, the run select
 * being mma.sync (under fixed, 12 is also the estimation's two-warpgroup
 * tile, and dense's wgmma kernel). */
static int tiles_apply(const sale_attention_args *a, sale_family f)
{
    const int w = a->tile_warps;
    switch (f) {
    case SALE_FAMILY_QUANTIZE:
    case SALE_FAMILY_PLAIN: return 0;
    case SALE_FAMILY_SELECT: return w != SALE_WR_WARPS && !(w == SALE_WG_WARPS && a->thr != SALE_THR_FIXED);
    case SALE_FAMILY_DENSE: return w != SALE_WR_WARPS;
    case SALE_FAMILY_ATTEND: return w != SALE_SE_DEFAULT_WARPS;
    default: return 1;
    }
}

static sale_key make_key(const sale_attention_args *a, sale_family f, int arch)
{
    sale_key k = sale_key_default(f);
    k.head_dim = a->head_dim;
    k.block_q = a->block_q;
    k.block_k = a->block_k;
    k.block_seg = a->block_seg;
    k.local_window = a->local_window;
    k.thr = a->thr; /* families that do not select take run (key_fill_algorithm) */
    k.dtype = a->dtype;
    k.est_bits = a->est_bits;
    k.causal = 1;
    k.arch = arch;
    if (tiles_apply(a, f)) {
        k.warps = a->tile_warps;
        k.stages = a->tile_stages;
    }
    return k;
}

static void sizes_of(const sale_attention_args *a, const sale_key *qk, plan_sizes *s)
{
    memset(s, 0, sizeof *s);
    size_t B = (size_t)a->batch, Hq = (size_t)a->heads_q, Hkv = (size_t)a->heads_kv, N = (size_t)a->seq_len,
           D = (size_t)a->head_dim;
    s->nqb = (int)(((int64_t)a->seq_len + a->block_q - 1) / a->block_q);
    s->nkb = (int)(((int64_t)a->seq_len + a->block_k - 1) / a->block_k);
    s->nkw = (s->nkb + 31) / 32;
    size_t cb = a->est_bits == 4 ? 2 : 1; /* codes per byte */
    /* first, at offset 0: the quantize counters (their size depends on the
     * shape, so what lies past them does too: see slot->zeroed) */
    s->sync = up((size_t)sale_layout_sync_words(a->batch, a->heads_q, a->heads_kv) * 4);
    s->pick = up(8); /* sale_params.pick: zeroed by a memset of the calls that use it */
    s->qcode = up(B * Hq * N * D / cb + 16);
    s->kcode = up(B * Hkv * N * D / cb + 16);
    s->qscale = up(B * Hq * N * 4);
    s->kscale = up(B * Hkv * (size_t)s->nkb * 4);
    s->qmean = up(B * Hq * D * 4);
    s->kmean = up(B * Hkv * D * 4);
    s->cterm = up(B * Hq * N * 4);
    s->tau = up(Hq * 4);
    s->mask = up(B * Hq * (size_t)s->nqb * (size_t)s->nkw * 4);
    s->kept = up(B * Hq * (size_t)s->nqb * 4);
    sale_layout_cfg lc = key_layout(qk);
    lc.warps = qk->warps ? qk->warps : 4;
    lc.stages = qk->stages ? qk->stages : 2;
    size_t scr = (size_t)sale_layout_scratch_bytes(&lc, a->batch, a->heads_q, a->heads_kv, a->seq_len);
    if (a->mode == SALE_MODE_TWO_PASS) {
        /* where this select can be the sm_90a wgmma estimation (thr fixed, its block sizes), its
         * t_i and c_j ranges, whatever the device: an upper bound */
        sale_key sk = make_key(a, SALE_FAMILY_SELECT, SALE_ARCH_SM90A);
        key_fill_algorithm(&sk);
        sale_layout_cfg sc = key_layout(&sk);
        sc.warps = SALE_SE_DEFAULT_WARPS;
        sc.stages = SALE_SE_DEFAULT_STAGES;
        if (sale_layout_legal(&sc, NULL, 0)) {
            size_t ss = (size_t)sale_layout_scratch_bytes(&sc, a->batch, a->heads_q, a->heads_kv, a->seq_len);
            scr = ss > scr ? ss : scr;
        }
    }
    s->scratch = up(scr);
    s->kcent = up(B * Hkv * N * D * 2);
    s->total = s->sync + s->pick + s->qcode + s->kcode + s->qscale + s->kscale + s->qmean + s->kmean + s->cterm + s->tau + s->mask +
               s->kept + s->scratch + s->kcent;
}

static int stride_ok(const int64_t *st, int64_t D, const void *p)
{
    for (int i = 0; i < 3; i++)
        if (st[i] < 0 || st[i] % 8)
            return 0;
    if (st[2] && st[2] < D)
        return 0;
    return ((uintptr_t)p % 16) == 0;
}

/* 1 when out's elements [B, H, N, D] (resolved strides r: batch, head, row)
 * are distinct: sorted by stride, each dimension of more than one element must
 * step past everything the smaller ones reach (the nested-layout rule, as the
 * Python door's). Two rows or heads on one address would be written by
 * different CTAs: a race, and a wrong result served silently. */
static int out_distinct(const int64_t r[3], int B, int H, int N, int D)
{
    int64_t s[4] = {1, r[2], r[1], r[0]}, n[4] = {D, N, H, B};
    for (int i = 1; i < 4; i++) /* insertion sort by stride, sizes along */
        for (int j = i; j > 0 && s[j] < s[j - 1]; j--) {
            int64_t t = s[j]; s[j] = s[j - 1]; s[j - 1] = t;
            t = n[j]; n[j] = n[j - 1]; n[j - 1] = t;
        }
    int64_t reach = 0; /* the farthest offset of the dimensions so far (strides_resolve bounded it) */
    for (int i = 0; i < 4; i++) {
        if (n[i] <= 1)
            continue;
        if (s[i] <= reach)
            return 0;
        reach += (n[i] - 1) * s[i];
    }
    return 1;
}

/* Everything a launch could trip on is refused here, with the field named. */
/* need_ptrs 0: a size query, where the tensors need not exist yet */
static sale_status check_args(sale_ctx *ctx, const sale_attention_args *a, int need_ptrs)
{
#define BAD(...)                                                                                                      \
    do {                                                                                                              \
        sale_set_error(ctx, __VA_ARGS__);                                                                             \
        return SALE_ERR_INVALID;                                                                                      \
    } while (0)
    if (!a)
        BAD("sale_attention: args is NULL");
    if (need_ptrs && (!a->q || !a->k || !a->v || !a->out))
        BAD("q, k, v, out: device pointers must not be NULL");
    if (a->batch < 1 || a->heads_q < 1 || a->heads_kv < 1 || a->seq_len < 1)
        BAD("shape: batch, heads_q, heads_kv and seq_len must be >= 1 (got %d, %d, %d, %d)", a->batch, a->heads_q,
            a->heads_kv, a->seq_len);
    if (a->heads_q % a->heads_kv)
        BAD("heads_q: must be a multiple of heads_kv (GQA), got %d and %d", a->heads_q, a->heads_kv);
    /* every workspace size must fit size_t and every grid an int: refuse what would wrap */
    if ((double)a->batch * a->heads_q * ((double)a->seq_len + 128) * 256 * 8 > (double)(SIZE_MAX / 4) ||
        (int64_t)a->batch * a->heads_q > INT_MAX)
        BAD("shape: batch %d * heads_q %d * seq_len %d is too large (sizes would overflow)", a->batch, a->heads_q,
            a->seq_len);
    /* block and chunk counts are int arithmetic on seq_len (here and in the kernels): a
     * [1, 1, 2^30, 64] f16 tensor alone is 128 GiB, past any device */
    if (a->seq_len > SALE_MAX_SEQ_LEN)
        BAD("seq_len: %d is too large (at most %d)", a->seq_len, SALE_MAX_SEQ_LEN);
    if (a->block_q < 0 || a->block_k < 0 || a->block_seg < 0 || a->local_window < 0)
        BAD("block sizes: must be >= 0 (0 for the default)");
    {
        /* the kept-block mask [B][Hq][nqb][nkw] grows with seq_len squared: the
         * linear check above does not bound it (it wrapped to a small workspace) */
        const int64_t nqb = sale_num_qblocks(a), nkw = (sale_num_kblocks(a) + 31) / 32;
        if ((double)a->batch * a->heads_q * (double)nqb * (double)nkw * 4 > (double)(SIZE_MAX / 4))
            BAD("mask: batch %d * heads_q %d * %lld query blocks * %lld words of key blocks is too large (sizes "
                "would overflow)", a->batch, a->heads_q, (long long)nqb, (long long)nkw);
    }
    if (!thr_known(a->thr))
        BAD("thr: unknown threshold variant %d (SALE_THR_RUN, SALE_THR_FIXED; 0: the device's default)", a->thr);
    if (a->head_dim == 256)
        BAD("head_dim: 256 is not supported by these kernels (shared memory); use 64 or 128");
    if (a->head_dim != 64 && a->head_dim != 128)
        BAD("head_dim: must be 64 or 128, got %d", a->head_dim);
    if (a->dtype != SALE_DTYPE_F16 && a->dtype != SALE_DTYPE_BF16)
        BAD("dtype: sale_attention takes f16 or bf16");
    if ((unsigned)a->mode > SALE_MODE_AUTO)
        BAD("mode: unknown mode %d", (int)a->mode);
    if (!stride_ok(a->q_stride, a->head_dim, need_ptrs ? a->q : NULL) ||
        !stride_ok(a->k_stride, a->head_dim, need_ptrs ? a->k : NULL) ||
        !stride_ok(a->v_stride, a->head_dim, need_ptrs ? a->v : NULL) ||
        !stride_ok(a->o_stride, a->head_dim, need_ptrs ? a->out : NULL))
        BAD("strides: every stride must be a multiple of 8 elements (16 bytes), a row stride >= head_dim, and "
            "q/k/v/out 16-byte aligned");
    int64_t ro[3]; /* out's strides resolved (the last of the loop) */
    {
        const int64_t *st[4] = {a->q_stride, a->k_stride, a->v_stride, a->o_stride};
        static const char *const nm[4] = {"q_stride", "k_stride", "v_stride", "o_stride"};
        for (int t = 0; t < 4; t++)
            if (strides_resolve(st[t], a->batch, t == 0 || t == 3 ? a->heads_q : a->heads_kv, a->seq_len,
                                a->head_dim, 2, ro))
                BAD("%s: {%lld, %lld, %lld} reach past 64-bit offsets for batch %d, %d heads, seq_len %d", nm[t],
                    (long long)st[t][0], (long long)st[t][1], (long long)st[t][2], a->batch,
                    t == 0 || t == 3 ? a->heads_q : a->heads_kv, a->seq_len);
    }
    if (!out_distinct(ro, a->batch, a->heads_q, a->seq_len, a->head_dim))
        BAD("o_stride: {%lld, %lld, %lld} put two elements of out on one address (batch %d, %d heads, seq_len %d, "
            "head_dim %d): rows would overwrite each other", (long long)a->o_stride[0], (long long)a->o_stride[1],
            (long long)a->o_stride[2], a->batch, a->heads_q, a->seq_len, a->head_dim);
    /* where the kernels store: the workspace's carved arrays (16-byte vectors, TMA), mask words, lse floats */
    if (need_ptrs && (uintptr_t)a->workspace % 16)
        BAD("workspace: must be 16-byte aligned");
    if (need_ptrs && (uintptr_t)a->mask % 4)
        BAD("mask: must be 4-byte aligned");
    if (need_ptrs && (uintptr_t)a->lse % 4)
        BAD("lse: must be 4-byte aligned");
    if (a->scale < 0 || !isfinite(a->scale))
        BAD("scale: must be a finite positive number (0 for 1/sqrt(head_dim)), got %g", (double)a->scale);
    if (a->tau_default < 0 || !isfinite(a->tau_default) || a->tau_default >= 1)
        BAD("tau_default: must be in [0, 1), got %g", (double)a->tau_default);
    if (a->tau)
        for (int h = 0; h < a->heads_q; h++)
            if (!(a->tau[h] >= 0 && a->tau[h] < 1))
                BAD("tau[%d]: must be in [0, 1), got %g", h, (double)a->tau[h]);
    return SALE_OK;
#undef BAD
}

/* A refused key's reason, for the caller: 20 names no kernel but the sm_90a
 * wgmma estimation, so a select key with it says which select that is,
 * beside the rule it broke */
static void key_error(sale_ctx *ctx, const sale_key *k, const char *err)
{
    if (k->family == SALE_FAMILY_SELECT && k->warps == SALE_SE_DEFAULT_WARPS && k->arch != SALE_ARCH_SM90A)
        sale_set_error(ctx, "tile_warps: 20 is the sm_90a wgmma estimation's tile (two-pass, thr fixed, head_dim 128, "
                            "block_q 64, block_k 32, block_seg 128, 8-bit codes), which this call's select is not (%s)",
                       err);
    else
        sale_set_error(ctx, "%s", err);
}

/* 20 names only the sm_90a wgmma estimation: where the select of a call
 * (key k, arch open or resolved) is another kernel, refuse it here, saying
 * which of the estimation's rules the call breaks or on what it runs. 1: refused. */
static int refuse_select_20(sale_ctx *ctx, const sale_key *k)
{
    if (k->family != SALE_FAMILY_SELECT || k->warps != SALE_SE_DEFAULT_WARPS)
        return 0;
    sale_key t = *k;
    t.arch = SALE_ARCH_SM90A;
    if (!t.stages)
        t.stages = SALE_SE_DEFAULT_STAGES;
    char why[512];
    if (sale_key_validate(&t, why, sizeof why) == SALE_OK) {
        if (k->arch == SALE_ARCH_CURRENT || k->arch == SALE_ARCH_SM90A)
            return 0;
        snprintf(why, sizeof why, "this call's select runs on %s", sale_arch_name(k->arch));
    }
    key_error(ctx, k, why);
    return 1;
}

/* The keys of a call, checked without a device (arch open): a bad block
 * size, tile or est_bits is refused by sale_attention before a device is
 * looked for, and by sale_attention_workspace_size. */
static sale_status check_keys_early(sale_ctx *ctx, const sale_attention_args *args)
{
    sale_attention_args a0 = *args;
    apply_defaults(&a0, 90, 1024);
    sale_key k0 = make_key(&a0, main_family(&a0), SALE_ARCH_CURRENT);
    sale_key q0 = make_key(&a0, SALE_FAMILY_QUANTIZE, SALE_ARCH_CURRENT);
    char e0[512];
    if (sale_key_validate(&k0, e0, sizeof e0)) {
        key_error(ctx, &k0, e0);
        return SALE_ERR_INVALID;
    }
    /* with stages open the tile rules wait for the device (sale_key_validate): 20 can
     * only be the sm_90a estimation, so the call is checked against its rules now */
    if (refuse_select_20(ctx, &k0))
        return SALE_ERR_INVALID;
    if (sale_key_validate(&q0, e0, sizeof e0)) {
        sale_set_error(ctx, "%s", e0);
        return SALE_ERR_INVALID;
    }
    return SALE_OK;
}

static void fill_strides(sale_i64 *sb, sale_i64 *sh, sale_i64 *sn, const int64_t *st, int H, int N, int D)
{
    *sn = st[2] ? st[2] : D;
    *sh = st[1] ? st[1] : *sn * N;
    *sb = st[0] ? st[0] : *sh * H;
}

sale_status sale_attention_workspace_size(sale_ctx *ctx, const sale_attention_args *args, size_t *bytes)
{
    if (!bytes) {
        sale_set_error(ctx, "sale_attention_workspace_size: bytes is NULL");
        return SALE_ERR_INVALID;
    }
    *bytes = 0;
    sale_status st = check_args(ctx, args, 0);
    if (st || (st = check_keys_early(ctx, args)))
        return st;
    sale_attention_args a = *args;
    apply_defaults(&a, 90, 1024);
    sale_key qk = make_key(&a, SALE_FAMILY_QUANTIZE, 90);
    plan_sizes s;
    sizes_of(&a, &qk, &s);
    *bytes = s.total;
    return SALE_OK;
}

/* ------------------------------------------------------------ workspaces */

struct ws_slot {
    CUcontext cu;
    CUdeviceptr ptr;
    size_t bytes;
    CUevent done;    /* recorded on `stream` after the last eager use */
    CUstream stream; /* stream of the last use */
    unsigned long long sid; /* cuStreamGetId of that stream (unique for the life of the process); 0: unknown */
    int in_use;      /* between ws_acquire and ws_release */
    int used;        /* done has been recorded */
    int captured;    /* owned by graphs of capture sequence `capture`: never reused eagerly */
    size_t zeroed;   /* bytes from offset 0 known to be zero: at most the quantize counters of
                        the last call (its launch leaves them zero; past them it wrote data) */
    unsigned long long capture;
    struct ws_slot *next;
};

void ws_free_all(sale_ctx *ctx)
{
    const drv_api *d = ctx->ws ? drv_get(NULL) : NULL;
    CUcontext cur = NULL, active;
    if (d)
        d->CtxGetCurrent(&cur);
    active = cur;
    for (ws_slot *w = ctx->ws, *n; w; w = n) {
        n = w->next;
        /* freed in its own context, whichever thread destroys */
        if (d && drv_use_context(d, w->cu, &active)) {
            if (w->done)
                d->EventDestroy(w->done);
            if (w->ptr)
                d->MemFree(w->ptr);
        }
        free(w);
    }
    if (d && active != cur)
        d->CtxSetCurrent(cur); /* the caller's, as it was */
    ctx->ws = NULL;
}

/* A workspace of `need` bytes for this stream. Eagerly: the one last used on
 * this stream (stream order makes reuse safe), else an idle one (its done
 * event has passed), else a new one; growing one waits for its last use
 * (logged). "This stream" is the driver's stream id (cuStreamGetId), not the
 * handle: one handle is not always one stream (CU_STREAM_PER_THREAD from two
 * threads; a destroyed stream's handle given to a new one while the old
 * one's work still runs). Where the id is unknown (a driver before 12.0),
 * the handle decides and the slot's last use is waited for on the device.
 * Under capture: the one this capture sequence already took on this stream,
 * else the one last used eagerly on this stream, which then belongs to the
 * captured graph for good; never an allocation, never a wait. */
static sale_status ws_acquire(sale_ctx *ctx, CUcontext cu, CUstream stream, size_t need, int capturing,
                              unsigned long long capture, ws_slot **out)
{
    const drv_api *d = drv_get(NULL);
    *out = NULL;
    ws_slot *w = NULL;
    unsigned long long sid = 0; /* eagerly: the stream's id, if the driver has cuStreamGetId */
    if (!capturing && d->StreamGetId && d->StreamGetId(stream, &sid) != CUDA_SUCCESS)
        sid = 0;
    pthread_mutex_lock(&ctx->ws_lock);
    if (capturing) {
        for (ws_slot *x = ctx->ws; x && !w; x = x->next)
            if (x->cu == cu && x->captured && x->capture == capture && x->stream == stream && !x->in_use)
                w = x;
        for (ws_slot *x = ctx->ws; x && !w; x = x->next)
            if (x->cu == cu && !x->captured && !x->in_use && x->stream == stream && x->used && x->bytes >= need)
                w = x;
        if (!w || w->bytes < need) {
            pthread_mutex_unlock(&ctx->ws_lock);
            sale_set_error(ctx,
                           "workspace: sale_attention is being captured into a graph and this stream has no ready "
                           "workspace of %zu bytes%s; run sale_attention once on this stream, with the largest "
                           "shape the graph uses, before capturing (or pass args.workspace): a capture can "
                           "neither allocate nor wait",
                           need, w ? " (the one this capture took is smaller)" : "");
            return SALE_ERR_INVALID;
        }
        w->captured = 1;
        w->capture = capture;
        w->in_use = 1;
        pthread_mutex_unlock(&ctx->ws_lock);
        *out = w;
        return SALE_OK;
    }
    ws_slot *idle = NULL;
    int n = 0;
    for (ws_slot *x = ctx->ws; x; x = x->next, n++) {
        if (x->cu != cu || x->captured || x->in_use)
            continue;
        if ((sid ? x->sid == sid : x->stream == stream) && (!w || x->bytes > w->bytes))
            w = x;
        else if (!idle || x->bytes > idle->bytes) {
            CUresult q = x->used ? d->EventQuery(x->done) : CUDA_SUCCESS;
            if (q == CUDA_SUCCESS)
                idle = x;
        }
    }
    if (!w || (w->bytes < need && idle && idle->bytes >= need))
        w = idle;
    if (w) {
        /* taken for its stream handle (the id unknown), not because it is idle */
        const int by_handle = w != idle && !sid;
        w->in_use = 1;
        w->sid = sid;
        pthread_mutex_unlock(&ctx->ws_lock);
        if (w->bytes >= need) {
            /* By handle, the slot's last use may be on another stream (see
             * above): it is waited for on the device (on one stream, a
             * dependency it already has); without it, two streams would
             * share a workspace, and the results would be wrong. By id, the
             * stream's order already holds. */
            CUresult r = by_handle && w->used ? d->StreamWaitEvent(stream, w->done, 0) : CUDA_SUCCESS;
            if (r != CUDA_SUCCESS) {
                pthread_mutex_lock(&ctx->ws_lock);
                w->in_use = 0;
                pthread_mutex_unlock(&ctx->ws_lock);
                sale_set_error(ctx, "cuStreamWaitEvent (the workspace's last use): %s", drv_errstr(r));
                return SALE_ERR_CUDA;
            }
            *out = w;
            return SALE_OK;
        }
        /* grow: wait for its last use, free, allocate */
        sale_logf(ctx, SALE_LOG_INFO, "sale_attention: growing a workspace from %zu to %zu bytes (waits for its last "
                                      "use)", w->bytes, need);
        CUresult r = w->used ? d->EventSynchronize(w->done) : CUDA_SUCCESS;
        if (r == CUDA_SUCCESS && w->ptr)
            r = d->MemFree(w->ptr);
        w->ptr = 0;
        w->bytes = 0;
        if (r == CUDA_SUCCESS)
            r = d->MemAlloc(&w->ptr, need);
        if (r != CUDA_SUCCESS) {
            w->ptr = 0;
            pthread_mutex_lock(&ctx->ws_lock);
            w->in_use = 0;
            pthread_mutex_unlock(&ctx->ws_lock);
            sale_set_error(ctx, "growing the workspace to %zu bytes: %s", need, drv_errstr(r));
            return SALE_ERR_CUDA;
        }
        w->bytes = need;
        w->zeroed = 0;
        *out = w;
        return SALE_OK;
    }
    pthread_mutex_unlock(&ctx->ws_lock);
    /* none free for this stream: a new one */
    sale_logf(ctx, SALE_LOG_INFO, "sale_attention: allocating a workspace of %zu bytes for stream %p (%d before it)",
              need, (void *)stream, n);
    w = calloc(1, sizeof *w);
    if (!w) {
        sale_set_error(ctx, "sale_attention: out of host memory");
        return SALE_ERR_NOMEM;
    }
    CUresult r = d->EventCreate(&w->done, CU_EVENT_DISABLE_TIMING);
    if (r == CUDA_SUCCESS)
        r = d->MemAlloc(&w->ptr, need);
    if (r != CUDA_SUCCESS) {
        if (w->done)
            d->EventDestroy(w->done);
        free(w);
        sale_set_error(ctx, "allocating %zu bytes of workspace: %s", need, drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    w->cu = cu;
    w->bytes = need;
    w->stream = stream;
    w->sid = sid;
    w->in_use = 1;
    pthread_mutex_lock(&ctx->ws_lock);
    w->next = ctx->ws;
    ctx->ws = w;
    pthread_mutex_unlock(&ctx->ws_lock);
    *out = w;
    return SALE_OK;
}

/* After the last launch that reads the workspace: mark where its use ends. */
static sale_status ws_release(sale_ctx *ctx, ws_slot *w, CUstream stream, int capturing)
{
    if (!w)
        return SALE_OK;
    CUresult r = CUDA_SUCCESS;
    /* an event recorded inside a capture may never be queried: captured
     * workspaces are never looked at again, so none is recorded */
    if (!capturing)
        r = drv_get(NULL)->EventRecord(w->done, stream);
    pthread_mutex_lock(&ctx->ws_lock);
    if (r == CUDA_SUCCESS && !capturing)
        w->used = 1;
    if (r != CUDA_SUCCESS) {
        /* without the event nobody can tell when it is idle: out of reuse
         * for good, in the same locked step that frees it (between two
         * steps another thread could take it while this call's kernels run) */
        w->captured = 1;
        w->capture = ~0ull;
    }
    w->stream = stream;
    w->in_use = 0;
    pthread_mutex_unlock(&ctx->ws_lock);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuEventRecord after sale_attention: %s", drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    return SALE_OK;
}

/* ------------------------------------------------------------- the pipeline */

/* One TMA map of a [B, H, N, D] operand with element strides (sb, sh, sn):
 * rank 4 (d, row, head, batch), boxes of 64 columns x `rows` rows, 128-byte
 * swizzle, rows past N read as zeros. */
static sale_status tma_map(sale_ctx *ctx, sale_tmap *m, const char *what, sale_u64 ptr, int dtype, int B, int H, int N,
                           int D, int64_t sb, int64_t sh, int64_t sn, int rows)
{
    const drv_api *d = drv_get(NULL);
    cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)N, (cuuint64_t)H, (cuuint64_t)B};
    /* strides of dims 1..3 in bytes; a dimension of extent 1 may carry any stride, 16-byte aligned */
    cuuint64_t strides[3] = {(cuuint64_t)sn * 2, (cuuint64_t)(H > 1 ? sh : sn * N) * 2,
                             (cuuint64_t)(B > 1 ? sb : sn * N * H) * 2};
    cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1}, es[4] = {1, 1, 1, 1};
    CUresult r = d->TensorMapEncodeTiled((CUtensorMap *)m, dtype == SALE_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                                    : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                                         4, (void *)(uintptr_t)ptr, dims, strides, box, es,
                                         CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                         CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuTensorMapEncodeTiled (%s: strides %lld, %lld, %lld elements): %s", what, (long long)sn,
                       (long long)sh, (long long)sb, drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    return SALE_OK;
}

/* The TMA map of 8-bit codes [slices, N, 128 bytes] (contiguous, written by
 * quantize): rank 3, boxes of `rows` rows x 128 bytes, 128-byte swizzle, rows
 * past N read as zeros: the wgmma estimation's operands (wgmma_est.cuh), key
 * codes (slices B * Hkv, 128-row boxes) and query codes (B * Hq, 64). */
static sale_status code_map(sale_ctx *ctx, sale_tmap *m, const char *what, sale_u64 ptr, int slices, int N, int rows)
{
    const drv_api *d = drv_get(NULL);
    cuuint64_t dims[3] = {128, (cuuint64_t)N, (cuuint64_t)slices};
    cuuint64_t strides[2] = {128, (cuuint64_t)N * 128};
    cuuint32_t box[3] = {128, (cuuint32_t)rows, 1}, es[3] = {1, 1, 1};
    CUresult r = d->TensorMapEncodeTiled((CUtensorMap *)m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, (void *)(uintptr_t)ptr,
                                         dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                         CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                         CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuTensorMapEncodeTiled (%s codes, %d x %d rows): %s", what, slices, N, drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    return SALE_OK;
}

/* the device's SM count, read once per device ordinal (0 where the driver
 * does not say: the rows attend kernel then gets its whole grid, which is
 * correct, only not persistent; said once, remembered as -1) */
static int ctx_sm_count(sale_ctx *ctx, CUdevice dev)
{
    const int o = (int)dev;
    int v = 0;
    if (o < 0 || o >= CTX_MAX_DEVICES)
        return 0;
    pthread_mutex_lock(&ctx->lock);
    v = ctx->sm_count[o];
    pthread_mutex_unlock(&ctx->lock);
    if (v)
        return v > 0 ? v : 0;
    const drv_api *d = drv_get(NULL);
    CUresult r = d->DeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    if (r != CUDA_SUCCESS || v <= 0) {
        sale_logf(ctx, SALE_LOG_WARN, "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT): %s; the rows attend kernel "
                  "runs one CTA a row on device %d", r != CUDA_SUCCESS ? drv_errstr(r) : "no SMs", o);
        v = -1;
    }
    pthread_mutex_lock(&ctx->lock);
    ctx->sm_count[o] = v;
    pthread_mutex_unlock(&ctx->lock);
    return v > 0 ? v : 0;
}

/* sms: the device's SM count (0: unknown) */
static sale_status run_plan(sale_ctx *ctx, const kmod *k, const sale_attention_args *a, const sale_params *p,
                            int sms, void *stream)
{
    const sale_key *key = kmod_key(k); /* resolved at load: tiles and est_bits included */
    sale_layout_cfg lc = key_layout(key);
    sale_launch L[4];
    int n = sale_layout_plan(&lc, a->batch, a->heads_q, a->heads_kv, a->seq_len, L);
    if (n < 0) {
        char kt[256];
        sale_key_format(key, kt, sizeof kt);
        sale_set_error(ctx, "no launch plan for %s", kt);
        return SALE_ERR_UNSUPPORTED;
    }
    if (sale_layout_wgmma_select(&lc)) { /* the local launch, then the estimation with the codes' TMA map */
        sale_status s = sale_kernel_launch(ctx, (const sale_kernel *)k, L[0].entry, L[0].grid[0], L[0].grid[1],
                                           L[0].grid[2], L[0].block, L[0].smem, p, sizeof *p, stream);
        if (s)
            return s;
        sale_tma_params tp;
        memset(&tp, 0, sizeof tp);
        tp.p = *p;
        if ((s = code_map(ctx, &tp.tk, "key", p->kcode, p->B * p->Hkv, p->N, SALE_SE_KT)) ||
            (s = code_map(ctx, &tp.tq, "query", p->qcode, p->B * p->Hq, p->N, 64)))
            return s;
        return sale_kernel_launch(ctx, (const sale_kernel *)k, L[1].entry, L[1].grid[0], L[1].grid[1], L[1].grid[2],
                                  L[1].block, L[1].smem, &tp, sizeof tp, stream);
    }
    if (sale_layout_wgmma(&lc)) { /* the parameter block and the TMA maps of q, k, v */
        sale_tma_params tp;
        memset(&tp, 0, sizeof tp);
        tp.p = *p;
        sale_status s;
        /* rows per box: dense, a 128-row tile of Q, K and V; attend, a 64-row
         * query block (the CTA's two mask rows may be two heads) and one
         * 32-key block of K and V (its tiles are four kept blocks) */
        const int att = lc.family == SALE_LF_ATTEND, bn = att ? 32 : SALE_WG_TILE;
        if ((s = tma_map(ctx, &tp.tq, "q", p->q, (int)key->dtype, p->B, p->Hq, p->N, key->head_dim, p->q_sb, p->q_sh,
                         p->q_sn, att ? 64 : SALE_WG_TILE)) ||
            (s = tma_map(ctx, &tp.tk, "k", p->k, (int)key->dtype, p->B, p->Hkv, p->N, key->head_dim, p->k_sb, p->k_sh,
                         p->k_sn, bn)) ||
            (s = tma_map(ctx, &tp.tv, "v", p->v, (int)key->dtype, p->B, p->Hkv, p->N, key->head_dim, p->v_sb, p->v_sh,
                         p->v_sn, bn)))
            return s;
        if (sale_layout_wgmma_rows(&lc) &&
            ((s = tma_map(ctx, &tp.tk2, "k", p->k, (int)key->dtype, p->B, p->Hkv, p->N, key->head_dim, p->k_sb,
                          p->k_sh, p->k_sn, 64)) ||
             (s = tma_map(ctx, &tp.tv2, "v", p->v, (int)key->dtype, p->B, p->Hkv, p->N, key->head_dim, p->v_sb,
                          p->v_sh, p->v_sn, 64))))
            return s;
        /* the rows kernel stores O by TMA, a consumer warp's 16 rows a box
         * (wgmma_rows.cuh, store_staged; check_args has made O and its
         * strides 16-byte aligned, as the map needs) */
        if (sale_layout_wgmma_rows(&lc)) {
            if ((s = tma_map(ctx, &tp.to, "out", p->o, (int)key->dtype, p->B, p->Hq, p->N, key->head_dim, p->o_sb,
                             p->o_sh, p->o_sn, 16)))
                return s;
            tp.p.o_tma = 1;
        }
        /* the sm_90a attend kernels are persistent: two CTAs an SM (rows) or
         * one (two-row) take the work from a counter (any grid is correct:
         * wgmma_rows.cuh, wgmma_attn.cuh) */
        unsigned grid = L[0].grid[0];
        const int per_sm = sale_layout_persistent_per_sm(&lc);
        if (per_sm > 0 && sms > 0 && grid > (unsigned)per_sm * (unsigned)sms)
            grid = (unsigned)per_sm * (unsigned)sms;
        return sale_kernel_launch(ctx, (const sale_kernel *)k, L[0].entry, grid, L[0].grid[1], L[0].grid[2],
                                  L[0].block, L[0].smem, &tp, sizeof tp, stream);
    }
    for (int i = 0; i < n; i++) {
        sale_status s = sale_kernel_launch(ctx, (const sale_kernel *)k, L[i].entry, L[i].grid[0], L[i].grid[1],
                                           L[i].grid[2], L[i].block, L[i].smem, p, sizeof *p, stream);
        if (s)
            return s;
    }
    return SALE_OK;
}

/* Per-head thresholds of this call, into the parameter block (no copy, no
 * sync) or, past SALE_TAU_INLINE heads, into the workspace with memsets
 * queued on the stream (one per run of equal values; no host memory, so
 * legal under capture). */
static sale_status put_taus(sale_ctx *ctx, const sale_attention_args *a, sale_params *p, CUdeviceptr ws_tau,
                            CUstream stream)
{
    /* where per-head taus come from (args.tau, else the thresholds stored
     * for (args.model, args.layer), else tau_default) is thresholds_resolve's */
    if (a->heads_q <= SALE_TAU_INLINE) {
        p->tau = 0;
        return thresholds_resolve(ctx, a, p->tau_inline, NULL);
    }
    float *tau = malloc(sizeof(float) * (size_t)a->heads_q);
    if (!tau) {
        sale_set_error(ctx, "thresholds: out of host memory");
        return SALE_ERR_NOMEM;
    }
    sale_status st = thresholds_resolve(ctx, a, tau, NULL);
    const drv_api *d = drv_get(NULL);
    p->tau = (sale_u64)ws_tau;
    for (int h = 0; st == SALE_OK && h < a->heads_q;) {
        int e = h + 1;
        while (e < a->heads_q && tau[e] == tau[h])
            e++;
        unsigned bits;
        memcpy(&bits, &tau[h], sizeof bits);
        CUresult r = d->MemsetD32Async(ws_tau + (CUdeviceptr)h * 4, bits, (size_t)(e - h), stream);
        if (r != CUDA_SUCCESS) {
            sale_set_error(ctx, "writing the thresholds of heads %d..%d: %s", h, e - 1, drv_errstr(r));
            st = SALE_ERR_CUDA;
        }
        h = e;
    }
    free(tau);
    return st;
}

/* causal key blocks of one head: those at or below each query block's last row */
static int64_t causal_blocks(const sale_attention_args *a, int nqb)
{
    int64_t c = 0;
    for (int qb = 0; qb < nqb; qb++) {
        int64_t hi = (int64_t)qb * a->block_q + a->block_q;
        if (hi > a->seq_len)
            hi = a->seq_len;
        c += (hi - 1) / a->block_k + 1;
    }
    return c;
}

/* The host-side results the caller asked for; the only place that waits. */
static sale_status read_stats(sale_ctx *ctx, const sale_attention_args *a, const plan_sizes *s, int dense,
                              const sale_params *p, CUstream stream)
{
    const drv_api *d = drv_get(NULL);
    sale_stats *so = a->stats;
    double *per_head = so->density_per_head;
    memset(so, 0, sizeof *so);
    so->density_per_head = per_head;
    so->dense_fallback = dense && a->mode != SALE_MODE_DENSE;
    size_t nk = (size_t)a->batch * a->heads_q * s->nqb;
    int32_t *kept = dense ? NULL : malloc(nk * sizeof(int32_t));
    if (!dense && !kept) {
        sale_set_error(ctx, "reading statistics: out of host memory");
        return SALE_ERR_NOMEM;
    }
    CUresult r = kept ? d->MemcpyDtoHAsync(kept, (CUdeviceptr)p->kept, nk * sizeof(int32_t), stream) : CUDA_SUCCESS;
    if (r == CUDA_SUCCESS)
        r = d->StreamSynchronize(stream);
    if (r != CUDA_SUCCESS) {
        free(kept);
        sale_set_error(ctx, "reading statistics: %s", drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    const int64_t ch = causal_blocks(a, s->nqb);
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads_q; h++) {
            int64_t kh = kept ? 0 : ch;
            for (int qb = 0; kept && qb < s->nqb; qb++)
                kh += kept[((size_t)b * a->heads_q + h) * s->nqb + qb];
            so->kept_blocks += kh;
            so->causal_blocks += ch;
            if (per_head)
                per_head[b * a->heads_q + h] = ch ? (double)kh / (double)ch : 0;
        }
    so->density = so->causal_blocks ? (double)so->kept_blocks / (double)so->causal_blocks : 0;
    free(kept);
    return SALE_OK;
}

/* sale_attention after its arguments are checked; stored_tau: room for
 * heads_q floats, where the thresholds stored for (args.model, args.layer)
 * are read once and become the call's taus (put_taus reads them from a.tau) */
static sale_status attention_run(sale_ctx *ctx, const sale_attention_args *args, void *stream_, float *stored_tau);

sale_status sale_attention(sale_ctx *ctx, const sale_attention_args *args, void *stream_)
{
    sale_status st = check_args(ctx, args, 1);
    if (st)
        return st;
    float small[256], *stored = small;
    if (args->model && !args->tau && args->heads_q > 256 &&
        !(stored = malloc(sizeof(float) * (size_t)args->heads_q))) {
        sale_set_error(ctx, "thresholds: out of host memory");
        return SALE_ERR_NOMEM;
    }
    st = attention_run(ctx, args, stream_, stored);
    if (stored != small)
        free(stored);
    return st;
}

static sale_status attention_run(sale_ctx *ctx, const sale_attention_args *args, void *stream_, float *stored_tau)
{
    sale_status st;
    /* stored thresholds say which variant they hold for: thr 0 runs it,
     * another is refused (before a device is looked for, like bad keys) */
    int thr;
    const int use_stored = args->model && !args->tau && args->heads_q > 0;
    if ((st = thresholds_variant(ctx, args, &thr, use_stored ? stored_tau : NULL)) != SALE_OK)
        return st;
    CUstream stream = (CUstream)stream_;
    /* keys are validated before a device is looked for: a bad block size is INVALID, not NO_DEVICE */
    if ((st = check_keys_early(ctx, args)) != SALE_OK)
        return st;
    CUcontext cu;
    CUdevice dev;
    if (drv_ensure_context(ctx, &cu, &dev))
        return SALE_ERR_NO_DEVICE;
    const drv_api *d = drv_get(NULL);
    CUresult ar = CUDA_SUCCESS;
    int dev_arch = drv_device_arch(d, dev, &ar);
    if (ar != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuDeviceGetAttribute(compute capability): %s", drv_errstr(ar));
        return SALE_ERR_CUDA;
    }
    int arch = key_code_arch(dev_arch);
    if (!arch) {
        sale_set_error(ctx, "this device is sm_%d; sale's kernels target sm_80, sm_86, sm_89 and sm_90", dev_arch);
        return SALE_ERR_UNSUPPORTED;
    }
    unsigned long long capture = 0;
    int capturing = drv_capturing(ctx, stream, &capture);
    if (capturing < 0)
        return SALE_ERR_CUDA;
    if (capturing && (args->stats || args->phase_ms)) {
        sale_set_error(ctx, "%s: reading results on the host waits for the GPU, which a graph capture cannot do; "
                            "leave it NULL while capturing",
                       args->stats ? "stats" : "phase_ms");
        return SALE_ERR_INVALID;
    }
    sale_attention_args a = *args;
    a.thr = thr;
    if (use_stored)
        a.tau = stored_tau, a.model = NULL;
    apply_defaults(&a, arch, args->dense_below ? args->dense_below : win_dense_below(ctx, (int)dev));
    const int dense = is_dense_run(&a);

    /* keys (validated here: a bad block size is refused before any launch) */
    sale_key kq = make_key(&a, SALE_FAMILY_QUANTIZE, SALE_ARCH_CURRENT);
    sale_key kf = make_key(&a, main_family(&a), SALE_ARCH_CURRENT);
    char err[512];
    kq.arch = kf.arch = arch;
    /* on an sm_90 device at head_dim 128, dense and attend run sm_90a cubins:
     * the wgmma + TMA kernels (sale_key_run_arch, sale_layout_wgmma; the driver
     * must have cuTensorMapEncodeTiled) */
    const int tma = d->TensorMapEncodeTiled != NULL;
    /* tiles asked for that only the mma.sync dense kernel has (warps 2/4/8) keep it */
    if (dense && tma && (!kf.warps || kf.warps == SALE_WG_WARPS))
        kf.arch = sale_attention_arch(SALE_FAMILY_DENSE, a.head_dim, a.block_q, a.block_k, arch);
    /* two-pass with thr = fixed: the select is the wgmma estimation (sale_key_run_arch) */
    if (!dense && kf.family == SALE_FAMILY_SELECT && tma)
        kf.arch = sale_key_run_arch(&kf, arch);
    /* fused at head_dim 128, block_q 64, 4 warps: its attention half on wgmma
     * (sale_layout_fused_wg; cp.async loads, no TMA map) */
    if (!dense && kf.family == SALE_FAMILY_FUSED)
        kf.arch = sale_key_run_arch(&kf, arch);
    sale_key ka = make_key(&a, SALE_FAMILY_ATTEND,
                           tma ? sale_attention_arch(SALE_FAMILY_ATTEND, a.head_dim, a.block_q, a.block_k, arch) : arch);
    /* validated for the arch each runs on (tiles such as warps 12 exist only on sm_90a) */
    if (refuse_select_20(ctx, &kf)) /* e.g. thr 0 on a device whose default is run */
        return SALE_ERR_INVALID;
    if (sale_key_validate(&kf, err, sizeof err) || sale_key_validate(&kq, err, sizeof err) ||
        (!dense && a.mode == SALE_MODE_TWO_PASS && sale_key_validate(&ka, err, sizeof err))) {
        sale_set_error(ctx, "%s", err); /* a select key with warps 20 that is not sm_90a's left above */
        return SALE_ERR_INVALID;
    }

    /* kernels first (a compile or cache error stops us before any launch);
     * warm, each is one lookup in the loaded-kernel table. Open tiles take
     * the winner tuned for this device and this length bucket. */
    kmod *kern_q = NULL, *kern_f = NULL, *kern_a = NULL, *kern_a2 = NULL;
    int a_dflt = 0;
    if ((st = ctx_kernel(ctx, cu, dev, &kq, 0, &kern_q, NULL)))
        return st;
    if ((st = ctx_kernel(ctx, cu, dev, &kf, a.seq_len, &kern_f, NULL)))
        return st;
    if (!dense && a.mode == SALE_MODE_TWO_PASS && (st = ctx_kernel(ctx, cu, dev, &ka, a.seq_len, &kern_a, &a_dflt)))
        return st;
    /* above SALE_WR_PICK_MIN_N, default tiles after the wgmma select: both
     * persistent attend kernels, the device picks (sale_params.pick) */
    if (kern_a && a_dflt && a.seq_len > SALE_WR_PICK_MIN_N) {
        sale_layout_cfg fc = key_layout(kmod_key(kern_f)), ac = key_layout(kmod_key(kern_a));
        const int w = kmod_key(kern_a)->warps;
        if (sale_layout_wgmma_select(&fc) && sale_layout_persistent_per_sm(&ac) > 0 &&
            (w == SALE_WR_WARPS || w == SALE_WG_WARPS)) {
            sale_key k2 = *kmod_key(kern_a);
            k2.warps = w == SALE_WR_WARPS ? SALE_WG_WARPS : SALE_WR_WARPS;
            k2.stages = 0; /* that kernel's default */
            if ((st = ctx_kernel(ctx, cu, dev, &k2, a.seq_len, &kern_a2, NULL)))
                return st;
            sale_layout_cfg c2 = key_layout(kmod_key(kern_a2));
            if (sale_layout_persistent_per_sm(&c2) <= 0)
                kern_a2 = NULL; /* not reached: k2 is the other persistent kernel */
        }
    }
    if (dense)
        kern_q = NULL; /* only its key sizes the workspace */
    plan_sizes s;
    sale_key rq = *kmod_key(kern_q ? kern_q : kern_f);
    if (!kern_q) {
        rq = kq;
        if (sale_key_resolve(&rq, err, sizeof err)) {
            sale_set_error(ctx, "%s", err);
            return SALE_ERR_INVALID;
        }
    }
    sizes_of(&a, &rq, &s);

    /* workspace: the caller's, or one of the context's */
    unsigned char *ws = a.workspace;
    ws_slot *slot = NULL;
    if (ws && a.workspace_bytes < s.total) {
        sale_set_error(ctx, "workspace_bytes: %zu given, %zu needed (sale_attention_workspace_size)",
                       a.workspace_bytes, s.total);
        return SALE_ERR_INVALID;
    }
    if (!ws) {
        if ((st = ws_acquire(ctx, cu, stream, s.total, capturing, capture, &slot)))
            return st;
        ws = (unsigned char *)(uintptr_t)slot->ptr;
    }

    sale_params p;
    memset(&p, 0, sizeof p);
    p.q = (sale_u64)(uintptr_t)a.q;
    p.k = (sale_u64)(uintptr_t)a.k;
    p.v = (sale_u64)(uintptr_t)a.v;
    p.o = (sale_u64)(uintptr_t)a.out;
    fill_strides(&p.q_sb, &p.q_sh, &p.q_sn, a.q_stride, a.heads_q, a.seq_len, a.head_dim);
    fill_strides(&p.k_sb, &p.k_sh, &p.k_sn, a.k_stride, a.heads_kv, a.seq_len, a.head_dim);
    fill_strides(&p.v_sb, &p.v_sh, &p.v_sn, a.v_stride, a.heads_kv, a.seq_len, a.head_dim);
    fill_strides(&p.o_sb, &p.o_sh, &p.o_sn, a.o_stride, a.heads_q, a.seq_len, a.head_dim);
    size_t off = 0;
#define CARVE(field, n)                                                                                               \
    do {                                                                                                              \
        p.field = (sale_u64)(uintptr_t)(ws + off);                                                                    \
        off += (n);                                                                                                   \
    } while (0)
    CARVE(sync, s.sync);
    CARVE(pick, s.pick);
    CARVE(qcode, s.qcode);
    CARVE(kcode, s.kcode);
    CARVE(qscale, s.qscale);
    CARVE(kscale, s.kscale);
    CARVE(qmean, s.qmean);
    CARVE(kmean, s.kmean);
    CARVE(cterm, s.cterm);
    CARVE(tau, s.tau);
    CARVE(mask, s.mask);
    CARVE(kept, s.kept);
    CARVE(scratch, s.scratch);
    CARVE(kcent, s.kcent);
#undef CARVE
    if (a.mask)
        p.mask = (sale_u64)(uintptr_t)a.mask;
    else if (dense)
        p.mask = 0; /* the dense kernel writes a mask only when the caller wants one */
    p.lse = (sale_u64)(uintptr_t)a.lse;
    p.B = a.batch;
    p.Hq = a.heads_q;
    p.Hkv = a.heads_kv;
    p.N = a.seq_len;
    p.nqb = s.nqb;
    p.nkb = s.nkb;
    p.nkw = s.nkw;
    p.mask_bq = a.block_q;
    p.mask_bk = a.block_k;
    p.group = a.heads_q / a.heads_kv;
    p.scale = a.scale;
    p.scale_log2 = a.scale * 1.4426950408889634f;
    p.dense_heads_only = dense;
    if (slot && slot->zeroed > s.sync)
        slot->zeroed = s.sync; /* past its counters, this call writes (taus, codes, ...) */
    if ((st = put_taus(ctx, &a, &p, (CUdeviceptr)p.tau, stream)))
        goto release;
    if (!kern_a2)
        p.pick = 0; /* one attend kernel: it runs */
    else {
        p.pick_min = sale_layout_pick_min((unsigned long long)causal_blocks(&a, s.nqb) *
                                          (unsigned long long)a.batch * (unsigned long long)a.heads_q);
        CUresult rz = d->MemsetD32Async((CUdeviceptr)p.pick, 0, 2, stream);
        if (rz != CUDA_SUCCESS) {
            sale_set_error(ctx, "cuMemsetD32Async (the attend kernel choice): %s", drv_errstr(rz));
            st = SALE_ERR_CUDA;
            goto release;
        }
    }
    /* quantize's counters (s.sync bytes at offset 0; every launch leaves them
     * zero again): a caller's workspace, every call; one of ours, only when
     * its known-zero bytes do not cover them (new, grown, or a call of a shape
     * with fewer heads wrote other data there). Under capture, every call:
     * the graphs of one capture sequence share the workspace and may be
     * replayed in any order, after calls of any shape. */
    if (kern_q && (!slot || capturing || slot->zeroed < s.sync)) {
        CUresult rz = d->MemsetD32Async((CUdeviceptr)p.sync, 0, s.sync / 4, stream);
        if (rz != CUDA_SUCCESS) {
            sale_set_error(ctx, "cuMemsetD32Async (workspace counters): %s", drv_errstr(rz));
            st = SALE_ERR_CUDA;
            goto release;
        }
        if (slot)
            slot->zeroed = s.sync;
    }

    CUevent ev[4] = {0};
    CUresult r = CUDA_SUCCESS;
    if (a.phase_ms)
        for (int i = 0; i < 4; i++)
            if ((r = d->EventCreate(&ev[i], CU_EVENT_DEFAULT)) != CUDA_SUCCESS) {
                sale_set_error(ctx, "cuEventCreate: %s", drv_errstr(r));
                st = SALE_ERR_CUDA;
                goto events;
            }
#define MARK(i)                                                                                                       \
    do {                                                                                                              \
        if (ev[i] && (r = d->EventRecord(ev[i], stream)) != CUDA_SUCCESS) {                                           \
            sale_set_error(ctx, "cuEventRecord (phase_ms): %s", drv_errstr(r));                                      \
            st = SALE_ERR_CUDA;                                                                                       \
            goto events;                                                                                              \
        }                                                                                                             \
    } while (0)
    MARK(0);
    if (kern_q && (st = run_plan(ctx, kern_q, &a, &p, 0, stream)))
        goto events;
    MARK(1);
    /* Units (sale-algorithm.md): the estimate approximates q_i . (k_j - kmean),
     * so after quantize the exact pass of fused/select/attend/plain scores against
     * the centred keys K' that quantize wrote, and m_i, l_i and the threshold
     * t_i are in the estimate's units. Softmax is unchanged (q_i . kmean is
     * the same for every key of row i). Dense runs keep K. */
    sale_params pc = p;
    if (kern_q) {
        pc.k = p.kcent;
        fill_strides(&pc.k_sb, &pc.k_sh, &pc.k_sn, (const int64_t[3]){0, 0, 0}, a.heads_kv, a.seq_len, a.head_dim);
    }
    if ((st = run_plan(ctx, kern_f, &a, &pc, 0, stream)))
        goto events;
    MARK(2);
    if (kern_a && (st = run_plan(ctx, kern_a, &a, &pc, ctx_sm_count(ctx, dev), stream)))
        goto events;
    if (kern_a2 && (st = run_plan(ctx, kern_a2, &a, &pc, ctx_sm_count(ctx, dev), stream)))
        goto events;
    /* the log-sum-exp back in the caller's units (scores against K) */
    if (kern_q && a.lse &&
        (st = sale_kernel_launch(ctx, (const sale_kernel *)kern_q, "sale_quantize_lse_kernel",
                                 (unsigned)((a.seq_len + SALE_QZ_QROWS - 1) / SALE_QZ_QROWS), (unsigned)a.heads_q,
                                 (unsigned)a.batch, SALE_QZ_THREADS, 0, &p, sizeof p, stream)))
        goto events;
    MARK(3);
#undef MARK
    if (ev[3]) {
        r = d->EventSynchronize(ev[3]);
        if (r != CUDA_SUCCESS) {
            sale_set_error(ctx, "sale_attention: a kernel failed: %s", drv_errstr(r));
            st = SALE_ERR_CUDA;
            goto events;
        }
        for (int i = 0; i < 3; i++)
            if ((r = d->EventElapsedTime(&a.phase_ms[i], ev[i], ev[i + 1])) != CUDA_SUCCESS) {
                sale_set_error(ctx, "cuEventElapsedTime (phase_ms): %s", drv_errstr(r));
                st = SALE_ERR_CUDA;
                goto events;
            }
    }
    if (a.stats)
        st = read_stats(ctx, &a, &s, dense, &p, stream);
events:
    for (int i = 0; i < 4; i++)
        if (ev[i])
            d->EventDestroy(ev[i]);
release:;
    sale_status rs = ws_release(ctx, slot, stream, capturing);
    return st ? st : rs;
}
