/* sale.h — the one public header of libsale: SALE sparse attention kernels,
 * generated from templates, compiled with NVRTC, cached in SQLite, launched
 * through the CUDA Driver API. Every call returns a sale_status; the reason of
 * a failure is kept on the context (sale_last_error). Nothing here prints,
 * exits or aborts. */
#ifndef SALE_H
#define SALE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SALE_VERSION_MAJOR 0
#define SALE_VERSION_MINOR 1
#define SALE_VERSION_PATCH 0
#define SALE_VERSION_STRING "0.1.0"

typedef enum sale_status {
    SALE_OK = 0,
    SALE_ERR_INVALID,     /* bad argument or key: the message names the field */
    SALE_ERR_UNSUPPORTED, /* valid request this build/arch cannot serve      */
    SALE_ERR_COMPILE,     /* NVRTC failed: the message holds the compile log  */
    SALE_ERR_CACHE,       /* SQLite failed: the message holds sqlite's reason */
    SALE_ERR_NO_DEVICE,   /* no CUDA driver or no device                       */
    SALE_ERR_CUDA,        /* a CUDA Driver API call failed                     */
    SALE_ERR_NOMEM,       /* host allocation failed                            */
    SALE_ERR_IO,          /* file system error                                  */
    SALE_ERR_NOT_FOUND,   /* asked for something that does not exist           */
    SALE_ERR_LUA          /* Lua error: the message holds the traceback        */
} sale_status;

/* Short constant name of a status ("SALE_ERR_COMPILE"). */
const char *sale_status_name(sale_status s);

/* ------------------------------------------------------------------ keys */

typedef enum sale_family {
    SALE_FAMILY_QUANTIZE = 0, /* smoothing, low-bit codes, scales, c_j         */
    SALE_FAMILY_FUSED,        /* one-pass SALE: estimate + select + attend     */
    SALE_FAMILY_SELECT,       /* two-pass, first pass: kept-block bitmask      */
    SALE_FAMILY_ATTEND,       /* two-pass, second pass: block-sparse attention */
    SALE_FAMILY_DENSE,        /* flash attention over every causal block       */
    SALE_FAMILY_PLAIN,        /* version 0: estimate + select + attend as the
                                 algorithm page writes it, one thread per query
                                 row, no tensor cores; slow; never tuned      */
    SALE_FAMILY_COUNT
} sale_family;

typedef enum sale_dtype { SALE_DTYPE_F16 = 0, SALE_DTYPE_BF16 = 1, SALE_DTYPE_F32 = 2 } sale_dtype;

/* Architecture codes: 80, 86, 89, 90 (plain sm_90) and 901 (sm_90a).
 * SALE_ARCH_CURRENT means "the device of the current CUDA context". */
#define SALE_ARCH_CURRENT 0
#define SALE_ARCH_SM90A 901

/* Everything that makes one kernel different. A field is "open" when it
 * holds its open value, given for each field below: 0 for most, but -1 for
 * dtype (0 is SALE_DTYPE_F16) and causal (0 is refused). So a zero-filled
 * sale_key is not an open key: start from sale_key_default(family), which
 * sets every field to its open value. sale_key_resolve() fills open
 * algorithm fields with documented defaults (head_dim 128, block_q 64,
 * block_k 32, block_seg 128, local_window 128, bf16, causal 1, est_bits 4
 * below sm_90 and 8 on sm_90 and sm_90a, thr run) and open tile fields with
 * the family's default tiles; sale_get_kernel takes the device's tuned
 * winner for open tiles first. arch open (SALE_ARCH_CURRENT) is the current
 * device's, known when the kernel is loaded: sale_key_resolve and
 * sale_compile need a concrete arch. */
typedef struct sale_key {
    sale_family family;
    int head_dim;     /* 64, 128 (256: refused, shared memory); open: 0      */
    int block_q;      /* query rows per block: 64 or 128; open: 0           */
    int block_k;      /* key block granularity of selection: 16, 32, 64; open: 0 */
    int block_seg;    /* keys estimated together: a positive multiple of block_k, <= 32 blocks; open: 0 */
    int local_window; /* keys before the diagonal always computed: multiple of block_k; open: 0 */
    sale_dtype dtype; /* F16 or BF16; open: -1 (0 is F16)                   */
    int est_bits;     /* 4 or 8; open: 0 (the arch's native choice)         */
    int causal;       /* 1 (the only mode implemented: causal prefill); open: -1 (0 is refused) */
    int warps;        /* tile: warps per CTA; open: 0                       */
    int stages;       /* tile: pipeline stages for K/V tiles; open: 0       */
    int arch;         /* 80, 86, 89, 90, 901; open: 0 (SALE_ARCH_CURRENT: the current device) */
    int thr;          /* threshold variant, SALE_THR_*; open: 0 (SALE_THR_OPEN: resolves to run) */
} sale_key;

