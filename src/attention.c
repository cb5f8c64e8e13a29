/* attention.c — sale_attention(): argument checks, the workspace, and the
 * pipeline of kernels (quantize, then fused | select+attend | dense) run on
 * device pointers and a stream, following each family's launch plan
 * (templates/sale_layout.h). */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sale_abi.h"
#include "sale_layout.h"
#include "tune.h"

#define ALIGN 256

static size_t up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

typedef struct plan_sizes {
    int nqb, nkb, nkw, bq, bk, seg, win, est;
    size_t qcode, kcode, qscale, kscale, qmean, kmean, cterm, tau, mask, kept, scratch, total;
} plan_sizes;

/* Defaults applied to a copy of the user's args. */
static void apply_defaults(sale_attention_args *a, int arch)
{
    if (!a->block_q) a->block_q = 64;
    if (!a->block_k) a->block_k = 32;
    if (!a->block_seg) a->block_seg = 128;
    if (!a->local_window) a->local_window = 128;
    if (!a->est_bits) a->est_bits = key_default_est_bits(arch);
    if (!a->tau_default) a->tau_default = 0.004f;
    if (!a->dense_below) a->dense_below = 1024;
    if (!a->scale) a->scale = 1.0f / sqrtf((float)a->head_dim);
}

static int is_dense_run(const sale_attention_args *a)
{
    return a->mode == SALE_MODE_DENSE || (a->dense_below > 0 && a->seq_len < a->dense_below);
}

