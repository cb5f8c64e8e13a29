/* internal.h — what the library's modules share: the context, error and log
 * helpers, the lazily opened driver, NVRTC and template access. Not public. */
#ifndef SALE_INTERNAL_H
#define SALE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "db.h"
#include "drv.h"
#include "sale.h"
#include "sale_layout.h"

/* Error convention (one for the whole library):
 *  - a function that has a sale_ctx returns sale_status (SALE_OK = 0) and,
 *    before returning anything else, sets the reason with sale_set_error;
 *    a lookup that can miss returns int: 1 found, 0 not found, -1 error
 *    (message set) — win_lookup, ctx_kt_find's callers;
 *  - the layers under the context (db_, jit_, key_, tpl_) know no sale_ctx:
 *    they return 0 / -1 (or 1 / 0 / -1 for lookups) and fill a caller's
 *    `char *err, size_t errlen`; the caller that owns the ctx turns that
 *    into sale_set_error + a sale_status (SALE_ERR_CACHE for db_).
 * Error messages are per thread (see sale_last_error in sale.h). */

typedef struct kmod kmod;         /* a module loaded in one CUDA context (ctx.c) */
typedef struct kt_slot kt_slot;   /* the loaded-kernel table (ctx.c) */
typedef struct win_memo win_memo; /* remembered winner lookups (winners.c) */
typedef struct ws_slot ws_slot;   /* attention workspaces (attention.c) */
typedef struct err_token err_token; /* names a context in the threads' error tables (ctx.c) */

#define CTX_MAX_DEVICES 64

struct sale_ctx {
    err_token *err_tok; /* this context in every thread's error table; outlives it while a table holds it */
    char create_err[768]; /* why sale_create failed (then db is NULL and only sale_destroy is valid) */
    sale_options opts;
    char cache_path[1024];
    char fleet_path[1024];
    db *db;
    pthread_mutex_t lock; /* guards db, modules, the kernel table, the winner memo */
    kmod *modules;        /* every module loaded, in any CUDA context */
    kt_slot *kt;          /* (CUcontext, requested key, length bucket) -> module */
    size_t kt_cap, kt_used;
    unsigned win_gen;     /* bumped by win_save: table entries of open tiles made before it are stale */
    win_memo *memo;       /* winner lookups, including "none" */
    int dense_below[CTX_MAX_DEVICES]; /* per device ordinal: 0 unknown, else the stored or default value */
    int sm_count[CTX_MAX_DEVICES];    /* per device ordinal: 0 unknown, -1 the driver did not say (the rows attend kernel's grid) */
    pthread_mutex_t ws_lock; /* guards ws */
    ws_slot *ws;          /* sale_attention's device workspaces, one in use per stream at a time */
    struct cfg_threshold *cfg_thresholds; /* the config's `thresholds` section (copy), or NULL */
    int n_cfg_thresholds;
    struct th_memo *thm;  /* per-head taus of (model, layer) already read for attention calls */
    int thm_n, thm_next;
    unsigned th_gen;      /* bumped whenever this context stores or imports thresholds */
    /* kernels this process is compiling now (compile_row), under lock: a
     * thread that misses one of them waits for it (compile_cv) instead of
     * compiling it again (the cache's claim counts our own pid as ours) */
    struct compiling *compiling;
    pthread_cond_t compile_cv;
};

/* Set the calling thread's error message for ctx; ctx may be NULL. */
/* sale_reference_attention, and (near: the mask's layout, may be NULL) the
 * estimated blocks whose decision margin, max (ŝ_ij - t_i) / (1 + |t_i|), is
 * within band of 0: where a GPU's own rounding of t_i may decide either way */
