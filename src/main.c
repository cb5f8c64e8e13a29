/* main.c — the `sale` command: info, prewarm, ls, verify, export, import,
 * key, run, tune, clear. It sits on the library's public API (sale.h) and
 * the config file (config.h); it is the only part of sale that prints. */
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include "cli_num.h"
#include "config.h"
#include "sale.h"
#include "sale_layout.h" /* SALE_WR_*, SALE_WG_WARPS: which attend kernel runs where */
#include "cli_tune.h"
#include "tune.h"

static int g_quiet;

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sale: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'sale --help')\n");
    va_end(ap);
    exit(2);
}

static void log_cb(void *user, sale_log_level level, const char *msg)
{
    (void)user;
    if (level >= SALE_LOG_WARN || !g_quiet)
        if (level >= SALE_LOG_INFO)
            fprintf(stderr, "sale: %s: %s\n", level >= SALE_LOG_ERROR ? "error" : level == SALE_LOG_WARN ? "warning" : "info", msg);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---------------------------------------------------------- global options */

typedef struct gopts {
    const char *cache;
    const char *fleet;
    const char *config;
} gopts;

static sale_config g_cfg;

static void load_config(const gopts *g)
{
    cfg_defaults_init(&g_cfg);
    char path[1024], err[1024];
    int found = cfg_find(g->config, path, sizeof path, err, sizeof err);
    if (found < 0) {
        fprintf(stderr, "sale: %s\n", err);
        exit(1);
    }
    if (found == 1 && cfg_load(path, &g_cfg, err, sizeof err) != SALE_OK) {
        fprintf(stderr, "sale: %s\n", err);
        exit(1);
    }
}

/* A command that only looks (ls, verify, info, export) creates no cache and
 * no directory: a cache that does not exist is reported. NO_CREATE_FLEET:
 * with a fleet file, the command goes on with the fleet alone. */
enum { NO_CREATE = 1, NO_CREATE_FLEET = 2 };
static int g_no_create;

/* The cache file the context will open: the named one, else the default
 * location in sale_create's order (sale.h, sale_options.cache_path), so that
 * a command that only looks can see it is missing before anything is made.
 * NULL when nothing names a place (sale_create then says why). */
static const char *cache_file(const gopts *g, char *buf, size_t len)
{
    if (g->cache)
        return g->cache;
    if (g_cfg.cache_path[0])
        return g_cfg.cache_path;
    return sale_default_cache_path(buf, len, NULL) ? NULL : buf;
}

/* The cache file when it does not exist (cache_file; ":memory:" always
 * exists), errno set by the look; NULL when it exists or nothing names one. */
static const char *missing_cache(const gopts *g, char *buf, size_t len)
{
    const char *file = cache_file(g, buf, len);
    return file && strcmp(file, ":memory:") && access(file, F_OK) != 0 ? file : NULL;
}

static const char *fleet_file(const gopts *g)
{
    return g->fleet ? g->fleet : g_cfg.fleet_cache[0] ? g_cfg.fleet_cache : NULL;
}

static sale_ctx *open_ctx(const gopts *g)
{
    sale_options o;
    memset(&o, 0, sizeof o);
    o.cache_path = g->cache ? g->cache : g_cfg.cache_path[0] ? g_cfg.cache_path : NULL;
    o.fleet_path = fleet_file(g);
    char def[1100];
    const char *file = g_no_create ? missing_cache(g, def, sizeof def) : NULL;
    if (file) {
        if (g_no_create == NO_CREATE_FLEET && o.fleet_path && errno == ENOENT) {
            fprintf(stderr, "sale: no cache at %s (nothing created): the fleet file %s alone\n", file, o.fleet_path);
            o.cache_path = ":memory:";
        } else {
            fprintf(stderr, "sale: no cache at %s: %s (nothing created)\n", file, strerror(errno));
            exit(1);
        }
    }
    o.log = log_cb;
    /* the commands that only look (ls, verify, info, export) never create, move or rebuild the cache */
    o.existing_only = g_no_create && strcmp(o.cache_path ? o.cache_path : "", ":memory:") != 0;
    sale_ctx *ctx = NULL;
    sale_status s = sale_create(&ctx, &o);
    if (!s)
        s = thresholds_attach_config(ctx, g_cfg.thresholds, g_cfg.n_thresholds);
    if (s) {
        fprintf(stderr, "sale: %s\n", ctx ? sale_last_error(ctx) : "out of memory");
        sale_destroy(ctx);
        exit(1);
    }
    return ctx;
}

/* Parse "a,b,c" into ints via fn; returns count. */
static int parse_list(const char *text, int *out, int max, int (*fn)(const char *), const char *what)
{
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int)sizeof buf) /* never a cut list: "sm_90a" cut is "sm_90" */
        die_usage("%s: list longer than %zu characters", what, sizeof buf - 1);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n >= max)
            die_usage("%s: at most %d values", what, max);
        int v = fn(t);
        if (v < 0)
            die_usage("%s: bad value '%s'", what, t);
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = out[i] == v;
        if (!dup)
            out[n++] = v;
    }
    if (!n)
        die_usage("%s: empty list", what);
    return n;
}

/* parse_list, adding to the n values already in out (an option given
 * again adds to its list: the last one silently won before); returns the new
 * count */
static int append_list(const char *text, int *out, int n, int max, int (*fn)(const char *), const char *what)
{
    int more[CFG_MAX_LIST];
    int nm = parse_list(text, more, max < CFG_MAX_LIST ? max : CFG_MAX_LIST, fn, what);
    for (int i = 0; i < nm; i++) {
        int dup = 0;
        for (int x = 0; x < n && !dup; x++)
            dup = out[x] == more[i];
        if (dup)
            continue;
        if (n == max)
            die_usage("%s: at most %d values", what, max);
        out[n++] = more[i];
    }
    return n;
}

/* an integer in [0, 2^20], else -1 */
static int int_of(const char *t)
{
    long v;
    return cli_long(t, 0, 1L << 20, &v) ? (int)v : -1;
}

/* an integer in [1, 2^20], else -1: a size, where 0 would silently mean
 * "the default" (an open key field) */
static int pos_of(const char *t)
{
    long v;
    return cli_long(t, 1, 1L << 20, &v) ? (int)v : -1;
}

static int arch_of(const char *t)
{
    int a = sale_arch_parse(t);
    return a <= 0 ? -1 : a;
}

/* prewarm's --arch names devices: sm_90a is what it compiles for sm_90 */
static int device_arch_of(const char *t)
{
    int a = arch_of(t);
    if (a == SALE_ARCH_SM90A)
        die_usage("--arch: prewarm names devices: sm_90 (it compiles the sm_90a kernels with it), got '%s'", t);
    return a;
}

/* Does an --arch filter (n archs; none: all) keep a row of arch? A base arch
 * keeps its arch-specific variant too: on sm_90 devices sale runs the sm_90a
 * cubins of the wgmma kernels, so "sm_90" means both; "sm_90a" only itself.
 * The same rule as the export's (db_export). */