/* Threshold variants (algorithm page, step 3): when the per-row threshold
 * t_i = m_i + ln(tau * l_i) / scale of a query block is taken.
 *   SALE_THR_RUN   ("run", the default but on sm_90): from the running state at the start
 *                  of every segment, so t_i rises as the row's mass grows.
 *   SALE_THR_FIXED ("fixed", the authors' default kernel): once, from the
 *                  state after the local region and the sink (the first
 *                  segment's threshold), then kept for every segment.
 * m_i + ln(l_i) / scale is the row's running log-sum-exp (in raw-score
 * units), which never decreases as blocks are added; so the fixed threshold
 * is never above the running one and, for the same tau, fixed keeps a
 * superset of run's blocks (denser, closer to dense attention). Fixed needs
 * no exact pass between segments to know the next threshold, which is what
 * lets a selection estimate every segment at once (e.g. the sm_90a select on
 * wgmma, in one stream). In a key, 0 is open; in sale_attention_args, 0 is
 * the device's default (sale_attention_default_thr: fixed on sm_90, run
 * elsewhere; run in the CPU reference). Families that do not select (quantize, attend, dense)
 * ignore it. */
#define SALE_THR_OPEN 0
#define SALE_THR_RUN 1
#define SALE_THR_FIXED 2
/* "run" / "fixed" ("*" for open); NULL if unknown. */
const char *sale_thr_name(int thr);
/* Parse "run" / "fixed"; returns -1 if unknown. */
int sale_thr_parse(const char *text);

/* A key with every field open (dtype and causal -1, the others 0) except the
 * family. */
sale_key sale_key_default(sale_family family);

/* Canonical text form, e.g.
 *   "fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,qg=row.blk,causal=1,warps=4,stages=2,arch=sm_90,thr=run"
 * Open fields are written as "*" (e.g. "warps=*"). Fields a family does not
 * use are left out (sale_key_family_uses). Only valid keys are written: a
 * key that sale_key_validate refuses (arch 70, thr 7, dtype F32, a negative
 * size, causal 0, illegal tiles...) is SALE_ERR_INVALID with buf set to ""
 * (this function has no err buffer: sale_key_validate names the field and
 * the rule). Also SALE_ERR_INVALID if buf is too small (buf then holds the
 * text cut short). Text it writes parses back (sale_key_parse) to a key that
 * formats to the same text. */
sale_status sale_key_format(const sale_key *key, char *buf, size_t buflen);

/* Parse the text form. Fields may come in any order and may be omitted (they
 * stay open: text written before thr existed parses with thr open, which
 * resolves to run, the only behaviour then). On error, err receives
 * "field: reason". */
sale_status sale_key_parse(const char *text, sale_key *key, char *err, size_t errlen);

/* 1 when family f's code depends on the key field named field, else 0: the
 * field is dropped from f's keys, so keys that differ only there name one
 * kernel. It is 1 exactly for the fields sale_key_format writes for f.
 * field is a short or long name of the key text:
 *   "bq" / "block_q":          all but quantize
 *   "bk" / "block_k":          all but dense
 *   "seg" / "block_seg", "win" / "local_window", "thr" / "threshold":
 *                              fused, select, plain
 *   "est" / "est_bits", "qg":  fused, select, plain, quantize
 *   "causal":                  all but quantize
 *   "d" / "head_dim", "dt" / "dtype", "warps", "stages", "arch": every family.
 * NULL: 0; a name that is no field of the key text: 1. */
int sale_key_family_uses(sale_family f, const char *field);

/* Check every rule; open fields are allowed. err names the field and the rule. */
sale_status sale_key_validate(const sale_key *key, char *err, size_t errlen);

/* Fill open algorithm fields with defaults for key->arch (which must be set),
 * and open tile fields with the family's default tiles. */
sale_status sale_key_resolve(sale_key *key, char *err, size_t errlen);

/* Stable 64-bit hash of the canonical text (FNV-1a), defined for valid keys
 * (those sale_key_format writes): keys with one text hash alike. 0 for NULL
 * or a key sale_key_validate refuses. */
uint64_t sale_key_hash(const sale_key *key);

const char *sale_family_name(sale_family f);
const char *sale_dtype_name(sale_dtype d);
/* "sm_80" .. "sm_90a"; "current" for SALE_ARCH_CURRENT; NULL if unknown. */
const char *sale_arch_name(int arch);
/* Parse "sm_90a" / "90a" / "sm_86" / "current"; returns -1 if unknown. */
int sale_arch_parse(const char *text);
/* The architecture of the cubin sale_attention runs for `family` on a device
 * whose kernels are `arch` (80, 86, 89, 90): on sm_90, dense and attend at
 * head_dim 128 (attend with block_q 64, block_k 32) are the wgmma kernels,
 * and so is fused's attention half (block_q 64, block_k 32 or 64):
 * SALE_ARCH_SM90A; everything else, arch. What `sale prewarm` builds for a fleet. */
int sale_attention_arch(sale_family family, int head_dim, int block_q, int block_k, int arch);
/* The same for a whole key (open fields take their defaults): also select
 * with thr FIXED at head_dim 128, block_q 64, block_k 32, block_seg 128 and
 * 8-bit codes (warps open, 12 or 20), the wgmma estimation, and fused at
 * head_dim 128, block_q 64, block_k 32 or 64 (warps open or 4: its attention
 * half on wgmma), are SALE_ARCH_SM90A on sm_90. What sale_attention, `sale
 * prewarm` and `sale tune` use.
 * key NULL: arch. */
int sale_key_run_arch(const sale_key *key, int arch);
/* The kernels sale_attention runs for `key` on a device whose kernels are
 * key->arch (80, 86, 89, 90): the key on the arch it runs there
 * (sale_key_run_arch), with 8-bit codes on sm_90 (there is no 4-bit MMA
 * there), resolved; and for attend on sm_90a also its rows kernel (warps
 * SALE_WR_WARPS, the default up to 128K and the device's pick above),
 * where the block sizes allow one. Writes out[0] (and out[1]); returns how
 * many (1 or 2), or -1 with err filled for a key that cannot be resolved.
 * What `sale prewarm` and Python's sale.prewarm() build for a fleet. */
