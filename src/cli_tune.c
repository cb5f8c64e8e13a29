/* cli_tune.c — `sale tune`: the command line over the tuner (tuner/, the
 * search, and the winners it stores through src/winners.c). Part of the
 * `sale` command, not of the library: it prints. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_num.h"
#include "cli_tune.h"
#include "config.h"
#include "sale.h"
#include "tune.h"


static const char tune_help[] =
    "usage: sale tune [--family LIST] [--seq-len LIST] [--batch B] [--heads HQ HKV]\n"
    "                 [--head-dim D] [--dtype bf16|f16] [--strategy exhaustive|halving|random]\n"
    "                 [--budget SECONDS] [--reps N] [--seed S] [--thr run|fixed]\n"
    "       sale tune --dense-below [--seq-len LIST] [--batch B] [--heads HQ HKV] [--head-dim D]\n"
    "                 [--dtype bf16|f16] [--reps N]\n"
    "Times the legal tile choices (warps per CTA, pipeline stages) of each family on\n"
    "GPU 0 and stores the fastest correct one for this device, driver and problem\n"
    "size; sale_get_kernel() and sale_attention() then serve it for open tiles.\n"
    "Algorithm parameters (block sizes, window, tau) are never changed.\n\n"
    "  --family LIST     fused,select,attend,dense (default: fused,dense; plain,\n"
    "                    version 0, has fixed tiles and is never tuned)\n"
    "  --seq-len LIST    problem sizes, each stored in its power-of-two bucket (default 16384)\n"
    "  --batch B         default 1\n"
    "  --heads HQ HKV    query and key/value heads (default 32 8; also HQ,HKV)\n"
    "  --head-dim D      64 or 128 (default 128)\n"
    "  --dtype T         bf16 or f16 (default bf16)\n"
    "  --strategy S      exhaustive (default), halving (successive halving) or random\n"
    "  --budget SECONDS  wall-clock budget per (family, size); 0: none (default: config)\n"
    "  --reps N          timed repetitions of a full measurement (default 20)\n"
    "  --thr run|fixed   threshold variant of the fused and select kernels tuned\n"
    "                    (default: the config's defaults.thr, else the variant a call\n"
    "                    with thr 0 runs on this GPU: fixed on sm_90, run elsewhere);\n"
    "                    each is its own key\n"
    "  --dense-below     instead: time fused, two-pass and dense at each length (default\n"
    "                    1024 .. 65536) and store where SALE starts to pay as\n"
    "                    this device's dense_below (sale_attention's default from then on);\n"
    "                    it times the default tiles: --family, --strategy, --budget, --seed\n"
    "                    and --thr do not apply to it (given with it: a usage error)\n\n"
    "Candidates over the device's shared memory or register file (from the ptxas\n"
    "resources stored with each cubin) are pruned without a launch. Each candidate's\n"
    "output must match the default tiles' (relative L1 < 1e-3, same kept blocks)\n"
    "before its time counts; 2 warm-ups, then N repetitions, each after a 256 MB\n"
    "write that flushes L2, timed with CUDA events; median and (p90-p10)/median.\n"
    "Defaults for warps, stages, budget and strategy come from the config's tuning table.\n"
    "See the winners with 'sale ls --tuned'.\n";

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) /* never a cut list: "65536" cut is "655" */
        return -1;
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        long v;
        if (!cli_long(t, 1, 1L << 30, &v) || n >= max)
            return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int parse_families(const char *s, sale_family *out, int max)
{
    int n = 0;
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) /* never a cut list */
        return -1;
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int f = -1;
        for (int i = SALE_FAMILY_FUSED; i <= SALE_FAMILY_DENSE; i++) /* plain (version 0) has no tiles to tune */
            if (!strcmp(t, sale_family_name((sale_family)i)))
                f = i;
        if (f < 0 || n >= max)
            return -1;
        out[n++] = (sale_family)f;
    }
    return n;
}

typedef struct cli_progress {
    const char *label;
    int n;
} cli_progress;

static void cli_progress_cb(void *user, const tune_candidate *c, int index, int round)
{
    cli_progress *p = user;
    if (c->failed)
        fprintf(stderr, "sale tune: %s [%d/%d] round %d warps=%d stages=%d  DISQUALIFIED: %s\n", p->label, index + 1,
                p->n, round, c->warps, c->stages, c->why);
    else
        fprintf(stderr, "sale tune: %s [%d/%d] round %d warps=%d stages=%d  %.4f ms  spread %.1f%%  (%d reps)\n",
                p->label, index + 1, p->n, round, c->warps, c->stages, c->ms, 100 * c->spread, c->reps);
}

