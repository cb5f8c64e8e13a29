/* tune.h — the autotuner: the legal tile choices of a key (warps, stages),
 * pruned by the resources ptxas stored with each cubin, timed on the live GPU
 * and the winner handed to src/winners.c to keep per device, driver and
 * problem size. Internal to libsale; prefix tune_. Sits on the public API
 * (src/ and db/ never include this header). Only tile fields are ever changed:
 * block_q, block_k, block_seg, local_window, est_bits and tau never are. */
#ifndef SALE_TUNE_H
#define SALE_TUNE_H

#include <stddef.h>

#include "sale.h"

#define TUNE_MAX_CANDIDATES 64
#define TUNE_ERR_LEN 256
#define TUNE_REGS_PER_SM 65536            /* register file of every sm_80..sm_90 SM */
#define TUNE_FLUSH_BYTES (256u << 20)      /* scratch written between repetitions (L2 flush) */

/* One tile choice of a key. tune_space fills key/warps/stages; tune_prune the
 * resources; the strategies the measurement. */
typedef struct tune_candidate {
    sale_key key;          /* fully resolved, tiles = (warps, stages) */
    int warps, stages;
    int registers;         /* per thread, from ptxas (tune_prune) */
    int smem;              /* static + dynamic bytes per CTA (tune_prune) */
    int threads;
    int spills;            /* spill bytes (stores + loads); > 0 is kept but flagged */
    int is_default;        /* the tiles sale_key_resolve picks with nothing tuned */
    double ms, spread;     /* last measurement: median ms, (p90 - p10) / median */
    int reps;              /* repetitions behind ms (0: never measured) */
    int failed;            /* 1: disqualified (wrong output, launch failure, pruned) */
    char why[TUNE_ERR_LEN]; /* why it failed or was pruned */
} tune_candidate;

/* ------------------------------------------------------------- the space */

/* The tile space of a key, declared next to the template (sale_layout_space)
 * and filtered by sale_layout_legal. base carries the algorithm fields (open
 * ones take the documented defaults) and a concrete arch. warps/stages (may be
 * NULL with n 0) restrict the space to these values (the config's tuning
 * table); values outside the template's space are still checked for
 * legality. seq_len (0: none) is the length the tiles are tuned for: the
 * default tiles (is_default, always a candidate, the one every other is
 * checked against) are sale_attention's at that length's bucket — on sm_90a
 * attend the rows kernel (warps 5) up to the 128K bucket
 * (sale_layout_rows_default), the two-row kernel above. Writes at most max
 * candidates; returns how many, or -1 (bad key, message in err). *illegal
 * (may be NULL) receives the number refused. */
int tune_space_key(const sale_key *base, int seq_len, const int *warps, int nwarps, const int *stages, int nstages,
                   tune_candidate *out, int max, int *illegal, char *err, size_t errlen);

/* The same from the shape alone (dtype bf16, local window 128, est_bits the
 * arch's default). */
int tune_space(sale_family family, int head_dim, int block_q, int block_k, int block_seg, int arch,
               tune_candidate *out, int max, int *illegal);

/* --------------------------------------------------------------- pruning */

/* Compile every candidate for the device's arch (sale_compile: no GPU needed,
 * cached) and drop, without a launch, those that cannot run there:
 * registers * threads > 65536, or static + dynamic shared memory above
 * dev->smem_optin; a candidate that does not compile is dropped too. Spills
 * are kept and flagged (spills > 0). The array is reordered stably: kept
 * candidates first, the pruned after them with `why` set and failed = 1.
 * Returns the number kept (-1 when dev is NULL); *pruned receives the number
 * dropped. */
int tune_prune(sale_ctx *ctx, tune_candidate *cands, int n, const sale_device_info *dev, int *pruned);

/* The code architecture that runs on a device of compute capability dev_arch
 * (86..88 -> 86, 80..85 -> 80, 89, 90); 0 when sale has no kernels for it. */
int tune_code_arch(int dev_arch);

/* ------------------------------------------------------------ strategies */

/* Measure one candidate: `reps` timed repetitions, median into *ms and
 * (p90 - p10) / median into *spread. Returns 0, or non-zero with err (a
 * buffer of TUNE_ERR_LEN bytes) filled when the candidate is disqualified
 * (wrong output, launch failure): it then never wins. */
typedef int (*tune_cost_fn)(void *user, const tune_candidate *c, int reps, double *ms, double *spread, char *err);

/* Called after each measurement (the CLI prints a progress line). */
typedef void (*tune_progress_fn)(void *user, const tune_candidate *c, int index, int round);

typedef struct tune_opts {
    int reps;             /* repetitions of a full measurement (0: 20); halving ends on it */
    double budget_s;      /* wall-clock budget checked between measurements (0: none) */
    tune_progress_fn progress;
    void *progress_user;
    double (*now)(void *user); /* seconds; NULL: CLOCK_MONOTONIC (tests pass a fake clock) */
    void *now_user;
    unsigned seed;        /* tune_random's order */
} tune_opts;