static sale_key make_key(const sale_attention_args *a, sale_family f, int arch)
{
    sale_key k = sale_key_default(f);
    k.head_dim = a->head_dim;
    k.block_q = a->block_q;
    k.block_k = a->block_k;
    k.block_seg = a->block_seg;
    k.local_window = a->local_window;
    k.dtype = a->dtype;
    k.est_bits = a->est_bits;
    k.causal = 1;
    k.arch = arch;
    if (f != SALE_FAMILY_QUANTIZE) {
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
    sale_layout_cfg lc = {(int)qk->family, qk->head_dim, qk->block_q, qk->block_k, qk->block_seg, qk->local_window,
                          (int)qk->dtype, qk->est_bits, qk->warps ? qk->warps : 4, qk->stages ? qk->stages : 2,
                          qk->arch};
    s->scratch = up((size_t)sale_layout_scratch_bytes(&lc, a->batch, a->heads_q, a->heads_kv, a->seq_len));
    s->total = s->qcode + s->kcode + s->qscale + s->kscale + s->qmean + s->kmean + s->cterm + s->tau + s->mask +
               s->kept + s->scratch;
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
    if (a->block_q < 0 || a->block_k < 0 || a->block_seg < 0 || a->local_window < 0)
        BAD("block sizes: must be >= 0 (0 for the default)");
    if (a->head_dim == 256)
        BAD("head_dim: 256 is not supported by these kernels (shared memory); use 64 or 128");
    if (a->head_dim != 64 && a->head_dim != 128)
        BAD("head_dim: must be 64 or 128, got %d", a->head_dim);
    if (a->dtype != SALE_DTYPE_F16 && a->dtype != SALE_DTYPE_BF16)
        BAD("dtype: sale_attention takes f16 or bf16");
    if ((unsigned)a->mode > SALE_MODE_DENSE)
        BAD("mode: unknown mode %d", (int)a->mode);
    if (!stride_ok(a->q_stride, a->head_dim, need_ptrs ? a->q : NULL) ||
        !stride_ok(a->k_stride, a->head_dim, need_ptrs ? a->k : NULL) ||
        !stride_ok(a->v_stride, a->head_dim, need_ptrs ? a->v : NULL) ||
        !stride_ok(a->o_stride, a->head_dim, need_ptrs ? a->out : NULL))
        BAD("strides: every stride must be a multiple of 8 elements (16 bytes), a row stride >= head_dim, and "
            "q/k/v/out 16-byte aligned");
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
    if (st)
        return st;
    sale_attention_args a = *args;
    apply_defaults(&a, 90);
    sale_key qk = make_key(&a, SALE_FAMILY_QUANTIZE, 90);
    plan_sizes s;
    sizes_of(&a, &qk, &s);
    *bytes = s.total;
    return SALE_OK;
}

static sale_status run_plan(sale_ctx *ctx, const sale_kernel *k, const sale_key *key, const sale_attention_args *a,
                            const sale_params *p, void *stream)
{
    sale_kernel_info info;
    sale_kernel_get_info(k, &info);
    sale_layout_cfg lc = {(int)key->family, key->head_dim, key->block_q, key->block_k, key->block_seg,
                          key->local_window, (int)key->dtype, key->est_bits, 0, 0, key->arch};
    /* tiles as the kernel was resolved: parse them back from its key */
    sale_key rk;
    if (sale_key_parse(info.key, &rk, NULL, 0) == SALE_OK) {
        lc.warps = rk.warps;
        lc.stages = rk.stages;
        lc.est_bits = rk.est_bits ? rk.est_bits : lc.est_bits;
    }
    sale_launch L[4];
    int n = sale_layout_plan(&lc, a->batch, a->heads_q, a->heads_kv, a->seq_len, L);
    if (n < 0) {
        sale_set_error(ctx, "no launch plan for %s", info.key);
        return SALE_ERR_UNSUPPORTED;
    }
    for (int i = 0; i < n; i++) {
        sale_status s = sale_kernel_launch(ctx, k, L[i].entry, L[i].grid[0], L[i].grid[1], L[i].grid[2], L[i].block,
                                           L[i].smem, p, sizeof *p, stream);
        if (s)
            return s;
    }
    return SALE_OK;
}

sale_status sale_attention(sale_ctx *ctx, const sale_attention_args *args, void *stream)
{
    sale_status st = check_args(ctx, args, 1);
    if (st)
        return st;
    {
        /* keys are validated before a device is looked for: a bad block size is INVALID, not NO_DEVICE */
        sale_attention_args a0 = *args;
        apply_defaults(&a0, 90);
        sale_key k0 = make_key(&a0, is_dense_run(&a0) ? SALE_FAMILY_DENSE : SALE_FAMILY_FUSED, SALE_ARCH_CURRENT);
        sale_key q0 = make_key(&a0, SALE_FAMILY_QUANTIZE, SALE_ARCH_CURRENT);
        char e0[512];
        if (sale_key_validate(&k0, e0, sizeof e0) || sale_key_validate(&q0, e0, sizeof e0)) {
            sale_set_error(ctx, "%s", e0);
            return SALE_ERR_INVALID;
        }
    }
    CUcontext cu;
    CUdevice dev;
    if (drv_ensure_context(ctx, &cu, &dev))
        return SALE_ERR_NO_DEVICE;
    const drv_api *d = drv_get(NULL);
    int arch = key_code_arch(drv_device_arch(d, dev));
    if (!arch) {
        sale_set_error(ctx, "this device is sm_%d; sale's kernels target sm_80, sm_86, sm_89 and sm_90",
                       drv_device_arch(d, dev));
        return SALE_ERR_UNSUPPORTED;
    }
    sale_attention_args a = *args;
    apply_defaults(&a, arch);
    const int dense = is_dense_run(&a);

    /* keys (validated here: a bad block size is refused before any launch) */
    sale_key kq = make_key(&a, SALE_FAMILY_QUANTIZE, SALE_ARCH_CURRENT);
    sale_key kf = make_key(&a, dense ? SALE_FAMILY_DENSE
                               : a.mode == SALE_MODE_TWO_PASS ? SALE_FAMILY_SELECT : SALE_FAMILY_FUSED,
                           SALE_ARCH_CURRENT);
    char err[512];
    if (sale_key_validate(&kf, err, sizeof err) || sale_key_validate(&kq, err, sizeof err)) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_INVALID;
    }
    kq.arch = kf.arch = arch;
    sale_key ra = make_key(&a, SALE_FAMILY_ATTEND, kf.arch);
    if (!a.tile_warps || !a.tile_stages) {
        /* the winner tuned for this device and this problem-size bucket */
        sale_device_info di;
        sale_key tuned;
        if (sale_device_info_get(ctx, (int)dev, &di) == SALE_OK) {
            if (tune_lookup(ctx, &di, &kf, a.seq_len, &tuned) == 1)
                key_take_tiles(&kf, &tuned);
            if (!dense && a.mode == SALE_MODE_TWO_PASS && tune_lookup(ctx, &di, &ra, a.seq_len, &tuned) == 1)
                key_take_tiles(&ra, &tuned);
        }
    }
    sale_key rq = kq;
    if (sale_key_resolve(&rq, err, sizeof err)) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_INVALID;
    }
    plan_sizes s;
    sizes_of(&a, &rq, &s);

    /* workspace: the caller's, or the context's (grown on demand) */
    unsigned char *ws = a.workspace;
    if (ws && a.workspace_bytes < s.total) {
        sale_set_error(ctx, "workspace_bytes: %zu given, %zu needed (sale_attention_workspace_size)",
                       a.workspace_bytes, s.total);
        return SALE_ERR_INVALID;
    }
    if (!ws) {
        if (ctx->ws_bytes < s.total) {
            if (ctx->ws) {
                d->StreamSynchronize((CUstream)stream);
                d->MemFree((CUdeviceptr)(uintptr_t)ctx->ws);
                ctx->ws = NULL;
                ctx->ws_bytes = 0;
            }
            CUdeviceptr p;
            CUresult r = d->MemAlloc(&p, s.total);
            if (r != CUDA_SUCCESS) {
                sale_set_error(ctx, "allocating %zu bytes of workspace: %s", s.total, drv_errstr(r));
                return SALE_ERR_CUDA;
            }
            ctx->ws = (void *)(uintptr_t)p;
            ctx->ws_bytes = s.total;
        }
        ws = ctx->ws;
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
#undef CARVE
    if (a.mask)
        p.mask = (sale_u64)(uintptr_t)a.mask;
    p.lse = (sale_u64)(uintptr_t)a.lse;
    p.B = a.batch;
    p.Hq = a.heads_q;
    p.Hkv = a.heads_kv;
    p.N = a.seq_len;
    p.nqb = s.nqb;
    p.nkb = s.nkb;
    p.nkw = s.nkw;
    p.group = a.heads_q / a.heads_kv;
    p.scale = a.scale;
    p.scale_log2 = a.scale * 1.4426950408889634f;
    p.dense_heads_only = dense;

    float *taus = malloc(sizeof(float) * (size_t)a.heads_q);
    if (!taus)
        return SALE_ERR_NOMEM;
    for (int h = 0; h < a.heads_q; h++)
        taus[h] = a.tau ? a.tau[h] : a.tau_default;
    CUresult r = d->MemcpyHtoDAsync((CUdeviceptr)p.tau, taus, sizeof(float) * (size_t)a.heads_q, (CUstream)stream);
    if (r == CUDA_SUCCESS)
        r = d->StreamSynchronize((CUstream)stream); /* taus is a pageable local buffer */
    free(taus);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "uploading thresholds: %s", drv_errstr(r));
        return SALE_ERR_CUDA;
    }

    /* kernels first (a compile or cache error stops us before any launch) */
    sale_kernel *kern_q = NULL, *kern_f = NULL, *kern_a = NULL;
    sale_key rf = kf;
    if (!dense && (st = sale_get_kernel(ctx, &kq, &kern_q)))
        return st;
    if ((st = sale_get_kernel(ctx, &kf, &kern_f)))
        return st;
    if (!dense && a.mode == SALE_MODE_TWO_PASS && (st = sale_get_kernel(ctx, &ra, &kern_a)))
        return st;
    sale_key_resolve(&rf, NULL, 0);
    sale_key_resolve(&ra, NULL, 0);

    CUevent ev[4] = {0};
    if (a.phase_ms)
        for (int i = 0; i < 4; i++)
            if ((r = d->EventCreate(&ev[i], CU_EVENT_DEFAULT)) != CUDA_SUCCESS) {
                sale_set_error(ctx, "cuEventCreate: %s", drv_errstr(r));
                return SALE_ERR_CUDA;
            }
    if (ev[0])
        d->EventRecord(ev[0], (CUstream)stream);
    if (kern_q && (st = run_plan(ctx, kern_q, &rq, &a, &p, stream)))
        goto events;
    if (ev[1])
        d->EventRecord(ev[1], (CUstream)stream);
    if ((st = run_plan(ctx, kern_f, &rf, &a, &p, stream)))
        goto events;
    if (ev[2])
        d->EventRecord(ev[2], (CUstream)stream);
    if (kern_a && (st = run_plan(ctx, kern_a, &ra, &a, &p, stream)))
        goto events;
    if (ev[3]) {
        d->EventRecord(ev[3], (CUstream)stream);
        r = d->EventSynchronize(ev[3]);
        if (r != CUDA_SUCCESS) {
            sale_set_error(ctx, "sale_attention: a kernel failed: %s", drv_errstr(r));
            st = SALE_ERR_CUDA;
            goto events;
        }
        for (int i = 0; i < 3; i++)
            d->EventElapsedTime(&a.phase_ms[i], ev[i], ev[i + 1]);
    }