int sale_key_run_set(const sale_key *key, sale_key out[2], char *err, size_t errlen);

/* -------------------------------------------------------------- context */

typedef struct sale_ctx sale_ctx;

typedef enum sale_log_level { SALE_LOG_DEBUG = 0, SALE_LOG_INFO, SALE_LOG_WARN, SALE_LOG_ERROR } sale_log_level;
typedef void (*sale_log_fn)(void *user, sale_log_level level, const char *msg);

typedef struct sale_options {
    const char *cache_path; /* NULL: $SALE_CACHE_DIR/kernels.db, else $XDG_CACHE_HOME/sale/kernels.db,
                               else ~/.cache/sale/kernels.db; ":memory:" allowed */
    const char *fleet_path; /* optional read-only cache consulted under the writable one */
    sale_log_fn log;        /* warnings (e.g. a corrupt cache moved aside); NULL: silent. Called on
                               whichever thread is using the context, possibly on several at once
                               and while the context holds an internal lock: record the message,
                               do not call sale functions with this context from it */
    void *log_user;
    int tune_on_miss;       /* 1: sale_get_kernel may autotune an open key (slow) */
    int existing_only;      /* 1: open the cache file as it is, for tools that only look at it (sale ls,
                               verify, info, export): a missing file is an error (nothing created), and so
                               is a damaged one or one of a newer schema (left where it is, not moved aside
                               and rebuilt); an older schema is still migrated in place */
} sale_options;

/* Create a context. opts may be NULL. On failure *out may still hold a
 * context whose sale_last_error() says why (destroy it); it is NULL only
 * when memory ran out. */
sale_status sale_create(sale_ctx **out, const sale_options *opts);
void sale_destroy(sale_ctx *ctx);

/* The reason of the last failure of the calling thread on this context (""
 * if none). Messages are kept per thread: another thread's failure never
 * changes or frees the string this thread reads. Valid until this thread's
 * next call on the context.
 *
 * Thread safety: one context may be shared by any number of threads.
 * sale_compile, sale_get_kernel, sale_kernel_* , sale_attention,
 * sale_attention_workspace_size, sale_thresholds_*, sale_cache_*, sale_device_*
 * and sale_dev_* / sale_event_* may be called concurrently (the cache, the
 * loaded-kernel table and the workspaces are guarded inside). Concurrent
 * sale_attention calls must use different streams, or the same stream (then
 * they run in order); a caller-provided args.workspace must not be used by
 * two calls that may run at the same time. sale_create and sale_destroy are
 * not concurrent with anything on the same context. */
const char *sale_last_error(const sale_ctx *ctx);

/* Path of the writable cache file this context uses. */
const char *sale_cache_path(const sale_ctx *ctx);
/* Path of the read-only fleet file under it ("" when there is none). */
const char *sale_fleet_path(const sale_ctx *ctx);

/* --------------------------------------------------------------- kernels */

typedef struct sale_kernel_info {
    char key[256];      /* canonical key, resolved (no open fields) */
    char arch[16];      /* "sm_90" */
    char entry[64];     /* main entry point name */
    int registers;      /* per thread, from ptxas */
    int smem_static;    /* bytes of static shared memory, from ptxas */
    int smem_dynamic;   /* bytes of dynamic shared memory the launch needs */
    int spill_stores;   /* bytes, from ptxas */
    int spill_loads;    /* bytes, from ptxas */
    int stack;          /* stack frame bytes, from ptxas */
    int threads;        /* threads per CTA the kernel is written for */
    double compile_ms;  /* NVRTC time when it was compiled */
    size_t cubin_bytes;
    int from_cache;     /* 1 if this request was served from the cache */
    uint64_t src_hash;  /* hash of template text + prelude + options + NVRTC + library version */
} sale_kernel_info;

/* Make sure the cubin for a fully resolved key exists in the cache (compiling
 * it if needed). Needs no GPU. key->arch must not be SALE_ARCH_CURRENT. */
sale_status sale_compile(sale_ctx *ctx, const sale_key *key, sale_kernel_info *info);

typedef struct sale_kernel sale_kernel; /* owned by the context */

/* A ready-to-launch kernel for the current CUDA context's device. Open fields
 * are resolved (tuned winner, else default); arch may be SALE_ARCH_CURRENT.
 * Loads the module once per CUDA context; raises the dynamic shared memory
 * limit when the kernel needs more than 48 KB. The first request for a key
 * in a CUDA context reads the cache; every later one is a hash lookup in the
 * context's loaded-kernel table (no SQLite, no winner query, well under a
 * microsecond), until a new winner is stored for a key with open tiles.
 * info.from_cache describes the request that loaded the module. Returns
 * SALE_ERR_NO_DEVICE when there is no driver or device. */
sale_status sale_get_kernel(sale_ctx *ctx, const sale_key *key, sale_kernel **out);

/* Info of a loaded kernel. */
sale_status sale_kernel_get_info(const sale_kernel *k, sale_kernel_info *info);

/* The CUfunction of the main entry (or of `name` in the same module). */
void *sale_kernel_function(const sale_kernel *k);
sale_status sale_kernel_function_named(sale_ctx *ctx, const sale_kernel *k, const char *name, void **fn);

