/* main.c — the `sale` command: info, prewarm, ls, verify, export, import,
 * key, run, tune, clear. It sits on the library (and the internal db layer
 * for listing); it is the only part of sale that prints. */
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

#include "config.h"
#include "db.h"
#include "internal.h"
#include "sale.h"
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

static int g_no_create; /* a listing command: a named cache that does not exist is an error, not created */

static sale_ctx *open_ctx(const gopts *g)
{
    sale_options o;
    memset(&o, 0, sizeof o);
    o.cache_path = g->cache ? g->cache : g_cfg.cache_path[0] ? g_cfg.cache_path : NULL;
    if (g_no_create && o.cache_path && access(o.cache_path, F_OK) != 0) {
        fprintf(stderr, "sale: no cache at %s: %s (nothing created)\n", o.cache_path, strerror(errno));
        exit(1);
    }
    o.fleet_path = g->fleet ? g->fleet : g_cfg.fleet_cache[0] ? g_cfg.fleet_cache : NULL;
    o.log = log_cb;
    sale_ctx *ctx = NULL;
    sale_status s = sale_create(&ctx, &o);
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
    snprintf(buf, sizeof buf, "%s", text);
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

static int int_of(const char *t)
{
    char *e;
    long v = strtol(t, &e, 10);
    return (e == t || *e || v < 0 || v > 1 << 20) ? -1 : (int)v;
}

static int arch_of(const char *t)
{
    int a = sale_arch_parse(t);
    return a <= 0 ? -1 : a;
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
    sale_ctx *ctx = open_ctx(g);
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
            }
        }
        if (!n)
            printf("devices    none\n");
    }
    char sz[32];
    human_bytes((double)db_file_bytes(ctx->db), sz, sizeof sz);
    printf("cache      %s (%s)\n", sale_cache_path(ctx), sz);
    if (ctx->opts.fleet_path)
        printf("fleet      %s (read-only)\n", ctx->opts.fleet_path);
    printf("config     %s\n", g_cfg.path[0] ? g_cfg.path : "(built-in defaults)");
    printf("templates ");
    for (int i = 0; i < tpl_count(); i++)
        printf(" %s", tpl_at(i)->name);
    printf("\n");
    sale_destroy(ctx);
    return 0;
}

/* --------------------------------------------------------------- prewarm */