static int arch_kept(const int *archs, int n, const char *arch)
{
    if (!n)
        return 1;
    for (int i = 0; i < n; i++) {
        const char *f = sale_arch_name(archs[i]);
        size_t l = f ? strlen(f) : 0;
        if (f && !strncmp(arch, f, l) && (!arch[l] || (arch[l] == 'a' && !arch[l + 1])))
            return 1;
    }
    return 0;
}

static int family_of(const char *t)
{
    for (int i = 0; i < SALE_FAMILY_COUNT; i++)
        if (!strcmp(t, sale_family_name((sale_family)i)))
            return i;
    return -1;
}

static int dtype_of(const char *t)
{
    if (!strcmp(t, "f16") || !strcmp(t, "fp16"))
        return SALE_DTYPE_F16;
    if (!strcmp(t, "bf16"))
        return SALE_DTYPE_BF16;
    return -1;
}

/* The cache file's size for a summary line (0 if it cannot be had). */
static double cache_bytes(sale_ctx *ctx)
{
    int64_t b = 0;
    return sale_cache_file_bytes(ctx, &b) == SALE_OK ? (double)b : 0;
}

static void human_bytes(double b, char *buf, size_t len)
{
    const char *u[] = {"B", "KB", "MB", "GB"};
    int i = 0;
    while (b >= 1024 && i < 3) {
        b /= 1024;
        i++;
    }
    snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

/* ------------------------------------------------------------------ info */

static const char *info_help = "usage: sale info\n"
                               "Library, NVRTC, driver and devices, cache path and size, embedded templates.\n";

static int cmd_info(const gopts *g, int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(info_help, stdout);
        return 0;
    }
    if (argc > 1)
        die_usage("info: unexpected argument '%s'", argv[1]);
    /* info only looks: a cache that does not exist, named or at the default
     * location, is reported, not created (nor its directories); the context
     * then uses none */
    char def[1100];
    const char *named = missing_cache(g, def, sizeof def);
    const int missing = named != NULL;
    gopts gm = *g;
    if (missing)
        gm.cache = ":memory:";
    g_no_create = NO_CREATE; /* and a damaged one is reported, not moved aside */
    sale_ctx *ctx = open_ctx(&gm);
    int nv = 0;
    sale_nvrtc_version(&nv);
    printf("sale %s\n", SALE_VERSION_STRING);
    printf("nvrtc      %d.%d\n", nv / 1000, (nv % 1000) / 10);
    int n = 0;
    if (sale_device_count(ctx, &n) != SALE_OK) {
        printf("driver     none (%s): compile-only mode\n", sale_last_error(ctx));
    } else {
        for (int i = 0; i < n; i++) {
            sale_device_info di;
            if (sale_device_info_get(ctx, i, &di) == SALE_OK) {
                if (i == 0)
                    printf("driver     %d.%d\n", di.driver_version / 1000, (di.driver_version % 1000) / 10);
                printf("device %d   %s, sm_%d, %d SMs, %.1f GB, %d KB smem/block\n", i, di.name, di.arch,
                       di.sm_count, di.total_mem / 1e9, di.smem_optin / 1024);
                /* which cubins sale_attention runs there (sale_attention_arch) */
                int ca = tune_code_arch(di.arch);
                int wa = ca ? sale_attention_arch(SALE_FAMILY_DENSE, 128, 64, 32, ca) : 0;
                if (ca)
                    printf("           kernels: %s; dense and attend at head_dim 128: %s%s\n", sale_arch_name(ca),
                           sale_arch_name(wa), wa == SALE_ARCH_SM90A ? " (wgmma + TMA)" : "");
                if (wa == SALE_ARCH_SM90A) {
                    printf("           two-pass select with thr=fixed: sm_90a (wgmma estimation)\n");
                    printf("           fused at block_q 64: sm_90a (attention half on wgmma)\n");
                    printf("           attend up to %dK: one mask row a CTA (warps %d); above: two rows a CTA (warps %d);\n"
                           "           above %dK with thr=fixed the device picks one per call (two rows iff the select "
                           "keeps %.1f%% of the causal blocks or more)\n",
                           SALE_WR_DEFAULT_MAX_N / 1024, SALE_WR_WARPS, SALE_WG_WARPS, SALE_WR_PICK_MIN_N / 1024,
                           100.0 * SALE_WR_PICK_DENSITY);
                }
            }
        }
        if (!n)
            printf("devices    none\n");
    }
    char sz[32];
    human_bytes(cache_bytes(ctx), sz, sizeof sz);
    if (missing)
        printf("cache      no cache at %s (does not exist yet: created at the first compile)\n", named);
    else
        printf("cache      %s (%s)\n", sale_cache_path(ctx), sz);
    if (sale_fleet_path(ctx)[0])
        printf("fleet      %s (read-only)\n", sale_fleet_path(ctx));
    printf("config     %s\n", g_cfg.path[0] ? g_cfg.path : "(built-in defaults)");
    printf("templates ");
    for (int i = 0; sale_template_name(i); i++)
        printf(" %s", sale_template_name(i));
    printf("\n");
    sale_destroy(ctx);
    return 0;
}

/* --------------------------------------------------------------- prewarm */

static const char *prewarm_help =
    "usage: sale prewarm [options]\n"
    "Compile every kernel a fleet needs into the cache (no GPU needed). The set is\n"
    "archs x head dims x families x dtypes x block sizes, from the config file\n"
    "(fleet = {...}) or these flags; a second run compiles nothing. On sm_90 the\n"
    "dense and attend kernels at head dim 128, the thr=fixed select and fused at\n"
    "block_q 64 are built for sm_90a (the wgmma kernels that sale_attention runs\n"
    "on Hopper); attend in both its kernels there (two rows a CTA, warps 12, and\n"
    "one row at a time a CTA, warps 5: the default up to 128K).\n"
    "  --arch LIST        sm_80,sm_86,sm_89,sm_90 (default: the config's fleet)\n"
    "  --head-dim LIST    64,128\n"
    "  --family LIST      quantize,fused,select,attend,dense (default: the config's\n"
    "                     fleet, all five), or plain (version 0: a slow reference\n"
    "                     kernel for reading and checking, only when named)\n"
    "  --dtype LIST       bf16,f16\n"
    "  --block-q LIST     --block-k LIST  --block-seg LIST  --window LIST\n"
    "  --thr LIST         threshold variants: run,fixed (default: the config's fleet,\n"
    "                     both); only fused, select and plain have one\n"
    "  --jobs N           compile threads (default: number of cores)\n"
    "  -q, --quiet        no progress line\n";

typedef struct job {
    sale_key key;
    sale_status st;
    sale_kernel_info info;
    double ms;
    char err[256];
} job;