/* Launch an entry of the kernel's module (NULL: the main entry) with one
 * by-value parameter block (sale's kernels take a single struct, see
 * templates/sale_abi.h). block 0: the kernel's threads; smem (unsigned)-1:
 * the kernel's dynamic shared memory. Raises the >48 KB limit as needed,
 * never lowers it (threads launching one entry with different sizes are safe).
 * The sm_90a wgmma kernels (dense, attend, the thr=fixed estimation) take
 * sale_tma_params: the parameter block and TMA maps of their operands
 * (cuTensorMapEncodeTiled); leave p.o_tma 0 unless you encode `to` as
 * sale_attention does (the rows attend kernel then stores O through it). A dense
 * launch that writes a mask writes it in blocks of p.mask_bq x p.mask_bk (the
 * dense key fixes block_k; 0: the key's own). */
sale_status sale_kernel_launch(sale_ctx *ctx, const sale_kernel *k, const char *entry, unsigned grid_x,
                               unsigned grid_y, unsigned grid_z, unsigned block, unsigned smem, const void *params,
                               size_t params_size, void *stream);

/* Name of the index-th kernel template embedded in the library ("fused.cu"),
 * for index 0, 1, ...; NULL past the last. */
const char *sale_template_name(int index);

/* ------------------------------------------------------------- attention */

typedef enum sale_mode {
    SALE_MODE_FUSED = 0, /* one-pass SALE */
    SALE_MODE_TWO_PASS,  /* select (mask) then attend */
    SALE_MODE_DENSE,     /* our dense flash attention */
    SALE_MODE_PLAIN,     /* version 0: the algorithm as the algorithm page writes it, in one
                            plain kernel (quantize, then templates/plain.cu); slow; for
                            reading and for checking the fast kernels (same masks as the
                            CPU reference). Short inputs fall back to dense as in FUSED. */
    SALE_MODE_AUTO       /* the default of sale_attention_args_init: the SALE mode measured
                            fastest on the device's architecture: TWO_PASS on sm_90 (its
                            attend and the dense fallback are the wgmma kernels; fused is
                            slower than dense there), FUSED elsewhere (bench/RESULTS.md) */
} sale_mode;

typedef struct sale_stats {
    int64_t kept_blocks;   /* kept (query block, key block) pairs */
    int64_t causal_blocks; /* all causal pairs */
    double density;        /* kept / causal */
    int dense_fallback;    /* 1: input shorter than dense_below, ran dense */
    double *density_per_head; /* optional, caller-owned [batch * heads_q] */
} sale_stats;

/* Arguments of one attention call. Tensors are [B, H, N, D] with the last
 * dimension contiguous; strides are in elements (0: contiguous). For
 * sale_attention() pointers are device pointers; for
 * sale_reference_attention() they are host pointers. */
typedef struct sale_attention_args {
    int batch, heads_q, heads_kv, seq_len, head_dim; /* seq_len at most 2^30 */
    sale_dtype dtype; /* F16 or BF16 (the reference also takes F32) */
    const void *q, *k, *v;
    void *out;
    int64_t q_stride[3], k_stride[3], v_stride[3], o_stride[3]; /* batch, head, row */
    float scale;       /* 0: 1/sqrt(head_dim) */
    const float *tau;  /* host array [heads_q], read during the call only (no copy outlives it);
                          NULL: tau_default for every head */
    float tau_default; /* 0: 0.004. A head with tau <= 1e-5 is computed densely. */
    int block_q, block_k, block_seg, local_window, est_bits; /* 0: defaults */
    sale_mode mode;
    int dense_below;   /* 0: the value `sale tune --dense-below` stored for this device, else the
                          arch's default (16384 on sm_90, where the dense kernel is wgmma; 1024 on sm_80/86/89);
                          negative: never fall back */
    float *lse;        /* optional [B, Hq, N] natural-log sum-exp of scaled scores (4-byte aligned) */
    uint32_t *mask;    /* optional kept-block bitmask [B][Hq][nqb][ceil(nkb/32)] (4-byte aligned) */
    sale_stats *stats; /* optional (host); on GPU this synchronizes the stream (not while capturing) */
    void *workspace;   /* optional device workspace (size: sale_attention_workspace_size, 16-byte
                          aligned: cuMemAlloc's and torch's are); it begins with counters, 4 * (5 + batch * (heads_q + heads_kv)) bytes
                          rounded up to 256, that each call zeroes (one memset queued) */
    size_t workspace_bytes;
    float *phase_ms;   /* optional host [3]: GPU ms of quantize, select|fused|dense|plain, attend
                          (timed with CUDA events; synchronizes the stream) */
    int tile_warps, tile_stages; /* tiles of the attention kernels (fused, select, attend,
                          dense); 0: the tuned winner for this device, else the default.
                          On sm_90 at head_dim 128, dense and attend default to the wgmma
                          kernels (warps 12, sale_attention_arch); warps 2/4/8 pick the
                          mma.sync ones. Attend there has a second wgmma kernel, warps 5
                          (one mask row a CTA, two CTAs an SM: an attend-only tile the
                          select ignores), its default up to 64K; above, with thr FIXED,
                          both run and the device picks (the two-row kernel iff the select's
                          kept blocks reach SALE_WR_PICK_DENSITY, 3.5%, of the
                          causal blocks), with thr RUN the rows kernel to 128K and the
                          two-row kernel above; a tuned winner takes precedence (one that is
                          either of the two kernels at its default stages leaves the pick
                          on: it was timed at one density). Warps
                          12 asks for the two-row kernel at any length (with thr FIXED also
                          the select's two-warpgroup tile, below). There, two-pass with thr FIXED (head_dim 128, block_q
                          64, block_k 32, block_seg 128, 8-bit codes) runs its select as the
                          wgmma estimation (warps 12, or 20: four consumer warpgroups, a
                          select-only tile that attend ignores; stages 2..4: the code-tile ring).
                          Ignored by PLAIN (fixed: one thread per query row) */
    const char *model; /* with tau NULL: per-head thresholds calibrated for (model, layer) and
                          stored in the cache (sale calibrate); SALE_ERR_NOT_FOUND if absent.
                          Read once per context (no SQLite on later calls); a store or import
                          through the context is seen at once, another process's by a new context */
    int layer;
    int thr;           /* threshold variant (SALE_THR_RUN, SALE_THR_FIXED; 0: the device's
                          default, sale_attention_default_thr: fixed on sm_90, run elsewhere;
                          the CPU reference, which has no device, takes run). Fixed keeps a
                          superset of run's blocks at the same tau: thresholds calibrated with
                          one variant are not those of the other (stored thresholds that
                          record their variant decide it for thr 0). Ignored by DENSE */
} sale_attention_args;