static const char *prewarm_help =
    "usage: sale prewarm [options]\n"
    "Compile every kernel a fleet needs into the cache (no GPU needed). The set is\n"
    "archs x head dims x families x dtypes x block sizes, from the config file\n"
    "(fleet = {...}) or these flags; a second run compiles nothing.\n"
    "  --arch LIST        sm_80,sm_86,sm_89,sm_90 (default: the config's fleet)\n"
    "  --head-dim LIST    64,128\n"
    "  --family LIST      quantize,fused,select,attend,dense\n"
    "  --dtype LIST       bf16,f16\n"
    "  --block-q LIST     --block-k LIST  --block-seg LIST  --window LIST\n"
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
    int jobs_n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    static const struct option lo[] = {{"arch", 1, 0, 'a'},     {"head-dim", 1, 0, 'd'}, {"family", 1, 0, 'f'},
                                       {"dtype", 1, 0, 't'},    {"block-q", 1, 0, 'Q'},  {"block-k", 1, 0, 'K'},
                                       {"block-seg", 1, 0, 'S'}, {"window", 1, 0, 'W'},  {"jobs", 1, 0, 'j'},
                                       {"quiet", 0, 0, 'q'},    {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qhj:", lo, NULL)) != -1) {
        switch (c) {
        case 'a': f.n_archs = parse_list(optarg, f.archs, CFG_MAX_LIST, arch_of, "--arch"); break;
        case 'd': f.n_head_dims = parse_list(optarg, f.head_dims, CFG_MAX_LIST, int_of, "--head-dim"); break;
        case 'f': f.n_families = parse_list(optarg, (int *)f.families, CFG_MAX_LIST, family_of, "--family"); break;
        case 't': f.n_dtypes = parse_list(optarg, (int *)f.dtypes, CFG_MAX_LIST, dtype_of, "--dtype"); break;
        case 'Q': f.n_block_qs = parse_list(optarg, f.block_qs, CFG_MAX_LIST, int_of, "--block-q"); break;
        case 'K': f.n_block_ks = parse_list(optarg, f.block_ks, CFG_MAX_LIST, int_of, "--block-k"); break;
        case 'S': f.n_block_segs = parse_list(optarg, f.block_segs, CFG_MAX_LIST, int_of, "--block-seg"); break;
        case 'W': f.n_local_windows = parse_list(optarg, f.local_windows, CFG_MAX_LIST, int_of, "--window"); break;
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
                                for (int iw = 0; iw < f.n_local_windows; iw++) {
                                    sale_key k = sale_key_default(f.families[ifm]);
                                    k.arch = f.archs[ia];
                                    k.head_dim = f.head_dims[id];
                                    k.dtype = f.dtypes[it];
                                    k.block_q = f.block_qs[iq];
                                    k.block_k = f.block_ks[ik];
                                    k.block_seg = f.block_segs[is];
                                    k.local_window = f.local_windows[iw];
                                    if (g_cfg.defaults.est_bits)
                                        k.est_bits = g_cfg.defaults.est_bits;
                                    if (k.est_bits == 4 && (k.arch == 90 || k.arch == SALE_ARCH_SM90A))
                                        k.est_bits = 8;
                                    char err[256];
                                    if (sale_key_resolve(&k, err, sizeof err)) {
                                        fprintf(stderr, "sale: prewarm: %s\n", err);
                                        return 1;
                                    }
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
    for (int ia = 0; ia < f.n_archs; ia++) {
        int nk = 0, nc = 0, nh = 0, nf = 0;
        double bytes = 0, cms = 0;
        for (int i = 0; i < n; i++) {
            if (jobs[i].key.arch != f.archs[ia])
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
        printf("%-8s %8d %8d %8d %8d %10s %12.1f\n", sale_arch_name(f.archs[ia]), nk, nc, nh, nf, b, cms / 1e3);
        failed += nf;
        compiled += nc;
    }
    char sz[32];
    human_bytes((double)db_file_bytes(ctx->db), sz, sizeof sz);
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

static const char *ls_help = "usage: sale ls [--arch ARCH] [--tuned]\n"
                             "List cached kernels (key, arch, registers, shared memory, spills, cubin bytes,\n"
                             "compile time, hits), or with --tuned the autotuner's winners.\n";

typedef struct ls_state {
    const char *arch;
    int rows;
} ls_state;

static int ls_row(void *user, const db_kernel_row *r)
{
    ls_state *s = user;
    if (s->arch && strcmp(s->arch, r->arch))
        return 0;
    printf("%-78s %-7s %5d %7d %7d %7d %9zu %9.1f %6lld%s\n", r->key, r->arch, r->registers,
           r->smem_static + r->smem_dynamic, r->spill_stores, r->spill_loads, r->cubin_bytes, r->compile_ms,
           (long long)r->hits, r->from_fleet ? " fleet" : "");
    s->rows++;
    return 0;
}

static int tuned_row(void *user, const db_tuned_row *r)
{
    ls_state *s = user;
    if (s->arch && strcmp(s->arch, r->arch))
        return 0;
    printf("%-24s %-7s %4d %6d %-10s %-60s %9.3f %6.1f%% %5d\n    -> %s\n", r->device, r->arch, r->sm_count,
           r->driver_version, r->bucket, r->key, r->time_ms, r->spread_pct, r->tried, r->winner);
    s->rows++;
    return 0;
}

static int cmd_ls(const gopts *g, int argc, char **argv)
{
    static const struct option lo[] = {{"arch", 1, 0, 'a'}, {"tuned", 0, 0, 't'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    ls_state s = {0};
    int tuned = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'a':
            if (sale_arch_parse(optarg) <= 0)
                die_usage("--arch: unknown architecture '%s'", optarg);
            s.arch = sale_arch_name(sale_arch_parse(optarg));
            break;
        case 't': tuned = 1; break;
        case 'h': fputs(ls_help, stdout); return 0;
        default: die_usage("ls: bad option");
        }
    }
    if (optind < argc)
        die_usage("ls: unexpected argument '%s'", argv[optind]);
    g_no_create = 1;
    sale_ctx *ctx = open_ctx(g);
    char err[512] = "";
    int rc;
    if (tuned) {
        printf("%-24s %-7s %4s %6s %-10s %-60s %9s %7s %5s\n", "device", "arch", "SMs", "driver", "bucket", "key",
               "ms", "spread", "tried");
        rc = db_tuned_list(ctx->db, tuned_row, &s, err, sizeof err);
    } else {
        printf("%-78s %-7s %5s %7s %7s %7s %9s %9s %6s\n", "key", "arch", "regs", "smem", "spill.s", "spill.l",
               "cubin", "compile", "hits");
        rc = db_kernel_list(ctx->db, 1, ls_row, &s, err, sizeof err);
    }
    if (rc < 0) {
        fprintf(stderr, "sale: ls: %s\n", err);
        sale_destroy(ctx);
        return 1;
    }
    printf("%d %s\n", s.rows, tuned ? "tuned entries" : "kernels");
    sale_destroy(ctx);
    return 0;
}

/* -------------------------------------------------- verify, export, import */

static int cmd_verify(const gopts *g, int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: sale verify\nCheck every cached cubin against its stored length and hash; bad rows are removed.");
        return 0;
    }
    if (argc > 1)
        die_usage("verify: unexpected argument '%s'", argv[1]);
    g_no_create = 1;
    sale_ctx *ctx = open_ctx(g);
    int checked = 0, bad = 0;
    char err[512] = "";
    if (db_verify(ctx->db, &checked, &bad, err, sizeof err) < 0) {
        fprintf(stderr, "sale: verify: %s\n", err);
        sale_destroy(ctx);
        return 1;
    }
    printf("%d kernels checked, %d bad%s\n", checked, bad, bad ? " (removed; they recompile on next use)" : "");
    sale_destroy(ctx);
    return bad ? 1 : 0;
}

static int cmd_export(const gopts *g, int argc, char **argv)
{
    static const struct option lo[] = {{"arch", 1, 0, 'a'}, {"force", 0, 0, 'F'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int archs[CFG_MAX_LIST], na = 0, c, force = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': na = parse_list(optarg, archs, CFG_MAX_LIST, arch_of, "--arch"); break;
        case 'F': force = 1; break;
        case 'h':
            puts("usage: sale export FILE [--arch LIST] [--force]\nWrite the cached kernels (of the given archs) into a new "
                 "cache file to ship to a fleet\n(use it there as the fleet file: --fleet FILE or cache.fleet in "
                 "sale.lua).");
            return 0;
        default: die_usage("export: bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("export: expected one FILE");
    g_no_create = 1;
    sale_ctx *ctx = open_ctx(g);
    const char *names[CFG_MAX_LIST];
    for (int i = 0; i < na; i++)
        names[i] = sale_arch_name(archs[i]);
    char err[512] = "";
    int n = db_export_ex(ctx->db, argv[optind], names, na, force ? DB_EXPORT_FORCE : 0, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sale: export: %s\n", err);
        sale_destroy(ctx);
        return 1;
    }
    printf("exported %d kernels to %s\n", n, argv[optind]);
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
    char err[512] = "";
    int n = db_import(ctx->db, argv[1], err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sale: import: %s\n", err);
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
    sale_ctx *ctx = open_ctx(g);
    char err[512] = "";
    int n = db_clear(ctx->db, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sale: clear: %s\n", err);
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
        puts("usage: sale run SCRIPT.lua [ARGS...]\nRun a Lua exploration script with the `sale` module "
             "(see examples/).");
        return argc < 2 ? 2 : 0;
    }
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
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
        return tune_cli(NULL, NULL, argc, argv);
    sale_ctx *ctx = open_ctx(g);
    int rc = tune_cli(ctx, &g_cfg, argc, argv);
    sale_destroy(ctx);
    return rc;
}

/* ------------------------------------------------------------------ main */

static const char *main_help =
    "usage: sale [--cache FILE] [--fleet FILE] [--config FILE] COMMAND [ARGS]\n"
    "SALE sparse attention kernels: generated, compiled with NVRTC, tuned, cached in SQLite.\n\n"
    "commands:\n"
    "  info       library, NVRTC, driver and devices, cache path and size\n"
    "  prewarm    compile every kernel of a fleet into the cache (no GPU needed)\n"
    "  ls         list cached kernels (--tuned: the autotuner's winners)\n"
    "  verify     check every cached cubin's length and hash\n"
    "  export     write cached kernels into a file to ship to a fleet\n"
    "  import     merge another cache file into this one\n"
    "  clear      remove every cached kernel\n"
    "  key        parse, validate and resolve a kernel key\n"
    "  tune       time tile choices on the GPU and keep the winners\n"
    "  run        run a Lua script (sale run script.lua args...)\n\n"
    "global options:\n"
    "  --cache FILE   writable cache (default $SALE_CACHE_DIR/kernels.db, else\n"
    "                 $XDG_CACHE_HOME/sale/kernels.db, else ~/.cache/sale/kernels.db)\n"
    "  --fleet FILE   read-only fleet cache consulted under the writable one\n"
    "  --config FILE  config file (default $SALE_CONFIG, else $XDG_CONFIG_HOME/sale/sale.lua)\n"
    "'sale COMMAND --help' describes each command.\n";

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
            g.cache = argv[++i];
        } else if (!strcmp(argv[i], "--fleet") && i + 1 < argc) {
            g.fleet = argv[++i];
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            g.config = argv[++i];
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
                {"run", cmd_run},       {"tune", cmd_tune}};
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++)
        if (!strcmp(cmd, cmds[c].name)) {
            int help = sub_argc > 1 && (!strcmp(sub_argv[1], "--help") || !strcmp(sub_argv[1], "-h"));
            if (!help)
                load_config(&g);
            return cmds[c].fn(&g, sub_argc, sub_argv);
        }
    die_usage("unknown command '%s'", cmd);
}