/* `sale tune --dense-below`: one table, one stored number */
static int dense_below_cmd(sale_ctx *ctx, const sale_device_info *dev, int batch, int hq, int hkv, int hd,
                           sale_dtype dt, const int *lens_in, int nlens, int reps)
{
    /* up to 64K: on sm_90 the wgmma dense kernel put the crossover at 16K-32K */
    static const int dflt[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
    int lens[16];
    if (!lens_in)
        nlens = 7;
    for (int i = 0; i < nlens; i++)
        lens[i] = lens_in ? lens_in[i] : dflt[i];
    for (int i = 1; i < nlens; i++) /* ascending */
        for (int j = i; j > 0 && lens[j - 1] > lens[j]; j--) {
            int t = lens[j];
            lens[j] = lens[j - 1];
            lens[j - 1] = t;
        }
    double ms[16][3];
    tune_shape sh = {batch, hq, hkv, hd, dt};
    fprintf(stderr, "sale tune: dense_below: timing fused, two-pass and dense, B=%d Hq=%d Hkv=%d D=%d %s, %d reps\n",
            batch, hq, hkv, hd, sale_dtype_name(dt), reps);
    if (tune_mode_times(ctx, &sh, lens, nlens, reps, ms)) {
        fprintf(stderr, "sale tune: dense_below: %s\n", sale_last_error(ctx));
        return 1;
    }
    printf("| N | fused ms | two-pass ms | dense ms | SALE pays |\n|---|---|---|---|---|\n");
    for (int i = 0; i < nlens; i++) {
        double best = ms[i][0] < ms[i][1] ? ms[i][0] : ms[i][1];
        printf("| %d | %.4f | %.4f | %.4f | %s |\n", lens[i], ms[i][0], ms[i][1], ms[i][2],
               best < ms[i][2] ? "yes" : "no");
    }
    int db = tune_pick_dense_below(lens, nlens, ms);
    if (tune_save_dense_below(ctx, dev, db, 0)) {
        fprintf(stderr, "sale tune: dense_below: %s\n", sale_last_error(ctx));
        return 1;
    }
    printf("dense_below %d stored for %s (%d SMs, driver %d); the built-in default for sm_%d is %d\n", db,
           dev->name, dev->sm_count, dev->driver_version, dev->arch,
           tune_dense_below_default(tune_code_arch(dev->arch)));
    return 0;
}

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sale tune: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'sale tune --help')\n");
    va_end(ap);
    return 2;
}

/* tune takes no positional arguments: argv[i] is a stray value, named with
 * the option before it (argv[opt] .. argv[i - 1]; opt 0: none) so that
 * "--heads 32 0" does not read as an option '0' */
static int unexpected(int argc, char **argv, int opt, int i)
{
    if (!opt)
        return usage("unexpected argument '%s'", argv[i]);
    char after[512] = "";
    size_t n = 0;
    for (int k = opt; k < i && k < argc && n < sizeof after; k++)
        n += (size_t)snprintf(after + n, sizeof after - n, "%s%s", k > opt ? " " : "", argv[k]);
    return usage("unexpected argument '%s' (after %s)", argv[i], after);
}