/* The threshold variant sale_attention runs for thr 0 on a device whose
 * kernels are `arch` (80, 86, 89, 90): SALE_THR_FIXED on sm_90, where its
 * select is the wgmma estimation (two-pass at 64K, tau 0.004: 21.7 ms fixed
 * against 44.9 ms run on an H200, and fixed keeps a superset of run's
 * blocks: never less accurate; bench/RESULTS.md, 2026-11-29), SALE_THR_RUN
 * elsewhere (not measured against each other there). */
int sale_attention_default_thr(int arch);

/* Fill args with defaults (everything 0, mode AUTO, tau_default 0.004). */
void sale_attention_args_init(sale_attention_args *a);

/* Number of query / key blocks for the given args (after defaults). */
int sale_num_qblocks(const sale_attention_args *a);
int sale_num_kblocks(const sale_attention_args *a);

sale_status sale_attention_workspace_size(sale_ctx *ctx, const sale_attention_args *a, size_t *bytes);

/* The whole SALE pipeline on device pointers, queued on `stream`
 * (a CUstream; NULL = the legacy default stream).
 *
 * Asynchronous: it returns once the kernels are queued. It waits for the
 * GPU only when the caller asks for host-side results: args.stats (reads
 * the kept-block counts) or args.phase_ms (reads CUDA event times); and,
 * once, when a context workspace must grow (logged at INFO through the log
 * callback). Thresholds travel in the kernels' parameter block (up to 128
 * query heads; more are written by memsets queued on the stream), the dense
 * mode's mask is written by the kernel; nothing is copied from host memory
 * and nothing is allocated per call. Launches: fused 2 (quantize, fused),
 * two-pass 3 (quantize, select, attend), dense 1; +1 when lse is asked for.
 *
 * Workspaces: without args.workspace the context keeps device workspaces,
 * one in use per stream at a time: a call takes the one last used on its
 * stream, else one whose last use has finished, else allocates one.
 *
 * CUDA graphs: a call may be captured (cuStreamBeginCapture on a stream
 * other than the legacy default stream) and the graph replayed; a replay
 * computes exactly what the eager call does. A capture neither allocates
 * nor waits, so run sale_attention once eagerly on the capturing stream with
 * the largest shape the graph uses before capturing (its workspace then
 * belongs to the graphs of that capture sequence for the context's life),
 * or pass args.workspace (which must stay alive and unused elsewhere while
 * the graph may run). stats and phase_ms are refused while capturing
 * (SALE_ERR_INVALID), as is a capture with no ready workspace. Kernels not
 * yet loaded in this CUDA context are loaded during the capture call (a
 * module load is not a stream operation). */
sale_status sale_attention(sale_ctx *ctx, const sale_attention_args *a, void *stream);

/* The plain C reference of the same algorithm on host pointers (fp32 math,
 * fp64 sums). mode DENSE gives exact dense attention; FUSED, TWO_PASS and
 * PLAIN all give the one SALE result (the modes differ only on the GPU). ctx may be NULL (then
 * errors carry no message). */
sale_status sale_reference_attention(sale_ctx *ctx, const sale_attention_args *a);

/* ------------------------------------------------------------ thresholds */
/* Per-head thresholds calibrated offline (sale calibrate) and stored in the
 * cache file per (model, layer, head), with how they were chosen. */
typedef struct sale_threshold_meta {
    double budget;      /* the error budget the head was calibrated to */
    int budget_abs;     /* 0: relative L1 per head; 1: mean per-row L1 (the authors') */
    int samples;        /* calibration samples the budget held on */
    int64_t created;    /* unix seconds */
    double density;     /* kept/causal blocks at this tau, worst sample (-1 unknown) */
    double error;       /* measured error at this tau, worst sample (-1 unknown) */
    int thr;            /* threshold variant calibrated with (SALE_THR_RUN / SALE_THR_FIXED);
                           0: not recorded (rows stored before schema 4, the config's section).
                           An attention call with these thresholds and thr 0 runs this variant;
                           one that asks for the other is refused (SALE_ERR_INVALID): at one tau
                           the variants keep different blocks, so the budget would not hold */
} sale_threshold_meta;