typedef struct pool {
    sale_ctx *ctx;
    job *jobs;
    int n, next, done;
    pthread_mutex_t m;
    double t0;
    int tty;
} pool;

static void *worker(void *arg)
{
    pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->m);
        int i = p->next < p->n ? p->next++ : -1;
        pthread_mutex_unlock(&p->m);
        if (i < 0)
            return NULL;
        job *j = &p->jobs[i];
        double t = now_s();
        j->st = sale_compile(p->ctx, &j->key, &j->info);
        j->ms = (now_s() - t) * 1e3;
        if (j->st)
            snprintf(j->err, sizeof j->err, "%s", sale_last_error(p->ctx));
        pthread_mutex_lock(&p->m);
        p->done++;
        if (p->tty && !g_quiet) {
            char k[256];
            sale_key_format(&j->key, k, sizeof k);
            fprintf(stderr, "\r\033[K[%d/%d] %.1fs %s%s", p->done, p->n, now_s() - p->t0, k,
                    j->st ? " FAILED" : j->info.from_cache ? " (cached)" : "");
        }
        pthread_mutex_unlock(&p->m);
    }
}

static int cmd_prewarm(const gopts *g, int argc, char **argv)
{
    cfg_fleet f = g_cfg.fleet;
    /* a list option replaces the config's list; given again, it adds to it */
    int given[128] = {0};
    int jobs_n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    static const struct option lo[] = {{"arch", 1, 0, 'a'},     {"head-dim", 1, 0, 'd'}, {"family", 1, 0, 'f'},
                                       {"dtype", 1, 0, 't'},    {"block-q", 1, 0, 'Q'},  {"block-k", 1, 0, 'K'},
                                       {"block-seg", 1, 0, 'S'}, {"window", 1, 0, 'W'},  {"jobs", 1, 0, 'j'},
                                       {"thr", 1, 0, 'T'},      {"quiet", 0, 0, 'q'},    {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qhj:", lo, NULL)) != -1) {
        switch (c) {
        case 'a': f.n_archs = append_list(optarg, f.archs, given['a']++ ? f.n_archs : 0, CFG_MAX_LIST, device_arch_of, "--arch"); break;
        case 'd': f.n_head_dims = append_list(optarg, f.head_dims, given['d']++ ? f.n_head_dims : 0, CFG_MAX_LIST, pos_of, "--head-dim"); break;
        case 'f': f.n_families = append_list(optarg, (int *)f.families, given['f']++ ? f.n_families : 0, CFG_MAX_LIST, family_of, "--family"); break;
        case 't': f.n_dtypes = append_list(optarg, (int *)f.dtypes, given['t']++ ? f.n_dtypes : 0, CFG_MAX_LIST, dtype_of, "--dtype"); break;
        case 'Q': f.n_block_qs = append_list(optarg, f.block_qs, given['Q']++ ? f.n_block_qs : 0, CFG_MAX_LIST, pos_of, "--block-q"); break;
        case 'K': f.n_block_ks = append_list(optarg, f.block_ks, given['K']++ ? f.n_block_ks : 0, CFG_MAX_LIST, pos_of, "--block-k"); break;
        case 'S': f.n_block_segs = append_list(optarg, f.block_segs, given['S']++ ? f.n_block_segs : 0, CFG_MAX_LIST, pos_of, "--block-seg"); break;
        case 'W': f.n_local_windows = append_list(optarg, f.local_windows, given['W']++ ? f.n_local_windows : 0, CFG_MAX_LIST, pos_of, "--window"); break;
        case 'T': f.n_thrs = append_list(optarg, f.thrs, given['T']++ ? f.n_thrs : 0, CFG_MAX_LIST, sale_thr_parse, "--thr"); break;
        case 'j': jobs_n = int_of(optarg); if (jobs_n < 1) die_usage("--jobs: expected a positive number"); break;
        case 'q': g_quiet = 1; break;
        case 'h': fputs(prewarm_help, stdout); return 0;
        default: die_usage("prewarm: bad option");
        }
    }
    if (optind < argc)
        die_usage("prewarm: unexpected argument '%s'", argv[optind]);
    char ferr[512];
    if (cfg_fleet_normalize(&f, ferr, sizeof ferr) != 0) {
        fprintf(stderr, "sale: prewarm: %s\n", ferr);
        return 1;
    }

    /* The set, deduplicated by canonical text (families ignore fields they do not use). */
    int cap = 1024, n = 0;
    job *jobs = calloc((size_t)cap, sizeof *jobs);
    char (*texts)[256] = calloc((size_t)cap, 256);
    if (!jobs || !texts)
        return 1;
    for (int ia = 0; ia < f.n_archs; ia++)
        for (int ifm = 0; ifm < f.n_families; ifm++)
            for (int id = 0; id < f.n_head_dims; id++)
                for (int it = 0; it < f.n_dtypes; it++)
                    for (int iq = 0; iq < f.n_block_qs; iq++)
                        for (int ik = 0; ik < f.n_block_ks; ik++)
                            for (int is = 0; is < f.n_block_segs; is++)
                                for (int iw = 0; iw < f.n_local_windows; iw++)
                                for (int ih = 0; ih < f.n_thrs; ih++)
                                {
                                    sale_key k0 = sale_key_default(f.families[ifm]);
                                    k0.arch = f.archs[ia];
                                    k0.head_dim = f.head_dims[id];
                                    k0.dtype = f.dtypes[it];
                                    k0.block_q = f.block_qs[iq];
                                    k0.block_k = f.block_ks[ik];
                                    k0.block_seg = f.block_segs[is];
                                    k0.local_window = f.local_windows[iw];
                                    k0.thr = f.thrs[ih];
                                    /* the code width: the config's arch section, else its
                                     * defaults, else the library's (4 below sm_90, 8 on it) */
                                    k0.est_bits = g_cfg.defaults.est_bits;
                                    for (int x = 0; x < g_cfg.n_arch_defaults; x++)
                                        if (g_cfg.arch_default_codes[x] == f.archs[ia] &&
                                            g_cfg.arch_defaults[x].est_bits)
                                            k0.est_bits = g_cfg.arch_defaults[x].est_bits;
                                    /* what sale_attention runs on a device of this arch (on
                                     * sm_90: the wgmma kernels, sm_90a cubins, and attend's
                                     * rows kernel beside its two-row one) */
                                    sale_key run[2];
                                    char err[256];
                                    int nr = sale_key_run_set(&k0, run, err, sizeof err);
                                    if (nr < 0) {
                                        fprintf(stderr, "sale: prewarm: %s\n", err);
                                        return 1;
                                    }
                                    for (int r = 0; r < nr; r++) {
                                    sale_key k = run[r];
                                    char t[256];
                                    sale_key_format(&k, t, sizeof t);
                                    int dup = 0;
                                    for (int x = 0; x < n && !dup; x++)
                                        dup = !strcmp(texts[x], t);
                                    if (dup)
                                        continue;
                                    if (n == cap) {
                                        fprintf(stderr, "sale: prewarm: more than %d kernels in the set\n", cap);
                                        return 1;
                                    }
                                    strcpy(texts[n], t);
                                    jobs[n++].key = k;
                                    }
                                }
    free(texts);
    sale_ctx *ctx = open_ctx(g);
    pool p = {.ctx = ctx, .jobs = jobs, .n = n, .t0 = now_s(), .tty = isatty(2)};
    pthread_mutex_init(&p.m, NULL);
    if (jobs_n > n)
        jobs_n = n ? n : 1;
    if (!g_quiet)
        fprintf(stderr, "sale: prewarm: %d kernels, %d threads, cache %s\n", n, jobs_n, sale_cache_path(ctx));
    pthread_t th[64];
    if (jobs_n > 64)
        jobs_n = 64;
    for (int i = 0; i < jobs_n; i++)
        pthread_create(&th[i], NULL, worker, &p);
    for (int i = 0; i < jobs_n; i++)
        pthread_join(th[i], NULL);
    if (p.tty && !g_quiet)
        fprintf(stderr, "\r\033[K");
    double total = now_s() - p.t0;

    /* summary per arch */
    printf("%-8s %8s %8s %8s %8s %10s %12s\n", "arch", "kernels", "compiled", "cached", "failed", "cubin", "compile s");
    int failed = 0, compiled = 0;
    /* the archs of the set, in order (sm_90 brings sm_90a: its dense kernels) */
    int archs[16], na = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int x = 0; x < na && !seen; x++)
            seen = archs[x] == jobs[i].key.arch;
        if (!seen && na < 16)
            archs[na++] = jobs[i].key.arch;
    }
    for (int ia = 0; ia < na; ia++) {
        int nk = 0, nc = 0, nh = 0, nf = 0;
        double bytes = 0, cms = 0;
        for (int i = 0; i < n; i++) {
            if (jobs[i].key.arch != archs[ia])
                continue;
            nk++;
            if (jobs[i].st)
                nf++;
            else if (jobs[i].info.from_cache)
                nh++;
            else {
                nc++;
                cms += jobs[i].info.compile_ms;
            }
            bytes += (double)jobs[i].info.cubin_bytes;
        }
        char b[32];
        human_bytes(bytes, b, sizeof b);
        printf("%-8s %8d %8d %8d %8d %10s %12.1f\n", sale_arch_name(archs[ia]), nk, nc, nh, nf, b, cms / 1e3);
        failed += nf;
        compiled += nc;
    }
    char sz[32];
    human_bytes(cache_bytes(ctx), sz, sizeof sz);
    printf("%d kernels (%d compiled, %d from cache, %d failed) in %.1f s; cache %s is %s\n", n, compiled,
           n - compiled - failed, failed, total, sale_cache_path(ctx), sz);
    for (int i = 0; i < n; i++)
        if (jobs[i].st) {
            char k[256];
            sale_key_format(&jobs[i].key, k, sizeof k);
            fprintf(stderr, "sale: prewarm: %s: %s\n", k, jobs[i].err);
        }
    free(jobs);
    sale_destroy(ctx);
    return failed ? 1 : 0;
}

