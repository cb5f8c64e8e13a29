/* config.h — the configuration file (sale.lua), read in a sandboxed Lua
 * state (src/lsale_config.c). Internal; prefix cfg_. The CLI's prewarm and
 * tune take their sets from here. */
#ifndef SALE_CONFIG_H
#define SALE_CONFIG_H

#include "sale.h"

#define CFG_MAX_LIST 16
#define CFG_MAX_THRESH (1 << 18) /* per-head taus in a config (all models): 4096 was short of one 80-layer, 64-head model */

typedef struct cfg_fleet {
    int archs[CFG_MAX_LIST];        int n_archs;        /* 80, 86, 89, 90, 901 */
    int head_dims[CFG_MAX_LIST];    int n_head_dims;
    sale_family families[CFG_MAX_LIST]; int n_families;
    sale_dtype dtypes[CFG_MAX_LIST]; int n_dtypes;
    int block_qs[CFG_MAX_LIST];     int n_block_qs;
    int block_ks[CFG_MAX_LIST];     int n_block_ks;
    int block_segs[CFG_MAX_LIST];   int n_block_segs;
    int local_windows[CFG_MAX_LIST]; int n_local_windows;
    int thrs[CFG_MAX_LIST];         int n_thrs;         /* SALE_THR_RUN, SALE_THR_FIXED */
} cfg_fleet;

typedef struct cfg_defaults {   /* algorithm defaults; 0 = library default */
    int block_q, block_k, block_seg, local_window, est_bits, dense_below;
    float tau;
    int thr;                    /* SALE_THR_RUN | SALE_THR_FIXED (0: run) */
} cfg_defaults;

typedef struct cfg_tuning {
    int warps[CFG_MAX_LIST];  int n_warps;
    int stages[CFG_MAX_LIST]; int n_stages;
    double budget_s;          /* 0: no limit */
    char strategy[32];        /* "exhaustive" | "halving" | "random" */
} cfg_tuning;

typedef struct cfg_threshold {
    char model[128]; /* as the cache's (127 bytes, what calibrate takes) */
    int layer, head;
    float tau;
} cfg_threshold;

typedef struct sale_config {
    char path[512];           /* file it was read from ("" if defaults) */
    char cache_path[512];     /* "" = library default */
    char fleet_cache[512];    /* read-only fleet file, "" = none */
    cfg_defaults defaults;        /* for every arch */
    cfg_defaults arch_defaults[4]; int arch_default_codes[4]; int n_arch_defaults;
    cfg_fleet fleet;
    cfg_tuning tuning;
    cfg_threshold *thresholds; int n_thresholds; /* malloc'd */
} sale_config;

/* The built-in defaults: fleet sm_80, sm_86, sm_89, sm_90; head dims 64 and
 * 128; every family; bf16 and f16; the algorithm's default block sizes and
 * threshold variant (run). */
void cfg_defaults_init(sale_config *cfg);

/* Find the config file: explicit path, else $SALE_CONFIG, else
 * $XDG_CONFIG_HOME/sale/sale.lua, else ~/.config/sale/sale.lua. Returns 1 and
 * fills out if a file exists, 0 if none (use defaults). An explicit path
 * that does not exist is an error (-1). */
int cfg_find(const char *explicit_path, char *out, size_t outlen, char *err, size_t errlen);

/* Load and validate a config file into cfg (which starts from defaults).
 * The file runs in a sandbox (no io, os.execute, require, load of bytecode;
 * bounded instructions). Errors name file:line and field, e.g.
 * "sale.lua:12: fleet.block_k must be 16, 32 or 64, got 24".
 * Returns SALE_OK or SALE_ERR_INVALID / SALE_ERR_LUA with err filled. */
sale_status cfg_load(const char *path, sale_config *cfg, char *err, size_t errlen);

/* Same, from a string (chunkname used in messages). */
sale_status cfg_load_string(const char *chunkname, const char *text, sale_config *cfg, char *err, size_t errlen);

void cfg_free(sale_config *cfg);

/* Drop duplicate values from every fleet list (order kept) and refuse a
 * fleet whose lists multiply to more than CFG_MAX_COMBINATIONS kernels:
 * 0, or -1 with err saying how many and why. */
#define CFG_MAX_COMBINATIONS 16384
int cfg_fleet_normalize(cfg_fleet *f, char *err, size_t errlen);

/* Give the context a copy of the config's thresholds, the last fallback of
 * sale_thresholds_get (the CLI does this for its config file); defined in
 * src/thresholds.c. */
sale_status thresholds_attach_config(sale_ctx *ctx, const cfg_threshold *th, int n);

/* The cache file sale_create opens when sale_options.cache_path is NULL
 * ($SALE_CACHE_DIR/kernels.db, else $XDG_CACHE_HOME/sale/kernels.db, else
 * ~/.cache/sale/kernels.db) into buf: 0; -1 when none is set; -2 when the
 * path would not fit in len (buf ""). *var (may be NULL) gets the variable
 * it came from ("SALE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"). The CLI's
 * looking commands check it exists before opening. */
int sale_default_cache_path(char *buf, size_t len, const char **var);

/* Run a user script with the full standard library and the `sale` module
 * (sale run script.lua args...). Errors carry the traceback. */
sale_status lsale_run_script(sale_ctx *ctx, const char *path, int argc, char **argv, char *err, size_t errlen);

#endif