/* Store tau[0..heads) for (model, layer) in one transaction. meta describes
 * the whole layer, all heads: it is NULL (nothing recorded: budget 0,
 * samples 0, created 0, density and error -1, thr 0) or points to a single
 * sale_threshold_meta; only meta[0] is read, and each of its fields (thr:
 * the variant the taus were calibrated with; density and error included)
 * is stored with every head. There is no per-head meta here: give density
 * and error -1 (unknown) unless they hold for every head. (sale_calibrate
 * stores each head's own density and error; sale_thresholds_get returns a
 * meta per head.) */
sale_status sale_thresholds_put(sale_ctx *ctx, const char *model, int layer, const float *tau, int heads,
                                const sale_threshold_meta *meta);
/* Read tau[0..heads) for (model, layer): the cache file, then the fleet file,
 * then the config's `thresholds` section. SALE_ERR_NOT_FOUND (naming the
 * first missing head) unless every head is found. meta may be NULL, else
 * meta[0..heads) receives each head's stored meta (a config threshold's:
 * nothing recorded, density and error -1, thr 0). */
sale_status sale_thresholds_get(sale_ctx *ctx, const char *model, int layer, float *tau, int heads,
                                sale_threshold_meta *meta);
/* Forget the thresholds this context has read, so that the next call naming
 * a (model, layer) reads the cache again. A context reads a layer's
 * thresholds once and keeps them; its own stores (sale_thresholds_put,
 * sale_calibrate, sale_cache_import) are seen at once, another process's
 * (`sale calibrate` run beside it) only after this call. */
sale_status sale_thresholds_reload(sale_ctx *ctx);

/* One stored threshold, as listed. */
typedef struct sale_threshold_entry {
    char model[128];
    int layer, head;
    double tau;
    sale_threshold_meta meta; /* budget 0 / created 0 / density, error -1: unknown */
    int from_fleet;           /* 1: a row of the read-only fleet file */
} sale_threshold_entry;
/* A listing callback: return non-zero to stop the listing (not an error). */
typedef int (*sale_threshold_fn)(void *user, const sale_threshold_entry *e);
/* Call fn for every stored threshold, ordered by model, layer, head (the
 * fleet file's after, when include_fleet). The rows are read first, so fn
 * may call into the context. Config-file thresholds are not listed. */
sale_status sale_thresholds_list(sale_ctx *ctx, int include_fleet, sale_threshold_fn fn, void *user);

/* ------------------------------------------------------------ cache file */
/* Reading and changing the cache file (and its fleet file) as a whole: what
 * `sale ls | verify | export | import | clear` do. Database failures are
 * SALE_ERR_CACHE with SQLite's reason; a NULL out-parameter is
 * SALE_ERR_INVALID. */

/* One compiled kernel of the cache, as listed (the cubin itself is not read). */
typedef struct sale_cache_kernel {
    char key[256];       /* canonical resolved key text */
    char arch[16];       /* "sm_90" */
    char entry[64];      /* main entry point name */
    uint64_t src_hash;   /* as in sale_kernel_info */
    int registers, smem_static, smem_dynamic, spill_stores, spill_loads, stack, threads;
    double compile_ms;
    size_t cubin_bytes;
    int64_t created, last_used; /* unix seconds */
    int64_t hits;        /* requests served from this row */
    int from_fleet;      /* 1: a row of the read-only fleet file */
} sale_cache_kernel;
typedef int (*sale_cache_kernel_fn)(void *user, const sale_cache_kernel *k);
/* Call fn for every kernel of the cache file, ordered by arch and key (then
 * the fleet file's, when include_fleet). The rows are read first, so fn may
 * call into the context; fn returning non-zero stops the listing. */
sale_status sale_cache_list_kernels(sale_ctx *ctx, int include_fleet, sale_cache_kernel_fn fn, void *user);

/* One autotuner winner stored for a device (`sale tune`). */
typedef struct sale_tuned_entry {
    char device[128];    /* device name */
    char arch[16];       /* "sm_90" */
    int sm_count;
    int driver_version;
    char key[256];       /* canonical key with tile fields open ("*"); "dense_below" for that value */
    char bucket[32];     /* problem-size bucket, e.g. "n=65536" */
    char winner[256];    /* canonical resolved key of the winner (the value, for dense_below) */
    double time_ms, spread_pct;
    int tried;           /* candidates timed */
    int64_t created;     /* unix seconds */
} sale_tuned_entry;
typedef int (*sale_tuned_fn)(void *user, const sale_tuned_entry *e);
/* Call fn for every tuned winner of the cache file (read first, as above;
 * non-zero from fn stops the listing). */
sale_status sale_cache_list_tuned(sale_ctx *ctx, sale_tuned_fn fn, void *user);

/* Check every stored cubin (cache file and fleet file) against its length
 * and hash, after SQLite's integrity check. Bad rows of the cache file are
 * deleted (they recompile on next use); the fleet file's are only counted.
 * *checked and *bad receive the counts; bad rows are not an error. */
sale_status sale_cache_verify(sale_ctx *ctx, int *checked, int *bad);