events:
    for (int i = 0; i < 4; i++)
        if (ev[i])
            d->EventDestroy(ev[i]);
    if (st)
        return st;

    if (dense && a.mask) {
        /* a dense run keeps every causal block: say so in the mask the caller asked for */
        size_t words = (size_t)a.batch * a.heads_q * s.nqb * s.nkw;
        uint32_t *m = calloc(words, sizeof *m);
        if (!m)
            return SALE_ERR_NOMEM;
        for (size_t row = 0; row < (size_t)a.batch * a.heads_q * s.nqb; row++) {
            int qb = (int)(row % (size_t)s.nqb), hi = qb * a.block_q + a.block_q;
            int kb_hi = ((hi > a.seq_len ? a.seq_len : hi) - 1) / a.block_k;
            for (int J = 0; J <= kb_hi; J++)
                m[row * s.nkw + J / 32] |= 1u << (J % 32);
        }
        r = d->MemcpyHtoDAsync((CUdeviceptr)(uintptr_t)a.mask, m, words * 4, (CUstream)stream);
        if (r == CUDA_SUCCESS)
            r = d->StreamSynchronize((CUstream)stream);
        free(m);
        if (r != CUDA_SUCCESS) {
            sale_set_error(ctx, "writing the dense mask: %s", drv_errstr(r));
            return SALE_ERR_CUDA;
        }
    }
    if (a.stats) {
        sale_stats *so = a.stats;
        double *per_head = so->density_per_head;
        memset(so, 0, sizeof *so);
        so->density_per_head = per_head;
        so->dense_fallback = dense && a.mode != SALE_MODE_DENSE;
        size_t nk = (size_t)a.batch * a.heads_q * s.nqb;
        int32_t *kept = dense ? NULL : malloc(nk * sizeof(int32_t));
        if (!dense && !kept)
            return SALE_ERR_NOMEM;
        r = kept ? d->MemcpyDtoHAsync(kept, (CUdeviceptr)p.kept, nk * sizeof(int32_t), (CUstream)stream)
                 : CUDA_SUCCESS;
        if (r == CUDA_SUCCESS)
            r = d->StreamSynchronize((CUstream)stream);
        if (r != CUDA_SUCCESS) {
            free(kept);
            sale_set_error(ctx, "reading statistics: %s", drv_errstr(r));
            return SALE_ERR_CUDA;
        }
        for (int b = 0; b < a.batch; b++)
            for (int h = 0; h < a.heads_q; h++) {
                int64_t kh = 0, ch = 0;
                for (int qb = 0; qb < s.nqb; qb++) {
                    int hi = qb * a.block_q + a.block_q;
                    if (hi > a.seq_len)
                        hi = a.seq_len;
                    int64_t causal = (hi - 1) / a.block_k + 1;
                    ch += causal;
                    kh += kept ? kept[((size_t)b * a.heads_q + h) * s.nqb + qb] : causal;
                }
                so->kept_blocks += kh;
                so->causal_blocks += ch;
                if (per_head)
                    per_head[b * a.heads_q + h] = ch ? (double)kh / (double)ch : 0;
            }
        so->density = so->causal_blocks ? (double)so->kept_blocks / (double)so->causal_blocks : 0;
        free(kept);
    }
    return SALE_OK;
}
