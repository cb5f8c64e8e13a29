/* internal.h — what the library's modules share: the context, error and log
 * helpers, the lazily opened driver, NVRTC and template access. Not public. */
#ifndef SALE_INTERNAL_H
#define SALE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "db.h"
#include "sale.h"

typedef struct kmod kmod; /* a module loaded in one CUDA context */

struct sale_ctx {
    char *err;         /* last error message (heap, may be long: NVRTC logs) */
    size_t err_cap;
    sale_options opts;
    char cache_path[1024];
    char fleet_path[1024];
    db *db;
    pthread_mutex_t lock; /* guards db, modules, err */
    kmod *modules;
    void *ws;          /* context-owned device workspace of sale_attention */
    size_t ws_bytes;
    struct cfg_threshold *cfg_thresholds; /* the config's `thresholds` section (copy), or NULL */
    int n_cfg_thresholds;
};

/* Set the context's error message; returns nothing, ctx may be NULL. */
void sale_set_error(sale_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sale_logf(sale_ctx *ctx, sale_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* thresholds (thresholds.c) */
struct cfg_threshold;
/* The per-head taus of one attention call into tau_out[heads_q]: a->tau, else
 * the thresholds stored for (a->model, a->layer) (needs ctx), else
 * a->tau_default (0: 0.004). SALE_ERR_NOT_FOUND names the missing head. */
sale_status thresholds_resolve(sale_ctx *ctx, const sale_attention_args *a, float *tau_out);
/* Give the context a copy of the config's thresholds, the last fallback of
 * sale_thresholds_get (the CLI does this for its config file). */
sale_status thresholds_attach_config(sale_ctx *ctx, const struct cfg_threshold *th, int n);

/* keys (key.c) */
int key_family_uses(sale_family f, const char *field); /* does this field change the family's code? */
int key_default_est_bits(int arch);
/* Fill open algorithm fields with the documented defaults (tiles untouched). */
void key_fill_algorithm(sale_key *k);
/* The architecture whose cubins run on a device of compute capability
 * dev_arch (80..85 -> 80, 86..88 -> 86, 89, 90); 0 if sale has none. */
int key_code_arch(int dev_arch);

/* Run worker(arg) on up to min(cores, max_threads, ntask) threads, the
 * caller's included, and wait for all (par.c). Workers take their tasks
 * from a counter of their own, so the result does not depend on the count. */
void par_run(int ntask, int max_threads, void *(*worker)(void *), void *arg);
/* Copy a tuned winner's tiles into the fields of k that are still open. */
void key_take_tiles(sale_key *k, const sale_key *tuned);

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

/* driver (driver.c): the CUDA Driver API through dlopen. */
#include "drv.h"

#endif
