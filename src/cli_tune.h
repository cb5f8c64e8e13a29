/* cli_tune.h — `sale tune` for src/main.c (the CLI, not the library). */
#ifndef SALE_CLI_TUNE_H
#define SALE_CLI_TUNE_H

#include "sale.h"

/* `sale tune [--family fused,select,attend,dense] [--seq-len 16384,65536]
 * [--batch B] [--heads HQ HKV] [--head-dim D] [--dtype bf16|f16]
 * [--strategy exhaustive|halving|random] [--budget SECONDS] [--reps N] [--help]`
 * or `sale tune --dense-below [...]`. cfg is a sale_config * (src/config.h)
 * or NULL: its tuning table gives the default warps/stages lists, budget and
 * strategy. Progress goes to stderr, tables to stdout. Returns the exit
 * status: 0 ok, 1 failure (no GPU: "sale tune: no GPU: <reason>"), 2 usage.
 * With ctx NULL it only checks the arguments, before main opens the cache:
 * 0 after --help, 2 on a usage error, -1 when they are valid (call again
 * with the context). */
int cli_tune(sale_ctx *ctx, const void *cfg, int argc, char **argv);

#endif
