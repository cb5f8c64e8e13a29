/* test_cache_api.c — the cache file through the public API (src/cache.c):
 * listing kernels, winners and thresholds, verify, export, import, clear,
 * on real SQLite files in a temporary directory; what `sale ls | verify |
 * export | import | clear` are built on. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h" /* win_save: the only writer of tuned rows without a GPU */
#include "sale.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sale_cache_api_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cache_api, .init = setup, .fini = teardown, .timeout = 600);

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static sale_ctx *open_at(const char *name, const char *fleet)
{
    char p[512], f[512];
    path_of(p, sizeof p, name);
    if (fleet)
        path_of(f, sizeof f, fleet);
    sale_options o = {0};
    o.cache_path = p;
    o.fleet_path = fleet ? f : NULL;
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", sale_last_error(ctx));
    return ctx;
}

/* A small real kernel for arch (an NVRTC compile, no GPU). */
static void compile_quantize(sale_ctx *ctx, int arch)
{
    sale_key k = sale_key_default(SALE_FAMILY_QUANTIZE);
    k.head_dim = 64;
    k.dtype = SALE_DTYPE_BF16;
    k.arch = arch;
    char err[256];
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    sale_kernel_info info;
    cr_assert_eq(sale_compile(ctx, &k, &info), SALE_OK, "%s", sale_last_error(ctx));
}

static void put_thresholds(sale_ctx *ctx, const char *model)
{
    const float tau[2] = {0.004f, 0.002f};
    sale_threshold_meta meta[1] = {{.budget = 0.02, .samples = 3, .created = 1700000000, .density = 0.25,
                                    .error = 0.01}};
    cr_assert_eq(sale_thresholds_put(ctx, model, 0, tau, 2, meta), SALE_OK, "%s", sale_last_error(ctx));
}

/* ------------------------------------------------------------ listings */

typedef struct seen {
    int n, fleet, stop_after;
    char arch[8][16];
    sale_ctx *ctx; /* when set, the callback calls back into the context */
    int inner_ok;
} seen;

static int on_kernel(void *user, const sale_cache_kernel *k)
{
    seen *s = user;
    if (s->n < 8)
        snprintf(s->arch[s->n], sizeof s->arch[0], "%s", k->arch);
    s->n++;
    s->fleet += k->from_fleet;
    cr_expect_gt(k->cubin_bytes, 0);
    cr_expect_gt(k->registers, 0);
    cr_expect_gt(k->threads, 0);
    cr_expect(strstr(k->key, "quantize:") == k->key, "%s", k->key);
    if (s->ctx) { /* rows are delivered outside the locks: these must not deadlock */
        int64_t b = 0;
        seen inner = {0};
        s->inner_ok += sale_cache_file_bytes(s->ctx, &b) == SALE_OK &&
                       sale_cache_list_kernels(s->ctx, 0, on_kernel, &inner) == SALE_OK;
    }
    return s->stop_after && s->n >= s->stop_after;
}