/* Write the kernels of the given archs (80, 86, 89, 90, 901; all when narch
 * is 0; a base arch takes its arch-specific variant too: 90 brings the
 * sm_90a kernels that sm_90 devices run, 901 is sm_90a alone), the tuning
 * winners measured on those archs and every threshold into a new cache file
 * at dest, to ship as a fleet file; dest is replaced atomically. Refused
 * even with force (SALE_ERR_CACHE, nothing written): dest is this context's
 * cache itself (under any name), or dest exists and is not a regular file
 * (a directory, FIFO, device or symbolic link). Refused unless force: dest
 * is a non-empty regular file that is not a sale cache. An empty file or a
 * sale cache is replaced. Nothing to write (no kernel of those archs, no
 * tuning winner, no threshold): SALE_ERR_NOT_FOUND, nothing written;
 * thresholds alone do make a file (`sale export` also refuses a file with
 * no kernel). *rows receives the number of kernels written. */
sale_status sale_cache_export(sale_ctx *ctx, const char *dest, const int *archs, int narch, int force, int *rows);

/* Merge the kernels, tuning winners and thresholds of another sale cache
 * file into this one (rows that exist are kept; damaged cubins skipped; a
 * model that has thresholds here keeps them all and the other file's
 * thresholds of it are not taken, with a warning: two calibrations never
 * mix). The source is only read, also from a directory this user cannot
 * write, and nothing is left beside it. *rows receives the number of
 * kernels added. */
sale_status sale_cache_import(sale_ctx *ctx, const char *src, int *rows);

/* Remove every kernel of the cache file (winners and thresholds stay);
 * *rows receives how many. Kernels already loaded stay usable. */
sale_status sale_cache_clear(sale_ctx *ctx, int *rows);

/* Bytes the cache file takes on disk, its write-ahead log included (0 for
 * ":memory:"). */
sale_status sale_cache_file_bytes(sale_ctx *ctx, int64_t *bytes);

/* ----------------------------------------------------------- calibration */
/* Choose per-head thresholds for a model to an error budget (the paper's
 * offline calibration) and store them per (model, layer, head).
 *
 * Input: a directory of captured attention inputs, one file per layer,
 * `layer_{L:03d}.safetensors` (layer_000.safetensors, layer_001..., more
 * digits past 999), each holding tensors `q` [S, Hq, N, D] and `k`, `v`
 * [S, Hkv, N, D] (S samples, GQA allowed: Hq % Hkv == 0; dtype F32, F16 or
 * BF16, the same for q, k and v; every layer the same Hq). Or, with
 * input_dir NULL, the built-in generator (sale_generate_qkv, structured):
 * layer L uses seed + L, and its samples are the batch entries.
 *
 * For each (layer, head), tau starts at 0.008 and halves while the head's
 * error against dense attention exceeds the budget on any sample; a tau
 * that would fall to 1e-4 or below becomes 0 (the head runs dense). Every
 * head of a layer is evaluated at once per round, each at its own
 * candidate; one dense reference per layer. Error: relative L1 per head
 * sum|o - o_ref| / sum|o_ref| (budget_abs 0), or the authors' mean per-row
 * L1 (budget_abs 1): the L1 distance over a row's D elements, averaged over
 * rows. Every input file is validated (shapes, tensors, NaN/Inf) before any
 * work; the thresholds of all layers are stored at the end in one
 * transaction, so a failure leaves the stored thresholds as they were. */
typedef enum sale_calibrate_device {
    SALE_CALIBRATE_AUTO = 0, /* the GPU when there is one, else the CPU reference */
    SALE_CALIBRATE_CPU,      /* sale_reference_attention (host, fp32 math) */
    SALE_CALIBRATE_GPU       /* sale_attention (f16/bf16; F32 inputs run as bf16) */
} sale_calibrate_device;

typedef struct sale_calibrate_progress {
    int layer;              /* the layer just calibrated */
    int index, count;       /* it is layer `index` (0-based) of `count` */
    int heads;              /* Hq */
    const float *tau;       /* [heads] chosen */
    const double *density;  /* [heads] worst (densest) sample at tau */
    const double *error;    /* [heads] worst sample at tau */
    int rounds;             /* sparse evaluations this layer took */
    double seconds;         /* wall time of the layer */
} sale_calibrate_progress;

typedef void (*sale_calibrate_progress_fn)(void *user, const sale_calibrate_progress *p);

typedef struct sale_calibrate_options {
    const char *model;       /* required: the name the thresholds are stored under */
    const char *input_dir;   /* captured layer files (see above); NULL: the generator */
    struct {                 /* the generator, when input_dir is NULL (0: default) */
        int layers;          /* 2 */
        int heads_q;         /* 4 */
        int heads_kv;        /* heads_q */
        int seq_len;         /* 2048 */
        int head_dim;        /* 128 */
        int samples;         /* 2 */
        uint64_t seed;       /* 0 is a seed like any other */
        sale_dtype dtype;    /* F16 (0) or BF16 */
    } gen;
    double budget;           /* 0: 0.02 */
    int budget_abs;          /* 0: relative L1 per head; 1: mean per-row L1 */
    sale_mode mode;          /* FUSED or TWO_PASS */
    int block_q, block_k, block_seg, local_window, est_bits; /* 0: defaults (as in sale_attention_args) */
    sale_calibrate_device device;
    int dry_run;             /* 1: choose, report, store nothing */
    sale_calibrate_progress_fn progress; /* called after each layer; may be NULL */
    void *progress_user;
    int thr;                 /* threshold variant (SALE_THR_*; 0: what sale_attention runs for 0
                                on the evaluating device, sale_attention_default_thr: fixed on
                                sm_90; run elsewhere and on the CPU): calibrate with the one the
                                attention calls will use (fixed keeps more blocks at a tau); it is
                                stored with the thresholds */
    double dense_above;      /* a head whose chosen tau keeps this fraction of its blocks or more
                                (worst sample) runs dense instead (tau 0): exact, and at such
                                densities the estimation costs more than the blocks it skips
                                (H200, two-pass fixed: sparse = dense time near d = 0.5).
                                sale_calibrate_options_init: 0.5; 0: never; 1: only heads
                                that keep every block */
} sale_calibrate_options;