int cli_tune(sale_ctx *ctx, const void *cfgp, int argc, char **argv)
{
    const sale_config *cfg = cfgp;
    sale_family fams[8] = {SALE_FAMILY_FUSED, SALE_FAMILY_DENSE};
    int nf = 2, seqs[16] = {16384}, nseq = 1, batch = 1, hq = 32, hkv = 8, hd = 128, reps = 20;
    unsigned seed = 1;
    int dense_below = 0, seq_given = 0, thr = cfg ? cfg->defaults.thr : 0;
    sale_dtype dt = SALE_DTYPE_BF16;
    char strategy[32] = "exhaustive";
    double budget = 0;
    const int *cw = NULL, *cs = NULL;
    int ncw = 0, ncs = 0;
    const char *tiles_only = NULL; /* an option --dense-below does not use, as given */
    if (cfg) {
        if (cfg->tuning.strategy[0])
            snprintf(strategy, sizeof strategy, "%s", cfg->tuning.strategy);
        budget = cfg->tuning.budget_s;
        cw = cfg->tuning.warps;
        ncw = cfg->tuning.n_warps;
        cs = cfg->tuning.stages;
        ncs = cfg->tuning.n_stages;
    }
    for (int i = 1, opt = 0; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-')
            return unexpected(argc, argv, opt, i);
        opt = i;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(tune_help, stdout);
            return 0;
        }
        if (!strcmp(o, "--dense-below")) {
            dense_below = 1;
            continue;
        }
        if (!v)
            return usage("option '%s' needs a value", o);
        i++;
        if (!strcmp(o, "--family") || !strcmp(o, "--strategy") || !strcmp(o, "--budget") || !strcmp(o, "--seed") ||
            !strcmp(o, "--thr"))
            tiles_only = o;
        if (!strcmp(o, "--family")) {
            if ((nf = parse_families(v, fams, 8)) <= 0)
                return usage("--family: expected a list of fused, select, attend, dense (plain, version 0, is "
                             "never tuned), got '%s'", v);
        } else if (!strcmp(o, "--seq-len")) {
            if ((nseq = parse_list(v, seqs, 16)) <= 0)
                return usage("--seq-len: expected a list of positive integers, got '%s'", v);
            seq_given = 1;
        } else if (!strcmp(o, "--heads")) {
            int h[2], n = parse_list(v, h, 2);
            if (n == 1 && i + 1 < argc && argv[i + 1][0] != '-' && parse_list(argv[i + 1], h + 1, 1) == 1) {
                n = 2;
                i++;
            }
            if (n < 1)
                return usage("--heads: expected HQ [HKV], got '%s'", v);
            hq = h[0];
            hkv = n == 2 ? h[1] : h[0];
            if (hq % hkv)
                return usage("--heads: HQ must be a multiple of HKV (%s)", v);
        } else if (!strcmp(o, "--batch")) {
            if (parse_list(v, &batch, 1) != 1)
                return usage("--batch: expected a positive integer, got '%s'", v);
        } else if (!strcmp(o, "--head-dim")) {
            if (parse_list(v, &hd, 1) != 1 || (hd != 64 && hd != 128))
                return usage("--head-dim: 64 or 128, got '%s'", v);
        } else if (!strcmp(o, "--dtype")) {
            if (!strcmp(v, "bf16")) dt = SALE_DTYPE_BF16;
            else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) dt = SALE_DTYPE_F16;
            else return usage("--dtype: bf16 or f16, got '%s'", v);
        } else if (!strcmp(o, "--strategy")) {
            if (strcmp(v, "exhaustive") && strcmp(v, "halving") && strcmp(v, "random"))
                return usage("--strategy: exhaustive, halving or random, got '%s'", v);
            snprintf(strategy, sizeof strategy, "%s", v);
        } else if (!strcmp(o, "--budget")) {
            if (!cli_double(v, &budget) || !(budget >= 0) || isinf(budget)) /* "", nan and inf too */
                return usage("--budget: seconds (>= 0), got '%s'", v);
        } else if (!strcmp(o, "--reps")) {
            if (parse_list(v, &reps, 1) != 1)
                return usage("--reps: expected a positive integer, got '%s'", v);
        } else if (!strcmp(o, "--thr")) {
            if ((thr = sale_thr_parse(v)) < 0)
                return usage("--thr: run or fixed, got '%s'", v);
        } else if (!strcmp(o, "--seed")) {
            int s;
            if (parse_list(v, &s, 1) != 1)
                return usage("--seed: expected a positive integer, got '%s'", v);
            seed = (unsigned)s;
        } else {
            return usage("unknown option '%s'", o);
        }
    }
    if (dense_below && tiles_only)
        return usage("--dense-below times fused, two-pass and dense at their default tiles: %s does not apply to it "
                     "(run the tile tuning without --dense-below)", tiles_only);
    if (!ctx) /* arguments checked only (see cli_tune.h) */
        return -1;
    int ndev = 0;
    sale_device_info dev;
    if (sale_device_count(ctx, &ndev) != SALE_OK || ndev < 1) {
        fprintf(stderr, "sale tune: no GPU: %s\n", ndev < 1 && !sale_last_error(ctx)[0] ? "no CUDA device"
                                                                                         : sale_last_error(ctx));
        return 1;
    }
    if (sale_device_info_get(ctx, 0, &dev) != SALE_OK) {
        fprintf(stderr, "sale tune: no GPU: %s\n", sale_last_error(ctx));
        return 1;
    }
    int arch = tune_code_arch(dev.arch);
    if (!arch) {
        fprintf(stderr, "sale tune: %s is sm_%d; sale's kernels target sm_80, sm_86, sm_89 and sm_90\n", dev.name,
                dev.arch);
        return 1;
    }
    /* thr 0: what sale_attention runs here by default, so that the winners
     * are those of the kernels a default call runs */
    if (!thr)
        thr = sale_attention_default_thr(dev.arch);
    fprintf(stderr, "sale tune: %s (sm_%d, %d SMs, driver %d), strategy %s, %d reps, budget %s, L2 flushed with %u MB "
                    "between repetitions, thr=%s\n",
            dev.name, dev.arch, dev.sm_count, dev.driver_version, strategy, reps, budget > 0 ? "set" : "none",
            TUNE_FLUSH_BYTES >> 20, sale_thr_name(thr));
    if (dense_below)
        return dense_below_cmd(ctx, &dev, batch, hq, hkv, hd, dt, seq_given ? seqs : NULL, nseq, reps);
    int rc = 0;
    for (int si = 0; si < nseq && !rc; si++) {
        sale_key base = sale_key_default(SALE_FAMILY_FUSED);
        base.head_dim = hd;
        base.dtype = dt;
        base.arch = arch;
        if (cfg) {
            base.block_q = cfg->defaults.block_q;
            base.block_k = cfg->defaults.block_k;
            base.block_seg = cfg->defaults.block_seg;
            base.local_window = cfg->defaults.local_window;
        }
        base.thr = thr;
        tune_gpu *g = NULL;
        fprintf(stderr, "sale tune: generating inputs B=%d Hq=%d Hkv=%d N=%d D=%d\n", batch, hq, hkv, seqs[si], hd);
        if (tune_gpu_create(ctx, &base, batch, hq, hkv, seqs[si], seed, &g)) {
            fprintf(stderr, "sale tune: %s\n", sale_last_error(ctx));
            rc = 1;
            break;
        }
        for (int fi = 0; fi < nf; fi++) {
            base.family = fams[fi];
            /* the kernel sale_attention runs here (sm_90: dense, attend and the thr=fixed
             * select are sm_90a) */
            base.arch = arch;
            base.arch = sale_key_run_arch(&base, arch);
            tune_candidate c[TUNE_MAX_CANDIDATES];
            int illegal = 0, pruned = 0;
            char err[512] = "", label[64], bucket[32];
            tune_bucket(seqs[si], bucket, sizeof bucket);
            snprintf(label, sizeof label, "%s %s", sale_family_name(fams[fi]), bucket);
            /* the default at this length (the rows kernel up to 128K on sm_90a attend) */
            int n = tune_space_key(&base, seqs[si], cw, ncw, cs, ncs, c, TUNE_MAX_CANDIDATES, &illegal, err, sizeof err);
            if (n < 0) {
                fprintf(stderr, "sale tune: %s: %s\n", label, err);
                rc = 1;
                break;
            }
            int total = n;
            n = tune_prune(ctx, c, n, &dev, &pruned);
            fprintf(stderr, "sale tune: %s: %d legal tile choices (%d illegal), %d pruned without a launch, %d to time\n",
                    label, total, illegal, pruned, n);
            for (int i = n; i < total; i++)
                fprintf(stderr, "sale tune: %s: pruned warps=%d stages=%d: %s\n", label, c[i].warps, c[i].stages,
                        c[i].why);
            for (int i = 0; i < n; i++)
                fprintf(stderr, "sale tune: %s: warps=%d stages=%d: %d registers, %d B shared memory%s\n", label,
                        c[i].warps, c[i].stages, c[i].registers, c[i].smem, c[i].spills ? ", spills" : "");
            /* the default goes first: under a tight budget it is always measured */
            int dflt = -1;
            for (int i = 0; i < n; i++)
                if (c[i].is_default) {
                    tune_candidate t = c[i];
                    memmove(&c[1], &c[0], sizeof *c * (size_t)i);
                    c[0] = t;
                    dflt = 0;
                }
            if (n < 1) {
                fprintf(stderr, "sale tune: %s: nothing to time\n", label);
                continue;
            }
            if (dflt < 0) {
                fprintf(stderr, "sale tune: %s: the default tiles cannot run here; no reference to check against\n",
                        label);
                continue;
            }
            if (tune_gpu_prepare(g, fams[fi], c[dflt].warps, c[dflt].stages)) {
                fprintf(stderr, "sale tune: %s: reference run with the default tiles: %s\n", label,
                        sale_last_error(ctx));
                rc = 1;
                break;
            }
            cli_progress pr = {label, n};
            tune_opts o = {.reps = reps, .budget_s = budget, .progress = cli_progress_cb, .progress_user = &pr,
                           .seed = seed};
            tune_result res;
            int w = !strcmp(strategy, "halving") ? tune_halving(c, n, tune_gpu_cost, g, &o, &res)
                    : !strcmp(strategy, "random") ? tune_random(c, n, tune_gpu_cost, g, &o, &res)
                                                  : tune_exhaustive(c, n, tune_gpu_cost, g, &o, &res);
            if (w < 0) {
                fprintf(stderr, "sale tune: %s: no candidate passed\n", label);
                rc = 1;
                continue;
            }
            /* the default at full repetitions, for an honest gain */
            if (!c[dflt].failed && c[dflt].reps != o.reps && w != dflt) {
                double ms, sp;
                char e[TUNE_ERR_LEN] = "";
                if (!tune_gpu_cost(g, &c[dflt], o.reps, &ms, &sp, e)) {
                    c[dflt].ms = ms;
                    c[dflt].spread = sp;
                    c[dflt].reps = o.reps;
                }
            }
            /* a winner must beat the default at full repetitions, and by more
             * than the measurements' spread: a gain inside the noise keeps the
             * default (the winner would not be stable from run to run) */
            if (w != dflt && !c[dflt].failed && c[dflt].reps == o.reps) {
                double noise = c[dflt].spread > c[w].spread ? c[dflt].spread : c[w].spread;
                if (c[w].ms >= c[dflt].ms * (1.0 - noise))
                    w = dflt;
            }
            int idx[TUNE_MAX_CANDIDATES];
            for (int i = 0; i < total; i++)
                idx[i] = i;
            tune_sort_indices(c, idx, n);
            printf("\n%s  (B=%d Hq=%d Hkv=%d N=%d D=%d %s, %s, %d tried, %d measurements%s)\n", label, batch, hq, hkv,
                   seqs[si], hd, sale_dtype_name(dt), strategy, res.tried, res.measured,
                   res.out_of_budget ? ", budget ran out" : "");
            printf("%4s %5s %6s %10s %7s %5s %5s %8s %s\n", "rank", "warps", "stages", "median ms", "spread", "reps",
                   "regs", "smem KB", "");
            for (int r = 0, shown = 0; r < n && shown < 10; r++) {
                const tune_candidate *t = &c[idx[r]];
                if (t->reps == 0 && !t->failed)
                    continue;
                shown++;
                if (t->failed)
                    printf("%4s %5d %6d %10s %7s %5s %5d %8.1f disqualified: %s\n", "-", t->warps, t->stages, "-",
                           "-", "-", t->registers, t->smem / 1024.0, t->why);
                else
                    printf("%4d %5d %6d %10.4f %6.1f%% %5d %5d %8.1f %s%s%s\n", shown, t->warps, t->stages, t->ms,
                           100 * t->spread, t->reps, t->registers, t->smem / 1024.0, idx[r] == w ? "winner " : "",
                           t->is_default ? "default " : "", t->spills ? "spills" : "");
            }
            if (!c[dflt].failed && c[dflt].reps > 0)
                printf("winner warps=%d stages=%d %.4f ms; default warps=%d stages=%d %.4f ms; gain %.2fx (%+.1f%%)\n",
                       c[w].warps, c[w].stages, c[w].ms, c[dflt].warps, c[dflt].stages, c[dflt].ms,
                       c[dflt].ms / c[w].ms, 100.0 * (c[dflt].ms / c[w].ms - 1.0));
            else
                printf("winner warps=%d stages=%d %.4f ms; the default tiles were not measured\n", c[w].warps,
                       c[w].stages, c[w].ms);
            if (tune_save_winner(ctx, &dev, &base, seqs[si], &c[w].key, c[w].ms, 100 * c[w].spread, res.tried)) {
                fprintf(stderr, "sale tune: %s: %s\n", label, sale_last_error(ctx));
                rc = 1;
            } else {
                printf("stored for %s, %s, %d SMs, driver %d, %s\n", dev.name, sale_arch_name(arch), dev.sm_count,
                       dev.driver_version, bucket);
            }
        }
        tune_gpu_destroy(g);
    }
    return rc;
}