/* -------------------------------------------------------------------- ls */

static const char *ls_help = "usage: sale ls [--arch LIST] [--tuned] [--thresholds]\n"
                             "List cached kernels (key, arch, registers, shared memory, spills, cubin bytes,\n"
                             "compile time, hits), or with --tuned the autotuner's winners, or with\n"
                             "--thresholds the calibrated per-head thresholds (model, layer, head, tau,\n"
                             "budget, thr: the variant calibrated with ('-': not recorded), samples,\n"
                             "date, density, error; the fleet file's marked 'fleet'); with both, the\n"
                             "winners, then the thresholds.\n"
                             "  --arch LIST   only these archs (sm_80,sm_90; repeatable); an arch lists its\n"
                             "                arch-specific kernels too: sm_90 lists sm_90a (the wgmma kernels\n"
                             "                sale runs on sm_90 devices), sm_90a only those\n"
                             "A cache that does not exist is reported, never created.\n";

typedef struct ls_state {
    int archs[CFG_MAX_LIST], narch; /* --arch (arch_kept); none: all */
    int rows;
} ls_state;

static int ls_row(void *user, const sale_cache_kernel *r)
{
    ls_state *s = user;
    if (!arch_kept(s->archs, s->narch, r->arch))
        return 0;
    printf("%-78s %-7s %5d %7d %7d %7d %9zu %9.1f %6lld%s\n", r->key, r->arch, r->registers,
           r->smem_static + r->smem_dynamic, r->spill_stores, r->spill_loads, r->cubin_bytes, r->compile_ms,
           (long long)r->hits, r->from_fleet ? " fleet" : "");
    s->rows++;
    return 0;
}

static int tuned_row(void *user, const sale_tuned_entry *r)
{
    ls_state *s = user;
    if (!arch_kept(s->archs, s->narch, r->arch))
        return 0;
    printf("%-24s %-7s %4d %6d %-10s %-60s %9.3f %6.1f%% %5d\n    -> %s\n", r->device, r->arch, r->sm_count,
           r->driver_version, r->bucket, r->key, r->time_ms, r->spread_pct, r->tried, r->winner);
    s->rows++;
    return 0;
}

static int threshold_row(void *user, const sale_threshold_entry *e)
{
    ls_state *s = user;
    const sale_threshold_meta *r = &e->meta;
    char date[32] = "-";
    if (r->created > 0) {
        time_t t = (time_t)r->created;
        struct tm tm;
        strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
    }
    char budget[32] = "-", dens[16] = "-", err[16] = "-";
    if (r->budget > 0)
        snprintf(budget, sizeof budget, "%.4g %s", r->budget, r->budget_abs ? "abs" : "rel");
    if (r->density >= 0)
        snprintf(dens, sizeof dens, "%.4f", r->density);
    if (r->error >= 0)
        snprintf(err, sizeof err, "%.6f", r->error);
    char thr[16] = "-";
    if (r->thr)
        snprintf(thr, sizeof thr, "%s", sale_thr_name(r->thr) ? sale_thr_name(r->thr) : "?");
    printf("%-24s %5d %4d %10.6g %-11s %-5s %7d %-16s %8s %9s%s\n", e->model, e->layer, e->head, e->tau, budget,
           thr, r->samples, date, dens, err, e->from_fleet ? " fleet" : "");
    s->rows++;
    return 0;
}