sale_status sale_reference_attention_near(sale_ctx *ctx, const sale_attention_args *a, uint32_t *near, float band);
void sale_set_error(sale_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sale_logf(sale_ctx *ctx, sale_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* loaded kernels (ctx.c). ctx_kernel is sale_get_kernel with the length
 * bucket of the winner lookup (seq_len <= 0: any bucket) and the CUDA
 * context and device already known: a hit in the table is one hash lookup
 * under ctx->lock — no SQLite, no winner query, no key resolution. dflt
 * (may be NULL): set to 1 when the key's warps were open and the default took
 * them (no tuned winner; sale_attention then may pick its attend kernel on
 * the device), else 0. */
sale_status ctx_kernel(sale_ctx *ctx, CUcontext cu, CUdevice dev, const sale_key *key, int seq_len, kmod **out,
                       int *dflt);
/* The fully resolved key the module was built from (tiles included). */
const sale_key *kmod_key(const kmod *m);
/* The table itself, exposed for tests: find returns the module or NULL;
 * put inserts or refreshes; both expect ctx->lock held. */
/* dflt: the request's warps were open and the default took them (no tuned winner) */
kmod *ctx_kt_find(sale_ctx *ctx, CUcontext cu, const sale_key *req, int bucket, int *dflt);
int ctx_kt_put(sale_ctx *ctx, CUcontext cu, const sale_key *req, int bucket, kmod *m, int dflt);

/* stored winners (winners.c): below the context, above db. The tuner
 * (tuner/) searches; these store and serve, with a memo per (device, open
 * key, length bucket), "no winner" included. */
int win_bucket_n(int seq_len); /* power of two >= seq_len (1 << 30 at most) */
int win_bucket(int seq_len, char *buf, size_t len); /* "n=65536"; 0, or -1 */
/* Algorithm fields resolved for key->arch (else arch), tiles open. */
sale_status win_open_key(const sale_key *key, int arch, sale_key *out, char *err, size_t errlen);
sale_status win_save(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open_key, int seq_len,
                     const sale_key *winner, double ms, double spread_pct, int tried);
/* 1 found (out = key with open tiles taken from the winner), 0 none (out = key), -1 error. */
int win_lookup(sale_ctx *ctx, const sale_device_info *dev, const sale_key *key, int seq_len, sale_key *out);
/* dense_below: the per-arch default (one table), and the value measured on
 * this device by `sale tune --dense-below`, stored as a winner row with key
 * WIN_DENSE_BELOW_KEY. win_dense_below gives the stored value, else the
 * default, memoized per device ordinal. */
#define WIN_DENSE_BELOW_KEY "dense_below"
int win_dense_below_default(int code_arch);
sale_status win_dense_below_save(sale_ctx *ctx, const sale_device_info *dev, int dense_below, double ms);
int win_dense_below(sale_ctx *ctx, int ordinal);
void win_memo_free(sale_ctx *ctx);

/* attention workspaces (attention.c) */
void ws_free_all(sale_ctx *ctx);

/* thresholds (thresholds.c) */
/* The per-head taus of one attention call into tau_out[heads_q]: a->tau, else
 * the thresholds stored for (a->model, a->layer) (needs ctx), else
 * a->tau_default (0: 0.004). SALE_ERR_NOT_FOUND names the missing head.
 * thr_out (may be NULL): the variant stored thresholds were calibrated with
 * (0: none recorded, or no stored thresholds); heads of one layer that
 * disagree are SALE_ERR_INVALID. */
sale_status thresholds_resolve(sale_ctx *ctx, const sale_attention_args *a, float *tau_out, int *thr_out);
/* The threshold variant a call runs (before the 0 -> device default): a->thr,
 * or, for stored thresholds that record one, their variant when a->thr is 0;
 * a->thr that is not the stored thresholds' variant is SALE_ERR_INVALID.
 * tau_out (may be NULL; else heads_q floats): where a call naming stored
 * thresholds (a->model, no a->tau) gets them, so that it need not resolve
 * them a second time; untouched otherwise. */
sale_status thresholds_variant(sale_ctx *ctx, const sale_attention_args *a, int *thr, float *tau_out);
/* Thresholds were stored or imported through this context: forget the memo
 * of thresholds_resolve (which reads each (model, layer) once per context). */
void thresholds_changed(sale_ctx *ctx);
void thresholds_memo_free(sale_ctx *ctx);
/* thresholds_attach_config (the config's thresholds into a context) is
 * declared in config.h, beside the config it comes from. */

/* keys (key.c) */
int key_family_uses(sale_family f, const char *field); /* does this field change the family's code? */
int key_default_est_bits(int arch);
/* Fill open algorithm fields with the documented defaults (tiles untouched). */
void key_fill_algorithm(sale_key *k);
/* The architecture whose cubins run on a device of compute capability
 * dev_arch (80..85 -> 80, 86..88 -> 86, 89, 90); 0 if sale has none. */
int key_code_arch(int dev_arch);
/* the layout configuration of a key (templates/sale_layout.h), every field */
sale_layout_cfg key_layout(const sale_key *k);


/* Run worker(arg) on up to min(cores, max_threads, ntask) threads, the
 * caller's included, and wait for all (par.c). Workers take their tasks
 * from a counter of their own, so the result does not depend on the count. */
void par_run(int ntask, int max_threads, void *(*worker)(void *), void *arg);
/* A [B, H, N, D] tensor's strides st (elements; 0: contiguous below, as the
 * API says) resolved into s = {batch, head, row}: 0, or -1 when a resolved
 * stride or the offset past the tensor's last element, in bytes of `elem`,
 * does not fit int64 (reference.c; the reference and sale_attention check
 * their arguments with it). */
int strides_resolve(const int64_t st[3], int B, int H, int N, int D, int elem, int64_t s[3]);
/* Whether thr is a threshold variant this library knows: 0 (open in a key,
 * the device's default in a call, not recorded in stored thresholds), run or
 * fixed (the values sale_thr_name names). */
static inline int thr_known(int thr)
{
    return sale_thr_name(thr) != NULL;
}
/* Copy a tuned winner's tiles into the fields of k that are still open. */
void key_take_tiles(sale_key *k, const sale_key *tuned);
/* Open warps of k as sale_attention's default for a call of seq_len (> 0)
 * tokens: on sm_90a attend the rows kernel (SALE_WR_WARPS) up to the 128K
 * bucket (sale_layout_rows_default); otherwise left open for
 * sale_key_resolve. ctx_kernel runs it and the tuner times it as the
 * default. */
void key_length_default_warps(sale_key *k, int seq_len);

/* host fp16/bf16/f32 element access (halfconv.c) */
float half_load(const void *base, sale_dtype dt, size_t idx);
void half_store(void *base, sale_dtype dt, size_t idx, float x);

/* templates (template.c) */
typedef struct tpl_file {
    const char *name;
    const char *text;
    size_t len;
} tpl_file;
const tpl_file *tpl_find(const char *name);
int tpl_count(void);
const tpl_file *tpl_at(int i);
/* The family's template file name ("fused.cu"). */
const char *tpl_family_file(sale_family f);
/* Generate the prelude for a resolved key into buf; returns length or -1. */
int tpl_prelude(const sale_key *key, char *buf, size_t buflen);

/* the longest seq_len sale_attention and the reference take (their checks) */
#define SALE_MAX_SEQ_LEN (1 << 30)

/* SALE_OK when ctx is usable for the call named what; else its error is
 * set (sale_create failed on it: the reason, and that only sale_destroy is
 * valid) and SALE_ERR_CACHE (SALE_ERR_INVALID for NULL) returned (ctx.c). */
sale_status ctx_ready(sale_ctx *ctx, const char *what);

/* jit (jit.c) */
typedef struct jit_result {
    unsigned char *cubin;
    size_t cubin_bytes;
    char *log; /* NVRTC + ptxas log (heap) */
    int registers, smem_static, spill_stores, spill_loads, stack;
    double compile_ms;
} jit_result;
/* Compile source (prelude + template) for arch with the embedded headers. */
sale_status jit_compile(const char *name, const char *source, int arch, char *const *opts_extra, jit_result *out,
                        char **errmsg);
void jit_result_free(jit_result *r);
/* The compile options for an arch, as one string (part of the hash). */
void jit_options_string(int arch, char *buf, size_t buflen);
int jit_nvrtc_version(void);
/* Hash of everything that changes the code of a resolved key. */
uint64_t jit_source_hash(const sale_key *key, const char *source);
/* Build the full source (prelude + template text) for a resolved key (heap). */
char *jit_build_source(const sale_key *key);
/* Parse ptxas -v lines of a log into r. */
void jit_parse_resources(const char *log, jit_result *r);
/* Registers, stack and static shared memory from the cubin's ELF sections
 * (for compiles whose log has no ptxas lines). 0, or -1 if unreadable. */
int jit_parse_cubin(const unsigned char *cubin, size_t n, jit_result *r);


#endif