typedef struct sale_calibrate_result {
    int layers, heads, samples, seq_len;
    int on_gpu;              /* 1: evaluated with sale_attention */
    int *layer_ids;          /* [layers] */
    float *tau;              /* [layers * heads] */
    double *density;         /* [layers * heads] worst sample */
    double *error;           /* [layers * heads] worst sample */
    int64_t created;         /* unix seconds stored with the rows */
    double seconds;
    int thr;                 /* the threshold variant calibrated with, and stored (SALE_THR_*) */
} sale_calibrate_result;

/* Defaults: budget 0.02 relative, fused, AUTO device, generator as above. */
void sale_calibrate_options_init(sale_calibrate_options *o);
/* Run the calibration; result (may be NULL) gets arrays the caller frees
 * with sale_calibrate_result_free. An option out of range (model, budget,
 * dense_above, mode, device: one of the three SALE_CALIBRATE_* values) is
 * SALE_ERR_INVALID naming it, before any work. SALE_ERR_IO /
 * SALE_ERR_INVALID name the file and tensor at fault; SALE_ERR_NO_DEVICE
 * for device GPU without one. */
sale_status sale_calibrate(sale_ctx *ctx, const sale_calibrate_options *o, sale_calibrate_result *result);
void sale_calibrate_result_free(sale_calibrate_result *r);

/* ---------------------------------------------------------------- device */

typedef struct sale_device_info {
    int ordinal;
    char name[128];
    int arch;          /* 80, 86, 89, 90 */
    int sm_count;
    int driver_version; /* e.g. 13000 */
    size_t total_mem;
    int smem_optin;    /* max dynamic shared memory per block */
} sale_device_info;

/* Number of CUDA devices (0 with no driver, and SALE_ERR_NO_DEVICE). */
sale_status sale_device_count(sale_ctx *ctx, int *count);
sale_status sale_device_info_get(sale_ctx *ctx, int ordinal, sale_device_info *info);

/* NVRTC version as major*1000+minor*10 (e.g. 13000). */
sale_status sale_nvrtc_version(int *version);


/* ------------------------------------------------------- host utilities */

/* fp16 / bf16 <-> float on the host (round to nearest even). */
uint16_t sale_f32_to_f16(float x);
float sale_f16_to_f32(uint16_t h);
uint16_t sale_f32_to_bf16(float x);
float sale_bf16_to_f32(uint16_t h);

/* A planted "needle": query row `query` of head `head_q` must find key `key`. */
typedef struct sale_needle {
    int batch, head_q, query, key;
} sale_needle;

typedef struct sale_gen_options {
    uint64_t seed;
    int structured;      /* 0: i.i.d. normal Q/K/V; 1: long-context structure below */
    float rope_base;     /* rotary base (0: 500000, Llama-3.1) */
    float sink;          /* strength of the attention sink on key 0 (0: 4.0) */
    float local_bias;    /* strength of the recency bias (0: 1.0) */
    int needles;         /* needles planted per (batch, q head) (0: none) */
    float needle_gain;   /* how strongly a needle key matches its query (0: 6.0) */
} sale_gen_options;

/* Fill host arrays q [B,Hq,N,D], k, v [B,Hkv,N,D] (contiguous, of a->dtype)
 * with random or structured inputs; writes up to max_needles planted needles
 * (their count in *n_needles). The structure is documented in bench/README.md. */
sale_status sale_generate_qkv(const sale_attention_args *a, const sale_gen_options *g, void *q, void *k, void *v,
                              sale_needle *needles, int max_needles, int *n_needles);

/* ------------------------------------------------------- device memory */
/* Thin wrappers over the Driver API for tests, scripts and benchmarks; they
 * use the current CUDA context (the device's primary context if none). */
sale_status sale_dev_alloc(sale_ctx *ctx, size_t bytes, void **dptr);
sale_status sale_dev_free(sale_ctx *ctx, void *dptr);
sale_status sale_dev_upload(sale_ctx *ctx, void *dst, const void *src, size_t bytes);
sale_status sale_dev_download(sale_ctx *ctx, void *dst, const void *src, size_t bytes);
sale_status sale_dev_fill8(sale_ctx *ctx, void *dst, unsigned char byte, size_t bytes);
sale_status sale_dev_sync(sale_ctx *ctx);

/* CUDA events for timing: record on a stream, elapsed time between two. */
typedef struct sale_event sale_event;
sale_status sale_event_create(sale_ctx *ctx, sale_event **ev);
sale_status sale_event_record(sale_ctx *ctx, sale_event *ev, void *stream);
sale_status sale_event_elapsed(sale_ctx *ctx, sale_event *start, sale_event *stop, float *ms);
void sale_event_destroy(sale_ctx *ctx, sale_event *ev);

#ifdef __cplusplus
}
#endif
#endif