static int cmd_ls(const gopts *g, int argc, char **argv)
{
    static const struct option lo[] = {{"arch", 1, 0, 'a'}, {"tuned", 0, 0, 't'}, {"thresholds", 0, 0, 'T'},
                                       {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    ls_state s = {0};
    int tuned = 0, thresholds = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': s.narch = append_list(optarg, s.archs, s.narch, CFG_MAX_LIST, arch_of, "--arch"); break;
        case 't': tuned = 1; break;
        case 'T': thresholds = 1; break;
        case 'h': fputs(ls_help, stdout); return 0;
        default: die_usage("ls: bad option");
        }
    }
    if (optind < argc)
        die_usage("ls: unexpected argument '%s'", argv[optind]);
    g_no_create = NO_CREATE_FLEET;
    sale_ctx *ctx = open_ctx(g);
    sale_status rc = SALE_OK;
    /* each section its heading and its count; both flags: both sections */
    if (tuned) {
        printf("%-24s %-7s %4s %6s %-10s %-60s %9s %7s %5s\n", "device", "arch", "SMs", "driver", "bucket", "key",
               "ms", "spread", "tried");
        rc = sale_cache_list_tuned(ctx, tuned_row, &s);
        if (!rc)
            printf("%d tuned entries\n", s.rows);
    }
    if (thresholds && !rc) {
        if (tuned)
            printf("\n");
        s.rows = 0;
        printf("%-24s %5s %4s %10s %-11s %-5s %7s %-16s %8s %9s\n", "model", "layer", "head", "tau", "budget", "thr",
               "samples", "date", "density", "error");
        rc = sale_thresholds_list(ctx, 1, threshold_row, &s);
        if (!rc)
            printf("%d thresholds\n", s.rows);
    }
    if (!tuned && !thresholds) {
        printf("%-78s %-7s %5s %7s %7s %7s %9s %9s %6s\n", "key", "arch", "regs", "smem", "spill.s", "spill.l",
               "cubin", "compile", "hits");
        rc = sale_cache_list_kernels(ctx, 1, ls_row, &s);
        if (!rc)
            printf("%d kernels\n", s.rows);
    }
    if (rc) {
        fprintf(stderr, "sale: ls: %s\n", sale_last_error(ctx));
        sale_destroy(ctx);
        return 1;
    }
    sale_destroy(ctx);
    return 0;
}

/* -------------------------------------------------- verify, export, import */

static int cmd_verify(const gopts *g, int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: sale verify\nCheck every cached cubin against its stored length and hash; bad rows are removed.\n"
             "A cache that does not exist is reported, never created.");
        return 0;
    }
    if (argc > 1)
        die_usage("verify: unexpected argument '%s'", argv[1]);
    g_no_create = NO_CREATE_FLEET;
    sale_ctx *ctx = open_ctx(g);
    int checked = 0, bad = 0;
    if (sale_cache_verify(ctx, &checked, &bad)) {
        fprintf(stderr, "sale: verify: %s\n", sale_last_error(ctx));
        sale_destroy(ctx);
        return 1;
    }
    printf("%d kernels checked, %d bad%s\n", checked, bad, bad ? " (removed; they recompile on next use)" : "");
    sale_destroy(ctx);
    return bad ? 1 : 0;
}

static const char *export_help =
    "usage: sale export FILE [--arch LIST] [--force]\n"
    "Write the cached kernels (of the given archs) into a new cache file to ship to\n"
    "a fleet (use it there as the fleet file: --fleet FILE or cache.fleet in\n"
    "sale.lua). With the kernels go the tuning winners measured on those archs (a\n"
    "fleet of the same devices runs the tuned tiles without tuning) and every\n"
    "calibrated threshold (they do not depend on the arch).\n"
    "  --arch LIST   sm_80,sm_86,sm_89,sm_90,sm_90a (repeatable; default: all); an\n"
    "                arch brings its arch-specific kernels too: sm_90 exports the\n"
    "                sm_90a wgmma kernels that sale runs on sm_90 devices, sm_90a\n"
    "                only those\n"
    "  --force       replace FILE when it exists (an earlier export, or any file)\n"
    "FILE is never the cache itself (refused, force or not). An export that would\n"
    "hold no kernel fails and writes nothing, as does one from a cache that does\n"
    "not exist; a refused export leaves FILE as it was.\n";

typedef struct export_count {
    const int *archs;
    int narch, n;
} export_count;

static int export_counted(void *user, const sale_cache_kernel *k)
{
    export_count *c = user;
    c->n += arch_kept(c->archs, c->narch, k->arch);
    return 0;
}

static int cmd_export(const gopts *g, int argc, char **argv)
{
    static const struct option lo[] = {{"arch", 1, 0, 'a'}, {"force", 0, 0, 'F'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int archs[CFG_MAX_LIST], na = 0, c, force = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': na = append_list(optarg, archs, na, CFG_MAX_LIST, arch_of, "--arch"); break;
        case 'F': force = 1; break;
        case 'h': fputs(export_help, stdout); return 0;
        default: die_usage("export: bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("export: expected one FILE");
    const char *dest = argv[optind];
    g_no_create = NO_CREATE;
    sale_ctx *ctx = open_ctx(g);
    /* Refusals before anything is written. The cache itself is the
     * library's to refuse (force or not); an existing file needs --force. */
    struct stat ds, cs;
    const int exists = stat(dest, &ds) == 0;
    const int own = exists && stat(sale_cache_path(ctx), &cs) == 0 && ds.st_dev == cs.st_dev &&
                    ds.st_ino == cs.st_ino;
    if (!own && !force && exists && S_ISREG(ds.st_mode) && ds.st_size > 0) {
        fprintf(stderr, "sale: export: %s exists; refusing to replace it (--force replaces it)\n", dest);
        sale_destroy(ctx);
        return 1;
    }
    export_count cnt = {archs, na, 0};
    if (!own && sale_cache_list_kernels(ctx, 0, export_counted, &cnt) == SALE_OK && cnt.n == 0) {
        char which[256] = "";
        for (int i = 0; i < na; i++)
            snprintf(which + strlen(which), sizeof which - strlen(which), "%s%s", i ? ", " : " of ",
                     sale_arch_name(archs[i]));
        fprintf(stderr, "sale: export: no kernels%s in %s; nothing written (sale prewarm compiles them)\n", which,
                sale_cache_path(ctx));
        sale_destroy(ctx);
        return 1;
    }
    int n = 0;
    if (sale_cache_export(ctx, dest, archs, na, force, &n)) {
        fprintf(stderr, "sale: export: %s\n", sale_last_error(ctx));
        sale_destroy(ctx);
        return 1;
    }
    printf("exported %d kernels to %s\n", n, dest);
    sale_destroy(ctx);
    return 0;
}

static int cmd_import(const gopts *g, int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: sale import FILE\nMerge the kernels of another cache file into this one (existing rows kept).");
        return 0;
    }
    if (argc != 2)
        die_usage("import: expected one FILE");
    sale_ctx *ctx = open_ctx(g);
    int n = 0;
    if (sale_cache_import(ctx, argv[1], &n)) {
        fprintf(stderr, "sale: import: %s\n", sale_last_error(ctx));
        sale_destroy(ctx);
        return 1;
    }
    printf("imported %d new kernels from %s\n", n, argv[1]);
    sale_destroy(ctx);
    return 0;
}

static int cmd_clear(const gopts *g, int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: sale clear\nRemove every cached kernel from the writable cache.");
        return 0;
    }
    if (argc > 1)
        die_usage("clear: unexpected argument '%s'", argv[1]);
    /* a cache that does not exist has nothing to clear: none is created */
    char def[1100];
    const char *file = missing_cache(g, def, sizeof def);
    if (file && errno == ENOENT) {
        printf("no cache at %s: nothing removed\n", file);
        return 0;
    }
    sale_ctx *ctx = open_ctx(g);
    int n = 0;
    if (sale_cache_clear(ctx, &n)) {
        fprintf(stderr, "sale: clear: %s\n", sale_last_error(ctx));
        sale_destroy(ctx);
        return 1;
    }
    printf("removed %d kernels\n", n);
    sale_destroy(ctx);
    return 0;
}

/* ------------------------------------------------------------------- key */

static int cmd_key(const gopts *g, int argc, char **argv)
{
    (void)g;
    if (argc != 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (argc == 2)
            return puts("usage: sale key TEXT\nParse, validate and resolve a kernel key; print its canonical form "
                        "and hash.\nexample: sale key 'fused:d=128,dt=bf16,arch=sm_90'"),
                   0;
        die_usage("key: expected one key text");
    }
    sale_key k;
    char err[512];
    if (sale_key_parse(argv[1], &k, err, sizeof err)) {
        fprintf(stderr, "sale: key: %s\n", err);
        return 1;
    }
    char t[256];
    sale_key_format(&k, t, sizeof t);
    printf("parsed    %s\n", t);
    /* a field this family does not use is dropped from its key (so a fleet's
     * cross product does not multiply cubins): say so, not silently */
    const char *colon = strchr(argv[1], ':');
    char buf[512];
    snprintf(buf, sizeof buf, "%s", colon ? colon + 1 : "");
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = 0;
        if (!sale_key_family_uses(k.family, tok))
            printf("ignored   %s (the %s family does not use it)\n", tok, sale_family_name(k.family));
    }
    if (k.arch != SALE_ARCH_CURRENT) {
        if (sale_key_resolve(&k, err, sizeof err)) {
            fprintf(stderr, "sale: key: %s\n", err);
            return 1;
        }
        sale_key_format(&k, t, sizeof t);
        printf("resolved  %s\n", t);
    }
    printf("hash      %016llx\n", (unsigned long long)sale_key_hash(&k));
    return 0;
}