typedef struct tune_result {
    int winner;           /* index into the candidates, -1 when none passed */
    int measured;         /* measurements made (halving counts every round) */
    int tried;            /* distinct candidates measured at least once */
    int disqualified;     /* candidates whose cost function reported an error */
    int rounds;           /* halving: rounds started */
    int out_of_budget;    /* 1: the budget ran out before the strategy finished */
} tune_result;

/* Every candidate with failed == 0, opts->reps repetitions each. With a
 * budget, stops when it runs out (after at least one candidate passed) and
 * returns the best so far. Returns the winner's index or -1. */
int tune_exhaustive(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts,
                    tune_result *res);

/* The same over a random order (seeded by opts->seed): with a budget, a
 * random sample of the space. */
int tune_random(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts, tune_result *res);

/* Successive halving: each round measures every survivor, with repetitions
 * growing to opts->reps in the last round (reps >> rounds left, at least 2),
 * and keeps the faster half (rounded up) until one remains. Disqualified
 * candidates leave at once. When the budget runs out, returns the survivor
 * with the best latest time (never one that was not measured). */
int tune_halving(tune_candidate *c, int n, tune_cost_fn cost, void *user, const tune_opts *opts, tune_result *res);

/* ---------------------------------------------------- the GPU cost function */

typedef struct tune_gpu tune_gpu;

/* Device buffers and fresh random inputs (sale_generate_qkv, structured, seed)
 * of one problem shape, plus the 256 MB L2 flush buffer. base gives
 * head_dim, dtype and the algorithm fields. Needs a GPU. */
sale_status tune_gpu_create(sale_ctx *ctx, const sale_key *base, int batch, int heads_q, int heads_kv, int seq_len,
                            uint64_t seed, tune_gpu **out);
void tune_gpu_destroy(tune_gpu *g);

/* Switch to a family (fused, select, attend, dense): runs sale_attention
 * once with the family's default tiles (mode FUSED, TWO_PASS, DENSE) and keeps
 * its output and kept-block mask as the reference every candidate must match
 * (relative L1 < 1e-3, identical mask). */
sale_status tune_gpu_prepare(tune_gpu *g, sale_family family, int default_warps, int default_stages);

/* tune_cost_fn over a tune_gpu (user): runs the whole sale_attention pipeline
 * with tile_warps/tile_stages = the candidate; checks the output against the
 * reference before timing; then 2 warm-ups and `reps` repetitions, each after
 * writing TUNE_FLUSH_BYTES of scratch (sale_dev_fill8) to flush L2, timing the
 * family's kernel with CUDA events (phase_ms[1], or [2] for attend). In
 * TWO_PASS mode both select and attend take the candidate's tiles. */
int tune_gpu_cost(void *user, const tune_candidate *c, int reps, double *ms, double *spread, char *err);

/* Bytes written to flush L2 between repetitions (0 before create). */
size_t tune_gpu_flush_bytes(const tune_gpu *g);

/* Persistence (storing and serving winners) is src/winners.c (win_save,
 * win_lookup), below the context; the `sale tune` command is src/cli_tune.c,
 * which stores through these four (it includes no library internals). */
/* Store the winner of open_key (tiles open) at seq_len's bucket for dev. */
sale_status tune_save_winner(sale_ctx *ctx, const sale_device_info *dev, const sale_key *open_key, int seq_len,
                             const sale_key *winner, double ms, double spread_pct, int tried);
/* Store the dense_below measured on dev; the built-in one of a code arch. */
sale_status tune_save_dense_below(sale_ctx *ctx, const sale_device_info *dev, int dense_below, double ms);
int tune_dense_below_default(int code_arch);
/* The length bucket seq_len is stored under ("n=65536"): 0, or -1. */
int tune_bucket(int seq_len, char *buf, size_t len);

/* by (failed, ms): idx[0..n) reordered, fastest correct first */
void tune_sort_indices(const tune_candidate *c, int *idx, int n);

/* ------------------------------------------------ where SALE stops paying */

typedef struct tune_shape {
    int batch, heads_q, heads_kv, head_dim;
    sale_dtype dtype;
} tune_shape;

/* Median GPU ms (CUDA events around the whole sale_attention call, L2
 * flushed before each, 2 warm-ups, `reps` timed) of fused, two-pass and
 * dense (ms[i][0..2]) at each length. 0, or -1 with the message on ctx. */
int tune_mode_times(sale_ctx *ctx, const tune_shape *sh, const int *lens, int nlens, int reps, double (*ms)[3]);

/* dense_below from those times (lens ascending): the smallest measured
 * length from which on the faster SALE mode beats dense at every larger
 * measured length; twice the largest length when SALE never pays. */
int tune_pick_dense_below(const int *lens, int nlens, double (*ms)[3]);

#endif