Test(cache_api, listing_gives_every_kernel_ordered_by_arch_and_can_stop)
{
    sale_ctx *ctx = open_at("a.db", NULL);
    compile_quantize(ctx, 90);
    compile_quantize(ctx, 80);
    seen s = {0};
    cr_assert_eq(sale_cache_list_kernels(ctx, 1, on_kernel, &s), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(s.n, 2);
    cr_expect_str_eq(s.arch[0], "sm_80");
    cr_expect_str_eq(s.arch[1], "sm_90");
    cr_expect_eq(s.fleet, 0);
    seen one = {.stop_after = 1};
    cr_assert_eq(sale_cache_list_kernels(ctx, 1, on_kernel, &one), SALE_OK);
    cr_expect_eq(one.n, 1, "a callback returning non-zero stops the listing");
    seen re = {.ctx = ctx};
    cr_assert_eq(sale_cache_list_kernels(ctx, 1, on_kernel, &re), SALE_OK);
    cr_expect_eq(re.inner_ok, 2, "the callback may call into the context");
    sale_destroy(ctx);
}

typedef struct th_seen {
    int n, fleet;
    sale_threshold_entry first;
} th_seen;

static int on_threshold(void *user, const sale_threshold_entry *e)
{
    th_seen *s = user;
    if (!s->n)
        s->first = *e;
    s->n++;
    s->fleet += e->from_fleet;
    return 0;
}

Test(cache_api, thresholds_list_carries_how_each_was_chosen)
{
    sale_ctx *ctx = open_at("t.db", NULL);
    put_thresholds(ctx, "llama");
    th_seen s = {0};
    cr_assert_eq(sale_thresholds_list(ctx, 1, on_threshold, &s), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(s.n, 2);
    cr_expect_str_eq(s.first.model, "llama");
    cr_expect_eq(s.first.layer, 0);
    cr_expect_eq(s.first.head, 0);
    cr_expect_float_eq(s.first.tau, 0.004, 1e-7);
    cr_expect_float_eq(s.first.meta.budget, 0.02, 1e-12);
    cr_expect_eq(s.first.meta.samples, 3);
    cr_expect_eq(s.first.meta.created, 1700000000);
    cr_expect_float_eq(s.first.meta.density, 0.25, 1e-12);
    cr_expect_eq(s.fleet, 0);
    sale_destroy(ctx);
}

typedef struct tu_seen {
    int n;
    sale_tuned_entry e;
    sale_ctx *ctx;
    int inner_ok;
} tu_seen;

static int on_tuned(void *user, const sale_tuned_entry *e)
{
    tu_seen *s = user;
    s->e = *e;
    s->n++;
    if (s->ctx) {
        th_seen t = {0};
        s->inner_ok += sale_thresholds_list(s->ctx, 1, on_threshold, &t) == SALE_OK;
    }
    return 0;
}

Test(cache_api, tuned_winners_are_listed_per_device)
{
    sale_ctx *ctx = open_at("w.db", NULL);
    sale_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "NVIDIA H100 80GB HBM3");
    d.arch = 90;
    d.sm_count = 132;
    d.driver_version = 13000;
    sale_key open = sale_key_default(SALE_FAMILY_FUSED), win = open;
    open.arch = win.arch = 90;
    char err[256];
    cr_assert_eq(sale_key_resolve(&win, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(win_save(ctx, &d, &open, 16384, &win, 0.5, 1.5, 6), SALE_OK, "%s", sale_last_error(ctx));
    tu_seen s = {.ctx = ctx};
    cr_assert_eq(sale_cache_list_tuned(ctx, on_tuned, &s), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(s.n, 1);
    cr_expect_eq(s.inner_ok, 1);
    cr_expect_str_eq(s.e.device, "NVIDIA H100 80GB HBM3");
    cr_expect_str_eq(s.e.arch, "sm_90");
    cr_expect_eq(s.e.sm_count, 132);
    cr_expect_eq(s.e.driver_version, 13000);
    cr_expect_str_eq(s.e.bucket, "n=16384");
    cr_expect(strstr(s.e.key, "warps=*") != NULL, "%s", s.e.key);
    cr_expect(strstr(s.e.winner, "warps=*") == NULL, "%s", s.e.winner);
    cr_expect_float_eq(s.e.time_ms, 0.5, 1e-12);
    cr_expect_eq(s.e.tried, 6);
    sale_destroy(ctx);
}

/* ---------------------------------------- export, import, verify, clear */

Test(cache_api, export_import_verify_clear_round_trip)
{
    sale_ctx *a = open_at("a.db", NULL);
    compile_quantize(a, 80);
    compile_quantize(a, 90);
    put_thresholds(a, "m");
    int64_t bytes = 0;
    cr_assert_eq(sale_cache_file_bytes(a, &bytes), SALE_OK);
    cr_expect_gt(bytes, 0);

    char e90[512], eall[512];
    path_of(e90, sizeof e90, "ship90.db");
    path_of(eall, sizeof eall, "ship.db");
    const int only90[] = {90};
    int rows = -1;
    cr_assert_eq(sale_cache_export(a, e90, only90, 1, 0, &rows), SALE_OK, "%s", sale_last_error(a));
    cr_expect_eq(rows, 1);
    cr_assert_eq(sale_cache_export(a, eall, NULL, 0, 0, &rows), SALE_OK, "%s", sale_last_error(a));
    cr_expect_eq(rows, 2);
    cr_assert_eq(sale_cache_export(a, eall, NULL, 0, 0, &rows), SALE_OK, "an old export is a sale cache: replaced");
    cr_expect_eq(rows, 2);

    sale_ctx *b = open_at("b.db", NULL);
    cr_assert_eq(sale_cache_import(b, e90, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_expect_eq(rows, 1);
    cr_assert_eq(sale_cache_import(b, eall, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_expect_eq(rows, 1, "the sm_90 kernel is kept, only sm_80 is new");
    cr_assert_eq(sale_cache_import(b, eall, &rows), SALE_OK);
    cr_expect_eq(rows, 0);
    seen s = {0};
    cr_assert_eq(sale_cache_list_kernels(b, 0, on_kernel, &s), SALE_OK);
    cr_expect_eq(s.n, 2);
    th_seen t = {0};
    cr_assert_eq(sale_thresholds_list(b, 0, on_threshold, &t), SALE_OK);
    cr_expect_eq(t.n, 2, "thresholds travel with the kernels");
    int checked = -1, bad = -1;
    cr_assert_eq(sale_cache_verify(b, &checked, &bad), SALE_OK, "%s", sale_last_error(b));
    cr_expect_eq(checked, 2);
    cr_expect_eq(bad, 0);

    cr_assert_eq(sale_cache_clear(b, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_expect_eq(rows, 2);
    s = (seen){0};
    cr_assert_eq(sale_cache_list_kernels(b, 1, on_kernel, &s), SALE_OK);
    cr_expect_eq(s.n, 0);
    t = (th_seen){0};
    cr_assert_eq(sale_thresholds_list(b, 1, on_threshold, &t), SALE_OK);
    cr_expect_eq(t.n, 2, "clear removes kernels only");
    cr_assert_eq(sale_cache_clear(b, &rows), SALE_OK);
    cr_expect_eq(rows, 0);
    sale_destroy(b);
    sale_destroy(a);

    /* the export as the fleet file under an empty cache */
    sale_ctx *c = open_at("c.db", "ship.db");
    cr_expect(strstr(sale_fleet_path(c), "ship.db") != NULL, "%s", sale_fleet_path(c));
    s = (seen){0};
    cr_assert_eq(sale_cache_list_kernels(c, 1, on_kernel, &s), SALE_OK, "%s", sale_last_error(c));
    cr_expect_eq(s.n, 2);
    cr_expect_eq(s.fleet, 2);
    s = (seen){0};
    cr_assert_eq(sale_cache_list_kernels(c, 0, on_kernel, &s), SALE_OK);
    cr_expect_eq(s.n, 0, "include_fleet 0: the writable file only");
    t = (th_seen){0};
    cr_assert_eq(sale_thresholds_list(c, 1, on_threshold, &t), SALE_OK);
    cr_expect_eq(t.fleet, 2);
    cr_assert_eq(sale_cache_verify(c, &checked, &bad), SALE_OK, "%s", sale_last_error(c));
    cr_expect_eq(checked, 2);
    cr_expect_eq(bad, 0);
    sale_destroy(c);
}

Test(cache_api, verify_removes_a_damaged_cubin)
{
    char p[512];
    path_of(p, sizeof p, "v.db");
    sale_ctx *ctx = open_at("v.db", NULL);
    compile_quantize(ctx, 80);
    compile_quantize(ctx, 90);
    sale_destroy(ctx);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(p, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "UPDATE kernels SET cubin = zeroblob(length(cubin)) "
                              "WHERE rowid = (SELECT min(rowid) FROM kernels)",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    ctx = open_at("v.db", NULL);
    int checked = -1, bad = -1;
    cr_assert_eq(sale_cache_verify(ctx, &checked, &bad), SALE_OK, "%s", sale_last_error(ctx));
    cr_expect_eq(checked, 2);
    cr_expect_eq(bad, 1, "bad rows are counted, not an error");
    cr_assert_eq(sale_cache_verify(ctx, &checked, &bad), SALE_OK);
    cr_expect_eq(checked, 1, "the bad row was deleted");
    cr_expect_eq(bad, 0);
    sale_destroy(ctx);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

Test(cache_api, export_refuses_a_file_that_is_not_a_cache_unless_forced)
{
    sale_ctx *ctx = open_at("a.db", NULL);
    compile_quantize(ctx, 80);
    char dest[512];
    path_of(dest, sizeof dest, "notes.txt");
    FILE *f = fopen(dest, "w");
    cr_assert_not_null(f);
    fputs("not a cache\n", f);
    fclose(f);
    int rows = -1;
    cr_assert_eq(sale_cache_export(ctx, dest, NULL, 0, 0, &rows), SALE_ERR_CACHE);
    cr_expect(strstr(sale_last_error(ctx), "not a sale cache") != NULL, "%s", sale_last_error(ctx));
    cr_expect_eq(rows, 0);
    cr_expect_str_eq(slurp(dest), "not a cache\n", "the file is left untouched");
    cr_assert_eq(sale_cache_export(ctx, dest, NULL, 0, 1, &rows), SALE_OK, "%s", sale_last_error(ctx));
    cr_expect_eq(rows, 1);
    sale_ctx *b = open_at("b.db", NULL);
    cr_assert_eq(sale_cache_import(b, dest, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_expect_eq(rows, 1, "forced: now a sale cache");
    sale_destroy(b);

    /* a directory is never replaced, force or not */
    char sub[512];
    path_of(sub, sizeof sub, "adir");
    cr_assert_eq(mkdir(sub, 0755), 0);
    cr_assert_eq(sale_cache_export(ctx, sub, NULL, 0, 1, &rows), SALE_ERR_CACHE);
    cr_expect(strstr(sale_last_error(ctx), "not a regular file") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

Test(cache_api, import_refuses_what_is_not_a_sale_cache)
{
    sale_ctx *ctx = open_at("a.db", NULL);
    char src[512];
    path_of(src, sizeof src, "missing.db");
    int rows = -1;
    cr_assert_eq(sale_cache_import(ctx, src, &rows), SALE_ERR_CACHE);
    cr_expect(strstr(sale_last_error(ctx), "missing.db") != NULL, "%s", sale_last_error(ctx));
    path_of(src, sizeof src, "plain.txt");
    FILE *f = fopen(src, "w");
    cr_assert_not_null(f);
    fputs("hello\n", f);
    fclose(f);
    cr_assert_eq(sale_cache_import(ctx, src, &rows), SALE_ERR_CACHE);
    cr_expect_neq(sale_last_error(ctx)[0], 0);
    sale_destroy(ctx);
}

/* ----------------------------------------------------------- arguments */

Test(cache_api, null_out_params_and_bad_arguments_are_invalid)
{
    sale_ctx *ctx = open_at("a.db", NULL);
    char dest[512];
    path_of(dest, sizeof dest, "out.db");
    int n = 0, checked = 0;
    int64_t b = 0;
    cr_expect_eq(sale_cache_verify(ctx, NULL, &n), SALE_ERR_INVALID);
    cr_expect(strstr(sale_last_error(ctx), "checked") != NULL, "%s", sale_last_error(ctx));
    cr_expect_eq(sale_cache_verify(ctx, &checked, NULL), SALE_ERR_INVALID);
    cr_expect(strstr(sale_last_error(ctx), "bad") != NULL, "%s", sale_last_error(ctx));
    cr_expect_eq(sale_cache_export(ctx, dest, NULL, 0, 0, NULL), SALE_ERR_INVALID);
    cr_expect_eq(access(dest, F_OK), -1, "nothing written");
    cr_expect_eq(sale_cache_import(ctx, dest, NULL), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_clear(ctx, NULL), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_file_bytes(ctx, NULL), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_list_kernels(ctx, 1, NULL, NULL), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_list_tuned(ctx, NULL, NULL), SALE_ERR_INVALID);
    cr_expect_eq(sale_thresholds_list(ctx, 1, NULL, NULL), SALE_ERR_INVALID);
    cr_expect(strstr(sale_last_error(ctx), "sale_thresholds_list") != NULL, "%s", sale_last_error(ctx));

    cr_expect_eq(sale_cache_export(ctx, NULL, NULL, 0, 0, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_export(ctx, "", NULL, 0, 0, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_export(ctx, dest, NULL, 2, 0, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_export(ctx, dest, NULL, -1, 0, &n), SALE_ERR_INVALID);
    const int bad_arch[] = {90, 75}, current[] = {SALE_ARCH_CURRENT};
    cr_expect_eq(sale_cache_export(ctx, dest, bad_arch, 2, 0, &n), SALE_ERR_INVALID);
    cr_expect(strstr(sale_last_error(ctx), "archs[1]") != NULL, "%s", sale_last_error(ctx));
    cr_expect_eq(sale_cache_export(ctx, dest, current, 1, 0, &n), SALE_ERR_INVALID);
    cr_expect_eq(access(dest, F_OK), -1, "nothing written");
    cr_expect_eq(sale_cache_import(ctx, NULL, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_import(ctx, "", &n), SALE_ERR_INVALID);

    /* no context at all */
    cr_expect_eq(sale_cache_verify(NULL, &checked, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_clear(NULL, &n), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_file_bytes(NULL, &b), SALE_ERR_INVALID);
    cr_expect_eq(sale_cache_list_kernels(NULL, 1, on_kernel, NULL), SALE_ERR_INVALID);
    cr_expect_str_eq(sale_fleet_path(NULL), "");
    cr_expect_str_eq(sale_fleet_path(ctx), "", "no fleet file");
    sale_destroy(ctx);
}

Test(cache_api, file_bytes_of_memory_cache_is_zero_and_templates_are_named)
{
    sale_options o = {0};
    o.cache_path = ":memory:";
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", sale_last_error(ctx));
    int64_t b = -1;
    cr_assert_eq(sale_cache_file_bytes(ctx, &b), SALE_OK);
    cr_expect_eq(b, 0);
    sale_destroy(ctx);
    int n = 0, fused = 0;
    for (; sale_template_name(n); n++)
        fused += !strcmp(sale_template_name(n), "fused.cu");
    cr_expect_gt(n, 4);
    cr_expect_eq(fused, 1);
    cr_expect_null(sale_template_name(n));
    cr_expect_null(sale_template_name(-1));
}

/* hits: "requests served from this row". The compile's read-back of the
 * row it had just stored counted one, so a kernel never served showed 1. */
static int on_hits(void *user, const sale_cache_kernel *k)
{
    *(int64_t *)user = k->hits;
    return 0;
}

Test(cache_api, a_kernel_just_compiled_has_served_nothing)
{
    sale_ctx *ctx = open_at("k.db", NULL);
    compile_quantize(ctx, 80);
    int64_t hits = -1;
    cr_assert_eq(sale_cache_list_kernels(ctx, 0, on_hits, &hits), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(hits, 0, "a fresh compile served nothing, hits %lld", (long long)hits);
    compile_quantize(ctx, 80); /* served from the cache */
    compile_quantize(ctx, 80);
    cr_assert_eq(sale_cache_list_kernels(ctx, 0, on_hits, &hits), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(hits, 2, "two requests served, hits %lld", (long long)hits);
    sale_destroy(ctx);
}

/* whole file into a heap buffer (*n bytes) */
static unsigned char *file_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    cr_assert_geq(len, 0);
    rewind(f);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* "The source is only read": an import left src-shm (32 KiB) and an empty
 * src-wal beside the source (a read-only connection cannot remove what its
 * read of a WAL file makes). Now nothing is left beside it and its bytes
 * are as they were; a -wal that was there before stays. */
Test(cache_api, import_leaves_nothing_beside_its_source)
{
    sale_ctx *a = open_at("a.db", NULL);
    compile_quantize(a, 80);
    char src[512], wal[600], shm[600];
    path_of(src, sizeof src, "src.db");
    int rows = -1;
    cr_assert_eq(sale_cache_export(a, src, NULL, 0, 0, &rows), SALE_OK, "%s", sale_last_error(a));
    sale_destroy(a);
    snprintf(wal, sizeof wal, "%s-wal", src);
    snprintf(shm, sizeof shm, "%s-shm", src);
    cr_assert(access(wal, F_OK) != 0 && access(shm, F_OK) != 0, "export left a -wal or -shm");
    size_t n0, n1;
    unsigned char *before = file_bytes(src, &n0);
    sale_ctx *b = open_at("b.db", NULL);
    cr_assert_eq(sale_cache_import(b, src, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_assert_eq(rows, 1);
    cr_expect(access(wal, F_OK) != 0, "the import left %s", wal);
    cr_expect(access(shm, F_OK) != 0, "the import left %s", shm);
    unsigned char *after = file_bytes(src, &n1);
    cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "the import changed its source");
    free(before);
    free(after);
    /* a -wal someone else left there stays (empty: no pending changes) */
    FILE *f = fopen(wal, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(sale_cache_import(b, src, &rows), SALE_OK, "%s", sale_last_error(b));
    cr_expect(access(wal, F_OK) == 0, "a -wal that was there was removed");
    sale_destroy(b);
}

static void capture_log(void *user, sale_log_level lvl, const char *msg)
{
    (void)lvl;
    char *buf = user;
    strncat(buf, msg, 4095 - strlen(buf));
    strncat(buf, "\n", 4095 - strlen(buf));
}

/* "Two calibrations never mix": an import took the other file's layers 1
 * and 2 of a model this cache holds layer 0 of (rows are kept or added one
 * by one), so the model answered from two calibrations. Now a model that
 * has thresholds here keeps them all and the other file's are not taken,
 * with a warning; a model only the other file has comes over whole. */
Test(cache_api, import_never_mixes_two_calibrations_of_a_model)
{
    sale_ctx *a = open_at("a.db", NULL);
    const float ta[2] = {0.001f, 0.001f};
    sale_threshold_meta ma = {.budget = 0.001, .samples = 2, .created = 1700000000, .density = -1, .error = -1};
    cr_assert_eq(sale_thresholds_put(a, "llama", 0, ta, 2, &ma), SALE_OK, "%s", sale_last_error(a));
    sale_destroy(a);
    sale_ctx *b = open_at("b.db", NULL);
    const float tb[2] = {0.05f, 0.05f};
    sale_threshold_meta mb = {.budget = 0.05, .samples = 2, .created = 1700000001, .density = -1, .error = -1};
    for (int l = 0; l < 3; l++)
        cr_assert_eq(sale_thresholds_put(b, "llama", l, tb, 2, &mb), SALE_OK, "%s", sale_last_error(b));
    cr_assert_eq(sale_thresholds_put(b, "qwen", 4, tb, 2, &mb), SALE_OK, "%s", sale_last_error(b));
    sale_destroy(b);

    char logbuf[4096] = "", pa[512], pb[512];
    path_of(pa, sizeof pa, "a.db");
    path_of(pb, sizeof pb, "b.db");
    sale_options o = {.cache_path = pa, .log = capture_log, .log_user = logbuf};
    sale_ctx *c = NULL;
    cr_assert_eq(sale_create(&c, &o), SALE_OK, "%s", sale_last_error(c));
    int rows = -1;
    cr_assert_eq(sale_cache_import(c, pb, &rows), SALE_OK, "%s", sale_last_error(c));
    float t[2];
    sale_threshold_meta m[2];
    cr_assert_eq(sale_thresholds_get(c, "llama", 0, t, 2, m), SALE_OK, "%s", sale_last_error(c));
    cr_assert(t[0] == 0.001f && m[0].budget == 0.001, "layer 0 replaced: tau %g budget %g", t[0], m[0].budget);
    for (int l = 1; l < 3; l++)
        cr_assert_eq(sale_thresholds_get(c, "llama", l, t, 2, NULL), SALE_ERR_NOT_FOUND,
                     "layer %d of the other calibration was mixed in", l);
    cr_assert(strstr(logbuf, "llama") && strstr(logbuf, "never mix"), "no warning: %s", logbuf);
    cr_assert_eq(sale_thresholds_get(c, "qwen", 4, t, 2, NULL), SALE_OK, "a model only the other file has: %s",
                 sale_last_error(c));
    cr_assert(t[0] == 0.05f);
    sale_destroy(c);
}

/* From C, an export of nothing (no kernel of those archs, no winner, no
 * threshold) wrote an empty cache file and said SALE_OK (the C API audit;
 * `sale export` already refused). It is SALE_ERR_NOT_FOUND and nothing is
 * written; thresholds alone still travel. */
Test(cache_api, an_export_of_nothing_writes_nothing)
{
    sale_ctx *a = open_at("a.db", NULL);
    compile_quantize(a, 80);
    char dest[512];
    path_of(dest, sizeof dest, "fleet.db");
    int rows = -1;
    const int archs[] = {86};
    cr_assert_eq(sale_cache_export(a, dest, archs, 1, 0, &rows), SALE_ERR_NOT_FOUND, "%s", sale_last_error(a));
    cr_assert(strstr(sale_last_error(a), "nothing written") && strstr(sale_last_error(a), "sm_86"), "%s",
              sale_last_error(a));
    cr_assert_eq(rows, 0);
    cr_assert_neq(access(dest, F_OK), 0, "an empty export made %s", dest);
    DIR *dh = opendir(dir);
    struct dirent *e;
    while ((e = readdir(dh)))
        cr_assert(!strstr(e->d_name, "fleet.db"), "left %s", e->d_name);
    closedir(dh);
    put_thresholds(a, "llama");
    cr_assert_eq(sale_cache_export(a, dest, archs, 1, 0, &rows), SALE_OK, "%s", sale_last_error(a));
    cr_assert_eq(rows, 0, "no sm_86 kernel");
    sale_ctx *b = open_at("b.db", NULL);
    cr_assert_eq(sale_cache_import(b, dest, &rows), SALE_OK, "%s", sale_last_error(b));
    float t[2];
    cr_assert_eq(sale_thresholds_get(b, "llama", 0, t, 2, NULL), SALE_OK, "the thresholds did not travel: %s",
                 sale_last_error(b));
    sale_destroy(b);
    sale_destroy(a);
}

/* A context reads a layer's thresholds once (the memo an attention call
 * uses); another process's store into the same file (the `sale calibrate`
 * that Python's sale.calibrate runs) was seen only by a new context.
 * sale_thresholds_reload makes this one read the cache again. */
Test(cache_api, thresholds_reload_sees_another_contexts_store)
{
    sale_ctx *a = open_at("a.db", NULL), *b = open_at("a.db", NULL);
    const float t1[2] = {0.001f, 0.001f}, t2[2] = {0.05f, 0.05f};
    sale_threshold_meta m = {.budget = 0.02, .samples = 1, .density = -1, .error = -1};
    cr_assert_eq(sale_thresholds_put(a, "m", 0, t1, 2, &m), SALE_OK, "%s", sale_last_error(a));
    sale_attention_args args;
    sale_attention_args_init(&args);
    args.batch = 1, args.heads_q = 2, args.heads_kv = 2, args.seq_len = 64, args.head_dim = 64;
    args.model = "m", args.layer = 0;
    float tau[2];
    cr_assert_eq(thresholds_resolve(a, &args, tau, NULL), SALE_OK, "%s", sale_last_error(a));
    cr_assert_eq(tau[0], 0.001f);
    cr_assert_eq(sale_thresholds_put(b, "m", 0, t2, 2, &m), SALE_OK, "%s", sale_last_error(b));
    cr_assert_eq(thresholds_resolve(a, &args, tau, NULL), SALE_OK);
    cr_assert_eq(tau[0], 0.001f, "the memo is the design: read once");
    cr_assert_eq(sale_thresholds_reload(a), SALE_OK, "%s", sale_last_error(a));
    cr_assert_eq(thresholds_resolve(a, &args, tau, NULL), SALE_OK);
    cr_assert_eq(tau[0], 0.05f, "after reload the other context's store is read");
    cr_assert_eq(sale_thresholds_reload(NULL), SALE_ERR_INVALID);
    sale_destroy(b);
    sale_destroy(a);
}