/* ------------------------------------------------------------------- run */

static int cmd_run(const gopts *g, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        /* asked for: stdout, 0; a missing script is a usage error: stderr, 2 */
        fputs("usage: sale run SCRIPT.lua [ARGS...]\nRun a Lua exploration script with the `sale` module "
              "(see examples/).\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* a script that cannot be read is said before the cache is opened (or created) */
    struct stat ss;
    FILE *sf = fopen(argv[1], "r");
    if (!sf || fstat(fileno(sf), &ss) != 0 || S_ISDIR(ss.st_mode)) {
        const int e = !sf ? errno : S_ISDIR(ss.st_mode) ? EISDIR : errno;
        if (sf)
            fclose(sf);
        fprintf(stderr, "sale: run: cannot open %s: %s (nothing opened or created)\n", argv[1], strerror(e));
        return 1;
    }
    fclose(sf);
    sale_ctx *ctx = open_ctx(g);
    char err[8192] = "";
    sale_status s = lsale_run_script(ctx, argv[1], argc - 1, argv + 1, err, sizeof err);
    if (s)
        fprintf(stderr, "sale: run: %s\n", err);
    sale_destroy(ctx);
    return s ? 1 : 0;
}

/* ------------------------------------------------------------------ tune */

static int cmd_tune(const gopts *g, int argc, char **argv)
{
    int rc0 = cli_tune(NULL, &g_cfg, argc, argv); /* --help or a usage error open (or create) no cache */
    if (rc0 >= 0)
        return rc0;
    /* no GPU, nothing to time: say so before the cache is opened (or created) */
    sale_options mo;
    memset(&mo, 0, sizeof mo);
    mo.cache_path = ":memory:";
    sale_ctx *probe = NULL;
    int ndev = 0;
    if (sale_create(&probe, &mo) == SALE_OK && (sale_device_count(probe, &ndev) != SALE_OK || ndev < 1)) {
        fprintf(stderr, "sale tune: no GPU: %s (nothing opened or created)\n",
                sale_last_error(probe)[0] ? sale_last_error(probe) : "no CUDA device");
        sale_destroy(probe);
        return 1;
    }
    sale_destroy(probe);
    sale_ctx *ctx = open_ctx(g);
    int rc = cli_tune(ctx, &g_cfg, argc, argv);
    sale_destroy(ctx);
    return rc;
}

/* ------------------------------------------------------------- calibrate */

static const char *calibrate_help =
    "usage: sale calibrate --model NAME (--input DIR | --generate SPEC) [options]\n"
    "Choose per-head thresholds to an error budget and store them in the cache per\n"
    "(model, layer, head). For each head, tau starts at 0.008 and halves while the\n"
    "head's output error against dense attention exceeds the budget on any sample;\n"
    "below 1e-4 the head runs dense (tau 0). Every input file is checked first; the\n"
    "thresholds of all layers are stored at the end in one transaction, replacing\n"
    "the model's earlier calibration as a whole (its thresholds at layers or heads\n"
    "this one does not cover are dropped, with a warning that counts them).\n"
    "  --model NAME        name to store under (required); attention calls name it\n"
    "  --input DIR         captured inputs: DIR/layer_{L:03d}.safetensors, each with\n"
    "                      q [S,Hq,N,D], k and v [S,Hkv,N,D] (S samples; F32/F16/BF16;\n"
    "                      S >= 2 advised: a tau must then hold on every sample)\n"
    "  --generate SPEC     the built-in generator instead, e.g.\n"
    "                      layers=2,heads=4,kv_heads=4,seq=2048,dim=128,samples=2,seed=1,dtype=f16\n"
    "  --budget X          relative L1 per head, sum|o-o_ref|/sum|o_ref| (default 0.02)\n"
    "  --budget-abs X      the authors' budget instead: L1 over a row's elements,\n"
    "                      averaged over rows\n"
    "  --mode fused|two_pass   (default fused)\n"
    "  --device cpu|gpu|auto   (default auto: the GPU if there is one, else the CPU reference)\n"
    "  --block-q N --block-k N --block-seg N --window N --est-bits N   (default: the library's)\n"
    "  --thr run|fixed     threshold variant (default: what attention runs on the GPU\n"
    "                      that evaluates: fixed on sm_90, run elsewhere and on the CPU):\n"
    "                      calibrate with the one the\n"
    "                      attention calls use; fixed keeps more blocks at the same tau.\n"
    "                      It is stored with the thresholds: a call naming them with thr 0\n"
    "                      runs it, one asking for the other variant is refused\n"
    "  --dense-above D     a head whose chosen tau keeps a fraction D of its blocks or\n"
    "                      more (worst sample) runs dense instead: exact, and at such\n"
    "                      densities the estimation costs more than the blocks it skips\n"
    "                      (default 0.5; 0: never; 1: only heads that keep every block)\n"
    "  --dry-run           choose and print, store nothing\n"
    "  -q, --quiet         no progress lines\n"
    "Capture from PyTorch with a forward hook on each attention module that saves\n"
    "its q, k, v (after rotary, before attention) as [S,H,N,D] with\n"
    "safetensors.torch.save_file({'q': q, 'k': k, 'v': v}, f'layer_{L:03d}.safetensors').\n";

static int gen_spec(sale_calibrate_options *o, const char *spec)
{
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", spec) >= (int)sizeof buf) /* never a cut spec: "seed=123" cut is "seed=12" */
        die_usage("--generate: longer than %zu characters", sizeof buf - 1);
    /* every entry a key=value (strtok skipped empty ones: "," ran the whole
     * default generator and stored its thresholds), each key once */
    static const char *const keys[] = {"layers", "heads", "kv_heads", "seq", "dim", "samples", "seed", "dtype"};
    unsigned seen = 0;
    char *t = buf;
    for (char *next; t; t = next) {
        next = strchr(t, ',');
        if (next)
            *next++ = 0;
        if (!*t)
            die_usage("--generate: an empty entry in '%s' (key=value pairs, comma-separated)", spec);
        char *eq = strchr(t, '=');
        if (!eq)
            die_usage("--generate: expected key=value, got '%s'", t);
        *eq = 0;
        const char *k = t, *v = eq + 1;
        for (unsigned i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (!strcmp(k, keys[i])) {
                if (seen >> i & 1u)
                    die_usage("--generate: %s given twice in '%s'", k, spec);
                seen |= 1u << i;
            }
        if (!strcmp(k, "dtype")) {
            int d = dtype_of(v);
            if (d < 0)
                die_usage("--generate: dtype: f16 or bf16, got '%s'", v);
            o->gen.dtype = (sale_dtype)d;
            continue;
        }
        if (!strcmp(k, "seed")) {
            char *e;
            errno = 0;
            o->gen.seed = strtoull(v, &e, 10);
            if (e == v || *e || errno || strchr(v, '-')) /* strtoull takes "-1" as 2^64 - 1 */
                die_usage("--generate: seed: expected a number in [0, 2^64), got '%s'", v);
            continue;
        }
        int n = int_of(v);
        if (n < 1)
            die_usage("--generate: %s: expected a positive number, got '%s'", k, v);
        if (!strcmp(k, "layers")) o->gen.layers = n;
        else if (!strcmp(k, "heads")) o->gen.heads_q = n;
        else if (!strcmp(k, "kv_heads")) o->gen.heads_kv = n;
        else if (!strcmp(k, "seq")) o->gen.seq_len = n;
        else if (!strcmp(k, "dim")) o->gen.head_dim = n;
        else if (!strcmp(k, "samples")) o->gen.samples = n;
        else die_usage("--generate: unknown key '%s' (layers, heads, kv_heads, seq, dim, samples, seed, dtype)", k);
    }
    return 0;
}

static void calibrate_progress(void *user, const sale_calibrate_progress *p)
{
    (void)user;
    if (g_quiet)
        return;
    double dmean = 0, emax = 0;
    int dense = 0;
    for (int h = 0; h < p->heads; h++) {
        dmean += p->density[h] / p->heads;
        emax = p->error[h] > emax ? p->error[h] : emax;
        dense += p->tau[h] == 0;
    }
    fprintf(stderr, "sale: calibrate: layer %d (%d/%d): %d heads, %d rounds, mean density %.3f, worst error %.5f, "
            "%d dense, %.1f s\n", p->layer, p->index + 1, p->count, p->heads, p->rounds, dmean, emax, dense, p->seconds);
}

static double budget_of(const char *t, const char *what)
{
    double b;
    if (!cli_double(t, &b) || !(b > 0) || b > 1e6)
        die_usage("%s: expected a positive number, got '%s'", what, t);
    return b;
}

static int cmd_calibrate(const gopts *g, int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", 1, 0, 'm'},     {"input", 1, 0, 'i'},   {"generate", 1, 0, 'g'}, {"budget", 1, 0, 'b'},
        {"budget-abs", 1, 0, 'B'}, {"mode", 1, 0, 'M'},   {"device", 1, 0, 'D'},   {"block-q", 1, 0, 'Q'},
        {"block-k", 1, 0, 'K'},   {"block-seg", 1, 0, 'S'}, {"window", 1, 0, 'W'}, {"est-bits", 1, 0, 'E'},
        {"thr", 1, 0, 'T'},       {"dry-run", 0, 0, 'n'}, {"quiet", 0, 0, 'q'},    {"help", 0, 0, 'h'},
        {"dense-above", 1, 0, 'A'},
        {0, 0, 0, 0}};
    sale_calibrate_options o;
    sale_calibrate_options_init(&o);
    int c, gen = 0, nbudget = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'i': o.input_dir = optarg; break;
        case 'g':
            /* an empty spec would run the whole default generator and store it */
            if (!*optarg) die_usage("--generate: empty (give key=value pairs, e.g. layers=2,heads=4)");
            if (gen) die_usage("--generate: given twice (one spec, comma-separated)");
            gen_spec(&o, optarg);
            gen = 1;
            break;
        case 'b':
        case 'B':
            if (nbudget) /* a second budget would silently win */
                die_usage("calibrate: one budget: --budget or --budget-abs, once");
            o.budget = budget_of(optarg, c == 'b' ? "--budget" : "--budget-abs");
            o.budget_abs = c == 'B';
            nbudget++;
            break;
        case 'M':
            if (!strcmp(optarg, "fused")) o.mode = SALE_MODE_FUSED;
            else if (!strcmp(optarg, "two_pass") || !strcmp(optarg, "two-pass")) o.mode = SALE_MODE_TWO_PASS;
            else die_usage("--mode: fused or two_pass, got '%s'", optarg);
            break;
        case 'D':
            if (!strcmp(optarg, "cpu")) o.device = SALE_CALIBRATE_CPU;
            else if (!strcmp(optarg, "gpu")) o.device = SALE_CALIBRATE_GPU;
            else if (!strcmp(optarg, "auto")) o.device = SALE_CALIBRATE_AUTO;
            else die_usage("--device: cpu, gpu or auto, got '%s'", optarg);
            break;
        case 'Q': o.block_q = int_of(optarg); if (o.block_q < 1) die_usage("--block-q: bad value"); break;
        case 'K': o.block_k = int_of(optarg); if (o.block_k < 1) die_usage("--block-k: bad value"); break;
        case 'S': o.block_seg = int_of(optarg); if (o.block_seg < 1) die_usage("--block-seg: bad value"); break;
        case 'W': o.local_window = int_of(optarg); if (o.local_window < 1) die_usage("--window: bad value"); break;
        case 'E': o.est_bits = int_of(optarg); if (o.est_bits < 1) die_usage("--est-bits: bad value"); break;
        case 'T': o.thr = sale_thr_parse(optarg); if (o.thr < 0) die_usage("--thr: run or fixed, got '%s'", optarg); break;
        case 'A':
            if (!cli_double(optarg, &o.dense_above) || !(o.dense_above >= 0 && o.dense_above <= 1))
                die_usage("--dense-above: a fraction of blocks in [0, 1] (0: never), got '%s'", optarg);
            break;
        case 'n': o.dry_run = 1; break;
        case 'q': g_quiet = 1; break;
        case 'h': fputs(calibrate_help, stdout); return 0;
        default: die_usage("calibrate: bad option");
        }
    }
    if (optind < argc)
        die_usage("calibrate: unexpected argument '%s'", argv[optind]);
    if (!o.model)
        die_usage("calibrate: --model NAME is required");
    if (!!o.input_dir + gen != 1)
        die_usage("calibrate: give one of --input DIR or --generate SPEC");
    sale_ctx *ctx = open_ctx(g);
    o.progress = calibrate_progress;
    sale_calibrate_result r;
    sale_status st = sale_calibrate(ctx, &o, &r);
    if (st) {
        fprintf(stderr, "sale: %s\n", sale_last_error(ctx));
        fprintf(stderr, "sale: calibrate: nothing stored\n");
        sale_destroy(ctx);
        return 1;
    }
    if (r.samples == 1)
        fprintf(stderr,
                "sale: calibrate: warning: one sample per layer: a tau chosen on one prompt can exceed the budget\n"
                "  on another (an H200 run, diffuse heads under thr fixed: budget 2%%, worst head 30%% on a fresh\n"
                "  prompt with one sample, 2.4%% with two; bench/RESULTS.md); capture two or more samples\n");
    printf("%5s %4s %10s %8s %10s\n", "layer", "head", "tau", "density", "error");
    for (int l = 0; l < r.layers; l++)
        for (int h = 0; h < r.heads; h++) {
            size_t x = (size_t)l * (size_t)r.heads + (size_t)h;
            printf("%5d %4d %10.6g %8.4f %10.6f\n", r.layer_ids[l], h, (double)r.tau[x], r.density[x], r.error[x]);
        }
    printf("%s %d layers x %d heads of '%s' (%d samples of %d tokens, thr %s, %s budget %g) on the %s in %.1f s%s%s\n",
           o.dry_run ? "chose" : "calibrated", r.layers, r.heads, o.model, r.samples, r.seq_len,
           sale_thr_name(r.thr) ? sale_thr_name(r.thr) : "?",
           o.budget_abs ? "mean per-row L1" : "relative L1", o.budget, r.on_gpu ? "GPU" : "CPU reference",
           r.seconds, o.dry_run ? "; dry run, nothing stored" : "; stored in ", o.dry_run ? "" : sale_cache_path(ctx));
    sale_calibrate_result_free(&r);
    sale_destroy(ctx);
    return 0;
}

/* ------------------------------------------------------------------ main */

static const char *main_help =
    "usage: sale [--cache FILE] [--fleet FILE] [--config FILE] COMMAND [ARGS]\n"
    "       sale --version | --help\n"
    "SALE sparse attention kernels: generated, compiled with NVRTC, tuned, cached in SQLite.\n\n"
    "commands:\n"
    "  info       library, NVRTC, driver and devices, cache path and size\n"
    "  prewarm    compile every kernel of a fleet into the cache (no GPU needed)\n"
    "  ls         list cached kernels (--tuned: tuning winners, --thresholds: per-head taus)\n"
    "  verify     check every cached cubin's length and hash\n"
    "  export     write cached kernels into a file to ship to a fleet\n"
    "  import     merge another cache file into this one\n"
    "  clear      remove every cached kernel\n"
    "  key        parse, validate and resolve a kernel key\n"
    "  tune       time tile choices on the GPU and keep the winners\n"
    "  calibrate  choose per-head thresholds to an error budget and store them\n"
    "  run        run a Lua script (sale run script.lua args...)\n\n"
    "global options:\n"
    "  --cache FILE   writable cache (default: the config's cache.path, else\n"
    "                 $SALE_CACHE_DIR/kernels.db, else $XDG_CACHE_HOME/sale/kernels.db,\n"
    "                 else ~/.cache/sale/kernels.db)\n"
    "  --fleet FILE   read-only fleet cache consulted under the writable one\n"
    "  --config FILE  config file (default $SALE_CONFIG, else $XDG_CONFIG_HOME/sale/sale.lua,\n"
    "                 else ~/.config/sale/sale.lua; none there: the built-in defaults)\n"
    "  --version      print the version and exit\n"
    "  -h, --help     print this help and exit\n"
    "'sale COMMAND --help' describes each command.\n";

/* A global option's FILE: "" is refused, never taken as "not given" (the
 * default config or no fleet, silently). */
static const char *path_arg(const char *opt, const char *v)
{
    if (!v[0])
        die_usage("%s: empty path", opt);
    return v;
}

int main(int argc, char **argv)
{
    gopts g = {0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(main_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("sale %s\n", SALE_VERSION_STRING);
            return 0;
        } else if (!strcmp(argv[i], "--cache") && i + 1 < argc) {
            g.cache = path_arg(argv[i], argv[i + 1]);
            i++;
        } else if (!strcmp(argv[i], "--fleet") && i + 1 < argc) {
            g.fleet = path_arg(argv[i], argv[i + 1]);
            i++;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            g.config = path_arg(argv[i], argv[i + 1]);
            i++;
        } else {
            die_usage("unknown or incomplete option '%s'", argv[i]);
        }
    }
    if (i >= argc) {
        fputs(main_help, stderr);
        return 2;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    static const struct {
        const char *name;
        int (*fn)(const gopts *, int, char **);
    } cmds[] = {{"info", cmd_info},     {"prewarm", cmd_prewarm}, {"ls", cmd_ls},     {"verify", cmd_verify},
                {"export", cmd_export}, {"import", cmd_import},   {"clear", cmd_clear}, {"key", cmd_key},
                {"run", cmd_run},       {"tune", cmd_tune},       {"calibrate", cmd_calibrate}};
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++)
        if (!strcmp(cmd, cmds[c].name)) {
            int help = sub_argc > 1 && (!strcmp(sub_argv[1], "--help") || !strcmp(sub_argv[1], "-h"));
            if (!help)
                load_config(&g);
            return cmds[c].fn(&g, sub_argc, sub_argv);
        }
    die_usage("unknown command '%s'", cmd);
}
